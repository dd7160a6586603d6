// The test guest's network: libvirt creates the tap for <interface type='ethernet'> and brings it
// up but connects it to nothing. TestNetwork builds, with names derived from a short tag:
//
//   guest eth0 --- tap (libvirt, root ns) --+-- bridge sgb-TAG (root ns, no address)
//                                           +-- veth sgr-TAG  <==>  sgd-TAG in netns sgdest-TAG
//   sgd-TAG holds 192.0.2.1/24 (the guest's gateway), 198.51.100.1/32 (allowed zone) and
//   203.0.113.1/32 (forbidden zone); an nftables table in that netns counts, at prerouting
//   (before anything in the namespace can drop them), every packet addressed to each zone.
//
// The host's own interfaces, routes and rulesets are untouched: the bridge has no address, the
// counters live only in the test namespace. Everything is removed in the destructor.
#pragma once

#include <cstdint>
#include <string>

namespace sovguard::test {

struct ZoneCounts {
  uint64_t allowed = 0;    // packets that reached the destination namespace for 198.51.100.1
  uint64_t forbidden = 0;  // ... for 203.0.113.1
};

class TestNetwork {
 public:
  // tag: 1..6 characters [a-z0-9], unique per test.
  explicit TestNetwork(std::string tag);
  ~TestNetwork();
  TestNetwork(const TestNetwork&) = delete;
  TestNetwork& operator=(const TestNetwork&) = delete;

  [[nodiscard]] const std::string& Bridge() const { return bridge_; }
  [[nodiscard]] const std::string& Netns() const { return netns_; }

  // Enslaves an existing tap to the bridge (waits up to 10 s for it to appear).
  void AttachTap(const std::string& tap);
  [[nodiscard]] ZoneCounts Counts() const;

 private:
  void Cleanup() noexcept;
  std::string tag_, bridge_, veth_root_, veth_dest_, netns_;
};

// True when a network interface of that name exists in the root namespace.
bool LinkExists(const std::string& name);

}  // namespace sovguard::test
