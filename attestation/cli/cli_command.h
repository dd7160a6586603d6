// What the attestation subcommands of sovguardctl share: a usage error, and the mapping of
// errors to exit codes (2 with the usage text for a bad command line, 1 for a failure).
#pragma once

#include <ostream>
#include <stdexcept>
#include <string_view>

namespace sovguard::attestation::cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs `body` (returns the exit code). A UsageError prints "<prog>: <what>" and `usage` to `err`,
// exit 2; any other exception prints "<prog>: <what>", exit 1.
template <typename Body>
int RunCommand(std::string_view prog, std::string_view usage, std::ostream& err, Body&& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    err << prog << ": " << e.what() << "\n" << usage;
    return 2;
  } catch (const std::exception& e) {
    err << prog << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace sovguard::attestation::cli
