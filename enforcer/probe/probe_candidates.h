// Probe attempts for paths whose programs live in other capability folders.
#pragma once

#include "enforcer/probe/probe.h"

namespace sovguard::enforcer {

// The guest network residency program on a tap: clsact ingress (guest egress) and egress.
Attempt ProbeTapEgress();
Attempt ProbeTapIngress();

}  // namespace sovguard::enforcer
