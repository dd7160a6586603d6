#include "enforcer/libvirt/watcher.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <libvirt/virterror.h>

namespace sovguard::libvirt {

std::string_view ToString(ChangeReason r) {
  switch (r) {
    case ChangeReason::kDeviceAdded:
      return "device-added";
    case ChangeReason::kDeviceRemoved:
      return "device-removed";
    case ChangeReason::kMetadata:
      return "metadata";
    case ChangeReason::kReboot:
      return "reboot";
    case ChangeReason::kSuspended:
      return "suspended";
    case ChangeReason::kResumed:
      return "resumed";
    case ChangeReason::kMigration:
      return "migration";
    case ChangeReason::kReconcile:
      return "reconcile";
  }
  return "unknown";
}

std::optional<GuestInfo> ResolveGuest(virDomainPtr dom, const std::string& qemu_run_dir) {
  int active = virDomainIsActive(dom);
  if (active < 0) {
    throw LibvirtError("virDomainIsActive");
  }
  if (active == 0) {
    return std::nullopt;
  }
  GuestInfo g;
  g.domain = ParseDomainXml(DomainXml(dom, 0));
  int state = 0, reason = 0;
  if (virDomainGetState(dom, &state, &reason, 0) == 0) {
    g.paused = state == VIR_DOMAIN_PAUSED;
  }
  if (auto pid = QemuPid(g.domain.name, qemu_run_dir)) {
    g.qemu_pid = *pid;
    g.cgroup = ResolveCgroup(*pid);
  }
  return g;
}

namespace {

enum class Kind { kReconcile, kConnectionLost, kLifecycle, kChanged, kRemoveNic, kResume };

struct NicRemoval {
  Interface nic;
  std::chrono::steady_clock::time_point requested;
  std::chrono::milliseconds deadline;
  std::function<void(const NicRemovalResult&)> done;
};

struct Work {
  Kind kind;
  std::string uuid;
  int event = 0;   // lifecycle: virDomainEventType
  int detail = 0;  // lifecycle detail
  ChangeReason reason = ChangeReason::kReconcile;
  std::shared_ptr<NicRemoval> removal;                    // kRemoveNic
  std::function<void(const std::string& error)> resumed;  // kResume
};

// Event callbacks hold a Sink, not the Impl: clearing `push` (under mu) makes late callbacks
// no-ops.
struct Sink {
  std::mutex mu;
  std::function<void(Work)> push;
  void Push(Work w) {
    std::lock_guard lock(mu);
    if (push) {
      push(std::move(w));
    }
  }
};

}  // namespace

struct Watcher::Impl {
  WatcherOptions options;
  WatcherCallbacks callbacks;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Work> queue;
  bool stop = false;
  bool running = false;
  std::map<std::string, GuestInfo> guests;  // by uuid; touched by the worker, read under mu
  std::atomic<bool> is_connected{false};
  std::atomic<uint64_t> n_connections{0};
  std::atomic<uint64_t> n_reconciles{0};
  std::thread worker;

  std::shared_ptr<Sink> sink = std::make_shared<Sink>();

  void Push(Work w) {
    {
      std::lock_guard lock(mu);
      queue.push_back(std::move(w));
    }
    cv.notify_all();
  }

  void Error(const std::string& e) {
    if (callbacks.on_error) {
      callbacks.on_error(e);
    }
  }

