// manifest.*: what the node measured against the certifier's signed reference manifest.
#include "attestation/verify/checks.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>

#include "attestation/eventlog/cel.h"
#include "attestation/manifest/manifest.h"
#include "attestation/verify/fast_paths.h"
#include "attestation/verify/ima_log.h"
#include "policy/jurisdiction/countries.h"

namespace sovguard::attestation::verify::detail {

namespace {

bool JurisdictionAllowed(const std::string& code, const std::vector<std::string>& allowed) {
  if (allowed.empty()) return policy::IsEea(code);
  for (const auto& a : allowed) {
    if (a == "EEA" ? policy::IsEea(code) : a == "EU" ? policy::IsEu(code) : a == code) return true;
  }
  return false;
}

// A reference manifest as CheckManifest uses it, made once per exact envelope and certifier key:
// its signature and strict parse checked, its file digests indexed, its suppliers listed.
// Auditors check many verdicts against one manifest (fleet mode, the same node again), and
// parsing and indexing it per verdict costs more than the rest of the verdict.
struct PreparedManifest {
  std::string key_id;                   // the certifier key's
  std::optional<manifest::Manifest> m;  // when authentic, else:
  std::string error_reason, error;
  // File digest -> component: open addressing, linear probing, at most half full. A slot holds
  // the digest's first 8 bytes (SHA-256 output: uniform, a hash as it is) and the component;
  // a match is confirmed against the file's full digest. (A measured log's components are
  // looked up once each per verdict: 5,000 of them in the bench.)
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Slot {
    uint64_t tag = 0;
    uint32_t comp = kNone, file = 0;
  };
  std::vector<Slot> table;
  static uint64_t Tag(const uint8_t* d) {
    uint64_t t = 0;
    std::memcpy(&t, d, sizeof t);
    return t;
  }
  uint32_t Find(const uint8_t* digest) const {
    if (table.empty()) return kNone;
    const size_t mask = table.size() - 1;
    const uint64_t tag = Tag(digest);
    for (size_t at = tag & mask;; at = (at + 1) & mask) {
      const Slot& s = table[at];
      if (s.comp == kNone) return kNone;
      if (s.tag == tag &&
          std::memcmp(m->components[s.comp].files[s.file].sha256.data(), digest, 32) == 0)
        return s.comp;
    }
  }
  void Insert(uint32_t comp, uint32_t file) {  // the first component naming a digest wins
    const uint8_t* digest = m->components[comp].files[file].sha256.data();
    if (Find(digest) != kNone) return;
    const size_t mask = table.size() - 1;
    size_t at = Tag(digest) & mask;
    while (table[at].comp != kNone) at = (at + 1) & mask;
    table[at] = {Tag(digest), comp, file};
  }
  std::vector<uint32_t> supplier_of;  // component -> supplier, suppliers in name order:
  std::vector<std::string> suppliers, jurisdictions;  // "name (CC)", CC
};

PreparedManifest PrepareManifest(const std::string& envelope, EVP_PKEY* key) {
  PreparedManifest p;
  p.key_id = manifest::KeyId(key);
  try {
    p.m = manifest::VerifyEnvelope(envelope, key);
  } catch (const manifest::ManifestError& e) {
    p.error_reason = e.reason();
    p.error = e.what();
    return p;
  }
  std::map<std::string, std::string> suppliers;  // "name (CC)" -> CC
  for (const auto& c : p.m->components)
    suppliers.emplace(c.supplier + " (" + c.supplier_jurisdiction + ")", c.supplier_jurisdiction);
  for (const auto& [s, cc] : suppliers) {
    p.suppliers.push_back(s);
    p.jurisdictions.push_back(cc);
  }
  size_t files = 0;
  for (const auto& c : p.m->components) files += c.files.size();
  p.table.resize(std::bit_ceil(2 * files + 2));
  for (uint32_t i = 0; i < p.m->components.size(); ++i) {
    const auto& c = p.m->components[i];
    const std::string s = c.supplier + " (" + c.supplier_jurisdiction + ")";
    p.supplier_of.push_back(static_cast<uint32_t>(
        std::lower_bound(p.suppliers.begin(), p.suppliers.end(), s) - p.suppliers.begin()));
    for (uint32_t f = 0; f < c.files.size(); ++f) p.Insert(i, f);
  }
  return p;
}

// The last few prepared manifests, by exact envelope and key text (thread-safe: fleet mode).
// The entry keeps its envelope object alive, so the same object passed again is the same bytes
// and is not compared (large manifests are MBs).
// Failed verifications of the envelope are kept too (the same bytes fail the same way); a key
// that does not parse is an input error and is not kept.
std::shared_ptr<const PreparedManifest> PreparedManifestFor(
    const std::shared_ptr<const std::string>& envelope, const std::string& key_pem) {
  struct Entry {
    std::shared_ptr<const std::string> envelope;
    std::string key_pem;
    std::shared_ptr<const PreparedManifest> prepared;
  };
  static std::mutex mu;
  static std::deque<Entry> entries;  // newest first
  constexpr size_t kMaxEntries = 8;
  const bool remember = FastPathsEnabled();
  if (remember) {
    std::lock_guard lock(mu);
    for (const auto& e : entries)
      if ((e.envelope == envelope || *e.envelope == *envelope) && e.key_pem == key_pem)
        return e.prepared;
  }
  auto key = [&] {
    try {
      return manifest::PublicKeyFromPem(key_pem);
    } catch (const manifest::ManifestError& e) {
      throw InputError(std::string("--manifest-key: ") + e.what());
    }
  }();
  auto prepared = std::make_shared<const PreparedManifest>(PrepareManifest(*envelope, key.get()));
  if (!remember) return prepared;
  std::lock_guard lock(mu);
  entries.push_front({envelope, key_pem, prepared});
  if (entries.size() > kMaxEntries) entries.pop_back();
  return prepared;
}

// The SHA-256 file digest an IMA entry measured (first field d-ng "sha256:" NUL digest, or
// d-ngv2 "ima:sha256:" NUL digest), or nullopt (another algorithm, the legacy "ima" template).
std::optional<Sha256Digest> ImaFileSha256(const ima::Entry& e) {
  const Bytes& d = e.template_data;
  if (e.template_name == "ima" || d.size() < 4) return std::nullopt;
  const uint32_t len = static_cast<uint32_t>(d[0]) | static_cast<uint32_t>(d[1]) << 8 |
                       static_cast<uint32_t>(d[2]) << 16 | static_cast<uint32_t>(d[3]) << 24;
  if (len > d.size() - 4) return std::nullopt;
  const std::string_view field(reinterpret_cast<const char*>(d.data() + 4), len);
  const size_t nul = field.find('\0');
  if (nul == std::string_view::npos || !field.substr(0, nul).ends_with("sha256:") ||
      field.size() - nul - 1 != 32)
    return std::nullopt;
  Sha256Digest out;
  std::memcpy(out.data(), field.data() + nul + 1, 32);
  return out;
}

// manifest.ima: every file IMA measured (the list eventlog.ima verified) is a file the manifest
// approves (by SHA-256). boot_aggregate, IMA's first entry, is the boot PCRs' digest, not a file.
CheckResult CheckManifestIma(const v1::Evidence& ev, const PreparedManifest& pm, bool ima_ok) {
  const std::string name = "manifest.ima";
  if (!ev.logs().has_ima_ascii())
    return NotApplicable(name, kReasonNotRequested,
                         "no logs.ima_ascii (eventlog.ima says whether one was needed)");
  if (!ima_ok) return Fail(name, kReasonDependencyFailed, "eventlog.ima did not verify");
  ima::Log log;
  try {
    log = ima::Parse(U8(ev.logs().ima_ascii()));
  } catch (const AttestationError& e) {
    return Fail(name, kReasonDependencyFailed, e.what());  // (cannot be: eventlog.ima passed)
  }
  Issues bad;
  size_t files = 0;
  for (size_t i = 0; i < log.entries.size(); ++i) {
    const auto& e = log.entries[i];
    if (i == 0 && e.file == "boot_aggregate") continue;
    ++files;
    const std::string at = (log.binary ? "byte " : "line ") + std::to_string(e.line) + " " + e.file;
    if (e.violation) {
      bad.Add(at + ": measurement violation (file changed while open)");
      continue;
    }
    const auto digest = ImaFileSha256(e);
    if (!digest)
      bad.Add(at + ": " + e.template_name + " entry without a SHA-256 file digest");
    else if (pm.Find(digest->data()) == PreparedManifest::kNone)
      bad.Add(at + " sha256 " + ToHex(*digest) + " is in no manifest component");
  }
  if (bad.n)
    return Fail(name, kReasonImaUnapprovedFile,
                "files IMA measured that the manifest does not approve " + bad.Render());
  return Pass(name, std::to_string(files) + " file(s) IMA measured, all in the manifest");
}

}  // namespace

// manifest.signature, manifest.components, manifest.jurisdiction, manifest.boot, manifest.ima.
// With `observed`: the manifest's identity and every measured component (Observations).
void CheckManifest(const v1::Evidence& ev, const std::optional<CelFacts>& cel, bool pcrs_ok,
                   bool ima_ok, const Options& opts, std::vector<CheckResult>& out,
                   Observations* observed) {
  const std::vector<ChainItem>* recs = cel ? &cel->recs : nullptr;
  const char* names[] = {"manifest.signature", "manifest.components", "manifest.jurisdiction",
                         "manifest.boot", "manifest.ima"};
  if (!opts.manifest_envelope) {
    // Approved software is a requirement: no manifest is a failure (waivable by name).
    for (const char* n : names)
      out.push_back(Fail(n, kReasonManifestMissing,
                         "no reference manifest given (--manifest): what the node runs is not "
                         "compared with approved software"));
    return;
  }
  if (!opts.manifest_key_pem)
    throw InputError("a reference manifest needs the certifier's public key (--manifest-key)");
  for (const auto& a : opts.allowed_jurisdictions)
    if (a != "EU" && a != "EEA" && !policy::IsIsoCountry(a))
      throw InputError("allowed jurisdiction \"" + a + "\" is not an ISO 3166-1 code, EU or EEA");
  const auto prepared = PreparedManifestFor(opts.manifest_envelope, *opts.manifest_key_pem);
  if (!prepared->m) {
    out.push_back(Fail(names[0], prepared->error_reason, prepared->error));
    for (int i = 1; i < 5; ++i)
      out.push_back(Fail(names[i], kReasonDependencyFailed, "the manifest is not authentic"));
    return;
  }
  const manifest::Manifest& m = *prepared->m;
  if (observed) {
    observed->manifest_authentic = true;
    observed->manifest_id = m.id;
    observed->manifest_issuer = m.issuer;
  }
  out.push_back(Pass(
      names[0], "manifest \"" + m.id + "\" by " + m.issuer + ", signed by " + prepared->key_id));
  const std::string allowed_text = [&] {
    if (opts.allowed_jurisdictions.empty()) return std::string("EU/EEA");
    std::string t;
    for (const auto& a : opts.allowed_jurisdictions) t += (t.empty() ? "" : ",") + a;
    return t;
  }();
  // Per supplier: allowed here (the allowed set is this verdict's), measured in this log.
  std::vector<char> supplier_allowed, supplier_seen(prepared->suppliers.size(), 0);
  for (const auto& cc : prepared->jurisdictions)
    supplier_allowed.push_back(JurisdictionAllowed(cc, opts.allowed_jurisdictions));
  // Boot PCR values the manifest accepts (only PCRs it names; the quote must cover them).
  std::string boot_bad, boot_ok;
  if (!m.boot_pcrs.empty() && !pcrs_ok) {
    boot_bad = "quote.pcrs are not the signed values";
  } else {
    for (const auto& [pcr, accepted] : m.boot_pcrs) {
      const v1::PcrValue* q = nullptr;
      for (const auto& p : ev.quote().pcrs())
        if (p.index() == pcr) q = &p;
      const bool ok =
          q && std::any_of(accepted.begin(), accepted.end(),
                           [&](const Sha256Digest& d) { return Str(d) == q->sha256(); });
      std::string& list = ok ? boot_ok : boot_bad;
      list += (list.empty() ? "PCR " : ", PCR ") + std::to_string(pcr) +
              (q ? (ok ? "" : " = " + Hex(q->sha256()) + " not accepted") : " not quoted");
    }
  }
  const auto ima_check = [&] { return CheckManifestIma(ev, *prepared, ima_ok); };
  if (!recs) {
    out.push_back(Fail(names[1], kReasonDependencyFailed, "logs.cel is not authentic"));
    out.push_back(Fail(names[2], kReasonDependencyFailed, "logs.cel is not authentic"));
    out.push_back(Fail(names[3], kReasonDependencyFailed, "logs.cel is not authentic"));
    out.push_back(ima_check());
    return;
  }
  size_t n_components = 0, n_missing = 0, n_foreign = 0;
  std::string missing, foreign;
  const auto at = [](size_t i) { return "logs.cel record " + std::to_string(i); };
  for (const size_t i : cel->cmdlines) {
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView((*recs)[i].content, e)) continue;  // (cannot be)
    if (std::find(m.kernel_cmdlines.begin(), m.kernel_cmdlines.end(), e.detail) ==
        m.kernel_cmdlines.end())
      boot_bad += (boot_bad.empty() ? "" : ", ") + at(i) + ": kernel command line \"" +
                  std::string(e.detail) + "\" not accepted";
    else
      boot_ok += (boot_ok.empty() ? "" : ", ") + std::string("kernel command line");
  }
  for (const auto& [i, object_digest] : cel->components) {
    ++n_components;
    const uint32_t comp = prepared->Find(object_digest);
    if (observed) {
      cel::SovguardEventView e;
      if (!cel::DecodeSovguardContentView((*recs)[i].content, e)) {
        Observations::Component oc{i, std::string(cel::EventKindName(e.kind)), std::string(e.name)};
        if (comp != PreparedManifest::kNone) {
          const auto& c = m.components[comp];
          oc.in_manifest = true;
          oc.name = c.name;
          oc.version = c.version;
          oc.supplier = c.supplier;
          oc.jurisdiction = c.supplier_jurisdiction;
          oc.allowed = supplier_allowed[prepared->supplier_of[comp]];
        }
        observed->components.push_back(std::move(oc));
      }
    }
    if (comp == PreparedManifest::kNone || supplier_allowed[prepared->supplier_of[comp]]) {
      if (comp != PreparedManifest::kNone) {
        supplier_seen[prepared->supplier_of[comp]] = 1;
        continue;
      }
      if (n_missing++ >= 8) continue;
    } else {
      supplier_seen[prepared->supplier_of[comp]] = 1;
      if (n_foreign++ >= 8) continue;
    }
    // Named in a failure: the record's event, decoded again.
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView((*recs)[i].content, e)) continue;  // (cannot be)
    if (comp == PreparedManifest::kNone) {
      missing += (missing.empty() ? "" : "; ") + at(i) + " " +
                 std::string(cel::EventKindName(e.kind)) + " " + std::string(e.name) + " sha256 " +
                 ToHex(std::span(object_digest, 32)) +
                 (e.detail.empty() ? "" : " (" + std::string(e.detail) + ")");
    } else {
      const auto& c = m.components[comp];
      foreign += (foreign.empty() ? "" : "; ") + at(i) + " " + std::string(e.name) +
                 ": component " + c.name + " " + c.version + " from " + c.supplier + ", " +
                 c.supplier_jurisdiction;
    }
  }
  if (m.components.empty())
    out.push_back(
        Fail(names[1], kReasonManifestEmpty,
             "manifest \"" + m.id + "\" approves no component: it cannot approve a node"));
  else if (n_components == 0)
    out.push_back(Fail(names[1], kReasonNoComponentMeasured,
                       "logs.cel measures no component (self, QEMU, libvirtd, drivers, kernel, "
                       "BPF objects): nothing to compare with the manifest"));
  else if (n_missing)
    out.push_back(Fail(names[1], kReasonComponentNotInManifest,
                       std::to_string(n_missing) + " of " + std::to_string(n_components) +
                           " measured components not in the manifest: " + missing));
  else
    out.push_back(
        Pass(names[1], std::to_string(n_components) + " measured components, all in the manifest"));
  if (n_missing || n_components == 0 || m.components.empty())
    out.push_back(Fail(names[2], kReasonDependencyFailed,
                       "manifest.components did not pass: no supplier to check"));
  else if (n_foreign)
    out.push_back(Fail(names[2], kReasonSupplierJurisdiction,
                       std::to_string(n_foreign) + " component(s) from suppliers outside " +
                           allowed_text + ": " + foreign));
  else {
    std::string list;
    for (size_t i = 0; i < prepared->suppliers.size(); ++i)
      if (supplier_seen[i]) list += (list.empty() ? "" : ", ") + prepared->suppliers[i];
    out.push_back(Pass(names[2], "every supplier in " + allowed_text + ": " + list));
  }
  if (!boot_bad.empty())
    out.push_back(Fail(names[3], kReasonBootValueNotAccepted, boot_bad));
  else if (boot_ok.empty())
    out.push_back(NotApplicable(names[3], kReasonNotRequested,
                                "the manifest lists no boot values and none were measured"));
  else
    out.push_back(Pass(names[3], "accepted: " + boot_ok));
  out.push_back(ima_check());
}

}  // namespace sovguard::attestation::verify::detail
