#!/bin/bash
# Section 7 of the LIO real-kernel suite (issue 23 items 1 and 2 "tested in the VM"):
# targetcli's grammar and shell, `rustio PATH COMMAND args` and `rustio shell`,
# against the real kernel.
#
#   7a. the seed report's section 3.3.1 session (cd + create + set, then exit) written
#       as targetcli one-liners, run by REAL targetcli; then the same script through
#       `sed s/targetcli/rustio/`: every line succeeds, configfs and `rustio ls` are
#       what the session shows, and both tools leave the same tree (`targetcli ls`,
#       `rustio ls`, saveconfig files compared by savecmp.py modulo the random unit
#       serials)
#   7b. an initiator uses the session's target as the report's section 3.3.2 does:
#       iscsi-ls/iscsi-inq as the ACL'd initiator (others refused), open-iscsi login
#       and O_DIRECT dd write/read equal to the backing file
#   7c. the interactive shell on a pseudo-terminal (tmux send-keys/capture-pane): cd,
#       ls, Tab completion of a path, a command and a parameter name, create, get,
#       pwd, exit -> auto-save file == `rustio save`; history written
#
# Sourced by guest-lio.sh (before its final clear; shares its PASS/FAIL counters and
# helpers), or run alone in a VM for quick iterations:
#   tests/vm/run.sh --timeout 600 tests/lio/guest-targetcli.sh   (RUSTIO_BIN set)
# Every wait is bounded (vm_wait, vm_check's timeout, `timeout`).

if [[ -z ${TC_SECTION_SOURCED:-} && ${BASH_SOURCE[0]} == "$0" ]]; then
  # ---- standalone: the helpers guest-lio.sh would have defined
  set -uo pipefail
  HERE=$(cd "$(dirname "$0")" && pwd)
  ROOT=$(cd "$HERE/../.." && pwd)
  VM_CHECK_TIMEOUT=${VM_CHECK_TIMEOUT:-300}
  # shellcheck source=../vm/guest-lib.sh
  . "$ROOT/tests/vm/guest-lib.sh"
  [[ "${RUSTIO_VM:-}" == 1 ]] || { echo "guest-targetcli.sh must run inside the VM"; exit 2; }
  RUSTIO=${RUSTIO_BIN:-${CARGO_TARGET_DIR:-/work/target-lio}/release/rustio}
  W=/tmp/lio
  mkdir -p "$W" "${TARGETCLI_HOME:-/root/.targetcli}"
  [[ -e /dev/fd ]] || ln -s /proc/self/fd /dev/fd
  cd "$W" || exit 2
  R() { "$RUSTIO" "$@"; }
  tc() { { echo "set global auto_save_on_exit=false"; cat; } | timeout 240 targetcli 2>&1; }
  savecmp() { python3 "$HERE/savecmp.py" "$@"; }
  hba_dir() { ls -d "$LIO"/core/"$1"_*/"$2" 2>/dev/null | head -n1; }
  links() { find "$1" -maxdepth 1 -type l -printf '%l\n'; }
  vm_start_dbus >/dev/null 2>&1
  TC_STANDALONE=1
fi

SEED_IQN=iqn.2017-07.com.test:target-10-15-33
SEED_INIT=iqn.1993-08.org.debian:01:ef2e26bf3a9e
SEED_TPG=$LIO/iscsi/$SEED_IQN/tpgt_1
# rustio (and nothing else) on PATH as `rustio`, so the sed'ed script runs as written
mkdir -p "$W/bin"
ln -sf "$RUSTIO" "$W/bin/rustio"

# The seed report's 3.3.1 session, one-liner per shell command. The report creates the
# file with `touch` and lets targetcli take its size: targetcli makes a 0-byte device of
# it, rustio refuses an empty file without a size (docs/lio.md), so it is 32 MiB here. `cd X` + `create` becomes `X create`;
# the report leaves with `exit` (auto-save), whose one-liner form is `/ saveconfig`.
cat >"$W/seed-targetcli.sh" <<EOF
targetcli ls
targetcli /backstores/fileio create file_dev $W/tgt_file
targetcli /iscsi create $SEED_IQN
targetcli /iscsi set discovery_auth enable=0
targetcli /iscsi/$SEED_IQN/tpg1/luns create /backstores/fileio/file_dev
targetcli /iscsi/$SEED_IQN/tpg1/acls create $SEED_INIT
targetcli /iscsi/$SEED_IQN/tpg1/portals create
targetcli ls
targetcli / saveconfig
EOF
sed s/targetcli/rustio/ "$W/seed-targetcli.sh" >"$W/seed-rustio.sh"

