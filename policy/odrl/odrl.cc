#include "policy/odrl/odrl.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>

#include "base/time.h"
#include "policy/jurisdiction/countries.h"
#include "policy/validate/validate.h"

namespace sovguard::policy {
namespace {

using Json = nlohmann::json;
using CountrySet = std::set<std::string>;

constexpr int kMaxDepth = 32;

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Drops the namespaces of ODRL, EDC, IDS and plain prefixes ("odrl:eq" -> "eq",
// "http://www.w3.org/ns/odrl/2/spatial" -> "spatial"), keeping others visible
// ("cx-policy:FrameworkAgreement" stays as it is, lower-cased comparison is up to the caller).
std::string Term(const std::string& s) {
  static const char* kStrip[] = {"http://www.w3.org/ns/odrl/2/",
                                 "https://www.w3.org/ns/odrl/2/",
                                 "https://w3id.org/edc/v0.0.1/ns/",
                                 "https://w3id.org/idsa/core/",
                                 "https://w3id.org/idsa/code/",
                                 "odrl:",
                                 "edc:",
                                 "ids:",
                                 "idsc:"};
  for (const char* p : kStrip) {
    const std::string_view pv(p);
    if (s.starts_with(pv)) return s.substr(pv.size());
  }
  return s;
}

// Finds a member by its ODRL term whatever the prefix.
const Json* Member(const Json& obj, std::string_view term) {
  if (!obj.is_object()) return nullptr;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (Term(it.key()) == term) return &it.value();
  }
  return nullptr;
}

// {"@value": x} -> x, {"@id": x} -> x, {"@list": [...]} / {"@set": [...]} -> [...].
const Json& Unwrap(const Json& v) {
  if (v.is_object()) {
    for (const char* k : {"@value", "@id", "@list", "@set"}) {
      if (auto it = v.find(k); it != v.end()) return *it;
    }
  }
  return v;
}

std::vector<const Json*> Items(const Json* v) {
  std::vector<const Json*> out;
  if (v == nullptr || v->is_null()) return out;
  const Json& u = Unwrap(*v);
  if (u.is_array()) {
    for (const auto& e : u) out.push_back(&e);
  } else {
    out.push_back(&u);
  }
  return out;
}

std::string Text(const Json& v) {
  const Json& u = Unwrap(v);
  if (u.is_string()) return u.get<std::string>();
  if (u.is_number_integer() || u.is_number_unsigned() || u.is_number_float() || u.is_boolean()) {
    return u.dump();
  }
  return "";
}

CountrySet AllCountries() {
  CountrySet s;
  for (auto c : IsoCountries()) s.emplace(c);
  return s;
}

CountrySet Group(bool eea) {
  CountrySet s;
  for (auto c : IsoCountries()) {
    if (eea ? IsEea(c) : IsEu(c)) s.emplace(c);
  }
  return s;
}

// "DE", "de", "EL", "eu", "EEA", "http://ontologi.es/place/DE", "urn:...:DE" -> ISO codes.
std::optional<CountrySet> Place(const std::string& raw) {
  std::string s = raw;
  while (!s.empty() && (s.back() == '/' || s.back() == ' ')) s.pop_back();
  if (const auto cut = s.find_last_of("/#:"); cut != std::string::npos) s = s.substr(cut + 1);
  const std::string l = Lower(s);
  if (l == "eu") return Group(false);
  if (l == "eea") return Group(true);
  if (auto iso = NormalizeCountry(s)) return CountrySet{*iso};
  return std::nullopt;
}

CountrySet Intersect(const CountrySet& a, const CountrySet& b) {
  CountrySet out;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::inserter(out, out.end()));
  return out;
}
CountrySet Minus(const CountrySet& a, const CountrySet& b) {
  CountrySet out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::inserter(out, out.end()));
  return out;
}

// What a constraint (tree) allows, as far as sovguard can enforce it. nullopt allow = anywhere.
struct Effect {
  std::optional<CountrySet> allow;
  std::optional<std::int64_t> not_before, not_after;
  bool complete = true;  // false when part of it could not be expressed

