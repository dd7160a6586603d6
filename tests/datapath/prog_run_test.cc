// BPF_PROG_TEST_RUN tests of the network residency program with the full world table: verdicts on
// 10,000 sampled real-world destinations, control frames, malformed frames, modes, counters,
// events, swaps. Nothing is sent anywhere: frames only exist inside the test run.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <unordered_map>

#include "enforcer/net/frames.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/net/tables.h"
#include "tests/datapath/netns.h"
#include "tests/datapath/world_table.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <thread>

namespace sovguard::net {
namespace {

using testing::LoadWorldTable;
using testing::WorldTable;

constexpr std::uint32_t kLo = 1;  // BPF_PROG_TEST_RUN runs frames as received on lo

const WorldTable& World() {
  static const WorldTable table = [] {
    auto t = LoadWorldTable(testing::DefaultWorldTableDir());
    testing::AddDocumentationRanges(t);
    return t;
  }();
  return table;
}

// Independent reference: longest matching prefix by probing every length in a hash set.
class Reference {
 public:
  explicit Reference(const policy::CompiledPolicy& p) {
    for (const auto& e : p.ipv4)
      v4_[(static_cast<std::uint64_t>(e.addr) << 8) | e.len] = e.class_id;
    for (const auto& e : p.ipv6)
      v6_[std::string(reinterpret_cast<const char*>(e.addr.data()), 16) + char(e.len)] = e.class_id;
  }
  std::uint16_t V4(std::uint32_t a) const {
    for (int len = 32; len >= 0; --len) {
      const std::uint32_t m = len == 0 ? 0 : ~0u << (32 - len);
      auto it = v4_.find((static_cast<std::uint64_t>(a & m) << 8) | static_cast<unsigned>(len));
      if (it != v4_.end()) return it->second;
    }
    return 0;
  }
  std::uint16_t V6(std::array<std::uint8_t, 16> a) const {
    for (int len = 128; len >= 0; --len) {
      if (len < 128) a[len / 8] &= static_cast<std::uint8_t>(~(0x80u >> (len % 8)));
      auto it = v6_.find(std::string(reinterpret_cast<const char*>(a.data()), 16) + char(len));
      if (it != v6_.end()) return it->second;
    }
    return 0;
  }

 private:
  std::unordered_map<std::uint64_t, std::uint16_t> v4_;
  std::unordered_map<std::string, std::uint16_t> v6_;
};

std::array<std::uint8_t, 16> V6(const char* text) {
  std::array<std::uint8_t, 16> a{};
  EXPECT_EQ(inet_pton(AF_INET6, text, a.data()), 1) << text;
  return a;
}
std::uint32_t V4(const char* text) {
  in_addr a{};
  EXPECT_EQ(inet_pton(AF_INET, text, &a), 1) << text;
  return ntohl(a.s_addr);
}

class ProgRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dp_ = std::make_unique<NetDatapath>(
        NetDatapathOptions{.events_per_sec = 1000000, .event_burst = 1000000});
    dp_->ApplyPolicy(World().policy);
    dp_->AddGuest({.name = "vm-test", .ifindex = kLo, .datasets = 1, .attach = false});
  }
  int Run(const std::vector<std::uint8_t>& f) { return dp_->TestRun(f).retval; }
  // Frames the kernel may refuse to even run (BPF_PROG_TEST_RUN needs more than an Ethernet
  // header): a refusal is as good as a drop, since such a frame never reaches the program.
  int RunTruncated(const std::vector<std::uint8_t>& f) {
    try {
      return dp_->TestRun(f).retval;
    } catch (const DatapathError& e) {
      EXPECT_EQ(e.error(), EINVAL) << e.what();
      return SG_TC_ACT_SHOT;
    }
  }
  std::vector<sg_net_event> Drain() {
    std::vector<sg_net_event> out;
    while (dp_->PollEvents(0, [&](const sg_net_event& e) { out.push_back(e); }) > 0) {
    }
    return out;
  }
  std::unique_ptr<NetDatapath> dp_;
};

