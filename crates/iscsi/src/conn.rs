//! One connection in the full feature phase (RFC 7143 4.2, 11).
//!
//! Each connection has a reader thread that parses PDUs, reads Data-Out payloads
//! straight into the task's buffer, sequences commands by CmdSN and hands complete
//! commands to the worker pool. Responses are written by whoever finishes the work (a
//! worker, or the reader for non-SCSI PDUs) under the connection's writer lock, which
//! also assigns StatSN so that StatSN order is wire order. Data-In is sent with one
//! vectored write of BHS + data slices — no copy of the data.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use rustio_scsi::{DirectIn, Response, Sense, Status, TaskAttr, Tmf};
use tracing::{debug, info, warn};

use rustio_iscsi_proto::login::SessionType;
use rustio_iscsi_proto::pdu::{
    self, ahs, BhsInfo, DataIn, DataOut, Digests, Header, LogoutReason, LogoutRequest,
    LogoutResponse, LogoutResponseCode, NopIn, NopOut, R2t, Reject, RejectReason, ScsiCommand,
    ScsiResponse, TaskAttribute, TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse,
    TmfFunction, TmfResponse, BHS_LEN, RESERVED_TAG,
};
use rustio_iscsi_proto::text;

use crate::budget::Reservation;
use crate::config::{target_address, Execution, AUTO_INLINE_MAX};
use crate::dataout::DataOutSeq;
use crate::limits::Deadline;
use crate::server::Shared;
use crate::session::{Admit, Session, TaskState};

/// Largest Expected Data Transfer Length we allocate a Data-Out buffer for.
const MAX_WRITE_EDTL: u32 = crate::MAX_TRANSFER_BYTES;
/// How long a PDU may stall half-received (no byte arriving) before the connection is
/// dropped.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// How long one PDU may take to arrive from its first byte to its last, however the
/// bytes trickle in (issue 20 item 4): the largest data segment (16 MiB, RFC 7143 13.12)
/// at 1 MB/s still fits, a peer dripping a byte at a time does not hold the reader.
pub(crate) const PDU_TIME_LIMIT: Duration = Duration::from_secs(60);
/// How long a worker waits for a connection's writer before handing its response over
/// to whoever holds it (issue 20 item 3). A healthy peer's writes take well under this.
const HANDOFF_WAIT: Duration = Duration::from_millis(20);
/// Per-connection budget of response bytes handed over and not yet sent.
const TX_QUEUE_MAX: usize = 16 << 20;
/// Server-wide budget of response bytes handed over and not yet sent (counted in
/// `Shared::tx_queued`).
pub(crate) const TX_QUEUE_SERVER_MAX: u64 = 256 << 20;
/// Poll tick of the reader (shutdown and NOP-In timers are checked this often).
pub(crate) const TICK: Duration = Duration::from_millis(500);
/// ABORTED COMMAND / PROTOCOL SERVICE CRC ERROR (RFC 7143 13.5.2 iSCSI condition).
const SENSE_PROTOCOL_CRC: Sense = Sense::new(rustio_scsi::SenseKey::AbortedCommand, 0x47, 0x05);
/// ILLEGAL REQUEST / INVALID FIELD IN CDB.
const SENSE_INVALID_FIELD_CDB: Sense = Sense::invalid_field_in_cdb(0, None);

/// A buffered reader that survives read timeouts without losing partial PDUs.
pub(crate) struct Reader {
    stream: TcpStream,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Reads fail with `TimedOut` once this passes (login phase; one PDU in FFP).
    deadline: Option<Deadline>,
}

impl Reader {
    pub(crate) fn new(stream: TcpStream, cap: usize) -> Reader {
        Reader {
            stream,
            buf: vec![0u8; cap].into_boxed_slice(),
            pos: 0,
            end: 0,
            deadline: None,
        }
    }

    /// Sets (or clears) the wall-clock deadline of every following read.
    pub(crate) fn set_deadline(&mut self, deadline: Option<Deadline>) {
        self.deadline = deadline;
    }

