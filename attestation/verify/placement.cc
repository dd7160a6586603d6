#include "attestation/verify/placement.h"

#include <curl/curl.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "attestation/common/bytes.h"
#include "attestation/verify/verifier.h"

namespace sovguard::attestation::verify {
namespace {

// Placement 1.6 added traits; every call here exists since.
constexpr const char* kMicroversion = "OpenStack-API-Version: placement 1.6";
// Writes of one provider's traits per Reconcile: the first and the retries after a 409.
constexpr int kConflictWrites = 5;

size_t Append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

}  // namespace

std::string DatasetTrait(std::string_view dataset_id) {
  if (dataset_id.empty()) throw InputError("dataset trait: empty dataset id");
  std::string t = std::string(kTraitPrefix) + "DATASET_";
  for (const char c : dataset_id) {
    const auto u = static_cast<unsigned char>(c);
    t += std::isalnum(u) && u < 0x80 ? static_cast<char>(std::toupper(u)) : '_';
  }
  if (t.size() > 255)
    throw InputError("dataset \"" + std::string(dataset_id) +
                     "\": its trait would exceed Placement's 255 bytes");
  return t;
}

struct PlacementClient::Curl {
  CURL* handle = nullptr;
  ~Curl() {
    if (handle) curl_easy_cleanup(handle);
  }
};

PlacementClient::PlacementClient(PlacementConfig config)
    : config_(std::move(config)), curl_(std::make_unique<Curl>()) {
  while (!config_.endpoint.empty() && config_.endpoint.back() == '/') config_.endpoint.pop_back();
  if (config_.endpoint.rfind("http://", 0) != 0 && config_.endpoint.rfind("https://", 0) != 0)
    throw InputError("--placement: expected an http:// or https:// URL, got \"" + config_.endpoint +
                     "\"");
  curl_->handle = curl_easy_init();
  if (!curl_->handle) throw AttestationError("libcurl: curl_easy_init failed");
}

PlacementClient::~PlacementClient() = default;

void PlacementClient::RefreshToken() {
  std::string t;
  if (!config_.token_file.empty()) {
    const Bytes b = ReadFileBytes(config_.token_file);
    t.assign(b.begin(), b.end());
  } else if (const char* env = std::getenv("OS_AUTH_TOKEN")) {
    t = env;
  }
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  if (t.empty())
    throw InputError("Placement token: " + (config_.token_file.empty()
                                                ? std::string("OS_AUTH_TOKEN is not set")
                                                : config_.token_file + " is empty"));
  if (t.find_first_of("\r\n") != std::string::npos)
    throw InputError("Placement token: more than one line");
  token_ = std::move(t);
}

PlacementClient::Response PlacementClient::Call(const std::string& method, const std::string& path,
                                                const std::string& body) {
  CURL* h = curl_->handle;
  curl_easy_reset(h);
  Response r;
  const std::string url = config_.endpoint + path;
  const std::string auth = "X-Auth-Token: " + token_;
  using Slist = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;
  Slist headers(nullptr, &curl_slist_free_all);
  for (const char* hd : {kMicroversion, "Accept: application/json",
                         "Content-Type: application/json", auth.c_str()}) {
    curl_slist* next = curl_slist_append(headers.get(), hd);
    if (!next) throw AttestationError("libcurl: out of memory");
    headers.release();
    headers.reset(next);
  }
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "PUT") {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Append);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, static_cast<long>(config_.timeout.count()));
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);  // the token goes nowhere else
  char err[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
  if (const CURLcode c = curl_easy_perform(h); c != CURLE_OK)
    throw AttestationError(method + " " + path + ": " + (*err ? err : curl_easy_strerror(c)));
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  return r;
}

