#!/usr/bin/env python3
"""Summarise one LIO yardstick VM run (bench/lio/guest-bench.sh output).

Usage: report.py VM_OUT_DIR JSON_OUT [--host-info FILE]

VM_OUT_DIR is $RUSTIO_VM_OUT of the run (one sub-directory per LUN). Prints the table on
stdout, writes the JSON document to JSON_OUT (and the table next to it as .txt).
Ratios are rustio / LIO on the same store type: > 1 = rustio faster for IOPS and MB/s,
< 1 = rustio lower for latencies. Python standard library only.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vmreport import read_kv  # noqa: E402  (bench/vmreport.py: the stages' shared helpers)

LUNS = ["lio-ram", "rustio-ram", "lio-file", "rustio-file"]
# (workload, client, headline metric)
WORKLOADS = [
    ("randread-4k-qd32", "loadgen", "iops"),
    ("seqread-128k-qd32", "loadgen", "mb_per_s"),
    ("lat-randread-4k-qd1", "loadgen", "iops"),
    ("randread-4k-qd32-ip", "iscsi-perf", "iops"),
]
BS = {"randread-4k-qd32": 4096, "seqread-128k-qd32": 131072, "lat-randread-4k-qd1": 4096,
      "randread-4k-qd32-ip": 4096}  # fmt: skip
PAIRS = [("ram", "rustio-ram", "lio-ram"), ("file", "rustio-file", "lio-file")]


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def one_run(d: str, w: str, client: str, run: int, clk_tck: int) -> Optional[dict]:
    """One run's numbers, or None when it did not run; {"error": ...} when it failed."""
    tag = os.path.join(d, f"{w}.{run}")
    rc = read_text(tag + ".rc")
    if rc is None:
        return None
    if rc.strip() != "0":
        err = (read_text(tag + ".err") or "").strip().splitlines()
        return {"error": f"exit {rc.strip()}: {err[-1] if err else ''}"}
    r: dict = {}
    if client == "loadgen":
        try:
            j = json.loads(read_text(tag + ".json") or "")
            r = {"iops": j["iops"], "mb_per_s": j["mb_per_s"], "ios": j["ios"], "secs": j["secs"],
                 "p50_us": j["lat_us"]["p50"], "p99_us": j["lat_us"]["p99"], "p999_us": j["lat_us"]["p999"],
                 "mean_us": j["lat_us"]["mean"], "driver": j.get("driver")}  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return {"error": "unreadable loadgen output"}
    else:
        found = re.findall(r"iops average (\d+)", read_text(tag + ".txt") or "")
        if not found:
            return {"error": "no iops in iscsi-perf output"}
        iops = float(found[-1])
        r = {"iops": iops, "mb_per_s": iops * BS[w] / 1e6}
    cpu = (read_text(tag + ".cpu") or "").split()
    ios = r.get("ios") or 0
    if len(cpu) == 4 and ios:
        try:
            busy = int(cpu[1]) - int(cpu[0])
            r["guest_cpu_us_per_io"] = busy / clk_tck * 1e6 / ios
        except ValueError:
            pass
    return r


