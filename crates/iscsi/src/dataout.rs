//! Data-Out sequencing of one write task (RFC 7143 11.7, 11.8): which bytes the initiator
//! may send unsolicited, which R2Ts are outstanding, and whether a Data-Out PDU fits them.
//!
//! A pure state machine — no socket, no buffer — so the connection asks it one question
//! per Data-Out PDU ("where do these bytes go, or is this a protocol error?") and one per
//! R2T it may send, and the rules can be unit tested and fuzzed on their own.

/// One outstanding R2T (RFC 7143 11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OutstandingR2t {
    ttt: u32,
    offset: u32,
    len: u32,
    received: u32,
    data_sn: u32,
}

/// An R2T to send: the caller puts these values into the PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tGrant {
    /// Target Transfer Tag the caller allocated for it.
    pub ttt: u32,
    /// R2TSN (RFC 7143 11.8.5).
    pub r2t_sn: u32,
    /// Buffer Offset.
    pub offset: u32,
    /// Desired Data Transfer Length.
    pub len: u32,
}

/// Where the data of an accepted Data-Out PDU belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// First buffer byte.
    pub start: u32,
    /// One past the last buffer byte.
    pub end: u32,
    /// The DataSN was the one expected. A wrong DataSN means a lost PDU: at
    /// ErrorRecoveryLevel 0 the task ends with CHECK CONDITION (RFC 7143 7.1.3, 7.8.2),
    /// while the connection goes on.
    pub data_sn_ok: bool,
}

/// A Data-Out PDU that breaks the task's framing: fatal for the connection at
/// ErrorRecoveryLevel 0 (RFC 7143 7.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SeqError {
    /// Offset plus length overflows or passes the Expected Data Transfer Length.
    #[error("Data-Out beyond the expected length (offset {offset}, length {len}, EDTL {edtl})")]
    BeyondExpected {
        /// Buffer Offset of the PDU.
        offset: u32,
        /// Data segment length.
        len: u32,
        /// Expected Data Transfer Length of the task.
        edtl: u32,
    },
    /// Unsolicited data (TTT ffffffffh) not at the next unsolicited offset, or past the
    /// end of the unsolicited burst.
    #[error("unsolicited Data-Out at a wrong offset ({offset})")]
    UnsolicitedOffset {
        /// Buffer Offset of the PDU.
        offset: u32,
    },
    /// A TTT that names no outstanding R2T.
    #[error("Data-Out for unknown TTT {ttt:#x}")]
    UnknownTtt {
        /// The TTT.
        ttt: u32,
    },
    /// Solicited data not at the next offset of its R2T, or past the R2T's end.
    #[error("solicited Data-Out at a wrong offset ({offset})")]
    SolicitedOffset {
        /// Buffer Offset of the PDU.
        offset: u32,
    },
}

/// The reserved tag: a Data-Out with this TTT is unsolicited (RFC 7143 11.7.4).
pub const UNSOLICITED_TTT: u32 = 0xffff_ffff;

/// Data-Out sequencing state of one write task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOutSeq {
    edtl: u32,
    unsol_next: u32,
    unsol_end: u32,
    unsol_data_sn: u32,
    /// The initiator closed the unsolicited burst (F bit) before its end.
    unsol_cut: bool,
    next_r2t: u32,
    r2t_sn: u32,
    r2ts: Vec<OutstandingR2t>,
}

impl DataOutSeq {
    /// A task with Expected Data Transfer Length `edtl`, whose command PDU carried
    /// `immediate` bytes and whose unsolicited Data-Out may run up to `unsol_end`
    /// (FirstBurstLength, RFC 7143 13.14). R2Ts solicit from `first_r2t` on (the caller
    /// passes the length it needs to solicit nothing at all).
    pub fn new(edtl: u32, immediate: u32, unsol_end: u32, first_r2t: u32) -> DataOutSeq {
        let unsol_end = unsol_end.min(edtl).max(immediate.min(edtl));
        DataOutSeq {
            edtl,
            unsol_next: immediate.min(edtl),
            unsol_end,
            unsol_data_sn: 0,
            unsol_cut: false,
            next_r2t: first_r2t,
            r2t_sn: 0,
            r2ts: Vec::new(),
        }
    }

