#include "attestation/verify/ima_log.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <string_view>

#include "attestation/verify/verifier.h"

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

bool IsKnownTemplate(std::string_view t) {
  return t == "ima-ng" || t == "ima-sig";
}

// The n-ng field of ima-ng/ima-sig template data, for reports; checks the field layout.
std::string CheckTemplateData(const Entry& e, const std::string& where) {
  const auto& d = e.template_data;
  size_t off = 0;
  std::string name;
  const int nfields = e.template_name == "ima-sig" ? 3 : 2;
  for (int f = 0; f < nfields; ++f) {
    if (d.size() - off < 4) Error(where, "template data truncated in field " + std::to_string(f));
    const uint32_t len = Le32(d, off);
    off += 4;
    if (d.size() - off < len) Error(where, "template field " + std::to_string(f) + " truncated");
    if (f == 0 &&
        (std::find(d.begin() + static_cast<long>(off), d.begin() + static_cast<long>(off + len),
                   0) == d.begin() + static_cast<long>(off + len)))
      Error(where, "d-ng field has no \"algo:\\0\" prefix");
    if (f == 1) {
      if (len == 0 || d[off + len - 1] != 0) Error(where, "n-ng field is not NUL-terminated");
      name.assign(d.begin() + static_cast<long>(off), d.begin() + static_cast<long>(off + len - 1));
    }
    off += len;
  }
  if (off != d.size()) Error(where, "trailing bytes after the template fields");
  return name;
}

bool IsHex(std::string_view s) {
  return !s.empty() && s.size() % 2 == 0 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isxdigit(static_cast<unsigned char>(c));
  });
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
    // "PCR TEMPLATE-HASH TEMPLATE-NAME FIELDS..."
    auto next = [&](std::string_view& rest) {
      const size_t sp = rest.find(' ');
      std::string_view tok = rest.substr(0, sp);
      rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
      return tok;
    };
    std::string_view rest = line;
    const auto pcr = next(rest), hash = next(rest), tname = next(rest);
    Entry e;
    e.line = lineno;
    if (pcr.empty() || pcr.size() > 2 ||
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
    if (!IsKnownTemplate(tname)) {
      if (log.unknown_templates++ == 0)
        log.first_unknown = where + ": template \"" + std::string(tname) + "\"";
      log.entries.push_back(std::move(e));
      continue;
    }
    // d-ng "algo:hex", then the file name (may contain spaces), then for ima-sig a signature.
    const auto dng = next(rest);
    const size_t colon = dng.find(':');
    if (colon == std::string_view::npos || colon == 0 || !IsHex(dng.substr(colon + 1)))
      Error(where, "file digest must be \"ALGO:HEX\"");
    std::string_view name = rest, sig;
    if (tname == "ima-sig") {
      const size_t sp = rest.rfind(' ');
      // An IMA signature starts with its type byte 0x03 (EVM_IMA_XATTR_DIGSIG v2): hex "03".
      if (sp != std::string_view::npos && IsHex(rest.substr(sp + 1)) &&
          rest.substr(sp + 1).rfind("03", 0) == 0) {
        name = rest.substr(0, sp);
        sig = rest.substr(sp + 1);
      }
    }
    if (name.empty()) Error(where, "missing file name");
    Bytes d;
    d.insert(d.end(), dng.begin(), dng.begin() + static_cast<long>(colon) + 1);
    d.push_back(0);
    const Bytes digest = FromHex(dng.substr(colon + 1), where);
    d.insert(d.end(), digest.begin(), digest.end());
    Bytes n(name.begin(), name.end());
    n.push_back(0);
    PutField(e.template_data, d);
    PutField(e.template_data, n);
    if (tname == "ima-sig") PutField(e.template_data, FromHex(sig, where));
    e.file = name;
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
    if (d.size() - off < 4) Error(where, "truncated template data length");
    const uint32_t dlen = Le32(d, off);
    off += 4;
    if (dlen > kMaxField || d.size() - off < dlen) Error(where, "bad template data length");
    e.template_data.assign(d.begin() + static_cast<long>(off),
                           d.begin() + static_cast<long>(off + dlen));
    off += dlen;
    if (!IsKnownTemplate(e.template_name)) {
      if (log.unknown_templates++ == 0)
        log.first_unknown = where + ": template \"" + e.template_name + "\"";
    } else {
      e.file = CheckTemplateData(e, where);
    }
    log.entries.push_back(std::move(e));
  }
  return log;
}

