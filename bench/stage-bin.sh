# bench/stage-bin.sh — sourced by bench/lio/run.sh and bench/tcmu/run.sh.
#
# The VM guest (tests/vm/run.sh) sees the host's root read-only, but its /tmp, /var/tmp,
# /run and /root are fresh tmpfs (and a binary under /tmp made tests/vm/run.sh share the
# host's /tmp read-only, so the guest could not write there): a binary from one of those
# is copied into BINDIR, a directory the caller shares into the guest (--share).
stage_bin() { # BINDIR PATH [NAME] -> a path the guest can see (NAME: the copy's name)
  local name=${3:-${2##*/}}
  case "$(realpath "$2")" in
    /tmp/*|/var/tmp/*|/run/*|/root/*)
      mkdir -p "$1" && cp "$2" "$1/$name" && echo "$1/$name" ;;
    *) realpath "$2" ;;
  esac
}
