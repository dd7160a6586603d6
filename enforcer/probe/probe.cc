#include "enforcer/probe/probe.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>

#include "base/errno_text.h"
#include "base/time.h"
#include "base/unique_fd.h"
#include "bpf/storage/storage_guard.skel.h"
#include "enforcer/probe/probe_candidates.h"
#include "enforcer/storage/fanotify_guard.h"
#include "enforcer/system/lsm.h"
#include "enforcer/system/mounts.h"

namespace sovguard::enforcer {
namespace {

using base::ErrnoText;
using base::UniqueFd;

struct SkelDeleter {
  void operator()(storage_guard* s) const { storage_guard__destroy(s); }
};
using StorageSkel = std::unique_ptr<storage_guard, SkelDeleter>;
struct LinkDeleter {
  void operator()(bpf_link* l) const { bpf_link__destroy(l); }
};
using Link = std::unique_ptr<bpf_link, LinkDeleter>;

// A temporary cgroup v2 directory to attach cgroup programs to; removed on destruction. Made
// below this process's own cgroup (e.g. system.slice/sovguardd.service, mode 0755, root's):
// the cgroup2 root is mode 0555, which root without CAP_DAC_OVERRIDE (the hardened unit) cannot
// write. A process in the root cgroup makes it there.
class ScratchCgroup {
 public:
  ScratchCgroup() {
    auto root = FindCgroup2Mount();
    if (!root) throw std::runtime_error("no cgroup2 mount in /proc/self/mountinfo");
    std::ifstream self("/proc/self/cgroup");
    std::filesystem::path own = *root;
    for (std::string line; std::getline(self, line);)
      if (line.rfind("0::/", 0) == 0) own = *root / line.substr(4);
    path_ = own / fmt::format("sovguard-probe-{}", ::getpid());
    std::filesystem::create_directory(path_);
    fd_ = UniqueFd(::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_) throw std::runtime_error("open " + path_.string() + ": " + ErrnoText(errno));
  }
  ScratchCgroup(const ScratchCgroup&) = delete;
  ScratchCgroup& operator=(const ScratchCgroup&) = delete;
  ~ScratchCgroup() {
    fd_.Reset();
    ::rmdir(path_.c_str());
  }
  int Fd() const { return fd_.Get(); }

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
};

// Opens the storage skeleton with only `programs` set to load: each mechanism is judged alone,
// so one unsupported program type cannot hide another that works.
StorageSkel OpenStorageWith(const std::vector<const char*>& programs, std::string& error) {
  StorageSkel skel(storage_guard__open());
  if (!skel) {
    error = "open storage_guard object: " + ErrnoText(errno);
    return nullptr;
  }
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, skel->obj) {
    bool wanted = false;
    for (const char* name : programs) wanted |= std::strcmp(bpf_program__name(prog), name) == 0;
    bpf_program__set_autoload(prog, wanted);
  }
  if (int err = storage_guard__load(skel.get()); err != 0) {
    error = "load: " + ErrnoText(err);
    return nullptr;
  }
  return skel;
}

Attempt TryTracepoints(std::string mechanism, std::vector<const char*> programs) {
  Attempt a{.mechanism = std::move(mechanism)};
  try {
    EnsureTracefs();
  } catch (const std::exception& e) {
    a.error = e.what();
    return a;
  }
  auto skel = OpenStorageWith(programs, a.error);
  if (!skel) return a;
  std::vector<Link> links;
  for (const char* name : programs) {
    bpf_program* prog = bpf_object__find_program_by_name(skel->obj, name);
    Link link(prog ? bpf_program__attach(prog) : nullptr);  // lsm/ and tp/ alike
    if (!link) {
      a.error = fmt::format("attach {}: {}", name, ErrnoText(errno));
      return a;
    }
    links.push_back(std::move(link));
  }
  a.ok = true;
  return a;
}

Attempt TryCgroupPrograms(std::string mechanism, std::initializer_list<const char*> programs) {
  Attempt a{.mechanism = std::move(mechanism)};
  try {
    ScratchCgroup cg;
    auto skel = OpenStorageWith(std::vector<const char*>(programs), a.error);
    if (!skel) return a;
    std::vector<Link> links;
    for (const char* name : programs) {
      bpf_program* prog = bpf_object__find_program_by_name(skel->obj, name);
      Link link(prog ? bpf_program__attach_cgroup(prog, cg.Fd()) : nullptr);
      if (!link) {
        a.error = fmt::format("attach {} to a cgroup: {}", name, ErrnoText(errno));
        return a;
      }
      links.push_back(std::move(link));
    }
    a.ok = true;
  } catch (const std::exception& e) {
    a.error = e.what();
  }
  return a;
}

struct Candidate {
  Guarantee guarantee;
  std::function<Attempt()> attempt;
};

// A rung of the storage-open ladder (enforcer/storage/storage_ladder.h), tried the way
// StorageDatapath attaches it: its programs, and for fanotify a refused open on our answer.
Attempt TryOpenRung(const storage::LadderRung& rung) {
  if (rung.rung == storage::OpenRung::kBpfLsm) {
    // LSM programs attach even when "bpf" is not an active LSM, and are then never called.
    if (auto inactive = BpfLsmInactiveReason()) {
      return Attempt{.mechanism = std::string(rung.mechanism),
                     .error = *inactive + " (" + std::string(rung.needs) + ")"};
    }
  }
  Attempt a = TryTracepoints(std::string(rung.mechanism), rung.programs);
  if (a.ok && rung.rung == storage::OpenRung::kFanotify) {
    a.error = storage::FanotifyGuard::Probe(std::filesystem::temp_directory_path());
    a.ok = a.error.empty();
  }
  if (!a.ok) a.error += " (" + std::string(rung.needs) + ")";
  return a;
}

std::vector<Candidate> StorageOpenCandidates() {
  std::vector<Candidate> out;
  for (const auto& rung : storage::StorageOpenLadder())
    out.push_back({rung.guarantee, [&rung] { return TryOpenRung(rung); }});
  return out;
}

std::vector<std::pair<std::string, std::vector<Candidate>>> Candidates() {
  std::vector<std::pair<std::string, std::vector<Candidate>>> all;
  all.emplace_back("guest-network-egress",
                   std::vector<Candidate>{{Guarantee::kPrevents, ProbeTapEgress}});
  all.emplace_back("guest-network-ingress",
                   std::vector<Candidate>{{Guarantee::kPrevents, ProbeTapIngress}});
  all.emplace_back("storage-open", StorageOpenCandidates());
  all.emplace_back(
      "storage-io-accounting",
      std::vector<Candidate>{
          {Guarantee::kCounts, [] {
             return TryTracepoints("tp_btf:sys_{enter,exit}", {"sg_sys_enter", "sg_sys_exit"});
           }}});
  all.emplace_back(
      "storage-network",
      std::vector<Candidate>{
          {Guarantee::kPrevents, [] {
             return TryCgroupPrograms("cgroup/connect4+connect6", {"sg_connect4", "sg_connect6"});
           }}});
  all.emplace_back(
      "storage-block-devices",
      std::vector<Candidate>{{Guarantee::kPrevents,
                              [] { return TryCgroupPrograms("cgroup/dev", {"sg_cgroup_dev"}); }}});
  return all;
}

int SilentLibbpfPrint(enum libbpf_print_level, const char*, va_list) {
  return 0;
}

}  // namespace

