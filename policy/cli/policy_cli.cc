#include "policy/cli/policy_cli.h"

#include <charconv>
#include <filesystem>
#include <fstream>
#include <optional>

#include <unistd.h>

#include "base/file.h"
#include "policy/bundle/bundle.h"
#include "policy/compile/compile.h"
#include "policy/jurisdiction/countries.h"
#include "policy/jurisdiction/table.h"
#include "policy/odrl/odrl.h"
#include "policy/validate/validate.h"

#ifndef SOVGUARD_POLICY_DATADIR
#define SOVGUARD_POLICY_DATADIR "/usr/share/sovguard"
#endif

namespace sovguard::policy {
namespace {

constexpr int kOk = 0;
constexpr int kInvalid = 1;
constexpr int kUsage = 2;

constexpr const char* kUsageText =
    "usage:\n"
    "  sovguardctl policy check FILE...\n"
    "  sovguardctl policy bundle --key K --version N [--issuer S] FILES... -o B\n"
    "  sovguardctl policy verify B --pub P\n"
    "  sovguardctl policy import-odrl FILE [--dataset ID] [--strict]\n"
    "  sovguardctl jurisdiction lookup ADDR [--table F] [--policy P]\n"
    "  sovguardctl jurisdiction compile --from DIR [--mmdb F] -o F\n";

// Splits arguments into positionals and --options (each option takes one value unless listed
// as a flag). Returns false with a message on an unknown option or a missing value.
struct Args {
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<std::string> flags;

