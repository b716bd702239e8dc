//! Fuzzes Data-Out sequencing (RFC 7143 10.7, 11.7, 11.8) through the pure sequencer the
//! connection reader uses, `rustio_iscsi::dataout::DataOutSeq`: unsolicited data bounded
//! by FirstBurstLength, solicited data matched to an outstanding R2T by its Target
//! Transfer Tag, buffer offsets continuous within a sequence, DataSN counting from 0 per
//! sequence, the F bit ending a sequence, nothing past the Expected Data Transfer Length.
//!
//! The harness sets a task up the way `conn.rs` does (EDTL, immediate data, the
//! unsolicited end from FirstBurstLength/InitialR2T/F bit, the transfer length the CDB
//! needs, a BUSY task that solicits nothing), then alternates R2T grants (`next_r2t`)
//! with Data-Out PDUs that go through the public codec (`Pdu::encode` / `Pdu::decode`
//! with digests and the MaxRecvDataSegmentLength bound) before `accept`. Data-Outs are
//! either built from the sequencer state and perturbed (offset, length, DataSN, TTT, F
//! bit) or raw wire bytes.
//!
//! Checked: no panic or overflow; `accept` agrees with an independent checked-arithmetic
//! reference model written from the RFC (same Ok/Err, same byte range, same DataSN
//! verdict); accepted bytes lie in `[0, EDTL)` and no byte is accepted twice; R2T grants
//! are non-empty, at most max(MaxBurstLength, 512), within the needed length, at most
//! MaxOutstandingR2T outstanding, R2TSN counting up from 0; `all_ended` agrees with the
//! model; R2T and Data-Out headers re-decode to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustio_iscsi::dataout::{Accepted, DataOutSeq, UNSOLICITED_TTT};
use rustio_iscsi_proto::pdu::{DataOut, Digests, Header, Pdu, R2t, BHS_LEN};

struct Input<'a> {
    d: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.d.split_first() {
            Some((b, rest)) => {
                self.d = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.d.len());
        let (a, b) = self.d.split_at(n);
        self.d = b;
        a
    }
}

/// One outstanding R2T of the reference model.
struct Outstanding {
    ttt: u32,
    offset: u32,
    len: u32,
    received: u32,
    data_sn: u32,
}

/// The reference sequencer, written from RFC 7143 10.7 / 11.7 / 11.8 with checked
/// arithmetic only.
struct Model {
    edtl: u32,
    unsol_next: u32,
    unsol_end: u32,
    unsol_data_sn: u32,
    next_r2t: u32,
    r2t_sn: u32,
    r2ts: Vec<Outstanding>,
}

impl Model {
    /// The R2T the target should grant next: `(offset, len)`.
    fn expect_grant(&self, need: u32, max_out: u32, max_burst: u32) -> Option<(u32, u32)> {
        let need = need.min(self.edtl);
        if self.r2ts.len() >= max_out.max(1) as usize || self.next_r2t >= need {
            return None;
        }
        Some((
            self.next_r2t,
            (need - self.next_r2t).min(max_burst.max(512)),
        ))
    }

    fn data_out(&mut self, ttt: u32, offset: u32, len: u32, sn: u32, f: bool) -> Option<Accepted> {
        let end = offset.checked_add(len).filter(|&e| e <= self.edtl)?;
        let ok = if ttt == UNSOLICITED_TTT {
            if offset != self.unsol_next || end > self.unsol_end {
                return None;
            }
            let ok = sn == self.unsol_data_sn;
            self.unsol_next = end;
            self.unsol_data_sn = self.unsol_data_sn.wrapping_add(1);
            if f {
                self.unsol_end = end;
            }
            ok
        } else {
            let i = self.r2ts.iter().position(|r| r.ttt == ttt)?;
            let r = &mut self.r2ts[i];
            let at = r
                .offset
                .checked_add(r.received)
                .expect("R2T offset overflows");
            let lim = r.offset.checked_add(r.len).expect("R2T end overflows");
            if offset != at || end > lim {
                return None;
            }
            let ok = sn == r.data_sn;
            r.received = r.received.checked_add(len).expect("R2T received overflows");
            r.data_sn = r.data_sn.wrapping_add(1);
            if r.received == r.len || f {
                self.r2ts.remove(i);
            }
            ok
        };
        Some(Accepted {
            start: offset,
            end,
            data_sn_ok: ok,
        })
    }