    /// Checks one Data-Out PDU against the sequence it belongs to and records it.
    pub fn accept(
        &mut self,
        ttt: u32,
        offset: u32,
        len: u32,
        data_sn: u32,
        final_bit: bool,
    ) -> Result<Accepted, SeqError> {
        let end = offset.checked_add(len).filter(|e| *e <= self.edtl).ok_or(
            SeqError::BeyondExpected {
                offset,
                len,
                edtl: self.edtl,
            },
        )?;
        let data_sn_ok = if ttt == UNSOLICITED_TTT {
            if offset != self.unsol_next || end > self.unsol_end {
                return Err(SeqError::UnsolicitedOffset { offset });
            }
            let ok = data_sn == self.unsol_data_sn;
            self.unsol_next = end;
            self.unsol_data_sn = self.unsol_data_sn.wrapping_add(1);
            if final_bit {
                self.unsol_cut |= self.unsol_next < self.unsol_end;
                self.unsol_end = self.unsol_next;
            }
            ok
        } else {
            let i = self
                .r2ts
                .iter()
                .position(|r| r.ttt == ttt)
                .ok_or(SeqError::UnknownTtt { ttt })?;
            let r = &mut self.r2ts[i];
            // r.offset + r.len <= edtl (it was granted below the needed length), so
            // neither sum overflows.
            if offset != r.offset + r.received || end > r.offset + r.len {
                return Err(SeqError::SolicitedOffset { offset });
            }
            let ok = data_sn == r.data_sn;
            r.received += len;
            r.data_sn = r.data_sn.wrapping_add(1);
            if r.received == r.len || final_bit {
                self.r2ts.remove(i);
            }
            ok
        };
        Ok(Accepted {
            start: offset,
            end,
            data_sn_ok,
        })
    }

    /// The next R2T to send for a task that needs `need` bytes in all, if fewer than
    /// `max_outstanding` are outstanding (MaxOutstandingR2T, RFC 7143 13.17); each asks
    /// for at most `max_burst` bytes (MaxBurstLength, 13.13). `ttt` allocates the tag.
    pub fn next_r2t(
        &mut self,
        need: u32,
        max_outstanding: u32,
        max_burst: u32,
        ttt: impl FnOnce() -> u32,
    ) -> Option<R2tGrant> {
        let need = need.min(self.edtl);
        if self.r2ts.len() >= max_outstanding.max(1) as usize || self.next_r2t >= need {
            return None;
        }
        let len = (need - self.next_r2t).min(max_burst.max(512));
        let grant = R2tGrant {
            ttt: ttt(),
            r2t_sn: self.r2t_sn,
            offset: self.next_r2t,
            len,
        };
        self.r2ts.push(OutstandingR2t {
            ttt: grant.ttt,
            offset: grant.offset,
            len,
            received: 0,
            data_sn: 0,
        });
        self.r2t_sn = self.r2t_sn.wrapping_add(1);
        self.next_r2t += len;
        Some(grant)
    }

    /// Every sequence has ended (no R2T outstanding, nothing more to solicit for `need`
    /// bytes, the unsolicited burst closed). If the initiator ended a sequence short, the
    /// caller fails the task (see [`DataOutSeq::unsolicited_cut_short`]).
    pub fn all_ended(&self, need: u32) -> bool {
        self.r2ts.is_empty()
            && self.next_r2t >= need.min(self.edtl)
            && self.unsol_next >= self.unsol_end
    }

    /// Whether the initiator closed its unsolicited burst (F bit) before the end it was
    /// entitled to (FirstBurstLength or EDTL, RFC 7143 13.14): LIO answers WRITE ERROR -
    /// NOT ENOUGH UNSOLICITED DATA; a short solicited sequence is a DATA PHASE ERROR.
    pub fn unsolicited_cut_short(&self) -> bool {
        self.unsol_cut
    }

