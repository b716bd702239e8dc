#!/usr/bin/env bash
# Start a throwaway single-node Ceph (pacific 16.2, Debian bookworm packages)
# cluster: 1 mon, 1 mgr, 1 OSD, loopback only, everything under $CEPH_DIR.
# rustio's copy of the tested shared script; used by tests/ceph/run-tests.sh. Changes:
# a default data dir of its own (an existing empty dir is accepted), an env file
# ($CEPH_DIR/env), per-daemon command files so daemon.sh can stop and restart single
# daemons for fault tests, and a [client] section that lowers the client-side heartbeat
# numbers the rbd engine uses to bound rados_osd_op_timeout (see docs/ceph.md), so the
# fault tests can use short timeouts.
#
# Env knobs:
#   CEPH_DIR        (default ${TMPDIR:-/tmp}/ceph-single-run)  - everything lives here
#   CEPH_AUTH       cephx|none (default cephx)
#   CEPH_OBJECTSTORE bluestore|memstore (default bluestore, sparse file)
#   CEPH_MON_PORT   msgr2 port (default 3300); msgr1 port = CEPH_MON_PORT_V1 (6789)
#   CEPH_OSD_SIZE_GB size of sparse bluestore block file (default 10)
#   CEPH_RBD_IMAGE  image to create (default rbd/test), CEPH_RBD_SIZE (1G)
#   CEPH_BENCH=1    run rbd bench (write+read) at the end
#   CEPH_TIMEOUT    seconds to wait for each readiness step (default 180)
#   CEPH_MIN_FREE_MB free space needed where $CEPH_DIR is (default 6144, memstore 256),
#                   checked before anything starts
#
# Afterwards: export CEPH_CONF=$CEPH_DIR/ceph.conf (keyring is referenced by it).
# Stop with stop.sh (kills only the recorded PIDs, removes $CEPH_DIR).
set -euo pipefail

DIR=${CEPH_DIR:-${TMPDIR:-/tmp}/rustio-ceph}
AUTH=${CEPH_AUTH:-cephx}
STORE=${CEPH_OBJECTSTORE:-bluestore}
V2PORT=${CEPH_MON_PORT:-3300}
V1PORT=${CEPH_MON_PORT_V1:-6789}
OSD_GB=${CEPH_OSD_SIZE_GB:-10}
IMAGE=${CEPH_RBD_IMAGE:-rbd/test}
IMAGE_SIZE=${CEPH_RBD_SIZE:-1G}
TMO=${CEPH_TIMEOUT:-180}
# bluestore's sparse block file grows with what is written and never shrinks (freed space
# is not punched out of it): run-tests.sh's cluster peaks at 4.6 GiB (serve.sh's
# iscsi-test-cu rounds), hence 6 GiB. memstore keeps the objects in RAM: only the monitor's
# store and the logs are on disk.
if [ "$STORE" = memstore ]; then MIN_FREE_MB=${CEPH_MIN_FREE_MB:-256}; else MIN_FREE_MB=${CEPH_MIN_FREE_MB:-6144}; fi
PY=/usr/bin/python3   # system python (ceph CLI + python3-rados live there)