  void Run();
  void Connect(std::unique_ptr<Connection>& conn, std::vector<int>& callback_ids);
  void Process(virConnectPtr conn, const Work& w);
  void Reconcile(virConnectPtr conn);
  void Defined(virDomainPtr d);
  void DefinedByUuid(virConnectPtr conn, const std::string& uuid);
  void Refresh(virConnectPtr conn, const std::string& uuid, std::optional<ChangeReason> reason);
  void Down(const std::string& uuid);
  void RemoveNic(virConnectPtr conn, const std::string& uuid, const NicRemoval& r);
  void Deliver(const GuestInfo& g, std::optional<ChangeReason> reason);
};

namespace {

using SinkPtr = std::shared_ptr<Sink>;

std::string UuidOf(virDomainPtr dom) {
  char buf[VIR_UUID_STRING_BUFLEN] = {};
  return virDomainGetUUIDString(dom, buf) == 0 ? std::string(buf) : std::string();
}

SinkPtr& SinkOf(void* opaque) {
  return *static_cast<SinkPtr*>(opaque);
}

int OnLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  SinkOf(opaque)->Push({Kind::kLifecycle, UuidOf(dom), event, detail});
  return 0;
}
void OnReboot(virConnectPtr, virDomainPtr dom, void* opaque) {
  SinkOf(opaque)->Push({Kind::kChanged, UuidOf(dom), 0, 0, ChangeReason::kReboot});
}
void OnDeviceAdded(virConnectPtr, virDomainPtr dom, const char*, void* opaque) {
  SinkOf(opaque)->Push({Kind::kChanged, UuidOf(dom), 0, 0, ChangeReason::kDeviceAdded});
}
void OnDeviceRemoved(virConnectPtr, virDomainPtr dom, const char*, void* opaque) {
  SinkOf(opaque)->Push({Kind::kChanged, UuidOf(dom), 0, 0, ChangeReason::kDeviceRemoved});
}
void OnMetadata(virConnectPtr, virDomainPtr dom, int, const char*, void* opaque) {
  // Any metadata change: a label may also appear or disappear through <metadata> edits.
  SinkOf(opaque)->Push({Kind::kChanged, UuidOf(dom), 0, 0, ChangeReason::kMetadata});
}
void OnMigrationIteration(virConnectPtr, virDomainPtr dom, int, void* opaque) {
  SinkOf(opaque)->Push({Kind::kChanged, UuidOf(dom), 0, 0, ChangeReason::kMigration});
}
void FreeSink(void* opaque) {
  delete static_cast<SinkPtr*>(opaque);
}

}  // namespace

void Watcher::Impl::Connect(std::unique_ptr<Connection>& conn, std::vector<int>& ids) {
  SinkPtr s = sink;
  conn = std::make_unique<Connection>(options.connection, [s](int) {
    s->Push({Kind::kConnectionLost, {}});
  });
  struct Reg {
    int id;
    virConnectDomainEventGenericCallback cb;
  };
  const Reg regs[] = {
      {VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle)},
      {VIR_DOMAIN_EVENT_ID_REBOOT, VIR_DOMAIN_EVENT_CALLBACK(OnReboot)},
      {VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, VIR_DOMAIN_EVENT_CALLBACK(OnDeviceAdded)},
      {VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, VIR_DOMAIN_EVENT_CALLBACK(OnDeviceRemoved)},
      {VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, VIR_DOMAIN_EVENT_CALLBACK(OnMetadata)},
      {VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, VIR_DOMAIN_EVENT_CALLBACK(OnMigrationIteration)},
  };
  for (const auto& r : regs) {
    auto* opaque = new SinkPtr(sink);
    int id = virConnectDomainEventRegisterAny(conn->Get(), nullptr, r.id, r.cb, opaque, FreeSink);
    if (id < 0) {
      delete opaque;
      throw LibvirtError("virConnectDomainEventRegisterAny(" + std::to_string(r.id) + ")");
    }
    ids.push_back(id);
  }
}

