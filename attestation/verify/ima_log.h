// Linux IMA runtime measurement list: parse (ascii_runtime_measurements or
// binary_runtime_measurements) and replay of the SHA-256 PCR bank.
//
// Template data. The kernel hashes each entry's template data; the lists show only the SHA-1
// template hash. Every entry's template data is rebuilt (ascii) or taken as listed (binary) and
// Entry::template_data holds exactly the bytes the kernel hashes:
//   - every template but the legacy "ima": per field u32le(len) || field data. Field data
//     (security/integrity/ima/ima_template_lib.c):
//       d-ng, d-modsig: "<algo>:" NUL digest            ascii "algo:HEX" (d-modsig may be empty;
//                       an empty algo name is shown as the bare HEX)
//       d-ngv2:         "<ima|verity>:<algo>:" NUL digest  ascii "type:algo:HEX"
//       d:              the raw digest                     ascii HEX
//       n-ng, n:        name NUL                           ascii name
//       sig, buf, modsig, evmsig, xattrlengths, xattrvalues: raw bytes, ascii HEX (may be empty)
//       xattrnames:     "a|b|c" NUL, or empty              ascii a|b|c
//       iuid, igid:     u32 (unsigned int), imode: u16, or empty (no file); ascii decimal.
//     Templates: ima-ng d-ng|n-ng, ima-sig d-ng|n-ng|sig, ima-ngv2 d-ngv2|n-ng,
//     ima-sigv2 d-ngv2|n-ng|sig, ima-buf d-ng|n-ng|buf, ima-modsig d-ng|n-ng|sig|d-modsig|modsig,
//     evm-sig d-ng|n-ng|evmsig|xattrnames|xattrlengths|xattrvalues|iuid|igid|imode; a custom
//     template (ima_template_fmt=) is listed under its format string, e.g. "d-ng|n-ng|iuid", and
//     is understood the same way when every field id is one of the above.
//   - legacy "ima" (d|n): 20-byte SHA-1 file digest || name zero-padded to 256 bytes
//     (IMA_EVENT_NAME_LEN_MAX + 1), no length prefixes (ima_calc_field_array_hash_tfm).
//     The binary list carries it as digest (no length) || u32 strlen(name) || name (no NUL) and
//     no template data length (ima_fs.c). MD5 digests (ima_hash=md5) are accepted in the ascii
//     list only: the binary list gives no way to tell 16 from 20 bytes.
// Ascii line: "PCR HASH NAME f1 f2 ... fk" with one space before every field, even an empty one
// (so "ima-sig ... /bin/x " with an empty signature ends in a space); PCR is printed "%2d", so
// PCRs 0-9 have a leading space. The kernel writes names with '_' for ' ', so fields split at
// spaces; a line with more tokens than fields gives the extra ones to the name field (names with
// spaces from other tools), one with fewer leaves the missing trailing fields empty (trailing
// whitespace stripped), and either way the SHA-1 check below decides whether the rebuild is
// right. uid/gid/mode are rebuilt little-endian (x86-64, or ima_canonical_fmt).
// The SHA-1 of the template data must equal the SHA-1 template hash the list shows, which
// catches an altered entry even though the SHA-1 bank is not quoted. A violation entry (template
// hash all zero) is extended as all-0xFF and its data is not checked. Templates or field ids not
// listed above are reported as unknown, never replayed as if understood.
// Binary list entry: u32 pcr, 20-byte SHA-1 template hash, u32 name length, template name,
// u32 data length (not for "ima"), template data (host byte order: little-endian on x86-64).
//
// Replay and coverage (Check). Every PCR the list names (IMA policy rules may say pcr=N) must be
// in quote.pcrs (else IMA_PCR_NOT_QUOTED). The kernel appends an entry to the list before it
// extends, under one lock, so at the time of the quote the extended state is a prefix of the list
// in list order: the check looks for the longest prefix (entries 1..N) such that, for every PCR
// the list names, replaying that PCR's entries among the first N gives its quoted value (a PCR with
// no entry there must be quoted as zero). Entries after N are "not yet covered by the quote"
// (the list grows after the quote); there is no per-PCR cut: an entry moved between PCRs or out
// of order fails. Two bank schemes are tried, in this order:
//   1. per-bank template hashes (kernel 5.10 and later): the SHA-256 bank is extended with
//      SHA-256(template data), a violation with 32 x 0xFF;
//   2. kernels before 5.10 extend every bank with the SHA-1 template hash zero-padded to the
//      bank size (a violation: 20 x 0xFF then zeros). The listed SHA-1 is then what is bound, so
//      the SHA-1 check of every covered entry is what ties the template data to the quote.
// Covered entries must pass the SHA-1 check in either scheme (IMA_ENTRY_TAMPERED).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/common/bytes.h"
#include "attestation/verify/verifier.h"

namespace sovguard::attestation::verify::ima {

struct Entry {
  uint32_t pcr = 10;
  std::string template_name;
  Bytes template_data;             // exactly what the kernel hashes (see above)
  std::array<uint8_t, 20> sha1{};  // the listed SHA-1 template hash
  bool violation = false;
  std::string file;  // n-ng / n field, for reports
  size_t line = 0;   // 1-based line (ascii) or byte offset (binary)
};

struct Log {
  std::vector<Entry> entries;
  bool binary = false;
  size_t unknown_templates = 0;  // entries whose template is not understood (see above)
  std::string first_unknown;     // "line N: template X"
};

// Throws AttestationError naming the line (ascii) or byte offset (binary) and what was expected.
// Empty input is an error (IMA always records boot_aggregate first).
Log Parse(std::span<const uint8_t> data);

// How the SHA-256 bank was extended (see the header comment).
enum class BankScheme { kPerBank, kPaddedSha1 };

struct ReplayResult {
  std::map<uint32_t, Sha256Digest> pcrs;  // SHA-256 bank values per PCR, from zero
  size_t first_tampered = SIZE_MAX;       // first entry whose data does not hash to its SHA-1
};
// Throws AttestationError if the log has an entry with an unknown template.
ReplayResult Replay(const Log& log, BankScheme scheme = BankScheme::kPerBank);

// The verifier's eventlog.ima check: logs.ima_ascii of `ev` parsed, replayed against the quoted
// PCR values and checked entry by entry (pcrs_ok: quote.pcrs are the signed values).
CheckResult Check(const v1::Evidence& ev, bool pcrs_ok);

// SHA-256 template hash the kernel extends for `e` (all-0xFF for a violation).
Sha256Digest TemplateHashSha256(const Entry& e);
// What a kernel before 5.10 extends into the SHA-256 bank: the listed SHA-1 template hash
// (20 x 0xFF for a violation) zero-padded to 32 bytes.
Sha256Digest PaddedSha1(const Entry& e);

}  // namespace sovguard::attestation::verify::ima
