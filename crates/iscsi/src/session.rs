//! Sessions: identity, the CmdSN window (RFC 7143 4.2.2.1), the task table used by task
//! management, the LUN table of the I_T nexus and the connections of the session.
//!
//! A session knows its connections and the PDUs waiting in its window only through the
//! [`Link`] and [`Pending`] traits, which the connection layer implements: the session
//! module stays below the connection module that uses it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustio_scsi::{LogicalUnit, LunMap, Nexus};

use rustio_iscsi_proto::login::SessionType;
use rustio_iscsi_proto::serial;
use rustio_iscsi_proto::text::Negotiated;

use crate::config::{TargetConfig, TpgConfig};
use crate::metrics::IoCounters;

/// One connection of a session, as the session and the session table see it.
pub(crate) trait Link: Send + Sync + fmt::Debug {
    /// Server-wide connection id.
    fn id(&self) -> u64;
    /// iSCSI CID (RFC 7143 11.14.3: Logout names a connection by it).
    fn cid(&self) -> u16;
    /// Closes the connection; its reader ends it.
    fn close(&self);
    /// Ends the write task `itt` if it is still collecting Data-Out on this connection
    /// (task management aborted it; it gets no response).
    fn abandon_write(&self, itt: u32);
    /// Ends every write task still collecting Data-Out (the session logs out).
    fn abandon_writes(&self);
}

/// A PDU held in the CmdSN window until the gap before it fills (RFC 7143 4.2.2.1).
pub(crate) trait Pending: Send + fmt::Debug {
    /// Processes it, in CmdSN order; `false` when the connection processing it is to
    /// close.
    fn run(self: Box<Self>) -> bool;
}

/// One LUN as the session sees it.
#[derive(Debug, Clone)]
pub(crate) struct SessionLun {
    /// LUN number (flat, as in the ACL).
    pub lun: u64,
    /// The logical unit.
    pub lu: Arc<LogicalUnit>,
    /// Per-LUN counters.
    pub counters: Arc<IoCounters>,
}

/// State of one task, shared between the reader, the workers and task management.
#[derive(Debug)]
pub(crate) struct TaskState {
    /// ITT.
    pub itt: u32,
    /// LUN field as received (8-byte encoding).
    pub lun_field: u64,
    /// Set by task management; the response is suppressed.
    pub aborted: AtomicBool,
}

/// Immediate SCSI commands (I bit set) a session may have in its task table beyond its
/// CmdSN window's depth. They bypass the window (RFC 7143 3.2.2.1), so without a bound a
/// peer that streams them, never reading its socket, would grow the table and the work
/// parked behind a stuck writer at wire speed. Initiators send few (Linux none; libiscsi's
/// tests a handful at a time); more are answered with a Reject, reason "Immediate command
/// reject" (RFC 7143 11.17.1).
pub(crate) const IMMEDIATE_TASKS: usize = 16;

/// Why [`Session::add_task`] refused a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskRefused {
    /// The ITT belongs to a task still in progress (Reject reason 0x07).
    ItTInUse,
    /// An immediate command with the table at its bound (Reject reason 0x06).
    ImmediateLimit,
}

/// What the CmdSN window decided about a non-immediate PDU.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// In order: process now, then the listed held items.
    Now,
    /// Ahead of ExpCmdSN but within the window: held until the gap fills.
    Held,
    /// Outside the window or a duplicate: silently ignored (RFC 7143 4.2.2.1).
    Drop,
}

/// The command window of a session.
#[derive(Debug)]
struct Window<T> {
    exp_cmd_sn: u32,
    held: BTreeMap<u32, T>,
    /// Since when PDUs have been held without ExpCmdSN moving (`None`: nothing held).
    stalled_since: Option<Instant>,
}

