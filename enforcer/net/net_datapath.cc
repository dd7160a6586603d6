#include "enforcer/net/net_datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <numeric>
#include <utility>

#include "base/unique_fd.h"
#include "bpf/net/sg_net.skel.h"
#include "enforcer/net/table_digest.h"
#include "enforcer/net/tables.h"
#include "enforcer/net/tc_netlink.h"

namespace sovguard::net {
namespace {

using base::UniqueFd;
using bpf_feature::UpdateElem;
using bpf_feature::UpdateMany;
using detail::InNetns;
using detail::InNetnsResult;
using detail::kTcHandle;
using detail::kTcPriority;

struct SkelDeleter {
  void operator()(sg_net* s) const { sg_net__destroy(s); }
};
using Skel = std::unique_ptr<sg_net, SkelDeleter>;

UniqueFd CreateMap(bpf_map_type type, const char* name, std::uint32_t key_size,
                   std::uint32_t value_size, std::uint32_t max_entries, std::uint32_t flags) {
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = flags);
  int fd = bpf_map_create(type, name, key_size, value_size, max_entries, &opts);
  if (fd < 0) throw DatapathError(std::string("bpf_map_create ") + name, -fd);
  return UniqueFd(fd);
}

std::string IfName(std::uint32_t ifindex) {
  char buf[IF_NAMESIZE] = {};
  return ::if_indextoname(ifindex, buf) ? std::string(buf) : std::string();
}

}  // namespace

void NetDatapath::RingBufferDeleter::operator()(::ring_buffer* rb) const {
  ring_buffer__free(rb);
}

NetDatapath::NetDatapath(NetDatapathOptions options) : options_(std::move(options)) {
  auto skel =
      bpf_feature::OpenSkeleton<Skel, sg_net__create_skeleton>("sg_net", options_.program_object);
  // The configuration, guest index and entries live in .bss: pinned with the maps.
  if (!options_.pin_dir.empty())
    bpf_feature::SetPinPaths(skel->obj, options_.pin_dir, bpf_feature::InternalMaps::kPinned);
  if (int err = sg_net__load(skel.get()); err)
    throw DatapathError("load sg_net (verifier or map creation)", -err);
  skel->bss->sg_cfg.events_per_sec = options_.events_per_sec;
  skel->bss->sg_cfg.event_burst = options_.event_burst;
  auto* rb = ring_buffer__new(
      bpf_map__fd(skel->maps.sg_events),
      [](void* ctx, void* data, size_t size) -> int {
        auto* self = static_cast<NetDatapath*>(ctx);
        if (size < sizeof(sg_net_event) || !self->handler_) return 0;
        sg_net_event ev;
        std::memcpy(&ev, data, sizeof(ev));
        (*self->handler_)(ev);
        return 0;
      },
      this, nullptr);
  if (!rb) throw DatapathError("ring_buffer__new sg_events", errno);
  events_.reset(rb);
  barrier_.Wait(bpf_map__fd(skel->maps.sg_rcu_barrier));
  slot_used_.assign(SG_MAX_GUESTS, false);
  const auto state = bpf_feature::ReadPinnedState<sg_net_state>(
      bpf_map__fd(skel->maps.sg_state), "sg_state",
      {.owner = "datapath state", .abi_name = "ABI version", .version = SG_ABI_VERSION},
      options_.pin_dir);
  skel_ = skel.release();
  // Adopted pinned maps may already hold an active generation from a predecessor.
  const std::uint32_t active = skel_->bss->sg_cfg.active_gen & (SG_NET_GENERATIONS - 1);
  std::uint32_t id = 0;
  policy_loaded_ = bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sg_policy_outer), &active, &id) == 0;
  if (state.abi_version != 0) {
    swaps_ = state.swaps;
    std::memcpy(digest_.data(), state.policy_digest, digest_.size());
    for (std::size_t i = 0; i < table_digests_.size(); ++i)
      std::memcpy(table_digests_[i].data(), state.table_digest[i], 32);
    if (policy_loaded_) {
      const auto outers = Outers();
      for (std::size_t i = 0; i < table_ids_.size(); ++i)
        bpf_map_lookup_elem(outers[i], &active, &table_ids_[i]);  // 0 if missing: Verify says so
    }
  } else {
    WriteState();
  }
}

