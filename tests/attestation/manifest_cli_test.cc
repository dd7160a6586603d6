// `sovguardctl manifest scan|sign|verify` on this host: the draft describes the files sovguardd
// measures with their dpkg owner and SHA-256, and only a reviewed (complete) draft can be signed.
#include "attestation/cli/manifest_cli.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "base/openssl.h"
#include "tests/attestation/swtpm_fixture.h"
#include "tests/harness/require.h"

namespace sovguard::attestation {
namespace {

namespace ts = test_support;

std::string S(const Bytes& b) {
  return std::string(b.begin(), b.end());
}

int Cli(std::vector<std::string> args, std::string* text = nullptr) {
  args.insert(args.begin(), "manifest");
  std::ostringstream out, err;
  int rc = cli::RunManifestCli(args, out, err);
  if (text) *text = out.str() + err.str();
  return rc;
}

class ManifestCli : public ::testing::Test {
 protected:
  ts::TempDir tmp;
  cli::ScanOptions Options() {
    cli::ScanOptions o;
    o.paths.self = tmp.path() / "sovguardd";
    o.paths.libvirt_drivers = tmp.path() / "no-drivers";
    o.paths.kernel_image = tmp.path() / "vmlinuz";
    o.paths.kernel_cmdline = tmp.path() / "cmdline";
    o.bpf_dir = tmp.path() / "build";
    WriteFileAtomic(o.paths.self, "sovguardd binary");
    WriteFileAtomic(o.paths.kernel_image, "kernel image");
    WriteFileAtomic(o.paths.kernel_cmdline, "root=/dev/vda ro\n");
    std::filesystem::create_directories(o.bpf_dir / "bpf/net");
    WriteFileAtomic(o.bpf_dir / "bpf/net/sg_net.bpf.o", "bpf object");
    WriteFileAtomic(o.bpf_dir / "bpf/net/not-an-object.o", "other");
    return o;
  }
};

TEST_F(ManifestCli, ScanDescribesTheMeasuredFiles) {
  auto o = Options();
  const auto m = cli::ScanHost(o);
  std::map<std::string, const manifest::Component*> by_file;
  for (const auto& c : m.components)
    for (const auto& f : c.files) by_file[f.path] = &c;
  ASSERT_TRUE(by_file.count(o.paths.self.string()));
  EXPECT_EQ(by_file[o.paths.self.string()]->files[0].sha256, Sha256("sovguardd binary"));
  EXPECT_EQ(by_file[o.paths.self.string()]->version, "");  // not a dpkg file: to be reviewed
  ASSERT_TRUE(by_file.count("bpf/net/sg_net.bpf.o"));      // named as sovguardd measures it
  EXPECT_EQ(by_file["bpf/net/sg_net.bpf.o"]->files[0].sha256, Sha256("bpf object"));
  EXPECT_FALSE(by_file.count("bpf/net/not-an-object.o"));
  EXPECT_TRUE(by_file.count(o.paths.kernel_image.string()));
  ASSERT_EQ(m.kernel_cmdlines.size(), 1u);
  EXPECT_EQ(m.kernel_cmdlines[0], "root=/dev/vda ro");  // trimmed as MeasurePlatform does
  // A file dpkg knows: package name and version as dpkg-query reports them.
  const std::filesystem::path qemu = o.paths.qemu;
  SOVGUARD_REQUIRE(std::filesystem::exists(qemu), qemu << " (qemu-system-x86)");
  ASSERT_TRUE(by_file.count(qemu.string()));
  const auto* c = by_file[qemu.string()];
  auto v = ts::Run({"dpkg-query", "-W", "-f", "${Version}", c->name});
  ASSERT_EQ(v.exit_code, 0) << v.output;
  EXPECT_EQ(c->version, v.output);
  EXPECT_FALSE(c->supplier.empty());
  EXPECT_EQ(c->files[0].sha256, Sha256File(qemu));
}

TEST_F(ManifestCli, ScanSignVerify) {
  auto o = Options();
  const auto draft = tmp.path() / "draft.json";
  std::string text;
  // Without --jurisdiction the draft is incomplete: signing refuses it, naming the field.
  ASSERT_EQ(Cli({"scan", "--sovguardd", o.paths.self.string(), "--issuer", "Test Certifier", "-o",
                 draft.string()},
                &text),
            0)
      << text;
  auto key = base::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  {
    base::BioPtr b(BIO_new_file((tmp.path() / "k.pem").c_str(), "w"));
    PEM_write_bio_PrivateKey(b.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    base::BioPtr p(BIO_new_file((tmp.path() / "k.pub").c_str(), "w"));
    PEM_write_bio_PUBKEY(p.get(), key.get());
  }
  EXPECT_EQ(Cli({"sign", "--key", (tmp.path() / "k.pem").string(), draft.string()}, &text), 1);
  EXPECT_NE(text.find("$.components[0]"), std::string::npos) << text;
  // The certifier completes the draft (here: every field of every component), then signs.
  auto j = nlohmann::json::parse(S(ReadFileBytes(draft)));
  for (auto& c : j["components"]) {
    for (const char* f : {"version", "supplier", "license"})
      if (c[f].get<std::string>().empty()) c[f] = "reviewed";
    c["supplier_jurisdiction"] = "DE";
  }
  j["issuer"] = "Test Certifier";
  WriteFileAtomic(draft, j.dump(2));
  const auto env = tmp.path() / "manifest.dsse.json";
  ASSERT_EQ(
      Cli({"sign", "--key", (tmp.path() / "k.pem").string(), "-o", env.string(), draft.string()},
          &text),
      0)
      << text;
  EXPECT_EQ(Cli({"verify", "--pub", (tmp.path() / "k.pub").string(), env.string()}, &text), 0)
      << text;
  EXPECT_NE(text.find("signature OK"), std::string::npos);
  // Verify with the draft instead of the envelope, or with a public key as signing key.
  EXPECT_EQ(Cli({"verify", "--pub", (tmp.path() / "k.pub").string(), draft.string()}), 1);
  EXPECT_EQ(Cli({"sign", "--key", (tmp.path() / "k.pub").string(), draft.string()}), 1);
  // Usage errors.
  EXPECT_EQ(Cli({"sign", draft.string()}), 2);
  EXPECT_EQ(Cli({"scan", "--bogus", "x"}), 2);
  EXPECT_EQ(Cli({"frobnicate"}), 2);
  EXPECT_EQ(Cli({}), 2);
}

}  // namespace
}  // namespace sovguard::attestation
