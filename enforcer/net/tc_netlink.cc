#include "enforcer/net/tc_netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <thread>

#include "base/hex.h"
#include "base/unique_fd.h"
#include "enforcer/system/rtnetlink.h"

// NLMSG_*/RTA_* are C macros with C casts.
#pragma GCC diagnostic ignored "-Wold-style-cast"

namespace sovguard::net::detail {
namespace {

namespace rtnl = enforcer::rtnl;

constexpr std::uint32_t kIngressParent = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS);

class Socket {
 public:
  Socket() : fd_(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)) {
    if (fd_ < 0) throw DatapathError("socket(AF_NETLINK, NETLINK_ROUTE)", errno);
    const int one = 1;
    // Extended acks: the kernel says why a request failed. Best effort.
    ::setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  }
  ~Socket() { ::close(fd_); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

struct Request {
  nlmsghdr nh;
  tcmsg tc;
  char attrs[64];
};

void AddAttr(Request& req, std::uint16_t type, const void* data, std::size_t len) {
  auto* rta =
      reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&req) + NLMSG_ALIGN(req.nh.nlmsg_len));
  rta->rta_type = type;
  rta->rta_len = static_cast<std::uint16_t>(RTA_LENGTH(len));
  std::memcpy(RTA_DATA(rta), data, len);
  req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

// A tc request of `type` about `ifindex` (under `parent`; 0 for a qdisc dump).
Request TcRequest(std::uint16_t type, std::uint16_t flags, std::uint32_t ifindex,
                  std::uint32_t parent) {
  Request req{};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(tcmsg));
  req.nh.nlmsg_type = type;
  req.nh.nlmsg_flags = flags;
  req.tc.tcm_family = AF_UNSPEC;
  req.tc.tcm_ifindex = static_cast<int>(ifindex);
  req.tc.tcm_parent = parent;
  return req;
}

// Calls f(type, payload, size) for every attribute of a tc message.
template <class F>
void ForEachTcAttr(const nlmsghdr* nh, F&& f) {
  if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(tcmsg))) return;
  rtnl::ForEachAttr(static_cast<const char*>(NLMSG_DATA(nh)) + NLMSG_ALIGN(sizeof(tcmsg)),
                    nh->nlmsg_len - NLMSG_LENGTH(sizeof(tcmsg)), f);
}

// Sends req and calls on_msg for every answer until NLMSG_DONE (dump) or the ack (request).
template <class F>
void Transact(Request& req, const std::string& what, F&& on_msg) {
  Socket s;
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  req.nh.nlmsg_seq = 1;
  if (::sendto(s.fd(), &req, req.nh.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0)
    throw DatapathError(what + ": send", errno);
  alignas(nlmsghdr) char buf[32768];
  for (;;) {
    const ssize_t n = ::recv(s.fd(), buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw DatapathError(what + ": recv", errno);
    }
    int len = static_cast<int>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_type == NLMSG_DONE) return;
      if (nh->nlmsg_type == NLMSG_ERROR) {
        const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(nh));
        if (e->error == 0) return;  // ack
        throw DatapathError(what, -e->error);
      }
      on_msg(nh);
    }
  }
}

}  // namespace

std::vector<TcFilterInfo> DumpIngressFilters(std::uint32_t ifindex) {
  Request req = TcRequest(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, ifindex, kIngressParent);
  std::vector<TcFilterInfo> out;
  try {
    Transact(req, "dump tc ingress filters of ifindex " + std::to_string(ifindex),
             [&](const nlmsghdr* nh) {
               if (nh->nlmsg_type != RTM_NEWTFILTER) return;
               const auto* tc = static_cast<const tcmsg*>(NLMSG_DATA(nh));
               // The dump announces each priority once with handle 0 before its filters.
               if (tc->tcm_handle == 0) return;
               TcFilterInfo f;
               f.priority = TC_H_MAJ(tc->tcm_info) >> 16;
               f.protocol = ntohs(static_cast<std::uint16_t>(TC_H_MIN(tc->tcm_info)));
               f.handle = tc->tcm_handle;
               ForEachTcAttr(nh, [&](unsigned short type, const char* p, std::size_t n) {
                 if (type == TCA_KIND) {
                   f.kind = rtnl::AttrString(p, n);
                 } else if (type == TCA_OPTIONS) {
                   rtnl::ForEachAttr(p, n, [&](unsigned short t, const char* q, std::size_t m) {
                     if (t == TCA_BPF_ID && m >= 4)
                       std::memcpy(&f.program.id, q, 4);
                     else if (t == TCA_BPF_TAG)
                       f.program.tag = base::ToHex(q, m);
                     else if (t == TCA_BPF_NAME)
                       f.program.name = rtnl::AttrString(q, m);
                     else if (t == TCA_BPF_FLAGS && m >= 4) {
                       std::uint32_t flags = 0;
                       std::memcpy(&flags, q, 4);
                       f.direct_action = flags & TCA_BPF_FLAG_ACT_DIRECT;
                     }
                   });
                 }
               });
               out.push_back(std::move(f));
             });
  } catch (const DatapathError& e) {
    // No clsact qdisc: nothing is attached there (EINVAL/ENOENT depending on the kernel).
    if (e.error() == EINVAL || e.error() == ENOENT) return {};
    throw;
  }
  return out;
}

bool HasClsact(std::uint32_t ifindex) {
  Request req = TcRequest(RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP, ifindex, 0);
  bool found = false;
  Transact(req, "dump qdiscs of ifindex " + std::to_string(ifindex), [&](const nlmsghdr* nh) {
    if (nh->nlmsg_type != RTM_NEWQDISC) return;
    const auto* tc = static_cast<const tcmsg*>(NLMSG_DATA(nh));
    if (tc->tcm_ifindex != static_cast<int>(ifindex) || tc->tcm_parent != TC_H_CLSACT) return;
    ForEachTcAttr(nh, [&](unsigned short type, const char* p, std::size_t n) {
      if (type == TCA_KIND && rtnl::AttrString(p, n) == "clsact") found = true;
    });
  });
  return found;
}

void DeleteIngressFilter(std::uint32_t ifindex, const TcFilterInfo& f) {
  Request req = TcRequest(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, ifindex, kIngressParent);
  req.tc.tcm_handle = f.handle;
  req.tc.tcm_info = TC_H_MAKE(f.priority << 16, htons(f.protocol));
  if (!f.kind.empty()) AddAttr(req, TCA_KIND, f.kind.c_str(), f.kind.size() + 1);
  Transact(req,
           "delete tc filter " + f.kind + " priority " + std::to_string(f.priority) + " handle " +
               std::to_string(f.handle) + " from ifindex " + std::to_string(ifindex),
           [](const nlmsghdr*) {});
}

void InNetns(const std::string& path, const std::function<void()>& f) {
  if (path.empty()) {
    f();
    return;
  }
  std::exception_ptr failure;
  std::thread worker([&] {
    try {
      base::UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns) throw DatapathError("open network namespace " + path, errno);
      if (::setns(ns.Get(), CLONE_NEWNET) != 0) throw DatapathError("setns " + path, errno);
      f();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  worker.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace sovguard::net::detail