  std::optional<std::string> Get(const std::string& name) const {
    std::optional<std::string> v;
    for (const auto& [k, val] : options) {
      if (k == name) v = val;
    }
    return v;
  }
  bool Has(const std::string& flag) const {
    return std::find(flags.begin(), flags.end(), flag) != flags.end();
  }
};

bool SplitArgs(const std::vector<std::string>& args, std::size_t from,
               const std::vector<std::string>& valued, const std::vector<std::string>& flag_names,
               Args& out, std::ostream& err) {
  for (std::size_t i = from; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a.size() > 1 && a[0] == '-' && a != "-") {
      if (std::find(flag_names.begin(), flag_names.end(), a) != flag_names.end()) {
        out.flags.push_back(a);
        continue;
      }
      if (std::find(valued.begin(), valued.end(), a) == valued.end()) {
        err << "unknown option " << a << "\n" << kUsageText;
        return false;
      }
      if (i + 1 >= args.size()) {
        err << "option " << a << " needs a value\n" << kUsageText;
        return false;
      }
      out.options.emplace_back(a, args[++i]);
    } else {
      out.positional.push_back(a);
    }
  }
  return true;
}

void PrintDiagnostics(const Diagnostics& diags, std::ostream& err) {
  for (const auto& d : diags) err << d.ToString() << "\n";
}

int PolicyCheck(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Args a;
  if (!SplitArgs(args, 2, {}, {}, a, err)) return kUsage;
  if (a.positional.empty()) {
    err << "policy check: no files given\n" << kUsageText;
    return kUsage;
  }
  std::vector<std::filesystem::path> paths(a.positional.begin(), a.positional.end());
  const auto result = LoadPolicyFiles(paths);
  PrintDiagnostics(result.warnings, err);
  if (!result.ok()) {
    PrintDiagnostics(result.diagnostics, err);
    err << result.diagnostics.size() << " error(s)\n";
    return kInvalid;
  }
  out << "ok: " << paths.size() << " file(s), " << result.policy->datasets.size() << " dataset(s), "
      << result.policy->zones.size() << " zone(s), " << result.policy->exceptions.size()
      << " exception(s)";
  if (!result.warnings.empty()) out << ", " << result.warnings.size() << " warning(s)";
  out << "\n";
  return kOk;
}

int JurisdictionLookup(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Args a;
  if (!SplitArgs(args, 2, {"--table", "--policy"}, {}, a, err)) return kUsage;
  if (a.positional.size() != 1) {
    err << "jurisdiction lookup: expected exactly one address\n" << kUsageText;
    return kUsage;
  }
  const auto addr = ParseAddress(a.positional[0]);
  if (!addr) {
    err << "jurisdiction lookup: \"" << a.positional[0] << "\" is not an IPv4 or IPv6 address\n";
    return kUsage;
  }
  std::string error;
  const auto table = JurisdictionTable::Load(a.Get("--table").value_or(DefaultTablePath()), &error);
  if (!table) {
    err << error << "\n";
    return kInvalid;
  }
  std::optional<ValidatedPolicy> policy;
  if (auto p = a.Get("--policy")) {
    auto r = LoadPolicyFiles({*p});
    if (!r.ok()) {
      PrintDiagnostics(r.diagnostics, err);
      return kInvalid;
    }
    policy = std::move(r.policy);
  }
  const auto hit = table->Lookup(*addr);
  out << "address: " << a.positional[0] << "\n";
  if (hit) {
    out << "country: " << hit->country << "\n"
        << "registry prefix: " << hit->matched.ToString() << "\n"
        << "groups: " << (hit->eu ? "EU EEA" : (hit->eea ? "EEA" : "-")) << "\n";
  } else {
    out << "country: unknown (no registry prefix covers it)\n";
  }
  if (policy) {
    const auto compiled = Compile(*policy, *table);
    const CompiledLookup lookup(compiled);
    const auto cls = lookup.ClassOf(*addr);
    const auto& k = compiled.classes.at(cls);
    std::string zone = "-";
    for (const auto& z : policy->zones) {
      if (z.id == k.zone && k.zone != 0) zone = z.name + " (" + z.jurisdiction + ")";
    }
    out << "operator zone: " << zone << "\n";
    out << "exception: " << ((k.flags & SG_CLASS_EXCEPTION) ? "yes" : "no") << "\n";
    out << "class: " << cls << "\n"
        << "allowed datasets:";
    bool any = false;
    for (const auto& d : compiled.datasets) {
      if (k.allowed_datasets & (std::uint64_t{1} << d.index)) {
        out << " " << d.id;
        any = true;
      }
    }
    out << (any ? "" : " none") << "\n";
    // A port-limited exception: which datasets reach it on which protocol and port.
    if ((k.flags & SG_CLASS_PORTS) &&
        (k.flags >> SG_CLASS_RULESET_SHIFT) < compiled.port_rulesets.size()) {
      for (const auto& r : compiled.port_rulesets[k.flags >> SG_CLASS_RULESET_SHIFT].rule) {
        if (r.datasets == 0) break;
        out << "allowed on " << (r.proto == 6 ? "tcp/" : "udp/") << r.port_lo;
        if (r.port_hi != r.port_lo) out << "-" << r.port_hi;
        out << ":";
        for (const auto& d : compiled.datasets) {
          if (r.datasets & (std::uint64_t{1} << d.index)) out << " " << d.id;
        }
        out << "\n";
      }
    }
  }
  return kOk;
}

int JurisdictionCompile(const std::vector<std::string>& args, std::ostream& out,
                        std::ostream& err) {
  Args a;
  if (!SplitArgs(args, 2, {"--from", "--mmdb", "-o"}, {}, a, err)) return kUsage;
  if (!a.positional.empty() || !a.Get("--from") || !a.Get("-o")) {
    err << "jurisdiction compile: needs --from DIR and -o FILE\n" << kUsageText;
    return kUsage;
  }
  std::string error;
  auto table = JurisdictionTable::FromCountryIpBlocks(*a.Get("--from"), &error);
  if (!table) {
    err << error << "\n";
    return kInvalid;
  }
  if (auto mmdb = a.Get("--mmdb"); mmdb && !table->AddMmdb(*mmdb, &error)) {
    err << error << "\n";
    return kInvalid;
  }
  if (!table->Save(*a.Get("-o"), &error)) {
    err << error << "\n";
    return kInvalid;
  }
  out << "wrote " << *a.Get("-o") << ": " << table->v4().size() << " IPv4 and "
      << table->v6().size() << " IPv6 prefixes, " << table->Countries().size() << " countries";
  if (table->dropped_conflicts() > 0) {
    out << ", " << table->dropped_conflicts() << " conflicting prefixes left unknown";
  }
  out << "\n";
  return kOk;
}

std::optional<std::string> ReadOrComplain(const std::string& path, std::ostream& err) {
  std::string error;
  auto bytes = base::TryReadFileText(path, &error);
  if (!bytes) err << path << ": " << error << "\n";
  return bytes;
}

int PolicyBundle(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Args a;
  if (!SplitArgs(args, 2, {"--key", "--version", "--issuer", "-o"}, {}, a, err)) return kUsage;
  const auto key = a.Get("--key");
  const auto version = a.Get("--version");
  const auto output = a.Get("-o");
  if (!key || !version || !output || a.positional.empty()) {
    err << "policy bundle: needs --key, --version, -o and at least one policy file\n" << kUsageText;
    return kUsage;
  }
  std::uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(version->data(), version->data() + version->size(), n);
  if (ec != std::errc() || ptr != version->data() + version->size() || n == 0) {
    err << "policy bundle: --version must be a positive integer, got \"" << *version << "\"\n";
    return kUsage;
  }
  std::string issuer = a.Get("--issuer").value_or("");
  if (issuer.empty()) {
    char host[256] = {};
    issuer = gethostname(host, sizeof host - 1) == 0 ? host : "unknown";
  }
  const auto pem = ReadOrComplain(*key, err);
  if (!pem) return kInvalid;
  std::vector<BundleFile> files;
  for (const auto& f : a.positional) {
    auto bytes = ReadOrComplain(f, err);
    if (!bytes) return kInvalid;
    files.push_back({std::filesystem::path(f).filename().string(), std::move(*bytes)});
  }
  std::string error;
  auto bundle = CreateBundle(n, issuer, std::move(files), *pem, &error);
  if (!bundle) {
    err << "policy bundle: " << error << "\n";
    return kInvalid;
  }
  std::ofstream o(*output, std::ios::binary | std::ios::trunc);
  o.write(bundle->data(), static_cast<std::streamsize>(bundle->size()));
  o.close();
  if (!o) {
    err << *output << ": write failed\n";
    return kInvalid;
  }
  out << "wrote " << *output << ": version " << n << ", " << a.positional.size() << " file(s), "
      << bundle->size() << " bytes\n";
  return kOk;
}

int PolicyVerify(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Args a;
  if (!SplitArgs(args, 2, {"--pub"}, {}, a, err)) return kUsage;
  if (a.positional.size() != 1 || !a.Get("--pub")) {
    err << "policy verify: needs one bundle and --pub\n" << kUsageText;
    return kUsage;
  }
  const auto bundle = ReadOrComplain(a.positional[0], err);
  const auto pub = ReadOrComplain(*a.Get("--pub"), err);
  if (!bundle || !pub) return kInvalid;
  std::string error;
  auto v = VerifyBundle(*bundle, {*pub}, &error);
  if (!v) {
    err << a.positional[0] << ": " << error << "\n";
    return kInvalid;
  }
  out << "ok: " << a.positional[0] << "\n"
      << "version: " << v->manifest.version << "\n"
      << "issuer: " << v->manifest.issuer << "\n"
      << "created: " << v->manifest.created << "\n"
      << "signed with: " << v->manifest.algorithm << " key " << v->manifest.key_id << "\n";
  for (const auto& f : v->manifest.files) out << "file: " << f.name << "\n";
  for (const auto& d : v->policy.datasets) {
    out << "dataset: " << d.id << " (" << (d.mode == Mode::kEnforce ? "enforce" : "audit") << ")\n";
  }
  return kOk;
}

int PolicyImportOdrl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Args a;
  if (!SplitArgs(args, 2, {"--dataset"}, {"--strict"}, a, err)) return kUsage;
  if (a.positional.size() != 1) {
    err << "policy import-odrl: expected exactly one ODRL file\n" << kUsageText;
    return kUsage;
  }
  const auto bytes = ReadOrComplain(a.positional[0], err);
  if (!bytes) return kInvalid;
  OdrlImportOptions options;
  options.dataset_id = a.Get("--dataset").value_or("");
  options.strict = a.Has("--strict");
  const auto result = ImportOdrl(*bytes, options);
  for (const auto& t : result.not_enforced) {
    err << a.positional[0] << ": not enforced by sovguard: " << t << "\n";
  }
  if (!result.ok()) {
    for (const auto& e : result.errors) err << a.positional[0] << ": " << e << "\n";
    return kInvalid;
  }
  out << RenderOdrlImport(result, a.positional[0]);
  return kOk;
}

}  // namespace

