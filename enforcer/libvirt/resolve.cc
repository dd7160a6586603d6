#include "enforcer/libvirt/resolve.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

#include "enforcer/libvirt/connection.h"
#include "enforcer/system/mounts.h"

namespace sovguard::libvirt {

std::optional<std::string> ProcessCgroup2Path(pid_t pid, const std::string& proc_root) {
  std::ifstream f(proc_root + "/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("0::", 0) == 0) {
      return line.substr(3);
    }
  }
  return std::nullopt;
}

std::string DomainScope(const std::string& process_cgroup) {
  // Without systemd-machined: <partition>/<machine>.libvirt-qemu/<thread group>.
  static const std::regex kCgroupfs(
      R"(^(.*/[^/]+\.libvirt-qemu)/(emulator|vcpu[0-9]+|iothread[0-9]+)$)");
  // With systemd-machined: <slice>/machine-<escaped machine>.scope/libvirt/<thread group> (libvirt
  // >= 7.1 nests its groups in "libvirt" below the scope; before, they were the scope's children).
  // The leader sits in <scope>/libvirt itself until libvirt moves its threads.
  static const std::regex kSystemd(
      R"(^(.*/machine-[^/]+\.scope)(/libvirt)?(/(emulator|vcpu[0-9]+|iothread[0-9]+))?$)");
  std::smatch m;
  if (std::regex_match(process_cgroup, m, kCgroupfs) ||
      std::regex_match(process_cgroup, m, kSystemd)) {
    return m[1].str();
  }
  return process_cgroup;
}

bool IsQemuFor(pid_t pid, const std::string& name, const std::string& proc_root) {
  std::ifstream f(proc_root + "/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  if (!f) {
    return false;
  }
  std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // libvirt passes "-name" "guest=NAME,debug-threads=on" (commas in NAME doubled).
  std::string escaped;
  for (char c : name) {
    escaped += c == ',' ? std::string(",,") : std::string(1, c);
  }
  const std::string want = std::string("-name") + '\0' + "guest=" + escaped;
  auto pos = cmdline.find(want);
  if (pos == std::string::npos) {
    return false;
  }
  auto end = pos + want.size();
  return end == cmdline.size() || cmdline[end] == ',' || cmdline[end] == '\0';
}

std::optional<pid_t> QemuPid(const std::string& name, const std::string& run_dir,
                             const std::string& proc_root) {
  std::ifstream f(run_dir + "/" + name + ".pid");
  long pid = 0;
  if (!(f >> pid) || pid <= 1) {
    return std::nullopt;
  }
  if (!IsQemuFor(static_cast<pid_t>(pid), name, proc_root)) {
    return std::nullopt;
  }
  return static_cast<pid_t>(pid);
}

std::optional<CgroupInfo> ResolveCgroup(pid_t pid) {
  const auto found = enforcer::FindCgroup2Mount();
  const std::optional<std::string> mount =
      found ? std::optional<std::string>(found->string()) : std::nullopt;
  auto rel = ProcessCgroup2Path(pid);
  if (!mount || !rel) {
    return std::nullopt;
  }
  CgroupInfo info;
  auto join = [&](const std::string& r) { return r == "/" ? *mount : *mount + r; };
  info.process_path = join(*rel);
  info.scope_path = join(DomainScope(*rel));
  struct stat st {};
  if (::stat(info.scope_path.c_str(), &st) != 0) {
    return std::nullopt;
  }
  info.scope_id = st.st_ino;
  const std::string scope = DomainScope(*rel);
  info.scope_level =
      scope == "/" ? 0 : static_cast<int>(std::count(scope.begin(), scope.end(), '/'));
  return info;
}

PoolVolume ResolvePoolVolume(const std::string& uri, const std::string& pool,
                             const std::string& volume) {
  ConnectPtr conn(virConnectOpenReadOnly(uri.c_str()));
  if (!conn) throw LibvirtError("virConnectOpenReadOnly " + uri);
  std::unique_ptr<virStoragePool, decltype(&virStoragePoolFree)> p(
      virStoragePoolLookupByName(conn.get(), pool.c_str()), &virStoragePoolFree);
  if (!p) throw LibvirtError("storage pool " + pool);
  std::unique_ptr<virStorageVol, decltype(&virStorageVolFree)> v(
      virStorageVolLookupByName(p.get(), volume.c_str()), &virStorageVolFree);
  if (!v) throw LibvirtError("storage volume " + pool + "/" + volume);
  std::unique_ptr<char, decltype(&free)> path(virStorageVolGetPath(v.get()), &free);
  if (!path) throw LibvirtError("virStorageVolGetPath " + pool + "/" + volume);
  virStorageVolInfo info{};
  if (virStorageVolGetInfo(v.get(), &info) < 0) {
    throw LibvirtError("virStorageVolGetInfo " + pool + "/" + volume);
  }
  PoolVolume out{.type = "", .path = path.get()};
  switch (info.type) {
    case VIR_STORAGE_VOL_FILE:
      out.type = "file";
      break;
    case VIR_STORAGE_VOL_BLOCK:
      out.type = "block";
      break;
    case VIR_STORAGE_VOL_DIR:
      out.type = "dir";
      break;
    case VIR_STORAGE_VOL_NETWORK:
    case VIR_STORAGE_VOL_NETDIR:
      out.type = "network-volume";
      break;
    default:
      out.type = "volume-type-" + std::to_string(info.type);
  }
  return out;
}

}  // namespace sovguard::libvirt
