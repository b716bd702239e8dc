#!/bin/bash
# Guest script of the TCMU benchmark stage (run by bench/tcmu/run.sh through
# tests/vm/run.sh --out DIR; results land in $RUSTIO_VM_OUT).
#
#   tests/vm/run.sh --mem 3G --out DIR [--share HANDLER_DIR] bench/tcmu/guest-bench.sh [--quick]
#
# For each backend in turn, one tcm_loop LUN of the same size (RUSTIO_BENCH_SIZE_MB, default
# 512) backed by a file pre-filled with random data (so reads never hit holes), and the same
# fio jobs on the resulting /dev/sdX (direct=1, ioengine=libaio, time_based):
#   randread-4k-qd32, randwrite-4k-qd32, seqread-1m-qd8   (10 s each; --quick: 3 s)
# each run RUSTIO_BENCH_RUNS times (default 3; --quick: 1), rounds interleaved
# (rr, rw, sr, rr, ...); the report takes the median run.
# Backends (RUSTIO_BENCH_BACKENDS, comma list; default: the first five, in this order;
# the others run only when named):
#   kernel-fileio      LIO fileio backstore on the tmpfs file (no userspace daemon)
#   rustio-file        rustio runner, user:file on the tmpfs file
#   tcmu-runner-file   tcmu-runner, its `file` handler (handler_file.so built by
#                      build-tcmu-file.sh, directory in RUSTIO_BENCH_HANDLER_DIR)
#   rustio-qcow        rustio runner, user:qcow on a qcow2 image (qemu-img convert of the
#                      same random data: fully allocated) on a loop-mounted ext4 file system
#   tcmu-runner-qcow   tcmu-runner, Debian's handler_qcow.so, same kind of image on ext4
#                      (tcmu-runner's qcow handler allocates clusters with fallocate
#                      ZERO_RANGE, which tmpfs lacks; it opens the image buffered)
#   rustio-null        rustio runner, user:ram/nullio (reads zeros, drops writes): the ring,
#                      the doorbell, the poller's waits and the SCSI engine with no store
#                      behind them; run only when named. The TCMU side's floor of rustio's
#                      CPU per I/O, next to the file floor below (no TCMU at all).
#   floor-file         RUSTIO_BENCH_FLOOR=1 (default off): no TCMU at all. The same fio jobs
#   floor-file-mt      run straight on the same tmpfs file (same size, same copy of the fill
#                      data) with ioengine=pvsync (one preadv/pwritev per I/O, as a TCMU file
#                      handler makes per command), iodepth 1, numjobs 1 (floor-file: rustio's
#                      inline poller) or nproc (floor-file-mt: rustio's pool, tcmu-runner's
#                      aio threads), gtod_reduce=1 (no per-I/O clock reads of fio's own).
#                      The CPU of fio (utime/stime of the waited-for fio processes, cutime
#                      and cstime of this shell) over the job ÷ I/Os is the floor: the work
#                      any TCMU file handler pays per command before the ring. Run after
#                      tcmu-runner-file unless RUSTIO_BENCH_BACKENDS names them.
#                      <job>.ticks: "utime0 stime0 utime1 stime1" (children ticks); with
#                      RUSTIO_BENCH_PROFILE=strace one more round under `strace -c -f`.
#                      With RUSTIO_BENCH_FLOOR=1 every clean job of a daemon on the tmpfs
#                      file (rustio-file, tcmu-runner-file, rustio-[bc]-file) is also
#                      followed by the same floor job (numjobs 1) on the file it serves:
#                      <backend>/floor/<job>.* — a floor measured next to each daemon run.
# RUSTIO_BENCH_RUNNER_ARGS: extra `rustio runner` options (e.g. "--threads 2").
# More rustio binaries or option sets in the same boot: backends rustio-b-file and
# rustio-b-qcow run RUSTIO_BIN_B (default: the same binary) with RUSTIO_BENCH_RUNNER_ARGS_B,
# rustio-c-file and rustio-c-qcow RUSTIO_BIN_C with RUSTIO_BENCH_RUNNER_ARGS_C.
# RUSTIO_BENCH_QCOW_OPTS (and _B, _C for the variants): appended to the rustio qcow
# backends' handler config, e.g. ";cache=none" (guest data O_DIRECT; tcmu-runner's qcow
# handler has no such mode: it is always buffered).
# RUSTIO_BENCH_PROFILE: comma list of profilers, one extra round each after the clean
# runs, for the daemon backends in RUSTIO_BENCH_PROFILE_BACKENDS (comma list; default all):
# strace (strace -c -f of the daemon: <tag>.strace, system calls per I/O in the report) or
# perf (perf record -a -g, system-wide: <tag>.perf-comm.txt by thread name, <tag>.perf.txt
# by thread, object and function, <tag>.perf-callers.txt). report.py keeps profiled
# rounds out of the medians (the profiler's own cost is in their figures).
# RUSTIO_BENCH_CALLGRIND=1: every daemon runs under `valgrind --tool=callgrind` with
# instrumentation off, switched on for each fio job only (callgrind_control -i on/off) and
# dumped after it: <tag>.callgrind.out (the dump) and <tag>.callgrind (callgrind_annotate:
# the daemon's user-space instructions in that job, by function; the kernel's side is not
# in them). Every round of such a run is a profiled round (its IOPS and CPU are
# valgrind's): use it for instructions per I/O only, with RUSTIO_BENCH_RUNS=1 and the
# backends to compare (a daemon may take up to 600 s to start under valgrind: give run.sh
# a VM_TIMEOUT to match).
# Per-thread CPU ticks and context switches of the daemon before/after every job:
# <tag>.threads0 / <tag>.threads1 ("tid comm utime stime voluntary nonvoluntary").
# Both userspace daemons get the same device attributes (hw_max_sectors=2048,
# max_data_area_mb=64) and write-back caching (tcmu-runner's file handler forces WCE on;
# rustio's default is --write-cache on). The disk's I/O scheduler is set to none.
#
# Output in $RUSTIO_VM_OUT/<backend>/: <workload>.<run>.json (fio JSON), <workload>.<run>.cpu
# ("daemon_ticks_before daemon_ticks_after clk_tck busy_before busy_after total_before
# total_after", busy/total from the cpu line of /proc/stat), meta (key=value: status, error,
# vmhwm_kb, pid, dev ...), daemon log. $RUSTIO_VM_OUT/guest.env describes the guest.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=/dev/null # tests/vm/guest-lib.sh
. "$ROOT/tests/vm/guest-lib.sh"
# shellcheck source=/dev/null # bench/proc.sh
. "$ROOT/bench/proc.sh"

