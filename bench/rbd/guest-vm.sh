#!/usr/bin/env bash
# Guest side of bench/rbd/vm.sh (runs inside tests/vm/run.sh). In one VM, on the guest's
# 127.0.0.1 (the guest has no network device):
#   * a throwaway single-node Ceph cluster (tests/ceph/guest-ceph.sh, memstore) and three
#     pre-filled images, one per contender;
#   * rbd-bench   `rbd bench` (librbd directly, --rbd_cache=false, 32 threads; `full-seq` for
#                 the sequential workloads: one stream, as the initiator's);
#   * rustio      `rustio serve` with the image as an RBD LUN, on port 3261;
#   * lio-tcmu    the kernel's iSCSI target (iscsi_target_mod) with a `user` backstore served
#                 by tcmu-runner's rbd handler (handler_rbd.so), on port 3260: the data path
#                 of a ceph-iscsi gateway;
#   and the same client (bench/loadgen, QD 32) against both iSCSI targets.
# Every round runs each workload on the three contenders, in an order rotated per round;
# `rbd bench` runs for rustio's IOPS in its latest job of that workload × the job length
# (the previous round's when `rbd bench` runs before rustio, i.e. in rounds 2 and 3 of every
# three; at least 1000 operations, and 1000 while rustio has no result for it).
# Output ($RUSTIO_VM_OUT): results.jsonl (one line per job: workload, contender, round,
# IOPS, I/Os, seconds, the contender process's CPU ticks, the guest's busy ticks), meta,
# the clients' and daemons' logs.
#
# Env: RUSTIO_BIN (rustio built with --features rbd), LOADGEN_BIN, RUSTIO_BENCH_RUNS
#      (rounds, default 3), RUSTIO_BENCH_RUNTIME (s per iSCSI job, default 10),
#      RUSTIO_BENCH_SIZE_MB (each image, default 256), RUSTIO_BENCH_WORKLOADS (default
#      seqwrite-128k,randwrite-4k,randread-4k,seqread-128k).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../../tests/vm/guest-lib.sh
. "$ROOT/tests/vm/guest-lib.sh"
# shellcheck source=../../tests/ceph/guest-ceph.sh
. "$ROOT/tests/ceph/guest-ceph.sh"
# start_server and port_open (they need only `log`, defined below).
# shellcheck source=../../tests/lib/iscsi-checks.sh
. "$ROOT/tests/lib/iscsi-checks.sh"
# shellcheck source=../proc.sh
. "$ROOT/bench/proc.sh"

[[ "${RUSTIO_VM:-}" == 1 ]] || { echo "guest-vm.sh must run inside the VM (tests/vm/run.sh)"; exit 2; }
RUSTIO=${RUSTIO_BIN:?RUSTIO_BIN must name a rustio built with --features rbd}
LOADGEN=${LOADGEN_BIN:?LOADGEN_BIN must name bench/loadgen}
OUT=${RUSTIO_VM_OUT:-/tmp/rbd-vm}
RUNS=${RUSTIO_BENCH_RUNS:-3}
T=${RUSTIO_BENCH_RUNTIME:-10}
SIZE_MB=${RUSTIO_BENCH_SIZE_MB:-256}
WORKLOADS=${RUSTIO_BENCH_WORKLOADS:-seqwrite-128k,randwrite-4k,randread-4k,seqread-128k}
export CEPH_DIR=/tmp/rbd-vm-ceph
CONF=$CEPH_DIR/ceph.conf
W=/tmp/rbd-vm
INITIATOR=iqn.2024-01.org.rustio:rbd-vm
IQN_R=iqn.2024-01.org.rustio.bench:rbd-vm
IQN_L=iqn.2003-01.org.linux-iscsi.bench:rbd-vm
PORT_R=3261
PORT_L=3260
HANDLER_RBD=/usr/lib/x86_64-linux-gnu/tcmu-runner/handler_rbd.so
USER_DEV=$LIO/core/user_9/rbdvm
mkdir -p "$OUT" "$W"
: >"$OUT/meta"
: >"$OUT/results.jsonl"
meta() { echo "$1=$2" >>"$OUT/meta"; }
log() { vm_log "$*"; }