  void And(const Effect& o) {
    if (o.allow) allow = allow ? Intersect(*allow, *o.allow) : *o.allow;
    if (o.not_before)
      not_before = not_before ? std::max(*not_before, *o.not_before) : *o.not_before;
    if (o.not_after) not_after = not_after ? std::min(*not_after, *o.not_after) : *o.not_after;
    complete = complete && o.complete;
  }
};

class Importer {
 public:
  explicit Importer(OdrlImport& out) : out_(out) {}

  void Run(const Json& root, const OdrlImportOptions& options) {
    const Json* policy = FindPolicy(root, 0);
    if (policy == nullptr) {
      out_.errors.push_back(
          "no ODRL policy found (expected an object with permission/prohibition/obligation, "
          "or a \"policy\" member holding one)");
      return;
    }
    // Permissions: any one of them grants use, so the dataset may go where any allows.
    std::optional<CountrySet> allow = CountrySet{};
    std::optional<std::int64_t> not_before, not_after;
    bool any_grant = false;
    const auto perms = Items(Member(*policy, "permission"));
    for (std::size_t i = 0; i < perms.size(); ++i) {
      const std::string where = "permission[" + std::to_string(i) + "]";
      const Json& p = *perms[i];
      if (!p.is_object()) {
        out_.errors.push_back(where + ": expected an object");
        continue;
      }
      if (!UseAction(p, where)) continue;
      Duties(p, where);
      Effect e = Constraints(p, where, 0);
      // Like an "or" branch: a permission resting only on terms sovguard cannot enforce (no
      // place of its own) is never taken as satisfied, so it grants nothing.
      if (!e.allow && !e.complete) {
        out_.notes.push_back(where +
                             ": rests only on terms sovguard cannot enforce: grants nothing");
        continue;
      }
      any_grant = true;
      if (!e.allow || !allow) {
        allow = std::nullopt;
      } else {
        allow->insert(e.allow->begin(), e.allow->end());
      }
      // Several windows: the enforced window spans them (a union is not expressible exactly).
      if (perms.size() > 1 && (e.not_before || e.not_after)) {
        out_.notes.push_back(where + ": validity windows of several permissions are merged");
      }
      if (!any_window_) {
        not_before = e.not_before;
        not_after = e.not_after;
        any_window_ = true;
      } else {
        not_before = (not_before && e.not_before)
                         ? std::optional(std::min(*not_before, *e.not_before))
                         : std::nullopt;
        not_after = (not_after && e.not_after) ? std::optional(std::max(*not_after, *e.not_after))
                                               : std::nullopt;
      }
    }
    if (!any_grant) {
      out_.notes.push_back("no permission grants use: the dataset may go nowhere");
    }
    // Prohibitions remove places.
    const auto prohibitions = Items(Member(*policy, "prohibition"));
    for (std::size_t i = 0; i < prohibitions.size(); ++i) {
      const std::string where = "prohibition[" + std::to_string(i) + "]";
      const Json& p = *prohibitions[i];
      if (!p.is_object()) {
        out_.errors.push_back(where + ": expected an object");
        continue;
      }
      if (!UseAction(p, where)) continue;
      Effect e = Constraints(p, where, 0);
      if (e.not_before || e.not_after || !e.complete) {
        out_.not_enforced.push_back(where +
                                    ": a prohibition limited by time or by terms sovguard cannot "
                                    "check is not enforced");
        continue;
      }
      const CountrySet forbidden = e.allow ? *e.allow : AllCountries();
      allow = Minus(allow ? *allow : AllCountries(), forbidden);
    }
    for (std::size_t i = 0; const Json* o : Items(Member(*policy, "obligation"))) {
      out_.not_enforced.push_back("obligation[" + std::to_string(i++) + "]: " + Describe(*o));
    }
    if (!out_.errors.empty()) return;

    auto* d = out_.policy.add_datasets();
    d->set_id(DatasetId(*policy, root, options.dataset_id));
    std::string uid = policy->contains("@id") ? Text((*policy)["@id"]) : "";
    if (const Json* u = Member(*policy, "uid"); uid.empty() && u) uid = Text(*u);
    if (uid.empty() && root.is_object() && root.contains("@id")) uid = Text(root["@id"]);
    d->set_description("Imported from ODRL policy" + (uid.empty() ? "" : " \"" + uid + "\""));
    d->set_mode(pb::AUDIT);
    auto* r = d->mutable_residency();
    if (!allow) {
      r->add_allow("ANY");
    } else if (*allow == Group(true)) {
      r->add_allow("EEA");
    } else if (*allow == Group(false)) {
      r->add_allow("EU");
    } else {
      for (const auto& c : *allow) r->add_allow(c);
    }
    if (not_before) d->mutable_usage()->set_not_before(base::FormatRfc3339(*not_before));
    if (not_after) d->mutable_usage()->set_not_after(base::FormatRfc3339(*not_after));
    if (options.strict && !out_.not_enforced.empty()) {
      out_.errors.push_back(std::to_string(out_.not_enforced.size()) +
                            " term(s) cannot be enforced by sovguard (--strict)");
    }
  }

