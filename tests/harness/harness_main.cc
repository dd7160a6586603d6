// gtest main that adds LibvirtdEnvironment: integration binaries work both under ctest (fixture
// already started the daemons) and when run by hand.
#include <gtest/gtest.h>

#include "tests/harness/environment.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new sovguard::test::LibvirtdEnvironment);
  return RUN_ALL_TESTS();
}
