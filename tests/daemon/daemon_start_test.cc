// The newcomer path, for real: sovguardd on embedded defaults finds or starts libvirtd, starts a
// swtpm when there is no hardware TPM (and says so), probes the kernel, reports status, and stops
// cleanly on SIGTERM.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

extern char** environ;

namespace fs = std::filesystem;

namespace {

bool Running(const char* pidfile) {
  std::ifstream in(pidfile);
  pid_t pid = 0;
  return (in >> pid) && pid > 0 && ::kill(pid, 0) == 0;
}

void StopByPidFile(const fs::path& pidfile) {
  std::ifstream in(pidfile);
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 250 && ::kill(pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling for exit, bounded
  }
}

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class DaemonStart : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "integration tier needs root";
    if (fs::exists("/dev/tpmrm0")) GTEST_SKIP() << "hardware TPM present: swtpm path not taken";
    libvirtd_was_running_ = Running("/run/libvirtd.pid");
    virtlogd_was_running_ = Running("/run/virtlogd.pid");
    dir_ = fs::temp_directory_path() / ("sg-daemon-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (daemon_ > 0) {
      ::kill(daemon_, SIGKILL);
      ::waitpid(daemon_, nullptr, 0);
    }
    StopByPidFile(dir_ / "state/swtpm/swtpm.pid");
    if (!libvirtd_was_running_) StopByPidFile("/run/libvirtd.pid");
    if (!virtlogd_was_running_) StopByPidFile("/run/virtlogd.pid");
    fs::remove_all(dir_);
  }

  pid_t daemon_ = -1;
  fs::path dir_;
  bool libvirtd_was_running_ = false;
  bool virtlogd_was_running_ = false;
};

TEST_F(DaemonStart, StartsOnEmbeddedDefaultsReportsStatusAndStopsOnSigterm) {
  const std::string bin = std::string(SOVGUARD_BINARY_DIR) + "/enforcer/daemon/sovguardd";
  const std::string state = (dir_ / "state").string();
  const std::string runtime = (dir_ / "run").string();
  const std::string data = std::string(SOVGUARD_SOURCE_DIR) + "/policy/data";
  const std::string log = (dir_ / "daemon.log").string();
  std::vector<std::string> argv = {bin, "--state-dir", state, "--runtime-dir", runtime,
                                   "--data-dir", data, "--config", "/dev/null"};
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_EQ(::posix_spawn(&daemon_, bin.c_str(), &fa, nullptr, cargv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);

  // Ready means the status document exists (written after every start-up step).
  const fs::path status_file = fs::path(runtime) / "status.json";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  int wstatus = 0;
  while (!fs::exists(status_file) && std::chrono::steady_clock::now() < deadline) {
    ASSERT_EQ(::waitpid(daemon_, &wstatus, WNOHANG), 0) << "daemon exited early:\n" << ReadFile(log);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(fs::exists(status_file)) << ReadFile(log);

  const auto status = nlohmann::json::parse(ReadFile(status_file));
  EXPECT_TRUE(status.at("tpm").at("software").get<bool>());
  EXPECT_NE(status.at("tpm").at("tcti").get<std::string>().find("swtpm:host=127.0.0.1"),
            std::string::npos);
  EXPECT_EQ(status.at("probe").at("paths").size(), 6u);
  const std::string logtext = ReadFile(log);
  EXPECT_NE(logtext.find("*** SOFTWARE TPM"), std::string::npos) << "software TPM must be announced loudly:\n" << logtext;
  EXPECT_NE(logtext.find("libvirt answers at qemu:///system"), std::string::npos) << logtext;
  EXPECT_TRUE(fs::exists(fs::path(runtime) / "probe.json"));
  EXPECT_TRUE(Running((dir_ / "state/swtpm/swtpm.pid").c_str())) << "swtpm should be running";

  // `sovguardctl status` renders the same document.
  const std::string ctl = std::string(SOVGUARD_BINARY_DIR) + "/enforcer/ctl/sovguardctl status --runtime-dir " + runtime;
  FILE* p = ::popen(ctl.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(::pclose(p), 0) << out;
  EXPECT_NE(out.find("[SOFTWARE TPM]"), std::string::npos) << out;
  EXPECT_NE(out.find("block-devices"), std::string::npos) << out;

  // The shipped default policy is in force, measured into the TPM-backed log.
  const auto& policy = status.at("policy");
  EXPECT_NE(policy.at("source").get<std::string>().find("default-eu-eea.textproto"), std::string::npos);
  ASSERT_EQ(policy.at("datasets").size(), 1u);
  EXPECT_EQ(policy.at("datasets")[0].at("mode").get<std::string>(), "audit");
  EXPECT_EQ(status.at("measurements").at("pcr").get<int>(), 13);
  EXPECT_NE(logtext.find("jurisdiction table"), std::string::npos) << logtext;

  // An auditor's quote through the local API carries the quote and the enforcement snapshot.
  const std::string evidence = (dir_ / "evidence.json").string();
  const std::string quote = std::string(SOVGUARD_BINARY_DIR) +
                            "/enforcer/ctl/sovguardctl attest quote --nonce 0011223344556677 --socket " +
                            status.at("api_socket").get<std::string>().substr(5) + " -o " + evidence;
  ASSERT_EQ(std::system(quote.c_str()), 0) << quote;
  const auto ev = nlohmann::json::parse(ReadFile(evidence));
  EXPECT_FALSE(ev.at("quote").at("signature").get<std::string>().empty());
  EXPECT_EQ(ev.at("snapshot").at("mechanisms").size(), 6u);

  ASSERT_EQ(::kill(daemon_, SIGTERM), 0);
  ASSERT_EQ(::waitpid(daemon_, &wstatus, 0), daemon_);
  daemon_ = -1;
  ASSERT_TRUE(WIFEXITED(wstatus)) << ReadFile(log);
  EXPECT_EQ(WEXITSTATUS(wstatus), 0) << ReadFile(log);
}

}  // namespace
