//! One served device: the ring processor that turns ring entries into executed commands.
//!
//! [`Device`] is independent of how it is woken up and how the kernel is notified, so the
//! same code runs over the real UIO mapping (see [`crate::runner`]) and over the heap ring
//! of unit tests. Flow of a command:
//!
//! 1. [`Device::poll`] reads new entries under the ring lock and returns [`Work`] items;
//!    malformed entries, unknown opcodes and TMR notifications are dealt with right there.
//! 2. A worker, or the poller itself (inline), calls [`Device::run`]. A READ
//!    whose data-in fits the command's iovecs, and a WRITE with a single data-out iovec,
//!    run *zero copy*: the backstore reads into / writes from the data area itself, which
//!    is lent to the engine for the duration of the call ([`SharedMemory::lend_mut`]).
//!    Everything else copies data-out out of the shared memory, executes with no lock held
//!    and copies data-in back. The response is written into the ring and the kernel is
//!    notified (see [`Device::run`] for why once per command).
//! 3. [`Device::expire`] (the watchdog) completes commands whose handler is stuck with
//!    ABORTED COMMAND, so the kernel never waits on us indefinitely. A stuck worker that
//!    finishes later finds its command already completed and discards the result without
//!    touching the shared memory (whose data pages the kernel may have reused). A command
//!    running zero copy cannot be expired that way (its data blocks are in use); the
//!    watchdog warns once, and ring recovery marks the device broken (no new loans) and
//!    waits for loans to return before it resets the ring.
//!
//! Each in-flight command has a small state lock that orders these three paths; the lock
//! order is command state, then ring.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::doorbell::Doorbell;
use crate::mmap::SharedMemory;
use crate::ring::{
    self, iovs_len, CmdResponse, CommandEntry, Iov, Ring, RingError, RingEvent, RingLayout, Slot,
};
use rustio_scsi::DirectIn;

use crate::target::{ScsiOutcome, ScsiTarget, TaskManagement};
use rustio_scsi::{KeyMap, Sense, Status};

/// How the device tells the kernel that responses are ready, and its poller that the ring
/// needs it.
pub trait Notify: Send + Sync + fmt::Debug {
    /// Wakes the kernel's completion handling.
    fn notify(&self);

    /// Wakes the thread that calls [`Device::poll`], which may be waiting for the kernel:
    /// a worker found the ring unusable while writing a completion, and the next `poll`
    /// reports it so that the poller recovers the ring.
    fn wake_poller(&self);
}

/// Per-device counters, exported as Prometheus metrics.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Commands read from the ring.
    pub commands: AtomicU64,
    /// Commands completed with a status other than GOOD.
    pub failed: AtomicU64,
    /// Data-out bytes received.
    pub bytes_out: AtomicU64,
    /// Data-in bytes returned.
    pub bytes_in: AtomicU64,
    /// Malformed entries refused.
    pub malformed: AtomicU64,
    /// Entries with an unknown TCMU opcode.
    pub unknown_ops: AtomicU64,
    /// Commands completed by the watchdog.
    pub timeouts: AtomicU64,
    /// TMR notifications received.
    pub tmrs: AtomicU64,
    /// Commands the kernel reported as aborted by a task management function (they
    /// still run to completion).
    pub aborted: AtomicU64,
    /// Ring resets performed to recover from a corrupt ring.
    pub ring_resets: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Running,
    /// Running on the data area itself (zero copy): its data blocks must stay the
    /// command's until it finishes, so neither the watchdog nor a ring reset may complete
    /// it before that.
    Lent,
    Done,
}

/// A reading of the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`): the time
/// of the last scheduler tick, which the vDSO returns without touching a clock source, so
/// never a system call, at most one tick (1–10 ms) behind `CLOCK_MONOTONIC`. The watchdog
/// counts timeouts of seconds on it. Under QEMU TCG, where the guest's clock source is the
/// emulated HPET and a precise `clock_gettime` is a system call that reads it, the one
/// precise read per ring pass cost ≈ 2–3 µs per 4 KiB I/O (perf, bench/README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Tick(Duration);

impl Tick {
    fn now() -> Tick {
        use nix::time::{clock_gettime, ClockId};
        // Both clocks count from the same origin; the precise one is the fallback of a
        // kernel without the coarse one (older than 2.6.32). Neither fails for a valid
        // clock id; should both, every reading is zero and the watchdog expires nothing
        // (the kernel's own cmd_time_out still fails stuck commands).
        clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
            .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
            .map_or(Tick(Duration::ZERO), |ts| Tick(Duration::from(ts)))
    }

    /// The time from `earlier` to `self` (zero if `earlier` is later).
    fn since(self, earlier: Tick) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// One command between being read and being completed.
#[derive(Debug)]
struct InFlight {
    slot: Slot,
    since: Tick,
    phase: Mutex<Phase>,
    /// The watchdog already logged that it cannot expire this zero-copy command.
    lent_warned: AtomicBool,
}

impl InFlight {
    /// The record of a command just read: queued, not warned about.
    fn new(slot: Slot, since: Tick) -> InFlight {
        InFlight {
            slot,
            since,
            phase: Mutex::new(Phase::Queued),
            lent_warned: AtomicBool::new(false),
        }
    }
}

/// A command to execute, handed from [`Device::poll`] to a worker.
#[derive(Debug)]
pub struct Work {
    slot: Slot,
    cmd: CommandEntry,
    record: Arc<InFlight>,
}

impl Work {
    /// The kernel command id.
    pub fn cmd_id(&self) -> u16 {
        self.slot.cmd_id
    }

    /// The CDB.
    pub fn cdb(&self) -> &[u8] {
        &self.cmd.cdb
    }

