// Tamper detection and repair with real traffic: our filter deleted with `tc filter del`,
// our program replaced by another at our handle/priority, a foreign filter put in front of ours, a
// policy table and a guest entry overwritten. Each is found by VerifyAttachments() and undone by
// Repair() (tables: by applying the policy again), and enforcement is back, which traffic shows.
#include <gtest/gtest.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "enforcer/net/net_datapath.h"
// After the ABI (via net_datapath.h): the skeleton's .bss types come from it.
#include "bpf/net/sg_net.skel.h"
#include "tests/datapath/sg_pass.skel.h"
#include "tests/datapath/topology.h"

namespace sovguard::net {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using testing::Topology;

class DatapathTamperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    topo_ = std::make_unique<Topology>("sgtp" + std::to_string(::getpid() % 100000) + "x" +
                                       std::to_string(++counter_));
    ASSERT_NE(::mkdtemp(pin_), nullptr);
    ASSERT_EQ(::mount("bpf", pin_, "bpf", 0, nullptr), 0) << std::strerror(errno);
    dp_ = std::make_unique<NetDatapath>(NetDatapathOptions{.pin_dir = pin_});
    dp_->ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce));
    dp_->AddGuest(
        {.name = "vm-t", .ifindex = topo_->tap(0), .datasets = 1, .netns = topo_->router().path()});
    allowed_ = topo_->UdpServer("198.51.100.10", 5201);
    forbidden_ = topo_->UdpServer("203.0.113.10", 5201);
    tx_ = topo_->GuestSocket(0);
  }
  void TearDown() override {
    if (dp_) {
      dp_->Detach();
      dp_->Unpin();
      dp_.reset();
    }
    ::umount2(pin_, MNT_DETACH);
    ::rmdir(pin_);
    pass_.reset();
    topo_.reset();
  }
  // Sends one forbidden then one allowed datagram; returns whether the forbidden one arrived
  // (the allowed one must arrive either way: it is the marker that the forbidden one is not just
  // late).
  bool ForbiddenPasses() {
    const auto a = testing::Addr("198.51.100.10", 5201), f = testing::Addr("203.0.113.10", 5201);
    char msg[16] = "tamper";
    ::sendto(tx_.Get(), msg, sizeof(msg), 0, reinterpret_cast<const sockaddr*>(&f),
             testing::Len(f));
    ::sendto(tx_.Get(), msg, sizeof(msg), 0, reinterpret_cast<const sockaddr*>(&a),
             testing::Len(a));
    EXPECT_EQ(testing::UdpReceive(allowed_.Get(), 1, 5s), 1) << "allowed datagram lost";
    return testing::UdpDrain(forbidden_.Get()) > 0;
  }
  // Runs f in the router namespace (where the tap is).
  template <class F>
  void InRouter(F&& f) {
    std::thread t([&] {
      int fd = ::open(topo_->router().path().c_str(), O_RDONLY | O_CLOEXEC);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(::setns(fd, CLONE_NEWNET), 0);
      ::close(fd);
      f();
    });
    t.join();
  }
  // Loads the pass-everything program (once) and attaches it at (handle, priority) of the tap.
  ProgramIdentity AttachPass(std::uint32_t handle, std::uint32_t priority) {
    if (!pass_) {
      pass_.reset(sg_pass__open_and_load());
      EXPECT_TRUE(pass_);
    }
    const int fd = bpf_program__fd(pass_->progs.sg_pass);
    InRouter([&] {
      LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(topo_->tap(0)),
                  .attach_point = BPF_TC_INGRESS);
      LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = fd, .flags = BPF_TC_F_REPLACE, .handle = handle,
                  .priority = priority);
      ASSERT_EQ(bpf_tc_attach(&hook, &opts), 0);
    });
    bpf_prog_info info{};
    std::uint32_t len = sizeof(info);
    EXPECT_EQ(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
    ProgramIdentity p{.id = info.id};
    char hex[3];
    for (unsigned char c : info.tag) {
      std::snprintf(hex, sizeof(hex), "%02x", c);
      p.tag += hex;
    }
    return p;
  }
  static std::vector<TamperKind> Kinds(const std::vector<TamperFinding>& v) {
    std::vector<TamperKind> k;
    for (const auto& f : v) k.push_back(f.kind);
    return k;
  }

  struct PassDeleter {
    void operator()(sg_pass* p) const { sg_pass__destroy(p); }
  };
  static inline int counter_ = 0;
  char pin_[32] = "/tmp/sgdp-bpffs-XXXXXX";
  std::unique_ptr<Topology> topo_;
  std::unique_ptr<NetDatapath> dp_;
  std::unique_ptr<sg_pass, PassDeleter> pass_;
  testing::Fd allowed_, forbidden_, tx_;
};

TEST_F(DatapathTamperTest, CleanStateHasNoFindings) {
  const auto t0 = Clock::now();
  EXPECT_TRUE(dp_->VerifyAttachments().empty());
  const auto deep = Clock::now() - t0;
  const auto t1 = Clock::now();
  EXPECT_TRUE(dp_->VerifyAttachments({.hash_tables = false}).empty());
  const auto shallow = Clock::now() - t1;
  std::printf("verify: %.1f ms with table hashes, %.2f ms without (1 guest, test table)\n",
              std::chrono::duration<double, std::milli>(deep).count(),
              std::chrono::duration<double, std::milli>(shallow).count());
  EXPECT_FALSE(ForbiddenPasses());
}

