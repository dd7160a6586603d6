#include "attestation/verify/html_report.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>

namespace sovguard::attestation::verify {
namespace {

// No script, no frame, no remote anything: even a string that escaped HtmlEscape could not run.
constexpr std::string_view kHead = R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; base-uri 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>sovguard verification report</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:12px 16px}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:17px;margin:0 0 8px}
h3{font-size:15px;margin:16px 0 6px}
.meta{color:#57606a;margin:0 0 10px}
.badge{display:inline-block;padding:1px 8px;border-radius:4px;font-weight:700;color:#fff;font-size:13px}
.b-pass{background:#1a7f37}.b-fail{background:#b00020}.b-error{background:#6e3b00}.b-waived{background:#9a6700}.b-na{background:#6e7781}
#summary{border:2px solid #b00020;background:#fdecee;border-radius:6px;padding:10px 12px;margin:0 0 14px}
#summary.all-pass{border-color:#1a7f37;background:#e9f7ee}
#summary table{border-collapse:collapse;width:100%}
#summary td{padding:3px 6px;vertical-align:top;border-top:1px solid #f3c2c8}
.code{display:inline-block;margin:1px 4px 1px 0;padding:0 6px;border-radius:3px;background:#fff;border:1px solid #b00020;font:12px/1.6 ui-monospace,"DejaVu Sans Mono",monospace;white-space:nowrap}
.code.dep{border-color:#aab;color:#57606a}
.node{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px;margin:0 0 14px}
.node.fail{border-left:6px solid #b00020}.node.pass{border-left:6px solid #1a7f37}.node.error{border-left:6px solid #6e3b00}
table.grid{border-collapse:collapse;width:100%;font-size:13px}
table.grid th{text-align:left;background:#eef1f4;padding:3px 6px}
table.grid td{padding:3px 6px;border-top:1px solid #e4e8ec;vertical-align:top}
tr.s-fail td{background:#fdecee}tr.s-waived td{background:#fff6dd}
td.detail{word-break:break-word;overflow-wrap:anywhere;color:#24292f;font-size:12px}
td.mono,.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.clauses{color:#57606a;font-size:12px;width:210px}
table.checks td.mono{white-space:nowrap}
.note{color:#57606a;font-style:italic}
svg.timeline{width:100%;height:auto;background:#fbfcfd;border:1px solid #e4e8ec;border-radius:4px}
svg text{font:12px system-ui,"DejaVu Sans",sans-serif;fill:#1b1f24}
svg .axis{stroke:#aab;stroke-width:1}
svg .lane{fill:#f1f3f5}
.legend span{margin-right:14px;font-size:12px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px;vertical-align:-1px}
</style>
</head>
<body>
<main>
)";

// One code point at s[i], advancing i; nullopt (and one byte consumed) for invalid UTF-8.
std::optional<uint32_t> NextCodePoint(std::string_view s, size_t& i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  size_t n = 0;
  uint32_t cp = 0, min = 0;
  if (c < 0x80) {
    ++i;
    return c;
  } else if ((c & 0xE0) == 0xC0) {
    n = 1, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 2, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 3, cp = c & 0x07, min = 0x10000;
  } else {
    ++i;
    return std::nullopt;
  }
  for (size_t k = 1; k <= n; ++k) {
    if (i + k >= s.size() || (b(i + k) & 0xC0) != 0x80) {
      ++i;
      return std::nullopt;
    }
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return std::nullopt;
  }
  i += n + 1;
  return cp;
}

bool IsBidiControl(uint32_t cp) {
  return cp == 0x061C || cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

// At most `max` code points of `s` (whole code points), "…" when cut. For labels in the picture.
std::string Shorten(std::string_view s, size_t max) {
  size_t i = 0, n = 0;
  while (i < s.size() && n < max) {
    NextCodePoint(s, i);
    ++n;
  }
  if (i >= s.size()) return std::string(s);
  return std::string(s.substr(0, i)) + "\u2026";
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string E(std::string_view s) {
  return HtmlEscape(s);
}

const char* StatusClass(Status s) {
  switch (s) {
    case Status::kPass:
      return "pass";
    case Status::kFail:
      return "fail";
    case Status::kWaived:
      return "waived";
    case Status::kNotApplicable:
      return "na";
  }
  return "fail";
}

std::string Badge(std::string_view cls, std::string_view text) {
  return "<span class=\"badge b-" + std::string(cls) + "\">" + std::string(text) + "</span>";
}

std::string NodeTitle(const HtmlNode& n) {
  std::string t;
  if (n.report && !n.report->node.empty()) t = E(n.report->node);
  if (!n.target.empty())
    t += (t.empty() ? "" : " ") + std::string("<span class=\"mono\">(") + E(n.target) + ")</span>";
  return t.empty() ? "<span class=\"note\">unnamed node</span>" : t;
}

// The picture: one lane for sovguardd (starts, recoveries), one for policies, one per guest
// (a bar while covered), one for downgrades, one for tamper findings and releases; x is the
// record number in the authentic log (the log orders events; it carries no wall clock).
std::string TimelineSvg(const Observations& o) {
  using K = Observations::Kind;
  constexpr double kLabelW = 210, kLeft = 220, kRight = 1170, kLaneH = 26, kTop = 8;
  constexpr size_t kMaxGuestLanes = 24;
  const double n = static_cast<double>(std::max<size_t>(o.cel_records, 1));
  const auto x = [&](size_t rec) {
    return kLeft + (static_cast<double>(rec) + 0.5) / n * (kRight - kLeft);
  };
  std::map<std::string, std::string> guest_name;
  for (const auto& g : o.guests) guest_name[g.uuid] = g.name;
  // Guest lanes in order of first appearance.
  std::vector<std::string> guests;
  for (const auto& e : o.timeline)
    if ((e.kind == K::kGuestCovered || e.kind == K::kGuestReleased || e.kind == K::kGuestOther) &&
        std::find(guests.begin(), guests.end(), e.name) == guests.end())
      guests.push_back(e.name);
  const size_t shown_guests = std::min(guests.size(), kMaxGuestLanes);
  const size_t lanes = 4 + std::max<size_t>(shown_guests, 1);
  const double height = kTop + static_cast<double>(lanes) * kLaneH + 30;
  std::string s =
      "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 1180 " +
      Num(height) + "\" role=\"img\" aria-label=\"enforcement timeline\">";
  const auto lane_y = [&](size_t lane) { return kTop + static_cast<double>(lane) * kLaneH; };
  const auto lane = [&](size_t i, const std::string& label_html, const std::string& title) {
    const double y = lane_y(i);
    s += "<rect class=\"lane\" x=\"" + Num(kLeft) + "\" y=\"" + Num(y + 3) + "\" width=\"" +
         Num(kRight - kLeft) + "\" height=\"" + Num(kLaneH - 6) + "\"/>";
    s += "<text x=\"" + Num(kLabelW) + "\" y=\"" + Num(y + kLaneH / 2 + 4) +
         "\" text-anchor=\"end\"><title>" + title + "</title>" + label_html + "</text>";
  };
  const size_t kDaemonLane = 0, kPolicyLane = 1, kGuestLane0 = 2;
  const size_t kDowngradeLane = kGuestLane0 + std::max<size_t>(shown_guests, 1);
  const size_t kTamperLane = kDowngradeLane + 1;
  lane(kDaemonLane, "sovguardd", "daemon starts and crash recoveries");
  lane(kPolicyLane, "policy applied", "policy bundles that became active");
  if (guests.empty()) lane(kGuestLane0, "guests", "no guest event in the log");
  for (size_t g = 0; g < shown_guests; ++g) {
    const auto it = guest_name.find(guests[g]);
    const std::string name = it != guest_name.end() && !it->second.empty() ? it->second : guests[g];
    lane(kGuestLane0 + g, "guest " + E(Shorten(name, 24)),
         "guest " + E(name) + " (" + E(guests[g]) + ")");
  }
  lane(kDowngradeLane, "downgrades", "mechanism downgrades");
  lane(kTamperLane, "tamper, releases", "tamper findings and releases");
  const auto mid = [&](size_t l) { return lane_y(l) + kLaneH / 2; };
  const auto title = [](const Observations::Event& e, std::string_view what) {
    std::string t = "<title>record " + std::to_string(e.record) + ": " + std::string(what);
    if (!e.name.empty()) t += " " + E(e.name);
    if (!e.detail.empty()) t += " (" + E(e.detail) + ")";
    return t + "</title>";
  };
  // Guest bars: covered until released (or the end of the log).
  std::map<std::string, size_t> covered_since;
  const auto bar = [&](const std::string& uuid, size_t from, size_t to, bool open) {
    const auto it =
        std::find(guests.begin(), guests.begin() + static_cast<long>(shown_guests), uuid);
    if (it == guests.begin() + static_cast<long>(shown_guests)) return;
    const size_t l = kGuestLane0 + static_cast<size_t>(it - guests.begin());
    const double x0 = x(from), x1 = open ? kRight : x(to);
    s += "<rect x=\"" + Num(x0) + "\" y=\"" + Num(lane_y(l) + 6) + "\" width=\"" +
         Num(std::max(x1 - x0, 2.0)) + "\" height=\"" + Num(kLaneH - 12) +
         "\" rx=\"3\" fill=\"#2da44e\"><title>covered from record " + std::to_string(from) +
         (open ? " to the end of the log" : " to record " + std::to_string(to)) + "</title></rect>";
  };
  // A filled path starting at the top centre of `in_lane` (7 px above its middle) at record `e`.
  const auto glyph = [&](const Observations::Event& e, size_t in_lane, std::string_view path,
                         std::string_view fill, std::string_view label) {
    s += "<path d=\"M" + Num(x(e.record)) + " " + Num(mid(in_lane) - 7) + std::string(path) +
         "\" fill=\"" + std::string(fill) + "\">" + title(e, label) + "</path>";
  };
  for (const auto& e : o.timeline) {
    const double cx = x(e.record);
    switch (e.kind) {
      case K::kDaemonStart:
      case K::kRecovered:
        s += "<circle cx=\"" + Num(cx) + "\" cy=\"" + Num(mid(kDaemonLane)) + "\" r=\"5\" fill=\"" +
             (e.kind == K::kRecovered ? "#fff\" stroke=\"#0969da\" stroke-width=\"2" : "#0969da") +
             "\">" + title(e, e.kind == K::kRecovered ? "recovered" : "daemon start") + "</circle>";
        break;
      case K::kPolicyApplied:
        glyph(e, kPolicyLane, "l6 7l-6 7l-6 -7z", "#8250df", "policy applied");
        break;
      case K::kGuestCovered:
        if (!covered_since.count(e.name)) covered_since[e.name] = e.record;
        break;
      case K::kGuestReleased:
        if (auto it = covered_since.find(e.name); it != covered_since.end()) {
          bar(e.name, it->second, e.record, false);
          covered_since.erase(it);
        }
        break;
      case K::kGuestOther:
        break;
      case K::kDowngrade:
        glyph(e, kDowngradeLane, "l7 13h-14z", "#d4a72c", "mechanism downgraded:");
        break;
      case K::kTamper:
      case K::kRelease: {
        const double y = mid(kTamperLane);
        if (e.kind == K::kTamper)
          s += "<path d=\"M" + Num(cx - 6) + " " + Num(y - 6) +
               "l12 12m0 -12l-12 12\" stroke=\"#b00020\" stroke-width=\"3\">" +
               title(e, "tamper finding") + "</path>";
        else
          s += "<rect x=\"" + Num(cx - 5) + "\" y=\"" + Num(y - 5) +
               "\" width=\"10\" height=\"10\" fill=\"#b00020\">" + title(e, "release") + "</rect>";
        break;
      }
    }
  }
  for (const auto& [uuid, from] : covered_since) bar(uuid, from, 0, true);
  // Markers for guest events other than covered/released, drawn over the bars.
  for (const auto& e : o.timeline)
    if (e.kind == K::kGuestOther) {
      const auto it =
          std::find(guests.begin(), guests.begin() + static_cast<long>(shown_guests), e.name);
      if (it == guests.begin() + static_cast<long>(shown_guests)) continue;
      const double y = mid(kGuestLane0 + static_cast<size_t>(it - guests.begin()));
      s += "<rect x=\"" + Num(x(e.record) - 2) + "\" y=\"" + Num(y - 8) +
           "\" width=\"4\" height=\"16\" fill=\"#57606a\">" + title(e, "guest event") + "</rect>";
    }
  // Axis: record numbers.
  const double ay = lane_y(lanes) + 4;
  s += "<line class=\"axis\" x1=\"" + Num(kLeft) + "\" y1=\"" + Num(ay) + "\" x2=\"" + Num(kRight) +
       "\" y2=\"" + Num(ay) + "\"/>";
  const size_t last = o.cel_records ? o.cel_records - 1 : 0;
  std::vector<size_t> ticks = {0, last / 4, last / 2, last * 3 / 4, last};
  ticks.erase(std::unique(ticks.begin(), ticks.end()), ticks.end());
  for (size_t t : ticks)
    s += "<line class=\"axis\" x1=\"" + Num(x(t)) + "\" y1=\"" + Num(ay) + "\" x2=\"" + Num(x(t)) +
         "\" y2=\"" + Num(ay + 5) + "\"/><text x=\"" + Num(x(t)) + "\" y=\"" + Num(ay + 18) +
         "\" text-anchor=\"middle\">" + std::to_string(t) + "</text>";
  s += "<text x=\"" + Num(kLabelW) + "\" y=\"" + Num(ay + 18) +
       "\" text-anchor=\"end\">log record</text></svg>\n";
  if (guests.size() > shown_guests)
    s += "<p class=\"note\">" + std::to_string(guests.size() - shown_guests) +
         " more guests are in the log (listed in the events below), not drawn.</p>\n";
  s += "<p class=\"legend\"><span><i class=\"sw\" style=\"background:#0969da\"></i>daemon "
       "start</span>"
       "<span><i class=\"sw\" style=\"background:#8250df\"></i>policy applied</span>"
       "<span><i class=\"sw\" style=\"background:#2da44e\"></i>guest covered</span>"
       "<span><i class=\"sw\" style=\"background:#d4a72c\"></i>downgrade</span>"
       "<span><i class=\"sw\" style=\"background:#b00020\"></i>tamper finding (cross), release "
       "(square)</span></p>\n";
  return s;
}

std::string_view KindText(Observations::Kind k) {
  using K = Observations::Kind;
  switch (k) {
    case K::kDaemonStart:
      return "daemon start";
    case K::kPolicyApplied:
      return "policy applied";
    case K::kGuestCovered:
      return "guest covered";
    case K::kGuestReleased:
      return "guest released";
    case K::kGuestOther:
      return "guest event";
    case K::kDowngrade:
      return "mechanism downgraded";
    case K::kTamper:
      return "tamper finding";
    case K::kRelease:
      return "release";
    case K::kRecovered:
      return "recovered";
  }
  return "event";
}

// The reason the named check did not pass, for "not shown because" notes.
std::string WhyNot(const Report& r, std::string_view check) {
  const CheckResult* c = r.Find(check);
  if (!c) return "no " + std::string(check) + " check in this verdict";
  return std::string(check) + " " + E(c->reason);
}

void NodeSection(std::string& out, const HtmlNode& n, size_t index) {
  const std::string id = "node-" + std::to_string(index);
  if (!n.report) {
    out += "<section class=\"node error\" id=\"" + id + "\"><h2>" + Badge("error", "ERROR") + " " +
           NodeTitle(n) + "</h2><p>No verdict: " + E(n.error) + "</p></section>\n";
    return;
  }
  const Report& r = *n.report;
  const bool pass = r.passed();
  out += "<section class=\"node " + std::string(pass ? "pass" : "fail") + "\" id=\"" + id +
         "\"><h2>" + Badge(pass ? "pass" : "fail", pass ? "PASS" : "FAIL") + " " + NodeTitle(n) +
         "</h2>\n";
  if (!r.waivers.empty()) {
    out += "<p>Waived by the auditor (accepted unmet requirements):";
    for (const auto& w : r.waivers) out += " <span class=\"mono\">" + E(w) + "</span>";
    out += "</p>\n";
  }
  out +=
      "<table class=\"grid checks\"><thead><tr><th>status</th><th>check</th><th>reason "
      "code</th><th>certification clauses</th><th>detail</th></tr></thead><tbody>\n";
  for (const auto& c : r.checks) {
    std::string clauses;
    for (const auto cl : ClausesFor(c.name)) clauses += (clauses.empty() ? "" : "; ") + E(cl);
    out += "<tr class=\"s-" + std::string(StatusClass(c.status)) + "\"><td>" +
           Badge(StatusClass(c.status), StatusName(c.status)) + "</td><td class=\"mono\">" +
           E(c.name) + "</td><td class=\"mono\">" + E(c.reason) + "</td><td class=\"clauses\">" +
           clauses + "</td><td class=\"detail\">" + E(c.detail) + "</td></tr>\n";
  }
  out += "</tbody></table>\n";
  out += "<h3>Enforcement timeline</h3>\n";
  if (!r.observed) {
    out += "<p class=\"note\">Not collected for this verdict.</p>\n";
  } else if (!r.observed->cel_authentic) {
    out += "<p class=\"note\">No timeline: sovguard's log is not authentic (" +
           WhyNot(r, "eventlog.cel.replay") + "); nothing it says is shown.</p>\n";
  } else {
    const Observations& o = *r.observed;
    out +=
        "<p>" + std::to_string(o.cel_records) +
        " records in the log replayed to the signed PCR; the enforcement events among them:</p>\n";
    out += TimelineSvg(o);
    constexpr size_t kMaxRows = 200;
    out +=
        "<table class=\"grid events\"><thead><tr><th>record</th><th>event</th><th>subject</th>"
        "<th>detail</th></tr></thead><tbody>\n";
    std::map<std::string, std::string> names;
    for (const auto& g : o.guests) names[g.uuid] = g.name;
    for (size_t i = 0; i < o.timeline.size() && i < kMaxRows; ++i) {
      const auto& e = o.timeline[i];
      std::string subject = E(e.name);
      if (auto it = names.find(e.name); it != names.end() && !it->second.empty())
        subject = E(it->second) + " <span class=\"mono\">" + subject + "</span>";
      out += "<tr><td>" + std::to_string(e.record) + "</td><td>" + std::string(KindText(e.kind)) +
             "</td><td>" + subject + "</td><td class=\"detail\">" + E(e.detail) + "</td></tr>\n";
    }
    out += "</tbody></table>\n";
    if (o.timeline.size() > kMaxRows)
      out += "<p class=\"note\">" + std::to_string(o.timeline.size() - kMaxRows) +
             " more events (all are in the picture).</p>\n";
  }
  out += "<h3>Guests and datasets</h3>\n";
  if (r.observed && r.observed->snapshot_bound) {
    const Observations& o = *r.observed;
    if (!o.policy_bundle_id.empty())
      out += "<p>Policy bundle: <span class=\"mono\">" + E(o.policy_bundle_id) + "</span></p>\n";
    if (o.guests.empty()) {
      out += "<p>The node reports no guest.</p>\n";
    } else {
      out +=
          "<table class=\"grid guests\"><thead><tr><th>guest</th><th>uuid</th><th>datasets</th>"
          "</tr></thead><tbody>\n";
      for (const auto& g : o.guests) {
        std::string ds;
        for (const auto& d : g.datasets) ds += (ds.empty() ? "" : ", ") + E(d);
        out += "<tr><td>" + E(g.name) + "</td><td class=\"mono\">" + E(g.uuid) + "</td><td>" + ds +
               "</td></tr>\n";
      }
      out += "</tbody></table>\n";
    }
  } else if (r.observed) {
    out += "<p class=\"note\">Not shown: the snapshot is not bound to the signed quote (" +
           WhyNot(r, "quote.qualifying_data") + ").</p>\n";
  } else {
    out += "<p class=\"note\">Not collected for this verdict.</p>\n";
  }
  out += "<h3>Supplier jurisdictions of the measured components</h3>\n";
  if (!r.observed) {
    out += "<p class=\"note\">Not collected for this verdict.</p>\n";
  } else if (!r.observed->manifest_authentic) {
    out += "<p class=\"note\">No verified reference manifest (" + WhyNot(r, "manifest.signature") +
           "): suppliers unknown.</p>\n";
  } else if (!r.observed->cel_authentic) {
    out +=
        "<p class=\"note\">sovguard's log is not authentic: no measured component to show.</p>\n";
  } else {
    const Observations& o = *r.observed;
    out += "<p>Manifest <span class=\"mono\">" + E(o.manifest_id) + "</span> by " +
           E(o.manifest_issuer) + " (signature verified).</p>\n";
    // Grouped by supplier; components the manifest lacks as one group of their own.
    struct Group {
      std::string supplier, jurisdiction;
      bool in_manifest, allowed;
      std::vector<const Observations::Component*> components;
    };
    std::vector<Group> groups;
    for (const auto& c : o.components) {
      auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
        return g.in_manifest == c.in_manifest && g.supplier == c.supplier &&
               g.jurisdiction == c.jurisdiction;
      });
      if (it == groups.end())
        it =
            groups.insert(groups.end(), {c.supplier, c.jurisdiction, c.in_manifest, c.allowed, {}});
      it->components.push_back(&c);
    }
    out +=
        "<table class=\"grid suppliers\"><thead><tr><th>supplier</th><th>jurisdiction</th>"
        "<th>allowed</th><th>measured components</th></tr></thead><tbody>\n";
    for (const auto& g : groups) {
      const bool ok = g.in_manifest && g.allowed;
      std::string comps;
      for (const auto* c : g.components) {
        comps += (comps.empty() ? "" : "<br>") + std::string("record ") +
                 std::to_string(c->record) + " " + E(c->kind) + " <span class=\"mono\">" +
                 E(c->measured) + "</span>";
        if (c->in_manifest) comps += ": " + E(c->name) + " " + E(c->version);
      }
      out += "<tr class=\"s-" + std::string(ok ? "pass" : "fail") + "\"><td>" +
             (g.in_manifest ? E(g.supplier) : "<b>not in the manifest</b>") + "</td><td>" +
             (g.in_manifest ? E(g.jurisdiction) : "unknown") + "</td><td>" +
             Badge(ok ? "pass" : "fail", ok ? "yes" : "no") + "</td><td>" + comps + "</td></tr>\n";
    }
    out += "</tbody></table>\n";
    if (groups.empty()) out += "<p class=\"note\">The log measures no component.</p>\n";
  }
  out += "</section>\n";
}

}  // namespace

std::string HtmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const auto cp = NextCodePoint(s, i);
    if (!cp) {
      out += "\uFFFD";
      continue;
    }
    switch (*cp) {
      case '&':
        out += "&amp;";
        continue;
      case '<':
        out += "&lt;";
        continue;
      case '>':
        out += "&gt;";
        continue;
      case '"':
        out += "&quot;";
        continue;
      case '\'':
        out += "&#39;";
        continue;
      default:
        break;
    }
    if ((*cp < 0x20 && *cp != '\t' && *cp != '\n') || (*cp >= 0x7F && *cp < 0xA0) ||
        *cp == 0xFEFF) {
      out += "\uFFFD";
    } else if (IsBidiControl(*cp)) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "[U+%04X]", static_cast<unsigned>(*cp));
      out += buf;
    } else {
      out.append(s.substr(start, i - start));
    }
  }
  return out;
}

std::string RenderHtml(const std::vector<HtmlNode>& nodes, std::string_view generated) {
  size_t passed = 0, failed = 0, errors = 0;
  for (const auto& n : nodes) (!n.report ? errors : n.report->passed() ? passed : failed)++;
  const bool all_pass = failed == 0 && errors == 0 && !nodes.empty();
  std::string out(kHead);
  out += "<header><h1>sovguard verification report " +
         Badge(all_pass ? "pass" : "fail", all_pass ? "PASS" : "FAIL") + "</h1>\n";
  out += "<p class=\"meta\">Generated " + E(generated) + " by sovguard-verify. " +
         std::to_string(nodes.size()) + (nodes.size() == 1 ? " node: " : " nodes: ") +
         std::to_string(passed) + " passed, " + std::to_string(failed) + " failed, " +
         std::to_string(errors) + " unreachable.</p></header>\n";
  // What failed, first: one row per node that did not pass, its failing checks as codes
  // (consequences of an earlier failure, DEPENDENCY_FAILED, after the causes).
  out +=
      "<section id=\"summary\" class=\"" + std::string(all_pass ? "all-pass" : "failing") + "\">";
  if (all_pass) {
    out += "<h2>No failing check</h2><p>Every check passed or was waived by name.</p>";
  } else {
    out += "<h2>Failing checks</h2><table>";
    for (size_t i = 0; i < nodes.size(); ++i) {
      const auto& n = nodes[i];
      if (n.report && n.report->passed()) continue;
      out += "<tr class=\"failing-node\"><td>" +
             Badge(n.report ? "fail" : "error", n.report ? "FAIL" : "ERROR") +
             "</td><td><a href=\"#node-" + std::to_string(i) + "\">" + NodeTitle(n) +
             "</a></td><td>";
      if (!n.report) {
        out += "no verdict: " + E(n.error);
      } else {
        for (int pass = 0; pass < 2; ++pass)
          for (const auto& c : n.report->checks) {
            if (c.status != Status::kFail || (c.reason == kReasonDependencyFailed) != (pass == 1))
              continue;
            out += "<span class=\"code" + std::string(pass ? " dep" : "") + "\">" + E(c.name) +
                   " <b class=\"reason\">" + E(c.reason) + "</b></span>";
          }
      }
      out += "</td></tr>";
    }
    out += "</table>";
  }
  out += "</section>\n";
  for (size_t i = 0; i < nodes.size(); ++i) NodeSection(out, nodes[i], i);
  out += "</main>\n</body>\n</html>\n";
  return out;
}

}  // namespace sovguard::attestation::verify
