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
Exit 0 on GOOD, 1 on a final CHECK CONDITION/other status, 2 on protocol errors."""
import socket, struct, sys, time

def pad4(b): return b + b"\0" * (-len(b) % 4)

class Conn:
    def __init__(self, addr, target, initiator):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=60)
        self.itt, self.cmdsn, self.expstatsn = 1, 1, 0
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

def main():
    addr, target, initiator, cmd = sys.argv[1:5]
    args = sys.argv[5:]
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
