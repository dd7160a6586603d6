// sovguard-verify: verifies sovguard attestation evidence. No TPM, no root.
#include <iostream>

#include "attestation/verify/verify_cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return sovguard::attestation::verify::RunVerifyCli(args, std::cout, std::cerr);
}
