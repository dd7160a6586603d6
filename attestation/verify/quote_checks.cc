// The quote: signature, PCR digest, and the inclusion proof binding nonce and snapshot.
#include "attestation/verify/checks.h"

#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <tss2/tss2_mu.h>

#include <cstring>

#include "attestation/evidence/format.h"

namespace sovguard::attestation::verify::detail {

using base::EcdsaSigPtr;
using base::EvpMdCtxPtr;

// Converts a TPMT_SIGNATURE to what OpenSSL verifies, then checks it over the TPMS_ATTEST bytes.
CheckResult CheckSignature(const std::string& attest, const std::string& sig_bytes, EVP_PKEY* key,
                           const std::string& key_source) {
  const std::string name = "quote.signature";
  TPMT_SIGNATURE sig{};
  size_t off = 0;
  if (Tss2_MU_TPMT_SIGNATURE_Unmarshal(U8(sig_bytes).data(), sig_bytes.size(), &off, &sig) !=
          TSS2_RC_SUCCESS ||
      off != sig_bytes.size())
    return Fail(name, kReasonSignatureMalformed,
                "quote.signature is not one marshalled TPMT_SIGNATURE (" +
                    std::to_string(sig_bytes.size()) + " bytes)");
  Bytes der;
  bool pss = false;
  TPMI_ALG_HASH hash = 0;
  switch (sig.sigAlg) {
    case TPM2_ALG_ECDSA: {
      hash = sig.signature.ecdsa.hash;
      const auto& r = sig.signature.ecdsa.signatureR;
      const auto& s = sig.signature.ecdsa.signatureS;
      EcdsaSigPtr es(ECDSA_SIG_new());
      BIGNUM* br = BN_bin2bn(r.buffer, r.size, nullptr);
      BIGNUM* bs = BN_bin2bn(s.buffer, s.size, nullptr);
      if (!es || !br || !bs || ECDSA_SIG_set0(es.get(), br, bs) != 1) {
        BN_free(br);
        BN_free(bs);
        return Fail(name, kReasonSignatureMalformed, "cannot convert the ECDSA signature");
      }
      unsigned char* p = nullptr;
      int n = i2d_ECDSA_SIG(es.get(), &p);
      if (n <= 0) return Fail(name, kReasonSignatureMalformed, "cannot encode the ECDSA signature");
      der.assign(p, p + n);
      OPENSSL_free(p);
      break;
    }
    case TPM2_ALG_RSASSA:
      hash = sig.signature.rsassa.hash;
      der.assign(sig.signature.rsassa.sig.buffer,
                 sig.signature.rsassa.sig.buffer + sig.signature.rsassa.sig.size);
      break;
    case TPM2_ALG_RSAPSS:
      hash = sig.signature.rsapss.hash;
      pss = true;
      der.assign(sig.signature.rsapss.sig.buffer,
                 sig.signature.rsapss.sig.buffer + sig.signature.rsapss.sig.size);
      break;
    default:
      return Fail(name, kReasonSignatureUnsupported,
                  "signature algorithm 0x" +
                      ToHex(Bytes{static_cast<uint8_t>(sig.sigAlg >> 8),
                                  static_cast<uint8_t>(sig.sigAlg)}) +
                      " (expected ECDSA, RSASSA or RSAPSS)");
  }
  if (hash != TPM2_ALG_SHA256)
    return Fail(name, kReasonSignatureUnsupported, "signature hash is not SHA-256");
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key) != 1)
    return Fail(name, kReasonAkKeyInvalid, "the AK key (" + key_source + ") cannot verify");
  if (pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
              EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) != 1))
    return Fail(name, kReasonSignatureUnsupported, "RSAPSS with this AK key");
  const int ok =
      EVP_DigestVerify(ctx.get(), der.data(), der.size(), U8(attest).data(), attest.size());
  if (ok != 1)
    return Fail(
        name, kReasonSignatureInvalid,
        "quote.signature does not verify over quote.attest with the AK (" + key_source + ")");
  return Pass(name, "signed by the AK (" + key_source + ")");
}

