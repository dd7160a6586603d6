#!/usr/bin/env bash
# Runs inside the vm tier's systemd boot (systemd is PID 1, tests/vm/vm-init.sh with sg.systemd=1):
# installs the built .deb with apt, runs sovguardd.service as a hosting provider would and records
# what it finds, one line per check in IO/checks ("ok NAME" or "FAIL NAME: what was seen"), and
# copies the evidence (status, journal excerpts) into IO. vm_test.cc judges the checks on the host:
# a check missing from the file fails there as well.
#
# usage: systemd-host.sh DEB IO GUEST_KERNEL TABLE
#   TABLE: a small jurisdiction table (world.sgjt of a few countries) the daemon loads instead of
#   the shipped world table: under TCG loading, applying and comparing the world table takes
#   minutes per daemon start; its scale is the host tiers' subject, systemd's is this boot's.
set -uo pipefail
deb=$1 io=$2 kernel=$3 table=$4
cd "$io" || exit 2
: >checks
ok() { echo "ok $1" | tee -a checks; }
fail() { echo "FAIL $1: $2" | tee -a checks; }
# check NAME COMMAND...: ok when the command succeeds.
check() {
  local name=$1
  shift
  if "$@"; then ok "$name"; else fail "$name" "$*"; fi
}
# until_true SECONDS COMMAND...: polls the command every 0.5 s until it succeeds (bounded).
until_true() {
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    [[ $SECONDS -lt $end ]] || return 1
    sleep 0.5
  done
}
show() { systemctl show -p "$2" --value "$1"; }
status_json() { cat /run/sovguard/status.json; }
pid_alive() { [[ -n $1 && $1 != 0 ]] && kill -0 "$1" 2>/dev/null; }
journal_has() { journalctl -q -u sovguardd --no-pager -o cat | grep -qF -- "$1"; }
# Only the daemon itself in sovguardd.service's cgroup: nothing it started dies with it.
only_daemon_in_unit() {
  local procs main
  main=$(show sovguardd MainPID)
  procs=$(cat /sys/fs/cgroup/system.slice/sovguardd.service/cgroup.procs 2>/dev/null | tr '\n' ' ')
  echo "sovguardd.service cgroup: $procs(MainPID $main)"
  for p in /sys/fs/cgroup/system.slice/sovguardd.service/cgroup.procs; do
    [[ $(grep -vx "$main" "$p" | wc -l) -eq 0 ]] || return 1
  done
  [[ -n $procs ]]
}
qemu_pid() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null; }
swtpm_pid() { cat /var/lib/sovguard/swtpm/swtpm.pid 2>/dev/null; }
tap_filtered() { tc filter show dev "$1" ingress 2>/dev/null | grep -q sg_net_egress; }
machine_slice_guarded() { bpftool cgroup show /sys/fs/cgroup/machine.slice 2>/dev/null | grep -q connect4; }
pins_present() { [[ -n $(ls -A /sys/fs/bpf/sovguard 2>/dev/null) ]]; }

echo "== systemd $(systemctl --version | head -1), kernel $(uname -r), lsm=$(cat /sys/kernel/security/lsm)"
check systemd-is-pid-1 test "$(cat /proc/1/comm)" = systemd

# The package, as an operator installs it: apt resolves its dependencies from what is installed.
echo "== apt install $deb"
# dpkg's database as of now, in the overlay: the build host's / is live underneath, and an apt run
# there would otherwise show up here half-done. Taken again while the host is mid-transaction.
snapshot_dpkg() {
  local f
  for f in status available diversions statoverride; do
    [[ -e /var/lib/dpkg/$f ]] && cp -a "/var/lib/dpkg/$f" "/var/lib/dpkg/$f.vm" && mv "/var/lib/dpkg/$f.vm" "/var/lib/dpkg/$f"
  done
  [[ -z $(ls -A /var/lib/dpkg/updates) ]] && rm -rf /var/lib/dpkg/updates && mkdir /var/lib/dpkg/updates &&
    [[ -z $(dpkg --audit) ]]
}
check dpkg-database-consistent until_true 120 snapshot_dpkg
# A fresh host: whatever the build host left in these paths is not this node's.
rm -rf /var/lib/sovguard /run/sovguard /etc/sovguard /etc/libvirt/hooks/qemu.d/sovguard
if DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb" >apt.log 2>&1; then
  ok deb-installed
else
  tail -20 apt.log
  fail deb-installed "apt-get install (apt.log)"
