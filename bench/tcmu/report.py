#!/usr/bin/env python3
"""Summarise one TCMU benchmark VM run (bench/tcmu/guest-bench.sh output).

Usage: report.py VM_OUT_DIR JSON_OUT [--host-info FILE]

VM_OUT_DIR is $RUSTIO_VM_OUT of the run (one sub-directory per backend). Prints the table
on stdout, writes the JSON document to JSON_OUT (and the table next to it as .txt).
Python standard library only.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vmreport import read_kv  # noqa: E402  (bench/vmreport.py: the stages' shared helpers)

BACKENDS = ["kernel-fileio", "rustio-file", "tcmu-runner-file", "rustio-qcow", "tcmu-runner-qcow"]
# Other rustio binaries / option sets (RUSTIO_BIN_B, RUSTIO_BENCH_RUNNER_ARGS_B; _C) and
# rustio-null (the runner on ram/nullio: the TCMU side with no store), reported only when
# they ran.
OPTIONAL = ["rustio-b-file", "rustio-b-qcow", "rustio-c-file", "rustio-c-qcow", "rustio-null"]
# The floor round (guest-bench.sh RUSTIO_BENCH_FLOOR=1): fio pvsync straight on the backing
# file, no TCMU; its "daemon CPU" is fio's own (numjobs 1 / nproc).
FLOOR = ["floor-file", "floor-file-mt"]
# System calls a TCMU daemon makes on the ring side (not the backing file's I/O): the UIO
# interrupt wait and acknowledgement, and the doorbell write that completes commands.
RING_SYSCALLS = ("poll", "ppoll", "epoll_wait", "epoll_pwait", "read", "write")
WORKLOADS = [
    ("randread-4k-qd32", "iops"),
    ("randwrite-4k-qd32", "iops"),
    ("seqread-1m-qd8", "mib_s"),
]
# (label, numerator backend, denominator backend)
RATIOS = [
    ("rustio-file / tcmu-runner-file", "rustio-file", "tcmu-runner-file"),
    ("rustio-file / kernel-fileio", "rustio-file", "kernel-fileio"),
    ("rustio-qcow / tcmu-runner-qcow", "rustio-qcow", "tcmu-runner-qcow"),
    ("rustio-b-file / tcmu-runner-file", "rustio-b-file", "tcmu-runner-file"),
    ("rustio-b-file / rustio-file", "rustio-b-file", "rustio-file"),
    ("rustio-b-qcow / tcmu-runner-qcow", "rustio-b-qcow", "tcmu-runner-qcow"),
    ("rustio-b-qcow / rustio-qcow", "rustio-b-qcow", "rustio-qcow"),
    ("rustio-c-file / tcmu-runner-file", "rustio-c-file", "tcmu-runner-file"),
    ("rustio-c-file / rustio-file", "rustio-c-file", "rustio-file"),
    ("rustio-c-qcow / tcmu-runner-qcow", "rustio-c-qcow", "tcmu-runner-qcow"),
    ("rustio-c-qcow / rustio-qcow", "rustio-c-qcow", "rustio-qcow"),
]
MiB = 1 << 20


def fio_job(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # fio may print notes before the JSON document.
    start = text.find("{")
    if start < 0:
        return None
    try:
        doc = json.loads(text[start:])
        return doc["jobs"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def run_tags(bdir: str, name: str) -> list[str]:
    """The file stems of every run of NAME: NAME.1, NAME.2, ... (or NAME for one-run output)."""
    tags = []
    i = 1
    while os.path.exists(os.path.join(bdir, f"{name}.{i}.rc")):
        tags.append(f"{name}.{i}")
        i += 1
    if not tags and os.path.exists(os.path.join(bdir, name + ".rc")):
        tags.append(name)
    return tags


def workload_result(bdir: str, name: str, unit: str) -> dict:
    """The median run of workload NAME (by UNIT), with every run's value in "runs"."""
    tags = run_tags(bdir, name)
    # Runs under a profiler (guest-bench.sh RUSTIO_BENCH_PROFILE) are reported apart and
    # never count towards the median: the profiler's own cost is in their figures.
    profiled = [t for t in tags if any(
        os.path.exists(os.path.join(bdir, t + ext))
        for ext in (".strace", ".perf.err", ".callgrind.err"))]
    runs = [single_run(bdir, t) for t in tags if t not in profiled]
    prof = {t: single_run(bdir, t) for t in profiled}
    for t, r in prof.items():
        sc = strace_counts(os.path.join(bdir, t + ".strace"), r.get("total_ios", 0))
        if sc:
            r["syscalls_per_io"] = sc[0]
            r["syscall_sys_us_per_io"] = sc[1]
        cg = callgrind_counts(os.path.join(bdir, t + ".callgrind"), r.get("total_ios", 0))
        if cg:
            r["callgrind"] = cg
    if not runs:
        if prof:
            return {"status": "profiled runs only", "profiled": prof}
        return {"status": "missing"}
    good = [r for r in runs if r.get(unit) is not None]
    if not good:
        return runs[0]
    good.sort(key=lambda r: r[unit])
    # Lower median for an even count: never the best run of two.
    med = dict(good[(len(good) - 1) // 2])
    med["runs"] = [r.get(unit) for r in runs]
    if len(good) < len(runs) and med.get("status") == "ok":
        med["status"] = f"{len(runs) - len(good)} of {len(runs)} runs failed"
    if prof:
        med["profiled"] = prof
    return med


def paired_floor(bdir: str, name: str) -> dict:
    """The daemon's clean runs of NAME next to the floor job that followed each
    (guest-bench.sh RUSTIO_BENCH_FLOOR=1: BACKEND/floor/NAME.N): CPU us per I/O of both,
    per run, and the medians of the per-run floor / daemon ratio and daemon - floor."""
    fdir = os.path.join(bdir, "floor")
    pairs = []
    for tag in run_tags(fdir, name):
        d, f = single_run(bdir, tag), single_run(fdir, tag)
        dc, fc = d.get("daemon_cpu_us_per_io"), f.get("daemon_cpu_us_per_io")
        if dc and fc:
            pairs.append({"run": tag, "daemon_us_per_io": dc, "floor_us_per_io": fc,
                          "floor_sys_us_per_io": f.get("daemon_sys_us_per_io"),
                          "floor_iops": f.get("iops"), "daemon_iops": d.get("iops")})
    if not pairs:
        return {"status": "missing"}

    def med(xs: list) -> float:
        xs = sorted(xs)
        return xs[(len(xs) - 1) // 2]  # lower median, as workload_result

    return {"pairs": pairs,
            "floor_us_per_io": med([p["floor_us_per_io"] for p in pairs]),
            "floor_over_daemon": round(med([p["floor_us_per_io"] / p["daemon_us_per_io"] for p in pairs]), 3),
            # The daemon in units of its own floor: host steal inflates both alike.
            "daemon_over_floor": round(med([p["daemon_us_per_io"] / p["floor_us_per_io"] for p in pairs]), 3),
            "above_floor_us_per_io": round(med([p["daemon_us_per_io"] - p["floor_us_per_io"] for p in pairs]), 2)}


def strace_counts(path: str, ios: int) -> Optional[tuple]:
    """System calls per I/O by name, and their system time in us per I/O (strace's
    "seconds" column: CPU time in the kernel, not wall time), from an `strace -c -f`
    summary; "all" is the sum, "ring" the RING_SYSCALLS part."""
    if ios <= 0:
        return None
    out, cost = {}, {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                p = line.split()
                # "% time seconds usecs/call calls [errors] syscall"
                if len(p) >= 5 and p[-1] != "total" and p[0][0].isdigit() and p[3].isdigit():
                    out[p[-1]] = round(int(p[3]) / ios, 3)
                    try:
                        cost[p[-1]] = round(float(p[1]) * 1e6 / ios, 2)
                    except ValueError:
                        pass
    except OSError:
        return None
    if not out:
        return None
    for d, nd in ((out, 3), (cost, 2)):
        ring = sum(v for k, v in d.items() if k in RING_SYSCALLS)
        d["all"], d["ring"] = round(sum(d.values()), nd), round(ring, nd)
    return out, cost


def callgrind_counts(path: str, ios: int, top: int = 12) -> Optional[dict]:
    """User-space instructions per I/O of one job (guest-bench.sh RUSTIO_BENCH_CALLGRIND=1):
    the total from the dump PATH.out ("totals:"; its "summary:" wraps below zero after
    `callgrind_control -i off/on`, and so does callgrind_annotate's PROGRAM TOTALS) and
    the TOP functions by own instructions from the annotation PATH."""
    if ios <= 0:
        return None
    total, funcs = None, []
    try:
        with open(path + ".out", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("totals:"):
                    total = int(line.split()[1])
        with open(path, encoding="utf-8", errors="replace") as f:
            seen_totals = False
            for line in f:
                if "PROGRAM TOTALS" in line:
                    seen_totals = True
                    continue
                # "N (P%)  file:function [object]"
                m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
                if seen_totals and m and len(funcs) < top:
                    funcs.append((m.group(2).strip(), round(int(m.group(1).replace(",", "")) / ios)))
    except (OSError, ValueError, IndexError):
        return None
    if total is None:
        return None
    return {"instr_per_io": round(total / ios), "top": funcs}


def single_run(bdir: str, name: str) -> dict:
    r: dict = {"status": "missing"}
    job = fio_job(os.path.join(bdir, name + ".json"))
    rc = read_kv_line(os.path.join(bdir, name + ".rc"))
    if job is None:
        if rc is not None:
            r["status"] = f"fio failed (exit {rc})"
        return r
    rd, wr = job.get("read", {}), job.get("write", {})
    ios = int(rd.get("total_ios", 0)) + int(wr.get("total_ios", 0))
    iops = float(rd.get("iops", 0.0)) + float(wr.get("iops", 0.0))
    bw = (int(rd.get("bw_bytes", 0)) + int(wr.get("bw_bytes", 0))) / MiB
    side = rd if rd.get("total_ios", 0) else wr
    clat = side.get("clat_ns", {}) or {}
    pct = clat.get("percentile", {}) or {}
    r.update({
        "status": "ok" if rc in (None, "0") and not job.get("error") else f"fio error {job.get('error')} (exit {rc})",
        "iops": round(iops, 1),
        "mib_s": round(bw, 2),
        "total_ios": ios,
        "runtime_ms": max(int(rd.get("runtime", 0)), int(wr.get("runtime", 0))),
        "clat_mean_us": round(float(clat.get("mean", 0.0)) / 1000, 1),
        "clat_p99_us": round(float(pct.get("99.000000", 0)) / 1000, 1),
    })
    try:
        with open(os.path.join(bdir, name + ".cpu"), encoding="utf-8") as f:
            t0, t1, tck, b0, b1, tot0, tot1 = (int(x) for x in f.read().split())
        if ios > 0 and tck > 0:
            if t1 > 0:
                r["daemon_cpu_s"] = round((t1 - t0) / tck, 2)
                r["daemon_cpu_us_per_io"] = round((t1 - t0) / tck * 1e6 / ios, 2)
            r["guest_cpu_us_per_io"] = round((b1 - b0) / tck * 1e6 / ios, 2)
            if tot1 > tot0:
                r["guest_busy_pct"] = round(100.0 * (b1 - b0) / (tot1 - tot0), 1)
            th = thread_table(bdir, name, ios, tck)
            if th:
                r["threads"] = th
                r["daemon_user_us_per_io"] = round(sum(g["user_us_per_io"] for g in th.values()), 2)
                r["daemon_sys_us_per_io"] = round(sum(g["sys_us_per_io"] for g in th.values()), 2)
            # Floor rounds: fio's children ticks "utime0 stime0 utime1 stime1".
            with open(os.path.join(bdir, name + ".ticks"), encoding="utf-8") as f:
                u0, s0, u1, s1 = (int(x) for x in f.read().split())
            r["daemon_cpu_s"] = round((u1 - u0 + s1 - s0) / tck, 2)
            r["daemon_cpu_us_per_io"] = round((u1 - u0 + s1 - s0) / tck * 1e6 / ios, 2)
            r["daemon_user_us_per_io"] = round((u1 - u0) / tck * 1e6 / ios, 2)
            r["daemon_sys_us_per_io"] = round((s1 - s0) / tck * 1e6 / ios, 2)
            r["fio_usr_cpu_pct"] = job.get("usr_cpu")
            r["fio_sys_cpu_pct"] = job.get("sys_cpu")
    except (OSError, ValueError):
        pass
    return r


def thread_table(bdir: str, tag: str, ios: int, tck: int) -> Optional[dict]:
    """Per thread group (name without its trailing number): CPU us and context switches
    per I/O over one run, from TAG.threads0/TAG.threads1 (guest-bench.sh thread_stats)."""
    def load(path: str) -> dict:
        out = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                p = line.split()
                if len(p) == 6:
                    out[p[0]] = (p[1], *(int(x) for x in p[2:]))
        return out
    try:
        a = load(os.path.join(bdir, tag + ".threads0"))
        b = load(os.path.join(bdir, tag + ".threads1"))
    except (OSError, ValueError):
        return None
    if ios <= 0 or tck <= 0:
        return None
    groups: dict = {}
    for tid, (comm, ut, st, vol, inv) in b.items():
        ut0, st0, vol0, inv0 = a.get(tid, (comm, 0, 0, 0, 0))[1:]
        g = groups.setdefault(comm.rstrip("0123456789-_") or comm, [0, 0, 0, 0, 0])
        g[0] += 1
        g[1] += ut - ut0
        g[2] += st - st0
        g[3] += vol - vol0
        g[4] += inv - inv0
    return {name: {"threads": g[0],
                   "user_us_per_io": round(g[1] / tck * 1e6 / ios, 2),
                   "sys_us_per_io": round(g[2] / tck * 1e6 / ios, 2),
                   "vol_cs_per_io": round(g[3] / ios, 3),
                   "invol_cs_per_io": round(g[4] / ios, 3)} for name, g in sorted(groups.items())}


def read_kv_line(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def collect(vm_out: str) -> dict:
    guest = read_kv(os.path.join(vm_out, "guest.env"))
    res: dict = {"guest": guest, "backends": {}, "ratios": {}}
    for b in BACKENDS + OPTIONAL + FLOOR:
        bdir = os.path.join(vm_out, b)
        if not os.path.isdir(bdir):
            if b in BACKENDS:
                res["backends"][b] = {"status": "not run"}
            continue
        meta = read_kv(os.path.join(bdir, "meta"))
        entry: dict = {"status": meta.get("status", "incomplete")}
        if meta.get("error"):
            entry["error"] = meta["error"]
        if meta.get("vmhwm_kb", "").isdigit():
            entry["daemon_vmhwm_kib"] = int(meta["vmhwm_kb"])
            # The peak without the store's pages still mapped at the end (page cache:
            # rustio's mapped reads of the tmpfs file or the qcow2 image stay mapped until
            # the LUN goes), as bench/harness.py's UnsharedPeakSampler counts `rustio serve`.
            # rss_store_kb: the Rss of the store's mappings (smaps); older runs recorded
            # RssShmem, which covered only a store on tmpfs.
            for key, name in (("rss_store_kb", "daemon_rss_store_kib"), ("rss_shmem_kb", "daemon_rss_shmem_kib")):
                if meta.get(key, "").isdigit():
                    entry[name] = int(meta[key])
                    entry["daemon_peak_unshared_kib"] = max(0, int(meta["vmhwm_kb"]) - int(meta[key]))
                    break
        for k in ("dev", "max_sectors_kb", "cache_type", "setup_s", "image", "jobs"):
            if meta.get(k):
                entry[k] = meta[k]
        entry["workloads"] = {w: workload_result(bdir, w, u) for w, u in WORKLOADS}
        if os.path.isdir(os.path.join(bdir, "floor")):
            entry["paired_floor"] = {w: paired_floor(bdir, w) for w, _ in WORKLOADS}
        res["backends"][b] = entry
    for label, a, b in RATIOS:
        if a not in res["backends"] or b not in res["backends"]:
            continue
        per: dict = {}
        for w, unit in WORKLOADS:
            va = res["backends"].get(a, {}).get("workloads", {}).get(w, {}).get(unit)
            vb = res["backends"].get(b, {}).get("workloads", {}).get(w, {}).get(unit)
            per[w] = round(va / vb, 3) if va and vb else None
        res["ratios"][label] = per
    fl = floor_table(res["backends"])
    if fl:
        res["floor"] = fl
    return res


def floor_table(backends: dict) -> Optional[dict]:
    """Per workload: the floor (the cheaper of floor-file / floor-file-mt in CPU per I/O),
    each daemon's CPU split user / system, its CPU above the floor, the ring-side system
    calls per I/O of its strace round, and the ratios issue 24 target 2 is about.

    strace -c's "seconds" are not CPU time here (a blocking poll shows its wait, and each
    call carries strace's own stop-and-resume, ~0.25 ms under TCG): only its call counts
    are used. The ring side's CPU is the daemon's system time above the floor's."""
    if not any(b in backends for b in FLOOR):
        return None

    def wl(b: str, w: str) -> dict:
        return backends.get(b, {}).get("workloads", {}).get(w, {}) or {}

    def cpu(b: str, w: str) -> Optional[float]:
        return wl(b, w).get("daemon_cpu_us_per_io")

    def ratio(a, b) -> Optional[float]:
        return round(a / b, 3) if a is not None and b else None

    def sub(a, b) -> Optional[float]:
        return round(a - b, 2) if a is not None and b is not None else None

    def ring_calls(b: str, w: str) -> Optional[dict]:
        for p in (wl(b, w).get("profiled") or {}).values():
            sc = p.get("syscalls_per_io")
            if sc:
                return {k: v for k, v in sc.items() if k in RING_SYSCALLS + ("ring", "all")}
        return None

    out: dict = {}
    for w, _ in WORKLOADS:
        cands = [(cpu(b, w), b) for b in FLOOR if cpu(b, w) is not None]
        if not cands:
            continue
        fcpu, fb = min(cands)
        f = wl(fb, w)
        fsys, fusr = f.get("daemon_sys_us_per_io"), f.get("daemon_user_us_per_io")
        e: dict = {"floor_backend": fb, "floor_us_per_io": fcpu,
                   "floor_sys_us_per_io": fsys, "floor_user_us_per_io": fusr,
                   "floor_iops": f.get("iops")}
        for b in FLOOR:
            if cpu(b, w) is not None:
                e[b] = {"us_per_io": cpu(b, w), "sys": wl(b, w).get("daemon_sys_us_per_io"),
                        "user": wl(b, w).get("daemon_user_us_per_io"), "iops": wl(b, w).get("iops"),
                        "runs_iops": wl(b, w).get("runs")}
        ring_sys = {}
        for b in ("rustio-file", "tcmu-runner-file", "rustio-b-file", "rustio-c-file"):
            if cpu(b, w) is None:
                continue
            d = {"us_per_io": cpu(b, w),
                 "user_us_per_io": wl(b, w).get("daemon_user_us_per_io"),
                 "sys_us_per_io": wl(b, w).get("daemon_sys_us_per_io"),
                 "above_floor_us_per_io": sub(cpu(b, w), fcpu)}
            # System time beyond the floor's file I/O: the ring side (poll, the UIO read,
            # the doorbell write and the kernel's completion work it carries, wake-ups).
            d["sys_above_floor_sys_us_per_io"] = sub(d["sys_us_per_io"], fsys)
            d["user_above_floor_user_us_per_io"] = sub(d["user_us_per_io"], fusr)
            rc = ring_calls(b, w)
            if rc:
                d["ring_calls_per_io"] = rc
            e[b] = d
            if d["sys_above_floor_sys_us_per_io"] is not None:
                ring_sys[b] = d["sys_above_floor_sys_us_per_io"]
        # Floors measured right after each daemon run (same host load), when present.
        for b in ("rustio-file", "tcmu-runner-file", "rustio-b-file", "rustio-c-file"):
            pf = (backends.get(b, {}).get("paired_floor") or {}).get(w) or {}
            if pf.get("pairs") and b in e:
                e[b]["paired_floor"] = {k: pf[k] for k in
                                        ("floor_us_per_io", "floor_over_daemon", "daemon_over_floor",
                                         "above_floor_us_per_io")}
                e[b]["paired_floor"]["runs"] = [
                    [p["daemon_us_per_io"], p["floor_us_per_io"]] for p in pf["pairs"]]
        pr = (e.get("rustio-file") or {}).get("paired_floor")
        pt = (e.get("tcmu-runner-file") or {}).get("paired_floor")
        if pt:
            e["paired_floor_over_tcmu_runner"] = pt["floor_over_daemon"]
        if pr and pt:
            e["paired_above_floor_rustio_over_tcmu_runner"] = ratio(
                pr["above_floor_us_per_io"], pt["above_floor_us_per_io"])
            e["paired_normalised_rustio_over_tcmu_runner"] = ratio(
                pr["daemon_over_floor"], pt["daemon_over_floor"])
        t = e.get("tcmu-runner-file", {}).get("us_per_io")
        r = e.get("rustio-file", {}).get("us_per_io")
        # A daemon that did nothing but the file I/O would cost the floor: its ratio to
        # tcmu-runner is the best target 2 allows.
        e["floor_over_tcmu_runner"] = ratio(fcpu, t)
        e["floor_sys_over_tcmu_runner"] = ratio(fsys, t)
        e["rustio_over_tcmu_runner"] = ratio(r, t)
        if r is not None and t is not None:
            e["rustio_above_floor_over_tcmu_runner_above_floor"] = ratio(r - fcpu, t - fcpu)
        if ring_sys and fcpu is not None:
            # If the ring side's kernel time of the cheaper daemon were irreducible too.
            rmin = max(0.0, min(ring_sys.values()))
            e["ring_sys_min_us_per_io"] = round(rmin, 2)
            e["floor_plus_ring_us_per_io"] = round(fcpu + rmin, 2)
            e["floor_plus_ring_over_tcmu_runner"] = ratio(fcpu + rmin, t)
        out[w] = e
    return out


def fmt_perf(r: dict, unit: str) -> str:
    if r.get(unit) is None:
        return r.get("status", "-")[:19]
    v = f"{r['iops']:.0f} IOPS" if unit == "iops" else f"{r['mib_s']:.1f} MiB/s"
    return v if r.get("status") == "ok" else v + " (!)"


def render(res: dict) -> str:
    g = res["guest"]
    lines = [
        f"TCMU stage: tcm_loop LUN per backend, {g.get('size_mb', '?')} MiB, fio {g.get('runtime', '?')} s per job, "
        f"median of {g.get('runs', '1')} runs, "
        f"direct=1 libaio; guest {g.get('kernel', '?')} under QEMU TCG, {g.get('nproc', '?')} vCPUs",
        "(software emulation: compare rows with each other only, not with real hardware)",
        "",
    ]
    head = f"{'backend':<18}" + "".join(f"{w:>20}" for w, _ in WORKLOADS)
    head += f"{'daemon CPU us/IO rr/rw/sr':>30}{'peak RSS':>11}"
    lines += [head, "-" * len(head)]
    for b in [b for b in BACKENDS + OPTIONAL + FLOOR if b in res["backends"]]:
        e = res["backends"].get(b, {})
        wl = e.get("workloads")
        if not wl or all(wl[w].get("iops") is None for w, _ in WORKLOADS):
            lines.append(f"{b:<18}  {e.get('status', '-')}" + (f": {e['error']}" if e.get("error") else ""))
            continue
        row = f"{b:<18}" + "".join(f"{fmt_perf(wl[w], u):>20}" for w, u in WORKLOADS)
        cpu = [wl[w].get("daemon_cpu_us_per_io") for w, _ in WORKLOADS]
        cpu_s = "/".join("-" if c is None else f"{c:.0f}" for c in cpu)
        hwm = e.get("daemon_peak_unshared_kib", e.get("daemon_vmhwm_kib"))
        row += f"{cpu_s:>30}{(f'{hwm / 1024:.1f} MiB' if hwm else '-'):>11}"
        if e.get("status") not in ("ok",):
            row += f"  [{e.get('status')}{': ' + e['error'] if e.get('error') else ''}]"
        lines.append(row)
    lines.append("")
    lines.append("ratios (IOPS for 4k, MiB/s for 1m; >1 = rustio faster)")
    for label, per in res["ratios"].items():
        lines.append(f"{label:<33}" + "".join(
            f"{(f'{v:.2f}x' if v is not None else 'n/a'):>20}" for v in (per[w] for w, _ in WORKLOADS)))
    lines.append("")
    lines.append("guest CPU us/IO (all vCPUs, busy time incl. fio + kernel):")
    for b in BACKENDS + OPTIONAL + FLOOR:
        wl = res["backends"].get(b, {}).get("workloads")
        if wl:
            lines.append(f"  {b:<18}" + " / ".join(
                "-" if wl[w].get("guest_cpu_us_per_io") is None else f"{wl[w]['guest_cpu_us_per_io']:.0f}"
                for w, _ in WORKLOADS))
    sc_lines = []
    for b in BACKENDS + OPTIONAL + FLOOR:
        wl = res["backends"].get(b, {}).get("workloads") or {}
        cells = []
        for w, _ in WORKLOADS:
            sc = [p.get("syscalls_per_io") for p in (wl.get(w, {}).get("profiled") or {}).values()]
            sc = [x for x in sc if x]
            cells.append(f"{sc[0]['all']:.2f}" if sc else "-")
        if any(c != "-" for c in cells):
            sc_lines.append(f"  {b:<18}" + " / ".join(cells))
    if sc_lines:
        lines.append("")
        lines.append("daemon system calls per I/O (strace -c -f round, not in the medians):")
        lines += sc_lines
    cg_lines = []
    for b in BACKENDS + OPTIONAL + FLOOR:
        wl = res["backends"].get(b, {}).get("workloads") or {}
        for w, _ in WORKLOADS:
            for tag, p in sorted((wl.get(w, {}).get("profiled") or {}).items()):
                cg = p.get("callgrind")
                if cg:
                    cg_lines.append(f"  {b:<18} {tag:<22} {cg['instr_per_io']:>10}")
                    cg_lines += [f"      {n:>9}  {f}" for f, n in cg["top"]]
    if cg_lines:
        lines.append("")
        lines.append("daemon user-space instructions per I/O (callgrind round; its functions):")
        lines += cg_lines
    if res.get("floor"):
        lines += render_floor(res["floor"])
    return "\n".join(lines) + "\n"


def render_floor(fl: dict) -> list:
    def n(v, f="{:.0f}") -> str:
        return "-" if v is None else f.format(v)

    def col(key: str, sub: Optional[str] = None, f: str = "{:.0f}") -> list:
        cells = []
        for w, _ in WORKLOADS:
            e = fl.get(w, {})
            v = e.get(key) if sub is None else (e.get(key) or {}).get(sub)
            cells.append(n(v, f))
        return cells

    def calls(b: str) -> list:
        cells = []
        for w, _ in WORKLOADS:
            rc = (fl.get(w, {}).get(b) or {}).get("ring_calls_per_io")
            keys = ("poll" if "poll" in (rc or {}) else "ppoll", "read", "write")
            cells.append("/".join(f"{rc.get(k, 0):.2f}" for k in keys) if rc else "-")
        return cells

    def usr_sys(b: str) -> list:
        return [f"{u} / {s}" for u, s in zip(col(b, "user_us_per_io"), col(b, "sys_us_per_io"))]

    rows = [
        ("floor: fio pvsync CPU us/IO (usr+sys)", col("floor_us_per_io")),
        ("  of it sys (preadv/pwritev)", col("floor_sys_us_per_io")),
        ("  of it usr (fio)", col("floor_user_us_per_io", f="{:.1f}")),
        ("  from (min CPU of 1 / nproc jobs)", [fl.get(w, {}).get("floor_backend", "-") for w, _ in WORKLOADS]),
        ("  floor-file IOPS (1 job)", col("floor-file", "iops")),
        ("rustio-file CPU us/IO (usr+sys)", col("rustio-file", "us_per_io")),
        ("  usr / sys (threads)", usr_sys("rustio-file")),
        ("  sys above floor sys (ring side)", col("rustio-file", "sys_above_floor_sys_us_per_io")),
        ("  poll/read/write per IO (strace)", calls("rustio-file")),
        ("tcmu-runner-file CPU us/IO (usr+sys)", col("tcmu-runner-file", "us_per_io")),
        ("  usr / sys (threads)", usr_sys("tcmu-runner-file")),
        ("  sys above floor sys (ring side)", col("tcmu-runner-file", "sys_above_floor_sys_us_per_io")),
        ("  ppoll/read/write per IO (strace)", calls("tcmu-runner-file")),
        ("rustio-file above floor", col("rustio-file", "above_floor_us_per_io")),
        ("tcmu-runner-file above floor", col("tcmu-runner-file", "above_floor_us_per_io")),
        ("rustio / tcmu-runner", col("rustio_over_tcmu_runner", f="{:.2f}x")),
        ("best possible = floor / tcmu-runner", col("floor_over_tcmu_runner", f="{:.2f}x")),
        ("  floor sys only / tcmu-runner", col("floor_sys_over_tcmu_runner", f="{:.2f}x")),
        ("  (floor + cheaper ring side) / tcmu-runner", col("floor_plus_ring_over_tcmu_runner", f="{:.2f}x")),
        ("above floor: rustio / tcmu-runner", col("rustio_above_floor_over_tcmu_runner_above_floor", f="{:.2f}x")),
        ("paired floor jobs (right after each daemon run):", ["", "", ""]),
        ("  floor next to rustio-file, us/IO", [n(((fl.get(w, {}).get("rustio-file") or {}).get("paired_floor") or {}).get("floor_us_per_io")) for w, _ in WORKLOADS]),
        ("  rustio-file above its floor", [n(((fl.get(w, {}).get("rustio-file") or {}).get("paired_floor") or {}).get("above_floor_us_per_io")) for w, _ in WORKLOADS]),
        ("  floor next to tcmu-runner-file, us/IO", [n(((fl.get(w, {}).get("tcmu-runner-file") or {}).get("paired_floor") or {}).get("floor_us_per_io")) for w, _ in WORKLOADS]),
        ("  tcmu-runner-file above its floor", [n(((fl.get(w, {}).get("tcmu-runner-file") or {}).get("paired_floor") or {}).get("above_floor_us_per_io")) for w, _ in WORKLOADS]),
        ("  floor / tcmu-runner (median of runs)", col("paired_floor_over_tcmu_runner", f="{:.2f}x")),
        ("  above floor: rustio / tcmu-runner", col("paired_above_floor_rustio_over_tcmu_runner", f="{:.2f}x")),
        ("  rustio-file in units of its floor", [n(((fl.get(w, {}).get("rustio-file") or {}).get("paired_floor") or {}).get("daemon_over_floor"), "{:.2f}") for w, _ in WORKLOADS]),
        ("  tcmu-runner-file in units of its floor", [n(((fl.get(w, {}).get("tcmu-runner-file") or {}).get("paired_floor") or {}).get("daemon_over_floor"), "{:.2f}") for w, _ in WORKLOADS]),
        ("  rustio / tcmu-runner, floor-normalised", col("paired_normalised_rustio_over_tcmu_runner", f="{:.2f}x")),
    ]
    out = ["", "CPU floor (no TCMU: fio ioengine=pvsync, iodepth 1, on the same tmpfs file; "
           "target 2 is daemon CPU/IO <= 0.6x tcmu-runner):"]
    out.append(f"{'':<46}" + "".join(f"{w:>22}" for w, _ in WORKLOADS))
    for label, cells in rows:
        if all(c in ("-", "- / -") for c in cells) or (label.startswith("paired") and not any(
                (fl.get(w, {}).get(b) or {}).get("paired_floor")
                for w, _ in WORKLOADS for b in ("rustio-file", "tcmu-runner-file"))):
            continue
        out.append(f"{label:<46}" + "".join(f"{c:>22}" for c in cells))
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    vm_out, json_out = argv[0], argv[1]
    res = collect(vm_out)
    if len(argv) >= 4 and argv[2] == "--host-info":
        res["host"] = read_kv(argv[3])
    res["status"] = "ok" if all(
        res["backends"][b].get("status") == "ok" for b in res["backends"]) else "partial"
    table = render(res)
    res["table"] = table
    sys.stdout.write(table)
    with open(json_out, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
    with open(os.path.splitext(json_out)[0] + ".txt", "w", encoding="utf-8") as f:
        f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
