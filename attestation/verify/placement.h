// OpenStack Placement traits kept in step with fleet verdicts. sovguard owns every trait named
// CUSTOM_SOVGUARD_*: on a passing, fresh verdict a node's resource provider carries exactly the
// wanted ones (kAttestedTrait plus one per dataset the auditor vouches for); on any other verdict
// (failed, unreachable, stale, no verdict) it carries none. Other traits are never touched.
// Writes are generation-checked PUT /resource_providers/{uuid}/traits; on a 409 generation
// conflict the traits are read again and the write recomputed from what another writer left (at
// most 5 writes per provider and round, then an error: the provider is not in step). HTTP
// through libcurl; the token (X-Auth-Token) is never logged.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace sovguard::attestation::verify {

inline constexpr std::string_view kTraitPrefix = "CUSTOM_SOVGUARD_";
inline constexpr std::string_view kAttestedTrait = "CUSTOM_SOVGUARD_ATTESTED";

// CUSTOM_SOVGUARD_DATASET_<ID>: the dataset id upper-cased, every byte outside [A-Z0-9]
// replaced by '_' (Placement's CUSTOM_[A-Z0-9_]+, at most 255 bytes). Throws InputError for an
// empty id or one whose trait would be too long.
std::string DatasetTrait(std::string_view dataset_id);

struct PlacementConfig {
  std::string endpoint;  // http(s)://HOST[:PORT][/PREFIX] of the Placement API
  // Read before every round (a Keystone token is renewed by whoever writes the file); empty path:
  // the OS_AUTH_TOKEN environment variable. Placement's noauth2 strategy accepts "admin".
  std::string token_file;
  std::chrono::seconds timeout{30};
};

// One node's desired state: `traits` when it passed freshly, nothing otherwise.
struct TraitChange {
  std::string provider;  // resource provider name (hypervisor host name)
  std::string uuid;
  std::vector<std::string> added, removed;
  std::string error;  // why the provider could not be brought in step (empty: it is)
};

class PlacementClient {
 public:
  explicit PlacementClient(PlacementConfig config);
  ~PlacementClient();
  PlacementClient(const PlacementClient&) = delete;
  PlacementClient& operator=(const PlacementClient&) = delete;

  // Re-reads the token (throws InputError when there is none).
  void RefreshToken();
  // Brings the provider named `provider` to carry exactly `wanted` of the CUSTOM_SOVGUARD_*
  // traits (wanted must all have that prefix), creating missing custom traits first. Never
  // throws for an HTTP or Placement failure: the change says what went wrong.
  TraitChange Reconcile(const std::string& provider, const std::set<std::string>& wanted);

 private:
  struct Response {
    long status = 0;
    std::string body;
  };
  Response Call(const std::string& method, const std::string& path, const std::string& body);
  std::string ProviderUuid(const std::string& name);

  PlacementConfig config_;
  std::string token_;
  struct Curl;
  std::unique_ptr<Curl> curl_;
  std::map<std::string, std::string> uuids_;  // provider name -> uuid
  std::set<std::string> known_traits_;        // custom traits known to exist
};

}  // namespace sovguard::attestation::verify
