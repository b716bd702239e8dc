#!/usr/bin/env bash
# Stop the cluster started by start.sh: signal exactly the PIDs it recorded in
# $CEPH_DIR/pids (never by name), wait for them to exit, then remove $CEPH_DIR.
# rustio's copy of the shared script; daemon.sh appends restarted daemons to the same
# pids file. CEPH_KEEP=1 keeps $CEPH_DIR (logs) after stopping.
set -uo pipefail
DIR=${CEPH_DIR:-${TMPDIR:-/tmp}/rustio-ceph}
[ -d "$DIR" ] || { echo "stop.sh: $DIR does not exist, nothing to do"; exit 0; }
[ -e "$DIR/.ceph-single" ] || { echo "stop.sh: $DIR lacks .ceph-single marker, refusing" >&2; exit 1; }

# Is $pid still the daemon we started? (guards against PID reuse)
ours() {
    local pid=$1 name=$2
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "--conf $DIR/ceph.conf"
}

pids=()
if [ -f "$DIR/pids" ]; then
    # reverse order: osd, mgr, mon
    while read -r name pid; do
        [ -n "${pid:-}" ] || continue
        if ours "$pid" "$name"; then
            echo "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid:$name")
        fi
    done < <(tac "$DIR/pids")
fi

deadline=$(( $(date +%s) + 20 ))
for entry in "${pids[@]}"; do
    pid=${entry%%:*}; name=${entry#*:}
    while ours "$pid" "$name" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    if ours "$pid" "$name"; then
        echo "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
done

for entry in "${pids[@]}"; do
    pid=${entry%%:*}; name=${entry#*:}
    if ours "$pid" "$name"; then echo "stop.sh: $name (pid $pid) still alive" >&2; exit 1; fi
done

if [ "${CEPH_KEEP:-0}" = 1 ]; then
    echo "stopped; kept $DIR"
else
    rm -rf -- "$DIR"
    echo "stopped; removed $DIR"
fi
