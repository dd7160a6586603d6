#include "enforcer/daemon/config.h"
#include "enforcer/daemon/log.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace sd = sovguard::daemon;

namespace {

std::filesystem::path WriteTemp(const std::string& name, const std::string& content) {
  const auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path) << content;
  return path;
}

TEST(DaemonConfig, DefaultsAreTheNewcomerPath) {
  const sd::Config c;
  EXPECT_EQ(c.libvirt_uri, "qemu:///system");
  EXPECT_EQ(c.tpm, "auto");
  EXPECT_TRUE(c.start_swtpm);
  EXPECT_TRUE(c.policy_bundle.empty());
}

TEST(DaemonConfig, ParsesKeysCommentsAndBlankLines) {
  const auto f = WriteTemp("sg-config-ok.conf",
                           "# comment\n\nlibvirt_uri = qemu:///session  # trailing\n"
                           "start_swtpm = no\ntpm = swtpm:host=127.0.0.1,port=9999\n");
  sd::Config c;
  sd::LoadConfigFile(f, c);
  EXPECT_EQ(c.libvirt_uri, "qemu:///session");
  EXPECT_FALSE(c.start_swtpm);
  EXPECT_EQ(c.tpm, "swtpm:host=127.0.0.1,port=9999");
}

TEST(DaemonConfig, UnknownKeyIsAnErrorWithFileAndLine) {
  const auto f = WriteTemp("sg-config-unknown.conf", "state_dir = /tmp/x\nstat_dir = /tmp/y\n");
  sd::Config c;
  try {
    sd::LoadConfigFile(f, c);
    FAIL() << "unknown key accepted";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(f.string() + ":2: unknown setting 'stat_dir'"), std::string::npos) << what;
    EXPECT_NE(what.find("state_dir"), std::string::npos) << "should list the known keys: " << what;
  }
}

TEST(DaemonConfig, BadValuesAreErrors) {
  sd::Config c;
  EXPECT_THROW(sd::ApplySetting("start_swtpm", "maybe", c, "x"), std::runtime_error);
  EXPECT_THROW(sd::ApplySetting("tpm", "mssim:port=1", c, "x"), std::runtime_error);
  // The daemon's own swtpm has no TCP port any more: an old setting is an error that says so.
  try {
    sd::ApplySetting("swtpm_port", "2321", c, "f:3");
    ADD_FAILURE() << "swtpm_port accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("f:3: swtpm_port: no longer used"), std::string::npos)
        << e.what();
  }
  // An operator's own swtpm stays configurable, on TCP or a Unix socket.
  sd::ApplySetting("tpm", "swtpm:path=/run/operator/tpm.sock", c, "x");
  EXPECT_EQ(c.tpm, "swtpm:path=/run/operator/tpm.sock");
  // Resettable (16, 23), boot-chain (0-7) and malformed PCRs are refused.
  for (const char* pcr : {"16", "23", "7", "13x", ""}) {
    EXPECT_THROW(sd::ApplySetting("sovguard_pcr", pcr, c, "x"), std::runtime_error) << pcr;
  }
  sd::ApplySetting("sovguard_pcr", "14", c, "x");
  EXPECT_EQ(c.sovguard_pcr, 14u);
  // The quote batching window: 0 to 100 ms, default 2.
  EXPECT_EQ(c.quote_batch_window_ms, 2u);
  for (const char* ms : {"101", "-1", "", "2ms", "1e3"}) {
    EXPECT_THROW(sd::ApplySetting("quote_batch_window_ms", ms, c, "x"), std::runtime_error) << ms;
  }
  EXPECT_EQ(c.quote_batch_window_ms, 2u);
  sd::ApplySetting("quote_batch_window_ms", "0", c, "x");
  EXPECT_EQ(c.quote_batch_window_ms, 0u);
  const auto f = WriteTemp("sg-config-noeq.conf", "libvirt_uri qemu:///system\n");
  EXPECT_THROW(sd::LoadConfigFile(f, c), std::runtime_error);
  EXPECT_EQ(c.libvirt_uri, "qemu:///system");
}

}  // namespace

namespace {
TEST(DaemonConfig, LibvirtPartitionIsOneTopLevelName) {
  sd::Config c;
  EXPECT_EQ(c.libvirt_partition, "/machine");
  sd::ApplySetting("libvirt_partition", "/tenants", c, "x");
  EXPECT_EQ(c.libvirt_partition, "/tenants");
  for (const char* bad : {"", "/", "machine", "/machine/prod", "/..", "/a b", "/a\nb"}) {
    EXPECT_THROW(sd::ApplySetting("libvirt_partition", bad, c, "x"), std::runtime_error) << bad;
  }
  EXPECT_EQ(c.libvirt_partition, "/tenants");  // a refused value changes nothing
}

TEST(DaemonLog, StderrRecordsCarryFieldsAsKeyValuePairs) {
  using sovguard::daemon::log::FormatLine;
  using sovguard::daemon::log::Level;
  EXPECT_EQ(FormatLine(Level::kNotice, "violation: x",
                       {{"EVENT", "violation"}, {"GUEST", "vm 1"}, {"DATASET", ""}}),
            "<5>sovguardd: violation: x event=violation guest=\"vm 1\" dataset=\"\"");
  EXPECT_EQ(FormatLine(Level::kError, "m", {{"PATH", "a\"b"}}), "<3>sovguardd: m path=\"a\\\"b\"");
  EXPECT_EQ(FormatLine(Level::kInfo, "plain", {}), "<6>sovguardd: plain");
}
}  // namespace
