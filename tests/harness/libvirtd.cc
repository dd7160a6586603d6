#include "tests/harness/libvirtd.h"

#include <pwd.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "tests/harness/mounts.h"
#include "tests/harness/process.h"

namespace fs = std::filesystem;

namespace sovguard::test {
namespace {

using Binds = std::vector<std::pair<std::string, std::string>>;

std::string State(const char* leaf) {
  return std::string(LibvirtDaemons::kStateDir) + "/" + leaf;
}
std::string LibvirtdPidFile() {
  return State("libvirtd.pid");
}
std::string VirtlogdPidFile() {
  return State("virtlogd.pid");
}
std::string LibvirtdLog() {
  return std::string(LibvirtDaemons::kLogDir) + "/libvirtd.log";
}

std::string Tail(const std::string& path, size_t bytes) {
  try {
    std::string s = ReadFile(path);
    return s.size() > bytes ? s.substr(s.size() - bytes) : s;
  } catch (const std::exception&) {
    return "(no " + path + ")";
  }
}

// The pid from our own pid file, if it is alive and really that daemon (pids get recycled).
pid_t OurDaemon(const std::string& pid_file, const std::string& comm) {
  pid_t pid = ReadPidFile(pid_file);
  if (!ProcessAlive(pid)) {
    return 0;
  }
  try {
    std::string c = ReadFile("/proc/" + std::to_string(pid) + "/comm");
    if (c.substr(0, c.find('\n')) != comm) {
      return 0;
    }
  } catch (const std::exception&) {
    return 0;
  }
  return pid;
}

// Creates a bind-mount target the host lacks and records it, so Stop() removes it again.
void EnsureMountPoint(const fs::path& target) {
  if (fs::exists(target)) {
    return;
  }
  fs::create_directories(target);
  std::string created;
  try {
    created = ReadFile(State("created-mount-points"));
  } catch (const std::exception&) {
  }
  WriteFile(State("created-mount-points"), created + target.string() + "\n");
}

// libvirt creates its partition cgroup `machine` in every hierarchy the first time a guest starts
// and never removes it. Before the first start the harness notes the hierarchies that lack one;
// RemoveOverlay() removes what libvirt created there (empty by then: guests are gone).
void NoteAbsentMachineCgroups() {
  fs::create_directories(LibvirtDaemons::kStateDir);
  const fs::path note = State("absent-machine-cgroups");
  if (fs::exists(note)) {
    return;
  }
  std::string absent;
  for (const auto& path : AbsentMachineCgroups()) {
    absent += path.string() + "\n";
  }
  WriteFile(note, absent);
}

// The harness's /run/sovguard-test, where tests keep guests' volumes.
fs::path TestRoot() {
  return fs::path(LibvirtDaemons::kStateDir).parent_path();
}

bool TestRootMounted() {
  const auto mounts = ReadMounts();
  return std::any_of(mounts.begin(), mounts.end(),
                     [](const MountEntry& m) { return m.mount_point == TestRoot().string(); });
}

// A test's mount under /run/sovguard-test (an overlay holding a guest's image) must be seen by
// libvirtd and QEMU too: the directory is made a shared bind mount of itself before libvirtd's
// namespace is made, so mounts beneath it propagate into that namespace (its slave). Only a bind
// the harness made (noted in its state) is undone, by RemoveOverlay(); something already mounted
// there is left as it is.
void ShareTestRoot() {
  const fs::path root = TestRoot();
  fs::create_directories(LibvirtDaemons::kStateDir);
  if (TestRootMounted()) return;
  if (::mount(root.c_str(), root.c_str(), nullptr, MS_BIND, nullptr) != 0)
    throw std::system_error(errno, std::generic_category(), "bind mount " + root.string());
  WriteFile(State("test-root-bind"), root.string() + "\n");
  if (::mount(nullptr, root.c_str(), nullptr, MS_SHARED, nullptr) != 0)
    throw std::system_error(errno, std::generic_category(), "make shared " + root.string());
}

// Removes the mount points EnsureMountPoint created (only if still empty), then the harness's
// whole /run/sovguard-test (state, logs, guest consoles, hook sockets) and its bind mount: the
// next Start() prepares a fresh one.
void RemoveOverlay() {
  std::error_code ec;
  // Test guests' own cgroups (every test guest is named sgt-*): libvirt leaves them behind for a
  // guest that died while its libvirtd was down, also under a `machine` that existed before.
  for (const auto& h : CgroupHierarchies()) {
    std::error_code ec2;
    for (const auto& g : fs::directory_iterator(h / "machine", ec2)) {
      const std::string name = g.path().filename().string();
      if (g.is_directory() && name.rfind("qemu-", 0) == 0 &&
          name.find("-sgt-") != std::string::npos) {
        RemoveCgroupTree(g.path());
      }
    }
  }
  if (fs::exists(State("absent-machine-cgroups"))) {
    std::istringstream absent(ReadFile(State("absent-machine-cgroups")));
    std::string path;
    while (std::getline(absent, path)) {
      if (fs::exists(path)) {
        RemoveCgroupTree(path);
      }
    }
  }
  if (fs::exists(State("created-mount-points"))) {
    std::istringstream created(ReadFile(State("created-mount-points")));
    std::string path;
    while (std::getline(created, path)) {
      fs::remove(path, ec);  // fails (and keeps it) if something else put files there meanwhile
    }
  }
  const fs::path root = TestRoot();
  if (fs::exists(State("test-root-bind"))) ::umount2(root.c_str(), MNT_DETACH);
  fs::remove_all(root, ec);
  if (ec) {
    throw std::runtime_error("cannot remove " + root.string() + ": " + ec.message());
  }
}

const char* kDispatcher = R"(#!/bin/sh
# sovguard test harness: forwards libvirt's qemu hook to what the running test installed.
t=/run/sovguard-test/libvirt/hook-target
if [ -x "$t" ]; then exec "$t" "$@"; fi
exit 0
)";

// Prepares the overlay directories; returns the bind mounts (source -> target).
Binds PrepareOverlay() {
  NoteAbsentMachineCgroups();
  ShareTestRoot();
  const fs::path etc = State("etc-libvirt");
  fs::create_directories(etc / "hooks" / "qemu.d");
  fs::create_directories(State("run"));
  fs::create_directories(State("var-lib"));
  fs::create_directories(State("var-cache"));
  fs::create_directories(LibvirtDaemons::kLogDir);
  // Keep what the host configures (libvirt.conf, nwfilter...) but not its domains, hooks or
  // qemu.conf: the test daemon has its own.
  if (fs::exists("/etc/libvirt")) {
    for (const auto& e : fs::directory_iterator("/etc/libvirt")) {
      const auto name = e.path().filename();
      if (name == "hooks" || name == "qemu.conf" || name == "qemu" || name == "secrets") {
        continue;
      }
      fs::copy(e.path(), etc / name,
               fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    }
  }
  // QEMU runs as root: kernel/initramfs in the build tree need no relabelling.
  WriteFile(etc / "qemu.conf", "user = \"root\"\ngroup = \"root\"\n");
  WriteFile(etc / "hooks" / "qemu.d" / "sovguard-test", kDispatcher, 0755);
  // Mount points must exist on the host; those it lacks are created and removed again by Stop().
  // /var/lib/libvirt and /var/cache/libvirt are private too: libvirt re-owns its state directories
  // for the QEMU user, root here, which would lock the host's own libvirtd (libvirt-qemu) out.
  const Binds binds_all{{etc.string(), "/etc/libvirt"},
                        {State("run"), "/run/libvirt"},
                        {State("var-lib"), "/var/lib/libvirt"},
                        {State("var-cache"), "/var/cache/libvirt"},
                        {LibvirtDaemons::kLogDir, "/var/log/libvirt"}};
  for (const auto& [src, dst] : binds_all) {
    EnsureMountPoint(dst);
  }
  Binds binds = binds_all;
  // Debian's libvirt resolves its compiled-in user `libvirt-qemu` even when qemu.conf overrides it;
  // the account comes with libvirt-daemon-system, which these hosts may lack.
  // Start-up only, before any thread of ours could call getpw* concurrently.
  if (::getpwnam("libvirt-qemu") == nullptr) {  // NOLINT(concurrency-mt-unsafe)
    WriteFile(State("passwd"), ReadFile("/etc/passwd") +
                                   "libvirt-qemu:x:64055:64055:libvirt (sovguard test "
                                   "overlay):/var/lib/libvirt:/usr/sbin/nologin\n");
    WriteFile(State("group"), ReadFile("/etc/group") + "libvirt-qemu:x:64055:\n");
    binds.emplace_back(State("passwd"), "/etc/passwd");
    binds.emplace_back(State("group"), "/etc/group");
  }
  return binds;
}

// Runs `path -d -p pid_file` in a private mount namespace with `binds`; returns when the
// daemonising parent has exited (the daemon reports its start-up status to it first).
void SpawnDaemon(const std::string& path, const std::string& pid_file, const Binds& binds) {
  std::vector<std::string> args{path, "-d", "-p", pid_file};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  // Everything the child needs is prepared before fork: after fork only syscalls and execv.
  pid_t child = ::fork();
  if (child < 0) {
    throw std::runtime_error(std::string("fork: ") + std::generic_category().message(errno));
  }
  if (child == 0) {
    if (::unshare(CLONE_NEWNS) != 0) {
      ::_exit(120);
    }
    // Slave: host mounts still propagate in, ours never propagate out.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
      ::_exit(121);
    }
    for (const auto& [src, dst] : binds) {
      if (::mount(src.c_str(), dst.c_str(), nullptr, MS_BIND, nullptr) != 0) {
        ::_exit(122);
      }
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error(path + " -d failed (status " + std::to_string(status) +
                             "; 120-122: namespace/bind mount, 127: exec). libvirtd.log ends:\n" +
                             Tail(LibvirtdLog(), 3000));
  }
}

void StartVirtlogd(const Binds& binds) {
  if (OurDaemon(VirtlogdPidFile(), "virtlogd")) {
    return;
  }
  SpawnDaemon("/usr/sbin/virtlogd", VirtlogdPidFile(), binds);
  if (!PollUntil(std::chrono::seconds(10), [] {
        return OurDaemon(VirtlogdPidFile(), "virtlogd") != 0 &&
               fs::exists(State("run/virtlogd-sock"));
      })) {
    throw std::runtime_error("virtlogd did not create its socket within 10 s: " +
                             Tail(std::string(LibvirtDaemons::kLogDir) + "/virtlogd.log", 2000));
  }
}

void DestroyTestDomains() {
  if (!LibvirtDaemons::Answering()) {
    return;
  }
  CommandResult list = Run({"virsh", "-c", LibvirtDaemons::kUri, "list", "--all", "--name"});
  std::istringstream names(list.out);
  std::string name;
  while (std::getline(names, name)) {
    if (name.rfind(LibvirtDaemons::kTestDomainPrefix, 0) != 0) {
      continue;
    }
    Run({"virsh", "-c", LibvirtDaemons::kUri, "destroy", name});
    Run({"virsh", "-c", LibvirtDaemons::kUri, "undefine", name});
  }
}

}  // namespace

std::vector<fs::path> CgroupHierarchies() {
  std::vector<fs::path> roots;
  std::ifstream mounts("/proc/mounts");
  std::string dev, dir, type, rest;
  while (mounts >> dev >> dir >> type && std::getline(mounts, rest)) {
    if (type == "cgroup" || type == "cgroup2") roots.emplace_back(dir);
  }
  return roots;
}

std::vector<fs::path> AbsentMachineCgroups() {
  std::vector<fs::path> absent;
  for (const auto& r : CgroupHierarchies()) {
    if (!fs::exists(r / "machine")) {
      absent.push_back(r / "machine");
    }
  }
  return absent;
}

void RemoveCgroupTree(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_directory() && !e.is_symlink()) {
      RemoveCgroupTree(e.path());
    }
  }
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) {
    throw std::runtime_error("cannot remove cgroup " + dir.string() + ": " +
                             std::generic_category().message(errno));
  }
}