 private:
  const Json* FindPolicy(const Json& v, int depth) {
    if (depth > kMaxDepth || !v.is_object()) return nullptr;
    if (Member(v, "permission") || Member(v, "prohibition") || Member(v, "obligation")) return &v;
    if (const Json* p = Member(v, "policy")) {
      const Json& u = p->is_array() && !p->empty() ? (*p)[0] : *p;
      return FindPolicy(u, depth + 1);
    }
    if (const Json* g = Member(v, "@graph"); g && g->is_array() && !g->empty()) {
      return FindPolicy((*g)[0], depth + 1);
    }
    return nullptr;
  }

  static std::string Describe(const Json& v) {
    std::string s = v.dump();
    if (s.size() > 160) s = s.substr(0, 157) + "...";
    return s;
  }

  bool UseAction(const Json& rule, const std::string& where) {
    const auto actions = Items(Member(rule, "action"));
    if (actions.empty()) {
      out_.errors.push_back(where + ": no action");
      return false;
    }
    for (const Json* a : actions) {
      std::string name = Text(*a);
      if (name.empty() && a->is_object()) {
        if (const Json* t = Member(*a, "type")) name = Text(*t);
        if (const Json* r = Member(*a, "rdf:value")) name = Text(*r);
        if (const Json* refine = Member(*a, "refinement")) {
          out_.not_enforced.push_back(where + ".action refinement: " + Describe(*refine));
        }
      }
      const std::string t = Lower(Term(name));
      if (t == "use" || t == "read" || t == "transfer" || t == "reproduce" || t == "distribute" ||
          t == "display" || t == "stream") {
        continue;
      }
      out_.not_enforced.push_back(where + ": action \"" + name +
                                  "\" has no kernel meaning; the rule is not applied");
      return false;
    }
    return true;
  }

  void Duties(const Json& rule, const std::string& where) {
    for (std::size_t i = 0; const Json* d : Items(Member(rule, "duty"))) {
      out_.not_enforced.push_back(where + ".duty[" + std::to_string(i++) + "]: " + Describe(*d));
    }
  }

  Effect Constraints(const Json& rule, const std::string& where, int depth) {
    Effect e;
    const auto cs = Items(Member(rule, "constraint"));
    for (std::size_t i = 0; i < cs.size(); ++i) {
      e.And(Constraint(*cs[i], where + ".constraint[" + std::to_string(i) + "]", depth + 1));
    }
    return e;
  }

