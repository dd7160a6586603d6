// Follows libvirt: every running guest, resolved (taps, disks, labels, QEMU pid, cgroup), and
// every change to it, delivered as typed callbacks on ONE worker thread in event order.
//
// Sources: domain lifecycle (start/stop/suspend/resume, incl. migration details), device added
// and removed, metadata change, reboot, migration iteration; a Reconcile() at start and after
// every reconnect (libvirtd restart, keepalive timeout) turns libvirt's current truth into
// Up/Changed/Down so nothing is missed while the connection was down and nothing stale remains.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "enforcer/libvirt/connection.h"
#include "enforcer/libvirt/domain.h"
#include "enforcer/libvirt/resolve.h"

namespace sovguard::libvirt {

struct GuestInfo {
  DomainDescription domain;  // name, uuid, taps, MACs, disks, labels (from the live XML)
  pid_t qemu_pid = 0;        // 0 if it could not be verified
  std::optional<CgroupInfo> cgroup;
  bool paused = false;
  bool operator==(const GuestInfo&) const = default;
};

enum class ChangeReason {
  kDeviceAdded,
  kDeviceRemoved,
  kMetadata,
  kReboot,
  kSuspended,
  kResumed,
  kMigration,
  kReconcile,  // found different from what was last delivered, while reconciling
};
std::string_view ToString(ChangeReason r);

struct WatcherCallbacks {
  std::function<void(const GuestInfo&)> on_up;
  std::function<void(const GuestInfo&, ChangeReason)> on_changed;
  std::function<void(const GuestInfo& last_known)> on_down;
  std::function<void(bool connected)> on_connection;       // optional
  std::function<void(const std::string& error)> on_error;  // optional: failures not fatal
  // optional: a persistent domain's definition (its inactive XML), running or not: every one at
  // each reconcile, and again whenever a domain is defined, redefined or its metadata changes
  // (so what a guest will use is known before it first starts).
  std::function<void(const DomainDescription& definition)> on_defined;
};

// What became of an interface Watcher::RemoveInterface took out of a guest.
enum class NicRemovalOutcome {
  kDetached,  // libvirt no longer lists it
  kPaused,    // still attached at the deadline (the guest ignored the unplug): guest paused
  kGone,      // the guest no longer runs
  kFailed,    // neither detached nor paused (detail says why)
};
std::string_view ToString(NicRemovalOutcome o);

struct NicRemovalResult {
  NicRemovalOutcome outcome = NicRemovalOutcome::kFailed;
  std::string detail;
  std::chrono::milliseconds took{0};  // from the request to the outcome
};

struct WatcherOptions {
  ConnectionOptions connection;
  std::string qemu_run_dir = "/run/libvirt/qemu";  // NAME.pid files
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{2000};
};

class Watcher {
 public:
  Watcher(WatcherOptions options, WatcherCallbacks callbacks);
  ~Watcher();  // Stop()
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // Starts the event loop and the worker, which connects (retrying), registers for events and
  // reconciles. Returns at once; WaitConnected() waits for the first reconcile.
  void Start();
  void Stop();
  bool WaitConnected(std::chrono::milliseconds timeout);

  // Asks the worker for a reconcile (asynchronous).
  void RequestReconcile();

  // Takes `nic` (found by alias and MAC) out of the running guest `uuid` through the watcher's own
  // libvirt connection, on the worker, ahead of queued events: libvirt's detach-device (live,
  // by alias); if the guest still has it `deadline` after the request (a guest may ignore the
  // unplug), the guest is paused. `done` gets the outcome on the worker thread. Never from the
  // qemu hook (libvirt forbids hooks calling back).
  void RemoveInterface(const std::string& uuid, const Interface& nic,
                       std::chrono::milliseconds deadline,
                       std::function<void(const NicRemovalResult&)> done);
  // Resumes a guest (virDomainResume) on the worker; `done` gets "" or libvirt's error.
  void ResumeGuest(const std::string& uuid, std::function<void(const std::string& error)> done);

  // What the watcher last delivered for each running guest (for `sovguardctl status`).
  [[nodiscard]] std::vector<GuestInfo> Guests() const;
  [[nodiscard]] bool Connected() const;
  [[nodiscard]] uint64_t Connections() const;  // successful (re)connects so far
  [[nodiscard]] uint64_t Reconciles() const;   // completed reconciles so far

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Resolves one domain now (live XML + pid + cgroup). nullopt if it is not running.
std::optional<GuestInfo> ResolveGuest(virDomainPtr dom, const std::string& qemu_run_dir);

}  // namespace sovguard::libvirt
