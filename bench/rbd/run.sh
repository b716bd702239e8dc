#!/usr/bin/env bash
# bench/rbd/run.sh — Ceph RBD: `rustio serve` (rbd LUN) vs tgtd's bs_rbd vs `rbd bench`
# directly, on one single-node Ceph 16.2 cluster on 127.0.0.1, in one run.
#
#   bench/rbd/run.sh [--quick] [--runs N] [--no-tgt] [--no-group] [--pin]
#                    [--client-cpus cluster|LIST] [--out DIR]
#
# Same image for every contender (pre-filled, so no read hits unallocated space), same
# client (bench/loadgen, our iSCSI load generator) for both iSCSI targets, same queue
# depth (32); `rbd bench` is the librbd ceiling without any iSCSI in between, run twice:
# with librbd's defaults (rbd_cache on, pacific's write-around cache policy) and with
# --rbd_cache=false, the cache mode rustio's engine and tcmu-runner use (a completed
# write is on the OSDs; 4 KiB random writes measure 1.4-1.5x slower that way). Rounds are
# interleaved (round 1: every workload on every contender, then round 2, ...) and the
# table shows medians of --runs rounds (default 3, --quick 1) with the ratios
# rustio/tgt and rustio/rbd-bench; rbd.json has every run and the load average.
# A fourth contender (unless --no-group): a two-gateway group (`rustio serve --gateway`
# gw-a and gw-b, `active_non_optimized`), measured through its active/optimized path
# (gw-a, which owns the lock after the first write) — what a gateway group costs over
# one gateway. It serves its own image of the same size, pre-filled the same way (two
# targets writing one image would fight over its exclusive lock).
# --pin: the cluster's daemons on the first half of the CPUs, every contender (targets,
# their client, rbd bench) on the other half — the layout of a deployment, where the
# gateway host is not the OSD host, so that what a contender spends per I/O is not taken
# from the OSD (on 2 CPUs: the cluster on CPU 0, the rest on CPU 1). A shared cluster's
# affinity is put back at the end.
# --client-cpus cluster|LIST: where the iSCSI client (loadgen) runs instead: `cluster`
# (with --pin) on the cluster's CPUs, or a taskset CPU list. By default it shares the
# contenders' CPUs, so on 2 CPUs the target and its client compete for one CPU while
# `rbd bench`, which has no client, has it alone. Moving the client off the target's CPU
# shows that part; it then takes CPU from the cluster instead, which `rbd bench` does not
# pay (a deployment has the client on a third host, which 2 CPUs cannot model).
# CPU per I/O: every job also records the CPU time (user + system) of the target process,
# of its client (loadgen, or rbd bench itself) and of the cluster's daemons, and the
# report adds a table of microseconds per I/O for each — what the iSCSI hop costs on top
# of librbd, and on which side of it.
# RUSTIO_B_BIN / RUSTIO_B_PARAMS: a second `rustio serve` (contender rustio-b) serving the
# same image, from another binary and/or with these iSCSI parameters in its TPG (JSON
# members, e.g. '"InitialR2T": "No", "FirstBurstLength": "262144"'), interleaved with the
# others — to measure a change or a setting in the same run.
# Env: RUSTIO_BIN (a rustio built with --features rbd; default: build it), RUSTIO_ARGS
# (extra `rustio serve` options), TIME (s per job), CEPH_DIR (a running cluster there,
# e.g. a shared /tmp/shared-ceph, is reused and left running; otherwise one is started
# in it, default a temp dir, and stopped at the end), BENCH_IMAGE (default
# rbd/bench-<pid>, removed at the end), PORT_RUSTIO / PORT_TGT / PORT_GROUP
# (23470 / 23471 / 23472 and 23473), PORT_RUSTIO_B (23474), PORT_METRICS (23475: rustio's
# --metrics, on loopback).
# Where the time goes: around every rustio job the LUN's time counters
# (rustio_lun_{read,write}_seconds_total and ..._backstore_seconds_total) are read from
# --metrics, and the report splits the mean latency the client saw (QD / IOPS) into the
# time in rustio (PDU arrival to response sent) and, of that, in librbd (submission to
# completion), next to rbd bench's own mean latency; and runs rbd bench (no cache) once
# more at librbd's mean depth under rustio (when below 32), to tell what the iSCSI hop
# costs beyond the requests it keeps on the wire.
# Operations at the OSD: around every job (every contender) the OSD's own count and
# summed latency of client operations are read from its admin socket
# ($CEPH_DIR/run/osd.0.asok), and the report gives how many operations each contender
# keeps inside the OSD on average (Little's law), and OSD operations per I/O.
# rustio's engine without a transport: every workload also runs on rustio's RBD engine
# in a closed loop of 32 (crates/rbd/examples/rbd_loop.rs, contender `engine`), next to
# rbd bench; and once more with each request held, between its completion and the next
# submission, for as long as rustio's requests spent outside librbd in the same round
# (the client's mean latency minus the time in librbd; contender `engine-model`). That
# loop has rustio's cycle (time outside + time in librbd) only if librbd serves it as it
# served rustio, so rustio against it is how much slower librbd is on the stream that
# arrives through a client, sockets and a target than on one held outside it for the
# same time. Env: RBD_LOOP_BIN (default: build the example).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../proc.sh
. "$ROOT/bench/proc.sh"
# port_open only.
# shellcheck source=../../tests/lib/iscsi-checks.sh
. "$ROOT/tests/lib/iscsi-checks.sh"
QUICK=0 RUNS= TGT=1 GROUP=1 PIN=0 LG_CPUS=
OUT=
while (($#)); do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --runs) RUNS=$2; shift 2 ;;
        --no-tgt) TGT=0; shift ;;
        --no-group) GROUP=0; shift ;;
        --pin) PIN=1; shift ;;
        --client-cpus)
            [ -n "${2:-}" ] || { echo "bench/rbd: --client-cpus needs 'cluster' or a CPU list" >&2; exit 2; }
            LG_CPUS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
        *) echo "bench/rbd: unknown argument $1" >&2; exit 2 ;;
    esac
