// TCG Canonical Event Log (CEL), TLV encoding, as written by sovguardd.
//
// Encoding chosen: CEL-TLV (TCG "Canonical Event Log Format" v1.0). Each TLV is
//   type: uint8, length: uint32 big-endian, value: `length` octets.
// A record is the concatenation of these top-level TLVs, in this order:
//   RECNUM  (type 0): uint64 big-endian, 0,1,2,... without gaps within one log
//   PCR     (type 1): uint32 big-endian PCR index
//   DIGESTS (type 3): nested TLVs, type = TPM_ALG_ID (0x0b = SHA-256), value = digest
//   CONTENT (type = content type): the event content
// Content types 4 (management), 5 (PC client std), 7 (IMA template), 8 (IMA TLV) are the spec's;
// sovguard's own events use content type 0xA0 (kSovguard, outside the spec's range), whose
// value is again TLVs: 1 kind (uint16 BE), 2 name (UTF-8), 3 object SHA-256 (32 octets),
// 4 detail (UTF-8, optional). For a kSovguard record the digest extended into the PCR is
// SHA-256(content value), so the event's kind, name and object digest are all bound by the PCR.
// Only SHA-256 is written; a log is replayed per PCR: pcr = SHA-256(pcr || digest), from zeros.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/common/bytes.h"

namespace sovguard::attestation::cel {

inline constexpr uint8_t kTypeRecnum = 0;
inline constexpr uint8_t kTypePcr = 1;
inline constexpr uint8_t kTypeNvIndex = 2;
inline constexpr uint8_t kTypeDigests = 3;
inline constexpr uint8_t kContentMgmt = 4;
inline constexpr uint8_t kContentPcClientStd = 5;
inline constexpr uint8_t kContentImaTemplate = 7;
inline constexpr uint8_t kContentImaTlv = 8;
inline constexpr uint8_t kContentSovguard = 0xA0;
inline constexpr uint16_t kAlgSha256 = 0x000B;  // TPM_ALG_SHA256

// What a sovguard event measures. Numbers are part of the log format: never renumber.
enum class EventKind : uint16_t {
  kDaemonStart = 1,     // first event of a log (detail "fresh") or after a restart ("restart")
  kSelfBinary = 2,      // sovguardd's own executable
  kBpfObject = 3,       // a BPF object file / program image
  kPolicyBundle = 4,    // the active policy bundle
  kQemuBinary = 5,      // QEMU emulator binary
  kLibvirtdBinary = 6,  // libvirtd binary
  kLibvirtDriver = 7,   // a libvirt driver module
  kKernelImage = 8,     // the running kernel image
  kKernelCmdline = 9,   // /proc/cmdline
  kPolicyApplied = 10,  // enforcement state: a policy bundle became active
  kMechanismDowngraded = 11,  // enforcement state: a weaker mechanism was selected
  kProgramAttached = 12,      // enforcement state: a program was (re-)attached
  kEnforcementState = 13,     // any other enforcement state change
  kRecovered = 14,            // a logged event whose extend was interrupted by a crash, completed
};
std::string_view EventKindName(EventKind k);
std::optional<EventKind> EventKindFromName(std::string_view name);

struct SovguardEvent {
  EventKind kind = EventKind::kEnforcementState;
  std::string name;
  Sha256Digest object_digest{};
  std::string detail;
  bool operator==(const SovguardEvent&) const = default;
};

struct Record {
  uint64_t recnum = 0;
  uint32_t pcr = 0;
  Sha256Digest digest{};  // SHA-256 bank digest extended into `pcr`
  uint8_t content_type = kContentSovguard;
  Bytes content;
  bool operator==(const Record&) const = default;
};

Bytes EncodeSovguardContent(const SovguardEvent& ev);
// Throws AttestationError on unknown inner types, wrong sizes, or missing kind/name/digest.
SovguardEvent DecodeSovguardContent(std::span<const uint8_t> value);

Record MakeSovguardRecord(uint64_t recnum, uint32_t pcr, const SovguardEvent& ev);

// Guest lifecycle events, so a verifier can tell from the quoted log which guests a node runs:
// kEnforcementState named "guest:<uuid>" with detail "covered" (the node started enforcing for
// the guest) or "released" (it went away).
inline constexpr std::string_view kGuestEventPrefix = "guest:";
// The uuids whose last guest event in `records` is "covered". Throws like DecodeSovguardContent.
std::set<std::string> MeasuredGuests(std::span<const Record> records);

Bytes EncodeRecord(const Record& r);
Bytes EncodeLog(std::span<const Record> records);

struct DecodeResult {
  std::vector<Record> records;
  size_t consumed = 0;     // bytes of complete records
  std::string tail_error;  // why decoding stopped before the end ("" = consumed everything)
};
// Decodes complete records; stops at the first malformed or truncated one and says why, so a
// caller can distinguish a torn final write (crash during append) from a clean log.
DecodeResult DecodeLogPrefix(std::span<const uint8_t> data);
// Strict: the whole buffer must be complete, well-formed records. Throws with the byte offset.
std::vector<Record> DecodeLog(std::span<const uint8_t> data);

// Copy-free decoding for the verifier's hot path: views into the caller's buffer, valid while it
// lives. Same rules as DecodeLog; returns "" or why decoding failed (record number, byte offset).
struct RecordView {
  uint64_t recnum = 0;
  uint32_t pcr = 0;
  const uint8_t* digest = nullptr;  // 32 bytes
  uint8_t content_type = kContentSovguard;
  std::span<const uint8_t> content;
  size_t offset = 0;  // byte offset of the record in the log
};
std::string DecodeLogViews(std::span<const uint8_t> data, std::vector<RecordView>& out);
// One record of DecodeLogViews at a time, for a caller's own decoding loop: true with `out`
// set and `offset` moved past the record, or false (`offset` unchanged) when the record at
// `offset` is not one complete, well-formed record; RecordViewError then says why. Inline and
// allocation-free: the per-record cost is a few dozen integer instructions.
inline bool DecodeRecordViewAt(std::span<const uint8_t> data, size_t& offset, RecordView& out);
// Why the record at `offset` (the `index`-th) does not decode: the text DecodeLogViews returns
// ("record <index> at byte <offset>: ...").
std::string RecordViewError(std::span<const uint8_t> data, size_t offset, size_t index);

struct SovguardEventView {
  EventKind kind = EventKind::kEnforcementState;
  std::string_view name;
  const uint8_t* object_digest = nullptr;  // 32 bytes
  std::string_view detail;
};
// Same checks as DecodeSovguardContent without allocating: nullptr, or a constant message.
// Inline (defined below): the verifier calls it for every record.
inline const char* DecodeSovguardContentView(std::span<const uint8_t> value, SovguardEventView& ev);

// Replays records into per-PCR SHA-256 values starting from all-zero PCRs. Checks that recnums
// are 0..n-1 and that every kSovguard record's digest is SHA-256 of its content; throws otherwise
// (a log that does not check out is never partially trusted).
std::map<uint32_t, Sha256Digest> Replay(std::span<const Record> records);

namespace detail {
// Big-endian loads as one load (and a byte swap on little-endian hosts), not byte by byte.
inline uint32_t LoadBe32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap32(v);
  return v;
}
inline uint64_t LoadBe64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
  return v;
}
// Bytes as a little-endian word: fixed header bytes compared as one load.
constexpr uint64_t LeWord(std::initializer_list<uint8_t> bytes) {
  uint64_t v = 0;
  int shift = 0;
  for (uint8_t b : bytes) {
    v |= uint64_t{b} << shift;
    shift += 8;
  }
  return v;
}
// The reference decoder, TLV by TLV, with error texts (DecodeRecordView uses it to say why a
// record does not decode; tests hold DecodeRecordViewAt's fast paths to it).
std::string DecodeRecordViewSlow(std::span<const uint8_t> in, size_t& off, RecordView& r);
// The 69-byte header of every record sovguard writes (DecodeRecordViewAt's fast path).
inline constexpr uint64_t kLow40 = (uint64_t{1} << 40) - 1;
inline constexpr uint64_t kFastRecnumHeader = LeWord({kTypeRecnum, 0, 0, 0, 8});
inline constexpr uint64_t kFastPcrHeader = LeWord({kTypePcr, 0, 0, 0, 4});
inline constexpr uint64_t kFastDigestsHeader =
    LeWord({kTypeDigests, 0, 0, 0, 37, kAlgSha256 & 0xff, 0, 0});
