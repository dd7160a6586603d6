// Watcher logic against libvirt's in-process test driver (test:///default): no root, no QEMU.
// Domains defined/started/destroyed through a second connection to the same driver state produce
// real libvirt events, so event mapping, metadata changes and reconcile are checked quickly.
#include <gtest/gtest.h>

#include <libvirt/virterror.h>

#include <thread>

#include "enforcer/libvirt/connection.h"
#include "enforcer/libvirt/watcher.h"
#include "tests/libvirt/recorder.h"

namespace sovguard::libvirt {
namespace {

using namespace std::chrono_literals;
using namespace testing;  // the Recorder's
using Type = Recorded::Type;

constexpr const char* kUri = "test:///default";

std::string DomainXmlFor(const std::string& name) {
  return "<domain type='test'><name>" + name +
         "</name><memory>65536</memory><vcpu>1</vcpu>"
         "<os><type>hvm</type></os><devices><interface type='ethernet'><target dev='" +
         name + "t0'/><mac address='52:54:00:00:00:aa'/></interface></devices></domain>";
}

// A lifecycle re-check may already see a change and report it (reason kReconcile) before the
// explicit event does: wait for the explicit one.
std::function<bool(const Recorded&)> ChangedFor(const std::string& name, ChangeReason reason) {
  return [=](const Recorded& r) {
    return r.type == Type::kChanged && r.guest.domain.name == name && r.reason == reason;
  };
}

class WatcherUnit : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = std::make_unique<EventLoop::Handle>(EventLoop::Acquire());
    admin_.reset(virConnectOpen(kUri));
    ASSERT_TRUE(admin_);
    WatcherOptions opts;
    opts.connection.uri = kUri;
    opts.qemu_run_dir = "/nonexistent";
    watcher_ = std::make_unique<Watcher>(opts, recorder_.Callbacks());
    watcher_->Start();
    ASSERT_TRUE(watcher_->WaitConnected(10s));
  }
  void TearDown() override {
    watcher_.reset();
    for (auto& d : defined_) {
      virDomainDestroy(d.get());
      virDomainUndefine(d.get());
    }
    defined_.clear();
    admin_.reset();
    loop_.reset();
  }
  virDomainPtr Define(const std::string& name) {
    DomainPtr d(virDomainDefineXML(admin_.get(), DomainXmlFor(name).c_str()));
    EXPECT_TRUE(d) << virGetLastErrorMessage();
    defined_.push_back(std::move(d));
    return defined_.back().get();
  }

  std::unique_ptr<EventLoop::Handle> loop_;
  ConnectPtr admin_;
  std::vector<DomainPtr> defined_;
  Recorder recorder_;
  std::unique_ptr<Watcher> watcher_;
};

TEST_F(WatcherUnit, StartChangeStopAreDeliveredInOrder) {
  virDomainPtr d = Define("wu-a");
  size_t mark = recorder_.Size();
  ASSERT_EQ(virDomainCreate(d), 0);
  auto up = recorder_.WaitFor(mark, Is(Type::kUp, "wu-a"), 5s);
  ASSERT_TRUE(up);
  EXPECT_EQ(up->guest.domain.Taps(), std::vector<std::string>{"wu-at0"});
  EXPECT_EQ(up->guest.domain.labels.state, LabelState::kAbsent);
  EXPECT_EQ(up->guest.qemu_pid, 0);  // not QEMU: never guessed

  mark = recorder_.Size();
  ASSERT_EQ(
      virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, "<guest><dataset id='d1'/></guest>",
                           "sovguard", "https://sovguard.eu/ns/guest/1", VIR_DOMAIN_AFFECT_LIVE),
      0)
      << virGetLastErrorMessage();
  auto changed = recorder_.WaitFor(mark, ChangedFor("wu-a", ChangeReason::kMetadata), 5s);
  ASSERT_TRUE(changed);
  EXPECT_EQ(changed->reason, ChangeReason::kMetadata);
  EXPECT_EQ(changed->guest.domain.labels.datasets, std::vector<std::string>{"d1"});

  mark = recorder_.Size();
  ASSERT_EQ(virDomainSuspend(d), 0);
  auto suspended = recorder_.WaitFor(mark, ChangedFor("wu-a", ChangeReason::kSuspended), 5s);
  ASSERT_TRUE(suspended);
  EXPECT_EQ(suspended->reason, ChangeReason::kSuspended);
  EXPECT_TRUE(suspended->guest.paused);
  ASSERT_EQ(virDomainResume(d), 0);

  mark = recorder_.Size();
  ASSERT_EQ(virDomainDestroy(d), 0);
  auto down = recorder_.WaitFor(mark, Is(Type::kDown, "wu-a"), 5s);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->guest.domain.labels.datasets, std::vector<std::string>{"d1"});  // last known
  EXPECT_EQ(recorder_.Count(Type::kUp, "wu-a"), 1u);
}

TEST_F(WatcherUnit, ReconcileReportsGuestsRunningBeforeStartAndIsQuietAfter) {
  // The test driver's built-in domain "test" runs from the start: the first reconcile saw it.
  ASSERT_TRUE(recorder_.WaitFor(0, Is(Type::kUp, "test"), 5s));
  const size_t mark = recorder_.Size();
  const uint64_t n = watcher_->Reconciles();
  watcher_->RequestReconcile();
  // reconciles() counts up after the reconcile delivered everything it had to.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (watcher_->Reconciles() == n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GT(watcher_->Reconciles(), n);
  EXPECT_EQ(recorder_.Size(), mark);
}

TEST_F(WatcherUnit, StopIsCleanAndRestartable) {
  watcher_->Stop();
  EXPECT_FALSE(watcher_->Connected());
  watcher_->Start();
  EXPECT_TRUE(watcher_->WaitConnected(10s));
  EXPECT_GE(watcher_->Connections(), 2u);
}

}  // namespace
}  // namespace sovguard::libvirt
