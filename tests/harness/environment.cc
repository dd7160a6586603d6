#include "tests/harness/environment.h"

#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/mounts.h"

namespace sovguard::test {

void LibvirtdEnvironment::SetUp() {
  EnsureKernelFilesystems();
  RequireGuestImage();
  started_ = LibvirtDaemons::Start();
}

void LibvirtdEnvironment::TearDown() {
  if (started_) {
    LibvirtDaemons::Stop();
  }
}

}  // namespace sovguard::test
