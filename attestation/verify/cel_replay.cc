// eventlog.cel.*: sovguard's own event log, decoded, scanned and replayed to the quoted PCR.
#include "attestation/verify/checks.h"

#include <cstring>

#include "attestation/eventlog/cel.h"
#include "attestation/verify/fast_paths.h"

namespace sovguard::attestation::verify::detail {

namespace {

// CEL event kinds that measure a software component (object digest = SHA-256 of the file or
// object): each must be approved by the reference manifest.
bool IsComponentKind(cel::EventKind k) {
  switch (k) {
    case cel::EventKind::kSelfBinary:
    case cel::EventKind::kBpfObject:
    case cel::EventKind::kQemuBinary:
    case cel::EventKind::kLibvirtdBinary:
    case cel::EventKind::kLibvirtDriver:
    case cel::EventKind::kKernelImage:
      return true;
    default:
      return false;
  }
}

}  // namespace

// Decodes strictly without copying (views into the evidence), checks the structure and that
// every event is a known sovguard event (one pass), then hashes every content and replays the
// extend chain in one interleaved pass (common/sha256_chain.h), and compares with the quoted
// sovguard PCR. The verifier's hot path: one allocation, for the chain items (and with a
// manifest one for the component list).
std::optional<CelFacts> CheckCel(const v1::Evidence& ev, std::span<const uint8_t> cel_bytes,
                                 bool pcrs_ok, ReplayCache* cache, bool for_manifest,
                                 uint32_t pinned_pcr, std::vector<CheckResult>& out) {
  if (!FastPathsEnabled()) cache = nullptr;
  // The PCR is the verifier's, never the evidence's: a log in a resettable PCR (16-23) can be
  // rebuilt at will by root, so naming one must not make it sovguard's.
  const uint32_t pcr = pinned_pcr;
  const std::string name = "eventlog.cel.replay";
  // Structure (sequence, PCR index) and event types: sovguard's log holds only sovguard events,
  // so any other content type or an unknown sovguard kind is an unknown event, reported with
  // its record number and never replayed as if it were understood. These checks run as each
  // record is decoded, before the hashing; the verdict uses them before the replay result.
  struct CelScan {
    uint32_t pcr;
    std::vector<ChainItem> recs;
    size_t first_bad_recnum = SIZE_MAX, first_bad_pcr = SIZE_MAX;
    uint64_t bad_recnum = 0;  // the recnum record first_bad_recnum has
    uint32_t bad_pcr = 0;     // the PCR record first_bad_pcr extends
    size_t n_unknown = 0;
    uint64_t unknown_recnum[8];
    uint8_t unknown_type[8];
    const char* unknown_why[8];
    std::vector<size_t> guest_events;
    size_t last_net_program = SIZE_MAX;
    std::vector<size_t> downgrades;
    size_t last_start = SIZE_MAX;
    std::vector<size_t> starts, all_downgrades, state_events;
    bool for_manifest;
    std::vector<std::pair<size_t, const uint8_t*>> components;
    std::vector<size_t> cmdlines;
    void Scan(size_t i, const cel::RecordView& r) {
      if (r.recnum != i && first_bad_recnum == SIZE_MAX) {
        first_bad_recnum = i;
        bad_recnum = r.recnum;
      }
      if (r.pcr != pcr && first_bad_pcr == SIZE_MAX) {
        first_bad_pcr = i;
        bad_pcr = r.pcr;
      }
      const char* why = nullptr;
      if (r.content_type != cel::kContentSovguard) {
        why = "";  // named with its content type below
      } else {
        cel::SovguardEventView v;
        why = cel::DecodeSovguardContentView(r.content, v);
        // (Names compared field by field with fixed-size memcmp: inlined, and no 16-byte copy
        // of a string_view just stored 8 bytes at a time, which stalls store forwarding.)
        constexpr size_t kPrefix = cel::kGuestEventPrefix.size();
        if (!why && v.kind == cel::EventKind::kEnforcementState && v.name.size() >= kPrefix &&
            std::memcmp(v.name.data(), cel::kGuestEventPrefix.data(), kPrefix) == 0)
          guest_events.push_back(i);
        else if (!why && v.kind == cel::EventKind::kEnforcementState &&
                 ((v.name.size() > 7 && std::memcmp(v.name.data(), "tamper:", 7) == 0) ||
                  v.name == "enforcement"))
          state_events.push_back(i);
        else if (!why && v.kind == cel::EventKind::kProgramAttached &&
                 v.name.size() == kNetProgram.size() &&
                 std::memcmp(v.name.data(), kNetProgram.data(), kNetProgram.size()) == 0)
          last_net_program = i;
        else if (!why && v.kind == cel::EventKind::kMechanismDowngraded) {
          downgrades.push_back(i);
          all_downgrades.push_back(i);
        } else if (!why && v.kind == cel::EventKind::kDaemonStart) {
          // A (re)started daemon probes and measures its mechanisms again.
          last_start = i;
          downgrades.clear();
          starts.push_back(i);
        }
        if (for_manifest && !why) {
          if (IsComponentKind(v.kind))
            components.emplace_back(i, v.object_digest);
          else if (v.kind == cel::EventKind::kKernelCmdline)
            cmdlines.push_back(i);
        }
      }
      if (why) {
        if (n_unknown < 8) {
          unknown_recnum[n_unknown] = r.recnum;
          unknown_type[n_unknown] = r.content_type;
          unknown_why[n_unknown] = why;
        }
        ++n_unknown;
      }
    }
  } scan{pcr};
  scan.for_manifest = for_manifest;
  // Copy-free, strict decoding (errors name the record and byte offset, as cel::DecodeLogViews
  // says them) and the scan, one pass before the hashing (decoding inside the hashing loop was
  // slower: bench/attestation/README.md).
  std::vector<ChainItem>& recs = scan.recs;  // what the chain hashes, and later checks read
  size_t error_at = SIZE_MAX;                // byte offset of the record that does not decode
  recs.reserve(cel_bytes.size() / 96 + 1);   // records are at least ~60 bytes
  cel::RecordView r;                         // (one view, decoded into and read in registers)
  for (size_t off = 0; off < cel_bytes.size();) {
    if (!cel::DecodeRecordViewAt(cel_bytes, off, r)) {
      error_at = off;
      break;
    }
    recs.push_back({r.content, r.digest});
    scan.Scan(recs.size() - 1, r);
  }
  // Records an earlier verdict replayed (a byte-identical prefix, see ReplayCache) are scanned
  // but not hashed again: the chain starts from their remembered PCR value. The cache is asked
  // only about a log that decodes (its hit/miss counts are replays).
  const std::string cache_key = ev.ak().name().empty() ? "node:" + ev.node() : ev.ak().name();
  ReplayCache::Hit hit;
  if (cache && error_at == SIZE_MAX) hit = cache->Lookup(cache_key, cel_bytes);
  // (A record's content is its last field: record k starts where record k-1's content ends.)
  const auto record_start = [&](size_t k) -> size_t {
    return k == 0 ? 0
                  : static_cast<size_t>(recs[k - 1].content.data() + recs[k - 1].content.size() -
                                        cel_bytes.data());
  };
  if (hit.records > recs.size() ||
      (hit.records < recs.size() && record_start(hit.records) != hit.bytes))
    hit = {};  // cannot happen for a true prefix of complete records; replay it all
  const size_t done = hit.records;
  ChainResult chain = error_at == SIZE_MAX
                          ? ExtendChainCheckingContents(std::span(recs).subspan(done), hit.pcr)
                          : ChainResult{};
  if (error_at != SIZE_MAX) {
    out.push_back(Fail("eventlog.cel.decode", kReasonCelMalformed,
                       "logs.cel: CEL: " + cel::RecordViewError(cel_bytes, error_at, recs.size())));
    out.push_back(Fail("eventlog.cel.events", kReasonDependencyFailed, "logs.cel not decoded"));
    out.push_back(Fail(name, kReasonDependencyFailed, "logs.cel not decoded"));
    return std::nullopt;
  }
  out.push_back(Pass("eventlog.cel.decode", std::to_string(recs.size()) + " records"));
  if (chain.first_bad_content != SIZE_MAX) chain.first_bad_content += done;
  // The first structural fault in record order: a broken sequence, else a wrong PCR.
  std::optional<CheckResult> structural;
  const size_t first_structural = std::min(scan.first_bad_recnum, scan.first_bad_pcr);
  if (ev.logs().sovguard_pcr() != pcr) {
    structural = Fail(name, kReasonCelPcrUnexpected,
                      "logs.sovguard_pcr is " + std::to_string(ev.logs().sovguard_pcr()) +
                          ", the verifier expects sovguard's log in PCR " + std::to_string(pcr) +
                          " (--sovguard-pcr): a log in another PCR is not sovguard's");
  } else if (first_structural != SIZE_MAX) {
    const size_t i = first_structural;
    if (i == scan.first_bad_recnum)
      structural = Fail(name, kReasonCelSequenceBroken,
                        "logs.cel record " + std::to_string(i) + " has recnum " +
                            std::to_string(scan.bad_recnum) + " (expected " + std::to_string(i) +
                            "): an event is missing or reordered");
    else
      structural = Fail(name, kReasonCelWrongPcr,
                        "logs.cel record " + std::to_string(i) + " extends PCR " +
                            std::to_string(scan.bad_pcr) + " (sovguard's PCR is " +
                            std::to_string(pcr) + ")");
  }
  if (scan.n_unknown) {
    std::string unknown;
    for (size_t k = 0; k < std::min<size_t>(scan.n_unknown, 8); ++k) {
      const uint8_t type = scan.unknown_type[k];
      const std::string why = type != cel::kContentSovguard ? "content type " + std::to_string(type)
                                                            : std::string(scan.unknown_why[k]);
      unknown += (unknown.empty() ? "" : "; ") + std::string("logs.cel record ") +
                 std::to_string(scan.unknown_recnum[k]) + ": " + why;
    }
    out.push_back(Fail("eventlog.cel.events", kReasonCelUnknownEvent,
                       std::to_string(scan.n_unknown) + " unknown event(s): " + unknown));
  } else {
    out.push_back(Pass("eventlog.cel.events", "all events are known sovguard event kinds"));
  }
  if (structural) {
    out.push_back(*structural);
    return std::nullopt;
  }
  if (scan.n_unknown) {
    out.push_back(Fail(name, kReasonDependencyFailed, "logs.cel has unknown events"));
    return std::nullopt;
  }
  if (chain.first_bad_content != SIZE_MAX) {
    out.push_back(Fail(name, kReasonCelEntryTampered,
                       "logs.cel record " + std::to_string(chain.first_bad_content) +
                           ": digest is not SHA-256 of its content"));
    return std::nullopt;
  }
  const Sha256Digest& replayed = chain.pcr;
  const v1::PcrValue* quoted = nullptr;
  for (const auto& p : ev.quote().pcrs())
    if (p.index() == pcr) quoted = &p;
  if (!quoted) {
    out.push_back(Fail(name, kReasonCelPcrNotQuoted,
                       "sovguard's PCR " + std::to_string(pcr) + " is not in quote.pcrs"));
    return std::nullopt;
  }
  if (quoted->sha256() != Str(replayed)) {
    out.push_back(Fail(name, kReasonCelReplayMismatch,
                       "logs.cel replays PCR " + std::to_string(pcr) + " to " + ToHex(replayed) +
                           ", quote.pcrs has " + Hex(quoted->sha256()) +
                           ": an event is missing, extra or altered"));
    return std::nullopt;
  }
  if (!pcrs_ok) {
    out.push_back(Fail(name, kReasonDependencyFailed,
                       "logs.cel matches quote.pcrs, but quote.pcrs are not the signed values"));
    return std::nullopt;
  }
  if (cache) cache->Store(cache_key, cel_bytes, recs.size(), replayed, hit);
  out.push_back(Pass(name, std::to_string(recs.size()) + " records replay to PCR " +
                               std::to_string(pcr) + " = " + ToHex(replayed) +
                               (done ? " (" + std::to_string(done) +
                                           " of them as remembered from an earlier verdict)"
                                     : std::string())));
  return CelFacts{std::move(scan.recs),
                  std::move(scan.guest_events),
                  scan.last_net_program,
                  std::move(scan.downgrades),
                  scan.last_start,
                  std::move(scan.starts),
                  std::move(scan.all_downgrades),
                  std::move(scan.state_events),
                  std::move(scan.components),
                  std::move(scan.cmdlines)};
}

}  // namespace sovguard::attestation::verify::detail
