# Warnings everywhere; a Debug build carries AddressSanitizer and UndefinedBehaviorSanitizer.
add_compile_options(-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
                    -Wnon-virtual-dtor -Wold-style-cast -Wnull-dereference
                    -Wno-missing-field-initializers)  # designated initializers rely on defaults
# Generated protobuf/gRPC code is not ours to fix; it is compiled with its own relaxed flags.
set(SOVGUARD_GENERATED_CODE_FLAGS -Wno-conversion -Wno-shadow -Wno-old-style-cast -Wno-pedantic
                                  -Wno-null-dereference -Wno-unused-parameter)

option(SOVGUARD_SANITIZE "Build with ASan+UBSan (default in Debug)" OFF)
if(CMAKE_BUILD_TYPE STREQUAL "Debug" OR SOVGUARD_SANITIZE)
  set(_san -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_compile_options(${_san})
  add_link_options(${_san})
endif()

option(SOVGUARD_WERROR "Treat warnings as errors" OFF)
if(SOVGUARD_WERROR)
  add_compile_options(-Werror)
endif()

# Fuzzing build (.ci/fuzz.sh): clang, every library instrumented for coverage, sanitizers on.
option(SOVGUARD_FUZZ "Build libFuzzer targets (needs clang)" OFF)
if(SOVGUARD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SOVGUARD_FUZZ=ON needs clang (-DCMAKE_CXX_COMPILER=clang++-16)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

# mold, where installed (.ci/install-deps.sh installs it), links the hundred-odd sanitized test
# executables several times faster than the default ld.bfd; the result is the same program.
find_program(SOVGUARD_MOLD mold)
if(SOVGUARD_MOLD)
  add_link_options(-fuse-ld=mold)
endif()
