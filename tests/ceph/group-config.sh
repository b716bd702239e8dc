#!/usr/bin/env bash
# One configuration for a whole gateway group (issue #22 item 5): `rustio group push`
# stores it in a RADOS object, two `rustio serve --group` gateways (gw-a, gw-b) on
# 127.0.0.1 apply every version pushed:
#   * before any push, `group show` and `group pull` fail and say none was pushed;
#   * version 1 (targets T1 open, T2 open, T3 with CHAP; one RBD image, LUN 0 of each)
#     is served by both gateways started with --group, each records "applied 1";
#   * a session is opened through gw-a on T1 before the change (gw-initiator.py `poll`:
#     one session reading LBA 0 until it sees the byte written later);
#   * version 2 adds LUN 1 (a second image) to T2 and changes T3's CHAP secret:
#     `push --wait` reports both gateways applied it (the time from the push is
#     printed); LUN 1 is visible through both (iscsi-ls -s, iscsi-inq); the new secret
#     logs in and the old one is refused through both; the session opened before the
#     change still works (same connection; it sees a write made after the change);
#   * an invalid push is refused and changes nothing (version and gateways unchanged);
#   * gw-b stopped during a push: `push --wait` says it did not answer, gw-a applied
#     it; gw-b restarted converges (applied version equal to the pushed one);
#   * a version whose new image does not exist passes validation but fails on the
#     gateways: both record the error and keep serving the previous version; SIGHUP
#     makes a gateway read the object again and retry it.
# Standalone: CEPH_DIR=<cluster dir of start.sh> tests/ceph/group-config.sh
# Prints PASS/FAIL lines; exits non-zero on failure. Every wait is bounded; the script
# stops only the processes it started.
#
# Env: CEPH_DIR (required), RUSTIO_RBD_BIN, PORT_A/PORT_B (23385/23386),
#      RUSTIO_CEPH_POOL (rbd).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
: "${CEPH_DIR:?CEPH_DIR must name the cluster dir of tests/ceph/start.sh}"
CONF=$CEPH_DIR/ceph.conf
POOL=${RUSTIO_CEPH_POOL:-rbd}
PORT_A=${PORT_A:-23385}
PORT_B=${PORT_B:-23386}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rustio-group-config.XXXXXX")
passed=0
failed=0
PID_A=""
PID_B=""
PID_POLL=""
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
. "$ROOT/tests/ceph/gw-lib.sh"

GROUP=rustio-gc-$$
IMG1=rustio-gc-$$-a
IMG2=rustio-gc-$$-b
T1=iqn.2024-01.org.rustio.test:gc-one
T2=iqn.2024-01.org.rustio.test:gc-two
T3=iqn.2024-01.org.rustio.test:gc-chap
INIT=iqn.2024-01.org.rustio.test:gc-client
INIT2=iqn.2024-01.org.rustio.test:gc-client2
CHAP_INIT=iqn.2024-01.org.rustio.test:gc-chap-client
cleanup() {
    stop_pid "$PID_POLL"
    stop_pid "$PID_A"
    stop_pid "$PID_B"
    for o in "rustio.group.$GROUP" "rustio.group.$GROUP.applied.gw-a" "rustio.group.$GROUP.applied.gw-b"; do
        timeout 60 rados --conf "$CONF" -p "$POOL" rm "$o" >/dev/null 2>&1
    done
    RBD rm --no-progress "$POOL/$IMG1" >/dev/null 2>&1
    RBD rm --no-progress "$POOL/$IMG2" >/dev/null 2>&1
    if [ "$failed" -ne 0 ]; then
        for g in gw-a gw-b; do
            [ -f "$WORK/$g.log" ] && { echo "--- $g log (tail)"; tail -25 "$WORK/$g.log"; }
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -r "$CONF" ] || { fail "group-config (no $CONF)"; exit 1; }
for t in iscsi-inq iscsi-ls python3 rbd rados jq; do
    command -v "$t" >/dev/null || { fail "group-config ($t not installed)"; exit 1; }
done
release_rustio RUSTIO_RBD_BIN rbd || { fail "group-config: no rustio binary (the --features rbd build failed, or RUSTIO_RBD_BIN is not executable)"; exit 1; }
R() { timeout 120 "$RUSTIO_RBD_BIN" "$@"; }
CEPH=(--pool "$POOL" --ceph-conf "$CONF")

SIZE=67108864
RBD create --size $((SIZE >> 20))M "$POOL/$IMG1" && RBD create --size $((SIZE >> 20))M "$POOL/$IMG2" ||
    { fail "group-config: create images"; exit 1; }

