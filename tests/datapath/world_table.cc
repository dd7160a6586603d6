#include "tests/datapath/world_table.h"

#include <arpa/inet.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

namespace sovguard::net::testing {
namespace {

const std::set<std::string> kEuEea = {"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR",
                                      "DE", "GR", "HU", "IE", "IT", "LV", "LT", "LU", "MT", "NL",
                                      "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO"};

std::string Trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

template <class F>
void ForEachCidr(const std::filesystem::path& file, F&& f) {
  std::ifstream in(file);
  if (!in) return;  // some countries have no IPv6 (or IPv4) delegations
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    line = Trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    const auto slash = line.find('/');
    if (slash == std::string::npos)
      throw std::runtime_error(file.string() + ":" + std::to_string(n) + ": expected CIDR, got '" +
                               line + "'");
    f(line.substr(0, slash), std::stoi(line.substr(slash + 1)), n);
  }
}

}  // namespace

bool IsEuEea(const std::string& cc) {
  return kEuEea.count(cc) != 0;
}

std::string DefaultWorldTableDir() {
  return std::string(SOVGUARD_SHARED_DATA_DIR) + "/country-ip-blocks";
}

std::uint16_t WorldTable::ClassOf(const std::string& cc) const {
  auto it = std::find(country_of_class.begin(), country_of_class.end(), cc);
  if (it == country_of_class.end()) throw std::runtime_error("no class for country " + cc);
  return static_cast<std::uint16_t>(it - country_of_class.begin());
}

WorldTable LoadWorldTable(const std::string& dir) {
  WorldTable t;
  auto& p = t.policy;
  p.datasets.push_back({.id = "eu-eea", .index = 0, .mode = policy::Mode::kEnforce});
  p.datasets.push_back({.id = "de-only", .index = 1, .mode = policy::Mode::kAudit});
  p.classes.push_back(sg_class{});
  t.country_of_class.push_back("");
  std::vector<std::filesystem::path> countries;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(dir) / "country"))
    if (e.is_directory()) countries.push_back(e.path());
  std::sort(countries.begin(), countries.end());
  if (countries.empty()) throw std::runtime_error(dir + "/country: no countries");
  for (const auto& c : countries) {
    std::string cc = c.filename().string();
    std::transform(cc.begin(), cc.end(), cc.begin(), ::toupper);
    if (cc.size() != 2) continue;
    const auto id = static_cast<std::uint16_t>(p.classes.size());
    sg_class cls{};
    cls.country = static_cast<std::uint16_t>((cc[0] << 8) | cc[1]);
    if (IsEuEea(cc)) cls.allowed_datasets |= 1;
    if (cc == "DE") cls.allowed_datasets |= 2;
    p.classes.push_back(cls);
    t.country_of_class.push_back(cc);
    ForEachCidr(c / "ipv4-aggregated.txt", [&](const std::string& a, int len, int line) {
      in_addr addr{};
      if (inet_pton(AF_INET, a.c_str(), &addr) != 1 || len < 0 || len > 32)
        throw std::runtime_error((c / "ipv4-aggregated.txt").string() + ":" + std::to_string(line) +
                                 ": bad IPv4 prefix");
      p.ipv4.push_back(
          {.addr = ntohl(addr.s_addr), .len = static_cast<std::uint8_t>(len), .class_id = id});
    });
    ForEachCidr(c / "ipv6-aggregated.txt", [&](const std::string& a, int len, int line) {
      policy::Ipv6Prefix e{};
      if (inet_pton(AF_INET6, a.c_str(), e.addr.data()) != 1 || len < 0 || len > 128)
        throw std::runtime_error((c / "ipv6-aggregated.txt").string() + ":" + std::to_string(line) +
                                 ": bad IPv6 prefix");
      e.len = static_cast<std::uint8_t>(len);
      e.class_id = id;
      p.ipv6.push_back(e);
    });
  }
  std::sort(p.ipv4.begin(), p.ipv4.end(), [](const auto& a, const auto& b) {
    return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
  });
  std::sort(p.ipv6.begin(), p.ipv6.end(), [](const auto& a, const auto& b) {
    return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
  });
  return t;
}

void AddDocumentationRanges(WorldTable& t) {
  auto& p = t.policy;
  const auto exception_id = static_cast<std::uint16_t>(p.classes.size());
  sg_class ex{};
  ex.flags = SG_CLASS_EXCEPTION;
  ex.allowed_datasets = ~0ULL;  // listed by every dataset of the test policy
  p.classes.push_back(ex);
  t.country_of_class.push_back("");
  const auto de = t.ClassOf("DE");
  const auto us = t.ClassOf("US");
  p.ipv4.push_back({.addr = 0xC6336400, .len = 24, .class_id = de});            // 198.51.100.0/24
  p.ipv4.push_back({.addr = 0xCB007100, .len = 24, .class_id = us});            // 203.0.113.0/24
  p.ipv4.push_back({.addr = 0xC0000200, .len = 24, .class_id = exception_id});  // 192.0.2.0/24
  auto v6 = [](std::uint16_t third, std::uint8_t len, std::uint16_t cls) {
    policy::Ipv6Prefix e{};
    e.addr = {0x20,
              0x01,
              0x0d,
              0xb8,
              static_cast<std::uint8_t>(third >> 8),
              static_cast<std::uint8_t>(third)};
    e.len = len;
    e.class_id = cls;
    return e;
  };
  p.ipv6.push_back(v6(0x00e0, 48, de));
  p.ipv6.push_back(v6(0x00f0, 48, us));
  p.ipv6.push_back(v6(0x0001, 64, exception_id));
  std::sort(p.ipv4.begin(), p.ipv4.end(), [](const auto& a, const auto& b) {
    return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
  });
  std::sort(p.ipv6.begin(), p.ipv6.end(), [](const auto& a, const auto& b) {
    return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
  });
}

}  // namespace sovguard::net::testing
