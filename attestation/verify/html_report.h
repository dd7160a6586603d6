// sovguard-verify --html: verdicts as one self-contained HTML page for auditors (inline CSS and
// SVG; no script, no external asset; a Content-Security-Policy forbidding both).
//
// The page starts with the verdicts and every failing check (node, check, reason code), so what
// failed is visible without scrolling; then per node every check with its reason code and
// certification clauses (ClausesFor), the enforcement timeline of the authentic sovguard log as a
// picture, the guests of the bound snapshot and the supplier jurisdictions of the measured
// components (Report::observed, when the verdict collected it).
//
// Every string from evidence (node, guest, dataset, policy and component names, details) is
// attacker-controlled: it is written only through HtmlEscape, as text or a quoted attribute.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "attestation/verify/verifier.h"

namespace sovguard::attestation::verify {

struct HtmlNode {
  std::string target;              // HOST:PORT of a live node, or the evidence file
  const Report* report = nullptr;  // null: no verdict (the node could not be asked)
  std::string error;               // why there is no verdict
};

// The page for one node or a fleet. `generated` is printed as the report's time (e.g. UTC ISO).
std::string RenderHtml(const std::vector<HtmlNode>& nodes, std::string_view generated);

// Text safe as HTML text and as a double- or single-quoted attribute value: & < > " ' as
// character references; invalid UTF-8 and control characters (but tab and newline) as U+FFFD;
// bidirectional formatting characters (which can make one name read as another) shown as
// "[U+202E]".
std::string HtmlEscape(std::string_view untrusted);

}  // namespace sovguard::attestation::verify
