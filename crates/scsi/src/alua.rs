//! Asymmetric logical unit access for a logical unit exported by several gateways
//! (SPC-4 5.16, implicit ALUA).
//!
//! Each gateway of a group is its own target port group. Exactly one of them may write
//! the shared medium at a time: the holder of an external *ownership* token (for Ceph,
//! the RBD exclusive lock, `rustio_rbd::GatewayImage`). [`GroupAlua`] is the device
//! server's side of that arrangement, independent of where the token lives:
//!
//! * REPORT TARGET PORT GROUPS (SPC-4 6.37) lists every gateway's group: the owner
//!   active/optimized, the others standby or active/non-optimized
//!   ([`AluaGroupConfig::non_owner`]), a gateway taking over *transitioning*.
//! * A command that needs access to the medium ([`needs_access`]) arriving at a
//!   gateway that does not own the unit starts an implicit takeover
//!   ([`Ownership::take_over`], on its own thread) and is answered CHECK CONDITION,
//!   NOT READY, LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION
//!   (04h/0Ah, SPC-4 5.16.2.6) until the takeover ended; initiators retry it.
//! * Takeovers are debounced: a gateway tries at most once per
//!   [`AluaGroupConfig::debounce`], and not within that time after it lost ownership,
//!   so two initiators using different paths cannot bounce the token between gateways
//!   (tcmu-runner issues #341, #356, #420). Inside the window the command gets the
//!   sense of the reported state (standby: 04h/0Bh; active/non-optimized: 04h/0Ah).
//! * Fencing: when a command that needed access fails, the ownership is checked again
//!   ([`Ownership::check`]). A gateway that lost it answers 04h/0Ah for that command,
//!   drops to the non-owner state and recovers its access path
//!   ([`Ownership::recover`], e.g. reopening the image with a new, unfenced client)
//!   before it serves again.
//! * Every completed change of the local group's state raises UNIT ATTENTION,
//!   ASYMMETRIC ACCESS STATE CHANGED (2Ah/06h) on every I_T nexus of the unit
//!   (SPC-4 5.16.2.7), through [`GroupAlua::generation`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cdb::Command;
use crate::sense::{Sense, SenseKey};
use crate::tpg::{AluaState, TargetPortGroup, TargetPortGroupId};

/// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION (04h/0Ah,
/// SPC-4 5.16.2.6): retry, the target port group is changing state.
pub const NOT_READY_ALUA_TRANSITION: Sense = Sense::new(SenseKey::NotReady, 0x04, 0x0a);
/// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE (04h/0Bh,
/// SPC-4 5.16.2.4.4).
pub const NOT_READY_ALUA_STANDBY: Sense = Sense::new(SenseKey::NotReady, 0x04, 0x0b);
/// NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE (04h/0Ch,
/// SPC-4 5.16.2.4.5).
pub const NOT_READY_ALUA_UNAVAILABLE: Sense = Sense::new(SenseKey::NotReady, 0x04, 0x0c);
/// UNIT ATTENTION, ASYMMETRIC ACCESS STATE CHANGED (2Ah/06h, SPC-4 5.16.2.7).
pub const UA_ASYMMETRIC_ACCESS_STATE_CHANGED: Sense =
    Sense::new(SenseKey::UnitAttention, 0x2a, 0x06);

