#!/bin/busybox sh
# /init of the vm tier's guest (busybox initramfs, tests/vm/run-in-vm.sh boots it).
# Contract:
#  - the host's / arrives read-only over virtio-9p (tag hostroot); a tmpfs overlay on top makes it
#    writable inside the guest only; /tmp, /run, /dev/shm are fresh tmpfs; proc, sysfs, devtmpfs,
#    cgroup2, bpffs, debugfs, tracefs and securityfs are mounted where a Debian host has them;
#  - the run directory (tag vmio, read-write) is mounted at the same path as on the host
#    (sg.io=PATH on the kernel command line); its cmd.sh is run with the host's bash, chrooted into
#    the overlay root;
#  - it prints "SOVGUARD-VM: kernel <release> lsm=<list>" before and "SOVGUARD-VM: exit=<status>"
#    after the command, writes the lsm list to PATH/lsm and the status to PATH/status, then powers
#    off. Every step that can fail says so on the console; a missing status file means "failed".
#  - with sg.systemd=1 on the command line it switches root to the overlay and execs systemd as
#    PID 1 instead; the unit sovguard-vm-test.service (started by sovguard-vm.target, which
#    run-in-vm.sh names as systemd.unit=) runs cmd.sh, writes PATH/status and powers off.
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security

off() {
  sync
  poweroff -f
  reboot -f  # with -no-reboot QEMU exits on a reset as well
}

while read -r mod; do
  insmod "/lib/modules/$mod" || echo "SOVGUARD-VM: insmod $mod failed"
done </modules.order

lsm=$(cat /sys/kernel/security/lsm)
echo "SOVGUARD-VM: kernel $(uname -r) lsm=$lsm"
io=$(sed -n 's/.*\bsg\.io=\([^ ]*\).*/\1/p' /proc/cmdline)

mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower ||
  { echo "SOVGUARD-VM: mount hostroot failed"; off; }
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot ||
  { echo "SOVGUARD-VM: mount overlay failed"; off; }

r=/newroot
mount -t proc proc $r/proc
mount -t sysfs sysfs $r/sys
mount -t devtmpfs devtmpfs $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts devpts $r/dev/pts
mount -t tmpfs tmpfs $r/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $r/tmp
mount -t tmpfs -o mode=0755 tmpfs $r/run
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup
mount -t bpf bpf $r/sys/fs/bpf
mount -t debugfs debugfs $r/sys/kernel/debug
mount -t tracefs tracefs $r/sys/kernel/tracing
mount -t securityfs securityfs $r/sys/kernel/security
mkdir -p "$r$io"
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none vmio "$r$io" ||
  { echo "SOVGUARD-VM: mount vmio at $io failed"; off; }
echo "$lsm" >"$r$io/lsm"
[ -e $r/etc/mtab ] || ln -s ../proc/self/mounts $r/etc/mtab
ip link set lo up
# Modules come from the host's /lib/modules in the overlay root: loop devices and veth pairs
# now, the rest (sch_ingress for clsact, ...) when the kernel asks, through this modprobe.
printf '#!/bin/busybox sh\nexec chroot /newroot /sbin/modprobe "$@"\n' >/modprobe-hostroot
chmod 0755 /modprobe-hostroot
echo /modprobe-hostroot >/proc/sys/kernel/modprobe
chroot $r /sbin/modprobe -a loop veth || echo "SOVGUARD-VM: modprobe loop veth failed"

if grep -q '\bsg\.systemd=1\b' /proc/cmdline; then
  # Only what the test needs: sysinit and sockets (dbus, libvirt's), not the host's multi-user
  # services and timers.
  cat >$r/etc/systemd/system/sovguard-vm.target <<UNIT
[Unit]
Description=sovguard vm tier: the test and what it needs
Requires=sysinit.target sockets.target sovguard-vm-test.service
After=sysinit.target sockets.target
AllowIsolate=yes
UNIT
  cat >$r/etc/systemd/system/sovguard-vm-test.service <<UNIT
[Unit]
Description=sovguard vm tier: $io/cmd.sh
After=sysinit.target sockets.target
[Service]
Type=oneshot
TimeoutStartSec=infinity
StandardOutput=journal+console
StandardError=journal+console
# Off at once (reboot(2)) once the status is written: an ordinary poweroff after the command
# kept the guest up until the boot's bound.
ExecStart=/bin/bash -c 'bash $io/cmd.sh; echo \$\$? >$io/status; echo SOVGUARD-VM: exit=\$\$(cat $io/status); sync; systemctl poweroff -ff'
SuccessAction=poweroff-immediate
FailureAction=poweroff-immediate
UNIT
  # This VM is no container: systemd reads the kernel command line (systemd.unit=) only outside
  # one, and the host's /.dockerenv would make it think it runs in one. The host's timers and
  # avahi (pulled in by basic.target) stay off.
  rm -f $r/.dockerenv $r/run/.containerenv
  for u in timers.target avahi-daemon.service avahi-daemon.socket; do
    ln -sf /dev/null "$r/etc/systemd/system/$u"
  done
  # The kernel's module helper is the root's own again (/modprobe-hostroot goes with the initramfs).
  echo /sbin/modprobe >/proc/sys/kernel/modprobe
  echo "SOVGUARD-VM: switching to systemd"
  exec switch_root $r /lib/systemd/systemd
  echo "SOVGUARD-VM: switch_root failed"
  off
fi
chroot $r /bin/bash "$io/cmd.sh"
status=$?
echo "$status" >"$r$io/status"
echo "SOVGUARD-VM: exit=$status"
off
