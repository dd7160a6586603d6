// sovguardd's end of the qemu hook socket (protocol in hook_protocol.h). The daemon passes a
// handler that attaches everything for the guest and returns only when done; the handler's answer
// is what the hook (and so libvirt) sees. Requests are handled one at a time, on one thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "enforcer/libvirt/domain.h"
#include "enforcer/libvirt/hook_protocol.h"

namespace sovguard::libvirt {

struct HookEvent {
  HookRequest request;
  // Parsed from request.xml; nullopt with `parse_error` set when the XML is unusable (the handler
  // must then refuse blocking operations: fail closed).
  std::optional<DomainDescription> domain;
  std::string parse_error;
};

class HookServer {
 public:
  using Handler = std::function<HookResponse(const HookEvent&)>;

  // Binds `socket_path` (a stale socket file is replaced; the directory is created 0700), mode
  // 0600, and serves until destroyed. Throws std::runtime_error if it cannot bind.
  // Only peers with uid `allowed_uid` are served (libvirt runs hooks as root).
  HookServer(std::string socket_path, Handler handler,
             std::chrono::milliseconds io_timeout = std::chrono::seconds(10),
             uid_t allowed_uid = 0);
  ~HookServer();
  HookServer(const HookServer&) = delete;
  HookServer& operator=(const HookServer&) = delete;

  [[nodiscard]] const std::string& Path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sovguard::libvirt
