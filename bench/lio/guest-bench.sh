#!/bin/bash
# Guest script of the LIO yardstick stage (issue 24 item 5; run by bench/lio/run.sh through
# tests/vm/run.sh --out DIR; results land in $RUSTIO_VM_OUT).
#
#   tests/vm/run.sh --mem 3G --out DIR bench/lio/guest-bench.sh [--quick]
#
# Two iSCSI targets on the guest's 127.0.0.1, both up for the whole run:
#   lio      the kernel's own iSCSI target (iscsi_target_mod), configured through configfs
#            by `rustio restore` from a saveconfig.json: LUN 0 ramdisk (rd_mcp), LUN 1
#            fileio on a tmpfs file (write-back), portal 127.0.0.1:3260
#   rustio   `rustio serve` with the same kind of saveconfig.json: LUN 0 ramdisk (RAM),
#            LUN 1 fileio on its own tmpfs file, portal 127.0.0.1:3261
# giving four LUNs of the same size (RUSTIO_BENCH_SIZE_MB, default 256, --quick 128):
# lio-ram, lio-file, rustio-ram, rustio-file. The files are pre-filled with random data
# (a 16 MiB random chunk repeated) before the targets start; the RAM LUNs are filled through
# iSCSI with `loadgen fill`. Every workload runs against every LUN with the same client,
# RUNS times (default 3, --quick 1), rounds interleaved (LUNs within a workload, then the
# next workload), RUNTIME s each (default 5, --quick 3):
#   randread-4k-qd32     loadgen  4 KiB random read, QD 32
#   seqread-128k-qd32    loadgen  128 KiB sequential read, QD 32
#   lat-randread-4k-qd1  loadgen  4 KiB random read, QD 1 (inline driver: p50/p99 latency)
#   randread-4k-qd32-ip  iscsi-perf 4 KiB random read, QD 32 (a second, lighter client)
#
# Output in $RUSTIO_VM_OUT/<lun>/: <workload>.<run>.json (loadgen JSON) or .txt
# (iscsi-perf output), <workload>.<run>.cpu ("busy_before busy_after total_before
# total_after" jiffies from the cpu line of /proc/stat: the whole guest, client included),
# <workload>.<run>.rc; $RUSTIO_VM_OUT/guest.env, rustio.log, lio.json / rustio.json (the
# configurations), meta (key=value: status, errors).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=/dev/null # tests/vm/guest-lib.sh
. "$ROOT/tests/vm/guest-lib.sh"
# shellcheck source=/dev/null # bench/proc.sh
. "$ROOT/bench/proc.sh"
# port_open only.
# shellcheck source=/dev/null # tests/lib/iscsi-checks.sh
. "$ROOT/tests/lib/iscsi-checks.sh"

QUICK=0
[[ ${1:-} == --quick ]] && QUICK=1
RUSTIO=${RUSTIO_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/rustio}
LOADGEN=${LOADGEN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/loadgen}
OUT=${RUSTIO_VM_OUT:-/tmp/bench-out}
mkdir -p "$OUT"
SIZE_MB=${RUSTIO_BENCH_SIZE_MB:-$((QUICK ? 128 : 256))}
SIZE=$((SIZE_MB << 20))
RUNTIME=${RUSTIO_BENCH_RUNTIME:-$((QUICK ? 3 : 5))}
RUNS=${RUSTIO_BENCH_RUNS:-$((QUICK ? 1 : 3))}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUSTIO_BENCH_RUNS must be a positive integer, not '$RUNS'"; exit 2; }
[[ $RUNTIME =~ ^[1-9][0-9]*$ ]] || { echo "RUSTIO_BENCH_RUNTIME must be a positive integer"; exit 2; }
LIO_PORT=3260
RUSTIO_PORT=3261
LIO_IQN=iqn.2003-01.org.rustio.bench:lio
RUSTIO_IQN=iqn.2003-01.org.rustio.bench:rustio
INITIATOR=iqn.2024-01.org.rustio:bench
LIO_FILE=/tmp/lio-file.img
RUSTIO_FILE=/tmp/rustio-file.img
# lun name|portal port|IQN|LUN number ('|': IQNs contain ':')
LUNS=("lio-ram|$LIO_PORT|$LIO_IQN|0" "lio-file|$LIO_PORT|$LIO_IQN|1"
      "rustio-ram|$RUSTIO_PORT|$RUSTIO_IQN|0" "rustio-file|$RUSTIO_PORT|$RUSTIO_IQN|1")
