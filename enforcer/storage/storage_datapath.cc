#include "enforcer/storage/storage_datapath.h"

#include "enforcer/storage/volume_identity.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "base/errno_text.h"
#include "base/hex.h"
#include "base/sha256.h"
#include "base/unique_fd.h"
#include "bpf/storage/storage_guard.skel.h"
#include "enforcer/storage/fanotify_guard.h"
#include "enforcer/system/lsm.h"
#include "enforcer/system/mounts.h"
#include "enforcer/system/process.h"

namespace sovguard::storage {
namespace {

namespace fs = std::filesystem;
using base::ErrnoText;
using base::UniqueFd;

struct SkelDeleter {
  void operator()(storage_guard* s) const { storage_guard__destroy(s); }
};
using Skel = std::unique_ptr<storage_guard, SkelDeleter>;
struct RingDeleter {
  void operator()(ring_buffer* r) const { ring_buffer__free(r); }
};
using Ring = std::unique_ptr<ring_buffer, RingDeleter>;

std::string DevText(std::uint64_t kdev) {
  return fmt::format("{}:{}", kdev >> 20, kdev & 0xfffff);
}

int SilentLibbpfPrint(enum libbpf_print_level, const char*, va_list) {
  return 0;
}

// Silences libbpf while a load that may fail for a missing kernel feature runs: the reason is
// reported in StorageStatus, a verifier dump would only bury it.
class QuietLibbpf {
 public:
  QuietLibbpf() : previous_(libbpf_set_print(SilentLibbpfPrint)) {}
  ~QuietLibbpf() { libbpf_set_print(previous_); }
  QuietLibbpf(const QuietLibbpf&) = delete;
  QuietLibbpf& operator=(const QuietLibbpf&) = delete;

 private:
  libbpf_print_fn_t previous_;
};

// Which signature this kernel's io_uring tracepoints have (vmlinux BTF): 6.3 and later pass a
// CQE (io_uring_complete(ctx, req, cqe), io_uring_submit_req), earlier kernels the result as an
// argument (io_uring_complete(ctx, req, user_data, res, cflags, extra1, extra2),
// io_uring_submit_sqe). kNone: neither, and no io_uring program loads.
enum class IoUringTracepoints { kNone, kCqe, kArgs };

// Whether the kernel's BTF (vmlinux, or the loaded btrfs module's) describes struct btrfs_inode:
// the programs read a btrfs file's subvolume device through it (CO-RE, resolved at load). Where
// btrfs is a module that is not loaded, they cannot, and key btrfs files like any other.
bool KernelDescribesBtrfsInodes() {
  btf* vmlinux = btf__load_vmlinux_btf();
  if (!vmlinux) return false;
  bool found = btf__find_by_name_kind(vmlinux, "btrfs_inode", BTF_KIND_STRUCT) > 0;
  if (!found) {
    if (btf* mod = btf__load_module_btf("btrfs", vmlinux)) {
      found = btf__find_by_name_kind(mod, "btrfs_inode", BTF_KIND_STRUCT) > 0;
      btf__free(mod);
    }
  }
  btf__free(vmlinux);
  return found;
}

IoUringTracepoints IoUringTracepointsOfThisKernel() {
  static const IoUringTracepoints kind = [] {
    btf* vmlinux = btf__load_vmlinux_btf();
    if (!vmlinux) return IoUringTracepoints::kNone;
    const auto has = [&](const char* name) {
      return btf__find_by_name_kind(vmlinux, name, BTF_KIND_TYPEDEF) > 0;
    };
    const int id = btf__find_by_name_kind(vmlinux, "btf_trace_io_uring_complete", BTF_KIND_TYPEDEF);
    const btf_type* t = id > 0 ? btf__type_by_id(vmlinux, id) : nullptr;
    if (t) t = btf__type_by_id(vmlinux, t->type);
    if (t && btf_is_ptr(t)) t = btf__type_by_id(vmlinux, t->type);
    const int vlen = t && btf_is_func_proto(t) ? btf_vlen(t) : 0;  // __data first
    IoUringTracepoints k = IoUringTracepoints::kNone;
    if (vlen == 4 && has("btf_trace_io_uring_submit_req")) k = IoUringTracepoints::kCqe;
    if (vlen == 8 && has("btf_trace_io_uring_submit_sqe")) k = IoUringTracepoints::kArgs;
    btf__free(vmlinux);
    return k;
  }();
  return kind;
}

// Whether `p` is an io_uring program, and if so whether it is the one for this kernel.
std::optional<bool> IoUringProgramLoads(const bpf_program* p) {
  const std::string_view name = bpf_program__name(p);
  const auto kind = IoUringTracepointsOfThisKernel();
  if (name == "sg_io_uring_complete" || name == "sg_io_uring_submit")
    return kind == IoUringTracepoints::kCqe;
  if (name == "sg_io_uring_complete_args" || name == "sg_io_uring_submit_sqe")
    return kind == IoUringTracepoints::kArgs;
  return std::nullopt;
}

bool IsLsmProgram(const bpf_program* p) {
  return std::strncmp(bpf_program__section_name(p), "lsm/", 4) == 0;
}

void Update(int map_fd, const void* key, const void* value, const char* what) {
  if (bpf_map_update_elem(map_fd, key, value, BPF_ANY) != 0) {
    throw StorageError(fmt::format("update {}", what), errno);
  }
}

// A pool resolved on this host: where it is and which device ids it stands for.
struct ResolvedPool {
  policy::StoragePool pool;
  fs::path canonical;  // kPath: canonical directory
  dev_t st_dev = 0;    // kMount: file system of the mount point
  dev_t rdev = 0;      // kDevice: the block device
  std::string error;   // the pool does not exist here: nothing can live in it
};

ResolvedPool Resolve(const policy::StoragePool& pool) {
  ResolvedPool r{.pool = pool};
  std::error_code ec;
  r.canonical = fs::canonical(pool.location, ec);
  if (ec) {
    r.error = fmt::format("{}: {}", pool.location, ec.message());
    return r;
  }
  struct stat st {};
  if (::stat(r.canonical.c_str(), &st) != 0) {
    r.error = fmt::format("stat {}: {}", pool.location, ErrnoText(errno));
    return r;
  }
  r.st_dev = st.st_dev;
  if (pool.kind == policy::StoragePool::Kind::kDevice) {
    if (!S_ISBLK(st.st_mode)) r.error = pool.location + " is not a block device";
    r.rdev = st.st_rdev;
  }
  return r;
}

bool InPool(const ResolvedPool& p, const fs::path& canonical, const struct stat& st) {
  if (!p.error.empty()) return false;
  switch (p.pool.kind) {
    case policy::StoragePool::Kind::kPath: {
      const auto rel = canonical.lexically_relative(p.canonical);
      return !rel.empty() && *rel.begin() != "..";
    }
    case policy::StoragePool::Kind::kMount:
      return !S_ISBLK(st.st_mode) && st.st_dev == p.st_dev;
    case policy::StoragePool::Kind::kDevice:
      return S_ISBLK(st.st_mode) ? st.st_rdev == p.rdev : st.st_dev == p.rdev;
  }
  return false;
}

std::string PoolText(const policy::StoragePool& p) {
  switch (p.kind) {
    case policy::StoragePool::Kind::kPath:
      return "path " + p.location;
    case policy::StoragePool::Kind::kMount:
      return "mount " + p.location;
    case policy::StoragePool::Kind::kDevice:
      return "device " + p.location;
  }
  return p.location;
}

int PathDepth(const fs::path& root, const fs::path& dir) {
  int n = 0;
  for (const auto& part : dir.lexically_relative(root)) {
    if (part == "..") throw StorageError(dir.string() + " is not below " + root.string(), EINVAL);
    if (!part.empty() && part != ".") ++n;
  }
  return n;
}

// Sorted (key, value) pairs: endpoint tables are world-sized (175,000 IPv4 prefixes), where a
// std::map's nodes took four times the memory of the entries (8.4 MiB kept for the tamper check).
template <class K, class V>
class FlatMap {
 public:
  using value_type = std::pair<K, V>;
  void clear() { v_.clear(); }
  void reserve(std::size_t n) { v_.reserve(n); }
  void Add(const K& k, const V& v) { v_.emplace_back(k, v); }
  // Sorts by key after the Adds; of equal keys the last added wins.
  void Finish() {
    std::stable_sort(v_.begin(), v_.end(),
                     [](const value_type& a, const value_type& b) { return a.first < b.first; });
    std::size_t out = 0;
    for (std::size_t i = 0; i < v_.size(); ++i) {
      if (out > 0 && v_[out - 1].first == v_[i].first)
        v_[out - 1] = v_[i];
      else
        v_[out++] = v_[i];
    }
    v_.resize(out);
    v_.shrink_to_fit();
  }
  bool contains(const K& k) const {
    const auto it = std::lower_bound(
        v_.begin(), v_.end(), k, [](const value_type& e, const K& key) { return e.first < key; });
    return it != v_.end() && it->first == k;
  }
  auto begin() const { return v_.begin(); }
  auto end() const { return v_.end(); }
  std::size_t size() const { return v_.size(); }
  bool operator==(const FlatMap&) const = default;

