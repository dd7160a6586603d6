// StorageDatapath::ProbeLadder: each storage path's mechanisms, tried on a scratch attachment
// the way the datapath attaches them (the storage-open rungs from the one ladder,
// storage_ladder.h).
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "base/errno_text.h"
#include "enforcer/storage/storage_datapath_impl.h"
#include "enforcer/system/mounts.h"

namespace sovguard::storage {
namespace {

using base::ErrnoText;
using bpf_feature::Attempt;

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
    auto root = enforcer::FindCgroup2Mount();
    if (!root) throw std::runtime_error("no cgroup2 mount in /proc/self/mountinfo");
    std::ifstream self("/proc/self/cgroup");
    fs::path own = *root;
    for (std::string line; std::getline(self, line);)
      if (line.rfind("0::/", 0) == 0) own = *root / line.substr(4);
    path_ = own / fmt::format("sovguard-probe-{}", ::getpid());
    fs::create_directory(path_);
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
  fs::path path_;
  UniqueFd fd_;
};

// The storage object with only `programs` set to load: each mechanism is judged alone, so one
// unsupported program type cannot hide another that works.
Skel LoadOnly(const std::vector<const char*>& programs, std::string& error) {
  Skel skel;
  try {
    skel = bpf_feature::OpenSkeleton<Skel, storage_guard__create_skeleton>("storage_guard", {});
  } catch (const bpf_feature::Error& e) {
    error = e.what();
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

Attempt TryTracepoints(std::string mechanism, const std::vector<const char*>& programs) {
  Attempt a{.mechanism = std::move(mechanism)};
  auto skel = LoadOnly(programs, a.error);
  if (!skel) return a;
  std::vector<Link> links;
  for (const char* name : programs) {
    bpf_program* prog = bpf_object__find_program_by_name(skel->obj, name);
    Link link(prog ? bpf_program__attach(prog) : nullptr);  // lsm/, fmod_ret/, tp_btf/ alike
    if (!link) {
      a.error = fmt::format("attach {}: {}", name, ErrnoText(errno));
      return a;
    }
    links.push_back(std::move(link));
  }
  a.ok = true;
  return a;
}

Attempt TryCgroupPrograms(std::string mechanism, const std::vector<const char*>& programs) {
  Attempt a{.mechanism = std::move(mechanism)};
  try {
    ScratchCgroup cg;
    auto skel = LoadOnly(programs, a.error);
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

// A rung of the storage-open ladder, tried the way AttachOpenRung attaches it: its programs, and
// for fanotify a refused open on our answer.
Attempt TryOpenRung(const LadderRung& rung) {
  if (auto inactive = InactiveReason(rung)) {
    return Attempt{.mechanism = std::string(rung.mechanism),
                   .error = *inactive + " (" + std::string(rung.needs) + ")"};
  }
  Attempt a = TryTracepoints(std::string(rung.mechanism), rung.programs);
  if (a.ok && rung.rung == OpenRung::kFanotify) {
    a.error = FanotifyGuard::Probe(fs::temp_directory_path());
    a.ok = a.error.empty();
  }
  if (!a.ok) a.error += " (" + std::string(rung.needs) + ")";
  return a;
}

}  // namespace

std::vector<bpf_feature::ProbePath> StorageDatapath::ProbeLadder() {
  std::vector<bpf_feature::ProbePath> paths;
  auto& open = paths.emplace_back(bpf_feature::ProbePath{.path = "storage-open"});
  for (const auto& rung : StorageOpenLadder())
    open.rungs.push_back({rung.guarantee, [&rung] { return TryOpenRung(rung); }});
  paths.push_back(
      {"storage-io-accounting",
       {{Guarantee::kCounts, [] {
           return TryTracepoints("tp_btf:sys_{enter,exit}", {"sg_sys_enter", "sg_sys_exit"});
         }}}});
  paths.push_back(
      {"storage-network",
       {{Guarantee::kPrevents, [] {
           return TryCgroupPrograms("cgroup/connect4+connect6", {"sg_connect4", "sg_connect6"});
         }}}});
  paths.push_back({"storage-block-devices", {{Guarantee::kPrevents, [] {
                                                return TryCgroupPrograms("cgroup/dev",
                                                                         {"sg_cgroup_dev"});
                                              }}}});
  return paths;
}

}  // namespace sovguard::storage
