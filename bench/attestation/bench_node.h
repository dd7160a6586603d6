// What the attestation benches share: the node they measure (swtpm, sovguard's measurement log,
// the evidence builder and the snapshot), the node side in a child process (so its CPU is not
// the auditors'), the test PKI for mutual TLS, and the CPU, load and percentile figures they
// print. Benches using BenchNode define SOVGUARD_SHARED_DATA_DIR (Debian's UEFI log).
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "attestation/evidence/evidence.h"
#include "attestation/measure/platform.h"
#include "attestation/verify/uefi_log.h"
#include "base/file.h"
#include "base/unique_fd.h"
#include "bench/attestation/bench_evidence.h"
#include "tests/attestation/swtpm_fixture.h"
#include "tests/verify/evidence_fixture.h"

namespace sovguard::attestation::bench {

inline void Must(const std::vector<std::string>& argv) {
  auto r = test_support::Run(argv);
  if (r.exit_code != 0) throw std::runtime_error(argv[0] + " failed: " + r.output);
}

// Test PKI in `d`: one CA (ca.pem), the node's server certificate for localhost and 127.0.0.1
// (server.pem/.key) and `auditors` auditor certificates (auditor0.pem/.key ...), P-256, one day.
inline void MakePki(const std::filesystem::path& d, int auditors) {
  auto P = [&](const std::string& f) { return (d / f).string(); };
  std::filesystem::create_directories(d);
  Must({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", P("ca.key"), "-out", P("ca.pem"), "-subj", "/CN=bench-ca", "-days", "1"});
  base::WriteFileAtomic(d / "server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  for (int i = -1; i < auditors; ++i) {
    const std::string n = i < 0 ? "server" : "auditor" + std::to_string(i);
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

// CPU seconds (user + system) of this whole process, every thread; of the calling thread.
inline double ProcessCpu() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}
// Voluntary context switches of this whole process so far (a thread blocking to wait: each one
// is a wake-up later).
inline long ProcessWaits() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_nvcsw;
}
inline double ThreadCpu() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}
// "1 5 15" minute load averages (the machine is shared: printed with every figure).
inline std::string LoadAverage() {
  double l[3] = {};
  if (::getloadavg(l, 3) != 3) return "?";
  char b[64];
  std::snprintf(b, sizeof b, "%.2f %.2f %.2f", l[0], l[1], l[2]);
  return b;
}
// The p-quantile (0..1) of v; sorts v.
inline double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t idx = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

// Binds the calling thread (and what it starts or forks later) to one CPU.
inline void PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0)
    throw std::runtime_error("sched_setaffinity to CPU " + std::to_string(cpu) + " failed");
}

