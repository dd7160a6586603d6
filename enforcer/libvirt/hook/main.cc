// sovguard-libvirt-hook: libvirt's qemu hook for sovguard. Install as
// /etc/libvirt/hooks/qemu.d/sovguard (libvirt runs every executable there; it looks for hooks when
// libvirtd starts, so restart libvirtd after installing).
//
//   sovguard-libvirt-hook [--config FILE] NAME OPERATION SUB-OPERATION EXTRA  < domain XML
//
// At "start begin" the guest's taps exist and QEMU has not started: the hook sends the domain XML
// to sovguardd and waits until sovguardd has attached the guest's programs. If sovguardd cannot be
// reached, does not answer in time or refuses, the hook exits 1 and libvirt does not start the
// guest (fail closed), unless the config says `on_unreachable = allow`. Other operations are
// passed on as notices and never block a guest. The hook never calls libvirt (libvirt forbids it:
// it would deadlock).
//
// Config (default /etc/sovguard/libvirt-hook.conf, optional; `key = value`, # comments):
//   socket = /run/sovguard/libvirt-hook.sock
//   timeout_ms = 30000               (the daemon answers after its current tamper round, which
//                                     may compare whole tables and hold the node for seconds)
//   on_unreachable = deny | allow    (allow: a daemon outage no longer stops guests from starting,
//                                     which then run unfiltered until sovguardd reconciles them)
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include "enforcer/libvirt/hook_protocol.h"

namespace {

struct Config {
  std::string socket = sovguard::libvirt::kDefaultHookSocket;
  long timeout_ms = 30000;
  bool allow_when_unreachable = false;
};

std::string Trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r");
  auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// A missing default config is fine; an unreadable or malformed one is an error (fail closed).
bool LoadConfig(const std::string& path, bool required, Config& cfg, std::string& error) {
  std::ifstream f(path);
  if (!f) {
    if (!required) {
      return true;
    }
    error = "cannot read config " + path;
    return false;
  }
  std::string line;
  for (int lineno = 1; std::getline(f, line); ++lineno) {
    line = Trim(line.substr(0, line.find('#')));
    if (line.empty()) {
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos) {
      error = path + ":" + std::to_string(lineno) + ": expected key = value";
      return false;
    }
    const std::string key = Trim(line.substr(0, eq)), value = Trim(line.substr(eq + 1));
    if (key == "socket" && !value.empty()) {
      cfg.socket = value;
    } else if (key == "timeout_ms") {
      try {
        cfg.timeout_ms = std::stol(value);
      } catch (const std::exception&) {
        cfg.timeout_ms = -1;
      }
      if (cfg.timeout_ms <= 0 || cfg.timeout_ms > 600000) {
        error = path + ":" + std::to_string(lineno) + ": timeout_ms must be 1..600000";
        return false;
      }
    } else if (key == "on_unreachable" && (value == "deny" || value == "allow")) {
      cfg.allow_when_unreachable = value == "allow";
    } else {
      error = path + ":" + std::to_string(lineno) + ": unknown key or value '";
      error += line + "'";
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sovguard::libvirt;
  std::string config_path = "/etc/sovguard/libvirt-hook.conf";
  bool config_required = false;
  int arg = 1;
  if (argc > 2 && std::string(argv[1]) == "--config") {
    config_path = argv[2];
    config_required = true;
    arg = 3;
  }
  if (argc - arg < 3) {
    std::fprintf(stderr, "usage: %s [--config FILE] NAME OPERATION SUB-OPERATION [EXTRA] < XML\n",
                 argv[0]);
    return 2;
  }
  HookRequest req;
  req.name = argv[arg];
  req.op = argv[arg + 1];
  req.sub = argv[arg + 2];
  req.extra = argc - arg > 3 ? argv[arg + 3] : "-";
  const bool blocking = IsBlockingOperation(req.op, req.sub);

  Config cfg;
  std::string error;
  if (!LoadConfig(config_path, config_required, cfg, error)) {
    std::fprintf(stderr, "sovguard hook: %s\n", error.c_str());
    return blocking ? 1 : 0;
  }
  req.xml.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  try {
    HookResponse resp = SendHookRequest(cfg.socket, req, std::chrono::milliseconds(cfg.timeout_ms));
    if (resp.ok) {
      return 0;
    }
    // libvirt shows hook stderr in the start error: say who refused and why.
    std::fprintf(stderr, "sovguard refused %s %s of guest %s: %s\n", req.op.c_str(),
                 req.sub.c_str(), req.name.c_str(), resp.error.c_str());
    return blocking ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sovguard hook (%s %s of %s): %s\n", req.op.c_str(), req.sub.c_str(),
                 req.name.c_str(), e.what());
    if (!blocking) {
      return 0;
    }
    return cfg.allow_when_unreachable ? 0 : 1;
  }
}
