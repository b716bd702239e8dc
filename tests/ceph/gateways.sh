#!/usr/bin/env bash
# A gateway group of two `rustio serve --gateway` processes (gw-a, gw-b) on 127.0.0.1
# exporting one RBD image of the running test cluster (start.sh), checked with
# tests/ceph/gw-initiator.py (a minimal iSCSI initiator printing sense codes) and
# iscsi-inq:
#   * identity: VPD 0x80 and the logical-unit designators of VPD 0x83 (NAA, T10) are
#     equal through both gateways, the target port designators differ, TPGS = 11b;
#   * RTPG through each gateway lists both groups, exactly one active/optimized;
#   * implicit takeover: a write through the standby gateway is answered NOT READY,
#     ASYMMETRIC ACCESS STATE TRANSITION (04h/0Ah), then GOOD, and RTPG flips on both;
#   * fencing: gw-a owns, is SIGSTOPped, gw-b takes over and writes a marker, gw-a is
#     SIGCONTed: its write is refused and the image holds gw-b's data;
#   * failover: gw-a owns and is killed with SIGKILL; the time until a write through gw-b
#     is GOOD again is printed;
#   * failover under load: gw-initiator.py's writer (numbered, checksummed 4 KiB blocks,
#     several writes in flight) writes through gw-a, gw-a is killed with SIGKILL
#     mid-stream, the writer logs in through gw-b, re-issues what was not acknowledged
#     and goes on; then every acknowledged block is read back through gw-b and verified,
#     and the time to resume (goal <= 10 s) is checked and printed with the timeouts;
#   * reservations across gateways (SPC-4 5.13): X registers and reserves through gw-a,
#     Y's WRITE through gw-b gets RESERVATION CONFLICT while its READ passes, READ
#     RESERVATION through gw-b shows X's key and type, the release through gw-a is seen
#     on gw-b (and raises RESERVATIONS RELEASED for registered Y when the type is
#     registrants-only, not for WRITE EXCLUSIVE), registrations and the reservation
#     survive kill -9 and restart of both gateways, PREEMPT and CLEAR through gw-b raise REGISTRATIONS /
#     RESERVATIONS PREEMPTED on gw-a; the times until the other gateway sees each
#     change are printed.
# Called by run-tests.sh; standalone: CEPH_DIR=<cluster dir of start.sh> tests/ceph/gateways.sh
# Prints PASS/FAIL lines; exits non-zero on failure. Every wait is bounded; the script
# stops only the processes it started.
#
# Env: CEPH_DIR (required), RUSTIO_RBD_BIN, PORT_A/PORT_B (23381/23382),
#      GW_DEBOUNCE (takeover debounce, seconds, default 2), RUSTIO_CEPH_POOL (rbd).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
: "${CEPH_DIR:?CEPH_DIR must name the cluster dir of tests/ceph/start.sh}"
CONF=$CEPH_DIR/ceph.conf
POOL=${RUSTIO_CEPH_POOL:-rbd}
PORT_A=${PORT_A:-23381}
PORT_B=${PORT_B:-23382}
DEBOUNCE=${GW_DEBOUNCE:-2}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rustio-gateways.XXXXXX")
T0=$(date +%s)
passed=0
failed=0
PID_A=""
PID_B=""
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
. "$ROOT/tests/ceph/gw-lib.sh"

IMAGE=rustio-gw-$$
TGT=iqn.2024-01.org.rustio.test:gw
INIT=iqn.2024-01.org.rustio.test:gw-client
cleanup() {
    stop_pid "$PID_A"
    stop_pid "$PID_B"
    RBD rm --no-progress "$POOL/$IMAGE" >/dev/null 2>&1
    if [ "$failed" -ne 0 ]; then
        for g in a b; do
            [ -f "$WORK/gw-$g.log" ] && { echo "--- gw-$g log (tail)"; tail -25 "$WORK/gw-$g.log"; }
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -r "$CONF" ] || { fail "gateways (no $CONF)"; exit 1; }
for t in iscsi-inq python3 rbd; do
    command -v "$t" >/dev/null || { fail "gateways ($t not installed)"; exit 1; }
done
release_rustio RUSTIO_RBD_BIN rbd || { fail "gateways: no rustio binary (the --features rbd build failed, or RUSTIO_RBD_BIN is not executable)"; exit 1; }

