#!/bin/bash
# Guest script: rustio's TCMU runner against the real kernel (target_core_user + tcm_loop).
#
# Run from the host (build first; the guest runs the binary from the host's disk):
#   tests/tcmu/run-vm.sh [SECTION...]
# or directly:
#   tests/vm/run.sh --timeout 1500 tests/tcmu/guest-tcmu.sh [SECTION...]
#
# Sections (default: all, in this order; each prints PASS/FAIL lines):
#   fio        runner + user:file backstore (raw configfs) + tcm_loop LUN → fio crc32c
#              verify, random and sequential, 4k–1M, iodepth 32; metrics endpoint
#   ext4       mkfs.ext4, files + sha256 across unmount/remount
#   recovery   kill -9 of the runner during fio, restart → fio completes and verifies
#   tmr        sg_reset -d (LUN reset) while fio has I/O queued → fio verifies
#   reconfig   attrib/dev_size grows the file + CAPACITY DATA HAS CHANGED; emulate_write_cache
#              toggles WCE (sd cache_type)
#   qcow       qemu-img qcow2 image on tmpfs served as user:qcow (cfg = path, as tcmu-runner),
#              then one on ext4 with ;cache=none (guest data O_DIRECT)
#              behind its own tcm_loop port: fio crc32c verify; after the device is removed,
#              qemu-img check is clean and qemu-img compare matches what the LUN returned;
#              an image whose size differs from dev_size is refused
#   bad        unknown handler subtype, malformed cfg → enable refused and logged
#   targetcli  targetcli creates user:file (and is refused a bad cfgstring) via D-Bus
#   stop       SIGTERM: clean stop (drained, unblocked), exit status 0
#
# Environment: RUSTIO_BIN (default $CARGO_TARGET_DIR/debug/rustio), FIO_SIZE (64M).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$ROOT/tests/vm/guest-lib.sh"

