#!/usr/bin/env bash
# Host-side self test of the real-kernel VM harness.
#
# Usage: tests/vm/selftest.sh [--harness] [--timeout SECS]
#   default    one VM boot running tests/vm/smoke.sh (modules, configfs, fileio,
#              iSCSI target + libiscsi tools, tcm_loop + dd/fio, targetcli,
#              open-iscsi login, TCMU via tcmu-runner, cleanup)
#   --harness  additionally checks run.sh itself (2 more short boots): exit
#              status propagation, --share write-back, and the timeout path.
#   --timeout  limit for the smoke boot (default 900 s; it takes ~70 s on an
#              idle 2-core machine, several times that when the host is busy).
# Prints timings (initramfs build, boot-to-ready, total) and exits non-zero
# if anything failed. Skips (exit 0, with a message) only when
# RUSTIO_VM_SKIP=1 is set.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS=0
TIMEOUT=900
while (($#)); do
  case "$1" in
    --harness) HARNESS=1; shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "selftest: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ "${RUSTIO_VM_SKIP:-}" == 1 ]]; then
  echo "selftest: RUSTIO_VM_SKIP=1, skipping VM tests"
  exit 0
fi

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "selftest: PASS: $*"; }
ko() { failed=$((failed + 1)); echo "selftest: FAIL: $*"; }
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }

t_all=$(now)
if ! "$HERE/../../.ci/install-deps.sh" --check vm; then
  echo "selftest: missing packages; run: sudo .ci/install-deps.sh vm" >&2
  exit 1
fi

t0=$(now)
if info=$("$HERE/build-initramfs.sh" --force | tail -n1); then
  t_build=$(dt "$t0" "$(now)")
  ok "initramfs built in ${t_build}s: $(cut -f3 <<<"$info")"
else
  ko "initramfs build"
  exit 1
fi

WORK=$(mktemp -d /var/tmp/rustio-vm-selftest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# ---- the smoke test (one boot)
t0=$(now)
"$HERE/run.sh" --timeout "$TIMEOUT" --out "$WORK/smoke" "$HERE/smoke.sh"
rc=$?
t_smoke=$(dt "$t0" "$(now)")
boot=$(sed -n 's/^\[vm-init\] guest ready in \([0-9.]*\)s.*/\1/p' "$WORK/smoke/console.log" 2>/dev/null | head -n1)
if ((rc == 0)); then
  ok "smoke.sh in VM (exit 0, ${t_smoke}s wall, guest ready after ${boot:-?}s uptime)"
else
  ko "smoke.sh in VM (exit $rc, ${t_smoke}s wall)"
  if [[ -s "$WORK/smoke/dmesg.log" ]]; then
    echo "---- guest dmesg (last 40 lines)"; tail -n 40 "$WORK/smoke/dmesg.log"
  fi
fi

# ---- harness behaviour (optional, two short boots)
if ((HARNESS)); then
  mkdir -p "$WORK/share"
  cat >"$WORK/share/probe.sh" <<'EOF'
#!/bin/sh
# writable share, args, env and cwd reach the guest; exit status comes back
echo "args:$#:$1:$2:$(printf %s "$3" | wc -l)" >"$SHARE_DIR/result.txt"
echo "vm:$RUSTIO_VM cwd:$(pwd) kernel:$(uname -r)" >>"$SHARE_DIR/result.txt"
touch "$RUSTIO_VM_OUT/marker"
exit 42
EOF
  chmod +x "$WORK/share/probe.sh"
  t0=$(now)
  (cd /usr/share && "$HERE/run.sh" --timeout 300 --share "$WORK/share" --out "$WORK/probe" \
      --env SHARE_DIR="$WORK/share" "$WORK/share/probe.sh" "a b" 'c$d' $'e\nf')
  rc=$?
  t_probe=$(dt "$t0" "$(now)")
  if ((rc == 42)) && grep -qx 'args:3:a b:c$d:1' "$WORK/share/result.txt" 2>/dev/null &&
     grep -q 'vm:1 cwd:/usr/share kernel:' "$WORK/share/result.txt" &&
     [[ -e "$WORK/probe/out/marker" ]]; then
    ok "run.sh: exit status 42 propagated, args/env/cwd passed, --share and \$RUSTIO_VM_OUT writable (${t_probe}s)"
  else
    ko "run.sh: probe (exit $rc; result: $(cat "$WORK/share/result.txt" 2>/dev/null | tr '\n' ' '))"
  fi

  printf '#!/bin/sh\necho sleeping forever\nexec sleep 100000\n' >"$WORK/share/hang.sh"
  chmod +x "$WORK/share/hang.sh"
  t0=$(now)
  "$HERE/run.sh" --timeout 60 "$WORK/share/hang.sh"
  rc=$?
  t_hang=$(dt "$t0" "$(now)")
  if ((rc == 124)) && awk -v t="$t_hang" 'BEGIN{exit !(t < 90)}'; then
    ok "run.sh: hanging script stopped with exit 124 after ${t_hang}s (--timeout 60)"
  else
    ko "run.sh: hanging script (exit $rc after ${t_hang}s, want 124 within 90s)"
  fi
fi

echo "selftest: timings: initramfs build ${t_build}s, boot-to-ready ${boot:-?}s (guest uptime), smoke VM ${t_smoke}s, total $(dt "$t_all" "$(now)")s"
echo "selftest: $passed passed, $failed failed"
((failed == 0))
