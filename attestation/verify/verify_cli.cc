#include "attestation/verify/verify_cli.h"

#include <iostream>
#include <iterator>
#include <optional>

#include "attestation/verify/verifier.h"

namespace sovguard::attestation::verify {
namespace {

constexpr const char* kUsage =
    "usage: sovguard-verify --nonce HEX [--ak-pub AK.pem] [--ek-ca DIR] [--state FILE]\n"
    "                       [--policy-digest HEX] [--json] EVIDENCE\n"
    "       sovguard-verify --nonce HEX --ak-pub AK.pem [--json] --tpm2-quote MSG SIG PCRS\n"
    "  EVIDENCE  evidence from `sovguardctl attest quote` (JSON or binary protobuf); - = stdin\n"
    "  --nonce   the nonce sent to the node (hex, 8..64 bytes)\n"
    "  --ak-pub  the node's enrolled AK public key (PEM); the quote must be signed by it\n"
    "  --ek-ca   folder of trusted EK CA certificates (PEM/DER); EK certificates must chain\n"
    "  --state   verifier state file: TPM counters must advance past the last passing verdict\n"
    "  --policy-digest  SHA-256 of the policy bundle expected to be active\n"
    "  --tpm2-quote  files of `tpm2_quote -m MSG -s SIG -o PCRS -q HEX` (tpm2-tools)\n"
    "  --json    full report as JSON on standard output\n"
    "exit codes: 0 all checks pass, 1 a check failed, 2 input or usage error\n";

struct Args {
  std::string evidence;
  std::optional<Bytes> nonce;
  std::optional<std::string> ak_pub;
  std::optional<std::filesystem::path> ek_ca;
  std::optional<std::filesystem::path> state;
  std::optional<Bytes> policy;
  bool json = false;
  std::optional<Tpm2QuoteFiles> tpm2_quote;
};

std::string ReadText(const std::string& path) {
  auto b = ReadFileBytes(path);
  return std::string(b.begin(), b.end());
}

Args Parse(const std::vector<std::string>& a) {
  Args r;
  bool have_evidence = false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto value = [&]() -> const std::string& {
      if (i + 1 >= a.size()) throw InputError(a[i] + " needs a value");
      return a[++i];
    };
    if (a[i] == "--json") {
      r.json = true;
    } else if (a[i] == "--nonce") {
      r.nonce = FromHex(value(), "--nonce");
    } else if (a[i] == "--ak-pub") {
      const auto& p = value();
      auto b = ReadFileBytes(p);
      r.ak_pub = std::string(b.begin(), b.end());
    } else if (a[i] == "--tpm2-quote") {
      Tpm2QuoteFiles f;
      f.attest = ReadText(value());
      f.signature = ReadText(value());
      f.pcrs = ReadText(value());
      r.tpm2_quote = std::move(f);
    } else if (a[i] == "--policy-digest") {
      r.policy = FromHex(value(), "--policy-digest");
      if (r.policy->size() != 32) throw InputError("--policy-digest must be 32 bytes (SHA-256)");
    } else if (a[i] == "--state") {
      r.state = value();
    } else if (a[i] == "--ek-ca") {
      r.ek_ca = value();
    } else if (a[i] == "-h" || a[i] == "--help") {
      throw InputError("");
    } else if (a[i].size() > 1 && a[i][0] == '-') {
      throw InputError("unknown option " + a[i]);
    } else {
      if (have_evidence) throw InputError("more than one evidence file given");
      r.evidence = a[i];
      have_evidence = true;
    }
  }
  if (r.tpm2_quote && have_evidence)
    throw InputError("give either an evidence file or --tpm2-quote, not both");
  if (!have_evidence && !r.tpm2_quote) throw InputError("no evidence file given");
  if (!r.nonce)
    throw InputError("--nonce is required (freshness cannot be established without it)");
  return r;
}

}  // namespace

int RunVerifyCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  try {
    const Args a = Parse(args);
    if (a.tpm2_quote) {
      const Report rep = VerifyTpm2Quote(*a.tpm2_quote, Options{a.nonce, a.ak_pub, {}});
      out << (a.json ? RenderJson(rep) : RenderText(rep));
      return rep.passed() ? kExitPass : kExitFail;
    }
    Bytes data;
    if (a.evidence == "-")
      data.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    else
      data = ReadFileBytes(a.evidence);
    v1::Evidence ev;
    try {
      ev = ParseEvidence(data);
    } catch (const InputError& e) {
      throw InputError(a.evidence + ": " + e.what());
    }
    const Report rep = Verify(ev, Options{a.nonce, a.ak_pub, a.ek_ca, a.state, a.policy});
    out << (a.json ? RenderJson(rep) : RenderText(rep));
    return rep.passed() ? kExitPass : kExitFail;
  } catch (const AttestationError& e) {
    // InputError, unreadable files, bad hex: all input or usage errors.
    if (*e.what()) err << "sovguard-verify: " << e.what() << "\n";
    err << kUsage;
    return kExitUsage;
  } catch (const std::exception& e) {
    err << "sovguard-verify: " << e.what() << "\n";
    return kExitUsage;
  }
}

}  // namespace sovguard::attestation::verify