    /// `TimedOut` once the deadline has passed: checked before every socket read, so a
    /// byte arriving now and then cannot postpone it.
    fn check_deadline(&self) -> io::Result<()> {
        match self.deadline {
            Some(d) if d.passed(Instant::now()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "deadline passed while receiving",
            )),
            _ => Ok(()),
        }
    }

    fn buffered(&self) -> usize {
        self.end - self.pos
    }

    /// Reads more bytes into the buffer. `Ok(0)` means EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Waits until at least one byte of the next PDU is available. `Ok(false)` on a
    /// timeout tick with nothing buffered.
    pub(crate) fn wait_pdu(&mut self) -> io::Result<bool> {
        if self.buffered() > 0 {
            return Ok(true);
        }
        self.check_deadline()?;
        match self.fill() {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => Ok(true),
            Err(e) if is_timeout(&e) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads exactly `dst.len()` bytes, retrying over timeouts; large reads bypass the
    /// buffer. `abort` is polled on every timeout.
    pub(crate) fn read_exact(
        &mut self,
        dst: &mut [u8],
        abort: &dyn Fn() -> bool,
    ) -> io::Result<()> {
        let mut done = 0;
        let mut stalled = Duration::ZERO;
        while done < dst.len() {
            let avail = self.buffered();
            if avail > 0 {
                let n = avail.min(dst.len() - done);
                dst[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                done += n;
                continue;
            }
            self.check_deadline()?;
            let want = dst.len() - done;
            let res = if want >= self.buf.len() / 2 {
                match self.stream.read(&mut dst[done..]) {
                    Ok(n) => {
                        done += n;
                        Ok(n)
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.fill()
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => stalled = Duration::ZERO,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    if abort() {
                        return Err(io::ErrorKind::ConnectionAborted.into());
                    }
                    stalled += TICK;
                    if stalled >= STALL_LIMIT {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // More bytes already received means more PDUs waiting: work found now goes to
        // the pool rather than delaying them (see `dispatch`).
        let busy = self.buffered() > 0;
        READER_BUSY.with(|b| b.set(busy));
        Ok(())
    }

    /// Discards `n` bytes.
    pub(crate) fn skip(&mut self, mut n: usize, abort: &dyn Fn() -> bool) -> io::Result<()> {
        let mut scratch = [0u8; 4096];
        while n > 0 {
            let k = n.min(scratch.len());
            self.read_exact(&mut scratch[..k], abort)?;
            n -= k;
        }
        Ok(())
    }
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Time allowed to move `bytes` at `rate` bytes per second on top of `base` (the
/// no-progress timeout): the wall-clock bound of one transfer (issue 20 items 2, 3).
pub(crate) fn transfer_allowance(base: Duration, bytes: u64, rate: u64) -> Duration {
    let rate = rate.max(1);
    let secs = bytes / rate;
    // (bytes % rate) < rate, so this is < 10^9 and fits.
    let nanos = (u128::from(bytes % rate) * 1_000_000_000 / u128::from(rate)) as u32;
    base.saturating_add(Duration::new(secs, nanos))
}

/// Writes all of `bufs`, continuing after partial writes, and fails with `TimedOut`
/// once `deadline` has passed. `SO_SNDTIMEO` (the send timeout) only fires when a send
/// makes no progress at all, so a peer that reads a little now and then would otherwise
/// hold the writer for ever; and one blocked send may itself last the whole send timeout
/// before it returns a partial count. So after a partial write the socket's send timeout
/// is lowered to the time left (and restored at the end): the deadline holds to within a
/// millisecond. The clock and the socket option are touched only after a partial write.
pub(crate) fn write_all_vectored(
    w: &mut TcpStream,
    mut bufs: &mut [IoSlice<'_>],
    deadline: Option<Instant>,
) -> io::Result<()> {
    let mut restore: Option<Option<Duration>> = None;
    let result = loop {
        if bufs.is_empty() {
            break Ok(());
        }
        match w.write_vectored(bufs) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                IoSlice::advance_slices(&mut bufs, n);
                let Some(d) = deadline.filter(|_| !bufs.is_empty()) else {
                    continue;
                };
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "response not sent by its deadline",
                    ));
                }
                if restore.is_none() {
                    restore = Some(w.write_timeout()?);
                }
                let current = restore.flatten();
                if current.is_none_or(|t| left < t) {
                    // A zero timeout would mean "block for ever": at least 1 ms.
                    w.set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if let Some(t) = restore {
        let _ = w.set_write_timeout(t);
    }
    result
}

const ZEROS: [u8; 4] = [0; 4];

/// One PDU ready for the wire: header (+digest) and a borrowed data slice.
struct OutPdu<'a> {
    hdr: [u8; BHS_LEN + 4],
    hdr_len: usize,
    data: &'a [u8],
    pad: usize,
    dd: [u8; 4],
    dd_len: usize,
}

impl<'a> OutPdu<'a> {
    fn new(h: &Header, data: &'a [u8], digests: Digests) -> OutPdu<'a> {
        let bhs = h.encode(0, data.len() as u32);
        let mut hdr = [0u8; BHS_LEN + 4];
        hdr[..BHS_LEN].copy_from_slice(&bhs);
        let mut hdr_len = BHS_LEN;
        if digests.header {
            hdr[BHS_LEN..].copy_from_slice(&pdu::digest_bytes(pdu::crc32c(&bhs)));
            hdr_len += 4;
        }
        let pad = pdu::pad_len(data.len());
        let (dd, dd_len) = if digests.data && !data.is_empty() {
            let crc = pdu::crc32c_append(pdu::crc32c(data), &ZEROS[..pad]);
            (pdu::digest_bytes(crc), 4)
        } else {
            ([0; 4], 0)
        };
        OutPdu {
            hdr,
            hdr_len,
            data,
            pad,
            dd,
            dd_len,
        }
    }
}

fn write_pdus(w: &mut TcpStream, pdus: &[OutPdu<'_>], deadline: Instant) -> io::Result<()> {
    let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(pdus.len() * 4);
    for p in pdus {
        iov.push(IoSlice::new(&p.hdr[..p.hdr_len]));
        if !p.data.is_empty() {
            iov.push(IoSlice::new(p.data));
            if p.pad > 0 {
                iov.push(IoSlice::new(&ZEROS[..p.pad]));
            }
            if p.dd_len > 0 {
                iov.push(IoSlice::new(&p.dd));
            }
        }
    }
    write_all_vectored(w, &mut iov, Some(deadline))
}

struct Writer {
    stream: TcpStream,
    stat_sn: u32,
    broken: bool,
}

/// A CDB: 16 bytes from the BHS, longer with an extended CDB AHS.
#[derive(Debug, Clone)]
pub(crate) enum Cdb {
    Short([u8; 16]),
    Long(Vec<u8>),
}

impl Cdb {
    fn bytes(&self) -> &[u8] {
        match self {
            Cdb::Short(b) => b,
            Cdb::Long(v) => v,
        }
    }
}

/// A received SCSI command waiting for CmdSN order or data.
#[derive(Debug)]
pub(crate) struct NewCommand {
    hdr: ScsiCommand,
    cdb: Cdb,
    buf: Vec<u8>,
    received: u32,
    fail: Option<Sense>,
    /// Data-Out bytes this command collects: the CDB's transfer (bounded by EDTL), or
    /// the unsolicited data the initiator may send (RFC 7143 13.14), whichever is
    /// larger. Never more than EDTL; what EDTL promises beyond it is not reserved.
    need: u32,
    /// Buffer budget reserved for `need`; `None` while waiting for budget.
    budget: Option<Reservation>,
    /// No budget for data that comes unsolicited: it is read and discarded and the
    /// command is answered BUSY (SAM-5 5.3.1).
    busy: bool,
}

/// A PDU held back until its CmdSN comes up.
#[derive(Debug)]
pub(crate) struct Deferred {
    conn: Arc<Conn>,
    kind: DeferredKind,
}

#[derive(Debug)]
enum DeferredKind {
    Scsi(Box<NewCommand>),
    Nop(NopOut, Vec<u8>),
    /// Request, reply segment, more to come (C bit).
    Text(TextRequest, Vec<u8>, bool),
    Tmf(TaskMgmtRequest),
    Logout(LogoutRequest),
}

/// A write command collecting Data-Out.
#[derive(Debug)]
pub(crate) struct WriteTask {
    cmd: Box<NewCommand>,
    task: Arc<TaskState>,
    /// Waiting for buffer budget: no R2T sent yet, nothing held.
    held: bool,
    /// Last R2T sent or Data-Out received (for the Data-Out timeout).
    last_progress: Instant,
    /// When the command started waiting for budget (`held`) or, once funded, when it
    /// got its budget: the origin of its wall-clock limits.
    since: Instant,
    /// Unsolicited data and outstanding R2Ts (RFC 7143 11.7, 11.8).
    seq: DataOutSeq,
}

/// A job for the worker pool.
#[derive(Debug)]
pub(crate) struct ExecJob {
    sess: Arc<Session>,
    conn: Arc<Conn>,
    cmd: Box<NewCommand>,
    task: Arc<TaskState>,
}

/// State of a multi-PDU text response (RFC 7143 11.11 C bit).
#[derive(Debug)]
struct TextContinuation {
    itt: u32,
    ttt: u32,
    rest: Vec<u8>,
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
    shared: Arc<Shared>,
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
}

/// Data-Out buffers of one connection, recycled: without it every large write costs a
/// fresh allocation, which glibc serves from newly mapped pages (page faults and zeroing
/// of cold memory per command; measured in `bench/README.md`).
#[derive(Debug, Default)]
struct BufPool(Mutex<Vec<Vec<u8>>>);

impl BufPool {
    /// Most buffers kept.
    const MAX_BUFS: usize = 16;
    /// Most bytes (capacity) kept, so that an idle connection holds little memory.
    const MAX_BYTES: usize = 4 << 20;
    /// Largest single buffer kept.
    const MAX_BUF: usize = Self::MAX_BYTES / 4;

    /// A zero-filled buffer of `len` bytes (a recycled one when there is one). Write
    /// commands take only what has arrived and grow the buffer as data is solicited.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut v = self.0.lock().pop().unwrap_or_default();
        v.clear();
        v.resize(len, 0);
        v
    }

    /// Returns a buffer for reuse (dropped when the pool is full or it is too large).
    fn give(&self, v: Vec<u8>) {
        if v.capacity() == 0 || v.capacity() > Self::MAX_BUF {
            return;
        }
        let mut pool = self.0.lock();
        let held: usize = pool.iter().map(Vec::capacity).sum();
        if pool.len() < Self::MAX_BUFS && held + v.capacity() <= Self::MAX_BYTES {
            pool.push(v);
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stat_sn", &self.stat_sn)
            .finish()
    }
}

impl Conn {
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
        shared: Arc<Shared>,
    ) -> io::Result<Conn> {
        let (send_timeout, min_rate) = {
            let cfg = shared.config();
            (cfg.send_timeout, cfg.min_transfer_rate)
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
            }),
            stream: stream.try_clone()?,
            closing: AtomicBool::new(false),
            writes: Mutex::new(HashMap::new()),
            next_ttt: AtomicU32::new(1),
            session,
            shared,
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
        })
    }

    /// Writes PDUs within their wall-clock deadline (send timeout + size at the minimum
    /// rate), marking the writer busy meanwhile for [`run_job`].
    fn write_out(&self, w: &mut Writer, pdus: &[OutPdu<'_>]) -> io::Result<()> {
        let now = Instant::now();
        let bytes: u64 = pdus.iter().map(|p| p.data.len() as u64).sum();
        let deadline = now + transfer_allowance(self.send_timeout, bytes, self.min_rate);
        let stamp = (now.duration_since(self.born).as_nanos() as u64) | 1;
        self.send_started.store(stamp, Ordering::Release);
        let r = write_pdus(&mut w.stream, pdus, deadline);
        self.send_started.store(0, Ordering::Release);
        r
    }

    /// Whether a write on this connection has been in progress longer than
    /// [`HANDOFF_WAIT`] (the peer is slow to read).
    fn writer_stuck(&self) -> bool {
        let since = self.send_started.load(Ordering::Acquire);
        if since == 0 {
            return false;
        }
        let now = self.born.elapsed().as_nanos() as u64;
        now.saturating_sub(since) > HANDOFF_WAIT.as_nanos() as u64
    }

    /// How long anyone waits for the writer: a holder's own write (at most the largest
    /// transfer) is bounded by its deadline, and the queue it writes after it by the send
    /// budget; waiting less would drop a peer that reads slowly but within the minimum
    /// rate.
    fn writer_wait(&self) -> Duration {
        transfer_allowance(
            self.send_timeout,
            u64::from(crate::MAX_TRANSFER_BYTES) + TX_QUEUE_MAX as u64,
            self.min_rate,
        )
    }

    /// Takes the writer lock within [`Conn::writer_wait`], or closes the connection (a
    /// holder that long is writing to a peer that does not read).
    fn lock_writer(&self) -> Option<MutexGuard<'_, Writer>> {
        if let Some(g) = self.writer.try_lock_for(self.writer_wait()) {
            return Some(g);
        }
        self.shared
            .limit_counters
            .send_timeouts
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            conn = self.id,
            peer = %self.peer,
            initiator = %self.session.initiator,
            wait_secs = self.writer_wait().as_secs_f64(),
            "connection's writer stuck behind a peer that does not read; dropping the connection"
        );
        self.close();
        None
    }

    /// Closes the socket; the reader thread notices and cleans up.
    pub(crate) fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn alloc_ttt(&self) -> u32 {
        loop {
            let t = self.next_ttt.fetch_add(1, Ordering::Relaxed);
            if t != RESERVED_TAG && t != 0 {
                return t;
            }
        }
    }

    /// Sends one PDU. `build` receives (StatSN, ExpCmdSN, MaxCmdSN); `advance` says
    /// whether this PDU consumes a StatSN.
    fn send(
        &self,
        data: &[u8],
        advance: bool,
        build: impl FnOnce(u32, u32, u32) -> Header,
    ) -> bool {
        let Some(mut w) = self.lock_writer() else {
            return false;
        };
        if w.broken {
            self.release(w);
            return false;
        }
        let stat_sn = w.stat_sn;
        let h = build(
            stat_sn,
            self.session.exp_cmd_sn(),
            self.session.max_cmd_sn(),
        );
        let out = [OutPdu::new(&h, data, self.digests)];
        let ok = match self.write_out(&mut w, &out) {
            Ok(()) => {
                if advance {
                    w.stat_sn = stat_sn.wrapping_add(1);
                }
                true
            }
            Err(e) => {
                self.write_failed(&mut w, &e);
                false
            }
        };
        self.release(w);
        ok
    }

    /// A write failed: the connection is unusable (StatSN order is lost). A send that
    /// made no progress for the send timeout (`SO_SNDTIMEO`) means the peer stopped
    /// reading; that is logged with who it is.
    fn write_failed(&self, w: &mut Writer, e: &io::Error) {
        w.broken = true;
        if is_timeout(e) {
            self.shared
                .limit_counters
                .send_timeouts
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                conn = self.id,
                peer = %self.peer,
                initiator = %self.session.initiator,
                send_timeout_secs = self.send_timeout.as_secs_f64(),
                min_rate = self.min_rate,
                "peer stopped reading or reads too slowly: no send progress within the send timeout, or a response not sent within the send timeout plus its size at the minimum rate; dropping the connection"
            );
        } else {
            debug!(conn = self.id, error = %e, "write failed");
        }
        self.close();
    }

    /// Releases the writer after writing the responses other workers handed over
    /// meanwhile, then puts the jobs parked behind them back on the pool. Every holder
    /// of the writer lock ends through here, and whoever queues a response tries the
    /// lock after queuing, so nothing queued is left behind.
    fn release<'a>(&'a self, mut g: MutexGuard<'a, Writer>) {
        loop {
            loop {
                let item = {
                    let mut tx = self.tx.lock();
                    let item = tx.items.pop_front();
                    if let Some(i) = &item {
                        tx.bytes -= i.data.len();
                        self.shared
                            .tx_queued
                            .fetch_sub(i.data.len() as u64, Ordering::AcqRel);
                        self.tx_pending.store(tx.items.len(), Ordering::Release);
                    }
                    item
                };
                let Some(i) = item else {
                    break;
                };
                self.write_result(&mut g, &i.hdr, &i.resp, &i.data, i.residual);
            }
            let parked = std::mem::take(&mut self.tx.lock().parked);
            drop(g);
            for job in parked {
                self.shared.submit(job);
            }
            if self.tx.lock().items.is_empty() {
                return;
            }
            match self.writer.try_lock() {
                Some(next) => g = next,
                None => return,
            }
        }
    }

    /// Queues a result for the writer's holder; `false` when over the send budget.
    fn enqueue(&self, hdr: &ScsiCommand, resp: &Response, data: &[u8], residual: Residual) -> bool {
        let mut tx = self.tx.lock();
        let len = data.len();
        if tx.bytes.saturating_add(len) > TX_QUEUE_MAX {
            return false;
        }
        let total = self
            .shared
            .tx_queued
            .fetch_add(len as u64, Ordering::AcqRel);
        if total.saturating_add(len as u64) > TX_QUEUE_SERVER_MAX {
            self.shared
                .tx_queued
                .fetch_sub(len as u64, Ordering::AcqRel);
            return false;
        }
        tx.bytes += len;
        tx.items.push_back(QueuedResult {
            hdr: *hdr,
            resp: *resp,
            data: data.to_vec(),
            residual,
        });
        self.tx_pending.store(tx.items.len(), Ordering::Release);
        true
    }

    /// Sends a Reject echoing the offending BHS (RFC 7143 11.17).
    fn reject(&self, reason: RejectReason, bhs: &[u8; BHS_LEN]) {
        debug!(conn = self.id, reason = ?reason, opcode = bhs[0] & 0x3f, "reject");
        self.shared.metrics.rejects.fetch_add(1, Ordering::Relaxed);
        self.send(bhs, true, |stat_sn, exp, max| {
            Header::Reject(Reject {
                reason: reason as u8,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                data_sn: 0,
            })
        });
    }

    /// Sends an Asynchronous Message requesting logout within `secs` (RFC 7143 11.9.1
    /// AsyncEvent 1).
    pub(crate) fn request_logout(&self, secs: u16) {
        self.logout_requested.store(true, Ordering::Release);
        self.send(&[], true, |stat_sn, exp, max| {
            Header::AsyncMessage(pdu::AsyncMessage {
                lun: 0,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                event: 1,
                vcode: 0,
                param1: 0,
                param2: 0,
                param3: secs,
            })
        });
    }

    /// Sends the outcome of a SCSI command: Data-In PDUs (status in the last one when
    /// possible, RFC 7143 11.7.4) and/or a SCSI Response.
    fn send_scsi_result(
        &self,
        cmd: &NewCommand,
        resp: &Response,
        data_in: &[u8],
        residual: Residual,
    ) -> bool {
        let hdr = &cmd.hdr;
        let send_len = if hdr.read {
            data_in.len().min(hdr.edtl as usize)
        } else {
            0
        };
        let data = &data_in[..send_len];
        // No worker waits long on a connection whose peer is slow to read (issue 20
        // item 3): after HANDOFF_WAIT the result is handed to the writer's holder.
        let mut w = match self.writer.try_lock_for(HANDOFF_WAIT) {
            Some(w) => w,
            None => {
                if self.enqueue(hdr, resp, data, residual) {
                    if let Some(g) = self.writer.try_lock() {
                        self.release(g);
                    }
                    return true;
                }
                // Over the send budget: wait, bounded; a writer held that long means
                // the peer does not read, and the connection goes.
                match self.lock_writer() {
                    Some(w) => w,
                    None => return false,
                }
            }
        };
        let ok = self.write_result(&mut w, hdr, resp, data, residual);
        self.release(w);
        ok
    }

    /// Writes one SCSI result under the writer lock, assigning its StatSN.
    fn write_result(
        &self,
        w: &mut Writer,
        hdr: &ScsiCommand,
        resp: &Response,
        data: &[u8],
        residual: Residual,
    ) -> bool {
        let sess = &self.session;
        let itt = hdr.itt;
        let status = resp.status.as_u8();
        let sense = resp.sense_bytes();
        // Phase collapse only without sense data and for non-exception status.
        let collapse = !data.is_empty()
            && sense.is_none()
            && matches!(resp.status, Status::Good | Status::ConditionMet);
        let mrdsl = (self.send_mrdsl.load(Ordering::Relaxed) as usize).max(512);
        let burst = (sess.params.max_burst_length as usize).max(512);
        if w.broken {
            return false;
        }
        let exp = sess.exp_cmd_sn();
        let max = sess.max_cmd_sn();
        let mut pdus: Vec<OutPdu<'_>> = Vec::with_capacity(data.len() / mrdsl + 2);
        let mut offset = 0usize;
        let mut data_sn = 0u32;
        let mut in_burst = 0usize;
        let mut stat_sn = w.stat_sn;
        while offset < data.len() {
            let n = (data.len() - offset).min(mrdsl).min(burst - in_burst);
            let last = offset + n == data.len();
            in_burst += n;
            let end_of_burst = in_burst == burst || last;
            if end_of_burst {
                in_burst = 0;
            }
            let with_status = last && collapse;
            let h = Header::DataIn(DataIn {
                final_bit: end_of_burst,
                ack: false,
                overflow: with_status && residual.overflow,
                underflow: with_status && residual.underflow,
                status_present: with_status,
                status,
                lun: if with_status { 0 } else { hdr.lun },
                itt,
                ttt: RESERVED_TAG,
                stat_sn: if with_status { stat_sn } else { 0 },
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                data_sn,
                buffer_offset: offset as u32,
                residual: if with_status { residual.count } else { 0 },
            });
            pdus.push(OutPdu::new(&h, &data[offset..offset + n], self.digests));
            if with_status {
                stat_sn = stat_sn.wrapping_add(1);
            }
            data_sn = data_sn.wrapping_add(1);
            offset += n;
        }
        let mut sense_seg = [0u8; 2 + rustio_scsi::FIXED_SENSE_LEN];
        let mut sense_len = 0;
        if let Some(s) = sense {
            sense_seg[..2].copy_from_slice(&(s.len() as u16).to_be_bytes());
            sense_seg[2..].copy_from_slice(&s);
            sense_len = sense_seg.len();
        }
        if !collapse {
            let h = Header::ScsiResponse(ScsiResponse {
                bidi_overflow: false,
                bidi_underflow: false,
                overflow: residual.overflow,
                underflow: residual.underflow,
                response: 0,
                status,
                itt,
                snack_tag: 0,
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                exp_data_sn: data_sn,
                bidi_residual: 0,
                residual: residual.count,
            });
            pdus.push(OutPdu::new(&h, &sense_seg[..sense_len], self.digests));
            stat_sn = stat_sn.wrapping_add(1);
        }
        match self.write_out(w, &pdus) {
            Ok(()) => {
                w.stat_sn = stat_sn;
                true
            }
            Err(e) => {
                self.write_failed(w, &e);
                false
            }
        }
    }
}

/// Residual information for a SCSI Response (RFC 7143 11.4.5).
#[derive(Debug, Clone, Copy, Default)]
struct Residual {
    overflow: bool,
    underflow: bool,
    count: u32,
}

impl Residual {
    fn of(expected: u32, actual: u64) -> Residual {
        let e = u64::from(expected);
        if actual > e {
            Residual {
                overflow: true,
                underflow: false,
                count: u32::try_from(actual - e).unwrap_or(u32::MAX),
            }
        } else if actual < e {
            Residual {
                overflow: false,
                underflow: true,
                count: u32::try_from(e - actual).unwrap_or(u32::MAX),
            }
        } else {
            Residual::default()
        }
    }
}

fn task_attr(a: TaskAttribute) -> TaskAttr {
    match a {
        TaskAttribute::Ordered => TaskAttr::Ordered,
        TaskAttribute::HeadOfQueue => TaskAttr::HeadOfQueue,
        TaskAttribute::Aca => TaskAttr::Aca,
        _ => TaskAttr::Simple,
    }
}

fn is_read_opcode(op: u8) -> bool {
    matches!(op, 0x08 | 0x28 | 0xa8 | 0x88)
}

fn is_write_opcode(op: u8) -> bool {
    matches!(op, 0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e)
}

/// READs up to this long are read in place into [`ExecBufs::read`].
const DIRECT_READ_MAX: usize = 1 << 20;

/// Reusable buffers of a thread executing commands.
#[derive(Debug, Default)]
pub(crate) struct ExecBufs {
    /// Data-in the engine builds: control commands, READs of another length than the
    /// initiator expects (residuals), READs above [`DIRECT_READ_MAX`].
    staged: Vec<u8>,
    /// READ data, read in place by the backstore (see `rustio_scsi::direct`). Kept at
    /// its largest length, so it is zero-filled once per thread rather than per READ.
    read: Vec<u8>,
}

impl ExecBufs {
    /// Gives back memory after an unusually large command.
    pub(crate) fn trim(&mut self) {
        if self.staged.capacity() > 16 << 20 {
            self.staged = Vec::new();
        }
    }
}

/// Runs one job: parked on its connection instead while that connection's writer is
/// stuck — responses handed over and waiting, or a write in progress for longer than
/// [`HANDOFF_WAIT`] (issue 20 item 3) — so that a peer that reads slowly or not at all
/// occupies at most the one worker writing to it. The writer's holder puts parked jobs
/// back on the pool when it lets go of the writer. A healthy connection's jobs still
/// run in parallel: a write in progress for less than `HANDOFF_WAIT` parks nothing.
/// Jobs of a closing connection are not executed: nobody will read their answers.
pub(crate) fn run_job(job: ExecJob, bufs: &mut ExecBufs) {
    if job.conn.is_closing() {
        finish_task(&job.sess, &job.cmd);
        return;
    }
    if job.conn.tx_pending.load(Ordering::Acquire) > 0 || job.conn.writer_stuck() {
        let conn = job.conn.clone();
        let mut tx = conn.tx.lock();
        // Decided under the queue's lock: the holder takes the parked jobs under it
        // after its write ends (and clears `send_started` before), so none is stranded.
        if !tx.items.is_empty() || conn.writer_stuck() {
            tx.parked.push(job);
            return;
        }
    }
    execute(job, bufs);
}

/// Executes one job on a worker thread and sends the result.
pub(crate) fn execute(job: ExecJob, bufs: &mut ExecBufs) {
    let ExecJob {
        sess,
        conn,
        mut cmd,
        task,
    } = job;
    bufs.staged.clear();
    if task.aborted.load(Ordering::Acquire) {
        finish_task(&sess, &cmd);
        return;
    }
    let cdb = cmd.cdb.bytes();
    let lun = rustio_scsi::decode_lun_u64(cmd.hdr.lun).unwrap_or(u64::MAX);
    let lun_entry = sess.lun(cmd.hdr.lun);
    let needed_out = if cmd.hdr.write {
        sess.lun_map.data_out_len(lun, cdb)
    } else {
        None
    };
    // EDTL shorter than the CDB's transfer: write only what EDTL covers and report
    // the overflow (RFC 7143 11.4.5.1, following FCP-4 9.4.2 "data beyond the
    // expected length shall not be transferred").
    let block_size = lun_entry.map(|l| l.lu.block_size()).unwrap_or(512);
    let truncated = match needed_out {
        Some(n) if cmd.hdr.write && n > cmd.hdr.edtl && cmd.fail.is_none() => {
            truncate_write_cdb(cdb, cmd.hdr.edtl / block_size.max(1))
        }
        _ => None,
    };
    let mut in_place = false;
    let resp = match cmd.fail {
        Some(s) => Response::check(s),
        None if matches!(truncated, Some(None)) => Response::GOOD,
        None => {
            let cdb: &[u8] = match &truncated {
                Some(Some(c)) => c,
                _ => cdb,
            };
            let data_out: &[u8] = if cmd.hdr.write {
                let n = match &truncated {
                    Some(_) => {
                        cmd.buf.len() / block_size.max(1) as usize * block_size.max(1) as usize
                    }
                    // COMPARE AND WRITE splits its data-out in halves: the device
                    // server must see all of it to reject a length that does not match.
                    None if cdb.first() == Some(&0x89) => cmd.buf.len(),
                    None => needed_out.map(|n| n as usize).unwrap_or(cmd.buf.len()),
                };
                &cmd.buf[..n.min(cmd.buf.len())]
            } else {
                &[]
            };
            let direct_len = if cmd.hdr.read && !cmd.hdr.write {
                cmd.hdr.edtl as usize
            } else {
                0
            };
            let direct_ok = direct_len > 0 && direct_len <= DIRECT_READ_MAX;
            if direct_ok && bufs.read.len() < direct_len {
                bufs.read.resize(direct_len, 0);
            }
            let lent = if direct_ok { direct_len } else { 0 };
            let mut slices = [IoSliceMut::new(&mut bufs.read[..lent])];
            let mut direct = DirectIn::new(&mut slices);
            let resp = sess.lun_map.execute_direct(
                &sess.nexus,
                lun,
                cdb,
                data_out,
                u64::from(cmd.hdr.itt),
                task_attr(cmd.hdr.attr),
                &mut bufs.staged,
                direct_ok.then_some(&mut direct),
            );
            in_place = direct.used();
            resp
        }
    };
    let data_in: &[u8] = if in_place {
        &bufs.read[..cmd.hdr.edtl as usize]
    } else {
        &bufs.staged
    };
    let residual = if cmd.hdr.write {
        match needed_out {
            Some(n) => Residual::of(cmd.hdr.edtl, u64::from(n)),
            None => Residual::default(),
        }
    } else if cmd.hdr.read || !data_in.is_empty() {
        Residual::of(cmd.hdr.edtl, data_in.len() as u64)
    } else {
        Residual::default()
    };
    // Counters (relaxed atomics; no lock on the I/O path).
    let op = cdb.first().copied().unwrap_or(0);
    let ok = matches!(resp.status, Status::Good | Status::ConditionMet);
    for c in [Some(&sess.counters), lun_entry.map(|l| &l.counters)]
        .into_iter()
        .flatten()
    {
        c.record(
            is_read_opcode(op),
            is_write_opcode(op),
            if cmd.hdr.read {
                data_in.len().min(cmd.hdr.edtl as usize) as u64
            } else {
                0
            },
            if cmd.hdr.write {
                cmd.buf.len() as u64
            } else {
                0
            },
            ok,
        );
    }
    if !cmd.hdr.immediate {
        sess.complete_one();
    }
    if sess.claim_response(cmd.hdr.itt) {
        conn.send_scsi_result(&cmd, &resp, data_in, residual);
    }
    conn.write_bufs.give(std::mem::take(&mut cmd.buf));
}

/// Rewrites the TRANSFER LENGTH of a WRITE / WRITE AND VERIFY CDB to `blocks`.
/// `Some(None)` means nothing is left to write; `None` means the CDB is not one we
/// rewrite (the device server then sees the short data-out and answers itself).
fn truncate_write_cdb(cdb: &[u8], blocks: u32) -> Option<Option<Vec<u8>>> {
    let mut c = cdb.to_vec();
    match (cdb.first()?, cdb.len()) {
        (0x0a, 6..) => {
            // WRITE(6): 0 means 256 blocks, so nothing-to-write is handled apart.
            if blocks == 0 {
                return Some(None);
            }
            c[4] = u8::try_from(blocks).ok()?;
        }
        (0x2a | 0x2e, 10..) => c[7..9].copy_from_slice(&u16::try_from(blocks).ok()?.to_be_bytes()),
        (0xaa | 0xae, 12..) => c[6..10].copy_from_slice(&blocks.to_be_bytes()),
        (0x8a | 0x8e, 16..) => c[10..14].copy_from_slice(&blocks.to_be_bytes()),
        _ => return None,
    }
    if blocks == 0 {
        return Some(None);
    }
    Some(Some(c))
}

fn finish_task(sess: &Session, cmd: &NewCommand) {
    if !cmd.hdr.immediate {
        sess.complete_one();
    }
    sess.remove_task(cmd.hdr.itt);
}

/// The reader side of a connection.
pub(crate) struct ConnReader {
    conn: Arc<Conn>,
    reader: Reader,
    last_rx: Instant,
    ping_sent: Option<Instant>,
    text: Option<TextContinuation>,
    text_in: Vec<u8>,
    nop_interval: Duration,
    nop_timeout: Duration,
    /// Write commands may wait this long for promised Data-Out.
    data_out_timeout: Duration,
    /// Last scan for writes past the Data-Out timeout.
    last_scan: Instant,
}

enum Flow {
    Continue,
    Close,
}

impl ConnReader {
    pub(crate) fn new(conn: Arc<Conn>, reader: Reader) -> ConnReader {
        let (nop_interval, nop_timeout) = match &conn.session.target {
            Some((_, tpg)) => (tpg.params.nopin_interval, tpg.params.nopin_response_timeout),
            None => (Duration::from_secs(15), Duration::from_secs(30)),
        };
        let data_out_timeout = conn.shared.config().data_out_timeout;
        ConnReader {
            conn,
            reader,
            last_rx: Instant::now(),
            ping_sent: None,
            text: None,
            text_in: Vec::new(),
            nop_interval,
            nop_timeout,
            data_out_timeout,
            last_scan: Instant::now(),
        }
    }

    /// Runs the full feature phase until the connection ends.
    pub(crate) fn run(mut self) {
        loop {
            if self.conn.is_closing() {
                break;
            }
            match self.reader.wait_pdu() {
                Ok(true) => {}
                Ok(false) => {
                    if !self.idle_tick() || !self.housekeeping() {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    debug!(conn = self.conn.id, error = %e, "connection ended");
                    break;
                }
            }
            // A PDU that has begun must be complete within PDU_TIME_LIMIT, however
            // slowly its bytes arrive (issue 20 item 4).
            self.reader
                .set_deadline(Deadline::after(Instant::now(), PDU_TIME_LIMIT));
            let flow = self.one_pdu();
            self.reader.set_deadline(None);
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => break,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    warn!(
                        conn = self.conn.id,
                        peer = %self.conn.peer,
                        initiator = %self.conn.session.initiator,
                        limit_secs = PDU_TIME_LIMIT.as_secs(),
                        "PDU not received in time; dropping the connection"
                    );
                    break;
                }
                Err(e) => {
                    debug!(conn = self.conn.id, error = %e, "connection dropped");
                    break;
                }
            }
            if !self.housekeeping() {
                break;
            }
        }
        self.cleanup();
    }

    /// Starts writes that were waiting for buffer budget and, at most once per tick:
    /// answers BUSY to writes that waited for budget longer than the Data-Out timeout;
    /// drops the connection when a write has waited past the Data-Out timeout for data
    /// it was promised, or has not received all of it within the Data-Out timeout plus
    /// its size at the minimum rate however the data trickles (its budget is released
    /// with it); drops it when commands have waited in the CmdSN window longer than the
    /// Data-Out timeout for a CmdSN that does not come (issue 20 item 2). `false`: close.
    fn housekeeping(&mut self) -> bool {
        retry_held(&self.conn);
        let now = Instant::now();
        if now.duration_since(self.last_scan) < TICK {
            return true;
        }
        self.last_scan = now;
        let limit = self.data_out_timeout;
        let rate = self.conn.min_rate;
        expire_held(&self.conn, now, limit);
        if let Some(stalled) = self.conn.session.window_stalled_for(now) {
            if stalled >= limit {
                warn!(
                    conn = self.conn.id,
                    peer = %self.conn.peer,
                    initiator = %self.conn.session.initiator,
                    exp_cmd_sn = self.conn.session.exp_cmd_sn(),
                    waited_secs = stalled.as_secs_f64(),
                    "commands held in the CmdSN window for a CmdSN that did not come within the Data-Out timeout; dropping the connection"
                );
                return false;
            }
        }
        let stale = self
            .conn
            .writes
            .lock()
            .values()
            .find(|w| {
                !w.held
                    && (now.duration_since(w.last_progress) >= limit
                        || now.duration_since(w.since)
                            >= transfer_allowance(limit, u64::from(w.cmd.need), rate))
            })
            .map(|w| (w.cmd.hdr.itt, w.cmd.need, w.cmd.received));
        if let Some((itt, need, received)) = stale {
            self.conn
                .shared
                .limit_counters
                .data_out_timeouts
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                conn = self.conn.id,
                peer = %self.conn.peer,
                initiator = %self.conn.session.initiator,
                itt,
                need,
                received,
                data_out_timeout_secs = limit.as_secs_f64(),
                min_rate = rate,
                "promised Data-Out did not arrive within the Data-Out timeout (or not all of it within the timeout plus its size at the minimum rate); dropping the connection"
            );
            return false;
        }
        true
    }

    /// NOP-In keepalive (RFC 7143 11.19): ping an idle connection, drop it if the
    /// initiator does not answer.
    fn idle_tick(&mut self) -> bool {
        if self.nop_interval.is_zero() {
            return true;
        }
        let now = Instant::now();
        if let Some(sent) = self.ping_sent {
            if now.duration_since(self.last_rx) >= self.nop_timeout
                && now.duration_since(sent) >= self.nop_timeout
            {
                info!(conn = self.conn.id, peer = %self.conn.peer, "NOP-In not answered; dropping connection");
                return false;
            }
        } else if now.duration_since(self.last_rx) >= self.nop_interval {
            let ttt = self.conn.alloc_ttt();
            self.conn.ping_ttt.store(ttt, Ordering::Release);
            self.ping_sent = Some(now);
            self.conn.send(&[], false, |stat_sn, exp, max| {
                Header::NopIn(NopIn {
                    lun: 0,
                    itt: RESERVED_TAG,
                    ttt,
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                })
            });
        }
        true
    }

    fn read_vec(&mut self, len: usize) -> io::Result<(Vec<u8>, bool)> {
        let mut v = vec![0u8; len];
        let ok = self.read_into(&mut v)?;
        Ok((v, ok))
    }

    /// Reads a data segment of `dst.len()` bytes plus padding and digest into `dst`;
    /// returns whether the data digest matched.
    fn read_into(&mut self, dst: &mut [u8]) -> io::Result<bool> {
        let conn = self.conn.clone();
        let abort = move || conn.is_closing();
        self.reader.read_exact(dst, &abort)?;
        let pad = pdu::pad_len(dst.len());
        let mut tail = [0u8; 8];
        let dd = if self.conn.digests.data && !dst.is_empty() {
            4
        } else {
            0
        };
        self.reader.read_exact(&mut tail[..pad + dd], &abort)?;
        if dd == 0 {
            return Ok(true);
        }
        let crc = pdu::crc32c_append(pdu::crc32c(dst), &tail[..pad]);
        Ok(pdu::digest_bytes(crc) == tail[pad..pad + 4])
    }

    fn skip_segment(&mut self, len: usize) -> io::Result<()> {
        let extra = pdu::pad_len(len)
            + if self.conn.digests.data && len > 0 {
                4
            } else {
                0
            };
        let conn = self.conn.clone();
        let abort = move || conn.is_closing();
        self.reader.skip(len + extra, &abort)
    }

    fn one_pdu(&mut self) -> io::Result<Flow> {
        let mut bhs = [0u8; BHS_LEN];
        {
            let conn = self.conn.clone();
            let abort = move || conn.is_closing();
            self.reader.read_exact(&mut bhs, &abort)?;
        }
        let info = BhsInfo::of(&bhs);
        let mut ahs_area = vec![0u8; info.ahs_len];
        {
            let conn = self.conn.clone();
            let abort = move || conn.is_closing();
            self.reader.read_exact(&mut ahs_area, &abort)?;
            if self.conn.digests.header {
                let mut d = [0u8; 4];
                self.reader.read_exact(&mut d, &abort)?;
                let crc = pdu::crc32c_append(pdu::crc32c(&bhs), &ahs_area);
                if pdu::digest_bytes(crc) != d {
                    // RFC 7143 7.8: a header digest error cannot be trusted for framing;
                    // at ErrorRecoveryLevel 0 the connection is dropped.
                    warn!(
                        conn = self.conn.id,
                        "header digest error; dropping connection"
                    );
                    return Ok(Flow::Close);
                }
            }
        }
        self.last_rx = Instant::now();
        self.ping_sent = None;
        self.conn
            .shared
            .metrics
            .pdus_in
            .fetch_add(1, Ordering::Relaxed);
        let len = info.data_len as usize;
        if info.data_len > self.conn.recv_mrdsl {
            // RFC 7143 13.12: more than we declared. Skip it and reject.
            self.skip_segment(len)?;
            self.conn.reject(RejectReason::ProtocolError, &bhs);
            return Ok(Flow::Continue);
        }
        let discovery = self.conn.session.session_type == SessionType::Discovery;
        let header = pdu::Header::parse(&bhs);
        match header {
            Header::ScsiCommand(c) if !discovery => self.on_scsi_command(c, &bhs, &ahs_area, len),
            Header::DataOut(d) if !discovery => self.on_data_out(d, &bhs, len),
            Header::NopOut(n) => self.on_nop_out(n, &bhs, len),
            Header::TextRequest(t) => self.on_text(t, &bhs, len),
            Header::TaskMgmtRequest(t) if !discovery => {
                self.skip_segment(len)?;
                self.admit_or_run(t.immediate, t.cmd_sn, DeferredKind::Tmf(t))
            }
            Header::LogoutRequest(l) => {
                self.skip_segment(len)?;
                self.admit_or_run(l.immediate, l.cmd_sn, DeferredKind::Logout(l))
            }
            Header::SnackRequest(_) => {
                // SNACK needs ErrorRecoveryLevel > 0 (RFC 7143 11.16).
                self.skip_segment(len)?;
                self.conn.reject(RejectReason::ProtocolError, &bhs);
                Ok(Flow::Continue)
            }
            Header::Unknown { .. } => {
                self.skip_segment(len)?;
                self.conn.reject(RejectReason::CommandNotSupported, &bhs);
                Ok(Flow::Continue)
            }
            _ => {
                // Target opcodes, Login in FFP, or SCSI traffic on a discovery session.
                self.skip_segment(len)?;
                self.conn.reject(RejectReason::ProtocolError, &bhs);
                Ok(Flow::Continue)
            }
        }
    }

    /// Admits a non-immediate PDU through the CmdSN window, or runs an immediate one.
    fn admit_or_run(
        &mut self,
        immediate: bool,
        cmd_sn: u32,
        kind: DeferredKind,
    ) -> io::Result<Flow> {
        let d = Deferred {
            conn: self.conn.clone(),
            kind,
        };
        if immediate {
            return Ok(process(d, true));
        }
        let sess = self.conn.session.clone();
        match sess.admit(cmd_sn, d) {
            (Admit::Now, Some(d)) => {
                let mut flow = process(d, false);
                while let Some(next) = sess.next_held() {
                    if let Flow::Close = process(next, false) {
                        flow = Flow::Close;
                    }
                }
                Ok(flow)
            }
            (Admit::Held, _) => Ok(Flow::Continue),
            _ => {
                debug!(
                    conn = self.conn.id,
                    cmd_sn,
                    exp = sess.exp_cmd_sn(),
                    max = sess.max_cmd_sn(),
                    "CmdSN outside window; ignored"
                );
                Ok(Flow::Continue)
            }
        }
    }

    fn on_scsi_command(
        &mut self,
        c: ScsiCommand,
        bhs: &[u8; BHS_LEN],
        ahs_area: &[u8],
        len: usize,
    ) -> io::Result<Flow> {
        let sess = self.conn.session.clone();
        let params = sess.params;
        // Extended CDB (RFC 7143 11.3.5 / 11.2.2.3).
        let mut cdb = Cdb::Short(c.cdb);
        match pdu::parse_ahs(ahs_area) {
            Ok(list) => {
                for a in list {
                    if a.ahs_type == ahs::EXTENDED_CDB && !a.data.is_empty() {
                        let mut v = c.cdb.to_vec();
                        v.extend_from_slice(&a.data[1..]);
                        cdb = Cdb::Long(v);
                    }
                }
            }
            Err(_) => {
                self.skip_segment(len)?;
                self.conn.reject(RejectReason::InvalidPduField, bhs);
                return Ok(self.consume_sn(c.immediate, c.cmd_sn));
            }
        }
        let mut fail = None;
        let protocol_error = (len > 0 && (!c.write || !params.immediate_data))
            || len as u64 > u64::from(c.edtl)
            || len as u32 > params.first_burst_length
            || (!c.final_bit && (!c.write || params.initial_r2t))
            || (c.write && c.edtl > MAX_WRITE_EDTL);
        if protocol_error {
            self.skip_segment(len)?;
            self.conn.reject(
                if c.write && c.edtl > MAX_WRITE_EDTL {
                    RejectReason::InvalidPduField
                } else {
                    RejectReason::ProtocolError
                },
                bhs,
            );
            return Ok(self.consume_sn(c.immediate, c.cmd_sn));
        }
        if c.read && c.write {
            // Bidirectional commands are not supported.
            fail = Some(SENSE_INVALID_FIELD_CDB);
        }
        // Data-Out memory (issue 20 item 2): what this command can really transfer is
        // reserved when it is admitted in CmdSN order (`start_command`), so that a
        // command waiting in the CmdSN window holds no more than its immediate data. That
        // data is read now, so it is reserved now; without budget for it, it is skipped
        // and the command will be answered BUSY.
        let need = if c.write {
            write_transfer_len(&sess, &c, cdb.bytes()).max(unsolicited_end(&c, &params, len))
        } else {
            0
        };
        let mut budget = None;
        let mut busy = false;
        if len > 0 && c.write {
            budget = Reservation::try_new(
                &sess.write_budget,
                &self.conn.shared.write_budget,
                len as u64,
            );
            if budget.is_none() {
                self.skip_segment(len)?;
                busy = true;
            }
        }
        let mut buf = if len > 0 && !busy {
            self.conn.write_bufs.take(len)
        } else {
            Vec::new()
        };
        if len > 0 && !busy {
            let ok = self.read_into(&mut buf[..len])?;
            if !ok {
                // RFC 7143 7.8: Reject with data digest error; the command ends with
                // CHECK CONDITION (protocol service CRC error) at ERL 0.
                self.conn.reject(RejectReason::DataDigestError, bhs);
                fail = Some(SENSE_PROTOCOL_CRC);
            }
        }
        let cmd = Box::new(NewCommand {
            hdr: c,
            cdb,
            buf,
            received: len as u32,
            fail,
            need,
            budget,
            busy,
        });
        self.admit_or_run(c.immediate, c.cmd_sn, DeferredKind::Scsi(cmd))
    }

    /// A rejected non-immediate command still consumes its CmdSN so the window moves.
    fn consume_sn(&mut self, immediate: bool, cmd_sn: u32) -> Flow {
        if immediate {
            return Flow::Continue;
        }
        let sess = self.conn.session.clone();
        let d = Deferred {
            conn: self.conn.clone(),
            kind: DeferredKind::Nop(
                NopOut {
                    immediate: false,
                    lun: 0,
                    itt: RESERVED_TAG,
                    ttt: RESERVED_TAG,
                    cmd_sn,
                    exp_stat_sn: 0,
                },
                Vec::new(),
            ),
        };
        if let (Admit::Now, Some(d)) = sess.admit(cmd_sn, d) {
            let _ = process(d, false);
            while let Some(next) = sess.next_held() {
                let _ = process(next, false);
            }
        }
        Flow::Continue
    }

    fn on_data_out(&mut self, d: DataOut, bhs: &[u8; BHS_LEN], len: usize) -> io::Result<Flow> {
        let conn = self.conn.clone();
        let wt = conn.writes.lock().remove(&d.itt);
        let Some(mut wt) = wt else {
            // Unknown ITT: possibly a task aborted a moment ago; discard and reject.
            self.skip_segment(len)?;
            if !conn.session.tasks.lock().contains_key(&d.itt) {
                conn.reject(RejectReason::InvalidPduField, bhs);
            }
            return Ok(Flow::Continue);
        };
        if wt.task.aborted.load(Ordering::Acquire) {
            self.skip_segment(len)?;
            finish_task(&conn.session, &wt.cmd);
            return Ok(Flow::Continue);
        }
        // Validate against the sequence this PDU belongs to (RFC 7143 11.7). A wrong
        // offset breaks framing of the task and drops the connection (at ERL 0 a sequence
        // error is fatal, 7.1.1); a wrong DataSN implies a lost PDU, which at
        // ErrorRecoveryLevel 0 terminates the task with CHECK CONDITION, PROTOCOL SERVICE
        // CRC ERROR (RFC 7143 7.1.3, 7.8.2).
        let seg_len = u32::try_from(len).unwrap_or(u32::MAX);
        let accepted = match wt
            .seq
            .accept(d.ttt, d.buffer_offset, seg_len, d.data_sn, d.final_bit)
        {
            Ok(a) => a,
            Err(e) => {
                warn!(conn = conn.id, itt = d.itt, ttt = d.ttt, error = %e, "Data-Out breaks the sequence; closing the connection");
                return Ok(Flow::Close);
            }
        };
        let (offset, end) = (accepted.start, accepted.end);
        if !accepted.data_sn_ok {
            debug!(
                conn = conn.id,
                itt = d.itt,
                data_sn = d.data_sn,
                "Data-Out with unexpected DataSN"
            );
            wt.cmd.fail = Some(SENSE_PROTOCOL_CRC);
        }
        wt.last_progress = Instant::now();
        if wt.cmd.busy {
            // No budget: the data goes nowhere, the command will be answered BUSY.
            self.skip_segment(len)?;
        } else {
            grow_buf(&mut wt.cmd, end);
            let ok = self.read_into(&mut wt.cmd.buf[offset as usize..end as usize])?;
            if !ok {
                conn.reject(RejectReason::DataDigestError, bhs);
                wt.cmd.fail = Some(SENSE_PROTOCOL_CRC);
            }
        }
        wt.cmd.received += seg_len;
        let need = wt.cmd.need;
        if wt.cmd.received >= need {
            let WriteTask { cmd, task, .. } = wt;
            dispatch(&conn, cmd, task);
            return Ok(Flow::Continue);
        }
        send_r2ts(&conn, &mut wt);
        if wt.seq.all_ended(need) {
            // The initiator ended every sequence short of EDTL: run with what we have.
            let WriteTask { cmd, task, .. } = wt;
            dispatch(&conn, cmd, task);
            return Ok(Flow::Continue);
        }
        conn.writes.lock().insert(d.itt, wt);
        Ok(Flow::Continue)
    }

    fn on_nop_out(&mut self, n: NopOut, bhs: &[u8; BHS_LEN], len: usize) -> io::Result<Flow> {
        let (data, ok) = self.read_vec(len)?;
        if !ok {
            self.conn.reject(RejectReason::DataDigestError, bhs);
            return Ok(self.consume_sn(n.immediate, n.cmd_sn));
        }
        if n.itt == RESERVED_TAG {
            // An answer to our ping, or a NOP that wants no answer (must be immediate,
            // RFC 7143 11.18.3).
            if n.ttt != RESERVED_TAG && n.ttt == self.conn.ping_ttt.load(Ordering::Acquire) {
                self.conn.ping_ttt.store(0, Ordering::Release);
            }
            if !n.immediate {
                return Ok(self.consume_sn(false, n.cmd_sn));
            }
            return Ok(Flow::Continue);
        }
        if n.ttt != RESERVED_TAG {
            self.conn.reject(RejectReason::InvalidPduField, bhs);
            return Ok(self.consume_sn(n.immediate, n.cmd_sn));
        }
        self.admit_or_run(n.immediate, n.cmd_sn, DeferredKind::Nop(n, data))
    }

    fn on_text(&mut self, t: TextRequest, bhs: &[u8; BHS_LEN], len: usize) -> io::Result<Flow> {
        let (data, ok) = self.read_vec(len)?;
        if !ok {
            self.conn.reject(RejectReason::DataDigestError, bhs);
            return Ok(self.consume_sn(t.immediate, t.cmd_sn));
        }
        // Continuation of our multi-PDU response (RFC 7143 11.10.4).
        if t.ttt != RESERVED_TAG {
            match self.text.take() {
                Some(mut c) if c.ttt == t.ttt && c.itt == t.itt && data.is_empty() => {
                    let conn = self.conn.clone();
                    let mrdsl = conn.send_mrdsl.load(Ordering::Relaxed) as usize;
                    let n = c.rest.len().min(mrdsl);
                    let chunk: Vec<u8> = c.rest.drain(..n).collect();
                    let more = !c.rest.is_empty();
                    let ttt = if more { c.ttt } else { RESERVED_TAG };
                    if more {
                        self.text = Some(c);
                    }
                    // Keep the CmdSN window moving for this (non-immediate) request.
                    self.consume_sn(t.immediate, t.cmd_sn);
                    conn.send(&chunk, true, |stat_sn, exp, max| {
                        Header::TextResponse(TextResponse {
                            final_bit: !more,
                            cont: more,
                            lun: 0,
                            itt: t.itt,
                            ttt,
                            stat_sn,
                            exp_cmd_sn: exp,
                            max_cmd_sn: max,
                        })
                    });
                    return Ok(Flow::Continue);
                }
                _ => {
                    self.conn.reject(RejectReason::InvalidPduField, bhs);
                    return Ok(self.consume_sn(t.immediate, t.cmd_sn));
                }
            }
        }
        // Initiator-side continuation (C bit): accumulate.
        if self.text_in.len() + data.len() > 64 * 1024 {
            self.text_in.clear();
            self.conn.reject(RejectReason::ProtocolError, bhs);
            return Ok(self.consume_sn(t.immediate, t.cmd_sn));
        }
        self.text_in.extend_from_slice(&data);
        if t.cont && !t.final_bit {
            let conn = self.conn.clone();
            conn.send(&[], true, |stat_sn, exp, max| {
                Header::TextResponse(TextResponse {
                    final_bit: false,
                    cont: false,
                    lun: 0,
                    itt: t.itt,
                    ttt: RESERVED_TAG,
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                })
            });
            return Ok(Flow::Continue);
        }
        let all = std::mem::take(&mut self.text_in);
        let reply = build_text_reply(&self.conn, &all);
        let conn = self.conn.clone();
        let mrdsl = conn.send_mrdsl.load(Ordering::Relaxed) as usize;
        if reply.len() > mrdsl {
            let ttt = conn.alloc_ttt();
            self.text = Some(TextContinuation {
                itt: t.itt,
                ttt,
                rest: reply[mrdsl..].to_vec(),
            });
            let first = reply[..mrdsl].to_vec();
            return self.admit_or_run(
                t.immediate,
                t.cmd_sn,
                DeferredKind::Text(TextRequest { ttt, ..t }, first, true),
            );
        }
        self.admit_or_run(t.immediate, t.cmd_sn, DeferredKind::Text(t, reply, false))
    }

    fn cleanup(self) {
        let conn = self.conn;
        conn.close();
        let sess = conn.session.clone();
        // Abort writes still collecting data on this connection (their buffer budget
        // goes with them).
        let pending: Vec<WriteTask> = conn.writes.lock().drain().map(|(_, w)| w).collect();
        for w in pending {
            finish_task(&sess, &w.cmd);
        }
        conn.held.lock().clear();
        // Jobs parked behind a stuck writer: nobody will read their answers.
        let parked = std::mem::take(&mut conn.tx.lock().parked);
        for j in parked {
            finish_task(&sess, &j.cmd);
        }
        conn.shared.connection_ended(&conn);
    }
}

/// Builds the Text Response for a Text Request's keys (SendTargets, RFC 7143 13.3 and
/// appendix C; other keys as in negotiation).
fn build_text_reply(conn: &Conn, data: &[u8]) -> Vec<u8> {
    let pairs = match text::parse(data) {
        Ok(p) => p,
        Err(_) => return text::encode(&[("X-rustio-error", "Reject")]),
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "SendTargets" => {
                let cfg = conn.shared.config();
                let sess = &conn.session;
                let discovery = sess.session_type == SessionType::Discovery;
                let wanted: Option<String> = match v.as_str() {
                    "All" if discovery => None,
                    // In a normal session "All" and "" mean the session's target.
                    "All" | "" => Some(sess.target_name().to_string()),
                    name if crate::config::valid_iscsi_name(name) => Some(name.to_string()),
                    _ => {
                        out.push((k, "Reject".into()));
                        continue;
                    }
                };
                if wanted.as_deref() == Some("") {
                    out.push((k, "Reject".into()));
                    continue;
                }
                for t in &cfg.targets {
                    if let Some(w) = &wanted {
                        if !t.iqn.eq_ignore_ascii_case(w) {
                            continue;
                        }
                    }
                    let tpgs: Vec<_> = t
                        .tpgs
                        .iter()
                        .filter(|tpg| tpg.enabled && !tpg.portals.is_empty())
                        .collect();
                    if tpgs.is_empty() {
                        continue;
                    }
                    if discovery && !tpgs.iter().any(|tpg| tpg.allows(&sess.initiator)) {
                        // Do not reveal targets this initiator may not log in to.
                        continue;
                    }
                    out.push(("TargetName".into(), t.iqn.clone()));
                    for tpg in tpgs {
                        for p in &tpg.portals {
                            let mut addr = p.addr;
                            if addr.ip().is_unspecified() {
                                // A wildcard portal answers with the address the
                                // initiator reached us on.
                                addr.set_ip(conn.local.ip());
                            }
                            out.push(("TargetAddress".into(), target_address(addr, tpg.tag)));
                        }
                    }
                }
            }
            "MaxRecvDataSegmentLength" => match text::parse_number(&v) {
                Some(n) if (512..(1 << 24)).contains(&n) => {
                    conn.send_mrdsl.store(n as u32, Ordering::Relaxed);
                    out.push((k, conn.recv_mrdsl.to_string()));
                }
                _ => out.push((k, "Reject".into())),
            },
            _ => match text::lookup(&k) {
                // Keys that are only negotiable during login.
                Some(_) => out.push((k, "Reject".into())),
                None => out.push((k, "NotUnderstood".into())),
            },
        }
    }
    text::encode(&out)
}

