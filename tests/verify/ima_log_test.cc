// IMA measurement lists: the real keylime ascii list (shared/data) and real kernel lines of the
// legacy ima / ima-sig / ima-buf templates (tests/verify/data/ima), synthetic ascii/binary lists
// of every supported template, the eventlog.ima check (ima::Check) on evidence built here:
// per-bank and pre-5.10 (padded SHA-1) replay, several PCRs, tampering, bogus and empty input.
// Test vectors: template data laid out here per the kernel (ima_template_lib.c) and hashed with
// OpenSSL here, independently of the parser's own rebuild.
#include "attestation/verify/ima_log.h"
#include "base/openssl.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <map>
#include <string>
#include <vector>

namespace sovguard::attestation::verify {
namespace {

const std::filesystem::path kShared = std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) / "eventlogs";
const std::filesystem::path kCorpus =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/corpus/ima";
const std::filesystem::path kData =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/data/ima";

std::string ParseError(const Bytes& b) {
  try {
    ima::Parse(b);
  } catch (const AttestationError& e) {
    return e.what();
  }
  return "";
}

Bytes B(std::string_view s) {
  return Bytes(s.begin(), s.end());
}
std::string S(const Bytes& b) {
  return std::string(b.begin(), b.end());
}

Bytes Digest(const char* md, const Bytes& in) {
  base::EvpMdPtr m(EVP_MD_fetch(nullptr, md, nullptr));
  Bytes out(static_cast<size_t>(EVP_MD_get_size(m.get())));
  unsigned n = 0;
  EXPECT_EQ(EVP_Digest(in.data(), in.size(), out.data(), &n, m.get(), nullptr), 1);
  return out;
}
Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
Bytes Le(uint64_t v, int n) {
  Bytes b;
  for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  return b;
}
Bytes Field(const Bytes& v) {
  return Cat({Le(v.size(), 4), v});
}
Bytes Str0(std::string_view s) {
  return Cat({B(s), Bytes{0}});
}

// One list entry: what the kernel hashes, and how the ascii and binary lists show it.
struct TEntry {
  uint32_t pcr = 10;
  std::string tmpl;
  Bytes hashed;                     // the template data the kernel hashes
  Bytes binary_data;                // template data as the binary list carries it
  std::vector<std::string> tokens;  // ascii fields
  bool legacy = false;
  Bytes sha1_override;  // listed template hash instead of SHA-1(hashed), if set
  Bytes Sha1() const { return sha1_override.empty() ? Digest("SHA1", hashed) : sha1_override; }
};

TEntry Generic(std::string tmpl, std::vector<std::pair<Bytes, std::string>> fields,
               uint32_t pcr = 10) {
  TEntry e;
  e.pcr = pcr;
  e.tmpl = std::move(tmpl);
  for (auto& [data, tok] : fields) {
    e.hashed = Cat({e.hashed, Field(data)});
    e.tokens.push_back(tok);
  }
  e.binary_data = e.hashed;
  return e;
}
std::pair<Bytes, std::string> Dng(std::string_view algo, const Bytes& d) {
  return {Cat({B(algo), B(":"), Bytes{0}, d}), std::string(algo) + ":" + ToHex(d)};
}
std::pair<Bytes, std::string> Name(std::string_view n) {
  return {Str0(n), std::string(n)};
}
std::pair<Bytes, std::string> HexF(const Bytes& b) {
  return {b, ToHex(b)};
}

const Bytes kFile = Digest("SHA256", B("file contents"));

TEntry Boot(uint32_t pcr = 10) {
  return Generic("ima-ng", {Dng("sha256", Digest("SHA256", B("boot"))), Name("boot_aggregate")},
                 pcr);
}
TEntry NgEntry(std::string_view file, uint32_t pcr = 10) {
  return Generic("ima-ng", {Dng("sha256", Digest("SHA256", B(file))), Name(file)}, pcr);
}
TEntry Legacy(std::string_view file) {
  TEntry e;
  e.tmpl = "ima";
  e.legacy = true;
  const Bytes d = Digest("SHA1", B(file));
  Bytes name = B(file);
  name.resize(256, 0);  // IMA_EVENT_NAME_LEN_MAX + 1, no length prefixes
  e.hashed = Cat({d, name});
  e.binary_data = Cat({d, Le(file.size(), 4), B(file)});  // no data length, name without NUL
  e.tokens = {ToHex(d), std::string(file)};
  return e;
}

std::string Ascii(const std::vector<TEntry>& list) {
  std::string out;
  for (const auto& e : list) {
    out += (e.pcr < 10 ? " " : "") + std::to_string(e.pcr) + " " + ToHex(e.Sha1()) + " " + e.tmpl;
    for (const auto& t : e.tokens) out += " " + t;
    out += "\n";
  }
  return out;
}
Bytes Binary(const std::vector<TEntry>& list) {
  Bytes out;
  for (const auto& e : list)
    out = Cat({out, Le(e.pcr, 4), e.Sha1(), Le(e.tmpl.size(), 4), B(e.tmpl),
               e.legacy ? Bytes{} : Le(e.binary_data.size(), 4), e.binary_data});
  return out;
}

// Expected SHA-256 bank values, computed here.
std::map<uint32_t, Bytes> Pcrs(const std::vector<TEntry>& list, bool padded_sha1 = false) {
  std::map<uint32_t, Bytes> pcrs;
  for (const auto& e : list) {
    auto [it, _] = pcrs.try_emplace(e.pcr, Bytes(32, 0));
    const bool violation = e.Sha1() == Bytes(20, 0);  // extended as all-0xFF
    Bytes v = padded_sha1 ? Cat({violation ? Bytes(20, 0xff) : e.Sha1(), Bytes(12, 0)})
              : violation ? Bytes(32, 0xff)
                          : Digest("SHA256", e.hashed);
    it->second = Digest("SHA256", Cat({it->second, v}));
  }
  return pcrs;
}

v1::Evidence Ev(const std::string& list, const std::map<uint32_t, Bytes>& pcrs) {
  v1::Evidence ev;
  ev.mutable_logs()->set_ima_ascii(list);
  for (const auto& [i, v] : pcrs) {
    auto* p = ev.mutable_quote()->add_pcrs();
    p->set_index(i);
    p->set_sha256(S(v));
  }
  return ev;
}

::testing::AssertionResult Passes(const CheckResult& r) {
  if (r.status == Status::kPass) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << r.reason << ": " << r.detail;
}
::testing::AssertionResult FailsWith(const CheckResult& r, std::string_view reason) {
  if (r.status == Status::kFail && r.reason == reason) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected " << reason << ", got " << r.reason << ": " << r.detail;
}

TEST(ImaLog, RealKeylimeListReplays) {
  const auto bytes = ReadFileBytes(kShared / "keylime/ima-log-sha256");
  auto log = ima::Parse(bytes);
  ASSERT_EQ(log.entries.size(), 2u);
  EXPECT_FALSE(log.binary);
  EXPECT_EQ(log.entries[0].file, "boot_aggregate");
  EXPECT_EQ(log.entries[1].file, "/data");
  auto r = ima::Replay(log);
  // Every rebuilt template hashes to the SHA-1 template hash the kernel listed.
  EXPECT_EQ(r.first_tampered, SIZE_MAX);
  // Computed independently (Python hashlib over the ima-ng template data).
  const std::string pcr10 = "8dcd5e7eb63e363377ec19b0d358601ccc19f25a30486f35784c5288dbb91d9d";
  EXPECT_EQ(ToHex(r.pcrs.at(10)), pcr10);
  const auto res = ima::Check(Ev(S(bytes), {{10, FromHex(pcr10)}}), true);
  EXPECT_TRUE(Passes(res));
  EXPECT_EQ(res.detail, "2 entries replay to PCR 10");
}

// Real kernel lines of the legacy "ima", ima-sig (with and without signature) and ima-buf
// templates (keylime test data, see data/ima/SOURCE.md): every rebuilt template data hashes to
// the SHA-1 the kernel listed.
TEST(ImaLog, RealLinesOfOtherTemplatesRebuildExactly) {
  const auto bytes = ReadFileBytes(kData / "keylime-templates.ascii");
  auto log = ima::Parse(bytes);
  ASSERT_EQ(log.entries.size(), 7u);
  EXPECT_EQ(log.unknown_templates, 0u);
  EXPECT_EQ(log.entries[0].template_name, "ima");
  EXPECT_EQ(log.entries[0].file, "/usr/bin/kmod");
  EXPECT_EQ(log.entries[0].template_data.size(), 20u + 256u);
  EXPECT_EQ(log.entries[4].file,
            "/lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko");
  EXPECT_EQ(log.entries[6].file, "dm_table_load");
  const auto r = ima::Replay(log);
  EXPECT_EQ(r.first_tampered, SIZE_MAX);
  // One line altered anywhere in the data: the SHA-1 check finds it.
  for (size_t i = 0; i < log.entries.size(); ++i) {
    auto bad = log;
    bad.entries[i].template_data[bad.entries[i].template_data.size() / 2] ^= 1;
    EXPECT_EQ(ima::Replay(bad).first_tampered, i);
  }
  // The eventlog.ima check on a quote of these (replayed with both schemes).
  std::map<uint32_t, Bytes> pcr{{10, Bytes(r.pcrs.at(10).begin(), r.pcrs.at(10).end())}};
  EXPECT_TRUE(Passes(ima::Check(Ev(S(bytes), pcr), true)));
  const auto padded = ima::Replay(log, ima::BankScheme::kPaddedSha1);
  pcr[10] = Bytes(padded.pcrs.at(10).begin(), padded.pcrs.at(10).end());
  EXPECT_TRUE(Passes(ima::Check(Ev(S(bytes), pcr), true)));
}

TEST(ImaLog, AsciiAndBinaryAgree) {
  auto a = ima::Parse(ReadFileBytes(kCorpus / "synthetic.ascii"));
  auto b = ima::Parse(ReadFileBytes(kCorpus / "synthetic.bin"));
  EXPECT_TRUE(b.binary);
  ASSERT_EQ(a.entries.size(), 4u);
  ASSERT_EQ(b.entries.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(a.entries[i].template_data, b.entries[i].template_data) << i;
    EXPECT_EQ(a.entries[i].file, b.entries[i].file) << i;
  }
  EXPECT_EQ(a.entries[3].file, "/etc/file with spaces");
  EXPECT_EQ(a.entries[2].template_name, "ima-sig");
  auto ra = ima::Replay(a), rb = ima::Replay(b);
  EXPECT_EQ(ra.first_tampered, SIZE_MAX);
  EXPECT_EQ(rb.first_tampered, SIZE_MAX);
  EXPECT_EQ(ra.pcrs.at(10), rb.pcrs.at(10));
}

// One entry of each newly supported template, laid out per ima_template_lib.c.
std::vector<std::pair<std::string, TEntry>> TemplateCases() {
  const Bytes buf = B("root=/dev/vda1 ro");
  const Bytes modsig = Cat({Bytes{0x30, 0x82, 0x01, 0x0a}, B("pkcs7 appended signature")});
  const Bytes evmsig = Cat({Bytes{0x05, 0x02}, B("portable evm signature")});
  const Bytes lens = Cat({Le(10, 4), Le(12, 4)});
  const Bytes vals = Cat({Bytes(10, 0x03), B("system_u:o:\0")});
  return {
      {"ima", Legacy("/usr/bin/legacy")},
      {"ima-buf", Generic("ima-buf", {Dng("sha256", Digest("SHA256", buf)), Name("kexec-cmdline"),
                                      HexF(buf)})},
      {"ima-modsig", Generic("ima-modsig", {Dng("sha256", kFile), Name("/lib/modules/m.ko"),
                                            HexF({}), Dng("sha256", kFile), HexF(modsig)})},
      {"ima-modsig (no modsig)",
       Generic("ima-modsig", {Dng("sha512", Digest("SHA512", B("x"))), Name("/usr/bin/x"),
                              HexF(Cat({Bytes{3, 2}, B("imasig")})), HexF({}), HexF({})})},
      {"evm-sig",
       Generic("evm-sig", {Dng("sha256", kFile),
                           Name("/usr/bin/evm"),
                           HexF(evmsig),
                           {Str0("security.ima|security.selinux"), "security.ima|security.selinux"},
                           HexF(lens),
                           HexF(vals),
                           {Le(0, 4), "0"},
                           {Le(4294967294u, 4), "4294967294"},
                           {Le(0100755, 2), "33261"}})},
      {"evm-sig (no file)",
       Generic("evm-sig", {Dng("sha256", kFile), Name("boot_aggregate"), HexF({}), HexF({}),
                           HexF({}), HexF({}), HexF({}), HexF({}), HexF({})})},
      {"ima-ngv2", Generic("ima-ngv2", {{Cat({B("ima:sha256:"), Bytes{0}, kFile}),
                                         "ima:sha256:" + ToHex(kFile)},
                                        Name("/usr/bin/ngv2")})},
      {"ima-sigv2", Generic("ima-sigv2", {{Cat({B("verity:sha256:"), Bytes{0}, kFile}),
                                           "verity:sha256:" + ToHex(kFile)},
                                          Name("/usr/bin/sigv2"),
                                          HexF(Cat({Bytes{6, 2}, B("veritysig")}))})},
      {"ima-ng (empty algo name)",
       Generic("ima-ng",
               {{Cat({B(":"), Bytes{0}, Digest("SHA1", B("x"))}), ToHex(Digest("SHA1", B("x")))},
                Name("/usr/bin/old")})},
      {"custom d-ng|n-ng|iuid|igid",
       Generic("d-ng|n-ng|iuid|igid",
               {Dng("sha256", kFile), Name("/etc/c"), {Le(0, 4), "0"}, {Le(42, 4), "42"}})},
  };
}

TEST(ImaLog, EveryTemplatePassesAndTamperingFails) {
  for (const auto& [label, entry] : TemplateCases()) {
    SCOPED_TRACE(label);
    const std::vector<TEntry> list{Boot(), entry};
    const std::string ascii = Ascii(list);
    const Bytes bin = Binary(list);
    // The parser's rebuild (ascii) and the listed data (binary) are what the kernel hashes.
    for (const auto& in : {B(ascii), bin}) {
      auto log = ima::Parse(in);
      ASSERT_EQ(log.entries.size(), 2u);
      EXPECT_EQ(log.unknown_templates, 0u);
      EXPECT_EQ(log.entries[1].template_data, entry.hashed);
      EXPECT_EQ(log.entries[1].template_name, entry.tmpl);
      EXPECT_EQ(ima::Replay(log).first_tampered, SIZE_MAX);
    }
    const auto pcrs = Pcrs(list);
    EXPECT_TRUE(Passes(ima::Check(Ev(ascii, pcrs), true)));
    EXPECT_TRUE(Passes(ima::Check(Ev(S(bin), pcrs), true)));
    // The listed SHA-1 template hash altered: the SHA-256 replay still matches, the entry not.
    auto bad = list;
    bad[1].sha1_override = Digest("SHA1", B("something else"));
    const auto r = ima::Check(Ev(Ascii(bad), pcrs), true);
    EXPECT_TRUE(FailsWith(r, kReasonImaEntryTampered));
    EXPECT_NE(r.detail.find("line 2"), std::string::npos) << r.detail;
    EXPECT_TRUE(FailsWith(ima::Check(Ev(S(Binary(bad)), pcrs), true), kReasonImaEntryTampered));
    // Any ascii field altered (last hex digit of a hex field, a digit, a name): no longer replays.
    for (size_t f = 0; f < entry.tokens.size(); ++f) {
      if (entry.tokens[f].empty()) continue;
      auto alt = list;
      auto& tok = alt[1].tokens[f];
      tok.back() = tok.back() == '1' ? '2' : '1';
      alt[1].sha1_override = entry.Sha1();
      EXPECT_TRUE(FailsWith(ima::Check(Ev(Ascii(alt), pcrs), true), kReasonImaReplayMismatch))
          << "field " << f;
    }
  }
}

// Kernels before 5.10 extend the SHA-256 bank with the SHA-1 template hash zero-padded.
TEST(ImaLog, PaddedSha1BankOfOldKernels) {
  TEntry violation = NgEntry("/tmp/violation");
  violation.sha1_override = Bytes(20, 0);
  const std::vector<TEntry> list{Boot(), NgEntry("/usr/bin/a"), violation, Legacy("/usr/bin/b"),
                                 TemplateCases()[1].second};
  // The violation is extended as 20 x 0xFF then zeros (see Pcrs).
  const auto quoted = Pcrs(list, true);
  const std::string ascii = Ascii(list);
  auto r = ima::Check(Ev(ascii, quoted), true);
  ASSERT_TRUE(Passes(r));
  EXPECT_NE(r.detail.find("5 entries replay to PCR 10 with SHA-1 template hashes zero-padded into "
                          "the SHA-256 bank (kernel before 5.10)"),
            std::string::npos)
      << r.detail;
  EXPECT_TRUE(Passes(ima::Check(Ev(S(Binary(list)), quoted), true)));
  // The per-bank replay of the same list is a different value (and passes without the note).
  r = ima::Check(Ev(ascii, Pcrs(list)), true);
  ASSERT_TRUE(Passes(r));
  EXPECT_EQ(r.detail.find("zero-padded"), std::string::npos);
  // An entry altered but its listed SHA-1 kept: the padded replay still matches (only the
  // SHA-1 is bound), the SHA-1 check does not.
  auto renamed = ascii;
  renamed.replace(renamed.find("/usr/bin/a"), 10, "/usr/bin/z");
  r = ima::Check(Ev(renamed, quoted), true);
  EXPECT_TRUE(FailsWith(r, kReasonImaEntryTampered));
  EXPECT_NE(r.detail.find("line 2 (/usr/bin/z)"), std::string::npos) << r.detail;
  auto legacy_renamed = ascii;
  legacy_renamed.replace(legacy_renamed.find("/usr/bin/b"), 10, "/usr/bin/y");
  EXPECT_TRUE(FailsWith(ima::Check(Ev(legacy_renamed, quoted), true), kReasonImaEntryTampered));
  // The listed SHA-1 altered (consistently with the data or not): the padded replay breaks.
  auto resha = list;
  resha[1].sha1_override = Digest("SHA1", B("other"));
  r = ima::Check(Ev(Ascii(resha), quoted), true);
  EXPECT_TRUE(FailsWith(r, kReasonImaReplayMismatch));
  EXPECT_NE(r.detail.find("kernel before 5.10"), std::string::npos) << r.detail;
  // A later entry not yet covered.
  r = ima::Check(Ev(ascii + Ascii({NgEntry("/later")}), quoted), true);
  ASSERT_TRUE(Passes(r));
  EXPECT_NE(r.detail.find("1 later entries not yet covered"), std::string::npos) << r.detail;
}

TEST(ImaLog, SeveralPcrs) {
  const std::vector<TEntry> list{Boot(), NgEntry("/usr/bin/a"), NgEntry("/etc/x", 11),
                                 NgEntry("/usr/bin/b"), NgEntry("/etc/y", 11)};
  const std::string ascii = Ascii(list);
  const auto pcrs = Pcrs(list);
  ASSERT_EQ(pcrs.size(), 2u);
  auto r = ima::Check(Ev(ascii, pcrs), true);
  ASSERT_TRUE(Passes(r));
  EXPECT_EQ(r.detail, "5 entries replay to PCRs 10, 11");
  EXPECT_TRUE(Passes(ima::Check(Ev(S(Binary(list)), pcrs), true)));
  // PCR 11 not quoted.
  r = ima::Check(Ev(ascii, {{10, pcrs.at(10)}}), true);
  EXPECT_TRUE(FailsWith(r, verify::kReasonImaPcrNotQuoted));
  EXPECT_NE(r.detail.find("line 3 extends PCR 11, which is not in quote.pcrs"), std::string::npos)
      << r.detail;
  // An entry moved from PCR 11 to PCR 10 (or the other way).
  for (size_t i : {1, 2}) {
    auto moved = list;
    moved[i].pcr = moved[i].pcr == 10 ? 11 : 10;
    r = ima::Check(Ev(Ascii(moved), pcrs), true);
    EXPECT_TRUE(FailsWith(r, kReasonImaReplayMismatch)) << i;
  }
  // The quote taken after entry 3: entries 4-5 are later, whatever PCR they extend.
  const std::vector<TEntry> first3(list.begin(), list.begin() + 3);
  r = ima::Check(Ev(ascii, Pcrs(first3)), true);
  ASSERT_TRUE(Passes(r));
  EXPECT_EQ(r.detail,
            "3 entries replay to PCRs 10, 11 (2 later entries not yet covered by the "
            "quote)");
  // PCR 11 quoted before its first entry (zero), with PCR 10 at the end of the list: each PCR
  // matches at some length, but not at one position of the list.
  const std::vector<TEntry> ten{Boot(), NgEntry("/usr/bin/a"), NgEntry("/usr/bin/b")};
  auto mixed = Pcrs(ten);
  mixed[11] = Bytes(32, 0);
  r = ima::Check(Ev(ascii, mixed), true);
  EXPECT_TRUE(FailsWith(r, kReasonImaReplayMismatch));
  EXPECT_NE(r.detail.find("never at the same position"), std::string::npos) << r.detail;
  // A policy rule with pcr=5 (printed " 5" by the kernel) verifies the same way.
  const std::vector<TEntry> low{Boot(), NgEntry("/boot/x", 5)};
  r = ima::Check(Ev(Ascii(low), Pcrs(low)), true);
  EXPECT_TRUE(Passes(r));
  EXPECT_EQ(Ascii(low).substr(Ascii(low).find('\n') + 1, 3), " 5 ");
}

TEST(ImaLog, CheckKeepsItsReasons) {
  const std::vector<TEntry> list{Boot(), NgEntry("/usr/bin/a")};
  const std::string ascii = Ascii(list);
  const auto pcrs = Pcrs(list);
  EXPECT_TRUE(FailsWith(ima::Check(Ev(ascii, pcrs), false), kReasonDependencyFailed));
  EXPECT_TRUE(
      FailsWith(ima::Check(Ev(ascii, {{10, Bytes(32, 7)}}), true), kReasonImaReplayMismatch));
  EXPECT_TRUE(FailsWith(ima::Check(Ev("", pcrs), true), kReasonImaLogMalformed));
  auto r = ima::Check(Ev(ascii + "10 " + std::string(40, '1') + " ima-future sha256:00 /x\n", pcrs),
                      true);
  EXPECT_TRUE(FailsWith(r, kReasonImaUnknownTemplate));
  EXPECT_NE(r.detail.find("line 3: template \"ima-future\""), std::string::npos) << r.detail;
  v1::Evidence none;
  EXPECT_EQ(ima::Check(none, true).status, Status::kNotApplicable);
}

TEST(ImaLog, ViolationsAndUnknownTemplates) {
  auto log = ima::Parse(ReadFileBytes(kCorpus / "violation-and-legacy.ascii"));
  ASSERT_EQ(log.entries.size(), 2u);
  EXPECT_TRUE(log.entries[0].violation);
  Sha256Digest ff;
  ff.fill(0xff);
  EXPECT_EQ(ima::TemplateHashSha256(log.entries[0]), ff);
  Sha256Digest padded{};
  std::fill_n(padded.begin(), 20, 0xff);
  EXPECT_EQ(ima::PaddedSha1(log.entries[0]), padded);
  // The legacy "ima" line (MD5 digest) is understood now; its listed hash is made up.
  EXPECT_EQ(log.unknown_templates, 0u);
  EXPECT_EQ(log.entries[1].file, "/legacy");
  EXPECT_EQ(ima::Replay(log).first_tampered, 1u);
  // Unknown templates and custom formats with an unknown field: reported, never replayed.
  auto unknown = ima::Parse(ReadFileBytes(kCorpus / "unknown-template.ascii"));
  EXPECT_EQ(unknown.unknown_templates, 2u);
  EXPECT_NE(unknown.first_unknown.find("line 1: template \"ima-future\""), std::string::npos);
  EXPECT_THROW(ima::Replay(unknown), AttestationError);
}

TEST(ImaLog, BogusAndEmptyGiveClearErrors) {
  EXPECT_NE(ParseError({}).find("empty"), std::string::npos);
  EXPECT_NE(ParseError(ReadFileBytes(kCorpus / "bogus")).find("byte 0"), std::string::npos);
  EXPECT_NE(
      ParseError(ReadFileBytes(kShared / "keylime/binary_bios_measurements-bogus")).find("IMA log"),
      std::string::npos);
  // A UEFI log is not an IMA list.
  EXPECT_FALSE(ParseError(ReadFileBytes(kShared / "keylime/binary_bios_measurements")).empty());
  auto err = [](std::string_view s) { return ParseError(B(s)); };
  EXPECT_NE(err("10 abc ima-ng sha256:00 /x\n").find("line 1"), std::string::npos);
  const std::string h = " " + std::string(40, 'a') + " ";
  const std::string boot = "10" + h + "ima-ng sha256:00 boot_aggregate\n";
  // Errors in the new templates' fields name the line and what was expected.
  const std::pair<const char*, const char*> second_line[] = {
      {"evm-sig sha256:00 /x 00 a 00 00 12x 0 0", "line 2: iuid must be a decimal number"},
      {"evm-sig sha256:00 /x 00 a 00 00 0 0 65536", "line 2: imode out of range"},
      {"ima-buf sha256:00 name 0g", "line 2: buffer (buf) must be hex digits"},
      {"ima-ngv2 sha256:00 /x", "line 2: d-ngv2 file digest must be \"TYPE:ALGO:HEX\""},
      {"ima 00 /x", "line 2: legacy \"ima\" file digest"},
      {"ima-ng sha256:00", "line 2: expected 2 template fields"},
  };
  for (const auto& [entry, why] : second_line)
    EXPECT_NE(err(boot + "10" + h + entry + "\n").find(why), std::string::npos) << entry;
  EXPECT_NE(
      err(boot + "10" + h + "ima " + std::string(40, '0') + " /" + std::string(255, 'x') + "\n")
          .find("line 2: legacy \"ima\" name longer than 255"),
      std::string::npos);
  EXPECT_NE(err(" 10" + h + "ima-ng sha256:00 /x\n").find("line 1: expected \"PCR"),
            std::string::npos);
  // Binary: a field layout that does not fit the template, with its byte offset.
  {
    auto bin = Binary({Boot(), Generic("ima-buf", {Dng("sha256", kFile), Name("n")})});
    const size_t second = Binary({Boot()}).size();
    EXPECT_NE(ParseError(bin).find("byte " + std::to_string(second) +
                                   ": template data truncated in field 2"),
              std::string::npos)
        << ParseError(bin);
    auto nonul = Binary({Generic("ima-ng", {Dng("sha256", kFile), {B("x"), "x"}})});
    EXPECT_NE(ParseError(nonul).find("byte 0: template field 1 (a string) is not NUL-terminated"),
              std::string::npos);
  }
  // Every truncation of every binary seed: an error, never a crash.
  for (const auto& f : std::filesystem::directory_iterator(kCorpus)) {
    if (f.path().extension() != ".bin") continue;
    auto bin = ReadFileBytes(f.path());
    EXPECT_NO_THROW(ima::Replay(ima::Parse(bin))) << f.path();
    for (size_t n = 1; n < bin.size(); ++n) {
      try {
        ima::Parse(std::span(bin.data(), n));
      } catch (const AttestationError&) {
      }
    }
  }
}

// The committed seeds (written by data/ima/gen_seeds.py with Python hashlib) agree with the
// parser: ascii and binary give the same template data and it hashes to the listed SHA-1.
TEST(ImaLog, GeneratedSeedsAgree) {
  size_t n = 0;
  for (const auto& f : std::filesystem::directory_iterator(kCorpus)) {
    const auto stem = f.path().stem().string();
    if (f.path().extension() != ".ascii" || (stem.rfind("tmpl-", 0) != 0 && stem != "multi-pcr"))
      continue;
    SCOPED_TRACE(stem);
    auto a = ima::Parse(ReadFileBytes(f.path()));
    auto b = ima::Parse(ReadFileBytes(kCorpus / (stem + ".bin")));
    ASSERT_EQ(a.entries.size(), b.entries.size());
    for (size_t i = 0; i < a.entries.size(); ++i) {
      EXPECT_EQ(a.entries[i].template_data, b.entries[i].template_data) << i;
      EXPECT_EQ(a.entries[i].pcr, b.entries[i].pcr) << i;
    }
    EXPECT_EQ(ima::Replay(a).first_tampered, SIZE_MAX);
    ++n;
  }
  EXPECT_EQ(n, 8u);
}

}  // namespace
}  // namespace sovguard::attestation::verify