/// Whether `cmd` needs access to the medium, i.e. is refused (or starts a takeover) on
/// a gateway that does not own the unit.
///
/// SPC-4 5.16.2.4.4 lists what a port in standby still processes: INQUIRY, LOG
/// SELECT/SENSE, MODE SELECT/SENSE, REPORT LUNS, RECEIVE/SEND DIAGNOSTIC, REPORT/SET
/// TARGET PORT GROUPS, REQUEST SENSE, PERSISTENT RESERVE IN/OUT (reservations live in
/// the cluster's store, not on the medium) and the echo buffer modes of READ/WRITE
/// BUFFER. rustio also answers TEST UNIT READY, READ CAPACITY, REPORT SUPPORTED
/// OPERATION CODES / TASK MANAGEMENT FUNCTIONS, START STOP UNIT, PREVENT ALLOW MEDIUM
/// REMOVAL and SPC-2 RESERVE/RELEASE there: none touches the medium, and a path checker
/// polling with TEST UNIT READY must never move the ownership.
pub fn needs_access(cmd: &Command) -> bool {
    !matches!(
        cmd,
        Command::TestUnitReady
            | Command::RequestSense { .. }
            | Command::Inquiry { .. }
            | Command::ModeSense { .. }
            | Command::ModeSelect { .. }
            | Command::ReadCapacity10
            | Command::ReadCapacity16 { .. }
            | Command::StartStopUnit { .. }
            | Command::PreventAllowMediumRemoval { .. }
            | Command::ReportLuns { .. }
            | Command::ReportSupportedOpcodes { .. }
            | Command::ReportSupportedTmfs { .. }
            | Command::ReportTargetPortGroups { .. }
            | Command::PersistentReserveIn { .. }
            | Command::PersistentReserveOut { .. }
            | Command::Reserve
            | Command::Release
            | Command::ReceiveCopyResults { .. }
    )
}

/// What [`Ownership::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerCheck {
    /// This gateway holds the ownership token.
    Owner,
    /// It does not (never had it, or it was taken away: fenced).
    NotOwner,
    /// The check itself failed for a reason that says nothing about ownership (the
    /// cluster is slow or unreachable): keep the current state.
    Unknown,
}

/// The token that makes one gateway the writer of a shared logical unit.
///
/// Implementations block for bounded times only (their cluster timeouts); they are
/// called on a command's thread ([`Ownership::check`]) or on a takeover thread.
pub trait Ownership: Send + Sync + fmt::Debug {
    /// Whether this gateway still holds the token.
    fn check(&self) -> OwnerCheck;
    /// Takes the token for target port group `group`: breaks the claim of a holder
    /// that does not give it up and fences that holder (its writes can no longer land),
    /// then records `group` as the owner for the other gateways
    /// ([`Ownership::owner_group`]).
    fn take_over(&self, group: TargetPortGroupId) -> Result<(), String>;
    /// After the token was lost: makes the access path usable again (e.g. reopens the
    /// image with a new, unfenced client), without taking the token.
    fn recover(&self) -> Result<(), String>;
    /// The target port group recorded as owner by the last [`Ownership::take_over`] of
    /// any gateway, if any and if the token is held at all.
    fn owner_group(&self) -> Option<TargetPortGroupId>;
}

/// One gateway's target port group as every gateway of the group knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// TARGET PORT GROUP.
    pub id: TargetPortGroupId,
    /// RELATIVE TARGET PORT IDENTIFIERs of its ports.
    pub ports: Vec<u16>,
    /// PREF bit (SPC-4 6.37): the group the initiator should prefer.
    pub preferred: bool,
}

/// Configuration of [`GroupAlua`] for one logical unit on one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AluaGroupConfig {
    /// This gateway's target port group.
    pub local: TargetPortGroupId,
    /// Every gateway's group, this one included, in the order RTPG reports them.
    pub members: Vec<GroupMember>,
    /// The state reported for groups that do not own the unit: standby (the default)
    /// or active/non-optimized.
    pub non_owner: AluaState,
    /// Least time between two takeover attempts of this gateway, and after it lost
    /// ownership before it tries to take it back.
    pub debounce: Duration,
}

/// Default [`AluaGroupConfig::debounce`].
pub const DEFAULT_TAKEOVER_DEBOUNCE: Duration = Duration::from_secs(5);

/// The local group's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    /// Owner: active/optimized.
    Owner,
    /// Not owner: [`AluaGroupConfig::non_owner`].
    NotOwner,
    /// A takeover runs: transitioning.
    TakingOver,
    /// Ownership was lost and the access path is being recovered: transitioning.
    Fencing,
}

#[derive(Debug)]
struct Inner {
    local: Local,
    /// Last takeover attempt or loss of ownership (debounce).
    last_change: Option<Instant>,
}

