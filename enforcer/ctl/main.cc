// sovguardctl: the operator's and auditor's command line. Exit codes: 0 ok, 1 the thing checked is
// not ok (invalid policy, failed check), 2 usage or input error.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "enforcer/ctl/commands.h"
#include "enforcer/probe/probe.h"
#include "enforcer/version.h"

namespace en = sovguard::enforcer;
namespace ctl = sovguard::ctl;

namespace {

constexpr const char* kUsage = R"(usage: sovguardctl COMMAND [args]
  probe [--json]                      load the real programs; which mechanism guards each path
  status [--json] [--runtime-dir D]   what the running daemon enforces
  version                             print the version
)";

int Probe(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  bool json = false;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--json") {
      json = true;
    } else {
      err << "sovguardctl probe: unknown argument " << args[i] << "\n";
      return 2;
    }
  }
  if (::geteuid() != 0) {
    err << "sovguardctl probe: loading BPF programs needs root (CAP_BPF, CAP_SYS_ADMIN)\n";
    return 2;
  }
  const auto report = en::RunProbe();
  out << (json ? en::ToJson(report).dump(2) + "\n" : en::ToTable(report));
  return 0;
}

int Status(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  bool json = false;
  std::filesystem::path runtime_dir = "/run/sovguard";
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--json") {
      json = true;
    } else if (args[i] == "--runtime-dir" && i + 1 < args.size()) {
      runtime_dir = args[++i];
    } else {
      err << "sovguardctl status: unknown argument " << args[i] << "\n";
      return 2;
    }
  }
  std::ifstream in(runtime_dir / "status.json");
  if (!in) {
    err << "sovguardctl status: " << (runtime_dir / "status.json").string()
        << " not readable: is sovguardd running (and are you root or in group sovguard)?\n";
    return 2;
  }
  nlohmann::json status;
  try {
    status = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    err << "sovguardctl status: " << (runtime_dir / "status.json").string() << ": " << e.what()
        << "\n";
    return 2;
  }
  if (json) {
    out << status.dump(2) << "\n";
    return 0;
  }
  return ctl::PrintStatus(status, out, err);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    ctl::PrintExtraUsage(std::cout);
    return args.empty() ? 2 : 0;
  }
  const std::map<std::string,
                 std::function<int(const std::vector<std::string>&, std::ostream&, std::ostream&)>>
      builtin = {
          {"probe", Probe},
          {"status", Status},
          {"version",
           [](const auto&, std::ostream& out, std::ostream&) {
             out << "sovguardctl " << SOVGUARD_VERSION << "\n";
             return 0;
           }},
      };
  try {
    if (auto it = builtin.find(args[0]); it != builtin.end())
      return it->second(args, std::cout, std::cerr);
    if (auto rc = ctl::RunExtraCommand(args, std::cout, std::cerr)) return *rc;
  } catch (const std::exception& e) {
    std::cerr << "sovguardctl " << args[0] << ": " << e.what() << "\n";
    return 2;
  }
  std::cerr << "sovguardctl: unknown command '" << args[0] << "'\n" << kUsage;
  return 2;
}
