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
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "attestation/measure/platform.h"
#include "attestation/service/attestation_service.h"
#include "attestation/verify/fleet_keeper.h"
#include "attestation/verify/live.h"
#include "attestation/verify/uefi_log.h"
#include "attestation/verify/verifier.h"
#include "bench/attestation/bench_evidence.h"
#include "tests/attestation/swtpm_fixture.h"
#include "tests/support/placement_service.h"
#include "tests/verify/evidence_fixture.h"

namespace sa = sovguard::attestation;
namespace verify = sovguard::attestation::verify;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
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
  auto b = sa::ReadFileBytes(p);
  return std::string(b.begin(), b.end());
}

fs::path UefiLog() {
  return fs::path(SOVGUARD_SHARED_DATA_DIR) /
         "eventlogs/keylime/binary_bios_measurements-secureboot";
}

// The node's log before sovguardd's own events (MeasurementLog adds 5 more).
std::vector<sa::cel::Record> NodeRecords(int cel_entries) {
  std::vector<sa::cel::Record> recs;
  for (int i = 0; i < std::max(0, cel_entries - 5); ++i)
    recs.push_back(sa::cel::MakeSovguardRecord(static_cast<uint64_t>(i),
                                               sa::measure::kDefaultSovguardPcr,
                                               sovguard::attestation::bench::EventFor(i)));
  return recs;
}

void Must(const std::vector<std::string>& argv) {
  auto r = sa::test_support::Run(argv);
  if (r.exit_code != 0) throw std::runtime_error(argv[0] + " failed: " + r.output);
}

