// bench_attestation_quote: attestation throughput and latency against swtpm.
//
//   bench_attestation_quote [--tcti T] [--clients 16] [--per-client 50] [--transport mtls|unix]
//                           [--sequential 2000] [--max-seconds 600]
// Without --tcti a private swtpm is manufactured and started (as the tests do).
// Phase 1 (concurrent): `clients` auditor threads, each with its own gRPC channel, each asking for
// `per-client` quotes with a fresh nonce through the AttestationService (mTLS by default).
// Phase 2 (sequential): `sequential` evidence builds in a row directly on the builder, then the
// TPM's transient-object and session counts, which must be 0 (no exhaustion; 100000 for the claim).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include "attestation/service/attestation_service.h"
#include "tests/attestation/swtpm_fixture.h"

namespace sa = sovguard::attestation;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string tcti;
  int clients = 16;
  int per_client = 50;
  std::string transport = "mtls";
  int sequential = 2000;
  int max_seconds = 600;
};

std::string ReadText(const std::filesystem::path& p) {
  auto b = sa::ReadFileBytes(p);
  return std::string(b.begin(), b.end());
}

void Must(const std::vector<std::string>& argv) {
  auto r = sa::test_support::Run(argv);
  if (r.exit_code != 0) throw std::runtime_error(argv[0] + " failed: " + r.output);
}

