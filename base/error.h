// The one exception type of base/: a message saying what was being done and to what (a path, a
// field name), and why. Callers that have their own error type may alias this one.
#pragma once

#include <stdexcept>

namespace sovguard::base {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace sovguard::base
