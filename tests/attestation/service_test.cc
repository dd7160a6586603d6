// Integration tests: the gRPC attestation service over a Unix socket and over mutual TLS with an
// auditor allow-list, and `sovguardctl attest` (RunAttestCli) against it.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include "attestation/cli/attest_cli.h"
#include "attestation/service/attestation_service.h"
#include "attestation/tpm/credential.h"
#include "base/file.h"
#include "tests/attestation/swtpm_fixture.h"

namespace sovguard::attestation {
namespace {

// CA, server and client certificates made with the openssl CLI (P-256, 1 day).
struct Pki {
  explicit Pki(const std::filesystem::path& d) : dir(d) {
    std::filesystem::create_directories(dir);
    Must({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", P("ca.key"), "-out", P("ca.pem"), "-subj",
          "/CN=sovguard-test-auditor-ca", "-days", "1"});
    std::ofstream(dir / "server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    Leaf("server", "localhost", "ca", true);
    Leaf("auditor", "auditor-allowed", "ca", false);
    Leaf("intruder", "auditor-not-listed", "ca", false);
  }
  std::string P(const std::string& f) const { return (dir / f).string(); }
  void Must(const std::vector<std::string>& argv) {
    auto r = test_support::Run(argv);
    ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << argv[1] << ": " << r.output;
  }
  void Leaf(const std::string& name, const std::string& cn, const std::string& ca, bool server) {
    Must({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", P(name + ".key"), "-out", P(name + ".csr"), "-subj", "/CN=" + cn});
    std::vector<std::string> sign = {"openssl",
                                     "x509",
                                     "-req",
                                     "-in",
                                     P(name + ".csr"),
                                     "-CA",
                                     P(ca + ".pem"),
                                     "-CAkey",
                                     P(ca + ".key"),
                                     "-set_serial",
                                     std::to_string(++serial),
                                     "-days",
                                     "1",
                                     "-out",
                                     P(name + ".pem")};
    if (server) sign.insert(sign.end(), {"-extfile", P("server.ext")});
    Must(sign);
  }
  std::filesystem::path dir;
  int serial = 0;
};

// The evidence answers `nonce` with its own leaf, and the path from it reaches the quoted root.
void ExpectOwnProof(const v1::Evidence& ev, const std::string& nonce) {
  EXPECT_EQ(ev.nonce(), nonce);
  const auto& p = ev.inclusion();
  Sha256Digest snap{};
  ASSERT_EQ(ev.snapshot_sha256().size(), snap.size());
  std::copy(ev.snapshot_sha256().begin(), ev.snapshot_sha256().end(), snap.begin());
  const auto leaf = evidence::LeafHash(
      std::span(reinterpret_cast<const uint8_t*>(nonce.data()), nonce.size()), snap,
      std::span(reinterpret_cast<const uint8_t*>(p.salt().data()), p.salt().size()));
  EXPECT_EQ(std::string(leaf.begin(), leaf.end()), p.leaf());
  std::vector<Sha256Digest> path;
  for (const auto& h : p.path()) {
    ASSERT_EQ(h.size(), 32u);
    path.emplace_back();
    std::copy(h.begin(), h.end(), path.back().begin());
  }
  const auto root = evidence::RootFromInclusionPath(leaf, p.leaf_index(), p.tree_size(), path);
  EXPECT_EQ(std::string(root.begin(), root.end()), ev.quote().qualifying_data());
}

// Polls `done` every 2 ms for at most 120 s.
template <typename F>
bool PollUntil(F done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // gRPC's c-ares resolver leaks a few bytes per process (reported by LeakSanitizer in this
    // Debug build); the system resolver is enough to find "localhost".
    ::setenv("GRPC_DNS_RESOLVER", "native", 1);
    evidence::EvidenceConfig cfg;
    cfg.node = "svc-node";
    cfg.uefi_log = tmp_.path() / "none";
    cfg.ima_log = tmp_.path() / "none";
    builder_ = std::make_unique<evidence::EvidenceBuilder>(tpm_, log_, cfg);
    service_ = std::make_unique<service::AttestationServiceImpl>(*builder_, [this] {
      v1::EnforcementSnapshot s;
      s.set_version(1);
      s.set_node("svc-node");
      s.add_guests()->set_name("vm-" + std::to_string(++snapshots_));
      return s;
    });
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }
  // Starts the server with a Unix socket listener and, if given, an mTLS TCP listener.
  void Start(const service::MtlsConfig* mtls) {
    grpc::ServerBuilder b;
    socket_ = tmp_.path() / "run/api.sock";
    b.AddListeningPort(service::PrepareUnixSocket(socket_), grpc::InsecureServerCredentials());
    if (mtls) {
      b.AddListeningPort("127.0.0.1:0", service::MakeMtlsServerCredentials(*mtls), &port_);
    }
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_);
    if (mtls) {
      ASSERT_GT(port_, 0);
    }
  }
  std::unique_ptr<v1::Attestation::Stub> TlsStub(const Pki& pki, const std::string& client) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = base::ReadFileText(pki.dir / "ca.pem");
    o.pem_cert_chain = base::ReadFileText(pki.dir / (client + ".pem"));
    o.pem_private_key = base::ReadFileText(pki.dir / (client + ".key"));
    return v1::Attestation::NewStub(
        grpc::CreateChannel("localhost:" + std::to_string(port_), grpc::SslCredentials(o)));
  }
  static grpc::Status Quote(v1::Attestation::Stub& stub, const std::string& nonce,
                            v1::Evidence* ev) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::QuoteRequest req;
    req.set_nonce(nonce);
    return stub.Quote(&ctx, req, ev);
  }

