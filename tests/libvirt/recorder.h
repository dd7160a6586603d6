// Collects a Watcher's callbacks for tests and waits for them with deadlines.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "enforcer/libvirt/watcher.h"

namespace sovguard::libvirt::testing {

struct Recorded {
  enum class Type { kUp, kChanged, kDown, kConnected, kDisconnected } type;
  GuestInfo guest;
  ChangeReason reason = ChangeReason::kReconcile;
  std::chrono::steady_clock::time_point at;
};

class Recorder {
 public:
  WatcherCallbacks Callbacks() {
    WatcherCallbacks cb;
    cb.on_up = [this](const GuestInfo& g) { Add({Recorded::Type::kUp, g}); };
    cb.on_changed = [this](const GuestInfo& g, ChangeReason r) {
      Add({Recorded::Type::kChanged, g, r});
    };
    cb.on_down = [this](const GuestInfo& g) { Add({Recorded::Type::kDown, g}); };
    cb.on_connection = [this](bool up) {
      Add({up ? Recorded::Type::kConnected : Recorded::Type::kDisconnected, {}});
    };
    cb.on_error = [this](const std::string& e) {
      std::lock_guard lock(mu_);
      errors_.push_back(e);
    };
    return cb;
  }

  // Waits for the first event at index >= `from` matching `pred`; returns it.
  std::optional<Recorded> WaitFor(size_t from, const std::function<bool(const Recorded&)>& pred,
                                  std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    std::optional<Recorded> found;
    cv_.wait_for(lock, timeout, [&] {
      for (size_t i = from; i < events_.size(); ++i) {
        if (pred(events_[i])) {
          found = events_[i];
          return true;
        }
      }
      return false;
    });
    return found;
  }

  size_t Size() const {
    std::lock_guard lock(mu_);
    return events_.size();
  }
  std::vector<Recorded> Events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  std::vector<std::string> Errors() const {
    std::lock_guard lock(mu_);
    return errors_;
  }
  size_t Count(Recorded::Type t, const std::string& name) const {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& e : events_) {
      n += e.type == t && e.guest.domain.name == name;
    }
    return n;
  }

 private:
  void Add(Recorded r) {
    r.at = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(mu_);
      events_.push_back(std::move(r));
    }
    cv_.notify_all();
  }
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Recorded> events_;
  std::vector<std::string> errors_;
};

inline std::function<bool(const Recorded&)> Is(Recorded::Type t, const std::string& name) {
  return [=](const Recorded& r) { return r.type == t && r.guest.domain.name == name; };
}
// A GuestChanged of `name` for `reason`.
inline std::function<bool(const Recorded&)> IsChange(ChangeReason reason, const std::string& name) {
  return [=](const Recorded& r) {
    return r.type == Recorded::Type::kChanged && r.reason == reason && r.guest.domain.name == name;
  };
}

}  // namespace sovguard::libvirt::testing
