// Reports tun/tap devices the moment the kernel creates or deletes them (rtnetlink RTM_NEWLINK /
// RTM_DELLINK, link kind "tun"). This is the earliest point for NICs hot-plugged into a running
// guest, where libvirt runs no hook: libvirt creates the tap, hands it to QEMU, device_adds it and
// only then emits device-added; the guest can send only after its kernel has probed the device.
// sovguardd attaches a default-deny filter in `on_tap` and replaces it with the guest's policy when
// the Watcher reports the device.
#pragma once

#include <functional>
#include <memory>
#include <string>

namespace sovguard::libvirt {

struct TapEvent {
  bool added = false;  // false: deleted
  std::string name;
  unsigned ifindex = 0;
  // TAP mode (Ethernet frames, what QEMU uses) rather than a layer-3 TUN device (VPNs): only
  // these carry guest traffic that the residency program can parse.
  bool ethernet = false;
};

// Empty when `name` is a tun/tap device in TAP mode (Ethernet frames, what QEMU uses) in this
// network namespace, read from sysfs (tun_flags); otherwise why not: no such device, another kind
// of device (a macvtap, a veth...), or a layer-3 TUN. The daemon counts an interface covered only
// when this holds for its device.
std::string NotATapReason(const std::string& name);

class TapWatcher {
 public:
  using Callback = std::function<void(const TapEvent&)>;
  // Subscribes before returning (no event after the constructor is missed); callbacks run on the
  // watcher's own thread, in kernel order. Throws std::runtime_error if netlink is unavailable.
  explicit TapWatcher(Callback on_tap);
  ~TapWatcher();
  TapWatcher(const TapWatcher&) = delete;
  TapWatcher& operator=(const TapWatcher&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sovguard::libvirt