done
cpus_ok() { # CPU list → true when it is well formed and every CPU in it can run this shell
    # (taskset alone accepts a list as long as one of its CPUs exists)
    local part lo hi n
    [[ "$1" =~ ^[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?)*$ ]] || return 1
    for part in ${1//,/ }; do
        lo=$((10#${part%-*})) hi=$((10#${part#*-}))
        ((lo <= hi && hi < 4096)) || return 1
        for ((n = lo; n <= hi; n++)); do
            taskset -c "$n" true 2>/dev/null || return 1
        done
    done
}
case "$LG_CPUS" in
    "") ;;
    cluster) [ "$PIN" = 1 ] || { echo "bench/rbd: --client-cpus cluster needs --pin" >&2; exit 2; } ;;
    *) cpus_ok "$LG_CPUS" ||
        { echo "bench/rbd: --client-cpus takes 'cluster' or a list of this host's CPUs (e.g. 0 or 0-1,3), not '$LG_CPUS'" >&2; exit 2; } ;;
esac
TIME=${TIME:-$([ "$QUICK" = 1 ] && echo 3 || echo 10)}
RUNS=${RUNS:-$([ "$QUICK" = 1 ] && echo 1 || echo 3)}
SIZE_MB=$([ "$QUICK" = 1 ] && echo 256 || echo 1024)
OUT=${OUT:-$ROOT/bench/out/rbd-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export CEPH_DIR=${CEPH_DIR:-$(mktemp -d /tmp/rustio-bench-ceph.XXXXXX)}
export CEPH_MON_PORT=${CEPH_MON_PORT:-3420} CEPH_MON_PORT_V1=${CEPH_MON_PORT_V1:-6820}
CONF=$CEPH_DIR/ceph.conf
IMG=${BENCH_IMAGE:-rbd/bench-$$}
IMG_G=$IMG-group
PR=${PORT_RUSTIO:-23470} PT=${PORT_TGT:-23471} PG=${PORT_GROUP:-23472} PB=${PORT_RUSTIO_B:-23474}
PM=${PORT_METRICS:-23475}
B_PARAMS=${RUSTIO_B_PARAMS:-} B_BIN=${RUSTIO_B_BIN:-}
B=$([ -n "$B_PARAMS$B_BIN" ] && echo 1 || echo 0)
TGTD= RUSTIO= RUSTIO_B= CTL= OWN_CLUSTER=0 MADE_IMAGE=0 GW_A= GW_B=
pin_cluster() { # CPU list: every thread of every daemon of the cluster in CEPH_DIR
    local name pid n=0
    [ -r "$CEPH_DIR/pids" ] || return 1
    while read -r name pid; do
        kill -0 "$pid" 2>/dev/null || continue
        taskset -a -p -c "$1" "$pid" >/dev/null && n=$((n + 1))
    done <"$CEPH_DIR/pids"
    ((n > 0))
}
cleanup() {
    [ -n "$RUSTIO" ] && kill "$RUSTIO" 2>/dev/null && wait "$RUSTIO" 2>/dev/null
    [ -n "$RUSTIO_B" ] && kill "$RUSTIO_B" 2>/dev/null && wait "$RUSTIO_B" 2>/dev/null
    for g in $GW_A $GW_B; do kill "$g" 2>/dev/null && wait "$g" 2>/dev/null; done
    [ -n "$TGTD" ] && kill -9 "$TGTD" 2>/dev/null && wait "$TGTD" 2>/dev/null
    [ -n "$CTL" ] && rm -f "/var/run/tgtd/socket.$CTL" "/var/run/tgtd/socket.$CTL.lock"
    [ "$PIN" = 1 ] && pin_cluster "0-$(($(nproc) - 1))"
    # The targets' watches on the image outlive them by up to 30 s (rbd rm refuses
    # while the image has watchers): retry for a minute.
    if [ "$MADE_IMAGE" = 1 ] && [ "$OWN_CLUSTER" = 0 ]; then
        for i in $IMG $([ "$GROUP" = 1 ] && echo "$IMG_G"); do
            for _ in $(seq 30); do
                rbd --conf "$CONF" rm --no-progress "$i" >/dev/null 2>&1 && break
                sleep 2
            done
        done
    fi
    # Only a cluster this run started is stopped (never a shared one it reused).
    [ "$OWN_CLUSTER" = 1 ] && bash "$ROOT/tests/ceph/stop.sh" >/dev/null 2>&1
}
trap cleanup EXIT
say() { printf '[rbd bench %5ss] %s\n' "$SECONDS" "$*" >&2; }

# --- tools ---------------------------------------------------------------------------------
"$ROOT/.ci/install-deps.sh" base ceph bench >"$OUT/apt.log" 2>&1 ||
    { echo "bench/rbd: .ci/install-deps.sh failed (see $OUT/apt.log)" >&2; exit 2; }
TD=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${RUSTIO_BIN:-}" ]; then
    say "building rustio --features rbd"
    (cd "$ROOT" && cargo build --release -q -p rustio --features rbd) || exit 2
    RUSTIO_BIN=$TD/release/rustio
fi
LOADGEN=${LOADGEN_BIN:-$TD/release/loadgen}
if [ ! -x "$LOADGEN" ]; then
    say "building bench/loadgen"
    CARGO_TARGET_DIR=$TD cargo build --release -q --manifest-path "$ROOT/bench/loadgen/Cargo.toml" || exit 2
fi
RBD_LOOP=${RBD_LOOP_BIN:-$TD/release/examples/rbd_loop}
if [ -z "${RBD_LOOP_BIN:-}" ]; then
    say "building rustio's engine loop (crates/rbd/examples/rbd_loop.rs)"
    (cd "$ROOT" && cargo build --release -q -p rustio-rbd --features rbd --example rbd_loop) || exit 2
fi

# --- cluster and image ---------------------------------------------------------------------------
if [ -f "$CONF" ] && timeout 30 ceph --conf "$CONF" health >/dev/null 2>&1; then
    say "reusing the running Ceph cluster in $CEPH_DIR (left running)"
elif [ -n "$(ls -A "$CEPH_DIR" 2>/dev/null)" ]; then
    echo "bench/rbd: $CEPH_DIR is not empty but holds no reachable cluster" >&2; exit 2
else
    say "starting Ceph in $CEPH_DIR"
    OWN_CLUSTER=1
    bash "$ROOT/tests/ceph/start.sh" >"$OUT/ceph-start.log" 2>&1 || { tail -20 "$OUT/ceph-start.log" >&2; exit 2; }
fi
# --pin: the cluster on CPUs 0..N/2-1, the contenders (ON_CLIENT) on the rest.
ON_CLIENT=()
if [ "$PIN" = 1 ]; then
    NCPU=$(nproc)
    ((NCPU >= 2)) || { echo "bench/rbd: --pin needs at least 2 CPUs" >&2; exit 2; }
    CLUSTER_CPUS="0-$((NCPU / 2 - 1))" CLIENT_CPUS="$((NCPU / 2))-$((NCPU - 1))"
    ON_CLIENT=(taskset -c "$CLIENT_CPUS")
    pin_cluster "$CLUSTER_CPUS" || { echo "bench/rbd: could not pin the cluster (no $CEPH_DIR/pids?)" >&2; exit 2; }
    say "pinned: cluster on CPUs $CLUSTER_CPUS, contenders on $CLIENT_CPUS"
fi
# --client-cpus: loadgen's CPUs (ON_LOADGEN); by default the contenders'.
ON_LOADGEN=("${ON_CLIENT[@]}")
[ "$LG_CPUS" = cluster ] && LG_CPUS=$CLUSTER_CPUS
if [ -n "$LG_CPUS" ]; then
    ON_LOADGEN=(taskset -c "$LG_CPUS")
    say "the iSCSI client (loadgen) on CPUs $LG_CPUS"
fi
rbd --conf "$CONF" create --size "${SIZE_MB}M" "$IMG" || exit 2
MADE_IMAGE=1
say "pre-filling $IMG (${SIZE_MB} MiB)"
rbd --conf "$CONF" bench --io-type write --io-pattern seq --io-size 4M --io-threads 8 \
    --io-total "${SIZE_MB}M" "$IMG" >"$OUT/prefill.log" 2>&1 || exit 2
if [ "$GROUP" = 1 ]; then
    rbd --conf "$CONF" create --size "${SIZE_MB}M" "$IMG_G" || exit 2
    say "pre-filling $IMG_G (${SIZE_MB} MiB)"
    rbd --conf "$CONF" bench --io-type write --io-pattern seq --io-size 4M --io-threads 8 \
        --io-total "${SIZE_MB}M" "$IMG_G" >>"$OUT/prefill.log" 2>&1 || exit 2
fi

# --- rbd bench (librbd directly) ----------------------------------------------------------------
rbd_bench() { # type pattern size threads ops [rbd options] → IOPS (ops: ≈ TIME s of the iSCSI run)
    # loadgen's `seq` is one sequential stream with QD requests in flight (as an
    # initiator's dd or fio), which is rbd bench's `full-seq`; rbd bench's own `seq`
    # gives each thread a separate region, so its requests go to different objects and
    # never wait on each other at the OSD (measured: 7474 vs 4491 IOPS at 128 KiB).
    local pat=$2
    [ "$pat" = seq ] && pat=full-seq
    local ops=$5 kib=$(( ${3%K} ))
    ((ops < 2000)) && ops=2000
    /usr/bin/time -f "%U %S" -o "$OUT/client.cpu" \
        "${ON_CLIENT[@]}" rbd --conf "$CONF" ${6:-} bench --io-type "$1" --io-pattern "$pat" --io-size "$3" --io-threads "$4" \
        --io-total "$(( ops * kib ))K" "$IMG" 2>&1 | tee -a "$OUT/rbd-bench.log" | rbd_bench_result
}

# --- CPU accounting --------------------------------------------------------------------------------
# proc_ticks: bench/proc.sh.
HZ=$(getconf CLK_TCK)
CLUSTER_PIDS=$(awk '{ print $2 }' "$CEPH_DIR/pids" 2>/dev/null)
# The OSD's own count of client operations so far and their summed latency in seconds
# ("OPS SECONDS"; "- -" without its admin socket). Over a job of IOS I/Os at IOPS, the OSD
# held IOPS x SECONDS / IOS operations on average (Little's law), whoever sent them, and
# OPS / IOS operations per I/O (not always 1: librbd merges sequential writes). Every
# client operation (read, write, read-modify-write) counts. At most 10 s, so that a
# wedged OSD cannot stop the run.
osd_ops() {
    timeout 10 ceph --admin-daemon "$CEPH_DIR/run/osd.0.asok" perf dump osd 2>/dev/null | python3 -c '
import json, sys
try:
    o = json.load(sys.stdin)["osd"]["op_latency"]
    print(o["avgcount"], o["sum"])
except (ValueError, KeyError, TypeError):
    print("- -")'
}
# job TARGET_PID FUNCTION ARGS... → "IOPS IOS TARGET_S CLIENT_S CLUSTER_S OPS SECONDS":
# FUNCTION prints "IOPS IOS" and leaves its client's "user system" seconds in
# $OUT/client.cpu; TARGET_PID is the target process ("-" for none: rbd bench); the last
# two are the OSD's counters over the job (osd_ops, "-" where unknown).
job() {
    local tp=$1 t0 c0 t1 c1 o0 o1 r u s
    shift
    [ "$tp" = - ] && tp=
    : >"$OUT/client.cpu"
    o0=$(osd_ops)
    t0=$(proc_ticks $tp) c0=$(proc_ticks $CLUSTER_PIDS)
    r=$("$@")
    t1=$(proc_ticks $tp) c1=$(proc_ticks $CLUSTER_PIDS)
    o1=$(osd_ops)
    # time(1) puts a line about a failed command first: the figures are the last line.
    read -r u s < <(tail -n 1 "$OUT/client.cpu")
    [ -n "$r" ] || r="- -"
    echo "$r $(awk -v hz="$HZ" -v t=$((t1 - t0)) -v c=$((c1 - c0)) -v u="${u:-0}" -v s="${s:-0}" \
        'BEGIN { printf "%.2f %.2f %.2f", t / hz, u + s, c / hz }') $(awk -v a="$o0" -v b="$o1" \
        'BEGIN { n = split(a, x) + split(b, y); for (i = 1; i <= 2; i++)
                   printf "%s%s", (i > 1 ? " " : ""), (n == 4 && x[i] != "-" && y[i] != "-" ? y[i] - x[i] : "-") }')"
}