SIZE=67108864
RBD create --size $((SIZE >> 20))M "$POOL/$IMAGE" || { fail "gateways: create image"; exit 1; }
cat >"$WORK/group.json" <<EOF
{
  "storage_objects": [
    {"plugin": "user", "name": "gw", "config": "rbd/$POOL/$IMAGE;conf=$CONF", "size": $SIZE}
  ],
  "targets": [
    {"wwn": "$TGT", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
      "luns": [{"index": 0, "storage_object": "/backstores/user/gw"}],
      "portals": [], "node_acls": []}]}
  ],
  "rustio_gateway_group": {
    "name": "test-group", "non_owner_state": "standby", "takeover_debounce_secs": $DEBOUNCE,
    "gateways": [
      {"name": "gw-a", "portals": ["127.0.0.1:$PORT_A"]},
      {"name": "gw-b", "portals": ["127.0.0.1:$PORT_B"]}
    ]
  }
}
EOF

# Configuration errors are clear.
if "$RUSTIO_RBD_BIN" serve --config "$WORK/group.json" --gateway gw-c >"$WORK/bad.log" 2>&1; then
    fail "gateways: unknown gateway refused"
elif grep -q 'gateway "gw-c" is not a member of group "test-group" (members: gw-a, gw-b)' "$WORK/bad.log"; then
    pass "gateways: unknown gateway refused with the member list"
else
    fail "gateways: unknown gateway message"; tail -3 "$WORK/bad.log"
fi

start_gw() { # name port → sets LAST_PID (tests/ceph/gw-lib.sh)
    gw_spawn "$2" "$WORK/$1.log" env RUST_LOG=info "$RUSTIO_RBD_BIN" serve --config "$WORK/group.json" \
        --gateway "$1" --log info
}
start_gw gw-a "$PORT_A" && PID_A=$LAST_PID && start_gw gw-b "$PORT_B" && PID_B=$LAST_PID ||
    { fail "gateways: both gateways start"; exit 1; }
pass "gateways: both gateways start"

C() { # port command... (through the initiator; 120 s bound per call)
    local port=$1; shift
    timeout 120 python3 "$ROOT/tests/ceph/gw-initiator.py" "127.0.0.1:$port" "$TGT" "$INIT" "$@"
}
rtpg_is() { # port expected [seconds]: polls RTPG until it prints expected
    local port=$1 want=$2 secs=${3:-20} got=""
    for _ in $(seq 1 $((secs * 5))); do
        got=$(C "$port" rtpg 2>&1 | tail -1)
        [ "$got" = "$want" ] && return 0
        sleep 0.2
    done
    echo "    RTPG through $port: '$got', expected '$want'"
    return 1
}

# --- identity ---
s_a=$(iscsi-inq -e 1 -c 128 "iscsi://127.0.0.1:$PORT_A/$TGT/0" 2>&1)
s_b=$(iscsi-inq -e 1 -c 128 "iscsi://127.0.0.1:$PORT_B/$TGT/0" 2>&1)
if [ "$s_a" = "$s_b" ] && echo "$s_a" | grep -q '\[rbd\.[0-9]*\.[0-9a-f]*\]'; then
    pass "gateways: same VPD 0x80 serial through both ($s_a)"
else
    fail "gateways: same VPD 0x80 serial (a: $s_a; b: $s_b)"
fi
# VPD 0x83: logical-unit designators equal, target port designators differ.
designators() { # hex of page 0x83, association: prints "type:value" per designator
    python3 -c '
import sys
d = bytes.fromhex(sys.argv[1]); i = 4; want = int(sys.argv[2])
while i + 4 <= len(d):
    n = d[i + 3]
    if (d[i + 1] >> 4) & 3 == want: print("%d:%s" % (d[i + 1] & 0xf, d[i + 4:i + 4 + n].hex()))
    i += 4 + n' "$1" "$2"
}
v_a=$(C "$PORT_A" inq 0x83 | tail -1)
v_b=$(C "$PORT_B" inq 0x83 | tail -1)
lu_a=$(designators "$v_a" 0 2>/dev/null)
lu_b=$(designators "$v_b" 0 2>/dev/null)
if [ -n "$lu_a" ] && [ "$lu_a" = "$lu_b" ] && echo "$lu_a" | grep -q '^3:6'; then
    pass "gateways: same NAA and T10 designators (VPD 0x83) through both"
else
    fail "gateways: same VPD 0x83 identity (a: $lu_a; b: $lu_b)"
fi
tp_a=$(designators "$v_a" 1 2>/dev/null | grep -E '^(4|5):' | tr '\n' ' ')
tp_b=$(designators "$v_b" 1 2>/dev/null | grep -E '^(4|5):' | tr '\n' ' ')
if [ "$tp_a" = "4:00000001 5:00000001 " ] && [ "$tp_b" = "4:00000002 5:00000002 " ]; then
    pass "gateways: relative port / port group designators 1 and 2"
