#include "attestation/service/attestation_service.h"

#include <absl/synchronization/mutex.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_set>

#include "base/openssl.h"

namespace sovguard::attestation::service {
namespace {

std::span<const uint8_t> AsBytes(const std::string& s) {
  return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Runs after the TLS handshake verified the chain, on every call: admits only allow-listed
// certificates. The PEM gRPC hands over is its encoding of the verified peer certificate, so the
// same text is the same certificate: once admitted, its text is remembered (at most the few the
// allow-list can admit) and later calls skip the PEM parse and digest. Refusals are not cached.
class AllowListProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit AllowListProcessor(std::set<std::string> allowed)
      : allowed_(std::move(allowed)), max_admitted_(4 * allowed_.size() + 16) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata&, grpc::AuthContext* ctx, OutputMetadata*,
                       OutputMetadata*) override {
    auto certs = ctx->FindPropertyValues("x509_pem_cert");
    if (certs.empty())
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no client certificate");
    std::string pem(certs.front().data(), certs.front().size());
    {
      std::lock_guard lock(mu_);
      if (admitted_.contains(pem)) return grpc::Status::OK;
    }
    std::string fp;
    try {
      fp = CertificateFingerprint(pem);
    } catch (const std::exception& e) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, e.what());
    }
    if (!allowed_.contains(fp))
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "client certificate " + fp + " is not on the auditor allow-list");
    std::lock_guard lock(mu_);
    if (admitted_.size() < max_admitted_) admitted_.insert(std::move(pem));
    return grpc::Status::OK;
  }

 private:
  const std::set<std::string> allowed_;
  const size_t max_admitted_;
  std::mutex mu_;
  std::unordered_set<std::string> admitted_;  // PEM texts whose fingerprint is in allowed_
};

grpc::Status Internal(const std::exception& e) {
  return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
}

}  // namespace

AttestationServiceImpl::AttestationServiceImpl(evidence::EvidenceBuilder& builder,
                                               SnapshotProvider snapshot, BatchConfig batch)
    : builder_(builder), batcher_(builder, std::move(snapshot), batch) {}

grpc::ServerUnaryReactor* AttestationServiceImpl::Quote(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  auto* reactor = ctx->DefaultReactor();
  v1::QuoteRequest req;
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (request->Dump(&slices).ok())
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (!req.ParseFromString(bytes)) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "QuoteRequest does not parse"));
    return reactor;
  }
  const auto& n = req.nonce();
  if (n.size() < evidence::kMinNonce || n.size() > evidence::kMaxNonce) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "nonce must be 8..64 bytes, got " + std::to_string(n.size())));
    return reactor;
  }
  try {
    batcher_.QuoteAsync(
        AsBytes(n), [reactor, response](std::shared_ptr<const SerializedBatch> batch, size_t i,
                                        const std::string& error) {
          if (!batch) {
            reactor->Finish(grpc::Status(grpc::StatusCode::INTERNAL, error));
            return;
          }
          try {
            // The shared bytes are lent to gRPC, kept alive by a reference to their batch that the
            // slice drops when gRPC is done with them.
            auto keep = std::make_unique<std::shared_ptr<const SerializedBatch>>(batch);
            grpc::Slice shared(
                const_cast<char*>(batch->shared.data()), batch->shared.size(),
                [](void* p) { delete static_cast<std::shared_ptr<const SerializedBatch>*>(p); },
                keep.get());
            keep.release();  // owned by the slice now
            const grpc::Slice parts[2] = {std::move(shared), grpc::Slice(batch->own.at(i))};
            grpc::ByteBuffer answer(parts, 2);
            response->Swap(&answer);
          } catch (const std::exception& e) {
            reactor->Finish(Internal(e));
            return;
          }
          reactor->Finish(grpc::Status::OK);
        });
  } catch (const std::exception& e) {
    reactor->Finish(Internal(e));
  }
  return reactor;
}

grpc::Status AttestationServiceImpl::GetIdentity(grpc::ServerContext*, const v1::IdentityRequest*,
                                                 v1::Identity* resp) {
  *resp = builder_.Identity();
  return grpc::Status::OK;
}

grpc::Status AttestationServiceImpl::ActivateCredential(grpc::ServerContext*,
                                                        const v1::ActivateCredentialRequest* req,
                                                        v1::ActivateCredentialResponse* resp) {
  if (req->credential_blob().empty() || req->encrypted_secret().empty())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "credential_blob and encrypted_secret are required");
  try {
    auto secret = builder_.ActivateCredential(AsBytes(req->credential_blob()),
                                              AsBytes(req->encrypted_secret()));
    resp->set_secret(std::string(secret.begin(), secret.end()));
    return grpc::Status::OK;
  } catch (const tpm::TpmError& e) {
    // A credential not made for this TPM's EK and AK fails inside the TPM: the caller's fault.
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, e.what());
  } catch (const std::exception& e) {
    return Internal(e);
  }
}

std::string CertificateFingerprint(const std::string& pem) {
  base::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  base::X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) throw AttestationError("not a PEM X.509 certificate");
  unsigned char* der = nullptr;
  int len = i2d_X509(cert.get(), &der);
  if (len <= 0) throw AttestationError("cannot DER-encode certificate");
  auto d = Sha256(std::span(der, static_cast<size_t>(len)));
  OPENSSL_free(der);
  return ToHex(d);
}

std::shared_ptr<grpc::ServerCredentials> MakeMtlsServerCredentials(const MtlsConfig& cfg) {
  if (cfg.server_cert_pem.empty() || cfg.server_key_pem.empty() || cfg.auditor_ca_pem.empty())
    throw AttestationError("mTLS needs a server certificate, its key and the auditor CA");
  std::set<std::string> allowed;
  for (auto fp : cfg.allowed_client_sha256) {
    std::transform(fp.begin(), fp.end(), fp.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    std::erase(fp, ':');
    if (fp.size() != 64 || FromHex(fp, "auditor fingerprint").size() != 32)
      throw AttestationError("auditor fingerprint '" + fp + "' is not a SHA-256 hex digest");
    allowed.insert(fp);
  }
  grpc::SslServerCredentialsOptions opts(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_root_certs = cfg.auditor_ca_pem;
  opts.pem_key_cert_pairs.push_back({cfg.server_key_pem, cfg.server_cert_pem});
  auto creds = grpc::SslServerCredentials(opts);
  creds->SetAuthMetadataProcessor(std::make_shared<AllowListProcessor>(std::move(allowed)));
  return creds;
}

void DisableMutexDeadlockGraph() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

std::string PrepareUnixSocket(const std::filesystem::path& path) {
  // Only a directory we create gets 0750; an existing one (e.g. /run/sovguard managed by
  // systemd's RuntimeDirectory=) keeps the mode its owner chose.
  if (std::filesystem::create_directories(path.parent_path()))
    std::filesystem::permissions(path.parent_path(), std::filesystem::perms(0750));
  std::error_code ec;
  if (std::filesystem::is_socket(path, ec))
    std::filesystem::remove(path);
  else if (std::filesystem::exists(path, ec))
    throw AttestationError(path.string() + " exists and is not a socket");
  return "unix:" + path.string();
}

}  // namespace sovguard::attestation::service
