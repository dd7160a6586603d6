// bench_attestation_quote: attestation throughput and latency against swtpm.
//
//   bench_attestation_quote [--tcti T] [--clients 16] [--per-client 50] [--transport mtls|unix]
//                           [--sequential 2000] [--max-seconds 600] [--compare]
//                           [--window-us 2000] [--quote-delay-ms 0] [--split] [--pin]
//                           [--verify-threads 2]
// Without --tcti a private swtpm is manufactured and started (as the tests do).
// Phase 1 (concurrent): `clients` auditors, each with its own gRPC channel (connected before the
// clock starts), each asking for `per-client` quotes in a closed loop with a fresh nonce through
// the AttestationService (mTLS by default) and verifying each answer (nonce, signature with the
// enrolled AK, inclusion proof to the signed root, snapshot digest: verify::Verify) on one of
// `verify-threads` threads before asking again. Quote batching as sovguardd
// runs it (--window-us); with --compare first the same load unbatched (one request per quote,
// max_leaves 1) in the same run, and the ratios. --quote-delay-ms is a delay shim for a discrete
// TPM: that many ms slept on the quoting thread before each TPM2_Quote (in the snapshot
// provider, called once per quote), so the TPM work is serial and slow as on hardware.
// --split: the node (TPM, builder, services, gRPC and TLS) in a forked process of its own and the
// auditors in this one, over loopback, as auditors on another machine; each line then prints the
// node process's CPU per verified answer apart from the auditors' (swtpm's own CPU, the TPM's, is
// in neither). --pin (implies --split): the node process and its swtpm on CPU 0, the auditors on
// CPU 1.
// Phase 2 (sequential): `sequential` evidence builds in a row directly on the builder, then the
// TPM's transient-object and session counts, which must be 0 (no exhaustion; 100000 for the claim).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "attestation/service/attestation_service.h"
#include "attestation/verify/verifier.h"
#include "base/file.h"
#include "base/hex.h"
#include "bench/attestation/bench_args.h"
#include "bench/attestation/bench_node.h"

namespace sa = sovguard::attestation;
namespace bench = sovguard::attestation::bench;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using sovguard::base::ReadFileText;

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
  bool split = false;      // node and auditors in two processes
  bool pin = false;        // with split: node (and swtpm) on CPU 0, auditors on CPU 1
  int verify_threads = 2;  // the auditors' threads that verify answers and ask again
};

struct Mode {
  std::string name;
  sa::service::BatchConfig batch;
};

struct BatchFigures {
  uint64_t quotes = 0;
  size_t largest = 0;
  double node_waits = -1;  // the node process's voluntary context switches so far (--split)
};

