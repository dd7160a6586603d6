// Linux IMA runtime measurement list: parse (ascii_runtime_measurements or
// binary_runtime_measurements) and replay of the SHA-256 PCR bank.
//
// The kernel extends each bank with the template hash computed with that bank's algorithm over
// the entry's template data; the lists show only the SHA-1 template hash. So the SHA-256 bank is
// replayed by rebuilding the template data of each entry and hashing it:
//   ima-ng:  d-ng = u32le(len) || "<algo>:" || 0x00 || file digest,  n-ng = u32le(len) || name ||
//   0x00 ima-sig: ima-ng fields, then sig = u32le(len) || signature (len may be 0)
// The SHA-1 of the same template data must equal the SHA-1 template hash the list shows, which
// catches an altered entry even though the SHA-1 bank is not quoted. A violation entry (template
// hash all zero) is extended as all-0xFF. Other templates (e.g. the legacy "ima") are reported
// as unknown, never replayed as if understood.
// Binary list entry: u32 pcr, 20-byte SHA-1 template hash, u32 name length, template name,
// u32 data length, template data (host byte order: little-endian on x86-64).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "attestation/common/bytes.h"
#include "attestation/verify/verifier.h"

namespace sovguard::attestation::verify::ima {

struct Entry {
  uint32_t pcr = 10;
  std::string template_name;
  Bytes template_data;             // rebuilt (ascii) or as listed (binary)
  std::array<uint8_t, 20> sha1{};  // the listed SHA-1 template hash
  bool violation = false;
  std::string file;  // n-ng field, for reports
  size_t line = 0;   // 1-based line (ascii) or byte offset (binary)
};

struct Log {
  std::vector<Entry> entries;
  bool binary = false;
  size_t unknown_templates = 0;  // entries whose template is not ima-ng / ima-sig
  std::string first_unknown;     // "line N: template X"
};

// Throws AttestationError naming the line (ascii) or byte offset (binary) and what was expected.
// Empty input is an error (IMA always records boot_aggregate first).
Log Parse(std::span<const uint8_t> data);

struct ReplayResult {
  std::map<uint32_t, Sha256Digest> pcrs;  // SHA-256 bank values per PCR, from zero
  size_t first_tampered = SIZE_MAX;       // first entry whose data does not hash to its SHA-1
};
ReplayResult Replay(const Log& log);

// The verifier's eventlog.ima check: logs.ima_ascii of `ev` parsed, replayed against the quoted
// PCR values and checked entry by entry (pcrs_ok: quote.pcrs are the signed values).
CheckResult Check(const v1::Evidence& ev, bool pcrs_ok);

// SHA-256 template hash the kernel extends for `e` (all-0xFF for a violation).
Sha256Digest TemplateHashSha256(const Entry& e);

}  // namespace sovguard::attestation::verify::ima
