// Live verification over mutual TLS and fleet mode, against an in-process gRPC server serving
// real evidence from a private swtpm (the same AttestationServiceImpl sovguardd runs).
#include "attestation/verify/live.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <tss2/tss2_tpm2_types.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "attestation/cli/attest_cli.h"
#include "attestation/manifest/manifest.h"
#include "attestation/service/attestation_service.h"
#include "attestation/verify/verify_cli.h"
#include "base/file.h"
#include "base/openssl.h"
#include "tests/attestation/swtpm_fixture.h"
#include "tests/verify/evidence_fixture.h"

namespace sovguard::attestation {
namespace {

namespace ts = test_support;

void Must(const std::vector<std::string>& argv) {
  auto r = ts::Run(argv);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << ": " << r.output;
}

// One CA; a server certificate for localhost; auditor certificates "allowed" and "stranger".
void MakePki(const std::filesystem::path& d) {
  auto P = [&](const std::string& f) { return (d / f).string(); };
  Must({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", P("ca.key"), "-out", P("ca.pem"), "-subj", "/CN=live-test-ca", "-days", "1"});
  WriteFileAtomic(d / "server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  int serial = 10;
  for (std::string n : {"server", "allowed", "stranger"}) {
    Must({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", P(n + ".key"), "-out", P(n + ".csr"), "-subj",
          "/CN=" + (n == "server" ? std::string("localhost") : n)});
    std::vector<std::string> sign = {"openssl",
                                     "x509",
                                     "-req",
                                     "-in",
                                     P(n + ".csr"),
                                     "-CA",
                                     P("ca.pem"),
                                     "-CAkey",
                                     P("ca.key"),
                                     "-set_serial",
                                     std::to_string(serial++),
                                     "-days",
                                     "1",
                                     "-out",
                                     P(n + ".pem")};
    if (n == "server") sign.insert(sign.end(), {"-extfile", P("server.ext")});
    Must(sign);
  }
}

struct Node {
  // Called on the batcher's thread before each quote's snapshot is taken (tests hold a quote
  // in flight with it).
  using BeforeSnapshot = std::function<void(Node&)>;
  ts::Swtpm swtpm;
  ts::TempDir tmp;
  std::unique_ptr<tpm::Tpm> tpm;
  std::unique_ptr<measure::MeasurementLog> log;
  std::unique_ptr<evidence::EvidenceBuilder> builder;
  std::unique_ptr<service::AttestationServiceImpl> svc;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  BeforeSnapshot before_snapshot;
  explicit Node(service::BatchConfig batch = {}, bool log_commands = false,
                BeforeSnapshot before = {})
      : swtpm(log_commands), before_snapshot(std::move(before)) {
    ::setenv("GRPC_DNS_RESOLVER", "native", 1);
    MakePki(tmp.path());
    tpm = std::make_unique<tpm::Tpm>(swtpm.tcti());
    log = std::make_unique<measure::MeasurementLog>(
        *tpm, measure::MeasureConfig{tmp.path() / "state", measure::kDefaultSovguardPcr});
    test_support::MeasureDaemonStart(*log);
    evidence::EvidenceConfig cfg;
    cfg.node = "live-node";
    cfg.uefi_log = tmp.path() / "none";
    cfg.ima_log = tmp.path() / "none";
    builder = std::make_unique<evidence::EvidenceBuilder>(*tpm, *log, cfg);
    svc = std::make_unique<service::AttestationServiceImpl>(
        *builder,
        [this] {
          if (before_snapshot) before_snapshot(*this);
          v1::EnforcementSnapshot s;
          s.set_version(1);
          s.set_node("live-node");
          test_support::AddMechanisms(s);
          return s;
        },
        batch);
    service::MtlsConfig m;
    m.server_cert_pem = base::ReadFileText(tmp.path() / "server.pem");
    m.server_key_pem = base::ReadFileText(tmp.path() / "server.key");
    m.auditor_ca_pem = base::ReadFileText(tmp.path() / "ca.pem");
    m.allowed_client_sha256 = {
        service::CertificateFingerprint(base::ReadFileText(tmp.path() / "allowed.pem"))};
    grpc::ServerBuilder sb;
    sb.AddListeningPort("127.0.0.1:0", service::MakeMtlsServerCredentials(m), &port);
    sb.RegisterService(svc.get());
    server = sb.BuildAndStart();
    if (!server || port == 0) throw std::runtime_error("gRPC server did not start");
  }
  ~Node() { server->Shutdown(); }
  std::string target() const { return "localhost:" + std::to_string(port); }
  verify::TlsClient tls(const std::string& who = "allowed") const {
    return {base::ReadFileText(tmp.path() / "ca.pem"),
            base::ReadFileText(tmp.path() / (who + ".pem")),
            base::ReadFileText(tmp.path() / (who + ".key")), std::chrono::seconds(30)};
  }
};

TEST(LiveVerify, NodeOverMutualTlsWithCredentialActivation) {
  Node n;
  // Rooted by credential activation and the EK chain; the node's components approved by a
  // signed manifest; swtpm (software TPM, no UEFI log) and the test node's lack of a policy
  // (none applied, none approved) accepted by name.
  verify::Options o;
  o.ek_ca_dir = n.swtpm.ca_dir();
  o.waivers = {"software-tpm", "boot-log", "policy"};
  {
    base::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
    o.manifest_key_pem = ts::PublicPem(key.get());
    o.manifest_envelope = ts::SignManifest(ts::TestManifest("live"), key.get());
  }
  auto r = verify::VerifyNode(n.target(), n.tls(), o);
  ASSERT_TRUE(r.fetched) << r.error;
  EXPECT_TRUE(r.report.passed()) << verify::RenderText(r.report);
  EXPECT_EQ(r.report.node, "live-node");
  for (const char* c : {"ak.ek_binding", "nonce", "quote.signature", "ek.chain", "trust.root",
                        "manifest.components"})
    EXPECT_EQ(r.report.Find(c)->status, verify::Status::kPass)
        << c << ": " << r.report.Find(c)->detail;
  // An auditor certificate from the right CA but not on the node's allow-list: no evidence.
  auto denied = verify::VerifyNode(n.target(), n.tls("stranger"), o);
  EXPECT_FALSE(denied.fetched);
  EXPECT_NE(denied.error.find("GetIdentity"), std::string::npos) << denied.error;
}

TEST(LiveVerify, FleetModeOneLineEachAndExitCode) {
  Node n;
  const auto dir = n.tmp.path();
  const std::string good = n.target();
  WriteFileAtomic(dir / "fleet-ok",
                  "# two entries for the same node\n" + good + "\n\n" + good + "  # again\n");
  WriteFileAtomic(dir / "fleet-bad", good + "\nlocalhost:1\n");
  WriteFileAtomic(dir / "fleet-garbage", good + "\nnot a target\n");
  auto cli = [&](const std::string& fleet, std::string extra = "") {
    std::vector<std::string> args = {
        "--fleet", (dir / fleet).string(), "--ca", (dir / "ca.pem").string(), "--cert",
        (dir / "allowed.pem").string(), "--key", (dir / "allowed.key").string(), "--timeout", "10",
        // Rooted by activation + EK chain; swtpm, no UEFI log, no manifest and no policy
        // accepted by name (fleet mechanics here).
        "--ek-ca", n.swtpm.ca_dir().string(), "--allow-software-tpm", "--waive",
        "boot-log,manifest,policy"};
    if (!extra.empty()) args.push_back(extra);
    std::ostringstream out, err;
    int rc = verify::RunVerifyCli(args, out, err);
    return std::make_pair(rc, out.str() + err.str());
  };
  auto [rc, text] = cli("fleet-ok");
  EXPECT_EQ(rc, verify::kExitPass) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3) << text;
  EXPECT_NE(text.find("PASS  " + good + " live-node"), std::string::npos) << text;
  EXPECT_NE(text.find("fleet: 2 nodes, 2 passed, 0 failed, 0 unreachable"), std::string::npos)
      << text;
  std::tie(rc, text) = cli("fleet-bad");
  EXPECT_EQ(rc, verify::kExitFail) << text;
  EXPECT_NE(text.find("ERROR localhost:1"), std::string::npos) << text;
  EXPECT_NE(text.find("fleet: 2 nodes, 1 passed, 0 failed, 1 unreachable"), std::string::npos)
      << text;
  {
    // --html: the same round as one page, the unreachable node listed with its error.
    std::ostringstream out, err;
    const auto html = dir / "fleet.html";
    rc = verify::RunVerifyCli(
        {"--fleet", (dir / "fleet-bad").string(), "--ca", (dir / "ca.pem").string(), "--cert",
         (dir / "allowed.pem").string(), "--key", (dir / "allowed.key").string(), "--timeout", "10",
         "--ek-ca", n.swtpm.ca_dir().string(), "--allow-software-tpm", "--waive",
         "boot-log,manifest,policy", "--html", html.string()},
        out, err);
    EXPECT_EQ(rc, verify::kExitFail) << out.str() << err.str();
    const std::string page = base::ReadFileText(html);
    EXPECT_NE(page.find("2 nodes: 1 passed, 0 failed, 1 unreachable"), std::string::npos) << page;
    EXPECT_NE(page.find("live-node <span class=\"mono\">(" + good + ")"), std::string::npos);
    EXPECT_NE(page.find("(localhost:1)</span></h2><p>No verdict: "), std::string::npos);
    EXPECT_NE(page.find("<svg class=\"timeline\""), std::string::npos);  // its authentic log
  }
  std::tie(rc, text) = cli("fleet-garbage");
  EXPECT_EQ(rc, verify::kExitUsage) << text;
  EXPECT_NE(text.find("line 2"), std::string::npos) << text;
  std::tie(rc, text) = cli("fleet-ok", "--json");
  EXPECT_EQ(rc, verify::kExitPass) << text;
  // A failing check on every node: the policy digest the auditor expects is not the active one.
  std::ostringstream out, err;
  rc = verify::RunVerifyCli(
      {"--fleet", (dir / "fleet-ok").string(), "--ca", (dir / "ca.pem").string(), "--cert",
       (dir / "allowed.pem").string(), "--key", (dir / "allowed.key").string(), "--policy-digest",
       std::string(64, 'a')},
      out, err);
  EXPECT_EQ(rc, verify::kExitFail) << out.str() << err.str();
  EXPECT_NE(out.str().find("policy.bundle=POLICY_DIGEST_MISMATCH"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("0 passed, 2 failed"), std::string::npos) << out.str();
  // The same requirements as offline: every other one waived, but no policy named and the
  // missing one not waived: no node passes.
  std::ostringstream out2, err2;
  rc = verify::RunVerifyCli(
      {"--fleet", (dir / "fleet-ok").string(), "--ca", (dir / "ca.pem").string(), "--cert",
       (dir / "allowed.pem").string(), "--key", (dir / "allowed.key").string(), "--ek-ca",
       n.swtpm.ca_dir().string(), "--allow-software-tpm", "--waive", "boot-log,manifest"},
      out2, err2);
  EXPECT_EQ(rc, verify::kExitFail) << out2.str() << err2.str();
  EXPECT_NE(out2.str().find("policy.bundle=EXPECTED_POLICY_MISSING"), std::string::npos)
      << out2.str();
  EXPECT_NE(out2.str().find("0 passed, 2 failed"), std::string::npos) << out2.str();
}

// Auditors whose requests arrive while a quote is in flight are answered by the next single
// TPM2_Quote, counted at the TPM (swtpm's own command log): the first quote is held in flight
// until every other auditor's request waits behind it, so N auditors cost exactly two quotes (the
// first answers whoever had asked when it started, usually one). Each auditor
// (the live verifier: mutual TLS, credential activation, fresh nonce) verifies its own proof.
TEST(LiveVerify, ConcurrentAuditorsShareOneQuote) {
  constexpr size_t kAuditors = 8;
  std::atomic<bool> held{false};
  Node n(service::BatchConfig{.window = std::chrono::microseconds(0)}, /*log_commands=*/true,
         [&](Node& node) {
           if (held.exchange(true)) return;
           // Poll with a bound: the others queue behind this quote.
           const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
           auto queued = [&] {
             const auto st = node.svc->batch_stats();
             return st.in_flight + st.waiting;
           };
           while (queued() < kAuditors && std::chrono::steady_clock::now() < until)
             std::this_thread::sleep_for(std::chrono::milliseconds(2));
         });
  verify::Options o;
  o.ek_ca_dir = n.swtpm.ca_dir();
  o.waivers = {"software-tpm", "boot-log", "manifest", "policy"};
  const size_t quotes_before = n.swtpm.CommandsReceived(TPM2_CC_Quote);
  std::vector<verify::LiveResult> results(kAuditors);
  std::vector<std::thread> auditors;
  for (size_t i = 0; i < kAuditors; ++i)
    auditors.emplace_back([&, i] { results[i] = verify::VerifyNode(n.target(), n.tls(), o); });
  for (auto& t : auditors) t.join();
  std::map<std::string, size_t> trees;  // "of N reaches the signed root R" -> auditors
  for (const auto& r : results) {
    ASSERT_TRUE(r.fetched) << r.error;
    EXPECT_TRUE(r.report.passed()) << verify::RenderText(r.report);
    const auto* qd = r.report.Find("quote.qualifying_data");
    ASSERT_NE(qd, nullptr);
    EXPECT_EQ(qd->status, verify::Status::kPass) << qd->detail;
    trees[qd->detail.substr(qd->detail.find(" of "))]++;
  }
  // The quote held in flight, then one quote for everyone who queued behind it.
  EXPECT_EQ(n.swtpm.CommandsReceived(TPM2_CC_Quote) - quotes_before, 2u);
  const auto st = n.svc->batch_stats();
  EXPECT_EQ(st.quotes, 2u);
  EXPECT_EQ(st.requests, kAuditors);
  EXPECT_GE(st.largest_batch, kAuditors / 2);
  // Two trees; each auditor's proof names its tree's size, and the sizes add up to everyone.
  ASSERT_EQ(trees.size(), 2u);
  size_t total = 0;
  for (const auto& [tree, count] : trees) {
    EXPECT_EQ(tree.substr(4, tree.find(' ', 4) - 4), std::to_string(count)) << tree;
    total += count;
  }
  EXPECT_EQ(total, kAuditors);
}

// What an attacker (the node, or anyone between it and the auditor) can do with genuine batched
// evidence: every way of presenting a proof that does not put this auditor's own leaf under the
// signed root fails quote.qualifying_data with its own reason code. The quotes are real swtpm
// quotes (BuildBatch, the batcher's code path), the auditor anchored by its enrolled AK.
TEST(LiveVerify, BatchedProofAttacksFailWithTheirOwnCodes) {
  Node n;
  auto snapshot = [] {
    v1::EnforcementSnapshot s;
    s.set_version(1);
    s.set_node("live-node");
    test_support::AddMechanisms(s);
    return s;
  };
  auto batch = [&](const std::string& tag) {
    std::vector<Bytes> nonces;
    for (int i = 0; i < 4; ++i) {
      const std::string t = tag + "-auditor-" + std::to_string(i) + "-nonce";
      nonces.emplace_back(t.begin(), t.end());
    }
    std::vector<std::span<const uint8_t>> spans(nonces.begin(), nonces.end());
    return std::make_pair(nonces, n.builder->BuildBatch(spans, snapshot()));
  };
  const auto [nonces, ev] = batch("one");
  const auto [other_nonces, other] = batch("two");
  verify::Options o;
  o.ak_pub_pem = ev[0].ak().public_pem();
  o.waivers = {"software-tpm", "boot-log", "manifest", "policy"};
  auto as = [&](const Bytes& nonce) {
    auto x = o;
    x.nonce = nonce;
    return x;
  };
  auto qd = [&](const v1::Evidence& e, const Bytes& nonce) {
    auto r = verify::Verify(e, as(nonce));
    return *r.Find("quote.qualifying_data");
  };
  auto expect = [&](const v1::Evidence& e, std::string_view reason, const std::string& what) {
    const auto c = qd(e, nonces[0]);
    EXPECT_EQ(c.status, verify::Status::kFail) << what;
    EXPECT_EQ(c.reason, reason) << what << ": " << c.detail;
    return c;
  };
  // Genuine: every auditor of the batch passes with its own nonce, and only with it.
  for (size_t i = 0; i < ev.size(); ++i) {
    auto r = verify::Verify(ev[i], as(nonces[i]));
    EXPECT_TRUE(r.passed()) << verify::RenderText(r);
    EXPECT_EQ(ev[i].quote().attest(), ev[0].quote().attest());
  }
  const auto& a = ev[0];
  const auto& b = ev[1];
  // A proof for another nonce: auditor B's whole proof handed to auditor A.
  {
    auto e = a;
    *e.mutable_inclusion() = b.inclusion();
    const auto c = expect(e, verify::kReasonMerkleLeafMismatch, "B's proof for A");
    EXPECT_NE(c.detail.find("it proves that leaf in the quoted tree"), std::string::npos)
        << c.detail;
  }
  // A truncated path, an extended one, and one far beyond the bound.
  {
    auto e = a;
    e.mutable_inclusion()->mutable_path()->RemoveLast();
    expect(e, verify::kReasonMerklePathTruncated, "path without its last hash");
    e = a;
    e.mutable_inclusion()->add_path(a.inclusion().leaf());
    expect(e, verify::kReasonMerklePathExtended, "path with one hash more");
    e = a;
    for (int i = 0; i < 100000; ++i) e.mutable_inclusion()->add_path(std::string(32, 'x'));
    expect(e, verify::kReasonMerklePathExtended, "path of 100,002 hashes");
  }
  // A leaf swapped between two auditors: A's leaf presented at B's position.
  {
    auto e = a;
    e.mutable_inclusion()->set_leaf_index(b.inclusion().leaf_index());
    expect(e, verify::kReasonMerkleLeafPosition, "A's leaf at B's position");
  }
  // A quote over a root the proof does not reach: another batch's genuine quote, with its
  // carried qualifying data, clock and PCRs, under A's proof. The signature itself is valid.
  {
    auto e = a;
    *e.mutable_quote() = other[0].quote();
    *e.mutable_clock() = other[0].clock();
    auto r = verify::Verify(e, as(nonces[0]));
    EXPECT_EQ(r.Find("quote.signature")->status, verify::Status::kPass);
    expect(e, verify::kReasonMerkleRootMismatch, "another batch's quote");
  }
  // The carried qualifying data is not the signed extraData.
  {
    auto e = a;
    e.mutable_quote()->set_qualifying_data(other[0].quote().qualifying_data());
    expect(e, verify::kReasonQualifyingDataMismatch, "carried root differs from the signed one");
  }
  // Malformed proofs are refused before any hashing.
  auto malformed = [&](auto mutate, const std::string& what) {
    auto e = a;
    mutate(*e.mutable_inclusion());
    expect(e, verify::kReasonMerkleProofMalformed, what);
  };
  malformed([](v1::InclusionProof& p) { p.set_tree_size(0); }, "tree_size 0");
  malformed([](v1::InclusionProof& p) { p.set_tree_size(evidence::kMaxBatchLeaves + 1); },
            "tree_size above the bound");
  malformed([](v1::InclusionProof& p) { p.set_leaf_index(p.tree_size()); }, "index = size");
  malformed([](v1::InclusionProof& p) { p.mutable_salt()->pop_back(); }, "31-byte salt");
  malformed([](v1::InclusionProof& p) { p.mutable_leaf()->pop_back(); }, "31-byte leaf");
  malformed([](v1::InclusionProof& p) { p.mutable_path(0)->pop_back(); }, "31-byte sibling");
  {
    auto e = a;
    e.clear_inclusion();
    expect(e, verify::kReasonMerkleProofMalformed, "no proof");
  }
  // Another auditor's evidence is no evidence for this one: nonce and leaf both differ.
  {
    auto r = verify::Verify(b, as(nonces[0]));
    EXPECT_EQ(r.Find("nonce")->reason, verify::kReasonNonceMismatch);
    EXPECT_EQ(r.Find("quote.qualifying_data")->reason, verify::kReasonMerkleLeafMismatch);
  }
}

// The same credential activation, offline, through the command lines: the verifier makes the
// challenge from the node's identity, the operator answers it with `sovguardctl attest activate`,
// the verifier checks the answer together with the evidence.
TEST(LiveVerify, OfflineCredentialActivationThroughTheCommandLines) {
  Node n;
  const auto d = n.tmp.path();
  const std::vector<std::string> conn = {"--node", n.target(),
                                         "--ca",   (d / "ca.pem").string(),
                                         "--cert", (d / "allowed.pem").string(),
                                         "--key",  (d / "allowed.key").string()};
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.end(), conn.begin(), conn.end());
    std::ostringstream out, err;
    int rc = cli::RunAttestCli(args, out, err);
    EXPECT_EQ(rc, 0) << err.str();
    return rc;
  };
  auto verify = [&](std::vector<std::string> args) {
    std::ostringstream out, err;
    int rc = verify::RunVerifyCli(args, out, err);
    return std::make_pair(rc, out.str() + err.str());
  };
  ctl({"attest", "identity", "-o", (d / "id.json").string()});
  auto [rc, text] =
      verify({"make-challenge", "--identity", (d / "id.json").string(), "-o",
              (d / "challenge.json").string(), "--secret-out", (d / "secret").string()});
  ASSERT_EQ(rc, verify::kExitPass) << text;
  ctl({"attest", "activate", "--challenge", (d / "challenge.json").string(), "-o",
       (d / "response.json").string()});
  const std::string nonce = "00112233445566778899aabbccddeeff";
  ctl({"attest", "quote", "--nonce", nonce, "-o", (d / "ev.json").string()});
  const std::vector<std::string> binding = {"--ak-challenge", (d / "challenge.json").string(),
                                            "--ak-secret",    (d / "secret").string(),
                                            "--ak-response",  (d / "response.json").string()};
  std::vector<std::string> args = {"--nonce",
                                   nonce,
                                   "--json",
                                   "--ek-ca",
                                   n.swtpm.ca_dir().string(),
                                   "--allow-software-tpm",
                                   "--waive",
                                   "boot-log,manifest,policy"};
  args.insert(args.end(), binding.begin(), binding.end());
  args.push_back((d / "ev.json").string());
  std::tie(rc, text) = verify(args);
  EXPECT_EQ(rc, verify::kExitPass) << text;
  EXPECT_NE(text.find("\"ak.ek_binding\""), std::string::npos);
  // Another verifier's secret (the answer to someone else's challenge): not bound.
  WriteFileAtomic(d / "secret", std::string(64, '0') + "\n");
  std::tie(rc, text) = verify(args);
  EXPECT_EQ(rc, verify::kExitFail) << text;
  EXPECT_NE(text.find("AK_NOT_BOUND_TO_EK"), std::string::npos) << text;
  // Incomplete binding options: usage error.
  std::tie(rc, text) = verify({"--nonce", nonce, "--ak-challenge", (d / "challenge.json").string(),
                               (d / "ev.json").string()});
  EXPECT_EQ(rc, verify::kExitUsage) << text;
}

}  // namespace
}  // namespace sovguard::attestation
