#!/usr/bin/env bash
# LIO yardstick stage of the benchmark (issue 24 item 5). See bench/README.md, "LIO stage".
#
#   bench/lio/run.sh [--quick] [--runs N] [--out DIR]
#
# Boots ONE VM (tests/vm/run.sh, Debian's kernel under QEMU TCG, no NIC) running
# guest-bench.sh: the kernel's own iSCSI target (LIO, ramdisk rd_mcp + fileio LUNs,
# configured with `rustio restore`) and `rustio serve` (RAM + file LUNs) on the guest's
# 127.0.0.1, the same client (bench/loadgen, plus libiscsi's iscsi-perf) against each; then
# prints the table (report.py) and writes DIR/lio.json (+ lio.txt).
#   --quick        3 s per job, one run of each, 128 MiB LUNs
#   --runs N       runs of each job (default 3, --quick 1); the table shows the median
#   --out DIR      output directory (default bench/out/lio-<timestamp>); the VM's control dir
#                  (console.log, dmesg.log, per-LUN client output) is DIR/vm
# Env: RUSTIO_BIN (default: release build, CARGO_TARGET_DIR=/work/target-bench),
#      LOADGEN_BIN (default: release build of bench/loadgen in the same target dir),
#      RUSTIO_BENCH_SIZE_MB (default 256, --quick 128), RUSTIO_BENCH_RUNTIME (s per job,
#      default 5, --quick 3), VM_TIMEOUT (default 900 s), VM_MEM (default 3G),
#      RUSTIO_SERVE_ARGS (extra `rustio serve` options, e.g. "--busy-poll-us 0").
# Exit status: 0 when the VM ran and the JSON was written, otherwise the failing step's.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
quick=0
runs=
out=
while (($#)); do
  case "$1" in
    --quick) quick=1; shift ;;
    --runs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "bench/lio/run.sh: --runs needs a positive integer" >&2; exit 2; }
            runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench/lio/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
out=${out:-$root/bench/out/lio-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(realpath "$out")
t0=$(date +%s)

"$root/.ci/install-deps.sh" vm
# rtslib/targetcli want /etc/target; the guest gets a writable one only if the host has it.
mkdir -p /etc/target

# Binaries: built unless given, staged where the guest can see them (stage-bin.sh).
. "$here/../stage-bin.sh"
bindir=/var/tmp/rustio-bench/lio-bin-$$
trap 'rm -rf "$bindir"' EXIT
vm_stage_bins lio "$bindir"
vm_args=(--timeout "${VM_TIMEOUT:-900}" --mem "${VM_MEM:-3G}" --out "$out/vm"
         --env "RUSTIO_BIN=$RUSTIO_BIN" --env "LOADGEN_BIN=$LOADGEN_BIN")
[[ -d "$bindir" ]] && vm_args+=(--share "$bindir")
[[ -n "$runs" ]] && vm_args+=(--env "RUSTIO_BENCH_RUNS=$runs")
[[ -n "${RUSTIO_SERVE_ARGS:-}" ]] && vm_args+=(--env "RUSTIO_SERVE_ARGS=$RUSTIO_SERVE_ARGS")

{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host_kernel=$(uname -r)"
  echo "host_cpus=$(nproc)"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "quick=$quick"
  echo "rustio_bin=$RUSTIO_BIN"
  echo "loadgen_bin=$LOADGEN_BIN"
  echo "rustio_serve_args=${RUSTIO_SERVE_ARGS:-}"
} >"$out/host.env"

guest_args=()
((quick)) && guest_args+=(--quick)
vm_stage_run lio "$out" "$here/guest-bench.sh" "$here/report.py" lio.json '^\[ *[0-9.]+s\]' . \
  -- "${vm_args[@]}" -- "${guest_args[@]}"
