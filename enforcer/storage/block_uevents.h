// The kernel's uevents for block devices (NETLINK_KOBJECT_UEVENT): what tells the storage path
// that a device appeared or changed (a loop or device-mapper device set up, a partition table read
// again), so aliases of protected volumes made after their protection get protected too.
#pragma once

#include "base/unique_fd.h"

namespace sovguard::storage {

class BlockUevents {
 public:
  // Subscribes (non-blocking socket). Throws std::system_error when the socket cannot be made.
  BlockUevents();
  // Reads every pending uevent; true when one of them added or changed a block device. A full
  // socket buffer (ENOBUFS: uevents were lost) counts as a change.
  bool Changed();

 private:
  base::UniqueFd fd_;
};

}  // namespace sovguard::storage
