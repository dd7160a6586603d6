#include "attestation/manifest/manifest.h"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>
#include <set>

#include "base/openssl.h"
#include "policy/jurisdiction/countries.h"

namespace sovguard::attestation::manifest {
namespace {

using json = nlohmann::json;
constexpr const char* kMalformed = "MANIFEST_MALFORMED";
constexpr const char* kBadSignature = "MANIFEST_SIGNATURE_INVALID";

[[noreturn]] void Malformed(const std::string& what) {
  throw ManifestError(kMalformed, "manifest: " + what);
}

const json& Field(const json& obj, const char* key, json::value_t type, const std::string& at) {
  auto it = obj.find(key);
  if (it == obj.end()) Malformed(at + "." + key + ": missing");
  const bool ok =
      type == json::value_t::number_unsigned ? it->is_number_unsigned() : it->type() == type;
  if (!ok) Malformed(at + "." + key + ": wrong type (" + it->type_name() + ")");
  return *it;
}

void OnlyKeys(const json& obj, std::initializer_list<std::string_view> keys,
              const std::string& at) {
  for (const auto& [k, v] : obj.items())
    if (std::find(keys.begin(), keys.end(), k) == keys.end())
      Malformed(at + "." + k + ": unknown field");
}

std::string Text(const json& obj, const char* key, const std::string& at, bool required) {
  if (!obj.contains(key)) {
    if (required) Malformed(at + "." + key + ": missing");
    return "";
  }
  const auto& v = Field(obj, key, json::value_t::string, at);
  const auto s = v.get<std::string>();
  if (required && s.empty()) Malformed(at + "." + key + ": must not be empty");
  return s;
}

Sha256Digest Digest(const json& v, const std::string& at) {
  if (!v.is_string()) Malformed(at + ": expected a SHA-256 as 64 hex digits");
  const auto s = v.get<std::string>();
  if (s.size() != 64) Malformed(at + ": expected a SHA-256 as 64 hex digits");
  Bytes b;
  try {
    b = FromHex(s, at);
  } catch (const AttestationError& e) {
    Malformed(e.what());
  }
  Sha256Digest d{};
  std::copy(b.begin(), b.end(), d.begin());
  return d;
}

std::string Pae(std::string_view type, std::string_view body) {
  return "DSSEv1 " + std::to_string(type.size()) + " " + std::string(type) + " " +
         std::to_string(body.size()) + " " + std::string(body);
}

// Ed25519, or ECDSA over P-256 with SHA-256. Anything else is refused by name.
const EVP_MD* DigestFor(EVP_PKEY* key, const std::string& where) {
  if (EVP_PKEY_is_a(key, "ED25519")) return nullptr;
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof group, &len) == 1 &&
        std::string_view(group) == "prime256v1")
      return EVP_sha256();
  }
  throw ManifestError(kMalformed, where + ": only Ed25519 and EC P-256 keys are supported");
}

base::EvpPkeyPtr CheckedKey(EVP_PKEY* raw, const std::string& where) {
  base::EvpPkeyPtr key(raw);
  if (!key) throw ManifestError(kMalformed, where + ": not a PEM key");
  DigestFor(key.get(), where);
  return key;
}

}  // namespace

