#!/usr/bin/env bash
# Installs the Debian packages rustio's tests use (idempotent; quick when already present).
set -euo pipefail
PKGS=(
    libiscsi-bin        # iscsi-test-cu, iscsi-ls, iscsi-inq, iscsi-perf: independent initiator
    qemu-utils          # qemu-img / qemu-io: qcow2 cross-checks
    qemu-block-extra    # qemu-img iscsi:// URLs
    sg3-utils
    jq
    librbd-dev          # the rbd engine (cargo feature rbd) links librbd/librados
)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then rustup component add clippy; fi
if ! rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; then rustup component add rustfmt; fi
