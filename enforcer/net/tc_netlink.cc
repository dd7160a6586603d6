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

// NLMSG_*/RTA_* are C macros with C casts.
#pragma GCC diagnostic ignored "-Wold-style-cast"

namespace sovguard::net::detail {
namespace {

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

// Calls fn(attr) for every attribute of a tc message.
template <class F>
void ForEachAttr(const nlmsghdr* nh, F&& fn) {
  const auto* tc = static_cast<const tcmsg*>(NLMSG_DATA(nh));
  int alen = static_cast<int>(nh->nlmsg_len - NLMSG_LENGTH(sizeof(tcmsg)));
  for (auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(tc) +
                                                 NLMSG_ALIGN(sizeof(tcmsg)));
       RTA_OK(a, alen); a = RTA_NEXT(a, alen))
    fn(a);
}

// A string attribute (NUL-terminated or not).
std::string AttrString(const rtattr* a) {
  const auto* p = static_cast<const char*>(RTA_DATA(a));
  return std::string(p, strnlen(p, RTA_PAYLOAD(a)));
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
               ForEachAttr(nh, [&](const rtattr* a) {
                 if (a->rta_type == TCA_KIND) {
                   f.kind = AttrString(a);
                 } else if (a->rta_type == TCA_OPTIONS) {
                   int olen = static_cast<int>(RTA_PAYLOAD(a));
                   for (auto* o = static_cast<const rtattr*>(RTA_DATA(a)); RTA_OK(o, olen);
                        o = RTA_NEXT(o, olen)) {
                     if (o->rta_type == TCA_BPF_ID && RTA_PAYLOAD(o) >= 4)
                       std::memcpy(&f.program.id, RTA_DATA(o), 4);
                     else if (o->rta_type == TCA_BPF_TAG)
                       f.program.tag = base::ToHex(RTA_DATA(o), RTA_PAYLOAD(o));
                     else if (o->rta_type == TCA_BPF_NAME)
                       f.program.name = AttrString(o);
                     else if (o->rta_type == TCA_BPF_FLAGS && RTA_PAYLOAD(o) >= 4) {
                       std::uint32_t flags = 0;
                       std::memcpy(&flags, RTA_DATA(o), 4);
                       f.direct_action = flags & TCA_BPF_FLAG_ACT_DIRECT;
                     }
                   }
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
    ForEachAttr(nh, [&](const rtattr* a) {
      if (a->rta_type == TCA_KIND && AttrString(a) == "clsact") found = true;
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
