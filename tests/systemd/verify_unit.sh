#!/usr/bin/env bash
# `systemd-analyze verify` on the shipped unit (pointed at the built daemon). systemd only warns,
# with exit 0, about unknown keys: any line it prints about our unit is a failure here.
set -euo pipefail
unit_src=$1
daemon=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/sbin/sovguardd|ExecStart=$daemon|" "$unit_src" >"$work/sovguardd.service"
grep -q "^ExecStart=$daemon" "$work/sovguardd.service" || { echo "FAIL: ExecStart not found"; exit 1; }

rc=0
out=$(systemd-analyze verify "$work/sovguardd.service" 2>&1) || rc=$?
own=$(grep -F "sovguardd.service" <<<"$out" || true)
if [[ $rc -ne 0 || -n "$own" ]]; then
  echo "FAIL: systemd-analyze verify (rc=$rc):"
  echo "$out"
  exit 1
fi

# Hardening the brief asks for must stay in the unit.
for line in Type=notify WatchdogSec= Restart=on-failure NoNewPrivileges=yes ProtectSystem=strict \
            ProtectHome=yes StateDirectory=sovguard CapabilityBoundingSet=; do
  grep -q "^$line" "$work/sovguardd.service" || { echo "FAIL: unit lacks $line"; exit 1; }
done
# The bounding set grants what BPF needs and nothing that lets the daemon trace or load modules.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$work/sovguardd.service")
for cap in CAP_BPF CAP_NET_ADMIN; do
  grep -qw "$cap" <<<"$caps" || { echo "FAIL: CapabilityBoundingSet lacks $cap"; exit 1; }
done
for cap in CAP_SYS_PTRACE CAP_SYS_MODULE CAP_DAC_OVERRIDE CAP_SETUID; do
  grep -qw "$cap" <<<"$caps" && { echo "FAIL: CapabilityBoundingSet grants $cap"; exit 1; }
done
echo "PASS: unit verifies cleanly and keeps its hardening"
