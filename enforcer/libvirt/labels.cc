#include "enforcer/libvirt/labels.h"

#include <algorithm>
#include <set>

#include "enforcer/libvirt/label_node.h"
#include "enforcer/libvirt/xml_util.h"

namespace sovguard::libvirt {
namespace detail {

bool InLabelNamespace(const xmlNode* n) {
  return n->ns && n->ns->href &&
         std::string_view(reinterpret_cast<const char*>(n->ns->href)) == kLabelNamespace;
}

namespace {

std::string Where(const xmlNode* n) {
  return "line " + std::to_string(xmlGetLineNo(n)) + ": <" + std::string(xml::Name(n)) + ">";
}

// Only the listed attributes may appear; returns the first unknown one.
std::optional<std::string> UnknownAttr(const xmlNode* n,
                                       std::initializer_list<std::string_view> known) {
  for (const xmlAttr* a = n->properties; a; a = a->next) {
    std::string_view name(reinterpret_cast<const char*>(a->name));
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return std::string(name);
    }
  }
  return std::nullopt;
}

GuestLabels Invalid(std::string error) {
  GuestLabels l;
  l.state = LabelState::kInvalid;
  l.error = std::move(error);
  return l;
}

}  // namespace

GuestLabels LabelsFromElement(const xmlNode* guest) {
  GuestLabels labels;
  labels.state = LabelState::kValid;
  if (auto a = UnknownAttr(guest, {})) {
    return Invalid(Where(guest) + ": unknown attribute '" + *a + "'");
  }
  std::set<std::string> seen;
  std::set<std::string> keys;
  for (const xmlNode* c = guest->children; c; c = c->next) {
    if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
      std::string t = xml::Text(c);
      if (t.find_first_not_of(" \t\r\n") != std::string::npos) {
        return Invalid("line " + std::to_string(xmlGetLineNo(c)) + ": unexpected text '" + t +
                       "' in <guest>");
      }
      continue;
    }
    if (c->type == XML_COMMENT_NODE) {
      continue;
    }
    if (c->type != XML_ELEMENT_NODE) {
      return Invalid(Where(c) + ": unexpected node in <guest>");
    }
    // virsh writes children unqualified; an element in some other namespace is not ours to skip.
    if (c->ns && !InLabelNamespace(c)) {
      return Invalid(Where(c) + ": element in foreign namespace '" +
                     reinterpret_cast<const char*>(c->ns->href) + "'");
    }
    const std::string_view name = xml::Name(c);
    if (name == "dataset") {
      if (auto a = UnknownAttr(c, {"id"})) {
        return Invalid(Where(c) + ": unknown attribute '" + *a + "'");
      }
      auto id = xml::Attr(c, "id");
      if (!id) {
        return Invalid(Where(c) + ": missing attribute 'id'");
      }
      if (!ValidDatasetId(*id)) {
        return Invalid(Where(c) + ": invalid dataset id '" + *id + "'");
      }
      if (xml::Child(c, "dataset") || c->children) {
        return Invalid(Where(c) + ": must be empty");
      }
      if (seen.insert(*id).second) {
        labels.datasets.push_back(*id);
      }
    } else if (name == "disk") {
      if (auto a = UnknownAttr(c, {"target", "dataset"})) {
        return Invalid(Where(c) + ": unknown attribute '" + *a + "'");
      }
      auto target = xml::Attr(c, "target");
      auto dataset = xml::Attr(c, "dataset");
      if (!target || target->empty()) {
        return Invalid(Where(c) + ": missing attribute 'target'");
      }
      if (!dataset) {
        return Invalid(Where(c) + ": missing attribute 'dataset'");
      }
      if (!ValidDatasetId(*dataset)) {
        return Invalid(Where(c) + ": invalid dataset id '" + *dataset + "'");
      }
      if (c->children) {
        return Invalid(Where(c) + ": must be empty");
      }
      DiskLabel d{*target, *dataset};
      if (std::find(labels.disks.begin(), labels.disks.end(), d) == labels.disks.end()) {
        labels.disks.push_back(std::move(d));
      }
    } else if (name == "label") {
      if (auto a = UnknownAttr(c, {"key", "value"})) {
        return Invalid(Where(c) + ": unknown attribute '" + *a + "'");
      }
      auto key = xml::Attr(c, "key");
      auto value = xml::Attr(c, "value");
      if (!key) {
        return Invalid(Where(c) + ": missing attribute 'key'");
      }
      if (!value) {
        return Invalid(Where(c) + ": missing attribute 'value'");
      }
      if (!ValidLabelKey(*key)) {
        return Invalid(Where(c) + ": invalid label key '" + *key +
                       "' (1..63 of [A-Za-z0-9._/-], starting with a letter or digit)");
      }
      if (!ValidLabelValue(*value)) {
        return Invalid(Where(c) + ": invalid label value '" + *value +
                       "' (0..128 of [A-Za-z0-9._:/@+-])");
      }
      if (c->children) {
        return Invalid(Where(c) + ": must be empty");
      }
      // Two values for one key would make selection depend on which one a reader takes.
      if (!keys.insert(*key).second) {
        return Invalid(Where(c) + ": label key '" + *key + "' given twice");
      }
      labels.labels.push_back({*key, *value});
    } else {
      return Invalid(Where(c) +
                     ": unknown element (expected <dataset id=...>, "
                     "<disk target=... dataset=...> or <label key=... value=...>)");
    }
  }
  return labels;
}

}  // namespace detail

