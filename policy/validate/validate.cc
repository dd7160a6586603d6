#include "policy/validate/validate.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <map>

#include "base/time.h"
#include "policy/jurisdiction/countries.h"

namespace sovguard::policy {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Where(const ParsedFile& f, std::string_view path) {
  const auto l = f.locations.Find(path);
  return f.name + ":" + std::to_string(l.line) + ":" + std::to_string(l.col);
}

std::string AddressOnlyWarning(std::string_view exception) {
  return "exception \"" + std::string(exception) +
         "\" names no ports: it carries any protocol and port to its addresses, so a tunnel or "
         "relay through them is not stopped; list what it is for, e.g. ports: \"udp/53\" "
         "\"tcp/53\"";
}

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

bool ValidUuid(std::string_view u) {
  if (u.size() != 36) return false;
  for (std::size_t i = 0; i < u.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (u[i] != '-') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(u[i]))) {
      return false;
    }
  }
  return true;
}

// "192.0.2.10", "192.0.2.0/24", "192.0.2.10:2049", "[2001:db8::1]:3260", "2001:db8::/32".
bool ValidEndpoint(std::string_view e) {
  if (e.empty()) return false;
  std::string_view host = e;
  auto valid_port = [](std::string_view p) {
    unsigned port = 0;
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    return !p.empty() && ec == std::errc() && ptr == p.data() + p.size() && port > 0 &&
           port < 65536;
  };
  if (e.front() == '[') {
    const auto close = e.find(']');
    if (close == std::string_view::npos) return false;
    host = e.substr(1, close - 1);
    const auto rest = e.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !valid_port(rest.substr(1)))) return false;
  } else if (std::count(e.begin(), e.end(), ':') == 1) {
    const auto colon = e.find(':');
    if (!valid_port(e.substr(colon + 1))) return false;
    host = e.substr(0, colon);
  }
  return ParsePrefix(host).has_value();
}

// "udp/53", "tcp/853", "tcp/8000-8080".
std::optional<PortRule> ParsePortRule(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::string proto = Lower(text.substr(0, slash));
  PortRule r;
  if (proto == "tcp") {
    r.proto = 6;
  } else if (proto == "udp") {
    r.proto = 17;
  } else {
    return std::nullopt;
  }
  auto port = [](std::string_view p) -> std::optional<std::uint16_t> {
    unsigned v = 0;
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (p.empty() || ec != std::errc() || ptr != p.data() + p.size() || v == 0 || v > 65535)
      return std::nullopt;
    return static_cast<std::uint16_t>(v);
  };
  const std::string_view ports = text.substr(slash + 1);
  const auto dash = ports.find('-');
  const auto lo = port(ports.substr(0, dash));
  const auto hi = dash == std::string_view::npos ? lo : port(ports.substr(dash + 1));
  if (!lo || !hi || *lo > *hi) return std::nullopt;
  r.lo = *lo;
  r.hi = *hi;
  return r;
}

class Validator {
 public:
  Validator(const std::vector<ParsedFile>& files, std::int64_t now) : files_(files), now_(now) {}

  LoadResult Run() {
    // Pass 1: zones and exceptions (datasets refer to them by name, across files).
    for (const auto& f : files_) {
      for (int i = 0; i < f.policy.zones_size(); ++i) Zone(f, i);
      for (int i = 0; i < f.policy.exceptions_size(); ++i) ExceptionEntry(f, i);
    }
    ZoneOverlaps();
    for (const auto& f : files_) {
      for (int i = 0; i < f.policy.datasets_size(); ++i) DatasetEntry(f, i);
    }
    if (datasets_.size() > SG_MAX_DATASETS) {
      const auto& [file, path] = dataset_at_[datasets_[SG_MAX_DATASETS].id];
      Err(*file, path,
          "more than " + std::to_string(SG_MAX_DATASETS) +
              " datasets: a node enforces at most 64 at once");
    }
    LoadResult result;
    result.diagnostics = std::move(diags_);
    result.warnings = std::move(warnings_);
    if (!result.diagnostics.empty()) return result;

    ValidatedPolicy p;
    p.datasets = std::move(datasets_);
    std::sort(p.datasets.begin(), p.datasets.end(),
              [](const auto& a, const auto& b) { return a.id < b.id; });
    for (auto& [name, z] : zones_) p.zones.push_back(std::move(z));
    for (std::size_t i = 0; i < p.zones.size(); ++i) {
      p.zones[i].id = static_cast<std::uint16_t>(i + 1);
    }
    for (auto& [name, e] : exceptions_) p.exceptions.push_back(std::move(e));
    for (const auto& d : p.datasets) *p.merged.add_datasets() = d.proto;
    for (const auto& name : zone_order_) *p.merged.add_zones() = zone_protos_.at(name);
    for (const auto& name : exception_order_) {
      *p.merged.add_exceptions() = exception_protos_.at(name);
    }
    std::sort(p.merged.mutable_zones()->begin(), p.merged.mutable_zones()->end(),
              [](const auto& a, const auto& b) { return a.name() < b.name(); });
    std::sort(p.merged.mutable_exceptions()->begin(), p.merged.mutable_exceptions()->end(),
              [](const auto& a, const auto& b) { return a.name() < b.name(); });
    result.policy = std::move(p);
    return result;
  }

