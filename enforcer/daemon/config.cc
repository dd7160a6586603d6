#include "enforcer/daemon/config.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>

#include "enforcer/metrics/http_server.h"

namespace sovguard::daemon {
namespace {

bool ParseBool(const std::string& v, const std::string& where) {
  if (v == "true" || v == "yes" || v == "1") return true;
  if (v == "false" || v == "no" || v == "0") return false;
  throw std::runtime_error(where + ": expected true or false, got '" + v + "'");
}

// `value` as a decimal number from lo to hi, or nullopt (empty, a sign, trailing text, out of
// range).
std::optional<std::uint32_t> NumberIn(const std::string& value, unsigned long lo,
                                      unsigned long hi) {
  if (value.empty() || value.front() == '-') return std::nullopt;
  std::size_t used = 0;
  unsigned long n = 0;
  try {
    n = std::stoul(value, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used != value.size() || n < lo || n > hi) return std::nullopt;
  return static_cast<std::uint32_t>(n);
}

std::string Trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

}  // namespace

std::vector<std::string> ConfigKeys() {
  return {"libvirt_uri",
          "libvirt_qemu_run_dir",
          "state_dir",
          "runtime_dir",
          "data_dir",
          "policy_bundle",
          "trusted_keys_dir",
          "tpm",
          "sovguard_pcr",
          "api_listen",
          "api_cert",
          "api_key",
          "auditor_ca",
          "auditor_allowlist",
          "quote_batch_window_ms",
          "start_libvirtd",
          "libvirt_partition",
          "start_swtpm",
          "metrics_listen",
          "tamper_check_seconds",
          "bpf_pin_dir",
          "default_deny_new_taps"};
}

void ApplySetting(const std::string& key, const std::string& value, Config& c,
                  const std::string& where) {
  if (key == "libvirt_uri") {
    c.libvirt_uri = value;
  } else if (key == "libvirt_qemu_run_dir") {
    c.libvirt_qemu_run_dir = value;
  } else if (key == "state_dir") {
    c.state_dir = value;
  } else if (key == "default_deny_new_taps") {
    c.default_deny_new_taps = ParseBool(value, where);
  } else if (key == "bpf_pin_dir") {
    if (value.empty() || value.front() != '/') {
      throw std::runtime_error(where + ": bpf_pin_dir: expected an absolute path on bpffs, got '" +
                               value + "'");
    }
    c.bpf_pin_dir = value;
  } else if (key == "runtime_dir") {
    c.runtime_dir = value;
  } else if (key == "data_dir") {
    c.data_dir = value;
  } else if (key == "policy_bundle") {
    c.policy_bundle = value;
  } else if (key == "trusted_keys_dir") {
    c.trusted_keys_dir = value;
  } else if (key == "tpm") {
    if (value != "auto" && value.rfind("device:", 0) != 0 && value.rfind("swtpm:", 0) != 0) {
      throw std::runtime_error(where + ": tpm: expected auto, device:PATH or swtpm:host=H,port=P");
    }
    c.tpm = value;
  } else if (key == "api_listen") {
    if (!value.empty() && value.rfind(':') == std::string::npos) {
      throw std::runtime_error(where + ": api_listen: expected HOST:PORT, got '" + value + "'");
    }
    c.api_listen = value;
  } else if (key == "metrics_listen") {
    if (!value.empty()) {
      try {
        // Loopback only: the metrics name guests and datasets and have no authentication.
        if (!metrics::ParseListenAddress(value).loopback) {
          throw std::invalid_argument("a loopback address (127.0.0.1:PORT or [::1]:PORT)");
        }
      } catch (const std::invalid_argument& e) {
        throw std::runtime_error(where + ": metrics_listen: expected " + e.what() + ", got '" +
                                 value + "'");
      }
    }
    c.metrics_listen = value;
  } else if (key == "swtpm_port") {
    // The daemon's swtpm no longer listens on TCP: a loopback port lets any local user reset its
    // PCRs or answer in its place.
    throw std::runtime_error(where +
                             ": swtpm_port: no longer used: sovguardd's swtpm serves Unix sockets "
                             "in runtime_dir/swtpm; remove the setting");
  } else if (key == "tamper_check_seconds") {
    const auto n = NumberIn(value, 1, 3600);
    if (!n) {
      throw std::runtime_error(where + ": tamper_check_seconds: expected 1 to 3600, got '" + value +
                               "'");
    }
    c.tamper_check_seconds = *n;
  } else if (key == "quote_batch_window_ms") {
    const auto n = NumberIn(value, 0, 100);
    if (!n) {
      throw std::runtime_error(where + ": quote_batch_window_ms: expected 0 to 100, got '" + value +
                               "'");
    }
    c.quote_batch_window_ms = *n;
  } else if (key == "api_cert") {
    c.api_cert = value;
  } else if (key == "api_key") {
    c.api_key = value;
  } else if (key == "auditor_ca") {
    c.auditor_ca = value;
  } else if (key == "auditor_allowlist") {
    c.auditor_allowlist = value;
  } else if (key == "sovguard_pcr") {
    const auto n = NumberIn(value, 8, 15);
    if (!n) {
      throw std::runtime_error(where +
                               ": sovguard_pcr: expected a non-resettable PCR from 8 to 15, got '" +
                               value + "'");
    }
    c.sovguard_pcr = *n;
  } else if (key == "start_libvirtd") {
    c.start_libvirtd = ParseBool(value, where);
  } else if (key == "libvirt_partition") {
    // One path component after the slash: libvirt's escaping of nested partitions and of names
    // that collide with controller names is not reproduced here.
    const bool ok = value.size() > 1 && value.front() == '/' &&
                    value.find('/', 1) == std::string::npos && value != "/." && value != "/.." &&
                    std::all_of(value.begin() + 1, value.end(), [](char ch) {
                      return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' ||
                             ch == '_' || ch == '.';
                    });
    if (!ok) {
      throw std::runtime_error(where +
                               ": libvirt_partition: expected /machine or one top-level partition "
                               "name like /tenants (letters, digits, - _ .), got '" +
                               value + "'");
    }
    c.libvirt_partition = value;
  } else if (key == "start_swtpm") {
    c.start_swtpm = ParseBool(value, where);
  } else {
    std::string known;
    for (const auto& k : ConfigKeys()) known += (known.empty() ? "" : ", ") + k;
    throw std::runtime_error(where + ": unknown setting '" + key + "' (expected one of: " + known +
                             ")");
  }
}

void LoadConfigFile(const std::filesystem::path& file, Config& config) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file.string() + ": cannot open");
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const std::string where = file.string() + ":" + std::to_string(n);
    const auto hash = line.find('#');
    const std::string body = Trim(hash == std::string::npos ? line : line.substr(0, hash));
    if (body.empty()) continue;
    const auto eq = body.find('=');
    if (eq == std::string::npos) throw std::runtime_error(where + ": expected 'key = value'");
    ApplySetting(Trim(body.substr(0, eq)), Trim(body.substr(eq + 1)), config, where);
  }
}

}  // namespace sovguard::daemon
