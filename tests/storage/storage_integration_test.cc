// Integration tier: a real libvirtd and QEMU TCG guests. The storage datapath is armed from the
// qemu hook at `start begin` (before libvirt creates the guest's cgroup), as sovguardd does:
//   - a guest allowed to use dataset D boots from D's disk, and its reads are counted;
//   - a guest not allowed, given the same disk, is denied before its vCPUs ever run, and the
//     event names guest, dataset and path;
//   - a QEMU NBD backend in a forbidden zone fails with EPERM, in an allowed zone it works.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <mutex>

#include "enforcer/libvirt/hook_server.h"
#include "enforcer/storage/storage_datapath.h"
#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/process.h"

namespace sovguard::storage {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr std::uint8_t kHealth = 0, kMetered = 1;
constexpr std::uint64_t kMeteredReadBudget = 8 << 20;

int Sh(const std::string& cmd) {
  return std::system(cmd.c_str());  // NOLINT: test setup through ip/mkfs/qemu-img
}

std::string Labels(bool holds_health) {
  if (!holds_health) return {};
  return "<sovguard:guest xmlns:sovguard=\"https://sovguard.eu/ns/guest/1\">"
         "<dataset id=\"health\"/><disk target=\"vda\" dataset=\"health\"/></sovguard:guest>";
}

policy::CompiledStorage Policy(const fs::path& pool) {
  policy::CompiledStorage s;
  policy::CompiledStorageDataset d;
  d.id = "health";
  d.index = kHealth;
  d.mode = policy::Mode::kEnforce;
  d.pools.push_back({policy::StoragePool::Kind::kPath, pool.string()});
  s.datasets.push_back(d);
  d.id = "metered";  // a read budget smaller than the guest's dd (same pool)
  d.index = kMetered;
  d.read = policy::Quota{kMeteredReadBudget, 3600};
  s.datasets.push_back(d);
  s.classes.push_back({0, SG_COUNTRY_UNKNOWN, 0, 0});
  s.classes.push_back({1ULL << kHealth, 0x4445 /* DE */, 0, 0});
  s.classes.push_back({0, 0x5553 /* US */, 0, 0});
  s.ipv4.push_back({0xC6336400u, 24, 1});  // 198.51.100.0/24: allowed zone
  s.ipv4.push_back({0xCB007100u, 24, 2});  // 203.0.113.0/24: forbidden zone
  return s;
}

class StorageIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::LibvirtDaemons::Answering());
    test::RequireGuestImage();
    dir_ = fs::path("/run/sovguard-test") / ("storage-" + std::to_string(::getpid()));
    pool_ = dir_ / "pool";
    fs::create_directories(pool_);
    image_ = pool_ / "health.img";
    ASSERT_EQ(Sh("truncate -s 16M " + image_.string() + " && mkfs.ext4 -q -F " + image_.string() +
                 " >/dev/null 2>&1"),
              0);
    sp_ = std::make_unique<StorageDatapath>();
    sp_->ApplyPolicy(Policy(pool_));
    hook_ = std::make_unique<test::ScopedLibvirtHook>("storage-it", SOVGUARD_LIBVIRT_HOOK);
    server_ = std::make_unique<libvirt::HookServer>(
        hook_->Socket(), [this](const libvirt::HookEvent& ev) { return OnHook(ev); });
  }
  void TearDown() override {
    server_.reset();
    hook_.reset();
    sp_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // What sovguardd does at the hook: start begin -> ExpectGuest; release -> RemoveGuest.
  libvirt::HookResponse OnHook(const libvirt::HookEvent& ev) {
    std::lock_guard lock(mu_);
    if (!ev.domain) return {ev.request.op != "start", ev.parse_error};
    const auto& d = *ev.domain;
    hook_log_ += "hook " + ev.request.op + " " + ev.request.sub + " " + d.name + " id " +
                 std::to_string(d.id) + "\n";
    if (ev.request.op == "start" && ev.request.sub == "begin") {
      GuestStorage g{.name = d.name};
      const bool health = std::find(d.labels.datasets.begin(), d.labels.datasets.end(), "health") !=
                          d.labels.datasets.end();
      if (health) g.datasets |= 1ULL << kHealth;
      if (std::find(d.labels.datasets.begin(), d.labels.datasets.end(), "metered") !=
          d.labels.datasets.end())
        g.datasets |= 1ULL << kMetered;
      for (const auto& disk : d.disks) {
        if (disk.source_type != "file" && disk.source_type != "block") continue;
        GuestDisk gd{.source = disk.source, .readonly = disk.readonly};
        for (const auto& l : d.labels.disks)
          if (l.target == disk.target) gd.dataset = l.dataset;
        g.disks.push_back(gd);
      }
      const std::string cg = sp_->GuestCgroupName(d.id, d.name);
      cgroup_existed_at_start_begin_ = fs::exists(sp_->Status().machine_cgroup / cg);
      hook_log_ += "start begin " + d.name + " -> " + cg +
                   (cgroup_existed_at_start_begin_ ? " (exists)" : " (not yet)") + "\n";
      try {
        sp_->ExpectGuest(cg, g);
      } catch (const StorageRefused& e) {
        return {false, e.what()};
      }
    }
    if (ev.request.op == "release") sp_->RemoveGuest(d.name);
    return {true, {}};
  }

  std::vector<StorageEvent> Drain() {
    std::lock_guard lock(mu_);
    std::vector<StorageEvent> out;
    sp_->PollEvents([&](const StorageEvent& e) { out.push_back(e); }, 0);
    return out;
  }

  std::vector<IoCounters> Counters() {
    std::lock_guard lock(mu_);
    return sp_->ReadCounters();
  }

  void AttachDisk(test::TestGuest& g, const std::string& xml) {
    const auto file = dir_ / (g.Name() + "-disk.xml");
    test::WriteFile(file, xml);
    g.Virsh({"attach-device", g.Name(), file.string(), "--config"});
  }

  std::string FileDisk(const fs::path& source) {
    return "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='" +
           source.string() + "'/><target dev='vda' bus='virtio'/></disk>";
  }

  std::mutex mu_;
  fs::path dir_, pool_, image_;
  std::unique_ptr<StorageDatapath> sp_;
  std::unique_ptr<test::ScopedLibvirtHook> hook_;
  std::unique_ptr<libvirt::HookServer> server_;
  bool cgroup_existed_at_start_begin_ = false;
  std::string hook_log_;
};

