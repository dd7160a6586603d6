// RAII for libvirt handles, the process-wide event loop and a connection with keepalive.
#pragma once

#include <libvirt/libvirt.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace sovguard::libvirt {

struct ConnectDeleter {
  void operator()(virConnectPtr c) const { virConnectClose(c); }
};
struct DomainDeleter {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using ConnectPtr = std::unique_ptr<virConnect, ConnectDeleter>;
using DomainPtr = std::unique_ptr<virDomain, DomainDeleter>;

// A libvirt call failed; what() carries the call and libvirt's own message.
class LibvirtError : public std::runtime_error {
 public:
  explicit LibvirtError(const std::string& what_failed);
};

// libvirt allows one event implementation per process, registered before the first connection
// that wants events. The loop thread runs while at least one EventLoop::Handle is alive and is
// stopped and joined when the last one goes (a zero-delay timeout wakes it to see the stop flag).
class EventLoop {
 public:
  class Handle {
   public:
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    Handle(Handle&& o) noexcept : live_(std::exchange(o.live_, false)) {}
    ~Handle();

   private:
    friend class EventLoop;
    Handle() = default;
    bool live_{true};
  };
  // Registers the default implementation (once per process) and starts the loop thread if needed.
  static Handle Acquire();
  static bool Running();
};

struct ConnectionOptions {
  std::string uri = "qemu:///system";
  int keepalive_interval_s = 5;  // probe every 5 s ...
  unsigned keepalive_count = 3;  // ... and give up after 3 unanswered probes (~20 s)
};

// An open connection whose close (libvirtd exit, keepalive timeout) is reported once through
// `on_close`, from the event loop thread. Needs a live EventLoop::Handle.
class Connection {
 public:
  Connection(const ConnectionOptions& opts, std::function<void(int reason)> on_close);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  [[nodiscard]] virConnectPtr Get() const { return conn_.get(); }
  [[nodiscard]] bool Closed() const { return closed_->load(); }

 private:
  struct CloseState;
  ConnectPtr conn_;
  std::shared_ptr<std::atomic<bool>> closed_;
  std::unique_ptr<CloseState> close_state_;
};

// Opens a domain by UUID string; nullptr when it no longer exists.
DomainPtr LookupDomain(virConnectPtr conn, const std::string& uuid);
// virDomainGetXMLDesc (live); throws LibvirtError.
std::string DomainXml(virDomainPtr dom, unsigned flags = 0);
std::string DomainUuid(virDomainPtr dom);

}  // namespace sovguard::libvirt