# --- iSCSI targets ------------------------------------------------------------------------------------
BYTES=$((SIZE_MB << 20))
cat >"$OUT/rustio.json" <<EOF
{"storage_objects": [{"plugin": "user", "name": "bench", "size": $BYTES,
   "config": "rbd/$IMG;conf=$CONF"}],
 "targets": [{"wwn": "iqn.2024-01.org.rustio.bench:rbd", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
   "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
   "luns": [{"index": 0, "storage_object": "/backstores/user/bench"}],
   "portals": [{"ip_address": "127.0.0.1", "port": $PR}]}]}]}
EOF
METRICS=(--metrics "127.0.0.1:$PM")
[[ " ${RUSTIO_ARGS:-} " == *" --metrics"* ]] && METRICS=()  # the caller's own endpoint: no split
"${ON_CLIENT[@]}" "$RUSTIO_BIN" serve --config "$OUT/rustio.json" "${METRICS[@]}" --log warn ${RUSTIO_ARGS:-} >"$OUT/rustio.log" 2>&1 &
RUSTIO=$!
PORTS=$PR
if [ "$B" = 1 ]; then
    sed -e "s/:rbd\"/:rbd-b\"/" -e "s/\"port\": $PR}/\"port\": $PB}/" \
        -e "s/\"enable\": true,/\"enable\": true, \"parameters\": {$B_PARAMS},/" "$OUT/rustio.json" >"$OUT/rustio-b.json"
    "${ON_CLIENT[@]}" "${B_BIN:-$RUSTIO_BIN}" serve --config "$OUT/rustio-b.json" --log warn ${RUSTIO_ARGS:-} >"$OUT/rustio-b.log" 2>&1 &
    RUSTIO_B=$!
    PORTS="$PORTS $PB"
