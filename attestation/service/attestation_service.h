// gRPC attestation service hosted by sovguardd, and the listener credentials it is served with:
// mutual TLS for remote auditors (client certificate must chain to the auditor CA AND its
// SHA-256 DER fingerprint must be on the allow-list) and a Unix socket for local tools.
#pragma once

#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attestation/evidence/evidence.h"
#include "attestation/service/attestation_service.grpc.pb.h"
#include "attestation/service/quote_batcher.h"

namespace sovguard::attestation::service {

inline constexpr const char* kDefaultSocket = "/run/sovguard/api.sock";

using SnapshotProvider = std::function<v1::EnforcementSnapshot()>;

// Quote is a callback method on raw bytes: a waiting request holds no thread, and its answer is
// the batch's shared serialized evidence (one buffer for all) plus its own nonce and proof
// (SerializedBatch); auditors see an ordinary Evidence message. The other methods are
// synchronous.
class AttestationServiceImpl final
    : public v1::Attestation::WithRawCallbackMethod_Quote<v1::Attestation::Service> {
 public:
  // Quote requests are batched (quote_batcher.h): `snapshot` is called once per TPM quote, on the
  // batcher's thread.
  AttestationServiceImpl(evidence::EvidenceBuilder& builder, SnapshotProvider snapshot,
                         BatchConfig batch = {});

  grpc::ServerUnaryReactor* Quote(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                  grpc::ByteBuffer* resp) override;
  grpc::Status GetIdentity(grpc::ServerContext* ctx, const v1::IdentityRequest* req,
                           v1::Identity* resp) override;
  grpc::Status ActivateCredential(grpc::ServerContext* ctx,
                                  const v1::ActivateCredentialRequest* req,
                                  v1::ActivateCredentialResponse* resp) override;

  // Quotes made and requests answered so far (metrics, tests, bench).
  QuoteBatcher::Stats batch_stats() const { return batcher_.stats(); }

 private:
  evidence::EvidenceBuilder& builder_;
  QuoteBatcher batcher_;
};

struct MtlsConfig {
  std::string server_cert_pem;
  std::string server_key_pem;
  std::string auditor_ca_pem;  // client certificates must chain to this
  // Lower-case hex SHA-256 of each allowed auditor certificate's DER. Empty = nobody (fail closed).
  std::vector<std::string> allowed_client_sha256;
};

// SHA-256 of the DER encoding of the first certificate in `pem`, lower-case hex.
std::string CertificateFingerprint(const std::string& pem);
std::shared_ptr<grpc::ServerCredentials> MakeMtlsServerCredentials(const MtlsConfig& cfg);

// gRPC's locks are absl::Mutex, and Debian's absl keeps its lock-order graph (the deadlock
// detector of absl's debug builds) on every acquisition: 2-4 % of a node's CPU per answered quote
// in perf. A process serving the API turns it off once, before serving; locking is unchanged.
void DisableMutexDeadlockGraph();

// "unix:" + path, after creating the parent directory (0750, if it did not exist) and removing a
// stale socket. Refuses to remove anything that is not a socket.
std::string PrepareUnixSocket(const std::filesystem::path& path = kDefaultSocket);

}  // namespace sovguard::attestation::service