 private:
  void Err(const ParsedFile& f, const std::string& path, std::string message) {
    diags_.push_back(f.At(path, std::move(message)));
  }

  std::vector<IpPrefix> Cidrs(const ParsedFile& f, const std::string& base,
                              const google::protobuf::RepeatedPtrField<std::string>& cidrs,
                              const std::string& what) {
    std::vector<IpPrefix> out;
    if (cidrs.empty()) Err(f, base, what + " needs at least one entry in cidrs");
    for (int i = 0; i < cidrs.size(); ++i) {
      std::string why;
      if (auto p = ParsePrefix(cidrs[i], &why)) {
        out.push_back(*p);
      } else {
        Err(f, base + ".cidrs[" + std::to_string(i) + "]", why);
      }
    }
    return out;
  }

  void Zone(const ParsedFile& f, int i) {
    const auto& z = f.policy.zones(i);
    const std::string base = "zones[" + std::to_string(i) + "]";
    if (!ValidId(z.name())) {
      Err(f, base + (z.name().empty() ? "" : ".name"),
          "zone name must be 1-128 characters of A-Z a-z 0-9 . _ -");
      return;
    }
    if (auto it = zone_at_.find(z.name()); it != zone_at_.end()) {
      Err(f, base + ".name",
          "duplicate zone name \"" + z.name() + "\" (first defined at " +
              Where(*it->second.first, it->second.second + ".name") + ")");
      return;
    }
    zone_at_[z.name()] = {&f, base};
    ZoneModel m;
    m.name = z.name();
    if (auto iso = NormalizeCountry(z.jurisdiction())) {
      m.jurisdiction = *iso;
    } else {
      Err(f, base + (z.jurisdiction().empty() ? "" : ".jurisdiction"),
          "zone jurisdiction must be an ISO 3166-1 alpha-2 country code, got \"" +
              z.jurisdiction() + "\"");
    }
    m.prefixes = Cidrs(f, base, z.cidrs(), "zone \"" + z.name() + "\"");
    zones_[m.name] = std::move(m);
    zone_order_.push_back(z.name());
    zone_protos_[z.name()] = z;
  }

  void ExceptionEntry(const ParsedFile& f, int i) {
    const auto& e = f.policy.exceptions(i);
    const std::string base = "exceptions[" + std::to_string(i) + "]";
    if (!ValidId(e.name())) {
      Err(f, base + (e.name().empty() ? "" : ".name"),
          "exception name must be 1-128 characters of A-Z a-z 0-9 . _ -");
      return;
    }
    if (auto it = exception_at_.find(e.name()); it != exception_at_.end()) {
      Err(f, base + ".name",
          "duplicate exception name \"" + e.name() + "\" (first defined at " +
              Where(*it->second.first, it->second.second + ".name") + ")");
      return;
    }
    exception_at_[e.name()] = {&f, base};
    ExceptionModel m;
    m.name = e.name();
    m.reason = e.reason();
    m.prefixes = Cidrs(f, base, e.cidrs(), "exception \"" + e.name() + "\"");
    for (int k = 0; k < e.ports_size(); ++k) {
      const std::string pp = base + ".ports[" + std::to_string(k) + "]";
      if (auto r = ParsePortRule(e.ports(k))) {
        m.ports.push_back(*r);
      } else {
        Err(f, pp,
            "exception port \"" + e.ports(k) +
                "\" must be tcp/PORT, udp/PORT or PROTO/LOW-HIGH with ports 1-65535");
      }
    }
    std::sort(m.ports.begin(), m.ports.end());
    m.ports.erase(std::unique(m.ports.begin(), m.ports.end()), m.ports.end());
    if (m.ports.size() > SG_PORT_RULES) {
      Err(f, base + ".ports",
          "exception \"" + e.name() + "\" lists " + std::to_string(m.ports.size()) +
              " protocol/port entries, at most " + std::to_string(SG_PORT_RULES));
    }
    if (e.ports_size() == 0) {
      warnings_.push_back(f.At(base + ".name", "warning: " + AddressOnlyWarning(e.name())));
    }
    exceptions_[m.name] = std::move(m);
    exception_order_.push_back(e.name());
    exception_protos_[e.name()] = e;
  }

