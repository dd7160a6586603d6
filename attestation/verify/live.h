// Live verification of running nodes over the attestation API (gRPC, mutual TLS):
//   1. GetIdentity: the node's AK and EK public area;
//   2. credential activation: the verifier makes a TPM2_MakeCredential challenge for that AK
//      with the EK (software, tpm/credential.h) and the node answers with ActivateCredential;
//   3. Quote with a fresh 32-byte nonce from OpenSSL's RNG;
//   4. Verify() with that nonce and the activation outcome (ak.ek_binding).
// Fleet mode runs this for many nodes concurrently and prints one line per node and a summary.
#pragma once

#include <chrono>
#include <iosfwd>
#include <string>
#include <vector>

#include "attestation/verify/verifier.h"

namespace sovguard::attestation::verify {

struct TlsClient {
  std::string ca_pem;    // CA the node's server certificate chains to
  std::string cert_pem;  // the auditor's client certificate (on the node's allow-list)
  std::string key_pem;
  std::chrono::seconds timeout{30};
};

struct LiveResult {
  std::string target;  // HOST:PORT
  bool fetched = false;
  std::string error;  // why evidence could not be obtained (connection, TLS, RPC)
  Report report;
};

// `base` supplies everything but the nonce and the activation outcome, which are made here.
LiveResult VerifyNode(const std::string& target, const TlsClient& tls, const Options& base);

// Fleet file: one node per line, "HOST:PORT [PROVIDER]", blank lines and '#' comments ignored.
// PROVIDER is the node's OpenStack Placement resource provider name (the hypervisor host name
// Nova registered); default: HOST. Throws InputError naming the line for anything else.
struct FleetNode {
  std::string target;    // HOST:PORT
  std::string provider;  // Placement resource provider name
};
std::vector<FleetNode> ParseFleetNodes(const std::string& text);
// The targets of ParseFleetNodes, in order.
std::vector<std::string> ParseFleetFile(const std::string& text);

// Verifies every target with at most `jobs` at a time; results in input order.
std::vector<LiveResult> VerifyFleet(const std::vector<std::string>& targets, const TlsClient& tls,
                                    const Options& base, int jobs);
// "PASS|FAIL|ERROR target node: ..." per node, then "fleet: N nodes, P passed, F failed".
std::string RenderFleet(const std::vector<LiveResult>& results);

}  // namespace sovguard::attestation::verify