QUICK=0
[[ ${1:-} == --quick ]] && QUICK=1
RUSTIO=${RUSTIO_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/rustio}
OUT=${RUSTIO_VM_OUT:-/tmp/bench-out}
mkdir -p "$OUT"
CORE=$LIO/core
SIZE_MB=${RUSTIO_BENCH_SIZE_MB:-512}
SIZE=$((SIZE_MB << 20))
RUNTIME=${RUSTIO_BENCH_RUNTIME:-$((QUICK ? 3 : 10))}
# No ramp: the daemon CPU ticks must cover exactly the I/Os fio counts.
RAMP=${RUSTIO_BENCH_RAMP:-0}
RUNS=${RUSTIO_BENCH_RUNS:-$((QUICK ? 1 : 3))}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUSTIO_BENCH_RUNS must be a positive integer, not '$RUNS'"; exit 2; }
BACKENDS=${RUSTIO_BENCH_BACKENDS:-kernel-fileio,rustio-file,tcmu-runner-file,rustio-qcow,tcmu-runner-qcow}
FLOOR=${RUSTIO_BENCH_FLOOR:-0}
if [[ $FLOOR == 1 && ,$BACKENDS, != *,floor-file,* && ,$BACKENDS, != *,floor-file-mt,* ]]; then
  if [[ ,$BACKENDS, == *,tcmu-runner-file,* ]]; then
    BACKENDS=${BACKENDS/tcmu-runner-file/tcmu-runner-file,floor-file,floor-file-mt}
  else
    BACKENDS=$BACKENDS,floor-file,floor-file-mt
  fi
fi
HANDLER_DIR=${RUSTIO_BENCH_HANDLER_DIR:-}
DEBIAN_HANDLERS=/usr/lib/x86_64-linux-gnu/tcmu-runner
WWN=naa.5001405000000b01
NEXUS=naa.5001405000000b02
FILL=/tmp/fill.raw
RAWIMG=/tmp/bench-file.img
QMNT=/tmp/qmnt
QIMG=$QMNT/bench.qcow2
# RUSTIO_BENCH_FILE_ON_EXT4=1: the file backends' file lives on the same kind of
# loop-mounted ext4 as the qcow2 image (default: the guest's tmpfs), so that a file row and
# a qcow row differ only in the handler.
FILE_ON_EXT4=${RUSTIO_BENCH_FILE_ON_EXT4:-0}
[[ $FILE_ON_EXT4 == 1 ]] && RAWIMG=$QMNT/bench-file.img
# name:rw:bs:iodepth
WORKLOADS=(randread-4k-qd32:randread:4k:32 randwrite-4k-qd32:randwrite:4k:32 seqread-1m-qd8:read:1m:8)

