// IMA measurement lists: the real keylime ascii list (shared/data), synthetic ascii/binary lists
// (ima-ng, ima-sig with and without signature, names with spaces), bogus and empty input.
#include "attestation/verify/ima_log.h"

#include <gtest/gtest.h>

namespace sovguard::attestation::verify {
namespace {

const std::filesystem::path kShared = std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) / "eventlogs";
const std::filesystem::path kCorpus =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/corpus/ima";

std::string ParseError(const Bytes& b) {
  try {
    ima::Parse(b);
  } catch (const AttestationError& e) {
    return e.what();
  }
  return "";
}

TEST(ImaLog, RealKeylimeListReplays) {
  auto log = ima::Parse(ReadFileBytes(kShared / "keylime/ima-log-sha256"));
  ASSERT_EQ(log.entries.size(), 2u);
  EXPECT_FALSE(log.binary);
  EXPECT_EQ(log.entries[0].file, "boot_aggregate");
  EXPECT_EQ(log.entries[1].file, "/data");
  auto r = ima::Replay(log);
  // Every rebuilt template hashes to the SHA-1 template hash the kernel listed.
  EXPECT_EQ(r.first_tampered, SIZE_MAX);
  // Computed independently (Python hashlib over the ima-ng template data).
  EXPECT_EQ(ToHex(r.pcrs.at(10)),
            "8dcd5e7eb63e363377ec19b0d358601ccc19f25a30486f35784c5288dbb91d9d");
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

TEST(ImaLog, TamperedEntryIsFound) {
  auto text = ReadFileBytes(kShared / "keylime/ima-log-sha256");
  std::string s(text.begin(), text.end());
  s.replace(s.find("/data"), 5, "/date");  // another file name, same listed template hash
  auto r = ima::Replay(ima::Parse(Bytes(s.begin(), s.end())));
  EXPECT_EQ(r.first_tampered, 1u);
}

TEST(ImaLog, ViolationsAndUnknownTemplates) {
  auto log = ima::Parse(ReadFileBytes(kCorpus / "violation-and-legacy.ascii"));
  ASSERT_EQ(log.entries.size(), 2u);
  EXPECT_TRUE(log.entries[0].violation);
  Sha256Digest ff;
  ff.fill(0xff);
  EXPECT_EQ(ima::TemplateHashSha256(log.entries[0]), ff);
  EXPECT_EQ(log.unknown_templates, 1u);
  EXPECT_NE(log.first_unknown.find("line 2: template \"ima\""), std::string::npos);
  EXPECT_THROW(ima::Replay(log), AttestationError);  // reported, never replayed as understood
}

TEST(ImaLog, BogusAndEmptyGiveClearErrors) {
  EXPECT_NE(ParseError({}).find("empty"), std::string::npos);
  EXPECT_NE(ParseError(ReadFileBytes(kCorpus / "bogus")).find("byte 0"), std::string::npos);
  EXPECT_NE(
      ParseError(ReadFileBytes(kShared / "keylime/binary_bios_measurements-bogus")).find("IMA log"),
      std::string::npos);
  // A UEFI log is not an IMA list.
  EXPECT_FALSE(ParseError(ReadFileBytes(kShared / "keylime/binary_bios_measurements")).empty());
  const std::string bad_hash = "10 abc ima-ng sha256:00 /x\n";
  EXPECT_NE(ParseError(Bytes(bad_hash.begin(), bad_hash.end())).find("line 1"), std::string::npos);
  // Every truncation of the binary list: an error, never a crash.
  auto bin = ReadFileBytes(kCorpus / "synthetic.bin");
  for (size_t n = 1; n < bin.size(); ++n) {
    try {
      ima::Parse(std::span(bin.data(), n));
    } catch (const AttestationError&) {
    }
  }
}

}  // namespace
}  // namespace sovguard::attestation::verify
