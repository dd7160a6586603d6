#include "tests/support/placement_service.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

#include "tests/harness/process.h"
#include "tests/support/daemon_process.h"

extern char** environ;

namespace sovguard::test {
namespace fs = std::filesystem;

namespace {
const char* kPython = "/usr/bin/python3";  // Debian's, where python3-placement installs
}

Child::Child(std::vector<std::string> argv, const fs::path& log) {
  std::vector<char*> c;
  for (auto& a : argv) c.push_back(a.data());
  c.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  const int rc = ::posix_spawnp(&pid_, c[0], &fa, nullptr, c.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot spawn " + argv[0]);
}

void Child::Stop() {
  if (pid_ <= 0) return;
  TerminateAndWait(pid_, std::chrono::seconds(10));
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

bool PlacementService::Available() {
  return Run({kPython, "-c", "import placement.wsgi"}).exit_code == 0;
}

PlacementService::PlacementService(const fs::path& dir)
    : dir_(dir),
      child_(
          (fs::create_directories(dir),
           std::vector<std::string>{
               kPython, std::string(SOVGUARD_SOURCE_DIR) + "/tests/placement/placement_server.py",
               dir.string()}),
          dir / "server.log") {
  if (!PollUntil(
          std::chrono::seconds(120), [&] { return fs::exists(dir / "port"); },
          std::chrono::milliseconds(100)))
    throw std::runtime_error("Placement did not start:\n" + ReadTextFile(dir / "server.log"));
  url_ = "http://127.0.0.1:" + ReadTextFile(dir / "port");
  while (!url_.empty() && url_.back() == '\n') url_.pop_back();
}

nlohmann::json PlacementService::Api(const std::string& method, const std::string& path,
                                     const nlohmann::json& body) const {
  std::vector<std::string> argv = {"curl",
                                   "-sS",
                                   "-f",
                                   "-X",
                                   method,
                                   "-H",
                                   "X-Auth-Token: admin",
                                   "-H",
                                   "OpenStack-API-Version: placement 1.17",
                                   "-H",
                                   "Content-Type: application/json",
                                   url_ + path};
  std::string input;
  if (!body.is_null()) {
    argv.insert(argv.end(), {"--data-binary", "@-"});
    input = body.dump();
  }
  const auto r = Run(argv, input);
  if (r.exit_code != 0) throw std::runtime_error(method + " " + path + ": " + r.out + r.err);
  return r.out.empty() ? nlohmann::json() : nlohmann::json::parse(r.out);
}

std::string PlacementService::MakeProvider(const std::string& name) const {
  Api("POST", "/resource_providers", {{"name", name}});
  const auto list = Api("GET", "/resource_providers?name=" + name);
  const std::string uuid = list.at("resource_providers").at(0).at("uuid");
  auto gen = Api("GET", "/resource_providers/" + uuid).at("generation");
  Api("PUT", "/resource_providers/" + uuid + "/inventories",
      {{"resource_provider_generation", gen}, {"inventories", {{"VCPU", {{"total", 8}}}}}});
  gen = Api("GET", "/resource_providers/" + uuid).at("generation");
  Api("PUT", "/resource_providers/" + uuid + "/traits",
      {{"resource_provider_generation", gen}, {"traits", {"HW_CPU_X86_AVX2"}}});
  return uuid;
}

std::vector<std::string> PlacementService::Traits(const std::string& uuid) const {
  const auto j = Api("GET", "/resource_providers/" + uuid + "/traits");
  std::vector<std::string> v;
  for (const auto& t : j.at("traits")) v.push_back(t.get<std::string>());
  std::sort(v.begin(), v.end());
  return v;
}

void PlacementService::InjectConflicts(int n) const {
  WriteFile((dir_ / "conflicts").string(), std::to_string(n) + "\n");
}

int PlacementService::TraitWrites() const {
  const fs::path p = dir_ / "trait_puts";
  return fs::exists(p) ? std::stoi(ReadTextFile(p)) : 0;
}

}  // namespace sovguard::test
