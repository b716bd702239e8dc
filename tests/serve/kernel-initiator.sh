#!/usr/bin/env bash
# The Linux kernel iSCSI initiator against `rustio serve`: boots ONE VM with
# tests/vm/run.sh and runs tests/serve/kernel-guest.sh in it (rustio serve with a qcow2
# LUN on 127.0.0.1:3260 inside the guest; open-iscsi login, sg_inq/sg_readcap, mkfs.ext4,
# files + checksums, logout/login, remount and verify, logout, qemu-img check).
# Prints the guest's PASS/FAIL lines and a summary; exits non-zero on failure.
#
# Environment:
#   RUSTIO_BIN     rustio binary (default: build it with cargo in release mode)
#   VM_TIMEOUT     hard limit for the VM in seconds (default 600)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T0=$(date +%s)

# shellcheck source=../lib/iscsi-checks.sh
. "$ROOT/tests/lib/iscsi-checks.sh"  # release_rustio
[ -n "${RUSTIO_BIN:-}" ] || echo "building rustio (release)"
release_rustio RUSTIO_BIN ||
    { echo "FAIL kernel-initiator (the build failed, or no rustio binary at ${RUSTIO_BIN:-the target dir})"; exit 2; }
RUSTIO_BIN=$(realpath "$RUSTIO_BIN")
for t in qemu-img sg_inq iscsiadm mkfs.ext4; do
    command -v "$t" >/dev/null || { echo "FAIL kernel-initiator ($t not installed; see .ci/install-deps.sh vm)"; exit 2; }
done

export RUSTIO_BIN
rc=0
"$ROOT/tests/vm/run.sh" --timeout "${VM_TIMEOUT:-600}" "$HERE/kernel-guest.sh" || rc=$?
echo "kernel-initiator: VM exit $rc, total $(( $(date +%s) - T0 ))s"
if [ "$rc" = 0 ]; then echo "PASS kernel-initiator"; else echo "FAIL kernel-initiator"; fi
exit "$rc"
