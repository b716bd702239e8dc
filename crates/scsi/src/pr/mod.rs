//! Reservations: SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations (SPC-4 5.13,
//! 6.15, 6.16).
//!
//! The state ([`ReservationState`]) lives in a [`ReservationStore`]; an atomic flag says
//! whether any reservation exists so commands skip the store entirely in the common
//! case. Every change is computed on a copy and committed with compare-and-set
//! ([`PrState::update`]), retried when the store moved on, so a failed write of the
//! APTPL file (or a concurrent change through a shared store) leaves the state
//! consistent.
//!
//! A store shared by several units (gateways) tells each unit of the others' commits
//! ([`ReservationStore::watch`]); the unit then re-reads before its next command
//! ([`PrState::refresh`]) and raises the unit attentions the state's event log holds for
//! its nexuses (see [`store`] for the design). A store that cannot be read fails the
//! commands that need it with [`STORE_UNAVAILABLE`], which initiators retry.
//!
//! * [`state`]: the state and its APTPL text form;
//! * [`store`]: the store trait and the in-memory store;
//! * `pr_in`: PERSISTENT RESERVE IN;
//! * `out`: PERSISTENT RESERVE OUT, one function per service action.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cdb::{Command, PrOutAction};
use crate::lu::{Fail, Outcome};
use crate::nexus::Nexus;
use crate::sense::{Sense, SenseKey};
use crate::status::Status;

use self::state::Registration;

mod out;
mod pr_in;
pub(crate) mod state;
pub(crate) mod store;

pub use state::{DecodeError, ReservationState};
pub use store::{
    ChangeCallback, MemoryStore, ReservationStore, StoreError, Versioned, EVENT_WINDOW,
};

/// What a command that needs the reservation state gets while the store cannot be read
/// ([`StoreError::Unavailable`]): CHECK CONDITION, NOT READY, LOGICAL UNIT IS IN PROCESS
/// OF BECOMING READY (04h/01h, SPC-4 4.5.6 table 28 and annex D). Why this one: the
/// logical unit cannot decide access without its reservation state but expects to get
/// it back (the cluster store reconnects, re-reads and re-watches), which is exactly
/// "becoming ready"; initiators retry it on the same path (Linux `scsi_check_sense`
/// NEEDS_RETRY, Windows and ESXi likewise) instead of failing the I/O or the path, as
/// they would for LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE or a HARDWARE ERROR.
/// BUSY would be retried too, but it says the task set is full (SAM-5 5.3.1), and it
/// stays reserved for compare-and-set contention ([`MAX_CAS_ATTEMPTS`]).
pub const STORE_UNAVAILABLE: Sense = Sense::new(SenseKey::NotReady, 0x04, 0x01);

/// How often a change is recomputed when the store reports a concurrent change before
/// giving up with BUSY (the initiator retries).
const MAX_CAS_ATTEMPTS: usize = 16;

/// Persistent reservation types (SPC-4 6.16.3 table 209).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrType {
    WriteExclusive = 1,
    ExclusiveAccess = 3,
    WriteExclusiveRegistrantsOnly = 5,
    ExclusiveAccessRegistrantsOnly = 6,
    WriteExclusiveAllRegistrants = 7,
    ExclusiveAccessAllRegistrants = 8,
}

impl PrType {
    pub(crate) fn from_u8(v: u8) -> Option<PrType> {
        Some(match v {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    pub(crate) fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    pub(crate) fn write_exclusive(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusive
                | PrType::WriteExclusiveRegistrantsOnly
                | PrType::WriteExclusiveAllRegistrants
        )
    }

    /// Registrants-only and all-registrants types: registered nexuses get access.
    pub(crate) fn registrants_have_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }
}

/// Whether a command may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReservationCheck {
    /// Go ahead.
    Allowed,
    /// RESERVATION CONFLICT.
    Conflict,
    /// The state cannot be read: [`STORE_UNAVAILABLE`].
    Unavailable,
}

