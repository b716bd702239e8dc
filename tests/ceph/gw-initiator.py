#!/usr/bin/env python3
"""Minimal iSCSI initiator for tests/ceph/gateways.sh (RFC 7143; no auth, no digests,
ErrorRecoveryLevel 0, one connection, immediate data only). Loopback only.

usage: gwc.py HOST:PORT TARGET INITIATOR CMD [args]
  inq PAGE|std             VPD page (or standard INQUIRY data) as hex
  rtpg                     "group:state" per descriptor (SPC-4 6.37)
  write LBA BYTE [SECS]    4 KiB of BYTE at LBA (512-byte blocks); retries unit
                           attentions, and BUSY / NOT READY for SECS (default 0),
                           printing each sense
  read LBA                 hex of the first byte and whether all 4 KiB are equal
  tur                      TEST UNIT READY (unit attentions retried and printed)
  prout SA TYPE KEY SARK [APTPL]
                           PERSISTENT RESERVE OUT (SPC-4 6.16): service action SA
                           (register, reserve, release, clear, preempt, register-ignore
                           or a number), TYPE (0..8, SPC-4 6.16.3 Table 170), KEY and
                           SARK (hex); APTPL=1 sets the APTPL bit
  prin keys|resv           PERSISTENT RESERVE IN (SPC-4 6.15): READ KEYS prints
                           "keys K1 K2 ..." (hex), READ RESERVATION "resv KEY TYPE" or
                           "resv none"
  poll SECS EXPECT CMD [args]
                           repeats CMD in this one session until its result line is
                           EXPECT ("ua AA/QQ" waits for that unit attention), at most
                           SECS; prints "after N ms at EPOCH_MS" and the line
  writer ALT START BLOCKS SECS [KEY=VALUE ...]
                           failover under load (issue #22): numbered, checksummed 4 KiB
                           blocks written sequentially over BLOCKS blocks from LBA START,
                           wrapping, through HOST:PORT; when that connection dies (EOF,
                           reset, timeout) it logs in through ALT (HOST:PORT) and re-issues
                           every unacknowledged write. Then the region is read back through
                           ALT and verified. See writer_main for the keys and the output.
Exit 0 on GOOD, 1 on a final CHECK CONDITION/other status, 2 on protocol errors."""
import collections, random, socket, struct, sys, time, zlib

def pad4(b): return b + b"\0" * (-len(b) % 4)

