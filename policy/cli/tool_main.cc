// Developer tool: the policy CLI without the rest of sovguardctl (used to regenerate
// policy/data/world.sgjt). Not installed; sovguardctl is the product entry point.
#include <iostream>

#include "policy/cli/policy_cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return sovguard::policy::RunPolicyCli(args, std::cout, std::cerr);
}