# config FILE VERSION CHAP_SECRET [extra storage object JSON]: the group's configuration.
# Version 2 and later add LUN 1 (IMG2) to T2.
config() {
    local file=$1 v=$2 secret=$3 so2="" lun2=""
    if [ "$v" -ge 2 ]; then
        so2=", {\"plugin\": \"user\", \"name\": \"b\", \"config\": \"rbd/$POOL/$IMG2;conf=$CONF\", \"size\": $SIZE}"
        lun2=', {"index": 1, "storage_object": "/backstores/user/b"}'
    fi
    cat >"$file" <<EOF
{
  "storage_objects": [
    {"plugin": "user", "name": "a", "config": "rbd/$POOL/$IMG1;conf=$CONF", "size": $SIZE}$so2
  ],
  "targets": [
    {"wwn": "$T1", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
      "luns": [{"index": 0, "storage_object": "/backstores/user/a"}],
      "portals": [], "node_acls": []}]},
    {"wwn": "$T2", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
      "luns": [{"index": 0, "storage_object": "/backstores/user/a"}$lun2],
      "portals": [], "node_acls": []}]},
    {"wwn": "$T3", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 1, "generate_node_acls": 0},
      "luns": [{"index": 0, "storage_object": "/backstores/user/a"}],
      "portals": [],
      "node_acls": [{"node_wwn": "$CHAP_INIT", "chap_userid": "gcuser", "chap_password": "$secret",
                     "mapped_luns": [{"index": 0, "tpg_lun": 0, "write_protect": false}]}]}]}
  ],
  "rustio_gateway_group": {
    "name": "$GROUP", "non_owner_state": "standby", "takeover_debounce_secs": 1,
    "gateways": [
      {"name": "gw-a", "portals": ["127.0.0.1:$PORT_A"]},
      {"name": "gw-b", "portals": ["127.0.0.1:$PORT_B"]}
    ]
  }
}
EOF
}
config "$WORK/v1.json" 1 secret-one-111
config "$WORK/v2.json" 2 secret-two-222
config "$WORK/v3.json" 2 secret-three-33
# Invalid: two gateways on one portal.
sed "s/127.0.0.1:$PORT_B/127.0.0.1:$PORT_A/" "$WORK/v2.json" >"$WORK/bad.json"

show_json() { R group show "$GROUP" "${CEPH[@]}" --json 2>"$WORK/show.err"; }
# applied GW: the gateway's applied version ("null" when none) and result
applied() { show_json | jq -r --arg g "$1" '.gateways[] | select(.name == $g) | "\(.applied_version) \(.result)"'; }
wait_applied() { # gw version secs
    local got=""
    for _ in $(seq 1 $(($3 * 5))); do
        got=$(applied "$1")
        [ "$got" = "$2 ok" ] && return 0
        sleep 0.2
    done
    echo "    $1: '$got', expected '$2 ok'"
    return 1
}

# --- nothing pushed yet: show and pull say so and fail ---
for verb in show "pull -o -"; do
    # shellcheck disable=SC2086 # "pull -o -" is three words
    if out=$(R group $verb "$GROUP" "${CEPH[@]}" 2>&1 </dev/null) ||
        ! echo "$out" | grep -qF "no configuration pushed for group \"$GROUP\" ($POOL/rustio.group.$GROUP): push one with \`rustio group push\`"; then
        fail "group-config: $verb before any push: $out"
    else
        pass "group-config: $verb before any push fails ($(echo "$out" | tail -1))"
    fi
done

# --- version 1, pushed before any gateway runs ---
if out=$(R group push "$WORK/v1.json" "${CEPH[@]}" 2>&1) &&
    echo "$out" | grep -q "pushed group $GROUP version 1 to $POOL/rustio.group.$GROUP"; then
    pass "group-config: push v1 ($out)"
else
    fail "group-config: push v1: $out"; exit 1
fi

start_gw() { # name port → sets LAST_PID (tests/ceph/gw-lib.sh)
    gw_spawn "$2" "$WORK/$1.log" "$RUSTIO_RBD_BIN" serve --group "$GROUP" "${CEPH[@]}" \
        --gateway "$1" --group-poll 5 --log info
}
start_gw gw-a "$PORT_A" && PID_A=$LAST_PID && start_gw gw-b "$PORT_B" && PID_B=$LAST_PID ||
    { fail "group-config: both gateways start with --group"; exit 1; }
