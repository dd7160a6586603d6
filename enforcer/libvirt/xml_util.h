// libxml2 RAII and helpers shared by the label and domain XML parsers (internal).
#pragma once

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace sovguard::libvirt::xml {

struct DocDeleter {
  void operator()(xmlDoc* d) const { xmlFreeDoc(d); }
};
using DocPtr = std::unique_ptr<xmlDoc, DocDeleter>;

// Parses without network access, entity expansion or DTD loading. On failure returns nullptr and
// sets `error` to "line L col C: message".
DocPtr Parse(std::string_view text, std::string& error);

std::string_view Name(const xmlNode* n);
std::optional<std::string> Attr(const xmlNode* n, const char* name);
const xmlNode* Child(const xmlNode* parent, std::string_view name);  // first element child
// Element children only.
template <typename F>
void ForEachElement(const xmlNode* parent, F&& f) {
  for (const xmlNode* c = parent ? parent->children : nullptr; c; c = c->next) {
    if (c->type == XML_ELEMENT_NODE) {
      f(c);
    }
  }
}
std::string Text(const xmlNode* n);
// The element serialised back to XML (with namespace declarations in scope).
std::string Serialize(xmlDoc* doc, const xmlNode* n);

}  // namespace sovguard::libvirt::xml
