// What the storage benchmarks share: a stand-in machine cgroup with one guest cgroup below it and
// a scratch directory (all removed on destruction), a child's move into the guest cgroup, and a
// one-dataset policy.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

#include "enforcer/storage/storage_datapath.h"
#include "enforcer/system/mounts.h"

namespace sovguard::bench {

namespace fs = std::filesystem;

// <cgroup2>/<name>-<pid>/machine/qemu-1-bench.libvirt-qemu and <tmp>/<name>-<pid>.
class StorageBenchScene {
 public:
  explicit StorageBenchScene(const std::string& name) {
    const auto root = enforcer::FindCgroup2Mount();
    if (!root) throw std::runtime_error("no cgroup2 mount");
    top_ = *root / fmt::format("{}-{}", name, ::getpid());
    machine_ = top_ / "machine";
    guest_ = machine_ / "qemu-1-bench.libvirt-qemu";
    dir_ = fs::temp_directory_path() / fmt::format("{}-{}", name, ::getpid());
    fs::create_directories(guest_);
    fs::create_directories(dir_);
  }
  ~StorageBenchScene() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    ::rmdir(guest_.c_str());
    ::rmdir(machine_.c_str());
    ::rmdir(top_.c_str());
  }
  StorageBenchScene(const StorageBenchScene&) = delete;
  StorageBenchScene& operator=(const StorageBenchScene&) = delete;

  const fs::path& machine() const { return machine_; }
  const fs::path& guest() const { return guest_; }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path top_, machine_, guest_, dir_;
};

// In a forked child: moves it into `cgroup` (cgroup.procs), or exits with 100.
inline void JoinCgroupOrExit(const fs::path& cgroup) {
  const int fd = ::open((cgroup / "cgroup.procs").c_str(), O_WRONLY);
  if (fd < 0 || ::write(fd, "0", 1) != 1) ::_exit(100);
  ::close(fd);
}

// One enforced dataset `id` (index 0); class 0 is the unknown country.
inline policy::CompiledStorage OneDatasetPolicy(const std::string& id) {
  policy::CompiledStorage s;
  policy::CompiledStorageDataset d;
  d.id = id;
  d.index = 0;
  d.mode = policy::Mode::kEnforce;
  s.datasets.push_back(d);
  s.classes.push_back({0, SG_COUNTRY_UNKNOWN, 0, 0});
  return s;
}

}  // namespace sovguard::bench
