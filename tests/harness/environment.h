// gtest Environment for running an integration test binary directly (outside ctest): starts
// virtlogd + libvirtd unless they already run, and stops in TearDown only what it started. Under
// ctest the `libvirtd` fixture has already started them, so this is a no-op there.
//   int main(...) { ::testing::AddGlobalTestEnvironment(new sovguard::test::LibvirtdEnvironment); }
// or link sovguard_test_harness_main instead of GTest::gtest_main.
#pragma once

#include <gtest/gtest.h>

namespace sovguard::test {

class LibvirtdEnvironment : public ::testing::Environment {
 public:
  void SetUp() override;
  void TearDown() override;

 private:
  bool started_ = false;
};

}  // namespace sovguard::test
