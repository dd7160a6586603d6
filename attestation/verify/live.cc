#include "attestation/verify/live.h"

#include <grpcpp/grpcpp.h>
#include <openssl/rand.h>

#include <atomic>
#include <thread>

#include "attestation/service/attestation_service.grpc.pb.h"

namespace sovguard::attestation::verify {
namespace {

Bytes B(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

void Deadline(grpc::ClientContext& ctx, const TlsClient& tls) {
  ctx.set_deadline(std::chrono::system_clock::now() + tls.timeout);
}

std::string RpcError(const char* rpc, const grpc::Status& st) {
  return std::string(rpc) + ": " + st.error_message() + " (gRPC code " +
         std::to_string(static_cast<int>(st.error_code())) + ")";
}

}  // namespace

LiveResult VerifyNode(const std::string& target, const TlsClient& tls, const Options& base) {
  LiveResult res;
  res.target = target;
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls.ca_pem;
  ssl.pem_cert_chain = tls.cert_pem;
  ssl.pem_private_key = tls.key_pem;
  auto stub = v1::Attestation::NewStub(grpc::CreateChannel(target, grpc::SslCredentials(ssl)));

  v1::Identity id;
  {
    grpc::ClientContext ctx;
    Deadline(ctx, tls);
    if (auto st = stub->GetIdentity(&ctx, v1::IdentityRequest{}, &id); !st.ok()) {
      res.error = RpcError("GetIdentity", st);
      return res;
    }
  }
  Options opts = base;
  // Credential activation for the AK the node names; the evidence must then be signed by it.
  AkEkBinding binding;
  binding.ek_public = B(id.ek_public_rsa());
  binding.ak_name = B(id.ak().name());
  try {
    auto c = MakeAkChallenge(binding.ek_public, binding.ak_name);
    binding.expected_secret = c.secret;
    v1::ActivateCredentialRequest req;
    req.set_credential_blob(std::string(c.credential_blob.begin(), c.credential_blob.end()));
    req.set_encrypted_secret(std::string(c.encrypted_secret.begin(), c.encrypted_secret.end()));
    v1::ActivateCredentialResponse resp;
    grpc::ClientContext ctx;
    Deadline(ctx, tls);
    if (auto st = stub->ActivateCredential(&ctx, req, &resp); st.ok())
      binding.returned_secret = B(resp.secret());
    else
      binding.error = RpcError("ActivateCredential", st);
  } catch (const AttestationError& e) {
    binding.error = std::string("no challenge could be made for the node's EK: ") + e.what();
  }
  opts.ak_ek_binding = binding;

  Bytes nonce(32);
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1)
    throw AttestationError("OpenSSL: RAND_bytes failed");
  opts.nonce = nonce;
  v1::Evidence ev;
  {
    v1::QuoteRequest req;
    req.set_nonce(std::string(nonce.begin(), nonce.end()));
    grpc::ClientContext ctx;
    Deadline(ctx, tls);
    if (auto st = stub->Quote(&ctx, req, &ev); !st.ok()) {
      res.error = RpcError("Quote", st);
      return res;
    }
  }
  res.fetched = true;
  res.report = Verify(ev, opts);
  if (res.report.node.empty()) res.report.node = target;
  return res;
}

std::vector<FleetNode> ParseFleetNodes(const std::string& text) {
  std::vector<FleetNode> out;
  size_t pos = 0, lineno = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++lineno;
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    const auto b = line.find_first_not_of(" \t\r"), e = line.find_last_not_of(" \t\r");
    if (b == std::string::npos) continue;
    line = line.substr(b, e - b + 1);
    FleetNode node;
    node.target = line;
    if (const auto gap = line.find_first_of(" \t"); gap != std::string::npos) {
      node.target = line.substr(0, gap);
      node.provider = line.substr(line.find_first_not_of(" \t", gap));
    }
    const std::string& t = node.target;
    const auto colon = t.rfind(':');
    if (node.provider.find_first_of(" \t") != std::string::npos || colon == std::string::npos ||
        colon == 0 || colon + 1 == t.size() ||
        t.find_first_not_of("0123456789", colon + 1) != std::string::npos)
      throw InputError("fleet file line " + std::to_string(lineno) +
                       ": expected HOST:PORT [PROVIDER], got \"" + line + "\"");
    if (node.provider.empty()) {
      node.provider = t.substr(0, colon);
      if (node.provider.size() > 2 && node.provider.front() == '[' && node.provider.back() == ']')
        node.provider = node.provider.substr(1, node.provider.size() - 2);
    }
    out.push_back(std::move(node));
  }
  if (out.empty()) throw InputError("fleet file lists no node");
  return out;
}

std::vector<std::string> ParseFleetFile(const std::string& text) {
  std::vector<std::string> out;
  for (auto& n : ParseFleetNodes(text)) out.push_back(std::move(n.target));
  return out;
}

std::vector<LiveResult> VerifyFleet(const std::vector<std::string>& targets, const TlsClient& tls,
                                    const Options& base, int jobs) {
  std::vector<LiveResult> results(targets.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < targets.size();) {
      try {
        results[i] = VerifyNode(targets[i], tls, base);
      } catch (const std::exception& e) {
        results[i].target = targets[i];
        results[i].error = e.what();
      }
    }
  };
  const size_t n = std::min<size_t>(targets.size(), static_cast<size_t>(std::max(1, jobs)));
  std::vector<std::thread> pool;
  for (size_t t = 0; t < n; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  return results;
}

std::string RenderFleet(const std::vector<LiveResult>& results) {
  std::string s;
  size_t passed = 0, failed = 0, errors = 0;
  for (const auto& r : results) {
    if (!r.fetched) {
      ++errors;
      s += "ERROR " + r.target + ": " + r.error + "\n";
      continue;
    }
    if (r.report.passed()) {
      ++passed;
      size_t na = 0;
      for (const auto& c : r.report.checks) na += c.status == Status::kNotApplicable;
      s += "PASS  " + r.target + " " + r.report.node + ": " +
           std::to_string(r.report.checks.size() - na) + " checks passed, " + std::to_string(na) +
           " not applicable\n";
      continue;
    }
    ++failed;
    std::string reasons, first;
    for (const auto& c : r.report.checks) {
      if (c.status != Status::kFail || c.reason == kReasonDependencyFailed) continue;
      reasons += (reasons.empty() ? "" : ",") + c.name + "=" + c.reason;
      if (first.empty()) first = c.detail;
    }
    s += "FAIL  " + r.target + " " + r.report.node + ": " + reasons +
         (first.empty() ? "" : " (" + first + ")") + "\n";
  }
  s += "fleet: " + std::to_string(results.size()) + " nodes, " + std::to_string(passed) +
       " passed, " + std::to_string(failed) + " failed, " + std::to_string(errors) +
       " unreachable\n";
  return s;
}

}  // namespace sovguard::attestation::verify