 private:
  std::vector<value_type> v_;
};

// The policy tables as written (or read back): what VerifyAttachments compares.
struct Tables {
  sg_storage_config cfg{};
  std::vector<sg_class> classes;
  FlatMap<std::pair<std::uint32_t, std::uint32_t>, std::uint16_t> ep4;
  FlatMap<std::pair<std::uint32_t, std::array<std::uint8_t, 16>>, std::uint16_t> ep6;
  std::map<std::pair<std::uint64_t, std::uint64_t>, sg_volume> volumes;
};
enum : int { kTableCfg, kTableClasses, kTableEndpoints4, kTableEndpoints6, kTableVolumes };
constexpr int kTablesDigested = SG_STORAGE_TABLES;
constexpr const char* kTableNames[kTablesDigested] = {
    "sg_storage_cfg", "sg_storage_classes", "sg_endpoints4", "sg_endpoints6", "sg_volumes"};
using Digest = std::array<std::uint8_t, 32>;

bool SameBytes(const void* a, const void* b, std::size_t n) {
  return std::memcmp(a, b, n) == 0;
}

bool TableEqual(const Tables& a, const Tables& b, int which) {
  switch (which) {
    case kTableCfg:
      return SameBytes(&a.cfg, &b.cfg, sizeof a.cfg);
    case kTableClasses:
      // Entries past n_classes are never used (class 0 instead): compare the ones in use.
      for (std::size_t i = 0; i < std::max(a.classes.size(), b.classes.size()); ++i) {
        const sg_class none{};
        const sg_class& x = i < a.classes.size() ? a.classes[i] : none;
        const sg_class& y = i < b.classes.size() ? b.classes[i] : none;
        if (!SameBytes(&x, &y, sizeof x)) return false;
      }
      return true;
    case kTableEndpoints4:
      return a.ep4 == b.ep4;
    case kTableEndpoints6:
      return a.ep6 == b.ep6;
    case kTableVolumes:
      return a.volumes.size() == b.volumes.size() &&
             std::equal(a.volumes.begin(), a.volumes.end(), b.volumes.begin(),
                        [](const auto& x, const auto& y) {
                          return x.first == y.first &&
                                 SameBytes(&x.second, &y.second, sizeof x.second);
                        });
  }
  return true;
}

Digest TableDigest(const Tables& t, int which) {
  base::Sha256Hasher hash;
  auto add = [&](const void* p, std::size_t n) { hash.Update(p, n); };
  switch (which) {
    case kTableCfg:
      add(&t.cfg, sizeof t.cfg);
      break;
    case kTableClasses: {
      // Trailing all-zero classes are what an unwritten ARRAY entry holds: not part of the digest.
      std::size_t n = t.classes.size();
      const sg_class none{};
      while (n > 0 && SameBytes(&t.classes[n - 1], &none, sizeof none)) --n;
      add(t.classes.data(), n * sizeof(sg_class));
      break;
    }
    case kTableEndpoints4:
      for (const auto& [k, v] : t.ep4) {
        add(&k.first, 4);
        add(&k.second, 4);
        add(&v, 2);
      }
      break;
    case kTableEndpoints6:
      for (const auto& [k, v] : t.ep6) {
        add(&k.first, 4);
        add(k.second.data(), 16);
        add(&v, 2);
      }
      break;
    case kTableVolumes:
      for (const auto& [k, v] : t.volumes) {
        add(&k.first, 8);
        add(&k.second, 8);
        add(&v, sizeof v);
      }
      break;
  }
  return hash.Final();
}

template <std::size_t N>
void CopyName(char (&dst)[N], const std::string& src) {
  std::memset(dst, 0, N);
  std::memcpy(dst, src.data(), std::min(src.size(), N - 1));
}

// Calls fn(key, value) for every entry of a hash/trie map (entries deleted meanwhile skipped).
template <typename K, typename V, typename Fn>
void ForEach(int fd, Fn&& fn) {
  K key{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    V value{};
    if (bpf_map_lookup_elem(fd, &next, &value) == 0) fn(next, value);
    key = next;
    prev = &key;
  }
}

struct ProgramIdentity {
  std::uint32_t id = 0;
  std::string tag;
};

// The built-in object, or `object` (same source, same maps: a stand-in upgrade in tests).
Skel OpenSkeleton(std::span<const std::uint8_t> object) {
  if (object.empty()) {
    Skel s(storage_guard__open());
    if (!s) throw StorageError("open storage_guard object", errno);
    return s;
  }
  auto* raw = static_cast<storage_guard*>(std::calloc(1, sizeof(storage_guard)));
  if (!raw) throw std::bad_alloc();
  Skel s(raw);
  if (int err = storage_guard__create_skeleton(raw); err)
    throw StorageError("storage_guard skeleton", err);
  raw->skeleton->data = const_cast<std::uint8_t*>(object.data());
  raw->skeleton->data_sz = object.size();
  if (int err = bpf_object__open_skeleton(raw->skeleton, nullptr); err)
    throw StorageError("open storage_guard object (program_object)", err);
  return s;
}

}  // namespace

StorageError::StorageError(const std::string& what, int err)
    : std::runtime_error(what + ": " + ErrnoText(err)), err_(err < 0 ? -err : err) {}

std::string ToString(Guarantee g) {
  switch (g) {
    case Guarantee::kPrevents:
      return "prevents";
    case Guarantee::kDetectsAndKills:
      return "detects-and-kills";
    case Guarantee::kCounts:
      return "counts";
    case Guarantee::kNone:
      return "none";
  }
  return "none";
}

std::string ToString(Verdict v) {
  switch (v) {
    case Verdict::kPrevented:
      return "prevented";
    case Verdict::kKilled:
      return "killed";
    case Verdict::kAudited:
      return "audited";
  }
  return "audited";
}

const PathStatus* StorageStatus::Find(std::string_view path) const {
  for (const auto& p : paths)
    if (p.path == path) return &p;
  return nullptr;
}

namespace {

// machine.slice is missing until systemd first needs it (no guest since boot). The programs must
// be attached before the first guest's scope appears, so it is made to exist now, by systemd:
//  - mkdir ourselves: systemd would adopt the directory when it starts the slice, but as a cgroup
//    it does not know it may remove it (stopping machine.slice rmdirs it) and a new one, without
//    our programs, would appear with the next guest;
//  - attaching one level higher (the root) would run the connect/device programs for every
//    process of the host and still needs machine.slice's id to recognise guests;
//  - waiting for it to appear (cgroup_mkdir) leaves the first guest uncovered unless its start is
//    held until the attach, which the `start begin` hook cannot do (the scope is made later).
// `systemctl start machine.slice` (a static unit every systemd ships; slices stay active until
// stopped explicitly) makes the directory systemd's own from the start. When it fails the
// constructor throws: the storage path is reported as not enforced rather than silently covering
// nothing. VerifyAttachments reports a machine cgroup that was removed and re-created.
void EnsureSystemdSlice(const fs::path& slice) {
  std::error_code ec;
  if (fs::is_directory(slice, ec)) return;
  const std::string unit = slice.filename().string();
  enforcer::CommandResult r;
  try {
    r = enforcer::RunCommand({"systemctl", "start", "--", unit});
  } catch (const std::exception& e) {
    throw StorageError(
        fmt::format("{} is missing and systemctl cannot run: {}", slice.string(), e.what()),
        ENOENT);
  }
  if (r.exit_code != 0 || !fs::is_directory(slice, ec)) {
    throw StorageError(fmt::format("{} is missing and `systemctl start {}` did not create it "
                                   "(exit {}): {}",
                                   slice.string(), unit, r.exit_code, r.output),
                       ENOENT);
  }
}

}  // namespace

std::string LibvirtMachineName(int id, std::string_view name) {
  // virDomainDriverGenerateMachineName + virDomainMachineNameAppendValid (libvirt 9): hostname
  // characters only, leading dots skipped, at most 64 characters, no trailing '-'.
  std::string out = fmt::format("qemu-{}-", id);
  bool skip = true;
  for (const char c : name) {
    if (out.size() >= 64) break;
    if (c == '.' && skip) continue;
    skip = false;
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '-') continue;
    out.push_back(c);
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

std::string LibvirtCgroupName(int id, std::string_view name) {
  // virCgroupNewDomainPartition: "<machine name>.libvirt-<driver>" (libvirt docs/cgroups.rst).
  return LibvirtMachineName(id, name) + ".libvirt-qemu";
}

std::string SystemdEscape(std::string_view name) {
  // systemd unit_name_escape (src/basic/unit-name.c), which machined applies to the machine name;
  // libvirt's virSystemdEscapeName (src/util/virsystemd.c) does the same.
  std::string out;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c == '/') {
      out.push_back('-');
    } else if ((c == '.' && i == 0) || c == '-' || c == '\\' ||
               (std::isalnum(c) == 0 && c != ':' && c != '_' && c != '.')) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

std::string LibvirtScopeName(int id, std::string_view name) {
  // systemd-machined machine_start_scope: "machine-" + unit_name_escape(machine name) + ".scope";
  // the scope's cgroup directory has the unit's name (libvirt docs/cgroups.rst).
  return "machine-" + SystemdEscape(LibvirtMachineName(id, name)) + ".scope";
}

std::string GuestCgroupName(CgroupLayout layout, int id, std::string_view name) {
  return layout == CgroupLayout::kSystemd ? LibvirtScopeName(id, name)
                                          : LibvirtCgroupName(id, name);
}

std::string ToString(CgroupLayout layout) {
  return layout == CgroupLayout::kSystemd ? "systemd" : "cgroupfs";
}

LayoutDetection DetectCgroupLayout(const fs::path& sysroot) {
  // libvirt registers a guest with systemd-machined when virSystemdHasMachined() says yes:
  // org.freedesktop.machine1 is activatable and org.freedesktop.systemd1 is on the bus (systemd
  // is PID 1); else it makes the cgroupfs layout itself (virCgroupNewMachine ->
  // virCgroupNewMachineManual). The same two facts, read from files (no D-Bus dependency):
  std::error_code ec;
  if (!enforcer::SystemdIsInit(sysroot)) {
    return {CgroupLayout::kCgroupfs,
            "systemd is not PID 1 (no /run/systemd/system): libvirt "
            "makes <cgroup2>/machine/<guest>.libvirt-qemu"};
  }
  if (fs::is_directory(sysroot / "run/systemd/machines", ec)) {
    return {CgroupLayout::kSystemd,
            "systemd is PID 1 and systemd-machined runs (/run/systemd/machines): libvirt "
            "registers guests as machine.slice/machine-<name>.scope"};
  }
  for (const char* dir : {"usr/share/dbus-1/system-services",
                          "usr/local/share/dbus-1/system-services", "lib/dbus-1/system-services"}) {
    const fs::path service = sysroot / dir / "org.freedesktop.machine1.service";
    if (fs::exists(service, ec)) {
      return {CgroupLayout::kSystemd,
              fmt::format("systemd is PID 1 and systemd-machined is D-Bus-activatable (/{}): "
                          "libvirt registers guests as machine.slice/machine-<name>.scope",
                          (fs::path(dir) / "org.freedesktop.machine1.service").string())};
    }
  }
  return {CgroupLayout::kCgroupfs,
          "systemd is PID 1 but systemd-machined is not installed (no "
          "org.freedesktop.machine1.service; Debian: package systemd-container): libvirt makes "
          "<cgroup2>/machine/<guest>.libvirt-qemu"};
}

fs::path DefaultMachineCgroup(CgroupLayout layout, const fs::path& cgroup2_root) {
  return cgroup2_root / (layout == CgroupLayout::kSystemd ? "machine.slice" : "machine");
}

std::uint64_t StorageDatapath::CgroupId(const fs::path& dir) {
  // A cgroup2 file handle is the 64-bit cgroup id (kernfs node id).
  alignas(file_handle) unsigned char buf[sizeof(file_handle) + sizeof(std::uint64_t)] = {};
  auto* fh = reinterpret_cast<file_handle*>(buf);
  fh->handle_bytes = sizeof(std::uint64_t);
  int mount_id = 0;
  if (::name_to_handle_at(AT_FDCWD, dir.c_str(), fh, &mount_id, 0) != 0) {
    throw StorageError("name_to_handle_at " + dir.string(), errno);
  }
  std::uint64_t id = 0;
  std::memcpy(&id, buf + sizeof(file_handle), sizeof id);
  return id;
}

namespace {

// Adopt() found pinned state of another machine cgroup (old_id); what() says which.
class ForeignMachineCgroup : public StorageError {
 public:
  ForeignMachineCgroup(const std::string& what, std::uint64_t id, std::uint32_t level)
      : StorageError(what, EPROTO), old_id(id), old_guest_level(level) {}
  std::uint64_t old_id;
  std::uint32_t old_guest_level;
};

// Whether a cgroup with `id` exists `depth` levels below the cgroup2 mount `root` (the machine
// cgroup's depth: guest level - 1). Ids are never reused, so none there means it was removed.
// Compares directory handles (name_to_handle_at needs no capability, unlike open_by_handle_at);
// throws when a directory cannot be read (unknown is never "gone").
bool CgroupExists(const fs::path& root, std::uint64_t id, std::uint32_t depth) {
  if (depth == 0) return StorageDatapath::CgroupId(root) == id;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (!it->is_directory(type_ec) || it->is_symlink(type_ec)) continue;
    if (static_cast<std::uint32_t>(it.depth()) + 1 < depth) continue;
    it.disable_recursion_pending();
    if (StorageDatapath::CgroupId(it->path()) == id) return true;
  }
  if (ec) throw StorageError("list cgroups below " + root.string(), ec.value());
  return false;
}

}  // namespace

struct StorageDatapath::Impl {
  struct Guest {
    std::uint32_t id = 0;
    std::string cgroup_name;      // empty when registered by id
    std::uint64_t cgroup_id = 0;  // registered by id
    GuestStorage storage;
  };
  struct Volume {
    std::string path;
    std::uint32_t dataset = 0;
    bool overlay = false;  // a file on overlayfs (OnOverlay when it was protected or adopted)
  };
  // One program's attachment. The link is ours (and pinned at `pin` with a pin_dir).
  struct Attached {
    bpf_program* prog = nullptr;
    std::string hook;
    bool cgroup = false;
    bpf_attach_type type{};
    UniqueFd link;
    fs::path pin;
    std::uint32_t link_id = 0;
  };

  StorageOptions options;
  Skel skel;
  std::vector<Attached> attached;
  bool detached = false;
  Ring ring;
  std::unique_ptr<FanotifyGuard> fanotify;  // the fanotify rung of storage-open, when selected
  UniqueFd machine_fd;
  StorageStatus status;
  sg_storage_config cfg{};
  std::optional<policy::CompiledStorage> policy;
  std::vector<std::string> adopted_dataset_ids;  // names from the pinned state until ApplyPolicy
  std::vector<std::vector<ResolvedPool>> pools;  // per dataset index
  std::map<std::string, Guest> guests;           // by domain name
  std::map<std::uint32_t, std::string> guest_names;
  std::uint32_t next_guest_id = 1;
  std::map<std::pair<std::uint64_t, std::uint64_t>, Volume> volumes;
  Tables expected;           // what this object wrote (or adopted) in the policy tables
  std::uint32_t active = 0;  // generation of cfg/classes/endpoints in force
  UniqueFd barrier_inner;    // stored into sg_storage_barrier to wait for a grace period
  std::array<Digest, SG_STORAGE_TABLES> digests{};
  std::vector<StorageFinding> adoption_findings;
  std::vector<ProtectedVolume> released_volumes;  // of a released stale state
  std::uint64_t removed_suppressed = 0;           // suppressed events of guests already removed
  const std::function<void(const StorageEvent&)>* callback = nullptr;
  int delivered = 0;
  std::vector<UniqueFd> retired;  // predecessor links to release once ours run
  // Threads releasing retired links (each close waits for a grace period; in parallel they
  // overlap). Last member: joined first on destruction.
  std::vector<std::jthread> releasers;