else
    fail "gateways: target port designators (a: $tp_a; b: $tp_b)"
fi
std=$(C "$PORT_B" inq std | tail -1)
if [ $(( (0x${std:10:2} >> 4) & 3 )) -eq 3 ]; then pass "gateways: INQUIRY TPGS = implicit and explicit (11b)"; else fail "gateways: TPGS (byte 5 = ${std:10:2})"; fi

# --- ownership: the first write through gw-a takes the lock ---
if C "$PORT_A" write 0 0xa0 60 >"$WORK/w0" 2>&1 && rtpg_is "$PORT_A" "1:AO 2:S" && rtpg_is "$PORT_B" "1:AO 2:S"; then
    pass "gateways: gw-a owns after a write; RTPG through both: 1 AO, 2 standby"
else
    fail "gateways: gw-a owns after a write"; sed 's/^/    /' "$WORK/w0" | tail -5
fi

# --- implicit takeover through gw-b while gw-a lives ---
t=$(now_ms)
C "$PORT_B" write 16 0xb1 60 >"$WORK/w1" 2>&1; rc=$?
ms=$(( $(now_ms) - t ))
if [ $rc -eq 0 ] && grep -q 'retry: CHECK CONDITION 2/04/0a' "$WORK/w1"; then
    pass "gateways: write through gw-b: ASYMMETRIC ACCESS STATE TRANSITION, then GOOD (${ms} ms)"
else
    fail "gateways: takeover through gw-b"; sed 's/^/    /' "$WORK/w1" | tail -5
fi
echo "gateways: takeover from a live owner: ${ms} ms"
if rtpg_is "$PORT_B" "1:S 2:AO" && rtpg_is "$PORT_A" "1:S 2:AO" 30; then
    pass "gateways: RTPG flipped through both (gw-a noticed it lost the lock)"
else
    fail "gateways: RTPG flipped through both"
fi

# --- fencing: gw-a owns again, is paused, gw-b takes over, gw-a resumes ---
sleep $((DEBOUNCE + 1))
if C "$PORT_A" write 32 0xa1 60 >"$WORK/w2" 2>&1 && rtpg_is "$PORT_A" "1:AO 2:S"; then
    pass "gateways: gw-a takes the lock back after the debounce"
else
    fail "gateways: gw-a takes the lock back"; sed 's/^/    /' "$WORK/w2" | tail -5
fi
kill -STOP "$PID_A"
t=$(now_ms)
C "$PORT_B" write 32 0xb2 90 >"$WORK/w3" 2>&1; rc=$?
ms=$(( $(now_ms) - t ))
[ $rc -eq 0 ] && pass "gateways: gw-b writes while gw-a is stopped (${ms} ms)" ||
    { fail "gateways: gw-b writes while gw-a is stopped"; sed 's/^/    /' "$WORK/w3" | tail -5; }
reopened_before=$(grep -c 'image reopened with a new client' "$WORK/gw-a.log")
kill -CONT "$PID_A"
# One attempt (unit attentions of the new session aside): refused with a retryable
# NOT READY, ASYMMETRIC ACCESS STATE TRANSITION.
C "$PORT_A" write 32 0xa2 0 >"$WORK/w4" 2>&1; rc=$?
# Refused either way: transitioning while it notices it lost the lock and reopens, or
# standby (04h/0Bh) once it has and the debounce keeps it from taking the lock back.
if [ $rc -ne 0 ] && grep -qx "CHECK CONDITION 2/04/0[ab]" <(tail -1 "$WORK/w4"); then
    pass "gateways: resumed gw-a's write refused ($(tail -1 "$WORK/w4"): transitioning or standby)"
else
    fail "gateways: resumed gw-a's write refused"; sed 's/^/    /' "$WORK/w4" | tail -5
fi
r=$(C "$PORT_B" read 32 | tail -1)
[ "$r" = "b2 uniform" ] && pass "gateways: the image holds gw-b's data, not gw-a's stale write" ||
    fail "gateways: image data after fencing ($r)"
reopened=0
for _ in $(seq 1 300); do
    [ "$(grep -c 'image reopened with a new client' "$WORK/gw-a.log")" -gt "$reopened_before" ] && { reopened=1; break; }
    sleep 0.1
done
[ $reopened = 1 ] && pass "gateways: fenced gw-a reopened the image with a new client" ||
    fail "gateways: fenced gw-a reopened the image"

