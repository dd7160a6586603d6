// The output of policy compilation: what the enforcer writes into kernel maps. This is the
// contract between policy/ (which produces it, deterministically) and the datapath loaders (which
// consume it); keep it free of kernel or protobuf types.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bpf/sovguard_abi.h"

namespace sovguard::policy {

enum class Mode : std::uint8_t { kAudit = SG_MODE_AUDIT, kEnforce = SG_MODE_ENFORCE };

struct Quota {
  std::uint64_t bytes = 0;  // budget per window; a quota of 0 bytes is rejected at validation
  std::uint64_t window_seconds = 0;  // window length; the kernel resets the window itself
};

struct CompiledDataset {
  std::string id;
  std::uint8_t index = 0;  // bit position in every allowed_datasets mask
  Mode mode = Mode::kAudit;
  std::optional<Quota> egress;
  std::optional<Quota> read;
  std::optional<Quota> write;
  std::optional<std::int64_t>
      not_before;  // Unix seconds; outside the window the dataset is unusable
  std::optional<std::int64_t> not_after;
  bool read_only = false;
  // Non-IP ethertypes (host order, e.g. 0x88cc LLDP) a guest holding this dataset may send; empty:
  // none (ARP, IPv6 ND/RA/RS and DHCP always pass). A guest may send E only if every dataset it
  // holds lists E. At most SG_MAX_GUEST_ETHERTYPES; sorted. Part of the digest when non-empty.
  std::vector<std::uint16_t> allowed_ethertypes;
};

// One distinct jurisdiction: the value every address prefix resolves to. Index = class id.
// Class 0 is always "address space no table covers" (country unknown, allowed for no dataset).
using JurisdictionClass = sg_class;

struct Ipv4Prefix {
  std::uint32_t addr = 0;  // host byte order, bits past len are zero
  std::uint8_t len = 0;
  std::uint16_t class_id = 0;
};

struct Ipv6Prefix {
  std::array<std::uint8_t, 16> addr{};  // network byte order, bits past len are zero
  std::uint8_t len = 0;
  std::uint16_t class_id = 0;
};

struct CompiledPolicy {
  std::vector<CompiledDataset> datasets;   // datasets[i].index == i
  std::vector<JurisdictionClass> classes;  // classes[0] is the unknown class
  std::vector<Ipv4Prefix> ipv4;            // sorted by (addr, len); longest prefix wins on overlap
  std::vector<Ipv6Prefix> ipv6;            // sorted by (addr, len)
  // Rule sets of the port-limited exception classes (sg_class.flags: SG_CLASS_PORTS, index at
  // SG_CLASS_RULESET_SHIFT). Part of the digest when non-empty.
  std::vector<sg_port_ruleset> port_rulesets;
  std::uint64_t default_datasets = 0;     // the mask an unlabelled guest holds
  std::array<std::uint8_t, 32> digest{};  // SHA-256 of the canonical encoding of everything above
};

// ---- Storage path (bpf/storage, enforcer/storage): produced by CompileStorage() ----------------
// Host-independent: pools stay paths here; the node resolves them to device ids when it loads them.

struct StoragePool {
  enum class Kind : std::uint8_t { kPath, kMount, kDevice };
  Kind kind = Kind::kPath;
  std::string location;  // absolute path: directory (libvirt dir pool), mount point, /dev/ node
};

struct CompiledStorageDataset {
  std::string id;
  std::uint8_t index = 0;  // == CompiledDataset::index
  Mode mode = Mode::kAudit;
  bool read_only = false;
  std::optional<Quota> read, write;
  // Where the dataset's volumes may live. Empty: the policy names no pool, any location is
  // accepted.
  std::vector<StoragePool> pools;
};

struct CompiledStorage {
  std::vector<CompiledStorageDataset> datasets;  // datasets[i].index == i
  // The net policy's classes followed by one class per network-storage endpoint set. A dataset
  // that lists endpoints is allowed only in its endpoints' classes; one that lists none wherever
  // its residency allows.
  std::vector<JurisdictionClass> classes;
  std::vector<Ipv4Prefix> ipv4;  // jurisdiction prefixes plus endpoint prefixes, sorted (addr, len)
  std::vector<Ipv6Prefix> ipv6;
};

}  // namespace sovguard::policy