  void ReleaseRetired() {
    for (auto& fd : retired) releasers.emplace_back([f = std::move(fd)]() mutable { f.Reset(); });
    retired.clear();
  }

  int Fd(bpf_map* m) const { return bpf_map__fd(m); }
  bool pinning() const { return !options.pin_dir.empty(); }

  // Writes the configuration into the active generation in place: only for fields no verdict
  // reads together with others (construction, events, mechanism flags). Policy: Publish().
  void WriteConfig() {
    Update(Fd(skel->maps.sg_storage_cfg), &active, &cfg, "sg_storage_cfg");
    expected.cfg = cfg;
    digests[kTableCfg] = TableDigest(expected, kTableCfg);
  }

  // Returns once no program still runs with what it read before (an update of a map-in-map
  // waits for an RCU grace period; every storage program runs under RCU).
  void Barrier() {
    if (!barrier_inner) {
      barrier_inner =
          UniqueFd(bpf_map_create(BPF_MAP_TYPE_ARRAY, "sg_st_barrier", sizeof(std::uint32_t),
                                  sizeof(std::uint32_t), 1, nullptr));
      if (!barrier_inner) throw StorageError("create barrier map", errno);
    }
    const std::uint32_t zero = 0;
    const int fd = barrier_inner.Get();
    Update(Fd(skel->maps.sg_storage_barrier), &zero, &fd, "sg_storage_barrier");
  }

  // Makes `expected` (cfg, classes, endpoints) the policy in force atomically: fills the inactive
  // generation completely, flips sg_storage_active (one word), then waits until no program uses
  // the old generation any more, so the next Publish may rewrite it.
  void Publish() {
    const std::uint32_t next = (active + 1) % SG_STORAGE_GENERATIONS;
    WriteGeneration(next);
    const std::uint32_t zero = 0;
    Update(Fd(skel->maps.sg_storage_active), &zero, &next, "sg_storage_active");
    active = next;
    Barrier();
  }

  void WriteGeneration(std::uint32_t gen) {
    for (int t : {kTableClasses, kTableEndpoints4, kTableEndpoints6, kTableCfg}) WriteTable(t, gen);
  }

  void WriteState() {
    sg_storage_state st{};
    st.abi_version = SG_STORAGE_ABI_VERSION;
    st.next_guest_id = next_guest_id;
    st.policy_applied = policy.has_value() || !adopted_dataset_ids.empty();
    for (std::size_t i = 0; i < digests.size(); ++i)
      std::memcpy(st.table_digest[i], digests[i].data(), 32);
    for (std::uint32_t i = 0; i < SG_MAX_DATASETS; ++i) {
      const std::string id = DatasetId(i);
      std::memcpy(st.dataset_ids[i], id.data(),
                  std::min<std::size_t>(id.size(), SG_STORAGE_DATASET_ID_LEN - 1));
    }
    const std::uint32_t zero = 0;
    Update(Fd(skel->maps.sg_storage_state), &zero, &st, "sg_storage_state");
  }

  std::string DatasetId(std::uint32_t index) const {
    if (policy) {
      for (const auto& d : policy->datasets)
        if (d.index == index) return d.id;
      return {};
    }
    return index < adopted_dataset_ids.size() ? adopted_dataset_ids[index] : std::string();
  }

  // The tables of generation `gen` as the kernel holds them.
  Tables ReadTables(std::uint32_t gen, std::size_t n_classes, bool endpoints = true) const {
    Tables t;
    bpf_map_lookup_elem(Fd(skel->maps.sg_storage_cfg), &gen, &t.cfg);
    n_classes = std::max<std::size_t>(n_classes, t.cfg.n_classes);
    n_classes = std::min<std::size_t>(n_classes, SG_MAX_CLASSES);
    t.classes.resize(n_classes);
    for (std::uint32_t i = 0; i < n_classes; ++i) {
      const std::uint32_t slot = gen * SG_MAX_CLASSES + i;
      bpf_map_lookup_elem(Fd(skel->maps.sg_storage_classes), &slot, &t.classes[i]);
    }
    if (endpoints) {
      ForEach<sg_storage_lpm4_key, std::uint16_t>(
          Fd(skel->maps.sg_endpoints4), [&](const sg_storage_lpm4_key& k, const std::uint16_t& v) {
            if (k.gen == gen) t.ep4.Add({k.prefixlen - 32, k.addr}, v);
          });
      t.ep4.Finish();
      ForEach<sg_storage_lpm6_key, std::uint16_t>(
          Fd(skel->maps.sg_endpoints6), [&](const sg_storage_lpm6_key& k, const std::uint16_t& v) {
            if (k.gen != gen) return;
            std::array<std::uint8_t, 16> a{};
            std::memcpy(a.data(), k.addr, 16);
            t.ep6.Add({k.prefixlen - 32, a}, v);
          });
      t.ep6.Finish();
    }
    ForEach<sg_volume_key, sg_volume>(Fd(skel->maps.sg_volumes),
                                      [&](const sg_volume_key& k, const sg_volume& v) {
                                        t.volumes[{k.dev, k.ino}] = v;
                                      });
    return t;
  }

  // Writes table `which` of `expected` into generation `gen`, deleting entries it does not hold
  // (volumes have no generation).
  void WriteTable(int which, std::uint32_t gen) {
    switch (which) {
      case kTableCfg:
        Update(Fd(skel->maps.sg_storage_cfg), &gen, &expected.cfg, "sg_storage_cfg");
        break;
      case kTableClasses:
        for (std::uint32_t i = 0; i < expected.classes.size(); ++i) {
          const std::uint32_t slot = gen * SG_MAX_CLASSES + i;
          Update(Fd(skel->maps.sg_storage_classes), &slot, &expected.classes[i],
                 "sg_storage_classes");
        }
        break;
      case kTableEndpoints4: {
        const int fd = Fd(skel->maps.sg_endpoints4);
        for (const auto& [k, v] : expected.ep4) {
          const sg_storage_lpm4_key key{.prefixlen = 32 + k.first, .gen = gen, .addr = k.second};
          Update(fd, &key, &v, "sg_endpoints4");
        }
        std::vector<sg_storage_lpm4_key> stale;
        ForEach<sg_storage_lpm4_key, std::uint16_t>(
            fd, [&](const sg_storage_lpm4_key& k, const std::uint16_t&) {
              if (k.gen == gen && !expected.ep4.contains({k.prefixlen - 32, k.addr}))
                stale.push_back(k);
            });
        for (const auto& k : stale) bpf_map_delete_elem(fd, &k);
        break;
      }
      case kTableEndpoints6: {
        const int fd = Fd(skel->maps.sg_endpoints6);
        for (const auto& [k, v] : expected.ep6) {
          sg_storage_lpm6_key key{.prefixlen = 32 + k.first, .gen = gen, .addr = {}};
          std::memcpy(key.addr, k.second.data(), 16);
          Update(fd, &key, &v, "sg_endpoints6");
        }
        std::vector<sg_storage_lpm6_key> stale;
        ForEach<sg_storage_lpm6_key, std::uint16_t>(
            fd, [&](const sg_storage_lpm6_key& k, const std::uint16_t&) {
              std::array<std::uint8_t, 16> a{};
              std::memcpy(a.data(), k.addr, 16);
              if (k.gen == gen && !expected.ep6.contains({k.prefixlen - 32, a})) stale.push_back(k);
            });
        for (const auto& k : stale) bpf_map_delete_elem(fd, &k);
        break;
      }
      case kTableVolumes: {
        const int fd = Fd(skel->maps.sg_volumes);
        for (const auto& [k, v] : expected.volumes) {
          const sg_volume_key key{.dev = k.first, .ino = k.second};
          Update(fd, &key, &v, "sg_volumes");
        }
        std::vector<sg_volume_key> stale;
        ForEach<sg_volume_key, sg_volume>(fd, [&](const sg_volume_key& k, const sg_volume&) {
          if (!expected.volumes.contains({k.dev, k.ino})) stale.push_back(k);
        });
        for (const auto& k : stale) bpf_map_delete_elem(fd, &k);
        break;
      }
      default:
        break;
    }
  }

  // ---- links ----

  static std::uint32_t LinkIdOf(int fd) {
    bpf_link_info info{};
    std::uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return 0;
    return info.id;
  }

  // Pins `fd` at `pin` in one step (pin beside, rename over: a crash leaves the old or the new
  // link pinned, never none).
  void PinAt(int fd, const fs::path& pin) const {
    const fs::path next = pin.parent_path() / ("next_" + pin.filename().string());
    ::unlink(next.c_str());
    if (bpf_obj_pin(fd, next.c_str()) != 0) throw StorageError("pin " + next.string(), errno);
    if (::rename(next.c_str(), pin.c_str()) != 0) {
      const int err = errno;
      ::unlink(next.c_str());
      throw StorageError(fmt::format("rename {} to {}", next.string(), pin.string()), err);
    }
  }

  // A new link of our program at its hook, as a plain link fd: libbpf's perf-event links would
  // disable the tracepoint event when destroyed, which would stop a pinned link from enforcing.
  UniqueFd NewLink(const Attached& a) const {
    const int prog_fd = bpf_program__fd(a.prog);
    if (a.cgroup) return UniqueFd(bpf_link_create(prog_fd, machine_fd.Get(), a.type, nullptr));
    const std::string_view sec = bpf_program__section_name(a.prog);
    if (sec.starts_with("tp/")) {
      // tp/<category>/<event>: a perf tracepoint event; the link keeps the event alive.
      const fs::path id_file = fs::path("/sys/kernel/tracing/events") / sec.substr(3) / "id";
      std::ifstream in(id_file);
      std::uint64_t id = 0;
      if (!(in >> id)) {
        errno = ENOENT;
        return UniqueFd();
      }
      perf_event_attr attr{};
      attr.type = PERF_TYPE_TRACEPOINT;
      attr.size = sizeof attr;
      attr.config = id;
      const UniqueFd event(static_cast<int>(
          ::syscall(__NR_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)));
      if (!event) return UniqueFd();
      return UniqueFd(bpf_link_create(prog_fd, event.Get(), BPF_PERF_EVENT, nullptr));
    }
    // tp_btf/, lsm/: the attach point is in the program (BTF id).
    return UniqueFd(bpf_raw_tracepoint_open(nullptr, prog_fd));
  }

  // Attaches `prog`. With a pinned link of the predecessor for the same program: cgroup links are
  // switched to the new program in place (bpf_link_update: no moment without a program);
  // otherwise the new link is attached and pinned first and the old one released after, so both
  // run for a moment (both enforce). Returns false (and why) when the program cannot be attached;
  // a predecessor's pinned link then stays.
  bool Attach(bpf_program* prog, bool cgroup, std::string& error) {
    Attached a;
    a.prog = prog;
    a.cgroup = cgroup;
    a.type = bpf_program__expected_attach_type(prog);
    a.hook = cgroup ? fmt::format("{} {}", bpf_program__section_name(prog),
                                  options.machine_cgroup.string())
                    : bpf_program__section_name(prog);
    UniqueFd old;
    if (pinning()) {
      a.pin = options.pin_dir / (std::string("link_") + bpf_program__name(prog));
      if (::access(a.pin.c_str(), F_OK) == 0) old = UniqueFd(bpf_obj_get(a.pin.c_str()));
    }
    if (old && cgroup && bpf_link_update(old.Get(), bpf_program__fd(prog), nullptr) == 0) {
      a.link = std::move(old);
    } else {
      UniqueFd fresh = NewLink(a);
      if (!fresh) {
        error =
            fmt::format("attach {}{}: {}", bpf_program__name(prog),
                        cgroup ? " to " + options.machine_cgroup.string() : "", ErrnoText(errno));
        return false;
      }
      if (pinning()) PinAt(fresh.Get(), a.pin);
      a.link = std::move(fresh);
      // The predecessor's link goes now that ours runs (and is pinned). Releasing a perf link
      // waits for an RCU grace period (about 40 ms here): in the background, all at once.
      if (old) retired.push_back(std::move(old));
    }
    a.link_id = LinkIdOf(a.link.Get());
    attached.push_back(std::move(a));
    return true;
  }

