#!/bin/bash
# Guest side of tests/ceph/multipath-vm.sh (runs inside tests/vm/run.sh; issue #22, the
# dm-multipath test): Linux dm-multipath + open-iscsi against a two-gateway group, all
# inside the guest on its loopback (the VM has no NIC):
#   * a throwaway single-node Ceph cluster (tests/ceph/start.sh, memstore) and one image;
#   * a group saveconfig (as tests/ceph/gateways.sh writes it) with
#     "non_owner_state": "active_non_optimized" (docs/ceph.md, "Initiators": Linux's ALUA
#     handler does not send I/O to a standby path of an implicit-only unit), and
#     `rustio serve --gateway gw-a` on 127.0.0.1:3260, gw-b on 127.0.0.1:3261;
#   * iscsiadm sendtargets discovery through each portal (only loopback addresses are
#     advertised) and a login to both;
#   * multipathd with the device section of docs/ceph.md, taken from the docs at run time:
#     one map, two paths, two path groups ordered by ALUA priority (the active/optimized
#     gateway's group active);
#   * fio randwrite 4 KiB with crc32c verify on /dev/mapper/<map>; mid-write the gateway
#     owning the image (the one behind the active group) is killed with SIGKILL; fio must
#     finish without error with its verify passing; the I/O stall is measured from fio's
#     completion-latency log and printed; multipath -ll then shows the killed path failed
#     and the other group active; a second fio pass (verify_only) reads everything back;
#   * cleanup: map flushed, multipathd stopped, logout, gateways and cluster stopped.
# Guest set-up this needs (the VM has no udev/systemd and a read-only /etc): udevd started
# by hand (multipathd ignores disks udev has not initialized), an overlay on /etc for
# /etc/multipath.conf and /etc/multipath/, and a /dev/fd link (tests/ceph/guest-ceph.sh).
# Prints PASS/FAIL per check and exits non-zero when one failed. Every wait is bounded.
#
# Env: RUSTIO_RBD_BIN (required: rustio built with --features rbd), MP_FIO_SIZE (fio's
#      region, default 24M), MP_KILL_AFTER (seconds of fio before the kill, default 8),
#      MP_FAST_IO_FAIL_TMO (replaces the docs' fast_io_fail_tmo, to measure another value).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../vm/guest-lib.sh
. "$ROOT/tests/vm/guest-lib.sh"
# shellcheck source=guest-ceph.sh
. "$ROOT/tests/ceph/guest-ceph.sh"
# port_open only (this suite has its own PASS/FAIL and gateway start).
# shellcheck source=../lib/iscsi-checks.sh
. "$ROOT/tests/lib/iscsi-checks.sh"

[[ "${RUSTIO_VM:-}" == 1 ]] || { echo "guest-multipath.sh must run inside the VM (tests/vm/run.sh)"; exit 2; }
BIN=${RUSTIO_RBD_BIN:?RUSTIO_RBD_BIN must name a rustio binary built with --features rbd}
OUT=${RUSTIO_VM_OUT:-/tmp}
export CEPH_DIR=/tmp/mp-ceph
CONF=$CEPH_DIR/ceph.conf
POOL=rbd
IMAGE=mpath
SIZE=$((256 * 1024 * 1024))
TGT=iqn.2024-01.org.rustio.test:mpath
PORT_A=3260
PORT_B=3261
FIO_SIZE=${MP_FIO_SIZE:-24M}
KILL_AFTER=${MP_KILL_AFTER:-8}
W=/tmp/mp            # scratch: pids, outputs shared between checks (vm_check runs subshells)
mkdir -p "$W"
cd "$W" || exit 2    # fio and multipath write state files into the cwd
# libdevmapper makes the /dev/mapper nodes itself and never waits for udev to confirm them
# (the guest's udevd is started by hand below; a lost confirmation must not hang multipath).
export DM_DISABLE_UDEV=1

now_ms() { date +%s%3N; }
gw_pid() { cat "$W/gw-$1.pid" 2>/dev/null; }
port_of() { [[ $1 == a ]] && echo $PORT_A || echo $PORT_B; }

vm_log "kernel $(uname -r), $(nproc) CPUs, $(free -m | awk '/Mem:/{print $2}') MiB"

