// sovguardd guards a dataset's disks end to end: a guest labelled with the dataset boots from its
// volume (reads counted per guest and dataset in status and metrics); a guest without the dataset,
// given the same volume, never runs (prevented, or killed before its vCPUs run where the kernel
// only detects) and the daemon's log names guest, dataset and path; status and metrics say which
// mechanism guards each storage path.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/process.h"
#include "tests/libvirt/daemon_fixture.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;
using namespace std::chrono_literals;

namespace {

std::string FileDisk(const fs::path& source, bool readonly = false) {
  return "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='" +
         source.string() + "'/><target dev='vda' bus='virtio'/>" + (readonly ? "<readonly/>" : "") +
         "</disk>";
}

class DaemonStorage : public st::DaemonWithLibvirt {
 protected:
  void SetUp() override {
    pool_ = fs::path("/run/sovguard-test") / ("daemon-storage-" + std::to_string(::getpid()));
    fs::create_directories(pool_);
    image_ = pool_ / "health.img";
    archive_ = pool_ / "archive.img";
    for (const auto& img : {image_, archive_}) {
      ASSERT_EQ(st::RunShell("truncate -s 16M " + img.string() + " && mkfs.ext4 -q -F " +
                             img.string() + " >/dev/null 2>&1"),
                0);
    }
    DaemonWithLibvirt::SetUp();
  }
  void TearDown() override {
    DaemonWithLibvirt::TearDown();
    std::error_code ec;
    fs::remove_all(pool_, ec);
  }
  std::string PolicyText() const override {
    return std::string(st::kZonePolicy) + R"(datasets {
  id: "health"
  owner: "test"
  classification: "confidential"
  description: "its volumes live in the test's pool; only labelled guests may open them"
  mode: ENFORCE
  residency { allow: ["EU", "EEA"] zones: ["test-eu"] }
  storage { pools { path: ")" +
           pool_.string() + R"(" } }
}
datasets {
  id: "archive"
  owner: "test"
  classification: "internal"
  description: "read-only: its volumes are never opened for writing"
  mode: ENFORCE
  residency { allow: ["EU", "EEA"] zones: ["test-eu"] }
  usage { read_only: true }
  storage { pools { path: ")" +
           pool_.string() + R"(" } }
}
)";
  }
  void AttachDisk(st::TestGuest& g) { AttachDisk(g, FileDisk(image_)); }
  void AttachDisk(st::TestGuest& g, const std::string& xml) {
    const auto file = pool_ / (g.Name() + "-disk.xml");
    st::WriteTestFile(file, xml);
    g.Virsh({"attach-device", g.Name(), file.string(), "--config"});
  }

  fs::path pool_, image_, archive_;
};