std::array<int, SG_NET_TABLES> NetDatapath::Outers() const {
  return {bpf_map__fd(skel_->maps.sg_v4_dir_outer), bpf_map__fd(skel_->maps.sg_v4_l2_outer),
          bpf_map__fd(skel_->maps.sg_v6_lpm_outer), bpf_map__fd(skel_->maps.sg_v6_l1_outer),
          bpf_map__fd(skel_->maps.sg_v6_l2_outer),  bpf_map__fd(skel_->maps.sg_classes_outer),
          bpf_map__fd(skel_->maps.sg_policy_outer), bpf_map__fd(skel_->maps.sg_v6_l3_outer)};
}

void NetDatapath::WriteState() {
  sg_net_state state{};
  state.abi_version = SG_ABI_VERSION;
  state.policy_loaded = policy_loaded_;
  state.swaps = swaps_;
  std::memcpy(state.policy_digest, digest_.data(), digest_.size());
  for (std::size_t i = 0; i < table_digests_.size(); ++i)
    std::memcpy(state.table_digest[i], table_digests_[i].data(), 32);
  const std::uint32_t zero = 0;
  UpdateElem(bpf_map__fd(skel_->maps.sg_state), &zero, &state, "sg_state");
}

NetDatapath::~NetDatapath() {
  if (options_.detach_on_destroy) {
    try {
      Detach();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sovguard datapath: detach on destroy: %s\n", e.what());
    }
  }
  events_.reset();
  sg_net__destroy(skel_);
}

void NetDatapath::Unpin() {
  if (options_.pin_dir.empty()) return;
  if (int err = bpf_object__unpin_maps(skel_->obj, nullptr); err)
    throw DatapathError("unpin maps from " + options_.pin_dir, -err);
}

int NetDatapath::program_fd() const {
  return bpf_program__fd(skel_->progs.sg_net_egress);
}

ProgramIdentity NetDatapath::program() const {
  return bpf_feature::ProgramByFd(program_fd());
}

void NetDatapath::ApplyPolicy(const policy::CompiledPolicy& policy) {
  // The tables are produced and written a chunk at a time, and hashed as written: the 32 MiB IPv4
  // direct table and the IPv6 levels never exist whole in this process (start-up peak).
  const NetTablePlan plan(policy, options_.max_v6_nodes);
  constexpr std::size_t kChunkBytes = 1u << 20;
  // In Outers() (= sg_net_state.table_digest) order.
  struct MapSpec {
    const char* name;
    std::uint32_t flags;
  };
  static constexpr MapSpec kMaps[SG_NET_TABLES] = {{"sg_v4_dir", 0},
                                                   {"sg_v4_l2", BPF_F_INNER_MAP},
                                                   {"sg_v6_lpm", BPF_F_NO_PREALLOC},
                                                   {"sg_v6_l1", 0},
                                                   {"sg_v6_l2", BPF_F_INNER_MAP},
                                                   {"sg_classes", 0},
                                                   {"sg_policy", 0},
                                                   {"sg_v6_l3", 0}};
  std::array<UniqueFd, SG_NET_TABLES> inner;
  TableDigests digests{};
  std::vector<std::uint32_t> keys;
  for (std::size_t i = 0; i < SG_NET_TABLES; ++i) {
    const auto table = static_cast<NetTable>(i);
    const char* name = kMaps[i].name;
    if (table == NetTable::kV6Lpm) {
      const auto& entries = plan.v6_trie();
      inner[i] = CreateMap(BPF_MAP_TYPE_LPM_TRIE, name, sizeof(sg_lpm_v6_key),
                           sizeof(std::uint32_t), plan.Entries(table), kMaps[i].flags);
      for (const auto& e : entries) UpdateElem(inner[i].Get(), &e.key, &e.class_id, name);
      digests[i] = DigestTrie(entries);
      continue;
    }
    const std::size_t value_size = NetTablePlan::ValueSize(table);
    inner[i] =
        CreateMap(BPF_MAP_TYPE_ARRAY, name, sizeof(std::uint32_t),
                  static_cast<std::uint32_t>(value_size), plan.Entries(table), kMaps[i].flags);
    TableHasher h;
    plan.ForEachChunk(
        table, kChunkBytes,
        [&](std::uint32_t first, std::uint32_t count, std::span<const std::uint8_t> values) {
          keys.resize(count);
          std::iota(keys.begin(), keys.end(), first);
          UpdateMany(inner[i].Get(), keys.data(), sizeof(std::uint32_t), values.data(), value_size,
                     count, name);
          h.Update(values.data(), values.size());
        });
    h.Zeros(std::size_t{plan.Entries(table) - plan.Used(table)} * value_size);
    digests[i] = h.Final();
  }

  const std::uint32_t active =
      __atomic_load_n(&skel_->bss->sg_cfg.active_gen, __ATOMIC_ACQUIRE) & (SG_NET_GENERATIONS - 1);
  const std::uint32_t next = active ^ 1;
  const auto outers = Outers();
  std::array<std::uint32_t, SG_NET_TABLES> ids{};
  for (std::size_t i = 0; i < SG_NET_TABLES; ++i) {
    const int fd = inner[i].Get();
    UpdateElem(outers[i], &next, &fd, "generation slot");
    ids[i] = bpf_feature::MapId(fd);
  }
  // The switch: one aligned store the program reads once per frame.
  __atomic_store_n(&skel_->bss->sg_cfg.active_gen, next, __ATOMIC_RELEASE);
  Barrier(active);

  datasets_ = policy.datasets;
  digest_ = policy.digest;
  table_digests_ = digests;
  table_ids_ = ids;
  policy_loaded_ = true;
  ++swaps_;
  WriteState();
}

