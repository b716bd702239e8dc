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
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

for t in iscsi-ls iscsi-inq jq; do
    command -v "$t" >/dev/null || { bad "scst-serve ($t not installed; run .ci/install-deps.sh)"; exit 1; }
done
log() { printf '%s\n' "$*"; }
. "$ROOT/tests/lib/iscsi-checks.sh"
need_rustio_bin

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

if start_server "$RUSTIO_BIN" "$WORK/serve.json" "$PORT" "$WORK/server.log"; then
    ok "rustio serve loads the imported configuration"
else
    bad "rustio serve loads the imported configuration"; exit 1
fi
P=127.0.0.1:$PORT
T=iqn.2024-01.com.example

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
expect_fail "discovery with the conf's second account refused (as the import report says)" \
    timeout 60 iscsi-ls "iscsi://discovery2%disc0verySecret2@$P"
grep -q 'approximate: IncomingUser "discovery2' "$WORK/report.txt" && ok "import report names the dropped discovery account" ||
    bad "import report names the dropped discovery account"
expect_fail "discovery with a wrong secret refused" timeout 60 iscsi-ls iscsi://discovery%wrongsecret1@$P
expect_fail "discovery without CHAP refused" timeout 60 iscsi-ls iscsi://$P

# --- targets, accounts and groups ---------------------------------------------------------------
expect_ok "chap-acls: group initiator a with CHAP" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:a "iscsi://joe%12charsecret@$P/$T:chap-acls/0"
expect_ok "chap-acls: group initiator b with CHAP" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:b "iscsi://joe%12charsecret@$P/$T:chap-acls/0"
expect_fail "chap-acls: wrong secret refused" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:a iscsi://joe%wrong12chars@$P/$T:chap-acls/0
expect_fail "chap-acls: initiator outside every group refused" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:zzz iscsi://joe%12charsecret@$P/$T:chap-acls/0
expect_ok "chap-acls: mutual CHAP with the conf's OutgoingUser" timeout 60 env LIBISCSI_CHAP_TARGET_USERNAME=target \
    LIBISCSI_CHAP_TARGET_PASSWORD=mutualSecret12 iscsi-inq -i iqn.1994-05.com.redhat:a "iscsi://joe%12charsecret@$P/$T:chap-acls/0"
expect_fail "chap-acls: mutual CHAP with a wrong target secret refused" env LIBISCSI_CHAP_TARGET_USERNAME=target \
    LIBISCSI_CHAP_TARGET_PASSWORD=wrongSecret123 timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:a "iscsi://joe%12charsecret@$P/$T:chap-acls/0"
expect_ok "chap-demo: any initiator with the TPG account" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:zzz "iscsi://joe%12charsecret@$P/$T:chap-demo/0"
expect_fail "chap-demo: without CHAP refused" timeout 60 iscsi-inq iscsi://$P/$T:chap-demo/0
expect_ok "chap-many: first account logs in" timeout 60 iscsi-inq "iscsi://joe%12charsecret@$P/$T:chap-many/0"
expect_ok "mutual-only: no authentication" timeout 60 iscsi-inq "iscsi://$P/$T:mutual-only/0"
expect_ok "chap-groups: alice with her group's CHAP" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:alice "iscsi://alice%aliceSecret12@$P/$T:chap-groups/0"
expect_fail "chap-groups: alice without CHAP refused" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:alice iscsi://$P/$T:chap-groups/0
expect_ok "chap-groups: bob (open group) without CHAP" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:bob "iscsi://$P/$T:chap-groups/0"
expect_fail "chap-groups: outsider refused" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:zzz iscsi://$P/$T:chap-groups/0
expect_fail "chap-groups: bob has no LUN 1 (as declared)" timeout 60 iscsi-inq -i iqn.1994-05.com.redhat:bob iscsi://$P/$T:chap-groups/1
expect_ok "server still running after every check" kill -0 "$SERVER"

echo
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
