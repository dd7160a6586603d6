// BpfLsmInactiveReason() on given active-LSM lists: only a list naming "bpf" lets the storage path
// and the probe choose the LSM programs; anything else, unreadable included, is a reason not to.
#include "enforcer/system/lsm.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;

class LsmListTest : public ::testing::Test {
 protected:
  fs::path Write(const std::string& text) {
    std::ofstream(path_) << text;
    return path_;
  }
  void TearDown() override { fs::remove(path_); }
  fs::path path_ = fs::temp_directory_path() / ("sgt-lsm-" + std::to_string(::getpid()));
};

TEST_F(LsmListTest, BpfInTheListIsActive) {
  EXPECT_EQ(sovguard::enforcer::BpfLsmInactiveReason(
                Write("lockdown,capability,landlock,yama,apparmor,tomoyo,bpf")),
            std::nullopt);
  EXPECT_EQ(sovguard::enforcer::BpfLsmInactiveReason(Write("bpf,capability")), std::nullopt);
}

TEST_F(LsmListTest, ListWithoutBpfSaysWhichListItWas) {
  const auto why =
      sovguard::enforcer::BpfLsmInactiveReason(Write("lockdown,capability,landlock,yama,apparmor"));
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("'bpf' is not in the active LSM list (lockdown,capability,landlock,yama,"
                      "apparmor)"),
            std::string::npos)
      << *why;
}

TEST_F(LsmListTest, NamesThatOnlyContainBpfDoNotCount) {
  EXPECT_TRUE(sovguard::enforcer::BpfLsmInactiveReason(Write("capability,bpfx,xbpf")).has_value());
  EXPECT_TRUE(sovguard::enforcer::BpfLsmInactiveReason(Write("")).has_value());
}

TEST_F(LsmListTest, UnreadableListIsNotActive) {
  const auto why = sovguard::enforcer::BpfLsmInactiveReason(path_ / "missing");
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("cannot read the active LSM list"), std::string::npos) << *why;
}

}  // namespace