TEST(NetDatapathProbe, LoadsAndRunsOnThisKernel) {
  auto reason = ProbeNetDatapath();
  EXPECT_FALSE(reason.has_value()) << *reason;
}

TEST_F(ProgRunTest, TenThousandWorldDestinationsMatchTheTable) {
  const auto& w = World();
  const Reference ref(w.policy);
  // Prefix indexes per class and family, so every country is sampled alike.
  std::map<std::uint16_t, std::vector<std::size_t>> v4_by_class, v6_by_class;
  for (std::size_t i = 0; i < w.policy.ipv4.size(); ++i)
    if (!w.country_of_class[w.policy.ipv4[i].class_id].empty())
      v4_by_class[w.policy.ipv4[i].class_id].push_back(i);
  for (std::size_t i = 0; i < w.policy.ipv6.size(); ++i)
    if (!w.country_of_class[w.policy.ipv6[i].class_id].empty())
      v6_by_class[w.policy.ipv6[i].class_id].push_back(i);
  std::vector<std::uint16_t> v4_classes, v6_classes;
  for (const auto& [c, v] : v4_by_class) v4_classes.push_back(c);
  for (const auto& [c, v] : v6_by_class) v6_classes.push_back(c);
  ASSERT_GT(v4_classes.size(), 200u);
  ASSERT_GT(v6_classes.size(), 150u);

  std::mt19937_64 rng(20261123);
  constexpr int kSamples = 10000;
  std::set<std::uint16_t> countries_seen;
  int expected_drops_ds0 = 0, expected_not_de = 0, passes = 0;
  for (int mask : {1, 3}) {
    dp_->SetGuestDatasets(kLo, static_cast<std::uint64_t>(mask));
    for (int i = 0; i < kSamples / 2; ++i) {
      const bool v6 = i % 2 == 1;
      const int tags = (i / 2) % 3;  // untagged, 802.1Q, QinQ
      std::uint16_t expected_class;
      std::vector<std::uint8_t> frame;
      std::string dst_text;
      if (!v6) {
        const auto cls = v4_classes[rng() % v4_classes.size()];
        const auto& list = v4_by_class[cls];
        const auto& pfx = w.policy.ipv4[list[rng() % list.size()]];
        const std::uint32_t host =
            pfx.len == 32 ? 0 : static_cast<std::uint32_t>(rng()) & (~0u >> pfx.len);
        const std::uint32_t a = pfx.addr | host;
        expected_class = ref.V4(a);
        frame = frames::Ipv4(a, tags);
        dst_text = std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
                   std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
      } else {
        const auto cls = v6_classes[rng() % v6_classes.size()];
        const auto& list = v6_by_class[cls];
        const auto& pfx = w.policy.ipv6[list[rng() % list.size()]];
        auto a = pfx.addr;
        for (unsigned bit = pfx.len; bit < 128; ++bit)
          if (rng() & 1) a[bit / 8] |= static_cast<std::uint8_t>(0x80u >> (bit % 8));
        expected_class = ref.V6(a);
        frame = frames::Ipv6(a, tags);
        char buf[INET6_ADDRSTRLEN];
        dst_text = inet_ntop(AF_INET6, a.data(), buf, sizeof(buf));
      }
      countries_seen.insert(expected_class);
      const std::uint64_t allowed = w.policy.classes[expected_class].allowed_datasets;
      const bool expect_drop = (mask & 1) && !(allowed & 1);  // ds0 enforce; ds1 is audit only
      if (mask == 1) expected_drops_ds0 += expect_drop;
      if (mask == 3) {
        expected_not_de += !(allowed & 2);
        passes += !expect_drop;
      }
      ASSERT_EQ(Run(frame), expect_drop ? SG_TC_ACT_SHOT : SG_TC_ACT_OK)
          << "dst " << dst_text << " tags " << tags << " country "
          << w.country_of_class[expected_class] << " mask " << mask;
    }
  }
  EXPECT_GT(countries_seen.size(), 200u);
  // mask 1 ran first: ds0's drop counter holds exactly those drops plus the mask-3 round's.
  const auto ds0 = dp_->ReadCounters(kLo, 0);
  const auto ds1 = dp_->ReadCounters(kLo, 1);
  EXPECT_GT(expected_drops_ds0, 100);
  EXPECT_EQ(ds1.would_drop_packets, static_cast<std::uint64_t>(expected_not_de));
  EXPECT_EQ(ds1.packets, static_cast<std::uint64_t>(passes));
  EXPECT_EQ(ds0.dropped_packets,
            static_cast<std::uint64_t>(expected_drops_ds0) + (kSamples / 2 - passes));
  EXPECT_EQ(ds0.dropped_bytes > 0, true);
}