// Test PKI: one CA for the server and the auditors, one auditor certificate per client.
void MakePki(const std::filesystem::path& d, int clients) {
  auto P = [&](const std::string& f) { return (d / f).string(); };
  std::filesystem::create_directories(d);
  Must({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", P("ca.key"), "-out", P("ca.pem"), "-subj", "/CN=bench-ca", "-days", "1"});
  {
    std::FILE* f = std::fopen(P("server.ext").c_str(), "w");
    std::fputs("subjectAltName=DNS:localhost,IP:127.0.0.1\n", f);
    std::fclose(f);
  }
  for (int i = -1; i < clients; ++i) {
    std::string n = i < 0 ? "server" : "auditor" + std::to_string(i);
    Must({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", P(n + ".key"), "-out", P(n + ".csr"), "-subj",
          "/CN=" + (i < 0 ? "localhost" : n)});
    std::vector<std::string> sign = {
        "openssl",   "x509",   "-req",       "-in",         P(n + ".csr"),          "-CA",
        P("ca.pem"), "-CAkey", P("ca.key"),  "-set_serial", std::to_string(i + 10), "-days",
        "1",         "-out",   P(n + ".pem")};
    if (i < 0) sign.insert(sign.end(), {"-extfile", P("server.ext")});
    Must(sign);
  }
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

int Main(const Options& o) {
  ::setenv("GRPC_DNS_RESOLVER", "native", 1);
  std::optional<sa::test_support::Swtpm> swtpm;
  std::string tcti = o.tcti;
  if (tcti.empty()) {
    swtpm.emplace();
    tcti = swtpm->tcti();
  }
  sa::test_support::TempDir tmp;
  sa::tpm::Tpm tpm(tcti);
  sa::measure::MeasurementLog log(tpm, {tmp.path() / "state", sa::measure::kDefaultSovguardPcr});
  log.Measure(sa::cel::EventKind::kSelfBinary, "/proc/self/exe", sa::Sha256File("/proc/self/exe"));
  sa::evidence::EvidenceConfig cfg;
  cfg.node = "bench-node";
  sa::evidence::EvidenceBuilder builder(tpm, log, cfg);
  sa::v1::EnforcementSnapshot snap;
  snap.set_version(1);
  for (int g = 0; g < 20; ++g) {
    auto* guest = snap.add_guests();
    guest->set_name("vm-" + std::to_string(g));
    guest->add_taps("vnet" + std::to_string(g));
    guest->add_datasets()->set_dataset("ds-" + std::to_string(g % 4));
  }
  sa::service::AttestationServiceImpl service(builder, [&] { return snap; });

  const auto deadline = Clock::now() + std::chrono::seconds(o.max_seconds);
  // ---- Phase 1: concurrent auditors through gRPC ----
  grpc::ServerBuilder sb;
  int port = 0;
  std::string target;
  if (o.transport == "mtls") {
    MakePki(tmp.path() / "pki", o.clients);
    sa::service::MtlsConfig m;
    m.server_cert_pem = ReadText(tmp.path() / "pki/server.pem");
    m.server_key_pem = ReadText(tmp.path() / "pki/server.key");
    m.auditor_ca_pem = ReadText(tmp.path() / "pki/ca.pem");
    for (int i = 0; i < o.clients; ++i)
      m.allowed_client_sha256.push_back(sa::service::CertificateFingerprint(
          ReadText(tmp.path() / ("pki/auditor" + std::to_string(i) + ".pem"))));
    sb.AddListeningPort("127.0.0.1:0", sa::service::MakeMtlsServerCredentials(m), &port);
  } else {
    target = sa::service::PrepareUnixSocket(tmp.path() / "api.sock");
    sb.AddListeningPort(target, grpc::InsecureServerCredentials());
  }
  sb.RegisterService(&service);
  auto server = sb.BuildAndStart();
  if (!server) throw std::runtime_error("gRPC server did not start");

  std::vector<std::vector<double>> lat(static_cast<size_t>(o.clients));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int c = 0; c < o.clients; ++c) {
    threads.emplace_back([&, c] {
      std::shared_ptr<grpc::Channel> ch;
      if (o.transport == "mtls") {
        grpc::SslCredentialsOptions so;
        so.pem_root_certs = ReadText(tmp.path() / "pki/ca.pem");
        so.pem_cert_chain = ReadText(tmp.path() / ("pki/auditor" + std::to_string(c) + ".pem"));
        so.pem_private_key = ReadText(tmp.path() / ("pki/auditor" + std::to_string(c) + ".key"));
        ch = grpc::CreateChannel("localhost:" + std::to_string(port), grpc::SslCredentials(so));
      } else {
        ch = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
      }
      auto stub = sa::v1::Attestation::NewStub(ch);
      for (int i = 0; i < o.per_client && Clock::now() < deadline; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
        sa::v1::QuoteRequest req;
        req.set_nonce("auditor-" + std::to_string(c) + "-" + std::to_string(i) + "-nonce");
        sa::v1::Evidence ev;
        auto s = Clock::now();
        auto st = stub->Quote(&ctx, req, &ev);
        auto e = Clock::now();
        if (!st.ok() || ev.nonce() != req.nonce()) {
          ++failures;
          continue;
        }
        lat[static_cast<size_t>(c)].push_back(
            std::chrono::duration<double, std::milli>(e - s).count());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  server->Shutdown();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  const size_t n = all.size();
  const double p50 = Percentile(all, 0.50), p99 = Percentile(all, 0.99);
  const double max = all.empty() ? 0.0 : all.back();  // sorted by Percentile
  std::printf(
      "concurrent: transport=%s clients=%d quotes=%zu failures=%d wall=%.2fs "
      "rate=%.1f quotes/s p50=%.2fms p99=%.2fms max=%.2fms\n",
      o.transport.c_str(), o.clients, n, failures.load(), wall, static_cast<double>(n) / wall, p50,
      p99, max);

  // ---- Phase 2: sequential quotes, no exhaustion ----
  std::vector<double> seq;
  seq.reserve(static_cast<size_t>(o.sequential));
  const auto s0 = Clock::now();
  sa::Bytes nonce(16, 0x5a);
  for (int i = 0; i < o.sequential && Clock::now() < deadline; ++i) {
    sa::PutBe(nonce, static_cast<uint64_t>(i), 8);
    auto s = Clock::now();
    auto ev = builder.Build(nonce, snap);
    seq.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
    nonce.resize(16);
  }
  const double swall = std::chrono::duration<double>(Clock::now() - s0).count();
  auto h = tpm.CountHandles();
  std::printf(
      "sequential: quotes=%zu wall=%.2fs rate=%.1f quotes/s p50=%.2fms p99=%.2fms "
      "transient_after=%u sessions_after=%u\n",
      seq.size(), swall, static_cast<double>(seq.size()) / swall, Percentile(seq, 0.50),
      Percentile(seq, 0.99), h.transient, h.loaded_sessions + h.saved_sessions);
  const bool ok = failures == 0 && n == static_cast<size_t>(o.clients * o.per_client) &&
                  seq.size() == static_cast<size_t>(o.sequential) && h.transient == 0 &&
                  h.loaded_sessions == 0 && h.saved_sessions == 0;
  std::printf("result: %s\n", ok ? "ok" : "FAILED (failures, time bound hit, or TPM handles left)");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--tcti")
        o.tcti = next();
      else if (a == "--clients")
        o.clients = std::stoi(next());
      else if (a == "--per-client")
        o.per_client = std::stoi(next());
      else if (a == "--transport")
        o.transport = next();
      else if (a == "--sequential")
        o.sequential = std::stoi(next());
      else if (a == "--max-seconds")
        o.max_seconds = std::stoi(next());
      else
        throw std::runtime_error("unknown option " + a);
    }
    if (o.transport != "mtls" && o.transport != "unix")
      throw std::runtime_error("--transport mtls|unix");
    if (o.clients < 1 || o.per_client < 0 || o.sequential < 0 || o.max_seconds < 1)
      throw std::runtime_error("counts must be positive");
    return Main(o);
  } catch (const std::exception& e) {
    std::cerr << "bench_attestation_quote: " << e.what() << "\n";
    return 2;
  }
}
