// Whole-file reads and atomic writes. Reads go until EOF, so pseudo-files that report size 0
// (/proc, securityfs) read whole.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/bytes.h"

namespace sovguard::base {

// Throw base::Error naming the path and the reason.
Bytes ReadFileBytes(const std::filesystem::path& path);
std::string ReadFileText(const std::filesystem::path& path);
// Returns false, `out` empty, if the file does not exist; throws base::Error on other failures.
bool ReadFileIfExists(const std::filesystem::path& path, Bytes& out);
// Does not throw: on failure returns nullopt and sets *error (if given) to the reason, without
// the path ("cannot open: No such file or directory").
std::optional<std::string> TryReadFileText(const std::filesystem::path& path, std::string* error);
// The first line of a one-value pseudo-file (a sysfs or configfs attribute), without its newline;
// empty when it cannot be read.
std::string ReadFirstLine(const std::filesystem::path& path);

// Writes PATH.tmp with `mode` (umask not applied), fsyncs it, renames it over PATH and fsyncs the
// directory: a crash leaves the old or the new file, never half of one. Throws base::Error naming
// the file; on failure PATH is unchanged and PATH.tmp removed.
void WriteFileAtomic(const std::filesystem::path& path, std::span<const uint8_t> data,
                     mode_t mode = 0600);
inline void WriteFileAtomic(const std::filesystem::path& path, std::string_view s,
                            mode_t mode = 0600) {
  WriteFileAtomic(path, AsBytes(s), mode);
}

}  // namespace sovguard::base
