// Reference manifest: the signed list of software a certifier approved for a sovguard
// node, and the boot-chain values it accepts. sovguard-verify checks every component the node
// measured against it, and each component's supplier jurisdiction against an allowed set.
//
// Payload: JSON, UTF-8 (schema: attestation/manifest/README.md):
//   {"sovguard_manifest": 1, "id": "...", "issued_at": "RFC 3339", "issuer": "...",
//    "components": [{"name", "version", "supplier", "supplier_jurisdiction" (ISO 3166-1
//                    alpha-2), "license" (SPDX expression), "files": [{"path", "sha256"}]}],
//    "boot": {"pcrs": {"0": ["<sha256 hex>", ...], ...}, "kernel_cmdlines": ["..."]}}
// Envelope: DSSE v1 (in-toto's Dead Simple Signing Envelope), enveloped, JSON:
//   {"payloadType": "application/vnd.sovguard.manifest+json", "payload": base64(payload),
//    "signatures": [{"keyid": "sha256:<hex SHA-256 of the signer's SubjectPublicKeyInfo DER>",
//                    "sig": base64(signature over PAE(payloadType, payload))}]}
//   PAE = "DSSEv1" SP len(type) SP type SP len(payload) SP payload (lengths in ASCII decimal).
//   Signature: Ed25519 (RFC 8032), or ECDSA P-256 with SHA-256 (DER-encoded), via OpenSSL.
// The payload bytes are what is signed, so there is no JSON canonicalization to get wrong.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/common/bytes.h"
#include "base/openssl.h"

namespace sovguard::attestation::manifest {

inline constexpr std::string_view kPayloadType = "application/vnd.sovguard.manifest+json";
inline constexpr int kManifestVersion = 1;

// Every error names the field (JSON path) or the envelope part and what was expected.
class ManifestError : public AttestationError {
 public:
  ManifestError(std::string reason, const std::string& what)
      : AttestationError(what), reason_(std::move(reason)) {}
  // One of the verifier's reason codes: MANIFEST_MALFORMED or MANIFEST_SIGNATURE_INVALID.
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

struct File {
  std::string path;
  Sha256Digest sha256{};
};

struct Component {
  std::string name;
  std::string version;
  std::string supplier;
  std::string supplier_jurisdiction;  // ISO 3166-1 alpha-2, upper case
  std::string license;                // SPDX licence expression
  std::vector<File> files;
};

struct Manifest {
  std::string id;
  std::string issued_at;
  std::string issuer;
  std::vector<Component> components;
  std::map<uint32_t, std::vector<Sha256Digest>> boot_pcrs;  // accepted values per boot PCR
  std::vector<std::string> kernel_cmdlines;                 // accepted /proc/cmdline values
};

// Strict parse of the payload: unknown fields, wrong types, bad digests and bad country codes
// are errors (fail closed). With `complete`, every component must name its version, supplier,
// supplier jurisdiction and licence (what `manifest sign` and the verifier require); a draft
// from `manifest scan` may leave them empty for the certifier to fill in.
Manifest Parse(std::string_view json, bool complete = true);
std::string ToJson(const Manifest& m);

// PEM keys; only Ed25519 and EC P-256 are accepted. Throw ManifestError naming the file.
base::EvpPkeyPtr LoadPrivateKey(const std::filesystem::path& pem);
base::EvpPkeyPtr LoadPublicKey(const std::filesystem::path& pem);
base::EvpPkeyPtr PublicKeyFromPem(std::string_view pem);
// "sha256:<hex>" of the key's SubjectPublicKeyInfo DER.
std::string KeyId(EVP_PKEY* key);

// Checks the payload is a complete manifest, then signs it into a DSSE envelope (JSON).
std::string Sign(std::string_view payload_json, EVP_PKEY* private_key);
// Verifies the envelope with `public_key` (a signature whose keyid is this key's must verify;
// other signatures are ignored) and parses the payload as a complete manifest.
Manifest VerifyEnvelope(std::string_view envelope_json, EVP_PKEY* public_key);

std::string Base64(std::span<const uint8_t> data);
// Standard alphabet, padding required; throws ManifestError(MANIFEST_MALFORMED) naming `what`.
Bytes FromBase64(std::string_view text, std::string_view what);

}  // namespace sovguard::attestation::manifest
