#!/usr/bin/env bash
# RBD gateways side by side in one VM: `rustio serve` against the data path of a ceph-iscsi
# gateway (LIO's iSCSI target + tcmu-runner's rbd handler) and against `rbd bench`, all on
# one throwaway Ceph cluster inside the guest. See bench/README.md, "RBD gateways in one VM".
#
#   bench/rbd/vm.sh [--quick] [--runs N] [--out DIR]
#
# Boots ONE VM (tests/vm/run.sh, Debian's kernel under QEMU TCG, no NIC) running
# guest-vm.sh, then prints the table (vm-report.py) and writes DIR/rbd-vm.json (+ .txt).
#   --quick        one round of the 128 KiB sequential write only, 5 s jobs (not with --runs,
#                  RUSTIO_BENCH_RUNTIME or RUSTIO_BENCH_WORKLOADS)
#   --runs N       rounds (default 3); the table gives every round and the medians
#   --out DIR      output directory (default bench/out/rbd-vm-<timestamp>); the VM's
#                  control dir (console.log, dmesg.log, clients' and daemons' logs) is DIR/vm
# Env: RUSTIO_BIN (default: release build with --features rbd, CARGO_TARGET_DIR=
#      /work/target-bench), LOADGEN_BIN (default: release build of bench/loadgen there),
#      RUSTIO_BENCH_RUNTIME (s per iSCSI job, default 10), RUSTIO_BENCH_SIZE_MB (each of the
#      three images, default 256), RUSTIO_BENCH_WORKLOADS (default seqwrite-128k,
#      randwrite-4k,randread-4k,seqread-128k), VM_TIMEOUT (default 2400 s), VM_MEM
#      (default 6G: the memstore OSD keeps the images in RAM).
# Takes ≈ 10 min on the 2-core host (≈ 2 min of it the cluster's start under TCG).
# Exit status: 0 when the VM ran and the JSON was written, otherwise the failing step's.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
runs=
out=
quick=0
while (($#)); do
  case "$1" in
    --quick) quick=1; shift ;;
    --runs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "bench/rbd/vm.sh: --runs needs a positive integer" >&2; exit 2; }
            runs=$2; shift 2 ;;
    --out) [[ -n ${2:-} ]] || { echo "bench/rbd/vm.sh: --out needs a directory" >&2; exit 2; }
           out=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench/rbd/vm.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if ((quick)) && [[ -n $runs || -n ${RUSTIO_BENCH_RUNTIME:-} || -n ${RUSTIO_BENCH_WORKLOADS:-} ]]; then
  echo "bench/rbd/vm.sh: --quick sets the rounds, the job length and the workload; drop --runs, RUSTIO_BENCH_RUNTIME and RUSTIO_BENCH_WORKLOADS" >&2
  exit 2
fi
out=${out:-$root/bench/out/rbd-vm-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(realpath "$out")
t0=$(date +%s)

"$root/.ci/install-deps.sh" vm ceph
for t in tcmu-runner rbd ceph-mon qemu-system-x86_64; do
  command -v "$t" >/dev/null || { echo "bench/rbd/vm.sh: $t not installed (.ci/install-deps.sh vm ceph)" >&2; exit 1; }
done
[[ -s /usr/lib/x86_64-linux-gnu/tcmu-runner/handler_rbd.so ]] ||
  { echo "bench/rbd/vm.sh: tcmu-runner's handler_rbd.so is missing" >&2; exit 1; }

# Binaries: built unless given (rustio with librbd), staged where the guest can see them
# (stage-bin.sh).
. "$here/../stage-bin.sh"
bindir=/var/tmp/rustio-bench/rbd-vm-bin-$$
trap 'rm -rf "$bindir"' EXIT
vm_stage_bins "rbd vm" "$bindir" --features rbd
vm_args=(--timeout "${VM_TIMEOUT:-2400}" --mem "${VM_MEM:-6G}" --out "$out/vm"
         --env "RUSTIO_BIN=$RUSTIO_BIN" --env "LOADGEN_BIN=$LOADGEN_BIN")
[[ -d "$bindir" ]] && vm_args+=(--share "$bindir")
if ((quick)); then
  vm_args+=(--env RUSTIO_BENCH_RUNS=1 --env RUSTIO_BENCH_RUNTIME=5 --env RUSTIO_BENCH_WORKLOADS=seqwrite-128k)
else
  [[ -n "$runs" ]] && vm_args+=(--env "RUSTIO_BENCH_RUNS=$runs")
  for v in RUSTIO_BENCH_RUNTIME RUSTIO_BENCH_WORKLOADS; do
    [[ -n "${!v:-}" ]] && vm_args+=(--env "$v=${!v}")
  done
fi
[[ -n "${RUSTIO_BENCH_SIZE_MB:-}" ]] && vm_args+=(--env "RUSTIO_BENCH_SIZE_MB=$RUSTIO_BENCH_SIZE_MB")

{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host_kernel=$(uname -r)"
  echo "host_cpus=$(nproc)"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustio_bin=$RUSTIO_BIN"
  echo "loadgen_bin=$LOADGEN_BIN"
} >"$out/host.env"

vm_stage_run "rbd vm" "$out" "$here/guest-vm.sh" "$here/vm-report.py" rbd-vm.json '^\[ *[0-9.]+s\]' results.jsonl \
  -- "${vm_args[@]}" --
