// sovguard-verify --html, rendered by the real headless Chromium (Debian's `chromium`): a fleet
// report of a passing and a failing node (real swtpm evidence, verified in-process) and an
// unreachable one. The failing node's evidence is an attacker's: its node, guest, dataset,
// policy and tamper names carry markup; the page must show them as text and run nothing.
//
// Chromium runs without network (a fresh network namespace: nothing can leave), with a private
// HOME, TMPDIR and profile in a temp dir removed afterwards, and must leave no process behind.
// The screenshot is kept in the build tree (printed path) for CI to keep as an artifact.
//
// Above the fold, measured rather than assumed: a copy of the page with a probe script appended
// (test code, never part of the product page; the copy's CSP also allows scripts carrying the
// probe's nonce, so a script smuggled in by the evidence stays blocked there too) asks Chromium's
// layout for the bounding boxes of the failing-check summary in a 1280x800 window and writes
// them into the DOM, which --dump-dom prints. The fold is the window's innerHeight (657 px of
// the 800: headless Chromium keeps room for browser UI), stricter than 800.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "attestation/eventlog/cel.h"
#include "attestation/evidence/evidence.h"
#include "attestation/evidence/format.h"
#include "attestation/manifest/manifest.h"
#include "attestation/measure/platform.h"
#include "attestation/verify/html_report.h"
#include "attestation/verify/verifier.h"
#include "attestation/verify/verify_cli.h"
#include "base/openssl.h"
#include "tests/attestation/swtpm_fixture.h"
#include "tests/verify/evidence_fixture.h"