/// Processes an in-order (or immediate) PDU.
fn process(d: Deferred, immediate: bool) -> Flow {
    let Deferred { conn, kind } = d;
    let sess = conn.session.clone();
    match kind {
        DeferredKind::Scsi(cmd) => {
            start_command(&conn, cmd);
            Flow::Continue
        }
        DeferredKind::Nop(n, data) => {
            if !immediate {
                sess.complete_one();
            }
            if n.itt != RESERVED_TAG {
                let mrdsl = conn.send_mrdsl.load(Ordering::Relaxed) as usize;
                let echo = &data[..data.len().min(mrdsl)];
                conn.send(echo, true, |stat_sn, exp, max| {
                    Header::NopIn(NopIn {
                        lun: n.lun,
                        itt: n.itt,
                        ttt: RESERVED_TAG,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                    })
                });
            }
            Flow::Continue
        }
        DeferredKind::Text(t, reply, more) => {
            if !immediate {
                sess.complete_one();
            }
            conn.send(&reply, true, |stat_sn, exp, max| {
                Header::TextResponse(TextResponse {
                    final_bit: !more,
                    cont: more,
                    lun: 0,
                    itt: t.itt,
                    ttt: if more { t.ttt } else { RESERVED_TAG },
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                })
            });
            Flow::Continue
        }
        DeferredKind::Tmf(t) => {
            let response = task_management(&conn, &t);
            if !immediate {
                sess.complete_one();
            }
            conn.send(&[], true, |stat_sn, exp, max| {
                Header::TaskMgmtResponse(TaskMgmtResponse {
                    response: response as u8,
                    itt: t.itt,
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                })
            });
            if response == TmfResponse::Complete && t.function == TmfFunction::TargetColdReset {
                // RFC 7143 11.5.1: after a cold reset the target drops all connections.
                conn.shared.close_target_sessions(sess.target_name());
                return Flow::Close;
            }
            Flow::Continue
        }
        DeferredKind::Logout(l) => logout(&conn, &l, immediate),
    }
}

