#!/usr/bin/env bash
# Debian package suite (issue #23 items 3-5): builds the .deb with packaging/build-deb.sh
# (cargo-deb), checks its control data and file list, installs it with dpkg into a
# throwaway root under target/pkg/ (`dpkg --root`, maintainer scripts run chrootless and
# see DPKG_ROOT), runs the installed binary, checks its man pages, completions, systemd units
# (systemd-analyze verify), D-Bus policy and plain logs off a terminal, then purges it.
# No network. Prints PASS/FAIL lines; exits non-zero when any check fails.
#
# RUSTIO_BIN (set by .ci/run: .../release/rustio) is packaged as built (--no-build);
# without it the suite builds `cargo build --release -p rustio` into target/.
# Needs (.ci/install-deps.sh pkg): cargo-deb, dpkg, systemd-analyze, man/groff;
# zsh and fish are used when present.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=$ROOT/target/pkg
failed=0
pass() { echo "PASS pkg: $*"; }
fail() { echo "FAIL pkg: $*"; failed=$((failed + 1)); }
skip() { echo "SKIP pkg: $*"; }
ESC=$'\x1b'

rm -rf "$WORK"
mkdir -p "$WORK"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

# --- build ---------------------------------------------------------------------------
build_args=(--out "$WORK/deb")
if [ -n "${RUSTIO_BIN:-}" ] && [ "${RUSTIO_BIN%/release/rustio}" != "$RUSTIO_BIN" ]; then
    export CARGO_TARGET_DIR=${RUSTIO_BIN%/release/rustio}
    build_args+=(--no-build)
fi
if deb=$(timeout 1500 bash packaging/build-deb.sh "${build_args[@]}" 2>"$WORK/build.log" | tail -n 1) && [ -f "$deb" ]; then
    pass "build: $(basename "$deb") ($(du -h "$deb" | cut -f1))"
else
    cat "$WORK/build.log"
    fail "build: packaging/build-deb.sh ${build_args[*]}"
    echo "pkg: $failed failed"
    exit 1
fi