std::string DefaultTablePath() {
  if (const char* env = std::getenv("SOVGUARD_JURISDICTION_TABLE")) return env;
  return std::string(SOVGUARD_POLICY_DATADIR) + "/world.sgjt";
}

std::string DefaultPolicyPath() {
  return std::string(SOVGUARD_POLICY_DATADIR) + "/default-eu-eea.textproto";
}

int RunPolicyCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  try {
    if (args.size() < 2) {
      err << kUsageText;
      return kUsage;
    }
    const auto& group = args[0];
    const auto& cmd = args[1];
    if (group == "policy") {
      if (cmd == "check") return PolicyCheck(args, out, err);
      if (cmd == "bundle") return PolicyBundle(args, out, err);
      if (cmd == "verify") return PolicyVerify(args, out, err);
      if (cmd == "import-odrl") return PolicyImportOdrl(args, out, err);
    } else if (group == "jurisdiction") {
      if (cmd == "lookup") return JurisdictionLookup(args, out, err);
      if (cmd == "compile") return JurisdictionCompile(args, out, err);
    }
    err << "unknown command: " << group << " " << cmd << "\n" << kUsageText;
    return kUsage;
  } catch (const std::exception& e) {
    err << "error: " << e.what() << "\n";
    return kInvalid;
  }
}

}  // namespace sovguard::policy
