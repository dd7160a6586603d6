// The fleet verifier keeps OpenStack Placement traits in step with its verdicts, against Debian's
// real Placement (python3-placement, SQLite, noauth2, started here) and two real sovguardd nodes
// (swtpm each): a passing node's resource provider carries CUSTOM_SOVGUARD_ATTESTED and its
// dataset trait, so allocation candidates that require the trait name it; a node that fails
// (another policy than the pinned one), that stops answering, or whose pass is stale loses them
// within one round; a trait forged onto a failing node is taken away again; traits that are not
// sovguard's stay. The verdicts are also written as Prometheus text (--metrics-file), which
// promtool accepts.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include "attestation/evidence/format.h"
#include "base/unique_fd.h"
#include "tests/harness/process.h"
#include "tests/harness/require.h"
#include "tests/support/daemon_process.h"
#include "tests/support/daemon_test.h"
#include "tests/support/placement_service.h"
#include "tests/support/reference_manifest.h"

namespace {

namespace fs = std::filesystem;
namespace st = sovguard::test;
using sovguard::base::UniqueFd;
using std::chrono::seconds;

// A port on 127.0.0.1 nothing listens on right now (the kernel's pick).
int FreePort() {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(s.Get(), reinterpret_cast<sockaddr*>(&a), len) != 0 ||
      ::getsockname(s.Get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("no free port on 127.0.0.1");
  return ntohs(a.sin_port);
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = 0; (p = text.find(what, p)) != std::string::npos; p += what.size()) ++n;
  return n;
}

class DaemonPlacement : public st::HostDaemonTest {
 protected:
  DaemonPlacement() : HostDaemonTest("placement") {}
  void SetUp() override {
    HostDaemonTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    SOVGUARD_REQUIRE(st::PlacementService::Available(), "python3-placement (.ci/install-deps.sh)");
    fs::create_directories(dir_ / "pki");
    fs::create_directories(dir_ / "placement");
    std::ofstream(dir_ / "token") << "admin\n";  // noauth2's admin
    std::string out;
    ASSERT_EQ(
        st::RunShell("bash " + std::string(SOVGUARD_SOURCE_DIR) +
                         "/tests/daemon/make_test_pki.sh " + (dir_ / "pki").string() + " 2>&1",
                     &out),
        0)
        << out;
    placement_ = std::make_unique<st::PlacementService>(dir_ / "placement");
    url_ = placement_->url();
  }
  void TearDown() override {
    verifier_.reset();
    nodes_.clear();
    placement_.reset();
    HostDaemonTest::TearDown();
  }

  nlohmann::json Api(const std::string& method, const std::string& path,
                     const nlohmann::json& body = nullptr) {
    return placement_->Api(method, path, body);
  }
  std::string MakeProvider(const std::string& name) { return placement_->MakeProvider(name); }
  std::set<std::string> Traits(const std::string& uuid) {
    const auto v = placement_->Traits(uuid);
    return {v.begin(), v.end()};
  }
  // The providers allocation candidates for one VCPU on an attested host name.
  std::set<std::string> AttestedCandidates() {
    std::set<std::string> s;
    const auto j =
        Api("GET", "/allocation_candidates?resources=VCPU:1&required=CUSTOM_SOVGUARD_ATTESTED");
    for (const auto& [uuid, _] : j["provider_summaries"].items()) s.insert(uuid);
    return s;
  }

  st::DaemonProcess& StartNode(int i, int port, const fs::path& data_dir) {
    const fs::path pki = dir_ / "pki";
    nodes_.push_back(std::make_unique<st::DaemonProcess>(
        dir_ / ("node" + std::to_string(i)),
        std::vector<std::string>{"--data-dir", data_dir.string(), "--set",
                                 "api_listen=127.0.0.1:" + std::to_string(port), "--set",
                                 "api_cert=" + (pki / "server.pem").string(), "--set",
                                 "api_key=" + (pki / "server.key").string(), "--set",
                                 "auditor_ca=" + (pki / "ca.pem").string(), "--set",
                                 "auditor_allowlist=" + (pki / "auditors.allow").string()}));
    return *nodes_.back();
  }

  // The certifier's manifest approving what the nodes measured (one quote each).
  void Certify() { manifest_ = st::CertifyNodes(nodes_, dir_, "daemon-placement"); }

