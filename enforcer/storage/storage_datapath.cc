#include "enforcer/storage/storage_datapath.h"

#include <arpa/inet.h>

#include <fmt/format.h>
#include <cerrno>

#include "enforcer/storage/storage_datapath_impl.h"

namespace sovguard::storage {

namespace {

std::string DevText(std::uint64_t kdev) {
  return fmt::format("{}:{}", kdev >> 20, kdev & 0xfffff);
}

}  // namespace

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

const std::vector<StorageDatapath::ProtectedVolume>& StorageDatapath::ReleasedStaleVolumes() const {
  return impl_->released_volumes;
}

const std::vector<std::string>& StorageDatapath::OverlayNotCopiedUp() const {
  return impl_->status.overlay_not_copied_up;
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

std::string StorageDatapath::Impl::DatasetName(std::uint32_t index) const {
  if (policy && index < policy->datasets.size()) return policy->datasets[index].id;
  if (!policy && index < adopted_dataset_ids.size() && !adopted_dataset_ids[index].empty())
    return adopted_dataset_ids[index];
  return fmt::format("#{}", index);
}

int StorageDatapath::Impl::OnEvent(void* ctx, void* data, size_t size) {
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

}  // namespace sovguard::storage

static_assert(sovguard::bpf_feature::Feature<sovguard::storage::StorageDatapath>);
