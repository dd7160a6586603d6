// Labels and domain XML come from whoever can edit a domain: never crash, always decide.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "enforcer/libvirt/domain.h"
#include "enforcer/libvirt/labels.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  sovguard::libvirt::GuestLabels l = sovguard::libvirt::ParseLabels(in);
  // Fail closed: anything not kValid/kAbsent carries an error, and invalid never carries datasets.
  if (l.state == sovguard::libvirt::LabelState::kInvalid &&
      (l.error.empty() || !l.datasets.empty() || !l.labels.empty())) {
    __builtin_trap();
  }
  try {
    (void)sovguard::libvirt::ParseDomainXml(in);
  } catch (const sovguard::libvirt::DomainXmlError&) {
  }
  return 0;
}
