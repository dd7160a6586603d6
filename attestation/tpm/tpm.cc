#include "attestation/tpm/tpm.h"

#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <memory>

namespace sovguard::attestation::tpm {
namespace {

void Check(TSS2_RC rc, const char* what) {
  if (rc != TSS2_RC_SUCCESS) throw TpmError(what, rc);
}

template <class T>
struct EsysFree {
  void operator()(T* p) const { Esys_Free(p); }
};
template <class T>
using EsysPtr = std::unique_ptr<T, EsysFree<T>>;

// Owns one ESYS_TR: transient objects and sessions are flushed from the TPM, other resources
// (NV indices, persistent objects) only closed in ESYS's metadata.
class TrGuard {
 public:
  TrGuard(ESYS_CONTEXT* ctx, ESYS_TR tr, bool flush) : ctx_(ctx), tr_(tr), flush_(flush) {}
  ~TrGuard() {
    if (tr_ == ESYS_TR_NONE) return;
    // Nothing sensible to do on failure in a destructor; the leak test catches regressions.
    if (flush_)
      (void)Esys_FlushContext(ctx_, tr_);
    else
      (void)Esys_TR_Close(ctx_, &tr_);
  }
  TrGuard(const TrGuard&) = delete;
  TrGuard& operator=(const TrGuard&) = delete;
  ESYS_TR get() const { return tr_; }

