// A thread-safe registry of labelled counters, gauges and histograms, rendered in the Prometheus
// text exposition format 0.0.4. Families are keyed by their MetricDef (names.h); series by their
// label values, given in the order of MetricDef::labels.
//
// Misuse (wrong number of label values, a negative counter increment, Observe on a counter, two
// different definitions under one name) throws std::invalid_argument: it is a programming error
// that unit tests must catch, never a state to carry on with silently.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "enforcer/metrics/metric_def.h"

namespace sovguard::metrics {

using LabelValues = std::vector<std::string>;

// The media type Prometheus expects for the text format.
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Declares a family so its HELP/TYPE are exported before any sample; an unlabelled counter or
  // histogram then reads 0 from the start. Idempotent for the same definition.
  void Declare(const MetricDef& def);
  template <typename Defs>
  void DeclareAll(const Defs& defs) {
    for (const MetricDef* d : defs) Declare(*d);
  }

  // Counters: delta >= 0. Gauges: any finite delta.
  void Inc(const MetricDef& def, const LabelValues& labels = {}, double delta = 1);
  // Gauges; and counters that mirror a kernel counter (absolute value read from a BPF map).
  void Set(const MetricDef& def, const LabelValues& labels, double value);
  // Histograms.
  void Observe(const MetricDef& def, const LabelValues& labels, double value);

  // Drops one series (e.g. a detached guest's); no-op when absent.
  void Remove(const MetricDef& def, const LabelValues& labels);
  // Drops every series of `def` whose label `label` equals `value`; returns how many.
  std::size_t RemoveWhere(const MetricDef& def, std::string_view label, std::string_view value);
  // Drops every series of `def` (e.g. an *_info family before setting the new facts).
  void Clear(const MetricDef& def);
  // Replaces every series of a counter/gauge family at once (a scrape never sees half of it):
  // series absent from `values` disappear, e.g. the counters of a guest that went away.
  using Sample = std::pair<LabelValues, double>;
  void Replace(const MetricDef& def, const std::vector<Sample>& values);

  // Called (in registration order, outside the registry lock, one scrape at a time) before each
  // Render(): the place to copy kernel counters into the registry at scrape time.
  void AddCollector(std::function<void(Registry&)> collector);

  // Runs the collectors, then renders every family sorted by name and every series sorted by label
  // values: the same state always renders to the same bytes.
  std::string Render();

  // For tests and status: a counter/gauge value, or a histogram's count. Throws std::out_of_range
  // when the series does not exist.
  double Value(const MetricDef& def, const LabelValues& labels = {}) const;
  bool Has(const MetricDef& def, const LabelValues& labels = {}) const;

 private:
  struct Series {
    double value = 0;                   // counter, gauge
    std::vector<std::uint64_t> counts;  // histogram: per bucket (not cumulative), then +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  struct Family {
    MetricDef def;                // its string_views refer to constants (names.h)
    std::vector<double> buckets;  // copied: def.buckets is re-pointed here
    std::map<LabelValues, Series> series;
  };

  Family& FamilyFor(const MetricDef& def);  // needs mu_; declares on first use
  Series& SeriesFor(const MetricDef& def, const LabelValues& labels);  // needs mu_

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;  // by name: sorted output
  std::mutex collect_mu_;  // serialises scrapes so collectors never run concurrently
  std::vector<std::function<void(Registry&)>> collectors_;  // guarded by collect_mu_
};

// Exposition-format helpers, exposed for tests.
std::string EscapeLabelValue(std::string_view v);  // \ " and newline; invalid UTF-8 -> U+FFFD
std::string EscapeHelp(std::string_view v);        // \ and newline
std::string FormatValue(double v);                 // integers plainly, +Inf/-Inf/NaN, else shortest
bool ValidMetricName(std::string_view name);
bool ValidLabelName(std::string_view name);

}  // namespace sovguard::metrics
