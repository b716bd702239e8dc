#!/usr/bin/env bash
# Build (or reuse from cache) the initramfs used by tests/vm/run.sh.
#
# The initramfs holds busybox-static, the kernel modules needed to mount the
# host root over virtio-9p, and the LIO/TCMU/iSCSI/SCSI module set (each with
# its full dependency + softdep closure, in load order). Its /init:
#   1. loads the modules, mounts /proc /sys /dev,
#   2. mounts the host root read-only (9p tag "hostroot") at /root,
#   3. puts tmpfs on the writable dirs of that tree (/tmp /run /var/tmp ...),
#   4. mounts the per-run control dir (9p tag "ctl", read-write) and any extra
#      --share dirs at their host paths, mounts configfs, brings up lo,
#   5. chroots into the host root and runs the command run.sh wrote to
#      <ctl>/cmd, writes its exit code to <ctl>/rc and dmesg to <ctl>/dmesg.log,
#   6. powers the VM off.
#
# Usage: build-initramfs.sh [--kernel VERSION] [--force]
# Prints, on its last stdout line, "KVER<TAB>KERNEL<TAB>INITRAMFS" where
# KERNEL is a cached uncompressed vmlinux (PVH boot, ~5 s faster under TCG)
# or /boot/vmlinuz-KVER (set RUSTIO_VM_PVH=0 to force the latter).
# Cache: ${RUSTIO_VM_CACHE:-/var/tmp/rustio-vm}/initramfs-<kver>-<hash>.cpio,
# keyed by kernel version + this script's sha256 + busybox's sha256.
set -euo pipefail

CACHE_DIR=${RUSTIO_VM_CACHE:-/var/tmp/rustio-vm}
KVER=${RUSTIO_VM_KERNEL:-}
FORCE=0
while (($#)); do
  case "$1" in
    --kernel) KVER=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "build-initramfs: unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "build-initramfs: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Pick the newest installed Debian kernel that has both a vmlinuz and modules.
if [[ -z "$KVER" ]]; then
  for v in $(ls -1 /boot 2>/dev/null | sed -n 's/^vmlinuz-//p' | sort -V -r); do
    if [[ -f /lib/modules/$v/modules.dep ]]; then KVER=$v; break; fi
  done
fi
[[ -n "$KVER" ]] || die "no kernel found in /boot with modules in /lib/modules (run .ci/install-deps.sh vm)"
VMLINUZ=/boot/vmlinuz-$KVER
[[ -r "$VMLINUZ" ]] || die "$VMLINUZ not readable"
[[ -f /lib/modules/$KVER/modules.dep ]] || die "/lib/modules/$KVER/modules.dep missing"
BUSYBOX=$(command -v busybox || true)
[[ -n "$BUSYBOX" ]] || die "busybox not found (apt-get install busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is dynamically linked; install busybox-static"
fi
command -v modprobe >/dev/null || die "modprobe not found (apt-get install kmod)"
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"

# Modules needed to reach the host root (loaded first, order matters:
# virtio_pci must be up before 9pnet_virtio can find its devices).
BOOT_MODULES=(virtio_pci 9pnet_virtio 9p)
# Modules for storage-target testing. Aliases (crypto-crc32c) are fine.
TEST_MODULES=(
  configfs target_core_mod target_core_file target_core_iblock target_core_pscsi
  target_core_user uio tcm_loop iscsi_target_mod
  scsi_mod sd_mod sg iscsi_tcp
  crypto-crc32c crc32c_generic crct10dif crc64_rocksoft_generic
  loop ext4
)

# An uncompressed ELF vmlinux boots via PVH straight into the kernel; that
# skips SeaBIOS's bzImage path and the in-guest xz decompression, which under
# TCG costs ~5 s per boot. Extract it once per kernel (falls back to vmlinuz).
extract_vmlinux() {
  local dst=$CACHE_DIR/vmlinux-$KVER
  local stamp
  stamp=$(stat -c '%s-%Y' "$VMLINUZ")
  if [[ -s "$dst" && "$(cat "$dst.stamp" 2>/dev/null)" == "$stamp" ]]; then
    echo "$dst"; return 0
  fi
  command -v python3 >/dev/null || return 1
  python3 - "$VMLINUZ" "$dst.tmp.$$" <<'PY' || { rm -f "$dst.tmp.$$"; return 1; }
import sys, lzma, gzip, zlib
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
def elf_ok(b):
    return b[:4] == b"\x7fELF" and len(b) > 1 << 20
out = None
xz = data.find(b"\xfd7zXZ\x00")
if xz >= 0:
    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[xz:])
if out is None:
    gz = data.find(b"\x1f\x8b\x08\x00")
    if gz >= 0:
        out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[gz:])