// Waits until no frame can still be using generation old_gen, then frees it. Every frame that read
// the old active_gen runs inside one RCU read section, and SynchronizeRcu outlasts them all.
void NetDatapath::Barrier(std::uint32_t old_gen) {
  const int policy_outer = bpf_map__fd(skel_->maps.sg_policy_outer);
  std::uint32_t id = 0;
  if (bpf_map_lookup_elem(policy_outer, &old_gen, &id) != 0) return;  // slot was empty
  SynchronizeRcu();
  for (int outer : Outers()) {
    int err = bpf_map_delete_elem(outer, &old_gen);
    if (err && err != -ENOENT) throw DatapathError("free old generation", -err);
  }
}

// Writes the guest's configuration into the entry not in use, then points its index there. The
// entry written last time may still be read by frames that fetched the index before: callers
// that rewrite a published guest wait a grace period afterwards (SynchronizeRcu).
sg_net_guest NetDatapath::GuestEntry(const Guest& g) const {
  sg_net_guest v{};
  v.datasets = g.config.datasets;
  v.slot = g.slot;
  std::memcpy(v.ds, g.positions.data(), sizeof(v.ds));
  for (std::uint8_t p = 0; p < SG_MAX_GUEST_DATASETS; ++p)
    if (g.positions[p] != SG_GUEST_DS_NONE) v.n_ds = static_cast<std::uint8_t>(p + 1);
  for (std::size_t i = 0; i < g.config.allowed_ethertypes.size(); ++i)
    v.ethertypes[i] = g.config.allowed_ethertypes[i];
  return v;
}

void NetDatapath::WriteMeta(const Guest& g) {
  sg_net_guest_meta m{};
  m.ifindex = g.config.ifindex;
  m.flags =
      (g.config.attach ? SG_GUEST_META_ATTACH : 0) | (g.created_qdisc ? SG_GUEST_META_QDISC : 0);
  bpf_feature::CopyName(m.ifname, g.ifname);
  bpf_feature::CopyName(m.name, g.config.name);
  bpf_feature::CopyName(m.netns, g.config.netns);
  UpdateElem(bpf_map__fd(skel_->maps.sg_guest_meta), &g.slot, &m, "sg_guest_meta");
}

bool NetDatapath::TapPresent(const Guest& g) const {
  try {
    const std::string name =
        InNetnsResult(g.config.netns, [&] { return IfName(g.config.ifindex); });
    return !name.empty() && (g.ifname.empty() || name == g.ifname);
  } catch (const DatapathError&) {
    return false;  // the namespace itself is gone
  }
}

