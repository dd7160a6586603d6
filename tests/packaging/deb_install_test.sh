#!/usr/bin/env bash
# Builds the .deb with CPack, installs it the way a hosting provider would (apt install ./file),
# checks what it put on the system, runs the installed daemon's --version, and removes it again.
# The host is left as found: every path of the package that existed before (the libvirt hook
# .ci/start-node.sh installs at the package's path, an operator's /etc/sovguard) is saved and put
# back after the purge, and the group sovguard goes again if the package created it.
set -euo pipefail
build=$1
work=$(mktemp -d)
had_group=0
getent group sovguard >/dev/null && had_group=1
restore() {
  local rc=$?
  if dpkg-query -W sovguard >/dev/null 2>&1 && ! dpkg -P sovguard >"$work/purge.log" 2>&1; then
    cat "$work/purge.log"; echo "FAIL: dpkg -P sovguard"; rc=1
  fi
  if [[ -s $work/saved.list ]] && ! tar -C / -xpf "$work/saved.tar"; then
    echo "FAIL: could not restore $(tr '\n' ' ' <"$work/saved.list")"; rc=1
  fi
  if [[ $had_group -eq 0 ]] && getent group sovguard >/dev/null && ! delgroup --system sovguard >/dev/null; then
    echo "FAIL: could not remove the group sovguard the package created"; rc=1
  fi
  rm -rf "$work"
  exit $rc
}
trap restore EXIT

if dpkg-query -W -f='${Status}' sovguard 2>/dev/null | grep -q "install ok installed"; then
  echo "FAIL: a sovguard package is already installed on this host; refusing to replace it"
  exit 1
fi
(cd "$build" && cpack -G DEB -B "$work" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log"; echo "FAIL: cpack"; exit 1; }
deb=$(ls "$work"/sovguard_*.deb)
echo "built $(basename "$deb") ($(stat -c %s "$deb") bytes)"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/sbin/sovguardd ./usr/bin/sovguardctl ./usr/lib/systemd/system/sovguardd.service \
         ./usr/libexec/sovguard/sovguard-libvirt-hook ./usr/share/sovguard/world.sgjt \
         ./usr/share/sovguard/default-eu-eea.textproto \
         ./etc/sovguard/sovguardd.conf; do
  grep -q " $f\$" <<<"$contents" || { echo "FAIL: package lacks $f"; exit 1; }
done
grep -q " ./etc/libvirt/hooks/qemu.d/sovguard -> /usr/libexec/sovguard/sovguard-libvirt-hook$" <<<"$contents" || { echo "FAIL: package lacks the libvirt hook link"; exit 1; }
# Save what the package would replace or purge (directories without their contents: dpkg removes
# only the empty ones).
awk '{print $6}' <<<"$contents" | sed 's|^\./|/|; s|/$||' | while read -r p; do
  if [[ -n $p && ( -e $p || -L $p ) ]]; then echo "${p#/}"; fi
done >"$work/saved.list"
if [[ -s $work/saved.list ]]; then
  tar -C / --no-recursion -cpf "$work/saved.tar" -T "$work/saved.list"
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; echo "FAIL: apt install"; exit 1; }
version=$(/usr/sbin/sovguardd --version)
[[ "$version" == "sovguardd "* ]] || { echo "FAIL: sovguardd --version printed '$version'"; exit 1; }
/usr/bin/sovguardctl version >/dev/null || { echo "FAIL: sovguardctl version"; exit 1; }
getent group sovguard >/dev/null || { echo "FAIL: postinst did not create group sovguard"; exit 1; }
echo "PASS: installed package runs: $version"
