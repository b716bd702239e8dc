#!/usr/bin/env bash
# `rustio serve` with qcow2 LUNs (targetcli `user` storage objects, `qcow/` and `qcow2/`
# configs), checked by independent tools:
#   * libiscsi's iscsi-test-cu (all families, --dataloss) on a 256 MiB qcow2 LUN, with the
#     same 0-failure bar as tests/libiscsi/run.sh (see tests/libiscsi/KNOWN.md),
#   * a qemu-img convert/compare round trip of 32 MiB of random data over iscsi:// into a
#     second qcow2 LUN,
#   * after the server stopped: `qemu-img check` of both images (must be clean: no
#     corruption, no leaks) and `qemu-img compare` of the second image with the random data.
#
# Everything talks to 127.0.0.1 only. Prints PASS/FAIL lines and "N passed, M failed";
# exits non-zero when anything failed (2 when the environment is unusable).
#
# Environment:
#   RUSTIO_BIN   rustio binary (default: build it with cargo in release mode)
#   PORT         TCP port (default 23360)
#   CU_FILTER    iscsi-test-cu test filter (default ALL)
#   KEEP_LOGS=1  keep the work directory
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT=${PORT:-23360}
CU_FILTER=${CU_FILTER:-ALL}
WORK=$(mktemp -d /tmp/rustio-serve-qcow2.XXXXXX)
T0=$(date +%s)
PASS=0
FAIL=0
SERVER=""

log() { printf '%s\n' "$*"; }
ok() { PASS=$((PASS + 1)); log "PASS $*"; }
bad() { FAIL=$((FAIL + 1)); log "FAIL $*"; }

cleanup() {
    stop_server
    if [ "${KEEP_LOGS:-0}" = 1 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- tools ------------------------------------------------------------------------
. "$ROOT/tests/lib/iscsi-checks.sh"
need_iscsi_clients
need_rustio_bin

# --- images and configuration -------------------------------------------------------
TGT=iqn.2024-01.org.rustio.test:qcow2
INIT=iqn.2024-01.org.rustio.test:client
INIT2=iqn.2024-01.org.rustio.test:client2
CU_IMG=$WORK/cu.qcow2
QEMU_IMG=$WORK/qemu.qcow2
CU_SIZE=268435456
QEMU_SIZE=67108864

qemu-img create -q -f qcow2 "$CU_IMG" $CU_SIZE || { log "qemu-img create failed"; exit 2; }
qemu-img create -q -f qcow2 -o cluster_size=65536 "$QEMU_IMG" $QEMU_SIZE || { log "qemu-img create failed"; exit 2; }

# targetcli writes `user` objects as {"plugin": "user", "config": "<handler>/<path>"};
# tcmu-runner's handler is `qcow`, rustio also accepts `qcow2`.
cat >"$WORK/serve.json" <<EOF
{
  "storage_objects": [
    {"plugin": "user", "name": "cu", "config": "qcow/$CU_IMG", "size": $CU_SIZE,
     "wwn": "5c3d2a10-0101-4000-8000-000000000001"},
    {"plugin": "user", "name": "qemu", "config": "qcow2/$QEMU_IMG", "size": $QEMU_SIZE,
     "wwn": "5c3d2a10-0102-4000-8000-000000000002"}
  ],
  "targets": [
    {"wwn": "$TGT", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
      "parameters": {"MaxRecvDataSegmentLength": "262144", "MaxBurstLength": "1048576"},
      "luns": [{"index": 0, "storage_object": "/backstores/user/cu"},
               {"index": 1, "storage_object": "/backstores/user/qemu"}],
      "portals": [{"ip_address": "127.0.0.1", "port": $PORT}],
      "node_acls": []}]}
  ]
}
EOF

if port_open "$PORT"; then log "127.0.0.1:$PORT is in use (set PORT)"; exit 2; fi
if start_server "$RUSTIO_BIN" "$WORK/serve.json" "$PORT" "$WORK/server.log"; then ok "serve-qcow2-start"; else
    bad "serve-qcow2-start"
    echo "$PASS passed, $FAIL failed"; exit 1
fi
P=127.0.0.1:$PORT

expect_ok "qcow2-readcapacity" sh -c "iscsi-readcapacity16 -i $INIT iscsi://$P/$TGT/0 | grep -q 'Total size:$CU_SIZE'"

# --- qemu-img round trip over iSCSI ---------------------------------------------------
qemu_round_trip qcow2-qemu-convert-to-iscsi qcow2-qemu-compare-over-iscsi \
    qcow2-qemu-convert-from-iscsi qcow2-round-trip-identical "iscsi://$P/$TGT/1"

# --- libiscsi conformance suite ----------------------------------------------------------
run_iscsi_test_cu serve-qcow2-iscsi-test-cu "iscsi://$P/$TGT/0" $INIT $INIT2

# --- the images after the server stopped ---------------------------------------------------
kill -0 "$SERVER" 2>/dev/null && ok "qcow2-server-alive" || bad "qcow2-server-alive"
if stop_server; then ok "qcow2-server-stops-on-sigterm"; else bad "qcow2-server-stops-on-sigterm"; fi

# Exit status 0 = no errors and no leaks (2 = corruption, 3 = leaked clusters).
expect_ok "qcow2-check-cu-image" qemu-img check -f qcow2 "$CU_IMG"
expect_ok "qcow2-check-qemu-image" qemu-img check -f qcow2 "$QEMU_IMG"
# The image is larger than the data: compare also requires the rest to read as zeros.
expect_ok "qcow2-image-equals-random-data" qemu-img compare -f raw -F qcow2 "$WORK/random.img" "$QEMU_IMG"

if grep -qiE "panic|error" "$WORK/server.log"; then
    log "    server log:"; grep -iE "panic|error" "$WORK/server.log" | head -5 | sed 's/^/    /'
fi

echo
echo "serve-qcow2: total $(( $(date +%s) - T0 ))s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
