// EAT Attestation Result (EAR, draft-ietf-rats-ear) of a verification, as a JWT signed with the
// verifier's key: JWS compact serialization, ES256 (EC P-256, raw r||s) or EdDSA (Ed25519),
// made with OpenSSL. Claims:
//   eat_profile      "tag:github.com,2023:veraison/ear"
//   iat              issue time (seconds since the epoch)
//   ear.verifier-id  {"developer": "sovguard", "build": "sovguard-verify <version>"}
//   eat_nonce        the verifier's nonce (base64url), when one was given
//   submods          {"<node>": {"ear.status", "ear.trustworthiness-vector",
//                                 "ear.appraisal-policy-id", "sovguard.checks"}}
// ear.status is derived from the trustworthiness vector (AR4SI tiers: 0 none, 2-31 affirming,
// 32-95 warning, 96-127 contraindicated), and is "contraindicated" whenever a check failed.
// The vector maps the checks (see TrustworthinessVector in ear.cc and README.md).
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "attestation/verify/verifier.h"

namespace sovguard::attestation::verify {

inline constexpr std::string_view kEarProfile = "tag:github.com,2023:veraison/ear";

// AR4SI claims of one appraisal, 0 = no claim.
std::map<std::string, int> TrustworthinessVector(const Report& r);
// "affirming", "warning", "contraindicated" or "none".
std::string EarStatus(const Report& r);

struct EarOptions {
  int64_t issued_at = 0;  // 0 = now
  std::optional<Bytes> nonce;
};
// The EAR claims set (JSON text) and the signed JWT. Throws InputError for a key that is not
// Ed25519 or EC P-256.
std::string EarClaimsJson(const Report& r, const EarOptions& o);
std::string MakeEarJwt(const Report& r, EVP_PKEY* key, const EarOptions& o);

std::string Base64Url(std::span<const uint8_t> data);

}  // namespace sovguard::attestation::verify
