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
  test::RunOrThrow({"ip", "tuntap", "add", "dev", "sgtw0", "mode", "tap"});
  test::RunOrThrow({"ip", "link", "set", "sgtw0", "up"});  // a change, not a new tap
  test::RunOrThrow({"ip", "link", "del", "sgtw0"});
  test::RunOrThrow({"ip", "link", "del", "sgtwv0"});
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return events.size() >= 2; }));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_TRUE(events[0].added);
  EXPECT_EQ(events[0].name, "sgtw0");
  EXPECT_GT(events[0].ifindex, 0u);
  EXPECT_FALSE(events[1].added);
  EXPECT_EQ(events[1].ifindex, events[0].ifindex);
}

}  // namespace
}  // namespace sovguard::libvirt
