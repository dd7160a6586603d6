#include "attestation/service/quote_batcher.h"

#include <algorithm>
#include <future>
#include <string>
#include <vector>

namespace sovguard::attestation::service {

struct QuoteBatcher::Request {
  Bytes nonce;
  std::chrono::steady_clock::time_point arrived;
  Done done;
};

// One made quote on its way out: its requests and evidence (BuildBatch's order), or the error.
struct QuoteBatcher::Delivery {
  std::vector<std::shared_ptr<Request>> batch;
  evidence::BatchEvidence evidence;
  std::string error;
};

v1::Evidence SerializedBatch::Answer(size_t i) const {
  v1::Evidence ev;
  if (i >= own.size() || !ev.ParseFromString(shared + own[i]))
    throw AttestationError("batched evidence " + std::to_string(i) + " does not parse");
  return ev;
}

namespace {

// The bytes every request shares, once, and each request's own (nonce and inclusion proof).
std::shared_ptr<const SerializedBatch> Serialize(const evidence::BatchEvidence& evidence) {
  auto out = std::make_shared<SerializedBatch>();
  out->own.resize(evidence.own.size());
  for (size_t i = 0; i < evidence.own.size(); ++i)
    if (!evidence.own[i].SerializeToString(&out->own[i]))
      throw AttestationError("cannot serialize the evidence of request " + std::to_string(i));
  if (!evidence.common.SerializeToString(&out->shared))
    throw AttestationError("cannot serialize the batch's evidence");
  return out;
}

}  // namespace

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
  delivery_thread_ = std::thread([this] { Deliver(); });
  thread_ = std::thread([this] { Run(); });
}

QuoteBatcher::~QuoteBatcher() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  thread_.join();  // hands its last batch and the failed waiting requests to delivery
  {
    std::lock_guard lock(delivery_mu_);
    delivery_stop_ = true;
  }
  delivery_work_.notify_all();
  delivery_thread_.join();  // runs every completion handed to it first
}

v1::Evidence QuoteBatcher::Quote(std::span<const uint8_t> nonce) {
  // Shared with the completion: it may still be inside set_value when this caller returns.
  auto answer = std::make_shared<std::promise<v1::Evidence>>();
  auto future = answer->get_future();
  QuoteAsync(nonce, [answer](std::shared_ptr<const SerializedBatch> batch, size_t i,
                             const std::string& error) {
    try {
      if (!batch) throw AttestationError(error);
      answer->set_value(batch->Answer(i));
    } catch (...) {
      answer->set_exception(std::current_exception());
    }
  });
  return future.get();
}

void QuoteBatcher::QuoteAsync(std::span<const uint8_t> nonce, Done done) {
  if (nonce.size() < evidence::kMinNonce || nonce.size() > evidence::kMaxNonce)
    throw AttestationError("nonce must be " + std::to_string(evidence::kMinNonce) + ".." +
                           std::to_string(evidence::kMaxNonce) + " bytes, got " +
                           std::to_string(nonce.size()));
  if (!done) throw AttestationError("a quote request needs a completion");
  auto req = std::make_shared<Request>();
  req->nonce.assign(nonce.begin(), nonce.end());
  req->arrived = std::chrono::steady_clock::now();
  req->done = std::move(done);
  std::lock_guard lock(mu_);
  if (stop_) throw AttestationError("attestation service is stopping");
  pending_.push_back(std::move(req));
  ++arrivals_;
  // Only an arrival that can end the quoting thread's wait wakes it: the first of a batch, the
  // one that fills it, or the one that completes the last quote's returning auditors (Run).
  // Any other leaves the thread asleep until its window or hold ends, instead of waking it once
  // per request.
  if (pending_.size() == 1 || pending_.size() >= cfg_.max_leaves ||
      arrivals_ - arrivals_at_free_ == last_batch_)
    work_.notify_one();
}

QuoteBatcher::Stats QuoteBatcher::stats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.waiting = pending_.size();
  return s;
}

