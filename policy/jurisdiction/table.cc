#include "policy/jurisdiction/table.h"

#include <maxminddb.h>
#include <openssl/sha.h>

#include <algorithm>
#include <bitset>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <system_error>

#include "base/error.h"
#include "base/file.h"
#include "base/sha256.h"
#include "policy/jurisdiction/countries.h"
#include "policy/parse/parse.h"

namespace sovguard::policy {
namespace {

void Put16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

class Cursor {
 public:
  Cursor(std::string_view b, std::string* error) : b_(b), error_(error) {}
  bool Need(std::size_t n, const std::string& what) {
    if (b_.size() - pos_ < n) {
      if (error_) {
        *error_ = "truncated at byte " + std::to_string(pos_) + ": expected " + what;
      }
      return false;
    }
    return true;
  }
  std::uint8_t U8() { return static_cast<std::uint8_t>(b_[pos_++]); }
  std::uint16_t U16() {
    const std::uint16_t v = static_cast<std::uint16_t>(U8() | (U8() << 8));
    return v;
  }
  std::uint32_t U32() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t{U8()} << (8 * i);
    return v;
  }
  std::string_view Bytes(std::size_t n) {
    auto v = b_.substr(pos_, n);
    pos_ += n;
    return v;
  }
  std::size_t pos() const { return pos_; }

 private:
  std::string_view b_;
  std::size_t pos_ = 0;
  std::string* error_;
};

bool ZeroPastLen(const IpPrefix& p) {
  for (int bit = p.len; bit < p.MaxLen(); ++bit) {
    if (p.addr[static_cast<std::size_t>(bit / 8)] & (0x80u >> (bit % 8))) return false;
  }
  return true;
}

IpPrefix Masked(const IpPrefix& a, int len) {
  IpPrefix p = a;
  p.len = static_cast<std::uint8_t>(len);
  for (int bit = len; bit < p.MaxLen(); ++bit) {
    p.addr[static_cast<std::size_t>(bit / 8)] = static_cast<std::uint8_t>(
        p.addr[static_cast<std::size_t>(bit / 8)] & ~(0x80u >> (bit % 8)));
  }
  return p;
}

bool ReadList(const std::filesystem::path& file, std::uint16_t country, bool v6,
              std::vector<TableEntry>& out, std::string* error) {
  std::string err;
  auto bytes = base::TryReadFileText(file, &err);
  if (!bytes) {
    if (error) *error = file.string() + ": " + err;
    return false;
  }
  std::size_t line_no = 0, pos = 0;
  while (pos < bytes->size()) {
    auto end = bytes->find('\n', pos);
    if (end == std::string::npos) end = bytes->size();
    std::string_view line(bytes->data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    std::string why;
    auto p = ParsePrefix(line, &why);
    if (!p || p->v6 != v6) {
      if (error) {
        *error =
            file.string() + ":" + std::to_string(line_no) + ":1: " +
            (p ? std::string(v6 ? "expected an IPv6 prefix" : "expected an IPv4 prefix") : why);
      }
      return false;
    }
    out.push_back({*p, country});
  }
  return true;
}

}  // namespace

JurisdictionTable JurisdictionTable::FromEntries(std::vector<TableEntry> entries,
                                                 std::string source) {
  JurisdictionTable t;
  for (auto& e : entries) (e.prefix.v6 ? t.v6_ : t.v4_).push_back(e);
  t.source_ = std::move(source);
  t.Finish();
  return t;
}

void JurisdictionTable::Finish() {
  auto dedupe = [&](std::vector<TableEntry>& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    // Same prefix, different countries: drop every copy (fail closed: unknown space).
    std::vector<TableEntry> kept;
    kept.reserve(v.size());
    for (std::size_t i = 0; i < v.size();) {
      std::size_t j = i + 1;
      while (j < v.size() && v[j].prefix == v[i].prefix) ++j;
      if (j - i == 1) {
        kept.push_back(v[i]);
      } else {
        ++dropped_conflicts_;
      }
      i = j;
    }
    v = std::move(kept);
  };
  dedupe(v4_);
  dedupe(v6_);
  auto lengths = [](const std::vector<TableEntry>& v) {
    std::array<bool, 129> seen{};
    for (const auto& e : v) seen[e.prefix.len] = true;
    std::vector<std::uint8_t> out;
    for (int len = 128; len >= 0; --len) {
      if (seen[static_cast<std::size_t>(len)]) out.push_back(static_cast<std::uint8_t>(len));
    }
    return out;
  };
  lengths4_ = lengths(v4_);
  lengths6_ = lengths(v6_);
}

std::optional<JurisdictionTable> JurisdictionTable::FromCountryIpBlocks(
    const std::filesystem::path& dir, std::string* error) {
  std::error_code ec;
  const auto root = std::filesystem::is_directory(dir / "country", ec) ? dir / "country" : dir;
  std::vector<std::filesystem::path> folders;
  for (std::filesystem::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory()) folders.push_back(it->path());
  }
  if (ec) {
    if (error) *error = root.string() + ": " + ec.message();
    return std::nullopt;
  }
  if (folders.empty()) {
    if (error) *error = root.string() + ": no country folders (expected <cc>/ipv4-aggregated.txt)";
    return std::nullopt;
  }
  std::sort(folders.begin(), folders.end());
  JurisdictionTable t;
  for (const auto& f : folders) {
    const auto name = f.filename().string();
    auto iso = NormalizeCountry(name);
    if (!iso) {
      if (error) *error = f.string() + ": folder name is not an ISO 3166-1 alpha-2 code";
      return std::nullopt;
    }
    const auto packed = PackCountry(*iso);
    for (const bool v6 : {false, true}) {
      const auto file = f / (v6 ? "ipv6-aggregated.txt" : "ipv4-aggregated.txt");
      if (!std::filesystem::exists(file, ec)) continue;  // some countries have no IPv6
      if (!ReadList(file, packed, v6, v6 ? t.v6_ : t.v4_, error)) return std::nullopt;
    }
  }
  t.source_ = "country-ip-blocks";
  t.Finish();
  return t;
}

