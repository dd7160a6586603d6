#include "attestation/cli/attest_cli.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "attestation/cli/cli_command.h"
#include "attestation/evidence/evidence.h"
#include "attestation/service/attestation_service.grpc.pb.h"
#include "attestation/service/attestation_service.h"
#include "base/file.h"

namespace sovguard::attestation::cli {
namespace {

constexpr const char* kUsage =
    "usage: sovguardctl attest quote --nonce HEX [--socket PATH | --node HOST:PORT --cert CERT "
    "--key KEY --ca CA] [--timeout SEC] -o FILE\n"
    "       sovguardctl attest identity [--socket PATH | --node ...] -o FILE\n"
    "       sovguardctl attest export-checkquote -i EVIDENCE.json -d DIR\n"
    "       sovguardctl attest activate --challenge CHALLENGE.json [--socket ... | --node ...] -o "
    "FILE\n"
    "         answers a credential activation challenge (from `sovguard-verify make-challenge`)\n"
    "  -o - writes to standard output. --nonce is 8..64 bytes in hex, fresh per request.\n";

// --key VALUE options; every option takes a value.
std::map<std::string, std::string> ParseOptions(const std::vector<std::string>& args, size_t from) {
  static const std::set<std::string> kKnown = {"--nonce", "--socket", "--node",     "--cert",
                                               "--key",   "--ca",     "-o",         "--timeout",
                                               "-i",      "-d",       "--challenge"};
  std::map<std::string, std::string> opts;
  for (size_t i = from; i < args.size(); ++i) {
    if (!kKnown.contains(args[i])) throw UsageError("unknown option '" + args[i] + "'");
    if (i + 1 >= args.size()) throw UsageError("option " + args[i] + " needs a value");
    if (!opts.emplace(args[i], args[i + 1]).second)
      throw UsageError("option " + args[i] + " given twice");
    ++i;
  }
  return opts;
}

std::string Need(const std::map<std::string, std::string>& o, const std::string& k) {
  auto it = o.find(k);
  if (it == o.end()) throw UsageError("missing " + k);
  return it->second;
}

std::shared_ptr<grpc::Channel> Connect(const std::map<std::string, std::string>& o) {
  if (o.contains("--node")) {
    if (o.contains("--socket")) throw UsageError("--socket and --node are exclusive");
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = base::ReadFileText(Need(o, "--ca"));
    ssl.pem_cert_chain = base::ReadFileText(Need(o, "--cert"));
    ssl.pem_private_key = base::ReadFileText(Need(o, "--key"));
    return grpc::CreateChannel(Need(o, "--node"), grpc::SslCredentials(ssl));
  }
  for (const char* k : {"--cert", "--key", "--ca"})
    if (o.contains(k)) throw UsageError(std::string(k) + " only applies with --node");
  auto it = o.find("--socket");
  std::string path = it == o.end() ? service::kDefaultSocket : it->second;
  return grpc::CreateChannel("unix:" + path, grpc::InsecureChannelCredentials());
}

void SetDeadline(grpc::ClientContext& ctx, const std::map<std::string, std::string>& o) {
  int secs = 30;
  if (auto it = o.find("--timeout"); it != o.end()) {
    try {
      secs = std::stoi(it->second);
    } catch (...) {
      throw UsageError("--timeout must be a number of seconds");
    }
  }
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(secs));
}

void Emit(const std::string& path, const std::string& text, std::ostream& out) {
  if (path == "-")
    out << text << '\n';
  else
    WriteFileAtomic(path, text + "\n");
}

void CheckStatus(const grpc::Status& st, const std::string& what) {
  if (!st.ok())
    throw AttestationError(what + " failed: " + std::to_string(st.error_code()) + " " +
                           st.error_message());
}

int Quote(const std::map<std::string, std::string>& o, std::ostream& out, std::ostream& err) {
  auto nonce = FromHex(Need(o, "--nonce"), "--nonce");
  if (nonce.size() < evidence::kMinNonce || nonce.size() > evidence::kMaxNonce)
    throw UsageError("--nonce must be 8..64 bytes (16..128 hex digits)");
  const auto path = Need(o, "-o");
  auto stub = v1::Attestation::NewStub(Connect(o));
  grpc::ClientContext ctx;
  SetDeadline(ctx, o);
  v1::QuoteRequest req;
  req.set_nonce(std::string(nonce.begin(), nonce.end()));
  v1::Evidence ev;
  CheckStatus(stub->Quote(&ctx, req, &ev), "Quote");
  // The node must answer our nonce; anything else is not evidence for this request.
  if (ev.nonce() != req.nonce()) throw AttestationError("node answered with a different nonce");
  Emit(path, evidence::ToJson(ev), out);
  if (path != "-") err << "evidence written to " << path << "\n";
  return 0;
}

int Identity(const std::map<std::string, std::string>& o, std::ostream& out) {
  const auto path = Need(o, "-o");
  auto stub = v1::Attestation::NewStub(Connect(o));
  grpc::ClientContext ctx;
  SetDeadline(ctx, o);
  v1::Identity id;
  CheckStatus(stub->GetIdentity(&ctx, v1::IdentityRequest{}, &id), "GetIdentity");
  Emit(path, evidence::ToJson(id), out);
  return 0;
}

// The node's half of credential activation: the TPM decrypts the verifier's challenge only if
// the AK it names is loaded there with the EK the challenge was made for.
int Activate(const std::map<std::string, std::string>& o, std::ostream& out) {
  const auto path = Need(o, "-o");
  const auto text = base::ReadFileText(Need(o, "--challenge"));
  nlohmann::json c;
  try {
    c = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw AttestationError(std::string("--challenge: not JSON: ") + e.what());
  }
  if (!c.is_object() || !c.contains("credential_blob") || !c.contains("encrypted_secret") ||
      !c["credential_blob"].is_string() || !c["encrypted_secret"].is_string())
    throw AttestationError("--challenge: expected {credential_blob, encrypted_secret} (hex)");
  const auto blob = FromHex(c["credential_blob"].get<std::string>(), "credential_blob");
  const auto secret = FromHex(c["encrypted_secret"].get<std::string>(), "encrypted_secret");
  v1::ActivateCredentialRequest req;
  req.set_credential_blob(std::string(blob.begin(), blob.end()));
  req.set_encrypted_secret(std::string(secret.begin(), secret.end()));
  auto stub = v1::Attestation::NewStub(Connect(o));
  grpc::ClientContext ctx;
  SetDeadline(ctx, o);
  v1::ActivateCredentialResponse resp;
  CheckStatus(stub->ActivateCredential(&ctx, req, &resp), "ActivateCredential");
  const auto& got = resp.secret();
  Emit(path,
       nlohmann::json{
           {"secret", ToHex(std::span(reinterpret_cast<const uint8_t*>(got.data()), got.size()))}}
           .dump(),
       out);
  return 0;
}

int ExportCheckquote(const std::map<std::string, std::string>& o, std::ostream& out) {
  v1::Evidence ev;
  evidence::FromJson(base::ReadFileText(Need(o, "-i")), ev);
  auto args = evidence::ExportForCheckquote(ev, Need(o, "-d"));
  out << "tpm2_checkquote";
  for (const auto& a : args) out << ' ' << a;
  out << '\n';
  return 0;
}

}  // namespace

int RunAttestCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return RunCommand("sovguardctl attest", kUsage, err, [&]() -> int {
    if (args.size() < 2 || args[0] != "attest") throw UsageError("expected 'attest <command>'");
    const auto& cmd = args[1];
    if (cmd == "-h" || cmd == "--help" || cmd == "help") {
      out << kUsage;
      return 0;
    }
    auto opts = ParseOptions(args, 2);
    if (cmd == "quote") return Quote(opts, out, err);
    if (cmd == "identity") return Identity(opts, out);
    if (cmd == "export-checkquote") return ExportCheckquote(opts, out);
    if (cmd == "activate") return Activate(opts, out);
    throw UsageError("unknown attest command '" + cmd + "'");
  });
}

}  // namespace sovguard::attestation::cli
