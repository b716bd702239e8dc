#!/usr/bin/env bash
# Build tcmu-runner's `file` handler (handler_file.so, file_example.c upstream), which
# Debian's tcmu-runner binary package does not ship, from the Debian source package of the
# installed tcmu-runner version, so the benchmark can run the reference daemon with it.
#
# Usage: bench/tcmu/build-tcmu-file.sh [CACHE_DIR]
#   CACHE_DIR default: /var/tmp/rustio-bench/tcmu-runner-file (reused when handler_file.so
#   is already there). Prints the directory holding handler_file.so on its last line.
#   Exit status 0 on success; otherwise the reason is on stderr (and in CACHE_DIR/FAILED).
#
# The apt source list is private (a `deb-src` copy of the system's Debian source under
# CACHE_DIR/apt, with its own Dir::State::Lists / Dir::Etc::SourceList), so the system's apt
# configuration is not touched. Build dependencies are installed with apt-get (cmake,
# libnl-3-dev, libnl-genl-3-dev, libglib2.0-dev, libkmod-dev, zlib1g-dev, pkg-config).
# glfs, rbd, zbc, fbo and tcmalloc are disabled; only the handler_file target is built.
set -euo pipefail
CACHE=${1:-/var/tmp/rustio-bench/tcmu-runner-file}
mkdir -p "$CACHE"
if [[ -s "$CACHE/handler_file.so" ]]; then
  echo "$CACHE"
  exit 0
fi
fail() { echo "build-tcmu-file: $*" | tee "$CACHE/FAILED" >&2; exit 1; }
rm -f "$CACHE/FAILED"

ver=$(dpkg-query -W -f='${Version}' tcmu-runner 2>/dev/null || true)
[[ -n "$ver" ]] || fail "tcmu-runner is not installed (apt-get install tcmu-runner)"

apt_dir=$CACHE/apt
mkdir -p "$apt_dir/lists/partial" "$CACHE/src"
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
echo "deb-src http://deb.debian.org/debian $suite main" >"$apt_dir/sources.list"
APT=(apt-get -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Etc::SourceList=$apt_dir/sources.list"
     -o "Dir::Etc::SourceParts=/dev/null")
"${APT[@]}" update >"$CACHE/apt-update.log" 2>&1 || fail "apt-get update (deb-src) failed; see $CACHE/apt-update.log"

deps=(cmake libnl-3-dev libnl-genl-3-dev libglib2.0-dev libkmod-dev zlib1g-dev pkg-config make gcc)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
    >"$CACHE/apt-install.log" 2>&1 || fail "installing ${missing[*]} failed; see $CACHE/apt-install.log"
fi

cd "$CACHE/src"
# The source package is called tcmu; ask for the installed binary version.
if [[ -z $(find . -mindepth 1 -maxdepth 1 -type d -name "tcmu-*") ]]; then
  "${APT[@]}" source "tcmu-runner=$ver" >"$CACHE/apt-source.log" 2>&1 ||
    "${APT[@]}" source tcmu-runner >>"$CACHE/apt-source.log" 2>&1 ||
    fail "apt-get source tcmu-runner failed; see $CACHE/apt-source.log"
fi
srcdir=$(find "$CACHE/src" -mindepth 1 -maxdepth 1 -type d -name "tcmu-*" | head -1)
mkdir -p "$CACHE/build"
cd "$CACHE/build"
cmake "$srcdir" -Dwith-glfs=false -Dwith-rbd=false -Dwith-zbc=false -Dwith-fbo=false \
  -Dwith-tcmalloc=false -Dwith-qcow=false -DSUPPORT_SYSTEMD=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_INSTALL_PREFIX=/usr >"$CACHE/cmake.log" 2>&1 || fail "cmake failed; see $CACHE/cmake.log"
make handler_file >"$CACHE/make.log" 2>&1 || fail "make handler_file failed; see $CACHE/make.log"
cp handler_file.so "$CACHE/handler_file.so.tmp"
mv "$CACHE/handler_file.so.tmp" "$CACHE/handler_file.so"
echo "tcmu-runner source ${srcdir##*/} (installed binary $ver)" >"$CACHE/VERSION"
echo "$CACHE"
