#include "enforcer/bpf_feature/bpf_feature.h"

#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/hex.h"

namespace sovguard::bpf_feature {

namespace fs = std::filesystem;

Error::Error(const std::string& what, int err)
    : std::runtime_error(what + ": " + std::strerror(err < 0 ? -err : err) + " (errno " +
                         std::to_string(err < 0 ? -err : err) + ")"),
      err_(err < 0 ? -err : err) {}

namespace {
int SilentLibbpfPrint(enum libbpf_print_level, const char*, va_list) {
  return 0;
}
}  // namespace

QuietLibbpf::QuietLibbpf() : previous_(libbpf_set_print(SilentLibbpfPrint)) {}
QuietLibbpf::~QuietLibbpf() {
  libbpf_set_print(previous_);
}

void UpdateElem(int fd, const void* key, const void* value, std::string_view what) {
  if (bpf_map_update_elem(fd, key, value, BPF_ANY) != 0)
    throw Error("update " + std::string(what), errno);
}

void UpdateMany(int fd, const void* keys, std::size_t key_size, const void* values,
                std::size_t value_size, std::uint32_t count, std::string_view what) {
  if (const int err = enforcer::bpfmap::UpdateMany(fd, keys, key_size, values, value_size, count);
      err != 0)
    throw Error("update " + std::string(what), err);
}

void DeleteMany(int fd, const void* keys, std::size_t key_size, std::uint32_t count,
                std::string_view what) {
  if (const int err = enforcer::bpfmap::DeleteMany(fd, keys, key_size, count); err != 0)
    throw Error("delete from " + std::string(what), err);
}

void SetPinPaths(bpf_object* obj, const fs::path& dir, InternalMaps internal) {
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, obj) {
    if (internal == InternalMaps::kNotPinned && bpf_map__is_internal(map)) continue;
    std::string name = bpf_map__name(map);
    std::replace(name.begin(), name.end(), '.', '_');
    const fs::path path = dir / name;
    if (const int err = bpf_map__set_pin_path(map, path.c_str()); err)
      throw Error("pin path " + path.string(), err);
  }
}

void EnsurePinDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("create pin directory " + dir.string(), ec.value());
  struct statfs sfs {};
  constexpr long kBpfMagic = 0xcafe4a11;
  if (::statfs(dir.c_str(), &sfs) != 0 || sfs.f_type != kBpfMagic)
    throw Error("pin directory " + dir.string() + " is not on bpffs", EINVAL);
}

void PinReplacing(int fd, const fs::path& pin) {
  const fs::path next = pin.parent_path() / (std::string(kStagingPrefix) + pin.filename().string());
  ::unlink(next.c_str());
  if (bpf_obj_pin(fd, next.c_str()) != 0) throw Error("pin " + next.string(), errno);
  if (::rename(next.c_str(), pin.c_str()) != 0) {
    const int err = errno;
    ::unlink(next.c_str());
    throw Error("rename " + next.string() + " to " + pin.string(), err);
  }
}

void RefuseOtherAbi(std::uint32_t found, const PinnedAbi& abi, const std::string& pin_dir) {
  if (found == 0 || found == abi.version) return;
  throw Error("pinned " + std::string(abi.owner) + " in " + pin_dir + " has " +
                  std::string(abi.abi_name) + " " + std::to_string(found) + ", this daemon " +
                  std::to_string(abi.version) + ": refusing to adopt it",
              EPROTO);
}

void RcuBarrier::Wait(int outer_fd) {
  if (!inner_) {
    inner_ = base::UniqueFd(bpf_map_create(BPF_MAP_TYPE_ARRAY, name_, sizeof(std::uint32_t),
                                           sizeof(std::uint32_t), 1, nullptr));
    if (!inner_) throw Error(std::string("create barrier map ") + name_, errno);
  }
  const std::uint32_t zero = 0;
  const int fd = inner_.Get();
  if (bpf_map_update_elem(outer_fd, &zero, &fd, BPF_ANY) != 0)
    throw Error(std::string("store barrier map ") + name_, errno);
}

ProgramIdentity ProgramByFd(int fd) {
  bpf_prog_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
    throw Error("bpf_obj_get_info_by_fd (program)", errno);
  return {.id = info.id, .tag = base::ToHex(info.tag, sizeof(info.tag)), .name = info.name};
}

ProgramIdentity ProgramById(std::uint32_t id) {
  const base::UniqueFd fd(bpf_prog_get_fd_by_id(id));
  if (!fd) return {.id = id};
  return ProgramByFd(fd.Get());
}

std::uint32_t LinkId(int fd) {
  bpf_link_info info{};
  std::uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return 0;
  return info.id;
}

std::uint32_t MapId(int fd) {
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
    throw Error("bpf_obj_get_info_by_fd (map)", errno);
  return info.id;
}

}  // namespace sovguard::bpf_feature
