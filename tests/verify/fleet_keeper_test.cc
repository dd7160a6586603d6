// The long-running fleet verifier's pieces that need no service: Placement trait names, the fleet
// file's provider column, option checks (fail before any round), and the metrics file rendered
// from verdicts. Against a real Placement: tests/daemon/daemon_placement_test.cc.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "attestation/common/bytes.h"
#include "attestation/verify/fleet_keeper.h"
#include "attestation/verify/verifier.h"
#include "attestation/verify/verify_cli.h"

namespace {

namespace verify = sovguard::attestation::verify;
namespace fs = std::filesystem;

int Cli(std::vector<std::string> args, std::string* text) {
  std::ostringstream out, err;
  const int rc = verify::RunVerifyCli(args, out, err);
  *text = out.str() + err.str();
  return rc;
}

TEST(FleetKeeper, DatasetTraitsFollowPlacementsCustomTraitRule) {
  EXPECT_EQ(verify::DatasetTrait("default-eu-eea"), "CUSTOM_SOVGUARD_DATASET_DEFAULT_EU_EEA");
  EXPECT_EQ(verify::DatasetTrait("health.de/v2"), "CUSTOM_SOVGUARD_DATASET_HEALTH_DE_V2");
  // Bytes outside ASCII letters and digits (here UTF-8) become '_': never a lower-case letter,
  // never a byte Placement's CUSTOM_[A-Z0-9_]+ refuses.
  for (const std::string id : {"gesundheit-\xc3\xa4rzte", "a b\tc", "x;DROP", "\x7f\x80\xff"}) {
    const std::string t = verify::DatasetTrait(id);
    EXPECT_EQ(t.rfind("CUSTOM_", 0), 0u) << t;
    EXPECT_EQ(t.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), std::string::npos) << t;
  }
  EXPECT_THROW(verify::DatasetTrait(""), verify::InputError);
  EXPECT_THROW(verify::DatasetTrait(std::string(240, 'a')), verify::InputError);
}

