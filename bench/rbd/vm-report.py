#!/usr/bin/env python3
"""Summarise one bench/rbd/vm.sh run (guest-vm.sh's results.jsonl and meta).

Usage: vm-report.py VM_OUT_DIR JSON_OUT [--host-info FILE]

Prints, per workload, every round's IOPS of the three contenders (rbd-bench, rustio,
lio-tcmu), the ratios rustio / rbd-bench, lio-tcmu / rbd-bench and rustio / lio-tcmu per
round and their medians, and the CPU per I/O: the whole guest's (busy ticks, every process
and the kernel: cluster, client, target) and the target process's (rustio serve, or
tcmu-runner, whose iSCSI target runs in the kernel and is not in its figure). Writes the
JSON document to JSON_OUT and the table next to it as .txt. Python standard library only.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vmreport import read_kv  # noqa: E402  (bench/vmreport.py: the stages' shared helpers)

CONTENDERS = ["rbd-bench", "rustio", "lio-tcmu"]
RATIOS = [("rustio", "rbd-bench"), ("lio-tcmu", "rbd-bench"), ("rustio", "lio-tcmu")]


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def median(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def per_io_us(ticks: Optional[int], ios: Optional[int], hz: int) -> Optional[float]:
    if ticks is None or not ios:
        return None
    return ticks * 1e6 / hz / ios


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    vm_out, json_out = argv[1], argv[2]
    host = read_kv(argv[argv.index("--host-info") + 1]) if "--host-info" in argv else {}
    meta = read_kv(f"{vm_out}/meta")
    hz = int(meta.get("hz", "100") or 100)
    jobs = []
    with open(f"{vm_out}/results.jsonl") as f:
        for line in f:
            line = line.strip()
            if line:
                jobs.append(json.loads(line))
    workloads: list[str] = []
    for j in jobs:
        if j["workload"] not in workloads:
            workloads.append(j["workload"])
    rounds = sorted({j["round"] for j in jobs})
    by = {(j["workload"], j["contender"], j["round"]): j for j in jobs}

    lines = []
    doc = {"host": host, "guest": meta, "status": meta.get("status", "unknown"), "jobs": jobs, "workloads": {}}
    if meta.get("status") != "ok":
        # A guest that failed part-way: its jobs so far, marked as such.
        lines.append(f"status={meta.get('status', 'unknown')}: {meta.get('error', 'the guest did not finish')}")
    lines.append(
        f"RBD gateways in one VM ({meta.get('cpus', '?')} vCPUs, {meta.get('kernel', '?')}; "
        f"{meta.get('ceph', 'ceph ?')}; tcmu-runner {meta.get('tcmu_runner', '?')}): "
        f"{meta.get('runtime_s', '?')} s iSCSI jobs, QD 32, {meta.get('size_mb', '?')} MiB images"
    )
    for w in workloads:
        lines.append("")
        lines.append(f"{w}")
        head = "| round | " + " | ".join(f"{c} IOPS" for c in CONTENDERS)
        head += " | " + " | ".join(f"{a} / {b}" for a, b in RATIOS)
        head += " | guest CPU µs per I/O (" + ", ".join(CONTENDERS) + ")"
        head += " | target process µs per I/O (rustio, tcmu-runner) |"
        lines.append(head)
        lines.append("|" + " --- |" * (3 + len(CONTENDERS) + len(RATIOS)))
        per_ratio: dict = {f"{a}/{b}": [] for a, b in RATIOS}
        iops_all: dict = {c: [] for c in CONTENDERS}
        rows = []
        for r in rounds:
            iops = {c: by.get((w, c, r), {}).get("iops") for c in CONTENDERS}
            for c in CONTENDERS:
                iops_all[c].append(iops[c])
            rs = {}
            for a, b in RATIOS:
                v = ratio(iops[a], iops[b])
                rs[f"{a}/{b}"] = v
                per_ratio[f"{a}/{b}"].append(v)
            guest = {
                c: per_io_us(by.get((w, c, r), {}).get("busy_ticks"), by.get((w, c, r), {}).get("ios"), hz)
                for c in CONTENDERS
            }
            proc = {
                c: per_io_us(by.get((w, c, r), {}).get("proc_ticks"), by.get((w, c, r), {}).get("ios"), hz)
                for c in ("rustio", "lio-tcmu")
            }
            rows.append({"round": r, "iops": iops, "ratios": rs, "guest_cpu_us": guest, "process_cpu_us": proc})
            lines.append(
                f"| {r} | "
                + " | ".join(fmt(iops[c], ".0f") for c in CONTENDERS)
                + " | "
                + " | ".join(fmt(rs[f"{a}/{b}"], ".2f") for a, b in RATIOS)
                + " | "
                + " / ".join(fmt(guest[c], ".0f") for c in CONTENDERS)
                + " | "
                + " / ".join(fmt(proc[c], ".0f") for c in ("rustio", "lio-tcmu"))
                + " |"
            )
        med = {k: median(v) for k, v in per_ratio.items()}
        lines.append(
            "| median | "
            + " | ".join(fmt(median(iops_all[c]), ".0f") for c in CONTENDERS)
            + " | "
            + " | ".join(fmt(med[f"{a}/{b}"], ".2f") for a, b in RATIOS)
            + " | | |"
        )
        doc["workloads"][w] = {"rounds": rows, "median_ratios": med}
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(json_out, "w") as f:
        json.dump(doc, f, indent=1)
    txt = json_out[: -len(".json")] + ".txt" if json_out.endswith(".json") else json_out + ".txt"
    with open(txt, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