# --- failover: the owner is killed ---
sleep $((DEBOUNCE + 1))
if C "$PORT_A" write 48 0xa3 90 >"$WORK/w5" 2>&1 && rtpg_is "$PORT_A" "1:AO 2:S" && rtpg_is "$PORT_B" "1:AO 2:S" 30; then
    pass "gateways: gw-a owns again"
else
    fail "gateways: gw-a owns again"; sed 's/^/    /' "$WORK/w5" | tail -5
fi
# gw-b lost the lock just now (it noticed through RTPG); wait out its debounce so the
# time below is the takeover of a dead owner, not the anti-ping-pong window.
sleep $((DEBOUNCE + 1))
kill -KILL "$PID_A"; wait "$PID_A" 2>/dev/null; PID_A=""
t=$(now_ms)
C "$PORT_B" write 48 0xb3 90 >"$WORK/w6" 2>&1; rc=$?
ms=$(( $(now_ms) - t ))
echo "gateways: I/O through gw-b resumed ${ms} ms after kill -9 of the owner"
[ $rc -eq 0 ] && pass "gateways: I/O resumes through gw-b after kill -9 of gw-a (${ms} ms)" ||
    { fail "gateways: I/O resumes through gw-b after kill -9"; sed 's/^/    /' "$WORK/w6" | tail -5; }
r=$(C "$PORT_B" read 48 | tail -1)
[ "$r" = "b3 uniform" ] && pass "gateways: data written after failover reads back" || fail "gateways: read after failover ($r)"
r=$(C "$PORT_B" read 16 | tail -1)
[ "$r" = "b1 uniform" ] && pass "gateways: data of the first takeover intact" || fail "gateways: data of the first takeover ($r)"

# --- failover under load (issue #22): a checksummed writer through gw-a, kill -9 of gw-a
# mid-stream, the writer continues through gw-b and verifies every acknowledged block ---
# The region is the image's upper half (the other sections use its first LBAs), 8 MiB,
# rewritten about once a second, so blocks written through gw-b overwrite blocks gw-a
# acknowledged: a late write of the dead owner landing after them would show as a block
# older than acknowledged.
T_LOAD=$(date +%s)
if start_gw gw-a "$PORT_A"; then PID_A=$LAST_PID; else fail "gateways: gw-a restarts for the writer"; fi
if [ -n "$PID_A" ] && C "$PORT_A" write 8 0xa4 90 >"$WORK/l0" 2>&1 && rtpg_is "$PORT_A" "1:AO 2:S" &&
    rtpg_is "$PORT_B" "1:AO 2:S" 30; then
    pass "gateways: under load: gw-a restarted and owns"
else
    fail "gateways: under load: gw-a restarted and owns"; sed 's/^/    /' "$WORK/l0" | tail -5
fi
# As above: gw-b lost the image just now; a takeover by gw-b inside its debounce window
# would be answered 04h/0Bh until the window ends, which is not what a dead owner costs.
sleep $((DEBOUNCE + 1))
W_TIMEOUT=30  # the writer's I/O timeout: how long a silent (not closed) path is waited for
timeout 300 python3 "$ROOT/tests/ceph/gw-initiator.py" "127.0.0.1:$PORT_A" "$TGT" "$INIT" writer \
    "127.0.0.1:$PORT_B" $((SIZE / 512 / 2)) 2048 6 after=4 qd=8 timeout=$W_TIMEOUT deadline=150 \
    >"$WORK/load" 2>&1 &
WPID=$!
for _ in $(seq 1 300); do # its first acknowledged write, at most 30 s
    grep -q '^started ' "$WORK/load" && break
    kill -0 "$WPID" 2>/dev/null || break
    sleep 0.1
done
sleep 3
kill_ms=$(now_ms)
if [ -n "$PID_A" ]; then kill -KILL "$PID_A"; wait "$PID_A" 2>/dev/null; PID_A=""; fi
wait "$WPID"; wrc=$?
wval() { sed -nE "s/^$1 (-?[0-9.]+)\$/\1/p" "$WORK/load" | tail -1; }
w_bad=$(wval blocks_bad); w_ver=$(wval blocks_verified); w_acked=$(wval blocks_acknowledged_distinct)
w_written=$(wval blocks_written); w_ack=$(wval blocks_acknowledged); w_new=$(wval blocks_newer_than_acknowledged)
w_fo=$(wval failovers); w_resume=$(wval resume_ms)
w_before=$(sed -nE 's/^writes_before ([0-9]+) writes_after ([0-9]+)$/\1/p' "$WORK/load")
w_after=$(sed -nE 's/^writes_before ([0-9]+) writes_after ([0-9]+)$/\2/p' "$WORK/load")
resumed_at=$(sed -nE 's/^resumed [^ ]+ at ([0-9]+) .*/\1/p' "$WORK/load" | head -1)
if grep -q "^failed_path 127.0.0.1:$PORT_A\$" "$WORK/load" && [ "${w_fo:-0}" -ge 1 ] &&
    [ "${w_before:-0}" -gt 0 ] && [ "${w_after:-0}" -gt 0 ]; then
    pass "gateways: under load: the writer lost gw-a mid-stream and went on through gw-b ($w_before writes acknowledged through gw-a, $w_after through gw-b)"