CheckResult CheckPcrDigest(const v1::TpmQuote& q, const TPMS_ATTEST* attest) {
  const std::string name = "quote.pcr_digest";
  if (!attest) return Fail(name, kReasonDependencyFailed, "quote.attest could not be parsed");
  if (q.pcr_bank() != "sha256")
    return Fail(name, kReasonPcrValuesMalformed,
                "quote.pcr_bank is \"" + q.pcr_bank() + "\" (expected \"sha256\")");
  Bytes concat;
  std::array<uint8_t, 3> reported_sel{};
  for (int i = 0; i < q.pcrs_size(); ++i) {
    const auto& p = q.pcrs(i);
    if (p.sha256().size() != 32 || p.index() > 23 || (i > 0 && p.index() <= q.pcrs(i - 1).index()))
      return Fail(name, kReasonPcrValuesMalformed,
                  "quote.pcrs[" + std::to_string(i) +
                      "]: PCRs must be 0-23, ascending, 32-byte SHA-256 values");
    reported_sel[p.index() / 8] |= static_cast<uint8_t>(1u << (p.index() % 8));
    concat.insert(concat.end(), p.sha256().begin(), p.sha256().end());
  }
  const auto& sel = attest->attested.quote.pcrSelect;
  if (sel.count != 1 || sel.pcrSelections[0].hash != TPM2_ALG_SHA256 ||
      sel.pcrSelections[0].sizeofSelect < 3)
    return Fail(name, kReasonPcrSelectionMismatch,
                "quote.attest selects other than exactly the SHA-256 bank");
  const unsigned nsel =
      std::min<unsigned>(sel.pcrSelections[0].sizeofSelect, sizeof sel.pcrSelections[0].pcrSelect);
  for (unsigned b = 0; b < nsel; ++b) {
    const uint8_t want = b < 3 ? reported_sel[b] : 0;
    if (sel.pcrSelections[0].pcrSelect[b] != want)
      return Fail(name, kReasonPcrSelectionMismatch,
                  "quote.pcrs indices differ from the PCR selection signed in quote.attest");
  }
  const auto digest = Sha256(concat);
  const auto& signed_digest = attest->attested.quote.pcrDigest;
  if (signed_digest.size != 32 || std::memcmp(signed_digest.buffer, digest.data(), 32) != 0)
    return Fail(name, kReasonPcrDigestMismatch,
                "SHA-256 of quote.pcrs is " + ToHex(digest) + ", quote.attest pcrDigest is " +
                    ToHex(std::span(signed_digest.buffer, signed_digest.size)));
  return Pass(name, std::to_string(q.pcrs_size()) + " PCRs, digest " + ToHex(digest));
}

// The leaf is recomputed from the auditor's own nonce, the snapshot digest and the salt; the
// carried inclusion.leaf is only compared with it, to name a proof made for another request.
// Shape (tree size, index, path length) is checked before any hashing; one reason per failure.
CheckResult CheckInclusion(const v1::Evidence& ev, std::span<const uint8_t> nonce,
                           const Sha256Digest& snap_digest, const TPM2B_DATA* extra, bool sig_ok) {
  const std::string name = "quote.qualifying_data";
  if (!extra) return Fail(name, kReasonDependencyFailed, "quote.attest could not be parsed");
  const auto& pr = ev.inclusion();
  const size_t size = pr.tree_size(), index = pr.leaf_index();
  const auto malformed = [&](const std::string& why) {
    return Fail(name, kReasonMerkleProofMalformed, "inclusion: " + why);
  };
  if (!ev.has_inclusion()) return malformed("no inclusion proof (format version 2 needs one)");
  if (size == 0 || size > evidence::kMaxBatchLeaves)
    return malformed("tree_size " + std::to_string(size) + " is not 1.." +
                     std::to_string(evidence::kMaxBatchLeaves));
  if (index >= size)
    return malformed("leaf_index " + std::to_string(index) + " is not below tree_size " +
                     std::to_string(size));
  if (pr.salt().size() != evidence::kLeafSaltSize)
    return malformed("salt is " + std::to_string(pr.salt().size()) + " bytes, not " +
                     std::to_string(evidence::kLeafSaltSize));
  if (pr.leaf().size() != 32)
    return malformed("leaf is " + std::to_string(pr.leaf().size()) + " bytes, not 32");
  const size_t need = evidence::InclusionPathLength(index, size);
  const std::string shape = "leaf " + std::to_string(index) + " of " + std::to_string(size) +
                            " needs an audit path of " + std::to_string(need) + " hashes, " +
                            "inclusion.path has " + std::to_string(pr.path_size());
  if (static_cast<size_t>(pr.path_size()) > need)
    return Fail(name, kReasonMerklePathExtended, shape);
  if (static_cast<size_t>(pr.path_size()) < need)
    return Fail(name, kReasonMerklePathTruncated, shape);
  std::vector<Sha256Digest> path(need);
  for (size_t i = 0; i < need; ++i) {
    const auto& h = pr.path(static_cast<int>(i));
    if (h.size() != 32)
      return malformed("path[" + std::to_string(i) + "] is " + std::to_string(h.size()) +
                       " bytes, not 32");
    std::memcpy(path[i].data(), h.data(), 32);
  }
  Sha256Digest leaf;
  try {
    leaf = evidence::LeafHash(nonce, snap_digest, U8(pr.salt()));
  } catch (const AttestationError& e) {
    return Fail(name, kReasonNonceMismatch, e.what());
  }
  const Sha256Digest signed_root = [&] {
    Sha256Digest d{};
    if (extra->size == d.size()) std::memcpy(d.data(), extra->buffer, d.size());
    return d;
  }();
  const bool root_sized = extra->size == signed_root.size();
  const std::string signed_hex = ToHex(std::span(extra->buffer, extra->size));
  if (pr.leaf() != Str(leaf)) {
    Sha256Digest theirs;
    std::memcpy(theirs.data(), pr.leaf().data(), 32);
    const bool proves_theirs =
        root_sized && evidence::RootFromInclusionPath(theirs, index, size, path) == signed_root;
    return Fail(name, kReasonMerkleLeafMismatch,
                "inclusion.leaf " + Hex(pr.leaf()) +
                    " is not the leaf of this nonce and snapshot " + ToHex(leaf) +
                    ": the proof is for another request" +
                    (proves_theirs ? " (it proves that leaf in the quoted tree)" : ""));
  }
  const auto root = evidence::RootFromInclusionPath(leaf, index, size, path);
  if (!root_sized || root != signed_root) {
    // Name a misplaced leaf: the same path reaches the signed root from another position.
    // Bounded: at most kMaxBatchLeaves walks of at most kMaxProofLength hashes, on failure only.
    for (size_t j = 0; root_sized && j < size; ++j)
      if (j != index && evidence::InclusionPathLength(j, size) == need &&
          evidence::RootFromInclusionPath(leaf, j, size, path) == signed_root)
        return Fail(name, kReasonMerkleLeafPosition,
                    "the audit path reaches the signed root from leaf " + std::to_string(j) +
                        ", but inclusion.leaf_index says " + std::to_string(index) +
                        ": the leaf is placed where another request's is");
    return Fail(name, kReasonMerkleRootMismatch,
                "the audit path reaches root " + ToHex(root) + ", the quote signed extraData " +
                    signed_hex);
  }
  if (ev.quote().qualifying_data() != Str(root))
    return Fail(name, kReasonQualifyingDataMismatch,
                "quote.qualifying_data differs from the signed extraData");
  if (!sig_ok)
    return Fail(name, kReasonDependencyFailed,
                "the proof reaches extraData but quote.attest is not signed by the AK");
  return Pass(name, "nonce and snapshot digest bound: leaf " + std::to_string(index) + " of " +
                        std::to_string(size) + " reaches the signed root " + ToHex(root));
}