namespace sovguard::attestation {
namespace {

namespace ts = test_support;

// Attacker-chosen names: each tries to leave its context (text, attribute, SVG, title).
const std::string kEvilNode = "node\"'><script>alert('node')</script>";
const std::string kEvilGuest =
    "</svg></title><script>alert(1)</script>\"'<img src=x onerror=alert(2)>";
const std::string kEvilDataset = "\"><script>alert(3)</script><a href='javascript:alert(4)'>x</a>";
const std::string kEvilPolicy = "</text><script src=https://203.0.113.7/x.js></script>";
const std::string kEvilTamper = "<iframe src=//203.0.113.7/></iframe>";

std::string S(std::span<const uint8_t> b) {
  return std::string(b.begin(), b.end());
}

v1::EnforcementSnapshot Snapshot(const std::string& node, const std::string& guest,
                                 const std::string& dataset) {
  auto s = ts::NodeSnapshot(node, guest);
  s.set_policy_bundle_id("bundle-1");
  s.mutable_guests(0)->mutable_datasets(0)->set_dataset(dataset);
  return s;
}

struct Fleet {
  ts::Swtpm swtpm;
  ts::TempDir tmp;
  Bytes nonce = {'h', 't', 'm', 'l', '-', 'r', 'e', 'p', 'o', 'r', 't', '-', 'n', 'o', 'n', 'c'};
  v1::Evidence pass_ev, fail_ev;
  verify::Report pass, fail;
  verify::Options pass_opts, fail_opts;
  Fleet() {
    tpm::Tpm tpm(swtpm.tcti());
    base::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
    const auto envelope = ts::SignManifest(
        ts::TestManifest("html-report", {{"qemu",
                                          "8.2",
                                          "Faraway Hypervisors Inc",
                                          "US",
                                          "GPL-2.0-only",
                                          {{"/usr/bin/qemu-system-x86_64", Sha256("qemu")}}}}),
        key.get());
    evidence::EvidenceConfig cfg;
    cfg.uefi_log = tmp.path() / "none";
    cfg.ima_log = tmp.path() / "none";
    // The passing node (PCR 13): started, policy applied, vm1 covered, later released.
    {
      measure::MeasurementLog log(tpm, measure::MeasureConfig{tmp.path() / "pass", 13});
      ts::MeasureDaemonStart(log);
      ts::MeasurePolicyAndGuest(log, "vm0");
      measure::MeasureGuest(log, ts::GuestUuid("vm0"), false);
      measure::MeasureGuest(log, ts::GuestUuid("vm1"), true);
      cfg.node = "node-pass";
      evidence::EvidenceBuilder b(tpm, log, cfg);
      pass_ev = b.Build(nonce, Snapshot("node-pass", "vm1", "patients-eu"));
    }
    // The attacker's node (PCR 11): its names carry markup; QEMU from a US supplier; a tamper
    // finding and a downgrade while its guest runs.
    {
      measure::MeasurementLog log(tpm, measure::MeasureConfig{tmp.path() / "fail", 11});
      ts::MeasureDaemonStart(log, /*bpf_object=*/false);
      log.Measure(cel::EventKind::kQemuBinary, "/usr/bin/qemu-system-x86_64", Sha256("qemu"));
      ts::MeasurePolicyAndGuest(log, "evil", kEvilPolicy);
      const std::string found = "tc filter <b>missing</b>";
      log.MeasureBytes(cel::EventKind::kEnforcementState, "tamper:" + kEvilTamper,
                       std::span(reinterpret_cast<const uint8_t*>(found.data()), found.size()),
                       found);
      measure::MeasureMechanismDowngraded(log, "storage-network", "cgroup/connect4+connect6",
                                          "none", "cgroup detached");
      cfg.node = kEvilNode;
      evidence::EvidenceBuilder b(tpm, log, cfg);
      auto snap = Snapshot(kEvilNode, "evil", kEvilDataset);
      snap.mutable_guests(0)->set_name(kEvilGuest);
      fail_ev = b.Build(nonce, snap);
    }
    for (auto* o : {&pass_opts, &fail_opts}) {
      o->nonce = nonce;
      o->manifest_envelope = envelope;
      o->manifest_key_pem = ts::PublicPem(key.get());
      o->waivers = {"software-tpm", "boot-log"};
      o->policy_digest = ts::TestPolicyDigest();
      o->observe = true;
    }
    pass_opts.ak_pub_pem = pass_ev.ak().public_pem();
    fail_opts.ak_pub_pem = fail_ev.ak().public_pem();
    fail_opts.sovguard_pcr = 11;
    pass = verify::Verify(pass_ev, pass_opts);
    fail = verify::Verify(fail_ev, fail_opts);
  }
};
Fleet* fleet = nullptr;

// Where the pages and screenshots stay for CI to keep (the build tree, not a temp dir).
std::filesystem::path ArtifactDir() {
  const auto d = std::filesystem::path(SOVGUARD_BINARY_DIR) / "test-artifacts" / "html-report";
  std::filesystem::create_directories(d);
  return d;
}

// Processes whose command line mentions `marker` (Chromium's helpers carry the profile path).
std::vector<pid_t> ProcessesMentioning(const std::string& marker) {
  std::vector<pid_t> pids;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream f(e.path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (cmd.find(marker) != std::string::npos) pids.push_back(std::stoi(name));
  }
  return pids;
}

// Headless Chromium on `page` with a private profile, HOME and TMPDIR, in a new network namespace;
// returns its output (stdout and stderr). Fails the test if any of its processes outlives it.
std::string Chromium(const std::filesystem::path& page, const std::vector<std::string>& what) {
  ts::TempDir home;
  const std::string h = home.path().string();
  std::vector<std::string> argv = {"unshare"};
  if (::geteuid() != 0) argv.insert(argv.end(), {"--user", "--map-root-user"});
  argv.insert(argv.end(),
              {"--net", "env", "-i", "PATH=/usr/bin:/bin", "HOME=" + h, "TMPDIR=" + h,
               "XDG_CONFIG_HOME=" + h + "/config", "XDG_CACHE_HOME=" + h + "/cache",
               "XDG_RUNTIME_DIR=" + h, "timeout", "-k", "5", "60",
               // The browser itself: the /usr/bin/chromium wrapper adds Debian's defaults (remote
               // extensions, API keys for Google services), which a test has no use for.
               "/usr/lib/chromium/chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--user-data-dir=" + h + "/profile", "--no-first-run",
               "--no-default-browser-check", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-extensions",
               "--disable-default-apps", "--disable-crash-reporter", "--disable-breakpad",
               "--log-level=3", "--window-size=1280,800"});
  argv.insert(argv.end(), what.begin(), what.end());
  argv.push_back("file://" + page.string());
  const auto r = ts::Run(argv);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // Its helpers (zygote, crashpad handler) exit after the browser: bounded wait, then none left.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto left = ProcessesMentioning(h);
  while (!left.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    left = ProcessesMentioning(h);
  }
  EXPECT_TRUE(left.empty()) << left.size() << " Chromium processes outlived the browser";
  for (pid_t p : left) ::kill(p, SIGKILL);  // ours: leave the host clean even when failing
  return r.output;
}

// The serialized DOM in Chromium's --dump-dom output.
std::string Dom(const std::string& output) {
  const size_t b = output.find("<!DOCTYPE html>"), e = output.rfind("</html>");
  if (b == std::string::npos || e == std::string::npos || e < b) return {};
  return output.substr(b, e + 7 - b);
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

class HtmlReport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { fleet = new Fleet; }
  static void TearDownTestSuite() {
    delete fleet;
    fleet = nullptr;
  }
  static std::vector<verify::HtmlNode> Nodes() {
    return {{"node-pass.example:7443", &fleet->pass, ""},
            {"node-evil.example:7443", &fleet->fail, ""},
            {"localhost:1", nullptr, "GetIdentity: failed to connect to all addresses"}};
  }
};

TEST_F(HtmlReport, VerdictsAreTheVerifiers) {
  // The fixture's premise: one node passes, the attacker's fails for what it did.
  ASSERT_TRUE(fleet->pass.passed()) << verify::RenderText(fleet->pass);
  ASSERT_FALSE(fleet->fail.passed());
  EXPECT_EQ(fleet->fail.Find("enforcement.continuity")->reason,
            verify::kReasonEnforcementInterrupted)
      << verify::RenderText(fleet->fail);
  EXPECT_EQ(fleet->fail.Find("manifest.jurisdiction")->reason, verify::kReasonSupplierJurisdiction)
      << verify::RenderText(fleet->fail);
  // What the report draws, from the authenticated parts only.
  ASSERT_TRUE(fleet->fail.observed && fleet->fail.observed->cel_authentic);
  EXPECT_TRUE(fleet->fail.observed->snapshot_bound);
  EXPECT_TRUE(fleet->fail.observed->manifest_authentic);
  using K = verify::Observations::Kind;
  std::vector<K> kinds;
  for (const auto& e : fleet->fail.observed->timeline) kinds.push_back(e.kind);
  EXPECT_EQ(kinds, (std::vector<K>{K::kDaemonStart, K::kDowngrade, K::kPolicyApplied,
                                   K::kGuestCovered, K::kTamper, K::kDowngrade}));
  ASSERT_EQ(fleet->fail.observed->components.size(), 2u);
  EXPECT_EQ(fleet->fail.observed->components[1].jurisdiction, "US");
  EXPECT_FALSE(fleet->fail.observed->components[1].allowed);
  // A forged log (one record altered) draws nothing: the timeline needs an authentic log.
  auto forged = fleet->fail_ev;
  auto recs = cel::DecodeLog(Bytes(forged.logs().cel().begin(), forged.logs().cel().end()));
  recs.pop_back();
  forged.mutable_logs()->set_cel(S(cel::EncodeLog(recs)));
  const auto r = verify::Verify(forged, fleet->fail_opts);
  ASSERT_TRUE(r.observed);
  EXPECT_FALSE(r.observed->cel_authentic);
  EXPECT_TRUE(r.observed->timeline.empty());
  EXPECT_TRUE(r.observed->components.empty());
  const std::string page = verify::RenderHtml({{"forged", &r, ""}}, "now");
  EXPECT_NE(page.find("No timeline: sovguard's log is not authentic (eventlog.cel.replay "
                      "CEL_REPLAY_MISMATCH)"),
            std::string::npos);
  EXPECT_EQ(page.find("<svg"), std::string::npos);
}

TEST_F(HtmlReport, EscapingIsTotal) {
  EXPECT_EQ(verify::HtmlEscape("<a href=\"x\" b='y'>&amp;</a>"),
            "&lt;a href=&quot;x&quot; b=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;");
  // Invalid UTF-8, controls, a right-to-left override (which would make "gpj.exe" read
  // "exe.jpg"), and valid multi-byte text kept as is.
  EXPECT_EQ(verify::HtmlEscape(std::string("a\xff\xc0\xafz\x01\x7f\t\n\0", 10)),
            "a\uFFFD\uFFFD\uFFFDz\uFFFD\uFFFD\t\n\uFFFD");
  EXPECT_EQ(verify::HtmlEscape("x\u202Egpj.exe"), "x[U+202E]gpj.exe");
  EXPECT_EQ(verify::HtmlEscape("Zürich 東京"), "Zürich 東京");
  // The attacker's page: no markup of theirs, every name present escaped.
  const std::string page = verify::RenderHtml(Nodes(), "2026-12-07T05:00:00Z");
  EXPECT_EQ(Lower(page).find("<script"), std::string::npos);
  EXPECT_EQ(Lower(page).find("<iframe"), std::string::npos);
  EXPECT_EQ(Lower(page).find("<img"), std::string::npos);
  for (const auto& evil : {kEvilNode, kEvilGuest, kEvilDataset, kEvilPolicy, kEvilTamper}) {
    EXPECT_EQ(page.find(evil), std::string::npos) << evil;
    EXPECT_NE(page.find(verify::HtmlEscape(evil)), std::string::npos) << evil;
  }
  // Self-contained: no tag loads or links anything but a place in the page (the attacker's
  // "src=" and "https://" are in the text, escaped), the style sheet imports nothing.
  const std::regex tag("<[a-zA-Z][^>]*>");
  size_t tags = 0;
  for (auto it = std::sregex_iterator(page.begin(), page.end(), tag); it != std::sregex_iterator();
       ++it, ++tags) {
    const std::string t = Lower(it->str());
    EXPECT_EQ(t.find(" src="), std::string::npos) << t;
    EXPECT_EQ(t.find(" on"), std::string::npos) << t;
    if (const size_t h = t.find(" href="); h != std::string::npos) {
      EXPECT_EQ(t.substr(h, 8), " href=\"#") << t;
    }
  }
  EXPECT_GT(tags, 100u);
  const std::string css =
      page.substr(page.find("<style>"), page.find("</style>") - page.find("<style>"));
  EXPECT_EQ(css.find("url("), std::string::npos);
  EXPECT_EQ(css.find("@import"), std::string::npos);
}

// The single-evidence command line writes the page too (and only when asked).
TEST_F(HtmlReport, CommandLineWritesThePage) {
  const auto dir = fleet->tmp.path();
  WriteFileAtomic(dir / "ev.json", evidence::ToJson(fleet->fail_ev));
  WriteFileAtomic(dir / "ak.pem", fleet->fail_ev.ak().public_pem());
  WriteFileAtomic(dir / "manifest.dsse.json", *fleet->fail_opts.manifest_envelope);
  WriteFileAtomic(dir / "manifest.pub", *fleet->fail_opts.manifest_key_pem);
  const auto html = ArtifactDir() / "single-node.html";
  std::filesystem::remove(html);
  std::ostringstream out, err;
  const int rc = verify::RunVerifyCli(
      {"--nonce", ToHex(fleet->nonce), "--ak-pub", (dir / "ak.pem").string(), "--manifest",
       (dir / "manifest.dsse.json").string(), "--manifest-key", (dir / "manifest.pub").string(),
       "--sovguard-pcr", "11", "--waive", "software-tpm,boot-log", "--policy-digest",
       ToHex(ts::TestPolicyDigest()), "--html", html.string(), (dir / "ev.json").string()},
      out, err);
  EXPECT_EQ(rc, verify::kExitFail) << out.str() << err.str();
  const auto b = ReadFileBytes(html);
  const std::string page(b.begin(), b.end());
  EXPECT_NE(page.find("ENFORCEMENT_INTERRUPTED"), std::string::npos);
  EXPECT_NE(page.find("SUPPLIER_JURISDICTION_NOT_ALLOWED"), std::string::npos);
  EXPECT_NE(page.find("Faraway Hypervisors Inc"), std::string::npos);
  EXPECT_NE(page.find("<svg class=\"timeline\""), std::string::npos);
  EXPECT_NE(page.find(verify::HtmlEscape(kEvilGuest)), std::string::npos);
  // --html with no value is a usage error.
  std::ostringstream o2, e2;
  EXPECT_EQ(verify::RunVerifyCli(
                {"--nonce", ToHex(fleet->nonce), (dir / "ev.json").string(), "--html"}, o2, e2),
            verify::kExitUsage);
}

TEST_F(HtmlReport, ChromiumRendersTheFleetWithFailuresAboveTheFold) {
  const auto dir = ArtifactDir();
  const auto page_path = dir / "fleet-report.html";
  const std::string page = verify::RenderHtml(Nodes(), "2026-12-07T05:00:00Z");
  WriteFileAtomic(page_path, page);

  // 1. The page as an auditor opens it: a screenshot of the first 1280x800.
  const auto png = dir / "fleet-report.png";
  std::filesystem::remove(png);
  Chromium(page_path, {"--screenshot=" + png.string()});
  ASSERT_TRUE(std::filesystem::exists(png)) << "no screenshot";
  const auto shot = ReadFileBytes(png);
  ASSERT_GT(shot.size(), 24u);
  EXPECT_EQ(S(std::span(shot).first(8)), "\x89PNG\r\n\x1a\n");
  EXPECT_EQ(GetBe(shot, 16, 4), 1280u);  // IHDR width, height
  EXPECT_EQ(GetBe(shot, 20, 4), 800u);
  std::cout << "screenshot: " << png.string() << "\n";

  // 2. Its DOM after parsing: the verdicts and failing codes render; no element of the evidence's
  // markup exists (the serializer would print it as a tag), its text is there as text.
  const std::string dom = Dom(Chromium(page_path, {"--dump-dom"}));
  ASSERT_FALSE(dom.empty()) << "no DOM dumped";
  for (const char* s : {"FAIL", "PASS", "ERROR", "ENFORCEMENT_INTERRUPTED",
                        "SUPPLIER_JURISDICTION_NOT_ALLOWED", "GetIdentity: failed to connect"})
    EXPECT_NE(dom.find(s), std::string::npos) << s;
  EXPECT_EQ(Lower(dom).find("<script"), std::string::npos);
  EXPECT_EQ(Lower(dom).find("<iframe"), std::string::npos);
  EXPECT_EQ(Lower(dom).find("<img"), std::string::npos);
  EXPECT_NE(dom.find("&lt;/svg&gt;&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
            std::string::npos);

  // 3. Layout, measured by Chromium: the probe copy.
  std::string probed = page;
  const std::regex csp("<meta http-equiv=\"Content-Security-Policy\"[^>]*>");
  ASSERT_TRUE(std::regex_search(probed, csp));
  probed = std::regex_replace(
      probed, csp,
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src "
      "'unsafe-inline'; script-src 'nonce-sgprobe'\">");
  // (The attacker's guest name goes into the probe too: as a JS string whose "<" are escaped,
  // else its "</script>" ends the probe's own script and its alert() blocks Chromium.)
  std::string evil_js = nlohmann::json(kEvilGuest).dump();
  for (size_t at; (at = evil_js.find('<')) != std::string::npos;) evil_js.replace(at, 1, "\\u003c");
  const std::string probe = R"(<pre id="probe"></pre><script nonce="sgprobe">
(() => {
  const sum = document.getElementById('summary');
  const codes = [...sum.querySelectorAll('.code, .badge')];
  const bottom = Math.max(...codes.map(c => c.getBoundingClientRect().bottom));
  const evilGuest = )" + evil_js +
                            R"(;
  const r = {
    innerWidth: innerWidth, innerHeight: innerHeight,
    summaryTop: sum.getBoundingClientRect().top,
    codes: codes.length, codesBottom: bottom,
    summaryIsFirstSection: document.querySelector('main section') === sum,
    scripts: document.scripts.length,
    active: document.querySelectorAll('img,iframe,object,embed,a[href^="javascript"]').length,
    handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
    svgs: document.querySelectorAll('svg.timeline').length,
    guestInSvgText: [...document.querySelectorAll('svg text title')].some(t => t.textContent.includes(evilGuest)),
    guestInTable: [...document.querySelectorAll('table.guests td')].some(t => t.textContent === evilGuest),
  };
  document.getElementById('probe').textContent = 'PROBE' + JSON.stringify(r) + 'ENDPROBE';
})();
</script>)";
  const size_t body_end = probed.rfind("</body>");
  ASSERT_NE(body_end, std::string::npos);
  probed.insert(body_end, probe);
  const auto probe_path = dir / "fleet-report.probe.html";
  WriteFileAtomic(probe_path, probed);
  const std::string pdom = Dom(Chromium(probe_path, {"--dump-dom"}));
  const size_t b = pdom.find("PROBE{"), e = pdom.find("}ENDPROBE");
  ASSERT_TRUE(b != std::string::npos && e != std::string::npos) << pdom.substr(0, 2000);
  const auto r = nlohmann::json::parse(pdom.substr(b + 5, e + 1 - (b + 5)));
  std::cout << "layout: " << r.dump() << "\n";
  EXPECT_EQ(r["innerWidth"], 1280);
  ASSERT_GT(r["innerHeight"].get<double>(), 0);
  EXPECT_TRUE(r["summaryIsFirstSection"].get<bool>());
  // Two nodes did not pass: their badges and the failing codes (at least the two causes).
  EXPECT_GE(r["codes"].get<int>(), 4);
  EXPECT_LT(r["summaryTop"].get<double>(), r["innerHeight"].get<double>());
  EXPECT_LE(r["codesBottom"].get<double>(), r["innerHeight"].get<double>())
      << "a failing check is below the fold";
  EXPECT_EQ(r["scripts"], 1) << "a script besides the probe";
  EXPECT_EQ(r["active"], 0);
  EXPECT_EQ(r["handlers"], 0);
  EXPECT_EQ(r["svgs"], 2);
  EXPECT_TRUE(r["guestInSvgText"].get<bool>());
  EXPECT_TRUE(r["guestInTable"].get<bool>());
}

}  // namespace
}  // namespace sovguard::attestation
