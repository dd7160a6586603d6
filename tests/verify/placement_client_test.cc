// The verifier's Placement client against Debian's real Placement (python3-placement, SQLite,
// noauth2, on 127.0.0.1, started and stopped here; needs no root and no node): sovguard's traits
// set and removed, every other trait kept, a CUSTOM_SOVGUARD_* trait someone else set removed,
// an unknown provider and a token without the right to write traits reported (the token never
// in the message), custom traits created before use.
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "attestation/common/bytes.h"
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

}  // namespace