fi
if [ "$TGT" = 1 ]; then
    mkdir -p /var/run/tgtd
    CTL=$((20000 + RANDOM % 9000))
    "${ON_CLIENT[@]}" tgtd -f -C "$CTL" --iscsi "portal=127.0.0.1:$PT" >"$OUT/tgtd.log" 2>&1 &
    TGTD=$!
    for _ in $(seq 100); do [ -S "/var/run/tgtd/socket.$CTL" ] && break; sleep 0.1; done
    tgtadm -C "$CTL" --lld iscsi --op new --mode target --tid 1 -T iqn.2024-01.org.rustio.bench:tgt-rbd &&
        tgtadm -C "$CTL" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 --bstype rbd \
            --backing-store "$IMG" --bsopts "conf=$CONF" &&
        tgtadm -C "$CTL" --lld iscsi --op bind --mode target --tid 1 --initiator-address ALL ||
        { echo "bench/rbd: tgtd setup failed (see $OUT/tgtd.log)" >&2; exit 2; }
    PORTS="$PR $PT"
fi
if [ "$GROUP" = 1 ]; then
    cat >"$OUT/group.json" <<EOF
{"storage_objects": [{"plugin": "user", "name": "bench", "size": $BYTES,
   "config": "rbd/$IMG_G;conf=$CONF"}],
 "targets": [{"wwn": "iqn.2024-01.org.rustio.bench:rbd-group", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
   "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
   "luns": [{"index": 0, "storage_object": "/backstores/user/bench"}], "portals": []}]}],
 "rustio_gateway_group": {"name": "bench", "non_owner_state": "active_non_optimized",
   "gateways": [{"name": "gw-a", "portals": ["127.0.0.1:$PG"]},
                {"name": "gw-b", "portals": ["127.0.0.1:$((PG + 1))"]}]}}
