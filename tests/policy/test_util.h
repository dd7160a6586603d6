// Helpers shared by the policy unit tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "base/file.h"
#include "policy/parse/parse.h"

namespace sovguard::policy::testing {

inline std::filesystem::path SourceDir() {
  return SOVGUARD_SOURCE_DIR;
}
inline std::filesystem::path SharedData() {
  return SOVGUARD_SHARED_DATA_DIR;
}
inline std::filesystem::path Fixtures() {
  return SourceDir() / "tests/policy/fixtures";
}

inline std::string ReadAll(const std::filesystem::path& p) {
  std::string error;
  auto b = base::TryReadFileText(p, &error);
  EXPECT_TRUE(b.has_value()) << p << ": " << error;
  return b.value_or("");
}

// A unique temporary directory removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("sovguard-policy-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path Write(const std::string& name, const std::string& content) const {
    const auto p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace sovguard::policy::testing
