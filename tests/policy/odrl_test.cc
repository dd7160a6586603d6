// ODRL import: the three real EDC samples and fixtures for the IDS, Gaia-X and Catena-X
// dialects, nested logical constraints, prohibitions, strict mode, and that every import passes
// `policy check`.
#include <gtest/gtest.h>

#include "policy/cli/policy_cli.h"
#include "policy/odrl/odrl.h"
#include "policy/validate/validate.h"
#include "tests/harness/require.h"
#include "tests/policy/test_util.h"

namespace sovguard::policy {
namespace {

using testing::Fixtures;
using testing::ReadAll;
using testing::SharedData;

std::vector<std::string> Allow(const OdrlImport& r) {
  const auto& a = r.policy.datasets(0).residency().allow();
  return {a.begin(), a.end()};
}

// The rendered import must itself be a valid sovguard policy.
void ExpectValidPolicy(const OdrlImport& r) {
  const auto text = RenderOdrlImport(r, "x.json");
  const auto loaded = LoadPolicyBuffers({{"import.textproto", text}}, 1'780'000'000);
  EXPECT_TRUE(loaded.ok()) << text << "\n"
                           << (loaded.diagnostics.empty() ? "" : loaded.diagnostics[0].ToString());
}

OdrlImport ImportFile(const std::filesystem::path& p, bool strict = false,
                      const std::string& id = "") {
  return ImportOdrl(ReadAll(p), {id, strict});
}

bool HaveEdc() {
  return std::filesystem::exists(SharedData() / "odrl/edc-samples");
}

TEST(OdrlEdc, CreatePolicyWithIdOperator) {
  SOVGUARD_REQUIRE(HaveEdc(), "shared/data/odrl at " << SharedData());
  const auto r = ImportFile(SharedData() / "odrl/edc-samples/policy-01-create-policy.json");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(r.policy.datasets(0).id(), "eu-policy");
  EXPECT_EQ(Allow(r), std::vector<std::string>{"EU"});
  EXPECT_EQ(r.policy.datasets(0).mode(), pb::AUDIT);
  EXPECT_TRUE(r.not_enforced.empty());
  ExpectValidPolicy(r);
}

TEST(OdrlEdc, ContractRequestWithPlainOperator) {
  SOVGUARD_REQUIRE(HaveEdc(), "shared/data/odrl at " << SharedData());
  const auto r = ImportFile(SharedData() / "odrl/edc-samples/policy-01-contract-request.json");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(r.policy.datasets(0).id(), "test-document");
  EXPECT_EQ(Allow(r), std::vector<std::string>{"EU"});
  ExpectValidPolicy(r);
}

TEST(OdrlEdc, NoConstraintNoPermissionMeansNowhere) {
  SOVGUARD_REQUIRE(HaveEdc(), "shared/data/odrl at " << SharedData());
  const auto r = ImportFile(SharedData() / "odrl/edc-samples/transfer-01-create-policy.json", false,
                            "transfer");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(r.policy.datasets(0).id(), "transfer");
  EXPECT_TRUE(Allow(r).empty());  // fail closed: no permission, no place
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("no permission grants use"), std::string::npos);
  ExpectValidPolicy(r);
}

TEST(OdrlIds, SpatialUriCountAndWindow) {
  const auto r = ImportFile(Fixtures() / "odrl-ids-spatial-count-window.json");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(r.policy.datasets(0).id(), "sensor-feed");
  EXPECT_EQ(Allow(r), std::vector<std::string>{"DE"});
  EXPECT_EQ(r.policy.datasets(0).usage().not_before(), "2026-01-01T00:00:00Z");
  EXPECT_EQ(r.policy.datasets(0).usage().not_after(), "2031-01-01T00:00:00Z");
  ASSERT_EQ(r.not_enforced.size(), 1u);
  EXPECT_NE(r.not_enforced[0].find("permission[0].constraint[1]: count lteq"), std::string::npos);
  ExpectValidPolicy(r);
  const auto strict = ImportFile(Fixtures() / "odrl-ids-spatial-count-window.json", true);
  EXPECT_FALSE(strict.ok());
}

TEST(OdrlIds, PrefixedTermsAndElForGreece) {
  const auto r = ImportFile(Fixtures() / "odrl-ids-prefixed.json");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(Allow(r), std::vector<std::string>{"GR"});
  ASSERT_EQ(r.not_enforced.size(), 1u);
  EXPECT_NE(r.not_enforced[0].find("PURPOSE"), std::string::npos);
  ExpectValidPolicy(r);
}

TEST(OdrlGaiaX, IsAnyOfListWithProhibitionIsNoneOf) {
  const auto r = ImportFile(Fixtures() / "odrl-gaiax-anyof-noneof.json");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(r.policy.datasets(0).id(), "mobility-2026");
  // Permitted fr, es, el; prohibited everywhere except fr, gr, it -> FR and GR remain.
  EXPECT_EQ(Allow(r), (std::vector<std::string>{"FR", "GR"}));
  EXPECT_TRUE(r.not_enforced.empty());
  ExpectValidPolicy(r);
}

TEST(OdrlGaiaX, IsNoneOfMeansEverywhereElse) {
  const auto r = ImportFile(Fixtures() / "odrl-gaiax-noneof.json");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  const auto allow = Allow(r);
  EXPECT_EQ(allow.size(), 247u);
  EXPECT_EQ(std::count(allow.begin(), allow.end(), "US"), 0);
  EXPECT_EQ(std::count(allow.begin(), allow.end(), "CN"), 0);
  EXPECT_EQ(std::count(allow.begin(), allow.end(), "DE"), 1);
  ExpectValidPolicy(r);
}

TEST(OdrlCatenaX, FrameworkAgreementPurposeAndObligationAreReported) {
  const auto r = ImportFile(Fixtures() / "odrl-catenax.json");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(Allow(r), std::vector<std::string>{"EU"});
  ASSERT_EQ(r.not_enforced.size(), 3u);
  EXPECT_NE(r.not_enforced[0].find("cx-policy:FrameworkAgreement"), std::string::npos);
  EXPECT_NE(r.not_enforced[1].find("cx-policy:UsagePurpose"), std::string::npos);
  EXPECT_NE(r.not_enforced[2].find("obligation[0]"), std::string::npos);
  const auto text = RenderOdrlImport(r, "cx.json");
  EXPECT_NE(text.find("# NOT ENFORCED BY SOVGUARD"), std::string::npos);
  ExpectValidPolicy(r);
  const auto strict = ImportFile(Fixtures() / "odrl-catenax.json", true);
  ASSERT_FALSE(strict.ok());
  EXPECT_NE(strict.errors[0].find("3 term(s) cannot be enforced by sovguard (--strict)"),
            std::string::npos);
}

TEST(OdrlLogic, NestedOrAndWithUnenforceableBranchNeverSatisfied) {
  const auto r = ImportFile(Fixtures() / "odrl-nested-or.json");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  // or(DE, AT, and({NL,BE,US}, EEA)) | or(PL, purpose): the purpose branch adds nothing.
  EXPECT_EQ(Allow(r), (std::vector<std::string>{"AT", "BE", "DE", "NL", "PL"}));
  ASSERT_EQ(r.not_enforced.size(), 2u);
  EXPECT_NE(r.not_enforced[0].find("purpose eq"), std::string::npos);
  ExpectValidPolicy(r);
}

// Permissions are alternatives, like the branches of an "or": one that rests only on terms
// sovguard cannot enforce (a purpose) grants nothing, as an "or" branch resting on them adds
// nothing. An attacker's policy adds such a permission next to the real one to make the
// import allow every country. (Before: residency ANY.)
TEST(OdrlLogic, PermissionRestingOnlyOnUnenforceableTermsGrantsNothing) {
  const std::string de = R"({"action": "use", "constraint": {"leftOperand": "spatial",
      "operator": "eq", "rightOperand": "DE"}})";
  const std::string purpose = R"({"action": "use", "constraint": {"leftOperand": "purpose",
      "operator": "eq", "rightOperand": "research"}})";
  auto r = ImportOdrl(R"({"permission": [)" + de + ", " + purpose + "]}", {});
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(Allow(r), std::vector<std::string>{"DE"});
  ASSERT_EQ(r.not_enforced.size(), 1u);
  EXPECT_NE(r.not_enforced[0].find("permission[1].constraint[0]: purpose eq"), std::string::npos)
      << r.not_enforced[0];
  ExpectValidPolicy(r);
  // Alone, it grants nothing: the dataset may go nowhere.
  r = ImportOdrl(R"({"permission": [)" + purpose + "]}", {});
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_TRUE(Allow(r).empty());
  EXPECT_EQ(r.not_enforced.size(), 1u);
}

