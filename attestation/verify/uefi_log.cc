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

std::string_view EventTypeName(uint32_t type) {
  static constexpr std::pair<uint32_t, std::string_view> kTypes[] = {
      {0x00000000, "EV_PREBOOT_CERT"},
      {0x00000001, "EV_POST_CODE"},
      {0x00000002, "EV_UNUSED"},
      {0x00000003, "EV_NO_ACTION"},
      {0x00000004, "EV_SEPARATOR"},
      {0x00000005, "EV_ACTION"},
      {0x00000006, "EV_EVENT_TAG"},
      {0x00000007, "EV_S_CRTM_CONTENTS"},
      {0x00000008, "EV_S_CRTM_VERSION"},
      {0x00000009, "EV_CPU_MICROCODE"},
      {0x0000000A, "EV_PLATFORM_CONFIG_FLAGS"},
      {0x0000000B, "EV_TABLE_OF_DEVICES"},
      {0x0000000C, "EV_COMPACT_HASH"},
      {0x0000000D, "EV_IPL"},
      {0x0000000E, "EV_IPL_PARTITION_DATA"},
      {0x0000000F, "EV_NONHOST_CODE"},
      {0x00000010, "EV_NONHOST_CONFIG"},
      {0x00000011, "EV_NONHOST_INFO"},
      {0x00000012, "EV_OMIT_BOOT_DEVICE_EVENTS"},
      {0x00000013, "EV_POST_CODE2"},
      {0x80000000, "EV_EFI_EVENT_BASE"},
      {0x80000001, "EV_EFI_VARIABLE_DRIVER_CONFIG"},
      {0x80000002, "EV_EFI_VARIABLE_BOOT"},
      {0x80000003, "EV_EFI_BOOT_SERVICES_APPLICATION"},
      {0x80000004, "EV_EFI_BOOT_SERVICES_DRIVER"},
      {0x80000005, "EV_EFI_RUNTIME_SERVICES_DRIVER"},
      {0x80000006, "EV_EFI_GPT_EVENT"},
      {0x80000007, "EV_EFI_ACTION"},
      {0x80000008, "EV_EFI_PLATFORM_FIRMWARE_BLOB"},
      {0x80000009, "EV_EFI_HANDOFF_TABLES"},
      {0x8000000A, "EV_EFI_PLATFORM_FIRMWARE_BLOB2"},
      {0x8000000B, "EV_EFI_HANDOFF_TABLES2"},
      {0x8000000C, "EV_EFI_VARIABLE_BOOT2"},
      {0x80000010, "EV_EFI_HCRTM_EVENT"},
      {0x800000E0, "EV_EFI_VARIABLE_AUTHORITY"},
      {0x800000E1, "EV_EFI_SPDM_FIRMWARE_BLOB"},
      {0x800000E2, "EV_EFI_SPDM_FIRMWARE_CONFIG"},
  };
  for (const auto& [t, n] : kTypes)
    if (t == type) return n;
  return {};
}

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
