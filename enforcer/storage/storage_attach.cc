#include <bpf/btf.h>
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstdlib>
#include <set>

#include "base/errno_text.h"
#include "base/hex.h"
#include "enforcer/storage/storage_datapath_impl.h"
#include "enforcer/storage/volume_identity.h"
#include "enforcer/system/lsm.h"
#include "enforcer/system/mounts.h"

namespace sovguard::storage {

namespace {

using base::ErrnoText;

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

}  // namespace

UniqueFd StorageDatapath::Impl::NewLink(const Attached& a) const {
  const int prog_fd = bpf_program__fd(a.prog);
  if (a.cgroup) return UniqueFd(bpf_link_create(prog_fd, machine_fd.Get(), a.type, nullptr));
  // tp_btf/, lsm/, fmod_ret/: the attach point is in the program (BTF id).
  return UniqueFd(bpf_raw_tracepoint_open(nullptr, prog_fd));
}

bool StorageDatapath::Impl::Attach(bpf_program* prog, bool cgroup, std::string& error) {
  // One link per program: a program two paths need (sg_sys_enter) is attached by the first.
  for (const auto& have : attached)
    if (have.prog == prog) return true;
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
      error = fmt::format("attach {}{}: {}", bpf_program__name(prog),
                          cgroup ? " to " + options.machine_cgroup.string() : "", ErrnoText(errno));
      return false;
    }
    if (pinning()) bpf_feature::PinReplacing(fresh.Get(), a.pin);
    a.link = std::move(fresh);
    // The predecessor's link goes now that ours runs (and is pinned). Releasing a perf link
    // waits for an RCU grace period (about 40 ms here): in the background, all at once.
    if (old) retired.push_back(std::move(old));
  }
  a.link_id = bpf_feature::LinkId(a.link.Get());
  attached.push_back(std::move(a));
  return true;
}

OpenRung StorageDatapath::Impl::AttachOpenRung(PathStatus& open, bool lsm_loaded,
                                               const fs::path& cgroup2_root) {
  for (const LadderRung& rung : StorageOpenLadder()) {
    if (rung.vfs_hooks && !lsm_loaded) continue;  // why: recorded at load
    if (const auto inactive = InactiveReason(rung)) {
      open.unavailable.push_back(fmt::format("{}: {}", rung.mechanism, *inactive));
      continue;
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

void StorageDatapath::Impl::DropAttached(std::size_t size) {
  while (attached.size() > size) {
    auto& a = attached.back();
    if (!a.pin.empty()) ::unlink(a.pin.c_str());
    attached.pop_back();
  }
}

void StorageDatapath::Impl::ReleaseStaleLinks() {
  if (!pinning()) return;
  std::set<std::string> ours;
  for (const auto& a : attached) ours.insert(a.pin.filename().string());
  // Maps of this object stay; a map only a predecessor's programs had (another program set) goes
  // with them.
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, skel->obj) {
    if (!bpf_map__is_internal(map)) ours.insert(bpf_map__name(map));
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options.pin_dir, ec)) {
    const std::string name = e.path().filename().string();
    // Staging pins (bpf_feature::kStagingPrefix) are never ours: they go too.
    if (!ours.contains(name)) ::unlink(e.path().c_str());
  }
}

void StorageDatapath::Impl::Adopt(const sg_storage_state& st) {
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
    adopted_dataset_ids.push_back(NameText(st.dataset_ids[i]));
  }
  ForEach<std::uint32_t, sg_storage_guest_meta>(
      Fd(skel->maps.sg_storage_guest_meta),
      [&](const std::uint32_t& id, const sg_storage_guest_meta& meta) {
        Guest g;
        g.id = id;
        g.cgroup_id = meta.cgroup_id;
        g.cgroup_name = NameText(meta.cgroup_name);
        g.storage.name = NameText(meta.name);
        g.storage.datasets = meta.datasets;
        guest_names[id] = g.storage.name;
        next_guest_id = std::max(next_guest_id, id + 1);
        guests[g.storage.name] = std::move(g);
      });
  ForEach<sg_volume_key, sg_storage_volume_meta>(
      Fd(skel->maps.sg_storage_volume_meta),
      [&](const sg_volume_key& k, const sg_storage_volume_meta& meta) {
        const std::string path = NameText(meta.path);
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
          {FindingKind::kAdoptedStateAltered, kTableNames[t],
           fmt::format("{} changed while no daemon held it (sha256 {}..., written {}...): "
                       "apply the policy again",
                       kTableNames[t], base::ToHex(digests[t].data(), 8),
                       base::ToHex(st.table_digest[t], 8))});
    }
  }
  status.adopted = true;
}

std::vector<StorageDatapath::ProtectedVolume> StorageDatapath::Impl::PinnedVolumes(
    const sg_storage_state& st) const {
  std::vector<ProtectedVolume> out;
  ForEach<sg_volume_key, sg_storage_volume_meta>(
      Fd(skel->maps.sg_storage_volume_meta),
      [&](const sg_volume_key&, const sg_storage_volume_meta& meta) {
        if (meta.dataset >= SG_MAX_DATASETS) return;
        std::string id = NameText(st.dataset_ids[meta.dataset]);
        if (id.empty()) return;
        out.push_back({.path = NameText(meta.path),
                       .dataset = std::move(id),
                       .readonly = (meta.flags & SG_VOLUME_READ_ONLY) != 0});
      });
  return out;
}

void StorageDatapath::Impl::ReleasePins() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options.pin_dir, ec)) {
    if (::unlink(e.path().c_str()) != 0) throw StorageError("unpin " + e.path().string(), errno);
  }
  if (ec) throw StorageError("list " + options.pin_dir.string(), ec.value());
}

