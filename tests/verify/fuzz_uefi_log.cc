// Fuzz target: UEFI (TCG crypto-agile) event log parser and replay. Any input ends in events or
// an AttestationError naming the offset: never a crash, hang or out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <span>

#include "attestation/verify/uefi_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sovguard::attestation;
  try {
    auto log = verify::uefi::Parse(std::span(data, size));
    (void)verify::uefi::Replay(log);
  } catch (const AttestationError&) {
  }
  return 0;
}
