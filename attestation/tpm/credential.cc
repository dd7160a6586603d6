#include "attestation/tpm/credential.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <tss2/tss2_mu.h>

#include <algorithm>
#include <memory>

#include "attestation/tpm/public_key.h"
#include "base/openssl.h"

namespace sovguard::attestation::tpm {
namespace {

Bytes HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data) {
  Bytes out(32);
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(),
            out.data(), &len) ||
      len != 32)
    throw AttestationError("OpenSSL: HMAC-SHA-256 failed");
  return out;
}

}  // namespace

Bytes KdfaSha256(std::span<const uint8_t> key, std::string_view label,
                 std::span<const uint8_t> context_u, std::span<const uint8_t> context_v,
                 uint32_t bits) {
  Bytes out;
  const size_t want = (bits + 7) / 8;
  // counter || label || 0x00 || contextU || contextV || bits, all integers big-endian. Built in a
  // pre-sized buffer (GCC 12 raises a spurious -Wstringop-overflow on grow-and-insert here).
  Bytes msg(4 + label.size() + 1 + context_u.size() + context_v.size() + 4);
  auto it = msg.begin() + 4;
  it = std::copy(label.begin(), label.end(), it);
  *it++ = 0;  // the label's terminating zero is part of the input
  it = std::copy(context_u.begin(), context_u.end(), it);
  it = std::copy(context_v.begin(), context_v.end(), it);
  for (int i = 0; i < 4; ++i) *it++ = static_cast<uint8_t>(bits >> (24 - 8 * i));
  for (uint32_t counter = 1; out.size() < want; ++counter) {
    for (int i = 0; i < 4; ++i)
      msg[static_cast<size_t>(i)] = static_cast<uint8_t>(counter >> (24 - 8 * i));
    auto block = HmacSha256(key, msg);
    out.insert(out.end(), block.begin(), block.end());
  }
  out.resize(want);
  return out;
}

MadeCredential MakeCredential(std::span<const uint8_t> ek_tpm2b_public,
                              std::span<const uint8_t> ak_name, std::span<const uint8_t> secret) {
  TPM2B_PUBLIC ek{};
  size_t off = 0;
  if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(ek_tpm2b_public.data(), ek_tpm2b_public.size(), &off, &ek) !=
          TSS2_RC_SUCCESS ||
      off != ek_tpm2b_public.size())
    throw AttestationError("MakeCredential: EK public area does not unmarshal");
  const auto& p = ek.publicArea;
  if (p.type != TPM2_ALG_RSA || p.nameAlg != TPM2_ALG_SHA256 ||
      p.parameters.rsaDetail.symmetric.algorithm != TPM2_ALG_AES ||
      p.parameters.rsaDetail.symmetric.keyBits.aes != 128 ||
      p.parameters.rsaDetail.symmetric.mode.aes != TPM2_ALG_CFB)
    throw AttestationError(
        "MakeCredential: only RSA EKs with SHA-256 and AES-128-CFB are supported");
  if (secret.empty() || secret.size() > 32)
    throw AttestationError("MakeCredential: secret must be 1..32 bytes (a TPM2B_DIGEST)");
  if (ak_name.size() != 34)
    throw AttestationError("MakeCredential: AK name must be a SHA-256 name");

  // 1. Seed, wrapped for the EK with OAEP (SHA-256, label "IDENTITY\0").
  Bytes seed(32);
  if (RAND_bytes(seed.data(), static_cast<int>(seed.size())) != 1)
    throw AttestationError("OpenSSL: RAND_bytes failed");
  const std::string pem = PublicAreaToPem(ek_tpm2b_public);
  base::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  base::EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  base::EvpPkeyCtxPtr pctx(key ? EVP_PKEY_CTX_new(key.get(), nullptr) : nullptr);
  static constexpr char kIdentity[] = "IDENTITY";  // sizeof includes the terminating zero
  // OpenSSL takes ownership of the label buffer.
  auto* label = static_cast<unsigned char*>(OPENSSL_memdup(kIdentity, sizeof kIdentity));
  size_t enc_len = 0;
  if (!pctx || !label || EVP_PKEY_encrypt_init(pctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(pctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(pctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(pctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set0_rsa_oaep_label(pctx.get(), label, sizeof kIdentity) != 1) {
    OPENSSL_free(label);
    throw AttestationError("OpenSSL: cannot set up RSA-OAEP for the EK");
  }
  if (EVP_PKEY_encrypt(pctx.get(), nullptr, &enc_len, seed.data(), seed.size()) != 1)
    throw AttestationError("OpenSSL: RSA-OAEP size query failed");
  MadeCredential out;
  out.encrypted_secret.resize(enc_len);
  if (EVP_PKEY_encrypt(pctx.get(), out.encrypted_secret.data(), &enc_len, seed.data(),
                       seed.size()) != 1)
    throw AttestationError("OpenSSL: RSA-OAEP encryption failed");
  out.encrypted_secret.resize(enc_len);

  // 2. encIdentity = AES-128-CFB(KDFa(seed, "STORAGE", name), IV = 0, TPM2B_DIGEST(secret)).
  auto sym_key = KdfaSha256(seed, "STORAGE", ak_name, {}, 128);
  Bytes plain;
  PutBe(plain, secret.size(), 2);
  plain.insert(plain.end(), secret.begin(), secret.end());
  Bytes enc_identity(plain.size());
  base::EvpCipherCtxPtr cctx(EVP_CIPHER_CTX_new());
  const unsigned char iv[16] = {};
  int n1 = 0, n2 = 0;
  if (!cctx ||
      EVP_EncryptInit_ex(cctx.get(), EVP_aes_128_cfb128(), nullptr, sym_key.data(), iv) != 1 ||
      EVP_EncryptUpdate(cctx.get(), enc_identity.data(), &n1, plain.data(),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(cctx.get(), enc_identity.data() + n1, &n2) != 1 ||
      static_cast<size_t>(n1 + n2) != plain.size())
    throw AttestationError("OpenSSL: AES-128-CFB encryption failed");

  // 3. Outer integrity: HMAC-SHA-256(KDFa(seed, "INTEGRITY"), encIdentity || name).
  auto hmac_key = KdfaSha256(seed, "INTEGRITY", {}, {}, 256);
  Bytes mac_input = enc_identity;
  mac_input.insert(mac_input.end(), ak_name.begin(), ak_name.end());
  auto mac = HmacSha256(hmac_key, mac_input);
  PutBe(out.credential_blob, mac.size(), 2);
  out.credential_blob.insert(out.credential_blob.end(), mac.begin(), mac.end());
  out.credential_blob.insert(out.credential_blob.end(), enc_identity.begin(), enc_identity.end());
  return out;
}

}  // namespace sovguard::attestation::tpm
