#!/bin/bash
# Guest-side smoke test of the VM harness: run inside the VM by
#   tests/vm/run.sh tests/vm/smoke.sh
# (tests/vm/selftest.sh does that). Verifies the real kernel target stack the
# rustio tests rely on, printing PASS/FAIL per check, and exits non-zero if
# any check failed. Every step is time-bounded; only 127.0.0.1 is used.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# Per-check limit; generous because a busy host makes TCG 3-4x slower
# (targetcli alone took ~60 s at load 10). run.sh's --timeout bounds the total.
VM_CHECK_TIMEOUT=${VM_CHECK_TIMEOUT:-300}
# shellcheck source=guest-lib.sh
. "$HERE/guest-lib.sh"

[[ "${RUSTIO_VM:-}" == 1 ]] || { echo "smoke.sh must run inside the VM (tests/vm/run.sh)"; exit 2; }

IQN=iqn.2003-01.org.rustio.vm:smoke
PORTAL=127.0.0.1:3260
LOOP_WWN=naa.50014050000000a1
LOOP_NEXUS=naa.50014050000000b1
SIZE_MB=64
BS_DIR=$LIO/core/fileio_0/smoke0
BS_FILE=/tmp/smoke0.img
TPG=$LIO/iscsi/$IQN/tpgt_1
LTPG=$LIO/loopback/$LOOP_WWN/tpgt_1
TCMU_DIR=$LIO/core/user_0/tcmu0
TCMU_IMG=/tmp/tcmu0.qcow2
PAT=/tmp/pattern.bin
PAT2=/tmp/pattern2.bin

vm_log "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) MiB"