void Watcher::Impl::Run() {
  std::unique_ptr<Connection> conn;
  std::vector<int> ids;
  auto disconnect = [&] {
    // Deregistration fails harmlessly on a dead connection; libvirt then frees the callbacks
    // (and their Sink references) with the connection.
    for (int id : ids) {
      if (conn && !conn->Closed()) {
        virConnectDomainEventDeregisterAny(conn->Get(), id);
      }
    }
    ids.clear();
    conn.reset();
    if (is_connected.exchange(false) && callbacks.on_connection) {
      callbacks.on_connection(false);
    }
  };
  auto backoff = options.reconnect_min;
  std::unique_lock lock(mu);
  while (!stop) {
    if (!conn) {
      lock.unlock();
      try {
        Connect(conn, ids);
      } catch (const std::exception& e) {
        Error(std::string("libvirt connect: ") + e.what());
        disconnect();
      }
      lock.lock();
      if (!conn) {
        cv.wait_for(lock, backoff, [&] { return stop; });
        backoff = std::min(backoff * 2, options.reconnect_max);
        continue;
      }
      backoff = options.reconnect_min;
      ++n_connections;
      is_connected = true;  // under mu: WaitConnected() checks it with the same lock
      // Events that arrived for the old connection are superseded by the reconcile; interface
      // removals still run, on the new connection.
      std::erase_if(queue, [](const Work& w) {
        return w.kind != Kind::kRemoveNic && w.kind != Kind::kResume;
      });
      queue.push_back({Kind::kReconcile, {}});
      if (callbacks.on_connection) {
        lock.unlock();
        callbacks.on_connection(true);
        lock.lock();
      }
    }
    cv.wait(lock, [&] { return stop || !queue.empty(); });
    if (stop) {
      break;
    }
    Work w = std::move(queue.front());
    queue.pop_front();
    lock.unlock();
    if (w.kind == Kind::kConnectionLost || conn->Closed()) {
      disconnect();
    } else {
      try {
        Process(conn->Get(), w);
      } catch (const std::exception& e) {
        Error(e.what());
        if (conn->Closed()) {
          disconnect();
        }
      }
    }
    lock.lock();
  }
  lock.unlock();
  disconnect();
}

void Watcher::Impl::Process(virConnectPtr conn, const Work& w) {
  switch (w.kind) {
    case Kind::kReconcile:
      Reconcile(conn);
      return;
    case Kind::kChanged:
      if (w.reason == ChangeReason::kMetadata) {
        // `virsh metadata --config` labels a stopped guest: a definition change.
        DefinedByUuid(conn, w.uuid);
      }
      Refresh(conn, w.uuid, w.reason);
      return;
    case Kind::kLifecycle:
      switch (w.event) {
        case VIR_DOMAIN_EVENT_STARTED:
          Refresh(conn, w.uuid,
                  w.detail == VIR_DOMAIN_EVENT_STARTED_MIGRATED
                      ? std::optional<ChangeReason>(ChangeReason::kMigration)
                      : std::nullopt);
          return;
        case VIR_DOMAIN_EVENT_RESUMED:
          Refresh(conn, w.uuid, ChangeReason::kResumed);
          return;
        case VIR_DOMAIN_EVENT_SUSPENDED:
          Refresh(conn, w.uuid,
                  w.detail == VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED ? ChangeReason::kMigration
                                                                  : ChangeReason::kSuspended);
          return;
        case VIR_DOMAIN_EVENT_STOPPED:
        case VIR_DOMAIN_EVENT_UNDEFINED:
          Down(w.uuid);
          return;
        case VIR_DOMAIN_EVENT_SHUTDOWN:
          // The guest finished its shutdown (or QEMU got a signal); STOPPED follows when QEMU has
          // exited. Re-resolving now would only catch QEMU half-gone.
          return;
        case VIR_DOMAIN_EVENT_DEFINED:
          DefinedByUuid(conn, w.uuid);
          Refresh(conn, w.uuid, std::nullopt);
          return;
        default:
          // PMSUSPENDED, CRASHED (with on_crash=preserve the guest stays): re-check.
          Refresh(conn, w.uuid, std::nullopt);
          return;
      }
    case Kind::kConnectionLost:
      return;
    case Kind::kRemoveNic:
      RemoveNic(conn, w.uuid, *w.removal);
      return;
    case Kind::kResume: {
      DomainPtr dom = LookupDomain(conn, w.uuid);
      std::string error;
      if (!dom || virDomainResume(dom.get()) != 0) error = LibvirtError("resume").what();
      w.resumed(error);
      return;
    }
  }
}

