// bench_fleet_keeper: how many nodes one verifier core keeps current (verdict + Placement traits)
// at a 60 s interval, against the cold and continuous verification rates in the same run.
//
//   bench_fleet_keeper [--nodes 100] [--rounds 5] [--jobs 8] [--cel-entries 500]
//                      [--verify-seconds 3] [--interval 60]
//
// Node side (a child process, so its CPU is not the verifier's): a private swtpm, sovguard's
// measurement log with `cel-entries` records (each extended into the sovguard PCR), the real
// AttestationService (mutual TLS, quote batching as sovguardd runs it) listening on `nodes`
// loopback ports: one simulated node per port, all answering from the one TPM.
// Placement: Debian's real Placement (tests/placement/placement_server.py), one resource provider
// per node.
// Verifier side (this process), what `sovguard-verify --fleet F --rounds 0 --placement URL`
// runs each round: VerifyFleet (per node a new mutual-TLS channel, GetIdentity, credential
// activation with the EK, Quote with a fresh nonce, Verify with the EK CA and a replay cache)
// then FleetKeeper::Round (Placement traits of every node in step, the metrics file).
// Measured: this process's CPU time (user + system, all threads: gRPC's included) per node and
// round; the first round (cold replay cache, every provider gets its traits written) apart from
// the steady rounds after it (traits already in step: one GET per provider).
// Baselines in the same run, on one fetched evidence: Verify alone, cold (no replay cache) and
// continuous (replay continued from the previous verdict), per verdict.
// Prints nodes per verifier core at --interval = interval / (steady CPU per node and round), the
// ratios against the baselines, and the wall-time bound of the sequential Placement updates.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "attestation/service/attestation_service.h"
#include "attestation/verify/fleet_keeper.h"
#include "attestation/verify/live.h"
#include "attestation/verify/verifier.h"
#include "bench/attestation/bench_args.h"
#include "bench/attestation/bench_evidence.h"
#include "bench/attestation/bench_node.h"
#include "tests/support/placement_service.h"

namespace sa = sovguard::attestation;
namespace verify = sovguard::attestation::verify;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
namespace bench = sovguard::attestation::bench;
using sovguard::attestation::bench::AddManifest;

