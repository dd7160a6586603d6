#include "attestation/verify/fleet_keeper.h"

#include <set>

#include "attestation/common/bytes.h"
#include "attestation/verify/verifier.h"
#include "attestation/verify/verify_cli.h"
#include "enforcer/metrics/registry.h"

namespace sovguard::attestation::verify {
namespace {

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

double Unix(std::chrono::system_clock::time_point t) {
  return static_cast<double>(
      std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

}  // namespace

bool KeeperOptions::ParseArg(const std::vector<std::string>& a, size_t& i) {
  const std::string& flag = a[i];
  auto value = [&]() -> const std::string& {
    if (i + 1 >= a.size()) throw InputError(flag + " needs a value");
    return a[++i];
  };
  if (flag == "--placement") {
    if (!placement) placement.emplace();
    placement->endpoint = value();
  } else if (flag == "--placement-token-file") {
    if (!placement) placement.emplace();
    placement->token_file = value();
  } else if (flag == "--placement-datasets") {
    for (auto& id : SplitList(value())) {
      DatasetTrait(id);  // throws for an empty or too long id
      datasets.push_back(std::move(id));
    }
  } else if (flag == "--stale-after") {
    const std::string& v = value();
    int n = -1;
    try {
      n = std::stoi(v);
    } catch (...) {
    }
    if (n < 1 || n > 86400 || std::to_string(n) != v)
      throw InputError("--stale-after must be a number of seconds from 1 to 86400");
    stale_after = n;
  } else if (flag == "--metrics-file") {
    metrics_file = value();
  } else {
    return false;
  }
  return true;
}

FleetKeeper::FleetKeeper(const KeeperOptions& opts, std::vector<FleetNode> nodes,
                         std::chrono::seconds stale_after, bool policy_pinned)
    : opts_(opts), nodes_(std::move(nodes)), stale_after_(stale_after), state_(nodes_.size()) {
  if (opts_.placement) {
    if (opts_.placement->endpoint.empty())
      throw InputError("--placement-token-file needs --placement URL");
    // A dataset trait says the node enforces that dataset's rules: only a pinned policy (the
    // quote proves the node runs the bundle with that digest) backs the claim.
    if (!opts_.datasets.empty() && !policy_pinned)
      throw InputError(
          "--placement-datasets needs --policy-digest (the digest of the policy that enforces "
          "those datasets)");
    traits_.insert(std::string(kAttestedTrait));
    std::map<std::string, std::string> from;
    for (const auto& d : opts_.datasets) {
      const std::string t = DatasetTrait(d);
      if (auto [it, fresh] = from.emplace(t, d); !fresh && it->second != d)
        throw InputError("--placement-datasets: \"" + it->second + "\" and \"" + d +
                         "\" both map to trait " + t);
      traits_.insert(t);
    }
    placement_ = std::make_unique<PlacementClient>(*opts_.placement);
    placement_->RefreshToken();  // no token: a usage error now, not at the first round
  } else if (!opts_.datasets.empty()) {
    throw InputError("--placement-datasets needs --placement");
  }
}

FleetKeeper::~FleetKeeper() = default;

bool FleetKeeper::Round(const std::vector<LiveResult>& results,
                        std::chrono::system_clock::time_point started, std::ostream& out) {
  for (size_t i = 0; i < nodes_.size() && i < results.size(); ++i) {
    auto& s = state_[i];
    const auto& r = results[i];
    s.verdict = true;
    s.last_verdict = started;
    s.reachable = r.fetched;
    s.passed = r.fetched && r.report.passed();
    if (s.passed) s.last_pass = started;  // the nonce is younger than the round
    s.failures.clear();
    if (!r.fetched) s.failures.emplace_back("evidence", "UNREACHABLE");
    for (const auto& c : r.report.checks)
      if (r.fetched && c.status == Status::kFail && c.reason != kReasonDependencyFailed)
        s.failures.emplace_back(c.name, c.reason);
  }
  bool ok = true;
  if (placement_) {
    try {
      placement_->RefreshToken();
    } catch (const AttestationError& e) {
      out << "placement: " << e.what() << "\n";
      for (auto& s : state_) s.in_step = false;
      WriteMetrics();
      return false;
    }
    const auto now = std::chrono::system_clock::now();
    size_t attested = 0;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      auto& s = state_[i];
      const bool fresh = s.passed && now - s.last_pass <= stale_after_;
      if (s.passed && !fresh)
        out << "placement: " << nodes_[i].provider << ": passed "
            << std::chrono::duration_cast<std::chrono::seconds>(now - s.last_pass).count()
            << " s ago, more than --stale-after " << stale_after_.count()
            << " s: verdict stale, traits removed\n";
      const auto ch =
          placement_->Reconcile(nodes_[i].provider, fresh ? traits_ : std::set<std::string>{});
      s.in_step = ch.error.empty();
      if (!s.in_step) {
        ok = false;
        out << "placement: " << nodes_[i].provider << ": NOT IN STEP: " << ch.error << "\n";
        continue;
      }
      attested += fresh;
      if (!ch.added.empty() || !ch.removed.empty())
        out << "placement: " << nodes_[i].provider << " (" << ch.uuid << ")"
            << (ch.added.empty() ? "" : " +" + Join(ch.added))
            << (ch.removed.empty() ? "" : " -" + Join(ch.removed)) << "\n";
    }
    if (ok) out << "placement: in step (" << attested << " attested)\n";
  }
  WriteMetrics();
  return ok;
}

void FleetKeeper::WriteMetrics() {
  if (!opts_.metrics_file) return;
  metrics::Registry reg;
  reg.DeclareAll(kVerifyMetrics);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const auto& s = state_[i];
    if (!s.verdict) continue;
    const std::string& n = nodes_[i].target;
    reg.Set(kVerifyNodePass, {n}, s.passed ? 1 : 0);
    reg.Set(kVerifyNodeLastVerdict, {n}, Unix(s.last_verdict));
    if (s.last_pass.time_since_epoch().count() != 0)
      reg.Set(kVerifyNodeLastPass, {n}, Unix(s.last_pass));
    reg.Set(kVerifyNodeReachable, {n}, s.reachable ? 1 : 0);
    for (const auto& [check, reason] : s.failures)
      reg.Set(kVerifyNodeFailure, {n, check, reason}, 1);
    if (placement_) reg.Set(kVerifyPlacementInStep, {n, nodes_[i].provider}, s.in_step ? 1 : 0);
  }
  // Atomic replace: the textfile collector never reads half a file.
  WriteFileAtomic(*opts_.metrics_file, reg.Render());
}

}  // namespace sovguard::attestation::verify
