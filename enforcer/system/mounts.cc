#include "enforcer/system/mounts.h"

#include <sys/mount.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <system_error>

namespace sovguard::enforcer {

std::string UnescapeMountPath(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '\\' && i + 3 < in.size() && in.find_first_not_of("01234567", i + 1) >= i + 4) {
      out += static_cast<char>(std::stoi(in.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += in[i];
    }
  }
  return out;
}

namespace {

// Calls fn(mount_point, fstype) for each line of a mountinfo file until it returns true.
template <typename Fn>
bool ForEachMount(Fn&& fn, const std::filesystem::path& mountinfo = "/proc/self/mountinfo") {
  std::ifstream in(mountinfo);
  std::string line;
  while (std::getline(in, line)) {
    // "36 35 98:0 /root /mnt rw,noatime master:1 - ext3 /dev/root rw": mount point is field 5,
    // the file system type follows the " - " separator.
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    const auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream rest(line.substr(sep + 3));
    std::string fstype;
    rest >> fstype;
    if (fn(UnescapeMountPath(mount_point), fstype)) return true;
  }
  return false;
}

bool EnsureMounted(const std::filesystem::path& where, const char* fstype) {
  if (IsMounted(where, fstype)) return false;
  std::error_code ec;
  std::filesystem::create_directories(where, ec);
  if (::mount(fstype, where.c_str(), fstype, 0, nullptr) != 0) {
    throw std::system_error(errno, std::generic_category(),
                            std::string("mount -t ") + fstype + " " + where.string());
  }
  return true;
}

}  // namespace

bool IsMounted(const std::filesystem::path& where, const std::string& fstype) {
  const std::string target = where.lexically_normal().string();
  return ForEachMount([&](const std::string& mp, const std::string& type) {
    return mp == target && type == fstype;
  });
}

std::optional<std::filesystem::path> FindCgroup2Mount(const std::filesystem::path& mountinfo) {
  std::optional<std::filesystem::path> found;
  ForEachMount(
      [&](const std::string& mp, const std::string& type) {
        if (type != "cgroup2") return false;
        found = mp;
        return true;
      },
      mountinfo);
  return found;
}

bool EnsureBpffs(const std::filesystem::path& where) {
  return EnsureMounted(where, "bpf");
}
bool EnsureSecurityfs(const std::filesystem::path& where) {
  return EnsureMounted(where, "securityfs");
}

}  // namespace sovguard::enforcer
