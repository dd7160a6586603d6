#include <climits>

#include <fmt/format.h>
#include <cerrno>

#include "base/errno_text.h"
#include "enforcer/storage/nvmet_exports.h"
#include "enforcer/storage/storage_datapath_impl.h"
#include "enforcer/storage/volume_identity.h"

namespace sovguard::storage {

using base::ErrnoText;

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

std::pair<sg_volume_key, struct stat> StorageDatapath::Impl::KeyOf(const fs::path& source) const {
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

const policy::CompiledStorageDataset& StorageDatapath::Impl::Dataset(const std::string& id) const {
  if (!policy) throw StorageRefused("no storage policy applied: dataset " + id + " is unknown");
  for (const auto& d : policy->datasets)
    if (d.id == id) return d;
  throw StorageRefused("dataset " + id + " is not in the storage policy");
}

void StorageDatapath::Impl::Protect(const fs::path& source, const std::string& dataset_id,
                                    bool readonly, std::string_view who) {
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
    throw StorageRefused(fmt::format("{}: volume {} of dataset {} is not on approved storage ({})",
                                     who, canonical.string(), d.id, allowed));
  }
  const sg_volume v{.dataset = d.index,
                    .flags = (readonly || d.read_only) ? SG_VOLUME_READ_ONLY : 0u};
  // The same bytes under other identities (partitions, dm/loop devices, overlayfs layer
  // files) are protected alike: checked first, so a conflict changes nothing.
  const auto check = [&](const sg_volume_key& k, const std::string& name) {
    const auto existing = volumes.find({k.dev, k.ino});
    if (existing != volumes.end() && existing->second.dataset != d.index) {
      throw StorageRefused(fmt::format("{}: volume {} is already a volume of dataset #{}, not {}",
                                       who, name, existing->second.dataset, d.id));
    }
  };
  const auto aliases_of = [&] {
    try {
      return VolumeAliases(canonical, "/sys", status.btrfs_subvolumes);
    } catch (const std::exception& e) {
      throw StorageRefused(
          fmt::format("{}: volume {}: aliases: {}", who, canonical.string(), e.what()));
    }
  };
  const auto check_all = [&](const std::vector<VolumeAlias>& aliases) {
    check(key, canonical.string());
    for (const auto& a : aliases)
      check(sg_volume_key{.dev = a.id.dev, .ino = a.id.ino}, a.name + " (" + a.why + ")");
  };
  std::vector<VolumeAlias> aliases = aliases_of();
  check_all(aliases);
  if (OnOverlay(canonical)) {
    // An overlayfs file is copied up now, after every check that could refuse it: its
    // identities are then those of its whole protection (a copy-up later would give its bytes
    // a file not in the tables). The upper-layer file is new: asked again, and checked. Where
    // the daemon cannot write (read-only where it looks), the tick's refresh is the guard, and
    // the status says so.
    std::string not_copied;
    try {
      not_copied = CopyUpOverlayFile(canonical);
    } catch (const std::exception& e) {
      throw StorageRefused(fmt::format("{}: volume {}: {}", who, canonical.string(), e.what()));
    }
    auto& told = status.overlay_not_copied_up;
    const std::string note = canonical.string() + ": " + not_copied;
    if (!not_copied.empty() && std::find(told.begin(), told.end(), note) == told.end())
      told.push_back(note);
    key = KeyOf(canonical).first;
    aliases = aliases_of();
    check_all(aliases);
  }
  InsertVolume(key, canonical.string(), v, /*mark=*/true);
  for (const auto& a : aliases)
    InsertVolume(sg_volume_key{.dev = a.id.dev, .ino = a.id.ino}, a.name, v, /*mark=*/false);
  digests[kTableVolumes] = TableDigest(expected, kTableVolumes);
  WriteState();
}

void StorageDatapath::Impl::InsertVolume(const sg_volume_key& key, const std::string& path,
                                         const sg_volume& v, bool mark) {
  if (mark && fanotify) MarkVolume(path, key);  // before the tables: a failure changes nothing
  sg_storage_volume_meta meta{.dataset = v.dataset, .flags = v.flags, .path = {}};
  CopyName(meta.path, path);
  UpdateElem(Fd(skel->maps.sg_storage_volume_meta), &key, &meta, "sg_storage_volume_meta");
  UpdateElem(Fd(skel->maps.sg_volumes), &key, &v, "sg_volumes");
  volumes[{key.dev, key.ino}] =
      Volume{path, v.dataset, key.dev != 0 && key.dev != kCharDevice && OnOverlay(path)};
  expected.volumes[{key.dev, key.ino}] = v;
}

void StorageDatapath::Impl::AddDenied(
    const std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint64_t>& denied) {
  const int fd = Fd(skel->maps.sg_io_state);
  for (const auto& [key, n] : denied) {
    const sg_io_key k{.guest_id = key.first, .dataset = key.second};
    sg_io_state st{};
    if (bpf_map_lookup_elem(fd, &k, &st) != 0 && errno != ENOENT)
      throw StorageError("read sg_io_state", errno);
    st.denied += n;
    UpdateElem(fd, &k, &st, "sg_io_state");
  }
}

void StorageDatapath::Impl::MarkVolume(const fs::path& path, const sg_volume_key& key) {
  try {
    fanotify->Protect(path, key);
  } catch (const std::system_error& e) {
    throw StorageRefused(fmt::format("volume {}: fanotify mark: {}", path.string(), e.what()));
  }
}

sg_storage_guest StorageDatapath::Impl::Admit(const GuestStorage& g) {
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

void StorageDatapath::Impl::WriteGuestMeta(const Guest& g) {
  sg_storage_guest_meta meta{};
  meta.datasets = g.storage.datasets;
  meta.cgroup_id = g.cgroup_id;
  CopyName(meta.name, g.storage.name);
  CopyName(meta.cgroup_name, g.cgroup_name);
  UpdateElem(Fd(skel->maps.sg_storage_guest_meta), &g.id, &meta, "sg_storage_guest_meta");
  WriteState();
}

void StorageDatapath::Impl::DeleteGuestEntries(std::uint32_t guest_id) {
  const int fd = Fd(skel->maps.sg_storage_guests);
  std::vector<std::uint64_t> doomed;
  ForEach<std::uint64_t, sg_storage_guest>(fd,
                                           [&](const std::uint64_t& k, const sg_storage_guest& g) {
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
  UpdateElem(m.Fd(m.skel->maps.sg_storage_pending), &key, &entry, "sg_storage_pending");
  // The pending entry is in place before this check, so a cgroup created meanwhile is caught by
  // cgroup_mkdir; one that already exists is registered here.
  const fs::path dir = m.options.machine_cgroup / cgroup_name;
  if (fs::is_directory(dir)) {
    const std::uint64_t id = CgroupId(dir);
    UpdateElem(m.Fd(m.skel->maps.sg_storage_guests), &id, &entry, "sg_storage_guests");
  }
}

void StorageDatapath::RegisterGuestCgroup(std::uint64_t cgroup_id, const GuestStorage& guest) {
  Impl& m = *impl_;
  const sg_storage_guest entry = m.Admit(guest);
  auto& g = m.guests[guest.name];
  g.cgroup_id = cgroup_id;
  m.WriteGuestMeta(g);
  UpdateElem(m.Fd(m.skel->maps.sg_storage_guests), &cgroup_id, &entry, "sg_storage_guests");
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
      found.push_back(
          fmt::format("{} ({}) protected with dataset #{}", a.name, a.why, vol.dataset));
      changed = true;
    }
  }
  if (changed) {
    m.digests[kTableVolumes] = TableDigest(m.expected, kTableVolumes);
    m.WriteState();
  }
  return found;
}

std::vector<StorageDatapath::ExportFinding> StorageDatapath::GuardExports(
    const fs::path& configfs) {
  Impl& m = *impl_;
  std::vector<ExportFinding> found;
  std::set<std::string> still;
  for (const auto& ns : NvmetNamespaces(configfs)) {
    if (!ns.enabled || ns.device_path.empty()) continue;
    VolumeId id;
    try {
      id = KernelVolumeId(ns.device_path, m.status.btrfs_subvolumes);
    } catch (const std::exception&) {
      continue;  // a path that no longer resolves serves nothing of ours
    }
    const auto v = m.volumes.find({id.dev, id.ino});
    if (v == m.volumes.end()) continue;
    const std::string where = ns.dir.string();
    still.insert(where);
    if (m.exports_reported.contains(where)) continue;
    ExportFinding f{.where = where,
                    .volume = ns.device_path.string(),
                    .dataset = m.DatasetName(v->second.dataset)};
    if (v->second.dataset < SG_MAX_DATASETS &&
        (m.cfg.enforce_mask & (std::uint64_t{1} << v->second.dataset))) {
      try {
        DisableNvmetNamespace(ns);
        f.disabled = true;
      } catch (const std::exception& e) {
        f.error = e.what();
      }
    }
    if (!f.disabled) m.exports_reported.insert(where);
    found.push_back(std::move(f));
  }
  std::erase_if(m.exports_reported, [&](const std::string& w) { return !still.contains(w); });
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

}  // namespace sovguard::storage