# name:client:rw:pattern:bs:qd
WORKLOADS=(randread-4k-qd32:loadgen:read:rand:4k:32 seqread-128k-qd32:loadgen:read:seq:128k:32
           lat-randread-4k-qd1:loadgen:read:rand:4k:1 randread-4k-qd32-ip:iscsi-perf:read:rand:4k:32)

{
  echo "kernel=$(uname -r)"
  echo "nproc=$(nproc)"
  echo "mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  echo "runs=$RUNS"
  echo "size_mb=$SIZE_MB"
  echo "runtime=$RUNTIME"
  echo "quick=$QUICK"
  echo "rustio=$("$RUSTIO" --version 2>/dev/null)"
  echo "rustio_bin=$RUSTIO"
  echo "loadgen_bin=$LOADGEN"
  echo "lio_version=$(cat "$LIO/version" 2>/dev/null | head -1)"
  echo "clk_tck=$(getconf CLK_TCK)"
} >"$OUT/guest.env"
: >"$OUT/meta"
meta() { echo "$1=$2" >>"$OUT/meta"; }
log() { vm_log "$*"; }

# saveconfig.json: one ramdisk (LUN 0) and one write-back fileio (LUN 1) behind one
# iSCSI target with a demo-mode TPG (no ACLs, writable) on 127.0.0.1:PORT.
config() { # IQN PORT FILE NAME_PREFIX
  cat <<EOF
{
 "storage_objects": [
  {"plugin": "ramdisk", "name": "$4ram", "size": $SIZE, "attributes": {"block_size": 512}},
  {"plugin": "fileio", "name": "$4file", "dev": "$3", "size": $SIZE, "write_back": true,
   "attributes": {"block_size": 512}}
 ],
 "targets": [
  {"wwn": "$1", "fabric": "iscsi", "tpgs": [
   {"tag": 1, "enable": true,
    "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0,
                   "cache_dynamic_acls": 1},
    "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/$4ram"},
             {"index": 1, "storage_object": "/backstores/fileio/$4file"}],
    "portals": [{"ip_address": "127.0.0.1", "port": $2}],
    "node_acls": []}
  ]}
 ]
}
EOF
}

RUSTIO_PID=
cleanup() {
  [[ -n $RUSTIO_PID ]] && { kill -TERM "$RUSTIO_PID" 2>/dev/null; wait "$RUSTIO_PID" 2>/dev/null; }
  "$RUSTIO" clear --confirm >/dev/null 2>&1 || vm_configfs_rm "$LIO/iscsi/$LIO_IQN"
  rm -f "$LIO_FILE" "$RUSTIO_FILE"
}

run_one() { # LUN WORKLOAD RUN
  local lun=$1 w=$2 run=$3 name port iqn n client rw pat bs qd dir tag c0 c1 rc=0 bl
  IFS='|' read -r name port iqn n <<<"$lun"
  IFS=: read -r wname client rw pat bs qd <<<"$w"
  dir=$OUT/$name
  mkdir -p "$dir"
  tag=$wname.$run
  c0=$(cpu_busy_total)
  if [[ $client == loadgen ]]; then
    timeout $((RUNTIME + 60)) "$LOADGEN" run --portal "127.0.0.1:$port" --target "$iqn" --lun "$n" \
      --initiator "$INITIATOR" --rw "$rw" --pattern "$pat" --bs "$bs" --qd "$qd" --time "$RUNTIME" \
      --seed $((1000 * run + 7)) >"$dir/$tag.json" 2>"$dir/$tag.err" || rc=$?
  else
    bl=$(( ${bs%k} * 1024 / 512 ))
    timeout $((RUNTIME + 60)) iscsi-perf -i "$INITIATOR" -t "$RUNTIME" -m "$qd" -b "$bl" \
      $([[ $pat == rand ]] && echo -r) "iscsi://127.0.0.1:$port/$iqn/$n" >"$dir/$tag.txt" 2>"$dir/$tag.err" || rc=$?
  fi
  c1=$(cpu_busy_total)
  echo "$c0 $c1" | awk '{print $1, $3, $2, $4}' >"$dir/$tag.cpu"
  echo "$rc" >"$dir/$tag.rc"
  if ((rc)); then
    log "$name $wname run $run: FAILED (exit $rc): $(tail -c 300 "$dir/$tag.err" | tr '\n' ' ')"
  elif [[ $client == loadgen ]]; then
    log "$name $wname run $run: $(grep -o '"iops":[0-9.]*' "$dir/$tag.json") $(grep -o '"p50":[0-9]*,"p99":[0-9]*' "$dir/$tag.json")"
  else
    log "$name $wname run $run: $(grep -o 'iops average [0-9]*' "$dir/$tag.txt" | tail -1)"
  fi
}

