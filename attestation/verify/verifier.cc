#include "attestation/verify/verifier.h"

#include <google/protobuf/io/coded_stream.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "attestation/common/sha256_chain.h"
#include "attestation/eventlog/cel.h"
#include "attestation/evidence/format.h"
#include "attestation/manifest/manifest.h"
#include "attestation/tpm/credential.h"
#include "attestation/tpm/public_key.h"
#include "attestation/verify/ima_log.h"
#include "attestation/verify/uefi_log.h"
#include "base/openssl.h"
#include "policy/jurisdiction/countries.h"

namespace sovguard::attestation::verify {
namespace {

using base::BioPtr;
using base::EcdsaSigPtr;
using base::EvpMdCtxPtr;
using base::EvpPkeyPtr;
using base::X509Ptr;
using base::X509StoreCtxPtr;
using base::X509StorePtr;

std::span<const uint8_t> U8(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
std::string Str(std::span<const uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
std::string Hex(const std::string& s) {
  return ToHex(U8(s));
}

// sovguardd's tc program on every guest tap (enforcer/daemon/node.cc), as measured and reported.
constexpr std::string_view kNetProgram = "sg_net";
constexpr std::string_view kNetAttachType = "tc/ingress";

CheckResult Pass(std::string name, std::string detail = {}) {
  return {std::move(name), Status::kPass, std::string(kReasonOk), std::move(detail)};
}
CheckResult Fail(std::string name, std::string_view reason, std::string detail) {
  return {std::move(name), Status::kFail, std::string(reason), std::move(detail)};
}
CheckResult NotApplicable(std::string name, std::string_view reason, std::string detail) {
  return {std::move(name), Status::kNotApplicable, std::string(reason), std::move(detail)};
}

EvpPkeyPtr LoadPem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return EvpPkeyPtr(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
}

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

// The SubjectPublicKeyInfo PEM of an EC P-256 key, byte for byte as PEM_write_bio_PUBKEY writes
// it (the DER is a fixed prefix and the uncompressed point), or "" for any other key.
std::string P256PemFast(EVP_PKEY* key) {
  static constexpr uint8_t kPrefix[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                        0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};
  char group[32] = {};
  size_t glen = 0;
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
      EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen) !=
          1 ||
      std::string_view(group, glen) != SN_X9_62_prime256v1)
    return {};
  uint8_t der[sizeof kPrefix + 65];
  std::memcpy(der, kPrefix, sizeof kPrefix);
  size_t plen = 0;
  if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, der + sizeof kPrefix,
                                      65, &plen) != 1 ||
      plen != 65 || der[sizeof kPrefix] != 0x04)
    return {};
  char b64[4 * ((sizeof der + 2) / 3) + 1];
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64), der, sizeof der);
  std::string pem = "-----BEGIN PUBLIC KEY-----\n";
  for (int i = 0; i < n; i += 64) {
    pem.append(b64 + i, static_cast<size_t>(std::min(64, n - i)));
    pem += '\n';
  }
  pem += "-----END PUBLIC KEY-----\n";
  return pem;
}

// What CheckAkConsistency derives from ak.tpm2b_public: the key, its TPM name and its P-256
// PEM (P256PemFast). They are functions of those bytes alone, and a verifier sees the same AKs
// again and again (a fleet, continuous attestation), so they are remembered per exact bytes:
// building the EVP_PKEY (EC group, point check) costs more than the rest of the AK checks.
// Bounded (oldest out); only complete derivations are kept; thread-safe (fleet mode).
class AkCache {
 public:
  static constexpr size_t kMaxEntries = 256;
  bool Get(const std::string& pub, EvpPkeyPtr& key, std::string& name, std::string& pem) {
    std::lock_guard lock(mu_);
    auto it = map_.find(pub);
    if (it == map_.end() || EVP_PKEY_up_ref(it->second.key.get()) != 1) return false;
    key.reset(it->second.key.get());
    name = it->second.name;
    pem = it->second.pem;
    return true;
  }
  void Put(const std::string& pub, EVP_PKEY* key, const std::string& name, const std::string& pem) {
    std::lock_guard lock(mu_);
    if (map_.count(pub) || EVP_PKEY_up_ref(key) != 1) return;
    EvpPkeyPtr ref(key);
    if (order_.size() >= kMaxEntries) {
      map_.erase(order_.front());
      order_.pop_front();
    }
    map_.emplace(pub, Entry{std::move(ref), name, pem});
    order_.push_back(pub);
  }

 private:
  struct Entry {
    EvpPkeyPtr key;
    std::string name, pem;
  };
  std::mutex mu_;
  std::map<std::string, Entry> map_;
  std::deque<std::string> order_;
};
AkCache& TheAkCache() {
  static AkCache cache;
  return cache;
}

// The enrolled AK (--ak-pub) of a verdict: parsing PEM (OpenSSL 3 decoders) costs more than
// the other AK checks, and an auditor verifies the same nodes again and again, so the parsed key
// is kept per exact PEM text (the last few; thread-safe). Null for text that is not a key.
EvpPkeyPtr EnrolledKey(const std::string& pem) {
  static std::mutex mu;
  static std::deque<std::pair<std::string, EvpPkeyPtr>> keys;  // newest first
  constexpr size_t kMax = 64;
  {
    std::lock_guard lock(mu);
    for (auto& [text, key] : keys)
      if (text == pem && EVP_PKEY_up_ref(key.get()) == 1) return EvpPkeyPtr(key.get());
  }
  EvpPkeyPtr key = LoadPem(pem);
  if (!key || EVP_PKEY_up_ref(key.get()) != 1) return key;
  std::lock_guard lock(mu);
  keys.emplace_front(pem, EvpPkeyPtr(key.get()));
  if (keys.size() > kMax) keys.pop_back();
  return key;
}

// The AK the evidence carries: its TPM public area must agree with its name and PEM.
CheckResult CheckAkConsistency(const v1::AttestationKey& ak, EvpPkeyPtr& key_out) {
  const std::string name = "ak.consistency";
  if (ak.tpm2b_public().empty())
    return Fail(name, kReasonAkInconsistent, "ak.tpm2b_public is empty");
  std::string derived_name, fast_pem;
  if (!TheAkCache().Get(ak.tpm2b_public(), key_out, derived_name, fast_pem)) {
    try {
      key_out = tpm::PublicAreaToPkey(U8(ak.tpm2b_public()));
      derived_name = Str(tpm::PublicAreaName(U8(ak.tpm2b_public())));
    } catch (const AttestationError& e) {
      key_out.reset();
      return Fail(name, kReasonAkKeyInvalid, std::string("ak.tpm2b_public: ") + e.what());
    }
    fast_pem = P256PemFast(key_out.get());
    TheAkCache().Put(ak.tpm2b_public(), key_out.get(), derived_name, fast_pem);
  }
  if (derived_name != ak.name())
    return Fail(name, kReasonAkInconsistent,
                "ak.name " + Hex(ak.name()) + " is not the name of ak.tpm2b_public (" +
                    Hex(derived_name) + ")");
  // The node writes public_pem from the same key with the same encoder, so equal text is the
  // common case; parsing PEM (OpenSSL 3 decoders) costs more than the rest of the AK checks, and
  // so does encoding it (an OSSL_ENCODER context per call): P-256 keys, the default AK, are
  // rendered here directly. Any difference in text falls back to comparing the keys.
  if (!ak.public_pem().empty() && ak.public_pem() != fast_pem &&
      ak.public_pem() != tpm::PublicKeyToPem(key_out.get())) {
    auto carried = LoadPem(ak.public_pem());
    if (!carried || EVP_PKEY_eq(carried.get(), key_out.get()) != 1)
      return Fail(name, kReasonAkInconsistent, "ak.public_pem is not the key in ak.tpm2b_public");
  }
  return Pass(name, "ak.tpm2b_public, ak.name and ak.public_pem agree");
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

// CEL event kinds that measure a software component (object digest = SHA-256 of the file or
// object): each must be approved by the reference manifest.
bool IsComponentKind(cel::EventKind k) {
  switch (k) {
    case cel::EventKind::kSelfBinary:
    case cel::EventKind::kBpfObject:
    case cel::EventKind::kQemuBinary:
    case cel::EventKind::kLibvirtdBinary:
    case cel::EventKind::kLibvirtDriver:
    case cel::EventKind::kKernelImage:
      return true;
    default:
      return false;
  }
}

// CEL: decodes strictly without copying (views into the evidence), checks the structure and
// that every event is a known sovguard event (one pass), then hashes every content and replays
// the extend chain in one interleaved pass (common/sha256_chain.h), and compares with the
// quoted sovguard PCR. This is the verifier's hot path: one allocation, for the chain items (and
// with a manifest one for the component list).
// Returns the records when the log replayed to the signed PCR value (and is thus authentic).
// What later checks need from an authentic CEL: its records, and the few records the snapshot
// checks read (found while decoding, so they cost no pass of their own).
struct CelFacts {
  // Record i of an authentic log has recnum i, extends the sovguard PCR and is a sovguard
  // event: only its content (and digest) are kept, 24 bytes a record (the full views, 56 bytes,
  // were written and read back once more per record: 0.02 ms of the bench's 1 ms).
  std::vector<ChainItem> recs;
  std::vector<size_t> guest_events;    // kEnforcementState "guest:<uuid>", in order
  size_t last_net_program = SIZE_MAX;  // last kProgramAttached of sg_net
  std::vector<size_t> downgrades;      // kMechanismDowngraded since the last kDaemonStart
  size_t last_start = SIZE_MAX;        // the last kDaemonStart
  // What enforcement.continuity reads: every kDaemonStart, every kMechanismDowngraded, every
  // tamper:<kind> and "enforcement" (release) kEnforcementState event, in log order.
  std::vector<size_t> starts, all_downgrades, state_events;
  // With a reference manifest only: what it checks, found while decoding (the manifest check
  // then reads 32 bytes per component instead of decoding the log again).
  std::vector<std::pair<size_t, const uint8_t*>> components;  // record, object digest
  std::vector<size_t> cmdlines;                               // kKernelCmdline records
};

std::optional<CelFacts> CheckCel(const v1::Evidence& ev, std::span<const uint8_t> cel_bytes,
                                 bool pcrs_ok, ReplayCache* cache, bool for_manifest,
                                 uint32_t pinned_pcr, std::vector<CheckResult>& out) {
  // The PCR is the verifier's, never the evidence's: a log in a resettable PCR (16-23) can be
  // rebuilt at will by root, so naming one must not make it sovguard's.
  const uint32_t pcr = pinned_pcr;
  const std::string name = "eventlog.cel.replay";
  // Structure (sequence, PCR index) and event types: sovguard's log holds only sovguard events,
  // so any other content type or an unknown sovguard kind is an unknown event, reported with
  // its record number and never replayed as if it were understood. These checks run as each
  // record is decoded, before the hashing; the verdict uses them before the replay result.
  struct CelScan {
    uint32_t pcr;
    std::vector<ChainItem> recs;
    size_t first_bad_recnum = SIZE_MAX, first_bad_pcr = SIZE_MAX;
    uint64_t bad_recnum = 0;  // the recnum record first_bad_recnum has
    uint32_t bad_pcr = 0;     // the PCR record first_bad_pcr extends
    size_t n_unknown = 0;
    uint64_t unknown_recnum[8];
    uint8_t unknown_type[8];
    const char* unknown_why[8];
    std::vector<size_t> guest_events;
    size_t last_net_program = SIZE_MAX;
    std::vector<size_t> downgrades;
    size_t last_start = SIZE_MAX;
    std::vector<size_t> starts, all_downgrades, state_events;
    bool for_manifest;
    std::vector<std::pair<size_t, const uint8_t*>> components;
    std::vector<size_t> cmdlines;
    void Scan(size_t i, const cel::RecordView& r) {
      if (r.recnum != i && first_bad_recnum == SIZE_MAX) {
        first_bad_recnum = i;
        bad_recnum = r.recnum;
      }
      if (r.pcr != pcr && first_bad_pcr == SIZE_MAX) {
        first_bad_pcr = i;
        bad_pcr = r.pcr;
      }
      const char* why = nullptr;
      if (r.content_type != cel::kContentSovguard) {
        why = "";  // named with its content type below
      } else {
        cel::SovguardEventView v;
        why = cel::DecodeSovguardContentView(r.content, v);
        // (Names compared field by field with fixed-size memcmp: inlined, and no 16-byte copy
        // of a string_view just stored 8 bytes at a time, which stalls store forwarding.)
        constexpr size_t kPrefix = cel::kGuestEventPrefix.size();
        if (!why && v.kind == cel::EventKind::kEnforcementState && v.name.size() >= kPrefix &&
            std::memcmp(v.name.data(), cel::kGuestEventPrefix.data(), kPrefix) == 0)
          guest_events.push_back(i);
        else if (!why && v.kind == cel::EventKind::kEnforcementState &&
                 ((v.name.size() > 7 && std::memcmp(v.name.data(), "tamper:", 7) == 0) ||
                  v.name == "enforcement"))
          state_events.push_back(i);
        else if (!why && v.kind == cel::EventKind::kProgramAttached &&
                 v.name.size() == kNetProgram.size() &&
                 std::memcmp(v.name.data(), kNetProgram.data(), kNetProgram.size()) == 0)
          last_net_program = i;
        else if (!why && v.kind == cel::EventKind::kMechanismDowngraded) {
          downgrades.push_back(i);
          all_downgrades.push_back(i);
        } else if (!why && v.kind == cel::EventKind::kDaemonStart) {
          // A (re)started daemon probes and measures its mechanisms again.
          last_start = i;
          downgrades.clear();
          starts.push_back(i);
        }
        if (for_manifest && !why) {
          if (IsComponentKind(v.kind))
            components.emplace_back(i, v.object_digest);
          else if (v.kind == cel::EventKind::kKernelCmdline)
            cmdlines.push_back(i);
        }
      }
      if (why) {
        if (n_unknown < 8) {
          unknown_recnum[n_unknown] = r.recnum;
          unknown_type[n_unknown] = r.content_type;
          unknown_why[n_unknown] = why;
        }
        ++n_unknown;
      }
    }
  } scan{pcr};
  scan.for_manifest = for_manifest;
  // Copy-free, strict decoding (errors name the record and byte offset, as cel::DecodeLogViews
  // says them) and the scan, one pass before the hashing: decoding inside the hashing loop (a
  // batch at a time, or one record at a time) was measured to overlap none of the SHA unit's
  // work and to cost more than this pass.
  std::vector<ChainItem>& recs = scan.recs;  // what the chain hashes, and later checks read
  size_t error_at = SIZE_MAX;                // byte offset of the record that does not decode
  recs.reserve(cel_bytes.size() / 96 + 1);   // records are at least ~60 bytes
  cel::RecordView r;                         // (one view, decoded into and read in registers)
  for (size_t off = 0; off < cel_bytes.size();) {
    if (!cel::DecodeRecordViewAt(cel_bytes, off, r)) {
      error_at = off;
      break;
    }
    recs.push_back({r.content, r.digest});
    scan.Scan(recs.size() - 1, r);
  }
  // Records an earlier verdict replayed (a byte-identical prefix, see ReplayCache) are scanned
  // but not hashed again: the chain starts from their remembered PCR value. The cache is asked
  // only about a log that decodes (its hit/miss counts are replays).
  const std::string cache_key = ev.ak().name().empty() ? "node:" + ev.node() : ev.ak().name();
  ReplayCache::Hit hit;
  if (cache && error_at == SIZE_MAX) hit = cache->Lookup(cache_key, cel_bytes);
  // (A record's content is its last field: record k starts where record k-1's content ends.)
  const auto record_start = [&](size_t k) -> size_t {
    return k == 0 ? 0
                  : static_cast<size_t>(recs[k - 1].content.data() + recs[k - 1].content.size() -
                                        cel_bytes.data());
  };
  if (hit.records > recs.size() ||
      (hit.records < recs.size() && record_start(hit.records) != hit.bytes))
    hit = {};  // cannot happen for a true prefix of complete records; replay it all
  const size_t done = hit.records;
  ChainResult chain = error_at == SIZE_MAX
                          ? ExtendChainCheckingContents(std::span(recs).subspan(done), hit.pcr)
                          : ChainResult{};
  if (error_at != SIZE_MAX) {
    out.push_back(Fail("eventlog.cel.decode", kReasonCelMalformed,
                       "logs.cel: CEL: " + cel::RecordViewError(cel_bytes, error_at, recs.size())));
    out.push_back(Fail("eventlog.cel.events", kReasonDependencyFailed, "logs.cel not decoded"));
    out.push_back(Fail(name, kReasonDependencyFailed, "logs.cel not decoded"));
    return std::nullopt;
  }
  out.push_back(Pass("eventlog.cel.decode", std::to_string(recs.size()) + " records"));
  if (chain.first_bad_content != SIZE_MAX) chain.first_bad_content += done;
  // The first structural fault in record order: a broken sequence, else a wrong PCR.
  std::optional<CheckResult> structural;
  const size_t first_structural = std::min(scan.first_bad_recnum, scan.first_bad_pcr);
  if (ev.logs().sovguard_pcr() != pcr) {
    structural = Fail(name, kReasonCelPcrUnexpected,
                      "logs.sovguard_pcr is " + std::to_string(ev.logs().sovguard_pcr()) +
                          ", the verifier expects sovguard's log in PCR " + std::to_string(pcr) +
                          " (--sovguard-pcr): a log in another PCR is not sovguard's");
  } else if (first_structural != SIZE_MAX) {
    const size_t i = first_structural;
    if (i == scan.first_bad_recnum)
      structural = Fail(name, kReasonCelSequenceBroken,
                        "logs.cel record " + std::to_string(i) + " has recnum " +
                            std::to_string(scan.bad_recnum) + " (expected " + std::to_string(i) +
                            "): an event is missing or reordered");
    else
      structural = Fail(name, kReasonCelWrongPcr,
                        "logs.cel record " + std::to_string(i) + " extends PCR " +
                            std::to_string(scan.bad_pcr) + " (sovguard's PCR is " +
                            std::to_string(pcr) + ")");
  }
  if (scan.n_unknown) {
    std::string unknown;
    for (size_t k = 0; k < std::min<size_t>(scan.n_unknown, 8); ++k) {
      const uint8_t type = scan.unknown_type[k];
      const std::string why = type != cel::kContentSovguard ? "content type " + std::to_string(type)
                                                            : std::string(scan.unknown_why[k]);
      unknown += (unknown.empty() ? "" : "; ") + std::string("logs.cel record ") +
                 std::to_string(scan.unknown_recnum[k]) + ": " + why;
    }
    out.push_back(Fail("eventlog.cel.events", kReasonCelUnknownEvent,
                       std::to_string(scan.n_unknown) + " unknown event(s): " + unknown));
  } else {
    out.push_back(Pass("eventlog.cel.events", "all events are known sovguard event kinds"));
  }
  if (structural) {
    out.push_back(*structural);
    return std::nullopt;
  }
  if (scan.n_unknown) {
    out.push_back(Fail(name, kReasonDependencyFailed, "logs.cel has unknown events"));
    return std::nullopt;
  }
  if (chain.first_bad_content != SIZE_MAX) {
    out.push_back(Fail(name, kReasonCelEntryTampered,
                       "logs.cel record " + std::to_string(chain.first_bad_content) +
                           ": digest is not SHA-256 of its content"));
    return std::nullopt;
  }
  const Sha256Digest& replayed = chain.pcr;
  const v1::PcrValue* quoted = nullptr;
  for (const auto& p : ev.quote().pcrs())
    if (p.index() == pcr) quoted = &p;
  if (!quoted) {
    out.push_back(Fail(name, kReasonCelPcrNotQuoted,
                       "sovguard's PCR " + std::to_string(pcr) + " is not in quote.pcrs"));
    return std::nullopt;
  }
  if (quoted->sha256() != Str(replayed)) {
    out.push_back(Fail(name, kReasonCelReplayMismatch,
                       "logs.cel replays PCR " + std::to_string(pcr) + " to " + ToHex(replayed) +
                           ", quote.pcrs has " + Hex(quoted->sha256()) +
                           ": an event is missing, extra or altered"));
    return std::nullopt;
  }
  if (!pcrs_ok) {
    out.push_back(Fail(name, kReasonDependencyFailed,
                       "logs.cel matches quote.pcrs, but quote.pcrs are not the signed values"));
    return std::nullopt;
  }
  if (cache) cache->Store(cache_key, cel_bytes, recs.size(), replayed, hit);
  out.push_back(Pass(name, std::to_string(recs.size()) + " records replay to PCR " +
                               std::to_string(pcr) + " = " + ToHex(replayed) +
                               (done ? " (" + std::to_string(done) +
                                           " of them as remembered from an earlier verdict)"
                                     : std::string())));
  return CelFacts{std::move(scan.recs),
                  std::move(scan.guest_events),
                  scan.last_net_program,
                  std::move(scan.downgrades),
                  scan.last_start,
                  std::move(scan.starts),
                  std::move(scan.all_downgrades),
                  std::move(scan.state_events),
                  std::move(scan.components),
                  std::move(scan.cmdlines)};
}

// Every certificate in `dir` (PEM files with one or more certificates, or DER files) becomes a
// trust anchor. Other files (the CA's private keys, serial files) are skipped.
X509StorePtr LoadEkCaStore(const std::filesystem::path& dir) {
  X509StorePtr store(X509_STORE_new());
  if (!store) throw AttestationError("X509_STORE_new failed");
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) throw InputError("--ek-ca " + dir.string() + ": " + ec.message());
  size_t n = 0;
  for (const auto& entry : it) {
    if (!entry.is_regular_file()) continue;
    const Bytes data = ReadFileBytes(entry.path());
    BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    size_t in_file = 0;
    while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      X509Ptr cert(x);
      if (X509_STORE_add_cert(store.get(), cert.get()) == 1) ++in_file;
    }
    if (in_file == 0) {
      const unsigned char* p = data.data();
      X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(data.size())));
      if (cert && p == data.data() + data.size() &&
          X509_STORE_add_cert(store.get(), cert.get()) == 1)
        ++in_file;
    }
    n += in_file;
  }
  if (n == 0) throw InputError("--ek-ca " + dir.string() + ": no certificate found");
  // The auditor chose these certificates: an intermediate placed here is trusted as is.
  X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN);
  return store;
}

