#include "base/errno_text.h"

#include <cstring>

namespace sovguard::base {

std::string ErrnoText(int err) {
  return std::strerror(err < 0 ? -err : err);
}

}  // namespace sovguard::base