fi
check unit-enabled-by-postinst test "$(systemctl is-enabled sovguardd.service)" = enabled

# A signed policy: the shipped zones file plus a dataset "health" whose volumes live in /srv/sg-pool.
mkdir -p /srv/sg-pool /srv/sg-console /etc/sovguard/trusted-keys
truncate -s 16M /srv/sg-pool/health.img
openssl genpkey -algorithm ed25519 -out signer.pem 2>/dev/null
openssl pkey -in signer.pem -pubout -out /etc/sovguard/trusted-keys/signer.pem
cat >policy.textproto <<'EOF'
datasets {
  id: "guest-default"
  owner: "vm"
  classification: "internal"
  description: "held by unlabelled guests"
  mode: ENFORCE
  residency { allow: ["EU", "EEA"] }
  default_for_unlabelled: true
}
datasets {
  id: "health"
  owner: "vm"
  classification: "confidential"
  description: "its volumes live in /srv/sg-pool; only labelled guests may open them"
  mode: ENFORCE
  residency { allow: ["EU", "EEA"] }
  storage { pools { path: "/srv/sg-pool" } }
}
EOF
sovguardctl policy bundle --key signer.pem --version 1 policy.textproto -o /etc/sovguard/policy.bundle ||
  fail policy-bundle "sovguardctl policy bundle"
cp /etc/sovguard/policy.bundle good.bundle
echo "policy_bundle = /etc/sovguard/policy.bundle" >>/etc/sovguard/sovguardd.conf
mkdir -p /var/lib/sovguard-vm-data
cp "$table" /var/lib/sovguard-vm-data/world.sgjt
echo "data_dir = /var/lib/sovguard-vm-data" >>/etc/sovguard/sovguardd.conf
# Under TCG a start takes minutes (a Debug+ASan daemon loading the world table: about 100 s here,
# more under load), longer than the unit's default 90 s start timeout: raised for this VM only.
mkdir -p /etc/systemd/system/sovguardd.service.d
# Stopping likewise: SIGTERM is taken between main-loop rounds, and a round comparing whole tables
# outlasts the unit's 20 s TimeoutStopSec under TCG (systemd then kills it: enforcement stays
# pinned, but the unit ends "failed").
printf '[Service]\nTimeoutStartSec=600\nTimeoutStopSec=300\n' >/etc/systemd/system/sovguardd.service.d/tcg.conf
# This build's binaries may carry AddressSanitizer: its leak check at exit stops the world with
# ptrace, which the unit's capability set excludes (CAP_SYS_PTRACE), and exits 1 ("fatal error").
if ldd /usr/sbin/sovguardd | grep -q libasan; then
  printf '[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n' >/etc/systemd/system/sovguardd.service.d/asan.conf
fi
# For the same reason the hook's 10 s bound on the daemon's answer is raised: a hook waits for
# the node's lock, which a tamper round comparing whole tables holds for 30 s and more under TCG
# (about 0.5 s on a real host); the hook would refuse the guest, fail closed, with "timed out".
echo "timeout_ms = 300000" >>/etc/sovguard/libvirt-hook.conf
systemctl daemon-reload

# libvirtd and swtpm not running: sovguardd has to start them itself, and must do so as units of
# their own (ignore-requirements: the unit's Wants=libvirtd.service would start it first).
systemctl stop libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket 2>/dev/null
echo "== systemctl start sovguardd (libvirtd not running)"
t0=$SECONDS
if timeout 600 systemctl start --job-mode=ignore-requirements sovguardd.service; then
  ok start-returned
else
  fail start-returned "systemctl start sovguardd"
