// TPM2_MakeCredential in software (TPM 2.0 Part 1, "Credential Protection"), for the verifier side
// of credential activation: encrypts `secret` so that only the TPM holding the EK (whose public
// area is given) can recover it, and only for the object named `ak_name` loaded in that TPM.
// RSA EKs (OAEP-wrapped seed) with the default EK template (AES-128-CFB, SHA-256) only.
#pragma once

#include <span>

#include "attestation/common/bytes.h"

namespace sovguard::attestation::tpm {

struct MadeCredential {
  Bytes credential_blob;   // TPM2B_ID_OBJECT contents: TPM2B_DIGEST(integrityHMAC) || encIdentity
  Bytes encrypted_secret;  // TPM2B_ENCRYPTED_SECRET contents: RSA-OAEP("IDENTITY") of the seed
};

MadeCredential MakeCredential(std::span<const uint8_t> ek_tpm2b_public,
                              std::span<const uint8_t> ak_name, std::span<const uint8_t> secret);

// KDFa (TPM 2.0 Part 1, 11.4.10.2) with HMAC-SHA-256; `label` without its terminating zero.
Bytes KdfaSha256(std::span<const uint8_t> key, std::string_view label,
                 std::span<const uint8_t> context_u, std::span<const uint8_t> context_v,
                 uint32_t bits);

}  // namespace sovguard::attestation::tpm
