#include <fcntl.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>

#include "enforcer/storage/storage_datapath_impl.h"
#include "enforcer/system/mounts.h"
#include "enforcer/system/process.h"

namespace sovguard::storage {

// machine.slice is missing until systemd first needs it (no guest since boot). The programs must
// be attached before the first guest's scope appears, so it is made to exist now, by systemd:
//  - mkdir ourselves: systemd would adopt the directory when it starts the slice, but as a cgroup
//    it does not know it may remove it (stopping machine.slice rmdirs it) and a new one, without
//    our programs, would appear with the next guest;
//  - attaching one level higher (the root) would run the connect/device programs for every
//    process of the host and still needs machine.slice's id to recognise guests;
//  - waiting for it to appear (cgroup_mkdir) leaves the first guest uncovered unless its start is
//    held until the attach, which the `start begin` hook cannot do (the scope is made later).
// `systemctl start machine.slice` (a static unit every systemd ships; slices stay active until
// stopped explicitly) makes the directory systemd's own from the start. When it fails the
// constructor throws: the storage path is reported as not enforced rather than silently covering
// nothing. VerifyAttachments reports a machine cgroup that was removed and re-created.
void EnsureSystemdSlice(const fs::path& slice) {
  std::error_code ec;
  if (fs::is_directory(slice, ec)) return;
  const std::string unit = slice.filename().string();
  enforcer::CommandResult r;
  try {
    r = enforcer::RunCommand({"systemctl", "start", "--", unit});
  } catch (const std::exception& e) {
    throw StorageError(
        fmt::format("{} is missing and systemctl cannot run: {}", slice.string(), e.what()),
        ENOENT);
  }
  if (r.exit_code != 0 || !fs::is_directory(slice, ec)) {
    throw StorageError(fmt::format("{} is missing and `systemctl start {}` did not create it "
                                   "(exit {}): {}",
                                   slice.string(), unit, r.exit_code, r.output),
                       ENOENT);
  }
}

std::string LibvirtMachineName(int id, std::string_view name) {
  // virDomainDriverGenerateMachineName + virDomainMachineNameAppendValid (libvirt 9): hostname
  // characters only, leading dots skipped, at most 64 characters, no trailing '-'.
  std::string out = fmt::format("qemu-{}-", id);
  bool skip = true;
  for (const char c : name) {
    if (out.size() >= 64) break;
    if (c == '.' && skip) continue;
    skip = false;
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '-') continue;
    out.push_back(c);
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

std::string LibvirtCgroupName(int id, std::string_view name) {
  // virCgroupNewDomainPartition: "<machine name>.libvirt-<driver>" (libvirt docs/cgroups.rst).
  return LibvirtMachineName(id, name) + ".libvirt-qemu";
}

std::string SystemdEscape(std::string_view name) {
  // systemd unit_name_escape (src/basic/unit-name.c), which machined applies to the machine name;
  // libvirt's virSystemdEscapeName (src/util/virsystemd.c) does the same.
  std::string out;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c == '/') {
      out.push_back('-');
    } else if ((c == '.' && i == 0) || c == '-' || c == '\\' ||
               (std::isalnum(c) == 0 && c != ':' && c != '_' && c != '.')) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

std::string LibvirtScopeName(int id, std::string_view name) {
  // systemd-machined machine_start_scope: "machine-" + unit_name_escape(machine name) + ".scope";
  // the scope's cgroup directory has the unit's name (libvirt docs/cgroups.rst).
  return "machine-" + SystemdEscape(LibvirtMachineName(id, name)) + ".scope";
}

std::string GuestCgroupName(CgroupLayout layout, int id, std::string_view name) {
  return layout == CgroupLayout::kSystemd ? LibvirtScopeName(id, name)
                                          : LibvirtCgroupName(id, name);
}

std::string ToString(CgroupLayout layout) {
  return layout == CgroupLayout::kSystemd ? "systemd" : "cgroupfs";
}

LayoutDetection DetectCgroupLayout(const fs::path& sysroot) {
  // libvirt registers a guest with systemd-machined when virSystemdHasMachined() says yes:
  // org.freedesktop.machine1 is activatable and org.freedesktop.systemd1 is on the bus (systemd
  // is PID 1); else it makes the cgroupfs layout itself (virCgroupNewMachine ->
  // virCgroupNewMachineManual). The same two facts, read from files (no D-Bus dependency):
  std::error_code ec;
  if (!enforcer::SystemdIsInit(sysroot)) {
    return {CgroupLayout::kCgroupfs,
            "systemd is not PID 1 (no /run/systemd/system): libvirt "
            "makes <cgroup2>/machine/<guest>.libvirt-qemu"};
  }
  if (fs::is_directory(sysroot / "run/systemd/machines", ec)) {
    return {CgroupLayout::kSystemd,
            "systemd is PID 1 and systemd-machined runs (/run/systemd/machines): libvirt "
            "registers guests as machine.slice/machine-<name>.scope"};
  }
  for (const char* dir : {"usr/share/dbus-1/system-services",
                          "usr/local/share/dbus-1/system-services", "lib/dbus-1/system-services"}) {
    const fs::path service = sysroot / dir / "org.freedesktop.machine1.service";
    if (fs::exists(service, ec)) {
      return {CgroupLayout::kSystemd,
              fmt::format("systemd is PID 1 and systemd-machined is D-Bus-activatable (/{}): "
                          "libvirt registers guests as machine.slice/machine-<name>.scope",
                          (fs::path(dir) / "org.freedesktop.machine1.service").string())};
    }
  }
  return {CgroupLayout::kCgroupfs,
          "systemd is PID 1 but systemd-machined is not installed (no "
          "org.freedesktop.machine1.service; Debian: package systemd-container): libvirt makes "
          "<cgroup2>/machine/<guest>.libvirt-qemu"};
}

fs::path DefaultMachineCgroup(CgroupLayout layout, const fs::path& cgroup2_root) {
  return cgroup2_root / (layout == CgroupLayout::kSystemd ? "machine.slice" : "machine");
}

std::uint64_t StorageDatapath::CgroupId(const fs::path& dir) {
  // A cgroup2 file handle is the 64-bit cgroup id (kernfs node id).
  alignas(file_handle) unsigned char buf[sizeof(file_handle) + sizeof(std::uint64_t)] = {};
  auto* fh = reinterpret_cast<file_handle*>(buf);
  fh->handle_bytes = sizeof(std::uint64_t);
  int mount_id = 0;
  if (::name_to_handle_at(AT_FDCWD, dir.c_str(), fh, &mount_id, 0) != 0) {
    throw StorageError("name_to_handle_at " + dir.string(), errno);
  }
  std::uint64_t id = 0;
  std::memcpy(&id, buf + sizeof(file_handle), sizeof id);
  return id;
}

bool CgroupExists(const fs::path& root, std::uint64_t id, std::uint32_t depth) {
  if (depth == 0) return StorageDatapath::CgroupId(root) == id;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (!it->is_directory(type_ec) || it->is_symlink(type_ec)) continue;
    if (static_cast<std::uint32_t>(it.depth()) + 1 < depth) continue;
    it.disable_recursion_pending();
    if (StorageDatapath::CgroupId(it->path()) == id) return true;
  }
  if (ec) throw StorageError("list cgroups below " + root.string(), ec.value());
  return false;
}

int PathDepth(const fs::path& root, const fs::path& dir) {
  int n = 0;
  for (const auto& part : dir.lexically_relative(root)) {
    if (part == "..") throw StorageError(dir.string() + " is not below " + root.string(), EINVAL);
    if (!part.empty() && part != ".") ++n;
  }
  return n;
}

}  // namespace sovguard::storage
