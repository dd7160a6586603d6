// Compilation to kernel entries: classes, overrides by zones and exceptions, masks, determinism.
#include <gtest/gtest.h>

#include "base/hex.h"
#include "policy/compile/compile.h"
#include "policy/jurisdiction/countries.h"
#include "tests/policy/test_util.h"

namespace sovguard::policy {
namespace {

constexpr std::int64_t kNow = 1'780'000'000;

JurisdictionTable Table() {
  return JurisdictionTable::FromEntries({{*ParsePrefix("192.0.2.0/24"), PackCountry("US")},
                                         {*ParsePrefix("198.51.100.0/24"), PackCountry("FR")},
                                         {*ParsePrefix("198.51.101.0/24"), PackCountry("FR")},
                                         {*ParsePrefix("203.0.113.0/24"), PackCountry("DE")},
                                         {*ParsePrefix("2001:db8::/32"), PackCountry("NO")}},
                                        "test");
}

constexpr const char* kPolicy = R"pb(
  zones {
    name: "own-dc"
    jurisdiction: "DE"
    cidrs: [ "192.0.2.0/25", "198.51.100.0/23" ]
  }
  exceptions { name: "resolver" cidrs: "192.0.2.53/32" reason: "host resolver" }
  datasets {
    id: "b-eu"
    mode: ENFORCE
    residency { allow: "EU" exceptions: "resolver" }
  }
  datasets {
    id: "a-no"
    mode: AUDIT
    residency { allow: "NO" }
    default_for_unlabelled: true
  }
  datasets {
    id: "c-zone"
    mode: ENFORCE
    residency { zones: "own-dc" }
    usage { read_only: true }
  }
)pb";

ValidatedPolicy Load(const std::vector<std::pair<std::string, std::string>>& files) {
  auto r = LoadPolicyBuffers(files, kNow);
  EXPECT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : r.diagnostics[0].ToString());
  return std::move(*r.policy);
}

std::uint16_t ClassAt(const CompiledPolicy& c, const char* addr) {
  return CompiledLookup(c).ClassOf(*ParseAddress(addr));
}

TEST(Compile, ClassesMasksAndOverrides) {
  const auto c = Compile(Load({{"p.textproto", kPolicy}}), Table());
  ASSERT_EQ(c.datasets.size(), 3u);
  EXPECT_EQ(c.datasets[0].id, "a-no");
  EXPECT_EQ(c.datasets[1].id, "b-eu");
  EXPECT_EQ(c.datasets[2].id, "c-zone");
  for (std::size_t i = 0; i < c.datasets.size(); ++i) EXPECT_EQ(c.datasets[i].index, i);
  EXPECT_TRUE(c.datasets[2].read_only);
  EXPECT_EQ(c.default_datasets, 0b001u);

  // Class 0: unknown space, allowed for nobody.
  ASSERT_FALSE(c.classes.empty());
  EXPECT_EQ(c.classes[0].allowed_datasets, 0u);
  EXPECT_EQ(c.classes[0].country, SG_COUNTRY_UNKNOWN);
  EXPECT_EQ(ClassAt(c, "10.0.0.1"), 0);

  // Registry: US allowed for nobody, NO for a-no, DE for b-eu.
  const auto& us = c.classes[ClassAt(c, "192.0.2.200")];
  EXPECT_EQ(us.country, PackCountry("US"));
  EXPECT_EQ(us.allowed_datasets, 0u);
  EXPECT_EQ(c.classes[ClassAt(c, "2001:db8::1")].allowed_datasets, 0b001u);
  EXPECT_EQ(c.classes[ClassAt(c, "203.0.113.9")].allowed_datasets, 0b010u);

  // Zone inside a US registry prefix: DE jurisdiction -> b-eu, and c-zone by name.
  const auto& zone = c.classes[ClassAt(c, "192.0.2.10")];
  EXPECT_EQ(zone.country, PackCountry("DE"));
  EXPECT_EQ(zone.zone, 1);
  EXPECT_EQ(zone.allowed_datasets, 0b110u);
  // Zone covering two FR registry prefixes: they are left out, the zone decides.
  EXPECT_EQ(c.classes[ClassAt(c, "198.51.101.7")].zone, 1);
  for (const auto& p : c.ipv4) {
    EXPECT_FALSE(p.addr == 0xC6336500u && p.len == 24) << "FR prefix inside the zone kept";
  }
  // Exception inside the zone: only b-eu listed it.
  const auto& exc = c.classes[ClassAt(c, "192.0.2.53")];
  EXPECT_EQ(exc.flags & SG_CLASS_EXCEPTION, SG_CLASS_EXCEPTION);
  EXPECT_EQ(exc.allowed_datasets, 0b010u);

  // Sorted by (addr, len), bits past len zero, class ids in range.
  for (std::size_t i = 1; i < c.ipv4.size(); ++i) {
    EXPECT_TRUE(std::tie(c.ipv4[i - 1].addr, c.ipv4[i - 1].len) <
                std::tie(c.ipv4[i].addr, c.ipv4[i].len));
  }
  for (const auto& p : c.ipv4) {
    EXPECT_LT(p.class_id, c.classes.size());
    if (p.len < 32) {
      EXPECT_EQ(p.addr & ((1u << (32 - p.len)) - 1), 0u);
    }
  }
  // Classes are distinct.
  for (std::size_t i = 0; i < c.classes.size(); ++i) {
    for (std::size_t j = i + 1; j < c.classes.size(); ++j) {
      EXPECT_FALSE(c.classes[i].allowed_datasets == c.classes[j].allowed_datasets &&
                   c.classes[i].country == c.classes[j].country &&
                   c.classes[i].zone == c.classes[j].zone &&
                   c.classes[i].flags == c.classes[j].flags);
    }
  }
}

