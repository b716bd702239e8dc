#!/usr/bin/env bash
# The one place that installs the Debian packages rustio's tests and benchmarks use.
#
# Usage: .ci/install-deps.sh [--check] [SET ...]
#   SET     base   iSCSI clients, qemu-img with iscsi://, sg3-utils, jq, librbd-dev (build)
#           vm     the real-kernel VM harness (tests/vm/): QEMU, the Debian kernel, initramfs
#                  tools, and what the guest scripts run (targetcli, open-iscsi, fio, tcmu-runner,
#                  multipath-tools for dm-multipath,
#                  tmux for the shell tests)
#           ceph   a throwaway single-node Ceph cluster (tests/ceph/)
#           bench  the benchmark anchors (tgt, iperf3)
#           pkg    the Debian package suite (tests/pkg/): systemd-analyze, man/groff, zsh and
#                  fish (completion syntax checks), script(1), and cargo-deb (cargo install,
#                  pinned version: it is not a Debian package)
#           ci     base + vm + ceph + pkg: everything `bash .ci/run` needs (the default)
#   --check only report; exit 1 naming what is missing
#
# Every package of every requested set goes into ONE apt-get call, so apt resolves them as
# one set. QEMU's packages must share one version: qemu-block-extra (iscsi:// for qemu-img)
# and qemu-system-x86 are pinned to the same version as qemu-utils, picking a version the
# archive has for all three — an image that ships a newer qemu-utils from a backport is
# brought back to the archive's matching set instead of losing qemu-img to a conflict.
# After installing, every tool the suites call is looked up on PATH; a missing one fails
# here with its name, before any test runs. Idempotent; a fast no-op when all is present.
set -euo pipefail

check_only=0
sets=()
for a in "$@"; do
    case "$a" in
        --check) check_only=1 ;;
        base | vm | ceph | bench | pkg) sets+=("$a") ;;
        ci) sets+=(base vm ceph pkg) ;;
        *) echo "install-deps: unknown set '$a' (base, vm, ceph, bench, pkg, ci)" >&2; exit 2 ;;
    esac