/// Starts a command delivered in CmdSN order: registers the task and either dispatches
/// it or asks for its Data-Out.
fn start_command(conn: &Arc<Conn>, mut cmd: Box<NewCommand>) {
    let sess = &conn.session;
    let task = Arc::new(TaskState {
        itt: cmd.hdr.itt,
        lun_field: cmd.hdr.lun,
        aborted: AtomicBool::new(false),
    });
    if !sess.add_task(task.clone()) {
        // The ITT is in use by a task still in progress (RFC 7143 11.17.1 reason 0x07).
        let bhs = Header::ScsiCommand(cmd.hdr).encode(0, 0);
        conn.reject(RejectReason::TaskInProgress, &bhs);
        if !cmd.hdr.immediate {
            sess.complete_one();
        }
        return;
    }
    if cmd.hdr.write && !cmd.busy {
        // Reserve the command's whole transfer now that it runs in CmdSN order (issue 20
        // item 2), all or nothing: grow what its immediate data holds, or (when that
        // cannot grow, e.g. the transfer alone exceeds a budget that only admits it when
        // empty) give that back and reserve afresh.
        let need = u64::from(cmd.need);
        let mut early = cmd.budget.take();
        let grown = early.as_mut().is_some_and(|r| r.grow_to(need));
        let reservation = if grown {
            early
        } else {
            drop(early);
            Reservation::try_new(&sess.write_budget, &conn.shared.write_budget, need)
        };
        match reservation {
            Some(mut r) => {
                r.set_filled(cmd.buf.len() as u64);
                cmd.budget = Some(r);
            }
            // Only R2T-paced data: the command waits for budget (no R2T meanwhile).
            None if cmd.received == 0 && cmd.hdr.final_bit => {}
            // Data came, or is coming, whether we want it or not: discard it, BUSY.
            None => {
                cmd.busy = true;
                conn.write_bufs.give(std::mem::take(&mut cmd.buf));
            }
        }
    }
    if !cmd.hdr.write || cmd.received >= cmd.need || (cmd.busy && cmd.hdr.final_bit) {
        dispatch(conn, cmd, task);
        return;
    }
    let params = sess.params;
    // Unsolicited data follows (F = 0) up to FirstBurstLength (RFC 7143 13.14).
    let unsol_end = unsolicited_end(&cmd.hdr, &params, cmd.received as usize);
    let itt = cmd.hdr.itt;
    let held = cmd.budget.is_none() && !cmd.busy;
    let now = Instant::now();
    let mut wt = WriteTask {
        // A BUSY command solicits nothing; it only lets its unsolicited data pass.
        seq: DataOutSeq::new(
            cmd.hdr.edtl,
            cmd.received,
            unsol_end,
            if cmd.busy { cmd.need } else { unsol_end },
        ),
        cmd,
        task,
        held,
        last_progress: now,
        since: now,
    };
    if held {
        // Oldest first: a command funded ahead of earlier waiters could starve them.
        let mut q = conn.held.lock();
        if !q.is_empty() || !try_fund(conn, &mut wt) {
            conn.shared
                .limit_counters
                .held
                .fetch_add(1, Ordering::Relaxed);
            debug!(
                conn = conn.id,
                itt,
                need = wt.cmd.need,
                "write waits for buffer budget"
            );
            // In `writes` before its ITT is queued, both under the queue's lock: this may
            // run on another connection's reader (CmdSN order across connections), and
            // this connection's `retry_held` drops a queued ITT it cannot find.
            conn.writes.lock().insert(itt, wt);
            q.push_back(itt);
            return;
        }
    }
    send_r2ts(conn, &mut wt);
    conn.writes.lock().insert(itt, wt);
}