  Effect Constraint(const Json& c, const std::string& where, int depth) {
    Effect e;
    if (depth > kMaxDepth) {
      out_.errors.push_back(where + ": constraints nested deeper than 32 levels");
      return e;
    }
    if (!c.is_object()) {
      out_.errors.push_back(where + ": expected a constraint object");
      return e;
    }
    for (const char* op : {"and", "andSequence", "or", "xone"}) {
      const Json* list = Member(c, op);
      if (list == nullptr) continue;
      const auto items = Items(list);
      std::vector<Effect> parts;
      for (std::size_t i = 0; i < items.size(); ++i) {
        parts.push_back(
            Constraint(*items[i], where + "." + op + "[" + std::to_string(i) + "]", depth + 1));
      }
      if (std::string_view(op) == "and" || std::string_view(op) == "andSequence") {
        for (const auto& p : parts) e.And(p);
        return e;
      }
      // or / xone: exact only when every branch is a pure place constraint. Otherwise the
      // terms sovguard cannot check are never treated as satisfied: a branch that rests only on
      // them contributes nothing, and the constraint is reported.
      std::optional<CountrySet> places = CountrySet{};
      bool exact = true;
      for (const auto& p : parts) {
        exact = exact && p.complete && p.allow && !p.not_before && !p.not_after;
        if (!p.allow && !p.complete) continue;
        if (!p.allow || !places) {
          places = std::nullopt;
        } else {
          places->insert(p.allow->begin(), p.allow->end());
        }
      }
      if (std::string_view(op) == "xone" && parts.size() > 1) exact = false;
      if (!exact) {
        out_.not_enforced.push_back(where + ": \"" + op +
                                    "\" over terms sovguard cannot enforce; only the places of "
                                    "its enforceable branches are allowed");
        e.complete = false;
      }
      e.allow = places;
      return e;
    }
    const Json* left = Member(c, "leftOperand");
    const Json* opj = Member(c, "operator");
    const Json* right = Member(c, "rightOperand");
    if (right == nullptr) right = Member(c, "rightOperandReference");
    if (left == nullptr || opj == nullptr || right == nullptr) {
      out_.errors.push_back(where + ": a constraint needs leftOperand, operator and rightOperand");
      return e;
    }
    const std::string left_raw = Text(*left);
    const std::string lname = Lower(Term(left_raw));
    const std::string op = Operator(Term(Text(*opj)));
    if (lname == "location" || lname == "spatial" || lname == "absolutespatialposition" ||
        lname == "absolute_spatial_position" || lname == "country" || lname == "region") {
      CountrySet set;
      for (const Json* v : Items(right)) {
        const std::string text = Text(*v);
        auto place = Place(text);
        if (!place) {
          out_.errors.push_back(where + ": unknown place \"" + (text.empty() ? v->dump() : text) +
                                "\" (expected an ISO 3166-1 alpha-2 code, EU, EEA or a place "
                                "URI ending in one)");
          return e;
        }
        set.insert(place->begin(), place->end());
      }
      if (op == "eq" || op == "isAnyOf" || op == "isPartOf" || op == "isA" || op == "isAllOf") {
        if (op == "isAllOf" && Items(right).size() > 1) {
          out_.notes.push_back(where + ": isAllOf over several places read as isAnyOf");
        }
        e.allow = set;
      } else if (op == "neq" || op == "isNoneOf") {
        e.allow = Minus(AllCountries(), set);
      } else {
        out_.errors.push_back(where + ": operator \"" + op + "\" is not meaningful for a place");
      }
      return e;
    }
    if (lname == "datetime" || lname == "policy_evaluation_time" ||
        lname == "policyevaluationtime") {
      const std::string t = Text(*right);
      auto when = ParseRfc3339(t);
      if (!when) when = ParseRfc3339(t + "Z");
      if (!when) when = ParseRfc3339(t + "T00:00:00Z");
      if (!when) {
        out_.errors.push_back(where + ": dateTime \"" + t + "\" is not an xsd:dateTime");
        return e;
      }
      if (op == "gt" || op == "gteq") {
        e.not_before = *when;
      } else if (op == "lt" || op == "lteq") {
        e.not_after = *when;
      } else if (op == "eq") {
        out_.not_enforced.push_back(where + ": dateTime eq (a single instant) is not enforced");
        e.complete = false;
      } else {
        out_.errors.push_back(where + ": operator \"" + op + "\" is not meaningful for dateTime");
      }
      return e;
    }
    // Everything else: purpose, count, elapsedTime, event, framework agreements, membership...
    out_.not_enforced.push_back(where + ": " + left_raw + " " + op + " " +
                                Describe(Unwrap(*right)));
    e.complete = false;
    return e;
  }

