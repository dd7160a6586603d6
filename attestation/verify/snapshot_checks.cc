// What the enforcement snapshot claims against what the quoted log measured: the active
// policy, guest coverage, mechanisms, and the continuity of enforcement.
#include "attestation/verify/checks.h"

#include <google/protobuf/unknown_field_set.h>

#include <algorithm>
#include <map>
#include <set>

#include "attestation/eventlog/cel.h"
#include "attestation/evidence/format.h"

namespace sovguard::attestation::verify::detail {

// The active policy: the last kPolicyApplied event of the (authentic) CEL measures the bundle's
// SHA-256, which the snapshot must report, and which must be the one the auditor expects: with
// no expected digest, a consistent policy is still nobody's approved one (EXPECTED_POLICY_MISSING,
// waivable by name).
CheckResult CheckPolicy(const std::optional<v1::EnforcementSnapshot>& bound_snap,
                        const std::optional<CelFacts>& cel, const std::optional<Bytes>& expected) {
  const std::string name = "policy.bundle";
  const std::string not_expected = "; the auditor expects none (no --policy-digest)";
  if (!bound_snap) return Fail(name, kReasonDependencyFailed, "snapshot_bytes do not parse");
  const auto& snap = *bound_snap;
  const std::vector<ChainItem>* recs = cel ? &cel->recs : nullptr;
  const std::string& reported = snap.policy_bundle_sha256();
  if (expected && Str(*expected) != reported)
    return Fail(
        name, kReasonPolicyDigestMismatch,
        "snapshot policy_bundle_sha256 " + Hex(reported) + ", expected " + ToHex(*expected));
  if (!recs) return Fail(name, kReasonDependencyFailed, "logs.cel is not authentic");
  for (size_t i = recs->size(); i-- > 0;) {
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView((*recs)[i].content, e) != nullptr) continue;  // (cannot be)
    if (e.kind != cel::EventKind::kPolicyApplied) continue;
    const std::span<const uint8_t> applied(e.object_digest, 32);
    if (Str(applied) != reported)
      return Fail(name, kReasonPolicySnapshotMismatch,
                  "logs.cel record " + std::to_string(i) + " applied policy " + ToHex(applied) +
                      ", the snapshot reports " + Hex(reported));
    const std::string active = "active policy \"" + std::string(e.name) + "\" " + ToHex(applied);
    if (!expected) return Fail(name, kReasonExpectedPolicyMissing, active + not_expected);
    return Pass(name, active + " (as expected)");
  }
  if (reported.empty() && !expected)
    return Fail(name, kReasonExpectedPolicyMissing, "no policy applied" + not_expected);
  return Fail(name, kReasonPolicyNotMeasured, "no policy-applied event in logs.cel");
}

namespace {

// A cgroup path at or below `root` (both absolute; trailing slashes ignored).
bool CgroupAtOrBelow(std::string_view path, std::string_view root) {
  while (path.size() > 1 && path.ends_with('/')) path.remove_suffix(1);
  while (root.size() > 1 && root.ends_with('/')) root.remove_suffix(1);
  if (root.empty() || !path.starts_with(root)) return false;
  return path.size() == root.size() || root == "/" || path[root.size()] == '/';
}

// Storage programs sovguardd attaches for all guests at once (machine cgroup): cgroup programs,
// tracepoints and BPF LSM hooks, filtered by the guests' cgroups.
bool IsStorageAttachment(const v1::ProgramAttachment& p) {
  const std::string_view t = p.attach_type();
  return t.starts_with("cgroup/") || t.starts_with("tracepoint") || t.starts_with("lsm") ||
         t.starts_with("bpf-lsm");
}

}  // namespace

