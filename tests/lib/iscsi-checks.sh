# shellcheck shell=bash
# Shared steps of the suites that check `rustio serve` with independent iSCSI clients
# (tests/libiscsi/run.sh, tests/serve/qcow2.sh, tests/ceph/serve.sh, tests/scst/serve.sh,
# tests/abuse/run.sh, tests/ceph/gw-lib.sh for the gateway-group scripts). Others take
# single helpers: bench/rbd/guest-vm.sh start_server and port_open;
# tests/ceph/guest-multipath.sh, tests/serve/kernel-guest.sh, tests/ceph/run-tests.sh,
# bench/lio/guest-bench.sh and bench/rbd/run.sh port_open; tests/ceph/multipath-vm.sh,
# tests/serve/kernel-initiator.sh and tests/lio/run-vm.sh release_rustio. Source it after
# defining (port_open and release_rustio need none of them):
#   ok NAME / bad NAME   report one check (each suite keeps its own PASS/FAIL format)
#   log TEXT             print a line
#   WORK                 the suite's scratch directory
# Everything here talks to 127.0.0.1 only.

# Installs (through the one install script, .ci/install-deps.sh) the iSCSI clients and
# qemu-img with iscsi:// when one is missing. Exits 2 when that is impossible.
need_iscsi_clients() {
    # KEEP_LOGS=1 makes the caller keep WORK (with apt.log) at exit.
    # shellcheck disable=SC2034
    "$ROOT/.ci/install-deps.sh" base >"$WORK/apt.log" 2>&1 ||
        { cat "$WORK/apt.log"; log "installing the base package set failed"; KEEP_LOGS=1; exit 2; }
}

