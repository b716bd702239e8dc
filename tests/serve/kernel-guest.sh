#!/bin/bash
# Guest side of tests/serve/kernel-initiator.sh (runs inside tests/vm/run.sh): the Linux
# kernel's iSCSI initiator (open-iscsi + iscsi_tcp) against `rustio serve` running in the
# same guest on 127.0.0.1:3260, serving a qcow2 LUN from a saveconfig.json.
#   login -> sg_inq/sg_readcap -> mkfs.ext4 -> write files + checksums -> umount -> logout
#   -> login again -> mount -> verify checksums -> umount -> logout -> qemu-img check.
# Prints PASS/FAIL per check and exits non-zero when one failed.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VM_CHECK_TIMEOUT=${VM_CHECK_TIMEOUT:-120}
# shellcheck source=../vm/guest-lib.sh
. "$HERE/../vm/guest-lib.sh"
# port_open only (this suite has its own checks and server start).
# shellcheck source=../lib/iscsi-checks.sh
. "$HERE/../lib/iscsi-checks.sh"

[[ "${RUSTIO_VM:-}" == 1 ]] || { echo "kernel-guest.sh must run inside the VM (tests/vm/run.sh)"; exit 2; }
BIN=${RUSTIO_BIN:?RUSTIO_BIN must name the rustio binary}

IQN=iqn.2024-01.org.rustio.test:kernel
PORTAL=127.0.0.1:3260
IMG=/tmp/kernel.qcow2
SIZE=$((128 * 1024 * 1024))
SERIAL=5c3d2a10-0201-4000-8000-000000000001
MNT=/tmp/mnt
DISK=

vm_log "kernel $(uname -r), $(nproc) CPUs"

serve_qcow2() {
  qemu-img create -q -f qcow2 "$IMG" "$SIZE" || return 1
  cat >/tmp/serve.json <<EOF
{
  "storage_objects": [
    {"plugin": "user", "name": "kdisk", "config": "qcow/$IMG", "size": $SIZE, "wwn": "$SERIAL"}
  ],
  "targets": [
    {"wwn": "$IQN", "fabric": "iscsi", "tpgs": [{"tag": 1, "enable": true,
      "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
      "luns": [{"index": 0, "storage_object": "/backstores/user/kdisk"}],
      "portals": [{"ip_address": "127.0.0.1", "port": 3260}], "node_acls": []}]}
  ]
}
EOF
  "$BIN" serve --config /tmp/serve.json --log warn >/tmp/rustio-serve.log 2>&1 &
  echo $! >/tmp/rustio-serve.pid
  vm_wait 30 port_open 3260 || { cat /tmp/rustio-serve.log; return 1; }
}
vm_check "rustio serve (qcow2 LUN) listens on $PORTAL" serve_qcow2 || { vm_summary; exit 1; }

login() {
  vm_start_iscsid || { echo "iscsid failed"; return 1; }
  iscsiadm -m discovery -t sendtargets -p "$PORTAL" | tee /tmp/disc.out || return 1
  grep -q "$IQN" /tmp/disc.out || { echo "target not discovered"; return 1; }
  iscsiadm -m node -T "$IQN" -p "$PORTAL" --login || return 1
  vm_wait 30 vm_find_disk '/session[0-9]+/' || { echo "no iSCSI disk appeared"; iscsiadm -m session -P 3; return 1; }
  vm_find_disk '/session[0-9]+/' >/tmp/disk
}
logout() {
  iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout || return 1
  vm_wait 20 bash -c "! ls /sys/class/iscsi_session/session* >/dev/null 2>&1"
}

vm_check "open-iscsi discovery + login" login && DISK=$(cat /tmp/disk)
vm_log "disk: ${DISK:-none}"

sg_checks() {
  [[ -b "$DISK" ]] || return 1
  sg_inq "$DISK" | tee /tmp/inq.out || return 1
  grep -Eq "PDT=0 |Peripheral device type: disk" /tmp/inq.out || { echo "not a disk"; return 1; }
  # VPD 0x80 unit serial = the saveconfig wwn.
  sg_inq -p 0x80 "$DISK" | tee /tmp/sn.out || return 1
  grep -q "$SERIAL" /tmp/sn.out || { echo "serial $SERIAL missing"; return 1; }
  sg_readcap -16 "$DISK" | tee /tmp/cap.out || return 1
  grep -q "Last LBA=$((SIZE / 512 - 1))" /tmp/cap.out &&
    grep -q "Logical block length=512 bytes" /tmp/cap.out
}
vm_check "sg_inq / sg_readcap (type disk, unit serial, capacity $SIZE bytes)" sg_checks

mkfs_write() {
  [[ -b "$DISK" ]] || return 1
  mkfs.ext4 -q -F "$DISK" || return 1
  mkdir -p "$MNT" && mount "$DISK" "$MNT" || return 1
  mkdir -p "$MNT/d" || return 1
  for i in 1 2 3 4 5 6 7 8; do
    head -c $((i * 1024 * 1024 + i * 517)) /dev/urandom >"$MNT/d/f$i" || return 1
  done
  echo "hello rustio" >"$MNT/small.txt"
  (cd "$MNT" && sha256sum small.txt d/*) >/tmp/sums || return 1
  cat /tmp/sums
  umount "$MNT"
}
vm_check "mkfs.ext4, write 8 files (~36 MiB), checksum, umount" mkfs_write

vm_check "logout" logout
vm_check "login again" login && DISK=$(cat /tmp/disk)

verify() {
  [[ -b "$DISK" && -s /tmp/sums ]] || return 1
  fsck.ext4 -n -f "$DISK" || return 1
  mount "$DISK" "$MNT" || return 1
  (cd "$MNT" && sha256sum -c /tmp/sums) || { umount "$MNT"; return 1; }
  umount "$MNT"
}
vm_check "fsck clean, remount, checksums verify after re-login" verify
vm_check "final logout" logout

stop_and_check() {
  local pid
  pid=$(cat /tmp/rustio-serve.pid) || return 1
  kill -TERM "$pid" || return 1
  vm_wait 20 bash -c "! kill -0 $pid" || { echo "server did not stop"; return 1; }
  # No corruption and no leaked clusters (exit 0).
  qemu-img check -f qcow2 "$IMG"
}
vm_check "server stops on SIGTERM; qemu-img check of the image is clean" stop_and_check

if grep -qi panic /tmp/rustio-serve.log; then
  vm_fail "rustio serve log has no panic"; head -20 /tmp/rustio-serve.log | sed 's/^/    | /'
fi
vm_summary
