#include "enforcer/libvirt/domain.h"
#include "enforcer/system/mounts.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "base/file.h"
#include "enforcer/libvirt/resolve.h"

namespace sovguard::libvirt {
namespace {

std::string TestData(const std::string& name) {
  return std::string(SOVGUARD_SOURCE_DIR) + "/tests/libvirt/testdata/" + name;
}

TEST(DomainXml, ParsesIdentityTapsDisksAndLabels) {
  DomainDescription d = ParseDomainXml(base::ReadFileText(TestData("domain-live.xml")));
  EXPECT_EQ(d.name, "sgt-unit");
  EXPECT_EQ(d.uuid, "eec1d1ce-8b4a-4325-bc16-55e61b5ecc15");
  EXPECT_EQ(d.id, 7);
  ASSERT_EQ(d.interfaces.size(), 3u);
  EXPECT_EQ(d.interfaces[0],
            (Interface{"ethernet", "sgt0", "52:54:00:aa:bb:01", "virtio", "net0"}));
  EXPECT_EQ(d.interfaces[1].tap, "vnet3");
  EXPECT_EQ(d.interfaces[2].tap, "");  // inactive-style: no target yet
  EXPECT_EQ(d.Taps(), (std::vector<std::string>{"sgt0", "vnet3"}));
  ASSERT_EQ(d.disks.size(), 2u);
  EXPECT_EQ(d.disks[0].source, "/var/lib/libvirt/images/a.qcow2");
  EXPECT_EQ(d.disks[0].target, "vda");
  EXPECT_FALSE(d.disks[0].readonly);
  EXPECT_EQ(d.disks[1].source_type, "block");
  EXPECT_EQ(d.disks[1].source, "/dev/mapper/records");
  EXPECT_TRUE(d.disks[1].readonly);
  EXPECT_TRUE(d.disks[1].shareable);
  ASSERT_EQ(d.labels.state, LabelState::kValid) << d.labels.error;
  EXPECT_EQ(d.labels.datasets, (std::vector<std::string>{"health-records", "tax.2024"}));
  EXPECT_EQ(d.labels.disks, (std::vector<DiskLabel>{{"vdb", "health-records"}}));
}

// Every libvirt interface type: which ones sovguard can filter (a tap's clsact ingress) and, for
// the others, why not. A guest holding a dataset with any of the others is refused or loses it.
TEST(DomainXml, EveryInterfaceTypeIsCoveredOrSaysWhyNot) {
  const DomainDescription d = ParseDomainXml(base::ReadFileText(TestData("domain-interfaces.xml")));
  struct Want {
    const char* type;
    const char* device;
    const char* mac;
    const char* alias;
    const char* reason_part;  // "" = covered
  };
  const std::vector<Want> want = {
      {"ethernet", "sgtnic0", "52:54:00:00:00:01", "net0", ""},
      {"bridge", "vnet1", "52:54:00:00:00:02", "net1", ""},
      {"network", "vnet2", "52:54:00:00:00:03", "net2", ""},
      {"direct", "macvtap0", "52:54:00:00:00:04", "net3", "macvtap macvtap0: "},
      {"hostdev", "", "52:54:00:00:00:05", "hostdev0", "SR-IOV/vDPA"},
      {"vdpa", "", "52:54:00:00:00:06", "net5", "SR-IOV/vDPA"},
      {"user", "", "52:54:00:00:00:07", "net6", "user-mode network stack"},
      {"udp", "", "52:54:00:00:00:08", "net7", "socket backend"},
      {"mcast", "", "52:54:00:00:00:09", "net8", "socket backend"},
      {"vhostuser", "", "52:54:00:00:00:0a", "net9", "vhost-user"},
      {"server", "", "52:54:00:00:00:0b", "net10", "socket backend"},
      {"client", "", "52:54:00:00:00:0c", "net11", "socket backend"},
      {"network", "macvtap1", "52:54:00:00:00:0d", "net12", ""},  // the kernel check decides
      {"network", "", "52:54:00:00:00:0e", "hostdev1", "no host tap device"},
      {"future-kind", "fut0", "52:54:00:00:00:0f", "net14", "type 'future-kind' is not one"},
  };
  ASSERT_EQ(d.interfaces.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(std::string(want[i].type) + " " + want[i].alias);
    const Interface& nic = d.interfaces[i];
    EXPECT_EQ(nic.type, want[i].type);
    EXPECT_EQ(nic.tap, want[i].device);
    EXPECT_EQ(nic.mac, want[i].mac);
    EXPECT_EQ(nic.alias, want[i].alias);
    const std::string reason = nic.UncoveredReason();
    if (std::string(want[i].reason_part).empty()) {
      EXPECT_EQ(reason, "");
    } else {
      EXPECT_NE(reason.find(want[i].reason_part), std::string::npos) << reason;
    }
  }
  // A direct interface's macvtap is not a tap: nothing would filter what the guest sends.
  EXPECT_EQ(d.Taps(), (std::vector<std::string>{"sgtnic0", "vnet1", "vnet2", "macvtap1"}));
  ASSERT_EQ(d.labels.state, LabelState::kValid) << d.labels.error;
  EXPECT_EQ(d.labels.Selectors(), std::vector<std::string>{"team=clinic"});
}

// What cuts an interface's link in QEMU: its own live XML with <link state='down'/>.
TEST(DomainXml, InterfaceXmlWithLinkDown) {
  const std::string xml = base::ReadFileText(TestData("domain-interfaces.xml"));
  const auto user = InterfaceXmlWithLinkDown(xml, "52:54:00:00:00:07", "net6");
  ASSERT_TRUE(user.has_value());
  const DomainDescription d = ParseDomainXml("<domain><name>a</name><uuid>u</uuid><devices>" +
                                             *user + "</devices></domain>");
  ASSERT_EQ(d.interfaces.size(), 1u);
  EXPECT_EQ(d.interfaces[0].type, "user");
  EXPECT_EQ(d.interfaces[0].mac, "52:54:00:00:00:07");
  EXPECT_NE(user->find("<link state=\"down\"/>"), std::string::npos) << *user;
  // An existing <link state='up'/> is turned down, not doubled; MAC compared in lower case.
  const auto up = InterfaceXmlWithLinkDown(
      "<domain><devices><interface type='user'><mac address='52:54:00:AA:00:01'/>"
      "<link state='up'/><alias name='net1'/></interface></devices></domain>",
      "52:54:00:aa:00:01", "net1");
  ASSERT_TRUE(up.has_value());
  EXPECT_EQ(up->find("state=\"up\""), std::string::npos) << *up;
  EXPECT_EQ(up->find("<link"), up->rfind("<link")) << *up;
  EXPECT_FALSE(InterfaceXmlWithLinkDown(xml, "52:54:00:00:00:07", "net7").has_value());
  EXPECT_FALSE(InterfaceXmlWithLinkDown(xml, "52:54:00:99:99:99", "net6").has_value());
  EXPECT_FALSE(InterfaceXmlWithLinkDown("not xml", "52:54:00:00:00:07", "net6").has_value());
}

// Today's hook input: a guest whose only NIC is a direct (macvtap) or user one has no tap.
TEST(DomainXml, GuestWithOnlyUncoverableNicsHasNoTaps) {
  const DomainDescription d = ParseDomainXml(
      "<domain><name>a</name><uuid>00000000-0000-0000-0000-000000000002</uuid><devices>"
      "<interface type='direct'><source dev='eth0' mode='bridge'/><target dev='macvtap3'/>"
      "</interface><interface type='user'/></devices></domain>");
  EXPECT_TRUE(d.Taps().empty());
  ASSERT_EQ(d.interfaces.size(), 2u);
  EXPECT_FALSE(d.interfaces[0].UncoveredReason().empty());
  EXPECT_FALSE(d.interfaces[1].UncoveredReason().empty());
}

TEST(DomainXml, NoLabelIsAbsent) {
  DomainDescription d = ParseDomainXml(
      "<domain><name>a</name><uuid>00000000-0000-0000-0000-000000000001</uuid></domain>");
  EXPECT_EQ(d.labels.state, LabelState::kAbsent);
  EXPECT_EQ(d.id, -1);
}

TEST(DomainXml, ResourcePartitionIsRead) {
  EXPECT_EQ(ParseDomainXml("<domain><name>a</name><uuid>u</uuid></domain>").partition, "");
  EXPECT_EQ(ParseDomainXml("<domain><name>a</name><uuid>u</uuid><resource><partition>/machine/"
                           "prod</partition></resource></domain>")
                .partition,
            "/machine/prod");
}

TEST(DomainXml, BadLabelInDomainFailsClosed) {
  DomainDescription d = ParseDomainXml(
      "<domain><name>a</name><uuid>u</uuid><metadata>"
      "<s:guest xmlns:s='https://sovguard.eu/ns/guest/1'>\n<colour id='x'/></s:guest>"
      "</metadata></domain>");
  EXPECT_EQ(d.labels.state, LabelState::kInvalid);
  EXPECT_NE(d.labels.error.find("line 2: <colour>: unknown element"), std::string::npos)
      << d.labels.error;
}

TEST(DomainXml, TwoLabelElementsFailClosed) {
  DomainDescription d = ParseDomainXml(
      "<domain><name>a</name><uuid>u</uuid><metadata>"
      "<s:guest xmlns:s='https://sovguard.eu/ns/guest/1'><dataset id='a'/></s:guest>"
      "<t:guest xmlns:t='https://sovguard.eu/ns/guest/1'/></metadata></domain>");
  EXPECT_EQ(d.labels.state, LabelState::kInvalid);
  EXPECT_TRUE(d.labels.datasets.empty());
}

TEST(DomainXml, RejectsNonDomainsPrecisely) {
  EXPECT_THROW(ParseDomainXml("<network/>"), DomainXmlError);
  EXPECT_THROW(ParseDomainXml("<domain><uuid>u</uuid></domain>"), DomainXmlError);
  try {
    ParseDomainXml("<domain>\n<name>a</name");
    FAIL();
  } catch (const DomainXmlError& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
}

TEST(Resolve, FindsCgroup2WhereverMounted) {
  using enforcer::FindCgroup2Mount;
  EXPECT_EQ(FindCgroup2Mount(TestData("mountinfo.hybrid")), "/sys/fs/cgroup/unified");
  EXPECT_EQ(FindCgroup2Mount(TestData("mountinfo.escaped")), "/mnt/cg two");
  EXPECT_EQ(FindCgroup2Mount("/nonexistent"), std::nullopt);
}

// Every disk type sovguard cannot guard, and every host device, is named with its reason; file,
// block, network and (resolved) pool-volume disks are guarded.
TEST(DomainXml, UnguardableDisksAndHostdevsAreNamed) {
  const DomainDescription d = ParseDomainXml(R"(<domain type='qemu'>
  <name>sgt-dev</name><uuid>eec1d1ce-8b4a-4325-bc16-55e61b5ecc16</uuid>
  <devices>
    <disk type='file' device='disk'><source file='/img/a.raw'/><target dev='vda'/></disk>
    <disk type='block' device='disk'><source dev='/dev/loop7'/><target dev='vdb'/></disk>
    <disk type='network' device='disk'><source protocol='nbd' name='x'/><target dev='vdc'/></disk>
    <disk type='volume' device='disk'><source pool='p1' volume='v1.raw'/><target dev='vdd'/></disk>
    <disk type='dir' device='disk'><source dir='/srv/share'/><target dev='vde'/></disk>
    <disk type='nvme' device='disk'>
      <source type='pci' managed='yes' namespace='2'>
        <address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></source>
      <target dev='vdf'/></disk>
    <disk type='vhostuser' device='disk'><source type='unix' path='/run/v.sock'/>
      <target dev='vdg'/></disk>
    <hostdev mode='subsystem' type='pci' managed='yes'><source>
      <address domain='0x0000' bus='0x06' slot='0x02' function='0x0'/></source>
      <alias name='hostdev0'/></hostdev>
    <hostdev mode='subsystem' type='usb'><source><vendor id='0x0781'/><product id='0x5567'/>
      </source></hostdev>
    <hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host0'/>
      <address bus='0' target='0' unit='0'/></source></hostdev>
    <hostdev mode='subsystem' type='mdev' model='vfio-pci'><source>
      <address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source></hostdev>
    <hostdev mode='capabilities' type='storage'><source><block>/dev/sdf1</block></source>
      </hostdev>
  </devices></domain>)");
  ASSERT_EQ(d.disks.size(), 7u);
  EXPECT_EQ(d.disks[3].pool, "p1");
  EXPECT_EQ(d.disks[3].volume, "v1.raw");
  for (int i : {0, 1, 2}) EXPECT_EQ(d.disks[i].UncoveredReason(), "") << d.disks[i].source_type;
  EXPECT_NE(d.disks[3].UncoveredReason().find("pool volume p1/v1.raw was not resolved"),
            std::string::npos);
  EXPECT_NE(d.disks[4].UncoveredReason().find("virtual FAT"), std::string::npos);
  EXPECT_NE(d.disks[5].UncoveredReason().find("NVMe controller"), std::string::npos);
  EXPECT_EQ(d.disks[5].source, "nvme 0x0000:0x05:0x00.0x0 namespace 2");
  EXPECT_NE(d.disks[6].UncoveredReason().find("vhostuser"), std::string::npos);
  ASSERT_EQ(d.hostdevs.size(), 5u);
  EXPECT_EQ(d.hostdevs[0], (Hostdev{"subsystem", "pci", "pci 0x0000:0x06:0x02.0x0", "hostdev0"}));
  EXPECT_EQ(d.hostdevs[1].source, "usb 0x0781:0x5567");
  EXPECT_EQ(d.hostdevs[2].source, "scsi scsi_host0");
  EXPECT_EQ(d.hostdevs[3].source, "mdev c2177883-f1bb-47f0-914d-32a22e3a8804");
  EXPECT_EQ(d.hostdevs[4].source, "storage /dev/sdf1");
  const auto uncovered = d.UncoveredDevices();
  ASSERT_EQ(uncovered.size(), 4u + 5u);  // vdd vde vdf vdg + every hostdev
  EXPECT_EQ(uncovered[0].rfind("disk vdd (type volume): ", 0), 0u) << uncovered[0];
  EXPECT_EQ(uncovered[4].rfind("hostdev hostdev0 (pci 0x0000:0x06:0x02.0x0): a host device", 0),
            0u)
      << uncovered[4];

  // A resolved pool volume is the file (or block) disk libvirt names.
  DomainDescription resolved = d;
  resolved.disks[3].ResolvedTo("file", "/pool/v1.raw");
  EXPECT_EQ(resolved.disks[3].UncoveredReason(), "");
  EXPECT_EQ(resolved.disks[3].source, "/pool/v1.raw");
  // One libvirt resolved to something else (a directory volume) is not guarded.
  resolved.disks[3].ResolvedTo("dir", "/pool/d");
  EXPECT_NE(resolved.disks[3].UncoveredReason(), "");
}

// A pool or volume libvirt does not know: resolution fails with libvirt's message.
TEST(Resolve, UnknownPoolVolumeThrows) {
  EXPECT_THROW(ResolvePoolVolume("test:///default", "no-such-pool", "v"), std::runtime_error);
}

TEST(Resolve, DomainScopeStripsThreadLeaves) {
  EXPECT_EQ(DomainScope("/machine/qemu-1-a.libvirt-qemu/emulator"),
            "/machine/qemu-1-a.libvirt-qemu");
  EXPECT_EQ(DomainScope("/machine/qemu-1-a.libvirt-qemu/vcpu12"), "/machine/qemu-1-a.libvirt-qemu");
  EXPECT_EQ(DomainScope("/machine/qemu-1-a.libvirt-qemu/iothread2"),
            "/machine/qemu-1-a.libvirt-qemu");
  EXPECT_EQ(DomainScope("/machine/qemu-1-a.libvirt-qemu"), "/machine/qemu-1-a.libvirt-qemu");
  // Nothing else is taken for a guest: thread-like names outside a guest directory stay.
  EXPECT_EQ(DomainScope("/machine/emulator"), "/machine/emulator");
  EXPECT_EQ(DomainScope("/system.slice/libvirtd.service"), "/system.slice/libvirtd.service");
  EXPECT_EQ(DomainScope("/machine/qemu-1-a.libvirt-qemu/emulator/x"),
            "/machine/qemu-1-a.libvirt-qemu/emulator/x");
}

// systemd hosts (Debian 12): machined's scope, libvirt's own groups nested in <scope>/libvirt
// (libvirt >= 7.1, docs/cgroups.rst). The scope is the ancestor of every QEMU thread.
TEST(Resolve, DomainScopeStripsSystemdLeaves) {
  const std::string scope = R"(/machine.slice/machine-qemu\x2d1\x2dvm1.scope)";
  EXPECT_EQ(DomainScope(scope + "/libvirt/emulator"), scope);
  EXPECT_EQ(DomainScope(scope + "/libvirt/vcpu0"), scope);
  EXPECT_EQ(DomainScope(scope + "/libvirt/vcpu15"), scope);
  EXPECT_EQ(DomainScope(scope + "/libvirt/iothread1"), scope);
  EXPECT_EQ(DomainScope(scope + "/libvirt"), scope);   // leader before libvirt moves its threads
  EXPECT_EQ(DomainScope(scope), scope);                // leader placed by machined
  EXPECT_EQ(DomainScope(scope + "/emulator"), scope);  // libvirt < 7.1: no "libvirt" level
  // Custom partitions are nested slices: still the scope.
  const std::string nested = R"(/machine.slice/machine-prod.slice/machine-qemu\x2d3\x2ddb.scope)";
  EXPECT_EQ(DomainScope(nested + "/libvirt/vcpu1"), nested);
  // Other scopes and units are not guests.
  EXPECT_EQ(DomainScope("/user.slice/user-0.slice/session-1.scope"),
            "/user.slice/user-0.slice/session-1.scope");
  EXPECT_EQ(DomainScope(scope + "/libvirt/other"), scope + "/libvirt/other");
}

TEST(Resolve, OwnProcessCgroupIsReadable) {
  auto path = ProcessCgroup2Path(::getpid());
  ASSERT_TRUE(path.has_value());
  EXPECT_EQ(path->front(), '/');
}

TEST(Resolve, IsQemuForChecksTheGuestName) {
  // Our own cmdline is not QEMU's: a recycled pid is never taken for a guest.
  EXPECT_FALSE(IsQemuFor(::getpid(), "sgt-unit"));
  EXPECT_EQ(QemuPid("no-such-guest", "/nonexistent"), std::nullopt);
}

}  // namespace
}  // namespace sovguard::libvirt

#include "enforcer/libvirt/status_json.h"

namespace sovguard::libvirt {
namespace {

TEST(StatusJson, CarriesWhatStatusShows) {
  GuestInfo g;
  g.domain = ParseDomainXml(base::ReadFileText(TestData("domain-live.xml")));
  g.qemu_pid = 42;
  g.cgroup = CgroupInfo{"/cg/machine/qemu-7-sgt-unit.libvirt-qemu/emulator",
                        "/cg/machine/qemu-7-sgt-unit.libvirt-qemu", 1234, 2};
  auto j = ToJson(g);
  EXPECT_EQ(j["name"], "sgt-unit");
  EXPECT_EQ(j["labels"]["state"], "valid");
  EXPECT_EQ(j["datasets"], nlohmann::json({"health-records", "tax.2024"}));
  EXPECT_EQ(j["taps"][0]["dev"], "sgt0");
  EXPECT_EQ(j["cgroup"]["id"], 1234);
  EXPECT_EQ(j["cgroup"]["level"], 2);
  g.cgroup.reset();
  g.domain.labels = ParseLabels("<x/>");
  j = ToJson(g);
  EXPECT_TRUE(j["cgroup"].is_null());
  EXPECT_EQ(j["labels"]["state"], "invalid");
  EXPECT_TRUE(j["labels"].contains("error"));
}

}  // namespace
}  // namespace sovguard::libvirt