/// End of the unsolicited data of a write (RFC 7143 13.13–13.14): the immediate data,
/// and with F = 0 (allowed only when InitialR2T=No) up to FirstBurstLength.
fn unsolicited_end(hdr: &ScsiCommand, params: &crate::text::Negotiated, immediate: usize) -> u32 {
    let immediate = immediate as u32;
    if !hdr.final_bit && !params.initial_r2t {
        params.first_burst_length.min(hdr.edtl).max(immediate)
    } else {
        immediate
    }
}

/// Data-out bytes a write really transfers: the CDB's length (SBC-4 TRANSFER LENGTH)
/// bounded by EDTL, so EDTL beyond the CDB reserves and solicits nothing. COMPARE AND
/// WRITE and CDBs the engine cannot size keep EDTL (the device server must see all of
/// a COMPARE AND WRITE's data-out to reject a length that does not match).
fn write_transfer_len(sess: &Session, hdr: &ScsiCommand, cdb: &[u8]) -> u32 {
    if cdb.first() == Some(&0x89) {
        return hdr.edtl;
    }
    let lun = rustio_scsi::decode_lun_u64(hdr.lun).unwrap_or(u64::MAX);
    match sess.lun_map.data_out_len(lun, cdb) {
        Some(n) => n.min(hdr.edtl),
        None => hdr.edtl,
    }
}

