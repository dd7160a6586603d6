#include "base/time.h"

#include <ctime>

namespace sovguard::base {

std::string FormatRfc3339(std::int64_t unix_seconds) {
  const auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string NowRfc3339() {
  return FormatRfc3339(std::time(nullptr));
}

}  // namespace sovguard::base
