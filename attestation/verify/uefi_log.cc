#include "attestation/verify/uefi_log.h"

#include <cstring>
#include <string>
#include <string_view>

namespace sovguard::attestation::verify::uefi {
namespace {

constexpr uint16_t kAlgSha256 = 0x000B;
constexpr std::string_view kSpecId = std::string_view("Spec ID Event03\0", 16);
constexpr std::string_view kStartupLocality = std::string_view("StartupLocality\0", 16);

// Bounds-checked little-endian reader; every failure names the offset.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> d) : d_(d) {}
  size_t off() const { return off_; }
  bool done() const { return off_ == d_.size(); }
  uint64_t Le(int width, const char* what) {
    Need(static_cast<size_t>(width), what);
    uint64_t v = 0;
    for (int i = width - 1; i >= 0; --i) v = (v << 8) | d_[off_ + static_cast<size_t>(i)];
    off_ += static_cast<size_t>(width);
    return v;
  }
  std::span<const uint8_t> Take(size_t n, const char* what) {
    Need(n, what);
    auto s = d_.subspan(off_, n);
    off_ += n;
    return s;
  }

 private:
  void Need(size_t n, const char* what) const {
    if (d_.size() - off_ < n)
      throw AttestationError("UEFI event log: truncated at byte " + std::to_string(off_) +
                             " reading " + what + " (" + std::to_string(n) + " bytes needed, " +
                             std::to_string(d_.size() - off_) + " left)");
  }
  std::span<const uint8_t> d_;
  size_t off_ = 0;
};

// Event data sizes above this are not real firmware events: refuse rather than trust a length.
constexpr size_t kMaxEventData = 16u << 20;

}  // namespace

Log Parse(std::span<const uint8_t> data) {
  if (data.empty()) throw AttestationError("UEFI event log: empty");
  Reader r(data);
  // Spec ID event in the SHA-1 format.
  const auto pcr0 = r.Le(4, "first event PCR index");
  const auto type0 = r.Le(4, "first event type");
  r.Take(20, "first event SHA-1 digest");
  const auto size0 = r.Le(4, "first event data size");
  if (pcr0 != 0 || type0 != kEvNoAction || size0 < 29 || size0 > 4096)
    throw AttestationError(
        "UEFI event log: byte 0: not a crypto-agile log (expected an EV_NO_ACTION Spec ID event)");
  auto spec = r.Take(static_cast<size_t>(size0), "Spec ID event data");
  if (std::memcmp(spec.data(), kSpecId.data(), kSpecId.size()) != 0)
    throw AttestationError("UEFI event log: byte 32: signature is not \"Spec ID Event03\"");
  Reader s(spec.subspan(kSpecId.size()));
  s.Le(4, "platform class");
  s.Take(4, "spec version and uintn size");
  const auto nalg = s.Le(4, "number of algorithms");
  if (nalg == 0 || nalg > 16)
    throw AttestationError("UEFI event log: Spec ID event lists " + std::to_string(nalg) +
                           " algorithms");
  std::map<uint16_t, uint16_t> sizes;
  for (uint64_t i = 0; i < nalg; ++i) {
    const auto alg = static_cast<uint16_t>(s.Le(2, "algorithm id"));
    sizes[alg] = static_cast<uint16_t>(s.Le(2, "digest size"));
  }
  if (!sizes.count(kAlgSha256) || sizes[kAlgSha256] != 32)
    throw AttestationError("UEFI event log: no 32-byte SHA-256 bank in the Spec ID event");

  Log log;
  while (!r.done()) {
    Event ev;
    ev.offset = r.off();
    ev.pcr = static_cast<uint32_t>(r.Le(4, "PCR index"));
    ev.type = static_cast<uint32_t>(r.Le(4, "event type"));
    const auto count = r.Le(4, "digest count");
    if (count == 0 || count > sizes.size())
      throw AttestationError("UEFI event log: event at byte " + std::to_string(ev.offset) + ": " +
                             std::to_string(count) + " digests (expected 1.." +
                             std::to_string(sizes.size()) + ")");
    bool have_sha256 = false;
    for (uint64_t i = 0; i < count; ++i) {
      const auto alg = static_cast<uint16_t>(r.Le(2, "digest algorithm"));
      auto it = sizes.find(alg);
      if (it == sizes.end())
        throw AttestationError("UEFI event log: event at byte " + std::to_string(ev.offset) +
                               ": algorithm " + std::to_string(alg) +
                               " not declared in the Spec ID event");
      auto d = r.Take(it->second, "digest");
      if (alg == kAlgSha256) {
        std::memcpy(ev.sha256.data(), d.data(), 32);
        have_sha256 = true;
      }
    }
    const auto size = r.Le(4, "event data size");
    if (size > kMaxEventData)
      throw AttestationError("UEFI event log: event at byte " + std::to_string(ev.offset) +
                             ": data size " + std::to_string(size) + " is implausible");
    auto body = r.Take(static_cast<size_t>(size), "event data");
    if (!have_sha256)
      throw AttestationError("UEFI event log: event at byte " + std::to_string(ev.offset) +
                             " has no SHA-256 digest");
    if (ev.type == kEvNoAction && ev.pcr == 0 && body.size() >= kStartupLocality.size() + 1 &&
        std::memcmp(body.data(), kStartupLocality.data(), kStartupLocality.size()) == 0)
      log.startup_locality = body[kStartupLocality.size()];
    log.events.push_back(ev);
  }
  return log;
}

std::map<uint32_t, Sha256Digest> Replay(const Log& log) {
  std::map<uint32_t, Sha256Digest> pcrs;
  for (const auto& ev : log.events) {
    if (ev.type == kEvNoAction) continue;
    auto [it, inserted] = pcrs.try_emplace(ev.pcr, Sha256Digest{});
    if (inserted && ev.pcr == 0) it->second[31] = log.startup_locality;
    it->second = ExtendSha256(it->second, ev.sha256);
  }
  return pcrs;
}

}  // namespace sovguard::attestation::verify::uefi
