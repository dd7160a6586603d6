// Taking over a predecessor's pinned state (Adopt), and comparing what the kernel runs with what
// this process wrote (VerifyAttachments) and putting back what it can (Repair).
#include "enforcer/net/net_datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "base/hex.h"
#include "base/unique_fd.h"
#include "bpf/net/sg_net.skel.h"
#include "enforcer/net/table_digest.h"
#include "enforcer/net/tc_netlink.h"

namespace sovguard::net {
namespace {

using base::UniqueFd;
using detail::InNetns;
using detail::InNetnsResult;
using detail::kTcHandle;
using detail::kTcPriority;

}  // namespace

std::vector<TcFilterInfo> ListIngressFilters(std::uint32_t ifindex, const std::string& netns) {
  return InNetnsResult(netns, [&] { return detail::DumpIngressFilters(ifindex); });
}

std::vector<AdoptedGuest> NetDatapath::Adopt() {
  if (options_.pin_dir.empty())
    throw std::logic_error("NetDatapath::Adopt needs pin_dir (nothing to adopt from)");
  if (!guests_.empty()) throw std::logic_error("NetDatapath::Adopt must come before AddGuest");
  std::vector<std::pair<std::uint32_t, std::uint32_t>> published;  // ifindex, entry + 1
  for (std::uint32_t i = 1; i < SG_GUEST_INDEX_DIRECT; ++i)
    if (const std::uint32_t v = __atomic_load_n(&skel_->bss->sg_guest_index[i], __ATOMIC_ACQUIRE))
      published.emplace_back(i, v);
  {
    const int fd = bpf_map__fd(skel_->maps.sg_guests);
    std::uint32_t key = 0, next = 0;
    const void* prev = nullptr;
    for (std::uint32_t n = 0; n <= SG_MAX_GUESTS; ++n) {
      if (bpf_map_get_next_key(fd, prev, &next) != 0) break;
      std::uint32_t v = 0;
      if (bpf_map_lookup_elem(fd, &next, &v) == 0 && v) published.emplace_back(next, v);
      key = next;
      prev = &key;
    }
  }
  const int meta_fd = bpf_map__fd(skel_->maps.sg_guest_meta);
  adopted_.clear();
  for (const auto& [ifindex, value] : published) {
    const std::uint32_t entry = value - 1;
    const bool valid = value >= 1 && entry < SG_MAX_GUESTS * 2;
    const sg_net_guest cfg = valid ? skel_->bss->sg_guest_cfg[entry] : sg_net_guest{};
    if (!valid || cfg.slot != entry / 2 || slot_used_[cfg.slot]) {
      // Not an entry we can own: the program must not keep using it. Unpublished, the interface
      // is unknown to the program and all its frames are dropped (fail closed).
      std::fprintf(stderr,
                   "sovguard datapath: adopt: ifindex %u has an inconsistent entry %u: dropped\n",
                   ifindex, value);
      PublishIndex(ifindex, 0);
      continue;
    }
    Guest g;
    g.slot = cfg.slot;
    g.entry = entry;
    g.published = true;
    std::memcpy(g.positions.data(), cfg.ds, sizeof(cfg.ds));
    g.config.ifindex = ifindex;
    g.config.datasets = cfg.datasets;
    for (std::uint16_t e : cfg.ethertypes)
      if (e) g.config.allowed_ethertypes.push_back(e);
    sg_net_guest_meta meta{};
    if (bpf_map_lookup_elem(meta_fd, &g.slot, &meta) == 0) {
      g.config.name = bpf_feature::NameText(meta.name);
      g.config.netns = bpf_feature::NameText(meta.netns);
      g.ifname = bpf_feature::NameText(meta.ifname);
      g.config.attach = meta.flags & SG_GUEST_META_ATTACH;
      g.created_qdisc = meta.flags & SG_GUEST_META_QDISC;
    } else {
      g.config.attach = true;  // unknown: assume the filter is wanted (fail closed)
    }
    slot_used_[g.slot] = true;
    AdoptedGuest a;
    a.slot = g.slot;
    a.tap_present = TapPresent(g);
    if (a.tap_present) {
      try {
        for (auto& f : ListIngressFilters(ifindex, g.config.netns))
          if (f.priority == kTcPriority && f.handle == kTcHandle && f.kind == "bpf")
            a.previous_filter = f;
      } catch (const DatapathError&) {
        // listed as missing; the attach below says what is wrong if it matters
      }
      if (g.config.attach) {
        // The predecessor's filter is replaced in one netlink request: the old program runs until
        // the kernel switches to ours (same handle and priority), so no frame goes unchecked.
        try {
          AttachTc(g);
          WriteMeta(g);
          a.attached = true;
        } catch (const std::exception& e) {
          // The predecessor's filter (if any) keeps running; Verify reports it, Repair retries.
          a.error = e.what();
        }
      }
    }
    g.attached = a.attached;
    a.config = g.config;
    guests_.emplace(ifindex, std::move(g));
    adopted_.push_back(std::move(a));
  }
  return adopted_;
}

std::vector<TamperFinding> NetDatapath::VerifyAttachments(VerifyOptions options) const {
  std::vector<TamperFinding> out;
  const ProgramIdentity ours = program();
  for (const auto& [ifindex, g] : guests_) {
    auto finding = [&](TamperKind kind, std::string detail) {
      TamperFinding f;
      f.kind = kind;
      f.object = g.config.name;
      f.guest = g.config.name;
      f.ifindex = ifindex;
      f.detail = std::move(detail);
      return f;
    };
    // The kernel entry the program uses for this tap.
    std::uint32_t index = 0;
    if (ifindex < SG_GUEST_INDEX_DIRECT) {
      index = __atomic_load_n(&skel_->bss->sg_guest_index[ifindex], __ATOMIC_ACQUIRE);
    } else {
      bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sg_guests), &ifindex, &index);
    }
    const sg_net_guest want = GuestEntry(g);
    if (index != g.entry + 1 ||
        std::memcmp(&skel_->bss->sg_guest_cfg[g.entry], &want, sizeof(want)) != 0)
      out.push_back(finding(TamperKind::kGuestEntryAltered,
                            "guest entry " + std::to_string(g.entry) + " (index " +
                                std::to_string(index) + ") differs from what was written"));
    if (!g.config.attach) continue;
    if (!TapPresent(g)) {
      out.push_back(finding(TamperKind::kTapMissing, "tap " + g.ifname + " is gone"));
      continue;
    }
    std::vector<TcFilterInfo> filters;
    try {
      filters = ListIngressFilters(ifindex, g.config.netns);
    } catch (const DatapathError& e) {
      if (e.error() == ENODEV) {
        out.push_back(finding(TamperKind::kTapMissing, e.what()));
        continue;
      }
      throw;
    }
    auto it = std::find_if(filters.begin(), filters.end(), [](const TcFilterInfo& f) {
      return f.priority == kTcPriority && f.handle == kTcHandle && f.kind == "bpf";
    });
    if (it == filters.end()) {
      out.push_back(finding(TamperKind::kFilterMissing,
                            filters.empty() ? "no filter (or no clsact qdisc) on ingress"
                                            : "our filter is gone from ingress"));
      continue;
    }
    if (it->program.id != ours.id) {
      auto f =
          finding(TamperKind::kProgramReplaced,
                  "program " + std::to_string(it->program.id) + " tag " + it->program.tag +
                      " at our filter, expected " + std::to_string(ours.id) + " tag " + ours.tag);
      f.expected = ours;
      f.found = it->program;
      out.push_back(std::move(f));
    }
    for (auto before = filters.begin(); before != it; ++before) {
      auto f = finding(TamperKind::kFilterBypass, "foreign " + before->kind + " filter priority " +
                                                      std::to_string(before->priority) +
                                                      " handle " + std::to_string(before->handle) +
                                                      " runs before ours");
      f.filter = *before;
      f.found = before->program;
      out.push_back(std::move(f));
    }
  }
  if (!policy_loaded_) return out;
  const std::uint32_t active =
      __atomic_load_n(&skel_->bss->sg_cfg.active_gen, __ATOMIC_ACQUIRE) & (SG_NET_GENERATIONS - 1);
  const auto outers = Outers();
  for (std::size_t i = 0; i < SG_NET_TABLES; ++i) {
    TamperFinding f;
    f.table = std::string(kTableNames[i]);
    f.object = f.table;
    std::uint32_t id = 0;
    if (bpf_map_lookup_elem(outers[i], &active, &id) != 0 || id != table_ids_[i]) {
      f.kind = TamperKind::kGenerationAltered;
      f.detail = "generation " + std::to_string(active) + " table " + f.table + " is map " +
                 std::to_string(id) + ", expected " + std::to_string(table_ids_[i]);
      out.push_back(std::move(f));
      continue;
    }
    if (!options.hash_tables) continue;
    UniqueFd fd(bpf_map_get_fd_by_id(id));
    if (!fd) throw DatapathError("open policy table map " + std::to_string(id), errno);
    const Sha256 got = DigestMap(fd.Get());
    if (got != table_digests_[i]) {
      f.kind = TamperKind::kPolicyTableAltered;
      f.detail = "table " + f.table + " sha256 " + base::ToHex(got.data(), 8) + "..., expected " +
                 base::ToHex(table_digests_[i].data(), 8) + "...";
      out.push_back(std::move(f));
    }
  }
  return out;
}

