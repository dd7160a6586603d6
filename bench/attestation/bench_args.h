// The command line of the attestation benches: "--name VALUE" options and "--name" switches, each
// setting one field of the bench's options, and one way to report a bad one (exit code 2).
#pragma once

#include <functional>
#include <initializer_list>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace sovguard::attestation::bench {

struct Flag {
  std::string_view name;
  std::function<void(const std::string&)> set;  // the value; "" for a switch
  bool takes_value = true;
};

// "--name N" into `field` (int, long long, double or std::string), as std::stoi, std::stoll,
// std::stod read it.
template <typename T>
Flag Value(std::string_view name, T& field) {
  return {name, [&field](const std::string& v) {
            if constexpr (std::is_same_v<T, int>)
              field = std::stoi(v);
            else if constexpr (std::is_same_v<T, long long>)
              field = std::stoll(v);
            else if constexpr (std::is_same_v<T, double>)
              field = std::stod(v);
            else
              field = v;
          }};
}
// "--name" alone: runs `on`.
inline Flag Switch(std::string_view name, std::function<void()> on) {
  return {name, [on = std::move(on)](const std::string&) { on(); }, false};
}

// Applies argv[1..] to `flags`. Throws std::runtime_error for an unknown option or an option
// without its value.
inline void ParseFlags(int argc, char** argv, std::initializer_list<Flag> flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const Flag* f = nullptr;
    for (const auto& c : flags)
      if (c.name == a) f = &c;
    if (!f) throw std::runtime_error("unknown option " + a);
    if (!f->takes_value) {
      f->set("");
      continue;
    }
    if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
    f->set(argv[++i]);
  }
}

// A bench's main: `body` parses and runs; an exception is a usage error, "<name>: <what>" on
// standard error and exit code 2.
inline int RunBench(const char* name, const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return 2;
  }
}

}  // namespace sovguard::attestation::bench
