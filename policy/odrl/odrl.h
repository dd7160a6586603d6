// ODRL 2.2 (JSON-LD) usage policies -> sovguard policy. Handles the dialects seen in data spaces:
// EDC (`location eq eu`, operator as "eq" or {"@id": "odrl:eq"}), IDS (`spatial` with place URIs,
// `count`, `dateTime` windows), Gaia-X (`odrl:spatial isAnyOf/isNoneOf {"@list": [...]}`) and
// Catena-X (`cx-policy:` terms). Whatever cannot be enforced in the kernel (purpose, framework
// agreements, duties, use counts, ...) is listed as "not enforced by sovguard", never treated as
// satisfied; with strict mode its presence is an error.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "policy/schema/policy.pb.h"

namespace sovguard::policy {

struct OdrlImportOptions {
  std::string dataset_id;  // default: derived from the policy's @id / target
  bool strict = false;
};

struct OdrlImport {
  pb::Policy policy;                      // exactly one dataset, AUDIT mode
  std::vector<std::string> not_enforced;  // one line per term, with where it was found
  std::vector<std::string> errors;        // the import failed when not empty
  std::vector<std::string> notes;         // how terms were interpreted

  bool ok() const { return errors.empty(); }
};

OdrlImport ImportOdrl(std::string_view json_text, const OdrlImportOptions& options);

// The result as a commented text-format policy ready for `policy check`.
std::string RenderOdrlImport(const OdrlImport& import, std::string_view source_name);

}  // namespace sovguard::policy