std::string fmt_dd(std::uint64_t mib) {
  return " sg.dd_read=" + std::to_string(mib) + " sg.dd_write=" + std::to_string(mib);
}

std::uintmax_t FileSize(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

TEST_F(StorageIntegration, AllowedGuestBootsWithItsDiskOtherGuestIsDeniedBeforeItRuns) {
  {
    test::GuestSpec spec{.name = "sgt-sta", .tap = "sgtsta0", .metadata = Labels(true)};
    test::TestGuest allowed(spec);
    AttachDisk(allowed, FileDisk(image_));
    allowed.Start();
    ASSERT_TRUE(allowed.WaitReady(60s));
    ASSERT_TRUE(allowed.Running());
    EXPECT_FALSE(cgroup_existed_at_start_begin_)
        << "libvirt created the guest cgroup before start begin: registration by name is moot";
    // The guest kernel probed its disk while booting (the harness init tries to mount it): QEMU
    // read the image, and the reads were counted for (guest, dataset).
    const auto counters = Counters();
    const auto it = std::find_if(counters.begin(), counters.end(),
                                 [](const IoCounters& c) { return c.guest == "sgt-sta"; });
    ASSERT_NE(it, counters.end()) << "no counters: the guest cgroup was not registered";
    EXPECT_EQ(it->dataset, "health");
    EXPECT_GT(it->read_bytes, 0u);
    for (const auto& e : Drain()) ADD_FAILURE() << "unexpected event " << e.kind << " " << e.guest;
    allowed.Destroy();
  }
  test::GuestSpec spec{.name = "sgt-stb", .tap = "sgtstb0", .metadata = Labels(false)};
  test::TestGuest intruder(spec);
  AttachDisk(intruder, FileDisk(image_));
  const auto r = intruder.TryStart();
  EXPECT_NE(r.exit_code, 0) << "a guest without the dataset started with its disk";
  EXPECT_FALSE(intruder.Running());
  EXPECT_EQ(FileSize(intruder.ConsoleLog()), 0u)
      << "the guest's vCPUs ran (SeaBIOS wrote to the console) before it was stopped";
  std::cout << "virsh start: " << r.err << "\n";
  std::vector<StorageEvent> events;
  test::PollUntil(5s, [&] {
    for (auto& e : Drain()) events.push_back(e);
    return !events.empty();
  });
  ASSERT_FALSE(events.empty()) << "no event for the denied open";
  const auto& e = events.front();
  for (const auto& ev : events) {
    std::cout << "event " << ev.kind << " guest " << ev.guest << " cgroup " << ev.cgroup_id
              << " pid " << ev.pid << " " << ev.path << "\n";
  }
  std::cout << hook_log_;
  // The hook target is one file for the shared test libvirtd: a test running at the same time
  // from another build directory can replace it. Then this guest was never announced.
  ASSERT_NE(hook_log_.find("hook start begin sgt-stb"), std::string::npos)
      << "our hook did not see sgt-stb start (hook target replaced by a concurrent test?)";
  EXPECT_EQ(e.kind, "open-denied");
  EXPECT_EQ(e.guest, "sgt-stb");
  EXPECT_EQ(e.dataset, "health");
  EXPECT_EQ(e.path, fs::canonical(image_).string());
  const auto open = sp_->Status().Find("storage-open");
  EXPECT_EQ(e.verdict,
            open->guarantee == Guarantee::kPrevents ? Verdict::kPrevented : Verdict::kKilled);
}

TEST_F(StorageIntegration, DiskOutsideTheDatasetsPoolsIsRefusedAtStartBegin) {
  const auto elsewhere = dir_ / "unapproved";
  fs::create_directories(elsewhere);
  const auto copy = elsewhere / "health-copy.img";
  fs::copy_file(image_, copy);
  test::GuestSpec spec{.name = "sgt-stc", .tap = "sgtstc0", .metadata = Labels(true)};
  test::TestGuest guest(spec);
  AttachDisk(guest, FileDisk(copy));
  const auto r = guest.TryStart();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not on approved storage"), std::string::npos) << r.err;
  EXPECT_FALSE(guest.Running());
}

// dd inside the guest (guest-init.sh's sg.dd_read / sg.dd_write, O_DIRECT): the counters match the
// bytes dd moved within 1 %. The kernel command line is extended through virsh.
TEST_F(StorageIntegration, ByteCountersMatchDdInsideTheGuest) {
  constexpr std::uint64_t kMiB = 1 << 20, kDd = 32;
  const auto second = pool_ / "health-2.img";
  ASSERT_EQ(Sh("truncate -s 48M " + image_.string() + " && truncate -s 48M " + second.string()), 0);
  test::GuestSpec spec{.name = "sgt-std",
                       .tap = "sgtstd0",
                       .metadata =
                           "<sovguard:guest xmlns:sovguard=\"https://sovguard.eu/ns/guest/1\">"
                           "<dataset id=\"health\"/><disk target=\"vda\" dataset=\"health\"/>"
                           "<disk target=\"vdb\" dataset=\"health\"/></sovguard:guest>"};
  test::TestGuest guest(spec);
  AttachDisk(guest, FileDisk(image_));
  {
    std::string disk = FileDisk(second);
    disk.replace(disk.find("dev='vda'"), 9, "dev='vdb'");
    AttachDisk(guest, disk);
  }
  std::string xml = guest.Virsh({"dumpxml", guest.Name()});
  const auto at = xml.find("</cmdline>");
  ASSERT_NE(at, std::string::npos);
  xml.insert(at, fmt_dd(kDd));
  const auto file = dir_ / "sgt-std.xml";
  test::WriteFile(file, xml);
  guest.Virsh({"define", file.string()});
  guest.Start();
  ASSERT_TRUE(guest.WaitReady(60s));
  // guest-init.sh reports each dd (or its error) and then "dd done"; TCG runs 64 MiB of O_DIRECT
  // I/O in seconds, the bound is for a loaded host.
  ASSERT_TRUE(test::WaitForConsole(guest.ConsoleLog(), "SOVGUARD: dd done", 180s))
      << "no 'SOVGUARD: dd done' on the console:\n"
      << test::ReadFile(guest.ConsoleLog());
  const std::string console = test::ReadFile(guest.ConsoleLog());
  ASSERT_NE(console.find("SOVGUARD: dd read " + std::to_string(kDd) + " MiB"), std::string::npos)
      << console;
  ASSERT_NE(console.find("SOVGUARD: dd wrote " + std::to_string(kDd) + " MiB"), std::string::npos)
      << console;
  const auto counters = Counters();
  const auto it = std::find_if(counters.begin(), counters.end(),
                               [](const IoCounters& c) { return c.guest == "sgt-std"; });
  ASSERT_NE(it, counters.end());
  const double want = static_cast<double>(kDd * kMiB);
  std::cout << "guest dd " << kDd << " MiB each way; counted read " << it->read_bytes << " write "
            << it->write_bytes << "\n";
  EXPECT_NEAR(static_cast<double>(it->read_bytes), want, want * 0.01);
  EXPECT_NEAR(static_cast<double>(it->write_bytes), want, want * 0.01);
  guest.Destroy();
}

// qemu-nbd serving the image in a test namespace on two documentation addresses: one in an
// allowed zone, one in a forbidden zone. The root namespace (where libvirt runs QEMU) reaches them
// over a veth pair with host routes for exactly those two addresses.
class NbdServer {
 public:
  explicit NbdServer(const fs::path& image) : ns_("sgt-stn-" + std::to_string(::getpid() % 10000)) {
    const std::string n = "ip -n " + ns_ + " ";
    ok_ = Sh("ip netns add " + ns_) == 0 &&
          Sh("ip link add sgtstn-r type veth peer name sgtstn-d netns " + ns_) == 0 &&
          Sh("ip addr add 192.0.2.250/32 dev sgtstn-r && ip link set sgtstn-r up") == 0 &&
          Sh(n + "link set lo up && " + n + "link set sgtstn-d up") == 0 &&
          Sh(n + "addr add 198.51.100.9/32 dev sgtstn-d && " + n +
             "addr add 203.0.113.9/32 dev sgtstn-d && " + n +
             "route add 192.0.2.250/32 dev sgtstn-d") == 0 &&
          Sh("ip route add 198.51.100.9/32 dev sgtstn-r src 192.0.2.250 && "
             "ip route add 203.0.113.9/32 dev sgtstn-r src 192.0.2.250") == 0;
    if (!ok_) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execlp("ip", "ip", "netns", "exec", ns_.c_str(), "qemu-nbd", "-f", "raw", "-x", "export",
               "-p", "10809", "--persistent", "--shared=4", image.c_str(), nullptr);
      ::_exit(127);
    }
    // Ready when the port accepts (bounded).
    ok_ = test::PollUntil(10s, [&] {
      return Sh("ip netns exec " + ns_ + " sh -c 'cat /proc/net/tcp' | grep -q ':2A39 '") == 0;
    });
  }
  ~NbdServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    Sh("ip link del sgtstn-r 2>/dev/null");
    Sh("ip netns del " + ns_ + " 2>/dev/null");
  }
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;
  bool ok() const { return ok_; }

 private:
  std::string ns_;
  pid_t pid_ = -1;
  bool ok_ = false;
};

