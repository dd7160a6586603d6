#include "attestation/measure/measurement_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/errno_text.h"

namespace sovguard::attestation::measure {
namespace {

std::string Errno(const std::string& what) {
  return what + ": " + base::ErrnoText(errno);
}

}  // namespace

MeasurementLog::MeasurementLog(tpm::Tpm& tpm, MeasureConfig cfg) : tpm_(tpm), cfg_(std::move(cfg)) {
  if (cfg_.pcr > 23)
    throw AttestationError("sovguard PCR " + std::to_string(cfg_.pcr) + " out of range 0-23");
  if (cfg_.pcr == 16 || cfg_.pcr == 23)
    throw AttestationError("sovguard PCR " + std::to_string(cfg_.pcr) +
                           " is resettable: a root attacker could reset it and forge the log");
  std::filesystem::create_directories(cfg_.state_dir);
  try {
    Open();
  } catch (...) {
    // The destructor does not run for a throwing constructor: release the fd and its flock.
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    throw;
  }
}

MeasurementLog::~MeasurementLog() {
  if (fd_ >= 0) ::close(fd_);  // also drops the flock
}

void MeasurementLog::Open() {
  const auto path = log_path();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) throw AttestationError(Errno("cannot open measurement log " + path.string()));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0)
    throw AttestationError(
        Errno("measurement log " + path.string() + " is locked (is another sovguardd running?)"));
  Bytes data;
  ReadFileIfExists(path, data);
  auto decoded = cel::DecodeLogPrefix(data);
  bool torn = false;
  if (!decoded.tail_error.empty()) {
    // Only the final record can be torn (appends are sequential); anything else is corruption.
    if (decoded.tail_error.find("truncated") == std::string::npos)
      throw AttestationError("measurement log " + path.string() +
                             " is corrupt: " + decoded.tail_error);
    if (::ftruncate(fd_, static_cast<off_t>(decoded.consumed)) != 0)
      throw AttestationError(Errno("cannot drop torn record from " + path.string()));
    torn = true;
  }
  for (const auto& r : decoded.records)
    if (r.pcr != cfg_.pcr)
      throw AttestationError("measurement log " + path.string() + " is for PCR " +
                             std::to_string(r.pcr) + " but the configured sovguard PCR is " +
                             std::to_string(cfg_.pcr) +
                             ": move the old log away or fix the configuration");

  const Sha256Digest pcr_value = tpm_.PcrRead({cfg_.pcr}).at(0);
  auto replay = [&](size_t n) {
    auto m = cel::Replay(std::span(decoded.records.data(), n));
    auto it = m.find(cfg_.pcr);
    return it == m.end() ? Sha256Digest{} : it->second;
  };
  const size_t n = decoded.records.size();
  if (replay(n) == pcr_value) {
    open_state_ = n == 0 ? "fresh" : "continued";
  } else if (n > 0 && replay(n - 1) == pcr_value) {
    tpm_.PcrExtend(cfg_.pcr, decoded.records.back().digest);
    open_state_ = "recovered";
  } else if (pcr_value == Sha256Digest{}) {
    auto prev = path;
    prev += ".prev";
    std::filesystem::copy_file(path, prev, std::filesystem::copy_options::overwrite_existing);
    if (::ftruncate(fd_, 0) != 0)
      throw AttestationError(Errno("cannot start a new log at " + path.string()));
    decoded.records.clear();
    decoded.consumed = 0;
    open_state_ = "new_boot";
  } else {
    throw AttestationError(
        "sovguard PCR " + std::to_string(cfg_.pcr) + " = " + ToHex(pcr_value) +
        " is not explained by the measurement log " + path.string() + " (" + std::to_string(n) +
        " records): another component extends this PCR (configure another one) or the log was "
        "lost or altered; evidence from this boot cannot be verified until the host reboots");
  }
  if (torn) open_state_ += "+torn_record_dropped";
  records_ = std::move(decoded.records);
  encoded_.assign(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(decoded.consumed));
  if (::lseek(fd_, 0, SEEK_END) < 0) throw AttestationError(Errno("lseek " + path.string()));
  // Unlocked call is fine: the object is not shared yet.
  Measure(cel::EventKind::kDaemonStart, "sovguardd", Sha256(open_state_), open_state_);
}

void MeasurementLog::AppendDurable(const Bytes& encoded) {
  size_t done = 0;
  while (done < encoded.size()) {
    ssize_t w = ::write(fd_, encoded.data() + done, encoded.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw AttestationError(Errno("append to measurement log " + log_path().string()));
    }
    done += static_cast<size_t>(w);
  }
  if (::fdatasync(fd_) != 0) throw AttestationError(Errno("fdatasync " + log_path().string()));
}

cel::Record MeasurementLog::Measure(cel::EventKind kind, std::string name,
                                    const Sha256Digest& object_digest, std::string detail) {
  std::lock_guard lock(mu_);
  auto rec = cel::MakeSovguardRecord(records_.size(), cfg_.pcr,
                                     {kind, std::move(name), object_digest, std::move(detail)});
  auto encoded = cel::EncodeRecord(rec);
  const auto old_size = static_cast<off_t>(encoded_.size());
  AppendDurable(encoded);
  try {
    tpm_.PcrExtend(cfg_.pcr, rec.digest);
  } catch (...) {
    // Keep log and PCR in step: the event did not happen as far as the TPM is concerned. If even
    // the truncate fails, reopening reconciles (the record is then extended as "recovered").
    if (::ftruncate(fd_, old_size) != 0 || ::lseek(fd_, 0, SEEK_END) < 0)
      throw AttestationError(Errno("PCR extend failed and the log could not be rolled back"));
    throw;
  }
  encoded_.insert(encoded_.end(), encoded.begin(), encoded.end());
  records_.push_back(rec);
  return rec;
}

cel::Record MeasurementLog::MeasureBytes(cel::EventKind kind, std::string name,
                                         std::span<const uint8_t> bytes, std::string detail) {
  return Measure(kind, std::move(name), Sha256(bytes), std::move(detail));
}

cel::Record MeasurementLog::MeasureFile(cel::EventKind kind, const std::filesystem::path& path,
                                        std::string detail) {
  return Measure(kind, path.string(), Sha256File(path), std::move(detail));
}

void MeasurementLog::WithLog(
    const std::function<void(std::span<const cel::Record>, std::span<const uint8_t>)>& fn) {
  std::lock_guard lock(mu_);
  fn(records_, encoded_);
}

size_t MeasurementLog::size() {
  std::lock_guard lock(mu_);
  return records_.size();
}

}  // namespace sovguard::attestation::measure
