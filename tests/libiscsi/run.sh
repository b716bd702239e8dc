#!/usr/bin/env bash
# Conformance run of `rustio serve` against independent initiators:
#   * libiscsi's iscsi-test-cu (all families, --dataloss) on a RAM LUN,
#   * iscsi-ls discovery with and without CHAP (right/wrong secrets, mutual),
#   * an unknown initiator refused under ACLs,
#   * a qemu-img convert/compare round trip of random data over iscsi:// URLs.
#
# Everything talks to 127.0.0.1 only. Prints "N passed, M failed" at the end and exits
# non-zero when anything failed. Known, argued test issues are listed in KNOWN.md.
#
# Environment:
#   RUSTIO_BIN   rustio binary (default: build it with cargo in release mode)
#   PORT         first TCP port to use (default 23260; PORT+1 is used too)
#   CU_FILTER    iscsi-test-cu test filter (default ALL)
#   RUSTIO_SERVE_ARGS extra `rustio serve` arguments (e.g. "--sendfile-min 512")
#   CU_BACKSTORE ramdisk (default) or fileio: the LUN iscsi-test-cu runs on (fileio: a
#                256 MiB file in the work directory; READs of it are sent from the page
#                cache with sendfile(2))
#   KEEP_LOGS=1  keep the work directory
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT=${PORT:-23260}
DPORT=$((PORT + 1))
CU_FILTER=${CU_FILTER:-ALL}
WORK=$(mktemp -d /tmp/rustio-libiscsi.XXXXXX)
PASS=0
FAIL=0
PIDS=()

log() { printf '%s\n' "$*"; }
ok() { PASS=$((PASS + 1)); log "PASS: $*"; }
bad() { FAIL=$((FAIL + 1)); log "FAIL: $*"; }

cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ "${KEEP_LOGS:-0}" = 1 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- tools ------------------------------------------------------------------------
. "$ROOT/tests/lib/iscsi-checks.sh"
need_iscsi_clients
need_rustio_bin

# --- configuration -----------------------------------------------------------------
OPEN=iqn.2024-01.org.rustio.test:open
CHAP=iqn.2024-01.org.rustio.test:chap
ACL=iqn.2024-01.org.rustio.test:acl
INIT=iqn.2024-01.org.rustio.test:client
INIT2=iqn.2024-01.org.rustio.test:client2

CU_BACKSTORE=${CU_BACKSTORE:-ramdisk}
case "$CU_BACKSTORE" in
ramdisk) CU_SO='{"plugin": "ramdisk", "name": "cu", "size": 268435456, "wwn": "5c3d2a10-0001-4000-8000-000000000001"}' ;;
fileio) CU_SO='{"plugin": "fileio", "name": "cu", "dev": "'"$WORK"'/cu.img", "size": 268435456, "write_back": true, "wwn": "5c3d2a10-0001-4000-8000-000000000001"}' ;;
*) log "CU_BACKSTORE must be ramdisk or fileio"; exit 2 ;;
esac

write_config() { # $1 = file, $2 = port, $3 = discovery auth (0/1)
    cat >"$1" <<EOF
{
  "fabric_modules": [{"name": "iscsi", "discovery_enable_auth": $3,
     "discovery_userid": "disco", "discovery_password": "discosecret1",
     "discovery_mutual_userid": "discotarget", "discovery_mutual_password": "discotsecret"}],
  "storage_objects": [
    $CU_SO,
    {"plugin": "ramdisk", "name": "qemu", "size": 67108864, "wwn": "5c3d2a10-0002-4000-8000-000000000002"},
    {"plugin": "ramdisk", "name": "chap", "size": 16777216},
    {"plugin": "ramdisk", "name": "acl", "size": 16777216}
  ],
  "targets": [
    {"wwn": "$OPEN", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
      "parameters": {"MaxRecvDataSegmentLength": "262144", "MaxBurstLength": "1048576"},
      "luns": [{"index": 0, "storage_object": "/backstores/$CU_BACKSTORE/cu"},
               {"index": 1, "storage_object": "/backstores/ramdisk/qemu"}],
      "portals": [{"ip_address": "127.0.0.1", "port": $2}, {"ip_address": "::1", "port": $2}],
      "node_acls": []}]},
    {"wwn": "$CHAP", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 1, "generate_node_acls": 0},
      "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/chap"}],
      "portals": [{"ip_address": "127.0.0.1", "port": $2}],
      "node_acls": [{"node_wwn": "$INIT", "chap_userid": "user1", "chap_password": "password1234",
                     "chap_mutual_userid": "target1", "chap_mutual_password": "tpassword5678",
                     "mapped_luns": [{"index": 0, "tpg_lun": 0, "write_protect": false}]}]}]},
    {"wwn": "$ACL", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 0},
      "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/acl"}],
      "portals": [{"ip_address": "127.0.0.1", "port": $2}],
      "node_acls": [{"node_wwn": "$INIT", "mapped_luns": [{"index": 0, "tpg_lun": 0}]}]}]}
  ]
}
EOF
}

