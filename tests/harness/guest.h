// The test guest: kernel + initramfs paths, its domain XML, and its serial console.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace sovguard::test {

struct CommandResultLite {
  int exit_code = -1;
  std::string err;
};

// Test addresses (documentation ranges only). The destination namespace answers on all three.
inline constexpr const char* kGuestAddress = "192.0.2.10/24";
inline constexpr const char* kGatewayAddress = "192.0.2.1";
inline constexpr const char* kAllowedDestination = "198.51.100.1";   // "allowed zone"
inline constexpr const char* kForbiddenDestination = "203.0.113.1";  // "forbidden zone"

std::string GuestKernelPath();     // /boot/vmlinuz-<version> chosen at configure time
std::string GuestInitramfsPath();  // build/tests/harness/guest-initramfs.cpio.gz
// Throws naming what is missing (run the sovguard_guest_image target, install linux-image-amd64).
void RequireGuestImage();

struct GuestSpec {
  std::string name;  // must start with LibvirtDaemons::kTestDomainPrefix ("sgt-")
  std::string tap;   // <target dev=...>, at most 15 characters
  std::string mac = "52:54:00:5e:00:10";
  std::string console_log;  // serial console file; default /run/sovguard-test/<name>.console
  std::string metadata;     // raw XML inside <metadata>, e.g. a sovguard label
  std::string partition;    // <resource><partition>; empty: none (libvirt's default /machine)
  std::string guest_address = kGuestAddress;
  std::string gateway = kGatewayAddress;
  std::string allowed = kAllowedDestination;
  std::string forbidden = kForbiddenDestination;
  std::string interval = "0.1";  // seconds between packets of each stream
};

// The harness defaults for guest `name` on tap `tap`, with `metadata` (e.g. a GuestLabel) if any.
GuestSpec MakeGuestSpec(std::string name, std::string tap, std::string metadata = {});

// `body` inside sovguard's guest label element, in its namespace: what a domain's <metadata>
// holds to label the guest (e.g. "<dataset id=\"health\"/>").
std::string GuestLabel(const std::string& body);

// libvirt's device XML of a raw file disk `source` on virtio `target`, read-only when `readonly`.
std::string FileDisk(const std::string& source, bool readonly = false,
                     const std::string& target = "vda");

// The domain XML from tests/harness/guest-domain.xml.in with `spec` filled in.
std::string DomainXml(const GuestSpec& spec);
std::string ConsoleLogPath(const GuestSpec& spec);

// Polls the console file until it contains `marker` ("SOVGUARD: ready"); false on timeout.
bool WaitForConsole(const std::string& console_log, const std::string& marker,
                    std::chrono::milliseconds timeout);

}  // namespace sovguard::test

namespace sovguard::test {

// A persistent test domain, defined on construction and destroyed + undefined on destruction
// (through virsh, so the harness does not depend on the code under test).
class TestGuest {
 public:
  explicit TestGuest(GuestSpec spec);
  ~TestGuest();
  TestGuest(const TestGuest&) = delete;
  TestGuest& operator=(const TestGuest&) = delete;

  [[nodiscard]] const GuestSpec& Spec() const { return spec_; }
  [[nodiscard]] const std::string& Name() const { return spec_.name; }
  [[nodiscard]] const std::string& Tap() const { return spec_.tap; }
  [[nodiscard]] std::string ConsoleLog() const { return ConsoleLogPath(spec_); }

  void Start();                  // virsh start; throws with virsh's error
  CommandResultLite TryStart();  // same, returns exit code and stderr
  void Destroy();                // virsh destroy (hard stop, as fast as a crash)
  [[nodiscard]] bool Running() const;
  [[nodiscard]] bool WaitReady(
      std::chrono::milliseconds timeout) const;  // "SOVGUARD: ready" on the console
  // virsh NAME-relative helper: Virsh({"metadata", name(), ...}).
  // NOLINTNEXTLINE(modernize-use-nodiscard): returns stdout, which callers often do not need
  std::string Virsh(const std::vector<std::string>& args) const;

 private:
  GuestSpec spec_;
};

}  // namespace sovguard::test
