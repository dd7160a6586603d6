// Signed policy bundles: policy files plus metadata (version, issuer, creation time), signed with
// Ed25519 or ECDSA P-256 (OpenSSL EVP, PEM keys). Format (all integers big-endian):
//   "SGBUNDLE"               8 bytes magic
//   u32 format version       = 1
//   u32 manifest length      at most 64 MiB
//   manifest                 JSON, see BundleManifest
//   u32 signature length     at most 512
//   signature                Ed25519 (64 bytes) or ECDSA P-256/SHA-256 (DER) over every byte
//                            before the signature length
// The manifest is only parsed after the signature verified against a trusted key.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/validate/validate.h"

namespace sovguard::policy {

struct BundleFile {
  std::string name;     // file name (no directories), used in diagnostics
  std::string content;  // the policy text (UTF-8)
};

struct BundleManifest {
  std::uint64_t version = 0;  // monotonic; the daemon refuses a lower one than the active bundle
  std::string issuer;
  std::string created;    // RFC 3339
  std::string algorithm;  // "ed25519" or "ecdsa-p256-sha256"
  std::string key_id;     // SHA-256 (hex) of the signer's SubjectPublicKeyInfo (DER)
  std::vector<BundleFile> files;
};

struct VerifiedBundle {
  BundleManifest manifest;
  ValidatedPolicy policy;
  std::array<std::uint8_t, 32> sha256{};  // of the whole bundle
};

// Signs `files` with the PEM private key (Ed25519 or EC P-256). The policies must validate.
std::optional<std::string> CreateBundle(std::uint64_t version, std::string issuer,
                                        std::vector<BundleFile> files,
                                        std::string_view private_key_pem, std::string* error,
                                        std::int64_t now = std::time(nullptr));

// Checks the format, the signature against any of the trusted PEM public keys, the manifest, and
// validates the policies inside. On failure `error` says precisely what was wrong.
std::optional<VerifiedBundle> VerifyBundle(std::string_view bundle,
                                           const std::vector<std::string>& trusted_public_pems,
                                           std::string* error,
                                           std::int64_t now = std::time(nullptr));

// SHA-256 (hex) of a PEM public or private key's SubjectPublicKeyInfo, as in the manifest.
std::optional<std::string> KeyId(std::string_view pem, std::string* error);

// What the daemon holds: the active bundle and the anti-rollback state, persisted in state_dir
// (active.bundle and state, each replaced atomically by write + fsync + rename).
class BundleStore {
 public:
  struct ApplyResult {
    bool accepted = false;
    bool changed = false;  // false when the same bundle was already active
    std::string error;     // why it was rejected
    std::uint64_t version = 0;
  };

  // Loads the persisted state and re-verifies the last good bundle. A missing state dir is
  // created; a corrupt state or a bundle that no longer verifies is an error (never a reset of
  // the anti-rollback version).
  static std::optional<BundleStore> Open(const std::filesystem::path& state_dir,
                                         std::vector<std::string> trusted_public_pems,
                                         std::string* error);

  // What Apply would decide, without persisting or activating anything: the verified bundle
  // when it would be accepted (`result.error` says why not otherwise). Lets the caller compile
  // and load a bundle completely before it becomes the one a restart comes back to.
  std::optional<VerifiedBundle> Check(std::string_view bundle, ApplyResult* result,
                                      std::int64_t now = std::time(nullptr)) const;
  // Accepts a bundle signed by a trusted key whose version is not lower than the active one;
  // on any rejection the previous bundle stays active.
  ApplyResult Apply(std::string_view bundle, std::int64_t now = std::time(nullptr));

  const VerifiedBundle* active() const { return active_ ? &*active_ : nullptr; }
  std::uint64_t active_version() const { return version_; }

 private:
  std::filesystem::path dir_;
  std::vector<std::string> trusted_;
  std::optional<VerifiedBundle> active_;
  std::string active_bytes_;  // to restore active.bundle if persisting the state fails
  std::uint64_t version_ = 0;
};

}  // namespace sovguard::policy
