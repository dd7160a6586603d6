#include "enforcer/probe/probe_candidates.h"

namespace sovguard::enforcer {

// Wired to the datapath loader once bpf/net lands; until then the path honestly reports none.
Attempt ProbeTapEgress() {
  return {.mechanism = "tc-clsact:ingress", .ok = false, .error = "network datapath not built"};
}
Attempt ProbeTapIngress() {
  return {.mechanism = "tc-clsact:egress", .ok = false, .error = "network datapath not built"};
}

}  // namespace sovguard::enforcer