EOF
    "${ON_CLIENT[@]}" "$RUSTIO_BIN" serve --config "$OUT/group.json" --gateway gw-a --log warn ${RUSTIO_ARGS:-} >"$OUT/gw-a.log" 2>&1 &
    GW_A=$!
    "${ON_CLIENT[@]}" "$RUSTIO_BIN" serve --config "$OUT/group.json" --gateway gw-b --log warn ${RUSTIO_ARGS:-} >"$OUT/gw-b.log" 2>&1 &
    GW_B=$!
    PORTS="$PORTS $PG $((PG + 1))"
fi
for p in $PORTS; do
    for _ in $(seq 100); do port_open "$p" && break; sleep 0.2; done
done
kill -0 "$RUSTIO" 2>/dev/null || { cat "$OUT/rustio.log" >&2; exit 2; }
[ "$B" = 0 ] || kill -0 "$RUSTIO_B" 2>/dev/null || { cat "$OUT/rustio-b.log" >&2; exit 2; }
for g in $GW_A $GW_B; do
    kill -0 "$g" 2>/dev/null || { cat "$OUT/gw-a.log" "$OUT/gw-b.log" >&2; exit 2; }
done

lg() { # port iqn lun rw pattern bs → "IOPS IOS" (loadgen's CPU in $OUT/client.cpu)
    /usr/bin/time -f "%U %S" -o "$OUT/client.cpu" \
        "${ON_LOADGEN[@]}" "$LOADGEN" run --portal "127.0.0.1:$1" --target "$2" --lun "$3" --initiator iqn.2024-01.org.rustio:bench \
        --rw "$4" --pattern "$5" --bs "$6" --qd 32 --time "$TIME" 2>>"$OUT/loadgen.err" |
        tee -a "$OUT/loadgen.jsonl" | python3 -c 'import json,sys; j = json.load(sys.stdin); print(j["iops"], j["ios"])'
}

eng() { # rw pattern bytes outside_us → "IOPS IOS" (rbd_loop's CPU in $OUT/client.cpu); a
    # failed run ("rbd_loop: ..." in $OUT/engine.err, no JSON) gives "- -"
    /usr/bin/time -f "%U %S" -o "$OUT/client.cpu" \
        "${ON_CLIENT[@]}" "$RBD_LOOP" --image "rbd/$IMG;conf=$CONF" --rw "$1" --pattern "$2" --bs "$3" --qd 32 \
        --secs "$TIME" --outside-us "$4" 2>>"$OUT/engine.err" |
        tee -a "$OUT/engine.jsonl" | python3 -c '
import json, sys
try:
    j = json.load(sys.stdin)
    print(j["iops"], j["ios"])
except (ValueError, KeyError):
    print("- -")'
}

# rustio's LUN counters: "READS WRITES READ_S WRITE_S READ_BACKSTORE_S WRITE_BACKSTORE_S"
# ("-" when the endpoint does not answer or lacks them: an older binary).
lun_times() {
    python3 - "$PM" <<'PY' 2>/dev/null || echo -
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
v = {}
for line in text.splitlines():
    if line.startswith("rustio_lun_"):
        name, _, val = line.rpartition(" ")
        v[name.split("{")[0][len("rustio_lun_"):]] = float(val)
keys = ("read_commands_total", "write_commands_total", "read_seconds_total", "write_seconds_total",
        "read_backstore_seconds_total", "write_backstore_seconds_total")
print(" ".join(repr(v[k]) for k in keys) if all(k in v for k in keys) else "-")
PY
}

# --- the runs: rounds of every workload against every contender, back to back -----------------------
WL=("randread-4k:read:rand:4k:4K" "randwrite-4k:write:rand:4k:4K"
    "seqread-128k:read:seq:128k:128K" "seqwrite-128k:write:seq:128k:128K")
