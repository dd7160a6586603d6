#include "policy/parse/parse.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>

#include "base/file.h"
#include "policy/parse/json_reader.h"

namespace sovguard::policy {
namespace {

namespace gpb = google::protobuf;

constexpr std::size_t kMaxPolicyBytes = 16u << 20;  // a policy is text written by people

Location FromProto(int line, int col) {
  return {line < 0 ? 1 : line + 1, col < 0 ? 1 : col + 1};
}

std::string Indexed(const std::string& prefix, const gpb::FieldDescriptor* f, int index) {
  std::string p = prefix.empty() ? f->name() : prefix + "." + f->name();
  if (index >= 0) {  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on "[" + string
    p += '[';
    p += std::to_string(index);
    p += ']';
  }
  return p;
}

// ---- text format ----

class TextErrors : public gpb::io::ErrorCollector {
 public:
  TextErrors(std::string file, std::string_view content, Diagnostics& out)
      : file_(std::move(file)), content_(content), out_(out) {}
  void AddError(int line, gpb::io::ColumnNumber column, const std::string& message) override {
    out_.push_back({file_, AtFieldName(line, column, message), Rephrase(message)});
  }
  void AddWarning(int line, gpb::io::ColumnNumber column, const std::string& message) override {
    // Warnings (e.g. deprecated syntax) are errors too: a policy must be unambiguous.
    out_.push_back({file_, FromProto(line, column), Rephrase(message)});
  }
  bool any() const { return !out_.empty(); }

 private:
  // protobuf reports an unknown field at the token after its name; point at the name itself.
  Location AtFieldName(int line, int column, const std::string& message) const {
    static constexpr std::string_view kMarker = "has no field named \"";
    const auto at = message.find(kMarker);
    if (at == std::string::npos || line < 0 || column <= 0) return FromProto(line, column);
    const auto end = message.find('"', at + kMarker.size());
    const std::string name = message.substr(at + kMarker.size(), end - at - kMarker.size());
    // Find the line in the content (protobuf columns count tabs to 8; fall back if unsure).
    std::size_t pos = 0;
    for (int l = 0; l < line && pos != std::string_view::npos; ++l) {
      pos = content_.find('\n', pos);
      if (pos != std::string_view::npos) ++pos;
    }
    if (pos == std::string_view::npos) return FromProto(line, column);
    const auto eol = content_.find('\n', pos);
    const std::string_view text =
        content_.substr(pos, eol == std::string_view::npos ? eol : eol - pos);
    const auto before =
        text.substr(0, std::min<std::size_t>(static_cast<std::size_t>(column), text.size()));
    const auto name_at = before.rfind(name);
    if (name_at == std::string_view::npos) return FromProto(line, column);
    return FromProto(line, static_cast<int>(name_at));
  }
  static std::string Rephrase(const std::string& m) {
    if (m.find("has no field named") != std::string::npos) return "unknown field: " + m;
    return m;
  }
  std::string file_;
  std::string_view content_;
  Diagnostics& out_;
};

// Maps protobuf's (line, column) -- 0-based, tabs advancing to the next multiple of 8 -- to byte
// offsets and back, so values inside list syntax can be located.
class TextIndex {
 public:
  explicit TextIndex(std::string_view s) : s_(s) {
    starts_.push_back(0);
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n') starts_.push_back(i + 1);
    }
  }
  std::optional<std::size_t> Offset(int line, int col) const {
    if (line < 0 || static_cast<std::size_t>(line) >= starts_.size()) return std::nullopt;
    std::size_t p = starts_[static_cast<std::size_t>(line)];
    for (int c = 0; p < s_.size() && s_[p] != '\n';) {
      if (c == col) return p;
      c = s_[p] == '\t' ? (c + 8) & ~7 : c + 1;
      if (c > col) return std::nullopt;
      ++p;
    }
    return std::nullopt;
  }
  Location At(std::size_t offset) const {
    const auto it = std::upper_bound(starts_.begin(), starts_.end(), offset) - 1;
    int col = 0;
    for (std::size_t p = *it; p < offset; ++p) col = s_[p] == '\t' ? (col + 8) & ~7 : col + 1;
    return {static_cast<int>(it - starts_.begin()) + 1, col + 1};
  }