RUSTIO_PID=
TCMU_PID=
cleanup() {
  if [[ -d $LIO/iscsi/$IQN_L ]]; then vm_configfs_rm "$LIO/iscsi/$IQN_L" || echo "LIO target $IQN_L not removed"; fi
  if [[ -d $USER_DEV ]]; then vm_configfs_rm "$USER_DEV" || echo "LIO user backstore $USER_DEV not removed"; fi
  local p
  for p in $RUSTIO_PID $TCMU_PID; do
    kill -TERM "$p" 2>/dev/null && { vm_wait 30 bash -c "! kill -0 $p 2>/dev/null" || kill -KILL "$p" 2>/dev/null; }
  done
  timeout 120 "$ROOT/tests/ceph/stop.sh" >"$OUT/ceph-stop.log" 2>&1
}
trap cleanup EXIT
fail() { meta status error; meta error "$1"; echo "rbd vm bench: $1"; exit 1; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || fail "RUSTIO_BENCH_RUNS=$RUNS is not a positive integer"
[[ $T =~ ^[1-9][0-9]*$ ]] || fail "RUSTIO_BENCH_RUNTIME=$T is not a positive integer"
[[ $SIZE_MB =~ ^[1-9][0-9]{0,5}$ ]] || fail "RUSTIO_BENCH_SIZE_MB=$SIZE_MB is not a size in MiB"
BYTES=$((SIZE_MB << 20))
# The workloads' parameters, checked before the cluster starts.
declare -A SPEC=([seqwrite-128k]="write seq 128k" [seqread-128k]="read seq 128k"
                 [randwrite-4k]="write rand 4k" [randread-4k]="read rand 4k")
for w in ${WORKLOADS//,/ }; do
  [[ -n ${SPEC[$w]:-} ]] || fail "unknown workload $w (known: ${!SPEC[*]})"
done
[[ -n ${WORKLOADS//[, ]/} ]] || fail "no workloads in RUSTIO_BENCH_WORKLOADS"
for t in rbd tcmu-runner "$RUSTIO" "$LOADGEN"; do
  command -v "$t" >/dev/null || fail "$t missing"
done
[[ -s $HANDLER_RBD ]] || fail "no $HANDLER_RBD"
{
  echo "kernel=$(uname -r)"
  echo "cpus=$(nproc)"
  echo "mem_mib=$(free -m | awk '/Mem:/{print $2}')"
  echo "runs=$RUNS"
  echo "runtime_s=$T"
  echo "size_mb=$SIZE_MB"
  echo "workloads=$WORKLOADS"
  echo "ceph=$(ceph --version 2>/dev/null | head -1)"
  echo "tcmu_runner=$(dpkg-query -W -f='${Version}' tcmu-runner 2>/dev/null)"
  echo "rustio=$("$RUSTIO" --version 2>/dev/null)"
} >>"$OUT/meta"

# --- the cluster and one image per contender ---
t0=$(date +%s)
guest_ceph_start "$W" "$OUT/ceph-start.log" rbd/bench "$SIZE_MB" || fail "cluster did not start"
for i in r l; do
  timeout 300 rbd --conf "$CONF" create --size "${SIZE_MB}M" "rbd/$i" || fail "rbd create rbd/$i"
done
# Pre-filled, so that reads hit data (a memstore OSD answers a hole without touching one).
for i in bench r l; do
  timeout 900 rbd --conf "$CONF" bench --io-type write --io-pattern seq --io-size 4M --io-threads 8 \
    --io-total "${SIZE_MB}M" "rbd/$i" >>"$OUT/prefill.log" 2>&1 || fail "pre-fill of rbd/$i"
done
log "cluster and images ready in $(($(date +%s) - t0)) s"

# --- rustio serve ---
cat >"$W/rustio.json" <<EOF
{"storage_objects": [{"plugin": "user", "name": "r", "size": $BYTES, "config": "rbd/rbd/r;conf=$CONF"}],
 "targets": [{"wwn": "$IQN_R", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
   "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
   "luns": [{"index": 0, "storage_object": "/backstores/user/r"}],
   "portals": [{"ip_address": "127.0.0.1", "port": $PORT_R}]}]}]}
EOF
start_server "$RUSTIO" "$W/rustio.json" "$PORT_R" "$OUT/rustio.log" 1200 ||
  { RUSTIO_PID=${SERVER:-}; fail "rustio serve did not listen"; }
RUSTIO_PID=$SERVER

# --- LIO's iSCSI target + tcmu-runner's rbd handler ---
vm_start_dbus || fail "D-Bus did not start"
mkdir -p "$W/handlers" && ln -sf "$HANDLER_RBD" "$W/handlers/handler_rbd.so"
tcmu-runner --handler-path "$W/handlers" --tcmu-log-dir "$OUT" >"$OUT/tcmu-runner.stdout" 2>&1 &
TCMU_PID=$!
vm_wait 60 dbus-send --system --print-reply --dest=org.freedesktop.DBus / \
  org.freedesktop.DBus.GetNameOwner string:org.kernel.TCMUService1 >/dev/null ||
  { tail -20 "$OUT/tcmu-runner.stdout"; fail "tcmu-runner did not register on D-Bus"; }
modprobe target_core_user && modprobe iscsi_target_mod || fail "LIO modules"
# hw_max_sectors: a user backstore's default (128 sectors, 64 KiB) would refuse 128 KiB
# commands; 2048 (1 MiB) as bench/tcmu's devices.
mkdir -p "$USER_DEV" &&
  echo -n "dev_config=rbd/rbd/l;conf=$CONF" >"$USER_DEV/control" &&
  echo -n "dev_size=$BYTES" >"$USER_DEV/control" &&
  echo -n "hw_max_sectors=2048" >"$USER_DEV/control" &&
  echo -n 1 >"$USER_DEV/enable" || { tail -20 "$OUT/tcmu-runner.log"; fail "user backstore refused"; }
TPG=$LIO/iscsi/$IQN_L/tpgt_1
mkdir -p "$TPG/lun/lun_0" && ln -s "$USER_DEV" "$TPG/lun/lun_0/rbdvm" &&
  mkdir "$TPG/np/127.0.0.1:$PORT_L" &&
  echo 0 >"$TPG/attrib/authentication" && echo 1 >"$TPG/attrib/generate_node_acls" &&
  echo 0 >"$TPG/attrib/demo_mode_write_protect" && echo 1 >"$TPG/attrib/cache_dynamic_acls" &&
  echo 1 >"$TPG/enable" || fail "LIO iSCSI target set-up"
vm_wait 60 port_open "$PORT_L" || fail "LIO portal not listening"
log "targets up: rustio serve on $PORT_R, LIO + tcmu-runner on $PORT_L ($(head -1 "$USER_DEV/info" 2>/dev/null))"

# --- jobs ---
now() { date +%s.%N; }
record() { # workload contender round iops ios secs proc_ticks busy_ticks
  printf '{"workload": "%s", "contender": "%s", "round": %d, "iops": %s, "ios": %s, "secs": %s, "proc_ticks": %s, "busy_ticks": %s}\n' \
    "$@" >>"$OUT/results.jsonl"
  log "round $3 $1 $2: ${4} IOPS (${5} I/Os)"
}
iscsi_job() { # workload contender round rw pattern bs
  local port=$PORT_R iqn=$IQN_R pid=$RUSTIO_PID f b0 p0 t0 b1 p1 t1 iops ios
  [[ $2 == lio-tcmu ]] && { port=$PORT_L; iqn=$IQN_L; pid=$TCMU_PID; }
  f=$OUT/$2.$1.$3
  read -r b0 _ < <(cpu_busy_total); p0=$(proc_ticks "$pid"); t0=$(now)
  timeout $((T + 120)) "$LOADGEN" run --portal "127.0.0.1:$port" --target "$iqn" --lun 0 \
    --initiator "$INITIATOR" --rw "$4" --pattern "$5" --bs "$6" --qd 32 --time "$T" \
    --seed $((1000 * $3 + 7)) >"$f.json" 2>"$f.err"
  t1=$(now); read -r b1 _ < <(cpu_busy_total); p1=$(proc_ticks "$pid")
  read -r iops ios < <(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
if all(isinstance(j.get(k), (int, float)) for k in ("iops", "ios")):
    print(j["iops"], j["ios"])' "$f.json" 2>/dev/null)
  record "$1" "$2" "$3" "${iops:-null}" "${ios:-null}" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" $((p1 - p0)) $((b1 - b0))
  [[ $2 == rustio && -n ${iops:-} ]] && RUSTIO_IOPS[$1]=$iops
}
rbd_job() { # workload round rw pattern bs
  local pat=$4 kib=${5%k} ops f b0 t0 b1 t1 iops ios
  [[ $pat == seq ]] && pat=full-seq
  # 1000 operations when rustio has no result for this workload yet.
  ops=$(python3 -c 'import sys; print(max(1000, int(float(sys.argv[1]) * int(sys.argv[2]))))' "${RUSTIO_IOPS[$1]:-0}" "$T")
  f=$OUT/rbd-bench.$1.$2.log
  read -r b0 _ < <(cpu_busy_total); t0=$(now)
  timeout $((T * 10 + 300)) rbd --conf "$CONF" --rbd_cache=false bench --io-type "$3" --io-pattern "$pat" \
    --io-size "${kib}K" --io-threads 32 --io-total "$((ops * kib))K" rbd/bench >"$f" 2>&1
  t1=$(now); read -r b1 _ < <(cpu_busy_total)
  read -r iops ios < <(rbd_bench_result <"$f")
  # `rbd bench` is its own client: its CPU is in the guest's busy ticks.
  record "$1" rbd-bench "$2" "${iops:-null}" "${ios:-null}" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" 0 $((b1 - b0))
}

declare -A RUSTIO_IOPS
for run in $(seq "$RUNS"); do
  for w in ${WORKLOADS//,/ }; do
    read -r rw pat bs <<<"${SPEC[$w]}"
    case $((run % 3)) in
      1) order=(rustio lio-tcmu rbd-bench) ;;
      2) order=(lio-tcmu rbd-bench rustio) ;;
      0) order=(rbd-bench rustio lio-tcmu) ;;
    esac
    for c in "${order[@]}"; do
      if [[ $c == rbd-bench ]]; then rbd_job "$w" "$run" "$rw" "$pat" "$bs"; else iscsi_job "$w" "$c" "$run" "$rw" "$pat" "$bs"; fi
    done
  done
done
meta hz "$(getconf CLK_TCK)"
meta status ok
exit 0
