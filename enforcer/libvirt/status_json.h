// The libvirt half of `sovguardctl status`: a guest as JSON. The daemon adds its own fields
// (attachments, mode) to the object before printing.
#pragma once

#include <nlohmann/json.hpp>

#include "enforcer/libvirt/watcher.h"

namespace sovguard::libvirt {

// {"name","uuid","id","paused","labels":{"state","datasets","disks":[{"target","dataset"}],
//  "error"?},"datasets":[all],"taps":[{"dev","mac","type","model","alias"}],
//  "disks":[{"target","source","source_type","device","readonly","shareable"}],
//  "qemu_pid","cgroup":{"scope","process","id","level"}|null}
nlohmann::json ToJson(const GuestInfo& g);

}  // namespace sovguard::libvirt
