#!/usr/bin/env bash
# Real-kernel test of rustio's LIO management (issue 5), SCST import (issue 8) and
# targetcli grammar and shell (issue 23): builds rustio (release), boots ONE VM
# (tests/vm/run.sh) and runs tests/lio/guest-lio.sh in it (its section 7 is
# tests/lio/guest-targetcli.sh) against the kernel's LIO, tcm_loop, TCMU and iSCSI
# target, with targetcli, libiscsi, open-iscsi and tmux as cross-checks.
# Section 7 alone (~2 min): RUSTIO_BIN=... tests/vm/run.sh --timeout 600 tests/lio/guest-targetcli.sh
#
# Usage (from anywhere, as root): tests/lio/run-vm.sh [--timeout SECS] [--out DIR]
#   RUSTIO_BIN=/path/to/rustio   use this binary instead of building one
#   CARGO_TARGET_DIR             build dir (default /work/target-lio)
#   RUSTIO_LIO_CU_TESTS          iscsi-test-cu families to run (see guest-lio.sh)
# Exit status: the guest script's (0 = all checks passed; 124 timeout; 125 VM failure).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TIMEOUT=1500
OUT=()
while (($#)); do
  case "$1" in
    --timeout) TIMEOUT=$2; shift 2 ;;
    --out) OUT=(--out "$2"); shift 2 ;;
    *) echo "usage: $0 [--timeout SECS] [--out DIR]" >&2; exit 2 ;;
  esac
done

t0=$(date +%s)
# Packages: the VM harness's set (qemu, kernel, targetcli-fb, open-iscsi,
# libiscsi-bin, ...) plus jq.
"$ROOT/.ci/install-deps.sh" vm

# The guest gets a writable /etc/target only if the host has one (targetcli-fb
# does not ship it; its first saveconfig creates it). targetcli wants it.
mkdir -p /etc/target

if [[ -z "${RUSTIO_BIN:-}" ]]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-lio}
fi
# shellcheck source=../lib/iscsi-checks.sh
. "$ROOT/tests/lib/iscsi-checks.sh"  # release_rustio
release_rustio RUSTIO_BIN ||
  { echo "run-vm.sh: the build failed, or ${RUSTIO_BIN:-the binary} is not executable" >&2; exit 2; }
export RUSTIO_BIN
echo "run-vm.sh: rustio binary $RUSTIO_BIN (build/deps took $(($(date +%s) - t0)) s)"

rc=0
(cd "$ROOT" && tests/vm/run.sh --timeout "$TIMEOUT" "${OUT[@]}" tests/lio/guest-lio.sh </dev/null) || rc=$?
echo "run-vm.sh: guest exit status $rc, total $(($(date +%s) - t0)) s"
exit "$rc"