bool JurisdictionTable::AddMmdb(const std::filesystem::path& path, std::string* error) {
  MMDB_s mmdb;
  const int status = MMDB_open(path.c_str(), MMDB_MODE_MMAP, &mmdb);
  if (status != MMDB_SUCCESS) {
    if (error) *error = path.string() + ": " + MMDB_strerror(status);
    return false;
  }
  std::unique_ptr<MMDB_s, void (*)(MMDB_s*)> guard(&mmdb, MMDB_close);
  const std::uint32_t nodes = mmdb.metadata.node_count;
  const bool tree_v6 = mmdb.metadata.ip_version == 6;
  std::vector<TableEntry> found;
  std::string failure;
  // Iterative walk: (node, bits so far, depth). Depth is at most 128, so the stack stays small.
  struct Item {
    std::uint32_t node;
    std::array<std::uint8_t, 16> bits;
    int depth;
  };
  std::vector<Item> stack{{0, {}, 0}};
  std::size_t visited = 0;
  while (!stack.empty() && failure.empty()) {
    Item it = stack.back();
    stack.pop_back();
    if (++visited > 4u * nodes + 16) {
      failure = "search tree has cycles";
      break;
    }
    MMDB_search_node_s node;
    if (MMDB_read_node(&mmdb, it.node, &node) != MMDB_SUCCESS) {
      failure = "cannot read search node " + std::to_string(it.node);
      break;
    }
    for (int side = 0; side < 2; ++side) {
      Item child = it;
      child.depth = it.depth + 1;
      if (side == 1) {
        const int bit = it.depth;
        child.bits[static_cast<std::size_t>(bit / 8)] = static_cast<std::uint8_t>(
            child.bits[static_cast<std::size_t>(bit / 8)] | (0x80u >> (bit % 8)));
      }
      const auto type = side == 0 ? node.left_record_type : node.right_record_type;
      const auto record = side == 0 ? node.left_record : node.right_record;
      if (tree_v6 && child.depth == 16) {
        // IPv4 aliases in IPv6 trees (::ffff:0:0/96 is under ::/16 and handled below by
        // skipping after 96; 2002::/16 is 6to4): skip 2002::/16 to avoid duplicates.
        if (child.bits[0] == 0x20 && child.bits[1] == 0x02) continue;
      }
      if (tree_v6 && child.depth == 96) {
        // ::ffff:0:0/96 aliases ::/96 (IPv4); keep only ::/96.
        bool ffff = child.bits[10] == 0xff && child.bits[11] == 0xff;
        for (int i = 0; i < 10; ++i) ffff = ffff && child.bits[static_cast<std::size_t>(i)] == 0;
        if (ffff) continue;
      }
      if (type == MMDB_RECORD_TYPE_SEARCH_NODE) {
        if (child.depth >= (tree_v6 ? 128 : 32)) {
          failure = "search tree deeper than the address";
          break;
        }
        stack.push_back({static_cast<std::uint32_t>(record), child.bits, child.depth});
      } else if (type == MMDB_RECORD_TYPE_DATA) {
        MMDB_entry_s entry = side == 0 ? node.left_record_entry : node.right_record_entry;
        MMDB_entry_data_s data;
        int s = MMDB_get_value(&entry, &data, "country", "iso_code", nullptr);
        if (s != MMDB_SUCCESS || !data.has_data) {
          s = MMDB_get_value(&entry, &data, "registered_country", "iso_code", nullptr);
        }
        if (s != MMDB_SUCCESS || !data.has_data || data.type != MMDB_DATA_TYPE_UTF8_STRING) {
          continue;  // no country (anonymous proxy, satellite...): unknown space
        }
        auto iso = NormalizeCountry(std::string_view(data.utf8_string, data.data_size));
        if (!iso) continue;
        IpPrefix p;
        bool v4_mapped = tree_v6 && child.depth >= 96;
        for (int i = 0; i < 12 && v4_mapped; ++i) {
          v4_mapped = child.bits[static_cast<std::size_t>(i)] == 0;
        }
        if (!tree_v6) {
          p.v6 = false;
          std::copy_n(child.bits.begin(), 4, p.addr.begin());
          p.len = static_cast<std::uint8_t>(child.depth);
        } else if (v4_mapped) {
          p.v6 = false;
          std::copy_n(child.bits.begin() + 12, 4, p.addr.begin());
          p.len = static_cast<std::uint8_t>(child.depth - 96);
        } else {
          p.v6 = true;
          p.addr = child.bits;
          p.len = static_cast<std::uint8_t>(child.depth);
        }
        found.push_back({p, PackCountry(*iso)});
      }
      // EMPTY / INVALID: nothing there.
    }
  }
  if (!failure.empty()) {
    if (error) *error = path.string() + ": " + failure;
    return false;
  }
  // The database wins over registry data for identical prefixes.
  std::vector<TableEntry> merged;
  for (const auto& e : found) merged.push_back(e);
  auto keep_registry = [&](const TableEntry& e) {
    return !std::binary_search(found.begin(), found.end(), e,
                               [](const auto& a, const auto& b) { return a.prefix < b.prefix; });
  };
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.prefix < b.prefix; });
  for (auto* v : {&v4_, &v6_}) {
    for (const auto& e : *v) {
      if (keep_registry(e)) merged.push_back(e);
    }
    v->clear();
  }
  for (const auto& e : merged) (e.prefix.v6 ? v6_ : v4_).push_back(e);
  source_ += "+mmdb:" + path.filename().string();
  Finish();
  return true;
}