# ---------------------------------------------------------------- modules
check_modules() {
  local m missing=()
  for m in configfs target_core_mod target_core_file target_core_iblock target_core_user \
           uio tcm_loop iscsi_target_mod iscsi_tcp sd_mod; do
    grep -q "^$m " /proc/modules || missing+=("$m")
  done
  ((${#missing[@]} == 0)) || { echo "not loaded: ${missing[*]}"; return 1; }
  # Auto-loading through the host's modprobe (request_module -> chroot) works too.
  modprobe scsi_debug max_luns=1 dev_size_mb=8 && grep -q '^scsi_debug ' /proc/modules &&
    rmmod scsi_debug
}
vm_check "kernel modules loaded (LIO, tcm_loop, iSCSI target+initiator, TCMU, uio; modprobe works)" check_modules

check_configfs() {
  mountpoint -q /sys/kernel/config || { echo "configfs not mounted"; return 1; }
  [[ -d $LIO/core && -f $LIO/version ]] || { echo "$LIO missing"; return 1; }
  cat "$LIO/version"
}
vm_check "configfs mounted at /sys/kernel/config/target" check_configfs

# ---------------------------------------------------------------- fileio backstore + iSCSI target (raw configfs)
create_fileio() {
  mkdir -p "$BS_DIR" &&
  echo "fd_dev_name=$BS_FILE,fd_dev_size=$((SIZE_MB * 1024 * 1024))" >"$BS_DIR/control" &&
  echo "smoke0serial" >"$BS_DIR/wwn/vpd_unit_serial" &&
  echo 1 >"$BS_DIR/enable" || return 1
  cat "$BS_DIR/info"
  # (info says "DEACTIVATED" until the device is exported through a LUN.)
  [[ -f "$BS_FILE" && "$(cat "$BS_DIR/enable")" == 1 ]] &&
    grep -q "Size: $((SIZE_MB * 1024 * 1024))" "$BS_DIR/info"
}
vm_check "configfs: fileio backstore ($SIZE_MB MiB at $BS_FILE)" create_fileio

create_iscsi() {
  mkdir -p "$TPG/lun/lun_0" &&
  ln -s "$BS_DIR" "$TPG/lun/lun_0/smoke_port" &&
  mkdir "$TPG/np/$PORTAL" &&
  echo 0 >"$TPG/attrib/authentication" &&
  echo 1 >"$TPG/attrib/generate_node_acls" &&
  echo 1 >"$TPG/attrib/cache_dynamic_acls" &&
  echo 0 >"$TPG/attrib/demo_mode_write_protect" &&
  echo 1 >"$TPG/enable" &&
  vm_wait 10 grep -qi ':0CBC 00000000:0000 0A' /proc/net/tcp
}
vm_check "configfs: iSCSI target $IQN tpgt_1 lun_0 portal $PORTAL (listening)" create_iscsi

# ---------------------------------------------------------------- libiscsi tools
check_iscsi_ls() {
  local out
  out=$(iscsi-ls -s "iscsi://127.0.0.1") || return 1
  echo "$out"
  grep -q "Target:$IQN" <<<"$out" && grep -q "Lun:0" <<<"$out"
}
vm_check "iscsi-ls -s iscsi://127.0.0.1 lists the target and LUN 0" check_iscsi_ls

check_iscsi_inq() {
  local out cap
  out=$(iscsi-inq "iscsi://127.0.0.1/$IQN/0") || return 1
  echo "$out"
  grep -q "LIO-ORG" <<<"$out" || return 1
  cap=$(iscsi-readcapacity16 "iscsi://127.0.0.1/$IQN/0") || return 1
  echo "$cap"
  # 64 MiB / 512 B blocks -> last LBA 131071.
  grep -q "LOGICAL BLOCK LENGTH IN BYTES:512" <<<"$cap" && grep -q "Total size:$((SIZE_MB * 1024 * 1024))" <<<"$cap"
}
vm_check "iscsi-inq (LIO-ORG) + iscsi-readcapacity16 ($SIZE_MB MiB)" check_iscsi_inq

if command -v iscsi-test-cu >/dev/null; then
  vm_check "iscsi-test-cu ALL.Inquiry + ALL.TestUnitReady against LIO" \
    bash -c "iscsi-test-cu --test=ALL.Inquiry iscsi://127.0.0.1/$IQN/0 &&
             iscsi-test-cu --test=ALL.TestUnitReady iscsi://127.0.0.1/$IQN/0"
else
  vm_skip "iscsi-test-cu" "not installed"
fi

# ---------------------------------------------------------------- tcm_loop
LOOP_DEV=
create_loop() {
  mkdir -p "$LTPG" &&
  echo "$LOOP_NEXUS" >"$LTPG/nexus" &&      # nexus BEFORE LUNs, or no SCSI scan
  mkdir "$LTPG/lun/lun_0" &&
  ln -s "$BS_DIR" "$LTPG/lun/lun_0/loop_port" || return 1
  if ! vm_wait 30 vm_find_disk '/tcm_loop_'; then
    echo "no tcm_loop disk appeared"; ls -l /sys/block; return 1
  fi
  LOOP_DEV=$(vm_find_disk '/tcm_loop_')
  echo "tcm_loop disk: $LOOP_DEV"
  [[ -b "$LOOP_DEV" ]]
}
if create_loop >/tmp/loop.out 2>&1; then
  vm_pass "tcm_loop LUN appears as $LOOP_DEV"
else
  vm_fail "tcm_loop LUN appears as /dev/sdX"; sed 's/^/    | /' /tmp/loop.out
fi

dd_loop() {
  [[ -b "$LOOP_DEV" ]] || return 1
  dd if=/dev/urandom of="$PAT" bs=1M count=4 status=none &&
  dd if="$PAT" of="$LOOP_DEV" bs=1M seek=1 oflag=direct conv=fsync status=none &&
  dd if="$LOOP_DEV" bs=1M skip=1 count=4 iflag=direct status=none | cmp - "$PAT" &&
  # ... and the data really is in the fileio backing file at the same offset.
  dd if="$BS_FILE" bs=1M skip=1 count=4 status=none | cmp - "$PAT"
}
vm_check "dd write+read (O_DIRECT, 4 MiB) through tcm_loop == backing file" dd_loop

fio_loop() {
  [[ -b "$LOOP_DEV" ]] || return 1
  fio --name=smoke --filename="$LOOP_DEV" --ioengine=libaio --direct=1 --rw=randwrite \
      --bs=4k --iodepth=8 --size=8M --offset=16M --verify=crc32c --do_verify=1 --verify_state_save=0 \
      --output-format=terse --minimal >/tmp/fio.out 2>&1 || { cat /tmp/fio.out; return 1; }
  cut -d';' -f1-10 /tmp/fio.out
}
vm_check "fio randwrite+verify (libaio, qd 8, 8 MiB) on tcm_loop disk" fio_loop

# ---------------------------------------------------------------- targetcli (rtslib over configfs, needs D-Bus)
check_targetcli() {
  vm_start_dbus || { echo "dbus-daemon failed"; return 1; }
  local out
  # One targetcli process for several commands (each start costs ~7 s under TCG).
  out=$(printf '%s\n' "ls" "/backstores/ramdisk create name=rd0 size=8M" "exit" | targetcli 2>&1)
  echo "$out"
  grep -q "smoke0" <<<"$out" && grep -q "$IQN" <<<"$out" && grep -q "$LOOP_WWN" <<<"$out" &&
    ls -d "$LIO"/core/rd_mcp_*/rd0
}
vm_check "targetcli ls shows the configfs objects; targetcli creates a ramdisk" check_targetcli

# ---------------------------------------------------------------- open-iscsi initiator
ISCSI_DEV=
iscsi_login() {
  vm_start_iscsid || { echo "iscsid failed"; return 1; }
  iscsiadm -m discovery -t sendtargets -p "$PORTAL" | tee /tmp/disc.out || return 1
  grep -q "$IQN" /tmp/disc.out || return 1
  iscsiadm -m node -T "$IQN" -p "$PORTAL" --login || return 1
  vm_wait 30 vm_find_disk '/session[0-9]+/' || { echo "no iSCSI disk appeared"; iscsiadm -m session -P 3; return 1; }
  ISCSI_DEV=$(vm_find_disk '/session[0-9]+/')
  echo "iSCSI disk: $ISCSI_DEV"
}
if iscsi_login >/tmp/login.out 2>&1; then
  vm_pass "open-iscsi discovery + login -> disk $ISCSI_DEV"
else
  vm_fail "open-iscsi discovery + login -> disk"; tail -n 30 /tmp/login.out | sed 's/^/    | /'
fi

iscsi_io() {
  [[ -b "$ISCSI_DEV" && -b "$LOOP_DEV" ]] || return 1
  # Data written through tcm_loop is read back through iSCSI (same LIO device),
  dd if="$ISCSI_DEV" bs=1M skip=1 count=4 iflag=direct status=none | cmp - "$PAT" || return 1
  # and the other way round.
  dd if=/dev/urandom of="$PAT2" bs=1M count=2 status=none &&
  dd if="$PAT2" of="$ISCSI_DEV" bs=1M seek=8 oflag=direct conv=fsync status=none &&
  dd if="$LOOP_DEV" bs=1M skip=8 count=2 iflag=direct status=none | cmp - "$PAT2"
}
vm_check "I/O via iSCSI disk is coherent with the tcm_loop disk (both ways)" iscsi_io

iscsi_logout() {
  iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout &&
  iscsiadm -m node -o delete -T "$IQN" &&
  vm_wait 20 bash -c "! ls /sys/class/iscsi_session/session* >/dev/null 2>&1"
}
vm_check "open-iscsi logout" iscsi_logout

# ---------------------------------------------------------------- TCMU (target_core_user + tcmu-runner)
tcmu() {
  command -v tcmu-runner >/dev/null || { echo "tcmu-runner not installed"; return 1; }
  command -v qemu-img >/dev/null || { echo "qemu-img not installed"; return 1; }
  vm_start_tcmu_runner || { echo "tcmu-runner failed"; cat /var/log/tcmu-runner.* 2>/dev/null; return 1; }
  # preallocation=metadata: tcmu-runner's qcow handler allocates clusters with
  # fallocate modes tmpfs rejects ("cluster not allocated for writes").
  qemu-img create -q -f qcow2 -o preallocation=metadata "$TCMU_IMG" 32M || return 1
  mkdir -p "$TCMU_DIR" &&
  echo "dev_size=$((32 * 1024 * 1024)),dev_config=qcow/$TCMU_IMG" >"$TCMU_DIR/control" &&
  echo "tcmu0serial" >"$TCMU_DIR/wwn/vpd_unit_serial" &&
  echo 1 >"$TCMU_DIR/enable" || return 1
  vm_wait 10 bash -c 'grep -l "^tcm-user/" /sys/class/uio/uio*/name' || { echo "no uio device"; return 1; }
  grep -H . /sys/class/uio/uio*/name
  mkdir "$LTPG/lun/lun_1" && ln -s "$TCMU_DIR" "$LTPG/lun/lun_1/tcmu_port" || return 1
  vm_wait 30 vm_find_disk '/tcm_loop_.*:1/block' || { echo "no TCMU disk"; ls -l /sys/block; return 1; }
  local dev
  dev=$(vm_find_disk '/tcm_loop_.*:1/block')
  echo "TCMU disk: $dev"
  if ! { dd if="$PAT2" of="$dev" bs=1M seek=3 oflag=direct conv=fsync status=none &&
         dd if="$dev" bs=1M skip=3 count=2 iflag=direct status=none | cmp - "$PAT2"; }; then
    tail -n 20 /var/log/tcmu-runner.log /var/log/tcmu-runner.stdout 2>/dev/null
    return 1
  fi
}
vm_check "TCMU: user backstore (tcmu-runner qcow handler) -> /dev/uioN -> tcm_loop disk, dd round trip" tcmu

# ---------------------------------------------------------------- cleanup
cleanup() {
  local ok=0
  vm_configfs_rm "$LIO/loopback/$LOOP_WWN" || { echo "loopback left"; ok=1; }
  vm_log "loopback removed"
  vm_configfs_rm "$LIO/iscsi/$IQN" || { echo "iscsi target left"; ok=1; }
  vm_log "iscsi removed"
  vm_configfs_rm "$TCMU_DIR" || { echo "tcmu backstore left"; ok=1; }
  vm_log "tcmu removed"
  vm_configfs_rm "$BS_DIR" || { echo "fileio backstore left"; ok=1; }
  vm_log "fileio removed"
  for d in "$LIO"/core/rd_mcp_*/rd0; do vm_configfs_rm "$d" || { echo "ramdisk left"; ok=1; }; done
  pkill -x tcmu-runner 2>/dev/null
  # Nothing of ours must be left: no HBAs under core/, no iSCSI/loopback WWNs.
  local left
  left=$(find "$LIO/core" "$LIO/iscsi" "$LIO/loopback" -mindepth 1 -maxdepth 1 -type d \
           ! -name alua ! -name discovery_auth 2>/dev/null)
  [[ -z "$left" ]] || { echo "left over: $left"; ok=1; }
  ! grep -qi ':0CBC 00000000:0000 0A' /proc/net/tcp || { echo "portal still listening"; ok=1; }
  return $ok
}
vm_check "cleanup: all configfs objects removed, portal closed" cleanup

vm_summary
