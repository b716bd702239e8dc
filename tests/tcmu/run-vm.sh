#!/bin/bash
# Host side: build rustio, then boot the test VM once and run the TCMU guest checks.
#   tests/tcmu/run-vm.sh [SECTION...]        (sections: see guest-tcmu.sh)
# Run it from anywhere in a clone (as root: the harness and the package install need it).
# Missing Debian packages (qemu, kernel, fio, sg3-utils, targetcli-fb, qemu-utils, ...) are
# installed by .ci/install-deps.sh vm first.
# Output: one "PASS: name" / "FAIL: name" / "SKIP: name" line per check, a summary, and the
# wall-clock time; exit status 0 only if every check passed (124 = VM timeout, 125 = VM
# or harness failure).
# Env: CARGO_TARGET_DIR (default <clone>/target), RUSTIO_BIN (skip the build and use
# this binary), VM_TIMEOUT (default 1800 s: TCG on 2 busy cores is slow; an idle machine
# needs about 10 minutes), VM_OUT (keep console/dmesg/runner.log there).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
t0=$(date +%s)
"$root/.ci/install-deps.sh" vm
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
if [[ -z "${RUSTIO_BIN:-}" ]]; then
  (cd "$root" && cargo build -p rustio --bin rustio)
  export RUSTIO_BIN=$CARGO_TARGET_DIR/debug/rustio
fi
[[ -x "$RUSTIO_BIN" ]] || { echo "no rustio binary at $RUSTIO_BIN" >&2; exit 1; }
args=(--timeout "${VM_TIMEOUT:-1800}" --env "RUSTIO_BIN=$RUSTIO_BIN")
# The guest sees the host root read-only, except these dirs, which are fresh tmpfs there:
# share the clone and the binary's dir if they live under one.
shared=()
for d in "$root" "$(cd "$(dirname "$RUSTIO_BIN")" && pwd)"; do
  case "$d/" in /tmp/* | /var/tmp/* | /run/* | /var/log/* | /root/*) ;; *) continue ;; esac
  for s in "${shared[@]}"; do [[ $d == "$s" || $d == "$s"/* ]] && continue 2; done
  shared+=("$d")
  args+=(--share "$d")
done
[[ -n "${VM_OUT:-}" ]] && args+=(--out "$VM_OUT")
rc=0
"$root/tests/vm/run.sh" "${args[@]}" "$here/guest-tcmu.sh" "$@" || rc=$?
echo "tcmu run-vm: exit $rc after $(($(date +%s) - t0)) s (build + VM)"
exit "$rc"
