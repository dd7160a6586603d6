// The verifier's Placement client against Debian's real Placement (python3-placement, SQLite,
// noauth2, on 127.0.0.1, started and stopped here; needs no root and no node): sovguard's traits
// set and removed, every other trait kept, a CUSTOM_SOVGUARD_* trait someone else set removed,
// an unknown provider and a token without the right to write traits reported (the token never
// in the message), custom traits created before use, another writer's concurrent update (409)
// read again and kept, a conflict on every write given up with the reason.
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "attestation/common/bytes.h"
#include "attestation/verify/fleet_keeper.h"
#include "attestation/verify/placement.h"
#include "tests/harness/require.h"
#include "tests/support/placement_service.h"

namespace {

namespace fs = std::filesystem;
namespace st = sovguard::test;
namespace verify = sovguard::attestation::verify;
using Strings = std::vector<std::string>;

class PlacementClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SOVGUARD_REQUIRE(st::PlacementService::Available(), "python3-placement (.ci/install-deps.sh)");
    dir_ = fs::temp_directory_path() / ("sg-placement-client-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    sovguard::attestation::WriteFileAtomic(dir_ / "token", "admin\n");
    placement_ = std::make_unique<st::PlacementService>(dir_ / "placement");
  }
  void TearDown() override {
    placement_.reset();
    fs::remove_all(dir_);
  }
  verify::PlacementConfig Config(const std::string& token_file) const {
    return {placement_->url(), token_file, std::chrono::seconds(30)};
  }
  fs::path dir_;
  std::unique_ptr<st::PlacementService> placement_;
};

TEST_F(PlacementClientTest, ReconcilesOnlySovguardsTraits) {
  const std::string uuid = placement_->MakeProvider("compute-1");
  verify::PlacementClient c(Config((dir_ / "token").string()));
  c.RefreshToken();
  const std::string attested(verify::kAttestedTrait);
  const std::string dataset = verify::DatasetTrait("health-de");
  const std::set<std::string> pass = {attested, dataset};

  auto ch = c.Reconcile("compute-1", pass);
  ASSERT_EQ(ch.error, "");
  EXPECT_EQ(ch.uuid, uuid);
  EXPECT_EQ(ch.added, (Strings{attested, dataset}));
  EXPECT_EQ(placement_->Traits(uuid), (Strings{attested, dataset, "HW_CPU_X86_AVX2"}));
  // In step already: nothing written (the generation stays).
  const auto gen = placement_->Api("GET", "/resource_providers/" + uuid).at("generation");
  ch = c.Reconcile("compute-1", pass);
  EXPECT_EQ(ch.error, "");
  EXPECT_TRUE(ch.added.empty() && ch.removed.empty());
  EXPECT_EQ(placement_->Api("GET", "/resource_providers/" + uuid).at("generation"), gen);

  // Someone else adds a trait of their own and a CUSTOM_SOVGUARD_ one: a failing verdict removes
  // every CUSTOM_SOVGUARD_ trait and keeps theirs.
  placement_->Api("PUT", "/traits/CUSTOM_RACK_7");
  placement_->Api("PUT", "/traits/CUSTOM_SOVGUARD_FORGED");
  placement_->Api(
      "PUT", "/resource_providers/" + uuid + "/traits",
      {{"resource_provider_generation", gen},
       {"traits",
        {"HW_CPU_X86_AVX2", attested, dataset, "CUSTOM_RACK_7", "CUSTOM_SOVGUARD_FORGED"}}});
  ch = c.Reconcile("compute-1", {});
  EXPECT_EQ(ch.error, "");
  EXPECT_EQ(ch.removed, (Strings{attested, dataset, "CUSTOM_SOVGUARD_FORGED"}));
  EXPECT_EQ(placement_->Traits(uuid), (Strings{"CUSTOM_RACK_7", "HW_CPU_X86_AVX2"}));

  // A provider Placement does not know: said, nothing written.
  ch = c.Reconcile("compute-404", pass);
  EXPECT_NE(ch.error.find("no resource provider named \"compute-404\""), std::string::npos)
      << ch.error;
}

// A token that may read but not write traits (noauth2: any name but "admin" is no admin): the
// failure names the HTTP status and never carries the token.
TEST_F(PlacementClientTest, AForbiddenWriteIsReportedWithoutTheToken) {
  placement_->MakeProvider("compute-2");
  sovguard::attestation::WriteFileAtomic(dir_ / "weak", "s3cr3t-weak-token\n");
  verify::PlacementClient c(Config((dir_ / "weak").string()));
  c.RefreshToken();
  const auto ch = c.Reconcile("compute-2", {std::string(verify::kAttestedTrait)});
  EXPECT_NE(ch.error.find("HTTP 403"), std::string::npos) << ch.error;
  EXPECT_EQ(ch.error.find("s3cr3t"), std::string::npos) << ch.error;
}