// The /24s that hold longer prefixes use the second IPv4 level: check every such prefix, the first
// and last address of it, and the addresses just outside it (same /24, the covering class).
TEST_F(ProgRunTest, EveryIpv4PrefixLongerThan24) {
  const auto& w = World();
  const Reference ref(w.policy);
  int checked = 0;
  for (const auto& e : w.policy.ipv4) {
    if (e.len <= 24) continue;
    const std::uint32_t size = 1u << (32 - e.len);
    for (std::uint32_t a : {e.addr, e.addr + size - 1, e.addr - 1, e.addr + size}) {
      if ((a >> 8) != (e.addr >> 8)) continue;  // stay inside the split /24
      const bool allowed = w.policy.classes[ref.V4(a)].allowed_datasets & 1;
      ASSERT_EQ(Run(frames::Ipv4(a)), allowed ? SG_TC_ACT_OK : SG_TC_ACT_SHOT)
          << (a >> 24) << "." << ((a >> 16) & 255) << "." << ((a >> 8) & 255) << "." << (a & 255);
      ++checked;
    }
  }
  EXPECT_GT(checked, 300);
}

TEST_F(ProgRunTest, ControlFramesPassAndAreNotCounted) {
  const std::uint32_t unknown = V4("240.0.0.1");  // in no registry table: class 0
  EXPECT_EQ(Run(frames::Raw(0x0806, 28)), SG_TC_ACT_OK) << "ARP";
  EXPECT_EQ(Run(frames::Raw(0x0806, 28, 1)), SG_TC_ACT_OK) << "tagged ARP";
  // DHCP discover (broadcast, 68 -> 67) passes; the same ports unicast to an unknown host do not.
  EXPECT_EQ(Run(frames::Ipv4(0xFFFFFFFF, 0, 17, 68, 67, 0)), SG_TC_ACT_OK);
  EXPECT_EQ(Run(frames::Ipv4(unknown, 0, 17, 68, 67)), SG_TC_ACT_SHOT);
  // Neighbour solicitation (hop limit 255) passes; ICMPv6 with a routable hop limit is classified.
  auto ns = frames::Ipv6(V6("ff02::1:ff00:1"), 0, 58, 255);
  ns[14 + 40] = 135;
  EXPECT_EQ(Run(ns), SG_TC_ACT_OK);
  auto fake_ns = frames::Ipv6(V6("2001:db9::1"), 0, 58, 64);
  fake_ns[14 + 40] = 135;
  EXPECT_EQ(Run(fake_ns), SG_TC_ACT_SHOT);
  // ND passes unclassified only to link-scope destinations and within the IPv6 minimum MTU.
  auto big_ns = frames::Ipv6(V6("ff02::1:ff00:1"), 0, 58, 255);
  big_ns[14 + 40] = 135;
  big_ns.resize(14 + 40 + 1241, 'T');
  big_ns[14 + 4] = 1241 >> 8, big_ns[14 + 5] = 1241 & 255;
  EXPECT_EQ(Run(big_ns), SG_TC_ACT_SHOT) << "NS larger than ND ever is";
  auto ll_na = frames::Ipv6(V6("fe80::1"), 0, 58, 255);
  ll_na[14 + 40] = 136;
  EXPECT_EQ(Run(ll_na), SG_TC_ACT_OK) << "NA to a link-local address";
  auto global_na = frames::Ipv6(V6("2001:db9::1"), 0, 58, 255);
  global_na[14 + 40] = 136;
  EXPECT_EQ(Run(global_na), SG_TC_ACT_SHOT) << "NA with hop limit 255 to a global address";
  auto rs = frames::Ipv6(V6("ff02::2"), 1, 58, 255);
  rs[18 + 40] = 133;
  EXPECT_EQ(Run(rs), SG_TC_ACT_OK) << "tagged router solicitation";
  // DHCPv6 solicit to ff02::1:2, 546 -> 547.
  auto dhcp6 = frames::Ipv6(V6("ff02::1:2"), 0, 17, 1);
  dhcp6[14 + 40] = 546 >> 8, dhcp6[14 + 41] = 546 & 255, dhcp6[14 + 42] = 547 >> 8,
             dhcp6[14 + 43] = 547 & 255;
  EXPECT_EQ(Run(dhcp6), SG_TC_ACT_OK);
  // Exceptions (here the documentation host range, listed by every dataset) pass.
  EXPECT_EQ(Run(frames::Ipv4(V4("192.0.2.1"))), SG_TC_ACT_OK);
  EXPECT_EQ(Run(frames::Ipv6(V6("2001:db8:1::1"))), SG_TC_ACT_OK);
  const auto c = dp_->ReadCounters(kLo, 0);
  EXPECT_EQ(c.packets, 2u) << "only the two exception frames count as data";
  EXPECT_EQ(c.dropped_packets, 4u);
}