LibvirtPartition::LibvirtPartition(const std::string& name) {
  for (const auto& dir : CgroupHierarchies()) {
    const fs::path p = dir / (name + ".partition");
    if (::mkdir(p.c_str(), 0755) != 0)
      throw std::runtime_error("mkdir " + p.string() + ": " + std::strerror(errno));
    made_.push_back(p);
    // A new cgroup v1 cpuset has no CPUs and memory nodes: its parent's (a v2 root has no
    // cpuset.cpus of its own, and its children inherit).
    for (const char* file : {"cpuset.cpus", "cpuset.mems"})
      if (fs::exists(p / file) && fs::exists(dir / file))  // cgroup files: written in place
        std::ofstream(p / file) << ReadFile((dir / file).string());
  }
}

LibvirtPartition::~LibvirtPartition() {
  for (const auto& p : made_) {
    try {
      RemoveCgroupTree(p);
    } catch (const std::exception& e) {  // a destructor: said, and the host check fails the run
      std::fprintf(stderr, "LibvirtPartition: %s\n", e.what());
    }
  }
}

bool LibvirtDaemons::Answering() {
  return Run({"virsh", "-c", kUri, "version"}).exit_code == 0;
}

pid_t LibvirtDaemons::LibvirtdPid() {
  return OurDaemon(LibvirtdPidFile(), "libvirtd");
}
pid_t LibvirtDaemons::VirtlogdPid() {
  return OurDaemon(VirtlogdPidFile(), "virtlogd");
}