void Watcher::Impl::RemoveNic(virConnectPtr conn, const std::string& uuid, const NicRemoval& r) {
  using Clock = std::chrono::steady_clock;
  auto finish = [&](NicRemovalOutcome o, std::string detail) {
    r.done({o, std::move(detail),
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - r.requested)});
  };
  try {
    DomainPtr dom = LookupDomain(conn, uuid);
    if (!dom) {
      finish(NicRemovalOutcome::kGone, "the guest no longer exists");
      return;
    }
    auto present = [&] {
      if (virDomainIsActive(dom.get()) != 1) {
        return false;
      }
      const auto live = ParseDomainXml(DomainXml(dom.get())).interfaces;
      return std::any_of(live.begin(), live.end(), [&](const Interface& i) {
        return i.mac == r.nic.mac && i.alias == r.nic.alias;
      });
    };
    if (!present()) {
      finish(NicRemovalOutcome::kDetached, "no longer attached");
      return;
    }
    // First QEMU drops whatever the guest sends on it (link down, no guest cooperation needed),
    // then the unplug, which needs the guest.
    std::string link = "link not set down";
    if (auto down = InterfaceXmlWithLinkDown(DomainXml(dom.get()), r.nic.mac, r.nic.alias)) {
      link = virDomainUpdateDeviceFlags(dom.get(), down->c_str(), VIR_DOMAIN_AFFECT_LIVE) == 0
                 ? "link down after " +
                       std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          Clock::now() - r.requested)
                                          .count()) +
                       " ms"
                 : std::string(LibvirtError("link down").what());
    }
    // Asynchronous in libvirt: it asks QEMU (and the guest) to unplug and emits device-removed.
    std::string detach_error;
    if (r.nic.alias.empty() ||
        virDomainDetachDeviceAlias(dom.get(), r.nic.alias.c_str(), VIR_DOMAIN_AFFECT_LIVE) < 0) {
      detach_error =
          r.nic.alias.empty() ? "the interface has no alias" : LibvirtError("detach-device").what();
    }
    // Re-checked on each device-removed event for this guest (queued for the worker), or at the
    // deadline.
    auto removed_events = [&] {
      return std::count_if(queue.begin(), queue.end(), [&](const Work& w) {
        return w.kind == Kind::kChanged && w.uuid == uuid &&
               w.reason == ChangeReason::kDeviceRemoved;
      });
    };
    std::ptrdiff_t seen = 0;
    while (detach_error.empty() && present()) {
      std::unique_lock lock(mu);
      if (!cv.wait_until(lock, r.requested + r.deadline,
                         [&] { return stop || removed_events() > seen; }) ||
          stop) {
        break;
      }
      seen = removed_events();
    }
    if (!present()) {
      finish(NicRemovalOutcome::kDetached, "detached (" + link + ")");
      return;
    }
    bool stopped = false;
    {
      std::lock_guard lock(mu);
      stopped = stop;
    }
    if (stopped) {
      finish(NicRemovalOutcome::kFailed,
             "the watcher stopped before the interface was removed (" + link + ")");
      return;
    }
    if (virDomainSuspend(dom.get()) == 0) {
      finish(NicRemovalOutcome::kPaused,
             (detach_error.empty() ? "still attached at the deadline" : detach_error) +
                 ": guest paused (" + link + ")");
      return;
    }
    finish(NicRemovalOutcome::kFailed,
           (detach_error.empty() ? "still attached at the deadline" : detach_error) +
               "; pausing failed: " + LibvirtError("suspend").what() + " (" + link + ")");
  } catch (const std::exception& e) {
    finish(NicRemovalOutcome::kFailed, e.what());
  }
}

