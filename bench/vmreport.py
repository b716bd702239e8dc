"""What the VM stages' reports (bench/lio/report.py, bench/tcmu/report.py,
bench/rbd/vm-report.py) share. Python standard library only."""

from __future__ import annotations


def read_kv(path: str) -> dict:
    """`key=value` lines of a file (the guests' meta and env files, the host's host.env);
    the first value of a key wins (a guest writes status/error first when it fails). An
    unreadable or missing file gives {}."""
    out: dict = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                k, sep, v = line.rstrip("\n").partition("=")
                if sep and k not in out:
                    out[k] = v
    except OSError:
        pass
    return out
