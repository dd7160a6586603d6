// Command line of sovguard-verify, as a library function so tests run it in-process.
//   sovguard-verify --nonce HEX [--ak-pub PEM] [--ek-ca DIR] [--json] EVIDENCE   (EVIDENCE "-" =
//   stdin)
// Exit codes: 0 every requirement met or waived by name, 1 a check failed or a requirement is
// missing (also without --policy-digest: EXPECTED_POLICY_MISSING, unless --waive policy),
// 2 input or usage error.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace sovguard::attestation::verify {

inline constexpr int kExitPass = 0, kExitFail = 1, kExitUsage = 2;

int RunVerifyCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// The items of a comma-separated option value, in order; empty items kept (callers refuse them).
std::vector<std::string> SplitList(const std::string& list);

}  // namespace sovguard::attestation::verify