CheckResult CheckQuoteStructure(const std::string& attest, TPMS_ATTEST& out) {
  const std::string name = "quote.structure";
  size_t off = 0;
  if (Tss2_MU_TPMS_ATTEST_Unmarshal(U8(attest).data(), attest.size(), &off, &out) !=
          TSS2_RC_SUCCESS ||
      off != attest.size())
    return Fail(name, kReasonQuoteMalformed, "quote.attest is not one marshalled TPMS_ATTEST");
  if (out.magic != TPM2_GENERATED_VALUE || out.type != TPM2_ST_ATTEST_QUOTE)
    return Fail(name, kReasonQuoteMalformed,
                "quote.attest is not a TPM-generated quote (magic/type)");
  return Pass(name, "TPM2_ST_ATTEST_QUOTE");
}

CheckResult CheckNonce(const v1::Evidence& ev, const std::optional<Bytes>& expected) {
  if (!expected)
    return Fail("nonce", kReasonNonceMismatch,
                "no expected nonce given: the evidence's freshness is not established");
  if (Str(*expected) != ev.nonce())
    return Fail("nonce", kReasonNonceMismatch,
                "evidence nonce " + Hex(ev.nonce()) + ", expected " + ToHex(*expected));
  return Pass("nonce", ToHex(*expected));
}

CheckResult CheckClock(const v1::Evidence& ev, const TPMS_ATTEST* attest) {
  const std::string name = "quote.clock";
  if (!attest) return Fail(name, kReasonDependencyFailed, "quote.attest could not be parsed");
  const auto& ci = attest->clockInfo;
  if (ev.clock().clock_ms() != ci.clock || ev.clock().reset_count() != ci.resetCount ||
      ev.clock().restart_count() != ci.restartCount || ev.clock().safe() != (ci.safe == TPM2_YES))
    return Fail(name, kReasonClockMismatch, "clock differs from quote.attest clockInfo");
  return Pass(name, "clock " + std::to_string(ci.clock) + " ms, reset " +
                        std::to_string(ci.resetCount) + ", restart " +
                        std::to_string(ci.restartCount));
}
}  // namespace sovguard::attestation::verify::detail
