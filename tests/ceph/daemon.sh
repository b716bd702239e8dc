#!/usr/bin/env bash
# Stops or restarts single daemons of the cluster started by start.sh, for fault tests.
#
#   daemon.sh stop NAME [TERM|KILL]   stop one daemon (mon.a, mgr.x, osd.0); default TERM
#   daemon.sh start NAME              start it again with the command start.sh recorded
#   daemon.sh stop-all [TERM|KILL]    stop osd.0, mgr.x, mon.a (in that order)
#   daemon.sh start-all               start mon.a, mgr.x, osd.0 (in that order)
#   daemon.sh wait-osd-up             wait until osd.0 is up and all PGs are active
#
# Only PIDs recorded in $CEPH_DIR/pids whose command line names this cluster's ceph.conf
# are signalled (never by process name). A restarted daemon's PID is appended to the same
# file, so stop.sh stops it too.
set -euo pipefail
DIR=${CEPH_DIR:-${TMPDIR:-/tmp}/rustio-ceph}
TMO=${CEPH_TIMEOUT:-120}
[ -e "$DIR/.ceph-single" ] || { echo "daemon.sh: $DIR is not a cluster dir" >&2; exit 1; }
CONF=$DIR/ceph.conf

ours() {   # pid -> is it one of this cluster's daemons?
    [ -r "/proc/$1/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$1/cmdline" | grep -q -- "--conf $CONF"
}

live_pids() {   # name -> live PIDs recorded for it
    local n p
    while read -r n p; do
        [ "$n" = "$1" ] && ours "$p" && echo "$p"
    done < "$DIR/pids"
    return 0
}

stop_one() {
    local name=$1 sig=${2:-TERM} pids deadline
    pids=$(live_pids "$name")
    [ -n "$pids" ] || { echo "daemon.sh: $name is not running"; return 0; }
    for p in $pids; do kill "-$sig" "$p" 2>/dev/null || true; done
    deadline=$(( $(date +%s) + 30 ))
    for p in $pids; do
        while ours "$p"; do
            if [ "$(date +%s)" -ge "$deadline" ]; then kill -KILL "$p" 2>/dev/null || true; fi
            sleep 0.1
        done
    done
    echo "daemon.sh: stopped $name ($sig)"
}

start_one() {
    local name=$1 pid
    [ -f "$DIR/cmd/$name" ] || { echo "daemon.sh: no recorded command for $name" >&2; exit 1; }
    [ -z "$(live_pids "$name")" ] || { echo "daemon.sh: $name already running"; return 0; }
    # The command file holds the argv start.sh used, shell-quoted by printf %q.
    eval "nohup $(cat "$DIR/cmd/$name") >> \"$DIR/log/$name.stdout\" 2>&1 < /dev/null &"
    pid=$!
    echo "$name $pid" >> "$DIR/pids"
    sleep 0.2
    kill -0 "$pid" 2>/dev/null || { echo "daemon.sh: $name exited at once" >&2; exit 1; }
    echo "daemon.sh: started $name (pid $pid)"
}

wait_osd_up() {
    local deadline=$(( $(date +%s) + TMO ))
    until timeout 20 ceph --conf "$CONF" --connect-timeout 10 pg stat -f json 2>/dev/null |
        /usr/bin/python3 -c '
import json,sys
d=json.load(sys.stdin); d=d.get("pg_summary",d)
n=d["num_pgs"]; ok=sum(s["num"] for s in d.get("num_pg_by_state",[]) if s["name"].startswith("active"))
sys.exit(0 if n>0 and ok==n else 1)' 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "daemon.sh: PGs not active after ${TMO}s" >&2; exit 1; }
        sleep 0.5
    done
    echo "daemon.sh: all PGs active"
}

case "${1:-}" in
    stop) stop_one "${2:?name}" "${3:-TERM}" ;;
    start) start_one "${2:?name}" ;;
    stop-all) for n in osd.0 mgr.x mon.a; do stop_one "$n" "${2:-TERM}"; done ;;
    start-all) for n in mon.a mgr.x osd.0; do start_one "$n"; done ;;
    wait-osd-up) wait_osd_up ;;
    *) echo "usage: $0 stop NAME [SIG] | start NAME | stop-all [SIG] | start-all | wait-osd-up" >&2; exit 2 ;;
esac
