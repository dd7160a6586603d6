// Many auditors, one TPM2_Quote: requests that arrive while a quote is in flight, or within a
// short window after the first of them, are answered together by the next single quote
// (EvidenceBuilder::BuildBatch: its qualifying data is the Merkle root of one leaf per request).
// A TPM signs one quote at a time and a discrete one takes 10-100+ ms per quote; one quote per
// request would queue every auditor behind all the others.
//
// One quoting thread owns the TPM work; callers enqueue and are called back when their quote is
// made (no thread waits per request). A second thread serializes each batch's answers and runs
// the completions, so the next TPM2_Quote starts while the last one's answers go out. The snapshot
// provider is called once per batch, on that thread. A batch closes when the quoting thread is
// free and the requests answered by the last quote have asked again (auditors poll in a loop),
// waiting for them at most half that quote's time; a request finding the TPM idle waits at most
// `window` for others. Per batch, not per request: the snapshot, the quote, the
// evidence serialization (SerializedBatch).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "attestation/evidence/evidence.h"

namespace sovguard::attestation::service {

struct BatchConfig {
  // How long the first waiting request holds the quote for others to join. Requests arriving
  // while a quote is in flight join the next one whatever the window (and the next one waits
  // for the last one's auditors at most half its time, see Run).
  std::chrono::microseconds window{std::chrono::milliseconds(2)};
  size_t max_leaves = evidence::kMaxBatchLeaves;  // 1..kMaxBatchLeaves per quote
};
inline constexpr std::chrono::milliseconds kMaxBatchWindow{100};

// One quote's answers, serialized once: `shared` is the batch's Evidence without nonce and
// inclusion proof (the same bytes for every request), own[i] is request i's nonce and inclusion
// proof. Protobuf parses the concatenation shared + own[i] as request i's whole Evidence (the two
// hold disjoint fields), so a response is two slices and the shared one is never copied.
struct SerializedBatch {
  std::string shared;
  std::vector<std::string> own;
  v1::Evidence Answer(size_t i) const;  // parsed shared + own[i]
};

class QuoteBatcher {
 public:
  using SnapshotProvider = std::function<v1::EnforcementSnapshot()>;
  // Called once per request, on the delivery thread: with the batch and
  // the request's index in it, or with a null batch and the error. Must not block or throw.
  using Done = std::function<void(std::shared_ptr<const SerializedBatch> batch, size_t index,
                                  const std::string& error)>;
  // Throws AttestationError for a window above kMaxBatchWindow or max_leaves out of range.
  QuoteBatcher(evidence::EvidenceBuilder& builder, SnapshotProvider snapshot, BatchConfig cfg);
  ~QuoteBatcher();  // requests still waiting fail ("stopping"); the quoting thread is joined
  QuoteBatcher(const QuoteBatcher&) = delete;
  QuoteBatcher& operator=(const QuoteBatcher&) = delete;

  // Blocks until the quote that answers `nonce` is made (QuoteAsync and a wait). Throws
  // AttestationError for a nonce outside kMinNonce..kMaxNonce (the TPM is not touched) and with
  // the batch's error otherwise.
  v1::Evidence Quote(std::span<const uint8_t> nonce);
  // Queues `nonce` for the next quote and returns; `done` is called once when it is made. Throws
  // (and never calls `done`) for a bad nonce or while stopping.
  void QuoteAsync(std::span<const uint8_t> nonce, Done done);

  struct Stats {
    uint64_t quotes = 0;    // batches handed to BuildBatch (one TPM2_Quote each, if it ran)
    uint64_t requests = 0;  // requests answered or failed
    size_t largest_batch = 0;
    size_t waiting = 0;    // requests queued for the next quote right now
    size_t in_flight = 0;  // requests of the quote being made right now
  };
  Stats stats() const;

 private:
  struct Request;
  struct Delivery;
  void Run();
  void Deliver();
  void Hand(Delivery d);

  evidence::EvidenceBuilder& builder_;
  SnapshotProvider snapshot_;
  const BatchConfig cfg_;
  mutable std::mutex mu_;
  std::condition_variable work_;  // the quoting thread: requests arrived, or stop
  std::deque<std::shared_ptr<Request>> pending_;
  uint64_t arrivals_ = 0;  // requests queued so far
  // The last quote's size and arrivals_ when it ended: the batch after it waits for that many
  // arrivals (the auditors it answered coming back), see Run.
  size_t last_batch_ = 0;
  uint64_t arrivals_at_free_ = 0;
  bool stop_ = false;
  Stats stats_;
  std::mutex delivery_mu_;
  std::condition_variable delivery_work_;
  std::deque<Delivery> deliveries_;
  bool delivery_stop_ = false;
  std::thread delivery_thread_;  // last two: start once everything above exists
  std::thread thread_;
};

}  // namespace sovguard::attestation::service
