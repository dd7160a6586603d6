#include "enforcer/libvirt/connection.h"

#include <libvirt/virterror.h>

#include <condition_variable>
#include <csignal>
#include <cstdlib>

namespace sovguard::libvirt {
namespace {

std::string LastLibvirtError() {
  const char* msg = virGetLastErrorMessage();
  return msg ? msg : "unknown libvirt error";
}

// libvirt prints every error to stderr by default; sovguard reports them itself.
void SilentErrorHandler(void*, virErrorPtr) {}

struct LoopState {
  std::mutex mu;
  bool registered = false;
  int users = 0;
  std::atomic<bool> stop{false};
  std::thread thread;
};

LoopState& Loop() {
  static auto* state = new LoopState;  // never destroyed: libvirt keeps its registration
  return *state;
}

void WakeTimeout(int timer, void*) {
  virEventRemoveTimeout(timer);
}

}  // namespace

LibvirtError::LibvirtError(const std::string& what_failed)
    : std::runtime_error(what_failed + ": " + LastLibvirtError()) {}

EventLoop::Handle EventLoop::Acquire() {
  LoopState& s = Loop();
  std::lock_guard lock(s.mu);
  if (!s.registered) {
    if (virInitialize() < 0) {
      throw LibvirtError("virInitialize");
    }
    virSetErrorFunc(nullptr, SilentErrorHandler);
    // libvirt writes to its sockets without MSG_NOSIGNAL: when libvirtd dies mid-write the process
    // would be killed by SIGPIPE. libvirt's documentation asks applications to ignore it; we do,
    // unless the application installed its own handler.
    struct sigaction old {};
    if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
      ::signal(SIGPIPE, SIG_IGN);
    }
    if (virEventRegisterDefaultImpl() < 0) {
      throw LibvirtError("virEventRegisterDefaultImpl");
    }
    s.registered = true;
  }
  if (s.users++ == 0) {
    if (s.thread.joinable()) {
      s.thread.join();
    }
    s.stop = false;
    s.thread = std::thread([&s] {
      while (!s.stop.load()) {
        if (virEventRunDefaultImpl() < 0) {
          // Only fails on a broken poll(); nothing sensible to do but stop.
          break;
        }
      }
    });
  }
  return {};
}

bool EventLoop::Running() {
  LoopState& s = Loop();
  std::lock_guard lock(s.mu);
  return s.users > 0;
}

EventLoop::Handle::~Handle() {
  if (!live_) {
    return;
  }
  LoopState& s = Loop();
  std::thread to_join;
  {
    std::lock_guard lock(s.mu);
    if (--s.users > 0) {
      return;
    }
    s.stop = true;
    // A zero-delay timeout makes virEventRunDefaultImpl return so the thread sees `stop`.
    virEventAddTimeout(0, WakeTimeout, nullptr, nullptr);
    to_join = std::move(s.thread);
  }
  if (to_join.joinable()) {
    to_join.join();
  }
}

struct Connection::CloseState {
  std::shared_ptr<std::atomic<bool>> closed;
  std::function<void(int)> on_close;

  // One function for register and unregister: libvirt matches the pointer.
  static void OnClose(virConnectPtr, int reason, void* opaque) {
    auto* st = static_cast<CloseState*>(opaque);
    if (!st->closed->exchange(true) && st->on_close) {
      st->on_close(reason);
    }
  }
};

Connection::Connection(const ConnectionOptions& opts, std::function<void(int reason)> on_close)
    : closed_(std::make_shared<std::atomic<bool>>(false)) {
  conn_.reset(virConnectOpen(opts.uri.c_str()));
  if (!conn_) {
    throw LibvirtError("virConnectOpen(" + opts.uri + ")");
  }
  // In-process drivers (test:///) have no peer to lose: keepalive and close callbacks are
  // "not supported" there, which is fine; on a remote connection any failure is fatal.
  auto unsupported = [] {
    int code = virGetLastErrorCode();
    return code == VIR_ERR_NO_SUPPORT || code == VIR_ERR_ARGUMENT_UNSUPPORTED;
  };
  if (virConnectSetKeepAlive(conn_.get(), opts.keepalive_interval_s, opts.keepalive_count) < 0 &&
      !unsupported()) {
    throw LibvirtError("virConnectSetKeepAlive(" + opts.uri + ")");
  }
  // We own the state (no free callback): in-process drivers accept the registration without
  // storing it and would never free it; the destructor unregisters first, then frees.
  close_state_ = std::make_unique<CloseState>(CloseState{closed_, std::move(on_close)});
  if (virConnectRegisterCloseCallback(conn_.get(), CloseState::OnClose, close_state_.get(),
                                      nullptr) < 0) {
    close_state_.reset();
    if (!unsupported()) {
      throw LibvirtError("virConnectRegisterCloseCallback(" + opts.uri + ")");
    }
  }
}

Connection::~Connection() {
  if (!conn_) {
    return;
  }
  closed_->store(true);  // a close we cause ourselves is not reported
  // libvirt serialises unregistering with a running callback; the result is irrelevant (a dead
  // connection has nothing left to call), the connection is closed next anyway.
  if (close_state_) {
    (void)virConnectUnregisterCloseCallback(conn_.get(), CloseState::OnClose);
  }
  conn_.reset();
  close_state_.reset();
}

DomainPtr LookupDomain(virConnectPtr conn, const std::string& uuid) {
  return DomainPtr(virDomainLookupByUUIDString(conn, uuid.c_str()));
}

std::string DomainXml(virDomainPtr dom, unsigned flags) {
  char* xml = virDomainGetXMLDesc(dom, flags);
  if (!xml) {
    throw LibvirtError("virDomainGetXMLDesc(" + std::string(virDomainGetName(dom)) + ")");
  }
  std::string s(xml);
  std::free(xml);
  return s;
}

std::string DomainUuid(virDomainPtr dom) {
  char buf[VIR_UUID_STRING_BUFLEN] = {};
  if (virDomainGetUUIDString(dom, buf) < 0) {
    throw LibvirtError("virDomainGetUUIDString");
  }
  return buf;
}

}  // namespace sovguard::libvirt
