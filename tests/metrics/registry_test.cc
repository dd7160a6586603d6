// The registry and the Prometheus text exposition format 0.0.4: golden output, escaping, sorted
// deterministic rendering, misuse refused, thread safety; and that names.h is a valid catalogue.
#include "enforcer/metrics/registry.h"

#include <gtest/gtest.h>

#include <cmath>
#include <ctime>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "enforcer/metrics/names.h"
#include "enforcer/metrics/process_metrics.h"

namespace sm = sovguard::metrics;

namespace {

constexpr sm::MetricDef kReqs{.name = "t_requests_total",
                              .type = sm::MetricType::kCounter,
                              .help = "Requests.\nSecond line with a \\ backslash.",
                              .labels = {"method", "code"}};
constexpr sm::MetricDef kTemp{.name = "t_temperature_celsius",
                              .type = sm::MetricType::kGauge,
                              .help = "Temperature.",
                              .labels = {"room"}};
constexpr sm::MetricDef kUp{
    .name = "t_up", .type = sm::MetricType::kGauge, .help = "Up.", .labels = {}};
constexpr sm::MetricDef kPlain{.name = "t_plain_total",
                               .type = sm::MetricType::kCounter,
                               .help = "Never incremented.",
                               .labels = {}};
constexpr std::array<double, 3> kBounds{0.1, 0.5, 1};
constexpr sm::MetricDef kLat{.name = "t_latency_seconds",
                             .type = sm::MetricType::kHistogram,
                             .help = "Latency.",
                             .labels = {"op"},
                             .buckets = kBounds};

TEST(Exposition, GoldenOutputIsSortedAndEscaped) {
  sm::Registry r;
  // Inserted out of order on purpose: the output is sorted by family name, then label values.
  r.Inc(kReqs, {"POST", "500"});
  r.Inc(kReqs, {"GET", "200"}, 41);
  r.Inc(kReqs, {"GET", "200"});
  r.Set(kTemp, {"a \"quoted\" \\ room\nline2"}, -3.5);
  r.Set(kTemp, {"lab"}, 21);
  r.Set(kUp, {}, 1);
  r.Declare(kPlain);
  r.Observe(kLat, {"read"}, 0.5);  // le is inclusive: counts in the 0.5 bucket
  r.Observe(kLat, {"read"}, 0.75);
  r.Observe(kLat, {"read"}, 3);
  const std::string expected =
      "# HELP t_latency_seconds Latency.\n"
      "# TYPE t_latency_seconds histogram\n"
      "t_latency_seconds_bucket{op=\"read\",le=\"0.1\"} 0\n"
      "t_latency_seconds_bucket{op=\"read\",le=\"0.5\"} 1\n"
      "t_latency_seconds_bucket{op=\"read\",le=\"1\"} 2\n"
      "t_latency_seconds_bucket{op=\"read\",le=\"+Inf\"} 3\n"
      "t_latency_seconds_sum{op=\"read\"} 4.25\n"
      "t_latency_seconds_count{op=\"read\"} 3\n"
      "# HELP t_plain_total Never incremented.\n"
      "# TYPE t_plain_total counter\n"
      "t_plain_total 0\n"
      "# HELP t_requests_total Requests.\\nSecond line with a \\\\ backslash.\n"
      "# TYPE t_requests_total counter\n"
      "t_requests_total{method=\"GET\",code=\"200\"} 42\n"
      "t_requests_total{method=\"POST\",code=\"500\"} 1\n"
      "# HELP t_temperature_celsius Temperature.\n"
      "# TYPE t_temperature_celsius gauge\n"
      "t_temperature_celsius{room=\"a \\\"quoted\\\" \\\\ room\\nline2\"} -3.5\n"
      "t_temperature_celsius{room=\"lab\"} 21\n"
      "# HELP t_up Up.\n"
      "# TYPE t_up gauge\n"
      "t_up 1\n";
  EXPECT_EQ(r.Render(), expected);
  EXPECT_EQ(r.Render(), expected) << "rendering must not change state";
}

TEST(Exposition, ValuesAndUtf8) {
  EXPECT_EQ(sm::FormatValue(0), "0");
  EXPECT_EQ(sm::FormatValue(18446744073709.0), "18446744073709");
  EXPECT_EQ(sm::FormatValue(1e20), "1e+20");
  EXPECT_EQ(sm::FormatValue(0.25), "0.25");
  EXPECT_EQ(sm::FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(sm::FormatValue(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(sm::FormatValue(std::nan("")), "NaN");
  // Valid UTF-8 passes; invalid bytes (lone continuation, overlong, surrogate, truncated) become
  // U+FFFD so the exposition stays valid UTF-8.
  EXPECT_EQ(sm::EscapeLabelValue("gäst-名"), "gäst-名");
  EXPECT_EQ(sm::EscapeLabelValue("a\x80z"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(sm::EscapeLabelValue("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(sm::EscapeLabelValue("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(sm::EscapeLabelValue("x\xE2\x82"), "x\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(sm::EscapeHelp("a\\b\nc\"d"), "a\\\\b\\nc\"d");
}

TEST(Registry, RefusesMisuseWithTheMetricName) {
  sm::Registry r;
  try {
    r.Inc(kReqs, {"GET"});
    FAIL() << "expected a throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "metric t_requests_total: expected 2 label values (method, code), got 1");
  }
  EXPECT_THROW(r.Inc(kReqs, {"GET", "200"}, -1), std::invalid_argument);
  EXPECT_THROW(r.Set(kReqs, {"GET", "200"}, std::nan("")), std::invalid_argument);
  EXPECT_THROW(r.Observe(kReqs, {"GET", "200"}, 1), std::invalid_argument);
  EXPECT_THROW(r.Inc(kLat, {"x"}), std::invalid_argument);
  EXPECT_THROW(r.Observe(kLat, {"x"}, std::nan("")), std::invalid_argument);
  constexpr sm::MetricDef kClash{
      .name = "t_requests_total", .type = sm::MetricType::kGauge, .help = "Other.", .labels = {}};
  r.Inc(kReqs, {"GET", "200"});
  EXPECT_THROW(r.Set(kClash, {}, 1), std::invalid_argument);
  constexpr sm::MetricDef kBadName{
      .name = "t-bad", .type = sm::MetricType::kGauge, .help = "x", .labels = {}};
  EXPECT_THROW(r.Declare(kBadName), std::invalid_argument);
  constexpr sm::MetricDef kNoTotal{
      .name = "t_count", .type = sm::MetricType::kCounter, .help = "x", .labels = {}};
  EXPECT_THROW(r.Declare(kNoTotal), std::invalid_argument);
  constexpr sm::MetricDef kReserved{
      .name = "t_g", .type = sm::MetricType::kGauge, .help = "x", .labels = {"__name"}};
  EXPECT_THROW(r.Declare(kReserved), std::invalid_argument);
  constexpr sm::MetricDef kLe{.name = "t_h",
                              .type = sm::MetricType::kHistogram,
                              .help = "x",
                              .labels = {"le"},
                              .buckets = kBounds};
  EXPECT_THROW(r.Declare(kLe), std::invalid_argument);
  EXPECT_THROW(r.RemoveWhere(kReqs, "nope", "x"), std::invalid_argument);
  EXPECT_THROW(r.Value(kTemp, {"nowhere"}), std::out_of_range);
  // The refused calls left nothing behind.
  EXPECT_EQ(r.Value(kReqs, {"GET", "200"}), 1);
  EXPECT_FALSE(r.Has(kClash));
}

TEST(Registry, ReplaceRemoveAndCollectors) {
  sm::Registry r;
  r.Set(kTemp, {"a"}, 1);
  r.Set(kTemp, {"b"}, 2);
  r.Replace(kTemp, {{{"b"}, 5}, {{"c"}, 6}});
  EXPECT_FALSE(r.Has(kTemp, {"a"})) << "series absent from Replace must disappear";
  EXPECT_EQ(r.Value(kTemp, {"b"}), 5);
  EXPECT_EQ(r.Value(kTemp, {"c"}), 6);

  r.Inc(kReqs, {"GET", "200"});
  r.Inc(kReqs, {"GET", "500"});
  r.Inc(kReqs, {"PUT", "200"});
  EXPECT_EQ(r.RemoveWhere(kReqs, "code", "200"), 2u);
  EXPECT_TRUE(r.Has(kReqs, {"GET", "500"}));
  r.Remove(kReqs, {"GET", "500"});
  EXPECT_FALSE(r.Has(kReqs, {"GET", "500"}));

  int runs = 0;
  r.AddCollector([&](sm::Registry& reg) { reg.Set(kUp, {}, ++runs); });
  EXPECT_NE(r.Render().find("\nt_up 1\n"), std::string::npos);
  EXPECT_NE(r.Render().find("\nt_up 2\n"), std::string::npos);
}

TEST(Registry, ConcurrentUpdatesAreNotLost) {
  sm::Registry r;
  constexpr int kThreads = 8, kPerThread = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        r.Inc(kReqs, {"GET", std::to_string(i % 3)});
        r.Observe(kLat, {"op"}, 0.2);
        if (i % 500 == 0) (void)r.Render();  // scrapes interleave with updates
        if (t == 0 && i % 1000 == 0) r.Set(kTemp, {"x"}, i);
      }
    });
  }
  for (auto& t : threads) t.join();
  double total = 0;
  for (int c = 0; c < 3; ++c) total += r.Value(kReqs, {"GET", std::to_string(c)});
  EXPECT_EQ(total, kThreads * kPerThread);
  EXPECT_EQ(r.Value(kLat, {"op"}), kThreads * kPerThread);
}

TEST(Names, EveryDaemonMetricIsAValidUniqueFamily) {
  sm::Registry r;
  ASSERT_NO_THROW(r.DeclareAll(sm::kAllMetrics));
  std::set<std::string_view> names;
  for (const sm::MetricDef* d : sm::kAllMetrics) {
    ASSERT_NE(d, nullptr);
    EXPECT_TRUE(names.insert(d->name).second) << d->name << " listed twice";
    EXPECT_TRUE(d->name.starts_with("sovguard_") || d->name.starts_with("process_")) << d->name;
  }
  const std::string text = r.Render();
  for (const sm::MetricDef* d : sm::kAllMetrics) {
    EXPECT_NE(text.find("# TYPE " + std::string(d->name) + " "), std::string::npos) << d->name;
  }
  // The observability list, by the names the dashboard and alerts rely on.
  for (const char* must :
       {"sovguard_guest_packets_total", "sovguard_guest_bytes_total",
        "sovguard_guest_quota_used_bytes", "sovguard_attach_operations_total",
        "sovguard_probe_path_info", "sovguard_tpm_quote_duration_seconds", "sovguard_errors_total",
        "sovguard_tamper_findings_total", "sovguard_policy_info", "sovguard_policy_generation",
        "sovguard_storage_read_bytes_total", "sovguard_storage_write_bytes_total"}) {
    EXPECT_TRUE(names.contains(must)) << must;
  }
  // Unlabelled counters and histograms read 0 from the start.
  EXPECT_NE(text.find("\nsovguard_tamper_checks_total 0\n"), std::string::npos);
  EXPECT_NE(text.find("\nsovguard_tpm_quote_duration_seconds_bucket{le=\"+Inf\"} 0\n"),
            std::string::npos);
}

TEST(ProcessMetrics, ReadsThisProcess) {
  const auto st = sm::ReadProcessStats();
  EXPECT_GT(st.vm_rss_bytes, 1u << 20);
  EXPECT_GE(st.vm_hwm_bytes, st.vm_rss_bytes);
  EXPECT_GE(st.threads, 1u);
  EXPECT_GE(st.open_fds, 3u);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(st.start_time_seconds, now + 2);
  EXPECT_GT(st.start_time_seconds, now - 3600);
  sm::Registry r;
  sm::CollectProcessMetrics(r);
  EXPECT_GT(r.Value(sm::kProcessResident), 0);
  EXPECT_THROW(sm::ReadProcessStats(0x7ffffff0), std::runtime_error);
}

}  // namespace
