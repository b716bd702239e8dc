#!/usr/bin/env bash
# TCMU stage of the benchmark (issue 7; qcow2 entry: issue 10). See bench/README.md.
#
#   bench/tcmu/run.sh [--quick] [--runs N] [--out DIR] [--backends LIST]
#
# Builds rustio (release, CARGO_TARGET_DIR=/work/target-bench unless RUSTIO_BIN is given)
# and tcmu-runner's file handler (build-tcmu-file.sh, cached in
# /var/tmp/rustio-bench/tcmu-runner-file), boots ONE VM (tests/vm/run.sh) running
# guest-bench.sh, then prints the table (report.py) and writes DIR/tcmu.json (+ tcmu.txt).
#   --quick        3 s per fio job instead of 10 s, one run of each
#   --runs N       runs of each fio job (default 3, --quick 1); the table shows the median
#   --out DIR      output directory (default bench/out/tcmu-<timestamp>); the VM's control
#                  dir (console.log, dmesg.log, per-backend fio JSON and daemon logs) is DIR/vm
#   --backends L   comma list (default: kernel-fileio,rustio-file,tcmu-runner-file,
#                  rustio-qcow,tcmu-runner-qcow)
# Env: RUSTIO_BIN, RUSTIO_BENCH_SIZE_MB (default 512), RUSTIO_BENCH_RUNTIME (s per job),
#      RUSTIO_BENCH_RUNNER_ARGS (extra `rustio runner` options, e.g. "--threads 2"),
#      VM_TIMEOUT (default 1500 s), VM_MEM (default 3G), RUSTIO_BENCH_FLOOR=1 (the floor
#      round: fio pvsync straight on the backing file, no TCMU; see guest-bench.sh), and
#      every other RUSTIO_* variable guest-bench.sh reads (tests/vm/run.sh passes them on).
# Exit status: 0 when the VM ran and the JSON was written (backends that failed are marked
# in the table/JSON), otherwise the failing step's status.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
quick=0
runs=
out=
backends=
while (($#)); do
  case "$1" in
    --quick) quick=1; shift ;;
    --runs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "bench/tcmu/run.sh: --runs needs a positive integer" >&2; exit 2; }
            runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --backends) backends=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench/tcmu/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
out=${out:-$root/bench/out/tcmu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(realpath "$out")
t0=$(date +%s)

"$root/.ci/install-deps.sh" vm

# rustio: built unless given, staged where the guest can see it (stage-bin.sh).
. "$here/../stage-bin.sh"
bindir=/var/tmp/rustio-bench/tcmu-bin-$$
trap 'rm -rf "$bindir"' EXIT
vm_stage_bins tcmu "$bindir" --no-loadgen
for v in B C; do
  vb=RUSTIO_BIN_$v
  [[ -n "${!vb:-}" ]] || continue
  [[ -x "${!vb}" ]] || { echo "tcmu bench: no rustio binary at ${!vb} ($vb)" >&2; exit 1; }
  export "$vb=$(stage_bin "$bindir" "${!vb}" "rustio-${v,,}")"
done

hcache=/var/tmp/rustio-bench/tcmu-runner-file
vm_args=(--timeout "${VM_TIMEOUT:-1500}" --mem "${VM_MEM:-3G}" --out "$out/vm"
         --env "RUSTIO_BIN=$RUSTIO_BIN")
[[ -d "$bindir" ]] && vm_args+=(--share "$bindir")
if hdir=$("$here/build-tcmu-file.sh" "$hcache" 2>"$out/build-tcmu-file.err" | tail -n1) &&
   [[ -s "$hdir/handler_file.so" ]]; then
  vm_args+=(--share "$hdir" --env "RUSTIO_BENCH_HANDLER_DIR=$hdir")
else
  why=$(tail -n1 "$out/build-tcmu-file.err" 2>/dev/null || true)
  echo "tcmu bench: tcmu-runner file handler unavailable: $why" >&2
  vm_args+=(--env "RUSTIO_BENCH_HANDLER_MISSING=build failed: ${why:-unknown}")
fi
[[ -n "$backends" ]] && vm_args+=(--env "RUSTIO_BENCH_BACKENDS=$backends")
[[ -n "$runs" ]] && vm_args+=(--env "RUSTIO_BENCH_RUNS=$runs")

{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host_kernel=$(uname -r)"
  echo "host_cpus=$(nproc)"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "quick=$quick"
  echo "rustio_bin=$RUSTIO_BIN"
  echo "floor=${RUSTIO_BENCH_FLOOR:-0}"
  echo "profile=${RUSTIO_BENCH_PROFILE:-}"
} >"$out/host.env"

guest_args=()
((quick)) && guest_args+=(--quick)
vm_stage_run tcmu "$out" "$here/guest-bench.sh" "$here/report.py" tcmu.json '^\[ *[0-9.]+s\]|fio:|bench backends' . \
  -- "${vm_args[@]}" -- "${guest_args[@]}"
