#include "attestation/cli/manifest_cli.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>

#include "attestation/cli/cli_command.h"
#include "attestation/tpm/tpm.h"
#include "base/file.h"

extern char** environ;

namespace sovguard::attestation::cli {
namespace {

constexpr const char* kUsage =
    "usage: sovguardctl manifest scan [--sovguardd PATH] [--bpf-dir DIR] [--id ID] [--issuer "
    "NAME]\n"
    "                                 [--jurisdiction CC] [--boot-pcrs-from TCTI] [-o FILE]\n"
    "       sovguardctl manifest sign --key KEY.pem [-o FILE] DRAFT\n"
    "       sovguardctl manifest verify --pub PUB.pem ENVELOPE\n"
    "  scan drafts a manifest of the files sovguardd measures on this host (dpkg owner, version,\n"
    "  supplier, licence, SHA-256): review it, fill in supplier jurisdictions, then sign it.\n";

// Runs argv (PATH lookup, no shell) and returns its standard output, or nullopt if it failed.
std::optional<std::string> Capture(const std::vector<std::string>& argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw AttestationError("pipe: " + std::string(strerror(errno)));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return std::nullopt;
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  return out;
}

struct Package {
  std::string name, version, supplier, license;
};

// The dpkg package owning `path` (also through symlinks and the merged /usr), if any.
std::optional<Package> OwningPackage(const std::filesystem::path& path) {
  std::vector<std::filesystem::path> candidates = {path};
  std::error_code ec;
  auto canon = std::filesystem::canonical(path, ec);
  if (!ec && canon != path) candidates.push_back(canon);
  for (const auto& p : std::vector(candidates)) {
    const auto s = p.string();
    if (s.rfind("/usr/", 0) == 0) candidates.push_back(s.substr(4));  // /usr/sbin -> /sbin
  }
  for (const auto& p : candidates) {
    auto owner = Capture({"dpkg-query", "-S", p.string()});
    if (!owner) continue;
    // "pkg[:arch][, pkg2]: /path"; diversions ("diversion by ...") are skipped.
    std::string line = owner->substr(0, owner->find('\n'));
    if (line.rfind("diversion", 0) == 0) continue;
    auto colon = line.find(": ");
    if (colon == std::string::npos) continue;
    std::string pkg = line.substr(0, colon);
    pkg = pkg.substr(0, pkg.find(','));
    auto info = Capture(
        {"dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Origin}\t${Maintainer}", pkg});
    if (!info) continue;
    Package out;
    std::vector<std::string> f;
    size_t start = 0;
    for (;;) {
      auto tab = info->find('\t', start);
      f.push_back(info->substr(start, tab == std::string::npos ? std::string::npos : tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    if (f.size() < 4) continue;
    out.name = f[0];
    out.version = f[1];
    out.supplier = !f[2].empty() ? f[2] : f[3];
    // Machine-readable debian/copyright: the first License: field (the package's main licence).
    std::ifstream copyright("/usr/share/doc/" + out.name + "/copyright");
    for (std::string l; std::getline(copyright, l);) {
      if (l.rfind("License:", 0) == 0) {
        out.license = l.substr(8);
        out.license.erase(0, out.license.find_first_not_of(" \t"));
        break;
      }
    }
    return out;
  }
  return std::nullopt;
}

void WriteOut(const std::string& path, const std::string& text, std::ostream& out) {
  if (path.empty() || path == "-")
    out << text;
  else
    WriteFileAtomic(path, text);
}

}  // namespace

manifest::Manifest ScanHost(const ScanOptions& o) {
  manifest::Manifest m;
  m.id = o.id;
  m.issued_at = NowRfc3339();
  m.issuer = o.issuer;
  // The same files, in the same way, as measure::MeasurePlatform.
  std::vector<std::filesystem::path> files;
  auto self = o.paths.self;
  std::error_code ec;
  if (auto resolved = std::filesystem::read_symlink(self, ec); !ec) self = resolved;
  files.push_back(self);
  files.push_back(o.paths.qemu);
  files.push_back(o.paths.libvirtd);
  std::vector<std::filesystem::path> drivers;
  for (const auto& e : std::filesystem::directory_iterator(o.paths.libvirt_drivers, ec))
    if (e.path().extension() == ".so") drivers.push_back(e.path());
  std::sort(drivers.begin(), drivers.end());
  files.insert(files.end(), drivers.begin(), drivers.end());
  auto kernel = o.paths.kernel_image;
  if (kernel.empty()) {
    utsname u{};
    if (::uname(&u) == 0)
      kernel = std::filesystem::path("/boot") / (std::string("vmlinuz-") + u.release);
  }
  files.push_back(kernel);

  std::map<std::string, size_t> by_package;  // name -> index in m.components
  auto add = [&](const std::string& path, const Sha256Digest& digest,
                 const std::optional<Package>& pkg, const std::string& fallback_name) {
    const std::string name = pkg ? pkg->name : fallback_name;
    auto [it, inserted] = by_package.try_emplace(name, m.components.size());
    if (inserted) {
      manifest::Component c;
      c.name = name;
      c.version = pkg ? pkg->version : "";
      c.supplier = pkg ? pkg->supplier : "";
      c.license = pkg ? pkg->license : "";
      c.supplier_jurisdiction = o.jurisdiction;
      m.components.push_back(std::move(c));
    }
    m.components[it->second].files.push_back({path, digest});
  };
  for (const auto& f : files) {
    Sha256Digest d{};
    try {
      d = Sha256File(f);
    } catch (const AttestationError&) {
      continue;  // absent on this host: measured as absent, which no manifest approves
    }
    add(f.string(), d, OwningPackage(f), f.filename().string());
  }
  if (!o.bpf_dir.empty()) {
    std::vector<std::filesystem::path> objs;
    for (const auto& e : std::filesystem::recursive_directory_iterator(o.bpf_dir, ec)) {
      const auto n = e.path().filename().string();
      if (e.is_regular_file() && n.size() > 6 && n.ends_with(".bpf.o")) objs.push_back(e.path());
    }
    if (ec) throw AttestationError("--bpf-dir " + o.bpf_dir.string() + ": " + ec.message());
    std::sort(objs.begin(), objs.end());
    for (const auto& p : objs)
      add(std::filesystem::relative(p, o.bpf_dir).string(), Sha256File(p), std::nullopt,
          "sovguard-bpf");
  }
  Bytes cmdline;
  if (ReadFileIfExists(o.paths.kernel_cmdline, cmdline)) {
    std::string text(cmdline.begin(), cmdline.end());
    while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
    m.kernel_cmdlines.push_back(text);
  }
  if (!o.boot_pcrs_tcti.empty()) {
    tpm::Tpm tpm(o.boot_pcrs_tcti);
    const std::vector<uint32_t> pcrs = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    const auto values = tpm.PcrRead(pcrs);
    for (size_t i = 0; i < pcrs.size(); ++i) m.boot_pcrs[pcrs[i]].push_back(values[i]);
  }
  return m;
}

int RunManifestCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return RunCommand("sovguardctl manifest", kUsage, err, [&]() -> int {
    if (args.size() < 2) throw UsageError("missing subcommand");
    const std::string& sub = args[1];
    std::map<std::string, std::string> opts;
    std::vector<std::string> positional;
    for (size_t i = 2; i < args.size(); ++i) {
      if (args[i].size() > 1 && args[i][0] == '-') {
        if (i + 1 >= args.size()) throw UsageError("option " + args[i] + " needs a value");
        if (!opts.emplace(args[i], args[i + 1]).second)
          throw UsageError("option " + args[i] + " given twice");
        ++i;
      } else {
        positional.push_back(args[i]);
      }
    }
    auto allow = [&](std::initializer_list<std::string_view> known, size_t npos) {
      for (const auto& [k, v] : opts)
        if (std::find(known.begin(), known.end(), k) == known.end())
          throw UsageError("unknown option '" + k + "' for manifest " + sub);
      if (positional.size() != npos)
        throw UsageError("manifest " + sub + " takes " + std::to_string(npos) +
                         " file argument(s)");
    };
    auto get = [&](const std::string& k) {
      auto it = opts.find(k);
      return it == opts.end() ? std::string() : it->second;
    };
    if (sub == "scan") {
      allow({"--sovguardd", "--bpf-dir", "--id", "--issuer", "--jurisdiction", "--boot-pcrs-from",
             "-o"},
            0);
      ScanOptions so;
      so.paths.self = opts.contains("--sovguardd") ? get("--sovguardd") : "/usr/sbin/sovguardd";
      so.bpf_dir = get("--bpf-dir");
      if (opts.contains("--id")) so.id = get("--id");
      so.issuer = get("--issuer");
      so.jurisdiction = get("--jurisdiction");
      so.boot_pcrs_tcti = get("--boot-pcrs-from");
      const auto m = ScanHost(so);
      WriteOut(get("-o"), manifest::ToJson(m), out);
      size_t nfiles = 0;
      for (const auto& c : m.components) nfiles += c.files.size();
      err << "manifest scan: " << m.components.size() << " components, " << nfiles
          << " files; review suppliers, jurisdictions and licences, then `sovguardctl manifest "
             "sign`\n";
      return 0;
    }
    if (sub == "sign") {
      allow({"--key", "-o"}, 1);
      if (!opts.contains("--key")) throw UsageError("manifest sign needs --key");
      auto key = manifest::LoadPrivateKey(get("--key"));
      WriteOut(get("-o"), manifest::Sign(base::ReadFileText(positional[0]), key.get()), out);
      return 0;
    }
    if (sub == "verify") {
      allow({"--pub"}, 1);
      if (!opts.contains("--pub")) throw UsageError("manifest verify needs --pub");
      auto key = manifest::LoadPublicKey(get("--pub"));
      const auto m = manifest::VerifyEnvelope(base::ReadFileText(positional[0]), key.get());
      out << "manifest \"" << m.id << "\" by " << m.issuer << " (" << m.issued_at
          << "): signature OK (" << manifest::KeyId(key.get()) << "), " << m.components.size()
          << " components\n";
      return 0;
    }
    throw UsageError("unknown subcommand '" + sub + "'");
  });
}

}  // namespace sovguard::attestation::cli
