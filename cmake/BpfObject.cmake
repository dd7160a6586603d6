# Kernel programs: clang -target bpf against a vmlinux.h generated from the running kernel's BTF,
# then `bpftool gen skeleton` so user space embeds the exact object it loads (and measures).
find_program(BPF_CLANG NAMES clang-16 clang REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)
set(SOVGUARD_VMLINUX_BTF "/sys/kernel/btf/vmlinux" CACHE FILEPATH "Kernel BTF used to generate vmlinux.h")
set(SOVGUARD_VMLINUX_H ${PROJECT_BINARY_DIR}/bpf/vmlinux.h)

add_custom_command(
  OUTPUT ${SOVGUARD_VMLINUX_H}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/bpf
  COMMAND ${BPFTOOL} btf dump file ${SOVGUARD_VMLINUX_BTF} format c > ${SOVGUARD_VMLINUX_H}.tmp
  COMMAND ${CMAKE_COMMAND} -E rename ${SOVGUARD_VMLINUX_H}.tmp ${SOVGUARD_VMLINUX_H}
  COMMENT "bpftool btf dump -> vmlinux.h")
add_custom_target(sovguard_vmlinux_h DEPENDS ${SOVGUARD_VMLINUX_H})

string(TOLOWER ${CMAKE_SYSTEM_PROCESSOR} _arch)
if(_arch MATCHES "x86_64|amd64")
  set(SOVGUARD_BPF_ARCH x86)
elseif(_arch MATCHES "aarch64|arm64")
  set(SOVGUARD_BPF_ARCH arm64)
else()
  message(FATAL_ERROR "sovguard: unsupported architecture ${CMAKE_SYSTEM_PROCESSOR} for BPF")
endif()

# sovguard_bpf_object(NAME name SOURCE file.bpf.c [HEADERS h...])
# Produces build/bpf/<dir>/<name>.bpf.o, build/bpf/<dir>/<name>.skel.h and an INTERFACE target
# `bpf_<name>` to link against (it only carries the dependency and include path).
function(sovguard_bpf_object)
  cmake_parse_arguments(B "" "NAME;SOURCE" "HEADERS" ${ARGN})
  get_filename_component(_abs ${B_SOURCE} ABSOLUTE)
  file(RELATIVE_PATH _rel ${PROJECT_SOURCE_DIR} ${_abs})
  get_filename_component(_dir ${_rel} DIRECTORY)
  set(_outdir ${PROJECT_BINARY_DIR}/${_dir})
  set(_obj ${_outdir}/${B_NAME}.bpf.o)
  set(_skel ${_outdir}/${B_NAME}.skel.h)
  add_custom_command(
    OUTPUT ${_obj}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${_outdir}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_${SOVGUARD_BPF_ARCH} -Wall -Werror
            -I${PROJECT_BINARY_DIR}/bpf -I${PROJECT_SOURCE_DIR} -I${PROJECT_SOURCE_DIR}/bpf
            -c ${_abs} -o ${_obj}
    DEPENDS ${_abs} ${B_HEADERS} ${PROJECT_SOURCE_DIR}/bpf/sovguard_abi.h
            ${PROJECT_SOURCE_DIR}/bpf/net/sg_net_abi.h ${PROJECT_SOURCE_DIR}/bpf/storage/storage_guard_abi.h
    COMMENT "clang -target bpf ${_rel}")
  add_custom_command(
    OUTPUT ${_skel}
    COMMAND ${BPFTOOL} gen skeleton ${_obj} name ${B_NAME} > ${_skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${_skel}.tmp ${_skel}
    DEPENDS ${_obj}
    COMMENT "bpftool gen skeleton ${B_NAME}")
  add_custom_target(bpf_${B_NAME}_gen DEPENDS ${_skel} ${_obj})
  # vmlinux.h is generated in another folder: a file dependency across folders needs the target.
  add_dependencies(bpf_${B_NAME}_gen sovguard_vmlinux_h)
  add_library(bpf_${B_NAME} INTERFACE)
  add_dependencies(bpf_${B_NAME} bpf_${B_NAME}_gen)
  # SYSTEM: generated skeleton code is not held to our warning flags.
  target_include_directories(bpf_${B_NAME} SYSTEM INTERFACE ${PROJECT_BINARY_DIR})
  target_link_libraries(bpf_${B_NAME} INTERFACE PkgConfig::LIBBPF)
  set_property(GLOBAL APPEND PROPERTY SOVGUARD_BPF_OBJECTS ${_obj})
endfunction()