# --- cleanup (also on an early exit): only what this script started ---
cleanup() {
  local p g
  if [[ -n "${MAP:-}" ]]; then timeout 30 multipath -f "$MAP" >/dev/null 2>&1; fi
  p=$(cat "$W/multipathd.pid" 2>/dev/null)
  if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p"; vm_wait 15 bash -c "! kill -0 $p"; kill -KILL "$p" 2>/dev/null
  fi
  timeout 60 iscsiadm -m node -T "$TGT" --logout >/dev/null 2>&1
  for g in a b; do
    p=$(gw_pid $g)
    if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"; vm_wait 15 bash -c "! kill -0 $p"; kill -KILL "$p" 2>/dev/null
    fi
  done
  timeout 20 udevadm control --exit >/dev/null 2>&1
  [[ -f "$CEPH_DIR/pids" ]] && cp "$CEPH_DIR/pids" "$W/ceph-pids"
  [[ -n "${MP_REUSE_CEPH:-}" ]] || timeout 120 "$ROOT/tests/ceph/stop.sh" >"$W/ceph-stop.log" 2>&1
}
ceph_gone() { # the cluster dir is removed and no daemon of it runs (zombies have no cmdline)
  local name pid
  [[ ! -e "$CEPH_DIR" && -s "$W/ceph-pids" ]] || { echo "$CEPH_DIR left or no pid list"; return 1; }
  while read -r name pid; do
    if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q -- "--conf $CEPH_DIR/ceph.conf"; then
      echo "$name (pid $pid) still runs"; return 1
    fi
  done <"$W/ceph-pids"
  cat "$W/ceph-stop.log"
}

# --- the cluster ---
ceph_start() { guest_ceph_start "$W" "$OUT/ceph-start.log" "$POOL/$IMAGE" $((SIZE >> 20)); }
t=$(date +%s)
if [[ -n "${MP_REUSE_CEPH:-}" ]]; then
  # Development: a cluster this guest already runs (CEPH_DIR given), kept at the end.
  CEPH_DIR=$MP_REUSE_CEPH; CONF=$CEPH_DIR/ceph.conf
  timeout 120 rbd --conf "$CONF" rm --no-progress "$POOL/$IMAGE" >/dev/null 2>&1
  timeout 120 rbd --conf "$CONF" create --size $((SIZE >> 20))M "$POOL/$IMAGE" && vm_pass "reused cluster $CEPH_DIR"
elif ! VM_CHECK_TIMEOUT=900 vm_check "single-node Ceph (memstore) with image $POOL/$IMAGE ($((SIZE >> 20)) MiB) in the guest" ceph_start; then
  cleanup; vm_summary; exit 1
fi
vm_log "cluster start took $(( $(date +%s) - t ))s"

# --- the gateway group ---
cat >"$W/group.json" <<EOF
{
  "storage_objects": [
    {"plugin": "user", "name": "mp", "config": "rbd/$POOL/$IMAGE;conf=$CONF", "size": $SIZE}
  ],
  "targets": [
    {"wwn": "$TGT", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
      "luns": [{"index": 0, "storage_object": "/backstores/user/mp"}],
      "portals": [], "node_acls": []}]}
  ],
  "rustio_gateway_group": {
    "name": "mpath-group", "non_owner_state": "active_non_optimized",
    "gateways": [
      {"name": "gw-a", "portals": ["127.0.0.1:$PORT_A"]},
      {"name": "gw-b", "portals": ["127.0.0.1:$PORT_B"]}
    ]
  }
}
EOF
start_gw() { # a|b
  local g=$1 port pid
  port=$(port_of "$g")
  port_open "$port" && { echo "port $port already in use"; return 1; }
  RUST_LOG=info "$BIN" serve --config "$W/group.json" --gateway "gw-$g" --log info \
    >>"$OUT/gw-$g.log" 2>&1 &
  pid=$!
  echo "$pid" >"$W/gw-$g.pid"
  vm_wait 120 port_open "$port" && return 0
  tail -20 "$OUT/gw-$g.log"
  return 1
}
if ! VM_CHECK_TIMEOUT=300 vm_check "rustio serve --gateway gw-a (127.0.0.1:$PORT_A) and gw-b (127.0.0.1:$PORT_B) listen" \
  eval 'start_gw a && start_gw b'; then
  cleanup; vm_summary; exit 1
fi