fi
echo "sovguardd ready after $((SECONDS - t0)) s"
# Type=notify: systemctl start returns when READY=1 arrived; the unit is active, not activating.
check notify-ready test "$(show sovguardd Type)/$(show sovguardd ActiveState)" = notify/active
journalctl -q -u sovguardd --no-pager -o cat >journal-start.txt
check libvirtd-started-as-its-unit journal_has "started libvirtd.service (systemd)"
libvirtd=$(show libvirtd MainPID)
check libvirtd-in-own-cgroup grep -qx "0::/system.slice/libvirtd.service" "/proc/$libvirtd/cgroup"
swtpm=$(swtpm_pid)
swtpm_unit=$(systemctl list-units --plain --no-legend 'sovguard-swtpm@*' | awk '{print $1}')
echo "swtpm pid $swtpm, unit $swtpm_unit"
check swtpm-in-own-unit test -n "$swtpm_unit" -a "$(show "$swtpm_unit" MainPID)" = "$swtpm"
check swtpm-sockets-0600-dir-0700 test "$(stat -c %a /run/sovguard/swtpm)/$(stat -c %a /run/sovguard/swtpm/tpm.sock)/$(stat -c %a /run/sovguard/swtpm/tpm.sock.ctrl)" = 700/600/600
check only-daemon-in-its-cgroup only_daemon_in_unit
# Modes as the unit sets them and README states them: state 0700; runtime directory 0750, API
# socket 0660 and status 0640, all of group sovguard, whose members (and only they) may use them.
stat -c '%n %a %G' /var/lib/sovguard /run/sovguard /run/sovguard/api.sock /run/sovguard/status.json | tee modes.txt
check modes-as-documented test "$(stat -c '%a' /var/lib/sovguard) $(stat -c '%a %G' /run/sovguard /run/sovguard/api.sock /run/sovguard/status.json | tr '\n' ' ')" = "700 750 sovguard 660 sovguard 640 sovguard "
as_member() { setpriv --reuid=nobody --regid=nogroup --groups=sovguard "$@"; }
check group-member-reads-status as_member sovguardctl status
check group-member-quotes as_member sovguardctl attest quote --nonce "$(openssl rand -hex 20)" -o /tmp/member-quote.json
check non-member-refused-status bash -c "! setpriv --reuid=nobody --regid=nogroup --clear-groups sovguardctl status >/dev/null 2>&1"
check non-member-refused-quote bash -c "! setpriv --reuid=nobody --regid=nogroup --clear-groups sovguardctl attest quote --nonce 00 -o /tmp/other-quote.json >/dev/null 2>&1"

# Watchdog: the timestamp of the last ping moves while the daemon runs.
wd0=$(show sovguardd WatchdogTimestampMonotonic)
echo "WatchdogUSec=$(show sovguardd WatchdogUSec) first ping at $wd0"
check watchdog-pings until_true 60 bash -c "[[ \$(systemctl show -p WatchdogTimestampMonotonic --value sovguardd) != $wd0 && $wd0 != 0 ]]"

# The hardened unit loaded and attached its programs, and reached the TPM.
check bpf-pinned pins_present
check cgroup-programs-on-machine-slice machine_slice_guarded
bpftool cgroup show /sys/fs/cgroup/machine.slice >cgroup-programs.txt 2>&1
status_json >status-start.json
check tpm-quote sovguardctl attest quote --nonce "$(openssl rand -hex 20)" -o quote.json

