// Timestamps as RFC 3339 UTC, whole seconds: "2026-01-01T00:00:00Z".
#pragma once

#include <cstdint>
#include <string>

namespace sovguard::base {

std::string FormatRfc3339(std::int64_t unix_seconds);
std::string NowRfc3339();

}  // namespace sovguard::base