void NetDatapath::WriteGuest(Guest& g) {
  const sg_net_guest v = GuestEntry(g);
  const std::uint32_t entry = g.published ? (g.entry ^ 1) : g.slot * 2;
  std::memcpy(&skel_->bss->sg_guest_cfg[entry], &v, sizeof(v));
  __atomic_thread_fence(__ATOMIC_RELEASE);
  PublishIndex(g.config.ifindex, entry + 1);
  g.entry = entry;
  g.published = true;
}

void NetDatapath::PublishIndex(std::uint32_t ifindex, std::uint32_t value) {
  if (ifindex < SG_GUEST_INDEX_DIRECT) {
    __atomic_store_n(&skel_->bss->sg_guest_index[ifindex], value, __ATOMIC_RELEASE);
    return;
  }
  const int fd = bpf_map__fd(skel_->maps.sg_guests);
  if (value) {
    UpdateElem(fd, &ifindex, &value, "sg_guests");
  } else if (int err = bpf_map_delete_elem(fd, &ifindex); err && err != -ENOENT) {
    throw DatapathError("delete sg_guests entry of ifindex " + std::to_string(ifindex), -err);
  }
}

void NetDatapath::SynchronizeRcu() {
  barrier_.Wait(bpf_map__fd(skel_->maps.sg_rcu_barrier));
}

void NetDatapath::ResetSlotState(std::uint32_t slot, std::uint32_t position) {
  const std::uint32_t idx = slot * SG_MAX_GUEST_DATASETS + position;
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) throw DatapathError("libbpf_num_possible_cpus", -ncpu);
  std::vector<sg_net_counters> zeros(static_cast<std::size_t>(ncpu));
  UpdateElem(bpf_map__fd(skel_->maps.sg_counters), &idx, zeros.data(), "sg_counters");
  const sg_net_quota q{};
  UpdateElem(bpf_map__fd(skel_->maps.sg_quotas), &idx, &q, "sg_quotas");
}

std::uint32_t NetDatapath::AddGuest(const GuestConfig& config) {
  if (config.ifindex == 0) throw std::invalid_argument("guest " + config.name + ": ifindex 0");
  if (guests_.count(config.ifindex))
    throw std::invalid_argument("guest " + config.name + ": ifindex " +
                                std::to_string(config.ifindex) + " already registered");
  if (std::popcount(config.datasets) > SG_MAX_GUEST_DATASETS)
    throw std::invalid_argument("guest " + config.name + ": holds " +
                                std::to_string(std::popcount(config.datasets)) +
                                " datasets, at most " + std::to_string(SG_MAX_GUEST_DATASETS));
  if (config.allowed_ethertypes.size() > SG_MAX_GUEST_ETHERTYPES)
    throw std::invalid_argument("guest " + config.name + ": more than " +
                                std::to_string(SG_MAX_GUEST_ETHERTYPES) + " allowed ethertypes");
  std::uint32_t slot = 0;
  while (slot < SG_MAX_GUESTS && slot_used_[slot]) ++slot;
  if (slot == SG_MAX_GUESTS) throw DatapathError("guest " + config.name + ": no free slot", ENOSPC);

  Guest g;
  g.config = config;
  g.slot = slot;
  g.positions.fill(SG_GUEST_DS_NONE);
  std::uint32_t pos = 0;
  for (std::uint8_t d = 0; d < SG_MAX_DATASETS; ++d)
    if ((config.datasets >> d) & 1) g.positions[pos++] = d;
  for (std::uint32_t p = 0; p < SG_MAX_GUEST_DATASETS; ++p) ResetSlotState(slot, p);
  const sg_net_ratelimit rl{};
  UpdateElem(bpf_map__fd(skel_->maps.sg_ratelimit), &slot, &rl, "sg_ratelimit");
  try {
    g.ifname = InNetnsResult(config.netns, [&] { return IfName(config.ifindex); });
  } catch (const DatapathError&) {
    if (config.attach) throw;
  }
  // Bookkeeping first: a successor finds every published guest's name and namespace.
  WriteMeta(g);
  WriteGuest(g);
  slot_used_[slot] = true;
  if (config.attach) {
    try {
      AttachTc(g);  // replaces a default-deny filter of the same tap in one step
      if (auto d = deny_only_.find(config.ifindex); d != deny_only_.end()) {
        g.created_qdisc = g.created_qdisc || d->second.created_qdisc;
        deny_only_.erase(d);
      }
      WriteMeta(g);  // created_qdisc
    } catch (...) {
      PublishIndex(config.ifindex, 0);
      bpf_map_delete_elem(bpf_map__fd(skel_->maps.sg_guest_meta), &slot);
      slot_used_[slot] = false;
      throw;
    }
  }
  guests_.emplace(config.ifindex, std::move(g));
  return slot;
}

