#include "enforcer/libvirt/xml_util.h"

#include <libxml/xmlsave.h>

#include <limits>
#include <mutex>

namespace sovguard::libvirt::xml {

DocPtr Parse(std::string_view text, std::string& error) {
  if (text.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    error = "document too large";
    return nullptr;
  }
  // libxml2 2.9 initialises lazily and not thread-safely: do it once, first.
  static std::once_flag once;
  std::call_once(once, [] { xmlInitParser(); });
  xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
  if (!ctxt) {
    error = "out of memory";
    return nullptr;
  }
  DocPtr doc(xmlCtxtReadMemory(ctxt, text.data(), static_cast<int>(text.size()), "input.xml",
                               nullptr, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (!doc) {
    const xmlError* e = xmlCtxtGetLastError(ctxt);
    if (e) {
      std::string msg = e->message ? e->message : "parse error";
      while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) {
        msg.pop_back();
      }
      error = "line " + std::to_string(e->line) + " col " + std::to_string(e->int2) + ": " + msg;
    } else {
      error = "not well-formed XML";
    }
  }
  xmlFreeParserCtxt(ctxt);
  return doc;
}

std::string_view Name(const xmlNode* n) {
  return n && n->name ? std::string_view(reinterpret_cast<const char*>(n->name))
                      : std::string_view();
}

std::optional<std::string> Attr(const xmlNode* n, const char* name) {
  xmlChar* v = xmlGetNoNsProp(n, reinterpret_cast<const xmlChar*>(name));
  if (!v) {
    return std::nullopt;
  }
  std::string s(reinterpret_cast<const char*>(v));
  xmlFree(v);
  return s;
}

const xmlNode* Child(const xmlNode* parent, std::string_view name) {
  for (const xmlNode* c = parent ? parent->children : nullptr; c; c = c->next) {
    if (c->type == XML_ELEMENT_NODE && Name(c) == name) {
      return c;
    }
  }
  return nullptr;
}

std::string Text(const xmlNode* n) {
  xmlChar* v = xmlNodeGetContent(n);
  if (!v) {
    return {};
  }
  std::string s(reinterpret_cast<const char*>(v));
  xmlFree(v);
  return s;
}

std::string Serialize(xmlDoc* doc, const xmlNode* n) {
  xmlBufferPtr buf = xmlBufferCreate();
  if (!buf) {
    return {};
  }
  xmlNodeDump(buf, doc, const_cast<xmlNode*>(n), 0, 0);
  std::string s(reinterpret_cast<const char*>(xmlBufferContent(buf)),
                static_cast<size_t>(xmlBufferLength(buf)));
  xmlBufferFree(buf);
  return s;
}

}  // namespace sovguard::libvirt::xml