pass "group-config: both gateways start with --group"
if wait_applied gw-a 1 30 && wait_applied gw-b 1 30; then
    pass "group-config: both gateways recorded version 1 applied"
else
    fail "group-config: applied records of version 1"
fi

inq() { timeout 60 iscsi-inq "$@" >/dev/null 2>&1; }
chap_ok() { # port secret
    inq -i "$CHAP_INIT" "iscsi://gcuser%$2@127.0.0.1:$1/$T3/0"
}
if chap_ok "$PORT_A" secret-one-111 && chap_ok "$PORT_B" secret-one-111 &&
    ! chap_ok "$PORT_A" secret-two-222; then
    pass "group-config: v1 CHAP secret logs in through both gateways"
else
    fail "group-config: v1 CHAP secret"
fi
if ! inq -i "$INIT" "iscsi://127.0.0.1:$PORT_A/$T2/1"; then
    pass "group-config: no LUN 1 on T2 in v1"
else
    fail "group-config: LUN 1 on T2 before v2"
fi

# A session through gw-a on T1, opened before the change: reads LBA 0 in one session
# until it holds 0xab (written after the change, through another session).
timeout 150 python3 "$ROOT/tests/ceph/gw-initiator.py" "127.0.0.1:$PORT_A" "$T1" "$INIT" \
    poll 120 "ab uniform" read 0 >"$WORK/poll.out" 2>&1 &
PID_POLL=$!
sleep 3
if kill -0 "$PID_POLL" 2>/dev/null; then
    pass "group-config: session through gw-a open before the change"
else
    fail "group-config: session before the change: $(cat "$WORK/poll.out")"
fi

# --- version 2: LUN 1 on T2, new CHAP secret on T3 ---
t0=$(now_ms)
out=$(R group push "$WORK/v2.json" "${CEPH[@]}" --wait 60 2>&1)
rc=$?
t1=$(now_ms)
echo "$out" | sed 's/^/    /'
if [ $rc -eq 0 ] && echo "$out" | grep -q "^gw-a: applied version 2 " &&
    echo "$out" | grep -q "^gw-b: applied version 2 "; then
    pass "group-config: push v2 --wait: both applied ($((t1 - t0)) ms for the whole command)"
else
    fail "group-config: push v2 --wait (rc $rc)"
fi
ls_a=$(timeout 60 iscsi-ls -s -i "$INIT2" "iscsi://127.0.0.1:$PORT_A" 2>&1)
ls_b=$(timeout 60 iscsi-ls -s -i "$INIT2" "iscsi://127.0.0.1:$PORT_B" 2>&1)
lun1() { # iscsi-ls -s output: LUN 1 listed under target T2
    echo "$1" | awk -v t="Target:$T2 " '/^Target:/ {cur = (index($0, t) == 1)} cur && /^Lun:1 /' | grep -q .
}
if lun1 "$ls_a" && lun1 "$ls_b" && inq -i "$INIT2" "iscsi://127.0.0.1:$PORT_A/$T2/1" &&
    inq -i "$INIT2" "iscsi://127.0.0.1:$PORT_B/$T2/1"; then
    pass "group-config: LUN 1 of T2 visible through both gateways (REPORT LUNS, INQUIRY)"
else
    fail "group-config: LUN 1 through both gateways"
    echo "$ls_a" | sed 's/^/    a: /'; echo "$ls_b" | sed 's/^/    b: /'
fi
if chap_ok "$PORT_A" secret-two-222 && chap_ok "$PORT_B" secret-two-222 &&
    ! chap_ok "$PORT_A" secret-one-111 && ! chap_ok "$PORT_B" secret-one-111; then
    pass "group-config: new CHAP secret logs in, the old one is refused, through both gateways"
else
    fail "group-config: CHAP change through both gateways"
fi
if timeout 60 python3 "$ROOT/tests/ceph/gw-initiator.py" "127.0.0.1:$PORT_A" "$T1" "$INIT2" \
    write 0 0xab 30 >"$WORK/write.out" 2>&1; then :; else
    echo "    write: $(tail -2 "$WORK/write.out")"
fi
for _ in $(seq 1 300); do kill -0 "$PID_POLL" 2>/dev/null || break; sleep 0.1; done
wait "$PID_POLL"
prc=$?
PID_POLL=""
if [ $prc -eq 0 ] && grep -q "^ab uniform" "$WORK/poll.out"; then
    pass "group-config: the session opened before the change still works (it read the new data $(grep '^after' "$WORK/poll.out"))"
