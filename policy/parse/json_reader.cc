#include "policy/parse/json_reader.h"

#include <cstdint>

namespace sovguard::policy::json {
namespace {

constexpr int kMaxDepth = 64;

class Reader {
 public:
  explicit Reader(std::string_view text) : s_(text) {}

  std::variant<Value, ParseError> Run() {
    SkipSpace();
    Value root;
    if (!ReadValue(root, 0)) return error_;
    SkipSpace();
    if (pos_ != s_.size()) {
      Fail("expected end of input after the JSON value");
      return error_;
    }
    return root;
  }

 private:
  Location Here() const { return {line_, col_}; }

  bool Fail(std::string message) {
    error_ = {Here(), std::move(message)};
    return false;
  }

  void Advance() {
    if (s_[pos_] == '\n') {
      ++line_;
      col_ = 1;
    } else if ((static_cast<unsigned char>(s_[pos_]) & 0xC0) != 0x80) {
      ++col_;  // count UTF-8 sequences as one column
    }
    ++pos_;
  }

  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      Advance();
    }
  }

  bool Literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) {
      return Fail("expected a JSON value (object, array, string, number, true, false, null)");
    }
    for (std::size_t i = 0; i < word.size(); ++i) Advance();
    return true;
  }

  bool ReadValue(Value& v, int depth) {
    v.where = Here();
    if (pos_ >= s_.size()) return Fail("unexpected end of input, expected a JSON value");
    const char c = s_[pos_];
    switch (c) {
      case '{':
        v.kind = Value::Kind::kObject;
        return ReadObject(v, depth + 1);
      case '[':
        v.kind = Value::Kind::kArray;
        return ReadArray(v, depth + 1);
      case '"':
        v.kind = Value::Kind::kString;
        return ReadString(v.text);
      case 't':
        v.kind = Value::Kind::kBool;
        v.boolean = true;
        return Literal("true");
      case 'f':
        v.kind = Value::Kind::kBool;
        return Literal("false");
      case 'n':
        v.kind = Value::Kind::kNull;
        return Literal("null");
      default:
        if (c == '-' || (c >= '0' && c <= '9')) {
          v.kind = Value::Kind::kNumber;
          return ReadNumber(v.text);
        }
        return Fail("expected a JSON value (object, array, string, number, true, false, null)");
    }
  }

  bool ReadObject(Value& v, int depth) {
    if (depth > kMaxDepth) return Fail("nesting deeper than 64 levels");
    Advance();  // {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      Advance();
      return true;
    }
    while (true) {
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != '"') return Fail("expected a quoted member name");
      Member m;
      m.key_where = Here();
      if (!ReadString(m.key)) return false;
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != ':') return Fail("expected ':' after member name");
      Advance();
      SkipSpace();
      if (!ReadValue(m.value, depth)) return false;
      v.members.push_back(std::move(m));
      SkipSpace();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        Advance();
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        Advance();
        return true;
      }
      return Fail("expected ',' or '}' in object");
    }
  }

  bool ReadArray(Value& v, int depth) {
    if (depth > kMaxDepth) return Fail("nesting deeper than 64 levels");
    Advance();  // [
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      Advance();
      return true;
    }
    while (true) {
      SkipSpace();
      Value item;
      if (!ReadValue(item, depth)) return false;
      v.items.push_back(std::move(item));
      SkipSpace();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        Advance();
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        Advance();
        return true;
      }
      return Fail("expected ',' or ']' in array");
    }
  }

  static void AppendUtf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool ReadHex4(std::uint32_t& cp) {
    cp = 0;
    for (int i = 0; i < 4; ++i) {
      if (pos_ >= s_.size()) return Fail("unexpected end of input in \\u escape");
      const char h = s_[pos_];
      cp <<= 4;
      if (h >= '0' && h <= '9') {
        cp |= static_cast<std::uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        cp |= static_cast<std::uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        cp |= static_cast<std::uint32_t>(h - 'A' + 10);
      } else {
        return Fail("expected four hex digits after \\u");
      }
      Advance();
    }
    return true;
  }

  bool ReadString(std::string& out) {
    Advance();  // opening quote
    while (true) {
      if (pos_ >= s_.size()) return Fail("unterminated string");
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        Advance();
        return true;
      }
      if (c < 0x20) return Fail("control character in string (escape it)");
      if (c == '\\') {
        Advance();
        if (pos_ >= s_.size()) return Fail("unterminated string");
        const char e = s_[pos_];
        Advance();
        switch (e) {
          case '"':
            out.push_back('"');
            break;
          case '\\':
            out.push_back('\\');
            break;
          case '/':
            out.push_back('/');
            break;
          case 'b':
            out.push_back('\b');
            break;
          case 'f':
            out.push_back('\f');
            break;
          case 'n':
            out.push_back('\n');
            break;
          case 'r':
            out.push_back('\r');
            break;
          case 't':
            out.push_back('\t');
            break;
          case 'u': {
            std::uint32_t cp = 0;
            if (!ReadHex4(cp)) return false;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (s_.substr(pos_, 2) != "\\u")
                return Fail("unpaired UTF-16 surrogate in \\u escape");
              Advance();
              Advance();
              std::uint32_t lo = 0;
              if (!ReadHex4(lo)) return false;
              if (lo < 0xDC00 || lo > 0xDFFF) return Fail("invalid UTF-16 surrogate pair");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
              return Fail("unpaired UTF-16 surrogate in \\u escape");
            }
            AppendUtf8(out, cp);
            break;
          }
          default:
            return Fail("invalid escape in string");
        }
        continue;
      }
      // Validate UTF-8 so later layers (protobuf strings) never see malformed text.
      int extra = 0;
      std::uint32_t cp = 0;
      if (c < 0x80) {
        extra = 0;
        cp = c;
      } else if ((c & 0xE0) == 0xC0) {
        extra = 1;
        cp = c & 0x1F;
      } else if ((c & 0xF0) == 0xE0) {
        extra = 2;
        cp = c & 0x0F;
      } else if ((c & 0xF8) == 0xF0) {
        extra = 3;
        cp = c & 0x07;
      } else {
        return Fail("invalid UTF-8 in string");
      }
      if (pos_ + static_cast<std::size_t>(extra) >= s_.size())
        return Fail("invalid UTF-8 in string");
      for (int i = 1; i <= extra; ++i) {
        const auto cc = static_cast<unsigned char>(s_[pos_ + static_cast<std::size_t>(i)]);
        if ((cc & 0xC0) != 0x80) return Fail("invalid UTF-8 in string");
        cp = (cp << 6) | (cc & 0x3F);
      }
      static constexpr std::uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
      if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return Fail("invalid UTF-8 in string");
      }
      for (int i = 0; i <= extra; ++i) {
        out.push_back(s_[pos_]);
        Advance();
      }
    }
  }

  bool ReadNumber(std::string& out) {
    const std::size_t start = pos_;
    auto digits = [&] {
      std::size_t n = 0;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        Advance();
        ++n;
      }
      return n;
    };
    if (s_[pos_] == '-') Advance();
    if (digits() == 0) return Fail("expected digits in number");
    if (pos_ < s_.size() && s_[pos_] == '.') {
      Advance();
      if (digits() == 0) return Fail("expected digits after '.' in number");
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      Advance();
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) Advance();
      if (digits() == 0) return Fail("expected digits in exponent");
    }
    out.assign(s_.substr(start, pos_ - start));
    return true;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  int line_ = 1;
  int col_ = 1;
  ParseError error_;
};

}  // namespace

std::variant<Value, ParseError> Parse(std::string_view text) {
  return Reader(text).Run();
}

const char* KindName(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::kNull:
      return "null";
    case Value::Kind::kBool:
      return "a boolean";
    case Value::Kind::kNumber:
      return "a number";
    case Value::Kind::kString:
      return "a string";
    case Value::Kind::kArray:
      return "an array";
    case Value::Kind::kObject:
      return "an object";
  }
  return "?";
}

}  // namespace sovguard::policy::json
