#include "enforcer/ctl/table_path.h"

#include <algorithm>
#include <cstdlib>
#include <system_error>

namespace sovguard::ctl {
namespace fs = std::filesystem;

namespace {

// True when `path` lies inside `dir` (both made absolute and normalised, no symlink tricks
// needed: /proc/self/exe is already resolved).
bool Inside(const fs::path& path, const fs::path& dir) {
  if (path.empty() || dir.empty()) return false;
  std::error_code ec;
  const auto p = fs::weakly_canonical(path, ec);
  if (ec) return false;
  const auto d = fs::weakly_canonical(dir, ec);
  if (ec) return false;
  const auto rel = p.lexically_relative(d);
  return !rel.empty() && *rel.begin() != "..";
}

}  // namespace

TableSearch CurrentTableSearch() {
  TableSearch s;
  std::error_code ec;
  s.exe = fs::read_symlink("/proc/self/exe", ec);
  s.build_dir = SOVGUARD_CTL_BUILD_DIR;
  s.source_dir = SOVGUARD_CTL_SOURCE_DIR;
  s.installed_dir = SOVGUARD_CTL_DATADIR;
  if (const char* env = std::getenv("SOVGUARD_JURISDICTION_TABLE"); env != nullptr)
    s.env = std::string(env);
  return s;
}

std::optional<fs::path> ResolveJurisdictionTable(const TableSearch& search, std::string& error) {
  fs::path table;
  std::string why;
  if (search.env) {
    table = *search.env;
    why = "SOVGUARD_JURISDICTION_TABLE";
  } else if (Inside(search.exe, search.build_dir)) {
    table = search.source_dir / "policy/data/world.sgjt";
    why =
        "the source tree of the build tree " + search.build_dir.string() + " this binary runs from";
  } else {
    table = search.installed_dir / "world.sgjt";
    why = "the installed data directory";
  }
  std::error_code ec;
  if (table.empty() || !fs::is_regular_file(table, ec)) {
    error = "no jurisdiction table at " + table.string() + " (" + why +
            "): pass --table FILE (a source tree's policy/data/world.sgjt, or " +
            (search.installed_dir / "world.sgjt").string() + " once installed)";
    return std::nullopt;
  }
  return table;
}

std::optional<std::vector<std::string>> WithDefaultTable(const std::vector<std::string>& args,
                                                         const TableSearch& search,
                                                         std::string& error) {
  if (args.size() < 2 || args[0] != "jurisdiction" || args[1] != "lookup" ||
      std::find(args.begin(), args.end(), "--table") != args.end())
    return args;
  const auto table = ResolveJurisdictionTable(search, error);
  if (!table) return std::nullopt;
  auto with = args;
  with.push_back("--table");
  with.push_back(table->string());
  return with;
}

}  // namespace sovguard::ctl
