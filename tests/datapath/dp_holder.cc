// sg_dp_holder: stands in for sovguardd in restart tests, as a real separate process the test can
// SIGKILL. Loads the datapath with a pin directory, applies the test policy (with a long-window
// quota), attaches every tap given, prints "ready <program id> <tag>" and waits for stdin to close.
//   sg_dp_holder PIN_DIR NETNS_PATH IFINDEX[,IFINDEX...]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "enforcer/net/net_datapath.h"
#include "tests/datapath/topology.h"

using namespace sovguard;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s PIN_DIR NETNS_PATH IFINDEX[,IFINDEX...]\n", argv[0]);
    return 2;
  }
  try {
    net::NetDatapath dp({.pin_dir = argv[1], .detach_on_destroy = false});
    dp.ApplyPolicy(net::testing::TestPolicy(
        policy::Mode::kEnforce, false, policy::Quota{.bytes = 1ull << 30, .window_seconds = 3600}));
    std::stringstream list(argv[3]);
    std::string item;
    int n = 0;
    while (std::getline(list, item, ','))
      dp.AddGuest({.name = "vm-" + std::to_string(n++),
                   .ifindex = static_cast<std::uint32_t>(std::stoul(item)),
                   .datasets = 1,
                   .netns = argv[2]});
    const auto prog = dp.program();
    std::printf("ready %u %s\n", prog.id, prog.tag.c_str());
    std::fflush(stdout);
    char c;
    while (::read(STDIN_FILENO, &c, 1) > 0) {
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sg_dp_holder: %s\n", e.what());
    return 1;
  }
}
