// Test support: network namespaces joined by veth pairs, sockets opened inside them.
#pragma once

#include <string>
#include <vector>

namespace sovguard::net::testing {

// Runs a shell command, throwing std::runtime_error with its text and status when it fails.
void Sh(const std::string& command);

// A named network namespace (ip netns add/del); deleted on destruction.
class Netns {
 public:
  explicit Netns(std::string name);
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  const std::string& name() const { return name_; }
  std::string path() const { return "/run/netns/" + name_; }
  // Runs `ip -n NAME <args>`.
  void Ip(const std::string& args) const;
  unsigned IfIndex(const std::string& ifname) const;
  // socket(2) inside the namespace; the fd keeps working from any thread.
  int Socket(int domain, int type, int protocol) const;
  void Sysctl(const std::string& key, const std::string& value) const;

 private:
  std::string name_;
};

}  // namespace sovguard::net::testing
