#!/usr/bin/env bash
# `rustio serve` with RBD LUNs (targetcli `user` storage objects whose config is
# `rbd/<pool>/<image>;conf=...`), against the running test cluster of start.sh:
#   * builds `rustio --features rbd` (unless RUSTIO_RBD_BIN is given),
#   * creates two images, serves them from a saveconfig.json on 127.0.0.1,
#   * iscsi-test-cu --dataloss on a 256 MiB RBD LUN (CU_FILTER, default ALL; 0 failures
#     required, as tests/libiscsi/run.sh),
#   * a qemu-img convert/compare round trip of 32 MiB of random data over iscsi://, and,
#     after the server stopped, `rbd export` of that image compared with the data,
#   * a configuration naming a missing image fails to load, naming the object.
# OSD restarts under a write stream are tested at the engine level by
# crates/rbd/tests/cluster.rs (osd_restart_under_load_loses_nothing).
#
# Called by run-tests.sh; standalone: CEPH_DIR=<cluster dir of start.sh> tests/ceph/serve.sh
# Prints PASS/FAIL lines; exits non-zero on failure.
#
# Env: CEPH_DIR (required), RUSTIO_RBD_BIN, PORT (default 23370), CU_FILTER (ALL),
#      CU_TIMEOUT (seconds for iscsi-test-cu, default 900), RUSTIO_CEPH_POOL (rbd).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
: "${CEPH_DIR:?CEPH_DIR must name the cluster dir of tests/ceph/start.sh}"
CONF=$CEPH_DIR/ceph.conf
POOL=${RUSTIO_CEPH_POOL:-rbd}
PORT=${PORT:-23370}
CU_FILTER=${CU_FILTER:-ALL}
CU_TIMEOUT=${CU_TIMEOUT:-900}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rustio-rbd-serve.XXXXXX")
T0=$(date +%s)
passed=0
failed=0
SERVER=""
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
RBD() { timeout 120 rbd --conf "$CONF" "$@"; }
ok() { pass "$@"; }
bad() { fail "$@"; }
log() { printf '%s\n' "$*"; }
. "$ROOT/tests/lib/iscsi-checks.sh"

CU_IMAGE=rustio-serve-cu-$$
QEMU_IMAGE=rustio-serve-qemu-$$
cleanup() {
    stop_server
    RBD rm --no-progress "$POOL/$CU_IMAGE" >/dev/null 2>&1
    RBD rm --no-progress "$POOL/$QEMU_IMAGE" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -r "$CONF" ] || { fail "rbd-serve (no $CONF)"; exit 1; }
for t in iscsi-test-cu qemu-img rbd; do
    command -v "$t" >/dev/null || { fail "rbd-serve ($t not installed)"; exit 1; }
done

t=$(date +%s)
if [ -n "${RUSTIO_RBD_BIN:-}" ]; then
    [ -x "$RUSTIO_RBD_BIN" ] || { fail "rbd-serve (no rustio binary at $RUSTIO_RBD_BIN)"; exit 1; }
elif release_rustio RUSTIO_RBD_BIN rbd; then
    pass "rbd-serve: build rustio --features rbd ($(( $(date +%s) - t ))s)"
else
    fail "rbd-serve: build rustio --features rbd"; exit 1
fi

CU_SIZE=268435456
QEMU_SIZE=67108864
RBD create --size $((CU_SIZE >> 20))M "$POOL/$CU_IMAGE" && RBD create --size $((QEMU_SIZE >> 20))M "$POOL/$QEMU_IMAGE" ||
    { fail "rbd-serve: create images"; exit 1; }

TGT=iqn.2024-01.org.rustio.test:rbd
INIT=iqn.2024-01.org.rustio.test:client
INIT2=iqn.2024-01.org.rustio.test:client2
write_config() { # file, cu image name
    cat >"$1" <<EOF
{
  "storage_objects": [
    {"plugin": "user", "name": "cu", "config": "rbd/$POOL/$2;conf=$CONF", "size": $CU_SIZE,
     "wwn": "5c3d2a10-0301-4000-8000-000000000001"},
    {"plugin": "user", "name": "qemu", "config": "rbd/$POOL/$QEMU_IMAGE;osd_op_timeout=30;conf=$CONF",
     "size": $QEMU_SIZE, "wwn": "5c3d2a10-0302-4000-8000-000000000002"}
  ],
  "targets": [
    {"wwn": "$TGT", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
      "parameters": {"MaxRecvDataSegmentLength": "262144", "MaxBurstLength": "1048576"},
      "luns": [{"index": 0, "storage_object": "/backstores/user/cu"},
               {"index": 1, "storage_object": "/backstores/user/qemu"}],
      "portals": [{"ip_address": "127.0.0.1", "port": $PORT}], "node_acls": []}]}
  ]
}
EOF
}

# A missing image: the load fails and says which object.
write_config "$WORK/missing.json" "no-such-image-$$"
if timeout 120 "$RUSTIO_RBD_BIN" serve --config "$WORK/missing.json" --log warn >"$WORK/missing.log" 2>&1; then
    fail "rbd-serve: missing image refused"
elif grep -q "cu" "$WORK/missing.log" && grep -qi "no-such-image" "$WORK/missing.log"; then
    pass "rbd-serve: missing image refused, naming the object"
else
    fail "rbd-serve: missing image error names the object"; sed 's/^/    /' "$WORK/missing.log" | tail -5
fi

write_config "$WORK/serve.json" "$CU_IMAGE"
if port_open "$PORT"; then fail "rbd-serve: port $PORT in use"; exit 1; fi
# Opening RBD images may take a while on a busy cluster: up to 60 s.
if start_server "$RUSTIO_RBD_BIN" "$WORK/serve.json" "$PORT" "$WORK/server.log" 600; then
    pass "rbd-serve: server starts"
else
    fail "rbd-serve: server starts"; exit 1
fi
P=127.0.0.1:$PORT

expect_ok "rbd-serve: readcapacity" sh -c "iscsi-readcapacity16 -i $INIT iscsi://$P/$TGT/0 | grep -q 'Total size:$CU_SIZE'"

qemu_round_trip "rbd-serve: qemu-img convert to iscsi://" "rbd-serve: qemu-img compare over iscsi://" \
    "rbd-serve: qemu-img convert from iscsi://" "rbd-serve: round trip identical" "iscsi://$P/$TGT/1"

run_iscsi_test_cu "rbd-serve-iscsi-test-cu-$CU_FILTER" "iscsi://$P/$TGT/0" $INIT $INIT2 "$CU_TIMEOUT"

kill -0 "$SERVER" 2>/dev/null && pass "rbd-serve: server alive after the suite" || fail "rbd-serve: server alive after the suite"
stop_server 300 && pass "rbd-serve: server stops on SIGTERM" || fail "rbd-serve: server stops on SIGTERM"

# What librbd holds, read by another client: the data, zeros after it.
expect_ok "rbd-serve: rbd export equals the random data" sh -c \
    "timeout 120 rbd --conf '$CONF' export --no-progress '$POOL/$QEMU_IMAGE' '$WORK/export.img' &&
     qemu-img compare -f raw -F raw '$WORK/random.img' '$WORK/export.img'"
if grep -qi panic "$WORK/server.log"; then fail "rbd-serve: no panic in the server log"; fi

echo "rbd-serve: total $(( $(date +%s) - T0 ))s, $passed passed, $failed failed"
[ "$failed" -eq 0 ]
