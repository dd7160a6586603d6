// The jurisdiction table: the committed world.sgjt against the full registry data (1,000 sampled
// prefixes, IPv4 and IPv6, through both the table and the compiled kernel view), known addresses,
// the binary format's error reporting, and re-conversion equality with the committed file.
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <random>

#include "policy/compile/compile.h"
#include "policy/jurisdiction/countries.h"
#include "policy/jurisdiction/table.h"
#include "policy/validate/validate.h"
#include "tests/harness/require.h"
#include "tests/policy/test_util.h"

namespace sovguard::policy {
namespace {

using testing::ReadAll;
using testing::SharedData;
using testing::SourceDir;

const std::filesystem::path kWorld = SourceDir() / "policy/data/world.sgjt";

const JurisdictionTable& World() {
  static const JurisdictionTable table = [] {
    std::string error;
    auto t = JurisdictionTable::Load(kWorld, &error);
    if (!t) throw std::runtime_error(error);
    return std::move(*t);
  }();
  return table;
}

struct Sample {
  IpPrefix prefix;
  std::string country;
};

// Every prefix of the raw registry files (the test's independent reading of the source data).
std::vector<Sample> RawPrefixes() {
  std::vector<Sample> out;
  for (const auto& dir :
       std::filesystem::directory_iterator(SharedData() / "country-ip-blocks/country")) {
    std::string cc = dir.path().filename().string();
    for (char& c : cc) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (const char* f : {"ipv4-aggregated.txt", "ipv6-aggregated.txt"}) {
      std::ifstream in(dir.path() / f);
      for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        auto p = ParsePrefix(line);
        if (p) out.push_back({*p, cc});
      }
    }
  }
  return out;
}

IpPrefix LastAddress(const IpPrefix& p) {
  IpPrefix a = p;
  for (int bit = p.len; bit < p.MaxLen(); ++bit) {
    a.addr[static_cast<std::size_t>(bit / 8)] =
        static_cast<std::uint8_t>(a.addr[static_cast<std::size_t>(bit / 8)] | (0x80u >> (bit % 8)));
  }
  a.len = p.MaxLen();
  return a;
}

IpPrefix FirstAddress(IpPrefix p) {
  p.len = p.MaxLen();
  return p;
}

bool HaveSharedData() {
  return std::filesystem::is_directory(SharedData() / "country-ip-blocks/country");
}

TEST(Jurisdiction, ThousandSampledPrefixesMapToTheirCountry) {
  SOVGUARD_REQUIRE(HaveSharedData(), "shared/data/country-ip-blocks at " << SharedData());
  auto raw = RawPrefixes();
  ASSERT_GT(raw.size(), 200000u);
  ASSERT_EQ(World().v4().size() + World().v6().size(), raw.size());
  std::mt19937_64 rng(20260201);
  std::shuffle(raw.begin(), raw.end(), rng);
  // 500 of each family so IPv6 is really covered.
  std::vector<Sample> picked;
  std::size_t v4 = 0, v6 = 0;
  for (const auto& s : raw) {
    if (s.prefix.v6 ? v6 < 500 : v4 < 500) {
      picked.push_back(s);
      (s.prefix.v6 ? v6 : v4)++;
    }
  }
  ASSERT_EQ(picked.size(), 1000u);

  const auto policy = LoadPolicyFiles({SourceDir() / "policy/data/default-eu-eea.textproto"});
  ASSERT_TRUE(policy.ok());
  const auto compiled = Compile(*policy.policy, World());
  const CompiledLookup lookup(compiled);
  for (const auto& s : picked) {
    for (const auto& addr : {FirstAddress(s.prefix), LastAddress(s.prefix)}) {
      const auto hit = World().Lookup(addr);
      ASSERT_TRUE(hit.has_value()) << s.prefix.ToString();
      EXPECT_EQ(hit->country, s.country) << s.prefix.ToString();
      EXPECT_EQ(hit->matched, s.prefix);
      EXPECT_EQ(hit->eea, IsEea(s.country));
      const auto cls = lookup.ClassOf(addr);
      ASSERT_LT(cls, compiled.classes.size());
      EXPECT_EQ(compiled.classes[cls].country, PackCountry(s.country)) << s.prefix.ToString();
      EXPECT_EQ(compiled.classes[cls].allowed_datasets, IsEea(s.country) ? 1u : 0u)
          << s.prefix.ToString();
    }
  }
}

TEST(Jurisdiction, KnownAddresses) {
  struct Known {
    const char* addr;
    const char* country;  // "" = unknown
    bool eu, eea;
  };
  // Lookups only: nothing is ever sent to these addresses.
  for (const Known& k :
       {Known{"193.99.144.80", "DE", true, true}, Known{"8.8.8.8", "US", false, false},
        Known{"2a00:1450:4001::1", "IE", true, true}, Known{"85.10.1.1", "SI", true, true},
        Known{"192.0.2.1", "", false, false}, Known{"2001:db8::1", "", false, false}}) {
    const auto hit = World().Lookup(std::string_view(k.addr));
    if (std::string_view(k.country).empty()) {
      EXPECT_FALSE(hit.has_value()) << k.addr;
      continue;
    }
    ASSERT_TRUE(hit.has_value()) << k.addr;
    EXPECT_EQ(hit->country, k.country) << k.addr;
    EXPECT_EQ(hit->eu, k.eu) << k.addr;
    EXPECT_EQ(hit->eea, k.eea) << k.addr;
  }
}

TEST(Jurisdiction, CommittedTableEqualsReconversionOfSharedData) {
  SOVGUARD_REQUIRE(HaveSharedData(), "shared/data/country-ip-blocks at " << SharedData());
  std::string error;
  auto fresh = JurisdictionTable::FromCountryIpBlocks(SharedData() / "country-ip-blocks", &error);
  ASSERT_TRUE(fresh.has_value()) << error;
  EXPECT_EQ(fresh->dropped_conflicts(), 0u);
  EXPECT_TRUE(fresh->Serialize() == ReadAll(kWorld))
      << "policy/data/world.sgjt is stale: regenerate with `sovguard-policy-tool jurisdiction "
         "compile --from ../shared/data/country-ip-blocks -o policy/data/world.sgjt`";
  EXPECT_LT(std::filesystem::file_size(kWorld), 4u << 20);
}

TEST(Jurisdiction, GroupsAndSpellings) {
  EXPECT_EQ(EuCountries().size(), 27u);
  EXPECT_TRUE(IsEu("GR"));
  EXPECT_EQ(NormalizeCountry("EL"), "GR");
  EXPECT_EQ(NormalizeCountry("el"), "GR");
  EXPECT_EQ(NormalizeCountry("uk"), "GB");
  EXPECT_FALSE(NormalizeCountry("XX"));
  EXPECT_FALSE(NormalizeCountry("EU"));
  EXPECT_TRUE(IsEea("NO") && IsEea("IS") && IsEea("LI"));
  EXPECT_FALSE(IsEu("NO"));
  EXPECT_FALSE(IsEea("CH"));
  EXPECT_FALSE(IsEea("GB"));
  EXPECT_EQ(PackCountry("DE"), 0x4445);
  EXPECT_EQ(UnpackCountry(0x4445), "DE");
}

// A small table on documentation addresses.
JurisdictionTable Small() {
  return JurisdictionTable::FromEntries(
      {{*ParsePrefix("192.0.2.0/24"), PackCountry("US")},
       {*ParsePrefix("192.0.2.128/25"), PackCountry("DE")},
       {*ParsePrefix("198.51.100.0/24"), PackCountry("FR")},
       {*ParsePrefix("2001:db8::/32"), PackCountry("NO")},
       {*ParsePrefix("203.0.113.0/24"), PackCountry("CH")},
       {*ParsePrefix("203.0.113.0/24"), PackCountry("AT")}},  // conflict: dropped
      "test");
}

TEST(Jurisdiction, LongestPrefixAndConflicts) {
  const auto t = Small();
  EXPECT_EQ(t.dropped_conflicts(), 1u);
  EXPECT_EQ(t.Lookup(std::string_view("192.0.2.1"))->country, "US");
  EXPECT_EQ(t.Lookup(std::string_view("192.0.2.200"))->country, "DE");
  EXPECT_EQ(t.Lookup(std::string_view("2001:db8:ffff::1"))->country, "NO");
  EXPECT_FALSE(t.Lookup(std::string_view("203.0.113.5")).has_value());  // fail closed
  EXPECT_FALSE(t.Lookup(std::string_view("not an address")).has_value());
}

TEST(Jurisdiction, MmdbImportOverridesIdenticalRegistryPrefixes) {
  auto t = JurisdictionTable::FromEntries({{*ParsePrefix("192.0.2.0/24"), PackCountry("US")},
                                           {*ParsePrefix("203.0.113.0/24"), PackCountry("CH")}},
                                          "test");
  std::string error;
  ASSERT_TRUE(t.AddMmdb(testing::Fixtures() / "tiny-country.mmdb", &error)) << error;
  EXPECT_EQ(t.source(), "test+mmdb:tiny-country.mmdb");
  EXPECT_EQ(t.Lookup(std::string_view("192.0.2.1"))->country, "DE");    // database wins
  EXPECT_EQ(t.Lookup(std::string_view("203.0.113.1"))->country, "CH");  // registry kept
  EXPECT_EQ(t.Lookup(std::string_view("2001:db8:1::1"))->country, "FR");
  // The IPv4-mapped alias (::ffff:198.51.100.0/120 -> NL) is skipped; ::/96 (AT) counts.
  EXPECT_EQ(t.Lookup(std::string_view("198.51.100.7"))->country, "AT");
  EXPECT_EQ(t.v4().size(), 3u);
  EXPECT_EQ(t.v6().size(), 1u);
}

TEST(Jurisdiction, BinaryFormatRoundTrip) {
  const auto t = Small();
  const auto bytes = t.Serialize();
  std::string error;
  auto back = JurisdictionTable::Deserialize(bytes, &error);
  ASSERT_TRUE(back.has_value()) << error;
  EXPECT_EQ(back->v4(), t.v4());
  EXPECT_EQ(back->v6(), t.v6());
  EXPECT_EQ(back->source(), "test");
  EXPECT_EQ(back->Serialize(), bytes);
}

std::string Resign(std::string body) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(body.data()), body.size(), d);
  return body + std::string(reinterpret_cast<char*>(d), sizeof d);
}

