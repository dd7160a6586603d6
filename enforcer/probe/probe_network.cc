#include "enforcer/net/net_datapath.h"
#include "enforcer/probe/probe_candidates.h"

namespace sovguard::enforcer {
namespace {

Attempt TryNetDatapath(std::string mechanism) {
  Attempt a{.mechanism = std::move(mechanism)};
  try {
    if (auto why = net::ProbeNetDatapath()) {
      a.error = *why;
    } else {
      a.ok = true;
    }
  } catch (const std::exception& e) {
    a.error = e.what();
  }
  return a;
}

}  // namespace

// The residency program is loaded and run on an allowed and a forbidden frame: a tc program that
// loads, and drops what it should, prevents.
Attempt ProbeTapEgress() {
  return TryNetDatapath("tc-clsact:ingress");
}
// Traffic towards the guest is the same program type on the tap's clsact egress hook.
Attempt ProbeTapIngress() {
  return TryNetDatapath("tc-clsact:egress");
}

}  // namespace sovguard::enforcer