  // From a field name at `p` followed by list syntax "name: [a, b]", the start of each element.
  // Empty when the field holds a single value (not list syntax).
  std::vector<std::size_t> ListElementStarts(std::size_t p) const {
    std::vector<std::size_t> out;
    const std::size_t n = s_.size();
    auto ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
    while (p < n && ident(s_[p])) ++p;
    auto skip_space = [&] {
      while (p < n) {
        if (s_[p] == '#') {
          while (p < n && s_[p] != '\n') ++p;
        } else if (std::isspace(static_cast<unsigned char>(s_[p]))) {
          ++p;
        } else {
          break;
        }
      }
    };
    skip_space();
    if (p < n && s_[p] == ':') {
      ++p;
      skip_space();
    }
    if (p >= n || s_[p] != '[') return out;
    ++p;
    while (true) {
      skip_space();
      if (p >= n || s_[p] == ']') return out;
      out.push_back(p);
      const std::size_t element = p;
      int depth = 0;
      while (p < n) {
        const char c = s_[p];
        if (c == '"' || c == '\'') {
          for (++p; p < n && s_[p] != c && s_[p] != '\n'; ++p) {
            if (s_[p] == '\\') ++p;
          }
        } else if (c == '#') {
          while (p < n && s_[p] != '\n') ++p;
          continue;
        } else if (c == '{' || c == '<' || c == '[') {
          ++depth;
        } else if (c == '}' || c == '>' || c == ']') {
          if (depth == 0) break;
          --depth;
        } else if (c == ',' && depth == 0) {
          break;
        }
        ++p;
      }
      if (p == element) return out;  // no progress: not list syntax we understand
      if (p < n && s_[p] == ',') ++p;
    }
  }

 private:
  std::string_view s_;
  std::vector<std::size_t> starts_;
};

void RecordTree(const gpb::TextFormat::ParseInfoTree& tree, const gpb::Message& msg,
                const std::string& prefix, const TextIndex& text, SourceMap& map, int depth) {
  if (depth > 32) return;
  const auto* refl = msg.GetReflection();
  std::vector<const gpb::FieldDescriptor*> fields;
  refl->ListFields(msg, &fields);
  for (const auto* f : fields) {
    const int n = f->is_repeated() ? refl->FieldSize(msg, f) : 1;
    // protobuf records one location per occurrence of the field name, and "name: [a, b]" is
    // one occurrence with two values: find each value's own position in the text.
    std::vector<Location> values;
    if (f->is_repeated()) {
      for (int k = 0;; ++k) {
        const auto loc = tree.GetLocation(f, k);
        if (loc.line < 0) break;
        if (k == 0) map.Set(Indexed(prefix, f, -1), FromProto(loc.line, loc.column));
        const auto offset = text.Offset(loc.line, loc.column);
        if (!offset) break;
        const auto starts = text.ListElementStarts(*offset);
        if (starts.empty()) {
          values.push_back(FromProto(loc.line, loc.column));  // "name: v" or "name { ... }"
        } else {
          for (auto st : starts) values.push_back(text.At(st));
        }
      }
      if (values.size() != static_cast<std::size_t>(n)) values.clear();  // unsure: fall back
    }
    for (int i = 0; i < n; ++i) {
      const int index = f->is_repeated() ? i : -1;
      const std::string path = Indexed(prefix, f, index);
      if (!values.empty()) {
        map.Set(path, values[static_cast<std::size_t>(i)]);
      } else if (const auto loc = tree.GetLocation(f, f->is_repeated() ? 0 : -1); loc.line >= 0) {
        map.Set(path, FromProto(loc.line, loc.column));
      }
      if (f->cpp_type() == gpb::FieldDescriptor::CPPTYPE_MESSAGE) {
        const auto* nested = tree.GetTreeForNested(f, index);
        if (nested == nullptr) continue;
        const gpb::Message& sub =
            f->is_repeated() ? refl->GetRepeatedMessage(msg, f, i) : refl->GetMessage(msg, f);
        RecordTree(*nested, sub, path, text, map, depth + 1);
      }
    }
  }
}

bool ParseText(ParsedFile& file, std::string_view content, Diagnostics& diags) {
  TextErrors errors(file.name, content, diags);
  gpb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.AllowUnknownField(false);
  parser.AllowUnknownExtension(false);
  parser.AllowFieldNumber(false);
  parser.SetRecursionLimit(32);
  gpb::TextFormat::ParseInfoTree tree;
  parser.WriteLocationsTo(&tree);
  gpb::io::ArrayInputStream input(content.data(), static_cast<int>(content.size()));
  const std::size_t before = diags.size();
  const bool ok = parser.Parse(&input, &file.policy);
  if (!ok || diags.size() != before) {
    if (diags.size() == before) diags.push_back({file.name, {}, "could not parse text format"});
    return false;
  }
  RecordTree(tree, file.policy, "", TextIndex(content), file.locations, 0);
  return true;
}

// ---- JSON ----

class JsonToProto {
 public:
  JsonToProto(ParsedFile& file, Diagnostics& diags) : file_(file), diags_(diags) {}