TEST_F(DaemonStorage, OnlyGuestsHoldingTheDatasetUseItsDisk) {
  StartDaemon();
  st::ScopedHookTarget hook(HookPath());
  {
    const auto status = daemon_->Status();
    ASSERT_TRUE(status.at("storage").at("enforced").get<bool>()) << status.dump(2);
  }
  {
    st::GuestSpec spec;
    spec.name = "sgt-ds1";
    spec.tap = "sgtds1";
    spec.metadata =
        "<sovguard:guest xmlns:sovguard=\"https://sovguard.eu/ns/guest/1\">"
        "<dataset id=\"health\"/><disk target=\"vda\" dataset=\"health\"/>"
        "</sovguard:guest>";
    st::TestGuest allowed(spec);
    AttachDisk(allowed);
    allowed.Start();
    ASSERT_TRUE(allowed.WaitReady(120s)) << st::ReadTextFile(allowed.ConsoleLog());
    // The guest kernel probed its disk while booting: QEMU read the image, and those reads are
    // counted for (guest, dataset) and shown in status.
    nlohmann::json counters;
    ASSERT_TRUE(st::PollUntil(
        10s,
        [&] {
          for (const auto& c :
               daemon_->Status().at("storage").value("counters", nlohmann::json::array())) {
            if (c.value("guest", "") == spec.name && c.value("dataset", "") == "health" &&
                c.value("read_bytes", std::uint64_t{0}) > 0) {
              counters = c;
              return true;
            }
          }
          return false;
        },
        200ms))
        << daemon_->Status().dump(2);
    std::string out;
    ASSERT_EQ(st::RunShell("curl -sf " + daemon_->Status().at("metrics").get<std::string>(), &out),
              0);
    EXPECT_NE(out.find("sovguard_storage_read_bytes_total{guest=\"sgt-ds1\",dataset=\"health\"}"),
              std::string::npos)
        << out;
    allowed.Destroy();
  }

  st::GuestSpec spec;
  spec.name = "sgt-ds2";
  spec.tap = "sgtds2";
  st::TestGuest intruder(spec);
  AttachDisk(intruder);
  const auto r = intruder.TryStart();
  EXPECT_NE(r.exit_code, 0) << "a guest without the dataset started with its disk";
  EXPECT_FALSE(intruder.Running());
  // The refusal is logged with guest, dataset and volume.
  EXPECT_TRUE(st::PollUntil(
      10s,
      [&] {
        const std::string log = daemon_->Log();
        const auto at = log.find("storage violation");
        if (at == std::string::npos) return false;
        const std::string line = log.substr(at, log.find('\n', at) - at);
        return line.find("sgt-ds2") != std::string::npos &&
               line.find("health") != std::string::npos &&
               line.find(fs::canonical(image_).string()) != std::string::npos;
      },
      200ms))
      << "start error: " << r.err << "\n"
      << daemon_->Log();

  // What guards each storage path, as status and `sovguardctl status` report it.
  std::string out;
  ASSERT_EQ(st::RunShell(st::DaemonProcess::Ctl() + " status --runtime-dir " +
                             daemon_->RuntimeDir().string(),
                         &out),
            0);
  EXPECT_NE(out.find("storage path: programs at"), std::string::npos) << out;
  EXPECT_NE(out.find("storage-open"), std::string::npos) << out;
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

// A read-only dataset's volume opened for writing is refused (QEMU opens a disk without <readonly/>
// read-write); the same guest with the disk marked read-only boots from it.
TEST_F(DaemonStorage, ReadOnlyDatasetIsNeverOpenedForWriting) {
  StartDaemon();
  st::ScopedHookTarget hook(HookPath());
  const std::string label =
      "<sovguard:guest xmlns:sovguard=\"https://sovguard.eu/ns/guest/1\">"
      "<dataset id=\"archive\"/><disk target=\"vda\" dataset=\"archive\"/></sovguard:guest>";
  {
    st::GuestSpec spec;
    spec.name = "sgt-ro1";
    spec.tap = "sgtro1";
    spec.metadata = label;
    st::TestGuest writer(spec);
    AttachDisk(writer, FileDisk(archive_, /*readonly=*/false));
    const auto r = writer.TryStart();
    EXPECT_NE(r.exit_code, 0) << "a read-only dataset's volume was opened for writing";
    EXPECT_FALSE(writer.Running());
    EXPECT_TRUE(st::PollUntil(
        10s,
        [&] {
          const std::string log = daemon_->Log();
          return log.find("sgt-ro1") != std::string::npos &&
                 (log.find("read-only") != std::string::npos ||
                  log.find("read_only") != std::string::npos);
        },
        200ms))
        << "start error: " << r.err << "\n"
        << daemon_->Log();
  }
  st::GuestSpec spec;
  spec.name = "sgt-ro2";
  spec.tap = "sgtro2";
  spec.metadata = label;
  st::TestGuest reader(spec);
  AttachDisk(reader, FileDisk(archive_, /*readonly=*/true));
  reader.Start();
  ASSERT_TRUE(reader.WaitReady(120s)) << st::ReadTextFile(reader.ConsoleLog()) << daemon_->Log();
  EXPECT_TRUE(reader.Running());
  reader.Destroy();
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

}  // namespace
