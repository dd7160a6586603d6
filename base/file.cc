#include "base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "base/errno_text.h"
#include "base/error.h"
#include "base/unique_fd.h"

namespace sovguard::base {
namespace {

// Appends the file's bytes to `out`. Returns 0, or the errno of the failing open (*opened false)
// or read (*opened true).
template <typename Container>
int ReadInto(const std::filesystem::path& path, Container& out, bool* opened) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  *opened = static_cast<bool>(fd);
  if (!fd) return errno;
  std::array<char, 1 << 16> buf{};
  for (;;) {
    const ssize_t n = ::read(fd.Get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return 0;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
}

template <typename Container>
Container ReadOrThrow(const std::filesystem::path& path) {
  Container out;
  bool opened = false;
  if (const int err = ReadInto(path, out, &opened); err != 0)
    throw Error((opened ? "read error on " : "cannot open ") + path.string() + ": " +
                ErrnoText(err));
  return out;
}

}  // namespace

Bytes ReadFileBytes(const std::filesystem::path& path) {
  return ReadOrThrow<Bytes>(path);
}

std::string ReadFileText(const std::filesystem::path& path) {
  return ReadOrThrow<std::string>(path);
}

bool ReadFileIfExists(const std::filesystem::path& path, Bytes& out) {
  out.clear();
  bool opened = false;
  const int err = ReadInto(path, out, &opened);
  if (err == ENOENT && !opened) return false;
  if (err != 0)
    throw Error((opened ? "read error on " : "cannot open ") + path.string() + ": " +
                ErrnoText(err));
  return true;
}

std::optional<std::string> TryReadFileText(const std::filesystem::path& path, std::string* error) {
  std::string out;
  bool opened = false;
  if (const int err = ReadInto(path, out, &opened); err != 0) {
    if (error) *error = (opened ? "read error: " : "cannot open: ") + ErrnoText(err);
    return std::nullopt;
  }
  return out;
}

std::string ReadFirstLine(const std::filesystem::path& path) {
  std::string text = TryReadFileText(path, nullptr).value_or("");
  text.resize(std::min(text.size(), text.find('\n')));
  return text;
}

void WriteFileAtomic(const std::filesystem::path& path, std::span<const uint8_t> data,
                     mode_t mode) {
  auto tmp = path;
  tmp += ".tmp";
  const auto fail = [&](const std::string& what, int err) {
    ::unlink(tmp.c_str());
    throw Error(what + ": " + ErrnoText(err));
  };
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd) throw Error("cannot create " + tmp.string() + ": " + ErrnoText(errno));
    if (::fchmod(fd.Get(), mode) != 0) fail("cannot set the mode of " + tmp.string(), errno);
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd.Get(), data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write error on " + tmp.string(), errno);
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.Get()) != 0 || ::close(fd.Release()) != 0)
      fail("cannot flush " + tmp.string(), errno);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    fail("cannot rename " + tmp.string() + " to " + path.string(), errno);
  // Make the rename itself durable.
  const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dfd || ::fsync(dfd.Get()) != 0)
    throw Error("cannot flush directory " + dir.string() + ": " + ErrnoText(errno));
}

}  // namespace sovguard::base
