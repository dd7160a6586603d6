// Fuzz target: the CEL-TLV decoder and replay must reject any input cleanly, never crash.
#include <cstddef>
#include <cstdint>
#include <span>

#include "attestation/eventlog/cel.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sovguard::attestation;
  auto res = cel::DecodeLogPrefix(std::span(data, size));
  if (res.consumed > size) __builtin_trap();
  for (const auto& r : res.records) {
    if (r.content_type != cel::kContentSovguard) continue;
    try {
      auto ev = cel::DecodeSovguardContent(r.content);
      (void)cel::EventKindName(ev.kind);
    } catch (const AttestationError&) {
    }
  }
  try {
    (void)cel::Replay(res.records);
  } catch (const AttestationError&) {
  }
  return 0;
}
