#!/usr/bin/env bash
# Builds the test guest's initramfs from packages already on the host:
#   busybox-static     -> /bin/busybox (the whole userland)
#   linux-image-amd64  -> the kernel modules the Debian kernel lacks built in (virtio_pci, virtio_net,
#                         virtio_blk, ext4 and everything modules.dep says they need)
# Usage: build-guest-initramfs.sh KERNEL_VERSION INIT_SCRIPT OUTPUT.cpio.gz [MODULE...]
# MODULEs replace the default set (tests/vm passes 9p, 9pnet_virtio, overlay, ...).
set -euo pipefail
kver=$1 init=$2 out=$3
shift 3
modules=("$@")
[[ ${#modules[@]} -gt 0 ]] || modules=(virtio_pci virtio_net virtio_blk ext4)
moddir=/lib/modules/$kver
[[ -f $moddir/modules.dep ]] || { echo "no $moddir/modules.dep: install linux-image-amd64" >&2; exit 1; }
[[ -x /bin/busybox ]] || { echo "no /bin/busybox: install busybox-static" >&2; exit 1; }
file -L /bin/busybox | grep -q 'statically linked' || { echo "/bin/busybox is not static" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,mnt,tmp,lib/modules}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 "$init" "$root/init"

# Depth-first over modules.dep: every dependency is listed before the module that needs it.
declare -A seen=()
order=()
visit() {
  local rel=$1 deps dep
  [[ -n ${seen[$rel]:-} ]] && return
  seen[$rel]=1
  deps=$(awk -v m="$rel:" '$1 == m { $1 = ""; print }' "$moddir/modules.dep")
  for dep in $deps; do visit "$dep"; done
  order+=("$rel")
}
for name in "${modules[@]}"; do
  rel=$(awk -v n="/$name.ko:" 'index($1, n) { sub(":", "", $1); print $1; exit }' "$moddir/modules.dep")
  [[ -n $rel ]] || { echo "module $name not in $moddir/modules.dep" >&2; exit 1; }
  visit "$rel"
done
: >"$root/modules.order"
for rel in "${order[@]}"; do
  base=$(basename "$rel")
  cp "$moddir/$rel" "$root/lib/modules/$base"
  echo "$base" >>"$root/modules.order"
done

# Reproducible: fixed mtimes and sorted names, so identical inputs give an identical image.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9n >"$out.tmp"
mv "$out.tmp" "$out"
