#include <fmt/format.h>
#include <cerrno>
#include <set>

#include "base/errno_text.h"
#include "base/hex.h"
#include "enforcer/storage/storage_datapath_impl.h"

namespace sovguard::storage {

using base::ErrnoText;

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
        {FindingKind::kMachineCgroupReplaced, m.options.machine_cgroup.string(),
         fmt::format("{} is {} but the programs are attached to cgroup id {}: guests "
                     "below it are not covered until sovguardd restarts",
                     m.options.machine_cgroup.string(), *replaced, m.status.machine_cgroup_id)});
  }
  for (const auto& a : m.attached) {
    const std::string name = bpf_program__name(a.prog);
    const auto ours = bpf_feature::ProgramByFd(bpf_program__fd(a.prog));
    bpf_link_info info{};
    std::uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(a.link.Get(), &info, &len) != 0) {
      out.push_back(
          {FindingKind::kLinkBroken, name,
           fmt::format("{}: link {} cannot be queried: {}", a.hook, a.link_id, ErrnoText(errno))});
      continue;
    }
    if (info.prog_id != ours.id) {
      out.push_back({FindingKind::kProgramReplaced, name,
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
        out.push_back({FindingKind::kProgramDetached, name,
                       fmt::format("{}: program {} (tag {}) is not attached to the machine cgroup "
                                   "any more (link {} cgroup id {})",
                                   a.hook, ours.id, ours.tag, a.link_id, info.cgroup.cgroup_id)});
      }
    }
    if (!a.pin.empty()) {
      UniqueFd pinned(bpf_obj_get(a.pin.c_str()));
      const std::uint32_t pinned_id = pinned ? bpf_feature::LinkId(pinned.Get()) : 0;
      if (pinned_id != a.link_id) {
        out.push_back({FindingKind::kPinMissing, name,
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
    out.push_back({FindingKind::kPolicyMapAltered, "sg_storage_active",
                   fmt::format("generation {} is in force, not ours ({})", active, m.active)});
  }
  const Tables now = m.ReadTables(m.active, m.expected.classes.size(), options.compare_endpoints);
  for (int t = 0; t < kTablesDigested; ++t) {
    if (!options.compare_endpoints && (t == kTableEndpoints4 || t == kTableEndpoints6)) continue;
    if (!TableEqual(now, m.expected, t)) {
      const Digest got = TableDigest(now, t);
      out.push_back({FindingKind::kPolicyMapAltered, kTableNames[t],
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
              {FindingKind::kGuestEntryAltered, "sg_storage_guests",
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
        const std::string name = NameText(k.name);
        const auto p = pending.find(name);
        if (p != pending.end()) ++seen;
        if (p == pending.end() || !SameBytes(&p->second, &e, sizeof e)) {
          out.push_back({FindingKind::kGuestEntryAltered, "sg_storage_pending",
                         fmt::format("pending {}: guest id {} datasets {:#x}", name, e.guest_id,
                                     e.datasets)});
        }
      });
  if (seen != pending.size()) {
    out.push_back({FindingKind::kGuestEntryAltered, "sg_storage_pending",
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
    if (f.kind == FindingKind::kAdoptedStateAltered) {
      r.remaining.push_back(std::move(f));
      continue;
    }
    if (f.kind == FindingKind::kPolicyMapAltered) {
      if (!tables_done.contains(f.object)) {
        for (int t = 0; t < kTablesDigested; ++t)
          if (f.object == kTableNames[t]) m.WriteTable(t, m.active);
        if (f.object == "sg_storage_active") {
          const std::uint32_t zero = 0;
          UpdateElem(m.Fd(m.skel->maps.sg_storage_active), &zero, &m.active, "sg_storage_active");
        }
        tables_done.insert(f.object);
      }
      r.repaired.push_back(std::move(f));
      continue;
    }
    if (f.kind == FindingKind::kGuestEntryAltered) {
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
                UpdateElem(fd, &cg, &fixed, "sg_storage_guests");
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
          UpdateElem(pfd, &k, &e, "sg_storage_pending");
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
    if (!programs_done
             .insert(f.object + "/" + (f.kind == FindingKind::kPinMissing ? "pin" : "link"))
             .second) {
      r.repaired.push_back(std::move(f));  // the same link, already re-attached above
      continue;
    }
    if (f.kind == FindingKind::kPinMissing) {
      ::unlink(a->pin.c_str());
      bpf_feature::PinReplacing(a->link.Get(), a->pin);
      r.repaired.push_back(std::move(f));
      continue;
    }
    // program-replaced, program-detached, link-broken: a cgroup link still attached gets our
    // program back in place; anything else gets a new link, pinned over the old one, and the
    // old link (with whatever program it ran) is released.
    if (f.kind == FindingKind::kProgramReplaced && a->cgroup &&
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
    if (!a->pin.empty()) bpf_feature::PinReplacing(fresh.Get(), a->pin);
    if (a->cgroup) bpf_link_detach(a->link.Get());  // a replaced one stops now
    a->link = std::move(fresh);
    a->link_id = bpf_feature::LinkId(a->link.Get());
    r.repaired.push_back(std::move(f));
  }
  return r;
}

}  // namespace sovguard::storage