def median(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def fmt(v: Optional[float], unit: str) -> str:
    if v is None:
        return "-"
    if unit == "iops":
        return f"{v:.0f} IOPS"
    if unit == "mb_per_s":
        return f"{v:.1f} MB/s"
    return f"{v:.0f} µs"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    vm_out, json_out = argv[0], argv[1]
    host = read_kv(argv[argv.index("--host-info") + 1]) if "--host-info" in argv else {}
    guest = read_kv(os.path.join(vm_out, "guest.env"))
    meta = read_kv(os.path.join(vm_out, "meta"))
    clk_tck = int(guest.get("clk_tck") or 100)
    runs = int(guest.get("runs") or 1)
    doc: dict = {"host": host, "guest": guest, "meta": meta, "workloads": {}, "ratios": {}}
    for w, client, _ in WORKLOADS:
        per: dict = {}
        for lun in LUNS:
            rs = [one_run(os.path.join(vm_out, lun), w, client, i, clk_tck) for i in range(1, runs + 1)]
            rs = [r for r in rs if r is not None]
            ok = [r for r in rs if "error" not in r]
            med = {k: median([r.get(k) for r in ok])
                   for k in ("iops", "mb_per_s", "p50_us", "p99_us", "p999_us", "guest_cpu_us_per_io")}  # fmt: skip
            per[lun] = {"runs": rs, "ok_runs": len(ok), "median": med}
        doc["workloads"][w] = {"client": client, "targets": per}
        for kind, num, den in PAIRS:
            m1, m0 = per[num]["median"], per[den]["median"]
            doc["ratios"].setdefault(w, {})[kind] = {
                k: ratio(m1.get(k), m0.get(k)) for k in ("iops", "mb_per_s", "p50_us", "p99_us")
            }
    lines = [
        f"LIO yardstick: rustio serve vs the kernel's iSCSI target, in one QEMU TCG guest "
        f"(kernel {guest.get('kernel', '?')}, {guest.get('nproc', '?')} vCPUs; "
        f"{runs} run(s) × {guest.get('runtime', '?')} s per job, median; LUNs {guest.get('size_mb', '?')} MiB; "
        f"host load {host.get('loadavg_start', '?')} → {host.get('loadavg_end', '?')}; {host.get('date', '')})",
        "",
        f"{'workload':<22} {'metric':<8} " + " ".join(f"{lun:>13}" for lun in LUNS) + f" {'RAM r/L':>8} {'file r/L':>8}",
    ]  # fmt: skip
    rows = []
    for w, _, metric in WORKLOADS:
        rows.append((w, metric))
        if w.startswith("lat-"):
            rows += [(w, "p50_us"), (w, "p99_us")]
    for w, k in rows:
        per = doc["workloads"][w]["targets"]
        cells = []
        for lun in LUNS:
            if per[lun]["ok_runs"] == 0:
                cells.append("ERR" if per[lun]["runs"] else "-")
            else:
                cells.append(fmt(per[lun]["median"].get(k), k))
        rs = [doc["ratios"][w][kind].get(k) for kind, _, _ in PAIRS]
        label = {"iops": "IOPS", "mb_per_s": "MB/s", "p50_us": "p50", "p99_us": "p99"}[k]
        lines.append(
            f"{w:<22} {label:<8} " + " ".join(f"{c:>13}" for c in cells)
            + "".join(f" {('%.2f×' % r) if r is not None else '-':>8}" for r in rs)
        )  # fmt: skip
    lines.append("")
    lines.append("ratios rustio / LIO on the same store type (r/L): > 1 = rustio faster (IOPS, MB/s), "
                 "< 1 = rustio lower latency (p50, p99)")  # fmt: skip
    cpu = []
    for w, _, _ in WORKLOADS:
        per = doc["workloads"][w]["targets"]
        vals = [per[lun]["median"].get("guest_cpu_us_per_io") for lun in LUNS]
        if any(v is not None for v in vals):
            cpu.append(f"  {w:<22} " + " ".join(f"{(('%.0f' % v) if v is not None else '-'):>13}" for v in vals))
    if cpu:
        lines.append("guest CPU µs per I/O (all vCPUs busy time, client + target + kernel):")
        lines += cpu
    errors = [f"{lun} {w} run {i + 1}: {r['error']}" for w, wd in doc["workloads"].items()
              for lun, d in wd["targets"].items() for i, r in enumerate(d["runs"]) if "error" in r]  # fmt: skip
    if meta.get("error"):
        errors.insert(0, f"guest: {meta['error']}")
    if errors:
        lines.append(f"{len(errors)} failure(s):")
        lines += [f"  - {e}" for e in errors[:20]]
    table = "\n".join(lines) + "\n"
    doc["errors"] = errors
    sys.stdout.write(table)
    with open(json_out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.splitext(json_out)[0] + ".txt", "w", encoding="utf-8") as f:
        f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
