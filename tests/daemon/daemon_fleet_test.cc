// sovguard-verify's fleet mode against real sovguardd nodes over their mutual-TLS auditor port:
// identity, credential activation (AK bound to the EK), fresh-nonce quote and every check, one
// line per node plus a summary; a node that stops answering makes the fleet fail.
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "attestation/evidence/format.h"
#include "tests/harness/require.h"
#include "tests/support/daemon_process.h"
#include "tests/support/daemon_test.h"
#include "tests/support/reference_manifest.h"

namespace {

namespace fs = std::filesystem;
namespace st = sovguard::test;

class DaemonFleet : public st::HostDaemonTest {
 protected:
  DaemonFleet() : HostDaemonTest("fleet") {}
  void SetUp() override {
    HostDaemonTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    fs::create_directories(dir_ / "pki");
  }
  void TearDown() override {
    nodes_.clear();
    HostDaemonTest::TearDown();
  }

  // A node with the shipped defaults and an auditor port; its own swtpm (sockets in its runtime
  // directory) and pin directory.
  st::DaemonProcess& StartNode(int i) {
    const fs::path pki = dir_ / "pki";
    nodes_.push_back(std::make_unique<st::DaemonProcess>(
        dir_ / ("node" + std::to_string(i)),
        std::vector<std::string>{"--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data",
                                 "--set", "api_listen=127.0.0.1:0", "--set",
                                 "api_cert=" + (pki / "server.pem").string(), "--set",
                                 "api_key=" + (pki / "server.key").string(), "--set",
                                 "auditor_ca=" + (pki / "ca.pem").string(), "--set",
                                 "auditor_allowlist=" + (pki / "auditors.allow").string()}));
    return *nodes_.back();
  }

  // What the auditor anchors a swtpm node with: credential activation (--fleet does it) and the
  // EK certificate chained to swtpm_setup's local CA (the nodes' swtpm_setup uses the system
  // one), the certifier's signed reference manifest, the policy the nodes load (the shipped
  // default), the software TPM and the missing UEFI log (none on a swtpm node) accepted by name.
  std::string Anchors() const {
    return "--ek-ca /var/lib/swtpm-localca " + manifest_.Args() + " " +
           st::PolicyDigestArg(st::ShippedDefaultPolicy()) +
           " --allow-software-tpm --waive boot-log";
  }

  // The certifier reviews the nodes: one quote of each through its local API, and a manifest
  // approving every component they measured.
  void Certify() { manifest_ = st::CertifyNodes(nodes_, dir_, "daemon-fleet"); }

  int Fleet(const std::string& targets, std::string* out, const std::string& extra = "") {
    std::ofstream(dir_ / "fleet.txt") << targets;
    const fs::path pki = dir_ / "pki";
    return st::RunShell(
        std::string(SOVGUARD_BINARY_DIR) + "/attestation/verify/sovguard-verify --fleet " +
            (dir_ / "fleet.txt").string() + " --ca " + (pki / "ca.pem").string() + " --cert " +
            (pki / "auditor.pem").string() + " --key " + (pki / "auditor.key").string() +
            " --timeout 60 " + Anchors() + " " + extra + " 2>&1",
        out);
  }

  std::vector<std::unique_ptr<st::DaemonProcess>> nodes_;
  st::ReferenceManifest manifest_;
};

TEST_F(DaemonFleet, VerifiesLiveNodesOverMutualTlsAndFailsWhenOneStops) {
  std::string out;
  ASSERT_EQ(st::RunShell("bash " + std::string(SOVGUARD_SOURCE_DIR) +
                             "/tests/daemon/make_test_pki.sh " + (dir_ / "pki").string() + " 2>&1",
                         &out),
            0)
      << out;
  std::string targets;
  for (int i = 0; i < 2; ++i) {
    auto& node = StartNode(i);
    std::string why;
    ASSERT_TRUE(node.WaitReady(std::chrono::seconds(120), &why)) << why;
    targets += node.Status().at("api_tls").get<std::string>() + "\n";
  }
  ASSERT_NO_FATAL_FAILURE(Certify());

  const int rc = Fleet(targets, &out);
  EXPECT_EQ(rc, 0) << out << nodes_[0]->Log();
  EXPECT_NE(out.find("fleet: 2 nodes, 2 passed, 0 failed, 0 unreachable"), std::string::npos)
      << out;
  // One line per node, naming the target it verified.
  for (const auto& n : nodes_) {
    const std::string target = n->Status().at("api_tls").get<std::string>();
    EXPECT_NE(out.find("PASS  " + target), std::string::npos) << target << "\n" << out;
  }

  // Continuous attestation: the second round's quotes extend the logs the first round
  // replayed, so only their new records are hashed; both rounds pass.
  EXPECT_EQ(Fleet(targets, &out, "--rounds 2 --interval 0"), 0) << out;
  EXPECT_NE(out.find("round 2\n"), std::string::npos) << out;
  size_t summaries = 0;
  for (size_t p = 0; (p = out.find("fleet: 2 nodes, 2 passed", p)) != std::string::npos; ++p)
    ++summaries;
  EXPECT_EQ(summaries, 2u) << out;
  EXPECT_NE(out.find("replay cache: 2 of 4 CEL replays continued from an earlier round"),
            std::string::npos)
      << out;

  // A node that stops answering fails the fleet; the other one still passes.
  const std::string gone = nodes_[1]->Status().at("api_tls").get<std::string>();
  EXPECT_EQ(nodes_[1]->Terminate(), 0) << nodes_[1]->Log();
  EXPECT_EQ(Fleet(targets, &out), 1) << out;
  EXPECT_NE(out.find("ERROR " + gone), std::string::npos) << out;
  EXPECT_NE(out.find("fleet: 2 nodes, 1 passed, 0 failed, 1 unreachable"), std::string::npos)
      << out;
  EXPECT_EQ(nodes_[0]->Terminate(), 0) << nodes_[0]->Log();
}

}  // namespace