serve() { # config, port, log
    start_server "$RUSTIO_BIN" "$1" "$2" "$3" || { log "server on port $2 did not start"; exit 2; }
    PIDS+=("$SERVER")
}

write_config "$WORK/main.json" "$PORT" false
write_config "$WORK/disco.json" "$DPORT" true
serve "$WORK/main.json" "$PORT" "$WORK/main.log"
serve "$WORK/disco.json" "$DPORT" "$WORK/disco.log"
P=127.0.0.1:$PORT
D=127.0.0.1:$DPORT

# --- discovery and login ------------------------------------------------------------
expect_ok "iscsi-ls discovery lists the targets" sh -c "iscsi-ls -i $INIT iscsi://$P | grep -q $OPEN"
expect_ok "iscsi-ls shows IPv6 portal" sh -c "iscsi-ls -i $INIT iscsi://$P | grep -q '\[::1\]:$PORT,1'"
expect_ok "iscsi-ls over IPv6" sh -c "iscsi-ls -i $INIT 'iscsi://[::1]:$PORT' | grep -q $OPEN"
# client2 is in no ACL, so discovery shows it only the open target, whose LUNs -s lists.
expect_ok "iscsi-ls -s shows LUNs" sh -c "iscsi-ls -s -i $INIT2 iscsi://$P | grep -q 'Lun:1'"
expect_fail "discovery hides targets the initiator may not enter" sh -c "iscsi-ls -i $INIT2 iscsi://$P | grep -q $ACL"
expect_ok "iscsi-inq on the open target" iscsi-inq -i $INIT iscsi://$P/$OPEN/0

# --- CHAP on a target -------------------------------------------------------------------
expect_ok "CHAP right secret" iscsi-inq -i $INIT "iscsi://user1%password1234@$P/$CHAP/0"
expect_fail "CHAP wrong secret" iscsi-inq -i $INIT "iscsi://user1%wrongpassword@$P/$CHAP/0"
expect_fail "CHAP wrong user" iscsi-inq -i $INIT "iscsi://nobody%password1234@$P/$CHAP/0"
expect_fail "CHAP required, none given" iscsi-inq -i $INIT "iscsi://$P/$CHAP/0"
expect_ok "mutual CHAP right target secret" env LIBISCSI_CHAP_TARGET_USERNAME=target1 \
    LIBISCSI_CHAP_TARGET_PASSWORD=tpassword5678 iscsi-inq -i $INIT "iscsi://user1%password1234@$P/$CHAP/0"
expect_fail "mutual CHAP wrong target secret" env LIBISCSI_CHAP_TARGET_USERNAME=target1 \
    LIBISCSI_CHAP_TARGET_PASSWORD=wrongtarget99 iscsi-inq -i $INIT "iscsi://user1%password1234@$P/$CHAP/0"

# --- ACLs --------------------------------------------------------------------------------
expect_ok "ACL: listed initiator admitted" iscsi-inq -i $INIT iscsi://$P/$ACL/0
expect_fail "ACL: unknown initiator refused" iscsi-inq -i iqn.2024-01.org.rustio.test:stranger iscsi://$P/$ACL/0

# --- discovery CHAP (second server, discovery_enable_auth) ---------------------------------
expect_fail "discovery CHAP required, none given" iscsi-ls -i $INIT iscsi://$D
expect_ok "discovery CHAP right secret" sh -c "iscsi-ls -i $INIT 'iscsi://disco%discosecret1@$D' | grep -q $OPEN"
expect_fail "discovery CHAP wrong secret" iscsi-ls -i $INIT "iscsi://disco%nope12345678@$D"
expect_ok "discovery mutual CHAP" sh -c "LIBISCSI_CHAP_TARGET_USERNAME=discotarget LIBISCSI_CHAP_TARGET_PASSWORD=discotsecret iscsi-ls -i $INIT 'iscsi://disco%discosecret1@$D' | grep -q $OPEN"
expect_fail "discovery mutual CHAP wrong target secret" env LIBISCSI_CHAP_TARGET_USERNAME=discotarget \
    LIBISCSI_CHAP_TARGET_PASSWORD=badbadbadbad iscsi-ls -i $INIT "iscsi://disco%discosecret1@$D"

# --- qemu-img round trip ---------------------------------------------------------------------
qemu_round_trip "qemu-img convert to iscsi://" "qemu-img compare with iscsi://" \
    "qemu-img convert from iscsi://" "round trip bytes identical" "iscsi://$P/$OPEN/1"

# --- libiscsi conformance suite ----------------------------------------------------------------
run_iscsi_test_cu iscsi-test-cu "iscsi://$P/$OPEN/0" $INIT $INIT2

echo
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
