#include "enforcer/daemon/release.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <stdexcept>
#include <vector>

#include "attestation/eventlog/cel.h"
#include "attestation/measure/measurement_log.h"
#include "attestation/measure/platform.h"
#include "attestation/tpm/tpm.h"
#include "enforcer/daemon/host_services.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/storage/storage_datapath.h"
#include "enforcer/system/mounts.h"

namespace sovguard::daemon {
namespace fs = std::filesystem;
namespace cel = attestation::cel;

InstanceLock::InstanceLock(const fs::path& runtime_dir) {
  fs::create_directories(runtime_dir);
  const fs::path path = runtime_dir / "sovguardd.lock";
  fd_.Reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640));
  if (!fd_) throw std::runtime_error(fmt::format("open {}: {}", path.string(), strerror(errno)));
  if (::flock(fd_.Get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(fd_.Get(), pid, sizeof pid - 1, 0);
    if (err == EWOULDBLOCK)
      throw std::runtime_error(
          fmt::format("another sovguardd (pid {}) holds {}: one daemon per runtime directory",
                      n > 0 ? std::string(pid, static_cast<size_t>(n)) : "?", path.string()));
    throw std::runtime_error(fmt::format("flock {}: {}", path.string(), strerror(err)));
  }
  const std::string me = std::to_string(::getpid());
  if (::ftruncate(fd_.Get(), 0) != 0 || ::pwrite(fd_.Get(), me.data(), me.size(), 0) < 0)
    throw std::runtime_error(fmt::format("write {}: {}", path.string(), strerror(errno)));
}

namespace {

// The network datapath's pins (anything in bpf_pin_dir but the storage path's folder).
bool HasNetPins(const fs::path& pin_dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(pin_dir, ec))
    if (e.path().filename() != "storage") return true;
  return false;
}

}  // namespace

int ReleaseEnforcement(const Config& config, bool force, std::string& out) {
  const InstanceLock lock(config.runtime_dir);
  enforcer::EnsureBpffs();
  const fs::path storage_pins = config.bpf_pin_dir / "storage";
  // Adopt what the last daemon left, keeping it in force (no detach on destruction) until the
  // release is decided and measured.
  std::optional<net::NetDatapath> net;
  std::vector<std::string> covered;  // taps and cgroups, named by guest
  std::set<std::string> guests;
  if (HasNetPins(config.bpf_pin_dir)) {
    net.emplace(net::NetDatapathOptions{.pin_dir = config.bpf_pin_dir.string(),
                                             .detach_on_destroy = false});
    for (const auto& g : net->Adopt())
      if (g.tap_present)
        covered.push_back(fmt::format("{} (tap ifindex {})", g.config.name, g.config.ifindex));
  }
  std::unique_ptr<storage::StorageDatapath> storage;
  std::string unadoptable;  // pinned storage state this daemon cannot adopt (another cgroup)
  if (fs::exists(storage_pins)) {
    try {
      storage = std::make_unique<storage::StorageDatapath>(
          storage::StorageOptions{.pin_dir = storage_pins});
      for (const auto& name : storage->GuestNames()) {
        covered.push_back(name + " (storage)");
        guests.insert(name);
      }
    } catch (const storage::StorageError& e) {
      // Whatever it covers is unknown: only --force releases it (its pins are removed).
      unadoptable = e.what();
      covered.push_back("storage state in " + storage_pins.string() + " (" + unadoptable + ")");
    }
  }
  if (!net && !storage && unadoptable.empty()) {
    out +=
        fmt::format("nothing to release: no pinned state under {}\n", config.bpf_pin_dir.string());
    return 0;
  }
  if (!covered.empty() && !force) {
    out += "refusing to release enforcement: still covering\n";
    for (const auto& c : covered) out += "  " + c + "\n";
    out += "stop these guests first, or release anyway with --force (they run unguarded)\n";
    return 1;
  }

  // Into the quoted log first: if the TPM cannot record it, nothing is released.
  const TpmChoice tpm_choice = EnsureTpm(config);
  attestation::tpm::Tpm tpm(tpm_choice.tcti);
  attestation::measure::MeasurementLog log(
      tpm, attestation::measure::MeasureConfig{.state_dir = config.state_dir / "measurements",
                                               .pcr = config.sovguard_pcr});
  std::set<std::string> measured;
  log.WithLog([&](std::span<const cel::Record> records, std::span<const std::uint8_t>) {
    measured = cel::MeasuredGuests(records);
  });
  for (const auto& uuid : measured) attestation::measure::MeasureGuest(log, uuid, false);
  const std::string detail =
      fmt::format("released{}: {} taps/cgroups covered", force ? " (forced)" : "", covered.size());
  log.Measure(cel::EventKind::kEnforcementState, "enforcement", attestation::Sha256(detail),
              detail);

  if (net) {
    net->Detach();
    net->Unpin();
  }
  if (storage) storage->Detach();  // with its pins and folder
  if (!unadoptable.empty()) {
    // Its links and maps go with their last pin.
    for (const auto& e : fs::directory_iterator(storage_pins)) fs::remove(e.path());
    fs::remove(storage_pins);
  }
  std::error_code ec;
  fs::remove(config.bpf_pin_dir, ec);  // only when empty
  out += fmt::format(
      "enforcement released{}: {} guest(s) were covered, {} measured as released; "
      "measured into PCR {} ({})\n",
      force ? " (forced)" : "", covered.size(), measured.size(), config.sovguard_pcr,
      tpm_choice.description);
  for (const auto& c : covered) out += "  released: " + c + "\n";
  return 0;
}

}  // namespace sovguard::daemon
