#!/usr/bin/env python3
"""rustio benchmark harness (run it through bench/run; see bench/README.md).

Stages, in order:
  build     cargo build --release -p rustio, and bench/loadgen
  anchors   loopback TCP limit with iperf3 (single connection, 127.0.0.1)
  loopback  userspace iSCSI on 127.0.0.1: rustio serve (RAM and tmpfs-file LUNs) vs tgtd
            (tmpfs-file LUN), every workload against every target, interleaved per run
  profile   (--profile) perf record of rustio serve under 4 KiB random reads
  tcmu      (--tcmu) VM stage: rustio runner vs tcmu-runner vs kernel fileio (bench/tcmu/run.sh)
  lio       (--lio) VM stage: rustio serve vs LIO's in-kernel iSCSI target (bench/lio/run.sh)
  report    table on stdout, JSON + SVG + text in the output directory

Only the Python standard library is used. Every process started is recorded (and killed
on exit, also by bench/run's EXIT trap); every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
import chart  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# With --nice: a shell shim that gives the program its own autogroup with that nice value
# (with CONFIG_SCHED_AUTOGROUP, CPU is shared between session groups, so a per-process
# nice alone does not change a benchmark's share against other sessions' builds).
PRIO_SHIM: list[str] = []


def shim(argv: list[str]) -> list[str]:
    return PRIO_SHIM + argv


def run_client(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Runs a client to completion (killed on timeout or interrupt by subprocess.run)."""
    return subprocess.run(
        shim(argv), capture_output=True, text=True, timeout=timeout, check=False, start_new_session=bool(PRIO_SHIM)
    )
INITIATOR = "iqn.2024-01.org.rustio:bench"
MiB = 1 << 20


# ---------------------------------------------------------------------------- utilities


class BenchError(Exception):
    """A stage failed in a way that makes the rest meaningless."""


def loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def proc_cpu_ticks(pid: int) -> Optional[int]:
    """utime + stime of the whole process (all threads, live and exited), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            s = f.read()
    except OSError:
        return None
    # Fields after the parenthesised comm; utime/stime are fields 14/15 (man 5 proc).
    rest = s[s.rfind(")") + 2 :].split()
    try:
        return int(rest[11]) + int(rest[12])
    except (IndexError, ValueError):
        return None


def proc_status_kib(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                    out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def proc_ctxsw(pid: int) -> Optional[tuple[int, int]]:
    """(voluntary, involuntary) context switches summed over the process's live threads."""
    vol = invol = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the thread exited meanwhile
    return vol, invol


class SteadySampler(threading.Thread):
    """Samples the target's context switches between 1 s after the client starts and
    0.5 s before it should end (threads that live only for the session, such as a
    connection thread, are alive in both samples)."""

    def __init__(self, pid: int, secs: float):
        super().__init__(daemon=True)
        self.pid = pid
        self.secs = secs
        self.stop_ev = threading.Event()
        self.result: Optional[dict] = None

    def run(self) -> None:
        if self.secs < 3 or self.stop_ev.wait(1.0):
            return
        t0, c0 = time.monotonic(), proc_ctxsw(self.pid)
        if self.stop_ev.wait(max(0.5, self.secs - 1.5)):
            return
        t1, c1 = time.monotonic(), proc_ctxsw(self.pid)
        if c0 is None or c1 is None or t1 <= t0:
            return
        self.result = {
            "voluntary_per_s": (c1[0] - c0[0]) / (t1 - t0),
            "involuntary_per_s": (c1[1] - c0[1]) / (t1 - t0),
        }


class UnsharedPeakSampler(threading.Thread):
    """Peak RssAnon + RssFile of the target over a run, sampled every 50 ms (and once at
    the end by the caller). A file LUN served from a shared mapping (rustio's mapped reads)
    has the pages it touched of its store in RssShmem (the bench's stores are on tmpfs), so
    VmHWM would count the store; leaving RssShmem out counts the rest as VmHWM did."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.stop_ev = threading.Event()
        self.peak_kib = 0

    def sample(self) -> None:
        st = proc_status_kib(self.pid)
        self.peak_kib = max(self.peak_kib, st.get("RssAnon", 0) + st.get("RssFile", 0))

    def run(self) -> None:
        while not self.stop_ev.wait(0.05):
            self.sample()


def reset_hwm(pid: int) -> bool:
    """Resets VmHWM to the current RSS (writing 5 to clear_refs, Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --port-range LO-HI: the ports this run may listen on (empty: any the kernel hands out).
PORT_RANGE: list[int] = []
_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A free 127.0.0.1 TCP port: from --port-range when given (each handed out once per
    run, since the process that will listen on it may not have bound it yet)."""
    for port in PORT_RANGE:
        if port in _PORTS_GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    if PORT_RANGE:
        raise BenchError(f"no free port left in --port-range {PORT_RANGE[0]}-{PORT_RANGE[-1]}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: Optional[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"process exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def median(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_si(v: Optional[float], unit: str = "") -> str:
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M{unit}"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k{unit}"
    if v >= 100:
        return f"{v:.0f}{unit}"
    return f"{v:.1f}{unit}"


def fmt_dur(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ---------------------------------------------------------------------------- processes


class Procs:
    """Every process the harness starts; all are killed by `cleanup`."""

    def __init__(self, pidfile: str):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.pidfile = pidfile
        self.files: list[str] = []

    def start(self, name: str, argv: list[str], log: str, **kw) -> subprocess.Popen:
        logf = open(log, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        p = subprocess.Popen(
            shim(argv), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kw
        )
        logf.close()
        self.procs.append((name, p))
        with open(self.pidfile, "a", encoding="ascii") as f:
            f.write(f"{p.pid} {os.path.basename(argv[0])}\n")
        return p

    def stop(self, p: subprocess.Popen, grace: float = 3.0) -> None:
        if p.poll() is None:
            try:
                p.terminate()
            except OSError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                # tgtd ignores SIGTERM (it only stops through tgtadm); SIGKILL is final.
                try:
                    p.kill()
                except OSError:
                    pass
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass

    def cleanup(self) -> None:
        for _, p in reversed(self.procs):
            self.stop(p, grace=2.0)
        self.procs.clear()
        for f in self.files:
            try:
                os.unlink(f)
            except OSError:
                pass
        self.files.clear()


# ---------------------------------------------------------------------------- progress


class Progress:
    """One status line on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int):
        self.total = max(1, total)
        self.done = 0
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last = ""

    def _eta(self) -> str:
        if self.done == 0:
            return "?"
        el = time.monotonic() - self.t0
        return fmt_dur(el / self.done * (self.total - self.done))

    def step(self, what: str) -> None:
        pct = 100 * self.done // self.total
        line = (
            f"[{self.done + 1:>3}/{self.total} {pct:>3}%] {what}  "
            f"elapsed {fmt_dur(time.monotonic() - self.t0)} eta {self._eta()}  load {loadavg().split()[0]}"
        )
        self._show(line)

    def finish_step(self, note: str = "") -> None:
        self.done += 1
        if note:
            self._show(self.last + "  → " + note, final=True)

    def note(self, msg: str) -> None:
        self._show(msg, final=True)

    def _show(self, line: str, final: bool = False) -> None:
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            sys.stderr.write("\r\x1b[K" + line[:width] + ("\n" if final else ""))
        elif final:
            # Not a terminal (CI logs): one line per finished step.
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.last = line if not final else ""


