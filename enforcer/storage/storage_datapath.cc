#include "enforcer/storage/storage_datapath.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "bpf/storage/storage_guard.skel.h"
#include "enforcer/system/mounts.h"
#include "enforcer/system/unique_fd.h"

namespace sovguard::storage {
namespace {

namespace fs = std::filesystem;
using enforcer::UniqueFd;

struct SkelDeleter {
  void operator()(storage_guard* s) const { storage_guard__destroy(s); }
};
using Skel = std::unique_ptr<storage_guard, SkelDeleter>;
struct LinkDeleter {
  void operator()(bpf_link* l) const { bpf_link__destroy(l); }
};
using Link = std::unique_ptr<bpf_link, LinkDeleter>;
struct RingDeleter {
  void operator()(ring_buffer* r) const { ring_buffer__free(r); }
};
using Ring = std::unique_ptr<ring_buffer, RingDeleter>;

std::string ErrnoText(int err) {
  return std::strerror(err < 0 ? -err : err);
}

// The kernel's dev_t encoding (MKDEV: major << 20 | minor), which s_dev and i_rdev use.
std::uint64_t KernelDev(dev_t d) {
  return (std::uint64_t{major(d)} << 20) | minor(d);
}

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

std::string LibvirtCgroupName(int id, std::string_view name) {
  // virDomainDriverGenerateMachineName + virDomainMachineNameAppendValid (libvirt 9): hostname
  // characters only, leading dots skipped, at most 64 characters, no trailing '-'; then the cgroup
  // directory is "<machine>.libvirt-qemu".
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
  return out + ".libvirt-qemu";
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

struct StorageDatapath::Impl {
  struct Guest {
    std::uint32_t id = 0;
    std::string cgroup_name;  // empty when registered by id
    GuestStorage storage;
  };
  struct Volume {
    std::string path;
    std::uint32_t dataset = 0;
  };

  StorageOptions options;
  Skel skel;
  std::vector<Link> links;
  Ring ring;
  UniqueFd machine_fd;
  StorageStatus status;
  sg_storage_config cfg{};
  std::optional<policy::CompiledStorage> policy;
  std::vector<std::vector<ResolvedPool>> pools;  // per dataset index
  std::map<std::string, Guest> guests;           // by domain name
  std::map<std::uint32_t, std::string> guest_names;
  std::uint32_t next_guest_id = 1;
  std::map<std::pair<std::uint64_t, std::uint64_t>, Volume> volumes;
  const std::function<void(const StorageEvent&)>* callback = nullptr;
  int delivered = 0;

  int Fd(bpf_map* m) const { return bpf_map__fd(m); }

  void WriteConfig() {
    const std::uint32_t zero = 0;
    Update(Fd(skel->maps.sg_storage_cfg), &zero, &cfg, "sg_storage_cfg");
  }

  bool TryAttach(bpf_program* prog, std::string& error) {
    Link link(bpf_program__attach(prog));
    if (!link) {
      error = fmt::format("attach {}: {}", bpf_program__name(prog), ErrnoText(errno));
      return false;
    }
    links.push_back(std::move(link));
    return true;
  }

  void AttachCgroup(bpf_program* prog) {
    Link link(bpf_program__attach_cgroup(prog, machine_fd.Get()));
    if (!link) {
      throw StorageError(
          fmt::format("attach {} to {}", bpf_program__name(prog), options.machine_cgroup.string()),
          errno);
    }
    links.push_back(std::move(link));
  }

  // (dev, ino) key of a volume and the stat of its source.
  static std::pair<sg_volume_key, struct stat> KeyOf(const fs::path& source) {
    struct stat st {};
    if (::stat(source.c_str(), &st) != 0) {
      throw StorageRefused(fmt::format("volume {}: {}", source.string(), ErrnoText(errno)));
    }
    sg_volume_key key{};
    if (S_ISBLK(st.st_mode)) {
      key.dev = 0;
      key.ino = KernelDev(st.st_rdev);
    } else if (S_ISREG(st.st_mode)) {
      key.dev = KernelDev(st.st_dev);
      key.ino = st.st_ino;
    } else {
      throw StorageRefused("volume " + source.string() + " is neither a file nor a block device");
    }
    return {key, st};
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
    const auto existing = volumes.find({key.dev, key.ino});
    if (existing != volumes.end() && existing->second.dataset != d.index) {
      throw StorageRefused(fmt::format("{}: volume {} is already a volume of dataset #{}, not {}",
                                       who, canonical.string(), existing->second.dataset, d.id));
    }
    Update(Fd(skel->maps.sg_volumes), &key, &v, "sg_volumes");
    volumes[{key.dev, key.ino}] = Volume{canonical.string(), d.index};
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

  void DeleteGuestEntries(std::uint32_t guest_id) {
    const int fd = Fd(skel->maps.sg_storage_guests);
    std::vector<std::uint64_t> doomed;
    std::uint64_t key = 0, next = 0;
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      sg_storage_guest g{};
      if (bpf_map_lookup_elem(fd, &next, &g) == 0 && g.guest_id == guest_id) doomed.push_back(next);
      key = next;
      prev = &key;
    }
    for (auto id : doomed) bpf_map_delete_elem(fd, &id);
    const int io = Fd(skel->maps.sg_io_state);
    std::vector<sg_io_key> io_doomed;
    sg_io_key ik{}, inext{};
    const void* iprev = nullptr;
    while (bpf_map_get_next_key(io, iprev, &inext) == 0) {
      if (inext.guest_id == guest_id) io_doomed.push_back(inext);
      ik = inext;
      iprev = &ik;
    }
    for (auto& k : io_doomed) bpf_map_delete_elem(io, &k);
  }

  std::string DatasetName(std::uint32_t index) const {
    if (policy && index < policy->datasets.size()) return policy->datasets[index].id;
    return fmt::format("#{}", index);
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
    } else {
      out.path = fmt::format("dev={} ino={}", DevText(e.dev), e.ino);
    }
    (*self->callback)(out);  // set for the duration of PollEvents
    ++self->delivered;
    return 0;
  }
};

StorageDatapath::StorageDatapath(StorageOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.options = std::move(options);
  enforcer::EnsureTracefs();
  const auto root = enforcer::FindCgroup2Mount();
  if (!root) throw StorageError("no cgroup2 mount in /proc/self/mountinfo", ENOENT);
  if (m.options.machine_cgroup.empty()) m.options.machine_cgroup = *root / "machine";
  fs::create_directories(m.options.machine_cgroup);
  m.machine_fd =
      UniqueFd(::open(m.options.machine_cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!m.machine_fd) throw StorageError("open " + m.options.machine_cgroup.string(), errno);
  m.status.machine_cgroup = m.options.machine_cgroup;
  m.status.machine_cgroup_id = CgroupId(m.options.machine_cgroup);
  m.status.guest_level = static_cast<std::uint32_t>(PathDepth(*root, m.options.machine_cgroup)) + 1;

  // Load: with the LSM programs first (unless told not to); a kernel without BPF LSM may refuse
  // the program type, then the object is loaded again without them.
  PathStatus open{.path = "storage-open"}, quota{.path = "storage-io-quota"},
      io{.path = "storage-io-accounting", .mechanism = "none"},
      dev{.path = "storage-block-devices"}, net{.path = "storage-network", .mechanism = "none"};
  bool with_lsm = !m.options.force_tracepoint_fallback;
  if (!with_lsm) {
    open.unavailable.push_back("bpf-lsm:file_open: not tried (tracepoint fallback forced)");
  }
  for (;;) {
    m.skel.reset(storage_guard__open());
    if (!m.skel) throw StorageError("open storage_guard object", errno);
    bpf_program* prog = nullptr;
    bpf_object__for_each_program(prog, m.skel->obj) {
      if (IsLsmProgram(prog)) bpf_program__set_autoload(prog, with_lsm);
    }
    int err = 0;
    if (with_lsm) {
      QuietLibbpf quiet;
      err = storage_guard__load(m.skel.get());
    } else {
      err = storage_guard__load(m.skel.get());
    }
    if (err == 0) break;
    if (!with_lsm) throw StorageError("load storage_guard", err);
    open.unavailable.push_back("bpf-lsm:file_open: load: " + ErrnoText(err));
    with_lsm = false;
  }

  m.cfg.machine_cgroup_id = m.status.machine_cgroup_id;
  m.cfg.guest_level = m.status.guest_level;
  m.WriteConfig();

  std::string error;
  bool lsm = false;
  if (with_lsm) {
    const std::size_t before = m.links.size();
    lsm = m.TryAttach(m.skel->progs.sg_lsm_file_open, error) &&
          m.TryAttach(m.skel->progs.sg_lsm_file_permission, error);
    if (!lsm) {
      m.links.resize(before);
      open.unavailable.push_back("bpf-lsm:file_open: " + error +
                                 " (BPF LSM needs trampolines and 'bpf' in lsm=)");
    }
  }
  if (lsm) {
    open.mechanism = "bpf-lsm:file_open";
    open.guarantee = Guarantee::kPrevents;
    quota.mechanism = "bpf-lsm:file_permission";
    quota.guarantee = Guarantee::kPrevents;
    m.cfg.flags |= SG_STORAGE_CFG_LSM;
    m.WriteConfig();
  } else {
    if (!m.TryAttach(m.skel->progs.sg_tp_openat_exit, error)) throw StorageError(error, errno);
    std::string mech = "tracepoint:sys_exit_openat";
    if (m.TryAttach(m.skel->progs.sg_tp_openat2_exit, error))
      mech += ",openat2";
    else
      open.unavailable.push_back(error);
    if (m.TryAttach(m.skel->progs.sg_tp_open_exit, error))
      mech += ",open";
    else
      open.unavailable.push_back(error);
    open.mechanism = mech + "+SIGKILL";
    open.guarantee = Guarantee::kDetectsAndKills;
    quota.mechanism = "tracepoint:sys_enter_p{read,write}{64,v,v2}+SIGKILL";
    quota.guarantee = Guarantee::kDetectsAndKills;
  }
  {
    bool ok = true;
    for (bpf_program* p : {m.skel->progs.sg_enter_pread64, m.skel->progs.sg_exit_pread64,
                           m.skel->progs.sg_enter_pwrite64, m.skel->progs.sg_exit_pwrite64,
                           m.skel->progs.sg_enter_preadv, m.skel->progs.sg_exit_preadv,
                           m.skel->progs.sg_enter_pwritev, m.skel->progs.sg_exit_pwritev,
                           m.skel->progs.sg_enter_preadv2, m.skel->progs.sg_exit_preadv2,
                           m.skel->progs.sg_enter_pwritev2, m.skel->progs.sg_exit_pwritev2}) {
      if (!m.TryAttach(p, error)) {
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
  if (m.TryAttach(m.skel->progs.sg_cgroup_mkdir, error) &&
      m.TryAttach(m.skel->progs.sg_cgroup_rmdir, error)) {
    m.status.guest_discovery = "tp_btf:cgroup_mkdir";
  } else {
    m.status.guest_discovery = "registration-by-id-only (" + error + ")";
  }
  // cgroup programs: once, on the machine cgroup, as links (BPF_F_ALLOW_MULTI semantics): the
  // programs libvirt attaches to each guest cgroup run as well, and all must allow.
  m.AttachCgroup(m.skel->progs.sg_cgroup_dev);
  dev.mechanism = "cgroup/dev";
  dev.guarantee = Guarantee::kPrevents;
  if (m.options.network) {
    m.AttachCgroup(m.skel->progs.sg_connect4);
    m.AttachCgroup(m.skel->progs.sg_connect6);
    net.mechanism = "cgroup/connect4+connect6";
    net.guarantee = Guarantee::kPrevents;
  } else {
    net.unavailable.push_back("cgroup/connect4+connect6: disabled by options");
  }
  m.status.paths = {open, quota, io, dev, net};

  m.ring.reset(ring_buffer__new(m.Fd(m.skel->maps.sg_storage_events), &Impl::OnEvent, &m, nullptr));
  if (!m.ring) throw StorageError("ring_buffer__new sg_storage_events", errno);
}

StorageDatapath::~StorageDatapath() = default;

const StorageStatus& StorageDatapath::Status() {
  Impl& m = *impl_;
  m.status.volumes = m.volumes.size();
  m.status.pending = 0;
  m.status.guests = 0;
  for (const auto& [name, g] : m.guests) {
    (void)name;
    if (!g.cgroup_name.empty()) ++m.status.pending;
  }
  std::uint64_t key = 0, next = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(m.Fd(m.skel->maps.sg_storage_guests), prev, &next) == 0) {
    ++m.status.guests;
    key = next;
    prev = &key;
  }
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
  // Classes and address tables first, the configuration that makes them count last.
  const int classes = m.Fd(m.skel->maps.sg_storage_classes);
  for (std::uint32_t i = 0; i < storage.classes.size(); ++i) {
    Update(classes, &i, &storage.classes[i], "sg_storage_classes");
  }
  {
    const int fd = m.Fd(m.skel->maps.sg_endpoints4);
    std::set<std::pair<std::uint32_t, std::uint32_t>> wanted;
    for (const auto& p : storage.ipv4) {
      const sg_lpm4_key k{.prefixlen = p.len, .addr = htonl(p.addr)};
      Update(fd, &k, &p.class_id, "sg_endpoints4");
      wanted.insert({k.prefixlen, k.addr});
    }
    std::vector<sg_lpm4_key> stale;
    sg_lpm4_key key{}, next{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      if (!wanted.contains({next.prefixlen, next.addr})) stale.push_back(next);
      key = next;
      prev = &key;
    }
    for (const auto& k : stale) bpf_map_delete_elem(fd, &k);
  }
  {
    const int fd = m.Fd(m.skel->maps.sg_endpoints6);
    std::set<std::pair<std::uint32_t, std::array<std::uint8_t, 16>>> wanted;
    for (const auto& p : storage.ipv6) {
      sg_lpm6_key k{.prefixlen = p.len, .addr = {}};
      std::memcpy(k.addr, p.addr.data(), 16);
      Update(fd, &k, &p.class_id, "sg_endpoints6");
      wanted.insert({k.prefixlen, p.addr});
    }
    std::vector<sg_lpm6_key> stale;
    sg_lpm6_key key{}, next{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      std::array<std::uint8_t, 16> a{};
      std::memcpy(a.data(), next.addr, 16);
      if (!wanted.contains({next.prefixlen, a})) stale.push_back(next);
      key = next;
      prev = &key;
    }
    for (const auto& k : stale) bpf_map_delete_elem(fd, &k);
  }
  m.cfg.enforce_mask = 0;
  std::memset(m.cfg.ds, 0, sizeof m.cfg.ds);
  m.pools.assign(storage.datasets.size(), {});
  for (const auto& d : storage.datasets) {
    if (d.index >= SG_MAX_DATASETS || d.index >= storage.datasets.size()) {
      throw StorageError(fmt::format("dataset {} has index {}", d.id, d.index), EINVAL);
    }
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
    for (const auto& p : d.pools) m.pools[d.index].push_back(Resolve(p));
  }
  m.cfg.n_classes = static_cast<std::uint32_t>(storage.classes.size());
  m.policy = storage;
  m.WriteConfig();
}

void StorageDatapath::ExpectGuest(const std::string& cgroup_name, const GuestStorage& guest) {
  Impl& m = *impl_;
  if (cgroup_name.empty() || cgroup_name.size() >= SG_STORAGE_NAME_LEN ||
      cgroup_name.find('/') != std::string::npos) {
    throw StorageError(fmt::format("guest {}: cgroup name \"{}\" must be 1-{} characters without /",
                                   guest.name, cgroup_name, SG_STORAGE_NAME_LEN - 1),
                       EINVAL);
  }
  const sg_storage_guest entry = m.Admit(guest);
  m.guests[guest.name].cgroup_name = cgroup_name;
  sg_storage_pending_key key{};
  std::memcpy(key.name, cgroup_name.data(), cgroup_name.size());
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
  int err = ring_buffer__poll(m.ring.get(), timeout_ms);
  if (err >= 0) err = ring_buffer__consume(m.ring.get());
  m.callback = nullptr;
  if (err < 0 && err != -EINTR) throw StorageError("poll sg_storage_events", err);
  return m.delivered;
}

}  // namespace sovguard::storage
