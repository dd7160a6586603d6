// Fuzz target: evidence parser (JSON and binary protobuf) and every check behind it. Any input
// must end in a report or an InputError/AttestationError: never a crash, hang or other exception.
// The copy-free parse the CLI uses (ParseEvidenceView) must agree with ParseEvidence: refuse
// the same inputs, give the same evidence and the same verdict.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "attestation/verify/verifier.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sovguard::attestation;
  const std::span<const uint8_t> in(data, size);
  std::optional<v1::Evidence> ev;
  std::optional<verify::EvidenceView> view;
  try {
    ev = verify::ParseEvidence(in);
  } catch (const AttestationError&) {
  }
  try {
    view = verify::ParseEvidenceView(in);
  } catch (const AttestationError&) {
  }
  if (ev.has_value() != view.has_value()) __builtin_trap();
  if (!ev) return 0;
  auto rebuilt = view->message;
  rebuilt.mutable_logs()->set_cel(std::string(view->Cel().begin(), view->Cel().end()));
  if (rebuilt.SerializeAsString() != ev->SerializeAsString()) __builtin_trap();
  try {
    verify::Options opts;
    opts.nonce = Bytes(ev->nonce().begin(), ev->nonce().end());
    const auto rep = verify::Verify(*ev, opts);
    (void)verify::RenderText(rep);
    (void)verify::RenderJson(rep);
    const auto rep2 = verify::Verify(*view, opts);
    if (rep2.checks.size() != rep.checks.size()) __builtin_trap();
    for (size_t i = 0; i < rep.checks.size(); ++i)
      if (rep.checks[i].status != rep2.checks[i].status ||
          rep.checks[i].reason != rep2.checks[i].reason ||
          rep.checks[i].detail != rep2.checks[i].detail)
        __builtin_trap();
  } catch (const AttestationError&) {
  }
  return 0;
}
