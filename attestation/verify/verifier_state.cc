// The verifier's state file: the signed counters of the last passing verdict per AK.
#include "attestation/verify/checks.h"

#include "base/file.h"

namespace sovguard::attestation::verify::detail {

// Counters of the last passing verdict for this AK must be strictly behind the new quote's.
CheckResult CheckMonotonic(const nlohmann::json& state, const std::string& key,
                           const TPMS_CLOCK_INFO& now) {
  const std::string name = "quote.clock_monotonic";
  const std::string cur = "clock " + std::to_string(now.clock) + " ms, reset " +
                          std::to_string(now.resetCount) + ", restart " +
                          std::to_string(now.restartCount);
  if (!state.contains("aks") || !state["aks"].contains(key))
    return Pass(name, "first verdict for AK " + key + ": " + cur);
  const auto& last = state["aks"][key];
  const uint64_t clock = last.at("clock_ms").get<uint64_t>();
  const uint32_t reset = last.at("reset_count").get<uint32_t>();
  const uint32_t restart = last.at("restart_count").get<uint32_t>();
  const std::string was = "last verdict: clock " + std::to_string(clock) + " ms, reset " +
                          std::to_string(reset) + ", restart " + std::to_string(restart);
  if (now.resetCount < reset || (now.resetCount == reset && now.restartCount < restart))
    return Fail(name, kReasonCounterRollback, cur + " is behind the " + was);
  if (now.resetCount == reset && now.restartCount == restart && now.clock <= clock)
    return Fail(name, kReasonEvidenceReplayed,
                cur + " does not advance past the " + was + ": old evidence replayed");
  return Pass(name, cur + " (" + was + ")");
}

nlohmann::json LoadState(const std::filesystem::path& path) {
  Bytes data;
  if (!ReadFileIfExists(path, data)) return nlohmann::json::object();
  try {
    auto j = nlohmann::json::parse(data.begin(), data.end());
    if (!j.is_object() || (j.contains("aks") && !j["aks"].is_object()))
      throw InputError("not a verifier state object");
    if (j.contains("aks"))
      for (const auto& [k, v] : j["aks"].items()) {
        (void)v.at("clock_ms").get<uint64_t>();
        (void)v.at("reset_count").get<uint32_t>();
        (void)v.at("restart_count").get<uint32_t>();
        if (v.contains("cel_records")) (void)v.at("cel_records").get<uint64_t>();
      }
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw InputError("state file " + path.string() + ": " + e.what());
  } catch (const InputError& e) {
    throw InputError("state file " + path.string() + ": " + e.what());
  }
}

size_t ContinuitySince(const std::optional<nlohmann::json>& state, const v1::Evidence& ev,
                       const TPMS_ATTEST* attest, const std::optional<CelFacts>& cel,
                       std::string& since_text) {
  since_text = "since boot (all of logs.cel)";
  const std::string ak_key = ToHex(U8(ev.ak().name()));
  if (!state || !attest || !cel || !state->contains("aks") || !(*state)["aks"].contains(ak_key))
    return 0;
  const auto& last = (*state)["aks"][ak_key];
  if (!last.contains("cel_records") ||
      last["reset_count"].get<uint32_t>() != attest->clockInfo.resetCount ||
      last["cel_records"].get<uint64_t>() > cel->recs.size())
    return 0;
  // A TPM Restart (Shutdown(STATE) + Startup(CLEAR), e.g. hibernation) resets the PCRs and so
  // the log without moving resetCount: the recorded count is of the log before. (A TPM Resume
  // moves restartCount too and keeps the log: reading all of it again is only stricter.)
  if (last["restart_count"].get<uint32_t>() != attest->clockInfo.restartCount) {
    since_text = "since the TPM restarted (all of logs.cel)";
    return 0;
  }
  const size_t since = last["cel_records"].get<uint64_t>();
  since_text =
      "since the last passing verdict (from logs.cel record " + std::to_string(since) + ")";
  return since;
}

void SaveState(nlohmann::json& state, const std::filesystem::path& path, const v1::Evidence& ev,
               const TPMS_ATTEST& attest, const std::optional<CelFacts>& cel) {
  auto& e = state["aks"][ToHex(U8(ev.ak().name()))];
  e["node"] = ev.node();
  e["clock_ms"] = attest.clockInfo.clock;
  e["reset_count"] = attest.clockInfo.resetCount;
  e["restart_count"] = attest.clockInfo.restartCount;
  e["generated_unix_ns"] = ev.generated_unix_ns();
  if (cel) e["cel_records"] = cel->recs.size();
  WriteFileAtomic(path, state.dump(2) + "\n");
}
}  // namespace sovguard::attestation::verify::detail