# ---------------------------------------------------------------------------- targets


@dataclass
class Target:
    """A target under test: one process, one LUN."""

    name: str
    impl: str  # "rustio" | "tgt"
    kind: str  # "ram" | "file"
    port: int = 0
    iqn: str = ""
    lun: int = 0
    proc: Optional[subprocess.Popen] = None
    store_bytes: int = 0
    store_in_rss: int = 0  # bytes of the store that count towards the process's RSS
    backing: str = ""
    capacity: dict = field(default_factory=dict)
    baseline_rss_kib: int = 0
    extra_args: list = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def describe(self) -> dict:
        return {
            "name": self.name,
            "impl": self.impl,
            "kind": self.kind,
            "portal": f"127.0.0.1:{self.port}",
            "iqn": self.iqn,
            "lun": self.lun,
            "store": ("RAM" if self.kind == "ram" else f"file {self.backing} (tmpfs)"),
            "store_bytes": self.store_bytes,
            "capacity": self.capacity,
            "baseline_rss_kib": self.baseline_rss_kib,
            "extra_args": self.extra_args,
        }


def start_rustio(ctx: "Ctx", t: Target) -> None:
    t.port = free_port()
    t.iqn = f"iqn.2024-01.org.rustio.bench:{t.name}"
    t.lun = 0
    attrs = {"block_size": 512}
    if t.kind == "ram":
        so = {"plugin": "ramdisk", "name": "bench", "size": t.store_bytes, "attributes": attrs}
        path = "/backstores/ramdisk/bench"
        t.store_in_rss = t.store_bytes
    else:
        t.backing = f"/dev/shm/rustio-bench-{os.getpid()}-{t.name}.img"
        ctx.procs.files.append(t.backing)
        so = {
            "plugin": "fileio",
            "name": "bench",
            "dev": t.backing,
            "size": t.store_bytes,
            "write_back": True,
            "attributes": attrs,
        }
        path = "/backstores/fileio/bench"
    cfg = {
        "storage_objects": [so],
        "targets": [
            {
                "wwn": t.iqn,
                "fabric": "iscsi",
                "tpgs": [
                    {
                        "tag": 1,
                        "enable": True,
                        "attributes": {"authentication": 0, "generate_node_acls": 1, "demo_mode_write_protect": 0},
                        "luns": [{"index": 0, "storage_object": path}],
                        "portals": [{"ip_address": "127.0.0.1", "port": t.port}],
                        "node_acls": [],
                    }
                ],
            }
        ],
    }
    cfg_path = os.path.join(ctx.out, f"{t.name}.saveconfig.json")
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    argv = [ctx.rustio, "serve", "--config", cfg_path, "--log", "warn"] + ctx.args.rustio_args.split()
    argv += t.extra_args
    t.proc = ctx.procs.start(t.name, argv, os.path.join(ctx.out, "logs", f"{t.name}.log"))
    wait_port(t.port, t.proc, 20)


