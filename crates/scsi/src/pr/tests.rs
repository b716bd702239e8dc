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
    fn load(&self) -> Result<Versioned, StoreError> {
        self.inner.load()
    }

    fn compare_and_set(&self, version: u64, new: ReservationState) -> Result<u64, StoreError> {
        if self
            .foreign
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let cur = self.inner.load().unwrap();
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
    let now = store.load().unwrap();
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
    assert_eq!(store.load().unwrap().version, 0);
}

/// Two units (two gateways) over one shared store.
mod shared {
    use std::sync::atomic::AtomicBool;

    use rustio_backstore::RamBackstore;

    use super::*;
    use crate::tests::{nexus_via as via, H};
    use crate::{LogicalUnit, LuConfig, LunMap, Response};

    fn unit_over(store: Arc<dyn ReservationStore>, n: Nexus) -> H {
        let lu = LogicalUnit::with_reservation_store(
            Arc::new(RamBackstore::new(1 << 20, 512).unwrap()),
            LuConfig::new("t", "s"),
            store,
        )
        .unwrap();
        let mut map = LunMap::new();
        map.insert(0, lu.clone(), false);
        let h = H {
            lu,
            n,
            wp: false,
            map,
        };
        h.clear_ua(&h.n);
        h
    }

    fn pr_out(h: &H, sa: u8, ty: u8, key: u64, sa_key: u64) -> Response {
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&key.to_be_bytes());
        p[8..16].copy_from_slice(&sa_key.to_be_bytes());
        let mut c = [0u8; 10];
        c[0] = 0x5f;
        c[1] = sa;
        c[2] = ty;
        c[5..9].copy_from_slice(&24u32.to_be_bytes());
        h.run_as(&h.n, &c, &p).0
    }

    fn write(h: &H) -> Response {
        h.run_as(&h.n, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0; 512])
            .0
    }

    fn read(h: &H) -> Response {
        h.run_as(&h.n, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]).0
    }

    fn tur(h: &H) -> Response {
        h.run_as(&h.n, &[0; 6], &[]).0
    }

    const CONFLICT: Response = Response {
        status: Status::ReservationConflict,
        sense: None,
    };

    /// SPC-4 5.13.11.4 across units: a reservation made through unit A binds unit B's
    /// nexuses at once, a PREEMPT through A raises REGISTRATIONS PREEMPTED (2Ah/05h) for
    /// the preempted initiator on B, a holder unregistering a registrants-only
    /// reservation raises RESERVATIONS RELEASED (2Ah/04h, SPC-4 5.13.11.2.3) on B, and
    /// releasing gives B's writes back.
    #[test]
    fn change_through_one_unit_binds_and_notifies_the_other() {
        let store: Arc<dyn ReservationStore> = Arc::new(MemoryStore::new());
        let a = unit_over(store.clone(), via(1, 1));
        let b = unit_over(store.clone(), via(2, 2));
        assert_eq!(pr_out(&b, 0, 0, 0, 0xbb), Response::GOOD); // Y registers via B
        assert_eq!(pr_out(&a, 0, 0, 0, 0xaa), Response::GOOD); // X registers via A
        assert_eq!(pr_out(&a, 1, 1, 0xaa, 0), Response::GOOD); // X: WRITE EXCLUSIVE
        assert_eq!(write(&b), CONFLICT);
        assert_eq!(read(&b), Response::GOOD);
        assert_eq!(write(&a), Response::GOOD);
        // PREEMPT Y's key.
        assert_eq!(pr_out(&a, 4, 1, 0xaa, 0xbb), Response::GOOD);
        assert_eq!(tur(&b), Response::check(Sense::UA_REGISTRATIONS_PREEMPTED));
        assert_eq!(tur(&b), Response::GOOD);
        assert_eq!(tur(&a), Response::GOOD);
        // Y registers again; X moves to WRITE EXCLUSIVE – REGISTRANTS ONLY and leaves.
        assert_eq!(pr_out(&b, 0, 0, 0, 0xbb), Response::GOOD);
        assert_eq!(pr_out(&a, 2, 1, 0xaa, 0), Response::GOOD); // RELEASE
        assert_eq!(write(&b), Response::GOOD);
        assert_eq!(pr_out(&a, 1, 5, 0xaa, 0), Response::GOOD);
        assert_eq!(write(&b), Response::GOOD); // registrant
        assert_eq!(pr_out(&a, 0, 0, 0xaa, 0), Response::GOOD); // unregister
        assert_eq!(tur(&b), Response::check(Sense::UA_RESERVATIONS_RELEASED));
        assert_eq!(write(&b), Response::GOOD);
        // SPC-2 RESERVE through B binds A as well.
        assert_eq!(pr_out(&b, 0, 0, 0xbb, 0), Response::GOOD); // Y unregisters
        assert_eq!(
            b.run_as(&b.n, &[0x16, 0, 0, 0, 0, 0], &[]).0,
            Response::GOOD
        );
        assert_eq!(write(&a), CONFLICT);
        assert_eq!(
            b.run_as(&b.n, &[0x17, 0, 0, 0, 0, 0], &[]).0,
            Response::GOOD
        );
        assert_eq!(write(&a), Response::GOOD);
    }

    /// SAM-5 6.3.3 across units: a LOGICAL UNIT RESET through unit A is one reset of the
    /// one logical unit — B's nexus gets BUS DEVICE RESET FUNCTION OCCURRED (29h/03h)
    /// too (libiscsi's MultipathIO.Reset checks every path), once, and an SPC-2
    /// reservation held through B is released; a target reset likewise gives 29h/00h.
    #[test]
    fn reset_through_one_unit_reaches_the_others() {
        let store: Arc<dyn ReservationStore> = Arc::new(MemoryStore::new());
        let a = unit_over(store.clone(), via(1, 1));
        let b = unit_over(store.clone(), via(2, 2));
        for h in [&a, &b] {
            h.clear_ua(&h.n);
        }
        assert_eq!(
            b.run_as(&b.n, &[0x16, 0, 0, 0, 0, 0], &[]).0,
            Response::GOOD
        );
        assert_eq!(write(&a), CONFLICT);
        a.lu.task_management(&a.n, crate::Tmf::LogicalUnitReset);
        assert_eq!(tur(&a), Response::check(Sense::UA_BUS_DEVICE_RESET));
        assert_eq!(
            tur(&a),
            Response::GOOD,
            "raised once on the unit it came through"
        );
        assert_eq!(tur(&b), Response::check(Sense::UA_BUS_DEVICE_RESET));
        assert_eq!(tur(&b), Response::GOOD);
        assert_eq!(write(&a), Response::GOOD, "the SPC-2 reservation is gone");
        b.lu.task_management(&b.n, crate::Tmf::TargetWarmReset);
        assert_eq!(tur(&a), Response::check(Sense::UA_POWER_ON_RESET));
        assert_eq!(tur(&b), Response::check(Sense::UA_POWER_ON_RESET));
        assert_eq!((tur(&a), tur(&b)), (Response::GOOD, Response::GOOD));
    }

    /// A store that can be switched off (a cluster out of reach).
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryStore,
        down: AtomicBool,
    }

    impl Flaky {
        fn err(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable("cluster out of reach".into()))
            } else {
                Ok(())
            }
        }
    }

    impl ReservationStore for Flaky {
        fn load(&self) -> Result<Versioned, StoreError> {
            self.err()?;
            self.inner.load()
        }

        fn compare_and_set(&self, version: u64, new: ReservationState) -> Result<u64, StoreError> {
            self.err()?;
            self.inner.compare_and_set(version, new)
        }

        fn persists(&self) -> bool {
            false
        }

        fn watch(&self, on_change: ChangeCallback) {
            self.inner.watch(on_change);
        }
    }

    /// While the store cannot be read, commands that need the reservation state end
    /// with NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY (02h/04h/01h),
    /// INQUIRY still answers, nothing changes; afterwards everything is as before.
    #[test]
    fn unavailable_store_is_retryable_not_ready() {
        assert_eq!(
            (
                STORE_UNAVAILABLE.key,
                STORE_UNAVAILABLE.asc,
                STORE_UNAVAILABLE.ascq
            ),
            (crate::SenseKey::NotReady, 0x04, 0x01)
        );
        let store = Arc::new(Flaky {
            inner: MemoryStore::new(),
            down: AtomicBool::new(false),
        });
        let a = unit_over(store.clone(), via(1, 1));
        assert_eq!(pr_out(&a, 0, 0, 0, 0xaa), Response::GOOD);
        assert_eq!(pr_out(&a, 1, 1, 0xaa, 0), Response::GOOD);
        store.down.store(true, Ordering::SeqCst);
        let not_ready = Response::check(STORE_UNAVAILABLE);
        assert_eq!(write(&a), not_ready);
        assert_eq!(read(&a), not_ready);
        assert_eq!(pr_out(&a, 2, 1, 0xaa, 0), not_ready);
        let (r, _) = a.run_as(&a.n, &[0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
        assert_eq!(r, not_ready);
        let (r, _) = a.run_as(&a.n, &[0x12, 0, 0, 0, 36, 0], &[]);
        assert_eq!(r, Response::GOOD);
        store.down.store(false, Ordering::SeqCst);
        assert_eq!(write(&a), Response::GOOD);
        assert_eq!(store.load().unwrap().version, 2);

        // A unit opened while the store is down answers NOT READY, also without a
        // reservation (it cannot know), and recovers by itself.
        store.down.store(true, Ordering::SeqCst);
        let lu = LogicalUnit::with_reservation_store(
            Arc::new(RamBackstore::new(1 << 20, 512).unwrap()),
            LuConfig::new("t", "s"),
            store.clone(),
        )
        .unwrap();
        let mut map = LunMap::new();
        map.insert(0, lu.clone(), false);
        let b = H {
            lu,
            n: via(2, 2),
            wp: false,
            map,
        };
        let _ = tur(&b); // POWER ON
        assert_eq!(write(&b), not_ready);
        store.down.store(false, Ordering::SeqCst);
        assert_eq!(write(&b), CONFLICT);
        assert_eq!(read(&b), Response::GOOD);
    }
}
