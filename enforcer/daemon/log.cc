#include "enforcer/daemon/log.h"

#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace sovguard::daemon::log {

bool ToJournal() {
  static const bool journal = [] {
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (stream == nullptr) return false;
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0) return false;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
    return dev == st.st_dev && ino == st.st_ino;
  }();
  return journal;
}

std::string FormatLine(Level level, std::string_view message, std::initializer_list<Field> fields) {
  std::string line = fmt::format("<{}>sovguardd: {}", static_cast<int>(level), message);
  for (const auto& [key, value] : fields) {
    std::string k(key);
    for (auto& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const bool quote = value.empty() || value.find_first_of(" \t\"=") != std::string::npos;
    line += " " + k + "=";
    if (!quote) {
      line += value;
    } else {
      line += '"';
      for (char c : value) {
        if (c == '"' || c == '\\') line += '\\';
        line += c == '\n' ? ' ' : c;
      }
      line += '"';
    }
  }
  return line;
}

void Write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  if (ToJournal()) {
    std::vector<std::string> entries;
    entries.reserve(fields.size() + 3);
    entries.push_back(fmt::format("MESSAGE={}", message));
    entries.push_back(fmt::format("PRIORITY={}", static_cast<int>(level)));
    entries.emplace_back("SYSLOG_IDENTIFIER=sovguardd");
    for (const auto& [key, value] : fields) {
      entries.push_back(fmt::format("SOVGUARD_{}={}", key, value));
    }
    std::vector<iovec> iov;
    iov.reserve(entries.size());
    for (auto& e : entries) iov.push_back({e.data(), e.size()});
    if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) == 0) return;
    // The journal refused: fall through to stderr rather than lose the record.
  }
  const std::string line = FormatLine(level, message, fields);
  std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace sovguard::daemon::log
