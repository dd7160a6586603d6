// A small JSON reader that remembers the line and column of every value and key, so policy
// diagnostics can point into JSON files as precisely as into text-format ones. Depth and size are
// bounded; any byte sequence yields either a tree or one error with its position.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "policy/parse/diagnostic.h"

namespace sovguard::policy::json {

struct Value;
struct Member;

struct Value {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  Location where;
  bool boolean = false;
  std::string text;  // string contents (unescaped), or the number's literal text
  std::vector<Value> items;
  std::vector<Member> members;  // in document order, duplicates kept for the caller to reject
};

struct Member {
  std::string key;
  Location key_where;
  Value value;
};

struct ParseError {
  Location where;
  std::string message;
};

// Returns the root value or the first error.
std::variant<Value, ParseError> Parse(std::string_view text);

const char* KindName(Value::Kind kind);

}  // namespace sovguard::policy::json
