// Reports: statuses, certification clauses, waivers, observations, text and JSON.
#include "attestation/verify/checks.h"

#include <algorithm>

#include "attestation/eventlog/cel.h"

namespace sovguard::attestation::verify {

using namespace detail;  // NOLINT(google-build-using-namespace): the checks

std::string_view StatusName(Status s) {
  switch (s) {
    case Status::kPass:
      return "pass";
    case Status::kFail:
      return "fail";
    case Status::kNotApplicable:
      return "not_applicable";
    case Status::kWaived:
      return "waived";
  }
  return "fail";
}

namespace {
// Certification clauses (one table: the JSON report's "clauses" and the README's mapping).
constexpr std::string_view kSnc192 = "SecNumCloud 3.2 §19.2";
constexpr std::string_view kSnc126 = "SecNumCloud 3.2 §12.6-12.8";
constexpr std::string_view kC5Pss12 = "BSI C5:2020 PSS-12";
constexpr std::string_view kC5Ops = "BSI C5:2020 OPS-10..16";
constexpr std::string_view kGaiaX = "Gaia-X Policy Rules P5.1.1-P5.1.2";
constexpr std::string_view kSov5 = "EU Cloud Sovereignty Framework SOV-5";
// Evidence attributable to this node's hardware, fresh: what makes the location claims count.
constexpr std::string_view kIdentity[] = {kSnc192, kC5Pss12, kGaiaX};
// Where data is processed: the enforcement state the node signs.
constexpr std::string_view kLocation[] = {kSnc192, kC5Pss12, kGaiaX};
// The enforcement event log (tamper findings, releases, restarts) and the location it proves.
constexpr std::string_view kEnforcementLog[] = {kSnc192, kSnc126, kC5Pss12, kC5Ops, kGaiaX};
// Which software booted and runs (UEFI and IMA measurement logs, the manifest), and its
// suppliers: supply chain, not customer-data location (Gaia-X P5.1) nor event logging.
constexpr std::string_view kSupply[] = {kSov5};
struct CheckClauses {
  std::string_view check;
  std::span<const std::string_view> clauses;
};
constexpr CheckClauses kClauses[] = {
    {"quote.structure", kIdentity},
    {"ak.consistency", kIdentity},
    {"ak.enrolled", kIdentity},
    {"ak.ek_binding", kIdentity},
    {"quote.signature", kIdentity},
    {"nonce", kIdentity},
    {"snapshot.digest", kLocation},
    {"snapshot.copy", kLocation},
    {"quote.qualifying_data", kIdentity},
    {"quote.clock", kIdentity},
    {"quote.pcr_digest", kIdentity},
    {"eventlog.cel.decode", kEnforcementLog},
    {"eventlog.cel.events", kEnforcementLog},
    {"eventlog.cel.replay", kEnforcementLog},
    {"policy.bundle", kLocation},
    {"snapshot.coverage", kLocation},
    {"snapshot.mechanisms", kLocation},
    {"enforcement.continuity", kEnforcementLog},
    {"eventlog.uefi", kSupply},
    {"eventlog.ima", kSupply},
    {"manifest.signature", kSupply},
    {"manifest.components", kSupply},
    {"manifest.jurisdiction", kSupply},
    {"manifest.boot", kSupply},
    {"manifest.ima", kSupply},
    {"quote.clock_monotonic", kIdentity},
    {"ek.chain", kIdentity},
    {"tpm.hardware", kIdentity},
    {"trust.root", kIdentity},
};

constexpr std::string_view kWaiveBootLog[] = {kReasonBootLogMissing, kReasonBootPcrNotQuoted};
constexpr std::string_view kWaiveIma[] = {kReasonImaLogMissing, kReasonImaUnapprovedFile};
constexpr std::string_view kWaiveManifest[] = {kReasonManifestMissing};
constexpr std::string_view kWaivePolicy[] = {kReasonExpectedPolicyMissing};
constexpr std::string_view kWaiveRoot[] = {kReasonRootOfTrustMissing};
constexpr std::string_view kWaiveSoftwareTpm[] = {kReasonSoftwareTpm, kReasonHardwareTpmUnproven,
                                                  kReasonEkNotBoundToAk};
constexpr std::string_view kWaiveInterruptions[] = {kReasonEnforcementInterrupted};
}  // namespace

std::span<const std::string_view> WaivedReasons(std::string_view waiver) {
  if (waiver == "boot-log") return kWaiveBootLog;
  if (waiver == "ima") return kWaiveIma;
  if (waiver == "manifest") return kWaiveManifest;
  if (waiver == "policy") return kWaivePolicy;
  if (waiver == "root-of-trust") return kWaiveRoot;
  if (waiver == "software-tpm") return kWaiveSoftwareTpm;
  if (waiver == "interruptions") return kWaiveInterruptions;
  return {};
}

std::span<const std::string_view> ClausesFor(std::string_view check) {
  for (const auto& c : kClauses)
    if (c.check == check) return c.clauses;
  return {};
}

std::vector<std::string_view> AllCheckNames() {
  std::vector<std::string_view> out;
  for (const auto& c : kClauses) out.push_back(c.check);
  return out;
}

bool Report::passed() const {
  return !checks.empty() && std::none_of(checks.begin(), checks.end(), [](const CheckResult& c) {
    return c.status == Status::kFail;
  });
}

const CheckResult* Report::Find(std::string_view name) const {
  for (const auto& c : checks)
    if (c.name == name) return &c;
  return nullptr;
}

std::optional<Status> Report::StatusOf(std::string_view name) const {
  if (const auto* c = Find(name)) return c->status;
  return std::nullopt;
}

void detail::Observe(const std::optional<CelFacts>& cel, const v1::EnforcementSnapshot* bound_snap,
                     Observations& o) {
  using K = Observations::Kind;
  if (cel) {
    o.cel_authentic = true;
    o.cel_records = cel->recs.size();
    for (size_t i = 0; i < cel->recs.size(); ++i) {
      cel::SovguardEventView e;
      if (cel::DecodeSovguardContentView(cel->recs[i].content, e)) continue;  // (cannot be)
      std::optional<K> kind;
      std::string_view name = e.name;
      switch (e.kind) {
        case cel::EventKind::kDaemonStart:
          kind = K::kDaemonStart;
          name = e.detail;
          break;
        case cel::EventKind::kPolicyApplied:
          kind = K::kPolicyApplied;
          break;
        case cel::EventKind::kMechanismDowngraded:
          kind = K::kDowngrade;
          break;
        case cel::EventKind::kRecovered:
          kind = K::kRecovered;
          break;
        case cel::EventKind::kEnforcementState:
          if (name.starts_with(cel::kGuestEventPrefix)) {
            name.remove_prefix(cel::kGuestEventPrefix.size());
            kind = e.detail == "covered"    ? K::kGuestCovered
                   : e.detail == "released" ? K::kGuestReleased
                                            : K::kGuestOther;
          } else if (name.starts_with("tamper:")) {
            name.remove_prefix(7);
            kind = K::kTamper;
          } else if (name == "enforcement" && e.detail.starts_with("released")) {
            kind = K::kRelease;
          }
          break;
        default:
          break;
      }
      if (kind) o.timeline.push_back({i, *kind, std::string(name), std::string(e.detail)});
    }
  }
  if (bound_snap) {
    o.snapshot_bound = true;
    o.policy_bundle_id = bound_snap->policy_bundle_id();
    for (const auto& g : bound_snap->guests()) {
      Observations::Guest og{g.uuid(), g.name(), {}};
      for (const auto& d : g.datasets()) og.datasets.push_back(d.dataset());
      o.guests.push_back(std::move(og));
    }
  }
}

void detail::ApplyWaivers(Report& rep) {
  for (auto& c : rep.checks) {
    if (c.status != Status::kFail) continue;
    for (const auto& w : rep.waivers) {
      const auto reasons = WaivedReasons(w);
      if (std::find(reasons.begin(), reasons.end(), c.reason) == reasons.end()) continue;
      c.status = Status::kWaived;
      c.detail = "waived (--waive " + w + "): " + c.detail;
      break;
    }
  }
}

std::string RenderText(const Report& r) {
  std::string s =
      "sovguard-verify: node \"" + r.node + "\": " + (r.passed() ? "PASS" : "FAIL") + "\n";
  if (!r.waivers.empty()) {
    s += "  waived by the auditor:";
    for (const auto& w : r.waivers) s += " " + w;
    s += "\n";
  }
  for (const auto& c : r.checks) {
    s += "  [" + std::string(StatusName(c.status)) + "] " + c.name;
    if (c.status != Status::kPass) s += " " + c.reason;
    if (!c.detail.empty()) s += ": " + c.detail;
    s += "\n";
  }
  return s;
}

std::string RenderJson(const Report& r) {
  nlohmann::json j;
  j["node"] = r.node;
  j["verdict"] = r.passed() ? "pass" : "fail";
  j["waivers"] = r.waivers;
  j["checks"] = nlohmann::json::array();
  for (const auto& c : r.checks) {
    auto clauses = nlohmann::json::array();
    for (const auto cl : ClausesFor(c.name)) clauses.push_back(cl);
    j["checks"].push_back({{"name", c.name},
                           {"status", StatusName(c.status)},
                           {"reason", c.reason},
                           {"detail", c.detail},
                           {"clauses", std::move(clauses)}});
  }
  // Details can quote evidence bytes: replace invalid UTF-8 rather than throw.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace sovguard::attestation::verify