std::string NbdDisk(const char* host) {
  return std::string(
             "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
             "<source protocol='nbd' name='export'><host name='") +
         host + "' port='10809'/></source><target dev='vda' bus='virtio'/></disk>";
}

std::string GuestWideHealth() {
  return "<sovguard:guest xmlns:sovguard=\"https://sovguard.eu/ns/guest/1\">"
         "<dataset id=\"health\"/></sovguard:guest>";
}

TEST_F(StorageIntegration, NbdBackendOnlyInAnAllowedZone) {
  NbdServer nbd(image_);
  ASSERT_TRUE(nbd.ok()) << "could not set up qemu-nbd in a test namespace";
  {
    test::GuestSpec spec{.name = "sgt-stf", .tap = "sgtstf0", .metadata = GuestWideHealth()};
    test::TestGuest forbidden(spec);
    AttachDisk(forbidden, NbdDisk("203.0.113.9"));
    const auto r = forbidden.TryStart();
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("Operation not permitted"), std::string::npos) << r.err;
    std::vector<StorageEvent> events;
    test::PollUntil(5s, [&] {
      for (auto& e : Drain()) events.push_back(e);
      return !events.empty();
    });
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.front().kind, "connect-denied");
    EXPECT_EQ(events.front().guest, "sgt-stf");
    EXPECT_EQ(events.front().address, "203.0.113.9:10809");
    EXPECT_EQ(events.front().verdict, Verdict::kPrevented);
  }
  test::GuestSpec spec{.name = "sgt-stg", .tap = "sgtstg0", .metadata = GuestWideHealth()};
  test::TestGuest allowed(spec);
  AttachDisk(allowed, NbdDisk("198.51.100.9"));
  allowed.Start();
  ASSERT_TRUE(allowed.WaitReady(60s))
      << "the guest with an NBD disk in the allowed zone did not boot";
  for (const auto& e : Drain()) ADD_FAILURE() << "unexpected event " << e.kind << " " << e.address;
  allowed.Destroy();
}

