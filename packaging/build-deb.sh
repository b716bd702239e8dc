#!/usr/bin/env bash
# Builds the Debian package of rustio with cargo-deb: the binary, the man pages and shell
# completions generated from its clap definition (`rustio generate`), the systemd units and
# D-Bus policy from dist/, the docs and an example /etc/rustio/saveconfig.json.example.
#
# Usage: packaging/build-deb.sh [--no-build] [--features LIST] [--out DIR]
#   --no-build     package the rustio already built in $CARGO_TARGET_DIR/release/
#   --features     cargo features of the build (e.g. rbd; the package then depends on librbd1)
#   --out DIR      where the .deb goes (default: $CARGO_TARGET_DIR/debian)
# Env: CARGO_TARGET_DIR (default: target/ of the repository).
# Needs cargo-deb (`cargo install cargo-deb --locked`; .ci/install-deps.sh pkg installs it).
# Prints the path of the .deb as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
build=1
features=""
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --features) features=$2; shift ;;
        --out) out=$2; shift ;;
        *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
TD=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$TD"
TD=$(cd "$TD" && pwd)
export CARGO_TARGET_DIR=$TD
out=${out:-$TD/debian}
command -v cargo-deb >/dev/null || { echo "build-deb: cargo-deb not found (cargo install cargo-deb --locked)" >&2; exit 1; }

feat=()
[ -n "$features" ] && feat=(--features "$features")
if ((build)); then
    cargo build --release -p rustio "${feat[@]}" >&2
fi
BIN=$TD/release/rustio
[ -x "$BIN" ] || { echo "build-deb: $BIN not built" >&2; exit 1; }

# Generated assets, where [package.metadata.deb] in crates/cli/Cargo.toml expects them
# (target/release/pkg/, cargo-deb's placeholder for $TD/release/pkg/).
PKG=$TD/release/pkg
rm -rf "$PKG"
"$BIN" generate man "$PKG/man"
gzip -9n "$PKG"/man/*.8
mkdir -p "$PKG/completions"
"$BIN" generate completions bash >"$PKG/completions/rustio"
"$BIN" generate completions zsh >"$PKG/completions/_rustio"
"$BIN" generate completions fish >"$PKG/completions/rustio.fish"

mkdir -p "$out"
deb=$(cargo deb -p rustio --no-build "${feat[@]}" --output "$out" --no-dbgsym --strip | tail -n 1)
[ -f "$deb" ] || { echo "build-deb: cargo deb did not report a .deb (got '$deb')" >&2; exit 1; }
echo "$deb"
