// Fuzz target: evidence parser (JSON and binary protobuf) and every check behind it. Any input
// must end in a report or an InputError/AttestationError: never a crash, hang or other exception.
#include <cstddef>
#include <cstdint>
#include <span>

#include "attestation/verify/verifier.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sovguard::attestation;
  try {
    auto ev = verify::ParseEvidence(std::span(data, size));
    verify::Options opts;
    opts.nonce = Bytes(ev.nonce().begin(), ev.nonce().end());
    auto rep = verify::Verify(ev, opts);
    (void)verify::RenderText(rep);
    (void)verify::RenderJson(rep);
  } catch (const AttestationError&) {
  }
  return 0;
}