else
    fail "gateways: under load: the writer went on through gw-b after kill -9 of gw-a"
fi
if [ "$wrc" -eq 0 ] && [ "${w_bad:-1}" -eq 0 ] && [ "${w_acked:-0}" -gt 0 ] && [ "$w_ver" = "$w_acked" ]; then
    pass "gateways: under load: every acknowledged block verified through gw-b ($w_ver blocks, $w_new of them rewritten later; $w_written written, $w_ack acknowledged, 0 bad)"
else
    fail "gateways: under load: acknowledged blocks verified (writer exit $wrc, bad ${w_bad:-?}, verified ${w_ver:-?} of ${w_acked:-?})"
fi
[ "$wrc" -eq 0 ] && [ "${w_bad:-1}" -eq 0 ] || sed 's/^/    /' "$WORK/load" | tail -40
osd_to=$(sed -nE 's/.*osd_op_timeout=([0-9]+).*/\1/p' "$WORK/gw-b.log" | head -1)
echo "gateways: under load: resume_ms ${w_resume:-?} (first failed I/O through gw-a to the first GOOD write through gw-b);" \
    "kill -9 to that write: $([ -n "$resumed_at" ] && echo $((resumed_at - kill_ms)) || echo '?') ms;" \
    "IOPS before $(wval iops_before), after $(wval iops_after); retries: $(sed -n 's/^retries //p' "$WORK/load")"
echo "gateways: under load: timeouts in force: takeover debounce ${DEBOUNCE} s (GW_DEBOUNCE; gw-b lost the image" \
    "longer ago, so it does not delay this takeover); the lock handover: gw-b breaks the dead owner's lock" \
    "(rbd_lock_break, blocklisting it first) without waiting for its watch to expire;" \
    "rados_osd_op_timeout ${osd_to:-?} s (engine, bounds each OSD request); the writer: re-login at once on" \
    "EOF/reset, ${W_TIMEOUT} s I/O timeout for a silent path, 04h/0Ah and 04h/0Bh retried every 0.1 s, UA at once"
if [ -n "$w_resume" ] && [ "$w_resume" -ge 0 ] && [ "$w_resume" -le 10000 ]; then
    pass "gateways: under load: I/O resumed through gw-b within 10 s of the failure (${w_resume} ms)"
else
    fail "gateways: under load: I/O resumed through gw-b within 10 s (resume_ms ${w_resume:-?})"
fi
echo "gateways: under load: section $(( $(date +%s) - T_LOAD ))s"

# --- reservations across gateways (SPC-4 5.13, issue #22 item 4) ---
# Initiator X uses gw-a, initiator Y gw-b; the state lives in the cluster's reservation
# object. Only PERSISTENT RESERVE commands go through gw-a, so gw-b stays the owner and
# no takeover (or its debounce) is involved.
X=$INIT-x
Y=$INIT-y
KX=abcd0000000000a1
KY=abcd0000000000b2
CI() { # port initiator command...
    local port=$1 init=$2; shift 2
    timeout 120 python3 "$ROOT/tests/ceph/gw-initiator.py" "127.0.0.1:$port" "$TGT" "$init" "$@"
}
is() { # file expected-last-line
    [ "$(tail -1 "$1")" = "$2" ]
}
visible_ms() { # poll-output-file start-ms: ms from start to the poll's "at" stamp
    local at
    at=$(sed -nE 's/^after [0-9]+ ms at ([0-9]+)$/\1/p' "$1" | tail -1)
    [ -n "$at" ] && echo $((at - $2)) || echo "?"
}
if start_gw gw-a "$PORT_A"; then PID_A=$LAST_PID; pass "gateways: gw-a restarts after kill -9"; else fail "gateways: gw-a restarts"; fi
CI "$PORT_A" "$X" prout register 0 0 "$KX" >"$WORK/r1" 2>&1 && is "$WORK/r1" GOOD &&
    CI "$PORT_A" "$X" prout reserve 1 "$KX" 0 >"$WORK/r2" 2>&1 && is "$WORK/r2" GOOD; rc=$?