// One CA; the node's server certificate (127.0.0.1) and one auditor certificate.
void MakePki(const fs::path& d) {
  auto P = [&](const std::string& f) { return (d / f).string(); };
  fs::create_directories(d);
  Must({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", P("ca.key"), "-out", P("ca.pem"), "-subj", "/CN=bench-ca", "-days", "1"});
  sa::WriteFileAtomic(d / "server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  for (const std::string n : {"server", "auditor"}) {
    Must({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", P(n + ".key"), "-out", P(n + ".csr"), "-subj", "/CN=" + n});
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
                                     n == "server" ? "10" : "11",
                                     "-days",
                                     "1",
                                     "-out",
                                     P(n + ".pem")};
    if (n == "server") sign.insert(sign.end(), {"-extfile", P("server.ext")});
    Must(sign);
  }
}

// The node side, in a forked child: writes "PORT\n" per node, then "EK_CA_DIR\n" to `out_fd`
// and serves until `in_fd` reaches end of file (the parent closed it or died).
[[noreturn]] void NodeSide(const Options& o, const fs::path& pki, int out_fd, int in_fd) {
  int rc = 0;
  try {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    sa::test_support::Swtpm swtpm;
    sa::test_support::TempDir tmp;
    const uint32_t pcr = sa::measure::kDefaultSovguardPcr;
    sa::tpm::Tpm tpm(swtpm.tcti());
    // As bench_verify makes it: `cel_entries` records shaped like sovguardd's (driver modules,
    // BPF objects, attachments, enforcement events) extended into the sovguard PCR, Debian's
    // real UEFI log of shared/data extended into PCRs 0-9, the policy, every mechanism, one
    // running guest covered by sg_net.
    const auto recs = NodeRecords(o.cel_entries);
    for (const auto& r : recs) tpm.PcrExtend(pcr, r.digest);
    fs::create_directories(tmp.path() / "state");
    sa::WriteFileAtomic(tmp.path() / "state/cel.bin", sa::cel::EncodeLog(recs));
    for (const auto& e : sa::verify::uefi::Parse(sa::ReadFileBytes(UefiLog())).events)
      if (e.type != sa::verify::uefi::kEvNoAction) tpm.PcrExtend(e.pcr, e.sha256);
    sa::measure::MeasurementLog log(tpm, {tmp.path() / "state", pcr});
    if (log.open_state() != "continued") throw std::runtime_error("log: " + log.open_state());
    log.Measure(sa::cel::EventKind::kPolicyApplied, "bundle-1", sa::Sha256("bundle"), "enforce");
    sa::evidence::EvidenceConfig cfg;
    cfg.node = "bench-node";
    cfg.uefi_log = UefiLog();
    cfg.ima_log = tmp.path() / "no-ima";
    sa::evidence::EvidenceBuilder builder(tpm, log, cfg);
    sa::test_support::MeasureMechanisms(log);
    sa::measure::MeasureProgramAttached(log, "sg_net", std::string(sa::test_support::kNetTag),
                                        "tc/ingress", "vnet0");
    sa::measure::MeasureGuest(log, sa::test_support::GuestUuid("bench-vm"), true);
    sa::v1::EnforcementSnapshot snap;
    snap.set_version(1);
    snap.set_node("bench-node");
    sa::test_support::AddGuest(snap, "bench-vm", "vnet0");
    sa::test_support::AddMechanisms(snap);
    {
      const auto d = sa::Sha256("bundle");
      snap.set_policy_bundle_sha256(std::string(d.begin(), d.end()));
    }
    sa::service::AttestationServiceImpl service(builder, [&] { return snap; });
    sa::service::MtlsConfig m;
    m.server_cert_pem = ReadText(pki / "server.pem");
    m.server_key_pem = ReadText(pki / "server.key");
    m.auditor_ca_pem = ReadText(pki / "ca.pem");
    m.allowed_client_sha256.push_back(
        sa::service::CertificateFingerprint(ReadText(pki / "auditor.pem")));
    grpc::ServerBuilder sb;
    std::vector<int> ports(static_cast<size_t>(o.nodes));
    const auto creds = sa::service::MakeMtlsServerCredentials(m);
    for (auto& p : ports) sb.AddListeningPort("127.0.0.1:0", creds, &p);
    sb.RegisterService(&service);
    auto server = sb.BuildAndStart();
    if (!server) throw std::runtime_error("gRPC server did not start");
    std::string msg;
    for (const int p : ports) msg += std::to_string(p) + "\n";
    msg += swtpm.ca_dir().string() + "\n";
    if (::write(out_fd, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size()))
      throw std::runtime_error("cannot write to the parent");
    ::close(out_fd);
    char c;
    while (::read(in_fd, &c, 1) > 0) {
    }
    server->Shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_fleet_keeper node side: %s\n", e.what());
    rc = 1;
  }
  std::fflush(nullptr);
  ::_exit(rc);  // the parent's atexit handlers and gRPC state are not the child's
}

double CpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
  };
  return s(u.ru_utime) + s(u.ru_stime);
}

struct Cost {
  double cpu = 0, wall = 0;  // seconds
};
template <typename F>
Cost Measure(F&& f) {
  const double c0 = CpuSeconds();
  const auto w0 = Clock::now();
  f();
  return {CpuSeconds() - c0, std::chrono::duration<double>(Clock::now() - w0).count()};
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
  MakePki(tmp.path() / "pki");
  int to_parent[2], to_child[2];
  if (::pipe2(to_parent, O_CLOEXEC) != 0 || ::pipe2(to_child, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe failed");
  const pid_t child = ::fork();  // before any gRPC in this process
  if (child < 0) throw std::runtime_error("fork failed");
  if (child == 0) {
    ::close(to_parent[0]);
    ::close(to_child[1]);
    NodeSide(o, tmp.path() / "pki", to_parent[1], to_child[0]);
  }
  ::close(to_parent[1]);
  ::close(to_child[0]);
  struct Reap {
    pid_t pid;
    int fd;
    ~Reap() {
      ::close(fd);  // the node side shuts down at end of file
      ::waitpid(pid, nullptr, 0);
    }
  } reap{child, to_child[1]};
  std::string msg;
  for (char buf[4096];;) {
    const ssize_t n = ::read(to_parent[0], buf, sizeof buf);
    if (n <= 0) break;
    msg.append(buf, static_cast<size_t>(n));
  }
  ::close(to_parent[0]);
  std::vector<std::string> lines;
  for (std::istringstream in(msg); std::getline(in, msg);) lines.push_back(msg);
  if (lines.size() != static_cast<size_t>(o.nodes) + 1)
    throw std::runtime_error("the node side did not start");
  const fs::path ek_ca = lines.back();

  std::printf("node side: pid %d, %d nodes on loopback ports, one swtpm, CEL of %d records\n",
              static_cast<int>(child), o.nodes, o.cel_entries);
  sovguard::test::PlacementService placement(tmp.path() / "placement");
  std::string fleet;
  for (int i = 0; i < o.nodes; ++i) {
    const std::string name = "bench-node-" + std::to_string(i);
    placement.Api("POST", "/resource_providers", {{"name", name}});
    fleet += "127.0.0.1:" + lines[static_cast<size_t>(i)] + " " + name + "\n";
  }
  sa::WriteFileAtomic(tmp.path() / "token", "admin\n");

  const verify::TlsClient tls{ReadText(tmp.path() / "pki/ca.pem"),
                              ReadText(tmp.path() / "pki/auditor.pem"),
                              ReadText(tmp.path() / "pki/auditor.key"), std::chrono::seconds(60)};
  verify::Options base;
  base.ek_ca_dir = ek_ca;
  base.waivers = {"software-tpm"};
  AddManifest(NodeRecords(o.cel_entries), base);

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
  Options o;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--nodes")
        o.nodes = std::stoi(next());
      else if (a == "--rounds")
        o.rounds = std::stoi(next());
      else if (a == "--jobs")
        o.jobs = std::stoi(next());
      else if (a == "--cel-entries")
        o.cel_entries = std::stoi(next());
      else if (a == "--verify-seconds")
        o.verify_seconds = std::stod(next());
      else if (a == "--interval")
        o.interval = std::stoi(next());
      else
        throw std::runtime_error("unknown option " + a);
    }
    if (o.nodes < 1 || o.nodes > 1000 || o.rounds < 1 || o.rounds > 1000 || o.jobs < 1 ||
        o.cel_entries < 1 || o.verify_seconds <= 0 || o.interval < 1)
      throw std::runtime_error("--nodes 1..1000, --rounds 1..1000, other counts positive");
    ::setenv("GRPC_DNS_RESOLVER", "native", 1);
    return Main(o);
  } catch (const std::exception& e) {
    std::cerr << "bench_fleet_keeper: " << e.what() << "\n";
    return 2;
  }
}