  void ZoneOverlaps() {
    struct Entry {
      const ZoneModel* zone;
      std::size_t index;
    };
    std::vector<Entry> all;
    for (const auto& [name, z] : zones_) {
      for (std::size_t i = 0; i < z.prefixes.size(); ++i) all.push_back({&z, i});
    }
    // Quadratic, but zones are a handful of provider data centres.
    for (std::size_t a = 0; a < all.size() && a < 4096; ++a) {
      for (std::size_t b = a + 1; b < all.size() && b < 4096; ++b) {
        const auto& pa = all[a].zone->prefixes[all[a].index];
        const auto& pb = all[b].zone->prefixes[all[b].index];
        if (all[a].zone == all[b].zone || !(pa.Contains(pb) || pb.Contains(pa))) continue;
        if (all[a].zone->jurisdiction == all[b].zone->jurisdiction) continue;
        const auto& [fa, basea] = zone_at_.at(all[a].zone->name);
        const auto& [fb, baseb] = zone_at_.at(all[b].zone->name);
        Err(*fb, baseb + ".cidrs[" + std::to_string(all[b].index) + "]",
            "zone \"" + all[b].zone->name + "\" prefix " + pb.ToString() + " overlaps zone \"" +
                all[a].zone->name + "\" prefix " + pa.ToString() + " (" +
                Where(*fa, basea + ".cidrs[" + std::to_string(all[a].index) + "]") +
                ") with a different jurisdiction (" + all[b].zone->jurisdiction + " vs " +
                all[a].zone->jurisdiction + ")");
      }
    }
  }

  std::optional<Quota> QuotaEntry(const ParsedFile& f, const std::string& path,
                                  const pb::Quota& q) {
    bool ok = true;
    if (q.bytes() == 0) {
      Err(f, path, "quota of 0 bytes would block all I/O; leave the quota out for unlimited");
      ok = false;
    }
    if (q.window_seconds() == 0) {
      Err(f, path, "quota window_seconds must be greater than 0");
      ok = false;
    }
    if (!ok) return std::nullopt;
    return Quota{q.bytes(), q.window_seconds()};
  }

