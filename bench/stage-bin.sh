# bench/stage-bin.sh — what the VM stages (bench/lio/run.sh, bench/tcmu/run.sh, bench/rbd/vm.sh)
# share; sourced by each.
#
# The VM guest (tests/vm/run.sh) sees the host's root read-only, but its /tmp, /var/tmp,
# /run and /root are fresh tmpfs (and a binary under /tmp made tests/vm/run.sh share the
# host's /tmp read-only, so the guest could not write there): a binary from one of those
# is copied into BINDIR, a directory the caller shares into the guest (--share).
stage_bin() { # BINDIR PATH [NAME] -> a path the guest can see (NAME: the copy's name)
  local name=${3:-${2##*/}}
  case "$(realpath "$2")" in
    /tmp/*|/var/tmp/*|/run/*|/root/*)
      mkdir -p "$1" && cp "$2" "$1/$name" && echo "$1/$name" ;;
    *) realpath "$2" ;;
  esac
}

# Boots the stage's VM and reports it: runs `tests/vm/run.sh VM_ARGS... GUEST ARGS...` with
# the console in OUT/console.txt, shows the console lines matching PROGRESS_RE, appends the
# end of the run to OUT/host.env, then `python3 REPORT OUT/vm/out OUT/JSON_NAME --host-info
# OUT/host.env`. Exits with the VM's status (1 if it left no OUT/vm/out/DONE_FILE). Uses
# the caller's root and t0 (the stage's start, `date +%s`).
#   vm_stage_run NAME OUT GUEST REPORT JSON_NAME PROGRESS_RE DONE_FILE -- VM_ARGS... -- ARGS...
vm_stage_run() {
  local name=$1 out=$2 guest=$3 report=$4 json=$5 progress=$6 done_file=$7 rc=0
  shift 7
  [[ ${1:-} == -- ]] && shift
  local vm_args=()
  while (($#)) && [[ $1 != -- ]]; do vm_args+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  # tests/vm/run.sh keeps what an earlier run left in OUT/vm/out: a VM that fails early
  # must not leave that to be reported as its own.
  rm -rf "$out/vm/out"
  rm -f "$out/$json" "$out/${json%.json}.txt"
  "$root/tests/vm/run.sh" "${vm_args[@]}" "$guest" "$@" >"$out/console.txt" 2>&1 </dev/null || rc=$?
  grep -E "$progress" "$out/console.txt" >&2 || true
  {
    echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "vm_rc=$rc"
    echo "wall_s=$(($(date +%s) - t0))"
  } >>"$out/host.env"
  if [[ ! -e "$out/vm/out/$done_file" ]]; then
    echo "$name bench: the VM produced no output (exit $rc); see $out/console.txt" >&2
    exit "$((rc ? rc : 1))"
  fi
  python3 "$report" "$out/vm/out" "$out/$json" --host-info "$out/host.env"
  echo "$name bench: VM exit $rc, $(($(date +%s) - t0)) s; results in $out/${json%.json}.{json,txt}" >&2
  exit "$rc"
}

# Builds what RUSTIO_BIN (and, unless --no-loadgen, LOADGEN_BIN) does not name (release
# builds; CARGO_TARGET_DIR defaults to /work/target-bench; CARGO_ARGS go to rustio's
# build, e.g. --features rbd), checks them, and stages them into BINDIR (stage_bin, the
# copy of rustio named `rustio`): RUSTIO_BIN and LOADGEN_BIN then name paths the guest can
# see. Uses the caller's root.
#   vm_stage_bins NAME BINDIR [--no-loadgen] [CARGO_ARGS...]
vm_stage_bins() {
  local name=$1 bindir=$2 loadgen=1
  shift 2
  [[ ${1:-} == --no-loadgen ]] && { loadgen=0; shift; }
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
  if [[ -z "${RUSTIO_BIN:-}" ]]; then
    echo "$name bench: cargo build --release -p rustio${*:+ $*} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
    (cd "$root" && cargo build --release -p rustio --bin rustio "$@") >&2 || exit $?
    RUSTIO_BIN=$CARGO_TARGET_DIR/release/rustio
  fi
  [[ -x "$RUSTIO_BIN" ]] || { echo "$name bench: no rustio binary at $RUSTIO_BIN" >&2; exit 1; }
  RUSTIO_BIN=$(stage_bin "$bindir" "$RUSTIO_BIN" rustio)
  export RUSTIO_BIN
  ((loadgen)) || return 0
  if [[ -z "${LOADGEN_BIN:-}" ]]; then
    echo "$name bench: cargo build --release of bench/loadgen (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
    cargo build --release --manifest-path "$root/bench/loadgen/Cargo.toml" >&2 || exit $?
    LOADGEN_BIN=$CARGO_TARGET_DIR/release/loadgen
  fi
  [[ -x "$LOADGEN_BIN" ]] || { echo "$name bench: no loadgen binary at $LOADGEN_BIN" >&2; exit 1; }
  LOADGEN_BIN=$(stage_bin "$bindir" "$LOADGEN_BIN")
  export LOADGEN_BIN
}