  // sovguard-verify --fleet with Placement, the policy pinned to the shipped default's digest.
  std::vector<std::string> Verifier(const std::string& fleet,
                                    const std::vector<std::string>& extra) {
    std::ofstream(dir_ / "fleet.txt") << fleet;
    const fs::path pki = dir_ / "pki";
    std::vector<std::string> v = {
        std::string(SOVGUARD_BINARY_DIR) + "/attestation/verify/sovguard-verify",
        "--fleet",
        (dir_ / "fleet.txt").string(),
        "--ca",
        (pki / "ca.pem").string(),
        "--cert",
        (pki / "auditor.pem").string(),
        "--key",
        (pki / "auditor.key").string(),
        "--ek-ca",
        "/var/lib/swtpm-localca",
        "--allow-software-tpm",
        "--waive",
        "boot-log",
        "--policy-digest",
        policy_sha256_,
        "--placement",
        url_,
        "--placement-token-file",
        (dir_ / "token").string(),
        "--placement-datasets",
        "default-eu-eea"};
    std::istringstream margs(manifest_.Args());
    for (std::string w; margs >> w;) v.push_back(w);
    v.insert(v.end(), extra.begin(), extra.end());
    return v;
  }
  std::string VerifierLog() const { return st::ReadTextFile(dir_ / "verifier.log"); }
  // Waits until the running verifier completed `rounds` more rounds than now (bounded).
  bool WaitRounds(size_t rounds) {
    const size_t start = Count(VerifierLog(), "placement: in step");
    return st::PollUntil(
        std::chrono::seconds(180),
        [&] { return Count(VerifierLog(), "placement: in step") >= start + rounds; },
        std::chrono::milliseconds(100));
  }