/// Implicit ALUA of one logical unit on one gateway of a group (see the module
/// documentation). Attach it with [`crate::LogicalUnit::set_group_alua`].
#[derive(Debug)]
pub struct GroupAlua {
    config: AluaGroupConfig,
    ownership: Arc<dyn Ownership>,
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Bumped on every completed change of the local state (UA 2Ah/06h).
    generation: AtomicU64,
}

impl GroupAlua {
    /// A controller that starts as non-owner unless `ownership` says otherwise.
    pub fn new(config: AluaGroupConfig, ownership: Arc<dyn Ownership>) -> Arc<GroupAlua> {
        let local = if ownership.check() == OwnerCheck::Owner {
            Local::Owner
        } else {
            Local::NotOwner
        };
        Arc::new(GroupAlua {
            config,
            ownership,
            inner: Mutex::new(Inner {
                local,
                last_change: None,
            }),
            changed: Condvar::new(),
            generation: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AluaGroupConfig {
        &self.config
    }

    /// Counts completed state changes of the local group; a unit raises ASYMMETRIC
    /// ACCESS STATE CHANGED when it differs from the value it last saw.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(&self, inner: &mut Inner, local: Local) {
        if inner.local != local {
            inner.local = local;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.changed.notify_all();
    }

    /// The local group's ASYMMETRIC ACCESS STATE now.
    pub fn local_state(&self) -> AluaState {
        self.state_of(self.lock().local)
    }

    fn state_of(&self, local: Local) -> AluaState {
        match local {
            Local::Owner => AluaState::ActiveOptimized,
            Local::NotOwner => self.config.non_owner,
            Local::TakingOver | Local::Fencing => AluaState::Transitioning,
        }
    }

    /// The target port groups for REPORT TARGET PORT GROUPS: this gateway's from its
    /// own state; the others active/optimized if recorded as owner (and this gateway is
    /// not), else the non-owner state. An owner first checks that it still is (another
    /// gateway may have taken over without this one noticing yet): the answer must not
    /// send the initiator to a fenced path.
    pub fn groups(self: &Arc<Self>) -> Vec<TargetPortGroup> {
        if self.lock().local == Local::Owner && self.ownership.check() == OwnerCheck::NotOwner {
            self.fence();
        }
        let local = self.lock().local;
        let owner = match local {
            Local::Owner => Some(self.config.local),
            _ => self.ownership.owner_group(),
        };
        self.config
            .members
            .iter()
            .map(|m| TargetPortGroup {
                id: m.id,
                state: if m.id == self.config.local {
                    self.state_of(local)
                } else if owner == Some(m.id) {
                    AluaState::ActiveOptimized
                } else {
                    self.config.non_owner
                },
                preferred: m.preferred,
                ports: m.ports.clone(),
            })
            .collect()
    }

    /// Admission of a command that [`needs_access`]: `Ok` on the owner; otherwise
    /// starts a takeover (unless debounced or already running) and returns the sense
    /// to answer.
    pub fn admit(self: &Arc<Self>) -> Result<(), Sense> {
        let mut inner = self.lock();
        match inner.local {
            Local::Owner => Ok(()),
            Local::TakingOver | Local::Fencing => Err(NOT_READY_ALUA_TRANSITION),
            Local::NotOwner => {
                let now = Instant::now();
                if inner
                    .last_change
                    .is_some_and(|t| now.saturating_duration_since(t) < self.config.debounce)
                {
                    return Err(self.not_owner_sense());
                }
                inner.last_change = Some(now);
                inner.local = Local::TakingOver;
                drop(inner);
                self.spawn("alua-takeover", |a| {
                    let r = a.ownership.take_over(a.config.local);
                    let mut inner = a.lock();
                    // The ownership implementation logs how the takeover went.
                    if r.is_ok() {
                        a.settle(&mut inner, Local::Owner);
                    } else {
                        inner.local = Local::NotOwner;
                        a.changed.notify_all();
                    }
                });
                Err(NOT_READY_ALUA_TRANSITION)
            }
        }
    }

    /// The sense of a refused command while not owner and not transitioning.
    fn not_owner_sense(&self) -> Sense {
        match self.config.non_owner {
            AluaState::Standby => NOT_READY_ALUA_STANDBY,
            AluaState::Unavailable => NOT_READY_ALUA_UNAVAILABLE,
            _ => NOT_READY_ALUA_TRANSITION,
        }
    }

    /// A command that needed access failed. Returns the sense to answer instead when
    /// the failure is because this gateway lost ownership (it was fenced): the unit
    /// then drops to the non-owner state and recovers its access path first.
    pub fn access_failed(self: &Arc<Self>) -> Option<Sense> {
        if self.lock().local != Local::Owner {
            return Some(NOT_READY_ALUA_TRANSITION);
        }
        if self.ownership.check() != OwnerCheck::NotOwner {
            return None;
        }
        self.fence();
        Some(NOT_READY_ALUA_TRANSITION)
    }

    /// Ownership was lost: transitioning until the access path is recovered, then the
    /// non-owner state (no-op unless currently owner).
    fn fence(self: &Arc<Self>) {
        let mut inner = self.lock();
        if inner.local != Local::Owner {
            return;
        }
        inner.last_change = Some(Instant::now());
        self.settle(&mut inner, Local::Fencing);
        drop(inner);
        self.spawn("alua-recover", |a| {
            // Recovery is retried until it works: serving again without it could
            // write through a fenced client, which fails anyway, or worse.
            let mut delay = Duration::from_millis(200);
            loop {
                if a.ownership.recover().is_ok() {
                    break;
                }
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2).min(Duration::from_secs(10));
            }
            let mut inner = a.lock();
            inner.last_change = Some(Instant::now());
            a.settle(&mut inner, Local::NotOwner);
        });
    }

    /// Runs `f` on its own thread; if no thread can be started, runs it here (bounded
    /// by the ownership's own timeouts).
    fn spawn(self: &Arc<Self>, name: &str, f: fn(&Arc<GroupAlua>)) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || f(&me));
        if spawned.is_err() {
            f(self);
        }
    }