const EVP_MD* Md(const char* name) {
  static const std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> sha1(
      EVP_MD_fetch(nullptr, "SHA1", nullptr), &EVP_MD_free);
  static const std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> sha256(
      EVP_MD_fetch(nullptr, "SHA256", nullptr), &EVP_MD_free);
  const EVP_MD* md = std::string_view(name) == "SHA1" ? sha1.get() : sha256.get();
  if (!md) throw AttestationError(std::string("OpenSSL: cannot fetch ") + name);
  return md;
}

}  // namespace

Log Parse(std::span<const uint8_t> data) {
  if (data.empty()) throw AttestationError("IMA log: empty (is IMA enabled on the node?)");
  // ascii lists start with the PCR number in decimal; binary ones with a little-endian u32.
  if (data[0] >= '0' && data[0] <= '9')
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

ReplayResult Replay(const Log& log) {
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
    it->second = ExtendSha256(it->second, TemplateHashSha256(e));
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
  constexpr uint32_t kImaPcr = 10;
  const v1::PcrValue* quoted = nullptr;
  for (const auto& p : ev.quote().pcrs())
    if (p.index() == kImaPcr) quoted = &p;
  if (!quoted) return Fail(name, kReasonImaReplayMismatch, "PCR 10 is not in quote.pcrs");
  Sha256Digest pcr{};
  size_t covered = SIZE_MAX;
  for (size_t i = 0; i < log.entries.size(); ++i) {
    const auto& e = log.entries[i];
    if (e.pcr != kImaPcr)
      return Fail(name, kReasonImaReplayMismatch,
                  "logs.ima_ascii entry " + std::to_string(i) + " extends PCR " +
                      std::to_string(e.pcr) + " (only PCR 10 is verified)");
    pcr = ExtendSha256(pcr, ima::TemplateHashSha256(e));
    if (Str(pcr) == quoted->sha256()) covered = i + 1;
  }
  if (covered == SIZE_MAX)
    return Fail(name, kReasonImaReplayMismatch,
                "logs.ima_ascii (" + std::to_string(log.entries.size()) +
                    " entries) does not replay to quoted PCR 10 " + ToHex(U8(quoted->sha256())) +
                    " at any length: an entry is missing, extra or altered");
  // Entries the quote covers must also be intact in the SHA-1 template hash the list shows.
  ima::Log prefix = log;
  prefix.entries.resize(covered);
  const auto replay = ima::Replay(prefix);
  if (replay.first_tampered != SIZE_MAX) {
    const auto& e = log.entries[replay.first_tampered];
    return Fail(name, kReasonImaEntryTampered,
                "logs.ima_ascii " + std::string(log.binary ? "byte " : "line ") +
                    std::to_string(e.line) + " (" + e.file +
                    "): template data does not hash to its listed template hash");
  }
  if (!pcrs_ok)
    return Fail(name, kReasonDependencyFailed,
                "logs.ima_ascii matches quote.pcrs, but quote.pcrs are not the signed values");
  return Pass(name, std::to_string(covered) + " entries replay to PCR 10" +
                        (covered < log.entries.size()
                             ? " (" + std::to_string(log.entries.size() - covered) +
                                   " later entries not yet covered by the quote)"
                             : ""));
}

}  // namespace sovguard::attestation::verify::ima
