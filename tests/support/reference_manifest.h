// A certifier's signed reference manifest for test nodes, as an auditor passes it to
// sovguard-verify (--manifest, --manifest-key): every component (self, BPF objects, QEMU,
// libvirtd, drivers, kernel) and kernel command line the nodes' quotes measured, approved as a
// certifier reviewing those nodes would, from a supplier in DE, signed with an Ed25519 key made
// here by `sovguardctl manifest sign`. Header-only: link sovguard_attestation_core.
#pragma once

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "attestation/common/bytes.h"
#include "attestation/eventlog/cel.h"
#include "attestation/evidence/evidence.pb.h"
#include "attestation/evidence/format.h"
#include "tests/support/daemon_process.h"

namespace sovguard::test {

struct ReferenceManifest {
  std::filesystem::path envelope;  // manifest.dsse.json
  std::filesystem::path key;       // certifier.pub
  // The sovguard-verify options naming them.
  std::string Args() const {
    return "--manifest " + envelope.string() + " --manifest-key " + key.string();
  }
};

// Writes manifest.json, certifier.key/.pub and manifest.dsse.json into `dir`. Throws
// std::runtime_error with the failing command's output.
inline ReferenceManifest WriteReferenceManifest(
    const std::vector<const attestation::v1::Evidence*>& quotes, const std::filesystem::path& dir,
    const std::string& id) {
  namespace cel = attestation::cel;
  nlohmann::json m = {{"sovguard_manifest", 1},
                      {"id", id},
                      {"issued_at", "2026-01-01T00:00:00Z"},
                      {"issuer", "Test Certifier"},
                      {"components", nlohmann::json::array()}};
  std::set<std::string> seen;  // name + digest: one component per file measured
  for (const auto* ev : quotes) {
    const auto& bytes = ev->logs().cel();
    for (const auto& r : cel::DecodeLog(
             std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()))) {
      const auto e = cel::DecodeSovguardContent(r.content);
      using K = cel::EventKind;
      if (e.kind == K::kKernelCmdline && seen.insert("cmdline:" + e.detail).second)
        m["boot"]["kernel_cmdlines"].push_back(e.detail);
      if (e.kind != K::kSelfBinary && e.kind != K::kBpfObject && e.kind != K::kQemuBinary &&
          e.kind != K::kLibvirtdBinary && e.kind != K::kLibvirtDriver && e.kind != K::kKernelImage)
        continue;
      const std::string digest = attestation::ToHex(e.object_digest);
      if (!seen.insert(e.name + "@" + digest).second) continue;
      m["components"].push_back({{"name", e.name},
                                 {"version", "reviewed"},
                                 {"supplier", "Test Supplier SE"},
                                 {"supplier_jurisdiction", "DE"},
                                 {"license", "GPL-2.0-only"},
                                 {"files", {{{"path", e.name}, {"sha256", digest}}}}});
    }
  }
  std::ofstream(dir / "manifest.json") << m.dump(2);
  const ReferenceManifest out{dir / "manifest.dsse.json", dir / "certifier.pub"};
  std::string log;
  if (RunShell("openssl genpkey -algorithm ed25519 -out " + (dir / "certifier.key").string() +
                   " && openssl pkey -in " + (dir / "certifier.key").string() + " -pubout -out " +
                   out.key.string() + " && " + DaemonProcess::Ctl() + " manifest sign --key " +
                   (dir / "certifier.key").string() + " -o " + out.envelope.string() + " " +
                   (dir / "manifest.json").string() + " 2>&1",
               &log) != 0)
    throw std::runtime_error("signing the reference manifest: " + log);
  return out;
}

// The certifier reviews running nodes: one quote of each through its local API, and a manifest
// approving every component they measured (WriteReferenceManifest). Throws std::runtime_error
// with sovguardctl's output when a quote fails.
inline ReferenceManifest CertifyNodes(const std::vector<std::unique_ptr<DaemonProcess>>& nodes,
                                      const std::filesystem::path& dir, const std::string& id) {
  std::vector<attestation::v1::Evidence> quotes(nodes.size());
  std::vector<const attestation::v1::Evidence*> refs;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const std::string socket =
        nodes[i]->Status().at("api_socket").get<std::string>().substr(5);  // "unix:"
    const std::filesystem::path file = dir / ("certify-" + std::to_string(i) + ".json");
    std::string out;
    if (RunShell(DaemonProcess::Ctl() + " attest quote --nonce 0011223344556677 --socket " +
                     socket + " -o " + file.string() + " 2>&1",
                 &out) != 0)
      throw std::runtime_error("sovguardctl attest quote on node " + std::to_string(i) + ": " +
                               out);
    attestation::evidence::FromJson(ReadTextFile(file), quotes[i]);
    refs.push_back(&quotes[i]);
  }
  return WriteReferenceManifest(refs, dir, id);
}

// The policy sovguardd loads when given no bundle (--data-dir policy/data).
inline std::filesystem::path ShippedDefaultPolicy() {
  return std::filesystem::path(SOVGUARD_SOURCE_DIR) / "policy/data/default-eu-eea.textproto";
}

// The sovguard-verify option naming the policy an auditor approved: the SHA-256 of the file
// sovguardd loads (a signed bundle, or the shipped default), which the node's snapshot and log
// must carry.
inline std::string PolicyDigestArg(const std::filesystem::path& policy_file) {
  return "--policy-digest " + attestation::ToHex(attestation::Sha256(ReadTextFile(policy_file)));
}

// sovguard-verify --json on `evidence` as an auditor of a test node runs it: the enrolled AK
// (`ak_pem`), `manifest`, the approved policy (`policy_file`, see PolicyDigestArg), the software
// TPM and the missing UEFI log accepted by name, then `extra` options. Its exit code; the JSON
// report in `report` (discarded when it does not parse).
inline int VerifyAsAuditor(const std::filesystem::path& evidence,
                           const std::filesystem::path& ak_pem, const ReferenceManifest& manifest,
                           const std::filesystem::path& policy_file, const std::string& nonce,
                           const std::string& extra, nlohmann::json& report) {
  std::string out;
  const int rc = RunShell(
      std::string(SOVGUARD_BINARY_DIR) + "/attestation/verify/sovguard-verify --json --nonce " +
          nonce + " --ak-pub " + ak_pem.string() + " " + manifest.Args() + " " +
          PolicyDigestArg(policy_file) + " --allow-software-tpm --waive boot-log " + extra + " " +
          evidence.string() + " 2>/dev/null",
      &out);
  report = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  return rc;
}

}  // namespace sovguard::test