std::string JurisdictionTable::Serialize() const {
  std::vector<std::uint16_t> countries;
  for (const auto* v : {&v4_, &v6_}) {
    for (const auto& e : *v) countries.push_back(e.country);
  }
  std::sort(countries.begin(), countries.end());
  countries.erase(std::unique(countries.begin(), countries.end()), countries.end());
  auto index_of = [&](std::uint16_t c) {
    return static_cast<std::uint16_t>(std::lower_bound(countries.begin(), countries.end(), c) -
                                      countries.begin());
  };
  std::string out;
  out.append(kMagic, 4);
  Put16(out, kFormatVersion);
  Put16(out, 0);
  Put32(out, static_cast<std::uint32_t>(countries.size()));
  Put32(out, static_cast<std::uint32_t>(v4_.size()));
  Put32(out, static_cast<std::uint32_t>(v6_.size()));
  Put32(out, static_cast<std::uint32_t>(source_.size()));
  out += source_;
  for (auto c : countries) Put16(out, c);
  for (const auto& e : v4_) {
    out.append(reinterpret_cast<const char*>(e.prefix.addr.data()), 4);
    out.push_back(static_cast<char>(e.prefix.len));
    Put16(out, index_of(e.country));
  }
  for (const auto& e : v6_) {
    out.push_back(static_cast<char>(e.prefix.len));
    out.append(reinterpret_cast<const char*>(e.prefix.addr.data()), (e.prefix.len + 7u) / 8u);
    Put16(out, index_of(e.country));
  }
  const auto digest = base::Sha256(out);
  out.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  return out;
}