 private:
  ESYS_CONTEXT* ctx_;
  ESYS_TR tr_;
  bool flush_;
};

// TCG EK Credential Profile policy A: PolicySecret(TPM_RH_ENDORSEMENT), SHA-256.
constexpr std::array<uint8_t, 32> kEkPolicyA = {
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};

constexpr std::string_view kAkUniqueLabel = "sovguard-attestation-key";

TPM2B_PUBLIC EkTemplate(KeyAlg alg) {
  TPM2B_PUBLIC pub{};
  auto& p = pub.publicArea;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                       TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  p.authPolicy.size = kEkPolicyA.size();
  std::memcpy(p.authPolicy.buffer, kEkPolicyA.data(), kEkPolicyA.size());
  if (alg == KeyAlg::kRsa2048) {  // Template L-1
    p.type = TPM2_ALG_RSA;
    p.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
    p.parameters.rsaDetail.symmetric.keyBits.aes = 128;
    p.parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    p.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
    p.parameters.rsaDetail.keyBits = 2048;
    p.parameters.rsaDetail.exponent = 0;
    p.unique.rsa.size = 256;  // zeros
  } else {                    // Template L-2
    p.type = TPM2_ALG_ECC;
    p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
    p.parameters.eccDetail.symmetric.keyBits.aes = 128;
    p.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    p.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    p.unique.ecc.x.size = 32;
    p.unique.ecc.y.size = 32;
  }
  return pub;
}

TPM2B_PUBLIC AkTemplate(KeyAlg alg) {
  TPM2B_PUBLIC pub{};
  auto& p = pub.publicArea;
  p.nameAlg = TPM2_ALG_SHA256;
  p.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                       TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
  if (alg == KeyAlg::kRsa2048) {
    p.type = TPM2_ALG_RSA;
    p.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p.parameters.rsaDetail.scheme.scheme = TPM2_ALG_RSASSA;
    p.parameters.rsaDetail.scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
    p.parameters.rsaDetail.keyBits = 2048;
    p.parameters.rsaDetail.exponent = 0;
    p.unique.rsa.size = kAkUniqueLabel.size();
    std::memcpy(p.unique.rsa.buffer, kAkUniqueLabel.data(), kAkUniqueLabel.size());
  } else {
    p.type = TPM2_ALG_ECC;
    p.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p.parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
    p.parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    p.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    p.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    p.unique.ecc.x.size = kAkUniqueLabel.size();
    std::memcpy(p.unique.ecc.x.buffer, kAkUniqueLabel.data(), kAkUniqueLabel.size());
  }
  return pub;
}

Bytes MarshalPublic(const TPM2B_PUBLIC& pub) {
  std::vector<uint8_t> buf(sizeof(TPM2B_PUBLIC));
  size_t off = 0;
  Check(Tss2_MU_TPM2B_PUBLIC_Marshal(&pub, buf.data(), buf.size(), &off), "marshal TPM2B_PUBLIC");
  buf.resize(off);
  return buf;
}

TPML_PCR_SELECTION MakeSelection(const std::vector<uint32_t>& pcrs) {
  TPML_PCR_SELECTION sel{};
  sel.count = 1;
  sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
  sel.pcrSelections[0].sizeofSelect = 3;
  for (uint32_t p : pcrs) {
    if (p > 23) throw AttestationError("PCR index " + std::to_string(p) + " out of range 0-23");
    sel.pcrSelections[0].pcrSelect[p / 8] |= static_cast<uint8_t>(1u << (p % 8));
  }
  return sel;
}

std::vector<TPM2_HANDLE> ListHandles(ESYS_CONTEXT* ctx, TPM2_HANDLE first) {
  std::vector<TPM2_HANDLE> out;
  TPM2_HANDLE prop = first;
  for (;;) {
    TPMI_YES_NO more = TPM2_NO;
    TPMS_CAPABILITY_DATA* raw = nullptr;
    Check(Esys_GetCapability(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES, prop,
                             TPM2_MAX_CAP_HANDLES, &more, &raw),
          "Esys_GetCapability(TPM2_CAP_HANDLES)");
    EsysPtr<TPMS_CAPABILITY_DATA> data(raw);
    const auto& h = data->data.handles;
    for (uint32_t i = 0; i < h.count; ++i) {
      if ((h.handle[i] >> TPM2_HR_SHIFT) != (first >> TPM2_HR_SHIFT)) return out;
      out.push_back(h.handle[i]);
    }
    if (!more || h.count == 0) return out;
    prop = h.handle[h.count - 1] + 1;
  }
}

uint32_t TpmProperty(ESYS_CONTEXT* ctx, TPM2_PT property, uint32_t fallback) {
  TPMI_YES_NO more = TPM2_NO;
  TPMS_CAPABILITY_DATA* raw = nullptr;
  Check(Esys_GetCapability(ctx, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_TPM_PROPERTIES,
                           property, 1, &more, &raw),
        "Esys_GetCapability(TPM2_CAP_TPM_PROPERTIES)");
  EsysPtr<TPMS_CAPABILITY_DATA> data(raw);
  const auto& p = data->data.tpmProperties;
  if (p.count == 1 && p.tpmProperty[0].property == property) return p.tpmProperty[0].value;
  return fallback;
}

ESYS_TR CreatePrimary(ESYS_CONTEXT* ctx, const TPM2B_PUBLIC& tmpl, TPM2B_PUBLIC** out_public) {
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION creation_pcr{};
  ESYS_TR handle = ESYS_TR_NONE;
  Check(Esys_CreatePrimary(ctx, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, &sensitive, &tmpl, &outside, &creation_pcr, &handle,
                           out_public, nullptr, nullptr, nullptr),
        "Esys_CreatePrimary(endorsement hierarchy)");
  return handle;
}

// A restricted signing key that never left this TPM: what an AK must be.
void CheckAkPublic(const TPMT_PUBLIC& p, TPM2_HANDLE handle) {
  constexpr TPMA_OBJECT kNeed = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_RESTRICTED |
                                TPMA_OBJECT_SIGN_ENCRYPT;
  auto fail = [&](const std::string& why) {
    char h[16];
    std::snprintf(h, sizeof h, "0x%08x", handle);
    throw AttestationError(std::string("object at persistent handle ") + h +
                           " is not a sovguard attestation key: " + why +
                           " (evict it or configure another AK handle)");
  };
  if ((p.objectAttributes & kNeed) != kNeed || (p.objectAttributes & TPMA_OBJECT_DECRYPT))
    fail(
        "attributes must be fixedTPM|fixedParent|sensitiveDataOrigin|restricted|sign, not decrypt");
  if (p.nameAlg != TPM2_ALG_SHA256) fail("name algorithm must be SHA-256");
  if (p.type == TPM2_ALG_ECC) {
    if (p.parameters.eccDetail.scheme.scheme != TPM2_ALG_ECDSA ||
        p.parameters.eccDetail.scheme.details.ecdsa.hashAlg != TPM2_ALG_SHA256 ||
        p.parameters.eccDetail.curveID != TPM2_ECC_NIST_P256)
      fail("ECC key must be NIST P-256 with ECDSA/SHA-256");
  } else if (p.type == TPM2_ALG_RSA) {
    if (p.parameters.rsaDetail.scheme.scheme != TPM2_ALG_RSASSA ||
        p.parameters.rsaDetail.scheme.details.rsassa.hashAlg != TPM2_ALG_SHA256)
      fail("RSA key must use RSASSA/SHA-256");
  } else {
    fail("type must be RSA or ECC");
  }
}

std::string HandleHex(TPM2_HANDLE h) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", h);
  return buf;
}

}  // namespace

