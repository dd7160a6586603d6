// AK and EK identity: the AK's consistency, the EK certificate chain and TCG profile,
// credential activation, hardware TPM, and what roots the AK.
#include "attestation/verify/checks.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <deque>
#include <mutex>

#include "attestation/tpm/credential.h"
#include "attestation/tpm/public_key.h"
#include "attestation/verify/fast_paths.h"

namespace sovguard::attestation::verify::detail {

using base::BioPtr;
using base::X509Ptr;
using base::X509StoreCtxPtr;
using base::X509StorePtr;

EvpPkeyPtr LoadPem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return EvpPkeyPtr(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
}

// The AK the evidence carries: its TPM public area must agree with its name and PEM.
CheckResult CheckAkConsistency(const v1::AttestationKey& ak, EvpPkeyPtr& key_out) {
  const std::string name = "ak.consistency";
  if (ak.tpm2b_public().empty())
    return Fail(name, kReasonAkInconsistent, "ak.tpm2b_public is empty");
  DerivedAk derived;
  try {
    derived = DeriveAk(ak.tpm2b_public());
  } catch (const AttestationError& e) {
    key_out.reset();
    return Fail(name, kReasonAkKeyInvalid, std::string("ak.tpm2b_public: ") + e.what());
  }
  key_out = std::move(derived.key);
  const std::string& derived_name = derived.name;
  const std::string& fast_pem = derived.pem;
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

namespace {

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
  const bool remember = FastPathsEnabled();
  if (remember) {
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
  if (!remember) return prof;
  std::lock_guard lock(mu);
  known.emplace_front(der_in, prof);
  if (known.size() > kMax) known.pop_back();
  return prof;
}

}  // namespace

// tpm.hardware: the quote comes from a hardware TPM. Decided from what the node cannot forge: an
// EK certificate that chains to the auditor's --ek-ca and names a TPM maker that is not swtpm.
// A software TPM named anywhere (EK certificate, even unchained, or the node's own snapshot
// statement) fails SOFTWARE_TPM; no chained EK certificate fails HARDWARE_TPM_UNPROVEN.
CheckResult CheckHardware(const v1::Evidence& ev,
                          const std::optional<v1::EnforcementSnapshot>& snap,
                          const CheckResult* ek_chain, const CheckResult* ek_binding) {
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
  // A chained certificate names a TPM; only credential activation shows the AK that signed the
  // quote is in it (any TPM's EK certificate can be copied into evidence).
  if (!ek_binding || ek_binding->status != Status::kPass)
    return Fail(name, kReasonEkNotBoundToAk,
                makers +
                    " chained to --ek-ca, but no credential activation (ak.ek_binding) "
                    "proved the AK that signed the quote is in that TPM");
  return Pass(name, makers + " (chained to --ek-ca; the signing AK is in that TPM: " +
                        ek_binding->detail + ")");
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

namespace {

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

}  // namespace

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

CheckResult CheckAkEnrolled(EVP_PKEY* carried, const std::optional<std::string>& ak_pub_pem,
                            EvpPkeyPtr& enrolled_out) {
  const std::string name = "ak.enrolled";
  if (!ak_pub_pem)
    return NotApplicable(name, kReasonNotRequested,
                         "no --ak-pub: the AK is trusted as carried in the evidence");
  enrolled_out = EnrolledKey(*ak_pub_pem);
  if (!enrolled_out) throw InputError("--ak-pub is not a PEM public key");
  if (carried && EVP_PKEY_eq(carried, enrolled_out.get()) == 1)
    return Pass(name, "the evidence AK is the enrolled AK");
  return Fail(name, kReasonAkNotEnrolled,
              "the AK in the evidence is not the enrolled AK (--ak-pub)");
}

CheckResult CheckEkChain(const v1::Evidence& ev, const std::optional<std::filesystem::path>& ek_ca,
                         const std::vector<std::string>& policies) {
  if (!ek_ca)
    return NotApplicable("ek.chain", kReasonNotRequested,
                         "EK certificate chain not checked (no --ek-ca)");
  const auto store = LoadEkCaStore(*ek_ca);
  return CheckEkChain(ev, store.get(), policies);
}
}  // namespace sovguard::attestation::verify::detail
