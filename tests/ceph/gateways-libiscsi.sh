#!/usr/bin/env bash
# libiscsi's conformance suite against a gateway group: two `rustio serve --gateway`
# processes (gw-a, gw-b) on 127.0.0.1 exporting one RBD image of the running test cluster
# (start.sh), other gateways' groups reported active/non-optimized:
#   * iscsi-test-cu --dataloss with TWO URLs, one per gateway: libiscsi first checks that
#     both paths report the same logical unit (VPD 0x80/0x83 identifiers), then runs the
#     MultipathIO family (write through one gateway, read back through the other; COMPARE
#     AND WRITE; LUN reset) and every test that opens a second I_T nexus, which in this
#     mode is the second gateway: persistent reservations (ProutReserve access/ownership
#     for every type, ProutPreempt), SPC-2 RESERVE/RELEASE (Reserve6), PREVENT ALLOW
#     MEDIUM REMOVAL across nexuses and the SANITIZE reservation checks — 0 failures;
#   * iscsi-test-cu --dataloss ALL through one gateway of the group — 0 failures.
# The ownership (RBD exclusive lock) moves between the gateways whenever a path that does
# not own the image gets a write; the gateway logs say how each handover went.
#
# Called by run-tests.sh; standalone: CEPH_DIR=<cluster dir of start.sh> tests/ceph/gateways-libiscsi.sh
# Prints PASS/FAIL lines; exits non-zero on failure. Every wait is bounded; the script
# stops only the processes it started.
#
# Env: CEPH_DIR (required), RUSTIO_RBD_BIN, PORT_A/PORT_B (23389/23390), CU_TIMEOUT
#      (seconds per iscsi-test-cu run, default 1200), CU_MP_FILTER (the two-URL test list),
#      CU_SKIP_ALL=1 (only the two-URL run), GW_DEBOUNCE (default 0: libiscsi writes through
#      both paths on purpose; a debounce would delay every move of the lock), RUSTIO_CEPH_POOL (rbd).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
: "${CEPH_DIR:?CEPH_DIR must name the cluster dir of tests/ceph/start.sh}"
CONF=$CEPH_DIR/ceph.conf
POOL=${RUSTIO_CEPH_POOL:-rbd}
PORT_A=${PORT_A:-23389}
PORT_B=${PORT_B:-23390}
CU_TIMEOUT=${CU_TIMEOUT:-1200}
DEBOUNCE=${GW_DEBOUNCE:-0}
# The tests that use a second path: libiscsi's mpath_sd2_get_or_clone() gives them the
# second URL's device instead of a second login to the first URL.
CU_MP_FILTER=${CU_MP_FILTER:-SCSI.MultipathIO.*,SCSI.ProutReserve.*,SCSI.ProutPreempt.*,SCSI.ProutRegister.*,SCSI.ProutClear.*,SCSI.PrinReadKeys.*,SCSI.PrinServiceactionRange.*,SCSI.Reserve6.*,SCSI.PreventAllow.2ITNexuses,SCSI.Sanitize.Readonly,SCSI.Sanitize.Reservations}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rustio-gw-libiscsi.XXXXXX")
T0=$(date +%s)
passed=0
failed=0
PID_A=""
PID_B=""
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
ok() { pass "$@"; }
bad() { fail "$@"; }
log() { printf '%s\n' "$*"; }
. "$ROOT/tests/ceph/gw-lib.sh"  # + port_open and the iscsi-checks helpers

IMAGE=rustio-gw-cu-$$
TGT=iqn.2024-01.org.rustio.test:gwcu
INIT=iqn.2024-01.org.rustio.test:gwcu-client
INIT2=iqn.2024-01.org.rustio.test:gwcu-client2
cleanup() {
    stop_pid "$PID_A"
    stop_pid "$PID_B"
    RBD rm --no-progress "$POOL/$IMAGE" >/dev/null 2>&1
    if [ "$failed" -ne 0 ]; then
        for g in gw-a gw-b; do
            [ -f "$WORK/$g.log" ] && { echo "--- $g log (tail; whole: /tmp/rustio-gateways-libiscsi-$g.log)"; tail -25 "$WORK/$g.log"; cp "$WORK/$g.log" "/tmp/rustio-gateways-libiscsi-$g.log"; }
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -r "$CONF" ] || { fail "gateways-libiscsi (no $CONF)"; exit 1; }
for t in iscsi-test-cu rbd; do
    command -v "$t" >/dev/null || { fail "gateways-libiscsi ($t not installed)"; exit 1; }
