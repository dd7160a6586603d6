// Whether the kernel calls BPF LSM programs. They load and attach whenever the kernel has BPF LSM
// and trampolines, even when "bpf" is missing from the active LSM list (lsm= on the command line);
// then the kernel never calls them, so an attached lsm/ program proves nothing.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace sovguard::enforcer {

// std::nullopt when "bpf" is in `lsm_list` (securityfs's active LSM list, mounted first when it is
// the default path and not mounted); otherwise why BPF LSM is not active, or why that cannot be
// known (unknown counts as not active: a caller then falls back, it never assumes prevention).
std::optional<std::string> BpfLsmInactiveReason(
    const std::filesystem::path& lsm_list = "/sys/kernel/security/lsm");

}  // namespace sovguard::enforcer