t=$(now_ms)
if [ $rc -eq 0 ]; then
    pass "gateways: X registers and reserves WRITE EXCLUSIVE through gw-a"
else
    fail "gateways: X registers and reserves through gw-a"; tail -n 3 "$WORK/r1" "$WORK/r2" 2>/dev/null | sed 's/^/    /'
fi
CI "$PORT_B" "$Y" poll 30 "RESERVATION CONFLICT" write 64 0xc1 >"$WORK/r3" 2>&1; rc=$?
ms=$(visible_ms "$WORK/r3" "$t")
echo "gateways: reservation made through gw-a enforced on gw-b ${ms} ms after it was granted (a new session: Python start and login included)"
[ $rc -eq 0 ] && pass "gateways: Y's WRITE through gw-b: RESERVATION CONFLICT (${ms} ms)" ||
    { fail "gateways: Y's WRITE through gw-b: RESERVATION CONFLICT"; tail -3 "$WORK/r3" | sed 's/^/    /'; }
r=$(CI "$PORT_B" "$Y" read 64 2>&1 | tail -1)
case "$r" in
    *uniform | *mixed) pass "gateways: Y's READ through gw-b not refused under WRITE EXCLUSIVE ($r)" ;;
    *) fail "gateways: Y's READ through gw-b ($r)" ;;
esac
r=$(CI "$PORT_B" "$Y" prin resv 2>&1 | tail -1)
[ "$r" = "resv $KX 1" ] && pass "gateways: READ RESERVATION through gw-b: X's key, WRITE EXCLUSIVE" ||
    fail "gateways: READ RESERVATION through gw-b ($r, expected resv $KX 1)"
CI "$PORT_A" "$X" prout release 1 "$KX" 0 >"$WORK/r4" 2>&1 && is "$WORK/r4" GOOD; rc=$?
t=$(now_ms)
[ $rc -eq 0 ] && pass "gateways: X releases through gw-a" || { fail "gateways: X releases through gw-a"; tail -3 "$WORK/r4" | sed 's/^/    /'; }
CI "$PORT_B" "$Y" poll 30 "resv none" prin resv >"$WORK/r5" 2>&1; rc=$?
ms=$(visible_ms "$WORK/r5" "$t")
echo "gateways: release through gw-a visible on gw-b ${ms} ms after it was done (a new session: Python start and login included)"
[ $rc -eq 0 ] && pass "gateways: the reservation is gone through gw-b (${ms} ms)" ||
    { fail "gateways: reservation gone through gw-b"; tail -3 "$WORK/r5" | sed 's/^/    /'; }
CI "$PORT_B" "$Y" write 64 0xc2 30 >"$WORK/r6" 2>&1 && pass "gateways: Y's WRITE through gw-b GOOD after the release" ||
    { fail "gateways: Y's WRITE through gw-b after the release"; tail -3 "$WORK/r6" | sed 's/^/    /'; }

# RESERVATIONS RELEASED (2Ah/04h) goes only to the other registrants, and only when a
# registrants-only or all-registrants reservation is released (SPC-4 5.13.11.2):
# Y registers through gw-b, X reserves WRITE EXCLUSIVE - REGISTRANTS ONLY (type 5).
CI "$PORT_B" "$Y" prout register 0 0 "$KY" >"$WORK/r7" 2>&1 && is "$WORK/r7" GOOD &&
    CI "$PORT_A" "$X" prout reserve 5 "$KX" 0 >"$WORK/r8" 2>&1 && is "$WORK/r8" GOOD; rc=$?
[ $rc -eq 0 ] && pass "gateways: Y registers through gw-b, X reserves WRITE EXCLUSIVE - REGISTRANTS ONLY through gw-a" ||
    { fail "gateways: Y registers, X reserves registrants-only"; tail -n 3 "$WORK/r7" "$WORK/r8" 2>/dev/null | sed 's/^/    /'; }
CI "$PORT_B" "$Y" write 64 0xc3 30 >"$WORK/r9" 2>&1 && pass "gateways: registered Y writes through gw-b under REGISTRANTS ONLY" ||
    { fail "gateways: registered Y writes under REGISTRANTS ONLY"; tail -3 "$WORK/r9" | sed 's/^/    /'; }
