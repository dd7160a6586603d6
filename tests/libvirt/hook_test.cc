// The hook protocol and the sovguard-libvirt-hook executable against an in-process HookServer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "enforcer/libvirt/hook_protocol.h"
#include "enforcer/libvirt/hook_server.h"
#include "tests/harness/process.h"

namespace sovguard::libvirt {
namespace {

namespace fs = std::filesystem;

constexpr const char* kXml =
    "<domain type='qemu'><name>sgt-h</name><uuid>11111111-2222-3333-4444-555555555555</uuid>"
    "<metadata><s:guest xmlns:s='https://sovguard.eu/ns/guest/1'><dataset id='d1'/></s:guest>"
    "</metadata><devices><interface type='ethernet'><target dev='sgth0'/>"
    "<mac address='52:54:00:00:00:01'/></interface></devices></domain>";

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sovguard-hook-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& leaf) const { return path_ + "/" + leaf; }

 private:
  std::string path_;
};

TEST(HookProtocol, RoundTrips) {
  HookRequest req{"start", "begin", "-", "sgt-h", kXml};
  EXPECT_EQ(DecodeRequest(EncodeRequest(req)), req);
  HookResponse resp{false, "no policy"};
  EXPECT_EQ(DecodeResponse(EncodeResponse(resp)), resp);
}

TEST(HookProtocol, RejectsBadMessagesNamingTheField) {
  auto message = [](const std::string& json) {
    try {
      DecodeRequest(json);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("[]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(message("{\"op\":\"start\"}").find("'v'"), std::string::npos);
  EXPECT_NE(message("{\"v\":2}").find("version 2"), std::string::npos);
  // Numbers that narrow to 1 as a 32-bit int are still other versions.
  EXPECT_NE(message("{\"v\":4294967297}").find("version 4294967297"), std::string::npos);
  EXPECT_NE(message("{\"v\":-4294967295}").find("version -4294967295"), std::string::npos);
  EXPECT_NE(message("{\"v\":1,\"op\":\"start\",\"sub\":\"begin\",\"name\":\"a\"}").find("'xml'"),
            std::string::npos);
  EXPECT_NE(message("{\"v\":1,\"op\":1}").find("'op' must be a string"), std::string::npos);
}

TEST(HookProtocol, OnlyStartBeginBlocks) {
  EXPECT_TRUE(IsBlockingOperation("start", "begin"));
  EXPECT_FALSE(IsBlockingOperation("prepare", "begin"));
  EXPECT_FALSE(IsBlockingOperation("started", "begin"));
  EXPECT_FALSE(IsBlockingOperation("release", "end"));
  EXPECT_FALSE(IsBlockingOperation("reconnect", "begin"));
}

TEST(HookServer, DeliversParsedDomainAndAnswers) {
  TempDir dir;
  std::atomic<int> calls{0};
  HookEvent seen;
  HookServer server(
      dir / "hook.sock",
      [&](const HookEvent& ev) {
        seen = ev;
        ++calls;
        return HookResponse{true, {}};
      },
      std::chrono::seconds(5), ::geteuid());
  EXPECT_EQ(fs::status(dir / "hook.sock").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  HookResponse r = SendHookRequest(dir / "hook.sock", {"start", "begin", "-", "sgt-h", kXml},
                                   std::chrono::seconds(5));
  EXPECT_TRUE(r.ok) << r.error;
  ASSERT_EQ(calls.load(), 1);
  ASSERT_TRUE(seen.domain.has_value()) << seen.parse_error;
  EXPECT_EQ(seen.domain->Taps(), std::vector<std::string>{"sgth0"});
  EXPECT_EQ(seen.domain->labels.datasets, std::vector<std::string>{"d1"});
}

TEST(HookServer, RefusesPeersWithOtherUids) {
  TempDir dir;
  bool called = false;
  HookServer server(
      dir / "hook.sock",
      [&](const HookEvent&) {
        called = true;
        return HookResponse{true, {}};
      },
      std::chrono::seconds(5), ::geteuid() + 1);
  HookResponse r = SendHookRequest(dir / "hook.sock", {"start", "begin", "-", "a", kXml},
                                   std::chrono::seconds(5));
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("not allowed"), std::string::npos);
  EXPECT_FALSE(called);
}

TEST(HookServer, UnparsableXmlReachesHandlerAsParseError) {
  TempDir dir;
  HookServer server(
      dir / "hook.sock",
      [&](const HookEvent& ev) {
        return HookResponse{ev.domain.has_value(), ev.parse_error};
      },
      std::chrono::seconds(5), ::geteuid());
  HookResponse r = SendHookRequest(dir / "hook.sock", {"start", "begin", "-", "a", "<domain"},
                                   std::chrono::seconds(5));
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("domain XML"), std::string::npos) << r.error;
}

// The executable as libvirt runs it: arguments, XML on stdin, exit code is the verdict.
class HookBinary : public ::testing::Test {
 protected:
  void SetUp() override { Config("socket = " + dir_ / "hook.sock" + "\ntimeout_ms = 3000\n"); }
  void Config(const std::string& text) { std::ofstream(dir_ / "hook.conf") << text; }
  test::CommandResult RunHook(const std::string& op, const std::string& sub) {
    return test::Run({SOVGUARD_LIBVIRT_HOOK, "--config", dir_ / "hook.conf", "sgt-h", op, sub, "-"},
                     kXml);
  }
  TempDir dir_;
};

TEST_F(HookBinary, StartBeginSucceedsWhenDaemonAttaches) {
  std::string op;
  HookServer server(
      dir_ / "hook.sock",
      [&](const HookEvent& ev) {
        op = ev.request.op + " " + ev.request.sub;
        return HookResponse{true, {}};
      },
      std::chrono::seconds(5), ::geteuid());
  auto r = RunHook("start", "begin");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(op, "start begin");
}

TEST_F(HookBinary, StartBeginFailsWhenDaemonRefuses) {
  HookServer server(
      dir_ / "hook.sock",
      [&](const HookEvent&) {
        return HookResponse{false, "no policy loaded"};
      },
      std::chrono::seconds(5), ::geteuid());
  auto r = RunHook("start", "begin");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no policy loaded"), std::string::npos) << r.err;
}

TEST_F(HookBinary, FailsClosedWhenDaemonUnreachable) {
  auto r = RunHook("start", "begin");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot reach sovguardd"), std::string::npos) << r.err;
  // Notices never block a guest.
  EXPECT_EQ(RunHook("release", "end").exit_code, 0);
  EXPECT_EQ(RunHook("prepare", "begin").exit_code, 0);
}

TEST_F(HookBinary, OnUnreachableAllowIsHonoured) {
  Config("socket = " + dir_ / "hook.sock" + "\non_unreachable = allow\n");
  EXPECT_EQ(RunHook("start", "begin").exit_code, 0);
}

TEST_F(HookBinary, MalformedConfigFailsClosed) {
  Config("on_unreachable = maybe\n");
  auto r = RunHook("start", "begin");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("hook.conf:1"), std::string::npos) << r.err;
}

TEST_F(HookBinary, TimesOutWhenDaemonHangs) {
  Config("socket = " + dir_ / "hook.sock" + "\ntimeout_ms = 200\n");
  std::atomic<bool> release{false};
  HookServer server(
      dir_ / "hook.sock",
      [&](const HookEvent&) {
        test::PollUntil(std::chrono::seconds(5), [&] { return release.load(); });
        return HookResponse{true, {}};
      },
      std::chrono::seconds(5), ::geteuid());
  auto r = RunHook("start", "begin");
  release = true;
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sovguard::libvirt