RAW="$OUT/runs.txt"
: >"$RAW"
: >"$OUT/split.txt"
: >"$OUT/outside.txt"
rec() { # run workload contender "IOPS IOS TARGET_S CLIENT_S CLUSTER_S OPS SECONDS" → a line of runs.txt
    local iops ios rest
    read -r iops ios rest <<<"$4"
    echo "$1 $2 $3 ${iops:--} $(cut -d' ' -f1 /proc/loadavg) ${ios:--} $rest" >>"$RAW"
    echo "${iops:--}"
}
for run in $(seq "$RUNS"); do
    for w in "${WL[@]}"; do
        IFS=: read -r name rw pat bs rbs <<<"$w"
        say "run $run $name: rustio (load $(cut -d' ' -f1-3 /proc/loadavg))"
        m0=$(lun_times)
        r=$(rec "$run" "$name" rustio "$(job "$RUSTIO" lg $PR iqn.2024-01.org.rustio.bench:rbd 0 "$rw" "$pat" "$bs")")
        m1=$(lun_times)
        echo "$run $name $rw ${r:--} $m0 $m1" >>"$OUT/split.txt"
        # librbd's mean depth under rustio (IOPS x librbd time per command), for rbd bench
        # at the same depth below, and the µs a command spent outside librbd (the client's
        # mean latency, 32 / IOPS, minus the time in librbd), for the engine loop; both
        # empty without the time counters.
        read -r depth outside depth_f < <(python3 -c '
import sys
try:
    iops, a, b = float(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
    i = 0 if sys.argv[4] == "read" else 1
    n = float(b[i]) - float(a[i])
    lib = (float(b[4 + i]) - float(a[4 + i])) / n
    d = round(iops * lib)
    print(d if 1 <= d <= 32 else "-", max(0, round((32 / iops - lib) * 1e6)), f"{iops * lib:.2f}")
except (ValueError, IndexError, ZeroDivisionError):
    print("- - -")' "${r:--}" "$m0" "$m1" "$rw")
        [ "$depth" = - ] && depth=
        [ "$outside" = - ] && outside=
        [ "$depth_f" = - ] && depth_f=
        if [ "$B" = 1 ]; then
            say "run $run $name: rustio-b (${B_BIN:-same binary}; ${B_PARAMS:-same parameters})"
            rec "$run" "$name" rustio-b "$(job "$RUSTIO_B" lg $PB iqn.2024-01.org.rustio.bench:rbd-b 0 "$rw" "$pat" "$bs")" >/dev/null
        fi
        if [ "$GROUP" = 1 ]; then
            say "run $run $name: two-gateway group, active/optimized path (gw-a)"
            rec "$run" "$name" group "$(job "$GW_A $GW_B" lg $PG iqn.2024-01.org.rustio.bench:rbd-group 0 "$rw" "$pat" "$bs")" >/dev/null
        fi
        if [ "$TGT" = 1 ]; then
            say "run $run $name: tgt"
            rec "$run" "$name" tgt "$(job "$TGTD" lg $PT iqn.2024-01.org.rustio.bench:tgt-rbd 1 "$rw" "$pat" "$bs")" >/dev/null
        fi
        say "run $run $name: rbd bench"
        ops=$(python3 -c "import sys; v=sys.argv[1]; print(int(float(v) * $TIME) if v not in ('', '-') else 0)" "${r:-}")
        rec "$run" "$name" rbd "$(job - rbd_bench "$rw" "$pat" "$rbs" 32 "$ops")" >/dev/null
        say "run $run $name: rbd bench --rbd_cache=false"
        rec "$run" "$name" rbd-nocache "$(job - rbd_bench "$rw" "$pat" "$rbs" 32 "$ops" --rbd_cache=false)" >/dev/null
        if [ -n "$depth" ] && [ "$depth" != 32 ]; then
            say "run $run $name: rbd bench --rbd_cache=false at rustio's librbd depth ($depth)"
            rec "$run" "$name" rbd-depth "$(job - rbd_bench "$rw" "$pat" "$rbs" "$depth" "$ops" --rbd_cache=false)" >/dev/null
        fi
        bytes=$(( ${rbs%K} * 1024 ))
        say "run $run $name: rustio's engine alone (rbd_loop, no transport)"
        rec "$run" "$name" engine "$(job - eng "$rw" "$pat" "$bytes" 0)" >/dev/null
        if [ -n "$outside" ]; then
            say "run $run $name: rustio's engine, each request $outside µs outside librbd (rustio's, this round)"
            lines=$(wc -l <"$OUT/engine.jsonl" 2>/dev/null || echo 0)
            rec "$run" "$name" engine-model "$(job - eng "$rw" "$pat" "$bytes" "$outside")" >/dev/null
            # run workload asked-µs rustio's-librbd-depth model's-depth model's-actual-µs
            # (the last two "-" when the model's run printed nothing: it failed)
            echo "$run $name $outside ${depth_f:--} $(tail -n +$((lines + 1)) "$OUT/engine.jsonl" | tail -n 1 | python3 -c '
import json, sys
try:
    j = json.load(sys.stdin)
    print(j["engine_depth"], j["outside_actual_us"])
except (ValueError, KeyError):
    print("- -")')" >>"$OUT/outside.txt"
        fi
    done
done

# --- report ------------------------------------------------------------------------------------------
python3 - "$OUT" "$TIME" "$SIZE_MB" "$RUNS" "$(cat /proc/loadavg)" "${CLUSTER_CPUS:-}" "${CLIENT_CPUS:-}" "$B_PARAMS" "$B_BIN" "$LG_CPUS" <<'EOF' | tee "$OUT/rbd.txt"
import json, statistics, sys
out, secs, size, runs, load = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
cluster_cpus, client_cpus, b_params, b_bin = sys.argv[6], sys.argv[7], sys.argv[8], sys.argv[9]
layout = f"cluster on CPUs {cluster_cpus}, contenders on {client_cpus}" if cluster_cpus else "cluster and contenders on every CPU"
if sys.argv[10]:
    layout += f", the iSCSI client (loadgen) on CPUs {sys.argv[10]}"
# run workload contender IOPS load [IOS TARGET_S CLIENT_S CLUSTER_S [OPS SECONDS]]
rows = [l.split() for l in open(f"{out}/runs.txt") if l.strip()]
def num(v):
    try: return float(v)
    except ValueError: return None
res, cpu, osd, loads = {}, {}, {}, [float(r[4]) for r in rows]
for r in rows:
    run, w, who, v = r[:4]
    res.setdefault(w, {}).setdefault(who, []).append(num(v))
    ios, t, c, k = (num(x) for x in (r[5:9] + ["-"] * 4)[:4])
    if ios:  # µs of CPU per I/O: target process, its client (loadgen; rbd bench is its own), cluster
        cpu.setdefault(w, {}).setdefault(who, []).append((t / ios * 1e6 if t is not None else None, c / ios * 1e6, k / ios * 1e6))
    # Operations the OSD held on average (IOPS x its summed latency / IOS), and per I/O.
    ops, secs_ = (num(x) for x in (r[9:11] + ["-"] * 2)[:2])
    if num(v) and ios and ops is not None and secs_ is not None:
        osd.setdefault(w, {}).setdefault(who, []).append((num(v) * secs_ / ios, ops / ios))
med = lambda vs: None if not [v for v in vs if v is not None] else statistics.median([v for v in vs if v is not None])
print(f"RBD stage: single-node Ceph 16.2 on 127.0.0.1, image {size} MiB pre-filled, QD 32, "
      f"{secs:.0f} s per job, medians of {runs} interleaved runs; {layout}; load 1-min {min(loads):.1f}-{max(loads):.1f}, at end {load.split()[0:3]}")
if b_params or b_bin:
    print(f"rustio-b: {b_bin or 'the same binary'}, TPG parameters {{{b_params}}}")
has_b = any("rustio-b" in d for d in res.values())
print("librbd/tgt: rbd bench (no cache) / tgt, the most a target whose every I/O goes through librbd could be")
print("over tgt in this run (rustio/tgt passes it only where rustio beats librbd alone).")
print(f"{'workload':15} {'rustio serve':>13}" + (f" {'rustio-b':>9}" if has_b else "") + f" {'2-gw group':>11} {'tgt bs_rbd':>11} {'rbd bench':>10} {'(no cache)':>11} {'rustio/tgt':>11} {'librbd/tgt':>11} {'rustio/rbd':>11} {'(no cache)':>11}" + (f" {'b/rbd nc':>9}" if has_b else "") + f" {'group/rustio':>13} {'group/rbd':>10}   (IOPS)  per-run rustio/rbd (no cache)")
f = lambda v: "-" if v is None else f"{v:.0f}"
q = lambda a, c: "-" if a is None or not c else f"{a / c:.2f}x"
for w, d in res.items():
    r, rb, g, t, b, n = (med(d.get(k, [])) for k in ("rustio", "rustio-b", "group", "tgt", "rbd", "rbd-nocache"))
    per = " ".join(f"{q(a, c)} ({q(a, e)})" for a, c, e in zip(d.get("rustio", []), d.get("rbd", []), d.get("rbd-nocache", [])))
    print(f"{w:15} {f(r):>13}" + (f" {f(rb):>9}" if has_b else "") + f" {f(g):>11} {f(t):>11} {f(b):>10} {f(n):>11} {q(r, t):>11} {q(n, t):>11} {q(r, b):>11} {q(r, n):>11}" + (f" {q(rb, n):>9}" if has_b else "") + f" {q(g, r):>13} {q(g, b):>10}   {per}")
if cpu:
    print()
    print("CPU per I/O (µs, user + system, medians): the target process, its client (loadgen; rbd bench and the engine loop are their own client)")
    print("and the cluster's daemons. 'iSCSI side' = target + client, against rbd bench (no cache) in the same run.")
    print(f"{'workload':15} {'contender':12} {'target':>8} {'client':>8} {'cluster':>8} {'iSCSI side':>11} {'target/rbd':>11} {'side/rbd':>9}")
    for w, d in cpu.items():
        base = d.get("rbd-nocache", [])
        rbd_c = med([c for _, c, _ in base])
        for who, vals in d.items():
            tg, cl, ks = (med([v[i] for v in vals]) for i in range(3))
            side = None if cl is None else (tg or 0) + cl
            print(f"{w:15} {who:12} {f(tg):>8} {f(cl):>8} {f(ks):>8} {f(side):>11} {q(tg, rbd_c):>11} {q(side, rbd_c):>9}")
if osd:
    print()
    print("Operations in flight at the OSD (medians; IOPS x the OSD's summed client-op latency / I/Os, from its")
    print("admin socket), and in brackets OSD operations per I/O: how much of each contender's load is inside the cluster.")
    whos = [k for k in ("rustio", "rustio-b", "group", "tgt", "rbd", "rbd-nocache", "rbd-depth", "engine", "engine-model") if any(k in d for d in osd.values())]
    print(f"{'workload':15}" + "".join(f" {k:>16}" for k in whos))
    for w, d in osd.items():
        cell = lambda vs: "-" if not vs else f"{med([a for a, _ in vs]):.1f} ({med([b for _, b in vs]):.2f})"
        print(f"{w:15}" + "".join(f" {cell(d.get(k, [])):>16}" for k in whos))
# Latency split of rustio's runs: run workload rw IOPS [6 counters before] [6 after].
split = {}
try:
    lines = [l.split() for l in open(f"{out}/split.txt") if l.strip()]
except OSError:
    lines = []
for l in lines:
    if len(l) != 16 or not num(l[3]) or any(num(x) is None for x in l[4:16]):
        continue
    w, rw, iops = l[1], l[2], float(l[3])
    d = [float(b) - float(a) for a, b in zip(l[4:10], l[10:16])]
    n, total, store = (d[0], d[2], d[4]) if rw == "read" else (d[1], d[3], d[5])
    if n > 0:
        split.setdefault(w, []).append((32 / iops * 1e3, total / n * 1e3, store / n * 1e3, iops * store / n))
if split:
    print()
    print("Where a rustio I/O's time goes (ms, medians; QD 32): the client's mean latency (QD / IOPS), in rustio from the")
    print("command's arrival to its response sent, of that in librbd (submission to completion), librbd's mean depth")
    print("(IOPS x librbd time) and rbd bench's own mean latency (no cache, 32 in flight); 'rustio own' is in rustio - in librbd.")
    print("Last columns: rbd bench (no cache) at rustio's librbd depth, rounded, in the same rounds (IOPS), and rustio against it:")
    print("what the iSCSI hop costs beyond the requests it keeps on the wire.")
    print(f"{'workload':15} {'client':>8} {'in rustio':>10} {'in librbd':>10} {'rustio own':>11} {'librbd depth':>13} {'rbd bench':>10} {'rbd @depth':>11} {'rustio/that':>12}")
    for w, vals in split.items():
        c, t, s_, dep = (med([v[i] for v in vals]) for i in range(4))
        nb = med(res.get(w, {}).get("rbd-nocache", []))
        rb = None if not nb else 32 / nb * 1e3
        at = med(res.get(w, {}).get("rbd-depth", []))
        g = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
        print(f"{w:15} {g(c):>8} {g(t):>10} {g(s_):>10} {g(t - s_, 3):>11} {g(dep, 1):>13} {g(rb):>10} {f(at):>11} {q(med(res[w].get('rustio', [])), at):>12}")
# rustio's engine without a transport: alone, and held outside librbd as long as rustio's requests were.
# outside.txt: run workload asked-µs rustio's-librbd-depth model's-depth model's-actual-µs
outside = {}
try:
    for l in open(f"{out}/outside.txt"):
        p = l.split()
        if len(p) == 6:
            outside.setdefault(p[1], []).append(tuple(num(x) for x in p[2:6]))
except OSError:
    pass
by_run = {}
for r in rows:
    by_run.setdefault(r[1], {}).setdefault(r[2], {})[r[0]] = num(r[3])
if any("engine" in d for d in res.values()):
    print()
    print("rustio's RBD engine without a transport (crates/rbd/examples/rbd_loop.rs, 32 in flight, same stream; medians):")
    print("'engine' alone against rbd bench (no cache), IOPS; 'model': each request held outside librbd, between its completion")
    print("and the next submission, as long as rustio's were in the same round (asked; really held, ms), librbd's mean depth")
    print("under rustio and under the model, the model's IOPS and rustio against it.")
    print(f"{'workload':15} {'engine':>8} {'rbd bench':>10} {'engine/rbd':>11} {'outside ms':>11} {'(held)':>7} {'depth':>6} {'(model)':>8} {'model':>8} {'rustio/model':>13}   per-run rustio/model")
    for w, d in res.items():
        e, n, m, r = (med(d.get(k, [])) for k in ("engine", "rbd-nocache", "engine-model", "rustio"))
        o = outside.get(w, [])
        asked, dep, mdep, held = (med([v[i] for v in o]) for i in range(4))
        g = lambda v, s=1, p=2: "-" if v is None else f"{v / s:.{p}f}"
        runs_ = by_run.get(w, {})
        per = " ".join(q(runs_.get("rustio", {}).get(k), v) for k, v in runs_.get("engine-model", {}).items())
        print(f"{w:15} {f(e):>8} {f(n):>10} {q(e, n):>11} {g(asked, 1e3):>11} {g(held, 1e3):>7} {g(dep, 1, 1):>6} {g(mdep, 1, 1):>8} {f(m):>8} {q(r, m):>13}   {per}")
json.dump({"secs": secs, "size_mib": size, "runs": runs, "load_end": load, "load_1min": loads,
           "layout": layout, "iops": res, "cpu_us_per_io": cpu, "osd_depth": osd, "rustio_b_params": b_params, "rustio_b_bin": b_bin,
           "latency_split_ms": split, "outside_librbd_us": outside}, open(f"{out}/rbd.json", "w"), indent=1)
EOF
echo "results: $OUT/rbd.{txt,json}" >&2
