// Real libvirtd + QEMU TCG guest (fixture `libvirtd`): the Watcher sees every guest with its taps,
// cgroup and labels; follows label changes within 1 s, NIC hot-plug/unplug, libvirtd restarts and
// many stop/start cycles; the test guest's traffic really reaches the destination namespace.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>

#include "enforcer/libvirt/tap_watcher.h"
#include "enforcer/libvirt/watcher.h"
#include "enforcer/system/mounts.h"
#include "tests/harness/guest.h"
#include "tests/harness/kernel_objects.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/network.h"
#include "tests/harness/process.h"
#include "tests/libvirt/recorder.h"

namespace sovguard::libvirt {
namespace {

using namespace std::chrono_literals;
using namespace testing;  // the Recorder's
using Type = Recorded::Type;

constexpr auto kBoot = 90s;     // TCG boot to "SOVGUARD: ready" takes ~5 s; CI machines vary
constexpr auto kEvent = 15s;    // a libvirt event after the action that causes it
constexpr auto kLabelSla = 1s;  // the issue: policy follows a label change within 1 s

bool FileContainsLine(const std::string& path, const std::string& line) {
  std::ifstream f(path);
  std::string l;
  while (std::getline(f, l)) {
    if (l == line) {
      return true;
    }
  }
  return false;
}

class WatcherIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::LibvirtDaemons::Answering()) << "libvirtd fixture not running";
    WatcherOptions opts;
    opts.connection.uri = test::LibvirtDaemons::kUri;
    opts.qemu_run_dir = test::LibvirtDaemons::kQemuRunDir;
    watcher_ = std::make_unique<Watcher>(opts, recorder_.Callbacks());
    watcher_->Start();
    ASSERT_TRUE(watcher_->WaitConnected(20s));
  }
  void TearDown() override {
    watcher_.reset();
    if (HasFailure()) {
      for (const auto& e : recorder_.Events()) {
        std::cerr << "event " << static_cast<int>(e.type) << " " << e.guest.domain.name << " "
                  << ToString(e.reason) << " taps=" << e.guest.domain.Taps().size()
                  << " pid=" << e.guest.qemu_pid << "\n";
      }
    }
    for (const auto& e : recorder_.Errors()) {
      std::cerr << "watcher error: " << e << "\n";
    }
  }

  // The watcher's current view of one guest (other guests may run: a crashed earlier test's).
  std::vector<GuestInfo> GuestsNamed(const std::string& name) const {
    std::vector<GuestInfo> out;
    for (auto& g : watcher_->Guests()) {
      if (g.domain.name == name) {
        out.push_back(g);
      }
    }
    return out;
  }

  // Waits for GuestUp of `name` after event index `from`.
  GuestInfo WaitUp(size_t from, const std::string& name) {
    auto up = recorder_.WaitFor(from, Is(Type::kUp, name), kEvent);
    if (!up) {
      ADD_FAILURE() << "no GuestUp for " << name;
    }
    return up ? up->guest : GuestInfo{};
  }

  Recorder recorder_;
  std::unique_ptr<Watcher> watcher_;
};