// QEMU's disk I/O modes move bytes by different syscalls: io='threads' by preadv/pwritev in a
// thread pool, io='native' by Linux AIO (io_submit, O_DIRECT: cache='none'), io='io_uring' by an
// io_uring. In each, dd inside the guest is counted within 1 %, and a read budget smaller than
// the guest's dd kills QEMU.
class StorageIoModes : public StorageIntegration,
                       public ::testing::WithParamInterface<const char*> {
 protected:
  // Two disks (vda read, vdb written by guest-init's dd) of `dataset` in I/O mode GetParam().
  std::unique_ptr<test::TestGuest> DdGuest(const std::string& name, const std::string& tap,
                                           const std::string& dataset, std::uint64_t dd_mib) {
    const auto first = pool_ / (name + "-a.img"), second = pool_ / (name + "-b.img");
    EXPECT_EQ(Sh("truncate -s 48M " + first.string() + " && truncate -s 48M " + second.string()),
              0);
    test::GuestSpec spec{.name = name,
                         .tap = tap,
                         .metadata =
                             "<sovguard:guest xmlns:sovguard=\"https://sovguard.eu/ns/guest/1\">"
                             "<dataset id=\"" +
                             dataset + "\"/><disk target=\"vda\" dataset=\"" + dataset +
                             "\"/><disk target=\"vdb\" dataset=\"" + dataset +
                             "\"/></sovguard:guest>"};
    auto guest = std::make_unique<test::TestGuest>(spec);
    const std::string io = GetParam();
    const std::string driver = "<driver name='qemu' type='raw'" +
                               std::string(io == "threads" ? "" : " cache='none'") + " io='" + io +
                               "'/>";
    for (const auto& [source, dev] : {std::pair{first, "vda"}, std::pair{second, "vdb"}}) {
      AttachDisk(*guest, "<disk type='file' device='disk'>" + driver + "<source file='" +
                             source.string() + "'/><target dev='" + dev +
                             "' bus='virtio'/></disk>");
    }
    std::string xml = guest->Virsh({"dumpxml", guest->Name()});
    const auto at = xml.find("</cmdline>");
    EXPECT_NE(at, std::string::npos);
    if (at == std::string::npos) return guest;
    xml.insert(at, fmt_dd(dd_mib));
    const auto file = dir_ / (name + ".xml");
    test::WriteFile(file, xml);
    guest->Virsh({"define", file.string()});
    return guest;
  }
  std::optional<IoCounters> CountersOf(const std::string& guest) {
    for (const auto& c : Counters())
      if (c.guest == guest) return c;
    return std::nullopt;
  }
};

