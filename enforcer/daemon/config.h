// sovguardd's settings: embedded defaults, then /etc/sovguard/sovguardd.conf (key = value lines),
// then command-line flags. Unknown keys are errors, never ignored.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace sovguard::daemon {

// libvirt's default cgroup partition (a domain without <resource><partition>).
inline constexpr std::string_view kDefaultLibvirtPartition = "/machine";

struct Config {
  std::string libvirt_uri = "qemu:///system";
  std::filesystem::path libvirt_qemu_run_dir = "/run/libvirt/qemu";  // NAME.pid files of QEMU
  std::filesystem::path state_dir = "/var/lib/sovguard";
  std::filesystem::path runtime_dir = "/run/sovguard";
  // bpffs directory where the network datapath pins its maps: a restarted daemon adopts them
  // (guests, counters, quota windows) instead of starting from zero.
  std::filesystem::path bpf_pin_dir = "/sys/fs/bpf/sovguard";
  std::filesystem::path data_dir = "/usr/share/sovguard";  // world.sgjt, default policy
  std::filesystem::path policy_bundle;                     // empty: the shipped default policy
  std::filesystem::path trusted_keys_dir = "/etc/sovguard/trusted-keys";
  // auto (hardware /dev/tpmrm0, else the daemon's own swtpm on Unix sockets) | device:PATH |
  // swtpm:... (an operator's own swtpm: who can reach it is the operator's responsibility).
  std::string tpm = "auto";
  // The PCR sovguard extends (SHA-256 bank). 13 by default: non-resettable and unused by firmware,
  // GRUB, IMA and shim (docs/threat-model.md); the resettable 16 and 23 are refused.
  std::uint32_t sovguard_pcr = 13;
  // Auditors' endpoint: gRPC with mutual TLS. Off while api_listen is empty. Only client
  // certificates that chain to auditor_ca AND whose SHA-256 fingerprint is listed (one lower-case
  // hex per line, '#' comments) in auditor_allowlist are served.
  std::string api_listen;  // e.g. 0.0.0.0:7443
  std::filesystem::path api_cert = "/etc/sovguard/tls/server.pem";
  std::filesystem::path api_key = "/etc/sovguard/tls/server.key";
  std::filesystem::path auditor_ca = "/etc/sovguard/tls/auditor-ca.pem";
  std::filesystem::path auditor_allowlist = "/etc/sovguard/tls/auditors.allow";
  // Quote requests arriving while a TPM quote is in flight are answered together by the next one
  // (one TPM2_Quote over a Merkle tree of their nonces). The first waiting request also holds the
  // quote this long for others to join: 0 to 100 ms.
  std::uint32_t quote_batch_window_ms = 2;
  // Prometheus text metrics (GET /metrics) on a loopback address; empty turns them off.
  std::string metrics_listen = "127.0.0.1:9477";
  // How often the daemon checks that every program is still attached with the expected tag and
  // that the policy maps match the policy digest (and repairs what is not).
  std::uint32_t tamper_check_seconds = 5;
  // Every new TAP device gets a drop-everything filter the moment the kernel creates it, until a
  // guest claims it (NIC hot-plug has no libvirt hook). Turn off only on hosts whose other
  // software creates TAP devices of its own.
  bool default_deny_new_taps = true;
  bool start_libvirtd = true;  // start libvirtd/virtlogd when none answers (newcomer path)
  // The libvirt cgroup partition (<resource><partition>) guests run in: the storage path guards
  // its cgroup, and a guest placed in any other partition is refused at start. "/machine" is
  // libvirt's default; another one is a top-level name ("/tenants", libvirt's
  // <cgroup2>/tenants.partition without systemd), which must exist in every cgroup hierarchy.
  std::string libvirt_partition{kDefaultLibvirtPartition};
  // Start a software TPM when no hardware TPM exists: swtpm with its state in state_dir/swtpm,
  // serving only Unix sockets in runtime_dir/swtpm (mode 0600, this daemon's user).
  bool start_swtpm = true;
};

// Parses "key = value" lines; '#' starts a comment. Throws std::runtime_error("file:line: ...").
void LoadConfigFile(const std::filesystem::path& file, Config& config);
// Applies one "key=value" override (from --set or a dedicated flag).
void ApplySetting(const std::string& key, const std::string& value, Config& config,
                  const std::string& where);
std::vector<std::string> ConfigKeys();

}  // namespace sovguard::daemon