    fn all_ended(&self, need: u32) -> bool {
        self.r2ts.is_empty()
            && self.next_r2t >= need.min(self.edtl)
            && self.unsol_next >= self.unsol_end
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input { d: data };
    let flags = inp.u8();
    let digests = Digests {
        header: flags & 1 != 0,
        data: flags & 2 != 0,
    };
    let initial_r2t = flags & 4 != 0;
    let cmd_final = flags & 8 != 0;
    let busy = flags & 16 != 0;
    let big = flags & 32 != 0;
    // EDTL either small (a byte map of the buffer stays cheap) or anywhere in u32 (the
    // arithmetic near 2^32); the byte map is then kept only for small tasks.
    let edtl = if big { inp.u32() } else { u32::from(inp.u16()) };
    let mrdsl = (u32::from(inp.u16()) % 16_384).max(512);
    let max_burst = if big { inp.u32() } else { u32::from(inp.u16()) };
    let first_burst = if big { inp.u32() } else { u32::from(inp.u16()) };
    let max_out = u32::from(inp.u8() % 5);
    // Bytes the CDB transfers (conn.rs `write_transfer_len`): at most EDTL.
    let need = match inp.u8() % 4 {
        0 => edtl,
        _ => inp.u32() % edtl.saturating_add(1).max(1),
    }
    .min(edtl);
    let imm = (u32::from(inp.u16())).min(mrdsl).min(edtl);
    if imm >= need {
        // Complete with the command PDU: no sequencing (conn.rs dispatches at once).
        return;
    }
    // conn.rs `unsolicited_end`: unsolicited Data-Out up to FirstBurstLength unless
    // InitialR2T=Yes or the command had the F bit (RFC 7143 13.10, 13.14).
    let unsol_end = if !cmd_final && !initial_r2t {
        first_burst.min(edtl).max(imm)
    } else {
        imm
    };
    let first_r2t = if busy { need } else { unsol_end };
    let mut seq = DataOutSeq::new(edtl, imm, unsol_end, first_r2t);
    let mut model = Model {
        edtl,
        unsol_next: imm.min(edtl),
        unsol_end: unsol_end.min(edtl).max(imm.min(edtl)),
        unsol_data_sn: 0,
        next_r2t: first_r2t,
        r2t_sn: 0,
        r2ts: Vec::new(),
    };
    let track = edtl <= 1 << 16;
    let mut seen = if track {
        vec![false; edtl as usize]
    } else {
        Vec::new()
    };
    let mut received = u64::from(imm);
    let mut next_ttt = 0u32;
    let grant = |seq: &mut DataOutSeq, model: &mut Model, next_ttt: &mut u32| {
        if busy {
            return;
        }
        loop {
            let want = model.expect_grant(need, max_out, max_burst);
            let got = seq.next_r2t(need, max_out, max_burst, || {
                *next_ttt = next_ttt.wrapping_add(1) % UNSOLICITED_TTT;
                *next_ttt
            });
            assert_eq!(
                got.map(|g| (g.offset, g.len)),
                want,
                "R2T grant differs from the model"
            );
            let Some(g) = got else { break };
            assert!(g.len > 0 && g.len <= max_burst.max(512));
            let end = g.offset.checked_add(g.len).expect("R2T window overflows");
            assert!(end <= need, "R2T solicits past the needed length");
            assert_eq!(g.r2t_sn, model.r2t_sn, "R2TSN");
            assert!(model.r2ts.len() < max_out.max(1) as usize);
            let r2t = R2t {
                lun: 0,
                itt: 1,
                ttt: g.ttt,
                stat_sn: 0,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
                r2t_sn: g.r2t_sn,
                buffer_offset: g.offset,
                desired_len: g.len,
            };
            let wire = Pdu::new(Header::R2t(r2t), Vec::new()).encode(digests);
            let (back, n) = Pdu::decode(&wire, digests, 0).expect("R2T decodes");
            assert_eq!(n, wire.len());
            assert_eq!(back.header, Header::R2t(r2t));
            model.r2ts.push(Outstanding {
                ttt: g.ttt,
                offset: g.offset,
                len: g.len,
                received: 0,
                data_sn: 0,
            });
            model.r2t_sn = model.r2t_sn.wrapping_add(1);
            model.next_r2t = end;
        }
    };
    grant(&mut seq, &mut model, &mut next_ttt);
    let mut sn_skew = 0u32;
    for _ in 0..256 {
        assert_eq!(
            seq.all_ended(need),
            model.all_ended(need),
            "all_ended differs"
        );
        if received >= u64::from(need) || seq.all_ended(need) || inp.d.is_empty() {
            break;
        }
        let op = inp.u8();
        let wire: Vec<u8> = if op & 0x80 != 0 {
            // Raw bytes of the wire, as an initiator may send them.
            let n = usize::from(inp.u8()) * 2 + BHS_LEN;
            inp.bytes(n).to_vec()
        } else {
            // A Data-Out built from the sequencer state, then perturbed.
            let (ttt, base, sn, room) = match (op >> 1) % 4 {
                0 if model.unsol_next < model.unsol_end => (
                    UNSOLICITED_TTT,
                    model.unsol_next,
                    model.unsol_data_sn,
                    model.unsol_end - model.unsol_next,
                ),
                1 | 2 if !model.r2ts.is_empty() => {
                    let r = &model.r2ts[usize::from(inp.u8()) % model.r2ts.len()];
                    (r.ttt, r.offset + r.received, r.data_sn, r.len - r.received)
                }
                _ => (inp.u32(), inp.u32(), inp.u32(), u32::from(inp.u16())),
            };
            let len = match inp.u8() {
                0 => room.min(mrdsl),
                1 => room,
                x => u32::from(x) * 4,
            };
            let pert = inp.u8();
            let offset = match pert & 3 {
                0 => base,
                1 => base.wrapping_add(u32::from(inp.u8())),
                2 => base.wrapping_sub(u32::from(inp.u8())),
                _ => inp.u32(),
            };
            let data_sn = if pert & 4 != 0 {
                sn_skew = sn_skew.wrapping_add(1);
                sn.wrapping_add(sn_skew)
            } else {
                sn
            };
            let d = DataOut {
                final_bit: pert & 8 != 0 || len >= room,
                lun: 0,
                itt: 1,
                ttt,
                exp_stat_sn: 0,
                data_sn,
                buffer_offset: offset,
            };
            // The decoder refuses a segment longer than MRDSL; a few bytes over is
            // enough to exercise that, and keeps the exec rate up.
            let mut pdu = Pdu::new(Header::DataOut(d), vec![0xa5; len.min(mrdsl + 4) as usize]);
            if pert & 16 != 0 {
                pdu.data.push(1);
            }
            pdu.encode(digests)
        };
        let Ok((pdu, used)) = Pdu::decode(&wire, digests, mrdsl) else {
            // Framing, digest and length errors are the reader's (Reject or close).
            continue;
        };
        assert!(used <= wire.len());
        let Header::DataOut(d) = pdu.header else {
            continue;
        };
        let again = pdu.encode(digests);
        let (back, _) = Pdu::decode(&again, digests, mrdsl).expect("re-encoded Data-Out decodes");
        assert_eq!(back, pdu);
        let len = u32::try_from(pdu.data.len()).expect("segment bounded by MRDSL");
        assert!(len <= mrdsl);
        let got = seq.accept(d.ttt, d.buffer_offset, len, d.data_sn, d.final_bit);
        let want = model.data_out(d.ttt, d.buffer_offset, len, d.data_sn, d.final_bit);
        assert_eq!(got.ok(), want, "accept differs from the model");
        let Some(a) = want else {
            // Framing broken: the connection is dropped (RFC 7143 7.1.1 at ERL 0).
            return;
        };
        assert!(a.start <= a.end && a.end <= edtl);
        if track {
            for b in &mut seen[a.start as usize..a.end as usize] {
                assert!(!*b, "a buffer byte accepted twice");
                *b = true;
            }
        }
        received += u64::from(len);
        assert!(received <= u64::from(edtl), "more bytes accepted than EDTL");
        grant(&mut seq, &mut model, &mut next_ttt);
    }
});
