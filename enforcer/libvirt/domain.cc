#include "enforcer/libvirt/domain.h"

#include <algorithm>
#include <cctype>

#include "enforcer/libvirt/label_node.h"
#include "enforcer/libvirt/xml_util.h"

namespace sovguard::libvirt {

std::string Interface::UncoveredReason() const {
  if (type == "ethernet" || type == "bridge" || type == "network") {
    return tap.empty() ? "no host tap device (<target dev>) known for it" : "";
  }
  if (type == "direct") {
    return "macvtap " + (tap.empty() ? std::string("device") : tap) +
           ": its frames from the guest leave through the host NIC, past no tap sovguard filters";
  }
  if (type == "hostdev" || type == "vdpa") {
    return "a host device (SR-IOV/vDPA) assigned to the guest: its frames never pass a host "
           "network device sovguard filters";
  }
  if (type == "user") {
    return "QEMU's user-mode network stack: its frames leave as QEMU's own sockets";
  }
  if (type == "udp" || type == "mcast" || type == "server" || type == "client") {
    return "a QEMU socket backend: its frames leave as QEMU's own UDP/TCP sockets";
  }
  if (type == "vhostuser") {
    return "vhost-user: its frames go to another process's shared memory";
  }
  return "interface type '" + type + "' is not one sovguard can filter";
}

std::string Disk::UncoveredReason() const {
  if (source_type == "file" || source_type == "block" || source_type == "network") return "";
  if (source_type == "volume") {
    return "storage pool volume " + pool + "/" + volume +
           " was not resolved through libvirt to a file or block device" +
           (resolve_error.empty() ? std::string() : ": " + resolve_error);
  }
  if (source_type == "dir") {
    return "a host directory as a virtual FAT disk: QEMU reads every file below " + source +
           ", none of them a volume sovguard protects";
  }
  if (source_type == "nvme") {
    return "a host NVMe controller driven by QEMU through VFIO: its I/O passes no file or block "
           "device the storage hooks judge";
  }
  if (source_type == "vhostuser" || source_type == "vhostvdpa") {
    return "a " + source_type + " disk: its bytes are served by another process or device";
  }
  return "disk type '" + source_type + "' is not one sovguard can guard";
}

void Disk::ResolvedTo(const std::string& type, const std::string& path) {
  source_type = type;
  source = path;
}

std::string Hostdev::UncoveredReason() const {
  return "a host device assigned to the guest: its I/O passes no tap and no storage hook, and "
         "sovguard cannot show it is neither a network nor a storage device";
}

std::vector<std::string> DomainDescription::UncoveredDevices() const {
  std::vector<std::string> out;
  for (const auto& d : disks) {
    if (const auto why = d.UncoveredReason(); !why.empty()) {
      out.push_back("disk " + (d.target.empty() ? std::string("?") : d.target) + " (type " +
                    d.source_type + "): " + why);
    }
  }
  for (const auto& h : hostdevs) {
    out.push_back("hostdev" + (h.alias.empty() ? std::string() : " " + h.alias) + " (" + h.source +
                  "): " + h.UncoveredReason());
  }
  return out;
}

std::vector<std::string> DomainDescription::Taps() const {
  std::vector<std::string> taps;
  for (const auto& i : interfaces) {
    if (i.UncoveredReason().empty()) {
      taps.push_back(i.tap);
    }
  }
  return taps;
}

namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string AttrOr(const xmlNode* n, const char* name, std::string fallback = {}) {
  if (!n) {
    return fallback;
  }
  return xml::Attr(n, name).value_or(std::move(fallback));
}

Interface ParseInterface(const xmlNode* n) {
  Interface i;
  i.type = AttrOr(n, "type");
  i.tap = AttrOr(xml::Child(n, "target"), "dev");
  i.mac = Lower(AttrOr(xml::Child(n, "mac"), "address"));
  i.model = AttrOr(xml::Child(n, "model"), "type");
  i.alias = AttrOr(xml::Child(n, "alias"), "name");
  return i;
}

Disk ParseDisk(const xmlNode* n) {
  Disk d;
  d.device = AttrOr(n, "device", "disk");
  d.source_type = AttrOr(n, "type", "file");
  if (const xmlNode* s = xml::Child(n, "source")) {
    if (d.source_type == "file") {
      d.source = AttrOr(s, "file");
    } else if (d.source_type == "block") {
      d.source = AttrOr(s, "dev");
    } else if (d.source_type == "dir") {
      d.source = AttrOr(s, "dir");
    } else if (d.source_type == "network") {
      d.source = AttrOr(s, "protocol") + ":" + AttrOr(s, "name");
    } else if (d.source_type == "volume") {
      d.pool = AttrOr(s, "pool");
      d.volume = AttrOr(s, "volume");
      d.source = d.pool + "/" + d.volume;
    } else if (d.source_type == "nvme") {
      const xmlNode* a = xml::Child(s, "address");
      d.source = "nvme " + AttrOr(a, "domain") + ":" + AttrOr(a, "bus") + ":" + AttrOr(a, "slot") +
                 "." + AttrOr(a, "function") + " namespace " + AttrOr(s, "namespace", "1");
    } else {
      d.source = AttrOr(s, "file", AttrOr(s, "dev"));
    }
  }
  d.target = AttrOr(xml::Child(n, "target"), "dev");
  d.readonly = xml::Child(n, "readonly") != nullptr;
  d.shareable = xml::Child(n, "shareable") != nullptr;
  d.alias = AttrOr(xml::Child(n, "alias"), "name");
  return d;
}

Hostdev ParseHostdev(const xmlNode* n) {
  Hostdev h;
  h.mode = AttrOr(n, "mode", "subsystem");
  h.type = AttrOr(n, "type");
  h.alias = AttrOr(xml::Child(n, "alias"), "name");
  const xmlNode* s = xml::Child(n, "source");
  const xmlNode* a = s ? xml::Child(s, "address") : nullptr;
  if (h.type == "pci" && a) {
    h.source = "pci " + AttrOr(a, "domain", "0x0000") + ":" + AttrOr(a, "bus") + ":" +
               AttrOr(a, "slot") + "." + AttrOr(a, "function");
  } else if (h.type == "usb" && s && xml::Child(s, "vendor")) {
    h.source = "usb " + AttrOr(xml::Child(s, "vendor"), "id") + ":" +
               AttrOr(xml::Child(s, "product"), "id");
  } else if (h.type == "usb" && a) {
    h.source = "usb bus " + AttrOr(a, "bus") + " device " + AttrOr(a, "device");
  } else if (h.type == "scsi" && s) {
    const xmlNode* ad = xml::Child(s, "adapter");
    h.source = "scsi " + AttrOr(ad, "name", AttrOr(s, "protocol") + ":" + AttrOr(s, "name"));
  } else if (h.type == "mdev" && a) {
    h.source = "mdev " + AttrOr(a, "uuid");
  } else if (s && xml::Child(s, "block")) {
    h.source = h.type + " " + xml::Text(xml::Child(s, "block"));
  } else if (s && xml::Child(s, "char")) {
    h.source = h.type + " " + xml::Text(xml::Child(s, "char"));
  } else if (s && xml::Child(s, "interface")) {
    h.source = h.type + " " + xml::Text(xml::Child(s, "interface"));
  } else {
    h.source = h.type.empty() ? std::string("unknown") : h.type;
  }
  return h;
}

}  // namespace