TpmError::TpmError(const std::string& what, TSS2_RC rc)
    : AttestationError(what + " failed: " + Tss2_RC_Decode(rc)), rc_(rc) {}

const char* KeyAlgName(KeyAlg a) {
  return a == KeyAlg::kRsa2048 ? "rsa2048" : "ecc-p256";
}

Tpm::Tpm(const std::string& tcti) {
  Check(Tss2_TctiLdr_Initialize(tcti.c_str(), &tcti_),
        ("Tss2_TctiLdr_Initialize(\"" + tcti + "\")").c_str());
  TSS2_RC rc = Esys_Initialize(&ctx_, tcti_, nullptr);
  if (rc != TSS2_RC_SUCCESS) {
    Tss2_TctiLdr_Finalize(&tcti_);
    throw TpmError("Esys_Initialize over \"" + tcti + "\"", rc);
  }
}

Tpm::~Tpm() {
  for (auto& [h, tr] : persistent_) (void)Esys_TR_Close(ctx_, &tr);
  Esys_Finalize(&ctx_);
  Tss2_TctiLdr_Finalize(&tcti_);
}

ESYS_TR Tpm::PersistentTr(TPM2_HANDLE handle) {
  for (auto& [h, tr] : persistent_)
    if (h == handle) return tr;
  ESYS_TR tr = ESYS_TR_NONE;
  Check(Esys_TR_FromTPMPublic(ctx_, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr),
        ("Esys_TR_FromTPMPublic(" + HandleHex(handle) + ")").c_str());
  persistent_.emplace_back(handle, tr);
  return tr;
}