  // Attaches the strongest rung of the storage-open ladder that works here and records it (and
  // why each stronger one is not used) in `open`. Throws StorageError when none works.
  OpenRung AttachOpenRung(PathStatus& open, bool lsm_loaded, const fs::path& cgroup2_root) {
    for (const LadderRung& rung : StorageOpenLadder()) {
      if (rung.rung == OpenRung::kBpfLsm && !lsm_loaded) continue;  // why: recorded at load
      if (rung.rung == OpenRung::kBpfLsm) {
        // Attached LSM programs are never called when "bpf" is not an active LSM.
        if (const auto inactive = enforcer::BpfLsmInactiveReason()) {
          open.unavailable.push_back(fmt::format("{}: {}", rung.mechanism, *inactive));
          continue;
        }
      }
      if (rung.rung == OpenRung::kFanotify && options.force_tracepoint_fallback) {
        open.unavailable.push_back(std::string(rung.mechanism) +
                                   ": not tried (tracepoint fallback forced)");
        continue;
      }
      const std::size_t before = attached.size();
      std::string error;
      bool ok = true;
      for (const char* name : rung.programs) {
        bpf_program* prog = bpf_object__find_program_by_name(skel->obj, name);
        if (!prog) error = std::string("no program ") + name;
        if (!prog || !Attach(prog, false, error)) {
          ok = false;
          break;
        }
      }
      if (ok && rung.rung == OpenRung::kFanotify) {
        try {
          fanotify = std::make_unique<FanotifyGuard>(
              FanotifyTables{.active = Fd(skel->maps.sg_storage_active),
                             .cfg = Fd(skel->maps.sg_storage_cfg),
                             .guests = Fd(skel->maps.sg_storage_guests),
                             .volumes = Fd(skel->maps.sg_volumes)},
              cgroup2_root, options.machine_cgroup);
          // Volumes adopted from a predecessor. One whose path is gone or names another inode
          // now cannot be marked: the tracepoints underneath still guard it, and status says so.
          for (const auto& [key, v] : volumes) {
            try {
              MarkVolume(v.path, sg_volume_key{key.first, key.second});
            } catch (const StorageRefused& e) {
              open.unavailable.push_back(std::string(rung.mechanism) + ": " + e.what() +
                                         " (guarded by the tracepoints only)");
            }
          }
        } catch (const std::exception& e) {
          fanotify.reset();
          error = e.what();
          ok = false;
        }
      }
      if (ok) {
        open.mechanism = rung.mechanism;
        open.guarantee = rung.guarantee;
        return rung.rung;
      }
      DropAttached(before);
      open.unavailable.push_back(fmt::format("{}: {} ({})", rung.mechanism, error, rung.needs));
    }
    throw StorageError("storage-open: no mechanism of the ladder attaches", ENOTSUP);
  }

  // Drops the attachments made after `size` (a mechanism that could not be completed).
  void DropAttached(std::size_t size) {
    while (attached.size() > size) {
      auto& a = attached.back();
      if (!a.pin.empty()) ::unlink(a.pin.c_str());
      attached.pop_back();
    }
  }

  // Pinned links of programs this object does not attach (another mechanism was chosen before):
  // released once ours run.
  void ReleaseStaleLinks() {
    if (!pinning()) return;
    std::set<std::string> ours;
    for (const auto& a : attached) ours.insert(a.pin.filename().string());
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(options.pin_dir, ec)) {
      const std::string name = e.path().filename().string();
      if ((name.starts_with("link_") && !ours.contains(name)) || name.starts_with("next_"))
        ::unlink(e.path().c_str());
    }
  }

  ProgramIdentity Identity(const bpf_program* prog) const {
    bpf_prog_info info{};
    std::uint32_t len = sizeof info;
    ProgramIdentity id;
    if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0) {
      id.id = info.id;
      id.tag = base::ToHex(info.tag, sizeof info.tag);
    }
    return id;
  }

  // ---- guests and volumes ----

  // (dev, ino) key of a volume and the stat of its source.
  std::pair<sg_volume_key, struct stat> KeyOf(const fs::path& source) const {
    struct stat st {};
    if (::stat(source.c_str(), &st) != 0) {
      throw StorageRefused(fmt::format("volume {}: {}", source.string(), ErrnoText(errno)));
    }
    // The identity the programs compute from file->f_inode (volume_identity.h).
    VolumeId id;
    try {
      id = KernelVolumeId(source, status.btrfs_subvolumes);
    } catch (const std::exception& e) {
      throw StorageRefused(e.what());
    }
    return {sg_volume_key{.dev = id.dev, .ino = id.ino}, st};
  }

  const policy::CompiledStorageDataset& Dataset(const std::string& id) const {
    if (!policy) throw StorageRefused("no storage policy applied: dataset " + id + " is unknown");
    for (const auto& d : policy->datasets)
      if (d.id == id) return d;
    throw StorageRefused("dataset " + id + " is not in the storage policy");
  }

  // Checks residency and protects the volume; returns its key.
  void Protect(const fs::path& source, const std::string& dataset_id, bool readonly,
               std::string_view who) {
    const auto& d = Dataset(dataset_id);
    auto [key, st] = KeyOf(source);
    std::error_code ec;
    const fs::path canonical = fs::canonical(source, ec);
    if (ec) throw StorageRefused(fmt::format("volume {}: {}", source.string(), ec.message()));
    const auto& resolved = pools.at(d.index);
    if (!d.pools.empty() &&
        std::none_of(resolved.begin(), resolved.end(),
                     [&](const ResolvedPool& p) { return InPool(p, canonical, st); })) {
      std::string allowed;
      for (const auto& p : resolved) {
        allowed += (allowed.empty() ? "" : ", ") + PoolText(p.pool);
        if (!p.error.empty()) allowed += " (" + p.error + ")";
      }
      throw StorageRefused(
          fmt::format("{}: volume {} of dataset {} is not on approved storage ({})", who,
                      canonical.string(), d.id, allowed));
    }
    const sg_volume v{.dataset = d.index,
                      .flags = (readonly || d.read_only) ? SG_VOLUME_READ_ONLY : 0u};
    // The same bytes under other identities (partitions, dm/loop devices, overlayfs layer
    // files) are protected alike: checked first, so a conflict changes nothing.
    std::vector<VolumeAlias> aliases;
    try {
      aliases = VolumeAliases(source, "/sys", status.btrfs_subvolumes);
    } catch (const std::exception& e) {
      throw StorageRefused(
          fmt::format("{}: volume {}: aliases: {}", who, source.string(), e.what()));
    }
    const auto check = [&](const sg_volume_key& k, const std::string& name) {
      const auto existing = volumes.find({k.dev, k.ino});
      if (existing != volumes.end() && existing->second.dataset != d.index) {
        throw StorageRefused(fmt::format("{}: volume {} is already a volume of dataset #{}, not {}",
                                         who, name, existing->second.dataset, d.id));
      }
    };
    check(key, canonical.string());
    for (const auto& a : aliases)
      check(sg_volume_key{.dev = a.id.dev, .ino = a.id.ino}, a.name + " (" + a.why + ")");
    InsertVolume(key, canonical.string(), v, /*mark=*/true);
    for (const auto& a : aliases)
      InsertVolume(sg_volume_key{.dev = a.id.dev, .ino = a.id.ino}, a.name, v, /*mark=*/false);
    digests[kTableVolumes] = TableDigest(expected, kTableVolumes);
    WriteState();
  }

  // `mark`: also a fanotify mark (the volume itself, never an alias: marking an overlayfs layer
  // file deadlocks the answering thread, whose event fd for the overlay file opens the layer
  // file; aliases are left to the tracepoint programs underneath).
  void InsertVolume(const sg_volume_key& key, const std::string& path, const sg_volume& v,
                    bool mark) {
    if (mark && fanotify) MarkVolume(path, key);  // before the tables: a failure changes nothing
    sg_storage_volume_meta meta{.dataset = v.dataset, .flags = v.flags, .path = {}};
    CopyName(meta.path, path);
    Update(Fd(skel->maps.sg_storage_volume_meta), &key, &meta, "sg_storage_volume_meta");
    Update(Fd(skel->maps.sg_volumes), &key, &v, "sg_volumes");
    volumes[{key.dev, key.ino}] =
        Volume{path, v.dataset, key.dev != 0 && key.dev != kCharDevice && OnOverlay(path)};
    expected.volumes[{key.dev, key.ino}] = v;
  }

  // Adds the fanotify rung's denials to the guests' `denied` counters (sg_io_state).
  void AddDenied(const std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint64_t>& denied) {
    const int fd = Fd(skel->maps.sg_io_state);
    for (const auto& [key, n] : denied) {
      const sg_io_key k{.guest_id = key.first, .dataset = key.second};
      sg_io_state st{};
      if (bpf_map_lookup_elem(fd, &k, &st) != 0 && errno != ENOENT)
        throw StorageError("read sg_io_state", errno);
      st.denied += n;
      Update(fd, &k, &st, "sg_io_state");
    }
  }

  // The fanotify mark of a protected volume; a volume that cannot be marked is refused.
  void MarkVolume(const fs::path& path, const sg_volume_key& key) {
    try {
      fanotify->Protect(path, key);
    } catch (const std::system_error& e) {
      throw StorageRefused(fmt::format("volume {}: fanotify mark: {}", path.string(), e.what()));
    }
  }

  sg_storage_guest Admit(const GuestStorage& g) {
    for (const auto& disk : g.disks) {
      if (disk.dataset.empty() || disk.source.empty()) continue;
      const auto& d = Dataset(disk.dataset);
      if (!(g.datasets & (std::uint64_t{1} << d.index))) {
        throw StorageRefused(
            fmt::format("guest {}: disk {} is labelled {} but the guest does not "
                        "hold that dataset",
                        g.name, disk.source.string(), d.id));
      }
      Protect(disk.source, disk.dataset, disk.readonly, "guest " + g.name);
    }
    auto [it, inserted] = guests.try_emplace(g.name);
    if (inserted) {
      it->second.id = next_guest_id++;
      guest_names[it->second.id] = g.name;
    }
    it->second.storage = g;
    return sg_storage_guest{.datasets = g.datasets, .guest_id = it->second.id, .flags = 0};
  }

  // The hand-over record of a guest (after its entries are written).
  void WriteGuestMeta(const Guest& g) {
    sg_storage_guest_meta meta{};
    meta.datasets = g.storage.datasets;
    meta.cgroup_id = g.cgroup_id;
    CopyName(meta.name, g.storage.name);
    CopyName(meta.cgroup_name, g.cgroup_name);
    Update(Fd(skel->maps.sg_storage_guest_meta), &g.id, &meta, "sg_storage_guest_meta");
    WriteState();
  }

  void DeleteGuestEntries(std::uint32_t guest_id) {
    const int fd = Fd(skel->maps.sg_storage_guests);
    std::vector<std::uint64_t> doomed;
    ForEach<std::uint64_t, sg_storage_guest>(
        fd, [&](const std::uint64_t& k, const sg_storage_guest& g) {
          if (g.guest_id == guest_id) doomed.push_back(k);
        });
    for (auto id : doomed) bpf_map_delete_elem(fd, &id);
    const int io = Fd(skel->maps.sg_io_state);
    std::vector<sg_io_key> io_doomed;
    ForEach<sg_io_key, sg_io_state>(io, [&](const sg_io_key& k, const sg_io_state&) {
      if (k.guest_id == guest_id) io_doomed.push_back(k);
    });
    for (auto& k : io_doomed) bpf_map_delete_elem(io, &k);
    sg_storage_ratelimit rl{};
    if (bpf_map_lookup_elem(Fd(skel->maps.sg_storage_ratelimit), &guest_id, &rl) == 0) {
      removed_suppressed += rl.suppressed;
      bpf_map_delete_elem(Fd(skel->maps.sg_storage_ratelimit), &guest_id);
    }
    bpf_map_delete_elem(Fd(skel->maps.sg_storage_guest_meta), &guest_id);
  }

  std::string DatasetName(std::uint32_t index) const {
    if (policy && index < policy->datasets.size()) return policy->datasets[index].id;
    if (!policy && index < adopted_dataset_ids.size() && !adopted_dataset_ids[index].empty())
      return adopted_dataset_ids[index];
    return fmt::format("#{}", index);
  }

  // Takes over what a predecessor left in the pinned maps (called before anything is attached).
  void Adopt(const sg_storage_state& st) {
    const std::uint32_t zero = 0;
    if (bpf_map_lookup_elem(Fd(skel->maps.sg_storage_active), &zero, &active) != 0)
      throw StorageError("read pinned sg_storage_active", errno);
    active %= SG_STORAGE_GENERATIONS;
    sg_storage_config kcfg{};
    if (bpf_map_lookup_elem(Fd(skel->maps.sg_storage_cfg), &active, &kcfg) != 0)
      throw StorageError("read pinned sg_storage_cfg", errno);
    if (kcfg.machine_cgroup_id != status.machine_cgroup_id ||
        kcfg.guest_level != status.guest_level) {
      throw ForeignMachineCgroup(
          fmt::format("pinned storage state in {} is for machine cgroup id {} (level {}), not {} "
                      "({}): refusing to adopt it",
                      options.pin_dir.string(), kcfg.machine_cgroup_id, kcfg.guest_level,
                      status.machine_cgroup_id, options.machine_cgroup.string()),
          kcfg.machine_cgroup_id, kcfg.guest_level);
    }
    cfg = kcfg;
    next_guest_id = std::max<std::uint32_t>(st.next_guest_id, 1);
    for (std::uint32_t i = 0; i < SG_MAX_DATASETS; ++i) {
      adopted_dataset_ids.emplace_back(st.dataset_ids[i],
                                       strnlen(st.dataset_ids[i], SG_STORAGE_DATASET_ID_LEN));
    }
    ForEach<std::uint32_t, sg_storage_guest_meta>(
        Fd(skel->maps.sg_storage_guest_meta),
        [&](const std::uint32_t& id, const sg_storage_guest_meta& meta) {
          Guest g;
          g.id = id;
          g.cgroup_id = meta.cgroup_id;
          g.cgroup_name.assign(meta.cgroup_name,
                               strnlen(meta.cgroup_name, sizeof meta.cgroup_name));
          g.storage.name.assign(meta.name, strnlen(meta.name, sizeof meta.name));
          g.storage.datasets = meta.datasets;
          guest_names[id] = g.storage.name;
          next_guest_id = std::max(next_guest_id, id + 1);
          guests[g.storage.name] = std::move(g);
        });
    ForEach<sg_volume_key, sg_storage_volume_meta>(
        Fd(skel->maps.sg_storage_volume_meta),
        [&](const sg_volume_key& k, const sg_storage_volume_meta& meta) {
          const std::string path(meta.path, strnlen(meta.path, sizeof meta.path));
          volumes[{k.dev, k.ino}] =
              Volume{path, meta.dataset, k.dev != 0 && k.dev != kCharDevice && OnOverlay(path)};
        });
    // What the predecessor wrote is now what this object expects; its digests say whether the
    // tables were changed while no daemon held them.
    expected = ReadTables(active, 0);
    for (int t = 0; t < kTablesDigested; ++t) {
      digests[t] = TableDigest(expected, t);
      if (st.policy_applied && std::memcmp(digests[t].data(), st.table_digest[t], 32) != 0) {
        adoption_findings.push_back(
            {"adopted-state-altered", kTableNames[t],
             fmt::format("{} changed while no daemon held it (sha256 {}..., written {}...): "
                         "apply the policy again",
                         kTableNames[t], base::ToHex(digests[t].data(), 8),
                         base::ToHex(st.table_digest[t], 8))});
      }
    }
    status.adopted = true;
  }

  // The volumes recorded in the loaded (pinned, stale) maps, named by the state's dataset ids.
  std::vector<ProtectedVolume> PinnedVolumes(const sg_storage_state& st) const {
    std::vector<ProtectedVolume> out;
    ForEach<sg_volume_key, sg_storage_volume_meta>(
        Fd(skel->maps.sg_storage_volume_meta),
        [&](const sg_volume_key&, const sg_storage_volume_meta& meta) {
          if (meta.dataset >= SG_MAX_DATASETS) return;
          std::string id(st.dataset_ids[meta.dataset],
                         strnlen(st.dataset_ids[meta.dataset], SG_STORAGE_DATASET_ID_LEN));
          if (id.empty()) return;
          out.push_back({.path = std::string(meta.path, strnlen(meta.path, sizeof meta.path)),
                         .dataset = std::move(id),
                         .readonly = (meta.flags & SG_VOLUME_READ_ONLY) != 0});
        });
    return out;
  }

  // Removes every pin in pin_dir (maps, links): with no holder left the kernel frees them.
  void ReleasePins() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(options.pin_dir, ec)) {
      if (::unlink(e.path().c_str()) != 0) throw StorageError("unpin " + e.path().string(), errno);
    }
    if (ec) throw StorageError("list " + options.pin_dir.string(), ec.value());
  }

  static int OnEvent(void* ctx, void* data, size_t size) {
    auto* self = static_cast<Impl*>(ctx);
    if (size < sizeof(sg_storage_event) || !self->callback) return 0;
    sg_storage_event e{};
    std::memcpy(&e, data, sizeof e);
    StorageEvent out;
    switch (e.kind) {
      case SG_EV_OPEN_DENIED:
        out.kind = "open-denied";
        break;
      case SG_EV_OPEN_KILLED:
        out.kind = "open-killed";
        break;
      case SG_EV_DEVICE_DENIED:
        out.kind = "device-denied";
        break;
      case SG_EV_CONNECT_DENIED:
        out.kind = "connect-denied";
        break;
      case SG_EV_READ_ONLY:
        out.kind = "read-only";
        break;
      case SG_EV_READ_QUOTA:
        out.kind = "read-quota";
        break;
      case SG_EV_WRITE_QUOTA:
        out.kind = "write-quota";
        break;
      case SG_EV_COMPAT_SYSCALL:
        out.kind = "compat-syscall";
        break;
      case SG_EV_UNCOUNTED_IO:
        out.kind = "uncounted-io";
        break;
      default:
        out.kind = fmt::format("kind-{}", e.kind);
    }
    out.verdict = e.verdict == SG_VERDICT_DROP             ? Verdict::kPrevented
                  : e.verdict == SG_STORAGE_VERDICT_KILLED ? Verdict::kKilled
                                                           : Verdict::kAudited;
    const auto g = self->guest_names.find(e.guest_id);
    out.guest = e.guest_id != 0 && g != self->guest_names.end()
                    ? g->second
                    : fmt::format("cgroup:{}", e.cgroup_id);
    out.dataset = self->DatasetName(e.dataset);
    out.dev = e.dev;
    out.ino = e.ino;
    out.cgroup_id = e.cgroup_id;
    out.pid = e.pid;
    out.timestamp_ns = e.timestamp_ns;
    if (e.kind == SG_EV_CONNECT_DENIED) {
      char buf[INET6_ADDRSTRLEN] = {};
      inet_ntop(e.family == 10 ? AF_INET6 : AF_INET, e.addr, buf, sizeof buf);
      out.address =
          e.family == 10 ? fmt::format("[{}]:{}", buf, e.port) : fmt::format("{}:{}", buf, e.port);
    } else if (const auto v = self->volumes.find({e.dev, e.ino}); v != self->volumes.end()) {
      out.path = v->second.path;
    } else if (e.dev == 0) {
      out.path = "blk " + DevText(e.ino);
    } else if (e.dev == SG_VOLUME_CHAR_DEV) {
      out.path = "chr " + DevText(e.ino);
    } else {
      out.path = fmt::format("dev={} ino={}", DevText(e.dev), e.ino);
    }
    (*self->callback)(out);  // set for the duration of PollEvents
    ++self->delivered;
    return 0;
  }
};