// What a TCG EK certificate (EK Credential Profile 2.x) says about its TPM and its purpose: the
// EK EKU (2.23.133.8.1); in a directoryName of the subject alternative name, the TPM manufacturer
// (2.23.133.2.1), model (2.23.133.2.2) and firmware version (2.23.133.2.3); basic constraints
// (an EK is never a CA); key usage (keyEncipherment for an RSA EK, keyAgreement for an ECC EK);
// the certificate policy identifiers (the issuer's own OIDs: the profile names none common to all
// EKs, so the auditor pins them with --ek-policy).
struct EkProfile {
  bool ek_eku = false;
  std::string manufacturer, model, version, issuer;
  bool ca = false;
  uint32_t key_usage = UINT32_MAX;  // X509_get_key_usage: UINT32_MAX without the extension
  int key_type = EVP_PKEY_NONE;
  std::vector<std::string> policies;
};
EkProfile ReadEkProfile(X509* cert) {
  EkProfile p;
  p.ca = (X509_get_extension_flags(cert) & EXFLAG_CA) != 0;
  p.key_usage = X509_get_key_usage(cert);
  if (const EVP_PKEY* key = X509_get0_pubkey(cert)) p.key_type = EVP_PKEY_get_base_id(key);
  base::CertificatePoliciesPtr pol(static_cast<CERTIFICATEPOLICIES*>(
      X509_get_ext_d2i(cert, NID_certificate_policies, nullptr, nullptr)));
  for (int i = 0; pol && i < sk_POLICYINFO_num(pol.get()); ++i) {
    char id[80];
    if (OBJ_obj2txt(id, sizeof id, sk_POLICYINFO_value(pol.get(), i)->policyid, 1) > 0)
      p.policies.emplace_back(id);
  }
  if (char* line = X509_NAME_oneline(X509_get_issuer_name(cert), nullptr, 0)) {
    p.issuer = line;
    OPENSSL_free(line);
  }
  base::ExtendedKeyUsagePtr eku(static_cast<EXTENDED_KEY_USAGE*>(
      X509_get_ext_d2i(cert, NID_ext_key_usage, nullptr, nullptr)));
  char oid[64];
  for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku.get()); ++i)
    if (OBJ_obj2txt(oid, sizeof oid, sk_ASN1_OBJECT_value(eku.get(), i), 1) > 0 &&
        std::string_view(oid) == "2.23.133.8.1")
      p.ek_eku = true;
  base::GeneralNamesPtr san(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; san && i < sk_GENERAL_NAME_num(san.get()); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(san.get(), i);
    if (g->type != GEN_DIRNAME) continue;
    for (int k = 0; k < X509_NAME_entry_count(g->d.directoryName); ++k) {
      const X509_NAME_ENTRY* e = X509_NAME_get_entry(g->d.directoryName, k);
      if (OBJ_obj2txt(oid, sizeof oid, X509_NAME_ENTRY_get_object(e), 1) <= 0) continue;
      const ASN1_STRING* v = X509_NAME_ENTRY_get_data(e);
      const std::string value(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                              static_cast<size_t>(ASN1_STRING_length(v)));
      const std::string_view o(oid);
      if (o == "2.23.133.2.1")
        p.manufacturer = value;
      else if (o == "2.23.133.2.2")
        p.model = value;
      else if (o == "2.23.133.2.3")
        p.version = value;
    }
  }
  return p;
}