{
  echo "kernel=$(uname -r)"
  echo "nproc=$(nproc)"
  echo "mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
  echo "runs=$RUNS"
  echo "size_mb=$SIZE_MB"
  echo "runtime=$RUNTIME"
  echo "ramp=$RAMP"
  echo "quick=$QUICK"
  echo "fio=$(fio --version 2>/dev/null)"
  echo "tcmu_runner=$(dpkg-query -W -f='${Version}' tcmu-runner 2>/dev/null)"
  echo "qemu_img=$(qemu-img --version 2>/dev/null | head -1)"
  echo "rustio=$("$RUSTIO" --version 2>/dev/null)"
  echo "handler_dir=$HANDLER_DIR"
  echo "runner_args=${RUSTIO_BENCH_RUNNER_ARGS:-}"
  echo "qcow_opts=${RUSTIO_BENCH_QCOW_OPTS:-} b=${RUSTIO_BENCH_QCOW_OPTS_B:-} c=${RUSTIO_BENCH_QCOW_OPTS_C:-}"
  echo "clk_tck=$(getconf CLK_TCK)"
  echo "floor=$FLOOR"
  echo "backends=$BACKENDS"
  echo "file_on_ext4=$FILE_ON_EXT4"
} >"$OUT/guest.env"
CLK_TCK=$(getconf CLK_TCK)

log() { vm_log "$*"; }