# saved_file OUTPUT: the file a `saveconfig` said it wrote ("Configuration saved to F")
saved_file() { sed -n 's/.*Configuration saved to \([^ ]*\).*/\1/p' "$1" | tail -n1; }
# tree_of [OUTPUT]: the `ls` tree printed last in OUTPUT or stdin (from its last "o- / "
# line; the guest has no /dev/stdin). targetcli reading stdin writes its prompt ("/> ")
# before each command's output: that is cut off first.
tree_of() {
  sed -E 's#^(/[^ >]*> )+##' "$@" |
    awk '/^o- \/ /{buf=""; on=1} /^[^ o|]/{on=0} on{buf=buf $0 "\n"} END{printf "%s", buf}'
}
# The one difference allowed between the two tools' trees: targetcli-fb up to 2.1.x
# (Debian 12 has 2.1.53) gives a new iSCSI TPG the default portal 0.0.0.0:3260,
# targetcli-fb 3.0 (its commit e439d77, Dec 2024) and rustio give it [::0]:3260.
# In `ls` text the padding dots are collapsed, since the two names differ in length.
portal_norm() { sed -E -e 's/ \.+ / ... /' -e 's/o- (0\.0\.0\.0|\[::0\]):3260 /o- DEFAULT:3260 /'; }
JQ_PORTAL='(.targets[]?.tpgs[]?.portals[]? | select(.port == 3260 and (.ip_address == "0.0.0.0" or .ip_address == "[::0]")) | .ip_address) |= "DEFAULT"'

seed_targetcli() {
  R clear --confirm >/dev/null || return 1
  rm -f "$W/tgt_file"; truncate -s 32M "$W/tgt_file" || return 1
  # targetcli one-liners never auto-save; its bare `portals create` fails (the TPG
  # already has that default portal) and the script goes on, as a shell script would.
  PATH=$W/bin:$PATH timeout 280 bash -x "$W/seed-targetcli.sh" >"$W/seed-tc.out" 2>&1
  cat "$W/seed-tc.out"
  local f; f=$(saved_file "$W/seed-tc.out")
  [[ -n $f && -f $f ]] || { echo "targetcli did not say where it saved"; return 1; }
  cp "$f" "$W/seed-tc.json" &&
  [[ -d $SEED_TPG/acls/$SEED_INIT/lun_0 ]] || { echo "targetcli did not build the session's tree"; return 1; }
  # the same tree as rustio lists it, for the comparison below
  R ls >"$W/seed-tc-rls.txt"
  printf '%s\n' ls exit | tc | tree_of >"$W/seed-tc-ls.txt"
  [[ -s $W/seed-tc-ls.txt ]] || { echo "no tree in targetcli's ls"; return 1; }
}