  // IDS writes operators as idsc:EQUALS, idsc:SAME_AS, idsc:IN, ...: map them to ODRL's.
  static std::string Operator(const std::string& raw) {
    const std::string l = Lower(raw);
    if (l == "equals" || l == "same_as" || l == "eq") return "eq";
    if (l == "not" || l == "not_equals" || l == "neq") return "neq";
    if (l == "in" || l == "is_any_of" || l == "isanyof") return "isAnyOf";
    if (l == "is_none_of" || l == "isnoneof") return "isNoneOf";
    if (l == "ispartof" || l == "is_part_of") return "isPartOf";
    if (l == "isallof" || l == "is_all_of") return "isAllOf";
    if (l == "lteq" || l == "before" || l == "temporal_before") return l == "lteq" ? "lteq" : "lt";
    if (l == "gteq" || l == "after" || l == "temporal_after") return l == "gteq" ? "gteq" : "gt";
    if (l == "lt" || l == "gt" || l == "isa") return l == "isa" ? "isA" : l;
    return raw;
  }

  std::string DatasetId(const Json& policy, const Json& root, const std::string& requested) {
    if (!requested.empty()) return requested;
    std::string raw;
    if (const Json* t = Member(policy, "target")) raw = Text(*t);
    if (raw.empty()) {
      for (const Json* p : Items(Member(policy, "permission"))) {
        if (const Json* t = Member(*p, "target"); t && raw.empty()) raw = Text(*t);
      }
    }
    if (raw.empty() && policy.contains("@id")) raw = Text(policy["@id"]);
    if (raw.empty() && root.is_object() && root.contains("@id")) raw = Text(root["@id"]);
    // An IRI names the asset by its last segment: ".../data/sensor-feed" -> "sensor-feed".
    if (raw.find("://") != std::string::npos || raw.starts_with("urn:")) {
      while (!raw.empty() && (raw.back() == '/' || raw.back() == ':')) raw.pop_back();
      if (const auto cut = raw.find_last_of("/:#"); cut != std::string::npos) {
        raw = raw.substr(cut + 1);
      }
    }
    std::string id;
    for (char c : raw) {
      const bool ok =
          std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
      id.push_back(ok ? c : '-');
    }
    if (id.size() > 128) id.resize(128);
    return id.empty() ? "imported-odrl" : id;
  }

  OdrlImport& out_;
  bool any_window_ = false;
};

}  // namespace

OdrlImport ImportOdrl(std::string_view json_text, const OdrlImportOptions& options) {
  OdrlImport out;
  Json root;
  try {
    // Bound the nesting while parsing: later steps (dump() in reports) recurse.
    root = Json::parse(json_text, [](int depth, Json::parse_event_t, Json&) {
      if (depth > kMaxDepth * 2) throw std::length_error("JSON nested deeper than 64 levels");
      return true;
    });
  } catch (const Json::exception& e) {
    out.errors.push_back(std::string("not JSON: ") + e.what());
    return out;
  } catch (const std::length_error& e) {
    out.errors.push_back(std::string("not accepted: ") + e.what());
    return out;
  }
  try {
    Importer(out).Run(root, options);
  } catch (const Json::exception& e) {
    out.errors.push_back(std::string("unexpected JSON shape: ") + e.what());
  }
  return out;
}

std::string RenderOdrlImport(const OdrlImport& import, std::string_view source_name) {
  std::string s = "# Imported from ODRL by `sovguardctl policy import-odrl " +
                  std::string(source_name) + "`.\n";
  if (!import.not_enforced.empty()) {
    s += "#\n# NOT ENFORCED BY SOVGUARD (never treated as satisfied; enforce them elsewhere):\n";
    for (const auto& t : import.not_enforced) s += "#   - " + t + "\n";
  }
  for (const auto& n : import.notes) s += "# note: " + n + "\n";
  std::string body;
  google::protobuf::TextFormat::Printer printer;
  printer.SetUseShortRepeatedPrimitives(true);
  printer.PrintToString(import.policy, &body);
  return s + "\n" + body;
}

}  // namespace sovguard::policy
