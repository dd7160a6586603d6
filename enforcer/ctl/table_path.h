// Where `sovguardctl jurisdiction lookup` finds the jurisdiction table when no --table is given,
// the way the daemon finds its data: a sovguardctl run from its build tree uses that tree's
// policy/data (as start-node.sh gives sovguardd --data-dir policy/data); an installed one uses the
// installed data directory. SOVGUARD_JURISDICTION_TABLE overrides both.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace sovguard::ctl {

struct TableSearch {
  std::filesystem::path exe;            // the running binary (/proc/self/exe)
  std::filesystem::path build_dir;      // the build tree this binary was configured in
  std::filesystem::path source_dir;     // its source tree (policy/data/world.sgjt)
  std::filesystem::path installed_dir;  // ${datadir}/sovguard
  std::optional<std::string> env;       // SOVGUARD_JURISDICTION_TABLE
};

// This binary's locations (compile-time tree paths, /proc/self/exe, the environment).
TableSearch CurrentTableSearch();

// The table file to use. Fails closed: nullopt with `error` (what was tried, what to pass) when
// the chosen file does not exist; never falls back from one location to another.
std::optional<std::filesystem::path> ResolveJurisdictionTable(const TableSearch& search,
                                                              std::string& error);

// For `jurisdiction lookup` without --table: args with `--table RESOLVED` appended; nullopt with
// `error` when no table is found. Other commands and explicit --table are returned unchanged.
std::optional<std::vector<std::string>> WithDefaultTable(const std::vector<std::string>& args,
                                                         const TableSearch& search,
                                                         std::string& error);

}  // namespace sovguard::ctl