// The open and I/O paths beyond open{,at,at2} and p{read,write}* (bpf/storage/README.md, "Every
// way to open and to move bytes"): attached with either mechanism (they count; without BPF LSM
// they also judge and kill). A program that does not attach is named in the path's `unavailable`
// and left out of its mechanism.
template <class Impl>  // StorageDatapath::Impl (private)
static void AttachOtherIoPaths(Impl& m, bool lsm, PathStatus& quota, PathStatus& io) {
  std::string error;
  const auto attach = [&](std::initializer_list<bpf_program*> progs, PathStatus& status) {
    for (bpf_program* p : progs) {
      if (!m.Attach(p, false, error)) {
        status.unavailable.push_back(error);
        return false;
      }
    }
    return true;
  };
  auto& progs = m.skel->progs;
  std::string ios;
  if (attach(
          {progs.sg_enter_read, progs.sg_exit_read, progs.sg_enter_write, progs.sg_exit_write,
           progs.sg_enter_readv, progs.sg_exit_readv, progs.sg_enter_writev, progs.sg_exit_writev},
          io))
    ios += ",{read,write}{,v}";
  if (attach({progs.sg_enter_sendfile, progs.sg_exit_sendfile}, io)) ios += ",sendfile64";
  if (attach({progs.sg_enter_splice, progs.sg_exit_splice}, io)) ios += ",splice";
  if (attach({progs.sg_enter_copy_file_range, progs.sg_exit_copy_file_range}, io))
    ios += ",copy_file_range";
  if (attach({progs.sg_enter_io_submit}, io)) ios += ",io_submit";
  // io_uring's completions count I/O and (without BPF LSM) judge its opens and I/O.
  std::string uring, guards;  // guards: judged, never counted
  switch (IoUringTracepointsOfThisKernel()) {
    case IoUringTracepoints::kCqe:
      if (attach({progs.sg_io_uring_complete}, io)) {
        uring = "+tp_btf:io_uring_complete";
        if (!lsm && attach({progs.sg_io_uring_submit}, quota)) uring += ",submit_req";
      }
      break;
    case IoUringTracepoints::kArgs:
      if (attach({progs.sg_io_uring_complete_args}, io)) {
        uring = "+tp_btf:io_uring_complete";
        if (!lsm && attach({progs.sg_io_uring_submit_sqe}, quota)) uring += ",submit_sqe";
      }
      break;
    case IoUringTracepoints::kNone:
      io.unavailable.push_back(
          "tp_btf:io_uring_complete: this kernel's io_uring tracepoints have neither known "
          "signature: io_uring opens and I/O are not seen");
      break;
  }
  if (!lsm) {
    if (attach({progs.sg_enter_mmap}, quota)) guards += ",mmap";
    if (attach({progs.sg_enter_ftruncate, progs.sg_enter_fallocate}, quota))
      guards += ",ftruncate,fallocate";
  }
  if (io.guarantee == Guarantee::kCounts) {
    io.mechanism = "tracepoint:sys_{enter,exit}_p{read,write}{64,v,v2}" + ios + uring;
    if (!lsm && quota.guarantee == Guarantee::kDetectsAndKills)
      quota.mechanism =
          "tracepoint:sys_enter_p{read,write}{64,v,v2}" + ios + guards + uring + "+SIGKILL";
  }
}