std::optional<JurisdictionTable> JurisdictionTable::Deserialize(std::string_view bytes,
                                                                std::string* error) {
  auto fail = [&](std::string why) -> std::optional<JurisdictionTable> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  if (bytes.size() < 4 || std::memcmp(bytes.data(), kMagic, 4) != 0) {
    return fail("bad magic: not a sovguard jurisdiction table (expected \"SGJT\")");
  }
  if (bytes.size() < 24 + SHA256_DIGEST_LENGTH) return fail("truncated: shorter than the header");
  Cursor c(bytes.substr(0, bytes.size() - SHA256_DIGEST_LENGTH), error);
  c.Bytes(4);
  const auto version = c.U16();
  if (version != kFormatVersion) {
    return fail("unsupported format version " + std::to_string(version) + " (this build reads " +
                std::to_string(kFormatVersion) + ")");
  }
  const auto digest = base::Sha256(bytes.substr(0, bytes.size() - SHA256_DIGEST_LENGTH));
  if (std::memcmp(digest.data(), bytes.data() + bytes.size() - SHA256_DIGEST_LENGTH,
                  digest.size()) != 0) {
    return fail("checksum mismatch: the file is corrupt (SHA-256 over the first " +
                std::to_string(bytes.size() - SHA256_DIGEST_LENGTH) + " bytes differs)");
  }
  if (c.U16() != 0) return fail("reserved header field at byte 6 must be 0");
  const auto ncountries = c.U32();
  const auto n4 = c.U32();
  const auto n6 = c.U32();
  const auto nsource = c.U32();
  JurisdictionTable t;
  if (!c.Need(nsource, "a source description of " + std::to_string(nsource) + " bytes")) {
    return std::nullopt;
  }
  t.source_ = std::string(c.Bytes(nsource));
  if (ncountries > 1024) return fail("country count " + std::to_string(ncountries) + " > 1024");
  if (!c.Need(2ull * ncountries, std::to_string(ncountries) + " country codes")) {
    return std::nullopt;
  }
  std::vector<std::uint16_t> countries;
  for (std::uint32_t i = 0; i < ncountries; ++i) {
    const auto cc = c.U16();
    if (!IsIsoCountry(UnpackCountry(cc))) {
      return fail("country " + std::to_string(i) + " is not an ISO 3166-1 alpha-2 code");
    }
    if (!countries.empty() && cc <= countries.back()) {
      return fail("country " + std::to_string(i) + " (" + UnpackCountry(cc) +
                  ") out of order: the list must be sorted without repeats");
    }
    countries.push_back(cc);
  }
  std::vector<bool> used(countries.size(), false);
  auto country = [&](std::uint16_t idx, const char* family, std::uint32_t rec, std::uint16_t* out) {
    if (idx >= countries.size()) {
      if (error) {
        *error = std::string(family) + " record " + std::to_string(rec) + ": country index " +
                 std::to_string(idx) + " out of range";
      }
      return false;
    }
    *out = countries[idx];
    used[idx] = true;
    return true;
  };
  if (!c.Need(7ull * n4, std::to_string(n4) + " IPv4 records")) return std::nullopt;
  t.v4_.reserve(n4);
  for (std::uint32_t i = 0; i < n4; ++i) {
    TableEntry e;
    const auto a = c.Bytes(4);
    std::memcpy(e.prefix.addr.data(), a.data(), 4);
    e.prefix.len = c.U8();
    if (e.prefix.len > 32 || !ZeroPastLen(e.prefix)) {
      return fail("IPv4 record " + std::to_string(i) + ": invalid prefix " + e.prefix.ToString());
    }
    if (!country(c.U16(), "IPv4", i, &e.country)) return std::nullopt;
    if (!t.v4_.empty() && !(t.v4_.back().prefix < e.prefix)) {
      return fail("IPv4 record " + std::to_string(i) + ": not sorted or prefix repeated");
    }
    t.v4_.push_back(e);
  }
  for (std::uint32_t i = 0; i < n6; ++i) {
    TableEntry e;
    e.prefix.v6 = true;
    if (!c.Need(1, "IPv6 record " + std::to_string(i))) return std::nullopt;
    e.prefix.len = c.U8();
    if (e.prefix.len > 128) {
      return fail("IPv6 record " + std::to_string(i) + ": prefix length " +
                  std::to_string(e.prefix.len) + " > 128");
    }
    const std::size_t nb = (e.prefix.len + 7u) / 8u;
    if (!c.Need(nb + 2, "IPv6 record " + std::to_string(i))) return std::nullopt;
    const auto a = c.Bytes(nb);
    std::memcpy(e.prefix.addr.data(), a.data(), nb);
    if (!ZeroPastLen(e.prefix)) {
      return fail("IPv6 record " + std::to_string(i) + ": host bits set in " + e.prefix.ToString());
    }
    if (!country(c.U16(), "IPv6", i, &e.country)) return std::nullopt;
    if (!t.v6_.empty() && !(t.v6_.back().prefix < e.prefix)) {
      return fail("IPv6 record " + std::to_string(i) + ": not sorted or prefix repeated");
    }
    t.v6_.push_back(e);
  }
  for (std::size_t i = 0; i < used.size(); ++i) {
    if (!used[i]) {
      return fail("country " + std::to_string(i) + " (" + UnpackCountry(countries[i]) +
                  ") has no prefix: the list must name only countries in use");
    }
  }
  if (c.pos() != bytes.size() - SHA256_DIGEST_LENGTH) {
    return fail("trailing bytes after the IPv6 records at byte " + std::to_string(c.pos()));
  }
  t.Finish();
  return t;
}