TEST_F(ProgRunTest, UnknownAndNonIpAreDroppedUnlessAllowed) {
  EXPECT_EQ(Run(frames::Ipv4(V4("240.0.0.1"))), SG_TC_ACT_SHOT);
  EXPECT_EQ(Run(frames::Ipv4(V4("127.0.0.1"))), SG_TC_ACT_SHOT);
  EXPECT_EQ(Run(frames::Ipv6(V6("fe80::1"))), SG_TC_ACT_SHOT);
  EXPECT_EQ(Run(frames::Raw(0x88B5, 46)), SG_TC_ACT_SHOT) << "local experimental ethertype";
  EXPECT_EQ(Run(frames::Raw(0x8847, 46)), SG_TC_ACT_SHOT) << "MPLS";
  dp_->RemoveGuest(kLo);
  dp_->AddGuest({.name = "vm-test",
                 .ifindex = kLo,
                 .datasets = 1,
                 .allowed_ethertypes = {0x88B5},
                 .attach = false});
  EXPECT_EQ(Run(frames::Raw(0x88B5, 46)), SG_TC_ACT_OK);
  EXPECT_EQ(Run(frames::Raw(0x8847, 46)), SG_TC_ACT_SHOT);
  // A guest holding no dataset has nothing to protect.
  dp_->SetGuestDatasets(kLo, 0);
  EXPECT_EQ(Run(frames::Ipv4(V4("240.0.0.1"))), SG_TC_ACT_OK);
  // An interface nobody registered: fail closed.
  dp_->RemoveGuest(kLo);
  EXPECT_EQ(Run(frames::Ipv4(V4("198.51.100.1"))), SG_TC_ACT_SHOT);
}

TEST_F(ProgRunTest, DatasetChangesKeepTheCountersOfDatasetsStillHeld) {
  const auto us = frames::Ipv4(V4("203.0.113.5"));
  dp_->SetGuestDatasets(kLo, 3);
  EXPECT_EQ(Run(us), SG_TC_ACT_SHOT);
  dp_->SetGuestDatasets(kLo, 2);  // drop dataset 0: dataset 1 (audit) keeps its position
  EXPECT_EQ(Run(us), SG_TC_ACT_OK);
  EXPECT_EQ(dp_->ReadCounters(kLo, 1).would_drop_packets, 2u);
  EXPECT_THROW(dp_->ReadCounters(kLo, 0), std::invalid_argument);
  dp_->SetGuestDatasets(kLo, 3);  // dataset 0 comes back with fresh counters
  EXPECT_EQ(Run(us), SG_TC_ACT_SHOT);
  EXPECT_EQ(dp_->ReadCounters(kLo, 0).dropped_packets, 1u);
  EXPECT_EQ(dp_->ReadCounters(kLo, 1).would_drop_packets, 3u);
  const auto st = dp_->Status();
  ASSERT_EQ(st.guests.at(0).datasets.size(), 2u);
}

