// Logging. Under systemd (JOURNAL_STREAM names our stderr) records go to the journal with
// structured fields (SOVGUARD_GUEST=..., queryable with `journalctl SOVGUARD_EVENT=violation`);
// otherwise one line per record on stderr with a syslog priority prefix ("<6>") and the fields as
// key=value pairs. Messages never carry key material or tokens.
#pragma once

#include <fmt/format.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace sovguard::daemon::log {

enum class Level { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6 };

// Field names are upper-case journal field names without the SOVGUARD_ prefix ("GUEST").
using Field = std::pair<std::string_view, std::string>;

void Write(Level level, std::string_view message, std::initializer_list<Field> fields = {});
// The stderr form of a record, e.g. `<5>sovguardd: violation ... event=violation guest=vm1`.
std::string FormatLine(Level level, std::string_view message, std::initializer_list<Field> fields);
// True when stderr is connected to the journal (systemd's JOURNAL_STREAM matches it).
bool ToJournal();

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