std::vector<std::string> GuestLabels::AllDatasets() const {
  std::set<std::string> all(datasets.begin(), datasets.end());
  for (const auto& d : disks) {
    all.insert(d.dataset);
  }
  return {all.begin(), all.end()};
}

std::vector<std::string> GuestLabels::Selectors() const {
  std::vector<std::string> out;
  out.reserve(labels.size());
  for (const auto& l : labels) {
    out.push_back(l.Selector());
  }
  return out;
}

std::string_view ToString(LabelState s) {
  switch (s) {
    case LabelState::kAbsent:
      return "absent";
    case LabelState::kValid:
      return "valid";
    case LabelState::kInvalid:
      return "invalid";
  }
  return "invalid";
}

bool ValidDatasetId(std::string_view id) {
  if (id.empty() || id.size() > 128) {
    return false;
  }
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(id.front())) {
    return false;
  }
  return std::all_of(id.begin(), id.end(), [&](char c) {
    return alnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
  });
}

namespace {
bool Alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
}  // namespace

bool ValidLabelKey(std::string_view key) {
  if (key.empty() || key.size() > 63 || !Alnum(key.front())) {
    return false;
  }
  return std::all_of(key.begin(), key.end(), [](char c) {
    return Alnum(c) || c == '.' || c == '_' || c == '/' || c == '-';
  });
}

bool ValidLabelValue(std::string_view value) {
  if (value.size() > 128) {
    return false;
  }
  return std::all_of(value.begin(), value.end(), [](char c) {
    return Alnum(c) || c == '.' || c == '_' || c == ':' || c == '/' || c == '@' || c == '+' ||
           c == '-';
  });
}

GuestLabels ParseLabels(std::string_view text) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return {};
  }
  std::string error;
  xml::DocPtr doc = xml::Parse(text, error);
  if (!doc) {
    GuestLabels l;
    l.state = LabelState::kInvalid;
    l.error = "sovguard label: " + error;
    return l;
  }
  const xmlNode* root = xmlDocGetRootElement(doc.get());
  if (!root || xml::Name(root) != "guest" || !detail::InLabelNamespace(root)) {
    GuestLabels l;
    l.state = LabelState::kInvalid;
    l.error = "sovguard label: root must be <guest> in namespace " + std::string(kLabelNamespace) +
              ", got <" + std::string(xml::Name(root)) + ">";
    return l;
  }
  return detail::LabelsFromElement(root);
}

std::string SerializeLabels(const GuestLabels& labels) {
  // Ids are validated to [A-Za-z0-9._:-] so they need no escaping; disk targets do.
  auto escape = [](std::string_view s) {
    std::string out;
    for (char c : s) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&quot;";
          break;
        case '\'':
          out += "&apos;";
          break;
        default:
          out += c;
      }
    }
    return out;
  };
  std::string xml = "<guest>";
  for (const auto& d : labels.datasets) {
    xml += "<dataset id=\"" + escape(d) + "\"/>";
  }
  for (const auto& d : labels.disks) {
    xml += "<disk target=\"" + escape(d.target) + "\" dataset=\"" + escape(d.dataset) + "\"/>";
  }
  for (const auto& l : labels.labels) {
    xml += "<label key=\"" + escape(l.key) + "\" value=\"" + escape(l.value) + "\"/>";
  }
  xml += "</guest>";
  return xml;
}

}  // namespace sovguard::libvirt