void NetDatapath::AttachDefaultDeny(std::uint32_t ifindex) {
  if (guests_.count(ifindex) != 0 || deny_only_.count(ifindex) != 0) return;
  Guest g;
  g.config.ifindex = ifindex;
  g.config.name = "(unclaimed tap)";
  AttachTc(g);  // no guest entry for this ifindex: the program drops every frame
  deny_only_.emplace(ifindex, std::move(g));
}

void NetDatapath::ForgetDefaultDeny(std::uint32_t ifindex, bool detach) {
  auto it = deny_only_.find(ifindex);
  if (it == deny_only_.end()) return;
  if (detach) DetachTc(it->second);
  deny_only_.erase(it);
}

void NetDatapath::SetGuestDatasets(std::uint32_t ifindex, std::uint64_t datasets,
                                   const std::optional<std::vector<std::uint16_t>>& ethertypes) {
  auto it = guests_.find(ifindex);
  if (it == guests_.end())
    throw std::invalid_argument("no guest on ifindex " + std::to_string(ifindex));
  if (ethertypes && ethertypes->size() > SG_MAX_GUEST_ETHERTYPES)
    throw std::invalid_argument("guest " + it->second.config.name + ": more than " +
                                std::to_string(SG_MAX_GUEST_ETHERTYPES) + " allowed ethertypes");
  if (std::popcount(datasets) > SG_MAX_GUEST_DATASETS)
    throw std::invalid_argument("guest " + it->second.config.name + ": more than " +
                                std::to_string(SG_MAX_GUEST_DATASETS) + " datasets");
  Guest g = it->second;
  // Keep positions (and so counters) of datasets still held; new ones take freed positions.
  for (auto& d : g.positions)
    if (d != SG_GUEST_DS_NONE && !((datasets >> d) & 1)) d = SG_GUEST_DS_NONE;
  for (std::uint8_t d = 0; d < SG_MAX_DATASETS; ++d) {
    if (!((datasets >> d) & 1)) continue;
    if (std::find(g.positions.begin(), g.positions.end(), d) != g.positions.end()) continue;
    // Prefer a position unused in the configuration frames may still be reading.
    auto free_pos = g.positions.end();
    for (std::size_t p = 0; p < g.positions.size(); ++p)
      if (g.positions[p] == SG_GUEST_DS_NONE &&
          (free_pos == g.positions.end() || it->second.positions[p] == SG_GUEST_DS_NONE)) {
        free_pos = g.positions.begin() + static_cast<std::ptrdiff_t>(p);
        if (it->second.positions[p] == SG_GUEST_DS_NONE) break;
      }
    const auto p = static_cast<std::uint32_t>(free_pos - g.positions.begin());
    ResetSlotState(g.slot, p);
    *free_pos = d;
  }
  g.config.datasets = datasets;
  if (ethertypes) g.config.allowed_ethertypes = *ethertypes;
  WriteGuest(g);
  it->second = std::move(g);
  SynchronizeRcu();  // the entry just retired may be rewritten by the next change
}

void NetDatapath::RemoveGuest(std::uint32_t ifindex) {
  auto it = guests_.find(ifindex);
  if (it == guests_.end())
    throw std::invalid_argument("no guest on ifindex " + std::to_string(ifindex));
  DetachTc(it->second);
  PublishIndex(ifindex, 0);
  if (int err = bpf_map_delete_elem(bpf_map__fd(skel_->maps.sg_guest_meta), &it->second.slot);
      err && err != -ENOENT)
    throw DatapathError("delete sg_guest_meta of slot " + std::to_string(it->second.slot), -err);
  SynchronizeRcu();  // the slot's entries may be reused by the next guest
  slot_used_[it->second.slot] = false;
  guests_.erase(it);
}

