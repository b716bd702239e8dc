# shellcheck shell=bash
# Helpers for guest scripts run by tests/vm/run.sh. Source it from a bash
# script:   . "$(dirname "$0")/guest-lib.sh"
#
# Provides:
#   vm_check NAME CMD...     run CMD (a command or shell function) bounded by
#                            $VM_CHECK_TIMEOUT s (default 120); print "PASS: NAME" /
#                            "FAIL: NAME" (+ CMD output on failure, or always if
#                            VM_CHECK_VERBOSE=1)
#   vm_pass NAME / vm_fail NAME [WHY] / vm_skip NAME [WHY]
#   vm_summary               print "N passed, N failed[, N skipped]"; return 1 on failures
#   vm_wait SECS CMD...      poll CMD every 0.2 s until it succeeds or SECS elapse
#   vm_start_dbus            start the system D-Bus (needed by targetcli, tcmu-runner)
#   vm_start_iscsid          start open-iscsi's iscsid
#   vm_start_tcmu_runner     start tcmu-runner (needs D-Bus)
#   vm_find_disk PATHRE [SERIAL]  print /dev/sdX whose sysfs device path matches the
#                            regex PATHRE (tcm_loop disks: "/tcm_loop_", iSCSI
#                            initiator disks: "/session[0-9]+/"), optionally also
#                            whose VPD 0x80 unit serial is SERIAL
#   vm_configfs_rm DIR       recursively tear down a LIO configfs tree (links, then dirs)
#   LIO=/sys/kernel/config/target
# Everything here only ever uses 127.0.0.1.

LIO=/sys/kernel/config/target
VM_CHECK_TIMEOUT=${VM_CHECK_TIMEOUT:-120}
VM_PASSED=0
VM_FAILED=0
VM_SKIPPED=0
VM_FAILED_NAMES=()
VM_T0=$(date +%s.%N)

vm_ts() { awk -v a="$VM_T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%6.1f", b-a}'; }
vm_log() { echo "[$(vm_ts)s] $*"; }
vm_pass() { VM_PASSED=$((VM_PASSED + 1)); echo "[$(vm_ts)s] PASS: $1"; }
vm_fail() {
  VM_FAILED=$((VM_FAILED + 1)); VM_FAILED_NAMES+=("$1")
  echo "[$(vm_ts)s] FAIL: $1${2:+ -- $2}"
}
vm_skip() { VM_SKIPPED=$((VM_SKIPPED + 1)); echo "[$(vm_ts)s] SKIP: $1${2:+ -- $2}"; }

# vm_check NAME CMD... : CMD may be a shell function (it runs in a subshell,
# so variables it sets are not seen by the caller). Its output is shown only
# if it fails; it is killed after $VM_CHECK_TIMEOUT seconds.
vm_check() {
  local name=$1; shift
  local log rc=0 pid wd
  log=$(mktemp /tmp/vm_check.XXXXXX)
  ( "$@" ) >"$log" 2>&1 &
  pid=$!
  # Watchdog; its stderr is silenced so killing its sleep prints no "Terminated".
  ( sleep "$VM_CHECK_TIMEOUT" &&
    { echo "(timed out after ${VM_CHECK_TIMEOUT}s)" >>"$log"
      pkill -KILL -P "$pid"; kill -KILL "$pid"; } ) 2>/dev/null &
  wd=$!
  wait "$pid" || rc=$?
  pkill -P "$wd" 2>/dev/null; wait "$wd" 2>/dev/null
  if ((rc == 0)); then
    vm_pass "$name"
  else
    vm_fail "$name" "exit $rc"
    tail -n 40 "$log" | sed 's/^/    | /'
  fi
  if [[ -n "${VM_CHECK_VERBOSE:-}" && $rc -eq 0 ]]; then sed 's/^/    | /' "$log"; fi
  rm -f "$log"
  return $rc
}

vm_summary() {
  echo "----"
  if ((VM_FAILED)); then echo "failed checks: ${VM_FAILED_NAMES[*]}"; fi
  if ((VM_SKIPPED)); then
    echo "$VM_PASSED passed, $VM_FAILED failed, $VM_SKIPPED skipped"
  else
    echo "$VM_PASSED passed, $VM_FAILED failed"
  fi
  ((VM_FAILED == 0))
}

