// Waiting for input on a thread that another thread may stop: the thread blocks until its fd is
// readable or its stop fd (an eventfd or pipe end the owner writes to) is.
#pragma once

#include <poll.h>

#include <cerrno>

namespace sovguard::base {

enum class Wait { kReadable, kStopped, kFailed };

// Blocks until `fd` or `stop_fd` is readable (a signal's EINTR retried). The stop wins when
// both are. kFailed: poll failed, errno says why.
inline Wait WaitReadableOrStop(int fd, int stop_fd) {
  pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
  while (::poll(fds, 2, -1) < 0) {
    if (errno != EINTR) return Wait::kFailed;
  }
  return fds[1].revents ? Wait::kStopped : Wait::kReadable;
}

}  // namespace sovguard::base
