// Compilation of the storage section: pools, modes, quotas, endpoint classes.
#include <gtest/gtest.h>

#include "policy/compile/compile.h"
#include "policy/jurisdiction/countries.h"

namespace sovguard::policy {
namespace {

constexpr std::int64_t kNow = 1'780'000'000;

JurisdictionTable Table() {
  return JurisdictionTable::FromEntries({{*ParsePrefix("198.51.100.0/24"), PackCountry("FR")},
                                         {*ParsePrefix("203.0.113.0/24"), PackCountry("US")},
                                         {*ParsePrefix("2001:db8::/32"), PackCountry("NO")}},
                                        "test");
}

constexpr const char* kPolicy = R"pb(
  datasets {
    id: "a-media"
    mode: ENFORCE
    residency { allow: "EU" }
    usage { write { bytes: 1048576 window_seconds: 3600 } }
    storage {
      pools { path: "/srv/pools/media" }
      pools { device: "/dev/sdb" }
      network { endpoint: "203.0.113.20:10809" protocol: "nbd" }
      network { endpoint: "[2001:db8:20::10]:3260" protocol: "iscsi" }
    }
  }
  datasets {
    id: "b-eu"
    mode: AUDIT
    residency { allow: "EU" }
    usage { read_only: true }
    storage { pools { mount: "/srv" } }
  }
)pb";

const JurisdictionClass& ClassOf(const CompiledStorage& s, std::uint32_t addr) {
  const Ipv4Prefix* best = nullptr;
  for (const auto& p : s.ipv4) {
    const std::uint32_t mask = p.len == 0 ? 0 : ~std::uint32_t{0} << (32 - p.len);
    if ((addr & mask) == p.addr && (!best || p.len > best->len)) best = &p;
  }
  return s.classes.at(best ? best->class_id : 0);
}

TEST(CompileStorage, DatasetsPoolsAndEndpointClasses) {
  auto r = LoadPolicyBuffers({{"p.textproto", kPolicy}}, kNow);
  ASSERT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : r.diagnostics[0].ToString());
  const auto compiled = Compile(*r.policy, Table());
  const auto s = CompileStorage(*r.policy, compiled);
  ASSERT_EQ(s.datasets.size(), 2u);
  EXPECT_EQ(s.datasets[0].id, "a-media");
  EXPECT_EQ(s.datasets[0].index, 0);
  EXPECT_EQ(s.datasets[0].mode, Mode::kEnforce);
  ASSERT_TRUE(s.datasets[0].write.has_value());
  EXPECT_EQ(s.datasets[0].write->bytes, 1048576u);
  ASSERT_EQ(s.datasets[0].pools.size(), 2u);
  EXPECT_EQ(s.datasets[0].pools[0].kind, StoragePool::Kind::kPath);
  EXPECT_EQ(s.datasets[0].pools[0].location, "/srv/pools/media");
  EXPECT_EQ(s.datasets[0].pools[1].kind, StoragePool::Kind::kDevice);
  EXPECT_TRUE(s.datasets[1].read_only);
  EXPECT_EQ(s.datasets[1].mode, Mode::kAudit);
  ASSERT_EQ(s.datasets[1].pools.size(), 1u);
  EXPECT_EQ(s.datasets[1].pools[0].kind, StoragePool::Kind::kMount);

  // The listed NBD endpoint (in the US) is allowed for a-media only; the rest of the US is not.
  EXPECT_EQ(ClassOf(s, 0xCB007114u).allowed_datasets, 0b01u);  // 203.0.113.20
  EXPECT_EQ(ClassOf(s, 0xCB007115u).allowed_datasets, 0b00u);  // 203.0.113.21
  // France is EU: b-eu may store there, a-media lists endpoints so only they count for it.
  EXPECT_EQ(ClassOf(s, 0xC6336405u).allowed_datasets, 0b10u);
  EXPECT_EQ(ClassOf(s, 0xC6336405u).country, PackCountry("FR"));
  // The net policy's own classes are untouched.
  EXPECT_EQ(CompiledLookup(compiled).ClassOf(*ParseAddress("198.51.100.5")),
            CompiledLookup(compiled).ClassOf(*ParseAddress("198.51.100.6")));
  bool v6_endpoint = false;
  for (const auto& p : s.ipv6) {
    if (p.len == 128) {
      v6_endpoint = true;
      EXPECT_EQ(s.classes.at(p.class_id).allowed_datasets, 0b01u);
    }
  }
  EXPECT_TRUE(v6_endpoint);
  // Sorted, as the kernel loader and lookups expect.
  EXPECT_TRUE(std::is_sorted(s.ipv4.begin(), s.ipv4.end(), [](const auto& a, const auto& b) {
    return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
  }));
}

TEST(CompileStorage, Deterministic) {
  auto r = LoadPolicyBuffers({{"p.textproto", kPolicy}}, kNow);
  ASSERT_TRUE(r.ok());
  const auto c = Compile(*r.policy, Table());
  const auto a = CompileStorage(*r.policy, c), b = CompileStorage(*r.policy, c);
  ASSERT_EQ(a.ipv4.size(), b.ipv4.size());
  for (std::size_t i = 0; i < a.ipv4.size(); ++i) EXPECT_EQ(a.ipv4[i].class_id, b.ipv4[i].class_id);
  EXPECT_EQ(a.classes.size(), b.classes.size());
}

}  // namespace
}  // namespace sovguard::policy
