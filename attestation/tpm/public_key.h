// TPM public-area helpers that need no TPM (OpenSSL + tss2-mu only), shared by the node and the
// verifier: PEM export, TPM names, EK certificate trimming.
#pragma once

#include <openssl/evp.h>

#include <memory>
#include <span>
#include <string>

#include "attestation/common/bytes.h"
#include "base/openssl.h"

namespace sovguard::attestation::tpm {

// The OpenSSL public key of a marshalled TPM2B_PUBLIC (RSA or ECC). Throws AttestationError.
base::EvpPkeyPtr PublicAreaToPkey(std::span<const uint8_t> tpm2b_public);
std::string PublicKeyToPem(EVP_PKEY* key);
// Converts a marshalled TPM2B_PUBLIC (RSA or ECC) to a SubjectPublicKeyInfo PEM.
std::string PublicAreaToPem(std::span<const uint8_t> tpm2b_public);
// TPM name of a marshalled TPM2B_PUBLIC: nameAlg || H(TPMT_PUBLIC). SHA-256 names only.
Bytes PublicAreaName(std::span<const uint8_t> tpm2b_public);
// Some TPMs store the certificate zero-padded; returns the DER bytes of the outer SEQUENCE.
Bytes TrimDer(std::span<const uint8_t> stored);

}  // namespace sovguard::attestation::tpm