void NetDatapath::Detach() {
  std::string first_error;
  for (auto& [ifindex, g] : deny_only_) {
    try {
      DetachTc(g);
    } catch (const std::exception& e) {
      if (first_error.empty()) first_error = e.what();
    }
  }
  deny_only_.clear();
  const int meta_fd = bpf_map__fd(skel_->maps.sg_guest_meta);
  // As RemoveGuest for each guest, with one grace period for all of them at the end (no slot is
  // reused before it).
  while (!guests_.empty()) {
    auto it = guests_.begin();
    auto step = [&](auto&& f) {
      try {
        f();
      } catch (const std::exception& e) {
        if (first_error.empty()) first_error = e.what();
      }
    };
    step([&] { DetachTc(it->second); });
    // Even if the filter stayed: unpublished, its tap is unknown to the program (all dropped).
    step([&] { PublishIndex(it->first, 0); });
    step([&] {
      if (int err = bpf_map_delete_elem(meta_fd, &it->second.slot); err && err != -ENOENT)
        throw DatapathError("delete sg_guest_meta of slot " + std::to_string(it->second.slot),
                            -err);
    });
    slot_used_[it->second.slot] = false;
    guests_.erase(it);
  }
  try {
    SynchronizeRcu();
  } catch (const std::exception& e) {
    if (first_error.empty()) first_error = e.what();
  }
  if (!first_error.empty()) throw std::runtime_error("detach: " + first_error);
}

void NetDatapath::AttachTc(Guest& g) {
  const int prog = program_fd();
  InNetns(g.config.netns, [&] {
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(g.config.ifindex),
                .attach_point = BPF_TC_INGRESS);
    int err = detail::HasClsact(g.config.ifindex) ? -EEXIST : bpf_tc_hook_create(&hook);
    if (err && err != -EEXIST)
      throw DatapathError("create clsact qdisc on ifindex " + std::to_string(g.config.ifindex),
                          -err);
    const bool created = err == 0;
    LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
                .priority = kTcPriority);
    err = bpf_tc_attach(&hook, &opts);
    if (err) {
      if (created) {
        hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
        bpf_tc_hook_destroy(&hook);
      }
      throw DatapathError("attach tc ingress filter on ifindex " + std::to_string(g.config.ifindex),
                          -err);
    }
    g.created_qdisc = g.created_qdisc || created;  // a predecessor's qdisc stays ours
  });
  g.attached = true;
}

void NetDatapath::DetachTc(Guest& g) {
  if (!g.attached) return;
  InNetns(g.config.netns, [&] {
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(g.config.ifindex),
                .attach_point = BPF_TC_INGRESS);
    LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
    int err = bpf_tc_detach(&hook, &opts);
    // The tap may already be gone with its guest (and its filters with it).
    if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL)
      throw DatapathError("detach tc filter from ifindex " + std::to_string(g.config.ifindex),
                          -err);
    if (g.created_qdisc) {
      hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      err = bpf_tc_hook_destroy(&hook);
      if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL)
        throw DatapathError("remove clsact qdisc from ifindex " + std::to_string(g.config.ifindex),
                            -err);
    }
  });
  g.attached = false;
}

TestRunResult NetDatapath::TestRun(std::span<const std::uint8_t> frame, std::uint32_t repeat,
                                   std::uint32_t ifindex) const {
  __sk_buff ctx{};
  ctx.ifindex = ifindex;
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
              .data_size_in = static_cast<std::uint32_t>(frame.size()),
              .repeat = static_cast<int>(repeat));
  if (ifindex > 1) {
    opts.ctx_in = &ctx;
    opts.ctx_size_in = sizeof(ctx);
  }
  int err = bpf_prog_test_run_opts(program_fd(), &opts);
  if (err)
    throw DatapathError(
        "BPF_PROG_TEST_RUN sg_net_egress on a " + std::to_string(frame.size()) + "-byte frame",
        -err);
  return {static_cast<int>(opts.retval), opts.duration};
}

}  // namespace sovguard::net

static_assert(sovguard::bpf_feature::Feature<sovguard::net::NetDatapath>);
