#include "attestation/verify/ima_log.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <string_view>

#include "attestation/verify/verifier.h"
#include "base/openssl.h"

namespace sovguard::attestation::verify::ima {
namespace {

std::span<const uint8_t> U8(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
std::string Str(std::span<const uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
CheckResult Pass(std::string name, std::string detail) {
  return {std::move(name), Status::kPass, std::string(kReasonOk), std::move(detail)};
}
CheckResult Fail(std::string name, std::string_view reason, std::string detail) {
  return {std::move(name), Status::kFail, std::string(reason), std::move(detail)};
}
CheckResult NotApplicable(std::string name, std::string_view reason, std::string detail) {
  return {std::move(name), Status::kNotApplicable, std::string(reason), std::move(detail)};
}

constexpr size_t kMaxField = 1u << 20;  // no real template field is this large
constexpr size_t kMaxEntries = 10'000'000;
constexpr size_t kLegacyNameBuf = 256;     // IMA_EVENT_NAME_LEN_MAX + 1
constexpr size_t kLegacyDigest = 20;       // SHA-1 ('d' field of the legacy template)
constexpr size_t kMaxTemplateFields = 15;  // IMA_TEMPLATE_NUM_FIELDS_MAX

[[noreturn]] void Error(const std::string& where, const std::string& what) {
  throw AttestationError("IMA log: " + where + ": " + what);
}

void PutField(Bytes& out, std::span<const uint8_t> v) {
  const auto n = static_cast<uint32_t>(v.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), v.begin(), v.end());
}

uint32_t Le32(std::span<const uint8_t> d, size_t off) {
  return static_cast<uint32_t>(d[off]) | static_cast<uint32_t>(d[off + 1]) << 8 |
         static_cast<uint32_t>(d[off + 2]) << 16 | static_cast<uint32_t>(d[off + 3]) << 24;
}

// Template field ids this verifier understands (ima_template.c supported_fields).
enum class Field {
  kD,
  kN,
  kDng,
  kDngv2,
  kNng,
  kSig,
  kBuf,
  kDmodsig,
  kModsig,
  kEvmsig,
  kXattrNames,
  kXattrLengths,
  kXattrValues,
  kIuid,
  kIgid,
  kImode
};

std::optional<Field> FieldById(std::string_view id) {
  static const std::pair<std::string_view, Field> kIds[] = {
      {"d", Field::kD},
      {"n", Field::kN},
      {"d-ng", Field::kDng},
      {"d-ngv2", Field::kDngv2},
      {"n-ng", Field::kNng},
      {"sig", Field::kSig},
      {"buf", Field::kBuf},
      {"d-modsig", Field::kDmodsig},
      {"modsig", Field::kModsig},
      {"evmsig", Field::kEvmsig},
      {"xattrnames", Field::kXattrNames},
      {"xattrlengths", Field::kXattrLengths},
      {"xattrvalues", Field::kXattrValues},
      {"iuid", Field::kIuid},
      {"igid", Field::kIgid},
      {"imode", Field::kImode},
  };
  for (const auto& [s, f] : kIds)
    if (s == id) return f;
  return std::nullopt;
}

struct Template {
  bool legacy = false;  // "ima": d|n hashed without length prefixes, name padded
  std::vector<Field> fields;
};

// The field list of a template name (or of a custom format string), nullopt if not understood.
std::optional<Template> LookupTemplate(std::string_view name) {
  static const std::pair<std::string_view, std::string_view> kBuiltin[] = {
      {"ima-ng", "d-ng|n-ng"},
      {"ima-sig", "d-ng|n-ng|sig"},
      {"ima-ngv2", "d-ngv2|n-ng"},
      {"ima-sigv2", "d-ngv2|n-ng|sig"},
      {"ima-buf", "d-ng|n-ng|buf"},
      {"ima-modsig", "d-ng|n-ng|sig|d-modsig|modsig"},
      {"evm-sig", "d-ng|n-ng|evmsig|xattrnames|xattrlengths|xattrvalues|iuid|igid|imode"},
  };
  if (name == "ima") return Template{true, {Field::kD, Field::kN}};
  std::string_view fmt = name;
  for (const auto& [n, f] : kBuiltin)
    if (n == name) fmt = f;
  Template t;
  size_t pos = 0;
  while (true) {
    const size_t bar = fmt.find('|', pos);
    const auto f = FieldById(fmt.substr(pos, bar == std::string_view::npos ? bar : bar - pos));
    if (!f || t.fields.size() >= kMaxTemplateFields) return std::nullopt;
    t.fields.push_back(*f);
    if (bar == std::string_view::npos) break;
    pos = bar + 1;
  }
  return t;
}

bool IsNameField(Field f) {
  return f == Field::kN || f == Field::kNng;
}
// Fields the kernel leaves empty when it has nothing to record (no file, no signature, ...).
bool MayBeEmpty(Field f) {
  return f != Field::kD && f != Field::kN && f != Field::kDng && f != Field::kDngv2 &&
         f != Field::kNng;
}

// "<prefix>:" NUL digest, where the prefix has `colons` colons in all.
void CheckDigestField(std::span<const uint8_t> v, int colons, const std::string& where) {
  const auto nul = std::find(v.begin(), v.end(), 0);
  if (nul == v.end() || nul == v.begin() || *(nul - 1) != ':' ||
      std::count(v.begin(), nul, ':') != colons)
    Error(where, colons == 2 ? "d-ngv2 field has no \"type:algo:\\0\" prefix"
                             : "digest field has no \"algo:\\0\" prefix");
}

// Checks the fields of listed (binary) template data and returns the name field, for reports.
std::string CheckTemplateData(const Template& t, std::span<const uint8_t> d,
                              const std::string& where) {
  size_t off = 0;
  std::string name;
  for (size_t f = 0; f < t.fields.size(); ++f) {
    const std::string fw = "field " + std::to_string(f);
    if (d.size() - off < 4) Error(where, "template data truncated in " + fw);
    const uint32_t len = Le32(d, off);
    off += 4;
    if (d.size() - off < len) Error(where, "template " + fw + " truncated");
    const auto v = d.subspan(off, len);
    const Field k = t.fields[f];
    if (len == 0 && !MayBeEmpty(k)) Error(where, "template " + fw + " is empty");
    if (len != 0) {
      if (k == Field::kDng || k == Field::kDmodsig) CheckDigestField(v, 1, where);
      if (k == Field::kDngv2) CheckDigestField(v, 2, where);
      if ((IsNameField(k) || k == Field::kXattrNames) && v.back() != 0)
        Error(where, "template " + fw + " (a string) is not NUL-terminated");
      if (IsNameField(k)) name = Str(v.first(std::strlen(reinterpret_cast<const char*>(v.data()))));
    }
    off += len;
  }
  if (off != d.size()) Error(where, "trailing bytes after the template fields");
  return name;
}

Bytes Cat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

bool IsHex(std::string_view s) {
  return s.size() % 2 == 0 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
}

Bytes Hex(std::string_view s, const std::string& where, const char* field) {
  if (!IsHex(s)) Error(where, std::string(field) + " must be hex digits (an even number)");
  return FromHex(s, where);
}

// One ascii field token to the kernel's field data (see the header).
Bytes RebuildField(Field f, std::string_view tok, const std::string& where) {
  if (tok.empty() && MayBeEmpty(f)) return {};
  auto digest_with_prefix = [&](int colons, const char* what) {
    // An empty algo name (data ":" NUL digest, possible in early ima-ng kernels) is shown as
    // the bare hex digest (ima_show_template_data_ascii prints no prefix then).
    if (colons == 1 && tok.find(':') == std::string_view::npos && !tok.empty() && IsHex(tok))
      return Cat(Bytes{':', 0}, FromHex(tok, where));
    const size_t colon = tok.rfind(':');
    if (colon == std::string_view::npos || colon == 0 ||
        std::count(tok.begin(), tok.begin() + static_cast<long>(colon) + 1, ':') != colons)
      Error(where,
            std::string(what) + " must be \"" + (colons == 2 ? "TYPE:ALGO:HEX\"" : "ALGO:HEX\""));
    Bytes d(tok.begin(), tok.begin() + static_cast<long>(colon) + 1);
    d.push_back(0);
    const Bytes digest = Hex(tok.substr(colon + 1), where, what);
    if (digest.empty()) Error(where, std::string(what) + " has no digest");
    d.insert(d.end(), digest.begin(), digest.end());
    return d;
  };
  auto uint_le = [&](int bytes, const char* what) {
    if (tok.size() > 10 ||
        !std::all_of(tok.begin(), tok.end(), [](char c) { return c >= '0' && c <= '9'; }))
      Error(where, std::string(what) + " must be a decimal number");
    const uint64_t v = std::stoull(std::string(tok));
    if (v >> (8 * bytes)) Error(where, std::string(what) + " out of range");
    Bytes b;
    for (int i = 0; i < bytes; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return b;
  };
  switch (f) {
    case Field::kD: {
      Bytes d = Hex(tok, where, "file digest (d)");
      if (d.empty()) Error(where, "missing file digest");
      return d;
    }
    case Field::kDng:
      return digest_with_prefix(1, "file digest");
    case Field::kDmodsig:
      return digest_with_prefix(1, "d-modsig digest");
    case Field::kDngv2:
      return digest_with_prefix(2, "d-ngv2 file digest");
    case Field::kN:
    case Field::kNng:
    case Field::kXattrNames: {
      Bytes s(tok.begin(), tok.end());
      if (std::find(s.begin(), s.end(), 0) != s.end()) Error(where, "NUL in a string field");
      s.push_back(0);
      return s;
    }
    case Field::kSig:
      return Hex(tok, where, "signature (sig)");
    case Field::kBuf:
      return Hex(tok, where, "buffer (buf)");
    case Field::kModsig:
      return Hex(tok, where, "modsig");
    case Field::kEvmsig:
      return Hex(tok, where, "evmsig");
    case Field::kXattrLengths:
      return Hex(tok, where, "xattrlengths");
    case Field::kXattrValues:
      return Hex(tok, where, "xattrvalues");
    case Field::kIuid:
      return uint_le(4, "iuid");
    case Field::kIgid:
      return uint_le(4, "igid");
    case Field::kImode:
      return uint_le(2, "imode");
  }
  Error(where, "internal: unhandled field");
}

Bytes LegacyHashInput(std::span<const uint8_t> digest, std::string_view name,
                      const std::string& where) {
  if (name.size() >= kLegacyNameBuf)
    Error(where, "legacy \"ima\" name longer than 255 bytes (the kernel truncates it)");
  if (name.find('\0') != std::string_view::npos) Error(where, "NUL in the name");
  Bytes d(digest.begin(), digest.end());
  d.insert(d.end(), name.begin(), name.end());
  d.resize(digest.size() + kLegacyNameBuf, 0);
  return d;
}

void NoteUnknown(Log& log, const std::string& where, std::string_view tname) {
  if (log.unknown_templates++ == 0)
    log.first_unknown = where + ": template \"" + std::string(tname) + "\"";
}

Log ParseAscii(std::string_view text) {
  Log log;
  size_t pos = 0, lineno = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++lineno;
    if (line.empty()) continue;
    const std::string where = "line " + std::to_string(lineno);
    if (log.entries.size() >= kMaxEntries) Error(where, "too many entries");
    // "PCR TEMPLATE-HASH TEMPLATE-NAME FIELDS..."; the kernel prints PCR as "%2d".
    auto next = [&](std::string_view& rest) {
      const size_t sp = rest.find(' ');
      std::string_view tok = rest.substr(0, sp);
      rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
      return tok;
    };
    const bool padded = line[0] == ' ';
    std::string_view rest = padded ? line.substr(1) : line;
    const auto pcr = next(rest), hash = next(rest), tname = next(rest);
    Entry e;
    e.line = lineno;
    if (pcr.empty() || pcr.size() > (padded ? 1u : 2u) ||
        !std::all_of(pcr.begin(), pcr.end(), [](char c) { return c >= '0' && c <= '9'; }))
      Error(where, "expected \"PCR TEMPLATE-HASH TEMPLATE-NAME ...\" (PCR a number 0-23)");
    e.pcr = static_cast<uint32_t>(std::stoul(std::string(pcr)));
    if (e.pcr > 23) Error(where, "PCR " + std::string(pcr) + " out of range 0-23");
    if (hash.size() != 40 || !IsHex(hash))
      Error(where, "template hash must be 40 hex digits (SHA-1)");
    const Bytes h = FromHex(hash, where);
    std::copy(h.begin(), h.end(), e.sha1.begin());
    e.violation = std::all_of(h.begin(), h.end(), [](uint8_t b) { return b == 0; });
    if (tname.empty()) Error(where, "missing template name");
    e.template_name = tname;
    const auto t = LookupTemplate(tname);
    if (!t) {
      NoteUnknown(log, where, tname);
      log.entries.push_back(std::move(e));
      continue;
    }
    // One token per field (see the header for more or fewer tokens than fields).
    std::vector<std::string_view> toks;
    while (true) {
      const size_t sp = rest.find(' ');
      toks.push_back(rest.substr(0, sp));
      if (sp == std::string_view::npos) break;
      rest = rest.substr(sp + 1);
    }
    const size_t k = t->fields.size();
    std::vector<std::string_view> fields(k);
    const auto name_idx = static_cast<size_t>(
        std::find_if(t->fields.begin(), t->fields.end(), IsNameField) - t->fields.begin());
    if (toks.size() > k) {
      if (name_idx == k)
        Error(where, "expected " + std::to_string(k) + " template fields, found " +
                         std::to_string(toks.size()));
      const size_t extra = toks.size() - k;
      for (size_t i = 0; i < k; ++i) {
        if (i < name_idx) {
          fields[i] = toks[i];
        } else if (i == name_idx) {
          const char* b = toks[i].data();
          const char* en = toks[i + extra].data() + toks[i + extra].size();
          fields[i] = std::string_view(b, static_cast<size_t>(en - b));
        } else {
          fields[i] = toks[i + extra];
        }
      }
    } else {
      for (size_t i = 0; i < toks.size(); ++i) fields[i] = toks[i];
      for (size_t i = toks.size(); i < k; ++i)
        if (!MayBeEmpty(t->fields[i]))
          Error(where, "expected " + std::to_string(k) + " template fields, found " +
                           std::to_string(toks.size()));
    }
    if (t->legacy) {
      const Bytes d = RebuildField(Field::kD, fields[0], where);
      if (d.size() != kLegacyDigest && d.size() != 16)
        Error(where, "legacy \"ima\" file digest must be SHA-1 (40 hex digits) or MD5 (32)");
      if (fields[1].empty()) Error(where, "missing file name");
      e.template_data = LegacyHashInput(d, fields[1], where);
      e.file = fields[1];
    } else {
      for (size_t i = 0; i < k; ++i)
        PutField(e.template_data, RebuildField(t->fields[i], fields[i], where));
      if (name_idx < k) e.file = fields[name_idx];
    }
    log.entries.push_back(std::move(e));
  }
  if (log.entries.empty()) Error("line 1", "no measurement entries");
  return log;
}

Log ParseBinary(std::span<const uint8_t> d) {
  Log log;
  log.binary = true;
  size_t off = 0;
  while (off < d.size()) {
    const std::string where = "byte " + std::to_string(off);
    if (log.entries.size() >= kMaxEntries) Error(where, "too many entries");
    Entry e;
    e.line = off;
    if (d.size() - off < 4 + 20 + 4) Error(where, "truncated entry header");
    e.pcr = Le32(d, off);
    if (e.pcr > 23) Error(where, "PCR " + std::to_string(e.pcr) + " out of range 0-23");
    std::memcpy(e.sha1.data(), d.data() + off + 4, 20);
    e.violation = std::all_of(e.sha1.begin(), e.sha1.end(), [](uint8_t b) { return b == 0; });
    const uint32_t nlen = Le32(d, off + 24);
    off += 28;
    if (nlen == 0 || nlen > 255 || d.size() - off < nlen) Error(where, "bad template name length");
    e.template_name.assign(d.begin() + static_cast<long>(off),
                           d.begin() + static_cast<long>(off + nlen));
    off += nlen;
    const auto t = LookupTemplate(e.template_name);
    if (t && t->legacy) {
      // digest (no length), u32 strlen(name), name without NUL; no template data length.
      if (d.size() - off < kLegacyDigest + 4) Error(where, "truncated legacy \"ima\" entry");
      const auto digest = d.subspan(off, kLegacyDigest);
      const uint32_t len = Le32(d, off + kLegacyDigest);
      off += kLegacyDigest + 4;
      if (len > 255 || d.size() - off < len)
        Error(where, "bad legacy \"ima\" name length " + std::to_string(len));
      const std::string name = Str(d.subspan(off, len));
      off += len;
      e.template_data = LegacyHashInput(digest, name, where);
      e.file = name;
      log.entries.push_back(std::move(e));
      continue;
    }
    if (d.size() - off < 4) Error(where, "truncated template data length");
    const uint32_t dlen = Le32(d, off);
    off += 4;
    if (dlen > kMaxField || d.size() - off < dlen) Error(where, "bad template data length");
    e.template_data.assign(d.begin() + static_cast<long>(off),
                           d.begin() + static_cast<long>(off + dlen));
    off += dlen;
    if (!t)
      NoteUnknown(log, where, e.template_name);
    else
      e.file = CheckTemplateData(*t, e.template_data, where);
    log.entries.push_back(std::move(e));
  }
  return log;
}

const EVP_MD* Md(const char* name) {
  static const base::EvpMdPtr sha1(EVP_MD_fetch(nullptr, "SHA1", nullptr));
  static const base::EvpMdPtr sha256(EVP_MD_fetch(nullptr, "SHA256", nullptr));
  const EVP_MD* md = std::string_view(name) == "SHA1" ? sha1.get() : sha256.get();
  if (!md) throw AttestationError(std::string("OpenSSL: cannot fetch ") + name);
  return md;
}

Sha256Digest BankValue(const Entry& e, BankScheme s) {
  return s == BankScheme::kPerBank ? TemplateHashSha256(e) : PaddedSha1(e);
}

// The longest list prefix at which every listed PCR replays to its quoted value (0: none),
// and the PCRs that never match at any prefix, for the report.
struct Coverage {
  size_t covered = 0;
  std::vector<uint32_t> never;
};
Coverage Cover(const Log& log, const std::map<uint32_t, std::string>& quoted, BankScheme s) {
  std::map<uint32_t, Sha256Digest> value;
  std::map<uint32_t, bool> matched, ever;
  size_t mismatched = 0;
  for (const auto& [pcr, q] : quoted) {
    value[pcr] = Sha256Digest{};
    matched[pcr] = Str(value[pcr]) == q;
    ever[pcr] = matched[pcr];
    if (!matched[pcr]) ++mismatched;
  }
  Coverage c;
  for (size_t i = 0; i < log.entries.size(); ++i) {
    const auto& e = log.entries[i];
    auto& v = value[e.pcr];
    v = ExtendSha256(v, BankValue(e, s));
    const bool now = Str(v) == quoted.at(e.pcr);
    if (now && !matched[e.pcr]) --mismatched;
    if (!now && matched[e.pcr]) ++mismatched;
    matched[e.pcr] = now;
    if (now) ever[e.pcr] = true;
    if (mismatched == 0) c.covered = i + 1;
  }
  for (const auto& [pcr, m] : ever)
    if (!m) c.never.push_back(pcr);
  return c;
}

std::string PcrList(const std::vector<uint32_t>& pcrs) {
  std::string s;
  for (auto p : pcrs) s += (s.empty() ? "" : ", ") + std::to_string(p);
  return s;
}

}  // namespace

Log Parse(std::span<const uint8_t> data) {
  if (data.empty()) throw AttestationError("IMA log: empty (is IMA enabled on the node?)");
  // ascii lists start with the PCR number in decimal ("%2d": a space before PCRs 0-9); binary
  // ones with a little-endian u32 of at most 23.
  if ((data[0] >= '0' && data[0] <= '9') || data[0] == ' ')
    return ParseAscii(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
  if (data.size() >= 4 && Le32(data, 0) <= 23) return ParseBinary(data);
  throw AttestationError(
      "IMA log: byte 0: neither an ascii (\"PCR HASH TEMPLATE ...\") nor a binary measurement "
      "list");
}

Sha256Digest TemplateHashSha256(const Entry& e) {
  Sha256Digest out{};
  if (e.violation) {
    out.fill(0xff);
    return out;
  }
  unsigned n = 0;
  if (EVP_Digest(e.template_data.data(), e.template_data.size(), out.data(), &n, Md("SHA256"),
                 nullptr) != 1)
    throw AttestationError("OpenSSL: SHA-256 failed");
  return out;
}

Sha256Digest PaddedSha1(const Entry& e) {
  Sha256Digest out{};
  if (e.violation)
    std::fill_n(out.begin(), 20, 0xff);
  else
    std::copy(e.sha1.begin(), e.sha1.end(), out.begin());
  return out;
}

ReplayResult Replay(const Log& log, BankScheme scheme) {
  if (log.unknown_templates)
    throw AttestationError("IMA log: " + std::to_string(log.unknown_templates) +
                           " entries with an unknown template (first: " + log.first_unknown + ")");
  ReplayResult r;
  for (size_t i = 0; i < log.entries.size(); ++i) {
    const auto& e = log.entries[i];
    if (!e.violation && r.first_tampered == SIZE_MAX) {
      std::array<uint8_t, 20> sha1{};
      unsigned n = 0;
      if (EVP_Digest(e.template_data.data(), e.template_data.size(), sha1.data(), &n, Md("SHA1"),
                     nullptr) != 1)
        throw AttestationError("OpenSSL: SHA-1 failed");
      if (sha1 != e.sha1) r.first_tampered = i;
    }
    auto [it, inserted] = r.pcrs.try_emplace(e.pcr, Sha256Digest{});
    it->second = ExtendSha256(it->second, BankValue(e, scheme));
  }
  return r;
}

CheckResult Check(const v1::Evidence& ev, bool pcrs_ok) {
  const std::string name = "eventlog.ima";
  if (!ev.logs().has_ima_ascii())
    return NotApplicable(name, kReasonNotVerified, "no logs.ima_ascii: the IMA PCR is unverified");
  ima::Log log;
  try {
    log = ima::Parse(U8(ev.logs().ima_ascii()));
  } catch (const AttestationError& e) {
    return Fail(name, kReasonImaLogMalformed, std::string("logs.ima_ascii: ") + e.what());
  }
  if (log.unknown_templates)
    return Fail(name, kReasonImaUnknownTemplate,
                std::to_string(log.unknown_templates) +
                    " entries with a template this verifier cannot replay (first: " +
                    log.first_unknown + "): reported, not accepted");
  const std::string where = log.binary ? "byte " : "line ";
  // Every PCR the list extends must be quoted.
  std::map<uint32_t, std::string> quoted;
  for (const auto& e : log.entries) {
    if (quoted.contains(e.pcr)) continue;
    const v1::PcrValue* q = nullptr;
    for (const auto& p : ev.quote().pcrs())
      if (p.index() == e.pcr) q = &p;
    if (!q)
      return Fail(name, kReasonImaPcrNotQuoted,
                  "logs.ima_ascii " + where + std::to_string(e.line) + " extends PCR " +
                      std::to_string(e.pcr) +
                      ", which is not in quote.pcrs: its entries cannot be verified");
    quoted.emplace(e.pcr, q->sha256());
  }
  std::vector<uint32_t> pcrs;
  for (const auto& [p, q] : quoted) pcrs.push_back(p);
  const std::string pcr_names = (pcrs.size() == 1 ? "PCR " : "PCRs ") + PcrList(pcrs);

  BankScheme scheme = BankScheme::kPerBank;
  const Coverage exact = Cover(log, quoted, BankScheme::kPerBank);
  Coverage cov = exact;
  if (exact.covered == 0) {
    cov = Cover(log, quoted, BankScheme::kPaddedSha1);
    scheme = BankScheme::kPaddedSha1;
  }
  if (cov.covered == 0) {
    std::string why;
    if (!exact.never.empty() || pcrs.size() == 1) {
      const uint32_t p = exact.never.empty() ? pcrs[0] : exact.never[0];
      why = "does not replay to quoted PCR " + std::to_string(p) + " " + ToHex(U8(quoted.at(p))) +
            " at any length: an entry is missing, extra or altered";
      if (exact.never.size() > 1) why += " (nor do PCRs " + PcrList(exact.never) + ")";
    } else {
      why = "replays to each of quoted " + pcr_names +
            " at some length but never at the same position in the list: entries are out of "
            "order or moved between PCRs";
    }
    return Fail(name, kReasonImaReplayMismatch,
                "logs.ima_ascii (" + std::to_string(log.entries.size()) + " entries) " + why +
                    "; SHA-1 template hashes zero-padded into the SHA-256 bank (kernel before "
                    "5.10) do not match either");
  }
  const size_t covered = cov.covered;
  // Entries the quote covers must also be intact in the SHA-1 template hash the list shows.
  ima::Log prefix = log;
  prefix.entries.resize(covered);
  const auto replay = ima::Replay(prefix, scheme);
  if (replay.first_tampered != SIZE_MAX) {
    const auto& e = log.entries[replay.first_tampered];
    return Fail(name, kReasonImaEntryTampered,
                "logs.ima_ascii " + where + std::to_string(e.line) + " (" + e.file +
                    "): template data does not hash to its listed template hash");
  }
  if (!pcrs_ok)
    return Fail(name, kReasonDependencyFailed,
                "logs.ima_ascii matches quote.pcrs, but quote.pcrs are not the signed values");
  return Pass(name, std::to_string(covered) + " entries replay to " + pcr_names +
                        (scheme == BankScheme::kPaddedSha1
                             ? " with SHA-1 template hashes zero-padded into the SHA-256 bank "
                               "(kernel before 5.10)"
                             : "") +
                        (covered < log.entries.size()
                             ? " (" + std::to_string(log.entries.size() - covered) +
                                   " later entries not yet covered by the quote)"
                             : ""));
}

}  // namespace sovguard::attestation::verify::ima
