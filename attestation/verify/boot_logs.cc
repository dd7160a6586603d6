// eventlog.uefi: the firmware's boot log against the quoted boot PCRs.
#include "attestation/verify/checks.h"

#include <algorithm>
#include <map>

#include "attestation/verify/ima_log.h"
#include "attestation/verify/uefi_log.h"

namespace sovguard::attestation::verify::detail {

// Boot PCRs 0-9 that the quote covers must be what the UEFI log replays to (zeros where the log
// has no event for a PCR). PCRs the log extends but the quote does not cover are named.
CheckResult CheckUefi(const v1::Evidence& ev, bool pcrs_ok) {
  const std::string name = "eventlog.uefi";
  // The boot chain is verified only when every boot PCR is quoted and replayed.
  std::string unquoted_boot;
  for (uint32_t i = 0; i <= 9; ++i)
    if (std::none_of(ev.quote().pcrs().begin(), ev.quote().pcrs().end(),
                     [&](const v1::PcrValue& p) { return p.index() == i; }))
      unquoted_boot += (unquoted_boot.empty() ? "" : ",") + std::to_string(i);
  if (!unquoted_boot.empty())
    return Fail(
        name, kReasonBootPcrNotQuoted,
        "boot PCR(s) " + unquoted_boot + " not in quote.pcrs: the boot chain is unverified");
  if (!ev.logs().has_uefi_tcg2())
    return Fail(name, kReasonBootLogMissing,
                "no logs.uefi_tcg2: the boot PCRs 0-9 cannot be replayed (a node without a UEFI "
                "log, e.g. swtpm, needs --waive boot-log)");
  std::map<uint32_t, Sha256Digest> replayed;
  size_t nevents = 0;
  std::string unknown;
  size_t n_unknown = 0;
  try {
    auto log = uefi::Parse(U8(ev.logs().uefi_tcg2()));
    nevents = log.events.size();
    for (const auto& e : log.events)
      if (uefi::EventTypeName(e.type).empty() && n_unknown++ < 8)
        unknown +=
            (unknown.empty() ? "" : "; ") + std::string("event at byte ") +
            std::to_string(e.offset) + " (PCR " + std::to_string(e.pcr) + "): type 0x" +
            ToHex(Bytes{static_cast<uint8_t>(e.type >> 24), static_cast<uint8_t>(e.type >> 16),
                        static_cast<uint8_t>(e.type >> 8), static_cast<uint8_t>(e.type)});
    replayed = uefi::Replay(log);
  } catch (const AttestationError& e) {
    return Fail(name, kReasonUefiLogMalformed, std::string("logs.uefi_tcg2: ") + e.what());
  }
  // The event type is not part of the digest: an unknown one replays fine and must still not
  // pass as understood.
  if (n_unknown)
    return Fail(name, kReasonUefiUnknownEvent,
                std::to_string(n_unknown) +
                    " event(s) of a type the TCG PC Client profile does "
                    "not define: " +
                    unknown);
  std::string mismatched, compared;
  std::set<uint32_t> quoted;
  for (const auto& p : ev.quote().pcrs()) {
    quoted.insert(p.index());
    if (p.index() > 9) continue;
    auto it = replayed.find(p.index());
    const Sha256Digest want = it != replayed.end() ? it->second : Sha256Digest{};
    std::string& list = Str(want) == p.sha256() ? compared : mismatched;
    list += (list.empty() ? "" : ",") + std::to_string(p.index());
  }
  if (!mismatched.empty())
    return Fail(name, kReasonUefiReplayMismatch,
                "logs.uefi_tcg2 (" + std::to_string(nevents) +
                    " events) does not replay to quoted PCR(s) " + mismatched);
  if (compared.empty())
    return Fail(name, kReasonUefiReplayMismatch, "the quote covers none of the boot PCRs 0-9");
  if (!pcrs_ok)
    return Fail(name, kReasonDependencyFailed,
                "logs.uefi_tcg2 matches quote.pcrs, but quote.pcrs are not the signed values");
  std::string unquoted;
  for (const auto& [pcr, v] : replayed)
    if (!quoted.count(pcr)) unquoted += (unquoted.empty() ? "" : ",") + std::to_string(pcr);
  return Pass(name, std::to_string(nevents) + " events replay to PCRs " + compared +
                        (unquoted.empty() ? "" : "; PCRs " + unquoted + " not quoted"));
}

CheckResult CheckIma(const v1::Evidence& ev, bool pcrs_ok) {
  if (ev.logs().has_ima_ascii()) return ima::Check(ev, pcrs_ok);
  // No IMA list: fine only when IMA measured nothing (quoted PCR 10 is zero).
  const v1::PcrValue* p10 = nullptr;
  for (const auto& p : ev.quote().pcrs())
    if (p.index() == 10) p10 = &p;
  if (!p10)
    return Fail("eventlog.ima", kReasonImaLogMissing,
                "no logs.ima_ascii and PCR 10 is not quoted: whether IMA measured files is "
                "unknown");
  if (p10->sha256() != std::string(32, '\0'))
    return Fail("eventlog.ima", kReasonImaLogMissing,
                "quoted PCR 10 is " + Hex(p10->sha256()) +
                    ": IMA measured files, and the evidence has no logs.ima_ascii");
  return NotApplicable("eventlog.ima", kReasonNotVerified,
                       "no logs.ima_ascii; quoted PCR 10 is zero: IMA measured nothing");
}
}  // namespace sovguard::attestation::verify::detail
