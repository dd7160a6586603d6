// A diagnostic points at the exact place in a policy file: "file:line:col: what was expected".
#pragma once

#include <string>
#include <vector>

namespace sovguard::policy {

struct Location {
  int line = 1;  // 1-based
  int col = 1;   // 1-based
};

struct Diagnostic {
  std::string file;
  Location where;
  std::string message;

  std::string ToString() const {
    return file + ":" + std::to_string(where.line) + ":" + std::to_string(where.col) + ": " +
           message;
  }
};

using Diagnostics = std::vector<Diagnostic>;

}  // namespace sovguard::policy
