#include "enforcer/libvirt/hook_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "base/poll.h"
#include "base/unique_fd.h"

namespace sovguard::libvirt {

struct HookServer::Impl {
  std::string path;
  Handler handler;
  std::chrono::milliseconds io_timeout{0};
  uid_t allowed_uid = 0;
  base::UniqueFd listen_fd;
  base::UniqueFd wake_read, wake_write;  // pipe: destructor writes to stop the accept loop
  std::thread thread;

  void Serve();
  void HandleOne(int fd);
};

void HookServer::Impl::HandleOne(int fd) {
  const auto deadline = std::chrono::steady_clock::now() + io_timeout;
  // The request is read in full even from a peer we refuse: closing with unread data would reset
  // the connection and the hook would see a send error instead of our answer.
  const std::string frame = ReadFrame(fd, deadline);
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != allowed_uid) {
    WriteFrame(fd, EncodeResponse({false, "peer uid " + std::to_string(cred.uid) + " not allowed"}),
               deadline);
    return;
  }
  HookResponse response;
  try {
    HookEvent ev;
    ev.request = DecodeRequest(frame);
    try {
      ev.domain = ParseDomainXml(ev.request.xml);
    } catch (const std::exception& e) {
      ev.parse_error = e.what();
    }
    response = handler(ev);
  } catch (const std::exception& e) {
    response = {false, e.what()};
  }
  WriteFrame(fd, EncodeResponse(response), deadline);
}

void HookServer::Impl::Serve() {
  while (true) {
    if (base::WaitReadableOrStop(listen_fd.Get(), wake_read.Get()) != base::Wait::kReadable) return;
    const base::UniqueFd fd(
        ::accept4(listen_fd.Get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {
      continue;
    }
    try {
      HandleOne(fd.Get());
    } catch (const std::exception&) {
      // The hook gave up or went away: it fails closed on its side.
    }
  }
}

HookServer::HookServer(std::string socket_path, Handler handler,
                       std::chrono::milliseconds io_timeout, uid_t allowed_uid)
    : impl_(std::make_unique<Impl>()) {
  impl_->allowed_uid = allowed_uid;
  impl_->path = std::move(socket_path);
  impl_->handler = std::move(handler);
  impl_->io_timeout = io_timeout;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (impl_->path.size() >= sizeof(addr.sun_path)) {
    throw std::runtime_error("hook socket path too long: " + impl_->path);
  }
  std::memcpy(addr.sun_path, impl_->path.c_str(), impl_->path.size() + 1);
  const auto dir = std::filesystem::path(impl_->path).parent_path();
  if (!dir.empty() && !std::filesystem::exists(dir)) {
    std::filesystem::create_directories(dir);
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
  }
  impl_->listen_fd.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!impl_->listen_fd) {
    throw std::runtime_error(std::string("socket: ") + std::generic_category().message(errno));
  }
  ::unlink(impl_->path.c_str());  // stale socket of a previous daemon
  // umask-independent 0600: bind with a restrictive umask is racy in a threaded process, so
  // chmod right after bind (before listen, so no client can connect in between).
  int wake[2] = {-1, -1};
  if (::bind(impl_->listen_fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::chmod(impl_->path.c_str(), 0600) != 0 || ::listen(impl_->listen_fd.Get(), 16) != 0 ||
      ::pipe2(wake, O_CLOEXEC) != 0) {
    const std::string err = std::generic_category().message(errno);
    impl_->listen_fd.Reset();
    throw std::runtime_error("hook socket " + impl_->path + ": " + err);
  }
  impl_->wake_read.Reset(wake[0]);
  impl_->wake_write.Reset(wake[1]);
  impl_->thread = std::thread([impl = impl_.get()] { impl->Serve(); });
}

HookServer::~HookServer() {
  if (impl_->wake_write) {
    char c = 1;
    while (::write(impl_->wake_write.Get(), &c, 1) < 0 && errno == EINTR) {
    }
  }
  if (impl_->thread.joinable()) {
    impl_->thread.join();
  }
  impl_->listen_fd.Reset();
  impl_->wake_read.Reset();
  impl_->wake_write.Reset();
  ::unlink(impl_->path.c_str());
}

const std::string& HookServer::Path() const {
  return impl_->path;
}

}  // namespace sovguard::libvirt