TEST_F(WatcherIntegration, GuestUpCarriesTapsCgroupLabelsAndTrafficFlows) {
  test::TestNetwork net("lc");
  const auto spec = test::MakeGuestSpec(
      "sgt-lc", "sgtlc0",
      test::GuestLabel("<dataset id=\"health-records\"/><disk target=\"vdb\" dataset=\"x-ray\"/>"));
  test::TestGuest guest(spec);

  const size_t mark = recorder_.Size();
  guest.Start();
  net.AttachTap(spec.tap);
  GuestInfo g = WaitUp(mark, spec.name);

  // Identity, tap, MAC, labels: straight from the live domain.
  EXPECT_EQ(g.domain.Taps(), std::vector<std::string>{spec.tap});
  ASSERT_EQ(g.domain.interfaces.size(), 1u);
  EXPECT_EQ(g.domain.interfaces[0].mac, spec.mac);
  EXPECT_EQ(g.domain.interfaces[0].type, "ethernet");
  ASSERT_EQ(g.domain.labels.state, LabelState::kValid) << g.domain.labels.error;
  EXPECT_EQ(g.domain.labels.datasets, std::vector<std::string>{"health-records"});
  EXPECT_EQ(g.domain.labels.AllDatasets(), (std::vector<std::string>{"health-records", "x-ray"}));
  EXPECT_EQ(g.domain.uuid.size(), 36u);

  // QEMU pid and cgroup v2: the pid is in the process cgroup, the scope is its libvirt parent.
  ASSERT_GT(g.qemu_pid, 1);
  ASSERT_TRUE(g.cgroup.has_value());
  // libvirt makes the scope a "domain threaded" cgroup: the process is listed there, its main
  // thread in the threaded child (emulator), vCPU threads in vcpuN.
  EXPECT_TRUE(FileContainsLine(g.cgroup->scope_path + "/cgroup.procs", std::to_string(g.qemu_pid)))
      << g.cgroup->scope_path;
  EXPECT_TRUE(
      FileContainsLine(g.cgroup->process_path + "/cgroup.threads", std::to_string(g.qemu_pid)))
      << g.cgroup->process_path;
  const std::string cgroup2 = enforcer::FindCgroup2Mount().value_or("").string();
  EXPECT_EQ(
      g.cgroup->scope_level,
      static_cast<int>(std::count(g.cgroup->scope_path.begin(), g.cgroup->scope_path.end(), '/') -
                       std::count(cgroup2.begin(), cgroup2.end(), '/')));
  EXPECT_NE(g.cgroup->scope_path.find(spec.name), std::string::npos) << g.cgroup->scope_path;
  EXPECT_EQ(g.cgroup->process_path.rfind(g.cgroup->scope_path, 0), 0u);
  struct stat st {};
  ASSERT_EQ(::stat(g.cgroup->scope_path.c_str(), &st), 0);
  EXPECT_EQ(g.cgroup->scope_id, st.st_ino);
  EXPECT_EQ(g.cgroup->scope_path.rfind(cgroup2, 0), 0u);

  // The guest really sends to both zones from boot, and both arrive (no datapath in this test).
  ASSERT_TRUE(guest.WaitReady(kBoot)) << test::ReadFile(guest.ConsoleLog());
  test::ZoneCounts counts;
  ASSERT_TRUE(test::PollUntil(
      30s,
      [&] {
        counts = net.Counts();
        return counts.allowed >= 5 && counts.forbidden >= 5;
      },
      100ms))
      << "allowed=" << counts.allowed << " forbidden=" << counts.forbidden;
  // ZERO-FORBIDDEN ASSERTION (needs the datapath): with sovguardd attached from the hook, this
  // becomes EXPECT_EQ(counts.forbidden, 0u) checked continuously from Start() to Destroy().

  // Label changes reach the watcher within 1 s.
  auto relabel = [&](const std::string& body, const std::function<bool(const GuestLabels&)>& want) {
    const size_t from = recorder_.Size();
    const auto t0 = std::chrono::steady_clock::now();
    guest.Virsh({"metadata", spec.name, "--uri", std::string(kLabelNamespace), "--key", "sovguard",
                 "--live", "--config", "--set", body});
    auto ev = recorder_.WaitFor(
        from,
        [&](const Recorded& r) {
          return r.type == Type::kChanged && r.guest.domain.name == spec.name &&
                 r.reason == ChangeReason::kMetadata && want(r.guest.domain.labels);
        },
        kEvent);
    if (!ev) {
      ADD_FAILURE() << "no metadata change event for " << body;
      return;
    }
    const auto latency = std::chrono::duration_cast<std::chrono::milliseconds>(ev->at - t0);
    EXPECT_LT(latency, kLabelSla) << body;
    RecordProperty("label_change_ms", static_cast<int>(latency.count()));
    std::cout << "label change -> GuestChanged: " << latency.count() << " ms\n";
  };
  relabel("<guest><dataset id=\"tax-records\"/></guest>", [](const GuestLabels& l) {
    return l.state == LabelState::kValid && l.datasets == std::vector<std::string>{"tax-records"};
  });
  // An unknown element fails closed, visibly.
  relabel("<guest><colour id=\"red\"/></guest>", [](const GuestLabels& l) {
    return l.state == LabelState::kInvalid && l.error.find("<colour>") != std::string::npos;
  });
  relabel("<guest/>", [](const GuestLabels& l) {
    return l.state == LabelState::kValid && l.AllDatasets().empty();
  });

  // A guest reset (QEMU RESET) is a reboot event: same QEMU, same tap, re-evaluated.
  {
    const size_t from = recorder_.Size();
    guest.Virsh({"reset", spec.name});
    auto ev = recorder_.WaitFor(from, IsChange(ChangeReason::kReboot, spec.name), kEvent);
    ASSERT_TRUE(ev) << "no reboot event";
    EXPECT_EQ(ev->guest.domain.Taps(), std::vector<std::string>{spec.tap});
    EXPECT_EQ(ev->guest.qemu_pid, g.qemu_pid);
  }

  // Stop: GuestDown, tap and cgroup gone.
  const size_t before_stop = recorder_.Size();
  guest.Destroy();
  auto down = recorder_.WaitFor(before_stop, Is(Type::kDown, spec.name), kEvent);
  ASSERT_TRUE(down);
  EXPECT_EQ(down->guest.domain.Taps(), std::vector<std::string>{spec.tap});
  EXPECT_TRUE(test::PollUntil(5s, [&] { return !test::LinkExists(spec.tap); }));
  EXPECT_TRUE(test::PollUntil(5s, [&] { return !std::filesystem::exists(g.cgroup->scope_path); }));
  EXPECT_TRUE(GuestsNamed(spec.name).empty());
}

