//! One connection in the full feature phase (RFC 7143 4.2, 11).
//!
//! Each connection has a reader thread that parses PDUs, reads Data-Out payloads
//! straight into the task's buffer, sequences commands by CmdSN and hands complete
//! commands to the worker pool. Responses are written by whoever finishes the work (a
//! worker, or the reader for non-SCSI PDUs) under the connection's writer lock, which
//! also assigns StatSN so that StatSN order is wire order. Data-In is sent with one
//! vectored write of BHS + data slices — no copy of the data.
//!
//! One file per duty, each above the ones it uses:
//!
//! * [`io`] — the socket: buffered reader with deadlines, bounded-time vectored writes,
//!   PDU framing, recycled Data-Out buffers;
//! * this file — the [`Conn`] itself, the job it hands to the pool and the
//!   [`Registry`] operations it needs of the server;
//! * [`send`] — the writer lock, StatSN, responses handed over between workers, Reject;
//! * [`exec`] — running a command on the engine and answering it, inline or on the pool;
//! * [`writes`] — write tasks: buffer budget, R2Ts, commands waiting for budget;
//! * [`tmf`], [`logout`] — task management and logout;
//! * [`order`] — PDUs processed in CmdSN order;
//! * [`recv`], [`text`], [`timers`] — the reader loop, its text requests and its timers.

pub(crate) mod exec;
pub(crate) mod io;
mod logout;
mod order;
pub(crate) mod recv;
mod send;
mod text;
mod timers;
mod tmf;
mod writes;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustio_iscsi_proto::pdu::{Digests, ScsiCommand, RESERVED_TAG};
use rustio_scsi::Response;

use crate::command::{NewCommand, Residual, WriteTask};
use crate::services::Services;
use crate::session::{Session, TaskState};

use self::io::{BufPool, Writer};

/// How long a worker waits for a connection's writer before handing its response over
/// to whoever holds it (issue 20 item 3). A healthy peer's writes take well under this.
const HANDOFF_WAIT: Duration = Duration::from_millis(20);
/// Per-connection budget of response bytes handed over and not yet sent.
const TX_QUEUE_MAX: usize = 16 << 20;
/// Server-wide budget of response bytes handed over and not yet sent (counted in
/// [`Services::tx_queued`]).
const TX_QUEUE_SERVER_MAX: u64 = 256 << 20;

/// What a connection needs of the server beyond [`Services`]: the worker pool and the
/// session table. The server implements it; the connection modules do not depend on
/// the server module.
pub(crate) trait Registry: Send + Sync + fmt::Debug {
    /// Queues a command for the worker pool (dropped, its task ended, after shutdown).
    fn submit(&self, job: ExecJob);
    /// Has a worker of the pool write what waits for `conn`'s writer
    /// ([`Conn::drain`]); nothing after shutdown.
    fn drain(&self, conn: Arc<Conn>);
    /// Every session, normal and discovery (task management reaches every nexus of a
    /// logical unit or of a target).
    fn sessions(&self) -> Vec<Arc<Session>>;
    /// Ends and closes every session of `target` (TARGET COLD RESET, RFC 7143 11.5.1).
    fn close_target_sessions(&self, target: &str);
    /// The reader of `conn` is exiting: forget the connection, and end its session when
    /// it was the last one (ErrorRecoveryLevel 0).
    fn connection_ended(&self, conn: &Arc<Conn>);
    /// Ends `sess` now (idempotent): out of the table, I_T nexus loss signalled to its
    /// logical units (SAM-5 6.3.4).
    fn end_session(&self, sess: &Arc<Session>);
}

/// Whether the reader goes on after a PDU.
pub(crate) enum Flow {
    /// Read the next PDU.
    Continue,
    /// Close the connection.
    Close,
}

/// A job for the worker pool.
#[derive(Debug)]
pub(crate) struct ExecJob {
    sess: Arc<Session>,
    conn: Arc<Conn>,
    cmd: Box<NewCommand>,
    task: Arc<TaskState>,
    /// The command already ran (asynchronously, `exec::submit_async`): only its result
    /// is to be sent.
    finished: Option<rustio_scsi::AsyncEnd>,
}

/// A SCSI result handed over by a worker that found the writer busy; written (and given
/// its StatSN) by the writer's holder.
#[derive(Debug)]
struct QueuedResult {
    hdr: ScsiCommand,
    resp: Response,
    data: Vec<u8>,
    residual: Residual,
}

/// Responses waiting for a busy writer, and jobs parked until it is free again.
#[derive(Debug, Default)]
struct TxQueue {
    items: VecDeque<QueuedResult>,
    bytes: usize,
    parked: Vec<ExecJob>,
}