/// A session.
#[derive(Debug)]
pub(crate) struct Session {
    /// TSIH (0 for discovery sessions, which are not in the table).
    pub tsih: u16,
    /// ISID.
    pub isid: [u8; 6],
    /// Initiator name.
    pub initiator: String,
    /// Session type.
    pub session_type: SessionType,
    /// Target and TPG for normal sessions.
    pub target: Option<(Arc<TargetConfig>, Arc<TpgConfig>)>,
    /// The I_T nexus.
    pub nexus: Nexus,
    /// LUN table (REPORT LUNS and missing LUNs answered by it).
    pub lun_map: LunMap,
    /// LUNs with counters, for task management and metrics.
    pub luns: Vec<SessionLun>,
    /// Session-wide negotiated parameters (from the leading connection).
    pub params: Negotiated,
    /// Commands accepted but not yet completed may not exceed this.
    depth: u32,
    /// CmdSN of the login (first command of the session).
    base: u32,
    /// Non-immediate commands completed (advances MaxCmdSN).
    completed: AtomicU32,
    /// Mirror of the window's ExpCmdSN for lock-free reads when building responses.
    exp_cmd_sn: AtomicU32,
    window: Mutex<Window<Box<dyn Pending>>>,
    /// Tasks by ITT.
    pub tasks: Mutex<HashMap<u32, Arc<TaskState>>>,
    tasks_changed: Condvar,
    /// Connections.
    pub conns: Mutex<Vec<Arc<dyn Link>>>,
    /// The session is over (logout, reinstatement, fatal error).
    pub closed: AtomicBool,
    /// A command with a task attribute other than SIMPLE (ORDERED, HEAD OF QUEUE, ACA)
    /// has arrived. READ data is then always read before the READ completes, never
    /// sent later from the page cache: an ORDERED task must not see its predecessors'
    /// data still unread (SAM-5 8.6), and initiators that use these attributes are rare
    /// (Linux and libiscsi send SIMPLE).
    pub non_simple_seen: AtomicBool,
    /// End-of-session processing (table removal, nexus loss) has run.
    pub ended: AtomicBool,
    /// Per-session counters.
    pub counters: Arc<IoCounters>,
    /// Data-Out buffer memory of this session (issue 20; [`crate::budget`]).
    pub write_budget: Arc<crate::budget::Budget>,
}

