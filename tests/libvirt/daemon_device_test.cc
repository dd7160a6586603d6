// Every disk and host device of a guest holding a dataset is one sovguard guards, or the guest
// does not start: end to end with a real libvirtd. A <hostdev> (here a SCSI LUN over iSCSI, which
// libvirt lets through to the start hook without touching the host) refuses the start with
// sovguard's reason in libvirt's error; a disk of type 'volume' is resolved through libvirt to its
// file, so a labelled pool volume outside its dataset's pools is refused like a file disk.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/process.h"
#include "tests/libvirt/daemon_fixture.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;

namespace {

class DaemonDevices : public st::DaemonWithLibvirt {
 protected:
  void SetUp() override {
    base_ = MakeScratchDir("daemon-devices");
    approved_ = base_ / "approved";
    other_ = base_ / "other-pool";
    fs::create_directories(approved_);
    fs::create_directories(other_);
    DaemonWithLibvirt::SetUp();
  }
  std::string PolicyText() const override {
    return st::kZonePolicy + st::PoolDataset("health", "confidential",
                                             "its volumes live in the approved directory only",
                                             approved_);
  }
  fs::path base_, approved_, other_;
};

TEST_F(DaemonDevices, HostdevOnADatasetGuestRefusesItsStart) {
  StartDaemonWithHook();
  st::TestGuest guest(st::MakeGuestSpec("sgt-hd", "sgthd0"));  // unlabelled: holds "guest-default"
  // The target is loopback's discard port: were QEMU started, nothing would leave the host.
  AttachDevice(guest,
               "<hostdev mode='subsystem' type='scsi'><source protocol='iscsi' "
               "name='iqn.2026-12.eu.sovguard.test:t/1'><host name='127.0.0.1' port='9'/></source>"
               "<address type='drive' controller='0' bus='0' target='0' unit='0'/></hostdev>");
  const auto r = guest.TryStart();
  EXPECT_NE(r.exit_code, 0) << "a dataset guest started with a host device assigned";
  EXPECT_FALSE(guest.Running());
  EXPECT_NE(r.err.find("sovguard refuses to start it"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("guest-default"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("hostdev"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("neither a network nor a storage device"), std::string::npos) << r.err;
  EXPECT_TRUE(GuestStatus(guest.Name()).is_null()) << daemon_->Status().dump(2);
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

TEST_F(DaemonDevices, PoolVolumeIsResolvedAndHeldToTheDatasetPools) {
  // A directory pool outside the dataset's approved directory, with one raw volume.
  const std::string pool = "sgt-pool-" + std::to_string(::getpid());
  const std::string uri = st::LibvirtDaemons::kUri;
  st::WriteTestFile(dir_ / "pool.xml", "<pool type='dir'><name>" + pool + "</name><target><path>" +
                                           other_.string() + "</path></target></pool>");
  std::string out;
  ASSERT_EQ(st::RunShell("virsh -c '" + uri + "' pool-create " + (dir_ / "pool.xml").string() +
                             " && virsh -c '" + uri + "' vol-create-as " + pool +
                             " health.raw 16M --format raw 2>&1",
                         &out),
            0)
      << out;
  struct PoolGuard {
    std::string uri, pool;
    ~PoolGuard() {
      st::RunShell("virsh -c '" + uri + "' pool-destroy " + pool + " >/dev/null 2>&1");
    }
  } pool_guard{uri, pool};

  StartDaemonWithHook();
  st::TestGuest guest(st::MakeGuestSpec(
      "sgt-pv", "sgtpv0",
      st::GuestLabel("<dataset id=\"health\"/><disk target=\"vdb\" dataset=\"health\"/>")));
  AttachDevice(guest,
               "<disk type='volume' device='disk'><driver name='qemu' type='raw'/><source pool='" +
                   pool + "' volume='health.raw'/><target dev='vdb' bus='virtio'/></disk>");
  const auto r = guest.TryStart();
  EXPECT_NE(r.exit_code, 0) << "a labelled pool volume outside the dataset's pools was used";
  EXPECT_FALSE(guest.Running());
  EXPECT_NE(r.err.find((other_ / "health.raw").string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not on approved storage"), std::string::npos) << r.err;
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

}  // namespace
