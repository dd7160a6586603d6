#include "enforcer/metrics/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "base/unique_fd.h"
#include "enforcer/metrics/names.h"

namespace sovguard::metrics {
namespace {

using base::UniqueFd;

std::uint16_t ParsePort(std::string_view text, std::string_view whole) {
  unsigned port = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), port);
  if (text.empty() || r.ec != std::errc() || r.ptr != text.data() + text.size() || port > 65535)
    throw std::invalid_argument("metrics listen address '" + std::string(whole) +
                                "': expected a port 0..65535 after ':'");
  return static_cast<std::uint16_t>(port);
}

}  // namespace

ListenAddress ParseListenAddress(std::string_view text) {
  const auto fail = [&](const std::string& what) {
    return std::invalid_argument("metrics listen address '" + std::string(text) + "': " + what);
  };
  ListenAddress out;
  std::string host;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw fail("expected [IPv6]:PORT");
    host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    if (::inet_pton(AF_INET6, host.c_str(), &a.sin6_addr) != 1)
      throw fail("'" + host + "' is not an IPv6 address");
    a.sin6_port = htons(ParsePort(port, text));
    out.loopback = IN6_IS_ADDR_LOOPBACK(&a.sin6_addr);
    std::memcpy(&out.addr, &a, sizeof a);
    out.len = sizeof a;
    char buf[INET6_ADDRSTRLEN];
    ::inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof buf);
    out.text = "[" + std::string(buf) + "]:" + std::to_string(ntohs(a.sin6_port));
    return out;
  }
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0)
    throw fail("expected HOST:PORT (127.0.0.1:PORT, [::1]:PORT or localhost:PORT)");
  host = std::string(text.substr(0, colon));
  port = text.substr(colon + 1);
  if (host == "localhost") host = "127.0.0.1";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1)
    throw fail("'" + host + "' is not an IPv4 address (IPv6 goes in brackets; no host names)");
  a.sin_port = htons(ParsePort(port, text));
  out.loopback = (ntohl(a.sin_addr.s_addr) >> 24) == 127;
  std::memcpy(&out.addr, &a, sizeof a);
  out.len = sizeof a;
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
  out.text = std::string(buf) + ":" + std::to_string(ntohs(a.sin_port));
  return out;
}

// libmicrohttpd's C callbacks, with access to the server's members.
struct ServerCallbacks {
  static MHD_Result Respond(MHD_Connection* c, unsigned status, const std::string& body,
                            const char* content_type, const char* allow = nullptr) {
    MHD_Response* r = MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()),
                                                      MHD_RESPMEM_MUST_COPY);
    if (r == nullptr) return MHD_NO;  // out of memory: MHD closes the connection
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (allow != nullptr) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    const MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
  }

  static MHD_Result Access(void* cls, MHD_Connection* c, const char* url, const char* method,
                           const char* /*version*/, const char* /*upload_data*/,
                           size_t* /*upload_data_size*/, void** /*con_cls*/) {
    auto* self = static_cast<MetricsServer*>(cls);
    // Answered on the first call, before any body: a body is never read (MHD discards it and
    // closes the connection).
    if (std::strcmp(url, "/metrics") != 0)
      return Respond(c, MHD_HTTP_NOT_FOUND, "not found: only /metrics is served\n",
                     "text/plain; charset=utf-8");
    if (std::strcmp(method, MHD_HTTP_METHOD_GET) != 0)
      return Respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: only GET\n",
                     "text/plain; charset=utf-8", MHD_HTTP_METHOD_GET);
    self->registry_.Inc(kScrapes);
    std::string body;
    try {
      body = self->registry_.Render();
    } catch (const std::exception& e) {
      // A collector failed: say so rather than serve a partial view as if it were complete.
      if (self->options_.log)
        self->options_.log(std::string("metrics: render failed: ") + e.what());
      self->registry_.Inc(kErrors, {std::string(kErrorMetrics)});
      return Respond(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "metrics unavailable\n",
                     "text/plain; charset=utf-8");
    }
    return Respond(c, MHD_HTTP_OK, body, kContentType);
  }

  static void Log(void* cls, const char* fmt, va_list ap) {
    auto* self = static_cast<MetricsServer*>(cls);
    if (!self->options_.log) return;
    char buf[512];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    std::string msg(buf);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    self->options_.log("metrics http: " + msg);
  }
};

void MetricsServer::DaemonDeleter::operator()(MHD_Daemon* d) const {
  MHD_stop_daemon(d);
}

MetricsServer::MetricsServer(Registry& registry, ServerOptions options)
    : registry_(registry), options_(std::move(options)) {
  const ListenAddress where = ParseListenAddress(options_.listen);
  if (!where.loopback && !options_.allow_non_loopback)
    throw std::invalid_argument("metrics listen address '" + options_.listen +
                                "' is not a loopback address: metrics name guests and datasets; "
                                "allow it explicitly to serve them beyond this host");
  registry_.Declare(kScrapes);

  UniqueFd fd(::socket(where.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) throw std::runtime_error("metrics: socket(): " + std::string(std::strerror(errno)));
  const int one = 1;
  if (::setsockopt(fd.Get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    throw std::runtime_error("metrics: SO_REUSEADDR: " + std::string(std::strerror(errno)));
  if (where.addr.ss_family == AF_INET6 &&
      ::setsockopt(fd.Get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
    throw std::runtime_error("metrics: IPV6_V6ONLY: " + std::string(std::strerror(errno)));
  if (::bind(fd.Get(), reinterpret_cast<const sockaddr*>(&where.addr), where.len) != 0)
    throw std::runtime_error("metrics: bind " + where.text + ": " + std::strerror(errno));
  if (::listen(fd.Get(), 16) != 0)
    throw std::runtime_error("metrics: listen " + where.text + ": " + std::strerror(errno));
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  if (::getsockname(fd.Get(), reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0)
    throw std::runtime_error("metrics: getsockname: " + std::string(std::strerror(errno)));
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  address_ = where.text.substr(0, where.text.rfind(':') + 1) + std::to_string(port_);

  // libmicrohttpd closes the socket it was given on stop (and, depending on the version, on a
  // failed start): it gets its own duplicate, so our descriptor is closed exactly once either way.
  UniqueFd mhd_fd(::fcntl(fd.Get(), F_DUPFD_CLOEXEC, 0));
  if (!mhd_fd)
    throw std::runtime_error("metrics: dup listen socket: " + std::string(std::strerror(errno)));
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
  if (where.addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  MHD_Daemon* d = MHD_start_daemon(
      flags, 0, nullptr, nullptr, &ServerCallbacks::Access, this, MHD_OPTION_EXTERNAL_LOGGER,
      &ServerCallbacks::Log, this, MHD_OPTION_LISTEN_SOCKET, mhd_fd.Get(),
      MHD_OPTION_CONNECTION_LIMIT, options_.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
      static_cast<unsigned>(options_.idle_timeout.count()), MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      options_.max_request_bytes, MHD_OPTION_END);
  if (d == nullptr) {
    mhd_fd.Release();  // whether libmicrohttpd closed it is unknown: leaking one fd beats a
                       // double close of a descriptor another thread may already reuse
    throw std::runtime_error("metrics: libmicrohttpd did not start on " + address_);
  }
  mhd_fd.Release();
  daemon_.reset(d);
}

MetricsServer::~MetricsServer() = default;

}  // namespace sovguard::metrics
