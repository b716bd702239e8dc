//! Memory budget for Data-Out buffers (issue 20, item 2).
//!
//! A WRITE's ExpectedDataTransferLength is a promise the initiator may never keep, so
//! the target must not turn it into memory by itself. Every write command that will
//! collect data takes a [`Reservation`] of its whole transfer (the CDB's length, bounded
//! by EDTL, plus any unsolicited data the initiator may send, RFC 7143 13.13–13.14) from
//! its session's [`Budget`] and from the server's, all or nothing, before its first R2T.
//! Taking all of it at once is what makes waiting for budget deadlock-free: a command
//! either has everything it needs to complete or holds nothing.
//!
//! The buffer itself only grows as data is solicited or arrives; [`Reservation::set_filled`]
//! keeps the "filled" counters (bytes actually materialised) that tests and metrics read.
//! A budget whose reservations are all released admits one command of any size, so a
//! transfer larger than the whole limit still runs, alone: memory stays below
//! `max(limit, MAX_TRANSFER_BYTES)`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A pool of bytes that Data-Out buffers may use (one per session, one per server).
#[derive(Debug)]
pub(crate) struct Budget {
    limit: AtomicU64,
    reserved: AtomicU64,
    filled: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64) -> Budget {
        Budget {
            limit: AtomicU64::new(limit),
            reserved: AtomicU64::new(0),
            filled: AtomicU64::new(0),
        }
    }

    /// Changes the limit (configuration reload); reservations already taken stay.
    pub(crate) fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Release);
    }

    /// The limit.
    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    /// Bytes reserved by commands in progress.
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }

    /// Bytes of Data-Out buffers actually materialised (solicited or received).
    pub(crate) fn filled(&self) -> u64 {
        self.filled.load(Ordering::Acquire)
    }

    /// Takes `n` bytes if they fit, or if nothing is reserved at all.
    fn try_take(&self, n: u64) -> bool {
        let limit = self.limit();
        let mut cur = self.reserved.load(Ordering::Acquire);
        loop {
            let Some(next) = cur.checked_add(n) else {
                return false;
            };
            if cur != 0 && next > limit {
                return false;
            }
            match self.reserved.compare_exchange_weak(
                cur,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    fn give(&self, n: u64) {
        self.reserved.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Bytes reserved for one command in a session budget and the server budget; released
/// when dropped (command completed, aborted, or its connection ended).
#[derive(Debug)]
pub(crate) struct Reservation {
    session: Arc<Budget>,
    server: Arc<Budget>,
    amount: u64,
    filled: u64,
}

impl Reservation {
    /// Reserves `n` bytes in both budgets, or nothing (`None`) when either is exhausted.
    pub(crate) fn try_new(session: &Arc<Budget>, server: &Arc<Budget>, n: u64) -> Option<Self> {
        if n > 0 {
            if !server.try_take(n) {
                return None;
            }
            if !session.try_take(n) {
                server.give(n);
                return None;
            }
        }
        Some(Reservation {
            session: session.clone(),
            server: server.clone(),
            amount: n,
            filled: 0,
        })
    }

    /// Grows the reservation to `n` bytes in both budgets, all or nothing; `false` (and
    /// the reservation unchanged) when either budget cannot give the difference.
    pub(crate) fn grow_to(&mut self, n: u64) -> bool {
        let Some(more) = n.checked_sub(self.amount).filter(|m| *m > 0) else {
            return true;
        };
        if !self.server.try_take(more) {
            return false;
        }
        if !self.session.try_take(more) {
            self.server.give(more);
            return false;
        }
        self.amount = n;
        true
    }

    /// Bytes reserved.
    #[cfg(test)]
    pub(crate) fn amount(&self) -> u64 {
        self.amount
    }

    /// Records that the command's buffer now holds `bytes` (never more than reserved).
    pub(crate) fn set_filled(&mut self, bytes: u64) {
        let bytes = bytes.min(self.amount);
        if bytes >= self.filled {
            let d = bytes - self.filled;
            self.session.filled.fetch_add(d, Ordering::AcqRel);
            self.server.filled.fetch_add(d, Ordering::AcqRel);
        } else {
            let d = self.filled - bytes;
            self.session.filled.fetch_sub(d, Ordering::AcqRel);
            self.server.filled.fetch_sub(d, Ordering::AcqRel);
        }
        self.filled = bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.set_filled(0);
        if self.amount > 0 {
            self.session.give(self.amount);
            self.server.give(self.amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn reservations_are_all_or_nothing_and_released_on_drop() {
        let server = Arc::new(Budget::new(512 * MIB));
        let a = Arc::new(Budget::new(64 * MIB));
        let b = Arc::new(Budget::new(64 * MIB));
        // One 64 MiB WRITE fits a 64 MiB session budget; a second one does not.
        let r1 = Reservation::try_new(&a, &server, 64 * MIB).unwrap();
        assert!(Reservation::try_new(&a, &server, 512).is_none());
        // The failed attempt left the server budget untouched.
        assert_eq!(server.reserved(), 64 * MIB);
        // Another session still has its own room.
        let r2 = Reservation::try_new(&b, &server, 32 * MIB).unwrap();
        assert_eq!(server.reserved(), 96 * MIB);
        drop(r1);
        assert_eq!(a.reserved(), 0);
        assert_eq!(server.reserved(), 32 * MIB);
        assert!(Reservation::try_new(&a, &server, 64 * MIB).is_some());
        drop(r2);
        assert_eq!(server.reserved(), 0);
    }

    #[test]
    fn server_budget_bounds_every_session() {
        let server = Arc::new(Budget::new(100 * MIB));
        let sessions: Vec<_> = (0..4).map(|_| Arc::new(Budget::new(64 * MIB))).collect();
        let mut held = Vec::new();
        for s in &sessions {
            if let Some(r) = Reservation::try_new(s, &server, 40 * MIB) {
                held.push(r);
            }
        }
        // 2 × 40 MiB fit in 100 MiB, a third does not.
        assert_eq!(held.len(), 2);
        assert_eq!(server.reserved(), 80 * MIB);
        // A session refused by the server budget holds nothing in its own.
        assert_eq!(sessions[2].reserved(), 0);
    }

    #[test]
    fn an_empty_budget_admits_one_oversized_command() {
        let server = Arc::new(Budget::new(8 * MIB));
        let s = Arc::new(Budget::new(8 * MIB));
        let big = Reservation::try_new(&s, &server, 64 * MIB).expect("sole command runs");
        assert!(Reservation::try_new(&s, &server, 1).is_none());
        drop(big);
        assert!(Reservation::try_new(&s, &server, 1).is_some());
    }

    #[test]
    fn filled_follows_the_buffer_and_never_exceeds_the_reservation() {
        let server = Arc::new(Budget::new(512 * MIB));
        let s = Arc::new(Budget::new(64 * MIB));
        let mut r = Reservation::try_new(&s, &server, 64 * MIB).unwrap();
        assert_eq!(r.amount(), 64 * MIB);
        assert_eq!(server.filled(), 0);
        r.set_filled(256 << 10);
        assert_eq!((s.filled(), server.filled()), (256 << 10, 256 << 10));
        r.set_filled(u64::MAX);
        assert_eq!(server.filled(), 64 * MIB);
        r.set_filled(4096);
        assert_eq!(s.filled(), 4096);
        drop(r);
        assert_eq!((s.filled(), server.filled()), (0, 0));
        assert_eq!((s.reserved(), server.reserved()), (0, 0));
    }

    #[test]
    fn zero_byte_reservation_always_succeeds() {
        let server = Arc::new(Budget::new(0));
        let s = Arc::new(Budget::new(0));
        let _full = Reservation::try_new(&s, &server, 10).unwrap();
        assert!(Reservation::try_new(&s, &server, 0).is_some());
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let server = Arc::new(Budget::new(10 * MIB));
        let s = Arc::new(Budget::new(10 * MIB));
        let peak = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (server, s, peak) = (server.clone(), s.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Some(r) = Reservation::try_new(&s, &server, 3 * MIB) {
                            peak.fetch_max(server.reserved(), Ordering::AcqRel);
                            drop(r);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Acquire) <= 9 * MIB);
        assert_eq!(server.reserved(), 0);
    }

    #[test]
    fn grow_to_is_all_or_nothing() {
        let server = Arc::new(Budget::new(100));
        let sess = Arc::new(Budget::new(60));
        let mut r = Reservation::try_new(&sess, &server, 10).unwrap();
        assert!(r.grow_to(60));
        assert_eq!(
            (r.amount(), sess.reserved(), server.reserved()),
            (60, 60, 60)
        );
        // The session has nothing left: the reservation stays as it was.
        assert!(!r.grow_to(61));
        assert_eq!(
            (r.amount(), sess.reserved(), server.reserved()),
            (60, 60, 60)
        );
        // Shrinking is not growing: nothing changes.
        assert!(r.grow_to(5));
        assert_eq!(r.amount(), 60);
        drop(r);
        assert_eq!((sess.reserved(), server.reserved()), (0, 0));
    }
}