// snapshot.coverage: the guests the node measured as running (guest events of the authentic
// CEL, replayed in order) are exactly the snapshot's guests, and every one is covered: sg_net,
// the program the CEL measured (same tag), on each of its taps, and a cgroup under every
// storage attachment point.
CheckResult CheckCoverage(const v1::EnforcementSnapshot* snap, const std::optional<CelFacts>& cel) {
  const std::string name = "snapshot.coverage";
  if (!snap)
    return Fail(name, kReasonDependencyFailed,
                "the snapshot is not bound to the signed quote (snapshot.digest, "
                "quote.qualifying_data)");
  if (!cel) return Fail(name, kReasonDependencyFailed, "logs.cel is not authentic");
  // Guests the node measured as running.
  Issues malformed;
  std::map<std::string, uint64_t, std::less<>> measured;  // uuid -> record of its "covered"
  for (size_t i : cel->guest_events) {
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView(cel->recs[i].content, e)) continue;  // (cannot be)
    const std::string uuid(e.name.substr(cel::kGuestEventPrefix.size()));
    const std::string at = "logs.cel record " + std::to_string(i);
    if (uuid.empty())
      malformed.Add(at + ": guest event without a uuid");
    else if (e.detail == "covered")
      measured[uuid] = i;
    else if (e.detail == "released")
      measured.erase(uuid);
    else
      malformed.Add(at + ": guest " + uuid + " event \"" + std::string(e.detail) +
                    "\" (expected covered or released)");
  }
  if (malformed.n)
    return Fail(name, kReasonGuestEventMalformed, "guest events " + malformed.Render());
  // The sg_net program the CEL measured last (its tag is what every tap must run).
  std::optional<std::string> net_tag;
  std::string net_at;
  if (cel->last_net_program != SIZE_MAX) {
    cel::SovguardEventView e;
    if (!cel::DecodeSovguardContentView(cel->recs[cel->last_net_program].content, e)) {
      net_at = "logs.cel record " + std::to_string(cel->last_net_program);
      const auto j = nlohmann::json::parse(e.detail, nullptr, false);
      if (j.is_object() && j.contains("tag") && j["tag"].is_string())
        net_tag = j["tag"].get<std::string>();
    }
  }
  Issues missing, unmeasured, uncovered, wrong_tag, no_tap;
  size_t no_nic = 0;  // guests without any interface: no network path to guard
  std::set<std::string, std::less<>> listed;
  for (int gi = 0; gi < snap->guests_size(); ++gi) {
    const auto& g = snap->guests(gi);
    const std::string who = "guest " + (g.name().empty() ? "#" + std::to_string(gi) : g.name()) +
                            " (" + (g.uuid().empty() ? "no uuid" : g.uuid()) + ")";
    if (g.uuid().empty() || !listed.insert(g.uuid()).second) {
      unmeasured.Add(who + (g.uuid().empty() ? ": no uuid" : ": listed twice"));
      continue;
    }
    if (!measured.count(g.uuid())) unmeasured.Add(who + ": no \"covered\" guest event in logs.cel");
    // The node lists every interface of a guest: none and no tap is a guest without a network
    // path; interfaces and no tap is a network path nothing guards.
    if (g.taps().empty()) {
      if (g.interfaces().empty())
        ++no_nic;
      else
        no_tap.Add(who + ": " + std::to_string(g.interfaces_size()) +
                   " interface(s) and no tap covered by " + std::string(kNetProgram));
    }
    for (const auto& tap : g.taps()) {
      const v1::ProgramAttachment* att = nullptr;
      for (const auto& p : snap->programs())
        if (p.attach_point() == tap && p.name() == kNetProgram && p.attach_type() == kNetAttachType)
          att = &p;
      if (!att)
        uncovered.Add(who + ": tap " + tap + " has no " + std::string(kNetProgram) + " " +
                      std::string(kNetAttachType) + " attachment");
      else if (!net_tag)
        wrong_tag.Add(who + ": tap " + tap + " runs " + std::string(kNetProgram) + " tag " +
                      att->tag() + ", but logs.cel measured no " + std::string(kNetProgram) +
                      " program attachment");
      else if (att->tag() != *net_tag)
        wrong_tag.Add(who + ": tap " + tap + " runs " + std::string(kNetProgram) + " tag " +
                      att->tag() + ", " + net_at + " measured tag " + *net_tag);
    }
    // Every interface the node lists (whatever its libvirt type) must be covered, and a covered
    // one must be one of the guest's taps (which the loop above checked for sg_net).
    for (const auto& nic : g.interfaces()) {
      const std::string what = "interface " + (nic.type().empty() ? "?" : nic.type()) + " " +
                               (nic.device().empty() ? "(no device)" : nic.device()) +
                               (nic.mac().empty() ? "" : " " + nic.mac());
      if (!nic.covered())
        uncovered.Add(who + ": " + what + " is not covered" +
                      (nic.mechanism().empty() ? "" : " (" + nic.mechanism() + ")"));
      else if (std::find(g.taps().begin(), g.taps().end(), nic.device()) == g.taps().end())
        uncovered.Add(who + ": " + what + " is reported covered but has no tap entry");
    }
    if (g.cgroup().empty()) {
      uncovered.Add(who + ": no cgroup (the storage paths cannot cover it)");
    } else {
      for (const auto& p : snap->programs())
        if (IsStorageAttachment(p) && !CgroupAtOrBelow(g.cgroup(), p.attach_point()))
          uncovered.Add(who + ": cgroup " + g.cgroup() + " is not below " + p.name() + " (" +
                        p.attach_type() + ") at " + p.attach_point());
    }
  }
  for (const auto& [uuid, recnum] : measured)
    if (!listed.count(uuid))
      missing.Add("guest " + uuid + " (covered at logs.cel record " + std::to_string(recnum) +
                  ", never released)");
  // One reason per check: the most basic disagreement first; the detail lists every kind.
  std::string detail;
  auto add = [&](const Issues& is, std::string_view what) {
    if (is.n) detail += (detail.empty() ? "" : " | ") + std::string(what) + " " + is.Render();
  };
  add(missing, "running per logs.cel but not in the snapshot");
  add(unmeasured, "in the snapshot but not measured as running");
  add(no_tap, "no tap covered");
  add(uncovered, "not covered");
  add(wrong_tag, "not the measured program");
  if (missing.n) return Fail(name, kReasonGuestMissingFromSnapshot, detail);
  if (unmeasured.n) return Fail(name, kReasonGuestNotMeasured, detail);
  if (no_tap.n) return Fail(name, kReasonNoTapCovered, detail);
  if (uncovered.n) return Fail(name, kReasonGuestNotCovered, detail);
  if (wrong_tag.n) return Fail(name, kReasonProgramTagMismatch, detail);
  if (snap->guests_size() == 0) return Pass(name, "no guests running (logs.cel and snapshot)");
  size_t taps = 0;
  for (const auto& g : snap->guests()) taps += static_cast<size_t>(g.taps_size());
  size_t storage = 0;
  for (const auto& p : snap->programs()) storage += IsStorageAttachment(p);
  // Nothing passes vacuously: guests run, so something must guard their storage and their taps.
  if (storage == 0)
    return Fail(name, kReasonStorageNotAttached,
                std::to_string(snap->guests_size()) +
                    " guest(s) run and the snapshot has no storage attachment (cgroup, "
                    "tracepoint or LSM program): their storage is unguarded");
  return Pass(name, std::to_string(snap->guests_size()) +
                        " guest(s) measured as running and all in the snapshot; " +
                        std::to_string(taps) + " tap(s) run " + std::string(kNetProgram) +
                        (net_tag ? " tag " + *net_tag : "") +
                        (no_nic ? "; " + std::to_string(no_nic) +
                                      " guest(s) without a network interface (no network path)"
                                : std::string()) +
                        "; every cgroup is below the " + std::to_string(storage) +
                        " storage attachment(s)");
}

