// The text of an errno value. Accepts the negative values libbpf and the kernel return.
#pragma once

#include <string>

namespace sovguard::base {

std::string ErrnoText(int err);

}  // namespace sovguard::base
