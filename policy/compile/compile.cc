#include "policy/compile/compile.h"

#include <openssl/evp.h>

#include <algorithm>
#include <map>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <tuple>

#include "base/sha256.h"
#include "policy/jurisdiction/countries.h"

namespace sovguard::policy {
namespace {

struct Override {
  IpPrefix prefix;
  std::uint16_t class_id;
};

class ClassSet {
 public:
  ClassSet() { Add({0, SG_COUNTRY_UNKNOWN, 0, 0}); }
  std::uint16_t Add(const JurisdictionClass& c) {
    const auto key = std::make_tuple(c.allowed_datasets, c.country, c.zone, c.flags);
    if (auto it = ids_.find(key); it != ids_.end()) return it->second;
    if (classes_.size() >= SG_MAX_CLASSES) {
      throw std::length_error("policy needs more than " + std::to_string(SG_MAX_CLASSES) +
                              " jurisdiction classes");
    }
    const auto id = static_cast<std::uint16_t>(classes_.size());
    classes_.push_back(c);
    ids_.emplace(key, id);
    return id;
  }
  std::vector<JurisdictionClass> Take() { return std::move(classes_); }

 private:
  std::vector<JurisdictionClass> classes_;
  std::map<std::tuple<std::uint64_t, std::uint16_t, std::uint16_t, std::uint32_t>, std::uint16_t>
      ids_;
};

bool Covered(const IpPrefix& p, const std::vector<Override>& by) {
  return std::any_of(by.begin(), by.end(), [&](const Override& o) { return o.prefix.Contains(p); });
}

void PutLE(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

CompiledPolicy Compile(const ValidatedPolicy& policy, const JurisdictionTable& table) {
  CompiledPolicy out;
  for (std::size_t i = 0; i < policy.datasets.size(); ++i) {
    const auto& d = policy.datasets[i];
    CompiledDataset c;
    c.id = d.id;
    c.index = static_cast<std::uint8_t>(i);
    c.mode = d.mode;
    c.egress = d.egress;
    c.read = d.read;
    c.write = d.write;
    c.not_before = d.not_before;
    c.not_after = d.not_after;
    c.read_only = d.read_only;
    c.allowed_ethertypes.assign(d.ethertypes.begin(), d.ethertypes.end());
    out.datasets.push_back(std::move(c));
  }
  const auto bit = [](std::size_t i) { return std::uint64_t{1} << i; };
  ClassSet classes;

  // Countries of the registry table.
  std::map<std::uint16_t, std::uint16_t> country_class;
  for (const auto& iso : table.Countries()) {
    std::uint64_t mask = 0;
    for (std::size_t i = 0; i < policy.datasets.size(); ++i) {
      if (policy.datasets[i].AllowsCountry(iso)) mask |= bit(i);
    }
    country_class[PackCountry(iso)] = classes.Add({mask, PackCountry(iso), 0, 0});
  }

  // Exceptions: a prefix's datasets are those of every exception containing it; an exception
  // with ports grants them only through its rules (protocol + destination port, in the kernel).
  std::vector<Override> exceptions;
  {
    struct Raw {
      IpPrefix prefix;
      std::uint64_t mask;
      const ExceptionModel* e;
    };
    std::vector<Raw> raw;
    for (const auto& e : policy.exceptions) {
      std::uint64_t mask = 0;
      for (std::size_t i = 0; i < policy.datasets.size(); ++i) {
        if (policy.datasets[i].exceptions.contains(e.name)) mask |= bit(i);
      }
      for (const auto& p : e.prefixes) raw.push_back({p, mask, &e});
    }
    std::map<IpPrefix, std::pair<std::uint64_t, std::map<PortRule, std::uint64_t>>> merged;
    for (const auto& r : raw) {
      auto& [mask, rules] = merged[r.prefix];
      for (const auto& o : raw) {
        if (!o.prefix.Contains(r.prefix)) continue;
        if (o.e->ports.empty()) {
          mask |= o.mask;
        } else {
          for (const auto& pr : o.e->ports) rules[pr] |= o.mask;
        }
      }
    }
    std::map<std::vector<std::tuple<std::uint8_t, std::uint16_t, std::uint16_t, std::uint64_t>>,
             std::uint32_t>
        ruleset_ids;
    for (const auto& [p, entry] : merged) {
      const auto& [mask, rules] = entry;
      std::uint32_t flags = SG_CLASS_EXCEPTION;
      std::vector<std::tuple<std::uint8_t, std::uint16_t, std::uint16_t, std::uint64_t>> key;
      for (const auto& [r, m] : rules) {
        if (m != 0) key.emplace_back(r.proto, r.lo, r.hi, m);
      }
      if (!key.empty()) {
        if (key.size() > SG_PORT_RULES) {
          throw std::length_error("exceptions covering " + p.ToString() + " carry " +
                                  std::to_string(key.size()) + " protocol/port rules, at most " +
                                  std::to_string(SG_PORT_RULES));
        }
        auto it = ruleset_ids.find(key);
        if (it == ruleset_ids.end()) {
          if (out.port_rulesets.size() >= SG_PORT_RULESETS) {
            throw std::length_error("policy needs more than " + std::to_string(SG_PORT_RULESETS) +
                                    " distinct port-limited exception rule sets");
          }
          sg_port_ruleset rs{};
          for (std::size_t k = 0; k < key.size(); ++k) {
            const auto& [proto, lo, hi, m] = key[k];
            rs.rule[k] = sg_port_rule{.datasets = m, .port_lo = lo, .port_hi = hi, .proto = proto};
          }
          it = ruleset_ids.emplace(key, static_cast<std::uint32_t>(out.port_rulesets.size())).first;
          out.port_rulesets.push_back(rs);
        }
        flags |= SG_CLASS_PORTS | (it->second << SG_CLASS_RULESET_SHIFT);
      }
      exceptions.push_back({p, classes.Add({mask, SG_COUNTRY_UNKNOWN, 0, flags})});
    }
  }

  // Operator zones.
  std::vector<Override> zones;
  {
    std::map<IpPrefix, std::uint16_t> seen;  // first zone by name wins an identical prefix
    for (const auto& z : policy.zones) {
      std::uint64_t mask = 0;
      for (std::size_t i = 0; i < policy.datasets.size(); ++i) {
        const auto& d = policy.datasets[i];
        if (d.AllowsCountry(z.jurisdiction) || d.zones.contains(z.name)) mask |= bit(i);
      }
      const auto id = classes.Add({mask, PackCountry(z.jurisdiction), z.id, 0});
      for (const auto& p : z.prefixes) {
        if (!seen.contains(p) && !Covered(p, exceptions)) seen.emplace(p, id);
      }
    }
    for (const auto& [p, id] : seen) zones.push_back({p, id});
  }

  auto emit = [&](const IpPrefix& p, std::uint16_t id) {
    if (!p.v6) {
      out.ipv4.push_back({p.V4(), p.len, id});
    } else {
      out.ipv6.push_back({p.addr, p.len, id});
    }
  };
  for (const auto& o : exceptions) emit(o.prefix, o.class_id);
  for (const auto& o : zones) emit(o.prefix, o.class_id);
  std::vector<Override> overrides = exceptions;
  overrides.insert(overrides.end(), zones.begin(), zones.end());
  for (const auto* v : {&table.v4(), &table.v6()}) {
    for (const auto& e : *v) {
      if (!overrides.empty() && Covered(e.prefix, overrides)) continue;
      emit(e.prefix, country_class.at(e.country));
    }
  }
  std::sort(out.ipv4.begin(), out.ipv4.end(), [](const auto& a, const auto& b) {
    return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
  });
  std::sort(out.ipv6.begin(), out.ipv6.end(), [](const auto& a, const auto& b) {
    return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
  });
  out.classes = classes.Take();
  out.default_datasets = policy.DefaultMask();
  out.digest = ComputeDigest(out);
  return out;
}

namespace {

// "198.51.100.7:10809", "[2001:db8::1]:3260", "192.0.2.0/24" -> the prefix (the validator already
// accepted the text; a port is not part of what the kernel matches).
std::optional<IpPrefix> EndpointPrefix(std::string_view e) {
  std::string_view host = e;
  if (!e.empty() && e.front() == '[') {
    const auto close = e.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = e.substr(1, close - 1);
  } else if (std::count(e.begin(), e.end(), ':') == 1) {
    host = e.substr(0, e.find(':'));
  }
  return ParsePrefix(host);
}

}  // namespace

CompiledStorage CompileStorage(const ValidatedPolicy& policy, const CompiledPolicy& compiled) {
  CompiledStorage out;
  std::map<IpPrefix, std::uint64_t> endpoints;  // prefix -> datasets listing it
  for (std::size_t i = 0; i < policy.datasets.size(); ++i) {
    const auto& d = policy.datasets[i];
    // Identity, mode and quotas exactly as the network side compiled them.
    const CompiledDataset& cd = compiled.datasets.at(i);
    CompiledStorageDataset c{.id = cd.id,
                             .index = cd.index,
                             .mode = cd.mode,
                             .read_only = cd.read_only,
                             .read = cd.read,
                             .write = cd.write};
    const auto& s = d.proto.storage();
    for (const auto& pool : s.pools()) {
      switch (pool.location_case()) {
        case pb::StoragePool::kPath:
          c.pools.push_back({StoragePool::Kind::kPath, pool.path()});
          break;
        case pb::StoragePool::kMount:
          c.pools.push_back({StoragePool::Kind::kMount, pool.mount()});
          break;
        case pb::StoragePool::kDevice:
          c.pools.push_back({StoragePool::Kind::kDevice, pool.device()});
          break;
        default:
          throw std::invalid_argument("dataset " + d.id + ": storage pool without a location");
      }
    }
    for (const auto& n : s.network()) {
      const auto p = EndpointPrefix(n.endpoint());
      if (!p) {
        throw std::invalid_argument("dataset " + d.id + ": storage endpoint \"" + n.endpoint() +
                                    "\" is not an address or CIDR");
      }
      endpoints[*p] |= std::uint64_t{1} << i;
    }
    out.datasets.push_back(std::move(c));
  }

  // A dataset that lists endpoints may reach only those for storage: its bit leaves every
  // jurisdiction class and comes back only in the classes of its endpoints.
  std::uint64_t listing = 0;
  for (const auto& [prefix, m] : endpoints) listing |= m;
  out.classes = compiled.classes;
  for (auto& c : out.classes) c.allowed_datasets &= ~listing;
  out.ipv4 = compiled.ipv4;
  out.ipv6 = compiled.ipv6;
  std::map<std::tuple<std::uint64_t, std::uint16_t, std::uint16_t, std::uint32_t>, std::uint16_t>
      extra;
  const CompiledLookup lookup(compiled);
  for (const auto& [prefix, listed] : endpoints) {
    // Datasets of endpoints containing this one are allowed inside it as well.
    std::uint64_t mask = listed;
    for (const auto& [outer, m] : endpoints) {
      if (outer.Contains(prefix)) mask |= m;
    }
    const JurisdictionClass& base = compiled.classes.at(lookup.ClassOf(prefix));
    const JurisdictionClass cls{(base.allowed_datasets & ~listing) | mask, base.country, base.zone,
                                base.flags | SG_CLASS_EXCEPTION};
    const auto key = std::make_tuple(cls.allowed_datasets, cls.country, cls.zone, cls.flags);
    auto it = extra.find(key);
    if (it == extra.end()) {
      if (out.classes.size() >= SG_MAX_CLASSES) {
        throw std::length_error("storage endpoints need more than " +
                                std::to_string(SG_MAX_CLASSES) + " jurisdiction classes");
      }
      it = extra.emplace(key, static_cast<std::uint16_t>(out.classes.size())).first;
      out.classes.push_back(cls);
    }
    if (!prefix.v6) {
      Ipv4Prefix e{prefix.V4(), prefix.len, it->second};
      auto pos =
          std::lower_bound(out.ipv4.begin(), out.ipv4.end(), e, [](const auto& a, const auto& b) {
            return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
          });
      if (pos != out.ipv4.end() && pos->addr == e.addr && pos->len == e.len) {
        pos->class_id = e.class_id;  // the endpoint's class already includes the address's datasets
      } else {
        out.ipv4.insert(pos, e);
      }
    } else {
      Ipv6Prefix e{prefix.addr, prefix.len, it->second};
      auto pos =
          std::lower_bound(out.ipv6.begin(), out.ipv6.end(), e, [](const auto& a, const auto& b) {
            return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
          });
      if (pos != out.ipv6.end() && pos->addr == e.addr && pos->len == e.len) {
        pos->class_id = e.class_id;
      } else {
        out.ipv6.insert(pos, e);
      }
    }
  }
  return out;
}

std::string CanonicalEncoding(const CompiledPolicy& c) {
  std::string out = "SGCP";
  PutLE(out, 1, 4);  // encoding version
  PutLE(out, c.datasets.size(), 4);
  for (const auto& d : c.datasets) {
    PutLE(out, d.id.size(), 4);
    out += d.id;
    PutLE(out, d.index, 1);
    PutLE(out, static_cast<std::uint8_t>(d.mode), 1);
    PutLE(out, d.read_only ? 1 : 0, 1);
    for (const auto* q : {&d.egress, &d.read, &d.write}) {
      PutLE(out, q->has_value() ? 1 : 0, 1);
      PutLE(out, q->has_value() ? (*q)->bytes : 0, 8);
      PutLE(out, q->has_value() ? (*q)->window_seconds : 0, 8);
    }
    for (const auto* t : {&d.not_before, &d.not_after}) {
      PutLE(out, t->has_value() ? 1 : 0, 1);
      PutLE(out, static_cast<std::uint64_t>(t->value_or(0)), 8);
    }
    // Appended only when present, so policies without ethertypes keep their digests.
    if (!d.allowed_ethertypes.empty()) {
      out += "ETH";
      PutLE(out, d.allowed_ethertypes.size(), 1);
      for (auto e : d.allowed_ethertypes) PutLE(out, e, 2);
    }
  }
  PutLE(out, c.classes.size(), 4);
  for (const auto& k : c.classes) {
    PutLE(out, k.allowed_datasets, 8);
    PutLE(out, k.country, 2);
    PutLE(out, k.zone, 2);
    PutLE(out, k.flags, 4);
  }
  PutLE(out, c.ipv4.size(), 4);
  for (const auto& p : c.ipv4) {
    PutLE(out, p.addr, 4);
    PutLE(out, p.len, 1);
    PutLE(out, p.class_id, 2);
  }
  PutLE(out, c.ipv6.size(), 4);
  for (const auto& p : c.ipv6) {
    out.append(reinterpret_cast<const char*>(p.addr.data()), p.addr.size());
    PutLE(out, p.len, 1);
    PutLE(out, p.class_id, 2);
  }
  PutLE(out, c.default_datasets, 8);
  // Appended only when present, so policies without port-limited exceptions keep their digests.
  if (!c.port_rulesets.empty()) {
    out += "PRT";
    PutLE(out, c.port_rulesets.size(), 4);
    for (const auto& rs : c.port_rulesets) {
      for (const auto& r : rs.rule) {
        PutLE(out, r.datasets, 8);
        PutLE(out, r.port_lo, 2);
        PutLE(out, r.port_hi, 2);
        PutLE(out, r.proto, 1);
      }
    }
  }
  return out;
}

std::array<std::uint8_t, 32> ComputeDigest(const CompiledPolicy& compiled) {
  const std::string bytes = CanonicalEncoding(compiled);
  return base::Sha256(bytes);
}

CompiledLookup::CompiledLookup(const CompiledPolicy& c) : compiled_(c) {
  std::array<bool, 129> seen4{}, seen6{};
  for (const auto& p : c.ipv4) seen4[p.len] = true;
  for (const auto& p : c.ipv6) seen6[p.len] = true;
  for (int len = 128; len >= 0; --len) {
    if (seen4[static_cast<std::size_t>(len)]) lengths4_.push_back(static_cast<std::uint8_t>(len));
    if (seen6[static_cast<std::size_t>(len)]) lengths6_.push_back(static_cast<std::uint8_t>(len));
  }
}

std::uint16_t CompiledLookup::ClassOf(const IpPrefix& a) const {
  if (!a.v6) {
    const std::uint32_t v = a.V4();
    for (const auto len : lengths4_) {
      const std::uint32_t key = len == 0 ? 0 : v & (~std::uint32_t{0} << (32 - len));
      const auto it = std::lower_bound(
          compiled_.ipv4.begin(), compiled_.ipv4.end(), std::make_pair(key, len),
          [](const Ipv4Prefix& p, const std::pair<std::uint32_t, std::uint8_t>& k) {
            return std::tie(p.addr, p.len) < std::tie(k.first, k.second);
          });
      if (it != compiled_.ipv4.end() && it->addr == key && it->len == len) return it->class_id;
    }
    return 0;
  }
  for (const auto len : lengths6_) {
    std::array<std::uint8_t, 16> m = a.addr;
    for (int b = len; b < 128; ++b) {
      m[static_cast<std::size_t>(b / 8)] =
          static_cast<std::uint8_t>(m[static_cast<std::size_t>(b / 8)] & ~(0x80u >> (b % 8)));
    }
    const auto it = std::lower_bound(
        compiled_.ipv6.begin(), compiled_.ipv6.end(), std::make_pair(m, len),
        [](const Ipv6Prefix& p, const std::pair<std::array<std::uint8_t, 16>, std::uint8_t>& k) {
          return std::tie(p.addr, p.len) < std::tie(k.first, k.second);
        });
    if (it != compiled_.ipv6.end() && it->addr == m && it->len == len) return it->class_id;
  }
  return 0;
}

}  // namespace sovguard::policy
