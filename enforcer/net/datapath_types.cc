#include "enforcer/net/datapath_types.h"

#include <cstring>

namespace sovguard::datapath {

DatapathError::DatapathError(const std::string& what, int err)
    : std::runtime_error(what + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")"),
      err_(err) {}

}  // namespace sovguard::datapath