void Watcher::Impl::Deliver(const GuestInfo& g, std::optional<ChangeReason> reason) {
  const std::string uuid = g.domain.uuid;
  std::optional<GuestInfo> previous;
  {
    std::lock_guard lock(mu);
    auto it = guests.find(uuid);
    if (it != guests.end()) {
      previous = it->second;
    }
    guests[uuid] = g;
  }
  if (!previous) {
    if (callbacks.on_up) {
      callbacks.on_up(g);
    }
    return;
  }
  // Reconcile and lifecycle re-checks only report real differences; explicit events always do
  // (a metadata event with an identical label still means "re-evaluate policy").
  if (!reason || *reason == ChangeReason::kReconcile) {
    if (*previous == g) {
      return;
    }
    reason = reason.value_or(ChangeReason::kReconcile);
  }
  if (callbacks.on_changed) {
    callbacks.on_changed(g, *reason);
  }
}

void Watcher::Impl::Down(const std::string& uuid) {
  std::optional<GuestInfo> last;
  {
    std::lock_guard lock(mu);
    auto it = guests.find(uuid);
    if (it == guests.end()) {
      return;
    }
    last = std::move(it->second);
    guests.erase(it);
  }
  if (callbacks.on_down) {
    callbacks.on_down(*last);
  }
}

void Watcher::Impl::Refresh(virConnectPtr conn, const std::string& uuid,
                            std::optional<ChangeReason> reason) {
  DomainPtr dom = LookupDomain(conn, uuid);
  // Only "no such domain" means gone; any other failure (libvirtd going away mid-call) must not
  // detach a running guest: the reconcile after the reconnect decides.
  if (!dom && virGetLastErrorCode() != VIR_ERR_NO_DOMAIN) {
    throw LibvirtError("virDomainLookupByUUIDString(" + uuid + ")");
  }
  std::optional<GuestInfo> g;
  if (dom) {
    g = ResolveGuest(dom.get(), options.qemu_run_dir);
  }
  if (!g) {
    Down(uuid);
    return;
  }
  Deliver(*g, reason);
}

void Watcher::Impl::Defined(virDomainPtr d) {
  if (!callbacks.on_defined || virDomainIsPersistent(d) != 1) {
    return;
  }
  try {
    callbacks.on_defined(ParseDomainXml(DomainXml(d, VIR_DOMAIN_XML_INACTIVE)));
  } catch (const std::exception& e) {
    const char* name = virDomainGetName(d);
    Error(std::string("definition of ") + (name ? name : "?") + ": " + e.what());
  }
}

void Watcher::Impl::DefinedByUuid(virConnectPtr conn, const std::string& uuid) {
  if (!callbacks.on_defined) {
    return;
  }
  if (auto d = LookupDomain(conn, uuid)) {
    Defined(d.get());
  }
}

void Watcher::Impl::Reconcile(virConnectPtr conn) {
  virDomainPtr* doms = nullptr;
  if (callbacks.on_defined) {
    // Definitions first: what a stopped guest will use is known before any guest runs.
    const int m = virConnectListAllDomains(conn, &doms, VIR_CONNECT_LIST_DOMAINS_PERSISTENT);
    if (m < 0) {
      throw LibvirtError("virConnectListAllDomains (persistent)");
    }
    std::vector<DomainPtr> defined(doms, doms + m);
    std::free(doms);
    doms = nullptr;
    for (const auto& d : defined) {
      Defined(d.get());
    }
  }
  int n = virConnectListAllDomains(conn, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  if (n < 0) {
    throw LibvirtError("virConnectListAllDomains");
  }
  std::vector<DomainPtr> owned;
  owned.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    owned.emplace_back(doms[i]);
  }
  std::free(doms);

  std::map<std::string, GuestInfo> found;
  for (const auto& d : owned) {
    try {
      if (auto g = ResolveGuest(d.get(), options.qemu_run_dir)) {
        found[g->domain.uuid] = std::move(*g);
      }
    } catch (const std::exception& e) {
      Error("reconcile " + std::string(virDomainGetName(d.get())) + ": " + e.what());
    }
  }
  std::vector<std::string> gone;
  {
    std::lock_guard lock(mu);
    for (const auto& [uuid, _] : guests) {
      if (!found.count(uuid)) {
        gone.push_back(uuid);
      }
    }
  }
  for (const auto& uuid : gone) {
    Down(uuid);
  }
  for (const auto& [uuid, g] : found) {
    Deliver(g, ChangeReason::kReconcile);
  }
  {
    std::lock_guard lock(mu);
    ++n_reconciles;
  }
  cv.notify_all();
}