# A guest that holds "health" (its QEMU never needs to finish booting: TCG inside TCG).
domain() { # NAME TAP LABEL [DISK]
  cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <metadata>$3</metadata>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>$kernel</kernel><cmdline>console=ttyS0</cmdline></os>
  <on_poweroff>destroy</on_poweroff><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    ${4-<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/srv/sg-pool/health.img'/><target dev='vda' bus='virtio'/></disk>}
    <interface type='ethernet'><target dev='$2'/><model type='virtio'/><rom enabled='no'/></interface>
    <serial type='file'><source path='/srv/sg-console/$1.log'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}
label='<sovguard:guest xmlns:sovguard="https://sovguard.eu/ns/guest/1"><dataset id="health"/><disk target="vda" dataset="health"/></sovguard:guest>'
domain sgvm-holder sgvmh0 "$label" >holder.xml
domain sgvm-intruder sgvmi0 "" >intruder.xml
# Without a disk: the guest whose survival of stop and crash is checked below.
domain sgvm-plain sgvmp0 "" "" >plain.xml
echo "== guests"
virsh -q define holder.xml >/dev/null && virsh -q define intruder.xml >/dev/null && virsh -q define plain.xml >/dev/null
if virsh -q start sgvm-plain >virsh-plain.txt 2>&1; then ok plain-started; else cat virsh-plain.txt; fail plain-started "virsh start sgvm-plain"; fi
plain=$(qemu_pid sgvm-plain)
check plain-in-machined-scope grep -q '^0::/machine.slice/machine-qemu.*sgvm.*plain.scope/' "/proc/$plain/cgroup"
check plain-tap-filtered until_true 30 tap_filtered sgvmp0
if virsh -q start sgvm-holder >virsh-holder.txt 2>&1; then ok holder-started; else cat virsh-holder.txt; fail holder-started "virsh start sgvm-holder"; fi
qemu=$(qemu_pid sgvm-holder)
cat "/proc/$qemu/cgroup" >holder-cgroup.txt 2>&1
echo "holder QEMU $qemu in $(cat holder-cgroup.txt)"
check holder-in-machined-scope grep -q '^0::/machine.slice/machine-qemu.*sgvm.*holder.scope/' holder-cgroup.txt
check holder-tap-filtered until_true 30 tap_filtered sgvmh0
until_true 30 bash -c "grep -q sgvm /run/sovguard/status.json" || true
status_json >status-guest.json
if virsh -q start sgvm-intruder >virsh-intruder.txt 2>&1; then
  fail intruder-refused "a guest without the dataset started with its volume"
  virsh -q destroy sgvm-intruder
else
  cat virsh-intruder.txt
  check intruder-refused test "$(virsh -q domstate sgvm-intruder)" = "shut off"
fi
sleep_until_journal() { until_true 300 bash -c "journalctl -q SOVGUARD_EVENT=violation -o json --no-pager | grep -q sgvm-intruder"; }
check violation-in-journal sleep_until_journal
journalctl -q SOVGUARD_EVENT=violation -o json --no-pager >violations.json

# A bad bundle: rejected, the last good policy stays, the reason is in the journal.
echo "== reload with a bad bundle"
digest=$(status_json | jq -r .policy.sha256)
head -c 200 /dev/urandom >/etc/sovguard/policy.bundle
systemctl reload sovguardd
check reload-rejected-in-journal until_true 300 journal_has "reload rejected, last good policy stays enforced"
journalctl -q -u sovguardd --no-pager -o cat | grep "reload rejected" | tail -1 | tee reload.txt
check reload-kept-policy test "$(status_json | jq -r .policy.sha256)" = "$digest"
check reload-still-active test "$(show sovguardd ActiveState)" = active
cp good.bundle /etc/sovguard/policy.bundle

# stop: enforcement stays pinned and attached; guests, libvirtd and swtpm keep running.
still_running() { # after what
  check "$1-guest-running" pid_alive "$plain"
  check "$1-guest-state" test "$(virsh -q domstate sgvm-plain)" = running
  check "$1-libvirtd-running" test "$(show libvirtd MainPID)" = "$libvirtd"
  check "$1-swtpm-running" pid_alive "$swtpm"
  check "$1-tap-filtered" tap_filtered sgvmp0
  check "$1-pins" pins_present
  check "$1-cgroup-programs" machine_slice_guarded
}
echo "== systemctl stop sovguardd"
systemctl stop sovguardd
check stopped test "$(show sovguardd ActiveState)" = inactive
still_running stop
echo "== systemctl start sovguardd (adopts)"
journalctl -q -u sovguardd --no-pager -o cat | wc -l >lines-before-start.txt
n=$(cat lines-before-start.txt)
timeout 600 systemctl start sovguardd
check restart-active test "$(show sovguardd ActiveState)" = active
journalctl -q -u sovguardd --no-pager -o cat | tail -n +$((n + 1)) >journal-restart.txt
check restart-adopted-storage grep -q "storage path adopted" journal-restart.txt
check restart-adopted-tap grep -q "tap sgvmp0 adopted" journal-restart.txt
check restart-swtpm-reused grep -q "started by a previous sovguardd, pid $swtpm, verified" journal-restart.txt
check restart-only-daemon-in-its-cgroup only_daemon_in_unit
still_running start

echo "== systemctl kill -s KILL sovguardd (a crash)"
main=$(show sovguardd MainPID)
systemctl kill -s KILL sovguardd
check crash-restarted until_true 600 bash -c "[[ \$(systemctl show -p MainPID --value sovguardd) != $main && \$(systemctl show -p MainPID --value sovguardd) != 0 && \$(systemctl show -p ActiveState --value sovguardd) == active ]]"
echo "NRestarts=$(show sovguardd NRestarts)"
still_running crash

# No key material in the journal: PEM private keys, the policy signer's key.
journalctl -o export --no-pager >journal-export.txt 2>/dev/null
signer=$(grep -v -- '-----' signer.pem)
check no-private-key-in-journal bash -c "! grep -aq 'PRIVATE KEY' journal-export.txt"
check no-signer-key-in-journal bash -c "! grep -aqF -- '$signer' journal-export.txt"
rm -f journal-export.txt signer.pem

journalctl -q -u sovguardd --no-pager -o short-monotonic >journal-sovguardd.txt
virsh -q destroy sgvm-plain >/dev/null 2>&1
echo "== done: $(grep -c '^ok ' checks) ok, $(grep -c '^FAIL ' checks) failed"
! grep -q '^FAIL ' checks
