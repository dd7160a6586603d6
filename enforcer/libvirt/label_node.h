// Internal: label parsing from an element already in a libxml2 tree (domain XML <metadata>).
#pragma once

#include <libxml/tree.h>

#include "enforcer/libvirt/labels.h"

namespace sovguard::libvirt::detail {

// `guest` must be the <guest> element in kLabelNamespace.
GuestLabels LabelsFromElement(const xmlNode* guest);
bool InLabelNamespace(const xmlNode* n);

}  // namespace sovguard::libvirt::detail
