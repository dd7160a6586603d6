// What a metric family is: name, type, help text, label names and (histograms) bucket bounds. A
// MetricDef is a compile-time constant (see names.h); the registry keys its series by it.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string_view>

namespace sovguard::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };

inline constexpr std::size_t kMaxLabels = 4;

struct MetricDef {
  std::string_view name;  // [a-zA-Z_:][a-zA-Z0-9_:]*; counters end in _total
  MetricType type = MetricType::kGauge;
  std::string_view help;
  std::array<std::string_view, kMaxLabels> labels{};  // label names in order; unused ones empty
  std::span<const double> buckets{};  // histograms: ascending upper bounds, +Inf is implied

  constexpr std::size_t label_count() const {
    std::size_t n = 0;
    while (n < labels.size() && !labels[n].empty()) ++n;
    return n;
  }
};

}  // namespace sovguard::metrics