    /// Where the next R2T would start (the caller sizes the buffer to it).
    pub fn solicited_up_to(&self) -> u32 {
        self.next_r2t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttts() -> impl FnMut() -> u32 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn unsolicited_then_solicited_in_order() {
        // EDTL 64 KiB, 8 KiB immediate, FirstBurstLength 16 KiB, MaxBurstLength 32 KiB.
        let mut s = DataOutSeq::new(65536, 8192, 16384, 16384);
        let a = s.accept(UNSOLICITED_TTT, 8192, 8192, 0, true).unwrap();
        assert_eq!((a.start, a.end, a.data_sn_ok), (8192, 16384, true));
        let mut t = ttts();
        let g1 = s.next_r2t(65536, 1, 32768, &mut t).unwrap();
        assert_eq!((g1.ttt, g1.r2t_sn, g1.offset, g1.len), (1, 0, 16384, 32768));
        // MaxOutstandingR2T 1: no second R2T until the first is done.
        assert_eq!(s.next_r2t(65536, 1, 32768, &mut t), None);
        s.accept(1, 16384, 16384, 0, false).unwrap();
        let a = s.accept(1, 32768, 16384, 1, true).unwrap();
        assert!(a.data_sn_ok);
        let g2 = s.next_r2t(65536, 1, 32768, &mut t).unwrap();
        assert_eq!((g2.r2t_sn, g2.offset, g2.len), (1, 49152, 16384));
        s.accept(2, 49152, 16384, 0, true).unwrap();
        assert!(s.all_ended(65536));
    }

    #[test]
    fn framing_errors() {
        let mut s = DataOutSeq::new(4096, 0, 1024, 1024);
        assert_eq!(
            s.accept(UNSOLICITED_TTT, 512, 512, 0, false),
            Err(SeqError::UnsolicitedOffset { offset: 512 })
        );
        assert_eq!(
            s.accept(UNSOLICITED_TTT, 0, 2048, 0, false),
            Err(SeqError::UnsolicitedOffset { offset: 0 })
        );
        assert_eq!(
            s.accept(UNSOLICITED_TTT, 4000, 200, 0, false),
            Err(SeqError::BeyondExpected {
                offset: 4000,
                len: 200,
                edtl: 4096
            })
        );
        assert_eq!(
            s.accept(UNSOLICITED_TTT, u32::MAX, 2, 0, false),
            Err(SeqError::BeyondExpected {
                offset: u32::MAX,
                len: 2,
                edtl: 4096
            })
        );
        assert_eq!(
            s.accept(7, 1024, 512, 0, false),
            Err(SeqError::UnknownTtt { ttt: 7 })
        );
        let g = s.next_r2t(4096, 4, 1024, || 9).unwrap();
        assert_eq!(
            s.accept(g.ttt, 1536, 512, 0, false),
            Err(SeqError::SolicitedOffset { offset: 1536 })
        );
        assert_eq!(
            s.accept(g.ttt, 1024, 1536, 0, false),
            Err(SeqError::SolicitedOffset { offset: 1024 })
        );
    }

    #[test]
    fn wrong_data_sn_is_reported_not_fatal() {
        let mut s = DataOutSeq::new(2048, 0, 2048, 2048);
        let a = s.accept(UNSOLICITED_TTT, 0, 1024, 5, false).unwrap();
        assert!(!a.data_sn_ok);
        // The expected DataSN still advances by one per PDU.
        let a = s.accept(UNSOLICITED_TTT, 1024, 1024, 1, true).unwrap();
        assert!(a.data_sn_ok);
    }

    #[test]
    fn short_sequences_end_the_task() {
        // The initiator closes its unsolicited burst early (F bit) and the one R2T early.
        let mut s = DataOutSeq::new(8192, 0, 4096, 4096);
        s.accept(UNSOLICITED_TTT, 0, 1024, 0, true).unwrap();
        assert!(s.unsolicited_cut_short());
        let g = s.next_r2t(8192, 1, 8192, || 3).unwrap();
        assert_eq!((g.offset, g.len), (4096, 4096));
        assert!(!s.all_ended(8192));
        s.accept(3, 4096, 512, 0, true).unwrap();
        assert!(s.all_ended(8192));
        // A burst closed exactly at its end is not short.
        let mut s = DataOutSeq::new(8192, 0, 4096, 4096);
        s.accept(UNSOLICITED_TTT, 0, 4096, 0, true).unwrap();
        assert!(!s.unsolicited_cut_short());
    }

    #[test]
    fn nothing_solicited_past_need_or_edtl() {
        // need beyond EDTL is clamped; max_burst below 512 is raised to 512.
        let mut s = DataOutSeq::new(1000, 0, 0, 0);
        let g = s.next_r2t(5000, 8, 1, || 1).unwrap();
        assert_eq!((g.offset, g.len), (0, 512));
        let g = s.next_r2t(5000, 8, 1, || 2).unwrap();
        assert_eq!((g.offset, g.len), (512, 488));
        assert_eq!(s.next_r2t(5000, 8, 1, || 3), None);
        assert_eq!(s.solicited_up_to(), 1000);
    }
}
