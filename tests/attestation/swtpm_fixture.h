// Test support for the attestation tests: a private swtpm per test (manufactured with
// swtpm_setup --create-ek-cert and a local CA inside the test's own temp dir), and a small
// command runner for the independent peers (tpm2-tools, openssl).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include <filesystem>
#include <string>
#include <vector>

namespace sovguard::attestation::test_support {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr, interleaved
};
// Runs argv[0] (looked up in PATH) with the arguments; never through a shell.
CommandResult Run(const std::vector<std::string>& argv);

// A temp dir removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

class Swtpm {
 public:
  // Manufactures a TPM 2.0 state (RSA + ECC EKs with certificates, SHA-256 bank) and starts
  // `swtpm socket` on two free loopback ports; returns when it accepts connections.
  // log_commands: swtpm logs every command it receives (--log level=20), for CommandsReceived.
  explicit Swtpm(bool log_commands = false);
  ~Swtpm();  // SIGTERM, reap, remove the state
  Swtpm(const Swtpm&) = delete;
  Swtpm& operator=(const Swtpm&) = delete;

  std::string tcti() const;
  // How many commands with this TPM2_CC the TPM has received so far, counted in swtpm's own log
  // (needs log_commands). E.g. TPM2_CC_Quote (0x158).
  size_t CommandsReceived(uint32_t command_code) const;
  const std::filesystem::path& dir() const { return dir_.path(); }
  // The local CA's root and intermediate certificates (to check the EK certificate chain).
  std::filesystem::path ca_dir() const { return dir_.path() / "ca"; }

 private:
  void Start();
  TempDir dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool log_commands_ = false;
};

}  // namespace sovguard::attestation::test_support
