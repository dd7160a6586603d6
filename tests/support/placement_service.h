// Debian's OpenStack Placement for a test (tests/placement/placement_server.py: SQLite in the
// test's directory, noauth2, 127.0.0.1 at a port the kernel picks), and a background child whose
// output goes to a file. Both are stopped (SIGTERM, then SIGKILL) and reaped when they go out of
// scope; the server also dies with the test process if the test crashes.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sovguard::test {

class Child {
 public:
  // Runs argv (argv[0] searched in PATH) with standard output and error to `log`.
  Child(std::vector<std::string> argv, const std::filesystem::path& log);
  ~Child() { Stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  void Stop();

 private:
  pid_t pid_ = -1;
};

class PlacementService {
 public:
  // Starts the server with its state in `dir` (created) and waits until it listens; throws
  // std::runtime_error with the server's log when it does not within two minutes.
  explicit PlacementService(const std::filesystem::path& dir);
  // http://127.0.0.1:PORT
  const std::string& url() const { return url_; }
  // True when python3-placement is installed (.ci/install-deps.sh).
  static bool Available();
  // Placement's API through curl (admin, microversion 1.17), independent of the verifier's
  // client: the parsed body; throws std::runtime_error on an HTTP error.
  nlohmann::json Api(const std::string& method, const std::string& path,
                     const nlohmann::json& body = nullptr) const;
  // A compute node's resource provider as Nova makes it: 8 VCPU and the trait HW_CPU_X86_AVX2.
  std::string MakeProvider(const std::string& name) const;
  std::vector<std::string> Traits(const std::string& uuid) const;  // sorted
  // Another writer (placement_server.py): before each of the next `n` trait writes
  // (PUT /resource_providers/{uuid}/traits) is served, it adds CUSTOM_OTHER_WRITER_<k> to that
  // provider through Placement, so the write carries a stale generation and gets 409.
  void InjectConflicts(int n) const;
  // Trait writes (PUT /resource_providers/{uuid}/traits) that reached the server so far.
  int TraitWrites() const;

 private:
  std::filesystem::path dir_;
  Child child_;
  std::string url_;
};

}  // namespace sovguard::test