inline constexpr uint64_t kFastSha256Length = LeWord({0, 32});
// Bounds a single TLV value so a corrupt length cannot make a reader allocate gigabytes.
inline constexpr uint32_t kMaxTlvValue = 1u << 20;
__attribute__((always_inline)) inline bool FastTlv(const uint8_t* in, size_t size, size_t& off,
                                                   uint8_t& type, std::span<const uint8_t>& value) {
  if (size - off < 5) return false;
  const uint8_t* p = in + off;
  type = p[0];
  const uint32_t len = LoadBe32(p + 1);
  if (len > kMaxTlvValue || size - off - 5 < len) return false;
  value = {p + 5, len};
  off += 5 + static_cast<size_t>(len);
  return true;
}
// Sovguard event content: TLVs of these types (EncodeSovguardContent).
inline constexpr uint8_t kInnerKind = 1, kInnerName = 2, kInnerObjectDigest = 3, kInnerDetail = 4;
// EventKind's values are exactly this range (checked in cel.cc).
inline constexpr uint64_t kFirstKind = 1, kLastKind = 14;
// Any layout: the TLV loop.
const char* DecodeSovguardContentViewSlow(std::span<const uint8_t> value, SovguardEventView& ev);
}  // namespace detail

// (always_inline: called out of line, its fields are stored one by one and read back by the
// caller in 16-byte moves the store buffer cannot forward, a stall per record.)
__attribute__((always_inline)) inline const char* DecodeSovguardContentView(
    std::span<const uint8_t> value, SovguardEventView& ev) {
  // Fast path: the layout EncodeSovguardContent writes (kind, name, object digest, optional
  // detail, in that order, nothing else), for which the general loop gives the same result.
  // Anything else takes the loop.
  using namespace detail;
  const uint8_t* p = value.data();
  const size_t size = value.size();
  if (size >= 7 + 5 + 37 && p[0] == kInnerKind && LoadBe32(p + 1) == 2 && p[7] == kInnerName) {
    const uint64_t k = static_cast<uint64_t>(p[5]) << 8 | p[6];
    const uint32_t name_len = LoadBe32(p + 8);
    const size_t d = 12 + static_cast<size_t>(name_len);  // the object digest TLV
    if (k >= kFirstKind && k <= kLastKind && name_len <= size && size - 37 >= d &&
        p[d] == kInnerObjectDigest && LoadBe32(p + d + 1) == 32) {
      const size_t rest = d + 37;
      size_t detail_len = 0;
      const bool ok = rest == size || (size - rest >= 5 && p[rest] == kInnerDetail &&
                                       (detail_len = LoadBe32(p + rest + 1)) == size - rest - 5);
      if (ok) {
        ev.kind = static_cast<EventKind>(k);
        ev.name = {reinterpret_cast<const char*>(p + 12), name_len};
        ev.object_digest = p + d + 5;
        ev.detail = rest == size
                        ? std::string_view()
                        : std::string_view(reinterpret_cast<const char*>(p + rest + 5), detail_len);
        return nullptr;
      }
    }
  }
  return DecodeSovguardContentViewSlow(value, ev);
}

