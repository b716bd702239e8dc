//! Unit attention conditions per I_T nexus (SAM-5 5.14, SPC-4 5.12 / 7.5.9).
//!
//! Every nexus that has sent a command has an entry; a nexus seen for the first time
//! starts with POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h), because from its
//! point of view the logical unit has just appeared. Conditions are queued in precedence
//! order (resets before everything else, SAM-5 5.14) without duplicates, and each one is
//! reported once (UA_INTLCK_CTRL = 00b).
//!
//! The fast path (no condition pending) is a read lock on the nexus table and one atomic
//! load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::keyhash::KeyMap;
use crate::nexus::Nexus;
use crate::sense::Sense;

/// Upper bound of queued conditions per nexus; older non-reset conditions are dropped
/// first (SAM-5 allows reporting a less specific condition instead).
const MAX_PENDING: usize = 16;

/// Upper bound of remembered nexuses; forgotten ones simply get 29h/00h again.
const MAX_NEXUSES: usize = 4096;

#[derive(Debug, Default)]
struct NexusUa {
    pending: AtomicBool,
    queue: Mutex<VecDeque<Sense>>,
}

impl NexusUa {
    fn with(sense: Sense) -> NexusUa {
        let n = NexusUa::default();
        n.push(sense);
        n
    }

    fn push(&self, sense: Sense) {
        let mut q = self.queue.lock();
        if q.contains(&sense) {
            return;
        }
        if sense.asc == 0x29 {
            // A reset supersedes older reset conditions and precedes everything else.
            q.retain(|s| s.asc != 0x29);
            q.push_front(sense);
        } else {
            if q.len() >= MAX_PENDING {
                if let Some(pos) = q.iter().position(|s| s.asc != 0x29) {
                    q.remove(pos);
                }
            }
            q.push_back(sense);
        }
        self.pending.store(true, Ordering::Release);
    }

    fn pop(&self) -> Option<Sense> {
        if !self.pending.load(Ordering::Acquire) {
            return None;
        }
        let mut q = self.queue.lock();
        let s = q.pop_front();
        if q.is_empty() {
            self.pending.store(false, Ordering::Release);
        }
        s
    }

    fn clear_matching(&self, pred: impl Fn(&Sense) -> bool) {
        let mut q = self.queue.lock();
        q.retain(|s| !pred(s));
        if q.is_empty() {
            self.pending.store(false, Ordering::Release);
        }
    }
}

/// The unit attention table of one logical unit.
#[derive(Debug, Default)]
pub(crate) struct UaTable {
    nexuses: RwLock<KeyMap<Nexus, Arc<NexusUa>>>,
}

impl UaTable {
    fn entry(&self, nexus: &Nexus) -> Arc<NexusUa> {
        if let Some(e) = self.nexuses.read().get(nexus) {
            return Arc::clone(e);
        }
        let mut map = self.nexuses.write();
        if map.len() >= MAX_NEXUSES && !map.contains_key(nexus) {
            // Forget nexuses with nothing pending first; they would get 29h/00h again,
            // which is harmless.
            map.retain(|_, e| e.pending.load(Ordering::Acquire));
            if map.len() >= MAX_NEXUSES {
                map.clear();
            }
        }
        Arc::clone(
            map.entry(nexus.clone())
                .or_insert_with(|| Arc::new(NexusUa::with(Sense::UA_POWER_ON_RESET))),
        )
    }

    /// Registers `nexus` (first command) without consuming anything.
    pub(crate) fn touch(&self, nexus: &Nexus) {
        let _ = self.entry(nexus);
    }

    /// Takes the highest-precedence pending condition of `nexus`, if any.
    pub(crate) fn take(&self, nexus: &Nexus) -> Option<Sense> {
        self.entry(nexus).pop()
    }

    /// Whether `nexus` has a pending condition (without registering it).
    #[cfg(test)]
    pub(crate) fn has_pending(&self, nexus: &Nexus) -> bool {
        self.nexuses
            .read()
            .get(nexus)
            .is_some_and(|e| e.pending.load(Ordering::Acquire))
    }

    /// Establishes `sense` for `nexus` (creating the entry if needed).
    #[cfg(test)]
    pub(crate) fn raise(&self, nexus: &Nexus, sense: Sense) {
        self.entry(nexus).push(sense);
    }

