#!/usr/bin/env bash
# Adversarial client suite for `rustio serve` (issue 20; docs/security.md): raw-socket
# iSCSI clients on 127.0.0.1 that try what an attacker would (cross-LU EXTENDED COPY,
# 64 MiB WRITE promises, a peer that stops reading, byte-dripped logins, connection
# floods, empty CHAP secrets and brute force, target resets, oversized login text, the
# metrics endpoint) and check that authority is enforced, memory stays bounded and other
# sessions keep being served. One line per check: "PASS abuse-<name> (...)" or
# "FAIL abuse-<name> (...)"; exits non-zero when any check failed, 2 when it cannot run.
#
# Environment:
#   RUSTIO_BIN   rustio binary (default: build it with cargo in release mode)
#   ABUSE_ONLY   comma-separated check names to run (default: all)
#   KEEP_LOGS=1  keep the work directory (server configs and logs)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/rustio-abuse.XXXXXX)

log() { printf '# %s\n' "$*"; }

cleanup() {
    # Every server the suite started, by PID (abuse.py records them); normally already
    # stopped by abuse.py itself.
    if [ -f "$WORK/pids" ]; then
        while read -r p; do
            kill -KILL "$p" 2>/dev/null
        done <"$WORK/pids"
    fi
    if [ "${KEEP_LOGS:-0}" = 1 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$ROOT/tests/lib/iscsi-checks.sh"
need_rustio_bin
command -v python3 >/dev/null || { log "python3 is required"; exit 2; }
log "rustio binary: $RUSTIO_BIN"

# The whole suite is bounded (each check has its own 75 s watchdog too).
timeout -k 10 480 python3 "$HERE/abuse.py" --bin "$RUSTIO_BIN" --work "$WORK" \
    --only "${ABUSE_ONLY:-}"
rc=$?
[ "$rc" = 124 ] && echo "FAIL abuse-suite (timed out after 480s)"
exit "$rc"