# release_rustio VAR [FEATURES]: keeps the binary named by $VAR when VAR is set, else
# builds rustio (release, with the cargo FEATURES if given) from the checkout ROOT and sets
# VAR to it. Returns 1 on a failed build or when $VAR is no executable. Needs only ROOT.
release_rustio() {
    local var=$1 features=${2:-} dir=${CARGO_TARGET_DIR:-$ROOT/target}
    # cargo runs in ROOT: a relative CARGO_TARGET_DIR is relative to it.
    [[ $dir == /* ]] || dir=$ROOT/$dir
    if [ -z "${!var:-}" ]; then
        (cd "$ROOT" && cargo build --release -q -p rustio ${features:+--features "$features"}) || return 1
        printf -v "$var" '%s' "$dir/release/rustio"
    fi
    [ -x "${!var}" ]
}

# Sets RUSTIO_BIN (release_rustio). Exits 2 on a failed build or a missing binary.
need_rustio_bin() {
    [ -n "${RUSTIO_BIN:-}" ] || log "building rustio (release)"
    release_rustio RUSTIO_BIN || { log "no rustio binary (build failed, or none at ${RUSTIO_BIN:-the target dir})"; exit 2; }
}

# True once something accepts connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_server BIN CONFIG PORT LOG [TENTHS]: starts `BIN serve --config CONFIG` (plus
# $RUSTIO_SERVE_ARGS, split on spaces, e.g. "--sendfile-min 512") in the
# background (its PID in SERVER) and waits up to TENTHS/10 s (default 10 s) for the port.
# Fails (returns 1) if the port was already taken, the server died, or it never listened.
start_server() {
    local bin=$1 config=$2 port=$3 out=$4 tenths=${5:-100}
    if port_open "$port"; then log "127.0.0.1:$port is in use (set PORT)"; return 1; fi
    # shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
    "$bin" serve --config "$config" --log warn ${RUSTIO_SERVE_ARGS:-} >"$out" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 "$tenths"); do
        port_open "$port" && return 0
        kill -0 "$SERVER" 2>/dev/null || break
        sleep 0.1
    done
    sed 's/^/    /' "$out" | tail -20
    return 1
}

# stop_server [TENTHS]: SIGTERM to SERVER, waits up to TENTHS/10 s (default 10 s) for it
# to exit; returns 0 if it stopped by itself in time. Clears SERVER.
stop_server() {
    local tenths=${1:-100} stopped=1
    [ -n "${SERVER:-}" ] || return 0
    kill -TERM "$SERVER" 2>/dev/null
    for _ in $(seq 1 "$tenths"); do
        kill -0 "$SERVER" 2>/dev/null || { stopped=0; break; }
        sleep 0.1
    done
    [ "$stopped" = 0 ] || kill -KILL "$SERVER" 2>/dev/null
    wait "$SERVER" 2>/dev/null
    SERVER=""
    return "$stopped"
}

# expect_ok NAME CMD... / expect_fail NAME CMD...: one check on CMD's exit status; the
# tail of its output is shown when the check fails.
expect_ok() {
    local d=$1; shift
    if "$@" >"$WORK/out" 2>&1; then ok "$d"; else bad "$d"; sed 's/^/    /' "$WORK/out" | tail -5; fi
}
expect_fail() {
    local d=$1; shift
    if "$@" >"$WORK/out" 2>&1; then bad "$d (unexpectedly succeeded)"; sed 's/^/    /' "$WORK/out" | tail -5; else ok "$d"; fi
}

# qemu_round_trip NAME1 NAME2 NAME3 NAME4 URL: 32 MiB of random data (left in
# $WORK/random.img) written to the iSCSI LUN at URL with qemu-img (check NAME1), compared
# over iSCSI (NAME2), read back (NAME3) and compared bytewise (NAME4).
qemu_round_trip() {
    local n1=$1 n2=$2 n3=$3 n4=$4 url=$5 t
    head -c $((32 * 1024 * 1024)) /dev/urandom >"$WORK/random.img"
    t=$(date +%s)
    expect_ok "$n1" qemu-img convert -n -f raw -O raw "$WORK/random.img" "$url"
    expect_ok "$n2" qemu-img compare -f raw -F raw "$WORK/random.img" "$url"
    expect_ok "$n3" qemu-img convert -f raw -O raw "$url" "$WORK/back.img"
    expect_ok "$n4" cmp -n $((32 * 1024 * 1024)) "$WORK/random.img" "$WORK/back.img"
    log "    qemu round trip: $(( $(date +%s) - t ))s"
}

# run_iscsi_test_cu NAME URL INIT INIT2 [TIMEOUT [URL2]]: libiscsi's conformance suite
# with --dataloss (filter CU_FILTER, default ALL); one check NAME that passes only when
# tests ran and none failed. With URL2, a second path to the same logical unit: the
# multipath mode (libiscsi checks both report the same identifiers, runs MultipathIO and
# uses URL2 as the second initiator's path). The full log is kept in
# /tmp/rustio-<NAME>.log on failure.
run_iscsi_test_cu() {
    local name=$1 url=$2 init=$3 init2=$4 limit=${5:-0} url2=${6:-} t rc summary cu_ran cu_passed cu_failed
    local filter=() urls=("$url")
    [ -n "$url2" ] && urls+=("$url2")
    [ "${CU_FILTER:-ALL}" != ALL ] && filter=(-t "$CU_FILTER")
    log "running iscsi-test-cu (${CU_FILTER:-ALL}) for $name"
    t=$(date +%s)
    timeout "$limit" iscsi-test-cu --dataloss -n -i "$init" -I "$init2" "${filter[@]}" "${urls[@]}" >"$WORK/cu.log" 2>&1
    rc=$?
    summary=$(grep -A3 "Run Summary" "$WORK/cu.log" | awk '$1 == "tests" {print $3, $4, $5}')
    read -r cu_ran cu_passed cu_failed <<<"$summary"
    log "iscsi-test-cu: ran ${cu_ran:-?} passed ${cu_passed:-?} failed ${cu_failed:-?} ($(( $(date +%s) - t ))s, exit $rc)"
    grep -o "Suite [A-Za-z0-9_-]*, Test [A-Za-z0-9_-]* had failures" "$WORK/cu.log" | sort -u | sed 's/^/    /'
    if [ -n "${cu_failed:-}" ] && [ "$cu_failed" = 0 ] && [ "${cu_ran:-0}" -gt 0 ]; then
        ok "$name: 0 of $cu_ran failed"
    else
        bad "$name: ${cu_failed:-?} failed"
        cp "$WORK/cu.log" "/tmp/rustio-$name.log" 2>/dev/null && log "    full log: /tmp/rustio-$name.log"
    fi
}