class Conn:
    def __init__(self, addr, target, initiator, timeout=60):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=timeout)
        self.itt, self.cmdsn, self.expstatsn = 1, 1, 0
        self.maxcmdsn = 1
        self.params = {}  # the target's login keys (RFC 7143 13)
        self.outstanding = {}  # ITT -> data-out buffer (for R2T) of send_cmd commands
        self.datain = {}  # ITT -> Data-In received so far
        self.login(target, initiator)

    def recv_exact(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c: raise EOFError("connection closed")
            b += c
        return b

    def recv_pdu(self):
        bhs = self.recv_exact(48)
        ahs = bhs[4] * 4
        dlen = int.from_bytes(bhs[5:8], "big")
        rest = self.recv_exact(ahs + dlen + (-dlen % 4))
        return bhs, rest[ahs:ahs + dlen]

    def login(self, target, initiator):
        keys = ["InitiatorName=" + initiator, "TargetName=" + target, "SessionType=Normal",
                "HeaderDigest=None", "DataDigest=None", "ImmediateData=Yes", "InitialR2T=No",
                "MaxRecvDataSegmentLength=262144", "FirstBurstLength=65536",
                "MaxBurstLength=262144", "ErrorRecoveryLevel=0", "MaxConnections=1"]
        data = "\0".join(keys).encode() + b"\0"
        isid = bytes([0x80, 0, 0, 0x23, 0x45, 0x67])
        tsih = 0
        for _ in range(6):
            bhs = bytearray(48)
            bhs[0] = 0x43
            bhs[1] = 0x80 | (1 << 2) | 3  # T, CSG operational, NSG full feature
            bhs[5:8] = len(data).to_bytes(3, "big")
            bhs[8:14] = isid
            bhs[14:16] = tsih.to_bytes(2, "big")
            bhs[16:20] = (0).to_bytes(4, "big")
            bhs[24:28] = self.cmdsn.to_bytes(4, "big")
            bhs[28:32] = self.expstatsn.to_bytes(4, "big")
            self.s.sendall(bytes(bhs) + pad4(data))
            r, d = self.recv_pdu()
            if r[0] & 0x3f != 0x23: raise RuntimeError("not a login response")
            if r[36] != 0: raise RuntimeError("login refused %02x%02x" % (r[36], r[37]))
            self.expstatsn = int.from_bytes(r[24:28], "big") + 1
            self.maxcmdsn = int.from_bytes(r[32:36], "big")
            for kv in d.split(b"\0"):
                k, _, v = kv.decode("ascii", "replace").partition("=")
                if k: self.params[k] = v
            tsih = int.from_bytes(r[14:16], "big")
            if r[1] & 0x80 and r[1] & 3 == 3:
                return
            data = b""
        raise RuntimeError("login did not reach full feature phase")

    def command(self, cdb, read_len=0, out=b""):
        itt = self.itt; self.itt += 1
        bhs = bytearray(48)
        bhs[0] = 0x01
        bhs[1] = 0x80 | (0x40 if read_len else 0) | (0x20 if out else 0) | 1
        bhs[5:8] = len(out).to_bytes(3, "big")
        bhs[16:20] = itt.to_bytes(4, "big")
        bhs[20:24] = (read_len or len(out)).to_bytes(4, "big")
        bhs[24:28] = self.cmdsn.to_bytes(4, "big"); self.cmdsn += 1
        bhs[28:32] = self.expstatsn.to_bytes(4, "big")
        bhs[32:32 + len(cdb)] = cdb
        self.s.sendall(bytes(bhs) + pad4(out))
        data = b""
        while True:
            r, d = self.recv_pdu()
            op = r[0] & 0x3f
            if op == 0x20:  # NOP-In: answer pings that want an answer
                ttt = r[20:24]
                if ttt != b"\xff\xff\xff\xff":
                    n = bytearray(48); n[0] = 0x40; n[1] = 0x80
                    n[8:16] = r[8:16]; n[16:20] = b"\xff\xff\xff\xff"; n[20:24] = ttt
                    n[24:28] = self.cmdsn.to_bytes(4, "big"); n[28:32] = self.expstatsn.to_bytes(4, "big")
                    self.s.sendall(bytes(n))
                continue
            if op == 0x25:  # Data-In
                data += d
                if r[1] & 0x01:
                    self.expstatsn = int.from_bytes(r[24:28], "big") + 1
                    return r[3], data, None
                continue
            if op == 0x21:  # SCSI Response
                self.expstatsn = int.from_bytes(r[24:28], "big") + 1
                sense = None
                if r[3] == 0x02 and len(d) >= 2:
                    sl = int.from_bytes(d[:2], "big")
                    sd = d[2:2 + sl]
                    if len(sd) >= 14:
                        sense = (sd[2] & 0x0f, sd[12], sd[13])
                return r[3], data, sense
            if op == 0x32:
                continue
            if op == 0x31:
                raise RuntimeError("unexpected R2T (immediate data refused?)")

    # --- pipelined commands (the writer): several in flight, matched by ITT ---
    def negotiated(self):
        """(ImmediateData, InitialR2T, FirstBurstLength, the target's
        MaxRecvDataSegmentLength) as negotiated (RFC 7143 13.11, 13.10, 13.14, 13.12);
        a key the target did not answer takes the value that sends the least unsolicited
        data, and an undeclared MaxRecvDataSegmentLength is 8192."""
        p = self.params
        imm = p.get("ImmediateData", "No") == "Yes"
        r2t = p.get("InitialR2T", "Yes") != "No"
        fbl = min(int(p.get("FirstBurstLength", "65536")), 65536)
        mrdsl = int(p.get("MaxRecvDataSegmentLength", "8192"))
        return imm, r2t, fbl, mrdsl

    def window_open(self):
        """CmdSN within the target's window: CmdSN <= MaxCmdSN in serial arithmetic
        (RFC 7143 4.2.2.1, RFC 1982)."""
        return (self.maxcmdsn - self.cmdsn) % (1 << 32) < (1 << 31)

    def data_out(self, itt, ttt, offset, data, mrdsl):
        """Data-Out PDUs (RFC 7143 11.7) for DATA at buffer OFFSET, each at most the
        target's MaxRecvDataSegmentLength, DataSN from 0, F on the last."""
        sn, i = 0, 0
        while i < len(data):
            chunk = data[i:i + mrdsl]
            b = bytearray(48)
            b[0] = 0x05
            b[1] = 0x80 if i + len(chunk) >= len(data) else 0
            b[5:8] = len(chunk).to_bytes(3, "big")
            b[16:20] = itt.to_bytes(4, "big")
            b[20:24] = ttt
            b[28:32] = self.expstatsn.to_bytes(4, "big")
            b[36:40] = sn.to_bytes(4, "big")
            b[40:44] = (offset + i).to_bytes(4, "big")
            self.s.sendall(bytes(b) + pad4(chunk))
            sn += 1; i += len(chunk)

    def send_cmd(self, cdb, out=b"", read_len=0):
        """Sends a SCSI Command (immediate data and unsolicited Data-Out as negotiated,
        RFC 7143 13.10, 13.11, 13.14) without waiting; returns its ITT for recv_response."""
        itt = self.itt; self.itt = self.itt % 0xfffffffe + 1
        imm_ok, initial_r2t, fbl, mrdsl = self.negotiated()
        imm = out[:min(fbl, mrdsl)] if imm_ok else b""
        unsol = out[len(imm):fbl] if not initial_r2t else b""
        bhs = bytearray(48)
        bhs[0] = 0x01
        bhs[1] = (0 if unsol else 0x80) | (0x40 if read_len else 0) | (0x20 if out else 0) | 1
        bhs[5:8] = len(imm).to_bytes(3, "big")
        bhs[16:20] = itt.to_bytes(4, "big")
        bhs[20:24] = (read_len or len(out)).to_bytes(4, "big")
        bhs[24:28] = self.cmdsn.to_bytes(4, "big"); self.cmdsn = (self.cmdsn + 1) % (1 << 32)
        bhs[28:32] = self.expstatsn.to_bytes(4, "big")
        bhs[32:32 + len(cdb)] = cdb
        self.outstanding[itt] = out
        self.s.sendall(bytes(bhs) + pad4(imm))
        if unsol:
            self.data_out(itt, b"\xff\xff\xff\xff", len(imm), unsol, mrdsl)
        return itt

    def recv_response(self):
        """The next completed send_cmd command: (ITT, status, Data-In, sense). Answers
        NOP-In pings and R2Ts on the way."""
        while True:
            r, d = self.recv_pdu()
            op = r[0] & 0x3f
            itt = int.from_bytes(r[16:20], "big")
            if op in (0x20, 0x21, 0x25, 0x31, 0x32):
                msn = int.from_bytes(r[32:36], "big")
                if (msn - self.maxcmdsn) % (1 << 32) < (1 << 31): self.maxcmdsn = msn
            if op == 0x20:  # NOP-In
                ttt = r[20:24]
                if ttt != b"\xff\xff\xff\xff":
                    n = bytearray(48); n[0] = 0x40; n[1] = 0x80
                    n[8:16] = r[8:16]; n[16:20] = b"\xff\xff\xff\xff"; n[20:24] = ttt
                    n[24:28] = self.cmdsn.to_bytes(4, "big"); n[28:32] = self.expstatsn.to_bytes(4, "big")
                    self.s.sendall(bytes(n))
                continue
            if op == 0x31:  # R2T (RFC 7143 11.8): offset 40..44, length 44..48
                out = self.outstanding.get(itt)
                if out is None: raise RuntimeError("R2T for unknown ITT %d" % itt)
                off, n = int.from_bytes(r[40:44], "big"), int.from_bytes(r[44:48], "big")
                if off + n > len(out): raise RuntimeError("R2T beyond the data")
                self.data_out(itt, r[20:24], off, out[off:off + n], self.negotiated()[3])
                continue
            if op == 0x25:  # Data-In
                self.datain[itt] = self.datain.get(itt, b"") + d
                if r[1] & 0x01:
                    self.expstatsn = int.from_bytes(r[24:28], "big") + 1
                    self.outstanding.pop(itt, None)
                    return itt, r[3], self.datain.pop(itt, b""), None
                continue
            if op == 0x21:  # SCSI Response
                self.expstatsn = int.from_bytes(r[24:28], "big") + 1
                sense = None
                if r[3] == 0x02 and len(d) >= 2:
                    sl = int.from_bytes(d[:2], "big")
                    sd = d[2:2 + sl]
                    if len(sd) >= 14:
                        sense = (sd[2] & 0x0f, sd[12], sd[13])
                self.outstanding.pop(itt, None)
                # A response other than "command completed at target" has no status.
                st = r[3] if r[2] == 0 else 0x100 | r[2]
                return itt, st, self.datain.pop(itt, b""), sense
            if op == 0x32:  # Async Message
                continue
            raise RuntimeError("unexpected PDU opcode %02x" % op)

def fmt(status, sense):
    if sense: return "CHECK CONDITION %x/%02x/%02x" % sense
    return {0: "GOOD", 8: "BUSY", 0x18: "RESERVATION CONFLICT"}.get(status, "status %02x" % status)

PROUT_SA = {"register": 0, "reserve": 1, "release": 2, "clear": 3, "preempt": 4,
            "register-ignore": 6}

def prout_cdb_and_data(args):
    """PERSISTENT RESERVE OUT CDB (SPC-4 6.16.1, Table 167: SA in byte 1, scope/type in
    byte 2, parameter list length in bytes 5..8) and its 24-byte basic parameter list
    (6.16.3, Table 171: reservation key, service action reservation key, flags in byte
    20 with APTPL = bit 0)."""
    sa = PROUT_SA[args[0]] if args[0] in PROUT_SA else int(args[0], 0)
    typ, key, sark = int(args[1], 0), int(args[2], 16), int(args[3], 16)
    aptpl = len(args) > 4 and args[4] == "1"
    cdb = bytes([0x5f, sa & 0x1f, typ & 0x0f, 0, 0]) + (24).to_bytes(4, "big") + b"\0"
    data = key.to_bytes(8, "big") + sark.to_bytes(8, "big") + bytes(4) + \
        bytes([1 if aptpl else 0, 0, 0, 0])
    return cdb, data

def one(c, run, cmd, args):
    """Runs one command on session c: (exit code, result line)."""
    if cmd == "inq":
        if args[0] == "std":
            cdb = bytes([0x12, 0, 0, 0, 96, 0])
        else:
            cdb = bytes([0x12, 1, int(args[0], 0), 0x10, 0, 0])
        st, d, s = run(cdb, 4096)
        if st: return 1, fmt(st, s)
        return 0, d.hex()
    if cmd == "rtpg":
        st, d, s = run(bytes([0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]), 4096)
        if st: return 1, fmt(st, s)
        i, out = 4, []
        names = {0: "AO", 1: "ANO", 2: "S", 3: "U", 0xf: "T"}
        while i + 8 <= len(d):
            out.append("%d:%s" % (int.from_bytes(d[i + 2:i + 4], "big"), names.get(d[i] & 0xf, "?")))
            i += 8 + 4 * d[i + 7]
        return 0, " ".join(out)
    if cmd == "write":
        lba, byte = int(args[0], 0), int(args[1], 0)
        secs = float(args[2]) if len(args) > 2 else 0.0
        cdb = bytes([0x2a, 0]) + lba.to_bytes(4, "big") + bytes([0, 0, 8, 0])
        st, d, s = run(cdb, 0, bytes([byte]) * 4096, secs)
        return (0 if st == 0 else 1), fmt(st, s)
    if cmd == "read":
        lba = int(args[0], 0)
        cdb = bytes([0x28, 0]) + lba.to_bytes(4, "big") + bytes([0, 0, 8, 0])
        st, d, s = run(cdb, 4096, b"", 30)
        if st: return 1, fmt(st, s)
        return 0, "%02x %s" % (d[0], "uniform" if d == bytes([d[0]]) * 4096 else "mixed")
    if cmd == "tur":
        st, d, s = run(bytes(6))
        return (0 if st == 0 else 1), fmt(st, s)
    if cmd == "prout":
        cdb, data = prout_cdb_and_data(args)
        st, d, s = run(cdb, 0, data)
        return (0 if st == 0 else 1), fmt(st, s)
    if cmd == "prin":
        # SPC-4 6.15.1 Table 155: SA in byte 1, allocation length in bytes 7..8.
        sa = {"keys": 0, "resv": 1}[args[0]]
        st, d, s = run(bytes([0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0]), 4096)
        if st: return 1, fmt(st, s)
        if len(d) < 8: return 2, "short PERSISTENT RESERVE IN data"
        n = min(int.from_bytes(d[4:8], "big"), len(d) - 8)
        if sa == 0:  # Table 157: PRgeneration, additional length, 8-byte keys
            return 0, " ".join(["keys"] + [d[8 + i:16 + i].hex() for i in range(0, n - n % 8, 8)])
        if n < 16:  # Table 158/159: no reservation, or key + scope/type in byte 21
            return 0, "resv none"
        return 0, "resv %s %d" % (d[8:16].hex(), d[21] & 0x0f)
    if cmd == "poll":
        secs, want, sub, subargs = float(args[0]), args[1], args[2], args[3:]
        t0 = time.monotonic()
        line = ""
        while True:
            if want.startswith("ua "):
                # Without retrying unit attentions: the first one pending is the answer.
                st, d, s = c.command(bytes(6))
                line = ("ua %02x/%02x" % (s[1], s[2])) if s and s[0] == 6 else fmt(st, s)
                if line != want and s and s[0] == 6:
                    print("seen:", line, flush=True)
            else:
                _, line = one(c, run, sub, subargs)
            ms = int((time.monotonic() - t0) * 1000)
            if line == want:
                print("after %d ms at %d" % (ms, int(time.time() * 1000)))
                return 0, line
            if time.monotonic() - t0 > secs:
                return 1, "timeout: " + line
            time.sleep(0.05)
    return 2, __doc__

# --- writer: failover under load (issue #22) ---
BLOCK = 4096
MAGIC = b"RIOWBLK1"

def make_block(run, seq, lba):
    """One 4 KiB block: magic, run id, sequence number, LBA (8 bytes each, big-endian),
    a filler derived from the sequence number, and the CRC-32 of all that (last 4)."""
    head = MAGIC + run.to_bytes(8, "big") + seq.to_bytes(8, "big") + lba.to_bytes(8, "big")
    fill = ((seq * 0x9E3779B97F4A7C15) % (1 << 64)).to_bytes(8, "big") * 508
    body = head + fill[:BLOCK - 4 - len(head)]
    return body + zlib.crc32(body).to_bytes(4, "big")

def check_block(b, run, lba):
    """("empty"|"crc"|"foreign"|"ok", sequence number): "empty" carries no magic,
    "crc" has a bad checksum, "foreign" is valid but of another run or LBA."""
    if b[:8] != MAGIC: return "empty", 0
    if zlib.crc32(b[:BLOCK - 4]).to_bytes(4, "big") != b[BLOCK - 4:]: return "crc", 0
    seq = int.from_bytes(b[16:24], "big")
    if int.from_bytes(b[8:16], "big") != run or int.from_bytes(b[24:32], "big") != lba:
        return "foreign", seq
    return "ok", seq

def retryable(st, sense):
    """BUSY, TASK SET FULL, UNIT ATTENTION and NOT READY, LOGICAL UNIT NOT READY (04h/xx:
    04h/0Ah ASYMMETRIC ACCESS STATE TRANSITION, 04h/0Bh TARGET PORT IN STANDBY STATE, ...)
    are retried (SAM-5 5.3.1, SPC-4 5.16.2); NOT READY is retried after a pause."""
    if st in (0x08, 0x28): return 0.05
    if sense and sense[0] == 6: return 0.0
    if sense and sense[0] == 2 and sense[1] == 0x04: return 0.1
    return None

class Write:
    __slots__ = ("blk", "n", "seq", "data", "sends")
    def __init__(self, blk, n, seq, data):
        self.blk, self.n, self.seq, self.data, self.sends = blk, n, seq, data, 0

class Writer:
    def __init__(self, paths, target, initiator, start, nblk, opts):
        self.paths, self.target, self.initiator = paths, target, initiator
        self.start, self.nblk = start, nblk
        self.qd = int(opts.get("qd", "8"))
        self.sizes = [int(k) // 4 for k in opts.get("sizes", "8,16,32,64").split(",")]
        self.secs = float(opts["secs"])
        self.after = float(opts.get("after", "3"))
        self.count = int(opts.get("count", "0"))
        self.io_timeout = float(opts.get("timeout", "30"))
        seed = int(opts.get("seed", str(int(time.time()))))
        self.rng = random.Random(seed)
        self.run = random.Random(seed ^ 0x5eed).getrandbits(63) | 1
        self.t0 = time.monotonic()
        self.deadline = self.t0 + float(opts.get("deadline", str(self.secs + 90)))
        if not self.sizes or min(self.sizes) < 1 or nblk < 2 * self.qd * max(self.sizes):
            raise ValueError("BLOCKS must be at least 2 * qd * the largest write")
        self.pi, self.conn, self.lpb = 0, None, 8
        self.blk, self.seq = 0, 1
        self.inflight = {}  # ITT -> Write
        self.retryq = collections.deque()
        self.retry_at = 0.0
        self.acked, self.issued = {}, {}  # block index -> highest sequence number
        self.stats = collections.Counter()
        self.senses = collections.Counter()
        self.t_first = self.t_fail = self.t_login = self.t_resume = None
        self.fail_path = None
        self.acked_before = self.acked_after = 0
        self.error = None
        print("writer run %016x seed %d qd %d sizes %s KiB region %d+%d x 4 KiB through %s"
              % (self.run, seed, self.qd, ",".join(str(4 * z) for z in self.sizes), start,
                 nblk, " then ".join(paths)), flush=True)

    def now(self): return time.monotonic()

    def epoch_ms(self): return int(time.time() * 1000)

    def lba(self, blk): return self.start + blk * self.lpb

    def connect(self, pi):
        c = Conn(self.paths[pi], self.target, self.initiator, timeout=min(self.io_timeout, 10))
        c.s.settimeout(self.io_timeout)
        return c

    def capacity(self):
        """READ CAPACITY (10) (SBC-3 5.15): the block size and whether the region fits."""
        for _ in range(20):
            self.conn.send_cmd(bytes([0x25] + [0] * 9), b"", 8)
            _, st, d, s = self.conn.recv_response()
            if st == 0 and len(d) >= 8: break
            if retryable(st, s) is None: raise RuntimeError("READ CAPACITY: " + fmt(st, s))
            time.sleep(retryable(st, s))
        else:
            raise RuntimeError("READ CAPACITY keeps failing")
        last, bs = int.from_bytes(d[0:4], "big"), int.from_bytes(d[4:8], "big")
        if bs == 0 or BLOCK % bs: raise RuntimeError("block size %d does not divide 4096" % bs)
        self.lpb = BLOCK // bs
        if self.start % self.lpb or self.lba(self.nblk) > last + 1:
            raise RuntimeError("region does not fit the %d-block LUN" % (last + 1))

    def new_write(self):
        n = min(self.rng.choice(self.sizes), self.nblk - self.blk)
        data = b"".join(make_block(self.run, self.seq + k, self.lba(self.blk + k)) for k in range(n))
        w = Write(self.blk, n, self.seq, data)
        for k in range(n): self.issued[self.blk + k] = self.seq + k
        self.blk = (self.blk + n) % self.nblk
        self.seq += n
        self.stats["blocks_written"] += n
        return w

    def overlaps(self, blk, n):
        """A write of blocks [blk, blk+n) would overlap one not yet acknowledged: it
        waits, so that two writes to one block are never in flight at once."""
        for w in list(self.inflight.values()) + list(self.retryq):
            if blk < w.blk + w.n and w.blk < blk + n: return True
        return False

    def send(self, w):
        lba = self.lba(w.blk)
        cdb = bytes([0x2a, 0]) + lba.to_bytes(4, "big") + bytes([0]) + \
            (w.n * self.lpb).to_bytes(2, "big") + bytes([0])
        itt = self.conn.send_cmd(cdb, w.data)
        self.inflight[itt] = w
        w.sends += 1
        self.stats["writes_issued"] += 1
        if w.sends > 1: self.stats["writes_reissued"] += 1
        if self.t_first is None: self.t_first = self.now()

    def completed(self, itt, st, sense):
        w = self.inflight.pop(itt, None)
        if w is None: raise RuntimeError("response for unknown ITT %d" % itt)
        if st == 0:
            for k in range(w.n):
                if self.acked.get(w.blk + k, 0) < w.seq + k: self.acked[w.blk + k] = w.seq + k
            self.stats["blocks_acknowledged"] += w.n
            self.stats["writes_acknowledged"] += 1
            if self.failovers() == 0:
                self.acked_before += 1
                if self.acked_before == 1:
                    print("started %s at %d" % (self.paths[self.pi], self.epoch_ms()), flush=True)
            else:
                if self.t_resume is None:
                    self.t_resume = self.now()
                    print("resumed %s at %d (%d ms after the first failed I/O)"
                          % (self.paths[self.pi], self.epoch_ms(), self.ms(self.t_fail, self.t_resume)),
                          flush=True)
                self.acked_after += 1
            return
        pause = retryable(st, sense)
        self.senses[fmt(st, sense)] += 1
        if pause is None or self.now() > self.deadline:
            self.error = "write at LBA %d: %s" % (self.lba(w.blk), fmt(st, sense))
            return
        self.retryq.append(w)
        self.retry_at = max(self.retry_at, self.now() + pause)

    def failovers(self): return self.stats["failovers"]

    def ms(self, a, b): return int((b - a) * 1000) if a is not None and b is not None else -1

    def fail_over(self, why):
        """The connection died: every write in flight on it is unacknowledged and goes
        back to the queue (in sequence order); log in through the next path."""
        if self.t_fail is None:
            self.t_fail = self.now()
            self.fail_path = self.paths[self.pi]
        print("failed_io %s (%s) at %d; %d writes in flight re-issued"
              % (self.paths[self.pi], why, self.epoch_ms(), len(self.inflight)), flush=True)
        pending = sorted(list(self.inflight.values()) + list(self.retryq), key=lambda w: w.seq)
        self.inflight.clear()
        self.retryq = collections.deque(pending)
        try: self.conn.s.close()
        except OSError: pass
        self.conn = None
        while self.now() < self.deadline:
            self.pi = (self.pi + 1) % len(self.paths)
            try:
                self.conn = self.connect(self.pi)
            except (OSError, EOFError, RuntimeError) as e:
                print("login %s failed: %s" % (self.paths[self.pi], e), flush=True)
                time.sleep(0.2)
                continue
            self.stats["failovers"] += 1
            if self.t_login is None: self.t_login = self.now()
            print("login %s at %d (%d ms after the first failed I/O)"
                  % (self.paths[self.pi], self.epoch_ms(), self.ms(self.t_fail, self.now())), flush=True)
            return True
        self.error = "no path to log in through before the deadline"
        return False

    def issuing(self):
        """Whether new writes are still started: for SECS, and after a failover until
        AFTER seconds of writes through the new path; COUNT bounds the writes."""
        if self.count and self.stats["writes_issued"] - self.stats["writes_reissued"] >= self.count:
            return False
        t = self.now()
        if t - self.t0 < self.secs: return True
        if self.t_fail is not None and (self.t_resume is None or t - self.t_resume < self.after):
            return True
        return False

    def write_phase(self):
        self.conn = self.connect(0)
        self.capacity()
        self.t0 = self.now()
        while self.error is None:
            if self.now() > self.deadline:
                self.error = "deadline: %d writes still unacknowledged" % (len(self.inflight) + len(self.retryq))
                break
            go = self.issuing()
            if not go and not self.inflight and not self.retryq: break
            try:
                while len(self.inflight) < self.qd and self.conn.window_open():
                    if self.retryq:
                        if self.now() < self.retry_at: break
                        self.send(self.retryq.popleft())
                    elif go:
                        n = min(max(self.sizes), self.nblk - self.blk)
                        if self.overlaps(self.blk, n): break
                        self.send(self.new_write())
                    else:
                        break
                if self.inflight:
                    itt, st, _, sense = self.conn.recv_response()
                    self.completed(itt, st, sense)
                else:
                    time.sleep(max(0.0, min(0.05, self.retry_at - self.now())))
            except (OSError, EOFError) as e:  # socket.timeout, reset, broken pipe, EOF
                if not self.fail_over(type(e).__name__ + ": " + str(e)): break
        self.t_end = self.now()

    def read_region(self):
        """Reads the region back through the last path (a new session if the writer is
        not on it), 128 KiB per READ (10); returns the bytes or None."""
        last = len(self.paths) - 1
        if self.conn is not None and self.pi != last:
            try: self.conn.s.close()
            except OSError: pass
            self.conn = None
        out, blk = [], 0
        while blk < self.nblk:
            if self.now() > self.deadline:
                self.error = self.error or "deadline while reading back"
                return None
            n = min(32, self.nblk - blk)
            try:
                if self.conn is None:
                    self.pi = last
                    self.conn = self.connect(last)
                cdb = bytes([0x28, 0]) + self.lba(blk).to_bytes(4, "big") + bytes([0]) + \
                    (n * self.lpb).to_bytes(2, "big") + bytes([0])
                itt = self.conn.send_cmd(cdb, b"", n * BLOCK)
                while True:  # writes left in flight by an error answer first
                    got, st, d, sense = self.conn.recv_response()
                    if got == itt: break
            except (OSError, EOFError, RuntimeError) as e:
                print("read-back through %s: %s; logging in again" % (self.paths[last], e), flush=True)
                self.conn = None
                time.sleep(0.2)
                continue
            if st != 0:
                pause = retryable(st, sense)
                if pause is None:
                    self.error = self.error or "read at LBA %d: %s" % (self.lba(blk), fmt(st, sense))
                    return None
                time.sleep(pause)
                continue
            if len(d) != n * BLOCK:
                self.error = self.error or "short read at LBA %d" % self.lba(blk)
                return None
            out.append(d)
            blk += n
        return b"".join(out)

    def verify(self, data):
        """Every acknowledged block holds a valid block of this run at its LBA with a
        sequence number at least the acknowledged one (a later, unacknowledged rewrite
        may have landed) and at most the last one issued for it; anything else is loss."""
        bad = []
        for blk in range(self.nblk):
            b = data[blk * BLOCK:(blk + 1) * BLOCK]
            state, seq = check_block(b, self.run, self.lba(blk))
            want = self.acked.get(blk)
            if want is None:
                if state == "ok" and seq > self.issued.get(blk, 0):
                    bad.append((blk, "sequence %d never written there" % seq))
                if state == "crc": self.stats["blocks_unacknowledged_torn"] += 1
                continue
            if state != "ok":
                bad.append((blk, {"empty": "not written", "crc": "bad checksum",
                                  "foreign": "another run or LBA"}[state]))
            elif seq < want:
                bad.append((blk, "sequence %d older than the acknowledged %d" % (seq, want)))
            elif seq > self.issued.get(blk, 0):
                bad.append((blk, "sequence %d never written there" % seq))
            else:
                self.stats["blocks_verified"] += 1
                if seq > want: self.stats["blocks_newer_than_acknowledged"] += 1
        for blk, why in bad[:10]:
            print("bad block %d (LBA %d): %s" % (blk, self.lba(blk), why), flush=True)
        self.stats["blocks_bad"] = len(bad)

    def report(self):
        st = self.stats
        st["blocks_acknowledged_distinct"] = len(self.acked)
        for k in ("writes_issued", "writes_reissued", "writes_acknowledged", "blocks_written",
                  "blocks_acknowledged", "blocks_acknowledged_distinct", "blocks_verified",
                  "blocks_newer_than_acknowledged", "blocks_unacknowledged_torn", "blocks_bad",
                  "failovers"):
            print("%s %d" % (k, st[k]))
        print("retries %s" % (" ".join("%s=%d" % (k.replace(" ", "_"), v)
                                        for k, v in sorted(self.senses.items())) or "none"))
        print("failed_path %s" % (self.fail_path or "none"))
        print("resume_ms %d" % self.ms(self.t_fail, self.t_resume))
        print("login_ms %d" % self.ms(self.t_fail, self.t_login))
        end_a = self.t_fail if self.t_fail is not None else self.t_end
        dur_a = (end_a - self.t_first) if self.t_first is not None else 0
        print("iops_before %.0f" % (self.acked_before / dur_a if dur_a > 0 else 0))
        dur_b = (self.t_end - self.t_resume) if self.t_resume is not None else 0
        print("iops_after %.0f" % (self.acked_after / dur_b if dur_b > 0 else 0))
        print("writes_before %d writes_after %d" % (self.acked_before, self.acked_after))
        if self.error: print("error: " + self.error)
        sys.stdout.flush()

def writer_main(addr, target, initiator, args):
    """writer ALT START BLOCKS SECS [qd=8] [sizes=8,16,32,64] [after=3] [count=0]
    [timeout=30] [deadline=SECS+90] [seed=N]: START is the region's first LBA (in
    logical blocks, 4 KiB-aligned), BLOCKS its size in 4 KiB blocks; QD writes in flight,
    each of a size (KiB) drawn from SIZES; new writes for SECS seconds, and after a
    failover until AFTER seconds of writes through the new path (COUNT > 0: at most that
    many writes); TIMEOUT bounds each socket wait (a silent path counts as dead);
    DEADLINE bounds everything (retries included). Prints "started", "failed_io",
    "login", "resumed" lines as they happen, then "KEY VALUE" lines (see report). Exit 0
    when every acknowledged block verified, 1 otherwise, 2 on a protocol error."""
    opts = dict(a.split("=", 1) for a in args[4:] if "=" in a)
    opts["secs"] = args[3]
    w = Writer([addr, args[0]], target, initiator, int(args[1], 0), int(args[2], 0), opts)
    w.write_phase()
    data = w.read_region()
    if data is not None: w.verify(data)
    w.report()
    ok = data is not None and w.error is None and w.stats["blocks_bad"] == 0 and \
        w.stats["blocks_verified"] == len(w.acked)
    return 0 if ok else 1

def main():
    addr, target, initiator, cmd = sys.argv[1:5]
    args = sys.argv[5:]
    if cmd == "writer":
        return writer_main(addr, target, initiator, args)
    c = Conn(addr, target, initiator)
    def run(cdb, read_len=0, out=b"", secs=5.0):
        # Unit attentions (a new session, a state change) are always retried, at most
        # 16 in a row; BUSY and NOT READY only until SECS have passed.
        deadline = time.monotonic() + secs
        uas = 0
        while True:
            st, data, sense = c.command(cdb, read_len, out)
            ua = bool(sense) and sense[0] == 6
            uas = uas + 1 if ua else 0
            retry = (ua and uas <= 16) or ((st == 8 or (sense and sense[0] == 2))
                                           and time.monotonic() < deadline)
            if st == 0 or not retry:
                return st, data, sense
            print("retry:", fmt(st, sense), flush=True)
            time.sleep(0.2 if sense and sense[0] == 2 else 0)
    rc, line = one(c, run, cmd, args)
    print(line)
    return rc

if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - a test helper reports and exits
        print("error:", e); sys.exit(2)
