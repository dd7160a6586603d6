#!/bin/busybox sh
# /init of the sovguard test guest (busybox initramfs). Everything it needs comes from the kernel
# command line, so a test chooses addresses without rebuilding the image:
#   sg.ip=192.0.2.10/24 sg.gw=192.0.2.1      address of eth0 and its default gateway
#   sg.allowed=198.51.100.1                  destination the policy allows
#   sg.forbidden=203.0.113.1                 destination the policy forbids
#   sg.interval=0.1                          seconds between packets of each stream
#   sg.dd_read=N sg.dd_write=N               MiB to read from /dev/vda / write to /dev/vdb (O_DIRECT)
# It sends ICMP echo requests to both destinations from the moment eth0 is up until power-off, and
# reports progress on the serial console with "SOVGUARD:" lines that tests wait for.
/bin/busybox mkdir -p /proc /sys /dev /mnt /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "SOVGUARD: init started"

# Drivers the Debian kernel has as modules, in dependency order (written by the image builder).
while read -r mod; do
  insmod "/lib/modules/$mod" || echo "SOVGUARD: insmod $mod failed"
done </modules.order

arg() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
ip_addr=$(arg sg.ip); gw=$(arg sg.gw); allowed=$(arg sg.allowed); forbidden=$(arg sg.forbidden)
interval=$(arg sg.interval)
[ -n "$ip_addr" ] || ip_addr=192.0.2.10/24
[ -n "$interval" ] || interval=0.1

# eth0 appears when virtio_net has probed; bounded wait (about 10 s).
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do n=$((n + 1)); usleep 100000; done
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip addr add "$ip_addr" dev eth0
  ip link set eth0 up
  [ -n "$gw" ] && ip route add default via "$gw"
  echo "SOVGUARD: eth0 up $ip_addr mac $(cat /sys/class/net/eth0/address)"
else
  echo "SOVGUARD: no eth0"
fi
# Both streams start at once and never wait for replies: a dropped packet does not slow the other.
[ -n "$forbidden" ] && ping -q -i "$interval" "$forbidden" >/dev/null 2>&1 &
[ -n "$allowed" ] && ping -q -i "$interval" "$allowed" >/dev/null 2>&1 &
echo "SOVGUARD: sending forbidden=$forbidden allowed=$allowed interval=$interval"

# Storage tests attach a disk as vda; mount it read-only if there is one.
if [ -b /dev/vda ]; then
  mount -o ro /dev/vda /mnt && echo "SOVGUARD: mounted /dev/vda"
fi
echo "SOVGUARD: ready"

# Storage accounting tests: sg.dd_read=N reads N MiB from /dev/vda, sg.dd_write=N writes N MiB to
# /dev/vdb, both O_DIRECT so the guest's page cache and read-ahead add nothing to what QEMU does.
# Each prints "SOVGUARD: dd read N MiB" / "SOVGUARD: dd wrote N MiB", or "... failed:" with dd's
# own error; then "SOVGUARD: dd done".
dd_read=$(arg sg.dd_read); dd_write=$(arg sg.dd_write)
if [ -n "$dd_read" ]; then
  if out=$(dd if=/dev/vda of=/dev/null bs=1M count="$dd_read" iflag=direct 2>&1); then
    echo "SOVGUARD: dd read $dd_read MiB"
  else
    echo "SOVGUARD: dd read failed: $out"
  fi
fi
if [ -n "$dd_write" ]; then
  if out=$(dd if=/dev/zero of=/dev/vdb bs=1M count="$dd_write" oflag=direct conv=fsync 2>&1); then
    echo "SOVGUARD: dd wrote $dd_write MiB"
  else
    echo "SOVGUARD: dd write failed: $out"
  fi
fi
[ -n "$dd_read$dd_write" ] && echo "SOVGUARD: dd done"

# Hot-plugged NICs: configure eth1.. as they appear, each with address .(10+index) of sg.ip's /24.
prefix=${ip_addr%.*}
while true; do
  for dev in /sys/class/net/eth*; do
    name=${dev##*/}
    [ "$name" = eth0 ] && continue
    if [ "$(cat "$dev/operstate")" = down ] && [ ! -e "/tmp/$name" ]; then
      : >"/tmp/$name"
      idx=${name#eth}
      ip addr add "$prefix.$((10 + idx))/32" dev "$name"
      ip link set "$name" up
      echo "SOVGUARD: $name up"
    fi
  done
  sleep 1
done