T0=$(date +%s)
[[ -x $RUSTIO && -x $LOADGEN ]] || { echo "missing $RUSTIO or $LOADGEN"; meta status error; exit 1; }
# Random bytes are slow to generate under TCG: one 16 MiB chunk, repeated (no block is a
# hole or all zeroes; that is all a read benchmark needs).
CHUNK_MB=$((SIZE_MB < 16 ? SIZE_MB : 16))
log "fill data: 2 files of $SIZE_MB MiB ($CHUNK_MB MiB random chunk repeated)"
head -c $((CHUNK_MB << 20)) /dev/urandom >/tmp/chunk.raw || { echo "cannot create chunk"; exit 1; }
for _ in $(seq $(((SIZE_MB + CHUNK_MB - 1) / CHUNK_MB))); do cat /tmp/chunk.raw; done | head -c "$SIZE" >"$LIO_FILE"
cp "$LIO_FILE" "$RUSTIO_FILE"
for f in "$LIO_FILE" "$RUSTIO_FILE"; do
  [[ $(stat -c %s "$f") == "$SIZE" ]] || { echo "cannot create $f"; exit 1; }
done
rm -f /tmp/chunk.raw

config "$LIO_IQN" "$LIO_PORT" "$LIO_FILE" lio >"$OUT/lio.json"
config "$RUSTIO_IQN" "$RUSTIO_PORT" "$RUSTIO_FILE" rio >"$OUT/rustio.json"
trap cleanup EXIT
if ! "$RUSTIO" restore --clear-existing "$OUT/lio.json" >"$OUT/restore.log" 2>&1; then
  cat "$OUT/restore.log"; meta status error; meta error "rustio restore of the LIO configuration failed"; exit 1
fi
log "LIO target configured: $(ls "$LIO/iscsi/$LIO_IQN/tpgt_1/lun" | tr '\n' ' ') portal $(ls "$LIO/iscsi/$LIO_IQN/tpgt_1/np")"
read -ra SERVE_ARGS <<<"${RUSTIO_SERVE_ARGS:-}"
"$RUSTIO" serve --config "$OUT/rustio.json" --log warn "${SERVE_ARGS[@]}" >"$OUT/rustio.log" 2>&1 &
RUSTIO_PID=$!
vm_wait 60 port_open "$RUSTIO_PORT" ||
  { tail -20 "$OUT/rustio.log"; meta status error; meta error "rustio serve did not listen"; exit 1; }
vm_wait 30 port_open "$LIO_PORT" ||
  { meta status error; meta error "LIO portal not listening"; exit 1; }
meta rustio_pid "$RUSTIO_PID"

for lun in "${LUNS[@]}"; do
  IFS='|' read -r name port iqn n <<<"$lun"
  mkdir -p "$OUT/$name"
  "$LOADGEN" probe --portal "127.0.0.1:$port" --target "$iqn" --lun "$n" --initiator "$INITIATOR" \
    >"$OUT/$name/probe.json" 2>"$OUT/$name/probe.err" ||
    { meta "status_$name" error; log "$name: probe failed: $(cat "$OUT/$name/probe.err")"; continue; }
  if [[ $name == *-ram ]]; then
    t=$(date +%s)
    timeout 600 "$LOADGEN" fill --portal "127.0.0.1:$port" --target "$iqn" --lun "$n" \
      --initiator "$INITIATOR" >"$OUT/$name/fill.json" 2>"$OUT/$name/fill.err" ||
      { meta "status_$name" error; log "$name: fill failed: $(cat "$OUT/$name/fill.err")"; continue; }
    log "$name: filled through iSCSI in $(($(date +%s) - t)) s"
  fi
  meta "status_$name" ok
done

for w in "${WORKLOADS[@]}"; do
  for ((run = 1; run <= RUNS; run++)); do
    for lun in "${LUNS[@]}"; do
      grep -q "^status_${lun%%|*}=ok" "$OUT/meta" || continue
      run_one "$lun" "$w" "$run"
      if ! kill -0 "$RUSTIO_PID" 2>/dev/null; then
        meta error "rustio serve died during ${w%%:*}"; RUSTIO_PID=; break 3
      fi
    done
  done
done
[[ -n $RUSTIO_PID ]] && meta rustio_vmhwm_kb "$(awk '/^VmHWM:/ {print $2}' "/proc/$RUSTIO_PID/status")"
meta status ok
dmesg | grep -iE "iscsi|target|rd_mcp|fileio" | tail -30 >"$OUT/dmesg-tail.txt"
log "done in $(($(date +%s) - T0)) s"
exit 0
