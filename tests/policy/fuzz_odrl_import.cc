// Fuzz target: any bytes through the ODRL importer and its renderer.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "policy/odrl/odrl.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (const bool strict : {false, true}) {
    const auto r = sovguard::policy::ImportOdrl(bytes, {"", strict});
    if (r.ok()) (void)sovguard::policy::RenderOdrlImport(r, "fuzz.json");
  }
  return 0;
}