  void DatasetEntry(const ParsedFile& f, int i) {
    const auto& d = f.policy.datasets(i);
    const std::string base = "datasets[" + std::to_string(i) + "]";
    DatasetModel m;
    m.proto = d;
    m.id = d.id();
    if (!ValidId(d.id())) {
      Err(f, base + (d.id().empty() ? "" : ".id"),
          d.id().empty()
              ? "dataset id must not be empty"
              : "dataset id \"" + d.id() + "\" must be 1-128 characters of A-Z a-z 0-9 . _ -");
    } else if (auto it = dataset_at_.find(d.id()); it != dataset_at_.end()) {
      Err(f, base + ".id",
          "duplicate dataset id \"" + d.id() + "\" (first defined at " +
              Where(*it->second.first, it->second.second + ".id") + ")");
      return;
    }
    switch (d.mode()) {
      case pb::AUDIT:
        m.mode = Mode::kAudit;
        break;
      case pb::ENFORCE:
        m.mode = Mode::kEnforce;
        break;
      default:
        Err(f, base + (d.mode() == pb::MODE_UNSPECIFIED ? "" : ".mode"),
            "dataset \"" + d.id() + "\": mode must be AUDIT or ENFORCE");
    }
    // Residency.
    const auto& r = d.residency();
    for (int k = 0; k < r.allow_size(); ++k) {
      const std::string p = base + ".residency.allow[" + std::to_string(k) + "]";
      const std::string& a = r.allow(k);
      const std::string up = [&] {
        std::string s(a);
        for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return s;
      }();
      std::vector<std::string> add;
      if (up == "EU" || up == "EEA") {
        for (auto c : IsoCountries()) {
          if (up == "EU" ? IsEu(c) : IsEea(c)) add.emplace_back(c);
        }
      } else if (up == "ANY") {
        m.any_country = true;
      } else if (auto iso = NormalizeCountry(a)) {
        add.push_back(*iso);
      } else {
        Err(f, p,
            "unknown country code \"" + a +
                "\": expected an ISO 3166-1 alpha-2 code (DE, FR, ...) or a group (EU, EEA, "
                "ANY)");
        continue;
      }
      for (const auto& c : add) m.countries.insert(c);
    }
    for (int k = 0; k < r.zones_size(); ++k) {
      if (!zones_.contains(r.zones(k))) {
        Err(f, base + ".residency.zones[" + std::to_string(k) + "]",
            "unknown operator zone \"" + r.zones(k) + "\" (define it under zones)");
      } else {
        m.zones.insert(r.zones(k));
      }
    }
    for (int k = 0; k < r.exceptions_size(); ++k) {
      if (!exceptions_.contains(r.exceptions(k))) {
        Err(f, base + ".residency.exceptions[" + std::to_string(k) + "]",
            "unknown exception \"" + r.exceptions(k) + "\" (define it under exceptions)");
      } else {
        m.exceptions.insert(r.exceptions(k));
      }
    }
    for (int k = 0; k < r.ethertypes_size(); ++k) {
      const std::string& text = r.ethertypes(k);
      const std::string field = base + ".residency.ethertypes[" + std::to_string(k) + "]";
      unsigned value = 0;
      const bool hex = text.size() == 6 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X') &&
                       text.find_first_not_of("0123456789abcdefABCDEF", 2) == std::string::npos;
      if (hex) value = static_cast<unsigned>(std::stoul(text.substr(2), nullptr, 16));
      if (!hex || value < 0x0600) {
        Err(f, field, "expected an ethertype as 0xHHHH of at least 0x0600, got \"" + text + "\"");
      } else if (value == 0x0800 || value == 0x86DD || value == 0x0806 || value == 0x8100 ||
                 value == 0x88A8 || value == 0x9100) {
        Err(f, field,
            "\"" + text +
                "\" is IP, ARP or a VLAN tag: residency and control rules decide those frames, "
                "list only other ethertypes");
      } else {
        m.ethertypes.insert(static_cast<std::uint16_t>(value));
      }
    }
    if (m.ethertypes.size() > SG_MAX_GUEST_ETHERTYPES) {
      Err(f, base + ".residency.ethertypes",
          "at most " + std::to_string(SG_MAX_GUEST_ETHERTYPES) +
              " ethertypes per dataset (the kernel's per-guest table)");
    }
    if (d.mode() == pb::ENFORCE && r.allow_size() == 0 && r.zones_size() == 0) {
      Err(f, base + (d.has_residency() ? ".residency" : ".mode"),
          "dataset \"" + d.id() +
              "\" is in ENFORCE mode with an empty residency allow-list: it could be sent "
              "nowhere; list countries, groups or zones (or use AUDIT)");
    }
    // Usage.
    const auto& u = d.usage();
    const std::string ub = base + ".usage";
    for (int k = 0; k < u.guests_size(); ++k) {
      const auto& g = u.guests(k);
      const std::string gp = ub + ".guests[" + std::to_string(k) + "]";
      switch (g.match_case()) {
        case pb::GuestSelector::kName:
          if (g.name().empty()) Err(f, gp + ".name", "guest name must not be empty");
          m.guest_names.push_back(g.name());
          break;
        case pb::GuestSelector::kUuid:
          if (!ValidUuid(g.uuid())) {
            Err(f, gp + ".uuid",
                "guest uuid \"" + g.uuid() +
                    "\" must look like 01234567-89ab-cdef-0123-456789abcdef");
          }
          m.guest_uuids.push_back(Lower(g.uuid()));
          break;
        case pb::GuestSelector::kLabel:
          if (g.label().find('=') == std::string::npos || g.label().front() == '=') {
            Err(f, gp + ".label", "guest label \"" + g.label() + "\" must be key=value");
          }
          m.guest_labels.push_back(g.label());
          break;
        default:
          Err(f, gp, "guest selector needs one of name, uuid or label");
      }
    }
    m.read_only = u.read_only();
    if (u.has_egress()) m.egress = QuotaEntry(f, ub + ".egress", u.egress());
    if (u.has_read()) m.read = QuotaEntry(f, ub + ".read", u.read());
    if (u.has_write()) {
      m.write = QuotaEntry(f, ub + ".write", u.write());
      if (u.read_only()) {
        Err(f, ub + ".write", "a read_only dataset cannot have a write quota");
      }
    }
    auto when = [&](const std::string& text,
                    const std::string& field) -> std::optional<std::int64_t> {
      if (text.empty()) return std::nullopt;
      auto t = ParseRfc3339(text);
      if (!t) {
        Err(f, ub + "." + field,
            field + " \"" + text + "\" must be an RFC 3339 time such as 2026-01-01T00:00:00Z");
      }
      return t;
    };
    m.not_before = when(u.not_before(), "not_before");
    m.not_after = when(u.not_after(), "not_after");
    if (m.not_after && *m.not_after <= now_) {
      Err(f, ub + ".not_after",
          "validity window ended at " + base::FormatRfc3339(*m.not_after) +
              ": the dataset could never be used");
    }
    if (m.not_before && m.not_after && *m.not_before >= *m.not_after) {
      Err(f, ub + ".not_before", "not_before must be earlier than not_after");
    }
    // Storage.
    const auto& s = d.storage();
    for (int k = 0; k < s.pools_size(); ++k) {
      const auto& pool = s.pools(k);
      const std::string pp = base + ".storage.pools[" + std::to_string(k) + "]";
      switch (pool.location_case()) {
        case pb::StoragePool::kPath:
        case pb::StoragePool::kMount: {
          const auto& v = pool.has_path() ? pool.path() : pool.mount();
          if (v.empty() || v.front() != '/' || v.find("/../") != std::string::npos ||
              v.ends_with("/..")) {
            Err(f, pp + (pool.has_path() ? ".path" : ".mount"),
                "storage pool \"" + v + "\" must be an absolute path without ..");
          }
          break;
        }
        case pb::StoragePool::kDevice:
          if (!pool.device().starts_with("/dev/") ||
              pool.device().find("..") != std::string::npos) {
            Err(f, pp + ".device", "storage device \"" + pool.device() + "\" must be under /dev/");
          }
          break;
        default:
          Err(f, pp, "storage pool needs one of path, mount or device");
      }
    }
    for (int k = 0; k < s.network_size(); ++k) {
      const auto& n = s.network(k);
      if (!ValidEndpoint(n.endpoint())) {
        Err(f,
            base + ".storage.network[" + std::to_string(k) + "]" +
                (n.endpoint().empty() ? "" : ".endpoint"),
            "network storage endpoint \"" + n.endpoint() +
                "\" must be an address or CIDR, optionally with :port ([v6]:port)");
      }
    }
    m.default_for_unlabelled = d.default_for_unlabelled();
    if (!d.id().empty()) dataset_at_.emplace(d.id(), std::make_pair(&f, base));
    datasets_.push_back(std::move(m));
  }