/// Reservation front of one logical unit: the store plus the fast-path flag.
#[derive(Debug)]
pub(crate) struct PrState {
    store: Arc<dyn ReservationStore>,
    /// Any SPC-2 or persistent reservation exists (fast path for every command).
    active: AtomicBool,
    /// Another writer committed (the store's change callback set it): re-read before
    /// trusting `active`.
    stale: Arc<AtomicBool>,
    /// The highest store version this unit has looked at (own commits and re-reads);
    /// events up to it have been raised, notifications up to it are ignored.
    seen: Arc<AtomicU64>,
    /// Unit attentions of other writers' commits, for [`crate::LogicalUnit`] to raise.
    pending: Mutex<Vec<(Option<Registration>, Sense)>>,
    /// `pending` is not empty (spares the lock on every command).
    has_pending: AtomicBool,
    /// Serialises this unit's own changes so they do not make each other retry; the
    /// store's compare-and-set still catches changes made elsewhere.
    out: Mutex<()>,
}

/// How a command relates to reservations (SPC-4 5.13.1 table 66, SBC-4 4.17 table 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Allowed under every reservation.
    Always,
    /// Allowed for registrants, and for everyone under write exclusive types.
    Informational,
    /// Reads the medium.
    Read,
    /// Changes the medium or the logical unit.
    Write,
    /// PERSISTENT RESERVE OUT service action (decided by [`PrState::check`]).
    PrOut(PrOutAction),
}

fn access(cmd: &Command) -> Access {
    match cmd {
        Command::Inquiry { .. }
        | Command::ReportLuns { .. }
        | Command::RequestSense { .. }
        | Command::PersistentReserveIn { .. }
        | Command::ReportTargetPortGroups { .. }
        | Command::ReadCapacity10
        | Command::ReadCapacity16 { .. }
        | Command::TestUnitReady
        | Command::Release
        | Command::Reserve => Access::Always,
        Command::ModeSense { .. }
        | Command::ReportSupportedOpcodes { .. }
        | Command::ReportSupportedTmfs { .. }
        | Command::ReceiveCopyResults { .. } => Access::Informational,
        Command::Read { .. }
        | Command::Verify { .. }
        | Command::PreFetch { .. }
        | Command::GetLbaStatus { .. }
        | Command::SynchronizeCache { .. } => Access::Read,
        Command::PersistentReserveOut { action, .. } => Access::PrOut(*action),
        Command::Write { .. }
        | Command::WriteAndVerify { .. }
        | Command::WriteSame { .. }
        | Command::Unmap { .. }
        | Command::CompareAndWrite { .. }
        | Command::FormatUnit { .. }
        | Command::ModeSelect { .. }
        | Command::StartStopUnit { .. }
        | Command::PreventAllowMediumRemoval { .. }
        // SPC-4 5.13.1 table 66: SET TARGET PORT GROUPS conflicts like MODE SELECT
        // (allowed for registrants of a registrants-only or all-registrants
        // reservation, conflict otherwise).
        | Command::SetTargetPortGroups { .. }
        | Command::ExtendedCopy { .. } => Access::Write,
    }
}

/// Commands an SPC-2 reservation lets other nexuses through with (SPC-2 5.5.1 and the
/// informational commands multipath stacks poll).
fn spc2_allowed(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Inquiry { .. }
            | Command::ReportLuns { .. }
            | Command::RequestSense { .. }
            | Command::Release
            | Command::PersistentReserveIn { .. }
            | Command::ReportTargetPortGroups { .. }
            | Command::ReportSupportedOpcodes { .. }
            | Command::ReportSupportedTmfs { .. }
    )
}

impl PrState {
    /// Reservation handling over `store`; registers for its change notifications. A
    /// store that cannot be read now is read again on the next command (until then
    /// commands that need it end with [`STORE_UNAVAILABLE`]).
    pub(crate) fn new(store: Arc<dyn ReservationStore>) -> PrState {
        let (active, version, stale) = match store.load() {
            Ok(v) => (v.state.is_active(), v.version, false),
            Err(_) => (true, 0, true),
        };
        let stale = Arc::new(AtomicBool::new(stale));
        let seen = Arc::new(AtomicU64::new(version));
        {
            let (stale, seen) = (stale.clone(), seen.clone());
            // Runs on the store's notification thread: flag only.
            store.watch(Box::new(move |v: Option<u64>| {
                if v.is_none_or(|v| v > seen.load(Ordering::Acquire)) {
                    stale.store(true, Ordering::Release);
                }
            }));
        }
        PrState {
            store,
            active: AtomicBool::new(active),
            stale,
            seen,
            pending: Mutex::new(Vec::new()),
            has_pending: AtomicBool::new(false),
            out: Mutex::new(()),
        }
    }

    /// The current state, or [`STORE_UNAVAILABLE`].
    pub(crate) fn load(&self) -> Result<Versioned, Fail> {
        self.store
            .load()
            .map_err(|_| Fail::Check(STORE_UNAVAILABLE))
    }