else
    fail "group-config: session opened before the change (rc $prc): $(tail -3 "$WORK/poll.out")"
fi
if R group pull "$GROUP" "${CEPH[@]}" -o "$WORK/pulled.json" 2>/dev/null &&
    cmp -s "$WORK/pulled.json" "$WORK/v2.json"; then
    pass "group-config: pull returns version 2 byte for byte"
else
    fail "group-config: pull"
fi

# --- an invalid push changes nothing ---
if out=$(R group push "$WORK/bad.json" "${CEPH[@]}" 2>&1); then
    fail "group-config: invalid push accepted: $out"
elif echo "$out" | grep -q "not pushed" && echo "$out" | grep -q "portal 127.0.0.1:$PORT_A used twice" &&
    [ "$(show_json | jq -r .version)" = 2 ] && [ "$(applied gw-a)" = "2 ok" ] &&
    [ "$(applied gw-b)" = "2 ok" ]; then
    pass "group-config: invalid push refused, nothing changed ($(echo "$out" | tail -1))"
else
    fail "group-config: invalid push: $out"
fi
if out=$(R group push "$CONF" "${CEPH[@]}" 2>&1); then
    fail "group-config: a non-JSON file pushed"
else
    pass "group-config: a file that is no configuration is refused ($(echo "$out" | tail -1))"
fi

# --- a gateway stopped during a push converges when it comes back ---
stop_pid "$PID_B"
PID_B=""
out=$(R group push "$WORK/v3.json" "${CEPH[@]}" --wait 8 2>&1)
rc=$?
echo "$out" | sed 's/^/    /'
if [ $rc -ne 0 ] && echo "$out" | grep -q "^gw-a: applied version 3 " &&
    echo "$out" | grep -q "^gw-b: no answer (last report: version 2)"; then
    pass "group-config: with gw-b down, push --wait reports gw-a applied and gw-b no answer (exit $rc)"
else
    fail "group-config: push v3 with gw-b down (rc $rc)"
fi
t0=$(now_ms)
if start_gw gw-b "$PORT_B" && PID_B=$LAST_PID && wait_applied gw-b 3 30; then
    t1=$(now_ms)
    v=$(show_json | jq -r .version)
    if [ "$v" = 3 ] && chap_ok "$PORT_B" secret-three-33 && ! chap_ok "$PORT_B" secret-two-222; then
        pass "group-config: gw-b restarted converges on version 3 ($((t1 - t0)) ms from start to applied)"
    else
        fail "group-config: gw-b after restart (version $v)"
    fi
else
    fail "group-config: gw-b restarted applies version 3"
fi
# --- a version the gateways cannot apply (its new image does not exist) ---
sed "s|rbd/$POOL/$IMG2;|rbd/$POOL/$IMG2-missing;|" "$WORK/v3.json" >"$WORK/v4.json"
out=$(R group push "$WORK/v4.json" "${CEPH[@]}" --wait 30 2>&1)
rc=$?
echo "$out" | sed 's/^/    /'
if [ $rc -ne 0 ] && echo "$out" | grep -q "^gw-a: failed: .*(still serving version 3)" &&
    echo "$out" | grep -q "^gw-b: failed: .*(still serving version 3)" &&
    inq -i "$INIT2" "iscsi://127.0.0.1:$PORT_A/$T2/1" && inq -i "$INIT2" "iscsi://127.0.0.1:$PORT_B/$T2/1" &&
    [ "$(show_json | jq -r '[.gateways[] | "\(.applied_version) \(.serving_version) \(.result)"] | join(",")')" = "4 3 error,4 3 error" ]; then
    pass "group-config: a version that cannot be applied is recorded as failed, version 3 keeps serving"
else
    fail "group-config: failing version 4 (rc $rc)"
fi
# SIGHUP re-reads the object and tries even a version that failed before.
tries() { grep -c "group configuration version 4: reload failed" "$WORK/gw-a.log"; }
before=$(tries)
kill -HUP "$PID_A"
for _ in $(seq 1 100); do [ "$(tries)" -gt "$before" ] && break; sleep 0.1; done
if [ "$(tries)" -gt "$before" ] && [ "$(applied gw-a)" = "4 error" ]; then
    pass "group-config: SIGHUP re-reads the group object (version 4 tried again, failed again)"
else
    fail "group-config: SIGHUP with --group"
fi
show=$(R group show "$GROUP" "${CEPH[@]}" 2>&1 | head -4)
echo "$show" | sed 's/^/    /'

echo "group-config: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