  bool Message(const json::Value& v, gpb::Message& msg, const std::string& prefix) {
    if (v.kind != json::Value::Kind::kObject) {
      return Fail(v.where, std::string("expected an object for ") + msg.GetDescriptor()->name() +
                               ", got " + json::KindName(v.kind));
    }
    const auto* desc = msg.GetDescriptor();
    const auto* refl = msg.GetReflection();
    std::vector<const gpb::FieldDescriptor*> seen;
    bool ok = true;
    for (const auto& m : v.members) {
      const gpb::FieldDescriptor* f = desc->FindFieldByName(m.key);
      if (f == nullptr) {
        for (int k = 0; k < desc->field_count(); ++k) {
          if (desc->field(k)->json_name() == m.key) f = desc->field(k);
        }
      }
      if (f == nullptr) {
        ok = Fail(m.key_where, "unknown field \"" + m.key + "\" in " + desc->name() +
                                   " (expected one of: " + FieldNames(desc) + ")");
        continue;
      }
      if (std::find(seen.begin(), seen.end(), f) != seen.end()) {
        ok = Fail(m.key_where, "field \"" + m.key + "\" given twice");
        continue;
      }
      seen.push_back(f);
      if (const auto* oneof = f->containing_oneof(); oneof != nullptr &&
                                                     m.value.kind != json::Value::Kind::kNull &&
                                                     refl->HasOneof(msg, oneof)) {
        ok = Fail(m.key_where, "only one of the fields of \"" + oneof->name() + "\" may be set");
        continue;
      }
      const std::string path = prefix.empty() ? f->name() : prefix + "." + f->name();
      file_.locations.Set(path, m.key_where);
      if (m.value.kind == json::Value::Kind::kNull) continue;  // null = default, as in proto3 JSON
      if (f->is_repeated()) {
        if (m.value.kind != json::Value::Kind::kArray) {
          ok = Fail(m.value.where,
                    "expected an array for \"" + m.key + "\", got " + json::KindName(m.value.kind));
          continue;
        }
        for (std::size_t i = 0; i < m.value.items.size(); ++i) {
          const std::string ipath = path + "[" + std::to_string(i) + "]";
          file_.locations.Set(ipath, m.value.items[i].where);
          ok = Element(m.value.items[i], msg, f, ipath) && ok;
        }
      } else {
        ok = Element(m.value, msg, f, path) && ok;
      }
    }
    return ok;
  }

 private:
  static std::string FieldNames(const gpb::Descriptor* d) {
    std::string s;
    for (int i = 0; i < d->field_count(); ++i) {
      if (i) s += ", ";
      s += d->field(i)->name();
    }
    return s;
  }

  bool Fail(Location where, std::string message) {
    diags_.push_back({file_.name, where, std::move(message)});
    return false;
  }

