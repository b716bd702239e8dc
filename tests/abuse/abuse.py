#!/usr/bin/env python3
"""Adversarial client suite for `rustio serve` (issue 20).

A small raw-socket iSCSI initiator (RFC 7143 PDU layouts) plus one check per finding of
the security review. Every check starts its own `rustio serve --config FILE` on free
127.0.0.1 ports, talks to 127.0.0.1 only, is bounded in count and time, and prints one
line `PASS abuse-<name> (detail)` or `FAIL abuse-<name> (detail)`. Other output lines
start with `#`. Exit status 1 when any check failed.

Usage: abuse.py --bin RUSTIO --work DIR [--only NAME[,NAME...]]
Stdlib only (Python >= 3.9).
"""

import argparse
import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

# --------------------------------------------------------------------------------------
# Bounds stated by this suite (see docs/security.md).

# write-promise-memory: RSS growth allowed while sessions hold 64 MiB WRITE promises.
PROMISE_RSS_BOUND_MIB = 64
# write-promise-memory: the old code is stopped from eating the machine at this growth.
PROMISE_ABORT_MIB = 512
# metrics-bound: RSS growth allowed after the 1 MiB request line.
METRICS_RSS_BOUND_MIB = 16
# memory-bound: peak RSS (VmHWM) of any server process of the suite.
PEAK_RSS_BOUND_MIB = 128
# send-starvation: seconds after a peer stops reading by which --send-timeout 5 must
# have dropped it.
STARVE_CLOSE_BOUND = 10
# Watchdog per check (seconds).
CHECK_LIMIT = 75

LOOP = "127.0.0.1"

# Opcodes (RFC 7143 11.1.1).
OP_NOP_OUT, OP_SCSI_CMD, OP_TMF_REQ, OP_LOGIN_REQ, OP_TEXT_REQ, OP_DATA_OUT, OP_LOGOUT_REQ = (
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06)
OP_NOP_IN, OP_SCSI_RSP, OP_TMF_RSP, OP_LOGIN_RSP, OP_TEXT_RSP, OP_DATA_IN, OP_LOGOUT_RSP = (
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26)
OP_R2T, OP_ASYNC, OP_REJECT = 0x31, 0x32, 0x3f
IMMEDIATE = 0x40

GOOD, CHECK_CONDITION = 0x00, 0x02

results = []  # (name, ok, detail)
servers = []  # every Server started, for the peak-RSS check and cleanup
peak_hwm = {"kib": 0, "where": ""}


def log(msg):
    print("# " + msg, flush=True)


def report(name, ok, detail):
    results.append((name, ok, detail))
    print("%s abuse-%s (%s)" % ("PASS" if ok else "FAIL", name, detail), flush=True)


class CheckTimeout(Exception):
    pass


# --------------------------------------------------------------------------------------
# Server processes


