// Where sovguardctl finds the jurisdiction table without --table: the build tree's source data
// when it runs from its build tree, the installed data directory otherwise, the environment over
// both; a missing file is an error naming what to pass, never a silent fallback elsewhere.
#include "enforcer/ctl/table_path.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "enforcer/system/process.h"

namespace fs = std::filesystem;
using sovguard::ctl::ResolveJurisdictionTable;
using sovguard::ctl::TableSearch;
using sovguard::ctl::WithDefaultTable;

namespace {

class TablePath : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("sg-ctl-table-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    for (const auto* d : {"src/policy/data", "src/build", "share/sovguard", "bin"})
      fs::create_directories(dir_ / d);
    search_ = {.exe = dir_ / "src/build/enforcer/ctl/sovguardctl",
               .build_dir = dir_ / "src/build",
               .source_dir = dir_ / "src",
               .installed_dir = dir_ / "share/sovguard",
               .env = std::nullopt};
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Touch(const fs::path& p) { std::ofstream(p) << "x"; }
  // Both the source tree's and the installed table exist.
  void TouchBothTables() {
    Touch(dir_ / "src/policy/data/world.sgjt");
    Touch(dir_ / "share/sovguard/world.sgjt");
  }
  // ResolveJurisdictionTable(search_) finds `want` (the failure names its error or what it found).
  ::testing::AssertionResult ResolvesTo(const fs::path& want) const {
    std::string error;
    const auto t = ResolveJurisdictionTable(search_, error);
    if (!t) return ::testing::AssertionFailure() << error;
    if (*t != want) return ::testing::AssertionFailure() << *t << ", not " << want;
    return ::testing::AssertionSuccess();
  }

  fs::path dir_;
  TableSearch search_;
};

TEST_F(TablePath, BuildTreeUsesItsSourceTreeData) {
  TouchBothTables();
  EXPECT_TRUE(ResolvesTo(dir_ / "src/policy/data/world.sgjt"));
}

TEST_F(TablePath, InstalledBinaryUsesInstalledData) {
  TouchBothTables();
  search_.exe = dir_ / "bin/sovguardctl";
  EXPECT_TRUE(ResolvesTo(dir_ / "share/sovguard/world.sgjt"));
}

// A directory whose name merely starts with the build directory's is not inside it.
TEST_F(TablePath, NamePrefixOfTheBuildTreeIsNotTheBuildTree) {
  Touch(dir_ / "share/sovguard/world.sgjt");
  fs::create_directories(dir_ / "src/build-other");
  search_.exe = dir_ / "src/build-other/sovguardctl";
  EXPECT_TRUE(ResolvesTo(dir_ / "share/sovguard/world.sgjt"));
  search_.exe = dir_ / "src/build/../bin/sovguardctl";
  EXPECT_TRUE(ResolvesTo(dir_ / "share/sovguard/world.sgjt"));
}

TEST_F(TablePath, MissingTableIsAnErrorNotAFallback) {
  Touch(dir_ / "share/sovguard/world.sgjt");  // present, but not where a build-tree binary looks
  std::string error;
  EXPECT_FALSE(ResolveJurisdictionTable(search_, error));
  EXPECT_NE(error.find((dir_ / "src/policy/data/world.sgjt").string()), std::string::npos) << error;
  EXPECT_NE(error.find("pass --table FILE"), std::string::npos) << error;

  search_.exe = dir_ / "bin/sovguardctl";
  fs::remove(dir_ / "share/sovguard/world.sgjt");
  Touch(dir_ / "src/policy/data/world.sgjt");
  error.clear();
  EXPECT_FALSE(ResolveJurisdictionTable(search_, error));
  EXPECT_NE(error.find((dir_ / "share/sovguard/world.sgjt").string()), std::string::npos) << error;
}

TEST_F(TablePath, EnvironmentOverridesAndFailsClosed) {
  Touch(dir_ / "src/policy/data/world.sgjt");
  Touch(dir_ / "other.sgjt");
  search_.env = (dir_ / "other.sgjt").string();
  std::string error;
  EXPECT_EQ(ResolveJurisdictionTable(search_, error), dir_ / "other.sgjt");
  search_.env = (dir_ / "missing.sgjt").string();
  EXPECT_FALSE(ResolveJurisdictionTable(search_, error));
  EXPECT_NE(error.find("SOVGUARD_JURISDICTION_TABLE"), std::string::npos) << error;
}

TEST_F(TablePath, OnlyLookupWithoutTableGetsTheDefault) {
  Touch(dir_ / "src/policy/data/world.sgjt");
  std::string error;
  const std::vector<std::string> explicit_table = {"jurisdiction", "lookup", "192.0.2.1", "--table",
                                                   "/x.sgjt"};
  EXPECT_EQ(WithDefaultTable(explicit_table, search_, error), explicit_table);
  const std::vector<std::string> compile = {"jurisdiction", "compile", "--from", "d", "-o", "f"};
  EXPECT_EQ(WithDefaultTable(compile, search_, error), compile);
  const auto lookup = WithDefaultTable({"jurisdiction", "lookup", "192.0.2.1"}, search_, error);
  ASSERT_TRUE(lookup) << error;
  EXPECT_EQ(*lookup, (std::vector<std::string>{"jurisdiction", "lookup", "192.0.2.1", "--table",
                                               (dir_ / "src/policy/data/world.sgjt").string()}));
}

// The README's example, as a newcomer runs it right after start-node.sh: the build tree's
// sovguardctl, no --table, no environment.
TEST(TablePathBinary, ReadmeLookupWorksFromTheBuildTree) {
  ::unsetenv("SOVGUARD_JURISDICTION_TABLE");
  const auto r = sovguard::enforcer::RunCommand(
      {std::string(SOVGUARD_BINARY_DIR) + "/enforcer/ctl/sovguardctl", "jurisdiction", "lookup",
       "2001:638::1"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("country: DE"), std::string::npos) << r.output;
}

}  // namespace