StorageDatapath::StorageDatapath(StorageOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.options = std::move(options);
  enforcer::EnsureTracefs();
  const auto root = enforcer::FindCgroup2Mount();
  if (!root) throw StorageError("no cgroup2 mount in /proc/self/mountinfo", ENOENT);
  if (m.options.machine_cgroup.empty()) {
    LayoutDetection detected = DetectCgroupLayout("/");
    if (m.options.layout && *m.options.layout != detected.layout) {
      detected = {*m.options.layout,
                  "given by the options (detection said: " + detected.reason + ")"};
    }
    m.status.layout = detected.layout;
    m.status.layout_reason = std::move(detected.reason);
    m.options.machine_cgroup = DefaultMachineCgroup(m.status.layout, *root);
    if (m.status.layout == CgroupLayout::kSystemd) {
      EnsureSystemdSlice(m.options.machine_cgroup);
    } else {
      fs::create_directories(m.options.machine_cgroup);
    }
  } else {
    const bool slice = m.options.machine_cgroup.filename().string().ends_with(".slice");
    m.status.layout =
        m.options.layout.value_or(slice ? CgroupLayout::kSystemd : CgroupLayout::kCgroupfs);
    m.status.layout_reason =
        m.options.layout
            ? "given by the options"
            : fmt::format("machine cgroup {} given: its name {} in .slice",
                          m.options.machine_cgroup.string(), slice ? "ends" : "does not end");
    fs::create_directories(m.options.machine_cgroup);
  }
  m.machine_fd =
      UniqueFd(::open(m.options.machine_cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!m.machine_fd) throw StorageError("open " + m.options.machine_cgroup.string(), errno);
  m.status.machine_cgroup = m.options.machine_cgroup;
  m.status.machine_cgroup_id = CgroupId(m.options.machine_cgroup);
  m.status.guest_level = static_cast<std::uint32_t>(PathDepth(*root, m.options.machine_cgroup)) + 1;
  if (m.pinning()) {
    std::error_code ec;
    fs::create_directories(m.options.pin_dir, ec);
    if (ec) throw StorageError("create pin directory " + m.options.pin_dir.string(), ec.value());
    if (!enforcer::IsMounted(m.options.pin_dir, "bpf")) {
      // A sub-directory of a bpffs mount is fine too: it is bpffs when its parent mount is.
      struct statfs sfs {};
      constexpr long kBpfMagic = 0xcafe4a11;
      if (::statfs(m.options.pin_dir.c_str(), &sfs) != 0 || sfs.f_type != kBpfMagic) {
        throw StorageError("pin directory " + m.options.pin_dir.string() + " is not on bpffs",
                           EINVAL);
      }
    }
  }

  // Load: with the LSM programs first (unless told not to); a kernel without BPF LSM may refuse
  // the program type, then the object is loaded again without them.
  PathStatus open{.path = "storage-open"}, quota{.path = "storage-io-quota"},
      io{.path = "storage-io-accounting", .mechanism = "none"},
      dev{.path = "storage-block-devices"}, net{.path = "storage-network", .mechanism = "none"};
  const bool try_lsm = !m.options.force_tracepoint_fallback;
  if (!try_lsm) {
    open.unavailable.push_back("bpf-lsm:file_open: not tried (tracepoint fallback forced)");
  }
  const PathStatus open_before_load = open;
  bool with_lsm = try_lsm;
  sg_storage_state state{};
  // A second round only after a stale state was released (see StorageOptions::on_stale_state).
  for (bool released = false;;) {
    for (;;) {
      const bool btrfs_subvolumes = KernelDescribesBtrfsInodes();
      m.skel = OpenSkeleton(m.options.program_object);
      bpf_program* prog = nullptr;
      bpf_object__for_each_program(prog, m.skel->obj) {
        if (IsLsmProgram(prog)) bpf_program__set_autoload(prog, with_lsm);
        if (const auto loads = IoUringProgramLoads(prog)) bpf_program__set_autoload(prog, *loads);
      }
      if (m.pinning()) {
        bpf_map* map = nullptr;
        bpf_object__for_each_map(map, m.skel->obj) {
          // .rodata (constants of this very object) belongs to the object, not to the state.
          if (bpf_map__is_internal(map)) continue;
          const fs::path path = m.options.pin_dir / bpf_map__name(map);
          if (int err = bpf_map__set_pin_path(map, path.c_str()); err)
            throw StorageError("pin path " + path.string(), err);
        }
      }
      int err = 0;
      if (with_lsm) {
        QuietLibbpf quiet;
        err = storage_guard__load(m.skel.get());
      } else {
        err = storage_guard__load(m.skel.get());
      }
      if (err == 0) {
        // The btrfs module came in during the load: which rule the programs took is unknown.
        if (KernelDescribesBtrfsInodes() != btrfs_subvolumes) continue;
        m.status.btrfs_subvolumes = btrfs_subvolumes;
        break;
      }
      if (!with_lsm) {
        throw StorageError(m.pinning() ? "load storage_guard (verifier, or pinned maps in " +
                                             m.options.pin_dir.string() + " of another layout)"
                                       : std::string("load storage_guard"),
                           err);
      }
      open.unavailable.push_back("bpf-lsm:file_open: load: " + ErrnoText(err));
      with_lsm = false;
    }

    const std::uint32_t zero = 0;
    if (bpf_map_lookup_elem(m.Fd(m.skel->maps.sg_storage_state), &zero, &state) != 0)
      throw StorageError("read sg_storage_state", errno);
    if (state.abi_version != 0 && state.abi_version != SG_STORAGE_ABI_VERSION) {
      throw StorageError(
          fmt::format("pinned storage state in {} has storage ABI version {}, this "
                      "daemon {}: refusing to adopt it",
                      m.options.pin_dir.string(), state.abi_version, SG_STORAGE_ABI_VERSION),
          EPROTO);
    }
    if (state.abi_version == 0) break;
    try {
      m.Adopt(state);  // keeps the predecessor's configuration until our programs run
      break;
    } catch (const ForeignMachineCgroup& e) {
      if (released || !m.options.on_stale_state) throw;
      if (e.old_guest_level == 0 || CgroupExists(*root, e.old_id, e.old_guest_level - 1)) {
        throw StorageError(
            std::string(e.what()) + fmt::format(" (cgroup id {} still exists and may hold guests: "
                                                "stop them, then sovguardd "
                                                "--release-enforcement --force)",
                                                e.old_id),
            EPROTO);
      }
      const std::string detail = fmt::format(
          "{}: cgroup id {} no longer exists, so nothing runs under that state; released, starting "
          "over on {}",
          e.what(), e.old_id, m.options.machine_cgroup.string());
      m.released_volumes = m.PinnedVolumes(state);
      m.options.on_stale_state(detail);  // measured before anything is released
      m.skel.reset();
      m.ReleasePins();
      m.active = 0;
      state = {};
      open = open_before_load;
      with_lsm = try_lsm;
      released = true;
    }
  }
  if (state.abi_version == 0) {
    m.cfg.machine_cgroup_id = m.status.machine_cgroup_id;
    m.cfg.guest_level = m.status.guest_level;
  }
  m.cfg.events_per_sec = m.options.events_per_sec;
  m.cfg.event_burst = m.options.event_burst;
  if (state.abi_version == 0) {
    m.WriteConfig();
    for (int t = 0; t < kTablesDigested; ++t) m.digests[t] = TableDigest(m.expected, t);
    m.WriteState();
  }

  std::string error;
  const bool lsm = m.AttachOpenRung(open, with_lsm, *root) == OpenRung::kBpfLsm;
  if (lsm) {
    quota.mechanism = "bpf-lsm:file_permission";
    quota.guarantee = Guarantee::kPrevents;
  } else {
    quota.mechanism = "tracepoint:sys_enter_p{read,write}{64,v,v2}+SIGKILL";
    quota.guarantee = Guarantee::kDetectsAndKills;
    // Refusing the I/O at file_permission is this path's strongest mechanism: without it the
    // path is downgraded, for the reason the open path's LSM attempt gave.
    std::string why = "the BPF LSM is not in use";
    for (const auto& u : open.unavailable)
      if (u.starts_with("bpf-lsm:") && u.find(": ") != std::string::npos)
        why = u.substr(u.find(": ") + 2);
    quota.unavailable.insert(quota.unavailable.begin(), "bpf-lsm:file_permission: " + why);
  }
  {
    bool ok = true;
    for (bpf_program* p : {m.skel->progs.sg_enter_pread64, m.skel->progs.sg_exit_pread64,
                           m.skel->progs.sg_enter_pwrite64, m.skel->progs.sg_exit_pwrite64,
                           m.skel->progs.sg_enter_preadv, m.skel->progs.sg_exit_preadv,
                           m.skel->progs.sg_enter_pwritev, m.skel->progs.sg_exit_pwritev,
                           m.skel->progs.sg_enter_preadv2, m.skel->progs.sg_exit_preadv2,
                           m.skel->progs.sg_enter_pwritev2, m.skel->progs.sg_exit_pwritev2}) {
      if (!m.Attach(p, false, error)) {
        io.unavailable.push_back(error);
        ok = false;
      }
    }
    if (ok) {
      io.mechanism = "tracepoint:sys_{enter,exit}_p{read,write}{64,v,v2}";
      io.guarantee = Guarantee::kCounts;
    }
    if (!ok && !lsm) {
      quota.mechanism = "none";
      quota.guarantee = Guarantee::kNone;
    }
  }
  AttachOtherIoPaths(m, lsm, quota, io);
  if (m.Attach(m.skel->progs.sg_cgroup_mkdir, false, error) &&
      m.Attach(m.skel->progs.sg_cgroup_rmdir, false, error)) {
    m.status.guest_discovery = "tp_btf:cgroup_mkdir";
  } else {
    m.status.guest_discovery = "registration-by-id-only (" + error + ")";
  }
  // cgroup programs: once, on the machine cgroup, as links (BPF_F_ALLOW_MULTI semantics): the
  // programs libvirt attaches to each guest cgroup run as well, and all must allow.
  if (!m.Attach(m.skel->progs.sg_cgroup_dev, true, error)) throw StorageError(error, errno);
  dev.mechanism = "cgroup/dev";
  dev.guarantee = Guarantee::kPrevents;
  if (m.options.network) {
    if (!m.Attach(m.skel->progs.sg_connect4, true, error) ||
        !m.Attach(m.skel->progs.sg_connect6, true, error)) {
      throw StorageError(error, errno);
    }
    net.mechanism = "cgroup/connect4+connect6";
    net.guarantee = Guarantee::kPrevents;
  } else {
    net.unavailable.push_back("cgroup/connect4+connect6: disabled by options");
  }
  m.status.paths = {open, quota, io, dev, net};
  // Our programs run now: the configuration says which mechanism guards opens and I/O, and the
  // predecessor's links of programs we do not attach go.
  if (lsm)
    m.cfg.flags |= SG_STORAGE_CFG_LSM;
  else
    m.cfg.flags &= ~SG_STORAGE_CFG_LSM;
  m.WriteConfig();
  m.WriteState();
  m.ReleaseStaleLinks();
  m.ReleaseRetired();

  m.ring.reset(ring_buffer__new(m.Fd(m.skel->maps.sg_storage_events), &Impl::OnEvent, &m, nullptr));
  if (!m.ring) throw StorageError("ring_buffer__new sg_storage_events", errno);
}

const std::vector<StorageDatapath::ProtectedVolume>& StorageDatapath::ReleasedStaleVolumes() const {
  return impl_->released_volumes;
}

StorageDatapath::~StorageDatapath() = default;  // pinned links stay in the kernel (see Detach)

const StorageStatus& StorageDatapath::Status() {
  Impl& m = *impl_;
  m.status.volumes = m.volumes.size();
  m.status.pending = 0;
  m.status.guests = 0;
  for (const auto& [name, g] : m.guests) {
    (void)name;
    if (!g.cgroup_name.empty()) ++m.status.pending;
  }
  ForEach<std::uint64_t, sg_storage_guest>(
      m.Fd(m.skel->maps.sg_storage_guests),
      [&](const std::uint64_t&, const sg_storage_guest&) { ++m.status.guests; });
  m.status.events_suppressed = m.removed_suppressed;
  if (m.fanotify) {
    const FanotifyCounters c = m.fanotify->Counters();
    m.status.fanotify_allowed = c.allowed;
    m.status.fanotify_denied = c.denied;
    m.status.fanotify_failed = c.failed;
    m.status.events_suppressed += c.events_dropped;
  }
  ForEach<std::uint32_t, sg_storage_ratelimit>(
      m.Fd(m.skel->maps.sg_storage_ratelimit),
      [&](const std::uint32_t&, const sg_storage_ratelimit& rl) {
        m.status.events_suppressed += rl.suppressed;
      });
  return m.status;
}

void StorageDatapath::ApplyPolicy(const policy::CompiledStorage& storage) {
  Impl& m = *impl_;
  if (storage.datasets.size() > SG_MAX_DATASETS) {
    throw StorageError(
        fmt::format("{} datasets (at most {})", storage.datasets.size(), SG_MAX_DATASETS), E2BIG);
  }
  if (storage.classes.size() > SG_MAX_CLASSES) {
    throw StorageError(
        fmt::format("{} classes (at most {})", storage.classes.size(), SG_MAX_CLASSES), E2BIG);
  }
  for (const auto& d : storage.datasets) {
    if (d.index >= SG_MAX_DATASETS || d.index >= storage.datasets.size()) {
      throw StorageError(fmt::format("dataset {} has index {}", d.id, d.index), EINVAL);
    }
  }
  // The whole policy goes into the inactive generation, then one flip puts it in force: no
  // program ever sees classes of one policy with address tables or modes of the other.
  const Tables previous = m.expected;
  const sg_storage_config previous_cfg = m.cfg;
  m.expected.classes = storage.classes;
  m.expected.ep4.clear();
  m.expected.ep4.reserve(storage.ipv4.size());
  for (const auto& p : storage.ipv4) m.expected.ep4.Add({p.len, htonl(p.addr)}, p.class_id);
  m.expected.ep4.Finish();
  m.expected.ep6.clear();
  m.expected.ep6.reserve(storage.ipv6.size());
  for (const auto& p : storage.ipv6) m.expected.ep6.Add({p.len, p.addr}, p.class_id);
  m.expected.ep6.Finish();
  m.cfg.enforce_mask = 0;
  std::memset(m.cfg.ds, 0, sizeof m.cfg.ds);
  std::vector<std::vector<ResolvedPool>> pools(storage.datasets.size());
  for (const auto& d : storage.datasets) {
    if (d.mode == policy::Mode::kEnforce) m.cfg.enforce_mask |= std::uint64_t{1} << d.index;
    auto& c = m.cfg.ds[d.index];
    if (d.read) {
      c.read_quota_bytes = d.read->bytes;
      c.read_window_ns = d.read->window_seconds * 1'000'000'000ULL;
    }
    if (d.write) {
      c.write_quota_bytes = d.write->bytes;
      c.write_window_ns = d.write->window_seconds * 1'000'000'000ULL;
    }
    for (const auto& p : d.pools) pools[d.index].push_back(Resolve(p));
  }
  m.cfg.n_classes = static_cast<std::uint32_t>(storage.classes.size());
  m.expected.cfg = m.cfg;
  try {
    m.Publish();
  } catch (...) {
    m.expected = previous;  // the active generation was not touched
    m.cfg = previous_cfg;
    throw;
  }
  m.pools = std::move(pools);
  m.policy = storage;
  // Only the datasets are looked up later; the endpoint prefixes live on in expected.ep4/ep6.
  decltype(m.policy->ipv4)().swap(m.policy->ipv4);
  decltype(m.policy->ipv6)().swap(m.policy->ipv6);
  for (int t : {kTableCfg, kTableClasses, kTableEndpoints4, kTableEndpoints6})
    m.digests[t] = TableDigest(m.expected, t);
  // The tables now hold this policy: what a predecessor left behind no longer matters.
  std::erase_if(m.adoption_findings,
                [](const StorageFinding& f) { return f.object != "sg_volumes"; });
  m.WriteState();
}

std::string StorageDatapath::GuestCgroupName(int id, std::string_view name) const {
  return storage::GuestCgroupName(impl_->status.layout, id, name);
}

void StorageDatapath::ExpectGuest(const std::string& cgroup_name, const GuestStorage& guest) {
  Impl& m = *impl_;
  // cgroup directory names are at most NAME_MAX bytes, never "." or "..".
  if (cgroup_name.empty() || cgroup_name.size() > NAME_MAX || cgroup_name == "." ||
      cgroup_name == ".." || cgroup_name.find('/') != std::string::npos ||
      cgroup_name.find('\0') != std::string::npos) {
    throw StorageError(
        fmt::format("guest {}: cgroup name \"{}\" must be 1-{} bytes without / or NUL", guest.name,
                    cgroup_name, NAME_MAX),
        EINVAL);
  }
  // What cgroup_mkdir reads of the new directory's name: bpf_probe_read_kernel_str into the
  // SG_STORAGE_NAME_LEN key copies at most 63 bytes and ends them with NUL, so a longer name is
  // matched by its first 63 bytes (see ExpectGuest in the header for why that is one guest).
  const std::string key_name = cgroup_name.substr(0, SG_STORAGE_NAME_LEN - 1);
  const sg_storage_guest entry = m.Admit(guest);
  // The prefix holds the running id, which libvirt gives one starting guest at a time: another
  // guest announced under the same key is stale (its start failed, its release was missed) and
  // loses the announcement, which is overwritten below.
  for (auto& [other_name, other] : m.guests) {
    if (other_name != guest.name && other.cgroup_name == key_name) {
      other.cgroup_name.clear();
      m.WriteGuestMeta(other);
    }
  }
  auto& g = m.guests[guest.name];
  g.cgroup_name = key_name;
  m.WriteGuestMeta(g);
  sg_storage_pending_key key{};
  std::memcpy(key.name, key_name.data(), key_name.size());
  Update(m.Fd(m.skel->maps.sg_storage_pending), &key, &entry, "sg_storage_pending");
  // The pending entry is in place before this check, so a cgroup created meanwhile is caught by
  // cgroup_mkdir; one that already exists is registered here.
  const fs::path dir = m.options.machine_cgroup / cgroup_name;
  if (fs::is_directory(dir)) {
    const std::uint64_t id = CgroupId(dir);
    Update(m.Fd(m.skel->maps.sg_storage_guests), &id, &entry, "sg_storage_guests");
  }
}

void StorageDatapath::RegisterGuestCgroup(std::uint64_t cgroup_id, const GuestStorage& guest) {
  Impl& m = *impl_;
  const sg_storage_guest entry = m.Admit(guest);
  auto& g = m.guests[guest.name];
  g.cgroup_id = cgroup_id;
  m.WriteGuestMeta(g);
  Update(m.Fd(m.skel->maps.sg_storage_guests), &cgroup_id, &entry, "sg_storage_guests");
}

void StorageDatapath::RemoveGuest(const std::string& name) {
  Impl& m = *impl_;
  const auto it = m.guests.find(name);
  if (it == m.guests.end()) return;
  if (!it->second.cgroup_name.empty()) {
    sg_storage_pending_key key{};
    std::memcpy(key.name, it->second.cgroup_name.data(), it->second.cgroup_name.size());
    bpf_map_delete_elem(m.Fd(m.skel->maps.sg_storage_pending), &key);
  }
  m.DeleteGuestEntries(it->second.id);
  // The name stays known for events still in the ring buffer (a guest killed for its disk is
  // released by libvirt before the daemon drains the event); ids are never reused.
  constexpr std::size_t kRememberedNames = 4 * SG_MAX_GUESTS;
  while (m.guest_names.size() > kRememberedNames) m.guest_names.erase(m.guest_names.begin());
  m.guests.erase(it);
}

void StorageDatapath::ProtectVolume(const fs::path& source, const std::string& dataset,
                                    bool readonly) {
  impl_->Protect(source, dataset, readonly, "volume");
}

std::vector<std::string> StorageDatapath::RefreshAliases(bool overlay_only) {
  Impl& m = *impl_;
  std::vector<std::string> found;
  // Every protected identity with a path (volumes and their aliases: the same bytes) is asked
  // again; an alias without a node ("blk M:m") or a character device has none to stat.
  std::vector<std::pair<std::pair<std::uint64_t, std::uint64_t>, Impl::Volume>> known;
  for (const auto& e : m.volumes)
    if (!overlay_only || e.second.overlay) known.push_back(e);
  if (known.empty()) return found;
  // Loop devices over a file: one scan for all volumes (an overlay file's new upper-layer file
  // has none yet: a loop device made over it later raises a uevent, and a whole refresh).
  const auto loops =
      overlay_only ? std::vector<LoopDevice>{} : LoopDevices("/sys", m.status.btrfs_subvolumes);
  bool changed = false;
  for (const auto& [key, vol] : known) {
    if (!vol.path.starts_with("/") || key.first == kCharDevice) continue;
    std::vector<VolumeAlias> aliases;
    try {
      aliases = VolumeAliases(vol.path, "/sys", m.status.btrfs_subvolumes, &loops);
    } catch (const std::exception&) {
      continue;  // gone, or no longer a file or block device: nothing new to reach it by
    }
    const auto e = m.expected.volumes.find(key);
    if (e == m.expected.volumes.end()) continue;
    for (const auto& a : aliases) {
      const auto existing = m.volumes.find({a.id.dev, a.id.ino});
      if (existing != m.volumes.end()) {
        if (existing->second.dataset != vol.dataset)
          found.push_back(fmt::format("{} ({}) is a volume of dataset #{}, not #{}: left as it is",
                                      a.name, a.why, existing->second.dataset, vol.dataset));
        continue;
      }
      m.InsertVolume(sg_volume_key{.dev = a.id.dev, .ino = a.id.ino}, a.name, e->second,
                     /*mark=*/false);
      found.push_back(fmt::format("{} ({}) protected with dataset #{}", a.name, a.why,
                                  vol.dataset));
      changed = true;
    }
  }
  if (changed) {
    m.digests[kTableVolumes] = TableDigest(m.expected, kTableVolumes);
    m.WriteState();
  }
  return found;
}

std::vector<StorageDatapath::ProtectedVolume> StorageDatapath::Volumes() const {
  const Impl& m = *impl_;
  std::vector<ProtectedVolume> out;
  if (!m.policy) return out;
  for (const auto& [key, v] : m.volumes) {
    for (const auto& d : m.policy->datasets) {
      if (d.index != v.dataset) continue;
      const auto e = m.expected.volumes.find(key);
      out.push_back(
          {v.path, d.id,
           e != m.expected.volumes.end() && (e->second.flags & SG_VOLUME_READ_ONLY) != 0});
    }
  }
  return out;
}

std::vector<std::string> StorageDatapath::GuestNames() const {
  std::vector<std::string> out;
  for (const auto& [name, g] : impl_->guests) out.push_back(name);
  return out;
}

std::map<std::string, std::uint64_t> StorageDatapath::SuppressedEvents() const {
  const Impl& m = *impl_;
  std::map<std::string, std::uint64_t> out;
  ForEach<std::uint32_t, sg_storage_ratelimit>(
      m.Fd(m.skel->maps.sg_storage_ratelimit),
      [&](const std::uint32_t& id, const sg_storage_ratelimit& rl) {
        const auto g = m.guest_names.find(id);
        const std::string name = id == 0                    ? "unregistered"
                                 : g != m.guest_names.end() ? g->second
                                                            : fmt::format("#{}", id);
        out[name] += rl.suppressed;
      });
  return out;
}

std::vector<AttachedProgram> StorageDatapath::Programs() const {
  const Impl& m = *impl_;
  std::vector<AttachedProgram> out;
  for (const auto& a : m.attached) {
    const auto id = m.Identity(a.prog);
    out.push_back(AttachedProgram{.name = bpf_program__name(a.prog),
                                  .hook = a.hook,
                                  .prog_id = id.id,
                                  .tag = id.tag,
                                  .link_id = a.link_id,
                                  .pin = a.pin});
  }
  return out;
}

std::vector<StorageFinding> StorageDatapath::VerifyAttachments(StorageVerifyOptions options) const {
  const Impl& m = *impl_;
  std::vector<StorageFinding> out = m.adoption_findings;
  // The machine cgroup itself: removed and made again (e.g. `systemctl stop machine.slice`), the
  // directory is a new cgroup without our programs and guests below it are not covered.
  std::optional<std::string> replaced;
  try {
    const std::uint64_t id = CgroupId(m.options.machine_cgroup);
    if (id != m.status.machine_cgroup_id) replaced = fmt::format("now cgroup id {}", id);
  } catch (const StorageError& e) {
    replaced = fmt::format("gone ({})", ErrnoText(e.error()));
  }
  if (replaced) {
    out.push_back(
        {"machine-cgroup-replaced", m.options.machine_cgroup.string(),
         fmt::format("{} is {} but the programs are attached to cgroup id {}: guests "
                     "below it are not covered until sovguardd restarts",
                     m.options.machine_cgroup.string(), *replaced, m.status.machine_cgroup_id)});
  }
  for (const auto& a : m.attached) {
    const std::string name = bpf_program__name(a.prog);
    const auto ours = m.Identity(a.prog);
    bpf_link_info info{};
    std::uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(a.link.Get(), &info, &len) != 0) {
      out.push_back(
          {"link-broken", name,
           fmt::format("{}: link {} cannot be queried: {}", a.hook, a.link_id, ErrnoText(errno))});
      continue;
    }
    if (info.prog_id != ours.id) {
      out.push_back({"program-replaced", name,
                     fmt::format("{}: link {} runs program {} instead of ours ({} tag {})", a.hook,
                                 a.link_id, info.prog_id, ours.id, ours.tag)});
    }
    if (a.cgroup) {
      // Our link may say it is attached while another path detached it (cgroup gone, link
      // detached): the kernel's list of programs on the machine cgroup decides.
      bool present = false;
      if (info.cgroup.cgroup_id == m.status.machine_cgroup_id) {
        std::uint32_t count = 0, flags = 0;
        std::vector<std::uint32_t> ids;
        // Count first, then the ids (the list may grow in between: retry a few times).
        for (int attempt = 0; attempt < 3; ++attempt) {
          if (bpf_prog_query(m.machine_fd.Get(), a.type, 0, &flags, nullptr, &count) != 0) break;
          ids.assign(count + 8, 0);
          count = static_cast<std::uint32_t>(ids.size());
          if (bpf_prog_query(m.machine_fd.Get(), a.type, 0, &flags, ids.data(), &count) == 0) {
            ids.resize(count);
            present = std::find(ids.begin(), ids.end(), info.prog_id) != ids.end();
            break;
          }
          if (errno != ENOSPC) break;
        }
      }
      if (!present) {
        out.push_back({"program-detached", name,
                       fmt::format("{}: program {} (tag {}) is not attached to the machine cgroup "
                                   "any more (link {} cgroup id {})",
                                   a.hook, ours.id, ours.tag, a.link_id, info.cgroup.cgroup_id)});
      }
    }
    if (!a.pin.empty()) {
      UniqueFd pinned(bpf_obj_get(a.pin.c_str()));
      const std::uint32_t pinned_id = pinned ? Impl::LinkIdOf(pinned.Get()) : 0;
      if (pinned_id != a.link_id) {
        out.push_back({"pin-missing", name,
                       pinned ? fmt::format("{} holds link {}, not ours ({})", a.pin.string(),
                                            pinned_id, a.link_id)
                              : fmt::format("{}: {} (a restart would lose this link)",
                                            a.pin.string(), ErrnoText(errno))});
      }
    }
  }
  // Policy tables: byte for byte what this object wrote.
  std::uint32_t active = 0;
  const std::uint32_t zero = 0;
  bpf_map_lookup_elem(m.Fd(m.skel->maps.sg_storage_active), &zero, &active);
  if (active != m.active) {
    out.push_back({"policy-map-altered", "sg_storage_active",
                   fmt::format("generation {} is in force, not ours ({})", active, m.active)});
  }
  const Tables now = m.ReadTables(m.active, m.expected.classes.size(), options.compare_endpoints);
  for (int t = 0; t < kTablesDigested; ++t) {
    if (!options.compare_endpoints && (t == kTableEndpoints4 || t == kTableEndpoints6)) continue;
    if (!TableEqual(now, m.expected, t)) {
      const Digest got = TableDigest(now, t);
      out.push_back({"policy-map-altered", kTableNames[t],
                     fmt::format("{} differs from what was written (sha256 {}..., expected {}...)",
                                 kTableNames[t], base::ToHex(got.data(), 8),
                                 base::ToHex(m.digests[t].data(), 8))});
    }
  }
  // Guest entries: the kernel adds them only from sg_storage_pending, with our values.
  std::map<std::uint32_t, const Impl::Guest*> by_id;
  for (const auto& [name, g] : m.guests) by_id[g.id] = &g;
  ForEach<std::uint64_t, sg_storage_guest>(
      m.Fd(m.skel->maps.sg_storage_guests),
      [&](const std::uint64_t& cg, const sg_storage_guest& e) {
        const auto g = by_id.find(e.guest_id);
        if (g == by_id.end() || e.datasets != g->second->storage.datasets || e.flags != 0) {
          out.push_back(
              {"guest-entry-altered", "sg_storage_guests",
               fmt::format("cgroup {}: guest id {} datasets {:#x}{}", cg, e.guest_id, e.datasets,
                           g == by_id.end()
                               ? " (no such guest)"
                               : fmt::format(", expected {:#x}", g->second->storage.datasets))});
        }
      });
  std::map<std::string, sg_storage_guest> pending;
  for (const auto& [name, g] : m.guests) {
    if (!g.cgroup_name.empty())
      pending[g.cgroup_name] = {.datasets = g.storage.datasets, .guest_id = g.id, .flags = 0};
  }
  std::size_t seen = 0;
  ForEach<sg_storage_pending_key, sg_storage_guest>(
      m.Fd(m.skel->maps.sg_storage_pending),
      [&](const sg_storage_pending_key& k, const sg_storage_guest& e) {
        const std::string name(k.name, strnlen(k.name, sizeof k.name));
        const auto p = pending.find(name);
        if (p != pending.end()) ++seen;
        if (p == pending.end() || !SameBytes(&p->second, &e, sizeof e)) {
          out.push_back({"guest-entry-altered", "sg_storage_pending",
                         fmt::format("pending {}: guest id {} datasets {:#x}", name, e.guest_id,
                                     e.datasets)});
        }
      });
  if (seen != pending.size()) {
    out.push_back({"guest-entry-altered", "sg_storage_pending",
                   fmt::format("{} announced guest name(s) missing", pending.size() - seen)});
  }
  return out;
}

