//! Asymmetric logical unit access for a logical unit exported by several gateways
//! (SPC-4 5.16, implicit and explicit ALUA).
//!
//! Each gateway of a group is its own target port group. Exactly one of them may write
//! the shared medium at a time: the holder of an external *ownership* token (for Ceph,
//! the RBD exclusive lock, `rustio_rbd::GatewayImage`). [`GroupAlua`] is the device
//! server's side of that arrangement, independent of where the token lives:
//!
//! * REPORT TARGET PORT GROUPS (SPC-4 6.37) lists every gateway's group: the owner
//!   active/optimized, the others standby or active/non-optimized
//!   ([`AluaGroupConfig::non_owner`]), a gateway taking over or handing over
//!   *transitioning*.
//! * **Standby non-owners.** A command that needs access to the medium
//!   ([`needs_access`]) arriving at a gateway that does not own the unit starts an
//!   implicit takeover ([`Ownership::take_over`], on its own thread) and is answered
//!   CHECK CONDITION, NOT READY, LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE
//!   TRANSITION (04h/0Ah, SPC-4 5.16.2.6) until the takeover ended; initiators retry it.
//! * **Active/non-optimized non-owners** are accessible (SPC-4 5.16.2.4.3), only
//!   slower: commands that read but do not modify the medium run there without moving
//!   the token ([`modifies_medium`]); a command that modifies it takes over
//!   *synchronously*: it waits (at most [`AluaGroupConfig::sync_bound`]) for the
//!   takeover and then runs, or gets 04h/0Ah when the bound passed.
//! * **Cooperative handover.** A takeover first asks the current holder to give the
//!   token up and waits at most [`AluaGroupConfig::handover_timeout`]; only a holder
//!   that did not (dead, paused, partitioned) has its claim broken and is fenced. The
//!   holder's side is [`GroupAlua::release_requested`]: it stops admitting commands
//!   that need the medium (transitioning), releases the token ([`Ownership::release`],
//!   which completes the writes in flight) and settles to the non-owner state without
//!   fencing or recovering anything.
//! * Takeovers are debounced: a gateway tries at most once per
//!   [`AluaGroupConfig::debounce`], and not within that time after it lost or gave up
//!   ownership, so two initiators using different paths cannot bounce the token between
//!   gateways (tcmu-runner issues #341, #356, #420). Inside the window a standby
//!   gateway answers the command with the sense of the reported state (04h/0Bh); an
//!   active/non-optimized one delays the takeover to the end of the window when that is
//!   within the bound, else answers 04h/0Ah.
//! * **Explicit ALUA.** SET TARGET PORT GROUPS (SPC-4 6.36) moves the local group to
//!   active/optimized (a synchronous takeover) or gives ownership up
//!   ([`crate::LogicalUnit`]'s handler at the end of this module).
//! * Fencing: when a command that needed access fails, the ownership is checked again
//!   ([`Ownership::check`]). A gateway that lost it answers 04h/0Ah for that command,
//!   drops to the non-owner state and recovers its access path
//!   ([`Ownership::recover`], e.g. reopening the image with a new, unfenced client)
//!   before it serves again.
//! * Every completed change of the local group's state raises UNIT ATTENTION,
//!   ASYMMETRIC ACCESS STATE CHANGED (2Ah/06h) on every I_T nexus of the unit
//!   (SPC-4 5.16.2.7), through [`GroupAlua::generation`]; after SET TARGET PORT GROUPS
//!   on every I_T nexus but the one it came from (SPC-4 6.36).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
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
            | Command::SetTargetPortGroups { .. }
            | Command::PersistentReserveIn { .. }
            | Command::PersistentReserveOut { .. }
            | Command::Reserve
            | Command::Release
            | Command::ReceiveCopyResults { .. }
    )
}

/// Whether a command that [`needs_access`] modifies the medium, so that only the owner
/// may run it. The engine's own classification ([`Command::writes_medium`], which also
/// drives write protection) decides: READ, VERIFY, PRE-FETCH, GET LBA STATUS and
/// SYNCHRONIZE CACHE do not modify it and run on an active/non-optimized non-owner.
pub fn modifies_medium(cmd: &Command) -> bool {
    cmd.writes_medium()
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
/// called on a command's thread ([`Ownership::check`]), on a takeover thread, or on the
/// implementation's own thread ([`Ownership::release`] through
/// [`GroupAlua::release_requested`]).
pub trait Ownership: Send + Sync + fmt::Debug {
    /// Whether this gateway still holds the token.
    fn check(&self) -> OwnerCheck;
    /// Takes the token for target port group `group`. First asks the holder, if any,
    /// to hand it over (the holder's side is [`GroupAlua::release_requested`]) and
    /// waits at most `handover_timeout` for it; a holder that did not give it up by
    /// then has its claim broken and is fenced (its writes can no longer land). Then
    /// records `group` as the owner for the other gateways ([`Ownership::owner_group`]).
    fn take_over(&self, group: TargetPortGroupId, handover_timeout: Duration)
        -> Result<(), String>;
    /// Gives the token up cooperatively (another gateway asked, or SET TARGET PORT
    /// GROUPS): completes the writes in flight, then releases; the access path stays
    /// usable (nothing is fenced, reads still work).
    fn release(&self) -> Result<(), String>;
    /// After the token was lost: makes the access path usable again (e.g. reopens the
    /// image with a new, unfenced client), without taking the token.
    fn recover(&self) -> Result<(), String>;
    /// The target port group recorded as owner by the last [`Ownership::take_over`] of
    /// any gateway, if any and if the token is held at all.
    fn owner_group(&self) -> Option<TargetPortGroupId>;
    /// Called once by [`GroupAlua::new`]: where to deliver another gateway's request
    /// to hand the token over ([`GroupAlua::release_requested`], called on the
    /// implementation's own thread, never on a cluster library callback). The default
    /// ignores requests (the requester then breaks the claim after its timeout).
    fn attach(&self, alua: Weak<GroupAlua>) {
        let _ = alua;
    }
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
    /// Least time between two takeover attempts of this gateway, and after it lost or
    /// gave up ownership before it tries to take it back.
    pub debounce: Duration,
    /// How long a takeover waits for the current owner to hand the token over before
    /// it breaks the owner's claim ([`DEFAULT_HANDOVER_TIMEOUT`]).
    pub handover_timeout: Duration,
}

/// Default [`AluaGroupConfig::debounce`].
pub const DEFAULT_TAKEOVER_DEBOUNCE: Duration = Duration::from_secs(5);

/// Default [`AluaGroupConfig::handover_timeout`]: a live owner releases within
/// milliseconds (one flush of the writes in flight), so 3 s only matter for an owner
/// that cannot answer; it stays well below initiators' command timeouts (Linux 30 s).
pub const DEFAULT_HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);

/// What a synchronous takeover may take beyond [`AluaGroupConfig::handover_timeout`]:
/// breaking the lock (blocklisting the owner) and acquiring it.
pub const SYNC_TAKEOVER_MARGIN: Duration = Duration::from_secs(5);

impl AluaGroupConfig {
    /// How long a command waits for a synchronous takeover (active/non-optimized
    /// non-owner, SET TARGET PORT GROUPS): [`Self::handover_timeout`] plus
    /// [`SYNC_TAKEOVER_MARGIN`].
    pub fn sync_bound(&self) -> Duration {
        self.handover_timeout.saturating_add(SYNC_TAKEOVER_MARGIN)
    }
}

/// The local group's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    /// Owner: active/optimized.
    Owner,
    /// Not owner: [`AluaGroupConfig::non_owner`].
    NotOwner,
    /// A takeover runs: transitioning.
    TakingOver,
    /// The token is being handed over to another gateway (or given up by SET TARGET
    /// PORT GROUPS): transitioning.
    Releasing,
    /// Ownership was lost and the access path is being recovered: transitioning.
    Fencing,
}

#[derive(Debug)]
struct Inner {
    local: Local,
    /// Last takeover attempt or loss of ownership (debounce).
    last_change: Option<Instant>,
    /// Counts failed takeover attempts (a waiter sees that the attempt it waited for
    /// failed; one that succeeded and was handed over again since is simply retried).
    failed_attempts: u64,
    /// Commands that modify the medium running on the owner ([`GroupAlua::begin_write`]):
    /// a release waits for them, so a command whose write comes after a read (COMPARE
    /// AND WRITE) is not cut in two by a handover.
    writers: u32,
    /// When this gateway last handed the token over on request: it does not take it
    /// back within [`HANDOVER_GRACE`], so the requester gets it first.
    released_at: Option<Instant>,
}