done
((${#sets[@]})) || sets=(base vm ceph pkg)

# Packages per set, and the commands (or files) each set must leave behind.
declare -A PKGS TOOLS
PKGS[base]="libiscsi-bin qemu-utils qemu-block-extra sg3-utils jq librbd-dev pkg-config"
TOOLS[base]="iscsi-test-cu iscsi-ls iscsi-inq iscsi-perf qemu-img qemu-io sg_inq jq pkg-config
             /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so /usr/include/rbd/librbd.h"
PKGS[vm]="qemu-system-x86 qemu-utils linux-image-amd64 busybox-static kmod cpio xz-utils zstd
          targetcli-fb python3-rtslib-fb dbus open-iscsi libiscsi-bin fio sg3-utils e2fsprogs
          util-linux procps tcmu-runner lsscsi jq tmux multipath-tools"
TOOLS[vm]="qemu-system-x86_64 qemu-img busybox modinfo cpio xz zstd targetcli dbus-daemon
           iscsiadm iscsid iscsi-ls fio sg_inq mkfs.ext4 tcmu-runner lsscsi jq tmux multipath multipathd"
PKGS[ceph]="ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev"
TOOLS[ceph]="ceph-mon ceph-osd ceph-mgr ceph rbd /usr/include/rbd/librbd.h"
PKGS[bench]="tgt tgt-rbd iperf3 python3"
TOOLS[bench]="tgtd tgtadm iperf3 python3 /usr/lib/tgt/backing-store/bs_rbd.so"
PKGS[pkg]="systemd man-db groff-base zsh fish bsdutils"
TOOLS[pkg]="systemd-analyze man groff zsh fish script dpkg-deb cargo-deb"
# Installed with cargo for the pkg set (not packaged by Debian 12); pinned.
CARGO_DEB_VERSION=3.8.0
# The packages that must carry one version (see above).
# (qemu-system-data is arch-all with its own version string and a loose >> dependency.)
QEMU_SET=(qemu-utils qemu-block-extra qemu-system-x86 qemu-system-common)

declare -A want=() seen_tool=()
tools=()
for s in "${sets[@]}"; do
    for p in ${PKGS[$s]}; do want[$p]=1; done
    for t in ${TOOLS[$s]}; do
        [ -n "${seen_tool[$t]:-}" ] || tools+=("$t")
        seen_tool[$t]=1
    done
done

# dpkg-query exits 1 for a package dpkg has never seen; under pipefail that must not abort.
installed_version() { { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } | awk '$3 == "installed" {print $4}'; }
# The release's own suites (bookworm, -updates, -security), never a backport: a backport's
# QEMU needs newer dependencies (seabios, qemu-system-data) that apt will not pull from a
# backports suite without -t, so pinning to a backport version cannot be resolved.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
release_versions() {
    apt-cache madison "$1" 2>/dev/null |
        awk -F'|' -v c="$codename" '{gsub(/^ +| +$/, "", $2)} $3 ~ (" " c "(-updates|-security)?/") {print $2}'
}
# (Whole-input readers only: an early exit (grep -q, head) would SIGPIPE under pipefail.)
available() { release_versions "$1" | awk -v v="$2" '$0 == v {f = 1} END {exit !f}'; }

# Missing packages, and the QEMU packages whose version does not match the rest of the set.
missing=()
for p in "${!want[@]}"; do [ -n "$(installed_version "$p")" ] || missing+=("$p"); done
qemu_wanted=()
for p in "${QEMU_SET[@]}"; do
    if [ -n "${want[$p]:-}" ] || [ -n "$(installed_version "$p")" ]; then qemu_wanted+=("$p"); fi
done
qemu_mismatch() {
    local v="" p iv
    for p in "${qemu_wanted[@]}"; do
        iv=$(installed_version "$p")
        [ -n "$iv" ] || continue
        if [ -z "$v" ]; then v=$iv; elif [ "$v" != "$iv" ]; then return 0; fi
    done
    return 1
}

missing_tools() {
    local t
    for t in "${tools[@]}"; do
        case "$t" in
            /*) [ -e "$t" ] || echo "$t" ;;
            *) command -v "$t" >/dev/null 2>&1 || echo "$t" ;;
        esac
    done
}

if ((check_only)); then
    rc=0
    if ((${#missing[@]})); then echo "missing packages: ${missing[*]}"; rc=1; fi
    if qemu_mismatch; then echo "QEMU packages of different versions installed"; rc=1; fi
    mt=$(missing_tools | tr '\n' ' ')
    if [ -n "$mt" ]; then echo "missing tools: $mt"; rc=1; fi
    [ "$rc" -eq 0 ] && echo "install-deps: all installed (${sets[*]})"
    exit "$rc"
fi

if ((${#missing[@]})) || qemu_mismatch; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: must run as root (missing: ${missing[*]:-QEMU version mismatch})" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Package postinst scripts must not start daemons (iscsid, tcmu-runner, tgtd, ceph) on the
    # host: the tests start what they need by hand, inside the guest or on their own ports.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    trap '((created_policy)) && rm -f /usr/sbin/policy-rc.d' EXIT
    APT_OPTS=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    echo "install-deps: apt-get update"
    timeout 900 apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null

    # One QEMU version for the whole set: the installed qemu-utils' version when the release
    # has every wanted QEMU package at it, else the release's newest qemu-block-extra
    # (madison lists newest first).
    args=()
    for p in "${!want[@]}"; do
        case " ${QEMU_SET[*]} " in *" $p "*) ;; *) args+=("$p") ;; esac
    done
    if ((${#qemu_wanted[@]})); then
        qv=$(installed_version qemu-utils)
        for p in "${qemu_wanted[@]}"; do
            if [ -n "$qv" ] && ! available "$p" "$qv"; then qv=""; break; fi
        done
        if [ -z "$qv" ]; then
            qv=$(release_versions qemu-block-extra | awk 'NR == 1')
        fi
        [ -n "$qv" ] && [ "$qv" != "(none)" ] || { echo "install-deps: no QEMU version to install" >&2; exit 1; }
        echo "install-deps: QEMU packages at $qv: ${qemu_wanted[*]}"
        for p in "${qemu_wanted[@]}"; do args+=("$p=$qv"); done
    fi
    echo "install-deps: installing (one apt call): ${args[*]}"
    if ! timeout 1800 apt-get install "${APT_OPTS[@]}" --allow-downgrades "${args[@]}"; then
        echo "install-deps: apt-get install failed" >&2
        exit 1
    fi
fi

# cargo-deb for the pkg set: a cargo tool, installed where cargo puts binaries (on PATH
# wherever cargo is). (--check has exited above, naming it among the missing tools.)
if [[ " ${sets[*]} " == *" pkg "* ]] && ! command -v cargo-deb >/dev/null 2>&1; then
    echo "install-deps: cargo install cargo-deb --version $CARGO_DEB_VERSION --locked"
    timeout 1800 cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked ||
        { echo "install-deps: cargo install cargo-deb failed" >&2; exit 1; }
fi

# Verify: every tool the suites call must be here now, before any test runs.
mt=$(missing_tools | tr '\n' ' ')
if [ -n "$mt" ]; then
    echo "install-deps: FAIL: not found (a package may be installed but broken): $mt" >&2
    exit 1
fi
if qemu_mismatch; then
    echo "install-deps: FAIL: QEMU packages of different versions:" >&2
    for p in "${qemu_wanted[@]}"; do echo "  $p $(installed_version "$p")" >&2; done
    exit 1
fi

# clippy and rustfmt for the toolchain, where rustup manages it (a bare package-only machine,
# e.g. a fresh container or chroot, has no rustup: the Debian packages above are still ready).
if command -v rustup >/dev/null 2>&1; then
    comps=$(rustup component list --installed 2>/dev/null || true)
    for c in clippy rustfmt; do
        grep -q "^$c" <<<"$comps" || rustup component add "$c"
    done
else
    echo "install-deps: rustup not on PATH; clippy/rustfmt components not checked" >&2
fi
echo "install-deps: ready (${sets[*]}): ${#tools[@]} tools checked"
