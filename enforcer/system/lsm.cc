#include "enforcer/system/lsm.h"

#include <exception>
#include <fstream>
#include <sstream>

#include "enforcer/system/mounts.h"

namespace sovguard::enforcer {

std::optional<std::string> BpfLsmInactiveReason(const std::filesystem::path& lsm_list) {
  if (lsm_list == "/sys/kernel/security/lsm") {
    try {
      EnsureSecurityfs();
    } catch (const std::exception& e) {
      return std::string("cannot read the active LSM list: ") + e.what();
    }
  }
  std::ifstream in(lsm_list);
  std::string list;
  if (!in || !std::getline(in, list)) {
    return "cannot read the active LSM list " + lsm_list.string();
  }
  std::stringstream names(list);
  for (std::string name; std::getline(names, name, ',');) {
    if (name == "bpf") return std::nullopt;
  }
  return "'bpf' is not in the active LSM list (" + list + "): lsm= on the kernel command line";
}

}  // namespace sovguard::enforcer