TEST_F(ProgRunTest, TruncatedAndMalformedFramesHaveDefinedVerdicts) {
  const auto eu = V4("198.51.100.7");  // DE via the documentation mapping
  ASSERT_EQ(Run(frames::Ipv4(eu)), SG_TC_ACT_OK);
  ASSERT_EQ(Run(frames::Ipv4(eu, 2)), SG_TC_ACT_OK) << "QinQ";
  // Shorter than an Ethernet header: the kernel refuses the test run itself.
  std::vector<std::uint8_t> tiny(10, 0);
  EXPECT_THROW(dp_->TestRun(tiny), DatapathError);
  auto f = frames::Ipv4(eu);
  EXPECT_EQ(RunTruncated({f.begin(), f.begin() + 14}), SG_TC_ACT_SHOT) << "Ethernet only";
  EXPECT_EQ(RunTruncated({f.begin(), f.begin() + 14 + 19}), SG_TC_ACT_SHOT) << "short IPv4";
  auto tagged = frames::Ipv4(eu, 1);
  EXPECT_EQ(RunTruncated({tagged.begin(), tagged.begin() + 16}), SG_TC_ACT_SHOT)
      << "short VLAN tag";
  auto bad = f;
  bad[14] = 0x44;  // IHL 4
  EXPECT_EQ(Run(bad), SG_TC_ACT_SHOT) << "IHL < 5";
  bad = f;
  bad[14] = 0x65;  // version 6 in an IPv4 ethertype
  EXPECT_EQ(Run(bad), SG_TC_ACT_SHOT) << "wrong version";
  bad = f;
  bad[14] = 0x4F;  // IHL 15: options run past the frame
  EXPECT_EQ(Run(bad), SG_TC_ACT_SHOT) << "IHL past the end";
  // IPv4 options: NOPs are fine, loose source routing is not (it would forward elsewhere).
  auto with_opts = frames::Ipv4(eu);
  with_opts[14] = 0x46;
  with_opts.insert(with_opts.begin() + 34, {1, 1, 1, 0});
  EXPECT_EQ(Run(with_opts), SG_TC_ACT_OK) << "NOP options";
  auto lsrr = frames::Ipv4(eu);
  lsrr[14] = 0x47;
  lsrr.insert(lsrr.begin() + 34, {0x83, 7, 4, 203, 0, 113, 1, 0});
  EXPECT_EQ(Run(lsrr), SG_TC_ACT_SHOT) << "LSRR";
  // Every option byte is walked: a record-route option passes, a source route behind 36 NOPs does
  // not, neither does an option whose length runs past the header.
  auto rr = frames::Ipv4(eu);
  rr[14] = 0x47;
  rr.insert(rr.begin() + 34, {7, 7, 4, 0, 0, 0, 0, 0});
  EXPECT_EQ(Run(rr), SG_TC_ACT_OK) << "record route";
  auto deep_lsrr = frames::Ipv4(eu);
  deep_lsrr[14] = 0x4F;
  std::vector<std::uint8_t> opts(36, 1);
  opts.insert(opts.end(), {0x83, 3, 4, 0});
  deep_lsrr.insert(deep_lsrr.begin() + 34, opts.begin(), opts.end());
  EXPECT_EQ(Run(deep_lsrr), SG_TC_ACT_SHOT) << "LSRR after 36 NOPs";
  auto overlong = frames::Ipv4(eu);
  overlong[14] = 0x46;
  overlong.insert(overlong.begin() + 34, {1, 7, 8, 0});
  EXPECT_EQ(Run(overlong), SG_TC_ACT_SHOT) << "option past the header";
  // Three VLAN tags: more than we parse, fail closed.
  auto triple = frames::Ipv4(eu, 2);
  triple.insert(triple.begin() + 20, {0x81, 0x00, 0x00, 0x66});
  EXPECT_EQ(Run(triple), SG_TC_ACT_SHOT) << "three tags";

  const auto eu6 = V6("2001:db8:e0::7");
  auto v6 = frames::Ipv6(eu6);
  ASSERT_EQ(Run(v6), SG_TC_ACT_OK);
  EXPECT_EQ(RunTruncated({v6.begin(), v6.begin() + 14 + 39}), SG_TC_ACT_SHOT) << "short IPv6";
  // Hop-by-hop + destination options + fragment header, then TCP: classified by destination.
  auto ext = frames::Ipv6(eu6, 1, 0);
  const std::size_t l4 = 18 + 40;
  ext.insert(ext.begin() + l4,
             {60, 0, 1, 4, 0, 0, 0, 0, 44, 0, 1, 4, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 1});
  EXPECT_EQ(Run(ext), SG_TC_ACT_OK) << "extension headers";
  // Routing header with segments left: the real destination is hidden in it.
  auto rh = frames::Ipv6(eu6, 0, 43);
  rh.insert(rh.begin() + 54, {6, 2, 4, 1, 0, 0, 0, 0});
  rh.insert(rh.begin() + 62, 16, 0xAA);
  EXPECT_EQ(Run(rh), SG_TC_ACT_SHOT) << "SRv6 routing header";
  // Truncated in the middle of an extension header.
  auto cut = frames::Ipv6(eu6, 0, 0);
  cut.resize(14 + 40 + 3);
  EXPECT_EQ(RunTruncated(cut), SG_TC_ACT_SHOT) << "truncated extension header";
  // Seven chained destination-option headers: deeper than we walk.
  auto deep = frames::Ipv6(eu6, 0, 60);
  for (int i = 0; i < 7; ++i) deep.insert(deep.begin() + 54, {60, 0, 1, 4, 0, 0, 0, 0});
  EXPECT_EQ(Run(deep), SG_TC_ACT_SHOT) << "extension chain too deep";

  // Every drop above was counted against the dataset and reported as an event.
  const auto c = dp_->ReadCounters(kLo, 0);
  EXPECT_GE(c.dropped_packets, 7u);  // the frames the kernel accepted for a test run
  int malformed = 0;
  for (const auto& e : Drain()) malformed += e.reason == SG_NET_REASON_MALFORMED;
  EXPECT_GE(malformed, 7);
}