// What marks a software TPM in its EK certificate: swtpm_setup's local CA ("swtpm-localca"), its
// model "swtpm", its manufacturer id 0x00001014 (the IBM software TPM libtpms derives from).
std::string SoftwareTpmMark(const EkProfile& p) {
  auto lower = [](std::string t) {
    for (auto& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return t;
  };
  if (lower(p.issuer).find("swtpm") != std::string::npos) return "issuer " + p.issuer;
  if (lower(p.model).find("swtpm") != std::string::npos) return "TPM model " + p.model;
  if (lower(p.manufacturer) == "id:00001014") return "TPM manufacturer " + p.manufacturer;
  return {};
}

// The TCG profile of an EK certificate given as evidence bytes, or nullopt when they are not one
// DER certificate. Decoding a certificate (OpenSSL 3 decodes its key through the providers)
// costs more than the rest of a cached verdict, and a node shows the same certificates every
// time: results are kept per exact bytes (the last few; thread-safe).
std::optional<EkProfile> EkProfileOf(const std::string& der_in) {
  static std::mutex mu;
  static std::deque<std::pair<std::string, std::optional<EkProfile>>> known;  // newest first
  constexpr size_t kMax = 64;
  {
    std::lock_guard lock(mu);
    for (const auto& [der, prof] : known)
      if (der == der_in) return prof;
  }
  std::optional<EkProfile> prof;
  try {
    const Bytes der = tpm::TrimDer(U8(der_in));
    const unsigned char* p = der.data();
    X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (cert && p == der.data() + der.size()) prof = ReadEkProfile(cert.get());
  } catch (const AttestationError&) {
  }
  std::lock_guard lock(mu);
  known.emplace_front(der_in, prof);
  if (known.size() > kMax) known.pop_back();
  return prof;
}

// tpm.hardware: the quote comes from a hardware TPM. Decided from what the node cannot forge: an
// EK certificate that chains to the auditor's --ek-ca and names a TPM maker that is not swtpm.
// A software TPM named anywhere (EK certificate, even unchained, or the node's own snapshot
// statement) fails SOFTWARE_TPM; no chained EK certificate fails HARDWARE_TPM_UNPROVEN.
CheckResult CheckHardware(const v1::Evidence& ev,
                          const std::optional<v1::EnforcementSnapshot>& snap,
                          const CheckResult* ek_chain) {
  const std::string name = "tpm.hardware";
  std::string makers;
  for (int i = 0; i < ev.ek_certificates_size(); ++i) {
    const auto prof = EkProfileOf(ev.ek_certificates(i).der());
    if (!prof) continue;  // (ek.chain names it when asked to check the chain)
    const EkProfile& p = *prof;
    const std::string at = "ek_certificates[" + std::to_string(i) + "]";
    if (auto mark = SoftwareTpmMark(p); !mark.empty())
      return Fail(name, kReasonSoftwareTpm, at + " is a software TPM's: " + mark);
    makers += (makers.empty() ? "" : "; ") + at + " manufacturer " + p.manufacturer + " model " +
              p.model + " version " + p.version;
  }
  if (snap && snap->software_tpm())
    return Fail(name, kReasonSoftwareTpm,
                "the node's snapshot states software_tpm: its TPM is swtpm");
  if (!ek_chain || ek_chain->status != Status::kPass)
    return Fail(name, kReasonHardwareTpmUnproven,
                "no EK certificate chained to a trusted EK CA (--ek-ca): which TPM signed is "
                "unknown");
  return Pass(name, makers + " (chained to --ek-ca)");
}

// trust.root: the AK is rooted by the auditor, not by the evidence: an enrolled AK (--ak-pub), or
// credential activation (ak.ek_binding) with an EK certificate chained to --ek-ca (ek.chain).
CheckResult CheckRoot(const Report& rep) {
  const std::string name = "trust.root";
  const auto status = [&](std::string_view c) {
    const auto* r = rep.Find(c);
    return r ? r->status : Status::kNotApplicable;
  };
  if (status("ak.enrolled") == Status::kPass)
    return Pass(name, "enrolled AK (--ak-pub) signed the quote");
  if (status("ak.ek_binding") == Status::kPass && status("ek.chain") == Status::kPass)
    return Pass(name, "credential activation bound the AK to an EK certificate chained to --ek-ca");
  if (status("ak.enrolled") == Status::kFail || status("ak.ek_binding") == Status::kFail ||
      status("ek.chain") == Status::kFail)
    return Fail(name, kReasonDependencyFailed, "an AK or EK check failed");
  return Fail(name, kReasonRootOfTrustMissing,
              std::string("nothing roots the AK the evidence carries: give an enrolled AK "
                          "(--ak-pub), or credential activation (") +
                  (status("ak.ek_binding") == Status::kPass ? "done" : "missing") +
                  ") with --ek-ca (" + (status("ek.chain") == Status::kPass ? "done" : "missing") +
                  ")");
}

// Every part of the TCG EK profile `p` lacks, "; "-separated (empty: none). `policies`: the
// certificate policy identifiers the auditor accepts (--ek-policy; empty: any, even none).
std::string EkProfileMissing(const EkProfile& p, const std::vector<std::string>& policies) {
  std::string missing;
  auto add = [&](std::string_view what) {
    missing += (missing.empty() ? "" : "; ") + std::string(what);
  };
  if (!p.ek_eku) add("no EK extended key usage 2.23.133.8.1");
  const std::string_view san = " in a directoryName of its subject alternative name";
  if (p.manufacturer.empty()) add("no TPM manufacturer 2.23.133.2.1" + std::string(san));
  if (p.model.empty()) add("no TPM model 2.23.133.2.2" + std::string(san));
  if (p.version.empty()) add("no TPM version 2.23.133.2.3" + std::string(san));
  if (p.ca) add("basic constraints make it a CA certificate");
  if (p.key_usage == UINT32_MAX)
    add("no key usage extension");
  else if (p.key_type == EVP_PKEY_RSA && !(p.key_usage & KU_KEY_ENCIPHERMENT))
    add("key usage of an RSA EK without keyEncipherment");
  else if (p.key_type == EVP_PKEY_EC && !(p.key_usage & KU_KEY_AGREEMENT))
    add("key usage of an ECC EK without keyAgreement");
  else if (p.key_type != EVP_PKEY_RSA && p.key_type != EVP_PKEY_EC)
    add("a key that is neither RSA nor ECC");
  if (!policies.empty() &&
      std::none_of(p.policies.begin(), p.policies.end(), [&](const std::string& o) {
        return std::find(policies.begin(), policies.end(), o) != policies.end();
      })) {
    std::string want, have;
    for (const auto& o : policies) want += (want.empty() ? "" : ", ") + o;
    for (const auto& o : p.policies) have += (have.empty() ? "" : ", ") + o;
    add("no certificate policy (2.5.29.32) of --ek-policy " + want + " (it has " +
        (have.empty() ? std::string("none") : have) + ")");
  }
  return missing;
}

CheckResult CheckEkChain(const v1::Evidence& ev, X509_STORE* store,
                         const std::vector<std::string>& policies) {
  const std::string name = "ek.chain";
  if (ev.ek_certificates().empty())
    return Fail(name, kReasonEkCertMissing, "the evidence carries no EK certificate");
  std::string ok;
  for (int i = 0; i < ev.ek_certificates_size(); ++i) {
    const auto& c = ev.ek_certificates(i);
    const std::string at = "ek_certificates[" + std::to_string(i) + "] (" + c.key_type() + ")";
    Bytes der;
    try {
      der = tpm::TrimDer(U8(c.der()));
    } catch (const AttestationError& e) {
      return Fail(name, kReasonEkCertMalformed, at + ": " + e.what());
    }
    const unsigned char* p = der.data();
    X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (!cert || p != der.data() + der.size())
      return Fail(name, kReasonEkCertMalformed, at + ": not one DER X.509 certificate");
    X509StoreCtxPtr ctx(X509_STORE_CTX_new());
    if (!ctx || X509_STORE_CTX_init(ctx.get(), store, cert.get(), nullptr) != 1)
      throw AttestationError("X509_STORE_CTX_init failed");
    if (X509_verify_cert(ctx.get()) != 1)
      return Fail(name, kReasonEkChainUntrusted,
                  at + " does not chain to a trusted EK CA: " +
                      X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get())));
    // The TCG EK profile: a certificate the CA issued for another purpose is not an EK's.
    const EkProfile prof = ReadEkProfile(cert.get());
    if (const std::string missing = EkProfileMissing(prof, policies); !missing.empty())
      return Fail(name, kReasonEkProfileInvalid, at + " is not a TCG EK certificate: " + missing);
    std::string pols;
    for (const auto& o : prof.policies) pols += (pols.empty() ? "" : " ") + o;
    ok += (ok.empty() ? "" : ", ") + at + " (policy " + (pols.empty() ? "none" : pols) + ")";
  }
  // The AK is not yet proven to live in this TPM (credential activation): say so.
  return Pass(name, ok + " chain to a trusted EK CA (AK-EK binding is a separate check)");
}

// The AK in the evidence is the one a credential activation challenge was answered for, by the
// TPM whose EK is certified in the evidence.
CheckResult CheckAkEkBinding(const v1::Evidence& ev, const std::optional<AkEkBinding>& b) {
  const std::string name = "ak.ek_binding";
  if (!b)
    return NotApplicable(name, kReasonNotRequested,
                         "no credential activation: the AK is not proven to be in the TPM of the "
                         "EK (use --node for a challenge, or --ak-pub for an enrolled AK)");
  if (Str(b->ak_name) != ev.ak().name())
    return Fail(name, kReasonAkNotBoundToEk,
                "the credential activation challenge was made for AK " + ToHex(b->ak_name) +
                    ", the evidence is signed by AK " + Hex(ev.ak().name()));
  if (b->returned_secret.size() != b->expected_secret.size() || b->expected_secret.empty() ||
      CRYPTO_memcmp(b->returned_secret.data(), b->expected_secret.data(),
                    b->expected_secret.size()) != 0)
    return Fail(name, kReasonAkNotBoundToEk,
                "the node did not recover the challenge secret: its AK " + Hex(ev.ak().name()) +
                    " is not resident in the TPM holding the EK" +
                    (b->error.empty() ? "" : " (" + b->error + ")"));
  EvpPkeyPtr ek;
  try {
    ek = tpm::PublicAreaToPkey(b->ek_public);
  } catch (const AttestationError& e) {
    return Fail(name, kReasonAkNotBoundToEk, std::string("EK public area: ") + e.what());
  }
  for (int i = 0; i < ev.ek_certificates_size(); ++i) {
    Bytes der;
    try {
      der = tpm::TrimDer(U8(ev.ek_certificates(i).der()));
    } catch (const AttestationError&) {
      continue;
    }
    const unsigned char* p = der.data();
    X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (cert && EVP_PKEY_eq(X509_get0_pubkey(cert.get()), ek.get()) == 1)
      return Pass(name, "credential activation: AK " + Hex(ev.ak().name()) +
                            " is resident with the EK of ek_certificates[" + std::to_string(i) +
                            "]");
  }
  return Fail(name, kReasonAkNotBoundToEk,
              "the EK the challenge was encrypted to has no certificate in the evidence");
}

// Boot PCRs 0-9 that the quote covers must be what the UEFI log replays to (zeros where the log
// has no event for a PCR). PCRs the log extends but the quote does not cover are named.
CheckResult CheckUefi(const v1::Evidence& ev, bool pcrs_ok) {
  const std::string name = "eventlog.uefi";
  // The boot chain is verified only when every boot PCR is quoted and replayed.
  std::string unquoted_boot;
  for (uint32_t i = 0; i <= 9; ++i)
    if (std::none_of(ev.quote().pcrs().begin(), ev.quote().pcrs().end(),
                     [&](const v1::PcrValue& p) { return p.index() == i; }))
      unquoted_boot += (unquoted_boot.empty() ? "" : ",") + std::to_string(i);
  if (!unquoted_boot.empty())
    return Fail(
        name, kReasonBootPcrNotQuoted,
        "boot PCR(s) " + unquoted_boot + " not in quote.pcrs: the boot chain is unverified");
  if (!ev.logs().has_uefi_tcg2())
    return Fail(name, kReasonBootLogMissing,
                "no logs.uefi_tcg2: the boot PCRs 0-9 cannot be replayed (a node without a UEFI "
                "log, e.g. swtpm, needs --waive boot-log)");
  std::map<uint32_t, Sha256Digest> replayed;
  size_t nevents = 0;
  std::string unknown;
  size_t n_unknown = 0;
  try {
    auto log = uefi::Parse(U8(ev.logs().uefi_tcg2()));
    nevents = log.events.size();
    for (const auto& e : log.events)
      if (uefi::EventTypeName(e.type).empty() && n_unknown++ < 8)
        unknown +=
            (unknown.empty() ? "" : "; ") + std::string("event at byte ") +
            std::to_string(e.offset) + " (PCR " + std::to_string(e.pcr) + "): type 0x" +
            ToHex(Bytes{static_cast<uint8_t>(e.type >> 24), static_cast<uint8_t>(e.type >> 16),
                        static_cast<uint8_t>(e.type >> 8), static_cast<uint8_t>(e.type)});
    replayed = uefi::Replay(log);
  } catch (const AttestationError& e) {
    return Fail(name, kReasonUefiLogMalformed, std::string("logs.uefi_tcg2: ") + e.what());
  }
  // The event type is not part of the digest: an unknown one replays fine and must still not
  // pass as understood.
  if (n_unknown)
    return Fail(name, kReasonUefiUnknownEvent,
                std::to_string(n_unknown) +
                    " event(s) of a type the TCG PC Client profile does "
                    "not define: " +
                    unknown);
  std::string mismatched, compared;
  std::set<uint32_t> quoted;
  for (const auto& p : ev.quote().pcrs()) {
    quoted.insert(p.index());
    if (p.index() > 9) continue;
    auto it = replayed.find(p.index());
    const Sha256Digest want = it != replayed.end() ? it->second : Sha256Digest{};
    std::string& list = Str(want) == p.sha256() ? compared : mismatched;
    list += (list.empty() ? "" : ",") + std::to_string(p.index());
  }
  if (!mismatched.empty())
    return Fail(name, kReasonUefiReplayMismatch,
                "logs.uefi_tcg2 (" + std::to_string(nevents) +
                    " events) does not replay to quoted PCR(s) " + mismatched);
  if (compared.empty())
    return Fail(name, kReasonUefiReplayMismatch, "the quote covers none of the boot PCRs 0-9");
  if (!pcrs_ok)
    return Fail(name, kReasonDependencyFailed,
                "logs.uefi_tcg2 matches quote.pcrs, but quote.pcrs are not the signed values");
  std::string unquoted;
  for (const auto& [pcr, v] : replayed)
    if (!quoted.count(pcr)) unquoted += (unquoted.empty() ? "" : ",") + std::to_string(pcr);
  return Pass(name, std::to_string(nevents) + " events replay to PCRs " + compared +
                        (unquoted.empty() ? "" : "; PCRs " + unquoted + " not quoted"));
}

// IMA: the runtime measurement list replays (SHA-256 bank, template data rebuilt) to the quoted
// PCR 10. The list grows while the node runs, so entries appended after the quote are allowed:
// the replay of some prefix (at least the boot_aggregate) must equal the quoted value.
// The active policy: the last kPolicyApplied event of the (authentic) CEL measures the bundle's
// SHA-256, which the snapshot must report, and which must be the expected one when given.
CheckResult CheckPolicy(const std::optional<v1::EnforcementSnapshot>& bound_snap,
                        const std::optional<CelFacts>& cel, const std::optional<Bytes>& expected) {
  const std::string name = "policy.bundle";
  if (!bound_snap) return Fail(name, kReasonDependencyFailed, "snapshot_bytes do not parse");
  const auto& snap = *bound_snap;
  const std::vector<ChainItem>* recs = cel ? &cel->recs : nullptr;
  const std::string& reported = snap.policy_bundle_sha256();
  if (expected && Str(*expected) != reported)
    return Fail(
        name, kReasonPolicyDigestMismatch,
        "snapshot policy_bundle_sha256 " + Hex(reported) + ", expected " + ToHex(*expected));
  if (!recs) return Fail(name, kReasonDependencyFailed, "logs.cel is not authentic");
  for (size_t i = recs->size(); i-- > 0;) {
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView((*recs)[i].content, e) != nullptr) continue;  // (cannot be)
    if (e.kind != cel::EventKind::kPolicyApplied) continue;
    const std::span<const uint8_t> applied(e.object_digest, 32);
    if (Str(applied) != reported)
      return Fail(name, kReasonPolicySnapshotMismatch,
                  "logs.cel record " + std::to_string(i) + " applied policy " + ToHex(applied) +
                      ", the snapshot reports " + Hex(reported));
    return Pass(name, "active policy \"" + std::string(e.name) + "\" " + ToHex(applied) +
                          (expected ? " (as expected)" : " (no expected digest given)"));
  }
  if (reported.empty() && !expected)
    return NotApplicable(name, kReasonNotRequested, "no policy applied, none expected");
  return Fail(name, kReasonPolicyNotMeasured, "no policy-applied event in logs.cel");
}