RepairResult NetDatapath::Repair(VerifyOptions options) {
  RepairResult r;
  bool rewrote = false;
  for (auto& f : VerifyAttachments(options)) {
    auto it = guests_.find(f.ifindex);
    bool fixed = false;
    if (it != guests_.end() && !f.guest.empty() && f.table.empty()) {
      Guest& g = it->second;
      switch (f.kind) {
        case TamperKind::kFilterMissing:
        case TamperKind::kProgramReplaced:
          AttachTc(g);
          WriteMeta(g);
          fixed = true;
          break;
        case TamperKind::kFilterBypass:
          InNetns(g.config.netns, [&] { detail::DeleteIngressFilter(f.ifindex, f.filter); });
          fixed = true;
          break;
        case TamperKind::kGuestEntryAltered:
          WriteGuest(g);
          rewrote = true;
          fixed = true;
          break;
        default:
          break;
      }
    }
    (fixed ? r.repaired : r.remaining).push_back(std::move(f));
  }
  if (rewrote) SynchronizeRcu();
  return r;
}

std::string FormatFinding(const TamperFinding& f) {
  std::string out = "tamper " + std::string(bpf_feature::FindingKindName(f.kind));
  if (!f.guest.empty() || f.ifindex)
    out += " guest=" + f.guest + " ifindex=" + std::to_string(f.ifindex);
  if (!f.table.empty()) out += " table=" + f.table;
  return out + ": " + f.detail;
}

}  // namespace sovguard::net
