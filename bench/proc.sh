# shellcheck shell=bash
# bench/proc.sh — CPU accounting and `rbd bench` parsing shared by the bench scripts, on
# the host (bench/rbd/run.sh) and in the VM guests (bench/lio/guest-bench.sh,
# bench/tcmu/guest-bench.sh, bench/rbd/guest-vm.sh). Sourced; defines functions only.

# "busy total": jiffies from the cpu line of /proc/stat, the whole machine
# (busy = total - idle - iowait).
cpu_busy_total() {
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# Clock ticks (user + system) the given processes used so far, every thread included
# (/proc/PID/stat; a process gone counts 0).
proc_ticks() {
    local p t total=0
    for p in "$@"; do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || continue
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# "IOPS OPS" from `rbd bench` output on stdin (its closing "elapsed: … ops: N ops/sec: R"
# line); nothing when the output has none.
rbd_bench_result() {
    awk '/^elapsed:/ { for (i = 1; i <= NF; i++) { if ($i == "ops:") n = $(i + 1); if ($i == "ops/sec:") r = $(i + 1) } print r, n }'
}