// A cgroup path at or below `root` (both absolute; trailing slashes ignored).
bool CgroupAtOrBelow(std::string_view path, std::string_view root) {
  while (path.size() > 1 && path.ends_with('/')) path.remove_suffix(1);
  while (root.size() > 1 && root.ends_with('/')) root.remove_suffix(1);
  if (root.empty() || !path.starts_with(root)) return false;
  return path.size() == root.size() || root == "/" || path[root.size()] == '/';
}

// Storage programs sovguardd attaches for all guests at once (machine cgroup): cgroup programs,
// tracepoints and BPF LSM hooks, filtered by the guests' cgroups.
bool IsStorageAttachment(const v1::ProgramAttachment& p) {
  const std::string_view t = p.attach_type();
  return t.starts_with("cgroup/") || t.starts_with("tracepoint") || t.starts_with("lsm") ||
         t.starts_with("bpf-lsm");
}

// Issues of one kind, listed up to a bound (the count is always exact).
struct Issues {
  size_t n = 0;
  std::string text;
  void Add(const std::string& s) {
    if (n++ < 8) text += (text.empty() ? "" : "; ") + s;
  }
  std::string Render() const { return std::to_string(n) + ": " + text + (n > 8 ? "; ..." : ""); }
};

// snapshot.coverage: the guests the node measured as running (guest events of the authentic
// CEL, replayed in order) are exactly the snapshot's guests, and every one is covered: sg_net,
// the program the CEL measured (same tag), on each of its taps, and a cgroup under every
// storage attachment point.
CheckResult CheckCoverage(const v1::EnforcementSnapshot* snap, const std::optional<CelFacts>& cel) {
  const std::string name = "snapshot.coverage";
  if (!snap)
    return Fail(name, kReasonDependencyFailed,
                "the snapshot is not bound to the signed quote (snapshot.digest, "
                "quote.qualifying_data)");
  if (!cel) return Fail(name, kReasonDependencyFailed, "logs.cel is not authentic");
  // Guests the node measured as running.
  Issues malformed;
  std::map<std::string, uint64_t, std::less<>> measured;  // uuid -> record of its "covered"
  for (size_t i : cel->guest_events) {
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView(cel->recs[i].content, e)) continue;  // (cannot be)
    const std::string uuid(e.name.substr(cel::kGuestEventPrefix.size()));
    const std::string at = "logs.cel record " + std::to_string(i);
    if (uuid.empty())
      malformed.Add(at + ": guest event without a uuid");
    else if (e.detail == "covered")
      measured[uuid] = i;
    else if (e.detail == "released")
      measured.erase(uuid);
    else
      malformed.Add(at + ": guest " + uuid + " event \"" + std::string(e.detail) +
                    "\" (expected covered or released)");
  }
  if (malformed.n)
    return Fail(name, kReasonGuestEventMalformed, "guest events " + malformed.Render());
  // The sg_net program the CEL measured last (its tag is what every tap must run).
  std::optional<std::string> net_tag;
  std::string net_at;
  if (cel->last_net_program != SIZE_MAX) {
    cel::SovguardEventView e;
    if (!cel::DecodeSovguardContentView(cel->recs[cel->last_net_program].content, e)) {
      net_at = "logs.cel record " + std::to_string(cel->last_net_program);
      const auto j = nlohmann::json::parse(e.detail, nullptr, false);
      if (j.is_object() && j.contains("tag") && j["tag"].is_string())
        net_tag = j["tag"].get<std::string>();
    }
  }
  Issues missing, unmeasured, uncovered, wrong_tag, no_tap;
  size_t no_nic = 0;  // guests without any interface: no network path to guard
  std::set<std::string, std::less<>> listed;
  for (int gi = 0; gi < snap->guests_size(); ++gi) {
    const auto& g = snap->guests(gi);
    const std::string who = "guest " + (g.name().empty() ? "#" + std::to_string(gi) : g.name()) +
                            " (" + (g.uuid().empty() ? "no uuid" : g.uuid()) + ")";
    if (g.uuid().empty() || !listed.insert(g.uuid()).second) {
      unmeasured.Add(who + (g.uuid().empty() ? ": no uuid" : ": listed twice"));
      continue;
    }
    if (!measured.count(g.uuid())) unmeasured.Add(who + ": no \"covered\" guest event in logs.cel");
    // The node lists every interface of a guest: none and no tap is a guest without a network
    // path; interfaces and no tap is a network path nothing guards.
    if (g.taps().empty()) {
      if (g.interfaces().empty())
        ++no_nic;
      else
        no_tap.Add(who + ": " + std::to_string(g.interfaces_size()) +
                   " interface(s) and no tap covered by " + std::string(kNetProgram));
    }
    for (const auto& tap : g.taps()) {
      const v1::ProgramAttachment* att = nullptr;
      for (const auto& p : snap->programs())
        if (p.attach_point() == tap && p.name() == kNetProgram && p.attach_type() == kNetAttachType)
          att = &p;
      if (!att)
        uncovered.Add(who + ": tap " + tap + " has no " + std::string(kNetProgram) + " " +
                      std::string(kNetAttachType) + " attachment");
      else if (!net_tag)
        wrong_tag.Add(who + ": tap " + tap + " runs " + std::string(kNetProgram) + " tag " +
                      att->tag() + ", but logs.cel measured no " + std::string(kNetProgram) +
                      " program attachment");
      else if (att->tag() != *net_tag)
        wrong_tag.Add(who + ": tap " + tap + " runs " + std::string(kNetProgram) + " tag " +
                      att->tag() + ", " + net_at + " measured tag " + *net_tag);
    }
    // Every interface the node lists (whatever its libvirt type) must be covered, and a covered
    // one must be one of the guest's taps (which the loop above checked for sg_net).
    for (const auto& nic : g.interfaces()) {
      const std::string what = "interface " + (nic.type().empty() ? "?" : nic.type()) + " " +
                               (nic.device().empty() ? "(no device)" : nic.device()) +
                               (nic.mac().empty() ? "" : " " + nic.mac());
      if (!nic.covered())
        uncovered.Add(who + ": " + what + " is not covered" +
                      (nic.mechanism().empty() ? "" : " (" + nic.mechanism() + ")"));
      else if (std::find(g.taps().begin(), g.taps().end(), nic.device()) == g.taps().end())
        uncovered.Add(who + ": " + what + " is reported covered but has no tap entry");
    }
    if (g.cgroup().empty()) {
      uncovered.Add(who + ": no cgroup (the storage paths cannot cover it)");
    } else {
      for (const auto& p : snap->programs())
        if (IsStorageAttachment(p) && !CgroupAtOrBelow(g.cgroup(), p.attach_point()))
          uncovered.Add(who + ": cgroup " + g.cgroup() + " is not below " + p.name() + " (" +
                        p.attach_type() + ") at " + p.attach_point());
    }
  }
  for (const auto& [uuid, recnum] : measured)
    if (!listed.count(uuid))
      missing.Add("guest " + uuid + " (covered at logs.cel record " + std::to_string(recnum) +
                  ", never released)");
  // One reason per check: the most basic disagreement first; the detail lists every kind.
  std::string detail;
  auto add = [&](const Issues& is, std::string_view what) {
    if (is.n) detail += (detail.empty() ? "" : " | ") + std::string(what) + " " + is.Render();
  };
  add(missing, "running per logs.cel but not in the snapshot");
  add(unmeasured, "in the snapshot but not measured as running");
  add(no_tap, "no tap covered");
  add(uncovered, "not covered");
  add(wrong_tag, "not the measured program");
  if (missing.n) return Fail(name, kReasonGuestMissingFromSnapshot, detail);
  if (unmeasured.n) return Fail(name, kReasonGuestNotMeasured, detail);
  if (no_tap.n) return Fail(name, kReasonNoTapCovered, detail);
  if (uncovered.n) return Fail(name, kReasonGuestNotCovered, detail);
  if (wrong_tag.n) return Fail(name, kReasonProgramTagMismatch, detail);
  if (snap->guests_size() == 0) return Pass(name, "no guests running (logs.cel and snapshot)");
  size_t taps = 0;
  for (const auto& g : snap->guests()) taps += static_cast<size_t>(g.taps_size());
  size_t storage = 0;
  for (const auto& p : snap->programs()) storage += IsStorageAttachment(p);
  // Nothing passes vacuously: guests run, so something must guard their storage and their taps.
  if (storage == 0)
    return Fail(name, kReasonStorageNotAttached,
                std::to_string(snap->guests_size()) +
                    " guest(s) run and the snapshot has no storage attachment (cgroup, "
                    "tracepoint or LSM program): their storage is unguarded");
  return Pass(name, std::to_string(snap->guests_size()) +
                        " guest(s) measured as running and all in the snapshot; " +
                        std::to_string(taps) + " tap(s) run " + std::string(kNetProgram) +
                        (net_tag ? " tag " + *net_tag : "") +
                        (no_nic ? "; " + std::to_string(no_nic) +
                                      " guest(s) without a network interface (no network path)"
                                : std::string()) +
                        "; every cgroup is below the " + std::to_string(storage) +
                        " storage attachment(s)");
}

// snapshot.mechanisms: every enforcement path has a reported mechanism; downgrades are named
// (and fail with require_strongest).
// What the quoted log says about each path since the daemon last started: the mechanism a
// kMechanismDowngraded event moved it to, with its record number. Paths without such an event
// run their strongest mechanism.
struct MeasuredDowngrade {
  std::string to;
  uint64_t recnum = 0;
};
std::string MeasuredDowngrades(const CelFacts& cel, std::map<std::string, MeasuredDowngrade>& out) {
  for (const size_t i : cel.downgrades) {
    cel::SovguardEventView v;
    nlohmann::json d;
    if (!cel::DecodeSovguardContentView(cel.recs[i].content, v))
      d = nlohmann::json::parse(v.detail, nullptr, /*allow_exceptions=*/false);
    if (!d.is_object() || !d.contains("path") || !d["path"].is_string() || !d.contains("to") ||
        !d["to"].is_string() || d["path"].get<std::string>() != v.name)
      return "logs.cel record " + std::to_string(i) +
             ": mechanism_downgraded detail is not {\"path\": name, \"to\": mechanism, ...}";
    out[d["path"].get<std::string>()] = {d["to"].get<std::string>(), i};
  }
  return {};
}

CheckResult CheckMechanisms(const v1::EnforcementSnapshot* snap, const std::optional<CelFacts>& cel,
                            bool require_strongest) {
  const std::string name = "snapshot.mechanisms";
  if (!snap)
    return Fail(name, kReasonDependencyFailed,
                "the snapshot is not bound to the signed quote (snapshot.digest, "
                "quote.qualifying_data)");
  if (!cel)
    return Fail(name, kReasonDependencyFailed,
                "logs.cel did not verify: the reported mechanisms cannot be compared with the "
                "measured ones");
  std::map<std::string, MeasuredDowngrade> measured;
  if (auto err = MeasuredDowngrades(*cel, measured); !err.empty())
    return Fail(name, kReasonMechanismLogMismatch, err);
  const std::string since =
      cel->last_start == SIZE_MAX
          ? std::string("in logs.cel")
          : "since the daemon started (logs.cel record " + std::to_string(cel->last_start) + ")";
  std::string missing, downgraded, strongest, contradicts, not_enforced;
  size_t n_downgraded = 0;
  for (const std::string_view path : kEnforcementPaths) {
    const v1::MechanismState* m = nullptr;
    for (const auto& x : snap->mechanisms())
      if (x.path() == path) m = &x;
    if (!m) {
      missing += (missing.empty() ? "" : ", ") + std::string(path);
      continue;
    }
    if (m->not_enforced())
      not_enforced += (not_enforced.empty() ? "" : "; ") + std::string(path) +
                      (m->reason().empty() ? "" : " (" + m->reason() + ")");
    // Reported as downgraded, or running something other than the strongest, or nothing.
    const bool is_downgraded = m->downgraded() || m->active() != m->strongest() ||
                               m->active().empty() || m->active() == "none";
    // The signed snapshot and the quoted log must tell the same story: a path the log measured
    // as downgraded cannot be reported at another mechanism, and a downgrade the node reports
    // must have been measured.
    const auto it = measured.find(std::string(path));
    if (it != measured.end() && (!is_downgraded || m->active() != it->second.to))
      contradicts += (contradicts.empty() ? "" : "; ") + std::string(path) + ": reported " +
                     (m->active().empty() ? "none" : m->active()) + ", logs.cel record " +
                     std::to_string(it->second.recnum) + " measured " + it->second.to;
    else if (it == measured.end() && is_downgraded)
      contradicts += (contradicts.empty() ? "" : "; ") + std::string(path) + ": reported " +
                     (m->active().empty() ? "none" : m->active()) +
                     " (downgraded), no downgrade measured " + since;
    if (is_downgraded) {
      ++n_downgraded;
      downgraded += (downgraded.empty() ? "" : "; ") + std::string(path) + ": " +
                    (m->active().empty() ? "none" : m->active()) + " instead of " +
                    (m->strongest().empty() ? "?" : m->strongest()) +
                    (m->reason().empty() ? "" : " (" + m->reason() + ")");
    } else {
      strongest += (strongest.empty() ? "" : ", ") + std::string(path) + "=" + m->active();
    }
  }
  if (!missing.empty())
    return Fail(name, kReasonMechanismNotReported,
                "the snapshot reports no mechanism for: " + missing);
  if (!not_enforced.empty())
    return Fail(name, kReasonPathNotEnforced,
                "the node reports path(s) guarding nothing: " + not_enforced);
  if (!contradicts.empty())
    return Fail(name, kReasonMechanismLogMismatch,
                "snapshot.mechanisms disagree with the quoted log: " + contradicts);
  if (n_downgraded && require_strongest)
    return Fail(
        name, kReasonMechanismDowngraded,
        std::to_string(n_downgraded) + " path(s) below the strongest mechanism: " + downgraded);
  return Pass(name,
              "strongest: " + (strongest.empty() ? std::string("none") : strongest) +
                  (n_downgraded ? std::string(kMechanismsDowngradedMarker) + downgraded : "") +
                  " (as measured " + since + ")");
}