// The node: a TPM, sovguard's measurement log, the evidence builder, a snapshot of 20 guests,
// and one AttestationService (with its own gRPC server) per mode, all up at once; `targets` are
// where the auditors reach them.
class QuoteNode {
 public:
  QuoteNode(const Options& o, const std::string& tcti, const fs::path& tmp,
            const std::vector<Mode>& modes)
      : tpm_(tcti), log_(tpm_, {tmp / "state", sa::measure::kDefaultSovguardPcr}) {
    sa::service::DisableMutexDeadlockGraph();  // as sovguardd does (one process: auditors too)
    log_.Measure(sa::cel::EventKind::kSelfBinary, "/proc/self/exe",
                 sa::Sha256File("/proc/self/exe"));
    sa::evidence::EvidenceConfig cfg;
    cfg.node = "bench-node";
    builder_.emplace(tpm_, log_, cfg);
    snap_.set_version(1);
    for (int g = 0; g < 20; ++g) {
      auto* guest = snap_.add_guests();
      guest->set_name("vm-" + std::to_string(g));
      guest->add_taps("vnet" + std::to_string(g));
      guest->add_datasets()->set_dataset("ds-" + std::to_string(g % 4));
    }
    for (size_t i = 0; i < modes.size(); ++i) {
      // The delay shim: a discrete TPM's quote time, added on the quoting thread once per
      // TPM2_Quote (the batcher calls the snapshot provider exactly once before each quote).
      services_.push_back(std::make_unique<sa::service::AttestationServiceImpl>(
          *builder_,
          [this, delay = o.quote_delay_ms] {
            if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
            return snap_;
          },
          modes[i].batch));
      grpc::ServerBuilder sb;
      int port = 0;
      if (o.transport == "mtls") {
        sa::service::MtlsConfig m;
        m.server_cert_pem = ReadFileText(tmp / "pki/server.pem");
        m.server_key_pem = ReadFileText(tmp / "pki/server.key");
        m.auditor_ca_pem = ReadFileText(tmp / "pki/ca.pem");
        for (int c = 0; c < o.clients; ++c)
          m.allowed_client_sha256.push_back(sa::service::CertificateFingerprint(
              ReadFileText(tmp / ("pki/auditor" + std::to_string(c) + ".pem"))));
        sb.AddListeningPort("127.0.0.1:0", sa::service::MakeMtlsServerCredentials(m), &port);
      } else {
        targets_.push_back(
            sa::service::PrepareUnixSocket(tmp / ("api" + std::to_string(i) + ".sock")));
        sb.AddListeningPort(targets_.back(), grpc::InsecureServerCredentials());
      }
      sb.RegisterService(services_.back().get());
      servers_.push_back(sb.BuildAndStart());
      if (!servers_.back()) throw std::runtime_error("gRPC server did not start");
      if (o.transport == "mtls") targets_.push_back("localhost:" + std::to_string(port));
    }
  }
  ~QuoteNode() {
    for (auto& s : servers_) s->Shutdown();
  }

  const std::vector<std::string>& targets() const { return targets_; }
  std::string ak_pem() const { return builder_->ak().public_pem; }
  BatchFigures figures(size_t mode) const {
    const auto st = services_.at(mode)->batch_stats();
    return {st.quotes, st.largest_batch};
  }

  // `n` evidence builds in a row on the builder, then the TPM's transient objects and sessions,
  // which must be 0 (no exhaustion). Prints its line; true when all ran and none is left.
  bool Sequential(int n, Clock::time_point deadline) {
    std::vector<double> seq;
    seq.reserve(static_cast<size_t>(n));
    const auto s0 = Clock::now();
    sa::Bytes nonce(16, 0x5a);
    for (int i = 0; i < n && Clock::now() < deadline; ++i) {
      sa::PutBe(nonce, static_cast<uint64_t>(i), 8);
      auto s = Clock::now();
      auto ev = builder_->Build(nonce, snap_);
      seq.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
      nonce.resize(16);
    }
    const double swall = std::chrono::duration<double>(Clock::now() - s0).count();
    const auto h = tpm_.CountHandles();
    std::printf(
        "sequential: quotes=%zu wall=%.2fs rate=%.1f quotes/s p50=%.2fms p99=%.2fms "
        "transient_after=%u sessions_after=%u\n",
        seq.size(), swall, static_cast<double>(seq.size()) / swall, bench::Percentile(seq, 0.50),
        bench::Percentile(seq, 0.99), h.transient, h.loaded_sessions + h.saved_sessions);
    return seq.size() == static_cast<size_t>(n) && h.transient == 0 && h.loaded_sessions == 0 &&
           h.saved_sessions == 0;
  }

 private:
  sa::tpm::Tpm tpm_;
  sa::measure::MeasurementLog log_;
  std::optional<sa::evidence::EvidenceBuilder> builder_;
  sa::v1::EnforcementSnapshot snap_;
  std::vector<std::unique_ptr<sa::service::AttestationServiceImpl>> services_;
  std::vector<std::unique_ptr<grpc::Server>> servers_;
  std::vector<std::string> targets_;
};