    /// Takes note of `cur`: the events of versions this unit has not seen yet become
    /// pending unit attentions. Each version is claimed once (compare-and-swap on
    /// `seen`), so concurrent observers do not raise an event twice.
    fn observe(&self, cur: &Versioned) {
        let mut seen = self.seen.load(Ordering::Acquire);
        loop {
            if cur.version <= seen {
                return;
            }
            match self
                .seen
                .compare_exchange(seen, cur.version, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        let mut p = self.pending.lock();
        for e in &cur.state.events {
            if e.version > seen && e.version <= cur.version {
                p.push((e.to.clone(), e.sense));
            }
        }
        if !p.is_empty() {
            self.has_pending.store(true, Ordering::Release);
        }
    }

    /// Called before every command: after another writer's commit, re-reads the state
    /// (fast-path flag, events) and returns the unit attentions to raise, each for the
    /// nexuses matching its registration. Nothing to do (two atomic loads) otherwise. A
    /// failed re-read keeps the unit stale and the fast path off, so the reservation
    /// check reads again and answers [`STORE_UNAVAILABLE`] until the store is back.
    pub(crate) fn refresh(&self) -> Vec<(Option<Registration>, Sense)> {
        // A plain load first: the I/O path stays read-only on the shared flag.
        if self.stale.load(Ordering::Acquire) && self.stale.swap(false, Ordering::AcqRel) {
            // Under `out`, so a re-read cannot overwrite the flag of a newer own commit.
            let _g = self.out.lock();
            match self.store.load() {
                Ok(cur) => {
                    self.observe(&cur);
                    self.active.store(cur.state.is_active(), Ordering::Release);
                }
                Err(_) => {
                    self.active.store(true, Ordering::Release);
                    self.stale.store(true, Ordering::Release);
                }
            }
        }
        self.take_pending()
    }

    /// The pending unit attentions (see [`Self::refresh`]).
    pub(crate) fn take_pending(&self) -> Vec<(Option<Registration>, Sense)> {
        if !self.has_pending.load(Ordering::Acquire)
            || !self.has_pending.swap(false, Ordering::AcqRel)
        {
            return Vec::new();
        }
        std::mem::take(&mut *self.pending.lock())
    }

    /// Whether APTPL can be honoured (PTPL_C).
    pub(crate) fn persists(&self) -> bool {
        self.store.persists()
    }

    /// Applies a change: `f` edits a copy of the current state and returns `Ok(Some(r))`
    /// to commit it, `Ok(None)` to leave the state as it is, or a failure. On a
    /// concurrent change `f` runs again on the new state (so whatever it collects must
    /// be built inside it). A state that cannot be made persistent fails with
    /// INSUFFICIENT REGISTRATION RESOURCES (SPC-4 6.16.1: report it rather than
    /// pretending).
    ///
    /// Events `f` logs ([`ReservationState::log_events`]) are stamped with the version
    /// of the commit, for the other units of a shared store; events of foreign commits
    /// met on the way become pending ([`Self::take_pending`]). A store that cannot be
    /// read or written fails with [`STORE_UNAVAILABLE`], nothing changed.
    pub(crate) fn update<R>(
        &self,
        mut f: impl FnMut(&mut ReservationState) -> Result<Option<R>, Fail>,
    ) -> Result<Option<R>, Fail> {
        let _g = self.out.lock();
        let mut cur = self.load()?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            self.observe(&cur);
            let mut new = (*cur.state).clone();
            let Some(r) = f(&mut new)? else {
                return Ok(None);
            };
            new.stamp_events(cur.version.wrapping_add(1));
            let active = new.is_active();
            match self.store.compare_and_set(cur.version, new) {
                Ok(v) => {
                    self.seen.fetch_max(v, Ordering::AcqRel);
                    self.active.store(active, Ordering::Release);
                    return Ok(Some(r));
                }
                Err(StoreError::Conflict(now)) => cur = now,
                Err(StoreError::Persist(_)) => {
                    return Err(Fail::Check(Sense::INSUFFICIENT_REGISTRATION_RESOURCES))
                }
                Err(StoreError::Unavailable(_)) => return Err(Fail::Check(STORE_UNAVAILABLE)),
            }
        }
        Err(Fail::Status(Status::Busy))
    }

    /// Reservation check for a command from `nexus` (SPC-4 5.13.1, SBC-4 4.17).
    pub(crate) fn check(&self, nexus: &Nexus, cmd: &Command) -> ReservationCheck {
        use ReservationCheck::{Allowed, Conflict};
        if !self.active.load(Ordering::Acquire) && !self.stale.load(Ordering::Acquire) {
            return Allowed;
        }
        let Ok(cur) = self.store.load() else {
            // Commands every reservation lets through need no state.
            return if spc2_allowed(cmd) {
                Allowed
            } else {
                ReservationCheck::Unavailable
            };
        };
        let inner = &*cur.state;
        if let Some(h) = &inner.spc2 {
            if h != nexus && !spc2_allowed(cmd) {
                return Conflict;
            }
        }
        let Some(res) = &inner.reservation else {
            return Allowed;
        };
        let registered = inner.registration(nexus).is_some();
        if inner.is_holder(nexus) {
            return Allowed;
        }
        let ty = res.pr_type;
        let class = match access(cmd) {
            Access::Always => return Allowed,
            Access::Informational => {
                return if registered || ty.write_exclusive() {
                    Allowed
                } else {
                    Conflict
                }
            }
            Access::PrOut(a) => {
                return match a {
                    PrOutAction::Register | PrOutAction::RegisterAndIgnore => Allowed,
                    PrOutAction::Clear
                    | PrOutAction::Preempt
                    | PrOutAction::PreemptAndAbort
                    | PrOutAction::Release
                    | PrOutAction::Reserve
                        if registered =>
                    {
                        Allowed
                    }
                    _ => Conflict,
                }
            }
            c => c,
        };
        let write = class == Access::Write;
        // Registrants of registrants-only / all-registrants types have full access;
        // under write exclusive types everybody may read.
        if (ty.registrants_have_access() && registered) || (ty.write_exclusive() && !write) {
            Allowed
        } else {
            Conflict
        }
    }

    /// SPC-2 RESERVE(6)/(10) (SPC-2 7.21; SPC-4 5.13.3 for the interaction with
    /// persistent reservations).
    pub(crate) fn reserve_spc2(&self, nexus: &Nexus) -> Outcome {
        self.update(|new| {
            if new.reservation.is_some() || !new.registrations.is_empty() {
                return Err(Fail::Status(Status::ReservationConflict));
            }
            match &new.spc2 {
                Some(h) if h != nexus => Err(Fail::Status(Status::ReservationConflict)),
                _ => {
                    new.spc2 = Some(nexus.clone());
                    Ok(Some(()))
                }
            }
        })?;
        Ok(Status::Good)
    }

    /// SPC-2 RELEASE(6)/(10): releases our own reservation; anything else is a no-op.
    pub(crate) fn release_spc2(&self, nexus: &Nexus) -> Outcome {
        self.drop_spc2(Some(nexus))?;
        Ok(Status::Good)
    }

    /// Logical unit or target reset: SPC-2 reservations are released, persistent ones
    /// are not (SAM-5 6.3.3, SPC-4 5.13.1). The reset's unit attention `sense` is
    /// logged for every nexus of the other units sharing the store (the gateways of a
    /// group exporting one image): the logical unit is one, whichever gateway the reset
    /// came through. A shared store notifies them before the commit returns, so the
    /// initiator's next command through another gateway already sees it; this unit
    /// raised it itself and ignores its own commit.
    pub(crate) fn reset(&self, sense: Sense) {
        // Nothing persistent changes, so the only failure is a store that keeps
        // changing under us (or is unreachable); the reset then leaves the reservation
        // to the next one, and the other units without the attention.
        let _ = self.update(|new| {
            new.spc2 = None;
            new.log_event_for_all(sense);
            Ok(Some(()))
        });
    }

    /// I_T nexus loss releases an SPC-2 reservation held through it.
    pub(crate) fn nexus_lost(&self, nexus: &Nexus) {
        let _ = self.drop_spc2(Some(nexus));
    }

    /// Drops the SPC-2 reservation if `holder` (any holder for `None`) holds it.
    fn drop_spc2(&self, holder: Option<&Nexus>) -> Result<Option<()>, Fail> {
        self.update(|new| {
            let held = match (&new.spc2, holder) {
                (Some(h), Some(n)) => h == n,
                (Some(_), None) => true,
                (None, _) => false,
            };
            Ok(held.then(|| new.spc2 = None))
        })
    }
}

#[cfg(test)]
mod tests;
