// Parser and validator: valid text/JSON policies, and at least 20 distinct invalid inputs, each
// with its exact file:line:col and a fragment of the message.
#include <gtest/gtest.h>
#include <unistd.h>

#include "base/time.h"
#include "policy/validate/validate.h"
#include "tests/policy/test_util.h"

namespace sovguard::policy {
namespace {

constexpr std::int64_t kNow = 1'780'000'000;  // 2026-05-28

LoadResult Load(const std::string& name, const std::string& content) {
  return LoadPolicyBuffers({{name, content}}, kNow);
}

TEST(PolicyParse, TextFormatValidPolicy) {
  const auto r = Load("ok.textproto", R"pb(
    zones {
      name: "fra-dc"
      jurisdiction: "DE"
      cidrs: [ "192.0.2.0/25", "2001:db8:1::/48" ]
    }
    exceptions { name: "resolver" cidrs: "198.51.100.53/32" reason: "host DNS resolver" }
    datasets {
      id: "health"
      mode: ENFORCE
      residency {
        allow: [ "de", "EL" ]
        zones: "fra-dc"
        exceptions: "resolver"
      }
      usage {
        guests { name: "vm1" }
        guests { uuid: "0F8FAD5B-D9CB-469F-A165-70867728950E" }
        guests { label: "tier=gold" }
        egress { bytes: 1000000 window_seconds: 3600 }
        not_before: "2026-01-01T00:00:00Z"
        not_after: "2027-01-01T00:00:00+01:00"
      }
      storage {
        pools { path: "/var/lib/libvirt/images" }
        network { endpoint: "192.0.2.10:2049" protocol: "nfs" }
      }
    }
    datasets {
      id: "default"
      mode: AUDIT
      residency { allow: "EEA" }
      default_for_unlabelled: true
    }
  )pb");
  ASSERT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : r.diagnostics[0].ToString());
  const auto& p = *r.policy;
  ASSERT_EQ(p.datasets.size(), 2u);
  EXPECT_EQ(p.datasets[0].id, "default");  // sorted by id
  EXPECT_EQ(p.datasets[1].id, "health");
  EXPECT_EQ(p.datasets[1].countries, (std::set<std::string>{"DE", "GR"}));
  EXPECT_EQ(p.datasets[0].countries.size(), 30u);  // EEA = EU 27 + IS, LI, NO
  EXPECT_TRUE(p.datasets[0].AllowsCountry("NO"));
  EXPECT_FALSE(p.datasets[0].AllowsCountry("CH"));
  EXPECT_EQ(p.datasets[1].mode, Mode::kEnforce);
  ASSERT_TRUE(p.datasets[1].egress.has_value());
  EXPECT_EQ(p.datasets[1].egress->bytes, 1000000u);
  EXPECT_EQ(p.datasets[1].not_before, 1767225600);
  EXPECT_EQ(p.datasets[1].not_after, 1798761600 - 3600);
  EXPECT_EQ(p.DefaultMask(), 0b01u);
  EXPECT_EQ(p.DatasetsForGuest("vm1", "", {}), 0b10u);
  EXPECT_EQ(p.DatasetsForGuest("x", "0f8fad5b-d9cb-469f-a165-70867728950e", {}), 0b10u);
  EXPECT_EQ(p.DatasetsForGuest("x", "", {"tier=gold"}), 0b10u);
  EXPECT_EQ(p.DatasetsForGuest("other", "", {"tier=silver"}), 0b01u);  // unlabelled: default
}

TEST(PolicyParse, JsonValidPolicyAndFieldNames) {
  const auto r = Load("ok.json", R"({
    "datasets": [{"id": "r", "mode": "AUDIT", "residency": {"allow": ["EU"]},
                  "usage": {"readOnly": true, "read": {"bytes": "5000", "windowSeconds": 60}},
                  "defaultForUnlabelled": true}]
  })");
  ASSERT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : r.diagnostics[0].ToString());
  EXPECT_TRUE(r.policy->datasets[0].read_only);
  EXPECT_EQ(r.policy->datasets[0].read->bytes, 5000u);
  EXPECT_EQ(r.policy->datasets[0].countries.size(), 27u);
}

