#include "attestation/verify/verify_cli.h"

#include <openssl/objects.h>
#include <algorithm>
#include <cctype>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "attestation/evidence/format.h"
#include "attestation/manifest/manifest.h"
#include "attestation/verify/ear.h"
#include "attestation/verify/fleet_keeper.h"
#include "attestation/verify/html_report.h"
#include "attestation/verify/live.h"
#include "attestation/verify/verifier.h"
#include "base/file.h"
#include "base/openssl.h"

namespace sovguard::attestation::verify {
namespace {

constexpr const char* kUsage =
    "usage: sovguard-verify --nonce HEX [--ak-pub AK.pem] [--ek-ca DIR [--ek-policy OIDS]]\n"
    "                       [--state FILE]\n"
    "                       [--policy-digest HEX] [--manifest M --manifest-key PEM]\n"
    "                       [--allow-jurisdiction CODES] [--ear-key KEY [--ear-out FILE]]\n"
    "                       [--require-strongest] [--sovguard-pcr N] [--allow-software-tpm]\n"
    "                       [--waive NAME,...] [--json] [--html FILE] EVIDENCE\n"
    "       sovguard-verify --nonce HEX --ak-pub AK.pem [--json] --tpm2-quote MSG SIG PCRS\n"
    "       sovguard-verify make-challenge --identity IDENTITY.json -o CHALLENGE.json\n"
    "                       --secret-out SECRET      (credential activation, offline)\n"
    "       sovguard-verify (--node HOST:PORT | --fleet FILE) --ca CA --cert CERT --key KEY\n"
    "                       [--timeout SEC] [--jobs N] [--rounds N [--interval SEC]]\n"
    "                       [check options] [--json] [--html FILE]\n"
    "                       [--placement URL [--placement-token-file FILE]\n"
    "                        [--placement-datasets IDS]] [--stale-after SEC]\n"
    "                       [--metrics-file FILE.prom]\n"
    "  EVIDENCE  evidence from `sovguardctl attest quote` (JSON or binary protobuf); - = stdin\n"
    "  --nonce   the nonce sent to the node (hex, 8..64 bytes)\n"
    "  --ak-pub  the node's enrolled AK public key (PEM); the quote must be signed by it\n"
    "  --ek-ca   folder of trusted EK CA certificates (PEM/DER); EK certificates must chain\n"
    "            and follow the TCG EK profile\n"
    "  --ek-policy  certificate policy OIDs (comma-separated), one of which every EK\n"
    "            certificate must carry (with --ek-ca)\n"
    "  --state   verifier state file: TPM counters must advance past the last passing verdict\n"
    "  --policy-digest  SHA-256 of the policy bundle the auditor approved: the node's active\n"
    "            policy must be it; without it the verdict fails (EXPECTED_POLICY_MISSING)\n"
    "            unless waived (--waive policy)\n"
    "  --manifest      signed reference manifest (DSSE envelope from `sovguardctl manifest sign`)\n"
    "  --manifest-key  the certifier's public key (PEM, Ed25519 or EC P-256)\n"
    "  --allow-jurisdiction  allowed supplier jurisdictions: ISO codes, EU, EEA, comma-separated\n"
    "                  (default EEA = EU + IS, LI, NO)\n"
    "  --require-strongest  fail (MECHANISM_DOWNGRADED) when an enforcement path runs a weaker\n"
    "            mechanism than the strongest sovguard supports (default: pass, downgrades named)\n"
    "  --sovguard-pcr  the PCR sovguard's log must extend (8-15, default 13)\n"
    "  --allow-software-tpm  accept a software TPM (= --waive software-tpm)\n"
    "  --waive   accept unmet requirements by name (comma-separated): boot-log, ima, manifest,\n"
    "            policy, root-of-trust, software-tpm, interruptions; listed in the report and\n"
    "            the EAR\n"
    "  --tpm2-quote  files of `tpm2_quote -m MSG -s SIG -o PCRS -q HEX` (tpm2-tools)\n"
    "  --ear-key signs an EAT Attestation Result (EAR) JWT with this private key (PEM, EC P-256\n"
    "            = ES256 or Ed25519 = EdDSA): to --ear-out FILE, else to standard output (and\n"
    "            the report to standard error)\n"
    "  --node    fetch evidence live over mutual TLS: identity, credential activation (AK bound\n"
    "            to the EK), quote with a fresh nonce; then every check\n"
    "  --fleet   a file of HOST:PORT lines, verified concurrently (--jobs, default 8): one line\n"
    "            per node and a summary; exit 1 if any node fails or is unreachable\n"
    "  --rounds  continuous attestation: verify the fleet N times, --interval SEC apart (default\n"
    "            60); a node's CEL that extends the one it showed before replays only its new\n"
    "            records (byte-identical prefix remembered in memory); exit 1 if any round "
    "failed;\n"
    "            --rounds 0: until stopped\n"
    "  --placement  OpenStack Placement API: after each round, every node's resource provider\n"
    "            (fleet file: HOST:PORT [PROVIDER], default HOST) carries "
    "CUSTOM_SOVGUARD_ATTESTED\n"
    "            and CUSTOM_SOVGUARD_DATASET_<ID> per --placement-datasets ID (needs\n"
    "            --policy-digest) while its verdict passes and is fresh, none otherwise; other\n"
    "            traits are kept. Token (X-Auth-Token) from --placement-token-file, re-read each\n"
    "            round, or OS_AUTH_TOKEN\n"
    "  --stale-after  a pass older than SEC (default 3 x max(--interval, --timeout)) is stale\n"
    "  --metrics-file  after each round, the verdicts in Prometheus text format (atomic\n"
    "            replace; for node_exporter's textfile collector)\n"
    "  --ak-challenge C --ak-secret S --ak-response R  credential activation done offline:\n"
    "            the challenge and secret from make-challenge, the node's answer from\n"
    "            `sovguardctl attest activate`; the evidence AK must be the challenged one\n"
    "  --json    full report as JSON on standard output\n"
    "  --html    also write the report as one self-contained HTML page (no script, no external\n"
    "            asset): failing checks first, every check with its clauses, the enforcement\n"
    "            timeline, guests, supplier jurisdictions; --fleet: every node, each round\n"
    "exit codes: 0 every requirement met (rooted AK, approved software, boot chain, the\n"
    "            policy the auditor approved, sovguard's PCR, uninterrupted enforcement,\n"
    "            hardware TPM) or waived by name, 1 a check failed or a requirement is missing\n"
    "            (in every mode: evidence file, --node, --fleet, --rounds), 2 input or usage\n"
    "            error\n";

struct Args {
  std::string evidence;
  std::optional<Bytes> nonce;
  std::optional<std::string> ak_pub;
  std::optional<std::filesystem::path> ek_ca;
  std::vector<std::string> ek_policies;
  std::optional<std::filesystem::path> state;
  std::optional<Bytes> policy;
  bool json = false;
  bool require_strongest = false;
  std::optional<Tpm2QuoteFiles> tpm2_quote;
  std::optional<std::string> manifest, manifest_key;
  std::vector<std::string> jurisdictions;
  std::optional<std::string> ear_key, ear_out;
  std::optional<std::string> html;
  std::optional<std::string> node, fleet;
  std::optional<std::string> ca, cert, key;
  int timeout = 30, jobs = 8, rounds = 1, interval = 60;
  uint32_t sovguard_pcr = kDefaultSovguardPcr;
  std::vector<std::string> waivers;
  std::optional<std::string> ak_challenge, ak_secret, ak_response;
  KeeperOptions keeper;  // Placement traits and metrics file (--fleet)
};

nlohmann::json ParseJsonFile(const std::string& text, const char* what) {
  try {
    auto j = nlohmann::json::parse(text);
    if (!j.is_object()) throw InputError(std::string(what) + ": expected a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(std::string(what) + ": " + e.what());
  }
}

Bytes HexField(const nlohmann::json& j, const char* key, const char* what) {
  if (!j.contains(key) || !j[key].is_string())
    throw InputError(std::string(what) + ": missing \"" + key + "\" (hex string)");
  return FromHex(j[key].get<std::string>(), std::string(what) + " " + key);
}

// sovguard-verify make-challenge --identity ID.json -o CHALLENGE.json --secret-out SECRET
int MakeChallengeCli(const std::vector<std::string>& a, std::ostream& err) {
  std::map<std::string, std::string> o;
  for (size_t i = 1; i < a.size(); i += 2) {
    if (i + 1 >= a.size()) throw InputError(a[i] + " needs a value");
    if (a[i] != "--identity" && a[i] != "-o" && a[i] != "--secret-out")
      throw InputError("make-challenge: unknown option " + a[i]);
    o[a[i]] = a[i + 1];
  }
  if (o.size() != 3) throw InputError("make-challenge needs --identity, -o and --secret-out");
  v1::Identity id;
  try {
    evidence::FromJson(base::ReadFileText(o["--identity"]), id);
  } catch (const AttestationError& e) {
    throw InputError("--identity: " + std::string(e.what()));
  }
  const Bytes ek(id.ek_public_rsa().begin(), id.ek_public_rsa().end());
  const Bytes ak(id.ak().name().begin(), id.ak().name().end());
  if (ek.empty() || ak.empty()) throw InputError("--identity: no ek_public_rsa or ak.name");
  AkChallenge c;
  try {
    c = MakeAkChallenge(ek, ak);
  } catch (const AttestationError& e) {
    throw InputError("--identity: " + std::string(e.what()));
  }
  // The secret first, private to the verifier: never a challenge without its secret on disk.
  WriteFileAtomic(o["--secret-out"], ToHex(c.secret) + "\n");
  WriteFileAtomic(o["-o"], nlohmann::json{{"ak_name", ToHex(ak)},
                                          {"ek_public", ToHex(ek)},
                                          {"credential_blob", ToHex(c.credential_blob)},
                                          {"encrypted_secret", ToHex(c.encrypted_secret)}}
                                   .dump(2) +
                               "\n");
  err << "challenge for AK " << ToHex(ak) << " written to " << o["-o"]
      << "; answer it with `sovguardctl attest activate --challenge " << o["-o"] << "`\n";
  return kExitPass;
}

Args Parse(const std::vector<std::string>& a) {
  Args r;
  bool have_evidence = false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto value = [&]() -> const std::string& {
      if (i + 1 >= a.size()) throw InputError(a[i] + " needs a value");
      return a[++i];
    };
    if (a[i] == "--json") {
      r.json = true;
    } else if (a[i] == "--nonce") {
      r.nonce = FromHex(value(), "--nonce");
    } else if (a[i] == "--ak-pub") {
      const auto& p = value();
      auto b = ReadFileBytes(p);
      r.ak_pub = std::string(b.begin(), b.end());
    } else if (a[i] == "--tpm2-quote") {
      Tpm2QuoteFiles f;
      f.attest = base::ReadFileText(value());
      f.signature = base::ReadFileText(value());
      f.pcrs = base::ReadFileText(value());
      r.tpm2_quote = std::move(f);
    } else if (a[i] == "--policy-digest") {
      r.policy = FromHex(value(), "--policy-digest");
      if (r.policy->size() != 32) throw InputError("--policy-digest must be 32 bytes (SHA-256)");
    } else if (a[i] == "--ak-challenge") {
      r.ak_challenge = base::ReadFileText(value());
    } else if (a[i] == "--ak-secret") {
      r.ak_secret = base::ReadFileText(value());
    } else if (a[i] == "--ak-response") {
      r.ak_response = base::ReadFileText(value());
    } else if (a[i] == "--node") {
      r.node = value();
    } else if (a[i] == "--fleet") {
      r.fleet = base::ReadFileText(value());
    } else if (a[i] == "--ca") {
      r.ca = base::ReadFileText(value());
    } else if (a[i] == "--cert") {
      r.cert = base::ReadFileText(value());
    } else if (a[i] == "--key") {
      r.key = base::ReadFileText(value());
    } else if (a[i] == "--timeout" || a[i] == "--jobs" || a[i] == "--rounds" ||
               a[i] == "--interval") {
      // value() moves past the flag: name it first (--jobs once set the timeout this way).
      const std::string flag = a[i];
      const std::string& v = value();
      int n = 0;
      try {
        n = std::stoi(v);
      } catch (...) {
        n = -1;
      }
      const int min = flag == "--interval" || flag == "--rounds" ? 0 : 1;  // --rounds 0: forever
      if (n < min || n > 3600)
        throw InputError(flag + " must be a number from " + std::to_string(min) + " to 3600");
      (flag == "--jobs"       ? r.jobs
       : flag == "--rounds"   ? r.rounds
       : flag == "--interval" ? r.interval
                              : r.timeout) = n;
    } else if (a[i] == "--ear-key") {
      r.ear_key = value();
    } else if (a[i] == "--ear-out") {
      r.ear_out = value();
    } else if (a[i] == "--html") {
      r.html = value();
    } else if (a[i] == "--manifest") {
      r.manifest = base::ReadFileText(value());
    } else if (a[i] == "--manifest-key") {
      r.manifest_key = base::ReadFileText(value());
    } else if (a[i] == "--require-strongest") {
      r.require_strongest = true;
    } else if (a[i] == "--allow-software-tpm") {
      r.waivers.push_back("software-tpm");
    } else if (a[i] == "--waive") {
      for (const auto& w : SplitList(value())) {
        if (WaivedReasons(w).empty()) {
          std::string known;
          for (const auto n : kWaiverNames) known += (known.empty() ? "" : ", ") + std::string(n);
          throw InputError("--waive: unknown requirement \"" + w + "\" (" + known + ")");
        }
        r.waivers.push_back(w);
      }
    } else if (a[i] == "--sovguard-pcr") {
      const std::string& v = value();
      if (v.empty() || v.size() > 2 || !std::all_of(v.begin(), v.end(), ::isdigit) ||
          std::stoi(v) < 8 || std::stoi(v) > 15)
        throw InputError("--sovguard-pcr must be 8-15 (16-23 can be reset by the host), not " + v);
      r.sovguard_pcr = static_cast<uint32_t>(std::stoi(v));
    } else if (a[i] == "--allow-jurisdiction") {
      const std::string& list = value();
      for (std::string code : SplitList(list)) {
        for (auto& ch : code) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        if (code.empty()) throw InputError("--allow-jurisdiction: empty code in \"" + list + "\"");
        r.jurisdictions.push_back(code);
      }
    } else if (a[i] == "--state") {
      r.state = value();
    } else if (a[i] == "--ek-ca") {
      r.ek_ca = value();
    } else if (a[i] == "--ek-policy") {
      for (const auto& oid : SplitList(value())) {
        // Dotted decimal only: OBJ_txt2obj with no_name=1 accepts exactly that.
        if (oid.empty() || !std::isdigit(static_cast<unsigned char>(oid[0])) ||
            !base::Asn1ObjectPtr(OBJ_txt2obj(oid.c_str(), 1)))
          throw InputError("--ek-policy: \"" + oid + "\" is not a dotted OID");
        r.ek_policies.push_back(oid);
      }
    } else if (r.keeper.ParseArg(a, i)) {
    } else if (a[i] == "-h" || a[i] == "--help") {
      throw InputError("");
    } else if (a[i].size() > 1 && a[i][0] == '-') {
      throw InputError("unknown option " + a[i]);
    } else {
      if (have_evidence) throw InputError("more than one evidence file given");
      r.evidence = a[i];
      have_evidence = true;
    }
  }
  if ((r.ak_challenge || r.ak_secret || r.ak_response) &&
      !(r.ak_challenge && r.ak_secret && r.ak_response))
    throw InputError("--ak-challenge, --ak-secret and --ak-response go together");
  const bool live = r.node || r.fleet;
  if ((r.keeper.active() || r.keeper.stale_after || !r.keeper.datasets.empty()) && !r.fleet)
    throw InputError("--placement, --stale-after and --metrics-file apply to --fleet");
  if (live) {
    if (r.node && r.fleet) throw InputError("--node and --fleet are exclusive");
    if (r.node && r.rounds != 1) throw InputError("--rounds applies to --fleet");
    if (have_evidence || r.tpm2_quote)
      throw InputError("--node/--fleet fetch the evidence: give no evidence file");
    if (!r.ca || !r.cert || !r.key) throw InputError("--node/--fleet need --ca, --cert and --key");
    if (r.nonce) throw InputError("--node/--fleet make a fresh nonce: --nonce is not used");
    if (r.fleet && r.ear_key && !r.ear_out)
      throw InputError("--fleet with --ear-key needs --ear-out DIR");
    return r;
  }
  if (r.ca || r.cert || r.key) throw InputError("--ca, --cert and --key apply to --node/--fleet");
  if (r.rounds != 1) throw InputError("--rounds applies to --fleet");
  if (r.tpm2_quote && have_evidence)
    throw InputError("give either an evidence file or --tpm2-quote, not both");
  if (!have_evidence && !r.tpm2_quote) throw InputError("no evidence file given");
  if (r.ear_out && !r.ear_key) throw InputError("--ear-out needs --ear-key");
  if (r.manifest.has_value() != r.manifest_key.has_value())
    throw InputError("--manifest and --manifest-key go together");
  if (!r.nonce)
    throw InputError("--nonce is required (freshness cannot be established without it)");
  return r;
}

// One verification of every node: a line each (or a JSON array), EARs when asked; true when
// every node answered and passed.
bool FleetRound(const std::vector<std::string>& targets, const TlsClient& tls, const Options& o,
                const Args& a, EVP_PKEY* ear_key, std::ostream& out,
                std::vector<LiveResult>* results_out) {
  auto& results = *results_out = VerifyFleet(targets, tls, o, a.jobs);
  bool all = true;
  for (const auto& r : results) all &= r.fetched && r.report.passed();
  if (a.json) {
    std::string arr = "[";
    for (size_t i = 0; i < results.size(); ++i) {
      if (i) arr += ",";
      arr += results[i].fetched
                 ? RenderJson(results[i].report)
                 : "{\"node\": \"" + results[i].target + "\", \"verdict\": \"error\"}";
    }
    out << arr << "]\n";
  } else {
    out << RenderFleet(results);
  }
  if (a.html) {
    std::vector<HtmlNode> nodes;
    for (const auto& r : results)
      nodes.push_back({r.target, r.fetched ? &r.report : nullptr, r.fetched ? "" : r.error});
    WriteFileAtomic(*a.html, RenderHtml(nodes, NowRfc3339()));
  }
  if (ear_key) {
    std::filesystem::create_directories(*a.ear_out);
    for (const auto& r : results)
      if (r.fetched)
        WriteFileAtomic(std::filesystem::path(*a.ear_out) / (r.target + ".jwt"),
                        MakeEarJwt(r.report, ear_key, {0, std::nullopt}) + "\n");
  }
  return all;
}

}  // namespace

std::vector<std::string> SplitList(const std::string& list) {
  std::vector<std::string> items;
  for (size_t start = 0; start <= list.size();) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    items.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return items;
}

int RunVerifyCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  try {
    if (!args.empty() && args[0] == "make-challenge") return MakeChallengeCli(args, err);
    const Args a = Parse(args);
    if (a.tpm2_quote) {
      const Report rep = VerifyTpm2Quote(*a.tpm2_quote, Options{a.nonce, a.ak_pub, {}});
      if (a.html) WriteFileAtomic(*a.html, RenderHtml({{"tpm2_quote", &rep, ""}}, NowRfc3339()));
      out << (a.json ? RenderJson(rep) : RenderText(rep));
      return rep.passed() ? kExitPass : kExitFail;
    }
    Options o{a.nonce, a.ak_pub, a.ek_ca, a.state, a.policy};
    if (a.manifest) o.manifest_envelope = std::make_shared<const std::string>(*a.manifest);
    o.manifest_key_pem = a.manifest_key;
    o.allowed_jurisdictions = a.jurisdictions;
    o.require_strongest = a.require_strongest;
    o.sovguard_pcr = a.sovguard_pcr;
    o.waivers = a.waivers;
    o.observe = a.html.has_value();
    if (!a.ek_policies.empty() && !a.ek_ca) throw InputError("--ek-policy needs --ek-ca");
    o.ek_policies = a.ek_policies;
    if (a.ak_challenge) {
      if (a.node || a.fleet) throw InputError("--node/--fleet make their own challenge");
      const auto c = ParseJsonFile(*a.ak_challenge, "--ak-challenge");
      const auto r = ParseJsonFile(*a.ak_response, "--ak-response");
      std::string secret = *a.ak_secret;
      while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
      o.ak_ek_binding = AkEkBinding{
          HexField(c, "ek_public", "--ak-challenge"), HexField(c, "ak_name", "--ak-challenge"),
          FromHex(secret, "--ak-secret"), HexField(r, "secret", "--ak-response"), ""};
    }
    std::optional<base::EvpPkeyPtr> ear_key;
    if (a.ear_key) ear_key = manifest::LoadPrivateKey(*a.ear_key);  // before any verdict
    // One verdict out: the report, and the EAR either to --ear-out (report on stdout) or on
    // stdout (report on stderr, so the JWT can be piped). Exit code from the report.
    const auto emit = [&](const Report& rep, const std::optional<Bytes>& nonce) {
      const std::string report = a.json ? RenderJson(rep) : RenderText(rep);
      if (a.html)
        WriteFileAtomic(*a.html,
                        RenderHtml({{a.node ? *a.node : a.evidence, &rep, ""}}, NowRfc3339()));
      if (!ear_key) {
        out << report;
      } else if (const std::string jwt = MakeEarJwt(rep, ear_key->get(), {0, nonce}); a.ear_out) {
        WriteFileAtomic(*a.ear_out, jwt + "\n");
        out << report;
      } else {
        err << report;
        out << jwt << "\n";
      }
      return rep.passed() ? kExitPass : kExitFail;
    };
    if (a.node || a.fleet) {
      const TlsClient tls{*a.ca, *a.cert, *a.key, std::chrono::seconds(a.timeout)};
      if (a.fleet) {
        const auto targets = ParseFleetFile(*a.fleet);
        std::optional<FleetKeeper> keeper;
        if (a.keeper.active())
          keeper.emplace(a.keeper, ParseFleetNodes(*a.fleet),
                         std::chrono::seconds(
                             a.keeper.stale_after.value_or(3 * std::max(a.interval, a.timeout))),
                         a.policy.has_value());
        ReplayCache cache;
        Options fo = o;
        fo.replay_cache = &cache;
        bool all = true;
        for (int round = 1; a.rounds == 0 || round <= a.rounds; ++round) {
          if (round > 1) {
            // Rounds are paced, not synchronised: each round runs to its end first.
            std::this_thread::sleep_for(std::chrono::seconds(a.interval));
            if (!a.json) out << "round " << round << "\n";
          }
          const auto started = std::chrono::system_clock::now();
          std::vector<LiveResult> results;
          all &= FleetRound(targets, tls, fo, a, ear_key ? ear_key->get() : nullptr, out, &results);
          if (keeper) all &= keeper->Round(results, started, out);
          out.flush();
        }
        if (a.rounds > 1 && !a.json) {
          const auto st = cache.stats();
          out << "replay cache: " << st.hits << " of " << st.hits + st.misses
              << " CEL replays continued from an earlier round\n";
        }
        return all ? kExitPass : kExitFail;
      }
      const auto r = VerifyNode(*a.node, tls, o);
      if (!r.fetched) throw InputError(*a.node + ": " + r.error);
      return emit(r.report, std::nullopt);
    }
    Bytes data;
    if (a.evidence == "-")
      data.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    else
      data = ReadFileBytes(a.evidence);
    EvidenceView ev;  // logs.cel stays in `data`
    try {
      ev = ParseEvidenceView(data);
    } catch (const InputError& e) {
      throw InputError(a.evidence + ": " + e.what());
    }
    return emit(Verify(ev, o), a.nonce);
  } catch (const AttestationError& e) {
    // InputError, unreadable files, bad hex: all input or usage errors.
    if (*e.what()) err << "sovguard-verify: " << e.what() << "\n";
    err << kUsage;
    return kExitUsage;
  } catch (const std::exception& e) {
    err << "sovguard-verify: " << e.what() << "\n";
    return kExitUsage;
  }
}

}  // namespace sovguard::attestation::verify