// enforcement.continuity: since `since` (the record after the last passing verdict's log, or 0:
// this boot's whole log), nothing interrupted enforcement: no tamper finding (tamper:<kind>), no
// forced release, and neither a mechanism downgrade nor a daemon (re)start while guests ran
// (the running set replayed from the guest events of the whole log). Each is listed with its
// record.
CheckResult CheckContinuity(const std::optional<CelFacts>& cel, size_t since,
                            const std::string& since_text) {
  const std::string name = "enforcement.continuity";
  if (!cel) return Fail(name, kReasonDependencyFailed, "logs.cel is not authentic");
  enum Kind : uint8_t { kGuest, kState, kStart, kDowngrade };
  std::vector<std::pair<size_t, Kind>> events;
  for (size_t i : cel->guest_events) events.emplace_back(i, kGuest);
  for (size_t i : cel->state_events) events.emplace_back(i, kState);
  for (size_t i : cel->starts) events.emplace_back(i, kStart);
  for (size_t i : cel->all_downgrades) events.emplace_back(i, kDowngrade);
  std::sort(events.begin(), events.end());
  std::set<std::string, std::less<>> running;
  Issues found;
  for (const auto& [i, kind] : events) {
    const bool counted = i >= since;
    if (!counted && kind != kGuest) continue;
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView(cel->recs[i].content, e)) continue;  // (cannot be)
    const auto at = [i] { return "logs.cel record " + std::to_string(i); };
    switch (kind) {
      case kGuest: {
        const std::string uuid(e.name.substr(cel::kGuestEventPrefix.size()));
        if (e.detail == "covered") running.insert(uuid);
        if (e.detail == "released") running.erase(uuid);
        break;
      }
      case kState:
        if (counted && e.name.starts_with("tamper:"))
          found.Add(at() + ": tamper finding " + std::string(e.name.substr(7)) +
                    (e.detail.empty() ? "" : " (" + std::string(e.detail) + ")"));
        else if (counted && e.name == "enforcement" && e.detail.starts_with("released"))
          // `sovguardctl release`, plain or forced: the node stopped enforcing.
          found.Add(at() + ": " +
                    (e.detail.find("(forced)") != e.detail.npos ? "forced release" : "release") +
                    " (" + std::string(e.detail) + ")");
        break;
      case kStart:
        // "recovered": the last daemon died between logging a record and extending it (a crash).
        if (counted && i > 0 && !running.empty())
          found.Add(at() + ": daemon (re)started (" + std::string(e.detail) +
                    (e.detail == "recovered" ? ": the last daemon crashed mid-measurement" : "") +
                    ") while " + std::to_string(running.size()) + " guest(s) ran without a daemon");
        break;
      case kDowngrade:
        if (counted && !running.empty())
          found.Add(at() + ": mechanism downgraded for " + std::string(e.name) + " while " +
                    std::to_string(running.size()) + " guest(s) ran");
        break;
    }
  }
  if (found.n)
    return Fail(name, kReasonEnforcementInterrupted,
                "enforcement interrupted " + since_text + " " + found.Render());
  return Pass(
      name,
      "no tamper finding, release, crash, downgrade or restart under running guests " + since_text);
}

bool JurisdictionAllowed(const std::string& code, const std::vector<std::string>& allowed) {
  if (allowed.empty()) return policy::IsEea(code);
  for (const auto& a : allowed) {
    if (a == "EEA" ? policy::IsEea(code) : a == "EU" ? policy::IsEu(code) : a == code) return true;
  }
  return false;
}

// A reference manifest as CheckManifest uses it, made once per exact envelope and certifier key:
// its signature and strict parse checked, its file digests indexed, its suppliers listed.
// Auditors check many verdicts against one manifest (fleet mode, the same node again), and
// parsing and indexing it per verdict cost more than the rest of the verdict (bench_verify:
// 44 ms for a 5,000-component manifest, against 1 ms for the other checks).
struct PreparedManifest {
  std::string key_id;                   // the certifier key's
  std::optional<manifest::Manifest> m;  // when authentic, else:
  std::string error_reason, error;
  // File digest -> component: open addressing, linear probing, at most half full. A slot holds
  // the digest's first 8 bytes (SHA-256 output: uniform, a hash as it is) and the component;
  // a match is confirmed against the file's full digest. (A measured log's components are
  // looked up once each per verdict: 5,000 of them in the bench.)
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Slot {
    uint64_t tag = 0;
    uint32_t comp = kNone, file = 0;
  };
  std::vector<Slot> table;
  static uint64_t Tag(const uint8_t* d) {
    uint64_t t = 0;
    std::memcpy(&t, d, sizeof t);
    return t;
  }
  uint32_t Find(const uint8_t* digest) const {
    if (table.empty()) return kNone;
    const size_t mask = table.size() - 1;
    const uint64_t tag = Tag(digest);
    for (size_t at = tag & mask;; at = (at + 1) & mask) {
      const Slot& s = table[at];
      if (s.comp == kNone) return kNone;
      if (s.tag == tag &&
          std::memcmp(m->components[s.comp].files[s.file].sha256.data(), digest, 32) == 0)
        return s.comp;
    }
  }
  void Insert(uint32_t comp, uint32_t file) {  // the first component naming a digest wins
    const uint8_t* digest = m->components[comp].files[file].sha256.data();
    if (Find(digest) != kNone) return;
    const size_t mask = table.size() - 1;
    size_t at = Tag(digest) & mask;
    while (table[at].comp != kNone) at = (at + 1) & mask;
    table[at] = {Tag(digest), comp, file};
  }
  std::vector<uint32_t> supplier_of;  // component -> supplier, suppliers in name order:
  std::vector<std::string> suppliers, jurisdictions;  // "name (CC)", CC
};

PreparedManifest PrepareManifest(const std::string& envelope, EVP_PKEY* key) {
  PreparedManifest p;
  p.key_id = manifest::KeyId(key);
  try {
    p.m = manifest::VerifyEnvelope(envelope, key);
  } catch (const manifest::ManifestError& e) {
    p.error_reason = e.reason();
    p.error = e.what();
    return p;
  }
  std::map<std::string, std::string> suppliers;  // "name (CC)" -> CC
  for (const auto& c : p.m->components)
    suppliers.emplace(c.supplier + " (" + c.supplier_jurisdiction + ")", c.supplier_jurisdiction);
  for (const auto& [s, cc] : suppliers) {
    p.suppliers.push_back(s);
    p.jurisdictions.push_back(cc);
  }
  size_t files = 0;
  for (const auto& c : p.m->components) files += c.files.size();
  p.table.resize(std::bit_ceil(2 * files + 2));
  for (uint32_t i = 0; i < p.m->components.size(); ++i) {
    const auto& c = p.m->components[i];
    const std::string s = c.supplier + " (" + c.supplier_jurisdiction + ")";
    p.supplier_of.push_back(static_cast<uint32_t>(
        std::lower_bound(p.suppliers.begin(), p.suppliers.end(), s) - p.suppliers.begin()));
    for (uint32_t f = 0; f < c.files.size(); ++f) p.Insert(i, f);
  }
  return p;
}

// The last few prepared manifests, by exact envelope and key text (thread-safe: fleet mode).
// The entry keeps its envelope object alive, so the same object passed again is the same bytes
// and is not compared (2.8 MB for the bench's 5,000 components: 0.06 ms a verdict).
// Failed verifications of the envelope are kept too (the same bytes fail the same way); a key
// that does not parse is an input error and is not kept.
std::shared_ptr<const PreparedManifest> PreparedManifestFor(
    const std::shared_ptr<const std::string>& envelope, const std::string& key_pem) {
  struct Entry {
    std::shared_ptr<const std::string> envelope;
    std::string key_pem;
    std::shared_ptr<const PreparedManifest> prepared;
  };
  static std::mutex mu;
  static std::deque<Entry> entries;  // newest first
  constexpr size_t kMaxEntries = 8;
  {
    std::lock_guard lock(mu);
    for (const auto& e : entries)
      if ((e.envelope == envelope || *e.envelope == *envelope) && e.key_pem == key_pem)
        return e.prepared;
  }
  auto key = [&] {
    try {
      return manifest::PublicKeyFromPem(key_pem);
    } catch (const manifest::ManifestError& e) {
      throw InputError(std::string("--manifest-key: ") + e.what());
    }
  }();
  auto prepared = std::make_shared<const PreparedManifest>(PrepareManifest(*envelope, key.get()));
  std::lock_guard lock(mu);
  entries.push_front({envelope, key_pem, prepared});
  if (entries.size() > kMaxEntries) entries.pop_back();
  return prepared;
}

// The SHA-256 file digest an IMA entry measured (first field d-ng "sha256:" NUL digest, or
// d-ngv2 "ima:sha256:" NUL digest), or nullopt (another algorithm, the legacy "ima" template).
std::optional<Sha256Digest> ImaFileSha256(const ima::Entry& e) {
  const Bytes& d = e.template_data;
  if (e.template_name == "ima" || d.size() < 4) return std::nullopt;
  const uint32_t len = static_cast<uint32_t>(d[0]) | static_cast<uint32_t>(d[1]) << 8 |
                       static_cast<uint32_t>(d[2]) << 16 | static_cast<uint32_t>(d[3]) << 24;
  if (len > d.size() - 4) return std::nullopt;
  const std::string_view field(reinterpret_cast<const char*>(d.data() + 4), len);
  const size_t nul = field.find('\0');
  if (nul == std::string_view::npos || !field.substr(0, nul).ends_with("sha256:") ||
      field.size() - nul - 1 != 32)
    return std::nullopt;
  Sha256Digest out;
  std::memcpy(out.data(), field.data() + nul + 1, 32);
  return out;
}

// manifest.ima: every file IMA measured (the list eventlog.ima verified) is a file the manifest
// approves (by SHA-256). boot_aggregate, IMA's first entry, is the boot PCRs' digest, not a file.
CheckResult CheckManifestIma(const v1::Evidence& ev, const PreparedManifest& pm, bool ima_ok) {
  const std::string name = "manifest.ima";
  if (!ev.logs().has_ima_ascii())
    return NotApplicable(name, kReasonNotRequested,
                         "no logs.ima_ascii (eventlog.ima says whether one was needed)");
  if (!ima_ok) return Fail(name, kReasonDependencyFailed, "eventlog.ima did not verify");
  ima::Log log;
  try {
    log = ima::Parse(U8(ev.logs().ima_ascii()));
  } catch (const AttestationError& e) {
    return Fail(name, kReasonDependencyFailed, e.what());  // (cannot be: eventlog.ima passed)
  }
  Issues bad;
  size_t files = 0;
  for (size_t i = 0; i < log.entries.size(); ++i) {
    const auto& e = log.entries[i];
    if (i == 0 && e.file == "boot_aggregate") continue;
    ++files;
    const std::string at = (log.binary ? "byte " : "line ") + std::to_string(e.line) + " " + e.file;
    if (e.violation) {
      bad.Add(at + ": measurement violation (file changed while open)");
      continue;
    }
    const auto digest = ImaFileSha256(e);
    if (!digest)
      bad.Add(at + ": " + e.template_name + " entry without a SHA-256 file digest");
    else if (pm.Find(digest->data()) == PreparedManifest::kNone)
      bad.Add(at + " sha256 " + ToHex(*digest) + " is in no manifest component");
  }
  if (bad.n)
    return Fail(name, kReasonImaUnapprovedFile,
                "files IMA measured that the manifest does not approve " + bad.Render());
  return Pass(name, std::to_string(files) + " file(s) IMA measured, all in the manifest");
}