TEST(Compile, DeterministicWhateverTheFileOrder) {
  const std::string zones =
      "zones { name: \"own-dc\" jurisdiction: \"DE\" cidrs: [\"192.0.2.0/25\"] }\n";
  const std::string d1 = "datasets { id: \"x\" mode: AUDIT residency { allow: \"EU\" } }\n";
  const std::string d2 =
      "datasets { id: \"y\" mode: ENFORCE residency { allow: \"NO\" zones: \"own-dc\" } }\n";
  const auto a = Compile(Load({{"1.textproto", zones + d1}, {"2.textproto", d2}}), Table());
  const auto b = Compile(Load({{"2.textproto", d2}, {"1.textproto", d1 + zones}}), Table());
  const auto again = Compile(Load({{"1.textproto", zones + d1}, {"2.textproto", d2}}), Table());
  EXPECT_EQ(a.digest, b.digest);
  EXPECT_EQ(a.digest, again.digest);
  EXPECT_EQ(CanonicalEncoding(a), CanonicalEncoding(b));
  EXPECT_EQ(a.digest, ComputeDigest(a));
  EXPECT_EQ(base::ToHex(a.digest).size(), 64u);

  // Any change in what the kernel would enforce changes the digest.
  const std::string d1e = "datasets { id: \"x\" mode: ENFORCE residency { allow: \"EU\" } }\n";
  const auto changed = Compile(Load({{"1.textproto", zones + d1e}, {"2.textproto", d2}}), Table());
  EXPECT_NE(a.digest, changed.digest);
  auto tweaked = a;
  tweaked.ipv4[0].class_id ^= 1;
  EXPECT_NE(ComputeDigest(tweaked), a.digest);
}

TEST(Compile, QuotasAndWindowsCarriedThrough) {
  const auto c = Compile(Load({{"q.textproto", R"pb(
                                  datasets {
                                    id: "q"
                                    mode: ENFORCE
                                    residency { allow: "FR" }
                                    usage {
                                      egress { bytes: 100 window_seconds: 10 }
                                      read { bytes: 200 window_seconds: 20 }
                                      not_before: "2026-01-01T00:00:00Z"
                                      not_after: "2030-01-01T00:00:00Z"
                                    }
                                  })pb"}}),
                         Table());
  ASSERT_EQ(c.datasets.size(), 1u);
  const auto& d = c.datasets[0];
  EXPECT_EQ(d.mode, Mode::kEnforce);
  ASSERT_TRUE(d.egress && d.read);
  EXPECT_EQ(d.egress->bytes, 100u);
  EXPECT_EQ(d.read->window_seconds, 20u);
  EXPECT_FALSE(d.write.has_value());
  EXPECT_EQ(d.not_before, 1767225600);
  EXPECT_EQ(d.not_after, 1893456000);
}

TEST(Compile, AnyMeansEveryRegistryCountryButNotUnknownSpace) {
  const auto c = Compile(
      Load(
          {{"any.textproto", "datasets { id: \"w\" mode: ENFORCE residency { allow: \"ANY\" } }"}}),
      Table());
  EXPECT_EQ(c.classes[ClassAt(c, "192.0.2.1")].allowed_datasets, 1u);
  EXPECT_EQ(c.classes[ClassAt(c, "10.1.2.3")].allowed_datasets, 0u);
}

}  // namespace
}  // namespace sovguard::policy