# Y's session stays logged in (a unit attention belongs to an I_T nexus) and polls
# with TEST UNIT READY while X changes the reservation through gw-a.
ua_poll() { # file secs want [port initiator] (gw-b, Y): starts the poller (POLLER),
    # returns once it is polling
    CI "${4:-$PORT_B}" "${5:-$Y}" poll "$2" "$3" tur >"$1" 2>&1 &
    POLLER=$!
    for _ in $(seq 1 50); do grep -qs '^seen:' "$1" && break; sleep 0.1; done
    sleep 0.5
}
since() { # poll-output-file start-ms end-ms: when the poller saw it, relative to the
    # command's process (the other gateway is told before the command's status is sent,
    # so "after it exited" can be negative)
    local at
    at=$(sed -nE 's/^after [0-9]+ ms at ([0-9]+)$/\1/p' "$1" | tail -1)
    [ -n "$at" ] || { echo "?"; return; }
    echo "$((at - $2)) ms after the start (login included; $((at - $3)) ms after the exit)"
}
ua_poll "$WORK/r10" 30 "ua 2a/04"
t0=$(now_ms)
CI "$PORT_A" "$X" prout release 5 "$KX" 0 >"$WORK/r11" 2>&1 && is "$WORK/r11" GOOD; rc=$?
t=$(now_ms)
wait "$POLLER"; prc=$?
echo "gateways: RESERVATIONS RELEASED seen on gw-b $(since "$WORK/r10" "$t0" "$t") of the release through gw-a"
if [ $rc -eq 0 ] && [ $prc -eq 0 ]; then
    pass "gateways: X's release of REGISTRANTS ONLY through gw-a raises RESERVATIONS RELEASED (2Ah/04h) for Y on gw-b"
else
    fail "gateways: RESERVATIONS RELEASED on gw-b"; tail -n 3 "$WORK/r11" "$WORK/r10" 2>/dev/null | sed 's/^/    /'
fi

# The registrations and a reservation survive kill -9 of the gateway they were made
# through.
CI "$PORT_A" "$X" prout reserve 1 "$KX" 0 >"$WORK/r12" 2>&1 && is "$WORK/r12" GOOD ||
    { fail "gateways: X reserves again through gw-a"; tail -3 "$WORK/r12" | sed 's/^/    /'; }
kill -KILL "$PID_A"; wait "$PID_A" 2>/dev/null; PID_A=""
r=$(CI "$PORT_B" "$Y" prin keys 2>&1 | tail -1)
[ "$r" = "keys $KX $KY" ] && pass "gateways: READ KEYS through gw-b with gw-a dead: both keys" ||
    fail "gateways: READ KEYS through gw-b with gw-a dead ($r)"
if start_gw gw-a "$PORT_A"; then PID_A=$LAST_PID; else fail "gateways: gw-a restarts again"; fi
r=$(CI "$PORT_A" "$X" prin keys 2>&1 | tail -1)
r2=$(CI "$PORT_A" "$X" prin resv 2>&1 | tail -1)
[ "$r" = "keys $KX $KY" ] && [ "$r2" = "resv $KX 1" ] &&
    pass "gateways: after kill -9 and restart of gw-a, READ KEYS / READ RESERVATION through it unchanged" ||
    fail "gateways: state through restarted gw-a ($r; $r2)"
r=$(CI "$PORT_B" "$Y" prin keys 2>&1 | tail -1)
[ "$r" = "keys $KX $KY" ] && pass "gateways: READ KEYS through gw-b after the restart: both keys" ||
    fail "gateways: READ KEYS through gw-b after the restart ($r)"
# Both gateways restarted: gw-b too.
kill -KILL "$PID_B"; wait "$PID_B" 2>/dev/null; PID_B=""
if start_gw gw-b "$PORT_B"; then PID_B=$LAST_PID; else fail "gateways: gw-b restarts"; fi
r=$(CI "$PORT_B" "$Y" prin resv 2>&1 | tail -1)
[ "$r" = "resv $KX 1" ] && pass "gateways: after kill -9 and restart of gw-b too, READ RESERVATION through it: X's key, WRITE EXCLUSIVE" ||
    fail "gateways: READ RESERVATION through restarted gw-b ($r)"
CI "$PORT_B" "$Y" write 64 0xc4 30 >"$WORK/r13" 2>&1; is "$WORK/r13" "RESERVATION CONFLICT" &&
    pass "gateways: after the restart, X's reservation refuses Y's write through gw-b" ||
    { fail "gateways: X's reservation after the restart"; tail -3 "$WORK/r13" | sed 's/^/    /'; }