TEST_F(ProgRunTest, AuditModePassesAndCountsWouldDrop) {
  auto p = World().policy;
  p.datasets[0].mode = policy::Mode::kAudit;
  dp_->ApplyPolicy(p);
  const auto us = V4("203.0.113.9");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Run(frames::Ipv4(us)), SG_TC_ACT_OK);
  const auto c = dp_->ReadCounters(kLo, 0);
  EXPECT_EQ(c.packets, 5u);
  EXPECT_EQ(c.would_drop_packets, 5u);
  EXPECT_EQ(c.dropped_packets, 0u);
  auto events = Drain();
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0].verdict, SG_VERDICT_AUDIT);
  EXPECT_EQ(CountryText(events[0].country), "US");
  EXPECT_EQ(events[0].dataset, 0);
  EXPECT_EQ(events[0].reason, SG_NET_REASON_RESIDENCY);
  const auto st = dp_->Status();
  ASSERT_EQ(st.guests.size(), 1u);
  ASSERT_EQ(st.guests[0].datasets.size(), 1u);
  EXPECT_EQ(st.guests[0].datasets[0].id, "eu-eea");
  EXPECT_EQ(st.guests[0].datasets[0].mode, policy::Mode::kAudit);
  EXPECT_EQ(st.guests[0].datasets[0].counters.would_drop_packets, 5u);
}