def free_port():
    s = socket.socket()
    s.bind((LOOP, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_status(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def port_accepts(port):
    try:
        with socket.create_connection((LOOP, port), timeout=0.5):
            return True
    except OSError:
        return False


class StartError(Exception):
    pass


class Server:
    """One `rustio serve` process on a free port, with its config and log in WORK."""

    def __init__(self, name, config=None, args=(), port=None):
        self.name = name
        self.port = port or free_port()
        self.cfg_path = os.path.join(WORK, name + ".json")
        self.log_path = os.path.join(WORK, name + ".log")
        with open(self.cfg_path, "w") as f:
            json.dump(config if config is not None else {}, f, indent=1)
        self.args = list(args)
        self.proc = None

    def start(self, wait_port=None, limit=15.0):
        cmd = [BIN, "--log", "info", "serve", "--config", self.cfg_path] + self.args
        self.logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        servers.append(self)
        with open(os.path.join(WORK, "pids"), "a") as f:
            f.write("%d\n" % self.proc.pid)
        deadline = time.monotonic() + limit
        port = wait_port or self.port
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError("server exited %s at start: %s" % (self.proc.returncode,
                                                                    self.log_tail(2)))
            if port_accepts(port):
                return self
            time.sleep(0.1)
        raise StartError("server did not listen on %d within %.0fs" % (port, limit))

    @property
    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        return proc_status(self.pid, "VmRSS") or 0

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return re.sub(r"\x1b\[[0-9;]*m", "", f.read())  # no ANSI colours
        except OSError:
            return ""

    def log_tail(self, n=3):
        lines = [l.strip() for l in self.log_text().splitlines() if l.strip()]
        return " | ".join(lines[-n:])[-400:]

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        hwm = proc_status(self.pid, "VmHWM")
        if hwm and hwm > peak_hwm["kib"]:
            peak_hwm["kib"] = hwm
            peak_hwm["where"] = self.name
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.logf.close()


def help_text():
    try:
        return subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


# --------------------------------------------------------------------------------------
# saveconfig.json builders


def ramdisk(name, size, nullio=False):
    d = {"plugin": "ramdisk", "name": name, "size": size}
    if nullio:
        d["nullio"] = True
    return d


def acl(node, luns=((0, 0),), chap=None, attributes=None):
    a = {"node_wwn": node,
         "mapped_luns": [{"index": m[0], "tpg_lun": m[1],
                          "write_protect": bool(m[2]) if len(m) > 2 else False} for m in luns]}
    if chap is not None:
        user, secret = chap
        if user is not None:
            a["chap_userid"] = user
        if secret is not None:
            a["chap_password"] = secret
    if attributes:
        a["attributes"] = attributes
    return a


def target(iqn, port, luns, acls=(), generate=False, auth=False, params=None):
    attrs = {"authentication": 1 if auth else 0, "generate_node_acls": 1 if generate else 0,
             "demo_mode_write_protect": 0}
    return {"wwn": iqn, "fabric": "iscsi", "tpgs": [{
        "tag": 1, "enable": True, "attributes": attrs,
        "parameters": params or {"MaxRecvDataSegmentLength": "262144",
                                 "MaxBurstLength": "1048576"},
        "luns": [{"index": i, "storage_object": "/backstores/ramdisk/" + so} for i, so in luns],
        "portals": [{"ip_address": LOOP, "port": port}],
        "node_acls": list(acls)}]}


def config(objects, targets):
    return {"storage_objects": objects, "targets": targets}


IQN = "iqn.2026-01.org.rustio.abuse:"

# --------------------------------------------------------------------------------------
# A small iSCSI initiator (RFC 7143)


class IscsiError(Exception):
    pass


class LoginRefused(IscsiError):
    def __init__(self, cls, detail):
        super().__init__("login refused: status class %d detail %d" % (cls, detail))
        self.cls = cls
        self.detail = detail


def pad4(b):
    return b + b"\0" * (-len(b) % 4)


def encode_keys(pairs):
    return b"".join(("%s=%s" % (k, v)).encode() + b"\0" for k, v in pairs)


def decode_keys(data):
    out = []
    for item in data.split(b"\0"):
        if not item:
            continue
        k, _, v = item.decode(errors="replace").partition("=")
        out.append((k, v))
    return out


class Pdu:
    def __init__(self, bhs, data):
        self.bhs = bhs
        self.data = data
        self.op = bhs[0] & 0x3f
        self.flags = bhs[1]

    def u32(self, off):
        return struct.unpack_from(">I", self.bhs, off)[0]

    @property
    def itt(self):
        return self.u32(16)


class Conn:
    """One iSCSI connection (one session, ERL 0, no digests)."""

    def __init__(self, port, rcvbuf=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((LOOP, port))
        self.itt = 0x100
        self.cmdsn = 1
        self.expstatsn = 0
        self.max_cmdsn = 1
        self.isid = b"\x80" + os.urandom(3) + b"\x00\x01"
        self.tsih = 0
        self.target_mrdsl = 8192   # what we may send per PDU
        self.immediate_data = True
        self.initial_r2t = True
        self.first_burst = 65536
        self.max_burst = 262144
        self.done = {}     # itt -> (status, data, sense)
        self.buffers = {}  # itt -> bytearray (Data-In)
        self.writes = {}   # itt -> bytes to send on R2T
        self.login_replies = []  # (flags, data) of every login response PDU

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def next_itt(self):
        self.itt += 1
        return self.itt

    # -- framing ---------------------------------------------------------------------
    def send_pdu(self, bhs, data=b""):
        assert len(bhs) == 48
        self.sock.sendall(bytes(bhs) + pad4(data))

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise IscsiError("connection closed by the target")
            buf += chunk
        return bytes(buf)

    def recv_pdu(self):
        bhs = self.recv_exact(48)
        ahs = bhs[4] * 4
        dlen = int.from_bytes(bhs[5:8], "big")
        rest = self.recv_exact(ahs + dlen + (-dlen % 4))
        pdu = Pdu(bhs, rest[ahs:ahs + dlen])
        statsn = pdu.u32(24)
        advances = pdu.op in (OP_SCSI_RSP, OP_TMF_RSP, OP_LOGIN_RSP, OP_TEXT_RSP,
                              OP_LOGOUT_RSP, OP_REJECT, OP_ASYNC) or \
            (pdu.op == OP_DATA_IN and pdu.flags & 0x01) or \
            (pdu.op == OP_NOP_IN and pdu.itt != 0xffffffff)
        if advances:
            self.expstatsn = (statsn + 1) & 0xffffffff
        # Every target PDU carries MaxCmdSN at offset 32 (RFC 7143 11.x).
        self.max_cmdsn = pdu.u32(32)
        return pdu

    # -- login (RFC 7143 11.12, 11.13) ------------------------------------------------
    def login_pdu(self, csg, nsg, transit, data, cont=False):
        bhs = bytearray(48)
        bhs[0] = OP_LOGIN_REQ | IMMEDIATE
        bhs[1] = (0x80 if transit else 0) | (0x40 if cont else 0) | (csg << 2) | (nsg if transit else 0)
        bhs[2] = bhs[3] = 0
        bhs[5:8] = len(data).to_bytes(3, "big")
        bhs[8:14] = self.isid
        bhs[14:16] = struct.pack(">H", self.tsih)
        struct.pack_into(">I", bhs, 16, self.login_itt)
        struct.pack_into(">HxxII", bhs, 20, 0, self.cmdsn, self.expstatsn)
        self.send_pdu(bhs, data)

    def login_exchange(self, csg, nsg, transit, pairs=None, raw=None):
        """Sends one login request (split into 8192-byte PDUs with the C bit when longer,
        RFC 7143 11.12.2) and collects the reply (following the target's C bit). Returns
        (flags of the last response, [(key, value)], raw reply data)."""
        data = raw if raw is not None else encode_keys(pairs or [])
        chunks = [data[i:i + 8192] for i in range(0, len(data), 8192)] or [b""]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            self.login_pdu(csg, nsg, transit and last, chunk, cont=not last)
            rsp = self.recv_login_rsp()
            if not last and rsp.data:
                raise IscsiError("target answered a partial login request with data")
        reply = bytearray(rsp.data)
        for _ in range(16):
            if not rsp.flags & 0x40:
                break
            # Target continues its text: answer with an empty request (RFC 7143 11.13.3).
            self.login_pdu(csg, nsg, False, b"")
            rsp = self.recv_login_rsp()
            reply += rsp.data
        return rsp.flags, decode_keys(bytes(reply)), bytes(reply)

    def recv_login_rsp(self):
        rsp = self.recv_pdu()
        if rsp.op == OP_REJECT:
            raise IscsiError("Reject PDU during login (reason %#x)" % rsp.bhs[2])
        if rsp.op != OP_LOGIN_RSP:
            raise IscsiError("unexpected opcode %#x during login" % rsp.op)
        self.login_replies.append((rsp.flags, rsp.data))
        cls, detail = rsp.bhs[36], rsp.bhs[37]
        self.tsih = struct.unpack_from(">H", rsp.bhs, 14)[0]
        self.max_cmdsn = rsp.u32(32)
        if cls != 0:
            raise LoginRefused(cls, detail)
        return rsp

    def login(self, initiator, tgt, chap=None, op_keys=None, extra_security=None,
              mrdsl=262144):
        """Logs in to FullFeature. chap = (user, secret) for CHAP MD5 (RFC 7143 12.1.3,
        RFC 1994): CHAP_R = MD5(CHAP_I byte || secret || CHAP_C)."""
        self.login_itt = self.next_itt()
        sec = [("InitiatorName", initiator), ("TargetName", tgt), ("SessionType", "Normal"),
               ("AuthMethod", "CHAP" if chap else "None")] + list(extra_security or [])
        if chap:
            flags, kv, _ = self.login_exchange(0, 1, False, sec)
            flags, kv, _ = self.login_exchange(0, 1, False, [("CHAP_A", "5")])
            d = dict(kv)
            if "CHAP_C" not in d or "CHAP_I" not in d:
                raise IscsiError("no CHAP challenge: %r" % kv)
            ident = int(d["CHAP_I"])
            chal = bytes.fromhex(d["CHAP_C"][2:]) if d["CHAP_C"][:2].lower() == "0x" else b""
            resp = hashlib.md5(bytes([ident]) + chap[1].encode() + chal).hexdigest()
            flags, kv, _ = self.login_exchange(0, 1, True, [("CHAP_N", chap[0]),
                                                           ("CHAP_R", "0x" + resp)])
        else:
            flags, kv, _ = self.login_exchange(0, 1, True, sec)
        if not flags & 0x80:
            raise IscsiError("security stage did not complete: %r" % kv)
        keys = op_keys if op_keys is not None else [
            ("HeaderDigest", "None"), ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", str(mrdsl)), ("MaxBurstLength", "1048576"),
            ("FirstBurstLength", "65536"), ("ImmediateData", "Yes"), ("InitialR2T", "Yes"),
            ("MaxOutstandingR2T", "1"), ("ErrorRecoveryLevel", "0"),
            ("DefaultTime2Wait", "0"), ("DefaultTime2Retain", "0")]
        negotiated = {}
        for _ in range(4):
            flags, kv, _ = self.login_exchange(1, 3, True, keys)
            negotiated.update(dict(kv))
            if flags & 0x80 and flags & 0x03 == 3:
                break
            keys = []
        else:
            raise IscsiError("operational stage never reached FullFeature")
        n = negotiated
        self.target_mrdsl = int(n.get("MaxRecvDataSegmentLength", "8192"))
        self.immediate_data = n.get("ImmediateData", "Yes") == "Yes"
        self.initial_r2t = n.get("InitialR2T", "Yes") == "Yes"
        self.first_burst = int(n.get("FirstBurstLength", "65536"))
        self.max_burst = int(n.get("MaxBurstLength", "262144"))
        return n

    # -- SCSI (RFC 7143 11.2 - 11.8) -------------------------------------------------
    def submit(self, cdb, lun=0, read_len=0, write=None, edtl=None, send_immediate=True):
        """Sends a SCSI Command PDU; returns its ITT. Write data goes as immediate data
        (up to FirstBurstLength / MRDSL) and the rest on R2T."""
        itt = self.next_itt()
        wlen = len(write) if write is not None else 0
        if edtl is None:
            edtl = read_len if read_len else wlen
        imm = b""
        if write is not None and self.immediate_data and send_immediate:
            imm = write[:min(self.first_burst, self.target_mrdsl)]
        bhs = bytearray(48)
        bhs[0] = OP_SCSI_CMD
        bhs[1] = 0x80 | (0x40 if read_len else 0) | (0x20 if (write is not None or
                                                                (edtl and not read_len)) else 0) | 0x01
        bhs[5:8] = len(imm).to_bytes(3, "big")
        bhs[8:16] = struct.pack(">Q", lun_field(lun))
        struct.pack_into(">IIII", bhs, 16, itt, edtl, self.cmdsn, self.expstatsn)
        c = bytes(cdb) + b"\0" * (16 - len(cdb))
        bhs[32:48] = c
        self.cmdsn = (self.cmdsn + 1) & 0xffffffff
        if write is not None:
            self.writes[itt] = write
        self.buffers[itt] = bytearray()
        self.send_pdu(bhs, imm)
        return itt

    def data_out(self, itt, ttt, offset, length, lun=0):
        data = self.writes.get(itt, b"")
        end = min(offset + length, len(data))
        sn = 0
        pos = offset
        while pos < end:
            n = min(self.target_mrdsl, end - pos)
            bhs = bytearray(48)
            bhs[0] = OP_DATA_OUT
            bhs[1] = 0x80 if pos + n >= end else 0
            bhs[5:8] = n.to_bytes(3, "big")
            bhs[8:16] = struct.pack(">Q", lun_field(lun))
            struct.pack_into(">II", bhs, 16, itt, ttt)
            struct.pack_into(">I", bhs, 28, self.expstatsn)
            struct.pack_into(">II", bhs, 36, sn, pos)
            self.send_pdu(bhs, data[pos:pos + n])
            pos += n
            sn += 1

    def pump(self):
        """Receives and handles one PDU."""
        p = self.recv_pdu()
        if p.op == OP_DATA_IN:
            off = p.u32(40)
            buf = self.buffers.setdefault(p.itt, bytearray())
            if len(buf) < off + len(p.data):
                buf.extend(b"\0" * (off + len(p.data) - len(buf)))
            buf[off:off + len(p.data)] = p.data
            if p.flags & 0x01:
                self.done[p.itt] = (p.bhs[3], bytes(buf), b"")
        elif p.op == OP_SCSI_RSP:
            sense = b""
            if len(p.data) >= 2:
                sl = struct.unpack_from(">H", p.data, 0)[0]
                sense = p.data[2:2 + sl]
            self.done[p.itt] = (p.bhs[3], bytes(self.buffers.get(p.itt, b"")), sense)
        elif p.op == OP_R2T:
            self.data_out(p.itt, p.u32(20), p.u32(40), p.u32(44))
        elif p.op == OP_NOP_IN and p.itt == 0xffffffff:
            self.nop_out(ttt=p.u32(20), itt=0xffffffff)
        elif p.op == OP_REJECT:
            raise IscsiError("Reject PDU, reason %#x" % p.bhs[2])
        else:
            self.done[p.itt] = p
        return p

    def wait(self, itt):
        while itt not in self.done:
            self.pump()
        self.writes.pop(itt, None)
        self.buffers.pop(itt, None)
        return self.done.pop(itt)

    def cmd(self, cdb, **kw):
        """Runs one command; retries (up to 3 times) on UNIT ATTENTION, which the first
        command of a new I_T nexus receives (SAM-5 5.14)."""
        for _ in range(3):
            st, data, sense = self.wait(self.submit(cdb, **kw))
            if st != CHECK_CONDITION or sense_key(sense) != 0x06:
                break
        return st, data, sense

    def nop_out(self, ttt=0xffffffff, itt=None):
        itt = self.next_itt() if itt is None else itt
        bhs = bytearray(48)
        bhs[0] = OP_NOP_OUT | IMMEDIATE
        bhs[1] = 0x80
        struct.pack_into(">IIII", bhs, 16, itt, ttt, self.cmdsn, self.expstatsn)
        self.send_pdu(bhs)
        return itt

    def ping(self):
        """NOP-Out with a fresh ITT; True when the target's NOP-In echoes it (RFC 7143
        11.18, 11.19)."""
        p = self.wait(self.nop_out())
        return isinstance(p, Pdu) and p.op == OP_NOP_IN

    def tmf(self, function, lun=0, rtt=0xffffffff):
        """Task Management Function Request (RFC 7143 11.5); returns the response code."""
        itt = self.next_itt()
        bhs = bytearray(48)
        bhs[0] = OP_TMF_REQ | IMMEDIATE
        bhs[1] = 0x80 | function
        bhs[8:16] = struct.pack(">Q", lun_field(lun))
        struct.pack_into(">IIIIII", bhs, 16, itt, rtt, self.cmdsn, self.expstatsn, 0, 0)
        self.send_pdu(bhs)
        p = self.wait(itt)
        if not isinstance(p, Pdu) or p.op != OP_TMF_RSP:
            raise IscsiError("no TMF response")
        return p.bhs[2]

    def logout(self):
        itt = self.next_itt()
        bhs = bytearray(48)
        bhs[0] = OP_LOGOUT_REQ | IMMEDIATE
        bhs[1] = 0x80
        struct.pack_into(">IHxxII", bhs, 16, itt, 0, self.cmdsn, self.expstatsn)
        self.send_pdu(bhs)
        p = self.wait(itt)
        self.close()
        return p.bhs[2]

    # -- SCSI helpers ----------------------------------------------------------------
    def read10(self, lba, blocks, bs=512, lun=0):
        return self.cmd(struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0), lun=lun,
                        read_len=blocks * bs)

    def write10(self, lba, data, bs=512, lun=0):
        return self.cmd(struct.pack(">BBIBHB", 0x2a, 0, lba, 0, len(data) // bs, 0), lun=lun,
                        write=data)

    def naa(self, lun=0):
        """The 16-byte NAA designator of VPD page 83h (SPC-4 7.8.6)."""
        st, data, _ = self.cmd(bytes([0x12, 0x01, 0x83, 0x01, 0x00, 0x00]), lun=lun,
                               read_len=256)
        if st != GOOD:
            raise IscsiError("INQUIRY VPD 83h status %#x" % st)
        pos = 4
        end = min(len(data), 4 + struct.unpack_from(">H", data, 2)[0])
        while pos + 4 <= end:
            code_set, typ, dlen = data[pos] & 0x0f, data[pos + 1] & 0x0f, data[pos + 3]
            assoc = (data[pos + 1] >> 4) & 0x03
            if code_set == 1 and typ == 3 and dlen == 16 and assoc == 0:
                return data[pos + 4:pos + 20]
            pos += 4 + dlen
        raise IscsiError("no 16-byte NAA designator in VPD 83h")


def sense_key(sense):
    """SENSE KEY of fixed (70h/71h) or descriptor (72h/73h) sense data (SPC-4 4.5)."""
    if len(sense) >= 3 and sense[0] & 0x7f in (0x70, 0x71):
        return sense[2] & 0x0f
    if len(sense) >= 2 and sense[0] & 0x7f in (0x72, 0x73):
        return sense[1] & 0x0f
    return None


def lun_field(lun):
    # Peripheral device addressing (SAM-5 4.7.6.2) for LUN < 256.
    return (lun & 0xff) << 48


def with_limit(seconds):
    def handler(signum, frame):
        raise CheckTimeout("check exceeded %ds" % seconds)
    signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)


def closed_by_peer(sock, wait):
    """True when the peer closed or reset `sock` within `wait` seconds (reads and
    discards whatever arrives)."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return False
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except OSError:
            return True


# --------------------------------------------------------------------------------------
# Checks


def xcopy_param_list(naas, segments, bs=512):
    """EXTENDED COPY (LID1) parameter list (SPC-4 6.4.3): identification CSCD
    descriptors (E4h, 6.4.5.6) naming each NAA and block→block segment descriptors
    (02h, 6.4.6.3) = (src index, dst index, blocks, src LBA, dst LBA)."""
    cscd = b""
    for naa in naas:
        d = bytearray(32)
        d[0] = 0xe4
        d[1] = 0x00            # LU ID type 0, peripheral device type 0 (block)
        d[4] = 0x01            # code set: binary
        d[5] = 0x03            # association 0 (LU), designator type 3 (NAA)
        d[7] = 16
        d[8:24] = naa
        d[29:32] = bs.to_bytes(3, "big")
        cscd += bytes(d)
    segs = b""
    for src, dst, blocks, slba, dlba in segments:
        segs += struct.pack(">BBHHHHHQQ", 0x02, 0, 24, src, dst, 0, blocks, slba, dlba)
    hdr = struct.pack(">BBHIII", 0x11, 0x00, len(cscd), 0, len(segs), 0)
    return hdr + cscd + segs


def xcopy(c, naas, segments):
    p = xcopy_param_list(naas, segments)
    cdb = struct.pack(">BB8xIBB", 0x83, 0x00, len(p), 0, 0)
    st, _, sense = c.cmd(cdb, write=p)
    return st, sense


def check_xcopy_cross_lu():
    port = free_port()
    I1, I2, I3 = IQN + "i1", IQN + "i2", IQN + "i3"
    T1, T2 = IQN + "t1", IQN + "t2"
    cfg = config(
        [ramdisk("x1", 16 << 20), ramdisk("x2", 16 << 20), ramdisk("x3", 16 << 20),
         ramdisk("x4", 16 << 20)],
        [target(T1, port, [(0, "x1"), (1, "x3"), (2, "x4")],
                [acl(I1, [(0, 0), (1, 2, True)]), acl(I3, [(0, 1)])]),
         target(T2, port, [(0, "x2")], [acl(I2, [(0, 0)])])])
    srv = Server("xcopy", cfg, port=port).start()
    try:
        p1, p2, p3 = b"\x11" * 512, b"\x22" * 512, b"\x33" * 512
        c2 = Conn(port)
        c2.login(I2, T2)
        naa2 = c2.naa()
        assert c2.write10(0, p2)[0] == GOOD
        c3 = Conn(port)
        c3.login(I3, T1)
        naa3 = c3.naa()
        assert c3.write10(0, p3)[0] == GOOD
        c1 = Conn(port)
        c1.login(I1, T1)
        naa1 = c1.naa()
        assert c1.write10(0, p1)[0] == GOOD
        bad = []

        def restore():
            # Known patterns before every attempt, so each result stands on its own.
            for c, p in ((c1, p1), (c2, p2), (c3, p3)):
                if c.write10(0, p)[0] != GOOD:
                    raise IscsiError("WRITE of the known pattern failed")

        # Into T1 from T2 (another target) and from x3 (T1's LUN 1, unmapped for I1),
        # then from T1 into each of them: CSCD 0 is T1's LU, CSCD 1 the other one.
        for what, other, conn, orig, seg in (
                ("T2->T1", naa2, c1, p1, (1, 0, 1, 0, 0)),
                ("unmapped->T1", naa3, c1, p1, (1, 0, 1, 0, 0)),
                ("T1->T2", naa2, c2, p2, (0, 1, 1, 0, 0)),
                ("T1->unmapped", naa3, c3, p3, (0, 1, 1, 0, 0))):
            restore()
            st, sense = xcopy(c1, [naa1, other], [seg])
            now = conn.read10(0, 1)[1]
            if st == GOOD or now != orig:
                bad.append("%s status %#x, data %s" % (what, st,
                                                      "unchanged" if now == orig else "CHANGED"))
        # Into I1's own LUN 1, mapped write-protected: refused like a WRITE to it would be.
        naa4 = c1.naa(lun=1)
        restore()
        before = c1.read10(0, 1, lun=1)[1]
        st, sense = xcopy(c1, [naa1, naa4], [(0, 1, 1, 0, 0)])
        now = c1.read10(0, 1, lun=1)[1]
        if st == GOOD or now != before:
            bad.append("T1->write-protected LUN status %#x, data %s"
                       % (st, "unchanged" if now == before else "CHANGED"))
        # Within T1's own LU: still allowed.
        restore()
        st, _ = xcopy(c1, [naa1], [(0, 0, 1, 0, 4)])
        within = st == GOOD and c1.read10(4, 1)[1] == p1
        for c in (c1, c2, c3):
            c.close()
        if not within:
            bad.append("copy within T1's LU status %#x (expected GOOD)" % st)
        report("xcopy-cross-lu", not bad,
               "; ".join(bad) if bad else "4 cross-LU copies and 1 into a write-protected "
               "mapping refused with CHECK CONDITION, data unchanged; copy within the LU GOOD")
    finally:
        srv.stop()


def check_write_promise_memory():
    port = free_port()
    T = IQN + "promise"
    cfg = config([ramdisk("p0", 1 << 30, nullio=True)],
                 [target(T, port, [(0, "p0")], generate=True)])
    srv = Server("promise", cfg, port=port).start()
    conns = []
    try:
        time.sleep(0.5)
        base = srv.rss_kib()
        peak = base
        sent = 0
        refused = 0
        aborted = False
        for s in range(4):
            c = Conn(port)
            c.login(IQN + "promiser%d" % s, T)
            conns.append(c)
        for i in range(32):
            for c in conns:
                try:
                    if i % 2:
                        # WRITE(16), 131072 blocks = 64 MiB, no data at all.
                        cdb = struct.pack(">BBQIBB", 0x8a, 0, i * 131072, 131072, 0, 0)
                        c.submit(cdb, edtl=64 << 20)
                    else:
                        # WRITE(10), 65535 blocks, with 4 KiB of immediate data only.
                        cdb = struct.pack(">BBIBHB", 0x2a, 0, i * 131072, 0, 65535, 0)
                        c.submit(cdb, write=b"\xab" * 4096, edtl=65535 * 512)
                    sent += 1
                except OSError:
                    refused += 1
                time.sleep(0.01)  # let RSS catch up, so the old code is stopped in time
                peak = max(peak, srv.rss_kib())
                if peak - base > PROMISE_ABORT_MIB * 1024:
                    aborted = True
                    break
            if aborted:
                break
            time.sleep(0.05)
        time.sleep(2)
        peak = max(peak, srv.rss_kib())
        grown = (peak - base) / 1024
        for c in conns:
            c.close()
        conns = []
        # A fresh session is still answered.
        t0 = time.monotonic()
        f = Conn(port, timeout=10)
        f.login(IQN + "fresh", T)
        st, data, _ = f.read10(0, 8)
        dt = time.monotonic() - t0
        f.close()
        ok = (not aborted) and grown < PROMISE_RSS_BOUND_MIB and st == GOOD and len(data) == 4096
        report("write-promise-memory", ok,
               "%d promises of 32/64 MiB on 4 sessions (%d send errors)%s: RSS %d MiB -> peak "
               "%d MiB (+%.0f MiB, bound +%d MiB); fresh 4 KiB READ status %#x in %.1fs"
               % (sent, refused, ", stopped at +%d MiB" % PROMISE_ABORT_MIB if aborted else "",
                  base // 1024, peak // 1024, grown, PROMISE_RSS_BOUND_MIB, st, dt))
    finally:
        for c in conns:
            c.close()
        srv.stop()


def check_send_starvation():
    port = free_port()
    T = IQN + "starve"
    cfg = config([ramdisk("s0", 1 << 30, nullio=True)],
                 [target(T, port, [(0, "s0")], generate=True)])
    srv = Server("starve", cfg, args=["--send-timeout", "5"], port=port).start()
    s1 = s2 = None
    try:
        s1 = Conn(port, rcvbuf=4096)
        s1.login(IQN + "sleeper", T)
        for i in range(16):
            s1.submit(struct.pack(">BBIBHB", 0x28, 0, i * 2048, 0, 2048, 0), read_len=1 << 20)
        stall = time.monotonic()
        watch = {"closed": None, "stop": False}
        lport = s1.sock.getsockname()[1]

        def watcher():
            while not watch["stop"] and time.monotonic() - stall < 60:
                # Either end leaving ESTABLISHED: the server's end goes to FIN-WAIT-1 as
                # soon as it closes (its FIN waits behind the unread data).
                ends = (tcp_state(lport, port), tcp_state(port, lport))
                if any(st != "01" for st in ends):
                    watch["closed"] = time.monotonic() - stall
                    return
                time.sleep(0.1)

        threading.Thread(target=watcher, daemon=True).start()
        time.sleep(1)
        s2 = Conn(port, timeout=15)
        s2.login(IQN + "victim", T)
        times = []
        err = ""
        for i in range(10):
            t0 = time.monotonic()
            try:
                st, data, _ = s2.read10(i * 2048, 2048)
            except (OSError, IscsiError) as e:
                err = "READ %d: %s" % (i + 1, e)
                break
            times.append(time.monotonic() - t0)
            if st != GOOD or len(data) != 1 << 20:
                err = "READ %d status %#x, %d bytes" % (i + 1, st, len(data))
                break
        # S1 must be dropped by the server once its sends stall for --send-timeout.
        # Watched in the kernel's socket table (never by reading S1, which would let the
        # server make progress): the server's end leaves ESTABLISHED when it closes.
        while time.monotonic() - stall < STARVE_CLOSE_BOUND + 1 and watch["closed"] is None:
            time.sleep(0.2)
        closed = watch["closed"]
        watch["stop"] = True
        worst = max(times) if times else float("inf")
        ok = not err and len(times) == 10 and worst <= 5.0 and closed is not None and \
            closed <= STARVE_CLOSE_BOUND
        report("send-starvation", ok,
               "%s10 x 1 MiB READ of another session: slowest %.2fs (bound 5s); stalled "
               "reader %s (--send-timeout 5, bound %ds)"
               % (err + "; " if err else "", worst,
                  "disconnected after %.1fs" % closed if closed is not None else
                  "NOT disconnected after %ds" % (STARVE_CLOSE_BOUND + 1), STARVE_CLOSE_BOUND))
    finally:
        for c in (s1, s2):
            if c:
                c.close()
        srv.stop()


def tcp_state(local_port, remote_port):
    """The state (hex, 01 = ESTABLISHED) of the 127.0.0.1 TCP socket with these ports,
    from /proc/net/tcp; None when absent."""
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if int(parts[1].split(":")[1], 16) == local_port and \
                        int(parts[2].split(":")[1], 16) == remote_port:
                    return parts[3]
    except OSError:
        pass
    return None


def login_bytes(initiator, tgt):
    bhs = bytearray(48)
    data = encode_keys([("InitiatorName", initiator), ("TargetName", tgt),
                        ("SessionType", "Normal"), ("AuthMethod", "None")])
    bhs[0] = OP_LOGIN_REQ | IMMEDIATE
    bhs[1] = 0x80 | 0x01
    bhs[5:8] = len(data).to_bytes(3, "big")
    bhs[8:14] = b"\x80\x00\x00\x01\x00\x01"
    struct.pack_into(">I", bhs, 16, 1)
    struct.pack_into(">I", bhs, 24, 1)
    return bytes(bhs) + pad4(data)


def check_login_drip():
    port = free_port()
    T = IQN + "drip"
    cfg = config([ramdisk("d0", 1 << 20)], [target(T, port, [(0, "d0")], generate=True)])
    srv = Server("drip", cfg, args=["--login-timeout", "3"], port=port).start()
    try:
        s = socket.create_connection((LOOP, port), timeout=5)
        msg = login_bytes(IQN + "dripper", T)
        t0 = time.monotonic()
        closed_at = None
        for i in range(15):
            try:
                s.send(msg[i:i + 1])
            except OSError:
                closed_at = time.monotonic() - t0
                break
            if closed_by_peer(s, 1.0):
                closed_at = time.monotonic() - t0
                break
        s.close()
        ok = closed_at is not None and closed_at <= 3 + 3
        report("login-drip", ok,
               "1 byte/s login with --login-timeout 3: %s" %
               ("disconnected after %.1fs (bound 6s)" % closed_at if closed_at is not None
                else "still connected after 15s"))
    finally:
        srv.stop()


def check_conn_cap():
    port = free_port()
    T = IQN + "cap"
    cfg = config([ramdisk("c0", 1 << 20)], [target(T, port, [(0, "c0")], generate=True)])
    h = help_text()
    if "--max-connections-per-source" not in h and "--max-pending-logins" in h:
        args, flag = ["--max-pending-logins", "4"], "--max-pending-logins 4"
    else:
        args, flag = ["--max-connections-per-source", "4"], "--max-connections-per-source 4"
    srv = Server("cap", cfg, args=args, port=port).start()
    socks = []
    try:
        time.sleep(0.5)  # start_server's probe connection is gone
        for _ in range(6):
            socks.append(socket.create_connection((LOOP, port), timeout=5))
            time.sleep(0.2)
        closed = [closed_by_peer(s, 2.0 if i >= 4 else 0.3) for i, s in enumerate(socks)]
        for s in socks:
            s.close()
        socks = []
        time.sleep(0.5)
        try:
            c = Conn(port)
            c.login(IQN + "after-cap", T)
            st = c.read10(0, 1)[0]
            c.close()
            login_ok = st == GOOD
        except (OSError, IscsiError) as e:
            login_ok = False
            log("conn-cap login after: %s" % e)
        lines = [l for l in srv.log_text().splitlines()
                 if re.search(r"connection", l, re.I) and
                 re.search(r"limit|max|cap|too many|refus", l, re.I)]
        ok = closed[:4] == [False] * 4 and closed[4:] == [True, True] and login_ok and lines
        report("conn-cap", ok,
               "%s: idle connections closed by the server %s (expected 1-4 open, 5-6 closed); "
               "login after closing them %s; log line: %s"
               % (flag, "".join("x" if c else "o" for c in closed),
                  "works" if login_ok else "FAILED",
                  lines[0][lines[0].lower().find("connection"):][:160] if lines
                  else "none names the limit"))
    finally:
        for s in socks:
            s.close()
        srv.stop()


def check_chap_empty_secret():
    bad = []
    for variant, chap in (("empty", ("user1", "")), ("missing", ("user1", None))):
        port = free_port()
        node = IQN + "empty-secret-" + variant
        cfg = config([ramdisk("e0", 1 << 20)],
                     [target(IQN + "chap-empty", port, [(0, "e0")], [acl(node, chap=chap)],
                             auth=True)])
        srv = Server("chap-" + variant, cfg, port=port)
        try:
            srv.start(limit=5)
            bad.append("%s password: server started" % variant)
            # An empty secret must not authenticate either.
            try:
                c = Conn(port)
                c.login(node, IQN + "chap-empty", chap=("user1", ""))
                bad.append("%s password: login with an empty secret accepted" % variant)
                c.close()
            except (OSError, IscsiError):
                pass
        except StartError:
            text = srv.log_text()
            if srv.proc.returncode in (None, 0):
                bad.append("%s password: exit status %s" % (variant, srv.proc.returncode))
            elif node not in text:
                bad.append("%s password: refused but message does not name the ACL: %s"
                           % (variant, srv.log_tail(1)))
        finally:
            srv.stop()
    report("chap-empty-secret", not bad,
           "; ".join(bad) if bad else "ACL with chap_userid and empty or missing chap_password:"
           " serve refuses to start, naming the ACL")


def check_chap_bruteforce():
    port = free_port()
    T, I = IQN + "chap", IQN + "guesser"
    user, secret = "abuse-user", "right-secret-1234"
    cfg = config([ramdisk("b0", 1 << 20)],
                 [target(T, port, [(0, "b0")], [acl(I, chap=(user, secret))], auth=True)])
    srv = Server("chap-brute", cfg, port=port).start()
    try:
        accepted = 0
        early = 0  # refused before any challenge (back-off refusal)
        times = []
        t_all = time.monotonic()
        for i in range(50):
            if time.monotonic() - t_all > 25:
                break
            t0 = time.monotonic()
            c = Conn(port, timeout=15)
            try:
                c.login(I, T, chap=(user, "wrong-secret-%04d" % i))
                accepted += 1
            except LoginRefused:
                if not any(b"CHAP_C=" in d for _, d in c.login_replies):
                    early += 1
            except (OSError, IscsiError):
                early += 1
            finally:
                c.close()
            times.append(time.monotonic() - t0)
        n = len(times)
        total = time.monotonic() - t_all
        first = sum(times[:10]) / max(1, len(times[:10]))
        last = sum(times[-10:]) / max(1, len(times[-10:]))
        text = srv.log_text()
        named = [l for l in text.splitlines() if I in l and user in l]

        def right_login():
            c = Conn(port, timeout=15)
            try:
                c.login(I, T, chap=(user, secret))
                return c.read10(0, 1)[0] == GOOD
            except (OSError, IscsiError):
                return False
            finally:
                c.close()

        # Right after the guesses the right secret is refused too while backing off;
        # once the back-off window has passed it works (retry up to 30 s).
        t_right = time.monotonic()
        right_at_once = right_login()
        right_ok = right_at_once
        while not right_ok and time.monotonic() - t_right < 30:
            time.sleep(1)
            right_ok = right_login()
        t_ok = time.monotonic() - t_right
        backoff = early > 0 or last >= max(0.2, 4 * first) or n < 50 or not right_at_once
        ok = accepted == 0 and backoff and named and right_ok
        report("chap-bruteforce", ok,
               "%d wrong-secret logins in %.1fs, %d accepted, %d refused before a challenge; "
               "mean time first 10 %.3fs, last 10 %.3fs; right secret %s right after them "
               "(%s); log %s; right secret %s after %.1fs"
               % (n, total, accepted, early, first, last,
                  "accepted" if right_at_once else "refused",
                  "back-off seen" if backoff else "NO back-off",
                  "names initiator and user" if named else "does NOT name initiator and user",
                  "accepted" if right_ok else "NOT accepted", t_ok))
    finally:
        srv.stop()


def check_target_reset():
    port = free_port()
    T = IQN + "reset"
    I1, I2, I3 = IQN + "bystander", IQN + "resetter", IQN + "allowed-resetter"
    cfg = config([ramdisk("r0", 1 << 20)],
                 [target(T, port, [(0, "r0")],
                         [acl(I1), acl(I2), acl(I3, attributes={"tmr_warm_reset": 1})])])
    srv = Server("reset", cfg, port=port).start()
    try:
        c1 = Conn(port, timeout=10)
        c1.login(I1, T)
        assert c1.read10(0, 1)[0] == GOOD
        c2 = Conn(port, timeout=10)
        c2.login(I2, T)
        bad = []
        codes = {}
        for fn, name in ((6, "WARM"), (7, "COLD")):
            try:
                codes[name] = c2.tmf(fn)
            except (OSError, IscsiError) as e:
                codes[name] = "error: %s" % e
            if codes[name] != 6:
                bad.append("TARGET %s RESET from I2 answered %s (expected 6)" % (name, codes[name]))
        try:
            st = c1.read10(0, 1)[0]
            if st != GOOD:
                bad.append("I1 READ after the resets status %#x" % st)
            if not c1.ping():
                bad.append("I1 NOP-Out after the resets not answered")
        except (OSError, IscsiError) as e:
            bad.append("I1 session broken by I2's reset: %s" % e)
        try:
            if c2.logout() != 0:
                bad.append("I2's Logout not answered 0")
        except (OSError, IscsiError) as e:
            bad.append("I2's Logout: %s" % e)
        logged = [l for l in srv.log_text().splitlines() if I2 in l and re.search("reset", l, re.I)]
        if not logged:
            bad.append("no log line names I2 and the reset")
        c3 = Conn(port, timeout=10)
        c3.login(I3, T)
        try:
            warm = c3.tmf(6)
        except (OSError, IscsiError) as e:
            warm = "error: %s" % e
        if warm != 0:
            bad.append("TARGET WARM RESET with tmr_warm_reset=1 answered %s (expected 0)" % warm)
        for c in (c1, c2, c3):
            c.close()
        report("target-reset", not bad,
               "; ".join(bad) if bad else "warm/cold reset from an ACL without permission "
               "answered 6 and logged, other session unaffected; tmr_warm_reset=1 honoured (0)")
    finally:
        srv.stop()


def check_login_text():
    port = free_port()
    T = IQN + "text"
    cfg = config([ramdisk("l0", 1 << 20)], [target(T, port, [(0, "l0")], generate=True)])
    srv = Server("text", cfg, port=port).start()
    bad = []
    notes = []

    def attempt(what, fn):
        c = Conn(port, timeout=10)
        t0 = time.monotonic()
        outcome = "accepted"
        try:
            fn(c)
        except LoginRefused as e:
            outcome = "refused %d/%d" % (e.cls, e.detail)
        except (OSError, IscsiError) as e:
            outcome = "error: %s" % e
        dt = time.monotonic() - t0
        c.close()
        biggest = max([len(d) for _, d in c.login_replies] or [0])
        if biggest > 8192:
            bad.append("%s: reply data segment of %d bytes (> 8192)" % (what, biggest))
        if outcome.startswith("error") or dt > 5:
            bad.append("%s: %s after %.1fs" % (what, outcome, dt))
        notes.append("%s %s" % (what, outcome))
        return c

    junk = [("X-org.rustio.abuse.junk-key-number-%03d-padding-padding" % i, "v")
            for i in range(200)]
    attempt("200 junk keys", lambda c: c.login(IQN + "junk", T, extra_security=junk))
    dup = [("MaxBurstLength", "262144")] * 200
    attempt("200 duplicate keys", lambda c: c.login(IQN + "dup", T, op_keys=dup))
    for v in ("1", "99999999"):
        keys = [("HeaderDigest", "None"), ("DataDigest", "None"),
                ("MaxRecvDataSegmentLength", v)]
        c = attempt("MRDSL=" + v, lambda c: c.login(IQN + "mrdsl", T, op_keys=keys))
        # A key at most once per response PDU (RFC 7143 6.2); the target's own
        # declaration may follow in a later response.
        per_pdu = [d.count(b"MaxRecvDataSegmentLength=") for _, d in c.login_replies]
        if max(per_pdu or [0]) > 1:
            bad.append("MRDSL=%s: the key %d times in one response" % (v, max(per_pdu)))
        notes[-1] += " (key per response: %s)" % ",".join(map(str, per_pdu))
    if not srv.alive():
        bad.append("server died")
    report("login-text", not bad, "; ".join(bad) if bad else ", ".join(notes))
    srv.stop()


def listen_addrs(port):
    """Local addresses LISTENing on `port`, from /proc/net/tcp{,6}."""
    out = []
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    addr, p = parts[1].split(":")
                    if int(p, 16) == port and parts[3] == "0A":
                        if v6:
                            out.append("[%s]" % addr)
                        else:
                            out.append(socket.inet_ntoa(struct.pack("<I", int(addr, 16))))
        except OSError:
            pass
    return out


def http_get(port, timeout=5):
    with socket.create_connection((LOOP, port), timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > (4 << 20):
                break
    return buf


def check_metrics_bound():
    port = free_port()
    mport = free_port()
    T = IQN + "metrics"
    cfg = config([ramdisk("m0", 1 << 20)], [target(T, port, [(0, "m0")], generate=True)])
    srv = Server("metrics", cfg, args=["--metrics", str(mport)], port=port).start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not port_accepts(mport):
            time.sleep(0.1)
        bad = []
        addrs = listen_addrs(mport)
        if addrs != ["127.0.0.1"]:
            bad.append("--metrics %d listens on %s (expected 127.0.0.1 only)" % (mport, addrs))
        r = http_get(mport)
        if not r.startswith(b"HTTP/1.") or b" 200 " not in r.split(b"\r\n")[0]:
            bad.append("GET /metrics before: %r" % r[:40])
        time.sleep(0.3)
        base = srv.rss_kib()
        # 1 MiB request line without a newline.
        s = socket.create_connection((LOOP, mport), timeout=5)
        t0 = time.monotonic()
        answer, sent = b"", 0
        line = b"GET /" + b"A" * (1 << 20)
        try:
            while sent < len(line) and time.monotonic() - t0 < 5:
                sent += s.send(line[sent:sent + 65536])
        except OSError:
            pass
        try:
            s.settimeout(max(0.5, 5 - (time.monotonic() - t0)))
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
        dt = time.monotonic() - t0
        s.close()
        status = answer.split(b"\r\n")[0][:40]
        ended = dt <= 6 and (not answer or re.match(rb"HTTP/1\.[01] 4\d\d", answer))
        if not ended:
            bad.append("1 MiB request line: %r after %.1fs (%d bytes taken)" % (status, dt, sent))
        try:
            r = http_get(mport)
            if b" 200 " not in r.split(b"\r\n")[0]:
                bad.append("GET /metrics after: %r" % r[:40])
        except OSError as e:
            bad.append("GET /metrics after: %s" % e)
        grown = (srv.rss_kib() - base) / 1024
        if grown > METRICS_RSS_BOUND_MIB:
            bad.append("RSS grew %.1f MiB" % grown)
        report("metrics-bound", not bad,
               "; ".join(bad) if bad else "--metrics %d listens on 127.0.0.1 only; 1 MiB request "
               "line ended after %.1fs (%s, %d bytes taken); /metrics still answers; RSS +%.1f MiB "
               "(bound %d)" % (mport, dt, status.decode(errors="replace") or "closed", sent,
                               grown, METRICS_RSS_BOUND_MIB))
    finally:
        srv.stop()


CHECKS = [
    ("xcopy-cross-lu", check_xcopy_cross_lu),
    ("write-promise-memory", check_write_promise_memory),
    ("send-starvation", check_send_starvation),
    ("login-drip", check_login_drip),
    ("conn-cap", check_conn_cap),
    ("chap-empty-secret", check_chap_empty_secret),
    ("chap-bruteforce", check_chap_bruteforce),
    ("target-reset", check_target_reset),
    ("login-text", check_login_text),
    ("metrics-bound", check_metrics_bound),
]


def main():
    global BIN, WORK
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    BIN, WORK = a.bin, a.work
    only = set(filter(None, a.only.split(",")))
    t_suite = time.monotonic()
    for name, fn in CHECKS:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            with_limit(CHECK_LIMIT)
            fn()
        except StartError as e:
            report(name, False, str(e))
        except Exception as e:  # every failure of a check is a FAIL line, never a crash
            report(name, False, "%s: %s" % (type(e).__name__, e))
        finally:
            signal.alarm(0)
            for s in servers:
                s.stop()
        log("%s took %.1fs" % (name, time.monotonic() - t0))
    if not only or "memory-bound" in only:
        mib = peak_hwm["kib"] / 1024
        report("memory-bound", 0 < mib < PEAK_RSS_BOUND_MIB,
               "peak RSS (VmHWM) of the servers %.0f MiB (%s), bound %d MiB"
               % (mib, peak_hwm["where"] or "none measured", PEAK_RSS_BOUND_MIB))
    failed = [n for n, ok, _ in results if not ok]
    log("%d passed, %d failed in %.0fs" % (len(results) - len(failed), len(failed),
                                          time.monotonic() - t_suite))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