if out is None or not elf_ok(out):
    sys.exit(1)
# Only usable if the kernel carries a PVH entry note ("Xen", type 18 =
# XEN_ELFNOTE_PHYS32_ENTRY) in a PT_NOTE segment of the ELF64 image.
import struct
phoff, = struct.unpack_from("<Q", out, 0x20)
phentsize, phnum = struct.unpack_from("<HH", out, 0x36)
pvh = False
for i in range(phnum):
    p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", out, phoff + i * phentsize)
    if p_type != 4:  # PT_NOTE
        continue
    pos, end = p_offset, p_offset + p_filesz
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", out, pos)
        name = out[pos + 12:pos + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and ntype == 18:
            pvh = True
        pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
if not pvh:
    sys.exit(1)
open(dst, "wb").write(out)
PY
  mv -f "$dst.tmp.$$" "$dst"
  echo "$stamp" >"$dst.stamp"
  echo "$dst"
}

SELF_HASH=$( { sha256sum "$0" | cut -d' ' -f1; sha256sum "$BUSYBOX" | cut -d' ' -f1; echo "$KVER"; } | sha256sum | cut -c1-16)
OUT=$CACHE_DIR/initramfs-$KVER-$SELF_HASH.cpio
mkdir -p "$CACHE_DIR"
if [[ "${RUSTIO_VM_PVH:-1}" != 0 ]] && K=$(extract_vmlinux); then
  KERNEL_IMAGE=$K
else
  KERNEL_IMAGE=$VMLINUZ
fi

if [[ -s "$OUT" && $FORCE -eq 0 ]]; then
  printf '%s\t%s\t%s\n' "$KVER" "$KERNEL_IMAGE" "$OUT"
  exit 0
fi

# Serialise concurrent builds of the same image.
exec 9>"$CACHE_DIR/.build.lock"
flock -w 600 9 || die "timed out waiting for build lock"
if [[ -s "$OUT" && $FORCE -eq 0 ]]; then
  printf '%s\t%s\t%s\n' "$KVER" "$KERNEL_IMAGE" "$OUT"
  exit 0
fi