namespace {

// What the quoted log says about each path since the daemon last started: the mechanism a
// kMechanismDowngraded event moved it to, with its record number. Paths without such an event
// run their strongest mechanism.
struct MeasuredDowngrade {
  std::string to;
  uint64_t recnum = 0;
};
std::string MeasuredDowngrades(const CelFacts& cel, std::map<std::string, MeasuredDowngrade>& out) {
  for (const size_t i : cel.downgrades) {
    cel::SovguardEventView v;
    nlohmann::json d;
    if (!cel::DecodeSovguardContentView(cel.recs[i].content, v))
      d = nlohmann::json::parse(v.detail, nullptr, /*allow_exceptions=*/false);
    if (!d.is_object() || !d.contains("path") || !d["path"].is_string() || !d.contains("to") ||
        !d["to"].is_string() || d["path"].get<std::string>() != v.name)
      return "logs.cel record " + std::to_string(i) +
             ": mechanism_downgraded detail is not {\"path\": name, \"to\": mechanism, ...}";
    out[d["path"].get<std::string>()] = {d["to"].get<std::string>(), i};
  }
  return {};
}

}  // namespace

// snapshot.mechanisms: every enforcement path has a reported mechanism; downgrades are named
// (and fail with require_strongest).
CheckResult CheckMechanisms(const v1::EnforcementSnapshot* snap, const std::optional<CelFacts>& cel,
                            bool require_strongest) {
  const std::string name = "snapshot.mechanisms";
  if (!snap)
    return Fail(name, kReasonDependencyFailed,
                "the snapshot is not bound to the signed quote (snapshot.digest, "
                "quote.qualifying_data)");
  if (!cel)
    return Fail(name, kReasonDependencyFailed,
                "logs.cel did not verify: the reported mechanisms cannot be compared with the "
                "measured ones");
  std::map<std::string, MeasuredDowngrade> measured;
  if (auto err = MeasuredDowngrades(*cel, measured); !err.empty())
    return Fail(name, kReasonMechanismLogMismatch, err);
  const std::string since =
      cel->last_start == SIZE_MAX
          ? std::string("in logs.cel")
          : "since the daemon started (logs.cel record " + std::to_string(cel->last_start) + ")";
  std::string missing, downgraded, strongest, contradicts, not_enforced, twice;
  size_t n_downgraded = 0;
  for (const std::string_view path : kEnforcementPaths) {
    const v1::MechanismState* m = nullptr;
    int n = 0;
    for (const auto& x : snap->mechanisms())
      if (x.path() == path) m = &x, ++n;
    if (n > 1)
      twice +=
          (twice.empty() ? "" : ", ") + std::string(path) + " (" + std::to_string(n) + " times)";
    if (!m) {
      missing += (missing.empty() ? "" : ", ") + std::string(path);
      continue;
    }
    if (m->not_enforced())
      not_enforced += (not_enforced.empty() ? "" : "; ") + std::string(path) +
                      (m->reason().empty() ? "" : " (" + m->reason() + ")");
    // Reported as downgraded, or running something other than the strongest, or nothing.
    const bool is_downgraded = m->downgraded() || m->active() != m->strongest() ||
                               m->active().empty() || m->active() == "none";
    // The signed snapshot and the quoted log must tell the same story: a path the log measured
    // as downgraded cannot be reported at another mechanism, and a downgrade the node reports
    // must have been measured.
    const auto it = measured.find(std::string(path));
    if (it != measured.end() && (!is_downgraded || m->active() != it->second.to))
      contradicts += (contradicts.empty() ? "" : "; ") + std::string(path) + ": reported " +
                     (m->active().empty() ? "none" : m->active()) + ", logs.cel record " +
                     std::to_string(it->second.recnum) + " measured " + it->second.to;
    else if (it == measured.end() && is_downgraded)
      contradicts += (contradicts.empty() ? "" : "; ") + std::string(path) + ": reported " +
                     (m->active().empty() ? "none" : m->active()) +
                     " (downgraded), no downgrade measured " + since;
    if (is_downgraded) {
      ++n_downgraded;
      downgraded += (downgraded.empty() ? "" : "; ") + std::string(path) + ": " +
                    (m->active().empty() ? "none" : m->active()) + " instead of " +
                    (m->strongest().empty() ? "?" : m->strongest()) +
                    (m->reason().empty() ? "" : " (" + m->reason() + ")");
    } else {
      strongest += (strongest.empty() ? "" : ", ") + std::string(path) + "=" + m->active();
    }
  }
  // Two states for one path: which one holds is not the verifier's to pick.
  if (!twice.empty())
    return Fail(name, kReasonMechanismReportedTwice,
                "the snapshot reports more than one mechanism state for: " + twice);
  if (!missing.empty())
    return Fail(name, kReasonMechanismNotReported,
                "the snapshot reports no mechanism for: " + missing);
  if (!not_enforced.empty())
    return Fail(name, kReasonPathNotEnforced,
                "the node reports path(s) guarding nothing: " + not_enforced);
  if (!contradicts.empty())
    return Fail(name, kReasonMechanismLogMismatch,
                "snapshot.mechanisms disagree with the quoted log: " + contradicts);
  if (n_downgraded && require_strongest)
    return Fail(
        name, kReasonMechanismDowngraded,
        std::to_string(n_downgraded) + " path(s) below the strongest mechanism: " + downgraded);
  return Pass(name,
              "strongest: " + (strongest.empty() ? std::string("none") : strongest) +
                  (n_downgraded ? std::string(kMechanismsDowngradedMarker) + downgraded : "") +
                  " (as measured " + since + ")");
}

