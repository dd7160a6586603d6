// What sovguard needs from a libvirt domain XML (live XML from virDomainGetXMLDesc, or the XML
// libvirt pipes into the qemu hook): identity, network taps, disks and sovguard labels.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "enforcer/libvirt/labels.h"

namespace sovguard::libvirt {

struct Interface {
  std::string type;   // libvirt interface type: ethernet, bridge, network, direct...
  std::string tap;    // <target dev=...> (a tap, or a macvtap for direct); empty when libvirt has
                      // not assigned one (inactive XML) or the type has no host device
  std::string mac;    // lower-case aa:bb:cc:dd:ee:ff
  std::string model;  // virtio, e1000...
  std::string alias;  // net0... (live XML), matches device-added/removed events

  // Empty when the guest's frames leave through a host tap device sovguard filters on its clsact
  // ingress (ethernet, bridge and network interfaces with a <target dev>; the daemon still checks
  // the kernel's device is a tun/tap in TAP mode); otherwise why sovguard cannot filter it.
  [[nodiscard]] std::string UncoveredReason() const;
  bool operator==(const Interface&) const = default;
};

struct Disk {
  std::string device;       // disk, cdrom, floppy, lun
  std::string source_type;  // file, block, network, volume, dir, nvme...
  std::string source;       // file path, block device path, "proto:name" for network, "pool/vol"
  std::string target;       // vda, sdb...
  bool readonly = false;
  bool shareable = false;
  std::string alias;
  std::string pool, volume;   // type volume: <source pool=... volume=...>
  std::string resolve_error;  // type volume: why libvirt could not resolve it (UncoveredReason)

  // Empty when sovguard's storage path can guard the disk: a file or block device (its opens and
  // I/O by QEMU are judged), a network disk (cgroup/connect judges its endpoint) or a pool volume
  // (resolved through libvirt to its file or block device first: ResolvedTo). Otherwise why not.
  [[nodiscard]] std::string UncoveredReason() const;
  // This disk as the file or block disk a pool volume resolved to (`path`; `type` is "file" or
  // "block", from virStorageVolGetInfo); the volume's pool/volume stay for messages.
  void ResolvedTo(const std::string& type, const std::string& path);
  bool operator==(const Disk&) const = default;
};

// A host device assigned to the guest (<hostdev>): a PCI function (NIC, NVMe controller, GPU),
// SCSI LUN, USB device, mediated device or a host block/char device. Its I/O never passes a tap
// or a file QEMU opens through the storage hooks.
struct Hostdev {
  std::string mode;    // subsystem, capabilities
  std::string type;    // pci, usb, scsi, scsi_host, mdev, storage, misc, net
  std::string source;  // what it is on the host: "pci 0000:06:02.0", "usb 0x1234:0x5678", ...
  std::string alias;   // hostdev0... (live XML)
  // Always non-empty: sovguard cannot show a host device carries neither network nor storage
  // traffic, so a guest holding a dataset may not have one.
  [[nodiscard]] std::string UncoveredReason() const;
  bool operator==(const Hostdev&) const = default;
};

struct DomainDescription {
  std::string name;
  std::string uuid;  // lower-case canonical form
  int id = -1;       // libvirt's running id (<domain id=...>), -1 when inactive
  std::vector<Interface> interfaces;
  std::vector<Disk> disks;
  std::vector<Hostdev> hostdevs;
  GuestLabels labels;
  // <resource><partition>: the cgroup partition libvirt places the guest in; empty when absent
  // (libvirt's default, /machine).
  std::string partition;

  // Every disk and host device sovguard cannot guard, one "disk vda (type nvme): why" /
  // "hostdev hostdev0 (pci 0000:06:02.0): why" each, in device order. Empty: all guarded.
  [[nodiscard]] std::vector<std::string> UncoveredDevices() const;

  // The target devices of interfaces with no UncoveredReason(), in device order (a direct
  // interface's macvtap is not one: its frames from the guest never pass a tap's ingress).
  [[nodiscard]] std::vector<std::string> Taps() const;
  bool operator==(const DomainDescription&) const = default;
};

class DomainXmlError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The <interface> element of `domain_xml` with this MAC and alias, with <link state='down'/>: what
// virDomainUpdateDeviceFlags takes to cut its link in QEMU (frames the guest sends on it are then
// dropped by QEMU, whatever the guest does). nullopt when no such interface is in the XML.
std::optional<std::string> InterfaceXmlWithLinkDown(std::string_view domain_xml,
                                                    const std::string& mac,
                                                    const std::string& alias);

// Throws DomainXmlError (with line/col or the missing element) when the XML is not a domain.
// Label problems never throw: they make labels.state kInvalid (fail closed, see labels.h).
DomainDescription ParseDomainXml(std::string_view xml);

}  // namespace sovguard::libvirt