TEST(OdrlErrors, PreciseFailures) {
  auto r = ImportFile(Fixtures() / "odrl-bad-place.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].find("permission[0].constraint[0]: unknown place \"atlantis\""),
            std::string::npos);
  r = ImportOdrl("{not json", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].find("not JSON"), std::string::npos);
  r = ImportOdrl(R"({"@type": "Set"})", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].find("no ODRL policy found"), std::string::npos);
  r = ImportOdrl(R"({"permission": [{"action": "use", "constraint": {"leftOperand": "spatial",
      "operator": "lt", "rightOperand": "DE"}}]})",
                 {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].find("operator \"lt\" is not meaningful for a place"), std::string::npos);
  r = ImportOdrl(R"({"permission": [{"action": "use", "constraint": {"leftOperand": "dateTime",
      "operator": "lt", "rightOperand": "soon"}}]})",
                 {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].find("dateTime \"soon\" is not an xsd:dateTime"), std::string::npos);
  // Deep nesting is refused, not recursed into.
  r = ImportOdrl(std::string(100000, '[') + std::string(100000, ']'), {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].find("deeper than 64 levels"), std::string::npos) << r.errors[0];
  // An unknown action grants nothing and is reported.
  r = ImportOdrl(R"({"permission": [{"action": "modify"}]})", {});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(Allow(r).empty());
  EXPECT_EQ(r.not_enforced.size(), 1u);
  // Duties inside permissions are reported.
  r = ImportOdrl(R"({"permission": [{"action": "use", "duty": [{"action": "compensate"}]}]})", {});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Allow(r), std::vector<std::string>{"ANY"});
  ASSERT_EQ(r.not_enforced.size(), 1u);
  EXPECT_NE(r.not_enforced[0].find("permission[0].duty[0]"), std::string::npos);
}

TEST(OdrlCli, ImportExitCodes) {
  std::ostringstream out, err;
  EXPECT_EQ(RunPolicyCli({"policy", "import-odrl", (Fixtures() / "odrl-catenax.json").string(),
                          "--dataset", "parts"},
                         out, err),
            0);
  EXPECT_NE(out.str().find("id: \"parts\""), std::string::npos) << out.str();
  EXPECT_NE(err.str().find("not enforced by sovguard: permission[0]"), std::string::npos);
  EXPECT_EQ(RunPolicyCli(
                {"policy", "import-odrl", (Fixtures() / "odrl-catenax.json").string(), "--strict"},
                out, err),
            1);
  EXPECT_EQ(RunPolicyCli({"policy", "import-odrl"}, out, err), 2);
  EXPECT_EQ(RunPolicyCli({"policy", "import-odrl", "a", "--bogus"}, out, err), 2);
}

}  // namespace
}  // namespace sovguard::policy