TEST(FleetKeeper, FleetFileNamesEachNodesProvider) {
  const auto n = verify::ParseFleetNodes(
      "# fleet\ncompute-1.example:7443\n10.0.0.2:7443  compute-2   # by name\n"
      "[2001:db8::1]:7443\n");
  ASSERT_EQ(n.size(), 3u);
  EXPECT_EQ(n[0].target, "compute-1.example:7443");
  EXPECT_EQ(n[0].provider, "compute-1.example");
  EXPECT_EQ(n[1].target, "10.0.0.2:7443");
  EXPECT_EQ(n[1].provider, "compute-2");
  EXPECT_EQ(n[2].provider, "2001:db8::1");
  EXPECT_EQ(verify::ParseFleetFile("a:1 p\nb:2\n"), (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_THROW(verify::ParseFleetNodes("a:1 p q\n"), verify::InputError);
  EXPECT_THROW(verify::ParseFleetNodes("a p\n"), verify::InputError);
}

// Options that cannot work fail at start, as usage errors naming what is missing.
TEST(FleetKeeper, OptionsThatCannotWorkAreUsageErrors) {
  const fs::path dir = fs::temp_directory_path() / ("sg-keeper-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  sovguard::attestation::WriteFileAtomic(dir / "fleet", "127.0.0.1:1 node\n");
  sovguard::attestation::WriteFileAtomic(dir / "token", "admin\n");
  sovguard::attestation::WriteFileAtomic(dir / "empty", "");
  const std::vector<std::string> live = {
      "--fleet",  (dir / "fleet").string(), "--ca", "/dev/null", "--cert", "/dev/null", "--key",
      "/dev/null"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.begin(), live.begin(), live.end());
    return a;
  };
  const std::string url = "http://127.0.0.1:1";
  const std::string tok = (dir / "token").string();
  std::string text;
  EXPECT_EQ(Cli(with({"--placement", url, "--placement-token-file", tok, "--placement-datasets",
                      "default-eu-eea"}),
                &text),
            verify::kExitUsage);
  EXPECT_NE(text.find("--placement-datasets needs --policy-digest"), std::string::npos) << text;
  const std::string digest(64, 'a');
  EXPECT_EQ(Cli(with({"--placement", url, "--placement-token-file", tok, "--policy-digest", digest,
                      "--placement-datasets", "health-de,health_de"}),
                &text),
            verify::kExitUsage);
  EXPECT_NE(text.find("both map to trait CUSTOM_SOVGUARD_DATASET_HEALTH_DE"), std::string::npos)
      << text;
  EXPECT_EQ(Cli(with({"--placement", "ftp://x", "--placement-token-file", tok}), &text),
            verify::kExitUsage);
  EXPECT_NE(text.find("expected an http:// or https:// URL"), std::string::npos) << text;
  EXPECT_EQ(
      Cli(with({"--placement", url, "--placement-token-file", (dir / "empty").string()}), &text),
      verify::kExitUsage);
  EXPECT_NE(text.find("is empty"), std::string::npos) << text;
  ::unsetenv("OS_AUTH_TOKEN");
  EXPECT_EQ(Cli(with({"--placement", url}), &text), verify::kExitUsage);
  EXPECT_NE(text.find("OS_AUTH_TOKEN is not set"), std::string::npos) << text;
  EXPECT_EQ(Cli(with({"--stale-after", "0"}), &text), verify::kExitUsage);
  EXPECT_NE(text.find("--stale-after must be"), std::string::npos) << text;
  EXPECT_EQ(Cli({"--node", "h:1", "--ca", "/dev/null", "--cert", "/dev/null", "--key", "/dev/null",
                 "--metrics-file", "x.prom"},
                &text),
            verify::kExitUsage);
  EXPECT_NE(text.find("apply to --fleet"), std::string::npos) << text;
  fs::remove_all(dir);
}

// The metrics file after a round: a pass, a failed check with its reason code, an unreachable
// node; replaced atomically each round.
TEST(FleetKeeper, MetricsFileCarriesVerdictsAndReasons) {
  const fs::path dir = fs::temp_directory_path() / ("sg-keeper-m-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  verify::KeeperOptions o;
  o.metrics_file = (dir / "sovguard-verify.prom").string();
  verify::FleetKeeper keeper(o, verify::ParseFleetNodes("a:1\nb:1\nc:1\n"),
                             std::chrono::seconds(60), false);
  std::vector<verify::LiveResult> r(3);
  r[0].target = "a:1";
  r[0].fetched = true;
  r[0].report.checks.push_back({"quote.signature", verify::Status::kPass, "OK", ""});
  r[1].target = "b:1";
  r[1].fetched = true;
  r[1].report.checks.push_back({"policy.digest", verify::Status::kFail,
                                std::string(verify::kReasonPolicyDigestMismatch), ""});
  r[1].report.checks.push_back(
      {"later", verify::Status::kFail, std::string(verify::kReasonDependencyFailed), ""});
  r[2].target = "c:1";
  r[2].error = "GetIdentity: connection refused";
  const auto t = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
  std::ostringstream out;
  EXPECT_TRUE(keeper.Round(r, t, out));
  const auto bytes = sovguard::attestation::ReadFileBytes(dir / "sovguard-verify.prom");
  const std::string prom(bytes.begin(), bytes.end());
  for (const char* line : {
           "sovguard_verify_node_pass{node=\"a:1\"} 1\n",
           "sovguard_verify_node_pass{node=\"b:1\"} 0\n",
           "sovguard_verify_node_pass{node=\"c:1\"} 0\n",
           "sovguard_verify_node_last_verdict_timestamp_seconds{node=\"c:1\"} 1700000000\n",
           "sovguard_verify_node_last_pass_timestamp_seconds{node=\"a:1\"} 1700000000\n",
           "sovguard_verify_node_reachable{node=\"c:1\"} 0\n",
           "sovguard_verify_node_failure{node=\"b:1\",check=\"policy.digest\","
           "reason=\"POLICY_DIGEST_MISMATCH\"} 1\n",
           "sovguard_verify_node_failure{node=\"c:1\",check=\"evidence\",reason=\"UNREACHABLE\"} "
           "1\n",
       })
    EXPECT_NE(prom.find(line), std::string::npos) << line << prom;
  // Never passed: no last-pass series (not a 0 that reads as 1970); a dependency failure is not
  // a reason of its own; no Placement, no in-step series.
  EXPECT_EQ(prom.find("last_pass_timestamp_seconds{node=\"b:1\"}"), std::string::npos) << prom;
  EXPECT_EQ(prom.find("DEPENDENCY_FAILED"), std::string::npos) << prom;
  EXPECT_EQ(prom.find("sovguard_verify_placement_in_step{"), std::string::npos) << prom;
  EXPECT_FALSE(fs::exists(dir / "sovguard-verify.prom.tmp"));
  fs::remove_all(dir);
}

}  // namespace
