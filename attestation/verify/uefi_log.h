// TCG PC Client crypto-agile UEFI event log (binary_bios_measurements): parse and replay of the
// SHA-256 bank. Layout (TCG PC Client Platform Firmware Profile, little-endian):
//   first event, SHA-1 format: pcr u32, type u32 (EV_NO_ACTION), digest[20], size u32, data =
//     TCG_EfiSpecIdEvent "Spec ID Event03" with the digest sizes of every algorithm in the log;
//   then TCG_PCR_EVENT2: pcr u32, type u32, count u32, count x {alg u16, digest}, size u32, data.
// EV_NO_ACTION events are not extended; a StartupLocality event sets PCR 0's initial value.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string_view>
#include <vector>

#include "attestation/common/bytes.h"

namespace sovguard::attestation::verify::uefi {

inline constexpr uint32_t kEvNoAction = 0x3;

struct Event {
  uint32_t pcr = 0;
  uint32_t type = 0;
  Sha256Digest sha256{};
  size_t offset = 0;  // byte offset of the event in the log
};

struct Log {
  std::vector<Event> events;  // every event after the Spec ID event
  uint8_t startup_locality = 0;
};

// TCG PC Client PFP event type name ("EV_IPL", "EV_EFI_VARIABLE_BOOT", ...), or "" for a type
// the specification does not define (the verifier reports those, never accepts them).
std::string_view EventTypeName(uint32_t type);

// Throws AttestationError naming the byte offset and what was expected (empty, garbage,
// truncated, no SHA-256 bank).
Log Parse(std::span<const uint8_t> data);
// PCR values from the events (PCR 0 starts at the startup locality), for every PCR in the log.
std::map<uint32_t, Sha256Digest> Replay(const Log& log);

}  // namespace sovguard::attestation::verify::uefi
