#include "tests/harness/network.h"

#include <net/if.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <stdexcept>

#include "tests/harness/guest.h"
#include "tests/harness/process.h"

namespace sovguard::test {

bool LinkExists(const std::string& name) {
  return ::if_nametoindex(name.c_str()) != 0;
}

TestNetwork::TestNetwork(std::string tag)
    : tag_(std::move(tag)),
      bridge_("sgb-" + tag_),
      veth_root_("sgr-" + tag_),
      veth_dest_("sgd-" + tag_),
      netns_("sgdest-" + tag_) {
  if (!std::regex_match(tag_, std::regex("[a-z0-9]{1,6}"))) {
    throw std::invalid_argument("TestNetwork tag must be 1..6 of [a-z0-9]: " + tag_);
  }
  Cleanup();  // leftovers of a crashed earlier run with the same tag
  try {
    RunOrThrow({"ip", "netns", "add", netns_});
    RunOrThrow({"ip", "link", "add", bridge_, "type", "bridge"});
    RunOrThrow({"ip", "link", "add", veth_root_, "type", "veth", "peer", "name", veth_dest_,
                "netns", netns_});
    RunOrThrow({"ip", "link", "set", veth_root_, "master", bridge_, "up"});
    RunOrThrow({"ip", "link", "set", bridge_, "up"});
    auto in_ns = [&](std::vector<std::string> cmd) {
      cmd.insert(cmd.begin(), {"ip", "netns", "exec", netns_});
      RunOrThrow(cmd);
    };
    in_ns({"ip", "link", "set", "lo", "up"});
    in_ns({"ip", "addr", "add", std::string(kGatewayAddress) + "/24", "dev", veth_dest_});
    in_ns({"ip", "addr", "add", std::string(kAllowedDestination) + "/32", "dev", veth_dest_});
    in_ns({"ip", "addr", "add", std::string(kForbiddenDestination) + "/32", "dev", veth_dest_});
    in_ns({"ip", "link", "set", veth_dest_, "up"});
    const std::string ruleset = std::string("table inet sgtest {\n") +
                                "  counter allowed {}\n  counter forbidden {}\n"
                                "  chain pre { type filter hook prerouting priority -400;\n"
                                "    ip daddr " +
                                kAllowedDestination +
                                " counter name allowed\n"
                                "    ip daddr " +
                                kForbiddenDestination +
                                " counter name forbidden\n"
                                "  }\n}\n";
    RunOrThrow({"ip", "netns", "exec", netns_, "nft", "-f", "-"}, ruleset);
  } catch (...) {
    Cleanup();
    throw;
  }
}

TestNetwork::~TestNetwork() {
  Cleanup();
}

void TestNetwork::Cleanup() noexcept {
  try {
    // Deleting the netns deletes sgd-*, which deletes its peer sgr-*.
    if (LinkExists(bridge_)) {
      Run({"ip", "link", "del", bridge_});
    }
    if (LinkExists(veth_root_)) {
      Run({"ip", "link", "del", veth_root_});
    }
    Run({"ip", "netns", "del", netns_});
  } catch (...) {
  }
}

void TestNetwork::AttachTap(const std::string& tap) {
  if (!PollUntil(std::chrono::seconds(10), [&] { return LinkExists(tap); })) {
    throw std::runtime_error("tap " + tap + " did not appear within 10 s");
  }
  RunOrThrow({"ip", "link", "set", tap, "master", bridge_});
}

ZoneCounts TestNetwork::Counts() const {
  const std::string out = RunOrThrow(
      {"ip", "netns", "exec", netns_, "nft", "-j", "list", "counters", "table", "inet", "sgtest"});
  ZoneCounts counts;
  bool seen_allowed = false, seen_forbidden = false;
  const nlohmann::json doc = nlohmann::json::parse(out);
  for (const auto& item : doc.at("nftables")) {
    if (!item.contains("counter")) {
      continue;
    }
    const auto& c = item.at("counter");
    const auto packets = c.at("packets").get<uint64_t>();
    if (c.at("name") == "allowed") {
      counts.allowed = packets, seen_allowed = true;
    }
    if (c.at("name") == "forbidden") {
      counts.forbidden = packets, seen_forbidden = true;
    }
  }
  if (!seen_allowed || !seen_forbidden) {
    throw std::runtime_error("nft counters allowed/forbidden missing in " + netns_ + ": " + out);
  }
  return counts;
}

}  // namespace sovguard::test
