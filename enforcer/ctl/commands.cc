#include "enforcer/ctl/commands.h"

#include <fmt/format.h>

#include "attestation/cli/attest_cli.h"
#include "attestation/cli/manifest_cli.h"
#include "enforcer/ctl/table_path.h"
#include "enforcer/probe/probe.h"
#include "policy/cli/policy_cli.h"

namespace sovguard::ctl {

std::optional<int> RunExtraCommand(const std::vector<std::string>& args, std::ostream& out,
                                   std::ostream& err) {
  if (args[0] == "jurisdiction") {
    std::string error;
    const auto with_table = WithDefaultTable(args, CurrentTableSearch(), error);
    if (!with_table) {
      err << "sovguardctl jurisdiction lookup: " << error << "\n";
      return 1;
    }
    return policy::RunPolicyCli(*with_table, out, err);
  }
  if (args[0] == "policy") return policy::RunPolicyCli(args, out, err);
  if (args[0] == "attest") return attestation::cli::RunAttestCli(args, out, err);
  if (args[0] == "manifest") return attestation::cli::RunManifestCli(args, out, err);
  return std::nullopt;
}

void PrintExtraUsage(std::ostream& out) {
  out << R"(  policy check FILE...                validate policies (file:line:col: what was expected)
  policy bundle --key K --version N [--issuer S] FILES... -o B   sign a policy bundle
  policy verify B --pub P             verify a bundle's signature and content
  policy import-odrl FILE [--dataset ID] [--strict]   ODRL 2.2 JSON-LD -> sovguard policy
  jurisdiction lookup ADDR [--table F] [--policy P]    country, EU/EEA membership, zone
  jurisdiction compile --from DIR [--mmdb F] -o F      build the shipped table format
  attest quote --nonce HEX -o FILE [--socket PATH | --node HOST:PORT --cert C --key K --ca CA]
  manifest scan [--bpf-dir DIR] [--jurisdiction CC] [-o F]   draft a reference manifest of this host
  manifest sign --key K [-o F] DRAFT  sign a reviewed manifest (DSSE, Ed25519 or EC P-256)
  manifest verify --pub P ENVELOPE    check a signed manifest
)";
}

int PrintStatus(const nlohmann::json& status, std::ostream& out, std::ostream& err) {
  try {
    out << fmt::format("sovguardd {}  pid {}\n", status.at("version").get<std::string>(),
                       status.at("pid").get<int>());
    const auto& tpm = status.at("tpm");
    out << fmt::format("TPM:      {}{}\n", tpm.at("description").get<std::string>(),
                       tpm.at("software").get<bool>() ? "  [SOFTWARE TPM]" : "");
    out << fmt::format("libvirt:  {}\n", status.at("libvirt").at("state").get<std::string>());
    if (status.contains("not_enforced")) {
      const auto unguarded = status["not_enforced"].get<std::string>();
      out << (unguarded.empty() ? std::string("enforced: every path\n")
                                : "enforced: NOT ENFORCED: " + unguarded +
                                      "\n          guests holding a dataset are refused\n");
    }
    if (status.contains("policy") && status["policy"].is_object()) {
      const auto& p = status["policy"];
      out << fmt::format("policy:   {} (sha256 {}, compiled {})\n",
                         p.at("source").get<std::string>(),
                         p.at("sha256").get<std::string>().substr(0, 16),
                         p.at("compiled_digest").get<std::string>().substr(0, 16));
      for (const auto& d : p.at("datasets")) {
        out << fmt::format("          dataset {:<24} bit {:<2} mode {}\n",
                           d.at("id").get<std::string>(), d.at("index").get<int>(),
                           d.at("mode").get<std::string>());
      }
    }
    if (status.contains("measurements") && status["measurements"].is_object()) {
      const auto& m = status["measurements"];
      out << fmt::format("measured: PCR {} log {} ({})\n", m.at("pcr").get<int>(),
                         m.at("log").get<std::string>(), m.at("state").get<std::string>());
    }
    if (status.contains("guests")) {
      out << fmt::format("\n{:<20} {:<10} {:<18} {:<8} {}\n", "GUEST", "LABEL", "DATASETS", "TAPS",
                         "CGROUP");
      for (const auto& g : status["guests"]) {
        std::string taps;
        for (const auto& t : g.at("taps")) taps += (taps.empty() ? "" : ",") + t.get<std::string>();
        out << fmt::format("{:<20} {:<10} {:#018x} {:<8} {}\n", g.at("name").get<std::string>(),
                           g.at("label").get<std::string>(),
                           g.at("datasets_mask").get<std::uint64_t>(), taps,
                           g.at("cgroup").get<std::string>());
        if (g.contains("datasets")) {
          std::string ds;
          for (const auto& d : g["datasets"]) {
            ds += fmt::format("{}{} ({})", ds.empty() ? "" : ", ", d.at("id").get<std::string>(),
                              d.at("mode").get<std::string>());
          }
          out << "    datasets: " << (ds.empty() ? "none" : ds) << "\n";
        }
        for (const auto& a : g.value("attachments", nlohmann::json::array())) {
          out << fmt::format("    {} ifindex {}: {} {} id {} tag {}: {}\n",
                             a.at("tap").get<std::string>(), a.at("ifindex").get<unsigned>(),
                             a.at("hook").get<std::string>(), a.at("program").get<std::string>(),
                             a.at("prog_id").get<unsigned>(), a.at("tag").get<std::string>(),
                             a.at("attached").get<bool>() ? "attached" : "NOT ATTACHED");
        }
        if (!g.at("error").get<std::string>().empty()) {
          out << "    error: " << g.at("error").get<std::string>() << "\n";
        }
      }
    }
    if (status.contains("network")) out << "\n" << status["network"].get<std::string>() << "\n";
    if (status.contains("storage") && status["storage"].is_object()) {
      const auto& s = status["storage"];
      if (!s.value("enforced", false)) {
        out << "\nstorage path: NOT ENFORCED: " << s.value("error", "") << "\n";
      } else {
        out << fmt::format("\nstorage path: programs at {} ({}), {} guests, {} protected volumes\n",
                           s.value("machine_cgroup", ""), s.value("guest_discovery", ""),
                           s.value("guests", 0), s.value("volumes", 0));
        for (const auto& p : s.value("paths", nlohmann::json::array())) {
          out << fmt::format("  {:<24} {} ({})\n", p.value("path", ""), p.value("mechanism", ""),
                             p.value("guarantee", ""));
        }
        for (const auto& c : s.value("counters", nlohmann::json::array())) {
          out << fmt::format("  guest {} dataset {}: read {} B, written {} B, denied {}\n",
                             c.value("guest", ""), c.value("dataset", ""),
                             c.value("read_bytes", std::uint64_t{0}),
                             c.value("write_bytes", std::uint64_t{0}),
                             c.value("denied", std::uint64_t{0}));
        }
        if (!s.value("error", "").empty()) out << "  error: " << s.value("error", "") << "\n";
      }
    }
    out << "\n" << enforcer::ToTable(enforcer::ProbeReportFromJson(status.at("probe")));
  } catch (const nlohmann::json::exception& e) {
    err << "sovguardctl status: unexpected status document: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

}  // namespace sovguard::ctl