def tgtadm(ctl: int, *args: str) -> None:
    argv = ["tgtadm", "-C", str(ctl), "--lld", "iscsi", *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")


def start_tgt(ctx: "Ctx", t: Target) -> None:
    t.port = free_port()
    t.iqn = f"iqn.2024-01.org.rustio.bench:{t.name}"
    t.lun = 1  # LUN 0 is tgt's controller LU
    os.makedirs("/var/run/tgtd", exist_ok=True)
    ctl = None
    for _ in range(100):
        c = random.randint(1000, 29999)
        if not os.path.exists(f"/var/run/tgtd/socket.{c}"):
            ctl = c
            break
    if ctl is None:
        raise BenchError("no free tgtd control port")
    t.backing = f"/dev/shm/rustio-bench-{os.getpid()}-{t.name}.img"
    ctx.procs.files.append(t.backing)
    with open(t.backing, "wb") as f:
        f.truncate(t.store_bytes)
    argv = ["tgtd", "-f", "-C", str(ctl), "--iscsi", f"portal=127.0.0.1:{t.port}"]
    if ctx.args.tgt_threads:
        argv += ["-t", str(ctx.args.tgt_threads)]
    t.proc = ctx.procs.start(t.name, argv, os.path.join(ctx.out, "logs", f"{t.name}.log"))
    deadline = time.monotonic() + 15
    while not os.path.exists(f"/var/run/tgtd/socket.{ctl}"):
        if t.proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError("tgtd did not start (see logs/tgt.log)")
        time.sleep(0.1)
    tgtadm(ctl, "--op", "new", "--mode", "target", "--tid", "1", "-T", t.iqn)
    tgtadm(
        ctl, "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
        "--bstype", "rdwr", "--backing-store", t.backing,
    )  # fmt: skip
    tgtadm(ctl, "--op", "bind", "--mode", "target", "--tid", "1", "--initiator-address", "ALL")
    wait_port(t.port, t.proc, 15)


TARGETS = {
    "tgt": lambda size: Target("tgt", "tgt", "file", store_bytes=size),
    "rustio-ram": lambda size: Target("rustio-ram", "rustio", "ram", store_bytes=size),
    "rustio-file": lambda size: Target("rustio-file", "rustio", "file", store_bytes=size),
}


def parse_variant(spec: str) -> tuple[str, str, list[str]]:
    """"SUFFIX:ram|file:ARGS" → (target name, kind, extra rustio serve arguments)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or parts[1] not in ("ram", "file") or not re.fullmatch(r"[A-Za-z0-9_.-]+", parts[0]):
        raise ValueError(f"bad --variant {spec!r}; expected SUFFIX:ram|file:ARGS, e.g. w1:ram:--workers 1")
    return f"rustio-{parts[1]}-{parts[0]}", parts[1], parts[2].split()


def make_target(name: str, a: argparse.Namespace) -> Target:
    if name in TARGETS:
        return TARGETS[name](a.size)
    for spec in a.variant:
        vname, kind, extra = parse_variant(spec)
        if vname == name:
            return Target(vname, "rustio", kind, store_bytes=a.size, extra_args=extra)
    raise BenchError(f"unknown target {name}")


# ---------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    name: str
    client: str  # "iscsi-perf" | "loadgen"
    rw: str  # read | write | mix
    random: bool
    bs: int
    qd: int
    read_pct: int = 100
    desc: str = ""
    sessions: int = 1  # loadgen --sessions: that many sessions, each with qd in flight


WORKLOADS = [
    Workload("randread-4k-qd1", "iscsi-perf", "read", True, 4096, 1, desc="4 KiB random read, QD 1"),
    Workload("randread-4k-qd32", "iscsi-perf", "read", True, 4096, 32, desc="4 KiB random read, QD 32"),
    Workload("randread-4k-qd128", "iscsi-perf", "read", True, 4096, 128, desc="4 KiB random read, QD 128"),
    Workload("seqread-128k-qd32", "iscsi-perf", "read", False, 131072, 32, desc="128 KiB sequential read, QD 32"),
    Workload("randread-4k-qd32-lg", "loadgen", "read", True, 4096, 32, desc="4 KiB random read, QD 32 (loadgen)"),
    Workload("seqread-128k-qd32-lg", "loadgen", "read", False, 131072, 32, desc="128 KiB seq read, QD 32 (loadgen)"),
    Workload("randwrite-4k-qd32", "loadgen", "write", True, 4096, 32, 0, desc="4 KiB random write, QD 32"),
    Workload("seqwrite-128k-qd32", "loadgen", "write", False, 131072, 32, 0, desc="128 KiB sequential write, QD 32"),
    Workload("randrw70-4k-qd32", "loadgen", "mix", True, 4096, 32, 70, desc="4 KiB random 70% read / 30% write, QD 32"),
    # QD 1 latency (issue 24 item 4): loadgen's inline driver, so a sample is the target's
    # round trip plus one send and one receive, with no thread hand-off in the client.
    Workload("lat-randread-4k-qd1", "loadgen", "read", True, 4096, 1,
             desc="4 KiB random read, QD 1: latency p50/p99/p99.9"),
    Workload("lat-randwrite-4k-qd1", "loadgen", "write", True, 4096, 1, 0,
             desc="4 KiB random write, QD 1: latency p50/p99/p99.9"),
    # 16 sessions (one initiator name, 16 ISIDs) × QD 8 against one target.
    Workload("randread-4k-16x8", "loadgen", "read", True, 4096, 8,
             desc="4 KiB random read, 16 sessions × QD 8", sessions=16),
    Workload("randrw70-4k-16x8", "loadgen", "mix", True, 4096, 8, 70,
             desc="4 KiB random 70% read / 30% write, 16 sessions × QD 8", sessions=16),
]  # fmt: skip


def run_iscsi_perf(ctx: "Ctx", t: Target, w: Workload, secs: int) -> dict:
    bl = t.capacity.get("block_len", 512)
    if w.bs % bl:
        raise BenchError(f"{w.bs} is not a multiple of the block length {bl}")
    argv = ["iscsi-perf", "-i", INITIATOR, "-t", str(secs), "-m", str(w.qd), "-b", str(w.bs // bl)]
    if w.random:
        argv.append("-r")
    argv.append(f"iscsi://127.0.0.1:{t.port}/{t.iqn}/{t.lun}")
    r = run_client(argv, secs + 60)
    found = re.findall(r"iops average (\d+)", r.stdout)
    if r.returncode != 0 or not found:
        tail = (r.stdout + r.stderr).strip().replace("\r", "\n").splitlines()[-3:]
        raise BenchError(f"iscsi-perf exited {r.returncode}: {' | '.join(tail)}")
    iops = float(found[-1])
    # iscsi-perf reports the average over its whole run (completions / elapsed).
    return {"iops": iops, "mb_per_s": iops * w.bs / 1e6, "ios": iops * secs, "secs": float(secs)}


def run_loadgen(ctx: "Ctx", t: Target, w: Workload, secs: float, seed: int) -> dict:
    argv = [
        ctx.loadgen, "run", "--portal", f"127.0.0.1:{t.port}", "--target", t.iqn, "--lun", str(t.lun),
        "--initiator", INITIATOR, "--rw", w.rw, "--read-pct", str(w.read_pct),
        "--pattern", "rand" if w.random else "seq", "--bs", str(w.bs), "--qd", str(w.qd),
        "--time", str(secs), "--seed", str(seed), "--sessions", str(w.sessions),
    ]  # fmt: skip
    r = run_client(argv, secs + 90 + 5 * w.sessions)
    if r.returncode != 0:
        raise BenchError(f"loadgen: {r.stderr.strip()[-300:]}")
    j = json.loads(r.stdout)
    return {
        "iops": j["iops"],
        "mb_per_s": j["mb_per_s"],
        "ios": j["ios"],
        "secs": j["secs"],
        "lat_us": j["lat_us"],
        "r2ts": j["r2ts"],
        "negotiated": j["negotiated"],
        "sessions": j.get("sessions", 1),
        "driver": j.get("driver"),
    }


def loadgen_simple(ctx: "Ctx", t: Target, mode: str, timeout: float) -> dict:
    argv = [ctx.loadgen, mode, "--portal", f"127.0.0.1:{t.port}", "--target", t.iqn, "--lun", str(t.lun),
            "--initiator", INITIATOR]  # fmt: skip
    r = run_client(argv, timeout)
    if r.returncode != 0:
        raise BenchError(f"loadgen {mode} against {t.name}: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout)


def measure(ctx: "Ctx", t: Target, w: Workload, secs: float, seed: int) -> dict:
    if t.proc is None or t.proc.poll() is not None:
        raise BenchError(f"{t.name} is not running")
    hwm_reset = reset_hwm(t.pid)
    la0 = loadavg()
    c0 = proc_cpu_ticks(t.pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.monotonic()
    sampler = SteadySampler(t.pid, secs)
    sampler.start()
    anon = UnsharedPeakSampler(t.pid) if t.kind == "file" else None
    if anon:
        anon.start()
    try:
        if w.client == "iscsi-perf":
            res = run_iscsi_perf(ctx, t, w, max(1, int(round(secs))))
        else:
            res = run_loadgen(ctx, t, w, secs, seed)
    finally:
        sampler.stop_ev.set()
        sampler.join(timeout=5)
        if anon:
            anon.stop_ev.set()
            anon.join(timeout=5)
            anon.sample()
    wall = time.monotonic() - w0
    if sampler.result and res.get("iops"):
        cs = sampler.result["voluntary_per_s"] + sampler.result["involuntary_per_s"]
        res["target_ctxsw_per_io"] = cs / res["iops"]
        res["target_ctxsw"] = sampler.result
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c1 = proc_cpu_ticks(t.pid)
    st = proc_status_kib(t.pid)
    ios = res["ios"] or 1
    if c0 is not None and c1 is not None:
        cpu_s = (c1 - c0) / CLK_TCK
        res["target_cpu_s"] = cpu_s
        res["target_cpu_us_per_io"] = cpu_s * 1e6 / ios
        # Share of one CPU the target used over the client's wall time.
        res["target_cpu_pct"] = 100 * cpu_s / wall if wall > 0 else None
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res["client_cpu_us_per_io"] = client_cpu * 1e6 / ios
    res["peak_rss_kib"] = st.get("VmHWM")
    res["rss_kib"] = st.get("VmRSS")
    res["hwm_reset"] = hwm_reset
    if anon:
        # File targets: the store is the tmpfs file, whether read into buffers or mapped.
        res["peak_rss_unshared_kib"] = anon.peak_kib
        res["rss_beyond_store_kib"] = anon.peak_kib
    elif st.get("VmHWM") is not None:
        res["rss_beyond_store_kib"] = st["VmHWM"] - t.store_in_rss // 1024
    res["loadavg"] = la0
    res["wall_s"] = wall
    return res


# ---------------------------------------------------------------------------- context


@dataclass
class Ctx:
    args: argparse.Namespace
    out: str
    procs: Procs
    progress: Optional[Progress] = None
    rustio: str = ""
    loadgen: str = ""
    result: dict = field(default_factory=dict)
    targets: list = field(default_factory=list)
    workloads: list = field(default_factory=list)
    failures: list = field(default_factory=list)


# ---------------------------------------------------------------------------- stages


def need_tools(ctx: Ctx) -> None:
    wanted = {"iscsi-perf": "libiscsi-bin", "iperf3": "iperf3"}
    if any(n == "tgt" for n in ctx.args.targets):
        wanted.update({"tgtd": "tgt", "tgtadm": "tgt"})
    if ctx.args.profile:
        wanted["perf"] = "linux-perf"
    missing = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if not missing:
        return
    if ctx.args.no_install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(f"missing tools; install the Debian packages: {' '.join(missing)}")
    sys.stderr.write(f"bench: apt-get install -y {' '.join(missing)}\n")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        raise BenchError(f"apt-get install {' '.join(missing)} failed: {r.stderr.strip()[-400:]}")


def stage_build(ctx: Ctx) -> None:
    tdir = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    ctx.rustio = ctx.args.rustio_bin or os.path.join(tdir, "release", "rustio")
    ctx.loadgen = ctx.args.loadgen_bin or os.path.join(tdir, "release", "loadgen")
    if ctx.args.no_build:
        for b in (ctx.rustio, ctx.loadgen):
            if not os.access(b, os.X_OK):
                raise BenchError(f"--no-build but {b} is missing")
        return
    log = os.path.join(ctx.out, "logs", "build.log")
    steps = []
    if not ctx.args.rustio_bin:
        steps.append(("rustio", ["cargo", "build", "--release", "-p", "rustio"], REPO))
    if not ctx.args.loadgen_bin:
        steps.append(("loadgen", ["cargo", "build", "--release", "--manifest-path", os.path.join(BENCH, "loadgen", "Cargo.toml")], REPO))
    env = dict(os.environ, CARGO_TARGET_DIR=tdir)
    for name, argv, cwd in steps:
        sys.stderr.write(f"bench: building {name} (release, CARGO_TARGET_DIR={tdir}) ...\n")
        with open(log, "ab") as f:
            r = subprocess.run(argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=7200, check=False)
        if r.returncode != 0:
            raise BenchError(f"building {name} failed; see {log}")


def stage_anchors(ctx: Ctx) -> None:
    a = ctx.args
    port = free_port()
    srv = ctx.procs.start("iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                          os.path.join(ctx.out, "logs", "iperf3-server.log"))  # fmt: skip
    runs = []
    try:
        wait_port(port, srv, 10)
        # wait_port's probe connection counts as a (failed) test for iperf3's server; give
        # it time to return to listening before the first real client.
        time.sleep(1.0)
        for i in range(a.runs):
            ctx.progress.step(f"iperf3 loopback TCP run {i + 1}/{a.runs}")
            secs = max(1, int(round(a.iperf_time)))
            r = run_client(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"], secs + 30)
            if r.returncode != 0:  # the server was still busy (e.g. "server is busy"): once more
                time.sleep(1.0)
                r = run_client(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"], secs + 30)
            try:
                bps = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
                runs.append({"mb_per_s": bps / 8 / 1e6, "loadavg": loadavg()})
                ctx.progress.finish_step(f"{bps / 8 / 1e6:.0f} MB/s")
            except (ValueError, KeyError, TypeError):
                ctx.failures.append(f"iperf3 run {i + 1}: {r.stderr.strip()[-200:] or 'no result'}")
                ctx.progress.finish_step("FAILED")
            time.sleep(0.3)  # the server accepts the next client once the last is done
    finally:
        ctx.procs.stop(srv)
    ctx.result["anchors"]["iperf3"] = {
        "streams": 1,
        "runs": runs,
        "median_mb_per_s": median([r["mb_per_s"] for r in runs]),
    }


def stage_loopback(ctx: Ctx) -> None:
    a = ctx.args
    for name in a.targets:
        t = make_target(name, a)
        ctx.progress.step(f"starting and pre-filling {name}")
        try:
            (start_tgt if t.impl == "tgt" else start_rustio)(ctx, t)
            t.capacity = loadgen_simple(ctx, t, "probe", 60)
            t.baseline_rss_kib = proc_status_kib(t.pid).get("VmRSS", 0)
            f0 = time.monotonic()
            fill = loadgen_simple(ctx, t, "fill", 900)
            t.capacity["fill_mb_per_s"] = fill.get("mb_per_s")
            ctx.targets.append(t)
            ctx.progress.finish_step(
                f"{t.capacity['bytes'] / MiB:.0f} MiB filled in {time.monotonic() - f0:.1f} s, "
                f"MaxRecvDataSegmentLength {t.capacity['negotiated']['max_xmit']}"
            )
        except (BenchError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
            ctx.failures.append(f"target {name}: {e}")
            ctx.progress.finish_step(f"FAILED: {e}")
            if t.proc is not None:
                ctx.procs.stop(t.proc)
            # Its workload steps will not run.
            ctx.progress.total -= len(ctx.workloads) * a.runs
    ctx.result["targets"] = [t.describe() for t in ctx.targets]
    wl_out = []
    for w in ctx.workloads:
        per = {t.name: {"runs": []} for t in ctx.targets}
        for run in range(a.runs):
            for t in ctx.targets:
                ctx.progress.step(f"{w.name:<22} {t.name:<12} run {run + 1}/{a.runs}")
                try:
                    m = measure(ctx, t, w, a.time, seed=1000 * run + 7)
                    per[t.name]["runs"].append(m)
                    extra = f", p50 {m['lat_us']['p50']} p99 {m['lat_us']['p99']} µs" if "lat_us" in m else ""
                    ctx.progress.finish_step(
                        f"{fmt_si(m['iops'])} IOPS, {m['mb_per_s']:.0f} MB/s, "
                        f"{m.get('target_cpu_us_per_io', 0):.1f} µs CPU/IO{extra}"
                    )
                except (BenchError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                    per[t.name]["runs"].append({"error": str(e)})
                    ctx.failures.append(f"{w.name} on {t.name} run {run + 1}: {e}")
                    ctx.progress.finish_step(f"FAILED: {e}")
        for t in ctx.targets:
            ok = [r for r in per[t.name]["runs"] if "error" not in r]
            med = {}
            for k in ("iops", "mb_per_s", "target_cpu_us_per_io", "client_cpu_us_per_io", "target_cpu_pct",
                      "target_ctxsw_per_io"):
                med[k] = median([r.get(k) for r in ok])
            med["peak_rss_kib"] = max([r["peak_rss_kib"] for r in ok if r.get("peak_rss_kib")], default=None)
            med["rss_beyond_store_kib"] = max(
                [r["rss_beyond_store_kib"] for r in ok if r.get("rss_beyond_store_kib") is not None], default=None
            )
            lats = [r["lat_us"]["p99"] for r in ok if "lat_us" in r]
            med["p99_us"] = median(lats) if lats else None
            lat50 = [r["lat_us"]["p50"] for r in ok if "lat_us" in r]
            med["p50_us"] = median(lat50) if lat50 else None
            lat999 = [r["lat_us"]["p999"] for r in ok if "lat_us" in r]
            med["p999_us"] = median(lat999) if lat999 else None
            per[t.name]["median"] = med
            per[t.name]["ok_runs"] = len(ok)
        wl_out.append(
            {
                "name": w.name,
                "client": w.client,
                "desc": w.desc,
                "bs": w.bs,
                "qd": w.qd,
                "rw": w.rw,
                "read_pct": w.read_pct,
                "random": w.random,
                "sessions": w.sessions,
                "targets": per,
            }
        )
    ctx.result["workloads"] = wl_out


def stage_profile(ctx: Ctx) -> None:
    """perf record (cpu-clock, flat) of a rustio target under 4 KiB random reads, QD 32."""
    a = ctx.args
    tgt = next((t for t in ctx.targets if t.name == a.profile_target), None)
    if tgt is None:
        ctx.result["profile"] = {"status": f"skipped: {a.profile_target} not running"}
        return
    if shutil.which("perf") is None:
        ctx.result["profile"] = {"status": "skipped: perf not installed"}
        return
    ctx.progress.step(f"profiling {tgt.name} under randread-4k-qd32 (loadgen)")
    data = os.path.join(ctx.out, f"perf-{tgt.name}.data")
    secs = max(2.0, a.time)
    rec = ctx.procs.start(
        "perf", ["perf", "record", "-e", "cpu-clock", "-F", "2000", "-g", "-p", str(tgt.pid), "-o", data,
                 "--", "sleep", str(secs + 1)],
        os.path.join(ctx.out, "logs", "perf-record.log"),
    )  # fmt: skip
    time.sleep(0.5)
    w = next(w for w in WORKLOADS if w.name == "randread-4k-qd32-lg")
    try:
        m = run_loadgen(ctx, tgt, w, secs, seed=99)
    except BenchError as e:
        m = {"error": str(e)}
    try:
        rec.wait(timeout=secs + 30)
    except subprocess.TimeoutExpired:
        ctx.procs.stop(rec)
    report = os.path.join(ctx.out, f"profile-{tgt.name}.txt")
    with open(report, "w", encoding="utf-8") as f:
        subprocess.run(
            ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol",
             "--percent-limit", "0.5", "-g", "none"],
            stdout=f, stderr=subprocess.DEVNULL, timeout=300, check=False,
        )  # fmt: skip
    top = []
    with open(report, encoding="utf-8", errors="replace") as f:
        for line in f:
            mm = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*?)(\s+-)*\s*$", line)
            if mm:
                top.append({"pct": float(mm.group(1)), "dso": mm.group(2), "symbol": mm.group(3).strip()})
    ctx.result["profile"] = {"status": "ok", "target": tgt.name, "run": m, "report": report, "top": top[:25]}
    ctx.progress.finish_step(f"report in {report}")


def stage_tcmu(ctx: Ctx) -> None:
    """TCMU VM stage: bench/tcmu/run.sh (see bench/README.md, "TCMU stage").

    One VM boot (tests/vm/run.sh) exports the same pre-filled LUN through tcm_loop from
    kernel fileio, rustio runner (user:file, user:qcow) and tcmu-runner (file, qcow) and runs
    the same fio jobs on each; bench/tcmu/report.py's JSON is merged into
    result["stages"]["tcmu"] and its table is printed here.
    """
    run_vm_stage(ctx, "tcmu", 2400, {"RUSTIO_BIN": ctx.rustio})


def stage_lio(ctx: Ctx) -> None:
    """LIO VM stage: bench/lio/run.sh (see bench/README.md, "LIO stage").

    One VM boot (tests/vm/run.sh): inside the guest, LIO's own iSCSI target (RAM rd_mcp and
    fileio LUNs, configured with `rustio restore`) and `rustio serve` (RAM and file LUNs)
    on the guest's 127.0.0.1, the same loadgen workloads against each; bench/lio/report.py's
    JSON is merged into result["stages"]["lio"] and its table is printed here.
    """
    run_vm_stage(ctx, "lio", 1800, {"RUSTIO_BIN": ctx.rustio, "LOADGEN_BIN": ctx.loadgen})


def run_vm_stage(ctx: Ctx, name: str, timeout: int, env_extra: dict) -> None:
    """Runs bench/NAME/run.sh (one VM boot) within `timeout` seconds, merges its NAME.json
    into result["stages"][NAME] and prints its table."""
    script = os.path.join(BENCH, name, "run.sh")
    out = os.path.join(ctx.out, name)
    argv = [script, "--out", out] + (["--quick"] if ctx.args.quick else ["--runs", str(ctx.args.runs)])
    env = dict(os.environ, **env_extra)
    ctx.progress.note(f"{name} stage: bench/{name}/run.sh (one VM boot; several minutes under TCG)")
    with open(os.path.join(ctx.out, "logs", f"{name}.log"), "wb") as log:
        # With --nice the VM (QEMU inherits it) gets the same priority as the loopback stage.
        p = subprocess.Popen(shim(argv), stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True)
        try:
            stdout, _ = p.communicate(timeout=timeout)
        except BaseException as e:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # run.sh's trap stops QEMU
                p.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if isinstance(e, subprocess.TimeoutExpired):
                raise BenchError(f"{name} stage: bench/{name}/run.sh still running after {timeout} s; see {out}") from e
            raise
    stage: dict = {"status": f"bench/{name}/run.sh exit {p.returncode}", "out": out}
    try:
        with open(os.path.join(out, f"{name}.json"), encoding="utf-8") as f:
            stage.update(json.load(f))
        stage["run_sh_exit"] = p.returncode
    except (OSError, ValueError) as e:
        ctx.failures.append(f"{name} stage: no results ({e}); see {out}")
    ctx.result["stages"][name] = stage
    sys.stdout.write("\n" + stdout.decode("utf-8", "replace"))
    ctx.progress.note(f"{name} stage: {stage.get('status')}; {out}/{name}.txt")


# ---------------------------------------------------------------------------- report


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or not b:
        return None
    return a / b


def evaluate(ctx: Ctx) -> None:
    res = ctx.result
    anchor = res["anchor"]
    wl = {w["name"]: w for w in res.get("workloads", [])}
    tcp = res["anchors"].get("iperf3", {}).get("median_mb_per_s")
    goals = []
    rustio_targets = [t["name"] for t in res.get("targets", []) if t["impl"] == "rustio"]

    def med(w: str, t: str, k: str = "iops") -> Optional[float]:
        return ((wl.get(w, {}).get("targets", {}).get(t) or {}).get("median") or {}).get(k)

    for t in rustio_targets:
        for w in ("randread-4k-qd32", "randread-4k-qd32-lg"):
            r = ratio(med(w, t), med(w, anchor))
            goals.append({"goal": f"4 KiB random-read IOPS at QD 32 ≥ 2.0× {anchor} [{w}]", "target": t,
                          "value": r, "unit": "×", "met": None if r is None else r >= 2.0})  # fmt: skip
        for w in ("seqread-128k-qd32", "seqread-128k-qd32-lg"):
            r = ratio(med(w, t, "mb_per_s"), tcp)
            goals.append({"goal": f"128 KiB sequential read ≥ 90% of loopback TCP [{w}]", "target": t,
                          "value": None if r is None else 100 * r, "unit": "%",
                          "met": None if r is None else r >= 0.90})  # fmt: skip
        for w in ("randwrite-4k-qd32", "seqwrite-128k-qd32", "randrw70-4k-qd32"):
            r = ratio(med(w, t), med(w, anchor))
            goals.append({"goal": f"writes ≥ 1.5× {anchor} [{w}]", "target": t, "value": r, "unit": "×",
                          "met": None if r is None else r >= 1.5})  # fmt: skip
        for w in ("lat-randread-4k-qd1", "lat-randwrite-4k-qd1"):
            for k in ("p50_us", "p99_us"):
                r = ratio(med(w, t, k), med(w, anchor, k))
                goals.append({"goal": f"QD 1 latency {k[:3]} ≤ 0.7× {anchor} [{w}]", "target": t, "value": r,
                              "unit": "×", "met": None if r is None else r <= 0.7})  # fmt: skip
        for w in ("randread-4k-16x8", "randrw70-4k-16x8"):
            r = ratio(med(w, t), med(w, anchor))
            goals.append({"goal": f"16 sessions × QD 8 IOPS ≥ 2.0× {anchor} [{w}]", "target": t, "value": r,
                          "unit": "×", "met": None if r is None else r >= 2.0})  # fmt: skip
        beyond = [
            med(w, t, "rss_beyond_store_kib") for w in wl if med(w, t, "rss_beyond_store_kib") is not None
        ]
        mx = max(beyond) / 1024 if beyond else None
        goals.append({"goal": "peak RSS under load beyond the configured store ≤ 64 MiB", "target": t,
                      "value": mx, "unit": "MiB", "met": None if mx is None else mx <= 64})  # fmt: skip
    res["goals"] = goals


def render_latency(res: dict) -> list[str]:
    """The QD 1 latency rows (loadgen, inline driver): p50/p99/p99.9 per target and the
    ratios to the anchor (< 1 = faster than the anchor)."""
    anchor = res["anchor"]
    lines = []
    for w in res.get("workloads", []):
        if w.get("qd") != 1 or w.get("client") != "loadgen":
            continue
        if not lines:
            lines.append(f"QD 1 latency (loadgen, µs; ratio to {anchor}: < 1 = lower latency)")
            lines.append(f"{'workload':<22} {'target':<12} {'IOPS':>8} {'p50':>7} {'p99':>7} {'p99.9':>7} "
                         f"{'p50 ×':>7} {'p99 ×':>7}")  # fmt: skip
        base = (w["targets"].get(anchor) or {}).get("median") or {}
        first = True
        for tname, d in w["targets"].items():
            m = d.get("median") or {}
            if not d.get("ok_runs"):
                continue

            def us(k: str) -> str:
                return "-" if m.get(k) is None else f"{m[k]:.0f}"

            def rel(k: str) -> str:
                r = ratio(m.get(k), base.get(k)) if tname != anchor else None
                return "" if r is None else f"{r:.2f}×"

            lines.append(
                f"{w['name'] if first else '':<22} {tname:<12} {fmt_si(m.get('iops')):>8} {us('p50_us'):>7} "
                f"{us('p99_us'):>7} {us('p999_us'):>7} {rel('p50_us'):>7} {rel('p99_us'):>7}"
            )
            first = False
    return lines


def render_table(ctx: Ctx) -> str:
    res = ctx.result
    anchor = res["anchor"]
    h = res["host"]
    cfg = res["config"]
    lines = []
    lines.append(
        f"rustio bench {res['started']}  ({h['cpus']} CPUs, load avg {h['loadavg_start']} → {h['loadavg_end']}; "
        f"{cfg['runs']} run(s) × {cfg['time']} s per workload, median; LUN {cfg['size'] / MiB:.0f} MiB, 512-byte blocks"
        + (f"; nice {cfg['nice']}" if cfg.get("nice") else "")
        + ")"
    )
    tcp = res["anchors"].get("iperf3", {}).get("median_mb_per_s")
    if tcp:
        lines.append(f"loopback TCP, iperf3 single stream 127.0.0.1: {tcp:.0f} MB/s")
    for t in res.get("targets", []):
        lines.append(
            f"  {t['name']:<12} {t['impl']:<6} {t['store']}, MaxRecvDataSegmentLength "
            f"{t['capacity'].get('negotiated', {}).get('max_xmit', '?')}, idle RSS {t['baseline_rss_kib'] / 1024:.1f} MiB"
        )
    lines.append("")
    hdr = (
        f"{'workload':<22} {'client':<10} {'target':<12} {'IOPS':>8} {'MB/s':>7} {'p99 µs':>7} "
        f"{'tgt CPU':>8} {'cli CPU':>8} {'ctxsw':>6} {'peak RSS':>9} {'vs ' + anchor:>8}"
    )
    lines.append(hdr)
    lines.append(
        f"{'':<22} {'':<10} {'':<12} {'':>8} {'':>7} {'':>7} {'µs/IO':>8} {'µs/IO':>8} {'/IO':>6} {'MiB':>9} {'(IOPS)':>8}"
    )
    lines.append("-" * len(hdr))
    for w in res.get("workloads", []):
        base = ((w["targets"].get(anchor) or {}).get("median") or {}).get("iops")
        first = True
        for tname, d in w["targets"].items():
            m = d.get("median") or {}
            if d.get("ok_runs", 0) == 0:
                row = f"{'ERROR: ' + (d['runs'][0].get('error', '') if d['runs'] else 'no runs'):<60}"
                lines.append(f"{w['name'] if first else '':<22} {w['client'] if first else '':<10} {tname:<12} {row}")
                first = False
                continue
            r = ratio(m.get("iops"), base) if tname != anchor else None
            rss = m.get("peak_rss_kib")
            lines.append(
                f"{w['name'] if first else '':<22} {w['client'] if first else '':<10} {tname:<12} "
                f"{fmt_si(m.get('iops')):>8} {m.get('mb_per_s') or 0:>7.1f} "
                f"{('%d' % m['p99_us']) if m.get('p99_us') is not None else '-':>7} "
                f"{m.get('target_cpu_us_per_io') or 0:>8.1f} {m.get('client_cpu_us_per_io') or 0:>8.1f} "
                f"{('%.2f' % m['target_ctxsw_per_io']) if m.get('target_ctxsw_per_io') is not None else '-':>6} "
                f"{(rss / 1024) if rss else 0:>9.1f} {('%.2f×' % r) if r else '':>8}"
            )
            first = False
    lat = render_latency(res)
    if lat:
        lines.append("")
        lines.extend(lat)
    lines.append("")
    if res.get("goals"):
        lines.append("issue targets (measured, not asserted):")
        for g in res["goals"]:
            v = g["value"]
            vs = "n/a" if v is None else (f"{v:.2f}×" if g["unit"] == "×" else f"{v:.1f} {g['unit']}")
            st = {True: "MET", False: "NOT MET", None: "n/a"}[g["met"]]
            lines.append(f"  {g['target']:<12} {g['goal']:<70} {vs:>10}  {st}")
    if res.get("profile", {}).get("top"):
        lines.append("")
        lines.append(f"profile of {res['profile']['target']} under randread-4k-qd32 (perf cpu-clock, self time):")
        for e in res["profile"]["top"][:15]:
            lines.append(f"  {e['pct']:6.2f}%  {e['dso']:<18} {e['symbol'][:100]}")
    for name, st in res.get("stages", {}).items():
        lines.append(f"stage {name}: {st.get('status')}")
    if ctx.failures:
        lines.append("")
        lines.append(f"{len(ctx.failures)} failure(s):")
        lines.extend(f"  - {f}" for f in ctx.failures)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description="rustio serve vs tgtd on loopback (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="CI smoke: 1 short run per workload, small LUN")
    p.add_argument("--runs", type=int, help="runs per workload (median is reported; default 3)")
    p.add_argument("--time", type=float, help="seconds per run (default 10)")
    p.add_argument("--size", help="LUN size, e.g. 1G, 256M (default 1G)")
    p.add_argument("--iperf-time", type=float, help="seconds per iperf3 run (default = --time)")
    p.add_argument("--targets", default="tgt,rustio-ram,rustio-file",
                   help="comma list from: " + ",".join(TARGETS))  # fmt: skip
    p.add_argument("--workloads", default="", help="comma list of workload names or substrings (default all)")
    p.add_argument("--out", help="output directory (default bench/out/<timestamp>)")
    p.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    p.add_argument("--no-install", action="store_true", help="never apt-get missing tools")
    p.add_argument("--skip-iperf", action="store_true", help="skip the iperf3 anchor")
    p.add_argument("--profile", action="store_true", help="also perf-record a rustio target under 4 KiB random reads")
    p.add_argument("--profile-target", default="rustio-ram", help="target to profile (default rustio-ram)")
    p.add_argument("--tcmu", action="store_true", help="also run the TCMU VM stage (bench/tcmu/run.sh)")
    p.add_argument("--lio", action="store_true",
                   help="also run the LIO VM stage: rustio serve vs the kernel's iSCSI target (bench/lio/run.sh)")
    p.add_argument("--port-range", default="", metavar="LO-HI",
                   help="listen only on 127.0.0.1 ports LO..HI (default: any free port), e.g. 23400-23420")
    p.add_argument("--rustio-bin", help="rustio binary to use instead of building")
    p.add_argument("--loadgen-bin", help="loadgen binary to use instead of building")
    p.add_argument("--rustio-args", default="", help="extra arguments for rustio serve, e.g. '--workers 2'")
    p.add_argument("--tgt-threads", type=int, default=0, help="tgtd -t (default: tgtd's own)")
    p.add_argument("--variant", action="append", default=[], metavar="SUFFIX:ram|file:ARGS",
                   help="add a rustio target rustio-KIND-SUFFIX run with extra serve ARGS, interleaved with "
                        "the others (to measure an option or an optimisation), e.g. 'w1:ram:--workers 1'")  # fmt: skip
    p.add_argument("--nice", type=int, default=0,
                   help="run targets and clients at this nice value (e.g. -10 on a shared machine; root only)")  # fmt: skip
    p.add_argument("--list", action="store_true", help="list workloads and targets and exit")
    a = p.parse_args(argv)
    a.runs = a.runs or (1 if a.quick else 3)
    a.time = a.time or (2.0 if a.quick else 10.0)
    a.iperf_time = a.iperf_time or a.time
    size = (a.size or ("256M" if a.quick else "1G")).strip()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:].upper(), 1)
    try:
        a.size = int(size[:-1] if mult > 1 else size) * mult
    except ValueError:
        p.error(f"bad --size {size!r}")
    if a.size < MiB or a.size % MiB:
        p.error("--size must be a positive multiple of 1 MiB")
    if not 1 <= a.runs <= 50:
        p.error("--runs must be 1..50")
    if not 1 <= a.time <= 600:
        p.error("--time must be 1..600 s")
    if a.port_range:
        m = re.fullmatch(r"(\d+)-(\d+)", a.port_range.strip())
        if not m or not 1024 <= int(m.group(1)) <= int(m.group(2)) <= 65535:
            p.error(f"bad --port-range {a.port_range!r}; expected LO-HI, e.g. 23400-23420")
        PORT_RANGE[:] = range(int(m.group(1)), int(m.group(2)) + 1)
    a.targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in a.targets:
        if t not in TARGETS:
            p.error(f"unknown target {t!r}; choose from {', '.join(TARGETS)}")
    for spec in a.variant:
        try:
            name = parse_variant(spec)[0]
        except ValueError as e:
            p.error(str(e))
        if name in a.targets:
            p.error(f"duplicate target {name}")
        a.targets.append(name)
    return a


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    sel = [s.strip() for s in a.workloads.split(",") if s.strip()]
    names = {w.name for w in WORKLOADS}

    def selected(w: Workload) -> bool:
        # An exact name selects only itself; anything else is a substring.
        return not sel or any(s == w.name if s in names else s in w.name for s in sel)

    workloads = [w for w in WORKLOADS if selected(w)]
    if a.list:
        for w in WORKLOADS:
            print(f"{w.name:<22} {w.client:<10} {w.desc}")
        print("targets:", ", ".join(TARGETS))
        return 0
    if not workloads:
        print(f"bench: no workload matches {a.workloads!r} (try --list)", file=sys.stderr)
        return 2
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.abspath(a.out or os.path.join(BENCH, "out", stamp))
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    procs = Procs(os.environ.get("RUSTIO_BENCH_PIDFILE") or os.path.join(out, "pids"))
    ctx = Ctx(args=a, out=out, procs=procs)
    ctx.workloads = workloads
    ctx.result = {
        "version": 1,
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "kernel": os.uname().release,
            "loadavg_start": loadavg(),
        },
        "config": {"runs": a.runs, "time": a.time, "size": a.size, "quick": a.quick, "targets": a.targets,
                   "rustio_args": a.rustio_args},  # fmt: skip
        "anchor": "tgt",
        "anchors": {},
        "stages": {},
    }

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    rc = 0
    try:
        need_tools(ctx)
        stage_build(ctx)
        if a.nice:
            # After the build: only the targets, clients and iperf3 (children) inherit it.
            try:
                os.setpriority(os.PRIO_PROCESS, 0, a.nice)
            except OSError as e:
                raise BenchError(f"--nice {a.nice}: {e}") from e
            ctx.result["config"]["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
            if os.path.exists("/proc/self/autogroup"):
                PRIO_SHIM[:] = ["sh", "-c", 'echo "$0" >/proc/self/autogroup 2>/dev/null; exec "$@"', str(a.nice)]
                ctx.result["config"]["autogroup_nice"] = a.nice
        total = len(a.targets) + len(workloads) * len(a.targets) * a.runs
        total += 0 if a.skip_iperf else a.runs
        total += 1 if a.profile else 0
        ctx.progress = Progress(total)
        if not a.skip_iperf:
            stage_anchors(ctx)
        stage_loopback(ctx)
        if a.profile:
            stage_profile(ctx)
        if a.tcmu:
            stage_tcmu(ctx)
        if a.lio:
            stage_lio(ctx)
    except BenchError as e:
        ctx.failures.append(str(e))
        print(f"bench: {e}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt as e:
        ctx.failures.append(f"interrupted ({e})")
        print("\nbench: interrupted", file=sys.stderr)
        rc = 130
    finally:
        procs.cleanup()
    ctx.result["host"]["loadavg_end"] = loadavg()
    ctx.result["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    ctx.result["failures"] = ctx.failures
    ctx.result.setdefault("workloads", [])
    ctx.result.setdefault("targets", [])
    evaluate(ctx)
    table = render_table(ctx)
    sys.stdout.write("\n" + table)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(ctx.result, f, indent=1)
    with open(os.path.join(out, "results.txt"), "w", encoding="utf-8") as f:
        f.write(table)
    with open(os.path.join(out, "results.svg"), "w", encoding="utf-8") as f:
        f.write(chart.render(ctx.result))
    latest = os.path.join(BENCH, "out", "latest")
    if out.startswith(os.path.join(BENCH, "out") + os.sep):
        try:
            if os.path.islink(latest):
                os.unlink(latest)
            os.symlink(os.path.basename(out), latest)
        except OSError:
            pass
    print(f"results: {out}/results.{{json,txt,svg}}", file=sys.stderr)
    if rc == 0 and ctx.failures:
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
