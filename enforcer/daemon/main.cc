// sovguardd: the host daemon. Start-up order matters: kernel file systems, the probe (so every
// later step knows which mechanisms exist), the TPM, libvirt, then policy and enforcement, and only
// then READY=1 to systemd.
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "enforcer/daemon/config.h"
#include "enforcer/daemon/host_services.h"
#include "enforcer/daemon/log.h"
#include "enforcer/daemon/node.h"
#include "enforcer/daemon/release.h"
#include "enforcer/probe/probe.h"
#include "enforcer/system/mounts.h"
#include "enforcer/version.h"

namespace sd = sovguard::daemon;
namespace en = sovguard::enforcer;

namespace {

// systemd's watchdog (WatchdogSec=), pinged twice per main-loop round. A round's work may take
// longer than the interval on a loaded or slow host (a reload applying a world-sized table, a
// tamper round comparing whole tables, a storage path started over, a hook holding the node's
// lock): during it the bound is raised with WATCHDOG_USEC to max(10 intervals, 5 minutes) and set
// back afterwards, so a slow daemon is not killed in the middle of enforcing, and a hung one still
// is (within that bound while working, within the interval while idle).
class Watchdog {
 public:
  Watchdog() {
    std::uint64_t usec = 0;
    enabled_ = sd_watchdog_enabled(0, &usec) > 0;
    interval_ = std::chrono::microseconds(usec);
  }
  bool enabled() const { return enabled_; }
  std::chrono::microseconds interval() const { return interval_; }
  class Scope {
   public:
    explicit Scope(const Watchdog* w) : w_(w) {
      if (w_ != nullptr)
        w_->Set(std::max<std::chrono::microseconds>(10 * w_->interval_, std::chrono::minutes(5)));
    }
    ~Scope() {
      if (w_ != nullptr) w_->Set(w_->interval_);
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    const Watchdog* w_;
  };
  // The raised bound until the returned object goes out of scope; raising and setting back
  // each carry a ping (WATCHDOG=1).
  [[nodiscard]] Scope LongWork() const { return Scope(enabled_ ? this : nullptr); }

 private:
  void Set(std::chrono::microseconds bound) const {
    sd_notifyf(0, "WATCHDOG=1\nWATCHDOG_USEC=%llu", static_cast<unsigned long long>(bound.count()));
  }
  bool enabled_ = false;
  std::chrono::microseconds interval_{0};
};

constexpr const char* kUsage = R"(usage: sovguardd [options]
  --config FILE        settings file (default /etc/sovguard/sovguardd.conf when it exists)
  --set KEY=VALUE      override one setting (repeatable)
  --data-dir DIR       shipped data: jurisdiction table and default policy
  --state-dir DIR      persistent state (swtpm, anti-rollback, event log)
  --runtime-dir DIR    runtime files (probe cache, status, API socket)
  --release-enforcement  remove every filter, storage program and pin this daemon left in the
                       kernel (stopping the daemon keeps enforcing), measured into the TPM log
                       first; refuses while a guest is still covered
  --force              with --release-enforcement: release even then (guests run unguarded)
  --version            print the version and exit
)";

int Run(const sd::Config& config) {
  // The state (TPM state, event log, anti-rollback) is the daemon's alone: 0700. The runtime
  // directory (api.sock, status.json, probe.json) is 0750: its group (sovguard under the shipped
  // unit's Group=) may use the local API and read the status. The unit sets the same modes.
  for (const auto& [dir, mode] :
       {std::pair{config.state_dir, 0700}, std::pair{config.runtime_dir, 0750}}) {
    std::filesystem::create_directories(dir);
    std::filesystem::permissions(dir, std::filesystem::perms(mode));
  }
  // Before anything touches the kernel: a second daemon would adopt the first one's datapath.
  const sd::InstanceLock lock(config.runtime_dir);
  if (en::EnsureBpffs()) sd::log::Notice("mounted bpffs at /sys/fs/bpf");
  // The UEFI and IMA event logs the evidence carries are read from securityfs.
  if (en::EnsureSecurityfs()) sd::log::Notice("mounted securityfs at /sys/kernel/security");

  const en::ProbeReport probe = en::RunProbe();
  const auto probe_json = en::ToJson(probe).dump(2);
  // Mode 0640: the owner and the runtime directory's group (README: local API and status).
  sovguard::base::WriteFileAtomic(config.runtime_dir / "probe.json", probe_json, 0640);
  for (const auto& p : probe.paths) {
    if (p.guarantee == en::Guarantee::kNone) {
      sd::log::Warning("path {}: NOT GUARDED on this kernel ({})", p.path,
                       p.attempts.empty() ? "no mechanism" : p.attempts.back().error);
    } else {
      sd::log::Info("path {}: {} ({})", p.path, p.mechanism, en::ToString(p.guarantee));
    }
    for (const auto& a : p.attempts) {
      if (!a.ok && a.mechanism != p.mechanism) {
        sd::log::Notice("path {}: {} unavailable: {}", p.path, a.mechanism, a.error);
      }
    }
  }

  const sd::TpmChoice tpm = sd::EnsureTpm(config);
  if (tpm.software) {
    sd::log::Warning("*** {} ***", tpm.description);
  } else {
    sd::log::Info("TPM: {}", tpm.description);
  }
  const std::string libvirt = sd::EnsureLibvirtd(config);
  sd::log::Info("{}", libvirt);

  // Blocked before the node starts its threads (API, watcher, storage), so they all inherit the
  // mask: a SIGTERM arriving while the main loop is busy waits for its sigtimedwait instead of
  // taking the default action in another thread. (libvirtd and swtpm, started above, keep theirs.)
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  sd::Node node(config, tpm, probe);
  node.Start();

  // status.json is what `sovguardctl status` reads (mode 0640 in the 0750 runtime directory).
  const auto write_status = [&] {
    nlohmann::json status = node.Status();
    status["version"] = SOVGUARD_VERSION;
    status["pid"] = ::getpid();
    status["tpm"] = {
        {"tcti", tpm.tcti}, {"software", tpm.software}, {"description", tpm.description}};
    status["libvirt"] = {{"uri", config.libvirt_uri}, {"state", libvirt}};
    status["probe"] = en::ToJson(probe);
    sovguard::base::WriteFileAtomic(config.runtime_dir / "status.json", status.dump(2), 0640);
  };
  write_status();

  const Watchdog watchdog;
  // Fail closed, said where operators look: guests holding a dataset are refused meanwhile.
  const std::string unguarded = node.Status().value("not_enforced", "");
  if (unguarded.empty()) {
    sd_notify(0, "READY=1\nSTATUS=enforcing");
    sd::log::Info("ready");
  } else {
    sd_notifyf(0, "READY=1\nSTATUS=NOT enforced: %s", unguarded.c_str());
    sd::log::Error("ready, but NOT ENFORCED: {}: guests holding a dataset are refused", unguarded);
  }

  // Half the watchdog interval between pings, as sd_watchdog_enabled(3) recommends; at most a
  // second, so status and violation events stay fresh.
  const auto tick = std::min<std::chrono::microseconds>(
      watchdog.enabled() ? watchdog.interval() / 2 : std::chrono::seconds(1),
      std::chrono::seconds(1));
  // Node::Start() ran the first round.
  auto next_tamper_check =
      std::chrono::steady_clock::now() + std::chrono::seconds(config.tamper_check_seconds);
  while (true) {
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(tick);
    timespec ts{
        .tv_sec = secs.count(),
        .tv_nsec = std::chrono::duration_cast<std::chrono::nanoseconds>(tick - secs).count()};
    const int sig = sigtimedwait(&signals, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) {
      sd_notify(0, "STOPPING=1");
      sd::log::Info("stopping on {}; kernel enforcement stays in force", strsignal(sig));
      return 0;
    }
    const auto long_work = watchdog.LongWork();
    if (sig == SIGHUP) {
      sd::log::Info("reload requested");
      node.Reload();
      write_status();  // the reload's result, before this round's events and tamper check
    }
    node.PumpEvents();
    if (std::chrono::steady_clock::now() >= next_tamper_check) {
      node.CheckTamper();
      next_tamper_check =
          std::chrono::steady_clock::now() + std::chrono::seconds(config.tamper_check_seconds);
    }
    write_status();
  }
}

}  // namespace

