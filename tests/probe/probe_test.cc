// The probe against the real kernel: every path is reported, the selected mechanism really loads
// and attaches, and a missing kernel feature is a reasoned downgrade, never a crash.
#include "enforcer/probe/probe.h"
#include "tests/harness/require.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <memory>
#include <set>
#include <string>

namespace en = sovguard::enforcer;

namespace {

std::string RunAndCapture(const std::string& cmd, int* status) {
  std::array<char, 4096> buf{};
  std::string out;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return out;
  size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  *status = ::pclose(pipe);
  return out;
}

class ProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SOVGUARD_REQUIRE(::geteuid() == 0, "root (the kernel tier loads BPF programs)");
  }
};

TEST_F(ProbeTest, ReportsEveryPathWithAReasonForEachFailure) {
  const en::ProbeReport report = en::RunProbe();
  ASSERT_EQ(report.paths.size(), en::ProbePaths().size());
  for (const auto& path : en::ProbePaths()) {
    const en::PathResult* r = report.Find(path);
    ASSERT_NE(r, nullptr) << path;
    ASSERT_FALSE(r->attempts.empty()) << path;
    for (const auto& a : r->attempts) {
      if (!a.ok) {
        EXPECT_FALSE(a.error.empty()) << path << " " << a.mechanism;
      }
    }
    if (r->guarantee != en::Guarantee::kNone) {
      EXPECT_TRUE(r->attempts.back().ok) << path;
      EXPECT_EQ(r->attempts.back().mechanism, r->mechanism);
    }
  }
}

TEST_F(ProbeTest, CgroupMechanismsPreventOnThisKernel) {
  // ENGINEERING.md: cgroup/connect4/6 and cgroup_device work here and prevent.
  const en::ProbeReport report = en::RunProbe();
  for (const char* path : {"storage-network", "storage-block-devices"}) {
    const en::PathResult* r = report.Find(path);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->guarantee, en::Guarantee::kPrevents) << path << ": " << r->attempts.back().error;
  }
}

TEST_F(ProbeTest, StorageOpenPreventsWithoutBpfLsm) {
  const en::ProbeReport report = en::RunProbe();
  const en::PathResult* r = report.Find("storage-open");
  ASSERT_NE(r, nullptr);
  ASSERT_GE(r->attempts.size(), 1u);
  EXPECT_EQ(r->attempts.front().mechanism, "bpf-lsm:file_open");
  // Without BPF LSM the downgrade is explicit (its attempt carries the reason) and the next rung
  // that works prevents: fmod_ret on security_file_open where the kernel has BPF trampolines (the
  // distribution kernel booted without bpf in lsm=), fanotify permission events where it has not
  // (this host, ENGINEERING.md).
  EXPECT_EQ(r->guarantee, en::Guarantee::kPrevents);
  if (!r->attempts.front().ok) {
    EXPECT_FALSE(r->attempts.front().error.empty());
    ASSERT_GE(r->attempts.size(), 2u);
    EXPECT_EQ(r->attempts[1].mechanism, "fmod_ret:security_file_open");
    const auto first_ok = std::find_if(r->attempts.begin(), r->attempts.end(),
                                       [](const en::Attempt& a) { return a.ok; });
    ASSERT_NE(first_ok, r->attempts.end());
    EXPECT_EQ(r->mechanism, first_ok->mechanism);
    EXPECT_TRUE(r->mechanism == "fmod_ret:security_file_open" ||
                r->mechanism == "fanotify:open_perm")
        << r->mechanism;
    for (auto a = r->attempts.begin(); a != first_ok; ++a)
      EXPECT_FALSE(a->error.empty()) << a->mechanism << ": a skipped rung must say why";
  }
  std::printf("storage-open: %s (%s)\n", r->mechanism.c_str(), en::ToString(r->guarantee).c_str());
}

TEST_F(ProbeTest, JsonRoundTripsAndTableNamesEveryPath) {
  const en::ProbeReport report = en::RunProbe();
  const auto again = en::ProbeReportFromJson(en::ToJson(report));
  EXPECT_EQ(en::ToJson(again), en::ToJson(report));
  const std::string table = en::ToTable(report);
  for (const auto& path : en::ProbePaths()) EXPECT_NE(table.find(path), std::string::npos) << path;
}

TEST_F(ProbeTest, CtlProbeJsonIsValidAndListsEveryPath) {
  int status = -1;
  const std::string out = RunAndCapture(
      std::string(SOVGUARD_BINARY_DIR) + "/enforcer/ctl/sovguardctl probe --json", &status);
  ASSERT_EQ(status, 0) << out;
  const auto j = nlohmann::json::parse(out);  // throws (test fails) on invalid JSON
  ASSERT_TRUE(j.at("paths").is_array());
  std::set<std::string> seen;
  for (const auto& p : j.at("paths")) {
    seen.insert(p.at("path").get<std::string>());
    EXPECT_TRUE(p.contains("mechanism"));
    const auto g = p.at("guarantee").get<std::string>();
    EXPECT_TRUE(g == "prevents" || g == "detects-and-kills" || g == "counts" || g == "none") << g;
  }
  for (const auto& path : en::ProbePaths()) EXPECT_TRUE(seen.count(path)) << path;
}

}  // namespace
