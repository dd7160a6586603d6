// sovguard-test-libvirtd start|stop|restart: the ctest fixture `libvirtd` (FIXTURES_SETUP runs
// `start`, FIXTURES_CLEANUP runs `stop`), also handy by hand when debugging a test.
#include <cstdio>
#include <exception>
#include <string>

#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/mounts.h"

int main(int argc, char** argv) {
  using sovguard::test::LibvirtDaemons;
  const std::string cmd = argc == 2 ? argv[1] : "";
  try {
    if (cmd == "start") {
      sovguard::test::EnsureKernelFilesystems();
      sovguard::test::RequireGuestImage();
      const bool started = LibvirtDaemons::Start();
      std::printf("libvirtd %s (pid %d)\n", started ? "started" : "already running",
                  static_cast<int>(LibvirtDaemons::LibvirtdPid()));
    } else if (cmd == "stop") {
      LibvirtDaemons::Stop();
      std::printf("stopped\n");
    } else if (cmd == "restart") {
      LibvirtDaemons::RestartLibvirtd();
      std::printf("libvirtd restarted (pid %d)\n", static_cast<int>(LibvirtDaemons::LibvirtdPid()));
    } else {
      std::fprintf(stderr, "usage: %s start|stop|restart\n", argv[0]);
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sovguard-test-libvirtd %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
  return 0;
}