    /// Waits until no takeover or recovery runs (at most `timeout`); `true` if settled.
    pub fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        while matches!(inner.local, Local::TakingOver | Local::Fencing) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl crate::LogicalUnit {
    /// Makes this unit one of several gateways' views of a shared medium: REPORT
    /// TARGET PORT GROUPS answers `alua`'s groups and commands that [`needs_access`]
    /// are admitted only on the owner (see the [`crate::alua`] module). Set once, before
    /// the unit is served; `false` if it was already set.
    pub fn set_group_alua(&self, alua: Arc<GroupAlua>) -> bool {
        self.group_alua.set(alua).is_ok()
    }

    /// The group ALUA controller, if [`Self::set_group_alua`] was called.
    pub fn group_alua(&self) -> Option<&Arc<GroupAlua>> {
        self.group_alua.get()
    }

    /// Raises ASYMMETRIC ACCESS STATE CHANGED on every nexus once per completed change
    /// of the local group's state (SPC-4 5.16.2.7). One atomic load when nothing
    /// changed.
    pub(crate) fn raise_alua_events(&self) {
        let Some(a) = self.group_alua.get() else {
            return;
        };
        let now = a.generation();
        let seen = self.alua_seen.load(Ordering::Acquire);
        if now != seen
            && self
                .alua_seen
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.ua.raise_all(UA_ASYMMETRIC_ACCESS_STATE_CHANGED, None);
        }
    }

    /// ALUA admission of `cmd` (after reservations): only the owner serves commands
    /// that need the medium.
    pub(crate) fn alua_admit(&self, cmd: &Command) -> Result<(), Sense> {
        match self.group_alua.get() {
            Some(a) if needs_access(cmd) => a.admit(),
            _ => Ok(()),
        }
    }

