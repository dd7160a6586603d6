// examples/prometheus/sovguard-alerts.yml: every metric it alerts on is one sovguardd exports
// (enforcer/metrics/names.h, with that metric's labels) or one of the verifier's documented
// contract series; Prometheus's own promtool accepts the file and its unit tests
// (tests/metrics/prometheus/alerts-test.yml: each alert firing and not firing on recorded series)
// pass.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "attestation/verify/fleet_keeper.h"
#include "base/file.h"
#include "enforcer/metrics/names.h"
#include "tests/harness/require.h"

namespace sm = sovguard::metrics;
namespace verify = sovguard::attestation::verify;

namespace {

const std::string kRules =
    std::string(SOVGUARD_SOURCE_DIR) + "/examples/prometheus/sovguard-alerts.yml";
const std::string kRuleTests = std::string(SOVGUARD_SOURCE_DIR) + "/tests/metrics/prometheus";

// Runs a shell command; its exit status and combined output.
int Shell(const std::string& command, std::string* out) {
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  std::array<char, 4096> buf{};
  out->clear();
  while (const std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out->append(buf.data(), n);
  return ::pclose(p);
}

bool HavePromtool() {
  std::string out;
  return Shell("command -v promtool", &out) == 0;
}

TEST(PrometheusRules, EveryAlertUsesMetricsAndLabelsSovguardExports) {
  std::map<std::string, const sm::MetricDef*> defs;
  for (const sm::MetricDef* d : sm::kAllMetrics) defs[std::string(d->name)] = d;
  // The fleet verifier's series (sovguard-verify --metrics-file): not sovguardd's, so never in
  // names.h.
  std::map<std::string, std::set<std::string>> verifier;
  for (const sm::MetricDef* d : verify::kVerifyMetrics)
    for (std::size_t i = 0; i < d->label_count(); ++i)
      verifier[std::string(d->name)].insert(std::string(d->labels[i]));
  const std::set<std::string> target_labels = {"instance", "job"};

  const std::string text = sovguard::base::ReadFileText(kRules);
  const std::regex expr_line(R"(^\s*expr:\s*(.*)$)", std::regex::multiline);
  const std::regex metric(R"(\b((?:sovguard|process)_[A-Za-z0-9_:]*)\s*(\{([^}]*)\})?)");
  const std::regex matcher(R"(([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=))");
  std::set<std::string> alerted;
  int exprs = 0;
  for (auto e = std::sregex_iterator(text.begin(), text.end(), expr_line);
       e != std::sregex_iterator(); ++e) {
    ++exprs;
    const std::string q = (*e)[1];
    for (auto m = std::sregex_iterator(q.begin(), q.end(), metric); m != std::sregex_iterator();
         ++m) {
      const std::string name = (*m)[1];
      std::set<std::string> labels;
      if (const auto d = defs.find(name); d != defs.end()) {
        for (std::size_t i = 0; i < d->second->label_count(); ++i)
          labels.insert(std::string(d->second->labels[i]));
      } else if (const auto v = verifier.find(name); v != verifier.end()) {
        labels = v->second;
      } else {
        ADD_FAILURE() << name << " is neither in enforcer/metrics/names.h nor a documented "
                      << "verifier series:\n"
                      << q;
        continue;
      }
      alerted.insert(name);
      const std::string selector = (*m)[3];
      for (auto l = std::sregex_iterator(selector.begin(), selector.end(), matcher);
           l != std::sregex_iterator(); ++l) {
        const std::string label = (*l)[1];
        EXPECT_TRUE(labels.contains(label) || target_labels.contains(label))
            << name << " has no label '" << label << "':\n"
            << q;
      }
    }
  }
  EXPECT_GE(exprs, 14);
  // What an operator needs on day one.
  for (const sm::MetricDef* must :
       {&sm::kGuestPackets, &sm::kStorageDenied, &sm::kTamperFindings, &sm::kProbePath,
        &sm::kPathEnforced, &sm::kUncoveredInterfaces, &sm::kGuestAttached, &sm::kPolicyReloads}) {
    EXPECT_TRUE(alerted.contains(std::string(must->name))) << "no alert on " << must->name;
  }
  for (const auto& [name, labels] : verifier)
    EXPECT_FALSE(defs.contains(name)) << name << " is both sovguardd's and the verifier's";
  // A failing, a stale verdict, and Placement traits that could not follow.
  for (const sm::MetricDef* must : {&verify::kVerifyNodeFailure, &verify::kVerifyNodeLastVerdict,
                                    &verify::kVerifyPlacementInStep})
    EXPECT_TRUE(alerted.contains(std::string(must->name))) << "no alert on " << must->name;
}

TEST(PrometheusRules, PromtoolAcceptsTheRulesAndTheirUnitTestsPass) {
  SOVGUARD_REQUIRE(HavePromtool(), "promtool (Debian package prometheus)");
  std::string out;
  ASSERT_EQ(Shell("promtool check rules " + kRules, &out), 0) << out;
  EXPECT_NE(out.find("SUCCESS: 15 rules found"), std::string::npos) << out;
  // Relative rule_files paths resolve against the test file's directory.
  ASSERT_EQ(Shell("cd " + kRuleTests + " && promtool test rules alerts-test.yml", &out), 0) << out;
  EXPECT_NE(out.find("SUCCESS"), std::string::npos) << out;
}

}  // namespace