std::string Base64(std::span<const uint8_t> data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(),
                                static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Bytes FromBase64(std::string_view text, std::string_view what) {
  if (text.size() % 4 != 0 || text.size() > (64u << 20))
    throw ManifestError(kMalformed, std::string(what) + ": not padded standard base64");
  Bytes out(text.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) throw ManifestError(kMalformed, std::string(what) + ": not standard base64");
  size_t len = static_cast<size_t>(n);
  // EVP_DecodeBlock counts the bytes padding stands for.
  if (!text.empty() && text.back() == '=') --len;
  if (text.size() > 1 && text[text.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

Manifest Parse(std::string_view text, bool complete) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    Malformed(std::string("not JSON: ") + e.what());
  }
  if (!j.is_object()) Malformed("$: expected an object");
  OnlyKeys(j, {"sovguard_manifest", "id", "issued_at", "issuer", "components", "boot"}, "$");
  const auto& ver = Field(j, "sovguard_manifest", json::value_t::number_unsigned, "$");
  if (ver.get<uint64_t>() != kManifestVersion)
    Malformed("$.sovguard_manifest: version " + ver.dump() + " (this verifier reads 1)");
  Manifest m;
  m.id = Text(j, "id", "$", true);
  m.issued_at = Text(j, "issued_at", "$", false);
  m.issuer = Text(j, "issuer", "$", complete);
  const auto& comps = Field(j, "components", json::value_t::array, "$");
  std::set<std::string> names;
  for (size_t i = 0; i < comps.size(); ++i) {
    const std::string at = "$.components[" + std::to_string(i) + "]";
    const auto& c = comps[i];
    if (!c.is_object()) Malformed(at + ": expected an object");
    OnlyKeys(c, {"name", "version", "supplier", "supplier_jurisdiction", "license", "files"}, at);
    Component comp;
    comp.name = Text(c, "name", at, true);
    comp.version = Text(c, "version", at, complete);
    comp.supplier = Text(c, "supplier", at, complete);
    comp.license = Text(c, "license", at, complete);
    const auto cc = Text(c, "supplier_jurisdiction", at, complete);
    if (!cc.empty()) {
      auto norm = policy::NormalizeCountry(cc);
      if (!norm || *norm != cc)
        Malformed(at + ".supplier_jurisdiction: \"" + cc +
                  "\" is not an upper-case ISO 3166-1 alpha-2 code");
      comp.supplier_jurisdiction = *norm;
    }
    if (!names.insert(comp.name + "\n" + comp.version).second)
      Malformed(at + ": component " + comp.name + " " + comp.version + " listed twice");
    const auto& files = Field(c, "files", json::value_t::array, at);
    if (files.empty()) Malformed(at + ".files: a component lists at least one file");
    for (size_t k = 0; k < files.size(); ++k) {
      const std::string fat = at + ".files[" + std::to_string(k) + "]";
      if (!files[k].is_object()) Malformed(fat + ": expected an object");
      OnlyKeys(files[k], {"path", "sha256"}, fat);
      File f;
      f.path = Text(files[k], "path", fat, true);
      if (!files[k].contains("sha256")) Malformed(fat + ".sha256: missing");
      f.sha256 = Digest(files[k]["sha256"], fat + ".sha256");
      comp.files.push_back(std::move(f));
    }
    m.components.push_back(std::move(comp));
  }
  if (j.contains("boot")) {
    const auto& b = Field(j, "boot", json::value_t::object, "$");
    OnlyKeys(b, {"pcrs", "kernel_cmdlines"}, "$.boot");
    if (b.contains("pcrs")) {
      const auto& p = Field(b, "pcrs", json::value_t::object, "$.boot");
      for (const auto& [k, v] : p.items()) {
        const std::string at = "$.boot.pcrs." + k;
        if (k.empty() || k.size() > 2 || !std::all_of(k.begin(), k.end(), ::isdigit) ||
            std::stoul(k) > 23)
          Malformed(at + ": PCR index must be 0-23");
        if (!v.is_array() || v.empty()) Malformed(at + ": expected a non-empty array of SHA-256");
        auto& list = m.boot_pcrs[static_cast<uint32_t>(std::stoul(k))];
        for (size_t i = 0; i < v.size(); ++i)
          list.push_back(Digest(v[i], at + "[" + std::to_string(i) + "]"));
      }
    }
    if (b.contains("kernel_cmdlines")) {
      const auto& k = Field(b, "kernel_cmdlines", json::value_t::array, "$.boot");
      for (size_t i = 0; i < k.size(); ++i) {
        if (!k[i].is_string())
          Malformed("$.boot.kernel_cmdlines[" + std::to_string(i) + "]: expected a string");
        m.kernel_cmdlines.push_back(k[i].get<std::string>());
      }
    }
  }
  return m;
}

std::string ToJson(const Manifest& m) {
  json j = json::object();
  j["sovguard_manifest"] = kManifestVersion;
  j["id"] = m.id;
  j["issued_at"] = m.issued_at;
  j["issuer"] = m.issuer;
  j["components"] = json::array();
  for (const auto& c : m.components) {
    json files = json::array();
    for (const auto& f : c.files) files.push_back({{"path", f.path}, {"sha256", ToHex(f.sha256)}});
    j["components"].push_back({{"name", c.name},
                               {"version", c.version},
                               {"supplier", c.supplier},
                               {"supplier_jurisdiction", c.supplier_jurisdiction},
                               {"license", c.license},
                               {"files", files}});
  }
  json boot = json::object();
  if (!m.boot_pcrs.empty()) {
    boot["pcrs"] = json::object();
    for (const auto& [pcr, vals] : m.boot_pcrs) {
      auto& list = boot["pcrs"][std::to_string(pcr)] = json::array();
      for (const auto& v : vals) list.push_back(ToHex(v));
    }
  }
  if (!m.kernel_cmdlines.empty()) boot["kernel_cmdlines"] = m.kernel_cmdlines;
  if (!boot.empty()) j["boot"] = boot;
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

base::EvpPkeyPtr LoadPrivateKey(const std::filesystem::path& pem) {
  const auto data = ReadFileBytes(pem);
  base::BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  return CheckedKey(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr),
                    "private key " + pem.string());
}

base::EvpPkeyPtr PublicKeyFromPem(std::string_view pem) {
  base::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return CheckedKey(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr), "public key");
}

base::EvpPkeyPtr LoadPublicKey(const std::filesystem::path& pem) {
  const auto data = ReadFileBytes(pem);
  base::BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  return CheckedKey(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr),
                    "public key " + pem.string());
}

