// Fuzz target: any bytes as a jurisdiction table (.sgjt) and as a signed bundle must be rejected
// with an error or accepted, never crash. The table is tried twice: as given, and with a valid
// checksum appended so the fuzzer reaches the record parser behind the SHA-256 check.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <openssl/sha.h>

#include "policy/bundle/bundle.h"
#include "policy/jurisdiction/table.h"

namespace {
// A fixed Ed25519 public key: fuzzed bundles never verify, but every parsing step before the
// signature check is exercised.
constexpr const char* kPub =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAYq0kNbrxeG0Nb98Cp4dKM+xU+Ka8rbSJQSUYmWypK5I=\n"
    "-----END PUBLIC KEY-----\n";
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::string error;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(data, size, digest);
  const std::string with_checksum =
      std::string(bytes) + std::string(reinterpret_cast<const char*>(digest), sizeof digest);
  for (const std::string_view table : {bytes, std::string_view(with_checksum)}) {
    if (auto t = sovguard::policy::JurisdictionTable::Deserialize(table, &error)) {
      (void)t->Lookup(std::string_view("192.0.2.1"));
      (void)t->Lookup(std::string_view("2001:db8::1"));
      if (t->Serialize() != table) __builtin_trap();  // a loaded table re-encodes identically
    }
  }
  (void)sovguard::policy::VerifyBundle(bytes, {kPub}, &error, 1'780'000'000);
  return 0;
}