/// After handing the token over on request, the time a gateway leaves the requester to
/// take it (it acquires right after the answer, a few milliseconds) before its own
/// waiting writes may ask for it back.
pub const HANDOVER_GRACE: Duration = Duration::from_millis(20);

/// ALUA of one logical unit on one gateway of a group (see the module documentation).
/// Attach it with [`crate::LogicalUnit::set_group_alua`].
#[derive(Debug)]
pub struct GroupAlua {
    config: AluaGroupConfig,
    ownership: Arc<dyn Ownership>,
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Bumped on every completed change of the local state (UA 2Ah/06h).
    generation: AtomicU64,
    /// Bumped on every change of the local state machine, reported or not (a handover
    /// in active/non-optimized mode changes no reported state): whether the token moved
    /// while a command ran.
    moves: AtomicU64,
    /// Set by [`GroupAlua::stop`]: no new background work; recovery gives up.
    stopping: AtomicBool,
    /// Takeover and recovery threads started and not yet joined.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl GroupAlua {
    /// A controller that starts as non-owner unless `ownership` says otherwise; it
    /// registers with `ownership` for handover requests ([`Ownership::attach`]).
    pub fn new(config: AluaGroupConfig, ownership: Arc<dyn Ownership>) -> Arc<GroupAlua> {
        let local = if ownership.check() == OwnerCheck::Owner {
            Local::Owner
        } else {
            Local::NotOwner
        };
        let a = Arc::new(GroupAlua {
            config,
            ownership,
            inner: Mutex::new(Inner {
                local,
                last_change: None,
                failed_attempts: 0,
                writers: 0,
                released_at: None,
            }),
            changed: Condvar::new(),
            generation: AtomicU64::new(0),
            moves: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        a.ownership.attach(Arc::downgrade(&a));
        a
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

    /// Counts every change of the local state, also those that change no reported
    /// state (see [`Self::generation`]).
    pub(crate) fn moves(&self) -> u64 {
        self.moves.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_until<'a>(
        &self,
        inner: std::sync::MutexGuard<'a, Inner>,
        until: Instant,
    ) -> std::sync::MutexGuard<'a, Inner> {
        let left = until.saturating_duration_since(Instant::now());
        self.changed
            .wait_timeout(inner, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Moves the local state machine to `local`; a change of the *reported* state
    /// raises ASYMMETRIC ACCESS STATE CHANGED (SPC-4 5.16.2.7) through the generation.
    fn settle(&self, inner: &mut Inner, local: Local) {
        if inner.local != local {
            let before = self.state_of(inner.local);
            inner.local = local;
            self.moves.fetch_add(1, Ordering::AcqRel);
            if self.state_of(local) != before {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.changed.notify_all();
    }

    /// The local group's ASYMMETRIC ACCESS STATE now.
    pub fn local_state(&self) -> AluaState {
        self.state_of(self.lock().local)
    }

    fn state_of(&self, local: Local) -> AluaState {
        if self.non_owner_accessible() {
            // Every gateway serves I/O in this mode, so the states say which path to
            // prefer (the PREF group active/optimized, the others active/non-optimized)
            // and stay put while the lock moves underneath on demand: reporting the
            // lock's position would change the states, and raise 2Ah/06h on every
            // nexus, each time an initiator writes through another path. Only a
            // gateway recovering from a lost lock cannot serve.
            return match local {
                Local::Fencing => AluaState::Transitioning,
                _ => self.preferred_state(self.config.local),
            };
        }
        match local {
            Local::Owner => AluaState::ActiveOptimized,
            Local::NotOwner => self.config.non_owner,
            Local::TakingOver | Local::Releasing | Local::Fencing => AluaState::Transitioning,
        }
    }

    /// Whether this gateway owns the unit now (active/optimized).
    pub fn is_owner(&self) -> bool {
        self.lock().local == Local::Owner
    }

    fn non_owner_accessible(&self) -> bool {
        self.config.non_owner == AluaState::ActiveNonOptimized
    }

    /// With active/non-optimized non-owners: the fixed state of group `id`.
    fn preferred_state(&self, id: TargetPortGroupId) -> AluaState {
        let preferred = self
            .config
            .members
            .iter()
            .any(|m| m.id == id && m.preferred);
        if preferred {
            AluaState::ActiveOptimized
        } else {
            AluaState::ActiveNonOptimized
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
                } else if self.non_owner_accessible() {
                    self.preferred_state(m.id)
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

    /// Admission of a command that [`needs_access`] and [`modifies_medium`]: `Ok` on
    /// the owner. Otherwise, standby: starts a takeover (unless debounced or already
    /// running) and returns the sense to answer; active/non-optimized: takes over
    /// synchronously (see [`Self::take_over_sync`]).
    pub fn admit(self: &Arc<Self>) -> Result<(), Sense> {
        if self.non_owner_accessible() {
            return self.take_over_sync();
        }
        let mut inner = self.lock();
        match inner.local {
            Local::Owner => Ok(()),
            Local::TakingOver | Local::Releasing | Local::Fencing => Err(NOT_READY_ALUA_TRANSITION),
            Local::NotOwner => {
                let now = Instant::now();
                if inner
                    .last_change
                    .is_some_and(|t| now.saturating_duration_since(t) < self.config.debounce)
                {
                    return Err(self.not_owner_sense());
                }
                self.start_takeover(&mut inner, now);
                drop(inner);
                Err(NOT_READY_ALUA_TRANSITION)
            }
        }
    }

    /// Admission of a command that [`needs_access`] but does not [`modifies_medium`]:
    /// `Ok` on the owner and, in the active/non-optimized non-owner state, on a
    /// non-owner too, without moving the token. That is safe because the owner
    /// acknowledges a write only once it is on the OSDs (`rbd_cache` is off in the RBD
    /// engine), so a read through any gateway sees every acknowledged write. Standby
    /// non-owners treat it like [`Self::admit`].
    pub fn admit_read(self: &Arc<Self>) -> Result<(), Sense> {
        if !self.non_owner_accessible() {
            return self.admit();
        }
        match self.lock().local {
            // Releasing: reads need no token either, while the owner hands it over.
            Local::Owner | Local::NotOwner | Local::TakingOver | Local::Releasing => Ok(()),
            // Fencing: the access path is dead until recovered.
            Local::Fencing => Err(NOT_READY_ALUA_TRANSITION),
        }
    }

    /// Marks a takeover as running and starts it on its own thread.
    fn start_takeover(self: &Arc<Self>, inner: &mut Inner, now: Instant) {
        inner.last_change = Some(now);
        inner.local = Local::TakingOver;
        self.spawn("alua-takeover", |a| {
            let r = a
                .ownership
                .take_over(a.config.local, a.config.handover_timeout);
            let mut inner = a.lock();
            // The ownership implementation logs how the takeover went.
            if r.is_ok() {
                a.settle(&mut inner, Local::Owner);
            } else {
                inner.failed_attempts = inner.failed_attempts.wrapping_add(1);
                inner.local = Local::NotOwner;
                a.changed.notify_all();
            }
        });
    }

    /// A synchronous takeover: returns `Ok` once this gateway owns the unit, starting
    /// the takeover if none runs. Waits at most [`AluaGroupConfig::sync_bound`]; the
    /// debounce window delays the start when it ends within that bound. NOT READY,
    /// ASYMMETRIC ACCESS STATE TRANSITION (04h/0Ah) when the bound passes, the attempt
    /// failed, or the token is being released or recovered.
    pub fn take_over_sync(self: &Arc<Self>) -> Result<(), Sense> {
        let deadline = Instant::now() + self.config.sync_bound();
        let mut inner = self.lock();
        let failed = inner.failed_attempts;
        loop {
            let now = Instant::now();
            match inner.local {
                Local::Owner => return Ok(()),
                Local::Fencing => return Err(NOT_READY_ALUA_TRANSITION),
                // A release (another gateway asked for the token) ends within the
                // handover timeout: wait for it, then take the token back.
                Local::TakingOver | Local::Releasing => {}
                Local::NotOwner => {
                    if inner.failed_attempts != failed {
                        // The attempt this command waited for failed.
                        return Err(NOT_READY_ALUA_TRANSITION);
                    }
                    let ready = inner
                        .last_change
                        .map_or(now, |t| t + self.config.debounce)
                        .max(inner.released_at.map_or(now, |t| t + HANDOVER_GRACE));
                    if ready <= now {
                        self.start_takeover(&mut inner, now);
                    } else if ready > deadline {
                        return Err(NOT_READY_ALUA_TRANSITION);
                    } else {
                        inner = self.wait_until(inner, ready);
                        continue;
                    }
                }
            }
            if now >= deadline {
                return Err(NOT_READY_ALUA_TRANSITION);
            }
            inner = self.wait_until(inner, deadline);
        }
    }

    /// Starts a command that modifies the medium, once admitted ([`Self::admit`]): it
    /// counts as running on the owner until [`Self::end_write`], and a release waits
    /// for it. If a release slipped in since the admission, an active/non-optimized
    /// gateway takes the token back first (bounded, as [`Self::take_over_sync`]); a
    /// standby one answers 04h/0Ah.
    pub fn begin_write(self: &Arc<Self>) -> Result<(), Sense> {
        // A handful of rounds: the token moving away again each time means another
        // gateway keeps asking, and the initiator had better retry.
        for _ in 0..4 {
            {
                let mut inner = self.lock();
                if inner.local == Local::Owner {
                    inner.writers = inner.writers.saturating_add(1);
                    return Ok(());
                }
            }
            if !self.non_owner_accessible() {
                return Err(NOT_READY_ALUA_TRANSITION);
            }
            self.take_over_sync()?;
        }
        Err(NOT_READY_ALUA_TRANSITION)
    }

    /// Ends a command [`Self::begin_write`] started.
    pub fn end_write(&self) {
        let mut inner = self.lock();
        inner.writers = inner.writers.saturating_sub(1);
        drop(inner);
        self.changed.notify_all();
    }

    /// The owner's side of a cooperative handover: another gateway asked for the token
    /// (the implementation logs which), or SET TARGET PORT GROUPS gave it up. Stops
    /// admitting commands that need the medium (transitioning), releases the token
    /// ([`Ownership::release`]; writes in flight complete first, or fail retryably and
    /// are answered 04h/0Ah, never acknowledged) and settles to the non-owner state,
    /// without fencing or recovering. A takeover still running is waited for (at most
    /// half the handover timeout, so the requester hears back in time) and then handed
    /// over. Returns whether this gateway gave the token up; `false` when it did not
    /// own it. Blocks: call it on the implementation's own thread.
    pub fn release_requested(self: &Arc<Self>) -> bool {
        let deadline = Instant::now() + self.config.handover_timeout / 2;
        let mut inner = self.lock();
        while inner.local == Local::TakingOver && Instant::now() < deadline {
            inner = self.wait_until(inner, deadline);
        }
        if inner.local != Local::Owner {
            return false;
        }
        inner.last_change = Some(Instant::now());
        self.settle(&mut inner, Local::Releasing);
        // Let the commands that modify the medium finish first (no new one starts
        // while releasing); one still running at half the handover timeout fails
        // retryably when librbd refuses its write (04h/0Ah, never acknowledged).
        while inner.writers > 0 && Instant::now() < deadline {
            inner = self.wait_until(inner, deadline);
        }
        drop(inner);
        // The ownership implementation logs the release and its duration.
        let r = self.ownership.release();
        let mut inner = self.lock();
        inner.last_change = Some(Instant::now());
        if r.is_ok() {
            inner.released_at = Some(Instant::now());
            self.settle(&mut inner, Local::NotOwner);
            return true;
        }
        // Whether the token is still ours is unknown: the fencing path finds out
        // (check, and recover if it is gone).
        self.settle(&mut inner, Local::Owner);
        drop(inner);
        self.fence_if_lost();
        false
    }

    /// The sense of a refused command while not owner and not transitioning.
    fn not_owner_sense(&self) -> Sense {
        match self.config.non_owner {
            AluaState::Standby => NOT_READY_ALUA_STANDBY,
            AluaState::Unavailable => NOT_READY_ALUA_UNAVAILABLE,
            _ => NOT_READY_ALUA_TRANSITION,
        }
    }

    /// A command that needed access and modifies the medium failed. Returns the sense
    /// to answer instead when the failure is because this gateway lost ownership (it
    /// was fenced) or is handing it over (librbd refuses the writes of a released lock
    /// with EROFS; they were never acknowledged): the unit then drops to the non-owner
    /// state and, when fenced, recovers its access path first.
    pub fn access_failed(self: &Arc<Self>) -> Option<Sense> {
        if self.lock().local != Local::Owner {
            return Some(NOT_READY_ALUA_TRANSITION);
        }
        if self.fence_if_lost() {
            Some(NOT_READY_ALUA_TRANSITION)
        } else {
            None
        }
    }

    /// [`Self::access_failed`] for a command that only reads the medium: on an
    /// active/non-optimized non-owner, where it ran without the token, its failure is
    /// the medium's and is reported as such (`None`).
    pub fn read_failed(self: &Arc<Self>) -> Option<Sense> {
        if self.non_owner_accessible() && self.lock().local == Local::NotOwner {
            return None;
        }
        self.access_failed()
    }

    /// Checks the token; fences when it is gone. Returns whether it was gone.
    fn fence_if_lost(self: &Arc<Self>) -> bool {
        if self.ownership.check() != OwnerCheck::NotOwner {
            return false;
        }
        self.fence();
        true
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
                if !a.pause_unless_stopping(delay) {
                    // Shutting down: stay fenced (nothing is served any more).
                    return;
                }
                delay = delay.saturating_mul(2).min(Duration::from_secs(10));
            }
            let mut inner = a.lock();
            inner.last_change = Some(Instant::now());
            a.settle(&mut inner, Local::NotOwner);
        });
    }

    /// Runs `f` on its own thread, kept for [`Self::stop`] to join; if no thread can be
    /// started, runs it here (bounded by the ownership's own timeouts).
    fn spawn(self: &Arc<Self>, name: &str, f: fn(&Arc<GroupAlua>)) {
        if self.stopping.load(Ordering::Acquire) {
            // The unit is going away: nothing is served any more.
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || f(&me));
        match spawned {
            Ok(h) => {
                let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
                threads.retain(|t| !t.is_finished());
                threads.push(h);
            }
            Err(_) => f(self),
        }
    }

    /// Sleeps `delay` unless [`Self::stop`] is called meanwhile; `false` if it was.
    fn pause_unless_stopping(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut inner = self.lock();
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Stops the background work before the process lets go of the unit (server
    /// shutdown): recovery gives up, and every takeover or recovery thread is joined
    /// within `timeout` (a takeover is bounded by the ownership's own timeouts), so
    /// none still uses the cluster connection while the process tears it down. `true`
    /// when every thread ended in time; the others are left detached.
    pub fn stop(&self, timeout: Duration) -> bool {
        self.stopping.store(true, Ordering::Release);
        {
            let _inner = self.lock();
            self.changed.notify_all();
        }
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        let deadline = Instant::now() + timeout;
        let mut all = true;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                all = false;
            }
        }
        all
    }

    /// Waits until no takeover, handover or recovery runs (at most `timeout`); `true`
    /// if settled.
    pub fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        while matches!(
            inner.local,
            Local::TakingOver | Local::Releasing | Local::Fencing
        ) {
            if Instant::now() >= deadline {
                return false;
            }
            inner = self.wait_until(inner, deadline);
        }
        true
    }

    /// Explicit transition of the local group (SET TARGET PORT GROUPS): to
    /// active/optimized by a synchronous takeover, to the non-owner state by giving
    /// the token up ([`Self::release_requested`]). The token then stays free until a
    /// gateway takes it.
    fn set_local(self: &Arc<Self>, to_owner: bool) -> Result<(), Sense> {
        if to_owner {
            return self.take_over_sync();
        }
        if !self.wait_settled(self.config.sync_bound()) {
            return Err(NOT_READY_ALUA_TRANSITION);
        }
        if self.lock().local == Local::Owner && !self.release_requested() {
            return Err(NOT_READY_ALUA_TRANSITION);
        }
        Ok(())
    }
}

/// What a command admitted by [`crate::LogicalUnit`] took of the medium, to judge its
/// failure ([`crate::LogicalUnit::alua_access_failed`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessTaken {
    /// It [`needs_access`].
    pub(crate) needed: bool,
    /// It [`modifies_medium`].
    pub(crate) modifies: bool,
    /// [`GroupAlua::moves`] after admission, if a group is set.
    pub(crate) moves: Option<u64>,
}

/// SET TARGET PORT GROUPS parameter list (SPC-4 6.36): a 4-byte reserved header, then
/// 4-byte descriptors.
const STPG_HEADER_LEN: usize = 4;
/// Length of one set target port group descriptor (SPC-4 6.36 table 265).
const STPG_DESCRIPTOR_LEN: usize = 4;

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

    /// Raises ASYMMETRIC ACCESS STATE CHANGED on every nexus but `except` once per
    /// completed change of the local group's state (SPC-4 5.16.2.7). One atomic load
    /// when nothing changed.
    pub(crate) fn raise_alua_events_except(&self, except: Option<&crate::Nexus>) {
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
            self.ua
                .raise_all(UA_ASYMMETRIC_ACCESS_STATE_CHANGED, except);
        }
    }

    /// [`Self::raise_alua_events_except`] for every nexus.
    pub(crate) fn raise_alua_events(&self) {
        self.raise_alua_events_except(None);
    }

    /// The I_T nexus of initiator port `initiator` through relative target port `rtpi`
    /// of another gateway of this unit's group (REGISTER AND MOVE to a nexus that never
    /// talked to this gateway, SPC-4 5.13.8): a gateway's target port is this target
    /// with the gateway's port group as portal group tag and relative port identifier.
    /// `None` without a group, for a port of no member, for a TransportID that names no
    /// single port (iSCSI without ISID) and for non-iSCSI target ports.
    pub(crate) fn group_nexus(
        &self,
        initiator: &crate::TransportId,
        rtpi: u16,
        local: &crate::TargetPort,
    ) -> Option<crate::Nexus> {
        let a = self.group_alua.get()?;
        let member = a.config.members.iter().find(|m| m.ports.contains(&rtpi))?;
        if matches!(initiator, crate::TransportId::Iscsi { isid: None, .. }) {
            return None;
        }
        let crate::TargetPortName::Iscsi { name, .. } = &local.name else {
            return None;
        };
        let port = crate::TargetPort::new(
            rtpi,
            member.id.0,
            crate::TargetPortName::Iscsi {
                name: name.clone(),
                tpgt: rtpi,
            },
        );
        Some(crate::Nexus::new(initiator.clone(), port))
    }

    /// ALUA admission of `cmd` (after reservations): only the owner serves commands
    /// that modify the medium; an active/non-optimized non-owner also serves those
    /// that only read it.
    pub(crate) fn alua_admit(&self, cmd: &Command) -> Result<(), Sense> {
        match self.group_alua.get() {
            Some(a) if needs_access(cmd) && modifies_medium(cmd) => a.admit(),
            Some(a) if needs_access(cmd) => a.admit_read(),
            _ => Ok(()),
        }
    }

    /// A command that was admitted failed with `fail`: if ownership was lost meanwhile,
    /// the sense to answer instead (fencing, SPC-4 5.16.2.6). Only failures the medium
    /// reported (BUSY, NOT READY, MEDIUM/HARDWARE ERROR, ABORTED COMMAND) can mean that;
    /// a malformed command does not cost an ownership check.
    pub(crate) fn alua_access_failed(
        &self,
        access: &AccessTaken,
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
        let a = self.group_alua.get()?;
        if !access.needed || !from_medium {
            return None;
        }
        if access.moves.is_some_and(|g| g != a.moves()) {
            // The local state changed while the command ran (the token was handed over
            // and maybe taken back: librbd refused the write of the released lock with
            // EROFS): the command was not acknowledged, the initiator retries it.
            return Some(NOT_READY_ALUA_TRANSITION);
        }
        if access.modifies {
            a.access_failed()
        } else {
            a.read_failed()
        }
    }

    /// Whether a gateway group is set and this gateway does not own the unit: nothing
    /// this gateway acknowledged can be in a volatile cache (it wrote nothing as
    /// non-owner, and the owner acknowledges writes only once they are on the medium),
    /// so SYNCHRONIZE CACHE has nothing to do, and must not ask the medium (librbd
    /// would want the exclusive lock for a flush).
    pub(crate) fn alua_nothing_to_flush(&self) -> bool {
        self.group_alua.get().is_some_and(|a| !a.is_owner())
    }

    /// The groups REPORT TARGET PORT GROUPS describes when a controller is set.
    pub(crate) fn alua_groups(&self) -> Option<Vec<TargetPortGroup>> {
        self.group_alua.get().map(|a| a.groups())
    }

    /// SET TARGET PORT GROUPS (SPC-4 6.36; SPC-5 6.44), explicit ALUA of a gateway
    /// group. Each descriptor: byte 0 bits 3..0 ASYMMETRIC ACCESS STATE, bytes 2-3
    /// TARGET PORT GROUP. Only the local group can change here:
    ///
    /// * local → active/optimized: synchronous takeover (cooperative first), GOOD when
    ///   done, NOT READY 04h/0Ah when it did not complete within the bound;
    /// * local → standby or active/non-optimized: an owner gives the token up (the
    ///   group then reports the configured non-owner state); a non-owner stays as it is;
    /// * a descriptor for another group is accepted only when it confirms what the local
    ///   request implies (the others become non-owners when the local group becomes
    ///   active/optimized) or that group's current state; anything else, an unknown
    ///   group, a state other than 0h-2h or two descriptors for one group is ILLEGAL
    ///   REQUEST, INVALID FIELD IN PARAMETER LIST pointing at the field.
    ///
    /// A PARAMETER LIST LENGTH of 0 does nothing (SPC-4 6.36). A list that ends inside a
    /// descriptor is PARAMETER LIST LENGTH ERROR. After a change, the other nexuses get
    /// ASYMMETRIC ACCESS STATE CHANGED; the one that asked does not (SPC-4 6.36).
    pub(crate) fn set_target_port_groups(
        &self,
        req: &crate::Request<'_>,
        len: u32,
    ) -> crate::lu::Outcome {
        use crate::lu::Fail;
        let Some(a) = self.group_alua.get() else {
            return Err(Sense::invalid_opcode().into());
        };
        let len =
            usize::try_from(len).map_err(|_| Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))?;
        if len == 0 {
            return Ok(crate::Status::Good);
        }
        let p = req
            .data_out
            .get(..len)
            .ok_or(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))?;
        if len < STPG_HEADER_LEN || (len - STPG_HEADER_LEN) % STPG_DESCRIPTOR_LEN != 0 {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let local_id = a.config().local;
        // (byte offset of the descriptor, group, requested state)
        let mut wanted: Vec<(usize, TargetPortGroupId, AluaState)> = Vec::new();
        for (i, d) in p[STPG_HEADER_LEN..]
            .chunks_exact(STPG_DESCRIPTOR_LEN)
            .enumerate()
        {
            let at = STPG_HEADER_LEN + i * STPG_DESCRIPTOR_LEN;
            let bad = |byte: usize, bit: Option<u8>| -> Fail {
                Sense::invalid_field_in_param(u16::try_from(byte).unwrap_or(u16::MAX), bit).into()
            };
            let state = match d[0] & 0x0f {
                0x0 => AluaState::ActiveOptimized,
                0x1 => AluaState::ActiveNonOptimized,
                0x2 => AluaState::Standby,
                _ => return Err(bad(at, Some(3))),
            };
            let id = TargetPortGroupId(u16::from_be_bytes([d[2], d[3]]));
            if !a.config().members.iter().any(|m| m.id == id)
                || wanted.iter().any(|&(_, g, _)| g == id)
            {
                return Err(bad(at + 2, None));
            }
            wanted.push((at, id, state));
        }
        let local_to = wanted
            .iter()
            .find(|&&(_, g, _)| g == local_id)
            .map(|&(_, _, s)| s);
        let to_owner = local_to == Some(AluaState::ActiveOptimized);
        if local_to.is_some() || wanted.iter().any(|&(_, g, _)| g != local_id) {
            let current = a.groups();
            for &(at, id, state) in wanted.iter().filter(|&&(_, g, _)| g != local_id) {
                let now = current.iter().find(|g| g.id == id).map(|g| g.state);
                let implied = to_owner && state == a.config().non_owner;
                let confirms =
                    now == Some(state) && !(to_owner && state == AluaState::ActiveOptimized);
                if !implied && !confirms {
                    return Err(Sense::invalid_field_in_param(
                        u16::try_from(at).unwrap_or(u16::MAX),
                        Some(3),
                    )
                    .into());
                }
            }
        }
        if let Some(to) = local_to {
            a.set_local(to == AluaState::ActiveOptimized)?;
            // SPC-4 6.36: the change is reported to every other I_T nexus; the one that
            // asked knows it.
            self.raise_alua_events_except(Some(req.nexus));
            self.ua
                .clear(req.nexus, |s| *s == UA_ASYMMETRIC_ACCESS_STATE_CHANGED);
        }
        Ok(crate::Status::Good)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32};
    use std::sync::Weak;

