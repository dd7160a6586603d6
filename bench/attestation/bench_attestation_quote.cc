// bench_attestation_quote: attestation throughput and latency against swtpm.
//
//   bench_attestation_quote [--tcti T] [--clients 16] [--per-client 50] [--transport mtls|unix]
//                           [--sequential 2000] [--max-seconds 600] [--compare]
//                           [--window-us 2000] [--quote-delay-ms 0]
// Without --tcti a private swtpm is manufactured and started (as the tests do).
// Phase 1 (concurrent): `clients` auditor threads, each with its own gRPC channel (connected
// before the clock starts), each asking for `per-client` quotes with a fresh nonce through the
// AttestationService (mTLS by default) and verifying each answer (nonce, signature with the
// enrolled AK, inclusion proof to the signed root: verify::Verify). Quote batching as sovguardd
// runs it (--window-us); with --compare first the same load unbatched (one request per quote,
// max_leaves 1) in the same run, and the ratios. --quote-delay-ms is a delay shim for a discrete
// TPM: that many ms slept on the quoting thread before each TPM2_Quote (in the snapshot
// provider, called once per quote), so the TPM work is serial and slow as on hardware.
// Phase 2 (sequential): `sequential` evidence builds in a row directly on the builder, then the
// TPM's transient-object and session counts, which must be 0 (no exhaustion; 100000 for the claim).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include <sys/resource.h>
#include <time.h>

#include "attestation/service/attestation_service.h"
#include "attestation/verify/verifier.h"
#include "base/file.h"
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
  bool compare = false;  // also run the unbatched baseline (one request per quote) first
  long long window_us = 2000;
  int quote_delay_ms = 0;  // delay shim: a discrete TPM's time per TPM2_Quote
};

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

