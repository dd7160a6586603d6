// The two ways a test may stop early, and how CI judges them (.ci/test.sh, .ci/skip-allowlist).
//
// SOVGUARD_SKIP_KERNEL_FEATURE(name, why) / SOVGUARD_SKIP_CPU_FEATURE(name, why): the host lacks a
//   feature the test exercises (BPF LSM, an instruction set). Skips, printing
//   "kernel-feature:<name>: why" (or "cpu-feature:..."); CI accepts the skip only when
//   "kernel-feature:<name>" is a line of .ci/skip-allowlist.
// SOVGUARD_REQUIRE(cond, what): a prerequisite the test set-up must provide (root, QEMU, the shared
//   data, a loop device). When it is missing the test fails if the environment variable CI is set
//   (to anything but "" or "false"), and elsewhere skips with "prerequisite: what", a skip CI
//   never accepts. `what` may be a stream expression: "x at " << path.
// Header-only, so tests that link nothing of the harness can use it. Each macro returns from the
// calling function (a void one: SetUp() or a TEST body), like GTEST_SKIP().
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string_view>

namespace sovguard::test {

inline bool InCi() {
  const char* ci = std::getenv("CI");  // NOLINT(concurrency-mt-unsafe): read before threads start
  return ci != nullptr && std::string_view(ci) != "" && std::string_view(ci) != "false";
}

}  // namespace sovguard::test

#define SOVGUARD_SKIP_KERNEL_FEATURE(name, why) \
  GTEST_SKIP() << "kernel-feature:" << (name) << ": " << why
#define SOVGUARD_SKIP_CPU_FEATURE(name, why) GTEST_SKIP() << "cpu-feature:" << (name) << ": " << why

#define SOVGUARD_REQUIRE(cond, what)                      \
  do {                                                    \
    if (!(cond)) {                                        \
      if (::sovguard::test::InCi()) {                     \
        GTEST_FAIL() << "missing prerequisite: " << what; \
      }                                                   \
      GTEST_SKIP() << "prerequisite: " << what;           \
    }                                                     \
  } while (false)