// manifest.signature, manifest.components, manifest.jurisdiction, manifest.boot, manifest.ima.
// With `observed`: the manifest's identity and every measured component (Observations).
void CheckManifest(const v1::Evidence& ev, const std::optional<CelFacts>& cel, bool pcrs_ok,
                   bool ima_ok, const Options& opts, std::vector<CheckResult>& out,
                   Observations* observed = nullptr) {
  const std::vector<ChainItem>* recs = cel ? &cel->recs : nullptr;
  const char* names[] = {"manifest.signature", "manifest.components", "manifest.jurisdiction",
                         "manifest.boot", "manifest.ima"};
  if (!opts.manifest_envelope) {
    // Approved software is a requirement: no manifest is a failure (waivable by name).
    for (const char* n : names)
      out.push_back(Fail(n, kReasonManifestMissing,
                         "no reference manifest given (--manifest): what the node runs is not "
                         "compared with approved software"));
    return;
  }
  if (!opts.manifest_key_pem)
    throw InputError("a reference manifest needs the certifier's public key (--manifest-key)");
  for (const auto& a : opts.allowed_jurisdictions)
    if (a != "EU" && a != "EEA" && !policy::IsIsoCountry(a))
      throw InputError("allowed jurisdiction \"" + a + "\" is not an ISO 3166-1 code, EU or EEA");
  const auto prepared = PreparedManifestFor(opts.manifest_envelope, *opts.manifest_key_pem);
  if (!prepared->m) {
    out.push_back(Fail(names[0], prepared->error_reason, prepared->error));
    for (int i = 1; i < 5; ++i)
      out.push_back(Fail(names[i], kReasonDependencyFailed, "the manifest is not authentic"));
    return;
  }
  const manifest::Manifest& m = *prepared->m;
  if (observed) {
    observed->manifest_authentic = true;
    observed->manifest_id = m.id;
    observed->manifest_issuer = m.issuer;
  }
  out.push_back(Pass(
      names[0], "manifest \"" + m.id + "\" by " + m.issuer + ", signed by " + prepared->key_id));
  const std::string allowed_text = [&] {
    if (opts.allowed_jurisdictions.empty()) return std::string("EU/EEA");
    std::string t;
    for (const auto& a : opts.allowed_jurisdictions) t += (t.empty() ? "" : ",") + a;
    return t;
  }();
  // Per supplier: allowed here (the allowed set is this verdict's), measured in this log.
  std::vector<char> supplier_allowed, supplier_seen(prepared->suppliers.size(), 0);
  for (const auto& cc : prepared->jurisdictions)
    supplier_allowed.push_back(JurisdictionAllowed(cc, opts.allowed_jurisdictions));
  // Boot PCR values the manifest accepts (only PCRs it names; the quote must cover them).
  std::string boot_bad, boot_ok;
  if (!m.boot_pcrs.empty() && !pcrs_ok) {
    boot_bad = "quote.pcrs are not the signed values";
  } else {
    for (const auto& [pcr, accepted] : m.boot_pcrs) {
      const v1::PcrValue* q = nullptr;
      for (const auto& p : ev.quote().pcrs())
        if (p.index() == pcr) q = &p;
      const bool ok =
          q && std::any_of(accepted.begin(), accepted.end(),
                           [&](const Sha256Digest& d) { return Str(d) == q->sha256(); });
      std::string& list = ok ? boot_ok : boot_bad;
      list += (list.empty() ? "PCR " : ", PCR ") + std::to_string(pcr) +
              (q ? (ok ? "" : " = " + Hex(q->sha256()) + " not accepted") : " not quoted");
    }
  }
  const auto ima_check = [&] { return CheckManifestIma(ev, *prepared, ima_ok); };
  if (!recs) {
    out.push_back(Fail(names[1], kReasonDependencyFailed, "logs.cel is not authentic"));
    out.push_back(Fail(names[2], kReasonDependencyFailed, "logs.cel is not authentic"));
    out.push_back(Fail(names[3], kReasonDependencyFailed, "logs.cel is not authentic"));
    out.push_back(ima_check());
    return;
  }
  size_t n_components = 0, n_missing = 0, n_foreign = 0;
  std::string missing, foreign;
  const auto at = [](size_t i) { return "logs.cel record " + std::to_string(i); };
  for (const size_t i : cel->cmdlines) {
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView((*recs)[i].content, e)) continue;  // (cannot be)
    if (std::find(m.kernel_cmdlines.begin(), m.kernel_cmdlines.end(), e.detail) ==
        m.kernel_cmdlines.end())
      boot_bad += (boot_bad.empty() ? "" : ", ") + at(i) + ": kernel command line \"" +
                  std::string(e.detail) + "\" not accepted";
    else
      boot_ok += (boot_ok.empty() ? "" : ", ") + std::string("kernel command line");
  }
  for (const auto& [i, object_digest] : cel->components) {
    ++n_components;
    const uint32_t comp = prepared->Find(object_digest);
    if (observed) {
      cel::SovguardEventView e;
      if (!cel::DecodeSovguardContentView((*recs)[i].content, e)) {
        Observations::Component oc{i, std::string(cel::EventKindName(e.kind)), std::string(e.name)};
        if (comp != PreparedManifest::kNone) {
          const auto& c = m.components[comp];
          oc.in_manifest = true;
          oc.name = c.name;
          oc.version = c.version;
          oc.supplier = c.supplier;
          oc.jurisdiction = c.supplier_jurisdiction;
          oc.allowed = supplier_allowed[prepared->supplier_of[comp]];
        }
        observed->components.push_back(std::move(oc));
      }
    }
    if (comp == PreparedManifest::kNone || supplier_allowed[prepared->supplier_of[comp]]) {
      if (comp != PreparedManifest::kNone) {
        supplier_seen[prepared->supplier_of[comp]] = 1;
        continue;
      }
      if (n_missing++ >= 8) continue;
    } else {
      supplier_seen[prepared->supplier_of[comp]] = 1;
      if (n_foreign++ >= 8) continue;
    }
    // Named in a failure: the record's event, decoded again.
    cel::SovguardEventView e;
    if (cel::DecodeSovguardContentView((*recs)[i].content, e)) continue;  // (cannot be)
    if (comp == PreparedManifest::kNone) {
      missing += (missing.empty() ? "" : "; ") + at(i) + " " +
                 std::string(cel::EventKindName(e.kind)) + " " + std::string(e.name) + " sha256 " +
                 ToHex(std::span(object_digest, 32)) +
                 (e.detail.empty() ? "" : " (" + std::string(e.detail) + ")");
    } else {
      const auto& c = m.components[comp];
      foreign += (foreign.empty() ? "" : "; ") + at(i) + " " + std::string(e.name) +
                 ": component " + c.name + " " + c.version + " from " + c.supplier + ", " +
                 c.supplier_jurisdiction;
    }
  }
  if (m.components.empty())
    out.push_back(
        Fail(names[1], kReasonManifestEmpty,
             "manifest \"" + m.id + "\" approves no component: it cannot approve a node"));
  else if (n_components == 0)
    out.push_back(Fail(names[1], kReasonNoComponentMeasured,
                       "logs.cel measures no component (self, QEMU, libvirtd, drivers, kernel, "
                       "BPF objects): nothing to compare with the manifest"));
  else if (n_missing)
    out.push_back(Fail(names[1], kReasonComponentNotInManifest,
                       std::to_string(n_missing) + " of " + std::to_string(n_components) +
                           " measured components not in the manifest: " + missing));
  else
    out.push_back(
        Pass(names[1], std::to_string(n_components) + " measured components, all in the manifest"));
  if (n_missing || n_components == 0 || m.components.empty())
    out.push_back(Fail(names[2], kReasonDependencyFailed,
                       "manifest.components did not pass: no supplier to check"));
  else if (n_foreign)
    out.push_back(Fail(names[2], kReasonSupplierJurisdiction,
                       std::to_string(n_foreign) + " component(s) from suppliers outside " +
                           allowed_text + ": " + foreign));
  else {
    std::string list;
    for (size_t i = 0; i < prepared->suppliers.size(); ++i)
      if (supplier_seen[i]) list += (list.empty() ? "" : ", ") + prepared->suppliers[i];
    out.push_back(Pass(names[2], "every supplier in " + allowed_text + ": " + list));
  }
  if (!boot_bad.empty())
    out.push_back(Fail(names[3], kReasonBootValueNotAccepted, boot_bad));
  else if (boot_ok.empty())
    out.push_back(NotApplicable(names[3], kReasonNotRequested,
                                "the manifest lists no boot values and none were measured"));
  else
    out.push_back(Pass(names[3], "accepted: " + boot_ok));
  out.push_back(ima_check());
}

// Counters of the last passing verdict for this AK must be strictly behind the new quote's.
CheckResult CheckMonotonic(const nlohmann::json& state, const std::string& key,
                           const TPMS_CLOCK_INFO& now) {
  const std::string name = "quote.clock_monotonic";
  const std::string cur = "clock " + std::to_string(now.clock) + " ms, reset " +
                          std::to_string(now.resetCount) + ", restart " +
                          std::to_string(now.restartCount);
  if (!state.contains("aks") || !state["aks"].contains(key))
    return Pass(name, "first verdict for AK " + key + ": " + cur);
  const auto& last = state["aks"][key];
  const uint64_t clock = last.at("clock_ms").get<uint64_t>();
  const uint32_t reset = last.at("reset_count").get<uint32_t>();
  const uint32_t restart = last.at("restart_count").get<uint32_t>();
  const std::string was = "last verdict: clock " + std::to_string(clock) + " ms, reset " +
                          std::to_string(reset) + ", restart " + std::to_string(restart);
  if (now.resetCount < reset || (now.resetCount == reset && now.restartCount < restart))
    return Fail(name, kReasonCounterRollback, cur + " is behind the " + was);
  if (now.resetCount == reset && now.restartCount == restart && now.clock <= clock)
    return Fail(name, kReasonEvidenceReplayed,
                cur + " does not advance past the " + was + ": old evidence replayed");
  return Pass(name, cur + " (" + was + ")");
}

nlohmann::json LoadState(const std::filesystem::path& path) {
  Bytes data;
  if (!ReadFileIfExists(path, data)) return nlohmann::json::object();
  try {
    auto j = nlohmann::json::parse(data.begin(), data.end());
    if (!j.is_object() || (j.contains("aks") && !j["aks"].is_object()))
      throw InputError("not a verifier state object");
    if (j.contains("aks"))
      for (const auto& [k, v] : j["aks"].items()) {
        (void)v.at("clock_ms").get<uint64_t>();
        (void)v.at("reset_count").get<uint32_t>();
        (void)v.at("restart_count").get<uint32_t>();
        if (v.contains("cel_records")) (void)v.at("cel_records").get<uint64_t>();
      }
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw InputError("state file " + path.string() + ": " + e.what());
  } catch (const InputError& e) {
    throw InputError("state file " + path.string() + ": " + e.what());
  }
}

}  // namespace

std::string_view StatusName(Status s) {
  switch (s) {
    case Status::kPass:
      return "pass";
    case Status::kFail:
      return "fail";
    case Status::kNotApplicable:
      return "not_applicable";
    case Status::kWaived:
      return "waived";
  }
  return "fail";
}

namespace {
// Certification clauses (one table: the JSON report's "clauses" and the README's mapping).
constexpr std::string_view kSnc192 = "SecNumCloud 3.2 §19.2";
constexpr std::string_view kSnc126 = "SecNumCloud 3.2 §12.6-12.8";
constexpr std::string_view kC5Pss12 = "BSI C5:2020 PSS-12";
constexpr std::string_view kC5Ops = "BSI C5:2020 OPS-10..16";
constexpr std::string_view kGaiaX = "Gaia-X Policy Rules P5.1.1-P5.1.2";
constexpr std::string_view kSov5 = "EU Cloud Sovereignty Framework SOV-5";
// Evidence attributable to this node's hardware, fresh: what makes the location claims count.
constexpr std::string_view kIdentity[] = {kSnc192, kC5Pss12, kGaiaX};
// Where data is processed: the enforcement state the node signs.
constexpr std::string_view kLocation[] = {kSnc192, kC5Pss12, kGaiaX};
// The enforcement event log (tamper findings, releases, restarts) and the location it proves.
constexpr std::string_view kEnforcementLog[] = {kSnc192, kSnc126, kC5Pss12, kC5Ops, kGaiaX};
// Which software booted and runs (UEFI and IMA measurement logs, the manifest), and its
// suppliers: supply chain, not customer-data location (Gaia-X P5.1) nor event logging.
constexpr std::string_view kSupply[] = {kSov5};
struct CheckClauses {
  std::string_view check;
  std::span<const std::string_view> clauses;
};
constexpr CheckClauses kClauses[] = {
    {"quote.structure", kIdentity},
    {"ak.consistency", kIdentity},
    {"ak.enrolled", kIdentity},
    {"ak.ek_binding", kIdentity},
    {"quote.signature", kIdentity},
    {"nonce", kIdentity},
    {"snapshot.digest", kLocation},
    {"snapshot.copy", kLocation},
    {"quote.qualifying_data", kIdentity},
    {"quote.clock", kIdentity},
    {"quote.pcr_digest", kIdentity},
    {"eventlog.cel.decode", kEnforcementLog},
    {"eventlog.cel.events", kEnforcementLog},
    {"eventlog.cel.replay", kEnforcementLog},
    {"policy.bundle", kLocation},
    {"snapshot.coverage", kLocation},
    {"snapshot.mechanisms", kLocation},
    {"enforcement.continuity", kEnforcementLog},
    {"eventlog.uefi", kSupply},
    {"eventlog.ima", kSupply},
    {"manifest.signature", kSupply},
    {"manifest.components", kSupply},
    {"manifest.jurisdiction", kSupply},
    {"manifest.boot", kSupply},
    {"manifest.ima", kSupply},
    {"quote.clock_monotonic", kIdentity},
    {"ek.chain", kIdentity},
    {"tpm.hardware", kIdentity},
    {"trust.root", kIdentity},
};

constexpr std::string_view kWaiveBootLog[] = {kReasonBootLogMissing, kReasonBootPcrNotQuoted};
constexpr std::string_view kWaiveIma[] = {kReasonImaLogMissing, kReasonImaUnapprovedFile};
constexpr std::string_view kWaiveManifest[] = {kReasonManifestMissing};
constexpr std::string_view kWaiveRoot[] = {kReasonRootOfTrustMissing};
constexpr std::string_view kWaiveSoftwareTpm[] = {kReasonSoftwareTpm, kReasonHardwareTpmUnproven};
constexpr std::string_view kWaiveInterruptions[] = {kReasonEnforcementInterrupted};
}  // namespace

std::span<const std::string_view> WaivedReasons(std::string_view waiver) {
  if (waiver == "boot-log") return kWaiveBootLog;
  if (waiver == "ima") return kWaiveIma;
  if (waiver == "manifest") return kWaiveManifest;
  if (waiver == "root-of-trust") return kWaiveRoot;
  if (waiver == "software-tpm") return kWaiveSoftwareTpm;
  if (waiver == "interruptions") return kWaiveInterruptions;
  return {};
}

std::span<const std::string_view> ClausesFor(std::string_view check) {
  for (const auto& c : kClauses)
    if (c.check == check) return c.clauses;
  return {};
}

std::vector<std::string_view> AllCheckNames() {
  std::vector<std::string_view> out;
  for (const auto& c : kClauses) out.push_back(c.check);
  return out;
}

bool Report::passed() const {
  return !checks.empty() && std::none_of(checks.begin(), checks.end(), [](const CheckResult& c) {
    return c.status == Status::kFail;
  });
}

const CheckResult* Report::Find(std::string_view name) const {
  for (const auto& c : checks)
    if (c.name == name) return &c;
  return nullptr;
}