  bool Element(const json::Value& v, gpb::Message& msg, const gpb::FieldDescriptor* f,
               const std::string& path) {
    const auto* refl = msg.GetReflection();
    const bool rep = f->is_repeated();
    using CT = gpb::FieldDescriptor::CppType;
    switch (f->cpp_type()) {
      case CT::CPPTYPE_MESSAGE: {
        gpb::Message* sub = rep ? refl->AddMessage(&msg, f) : refl->MutableMessage(&msg, f);
        return Message(v, *sub, path);
      }
      case CT::CPPTYPE_STRING:
        if (v.kind != json::Value::Kind::kString) {
          return Fail(v.where,
                      "expected a string for \"" + f->name() + "\", got " + json::KindName(v.kind));
        }
        rep ? refl->AddString(&msg, f, v.text) : refl->SetString(&msg, f, v.text);
        return true;
      case CT::CPPTYPE_BOOL:
        if (v.kind != json::Value::Kind::kBool) {
          return Fail(v.where, "expected true or false for \"" + f->name() + "\", got " +
                                   json::KindName(v.kind));
        }
        rep ? refl->AddBool(&msg, f, v.boolean) : refl->SetBool(&msg, f, v.boolean);
        return true;
      case CT::CPPTYPE_UINT64: {
        // proto3 JSON writes 64-bit integers as strings; accept both.
        const std::string& t = v.text;
        std::uint64_t n = 0;
        auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
        if ((v.kind != json::Value::Kind::kNumber && v.kind != json::Value::Kind::kString) ||
            t.empty() || ec != std::errc() || ptr != t.data() + t.size()) {
          return Fail(v.where,
                      "expected a non-negative integer (at most 2^64-1) for \"" + f->name() + "\"");
        }
        rep ? refl->AddUInt64(&msg, f, n) : refl->SetUInt64(&msg, f, n);
        return true;
      }
      case CT::CPPTYPE_ENUM: {
        const auto* e = f->enum_type();
        const gpb::EnumValueDescriptor* ev =
            v.kind == json::Value::Kind::kString ? e->FindValueByName(v.text) : nullptr;
        if (ev == nullptr) {
          std::string names;
          for (int i = 0; i < e->value_count(); ++i) {
            if (e->value(i)->number() == 0) continue;
            if (!names.empty()) names += " or ";
            names += e->value(i)->name();
          }
          return Fail(v.where, "expected " + names + " for \"" + f->name() + "\"");
        }
        rep ? refl->AddEnum(&msg, f, ev) : refl->SetEnum(&msg, f, ev);
        return true;
      }
      default:
        return Fail(v.where, "field \"" + f->name() + "\" has a type this reader does not support");
    }
  }

  ParsedFile& file_;
  Diagnostics& diags_;
};

bool ParseJson(ParsedFile& file, std::string_view content, Diagnostics& diags) {
  auto root = json::Parse(content);
  if (auto* err = std::get_if<json::ParseError>(&root)) {
    diags.push_back({file.name, err->where, err->message});
    return false;
  }
  return JsonToProto(file, diags).Message(std::get<json::Value>(root), file.policy, "");
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

Location SourceMap::Find(std::string_view path) const {
  std::string p(path);
  while (true) {
    if (auto it = map_.find(p); it != map_.end()) return it->second;
    // Drop the last "[i]" or ".field".
    const auto cut = p.find_last_of(".[");
    if (cut == std::string::npos || cut == 0) return {};
    p.resize(cut);
  }
}

Format DetectFormat(std::string_view name, std::string_view content) {
  if (EndsWith(name, ".json") || EndsWith(name, ".jsonld")) return Format::kJson;
  if (EndsWith(name, ".textproto") || EndsWith(name, ".txtpb") || EndsWith(name, ".pbtxt") ||
      EndsWith(name, ".txt")) {
    return Format::kText;
  }
  for (char c : content) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    return (c == '{' || c == '[') ? Format::kJson : Format::kText;
  }
  return Format::kText;
}

std::optional<ParsedFile> ParsePolicy(std::string_view name, std::string_view content,
                                      Diagnostics& diagnostics) {
  ParsedFile file;
  file.name = std::string(name);
  if (content.size() > kMaxPolicyBytes) {
    diagnostics.push_back(
        {file.name, {}, "file larger than 16 MiB; a policy is expected to be small"});
    return std::nullopt;
  }
  file.format = DetectFormat(name, content);
  const bool ok = file.format == Format::kJson ? ParseJson(file, content, diagnostics)
                                               : ParseText(file, content, diagnostics);
  if (!ok) return std::nullopt;
  return file;
}

std::optional<ParsedFile> ParsePolicyFile(const std::filesystem::path& path,
                                          Diagnostics& diagnostics) {
  std::string error;
  auto bytes = base::TryReadFileText(path, &error);
  if (!bytes) {
    diagnostics.push_back({path.string(), {}, error});
    return std::nullopt;
  }
  return ParsePolicy(path.string(), *bytes, diagnostics);
}

}  // namespace sovguard::policy
