#include "attestation/verify/ear.h"

#include <openssl/ec.h>
#include <openssl/ecdsa.h>

#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/openssl.h"

#ifndef SOVGUARD_VERIFY_VERSION
#define SOVGUARD_VERIFY_VERSION "unknown"
#endif

namespace sovguard::attestation::verify {
namespace {

// AR4SI values used here (draft-ietf-rats-ar4si).
constexpr int kNoClaim = 0;
constexpr int kAffirming = 2;         // trustworthy instance, genuine hardware, approved runtime...
constexpr int kUnsafeConfig = 32;     // configuration with known weaknesses (warning tier)
constexpr int kUnrecognizedRt = 33;   // runtime measured but not compared with reference values
constexpr int kContraindicated = 96;  // a check against reference values failed
constexpr int kCryptoFailed = 99;     // a signature or digest did not verify

bool Failed(const Report& r, std::string_view name) {
  return r.StatusOf(name) == Status::kFail;
}
bool Waived(const Report& r, std::string_view name) {
  return r.StatusOf(name) == Status::kWaived;
}

}  // namespace

std::string Base64Url(std::span<const uint8_t> data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((data.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    const uint32_t v = data[i] << 16 | data[i + 1] << 8 | data[i + 2];
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (i + 1 == data.size()) {
    const uint32_t v = data[i] << 16;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
  } else if (i + 2 == data.size()) {
    const uint32_t v = data[i] << 16 | data[i + 1] << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
  }
  return out;
}

std::map<std::string, int> TrustworthinessVector(const Report& r) {
  std::map<std::string, int> v = {{"instance-identity", kNoClaim}, {"configuration", kNoClaim},
                                  {"executables", kNoClaim},       {"file-system", kNoClaim},
                                  {"hardware", kNoClaim},          {"runtime-opaque", kNoClaim},
                                  {"storage-opaque", kNoClaim},    {"sourced-data", kNoClaim}};
  // Instance identity: the quote is signed by the AK, and the AK is known (enrolled or proven to
  // be in the TPM whose EK certificate chains to a trusted CA).
  if (Failed(r, "quote.signature") || Failed(r, "quote.structure"))
    v["instance-identity"] = kCryptoFailed;
  else if (Failed(r, "ak.consistency") || Failed(r, "ak.enrolled") || Failed(r, "ak.ek_binding") ||
           Failed(r, "nonce") || Failed(r, "quote.qualifying_data") ||
           Failed(r, "quote.clock_monotonic") || Failed(r, "trust.root"))
    v["instance-identity"] = kContraindicated;
  else if (r.CheckPassed("quote.signature") && r.CheckPassed("trust.root"))
    v["instance-identity"] = kAffirming;
  else if (Waived(r, "trust.root"))
    v["instance-identity"] = kUnsafeConfig;
  // Hardware: a hardware TPM (tpm.hardware: an EK certificate chained to a trusted CA naming a
  // TPM maker that is not swtpm); a software TPM the auditor accepted is a warning.
  if (Failed(r, "ek.chain") || Failed(r, "tpm.hardware"))
    v["hardware"] = kContraindicated;
  else if (Waived(r, "tpm.hardware"))
    v["hardware"] = kUnsafeConfig;
  else if (r.CheckPassed("tpm.hardware"))
    v["hardware"] = kAffirming;
  // Executables: the measured stack replays to the signed PCRs and is what the manifest approves.
  const auto* cel = r.Find("eventlog.cel.replay");
  if (cel && cel->status == Status::kFail)
    v["executables"] = cel->reason == kReasonCelEntryTampered ? kCryptoFailed : kContraindicated;
  else if (Failed(r, "eventlog.cel.events") || Failed(r, "manifest.components") ||
           Failed(r, "manifest.jurisdiction") || Failed(r, "manifest.signature") ||
           Failed(r, "manifest.ima"))
    v["executables"] = kContraindicated;
  else if (r.CheckPassed("manifest.components") && r.CheckPassed("manifest.jurisdiction") &&
           !Waived(r, "manifest.ima"))
    v["executables"] = kAffirming;
  else if (cel && cel->status == Status::kPass)
    v["executables"] = kUnrecognizedRt;
  // Configuration: the active policy, boot chain values.
  // And the enforcement state: every running guest covered, every path's mechanism reported;
  // a path running below its strongest mechanism (passing without --require-strongest) is an
  // unsafe configuration: warning, not affirming.
  const auto* mech = r.Find("snapshot.mechanisms");
  if (Failed(r, "policy.bundle") || Failed(r, "manifest.boot") || Failed(r, "eventlog.uefi") ||
      Failed(r, "snapshot.digest") || Failed(r, "snapshot.copy") ||
      Failed(r, "snapshot.coverage") || Failed(r, "snapshot.mechanisms") ||
      Failed(r, "enforcement.continuity"))
    v["configuration"] = kContraindicated;
  // A policy the auditor did not name (waived "policy") is the node's, not a known good one.
  else if (Waived(r, "eventlog.uefi") || Waived(r, "enforcement.continuity") ||
           Waived(r, "policy.bundle"))
    v["configuration"] = kUnsafeConfig;
  else if (mech && mech->status == Status::kPass &&
           mech->detail.find(kMechanismsDowngradedMarker) != std::string::npos)
    v["configuration"] = kUnsafeConfig;
  else if (r.CheckPassed("policy.bundle") || r.CheckPassed("manifest.boot"))
    v["configuration"] = kAffirming;
  // File system: IMA.
  if (Failed(r, "eventlog.ima"))
    v["file-system"] = kContraindicated;
  else if (Waived(r, "eventlog.ima"))
    v["file-system"] = kUnsafeConfig;
  else if (r.CheckPassed("eventlog.ima"))
    v["file-system"] = kAffirming;
  // Storage opaque: the AK is a TPM key (credential activation proved it lives with the EK).
  if (r.CheckPassed("ak.ek_binding")) v["storage-opaque"] = kAffirming;
  return v;
}

std::string EarStatus(const Report& r) {
  if (!r.passed()) return "contraindicated";
  const auto v = TrustworthinessVector(r);
  int worst = 0;
  for (const auto& [k, val] : v) worst = std::max(worst, val);
  if (worst >= 96) return "contraindicated";
  // Affirming only when every claim an auditor relies on is backed by a passed check: identity
  // (rooted AK), hardware (a hardware TPM), executables (approved software), configuration
  // (policy, boot chain) and the enforcement runtime (every guest covered, every path reported,
  // enforcement uninterrupted); a waiver anywhere makes it a warning.
  const bool waived = std::any_of(r.checks.begin(), r.checks.end(),
                                  [](const CheckResult& c) { return c.status == Status::kWaived; });
  const bool backed = v.at("instance-identity") == kAffirming && v.at("hardware") == kAffirming &&
                      v.at("executables") == kAffirming && v.at("configuration") == kAffirming &&
                      r.CheckPassed("snapshot.coverage") && r.CheckPassed("snapshot.mechanisms") &&
                      r.CheckPassed("enforcement.continuity");
  if (worst >= 32 || waived || !r.waivers.empty()) return "warning";
  if (backed) return "affirming";
  return worst >= 2 ? "warning" : "none";
}

std::string EarClaimsJson(const Report& r, const EarOptions& o) {
  nlohmann::json sub;
  sub["ear.status"] = EarStatus(r);
  sub["ear.trustworthiness-vector"] = nlohmann::json::object();
  for (const auto& [k, val] : TrustworthinessVector(r))
    if (val != kNoClaim) sub["ear.trustworthiness-vector"][k] = val;
  sub["ear.appraisal-policy-id"] = "urn:sovguard:verify:checks:v2";
  // Requirements the auditor accepted as unmet, by name.
  sub["sovguard.waivers"] = r.waivers;
  // Which check decided what: names and reason codes (details stay in the --json report).
  auto& checks = sub["sovguard.checks"] = nlohmann::json::object();
  for (const auto& c : r.checks)
    checks[c.name] =
        std::string(StatusName(c.status)) + (c.status == Status::kPass ? "" : ":" + c.reason);
  nlohmann::json claims;
  claims["eat_profile"] = kEarProfile;
  claims["iat"] = o.issued_at ? o.issued_at : static_cast<int64_t>(std::time(nullptr));
  claims["ear.verifier-id"] = {
      {"developer", "sovguard"},
      {"build", std::string("sovguard-verify ") + SOVGUARD_VERIFY_VERSION}};
  if (o.nonce) claims["eat_nonce"] = Base64Url(*o.nonce);
  claims["submods"] = {{r.node.empty() ? "node" : r.node, sub}};
  return claims.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string MakeEarJwt(const Report& r, EVP_PKEY* key, const EarOptions& o) {
  std::string alg;
  const EVP_MD* md = nullptr;
  size_t coord = 0;
  if (EVP_PKEY_is_a(key, "ED25519")) {
    alg = "EdDSA";
  } else if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof group, &len) != 1 ||
        std::string_view(group) != "prime256v1")
      throw InputError("--ear-key: EC keys must be P-256 (ES256)");
    alg = "ES256";
    md = EVP_sha256();
    coord = 32;
  } else {
    throw InputError("--ear-key: only Ed25519 (EdDSA) and EC P-256 (ES256) keys are supported");
  }
  const std::string header = nlohmann::json{{"alg", alg}, {"typ", "JWT"}}.dump();
  const std::string claims = EarClaimsJson(r, o);
  auto b64 = [](const std::string& s) {
    return Base64Url(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  };
  const std::string input = b64(header) + "." + b64(claims);
  base::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  size_t n = 0;
  const auto* in = reinterpret_cast<const uint8_t*>(input.data());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &n, in, input.size()) != 1)
    throw AttestationError("OpenSSL: cannot sign the EAR");
  Bytes sig(n);
  if (EVP_DigestSign(ctx.get(), sig.data(), &n, in, input.size()) != 1)
    throw AttestationError("OpenSSL: cannot sign the EAR");
  sig.resize(n);
  if (coord) {
    // JWS ES256 is r || s, each 32 bytes big-endian, not DER.
    const unsigned char* p = sig.data();
    base::EcdsaSigPtr es(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size())));
    if (!es) throw AttestationError("OpenSSL: cannot decode the ECDSA signature");
    Bytes raw(2 * coord);
    if (BN_bn2binpad(ECDSA_SIG_get0_r(es.get()), raw.data(), static_cast<int>(coord)) < 0 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(es.get()), raw.data() + coord, static_cast<int>(coord)) < 0)
      throw AttestationError("OpenSSL: cannot encode the ECDSA signature");
    sig = std::move(raw);
  }
  return input + "." + Base64Url(sig);
}

}  // namespace sovguard::attestation::verify