TEST_F(WatcherIntegration, NicHotPlugAndUnplugAreFollowed) {
  test::TestNetwork net("hp");
  test::TestGuest guest(test::MakeGuestSpec("sgt-hp", "sgthp0"));
  const size_t mark = recorder_.Size();
  guest.Start();
  net.AttachTap(guest.Tap());
  WaitUp(mark, guest.Name());
  // ACPI hot-unplug needs the guest kernel up to acknowledge the eject.
  ASSERT_TRUE(guest.WaitReady(kBoot));

  const std::string nic_xml =
      "<interface type='ethernet'><target dev='sgthp1'/><mac address='52:54:00:5e:00:21'/>"
      "<model type='virtio'/><rom enabled='no'/></interface>";
  const std::string nic_file = "/run/sovguard-test/sgt-hp-nic.xml";
  test::WriteFile(nic_file, nic_xml);

  // The tap's creation (rtnetlink) is the earliest point for a hot-plugged NIC: prove it comes
  // before libvirt's device-added event (and so before the guest can use the NIC).
  std::mutex tap_mu;
  std::optional<std::chrono::steady_clock::time_point> tap_created;
  TapWatcher taps([&](const TapEvent& e) {
    std::lock_guard lock(tap_mu);
    if (e.added && e.name == "sgthp1" && !tap_created) {
      tap_created = std::chrono::steady_clock::now();
    }
  });
  size_t from = recorder_.Size();
  guest.Virsh({"attach-device", guest.Name(), nic_file, "--live"});
  auto added = recorder_.WaitFor(from, IsChange(ChangeReason::kDeviceAdded, guest.Name()), kEvent);
  ASSERT_TRUE(added);
  EXPECT_EQ(added->guest.domain.Taps(), (std::vector<std::string>{"sgthp0", "sgthp1"}));
  EXPECT_TRUE(test::LinkExists("sgthp1"));
  {
    std::lock_guard lock(tap_mu);
    ASSERT_TRUE(tap_created) << "no rtnetlink notice for the hot-plugged tap";
    EXPECT_LT(*tap_created, added->at) << "tap notice came after device-added";
    RecordProperty("tap_notice_before_device_added_ms",
                   static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        added->at - *tap_created)
                                        .count()));
    std::cout
        << "hot-plug: tap notice "
        << std::chrono::duration_cast<std::chrono::milliseconds>(added->at - *tap_created).count()
        << " ms before device-added\n";
  }
  // The guest sees and configures the new NIC: the hot-plugged device really works.
  EXPECT_TRUE(test::WaitForConsole(guest.ConsoleLog(), "SOVGUARD: eth1 up", 30s));

  from = recorder_.Size();
  guest.Virsh({"detach-device", guest.Name(), nic_file, "--live"});
  auto removed = recorder_.WaitFor(from, IsChange(ChangeReason::kDeviceRemoved, guest.Name()), 30s);
  ASSERT_TRUE(removed);
  EXPECT_EQ(removed->guest.domain.Taps(), std::vector<std::string>{"sgthp0"});
  EXPECT_TRUE(test::PollUntil(5s, [] { return !test::LinkExists("sgthp1"); }))
      << "unplugged tap still exists";
  std::filesystem::remove(nic_file);
}