  const std::vector<ParsedFile>& files_;
  std::int64_t now_;
  Diagnostics diags_, warnings_;
  std::map<std::string, ZoneModel> zones_;
  std::map<std::string, ExceptionModel> exceptions_;
  std::vector<std::string> zone_order_, exception_order_;
  std::map<std::string, pb::OperatorZone> zone_protos_;
  std::map<std::string, pb::Exception> exception_protos_;
  std::map<std::string, std::pair<const ParsedFile*, std::string>> zone_at_, exception_at_,
      dataset_at_;
  std::vector<DatasetModel> datasets_;
};

std::int64_t DaysFromCivil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

}  // namespace

bool DatasetModel::AllowsCountry(std::string_view iso) const {
  return any_country ? !iso.empty() : countries.contains(std::string(iso));
}

std::uint64_t ValidatedPolicy::DefaultMask() const {
  std::uint64_t mask = 0;
  for (std::size_t i = 0; i < datasets.size() && i < 64; ++i) {
    if (datasets[i].default_for_unlabelled) mask |= std::uint64_t{1} << i;
  }
  return mask;
}

std::uint64_t ValidatedPolicy::DatasetsForGuest(std::string_view name, std::string_view uuid,
                                                const std::vector<std::string>& labels) const {
  const std::string luuid = Lower(uuid);
  std::uint64_t mask = 0;
  for (std::size_t i = 0; i < datasets.size() && i < 64; ++i) {
    const auto& d = datasets[i];
    const bool hit =
        (!name.empty() &&
         std::find(d.guest_names.begin(), d.guest_names.end(), name) != d.guest_names.end()) ||
        (!luuid.empty() &&
         std::find(d.guest_uuids.begin(), d.guest_uuids.end(), luuid) != d.guest_uuids.end()) ||
        std::any_of(labels.begin(), labels.end(), [&](const std::string& l) {
          return std::find(d.guest_labels.begin(), d.guest_labels.end(), l) != d.guest_labels.end();
        });
    if (hit) mask |= std::uint64_t{1} << i;
  }
  return mask != 0 ? mask : DefaultMask();
}