// The node side in its own process (--split): starts swtpm (unless --tcti) and the QuoteNode,
// sends one line per target, then the AK's public key in hex; then answers each "figures" line
// with "NODE_CPU_SECONDS NODE_WAITS" and "QUOTES LARGEST" per mode; at end of file runs the
// sequential phase. Exit code 0 when that passed.
int SplitNodeSide(const Options& o, const fs::path& tmp, const std::vector<Mode>& modes,
                  bench::LineChannel& ch) {
  if (o.pin) bench::PinToCpu(0);  // swtpm, started below, shares the node's CPU
  std::optional<sa::test_support::Swtpm> swtpm;
  std::string tcti = o.tcti;
  if (tcti.empty()) tcti = swtpm.emplace().tcti();
  bool ok = false;
  {
    QuoteNode node(o, tcti, tmp, modes);
    for (const auto& t : node.targets()) ch.Write(t);
    const std::string pem = node.ak_pem();
    ch.Write(sovguard::base::ToHex(pem.data(), pem.size()));
    while (auto line = ch.Read()) {
      if (*line != "figures") throw std::runtime_error("unknown request " + *line);
      std::ostringstream reply;
      reply << std::to_string(bench::ProcessCpu()) << ' ' << bench::ProcessWaits();
      for (size_t i = 0; i < modes.size(); ++i) {
        const auto f = node.figures(i);
        reply << ' ' << f.quotes << ' ' << f.largest;
      }
      ch.Write(reply.str());
    }
    ok = node.Sequential(o.sequential, Clock::now() + std::chrono::seconds(o.max_seconds));
  }
  return ok ? 0 : 1;
}

struct Result {
  size_t n = 0, verified = 0;
  BatchFigures batch;
  int failures = 0;
  double wall = 0, p50 = 0, p99 = 0, max = 0;
  double cpu = 0, verify_cpu = 0;  // auditors' process CPU s; their CPU s inside verify::Verify
  double node_cpu = -1;            // the node process's CPU s (--split)
  double node_waits = 0;           // its voluntary context switches (--split)
};

// One auditor: its own channel (its own mutual-TLS certificate and connection) and its closed
// loop: at most one request in flight, the next asked once the last answer is verified.
struct Auditor {
  int id = 0;
  std::unique_ptr<sa::v1::Attestation::Stub> stub;
  int asked = 0;
  std::unique_ptr<grpc::ClientContext> ctx;  // one per call
  sa::v1::QuoteRequest req;
  sa::v1::Evidence ev;
  grpc::Status status;
  Clock::time_point sent;
  std::vector<double> latency_ms;
  double verify_cpu = 0;
};

