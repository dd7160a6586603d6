// `sovguardctl manifest ...`: drafting and signing the reference manifest (manifest/manifest.h).
//   manifest scan [--sovguardd PATH] [--bpf-dir DIR] [--id ID] [--issuer NAME]
//                 [--jurisdiction CC] [--boot-pcrs-from TCTI] [-o FILE]
//       drafts a manifest from this host: the files sovguardd measures (measure/platform.h),
//       their SHA-256, the dpkg package owning each (name, version, supplier = Origin or
//       Maintainer, licence from the package's machine-readable copyright file), the kernel
//       command line, optionally the boot PCRs 0-9 read from a TPM. A certifier reviews it
//       (supplier jurisdictions are only filled in with --jurisdiction) and signs it:
//   manifest sign --key KEY.pem [-o FILE] DRAFT        DSSE envelope (Ed25519 or EC P-256)
//   manifest verify --pub PUB.pem ENVELOPE             checks the signature, prints a summary
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "attestation/manifest/manifest.h"
#include "attestation/measure/platform.h"

namespace sovguard::attestation::cli {

struct ScanOptions {
  measure::PlatformPaths paths;   // self = the sovguardd binary to describe
  std::filesystem::path bpf_dir;  // every *.bpf.o below, named relative to it; empty = none
  std::string id = "draft";
  std::string issuer;
  std::string jurisdiction;    // filled into every component when given (review it!)
  std::string boot_pcrs_tcti;  // read PCRs 0-9 from this TPM as the accepted boot values
};
manifest::Manifest ScanHost(const ScanOptions& o);

// args[0] == "manifest". Returns 0 ok, 1 failure, 2 usage error.
int RunManifestCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace sovguard::attestation::cli
