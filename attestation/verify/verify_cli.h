// Command line of sovguard-verify, as a library function so tests run it in-process.
//   sovguard-verify --nonce HEX [--ak-pub PEM] [--ek-ca DIR] [--json] EVIDENCE   (EVIDENCE "-" =
//   stdin)
// Exit codes: 0 every check passed, 1 a check failed, 2 input or usage error.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace sovguard::attestation::verify {

inline constexpr int kExitPass = 0, kExitFail = 1, kExitUsage = 2;

int RunVerifyCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace sovguard::attestation::verify