    /// Establishes `sense` for every known nexus except `except`.
    pub(crate) fn raise_all(&self, sense: Sense, except: Option<&Nexus>) {
        for (n, e) in self.nexuses.read().iter() {
            if Some(n) != except {
                e.push(sense);
            }
        }
    }

    /// Establishes `sense` for every known nexus whose initiator port satisfies `pred`.
    pub(crate) fn raise_where(&self, sense: Sense, pred: impl Fn(&Nexus) -> bool) {
        for (n, e) in self.nexuses.read().iter() {
            if pred(n) {
                e.push(sense);
            }
        }
    }

    /// A known nexus satisfying `pred`.
    pub(crate) fn find(&self, pred: impl Fn(&Nexus) -> bool) -> Option<Nexus> {
        self.nexuses.read().keys().find(|n| pred(n)).cloned()
    }

    /// Clears conditions of `nexus` matching `pred` (REPORT LUNS clears REPORTED LUNS
    /// DATA HAS CHANGED, SAM-5 5.14).
    pub(crate) fn clear(&self, nexus: &Nexus, pred: impl Fn(&Sense) -> bool) {
        if let Some(e) = self.nexuses.read().get(nexus) {
            e.clear_matching(pred);
        }
    }

    /// I_T nexus loss: the nexus will see I_T NEXUS LOSS OCCURRED (29h/07h) if it comes
    /// back (SAM-5 6.3.4).
    pub(crate) fn nexus_lost(&self, nexus: &Nexus) {
        let mut map = self.nexuses.write();
        let e = Arc::new(NexusUa::with(Sense::UA_IT_NEXUS_LOSS));
        map.insert(nexus.clone(), e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u32) -> Nexus {
        let mut isid = [0u8; 6];
        isid[2..].copy_from_slice(&i.to_be_bytes());
        Nexus::new(
            crate::TransportId::iscsi_port("iqn.x:i", isid),
            crate::TargetPort::new(
                1,
                1,
                crate::TargetPortName::Iscsi {
                    name: "iqn.x:t".into(),
                    tpgt: 1,
                },
            ),
        )
    }

    #[test]
    fn new_nexus_gets_power_on_once() {
        let t = UaTable::default();
        assert_eq!(t.take(&n(1)), Some(Sense::UA_POWER_ON_RESET));
        assert_eq!(t.take(&n(1)), None);
    }

    #[test]
    fn reset_precedes_and_duplicates_collapse() {
        let t = UaTable::default();
        t.touch(&n(1));
        assert_eq!(t.take(&n(1)), Some(Sense::UA_POWER_ON_RESET));
        t.raise(&n(1), Sense::UA_CAPACITY_DATA_CHANGED);
        t.raise(&n(1), Sense::UA_CAPACITY_DATA_CHANGED);
        t.raise(&n(1), Sense::UA_BUS_DEVICE_RESET);
        assert_eq!(t.take(&n(1)), Some(Sense::UA_BUS_DEVICE_RESET));
        assert_eq!(t.take(&n(1)), Some(Sense::UA_CAPACITY_DATA_CHANGED));
        assert_eq!(t.take(&n(1)), None);
    }

    #[test]
    fn raise_all_skips_origin() {
        let t = UaTable::default();
        t.touch(&n(1));
        t.touch(&n(2));
        t.take(&n(1));
        t.take(&n(2));
        t.raise_all(Sense::UA_MODE_PARAMETERS_CHANGED, Some(&n(1)));
        assert!(!t.has_pending(&n(1)));
        assert_eq!(t.take(&n(2)), Some(Sense::UA_MODE_PARAMETERS_CHANGED));
    }

    #[test]
    fn nexus_loss_reports_29_07() {
        let t = UaTable::default();
        t.touch(&n(1));
        t.nexus_lost(&n(1));
        assert_eq!(t.take(&n(1)), Some(Sense::UA_IT_NEXUS_LOSS));
        assert_eq!(t.take(&n(1)), None);
    }

    #[test]
    fn queue_is_bounded() {
        let t = UaTable::default();
        t.touch(&n(1));
        for i in 0..100u8 {
            t.raise(&n(1), Sense::new(crate::SenseKey::UnitAttention, 0x3f, i));
        }
        let mut count = 0;
        while t.take(&n(1)).is_some() {
            count += 1;
        }
        assert_eq!(count, MAX_PENDING);
    }
}