start=$(date +%s.%N)
STAGE=$(mktemp -d "$CACHE_DIR/stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,sbin,dev,proc,sys,root,tmp,run,etc,etc/target,lib/modules/"$KVER"/kernel,stage}

cp "$BUSYBOX" "$STAGE/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ "$applet" == busybox ]] && continue
  ln -sf busybox "$STAGE/bin/$applet"
done

# Resolve each module's closure (deps + softdeps) in load order with
# `modprobe --show-depends`, dedupe keeping the first occurrence.
declare -A seen=()
order=()
resolve() {
  local m=$1 line path
  local out
  if ! out=$(modprobe -S "$KVER" --show-depends "$m" 2>&1); then
    die "cannot resolve module $m for $KVER: $out"
  fi
  while IFS= read -r line; do
    case "$line" in
      insmod\ *)
        path=${line#insmod }
        path=${path%% *}
        if [[ -z "${seen[$path]:-}" ]]; then
          seen[$path]=1
          order+=("$path")
        fi
        ;;
      builtin\ *) ;;
    esac
  done <<<"$out"
}
for m in "${BOOT_MODULES[@]}"; do resolve "$m"; done
n_boot=${#order[@]}
for m in "${TEST_MODULES[@]}"; do resolve "$m"; done

: >"$STAGE/etc/modules.boot"
: >"$STAGE/etc/modules.test"
i=0
for path in "${order[@]}"; do
  rel=${path#/lib/modules/"$KVER"/}
  dst="$STAGE/lib/modules/$KVER/$rel"
  mkdir -p "$(dirname "$dst")"
  case "$path" in
    *.ko.xz)  xz -dc "$path" >"${dst%.xz}"; rel=${rel%.xz} ;;
    *.ko.zst) zstd -qdc "$path" >"${dst%.zst}"; rel=${rel%.zst} ;;
    *.ko.gz)  gzip -dc "$path" >"${dst%.gz}"; rel=${rel%.gz} ;;
    *.ko)     cp "$path" "$dst" ;;
    *) die "unexpected module file $path" ;;
  esac
  if ((i < n_boot)); then
    echo "/lib/modules/$KVER/$rel" >>"$STAGE/etc/modules.boot"
  else
    echo "/lib/modules/$KVER/$rel" >>"$STAGE/etc/modules.test"
  fi
  i=$((i + 1))
done

# Kernel's request_module() runs /proc/sys/kernel/modprobe with the
# initramfs as its root; forward it to the host's modprobe inside the
# chroot (the host has /lib/modules/$KVER), so any other module autoloads.
cat >"$STAGE/sbin/modprobe-chroot" <<'EOF'
#!/bin/sh
exec /bin/chroot /root /sbin/modprobe "$@"
EOF
chmod 755 "$STAGE/sbin/modprobe-chroot"

cat >"$STAGE/init" <<'INIT'
#!/bin/sh
# rustio VM harness init (generated by tests/vm/build-initramfs.sh)
export PATH=/bin:/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
stty -onlcr 2>/dev/null

say() { echo "[vm-init] $*"; }
die_early() {
  say "FATAL: $*"
  dmesg | tail -n 40
  echo o >/proc/sysrq-trigger
  sleep 5
  poweroff -f
}

arg() { # arg NAME -> value of NAME= on the kernel cmdline
  for w in $(cat /proc/cmdline); do
    case "$w" in "$1"=*) echo "${w#*=}"; return 0 ;; esac
  done
  return 1
}
RUN=$(arg rustio_run) || die_early "no rustio_run= on kernel cmdline"
VERBOSE=$(arg rustio_verbose || echo 0)
vsay() { [ "$VERBOSE" = 1 ] && say "$@"; return 0; }

echo 1 >/proc/sys/kernel/sysrq
for m in $(cat /etc/modules.boot); do
  insmod "$m" 2>/dev/null || vsay "insmod $m failed"
done

mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /root \
  || die_early "cannot mount host root (9p tag hostroot)"
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=262144 ctl /stage \
  || die_early "cannot mount control dir (9p tag ctl)"
[ -f /stage/vm.env ] || die_early "control dir has no vm.env"
. /stage/vm.env

for m in $(cat /etc/modules.test); do
  insmod "$m" 2>/dev/null || vsay "insmod $m failed (may be built-in or unsupported)"
done
echo /sbin/modprobe-chroot >/proc/sys/kernel/modprobe

R=/root
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts 2>/dev/null
mount -t tmpfs tmpfs $R/dev/shm
mount -t configfs configfs $R/sys/kernel/config 2>/dev/null || say "WARN: configfs mount failed"
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null

# Writable directories: fresh tmpfs, or tmpfs seeded with the host contents.
for d in /tmp /var/tmp /run /var/log /root /var/lib/iscsi /var/lib/tcmu; do
  [ -d "$R$d" ] || continue
  mount -t tmpfs -o mode=0755 tmpfs "$R$d" || say "WARN: tmpfs on $d failed"
