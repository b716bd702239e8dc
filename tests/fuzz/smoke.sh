#!/usr/bin/env bash
# CI smoke run of every cargo-fuzz target under fuzz/: builds them all once, then runs
# each for a short bounded time seeded from its committed corpus (fuzz/corpus/<target>).
# Prints one line per target:
#   PASS fuzz-<target> (N execs)
#   FAIL fuzz-<target> <why>  (a crash reproducer is kept and its path printed)
# and exits non-zero when anything failed. The long recorded campaign is described in
# fuzz/README.md; this run only proves the targets build, the corpus still replays
# without a crash, and a few seconds of mutation find nothing obvious.
#
# Environment:
#   FUZZ_SECS     seconds of fuzzing per target (default 15)
#   FUZZ_TARGETS  space-separated subset of targets (default: every target)
#   KEEP_LOGS=1   keep the work directory
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
FUZZ_DIR=$ROOT/fuzz
SECS=${FUZZ_SECS:-15}
# Same flags for build and run, so `cargo fuzz run` does not rebuild: optimised, debug
# assertions on (integer overflow panics), no sanitizer (the crates under test are safe
# Rust outside a few audited FFI/mmap modules; ASan would halve the exec rate).
FLAGS=(-O -a -s none)
WORK=$(mktemp -d /tmp/rustio-fuzz-smoke.XXXXXX)
FAILS=0
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never

cleanup() {
    if [ "${KEEP_LOGS:-0}" = 1 ] || [ "$FAILS" -ne 0 ]; then
        echo "fuzz smoke: logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "FAIL fuzz-toolchain (no nightly toolchain: rustup toolchain install nightly)"
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz"
    if ! cargo install cargo-fuzz --locked >"$WORK/install.log" 2>&1; then
        tail -20 "$WORK/install.log"
        echo "FAIL fuzz-install (cargo install cargo-fuzz failed)"
        exit 1
    fi
fi

cd "$ROOT" || exit 1
TARGETS=${FUZZ_TARGETS:-$(cargo +nightly fuzz list --fuzz-dir "$FUZZ_DIR" 2>/dev/null)}
if [ -z "$TARGETS" ]; then
    echo "FAIL fuzz-list (no targets found under $FUZZ_DIR)"
    exit 1
fi

t0=$(date +%s)
if ! cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" "${FLAGS[@]}" >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"
    for t in $TARGETS; do echo "FAIL fuzz-$t (build failed, see $WORK/build.log)"; done
    FAILS=1
    exit 1
fi
echo "fuzz smoke: built $(echo "$TARGETS" | wc -w) targets in $(( $(date +%s) - t0 ))s"

for t in $TARGETS; do
    new=$WORK/corpus-$t
    art=$WORK/artifacts-$t/
    mkdir -p "$new" "$art" "$FUZZ_DIR/corpus/$t"
    log=$WORK/$t.log
    # The first corpus directory receives new inputs; the committed one is only read.
    cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" "${FLAGS[@]}" "$t" "$new" "$FUZZ_DIR/corpus/$t" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$art" \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    crash=$(ls "$art" 2>/dev/null | head -1)
    if [ "$rc" -eq 0 ] && [ -z "$crash" ] && [ -n "$execs" ] && [ "$execs" -gt 0 ]; then
        echo "PASS fuzz-$t ($execs execs)"
    else
        FAILS=$((FAILS + 1))
        why="exit $rc"
        [ -n "$crash" ] && why="$why, reproducer $art$crash"
        grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | sed 's/^/    /'
        echo "FAIL fuzz-$t ($why, ${execs:-0} execs, log $log)"
    fi
done
echo "fuzz smoke: total $(( $(date +%s) - t0 ))s, $FAILS failed"
[ "$FAILS" -eq 0 ]