# --- control data and contents ---------------------------------------------------------
ctl_ok=1
[ "$(dpkg-deb -f "$deb" Package)" = rustio ] || ctl_ok=0
[ "$(dpkg-deb -f "$deb" Version)" = "$VERSION-1" ] || ctl_ok=0
dpkg-deb -f "$deb" Depends | grep -q 'libc6' || ctl_ok=0
if ((ctl_ok)); then pass "control: rustio $VERSION-1, $(dpkg-deb -f "$deb" Depends)"; else
    dpkg-deb -I "$deb"; fail "control fields"; fi

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$WORK/contents"
want=(
    /usr/bin/rustio
    /lib/systemd/system/rustio-serve.service
    /lib/systemd/system/rustio-runner.service
    /lib/systemd/system/rustio-target.service
    /usr/share/dbus-1/system.d/org.kernel.TCMUService1.conf
    /usr/share/man/man8/rustio.8.gz
    /usr/share/man/man8/rustio-serve.8.gz
    /usr/share/man/man8/rustio-runner.8.gz
    /usr/share/man/man8/rustio-restore.8.gz
    /usr/share/man/man8/rustio-clear.8.gz
    /usr/share/bash-completion/completions/rustio
    /usr/share/zsh/vendor-completions/_rustio
    /usr/share/fish/vendor_completions.d/rustio.fish
    /usr/share/doc/rustio/README.md
    /usr/share/doc/rustio/packaging.md
    /usr/share/doc/rustio/copyright
    /etc/rustio/saveconfig.json.example
)
missing=()
for f in "${want[@]}"; do grep -qxF "$f" "$WORK/contents" || missing+=("$f"); done
if ((${#missing[@]} == 0)); then pass "contents: ${#want[@]} required paths"; else
    fail "contents: missing ${missing[*]}"; fi
if dpkg-deb -I "$deb" conffiles 2>/dev/null | grep -qxF /etc/rustio/saveconfig.json.example; then
    pass "conffiles: /etc/rustio/saveconfig.json.example"
else fail "conffiles"; fi

# --- install into a throwaway root -------------------------------------------------------
R=$WORK/root
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/log"
touch "$R/var/lib/dpkg/status" "$R/var/lib/dpkg/available"
DPKG=(dpkg --root="$R" --log="$R/var/log/dpkg.log" --force-script-chrootless)
[ "$(id -u)" = 0 ] || DPKG+=(--force-not-root)
# The root has no libc6 package (the host's libc runs the binary): dependencies forced.
if timeout 120 "${DPKG[@]}" --force-depends -i "$deb" >"$WORK/install.log" 2>&1 &&
    "${DPKG[@]}" -s rustio 2>/dev/null | grep -qx 'Status: install ok installed'; then
    pass "install: dpkg --root (maintainer scripts ran)"
else
    cat "$WORK/install.log"; fail "install"
fi
B=$R/usr/bin/rustio

# --- the installed binary ----------------------------------------------------------------
if [ "$(timeout 10 "$B" --version)" = "rustio $VERSION" ]; then pass "rustio --version"; else fail "rustio --version: $("$B" --version 2>&1)"; fi
help=$(timeout 10 "$B" --help 2>&1)
if grep -q '^  serve ' <<<"$help" && grep -q '^  restore ' <<<"$help" && ! grep -q generate <<<"$help"; then
    pass "rustio --help lists serve and restore, not generate"
else echo "$help"; fail "rustio --help"; fi

# --- man pages ---------------------------------------------------------------------------
"$B" generate man "$WORK/man-fresh"
fresh=$(cd "$WORK/man-fresh" && ls | sed 's/$/.gz/' | sort)
installed=$(ls "$R/usr/share/man/man8" | sort)
if [ "$fresh" = "$installed" ]; then pass "man: one page per command ($(wc -l <<<"$installed") pages)"; else
    diff <(echo "$fresh") <(echo "$installed"); fail "man: installed pages differ from the command tree"; fi
bad=0
for p in "$R"/usr/share/man/man8/*.8.gz; do
    if command -v man >/dev/null; then
        warn=$(LC_ALL=C.UTF-8 MANWIDTH=80 timeout 20 man --warnings -l -Tutf8 "$p" 2>&1 >/dev/null)
    else
        warn=$(zcat "$p" | timeout 20 groff -man -Tutf8 -ww -z 2>&1)
    fi
    [ -z "$warn" ] || { echo "$p: $warn"; bad=1; }
done
if ((bad)); then fail "man: rendering warnings"; else pass "man: every page renders without warnings"; fi

# --- completions -------------------------------------------------------------------------
if bash -n "$R/usr/share/bash-completion/completions/rustio" &&
    bash -c "source '$R/usr/share/bash-completion/completions/rustio' && complete -p rustio" >/dev/null; then
    pass "completion: bash (syntax, registers 'complete -F _rustio rustio')"
else fail "completion: bash"; fi
for sh in zsh fish; do
    case $sh in zsh) f=$R/usr/share/zsh/vendor-completions/_rustio ;; fish) f=$R/usr/share/fish/vendor_completions.d/rustio.fish ;; esac
    if ! command -v $sh >/dev/null; then skip "completion: $sh not installed"; continue; fi
    if timeout 20 $sh -n "$f"; then pass "completion: $sh -n"; else fail "completion: $sh -n"; fi
done

# --- systemd units -----------------------------------------------------------------------
U=$WORK/units
mkdir -p "$U"
for u in "$R"/lib/systemd/system/*.service; do
    # The binary is checked where it was installed.
    sed "s|/usr/bin/rustio|$B|g" "$u" >"$U/$(basename "$u")"
done
if out=$(cd "$U" && timeout 60 systemd-analyze verify --man=no ./*.service 2>&1) &&
    ! grep -q 'rustio' <<<"$out"; then
    pass "units: systemd-analyze verify ($(cd "$U" && echo *.service))"
else
    echo "$out"; fail "units: systemd-analyze verify"
fi
[ -n "$out" ] && echo "pkg: (systemd-analyze notes about other units on this host: $(tr '\n' ' ' <<<"$out"))"
docs_ok=1
for m in $(grep -ho 'man:[a-z-]*(8)' "$R"/lib/systemd/system/rustio-*.service | sed 's/man:\(.*\)(8)/\1/' | sort -u); do
    [ -f "$R/usr/share/man/man8/$m.8.gz" ] || { echo "no page for man:$m(8)"; docs_ok=0; }
done
for d in $(grep -ho 'file:///usr/share/doc/rustio/[a-z.-]*' "$R"/lib/systemd/system/rustio-*.service | sed 's|file://||' | sort -u); do
    [ -f "$R$d" ] || { echo "no $d"; docs_ok=0; }
done
if ((docs_ok)); then pass "units: every Documentation= page is installed"; else fail "units: Documentation= pages"; fi
S=$R/lib/systemd/system
if grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$S/rustio-serve.service" &&
    grep -qx 'ExecStart=/usr/bin/rustio serve --config /etc/rustio/saveconfig.json' "$S/rustio-serve.service" &&
    grep -qx 'RemainAfterExit=yes' "$S/rustio-target.service" &&
    grep -qx 'ExecStop=/usr/bin/rustio clear --confirm' "$S/rustio-target.service" &&
    grep -qx 'ExecStart=/usr/bin/rustio restore /etc/target/saveconfig.json' "$S/rustio-target.service"; then
    pass "units: serve reloads on SIGHUP; target restores at start and clears at stop"
else fail "units: serve/target commands"; fi

# --- D-Bus policy, example configuration ---------------------------------------------------
pol=$R/usr/share/dbus-1/system.d/org.kernel.TCMUService1.conf
if command -v xmllint >/dev/null; then xml_ok() { xmllint --noout "$1"; }
elif command -v python3 >/dev/null; then xml_ok() { python3 -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' "$1"; }
else xml_ok() { grep -q '</busconfig>' "$1"; }; fi
if xml_ok "$pol" && grep -q 'org.kernel.TCMUService1' "$pol"; then pass "dbus policy: well-formed, owns org.kernel.TCMUService1"; else fail "dbus policy"; fi
mkdir -p "$WORK/configfs"
if timeout 20 "$B" restore --dry-run --configfs-root "$WORK/configfs" "$R/etc/rustio/saveconfig.json.example" >"$WORK/example.plan" 2>&1; then
    pass "example saveconfig.json: restore --dry-run plans $(grep -c '^ *[0-9]*\. ' "$WORK/example.plan") steps"
else cat "$WORK/example.plan"; fail "example saveconfig.json does not load"; fi

# --- logs: plain off a terminal, colour on one ----------------------------------------------
# A debug line is logged before the first configfs step fails on the empty directory.
logcmd=("$B" --log debug create backstore ramdisk r0 1M --configfs-root "$WORK/configfs")
env -u NO_COLOR TERM=xterm-256color "${logcmd[@]}" >/dev/null 2>"$WORK/log.file"
if grep -q DEBUG "$WORK/log.file" && ! grep -q "$ESC" "$WORK/log.file"; then
    pass "logs: stderr to a file has log lines and no ESC byte"
else cat -v "$WORK/log.file"; fail "logs: stderr to a file"; fi
if command -v script >/dev/null; then
    env -u NO_COLOR TERM=xterm script -qec "${logcmd[*]}" /dev/null >"$WORK/log.tty" 2>&1
    NO_COLOR=1 TERM=xterm script -qec "${logcmd[*]}" /dev/null >"$WORK/log.tty-nocolor" 2>&1
    if grep -q "$ESC" "$WORK/log.tty" && grep -q DEBUG "$WORK/log.tty-nocolor" && ! grep -q "$ESC" "$WORK/log.tty-nocolor"; then
        pass "logs: colour on a terminal, none there with NO_COLOR=1"
    else cat -v "$WORK/log.tty" "$WORK/log.tty-nocolor"; fail "logs: terminal colour / NO_COLOR"; fi
else skip "logs: no script(1) for a pseudo-terminal"; fi

# --- purge -------------------------------------------------------------------------------
if timeout 120 "${DPKG[@]}" --purge rustio >"$WORK/purge.log" 2>&1 && [ ! -e "$B" ] &&
    [ ! -e "$R/etc/rustio" ] && [ ! -e "$S/rustio-serve.service" ]; then
    pass "purge: binary, units and /etc/rustio removed"
else cat "$WORK/purge.log"; fail "purge"; fi

echo "pkg: done, $failed failed"
[ "$failed" -eq 0 ]