// Phase 1 for one mode: `clients` auditors against `target`, each with its own channel
// (connected before the clock starts), each asking per_client times with a fresh nonce and
// verifying each answer. The auditors are driven by gRPC's callback API and `verify_threads`
// verifying threads (auditors on other machines each have their own; a thread per auditor here
// would charge the auditor side for 100 threads' wake-ups on one core). `node_cpu` gives the
// node's CPU seconds so far (or -1: the same process), `figures` the mode's batch figures.
Result RunAuditors(const Options& o, const fs::path& tmp, const std::string& target,
                   const std::string& ak_pem, const std::string& mode_name,
                   const std::function<double()>& node_cpu,
                   const std::function<BatchFigures()>& figures, Clock::time_point deadline) {
  sa::verify::Options vo;
  vo.ak_pub_pem = ak_pem;
  std::atomic<int> failures{0};
  std::mutex failure_mu;
  auto fail = [&](const std::string& why) {
    if (++failures <= 3) {
      std::lock_guard lock(failure_mu);
      std::fprintf(stderr, "%s failure: %s\n", mode_name.c_str(), why.c_str());
    }
  };
  std::atomic<size_t> verified{0};
  std::vector<Auditor> auditors(static_cast<size_t>(o.clients));
  const std::string ca = o.transport == "mtls" ? ReadFileText(tmp / "pki/ca.pem") : "";
  for (int c = 0; c < o.clients; ++c) {
    auto& a = auditors[static_cast<size_t>(c)];
    a.id = c;
    std::shared_ptr<grpc::Channel> ch;
    if (o.transport == "mtls") {
      grpc::SslCredentialsOptions so;
      so.pem_root_certs = ca;
      so.pem_cert_chain = ReadFileText(tmp / ("pki/auditor" + std::to_string(c) + ".pem"));
      so.pem_private_key = ReadFileText(tmp / ("pki/auditor" + std::to_string(c) + ".key"));
      // Its own connection: channels with equal arguments could otherwise share a subchannel.
      grpc::ChannelArguments args;
      args.SetInt("sovguard.bench.auditor", c);
      ch = grpc::CreateCustomChannel(target, grpc::SslCredentials(so), args);
    } else {
      grpc::ChannelArguments args;
      args.SetInt("sovguard.bench.auditor", c);
      ch = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    }
    a.stub = sa::v1::Attestation::NewStub(ch);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    sa::v1::Identity id;
    const auto st = a.stub->GetIdentity(&ctx, {}, &id);
    if (!st.ok())
      fail("GetIdentity: " + std::to_string(st.error_code()) + " " + st.error_message());
  }

  // Answers arrive on gRPC's threads and queue here for the verifying threads.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Auditor*> answered;
  size_t running = auditors.size();
  auto finish_one = [&] {
    std::lock_guard lock(mu);
    if (--running == 0) cv.notify_all();
  };
  std::function<void(Auditor&)> ask = [&](Auditor& a) {
    if (a.asked >= o.per_client || Clock::now() >= deadline) return finish_one();
    a.ctx = std::make_unique<grpc::ClientContext>();
    a.ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    a.req.set_nonce("auditor-" + std::to_string(a.id) + "-" + std::to_string(a.asked) + "-nonce");
    ++a.asked;
    a.ev.Clear();
    a.sent = Clock::now();
    a.stub->async()->Quote(a.ctx.get(), &a.req, &a.ev, [&, p = &a](grpc::Status st) {
      std::lock_guard lock(mu);
      p->status = std::move(st);
      answered.push_back(p);
      cv.notify_one();
    });
  };
  // Verified as the auditor does: its own nonce, the enrolled AK; the quote's structure and
  // signature, the nonce's leaf and its inclusion proof to the signed root, and the snapshot's
  // digest (its binding into the leaf) must pass.
  auto verify_one = [&](Auditor& a) {
    if (!a.status.ok() || a.ev.nonce() != a.req.nonce()) {
      fail("Quote: " + std::to_string(a.status.error_code()) + " " + a.status.error_message());
      return;
    }
    auto x = vo;
    x.nonce = sa::Bytes(a.req.nonce().begin(), a.req.nonce().end());
    const double v0 = bench::ThreadCpu();
    const auto rep = sa::verify::Verify(a.ev, x);
    const auto e = Clock::now();
    a.verify_cpu += bench::ThreadCpu() - v0;
    for (const char* check : {"quote.structure", "quote.signature", "nonce",
                              "quote.qualifying_data", "snapshot.digest"}) {
      const auto* f = rep.Find(check);
      if (!f || f->status != sa::verify::Status::kPass) {
        fail(std::string("verification failed: ") + check);
        return;
      }
    }
    ++verified;
    a.latency_ms.push_back(std::chrono::duration<double, std::milli>(e - a.sent).count());
  };
  std::vector<std::thread> verifiers;
  const std::string load_before = bench::LoadAverage();
  const double node0 = node_cpu();
  const double waits0 = figures().node_waits;
  const double cpu0 = bench::ProcessCpu();
  const auto t0 = Clock::now();
  for (int t = 0; t < o.verify_threads; ++t)
    verifiers.emplace_back([&] {
      std::unique_lock lock(mu);
      for (;;) {
        cv.wait(lock, [&] { return running == 0 || !answered.empty(); });
        if (answered.empty()) return;
        Auditor* a = answered.front();
        answered.pop_front();
        lock.unlock();
        verify_one(*a);
        ask(*a);
        lock.lock();
      }
    });
  for (auto& a : auditors) ask(a);
  for (auto& t : verifiers) t.join();
  Result r;
  r.wall = std::chrono::duration<double>(Clock::now() - t0).count();
  r.cpu = bench::ProcessCpu() - cpu0;
  if (node0 >= 0) r.node_cpu = node_cpu() - node0;
  std::vector<double> all;
  for (const auto& a : auditors) {
    r.verify_cpu += a.verify_cpu;
    all.insert(all.end(), a.latency_ms.begin(), a.latency_ms.end());
  }
  r.n = all.size();
  r.verified = verified;
  r.failures = failures;
  r.p50 = bench::Percentile(all, 0.50);
  r.p99 = bench::Percentile(all, 0.99);
  r.max = all.empty() ? 0.0 : all.back();  // sorted by Percentile
  r.batch = figures();
  if (waits0 >= 0) r.node_waits = r.batch.node_waits - waits0;
  const double per = 1e6 / static_cast<double>(std::max<size_t>(r.verified, 1));
  std::string cpu;
  char b[400];
  if (r.node_cpu >= 0) {
    std::snprintf(
        b, sizeof b,
        "node_cpu_per_answer=%.0fus node_waits_per_answer=%.2f auditors_cpu_per_answer=%.0fus "
        "(auditor_verify=%.0fus; node process %.2fs, auditor process %.2fs of %.2fs wall)",
        r.node_cpu * per, r.node_waits * per / 1e6, r.cpu * per, r.verify_cpu * per, r.node_cpu,
        r.cpu, r.wall);
  } else {
    std::snprintf(b, sizeof b,
                  "cpu_per_answer=%.0fus (auditor_verify=%.0fus rest=%.0fus; process cpu %.2fs "
                  "of %.2fs wall x 2 cores)",
                  r.cpu * per, r.verify_cpu * per, (r.cpu - r.verify_cpu) * per, r.cpu, r.wall);
  }
  std::printf(
      "concurrent %s: transport=%s%s clients=%d quote_delay=%dms requests=%zu verified=%zu "
      "failures=%d tpm_quotes=%llu largest_batch=%zu wall=%.2fs rate=%.1f verified/s p50=%.2fms "
      "p99=%.2fms max=%.2fms %s load=[%s]->[%s]\n",
      mode_name.c_str(), o.transport.c_str(),
      o.split ? (o.pin ? " split,pinned" : " split") : " one-process", o.clients, o.quote_delay_ms,
      r.n, r.verified, r.failures, static_cast<unsigned long long>(r.batch.quotes), r.batch.largest,
      r.wall, static_cast<double>(r.verified) / r.wall, r.p50, r.p99, r.max, b, load_before.c_str(),
      bench::LoadAverage().c_str());
  std::fflush(stdout);
  return r;
}

