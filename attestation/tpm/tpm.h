// ESAPI (tpm2-tss) access for the node: one Tpm object owns one ESYS context over one TCTI.
//
// Every transient object and session is held by an RAII guard and flushed on every path,
// because a TPM without a resource manager (swtpm, /dev/tpm0) has only ~3 object slots and
// ~3 session slots: one leak per quote would stop attestation after three quotes.
// The ESYS context is not thread-safe: every public method takes the object's mutex, so one
// Tpm may be shared by the gRPC threads.
#pragma once

#include <tss2/tss2_esys.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "attestation/common/bytes.h"
#include "attestation/tpm/public_key.h"

namespace sovguard::attestation::tpm {

// TSS/TPM failure; the message names the ESAPI call and the decoded return code.
class TpmError : public AttestationError {
 public:
  TpmError(const std::string& what, TSS2_RC rc);
  TSS2_RC rc() const { return rc_; }

 private:
  TSS2_RC rc_;
};

// Persistent handles. The TCG provisioning guidance reserves 0x81010001 (RSA 2048 EK) and
// 0x81010002 (ECC P-256 EK) and the EK credential profile 0x81010016..0x8101001E for other EKs,
// so the AK defaults to 0x81018000, outside those, in the endorsement-key block.
inline constexpr TPM2_HANDLE kDefaultAkHandle = 0x81018000;
inline constexpr TPM2_HANDLE kEkHandleRsa2048 = 0x81010001;
inline constexpr TPM2_HANDLE kEkHandleEccP256 = 0x81010002;
// TCG EK Credential Profile 2.x NV indices for EK certificates.
inline constexpr TPM2_HANDLE kEkCertNvRsa2048 = 0x01c00002;
inline constexpr TPM2_HANDLE kEkCertNvEccP256 = 0x01c0000a;
inline constexpr TPM2_HANDLE kEkCertNvEccP384 = 0x01c00016;  // high range; swtpm_setup uses it
inline constexpr TPM2_HANDLE kEkCertNvRsa3072 = 0x01c0001c;

enum class KeyAlg { kRsa2048, kEccP256 };
const char* KeyAlgName(KeyAlg a);

struct EkCertificate {
  TPM2_HANDLE nv_index = 0;
  std::string key_type;  // "rsa2048", "ecc-p256", "ecc-p384", "rsa3072"
  Bytes der;             // as stored; some TPMs pad the NV area, see TrimDer
};

struct AkInfo {
  TPM2_HANDLE handle = 0;
  KeyAlg alg = KeyAlg::kEccP256;
  Bytes public_area;  // marshalled TPM2B_PUBLIC (size-prefixed), what tpm2-tools reads as "tss"
  Bytes name;         // TPM2B_NAME contents: nameAlg (2 octets) || digest
  std::string public_pem;
  bool created = false;  // true if this call created and persisted it
};

struct QuoteResult {
  Bytes attest;                // TPMS_ATTEST marshalled (TPM2B_ATTEST contents): tpm2_checkquote -m
  Bytes signature;             // TPMT_SIGNATURE marshalled: tpm2_checkquote -s
  std::vector<uint32_t> pcrs;  // ascending
  std::vector<Sha256Digest> values;  // SHA-256 bank values, same order; hash matches the quote
  uint64_t clock = 0, reset_count = 0, restart_count = 0, firmware_version = 0;
  bool safe = false;
};

struct HandleCounts {
  uint32_t transient = 0, loaded_sessions = 0, saved_sessions = 0;
};

class Tpm {
 public:
  // tcti: a tctildr string, e.g. "device:/dev/tpmrm0" or "swtpm:host=127.0.0.1,port=2321".
  explicit Tpm(const std::string& tcti);
  ~Tpm();
  Tpm(const Tpm&) = delete;
  Tpm& operator=(const Tpm&) = delete;

  // NV index contents, or nullopt if the index is not defined.
  std::optional<Bytes> ReadNv(TPM2_HANDLE index);
  // EK certificates present at the standard indices (RSA first), possibly none.
  std::vector<EkCertificate> ReadEkCertificates();

  // Loads the restricted signing key at `handle`, or if the handle is empty creates a primary
  // attestation key under the endorsement hierarchy and makes it persistent there. A key at the
  // handle that is not a restricted, fixed, TPM-generated signing key is refused.
  AkInfo EnsureAk(TPM2_HANDLE handle = kDefaultAkHandle, KeyAlg alg = KeyAlg::kEccP256);

  // The EK of the TCG default template (L-1 RSA 2048 / L-2 ECC P-256): the persistent one at the
  // TCG handle if it was provisioned with that template, else created transiently (RSA key
  // generation can take seconds on hardware) and flushed. Returns its marshalled TPM2B_PUBLIC.
  Bytes EkPublic(KeyAlg alg = KeyAlg::kRsa2048);

  // TPM2_ActivateCredential with the AK at ak_handle as the credentialed object and the default
  // EK (PolicySecret(endorsement) session) as the decryption key. Inputs are the TPM2B contents
  // (without size prefix) of TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET. Returns the secret.
  Bytes ActivateCredential(TPM2_HANDLE ak_handle, std::span<const uint8_t> credential_blob,
                           std::span<const uint8_t> encrypted_secret,
                           KeyAlg ek_alg = KeyAlg::kRsa2048);

  // TPM2_Quote over the SHA-256 bank of `pcrs` with the AK, plus a PCR read whose values are
  // checked against the quote's pcrDigest (re-quoted if a PCR moved in between).
  QuoteResult Quote(TPM2_HANDLE ak_handle, std::span<const uint8_t> qualifying_data,
                    const std::vector<uint32_t>& pcrs);

  std::vector<Sha256Digest> PcrRead(const std::vector<uint32_t>& pcrs);
  void PcrExtend(uint32_t pcr, const Sha256Digest& digest);
  HandleCounts CountHandles();
  // Removes the persistent object at `handle` (tests, key rotation).
  void EvictPersistent(TPM2_HANDLE handle);

 private:
  ESYS_TR PersistentTr(TPM2_HANDLE handle);  // cached ESYS_TR for a persistent handle
  // The default-template EK: a persistent one if present, else a new transient one whose
  // handle is returned in `transient` so the caller's guard flushes it.
  ESYS_TR LoadEk(KeyAlg alg, ESYS_TR& transient, Bytes* public_out);
  std::vector<Sha256Digest> PcrReadLocked(const std::vector<uint32_t>& pcrs);

  std::mutex mu_;
  TSS2_TCTI_CONTEXT* tcti_ = nullptr;
  ESYS_CONTEXT* ctx_ = nullptr;
  std::vector<std::pair<TPM2_HANDLE, ESYS_TR>> persistent_;
};

}  // namespace sovguard::attestation::tpm