done
chmod 1777 $R/tmp $R/var/tmp
for d in /etc/target /etc/iscsi /etc/rtslib-fb-target /var/lib/dbus; do
  [ -d "$R$d" ] || continue
  mkdir -p "/seed$d"
  cp -a "$R$d/." "/seed$d/" 2>/dev/null
  mount -t tmpfs -o mode=0755 tmpfs "$R$d" && cp -a "/seed$d/." "$R$d/"
done
mkdir -p $R/run/lock $R/run/lock/iscsi $R/run/dbus $R/root/.targetcli
# rtslib-fb (targetcli) wants LIO's dbroot (PR/ALUA metadata dir) at
# /etc/rtslib-fb-target; it can only be changed before the first device
# exists. The kernel resolves the path in the writer's root, hence chroot.
if [ -d $R/etc/rtslib-fb-target ]; then
  chroot $R /bin/sh -c 'echo /etc/rtslib-fb-target >/sys/kernel/config/target/dbroot' 2>/dev/null ||
    vsay "could not set LIO dbroot"
fi

# Control dir and extra shares at their host paths.
mkdir -p "$R$RUN" 2>/dev/null
mount --move /stage "$R$RUN" 2>/dev/null || mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=262144 ctl "$R$RUN" \
  || die_early "cannot mount control dir at $RUN"
for s in $VM_SHARES; do   # tag=rw:/path or tag=ro:/path
  tag=${s%%=*}; spec=${s#*=}; mode=${spec%%:*}; path=${spec#*:}
  mkdir -p "$R$path" 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,$mode,msize=262144 "$tag" "$R$path" \
    || say "WARN: cannot mount share $tag at $path"
done

ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
hostname rustio-vm

say "guest ready in $(cut -d' ' -f1 /proc/uptime)s (kernel $(uname -r)); running: $VM_DESC"
# Guest-side deadline (host epoch seconds; the RTC gives the guest host time).
left=$(( ${VM_DEADLINE:-0} - $(date +%s) ))
# Sanity fallback if the guest clock is off: budget minus guest uptime.
up=$(cut -d. -f1 /proc/uptime)
budget=$(( ${VM_BUDGET:-600} - up ))
if [ "$left" -le 0 ] || [ "$left" -gt "${VM_BUDGET:-600}" ]; then
  say "WARN: guest clock looks off (deadline in ${left}s); using ${budget}s"
  left=$budget
fi
[ "$left" -lt 5 ] && left=5
timeout -s KILL "$left" chroot $R /bin/sh "$RUN/cmd"
rc=$?
if [ "$rc" = 137 ] && [ "$(date +%s)" -ge "$(( ${VM_DEADLINE:-0} - 1 ))" ]; then
  say "script killed at the guest-side deadline (${left}s after start)"
  rc=124
fi
say "script exited with $rc after $(cut -d' ' -f1 /proc/uptime)s uptime"
dmesg >"$R$RUN/dmesg.log" 2>/dev/null
if grep -qE 'Oops|BUG:|WARNING:|Call Trace:|general protection|blocked for more than' "$R$RUN/dmesg.log"; then
  say "KERNEL PROBLEM detected in dmesg (oops/BUG/WARNING/hung task):"
  grep -E -B2 -A12 'Oops|BUG:|WARNING:|general protection|blocked for more than' "$R$RUN/dmesg.log" | head -n 60
  echo 1 >"$R$RUN/kernel-problem"
fi
echo "$rc" >"$R$RUN/rc"
sync
echo o >/proc/sysrq-trigger
sleep 5
poweroff -f
INIT
chmod 755 "$STAGE/init"

tmp="$OUT.tmp.$$"
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet --owner=0:0) >"$tmp"
mv -f "$tmp" "$OUT"
end=$(date +%s.%N)
log "built $OUT ($(du -h "$OUT" | cut -f1), ${#order[@]} modules) in $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')s"
# Drop older images for the same kernel.
find "$CACHE_DIR" -maxdepth 1 -name "initramfs-$KVER-*.cpio" ! -path "$OUT" -delete 2>/dev/null || true
printf '%s\t%s\t%s\n' "$KVER" "$KERNEL_IMAGE" "$OUT"
