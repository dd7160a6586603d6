#include "enforcer/storage/block_uevents.h"

#include <linux/netlink.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <string_view>
#include <system_error>

namespace sovguard::storage {

BlockUevents::BlockUevents()
    : fd_(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   NETLINK_KOBJECT_UEVENT)) {
  if (!fd_) throw std::system_error(errno, std::generic_category(), "uevent socket");
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = 1;  // the kernel's own uevents (udev re-sends on group 2)
  if (::bind(fd_.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::system_error(errno, std::generic_category(), "uevent socket bind");
}

bool BlockUevents::Changed() {
  bool changed = false;
  std::array<char, 8192> buf;
  for (;;) {
    const ssize_t n = ::recv(fd_.Get(), buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {  // some were dropped: any of them may have been a block device
        changed = true;
        continue;
      }
      return changed;  // EAGAIN: drained
    }
    // "ACTION@DEVPATH\0KEY=VALUE\0...": the keys tell the subsystem.
    std::string_view msg(buf.data(), static_cast<std::size_t>(n));
    bool block = false, added = false;
    for (std::size_t at = 0; at < msg.size();) {
      const std::size_t end = msg.find('\0', at);
      const std::string_view field = msg.substr(at, end == std::string_view::npos ? msg.size() - at
                                                                                 : end - at);
      if (field == "SUBSYSTEM=block" || field == "SUBSYSTEM=scsi_generic" ||
          field == "SUBSYSTEM=bsg" || field == "SUBSYSTEM=nvme-generic")
        block = true;
      if (field == "ACTION=add" || field == "ACTION=change" || field == "ACTION=bind")
        added = true;
      if (end == std::string_view::npos) break;
      at = end + 1;
    }
    changed = changed || (block && added);
  }
}

}  // namespace sovguard::storage
