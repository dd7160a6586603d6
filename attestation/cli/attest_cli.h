// `sovguardctl attest ...`: the auditor/operator side of the attestation API.
//   attest quote --nonce HEX [--socket PATH | --node HOST:PORT --cert C --key K --ca CA] -o FILE
//   attest identity [--socket ... | --node ...] -o FILE
//   attest export-checkquote -i EVIDENCE.json -d DIR      (files + command for tpm2_checkquote)
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace sovguard::attestation::cli {

// args[0] == "attest". Returns the process exit code: 0 ok, 1 failure, 2 usage error.
int RunAttestCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace sovguard::attestation::cli
