// Integration tests against a private swtpm: EK certificates, persistent AK, credential
// activation (credential made by tpm2_makecredential as an independent peer), measurement log
// replay across daemon restarts and crashes.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <tss2/tss2_mu.h>

#include <fstream>
#include <memory>

#include "attestation/measure/measurement_log.h"
#include "attestation/measure/platform.h"
#include "attestation/tpm/credential.h"
#include "attestation/tpm/tpm.h"
#include "base/openssl.h"
#include "tests/attestation/swtpm_fixture.h"

namespace sovguard::attestation {
namespace {

base::X509Ptr ParseDer(const Bytes& der) {
  const unsigned char* p = der.data();
  return base::X509Ptr(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

std::string CertPublicKeyPem(X509* cert) {
  EVP_PKEY* key = X509_get0_pubkey(cert);
  base::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

void WriteBytes(const std::filesystem::path& p, std::span<const uint8_t> b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

class TpmTest : public ::testing::Test {
 protected:
  test_support::Swtpm swtpm_;
  test_support::TempDir tmp_;
};

TEST_F(TpmTest, EkCertificatesAreReadFromNvAndMatchTheEk) {
  tpm::Tpm t(swtpm_.tcti());
  auto certs = t.ReadEkCertificates();
  ASSERT_GE(certs.size(), 2u)
      << "swtpm_setup --create-ek-cert --ecc writes RSA and ECC certificates";
  const tpm::EkCertificate* rsa = nullptr;
  for (const auto& c : certs) {
    auto x = ParseDer(c.der);
    ASSERT_TRUE(x) << "certificate at NV 0x" << std::hex << c.nv_index << " does not parse";
    if (c.nv_index == tpm::kEkCertNvRsa2048) rsa = &c;
  }
  ASSERT_NE(rsa, nullptr);
  EXPECT_EQ(rsa->key_type, "rsa2048");
  // The certificate certifies the EK that the TCG default template recreates in this TPM.
  auto x = ParseDer(rsa->der);
  // swtpm_setup persisted the EK at 0x81010001: that one is used first ...
  const auto ek_pem = tpm::PublicAreaToPem(t.EkPublic(tpm::KeyAlg::kRsa2048));
  EXPECT_EQ(CertPublicKeyPem(x.get()), ek_pem);
  // ... and without it the EK recreated from the template is the same key.
  t.EvictPersistent(tpm::kEkHandleRsa2048);
  EXPECT_EQ(tpm::PublicAreaToPem(t.EkPublic(tpm::KeyAlg::kRsa2048)), ek_pem);
  EXPECT_EQ(t.CountHandles().transient, 0u);
  // ... and chains to swtpm's local CA.
  auto leaf = tmp_.path() / "ek.der";
  WriteBytes(leaf, rsa->der);
  auto r = test_support::Run({"openssl", "verify", "-partial_chain", "-CAfile",
                              (swtpm_.ca_dir() / "issuercert.pem").string(), "-inform", "DER",
                              leaf.string()});
  // openssl verify accepts DER input only through -inform on 3.0; fall back to converting.
  if (r.exit_code != 0) {
    auto pem = tmp_.path() / "ek.pem";
    ASSERT_EQ(test_support::Run(
                  {"openssl", "x509", "-inform", "DER", "-in", leaf.string(), "-out", pem.string()})
                  .exit_code,
              0);
    r = test_support::Run({"openssl", "verify", "-partial_chain", "-CAfile",
                           (swtpm_.ca_dir() / "issuercert.pem").string(), pem.string()});
  }
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(t.ReadNv(0x01c0ffff).has_value());
}

TEST_F(TpmTest, AkIsCreatedPersistentAndReloaded) {
  Bytes name;
  {
    tpm::Tpm t(swtpm_.tcti());
    auto ak = t.EnsureAk(tpm::kDefaultAkHandle, tpm::KeyAlg::kEccP256);
    EXPECT_TRUE(ak.created);
    EXPECT_EQ(ak.name, tpm::PublicAreaName(ak.public_area));
    EXPECT_NE(ak.public_pem.find("BEGIN PUBLIC KEY"), std::string::npos);
    name = ak.name;
  }
  tpm::Tpm t(swtpm_.tcti());  // a new connection, as after a daemon restart
  auto ak = t.EnsureAk(tpm::kDefaultAkHandle, tpm::KeyAlg::kEccP256);
  EXPECT_FALSE(ak.created);
  EXPECT_EQ(ak.name, name);
  // An RSA AK at another handle, and nothing transient left behind.
  auto rsa = t.EnsureAk(0x81018001, tpm::KeyAlg::kRsa2048);
  EXPECT_EQ(rsa.alg, tpm::KeyAlg::kRsa2048);
  auto c = t.CountHandles();
  EXPECT_EQ(c.transient, 0u);
  EXPECT_EQ(c.loaded_sessions, 0u);
  // swtpm_setup persisted the EK at 0x81010001: a decryption key is not accepted as an AK.
  EXPECT_THROW(t.EnsureAk(0x81010001), AttestationError);
  EXPECT_THROW(t.EnsureAk(0x01c00002), AttestationError);
}

TEST_F(TpmTest, CredentialActivationRoundTripWithTpm2Makecredential) {
  tpm::Tpm t(swtpm_.tcti());
  auto ak = t.EnsureAk();
  auto certs = t.ReadEkCertificates();
  ASSERT_FALSE(certs.empty());
  // The verifier's side: the EK public key taken from the EK certificate, not from the TPM.
  auto x = ParseDer(certs.at(0).der);
  ASSERT_TRUE(x);
  const auto ek_pem = tmp_.path() / "ek.pem";
  std::ofstream(ek_pem) << CertPublicKeyPem(x.get());
  const Bytes secret = {'s', 'o', 'v', 'g', 'u', 'a', 'r', 'd', '-',
                        'c', 'h', 'a', 'l', 'l', 'e', 'n', 'g', 'e'};
  WriteBytes(tmp_.path() / "secret", secret);
  auto r = test_support::Run({"tpm2_makecredential", "-T", "none", "-G", "rsa", "-u",
                              ek_pem.string(), "-s", (tmp_.path() / "secret").string(), "-n",
                              ToHex(ak.name), "-o", (tmp_.path() / "cred").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // tpm2_makecredential takes the name as hex. Its credential file: magic 0xBADCC0DE, version 1,
  // TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
  std::ifstream in(tmp_.path() / "cred", std::ios::binary);
  Bytes file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(file.size(), 8u);
  ASSERT_EQ(GetBe(file, 0, 4), 0xBADCC0DEu);
  size_t off = 8;
  TPM2B_ID_OBJECT blob{};
  TPM2B_ENCRYPTED_SECRET enc{};
  ASSERT_EQ(Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(file.data(), file.size(), &off, &blob),
            TSS2_RC_SUCCESS);
  ASSERT_EQ(Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(file.data(), file.size(), &off, &enc),
            TSS2_RC_SUCCESS);
  auto got = t.ActivateCredential(ak.handle, std::span(blob.credential, blob.size),
                                  std::span(enc.secret, enc.size));
  EXPECT_EQ(got, secret);
  // The same credential activates with the EK recreated transiently (no persistent EK).
  t.EvictPersistent(tpm::kEkHandleRsa2048);
  got = t.ActivateCredential(ak.handle, std::span(blob.credential, blob.size),
                             std::span(enc.secret, enc.size));
  EXPECT_EQ(got, secret);
  // A credential for another key's name does not activate against this AK.
  Bytes other = ak.name;
  other.back() ^= 1;
  r = test_support::Run({"tpm2_makecredential", "-T", "none", "-G", "rsa", "-u", ek_pem.string(),
                         "-s", (tmp_.path() / "secret").string(), "-n", ToHex(other), "-o",
                         (tmp_.path() / "cred2").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in2(tmp_.path() / "cred2", std::ios::binary);
  Bytes file2((std::istreambuf_iterator<char>(in2)), std::istreambuf_iterator<char>());
  off = 8;
  ASSERT_EQ(Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(file2.data(), file2.size(), &off, &blob),
            TSS2_RC_SUCCESS);
  ASSERT_EQ(Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(file2.data(), file2.size(), &off, &enc),
            TSS2_RC_SUCCESS);
  EXPECT_THROW(t.ActivateCredential(ak.handle, std::span(blob.credential, blob.size),
                                    std::span(enc.secret, enc.size)),
               tpm::TpmError);
  // sovguard's own software MakeCredential (what the verifier uses) against the TPM.
  auto made = tpm::MakeCredential(t.EkPublic(tpm::KeyAlg::kRsa2048), ak.name, secret);
  EXPECT_EQ(t.ActivateCredential(ak.handle, made.credential_blob, made.encrypted_secret), secret);
  auto wrong = tpm::MakeCredential(t.EkPublic(tpm::KeyAlg::kRsa2048), other, secret);
  EXPECT_THROW(t.ActivateCredential(ak.handle, wrong.credential_blob, wrong.encrypted_secret),
               tpm::TpmError);
  // Success and failure paths both flushed the EK and the policy session.
  auto c = t.CountHandles();
  EXPECT_EQ(c.transient, 0u);
  EXPECT_EQ(c.loaded_sessions, 0u);
}

class MeasureTest : public TpmTest {
 protected:
  measure::MeasureConfig Config() { return {tmp_.path() / "state", 13}; }
  Sha256Digest Replayed(const std::filesystem::path& log) {
    auto recs = cel::DecodeLog(ReadFileBytes(log));
    return cel::Replay(recs).at(13);
  }
};

TEST_F(MeasureTest, LogReplaysToPcrAcrossRestart) {
  tpm::Tpm t(swtpm_.tcti());
  const auto bin = tmp_.path() / "fake-binary";
  std::ofstream(bin) << "\x7f"
                        "ELF pretend";
  std::filesystem::path log_path;
  {
    measure::MeasurementLog log(t, Config());
    EXPECT_EQ(log.open_state(), "fresh");
    log.MeasureFile(cel::EventKind::kSelfBinary, bin);
    log.Measure(cel::EventKind::kBpfObject, "sg_net.bpf.o", Sha256("obj"), "tc");
    log.MeasureBytes(cel::EventKind::kKernelCmdline, "/proc/cmdline",
                     std::span(reinterpret_cast<const uint8_t*>("ro quiet"), 8));
    log.Measure(cel::EventKind::kMechanismDowngraded, "file.open", Sha256("tracepoint+kill"),
                "lsm unavailable: EPERM");
    EXPECT_EQ(log.size(), 5u);
    log_path = log.log_path();
    EXPECT_EQ(Replayed(log_path), t.PcrRead({13}).at(0));
    // A second daemon on the same state dir is refused.
    EXPECT_THROW(measure::MeasurementLog(t, Config()), AttestationError);
  }
  {
    measure::MeasurementLog log(t, Config());  // daemon restart, PCR not reset
    EXPECT_EQ(log.open_state(), "continued");
    log.Measure(cel::EventKind::kProgramAttached, "sg_tc_egress", Sha256("prog"), "vnet0");
    EXPECT_EQ(log.size(), 7u);
    EXPECT_EQ(Replayed(log_path), t.PcrRead({13}).at(0));
  }
  auto recs = cel::DecodeLog(ReadFileBytes(log_path));
  auto ev = cel::DecodeSovguardContent(recs.at(1).content);
  EXPECT_EQ(ev.kind, cel::EventKind::kSelfBinary);
  EXPECT_EQ(ev.object_digest, Sha256File(bin));
  EXPECT_EQ(cel::DecodeSovguardContent(recs.at(5).content).detail, "continued");
}

TEST_F(MeasureTest, CrashBetweenAppendAndExtendIsRecovered) {
  tpm::Tpm t(swtpm_.tcti());
  std::filesystem::path log_path;
  {
    measure::MeasurementLog log(t, Config());
    log.Measure(cel::EventKind::kPolicyApplied, "bundle", Sha256("b"));
    log_path = log.log_path();
  }
  // Simulate a crash after the record reached the disk but before TPM2_PCR_Extend.
  auto data = ReadFileBytes(log_path);
  auto rec =
      cel::MakeSovguardRecord(2, 13, {cel::EventKind::kPolicyApplied, "bundle2", Sha256("c"), ""});
  auto enc = cel::EncodeRecord(rec);
  data.insert(data.end(), enc.begin(), enc.end());
  // ... and a torn write of the record after it.
  auto torn = cel::EncodeRecord(
      cel::MakeSovguardRecord(3, 13, {cel::EventKind::kBpfObject, "x", Sha256("x"), ""}));
  data.insert(data.end(), torn.begin(), torn.begin() + 10);
  WriteFileAtomic(log_path, data);
  measure::MeasurementLog log(t, Config());
  EXPECT_EQ(log.open_state(), "recovered+torn_record_dropped");
  EXPECT_EQ(log.size(), 4u);
  EXPECT_EQ(Replayed(log_path), t.PcrRead({13}).at(0));
}

TEST_F(MeasureTest, ForeignExtendAndLostLogFailClosed) {
  tpm::Tpm t(swtpm_.tcti());
  { measure::MeasurementLog log(t, Config()); }
  t.PcrExtend(13, Sha256("someone else"));
  EXPECT_THROW(measure::MeasurementLog(t, Config()), AttestationError);
  // The failed open released its lock: the error repeats (not "locked by another daemon").
  try {
    measure::MeasurementLog again(t, Config());
    ADD_FAILURE() << "unexplained PCR value accepted";
  } catch (const AttestationError& e) {
    EXPECT_NE(std::string(e.what()).find("is not explained"), std::string::npos) << e.what();
  }
  // A lost log (state dir wiped) cannot explain a PCR that has been extended.
  std::filesystem::remove_all(tmp_.path() / "state");
  EXPECT_THROW(measure::MeasurementLog(t, Config()), AttestationError);
}

TEST_F(MeasureTest, RebootStartsANewLog) {
  std::filesystem::path log_path;
  {
    tpm::Tpm t(swtpm_.tcti());
    measure::MeasurementLog log(t, Config());
    log.Measure(cel::EventKind::kPolicyApplied, "bundle", Sha256("b"));
    log_path = log.log_path();
  }
  // A fresh PCR (as after a reboot) on a state dir with an old log: use PCR 12, untouched so far,
  // and move the log over to claim it.
  measure::MeasureConfig cfg = Config();
  auto recs = cel::DecodeLog(ReadFileBytes(log_path));
  for (auto& r : recs) r.pcr = 12;
  WriteFileAtomic(log_path, cel::EncodeLog(recs));
  cfg.pcr = 12;
  tpm::Tpm t(swtpm_.tcti());
  measure::MeasurementLog log(t, cfg);
  EXPECT_EQ(log.open_state(), "new_boot");
  EXPECT_EQ(log.size(), 1u);
  EXPECT_TRUE(std::filesystem::exists(log_path.string() + ".prev"));
  EXPECT_EQ(cel::Replay(cel::DecodeLog(ReadFileBytes(log_path))).at(12), t.PcrRead({12}).at(0));
}

TEST_F(MeasureTest, PlatformAndEnforcementEventsReplay) {
  tpm::Tpm t(swtpm_.tcti());
  measure::MeasurementLog log(t, Config());
  measure::PlatformPaths paths;
  paths.qemu = tmp_.path() / "no-qemu-here";  // absence is measured, not skipped
  auto recs = measure::MeasurePlatform(log, paths);
  ASSERT_GE(recs.size(), 5u);
  auto self = cel::DecodeSovguardContent(recs.at(0).content);
  EXPECT_EQ(self.kind, cel::EventKind::kSelfBinary);
  EXPECT_EQ(self.object_digest, Sha256File("/proc/self/exe"));
  auto qemu = cel::DecodeSovguardContent(recs.at(1).content);
  EXPECT_EQ(qemu.kind, cel::EventKind::kQemuBinary);
  EXPECT_EQ(qemu.detail.rfind("absent: ", 0), 0u) << qemu.detail;
  auto cmdline = cel::DecodeSovguardContent(recs.back().content);
  EXPECT_EQ(cmdline.kind, cel::EventKind::kKernelCmdline);
  EXPECT_EQ(cmdline.object_digest, Sha256(cmdline.detail));
  const Bytes obj = {0x7f, 'E', 'L', 'F'};
  measure::MeasureBpfObject(log, "sg_net.bpf.o", obj);
  measure::MeasurePolicyApplied(log, "bundle-42", obj);
  measure::MeasureMechanismDowngraded(log, "file.open", "lsm", "tracepoint+kill",
                                      "EPERM: no trampolines");
  auto att = measure::MeasureProgramAttached(log, "sg_tc_egress", "0011223344556677", "tc/egress",
                                             "vnet0");
  auto ev = cel::DecodeSovguardContent(att.content);
  EXPECT_EQ(ev.object_digest, Sha256(ev.detail));
  EXPECT_NE(ev.detail.find("\"attach_point\":\"vnet0\""), std::string::npos) << ev.detail;
  EXPECT_EQ(Replayed(log.log_path()), t.PcrRead({13}).at(0));
}

TEST_F(MeasureTest, ResettablePcrIsRefused) {
  tpm::Tpm t(swtpm_.tcti());
  auto cfg = Config();
  cfg.pcr = 16;
  EXPECT_THROW(measure::MeasurementLog(t, cfg), AttestationError);
  cfg.pcr = 23;
  EXPECT_THROW(measure::MeasurementLog(t, cfg), AttestationError);
}

}  // namespace
}  // namespace sovguard::attestation
