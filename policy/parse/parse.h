// Reading policy files: protobuf text format or JSON into sovguard.policy.pb.Policy, with the
// source position of every field kept so that later checks can point at the exact line and column.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "policy/parse/diagnostic.h"
#include "policy/schema/policy.pb.h"

namespace sovguard::policy {

// Field path -> position. Paths use proto field names and indexes:
// "datasets[1].residency.allow[0]". A message-valued path is the position of its field name.
class SourceMap {
 public:
  void Set(std::string path, Location where) { map_.emplace(std::move(path), where); }
  // The position of `path`, or of its closest recorded ancestor, or 1:1.
  Location Find(std::string_view path) const;

 private:
  std::map<std::string, Location, std::less<>> map_;
};

enum class Format { kText, kJson };

struct ParsedFile {
  std::string name;  // as given, used in diagnostics
  Format format = Format::kText;
  pb::Policy policy;
  SourceMap locations;

  Diagnostic At(std::string_view path, std::string message) const {
    return Diagnostic{name, locations.Find(path), std::move(message)};
  }
};

// Chooses the format by extension (.json vs .textproto/.txtpb/.pbtxt/.txt) or, for any other name,
// by content (a first non-blank '{' or '[' that parses as JSON means JSON).
Format DetectFormat(std::string_view name, std::string_view content);

// Never throws and never crashes, whatever the bytes: returns the file or its syntax errors
// (unknown fields, wrong types, duplicate singular fields are all errors).
std::optional<ParsedFile> ParsePolicy(std::string_view name, std::string_view content,
                                      Diagnostics& diagnostics);

// Reads the file (diagnostic at 1:1 when it cannot be read) then ParsePolicy.
std::optional<ParsedFile> ParsePolicyFile(const std::filesystem::path& path,
                                          Diagnostics& diagnostics);

}  // namespace sovguard::policy