const std::vector<std::string>& ProbePaths() {
  static const std::vector<std::string> kPaths = [] {
    std::vector<std::string> p;
    for (const auto& [path, _] : Candidates()) p.push_back(path);
    return p;
  }();
  return kPaths;
}

const PathResult* ProbeReport::Find(const std::string& path) const {
  for (const auto& p : paths)
    if (p.path == path) return &p;
  return nullptr;
}

ProbeReport RunProbe() {
  ProbeReport report;
  utsname u{};
  ::uname(&u);
  report.kernel = u.release;
  report.probed_at = base::NowRfc3339();
  // Failed attempts are expected (that is what a probe is for); their reason is in the report,
  // so libbpf's own verifier dumps would only bury it.
  auto previous = libbpf_set_print(SilentLibbpfPrint);
  for (auto& [path, candidates] : Candidates()) {
    PathResult r{.path = path, .mechanism = "none"};
    for (auto& c : candidates) {
      Attempt a = c.attempt();
      const bool ok = a.ok;
      r.attempts.push_back(std::move(a));
      if (ok) {
        r.mechanism = r.attempts.back().mechanism;
        r.guarantee = c.guarantee;
        break;
      }
    }
    report.paths.push_back(std::move(r));
  }
  libbpf_set_print(previous);
  return report;
}

nlohmann::json ToJson(const ProbeReport& report) {
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& p : report.paths) {
    nlohmann::json attempts = nlohmann::json::array();
    for (const auto& a : p.attempts) {
      attempts.push_back({{"mechanism", a.mechanism}, {"ok", a.ok}, {"error", a.error}});
    }
    paths.push_back({{"path", p.path},
                     {"mechanism", p.mechanism},
                     {"guarantee", ToString(p.guarantee)},
                     {"attempts", attempts}});
  }
  return {{"kernel", report.kernel},
          {"probed_at", report.probed_at},
          {"paths", paths},
          {"notes", report.notes}};
}

ProbeReport ProbeReportFromJson(const nlohmann::json& j) {
  ProbeReport r;
  r.kernel = j.at("kernel").get<std::string>();
  r.probed_at = j.at("probed_at").get<std::string>();
  r.notes = j.at("notes").get<std::vector<std::string>>();
  for (const auto& p : j.at("paths")) {
    PathResult pr{.path = p.at("path").get<std::string>(),
                  .mechanism = p.at("mechanism").get<std::string>()};
    const auto g = p.at("guarantee").get<std::string>();
    pr.guarantee = g == "prevents" ? Guarantee::kPrevents
                   // "detects": reports written before the vocabulary was shared
                   : g == "detects-and-kills" || g == "detects" ? Guarantee::kDetectsAndKills
                   : g == "counts"                              ? Guarantee::kCounts
                                                                : Guarantee::kNone;
    for (const auto& a : p.at("attempts")) {
      pr.attempts.push_back({.mechanism = a.at("mechanism").get<std::string>(),
                             .ok = a.at("ok").get<bool>(),
                             .error = a.at("error").get<std::string>()});
    }
    r.paths.push_back(std::move(pr));
  }
  return r;
}

std::string ToTable(const ProbeReport& report) {
  std::ostringstream out;
  out << fmt::format("kernel {}   probed {}\n\n", report.kernel, report.probed_at);
  out << fmt::format("{:<26} {:<44} {}\n", "PATH", "MECHANISM", "GUARANTEE");
  for (const auto& p : report.paths) {
    out << fmt::format("{:<26} {:<44} {}\n", p.path, p.mechanism, ToString(p.guarantee));
    for (const auto& a : p.attempts) {
      if (!a.ok) out << fmt::format("{:<26}   unavailable: {}: {}\n", "", a.mechanism, a.error);
    }
  }
  for (const auto& n : report.notes) out << "note: " << n << "\n";
  return out.str();
}

}  // namespace sovguard::enforcer
