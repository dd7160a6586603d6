#!/usr/bin/env bash
# The README's first command: installs what is needed, builds, and runs sovguardd in the foreground
# on embedded defaults (local libvirt, hardware TPM or a swtpm it starts, the shipped EU/EEA policy
# in audit mode and the shipped jurisdiction table). Ctrl-C stops it; enforcement stays pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${SOVGUARD_BUILD_DIR:-$root/build/release}
bash .ci/install-deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOVGUARD_BUILD_TESTS=OFF -DSOVGUARD_BUILD_BENCH=OFF
cmake --build "$build" -j"$(nproc)" --target sovguardd sovguardctl sovguard-libvirt-hook
# The qemu hook lets sovguardd cover a guest's taps before QEMU starts; libvirtd reads hooks when
# it starts, so a libvirtd already running picks it up at its next restart (until then guests are
# covered on their start event).
hook=/etc/libvirt/hooks/qemu.d/sovguard
if [[ ! -e $hook ]]; then
  mkdir -p "$(dirname "$hook")"
  ln -sf "$build/enforcer/libvirt/hook/sovguard-libvirt-hook" "$hook"
  echo "start-node: installed the libvirt qemu hook at $hook"
fi
echo "start-node: starting sovguardd (sovguardctl status in another shell shows what it enforces)"
exec "$build/enforcer/daemon/sovguardd" --data-dir "$root/policy/data" "$@"