    /// An in-memory token: `held` says whether this gateway holds it.
    #[derive(Debug, Default)]
    struct Token {
        held: AtomicBool,
        takeovers: AtomicU32,
        recoveries: AtomicU32,
        owner: Mutex<Option<TargetPortGroupId>>,
        fail_takeover: AtomicBool,
        fail_recover: AtomicBool,
    }

    impl Ownership for Token {
        fn check(&self) -> OwnerCheck {
            if self.held.load(Ordering::SeqCst) {
                OwnerCheck::Owner
            } else {
                OwnerCheck::NotOwner
            }
        }
        fn take_over(&self, group: TargetPortGroupId, _: Duration) -> Result<(), String> {
            self.takeovers.fetch_add(1, Ordering::SeqCst);
            if self.fail_takeover.load(Ordering::SeqCst) {
                return Err("refused".into());
            }
            self.held.store(true, Ordering::SeqCst);
            *self.owner.lock().unwrap() = Some(group);
            Ok(())
        }
        fn release(&self) -> Result<(), String> {
            self.held.store(false, Ordering::SeqCst);
            *self.owner.lock().unwrap() = None;
            Ok(())
        }
        fn recover(&self) -> Result<(), String> {
            self.recoveries.fetch_add(1, Ordering::SeqCst);
            if self.fail_recover.load(Ordering::SeqCst) {
                return Err("cluster unreachable".into());
            }
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
            handover_timeout: DEFAULT_HANDOVER_TIMEOUT,
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
        // With active/non-optimized non-owners the reported states are fixed: group 2
        // is not the preferred one, whoever holds the token.
        assert_eq!(a.local_state(), AluaState::ActiveNonOptimized);
        assert!(a.is_owner());
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

    /// Shutdown: a recovery that keeps failing (cluster gone) is stopped and its thread
    /// joined, in far less than its back-off; afterwards nothing new is started.
    #[test]
    fn stop_joins_a_recovery_that_keeps_failing() {
        let token = Arc::new(Token::default());
        token.held.store(true, Ordering::SeqCst);
        token.fail_recover.store(true, Ordering::SeqCst);
        let a = GroupAlua::new(config(AluaState::Standby, Duration::ZERO), token.clone());
        token.held.store(false, Ordering::SeqCst);
        assert_eq!(a.access_failed(), Some(NOT_READY_ALUA_TRANSITION));
        // Recovery is retrying (200 ms, 400 ms, ... back-off).
        let deadline = Instant::now() + Duration::from_secs(5);
        while token.recoveries.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(token.recoveries.load(Ordering::SeqCst) >= 2);
        assert!(a.stop(Duration::from_secs(5)), "recovery thread not joined");
        assert!(a.threads.lock().unwrap().is_empty());
        let tries = token.recoveries.load(Ordering::SeqCst);
        // Still fenced (never served again), and no takeover starts after stop.
        assert!(!a.wait_settled(Duration::from_millis(50)));
        assert_eq!(a.admit(), Err(NOT_READY_ALUA_TRANSITION));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(token.recoveries.load(Ordering::SeqCst), tries);
        assert_eq!(token.takeovers.load(Ordering::SeqCst), 0);
    }

    /// A finished takeover's thread is joined by stop as well.
    #[test]
    fn stop_joins_finished_takeovers() {
        let token = Arc::new(Token::default());
        let a = GroupAlua::new(config(AluaState::Standby, Duration::ZERO), token.clone());
        assert_eq!(a.admit(), Err(NOT_READY_ALUA_TRANSITION));
        assert!(a.wait_settled(Duration::from_secs(5)));
        assert_eq!(a.threads.lock().unwrap().len(), 1);
        assert!(a.stop(Duration::from_secs(5)));
        assert!(a.threads.lock().unwrap().is_empty());
        // Only the controller itself is left holding the token's owner.
        assert_eq!(Arc::strong_count(&a), 1);
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

    /// A token shared by several gateways of one process, like the RBD exclusive lock:
    /// a takeover asks the holder to hand it over (on a thread of its own, as the RBD
    /// implementation does) and breaks it when the holder does not answer in time.
    #[derive(Debug, Default)]
    struct Cluster {
        holder: Mutex<Option<u16>>,
        freed: Condvar,
        gateways: Mutex<Vec<(u16, Weak<GroupAlua>)>>,
        /// Gateways that do not answer handover requests (dead, paused).
        dead: Mutex<Vec<u16>>,
        breaks: AtomicU32,
        handovers: AtomicU32,
        /// Releases block until this is false (commands during a release).
        hold_release: Mutex<bool>,
        release_gate: Condvar,
    }

    #[derive(Debug)]
    struct Member {
        cluster: Arc<Cluster>,
        group: u16,
        recoveries: AtomicU32,
    }

    impl Cluster {
        fn holder(&self) -> Option<u16> {
            *self.holder.lock().unwrap()
        }
    }

    impl Ownership for Member {
        fn check(&self) -> OwnerCheck {
            if self.cluster.holder() == Some(self.group) {
                OwnerCheck::Owner
            } else {
                OwnerCheck::NotOwner
            }
        }
        fn take_over(&self, group: TargetPortGroupId, timeout: Duration) -> Result<(), String> {
            let c = &self.cluster;
            let Some(h) = c.holder().filter(|&h| h != group.0) else {
                *c.holder.lock().unwrap() = Some(group.0);
                return Ok(());
            };
            let target = c
                .gateways
                .lock()
                .unwrap()
                .iter()
                .find(|(g, _)| *g == h)
                .and_then(|(_, w)| w.upgrade());
            if let Some(t) = target.filter(|_| !c.dead.lock().unwrap().contains(&h)) {
                std::thread::spawn(move || t.release_requested());
            }
            let deadline = Instant::now() + timeout;
            let mut holder = c.holder.lock().unwrap();
            while *holder == Some(h) && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                holder = c.freed.wait_timeout(holder, left).unwrap().0;
            }
            match *holder {
                None => {
                    c.handovers.fetch_add(1, Ordering::SeqCst);
                }
                Some(x) if x == h => {
                    c.breaks.fetch_add(1, Ordering::SeqCst);
                }
                Some(_) => return Err("taken by a third gateway".into()),
            }
            *holder = Some(group.0);
            Ok(())
        }
        fn release(&self) -> Result<(), String> {
            let c = &self.cluster;
            let mut hold = c.hold_release.lock().unwrap();
            while *hold {
                hold = c.release_gate.wait(hold).unwrap();
            }
            let mut holder = c.holder.lock().unwrap();
            if *holder == Some(self.group) {
                *holder = None;
            }
            c.freed.notify_all();
            Ok(())
        }
        fn recover(&self) -> Result<(), String> {
            self.recoveries.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn owner_group(&self) -> Option<TargetPortGroupId> {
            self.cluster.holder().map(TargetPortGroupId)
        }
        fn attach(&self, alua: Weak<GroupAlua>) {
            self.cluster
                .gateways
                .lock()
                .unwrap()
                .push((self.group, alua));
        }
    }

    /// Gateway `group` (1 or 2) of a two-gateway group on `cluster`.
    fn gateway(
        cluster: &Arc<Cluster>,
        group: u16,
        non_owner: AluaState,
        debounce: Duration,
        handover_timeout: Duration,
    ) -> (Arc<GroupAlua>, Arc<Member>) {
        let m = Arc::new(Member {
            cluster: cluster.clone(),
            group,
            recoveries: AtomicU32::new(0),
        });
        let mut cfg = config(non_owner, debounce);
        cfg.local = TargetPortGroupId(group);
        cfg.handover_timeout = handover_timeout;
        (GroupAlua::new(cfg, m.clone()), m)
    }

    /// Cooperative handover: a write on B asks A (alive) to hand over; A releases
    /// without fencing or recovering and reports the non-owner state, B owns; no claim
    /// is broken. Then back from B to A the same way (after the debounce window).
    #[test]
    fn cooperative_handover_between_live_gateways() {
        let c = Arc::new(Cluster::default());
        *c.holder.lock().unwrap() = Some(1);
        let t = Duration::from_secs(5);
        let (a, ma) = gateway(&c, 1, AluaState::Standby, Duration::ZERO, t);
        let (b, mb) = gateway(&c, 2, AluaState::Standby, Duration::ZERO, t);
        assert_eq!(a.local_state(), AluaState::ActiveOptimized);
        assert_eq!(b.local_state(), AluaState::Standby);
        let t0 = Instant::now();
        assert_eq!(b.admit(), Err(NOT_READY_ALUA_TRANSITION));
        assert!(b.wait_settled(Duration::from_secs(5)));
        assert!(a.wait_settled(Duration::from_secs(5)));
        // Well inside the handover timeout: nobody waited for it to pass.
        assert!(t0.elapsed() < t, "{:?}", t0.elapsed());
        assert_eq!(b.admit(), Ok(()));
        assert_eq!(c.holder(), Some(2));
        assert_eq!(a.local_state(), AluaState::Standby);
        assert_eq!(a.generation(), 2, "A: owner -> transitioning -> standby");
        assert_eq!(ma.recoveries.load(Ordering::SeqCst), 0, "A was not fenced");
        assert_eq!(c.breaks.load(Ordering::SeqCst), 0);
        assert_eq!(c.handovers.load(Ordering::SeqCst), 1);
        // And back: A takes it again, B hands it over.
        assert_eq!(a.admit(), Err(NOT_READY_ALUA_TRANSITION));
        assert!(a.wait_settled(Duration::from_secs(5)));
        assert!(b.wait_settled(Duration::from_secs(5)));
        assert_eq!(a.admit(), Ok(()));
        assert_eq!(b.local_state(), AluaState::Standby);
        assert_eq!(mb.recoveries.load(Ordering::SeqCst), 0);
        assert_eq!(c.breaks.load(Ordering::SeqCst), 0);
        assert_eq!(c.handovers.load(Ordering::SeqCst), 2);
        // RTPG through either gateway agrees.
        assert_eq!(
            states(&b),
            [(1, AluaState::ActiveOptimized), (2, AluaState::Standby)]
        );
    }

    /// A holder that does not answer (dead, paused) loses its claim after the handover
    /// timeout: the break path.
    #[test]
    fn dead_owner_is_broken_after_the_handover_timeout() {
        let c = Arc::new(Cluster::default());
        *c.holder.lock().unwrap() = Some(1);
        let t = Duration::from_millis(300);
        let (_a, _) = gateway(&c, 1, AluaState::Standby, Duration::ZERO, t);
        let (b, _) = gateway(&c, 2, AluaState::Standby, Duration::ZERO, t);
        c.dead.lock().unwrap().push(1);
        let t0 = Instant::now();
        assert_eq!(b.admit(), Err(NOT_READY_ALUA_TRANSITION));
        assert!(b.wait_settled(Duration::from_secs(5)));
        let took = t0.elapsed();
        assert!(took >= t && took < t + Duration::from_secs(2), "{took:?}");
        assert_eq!(b.admit(), Ok(()));
        assert_eq!(c.breaks.load(Ordering::SeqCst), 1);
        assert_eq!(c.handovers.load(Ordering::SeqCst), 0);
    }

    /// While the owner hands over (active/non-optimized): reads still run, a write
    /// waits for the release to end and then takes the token back (no 04h/0Ah), and
    /// RTPG keeps reporting the fixed states.
    #[test]
    fn commands_during_a_release_wait_or_run() {
        let c = Arc::new(Cluster::default());
        *c.holder.lock().unwrap() = Some(1);
        let t = Duration::from_secs(5);
        let (a, _) = gateway(&c, 1, AluaState::ActiveNonOptimized, Duration::ZERO, t);
        *c.hold_release.lock().unwrap() = true;
        let a2 = a.clone();
        let releasing = std::thread::spawn(move || a2.release_requested());
        let t0 = Instant::now();
        while a.lock().local != Local::Releasing {
            assert!(t0.elapsed() < Duration::from_secs(5));
            std::thread::yield_now();
        }
        assert_eq!(a.admit_read(), Ok(()));
        assert_eq!(states(&a)[0], (1, AluaState::ActiveOptimized));
        let a3 = a.clone();
        let write = std::thread::spawn(move || a3.take_over_sync());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!write.is_finished(), "the write waits for the release");
        *c.hold_release.lock().unwrap() = false;
        c.release_gate.notify_all();
        assert!(releasing.join().unwrap());
        assert_eq!(write.join().unwrap(), Ok(()));
        assert_eq!(c.holder(), Some(1));
        assert_eq!(a.generation(), 0);
    }

    /// A release waits for the commands that modify the medium and run on the owner
    /// (a COMPARE AND WRITE between its read and its write), so none is cut in two.
    #[test]
    fn a_release_waits_for_running_writes() {
        let c = Arc::new(Cluster::default());
        *c.holder.lock().unwrap() = Some(1);
        let t = Duration::from_secs(5);
        let (a, _) = gateway(&c, 1, AluaState::ActiveNonOptimized, Duration::ZERO, t);
        assert_eq!(a.begin_write(), Ok(()));
        let a2 = a.clone();
        let releasing = std::thread::spawn(move || a2.release_requested());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!releasing.is_finished(), "the release waits for the write");
        assert_eq!(c.holder(), Some(1));
        a.end_write();
        assert!(releasing.join().unwrap());
        assert_eq!(c.holder(), None);
        // The next write takes the token back first.
        assert_eq!(a.begin_write(), Ok(()));
        assert_eq!(c.holder(), Some(1));
        a.end_write();
    }