StorageRepairResult StorageDatapath::Repair(StorageVerifyOptions options) {
  Impl& m = *impl_;
  StorageRepairResult r;
  bool guests_done = false;
  std::set<std::string> tables_done, programs_done;
  for (auto& f : VerifyAttachments(options)) {
    if (f.kind == "adopted-state-altered") {
      r.remaining.push_back(std::move(f));
      continue;
    }
    if (f.kind == "policy-map-altered") {
      if (!tables_done.contains(f.object)) {
        for (int t = 0; t < kTablesDigested; ++t)
          if (f.object == kTableNames[t]) m.WriteTable(t, m.active);
        if (f.object == "sg_storage_active") {
          const std::uint32_t zero = 0;
          Update(m.Fd(m.skel->maps.sg_storage_active), &zero, &m.active, "sg_storage_active");
        }
        tables_done.insert(f.object);
      }
      r.repaired.push_back(std::move(f));
      continue;
    }
    if (f.kind == "guest-entry-altered") {
      if (!guests_done) {
        std::map<std::uint32_t, const Impl::Guest*> by_id;
        for (const auto& [name, g] : m.guests) by_id[g.id] = &g;
        const int fd = m.Fd(m.skel->maps.sg_storage_guests);
        std::vector<std::uint64_t> doomed;
        ForEach<std::uint64_t, sg_storage_guest>(
            fd, [&](const std::uint64_t& cg, const sg_storage_guest& e) {
              const auto g = by_id.find(e.guest_id);
              if (g == by_id.end()) {
                doomed.push_back(cg);
              } else if (e.datasets != g->second->storage.datasets || e.flags != 0) {
                const sg_storage_guest fixed{
                    .datasets = g->second->storage.datasets, .guest_id = e.guest_id, .flags = 0};
                Update(fd, &cg, &fixed, "sg_storage_guests");
              }
            });
        for (auto cg : doomed) bpf_map_delete_elem(fd, &cg);
        const int pfd = m.Fd(m.skel->maps.sg_storage_pending);
        std::vector<sg_storage_pending_key> stale;
        ForEach<sg_storage_pending_key, sg_storage_guest>(
            pfd,
            [&](const sg_storage_pending_key& k, const sg_storage_guest&) { stale.push_back(k); });
        for (const auto& k : stale) bpf_map_delete_elem(pfd, &k);
        for (const auto& [name, g] : m.guests) {
          if (g.cgroup_name.empty()) continue;
          sg_storage_pending_key k{};
          std::memcpy(k.name, g.cgroup_name.data(), g.cgroup_name.size());
          const sg_storage_guest e{.datasets = g.storage.datasets, .guest_id = g.id, .flags = 0};
          Update(pfd, &k, &e, "sg_storage_pending");
        }
        guests_done = true;
      }
      r.repaired.push_back(std::move(f));
      continue;
    }
    // Program findings: find our attachment of that program.
    auto a = std::find_if(m.attached.begin(), m.attached.end(), [&](const Impl::Attached& x) {
      return f.object == bpf_program__name(x.prog);
    });
    if (a == m.attached.end()) {
      r.remaining.push_back(std::move(f));
      continue;
    }
    if (!programs_done.insert(f.object + "/" + (f.kind == "pin-missing" ? "pin" : "link")).second) {
      r.repaired.push_back(std::move(f));  // the same link, already re-attached above
      continue;
    }
    if (f.kind == "pin-missing") {
      ::unlink(a->pin.c_str());
      m.PinAt(a->link.Get(), a->pin);
      r.repaired.push_back(std::move(f));
      continue;
    }
    // program-replaced, program-detached, link-broken: a cgroup link still attached gets our
    // program back in place; anything else gets a new link, pinned over the old one, and the
    // old link (with whatever program it ran) is released.
    if (f.kind == "program-replaced" && a->cgroup &&
        bpf_link_update(a->link.Get(), bpf_program__fd(a->prog), nullptr) == 0) {
      r.repaired.push_back(std::move(f));
      continue;
    }
    UniqueFd fresh = m.NewLink(*a);
    if (!fresh) {
      f.detail += "; re-attach failed: " + ErrnoText(errno);
      r.remaining.push_back(std::move(f));
      continue;
    }
    if (!a->pin.empty()) m.PinAt(fresh.Get(), a->pin);
    if (a->cgroup) bpf_link_detach(a->link.Get());  // a replaced one stops now
    a->link = std::move(fresh);
    a->link_id = Impl::LinkIdOf(a->link.Get());
    r.repaired.push_back(std::move(f));
  }
  return r;
}