TEST_F(DatapathTamperTest, DeletedFilterIsFoundAndReattached) {
  ASSERT_FALSE(ForbiddenPasses());
  testing::Sh("ip netns exec " + topo_->router().name() + " tc filter del dev r0 ingress");
  EXPECT_TRUE(ForbiddenPasses()) << "the tamper did not open the path (test is broken)";
  const auto findings = dp_->VerifyAttachments();
  ASSERT_EQ(Kinds(findings), std::vector<TamperKind>{TamperKind::kFilterMissing});
  EXPECT_EQ(findings[0].ifindex, topo_->tap(0));
  EXPECT_EQ(findings[0].guest, "vm-t");
  const auto r = dp_->Repair();
  EXPECT_EQ(r.repaired.size(), 1u);
  EXPECT_TRUE(r.remaining.empty());
  EXPECT_FALSE(ForbiddenPasses());
  EXPECT_TRUE(dp_->VerifyAttachments().empty());
}

TEST_F(DatapathTamperTest, DeletedQdiscIsFoundAndRecreated) {
  testing::Sh("ip netns exec " + topo_->router().name() + " tc qdisc del dev r0 clsact");
  EXPECT_TRUE(ForbiddenPasses());
  ASSERT_EQ(Kinds(dp_->VerifyAttachments()), std::vector<TamperKind>{TamperKind::kFilterMissing});
  dp_->Repair();
  EXPECT_FALSE(ForbiddenPasses());
  EXPECT_TRUE(dp_->VerifyAttachments().empty());
}

TEST_F(DatapathTamperTest, ReplacedProgramIsFoundWithBothTagsAndReplacedBack) {
  const ProgramIdentity ours = dp_->program();
  const ProgramIdentity theirs = AttachPass(0x5347, 1);
  ASSERT_NE(ours.tag, theirs.tag);
  EXPECT_TRUE(ForbiddenPasses());
  const auto findings = dp_->VerifyAttachments();
  ASSERT_EQ(Kinds(findings), std::vector<TamperKind>{TamperKind::kProgramReplaced});
  EXPECT_EQ(findings[0].expected.id, ours.id);
  EXPECT_EQ(findings[0].expected.tag, ours.tag);
  EXPECT_EQ(findings[0].found.id, theirs.id);
  EXPECT_EQ(findings[0].found.tag, theirs.tag);
  EXPECT_NE(FormatFinding(findings[0]).find(theirs.tag), std::string::npos);
  dp_->Repair();
  EXPECT_FALSE(ForbiddenPasses());
  const auto filters = ListIngressFilters(topo_->tap(0), topo_->router().path());
  ASSERT_EQ(filters.size(), 1u);
  EXPECT_EQ(filters[0].program.id, ours.id);
}

TEST_F(DatapathTamperTest, ForeignFilterInFrontOfOursIsFoundAndRemoved) {
  // Same priority, another handle: the kernel runs the newest first, and its "pass" ends
  // classification before our program sees the frame.
  const ProgramIdentity theirs = AttachPass(7, 1);
  EXPECT_TRUE(ForbiddenPasses());
  const auto findings = dp_->VerifyAttachments();
  ASSERT_EQ(Kinds(findings), std::vector<TamperKind>{TamperKind::kFilterBypass});
  EXPECT_EQ(findings[0].filter.handle, 7u);
  EXPECT_EQ(findings[0].found.tag, theirs.tag);
  const auto r = dp_->Repair();
  EXPECT_EQ(r.repaired.size(), 1u);
  EXPECT_FALSE(ForbiddenPasses());
  EXPECT_TRUE(dp_->VerifyAttachments().empty());
  EXPECT_EQ(ListIngressFilters(topo_->tap(0), topo_->router().path()).size(), 1u);
}

TEST_F(DatapathTamperTest, FilterAfterOursIsNotAFinding) {
  AttachPass(7, 2);  // runs only on what we passed
  EXPECT_FALSE(ForbiddenPasses());
  EXPECT_TRUE(dp_->VerifyAttachments().empty());
}

