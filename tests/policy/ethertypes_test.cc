// Non-IP ethertypes a dataset's guests may send: validated (form, range, not IP/ARP/VLAN, at most
// the kernel's per-guest table), compiled sorted, and part of the digest only when present.
#include <gtest/gtest.h>

#include "policy/compile/compile.h"
#include "policy/jurisdiction/countries.h"
#include "policy/jurisdiction/prefix.h"
#include "policy/jurisdiction/table.h"
#include "policy/validate/validate.h"
#include "tests/policy/test_util.h"

namespace sovguard::policy {
namespace {

LoadResult Load(const std::string& ethertypes) {
  return LoadPolicyBuffers({{"eth.textproto", R"pb(
                                                    datasets { id: "lab" mode: ENFORCE
                                                               residency { allow: "DE")pb" +
                                                  ethertypes +
                                                  R"pb(}
                                                       }
  )pb"}},
                           1'780'000'000);
}

JurisdictionTable Table() {
  return JurisdictionTable::FromEntries({{*ParsePrefix("203.0.113.0/24"), PackCountry("DE")}},
                                        "test");
}

std::string FirstError(const LoadResult& r) {
  return r.diagnostics.empty() ? "" : r.diagnostics[0].ToString();
}

TEST(PolicyEthertypes, ValidListIsCompiledSorted) {
  const auto r = Load(R"(ethertypes: [ "0x88CC", "0x88b5" ])");
  ASSERT_TRUE(r.ok()) << FirstError(r);
  EXPECT_EQ(r.policy->datasets[0].ethertypes, (std::set<std::uint16_t>{0x88B5, 0x88CC}));
  const JurisdictionTable table = Table();
  const auto compiled = Compile(*r.policy, table);
  EXPECT_EQ(compiled.datasets[0].allowed_ethertypes, (std::vector<std::uint16_t>{0x88B5, 0x88CC}));
}

TEST(PolicyEthertypes, DigestChangesOnlyWhenEthertypesArePresent) {
  const JurisdictionTable table = Table();
  const auto none = Load("");
  const auto lldp = Load(R"(ethertypes: "0x88cc")");
  const auto other = Load(R"(ethertypes: "0x88b5")");
  ASSERT_TRUE(none.ok() && lldp.ok() && other.ok());
  const auto d0 = Compile(*none.policy, table).digest;
  const auto d1 = Compile(*lldp.policy, table).digest;
  const auto d2 = Compile(*other.policy, table).digest;
  EXPECT_NE(d0, d1);
  EXPECT_NE(d1, d2);
  EXPECT_EQ(d0, Compile(*Load("").policy, table).digest);
}

TEST(PolicyEthertypes, BadValuesAreRejectedWithFileLineCol) {
  struct Case {
    std::string text, fragment;
  };
  for (const auto& c : std::vector<Case>{
           {R"(ethertypes: "88cc")", "expected an ethertype as 0xHHHH"},
           {R"(ethertypes: "0x05ff")", "at least 0x0600"},
           {R"(ethertypes: "0x0800")", "IP, ARP or a VLAN tag"},
           {R"(ethertypes: "0x8100")", "IP, ARP or a VLAN tag"},
           {R"(ethertypes: "0xzzzz")", "expected an ethertype"},
           {R"(ethertypes: ["0x88b5", "0x88b6", "0x88b7", "0x88b8", "0x88cc"])", "at most 4"},
       }) {
    const auto r = Load(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(FirstError(r).find(c.fragment), std::string::npos) << FirstError(r);
    EXPECT_EQ(FirstError(r).rfind("eth.textproto:3:", 0), 0u) << FirstError(r);  // file:line:col
  }
}

}  // namespace
}  // namespace sovguard::policy