    /// Bytes of data the command moves, both directions.
    pub fn data_len(&self) -> usize {
        iovs_len(&self.cmd.iovs).saturating_add(iovs_len(&self.cmd.bidi_iovs))
    }
}

/// Reusable per-worker buffers.
#[derive(Debug, Default)]
pub struct Buffers {
    data_out: Vec<u8>,
    data_in: Vec<u8>,
}

/// A device being served.
pub struct Device {
    name: String,
    ring: Mutex<Ring>,
    /// The ring's shared memory, for data copies without the ring lock.
    mem: Arc<dyn SharedMemory>,
    layout: RingLayout,
    notify: Arc<dyn Notify>,
    /// Every notification goes through it: one thread at a time in the kernel's
    /// completion handling (see [`crate::doorbell`]).
    doorbell: Doorbell,
    target: RwLock<Arc<dyn ScsiTarget>>,
    inflight: Mutex<KeyMap<u64, Arc<InFlight>>>,
    /// [`Device::poll`]'s list of ring events, kept between calls so that its capacity is
    /// reused (growing a new one for every batch showed in callgrind).
    events: Mutex<Vec<RingEvent>>,
    /// Records of finished commands, reused for new ones (see [`Device::new_record`]).
    spare: Mutex<Vec<Arc<InFlight>>>,
    stats: Arc<DeviceStats>,
    broken: AtomicBool,
}

/// Most finished records kept for reuse. The list only ever holds as many records as
/// were outstanding at once; the bound caps what a burst of very many leaves behind.
const MAX_SPARE_RECORDS: usize = 1024;

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A device named `name` processing `ring`, executing on `target`.
    pub fn new(
        name: impl Into<String>,
        ring: Ring,
        target: Arc<dyn ScsiTarget>,
        notify: Arc<dyn Notify>,
    ) -> Device {
        let layout = *ring.layout();
        let mem = ring.memory().clone();
        Device {
            name: name.into(),
            ring: Mutex::new(ring),
            mem,
            layout,
            notify,
            doorbell: Doorbell::default(),
            target: RwLock::new(target),
            inflight: Mutex::new(KeyMap::default()),
            events: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            stats: Arc::new(DeviceStats::default()),
            broken: AtomicBool::new(false),
        }
    }