Watcher::Watcher(WatcherOptions options, WatcherCallbacks callbacks)
    : impl_(std::make_shared<Impl>()) {
  impl_->options = std::move(options);
  impl_->callbacks = std::move(callbacks);
  impl_->sink->push = [impl = impl_.get()](Work w) { impl->Push(std::move(w)); };
}

Watcher::~Watcher() {
  Stop();
}

namespace {
// The event loop must outlive every connection; one handle per running watcher.
std::mutex g_loop_mu;
std::map<const void*, EventLoop::Handle> g_loops;
}  // namespace

void Watcher::Start() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->running) {
      return;
    }
    impl_->running = true;
    impl_->stop = false;
  }
  {
    std::lock_guard lock(g_loop_mu);
    g_loops.emplace(impl_.get(), EventLoop::Acquire());
  }
  impl_->worker = std::thread([impl = impl_.get()] { impl->Run(); });
}

void Watcher::Stop() {
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->running) {
      return;
    }
    impl_->running = false;
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->worker.joinable()) {
    impl_->worker.join();
  }
  {
    std::lock_guard lock(impl_->sink->mu);
    impl_->sink->push = nullptr;
  }
  std::lock_guard lock(g_loop_mu);
  g_loops.erase(impl_.get());  // stops the loop thread if this was the last user
}

bool Watcher::WaitConnected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mu);
  return impl_->cv.wait_for(
      lock, timeout, [&] { return impl_->is_connected.load() && impl_->n_reconciles.load() > 0; });
}

void Watcher::RequestReconcile() {
  impl_->Push({Kind::kReconcile, {}});
}

void Watcher::RemoveInterface(const std::string& uuid, const Interface& nic,
                              std::chrono::milliseconds deadline,
                              std::function<void(const NicRemovalResult&)> done) {
  Work w{Kind::kRemoveNic, uuid};
  w.removal = std::make_shared<NicRemoval>(
      NicRemoval{nic, std::chrono::steady_clock::now(), deadline, std::move(done)});
  {
    std::lock_guard lock(impl_->mu);
    impl_->queue.push_front(std::move(w));
  }
  impl_->cv.notify_all();
}

void Watcher::ResumeGuest(const std::string& uuid,
                          std::function<void(const std::string& error)> done) {
  Work w{Kind::kResume, uuid};
  w.resumed = std::move(done);
  impl_->Push(std::move(w));
}

std::string_view ToString(NicRemovalOutcome o) {
  switch (o) {
    case NicRemovalOutcome::kDetached:
      return "detached";
    case NicRemovalOutcome::kPaused:
      return "paused";
    case NicRemovalOutcome::kGone:
      return "gone";
    case NicRemovalOutcome::kFailed:
      return "failed";
  }
  return "failed";
}

std::vector<GuestInfo> Watcher::Guests() const {
  std::lock_guard lock(impl_->mu);
  std::vector<GuestInfo> out;
  for (const auto& [_, g] : impl_->guests) {
    out.push_back(g);
  }
  return out;
}

bool Watcher::Connected() const {
  return impl_->is_connected.load();
}
uint64_t Watcher::Connections() const {
  return impl_->n_connections.load();
}
uint64_t Watcher::Reconciles() const {
  return impl_->n_reconciles.load();
}

}  // namespace sovguard::libvirt
