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
//! * [`state`]: the state and its APTPL text form;
//! * [`store`]: the store trait and the in-memory store;
//! * `pr_in`: PERSISTENT RESERVE IN;
//! * `out`: PERSISTENT RESERVE OUT, one function per service action.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cdb::{Command, PrOutAction};
use crate::lu::{Fail, Outcome};
use crate::nexus::Nexus;
use crate::sense::Sense;
use crate::status::Status;

mod out;
mod pr_in;
pub(crate) mod state;
pub(crate) mod store;

pub use state::ReservationState;
pub use store::{MemoryStore, ReservationStore, StoreError, Versioned};

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
}

/// Reservation front of one logical unit: the store plus the fast-path flag.
#[derive(Debug)]
pub(crate) struct PrState {
    store: Arc<dyn ReservationStore>,
    /// Any SPC-2 or persistent reservation exists (fast path for every command).
    active: AtomicBool,
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
    /// Reservation handling over `store`.
    pub(crate) fn new(store: Arc<dyn ReservationStore>) -> PrState {
        let active = store.load().state.is_active();
        PrState {
            store,
            active: AtomicBool::new(active),
            out: Mutex::new(()),
        }
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
    pub(crate) fn update<R>(
        &self,
        mut f: impl FnMut(&mut ReservationState) -> Result<Option<R>, Fail>,
    ) -> Result<Option<R>, Fail> {
        let _g = self.out.lock();
        let mut cur = self.store.load();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut new = (*cur.state).clone();
            let Some(r) = f(&mut new)? else {
                return Ok(None);
            };
            let active = new.is_active();
            match self.store.compare_and_set(cur.version, new) {
                Ok(_) => {
                    self.active.store(active, Ordering::Release);
                    return Ok(Some(r));
                }
                Err(StoreError::Conflict(now)) => cur = now,
                Err(StoreError::Persist(_)) => {
                    return Err(Fail::Check(Sense::INSUFFICIENT_REGISTRATION_RESOURCES))
                }
            }
        }
        Err(Fail::Status(Status::Busy))
    }

    /// Reservation check for a command from `nexus` (SPC-4 5.13.1, SBC-4 4.17).
    pub(crate) fn check(&self, nexus: &Nexus, cmd: &Command) -> ReservationCheck {
        use ReservationCheck::{Allowed, Conflict};
        if !self.active.load(Ordering::Acquire) {
            return Allowed;
        }
        let cur = self.store.load();
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
    /// are not (SAM-5 6.3.3, SPC-4 5.13.1).
    pub(crate) fn reset(&self) {
        // Nothing persistent changes, so the only failure is a store that keeps
        // changing under us; the reset then leaves the reservation to the next one.
        let _ = self.drop_spc2(None);
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