/// Takes the budget of a waiting write; `false` while there is none.
fn try_fund(conn: &Conn, wt: &mut WriteTask) -> bool {
    if !wt.held {
        return true;
    }
    let need = u64::from(wt.cmd.need);
    match Reservation::try_new(&conn.session.write_budget, &conn.shared.write_budget, need) {
        Some(mut r) => {
            r.set_filled(wt.cmd.buf.len() as u64);
            wt.cmd.budget = Some(r);
            wt.held = false;
            let now = Instant::now();
            wt.last_progress = now;
            wt.since = now;
            true
        }
        None => false,
    }
}

/// Starts the writes waiting for budget, oldest first, as far as budget allows (run by
/// the reader after every PDU and on every idle tick).
fn retry_held(conn: &Arc<Conn>) {
    loop {
        let Some(itt) = conn.held.lock().front().copied() else {
            return;
        };
        let wt = conn.writes.lock().remove(&itt);
        let Some(mut wt) = wt else {
            // Aborted or ended meanwhile.
            conn.held.lock().pop_front();
            continue;
        };
        if try_fund(conn, &mut wt) {
            conn.held.lock().pop_front();
            send_r2ts(conn, &mut wt);
            conn.writes.lock().insert(itt, wt);
        } else {
            conn.writes.lock().insert(itt, wt);
            return;
        }
    }
}

