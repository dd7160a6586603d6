# Test tiers, as ctest labels:
#   unit         no root, no kernel objects
#   kernel       root: loads BPF programs, BPF_PROG_TEST_RUN, netns/veth, cgroups
#   integration  root: real libvirtd + QEMU TCG guest, swtpm (fixtures start and stop them)
# A gtest GTEST_SKIP() prints "[  SKIPPED ]"; ctest then counts the test as skipped, not passed, and
# .ci/run-tests.sh fails CI unless the skip names a "kernel-feature:<name>" on .ci/skip-allowlist
# (tests/harness/require.h).
include(GoogleTest)
find_package(GTest REQUIRED)

# sovguard_add_gtest(NAME n TIER unit|kernel|integration SOURCES ... [LIBS ...] [FIXTURES ...] [TIMEOUT s])
function(sovguard_add_gtest)
  cmake_parse_arguments(T "" "NAME;TIER;TIMEOUT" "SOURCES;LIBS;FIXTURES" ${ARGN})
  if(NOT T_TIER MATCHES "^(unit|kernel|integration)$")
    message(FATAL_ERROR "sovguard_add_gtest(${T_NAME}): TIER must be unit, kernel or integration")
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${T_NAME} PRIVATE
    SOVGUARD_SOURCE_DIR="${PROJECT_SOURCE_DIR}" SOVGUARD_BINARY_DIR="${PROJECT_BINARY_DIR}"
    SOVGUARD_SHARED_DATA_DIR="${SOVGUARD_SHARED_DATA_DIR}")
  set(_props LABELS ${T_TIER} SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT ${T_TIMEOUT})
  if(T_FIXTURES)
    list(APPEND _props FIXTURES_REQUIRED "${T_FIXTURES}")
  endif()
  if(NOT T_TIER STREQUAL "unit")
    # Kernel and integration tests share kernel state (bpffs, netns names, libvirtd): one at a time.
    list(APPEND _props RESOURCE_LOCK host_kernel)
  endif()
  gtest_discover_tests(${T_NAME} TEST_PREFIX "${T_TIER}." DISCOVERY_TIMEOUT 60 PROPERTIES ${_props})
endfunction()

# Where the shared real-world inputs live (country-ip-blocks, odrl, eventlogs).
set(SOVGUARD_SHARED_DATA_DIR "${PROJECT_SOURCE_DIR}/../shared/data" CACHE PATH "shared/data beside the clone")

# Fuzz targets. With SOVGUARD_FUZZ=ON and clang, each is a libFuzzer binary `fuzz_<name>`; in every
# other build the same entry point is linked with a replay driver and its committed seed corpus runs
# as a unit test, so a crash once found stays a regression test.
# sovguard_add_fuzzer(NAME n SOURCES ... LIBS ... CORPUS dir)
function(sovguard_add_fuzzer)
  cmake_parse_arguments(F "" "NAME;CORPUS" "SOURCES;LIBS" ${ARGN})
  set(_t fuzz_${F_NAME})
  get_filename_component(F_CORPUS ${F_CORPUS} ABSOLUTE)
  if(SOVGUARD_FUZZ)
    add_executable(${_t} ${F_SOURCES})
    target_compile_options(${_t} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${_t} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${_t} PRIVATE ${F_LIBS})
    # .ci/fuzz.sh reads the seed corpus location from here.
    file(WRITE ${PROJECT_BINARY_DIR}/${_t}.corpus "${F_CORPUS}")
    # One target for all of them: .ci/fuzz.sh builds it, so make schedules every fuzzer's
    # libraries on all cores at once rather than one fuzzer after another.
    if(NOT TARGET sovguard_fuzzers)
      add_custom_target(sovguard_fuzzers)
    endif()
    add_dependencies(sovguard_fuzzers ${_t})
  else()
    add_executable(${_t} ${F_SOURCES} ${PROJECT_SOURCE_DIR}/tests/support/fuzz_replay_main.cc)
    target_link_libraries(${_t} PRIVATE ${F_LIBS})
    add_test(NAME unit.fuzz_corpus.${F_NAME} COMMAND ${_t} ${F_CORPUS})
    set_tests_properties(unit.fuzz_corpus.${F_NAME} PROPERTIES LABELS unit TIMEOUT 300)
  endif()
endfunction()
