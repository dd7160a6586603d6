// The fixture of sovguardd end-to-end tests on the host's own TPM path: root and, where the test
// needs the daemon's swtpm, no hardware TPM (the daemon would take /dev/tpmrm0 instead); a fresh
// directory dir_ (<tmp>/sg-<tag>-<pid>) removed after the test; libvirtd and virtlogd left as the
// test found them.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "tests/harness/require.h"
#include "tests/support/daemon_process.h"

namespace sovguard::test {

class HostDaemonTest : public ::testing::Test {
 protected:
  explicit HostDaemonTest(std::string tag, bool needs_swtpm = true)
      : tag_(std::move(tag)), needs_swtpm_(needs_swtpm) {}

  // Derived SetUp()s call this first and return when IsSkipped() || HasFatalFailure().
  void SetUp() override {
    SOVGUARD_REQUIRE(::geteuid() == 0, "root (integration tier)");
    if (needs_swtpm_) {
      SOVGUARD_REQUIRE(!std::filesystem::exists("/dev/tpmrm0"),
                       "no hardware TPM at /dev/tpmrm0 (the daemon would take it, not swtpm)");
    }
    dir_ =
        std::filesystem::temp_directory_path() / ("sg-" + tag_ + "-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // The daemon's arguments for the policy data shipped in the source tree.
  static std::vector<std::string> ShippedDataArgs() {
    return {"--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data"};
  }

  std::filesystem::path dir_;
  ServicesAsFound services_;

 private:
  std::string tag_;
  bool needs_swtpm_;
};

}  // namespace sovguard::test
