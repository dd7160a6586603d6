// The auditor's `--require-strongest` against a real sovguardd on this kernel: the daemon's quote
// says which mechanism runs each enforcement path, the quoted log measured every downgrade, and
// sovguard-verify passes with --require-strongest exactly when no path runs below the top of its
// ladder; otherwise it fails MECHANISM_DOWNGRADED naming each downgraded path, while the same
// evidence without the option passes (nothing else is missing).
//
// The vm tier runs this binary on the distribution kernel and pins what it must see there:
//   SOVGUARD_EXPECT_STORAGE_OPEN=M  the storage-open path runs mechanism M;
//   SOVGUARD_EXPECT_DOWNGRADED=" a b" exactly paths a and b run below their strongest mechanism,
//                                    in the snapshot's order ("" : none, so the verdict passes).
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "attestation/evidence/evidence.pb.h"
#include "attestation/evidence/format.h"
#include "tests/harness/require.h"
#include "tests/support/daemon_process.h"
#include "tests/support/daemon_test.h"
#include "tests/support/reference_manifest.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;
using sovguard::attestation::v1::Evidence;

namespace {

constexpr const char* kNonce = "0011223344556677";

class DaemonStrongest : public st::HostDaemonTest {
 protected:
  DaemonStrongest() : HostDaemonTest("strongest") {}

  int Verify(const fs::path& evidence, const st::ReferenceManifest& manifest,
             const std::string& extra, nlohmann::json& report) {
    return st::VerifyAsAuditor(evidence, dir_ / "ak.pem", manifest, st::ShippedDefaultPolicy(),
                               kNonce, extra, report);
  }
  static nlohmann::json Check(const nlohmann::json& report, const std::string& name) {
    if (report.is_object() && report.contains("checks"))
      for (const auto& c : report.at("checks"))
        if (c.value("name", "") == name) return c;
    return nlohmann::json::object();
  }
};

TEST_F(DaemonStrongest, RequireStrongestPassesOnlyWhenNoPathRunsBelowTheTopOfItsLadder) {
  st::DaemonProcess daemon(dir_, {"--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data"});
  std::string why;
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(300), &why)) << why;
  const auto status = daemon.Status();

  // The auditor's quote through the local API, and the anchors a certifier would give for it.
  const fs::path evidence = dir_ / "evidence.json";
  const std::string socket = status.at("api_socket").get<std::string>().substr(5);  // "unix:"
  std::string out;
  ASSERT_EQ(st::RunShell(st::DaemonProcess::Ctl() + " attest quote --nonce " + kNonce +
                             " --socket " + socket + " -o " + evidence.string() + " 2>&1",
                         &out),
            0)
      << out;
  Evidence ev;
  sovguard::attestation::evidence::FromJson(st::ReadTextFile(evidence), ev);
  std::ofstream(dir_ / "ak.pem") << ev.ak().public_pem();
  const auto manifest = st::WriteReferenceManifest({&ev}, dir_, "daemon-strongest");

  // What the signed snapshot says runs each path, and which paths are below their strongest.
  std::string storage_open, downgraded;
  int n_downgraded = 0;
  for (const auto& m : ev.snapshot().mechanisms()) {
    std::printf("%-24s %-40s strongest %s%s\n", m.path().c_str(), m.active().c_str(),
                m.strongest().c_str(), m.downgraded() ? " (downgraded)" : "");
    EXPECT_FALSE(m.not_enforced()) << m.path() << ": " << m.reason();
    if (m.path() == "storage-open") storage_open = m.active();
    if (m.downgraded() || m.active() != m.strongest()) {
      ++n_downgraded;
      downgraded += " " + m.path();
    }
  }
  // Without the LSM neither the open nor the quota path runs its strongest mechanism.
  if (storage_open != "bpf-lsm:file_open") {
    EXPECT_NE(downgraded.find(" storage-open"), std::string::npos) << downgraded;
    EXPECT_NE(downgraded.find(" storage-io-quota"), std::string::npos) << downgraded;
  }
  // The daemon's status names the same mechanisms as the quote's snapshot.
  for (const auto& p : status.at("enforcement")) {
    if (p.at("path") == "storage-open") {
      EXPECT_EQ(p.value("mechanism", ""), storage_open);
    }
  }
  if (const char* want = std::getenv("SOVGUARD_EXPECT_STORAGE_OPEN")) {
    EXPECT_EQ(storage_open, want) << "storage-open on this kernel";
  }
  if (const char* want = std::getenv("SOVGUARD_EXPECT_DOWNGRADED")) {
    EXPECT_EQ(downgraded, want) << "the paths below their strongest mechanism on this kernel";
  }

  // Without --require-strongest the node passes: the anchors are complete, downgrades are named.
  nlohmann::json plain;
  EXPECT_EQ(Verify(evidence, manifest, "", plain), 0) << plain.dump(2) << daemon.Log();
  EXPECT_EQ(Check(plain, "snapshot.mechanisms").value("status", ""), "pass") << plain.dump(2);

  nlohmann::json strict;
  const int rc = Verify(evidence, manifest, "--require-strongest", strict);
  const auto check = Check(strict, "snapshot.mechanisms");
  std::printf("--require-strongest: exit %d, snapshot.mechanisms %s %s: %s\n", rc,
              check.value("status", "?").c_str(), check.value("reason", "").c_str(),
              check.value("detail", "").c_str());
  if (n_downgraded == 0) {
    EXPECT_EQ(rc, 0) << strict.dump(2);
    EXPECT_EQ(strict.value("verdict", ""), "pass") << strict.dump(2);
    EXPECT_EQ(check.value("status", ""), "pass") << strict.dump(2);
  } else {
    EXPECT_EQ(rc, 1) << strict.dump(2);
    EXPECT_EQ(strict.value("verdict", ""), "fail") << strict.dump(2);
    EXPECT_EQ(check.value("reason", ""), "MECHANISM_DOWNGRADED") << strict.dump(2);
    for (const auto& m : ev.snapshot().mechanisms()) {
      if (m.downgraded() || m.active() != m.strongest()) {
        EXPECT_NE(check.value("detail", "").find(m.path() + ": " + m.active()), std::string::npos)
            << m.path() << " not named: " << check.dump(2);
      }
    }
    // Every other check still passes: the downgrade is the only thing missing.
    for (const auto& c : strict.at("checks")) {
      if (c.value("name", "") != "snapshot.mechanisms") {
        EXPECT_NE(c.value("status", ""), "fail") << c.dump(2);
      }
    }
  }
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
}

}  // namespace