// Another writer changes the provider between our read and our write, twice (a trait of its own
// each time, bumping the generation): Placement answers 409 to our first two writes; the client
// reads again, recomputes, and the third write lands with ours and both of theirs.
TEST_F(PlacementClientTest, AConcurrentUpdateIsReadAgainAndKept) {
  const std::string uuid = placement_->MakeProvider("compute-3");
  verify::PlacementClient c(Config((dir_ / "token").string()));
  c.RefreshToken();
  const std::string attested(verify::kAttestedTrait);
  const int before = placement_->TraitWrites();
  placement_->InjectConflicts(2);
  const auto ch = c.Reconcile("compute-3", {attested});
  EXPECT_EQ(ch.error, "");
  EXPECT_EQ(ch.added, (Strings{attested}));
  EXPECT_EQ(placement_->TraitWrites() - before, 3);
  EXPECT_EQ(placement_->Traits(uuid), (Strings{"CUSTOM_OTHER_WRITER_1", "CUSTOM_OTHER_WRITER_2",
                                               attested, "HW_CPU_X86_AVX2"}));
}

// A conflict on every write: the client stops after 5 writes, says so, and claims nothing; the
// keeper reports the provider NOT IN STEP, its round fails (sovguard-verify exits non-zero) and
// the in-step metric is 0. The provider keeps what the other writer left, without our trait.
TEST_F(PlacementClientTest, AConflictOnEveryWriteGivesUpAndSaysSo) {
  const std::string uuid = placement_->MakeProvider("compute-4");
  verify::PlacementClient c(Config((dir_ / "token").string()));
  c.RefreshToken();
  const std::string attested(verify::kAttestedTrait);
  int before = placement_->TraitWrites();
  placement_->InjectConflicts(1000);
  const auto ch = c.Reconcile("compute-4", {attested});
  EXPECT_NE(ch.error.find("HTTP 409"), std::string::npos) << ch.error;
  EXPECT_NE(ch.error.find("generation conflict on all 5 writes"), std::string::npos) << ch.error;
  EXPECT_NE(ch.error.find("traits not in step"), std::string::npos) << ch.error;
  EXPECT_EQ(placement_->TraitWrites() - before, 5);
  auto traits = placement_->Traits(uuid);
  EXPECT_EQ(std::count(traits.begin(), traits.end(), attested), 0);
  EXPECT_EQ(traits.size(), 6u);  // HW_CPU_X86_AVX2 and CUSTOM_OTHER_WRITER_1..5

  verify::KeeperOptions o;
  o.placement = Config((dir_ / "token").string());
  o.metrics_file = (dir_ / "verify.prom").string();
  verify::FleetKeeper keeper(o, verify::ParseFleetNodes("192.0.2.4:7443 compute-4\n"),
                             std::chrono::seconds(60), false);
  std::vector<verify::LiveResult> r(1);
  r[0].target = "192.0.2.4:7443";
  r[0].fetched = true;
  r[0].report.checks.push_back({"quote.signature", verify::Status::kPass, "OK", ""});
  before = placement_->TraitWrites();
  std::ostringstream out;
  EXPECT_FALSE(keeper.Round(r, std::chrono::system_clock::now(), out));
  EXPECT_EQ(placement_->TraitWrites() - before, 5);
  EXPECT_NE(out.str().find("placement: compute-4: NOT IN STEP: PUT /resource_providers/" + uuid +
                           "/traits: HTTP 409"),
            std::string::npos)
      << out.str();
  EXPECT_EQ(out.str().find("placement: in step"), std::string::npos) << out.str();
  const auto prom = sovguard::attestation::ReadFileBytes(dir_ / "verify.prom");
  const std::string text(prom.begin(), prom.end());
  EXPECT_NE(text.find("sovguard_verify_placement_in_step{node=\"192.0.2.4:7443\","
                      "provider=\"compute-4\"} 0\n"),
            std::string::npos)
      << text;
  traits = placement_->Traits(uuid);
  EXPECT_EQ(std::count(traits.begin(), traits.end(), attested), 0);

  // The other writer stops: the next round brings the provider in step.
  placement_->InjectConflicts(0);
  out.str("");
  EXPECT_TRUE(keeper.Round(r, std::chrono::system_clock::now(), out)) << out.str();
  traits = placement_->Traits(uuid);
  EXPECT_EQ(std::count(traits.begin(), traits.end(), attested), 1);
}

}  // namespace