    /// A command that was admitted failed with `fail`: if ownership was lost meanwhile,
    /// the sense to answer instead (fencing, SPC-4 5.16.2.6). Only failures the medium
    /// reported (BUSY, NOT READY, MEDIUM/HARDWARE ERROR, ABORTED COMMAND) can mean that;
    /// a malformed command does not cost an ownership check.
    pub(crate) fn alua_access_failed(
        &self,
        cmd_needed_access: bool,
        fail: &crate::lu::Fail,
    ) -> Option<Sense> {
        use crate::lu::Fail;
        let from_medium = match fail {
            Fail::Status(s) => *s == crate::Status::Busy,
            Fail::Check(s) => matches!(
                s.key,
                SenseKey::NotReady
                    | SenseKey::MediumError
                    | SenseKey::HardwareError
                    | SenseKey::AbortedCommand
            ),
        };
        match self.group_alua.get() {
            Some(a) if cmd_needed_access && from_medium => a.access_failed(),
            _ => None,
        }
    }

    /// The groups REPORT TARGET PORT GROUPS describes when a controller is set.
    pub(crate) fn alua_groups(&self) -> Option<Vec<TargetPortGroup>> {
        self.group_alua.get().map(|a| a.groups())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32};

    /// An in-memory token: `held` says whether this gateway holds it.
    #[derive(Debug, Default)]
    struct Token {
        held: AtomicBool,
        takeovers: AtomicU32,
        recoveries: AtomicU32,
        owner: Mutex<Option<TargetPortGroupId>>,
        fail_takeover: AtomicBool,
    }

    impl Ownership for Token {
        fn check(&self) -> OwnerCheck {
            if self.held.load(Ordering::SeqCst) {
                OwnerCheck::Owner
            } else {
                OwnerCheck::NotOwner
            }
        }
        fn take_over(&self, group: TargetPortGroupId) -> Result<(), String> {
            self.takeovers.fetch_add(1, Ordering::SeqCst);
            if self.fail_takeover.load(Ordering::SeqCst) {
                return Err("refused".into());
            }
            self.held.store(true, Ordering::SeqCst);
            *self.owner.lock().unwrap() = Some(group);
            Ok(())
        }
        fn recover(&self) -> Result<(), String> {
            self.recoveries.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn owner_group(&self) -> Option<TargetPortGroupId> {
            *self.owner.lock().unwrap()
        }
    }

    fn config(non_owner: AluaState, debounce: Duration) -> AluaGroupConfig {
        AluaGroupConfig {
            local: TargetPortGroupId(2),
            members: vec![
                GroupMember {
                    id: TargetPortGroupId(1),
                    ports: vec![1],
                    preferred: true,
                },
                GroupMember {
                    id: TargetPortGroupId(2),
                    ports: vec![2],
                    preferred: false,
                },
            ],
            non_owner,
            debounce,
        }
    }

    fn states(a: &Arc<GroupAlua>) -> Vec<(u16, AluaState)> {
        a.groups().iter().map(|g| (g.id.0, g.state)).collect()
    }