// Lines over two pipes between a bench and its node side.
class LineChannel {
 public:
  LineChannel(base::UniqueFd in, base::UniqueFd out) : in_(std::move(in)), out_(std::move(out)) {}
  // The next line without its newline; nullopt at end of file (the other side closed or died).
  std::optional<std::string> Read() {
    for (;;) {
      if (const auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      char b[4096];
      const ssize_t n = ::read(in_.Get(), b, sizeof b);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      buf_.append(b, static_cast<size_t>(n));
    }
  }
  std::string MustRead() {
    auto l = Read();
    if (!l) throw std::runtime_error("the node side ended (see its message above)");
    return *l;
  }
  void Write(const std::string& line) {
    const std::string s = line + "\n";
    for (size_t off = 0; off < s.size();) {
      const ssize_t n = ::write(out_.Get(), s.data() + off, s.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error("cannot write to the other side");
      off += static_cast<size_t>(n);
    }
  }
  void CloseWrite() { out_.Reset(); }

 private:
  base::UniqueFd in_, out_;
  std::string buf_;
};

// The node side of a bench in a forked child, so the node's CPU is its own process's (as on a
// node the auditors reach over the network). Fork before this process starts gRPC or threads.
// `node` runs in the child with its end of the channel; its return value is the child's exit
// code (an exception: 1, printed). The child gets SIGTERM if the bench dies, and ends when the
// bench closes the channel (`node` reads end of file).
class NodeProcess {
 public:
  explicit NodeProcess(const std::function<int(LineChannel&)>& node) {
    int up[2], down[2];
    if (::pipe2(up, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    base::UniqueFd up_r(up[0]), up_w(up[1]);
    if (::pipe2(down, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    base::UniqueFd down_r(down[0]), down_w(down[1]);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int rc = 1;
      try {
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        up_r.Reset();
        down_w.Reset();
        LineChannel ch(std::move(down_r), std::move(up_w));
        rc = node(ch);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "node side: %s\n", e.what());
      }
      std::fflush(nullptr);
      ::_exit(rc);  // the parent's atexit handlers and gRPC state are not the child's
    }
    channel_.emplace(std::move(up_r), std::move(down_w));
  }
  ~NodeProcess() {
    if (pid_ > 0) Finish();
  }
  NodeProcess(const NodeProcess&) = delete;
  NodeProcess& operator=(const NodeProcess&) = delete;

  LineChannel& channel() { return *channel_; }
  pid_t pid() const { return pid_; }
  // Closes the channel (the node side shuts down) and waits: the child's exit code, or -1.
  int Finish() {
    channel_->CloseWrite();
    int status = 0;
    const pid_t p = std::exchange(pid_, -1);
    if (::waitpid(p, &status, 0) != p) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  std::optional<LineChannel> channel_;
};

#ifdef SOVGUARD_SHARED_DATA_DIR
// Debian's real UEFI event log (secure boot) from the shared data.
inline std::filesystem::path DebianUefiLog() {
  return std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) /
         "eventlogs/keylime/binary_bios_measurements-secureboot";
}

// The node's CEL records before sovguardd's own events (MeasurementLog and BenchNode add 5 more):
// `entries` - 5 records shaped like sovguardd's.
inline std::vector<cel::Record> NodeRecords(int entries) {
  std::vector<cel::Record> recs;
  recs.reserve(static_cast<size_t>(std::max(0, entries - 5)));
  for (int i = 0; i < std::max(0, entries - 5); ++i)
    recs.push_back(cel::MakeSovguardRecord(static_cast<uint64_t>(i), measure::kDefaultSovguardPcr,
                                           EventFor(i)));
  return recs;
}

// A node as sovguardd reports it, on a private swtpm: a CEL of `cel_entries` records (driver
// modules, BPF objects, attachments, enforcement events) extended into the sovguard PCR,
// Debian's real UEFI log extended into PCRs 0-9, the policy applied, every enforcement path
// measured (storage-open downgraded, before any guest is covered), one running guest covered by
// sg_net; the snapshot says the same.
class BenchNode {
 public:
  explicit BenchNode(int cel_entries) : tpm_(swtpm_.tcti()) {
    const uint32_t pcr = measure::kDefaultSovguardPcr;
    const auto recs = NodeRecords(cel_entries);
    for (const auto& r : recs) tpm_.PcrExtend(pcr, r.digest);
    std::filesystem::create_directories(tmp_.path() / "state");
    base::WriteFileAtomic(tmp_.path() / "state/cel.bin", cel::EncodeLog(recs));
    for (const auto& e : verify::uefi::Parse(ReadFileBytes(DebianUefiLog())).events)
      if (e.type != verify::uefi::kEvNoAction) tpm_.PcrExtend(e.pcr, e.sha256);
    log_.emplace(tpm_, measure::MeasureConfig{tmp_.path() / "state", pcr});
    if (log_->open_state() != "continued")
      throw std::runtime_error("log open: " + log_->open_state());
    log_->Measure(cel::EventKind::kPolicyApplied, "bundle-1", Sha256("bundle"), "enforce");
    evidence::EvidenceConfig cfg;
    cfg.node = "bench-node";
    cfg.uefi_log = DebianUefiLog();
    cfg.ima_log = tmp_.path() / "no-ima";
    builder_.emplace(tpm_, *log_, cfg);
    test_support::MeasureMechanisms(*log_);
    measure::MeasureProgramAttached(*log_, "sg_net", std::string(test_support::kNetTag),
                                    "tc/ingress", "vnet0");
    measure::MeasureGuest(*log_, test_support::GuestUuid("bench-vm"), true);
    snap_.set_version(1);
    snap_.set_node("bench-node");
    test_support::AddGuest(snap_, "bench-vm", "vnet0");
    test_support::AddMechanisms(snap_);
    const auto d = Sha256("bundle");
    snap_.set_policy_bundle_sha256(std::string(d.begin(), d.end()));
  }

  test_support::Swtpm& swtpm() { return swtpm_; }
  tpm::Tpm& tpm() { return tpm_; }
  measure::MeasurementLog& log() { return *log_; }
  evidence::EvidenceBuilder& builder() { return *builder_; }
  const v1::EnforcementSnapshot& snapshot() const { return snap_; }

 private:
  test_support::Swtpm swtpm_;
  test_support::TempDir tmp_;
  tpm::Tpm tpm_;
  std::optional<measure::MeasurementLog> log_;
  std::optional<evidence::EvidenceBuilder> builder_;
  v1::EnforcementSnapshot snap_;
};
#endif

}  // namespace sovguard::attestation::bench
