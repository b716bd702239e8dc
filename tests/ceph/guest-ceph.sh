# shellcheck shell=bash
# A throwaway single-node Ceph cluster (tests/ceph/start.sh, memstore: the OSD keeps the
# data in RAM) inside a tests/vm/run.sh guest, for the guest scripts that need one
# (tests/ceph/guest-multipath.sh, bench/rbd/guest-vm.sh). Source it after setting ROOT;
# CEPH_DIR must be exported when guest_ceph_start is called. Stop the cluster with
# tests/ceph/stop.sh.
#
#   guest_ceph_start SCRATCH LOG IMAGE SIZE_MB
#       starts the cluster with one image (pool/name, SIZE_MB MiB), start.sh's output in
#       LOG; prints its "cluster ready" and "health" lines. SCRATCH holds a `timeout` shim.
#
# start.sh bounds every ceph/rbd CLI call by `timeout 60`; under TCG on a busy host one
# call can take longer (measured: `ceph osd new` > 60 s at host load 19, when the monitor
# alone needed 70 s to come up). The shim, first on start.sh's PATH, stretches those
# bounds by MP_CLI_STRETCH (default 5); start.sh's readiness waits get 600 s.

# The guest's devtmpfs has no /dev/fd (udev/systemd make it), which bash's process
# substitution needs: without it stop.sh cannot read its pid list and leaves the daemons.
if [[ ${RUSTIO_VM:-} == 1 && ! -e /dev/fd ]]; then ln -s /proc/self/fd /dev/fd; fi

guest_ceph_start() {
  local scratch=$1 log=$2 image=$3 size_mb=$4
  ip link set lo up 2>/dev/null
  mkdir -p "$CEPH_DIR" "$scratch/shim"
  cat >"$scratch/shim/timeout" <<'SH'
#!/bin/bash
if [[ $# -ge 2 && $1 =~ ^[0-9]+$ ]]; then d=$(($1 * ${MP_CLI_STRETCH:-5})); shift; exec /usr/bin/timeout "$d" "$@"; fi
exec /usr/bin/timeout "$@"
SH
  chmod +x "$scratch/shim/timeout"
  PATH="$scratch/shim:$PATH" CEPH_OBJECTSTORE=memstore CEPH_TIMEOUT=600 CEPH_RBD_IMAGE="$image" \
    CEPH_RBD_SIZE="${size_mb}M" "$ROOT/tests/ceph/start.sh" >"$log" 2>&1 ||
    { tail -30 "$log"; return 1; }
  grep -E '^\[ *[0-9.]+s\] (cluster ready|health)' "$log"
}