# --- open-iscsi: discovery through each portal, login to both ---
discover() {
  local port lines bad
  for port in $PORT_A $PORT_B; do
    iscsiadm -m discovery -t sendtargets -p "127.0.0.1:$port" >"$W/disc-$port" 2>&1 || { cat "$W/disc-$port"; return 1; }
    sed "s/^/$port: /" "$W/disc-$port"
    grep -q " $TGT\$" "$W/disc-$port" || { echo "target not discovered through $port"; return 1; }
    # Every advertised portal (address:port,tpgt IQN) must be a loopback address.
    lines=$(grep -c . "$W/disc-$port")
    bad=$(awk '{split($1, a, ","); p = a[1]; sub(/:[0-9]+$/, "", p); if (p != "127.0.0.1") print}' "$W/disc-$port")
    ((lines > 0)) && [[ -z "$bad" ]] || { echo "non-loopback portal advertised: $bad"; return 1; }
  done
}
modprobe -a dm_multipath dm_queue_length scsi_dh_alua 2>&1 | sed 's/^/    modprobe: /'
# multipathd skips block devices udev has not initialized (no udev database entry), so
# the guest runs udevd (no systemd: by hand) before the iSCSI disks appear.
start_udevd() {
  [[ -S /run/udev/control ]] && return 0
  /lib/systemd/systemd-udevd --daemon --resolve-names=never || return 1
  vm_wait 30 test -S /run/udev/control || return 1
  udevadm trigger --action=add --subsystem-match=block
  udevadm settle --timeout=60
}
vm_check "udevd starts" start_udevd
vm_check "iscsid starts" vm_start_iscsid
vm_check "sendtargets discovery through both portals lists $TGT with only 127.0.0.1 addresses" discover

# sd_port DEV: the target port (3260/3261) of the iSCSI session behind /dev/sdX.
sd_port() {
  local p s
  p=$(readlink -f "/sys/block/${1##*/}") || return 1
  s=$(grep -oE '/session[0-9]+/' <<<"$p" | tr -d /) || return 1
  cat "/sys/class/iscsi_connection/connection${s#session}:0/persistent_port"
}
# disk_for PORT: the /dev/sdX of the session to that port.
disk_for() {
  local b
  for b in /sys/block/sd*; do
    [[ -e "$b" ]] || continue
    [[ "$(sd_port "$b" 2>/dev/null)" == "$1" ]] && { echo "/dev/${b##*/}"; return 0; }
  done
  return 1
}
login() {
  local port
  for port in $PORT_A $PORT_B; do
    iscsiadm -m node -T "$TGT" -p "127.0.0.1:$port" --login || return 1
  done
  vm_wait 60 disk_for $PORT_A && vm_wait 60 disk_for $PORT_B || { iscsiadm -m session -P 3; return 1; }
  echo "gw-a: $(disk_for $PORT_A), gw-b: $(disk_for $PORT_B)"
}
vm_check "login to both portals: one SCSI disk per gateway" login
DISK_A=$(disk_for $PORT_A)
DISK_B=$(disk_for $PORT_B)
vm_log "gw-a path ${DISK_A:-none}, gw-b path ${DISK_B:-none}"

identity() {
  local d
  for d in "$DISK_A" "$DISK_B"; do
    [[ -b "$d" ]] || return 1
    echo "$d: vendor '$(cat /sys/block/${d##*/}/device/vendor)' model '$(cat /sys/block/${d##*/}/device/model)'" \
      "wwid $(cat /sys/block/${d##*/}/device/wwid)" \
      "access_state $(cat /sys/block/${d##*/}/device/access_state 2>/dev/null)"
  done
  [[ "$(cat /sys/block/${DISK_A##*/}/device/wwid)" == "$(cat /sys/block/${DISK_B##*/}/device/wwid)" ]] ||
    { echo "the two paths report different identifiers"; return 1; }
  # The device section of docs/ceph.md matches on vendor RUSTIO, product rustio-lu.
  [[ "$(cat /sys/block/${DISK_A##*/}/device/vendor)" =~ ^RUSTIO\ *$ ]] &&
    [[ "$(cat /sys/block/${DISK_A##*/}/device/model)" =~ ^rustio-lu\ *$ ]]
}
VM_CHECK_VERBOSE=1 vm_check "both paths: same WWID, INQUIRY vendor RUSTIO, product rustio-lu" identity

