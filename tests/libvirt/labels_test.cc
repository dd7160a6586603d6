#include "enforcer/libvirt/labels.h"

#include <gtest/gtest.h>

namespace sovguard::libvirt {
namespace {

constexpr const char* kNs = "xmlns:sovguard=\"https://sovguard.eu/ns/guest/1\"";

std::string Guest(const std::string& body) {
  return std::string("<sovguard:guest ") + kNs + ">" + body + "</sovguard:guest>";
}

TEST(Labels, EmptyInputIsAbsent) {
  EXPECT_EQ(ParseLabels("").state, LabelState::kAbsent);
  EXPECT_EQ(ParseLabels("  \n").state, LabelState::kAbsent);
}

TEST(Labels, ParsesDatasetsAndDisksAsVirshWritesThem) {
  // virsh metadata --key sovguard qualifies only the root; children stay unqualified.
  GuestLabels l = ParseLabels(
      Guest("<dataset id=\"health-records\"/><dataset id=\"tax.2024\"/>"
            "<disk target=\"vdb\" dataset=\"health-records\"/><dataset id=\"health-records\"/>"));
  ASSERT_EQ(l.state, LabelState::kValid) << l.error;
  EXPECT_EQ(l.datasets, (std::vector<std::string>{"health-records", "tax.2024"}));
  ASSERT_EQ(l.disks.size(), 1u);
  EXPECT_EQ(l.disks[0], (DiskLabel{"vdb", "health-records"}));
  EXPECT_EQ(l.AllDatasets(), (std::vector<std::string>{"health-records", "tax.2024"}));
}

TEST(Labels, ParsesKeyValueLabelsAsPolicySelectors) {
  GuestLabels l =
      ParseLabels(Guest("<label key=\"team\" value=\"clinic\"/><dataset id=\"a\"/>"
                        "<sovguard:label key=\"k8s.io/tier\" value=\"\"/>"
                        "<label key=\"site\" value=\"eu-west:2@a+b/c\"/>"));
  ASSERT_EQ(l.state, LabelState::kValid) << l.error;
  EXPECT_EQ(l.labels, (std::vector<KeyValueLabel>{
                          {"team", "clinic"}, {"k8s.io/tier", ""}, {"site", "eu-west:2@a+b/c"}}));
  EXPECT_EQ(l.Selectors(),
            (std::vector<std::string>{"team=clinic", "k8s.io/tier=", "site=eu-west:2@a+b/c"}));
  // Labels select datasets through the policy; they hold none by themselves.
  EXPECT_EQ(l.AllDatasets(), std::vector<std::string>{"a"});
}

TEST(Labels, AcceptsQualifiedChildren) {
  GuestLabels l = ParseLabels(Guest("<sovguard:dataset id=\"a\"/>"));
  ASSERT_EQ(l.state, LabelState::kValid) << l.error;
  EXPECT_EQ(l.datasets, std::vector<std::string>{"a"});
}

TEST(Labels, EmptyGuestIsValidWithNoDatasets) {
  GuestLabels l = ParseLabels(Guest(""));
  EXPECT_EQ(l.state, LabelState::kValid);
  EXPECT_TRUE(l.AllDatasets().empty());
}

struct BadCase {
  const char* name;
  std::string xml;
  const char* error_part;
};

// Test names and failure messages show the case name, not a byte dump.
void PrintTo(const BadCase& c, std::ostream* os) {
  *os << c.name;
}

class LabelsInvalid : public ::testing::TestWithParam<BadCase> {};

TEST_P(LabelsInvalid, FailsClosedWithPreciseError) {
  GuestLabels l = ParseLabels(GetParam().xml);
  EXPECT_EQ(l.state, LabelState::kInvalid);
  EXPECT_TRUE(l.datasets.empty());
  EXPECT_TRUE(l.labels.empty());
  EXPECT_NE(l.error.find(GetParam().error_part), std::string::npos) << l.error;
}

INSTANTIATE_TEST_SUITE_P(
    All, LabelsInvalid,
    ::testing::Values(
        BadCase{"malformed", Guest("<dataset id=\"a\">"), "line 1"},
        BadCase{"wrong_ns", "<guest xmlns=\"https://example.invalid/\"/>", "root must be <guest>"},
        BadCase{"no_ns", "<guest/>", "root must be <guest>"},
        BadCase{"wrong_root", std::string("<sovguard:host ") + kNs + "/>", "got <host>"},
        BadCase{"unknown_element", Guest("<datasets id=\"a\"/>"), "<datasets>: unknown element"},
        BadCase{"unknown_attr", Guest("<dataset id=\"a\" mode=\"x\"/>"),
                "unknown attribute 'mode'"},
        BadCase{"missing_id", Guest("<dataset/>"), "missing attribute 'id'"},
        BadCase{"bad_id", Guest("<dataset id=\"a b\"/>"), "invalid dataset id 'a b'"},
        BadCase{"leading_dash", Guest("<dataset id=\"-a\"/>"), "invalid dataset id"},
        BadCase{"disk_no_target", Guest("<disk dataset=\"a\"/>"), "missing attribute 'target'"},
        BadCase{"disk_no_dataset", Guest("<disk target=\"vdb\"/>"), "missing attribute 'dataset'"},
        BadCase{"text", Guest("hello"), "unexpected text 'hello'"},
        BadCase{"foreign_child",
                Guest("<o:dataset xmlns:o=\"https://example.invalid/\" id=\"a\"/>"),
                "foreign namespace"},
        BadCase{"label_no_key", Guest("<label value=\"x\"/>"), "missing attribute 'key'"},
        BadCase{"label_no_value", Guest("<label key=\"team\"/>"), "missing attribute 'value'"},
        BadCase{"label_key_with_equals", Guest("<label key=\"team=clinic\" value=\"x\"/>"),
                "invalid label key 'team=clinic'"},
        BadCase{"label_empty_key", Guest("<label key=\"\" value=\"x\"/>"), "invalid label key"},
        BadCase{"label_key_too_long",
                Guest("<label key=\"" + std::string(64, 'k') + "\" value=\"x\"/>"),
                "invalid label key"},
        BadCase{"label_value_space", Guest("<label key=\"team\" value=\"a b\"/>"),
                "invalid label value 'a b'"},
        BadCase{"label_value_equals", Guest("<label key=\"team\" value=\"a=b\"/>"),
                "invalid label value"},
        BadCase{"label_value_too_long",
                Guest("<label key=\"team\" value=\"" + std::string(129, 'v') + "\"/>"),
                "invalid label value"},
        BadCase{"label_duplicate_key",
                Guest("<label key=\"team\" value=\"a\"/><label key=\"team\" value=\"b\"/>"),
                "label key 'team' given twice"},
        BadCase{"label_unknown_attr", Guest("<label key=\"team\" value=\"a\" op=\"in\"/>"),
                "unknown attribute 'op'"},
        BadCase{"label_not_empty", Guest("<label key=\"team\" value=\"a\">x</label>"),
                "must be empty"},
        BadCase{"guest_attr", std::string("<sovguard:guest ") + kNs + " all=\"yes\"/>",
                "unknown attribute 'all'"}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(Labels, SerializeRoundTripsThroughLibvirtStyleQualification) {
  GuestLabels l;
  l.state = LabelState::kValid;
  l.datasets = {"a", "b.c"};
  l.disks = {{"vdb", "a"}};
  l.labels = {{"team", "clinic"}, {"tier", ""}};
  std::string xml = SerializeLabels(l);
  // What libvirt stores: the root moved into our namespace with prefix "sovguard".
  std::string stored = xml;
  stored.replace(0, 7, std::string("<sovguard:guest ") + kNs + ">");
  stored.replace(stored.size() - 8, 8, "</sovguard:guest>");
  EXPECT_EQ(ParseLabels(stored), l);
}

TEST(Labels, DatasetIdRules) {
  EXPECT_TRUE(ValidDatasetId("health-records"));
  EXPECT_TRUE(ValidDatasetId("urn:x:1.2_3"));
  EXPECT_FALSE(ValidDatasetId(""));
  EXPECT_FALSE(ValidDatasetId(std::string(129, 'a')));
  EXPECT_FALSE(ValidDatasetId("a/b"));
  EXPECT_FALSE(ValidDatasetId(".a"));
}

TEST(Labels, LabelKeyAndValueRules) {
  EXPECT_TRUE(ValidLabelKey("team"));
  EXPECT_TRUE(ValidLabelKey("example.com/tier-2_b"));
  EXPECT_TRUE(ValidLabelKey(std::string(63, 'k')));
  EXPECT_FALSE(ValidLabelKey(""));
  EXPECT_FALSE(ValidLabelKey("-team"));
  EXPECT_FALSE(ValidLabelKey("a=b"));
  EXPECT_FALSE(ValidLabelKey("a:b"));
  EXPECT_FALSE(ValidLabelKey(std::string(64, 'k')));
  EXPECT_TRUE(ValidLabelValue(""));
  EXPECT_TRUE(ValidLabelValue("clinic"));
  EXPECT_TRUE(ValidLabelValue(std::string(128, 'v')));
  EXPECT_FALSE(ValidLabelValue(std::string(129, 'v')));
  EXPECT_FALSE(ValidLabelValue("a=b"));
  EXPECT_FALSE(ValidLabelValue("a\nb"));
  EXPECT_FALSE(ValidLabelValue("caf\xc3\xa9"));
}

}  // namespace
}  // namespace sovguard::libvirt