namespace {

// What ParseEvidence refuses before parsing; true for the JSON rendering.
bool EvidenceIsJson(std::span<const uint8_t> data) {
  if (data.empty()) throw InputError("evidence is empty");
  // Far above any real evidence (a 10,000-entry CEL is ~1.5 MB); also keeps the int cast safe.
  if (data.size() > (256u << 20))
    throw InputError("evidence is " + std::to_string(data.size()) + " bytes (limit 256 MiB)");
  auto first = std::find_if(data.begin(), data.end(), [](uint8_t c) {
    return c != ' ' && c != '\n' && c != '\r' && c != '\t';
  });
  return first != data.end() && *first == '{';
}

// Structural minimum of format version 1: without these there is nothing to verify.
void CheckEvidenceShape(const v1::Evidence& ev) {
  if (ev.format_version() != evidence::kFormatVersion)
    throw InputError("evidence format_version is " + std::to_string(ev.format_version()) +
                     " (this verifier reads version " + std::to_string(evidence::kFormatVersion) +
                     ")");
  if (!ev.has_quote() || ev.quote().attest().empty() || ev.quote().signature().empty())
    throw InputError("evidence has no quote (quote.attest / quote.signature missing)");
  if (!ev.has_ak()) throw InputError("evidence has no AK (field ak missing)");
  if (!ev.has_logs()) throw InputError("evidence has no event logs (field logs missing)");
}

// Calls f(number, wire_type, tag_at, value_at, end) for every field of the serialized message
// data[begin, end) (value_at: after a length prefix). False for anything but well-formed plain
// fields (groups, a field running past the end, tag 0) or when f returns false.
template <typename F>
bool ForEachField(std::span<const uint8_t> data, size_t begin, size_t end, F&& f) {
  google::protobuf::io::CodedInputStream in(data.data() + begin, static_cast<int>(end - begin));
  for (;;) {
    const size_t tag_at = begin + static_cast<size_t>(in.CurrentPosition());
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.ConsumedEntireMessage();
    size_t value_at = begin + static_cast<size_t>(in.CurrentPosition());
    uint64_t v = 0;
    uint32_t n = 0;
    switch (tag & 7) {
      case 0:
        if (!in.ReadVarint64(&v)) return false;
        break;
      case 1:
        if (!in.Skip(8)) return false;
        break;
      case 2:
        if (!in.ReadVarint32(&n) || n > INT32_MAX) return false;
        value_at = begin + static_cast<size_t>(in.CurrentPosition());
        if (!in.Skip(static_cast<int>(n))) return false;
        break;
      case 5:
        if (!in.Skip(4)) return false;
        break;
      default:
        return false;
    }
    if (!f(tag >> 3, tag & 7, tag_at, value_at, begin + static_cast<size_t>(in.CurrentPosition())))
      return false;
  }
}

// Binary Evidence with logs.cel left in `data`: every other field is merged into `ev` as
// protobuf parses it (parsing serialized fields one run after another is merging them), and
// the last logs.cel (as protobuf keeps the last) is returned as a view. False when the bytes
// are not plain well-formed fields: the caller then parses them whole, which says why.
bool ParseKeepingCel(std::span<const uint8_t> data, v1::Evidence& ev,
                     std::optional<std::span<const uint8_t>>& cel) {
  constexpr uint32_t kLengthDelimited = 2;
  auto merge = [&data](google::protobuf::MessageLite& m, size_t from, size_t to) {
    if (from == to) return true;
    google::protobuf::io::CodedInputStream in(data.data() + from, static_cast<int>(to - from));
    return m.MergeFromCodedStream(&in) && in.ConsumedEntireMessage();
  };
  size_t run = 0;  // start of the fields not merged yet
  const bool ok = ForEachField(
      data, 0, data.size(),
      [&](uint32_t number, uint32_t wire, size_t tag_at, size_t value_at, size_t end) {
        if (number != v1::Evidence::kLogsFieldNumber || wire != kLengthDelimited) return true;
        if (!merge(ev, run, tag_at)) return false;
        run = end;
        v1::EventLogs& logs = *ev.mutable_logs();
        size_t inner = value_at;
        return ForEachField(data, value_at, end,
                            [&](uint32_t n2, uint32_t w2, size_t t2, size_t v2, size_t e2) {
                              if (n2 != v1::EventLogs::kCelFieldNumber || w2 != kLengthDelimited)
                                return true;
                              if (!merge(logs, inner, t2)) return false;
                              inner = e2;
                              cel = data.subspan(v2, e2 - v2);
                              return true;
                            }) &&
               merge(logs, inner, end);
      });
  return ok && merge(ev, run, data.size());
}

}  // namespace

std::span<const uint8_t> EvidenceView::Cel() const {
  return cel ? *cel : U8(message.logs().cel());
}

v1::Evidence ParseEvidence(std::span<const uint8_t> data) {
  v1::Evidence ev;
  if (EvidenceIsJson(data)) {
    try {
      evidence::FromJson(Str(data), ev);
    } catch (const AttestationError& e) {
      throw InputError(e.what());
    }
  } else if (!ev.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
    throw InputError("evidence is neither JSON nor a binary Evidence protobuf (truncated?)");
  }
  CheckEvidenceShape(ev);
  return ev;
}

EvidenceView ParseEvidenceView(std::span<const uint8_t> data) {
  EvidenceView view;
  if (!EvidenceIsJson(data) && ParseKeepingCel(data, view.message, view.cel)) {
    CheckEvidenceShape(view.message);
    return view;
  }
  view.cel.reset();
  view.message = ParseEvidence(data);
  return view;
}

AkChallenge MakeAkChallenge(std::span<const uint8_t> ek_public, std::span<const uint8_t> ak_name) {
  AkChallenge c;
  c.secret.resize(32);
  if (RAND_bytes(c.secret.data(), static_cast<int>(c.secret.size())) != 1)
    throw AttestationError("OpenSSL: RAND_bytes failed");
  auto made = tpm::MakeCredential(ek_public, ak_name, c.secret);
  c.credential_blob = std::move(made.credential_blob);
  c.encrypted_secret = std::move(made.encrypted_secret);
  return c;
}

namespace {
bool HasPrefix(std::span<const uint8_t> data, std::span<const uint8_t> prefix) {
  return prefix.size() <= data.size() &&
         (prefix.empty() || std::memcmp(data.data(), prefix.data(), prefix.size()) == 0);
}
}  // namespace

ReplayCache::Hit ReplayCache::Lookup(const std::string& key, std::span<const uint8_t> cel) {
  std::lock_guard lock(mu_);
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    if (it->key != key) continue;
    if (!HasPrefix(cel, it->cel)) break;
    lru_.splice(lru_.begin(), lru_, it);
    ++hits_;
    const Entry& e = lru_.front();
    return {e.cel.size(), e.records, e.pcr, e.version};
  }
  ++misses_;
  return {};
}

void ReplayCache::Store(const std::string& key, std::span<const uint8_t> cel, size_t records,
                        const Sha256Digest& pcr) {
  Store(key, cel, records, pcr, Hit{});
}

void ReplayCache::Store(const std::string& key, std::span<const uint8_t> cel, size_t records,
                        const Sha256Digest& pcr, const Hit& from) {
  if (cel.size() > max_bytes_) return;
  std::lock_guard lock(mu_);
  auto it = std::find_if(lru_.begin(), lru_.end(), [&](const Entry& e) { return e.key == key; });
  if (it == lru_.end()) {
    lru_.push_front(Entry{key, {}, 0, {}});
  } else {
    lru_.splice(lru_.begin(), lru_, it);
  }
  Entry& e = lru_.front();
  bytes_ -= e.cel.size();
  // The common case extends what is remembered: append the new records only. The entry the
  // replay started from, unchanged since (same version), was compared by Lookup already.
  const bool known_prefix = from.version != 0 && from.version == e.version &&
                            from.bytes == e.cel.size() && cel.size() >= e.cel.size();
  if (known_prefix || HasPrefix(cel, e.cel))
    e.cel.insert(e.cel.end(), cel.begin() + static_cast<std::ptrdiff_t>(e.cel.size()), cel.end());
  else
    e.cel.assign(cel.begin(), cel.end());
  e.records = records;
  e.pcr = pcr;
  e.version = next_version_++;
  bytes_ += e.cel.size();
  while (bytes_ > max_bytes_ && lru_.size() > 1) {
    bytes_ -= lru_.back().cel.size();
    lru_.pop_back();
  }
}

ReplayCache::Stats ReplayCache::stats() const {
  std::lock_guard lock(mu_);
  return {hits_, misses_, lru_.size(), bytes_};
}

namespace {
Report VerifyWithCel(const v1::Evidence& ev, std::span<const uint8_t> cel, const Options& opts);
}  // namespace

Report Verify(const v1::Evidence& ev, const Options& opts) {
  return VerifyWithCel(ev, U8(ev.logs().cel()), opts);
}

Report Verify(const EvidenceView& ev, const Options& opts) {
  return VerifyWithCel(ev.message, ev.Cel(), opts);
}