void StorageDatapath::Detach() {
  Impl& m = *impl_;
  for (auto& a : m.attached) {
    if (!a.pin.empty()) ::unlink(a.pin.c_str());
    // Detach explicitly: another process holding the link must not keep it enforcing.
    if (a.cgroup) bpf_link_detach(a.link.Get());
  }
  m.fanotify.reset();
  m.attached.clear();
  if (m.pinning()) {
    bpf_map* map = nullptr;
    bpf_object__for_each_map(map, m.skel->obj) {
      if (const char* path = bpf_map__pin_path(map)) ::unlink(path);
    }
    m.ReleaseStaleLinks();
    ::rmdir(m.options.pin_dir.c_str());
  }
  m.detached = true;
}

std::vector<IoCounters> StorageDatapath::ReadCounters() const {
  const Impl& m = *impl_;
  std::vector<IoCounters> out;
  const int fd = m.Fd(m.skel->maps.sg_io_state);
  sg_io_key key{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    sg_io_state s{};
    if (bpf_map_lookup_elem(fd, &next, &s) == 0) {
      const auto g = m.guest_names.find(next.guest_id);
      out.push_back(IoCounters{
          .guest = g != m.guest_names.end() ? g->second : fmt::format("#{}", next.guest_id),
          .dataset = m.DatasetName(next.dataset),
          .index = static_cast<std::uint8_t>(next.dataset),
          .read_bytes = s.read_bytes,
          .write_bytes = s.write_bytes,
          .denied = s.denied,
          .read_window_bytes = s.read_window_bytes,
          .write_window_bytes = s.write_window_bytes});
    }
    key = next;
    prev = &key;
  }
  std::sort(out.begin(), out.end(), [](const IoCounters& a, const IoCounters& b) {
    return std::tie(a.guest, a.index) < std::tie(b.guest, b.index);
  });
  return out;
}

int StorageDatapath::PollEvents(const std::function<void(const StorageEvent&)>& cb,
                                int timeout_ms) {
  Impl& m = *impl_;
  m.callback = &cb;
  m.delivered = 0;
  // Denials the fanotify group answered: the tracepoints never see those opens succeed.
  if (m.fanotify) {
    for (auto& e : m.fanotify->TakeEvents()) Impl::OnEvent(&m, &e, sizeof e);
    m.AddDenied(m.fanotify->TakeDenied());
    if (m.delivered > 0) timeout_ms = 0;
  }
  int err = ring_buffer__poll(m.ring.get(), timeout_ms);
  if (err >= 0) err = ring_buffer__consume(m.ring.get());
  m.callback = nullptr;
  if (err < 0 && err != -EINTR) throw StorageError("poll sg_storage_events", err);
  return m.delivered;
}

}  // namespace sovguard::storage
