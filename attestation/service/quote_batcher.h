// Many auditors, one TPM2_Quote: requests that arrive while a quote is in flight, or within a
// short window after the first of them, are answered together by the next single quote
// (EvidenceBuilder::BuildBatch: its qualifying data is the Merkle root of one leaf per request).
// A TPM signs one quote at a time and a discrete one takes 10-100+ ms per quote; one quote per
// request would queue every auditor behind all the others.
//
// One quoting thread owns the TPM work; gRPC threads enqueue and wait. The snapshot provider is
// called once per batch, on that thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include "attestation/evidence/evidence.h"

namespace sovguard::attestation::service {

struct BatchConfig {
  // How long the first waiting request holds the quote for others to join. Requests arriving
  // while a quote is in flight join the next one whatever the window; 0 adds no wait at all.
  std::chrono::microseconds window{std::chrono::milliseconds(2)};
  size_t max_leaves = evidence::kMaxBatchLeaves;  // 1..kMaxBatchLeaves per quote
};
inline constexpr std::chrono::milliseconds kMaxBatchWindow{100};

class QuoteBatcher {
 public:
  using SnapshotProvider = std::function<v1::EnforcementSnapshot()>;
  // Throws AttestationError for a window above kMaxBatchWindow or max_leaves out of range.
  QuoteBatcher(evidence::EvidenceBuilder& builder, SnapshotProvider snapshot, BatchConfig cfg);
  ~QuoteBatcher();  // requests still waiting fail ("stopping"); the quoting thread is joined
  QuoteBatcher(const QuoteBatcher&) = delete;
  QuoteBatcher& operator=(const QuoteBatcher&) = delete;

  // Blocks until the quote that answers `nonce` is made. Throws AttestationError for a nonce
  // outside kMinNonce..kMaxNonce (the TPM is not touched) and with the batch's error otherwise.
  v1::Evidence Quote(std::span<const uint8_t> nonce);

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
  void Run();

  evidence::EvidenceBuilder& builder_;
  SnapshotProvider snapshot_;
  const BatchConfig cfg_;
  mutable std::mutex mu_;
  std::condition_variable work_;  // the quoting thread: requests arrived, or stop
  std::condition_variable done_;  // waiting callers: their batch is answered
  std::deque<std::shared_ptr<Request>> pending_;
  bool stop_ = false;
  Stats stats_;
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace sovguard::attestation::service