TEST(PolicyParse, FormatDetection) {
  EXPECT_EQ(DetectFormat("a.json", "datasets {}"), Format::kJson);
  EXPECT_EQ(DetectFormat("a.textproto", "{}"), Format::kText);
  EXPECT_EQ(DetectFormat("policy", "  \n{\"datasets\": []}"), Format::kJson);
  EXPECT_EQ(DetectFormat("policy", "datasets {}"), Format::kText);
}

TEST(PolicyParse, ShippedDefaultPolicyIsValid) {
  const auto r = LoadPolicyFiles({testing::SourceDir() / "policy/data/default-eu-eea.textproto"});
  ASSERT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : r.diagnostics[0].ToString());
  ASSERT_EQ(r.policy->datasets.size(), 1u);
  EXPECT_EQ(r.policy->datasets[0].mode, Mode::kAudit);
  EXPECT_EQ(r.policy->datasets[0].countries.size(), 30u);
  EXPECT_EQ(r.policy->DefaultMask(), 1u);
}

struct InvalidCase {
  const char* name;
  const char* file;
  const char* content;
  const char* where;     // "file:line:col"
  const char* fragment;  // part of the message
};

// Each case is one distinct mistake. Positions are 1-based.
const InvalidCase kInvalid[] = {
    {"unknown_country", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  residency { allow: [\"DE\", \"XX\"] }\n}\n",
     "a.textproto:4:29", "unknown country code \"XX\""},
    {"unknown_country_after_list", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  residency {\n    allow: [\"DE\",\n\t\"FR\"]\n    "
     "allow: \"YY\"\n    allow: [\"ZZ\"]\n  }\n}\n",
     "a.textproto:7:5", "unknown country code \"YY\""},
    {"unknown_country_in_second_list", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  residency {\n    allow: [\"DE\"]\n    allow: "
     "[\"FR\", # comment, with comma\n      \"QQ\"]\n  }\n}\n",
     "a.textproto:7:7", "unknown country code \"QQ\""},
    {"unknown_field_text", "a.textproto", "datasets {\n  id: \"d\"\n  colour: \"red\"\n}\n",
     "a.textproto:3:3", "unknown field"},
    {"unknown_field_json", "a.json", "{\"datasets\": [{\"id\": \"d\",\n  \"colour\": 1}]}",
     "a.json:2:3", "unknown field \"colour\""},
    {"syntax_text", "a.textproto", "datasets {\n  id: \"d\"\n", "a.textproto:3:1",
     "Expected identifier"},
    {"syntax_json", "a.json", "{\"datasets\": [\n  {\"id\": \"d\",}\n]}", "a.json:2:14",
     "expected a quoted member name"},
    {"wrong_type_json", "a.json", "{\"datasets\": [{\"id\": 5}]}", "a.json:1:22",
     "expected a string for \"id\""},
    {"enum_json", "a.json", "{\"datasets\": [{\"id\": \"d\", \"mode\": \"BLOCK\"}]}", "a.json:1:35",
     "expected AUDIT or ENFORCE"},
    {"mode_missing", "a.textproto", "datasets {\n  id: \"d\"\n}\n", "a.textproto:1:1",
     "mode must be AUDIT or ENFORCE"},
    {"empty_allow_enforce", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: ENFORCE\n  residency { }\n}\n", "a.textproto:4:3",
     "ENFORCE mode with an empty residency allow-list"},
    {"zero_quota", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  usage {\n    egress { bytes: 0 window_seconds: 60 "
     "}\n  }\n}\n",
     "a.textproto:5:5", "quota of 0 bytes"},
    {"zero_window", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  usage { write { bytes: 10 } }\n}\n",
     "a.textproto:4:11", "window_seconds must be greater than 0"},
    {"window_ended", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  usage {\n    not_after: \"2020-01-01T00:00:00Z\"\n "
     " }\n}\n",
     "a.textproto:5:5", "validity window ended at 2020-01-01T00:00:00Z"},
    {"bad_time", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  usage { not_before: \"yesterday\" }\n}\n",
     "a.textproto:4:11", "must be an RFC 3339 time"},
    {"window_reversed", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  usage {\n    not_before: "
     "\"2031-01-01T00:00:00Z\"\n    "
     "not_after: \"2030-01-01T00:00:00Z\"\n  }\n}\n",
     "a.textproto:5:5", "not_before must be earlier than not_after"},
    {"duplicate_dataset", "a.textproto",
     "datasets { id: \"d\" mode: AUDIT }\ndatasets { id: \"d\" mode: AUDIT }\n", "a.textproto:2:12",
     "duplicate dataset id \"d\" (first defined at a.textproto:1:12)"},
    {"empty_id", "a.textproto", "datasets {\n  mode: AUDIT\n}\n", "a.textproto:1:1",
     "dataset id must not be empty"},
    {"bad_id", "a.textproto", "datasets {\n  id: \"a b\"\n  mode: AUDIT\n}\n", "a.textproto:2:3",
     "must be 1-128 characters"},
    {"zone_overlap", "a.textproto",
     "zones { name: \"a\" jurisdiction: \"DE\" cidrs: \"192.0.2.0/24\" }\nzones { name: \"b\" "
     "jurisdiction: \"FR\"\n  cidrs: \"192.0.2.128/25\" }\n",
     "a.textproto:3:3", "overlaps zone \"a\" prefix 192.0.2.0/24"},
    {"zone_bad_jurisdiction", "a.textproto",
     "zones {\n  name: \"a\"\n  jurisdiction: \"EU\"\n  cidrs: \"192.0.2.0/24\"\n}\n",
     "a.textproto:3:3", "zone jurisdiction must be an ISO 3166-1 alpha-2"},
    {"cidr_host_bits", "a.textproto",
     "zones {\n  name: \"a\"\n  jurisdiction: \"DE\"\n  cidrs: \"192.0.2.1/24\"\n}\n",
     "a.textproto:4:3", "host bits set past /24 (did you mean 192.0.2.0/24?)"},
    {"cidr_garbage", "a.textproto",
     "exceptions {\n  name: \"dns\"\n  cidrs: \"not-an-address\"\n}\n", "a.textproto:3:3",
     "expected an IPv4 or IPv6 prefix"},
    {"zone_no_cidrs", "a.textproto", "zones {\n  name: \"a\"\n  jurisdiction: \"DE\"\n}\n",
     "a.textproto:1:1", "needs at least one entry in cidrs"},
    {"duplicate_zone", "a.textproto",
     "zones { name: \"a\" jurisdiction: \"DE\" cidrs: \"192.0.2.0/24\" }\nzones { name: \"a\" "
     "jurisdiction: \"DE\" cidrs: \"198.51.100.0/24\" }\n",
     "a.textproto:2:9", "duplicate zone name \"a\""},
    {"unknown_zone_ref", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  residency { zones: \"nowhere\" }\n}\n",
     "a.textproto:4:15", "unknown operator zone \"nowhere\""},
    {"unknown_exception_ref", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  residency { exceptions: \"dns\" }\n}\n",
     "a.textproto:4:15", "unknown exception \"dns\""},
    {"bad_uuid", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  usage { guests { uuid: \"1234\" } }\n}\n",
     "a.textproto:4:20", "guest uuid \"1234\" must look like"},
    {"bad_label", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  usage { guests { label: \"gold\" } }\n}\n",
     "a.textproto:4:20", "must be key=value"},
    {"empty_selector", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  usage { guests { } }\n}\n", "a.textproto:4:11",
     "guest selector needs one of name, uuid or label"},
    {"relative_pool", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  storage { pools { path: \"images\" } }\n}\n",
     "a.textproto:4:21", "must be an absolute path"},
    {"bad_device", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  storage { pools { device: \"/tmp/x\" } }\n}\n",
     "a.textproto:4:21", "must be under /dev/"},
    {"bad_endpoint", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  storage { network { endpoint: "
     "\"nfs.example:99999\" } }\n}\n",
     "a.textproto:4:23", "network storage endpoint"},
    {"read_only_write_quota", "a.textproto",
     "datasets {\n  id: \"d\"\n  mode: AUDIT\n  usage {\n    read_only: true\n    write { bytes: 1 "
     "window_seconds: 1 }\n  }\n}\n",
     "a.textproto:6:5", "read_only dataset cannot have a write quota"},
    {"json_duplicate_key", "a.json", "{\"datasets\": [{\"id\": \"d\", \"id\": \"e\"}]}",
     "a.json:1:27", "field \"id\" given twice"},
    {"json_negative_number", "a.json",
     "{\"datasets\": [{\"id\": \"d\", \"mode\": \"AUDIT\", \"usage\": {\"egress\": {\"bytes\": "
     "-1}}}]}",
     "a.json:1:74", "expected a non-negative integer"},
    {"json_not_array", "a.json", "{\"datasets\": {\"id\": \"d\"}}", "a.json:1:14",
     "expected an array for \"datasets\""},
    {"json_trailing", "a.json", "{} {}", "a.json:1:4", "expected end of input"},
    {"json_bad_utf8", "a.json", "{\"datasets\": [{\"id\": \"\xff\"}]}", "a.json:1:23",
     "invalid UTF-8"},
    {"text_duplicate_singular", "a.textproto", "datasets {\n  id: \"d\"\n  id: \"e\"\n}\n",
     "a.textproto:3:5", "specified multiple times"},
};

class InvalidPolicy : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(InvalidPolicy, ReportsExactPosition) {
  const auto& c = GetParam();
  const auto r = Load(c.file, c.content);
  ASSERT_FALSE(r.ok());
  ASSERT_FALSE(r.diagnostics.empty());
  std::string all;
  bool found = false;
  for (const auto& d : r.diagnostics) {
    all += d.ToString() + "\n";
    if (d.ToString().starts_with(std::string(c.where) + ": ") &&
        d.message.find(c.fragment) != std::string::npos) {
      found = true;
    }
  }
  EXPECT_TRUE(found) << "expected " << c.where << ": ..." << c.fragment << "...\ngot:\n" << all;
}

INSTANTIATE_TEST_SUITE_P(Cases, InvalidPolicy, ::testing::ValuesIn(kInvalid),
                         [](const auto& i) { return std::string(i.param.name); });

TEST(PolicyValidate, AtLeastTwentyDistinctInvalidInputs) {
  EXPECT_GE(std::size(kInvalid), 20u);
}

TEST(PolicyValidate, DuplicateDatasetAcrossFiles) {
  const auto r =
      LoadPolicyBuffers({{"one.textproto", "datasets { id: \"x\" mode: AUDIT }"},
                         {"two.json", "{\"datasets\": [{\"id\": \"x\", \"mode\": \"AUDIT\"}]}"}},
                        kNow);
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(r.diagnostics[0].ToString(),
            "two.json:1:16: duplicate dataset id \"x\" (first defined at one.textproto:1:12)");
}

TEST(PolicyValidate, MoreThan64DatasetsRejected) {
  std::string text;
  for (int i = 0; i < 65; ++i)
    text += "datasets { id: \"d" + std::to_string(100 + i) + "\" mode: AUDIT }\n";
  const auto r = Load("many.textproto", text);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.diagnostics[0].message.find("at most 64"), std::string::npos);
}

TEST(PolicyValidate, UnreadableFileIsADiagnostic) {
  const auto r = LoadPolicyFiles({"/nonexistent/sovguard.textproto"});
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(
      r.diagnostics[0].ToString().rfind("/nonexistent/sovguard.textproto:1:1: cannot open", 0), 0u);
}

TEST(PolicyValidate, DeepNestingIsAnErrorNotACrash) {
  auto r = Load("deep.json", std::string(100000, '[') + std::string(100000, ']'));
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(r.diagnostics[0].ToString(), "deep.json:1:65: nesting deeper than 64 levels");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "datasets { usage { ";
  r = Load("deep.textproto", text);
  ASSERT_FALSE(r.ok());
}

TEST(PolicyValidate, Rfc3339) {
  EXPECT_EQ(ParseRfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(ParseRfc3339("2026-01-01T01:00:00+01:00"), 1767225600);
  EXPECT_EQ(ParseRfc3339("2024-02-29T00:00:00.5Z"), 1709164800);
  EXPECT_FALSE(ParseRfc3339("2023-02-29T00:00:00Z"));
  EXPECT_FALSE(ParseRfc3339("2026-01-01 00:00:00Z"));
  EXPECT_FALSE(ParseRfc3339("2026-01-01T00:00:00"));
  EXPECT_EQ(base::FormatRfc3339(1767225600), "2026-01-01T00:00:00Z");
}

}  // namespace
}  // namespace sovguard::policy
