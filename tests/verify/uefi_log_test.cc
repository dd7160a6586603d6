// Unit tests of the UEFI (TCG crypto-agile) event log parser on the real logs in
// shared/data/eventlogs: every real log parses and replays to the PCR values tpm2_eventlog
// (tpm2-tools, the independent peer) printed for it; the bogus and empty logs are clear errors.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "attestation/verify/uefi_log.h"

namespace sovguard::attestation::verify {
namespace {

const std::filesystem::path kLogs = std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) / "eventlogs";

// The sha256 entries of the `pcrs:` section of tpm2_eventlog's YAML.
std::map<uint32_t, std::string> YamlSha256Pcrs(const std::filesystem::path& yaml) {
  std::ifstream in(yaml);
  std::map<uint32_t, std::string> out;
  std::string line;
  bool in_pcrs = false, in_sha256 = false;
  const std::regex entry(R"(^\s+(\d+)\s*:\s*0x([0-9a-fA-F]{64})\s*$)");
  while (std::getline(in, line)) {
    if (line == "pcrs:") {
      in_pcrs = true;
      continue;
    }
    if (!in_pcrs) continue;
    if (line.rfind("  sha256:", 0) == 0) {
      in_sha256 = true;
      continue;
    }
    std::smatch m;
    if (in_sha256 && std::regex_match(line, m, entry))
      out[static_cast<uint32_t>(std::stoul(m[1]))] = m[2];
    else if (in_sha256)
      break;
  }
  return out;
}

TEST(UefiLog, RealLogsReplayToTheValuesTpm2EventlogComputes) {
  for (const char* name :
       {"event-arch-linux.bin", "event-gce-ubuntu-2104-log.bin", "event-sd-boot-fedora37.bin"}) {
    const auto path = kLogs / "tpm2-tools" / name;
    auto log = uefi::Parse(ReadFileBytes(path));
    EXPECT_GT(log.events.size(), 10u) << name;
    auto replayed = uefi::Replay(log);
    auto want = YamlSha256Pcrs(path.string() + ".yaml");
    ASSERT_FALSE(want.empty()) << name;
    for (const auto& [pcr, hex] : want) {
      auto it = replayed.find(pcr);
      const Sha256Digest v = it != replayed.end() ? it->second : Sha256Digest{};
      EXPECT_EQ(ToHex(v), ToHex(FromHex(hex))) << name << " PCR " << pcr;
    }
  }
  for (const char* name : {"binary_bios_measurements", "binary_bios_measurements-secureboot"}) {
    auto log = uefi::Parse(ReadFileBytes(kLogs / "keylime" / name));
    EXPECT_GT(log.events.size(), 10u) << name;
    EXPECT_FALSE(uefi::Replay(log).empty()) << name;
  }
}

TEST(UefiLog, BogusEmptyAndTruncatedLogsAreClearErrors) {
  auto expect_error = [](const Bytes& data, const std::string& needle) {
    try {
      uefi::Parse(data);
      ADD_FAILURE() << "parsed, expected an error containing \"" << needle << "\"";
    } catch (const AttestationError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(ReadFileBytes(kLogs / "keylime/binary_bios_measurements-empty"), "empty");
  expect_error(ReadFileBytes(kLogs / "keylime/binary_bios_measurements-bogus"), "byte 0");
  auto real = ReadFileBytes(kLogs / "keylime/binary_bios_measurements");
  // Every truncation is either a shorter valid log (cut between events) or an error naming
  // the byte offset; never a crash.
  size_t errors = 0;
  for (size_t n = 1; n < real.size(); n += 13) {
    try {
      uefi::Parse(std::span(real.data(), n));
    } catch (const AttestationError& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find("byte"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(errors, 0u);
}

}  // namespace
}  // namespace sovguard::attestation::verify

namespace sovguard::attestation::verify {
namespace {

// Every event of every real log has a type the TCG PC Client profile defines (so the verifier's
// unknown-type check does not fire on real firmware), and unknown numbers have no name.
TEST(UefiLog, RealLogsUseOnlyDefinedEventTypes) {
  const auto dir = std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) / "eventlogs";
  for (const char* f :
       {"tpm2-tools/event-arch-linux.bin", "tpm2-tools/event-gce-ubuntu-2104-log.bin",
        "tpm2-tools/event-sd-boot-fedora37.bin", "keylime/binary_bios_measurements",
        "keylime/binary_bios_measurements-secureboot"}) {
    for (const auto& e : uefi::Parse(ReadFileBytes(dir / f)).events)
      EXPECT_FALSE(uefi::EventTypeName(e.type).empty())
          << f << " byte " << e.offset << " type " << e.type;
  }
  EXPECT_EQ(uefi::EventTypeName(0x0000000D), "EV_IPL");
  EXPECT_EQ(uefi::EventTypeName(0x800000E0), "EV_EFI_VARIABLE_AUTHORITY");
  EXPECT_TRUE(uefi::EventTypeName(0x7e7e7e7e).empty());
  EXPECT_TRUE(uefi::EventTypeName(0x80000011).empty());
}

}  // namespace
}  // namespace sovguard::attestation::verify