TEST_P(StorageIoModes, DdInsideTheGuestIsCountedWithinOnePercent) {
  constexpr std::uint64_t kMiB = 1 << 20, kDd = 32;
  const std::string name = std::string("sgt-sm") + GetParam()[0];
  auto guest = DdGuest(name, std::string("sgtsm") + GetParam()[0] + "0", "health", kDd);
  const auto r = guest->TryStart();
  ASSERT_EQ(r.exit_code, 0) << "io='" << GetParam() << "' guest did not start: " << r.err;
  ASSERT_TRUE(test::WaitForConsole(guest->ConsoleLog(), "SOVGUARD: dd done", 180s))
      << test::ReadFile(guest->ConsoleLog());
  const std::string console = test::ReadFile(guest->ConsoleLog());
  ASSERT_NE(console.find("SOVGUARD: dd read " + std::to_string(kDd) + " MiB"), std::string::npos)
      << console;
  ASSERT_NE(console.find("SOVGUARD: dd wrote " + std::to_string(kDd) + " MiB"), std::string::npos)
      << console;
  const auto c = CountersOf(name);
  ASSERT_TRUE(c.has_value()) << "no counters for " << name;
  const double want = static_cast<double>(kDd * kMiB);
  std::cout << "io='" << GetParam() << "': guest dd " << kDd << " MiB each way; counted read "
            << c->read_bytes << " write " << c->write_bytes << "\n";
  EXPECT_NEAR(static_cast<double>(c->read_bytes), want, want * 0.01);
  EXPECT_NEAR(static_cast<double>(c->write_bytes), want, want * 0.01);
  guest->Destroy();
}

