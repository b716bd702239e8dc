#!/usr/bin/env bash
# bench/rbd/run.sh — Ceph RBD: `rustio serve` (rbd LUN) vs tgtd's bs_rbd vs `rbd bench`
# directly, on one throwaway single-node Ceph 16.2 cluster on 127.0.0.1, in one run.
#
#   bench/rbd/run.sh [--quick] [--out DIR]
#
# Same image for every contender (pre-filled, so no read hits unallocated space), same
# client (bench/loadgen, our iSCSI load generator) for both iSCSI targets; `rbd bench`
# is the librbd ceiling without any iSCSI in between. Prints a table with the ratios
# rustio/tgt and rustio/rbd-bench, and writes rbd.json. Env: RUSTIO_BIN (a rustio built
# with --features rbd; default: build it), RUSTIO_ARGS (extra `rustio serve` options),
# CEPH_DIR (default: a temp dir), TIME (s per job).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
QUICK=0
OUT=
while (($#)); do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "bench/rbd: unknown argument $1" >&2; exit 2 ;;
    esac
done
TIME=${TIME:-$([ "$QUICK" = 1 ] && echo 3 || echo 10)}
SIZE_MB=$([ "$QUICK" = 1 ] && echo 256 || echo 1024)
OUT=${OUT:-$ROOT/bench/out/rbd-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export CEPH_DIR=${CEPH_DIR:-$(mktemp -d /tmp/rustio-bench-ceph.XXXXXX)}
export CEPH_MON_PORT=${CEPH_MON_PORT:-3420} CEPH_MON_PORT_V1=${CEPH_MON_PORT_V1:-6820}
TGTD= RUSTIO= CTL=
cleanup() {
    [ -n "$RUSTIO" ] && kill "$RUSTIO" 2>/dev/null && wait "$RUSTIO" 2>/dev/null
    [ -n "$TGTD" ] && kill -9 "$TGTD" 2>/dev/null && wait "$TGTD" 2>/dev/null
    [ -n "$CTL" ] && rm -f "/var/run/tgtd/socket.$CTL" "/var/run/tgtd/socket.$CTL.lock"
    bash "$ROOT/tests/ceph/stop.sh" >/dev/null 2>&1
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

# --- cluster and image ---------------------------------------------------------------------------
say "starting Ceph in $CEPH_DIR"
bash "$ROOT/tests/ceph/start.sh" >"$OUT/ceph-start.log" 2>&1 || { tail -20 "$OUT/ceph-start.log" >&2; exit 2; }
CONF=$CEPH_DIR/ceph.conf
IMG=rbd/bench
rbd --conf "$CONF" create --size "${SIZE_MB}M" "$IMG" || exit 2
say "pre-filling $IMG (${SIZE_MB} MiB)"
rbd --conf "$CONF" bench --io-type write --io-pattern seq --io-size 4M --io-threads 8 \
    --io-total "${SIZE_MB}M" "$IMG" >"$OUT/prefill.log" 2>&1 || exit 2

# --- rbd bench (librbd directly) ----------------------------------------------------------------
rbd_bench() { # type pattern size threads → IOPS
    local total=$(( SIZE_MB / 4 ))M
    [ "$3" != 4K ] && total=${SIZE_MB}M
    rbd --conf "$CONF" bench --io-type "$1" --io-pattern "$2" --io-size "$3" --io-threads "$4" \
        --io-total "$total" "$IMG" 2>&1 | tee -a "$OUT/rbd-bench.log" |
        awk '/^elapsed:/ { for (i = 1; i <= NF; i++) if ($i == "ops/sec:") print $(i + 1) }'
}

# --- iSCSI targets ------------------------------------------------------------------------------------
PR=23470 PT=23471
BYTES=$((SIZE_MB << 20))
cat >"$OUT/rustio.json" <<EOF
{"storage_objects": [{"plugin": "user", "name": "bench", "size": $BYTES,
   "config": "rbd/$IMG;conf=$CONF"}],
 "targets": [{"wwn": "iqn.2024-01.org.rustio.bench:rbd", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
   "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
   "luns": [{"index": 0, "storage_object": "/backstores/user/bench"}],
   "portals": [{"ip_address": "127.0.0.1", "port": $PR}]}]}]}
EOF
"$RUSTIO_BIN" serve --config "$OUT/rustio.json" --log warn ${RUSTIO_ARGS:-} >"$OUT/rustio.log" 2>&1 &
RUSTIO=$!
mkdir -p /var/run/tgtd
CTL=$((20000 + RANDOM % 9000))
tgtd -f -C "$CTL" --iscsi "portal=127.0.0.1:$PT" >"$OUT/tgtd.log" 2>&1 &
TGTD=$!
for _ in $(seq 100); do [ -S "/var/run/tgtd/socket.$CTL" ] && break; sleep 0.1; done
tgtadm -C "$CTL" --lld iscsi --op new --mode target --tid 1 -T iqn.2024-01.org.rustio.bench:tgt-rbd &&
    tgtadm -C "$CTL" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 --bstype rbd \
        --backing-store "$IMG" --bsopts "conf=$CONF" &&
    tgtadm -C "$CTL" --lld iscsi --op bind --mode target --tid 1 --initiator-address ALL ||
    { echo "bench/rbd: tgtd setup failed (see $OUT/tgtd.log)" >&2; exit 2; }
for p in $PR $PT; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.2; done
done
kill -0 "$RUSTIO" 2>/dev/null || { cat "$OUT/rustio.log" >&2; exit 2; }

lg() { # port iqn lun rw pattern bs → IOPS
    "$LOADGEN" run --portal "127.0.0.1:$1" --target "$2" --lun "$3" --initiator iqn.2024-01.org.rustio:bench \
        --rw "$4" --pattern "$5" --bs "$6" --qd 32 --time "$TIME" 2>>"$OUT/loadgen.err" |
        tee -a "$OUT/loadgen.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["iops"])'
}

# --- the runs: each workload against each contender, back to back ------------------------------------
declare -A R
WL=("randread-4k:read:rand:4k:4K" "randwrite-4k:write:rand:4k:4K" "seqread-128k:read:seq:128k:128K")
for w in "${WL[@]}"; do
    IFS=: read -r name rw pat bs rbs <<<"$w"
    say "$name: rustio"; R[$name,rustio]=$(lg $PR iqn.2024-01.org.rustio.bench:rbd 0 "$rw" "$pat" "$bs")
    say "$name: tgt";    R[$name,tgt]=$(lg $PT iqn.2024-01.org.rustio.bench:tgt-rbd 1 "$rw" "$pat" "$bs")
    say "$name: rbd bench"; R[$name,rbd]=$(rbd_bench "$rw" "$pat" "$rbs" 32)
done

# --- report ------------------------------------------------------------------------------------------
python3 - "$OUT" "$TIME" "$SIZE_MB" "$(cat /proc/loadavg)" <<EOF | tee "$OUT/rbd.txt"
import json, sys
out, secs, size, load = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
raw = {$(for w in "${WL[@]}"; do n=${w%%:*}; printf '"%s": {"rustio": "%s", "tgt": "%s", "rbd": "%s"},' "$n" "${R[$n,rustio]}" "${R[$n,tgt]}" "${R[$n,rbd]}"; done)}
def num(v):
    try: return float(v)
    except ValueError: return None
res = {w: {k: num(v) for k, v in d.items()} for w, d in raw.items()}
print(f"RBD stage: single-node Ceph 16.2 on 127.0.0.1, image {size} MiB pre-filled, QD 32, {secs:.0f} s per job; load {load.split()[0:3]}")
print(f"{'workload':15} {'rustio serve':>13} {'tgt bs_rbd':>11} {'rbd bench':>10} {'rustio/tgt':>11} {'rustio/rbd':>11}   (IOPS)")
for w, d in res.items():
    r, t, b = d["rustio"], d["tgt"], d["rbd"]
    f = lambda v: "-" if v is None else f"{v:.0f}"
    q = lambda a, c: "-" if a is None or not c else f"{a / c:.2f}x"
    print(f"{w:15} {f(r):>13} {f(t):>11} {f(b):>10} {q(r, t):>11} {q(r, b):>11}")
json.dump({"secs": secs, "size_mib": size, "load": load, "iops": res}, open(f"{out}/rbd.json", "w"), indent=1)
EOF
echo "results: $OUT/rbd.{txt,json}" >&2
