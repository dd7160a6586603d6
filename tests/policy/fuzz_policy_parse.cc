// Fuzz target: any bytes through the policy reader (as text format and as JSON) and the
// validator must give a policy or diagnostics, never a crash, hang or sanitizer report.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "policy/validate/validate.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const char* name : {"fuzz.textproto", "fuzz.json"}) {
    const auto r = sovguard::policy::LoadPolicyBuffers({{name, std::string(bytes)}}, 1'780'000'000);
    if (r.ok()) {
      // A valid policy must also answer guest queries.
      (void)r.policy->DatasetsForGuest("vm", "0f8fad5b-d9cb-469f-a165-70867728950e", {"a=b"});
    } else {
      for (const auto& d : r.diagnostics) (void)d.ToString();
    }
  }
  return 0;
}
