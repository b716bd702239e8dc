# shellcheck shell=bash
# What the gateway-group scripts (gateways.sh, group-config.sh, gateways-libiscsi.sh)
# share: starting a gateway process and waiting for its portal, and stopping one. Source
# it after setting ROOT; it brings port_open and release_rustio from
# tests/lib/iscsi-checks.sh.
. "$ROOT/tests/lib/iscsi-checks.sh"

# RBD ARGS...: the rbd CLI on the suite's cluster ($CONF, read at each call), bounded.
RBD() { timeout 120 rbd --conf "$CONF" "$@"; }
# Milliseconds since the epoch.
now_ms() { date +%s%3N; }

# gw_spawn PORT LOG CMD...: runs CMD in the background (output appended to LOG), sets
# LAST_PID and waits (at most 60 s) until 127.0.0.1:PORT accepts. Fails when the port
# was already taken, the process died or never listened (then LOG's tail is printed).
gw_spawn() {
    local port=$1 log=$2
    shift 2
    if port_open "$port"; then echo "127.0.0.1:$port is in use"; return 1; fi
    "$@" >>"$log" 2>&1 &
    LAST_PID=$!
    for _ in $(seq 1 600); do
        port_open "$port" && return 0
        kill -0 "$LAST_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -5 "$log"
    return 1
}

# stop_pid PID: SIGCONT (it may be stopped), SIGTERM, SIGKILL after 10 s; reaps it.
stop_pid() {
    local p=$1
    [ -n "$p" ] || return 0
    kill -CONT "$p" 2>/dev/null
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
}
