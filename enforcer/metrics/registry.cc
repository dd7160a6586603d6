#include "enforcer/metrics/registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <stdexcept>

namespace sovguard::metrics {
namespace {

const char* TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

std::string Where(const MetricDef& def) {
  return "metric " + std::string(def.name) + ": ";
}

std::string LabelList(const MetricDef& def) {
  std::string out;
  for (std::size_t i = 0; i < def.label_count(); ++i) {
    if (i) out += ", ";
    out += def.labels[i];
  }
  return out.empty() ? "none" : out;
}

bool SameDefinition(const MetricDef& a, const MetricDef& b) {
  return a.name == b.name && a.type == b.type && a.help == b.help && a.labels == b.labels &&
         std::equal(a.buckets.begin(), a.buckets.end(), b.buckets.begin(), b.buckets.end());
}

void Validate(const MetricDef& def) {
  if (!ValidMetricName(def.name))
    throw std::invalid_argument("metric name '" + std::string(def.name) +
                                "': expected [a-zA-Z_:][a-zA-Z0-9_:]*");
  if (def.type == MetricType::kCounter && !def.name.ends_with("_total"))
    throw std::invalid_argument(Where(def) + "a counter's name must end in _total");
  if (def.help.empty()) throw std::invalid_argument(Where(def) + "help text is empty");
  std::set<std::string_view> seen;
  const std::size_t n = def.label_count();
  for (std::size_t i = 0; i < def.labels.size(); ++i) {
    const auto l = def.labels[i];
    if (i >= n) {
      if (!l.empty()) throw std::invalid_argument(Where(def) + "label names must not have gaps");
      continue;
    }
    if (!ValidLabelName(l))
      throw std::invalid_argument(Where(def) + "label name '" + std::string(l) +
                                  "': expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __");
    if (!seen.insert(l).second)
      throw std::invalid_argument(Where(def) + "label '" + std::string(l) + "' given twice");
    if (def.type == MetricType::kHistogram && l == "le")
      throw std::invalid_argument(Where(def) + "'le' is reserved for histogram buckets");
  }
  if (def.type == MetricType::kHistogram) {
    if (def.buckets.empty()) throw std::invalid_argument(Where(def) + "histogram without buckets");
    for (std::size_t i = 0; i < def.buckets.size(); ++i) {
      if (!std::isfinite(def.buckets[i]) || (i && def.buckets[i] <= def.buckets[i - 1]))
        throw std::invalid_argument(Where(def) +
                                    "bucket bounds must be finite and strictly ascending");
    }
  } else if (!def.buckets.empty()) {
    throw std::invalid_argument(Where(def) + "only histograms have buckets");
  }
}

void CheckLabels(const MetricDef& def, const LabelValues& labels) {
  if (labels.size() != def.label_count())
    throw std::invalid_argument(Where(def) + "expected " + std::to_string(def.label_count()) +
                                " label values (" + LabelList(def) + "), got " +
                                std::to_string(labels.size()));
}

void AppendLabels(std::string& out, const MetricDef& def, const LabelValues& values,
                  std::string_view le = {}) {
  if (values.empty() && le.empty()) return;
  out += '{';
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    out += def.labels[i];
    out += "=\"";
    out += EscapeLabelValue(values[i]);
    out += '"';
  }
  if (!le.empty()) {
    if (!values.empty()) out += ',';
    out += "le=\"";
    out += le;
    out += '"';
  }
  out += '}';
}

// Length of the valid UTF-8 sequence at s[i], or 0 (overlong forms, surrogates and code points
// beyond U+10FFFF are invalid).
std::size_t Utf8SequenceLength(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < len; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return len;
}

}  // namespace

bool ValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool ValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size();) {
    const char c = v[i];
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else if (const std::size_t len = Utf8SequenceLength(v, i); len == 0) {
      out += "\xEF\xBF\xBD";  // the exposition format is UTF-8: replace, never pass bad bytes
    } else {
      out.append(v.substr(i, len));
      i += len;
      continue;
    }
    ++i;
  }
  return out;
}

std::string EscapeHelp(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::trunc(v) && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<long long>(v));
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip form
  return std::string(buf, r.ptr);
}

Registry::Family& Registry::FamilyFor(const MetricDef& def) {
  if (const auto it = families_.find(def.name); it != families_.end()) {
    if (!SameDefinition(it->second.def, def))
      throw std::invalid_argument(Where(def) + "used with two different definitions");
    return it->second;
  }
  Validate(def);
  Family f;
  f.buckets.assign(def.buckets.begin(), def.buckets.end());
  f.def = def;
  auto& fam = families_.emplace(std::string(def.name), std::move(f)).first->second;
  fam.def.buckets = fam.buckets;  // the node never moves again (std::map)
  // A counter or histogram without labels exists from the start: 0 is a true value for it. A
  // gauge appears only once set (0 could be a lie, e.g. "hardware TPM").
  if (def.label_count() == 0 && def.type != MetricType::kGauge) {
    auto& s = fam.series[{}];
    s.counts.assign(fam.buckets.size() + 1, 0);
  }
  return fam;
}

Registry::Series& Registry::SeriesFor(const MetricDef& def, const LabelValues& labels) {
  CheckLabels(def, labels);
  Family& fam = FamilyFor(def);
  auto [it, fresh] = fam.series.try_emplace(labels);
  if (fresh && def.type == MetricType::kHistogram)
    it->second.counts.assign(fam.buckets.size() + 1, 0);
  return it->second;
}