std::optional<Bytes> Tpm::ReadNv(TPM2_HANDLE index) {
  std::lock_guard lock(mu_);
  auto defined = ListHandles(ctx_, TPM2_NV_INDEX_FIRST);
  if (std::find(defined.begin(), defined.end(), index) == defined.end()) return std::nullopt;
  ESYS_TR raw_tr = ESYS_TR_NONE;
  Check(Esys_TR_FromTPMPublic(ctx_, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &raw_tr),
        ("Esys_TR_FromTPMPublic(NV " + HandleHex(index) + ")").c_str());
  TrGuard nv(ctx_, raw_tr, /*flush=*/false);
  TPM2B_NV_PUBLIC* raw_pub = nullptr;
  Check(Esys_NV_ReadPublic(ctx_, nv.get(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &raw_pub,
                           nullptr),
        "Esys_NV_ReadPublic");
  EsysPtr<TPM2B_NV_PUBLIC> pub(raw_pub);
  const auto attrs = pub->nvPublic.attributes;
  ESYS_TR auth;
  if (attrs & TPMA_NV_AUTHREAD)
    auth = nv.get();
  else if (attrs & TPMA_NV_OWNERREAD)
    auth = ESYS_TR_RH_OWNER;
  else
    throw AttestationError("NV index " + HandleHex(index) +
                           " is readable neither with its own auth nor with owner auth");
  const uint32_t chunk = TpmProperty(ctx_, TPM2_PT_NV_BUFFER_MAX, 512);
  Bytes out;
  const uint16_t size = pub->nvPublic.dataSize;
  while (out.size() < size) {
    auto n = static_cast<uint16_t>(std::min<size_t>(chunk, size - out.size()));
    TPM2B_MAX_NV_BUFFER* raw_data = nullptr;
    Check(Esys_NV_Read(ctx_, auth, nv.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, n,
                       static_cast<uint16_t>(out.size()), &raw_data),
          ("Esys_NV_Read(" + HandleHex(index) + ")").c_str());
    EsysPtr<TPM2B_MAX_NV_BUFFER> data(raw_data);
    out.insert(out.end(), data->buffer, data->buffer + data->size);
  }
  return out;
}

std::vector<EkCertificate> Tpm::ReadEkCertificates() {
  static constexpr std::array<std::pair<TPM2_HANDLE, const char*>, 4> kIndices{{
      {kEkCertNvRsa2048, "rsa2048"},
      {kEkCertNvEccP256, "ecc-p256"},
      {kEkCertNvEccP384, "ecc-p384"},
      {kEkCertNvRsa3072, "rsa3072"},
  }};
  std::vector<EkCertificate> out;
  for (const auto& [index, type] : kIndices) {
    if (auto data = ReadNv(index)) out.push_back({index, type, TrimDer(*data)});
  }
  return out;
}

AkInfo Tpm::EnsureAk(TPM2_HANDLE handle, KeyAlg alg) {
  if ((handle >> TPM2_HR_SHIFT) != TPM2_HT_PERSISTENT)
    throw AttestationError("AK handle " + HandleHex(handle) +
                           " is not a persistent handle (0x81xxxxxx)");
  std::lock_guard lock(mu_);
  AkInfo info;
  info.handle = handle;
  auto persistent = ListHandles(ctx_, TPM2_PERSISTENT_FIRST);
  if (std::find(persistent.begin(), persistent.end(), handle) == persistent.end()) {
    auto tmpl = AkTemplate(alg);
    TrGuard primary(ctx_, CreatePrimary(ctx_, tmpl, nullptr), /*flush=*/true);
    ESYS_TR persisted = ESYS_TR_NONE;
    Check(Esys_EvictControl(ctx_, ESYS_TR_RH_OWNER, primary.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                            ESYS_TR_NONE, handle, &persisted),
          ("Esys_EvictControl(persist AK at " + HandleHex(handle) + ")").c_str());
    persistent_.emplace_back(handle, persisted);
    info.created = true;
  }
  ESYS_TR tr = PersistentTr(handle);
  TPM2B_PUBLIC* raw_pub = nullptr;
  TPM2B_NAME* raw_name = nullptr;
  Check(Esys_ReadPublic(ctx_, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &raw_pub, &raw_name,
                        nullptr),
        "Esys_ReadPublic(AK)");
  EsysPtr<TPM2B_PUBLIC> pub(raw_pub);
  EsysPtr<TPM2B_NAME> name(raw_name);
  CheckAkPublic(pub->publicArea, handle);
  info.alg = pub->publicArea.type == TPM2_ALG_RSA ? KeyAlg::kRsa2048 : KeyAlg::kEccP256;
  info.public_area = MarshalPublic(*pub);
  info.name.assign(name->name, name->name + name->size);
  info.public_pem = PublicAreaToPem(info.public_area);
  return info;
}

ESYS_TR Tpm::LoadEk(KeyAlg alg, ESYS_TR& transient, Bytes* public_out) {
  transient = ESYS_TR_NONE;
  const TPM2_HANDLE h = alg == KeyAlg::kRsa2048 ? kEkHandleRsa2048 : kEkHandleEccP256;
  const auto tmpl = EkTemplate(alg);
  auto persistent = ListHandles(ctx_, TPM2_PERSISTENT_FIRST);
  if (std::find(persistent.begin(), persistent.end(), h) != persistent.end()) {
    ESYS_TR tr = PersistentTr(h);
    TPM2B_PUBLIC* raw_pub = nullptr;
    Check(Esys_ReadPublic(ctx_, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &raw_pub, nullptr,
                          nullptr),
          "Esys_ReadPublic(EK)");
    EsysPtr<TPM2B_PUBLIC> pub(raw_pub);
    const auto& p = pub->publicArea;
    const auto& t = tmpl.publicArea;
    // Same template (everything but the unique field) = the same key the template recreates.
    const bool same =
        p.type == t.type && p.nameAlg == t.nameAlg && p.objectAttributes == t.objectAttributes &&
        p.authPolicy.size == t.authPolicy.size &&
        std::memcmp(p.authPolicy.buffer, t.authPolicy.buffer, t.authPolicy.size) == 0 &&
        (alg == KeyAlg::kRsa2048 ? p.parameters.rsaDetail.keyBits == 2048 &&
                                       p.parameters.rsaDetail.symmetric.algorithm == TPM2_ALG_AES &&
                                       p.parameters.rsaDetail.scheme.scheme == TPM2_ALG_NULL
                                 : p.parameters.eccDetail.curveID == TPM2_ECC_NIST_P256 &&
                                       p.parameters.eccDetail.symmetric.algorithm == TPM2_ALG_AES &&
                                       p.parameters.eccDetail.scheme.scheme == TPM2_ALG_NULL);
    if (same) {
      if (public_out) *public_out = MarshalPublic(*pub);
      return tr;
    }
  }
  TPM2B_PUBLIC* raw_pub = nullptr;
  transient = CreatePrimary(ctx_, tmpl, &raw_pub);
  EsysPtr<TPM2B_PUBLIC> pub(raw_pub);
  try {
    if (public_out) *public_out = MarshalPublic(*pub);
  } catch (...) {
    (void)Esys_FlushContext(ctx_, transient);
    transient = ESYS_TR_NONE;
    throw;
  }
  return transient;
}

Bytes Tpm::EkPublic(KeyAlg alg) {
  std::lock_guard lock(mu_);
  ESYS_TR transient = ESYS_TR_NONE;
  Bytes out;
  LoadEk(alg, transient, &out);
  TrGuard guard(ctx_, transient, /*flush=*/true);
  return out;
}

Bytes Tpm::ActivateCredential(TPM2_HANDLE ak_handle, std::span<const uint8_t> credential_blob,
                              std::span<const uint8_t> encrypted_secret, KeyAlg ek_alg) {
  TPM2B_ID_OBJECT blob{};
  TPM2B_ENCRYPTED_SECRET secret{};
  if (credential_blob.size() > sizeof(blob.credential) ||
      encrypted_secret.size() > sizeof(secret.secret))
    throw AttestationError("credential blob or encrypted secret larger than the TPM2B buffers");
  blob.size = static_cast<uint16_t>(credential_blob.size());
  std::memcpy(blob.credential, credential_blob.data(), credential_blob.size());
  secret.size = static_cast<uint16_t>(encrypted_secret.size());
  std::memcpy(secret.secret, encrypted_secret.data(), encrypted_secret.size());

  std::lock_guard lock(mu_);
  ESYS_TR ak = PersistentTr(ak_handle);
  ESYS_TR transient = ESYS_TR_NONE;
  const ESYS_TR ek = LoadEk(ek_alg, transient, nullptr);
  TrGuard ek_guard(ctx_, transient, /*flush=*/true);
  TPMT_SYM_DEF sym{};
  sym.algorithm = TPM2_ALG_NULL;
  ESYS_TR raw_session = ESYS_TR_NONE;
  Check(Esys_StartAuthSession(ctx_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                              ESYS_TR_NONE, nullptr, TPM2_SE_POLICY, &sym, TPM2_ALG_SHA256,
                              &raw_session),
        "Esys_StartAuthSession(policy)");
  TrGuard session(ctx_, raw_session, /*flush=*/true);
  // Keep the session alive after use so the guard's flush is always the one that ends it.
  Check(Esys_TRSess_SetAttributes(ctx_, session.get(), TPMA_SESSION_CONTINUESESSION, 0xff),
        "Esys_TRSess_SetAttributes");
  Check(
      Esys_PolicySecret(ctx_, ESYS_TR_RH_ENDORSEMENT, session.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE,
                        ESYS_TR_NONE, nullptr, nullptr, nullptr, 0, nullptr, nullptr),
      "Esys_PolicySecret(TPM_RH_ENDORSEMENT)");
  TPM2B_DIGEST* raw_cert_info = nullptr;
  Check(Esys_ActivateCredential(ctx_, ak, ek, ESYS_TR_PASSWORD, session.get(), ESYS_TR_NONE, &blob,
                                &secret, &raw_cert_info),
        "Esys_ActivateCredential");
  EsysPtr<TPM2B_DIGEST> cert_info(raw_cert_info);
  return Bytes(cert_info->buffer, cert_info->buffer + cert_info->size);
}

std::vector<Sha256Digest> Tpm::PcrRead(const std::vector<uint32_t>& pcrs) {
  std::lock_guard lock(mu_);
  return PcrReadLocked(pcrs);
}

std::vector<Sha256Digest> Tpm::PcrReadLocked(const std::vector<uint32_t>& pcrs_in) {
  std::vector<uint32_t> pcrs = pcrs_in;
  std::sort(pcrs.begin(), pcrs.end());
  pcrs.erase(std::unique(pcrs.begin(), pcrs.end()), pcrs.end());
  std::vector<std::optional<Sha256Digest>> got(24);
  std::vector<uint32_t> remaining = pcrs;
  // PCR_Read returns at most 8 digests per call; ask again for what is left.
  while (!remaining.empty()) {
    auto sel = MakeSelection(remaining);
    TPML_PCR_SELECTION* raw_out_sel = nullptr;
    TPML_DIGEST* raw_values = nullptr;
    Check(Esys_PCR_Read(ctx_, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &sel, nullptr, &raw_out_sel,
                        &raw_values),
          "Esys_PCR_Read");
    EsysPtr<TPML_PCR_SELECTION> out_sel(raw_out_sel);
    EsysPtr<TPML_DIGEST> values(raw_values);
    uint32_t k = 0;
    for (uint32_t i = 0; i < out_sel->count; ++i) {
      const auto& s = out_sel->pcrSelections[i];
      if (s.hash != TPM2_ALG_SHA256) continue;
      for (uint32_t p = 0; p < 24 && p / 8 < s.sizeofSelect; ++p) {
        if (!(s.pcrSelect[p / 8] & (1u << (p % 8)))) continue;
        if (k >= values->count)
          throw AttestationError("PCR_Read returned fewer digests than selected");
        const auto& d = values->digests[k++];
        if (d.size != 32) throw AttestationError("PCR_Read: SHA-256 digest of wrong size");
        Sha256Digest v{};
        std::memcpy(v.data(), d.buffer, 32);
        got[p] = v;
      }
    }
    if (k == 0)
      throw AttestationError("PCR_Read returned no SHA-256 values: is the SHA-256 bank active?");
    std::erase_if(remaining, [&](uint32_t p) { return got[p].has_value(); });
  }
  std::vector<Sha256Digest> out;
  for (uint32_t p : pcrs) out.push_back(*got[p]);
  return out;
}

void Tpm::PcrExtend(uint32_t pcr, const Sha256Digest& digest) {
  if (pcr > 23) throw AttestationError("PCR index " + std::to_string(pcr) + " out of range 0-23");
  TPML_DIGEST_VALUES values{};
  values.count = 1;
  values.digests[0].hashAlg = TPM2_ALG_SHA256;
  std::memcpy(values.digests[0].digest.sha256, digest.data(), digest.size());
  std::lock_guard lock(mu_);
  Check(Esys_PCR_Extend(ctx_, ESYS_TR_PCR0 + pcr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                        &values),
        ("Esys_PCR_Extend(PCR " + std::to_string(pcr) + ")").c_str());
}

QuoteResult Tpm::Quote(TPM2_HANDLE ak_handle, std::span<const uint8_t> qualifying_data,
                       const std::vector<uint32_t>& pcrs_in) {
  TPM2B_DATA qd{};
  if (qualifying_data.size() > sizeof(qd.buffer))
    throw AttestationError("qualifying data longer than " + std::to_string(sizeof(qd.buffer)) +
                           " bytes");
  qd.size = static_cast<uint16_t>(qualifying_data.size());
  std::memcpy(qd.buffer, qualifying_data.data(), qualifying_data.size());
  std::vector<uint32_t> pcrs = pcrs_in;
  std::sort(pcrs.begin(), pcrs.end());
  pcrs.erase(std::unique(pcrs.begin(), pcrs.end()), pcrs.end());
  auto sel = MakeSelection(pcrs);
  TPMT_SIG_SCHEME scheme{};
  scheme.scheme = TPM2_ALG_NULL;  // the AK's own scheme

  std::lock_guard lock(mu_);
  ESYS_TR ak = PersistentTr(ak_handle);
  // Another process may extend a quoted PCR (IMA extends PCR 10 all the time) between the quote
  // and the read: re-quote until the read values hash to the quoted digest.
  constexpr int kAttempts = 5;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    TPM2B_ATTEST* raw_quoted = nullptr;
    TPMT_SIGNATURE* raw_sig = nullptr;
    Check(Esys_Quote(ctx_, ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &qd, &scheme, &sel,
                     &raw_quoted, &raw_sig),
          "Esys_Quote");
    EsysPtr<TPM2B_ATTEST> quoted(raw_quoted);
    EsysPtr<TPMT_SIGNATURE> sig(raw_sig);
    TPMS_ATTEST attest{};
    size_t off = 0;
    Check(Tss2_MU_TPMS_ATTEST_Unmarshal(quoted->attestationData, quoted->size, &off, &attest),
          "unmarshal TPMS_ATTEST");
    if (attest.magic != TPM2_GENERATED_VALUE || attest.type != TPM2_ST_ATTEST_QUOTE ||
        attest.extraData.size != qd.size ||
        std::memcmp(attest.extraData.buffer, qd.buffer, qd.size) != 0)
      throw AttestationError(
          "TPM returned a quote that is not a TPM-generated quote over our nonce");
    auto values = PcrReadLocked(pcrs);
    Bytes concat;
    for (const auto& v : values) concat.insert(concat.end(), v.begin(), v.end());
    auto digest = Sha256(concat);
    const auto& qdig = attest.attested.quote.pcrDigest;
    if (qdig.size != 32 || std::memcmp(qdig.buffer, digest.data(), 32) != 0) continue;

    QuoteResult r;
    r.attest.assign(quoted->attestationData, quoted->attestationData + quoted->size);
    std::vector<uint8_t> sbuf(sizeof(TPMT_SIGNATURE));
    size_t soff = 0;
    Check(Tss2_MU_TPMT_SIGNATURE_Marshal(sig.get(), sbuf.data(), sbuf.size(), &soff),
          "marshal TPMT_SIGNATURE");
    sbuf.resize(soff);
    r.signature = std::move(sbuf);
    r.pcrs = pcrs;
    r.values = std::move(values);
    r.clock = attest.clockInfo.clock;
    r.reset_count = attest.clockInfo.resetCount;
    r.restart_count = attest.clockInfo.restartCount;
    r.safe = attest.clockInfo.safe == TPM2_YES;
    r.firmware_version = attest.firmwareVersion;
    return r;
  }
  throw AttestationError("quoted PCRs kept changing between TPM2_Quote and TPM2_PCR_Read (" +
                         std::to_string(kAttempts) + " attempts)");
}

HandleCounts Tpm::CountHandles() {
  std::lock_guard lock(mu_);
  HandleCounts c;
  c.transient = static_cast<uint32_t>(ListHandles(ctx_, TPM2_TRANSIENT_FIRST).size());
  c.loaded_sessions = static_cast<uint32_t>(ListHandles(ctx_, TPM2_LOADED_SESSION_FIRST).size());
  c.saved_sessions = static_cast<uint32_t>(ListHandles(ctx_, TPM2_ACTIVE_SESSION_FIRST).size());
  return c;
}

void Tpm::EvictPersistent(TPM2_HANDLE handle) {
  std::lock_guard lock(mu_);
  ESYS_TR tr = PersistentTr(handle);
  ESYS_TR none = ESYS_TR_NONE;
  Check(Esys_EvictControl(ctx_, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                          handle, &none),
        ("Esys_EvictControl(evict " + HandleHex(handle) + ")").c_str());
  // ESYS drops the evicted object's metadata itself; forget our cached ESYS_TR.
  std::erase_if(persistent_, [&](const auto& e) { return e.first == handle; });
}

}  // namespace sovguard::attestation::tpm
