// libFuzzer target: IMA measurement list parse + replay (ascii and binary) never crash.
#include <cstddef>
#include <cstdint>

#include "attestation/verify/ima_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto log = sovguard::attestation::verify::ima::Parse({data, size});
    (void)sovguard::attestation::verify::ima::Replay(log);
  } catch (const sovguard::attestation::AttestationError&) {
  }
  return 0;
}
