#!/usr/bin/env bash
# SCST migration onto rustio's own target (issue: "the same imported file served by
# `rustio serve` passes the same host-side checks" as the kernel run in tests/lio/):
#   rustio import scst tests/scst/10-chap.conf -> saveconfig.json
#   -> portals moved to 127.0.0.1:$PORT -> rustio serve --config
#   -> iscsi-ls (discovery CHAP from the conf) lists exactly the conf's targets,
#      every account/group of the conf logs in, wrong secrets and outsiders are refused.
# Prints "PASS: name"/"FAIL: name" lines and exits non-zero when anything failed.
#
# Environment: RUSTIO_BIN (default: cargo build --release), PORT (default 23460).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT=${PORT:-23460}
CONF=$HERE/10-chap.conf
WORK=$(mktemp -d /tmp/rustio-scst-serve.XXXXXX)
PASS=0
FAIL=0
SERVER=

ok() { PASS=$((PASS + 1)); echo "PASS: $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

for t in iscsi-ls iscsi-inq jq; do
    command -v "$t" >/dev/null || { bad "scst-serve ($t not installed; run .ci/install-deps.sh)"; exit 1; }
done
if [ -z "${RUSTIO_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p rustio) || { bad "scst-serve: build"; exit 1; }
    RUSTIO_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/rustio"
fi

# --- import ---------------------------------------------------------------------------
if "$RUSTIO_BIN" import scst "$CONF" -o "$WORK/raw.json" --report "$WORK/report.txt" 2>"$WORK/import.err"; then
    ok "import scst 10-chap.conf"
else
    bad "import scst 10-chap.conf"; cat "$WORK/import.err"; exit 1
fi
# Every portal onto loopback (the conf listens on every address at 3260).
jq --argjson port "$PORT" \
    '.targets[].tpgs[].portals = [{"ip_address": "127.0.0.1", "port": $port}]' \
    "$WORK/raw.json" >"$WORK/serve.json" || { bad "rewrite portals"; exit 1; }

"$RUSTIO_BIN" serve --config "$WORK/serve.json" --log warn >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
if kill -0 "$SERVER" 2>/dev/null; then ok "rustio serve loads the imported configuration"; else
    bad "rustio serve loads the imported configuration"; cat "$WORK/server.log"; exit 1
fi

P=127.0.0.1:$PORT
T=iqn.2024-01.com.example
it() { timeout 60 "$@" >/dev/null 2>&1; }
check() { # name, command...
    local name=$1; shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

# --- discovery ----------------------------------------------------------------------------
# rustio serve lists to each initiator only the targets it may enter (LIO lists all), so
# the conf's targets are the union of what its group members discover.
want=$(sed -n 's/^\s*TARGET \(iqn[^ ]*\) {.*/\1/p' "$CONF" | sort)
got=$(for i in iqn.1994-05.com.redhat:a iqn.1994-05.com.redhat:alice; do
    timeout 60 iscsi-ls -i "$i" "iscsi://discovery%disc0verySecret@$P" 2>/dev/null
done | sed -n 's/^Target:\([^ ]*\) .*/\1/p' | sort -u)
if [ -n "$want" ] && [ "$want" = "$got" ]; then ok "discovery CHAP from the conf lists exactly its targets"
else bad "discovery CHAP from the conf lists exactly its targets (want: $want; got: $got)"; fi
outsider=$(timeout 60 iscsi-ls -i iqn.1994-05.com.redhat:zzz "iscsi://discovery%disc0verySecret@$P" 2>/dev/null |
    sed -n 's/^Target:\([^ ]*\) .*/\1/p' | sort -u | tr '\n' ' ')
if [ "$outsider" = "iqn.2024-01.com.example:chap-demo iqn.2024-01.com.example:chap-many iqn.2024-01.com.example:mutual-only " ]; then
    ok "an initiator outside every group discovers only the demo-mode targets"
else bad "an initiator outside every group discovers only the demo-mode targets (got: $outsider)"; fi
# The import report marks the second discovery account approximate: LIO keeps one.
check "discovery with the conf's second account refused (as the import report says)" \
    bash -c "! timeout 60 iscsi-ls iscsi://discovery2%disc0verySecret2@$P >/dev/null 2>&1"
grep -q 'approximate: IncomingUser "discovery2' "$WORK/report.txt" && ok "import report names the dropped discovery account" ||
    bad "import report names the dropped discovery account"
check "discovery with a wrong secret refused" bash -c "! timeout 60 iscsi-ls iscsi://discovery%wrongsecret1@$P >/dev/null 2>&1"
check "discovery without CHAP refused" bash -c "! timeout 60 iscsi-ls iscsi://$P >/dev/null 2>&1"

# --- targets, accounts and groups ---------------------------------------------------------------
check "chap-acls: group initiator a with CHAP" it iscsi-inq -i iqn.1994-05.com.redhat:a "iscsi://joe%12charsecret@$P/$T:chap-acls/0"
check "chap-acls: group initiator b with CHAP" it iscsi-inq -i iqn.1994-05.com.redhat:b "iscsi://joe%12charsecret@$P/$T:chap-acls/0"
check "chap-acls: wrong secret refused" bash -c "! timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:a iscsi://joe%wrong12chars@$P/$T:chap-acls/0 >/dev/null 2>&1"
check "chap-acls: initiator outside every group refused" bash -c "! timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:zzz iscsi://joe%12charsecret@$P/$T:chap-acls/0 >/dev/null 2>&1"
check "chap-acls: mutual CHAP with the conf's OutgoingUser" it env LIBISCSI_CHAP_TARGET_USERNAME=target \
    LIBISCSI_CHAP_TARGET_PASSWORD=mutualSecret12 iscsi-inq -i iqn.1994-05.com.redhat:a "iscsi://joe%12charsecret@$P/$T:chap-acls/0"
check "chap-acls: mutual CHAP with a wrong target secret refused" bash -c "! LIBISCSI_CHAP_TARGET_USERNAME=target \
    LIBISCSI_CHAP_TARGET_PASSWORD=wrongSecret123 timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:a iscsi://joe%12charsecret@$P/$T:chap-acls/0 >/dev/null 2>&1"
check "chap-demo: any initiator with the TPG account" it iscsi-inq -i iqn.1994-05.com.redhat:zzz "iscsi://joe%12charsecret@$P/$T:chap-demo/0"
check "chap-demo: without CHAP refused" bash -c "! timeout 60 iscsi-inq iscsi://$P/$T:chap-demo/0 >/dev/null 2>&1"
check "chap-many: first account logs in" it iscsi-inq "iscsi://joe%12charsecret@$P/$T:chap-many/0"
check "mutual-only: no authentication" it iscsi-inq "iscsi://$P/$T:mutual-only/0"
check "chap-groups: alice with her group's CHAP" it iscsi-inq -i iqn.1994-05.com.redhat:alice "iscsi://alice%aliceSecret12@$P/$T:chap-groups/0"
check "chap-groups: alice without CHAP refused" bash -c "! timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:alice iscsi://$P/$T:chap-groups/0 >/dev/null 2>&1"
check "chap-groups: bob (open group) without CHAP" it iscsi-inq -i iqn.1994-05.com.redhat:bob "iscsi://$P/$T:chap-groups/0"
check "chap-groups: outsider refused" bash -c "! timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:zzz iscsi://$P/$T:chap-groups/0 >/dev/null 2>&1"
check "chap-groups: bob has no LUN 1 (as declared)" bash -c "! timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:bob iscsi://$P/$T:chap-groups/1 >/dev/null 2>&1"
check "server still running after every check" kill -0 "$SERVER"

echo
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
