// TapWatcher against the real kernel: tun/tap creation and deletion are reported, other links not.
#include "enforcer/libvirt/tap_watcher.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <vector>

#include "tests/harness/process.h"

namespace sovguard::libvirt {
namespace {

using namespace std::chrono_literals;

TEST(TapWatcher, ReportsTapCreationAndDeletionOnly) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<TapEvent> events;
  TapWatcher w([&](const TapEvent& e) {
    std::lock_guard lock(mu);
    events.push_back(e);
    cv.notify_all();
  });
  test::Run({"ip", "link", "del", "sgtw0"});
  test::Run({"ip", "link", "del", "sgtwv0"});
  test::RunOrThrow({"ip", "link", "add", "sgtwv0", "type", "veth", "peer", "name", "sgtwv1"});
  test::Run({"ip", "link", "del", "sgtw1"});
  test::RunOrThrow({"ip", "tuntap", "add", "dev", "sgtw0", "mode", "tap"});
  test::RunOrThrow({"ip", "link", "set", "sgtw0", "up"});  // a change, not a new tap
  test::RunOrThrow({"ip", "link", "del", "sgtw0"});
  test::RunOrThrow({"ip", "link", "del", "sgtwv0"});
  // A layer-3 TUN device is reported too, but not as Ethernet.
  test::RunOrThrow({"ip", "tuntap", "add", "dev", "sgtw1", "mode", "tun"});
  test::RunOrThrow({"ip", "link", "del", "sgtw1"});
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return events.size() >= 4; }));
  ASSERT_EQ(events.size(), 4u);
  EXPECT_TRUE(events[0].added);
  EXPECT_EQ(events[0].name, "sgtw0");
  EXPECT_GT(events[0].ifindex, 0u);
  EXPECT_TRUE(events[0].ethernet);
  EXPECT_FALSE(events[1].added);
  EXPECT_EQ(events[1].ifindex, events[0].ifindex);
  EXPECT_TRUE(events[2].added);
  EXPECT_EQ(events[2].name, "sgtw1");
  EXPECT_FALSE(events[2].ethernet);
}

// Only a TAP-mode tun device counts as a tap: a macvtap (what a direct interface uses), a veth or a
// layer-3 TUN carries frames no clsact-ingress filter on it sees from a guest.
TEST(TapWatcher, OnlyTapModeTunDevicesAreTaps) {
  for (const char* dev : {"sgtk0", "sgtk1", "sgtkp", "sgtkv0"})
    test::Run({"ip", "link", "del", dev});
  test::RunOrThrow({"ip", "tuntap", "add", "dev", "sgtk0", "mode", "tap"});
  test::RunOrThrow({"ip", "tuntap", "add", "dev", "sgtk1", "mode", "tun"});
  test::RunOrThrow({"ip", "link", "add", "sgtkp", "type", "veth", "peer", "name", "sgtkq"});
  test::RunOrThrow({"ip", "link", "add", "link", "sgtkp", "name", "sgtkv0", "type", "macvtap",
                    "mode", "bridge"});
  EXPECT_EQ(NotATapReason("sgtk0"), "");
  EXPECT_EQ(NotATapReason("sgtk1"), "device sgtk1 is a layer-3 TUN, not a TAP");
  EXPECT_EQ(NotATapReason("sgtkv0"), "device sgtkv0 is not a tun/tap device");
  EXPECT_EQ(NotATapReason("sgtkp"), "device sgtkp is not a tun/tap device");  // a veth
  EXPECT_EQ(NotATapReason("sgtk-absent"), "device sgtk-absent does not exist");
  EXPECT_EQ(NotATapReason("../../etc"), "'../../etc' is not a network device name");
  for (const char* dev : {"sgtk0", "sgtk1", "sgtkv0", "sgtkp"})
    test::Run({"ip", "link", "del", dev});
}

}  // namespace
}  // namespace sovguard::libvirt