# gw-a owns the image before multipath looks (the first write takes the RBD lock), so
# the priorities multipath reads are deterministic: gw-a active/optimized.
rtpg_a_ao() { # RTPG through gw-a's path: group 1 (gw-a) active/optimized
  sg_rtpg -d "$DISK_A" 2>/dev/null | grep -A1 -E 'group id : 0x0*1 ' | grep -q 'active/optimized'
}
own_a() {
  dd if=/dev/zero of="$DISK_A" bs=4096 count=1 seek=$((SIZE / 4096 - 1)) oflag=direct conv=notrunc || return 1
  vm_wait 30 rtpg_a_ao || { sg_rtpg -d "$DISK_A"; return 1; }
  sg_rtpg -d "$DISK_B" 2>&1 | grep -E 'group id|access state'
  # The kernel's ALUA handler re-reads RTPG on a unit attention (2Ah/06h) or activation.
  echo "sysfs access_state: gw-a $(cat /sys/block/${DISK_A##*/}/device/access_state)," \
    "gw-b $(cat /sys/block/${DISK_B##*/}/device/access_state)"
}
VM_CHECK_VERBOSE=1 vm_check "a write through gw-a's path makes gw-a the owner (RTPG: group 1 active/optimized)" own_a

# --- dm-multipath with the docs' configuration ---
# /etc is the read-only host root: an overlay makes /etc/multipath.conf and /etc/multipath
# (wwids, bindings) writable in the guest only.
etc_overlay() {
  [[ "$(stat -f -c %T /etc)" == overlayfs ]] && return 0
  mkdir -p /tmp/etc-ov/u /tmp/etc-ov/w
  modprobe overlay 2>/dev/null
  mount -t overlay overlay -o lowerdir=/etc,upperdir=/tmp/etc-ov/u,workdir=/tmp/etc-ov/w /etc
}
# The device section of docs/ceph.md, section "Initiators": the first ```text block after
# "Linux dm-multipath".
docs_conf() {
  awk '/^Linux dm-multipath/ {f = 1} f && /^```text/ {p = 1; next} p && /^```/ {exit} p' "$ROOT/docs/ceph.md"
}
write_conf() {
  docs_conf >"$W/docs-multipath.conf"
  if [[ -n "${MP_FAST_IO_FAIL_TMO:-}" ]]; then # measuring another value than the docs'
    sed -i -E "s/^( *fast_io_fail_tmo +)[0-9]+/\1$MP_FAST_IO_FAIL_TMO/" "$W/docs-multipath.conf"
  fi
  grep -q 'vendor *"RUSTIO"' "$W/docs-multipath.conf" || { echo "no device section found in docs/ceph.md"; return 1; }
  # Guest-only defaults: the WWID from sysfs (VPD 0x83), not udev's ID_SERIAL (the guest's
  # udevd did no full coldplug); multipath every path (nothing else is attached to the
  # guest); map name = WWID.
  {
    echo 'defaults {'
    echo '    uid_attribute ""'
    echo '    find_multipaths "off"'
    echo '    user_friendly_names "no"'
    echo '    polling_interval 2'
    echo '}'
    cat "$W/docs-multipath.conf"
  } >/etc/multipath.conf
  mkdir -p /etc/multipath
  cat /etc/multipath.conf
}
start_multipathd() {
  multipathd -d -s -v3 >"$OUT/multipathd.log" 2>&1 &
  echo $! >"$W/multipathd.pid"
  vm_wait 60 bash -c 'timeout 10 multipathd show daemon | grep -qE "idle|running"' || { tail -30 "$OUT/multipathd.log"; return 1; }
  # multipathd builds the maps at start; `multipath` adds one if it raced the discovery.
  vm_wait 60 bash -c '[ -n "$(timeout 10 dmsetup ls --target multipath 2>/dev/null | grep -v "No devices")" ]' || timeout 60 multipath -v2
  vm_wait 30 bash -c '[ -n "$(timeout 10 dmsetup ls --target multipath 2>/dev/null | grep -v "No devices")" ]' ||
    { tail -40 "$OUT/multipathd.log"; return 1; }
}
vm_check "writable /etc overlay in the guest for multipath.conf" etc_overlay
VM_CHECK_VERBOSE=1 vm_check "/etc/multipath.conf = guest defaults + the device section of docs/ceph.md" write_conf
vm_check "multipathd starts and builds a map" start_multipathd
MAP=$(timeout 10 dmsetup ls --target multipath 2>/dev/null | awk 'NR == 1 && $1 != "No" {print $1}')
vm_log "map: ${MAP:-none}"