// enforcement.continuity: since `since` (the record after the last passing verdict's log, or 0:
// this boot's whole log), nothing interrupted enforcement: no tamper finding (tamper:<kind>), no
// forced release, and neither a mechanism downgrade nor a daemon (re)start while guests ran
// (the running set replayed from the guest events of the whole log). Each is listed with its
// record.
CheckResult CheckContinuity(const std::optional<CelFacts>& cel, size_t since,
                            const std::string& since_text) {
  const std::string name = "enforcement.continuity";
  if (!cel) return Fail(name, kReasonDependencyFailed, "logs.cel is not authentic");
  enum Kind : uint8_t { kGuest, kState, kStart, kDowngrade };
  std::vector<std::pair<size_t, Kind>> events;
  for (size_t i : cel->guest_events) events.emplace_back(i, kGuest);
  for (size_t i : cel->state_events) events.emplace_back(i, kState);
  for (size_t i : cel->starts) events.emplace_back(i, kStart);
  for (size_t i : cel->all_downgrades) events.emplace_back(i, kDowngrade);
  std::sort(events.begin(), events.end());
  std::set<std::string, std::less<>> running;
  Issues found;
  for (const auto& [i, kind] : events) {
    const bool counted = i >= since;
    if (!counted && kind != kGuest) continue;
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView(cel->recs[i].content, e)) continue;  // (cannot be)
    const auto at = [i] { return "logs.cel record " + std::to_string(i); };
    switch (kind) {
      case kGuest: {
        const std::string uuid(e.name.substr(cel::kGuestEventPrefix.size()));
        if (e.detail == "covered") running.insert(uuid);
        if (e.detail == "released") running.erase(uuid);
        break;
      }
      case kState:
        if (counted && e.name.starts_with("tamper:"))
          found.Add(at() + ": tamper finding " + std::string(e.name.substr(7)) +
                    (e.detail.empty() ? "" : " (" + std::string(e.detail) + ")"));
        else if (counted && e.name == "enforcement" && e.detail.starts_with("released"))
          // `sovguardctl release`, plain or forced: the node stopped enforcing.
          found.Add(at() + ": " +
                    (e.detail.find("(forced)") != e.detail.npos ? "forced release" : "release") +
                    " (" + std::string(e.detail) + ")");
        break;
      case kStart:
        // "recovered": the last daemon died between logging a record and extending it (a crash).
        if (counted && i > 0 && !running.empty())
          found.Add(at() + ": daemon (re)started (" + std::string(e.detail) +
                    (e.detail == "recovered" ? ": the last daemon crashed mid-measurement" : "") +
                    ") while " + std::to_string(running.size()) + " guest(s) ran without a daemon");
        break;
      case kDowngrade:
        if (counted && !running.empty())
          found.Add(at() + ": mechanism downgraded for " + std::string(e.name) + " while " +
                    std::to_string(running.size()) + " guest(s) ran");
        break;
    }
  }
  if (found.n)
    return Fail(name, kReasonEnforcementInterrupted,
                "enforcement interrupted " + since_text + " " + found.Render());
  return Pass(
      name,
      "no tamper finding, release, crash, downgrade or restart under running guests " + since_text);
}