void LibvirtDaemons::WaitAnswering(std::chrono::milliseconds timeout) {
  if (!PollUntil(
          timeout, [] { return Answering(); }, std::chrono::milliseconds(50))) {
    throw std::runtime_error("libvirtd does not answer on " + std::string(kUri) + " after " +
                             std::to_string(timeout.count()) + " ms; libvirtd.log ends:\n" +
                             Tail(LibvirtdLog(), 3000));
  }
}

void LibvirtDaemons::StartLibvirtd() {
  if (LibvirtdPid()) {
    return;
  }
  const Binds binds = PrepareOverlay();
  StartVirtlogd(binds);  // libvirtd needs it for QEMU's logs; restarts keep the running one
  SpawnDaemon("/usr/sbin/libvirtd", LibvirtdPidFile(), binds);
  WaitAnswering();
  if (!LibvirtdPid()) {
    throw std::runtime_error("libvirtd answers but its pid file is stale");
  }
}

void LibvirtDaemons::StopLibvirtd() {
  if (pid_t pid = LibvirtdPid()) {
    if (!TerminateAndWait(pid, std::chrono::seconds(30))) {
      throw std::runtime_error("libvirtd pid " + std::to_string(pid) + " does not exit");
    }
  }
}

void LibvirtDaemons::RestartLibvirtd() {
  StopLibvirtd();
  StartLibvirtd();
}

