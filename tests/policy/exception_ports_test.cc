// Exceptions limited to protocols and ports: parsed and validated ("udp/53", "tcp/8000-8080";
// errors at file:line:col), compiled into port-limited exception classes whose rule sets the
// kernel matches, part of the digest only when present; an address-only exception stays valid
// for older policies and bundles, with a warning.
#include <gtest/gtest.h>

#include "policy/compile/compile.h"
#include "policy/jurisdiction/countries.h"
#include "policy/jurisdiction/prefix.h"
#include "policy/jurisdiction/table.h"
#include "policy/validate/validate.h"
#include "tests/policy/test_util.h"

namespace sovguard::policy {
namespace {

LoadResult Load(const std::string& exception_fields, const std::string& more = "") {
  // Plain strings (clang-format reflows a textproto raw string): line 1 is empty, the exception
  // and its fields, so their diagnostics, are on line 2.
  const std::string text =
      "\nexceptions { name: \"resolver\" cidrs: \"203.0.113.53/32\" reason: \"host resolver\" " +
      exception_fields +
      " }\n"
      "datasets { id: \"lab\" mode: ENFORCE residency { allow: \"DE\" exceptions: \"resolver\" } "
      "}\n" +
      more;
  return LoadPolicyBuffers({{"exc.textproto", text}}, 1'780'000'000);
}

JurisdictionTable Table() {
  return JurisdictionTable::FromEntries({{*ParsePrefix("198.51.100.0/24"), PackCountry("DE")},
                                         {*ParsePrefix("203.0.113.0/24"), PackCountry("US")}},
                                        "test");
}

std::string Errors(const LoadResult& r) {
  std::string s;
  for (const auto& d : r.diagnostics) s += d.ToString() + "\n";
  return s;
}

const JurisdictionClass& ClassOf(const CompiledPolicy& c, const char* addr) {
  return c.classes.at(CompiledLookup(c).ClassOf(*ParsePrefix(addr)));
}

TEST(PolicyExceptionPorts, PortsCompileToARuleSetTheClassNames) {
  const auto r = Load(R"(ports: [ "udp/53", "tcp/53", "TCP/853", "udp/53" ])");
  ASSERT_TRUE(r.ok()) << Errors(r);
  EXPECT_TRUE(r.warnings.empty());
  ASSERT_EQ(r.policy->exceptions.at(0).ports.size(), 3u) << "duplicates merged";
  const auto c = Compile(*r.policy, Table());
  const auto& k = ClassOf(c, "203.0.113.53");
  EXPECT_EQ(k.allowed_datasets, 0u) << "no dataset reaches it on any port";
  EXPECT_TRUE(k.flags & SG_CLASS_EXCEPTION);
  ASSERT_TRUE(k.flags & SG_CLASS_PORTS);
  ASSERT_EQ(c.port_rulesets.size(), 1u);
  EXPECT_EQ(k.flags >> SG_CLASS_RULESET_SHIFT, 0u);
  const auto& rules = c.port_rulesets[0].rule;
  // Sorted by (protocol, low, high): tcp/53, tcp/853, udp/53, then the end marker.
  EXPECT_EQ(rules[0].proto, 6);
  EXPECT_EQ(rules[0].port_lo, 53);
  EXPECT_EQ(rules[1].port_lo, 853);
  EXPECT_EQ(rules[1].port_hi, 853);
  EXPECT_EQ(rules[2].proto, 17);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(rules[i].datasets, 1u);
  EXPECT_EQ(rules[3].datasets, 0u);
  // The rest of 203.0.113.0/24 is still forbidden.
  EXPECT_EQ(ClassOf(c, "203.0.113.54").allowed_datasets, 0u);
}

TEST(PolicyExceptionPorts, RangesAndOverlappingExceptionsMerge) {
  // A port-limited exception inside an address-only one: the outer grants any port to its own
  // datasets, the inner adds its rules for the datasets that list it.
  const auto r = Load(R"(ports: "tcp/8000-8080")", R"pb(
    exceptions { name: "metadata" cidrs: "203.0.113.0/26" }
    datasets {
      id: "ops"
      mode: AUDIT
      residency { allow: "DE" exceptions: "metadata" }
    }
  )pb");
  ASSERT_TRUE(r.ok()) << Errors(r);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].ToString().find("exc.textproto:"), std::string::npos);
  EXPECT_NE(r.warnings[0].ToString().find("\"metadata\" names no ports"), std::string::npos);
  const auto c = Compile(*r.policy, Table());
  const auto& k = ClassOf(c, "203.0.113.53");
  // Datasets sort by id: lab = 0, ops = 1.
  EXPECT_EQ(k.allowed_datasets, 2u);
  ASSERT_TRUE(k.flags & SG_CLASS_PORTS);
  const auto& rule = c.port_rulesets.at(k.flags >> SG_CLASS_RULESET_SHIFT).rule[0];
  EXPECT_EQ(rule.proto, 6);
  EXPECT_EQ(rule.port_lo, 8000);
  EXPECT_EQ(rule.port_hi, 8080);
  EXPECT_EQ(rule.datasets, 1u);
  EXPECT_EQ(ClassOf(c, "203.0.113.1").allowed_datasets, 2u);
  EXPECT_FALSE(ClassOf(c, "203.0.113.1").flags & SG_CLASS_PORTS);
}

TEST(PolicyExceptionPorts, AddressOnlyStaysValidWithAWarningAndItsDigest) {
  const auto r = Load("");
  ASSERT_TRUE(r.ok()) << Errors(r);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].message.find("any protocol and port"), std::string::npos);
  // The daemon logs the same text at load, from the validated policy alone.
  const auto logged = PolicyWarnings(*r.policy);
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_EQ("warning: " + logged[0], r.warnings[0].message);
  EXPECT_TRUE(PolicyWarnings(*Load(R"(ports: "udp/53")").policy).empty());
  const auto c = Compile(*r.policy, Table());
  EXPECT_TRUE(c.port_rulesets.empty());
  EXPECT_EQ(ClassOf(c, "203.0.113.53").allowed_datasets, 1u);
  EXPECT_FALSE(ClassOf(c, "203.0.113.53").flags & SG_CLASS_PORTS);
  // Without ports the canonical encoding carries no rule-set section (older digests stay).
  EXPECT_EQ(CanonicalEncoding(c).find("PRT"), std::string::npos);
  const auto with = Compile(*Load(R"(ports: "udp/53")").policy, Table());
  EXPECT_NE(CanonicalEncoding(with).find("PRT"), std::string::npos);
  EXPECT_NE(with.digest, c.digest);
  EXPECT_NE(with.digest, Compile(*Load(R"(ports: "udp/54")").policy, Table()).digest);
}

TEST(PolicyExceptionPorts, BadPortsAreRejectedWithFileLineCol) {
  for (const char* bad : {R"("53")", R"("icmp/1")", R"("udp/0")", R"("udp/65536")", R"("udp/")",
                          R"("tcp/90-80")", R"("tcp/53x")", R"("tcp/-5")", R"("udp/53-")"}) {
    const auto r = Load(std::string("ports: ") + bad);
    ASSERT_FALSE(r.ok()) << bad;
    ASSERT_EQ(r.diagnostics.size(), 1u) << Errors(r);
    const std::string e = r.diagnostics[0].ToString();
    EXPECT_NE(e.find("exc.textproto:2:"), std::string::npos) << e;
    EXPECT_NE(e.find("must be tcp/PORT, udp/PORT"), std::string::npos) << e;
  }
  std::string nine = "ports: [";
  for (int i = 1; i <= 9; ++i)
    nine += std::string(i > 1 ? "," : "") + "\"tcp/" + std::to_string(i) + "\"";
  const auto r = Load(nine + "]");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(Errors(r).find("at most 8"), std::string::npos) << Errors(r);
}

}  // namespace
}  // namespace sovguard::policy