namespace {

// Report::observed from what the checks authenticated (see Observations): the enforcement events
// of an authentic log, the guests of a bound snapshot.
void Observe(const std::optional<CelFacts>& cel, const v1::EnforcementSnapshot* bound_snap,
             Observations& o) {
  using K = Observations::Kind;
  if (cel) {
    o.cel_authentic = true;
    o.cel_records = cel->recs.size();
    for (size_t i = 0; i < cel->recs.size(); ++i) {
      cel::SovguardEventView e;
      if (cel::DecodeSovguardContentView(cel->recs[i].content, e)) continue;  // (cannot be)
      std::optional<K> kind;
      std::string_view name = e.name;
      switch (e.kind) {
        case cel::EventKind::kDaemonStart:
          kind = K::kDaemonStart;
          name = e.detail;
          break;
        case cel::EventKind::kPolicyApplied:
          kind = K::kPolicyApplied;
          break;
        case cel::EventKind::kMechanismDowngraded:
          kind = K::kDowngrade;
          break;
        case cel::EventKind::kRecovered:
          kind = K::kRecovered;
          break;
        case cel::EventKind::kEnforcementState:
          if (name.starts_with(cel::kGuestEventPrefix)) {
            name.remove_prefix(cel::kGuestEventPrefix.size());
            kind = e.detail == "covered"    ? K::kGuestCovered
                   : e.detail == "released" ? K::kGuestReleased
                                            : K::kGuestOther;
          } else if (name.starts_with("tamper:")) {
            name.remove_prefix(7);
            kind = K::kTamper;
          } else if (name == "enforcement" && e.detail.starts_with("released")) {
            kind = K::kRelease;
          }
          break;
        default:
          break;
      }
      if (kind) o.timeline.push_back({i, *kind, std::string(name), std::string(e.detail)});
    }
  }
  if (bound_snap) {
    o.snapshot_bound = true;
    o.policy_bundle_id = bound_snap->policy_bundle_id();
    for (const auto& g : bound_snap->guests()) {
      Observations::Guest og{g.uuid(), g.name(), {}};
      for (const auto& d : g.datasets()) og.datasets.push_back(d.dataset());
      o.guests.push_back(std::move(og));
    }
  }
}

// quote.qualifying_data: the signed extraData is the Merkle root this auditor's leaf reaches.
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

// Verify, with logs.cel given apart from the message (EvidenceView: not copied).
Report VerifyWithCel(const v1::Evidence& ev, std::span<const uint8_t> cel, const Options& opts) {
  // The state file is read, checked and rewritten per verdict: concurrent verifications (fleet
  // mode) must not interleave those steps and lose an update.
  static std::mutex state_mu;
  std::unique_lock<std::mutex> state_lock(state_mu, std::defer_lock);
  if (opts.state_file) state_lock.lock();
  if (opts.sovguard_pcr < 8 || opts.sovguard_pcr > 15)
    throw InputError("the sovguard PCR must be 8-15 (PCRs 16-23 can be reset by the host), not " +
                     std::to_string(opts.sovguard_pcr));
  for (const auto& w : opts.waivers)
    if (WaivedReasons(w).empty()) throw InputError("unknown waiver \"" + w + "\"");
  std::optional<nlohmann::json> state;
  if (opts.state_file) state = LoadState(*opts.state_file);
  Report rep;
  rep.node = ev.node();
  for (const auto& w : opts.waivers)
    if (std::find(rep.waivers.begin(), rep.waivers.end(), w) == rep.waivers.end())
      rep.waivers.push_back(w);
  auto& out = rep.checks;

  // TPMS_ATTEST structure.
  TPMS_ATTEST attest{};
  bool attest_ok = false;
  {
    size_t off = 0;
    const auto& a = ev.quote().attest();
    if (Tss2_MU_TPMS_ATTEST_Unmarshal(U8(a).data(), a.size(), &off, &attest) != TSS2_RC_SUCCESS ||
        off != a.size())
      out.push_back(Fail("quote.structure", kReasonQuoteMalformed,
                         "quote.attest is not one marshalled TPMS_ATTEST"));
    else if (attest.magic != TPM2_GENERATED_VALUE || attest.type != TPM2_ST_ATTEST_QUOTE)
      out.push_back(Fail("quote.structure", kReasonQuoteMalformed,
                         "quote.attest is not a TPM-generated quote (magic/type)"));
    else {
      attest_ok = true;
      out.push_back(Pass("quote.structure", "TPM2_ST_ATTEST_QUOTE"));
    }
  }

  // AK: the carried key must be self-consistent; an enrolled key (--ak-pub) must be the same key.
  EvpPkeyPtr carried;
  out.push_back(CheckAkConsistency(ev.ak(), carried));
  EvpPkeyPtr enrolled;
  if (opts.ak_pub_pem) {
    enrolled = EnrolledKey(*opts.ak_pub_pem);
    if (!enrolled) throw InputError("--ak-pub is not a PEM public key");
    if (carried && EVP_PKEY_eq(carried.get(), enrolled.get()) == 1)
      out.push_back(Pass("ak.enrolled", "the evidence AK is the enrolled AK"));
    else
      out.push_back(Fail("ak.enrolled", kReasonAkNotEnrolled,
                         "the AK in the evidence is not the enrolled AK (--ak-pub)"));
  } else {
    out.push_back(NotApplicable("ak.enrolled", kReasonNotRequested,
                                "no --ak-pub: the AK is trusted as carried in the evidence"));
  }

  out.push_back(CheckAkEkBinding(ev, opts.ak_ek_binding));

  // Signature over the raw TPMS_ATTEST bytes: with the enrolled key when given.
  EVP_PKEY* key = enrolled ? enrolled.get() : carried.get();
  const bool sig_ok = [&] {
    if (!key) {
      out.push_back(Fail("quote.signature", kReasonDependencyFailed, "no usable AK public key"));
      return false;
    }
    out.push_back(CheckSignature(ev.quote().attest(), ev.quote().signature(), key,
                                 enrolled ? "--ak-pub" : "ak.tpm2b_public"));
    return out.back().status == Status::kPass;
  }();

  // Nonce.
  if (!opts.nonce)
    out.push_back(Fail("nonce", kReasonNonceMismatch,
                       "no expected nonce given: the evidence's freshness is not established"));
  else if (Str(*opts.nonce) != ev.nonce())
    out.push_back(Fail("nonce", kReasonNonceMismatch,
                       "evidence nonce " + Hex(ev.nonce()) + ", expected " + ToHex(*opts.nonce)));
  else
    out.push_back(Pass("nonce", ToHex(*opts.nonce)));

  // Snapshot digest, readable copy, and binding with the nonce into extraData.
  const auto snap_digest = Sha256(ev.snapshot_bytes());
  if (Str(snap_digest) != ev.snapshot_sha256())
    out.push_back(Fail("snapshot.digest", kReasonSnapshotDigestMismatch,
                       "snapshot_sha256 " + Hex(ev.snapshot_sha256()) +
                           " is not SHA-256(snapshot_bytes) " + ToHex(snap_digest)));
  else
    out.push_back(Pass("snapshot.digest", ToHex(snap_digest)));
  const bool snap_digest_ok = out.back().status == Status::kPass;
  // The snapshot the checks read is parsed from snapshot_bytes (what the digest covers), once.
  std::optional<v1::EnforcementSnapshot> snap;
  {
    v1::EnforcementSnapshot parsed;
    if (parsed.ParseFromString(ev.snapshot_bytes())) snap = std::move(parsed);
    if (!snap || evidence::SerializeSnapshot(*snap) != evidence::SerializeSnapshot(ev.snapshot()))
      out.push_back(Fail("snapshot.copy", kReasonSnapshotCopyMismatch,
                         "the readable snapshot differs from snapshot_bytes"));
    else
      out.push_back(Pass("snapshot.copy", "snapshot equals snapshot_bytes"));
  }
  {
    const Bytes nonce = opts.nonce ? *opts.nonce : Bytes(ev.nonce().begin(), ev.nonce().end());
    out.push_back(
        CheckInclusion(ev, nonce, snap_digest, attest_ok ? &attest.extraData : nullptr, sig_ok));
  }

  // Clock info carried beside the quote must be the signed one.
  if (!attest_ok)
    out.push_back(Fail("quote.clock", kReasonDependencyFailed, "quote.attest could not be parsed"));
  else if (ev.clock().clock_ms() != attest.clockInfo.clock ||
           ev.clock().reset_count() != attest.clockInfo.resetCount ||
           ev.clock().restart_count() != attest.clockInfo.restartCount ||
           ev.clock().safe() != (attest.clockInfo.safe == TPM2_YES))
    out.push_back(
        Fail("quote.clock", kReasonClockMismatch, "clock differs from quote.attest clockInfo"));
  else
    out.push_back(
        Pass("quote.clock", "clock " + std::to_string(attest.clockInfo.clock) + " ms, reset " +
                                std::to_string(attest.clockInfo.resetCount) + ", restart " +
                                std::to_string(attest.clockInfo.restartCount)));

  out.push_back(CheckPcrDigest(ev.quote(), attest_ok ? &attest : nullptr));
  const bool pcrs_ok = out.back().status == Status::kPass && sig_ok;

  const auto authentic_cel = CheckCel(ev, cel, pcrs_ok, opts.replay_cache,
                                      opts.manifest_envelope != nullptr, opts.sovguard_pcr, out);
  out.push_back(CheckPolicy(snap, authentic_cel, opts.policy_digest));
  // The snapshot is bound to the signed quote when its digest is right and extraData (signed)
  // binds that digest: only then do its claims count.
  const CheckResult* qd = rep.Find("quote.qualifying_data");
  const bool snap_bound = snap && snap_digest_ok && qd && qd->status == Status::kPass;
  out.push_back(CheckCoverage(snap_bound ? &*snap : nullptr, authentic_cel));
  out.push_back(
      CheckMechanisms(snap_bound ? &*snap : nullptr, authentic_cel, opts.require_strongest));
  // Since when enforcement must have been uninterrupted: the last passing verdict of this AK in
  // this boot (same TPM reset count; the log only grows within a boot), else the whole log.
  {
    size_t since = 0;
    std::string since_text = "since boot (all of logs.cel)";
    const std::string ak_key = ToHex(U8(ev.ak().name()));
    if (state && attest_ok && authentic_cel && state->contains("aks") &&
        (*state)["aks"].contains(ak_key)) {
      const auto& last = (*state)["aks"][ak_key];
      if (last.contains("cel_records") &&
          last["reset_count"].get<uint32_t>() == attest.clockInfo.resetCount &&
          last["cel_records"].get<uint64_t>() <= authentic_cel->recs.size()) {
        since = last["cel_records"].get<uint64_t>();
        since_text =
            "since the last passing verdict (from logs.cel record " + std::to_string(since) + ")";
      }
    }
    out.push_back(CheckContinuity(authentic_cel, since, since_text));
  }

  out.push_back(CheckUefi(ev, pcrs_ok));
  if (ev.logs().has_ima_ascii()) {
    out.push_back(ima::Check(ev, pcrs_ok));
  } else {
    // No IMA list: fine only when IMA measured nothing (quoted PCR 10 is zero).
    const v1::PcrValue* p10 = nullptr;
    for (const auto& p : ev.quote().pcrs())
      if (p.index() == 10) p10 = &p;
    if (!p10)
      out.push_back(Fail("eventlog.ima", kReasonImaLogMissing,
                         "no logs.ima_ascii and PCR 10 is not quoted: whether IMA measured "
                         "files is unknown"));
    else if (p10->sha256() != std::string(32, '\0'))
      out.push_back(Fail("eventlog.ima", kReasonImaLogMissing,
                         "quoted PCR 10 is " + Hex(p10->sha256()) +
                             ": IMA measured files, and the evidence has no logs.ima_ascii"));
    else
      out.push_back(
          NotApplicable("eventlog.ima", kReasonNotVerified,
                        "no logs.ima_ascii; quoted PCR 10 is zero: IMA measured nothing"));
  }
  if (opts.observe) {
    rep.observed.emplace();
    Observe(authentic_cel, snap_bound ? &*snap : nullptr, *rep.observed);
  }
  CheckManifest(ev, authentic_cel, pcrs_ok,
                rep.Find("eventlog.ima") && rep.Find("eventlog.ima")->status == Status::kPass, opts,
                out, rep.observed ? &*rep.observed : nullptr);
  if (opts.state_file) {
    if (!attest_ok)
      out.push_back(Fail("quote.clock_monotonic", kReasonDependencyFailed,
                         "quote.attest could not be parsed"));
    else
      out.push_back(CheckMonotonic(*state, ToHex(U8(ev.ak().name())), attest.clockInfo));
  } else {
    out.push_back(
        NotApplicable("quote.clock_monotonic", kReasonNotRequested,
                      "no state file: replay of old evidence is caught by the nonce only"));
  }

  if (opts.ek_ca_dir) {
    auto store = LoadEkCaStore(*opts.ek_ca_dir);
    out.push_back(CheckEkChain(ev, store.get(), opts.ek_policies));
  } else {
    out.push_back(NotApplicable("ek.chain", kReasonNotRequested,
                                "EK certificate chain not checked (no --ek-ca)"));
  }
  out.push_back(CheckHardware(ev, snap, rep.Find("ek.chain")));
  out.push_back(CheckRoot(rep));

  // Waivers: a failure the auditor accepted by name no longer fails the verdict; it stays
  // listed with its reason code, marked waived.
  for (auto& c : out) {
    if (c.status != Status::kFail) continue;
    for (const auto& w : rep.waivers) {
      const auto reasons = WaivedReasons(w);
      if (std::find(reasons.begin(), reasons.end(), c.reason) == reasons.end()) continue;
      c.status = Status::kWaived;
      c.detail = "waived (--waive " + w + "): " + c.detail;
      break;
    }
  }
  // Only a passing verdict moves the state forward.
  if (state && rep.passed()) {
    auto& e = (*state)["aks"][ToHex(U8(ev.ak().name()))];
    e["node"] = ev.node();
    e["clock_ms"] = attest.clockInfo.clock;
    e["reset_count"] = attest.clockInfo.resetCount;
    e["restart_count"] = attest.clockInfo.restartCount;
    e["generated_unix_ns"] = ev.generated_unix_ns();
    if (authentic_cel) e["cel_records"] = authentic_cel->recs.size();
    WriteFileAtomic(*opts.state_file, state->dump(2) + "\n");
  }
  return rep;
}

}  // namespace

v1::TpmQuote ParseTpm2ToolsPcrs(std::span<const uint8_t> data) {
  // Host-endian C structs, as tpm2-tools writes them: TPML_PCR_SELECTION, UINT32 number of
  // lists, then that many TPML_DIGEST, filled in selection order (ascending PCR per bank).
  TPML_PCR_SELECTION sel{};
  uint32_t nlists = 0;
  if (data.size() < sizeof sel + sizeof nlists)
    throw InputError("PCR file: shorter than a TPML_PCR_SELECTION and a list count");
  std::memcpy(&sel, data.data(), sizeof sel);
  std::memcpy(&nlists, data.data() + sizeof sel, sizeof nlists);
  if (sel.count != 1 || sel.pcrSelections[0].hash != TPM2_ALG_SHA256 ||
      sel.pcrSelections[0].sizeofSelect > sizeof sel.pcrSelections[0].pcrSelect)
    throw InputError("PCR file: expected exactly one selection, of the SHA-256 bank");
  const size_t need = sizeof sel + sizeof nlists + size_t{nlists} * sizeof(TPML_DIGEST);
  if (nlists > 64 || data.size() != need)
    throw InputError("PCR file: " + std::to_string(data.size()) + " bytes, expected " +
                     std::to_string(need) + " for " + std::to_string(nlists) + " digest lists");
  std::vector<TPML_DIGEST> lists(nlists);
  if (nlists)
    std::memcpy(lists.data(), data.data() + sizeof sel + sizeof nlists,
                nlists * sizeof(TPML_DIGEST));
  v1::TpmQuote q;
  q.set_pcr_bank("sha256");
  size_t li = 0, di = 0;
  const auto& s = sel.pcrSelections[0];
  for (uint32_t pcr = 0; pcr < 8u * s.sizeofSelect; ++pcr) {
    if (!(s.pcrSelect[pcr / 8] & (1u << (pcr % 8)))) continue;
    if (pcr > 23) throw InputError("PCR file: PCR " + std::to_string(pcr) + " is not 0-23");
    while (li < lists.size() && di >= std::min<uint32_t>(lists[li].count, 8)) ++li, di = 0;
    if (li >= lists.size()) throw InputError("PCR file: fewer digests than selected PCRs");
    const auto& d = lists[li].digests[di++];
    if (d.size != 32) throw InputError("PCR file: PCR " + std::to_string(pcr) + " is not 32 bytes");
    auto* p = q.add_pcrs();
    p->set_index(pcr);
    p->set_sha256(std::string(reinterpret_cast<const char*>(d.buffer), 32));
  }
  return q;
}

Report VerifyTpm2Quote(const Tpm2QuoteFiles& files, const Options& opts) {
  if (!opts.ak_pub_pem) throw InputError("a tpm2_quote quote needs the AK public key (--ak-pub)");
  if (!opts.nonce) throw InputError("a tpm2_quote quote needs the expected nonce (--nonce)");
  auto key = LoadPem(*opts.ak_pub_pem);
  if (!key) throw InputError("--ak-pub is not a PEM public key");
  v1::TpmQuote q = ParseTpm2ToolsPcrs(U8(files.pcrs));
  Report rep;
  rep.node = "tpm2_quote";
  auto& out = rep.checks;
  TPMS_ATTEST attest{};
  size_t off = 0;
  const bool attest_ok = Tss2_MU_TPMS_ATTEST_Unmarshal(U8(files.attest).data(), files.attest.size(),
                                                       &off, &attest) == TSS2_RC_SUCCESS &&
                         off == files.attest.size() && attest.magic == TPM2_GENERATED_VALUE &&
                         attest.type == TPM2_ST_ATTEST_QUOTE;
  if (attest_ok)
    out.push_back(Pass("quote.structure", "TPM2_ST_ATTEST_QUOTE"));
  else
    out.push_back(Fail("quote.structure", kReasonQuoteMalformed,
                       "the message file is not one marshalled TPM-generated quote"));
  out.push_back(CheckSignature(files.attest, files.signature, key.get(), "--ak-pub"));
  const bool sig_ok = out.back().status == Status::kPass;
  if (!attest_ok)
    out.push_back(Fail("nonce", kReasonDependencyFailed, "the quote could not be parsed"));
  else if (Bytes(attest.extraData.buffer, attest.extraData.buffer + attest.extraData.size) !=
           *opts.nonce)
    out.push_back(Fail("nonce", kReasonNonceMismatch,
                       "extraData " +
                           ToHex(std::span(attest.extraData.buffer, attest.extraData.size)) +
                           ", expected " + ToHex(*opts.nonce)));
  else if (!sig_ok)
    out.push_back(Fail("nonce", kReasonDependencyFailed, "the quote is not signed by the AK"));
  else
    out.push_back(Pass("nonce", ToHex(*opts.nonce)));
  out.push_back(CheckPcrDigest(q, attest_ok ? &attest : nullptr));
  return rep;
}

std::string RenderText(const Report& r) {
  std::string s =
      "sovguard-verify: node \"" + r.node + "\": " + (r.passed() ? "PASS" : "FAIL") + "\n";
  if (!r.waivers.empty()) {
    s += "  waived by the auditor:";
    for (const auto& w : r.waivers) s += " " + w;
    s += "\n";
  }
  for (const auto& c : r.checks) {
    s += "  [" + std::string(StatusName(c.status)) + "] " + c.name;
    if (c.status != Status::kPass) s += " " + c.reason;
    if (!c.detail.empty()) s += ": " + c.detail;
    s += "\n";
  }
  return s;
}

std::string RenderJson(const Report& r) {
  nlohmann::json j;
  j["node"] = r.node;
  j["verdict"] = r.passed() ? "pass" : "fail";
  j["waivers"] = r.waivers;
  j["checks"] = nlohmann::json::array();
  for (const auto& c : r.checks) {
    auto clauses = nlohmann::json::array();
    for (const auto cl : ClausesFor(c.name)) clauses.push_back(cl);
    j["checks"].push_back({{"name", c.name},
                           {"status", StatusName(c.status)},
                           {"reason", c.reason},
                           {"detail", c.detail},
                           {"clauses", std::move(clauses)}});
  }
  // Details can quote evidence bytes: replace invalid UTF-8 rather than throw.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace sovguard::attestation::verify
