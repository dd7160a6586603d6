// sovguard's guest labels: which datasets a guest (and each of its disks) holds, stored in libvirt
// domain metadata under sovguard's own XML namespace. Schema (README.md "Guest labels"):
//
//   <sovguard:guest xmlns:sovguard="https://sovguard.eu/ns/guest/1">
//     <dataset id="health-records"/>                 guest-wide, any number
//     <disk target="vdb" dataset="health-records"/>  per disk (libvirt target dev), any number
//     <label key="team" value="clinic"/>             key=value for policy guest selectors
//   </sovguard:guest>
//
// set with
//   virsh metadata DOM --uri https://sovguard.eu/ns/guest/1 --key sovguard --live --config
//         --set '<guest><dataset id="health-records"/></guest>'
// Children may be unqualified (as virsh writes them) or in the sovguard namespace.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sovguard::libvirt {

inline constexpr std::string_view kLabelNamespace = "https://sovguard.eu/ns/guest/1";
inline constexpr std::string_view kLabelPrefix = "sovguard";  // virsh metadata --key

// A key=value label: a policy's `guests { label: "team=clinic" }` selects guests carrying it.
struct KeyValueLabel {
  std::string key;
  std::string value;
  [[nodiscard]] std::string Selector() const { return key + "=" + value; }  // "team=clinic"
  bool operator==(const KeyValueLabel&) const = default;
};

struct DiskLabel {
  std::string target;   // libvirt <target dev=...>, e.g. "vdb"
  std::string dataset;  // dataset id
  bool operator==(const DiskLabel&) const = default;
};

// Fail closed: a label that is present but cannot be understood is kInvalid, never "no label".
// The enforcer gives a kInvalid guest the strictest treatment (quarantine: no network egress
// except what the policy's quarantine rule allows, no dataset disks), and status shows `error`.
// kAbsent (no sovguard metadata at all) gets the policy's default for unlabelled guests.
enum class LabelState { kAbsent, kValid, kInvalid };

struct GuestLabels {
  LabelState state = LabelState::kAbsent;
  std::vector<std::string> datasets;  // guest-wide, in document order, no duplicates
  std::vector<DiskLabel> disks;
  std::vector<KeyValueLabel> labels;  // in document order, each key at most once
  std::string error;  // kInvalid: what is wrong and where ("line 3: <foo>: unknown element ...")

  // Every dataset id the guest holds (guest-wide and per disk), sorted, unique.
  [[nodiscard]] std::vector<std::string> AllDatasets() const;
  // The key=value labels as policy selectors ("team=clinic"), in document order.
  [[nodiscard]] std::vector<std::string> Selectors() const;
  bool operator==(const GuestLabels&) const = default;
};

std::string_view ToString(LabelState s);

// Parses the <sovguard:guest> element alone (what virDomainGetMetadata returns). Never throws:
// malformed XML, a wrong namespace, unknown elements/attributes, text, bad ids -> kInvalid with
// a precise error. Empty input -> kAbsent.
GuestLabels ParseLabels(std::string_view xml);

// The XML to pass to virDomainSetMetadata / `virsh metadata --set` (no namespace: libvirt adds it).
std::string SerializeLabels(const GuestLabels& labels);

// Dataset ids: 1..128 characters of [A-Za-z0-9._:-], starting with a letter or digit.
bool ValidDatasetId(std::string_view id);

// Label keys: 1..63 characters of [A-Za-z0-9._/-], starting with a letter or digit (never '=',
// so "key=value" splits one way). Values: 0..128 characters of [A-Za-z0-9._:/@+-].
bool ValidLabelKey(std::string_view key);
bool ValidLabelValue(std::string_view value);

}  // namespace sovguard::libvirt