inline bool DecodeRecordViewAt(std::span<const uint8_t> data, size_t& offset, RecordView& r) {
  const uint8_t* in = data.data();
  const size_t size = data.size();
  size_t off = offset;
  // Fast path: the layout every sovguard record has (recnum, PCR, one SHA-256 digest, then the
  // content: 69 header bytes), checked as a few words at fixed offsets. The next record's offset
  // then waits on one load (the content length) instead of four TLV lengths in a row, which
  // made decoding a log latency-bound. Anything else takes the general path below.
  if (size - off >= 69) {
    const uint8_t* p = in + off;
    uint64_t w0 = 0, w1 = 0, w2 = 0, w3 = 0;
    std::memcpy(&w0, p, 8);       // recnum TLV header (5 bytes)
    std::memcpy(&w1, p + 13, 8);  // PCR TLV header (5 bytes)
    std::memcpy(&w2, p + 22, 8);  // digests TLV header, SHA-256 TLV type and length (8 of 10)
    std::memcpy(&w3, p + 30, 2);  // the rest of that length
    const uint32_t pcr = detail::LoadBe32(p + 18);
    const uint32_t len = detail::LoadBe32(p + 65);
    if (std::endian::native == std::endian::little &&
        (w0 & detail::kLow40) == detail::kFastRecnumHeader &&
        (w1 & detail::kLow40) == detail::kFastPcrHeader && w2 == detail::kFastDigestsHeader &&
        w3 == detail::kFastSha256Length && pcr <= 23 && p[64] > kTypeDigests &&
        len <= detail::kMaxTlvValue && size - off - 69 >= len) {
      r.recnum = detail::LoadBe64(p + 5);
      r.pcr = pcr;
      r.digest = p + 32;
      r.content_type = p[64];
      r.content = {p + 69, len};
      r.offset = off;
      offset = off + 69 + len;
      return true;
    }
  }
  uint8_t type = 0;
  std::span<const uint8_t> v;
  if (!detail::FastTlv(in, size, off, type, v) || type != kTypeRecnum || v.size() != 8)
    return false;
  const uint64_t recnum = detail::LoadBe64(v.data());
  if (!detail::FastTlv(in, size, off, type, v) || type != kTypePcr || v.size() != 4) return false;
  const uint32_t pcr = detail::LoadBe32(v.data());
  if (pcr > 23) return false;
  if (!detail::FastTlv(in, size, off, type, v) || type != kTypeDigests) return false;
  const uint8_t* digest = nullptr;
  // The common case first: exactly one SHA-256 digest TLV.
  if (v.size() == 37 && v[0] == (kAlgSha256 & 0xff) && v[1] == 0 && v[2] == 0 && v[3] == 0 &&
      v[4] == 32) {
    digest = v.data() + 5;
  } else {
    size_t doff = 0;
    while (doff < v.size()) {
      uint8_t dt = 0;
      std::span<const uint8_t> d;
      if (!detail::FastTlv(v.data(), v.size(), doff, dt, d)) return false;
      if (dt == (kAlgSha256 & 0xff)) {
        if (d.size() != 32) return false;
        digest = d.data();
      }
    }
    if (!digest) return false;
  }
  if (!detail::FastTlv(in, size, off, type, v) || type <= kTypeDigests) return false;
  r.recnum = recnum;
  r.pcr = pcr;
  r.digest = digest;
  r.content_type = type;
  r.content = v;
  r.offset = offset;
  offset = off;
  return true;
}

}  // namespace sovguard::attestation::cel
