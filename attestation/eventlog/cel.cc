#include "attestation/eventlog/cel.h"

#include <array>

namespace sovguard::attestation::cel {
namespace {

using detail::kInnerDetail;
using detail::kInnerKind;
using detail::kInnerName;
using detail::kInnerObjectDigest;
constexpr size_t kTlvHeader = 5;
// Bounds a single record so a corrupt length cannot make us allocate gigabytes.
constexpr uint32_t kMaxValue = detail::kMaxTlvValue;

constexpr std::array<std::pair<EventKind, std::string_view>, 14> kKindNames{{
    {EventKind::kDaemonStart, "daemon_start"},
    {EventKind::kSelfBinary, "self_binary"},
    {EventKind::kBpfObject, "bpf_object"},
    {EventKind::kPolicyBundle, "policy_bundle"},
    {EventKind::kQemuBinary, "qemu_binary"},
    {EventKind::kLibvirtdBinary, "libvirtd_binary"},
    {EventKind::kLibvirtDriver, "libvirt_driver"},
    {EventKind::kKernelImage, "kernel_image"},
    {EventKind::kKernelCmdline, "kernel_cmdline"},
    {EventKind::kPolicyApplied, "policy_applied"},
    {EventKind::kMechanismDowngraded, "mechanism_downgraded"},
    {EventKind::kProgramAttached, "program_attached"},
    {EventKind::kEnforcementState, "enforcement_state"},
    {EventKind::kRecovered, "recovered"},
}};

void PutTlv(Bytes& out, uint8_t type, std::span<const uint8_t> value) {
  out.push_back(type);
  PutBe(out, value.size(), 4);
  out.insert(out.end(), value.begin(), value.end());
}
void PutTlv(Bytes& out, uint8_t type, std::string_view s) {
  PutTlv(out, type, std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

struct Tlv {
  uint8_t type;
  std::span<const uint8_t> value;
};

// Reads one TLV at `off`; returns an error string instead of throwing so the prefix decoder can
// report where a torn record starts.
std::string ReadTlv(std::span<const uint8_t> in, size_t& off, Tlv& tlv) {
  if (in.size() - off < kTlvHeader) return "truncated TLV header";
  tlv.type = in[off];
  uint64_t len = GetBe(in, off + 1, 4);
  if (len > kMaxValue) return "TLV length " + std::to_string(len) + " exceeds 1 MiB";
  if (in.size() - off - kTlvHeader < len) return "truncated TLV value";
  tlv.value = in.subspan(off + kTlvHeader, static_cast<size_t>(len));
  off += kTlvHeader + static_cast<size_t>(len);
  return "";
}

}  // namespace

namespace detail {
std::string DecodeRecordViewSlow(std::span<const uint8_t> in, size_t& off, RecordView& r) {
  r.offset = off;
  Tlv t{};
  if (auto e = ReadTlv(in, off, t); !e.empty()) return e;
  if (t.type != kTypeRecnum || t.value.size() != 8) return "expected RECNUM TLV (type 0, 8 octets)";
  r.recnum = GetBe(t.value, 0, 8);
  if (auto e = ReadTlv(in, off, t); !e.empty()) return e;
  if (t.type == kTypeNvIndex) return "NV_INDEX records are not supported (only PCR)";
  if (t.type != kTypePcr || t.value.size() != 4) return "expected PCR TLV (type 1, 4 octets)";
  r.pcr = static_cast<uint32_t>(GetBe(t.value, 0, 4));
  if (r.pcr > 23) return "PCR index " + std::to_string(r.pcr) + " out of range 0-23";
  if (auto e = ReadTlv(in, off, t); !e.empty()) return e;
  if (t.type != kTypeDigests) return "expected DIGESTS TLV (type 3)";
  {
    size_t doff = 0;
    r.digest = nullptr;
    while (doff < t.value.size()) {
      Tlv d{};
      if (auto e = ReadTlv(t.value, doff, d); !e.empty()) return "in DIGESTS: " + e;
      // One-octet type holds the low byte of TPM_ALG_ID; SHA-256 is 0x0b.
      if (d.type == (kAlgSha256 & 0xff)) {
        if (d.value.size() != 32) return "SHA-256 digest must be 32 octets";
        r.digest = d.value.data();
      }
    }
    if (!r.digest) return "record has no SHA-256 digest";
  }
  if (auto e = ReadTlv(in, off, t); !e.empty()) return e;
  if (t.type <= kTypeDigests) return "expected a CONTENT TLV, got type " + std::to_string(t.type);
  r.content_type = t.type;
  r.content = t.value;
  return "";
}
}  // namespace detail

namespace {

std::string DecodeRecordView(std::span<const uint8_t> in, size_t& off, RecordView& r) {
  // Hot path (cel.h): no error text, no allocation. On false, the slow decoder runs again to
  // say exactly what is wrong.
  const size_t start = off;
  if (DecodeRecordViewAt(in, off, r)) return "";
  off = start;
  auto e = detail::DecodeRecordViewSlow(in, off, r);
  return e.empty() ? "record decoding disagrees with itself" : e;  // fail closed
}

std::string DecodeRecord(std::span<const uint8_t> in, size_t& off, Record& r) {
  RecordView v;
  if (auto e = DecodeRecordView(in, off, v); !e.empty()) return e;
  r.recnum = v.recnum;
  r.pcr = v.pcr;
  std::copy(v.digest, v.digest + 32, r.digest.begin());
  r.content_type = v.content_type;
  r.content.assign(v.content.begin(), v.content.end());
  return "";
}

// Which kind numbers are known (kKindNames), as one table lookup for the verifier's hot path.
constexpr std::array<bool, 256> kKnownKind = [] {
  std::array<bool, 256> known{};
  for (const auto& [kind, name] : kKindNames) known.at(static_cast<uint16_t>(kind)) = true;
  return known;
}();
bool KnownKind(uint64_t k) {
  return k < kKnownKind.size() && kKnownKind[k];
}
// The header's inline fast path takes the known kinds as one range.
static_assert([] {
  for (uint64_t k = 0; k < kKnownKind.size(); ++k)
    if (kKnownKind[k] != (k >= detail::kFirstKind && k <= detail::kLastKind)) return false;
  return true;
}());

}  // namespace

std::string_view EventKindName(EventKind k) {
  for (const auto& [kind, name] : kKindNames)
    if (kind == k) return name;
  return "unknown";
}

std::optional<EventKind> EventKindFromName(std::string_view name) {
  for (const auto& [kind, n] : kKindNames)
    if (n == name) return kind;
  return std::nullopt;
}

Bytes EncodeSovguardContent(const SovguardEvent& ev) {
  if (ev.name.empty()) throw AttestationError("sovguard event: name must not be empty");
  Bytes out, kind;
  PutBe(kind, static_cast<uint16_t>(ev.kind), 2);
  PutTlv(out, kInnerKind, kind);
  PutTlv(out, kInnerName, ev.name);
  PutTlv(out, kInnerObjectDigest, ev.object_digest);
  if (!ev.detail.empty()) PutTlv(out, kInnerDetail, ev.detail);
  return out;
}

SovguardEvent DecodeSovguardContent(std::span<const uint8_t> value) {
  SovguardEvent ev;
  bool kind = false, name = false, digest = false;
  size_t off = 0;
  while (off < value.size()) {
    Tlv t{};
    if (auto e = ReadTlv(value, off, t); !e.empty())
      throw AttestationError("sovguard event content at offset " + std::to_string(off) + ": " + e);
    auto str = [&] { return std::string(t.value.begin(), t.value.end()); };
    switch (t.type) {
      case kInnerKind: {
        if (t.value.size() != 2) throw AttestationError("sovguard event: kind must be 2 octets");
        auto k = static_cast<EventKind>(GetBe(t.value, 0, 2));
        if (EventKindName(k) == "unknown")
          throw AttestationError("sovguard event: unknown kind " +
                                 std::to_string(GetBe(t.value, 0, 2)));
        ev.kind = k;
        kind = true;
        break;
      }
      case kInnerName:
        ev.name = str();
        name = true;
        break;
      case kInnerObjectDigest:
        if (t.value.size() != 32)
          throw AttestationError("sovguard event: object digest must be 32 octets");
        std::copy(t.value.begin(), t.value.end(), ev.object_digest.begin());
        digest = true;
        break;
      case kInnerDetail:
        ev.detail = str();
        break;
      default:
        throw AttestationError("sovguard event: unknown field type " + std::to_string(t.type));
    }
  }
  if (!kind || !name || !digest)
    throw AttestationError("sovguard event: missing kind, name or object digest");
  return ev;
}

Record MakeSovguardRecord(uint64_t recnum, uint32_t pcr, const SovguardEvent& ev) {
  Record r;
  r.recnum = recnum;
  r.pcr = pcr;
  r.content_type = kContentSovguard;
  r.content = EncodeSovguardContent(ev);
  r.digest = Sha256(r.content);
  return r;
}

Bytes EncodeRecord(const Record& r) {
  Bytes out, v;
  PutBe(v, r.recnum, 8);
  PutTlv(out, kTypeRecnum, v);
  v.clear();
  PutBe(v, r.pcr, 4);
  PutTlv(out, kTypePcr, v);
  Bytes digests;
  PutTlv(digests, static_cast<uint8_t>(kAlgSha256), r.digest);
  PutTlv(out, kTypeDigests, digests);
  PutTlv(out, r.content_type, r.content);
  return out;
}

Bytes EncodeLog(std::span<const Record> records) {
  Bytes out;
  for (const auto& r : records) {
    auto b = EncodeRecord(r);
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

DecodeResult DecodeLogPrefix(std::span<const uint8_t> data) {
  DecodeResult res;
  size_t off = 0;
  while (off < data.size()) {
    Record r;
    size_t next = off;
    if (auto e = DecodeRecord(data, next, r); !e.empty()) {
      res.tail_error = "record " + std::to_string(res.records.size()) + " at byte " +
                       std::to_string(off) + ": " + e;
      break;
    }
    res.records.push_back(std::move(r));
    off = next;
  }
  res.consumed = off;
  return res;
}

std::string DecodeLogViews(std::span<const uint8_t> data, std::vector<RecordView>& out) {
  out.clear();
  // Records are at least ~60 bytes: a cheap estimate avoids most regrowth.
  out.reserve(data.size() / 96 + 1);
  size_t off = 0;
  while (off < data.size()) {
    RecordView r;
    const size_t at = off;
    if (auto e = DecodeRecordView(data, off, r); !e.empty())
      return "record " + std::to_string(out.size()) + " at byte " + std::to_string(at) + ": " + e;
    out.push_back(r);
  }
  return "";
}

std::string RecordViewError(std::span<const uint8_t> data, size_t offset, size_t index) {
  RecordView r;
  size_t off = offset;
  std::string e = offset <= data.size() ? DecodeRecordView(data, off, r) : "offset past the end";
  if (e.empty()) e = "record decoding disagrees with itself";  // fail closed
  return "record " + std::to_string(index) + " at byte " + std::to_string(offset) + ": " + e;
}

namespace detail {
const char* DecodeSovguardContentViewSlow(std::span<const uint8_t> value, SovguardEventView& ev) {
  bool kind = false, name = false, digest = false;
  ev.detail = {};
  size_t off = 0;
  while (off < value.size()) {
    if (value.size() - off < kTlvHeader) return "truncated TLV header in sovguard event content";
    const uint8_t type = value[off];
    const uint64_t len = detail::LoadBe32(value.data() + off + 1);
    if (value.size() - off - kTlvHeader < len)
      return "truncated TLV value in sovguard event content";
    const auto v = value.subspan(off + kTlvHeader, static_cast<size_t>(len));
    off += kTlvHeader + static_cast<size_t>(len);
    const std::string_view sv(reinterpret_cast<const char*>(v.data()), v.size());
    switch (type) {
      case kInnerKind: {
        if (v.size() != 2) return "sovguard event: kind must be 2 octets";
        const uint64_t k = GetBe(v, 0, 2);
        if (!KnownKind(k)) return "sovguard event: unknown kind";
        ev.kind = static_cast<EventKind>(k);
        kind = true;
        break;
      }
      case kInnerName:
        ev.name = sv;
        name = true;
        break;
      case kInnerObjectDigest:
        if (v.size() != 32) return "sovguard event: object digest must be 32 octets";
        ev.object_digest = v.data();
        digest = true;
        break;
      case kInnerDetail:
        ev.detail = sv;
        break;
      default:
        return "sovguard event: unknown field type";
    }
  }
  if (!kind || !name || !digest) return "sovguard event: missing kind, name or object digest";
  return nullptr;
}
}  // namespace detail

std::vector<Record> DecodeLog(std::span<const uint8_t> data) {
  auto res = DecodeLogPrefix(data);
  if (!res.tail_error.empty()) throw AttestationError("CEL: " + res.tail_error);
  return std::move(res.records);
}

std::map<uint32_t, Sha256Digest> Replay(std::span<const Record> records) {
  std::map<uint32_t, Sha256Digest> pcrs;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    if (r.recnum != i)
      throw AttestationError("CEL replay: record " + std::to_string(i) + " has recnum " +
                             std::to_string(r.recnum) + " (expected " + std::to_string(i) + ")");
    if (r.content_type == kContentSovguard) {
      DecodeSovguardContent(r.content);  // well-formed content or throw
      if (Sha256(r.content) != r.digest)
        throw AttestationError("CEL replay: record " + std::to_string(i) +
                               " digest is not SHA-256 of its content");
    }
    auto [it, inserted] = pcrs.try_emplace(r.pcr, Sha256Digest{});
    it->second = ExtendSha256(it->second, r.digest);
  }
  return pcrs;
}

std::set<std::string> MeasuredGuests(std::span<const Record> records) {
  std::set<std::string> running;
  for (const auto& r : records) {
    if (r.content_type != kContentSovguard) continue;
    const auto ev = DecodeSovguardContent(r.content);
    if (ev.kind != EventKind::kEnforcementState || !ev.name.starts_with(kGuestEventPrefix))
      continue;
    const std::string uuid = ev.name.substr(kGuestEventPrefix.size());
    if (ev.detail == "covered")
      running.insert(uuid);
    else if (ev.detail == "released")
      running.erase(uuid);
  }
  return running;
}

}  // namespace sovguard::attestation::cel
