#!/usr/bin/env bash
# Installs every Debian 12 package that sovguard's build, tests and embedded defaults need.
# Idempotent and non-interactive; the only network access is Debian's package registry.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: run as root (apt-get needs it)" >&2
  exit 2
fi

packages=(
  # build
  build-essential cmake pkg-config git clang-16 llvm-16 clang-format clang-tidy mold
  libbpf-dev bpftool libelf-dev zlib1g-dev linux-libc-dev
  libvirt-dev libxml2-dev libssl-dev libtss2-dev libprotobuf-dev protobuf-compiler
  libgrpc++-dev protobuf-compiler-grpc libgtest-dev libgmock-dev
  libmaxminddb-dev libsystemd-dev nlohmann-json3-dev libfmt-dev libmicrohttpd-dev libcurl4-openssl-dev libfuzzer-16-dev libclang-rt-16-dev
  # runtime and embedded defaults
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base qemu-system-x86 qemu-utils btrfs-progs
  swtpm swtpm-tools tpm2-tools iproute2
  # tests and benchmarks
  iperf3 nftables curl linux-image-amd64 busybox-static cpio systemd fio dpkg-dev file python3
  prometheus  # promtool checks examples/prometheus; a live prometheus scrapes a test daemon
  chromium fonts-dejavu-core  # renders sovguard-verify --html reports headless (screenshot, layout)
  python3-placement  # OpenStack Placement (WSGI app, SQLite) the fleet verifier keeps traits in
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends keeps the host lean; policy-rc.d stops Debian from starting
# libvirtd/virtlogd as a side effect of installation (tests start what they need).
cleanup_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  cleanup_policy=1
fi
trap '[[ $cleanup_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
