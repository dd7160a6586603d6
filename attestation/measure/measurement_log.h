// Runtime measurement: every measured thing becomes one CEL record appended to a persistent
// log and extended into the sovguard PCR, so replaying the log always gives the PCR value.
//
// Ordering and crash safety: a record is appended and fsync'ed BEFORE the PCR extend. So after
// any crash the log holds either exactly the extended events, or one more (its extend was lost).
// On open the log is reconciled with the TPM:
//   replay(log) == PCR                 -> "continued" (or "fresh" when both are empty/zero)
//   replay(log minus last) == PCR      -> the last event is extended now: "recovered"
//   PCR == 0 and log not empty         -> the platform rebooted: the old log is kept as
//                                         cel.bin.prev and a new one starts: "new_boot"
//   anything else                      -> throws: another component extends this PCR, or the log
//                                         was lost/altered; no evidence can replay, so none is
//                                         produced from it (fail closed) until the next reboot.
// A kDaemonStart record with that state as its detail is then appended, so restarts are visible.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "attestation/eventlog/cel.h"
#include "attestation/tpm/tpm.h"

namespace sovguard::attestation::measure {

// PCR 13: non-resettable (PCRs 16 and 23 are the resettable debug/application PCRs of the TCG
// PC Client profile), not written by firmware (0-7), GRUB (8, 9), IMA (10), shim (14) or
// systemd on non-UKI boots. systemd-stub uses 11-13 when booting a unified kernel image and
// systemd uses 15: see docs/threat-model.md. Configurable.
inline constexpr uint32_t kDefaultSovguardPcr = 13;

struct MeasureConfig {
  std::filesystem::path state_dir = "/var/lib/sovguard";
  uint32_t pcr = kDefaultSovguardPcr;
};

class MeasurementLog {
 public:
  MeasurementLog(tpm::Tpm& tpm, MeasureConfig cfg);
  ~MeasurementLog();
  MeasurementLog(const MeasurementLog&) = delete;
  MeasurementLog& operator=(const MeasurementLog&) = delete;

  // Appends a record for `object_digest` and extends the PCR. Returns the record written.
  cel::Record Measure(cel::EventKind kind, std::string name, const Sha256Digest& object_digest,
                      std::string detail = "");
  cel::Record MeasureBytes(cel::EventKind kind, std::string name, std::span<const uint8_t> bytes,
                           std::string detail = "");
  // name = the path; object digest = SHA-256 of the file's contents.
  cel::Record MeasureFile(cel::EventKind kind, const std::filesystem::path& path,
                          std::string detail = "");

  // Runs `fn` with the log held still (no Measure can interleave), e.g. around TPM2_Quote so the
  // log handed out is exactly the one the quoted PCR value reflects.
  void WithLog(
      const std::function<void(std::span<const cel::Record>, std::span<const uint8_t>)>& fn);

  uint32_t pcr() const { return cfg_.pcr; }
  const std::string& open_state() const { return open_state_; }
  std::filesystem::path log_path() const { return cfg_.state_dir / "cel.bin"; }
  size_t size();

 private:
  void Open();
  void AppendDurable(const Bytes& encoded);

  tpm::Tpm& tpm_;
  MeasureConfig cfg_;
  std::mutex mu_;
  int fd_ = -1;
  std::vector<cel::Record> records_;
  Bytes encoded_;
  std::string open_state_;
};

}  // namespace sovguard::attestation::measure
