// The parts of enforcer/bpf_feature that need no kernel: which pinned ABI versions are refused
// (and how the refusal reads), and the finding kinds' names, which are measured into the TPM log
// as tamper:<kind> and read back by the verifier, counted in metrics and logged: a rename there
// must be a deliberate change of this test and the docs.
#include <gtest/gtest.h>

#include <cerrno>
#include <set>
#include <string>

#include "enforcer/bpf_feature/bpf_feature.h"
#include "enforcer/bpf_feature/finding.h"

namespace sovguard::bpf_feature {
namespace {

constexpr PinnedAbi kStorage{
    .owner = "storage state", .abi_name = "storage ABI version", .version = 7};

TEST(BpfFeatureTest, PinnedStateOfThisAbiOrFreshMapsIsAdopted) {
  EXPECT_NO_THROW(RefuseOtherAbi(0, kStorage, "/sys/fs/bpf/x"));  // fresh maps
  EXPECT_NO_THROW(RefuseOtherAbi(7, kStorage, "/sys/fs/bpf/x"));
}

TEST(BpfFeatureTest, PinnedStateOfAnotherAbiIsRefusedAndSaysWhy) {
  for (std::uint32_t other : {6u, 8u, 0xffffffffu}) {
    try {
      RefuseOtherAbi(other, kStorage, "/sys/fs/bpf/x");
      ADD_FAILURE() << "ABI version " << other << " adopted by a daemon of version 7";
    } catch (const Error& e) {
      EXPECT_EQ(e.error(), EPROTO);
      EXPECT_EQ(std::string(e.what()),
                "pinned storage state in /sys/fs/bpf/x has storage ABI version " +
                    std::to_string(other) +
                    ", this daemon 7: refusing to adopt it: Protocol error (errno 71)");
    }
  }
}

TEST(BpfFeatureTest, ErrorKeepsThePositiveErrnoWhicheverSignItGot) {
  EXPECT_EQ(Error("x", -ENOENT).error(), ENOENT);
  EXPECT_EQ(Error("x", ENOENT).error(), ENOENT);
  EXPECT_EQ(std::string(Error("open m", -ENOENT).what()),
            "open m: No such file or directory (errno 2)");
}

TEST(BpfFeatureTest, FindingNamesAreTheMeasuredOnes) {
  const std::pair<FindingKind, std::string> kNames[] = {
      {FindingKind::kProgramReplaced, "program-replaced"},
      {FindingKind::kGuestEntryAltered, "guest-entry-altered"},
      {FindingKind::kTapMissing, "tap-missing"},
      {FindingKind::kFilterMissing, "filter-missing"},
      {FindingKind::kFilterBypass, "filter-bypass"},
      {FindingKind::kGenerationAltered, "generation-altered"},
      {FindingKind::kPolicyTableAltered, "policy-table-altered"},
      {FindingKind::kProgramDetached, "program-detached"},
      {FindingKind::kLinkBroken, "link-broken"},
      {FindingKind::kPinMissing, "pin-missing"},
      {FindingKind::kPolicyMapAltered, "policy-map-altered"},
      {FindingKind::kMachineCgroupReplaced, "machine-cgroup-replaced"},
      {FindingKind::kAdoptedStateAltered, "adopted-state-altered"},
  };
  std::set<std::string> seen;
  for (const auto& [kind, name] : kNames) {
    EXPECT_EQ(FindingKindName(kind), name);
    EXPECT_TRUE(seen.insert(name).second) << name << " named twice";
  }
  // Every kind is in the table above (the last enumerator is the table's size - 1).
  EXPECT_EQ(static_cast<int>(FindingKind::kAdoptedStateAltered) + 1,
            static_cast<int>(std::size(kNames)));
}

}  // namespace
}  // namespace sovguard::bpf_feature
