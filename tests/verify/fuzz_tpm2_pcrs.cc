// Fuzz target: parser of tpm2-tools' serialized PCR files (tpm2_quote -o). Any input ends in
// PCR values or an InputError: never a crash or out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <span>

#include "attestation/verify/verifier.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sovguard::attestation;
  try {
    auto q = verify::ParseTpm2ToolsPcrs(std::span(data, size));
    if (q.pcrs_size() > 24) __builtin_trap();  // at most PCRs 0-23 of one bank
  } catch (const AttestationError&) {
  }
  return 0;
}