CheckResult CheckSnapshotDigest(const v1::Evidence& ev, Sha256Digest& digest) {
  digest = Sha256(ev.snapshot_bytes());
  if (Str(digest) != ev.snapshot_sha256())
    return Fail("snapshot.digest", kReasonSnapshotDigestMismatch,
                "snapshot_sha256 " + Hex(ev.snapshot_sha256()) +
                    " is not SHA-256(snapshot_bytes) " + ToHex(digest));
  return Pass("snapshot.digest", ToHex(digest));
}

namespace {

// The first field of `m` (at any depth) that its schema does not know, as "<where> field N";
// empty when there is none.
std::string UnknownField(const google::protobuf::Message& m, const std::string& where) {
  const auto* r = m.GetReflection();
  if (const auto& u = r->GetUnknownFields(m); !u.empty())
    return where + " field " + std::to_string(u.field(0).number());
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const auto* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (!f->is_repeated()) {
      if (auto u = UnknownField(r->GetMessage(m, f), where + "." + f->name()); !u.empty()) return u;
      continue;
    }
    for (int i = 0; i < r->FieldSize(m, f); ++i)
      if (auto u = UnknownField(r->GetRepeatedMessage(m, f, i),
                                where + "." + f->name() + "[" + std::to_string(i) + "]");
          !u.empty())
        return u;
  }
  return {};
}

}  // namespace

