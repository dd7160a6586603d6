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
      d.source = AttrOr(s, "pool") + "/" + AttrOr(s, "volume");
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
    });
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