// CPU seconds of this whole process (node, gRPC on both sides and the auditors), and of the
// calling thread.
double ProcessCpu() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
double ThreadCpu() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}
std::string LoadAverage() {
  double l[3] = {};
  if (::getloadavg(l, 3) != 3) return "?";
  char b[64];
  std::snprintf(b, sizeof b, "%.2f %.2f %.2f", l[0], l[1], l[2]);
  return b;
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
  const auto deadline = Clock::now() + std::chrono::seconds(o.max_seconds);
  if (o.transport == "mtls") MakePki(tmp.path() / "pki", o.clients);
  sa::verify::Options vo;
  vo.ak_pub_pem = builder.ak().public_pem;

  // ---- Phase 1: concurrent auditors through gRPC, one run per mode ----
  struct Mode {
    std::string name;
    sa::service::BatchConfig batch;
  };
  std::vector<Mode> modes;
  if (o.compare)
    modes.push_back({"unbatched", {.window = std::chrono::microseconds(0), .max_leaves = 1}});
  modes.push_back({"batched", {.window = std::chrono::microseconds(o.window_us)}});
  struct Result {
    size_t n = 0, verified = 0;
    uint64_t quotes = 0;
    size_t largest = 0;
    int failures = 0;
    double wall = 0, p50 = 0, p99 = 0, max = 0;
    double cpu = 0, verify_cpu = 0;  // process CPU s; auditors' CPU s inside verify::Verify
  };
  std::vector<Result> results;
  for (const auto& mode : modes) {
    // The delay shim: a discrete TPM's quote time, added on the quoting thread once per
    // TPM2_Quote (the batcher calls the snapshot provider exactly once before each quote).
    sa::service::AttestationServiceImpl service(
        builder,
        [&] {
          if (o.quote_delay_ms > 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(o.quote_delay_ms));
          return snap;
        },
        mode.batch);
    grpc::ServerBuilder sb;
    int port = 0;
    std::string target;
    if (o.transport == "mtls") {
      sa::service::MtlsConfig m;
      m.server_cert_pem = sovguard::base::ReadFileText(tmp.path() / "pki/server.pem");
      m.server_key_pem = sovguard::base::ReadFileText(tmp.path() / "pki/server.key");
      m.auditor_ca_pem = sovguard::base::ReadFileText(tmp.path() / "pki/ca.pem");
      for (int i = 0; i < o.clients; ++i)
        m.allowed_client_sha256.push_back(
            sa::service::CertificateFingerprint(sovguard::base::ReadFileText(
                tmp.path() / ("pki/auditor" + std::to_string(i) + ".pem"))));
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
    std::mutex failure_mu;
    auto fail = [&](const std::string& why) {
      if (++failures <= 3) {
        std::lock_guard lock(failure_mu);
        std::fprintf(stderr, "%s failure: %s\n", mode.name.c_str(), why.c_str());
      }
    };
    std::atomic<size_t> verified{0};
    std::vector<double> verify_cpu(static_cast<size_t>(o.clients), 0.0);
    std::vector<std::thread> threads;
    // Channels connect (TLS handshake) before the clock starts: the bench measures quotes.
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    Clock::time_point t0;
    for (int c = 0; c < o.clients; ++c) {
      threads.emplace_back([&, c] {
        std::shared_ptr<grpc::Channel> ch;
        if (o.transport == "mtls") {
          grpc::SslCredentialsOptions so;
          so.pem_root_certs = sovguard::base::ReadFileText(tmp.path() / "pki/ca.pem");
          so.pem_cert_chain = sovguard::base::ReadFileText(
              tmp.path() / ("pki/auditor" + std::to_string(c) + ".pem"));
          so.pem_private_key = sovguard::base::ReadFileText(
              tmp.path() / ("pki/auditor" + std::to_string(c) + ".key"));
          ch = grpc::CreateChannel("localhost:" + std::to_string(port), grpc::SslCredentials(so));
        } else {
          ch = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
        }
        auto stub = sa::v1::Attestation::NewStub(ch);
        {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          sa::v1::Identity id;
          const auto st = stub->GetIdentity(&ctx, {}, &id);
          if (!st.ok())
            fail("GetIdentity: " + std::to_string(st.error_code()) + " " + st.error_message());
        }
        ++ready;
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < o.per_client && Clock::now() < deadline; ++i) {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
          sa::v1::QuoteRequest req;
          req.set_nonce("auditor-" + std::to_string(c) + "-" + std::to_string(i) + "-nonce");
          sa::v1::Evidence ev;
          auto s = Clock::now();
          auto st = stub->Quote(&ctx, req, &ev);
          if (!st.ok() || ev.nonce() != req.nonce()) {
            fail("Quote: " + std::to_string(st.error_code()) + " " + st.error_message());
            continue;
          }
          // Verified as the auditor does: its own nonce, the enrolled AK; the quote's signature
          // and the inclusion proof to the signed root must pass.
          auto x = vo;
          x.nonce = sa::Bytes(req.nonce().begin(), req.nonce().end());
          const double v0 = ThreadCpu();
          const auto rep = sa::verify::Verify(ev, x);
          auto e = Clock::now();
          verify_cpu[static_cast<size_t>(c)] += ThreadCpu() - v0;
          if (rep.Find("quote.qualifying_data")->status != sa::verify::Status::kPass ||
              rep.Find("quote.signature")->status != sa::verify::Status::kPass ||
              rep.Find("nonce")->status != sa::verify::Status::kPass) {
            fail("verification failed");
            continue;
          }
          ++verified;
          lat[static_cast<size_t>(c)].push_back(
              std::chrono::duration<double, std::milli>(e - s).count());
        }
      });
    }
    while (ready.load() < o.clients) std::this_thread::yield();
    const std::string load_before = LoadAverage();
    const double cpu0 = ProcessCpu();
    t0 = Clock::now();
    go = true;
    for (auto& t : threads) t.join();
    Result r;
    r.wall = std::chrono::duration<double>(Clock::now() - t0).count();
    r.cpu = ProcessCpu() - cpu0;
    for (double v : verify_cpu) r.verify_cpu += v;
    server->Shutdown();
    std::vector<double> all;
    for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
    r.n = all.size();
    r.verified = verified;
    r.failures = failures;
    r.p50 = Percentile(all, 0.50);
    r.p99 = Percentile(all, 0.99);
    r.max = all.empty() ? 0.0 : all.back();  // sorted by Percentile
    const auto st = service.batch_stats();
    r.quotes = st.quotes;
    r.largest = st.largest_batch;
    std::printf(
        "concurrent %s: transport=%s clients=%d quote_delay=%dms window=%lldus requests=%zu "
        "verified=%zu failures=%d tpm_quotes=%llu largest_batch=%zu wall=%.2fs "
        "rate=%.1f verified/s p50=%.2fms p99=%.2fms max=%.2fms cpu_per_answer=%.0fus "
        "(auditor_verify=%.0fus rest=%.0fus; process cpu %.2fs of %.2fs wall x 2 cores) "
        "load=[%s]->[%s]\n",
        mode.name.c_str(), o.transport.c_str(), o.clients, o.quote_delay_ms,
        static_cast<long long>(mode.batch.window.count()), r.n, r.verified, r.failures,
        static_cast<unsigned long long>(r.quotes), r.largest, r.wall,
        static_cast<double>(r.verified) / r.wall, r.p50, r.p99, r.max,
        r.cpu / static_cast<double>(std::max<size_t>(r.verified, 1)) * 1e6,
        r.verify_cpu / static_cast<double>(std::max<size_t>(r.verified, 1)) * 1e6,
        (r.cpu - r.verify_cpu) / static_cast<double>(std::max<size_t>(r.verified, 1)) * 1e6, r.cpu,
        r.wall, load_before.c_str(), LoadAverage().c_str());
    results.push_back(r);
  }
  if (results.size() == 2) {
    const auto& u = results[0];
    const auto& b2 = results[1];
    std::printf(
        "ratio batched/unbatched (same run): verified/s %.2fx, p99 %.3fx, TPM quotes %.3fx\n",
        (static_cast<double>(b2.verified) / b2.wall) / (static_cast<double>(u.verified) / u.wall),
        b2.p99 / u.p99, static_cast<double>(b2.quotes) / static_cast<double>(u.quotes));
  }
  int failures = 0;
  size_t n = 0;
  for (const auto& r : results) failures += r.failures, n += r.n;
  const size_t expected_n = static_cast<size_t>(o.clients * o.per_client) * results.size();

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
  const bool ok = failures == 0 && n == expected_n &&
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
      else if (a == "--compare")
        o.compare = true;
      else if (a == "--window-us")
        o.window_us = std::stoll(next());
      else if (a == "--quote-delay-ms")
        o.quote_delay_ms = std::stoi(next());
      else
        throw std::runtime_error("unknown option " + a);
    }
    if (o.transport != "mtls" && o.transport != "unix")
      throw std::runtime_error("--transport mtls|unix");
    if (o.clients < 1 || o.per_client < 0 || o.sequential < 0 || o.max_seconds < 1 ||
        o.window_us < 0 || o.quote_delay_ms < 0)
      throw std::runtime_error("counts must be positive");
    return Main(o);
  } catch (const std::exception& e) {
    std::cerr << "bench_attestation_quote: " << e.what() << "\n";
    return 2;
  }
}