namespace {

// Placement's error body names the problem ({"errors": [{"detail": ...}]}); the status otherwise.
std::string HttpError(const std::string& what, long status, const std::string& body) {
  std::string detail;
  try {
    const auto j = nlohmann::json::parse(body);
    if (j.contains("errors") && j["errors"].is_array() && !j["errors"].empty())
      detail = j["errors"][0].value("detail", "");
  } catch (const nlohmann::json::exception&) {
  }
  for (auto& c : detail)
    if (c == '\n') c = ' ';
  return what + ": HTTP " + std::to_string(status) + (detail.empty() ? "" : " (" + detail + ")");
}

std::string UrlEscape(const std::string& s) {
  std::string out;
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

}  // namespace

std::string PlacementClient::ProviderUuid(const std::string& name) {
  if (auto it = uuids_.find(name); it != uuids_.end()) return it->second;
  const auto r = Call("GET", "/resource_providers?name=" + UrlEscape(name), "");
  if (r.status != 200)
    throw AttestationError(HttpError("GET /resource_providers?name=" + name, r.status, r.body));
  const auto j = nlohmann::json::parse(r.body);
  const auto& list = j.at("resource_providers");
  if (list.size() != 1)
    throw AttestationError("no resource provider named \"" + name +
                           "\" (its hypervisor host name, from the fleet file)");
  const std::string uuid = list[0].at("uuid").get<std::string>();
  uuids_[name] = uuid;
  return uuid;
}

TraitChange PlacementClient::Reconcile(const std::string& provider,
                                       const std::set<std::string>& wanted) {
  TraitChange ch;
  ch.provider = provider;
  try {
    for (const auto& t : wanted) {
      if (t.rfind(kTraitPrefix, 0) != 0)
        throw AttestationError("internal: trait " + t + " is not sovguard's");
      if (known_traits_.contains(t)) continue;
      const auto r = Call("PUT", "/traits/" + t, "");
      if (r.status != 201 && r.status != 204)
        throw AttestationError(HttpError("PUT /traits/" + t, r.status, r.body));
      known_traits_.insert(t);
    }
    ch.uuid = ProviderUuid(provider);
    const std::string path = "/resource_providers/" + ch.uuid + "/traits";
    for (int attempt = 0;; ++attempt) {
      auto r = Call("GET", path, "");
      if (r.status == 404) uuids_.erase(provider);  // deleted and maybe re-created: look up again
      if (r.status != 200) throw AttestationError(HttpError("GET " + path, r.status, r.body));
      const auto j = nlohmann::json::parse(r.body);
      std::set<std::string> now, next;
      for (const auto& t : j.at("traits")) now.insert(t.get<std::string>());
      for (const auto& t : now)
        if (t.rfind(kTraitPrefix, 0) != 0) next.insert(t);  // not ours: kept as found
      next.insert(wanted.begin(), wanted.end());
      ch.added.clear();
      ch.removed.clear();
      for (const auto& t : next)
        if (!now.contains(t)) ch.added.push_back(t);
      for (const auto& t : now)
        if (!next.contains(t)) ch.removed.push_back(t);
      if (ch.added.empty() && ch.removed.empty()) return ch;
      const nlohmann::json put = {
          {"traits", next}, {"resource_provider_generation", j.at("resource_provider_generation")}};
      r = Call("PUT", path, put.dump());
      if (r.status == 200) return ch;
      if (r.status != 409) throw AttestationError(HttpError("PUT " + path, r.status, r.body));
      // Someone else wrote between our read and our write: read again and decide afresh.
      if (attempt + 1 == kConflictWrites)
        throw AttestationError(
            HttpError("PUT " + path, r.status, r.body) + ": generation conflict on all " +
            std::to_string(kConflictWrites) +
            " writes (another writer changed the provider each time); traits not in step");
    }
  } catch (const nlohmann::json::exception& e) {
    ch.error = std::string("unexpected Placement answer: ") + e.what();
  } catch (const AttestationError& e) {
    ch.error = e.what();
  }
  return ch;
}

}  // namespace sovguard::attestation::verify