# Releasing a WRITE EXCLUSIVE reservation raises nothing for the other registrants
# (SPC-4 5.13.11.2 names only registrants-only and all-registrants types).
ua_poll "$WORK/r14" 3 "ua 2a/04"
CI "$PORT_A" "$X" prout release 1 "$KX" 0 >"$WORK/r15" 2>&1 && is "$WORK/r15" GOOD; rc=$?
wait "$POLLER"; prc=$?
if [ $rc -eq 0 ] && [ $prc -ne 0 ] && ! grep -q 'seen: ua 2a/' "$WORK/r14"; then
    pass "gateways: X's release of WRITE EXCLUSIVE through gw-a raises no unit attention for Y on gw-b"
else
    fail "gateways: release of WRITE EXCLUSIVE and unit attentions"; tail -n 3 "$WORK/r15" "$WORK/r14" 2>/dev/null | sed 's/^/    /'
fi
# PREEMPT through gw-b (SPC-4 5.13.11.4): Y takes over X's reservation, X's registration
# goes and X's nexus on gw-a gets REGISTRATIONS PREEMPTED (2Ah/05h).
CI "$PORT_A" "$X" prout reserve 1 "$KX" 0 >"$WORK/r16" 2>&1 && is "$WORK/r16" GOOD ||
    { fail "gateways: X reserves once more through gw-a"; tail -n 3 "$WORK/r16" | sed 's/^/    /'; }
ua_poll "$WORK/r17" 30 "ua 2a/05" "$PORT_A" "$X"
t0=$(now_ms)
CI "$PORT_B" "$Y" prout preempt 1 "$KY" "$KX" >"$WORK/r18" 2>&1 && is "$WORK/r18" GOOD; rc=$?
t=$(now_ms)
wait "$POLLER"; prc=$?
echo "gateways: REGISTRATIONS PREEMPTED seen on gw-a $(since "$WORK/r17" "$t0" "$t") of the PREEMPT through gw-b"
r=$(CI "$PORT_A" "$X" prin resv 2>&1 | tail -1)
r2=$(CI "$PORT_A" "$X" prin keys 2>&1 | tail -1)
if [ $rc -eq 0 ] && [ $prc -eq 0 ] && [ "$r" = "resv $KY 1" ] && [ "$r2" = "keys $KY" ]; then
    pass "gateways: PREEMPT through gw-b: X sees REGISTRATIONS PREEMPTED (2Ah/05h) on gw-a, Y holds the reservation"
else
    fail "gateways: PREEMPT through gw-b ($r; $r2)"; tail -n 3 "$WORK/r18" "$WORK/r17" 2>/dev/null | sed 's/^/    /'
fi
# CLEAR (SPC-4 5.13.11.3) through gw-b removes every key; the other registrant (X,
# registered again through gw-a) gets RESERVATIONS PREEMPTED (2Ah/03h).
CI "$PORT_A" "$X" prout register 0 0 "$KX" >"$WORK/r19" 2>&1 && is "$WORK/r19" GOOD ||
    { fail "gateways: X registers again through gw-a"; tail -n 3 "$WORK/r19" | sed 's/^/    /'; }
ua_poll "$WORK/r20" 30 "ua 2a/03" "$PORT_A" "$X"
t0=$(now_ms)
CI "$PORT_B" "$Y" prout clear 0 "$KY" 0 >"$WORK/r21" 2>&1 && is "$WORK/r21" GOOD; rc=$?
t=$(now_ms)
wait "$POLLER"; prc=$?
echo "gateways: RESERVATIONS PREEMPTED seen on gw-a $(since "$WORK/r20" "$t0" "$t") of the CLEAR through gw-b"
if [ $rc -eq 0 ] && [ $prc -eq 0 ] && [ "$(CI "$PORT_A" "$X" prin keys 2>&1 | tail -1)" = "keys" ]; then
    pass "gateways: CLEAR through gw-b: RESERVATIONS PREEMPTED (2Ah/03h) for X on gw-a, no keys left"
else
    fail "gateways: CLEAR through gw-b"; tail -n 3 "$WORK/r21" "$WORK/r20" 2>/dev/null | sed 's/^/    /'
fi

kill -0 "$PID_B" 2>/dev/null && pass "gateways: gw-b alive" || fail "gateways: gw-b alive"
if grep -qi panic "$WORK"/gw-*.log; then fail "gateways: no panic in the logs"; fi
echo "gateways: total $(( $(date +%s) - T0 ))s, $passed passed, $failed failed"
[ "$failed" -eq 0 ]