// The read/write paths (bpf/storage/README.md, "Every way to open and to move bytes"): one
// sys_enter and one sys_exit program dispatching on the syscall number, and io_uring's
// tracepoints. Attached with either mechanism: they count, and without BPF LSM also judge and
// kill. A program that does not attach is named in the path's `unavailable`: without the
// dispatch, nothing is counted (and without BPF LSM no I/O is judged).
template <class Impl>  // StorageDatapath::Impl (private)
static void AttachIoPaths(Impl& m, bool lsm, PathStatus& quota, PathStatus& io) {
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
  if (!attach({progs.sg_sys_enter, progs.sg_sys_exit}, io)) {
    if (!lsm) {
      quota.mechanism = "none";
      quota.guarantee = Guarantee::kNone;
    }
    return;
  }
  // io_uring's completions count I/O and (without BPF LSM) judge its opens and I/O.
  std::string uring;
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
  constexpr std::string_view kCalls =
      "{read,write}{,v},p{read,write}{64,v,v2},sendfile64,splice,copy_file_range,io_submit";
  io.mechanism = fmt::format("tp_btf:sys_{{enter,exit}}:{}{}", kCalls, uring);
  io.guarantee = Guarantee::kCounts;
  if (!lsm) {
    quota.mechanism =
        fmt::format("tp_btf:sys_enter:{},mmap,ftruncate,fallocate{}+SIGKILL", kCalls, uring);
    quota.guarantee = Guarantee::kDetectsAndKills;
  }
}

StorageDatapath::StorageDatapath(StorageOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.options = std::move(options);
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
  if (m.pinning()) bpf_feature::EnsurePinDir(m.options.pin_dir);

  // Load: with the LSM programs first (unless told not to); a kernel without BPF LSM may refuse
  // the program type, then the object is loaded again without them.
  PathStatus open{.path = "storage-open"}, quota{.path = "storage-io-quota"},
      io{.path = "storage-io-accounting", .mechanism = "none"},
      dev{.path = "storage-block-devices"}, net{.path = "storage-network", .mechanism = "none"};
  const bool try_lsm = !m.options.force_tracepoint_fallback;
  if (!try_lsm) {
    for (const char* rung : {"bpf-lsm:file_open", "fmod_ret:security_file_open"})
      open.unavailable.push_back(std::string(rung) + ": not tried (tracepoint fallback forced)");
  }
  const PathStatus open_before_load = open;
  bool with_lsm = try_lsm;
  sg_storage_state state{};
  // A second round only after a stale state was released (see StorageOptions::on_stale_state).
  for (bool released = false;;) {
    for (;;) {
      const bool btrfs_subvolumes = KernelDescribesBtrfsInodes();
      m.skel = bpf_feature::OpenSkeleton<Skel, storage_guard__create_skeleton>(
          "storage_guard", m.options.program_object);
      bpf_program* prog = nullptr;
      bpf_object__for_each_program(prog, m.skel->obj) {
        if (NeedsTrampoline(bpf_program__section_name(prog)))
          bpf_program__set_autoload(prog, with_lsm);
        if (const auto loads = IoUringProgramLoads(prog)) bpf_program__set_autoload(prog, *loads);
      }
      // .rodata (constants of this very object) belongs to the object, not to the state.
      if (m.pinning())
        bpf_feature::SetPinPaths(m.skel->obj, m.options.pin_dir,
                                 bpf_feature::InternalMaps::kNotPinned);
      int err = 0;
      if (with_lsm) {
        bpf_feature::QuietLibbpf quiet;
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
      for (const char* rung : {"bpf-lsm:file_open", "fmod_ret:security_file_open"})
        open.unavailable.push_back(std::string(rung) + ": load: " + ErrnoText(err));
      with_lsm = false;
    }

    state = bpf_feature::ReadPinnedState<sg_storage_state>(m.Fd(m.skel->maps.sg_storage_state),
                                                           "sg_storage_state",
                                                           {.owner = "storage state",
                                                            .abi_name = "storage ABI version",
                                                            .version = SG_STORAGE_ABI_VERSION},
                                                           m.options.pin_dir.string());
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
  const LadderRung& rung = RungOf(m.AttachOpenRung(open, with_lsm, *root));
  const bool lsm = rung.vfs_hooks;  // opens, I/O and mmap judged at the VFS
  if (lsm) {
    quota.mechanism = rung.quota_mechanism;
    quota.guarantee = Guarantee::kPrevents;
  }  // else: the syscall tracepoints' mechanism, named by AttachIoPaths
  // Refusing the I/O at the LSM's file_permission is this path's strongest mechanism: below it
  // the path is downgraded, for the reasons the open path's attempts gave.
  for (const LadderRung& r : StorageOpenLadder()) {
    if (&r == &rung || !r.vfs_hooks) break;
    std::string why = "not in use";
    for (const auto& u : open.unavailable)
      if (u.starts_with(std::string(r.mechanism) + ": ")) why = u.substr(r.mechanism.size() + 2);
    quota.unavailable.push_back(std::string(r.quota_mechanism) + ": " + why);
  }
  AttachIoPaths(m, lsm, quota, io);
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

std::vector<AttachedProgram> StorageDatapath::Programs() const {
  const Impl& m = *impl_;
  std::vector<AttachedProgram> out;
  for (const auto& a : m.attached) {
    const auto id = bpf_feature::ProgramByFd(bpf_program__fd(a.prog));
    out.push_back(AttachedProgram{.name = bpf_program__name(a.prog),
                                  .hook = a.hook,
                                  .prog_id = id.id,
                                  .tag = id.tag,
                                  .link_id = a.link_id,
                                  .pin = a.pin});
  }
  return out;
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

}  // namespace sovguard::storage
