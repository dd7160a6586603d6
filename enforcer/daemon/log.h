// Logging to stderr with syslog priority prefixes ("<6>"), which journald turns into levels when
// the daemon runs under systemd. Messages never carry key material or tokens.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <string_view>

namespace sovguard::daemon::log {

enum class Level { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6 };

inline void Write(Level level, std::string_view message) {
  std::fprintf(stderr, "<%d>sovguardd: %.*s\n", static_cast<int>(level),
               static_cast<int>(message.size()), message.data());
}

template <typename... Args>
void Info(fmt::format_string<Args...> f, Args&&... args) {
  Write(Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Notice(fmt::format_string<Args...> f, Args&&... args) {
  Write(Level::kNotice, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Warning(fmt::format_string<Args...> f, Args&&... args) {
  Write(Level::kWarning, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Error(fmt::format_string<Args...> f, Args&&... args) {
  Write(Level::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace sovguard::daemon::log