    /// The LIO device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<DeviceStats> {
        &self.stats
    }

    /// The ring geometry.
    pub fn layout(&self) -> &RingLayout {
        &self.layout
    }

    /// The target commands execute on.
    pub fn target(&self) -> Arc<dyn ScsiTarget> {
        self.target.read().clone()
    }

    /// Replaces the target (after `dev_config` was reconfigured); commands already running
    /// finish on the old one.
    pub fn set_target(&self, target: Arc<dyn ScsiTarget>) {
        *self.target.write() = target;
    }

    /// Number of commands read but not completed.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().len()
    }

    /// The ring hit an unrecoverable inconsistency and awaits [`Device::reset`].
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Everything the kernel queued has been answered.
    pub fn is_drained(&self) -> bool {
        self.in_flight() == 0 && self.ring.lock().is_drained().unwrap_or(false)
    }

    /// Reads new ring entries. Commands to execute are returned; everything else is
    /// handled here. On a corrupt ring the device is marked broken and the error returned
    /// (the caller resets the ring); commands read before the bad entry are still returned
    /// through `work`. While the device is broken (also when a completion found the ring
    /// unusable) nothing is read and [`RingError::AwaitsReset`] is returned.
    pub fn poll(&self, work: &mut Vec<Work>) -> Result<usize, RingError> {
        if self.is_broken() {
            return Err(RingError::AwaitsReset);
        }
        // Only the device's poller calls this: the lock is never contended.
        let mut events = std::mem::take(&mut *self.events.lock());
        let result = self.ring.lock().consume(&mut events);
        let mut completed = 0;
        // One clock read per ring pass, not per command: the watchdog's timeout is counted
        // from when the batch was read (see `Tick` for the clock).
        let mut read_at: Option<Tick> = None;
        for ev in events.drain(..) {
            match ev {
                RingEvent::Command { slot, cmd } => {
                    self.stats.commands.fetch_add(1, Ordering::Relaxed);
                    let since = *read_at.get_or_insert_with(Tick::now);
                    let record = self.new_record(slot, since);
                    self.inflight.lock().insert(slot.seq, record.clone());
                    work.push(Work { slot, cmd, record });
                }
                RingEvent::Malformed { slot, error } => {
                    self.stats.commands.fetch_add(1, Ordering::Relaxed);
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(device = %self.name, cmd_id = slot.cmd_id, %error,
                        "malformed ring entry; failing the command");
                    completed += self.complete_now(
                        slot,
                        CmdResponse::check_condition(Sense::INTERNAL_TARGET_FAILURE.to_fixed()),
                    );
                }
                RingEvent::UnknownOp { slot, op } => {
                    self.stats.unknown_ops.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(device = %self.name, cmd_id = slot.cmd_id, op,
                        "unknown TCMU opcode; answering UNKNOWN_OP");
                    completed += self.complete_now(
                        slot,
                        CmdResponse {
                            status: Status::CheckCondition.as_u8(),
                            sense: None,
                            read_len: None,
                            unknown_op: true,
                        },
                    );
                }
                RingEvent::Tmr(t) => {
                    // The listed commands were aborted by the kernel, which waits for
                    // their completion. They still run to the end: a fabric may report an
                    // aborted command as done (tcm_loop does), so skipping one would lose
                    // a write the initiator believes complete. libtcmu never skips either.
                    self.stats.tmrs.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .aborted
                        .fetch_add(t.cmd_ids.len() as u64, Ordering::Relaxed);
                    let tmf = TaskManagement::from_tmr_type(t.kind);
                    tracing::info!(device = %self.name, ?tmf, cmd_ids = ?t.cmd_ids,
                        "task management notification");
                    self.target().task_management(tmf);
                }
                RingEvent::BadTmr {
                    ring_offset,
                    reason,
                } => {
                    tracing::warn!(device = %self.name, ring_offset, reason, "ignoring bad TMR entry");
                }
            }
        }
        *self.events.lock() = events;
        if completed > 0 {
            self.doorbell.ring(&*self.notify);
        }
        match result {
            Ok(n) => Ok(n),
            Err(e) => {
                tracing::error!(device = %self.name, error = %e, "command ring is corrupt");
                self.broken.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Completes a slot that never became a [`Work`] item. Returns 1 if written.
    fn complete_now(&self, slot: Slot, rsp: CmdResponse) -> usize {
        if rsp.status != 0 {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        match self.ring.lock().complete(slot, rsp) {
            Ok(n) => n,
            Err(e) => {
                self.ring_failure(e);
                0
            }
        }
    }

    fn ring_failure(&self, e: RingError) {
        match e {
            RingError::NotOutstanding { .. } => {
                // A stale completion after a ring reset: harmless, the kernel already
                // completed the command.
                tracing::debug!(device = %self.name, error = %e, "dropping stale completion");
            }
            other => {
                tracing::error!(device = %self.name, error = %other, "cannot write a completion");
                self.broken.store(true, Ordering::Release);
                // The poller may be waiting for the kernel, which waits for us.
                self.notify.wake_poller();
            }
        }
    }

    /// Executes one command (on a worker, or inline on the poller) and completes it, and
    /// notifies the kernel through the doorbell.
    ///
    /// One notification per command, also inline, where the poller runs a whole ring
    /// pass of commands in a row: the kernel completes what a notification covers under
    /// the ring mutex that its submission path also takes, copying each READ's data, so a
    /// notification for a pass of 20–30 commands held new commands off the ring for the
    /// whole pass. Notified one by one, the kernel completes each command and queues new
    /// ones in between: in two boots with both ways, 4 KiB random reads 1.09–1.10× and
    /// writes 1.31–1.41× the IOPS of one notification per pass, daemon CPU per I/O
    /// 0.90–1.04× and 0.73–0.83× (bench/README.md, TCMU results).
    pub fn run(&self, work: Work, bufs: &mut Buffers) {
        if self.run_quiet(work, bufs) > 0 {
            self.doorbell.ring(&*self.notify);
        }
    }

    /// Executes and completes one command without notifying the kernel; returns how many
    /// completions were written (0 or 1).
    ///
    /// Zero copy: a command whose data-in goes to one set of data blocks (a READ), or whose
    /// data-out is one contiguous iovec (a WRITE the kernel could place in consecutive
    /// blocks), is executed on the data area itself, lent by [`SharedMemory::lend_mut`] /
    /// [`SharedMemory::lend`]. The command's state lock is then held across execution, so
    /// the watchdog skips it (the kernel's own `cmd_time_out` still applies) and a ring
    /// reset waits for it: the blocks must stay the command's while they are in use.
    /// Everything else is copied out and in through `bufs`.
    fn run_quiet(&self, work: Work, bufs: &mut Buffers) -> usize {
        let Work { slot, cmd, record } = work;
        let target = self.target();
        // The kernel does not say which way the data goes; the CDB does. Data-out is
        // read only for commands that can carry it.
        let wants_out =
            !cmd.bidi_iovs.is_empty() || target.data_out_len(&cmd.cdb).is_none_or(|n| n > 0);
        let zero_copy =
            cmd.bidi_iovs.is_empty() && !cmd.iovs.is_empty() && (!wants_out || cmd.iovs.len() == 1);
        let mut phase = record.phase.lock();
        if *phase != Phase::Queued {
            return 0;
        }
        // A device being recovered lends nothing: its ring reset frees the data blocks
        // (`recover_ring` waits for lent commands after setting `broken`).
        let lend = zero_copy && !self.is_broken();
        *phase = if lend { Phase::Lent } else { Phase::Running };
        drop(phase);
        bufs.data_out.clear();
        bufs.data_in.clear();
        let tag = u64::from(slot.cmd_id);
        let (executed, in_place) = if lend {
            self.execute_lent(&*target, &cmd, tag, wants_out, bufs)
        } else {
            (None, false)
        };
        let (mut phase, outcome) = match executed {
            Some(o) => {
                phase = record.phase.lock();
                if *phase != Phase::Lent {
                    // Only `wait_unlent` callers change other states; never expected.
                    tracing::warn!(device = %self.name, cmd_id = slot.cmd_id,
                        "zero-copy command lost its state; result dropped");
                    return 0;
                }
                (phase, o)
            }
            None => match self.execute_copied(&*target, &record, slot, &cmd, wants_out, bufs) {
                Ok(done) => done,
                Err(written) => return written,
            },
        };
        let rsp = CmdResponse {
            status: outcome.status,
            sense: outcome.sense,
            read_len: None,
            unknown_op: false,
        };
        let data_in_iovs: &[Iov] = if cmd.bidi_iovs.is_empty() {
            &cmd.iovs
        } else {
            &cmd.bidi_iovs
        };
        let rsp = self.deliver_data_in(data_in_iovs, &bufs.data_in, in_place, rsp);
        *phase = Phase::Done;
        drop(phase);
        let written = self.finish_quiet(&record, slot, rsp);
        self.recycle(record);
        written
    }

    /// The in-flight record of a command just read: a finished one reused when there is
    /// one, so that a command costs no heap allocation (`malloc` and `free` of the record
    /// were ≈ 200 instructions of every 4 KiB I/O, callgrind in bench/README.md).
    fn new_record(&self, slot: Slot, since: Tick) -> Arc<InFlight> {
        if let Some(mut record) = self.spare.lock().pop() {
            // Only records nobody else held went in; `get_mut` checks that again.
            if let Some(r) = Arc::get_mut(&mut record) {
                *r = InFlight::new(slot, since);
                return record;
            }
        }
        Arc::new(InFlight::new(slot, since))
    }

    /// Keeps the record of a completed command for [`Self::new_record`], unless another
    /// holder remains (the watchdog's list of the moment): that one is dropped with its
    /// last holder.
    fn recycle(&self, record: Arc<InFlight>) {
        if Arc::strong_count(&record) == 1 {
            let mut spare = self.spare.lock();
            if spare.len() < MAX_SPARE_RECORDS {
                spare.push(record);
            }
        }
    }

    /// Zero copy: executes `cmd` on the data area itself, a READ on its data-in blocks
    /// or a WRITE on its one data-out iovec. Returns the outcome (`None` if the blocks
    /// could not be lent) and whether the data-in went straight into the blocks.
    fn execute_lent(
        &self,
        target: &dyn ScsiTarget,
        cmd: &CommandEntry,
        tag: u64,
        wants_out: bool,
        bufs: &mut Buffers,
    ) -> (Option<ScsiOutcome>, bool) {
        let mut executed = None;
        let mut in_place = false;
        if !wants_out {
            // One iovec (the usual case) is lent without a heap allocation.
            let one;
            let many: Vec<(usize, usize)>;
            let ranges: &[(usize, usize)] = if let [iov] = cmd.iovs.as_slice() {
                one = [(iov.offset, iov.len)];
                &one
            } else {
                many = cmd.iovs.iter().map(|i| (i.offset, i.len)).collect();
                &many
            };
            let lent = self.mem.lend_mut(ranges, &mut |slices| {
                let mut direct = DirectIn::new(slices);
                executed =
                    Some(target.execute_direct(&cmd.cdb, &[], tag, &mut bufs.data_in, &mut direct));
                in_place = direct.used();
            });
            if let Err(e) = lent {
                tracing::error!(device = %self.name, error = %e, "cannot lend data-in blocks");
            }
        } else if let [iov] = cmd.iovs.as_slice() {
            let lent = self.mem.lend(iov.offset, iov.len, &mut |data_out| {
                executed = Some(target.execute(&cmd.cdb, data_out, tag, &mut bufs.data_in));
            });
            match lent {
                Ok(()) => {
                    self.stats
                        .bytes_out
                        .fetch_add(iov.len as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(device = %self.name, error = %e, "cannot lend data-out blocks");
                }
            }
        }
        (executed, in_place)
    }

    /// Copies the data-out in, executes `cmd` with no lock held (so a stuck handler can
    /// be expired) and retakes the command's state. `Err(written)` ends the command here
    /// (`written` completions were written: it failed, was timed out or was reset).
    fn execute_copied<'r>(
        &self,
        target: &dyn ScsiTarget,
        record: &'r InFlight,
        slot: Slot,
        cmd: &CommandEntry,
        wants_out: bool,
        bufs: &mut Buffers,
    ) -> Result<(MutexGuard<'r, Phase>, ScsiOutcome), usize> {
        let mut phase = record.phase.lock();
        if *phase == Phase::Lent {
            *phase = Phase::Running;
        } else if *phase != Phase::Running {
            return Err(0);
        }
        if wants_out && !cmd.iovs.is_empty() {
            if let Err(e) = ring::gather(&*self.mem, &cmd.iovs, &mut bufs.data_out) {
                // Impossible after parsing checked the iovecs; fail the command.
                tracing::error!(device = %self.name, error = %e, "cannot read data-out");
                *phase = Phase::Done;
                drop(phase);
                return Err(self.finish_quiet(
                    record,
                    slot,
                    CmdResponse::check_condition(Sense::INTERNAL_TARGET_FAILURE.to_fixed()),
                ));
            }
            self.stats
                .bytes_out
                .fetch_add(bufs.data_out.len() as u64, Ordering::Relaxed);
        }
        drop(phase);
        let o = target.execute(
            &cmd.cdb,
            &bufs.data_out,
            u64::from(slot.cmd_id),
            &mut bufs.data_in,
        );
        let phase = record.phase.lock();
        if *phase != Phase::Running {
            tracing::warn!(device = %self.name, cmd_id = slot.cmd_id,
                "command finished after it was timed out or the ring was reset; result dropped");
            return Err(0);
        }
        Ok((phase, o))
    }

    /// Scatters the data-in (unless it was produced in place) into `iovs` and counts it;
    /// a short transfer is reported as a residual where the ring layout supports it.
    fn deliver_data_in(
        &self,
        iovs: &[Iov],
        data_in: &[u8],
        in_place: bool,
        mut rsp: CmdResponse,
    ) -> CmdResponse {
        let capacity = iovs_len(iovs);
        if in_place {
            self.stats
                .bytes_in
                .fetch_add(capacity as u64, Ordering::Relaxed);
            return rsp;
        }
        let n = data_in.len().min(capacity);
        if n == 0 {
            return rsp;
        }
        let short = n < capacity;
        let report = short && self.layout.read_len();
        match ring::scatter(&*self.mem, iovs, &data_in[..n], short && !report) {
            Ok(_) => {
                if report {
                    rsp.read_len = Some(n as u32);
                }
                self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(device = %self.name, error = %e, "cannot write data-in");
                rsp = CmdResponse::check_condition(Sense::INTERNAL_TARGET_FAILURE.to_fixed());
            }
        }
        rsp
    }

    fn finish_quiet(&self, record: &InFlight, slot: Slot, rsp: CmdResponse) -> usize {
        self.inflight.lock().remove(&record.slot.seq);
        self.complete_now(slot, rsp)
    }

    /// Completes every command older than `timeout` with ABORTED COMMAND / COMMAND
    /// TIMEOUT DURING PROCESSING and logs it. Returns how many were expired.
    pub fn expire(&self, timeout: Duration) -> usize {
        let now = Tick::now();
        let old: Vec<Arc<InFlight>> = self
            .inflight
            .lock()
            .values()
            .filter(|r| now.since(r.since) >= timeout)
            .cloned()
            .collect();
        let mut written = 0;
        let mut expired = 0;
        for r in old {
            // A worker holding the lock is copying data right now; try again next round.
            let Some(mut phase) = r.phase.try_lock() else {
                continue;
            };
            if *phase == Phase::Done {
                continue;
            }
            if *phase == Phase::Lent {
                // Executing on its data blocks, which the kernel would hand to another
                // command once this one is completed. The kernel's own cmd_time_out
                // still fails it towards the initiator (keeping the blocks reserved).
                if !r.lent_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(device = %self.name, cmd_id = r.slot.cmd_id,
                        after = ?now.since(r.since),
                        "command is slow in zero-copy I/O; it cannot be completed early");
                }
                continue;
            }
            let was = *phase;
            *phase = Phase::Done;
            expired += 1;
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::error!(device = %self.name, cmd_id = r.slot.cmd_id,
                state = ?was, after = ?now.since(r.since),
                "command timed out in the handler; completing it with ABORTED COMMAND");
            written += self.complete_now(
                r.slot,
                CmdResponse::check_condition(Sense::COMMAND_TIMEOUT_DURING_PROCESSING.to_fixed()),
            );
            drop(phase);
            self.inflight.lock().remove(&r.slot.seq);
        }
        if written > 0 {
            // Directly, not through the doorbell: the watchdog serves every device and
            // must not be drafted to ring for one under load (expiries are rare, so the
            // one contended ring costs nothing).
            self.notify.notify();
        }
        expired
    }

    /// Waits until no command executes on its data blocks any more, for at most
    /// `timeout`; returns whether none does. Call it after the device was marked broken
    /// (no new command lends blocks then) and before the kernel resets the ring, which
    /// frees the blocks of every outstanding command.
    pub fn wait_unlent(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let records: Vec<Arc<InFlight>> = self.inflight.lock().values().cloned().collect();
            let lent = records.iter().any(|r| *r.phase.lock() == Phase::Lent);
            if !lent {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Marks the device as being recovered (see [`Self::wait_unlent`]).
    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
    }

    /// Forgets every in-flight command, before the kernel resets the ring: workers still
    /// executing discard their results, and a completion already on its way finds its
    /// command no longer outstanding instead of writing into the ring (and its old
    /// `cmd_tail` into the mailbox) that the kernel is about to reset. Call it after
    /// [`Self::wait_unlent`].
    pub fn begin_reset(&self) {
        let records: Vec<Arc<InFlight>> = self.inflight.lock().drain().map(|(_, r)| r).collect();
        for r in records {
            *r.phase.lock() = Phase::Done;
        }
        self.ring.lock().forget_outstanding();
    }

    /// Restarts from the mailbox after the kernel reset the ring (forgetting every
    /// in-flight command first, as [`Self::begin_reset`] does), and clears the broken mark.
    pub fn reset(&self) -> Result<(), RingError> {
        self.begin_reset();
        self.ring.lock().resync()?;
        self.stats.ring_resets.fetch_add(1, Ordering::Relaxed);
        self.broken.store(false, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi;
    use crate::mmap::SharedMemory;
    use crate::ring::fake::{rw10, FakeKernel};
    use crate::target::ScsiOutcome;
    use std::sync::atomic::AtomicUsize;

    /// Counts kernel notifications and poller wake-ups.
    #[derive(Debug, Default)]
    struct CountNotify(AtomicUsize, AtomicUsize);
    impl Notify for CountNotify {
        fn notify(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }

        fn wake_poller(&self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A tiny disk: READ(10)/WRITE(10) on 512-byte blocks, INQUIRY returning 36 bytes,
    /// and opcode 0xC1 blocks until released (a stuck handler).
    #[derive(Debug)]
    struct TinyDisk {
        data: Mutex<Vec<u8>>,
        gate: Mutex<Option<crossbeam_channel::Receiver<()>>>,
        tmfs: Mutex<Vec<TaskManagement>>,
    }

    impl TinyDisk {
        fn new() -> TinyDisk {
            TinyDisk {
                data: Mutex::new(vec![0; 64 * 512]),
                gate: Mutex::new(None),
                tmfs: Mutex::new(Vec::new()),
            }
        }
    }

    impl ScsiTarget for TinyDisk {
        fn execute(&self, cdb: &[u8], out: &[u8], _tag: u64, data_in: &mut Vec<u8>) -> ScsiOutcome {
            data_in.clear();
            let (lba, n) = if cdb.len() >= 10 {
                (
                    u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]) as usize,
                    u16::from_be_bytes([cdb[7], cdb[8]]) as usize,
                )
            } else {
                (0, 0)
            };
            match cdb[0] {
                0x28 => data_in.extend_from_slice(&self.data.lock()[lba * 512..(lba + n) * 512]),
                0x2a => {
                    self.data.lock()[lba * 512..(lba + n) * 512].copy_from_slice(&out[..n * 512])
                }
                0x12 => data_in.extend_from_slice(&[0x5a; 36]),
                0xc1 => {
                    let rx = self.gate.lock().clone();
                    if let Some(rx) = rx {
                        let _ = rx.recv();
                    }
                }
                _ => {
                    return ScsiOutcome::check(Sense::invalid_opcode());
                }
            }
            ScsiOutcome::GOOD
        }
        fn data_out_len(&self, cdb: &[u8]) -> Option<u32> {
            match cdb[0] {
                0x2a => Some(u32::from(u16::from_be_bytes([cdb[7], cdb[8]])) * 512),
                0x28 | 0x12 | 0xc1 => Some(0),
                _ => None,
            }
        }
        fn task_management(&self, tmf: TaskManagement) {
            self.tmfs.lock().push(tmf);
        }
        fn resize(&self, _bytes: u64) -> Result<(), rustio_backstore::Error> {
            Err(rustio_backstore::Error::ReadOnly)
        }
        fn set_write_cache(&self, _enabled: bool) {}
    }

    fn setup(flags: u16) -> (FakeKernel, Arc<TinyDisk>, Arc<CountNotify>, Device) {
        let k = FakeKernel::new(8192, 1 << 20, flags);
        let disk = Arc::new(TinyDisk::new());
        let n = Arc::new(CountNotify::default());
        let dev = Device::new("t", Ring::new(k.shared()).unwrap(), disk.clone(), n.clone());
        (k, disk, n, dev)
    }

    const CAPS: u16 = abi::FLAG_CAP_OOOC | abi::FLAG_CAP_READ_LEN | abi::FLAG_CAP_TMR;

    #[test]
    fn write_then_read_through_the_ring() {
        let (mut k, disk, notify, dev) = setup(CAPS);
        let pattern: Vec<u8> = (0..2048u32).map(|i| (i * 7) as u8).collect();
        let a = k.alloc_data(1024, 0);
        let b = k.alloc_data(1024, 0);
        k.mem.write(a.offset, &pattern[..1024]).unwrap();
        k.mem.write(b.offset, &pattern[1024..]).unwrap();
        k.push_cmd(1, &rw10(0x2a, 3, 4), &[a, b], &[]);
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        assert_eq!(work.len(), 1);
        let mut bufs = Buffers::default();
        for w in work.drain(..) {
            dev.run(w, &mut bufs);
        }
        assert_eq!(&disk.data.lock()[3 * 512..7 * 512], &pattern[..]);
        let (done, pos) = k.reap(0);
        assert_eq!(
            done.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
            vec![(1, Status::Good.as_u8())]
        );
        // Read it back into fresh buffers.
        let c = k.alloc_data(2048, 0xff);
        k.push_cmd(2, &rw10(0x28, 3, 4), &[c], &[]);
        dev.poll(&mut work).unwrap();
        dev.run(work.pop().unwrap(), &mut bufs);
        let mut back = vec![0u8; 2048];
        k.mem.read(c.offset, &mut back).unwrap();
        assert_eq!(back, pattern);
        let (done, _) = k.reap(pos);
        assert_eq!(done[0].0, 2);
        assert!(notify.0.load(Ordering::SeqCst) >= 2);
        assert_eq!(dev.stats().bytes_in.load(Ordering::Relaxed), 2048);
        assert_eq!(dev.stats().bytes_out.load(Ordering::Relaxed), 2048);
        assert!(dev.is_drained());
    }

    /// The watchdog's clock agrees with the monotonic clock to within its resolution (a
    /// tick) plus slack for a late tick, whatever the scheduler does in between: the
    /// outer readings bound it from above, the inner ones from below.
    #[test]
    fn coarse_clock_follows_the_monotonic_clock() {
        use nix::time::{clock_getres, ClockId};
        let res =
            clock_getres(ClockId::CLOCK_MONOTONIC_COARSE).map_or(Duration::ZERO, Duration::from);
        let tick = res + Duration::from_millis(20);
        let outer0 = Instant::now();
        let t0 = Tick::now();
        let inner0 = Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        let inner1 = Instant::now();
        let t1 = Tick::now();
        let outer1 = Instant::now();
        let d = t1.since(t0);
        assert!(
            d + tick >= inner1 - inner0,
            "{d:?} vs at least {:?}",
            inner1 - inner0
        );
        assert!(
            d <= outer1 - outer0 + tick,
            "{d:?} vs at most {:?}",
            outer1 - outer0
        );
        assert!(t1 >= t0);
        assert_eq!(t0.since(t1), Duration::ZERO);
    }

    #[test]
    fn finished_records_are_reused_with_fresh_state() {
        let (mut k, _disk, _n, dev) = setup(CAPS);
        let mut work = Vec::new();
        let mut bufs = Buffers::default();
        let a = k.alloc_data(512, 0);
        k.push_cmd(1, &rw10(0x28, 0, 1), &[a], &[]);
        dev.poll(&mut work).unwrap();
        let first = Arc::as_ptr(&work[0].record);
        work[0].record.lent_warned.store(true, Ordering::Relaxed);
        dev.run(work.pop().unwrap(), &mut bufs);
        assert_eq!(dev.spare.lock().len(), 1);
        let (done, pos) = k.reap(0);
        assert_eq!(done.len(), 1);
        let b = k.alloc_data(512, 0);
        k.push_cmd(2, &rw10(0x28, 1, 1), &[b], &[]);
        dev.poll(&mut work).unwrap();
        let w = &work[0];
        assert_eq!(Arc::as_ptr(&w.record), first);
        assert_eq!((w.record.slot.seq, w.record.slot.cmd_id), (w.slot.seq, 2));
        assert_eq!(*w.record.phase.lock(), Phase::Queued);
        assert!(!w.record.lent_warned.load(Ordering::Relaxed));
        assert!(dev.spare.lock().is_empty());
        // A record someone else still holds (the watchdog's list of the moment) is not
        // kept: it goes with its last holder.
        let held = w.record.clone();
        dev.run(work.pop().unwrap(), &mut bufs);
        assert!(dev.spare.lock().is_empty());
        assert_eq!(*held.phase.lock(), Phase::Done);
        assert_eq!(k.reap(pos).0.len(), 1);
        assert!(dev.is_drained());
    }

    #[test]
    fn short_data_in_reports_read_len_or_zero_fills() {
        for (flags, expect_read_len) in [(CAPS, true), (abi::FLAG_CAP_OOOC, false)] {
            let (mut k, _disk, _n, dev) = setup(flags);
            let buf = k.alloc_data(96, 0xee);
            k.push_cmd(1, &[0x12, 0, 0, 0, 96, 0], &[buf], &[]);
            let mut work = Vec::new();
            dev.poll(&mut work).unwrap();
            dev.run(work.pop().unwrap(), &mut Buffers::default());
            let (done, _) = k.reap(0);
            let (_, status, uflags, read_len, _) = done[0];
            assert_eq!(status, 0);
            let mut back = vec![0u8; 96];
            k.mem.read(buf.offset, &mut back).unwrap();
            assert_eq!(&back[..36], &[0x5a; 36]);
            if expect_read_len {
                assert_eq!((uflags, read_len), (abi::UFLAG_READ_LEN, 36));
                assert_eq!(&back[36..], &[0xee; 60], "beyond read_len untouched");
            } else {
                assert_eq!((uflags, read_len), (0, 0));
                assert_eq!(&back[36..], &[0; 60], "zero-filled without CAP_READ_LEN");
            }
        }
    }

    #[test]
    fn malformed_and_unknown_entries_are_answered_immediately() {
        let (mut k, _disk, notify, dev) = setup(CAPS);
        let d = k.alloc_data(512, 0);
        let bad = k.push_cmd(9, &rw10(0x28, 0, 1), &[d], &[]);
        k.mem
            .write_u64(k.cmdr_off + bad as usize + abi::REQ_IOV, 1 << 50)
            .unwrap();
        k.push_raw(112, 112 | 6, |m, abs| m.write_u16(abs + 4, 10).unwrap());
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        assert!(work.is_empty());
        let (done, _) = k.reap(0);
        assert_eq!(done.len(), 2);
        assert_eq!((done[0].0, done[0].1), (9, Status::CheckCondition.as_u8()));
        assert_eq!(done[0].4, Sense::INTERNAL_TARGET_FAILURE.to_fixed());
        assert_eq!((done[1].0, done[1].2), (10, abi::UFLAG_UNKNOWN_OP));
        assert_eq!(notify.0.load(Ordering::SeqCst), 1);
        assert_eq!(dev.stats().malformed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stuck_command_times_out_and_late_result_is_dropped() {
        let (mut k, disk, _n, dev) = setup(CAPS);
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        *disk.gate.lock() = Some(rx);
        // No data buffers: the copy path, which executes with no state lock held.
        k.push_cmd(5, &[0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], &[]);
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        let dev = Arc::new(dev);
        let d2 = dev.clone();
        let w = work.pop().unwrap();
        let worker = std::thread::spawn(move || d2.run(w, &mut Buffers::default()));
        // Wait until the worker is inside the handler.
        while dev
            .inflight
            .lock()
            .values()
            .all(|r| *r.phase.lock() != Phase::Running)
        {
            std::thread::yield_now();
        }
        assert_eq!(dev.expire(Duration::from_secs(3600)), 0);
        assert_eq!(dev.expire(Duration::ZERO), 1);
        let (done, pos) = k.reap(0);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].0, done[0].1), (5, Status::CheckCondition.as_u8()));
        assert_eq!(
            done[0].4,
            Sense::COMMAND_TIMEOUT_DURING_PROCESSING.to_fixed()
        );
        // The handler finally returns: nothing more is written.
        let before = k.mem.snapshot();
        tx.send(()).unwrap();
        worker.join().unwrap();
        assert_eq!(k.mem.snapshot(), before);
        assert_eq!(k.reap(pos).0.len(), 0);
        assert_eq!(dev.in_flight(), 0);
        assert_eq!(dev.stats().timeouts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn zero_copy_command_is_never_expired_early() {
        let (mut k, disk, _n, dev) = setup(CAPS);
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        *disk.gate.lock() = Some(rx);
        // A data-in command with buffers executes on the data area (Phase::Lent).
        let buf = k.alloc_data(512, 0x33);
        k.push_cmd(6, &[0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[buf], &[]);
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        let dev = Arc::new(dev);
        let d2 = dev.clone();
        let w = work.pop().unwrap();
        let worker = std::thread::spawn(move || d2.run(w, &mut Buffers::default()));
        while dev
            .inflight
            .lock()
            .values()
            .all(|r| *r.phase.lock() != Phase::Lent)
        {
            std::thread::yield_now();
        }
        assert_eq!(dev.expire(Duration::ZERO), 0);
        assert!(
            k.reap(0).0.is_empty(),
            "its blocks are in use: no early completion"
        );
        assert!(!dev.wait_unlent(Duration::from_millis(20)));
        tx.send(()).unwrap();
        worker.join().unwrap();
        assert!(dev.wait_unlent(Duration::ZERO));
        let (done, _) = k.reap(0);
        assert_eq!(
            (done.len(), done[0].0, done[0].1),
            (1, 6, Status::Good.as_u8())
        );
        assert_eq!(dev.stats().timeouts.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn broken_device_lends_nothing() {
        let (mut k, disk, _n, dev) = setup(CAPS);
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        *disk.gate.lock() = Some(rx);
        let buf = k.alloc_data(512, 0x33);
        k.push_cmd(7, &[0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[buf], &[]);
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        dev.mark_broken();
        let dev = Arc::new(dev);
        let d2 = dev.clone();
        let w = work.pop().unwrap();
        let worker = std::thread::spawn(move || d2.run(w, &mut Buffers::default()));
        while dev
            .inflight
            .lock()
            .values()
            .all(|r| *r.phase.lock() != Phase::Running)
        {
            std::thread::yield_now();
        }
        // Copy path: the watchdog may complete it, and there is nothing to wait for.
        assert!(dev.wait_unlent(Duration::ZERO));
        assert_eq!(dev.expire(Duration::ZERO), 1);
        tx.send(()).unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn logical_unit_reads_and_writes_the_data_area_in_place() {
        use crate::target::LuTarget;
        use rustio_backstore::RamBackstore;
        let mut k = FakeKernel::new(8192, 1 << 20, CAPS);
        let ram = Arc::new(RamBackstore::new(1 << 20, 512).unwrap());
        let lu = Arc::new(
            LuTarget::new("zc", ram.clone(), rustio_scsi::LuConfig::new("zc", "zc1")).unwrap(),
        );
        let n = Arc::new(CountNotify::default());
        let dev = Device::new("zc", Ring::new(k.shared()).unwrap(), lu, n.clone());
        let mut work = Vec::new();
        let mut bufs = Buffers::default();
        // Clear the power-on unit attention.
        for id in 1..=3 {
            k.push_cmd(id, &[0, 0, 0, 0, 0, 0], &[], &[]);
        }
        dev.poll(&mut work).unwrap();
        for w in work.drain(..) {
            dev.run(w, &mut bufs);
        }
        let (_, mut pos) = k.reap(0);
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 13 + 1) as u8).collect();
        // One contiguous data-out iovec: written from the data area itself.
        let w = k.alloc_data(4096, 0);
        k.mem.write(w.offset, &pattern).unwrap();
        k.push_cmd(10, &rw10(0x2a, 8, 8), &[w], &[]);
        // Data-in split over two iovecs: read into the data area itself.
        let a = k.alloc_data(1536, 0xaa);
        let b = k.alloc_data(2560, 0xbb);
        k.push_cmd(11, &rw10(0x28, 8, 8), &[a, b], &[]);
        // A data-in shorter than the buffers (INQUIRY) is still staged and zero-filled.
        let c = k.alloc_data(200, 0xcc);
        k.push_cmd(12, &[0x12, 0, 0, 0, 200, 0], &[c], &[]);
        dev.poll(&mut work).unwrap();
        assert_eq!(work.len(), 3);
        // Executed in submission order (as the poller does inline), so the READ sees
        // the WRITE.
        let before = n.0.load(Ordering::SeqCst);
        for w in work.drain(..) {
            dev.run(w, &mut bufs);
        }
        assert_eq!(
            n.0.load(Ordering::SeqCst),
            before + 3,
            "one notification per command"
        );
        let (done, p) = k.reap(pos);
        pos = p;
        assert_eq!(
            done.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
            vec![
                (10, Status::Good.as_u8()),
                (11, Status::Good.as_u8()),
                (12, Status::Good.as_u8())
            ]
        );
        let mut stored = vec![0u8; 4096];
        rustio_backstore::Backstore::read_at(&*ram, &mut stored, 8 * 512).unwrap();
        assert_eq!(stored, pattern);
        let mut back = vec![0u8; 4096];
        k.mem.read(a.offset, &mut back[..1536]).unwrap();
        k.mem.read(b.offset, &mut back[1536..]).unwrap();
        assert_eq!(back, pattern);
        let mut inq = vec![0u8; 200];
        k.mem.read(c.offset, &mut inq).unwrap();
        assert_eq!(inq[0], 0x00, "direct-access block device");
        let (_, _, uflags, read_len, _) = done[2];
        assert_eq!(uflags, abi::UFLAG_READ_LEN);
        assert!((36..200).contains(&read_len), "{read_len}");
        assert!(inq[read_len as usize..].iter().all(|&x| x == 0xcc));
        assert_eq!(dev.stats().bytes_out.load(Ordering::Relaxed), 4096);
        assert!(dev.stats().bytes_in.load(Ordering::Relaxed) >= 4096);
        assert!(k.reap(pos).0.is_empty());
        assert!(dev.is_drained());
    }

    #[test]
    fn tmr_resets_the_unit_and_aborted_commands_still_run() {
        let (mut k, disk, _n, dev) = setup(CAPS);
        k.push_cmd(1, &rw10(0x28, 0, 0), &[], &[]);
        k.push_cmd(2, &rw10(0x28, 0, 0), &[], &[]);
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        assert_eq!(work.len(), 2);
        k.push_tmr(abi::tmr::LUN_RESET, &[2]);
        let mut more = Vec::new();
        dev.poll(&mut more).unwrap();
        assert!(more.is_empty());
        assert_eq!(*disk.tmfs.lock(), vec![TaskManagement::LunReset]);
        assert_eq!(dev.stats().aborted.load(Ordering::Relaxed), 1);
        // Nothing is completed early: the aborted command executes like the other one.
        assert!(k.reap(0).0.is_empty());
        let mut bufs = Buffers::default();
        for w in work {
            dev.run(w, &mut bufs);
        }
        let (done, _) = k.reap(0);
        assert_eq!(
            done.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
            vec![(1, Status::Good.as_u8()), (2, Status::Good.as_u8())]
        );
        dev.poll(&mut Vec::new()).unwrap();
        assert!(dev.is_drained());
    }

    #[test]
    fn corrupt_ring_marks_broken_until_reset() {
        let (mut k, _disk, _n, dev) = setup(CAPS);
        k.push_cmd(1, &rw10(0x28, 0, 0), &[], &[]);
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        k.push_raw(112, abi::OP_CMD, |_, _| {}); // zero length
        assert!(dev.poll(&mut Vec::new()).is_err());
        assert!(dev.is_broken());
        assert_eq!(dev.poll(&mut Vec::new()), Err(RingError::AwaitsReset));
        // The kernel resets the ring; the command read before is forgotten.
        k.mem.store_u32_release(abi::MB_CMD_HEAD, 0).unwrap();
        k.mem.store_u32_release(abi::MB_CMD_TAIL, 0).unwrap();
        dev.reset().unwrap();
        assert!(!dev.is_broken());
        let before = k.mem.snapshot();
        dev.run(work.pop().unwrap(), &mut Buffers::default());
        assert_eq!(k.mem.snapshot(), before, "stale command writes nothing");
    }

    /// A command still completing when the runner begins a reset (after which the kernel
    /// resets the ring) writes neither its response nor `cmd_tail`: both a worker that
    /// has not finished executing and one that had already finished, and was only
    /// writing its completion, when the reset began.
    #[test]
    fn completion_after_begin_reset_writes_nothing() {
        let (mut k, _disk, n, dev) = setup(CAPS);
        let (a, b) = (k.alloc_data(512, 0), k.alloc_data(512, 0));
        k.push_cmd(1, &rw10(0x28, 0, 1), &[a], &[]);
        k.push_cmd(2, &rw10(0x28, 1, 1), &[b], &[]);
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        let finishing = work.pop().unwrap();
        // Its worker marked it done and is about to write the completion.
        *finishing.record.phase.lock() = Phase::Done;
        dev.mark_broken();
        assert!(dev.wait_unlent(Duration::from_secs(1)));
        dev.begin_reset();
        assert_eq!(dev.in_flight(), 0);
        let before = k.mem.snapshot();
        assert_eq!(
            dev.finish_quiet(&finishing.record, finishing.slot, CmdResponse::GOOD),
            0
        );
        dev.run(work.pop().unwrap(), &mut Buffers::default());
        assert_eq!(k.mem.snapshot(), before, "late completions write nothing");
        assert_eq!(n.0.load(Ordering::SeqCst), 0);
        assert_eq!(
            n.1.load(Ordering::SeqCst),
            0,
            "a stale completion is not a failure"
        );
    }

    /// A worker that finds the ring unusable while completing (the kernel changed an
    /// entry it had handed over) cannot leave the device stalled: the poller, which may be
    /// waiting for the kernel, is woken, and its next `poll` asks for the reset.
    #[test]
    fn completion_on_a_corrupt_ring_wakes_the_poller_to_reset_it() {
        let (mut k, _disk, n, dev) = setup(CAPS);
        let data = k.alloc_data(512, 0);
        let pos = k.push_cmd(1, &rw10(0x28, 0, 1), &[data], &[]);
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        let abs = k.cmdr_off + pos as usize;
        let len_op = k.mem.read_u32(abs).unwrap();
        k.mem.write_u32(abs, abi::OP_CMD).unwrap(); // length 0: the ring cannot be walked
        dev.run(work.pop().unwrap(), &mut Buffers::default());
        assert!(dev.is_broken());
        assert_eq!(n.1.load(Ordering::SeqCst), 1, "the poller is woken");
        assert_eq!(n.0.load(Ordering::SeqCst), 0, "no completion to announce");
        assert_eq!(dev.poll(&mut work), Err(RingError::AwaitsReset));
        assert!(work.is_empty());
        // Here the "kernel" leaves the command on the ring, which the resynchronised
        // device reads again (a real reset in retry mode fails it with BUSY instead and
        // the initiator resends it).
        k.mem.write_u32(abs, len_op).unwrap();
        dev.reset().unwrap();
        dev.poll(&mut work).unwrap();
        assert_eq!(work.len(), 1);
        dev.run(work.pop().unwrap(), &mut Buffers::default());
        let (done, _) = k.reap(0);
        assert_eq!(
            done.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
            vec![(1, Status::Good.as_u8())]
        );
        assert_eq!(n.1.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn many_commands_in_flight_on_worker_threads() {
        let (mut k, disk, _n, dev) = setup(CAPS);
        let dev = Arc::new(dev);
        let (tx, rx) = crossbeam_channel::unbounded::<Work>();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                let dev = dev.clone();
                std::thread::spawn(move || {
                    let mut b = Buffers::default();
                    while let Ok(w) = rx.recv() {
                        dev.run(w, &mut b);
                    }
                })
            })
            .collect();
        for id in 0..40u16 {
            let d = k.alloc_data(512, id as u8);
            k.push_cmd(id, &rw10(0x2a, u32::from(id), 1), &[d], &[]);
        }
        let mut work = Vec::new();
        dev.poll(&mut work).unwrap();
        assert_eq!(work.len(), 40);
        for w in work {
            tx.send(w).unwrap();
        }
        drop(tx);
        for w in workers {
            w.join().unwrap();
        }
        let (done, _) = k.reap(0);
        let mut ids: Vec<u16> = done.iter().map(|d| d.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..40).collect::<Vec<_>>());
        for id in 0..40usize {
            assert!(disk.data.lock()[id * 512..(id + 1) * 512]
                .iter()
                .all(|&b| b == id as u8));
        }
        assert!(dev.is_drained());
    }
}
