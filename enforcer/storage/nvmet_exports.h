// NVMe over fabrics namespaces this host's kernel target (nvmet) exports, as configfs holds them.
// Each serves a block device or file to initiators on the network, which no storage program
// judges: a protected volume served there leaves the host unjudged.
#pragma once

#include <filesystem>
#include <vector>

namespace sovguard::storage {

struct NvmetNamespace {
  std::filesystem::path dir;          // <configfs>/nvmet/subsystems/<nqn>/namespaces/<nsid>
  std::filesystem::path device_path;  // the block device or file it serves (empty: none set)
  bool enabled = false;               // being served
};

// Every namespace under `configfs`/nvmet, enabled or not; none where nvmet is not loaded or
// configfs is not mounted. An entry that vanishes while it is read is left out.
std::vector<NvmetNamespace> NvmetNamespaces(
    const std::filesystem::path& configfs = "/sys/kernel/config");

// Stops serving `ns` (0 into its `enable`: the kernel drops it from every port, and initiators
// lose it). Throws std::system_error naming the namespace when the kernel refuses.
void DisableNvmetNamespace(const NvmetNamespace& ns);

}  // namespace sovguard::storage