logged() { "$@" >"$W/logged" 2>&1; } # vm_wait discards the output; keep the last attempt's
# ll_pgs: one line per path group of the map: "<status> <prio> <dev>:<dm state>:<checker>..."
ll_pgs() {
  timeout 30 multipath -ll "$MAP" 2>/dev/null | awk '
    /policy=/ { if (pg != "") print pg; st = $0; sub(/.*status=/, "", st); sub(/ .*/, "", st)
                pr = $0; sub(/.*prio=/, "", pr); sub(/ .*/, "", pr); pg = st " " pr; next }
    / sd[a-z]+ / { for (i = 1; i <= NF; i++) if ($i ~ /^sd[a-z]+$/) pg = pg " " $i ":" $(i + 2) ":" $(i + 3) }
    END { if (pg != "") print pg }'
}
map_ok() {
  local pgs
  timeout 30 multipath -ll
  pgs=$(ll_pgs)
  echo "path groups: $pgs"
  [[ $(timeout 10 dmsetup ls --target multipath | grep -c .) -eq 1 ]] || { echo "not exactly one map"; return 1; }
  [[ $(grep -c . <<<"$pgs") -eq 2 ]] || { echo "not two path groups"; return 1; }
  [[ $(grep -oE ' sd[a-z]+:' <<<"$pgs" | grep -c .) -eq 2 ]] || { echo "not two paths"; return 1; }
  # First group: gw-a's path, active, ALUA prio 50 (active/optimized) + 80 for the PREF
  # bit rustio sets on the owner's group (prio_args exclusive_pref_bit); second: gw-b's,
  # prio 10 (active/non-optimized), enabled.
  sed -n 1p <<<"$pgs" | grep -qE "^active 1?[35]0 ${DISK_A##*/}:active:ready" &&
    sed -n 2p <<<"$pgs" | grep -qE "^enabled 10 ${DISK_B##*/}:active:ready"
}
VM_CHECK_TIMEOUT=60 vm_check "multipath -ll: one map, two paths, two ALUA path groups (gw-a active/optimized: prio 130 active; gw-b prio 10 enabled)" \
  vm_wait 45 logged map_ok || sed 's/^/    | /' "$W/logged"
for s in /sys/class/iscsi_session/session*; do
  vm_log "${s##*/}: recovery_tmo $(cat "$s/recovery_tmo"), port $(cat /sys/class/iscsi_connection/connection${s##*session}:0/persistent_port 2>/dev/null)"
done

# --- fio with verify across the kill of the owning gateway ---
DEV=/dev/mapper/${MAP:-none}
FIO_ARGS=(--name=mpath --filename="$DEV" --rw=randwrite --bs=4k --size="$FIO_SIZE" --ioengine=libaio
  --iodepth=8 --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0
  --randseed=2201)
owner_side() { # a|b: the gateway behind the map's active path group
  local dev
  dev=$(ll_pgs | awk '$1 == "active" {print $3}' | head -1 | cut -d: -f1)
  [[ "/dev/$dev" == "$DISK_A" ]] && echo a
  [[ "/dev/$dev" == "$DISK_B" ]] && echo b
}
fio_kill() {
  local side pid fpid t_kill rc=0
  [[ -b "$DEV" ]] || { echo "no $DEV"; return 1; }
  side=$(owner_side)
  [[ -n "$side" ]] || { echo "no active path group"; return 1; }
  echo "active group: gw-$side"
  echo "$side" >"$W/killed"
  timeout 600 fio "${FIO_ARGS[@]}" --write_lat_log="$W/lat" --output-format=json \
    --output="$OUT/fio-kill.json" >"$W/fio-kill.out" 2>&1 &
  fpid=$!
  sleep "$KILL_AFTER"
  kill -0 "$fpid" 2>/dev/null || { echo "fio ended before the kill"; cat "$W/fio-kill.out"; return 1; }
  pid=$(gw_pid "$side")
  t_kill=$(now_ms)
  kill -KILL "$pid" || return 1
  echo "$t_kill" >"$W/t_kill"
  echo "kill -9 gw-$side (pid $pid) at $(date -u +%T.%3N)"
  wait "$fpid" || rc=$?
  echo "fio exit $rc after $(( ($(now_ms) - t_kill) / 1000 ))s from the kill"
  cat "$W/fio-kill.out"
  ((rc == 0)) || return 1
  python3 - "$OUT/fio-kill.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
j = d["jobs"][0]
w, r = j["write"], j["read"]
print("error", j["error"], "write ios", w["total_ios"], "read (verify) ios", r["total_ios"],
      "write clat max %.1f ms" % (w["clat_ns"]["max"] / 1e6))
sys.exit(0 if j["error"] == 0 and w["total_ios"] > 0 and r["total_ios"] == w["total_ios"] else 1)
PY
}
VM_CHECK_TIMEOUT=700 VM_CHECK_VERBOSE=1 vm_check \
  "fio randwrite 4k crc32c verify on $DEV survives kill -9 of the owning gateway (exit 0, every block verified)" fio_kill