TEST_F(ProgRunTest, EventsCarryTheDestinationAndAreRateLimited) {
  dp_.reset();
  dp_ = std::make_unique<NetDatapath>(NetDatapathOptions{.events_per_sec = 10, .event_burst = 10});
  dp_->ApplyPolicy(World().policy);
  dp_->AddGuest({.name = "vm-flood", .ifindex = kLo, .datasets = 1, .attach = false});
  const auto cn = V6("2001:db8:f0::9");  // US via the documentation mapping
  const auto flood = frames::Ipv6(cn, 1);
  // 1000 drops in one test run: the token bucket lets the burst through and counts the rest.
  EXPECT_EQ(dp_->TestRun(flood, 1000).retval, SG_TC_ACT_SHOT);
  auto events = Drain();
  ASSERT_GE(events.size(), 10u);
  EXPECT_LE(events.size(), 12u);
  EXPECT_EQ(events[0].family, 6);
  EXPECT_EQ(std::memcmp(events[0].dst, cn.data(), 16), 0);
  EXPECT_EQ(events[0].verdict, SG_VERDICT_DROP);
  EXPECT_EQ(CountryText(events[0].country), "US");
  EXPECT_NE(FormatEvent(events[0]).find("country=US"), std::string::npos);
  const auto st = dp_->Status();
  EXPECT_EQ(st.guests[0].events_suppressed + events.size(), 1000u);
  EXPECT_EQ(dp_->ReadCounters(kLo, 0).dropped_packets, 1000u);
}

TEST_F(ProgRunTest, SwapChangesVerdictsAtOnce) {
  const auto de = V4("198.51.100.1"), us = V4("203.0.113.1");
  ASSERT_EQ(Run(frames::Ipv4(de)), SG_TC_ACT_OK);
  ASSERT_EQ(Run(frames::Ipv4(us)), SG_TC_ACT_SHOT);
  const auto gen0 = dp_->Status().active_generation;
  // The opposite policy: only the US class is allowed.
  auto p = World().policy;
  for (auto& c : p.classes) c.allowed_datasets = 0;
  p.classes[World().ClassOf("US")].allowed_datasets = 1;
  dp_->ApplyPolicy(p);
  EXPECT_NE(dp_->Status().active_generation, gen0);
  EXPECT_EQ(Run(frames::Ipv4(de)), SG_TC_ACT_SHOT);
  EXPECT_EQ(Run(frames::Ipv4(us)), SG_TC_ACT_OK);
  dp_->ApplyPolicy(World().policy);
  EXPECT_EQ(Run(frames::Ipv4(de)), SG_TC_ACT_OK);
  EXPECT_EQ(Run(frames::Ipv4(us)), SG_TC_ACT_SHOT);
  EXPECT_EQ(dp_->Status().swaps, 3u);
}

// ifindexes past the direct index go through the hash; both kinds must find their guest.
TEST_F(ProgRunTest, GuestsWithLargeAndSmallIfindexes) {
  testing::Netns ns("sgdpbig" + std::to_string(::getpid()));
  ns.Ip("link add small0 type veth peer name small1");
  ns.Ip("link add big0 index 70000 type veth peer name big1");
  ns.Ip("link set small0 up");
  ns.Ip("link set big0 up");
  const unsigned small = ns.IfIndex("small0"), big = ns.IfIndex("big0");
  ASSERT_EQ(big, 70000u);
  dp_->AddGuest({.name = "vm-small", .ifindex = small, .datasets = 1, .attach = false});
  dp_->AddGuest({.name = "vm-big", .ifindex = big, .datasets = 2, .attach = false});
  const auto de = frames::Ipv4(V4("198.51.100.1"));
  const auto us = frames::Ipv4(V4("203.0.113.1"));
  std::map<std::string, int> v;
  std::thread t([&] {
    int fd = ::open(ns.path().c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::setns(fd, CLONE_NEWNET), 0);
    ::close(fd);
    v["small de"] = dp_->TestRun(de, 1, small).retval;
    v["small us"] = dp_->TestRun(us, 1, small).retval;
    v["big de"] = dp_->TestRun(de, 1, big).retval;
    v["big us"] = dp_->TestRun(us, 1, big).retval;  // dataset 1 is audit: passes
    dp_->RemoveGuest(big);
    v["big removed"] = dp_->TestRun(de, 1, big).retval;
  });
  t.join();
  EXPECT_EQ(v["small de"], SG_TC_ACT_OK);
  EXPECT_EQ(v["small us"], SG_TC_ACT_SHOT);
  EXPECT_EQ(v["big de"], SG_TC_ACT_OK);
  EXPECT_EQ(v["big us"], SG_TC_ACT_OK);
  EXPECT_EQ(v["big removed"], SG_TC_ACT_SHOT);
  EXPECT_EQ(dp_->ReadCounters(small, 0).dropped_packets, 1u);
  EXPECT_THROW(dp_->ReadCounters(big, 1), std::invalid_argument);
}