vm_wait() {
  local secs=$1; shift
  local end=$(( $(date +%s) + secs ))
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    (( $(date +%s) >= end )) && return 1
    sleep 0.2
  done
}

vm_start_dbus() {
  [[ -S /run/dbus/system_bus_socket ]] && return 0
  mkdir -p /run/dbus
  dbus-daemon --system --fork --nopidfile >/dev/null 2>&1 || dbus-daemon --system --fork || return 1
  vm_wait 20 test -S /run/dbus/system_bus_socket
}

vm_start_iscsid() {
  pidof iscsid >/dev/null 2>&1 && return 0
  mkdir -p /run/lock/iscsi /etc/iscsi/nodes /etc/iscsi/send_targets
  if ! grep -q '^InitiatorName=' /etc/iscsi/initiatorname.iscsi 2>/dev/null; then
    echo "InitiatorName=$(iscsi-iname)" >/etc/iscsi/initiatorname.iscsi
  fi
  iscsid || return 1
  vm_wait 20 pidof iscsid
}

vm_start_tcmu_runner() {
  pidof tcmu-runner >/dev/null 2>&1 && return 0
  vm_start_dbus || return 1
  mkdir -p /var/log
  tcmu-runner --tcmu-log-dir /var/log >/var/log/tcmu-runner.stdout 2>&1 &
  # Ready once it has registered with D-Bus (or at least is still alive).
  vm_wait 30 dbus-send --system --print-reply --dest=org.freedesktop.DBus / \
    org.freedesktop.DBus.GetNameOwner string:org.kernel.TCMUService1 ||
    pidof tcmu-runner >/dev/null
}

# vm_find_disk PATHRE [SERIAL]
vm_find_disk() {
  local re=$1 serial=${2:-} b p s
  for b in /sys/block/sd*; do
    [[ -e "$b" ]] || continue
    p=$(readlink -f "$b")
    [[ "$p" =~ $re ]] || continue
    if [[ -n "$serial" ]]; then
      s=$(sg_inq -p 0x80 -r "/dev/${b##*/}" 2>/dev/null | tail -c +5 | tr -d '\0 ' || true)
      [[ "$s" == "$serial" ]] || continue
    fi
    echo "/dev/${b##*/}"
    return 0
  done
  return 1
}

# vm_configfs_rm DIR : tear down one LIO configfs object, where DIR is either
#   a fabric target  $LIO/<fabric>/<wwn>   (iscsi/iqn..., loopback/naa..., ...)
#   a backstore      $LIO/core/<hba>/<dev> (the HBA dir is removed if empty)
# Removes ACL/LUN links, LUNs, ACLs, portals and TPGs explicitly (globs, no
# find: walking configfs is slow under TCG). Returns 0 if DIR is gone.
vm_configfs_rm() {
  local d=${1%/} tpg acl lun x
  [[ -d "$d" ]] || return 0
  case "$d" in
    "$LIO"/core/*/*)
      rmdir "$d" 2>/dev/null
      rmdir "${d%/*}" 2>/dev/null   # the HBA, if it has no other device
      ;;
    *)
      for tpg in "$d"/tpgt_*; do
        [[ -d "$tpg" ]] || continue
        echo 0 >"$tpg/enable" 2>/dev/null
        for acl in "$tpg"/acls/*; do
          [[ -d "$acl" ]] || continue
          for lun in "$acl"/lun_*; do
            [[ -d "$lun" ]] || continue
            for x in "$lun"/*; do [[ -L "$x" ]] && rm -f "$x"; done
            rmdir "$lun" 2>/dev/null
          done
          rmdir "$acl" 2>/dev/null
        done
        for lun in "$tpg"/lun/lun_*; do
          [[ -d "$lun" ]] || continue
          for x in "$lun"/*; do [[ -L "$x" ]] && rm -f "$x"; done
          rmdir "$lun" 2>/dev/null
        done
        for x in "$tpg"/np/*; do [[ -d "$x" ]] && rmdir "$x" 2>/dev/null; done
        rmdir "$tpg" 2>/dev/null
      done
      rmdir "$d" 2>/dev/null
      ;;
  esac
  [[ ! -d "$d" ]]
}