const DatasetModel* ValidatedPolicy::FindDataset(std::string_view id) const {
  for (const auto& d : datasets) {
    if (d.id == id) return &d;
  }
  return nullptr;
}

std::vector<std::string> PolicyWarnings(const ValidatedPolicy& policy) {
  std::vector<std::string> warnings;
  for (const auto& e : policy.exceptions)
    if (e.ports.empty()) warnings.push_back(AddressOnlyWarning(e.name));
  return warnings;
}

LoadResult Validate(const std::vector<ParsedFile>& files, std::int64_t now) {
  return Validator(files, now).Run();
}

LoadResult LoadPolicyBuffers(const std::vector<std::pair<std::string, std::string>>& files,
                             std::int64_t now) {
  Diagnostics diags;
  std::vector<ParsedFile> parsed;
  for (const auto& [name, bytes] : files) {
    if (auto p = ParsePolicy(name, bytes, diags)) parsed.push_back(std::move(*p));
  }
  if (!diags.empty()) return LoadResult{std::nullopt, std::move(diags)};
  return Validate(parsed, now);
}

LoadResult LoadPolicyFiles(const std::vector<std::filesystem::path>& paths, std::int64_t now) {
  Diagnostics diags;
  std::vector<ParsedFile> parsed;
  for (const auto& path : paths) {
    if (auto p = ParsePolicyFile(path, diags)) parsed.push_back(std::move(*p));
  }
  if (!diags.empty()) return LoadResult{std::nullopt, std::move(diags)};
  return Validate(parsed, now);
}

std::optional<std::int64_t> ParseRfc3339(std::string_view t) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    if (pos + len > t.size()) return false;
    out = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      out = out * 10 + (t[i] - '0');
    }
    return true;
  };
  int y, mo, d, h, mi, s;
  if (t.size() < 20 || !num(0, 4, y) || t[4] != '-' || !num(5, 2, mo) || t[7] != '-' ||
      !num(8, 2, d) || (t[10] != 'T' && t[10] != 't') || !num(11, 2, h) || t[13] != ':' ||
      !num(14, 2, mi) || t[16] != ':' || !num(17, 2, s)) {
    return std::nullopt;
  }
  static constexpr std::array<int, 12> kDays = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo < 1 || mo > 12 || d < 1 || d > kDays[static_cast<std::size_t>(mo - 1)] ||
      (mo == 2 && d == 29 && !leap) || h > 23 || mi > 59 || s > 60) {
    return std::nullopt;
  }
  std::size_t pos = 19;
  if (pos < t.size() && t[pos] == '.') {
    ++pos;
    const std::size_t start = pos;
    while (pos < t.size() && t[pos] >= '0' && t[pos] <= '9') ++pos;
    if (pos == start) return std::nullopt;
  }
  std::int64_t offset = 0;
  if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) {
    ++pos;
  } else if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
    int oh, om;
    if (!num(pos + 1, 2, oh) || pos + 3 >= t.size() || t[pos + 3] != ':' || !num(pos + 4, 2, om) ||
        oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset = (oh * 3600 + om * 60) * (t[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != t.size()) return std::nullopt;
  const std::int64_t days = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  return days * 86400 + h * 3600 + mi * 60 + (s == 60 ? 59 : s) - offset;
}

}  // namespace sovguard::policy