int Main(const Options& o) {
  ::setenv("GRPC_DNS_RESOLVER", "native", 1);
  sa::test_support::TempDir tmp;
  const auto deadline = Clock::now() + std::chrono::seconds(o.max_seconds);
  if (o.transport == "mtls") bench::MakePki(tmp.path() / "pki", o.clients);
  std::vector<Mode> modes;
  if (o.compare)
    modes.push_back({"unbatched", {.window = std::chrono::microseconds(0), .max_leaves = 1}});
  modes.push_back({"batched", {.window = std::chrono::microseconds(o.window_us)}});

  std::vector<Result> results;
  bool node_ok = false;
  if (o.split) {
    // Node and auditors in two processes over loopback (as auditors on another machine: the
    // node's CPU is its process's); forked before any gRPC or thread here.
    bench::NodeProcess child(
        [&](bench::LineChannel& ch) { return SplitNodeSide(o, tmp.path(), modes, ch); });
    if (o.pin) bench::PinToCpu(1);
    auto& ch = child.channel();
    std::vector<std::string> targets;
    for (size_t i = 0; i < modes.size(); ++i) targets.push_back(ch.MustRead());
    const auto pem = sovguard::base::FromHex(ch.MustRead(), "AK public key");
    const std::string ak_pem(pem.begin(), pem.end());
    std::vector<std::string> reply;
    auto ask = [&] {
      ch.Write("figures");
      std::istringstream in(ch.MustRead());
      reply.clear();
      for (std::string w; in >> w;) reply.push_back(w);
      if (reply.size() != 2 + 2 * modes.size()) throw std::runtime_error("bad figures reply");
    };
    std::printf("node process %d%s, auditor process %d%s\n", static_cast<int>(child.pid()),
                o.pin ? " on CPU 0 (with swtpm)" : "", static_cast<int>(::getpid()),
                o.pin ? " on CPU 1" : "");
    std::fflush(stdout);  // a profiler may attach to the node process now
    for (size_t i = 0; i < modes.size(); ++i)
      results.push_back(RunAuditors(
          o, tmp.path(), targets[i], ak_pem, modes[i].name,
          [&] {
            ask();
            return std::stod(reply[0]);
          },
          [&] {
            ask();
            return BatchFigures{std::stoull(reply[2 + 2 * i]), std::stoul(reply[3 + 2 * i]),
                                std::stod(reply[1])};
          },
          deadline));
    node_ok = child.Finish() == 0;  // the node side's sequential phase runs now
  } else {
    std::optional<sa::test_support::Swtpm> swtpm;
    std::string tcti = o.tcti;
    if (tcti.empty()) tcti = swtpm.emplace().tcti();
    QuoteNode node(o, tcti, tmp.path(), modes);
    for (size_t i = 0; i < modes.size(); ++i)
      results.push_back(RunAuditors(
          o, tmp.path(), node.targets()[i], node.ak_pem(), modes[i].name, [] { return -1.0; },
          [&] { return node.figures(i); }, deadline));
    node_ok = node.Sequential(o.sequential, deadline);
  }
  if (results.size() == 2) {
    const auto& u = results[0];
    const auto& b2 = results[1];
    std::printf(
        "ratio batched/unbatched (same run): verified/s %.2fx, p99 %.3fx, TPM quotes %.3fx",
        (static_cast<double>(b2.verified) / b2.wall) / (static_cast<double>(u.verified) / u.wall),
        b2.p99 / u.p99, static_cast<double>(b2.batch.quotes) / static_cast<double>(u.batch.quotes));
    if (u.node_cpu >= 0)
      std::printf(", node CPU per answer %.3fx",
                  (b2.node_cpu / static_cast<double>(std::max<size_t>(b2.verified, 1))) /
                      (u.node_cpu / static_cast<double>(std::max<size_t>(u.verified, 1))));
    std::printf("\n");
  }
  int failures = 0;
  size_t n = 0;
  for (const auto& r : results) failures += r.failures, n += r.n;
  const size_t expected_n = static_cast<size_t>(o.clients * o.per_client) * results.size();
  const bool ok = failures == 0 && n == expected_n && node_ok;
  std::printf("result: %s\n", ok ? "ok" : "FAILED (failures, time bound hit, or TPM handles left)");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  namespace b = sovguard::attestation::bench;
  return b::RunBench("bench_attestation_quote", [&] {
    Options o;
    b::ParseFlags(
        argc, argv,
        {b::Value("--tcti", o.tcti), b::Value("--clients", o.clients),
         b::Value("--per-client", o.per_client), b::Value("--transport", o.transport),
         b::Value("--sequential", o.sequential), b::Value("--max-seconds", o.max_seconds),
         b::Switch("--compare", [&] { o.compare = true; }), b::Value("--window-us", o.window_us),
         b::Value("--quote-delay-ms", o.quote_delay_ms),
         b::Switch("--split", [&] { o.split = true; }),
         b::Switch("--pin", [&] { o.pin = o.split = true; }),
         b::Value("--verify-threads", o.verify_threads)});
    if (o.transport != "mtls" && o.transport != "unix")
      throw std::runtime_error("--transport mtls|unix");
    if (o.clients < 1 || o.per_client < 0 || o.sequential < 0 || o.max_seconds < 1 ||
        o.window_us < 0 || o.quote_delay_ms < 0 || o.verify_threads < 1)
      throw std::runtime_error("counts must be positive");
    return Main(o);
  });
}
