#!/usr/bin/env bash
# Linux dm-multipath + open-iscsi against a two-gateway group (issue #22): boots ONE VM
# with tests/vm/run.sh and runs tests/ceph/guest-multipath.sh in it. Inside the guest (no
# NIC: everything on its loopback): a single-node Ceph cluster (memstore), gw-a and gw-b
# (`rustio serve --gateway`) on 127.0.0.1:3260/3261, open-iscsi logged in to both,
# multipathd with the docs' device section, fio randwrite + crc32c verify on the map while
# the owning gateway is killed with SIGKILL; the I/O stall is printed.
# Prints the guest's PASS/FAIL lines and a summary; exits non-zero on failure or timeout.
#
# Environment:
#   RUSTIO_RBD_BIN  rustio built with --features rbd (default: cargo build --release
#                   -p rustio --features rbd). It is copied into a private directory shared
#                   with the guest, so a rebuild during the run cannot change it.
#   VM_TIMEOUT      hard limit for the whole VM in seconds, boot included (default 1500)
#   VM_MEM          guest memory (default 6G: the memstore OSD keeps the data in RAM)
#   MP_KEEP=1       keep the run's directory (console.log, dmesg.log, out/: gateway,
#                   multipathd and fio logs) also when it passes
#   MP_FIO_SIZE, MP_KILL_AFTER, MP_FAST_IO_FAIL_TMO  passed to the guest (fio region,
#                   seconds before the kill, a fast_io_fail_tmo replacing the docs' value)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T0=$(date +%s)

# shellcheck source=../lib/iscsi-checks.sh
. "$ROOT/tests/lib/iscsi-checks.sh"  # release_rustio
[ -n "${RUSTIO_RBD_BIN:-}" ] || echo "building rustio --features rbd (release)"
release_rustio RUSTIO_RBD_BIN rbd ||
    { echo "FAIL multipath-vm (build rustio --features rbd failed, or no binary at ${RUSTIO_RBD_BIN:-the target dir})"; exit 2; }
for t in iscsiadm multipath multipathd fio ceph-mon rbd qemu-system-x86_64; do
    command -v "$t" >/dev/null || { echo "FAIL multipath-vm ($t not installed; see .ci/install-deps.sh vm ceph)"; exit 2; }
done

# The run's directory: bin/ is shared (read-only use) with the guest, vm/ is run.sh's
# --out (it must not lie inside a shared directory).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rustio-mpath.XXXXXX")
mkdir -p "$WORK/bin"
cp "$RUSTIO_RBD_BIN" "$WORK/bin/rustio" || { echo "FAIL multipath-vm (copy $RUSTIO_RBD_BIN)"; exit 2; }

extra=()
[ -n "${MP_FAST_IO_FAIL_TMO:-}" ] && extra+=(--env "MP_FAST_IO_FAIL_TMO=$MP_FAST_IO_FAIL_TMO")
rc=0
RUSTIO_RBD_BIN="$WORK/bin/rustio" "$ROOT/tests/vm/run.sh" --timeout "${VM_TIMEOUT:-1500}" --mem "${VM_MEM:-6G}" \
    --share "$WORK/bin" --out "$WORK/vm" \
    --env "MP_FIO_SIZE=${MP_FIO_SIZE:-24M}" --env "MP_KILL_AFTER=${MP_KILL_AFTER:-8}" "${extra[@]}" \
    "$HERE/guest-multipath.sh" </dev/null || rc=$?
case "$rc" in
    0) ;;
    124) echo "FAIL multipath-vm: the VM hit its ${VM_TIMEOUT:-1500}s limit" ;;
    125) echo "FAIL multipath-vm: the VM failed to boot or returned no status" ;;
esac
if [ "$rc" != 0 ]; then
    for f in "$WORK"/vm/out/gw-*.log "$WORK/vm/out/multipathd.log"; do
        [ -f "$f" ] && { echo "--- $(basename "$f") (tail)"; tail -n 25 "$f"; }
    done
fi
echo "multipath-vm: VM exit $rc, wall time $(( $(date +%s) - T0 ))s"
if [ "$rc" != 0 ] || [ "${MP_KEEP:-0}" = 1 ]; then
    rm -f "$WORK/bin/rustio"
    echo "multipath-vm: logs kept in $WORK/vm"
else
    rm -rf "$WORK"
fi
if [ "$rc" = 0 ]; then echo "PASS multipath-vm"; else echo "FAIL multipath-vm"; fi
exit "$rc"