std::optional<std::string> InterfaceXmlWithLinkDown(std::string_view domain_xml,
                                                    const std::string& mac,
                                                    const std::string& alias) {
  std::string error;
  xml::DocPtr doc = xml::Parse(domain_xml, error);
  const xmlNode* root = doc ? xmlDocGetRootElement(doc.get()) : nullptr;
  const xmlNode* devices = root ? xml::Child(root, "devices") : nullptr;
  const xmlNode* found = nullptr;
  xml::ForEachElement(devices, [&](const xmlNode* dev) {
    if (!found && xml::Name(dev) == "interface" &&
        Lower(AttrOr(xml::Child(dev, "mac"), "address")) == mac &&
        AttrOr(xml::Child(dev, "alias"), "name") == alias) {
      found = dev;
    }
  });
  if (!found) {
    return std::nullopt;
  }
  // The tree is ours: the parsers' helpers hand out const nodes.
  auto* nic = const_cast<xmlNode*>(found);
  auto* link = const_cast<xmlNode*>(xml::Child(nic, "link"));
  if (!link) {
    link = xmlNewChild(nic, nullptr, reinterpret_cast<const xmlChar*>("link"), nullptr);
  }
  xmlSetProp(link, reinterpret_cast<const xmlChar*>("state"),
             reinterpret_cast<const xmlChar*>("down"));
  return xml::Serialize(doc.get(), nic);
}