# ---------------------------------------------------------------- helpers
# proc_ticks and cpu_busy_total: bench/proc.sh.
child_ticks() { # -> "cutime cstime" of this shell: CPU of the children it waited for
  local s
  read -r s <"/proc/$$/stat"
  s=${s##*) }
  # shellcheck disable=SC2086 # word splitting of the stat fields is the point
  set -- $s
  echo "${14} ${15}"
}
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
# Resident pages of the store files the daemon maps (rustio's mapped reads: the tmpfs file
# or the qcow2 image on ext4): their page cache, not the daemon's own memory, so the peak
# RSS column leaves them out. Sums the Rss of every mapping of $RAWIMG or $QIMG in smaps.
store_rss_kb() {
  awk -v a="$RAWIMG" -v b="$QIMG" '
    /^[0-9a-f]+-[0-9a-f]+ / { on = ($NF == a || $NF == b) }
    on && /^Rss:/ { kb += $2 }
    END { print kb + 0 }' "/proc/$1/smaps" 2>/dev/null
}

loop_disk() { vm_find_disk '/tcm_loop_'; }
# shellcheck disable=SC2317 # called through vm_wait
no_loop_disk() { ! vm_find_disk '/tcm_loop_' >/dev/null; }

export_loop() { # BACKSTORE_DIR
  local t=$LIO/loopback/$WWN/tpgt_1
  mkdir -p "$t" || return 1
  # tcm_loop: the nexus must exist before a LUN is linked, or no disk appears.
  echo -n "$NEXUS" >"$t/nexus" || return 1
  mkdir -p "$t/lun/lun_0" || return 1
  ln -s "$1" "$t/lun/lun_0/${1##*/}" || return 1
  vm_wait 90 loop_disk
}

create_user_dev() { # HBA NAME DEV_CONFIG
  local d=$CORE/user_$1/$2
  mkdir -p "$d" || return 1
  echo -n "dev_config=$3" >"$d/control" || return 1
  echo -n "dev_size=$SIZE" >"$d/control" || return 1
  echo -n "hw_max_sectors=2048" >"$d/control" || return 1
  echo -n "max_data_area_mb=64" >"$d/control" 2>/dev/null || echo "note: max_data_area_mb not settable"
  echo -n 1 >"$d/enable"
}

create_fileio_dev() { # HBA NAME
  local d=$CORE/fileio_$1/$2
  mkdir -p "$d" || return 1
  echo -n "fd_dev_name=$RAWIMG,fd_dev_size=$SIZE" >"$d/control" || return 1
  echo -n 1 >"$d/enable"
}

DAEMON_PID=
CALLGRIND=${RUSTIO_BENCH_CALLGRIND:-0}
WAIT_START=60
WRAP=()
daemon_wrap() { # DAEMON_OUT_DIR: WRAP = the command prefix every daemon starts under
  WRAP=()
  [[ $CALLGRIND == 1 ]] || return 0
  command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
    { echo "RUSTIO_BENCH_CALLGRIND=1 needs valgrind and callgrind_control"; return 1; }
  # --instr-atstart=no: start-up runs uninstrumented (minutes faster under TCG).
  WRAP=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$1/callgrind.out")
  WAIT_START=600
}
start_rustio() { # LOG [BIN ARGS]: BIN/ARGS default to $RUSTIO / $RUSTIO_BENCH_RUNNER_ARGS
  local bin=${2:-$RUSTIO} args=${3-${RUSTIO_BENCH_RUNNER_ARGS:-}}
  # shellcheck disable=SC2086 # the runner arguments: extra options, split on spaces
  daemon_wrap "$(dirname "$1")" || return 1
  (cd /var/tmp && exec "${WRAP[@]}" "$bin" --log info runner --no-dbus $args) >>"$1" 2>&1 &
  DAEMON_PID=$!
  vm_wait "$WAIT_START" grep -q "listening for TCMU netlink events" "$1" || { tail -20 "$1"; return 1; }
  vm_wait 30 grep -q "existing devices opened" "$1" || true
}
start_tcmu_runner() { # LOG HANDLER_DIR
  vm_start_dbus || { echo "dbus failed"; return 1; }
  daemon_wrap "$(dirname "$1")" || return 1
  "${WRAP[@]}" tcmu-runner --handler-path "$2" --tcmu-log-dir /var/log >>"$1" 2>&1 &
  DAEMON_PID=$!
  vm_wait "$WAIT_START" dbus-send --system --print-reply --dest=org.freedesktop.DBus / \
    org.freedesktop.DBus.GetNameOwner string:org.kernel.TCMUService1 || {
    kill -0 "$DAEMON_PID" 2>/dev/null || { echo "tcmu-runner exited"; tail -20 "$1"; return 1; }
  }
}
stop_daemon() {
  [[ -n $DAEMON_PID ]] || return 0
  kill -TERM "$DAEMON_PID" 2>/dev/null
  vm_wait 30 bash -c "! kill -0 $DAEMON_PID 2>/dev/null" || kill -KILL "$DAEMON_PID" 2>/dev/null
  wait "$DAEMON_PID" 2>/dev/null
  DAEMON_PID=
}

teardown() {
  vm_configfs_rm "$LIO/loopback/$WWN" 2>/dev/null || echo "tcm_loop target not removed"
  vm_wait 60 no_loop_disk || echo "tcm_loop disk still present"
  local d
  for d in "$CORE"/user_*/* "$CORE"/fileio_*/*; do
    [[ -d $d && -e $d/enable ]] && { vm_configfs_rm "$d" || echo "backstore $d not removed"; }
  done
  stop_daemon
  rm -f "$RAWIMG" "$QIMG"
  drop_qcow_fs
}

# The qcow2 image's ext4 (and, with RUSTIO_BENCH_FILE_ON_EXT4=1, the file backends') lives
# in a loop file on the guest's tmpfs, whose blocks stay allocated after the image is
# deleted (a file backend after a qcow one found no room for its copy of the fill data):
# each backend that needs one mounts a fresh one, and drops it when done.
drop_qcow_fs() {
  if mountpoint -q "$QMNT"; then umount "$QMNT" || echo "umount $QMNT failed"; fi
  rm -f /tmp/qcow-ext4.img
}

mount_qcow_fs() { # a fresh ext4 for the qcow2 image, in a loop file on the guest's tmpfs
  drop_qcow_fs # one a failed backend left behind (its early returns skip teardown)
  mkdir -p "$QMNT"
  truncate -s $(((SIZE_MB + SIZE_MB / 4 + 64) << 20)) /tmp/qcow-ext4.img &&
    mkfs.ext4 -q -F /tmp/qcow-ext4.img && mount -o loop /tmp/qcow-ext4.img "$QMNT"
}

thread_stats() { # PID -> per thread: "tid comm utime stime voluntary nonvoluntary" (ticks, switches)
  local t s v n
  for t in /proc/"$1"/task/*; do
    s=$(cat "$t/stat" 2>/dev/null) || continue
    v=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status" 2>/dev/null)
    n=$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status" 2>/dev/null)
    local comm=${s#*(}; comm=${comm%%)*}; s=${s##*) }
    # shellcheck disable=SC2086 # word splitting of the stat fields is the point
    set -- $s
    echo "${t##*/} ${comm// /_} ${12} ${13} ${v:-0} ${n:-0}"
  done
}

PROF_PID=
PROF_TOOL=
prof_start() { # BACKEND_OUT TAG: per-thread stats, and the profiler of this run (see the header)
  [[ -n $DAEMON_PID ]] || return 0
  thread_stats "$DAEMON_PID" >"$1/$2.threads0"
  local run=${2##*.} tools
  IFS=, read -r -a tools <<<"${RUSTIO_BENCH_PROFILE:-}"
  PROF_TOOL=
  [[ $run =~ ^[0-9]+$ ]] && ((run > RUNS)) && PROF_TOOL=${tools[run - RUNS - 1]:-}
  case $PROF_TOOL in
    strace) strace -c -f -q -p "$DAEMON_PID" -o "$1/$2.strace" & PROF_PID=$! ;;
    # System-wide (-a) and with a workload (a `sleep` that prof_stop ends): perf record
    # attached to a pid, or system-wide without a workload, gets a handful of samples in
    # the TCG guest; this form gets them all, and shows the kernel's side of every thread
    # on the I/O path (fio's submission, the UIO interrupt, softirqs), not only the
    # daemon's.
    perf) perf record -e cpu-clock -a -g -F 500 -o "/tmp/$2.perf.data" -- sleep $((RUNTIME + RAMP + 120)) >"$1/$2.perf.err" 2>&1 & PROF_PID=$! ;;
  esac
  if [[ $PROF_TOOL == perf ]]; then
    # perf enables its events when the workload execs, after it has read every
    # process's maps (seconds under TCG): wait for that, or the job goes unsampled.
    local waited=0
    until pgrep -x -P "$PROF_PID" sleep >/dev/null || ((waited >= 120)); do
      kill -0 "$PROF_PID" 2>/dev/null || break # perf failed: perf.err says why
      sleep 0.5; waited=$((waited + 1))
    done
  fi
  [[ -n $PROF_PID ]] && sleep 1
  [[ $CALLGRIND == 1 ]] && callgrind_control -i on "$DAEMON_PID" >>"$1/$2.callgrind.err" 2>&1
  return 0
}
prof_stop() { # BACKEND_OUT TAG
  [[ -n $DAEMON_PID ]] || return 0
  thread_stats "$DAEMON_PID" >"$1/$2.threads1"
  if [[ $CALLGRIND == 1 ]]; then
    # The dump holds the counts since the previous one, i.e. of this job (instrumented
    # from prof_start on); callgrind numbers dumps callgrind.out.1, .2, ... and every
    # earlier one was moved to its job's name, so the one left is this job's.
    local dump
    callgrind_control -i off "$DAEMON_PID" >>"$1/$2.callgrind.err" 2>&1
    callgrind_control -d "$2" "$DAEMON_PID" >>"$1/$2.callgrind.err" 2>&1
    dump=$(compgen -G "$1/callgrind.out.[0-9]*" | head -1)
    if [[ -n $dump ]]; then
      mv "$dump" "$1/$2.callgrind.out"
      callgrind_annotate --inclusive=no --threshold=100 "$1/$2.callgrind.out" 2>>"$1/$2.callgrind.err" |
        head -80 >"$1/$2.callgrind"
    else
      echo "no callgrind dump" >>"$1/$2.callgrind.err"
    fi
  fi
  [[ -n $PROF_PID ]] || return 0
  if [[ $PROF_TOOL == perf ]]; then
    # perf's workload: perf then writes and exits (a perf still setting up gets SIGINT)
    pkill -x -P "$PROF_PID" sleep 2>/dev/null || kill -INT "$PROF_PID" 2>/dev/null
  else
    kill -INT "$PROF_PID" 2>/dev/null
  fi
  wait "$PROF_PID" 2>/dev/null
  PROF_PID=
  if [[ $PROF_TOOL == perf && -s /tmp/$2.perf.data ]]; then
    perf report -i "/tmp/$2.perf.data" --stdio --no-children -g none --sort comm 2>>"$1/$2.perf.err" | head -60 >"$1/$2.perf-comm.txt"
    perf report -i "/tmp/$2.perf.data" --stdio --no-children -g none --sort comm,dso,sym 2>>"$1/$2.perf.err" | head -250 >"$1/$2.perf.txt"
    perf report -i "/tmp/$2.perf.data" --stdio --no-children --sort sym -g caller,0.5,callee --percent-limit 2 2>>"$1/$2.perf.err" | head -400 >"$1/$2.perf-callers.txt"
    rm -f "/tmp/$2.perf.data"
  fi
}