impl Session {
    /// Creates a session; `cmd_sn` is the CmdSN of the login request.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tsih: u16,
        isid: [u8; 6],
        initiator: String,
        session_type: SessionType,
        target: Option<(Arc<TargetConfig>, Arc<TpgConfig>)>,
        nexus: Nexus,
        lun_map: LunMap,
        luns: Vec<SessionLun>,
        params: Negotiated,
        depth: u32,
        cmd_sn: u32,
        write_limit: u64,
    ) -> Session {
        Session {
            tsih,
            isid,
            initiator,
            session_type,
            target,
            nexus,
            lun_map,
            luns,
            params,
            depth: depth.max(1),
            base: cmd_sn,
            completed: AtomicU32::new(0),
            exp_cmd_sn: AtomicU32::new(cmd_sn),
            window: Mutex::new(Window {
                exp_cmd_sn: cmd_sn,
                held: BTreeMap::new(),
                stalled_since: None,
            }),
            tasks: Mutex::new(HashMap::new()),
            tasks_changed: Condvar::new(),
            conns: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            non_simple_seen: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            counters: Arc::new(IoCounters::default()),
            write_budget: Arc::new(crate::budget::Budget::new(write_limit)),
        }
    }

    /// Current ExpCmdSN.
    #[inline]
    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.load(Ordering::Acquire)
    }

    /// Current MaxCmdSN: the window never holds more than `depth` uncompleted commands.
    #[inline]
    pub fn max_cmd_sn(&self) -> u32 {
        self.base
            .wrapping_add(self.completed.load(Ordering::Acquire))
            .wrapping_add(self.depth - 1)
    }

    /// Marks one non-immediate command complete (opens one slot of the window).
    #[inline]
    pub fn complete_one(&self) {
        self.completed.fetch_add(1, Ordering::AcqRel);
    }

    /// Decides about a non-immediate PDU with `cmd_sn`; `Now` advances ExpCmdSN and
    /// gives the item back to be processed at once (only a held item is boxed).
    pub fn admit<P: Pending + 'static>(&self, cmd_sn: u32, item: P) -> (Admit, Option<P>) {
        let mut w = self.window.lock();
        let max = self.max_cmd_sn();
        if cmd_sn == w.exp_cmd_sn {
            w.exp_cmd_sn = w.exp_cmd_sn.wrapping_add(1);
            self.exp_cmd_sn.store(w.exp_cmd_sn, Ordering::Release);
            if w.stalled_since.is_some() {
                // The gap moved: what is still held waits afresh.
                w.stalled_since = (!w.held.is_empty()).then(Instant::now);
            }
            return (Admit::Now, Some(item));
        }
        if serial::lt(w.exp_cmd_sn, cmd_sn)
            && serial::le(cmd_sn, max)
            && !w.held.contains_key(&cmd_sn)
        {
            w.held.insert(cmd_sn, Box::new(item));
            if w.stalled_since.is_none() {
                w.stalled_since = Some(Instant::now());
            }
            return (Admit::Held, None);
        }
        (Admit::Drop, None)
    }

    /// Takes the next held item if its CmdSN is now ExpCmdSN (advancing it).
    pub fn next_held(&self) -> Option<Box<dyn Pending>> {
        let mut w = self.window.lock();
        let exp = w.exp_cmd_sn;
        let item = w.held.remove(&exp)?;
        w.exp_cmd_sn = exp.wrapping_add(1);
        self.exp_cmd_sn.store(w.exp_cmd_sn, Ordering::Release);
        w.stalled_since = (!w.held.is_empty()).then(Instant::now);
        Some(item)
    }

    /// How long PDUs have been held in the CmdSN window for a CmdSN that does not come
    /// (ExpCmdSN not moving); `None` when nothing is held. Held PDUs pin memory (their
    /// immediate data) and, through their connection, the session itself.
    pub fn window_stalled_for(&self, now: Instant) -> Option<Duration> {
        let w = self.window.lock();
        w.stalled_since.map(|t| now.saturating_duration_since(t))
    }

    /// Empties the CmdSN window (the session ended: what is held will never run). The
    /// items are returned so that the caller drops them outside the window's lock; this
    /// also breaks the Session → window → pending PDU → connection → Session cycle.
    pub fn drain_window(&self) -> Vec<Box<dyn Pending>> {
        let mut w = self.window.lock();
        w.stalled_since = None;
        std::mem::take(&mut w.held).into_values().collect()
    }

    /// Registers a task. Refused when its ITT is in use, or when it is an immediate
    /// command and the table already holds the window's depth plus [`IMMEDIATE_TASKS`]
    /// (non-immediate commands are bounded by the window itself and never refused here).
    pub(crate) fn add_task(&self, t: Arc<TaskState>, immediate: bool) -> Result<(), TaskRefused> {
        let mut tasks = self.tasks.lock();
        if tasks.contains_key(&t.itt) {
            return Err(TaskRefused::ItTInUse);
        }
        if immediate && tasks.len() >= self.depth as usize + IMMEDIATE_TASKS {
            return Err(TaskRefused::ImmediateLimit);
        }
        tasks.insert(t.itt, t);
        Ok(())
    }

    /// Removes a finished task and wakes task management waiting for it.
    pub fn remove_task(&self, itt: u32) {
        let mut tasks = self.tasks.lock();
        if tasks.remove(&itt).is_some() {
            self.tasks_changed.notify_all();
        }
    }

    /// Ends task `itt` for the worker that ran it: removes it from the table and returns
    /// whether its response may be sent, i.e. task management did not abort it first.
    /// Deciding under the table lock that `abort_tasks` also takes makes "response sent"
    /// and "abort succeeded" mutually exclusive (RFC 7143 11.5.1: a task the target
    /// reports aborted must get no response).
    pub fn claim_response(&self, itt: u32) -> bool {
        let mut tasks = self.tasks.lock();
        match tasks.remove(&itt) {
            Some(t) => {
                self.tasks_changed.notify_all();
                !t.aborted.load(Ordering::Acquire)
            }
            None => true,
        }
    }

    /// Marks matching tasks aborted and returns their ITTs.
    pub fn abort_tasks(&self, pred: impl Fn(&TaskState) -> bool) -> Vec<u32> {
        let tasks = self.tasks.lock();
        tasks
            .values()
            .filter(|t| pred(t))
            .map(|t| {
                t.aborted.store(true, Ordering::Release);
                t.itt
            })
            .collect()
    }

    /// Waits (bounded) until none of `itts` is in the task table any more.
    pub fn wait_tasks_gone(&self, itts: &[u32], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut tasks = self.tasks.lock();
        loop {
            if !itts.iter().any(|i| {
                tasks
                    .get(i)
                    .map(|t| t.aborted.load(Ordering::Acquire))
                    .unwrap_or(false)
            }) {
                return true;
            }
            if self
                .tasks_changed
                .wait_until(&mut tasks, deadline)
                .timed_out()
            {
                return false;
            }
        }
    }

    /// Waits (bounded) until the task table is empty.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut tasks = self.tasks.lock();
        while !tasks.is_empty() {
            if self
                .tasks_changed
                .wait_until(&mut tasks, deadline)
                .timed_out()
            {
                return false;
            }
        }
        true
    }

    /// The session LUN for an 8-byte LUN field.
    pub fn lun(&self, lun_field: u64) -> Option<&SessionLun> {
        let lun = rustio_scsi::decode_lun(lun_field.to_be_bytes())?;
        self.luns.iter().find(|l| l.lun == lun)
    }

    /// Closes every connection of the session.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let conns: Vec<Arc<dyn Link>> = self.conns.lock().clone();
        for c in conns {
            c.close();
        }
    }

    /// The target IQN, or "" for discovery sessions.
    pub fn target_name(&self) -> &str {
        self.target
            .as_ref()
            .map(|(t, _)| t.iqn.as_str())
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic() {
        // The window's comparisons are the protocol crate's RFC 1982 ones.
        use serial::{le as sn_le, lt as sn_lt};
        assert!(sn_lt(1, 2));
        assert!(!sn_lt(2, 1));
        assert!(sn_lt(u32::MAX, 0));
        assert!(sn_le(5, 5));
        assert!(sn_lt(0xffff_fff0, 0x10));
    }

    fn session_with_task(itt: u32) -> Session {
        let s = Session::new(
            1,
            [0; 6],
            "iqn.2024-01.org.example:i".into(),
            SessionType::Normal,
            None,
            Nexus::new(
                rustio_scsi::TransportId::iscsi_port("iqn.2024-01.org.example:i", [0; 6]),
                rustio_scsi::TargetPort::new(1, 1, rustio_scsi::TargetPortName::Local("t".into())),
            ),
            LunMap::new(),
            Vec::new(),
            Negotiated::default(),
            32,
            0,
            64 << 20,
        );
        assert_eq!(s.add_task(task(itt), false), Ok(()));
        s
    }

    fn task(itt: u32) -> Arc<TaskState> {
        Arc::new(TaskState {
            itt,
            lun_field: 0,
            aborted: AtomicBool::new(false),
        })
    }

    #[test]
    fn immediate_tasks_are_bounded_beyond_the_window_depth() {
        // Depth 32 (session_with_task): 32 + IMMEDIATE_TASKS entries in all may be
        // immediate commands; the next immediate one is refused, a non-immediate one
        // (bounded by the window) and a repeated ITT are told apart.
        let s = session_with_task(0);
        for itt in 1..(32 + IMMEDIATE_TASKS) as u32 {
            assert_eq!(s.add_task(task(itt), true), Ok(()), "itt {itt}");
        }
        let full = (32 + IMMEDIATE_TASKS) as u32;
        assert_eq!(
            s.add_task(task(full), true),
            Err(TaskRefused::ImmediateLimit)
        );
        assert_eq!(s.add_task(task(5), true), Err(TaskRefused::ItTInUse));
        assert_eq!(s.add_task(task(full), false), Ok(()));
        // A finished task makes room again.
        s.remove_task(3);
        s.remove_task(full);
        assert_eq!(s.add_task(task(full + 1), true), Ok(()));
        assert_eq!(
            s.add_task(task(full + 2), true),
            Err(TaskRefused::ImmediateLimit)
        );
    }

    /// A held PDU that records that it ran.
    #[derive(Debug)]
    struct Probe(u32, Arc<Mutex<Vec<u32>>>);

    impl Pending for Probe {
        fn run(self: Box<Self>) -> bool {
            self.1.lock().push(self.0);
            true
        }
    }

    #[test]
    fn window_orders_pending_pdus_by_cmd_sn() {
        // RFC 7143 4.2.2.1: CmdSN = ExpCmdSN runs now; ExpCmdSN < CmdSN <= MaxCmdSN waits
        // for the gap; anything else (a duplicate, or beyond MaxCmdSN) is ignored.
        let s = session_with_task(1);
        let ran = Arc::new(Mutex::new(Vec::new()));
        let p = |n| Probe(n, ran.clone());
        let (a, held) = s.admit(2, p(2));
        assert_eq!((a, held.is_none()), (Admit::Held, true));
        assert_eq!(s.admit(2, p(2)).0, Admit::Drop, "duplicate CmdSN");
        assert_eq!(
            s.admit(32, p(32)).0,
            Admit::Drop,
            "beyond MaxCmdSN (depth 32)"
        );
        assert!(s.window_stalled_for(Instant::now()).is_some());
        let (a, now) = s.admit(0, p(0));
        assert_eq!(a, Admit::Now);
        now.expect("in order: handed back").run_direct();
        assert!(s.next_held().is_none(), "1 still missing");
        let (a, now) = s.admit(1, p(1));
        assert_eq!(a, Admit::Now);
        now.expect("in order").run_direct();
        s.next_held().expect("2 is next").run();
        assert_eq!(*ran.lock(), vec![0, 1, 2]);
        assert_eq!(s.exp_cmd_sn(), 3);
        assert!(s.window_stalled_for(Instant::now()).is_none());
        // What a session still holds when it ends is handed back, not run.
        assert_eq!(s.admit(5, p(5)).0, Admit::Held);
        assert_eq!(s.drain_window().len(), 1);
        assert!(s.next_held().is_none());
    }

    impl Probe {
        fn run_direct(self) {
            assert!(Box::new(self).run());
        }
    }

    #[test]
    fn response_and_abort_exclude_each_other() {
        // Abort first: the worker must not respond, the abort counts.
        let s = session_with_task(7);
        assert_eq!(s.abort_tasks(|t| t.itt == 7), vec![7]);
        assert!(!s.claim_response(7));
        assert!(s.tasks.lock().is_empty());
        // Response claimed first: the abort finds nothing (TASK DOES NOT EXIST).
        let s = session_with_task(8);
        assert!(s.claim_response(8));
        assert!(s.abort_tasks(|t| t.itt == 8).is_empty());
    }
}
