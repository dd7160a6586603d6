// Commands that other capability folders provide (policy, jurisdiction, attest) and the status
// rendering, kept out of main.cc so each stays small.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sovguard::ctl {

// Runs args[0] when a capability folder provides it; std::nullopt when no folder knows it.
std::optional<int> RunExtraCommand(const std::vector<std::string>& args, std::ostream& out,
                                   std::ostream& err);
void PrintExtraUsage(std::ostream& out);

// Human rendering of the daemon's status document.
int PrintStatus(const nlohmann::json& status, std::ostream& out, std::ostream& err);

}  // namespace sovguard::ctl
