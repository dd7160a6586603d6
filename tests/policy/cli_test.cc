// The `policy` and `jurisdiction` command groups through RunPolicyCli: exit codes 0/1/2, the
// diagnostics format, the shipped examples, and table lookup/compile.
#include <gtest/gtest.h>

#include "policy/cli/policy_cli.h"
#include "tests/policy/test_util.h"

namespace sovguard::policy {
namespace {

using testing::SourceDir;

struct Run {
  int rc;
  std::string out, err;
};

Run Cli(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int rc = RunPolicyCli(args, out, err);
  return {rc, out.str(), err.str()};
}

TEST(PolicyCli, EveryExamplePassesCheck) {
  std::vector<std::string> args{"policy", "check"};
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(SourceDir() / "examples/policies")) {
    const auto ext = e.path().extension();
    if (ext != ".textproto" && ext != ".json") continue;
    const auto one = Cli({"policy", "check", e.path().string()});
    EXPECT_EQ(one.rc, 0) << e.path() << "\n" << one.err;
    args.push_back(e.path().string());
    ++n;
  }
  EXPECT_GE(n, 5u);
  // And all together (ids and names are unique across the set).
  const auto all = Cli(args);
  EXPECT_EQ(all.rc, 0) << all.err;
  EXPECT_NE(all.out.find("ok: " + std::to_string(n) + " file(s)"), std::string::npos);
}

TEST(PolicyCli, CheckReportsEveryErrorWithPosition) {
  testing::TempDir dir;
  const auto bad =
      dir.Write("bad.textproto",
                "datasets {\n  id: \"d\"\n  mode: ENFORCE\n  residency { allow: \"XX\" }\n}\n"
                "datasets {\n  id: \"d\"\n  mode: AUDIT\n}\n");
  const auto r = Cli({"policy", "check", bad.string()});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(bad.string() + ":4:15: unknown country code \"XX\""), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(bad.string() + ":7:3: duplicate dataset id \"d\""), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("2 error(s)"), std::string::npos) << r.err;
}

TEST(PolicyCli, UsageErrorsExitTwo) {
  EXPECT_EQ(Cli({}).rc, 2);
  EXPECT_EQ(Cli({"policy"}).rc, 2);
  EXPECT_EQ(Cli({"policy", "frobnicate"}).rc, 2);
  EXPECT_EQ(Cli({"policy", "check"}).rc, 2);
  EXPECT_EQ(Cli({"policy", "check", "--nope", "x"}).rc, 2);
  EXPECT_EQ(Cli({"jurisdiction", "lookup"}).rc, 2);
  EXPECT_EQ(Cli({"jurisdiction", "lookup", "not-an-ip"}).rc, 2);
  EXPECT_EQ(Cli({"jurisdiction", "compile", "--from", "x"}).rc, 2);
  EXPECT_EQ(Cli({"jurisdiction", "lookup", "1.2.3.4", "--table"}).rc, 2);
}

TEST(PolicyCli, JurisdictionLookup) {
  const auto table = (SourceDir() / "policy/data/world.sgjt").string();
  auto r = Cli({"jurisdiction", "lookup", "193.99.144.80", "--table", table});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("country: DE\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("groups: EU EEA\n"), std::string::npos) << r.out;
  r = Cli({"jurisdiction", "lookup", "2a00:1450:4001::1", "--table", table});
  EXPECT_NE(r.out.find("country: IE\n"), std::string::npos) << r.out;
  r = Cli({"jurisdiction", "lookup", "8.8.8.8", "--table", table, "--policy",
           (SourceDir() / "policy/data/default-eu-eea.textproto").string()});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("country: US\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("groups: -\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("allowed datasets: none\n"), std::string::npos) << r.out;
  r = Cli({"jurisdiction", "lookup", "198.51.100.53", "--table", table, "--policy",
           (SourceDir() / "examples/policies/02-eu-research-zone-resolver.json").string()});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("exception: yes\n"), std::string::npos) << r.out;
  // The resolver exception is limited to DNS: reachable on its ports only.
  EXPECT_NE(r.out.find("allowed datasets: none\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("allowed on udp/53: eu-research\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("allowed on tcp/853: eu-research\n"), std::string::npos) << r.out;
  r = Cli({"jurisdiction", "lookup", "2001:db8:10::1", "--table", table, "--policy",
           (SourceDir() / "examples/policies/02-eu-research-zone-resolver.json").string()});
  EXPECT_NE(r.out.find("operator zone: provider-fra (DE)\n"), std::string::npos) << r.out;
  // A corrupt table is a precise error, exit 1.
  testing::TempDir dir;
  const auto corrupt = dir.Write("bad.sgjt", "SGJT garbage");
  r = Cli({"jurisdiction", "lookup", "1.2.3.4", "--table", corrupt.string()});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("bad.sgjt: truncated"), std::string::npos) << r.err;
}

TEST(PolicyCli, JurisdictionCompile) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() / "src/de");
  std::filesystem::create_directories(dir.path() / "src/fr");
  dir.Write("src/de/ipv4-aggregated.txt", "# DE\n192.0.2.0/25\n");
  dir.Write("src/de/ipv6-aggregated.txt", "2001:db8::/33\n");
  dir.Write("src/fr/ipv4-aggregated.txt", "192.0.2.128/25\n");
  const auto out = (dir.path() / "t.sgjt").string();
  auto r = Cli({"jurisdiction", "compile", "--from", (dir.path() / "src").string(), "-o", out});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("2 IPv4 and 1 IPv6 prefixes, 2 countries"), std::string::npos) << r.out;
  r = Cli({"jurisdiction", "lookup", "192.0.2.200", "--table", out});
  EXPECT_NE(r.out.find("country: FR\n"), std::string::npos) << r.out;
  r = Cli({"jurisdiction", "compile", "--from", (dir.path() / "nope").string(), "-o", out});
  EXPECT_EQ(r.rc, 1);
}

}  // namespace
}  // namespace sovguard::policy