T0=$(date +%s.%N)
ts() { awk -v t0="$T0" -v now="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "[%6.1fs] %s\n", now-t0, m}'; }
# The reason comes last, after the daemons' logs, so that a caller's `tail` of this
# script's output always shows it.
die() {
    tail -n 20 "$DIR"/log/*.log "$DIR"/log/*.stdout >&2 2>/dev/null || true
    if [ -e "$DIR/.ceph-single" ]; then
        echo "start.sh: clean up with: CEPH_DIR=$DIR $(dirname "$0")/stop.sh" >&2
    fi
    echo "start.sh: ERROR: $*" >&2
    exit 1
}

# Free space, in MiB, where the cluster lives: the OSD's sparse block file, the monitor's
# store and the logs take real space only as they are written, up to MIN_FREE_MB (above).
# A disk with less fails here, by name, instead of as a daemon dying at start or an OSD
# crashing on a full disk later. (What the caller builds or writes beside the cluster, such
# as run-tests.sh's test build, is the caller's to leave room for.)
free_dir=$DIR
until [ -d "$free_dir" ]; do free_dir=$(dirname "$free_dir"); done
[[ $MIN_FREE_MB =~ ^[0-9]+$ ]] || die "CEPH_MIN_FREE_MB must be a number of MiB, not '$MIN_FREE_MB'"
free_mb=$(df -Pk "$free_dir" 2>/dev/null | awk 'NR == 2 {print int($4 / 1024)}' || true)
if [ -n "$free_mb" ] && [ "$free_mb" -lt "$MIN_FREE_MB" ]; then
    die "only $free_mb MiB free on the file system of $free_dir; the cluster needs $MIN_FREE_MB MiB (CEPH_MIN_FREE_MB)"
fi
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    die "$DIR already exists and is not empty (run stop.sh first)"
fi
for port in "$V2PORT" "$V1PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port is already in use (another cluster? set CEPH_MON_PORT/CEPH_MON_PORT_V1)"
    fi
done
mkdir -p "$DIR"/{log,run,cmd,mon.a,mgr.x,osd.0}
touch "$DIR/.ceph-single"           # marker checked by stop.sh before rm -rf
: > "$DIR/pids"

CONF=$DIR/ceph.conf
KEYRING=$DIR/keyring
FSID=$(uuidgen)
OSD_UUID=$(uuidgen)
export CEPH_CONF=$CONF
CEPH="timeout 60 ceph --conf $CONF --connect-timeout 30"

if [ "$AUTH" = cephx ]; then
    AUTHLINES="auth cluster required = cephx
auth service required = cephx
auth client required = cephx"
else
    AUTHLINES="auth cluster required = none
auth service required = none
auth client required = none
auth supported = none"
fi

cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon initial members = a
mon host = [v2:127.0.0.1:$V2PORT,v1:127.0.0.1:$V1PORT]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
$AUTHLINES
auth allow insecure global id reclaim = false
keyring = $KEYRING
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
crash dir = $DIR/crash
# single OSD, no replication
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
# silence warnings that are expected on a throwaway 1-OSD cluster
mon warn on pool no redundancy = false
# The monitor's own disk checks compare free space with the file system's size, as a
# whole percentage: crit = 1 refused to start below 2 % free, 5 GiB of a 252 GiB disk. A
# CI run with less got exit 28 (ENOSPC) from ceph-mon and nothing in its log. start.sh
# checks instead, in MiB, the space this cluster needs (CEPH_MIN_FREE_MB, above) and says
# so by name; both monitor checks are off.
mon data avail warn = -1
mon data avail crit = -1
# faster readiness reporting
mgr stats period = 1

[mon]
mon data = $DIR/mon.\$id
mgr initial modules = iostat

[mgr]
mgr data = $DIR/mgr.\$id

[osd]
osd data = $DIR/osd.\$id
osd objectstore = $STORE
osd memory target = 1073741824
bluestore block create = true
bluestore block size = $((OSD_GB * 1024 * 1024 * 1024))
bluestore fsck on mount = false
bluestore fsck on mkfs = false
memstore device bytes = $((OSD_GB * 1024 * 1024 * 1024))
osd max object name len = 256
osd max object namespace len = 64

[client]
# Read only by clients (librados/librbd): daemons never read [client]. rustio's rbd engine,
# like tcmu-runner, raises rados_osd_op_timeout to at least heartbeat grace + interval + 5 s;
# these values let the fault tests use a 10 s op timeout.
osd heartbeat grace = 3
osd heartbeat interval = 2
EOF

ts "conf written (fsid $FSID, auth $AUTH, objectstore $STORE)"

# --- keys: one keyring holding every entity (like vstart.sh) ---
ceph-authtool --create-keyring "$KEYRING" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$KEYRING" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$KEYRING" --gen-key -n mgr.x \
    --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$KEYRING" --gen-key -n osd.0 \
    --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
chmod 600 "$KEYRING"

# --- monmap + mon ---
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$V2PORT,v1:127.0.0.1:$V1PORT]" \
    --set-min-mon-release 16 --enable-all-features "$DIR/monmap" >/dev/null
ceph-mon --conf "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$KEYRING" \
    > "$DIR/log/mon-mkfs.out" 2>&1 || die "ceph-mon --mkfs failed: $(cat "$DIR/log/mon-mkfs.out")"

start_daemon() {   # name, cmd...  (foreground daemon in background; record exact PID)
    local name=$1; shift
    printf '%q ' "$@" > "$DIR/cmd/$name"   # daemon.sh restarts it with the same command
    nohup "$@" >> "$DIR/log/$name.stdout" 2>&1 < /dev/null &
    local pid=$!
    echo "$name $pid" >> "$DIR/pids"
    sleep 0.2
    if ! kill -0 "$pid" 2>/dev/null; then
        reap "$pid"
        die "$name exited immediately ($REAPED): $(cat "$DIR/log/$name.stdout")"
    fi
}

# Sets REAPED to how a daemon this shell started ended. Not in $(...): only this shell,
# the daemon's parent, can wait for it. ceph-mon exits 28 (ENOSPC) when it finds its disk
# too full, before its log is flushed: the status is then the only trace.
reap() {
    local rc=0
    wait "$1" 2>/dev/null || rc=$?
    if [ "$rc" -gt 128 ]; then REAPED="killed by signal $((rc - 128))"; else REAPED="exit status $rc"; fi
}

wait_for() {       # description, command...
    local what=$1; shift
    local deadline=$(( $(date +%s) + TMO ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || die "timeout (${TMO}s) waiting for $what"
        local name pid
        while read -r name pid; do
            if ! kill -0 "$pid" 2>/dev/null; then
                reap "$pid"
                die "$name (pid $pid) died while waiting for $what ($REAPED)"
            fi
        done < "$DIR/pids"
        sleep 1
    done
    ts "$what"
}

start_daemon mon.a ceph-mon -f --conf "$CONF" -i a
wait_for "mon up" $CEPH mon stat

# --- mgr ---
start_daemon mgr.x ceph-mgr -f --conf "$CONF" -i x

# --- osd ---
OSD_ID=$($CEPH osd new "$OSD_UUID")
[ "$OSD_ID" = 0 ] || die "unexpected osd id $OSD_ID"
ceph-osd --conf "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" \
    > "$DIR/log/osd-mkfs.out" 2>&1 || die "ceph-osd --mkfs failed: $(tail -20 "$DIR/log/osd-mkfs.out")"
ts "osd mkfs done ($STORE)"
start_daemon osd.0 ceph-osd -f --conf "$CONF" -i 0

osd_up_in() {
    $CEPH osd stat -f json | $PY -c 'import json,sys; d=json.load(sys.stdin); d=d.get("osdmap",d); sys.exit(0 if d["num_up_osds"]==1 and d["num_in_osds"]==1 else 1)'
}
mgr_active() {
    $CEPH mgr stat -f json | $PY -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("available") else 1)'
}
wait_for "osd.0 up+in" osd_up_in
wait_for "mgr active" mgr_active

# --- rbd pool + image ---
$CEPH osd pool create rbd 8 8 >/dev/null
ts "pool rbd created"
timeout 60 rbd --conf "$CONF" pool init rbd
ts "pool rbd initialised"
pgs_clean() {
    $CEPH pg stat -f json | $PY -c '
import json,sys
d=json.load(sys.stdin); d=d.get("pg_summary",d)
n=d["num_pgs"]; ok=sum(s["num"] for s in d.get("num_pg_by_state",[]) if s["name"]=="active+clean")
sys.exit(0 if n>0 and ok==n else 1)'
}
wait_for "all PGs active+clean" pgs_clean
timeout 60 rbd --conf "$CONF" create "$IMAGE" --size "$IMAGE_SIZE"
ts "image $IMAGE ($IMAGE_SIZE) created"

# HEALTH_OK is nice-to-have; HEALTH_WARN with the OSD up/in is acceptable.
for _ in $(seq 30); do
    $CEPH health | grep -q '^HEALTH_OK' && break
    sleep 1
done
ts "health: $($CEPH health detail | tr '\n' ' ')"
$CEPH -s
{
    echo "CEPH_DIR=$DIR"
    echo "CEPH_CONF=$CONF"
    echo "CEPH_MON_HOST=[v2:127.0.0.1:$V2PORT,v1:127.0.0.1:$V1PORT]"
} > "$DIR/env"
ts "cluster ready: export CEPH_CONF=$CONF"

if [ "${CEPH_BENCH:-0}" = 1 ]; then
    ts "rbd bench write"
    timeout 300 rbd --conf "$CONF" bench --io-type write --io-size 4K --io-threads 16 --io-total 64M "$IMAGE"
    ts "rbd bench read (sequential: reads back the 64M just written)"
    timeout 300 rbd --conf "$CONF" bench --io-type read --io-size 4K --io-threads 16 --io-total 64M "$IMAGE"
    ts "bench done"
fi
