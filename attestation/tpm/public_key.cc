#include "attestation/tpm/public_key.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "base/openssl.h"

namespace sovguard::attestation::tpm {
namespace {

void Check(TSS2_RC rc, const char* what) {
  if (rc != TSS2_RC_SUCCESS)
    throw AttestationError(std::string(what) + " failed: " + Tss2_RC_Decode(rc));
}

TPM2B_PUBLIC UnmarshalPublic(std::span<const uint8_t> in) {
  TPM2B_PUBLIC pub{};
  size_t off = 0;
  Check(Tss2_MU_TPM2B_PUBLIC_Unmarshal(in.data(), in.size(), &off, &pub), "unmarshal TPM2B_PUBLIC");
  if (off != in.size()) throw AttestationError("TPM2B_PUBLIC: trailing bytes after the structure");
  return pub;
}

}  // namespace

base::EvpPkeyPtr PublicAreaToPkey(std::span<const uint8_t> tpm2b_public) {
  auto pub = UnmarshalPublic(tpm2b_public);
  const auto& p = pub.publicArea;
  base::OsslParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld) throw AttestationError("OpenSSL: OSSL_PARAM_BLD_new failed");
  base::BignumPtr n, e;
  Bytes point;
  const char* keytype = nullptr;
  if (p.type == TPM2_ALG_RSA) {
    keytype = "RSA";
    n.reset(BN_bin2bn(p.unique.rsa.buffer, p.unique.rsa.size, nullptr));
    e.reset(BN_new());
    if (!n || !e ||
        BN_set_word(e.get(), p.parameters.rsaDetail.exponent ? p.parameters.rsaDetail.exponent
                                                             : 65537) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1)
      throw AttestationError("OpenSSL: cannot build RSA public key parameters");
  } else if (p.type == TPM2_ALG_ECC) {
    keytype = "EC";
    const char* group = nullptr;
    switch (p.parameters.eccDetail.curveID) {
      case TPM2_ECC_NIST_P256:
        group = "P-256";
        break;
      case TPM2_ECC_NIST_P384:
        group = "P-384";
        break;
      case TPM2_ECC_NIST_P521:
        group = "P-521";
        break;
      default:
        throw AttestationError("unsupported ECC curve in TPM public area");
    }
    point.push_back(0x04);  // uncompressed point
    point.insert(point.end(), p.unique.ecc.x.buffer, p.unique.ecc.x.buffer + p.unique.ecc.x.size);
    point.insert(point.end(), p.unique.ecc.y.buffer, p.unique.ecc.y.buffer + p.unique.ecc.y.size);
    if (OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                         point.size()) != 1)
      throw AttestationError("OpenSSL: cannot build EC public key parameters");
  } else {
    throw AttestationError("TPM public area is neither RSA nor ECC");
  }
  base::OsslParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
  base::EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, keytype, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
    throw AttestationError("OpenSSL: TPM public key is not a valid key");
  return base::EvpPkeyPtr(raw);
}

std::string PublicKeyToPem(EVP_PKEY* key) {
  base::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1)
    throw AttestationError("OpenSSL: cannot write PEM public key");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string PublicAreaToPem(std::span<const uint8_t> tpm2b_public) {
  return PublicKeyToPem(PublicAreaToPkey(tpm2b_public).get());
}

Bytes PublicAreaName(std::span<const uint8_t> tpm2b_public) {
  auto pub = UnmarshalPublic(tpm2b_public);
  if (pub.publicArea.nameAlg != TPM2_ALG_SHA256)
    throw AttestationError("only SHA-256 name algorithm is supported");
  std::vector<uint8_t> buf(sizeof(TPMT_PUBLIC));
  size_t off = 0;
  Check(Tss2_MU_TPMT_PUBLIC_Marshal(&pub.publicArea, buf.data(), buf.size(), &off),
        "marshal TPMT_PUBLIC");
  buf.resize(off);
  auto d = Sha256(buf);
  // Sized up front: GCC 12 flags a spurious -Warray-bounds on grow-then-insert here.
  Bytes name(2 + d.size());
  name[0] = static_cast<uint8_t>(TPM2_ALG_SHA256 >> 8);
  name[1] = static_cast<uint8_t>(TPM2_ALG_SHA256 & 0xff);
  std::copy(d.begin(), d.end(), name.begin() + 2);
  return name;
}

Bytes TrimDer(std::span<const uint8_t> stored) {
  if (stored.size() < 2 || stored[0] != 0x30)
    throw AttestationError("EK certificate: NV contents do not start with a DER SEQUENCE");
  size_t len = 0, hdr = 2;
  if (stored[1] < 0x80) {
    len = stored[1];
  } else {
    size_t nbytes = stored[1] & 0x7f;
    if (nbytes == 0 || nbytes > 4 || stored.size() < 2 + nbytes)
      throw AttestationError("EK certificate: bad DER length");
    len = GetBe(stored, 2, static_cast<int>(nbytes));
    hdr += nbytes;
  }
  if (hdr + len > stored.size())
    throw AttestationError("EK certificate: DER length exceeds the NV contents");
  return Bytes(stored.begin(), stored.begin() + static_cast<std::ptrdiff_t>(hdr + len));
}

}  // namespace sovguard::attestation::tpm
