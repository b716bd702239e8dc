//! The store seam: compare-and-set conflicts are retried, bounded.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::transport::TransportId;

/// The iSCSI TransportID of READ FULL STATUS (SPC-4 7.6.4.6), format 01b, as the
/// string-based builder produced it (with the 6-byte ISID written in full).
#[test]
fn transport_id_format_01() {
    let port = TransportId::iscsi_port("iqn.x", [0, 0, 0, 0, 0x12, 0x34]);
    let t = port.to_bytes();
    assert_eq!(t[0], 0x45);
    assert_eq!(usize::from(u16::from_be_bytes([t[2], t[3]])), t.len() - 4);
    assert_eq!((t.len() - 4) % 4, 0);
    assert_eq!(&t[4..26], b"iqn.x,i,0x000000001234");
    assert_eq!(TransportId::parse(&t), Ok((port, t.len())));
    let dev = TransportId::Iscsi {
        name: "iqn.y".into(),
        isid: None,
    };
    let t = dev.to_bytes();
    assert_eq!(t[0], 0x05);
    assert_eq!(TransportId::parse(&t).unwrap().0, dev);
}

/// A store in which another writer commits just before each of our first `foreign`
/// compare-and-sets (what a second gateway does through a shared store).
#[derive(Debug)]
struct Contended {
    inner: MemoryStore,
    foreign: AtomicUsize,
}

impl ReservationStore for Contended {
    fn load(&self) -> Versioned {
        self.inner.load()
    }

    fn compare_and_set(&self, version: u64, new: ReservationState) -> Result<u64, StoreError> {
        if self
            .foreign
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let cur = self.inner.load();
            let mut theirs = (*cur.state).clone();
            theirs.bump();
            self.inner.compare_and_set(cur.version, theirs).unwrap();
        }
        self.inner.compare_and_set(version, new)
    }

    fn persists(&self) -> bool {
        false
    }
}

fn contended(foreign: usize) -> Arc<Contended> {
    Arc::new(Contended {
        inner: MemoryStore::new(),
        foreign: AtomicUsize::new(foreign),
    })
}

#[test]
fn conflict_is_retried_on_the_new_state() {
    let store = contended(2);
    let pr = PrState::new(store.clone());
    let mut seen = Vec::new();
    let r = pr.update(|s| {
        seen.push(s.generation);
        s.bump();
        Ok(Some(()))
    });
    assert_eq!(r, Ok(Some(())));
    // Ran on generation 0, then on each foreign change.
    assert_eq!(seen, [0, 1, 2]);
    let now = store.load();
    assert_eq!(now.state.generation, 3);
    // Store version: +1 per committed change, ours and the two foreign ones.
    assert_eq!(now.version, 3);
}

#[test]
fn endless_conflicts_end_busy() {
    let store = contended(usize::MAX);
    let pr = PrState::new(store.clone());
    let mut runs = 0;
    let r = pr.update(|s| {
        runs += 1;
        s.bump();
        Ok(Some(()))
    });
    assert_eq!(r, Err(Fail::Status(Status::Busy)));
    assert_eq!(runs, MAX_CAS_ATTEMPTS);
}

#[test]
fn no_change_does_not_commit() {
    let store = contended(0);
    let pr = PrState::new(store.clone());
    assert_eq!(pr.update::<()>(|_| Ok(None)), Ok(None));
    assert_eq!(store.load().version, 0);
}