/// Answers BUSY (SAM-5 5.3.1) to writes that have waited for buffer budget longer than
/// `limit`: nothing was solicited from them, so the initiator simply retries later, and
/// a write is never parked indefinitely behind budget that others keep.
fn expire_held(conn: &Arc<Conn>, now: Instant, limit: Duration) {
    let expired: Vec<WriteTask> = {
        let mut q = conn.held.lock();
        if q.is_empty() {
            return;
        }
        let mut writes = conn.writes.lock();
        let mut out = Vec::new();
        q.retain(|itt| match writes.get(itt) {
            Some(w) if w.held && now.duration_since(w.since) >= limit => {
                out.extend(writes.remove(itt));
                false
            }
            Some(_) => true,
            None => false,
        });
        out
    };
    for w in expired {
        warn!(
            conn = conn.id,
            peer = %conn.peer,
            initiator = %conn.session.initiator,
            itt = w.cmd.hdr.itt,
            need = w.cmd.need,
            waited_secs = now.duration_since(w.since).as_secs_f64(),
            "write waited for buffer budget longer than the Data-Out timeout; BUSY"
        );
        answer_busy(conn, w.cmd);
    }
}

/// Grows a write's buffer to `end` bytes (data solicited or arrived), never beyond
/// what the command reserved; capacity grows geometrically up to `need` so that a
/// long R2T sequence does not copy the buffer at every burst.
fn grow_buf(cmd: &mut NewCommand, end: u32) {
    let end = end as usize;
    if cmd.buf.len() >= end {
        return;
    }
    if cmd.buf.capacity() < end {
        let want = cmd
            .buf
            .capacity()
            .saturating_mul(2)
            .min(cmd.need as usize)
            .max(end);
        cmd.buf.reserve_exact(want - cmd.buf.len());
    }
    cmd.buf.resize(end, 0);
    if let Some(r) = cmd.budget.as_mut() {
        r.set_filled(cmd.buf.len() as u64);
    }
}

/// Answers a write that found no buffer budget with BUSY (SAM-5 5.3.1: the initiator
/// retries later), without executing it.
fn answer_busy(conn: &Arc<Conn>, cmd: Box<NewCommand>) {
    let sess = &conn.session;
    conn.shared
        .limit_counters
        .busy
        .fetch_add(1, Ordering::Relaxed);
    debug!(
        conn = conn.id,
        itt = cmd.hdr.itt,
        "no write buffer budget; BUSY"
    );
    if !cmd.hdr.immediate {
        sess.complete_one();
    }
    if sess.claim_response(cmd.hdr.itt) {
        conn.send_scsi_result(
            &cmd,
            &Response::status(Status::Busy),
            &[],
            Residual::default(),
        );
    }
}

/// Sends R2Ts until MaxOutstandingR2T are outstanding or everything is requested
/// (RFC 7143 11.8, 13.17), each at most MaxBurstLength.
fn send_r2ts(conn: &Conn, wt: &mut WriteTask) {
    if wt.held || wt.cmd.busy {
        return;
    }
    let params = conn.session.params;
    let need = wt.cmd.need;
    while let Some(g) = wt.seq.next_r2t(
        need,
        params.max_outstanding_r2t,
        params.max_burst_length,
        || conn.alloc_ttt(),
    ) {
        // Memory for exactly what this R2T solicits.
        grow_buf(&mut wt.cmd, g.offset + g.len);
        wt.last_progress = Instant::now();
        let r2t = R2t {
            lun: wt.cmd.hdr.lun,
            itt: wt.cmd.hdr.itt,
            ttt: g.ttt,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            r2t_sn: g.r2t_sn,
            buffer_offset: g.offset,
            desired_len: g.len,
        };
        conn.send(&[], false, |stat_sn, exp, max| {
            Header::R2t(R2t {
                stat_sn,
                exp_cmd_sn: exp,
                max_cmd_sn: max,
                ..r2t
            })
        });
    }
}

thread_local! {
    /// Data-In buffer of a reader thread executing commands inline.
    static INLINE_BUF: std::cell::RefCell<ExecBufs> = std::cell::RefCell::new(ExecBufs::default());
    /// Set by the reader while more received bytes are waiting to be parsed.
    static READER_BUSY: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether a ready command runs on this (reader) thread rather than on the pool.
fn runs_inline(conn: &Conn, cmd: &NewCommand) -> bool {
    let wanted = match conn.shared.execution() {
        Execution::Pool => false,
        Execution::Inline => true,
        Execution::Auto => {
            cmd.hdr.edtl <= AUTO_INLINE_MAX
                && conn
                    .session
                    .lun(cmd.hdr.lun)
                    .is_none_or(|l| !l.lu.backstore().capabilities().network)
        }
    };
    wanted && !READER_BUSY.with(|b| b.get())
}

fn dispatch(conn: &Arc<Conn>, mut cmd: Box<NewCommand>, task: Arc<TaskState>) {
    if cmd.busy {
        drop(task);
        answer_busy(conn, cmd);
        return;
    }
    if cmd.hdr.write && cmd.fail.is_none() {
        // Sequences ended short of the transfer: the rest reads as zeros, as before
        // buffers were grown lazily (the budget for it is reserved).
        let need = cmd.need;
        grow_buf(&mut cmd, need);
    }
    let inline = runs_inline(conn, &cmd);
    let job = ExecJob {
        sess: conn.session.clone(),
        conn: conn.clone(),
        cmd,
        task,
    };
    if inline {
        INLINE_BUF.with(|b| {
            let mut bufs = b.borrow_mut();
            run_job(job, &mut bufs);
            bufs.trim();
        });
    } else {
        conn.shared.submit(job);
    }
}

/// The TMF's name in log lines.
fn target_reset_name(cold: bool) -> &'static str {
    if cold {
        "TARGET COLD RESET"
    } else {
        "TARGET WARM RESET"
    }
}

/// Whether the session's initiator may reset the whole target: TARGET WARM/COLD RESET
/// abort every initiator's tasks on it, so, as in LIO (iscsi_target_tmr.c, node ACL
/// `tmr_warm_reset`/`tmr_cold_reset`, default 0), only an ACL that opts in may. Demo
/// mode sessions have no ACL and may not. A refusal is logged and answered "Function
/// authorization failed" (RFC 7143 11.6.1, response 6).
fn target_reset_allowed(sess: &Session, cold: bool) -> bool {
    let acl = sess
        .target
        .as_ref()
        .and_then(|(_, tpg)| tpg.acl(&sess.initiator));
    let allowed = acl.is_some_and(|a| {
        if cold {
            a.tmr_cold_reset
        } else {
            a.tmr_warm_reset
        }
    });
    if !allowed {
        warn!(
            initiator = %sess.initiator,
            target = %sess.target_name(),
            function = target_reset_name(cold),
            "task management function refused: the initiator's node ACL does not set {}",
            if cold { "tmr_cold_reset" } else { "tmr_warm_reset" }
        );
    }
    allowed
}