TEST_F(DatapathTamperTest, AlteredPolicyTableIsFoundAndApplyPolicyRestoresIt) {
  // Overwrite the US class of the active generation so that dataset 0 may go there.
  const std::string outer_path = std::string(pin_) + "/sg_classes_outer";
  const int outer = bpf_obj_get(outer_path.c_str());
  ASSERT_GE(outer, 0) << outer_path;
  std::uint32_t active = 0, id = 0;
  std::vector<std::uint32_t> ids;
  for (std::uint32_t gen = 0; gen < SG_NET_GENERATIONS; ++gen)
    if (bpf_map_lookup_elem(outer, &gen, &id) == 0) active = gen, ids.push_back(id);
  ::close(outer);
  ASSERT_EQ(ids.size(), 1u);
  const int classes = bpf_map_get_fd_by_id(ids[0]);
  ASSERT_GE(classes, 0);
  const std::uint32_t us = 2;
  sg_class c{};
  ASSERT_EQ(bpf_map_lookup_elem(classes, &us, &c), 0);
  c.allowed_datasets = 1;
  ASSERT_EQ(bpf_map_update_elem(classes, &us, &c, BPF_ANY), 0);
  ::close(classes);
  (void)active;
  EXPECT_TRUE(ForbiddenPasses());
  auto findings = dp_->VerifyAttachments();
  ASSERT_EQ(Kinds(findings), std::vector<TamperKind>{TamperKind::kPolicyTableAltered});
  EXPECT_EQ(findings[0].table, "classes");
  // Identity checks alone do not see a content change.
  EXPECT_TRUE(dp_->VerifyAttachments({.hash_tables = false}).empty());
  const auto r = dp_->Repair();
  EXPECT_TRUE(r.repaired.empty());
  ASSERT_EQ(r.remaining.size(), 1u);  // the daemon re-applies its policy
  dp_->ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce));
  EXPECT_FALSE(ForbiddenPasses());
  EXPECT_TRUE(dp_->VerifyAttachments().empty());
}

// The maps of a replaced generation are freed once the swap is done (only the outer maps held
// them): checked by map id, so other BPF users on the host do not disturb it.
TEST_F(DatapathTamperTest, SwapFreesEveryTableOfThePreviousGeneration) {
  auto active_tables = [&] {
    std::vector<std::uint32_t> ids;
    for (const char* outer :
         {"sg_v4_dir_outer", "sg_v4_l2_outer", "sg_v6_lpm_outer", "sg_v6_l1_outer",
          "sg_v6_l2_outer", "sg_classes_outer", "sg_policy_outer", "sg_v6_l3_outer"}) {
      const int fd = bpf_obj_get((std::string(pin_) + "/" + outer).c_str());
      EXPECT_GE(fd, 0) << outer;
      int filled = 0;
      for (std::uint32_t gen = 0; gen < SG_NET_GENERATIONS; ++gen) {
        std::uint32_t id = 0;
        if (bpf_map_lookup_elem(fd, &gen, &id) == 0) {
          ids.push_back(id);
          ++filled;
        }
      }
      EXPECT_EQ(filled, 1) << outer << ": one generation only";
      ::close(fd);
    }
    return ids;
  };
  auto alive = [](const std::vector<std::uint32_t>& ids) {
    int n = 0;
    for (const std::uint32_t id : ids) {
      const int fd = bpf_map_get_fd_by_id(id);
      if (fd >= 0) {
        ++n;
        ::close(fd);
      }
    }
    return n;
  };
  const auto before = active_tables();
  ASSERT_EQ(before.size(), std::size_t{SG_NET_TABLES});
  ASSERT_EQ(alive(before), SG_NET_TABLES);
  for (bool split : {true, false})
    dp_->ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce, split));
  const auto after = active_tables();
  for (const std::uint32_t id : before)
    EXPECT_EQ(std::count(after.begin(), after.end(), id), 0) << "map " << id << " still active";
  // The kernel frees unreferenced maps after an RCU grace period: poll with a deadline.
  const auto until = Clock::now() + 10s;
  while (alive(before) > 0 && Clock::now() < until) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(alive(before), 0) << "tables of replaced generations still exist";
  EXPECT_EQ(alive(after), SG_NET_TABLES);
  EXPECT_FALSE(ForbiddenPasses());
  EXPECT_TRUE(dp_->VerifyAttachments().empty());
}

TEST_F(DatapathTamperTest, AlteredGuestEntryIsFoundAndRewritten) {
  // Clear the guest's datasets in the program's .bss (pinned as sg_net_bss): it would then be
  // unrestricted.
  const int bss = bpf_obj_get((std::string(pin_) + "/sg_net_bss").c_str());
  ASSERT_GE(bss, 0);
  std::vector<std::uint8_t> value(sizeof(sg_net::sg_net__bss));
  const std::uint32_t zero = 0;
  ASSERT_EQ(bpf_map_lookup_elem(bss, &zero, value.data()), 0);
  auto* b = reinterpret_cast<sg_net::sg_net__bss*>(value.data());
  const std::uint32_t entry = b->sg_guest_index[topo_->tap(0)];
  ASSERT_NE(entry, 0u);
  b->sg_guest_cfg[entry - 1].datasets = 0;
  ASSERT_EQ(bpf_map_update_elem(bss, &zero, value.data(), BPF_ANY), 0);
  ::close(bss);
  EXPECT_TRUE(ForbiddenPasses());
  ASSERT_EQ(Kinds(dp_->VerifyAttachments()),
            std::vector<TamperKind>{TamperKind::kGuestEntryAltered});
  EXPECT_EQ(dp_->Repair().repaired.size(), 1u);
  EXPECT_FALSE(ForbiddenPasses());
  EXPECT_TRUE(dp_->VerifyAttachments().empty());
}

}  // namespace
}  // namespace sovguard::net
