// libFuzzer target: IMA measurement list parse + replay (ascii and binary, every supported
// template, both bank schemes) and the eventlog.ima check never crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "attestation/verify/ima_log.h"

namespace ima = sovguard::attestation::verify::ima;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto log = ima::Parse({data, size});
    (void)ima::Replay(log);
    (void)ima::Replay(log, ima::BankScheme::kPaddedSha1);
  } catch (const sovguard::attestation::AttestationError&) {
  }
  // The check over several quoted PCRs (values that match nothing, and zero for PCR 11).
  sovguard::attestation::v1::Evidence ev;
  ev.mutable_logs()->set_ima_ascii(std::string(reinterpret_cast<const char*>(data), size));
  for (uint32_t pcr : {5u, 10u, 11u}) {
    auto* p = ev.mutable_quote()->add_pcrs();
    p->set_index(pcr);
    p->set_sha256(std::string(32, pcr == 11 ? '\0' : '\x5a'));
  }
  (void)ima::Check(ev, true);
  return 0;
}