TEST(NetDatapathNoPolicy, DropsAllButControlFrames) {
  NetDatapath dp;
  dp.AddGuest({.name = "early", .ifindex = kLo, .datasets = 0, .attach = false});
  EXPECT_EQ(dp.TestRun(frames::Ipv4(V4("198.51.100.1"))).retval, SG_TC_ACT_SHOT);
  EXPECT_EQ(dp.TestRun(frames::Raw(0x0806, 28)).retval, SG_TC_ACT_OK);
}

}  // namespace
}  // namespace sovguard::net

namespace sovguard::net {
namespace {

// Every IPv6 path of the program: array levels, nodes at each depth below /32, and the trie under
// a /64 slot that holds a longer prefix (a policy exception for one host, as a resolver would be).
TEST(NetDatapathV6Paths, NodesAtEveryDepthAndTheTrieBeyond64) {
  policy::CompiledPolicy p;
  p.datasets.push_back({.id = "d", .index = 0, .mode = policy::Mode::kEnforce});
  p.classes.resize(3);
  p.classes[1] = sg_class{.allowed_datasets = 1, .country = 0x4445};
  p.classes[2] = sg_class{.allowed_datasets = 0, .country = 0x5553};
  auto v6 = [&](const char* text, std::uint8_t len, std::uint16_t c) {
    policy::Ipv6Prefix e{};
    inet_pton(AF_INET6, text, e.addr.data());
    e.len = len;
    e.class_id = c;
    p.ipv6.push_back(e);
  };
  v6("2001:db8::", 32, 2);
  v6("2001:db8:1000::", 36, 1);
  v6("2001:db8:1230::", 44, 2);
  v6("2001:db8:1234::", 48, 1);
  v6("2001:db8:1234:80::", 57, 2);
  v6("2001:db8:1234:81::", 64, 1);
  v6("2001:db8:1234:81::53", 128, 2);
  const auto t = BuildNetTables(p);
  ASSERT_EQ(t.v6_trie.size(), 7u) << "the /32 with a /128 goes to the trie whole";
  NetDatapath dp;
  dp.ApplyPolicy(p);
  dp.AddGuest({.name = "g", .ifindex = kLo, .datasets = 1, .attach = false});
  const std::pair<const char*, int> cases[] = {
      {"2001:db8:ffff::1", SG_TC_ACT_SHOT},    {"2001:db8:1fff::1", SG_TC_ACT_OK},
      {"2001:db8:123f::1", SG_TC_ACT_SHOT},    {"2001:db8:1234::1", SG_TC_ACT_OK},
      {"2001:db8:1234:ff::1", SG_TC_ACT_SHOT}, {"2001:db8:1234:81::1", SG_TC_ACT_OK},
      {"2001:db8:1234:81::53", SG_TC_ACT_SHOT}};
  for (const auto& [text, verdict] : cases) {
    std::array<std::uint8_t, 16> a{};
    inet_pton(AF_INET6, text, a.data());
    EXPECT_EQ(dp.TestRun(frames::Ipv6(a)).retval, verdict) << text;
    std::uint8_t raw[16];
    std::memcpy(raw, a.data(), 16);
    EXPECT_EQ(LookupV6(t, raw), verdict == SG_TC_ACT_OK ? 1u : 2u) << text;
  }
  // Without the /128 the same /32 is resolved by nodes alone.
  p.ipv6.pop_back();
  EXPECT_TRUE(BuildNetTables(p).v6_trie.empty());
  dp.ApplyPolicy(p);
  std::array<std::uint8_t, 16> a{};
  inet_pton(AF_INET6, "2001:db8:1234:81::53", a.data());
  EXPECT_EQ(dp.TestRun(frames::Ipv6(a)).retval, SG_TC_ACT_OK);
}

}  // namespace
}  // namespace sovguard::net