void QuoteBatcher::Run() {
  std::unique_lock lock(mu_);
  using Clock = std::chrono::steady_clock;
  // The last quote: when it ended, how many it answered, the arrivals count then, and how long
  // the next batch may wait for its auditors to come back.
  Clock::time_point free_at{};
  Clock::duration hold{0};
  for (;;) {
    work_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (stop_) break;
    // The window counts from the oldest waiting request: those that queued during the last
    // quote have waited long enough already. Then the return hold: auditors answered by the
    // last quote usually ask again at once; started without them, the next quote would make
    // them wait a whole quote, and the TPM would alternate between two half batches (100
    // closed-loop auditors and a 100 ms TPM: at most 100 / (2 x 100 ms) = 500 answers/s). So the
    // batch waits until as many requests arrived since the last quote as it answered, or for
    // half that quote's time (kMaxBatchWindow at most): the TPM idles at most a third of the
    // time, and a request waits at most half a quote longer.
    for (;;) {
      if (stop_ || pending_.size() >= cfg_.max_leaves) break;
      const auto now = Clock::now();
      const auto window_end = pending_.front()->arrived + cfg_.window;
      const bool returned = arrivals_ - arrivals_at_free_ >= last_batch_;
      if (now >= window_end && (returned || now >= free_at + hold)) break;
      // Or until an arrival that can end the wait (QuoteAsync).
      work_.wait_until(lock, now < window_end ? window_end : free_at + hold);
    }
    if (stop_) break;
    const auto started = Clock::now();
    const size_t n = std::min(pending_.size(), cfg_.max_leaves);
    std::vector<std::shared_ptr<Request>> batch(pending_.begin(),
                                                pending_.begin() + static_cast<ptrdiff_t>(n));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(n));
    stats_.in_flight = n;
    lock.unlock();
    Delivery d;
    try {
      std::vector<std::span<const uint8_t>> nonces;
      nonces.reserve(batch.size());
      for (const auto& r : batch) nonces.emplace_back(r->nonce);
      d.evidence = builder_.BuildBatchShared(nonces, snapshot_());
    } catch (const std::exception& e) {
      d.error = e.what();
    }
    lock.lock();
    free_at = Clock::now();
    hold = std::min<Clock::duration>((free_at - started) / 2, kMaxBatchWindow);
    last_batch_ = batch.size();
    arrivals_at_free_ = arrivals_;
    ++stats_.quotes;
    stats_.in_flight = 0;
    stats_.requests += batch.size();
    stats_.largest_batch = std::max(stats_.largest_batch, batch.size());
    lock.unlock();
    d.batch = std::move(batch);
    Hand(std::move(d));
    lock.lock();
  }
  Delivery left;
  for (auto& r : pending_) left.batch.push_back(std::move(r));
  left.error = "attestation service is stopping";
  pending_.clear();
  lock.unlock();
  if (!left.batch.empty()) Hand(std::move(left));
}

void QuoteBatcher::Hand(Delivery d) {
  {
    std::lock_guard lock(delivery_mu_);
    deliveries_.push_back(std::move(d));
  }
  delivery_work_.notify_one();
}

void QuoteBatcher::Deliver() {
  std::unique_lock lock(delivery_mu_);
  for (;;) {
    delivery_work_.wait(lock, [&] { return delivery_stop_ || !deliveries_.empty(); });
    if (deliveries_.empty()) break;  // stopping, and everything handed over is delivered
    Delivery d = std::move(deliveries_.front());
    deliveries_.pop_front();
    lock.unlock();
    std::shared_ptr<const SerializedBatch> answers;
    if (d.error.empty()) {
      try {
        answers = Serialize(d.evidence);
      } catch (const std::exception& e) {
        d.error = e.what();
      }
    }
    for (size_t i = 0; i < d.batch.size(); ++i) d.batch[i]->done(answers, i, d.error);
    lock.lock();
  }
}

}  // namespace sovguard::attestation::service