namespace {

struct Options {
  int nodes = 100;
  int rounds = 5;
  int jobs = 8;
  int cel_entries = 500;
  double verify_seconds = 3;
  int interval = 60;
};

std::string ReadText(const fs::path& p) {
  return sovguard::base::ReadFileText(p);
}

// The node side, in the child: BenchNode's node and the real AttestationService (mutual TLS,
// quote batching as sovguardd runs it) on `nodes` loopback ports; writes one "PORT" line per node,
// then the EK CA directory, and serves until the bench closes the channel.
int NodeSide(const Options& o, const fs::path& pki, bench::LineChannel& ch) {
  bench::BenchNode node(o.cel_entries);
  const auto& snap = node.snapshot();
  sa::service::AttestationServiceImpl service(node.builder(), [&] { return snap; });
  sa::service::MtlsConfig m;
  m.server_cert_pem = ReadText(pki / "server.pem");
  m.server_key_pem = ReadText(pki / "server.key");
  m.auditor_ca_pem = ReadText(pki / "ca.pem");
  m.allowed_client_sha256.push_back(
      sa::service::CertificateFingerprint(ReadText(pki / "auditor0.pem")));
  grpc::ServerBuilder sb;
  std::vector<int> ports(static_cast<size_t>(o.nodes));
  const auto creds = sa::service::MakeMtlsServerCredentials(m);
  for (auto& p : ports) sb.AddListeningPort("127.0.0.1:0", creds, &p);
  sb.RegisterService(&service);
  auto server = sb.BuildAndStart();
  if (!server) throw std::runtime_error("gRPC server did not start");
  for (const int p : ports) ch.Write(std::to_string(p));
  ch.Write(node.swtpm().ca_dir().string());
  while (ch.Read()) {
  }
  server->Shutdown();
  return 0;
}

struct Cost {
  double cpu = 0, wall = 0;  // seconds
};
template <typename F>
Cost Measure(F&& f) {
  const double c0 = bench::ProcessCpu();
  const auto w0 = Clock::now();
  f();
  return {bench::ProcessCpu() - c0, std::chrono::duration<double>(Clock::now() - w0).count()};
}

// Verify of one evidence, repeated for `seconds` on this thread: CPU seconds per verdict.
double VerifyCost(const sa::v1::Evidence& ev, const verify::Options& base, double seconds,
                  size_t* n_out) {
  size_t n = 0;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  const Cost c = Measure([&] {
    while (Clock::now() < end || n < 3) {
      const auto rep = verify::Verify(ev, base);
      if (!rep.passed()) throw std::runtime_error("baseline evidence does not pass");
      ++n;
    }
  });
  *n_out = n;
  return c.cpu / static_cast<double>(n);
}

int Main(const Options& o) {
  sa::test_support::TempDir tmp;
  bench::MakePki(tmp.path() / "pki", 1);
  // Before any gRPC in this process.
  bench::NodeProcess child(
      [&](bench::LineChannel& ch) { return NodeSide(o, tmp.path() / "pki", ch); });
  std::vector<std::string> lines;
  for (int i = 0; i <= o.nodes; ++i) lines.push_back(child.channel().MustRead());
  const fs::path ek_ca = lines.back();

  std::printf("node side: pid %d, %d nodes on loopback ports, one swtpm, CEL of %d records\n",
              static_cast<int>(child.pid()), o.nodes, o.cel_entries);
  sovguard::test::PlacementService placement(tmp.path() / "placement");
  std::string fleet;
  for (int i = 0; i < o.nodes; ++i) {
    const std::string name = "bench-node-" + std::to_string(i);
    placement.Api("POST", "/resource_providers", {{"name", name}});
    fleet += "127.0.0.1:" + lines[static_cast<size_t>(i)] + " " + name + "\n";
  }
  sa::WriteFileAtomic(tmp.path() / "token", "admin\n");

  const verify::TlsClient tls{ReadText(tmp.path() / "pki/ca.pem"),
                              ReadText(tmp.path() / "pki/auditor0.pem"),
                              ReadText(tmp.path() / "pki/auditor0.key"), std::chrono::seconds(60)};
  verify::Options base;
  base.ek_ca_dir = ek_ca;
  base.waivers = {"software-tpm"};
  base.policy_digest = sa::test_support::TestPolicyDigest();
  AddManifest(bench::NodeRecords(o.cel_entries), base);

  // Baselines: one node's evidence fetched as the keeper fetches it, then verified alone.
  const auto nodes = verify::ParseFleetNodes(fleet);
  std::vector<std::string> targets;
  for (const auto& n : nodes) targets.push_back(n.target);
  const auto one = verify::VerifyNode(targets[0], tls, base);
  if (!one.fetched || !one.report.passed())
    throw std::runtime_error("the node's evidence does not pass: " + one.error + "\n" +
                             verify::RenderText(one.report));
  sa::v1::Evidence ev;
  verify::Options vo = base;
  {
    // One evidence for the baselines, with its nonce, and an activation outcome as a successful
    // activation leaves it (the check compares the secrets and matches the EK to its
    // certificate, as in a keeper round; the activation's RPC is the fetch's cost, not Verify's).
    auto stub = sa::v1::Attestation::NewStub(grpc::CreateChannel(
        targets[0], grpc::SslCredentials({tls.ca_pem, tls.key_pem, tls.cert_pem})));
    sa::v1::Identity id;
    grpc::ClientContext ictx;
    ictx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!stub->GetIdentity(&ictx, {}, &id).ok()) throw std::runtime_error("GetIdentity failed");
    const std::string name = id.ak().name(), ek = id.ek_public_rsa();
    const sa::Bytes secret(32, 's');
    vo.ak_ek_binding = verify::AkEkBinding{sa::Bytes(ek.begin(), ek.end()),
                                           sa::Bytes(name.begin(), name.end()), secret, secret, ""};
    sa::v1::QuoteRequest req;
    req.set_nonce(std::string(32, 'n'));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!stub->Quote(&ctx, req, &ev).ok()) throw std::runtime_error("baseline quote failed");
    vo.nonce = sa::Bytes(32, 'n');
  }
  size_t n_cold = 0, n_warm = 0;
  const double cold = VerifyCost(ev, vo, o.verify_seconds, &n_cold);
  verify::ReplayCache warm_cache;
  verify::Options wo = vo;
  wo.replay_cache = &warm_cache;
  verify::Verify(ev, wo);  // the previous verdict the continuous ones continue from
  const double warm = VerifyCost(ev, wo, o.verify_seconds, &n_warm);
  std::printf("baseline verify, cold: %.3f ms CPU per verdict (%zu verdicts)\n", cold * 1e3,
              n_cold);
  std::printf("baseline verify, continuous: %.3f ms CPU per verdict (%zu verdicts)\n", warm * 1e3,
              n_warm);

  // The keeper's rounds, as sovguard-verify --fleet --rounds 0 --placement runs them.
  verify::KeeperOptions ko;
  ko.placement = verify::PlacementConfig{placement.url(), (tmp.path() / "token").string(),
                                         std::chrono::seconds(60)};
  ko.metrics_file = (tmp.path() / "verify.prom").string();
  verify::FleetKeeper keeper(ko, nodes, std::chrono::seconds(3 * o.interval), false);
  verify::ReplayCache cache;
  verify::Options fo = base;
  fo.replay_cache = &cache;
  Cost first_fleet, first_keep, steady_fleet, steady_keep;
  bool ok = true;
  for (int round = 1; round <= o.rounds; ++round) {
    const auto started = std::chrono::system_clock::now();
    std::vector<verify::LiveResult> results;
    const Cost f = Measure([&] { results = verify::VerifyFleet(targets, tls, fo, o.jobs); });
    size_t passed = 0;
    for (const auto& r : results) passed += r.fetched && r.report.passed();
    std::ostringstream out;
    bool in_step = false;
    const Cost k = Measure([&] { in_step = keeper.Round(results, started, out); });
    ok &= in_step && passed == results.size();
    std::printf(
        "round %d: %zu/%zu passed, placement %s; verify fleet %.3f s CPU %.2f s wall, "
        "keeper %.3f s CPU %.2f s wall\n",
        round, passed, results.size(), in_step ? "in step" : "NOT in step", f.cpu, f.wall, k.cpu,
        k.wall);
    if (!in_step || passed != results.size()) std::printf("%s", out.str().c_str());
    auto& fa = round == 1 ? first_fleet : steady_fleet;
    auto& ka = round == 1 ? first_keep : steady_keep;
    fa.cpu += f.cpu, fa.wall += f.wall, ka.cpu += k.cpu, ka.wall += k.wall;
  }
  const double n = o.nodes, steady = o.rounds - 1;
  const auto per = [&](const Cost& c, double rounds) {
    return Cost{c.cpu / n / rounds, c.wall / n / rounds};
  };
  const Cost f1 = per(first_fleet, 1), k1 = per(first_keep, 1);
  std::printf(
      "first round per node: %.3f ms CPU (fetch+verify %.3f, Placement %.3f; traits written)\n",
      (f1.cpu + k1.cpu) * 1e3, f1.cpu * 1e3, k1.cpu * 1e3);
  if (steady > 0) {
    const Cost fs_ = per(steady_fleet, steady), ks = per(steady_keep, steady);
    const double node_cpu = fs_.cpu + ks.cpu;
    std::printf(
        "steady round per node: %.3f ms CPU (fetch+verify %.3f, Placement %.3f); wall: "
        "fetch+verify %.3f ms at --jobs %d, Placement %.3f ms (sequential)\n",
        node_cpu * 1e3, fs_.cpu * 1e3, ks.cpu * 1e3, fs_.wall * 1e3, o.jobs, ks.wall * 1e3);
    std::printf(
        "ratios (same run): keeper round per node / cold verify %.2fx, / continuous verify "
        "%.2fx\n",
        node_cpu / cold, node_cpu / warm);
    std::printf(
        "nodes one verifier core keeps current at %d s: %.0f (verify alone: cold %.0f, "
        "continuous %.0f)\n",
        o.interval, o.interval / node_cpu, o.interval / cold, o.interval / warm);
    std::printf("wall bound of the sequential Placement updates at %d s: %.0f nodes per round\n",
                o.interval, o.interval / ks.wall);
  }
  std::printf("result: %s\n", ok ? "ok" : "FAILED (a node did not pass or Placement not in step)");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  return bench::RunBench("bench_fleet_keeper", [&] {
    Options o;
    bench::ParseFlags(argc, argv,
                      {bench::Value("--nodes", o.nodes), bench::Value("--rounds", o.rounds),
                       bench::Value("--jobs", o.jobs), bench::Value("--cel-entries", o.cel_entries),
                       bench::Value("--verify-seconds", o.verify_seconds),
                       bench::Value("--interval", o.interval)});
    if (o.nodes < 1 || o.nodes > 1000 || o.rounds < 1 || o.rounds > 1000 || o.jobs < 1 ||
        o.cel_entries < 1 || o.verify_seconds <= 0 || o.interval < 1)
      throw std::runtime_error("--nodes 1..1000, --rounds 1..1000, other counts positive");
    ::setenv("GRPC_DNS_RESOLVER", "native", 1);
    return Main(o);
  });
}
