#include "enforcer/probe/probe.h"

#include <sys/utsname.h>

#include <fmt/format.h>
#include <sstream>
#include <string>

#include "base/time.h"
#include "enforcer/bpf_feature/bpf_feature.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/storage/storage_datapath.h"

namespace sovguard::enforcer {
namespace {

// Every path's ladder, as each feature gives it, in the order the probe reports them.
std::vector<bpf_feature::ProbePath> Ladders() {
  auto all = net::NetDatapath::ProbeLadder();
  for (auto& path : storage::StorageDatapath::ProbeLadder()) all.push_back(std::move(path));
  return all;
}

}  // namespace

const std::vector<std::string>& ProbePaths() {
  static const std::vector<std::string> kPaths = [] {
    std::vector<std::string> p;
    for (const auto& ladder : Ladders()) p.push_back(ladder.path);
    return p;
  }();
  return kPaths;
}

const PathResult* ProbeReport::Find(const std::string& path) const {
  for (const auto& p : paths)
    if (p.path == path) return &p;
  return nullptr;
}

ProbeReport RunProbe() {
  ProbeReport report;
  utsname u{};
  ::uname(&u);
  report.kernel = u.release;
  report.probed_at = base::NowRfc3339();
  // Failed attempts are expected (that is what a probe is for); their reason is in the report,
  // so libbpf's own verifier dumps would only bury it.
  const bpf_feature::QuietLibbpf quiet;
  for (const auto& ladder : Ladders()) {
    PathResult r{.path = ladder.path, .mechanism = "none"};
    for (const auto& rung : ladder.rungs) {
      Attempt a = rung.attempt();
      const bool ok = a.ok;
      r.attempts.push_back(std::move(a));
      if (ok) {
        r.mechanism = r.attempts.back().mechanism;
        r.guarantee = rung.guarantee;
        break;
      }
    }
    report.paths.push_back(std::move(r));
  }
  return report;
}

nlohmann::json ToJson(const ProbeReport& report) {
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& p : report.paths) {
    nlohmann::json attempts = nlohmann::json::array();
    for (const auto& a : p.attempts) {
      attempts.push_back({{"mechanism", a.mechanism}, {"ok", a.ok}, {"error", a.error}});
    }
    paths.push_back({{"path", p.path},
                     {"mechanism", p.mechanism},
                     {"guarantee", ToString(p.guarantee)},
                     {"attempts", attempts}});
  }
  return {{"kernel", report.kernel},
          {"probed_at", report.probed_at},
          {"paths", paths},
          {"notes", report.notes}};
}

ProbeReport ProbeReportFromJson(const nlohmann::json& j) {
  ProbeReport r;
  r.kernel = j.at("kernel").get<std::string>();
  r.probed_at = j.at("probed_at").get<std::string>();
  r.notes = j.at("notes").get<std::vector<std::string>>();
  for (const auto& p : j.at("paths")) {
    PathResult pr{.path = p.at("path").get<std::string>(),
                  .mechanism = p.at("mechanism").get<std::string>()};
    const auto g = p.at("guarantee").get<std::string>();
    pr.guarantee = g == "prevents" ? Guarantee::kPrevents
                   // "detects": reports written before the vocabulary was shared
                   : g == "detects-and-kills" || g == "detects" ? Guarantee::kDetectsAndKills
                   : g == "counts"                              ? Guarantee::kCounts
                                                                : Guarantee::kNone;
    for (const auto& a : p.at("attempts")) {
      pr.attempts.push_back({.mechanism = a.at("mechanism").get<std::string>(),
                             .ok = a.at("ok").get<bool>(),
                             .error = a.at("error").get<std::string>()});
    }
    r.paths.push_back(std::move(pr));
  }
  return r;
}

std::string ToTable(const ProbeReport& report) {
  std::ostringstream out;
  out << fmt::format("kernel {}   probed {}\n\n", report.kernel, report.probed_at);
  out << fmt::format("{:<26} {:<44} {}\n", "PATH", "MECHANISM", "GUARANTEE");
  for (const auto& p : report.paths) {
    out << fmt::format("{:<26} {:<44} {}\n", p.path, p.mechanism, ToString(p.guarantee));
    for (const auto& a : p.attempts) {
      if (!a.ok) out << fmt::format("{:<26}   unavailable: {}: {}\n", "", a.mechanism, a.error);
    }
  }
  for (const auto& n : report.notes) out << "note: " << n << "\n";
  return out.str();
}

}  // namespace sovguard::enforcer
