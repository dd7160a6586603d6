#include "tests/harness/mounts.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <stdexcept>
#include <system_error>
#include "tests/harness/process.h"

namespace sovguard::test {

std::vector<MountEntry> ReadMounts(const std::string& mountinfo) {
  std::ifstream f(mountinfo);
  if (!f) {
    throw std::runtime_error("cannot read " + mountinfo);
  }
  std::vector<MountEntry> mounts;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string id, parent, devno, root, mount_point, tok;
    in >> id >> parent >> devno >> root >> mount_point;
    while (in >> tok && tok != "-") {
    }
    std::string fs_type;
    in >> fs_type;
    if (!fs_type.empty()) {
      mounts.push_back({mount_point, fs_type});
    }
  }
  return mounts;
}

std::optional<std::string> FindMount(const std::string& fs_type) {
  for (const auto& m : ReadMounts()) {
    if (m.fs_type == fs_type) {
      return m.mount_point;
    }
  }
  return std::nullopt;
}

std::vector<std::string> EnsureKernelFilesystems() {
  struct Want {
    const char* type;
    const char* target;
  };
  static constexpr Want kWanted[] = {{"bpf", "/sys/fs/bpf"},
                                     {"tracefs", "/sys/kernel/tracing"},
                                     {"securityfs", "/sys/kernel/security"}};
  std::vector<std::string> mounted;
  for (const auto& w : kWanted) {
    if (FindMount(w.type)) {
      continue;
    }
    ::mkdir(w.target, 0755);  // usually exists already in sysfs; EEXIST is fine
    if (::mount(w.type, w.target, w.type, 0, nullptr) != 0) {
      throw std::runtime_error(std::string("mount -t ") + w.type + " " + w.target + ": " +
                               std::generic_category().message(errno));
    }
    mounted.emplace_back(w.target);
  }
  return mounted;
}

void ReplaceCgroup(const std::string& cgroup) {
  namespace fs = std::filesystem;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::recursive_directory_iterator(cgroup)) {
    if (e.is_directory()) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) {
    return a.string().size() > b.string().size();
  });
  dirs.emplace_back(cgroup);
  for (const auto& d : dirs) {
    if (::rmdir(d.c_str()) != 0) throw std::system_error(errno, std::generic_category(), d);
  }
  if (::mkdir(cgroup.c_str(), 0755) != 0) {
    throw std::system_error(errno, std::generic_category(), cgroup);
  }
}

ScopedMount::~ScopedMount() {
  if (mounted_) ::umount2(where_.c_str(), MNT_DETACH);
}

bool ScopedMount::Mount(const std::vector<std::string>& args, std::string* error) {
  if (mounted_) {
    if (error) *error = where_.string() + ": mounted already";
    return false;
  }
  std::vector<std::string> argv{"mount"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(where_.string());
  const CommandResult r = Run(argv);
  mounted_ = r.exit_code == 0;
  if (!mounted_ && error) *error = r.err;
  return mounted_;
}

}  // namespace sovguard::test