seed_rustio() {
  R clear --confirm >/dev/null || return 1
  # every line must succeed (bash -e stops at the first that does not)
  PATH=$W/bin:$PATH timeout 120 bash -ex "$W/seed-rustio.sh" >"$W/seed-rs.out" 2>&1 ||
    { cat "$W/seed-rs.out"; echo "a rustio one-liner failed"; return 1; }
  cat "$W/seed-rs.out"
  local f d acl=$SEED_TPG/acls/$SEED_INIT
  f=$(saved_file "$W/seed-rs.out")
  [[ $f == /etc/target/saveconfig.json && -f $f ]] || { echo "saveconfig did not write /etc/target/saveconfig.json"; return 1; }
  cp "$f" "$W/seed-rs.json"
  # configfs: what the session built
  d=$(hba_dir fileio file_dev); [[ -n $d ]] || { echo "no core/fileio_*/file_dev"; return 1; }
  [[ $(cat "$d/udev_path") == "$W/tgt_file" && $(cat "$d/enable") == 1 ]] &&
  grep -q "Size: 33554432" "$d/info" || { echo "file_dev wrong"; cat "$d/info"; return 1; }
  [[ $(cat "$SEED_TPG/enable") == 1 && $(cat "$SEED_TPG/attrib/authentication") == 0 &&
     $(cat "$SEED_TPG/attrib/generate_node_acls") == 0 ]] || { echo "tpg1 not enabled/no-auth/no-gen-acls"; return 1; }
  links "$SEED_TPG/lun/lun_0" | grep -q '/fileio_[0-9]*/file_dev$' || { echo "lun0 link"; return 1; }
  links "$acl/lun_0" | grep -q 'lun/lun_0$' && [[ $(cat "$acl/lun_0/write_protect") == 0 ]] ||
    { echo "mapped_lun0 missing"; return 1; }
  [[ $(ls "$SEED_TPG/np") == '[::0]:3260' ]] || { echo "portals: $(ls "$SEED_TPG/np")"; return 1; }
  [[ $(cat "$LIO/iscsi/discovery_auth/enforce_discovery_auth") == 0 ]] || { echo "discovery auth on"; return 1; }
  # `rustio ls` (the last ls of the script) shows the session's final tree
  tree_of "$W/seed-rs.out" >"$W/seed-rs-ls.txt"
  local x
  for x in 'o- fileio .* \[Storage Objects: 1\]' "o- file_dev .*\[$W/tgt_file \(32.0MiB\) write-back activated\]" \
           "o- iscsi .* \[Targets: 1\]" "o- $SEED_IQN .* \[TPGs: 1\]" 'o- tpg1 .* \[no-gen-acls, no-auth\]' \
           'o- acls .* \[ACLs: 1\]' "o- $SEED_INIT .* \[Mapped LUNs: 1\]" 'o- mapped_lun0 .* \[lun0 fileio/file_dev \(rw\)\]' \
           'o- luns .* \[LUNs: 1\]' "o- lun0 .* \[fileio/file_dev \($W/tgt_file\) \(default_tg_pt_gp\)\]" \
           'o- portals .* \[Portals: 1\]' 'o- 0\.0\.0\.0:3260 .* \[OK\]|o- \[::0\]:3260 .* \[OK\]' \
           'o- loopback .* \[Targets: 0\]'; do
    grep -Eq -- "$x" "$W/seed-rs-ls.txt" || { echo "rustio ls lacks /$x/"; cat "$W/seed-rs-ls.txt"; return 1; }
  done
  # the saved file is what `rustio save` writes
  R save "$W/seed-rs-save.json" --no-backup >/dev/null && savecmp "$W/seed-rs.json" "$W/seed-rs-save.json"
}

seed_same() {
  # targetcli's view of the rustio-built tree == its view of its own, line for line
  # (but for the default portal's address, see portal_norm)
  printf '%s\n' ls exit | tc | tree_of >"$W/seed-rs-tls.txt"
  [[ -s $W/seed-rs-tls.txt ]] || { echo "no tree in targetcli's ls"; return 1; }
  diff <(portal_norm <"$W/seed-tc-ls.txt") <(portal_norm <"$W/seed-rs-tls.txt") || { echo "targetcli ls differs"; return 1; }
  R ls >"$W/seed-rs-rls.txt"
  diff <(portal_norm <"$W/seed-tc-rls.txt") <(portal_norm <"$W/seed-rs-rls.txt") || { echo "rustio ls differs"; return 1; }
  # saveconfig files equal but for what each tool generates at random (the unit serial,
  # the LUN and mapped-LUN link names, rtslib's "alias") and the default portal
  local rnd='del(.storage_objects[].wwn, .targets[].tpgs[].luns[].alias, .targets[].tpgs[].node_acls[].mapped_luns[].alias)'
  jq "$rnd | $JQ_PORTAL" "$W/seed-tc.json" >"$W/seed-tc-norm.json" &&
  jq "$rnd | $JQ_PORTAL" "$W/seed-rs.json" >"$W/seed-rs-norm.json" &&
  savecmp "$W/seed-tc-norm.json" "$W/seed-rs-norm.json" || return 1
  # one portal each: the seed's bare `portals create` added none to the default one
  jq -e '[.targets[].tpgs[].portals[]] | length == 1' "$W/seed-tc.json" >/dev/null &&
  jq -e '[.targets[].tpgs[].portals[]] | length == 1' "$W/seed-rs.json" >/dev/null || { echo "portals"; return 1; }
}

vm_check "7a. targetcli runs the seed report's 3.3.1 session as one-liners" seed_targetcli
vm_check "7a. the same script, sed s/targetcli/rustio/: every line succeeds, configfs + rustio ls as the session shows, saveconfig == rustio save" seed_rustio
vm_check "7a. targetcli and rustio leave the same tree (targetcli ls, rustio ls, saveconfig; modulo random serials/aliases and the default portal address)" seed_same

