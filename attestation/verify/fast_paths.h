// The verifier's performance layer, behind one boundary. Each routine here returns exactly what
// the plain path beside it returns (OpenSSL or tpm2-tss, read alone by an auditor), only faster:
// remembered per exact input bytes (a fleet shows the same AKs, enrolled keys, EK certificates
// and manifests every round) or hand-written (P-256 PEM rendering here; the replay's SHA-256
// lanes in attestation/common/sha256_chain.h). SetFastPaths(false) sends every verdict down the
// plain paths; tests/verify/fast_paths_test.cc holds both equal on real evidence.
#pragma once

#include <openssl/evp.h>

#include <string>

#include "base/openssl.h"

namespace sovguard::attestation::verify {

// Process-wide, on by default. Off: no cache is read or written (the AK, enrolled-key, EK
// profile, manifest and Options::replay_cache caches), PEMs come from OpenSSL's encoder, and
// event-log replays hash through OpenSSL (Sha256ChainLimitPath(kOpenSsl)). For tests and
// auditors; not meant to be flipped while verdicts run.
void SetFastPaths(bool enabled);
bool FastPathsEnabled();

namespace detail {

// The SubjectPublicKeyInfo PEM of an EC P-256 key, byte for byte as PEM_write_bio_PUBKEY writes
// it (the DER is a fixed prefix and the uncompressed point), or "" for any other key. The plain
// path: tpm::PublicKeyToPem.
std::string P256PemFast(EVP_PKEY* key);

// What ak.consistency derives from ak.tpm2b_public: the key, its TPM name, and its PEM when
// P256PemFast rendered one (else ""). Plain path: tpm::PublicAreaToPkey and tpm::PublicAreaName.
// Throws AttestationError for an unusable public area.
struct DerivedAk {
  base::EvpPkeyPtr key;
  std::string name, pem;
};
DerivedAk DeriveAk(const std::string& tpm2b_public);

// The enrolled AK (--ak-pub) parsed, or null for text that is not a public key. Plain path:
// PEM_read_bio_PUBKEY.
base::EvpPkeyPtr EnrolledKey(const std::string& pem);

}  // namespace detail
}  // namespace sovguard::attestation::verify
