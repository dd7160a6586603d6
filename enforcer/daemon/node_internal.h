// Helpers shared by the node's files (node*.cc), not part of Node's interface.
#pragma once

#include <string>
#include <vector>

#include "enforcer/storage/storage_datapath.h"
#include "policy/compiled.h"

namespace sovguard::daemon {

// A dataset's mode as status, logs and snapshots name it: "enforce" or "audit".
std::string ModeText(policy::Mode m);

// Protects volumes a previous storage datapath held (restart, released stale state) on `sp`; a
// volume that cannot be protected again is logged as an error and the others still are.
void ProtectAgain(storage::StorageDatapath& sp,
                  const std::vector<storage::StorageDatapath::ProtectedVolume>& volumes);

}  // namespace sovguard::daemon