/// A connection in full feature phase.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Server-wide connection id.
    pub id: u64,
    /// iSCSI CID.
    pub cid: u16,
    /// Local address.
    pub local: SocketAddr,
    /// Peer address.
    pub peer: SocketAddr,
    /// Digests in force.
    pub digests: Digests,
    /// Largest data segment we may send (the initiator's MaxRecvDataSegmentLength).
    pub send_mrdsl: AtomicU32,
    /// Largest data segment we accept (our declared MaxRecvDataSegmentLength).
    pub recv_mrdsl: u32,
    writer: Mutex<Writer>,
    stream: TcpStream,
    closing: AtomicBool,
    writes: Mutex<HashMap<u32, WriteTask>>,
    next_ttt: AtomicU32,
    /// The session.
    pub session: Arc<Session>,
    /// Configuration, counters and budgets of the server.
    services: Arc<Services>,
    /// The worker pool and the session table.
    registry: Arc<dyn Registry>,
    /// Outstanding target NOP-In ping TTT (0 = none).
    ping_ttt: AtomicU32,
    /// Logout requested by us (async event) is outstanding.
    pub logout_requested: AtomicBool,
    /// Recycled Data-Out buffers.
    write_bufs: BufPool,
    /// Responses handed over while the writer was busy (issue 20 item 3).
    tx: Mutex<TxQueue>,
    /// `tx.items.len()`, read without the lock on every command.
    tx_pending: AtomicUsize,
    /// ITTs of write commands waiting for buffer budget, oldest first.
    held: Mutex<VecDeque<u32>>,
    /// Creation time; origin of `send_started`.
    born: Instant,
    /// When the write in progress began (nanoseconds since `born`, `| 1`), 0 when none:
    /// a writer held longer than [`HANDOFF_WAIT`] is stuck, and jobs for this connection
    /// are parked rather than run (one connection occupies at most one worker).
    send_started: AtomicU64,
    /// No-progress send timeout (`SO_SNDTIMEO`), from the configuration at login.
    send_timeout: Duration,
    /// Slowest transfer rate a peer may keep up (bytes per second).
    min_rate: u64,
    /// READs at least this long from plain-file LUNs are sent from the page cache
    /// (`ServerConfig::sendfile_min`, read at login like the timeouts: no lock per READ).
    sendfile_min: Option<u64>,
}

impl Drop for Conn {
    /// Results still queued for a writer that will never write them (a broken or
    /// closed connection) give their bytes back to the server-wide send budget.
    fn drop(&mut self) {
        let bytes = self.tx.get_mut().bytes as u64;
        if bytes > 0 {
            self.services.tx_queued.fetch_sub(bytes, Ordering::AcqRel);
        }
    }
}

impl Conn {
    /// A connection that finished its login on `stream`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        cid: u16,
        stream: &TcpStream,
        digests: Digests,
        send_mrdsl: u32,
        recv_mrdsl: u32,
        stat_sn: u32,
        session: Arc<Session>,
        services: Arc<Services>,
        registry: Arc<dyn Registry>,
    ) -> std::io::Result<Conn> {
        let (send_timeout, min_rate, sendfile_min) = {
            let cfg = services.config();
            (cfg.send_timeout, cfg.min_transfer_rate, cfg.sendfile_min)
        };
        Ok(Conn {
            id,
            cid,
            local: stream.local_addr()?,
            peer: stream.peer_addr()?,
            digests,
            send_mrdsl: AtomicU32::new(send_mrdsl),
            recv_mrdsl,
            writer: Mutex::new(Writer {
                stream: stream.try_clone()?,
                stat_sn,
                broken: false,
                backlog: Vec::new(),
            }),
            stream: stream.try_clone()?,
            closing: AtomicBool::new(false),
            writes: Mutex::new(HashMap::new()),
            next_ttt: AtomicU32::new(1),
            session,
            services,
            registry,
            ping_ttt: AtomicU32::new(0),
            logout_requested: AtomicBool::new(false),
            write_bufs: BufPool::default(),
            tx: Mutex::new(TxQueue::default()),
            tx_pending: AtomicUsize::new(0),
            held: Mutex::new(VecDeque::new()),
            born: Instant::now(),
            send_started: AtomicU64::new(0),
            send_timeout,
            min_rate,
            sendfile_min,
        })
    }

    /// Closes the socket; the reader thread notices and cleans up.
    pub(crate) fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }

    /// Whether the connection is closing (its reader is ending it).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// A fresh Target Transfer Tag (never 0 or the reserved 0xffffffff).
    fn alloc_ttt(&self) -> u32 {
        loop {
            let t = self.next_ttt.fetch_add(1, Ordering::Relaxed);
            if t != RESERVED_TAG && t != 0 {
                return t;
            }
        }
    }
}