# ---------------------------------------------------------------- 7b. the initiator side
seed_libiscsi() {
  local out
  out=$(timeout 60 iscsi-ls -i "$SEED_INIT" -s iscsi://127.0.0.1) ; echo "$out"
  grep -q "Target:$SEED_IQN" <<<"$out" && grep -q 'Lun:0' <<<"$out" || return 1
  timeout 60 iscsi-inq -i "$SEED_INIT" "iscsi://127.0.0.1/$SEED_IQN/0" | tee "$W/seed-inq.txt" &&
    grep -q LIO-ORG "$W/seed-inq.txt" || return 1
  # the ACL is the only way in (no-gen-acls)
  ! timeout 60 iscsi-inq -i iqn.1994-05.com.example:stranger "iscsi://127.0.0.1/$SEED_IQN/0" ||
    { echo "an initiator outside the ACL got in"; return 1; }
}
vm_check "7b. iscsi-ls/iscsi-inq as the session's ACL'd initiator on 127.0.0.1 (others refused)" seed_libiscsi

seed_io() {
  # open-iscsi as the report's 3.3.2: the initiator name is the ACL's
  echo "InitiatorName=$SEED_INIT" >/etc/iscsi/initiatorname.iscsi || return 1
  if pidof iscsid >/dev/null; then kill "$(pidof iscsid)"; vm_wait 10 bash -c '! pidof iscsid'; fi
  vm_start_iscsid || { echo "iscsid failed"; return 1; }
  iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260 | tee "$W/seed-disc.txt" || return 1
  grep -q "$SEED_IQN" "$W/seed-disc.txt" || return 1
  timeout 60 iscsiadm -m node -T "$SEED_IQN" -p 127.0.0.1:3260 --login || return 1
  local dev rc=0 pat=$W/seed-pat
  if vm_wait 30 vm_find_disk '/session[0-9]+/'; then
    dev=$(vm_find_disk '/session[0-9]+/'); echo "iSCSI disk $dev"
    dd if=/dev/urandom of="$pat" bs=1M count=2 status=none &&
    dd if="$pat" of="$dev" bs=1M seek=3 oflag=direct conv=fsync status=none &&
    dd if="$dev" bs=1M skip=3 count=2 iflag=direct status=none | cmp - "$pat" &&
    dd if="$W/tgt_file" bs=1M skip=3 count=2 status=none | cmp - "$pat" || { echo "data differs"; rc=1; }
  else
    echo "no iSCSI disk appeared"; iscsiadm -m session -P 3; rc=1
  fi
  timeout 60 iscsiadm -m node -T "$SEED_IQN" -p 127.0.0.1:3260 --logout || rc=1
  iscsiadm -m node -o delete -T "$SEED_IQN" || rc=1
  vm_wait 20 bash -c "! ls /sys/class/iscsi_session/session* >/dev/null 2>&1" || { echo "session left"; rc=1; }
  return $rc
}
vm_check "7b. open-iscsi logs in to the session's target; dd write/read (O_DIRECT) == backing file; logout" seed_io

# ---------------------------------------------------------------- 7c. the shell in tmux
TM() { tmux -L rustio-vm "$@"; }
pane() { TM capture-pane -p -t rsh -S -300 2>/dev/null; }
# pane_has ERE: the pane (with its scrollback) has a line matching ERE
pane_has() { pane | grep -Eq -- "$1"; }
# last_line_is ERE: the pane's last non-empty line matches ERE (what is being typed)
last_line_is() { pane | sed '/^[[:space:]]*$/d' | tail -n1 | grep -Eq -- "$1"; }
# step WAIT-ERE KEYS...: send KEYS, then wait (bounded) for WAIT-ERE in the pane
step() {
  local want=$1; shift
  TM send-keys -t rsh "$@" || return 1
  vm_wait 20 pane_has "$want" || { echo "waited 20 s for /$want/ after: $*"; pane | tail -n 25; return 1; }
}
# typed KEYS... -> wait until the line being edited matches ERE $1
typed() {
  local want=$1; shift
  TM send-keys -t rsh "$@" || return 1
  vm_wait 10 last_line_is "$want" || { echo "line is not /$want/ after: $*"; pane | tail -n 5; return 1; }
}

shell_check() {
  local home=$W/rhome auto=$W/shell-autosave.json rc=0
  rm -rf "$home" "$auto" "$W/fsh.img"
  TM kill-server 2>/dev/null
  # `rustio` with no arguments on a terminal is the shell. The pane stays after the
  # shell exits so its last output and status can be read.
  TM new-session -d -s rsh -x 200 -y 50 \
    "env RUSTIO_HOME=$home RUSTIO_SAVE_FILE=$auto $RUSTIO; echo SHELL-EXIT=\$?; sleep 120" || return 1
  {
    vm_wait 30 pane_has '^/> ?$' || { echo "no prompt"; pane; false; } &&
    step '^/backstores/ramdisk> ?$' 'cd /backstores/ramdisk' Enter &&
    step 'Created ramdisk rdsh' 'create rdsh 8M' Enter &&
    [[ -n $(hba_dir rd_mcp rdsh) ]] &&
    step 'o- rdsh .*\(8\.0MiB\)' 'ls' Enter &&
    # Tab: a path (two components), then a command, then a parameter name
    typed 'cd /backstores/$' 'cd /backs' Tab &&
    typed 'cd /backstores/fileio/$' 'fil' Tab &&
    step '^/backstores/fileio> ?$' Enter &&
    # (capture-pane drops trailing blanks: the X shows the space completion added)
    typed '> create X$' 'cre' Tab X &&
    step 'Created fileio fsh' BSpace "fsh $W/fsh.img 8M" Enter &&
    [[ -n $(hba_dir fileio fsh) && $(stat -c %s "$W/fsh.img") == 8388608 ]] &&
    step '^/backstores/fileio/fsh> ?$' 'cd fsh' Enter &&
    typed 'get attribute block_size X$' 'get attribute block_si' Tab X &&
    TM send-keys -t rsh BSpace &&
    step '^block_size=512' Enter &&
    step "^/backstores/fileio/fsh\$" 'pwd' Enter &&
    step 'SHELL-EXIT=0' 'exit' Enter &&
    pane_has 'Global pref auto_save_on_exit=true' &&
    pane_has "Configuration saved to $auto"
  } || rc=1
  pane >"$W/shell-pane.txt"
  TM kill-server 2>/dev/null
  cat "$W/shell-pane.txt"
  ((rc == 0)) || return 1
  # auto-save == what `rustio save` writes now; the typed lines are in the history
  R save "$W/shell-save.json" --no-backup >/dev/null && savecmp "$auto" "$W/shell-save.json" || return 1
  jq -e '[.storage_objects[].name] | index("rdsh") != null and index("fsh") != null' "$auto" >/dev/null ||
    { echo "auto-save lacks rdsh/fsh"; return 1; }
  grep -q '^create rdsh 8M$' "$home/history.txt" || { echo "history: $(cat "$home/history.txt")"; return 1; }
}

shell_again() {
  # `rustio shell`: the history of the last session is there (Up recalls its `exit`),
  # auto-save is a global preference, Ctrl-D leaves without saving once it is off
  local home=$W/rhome auto=$W/shell-autosave2.json rc=0
  rm -f "$auto"
  TM kill-server 2>/dev/null
  TM new-session -d -s rsh -x 200 -y 50 \
    "env RUSTIO_HOME=$home RUSTIO_SAVE_FILE=$auto $RUSTIO shell; echo SHELL-EXIT=\$?; sleep 120" || return 1
  {
    vm_wait 30 pane_has '^/> ?$' || { echo "no prompt"; pane; false; } &&
    typed '^/> exit$' Up &&
    TM send-keys -t rsh C-u &&
    step "Parameter auto_save_on_exit is now 'false'" 'set global auto_save_on_exit=false' Enter &&
    # Ctrl-D only once the prompt is back (the editor in raw mode again): typed earlier,
    # the tty's cooked mode would take it as EOF and the shell would never see it
    vm_wait 10 last_line_is '^/> ?$' &&
    step 'SHELL-EXIT=0' C-d &&
    ! pane_has 'Configuration saved'
  } || rc=1
  pane >"$W/shell-pane2.txt"
  TM kill-server 2>/dev/null
  cat "$W/shell-pane2.txt"
  ((rc == 0)) || return 1
  [[ ! -e $auto ]] || { echo "saved although auto_save_on_exit=false"; return 1; }
  jq -e '.auto_save_on_exit == false or .auto_save_on_exit == "false"' "$home/prefs.json" ||
    { echo "prefs.json: $(cat "$home/prefs.json")"; return 1; }
}
if command -v tmux >/dev/null; then
  vm_check "7c. rustio (no arguments) on a tmux terminal is the shell: cd, ls, create, Tab (path, command, parameter), get, pwd, exit -> auto-save == rustio save" shell_check
  vm_check "7c. rustio shell: history recalled (Up), set global auto_save_on_exit=false persists, Ctrl-D leaves without saving" shell_again
else
  vm_fail "7c. rustio shell in tmux" "tmux is not installed (.ci/install-deps.sh vm)"
fi
R delete /backstores/fileio/fsh >/dev/null 2>&1; R delete /backstores/ramdisk/rdsh >/dev/null 2>&1

if [[ -n ${TC_STANDALONE:-} ]]; then
  R clear --confirm >/dev/null 2>&1
  cp "$W"/seed-* "$W"/shell-* "$RUSTIO_VM_OUT"/ 2>/dev/null
  vm_summary
fi