int main(int argc, char** argv) {
  sd::Config config;
  std::vector<std::string> args(argv + 1, argv + argc);
  std::filesystem::path config_file = "/etc/sovguard/sovguardd.conf";
  bool explicit_config = false;
  bool release = false, force = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) {
      config_file = args[++i];
      explicit_config = true;
    }
  }
  try {
    if (explicit_config || std::filesystem::exists(config_file))
      sd::LoadConfigFile(config_file, config);
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= args.size()) throw std::runtime_error(a + ": expected a value");
        return args[++i];
      };
      if (a == "--version") {
        std::cout << "sovguardd " << SOVGUARD_VERSION << "\n";
        return 0;
      } else if (a == "--help" || a == "-h") {
        std::cout << kUsage;
        return 0;
      } else if (a == "--config") {
        ++i;
      } else if (a == "--set") {
        const std::string kv = value();
        const auto eq = kv.find('=');
        if (eq == std::string::npos) throw std::runtime_error("--set: expected KEY=VALUE");
        sd::ApplySetting(kv.substr(0, eq), kv.substr(eq + 1), config, "--set");
      } else if (a == "--data-dir") {
        config.data_dir = value();
      } else if (a == "--state-dir") {
        config.state_dir = value();
      } else if (a == "--runtime-dir") {
        config.runtime_dir = value();
      } else if (a == "--release-enforcement") {
        release = true;
      } else if (a == "--force") {
        force = true;
      } else {
        std::cerr << "sovguardd: unknown option " << a << "\n" << kUsage;
        return 2;
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "sovguardd: " << e.what() << "\n";
    return 2;
  }
  if (force && !release) {
    std::cerr << "sovguardd: --force applies to --release-enforcement\n" << kUsage;
    return 2;
  }
  if (release) {
    try {
      std::string out;
      const int rc = sd::ReleaseEnforcement(config, force, out);
      (rc == 0 ? std::cout : std::cerr) << out;
      return rc;
    } catch (const std::exception& e) {
      std::cerr << "sovguardd: release failed: " << e.what() << "\n";
      return 1;
    }
  }
  try {
    return Run(config);
  } catch (const std::exception& e) {
    sd::log::Error("fatal: {}", e.what());
    sd_notifyf(0, "STATUS=failed: %s", e.what());
    return 1;
  }
}
