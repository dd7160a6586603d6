// Reading the datapath back: per (guest, dataset) counters and quotas, the status, violation
// events from the ring buffer, and their text for logs and sovguardctl.
#include "enforcer/net/net_datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <iterator>

#include "base/hex.h"
#include "bpf/net/sg_net.skel.h"

namespace sovguard::net {

DatasetCounters NetDatapath::ReadCounters(std::uint32_t ifindex, std::uint8_t dataset) const {
  auto it = guests_.find(ifindex);
  if (it == guests_.end())
    throw std::invalid_argument("no guest on ifindex " + std::to_string(ifindex));
  const auto& pos = it->second.positions;
  auto p = std::find(pos.begin(), pos.end(), dataset);
  if (p == pos.end())
    throw std::invalid_argument("guest " + it->second.config.name + " does not hold dataset " +
                                std::to_string(dataset));
  const std::uint32_t idx =
      it->second.slot * SG_MAX_GUEST_DATASETS + static_cast<std::uint32_t>(p - pos.begin());
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) throw DatapathError("libbpf_num_possible_cpus", -ncpu);
  std::vector<sg_net_counters> per_cpu(static_cast<std::size_t>(ncpu));
  if (int err = bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sg_counters), &idx, per_cpu.data()))
    throw DatapathError("read sg_counters", -err);
  DatasetCounters c;
  for (const auto& v : per_cpu) {
    c.packets += v.packets;
    c.bytes += v.bytes;
    c.dropped_packets += v.dropped_packets;
    c.dropped_bytes += v.dropped_bytes;
    c.would_drop_packets += v.would_drop_packets;
    c.would_drop_bytes += v.would_drop_bytes;
  }
  sg_net_quota q{};
  if (int err = bpf_map_lookup_elem_flags(bpf_map__fd(skel_->maps.sg_quotas), &idx, &q, BPF_F_LOCK))
    throw DatapathError("read sg_quotas", -err);
  c.quota_used_bytes = q.used_bytes;
  c.quota_exceeded = q.exceeded;
  return c;
}

NetStatus NetDatapath::Status() const {
  NetStatus s;
  s.policy_loaded = policy_loaded_;
  s.active_generation = __atomic_load_n(&skel_->bss->sg_cfg.active_gen, __ATOMIC_ACQUIRE);
  s.swaps = swaps_;
  s.policy_digest = digest_;
  for (const auto& [ifindex, g] : guests_) {
    GuestStatus gs;
    gs.name = g.config.name;
    gs.ifindex = ifindex;
    gs.slot = g.slot;
    gs.dataset_mask = g.config.datasets;
    gs.attached = g.attached;
    sg_net_ratelimit rl{};
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sg_ratelimit), &g.slot, &rl) == 0)
      gs.events_suppressed = rl.suppressed;
    for (std::uint8_t d : g.positions) {
      if (d == SG_GUEST_DS_NONE) continue;
      DatasetStatus ds;
      ds.index = d;
      if (d < datasets_.size()) {
        ds.id = datasets_[d].id;
        ds.mode = datasets_[d].mode;
        ds.egress = datasets_[d].egress;
      }
      ds.counters = ReadCounters(ifindex, d);
      gs.datasets.push_back(std::move(ds));
    }
    s.guests.push_back(std::move(gs));
  }
  return s;
}

int NetDatapath::PollEvents(int timeout_ms,
                            const std::function<void(const sg_net_event&)>& handler) {
  std::function<void(const sg_net_event&)> h = handler;
  handler_ = &h;
  int n = ring_buffer__poll(events_.get(), timeout_ms);
  handler_ = nullptr;
  if (n == -EINTR) return 0;
  if (n < 0) throw DatapathError("ring_buffer__poll sg_events", -n);
  return n;
}

std::string CountryText(std::uint16_t country) {
  if (country == SG_COUNTRY_UNKNOWN) return "--";
  return std::string{static_cast<char>(country >> 8), static_cast<char>(country & 0xff)};
}

std::string FormatEvent(const sg_net_event& ev) {
  static const char* kReasons[] = {
      "?", "residency", "unknown-destination", "non-ip", "malformed", "quota", "no-policy"};
  char dst[64] = "-";
  if (ev.family == 4) {
    std::snprintf(dst, sizeof(dst), "%u.%u.%u.%u", ev.dst[0], ev.dst[1], ev.dst[2], ev.dst[3]);
  } else if (ev.family == 6) {
    int off = 0;
    for (int i = 0; i < 16; i += 2)
      off += std::snprintf(dst + off, sizeof(dst) - static_cast<std::size_t>(off), "%s%x",
                           i ? ":" : "", (ev.dst[i] << 8) | ev.dst[i + 1]);
  }
  const char* reason = ev.reason < std::size(kReasons) ? kReasons[ev.reason] : "?";
  char line[256];
  std::snprintf(line, sizeof(line),
                "guest_slot=%u ifindex=%u dataset=%u violating=%#llx dst=%s country=%s class=%u "
                "verdict=%s reason=%s ethertype=%#06x proto=%u len=%u",
                ev.guest_slot, ev.ifindex, ev.dataset,
                static_cast<unsigned long long>(ev.violating), dst, CountryText(ev.country).c_str(),
                ev.class_id, ev.verdict == SG_VERDICT_DROP ? "drop" : "audit", reason, ev.ethertype,
                ev.l4proto, ev.len);
  return line;
}

std::string FormatStatus(const NetStatus& s) {
  std::string out;
  char line[512];
  if (!s.policy_loaded) {
    out += "network datapath: no policy loaded (all guest traffic but ARP/ND/DHCP is dropped)\n";
  } else {
    const std::string digest = base::ToHex(s.policy_digest.data(), 8);
    std::snprintf(line, sizeof(line),
                  "network datapath: policy %s..., generation %u, %llu swap(s)\n", digest.c_str(),
                  s.active_generation, static_cast<unsigned long long>(s.swaps));
    out += line;
  }
  for (const auto& g : s.guests) {
    std::snprintf(line, sizeof(line), "guest %s: ifindex %u, slot %u, %s, events suppressed %llu\n",
                  g.name.c_str(), g.ifindex, g.slot, g.attached ? "attached" : "NOT attached",
                  static_cast<unsigned long long>(g.events_suppressed));
    out += line;
    if (g.datasets.empty()) out += "  holds no dataset: traffic unrestricted\n";
    for (const auto& d : g.datasets) {
      std::string quota = "no quota";
      if (d.egress) {
        quota = "quota " + std::to_string(d.counters.quota_used_bytes) + "/" +
                std::to_string(d.egress->bytes) + " B per " +
                std::to_string(d.egress->window_seconds) + " s, " +
                std::to_string(d.counters.quota_exceeded) + " over";
      }
      const auto& c = d.counters;
      std::snprintf(line, sizeof(line),
                    "  dataset %s [#%u] %s: passed %llu pkts/%llu B, dropped %llu pkts/%llu B, "
                    "would-drop %llu pkts/%llu B, %s\n",
                    d.id.empty() ? "?" : d.id.c_str(), d.index,
                    d.mode == policy::Mode::kEnforce ? "ENFORCE" : "AUDIT",
                    static_cast<unsigned long long>(c.packets),
                    static_cast<unsigned long long>(c.bytes),
                    static_cast<unsigned long long>(c.dropped_packets),
                    static_cast<unsigned long long>(c.dropped_bytes),
                    static_cast<unsigned long long>(c.would_drop_packets),
                    static_cast<unsigned long long>(c.would_drop_bytes), quota.c_str());
      out += line;
    }
  }
  return out;
}

}  // namespace sovguard::net