  test_support::Swtpm swtpm_;
  test_support::TempDir tmp_;
  tpm::Tpm tpm_{swtpm_.tcti()};
  measure::MeasurementLog log_{tpm_, {tmp_.path() / "state", measure::kDefaultSovguardPcr}};
  std::unique_ptr<evidence::EvidenceBuilder> builder_;
  std::unique_ptr<service::AttestationServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::filesystem::path socket_;
  int port_ = 0;
  std::atomic<int> snapshots_{0};
};

TEST_F(ServiceTest, QuoteOverUnixSocketAndCli) {
  Start(nullptr);
  auto stub = v1::Attestation::NewStub(
      grpc::CreateChannel("unix:" + socket_.string(), grpc::InsecureChannelCredentials()));
  v1::Evidence ev;
  auto st = Quote(*stub, "0123456789abcdef", &ev);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(ev.nonce(), "0123456789abcdef");
  EXPECT_EQ(ev.snapshot().guests(0).name(), "vm-1");
  // Short nonces are refused before the TPM is touched.
  v1::Evidence none;
  EXPECT_EQ(Quote(*stub, "short", &none).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // sovguardctl attest quote ... -o evidence.json, then export for tpm2_checkquote and verify.
  const auto out_file = tmp_.path() / "evidence.json";
  std::ostringstream out, err;
  int rc = cli::RunAttestCli({"attest", "quote", "--nonce", "00112233445566778899aabbccddeeff",
                              "--socket", socket_.string(), "-o", out_file.string()},
                             out, err);
  ASSERT_EQ(rc, 0) << err.str();
  v1::Evidence from_cli;
  evidence::FromJson(base::ReadFileText(out_file), from_cli);
  EXPECT_EQ(ToHex(std::span(reinterpret_cast<const uint8_t*>(from_cli.nonce().data()),
                            from_cli.nonce().size())),
            "00112233445566778899aabbccddeeff");
  std::ostringstream out2, err2;
  rc = cli::RunAttestCli(
      {"attest", "export-checkquote", "-i", out_file.string(), "-d", (tmp_.path() / "cq").string()},
      out2, err2);
  ASSERT_EQ(rc, 0) << err2.str();
  auto args = evidence::ExportForCheckquote(from_cli, tmp_.path() / "cq");
  std::vector<std::string> argv;
  argv.reserve(args.size() + 1);
  argv.push_back("tpm2_checkquote");
  for (const auto& a : args) argv.push_back(a);
  auto r = test_support::Run(argv);
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // sovguardctl attest identity: AK and EK certificates for enrolment.
  std::ostringstream id_out, id_err;
  ASSERT_EQ(cli::RunAttestCli({"attest", "identity", "--socket", socket_.string(), "-o", "-"},
                              id_out, id_err),
            0)
      << id_err.str();
  v1::Identity id;
  evidence::FromJson(id_out.str(), id);
  EXPECT_EQ(id.ak().public_pem(), from_cli.ak().public_pem());
  EXPECT_GE(id.ek_certificates_size(), 1);

  // Usage errors are exit code 2 and say what is wrong.
  std::ostringstream o3, e3;
  EXPECT_EQ(cli::RunAttestCli({"attest", "quote", "--nonce", "zz", "-o", "-"}, o3, e3), 1);
  EXPECT_EQ(cli::RunAttestCli({"attest", "quote", "--bogus", "1"}, o3, e3), 2);
  EXPECT_NE(e3.str().find("--bogus"), std::string::npos);
}

TEST_F(ServiceTest, IdentityAndCredentialActivationOverGrpc) {
  Start(nullptr);
  auto stub = v1::Attestation::NewStub(
      grpc::CreateChannel("unix:" + socket_.string(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::Identity id;
  ASSERT_TRUE(stub->GetIdentity(&ctx, v1::IdentityRequest{}, &id).ok());
  EXPECT_EQ(id.ak().name(), std::string(builder_->ak().name.begin(), builder_->ak().name.end()));
  EXPECT_FALSE(id.ek_public_rsa().empty());
  EXPECT_GE(id.ek_certificates_size(), 1);
  // The verifier's enrolment: a credential for the reported AK name under the reported EK.
  {
    const std::string secret = "enrolment-challenge";
    auto made = tpm::MakeCredential(
        std::span(reinterpret_cast<const uint8_t*>(id.ek_public_rsa().data()),
                  id.ek_public_rsa().size()),
        std::span(reinterpret_cast<const uint8_t*>(id.ak().name().data()), id.ak().name().size()),
        std::span(reinterpret_cast<const uint8_t*>(secret.data()), secret.size()));
    grpc::ClientContext c;
    v1::ActivateCredentialRequest ok_req;
    ok_req.set_credential_blob(
        std::string(made.credential_blob.begin(), made.credential_blob.end()));
    ok_req.set_encrypted_secret(
        std::string(made.encrypted_secret.begin(), made.encrypted_secret.end()));
    v1::ActivateCredentialResponse ok_resp;
    auto ok_st = stub->ActivateCredential(&c, ok_req, &ok_resp);
    ASSERT_TRUE(ok_st.ok()) << ok_st.error_message();
    EXPECT_EQ(ok_resp.secret(), secret);
  }
  // Garbage credentials fail inside the TPM and are reported as such, with nothing leaked.
  grpc::ClientContext ctx2;
  v1::ActivateCredentialRequest req;
  req.set_credential_blob(std::string(50, '\x01'));
  req.set_encrypted_secret(std::string(256, '\x02'));
  v1::ActivateCredentialResponse resp;
  auto st = stub->ActivateCredential(&ctx2, req, &resp);
  EXPECT_FALSE(st.ok());
  auto c = tpm_.CountHandles();
  EXPECT_EQ(c.transient, 0u);
  EXPECT_EQ(c.loaded_sessions, 0u);
}

TEST_F(ServiceTest, MutualTlsAdmitsOnlyAllowListedAuditors) {
  Pki pki(tmp_.path() / "pki");
  service::MtlsConfig mtls;
  mtls.server_cert_pem = base::ReadFileText(pki.dir / "server.pem");
  mtls.server_key_pem = base::ReadFileText(pki.dir / "server.key");
  mtls.auditor_ca_pem = base::ReadFileText(pki.dir / "ca.pem");
  mtls.allowed_client_sha256 = {
      service::CertificateFingerprint(base::ReadFileText(pki.dir / "auditor.pem"))};
  Start(&mtls);

  v1::Evidence ev;
  auto st = Quote(*TlsStub(pki, "auditor"), "auditor-nonce-123", &ev);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(ev.nonce(), "auditor-nonce-123");

  // Same CA, not on the allow-list: refused.
  st = Quote(*TlsStub(pki, "intruder"), "intruder-nonce-12", &ev);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(st.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
              st.error_code() == grpc::StatusCode::UNAUTHENTICATED)
      << st.error_code() << " " << st.error_message();

  // Admissions are remembered per certificate, refusals are not: on the same channels, the
  // intruder is refused again and the auditor admitted again.
  auto intruder = TlsStub(pki, "intruder");
  auto auditor = TlsStub(pki, "auditor");
  for (int i = 0; i < 3; ++i) {
    st = Quote(*intruder, "intruder-nonce-" + std::to_string(i) + "x", &ev);
    EXPECT_FALSE(st.ok()) << "call " << i;
    st = Quote(*auditor, "auditor-nonce-" + std::to_string(i) + "xx", &ev);
    EXPECT_TRUE(st.ok()) << "call " << i << ": " << st.error_message();
  }

  // No client certificate at all: the handshake itself fails.
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = mtls.auditor_ca_pem;
  auto anon = v1::Attestation::NewStub(
      grpc::CreateChannel("localhost:" + std::to_string(port_), grpc::SslCredentials(o)));
  st = Quote(*anon, "anonymous-nonce-1", &ev);
  EXPECT_FALSE(st.ok());

  // The CLI over mTLS.
  std::ostringstream out, err;
  int rc = cli::RunAttestCli({"attest", "quote", "--nonce", "a1a2a3a4a5a6a7a8", "--node",
                              "localhost:" + std::to_string(port_), "--cert", pki.P("auditor.pem"),
                              "--key", pki.P("auditor.key"), "--ca", pki.P("ca.pem"), "-o", "-"},
                             out, err);
  EXPECT_EQ(rc, 0) << err.str();
  EXPECT_NE(out.str().find("\"format_version\": 2"), std::string::npos);
  rc = cli::RunAttestCli({"attest", "quote", "--nonce", "a1a2a3a4a5a6a7a8", "--node",
                          "localhost:" + std::to_string(port_), "--cert", pki.P("intruder.pem"),
                          "--key", pki.P("intruder.key"), "--ca", pki.P("ca.pem"), "-o", "-"},
                         out, err);
  EXPECT_EQ(rc, 1);
  // An empty allow-list admits nobody.
  service::MtlsConfig none = mtls;
  none.allowed_client_sha256.clear();
  EXPECT_NO_THROW(service::MakeMtlsServerCredentials(none));
  none.allowed_client_sha256 = {"not-hex"};
  EXPECT_THROW(service::MakeMtlsServerCredentials(none), AttestationError);
}

// A quote answers at most max_leaves requests: the first quote is held in flight until four more
// wait, and they go two by two. Each answer (the batch's shared bytes plus its own) is its own
// nonce's evidence with a proof to its quote's root.
TEST_F(ServiceTest, BatcherCapsRequestsPerQuote) {
  std::atomic<int> quotes{0};
  std::atomic<service::QuoteBatcher*> self{nullptr};
  service::QuoteBatcher batcher(
      *builder_,
      [&] {
        if (quotes++ == 0) {
          EXPECT_TRUE(PollUntil([&] { return self.load()->stats().waiting >= 4; }));
        }
        v1::EnforcementSnapshot s;
        s.set_version(1);
        s.add_guests()->set_name("vm-cap");
        return s;
      },
      {.window = std::chrono::microseconds(0), .max_leaves = 2});
  self = &batcher;
  std::vector<std::string> nonces;
  for (int i = 0; i < 5; ++i) nonces.push_back("cap-nonce-" + std::to_string(i));
  std::vector<v1::Evidence> answers(nonces.size());
  std::vector<std::thread> auditors;
  auto ask = [&](size_t i) {
    auto n = std::span(reinterpret_cast<const uint8_t*>(nonces[i].data()), nonces[i].size());
    answers[i] = batcher.Quote(n);
  };
  auditors.emplace_back(ask, 0);
  ASSERT_TRUE(PollUntil([&] { return batcher.stats().in_flight == 1; }));
  for (size_t i = 1; i < nonces.size(); ++i) auditors.emplace_back(ask, i);
  for (auto& t : auditors) t.join();
  const auto st = batcher.stats();
  EXPECT_EQ(st.quotes, 3u);
  EXPECT_EQ(st.requests, 5u);
  EXPECT_EQ(st.largest_batch, 2u);
  std::map<std::string, size_t> per_root;
  for (size_t i = 0; i < nonces.size(); ++i) {
    ExpectOwnProof(answers[i], nonces[i]);
    EXPECT_LE(answers[i].inclusion().tree_size(), 2u);
    per_root[answers[i].quote().qualifying_data()]++;
  }
  EXPECT_EQ(per_root.size(), 3u);
}

// Auditors poll in a loop: the one answered by a quote asks again soon after (here from its
// completion, 20 ms after the answer is handed over), and rides the next quote with those that
// waited during the first, rather than waiting for a quote of its own. The first quote is held
// in flight (as long as a slow TPM's, 400 ms, so the return hold is 100 ms) until three more
// requests wait.
TEST_F(ServiceTest, BatcherWaitsForTheAuditorsItJustAnswered) {
  // Declared before the batcher: its delivery thread may still be inside set_value when the
  // futures are ready.
  std::promise<v1::Evidence> first, again;
  std::atomic<int> quotes{0};
  std::atomic<service::QuoteBatcher*> self{nullptr};
  service::QuoteBatcher batcher(
      *builder_,
      [&] {
        if (quotes++ == 0) {
          const auto slow_tpm = std::chrono::steady_clock::now() + std::chrono::milliseconds(400);
          EXPECT_TRUE(PollUntil([&] {
            return self.load()->stats().waiting >= 3 && std::chrono::steady_clock::now() > slow_tpm;
          }));
        }
        v1::EnforcementSnapshot s;
        s.set_version(1);
        s.add_guests()->set_name("vm-return");
        return s;
      },
      {.window = std::chrono::microseconds(0)});
  self = &batcher;
  auto bytes = [](const std::string& s) {
    return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  auto fulfil = [](std::promise<v1::Evidence>& p, std::shared_ptr<const service::SerializedBatch> b,
                   size_t i, const std::string& error) {
    try {
      if (!b) throw AttestationError(error);
      p.set_value(b->Answer(i));
    } catch (...) {
      p.set_exception(std::current_exception());
    }
  };
  const std::string first_nonce = "loop-nonce-first", again_nonce = "loop-nonce-again";
  batcher.QuoteAsync(bytes(first_nonce), [&](auto b, size_t i, const std::string& error) {
    // Asks again only once the next quote has had 20 ms to start without it (a batcher that
    // does not wait starts it at once with the three that waited).
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
    while (batcher.stats().in_flight == 0 && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    if (b)
      batcher.QuoteAsync(bytes(again_nonce), [&](auto b2, size_t j, const std::string& e2) {
        fulfil(again, std::move(b2), j, e2);
      });
    fulfil(first, std::move(b), i, error);
  });
  ASSERT_TRUE(PollUntil([&] { return batcher.stats().in_flight == 1; }));
  std::vector<v1::Evidence> waited(3);
  std::vector<std::thread> others;
  for (size_t i = 0; i < waited.size(); ++i)
    others.emplace_back([&, i] {
      const std::string nonce = "waited-nonce-" + std::to_string(i);
      waited[i] = batcher.Quote(bytes(nonce));
      ExpectOwnProof(waited[i], nonce);
    });
  for (auto& t : others) t.join();
  const auto first_ev = first.get_future().get();
  const auto again_ev = again.get_future().get();
  ExpectOwnProof(first_ev, first_nonce);
  ExpectOwnProof(again_ev, again_nonce);
  const auto st = batcher.stats();
  EXPECT_EQ(st.quotes, 2u) << "the second request of the loop rode the second quote";
  EXPECT_EQ(st.largest_batch, 4u);
  EXPECT_EQ(first_ev.inclusion().tree_size(), 1u);
  EXPECT_EQ(again_ev.inclusion().tree_size(), 4u);
  for (const auto& w : waited) EXPECT_EQ(w.quote().attest(), again_ev.quote().attest());
}

}  // namespace
}  // namespace sovguard::attestation