bool LibvirtDaemons::Start() {
  const bool started = LibvirtdPid() == 0;
  StartLibvirtd();
  return started;
}

void LibvirtDaemons::Stop() {
  DestroyTestDomains();
  StopLibvirtd();
  if (pid_t logd = VirtlogdPid()) {
    if (!TerminateAndWait(logd, std::chrono::seconds(10))) {
      throw std::runtime_error("virtlogd pid " + std::to_string(logd) + " does not exit");
    }
  }
  RemoveOverlay();
}

ScopedHookTarget::ScopedHookTarget(const std::string& executable) {
  fs::create_directories(LibvirtDaemons::kStateDir);
  fs::remove(LibvirtDaemons::kHookTarget);
  fs::create_symlink(fs::absolute(executable), LibvirtDaemons::kHookTarget);
}

ScopedHookTarget::~ScopedHookTarget() {
  std::error_code ec;
  fs::remove(LibvirtDaemons::kHookTarget, ec);
}

ScopedLibvirtHook::ScopedLibvirtHook(const std::string& name, const std::string& hook) {
  const std::string base = "/run/sovguard-test/" + name;
  socket_ = base + ".sock";
  config_ = base + ".conf";
  wrapper_ = base + ".sh";
  fs::create_directories("/run/sovguard-test");
  WriteFile(config_, "socket = " + socket_ + "\ntimeout_ms = 20000\n");
  WriteFile(wrapper_, "#!/bin/sh\nexec " + hook + " --config " + config_ + " \"$@\"\n", 0755);
  target_ = std::make_unique<ScopedHookTarget>(wrapper_);
}

ScopedLibvirtHook::~ScopedLibvirtHook() {
  target_.reset();
  std::error_code ec;
  fs::remove(config_, ec);
  fs::remove(wrapper_, ec);
}

}  // namespace sovguard::test
