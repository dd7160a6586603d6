#include "tests/datapath/netns.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace sovguard::net::testing {
namespace {

template <class F>
auto InNs(const std::string& path, F&& f) {
  decltype(f()) result{};
  std::exception_ptr failure;
  std::thread t([&] {
    try {
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
      const int rc = ::setns(fd, CLONE_NEWNET);
      const int err = errno;
      ::close(fd);
      if (rc != 0) throw std::runtime_error("setns " + path + ": " + std::strerror(err));
      result = f();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  t.join();
  if (failure) std::rethrow_exception(failure);
  return result;
}

}  // namespace

void Sh(const std::string& command) {
  const int rc = std::system((command + " >/dev/null 2>&1").c_str());
  if (rc != 0) {
    // Run again with output shown, for the test log.
    std::system(command.c_str());
    throw std::runtime_error("command failed (status " + std::to_string(rc) + "): " + command);
  }
}

Netns::Netns(std::string name) : name_(std::move(name)) {
  std::system(("ip netns del " + name_ + " >/dev/null 2>&1").c_str());  // a crashed earlier run
  Sh("ip netns add " + name_);
  Ip("link set lo up");
}

Netns::~Netns() {
  std::system(("ip netns del " + name_ + " >/dev/null 2>&1").c_str());
}

void Netns::Ip(const std::string& args) const {
  Sh("ip -n " + name_ + " " + args);
}

unsigned Netns::IfIndex(const std::string& ifname) const {
  const unsigned idx = InNs(path(), [&] { return ::if_nametoindex(ifname.c_str()); });
  if (idx == 0) throw std::runtime_error("no interface " + ifname + " in netns " + name_);
  return idx;
}

int Netns::Socket(int domain, int type, int protocol) const {
  const int fd = InNs(path(), [&] {
    const int s = ::socket(domain, type | SOCK_CLOEXEC, protocol);
    return s < 0 ? -errno : s;
  });
  if (fd < 0) throw std::runtime_error("socket in netns " + name_ + ": " + std::strerror(-fd));
  return fd;
}

void Netns::Sysctl(const std::string& key, const std::string& value) const {
  Sh("ip netns exec " + name_ + " sysctl -qw " + key + "=" + value);
}

}  // namespace sovguard::net::testing
