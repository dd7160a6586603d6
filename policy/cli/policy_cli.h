// The `policy` and `jurisdiction` command groups of sovguardctl. args[0] is "policy" or
// "jurisdiction", then the subcommand:
//   policy check FILE...
//   policy bundle --key K --version N [--issuer S] FILES... -o B
//   policy verify B --pub P
//   policy import-odrl FILE [--dataset ID] [--strict]
//   jurisdiction lookup ADDR [--table F] [--policy P]
//   jurisdiction compile --from DIR [--mmdb F] -o F
// Returns 0 ok, 1 invalid input (diagnostics on `err`), 2 usage error.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace sovguard::policy {

int RunPolicyCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// The shipped data (installed to ${datadir}/sovguard/): the jurisdiction table `jurisdiction
// lookup` uses when --table is not given ($SOVGUARD_JURISDICTION_TABLE overrides), and the
// default EU/EEA policy for a host without a signed bundle.
std::string DefaultTablePath();
std::string DefaultPolicyPath();

}  // namespace sovguard::policy
