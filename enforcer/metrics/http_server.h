// Serves GET /metrics (Prometheus text format 0.0.4) over HTTP/1.1 with libmicrohttpd: one polling
// thread, bounded connections, request memory and idle time. Binds to loopback only unless the
// caller explicitly allows another address: metrics name guests and datasets.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "enforcer/metrics/registry.h"

struct MHD_Daemon;

namespace sovguard::metrics {

inline constexpr const char* kDefaultListen = "127.0.0.1:9477";

struct ServerOptions {
  std::string listen = kDefaultListen;  // 127.0.0.1:PORT, [::1]:PORT, localhost:PORT; PORT 0 = any
  bool allow_non_loopback = false;      // true: any literal IPv4/IPv6 address is accepted
  std::chrono::seconds idle_timeout{10};
  std::size_t max_request_bytes = 16 * 1024;  // per-connection memory: request line + headers
  unsigned max_connections = 16;
  std::function<void(const std::string&)> log;  // libmicrohttpd's error messages; may be empty
};

// A parsed HOST:PORT.
struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  bool loopback = false;
  std::string text;  // canonical: 127.0.0.1:9477 or [::1]:9477
};

// Accepts a literal IPv4 address, a bracketed IPv6 address or "localhost" (= 127.0.0.1), then
// ':' and a port 0..65535. Throws std::invalid_argument saying what was expected. No DNS.
ListenAddress ParseListenAddress(std::string_view text);

class MetricsServer {
 public:
  // Binds, listens and starts the server thread; throws std::runtime_error (bind errors name the
  // address and errno) or std::invalid_argument (address refused). `registry` must outlive this.
  MetricsServer(Registry& registry, ServerOptions options);
  ~MetricsServer();  // stops the thread and closes every socket
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound address with the real port (useful with PORT 0).
  const std::string& address() const { return address_; }
  std::uint16_t port() const { return port_; }

 private:
  struct DaemonDeleter {
    void operator()(MHD_Daemon* d) const;
  };
  Registry& registry_;
  ServerOptions options_;
  std::string address_;
  std::uint16_t port_ = 0;
  std::unique_ptr<MHD_Daemon, DaemonDeleter> daemon_;

  friend struct ServerCallbacks;
};

}  // namespace sovguard::metrics