TEST_P(StorageIoModes, ReadBudgetKillsQemu) {
  const std::string name = std::string("sgt-sq") + GetParam()[0];
  auto guest = DdGuest(name, std::string("sgtsq") + GetParam()[0] + "0", "metered", 32);
  const auto r = guest->TryStart();
  ASSERT_EQ(r.exit_code, 0) << "io='" << GetParam() << "' guest did not start: " << r.err;
  std::vector<StorageEvent> events;
  const bool seen = test::PollUntil(180s, [&] {
    for (auto& e : Drain()) events.push_back(e);
    return std::any_of(events.begin(), events.end(), [&](const StorageEvent& e) {
      return e.guest == name && e.kind == "read-quota";
    });
  });
  ASSERT_TRUE(seen) << "no read-quota event; console:\n" << test::ReadFile(guest->ConsoleLog());
  EXPECT_TRUE(test::PollUntil(30s, [&] { return !guest->Running(); }))
      << "QEMU still runs after its read budget was used";
  const std::string console = test::ReadFile(guest->ConsoleLog());
  EXPECT_EQ(console.find("SOVGUARD: dd read 32 MiB"), std::string::npos)
      << "the guest read past its budget:\n"
      << console;
  // The guest's counters went with it (libvirt's release hook removes the guest): the event and
  // the unfinished dd show the budget held.
}

INSTANTIATE_TEST_SUITE_P(Modes, StorageIoModes, ::testing::Values("threads", "native", "io_uring"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param);
                         });

}  // namespace
}  // namespace sovguard::storage
