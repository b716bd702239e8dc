#!/bin/bash
# Host side: build rustio, then boot the test VM once and run the TCMU guest checks.
#   tests/tcmu/run-vm.sh [SECTION...]        (sections: see guest-tcmu.sh)
# Env: CARGO_TARGET_DIR (default /work/target-tcmu), RUSTIO_BIN (skip the build and use
# this binary), VM_TIMEOUT (default 1800 s: TCG on 2 busy cores is slow), VM_OUT (keep
# console/dmesg/runner.log there).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-tcmu}
if [[ -z "${RUSTIO_BIN:-}" ]]; then
  (cd "$root" && cargo build -p rustio --bin rustio)
  export RUSTIO_BIN=$CARGO_TARGET_DIR/debug/rustio
fi
[[ -x "$RUSTIO_BIN" ]] || { echo "no rustio binary at $RUSTIO_BIN" >&2; exit 1; }
args=(--timeout "${VM_TIMEOUT:-1800}" --env "RUSTIO_BIN=$RUSTIO_BIN")
[[ -n "${VM_OUT:-}" ]] && args+=(--out "$VM_OUT")
exec "$root/tests/vm/run.sh" "${args[@]}" "$here/guest-tcmu.sh" "$@"