bool JurisdictionTable::Save(const std::filesystem::path& path, std::string* error) const {
  // Shipped data, read by everyone: 0644.
  try {
    base::WriteFileAtomic(path, Serialize(), 0644);
    return true;
  } catch (const base::Error& e) {
    if (error) *error = e.what();
    return false;
  }
}

std::optional<JurisdictionTable> JurisdictionTable::Load(const std::filesystem::path& path,
                                                         std::string* error) {
  std::string err;
  auto bytes = base::TryReadFileText(path, &err);
  if (!bytes) {
    if (error) *error = path.string() + ": " + err;
    return std::nullopt;
  }
  auto t = Deserialize(*bytes, &err);
  if (!t && error) *error = path.string() + ": " + err;
  return t;
}

std::optional<TableLookup> JurisdictionTable::Lookup(const IpPrefix& a) const {
  const auto& entries = a.v6 ? v6_ : v4_;
  for (const auto len : a.v6 ? lengths6_ : lengths4_) {
    const IpPrefix key = Masked(a, len);
    const auto it =
        std::lower_bound(entries.begin(), entries.end(), key,
                         [](const TableEntry& e, const IpPrefix& k) { return e.prefix < k; });
    if (it == entries.end() || it->prefix != key) continue;
    TableLookup r;
    r.country = UnpackCountry(it->country);
    r.eu = IsEu(r.country);
    r.eea = IsEea(r.country);
    r.matched = key;
    return r;
  }
  return std::nullopt;
}

std::optional<TableLookup> JurisdictionTable::Lookup(std::string_view address) const {
  auto a = ParseAddress(address);
  if (!a) return std::nullopt;
  return Lookup(*a);
}

std::vector<std::string> JurisdictionTable::Countries() const {
  // Deduplicated on the packed codes (a world table has ~240,000 entries and ~240 countries).
  std::bitset<1u << 16> seen;
  for (const auto* v : {&v4_, &v6_}) {
    for (const auto& e : *v) seen.set(e.country);
  }
  std::vector<std::string> out;
  for (std::size_t c = 0; c < seen.size(); ++c)
    if (seen.test(c)) out.push_back(UnpackCountry(static_cast<std::uint16_t>(c)));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace sovguard::policy