/// Task management (RFC 7143 11.5; SAM-5 7).
fn task_management(conn: &Arc<Conn>, t: &TaskMgmtRequest) -> TmfResponse {
    let sess = &conn.session;
    let shared = &conn.shared;
    let grace = Duration::from_secs(10);
    let lun_lu = sess.lun(t.lun).map(|l| l.lu.clone());
    let abort_in = |s: &Arc<Session>, pred: &dyn Fn(&TaskState) -> bool| -> usize {
        let itts = s.abort_tasks(pred);
        for itt in &itts {
            // Tasks still collecting Data-Out end here; queued/running ones end in the
            // worker, which suppresses their response.
            for c in s.conns.lock().iter() {
                if let Some(w) = c.writes.lock().remove(itt) {
                    finish_task(s, &w.cmd);
                }
            }
        }
        s.wait_tasks_gone(&itts, grace);
        itts.len()
    };
    match t.function {
        TmfFunction::AbortTask => {
            // Only a task marked aborted before its worker claimed the response counts
            // as aborted; one whose response is already on its way "does not exist".
            let r = t.ref_itt;
            match abort_in(sess, &|x: &TaskState| x.itt == r) > 0 {
                true => TmfResponse::Complete,
                false => {
                    // RFC 7143 11.5.1: a RefCmdSN not yet received but below this TMF's
                    // CmdSN counts as received and aborted.
                    let exp = sess.exp_cmd_sn();
                    if crate::session::sn_le(exp, t.ref_cmd_sn)
                        && crate::session::sn_lt(t.ref_cmd_sn, t.cmd_sn)
                    {
                        TmfResponse::Complete
                    } else {
                        TmfResponse::TaskDoesNotExist
                    }
                }
            }
        }
        TmfFunction::AbortTaskSet
        | TmfFunction::ClearTaskSet
        | TmfFunction::LunReset
        | TmfFunction::ClearAca => {
            let Some(lu) = lun_lu else {
                return TmfResponse::LunDoesNotExist;
            };
            let lun_field = t.lun;
            match t.function {
                TmfFunction::AbortTaskSet => {
                    abort_in(sess, &|x: &TaskState| x.lun_field == lun_field);
                    lu.task_management(&sess.nexus, Tmf::AbortTaskSet);
                }
                TmfFunction::ClearAca => lu.task_management(&sess.nexus, Tmf::ClearAca),
                _ => {
                    // Every nexus's tasks on this logical unit.
                    for s in shared.sessions_snapshot() {
                        let fields: Vec<u64> = s
                            .luns
                            .iter()
                            .filter(|l| Arc::ptr_eq(&l.lu, &lu))
                            .map(|l| l.lun)
                            .collect();
                        if fields.is_empty() {
                            continue;
                        }
                        abort_in(&s, &|x: &TaskState| {
                            rustio_scsi::decode_lun(x.lun_field.to_be_bytes())
                                .map(|l| fields.contains(&l))
                                .unwrap_or(false)
                        });
                    }
                    lu.task_management(
                        &sess.nexus,
                        if t.function == TmfFunction::LunReset {
                            Tmf::LogicalUnitReset
                        } else {
                            Tmf::ClearTaskSet
                        },
                    );
                }
            }
            TmfResponse::Complete
        }
        TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
            let target = sess.target_name().to_string();
            let cold = t.function == TmfFunction::TargetColdReset;
            if !target_reset_allowed(sess, cold) {
                return TmfResponse::AuthorizationFailed;
            }
            let mut sessions = 0usize;
            let mut aborted = 0usize;
            for s in shared.sessions_snapshot() {
                if s.target_name() == target {
                    sessions += 1;
                    aborted += abort_in(&s, &|_| true);
                }
            }
            warn!(
                initiator = %sess.initiator,
                target = %target,
                function = target_reset_name(cold),
                sessions,
                aborted,
                "target reset honoured: every session's tasks on this target aborted"
            );
            let tmf = if cold {
                Tmf::TargetColdReset
            } else {
                Tmf::TargetWarmReset
            };
            if let Some((_, tpg)) = &sess.target {
                for l in &tpg.luns {
                    l.lu.task_management(&sess.nexus, tmf);
                }
            }
            TmfResponse::Complete
        }
        TmfFunction::TaskReassign => TmfResponse::ReassignNotSupported,
        TmfFunction::Other(_) => TmfResponse::Rejected,
    }
}

/// Logout (RFC 7143 11.14, 11.15).
fn logout(conn: &Arc<Conn>, l: &LogoutRequest, immediate: bool) -> Flow {
    let sess = conn.session.clone();
    let grace = Duration::from_secs(10);
    let (code, close_self) = match l.reason {
        LogoutReason::CloseSession => {
            // Writes still waiting for Data-Out will not get it any more.
            for c in sess.conns.lock().iter() {
                let pending: Vec<WriteTask> = c.writes.lock().drain().map(|(_, w)| w).collect();
                for w in pending {
                    finish_task(&sess, &w.cmd);
                }
            }
            sess.wait_idle(grace);
            (LogoutResponseCode::Success, true)
        }
        LogoutReason::CloseConnection => {
            if l.cid == conn.cid {
                (LogoutResponseCode::Success, true)
            } else {
                let other = sess.conns.lock().iter().find(|c| c.cid == l.cid).cloned();
                match other {
                    Some(c) => {
                        c.close();
                        (LogoutResponseCode::Success, false)
                    }
                    None => (LogoutResponseCode::CidNotFound, false),
                }
            }
        }
        LogoutReason::RemoveForRecovery => (LogoutResponseCode::RecoveryNotSupported, false),
        LogoutReason::Other(_) => {
            let bhs = Header::LogoutRequest(*l).encode(0, 0);
            conn.reject(RejectReason::InvalidPduField, &bhs);
            if !immediate {
                sess.complete_one();
            }
            return Flow::Continue;
        }
    };
    if !immediate {
        sess.complete_one();
    }
    let (t2w, t2r) = (
        sess.params.default_time2wait as u16,
        sess.params.default_time2retain as u16,
    );
    conn.send(&[], true, |stat_sn, exp, max| {
        Header::LogoutResponse(LogoutResponse {
            response: code as u8,
            itt: l.itt,
            stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: max,
            time2wait: t2w,
            time2retain: t2r,
        })
    });
    if l.reason == LogoutReason::CloseSession && code == LogoutResponseCode::Success {
        sess.close();
        return Flow::Close;
    }
    if close_self {
        return Flow::Close;
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_write_buffers_come_back_zeroed() {
        let pool = BufPool::default();
        let mut v = pool.take(8192);
        assert_eq!(v.len(), 8192);
        assert!(v.iter().all(|&b| b == 0));
        v.fill(0xab);
        let cap = v.capacity();
        pool.give(v);
        let w = pool.take(4096);
        assert_eq!(w.len(), 4096);
        assert!(w.capacity() >= cap, "the buffer was not reused");
        assert!(w.iter().all(|&b| b == 0), "stale data in a recycled buffer");
        // Too large to keep.
        pool.give(vec![0; BufPool::MAX_BUF + 1]);
        assert!(pool.0.lock().is_empty());
        // At most MAX_BUFS kept.
        for _ in 0..BufPool::MAX_BUFS + 4 {
            pool.give(vec![1; 4096]);
        }
        assert_eq!(pool.0.lock().len(), BufPool::MAX_BUFS);
    }

    #[test]
    fn transfer_allowance_adds_size_at_the_minimum_rate() {
        let t = Duration::from_secs(30);
        // 1 MiB at 1 MiB/s: one second on top of the timeout.
        assert_eq!(
            transfer_allowance(t, 1 << 20, 1 << 20),
            Duration::from_secs(31)
        );
        // 64 MiB (the largest write) at 1 MiB/s.
        assert_eq!(
            transfer_allowance(t, 64 << 20, 1 << 20),
            Duration::from_secs(94)
        );
        // 512 B at 1 KiB/s: half a second.
        assert_eq!(
            transfer_allowance(Duration::ZERO, 512, 1024),
            Duration::from_millis(500)
        );
        // A zero rate (refused by validation) and huge sizes do not panic.
        assert!(transfer_allowance(t, u64::MAX, 0) >= t);
    }

    #[test]
    fn residual_rules() {
        let r = Residual::of(1024, 512);
        assert!(r.underflow && !r.overflow);
        assert_eq!(r.count, 512);
        let r = Residual::of(200, 512);
        assert!(r.overflow && !r.underflow);
        assert_eq!(r.count, 312);
        let r = Residual::of(512, 512);
        assert!(!r.overflow && !r.underflow && r.count == 0);
    }

    #[test]
    fn reader_deadline_is_not_pushed_back_by_dripping_bytes() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            // One byte every 20 ms (more often than the read timeout): 48 bytes would
            // take ~1 s; the deadline is 300 ms.
            for b in 0..48u8 {
                if c.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut r = Reader::new(s, 64);
        let start = Instant::now();
        r.set_deadline(Deadline::after(start, Duration::from_millis(300)));
        let mut bhs = [0u8; BHS_LEN];
        let e = r.read_exact(&mut bhs, &|| false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(600),
            "deadline overran: {took:?}"
        );
        // Without a deadline the same reader carries on.
        r.set_deadline(None);
        let mut one = [0u8; 1];
        r.read_exact(&mut one, &|| false).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn lazy_write_buffer_grows_to_solicited_bytes_only() {
        let server = Arc::new(crate::budget::Budget::new(1 << 30));
        let sess = Arc::new(crate::budget::Budget::new(64 << 20));
        let mut cmd = NewCommand {
            hdr: ScsiCommand {
                immediate: false,
                final_bit: true,
                read: false,
                write: true,
                attr: TaskAttribute::Simple,
                lun: 0,
                itt: 1,
                edtl: 64 << 20,
                cmd_sn: 0,
                exp_stat_sn: 0,
                cdb: [0; 16],
            },
            cdb: Cdb::Short([0; 16]),
            buf: Vec::new(),
            received: 0,
            fail: None,
            need: 64 << 20,
            budget: Reservation::try_new(&sess, &server, 64 << 20),
            busy: false,
        };
        grow_buf(&mut cmd, 262144);
        assert_eq!(cmd.buf.len(), 262144);
        assert_eq!(server.filled(), 262144);
        assert!(cmd.buf.capacity() <= 64 << 20);
        grow_buf(&mut cmd, 4096); // never shrinks
        assert_eq!(cmd.buf.len(), 262144);
        grow_buf(&mut cmd, 64 << 20);
        assert_eq!(
            cmd.buf.capacity(),
            64 << 20,
            "capacity capped at the transfer"
        );
        drop(cmd);
        assert_eq!((server.filled(), server.reserved()), (0, 0));
    }

    #[test]
    fn reader_handles_split_input() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(&[1, 2, 3]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            c.write_all(&(4u8..=200).collect::<Vec<_>>()).unwrap();
        });
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut r = Reader::new(s, 64);
        let mut a = [0u8; 5];
        r.read_exact(&mut a, &|| false).unwrap();
        assert_eq!(a, [1, 2, 3, 4, 5]);
        let mut b = vec![0u8; 195];
        r.read_exact(&mut b, &|| false).unwrap();
        assert_eq!(b[0], 6);
        assert_eq!(b[194], 200);
        t.join().unwrap();
    }
}
