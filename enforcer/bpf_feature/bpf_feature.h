// The one toolkit both BPF features (enforcer/net, enforcer/storage) use to own their kernel
// objects: the error type, opening a skeleton, the pin-path rule, adopting pinned state of this
// ABI version only, waiting for an RCU grace period, and the identity of a program or link.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/unique_fd.h"
#include "enforcer/system/bpf_maps.h"

namespace sovguard::bpf_feature {

// A failed kernel operation: what failed (naming the object) and the errno (stored positive; the
// sign libbpf returns is ignored). what(): "<what>: <strerror> (errno <n>)".
class Error : public std::runtime_error {
 public:
  Error(const std::string& what, int err);
  int error() const noexcept { return err_; }

 private:
  int err_;
};

// Opens (not loads) a bpftool skeleton's object: the one built in, or `object` instead (ELF
// bytes of the same source and maps, alive until the load: tests stand in an upgrade with it).
// `SkelPtr` is the caller's std::unique_ptr of the skeleton whose deleter calls its __destroy;
// `Create` is its __create_skeleton. Throws Error naming `name` (the object, e.g. "sg_net").
template <class SkelPtr, int (*Create)(typename SkelPtr::element_type*)>
SkelPtr OpenSkeleton(std::string_view name, std::span<const std::uint8_t> object) {
  using Skel = typename SkelPtr::element_type;
  auto* raw = static_cast<Skel*>(std::calloc(1, sizeof(Skel)));
  if (!raw) throw std::bad_alloc();
  SkelPtr skel(raw);
  if (const int err = Create(raw); err) throw Error(std::string(name) + " skeleton", err);
  if (!object.empty()) {
    raw->skeleton->data = const_cast<std::uint8_t*>(object.data());
    raw->skeleton->data_sz = object.size();
  }
  if (const int err = bpf_object__open_skeleton(raw->skeleton, nullptr); err)
    throw Error("open " + std::string(name) + " object", err);
  return skel;
}

// Map writes and reads of both features: each throws Error naming the map (`what`) when the
// kernel refuses ("update <what>", "delete from <what>", "read <what>").
void UpdateElem(int fd, const void* key, const void* value, std::string_view what);
// Writes keys[i] -> values[i] for every i (batched where the kernel can). `values` are
// `value_size` bytes each, back to back.
void UpdateMany(int fd, const void* keys, std::size_t key_size, const void* values,
                std::size_t value_size, std::uint32_t count, std::string_view what);
template <typename K, typename V>
void UpdateMany(int fd, const std::vector<K>& keys, const std::vector<V>& values,
                std::string_view what) {
  UpdateMany(fd, keys.data(), sizeof(K), values.data(), sizeof(V),
             static_cast<std::uint32_t>(keys.size()), what);
}
// Deletes every key (batched where the kernel can); keys already gone are fine.
void DeleteMany(int fd, const void* keys, std::size_t key_size, std::uint32_t count,
                std::string_view what);
template <typename K>
void DeleteMany(int fd, const std::vector<K>& keys, std::string_view what) {
  DeleteMany(fd, keys.data(), sizeof(K), static_cast<std::uint32_t>(keys.size()), what);
}
// Calls fn(key, value) for every entry of a map (entries deleted meanwhile skipped).
template <typename K, typename V, typename Fn>
void ForEach(int fd, Fn&& fn, std::string_view what = "map") {
  if (const int err = enforcer::bpfmap::ForEach<K, V>(fd, std::forward<Fn>(fn)); err != 0)
    throw Error("read " + std::string(what), err);
}

// A fixed-size name field of a map value (NUL-padded, not NUL-terminated when full), from and to
// text. CopyName truncates to N - 1 bytes.
template <std::size_t N>
void CopyName(char (&dst)[N], std::string_view src) {
  std::memset(dst, 0, N);
  std::memcpy(dst, src.data(), std::min(src.size(), N - 1));
}
template <std::size_t N>
std::string NameText(const char (&src)[N]) {
  return std::string(src, strnlen(src, N));
}

// Silences libbpf while it lives: around loads that may fail for a missing kernel feature, whose
// reason the caller reports (a verifier dump would only bury it).
class QuietLibbpf {
 public:
  QuietLibbpf();
  ~QuietLibbpf();
  QuietLibbpf(const QuietLibbpf&) = delete;
  QuietLibbpf& operator=(const QuietLibbpf&) = delete;

 private:
  libbpf_print_fn_t previous_;
};

// The pin-path rule: map `m` of an object is pinned at <dir>/<name of m>, dots replaced by '_'
// (bpffs reserves dotted names). The object's internal maps (.bss, .data, .rodata) are pinned
// only with kPinned: a feature whose hand-over state lives in globals pins them, one whose
// globals are constants of the object itself does not.
enum class InternalMaps { kPinned, kNotPinned };
void SetPinPaths(bpf_object* obj, const std::filesystem::path& dir, InternalMaps internal);
// Creates `dir` and checks it is on bpffs (a directory of a bpffs mount, or below one).
void EnsurePinDir(const std::filesystem::path& dir);
// Pins `fd` at `pin` in one step: pinned beside it as kStagingPrefix + name, then renamed over
// it, so a crash leaves the old or the new object pinned, never none.
inline constexpr std::string_view kStagingPrefix = "next_";
void PinReplacing(int fd, const std::filesystem::path& pin);

// Adoption: the hand-over record a feature keeps at key 0 of its state map (`State` has an
// `abi_version`; 0 means fresh maps, nothing to adopt). Throws Error naming `map_name` when it
// cannot be read, and Error EPROTO when it was written under another ABI version, whose maps may
// mean something else to this daemon: "pinned <owner> in <pin_dir> has <abi_name> <found>, this
// daemon <ours>: refusing to adopt it".
struct PinnedAbi {
  std::string_view owner;     // "datapath state", "storage state"
  std::string_view abi_name;  // "ABI version", "storage ABI version"
  std::uint32_t version = 0;  // this daemon's
};
void RefuseOtherAbi(std::uint32_t found, const PinnedAbi& abi, const std::string& pin_dir);
template <class State>
State ReadPinnedState(int map_fd, std::string_view map_name, const PinnedAbi& abi,
                      const std::string& pin_dir) {
  State state{};
  const std::uint32_t zero = 0;
  if (bpf_map_lookup_elem(map_fd, &zero, &state) != 0)
    throw Error("read " + std::string(map_name), errno);
  RefuseOtherAbi(state.abi_version, abi, pin_dir);
  return state;
}

// Waits for an RCU grace period: every program that ran when Wait started has returned when it
// returns (BPF programs run under RCU; a map-in-map update returns only after synchronize_rcu).
// `outer_fd` is the feature's array of maps with one slot; a one-entry array map named `name` is
// created on first use and stored into it.
class RcuBarrier {
 public:
  explicit RcuBarrier(const char* name) : name_(name) {}
  void Wait(int outer_fd);

 private:
  const char* name_;
  base::UniqueFd inner_;
};

// A BPF program as the kernel knows it: what the tamper checks compare (id) and report (tag).
struct ProgramIdentity {
  std::uint32_t id = 0;
  std::string tag;  // 16 hex digits (bpf_prog_info.tag)
  std::string name;
};
// Throws Error when the program's info cannot be read.
ProgramIdentity ProgramByFd(int fd);
// Only the id when no such program exists (any more).
ProgramIdentity ProgramById(std::uint32_t id);
// The kernel id of a link (0 when it cannot be read) and of a map (throws Error).
std::uint32_t LinkId(int fd);
std::uint32_t MapId(int fd);

}  // namespace sovguard::bpf_feature
