#include "enforcer/libvirt/hook_protocol.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>

namespace sovguard::libvirt {
namespace {

using json = nlohmann::json;

std::string Field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) {
    throw std::runtime_error(std::string("hook message: missing field '") + name + "'");
  }
  if (!it->is_string()) {
    throw std::runtime_error(std::string("hook message: field '") + name + "' must be a string");
  }
  return it->get<std::string>();
}

json ParseObject(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    throw std::runtime_error("hook message: not a JSON object");
  }
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_integer()) {
    throw std::runtime_error("hook message: missing integer field 'v'");
  }
  // Compared as JSON numbers: get<int>() would narrow 4294967297 to 1.
  if (*v != kHookProtocolVersion) {
    throw std::runtime_error("hook message: protocol version " + v->dump() +
                             " unsupported (expected " + std::to_string(kHookProtocolVersion) +
                             ")");
  }
  return j;
}

int RemainingMs(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1 << 30));
}

void WaitFd(int fd, short events, std::chrono::steady_clock::time_point deadline,
            const char* what) {
  while (true) {
    pollfd p{fd, events, 0};
    int ms = RemainingMs(deadline);
    int r = ::poll(&p, 1, ms);
    if (r > 0) {
      return;
    }
    if (r == 0) {
      throw std::runtime_error(std::string("timed out ") + what);
    }
    if (errno != EINTR) {
      throw std::runtime_error(std::string("poll: ") + std::generic_category().message(errno));
    }
  }
}

// Moves `len` bytes of a frame before `deadline`: io(offset) sends or receives from `offset` on
// and returns what send/recv return. A peer that closes before a whole frame is read is an error.
enum class Direction { kWrite, kRead };
template <class Io>
void TransferFrame(int fd, Direction dir, std::size_t len,
                   std::chrono::steady_clock::time_point deadline, Io&& io) {
  const bool reading = dir == Direction::kRead;
  std::size_t off = 0;
  while (off < len) {
    WaitFd(fd, reading ? POLLIN : POLLOUT, deadline,
           reading ? "reading hook frame" : "writing hook frame");
    const ssize_t n = io(off);
    if (n == 0 && reading) {
      throw std::runtime_error("hook frame: peer closed the connection");
    }
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      throw std::runtime_error(std::string(reading ? "hook frame recv: " : "hook frame send: ") +
                               std::generic_category().message(errno));
    }
    off += static_cast<std::size_t>(n);
  }
}

}  // namespace

bool IsBlockingOperation(std::string_view op, std::string_view sub) {
  return op == "start" && sub == "begin";
}

std::string EncodeRequest(const HookRequest& r) {
  return json{{"v", kHookProtocolVersion}, {"op", r.op},     {"sub", r.sub},
              {"extra", r.extra},          {"name", r.name}, {"xml", r.xml}}
      .dump();
}

std::string EncodeResponse(const HookResponse& r) {
  json j{{"v", kHookProtocolVersion}, {"ok", r.ok}};
  if (!r.error.empty()) {
    j["error"] = r.error;
  }
  return j.dump();
}

HookRequest DecodeRequest(std::string_view text) {
  json j = ParseObject(text);
  HookRequest r;
  r.op = Field(j, "op");
  r.sub = Field(j, "sub");
  r.extra = j.contains("extra") ? Field(j, "extra") : "-";
  r.name = Field(j, "name");
  r.xml = Field(j, "xml");
  return r;
}

HookResponse DecodeResponse(std::string_view text) {
  json j = ParseObject(text);
  auto ok = j.find("ok");
  if (ok == j.end() || !ok->is_boolean()) {
    throw std::runtime_error("hook message: missing boolean field 'ok'");
  }
  HookResponse r;
  r.ok = ok->get<bool>();
  if (j.contains("error")) {
    r.error = Field(j, "error");
  }
  return r;
}

void WriteFrame(int fd, std::string_view payload, std::chrono::steady_clock::time_point deadline) {
  if (payload.empty() || payload.size() > kMaxHookFrame) {
    throw std::runtime_error("hook frame: bad size");
  }
  const auto n = static_cast<uint32_t>(payload.size());
  std::string buf;
  buf.push_back(static_cast<char>(n >> 24));
  buf.push_back(static_cast<char>(n >> 16));
  buf.push_back(static_cast<char>(n >> 8));
  buf.push_back(static_cast<char>(n));
  buf.append(payload);
  TransferFrame(fd, Direction::kWrite, buf.size(), deadline, [&](std::size_t off) {
    return ::send(fd, buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
  });
}

std::string ReadFrame(int fd, std::chrono::steady_clock::time_point deadline) {
  auto read_exact = [&](char* dst, size_t len) {
    TransferFrame(fd, Direction::kRead, len, deadline,
                  [&](std::size_t off) { return ::recv(fd, dst + off, len - off, 0); });
  };
  unsigned char hdr[4];
  read_exact(reinterpret_cast<char*>(hdr), 4);
  const uint32_t n =
      (uint32_t{hdr[0]} << 24) | (uint32_t{hdr[1]} << 16) | (uint32_t{hdr[2]} << 8) | hdr[3];
  if (n == 0 || n > kMaxHookFrame) {
    throw std::runtime_error("hook frame: length " + std::to_string(n) + " out of range");
  }
  std::string payload(n, '\0');
  read_exact(payload.data(), n);
  return payload;
}

HookResponse SendHookRequest(const std::string& socket_path, const HookRequest& request,
                             std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    throw std::runtime_error("hook socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    throw std::runtime_error(std::string("socket: ") + std::generic_category().message(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      throw std::runtime_error("cannot reach sovguardd at " + socket_path + ": " +
                               std::generic_category().message(errno));
    }
    WaitFd(fd, POLLOUT, deadline, "connecting to sovguardd");
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      throw std::runtime_error("cannot reach sovguardd at " + socket_path + ": " +
                               std::generic_category().message(err));
    }
  }
  WriteFrame(fd, EncodeRequest(request), deadline);
  return DecodeResponse(ReadFrame(fd, deadline));
}

}  // namespace sovguard::libvirt