  std::string url_, policy_sha256_;
  std::unique_ptr<st::PlacementService> placement_;
  std::unique_ptr<st::Child> verifier_;
  std::vector<std::unique_ptr<st::DaemonProcess>> nodes_;
  st::ReferenceManifest manifest_;
};

TEST_F(DaemonPlacement, TraitsFollowVerdictsAndOnlyAttestedHostsAreCandidates) {
  const std::string kAttested = "CUSTOM_SOVGUARD_ATTESTED";
  const std::string kDataset = "CUSTOM_SOVGUARD_DATASET_DEFAULT_EU_EEA";
  // node1 runs from its own copy of the shipped policy data, so its policy can change later.
  const fs::path shipped = fs::path(SOVGUARD_SOURCE_DIR) / "policy/data";
  fs::create_directories(dir_ / "data1");
  for (const auto& e : fs::directory_iterator(shipped))
    fs::copy_file(e.path(), dir_ / "data1" / e.path().filename());
  const int port0 = FreePort(), port1 = FreePort();
  // One after the other: the first starts libvirtd if none runs, the second finds it.
  for (int i = 0; i < 2; ++i) {
    auto& n = StartNode(i, i == 0 ? port0 : port1, i == 0 ? shipped : dir_ / "data1");
    std::string why;
    ASSERT_TRUE(n.WaitReady(std::chrono::seconds(120), &why)) << why;
  }
  ASSERT_NO_FATAL_FAILURE(Certify());
  policy_sha256_ = nodes_[0]->Status().at("policy").at("sha256").get<std::string>();
  const std::string uuid0 = MakeProvider("sg-node-0"), uuid1 = MakeProvider("sg-node-1");
  const std::string t0 = "127.0.0.1:" + std::to_string(port0),
                    t1 = "127.0.0.1:" + std::to_string(port1);
  const std::string fleet = t0 + " sg-node-0\n" + t1 + " sg-node-1\n";

  // Stale: node0 passes, but the round also waits on a node that never answers (a listener that
  // never accepts) longer than --stale-after: node0's pass is stale by the time the round ends,
  // and it gets no trait.
  UniqueFd tarpit(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  ASSERT_EQ(::bind(tarpit.Get(), reinterpret_cast<sockaddr*>(&a), alen), 0);
  ASSERT_EQ(::listen(tarpit.Get(), 4), 0);
  ASSERT_EQ(::getsockname(tarpit.Get(), reinterpret_cast<sockaddr*>(&a), &alen), 0);
  {
    std::ofstream(dir_ / "fleet-stale.txt")
        << t0 << " sg-node-0\n127.0.0.1:" << ntohs(a.sin_port) << " sg-tarpit\n";
  }
  auto argv = Verifier(fleet, {"--rounds", "1", "--timeout", "3", "--stale-after", "2"});
  argv[2] = (dir_ / "fleet-stale.txt").string();
  auto r = st::Run(argv);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("PASS  " + t0), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("placement: sg-node-0: passed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("verdict stale, traits removed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("placement: sg-tarpit: NOT IN STEP: no resource provider named"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(Traits(uuid0), std::set<std::string>{"HW_CPU_X86_AVX2"});
  tarpit.Reset();

  // Continuous: both pass; each provider gets sovguard's traits and keeps its own.
  verifier_ = std::make_unique<st::Child>(
      Verifier(fleet, {"--rounds", "0", "--interval", "1", "--timeout", "30", "--metrics-file",
                       (dir_ / "sovguard-verify.prom").string()}),
      dir_ / "verifier.log");
  ASSERT_TRUE(WaitRounds(1)) << VerifierLog();
  const std::set<std::string> attested = {"HW_CPU_X86_AVX2", kAttested, kDataset};
  EXPECT_EQ(Traits(uuid0), attested) << VerifierLog();
  EXPECT_EQ(Traits(uuid1), attested) << VerifierLog();
  EXPECT_EQ(AttestedCandidates(), (std::set<std::string>{uuid0, uuid1}));

  // node1 comes back with another policy than the pinned one: it fails, and within one round
  // (the first that starts after it answers again) it carries none of sovguard's traits.
  std::ofstream(dir_ / "data1/default-eu-eea.textproto", std::ios::app) << "# changed\n";
  ASSERT_EQ(nodes_[1]->Terminate(), 0) << nodes_[1]->Log();
  nodes_[1]->Restart();
  std::string why;
  ASSERT_TRUE(nodes_[1]->WaitReady(std::chrono::seconds(120), &why)) << why;
  const size_t fails_before = Count(VerifierLog(), "FAIL  " + t1);
  ASSERT_TRUE(WaitRounds(2)) << VerifierLog();
  const std::string after_fail = VerifierLog();
  EXPECT_GT(Count(after_fail, "FAIL  " + t1), fails_before) << after_fail;
  EXPECT_NE(after_fail.find("POLICY_DIGEST_MISMATCH"), std::string::npos) << after_fail;
  EXPECT_EQ(Traits(uuid1), std::set<std::string>{"HW_CPU_X86_AVX2"}) << after_fail;
  EXPECT_EQ(Traits(uuid0), attested) << after_fail;
  EXPECT_EQ(AttestedCandidates(), std::set<std::string>{uuid0});

  // A forger puts the trait on the failing node by hand (generation-checked, as a client
  // would): the next round takes it away again, and the verifier never added it.
  const auto gen = Api("GET", "/resource_providers/" + uuid1)["generation"];
  Api("PUT", "/resource_providers/" + uuid1 + "/traits",
      {{"resource_provider_generation", gen}, {"traits", {"HW_CPU_X86_AVX2", kAttested}}});
  ASSERT_TRUE(WaitRounds(2)) << VerifierLog();
  EXPECT_EQ(Traits(uuid1), std::set<std::string>{"HW_CPU_X86_AVX2"}) << VerifierLog();
  EXPECT_NE(VerifierLog().find("placement: sg-node-1 (" + uuid1 + ") -" + kAttested),
            std::string::npos)
      << VerifierLog();
  const std::string since_fail = VerifierLog().substr(after_fail.size());
  EXPECT_EQ(since_fail.find("placement: sg-node-1 (" + uuid1 + ") +"), std::string::npos)
      << since_fail;

  // node0 stops answering: within one round it is no candidate either.
  ASSERT_EQ(nodes_[0]->Terminate(), 0) << nodes_[0]->Log();
  ASSERT_TRUE(WaitRounds(2)) << VerifierLog();
  EXPECT_NE(VerifierLog().find("ERROR " + t0), std::string::npos) << VerifierLog();
  EXPECT_EQ(Traits(uuid0), std::set<std::string>{"HW_CPU_X86_AVX2"}) << VerifierLog();
  EXPECT_TRUE(AttestedCandidates().empty());

  // The metrics file: per-node verdicts and reason codes, valid exposition for promtool.
  const std::string prom = st::ReadTextFile(dir_ / "sovguard-verify.prom");
  EXPECT_NE(prom.find("sovguard_verify_node_pass{node=\"" + t0 + "\"} 0"), std::string::npos)
      << prom;
  EXPECT_NE(prom.find("sovguard_verify_node_failure{node=\"" + t0 +
                      "\",check=\"evidence\",reason=\"UNREACHABLE\"} 1"),
            std::string::npos)
      << prom;
  EXPECT_NE(prom.find("reason=\"POLICY_DIGEST_MISMATCH\"} 1"), std::string::npos) << prom;
  EXPECT_NE(prom.find("sovguard_verify_node_last_pass_timestamp_seconds{node=\"" + t0 + "\"}"),
            std::string::npos)
      << prom;
  EXPECT_NE(
      prom.find("sovguard_verify_placement_in_step{node=\"" + t1 + "\",provider=\"sg-node-1\"} 1"),
      std::string::npos)
      << prom;
  r = st::Run({"promtool", "check", "metrics"}, prom);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // The token never appears in what the verifier prints.
  EXPECT_EQ(VerifierLog().find("admin"), std::string::npos);

  verifier_.reset();
  EXPECT_EQ(nodes_[1]->Terminate(), 0) << nodes_[1]->Log();
}

}  // namespace