TEST(Jurisdiction, CorruptFilesGivePreciseErrors) {
  const auto good = Small().Serialize();
  const auto body = good.substr(0, good.size() - 32);
  auto expect_error = [](const std::string& bytes, const std::string& fragment) {
    std::string error;
    EXPECT_FALSE(JurisdictionTable::Deserialize(bytes, &error).has_value());
    EXPECT_NE(error.find(fragment), std::string::npos) << "got: " << error;
  };
  std::string flipped = good;
  flipped[40] = static_cast<char>(flipped[40] ^ 1);
  expect_error(flipped, "checksum mismatch");
  expect_error("XXXX" + good.substr(4), "bad magic");
  expect_error("", "bad magic");
  std::string v2 = body;
  v2[4] = 2;
  expect_error(Resign(v2), "unsupported format version 2");
  expect_error(Resign(body.substr(0, body.size() - 3)), "truncated");
  std::string unsorted = body;
  // Swap the first two IPv4 records (7 bytes each after header, source and country codes).
  const std::size_t countries = 4;  // US, DE, FR, NO
  const std::size_t rec = 24 + 4 + 2 * countries;
  std::swap_ranges(unsorted.begin() + static_cast<long>(rec),
                   unsorted.begin() + static_cast<long>(rec + 7),
                   unsorted.begin() + static_cast<long>(rec + 7));
  expect_error(Resign(unsorted), "IPv4 record 1: not sorted or prefix repeated");
  std::string hostbits = body;
  hostbits[rec + 3] = 1;  // 192.0.2.1/24
  expect_error(Resign(hostbits), "IPv4 record 0: invalid prefix");
  expect_error(Resign(body + "x"), "trailing bytes");
  std::string error;
  EXPECT_FALSE(JurisdictionTable::Load("/nonexistent/world.sgjt", &error));
  EXPECT_NE(error.find("/nonexistent/world.sgjt: cannot open"), std::string::npos) << error;
}

TEST(Jurisdiction, BuildErrorsNameTheFileAndLine) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() / "de");
  dir.Write("de/ipv4-aggregated.txt", "# comment\n192.0.2.0/24\n192.0.2.1/24\n");
  std::string error;
  EXPECT_FALSE(JurisdictionTable::FromCountryIpBlocks(dir.path(), &error));
  EXPECT_NE(error.find("de/ipv4-aggregated.txt:3:1: \"192.0.2.1/24\" has host bits set"),
            std::string::npos)
      << error;
  std::filesystem::create_directories(dir.path() / "zz");
  dir.Write("de/ipv4-aggregated.txt", "192.0.2.0/24\n");
  EXPECT_FALSE(JurisdictionTable::FromCountryIpBlocks(dir.path(), &error));
  EXPECT_NE(error.find("zz: folder name is not an ISO 3166-1 alpha-2 code"), std::string::npos)
      << error;
  EXPECT_FALSE(JurisdictionTable().AddMmdb(dir.path() / "de/ipv4-aggregated.txt", &error));
  EXPECT_NE(error.find("ipv4-aggregated.txt: "), std::string::npos) << error;
}

}  // namespace
}  // namespace sovguard::policy