std::string KeyId(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(key, &der);
  if (n <= 0) throw AttestationError("OpenSSL: cannot encode the public key");
  const auto d = Sha256(std::span<const uint8_t>(der, static_cast<size_t>(n)));
  OPENSSL_free(der);
  return "sha256:" + ToHex(d);
}

std::string Sign(std::string_view payload, EVP_PKEY* key) {
  Parse(payload, true);  // never sign an incomplete or malformed manifest
  const EVP_MD* md = DigestFor(key, "signing key");
  const std::string pae = Pae(kPayloadType, payload);
  base::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const uint8_t*>(pae.data()),
                     pae.size()) != 1)
    throw AttestationError("OpenSSL: cannot sign the manifest");
  Bytes sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, reinterpret_cast<const uint8_t*>(pae.data()),
                     pae.size()) != 1)
    throw AttestationError("OpenSSL: cannot sign the manifest");
  sig.resize(len);
  json env = {{"payloadType", kPayloadType},
              {"payload",
               Base64(std::span(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()))},
              {"signatures", json::array({{{"keyid", KeyId(key)}, {"sig", Base64(sig)}}})}};
  return env.dump(2) + "\n";
}

Manifest VerifyEnvelope(std::string_view envelope, EVP_PKEY* key) {
  json env;
  try {
    env = json::parse(envelope);
  } catch (const json::parse_error& e) {
    throw ManifestError(kMalformed, std::string("manifest envelope: not JSON: ") + e.what());
  }
  if (!env.is_object() || !env.contains("payloadType") || !env["payloadType"].is_string() ||
      !env.contains("payload") || !env["payload"].is_string() || !env.contains("signatures") ||
      !env["signatures"].is_array())
    throw ManifestError(
        kMalformed,
        "manifest envelope: expected a DSSE envelope {payloadType, payload, "
        "signatures} (an unsigned draft? sign it with `sovguardctl manifest sign`)");
  if (env["payloadType"] != kPayloadType)
    throw ManifestError(kMalformed, "manifest envelope: payloadType is " +
                                        env["payloadType"].dump() + ", expected " +
                                        std::string(kPayloadType));
  const Bytes payload = FromBase64(env["payload"].get<std::string>(), "manifest envelope payload");
  const std::string body(payload.begin(), payload.end());
  const std::string pae = Pae(kPayloadType, body);
  const std::string want_id = KeyId(key);
  const EVP_MD* md = DigestFor(key, "manifest key");
  size_t tried = 0;
  for (const auto& s : env["signatures"]) {
    if (!s.is_object() || !s.contains("sig") || !s["sig"].is_string()) continue;
    if (s.contains("keyid") && s["keyid"].is_string() && !s["keyid"].get<std::string>().empty() &&
        s["keyid"] != want_id)
      continue;
    ++tried;
    const Bytes sig = FromBase64(s["sig"].get<std::string>(), "manifest signature");
    base::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
    if (ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, key) == 1 &&
        EVP_DigestVerify(ctx.get(), sig.data(), sig.size(),
                         reinterpret_cast<const uint8_t*>(pae.data()), pae.size()) == 1)
      return Parse(body, true);
  }
  throw ManifestError(
      kBadSignature,
      tried ? "manifest envelope: no signature verifies with the manifest key " + want_id
            : "manifest envelope: no signature by the manifest key " + want_id);
}

}  // namespace sovguard::attestation::manifest
