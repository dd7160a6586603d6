#include "enforcer/storage/nvmet_exports.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "base/file.h"
#include "base/unique_fd.h"

namespace sovguard::storage {
namespace fs = std::filesystem;

std::vector<NvmetNamespace> NvmetNamespaces(const fs::path& configfs) {
  std::vector<NvmetNamespace> out;
  std::error_code ec;
  for (const auto& sub : fs::directory_iterator(configfs / "nvmet" / "subsystems", ec)) {
    std::error_code ec2;
    for (const auto& ns : fs::directory_iterator(sub.path() / "namespaces", ec2)) {
      if (!fs::exists(ns.path() / "enable", ec2)) continue;
      out.push_back(NvmetNamespace{.dir = ns.path(),
                                   .device_path = base::ReadFirstLine(ns.path() / "device_path"),
                                   .enabled = base::ReadFirstLine(ns.path() / "enable") == "1"});
    }
  }
  return out;
}

void DisableNvmetNamespace(const NvmetNamespace& ns) {
  const fs::path enable = ns.dir / "enable";
  const base::UniqueFd fd(::open(enable.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.Get() < 0 || ::write(fd.Get(), "0", 1) != 1)
    throw std::system_error(errno, std::generic_category(),
                            "disable nvmet namespace " + ns.dir.string());
}

}  // namespace sovguard::storage