FLOOR_JOBS=0 # > 0: floor backend (see the header): fio pvsync with this many jobs on the file
run_fio() { # BACKEND_OUT NAME RW BS QD DEV
  local bo=$1 name=$2 rw=$3 bs=$4 qd=$5 dev=$6 t0 t1 c0 c1 k0 k1 rc=0 ramp=() io pre=()
  ((RAMP > 0)) && ramp=(--ramp_time="$RAMP")
  io=(--ioengine=libaio --direct=1 --iodepth="$qd" --numjobs=1)
  if ((FLOOR_JOBS > 0)); then
    io=(--ioengine=pvsync --direct=0 --iodepth=1 --numjobs="$FLOOR_JOBS" --size="$SIZE" --gtod_reduce=1)
    local run=${name##*.} tools
    IFS=, read -r -a tools <<<"${RUSTIO_BENCH_PROFILE:-}"
    if [[ $run =~ ^[0-9]+$ ]] && ((run > RUNS)); then
      # Only strace profiles fio; a round for another profiler is marked profiled all the
      # same (report.py keeps it out of the medians) and runs unprofiled.
      if [[ ${tools[run - RUNS - 1]:-} == strace ]]; then pre=(strace -c -f -q -o "$bo/$name.strace")
      else echo "floor: ${tools[run - RUNS - 1]:-} not run on fio" >"$bo/$name.perf.err"; fi
    fi
  fi
  t0=0; t1=0
  prof_start "$bo" "$name"
  [[ -n $DAEMON_PID ]] && t0=$(proc_ticks "$DAEMON_PID")
  c0=$(cpu_busy_total)
  k0=$(child_ticks)
  (cd /tmp && timeout $((RUNTIME + RAMP + 120)) "${pre[@]}" fio --name="$name" --filename="$dev" \
    "${io[@]}" --rw="$rw" --bs="$bs" \
    --time_based --runtime="$RUNTIME" "${ramp[@]}" --norandommap --randrepeat=0 \
    --group_reporting --output-format=json --output="$bo/$name.json") >"$bo/$name.fio.err" 2>&1 || rc=$?
  k1=$(child_ticks)
  c1=$(cpu_busy_total)
  [[ -n $DAEMON_PID ]] && t1=$(proc_ticks "$DAEMON_PID")
  prof_stop "$bo" "$name"
  if ((FLOOR_JOBS > 0)); then
    # fio is the "daemon" of the floor: its own CPU (all job processes) over the job.
    echo "$k0 $k1" >"$bo/$name.ticks"
    local u s
    read -r u s <<<"$k0"; t0=$((u + s))
    read -r u s <<<"$k1"; t1=$((u + s))
  fi
  echo "$t0 $t1 $CLK_TCK $c0 $c1" | awk '{print $1, $2, $3, $4, $6, $5, $7}' >"$bo/$name.cpu"
  echo "$rc" >"$bo/$name.rc"
  [[ -s $bo/$name.fio.err ]] && sed 's/^/    fio: /' "$bo/$name.fio.err" | head -5
  return "$rc"
}

# ---------------------------------------------------------------- one backend
bench_backend() { # NAME
  local b=$1 bo=$OUT/$1 dev d hd cfg
  mkdir -p "$bo"
  : >"$bo/meta"
  meta() { echo "$1=$2" >>"$bo/meta"; }
  log "=== $b"
  local t0; t0=$(date +%s)
  case $b in
    *-qcow)
      mount_qcow_fs || { echo "no ext4 mount"; meta status unavailable; meta error "ext4 loop mount failed"; return 1; }
      qemu-img convert -f raw -O qcow2 "$FILL" "$QIMG" || { meta status error; meta error "qemu-img convert failed"; return 1; }
      meta image "$(qemu-img info "$QIMG" 2>/dev/null | grep -E 'disk size|cluster_size' | tr '\n' ' ')"
      ;;
    *-null) ;;
    *)
      if [[ $FILE_ON_EXT4 == 1 ]]; then
        mount_qcow_fs || { meta status unavailable; meta error "ext4 loop mount failed"; return 1; }
      fi
      cp "$FILL" "$RAWIMG" || { meta status error; meta error "copy of fill data failed"; return 1; }
      ;;
  esac
  case $b in
    floor-file|floor-file-mt)
      FLOOR_JOBS=1
      [[ $b == floor-file-mt ]] && FLOOR_JOBS=$(nproc)
      meta jobs "$FLOOR_JOBS"
      ;;
    kernel-fileio)
      create_fileio_dev 9 bench || { meta status error; meta error "fileio backstore refused"; teardown; return 1; }
      d=$CORE/fileio_9/bench ;;
    rustio-file|rustio-qcow|rustio-null|rustio-[bc]-file|rustio-[bc]-qcow)
      local qopts=${RUSTIO_BENCH_QCOW_OPTS:-}
      if [[ $b == rustio-[bc]-* ]]; then
        local v=${b#rustio-}; v=${v%%-*}; v=${v^^}
        local vbin=RUSTIO_BIN_$v vargs=RUSTIO_BENCH_RUNNER_ARGS_$v vqopts=RUSTIO_BENCH_QCOW_OPTS_$v
        qopts=${!vqopts:-}
        meta variant "${!vbin:-$RUSTIO} ${!vargs:-}${qopts:+ qcow$qopts}"
        start_rustio "$bo/daemon.log" "${!vbin:-$RUSTIO}" "${!vargs:-}" ||
          { meta status error; meta error "rustio runner (variant $v) did not start"; teardown; return 1; }
      else
        start_rustio "$bo/daemon.log" || { meta status error; meta error "rustio runner did not start"; teardown; return 1; }
      fi
      case $b in
        *-file) cfg="file/$RAWIMG" ;;
        *-null) cfg="ram/nullio" ;;
        *) cfg="qcow/$QIMG$qopts" ;;
      esac
      create_user_dev 7 bench "$cfg" || { meta status error; meta error "user backstore $cfg refused"; tail -5 "$bo/daemon.log"; teardown; return 1; }
      d=$CORE/user_7/bench ;;
    tcmu-runner-file|tcmu-runner-qcow)
      hd=/tmp/tcmu-handlers-$b
      rm -rf "$hd"; mkdir -p "$hd"
      if [[ $b == tcmu-runner-file ]]; then
        if [[ -z $HANDLER_DIR || ! -s $HANDLER_DIR/handler_file.so ]]; then
          meta status unavailable
          meta error "${RUSTIO_BENCH_HANDLER_MISSING:-handler_file.so not built}"
          rm -f "$RAWIMG"; return 1
        fi
        ln -s "$HANDLER_DIR/handler_file.so" "$hd/handler_file.so"
        cfg="file/$RAWIMG"
      else
        [[ -s $DEBIAN_HANDLERS/handler_qcow.so ]] || { meta status unavailable; meta error "no $DEBIAN_HANDLERS/handler_qcow.so"; return 1; }
        ln -s "$DEBIAN_HANDLERS/handler_qcow.so" "$hd/handler_qcow.so"
        cfg="qcow/$QIMG"
      fi
      start_tcmu_runner "$bo/daemon.log" "$hd" || { meta status error; meta error "tcmu-runner did not start"; teardown; return 1; }
      create_user_dev 8 bench "$cfg" || { meta status error; meta error "user backstore $cfg refused"; tail -5 "$bo/daemon.log"; teardown; return 1; }
      d=$CORE/user_8/bench ;;
    *) meta status error; meta error "unknown backend"; return 1 ;;
  esac
  if ((FLOOR_JOBS > 0)); then
    dev=$RAWIMG
    meta dev "$dev"
  else
    export_loop "$d" || { meta status error; meta error "no tcm_loop disk"; teardown; return 1; }
    dev=$(loop_disk)
    [[ $(blockdev --getsize64 "$dev") == "$SIZE" ]] || { meta status error; meta error "disk size mismatch"; teardown; return 1; }
    echo none >"/sys/block/${dev#/dev/}/queue/scheduler" 2>/dev/null
    meta dev "$dev"
    meta max_sectors_kb "$(cat "/sys/block/${dev#/dev/}/queue/max_sectors_kb")"
    meta cache_type "$(cat /sys/block/"${dev#/dev/}"/device/scsi_disk/*/cache_type 2>/dev/null)"
  fi
  [[ -n $DAEMON_PID ]] && meta pid "$DAEMON_PID"
  meta setup_s $(($(date +%s) - t0))
  log "$b: $dev ready ($(($(date +%s) - t0)) s setup)"
  local w name rw bs qd run tag failed=0 nprof=0 tools only=${RUSTIO_BENCH_PROFILE_BACKENDS:-}
  # Profiled rounds come after the clean ones (see the header).
  IFS=, read -r -a tools <<<"${RUSTIO_BENCH_PROFILE:-}"
  [[ ( -n $DAEMON_PID || FLOOR_JOBS -gt 0 ) && ( -z $only || ,$only, == *",$b,"* ) ]] && nprof=${#tools[@]}
  for ((run = 1; run <= RUNS + nprof; run++)); do
    for w in "${WORKLOADS[@]}"; do
      IFS=: read -r name rw bs qd <<<"$w"
      tag=$name.$run
      if run_fio "$bo" "$tag" "$rw" "$bs" "$qd" "$dev"; then
        log "$b $name run $run/$RUNS: $(awk '/"iops"/ {gsub(/[",]/, ""); if ($3 > 0) {print "iops", $3; exit}}' "$bo/$tag.json" 2>/dev/null)"
      else
        failed=1
        log "$b $name run $run/$RUNS: fio failed (exit $(cat "$bo/$tag.rc"))"
      fi
      if [[ -n $DAEMON_PID ]] && ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        meta error "daemon died during $name"; failed=1; break 2
      fi
      # The paired floor job (see the header): right after the daemon's, same workload,
      # on the file the daemon serves (idle meanwhile), so both see the same host load.
      if [[ $FLOOR == 1 && -n $DAEMON_PID && $b == *-file ]] && ((run <= RUNS)); then
        local dpid=$DAEMON_PID
        mkdir -p "$bo/floor"
        DAEMON_PID=; FLOOR_JOBS=1
        run_fio "$bo/floor" "$tag" "$rw" "$bs" "$qd" "$RAWIMG" ||
          log "$b $name run $run: paired floor job failed (exit $(cat "$bo/floor/$tag.rc"))"
        DAEMON_PID=$dpid; FLOOR_JOBS=0
      fi
    done
  done
  [[ -n $DAEMON_PID ]] && meta vmhwm_kb "$(hwm_kb "$DAEMON_PID")" && meta rss_store_kb "$(store_rss_kb "$DAEMON_PID")"
  if ((failed)); then meta status partial; else meta status ok; fi
  dmesg | grep -E "I/O error|critical|tcmu|TCMU" | tail -20 >"$bo/dmesg-tail.txt"
  if ((FLOOR_JOBS > 0)); then FLOOR_JOBS=0; rm -f "$RAWIMG"; drop_qcow_fs; return 0; fi
  teardown
  if [[ $b == tcmu-runner-* && -f /var/log/tcmu-runner.log ]]; then
    cp /var/log/tcmu-runner.log "$bo/tcmu-runner.log"; : >/var/log/tcmu-runner.log
  fi
  return 0
}