TEST_F(WatcherIntegration, LibvirtdRestartReconnectsAndReconciles) {
  test::TestGuest guest(test::MakeGuestSpec("sgt-rs", "sgtrs0"));
  size_t mark = recorder_.Size();
  guest.Start();
  const GuestInfo first = WaitUp(mark, guest.Name());

  // 1. Plain restart: the guest keeps running, the watcher reconnects, reconciles, and reports
  //    nothing changed (no Down, no Up) because nothing did.
  mark = recorder_.Size();
  const uint64_t reconciles = watcher_->Reconciles();
  test::LibvirtDaemons::RestartLibvirtd();
  ASSERT_TRUE(recorder_.WaitFor(
      mark, [](const Recorded& r) { return r.type == Type::kDisconnected; }, 30s))
      << "connection loss not noticed";
  ASSERT_TRUE(recorder_.WaitFor(
      mark, [](const Recorded& r) { return r.type == Type::kConnected; }, 30s))
      << "no reconnect";
  ASSERT_TRUE(test::PollUntil(10s, [&] { return watcher_->Reconciles() > reconciles; }));
  EXPECT_EQ(recorder_.Count(Type::kDown, guest.Name()), 0u);
  auto guests = GuestsNamed(guest.Name());
  ASSERT_EQ(guests.size(), 1u);
  EXPECT_EQ(guests[0].domain.Taps(), first.domain.Taps());
  EXPECT_EQ(guests[0].qemu_pid, first.qemu_pid);

  // 2. The guest dies while libvirtd is down: after the restart the reconcile reports it gone, so
  //    nothing stale stays attached.
  mark = recorder_.Size();
  test::LibvirtDaemons::StopLibvirtd();
  ASSERT_TRUE(recorder_.WaitFor(
      mark, [](const Recorded& r) { return r.type == Type::kDisconnected; }, 30s));
  ASSERT_TRUE(test::TerminateAndWait(first.qemu_pid, 10s));
  // The tap dies with QEMU: nothing of the guest is left to carry traffic.
  EXPECT_TRUE(test::PollUntil(5s, [&] { return !test::LinkExists(guest.Tap()); }));
  test::LibvirtDaemons::StartLibvirtd();
  // libvirtd decides when the guest is dead: it reconnects to QEMU's monitor first. Where PID 1
  // reaps late (these hosts) the dead QEMU lingers as a zombie that libvirtd takes for alive until
  // its monitor connect times out (~30 s); until then the watcher reports it without a live QEMU.
  auto down = recorder_.WaitFor(mark, Is(Type::kDown, guest.Name()), 75s);
  ASSERT_TRUE(down) << "guest that died during the outage was not reported down";
  EXPECT_TRUE(GuestsNamed(guest.Name()).empty());
  EXPECT_GE(watcher_->Connections(), 3u);
}

TEST_F(WatcherIntegration, TwentyStopStartCyclesLeakNothing) {
  test::TestGuest guest(test::MakeGuestSpec("sgt-cy", "sgtcy0"));
  const auto cgroup2 = enforcer::FindCgroup2Mount();
  ASSERT_TRUE(cgroup2);
  const std::string machine_cgroup = (*cgroup2 / "machine").string();
  const test::KernelObjectCounts before = test::CountKernelObjects({guest.Tap()}, machine_cgroup);
  constexpr int kCycles = 20;
  std::set<pid_t> pids;
  for (int i = 0; i < kCycles; ++i) {
    size_t mark = recorder_.Size();
    guest.Start();
    GuestInfo g = WaitUp(mark, guest.Name());
    ASSERT_EQ(g.domain.Taps(), std::vector<std::string>{guest.Tap()}) << "cycle " << i;
    ASSERT_TRUE(g.cgroup.has_value()) << "cycle " << i;
    pids.insert(g.qemu_pid);
    mark = recorder_.Size();
    guest.Destroy();
    ASSERT_TRUE(recorder_.WaitFor(mark, Is(Type::kDown, guest.Name()), kEvent)) << "cycle " << i;
  }
  EXPECT_EQ(pids.size(), static_cast<size_t>(kCycles));  // a fresh QEMU every time
  EXPECT_EQ(recorder_.Count(Type::kUp, guest.Name()), static_cast<size_t>(kCycles));
  EXPECT_EQ(recorder_.Count(Type::kDown, guest.Name()), static_cast<size_t>(kCycles));
  EXPECT_TRUE(test::PollUntil(5s, [&] { return !test::LinkExists(guest.Tap()); }));
  EXPECT_TRUE(GuestsNamed(guest.Name()).empty());
  // No guest cgroup left behind under machine/.
  if (std::filesystem::exists(machine_cgroup)) {
    for (const auto& e : std::filesystem::directory_iterator(machine_cgroup)) {
      EXPECT_EQ(e.path().filename().string().find(guest.Name()), std::string::npos) << e.path();
    }
  }
  // LEAK COUNT: tc filters and cgroup programs must be back where they started. The datapath is
  // not attached in this test; once sovguardd attaches per guest, this same comparison is the
  // leak check (bpf_programs/bpf_maps are system-wide: only meaningful with tests serialised).
  const test::KernelObjectCounts after = test::CountKernelObjects({guest.Tap()}, machine_cgroup);
  EXPECT_EQ(after.tc_filters, before.tc_filters) << test::ToString(after);
  EXPECT_EQ(after.cgroup_attachments, before.cgroup_attachments) << test::ToString(after);
  RecordProperty("kernel_objects_before", test::ToString(before));
  RecordProperty("kernel_objects_after", test::ToString(after));
}

TEST_F(WatcherIntegration, ReconcileWithoutChangesIsQuiet) {
  const size_t mark = recorder_.Size();
  const uint64_t n = watcher_->Reconciles();
  watcher_->RequestReconcile();
  ASSERT_TRUE(test::PollUntil(10s, [&] { return watcher_->Reconciles() > n; }));
  EXPECT_EQ(recorder_.Size(), mark);
}

}  // namespace
}  // namespace sovguard::libvirt
