#include "enforcer/ctl/commands.h"

#include <fmt/format.h>

#include "enforcer/probe/probe.h"

namespace sovguard::ctl {

std::optional<int> RunExtraCommand(const std::vector<std::string>& args, std::ostream& out,
                                   std::ostream& err) {
  (void)args;
  (void)out;
  (void)err;
  return std::nullopt;
}

void PrintExtraUsage(std::ostream& out) { (void)out; }

int PrintStatus(const nlohmann::json& status, std::ostream& out, std::ostream& err) {
  try {
    out << fmt::format("sovguardd {}  pid {}\n", status.at("version").get<std::string>(),
                       status.at("pid").get<int>());
    const auto& tpm = status.at("tpm");
    out << fmt::format("TPM:      {}{}\n", tpm.at("description").get<std::string>(),
                       tpm.at("software").get<bool>() ? "  [SOFTWARE TPM]" : "");
    out << fmt::format("libvirt:  {}\n\n", status.at("libvirt").at("state").get<std::string>());
    out << enforcer::ToTable(enforcer::ProbeReportFromJson(status.at("probe")));
  } catch (const nlohmann::json::exception& e) {
    err << "sovguardctl status: unexpected status document: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

}  // namespace sovguard::ctl
