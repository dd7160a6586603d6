// The qemu hook <-> sovguardd protocol (README.md "The qemu hook").
//
// libvirt runs /etc/libvirt/hooks/qemu.d/sovguard (sovguard-libvirt-hook) as
//   sovguard NAME OPERATION SUB-OPERATION EXTRA   with the domain XML on stdin
// and waits for it. At "start begin" the guest's taps exist but QEMU has not been started: the
// hook asks sovguardd to attach everything for the guest and only returns once it has, so the
// guest's first packet already meets the filter. A non-zero exit makes libvirt refuse the start.
//
// Transport: a Unix stream socket (default /run/sovguard/libvirt-hook.sock, mode 0600, the daemon
// accepts peers with uid 0 only). One request, one response per connection, each a frame:
//   4-byte big-endian length N (1 <= N <= 16 MiB), then N bytes of UTF-8 JSON.
// Request:  {"v":1, "op":"start", "sub":"begin", "extra":"-", "name":"guest", "xml":"<domain ...>"}
// Response: {"v":1, "ok":true}  or  {"v":1, "ok":false, "error":"why"}
// Unknown "v" -> the daemon answers ok:false (and the hook fails closed for blocking operations).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sovguard::libvirt {

inline constexpr int kHookProtocolVersion = 1;
inline constexpr const char* kDefaultHookSocket = "/run/sovguard/libvirt-hook.sock";
inline constexpr uint32_t kMaxHookFrame = 16u << 20;

struct HookRequest {
  std::string op;  // prepare, start, started, stopped, release, migrate, restore, reconnect, attach
  std::string sub;    // begin, end, -
  std::string extra;  // libvirt's 4th argument
  std::string name;   // domain name
  std::string xml;    // domain XML from stdin
  bool operator==(const HookRequest&) const = default;
};

struct HookResponse {
  bool ok = false;
  std::string error;
  bool operator==(const HookResponse&) const = default;
};

// Whether libvirt must wait for the daemon (and the hook fail closed when it cannot): only
// "start begin", the last moment before QEMU runs with taps that already exist. libvirt passes
// it for fresh starts, incoming migrations and restores alike. Other operations are notices.
bool IsBlockingOperation(std::string_view op, std::string_view sub);

std::string EncodeRequest(const HookRequest& r);
std::string EncodeResponse(const HookResponse& r);
// Throw std::runtime_error naming the field that is missing or has the wrong type.
HookRequest DecodeRequest(std::string_view json);
HookResponse DecodeResponse(std::string_view json);

// Frame I/O on a connected stream socket with an overall deadline; throw std::runtime_error.
void WriteFrame(int fd, std::string_view payload, std::chrono::steady_clock::time_point deadline);
std::string ReadFrame(int fd, std::chrono::steady_clock::time_point deadline);

// Client side (the hook): connect, send, wait for the answer. Throws std::runtime_error when the
// daemon cannot be reached or does not answer in time.
HookResponse SendHookRequest(const std::string& socket_path, const HookRequest& request,
                             std::chrono::milliseconds timeout);

}  // namespace sovguard::libvirt