void Registry::Declare(const MetricDef& def) {
  std::lock_guard lock(mu_);
  FamilyFor(def);
}

void Registry::Inc(const MetricDef& def, const LabelValues& labels, double delta) {
  if (def.type == MetricType::kHistogram)
    throw std::invalid_argument(Where(def) + "Inc on a histogram (use Observe)");
  if (!std::isfinite(delta)) throw std::invalid_argument(Where(def) + "increment is not finite");
  if (def.type == MetricType::kCounter && delta < 0)
    throw std::invalid_argument(Where(def) + "a counter cannot decrease");
  std::lock_guard lock(mu_);
  SeriesFor(def, labels).value += delta;
}

void Registry::Set(const MetricDef& def, const LabelValues& labels, double value) {
  if (def.type == MetricType::kHistogram)
    throw std::invalid_argument(Where(def) + "Set on a histogram (use Observe)");
  if (def.type == MetricType::kCounter && !(value >= 0))  // also refuses NaN
    throw std::invalid_argument(Where(def) + "a counter's value must be >= 0");
  std::lock_guard lock(mu_);
  SeriesFor(def, labels).value = value;
}

void Registry::Observe(const MetricDef& def, const LabelValues& labels, double value) {
  if (def.type != MetricType::kHistogram)
    throw std::invalid_argument(Where(def) + "Observe on a " + TypeName(def.type));
  if (std::isnan(value)) throw std::invalid_argument(Where(def) + "observed NaN");
  std::lock_guard lock(mu_);
  Series& s = SeriesFor(def, labels);
  const auto& bounds = families_.find(def.name)->second.buckets;
  const auto idx = std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();
  ++s.counts[static_cast<std::size_t>(idx)];  // le is inclusive: value <= bound
  s.sum += value;
  ++s.count;
}

void Registry::Remove(const MetricDef& def, const LabelValues& labels) {
  CheckLabels(def, labels);
  std::lock_guard lock(mu_);
  FamilyFor(def).series.erase(labels);
}

std::size_t Registry::RemoveWhere(const MetricDef& def, std::string_view label,
                                  std::string_view value) {
  std::size_t pos = 0;
  while (pos < def.label_count() && def.labels[pos] != label) ++pos;
  if (pos == def.label_count())
    throw std::invalid_argument(Where(def) + "has no label '" + std::string(label) + "'");
  std::lock_guard lock(mu_);
  return std::erase_if(FamilyFor(def).series,
                       [&](const auto& kv) { return kv.first[pos] == value; });
}

void Registry::Clear(const MetricDef& def) {
  std::lock_guard lock(mu_);
  FamilyFor(def).series.clear();
}

void Registry::Replace(const MetricDef& def, const std::vector<Sample>& values) {
  if (def.type == MetricType::kHistogram)
    throw std::invalid_argument(Where(def) + "Replace on a histogram");
  std::map<LabelValues, Series> fresh;
  for (const auto& [labels, value] : values) {
    CheckLabels(def, labels);
    if (def.type == MetricType::kCounter && !(value >= 0))
      throw std::invalid_argument(Where(def) + "a counter's value must be >= 0");
    fresh[labels].value = value;
  }
  std::lock_guard lock(mu_);
  FamilyFor(def).series = std::move(fresh);
}

void Registry::AddCollector(std::function<void(Registry&)> collector) {
  std::lock_guard lock(collect_mu_);
  collectors_.push_back(std::move(collector));
}

std::string Registry::Render() {
  {
    std::lock_guard collect(collect_mu_);
    for (const auto& c : collectors_) c(*this);
  }
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    out += "# HELP " + name + ' ' + EscapeHelp(fam.def.help) + '\n';
    out += "# TYPE " + name + ' ' + TypeName(fam.def.type) + '\n';
    for (const auto& [labels, s] : fam.series) {
      if (fam.def.type != MetricType::kHistogram) {
        out += name;
        AppendLabels(out, fam.def, labels);
        out += ' ' + FormatValue(s.value) + '\n';
        continue;
      }
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i <= fam.buckets.size(); ++i) {
        cumulative += s.counts[i];
        out += name + "_bucket";
        AppendLabels(out, fam.def, labels,
                     i < fam.buckets.size() ? FormatValue(fam.buckets[i]) : "+Inf");
        out += ' ' + std::to_string(cumulative) + '\n';
      }
      out += name + "_sum";
      AppendLabels(out, fam.def, labels);
      out += ' ' + FormatValue(s.sum) + '\n';
      out += name + "_count";
      AppendLabels(out, fam.def, labels);
      out += ' ' + std::to_string(s.count) + '\n';
    }
  }
  return out;
}

double Registry::Value(const MetricDef& def, const LabelValues& labels) const {
  CheckLabels(def, labels);
  std::lock_guard lock(mu_);
  const auto fam = families_.find(def.name);
  if (fam == families_.end()) throw std::out_of_range(Where(def) + "not declared");
  const auto s = fam->second.series.find(labels);
  if (s == fam->second.series.end()) throw std::out_of_range(Where(def) + "no such series");
  return def.type == MetricType::kHistogram ? static_cast<double>(s->second.count)
                                            : s->second.value;
}

bool Registry::Has(const MetricDef& def, const LabelValues& labels) const {
  CheckLabels(def, labels);
  std::lock_guard lock(mu_);
  const auto fam = families_.find(def.name);
  return fam != families_.end() && fam->second.series.contains(labels);
}

}  // namespace sovguard::metrics
