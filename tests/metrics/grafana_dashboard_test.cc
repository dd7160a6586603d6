// examples/grafana/sovguard-dashboard.json is a usable Grafana dashboard whose every query uses
// metrics (and labels of those metrics) that names.h defines, so a renamed metric cannot leave a
// silently empty panel behind.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "enforcer/metrics/names.h"

namespace sm = sovguard::metrics;
using nlohmann::json;

namespace {

json LoadDashboard() {
  const std::string path =
      std::string(SOVGUARD_SOURCE_DIR) + "/examples/grafana/sovguard-dashboard.json";
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  return json::parse(in);  // throws with the byte position on a syntax error
}

// Every PromQL string in the dashboard: panel targets and template variable queries.
void CollectQueries(const json& j, const std::string& where,
                    std::vector<std::pair<std::string, std::string>>& out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      if ((k == "expr" || k == "definition") && v.is_string()) {
        out.emplace_back(where + "." + k, v.get<std::string>());
      } else if (k == "query" && v.is_object() && v.contains("query")) {
        out.emplace_back(where + ".query", v.at("query").get<std::string>());
      } else {
        CollectQueries(v, where + "." + k, out);
      }
    }
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i)
      CollectQueries(j[i], where + "[" + std::to_string(i) + "]", out);
  }
}

// A name from a query as its family: histogram series carry _bucket/_sum/_count.
const sm::MetricDef* Family(const std::map<std::string_view, const sm::MetricDef*>& defs,
                            const std::string& name) {
  if (const auto it = defs.find(name); it != defs.end()) return it->second;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.ends_with(s)) {
      const auto it = defs.find(name.substr(0, name.size() - s.size()));
      if (it != defs.end() && it->second->type == sm::MetricType::kHistogram) return it->second;
    }
  }
  return nullptr;
}

TEST(GrafanaDashboard, IsAValidDashboardModel) {
  const json d = LoadDashboard();
  EXPECT_EQ(d.at("uid").get<std::string>(), "sovguard-node");
  EXPECT_FALSE(d.at("title").get<std::string>().empty());
  EXPECT_GE(d.at("schemaVersion").get<int>(), 36);
  ASSERT_TRUE(d.at("panels").is_array());
  std::set<int> ids;
  std::vector<json> boxes;
  int data_panels = 0;
  for (const auto& p : d.at("panels")) {
    const std::string title = p.at("title").get<std::string>();
    EXPECT_TRUE(ids.insert(p.at("id").get<int>()).second) << "duplicate panel id: " << title;
    const auto& g = p.at("gridPos");
    EXPECT_LE(g.at("x").get<int>() + g.at("w").get<int>(), 24) << title;
    for (const auto& other : boxes) {  // no two panels overlap on the grid
      const bool apart =
          g.at("x").get<int>() >= other.at("x").get<int>() + other.at("w").get<int>() ||
          other.at("x").get<int>() >= g.at("x").get<int>() + g.at("w").get<int>() ||
          g.at("y").get<int>() >= other.at("y").get<int>() + other.at("h").get<int>() ||
          other.at("y").get<int>() >= g.at("y").get<int>() + g.at("h").get<int>();
      EXPECT_TRUE(apart) << title << " overlaps another panel";
    }
    boxes.push_back(g);
    if (p.at("type") == "row") continue;
    ++data_panels;
    EXPECT_EQ(p.at("datasource").at("uid").get<std::string>(), "${datasource}") << title;
    ASSERT_FALSE(p.at("targets").empty()) << title;
    std::set<std::string> refs;
    for (const auto& t : p.at("targets")) {
      EXPECT_TRUE(refs.insert(t.at("refId").get<std::string>()).second) << title;
      EXPECT_FALSE(t.at("expr").get<std::string>().empty()) << title;
    }
  }
  EXPECT_GE(data_panels, 20);
}

TEST(GrafanaDashboard, EveryQueryUsesMetricsAndLabelsFromNamesH) {
  std::map<std::string_view, const sm::MetricDef*> defs;
  for (const sm::MetricDef* d : sm::kAllMetrics) defs[d->name] = d;
  std::vector<std::pair<std::string, std::string>> queries;
  CollectQueries(LoadDashboard(), "dashboard", queries);
  ASSERT_GE(queries.size(), 30u);

  // A metric name, optionally followed by a selector; inside it, label matchers.
  const std::regex metric(R"(\b((?:sovguard|process)_[A-Za-z0-9_:]*)\s*(\{([^}]*)\})?)");
  const std::regex matcher(R"(([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=))");
  // Labels Prometheus adds to every scraped series.
  const std::set<std::string> target_labels = {"instance", "job"};
  std::set<std::string_view> used;
  for (const auto& [where, q] : queries) {
    int found = 0;
    for (auto m = std::sregex_iterator(q.begin(), q.end(), metric); m != std::sregex_iterator();
         ++m) {
      ++found;
      const std::string name = (*m)[1];
      const sm::MetricDef* def = Family(defs, name);
      if (def == nullptr) {
        ADD_FAILURE() << where << ": " << name << " is not defined in enforcer/metrics/names.h\n"
                      << q;
        continue;
      }
      used.insert(def->name);
      const std::string selector = (*m)[3];
      for (auto l = std::sregex_iterator(selector.begin(), selector.end(), matcher);
           l != std::sregex_iterator(); ++l) {
        const std::string label = (*l)[1];
        bool known = target_labels.contains(label) ||
                     (label == "le" && def->type == sm::MetricType::kHistogram);
        for (std::size_t i = 0; i < def->label_count(); ++i)
          known = known || def->labels[i] == label;
        EXPECT_TRUE(known) << where << ": " << name << " has no label '" << label << "'\n" << q;
      }
    }
    EXPECT_GT(found, 0) << where << ": query references no sovguard metric: " << q;
  }
  // The dashboard shows the observability list.
  for (const sm::MetricDef* must :
       {&sm::kGuestPackets, &sm::kGuestBytes, &sm::kGuestQuotaUsed, &sm::kAttachOps,
        &sm::kProbePath, &sm::kTpmQuoteDuration, &sm::kErrors, &sm::kTamperFindings,
        &sm::kPolicyInfo, &sm::kStorageReadBytes, &sm::kStorageWriteBytes, &sm::kProcessResident}) {
    EXPECT_TRUE(used.contains(must->name)) << "dashboard does not show " << must->name;
  }
}

}  // namespace
