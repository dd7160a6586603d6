#include "enforcer/libvirt/tap_watcher.h"

#include <fcntl.h>
#include <linux/if_arp.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "base/poll.h"
#include "enforcer/system/rtnetlink.h"

namespace sovguard::libvirt {
namespace {

using enforcer::rtnl::AttrString;
using enforcer::rtnl::ForEachAttr;

}  // namespace

std::string NotATapReason(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == ".." ||
      name.find('/') != std::string::npos) {
    return "'" + name + "' is not a network device name";
  }
  const std::filesystem::path dev = std::filesystem::path("/sys/class/net") / name;
  std::error_code ec;
  if (!std::filesystem::exists(dev, ec)) {
    return "device " + name + " does not exist";
  }
  std::ifstream in(dev / "tun_flags");
  std::string flags;
  if (!(in >> flags)) {
    return "device " + name + " is not a tun/tap device";
  }
  unsigned long value = 0;
  try {
    value = std::stoul(flags, nullptr, 16);
  } catch (const std::exception&) {
    return "device " + name + ": unreadable tun_flags '" + flags + "'";
  }
  if ((value & IFF_TAP) == 0) {
    return "device " + name + " is a layer-3 TUN, not a TAP";
  }
  return {};
}

struct TapWatcher::Impl {
  Callback cb;
  int fd = -1;
  int wake[2] = {-1, -1};
  std::set<unsigned> known;  // taps reported as added (RTM_NEWLINK repeats on every link change)
  std::thread thread;

  void Run();
  void Handle(const nlmsghdr& h, const char* payload, size_t len);
};

void TapWatcher::Impl::Handle(const nlmsghdr& h, const char* payload, size_t len) {
  if ((h.nlmsg_type != RTM_NEWLINK && h.nlmsg_type != RTM_DELLINK) || len < sizeof(ifinfomsg)) {
    return;
  }
  ifinfomsg ifi{};
  std::memcpy(&ifi, payload, sizeof(ifi));
  std::string name, kind;
  ForEachAttr(payload + NLMSG_ALIGN(sizeof(ifi)), len - NLMSG_ALIGN(sizeof(ifi)),
              [&](unsigned short type, const char* p, size_t n) {
                if (type == IFLA_IFNAME) {
                  name = AttrString(p, n);
                }
                if (type == IFLA_LINKINFO) {
                  ForEachAttr(p, n, [&](unsigned short t2, const char* p2, size_t n2) {
                    if (t2 == IFLA_INFO_KIND) {
                      kind = AttrString(p2, n2);
                    }
                  });
                }
              });
  const auto ifindex = static_cast<unsigned>(ifi.ifi_index);
  if (h.nlmsg_type == RTM_DELLINK) {
    if (known.erase(ifindex)) {
      cb({false, name, ifindex, ifi.ifi_type == ARPHRD_ETHER});
    }
    return;
  }
  if (kind != "tun" || known.count(ifindex)) {
    return;
  }
  known.insert(ifindex);
  cb({true, name, ifindex, ifi.ifi_type == ARPHRD_ETHER});
}

void TapWatcher::Impl::Run() {
  alignas(nlmsghdr) std::array<char, size_t{64} * 1024> buf{};
  while (true) {
    if (base::WaitReadableOrStop(fd, wake[0]) != base::Wait::kReadable) return;
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      // ENOBUFS: the kernel dropped notifications. Not silently: the daemon's reconcile (which
      // lists guests' taps through libvirt) still covers them, so carry on.
      if (errno == EINTR || errno == EAGAIN || errno == ENOBUFS) {
        continue;
      }
      return;
    }
    auto left = static_cast<size_t>(n);
    const char* p = buf.data();
    while (left >= sizeof(nlmsghdr)) {
      nlmsghdr h{};
      std::memcpy(&h, p, sizeof(h));
      if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > left) {
        break;
      }
      Handle(h, p + NLMSG_HDRLEN, h.nlmsg_len - NLMSG_HDRLEN);
      const size_t step = NLMSG_ALIGN(h.nlmsg_len);
      if (step >= left) {
        break;
      }
      p += step;
      left -= step;
    }
  }
}

TapWatcher::TapWatcher(Callback on_tap) : impl_(std::make_unique<Impl>()) {
  impl_->cb = std::move(on_tap);
  impl_->fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (impl_->fd < 0) {
    throw std::runtime_error(std::string("netlink socket: ") +
                             std::generic_category().message(errno));
  }
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = RTMGRP_LINK;
  if (::bind(impl_->fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::pipe2(impl_->wake, O_CLOEXEC) != 0) {
    const std::string err = std::generic_category().message(errno);
    ::close(impl_->fd);
    throw std::runtime_error("netlink RTMGRP_LINK: " + err);
  }
  impl_->thread = std::thread([impl = impl_.get()] { impl->Run(); });
}

TapWatcher::~TapWatcher() {
  char c = 1;
  while (::write(impl_->wake[1], &c, 1) < 0 && errno == EINTR) {
  }
  if (impl_->thread.joinable()) {
    impl_->thread.join();
  }
  ::close(impl_->fd);
  ::close(impl_->wake[0]);
  ::close(impl_->wake[1]);
}

}  // namespace sovguard::libvirt