DomainDescription ParseDomainXml(std::string_view text) {
  std::string error;
  xml::DocPtr doc = xml::Parse(text, error);
  if (!doc) {
    throw DomainXmlError("domain XML: " + error);
  }
  const xmlNode* root = xmlDocGetRootElement(doc.get());
  if (!root || xml::Name(root) != "domain") {
    throw DomainXmlError("domain XML: root element must be <domain>, got <" +
                         std::string(xml::Name(root)) + ">");
  }
  DomainDescription d;
  const xmlNode* name = xml::Child(root, "name");
  const xmlNode* uuid = xml::Child(root, "uuid");
  if (!name || xml::Text(name).empty()) {
    throw DomainXmlError("domain XML: missing <name>");
  }
  if (!uuid || xml::Text(uuid).empty()) {
    throw DomainXmlError("domain XML: missing <uuid>");
  }
  d.name = xml::Text(name);
  d.uuid = Lower(xml::Text(uuid));
  if (auto id = xml::Attr(root, "id")) {
    try {
      d.id = std::stoi(*id);
    } catch (const std::exception&) {
      throw DomainXmlError("domain XML: <domain id='" + *id + "'> is not a number");
    }
  }
  if (const xmlNode* devices = xml::Child(root, "devices")) {
    xml::ForEachElement(devices, [&](const xmlNode* dev) {
      if (xml::Name(dev) == "interface") {
        d.interfaces.push_back(ParseInterface(dev));
      }
      if (xml::Name(dev) == "disk") {
        d.disks.push_back(ParseDisk(dev));
      }
      if (xml::Name(dev) == "hostdev") {
        d.hostdevs.push_back(ParseHostdev(dev));
      }
    });
  }
  if (const xmlNode* resource = xml::Child(root, "resource")) {
    if (const xmlNode* partition = xml::Child(resource, "partition")) {
      d.partition = xml::Text(partition);
    }
  }
  // Labels: the <guest> element in sovguard's namespace under <metadata>. Two of them would be
  // ambiguous: fail closed.
  if (const xmlNode* md = xml::Child(root, "metadata")) {
    int found = 0;
    xml::ForEachElement(md, [&](const xmlNode* e) {
      if (!detail::InLabelNamespace(e)) {
        return;
      }
      ++found;
      if (found == 1 && xml::Name(e) == "guest") {
        d.labels = detail::LabelsFromElement(e);
      } else {
        d.labels = GuestLabels{};
        d.labels.state = LabelState::kInvalid;
        d.labels.error = "line " + std::to_string(xmlGetLineNo(e)) + ": <" +
                         std::string(xml::Name(e)) +
                         ">: expected exactly one <guest> element in the sovguard namespace";
      }
    });
  }
  return d;
}

}  // namespace sovguard::libvirt