RUSTIO=${RUSTIO_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/rustio}
OUT=${RUSTIO_VM_OUT:-/tmp}
CORE=$LIO/core
FIO_SIZE=${FIO_SIZE:-64M}
LOG=$OUT/runner.log
METRICS=127.0.0.1:9573
LOOP_WWN=naa.5001405000000001
LOOP_NEXUS=naa.5001405000000002
DEV=
SECTIONS=("$@")
((${#SECTIONS[@]})) || SECTIONS=(fio ext4 recovery tmr reconfig qcow bad targetcli stop)

# The system bus, with the repository's policy (dist/dbus-1/system.d) as the only rule that
# lets anyone own org.kernel.TCMUService1 (the distribution's system.d — which may hold
# tcmu-runner.conf — is not read). Falls back to the standard system bus.
BUS_CONF=/tmp/rustio-system-bus.conf
start_bus() {
  [[ -S /run/dbus/system_bus_socket ]] && return 0
  mkdir -p /run/dbus
  cat >"$BUS_CONF" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <fork/>
  <auth>EXTERNAL</auth>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>$ROOT/dist/dbus-1/system.d</includedir>
</busconfig>
CONF
  if dbus-daemon --config-file="$BUS_CONF" >/tmp/bus.err 2>&1 &&
    vm_wait 20 test -S /run/dbus/system_bus_socket; then
    echo dist >/tmp/bus.kind
    return 0
  fi
  cat /tmp/bus.err
  echo system >/tmp/bus.kind
  vm_start_dbus
}

want() { local s; for s in "${SECTIONS[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

# The runner's pid and exit status go to files: checks run in subshells (vm_check), so a
# shell variable set there would not be seen by later checks.
start_runner() {
  rm -f /tmp/runner.pid /tmp/runner.rc
  STARTS=$(grep -c "listening for TCMU netlink events" "$LOG" 2>/dev/null || true)
  echo "${STARTS:-0}" >/tmp/runner.starts
  # Working directory /var/tmp: relative file handler paths land there (the root is
  # read-only in the guest).
  (cd /var/tmp && exec bash -c '"$@" & echo $! >/tmp/runner.pid; wait $!; echo $? >/tmp/runner.rc' _ \
    "$RUSTIO" --log "${RUNNER_LOG_LEVEL:-info}" runner --metrics "$METRICS" --cmd-timeout 20 \
    >>"$LOG" 2>&1) &
  vm_wait 10 test -s /tmp/runner.pid
}
runner_pid() { cat /tmp/runner.pid 2>/dev/null; }
runner_alive() { local p; p=$(runner_pid) && [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }
runner_listening() {
  local n; n=$(grep -c "listening for TCMU netlink events" "$LOG" 2>/dev/null || true)
  ((n > $(cat /tmp/runner.starts))) && grep -q "existing devices opened" "$LOG"
}
wait_listening() { vm_wait 90 runner_listening || { tail -20 "$LOG"; return 1; }; }
runner_kill() { # SIGNAL: signal the runner and wait until it is gone
  local p; p=$(runner_pid); kill -"$1" "$p" || return 1
  vm_wait 90 bash -c "! kill -0 $p 2>/dev/null"
}

# create_user_dev HBA NAME DEV_CONFIG SIZE: raw configfs writes, as `rustio backstore
# create user` / targetcli / user_create.sh do.
create_user_dev() {
  local d=$CORE/user_$1/$2
  mkdir -p "$d" || return 1
  echo -n "dev_config=$3" >"$d/control" || return 1
  echo -n "dev_size=$4" >"$d/control" || return 1
  echo -n "hw_max_sectors=2048" >"$d/control" || return 1
  echo -n 1 >"$d/enable"
}

uio_for() { grep -l "/$1/" /sys/class/uio/uio*/name 2>/dev/null | head -1; }

export_loop() {
  local t=$LIO/loopback/$LOOP_WWN/tpgt_1
  mkdir -p "$t" || return 1
  # tcm_loop: the nexus must exist before a LUN is linked, or no disk appears.
  echo -n "$LOOP_NEXUS" >"$t/nexus" || return 1
  mkdir -p "$t/lun/lun_0" || return 1
  ln -s "$1" "$t/lun/lun_0/${1##*/}" || return 1
  vm_wait 60 vm_find_disk '/tcm_loop_'
}

find_dev() { DEV=$(vm_find_disk '/tcm_loop_'); [[ -b $DEV ]]; }

fio_verify() { # NAME RW BS... extra fio args
  local name=$1 rw=$2; shift 2
  cd /tmp && fio --name="$name" --filename="$DEV" --ioengine=libaio --direct=1 \
    --iodepth=32 --rw="$rw" --bsrange=4k-1m --size="$FIO_SIZE" \
    --verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 \
    --randrepeat=0 "$@"
}

metric() { # NAME → value (first sample)
  exec 3<>/dev/tcp/${METRICS%:*}/${METRICS#*:} || return 1
  printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
  local body; body=$(cat <&3); exec 3<&-
  awk -v m="$1" '$1 == m || index($1, m "{") == 1 {print $2; exit}' <<<"$body"
}

metrics_counted() { local n; n=$(metric rustio_tcmu_commands_total); echo "commands=$n"; ((n > 100)); }
# The first 4 MiB read through the LUN equal the backing file's (no /dev/fd in the guest).
same_bytes() {
  dd if="$DEV" of=/tmp/lun.head bs=1M count=4 iflag=direct status=none &&
    dd if=/var/tmp/tcmu-file0.img of=/tmp/file.head bs=1M count=4 status=none &&
    cmp /tmp/lun.head /tmp/file.head
}
# Timeouts are reported, not failed: on a loaded host TCG can stretch a 1 MiB write past
# --cmd-timeout, and the watchdog then completes it with ABORTED COMMAND (the initiator
# retries; fio still verifies).
metrics_clean() {
  local m t; m=$(metric rustio_tcmu_malformed_total); t=$(metric rustio_tcmu_timeouts_total)
  echo "malformed=$m timeouts=$t"; [[ $m == 0 ]]
}

# ---------------------------------------------------------------- fio
setup_fio() {
  start_bus
  : >"$LOG"
  start_runner
  vm_check "runner starts and joins the TCM-USER netlink group" wait_listening
  vm_check "user:file backstore enabled through raw configfs" \
    create_user_dev 1 file0 "file//var/tmp/tcmu-file0.img" $((256 << 20))
  vm_check "UIO device named tcm-user/1/file0/file//var/tmp/tcmu-file0.img" \
    grep -qx "tcm-user/1/file0/file//var/tmp/tcmu-file0.img" "$(uio_for file0)"
  vm_check "runner serves it (log)" vm_wait 20 grep -q 'serving device.*file0' "$LOG"
  vm_check "backing file created with dev_size" \
    test "$(stat -c %s /var/tmp/tcmu-file0.img)" = $((256 << 20))
  vm_check "tcm_loop LUN appears as a SCSI disk" export_loop "$CORE/user_1/file0"
  find_dev || return
  vm_log "disk is $DEV"
  vm_check "INQUIRY says LIO-ORG / TCMU device" \
    bash -c "sg_inq $DEV | grep -q 'LIO-ORG' && sg_inq $DEV | grep -q 'TCMU device'"
  vm_check "READ CAPACITY matches dev_size" \
    bash -c "[[ \$(blockdev --getsize64 $DEV) == $((256 << 20)) ]]"
}

if want fio || want ext4 || want recovery || want tmr || want reconfig; then
  setup_fio
fi

if want fio && [[ -b $DEV ]]; then
  VM_CHECK_TIMEOUT=600 vm_check "fio random write 4k-1M qd32 + crc32c verify" \
    fio_verify rnd randwrite
  VM_CHECK_TIMEOUT=600 vm_check "fio sequential write 4k-1M qd32 + crc32c verify" \
    fio_verify seq write --offset=64M
  vm_check "data reached the backing file" same_bytes
  vm_check "metrics: commands counted" metrics_counted
  VM_CHECK_VERBOSE=1 vm_check "metrics: no malformed ring entries (timeouts shown)" metrics_clean
fi

# ---------------------------------------------------------------- ext4
ext4_round_trip() {
  set -e
  mkfs.ext4 -q -F "$DEV"
  mkdir -p /tmp/mnt
  mount "$DEV" /tmp/mnt
  for i in 1 2 3 4 5; do head -c $((i * 3 << 20)) /dev/urandom >/tmp/mnt/f$i; done
  (cd /tmp/mnt && sha256sum f* >/tmp/sums)
  umount /tmp/mnt
  echo 3 >/proc/sys/vm/drop_caches
  mount "$DEV" /tmp/mnt
  (cd /tmp/mnt && sha256sum -c --quiet /tmp/sums)
  umount /tmp/mnt
  fsck.ext4 -n "$DEV"
}
if want ext4 && [[ -b $DEV ]]; then
  VM_CHECK_TIMEOUT=400 vm_check "mkfs.ext4 + file checksums across remount + fsck" ext4_round_trip
fi

# ---------------------------------------------------------------- recovery
recovery() {
  local fio_pid rc
  fio_verify crash randwrite --offset=128M --runtime=0 >/tmp/fio-crash.log 2>&1 &
  fio_pid=$!
  # Kill as soon as fio's writes reach the disk (sectors written, /sys/block/X/stat field
  # 7), not after a fixed sleep: an idle machine finishes the whole job in about 2 s.
  local stat=/sys/block/${DEV#/dev/}/stat w0 i
  w0=$(awk '{print $7}' "$stat")
  for ((i = 0; i < 600; i++)); do
    (($(awk '{print $7}' "$stat") > w0 + 2048)) && break
    kill -0 "$fio_pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q . /proc/$fio_pid/status || { echo "fio ended too early"; cat /tmp/fio-crash.log; return 1; }
  echo "killing runner $(runner_pid) with SIGKILL during I/O"
  runner_kill KILL || { echo "runner did not die"; return 1; }
  sleep 2
  start_runner && wait_listening || { echo "restart failed"; return 1; }
  grep -q "recovered: ring reset" "$LOG" || { echo "no recovery logged"; return 1; }
  wait "$fio_pid"; rc=$?
  cp /tmp/fio-crash.log "$OUT/"
  grep -E "err=|verify|error" /tmp/fio-crash.log | head -20
  tail -5 /tmp/fio-crash.log
  return $rc
}
if want recovery && [[ -b $DEV ]]; then
  VM_CHECK_TIMEOUT=600 vm_check "kill -9 during fio, restart: fio completes and verifies" recovery
  vm_check "no I/O errors reported by the kernel" bash -c "! dmesg | grep -E 'I/O error.*${DEV#/dev/}|critical target error'"
fi

# ---------------------------------------------------------------- tmr
# reset_fio DEV LOGNAME OFFSET: fio randwrite + verify on DEV with three LUN resets
# (sg_reset -d) while I/O is queued; prints fio's error lines, returns fio's status.
reset_fio() {
  local dev=$1 name=$2 off=$3 fio_pid rc i
  DEV=$dev fio_verify "$name" randwrite --offset="$off" --size=32M >"/tmp/$name.log" 2>&1 &
  fio_pid=$!
  sleep 3
  for i in 1 2 3; do sg_reset -d "$dev" || echo "sg_reset $i failed"; sleep 1; done
  wait "$fio_pid"; rc=$?
  cp "/tmp/$name.log" "$OUT/" 2>/dev/null
  grep -E "err=|verify:" "/tmp/$name.log" | head -5
  return $rc
}
# Control: the same on an in-kernel fileio backstore behind its own tcm_loop port. LIO
# aborts commands it has not handed to the backstore yet and tcm_loop then completes
# them to its initiator as if they had succeeded (tcm_loop_release_cmd → scsi_done with
# result 0), so data verification after a LUN reset can fail without any TCMU involved.
CTL_WWN=naa.5001405000000003
control_fileio() {
  local d=$CORE/fileio_9/ctl t=$LIO/loopback/$CTL_WWN/tpgt_1 b dev=
  mkdir -p "$d" && echo -n "fd_dev_name=/var/tmp/ctl.img,fd_dev_size=$((64 << 20))" >"$d/control" &&
    echo -n 1 >"$d/enable" || return 2
  mkdir -p "$t/lun/lun_0" && echo -n naa.5001405000000004 >"$t/nexus" &&
    ln -s "$d" "$t/lun/lun_0/ctl" || return 2
  for i in $(seq 1 150); do
    for b in /sys/block/sd*; do
      grep -q FILEIO "$b/device/model" 2>/dev/null && dev=/dev/${b##*/}
    done
    [[ -n $dev ]] && break; sleep 0.2
  done
  [[ -b $dev ]] || return 2
  reset_fio "$dev" ctl-reset 0
}
reset_check() {
  reset_fio "$DEV" reset 192M
  echo $? >/tmp/reset.rc
  ! dmesg | grep -qE "I/O error.*${DEV#/dev/}|critical target error"
}
tmr_checks() {
  local rc=0 crc=0
  VM_CHECK_TIMEOUT=600 vm_check "LUN reset (sg_reset -d) x3 under fio qd32: no hang, no I/O error" \
    reset_check
  vm_check "runner got the TMR notification" grep -q "task management notification" "$LOG"
  rc=$(cat /tmp/reset.rc 2>/dev/null || echo 1)
  if [[ $rc == 0 ]]; then
    vm_pass "data verifies after LUN resets"
    return
  fi
  VM_CHECK_TIMEOUT=600 vm_check "control: fileio + tcm_loop under the same LUN resets" control_fileio; crc=$?
  if ((crc == 1 || crc > 2)) && grep -q "verify:" /tmp/ctl-reset.log 2>/dev/null; then
    vm_skip "data verifies after LUN resets" \
      "in-kernel fileio loses writes the same way (tcm_loop completes LIO-aborted commands as GOOD)"
  else
    vm_fail "data verifies after LUN resets" "fileio control verified, rustio did not"
  fi
}
if want tmr && [[ -b $DEV ]]; then
  tmr_checks
fi

# ---------------------------------------------------------------- reconfig
grow() {
  local d=$CORE/user_1/file0 sdev=${DEV#/dev/}
  echo $((320 << 20)) >"$d/attrib/dev_size" || return 1
  grep -q "capacity changed" "$LOG" || { echo "runner did not log the resize"; return 1; }
  [[ $(stat -c %s /var/tmp/tcmu-file0.img) == $((320 << 20)) ]] || { echo "file not grown"; return 1; }
  echo 1 >"/sys/block/$sdev/device/rescan"
  vm_wait 30 bash -c "[[ \$(blockdev --getsize64 $DEV) == $((320 << 20)) ]]"
}
cache_type() { cat /sys/block/${DEV#/dev/}/device/scsi_disk/*/cache_type; }
toggle_wce() {
  local d=$CORE/user_1/file0 sdev=${DEV#/dev/}
  echo 0 >"$d/attrib/emulate_write_cache" || return 1
  echo 1 >"/sys/block/$sdev/device/rescan"
  vm_wait 30 bash -c "grep -q 'write through' /sys/block/$sdev/device/scsi_disk/*/cache_type" || { cache_type; return 1; }
  echo 1 >"$d/attrib/emulate_write_cache" || return 1
  echo 1 >"/sys/block/$sdev/device/rescan"
  vm_wait 30 bash -c "grep -q 'write back' /sys/block/$sdev/device/scsi_disk/*/cache_type" || { cache_type; return 1; }
}
if want reconfig && [[ -b $DEV ]]; then
  vm_check "RECONFIG dev_size: file grown, initiator sees the new capacity" grow
  vm_check "RECONFIG emulate_write_cache: WCE off and on again" toggle_wce
fi

# ---------------------------------------------------------------- qcow
refused() { # NAME DEV_CONFIG LOGPATTERN
  if create_user_dev 3 "$1" "$2" $((16 << 20)) 2>/tmp/enable.err; then
    echo "enable of $2 succeeded"; return 1
  fi
  cat /tmp/enable.err
  vm_wait 10 grep -q "$3" "$LOG"
}
# The image lives on the guest's tmpfs /tmp, where tcmu-runner's qcow handler fails (it
# allocates clusters with fallocate ZERO_RANGE, which tmpfs lacks); rustio's does not.
# The second round serves an image on ext4 with ;cache=none (guest data O_DIRECT). The
# qcow_* checks act on the image the QCOW_* variables name.
QCOW_IMG=/tmp/tcmu-q0.qcow2
QCOW_CFG=qcow/$QCOW_IMG
QCOW_HBA=5
QCOW_NAME=q0
QCOW_WWN=naa.5001405000000005
QCOW_NEXUS=naa.5001405000000006
QCOW_SIZE=$((64 << 20))
QCOW_DISK=/tmp/qcow.disk
QCOW_DIRECT_FS=/tmp/qcow-direct
loop_disks() { local b; for b in /sys/block/sd*; do
  [[ $(readlink -f "$b") == */tcm_loop_* ]] && echo "${b##*/}"; done; }
# new_loop_disk BEFORE: the tcm_loop disk not in the list BEFORE
new_loop_disk() { local d; for d in $(loop_disks); do
  [[ " $1 " == *" $d "* ]] || { echo "/dev/$d"; return 0; }; done; return 1; }
qcow_export() {
  local before t=$LIO/loopback/$QCOW_WWN/tpgt_1 dev
  qemu-img create -q -f qcow2 "$QCOW_IMG" "$QCOW_SIZE" || return 1
  create_user_dev "$QCOW_HBA" "$QCOW_NAME" "$QCOW_CFG" "$QCOW_SIZE" || return 1
  vm_wait 20 grep -q "serving device.*$QCOW_NAME" "$LOG" || { echo "not served"; return 1; }
  before=$(loop_disks | tr '\n' ' ')
  mkdir -p "$t/lun/lun_0" && echo -n "$QCOW_NEXUS" >"$t/nexus" &&
    ln -s "$CORE/user_$QCOW_HBA/$QCOW_NAME" "$t/lun/lun_0/$QCOW_NAME" || return 1
  vm_wait 60 new_loop_disk "$before" || { echo "no new disk"; return 1; }
  dev=$(new_loop_disk "$before")
  [[ $(blockdev --getsize64 "$dev") == "$QCOW_SIZE" ]] || { echo "bad size"; return 1; }
  echo "$dev" >"$QCOW_DISK"
}
qcow_fio() {
  local half=$((QCOW_SIZE >> 21))M
  DEV=$(cat "$QCOW_DISK") fio_verify qrnd randwrite --size=$half &&
    DEV=$(cat "$QCOW_DISK") fio_verify qseq write --offset=$half --size=$half
}
# Read the whole LUN back, remove the device (the runner closes the image), then let qemu
# judge the image.
qcow_remove() {
  local dev; dev=$(cat "$QCOW_DISK")
  dd if="$dev" of=/tmp/qcow-lun.raw bs=1M iflag=direct status=none || return 1
  vm_configfs_rm "$LIO/loopback/$QCOW_WWN" || { echo "tcm_loop target not removed"; return 1; }
  vm_configfs_rm "$CORE/user_$QCOW_HBA/$QCOW_NAME" || { echo "backstore not removed"; return 1; }
  vm_wait 30 grep -q "device closed.*$QCOW_NAME\|$QCOW_NAME.*device closed" "$LOG" ||
    { echo "no close logged"; return 1; }
}
qcow_check() { qemu-img check -f qcow2 "$QCOW_IMG"; }
qcow_compare() { qemu-img compare -f raw -F qcow2 /tmp/qcow-lun.raw "$QCOW_IMG"; }
qcow_round() { # TAG DESCRIPTION: export, write + verify, read back, remove, check, compare
  if vm_check "$2 served, tcm_loop LUN appears" qcow_export; then
    VM_CHECK_TIMEOUT=600 vm_check "$1: fio random + sequential write 4k-1M qd32 + crc32c verify" \
      qcow_fio
    vm_check "$1: LUN read back, device removed, image closed" qcow_remove
    vm_check "$1: qemu-img check clean after the runner closed it" qcow_check
    vm_check "$1: qemu-img compare: image equals the data read through the LUN" qcow_compare
  fi
}
qcow_wrong_size() {
  qemu-img create -q -f qcow2 /tmp/tcmu-q1.qcow2 8M || return 1
  refused q1 "qcow//tmp/tcmu-q1.qcow2" 'size misconfigured'
}
# cache=none on a file system that refuses O_DIRECT is refused with the way out; where it
# accepts it (tmpfs since Linux 6.6), the image is served.
qcow_direct_on_tmpfs() {
  qemu-img create -q -f qcow2 /tmp/tcmu-q2.qcow2 8M || return 1
  if dd if=/dev/zero of=/tmp/direct-probe bs=4k count=1 oflag=direct status=none 2>/dev/null; then
    create_user_dev 3 q2 "qcow//tmp/tcmu-q2.qcow2;cache=none" $((8 << 20)) &&
      vm_wait 20 grep -q 'serving device.*q2' "$LOG"
  else
    refused q2 "qcow//tmp/tcmu-q2.qcow2;cache=none" 'cache=none needs O_DIRECT.*use cache=writeback'
  fi
}
qcow_direct_fs() { # a 48 MiB ext4 in a loop file on the guest's tmpfs
  mkdir -p "$QCOW_DIRECT_FS" && truncate -s 48M /tmp/qcow-direct.ext4 &&
    mkfs.ext4 -q -F /tmp/qcow-direct.ext4 && mount -o loop /tmp/qcow-direct.ext4 "$QCOW_DIRECT_FS"
}
if want qcow; then
  runner_alive || { start_runner; wait_listening; }
  qcow_round qcow "user:qcow (qcow2 image on tmpfs)"
  vm_check "qcow: image size != dev_size: enable refused, logged" qcow_wrong_size
  vm_check "qcow: cache=none on tmpfs: refused with the way out unless tmpfs does O_DIRECT" \
    qcow_direct_on_tmpfs
  rm -f /tmp/qcow-lun.raw /tmp/direct-probe
  rmdir "$CORE/user_3/q1" "$CORE/user_3/q2" 2>/dev/null
  if vm_check "qcow: ext4 for a cache=none image" qcow_direct_fs; then
    QCOW_IMG=$QCOW_DIRECT_FS/d.qcow2 QCOW_CFG="qcow/$QCOW_DIRECT_FS/d.qcow2;cache=none"
    QCOW_HBA=6 QCOW_NAME=qd QCOW_WWN=naa.5001405000000007 QCOW_NEXUS=naa.5001405000000008
    QCOW_SIZE=$((32 << 20))
    qcow_round "qcow cache=none" "user:qcow ;cache=none (qcow2 image on ext4, guest data O_DIRECT)"
    rm -f /tmp/qcow-lun.raw
    umount "$QCOW_DIRECT_FS"; rm -f /tmp/qcow-direct.ext4
  fi
fi

# ---------------------------------------------------------------- bad input
# The background report's user_create.sh writes dev_config=file/<name> (relative to the
# runner's working directory, /var/tmp here) and dev_size=4096.
user_create_style() {
  create_user_dev 4 test_1 "file/test_1" 4096 || return 1
  vm_wait 20 grep -q 'serving device.*test_1' "$LOG" &&
    [[ $(stat -c %s /var/tmp/test_1) == 4096 ]]
}
if want bad; then
  runner_alive || { start_runner; wait_listening; }
  vm_check "unknown handler subtype: enable refused, logged" refused bad0 "zfs/tank/vol" 'no handler for subtype "zfs"'
  vm_check "malformed file cfg (missing directory): enable refused, logged" \
    refused bad1 "file//no/such/dir/x.img" 'directory /no/such/dir does not exist'
  vm_check "malformed file cfg (no path): enable refused, logged" refused bad2 "file/" 'a path is required'
  vm_check "user_create.sh style relative cfg (file/test_1, 4096 bytes) is served" user_create_style
  vm_check "runner still alive after refusals" runner_alive
  rmdir "$CORE/user_3/bad0" "$CORE/user_3/bad1" "$CORE/user_3/bad2" 2>/dev/null
  rmdir "$CORE/user_3" 2>/dev/null
fi

# ---------------------------------------------------------------- targetcli
targetcli_create() {
  printf '%s\n' "/backstores/user:file create name=tc0 size=32M cfgstring=/var/tmp/tc0.img" \
    "ls /backstores" exit | targetcli 2>&1 | tee /tmp/targetcli.out
  grep -q "user:file" /tmp/targetcli.out && grep -q "tc0" /tmp/targetcli.out &&
    vm_wait 20 grep -q 'serving device.*tc0' "$LOG" &&
    test "$(stat -c %s /var/tmp/tc0.img)" = $((32 << 20))
}
targetcli_refused() {
  printf '%s\n' "/backstores/user:file create name=tc1 size=1M cfgstring=/no/such/dir/tc1.img" exit |
    targetcli 2>&1 | tee /tmp/targetcli2.out
  grep -q "cfgstring invalid" /tmp/targetcli2.out && ! compgen -G "$CORE/user_*/tc1" >/dev/null
}
if want targetcli; then
  start_bus
  vm_check "system bus runs with only dist/dbus-1/system.d policy for TCMUService1" \
    grep -qx dist /tmp/bus.kind
  runner_alive || { start_runner; wait_listening; }
  vm_check "runner owns org.kernel.TCMUService1 on the system bus" vm_wait 20 \
    dbus-send --system --print-reply --dest=org.freedesktop.DBus / \
    org.freedesktop.DBus.GetNameOwner string:org.kernel.TCMUService1
  VM_CHECK_TIMEOUT=240 vm_check "targetcli /backstores/user:file create (served by rustio)" targetcli_create
  VM_CHECK_TIMEOUT=240 vm_check "targetcli refused a bad cfgstring via CheckConfig" targetcli_refused
fi

# ---------------------------------------------------------------- stop
clean_stop() {
  runner_kill TERM || { echo "runner did not stop"; return 1; }
  vm_wait 10 test -s /tmp/runner.rc
  local rc; rc=$(cat /tmp/runner.rc)
  [[ $rc == 0 ]] || { echo "exit status $rc"; return 1; }
  grep -q "device closed" "$LOG" || return 1
  local f
  for f in "$CORE"/user_*/*/action/block_dev; do
    [[ -e $f ]] || continue
    grep -q unblocked "$f" || { echo "$f still blocked"; return 1; }
  done
}
if want stop && runner_alive; then
  vm_check "SIGTERM: clean stop (drained, unblocked, exit 0)" clean_stop
fi

# ---------------------------------------------------------------- teardown
# With a runner serving them: removing a tcm_loop LUN makes sd send SYNCHRONIZE CACHE,
# which no-one would answer after the stop section (the kernel would wait out its command
# timeouts and SCSI error handling).
teardown() {
  runner_alive || { start_runner && wait_listening; } || return 1
  mountpoint -q /tmp/mnt && umount /tmp/mnt
  local d rc=0
  for d in "$LIO/loopback/$LOOP_WWN" "$LIO/loopback/$CTL_WWN" "$LIO/loopback/$QCOW_WWN" \
    "$CORE"/user_*/*/ "$CORE"/fileio_*/*/; do
    [[ -d $d ]] || continue
    vm_configfs_rm "${d%/}" 2>/dev/null || { echo "cannot remove $d"; rc=1; }
  done
  runner_kill TERM || rc=1
  return $rc
}
VM_CHECK_TIMEOUT=180 vm_check "teardown: LUNs and backstores removed, runner stopped" teardown
cp "$LOG" "$OUT/" 2>/dev/null
dmesg >"$OUT/guest-dmesg.txt" 2>/dev/null
echo "---- runner log (last 60 lines)"; tail -n 60 "$LOG"
vm_summary