    /// REGISTER AND MOVE through gateway A to an initiator port that only ever used
    /// gateway B (SPC-4 5.13.8): the destination nexus is named from the group (B's
    /// port 2, TPGT 2), the reservation moves there, B's nexus may write and the old
    /// holder through A conflicts.
    #[test]
    fn register_and_move_to_another_gateways_nexus() {
        use crate::pr::{MemoryStore, ReservationStore};
        use crate::{LogicalUnit, LuConfig, LunMap, Response, Status};
        let c = Arc::new(Cluster::default());
        let t = Duration::from_secs(1);
        let ano = AluaState::ActiveNonOptimized;
        let store: Arc<dyn ReservationStore> = Arc::new(MemoryStore::new());
        let unit = |group: u16, n: crate::Nexus| {
            let lu = LogicalUnit::with_reservation_store(
                Arc::new(rustio_backstore::RamBackstore::new(1 << 20, 512).unwrap()),
                LuConfig::new("t", "s"),
                store.clone(),
            )
            .unwrap();
            assert!(lu.set_group_alua(gateway(&c, group, ano, Duration::ZERO, t).0));
            let mut map = LunMap::new();
            map.insert(0, lu.clone(), false);
            let h = crate::tests::H {
                lu,
                n,
                wp: false,
                map,
            };
            h.clear_ua(&h.n);
            h
        };
        let via = crate::tests::nexus_via;
        let a = unit(1, via(1, 1));
        let b = unit(2, via(2, 2));
        let pr_out = |h: &crate::tests::H, sa: u8, ty: u8, p: &[u8]| {
            let mut cdb = [0u8; 10];
            cdb[0] = 0x5f;
            cdb[1] = sa;
            cdb[2] = ty;
            cdb[5..9].copy_from_slice(&(p.len() as u32).to_be_bytes());
            h.run_as(&h.n, &cdb, p).0
        };
        let basic = |key: u64, sa_key: u64| {
            let mut p = vec![0u8; 24];
            p[0..8].copy_from_slice(&key.to_be_bytes());
            p[8..16].copy_from_slice(&sa_key.to_be_bytes());
            p
        };
        let write = |h: &crate::tests::H| {
            h.run_as(&h.n, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0; 512])
                .0
        };
        // X registers and reserves (WRITE EXCLUSIVE) through A.
        assert_eq!(pr_out(&a, 0, 0, &basic(0, 0xaa)), Response::GOOD);
        assert_eq!(pr_out(&a, 1, 1, &basic(0xaa, 0)), Response::GOOD);
        assert_eq!(write(&b).status, Status::ReservationConflict);
        // REGISTER AND MOVE to Y's port through relative port 2 (gateway B), which this
        // gateway has never seen.
        let tid = b.n.initiator().to_bytes();
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&0xaau64.to_be_bytes());
        p[8..16].copy_from_slice(&0xbbu64.to_be_bytes());
        p[18..20].copy_from_slice(&2u16.to_be_bytes());
        p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
        p.extend_from_slice(&tid);
        assert_eq!(pr_out(&a, 7, 1, &p), Response::GOOD);
        assert_eq!(write(&b), Response::GOOD, "Y holds the reservation now");
        assert_eq!(write(&a).status, Status::ReservationConflict);
        // A port of no member is still refused (INVALID FIELD IN PARAMETER LIST).
        p[18..20].copy_from_slice(&9u16.to_be_bytes());
        p[0..8].copy_from_slice(&0xbbu64.to_be_bytes());
        let r = pr_out(&b, 7, 1, &p);
        assert_eq!(r.status, Status::CheckCondition);
    }

    /// Fencing is the one state an active/non-optimized gateway reports as
    /// transitioning: its access path is dead until recovered.
    #[test]
    fn fencing_is_transitioning_in_active_non_optimized_mode() {
        let token = Arc::new(Token::default());
        token.held.store(true, Ordering::SeqCst);
        let a = GroupAlua::new(
            config(AluaState::ActiveNonOptimized, Duration::ZERO),
            token.clone(),
        );
        assert_eq!(a.state_of(Local::Fencing), AluaState::Transitioning);
        assert_eq!(a.state_of(Local::Releasing), AluaState::ActiveNonOptimized);
        assert_eq!(a.state_of(Local::TakingOver), AluaState::ActiveNonOptimized);
    }

    /// Active/non-optimized (SPC-4 5.16.2.4.3): a read on the non-owner runs there
    /// without moving the token; a write waits for a synchronous takeover and runs.
    #[test]
    fn active_non_optimized_reads_locally_and_writes_take_over_synchronously() {
        let c = Arc::new(Cluster::default());
        *c.holder.lock().unwrap() = Some(1);
        let t = Duration::from_secs(3);
        let d = Duration::from_millis(500);
        let (a, _) = gateway(&c, 1, AluaState::ActiveNonOptimized, d, t);
        let (b, _) = gateway(&c, 2, AluaState::ActiveNonOptimized, d, t);
        for _ in 0..3 {
            assert_eq!(b.admit_read(), Ok(()));
        }
        assert_eq!(c.holder(), Some(1));
        assert_eq!(b.admit(), Ok(()), "the write waits for the takeover");
        assert_eq!(c.holder(), Some(2));
        assert!(b.is_owner());
        assert!(a.wait_settled(Duration::from_secs(5)));
        assert!(!a.is_owner());
        // The reported states did not move with the token (the PREF group, 1, stays
        // active/optimized), so no ASYMMETRIC ACCESS STATE CHANGED was raised.
        assert_eq!(a.local_state(), AluaState::ActiveOptimized);
        assert_eq!(b.local_state(), AluaState::ActiveNonOptimized);
        assert_eq!((a.generation(), b.generation()), (0, 0));
        // A read through the former owner still runs there.
        assert_eq!(a.admit_read(), Ok(()));
        assert_eq!(c.breaks.load(Ordering::SeqCst), 0);
        // Through the logical unit: READ on the non-owner is GOOD and moves nothing.
        let h = crate::tests::H::new();
        assert!(h.lu.set_group_alua(a.clone()));
        h.clear_ua(&h.n);
        h.good(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
        // SYNCHRONIZE CACHE: nothing to flush on a non-owner (range still checked).
        h.good(&[0x35, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
        let s = h.check(&[0x35, 0, 0xff, 0xff, 0xff, 0xf0, 0, 0, 1, 0], &[]);
        assert_eq!(s, Sense::LBA_OUT_OF_RANGE);
        assert_eq!(c.holder(), Some(2));
        // A WRITE through the unit waits for the takeover and is GOOD at once (no
        // 04h/0Ah retry), after the debounce window A entered when it handed over.
        let write = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let data = vec![0xa5; crate::tests::BS as usize];
        h.good(&write, &data);
        assert_eq!(c.holder(), Some(1));
        assert_eq!(c.breaks.load(Ordering::SeqCst), 0);
    }

    /// The engine's own classification decides what an active/non-optimized
    /// non-owner runs itself: READ, VERIFY, PRE-FETCH, GET LBA STATUS and SYNCHRONIZE
    /// CACHE do not modify the medium; WRITE, WRITE SAME, UNMAP, COMPARE AND WRITE do.
    #[test]
    fn reads_and_writes_of_the_medium() {
        let p = |c: &[u8]| crate::cdb::parse(c).unwrap();
        for c in [
            p(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            p(&[0x2f, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            p(&[0x34, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            p(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            p(&[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]),
        ] {
            assert!(needs_access(&c) && !modifies_medium(&c), "{c:?}");
        }
        for c in [
            p(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            p(&[0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            p(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
            p(&[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            assert!(needs_access(&c) && modifies_medium(&c), "{c:?}");
        }
        assert!(!needs_access(&p(&[
            0xa4, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ])));
    }

    /// In active/non-optimized mode the debounce window delays a takeover instead of
    /// refusing it, when the window ends within the bound; otherwise 04h/0Ah at once.
    #[test]
    fn active_non_optimized_debounce_delays_the_takeover() {
        let c = Arc::new(Cluster::default());
        *c.holder.lock().unwrap() = Some(1);
        let t = Duration::from_secs(1);
        let d = Duration::from_millis(400);
        let (a, _) = gateway(&c, 1, AluaState::ActiveNonOptimized, d, t);
        let (b, _) = gateway(&c, 2, AluaState::ActiveNonOptimized, d, t);
        assert_eq!(b.admit(), Ok(()));
        assert!(a.wait_settled(Duration::from_secs(5)));
        // A just gave the token up: its write waits for the rest of the window.
        let t0 = Instant::now();
        assert_eq!(a.admit(), Ok(()));
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(c.holder(), Some(1));
        // A window longer than the bound (1 s + 5 s) is refused at once.
        let (x, _) = gateway(
            &c,
            2,
            AluaState::ActiveNonOptimized,
            Duration::from_secs(60),
            t,
        );
        x.lock().last_change = Some(Instant::now());
        let t0 = Instant::now();
        assert_eq!(x.admit(), Err(NOT_READY_ALUA_TRANSITION));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    /// SET TARGET PORT GROUPS parameter list: the 4-byte header, then one descriptor
    /// per (state, group) (SPC-4 6.36 table 265).
    fn stpg_list(descs: &[(u8, u16)]) -> Vec<u8> {
        let mut p = vec![0u8; 4];
        for &(state, group) in descs {
            p.extend_from_slice(&[state, 0]);
            p.extend_from_slice(&group.to_be_bytes());
        }
        p
    }

    fn stpg_cdb(len: usize) -> [u8; 12] {
        let l = u32::try_from(len).unwrap().to_be_bytes();
        [0xa4, 0x0a, 0, 0, 0, 0, l[0], l[1], l[2], l[3], 0, 0]
    }

    /// Explicit ALUA through the logical unit: TPGS = 11b, REPORT SUPPORTED OPERATION
    /// CODES lists SET TARGET PORT GROUPS with its CDB usage data, STPG to
    /// active/optimized takes over and reports the change to the other nexus only,
    /// STPG to standby gives the token up; malformed lists are refused with the field.
    #[test]
    fn set_target_port_groups() {
        use crate::sense::FieldPointer;
        let h = crate::tests::H::new();
        let c = Arc::new(Cluster::default());
        *c.holder.lock().unwrap() = Some(1);
        let t = Duration::from_secs(3);
        let (a, _) = gateway(&c, 1, AluaState::Standby, Duration::ZERO, t);
        let (b, _) = gateway(&c, 2, AluaState::Standby, Duration::ZERO, t);
        assert!(h.lu.set_group_alua(b.clone()));
        let other = crate::tests::nexus(2);
        h.clear_ua(&other);
        // INQUIRY byte 5: TPGS 11b (SPC-4 6.6.2), 3PC.
        let inq = h.good(&[0x12, 0, 0, 0, 36, 0], &[]);
        assert_eq!(inq[5], 0x38);
        // RSOC, one command (REPORTING OPTIONS 010b): SUPPORT 011b, CDB size 12, usage.
        let rsoc = h.good(&[0xa3, 0x0c, 0x02, 0xa4, 0, 0x0a, 0, 0, 1, 0, 0, 0], &[]);
        assert_eq!(&rsoc[..4], &[0, 0x03, 0, 12]);
        assert_eq!(
            &rsoc[4..16],
            &[0xa4, 0x0a, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]
        );
        // PARAMETER LIST LENGTH 0: nothing happens.
        h.good(&stpg_cdb(0), &[]);
        assert_eq!(c.holder(), Some(1));
        let refused = |p: &[u8], byte: u16, bit: Option<u8>| {
            let s = h.check(&stpg_cdb(p.len()), p);
            assert_eq!(
                (s.key, s.asc, s.ascq),
                (SenseKey::IllegalRequest, 0x26, 0x00)
            );
            assert_eq!(
                s.field_pointer,
                Some(FieldPointer {
                    cdb_or_data: false,
                    byte,
                    bit
                })
            );
        };
        // Another group to active/optimized beside the local one; the owner to
        // standby without the local group taking over: only they could do that.
        refused(&stpg_list(&[(0x0, 2), (0x0, 1)]), 8, Some(3));
        refused(&stpg_list(&[(0x2, 1)]), 4, Some(3));
        // Confirming the current state is accepted and changes nothing.
        h.good(&stpg_cdb(12), &stpg_list(&[(0x0, 1), (0x2, 2)]));
        assert_eq!(c.holder(), Some(1));
        // An unknown group; offline (Eh) is not a state we enter.
        refused(&stpg_list(&[(0x0, 9)]), 6, None);
        refused(&stpg_list(&[(0x0, 2), (0xe, 1)]), 8, Some(3));
        // The same group twice.
        refused(&stpg_list(&[(0x0, 2), (0x2, 2)]), 10, None);
        // A list ending inside a descriptor.
        let s = h.check(&stpg_cdb(6), &[0, 0, 0, 0, 0, 0]);
        assert_eq!((s.asc, s.ascq), (0x1a, 0x00));
        assert_eq!(c.holder(), Some(1), "nothing changed");
        // Local group to active/optimized; the other group's standby is implied.
        h.good(&stpg_cdb(12), &stpg_list(&[(0x0, 2), (0x2, 1)]));
        assert_eq!(c.holder(), Some(2));
        assert_eq!(b.local_state(), AluaState::ActiveOptimized);
        assert!(a.wait_settled(Duration::from_secs(5)));
        assert_eq!(a.local_state(), AluaState::Standby);
        assert_eq!(c.breaks.load(Ordering::SeqCst), 0);
        // SPC-4 6.36: the other nexus gets ASYMMETRIC ACCESS STATE CHANGED, this one not.
        assert_eq!(h.good(&[0, 0, 0, 0, 0, 0], &[]), Vec::<u8>::new());
        let (r, _) = h.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(
            crate::tests::check_of(r),
            UA_ASYMMETRIC_ACCESS_STATE_CHANGED
        );
        // Confirming the current state changes nothing.
        h.good(&stpg_cdb(8), &stpg_list(&[(0x2, 1)]));
        assert_eq!(c.holder(), Some(2));
        // Local group to standby: the token is given up and stays free.
        h.good(&stpg_cdb(8), &stpg_list(&[(0x2, 2)]));
        assert_eq!(c.holder(), None);
        assert_eq!(b.local_state(), AluaState::Standby);
        let rtpg = h.good(&[0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
        assert_eq!((rtpg[4] & 0x0f, rtpg[16] & 0x0f), (0x2, 0x2));
    }

    /// Without a gateway group SET TARGET PORT GROUPS does not exist: INVALID COMMAND
    /// OPERATION CODE (as before), and REPORT SUPPORTED OPERATION CODES omits it.
    #[test]
    fn set_target_port_groups_needs_a_group() {
        let h = crate::tests::H::new();
        let s = h.check(&stpg_cdb(8), &stpg_list(&[(0x0, 1)]));
        assert_eq!(
            (s.key, s.asc, s.ascq),
            (SenseKey::IllegalRequest, 0x20, 0x00)
        );
        let s = h.check(&[0xa4, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!((s.asc, s.ascq), (0x20, 0x00));
        let all = h.good(&[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], &[]);
        assert!(!all[4..].chunks(8).any(|d| d[0] == 0xa4));
        let inq = h.good(&[0x12, 0, 0, 0, 36, 0], &[]);
        assert_eq!(inq[5] >> 4 & 0x3, 0b01);
    }

    /// SPC-4 5.13.1 table 66: SET TARGET PORT GROUPS from a nexus that is not
    /// registered conflicts with a registrants-only reservation.
    #[test]
    fn set_target_port_groups_respects_reservations() {
        let h = crate::tests::H::new();
        let c = Arc::new(Cluster::default());
        let (b, _) = gateway(
            &c,
            2,
            AluaState::Standby,
            Duration::ZERO,
            Duration::from_secs(1),
        );
        assert!(h.lu.set_group_alua(b));
        // REGISTER key 1 and RESERVE write exclusive, registrants only (type 5).
        let mut reg = vec![0u8; 24];
        reg[8..16].copy_from_slice(&1u64.to_be_bytes());
        h.good(&[0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0], &reg);
        let mut res = vec![0u8; 24];
        res[..8].copy_from_slice(&1u64.to_be_bytes());
        h.good(&[0x5f, 0x01, 0x05, 0, 0, 0, 0, 0, 24, 0], &res);
        let other = crate::tests::nexus(2);
        h.clear_ua(&other);
        let (r, _) = h.run_as(&other, &stpg_cdb(8), &stpg_list(&[(0x0, 2)]));
        assert_eq!(r.status, crate::Status::ReservationConflict);
        assert_eq!(c.holder(), None);
    }

    /// A backstore whose writes run `during` and then fail BUSY, like librbd refusing a
    /// write with EROFS after the lock was handed over under it.
    #[derive(Debug)]
    struct HandedOverMidWrite {
        inner: rustio_backstore::RamBackstore,
        during: Mutex<Option<Arc<GroupAlua>>>,
    }

    impl rustio_backstore::Backstore for HandedOverMidWrite {
        fn block_size(&self) -> u32 {
            self.inner.block_size()
        }
        fn capacity(&self) -> u64 {
            self.inner.capacity()
        }
        fn capabilities(&self) -> rustio_backstore::Capabilities {
            self.inner.capabilities()
        }
        fn read_vectored_at(
            &self,
            bufs: &mut [std::io::IoSliceMut<'_>],
            offset: u64,
        ) -> rustio_backstore::Result<()> {
            self.inner.read_vectored_at(bufs, offset)
        }
        fn write_vectored_at(
            &self,
            _: &[std::io::IoSlice<'_>],
            offset: u64,
            _: rustio_backstore::WriteFlags,
        ) -> rustio_backstore::Result<()> {
            if let Some(a) = self.during.lock().unwrap().take() {
                // Handed over and taken back before the failure is judged.
                assert!(a.release_requested());
                assert_eq!(a.take_over_sync(), Ok(()));
            }
            Err(rustio_backstore::Error::Io {
                op: "write",
                path: "rbd/p/i".into(),
                offset,
                source: std::io::Error::from_raw_os_error(16), // EBUSY,
            })
        }
        fn flush(&self) -> rustio_backstore::Result<()> {
            Ok(())
        }
    }

    /// A write admitted on the owner fails because the token moved while it ran (even
    /// if it came back before the failure is looked at): 04h/0Ah, retried, never BUSY.
    #[test]
    fn a_write_failing_across_a_handover_is_transitioning() {
        let c = Arc::new(Cluster::default());
        *c.holder.lock().unwrap() = Some(1);
        let t = Duration::from_secs(1);
        let (a, _) = gateway(&c, 1, AluaState::ActiveNonOptimized, Duration::ZERO, t);
        let b = Arc::new(HandedOverMidWrite {
            inner: rustio_backstore::RamBackstore::new(1 << 20, 512).unwrap(),
            during: Mutex::new(None),
        });
        let h = crate::tests::H::with_backstore(b.clone(), crate::LuConfig::new("t", "s"));
        assert!(h.lu.set_group_alua(a.clone()));
        h.clear_ua(&h.n);
        let write = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let data = vec![0; 512];
        // Without a state change a BUSY from the medium stays BUSY (a slow cluster).
        let (r, _) = h.run(&write, &data);
        assert_eq!(r.status, crate::Status::Busy);
        *b.during.lock().unwrap() = Some(a.clone());
        assert_eq!(h.check(&write, &data), NOT_READY_ALUA_TRANSITION);
        assert!(a.is_owner());
    }
}