CheckResult CheckSnapshotCopy(const v1::Evidence& ev,
                              std::optional<v1::EnforcementSnapshot>& parsed) {
  v1::EnforcementSnapshot snap;
  if (snap.ParseFromString(ev.snapshot_bytes())) parsed = std::move(snap);
  if (!parsed || evidence::SerializeSnapshot(*parsed) != evidence::SerializeSnapshot(ev.snapshot()))
    return Fail("snapshot.copy", kReasonSnapshotCopyMismatch,
                "the readable snapshot differs from snapshot_bytes");
  // A field this verifier does not know says something it cannot check: never satisfied.
  if (const std::string unknown = UnknownField(*parsed, "snapshot"); !unknown.empty())
    return Fail("snapshot.copy", kReasonSnapshotUnknownField,
                "snapshot_bytes hold " + unknown +
                    ", which this verifier does not know: what it claims cannot be checked");
  // The report and the EAR name the node by Evidence.node, which nothing signs: it must be the
  // node the signed snapshot names.
  if (ev.node() != parsed->node())
    return Fail("snapshot.copy", kReasonNodeNameMismatch,
                "the evidence names node \"" + ev.node() + "\", the signed snapshot node \"" +
                    parsed->node() + "\"");
  return Pass("snapshot.copy", "snapshot equals snapshot_bytes, node \"" + ev.node() + "\"");
}
}  // namespace sovguard::attestation::verify::detail