    /// SPC-4 5.16.2.4.4: what standby answers; data access needs the owner.
    #[test]
    fn commands_needing_access() {
        assert!(!needs_access(&Command::TestUnitReady));
        assert!(!needs_access(&Command::ReportTargetPortGroups {
            extended: false,
            alloc: 8
        }));
        assert!(!needs_access(&Command::ReadCapacity10));
        assert!(needs_access(
            &crate::cdb::parse(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap()
        ));
        assert!(needs_access(
            &crate::cdb::parse(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap()
        ));
        assert!(needs_access(
            &crate::cdb::parse(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap()
        ));
    }

    #[test]
    fn sense_codes_follow_spc4() {
        assert_eq!(NOT_READY_ALUA_TRANSITION.to_fixed()[2], 0x02);
        assert_eq!(NOT_READY_ALUA_TRANSITION.to_fixed()[12..14], [0x04, 0x0a]);
        assert_eq!(NOT_READY_ALUA_STANDBY.to_fixed()[12..14], [0x04, 0x0b]);
        assert_eq!(UA_ASYMMETRIC_ACCESS_STATE_CHANGED.to_fixed()[2], 0x06);
        assert_eq!(
            UA_ASYMMETRIC_ACCESS_STATE_CHANGED.to_fixed()[12..14],
            [0x2a, 0x06]
        );
    }

    /// A write on the non-owner: 04h/0Ah while the takeover runs, then access; RTPG
    /// flips from (other AO, local standby) to (other standby, local AO); one UA
    /// generation per completed change.
    #[test]
    fn implicit_takeover_on_access() {
        let token = Arc::new(Token::default());
        *token.owner.lock().unwrap() = Some(TargetPortGroupId(1));
        let a = GroupAlua::new(config(AluaState::Standby, Duration::ZERO), token.clone());
        assert_eq!(
            states(&a),
            [(1, AluaState::ActiveOptimized), (2, AluaState::Standby)]
        );
        assert_eq!(a.generation(), 0);
        assert_eq!(a.admit(), Err(NOT_READY_ALUA_TRANSITION));
        assert!(a.wait_settled(Duration::from_secs(5)));
        assert_eq!(a.admit(), Ok(()));
        assert_eq!(token.takeovers.load(Ordering::SeqCst), 1);
        assert_eq!(a.generation(), 1);
        assert_eq!(
            states(&a),
            [(1, AluaState::Standby), (2, AluaState::ActiveOptimized)]
        );
        // The PREF bits are the configured ones.
        assert!(a.groups()[0].preferred && !a.groups()[1].preferred);
    }

    /// tcmu-runner #341/#356/#420: no second attempt inside the debounce window; the
    /// command gets the standby sense (04h/0Bh) instead.
    #[test]
    fn takeovers_are_debounced() {
        let token = Arc::new(Token::default());
        token.fail_takeover.store(true, Ordering::SeqCst);
        let a = GroupAlua::new(
            config(AluaState::Standby, Duration::from_secs(60)),
            token.clone(),
        );
        assert_eq!(a.admit(), Err(NOT_READY_ALUA_TRANSITION));
        assert!(a.wait_settled(Duration::from_secs(5)));
        assert_eq!(a.admit(), Err(NOT_READY_ALUA_STANDBY));
        assert_eq!(a.admit(), Err(NOT_READY_ALUA_STANDBY));
        assert_eq!(token.takeovers.load(Ordering::SeqCst), 1);
        // A failed takeover changes nothing an initiator could see.
        assert_eq!(a.generation(), 0);
        assert_eq!(a.local_state(), AluaState::Standby);
    }

    /// Fencing: a failed access after the token went elsewhere answers 04h/0Ah, the
    /// gateway recovers and reports the non-owner state (active/non-optimized here).
    #[test]
    fn lost_ownership_fences_and_recovers() {
        let token = Arc::new(Token::default());
        token.held.store(true, Ordering::SeqCst);
        let a = GroupAlua::new(
            config(AluaState::ActiveNonOptimized, Duration::from_secs(60)),
            token.clone(),
        );
        assert_eq!(a.local_state(), AluaState::ActiveOptimized);
        assert_eq!(a.admit(), Ok(()));
        // A failure while still owner is not fencing (e.g. a cluster timeout).
        assert_eq!(a.access_failed(), None);
        token.held.store(false, Ordering::SeqCst);
        *token.owner.lock().unwrap() = Some(TargetPortGroupId(1));
        assert_eq!(a.access_failed(), Some(NOT_READY_ALUA_TRANSITION));
        assert!(a.wait_settled(Duration::from_secs(5)));
        assert_eq!(token.recoveries.load(Ordering::SeqCst), 1);
        assert_eq!(a.local_state(), AluaState::ActiveNonOptimized);
        assert_eq!(a.generation(), 2);
        assert_eq!(
            states(&a),
            [
                (1, AluaState::ActiveOptimized),
                (2, AluaState::ActiveNonOptimized)
            ]
        );
        // Debounced: no immediate takeover back.
        assert_eq!(a.admit(), Err(NOT_READY_ALUA_TRANSITION));
        assert_eq!(token.takeovers.load(Ordering::SeqCst), 0);
    }

    /// An owner whose token was taken without it noticing must not keep reporting
    /// active/optimized: REPORT TARGET PORT GROUPS checks, fences and recovers.
    #[test]
    fn rtpg_notices_lost_ownership() {
        let token = Arc::new(Token::default());
        token.held.store(true, Ordering::SeqCst);
        let a = GroupAlua::new(
            config(AluaState::Standby, Duration::from_secs(60)),
            token.clone(),
        );
        assert_eq!(
            states(&a),
            [(1, AluaState::Standby), (2, AluaState::ActiveOptimized)]
        );
        token.held.store(false, Ordering::SeqCst);
        *token.owner.lock().unwrap() = Some(TargetPortGroupId(1));
        let during = states(&a);
        assert_eq!(during[0], (1, AluaState::ActiveOptimized));
        assert!(matches!(
            during[1].1,
            AluaState::Transitioning | AluaState::Standby
        ));
        assert!(a.wait_settled(Duration::from_secs(5)));
        assert_eq!(
            states(&a),
            [(1, AluaState::ActiveOptimized), (2, AluaState::Standby)]
        );
        assert_eq!(token.recoveries.load(Ordering::SeqCst), 1);
    }

    /// Through the logical unit: RTPG lists both gateways' groups (SPC-4 6.37), a
    /// WRITE on the non-owner answers 04h/0Ah and starts the takeover, the next command
    /// gets ASYMMETRIC ACCESS STATE CHANGED (2Ah/06h), then the WRITE is GOOD; TEST
    /// UNIT READY never moves the ownership.
    #[test]
    fn logical_unit_takes_over_on_write() {
        let h = crate::tests::H::new();
        let token = Arc::new(Token::default());
        *token.owner.lock().unwrap() = Some(TargetPortGroupId(1));
        assert!(h.lu.set_group_alua(GroupAlua::new(
            config(AluaState::Standby, Duration::ZERO),
            token.clone()
        )));
        let rtpg = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let d = h.good(&rtpg, &[]);
        assert_eq!(&d[..4], &[0, 0, 0, 24]);
        assert_eq!(&d[4..8], &[0x80, 0x8f, 0, 1]); // group 1: PREF, active/optimized
        assert_eq!(&d[16..20], &[0x02, 0x8f, 0, 2]); // group 2: standby
        assert_eq!(h.good(&[0, 0, 0, 0, 0, 0], &[]), Vec::<u8>::new());
        assert_eq!(token.takeovers.load(Ordering::SeqCst), 0);
        let write = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let data = vec![0xb1; crate::tests::BS as usize];
        assert_eq!(h.check(&write, &data), NOT_READY_ALUA_TRANSITION);
        assert!(h
            .lu
            .group_alua()
            .unwrap()
            .wait_settled(Duration::from_secs(5)));
        assert_eq!(h.check(&write, &data), UA_ASYMMETRIC_ACCESS_STATE_CHANGED);
        h.good(&write, &data);
        let d = h.good(&rtpg, &[]);
        assert_eq!(d[4] & 0x0f, 0x2);
        assert_eq!(d[16] & 0x0f, 0x0);
    }

    /// A malformed command on the owner stays what it is (ILLEGAL REQUEST, LBA OUT OF
    /// RANGE) and does not fence, even if the token is gone: only failures reported by
    /// the medium make the gateway re-check its ownership.
    #[test]
    fn illegal_requests_do_not_fence() {
        let h = crate::tests::H::new();
        let token = Arc::new(Token::default());
        token.held.store(true, Ordering::SeqCst);
        assert!(h.lu.set_group_alua(GroupAlua::new(
            config(AluaState::Standby, Duration::ZERO),
            token.clone()
        )));
        token.held.store(false, Ordering::SeqCst);
        let past_end = [0x2a, 0, 0xff, 0xff, 0xff, 0xf0, 0, 0, 1, 0];
        let data = vec![0; crate::tests::BS as usize];
        assert_eq!(h.check(&past_end, &data), Sense::LBA_OUT_OF_RANGE);
        assert_eq!(
            h.lu.group_alua().unwrap().local_state(),
            AluaState::ActiveOptimized
        );
        assert_eq!(token.recoveries.load(Ordering::SeqCst), 0);
    }
}
