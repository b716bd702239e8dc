#!/usr/bin/env bash
# Install (idempotently) everything the rustio real-kernel VM harness needs on a
# fresh Debian 12 (bookworm) machine. Must run as root. Fast no-op when all
# packages are already installed.
#
# Usage: tests/vm/install-deps.sh [--check]
#   --check   only report what is missing; exit 1 if anything is.
set -euo pipefail

# Required: without these the harness cannot work at all.
REQUIRED=(
  qemu-system-x86     # qemu-system-x86_64 (TCG)
  linux-image-amd64   # guest kernel + modules (LIO, tcm_loop, iscsi, uio, 9p)
  busybox-static      # initramfs userland
  kmod                # modinfo for module dependency closure
  cpio                # initramfs packing
  xz-utils            # decompress .ko.xz modules
  zstd                # decompress .ko.zst modules (newer kernels)
)
# Tools used by guest test scripts (run from the host root inside the chroot).
TOOLS=(
  targetcli-fb python3-rtslib-fb dbus   # targetcli (needs system D-Bus)
  open-iscsi                            # iscsiadm / iscsid initiator
  libiscsi-bin                          # iscsi-ls, iscsi-inq, iscsi-test-cu, ...
  fio sg3-utils e2fsprogs util-linux procps
  qemu-utils                            # qemu-img (qcow2 image for the tcmu-runner check)
  tcmu-runner                           # optional in principle; present in bookworm
)
# Nice to have; installed when the distribution has them, never fatal.
OPTIONAL_TOOLS=(
  lsscsi
)

# One dpkg-query for all packages (fast path when everything is installed).
missing=()
declare -A have=()
while read -r pkg st1 st2 st3; do
  [[ "$st1 $st2 $st3" == "install ok installed" ]] && have[${pkg%%:*}]=1
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${REQUIRED[@]}" "${TOOLS[@]}" 2>/dev/null || true)
for p in "${REQUIRED[@]}" "${TOOLS[@]}"; do
  [[ -n "${have[$p]:-}" ]] || missing+=("$p")
done

if [[ "${1:-}" == "--check" ]]; then
  if ((${#missing[@]})); then echo "missing: ${missing[*]}"; exit 1; fi
  echo "all VM harness packages installed"; exit 0
fi

if ((${#missing[@]} == 0)); then
  echo "install-deps: all packages already installed"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: must run as root (missing: ${missing[*]})" >&2
  exit 1
fi

echo "install-deps: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Never let package postinst scripts start daemons (iscsid, tcmu-runner, dbus)
# on the host: the harness starts them inside the guest by hand.
created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  created_policy=1
fi
cleanup() { if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

apt_install() {
  # DPkg::Lock::Timeout: another apt run on the machine must not fail us.
  timeout 1500 apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

if ! apt_install "${missing[@]}"; then
  # Lists may be stale/absent on a fresh machine: refresh once and retry.
  timeout 900 apt-get update -q -o DPkg::Lock::Timeout=600
  apt_install "${missing[@]}"
fi

# Optional extras: install if the distribution has them, never fail on them.
for p in "${OPTIONAL_TOOLS[@]}"; do
  if apt-cache show "$p" >/dev/null 2>&1 &&
     ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    apt_install "$p" || echo "install-deps: optional package $p failed to install (ignored)"
  fi
done

echo "install-deps: done"