# The I/O stall: the longest gap between consecutive write completions in fio's
# completion-latency log (time in ms since fio started), and the longest latency.
stall() {
  local f
  f=$(ls "$W"/lat_clat.*.log 2>/dev/null | head -1)
  [[ -s "$f" ]] || { echo "no latency log"; return 1; }
  awk -F', *' '$3 == 1 { if (n++ && $1 - prev > gap) { gap = $1 - prev; at = prev } prev = $1
                         if ($2 > max) max = $2 }
    END { printf "stall %.1f s (no write completed from %.1f s to %.1f s of the run); longest write latency %.1f s; %d writes\n",
          gap / 1000, at / 1000, (at + gap) / 1000, max / 1e9, n }' "$f" | tee "$W/stall"
  cp "$f" "$OUT/fio-clat.log" 2>/dev/null
  awk '{ exit !($2 + 0 > 0) }' "$W/stall"
}
VM_CHECK_VERBOSE=1 vm_check "I/O stall measured from fio's latency log" stall
vm_log "multipath I/O stall across kill -9 of the owner: $(cat "$W/stall" 2>/dev/null)"

after_kill() {
  local side dead live pgs
  side=$(cat "$W/killed") || return 1
  if [[ $side == a ]]; then dead=${DISK_A##*/}; live=${DISK_B##*/}; else dead=${DISK_B##*/}; live=${DISK_A##*/}; fi
  pgs=$(ll_pgs)
  echo "path groups: $pgs"
  grep -qE "^active [0-9]+ $live:active:ready" <<<"$pgs" &&
    grep -qE " $dead:failed:(faulty|shaky)" <<<"$pgs" &&
    ! grep -qE "^active [0-9]+ $dead:" <<<"$pgs"
}
if VM_CHECK_TIMEOUT=90 vm_check "multipath -ll after the kill: the killed gateway's path failed, the other group active" \
  vm_wait 60 logged after_kill; then
  timeout 30 multipath -ll "$MAP" 2>&1 | sed 's/^/    | /'
else
  sed 's/^/    | /' "$W/logged"; timeout 30 multipath -ll 2>&1 | sed 's/^/    | /'
fi

readback() {
  timeout 600 fio "${FIO_ARGS[@]}" --verify_only=1 --output-format=json --output="$OUT/fio-readback.json" || return 1
  python3 - "$OUT/fio-readback.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print("error", j["error"], "verified (read) ios", j["read"]["total_ios"])
sys.exit(0 if j["error"] == 0 and j["read"]["total_ios"] > 0 else 1)
PY
}
VM_CHECK_TIMEOUT=700 VM_CHECK_VERBOSE=1 vm_check "read-back pass after the kill: fio verify_only of every block through the surviving gateway" readback

# --- cleanup ---
teardown() {
  timeout 30 multipath -f "$MAP" || return 1
  local p
  p=$(cat "$W/multipathd.pid")
  kill -TERM "$p"; vm_wait 20 bash -c "! kill -0 $p" || { echo "multipathd did not stop"; return 1; }
  timeout 90 iscsiadm -m node -T "$TGT" --logout
  vm_wait 30 bash -c '! ls /sys/class/iscsi_session/session* >/dev/null 2>&1' || { echo "sessions left"; return 1; }
}
VM_CHECK_TIMEOUT=180 vm_check "map flushed, multipathd stopped, both sessions logged out" teardown && MAP=
live_gw_alive() {
  local side
  side=$(cat "$W/killed") || return 1
  [[ $side == a ]] && side=b || side=a
  kill -0 "$(gw_pid $side)"
}
vm_check "the surviving gateway is still running" live_gw_alive
if grep -qi panic "$OUT"/gw-*.log; then
  vm_fail "no panic in the gateway logs"; grep -i -m5 panic "$OUT"/gw-*.log | sed 's/^/    | /'
fi
cleanup
[[ -n "${MP_REUSE_CEPH:-}" ]] || VM_CHECK_VERBOSE=1 vm_check "cluster stopped: every daemon gone, its directory removed" ceph_gone
vm_summary
