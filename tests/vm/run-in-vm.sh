#!/usr/bin/env bash
# Boots the distribution kernel under QEMU (TCG) with the host's / shared read-only and a writable
# tmpfs overlay (tests/vm/vm-init.sh), runs one command there as root and passes its exit status out.
#
# usage: run-in-vm.sh --kernel VMLINUZ --initramfs CPIO [--lsm LIST] [--io DIR] [--timeout S] \
#          [--nvme IMAGE] -- COMMAND [ARG...]
#   --lsm LIST    kernel command line lsm= (default: the kernel's built-in CONFIG_LSM)
#   --io DIR      run directory shared read-write at the same path inside the guest (default: a new
#                 temporary one, removed afterwards); the guest writes DIR/lsm and DIR/status there
#   --timeout S   bound of the whole boot, in seconds (default 600): QEMU is killed after it
#   --nvme IMAGE  attach the raw file IMAGE as an emulated NVMe disk (one namespace, serial
#                 sovguard-nvme: the NVMe tests find their disk by it)
#   --systemd     boot systemd as PID 1 (the host's, in the overlay root) and run the command as
#                 the unit sovguard-vm-test.service (tests/vm/vm-init.sh)
# The command runs in the current directory, with CI and SOVGUARD_* from this environment.
# Exit: the command's status; 124 when the bound was hit; 125 when the guest gave no status.
set -euo pipefail
kernel="" initramfs="" lsm="" io="" timeout=600 systemd=0 nvme=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --kernel) kernel=$2; shift 2 ;;
    --initramfs) initramfs=$2; shift 2 ;;
    --lsm) lsm=$2; shift 2 ;;
    --io) io=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --systemd) systemd=1; shift ;;
    --nvme) [[ -f $2 ]] || { echo "run-in-vm: --nvme $2: no such file" >&2; exit 2; }
            nvme=(-drive "file=$2,if=none,id=nv0,format=raw" -device nvme,serial=sovguard-nvme,drive=nv0)
            shift 2 ;;
    --) shift; break ;;
    *) echo "run-in-vm: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 && -r $kernel && -r $initramfs ]] || { echo "run-in-vm: need --kernel, --initramfs and a command" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "run-in-vm: no qemu-system-x86_64 (install qemu-system-x86)" >&2; exit 2; }

own_io=""
if [[ -z $io ]]; then
  io=$(mktemp -d /tmp/sovguard-vm.XXXXXX)
  own_io=$io
fi
io=$(realpath "$io")
trap '[[ -n $own_io ]] && rm -rf "$own_io"' EXIT
rm -f "$io/status" "$io/lsm"
{
  echo "set -u"
  echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root"
  { env | grep -E '^(CI|SOVGUARD_[A-Z0-9_]+|GTEST_[A-Z0-9_]+|ASAN_OPTIONS|UBSAN_OPTIONS)=' || true; } |
    while IFS= read -r kv; do printf 'export %q\n' "$kv"; done
  printf 'cd %q\n' "$PWD"
  printf '%q ' "$@"
  echo
} >"$io/cmd.sh"

append="console=ttyS0 panic=-1 quiet loglevel=4 sg.io=$io"
[[ -n $lsm ]] && append+=" lsm=$lsm"
# Its own target (no fstab: the host's describes the host's disks); failed units on the console.
[[ $systemd -eq 1 ]] && append+=" sg.systemd=1 systemd.unit=sovguard-vm.target fstab=0 systemd.show_status=error"
echo "run-in-vm: $(basename "$kernel") lsm=${lsm:-<built-in>} timeout=${timeout}s: $*"
start=$(date +%s)
rc=0
# KVM hangs guests on this host: TCG only. stdin closed, so the console never waits for input.
timeout --kill-after=10 "$timeout" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 \
  -nodefaults -no-reboot -display none -serial stdio -monitor none \
  -kernel "$kernel" -initrd "$initramfs" -append "$append" \
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
  -fsdev local,id=vmio,path="$io",security_model=none \
  -device virtio-9p-pci,fsdev=vmio,mount_tag=vmio "${nvme[@]}" </dev/null | stdbuf -oL tr -d '\r' || rc=$?
echo "run-in-vm: guest ran $(($(date +%s) - start)) s"
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  echo "run-in-vm: FAILED: the guest did not power off within ${timeout}s" >&2
  exit 124
fi
if [[ ! -s $io/status ]]; then
  echo "run-in-vm: FAILED: the guest wrote no status (qemu exit $rc)" >&2
  exit 125
fi
exit "$(cat "$io/status")"