# ---------------------------------------------------------------- main
T0=$(date +%s)
# Random bytes are slow to generate under TCG: one chunk of up to 64 MiB, repeated (the
# point is that no block is a hole or all zeroes; reads never return cached duplicates
# since O_DIRECT reads of the LUN go through the backstore every time).
CHUNK_MB=$((SIZE_MB < 64 ? SIZE_MB : 64))
log "fill data: $SIZE_MB MiB ($CHUNK_MB MiB random chunk repeated)"
head -c $((CHUNK_MB << 20)) /dev/urandom >/tmp/chunk.raw || { echo "cannot create chunk"; exit 1; }
for _ in $(seq $(((SIZE_MB + CHUNK_MB - 1) / CHUNK_MB))); do cat /tmp/chunk.raw; done | head -c "$SIZE" >"$FILL"
rm -f /tmp/chunk.raw
[[ $(stat -c %s "$FILL") == "$SIZE" ]] || { echo "cannot create $FILL"; exit 1; }
IFS=, read -r -a BLIST <<<"$BACKENDS"
for b in "${BLIST[@]}"; do
  bench_backend "$b" || log "$b: $(grep -E '^(status|error)=' "$OUT/$b/meta" | tr '\n' ' ')"
done
rm -f "$FILL"
dmesg >"$OUT/guest-dmesg.txt" 2>/dev/null
log "done in $(($(date +%s) - T0)) s"
echo "bench backends: ${BLIST[*]}"
exit 0
