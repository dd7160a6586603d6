#include "attestation/service/quote_batcher.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace sovguard::attestation::service {

struct QuoteBatcher::Request {
  Bytes nonce;
  std::chrono::steady_clock::time_point arrived;
  bool done = false;
  std::optional<v1::Evidence> evidence;
  std::string error;
};

QuoteBatcher::QuoteBatcher(evidence::EvidenceBuilder& builder, SnapshotProvider snapshot,
                           BatchConfig cfg)
    : builder_(builder), snapshot_(std::move(snapshot)), cfg_(cfg) {
  if (!snapshot_) throw AttestationError("quote batcher needs a snapshot provider");
  if (cfg_.window < std::chrono::microseconds(0) || cfg_.window > kMaxBatchWindow)
    throw AttestationError("quote batch window must be 0.." +
                           std::to_string(kMaxBatchWindow.count()) + " ms");
  if (cfg_.max_leaves < 1 || cfg_.max_leaves > evidence::kMaxBatchLeaves)
    throw AttestationError("quote batch size must be 1.." +
                           std::to_string(evidence::kMaxBatchLeaves));
  thread_ = std::thread([this] { Run(); });
}

QuoteBatcher::~QuoteBatcher() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  thread_.join();
}

v1::Evidence QuoteBatcher::Quote(std::span<const uint8_t> nonce) {
  if (nonce.size() < evidence::kMinNonce || nonce.size() > evidence::kMaxNonce)
    throw AttestationError("nonce must be " + std::to_string(evidence::kMinNonce) + ".." +
                           std::to_string(evidence::kMaxNonce) + " bytes, got " +
                           std::to_string(nonce.size()));
  auto req = std::make_shared<Request>();
  req->nonce.assign(nonce.begin(), nonce.end());
  req->arrived = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  if (stop_) throw AttestationError("attestation service is stopping");
  pending_.push_back(req);
  work_.notify_one();
  done_.wait(lock, [&] { return req->done; });
  if (!req->evidence) throw AttestationError(req->error);
  return std::move(*req->evidence);
}

QuoteBatcher::Stats QuoteBatcher::stats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.waiting = pending_.size();
  return s;
}

void QuoteBatcher::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (stop_) break;
    // The window counts from the oldest waiting request: those that queued during the last
    // quote have waited long enough already.
    const auto until = pending_.front()->arrived + cfg_.window;
    work_.wait_until(lock, until, [&] { return stop_ || pending_.size() >= cfg_.max_leaves; });
    if (stop_) break;
    const size_t n = std::min(pending_.size(), cfg_.max_leaves);
    std::vector<std::shared_ptr<Request>> batch(pending_.begin(),
                                                pending_.begin() + static_cast<ptrdiff_t>(n));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(n));
    stats_.in_flight = n;
    lock.unlock();
    std::vector<v1::Evidence> evidence;
    std::string error;
    try {
      std::vector<std::span<const uint8_t>> nonces;
      nonces.reserve(batch.size());
      for (const auto& r : batch) nonces.emplace_back(r->nonce);
      evidence = builder_.BuildBatch(nonces, snapshot_());
    } catch (const std::exception& e) {
      error = e.what();
    }
    lock.lock();
    for (size_t i = 0; i < batch.size(); ++i) {
      if (error.empty())
        batch[i]->evidence = std::move(evidence[i]);
      else
        batch[i]->error = error;
      batch[i]->done = true;
    }
    ++stats_.quotes;
    stats_.in_flight = 0;
    stats_.requests += batch.size();
    stats_.largest_batch = std::max(stats_.largest_batch, batch.size());
    done_.notify_all();
  }
  for (auto& r : pending_) {
    r->error = "attestation service is stopping";
    r->done = true;
  }
  pending_.clear();
  done_.notify_all();
}

}  // namespace sovguard::attestation::service
