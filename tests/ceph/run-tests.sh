#!/usr/bin/env bash
# Tests the rbd engine against a real single-node Ceph cluster on 127.0.0.1:
# installs the Ceph packages if missing (as root), starts a throwaway cluster (start.sh)
# under a fresh temp dir on free ports, runs `cargo test -p rustio-rbd --features rbd`
# (unit tests, crates/rbd/tests/cluster.rs and the cross-gateway reservation tests of
# crates/rbd/tests/prstore.rs), `rustio serve` of RBD LUNs checked with
# iscsi-test-cu and qemu-img (serve.sh; RUSTIO_CEPH_NO_SERVE=1 skips it), plus clippy with
# the feature, stops the
# cluster (only its own PIDs), and prints one PASS/FAIL line per test and a summary.
#
# Env: CARGO_TARGET_DIR as usual; RUSTIO_CEPH_KEEP=1 keeps the cluster dir (logs) afterwards;
# RUSTIO_CEPH_NO_INSTALL=1 never runs apt-get.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
HERE=$ROOT/tests/ceph
T0=$(date +%s)
passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
summary() {
    echo "rbd: total $(( $(date +%s) - T0 ))s"
    echo "rbd: $passed passed, $failed failed"
}

# --- packages ---
if [ "${RUSTIO_CEPH_NO_INSTALL:-0}" = 1 ]; then dep_args=(--check ceph base); else dep_args=(ceph base); fi
if ! "$ROOT/.ci/install-deps.sh" "${dep_args[@]}" >/tmp/rustio-ceph-apt.log 2>&1; then
    tail -20 /tmp/rustio-ceph-apt.log
    fail "rbd-packages (.ci/install-deps.sh ${dep_args[*]} failed)"
    summary; exit 1
fi

# --- a free pair of monitor ports (another cluster may hold the defaults) ---
# shellcheck source=../lib/iscsi-checks.sh
. "$ROOT/tests/lib/iscsi-checks.sh"  # port_open
V2=""
for base in 13300 23300 33300 43300 53300; do
    if ! port_open "$base" && ! port_open $((base + 1)); then V2=$base; break; fi
done
[ -n "$V2" ] || { fail "rbd-cluster-start (no free port pair)"; summary; exit 1; }

export CEPH_DIR
CEPH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rustio-ceph.XXXXXX")
cleanup() {
    local t
    t=$(date +%s)
    # Still empty when start.sh refused before creating anything (stop.sh, rightly, leaves
    # alone a directory without its marker).
    rmdir "$CEPH_DIR" 2>/dev/null
    if [ "${RUSTIO_CEPH_KEEP:-0}" = 1 ]; then
        CEPH_KEEP=1 "$HERE/stop.sh" >/dev/null 2>&1
        echo "cluster dir kept: $CEPH_DIR"
    else
        "$HERE/stop.sh" >/dev/null 2>&1 || echo "stop.sh failed for $CEPH_DIR"
    fi
    echo "rbd: cluster stop $(( $(date +%s) - t ))s"
}
trap cleanup EXIT

t=$(date +%s)
if CEPH_MON_PORT=$V2 CEPH_MON_PORT_V1=$((V2 + 1)) CEPH_RBD_IMAGE=rbd/smoke CEPH_RBD_SIZE=64M \
    "$HERE/start.sh" > "$CEPH_DIR.start.log" 2>&1; then
    pass "rbd-cluster-start ($(( $(date +%s) - t ))s, ports $V2/$((V2 + 1)))"
else
    tail -30 "$CEPH_DIR.start.log"
    # The FAIL line carries start.sh's reason (its last line), for the summaries that show
    # only FAIL lines.
    why=$(grep -m1 '^start.sh: ERROR: ' "$CEPH_DIR.start.log" | sed 's/^start.sh: ERROR: //')
    echo "start.sh's log is kept: $CEPH_DIR.start.log"
    fail "rbd-cluster-start${why:+: $why}"
    summary; exit 1
fi
rm -f "$CEPH_DIR.start.log"

export RUSTIO_CEPH_CONF=$CEPH_DIR/ceph.conf
export RUSTIO_CEPH_POOL=rbd
export CARGO_TERM_COLOR=never

t=$(date +%s)
LOG=$(mktemp "${TMPDIR:-/tmp}/rustio-rbd-test.XXXXXX")
# librados writes to the tests' stderr; keeping it apart from libtest's stdout keeps the
# "test NAME ... ok" lines whole.
cargo test -p rustio-rbd --features rbd -- --test-threads=1 2>"$LOG.err" | tee "$LOG"
rc=${PIPESTATUS[0]}
# The TCMU runner's `user:rbd` handler on the same cluster.
cargo test -p rustio-tcmu --features rbd --test rbd_cluster 2>>"$LOG.err" | tee -a "$LOG"
rc2=${PIPESTATUS[0]}
[ "$rc" -ne 0 ] || rc=$rc2
[ "$rc" -eq 0 ] || tail -40 "$LOG.err"
echo "rbd: cargo test $(( $(date +%s) - t ))s"
n=0
while read -r name result; do
    n=$((n + 1))
    if [ "$result" = ok ]; then pass "rbd: $name"; else fail "rbd: $name"; fi
done < <(sed -nE 's/^test ([^ ]+) \.\.\. (ok|FAILED)$/\1 \2/p' "$LOG")
if [ "$rc" -ne 0 ] && ! grep -q '^test .* FAILED$' "$LOG"; then fail "rbd: cargo test exited $rc"; fi
[ "$n" -gt 0 ] || fail "rbd: no test ran"
# Every result libtest counted must have been reported above.
total=$(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$LOG" |
    awk '{t += $1 + $2} END {print t + 0}')
[ "$total" -eq "$n" ] || fail "rbd: libtest counted $total results but $n were parsed"
rm -f "$LOG" "$LOG.err"

# --- rustio serve with RBD LUNs ---
if [ "${RUSTIO_CEPH_NO_SERVE:-0}" != 1 ]; then
    t=$(date +%s)
    before=$failed
    SLOG=$(mktemp "${TMPDIR:-/tmp}/rustio-rbd-serve.XXXXXX")
    # + the gateway group: its own checks, the group configuration object, then libiscsi
    # through two gateways
    ( "$HERE/serve.sh"; r=$?; "$HERE/gateways.sh" || r=1; "$HERE/group-config.sh" || r=1; "$HERE/gateways-libiscsi.sh" || r=1; exit $r ) >"$SLOG" 2>&1
    rc=$?
    while IFS= read -r line; do
        case "$line" in
            "PASS "*) pass "${line#PASS }" ;;
            "FAIL "*) fail "${line#FAIL }" ;;
            *) echo "$line" ;;
        esac
    done <"$SLOG"
    rm -f "$SLOG"
    if [ "$rc" -ne 0 ] && [ "$failed" -eq "$before" ]; then fail "rbd-serve: serve.sh exited $rc"; fi
    echo "rbd: serve.sh $(( $(date +%s) - t ))s"
fi

t=$(date +%s)
if cargo clippy -q -p rustio-rbd --no-deps --all-targets --features rbd -- -D warnings; then
    pass "rbd: clippy --features rbd ($(( $(date +%s) - t ))s)"
else
    fail "rbd: clippy --features rbd"
fi

summary
[ "$failed" -eq 0 ]