done
release_rustio RUSTIO_RBD_BIN rbd || { fail "gateways-libiscsi: no rustio binary (the --features rbd build failed, or RUSTIO_RBD_BIN is not executable)"; exit 1; }

# 256 MiB, as the single-gateway run of serve.sh.
SIZE=268435456
RBD create --size $((SIZE >> 20))M "$POOL/$IMAGE" || { fail "gateways-libiscsi: create image"; exit 1; }
cat >"$WORK/group.json" <<EOF
{
  "storage_objects": [
    {"plugin": "user", "name": "cu", "config": "rbd/$POOL/$IMAGE;conf=$CONF", "size": $SIZE}
  ],
  "targets": [
    {"wwn": "$TGT", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
      "parameters": {"MaxRecvDataSegmentLength": "262144", "MaxBurstLength": "1048576"},
      "luns": [{"index": 0, "storage_object": "/backstores/user/cu"}],
      "portals": [], "node_acls": []}]}
  ],
  "rustio_gateway_group": {
    "name": "cu-group", "non_owner_state": "active_non_optimized", "takeover_debounce_secs": $DEBOUNCE,
    "gateways": [
      {"name": "gw-a", "portals": ["127.0.0.1:$PORT_A"]},
      {"name": "gw-b", "portals": ["127.0.0.1:$PORT_B"]}
    ]
  }
}
EOF

start_gw() { # name port → sets LAST_PID (tests/ceph/gw-lib.sh)
    gw_spawn "$2" "$WORK/$1.log" "$RUSTIO_RBD_BIN" serve --config "$WORK/group.json" \
        --gateway "$1" --log "${GW_LOG:-info}"
}
start_gw gw-a "$PORT_A" && PID_A=$LAST_PID && start_gw gw-b "$PORT_B" && PID_B=$LAST_PID ||
    { fail "gateways-libiscsi: both gateways start"; exit 1; }
pass "gateways-libiscsi: both gateways start"

URL_A=iscsi://127.0.0.1:$PORT_A/$TGT/0
URL_B=iscsi://127.0.0.1:$PORT_B/$TGT/0
handovers() { # gateway log → number of completed takeovers it logged
    grep -c "took over the exclusive lock" "$WORK/$1.log" 2>/dev/null || true
}

CU_FILTER=$CU_MP_FILTER run_iscsi_test_cu "gateways-libiscsi-two-paths-gw-a-gw-b" \
    "$URL_A" "$INIT" "$INIT2" "$CU_TIMEOUT" "$URL_B"
log "    takeovers logged: gw-a $(handovers gw-a), gw-b $(handovers gw-b)"

if [ "${CU_SKIP_ALL:-0}" != 1 ]; then
    CU_FILTER=ALL run_iscsi_test_cu "gateways-libiscsi-ALL-through-gw-a" \
        "$URL_A" "$INIT" "$INIT2" "$CU_TIMEOUT"
fi

for g in gw-a gw-b; do
    if grep -qi panic "$WORK/$g.log"; then fail "gateways-libiscsi: no panic in the $g log"; fi
done
kill -0 "$PID_A" 2>/dev/null && kill -0 "$PID_B" 2>/dev/null &&
    pass "gateways-libiscsi: both gateways alive after the suites" ||
    fail "gateways-libiscsi: both gateways alive after the suites"

echo "gateways-libiscsi: total $(( $(date +%s) - T0 ))s, $passed passed, $failed failed"
[ "$failed" -eq 0 ]
