//! The pipelined workload: a reader thread decodes responses and hands events to the
//! issuing thread, which keeps `qd` commands in flight, answers R2Ts with Data-Out
//! (RFC 7143 11.8 / 11.7) and target pings with NOP-Out, and honours the CmdSN window
//! (RFC 7143 4.2.2.1). The inline driver does the same on one thread (no hand-off between
//! the socket and the issuer, so a QD 1 latency is the target's plus one syscall pair), and
//! [`run_sessions`] runs one session per thread against the same target.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustio_iscsi_proto::pdu::{
    pad_len, DataOut, Header, LogoutRequest, NopIn, NopOut, ScsiCommand, TaskAttribute, BHS_LEN,
    RESERVED_TAG,
};
use rustio_iscsi_proto::serial;

use crate::conn::{bhs, read_pdu, sense_of, Conn, Error, Negotiated, Result};
use crate::scsi;
use crate::stats::Histogram;

/// Read/write mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Reads only.
    Read,
    /// Writes only.
    Write,
    /// `read_pct` percent reads, the rest writes.
    Mixed {
        /// Percentage of reads (0..=100).
        read_pct: u8,
    },
}

/// How a session's commands are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// A reader thread decodes responses and hands them to the issuing thread.
    Threaded,
    /// One thread issues, then reads every response already received before issuing
    /// again: no thread hand-off per completion.
    Inline,
}

/// A workload description.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Read/write mix.
    pub mix: Mix,
    /// Random offsets (aligned to `bs`) instead of sequential.
    pub random: bool,
    /// Bytes per command (a multiple of the block length).
    pub bs: u32,
    /// Commands kept in flight.
    pub qd: usize,
    /// How long to issue commands.
    pub duration: Duration,
    /// Stop after one sequential pass over the LUN (pre-fill).
    pub one_pass: bool,
    /// RNG seed.
    pub seed: u64,
    /// How commands are driven.
    pub driver: Driver,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Completed reads.
    pub reads: u64,
    /// Completed writes.
    pub writes: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// From the first command to the last completion.
    pub elapsed: Duration,
    /// Command latencies.
    pub latency: Histogram,
    /// R2Ts answered.
    pub r2ts: u64,
}

impl Outcome {
    /// Adds another session's outcome to this one: counts and latencies add up; the
    /// elapsed time is the longest session's (the sessions ran side by side).
    pub fn merge(&mut self, o: &Outcome) {
        self.reads = self.reads.saturating_add(o.reads);
        self.writes = self.writes.saturating_add(o.writes);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.r2ts = self.r2ts.saturating_add(o.r2ts);
        self.elapsed = self.elapsed.max(o.elapsed);
        self.latency.merge(&o.latency);
    }
}

enum Event {
    /// A command finished.
    Done {
        itt: u32,
        response: u8,
        status: u8,
        sense: Option<(u8, u8, u8)>,
    },
    R2t {
        itt: u32,
        ttt: u32,
        offset: u32,
        len: u32,
    },
    /// A target's NOP-In ping that wants a NOP-Out back (RFC 7143 11.19).
    Ping(NopIn),
    LoggedOut,
    Fatal(String),
}

/// Sequence numbers the reader publishes for the issuer.
#[derive(Debug)]
struct Shared {
    max_cmd_sn: AtomicU32,
    exp_stat_sn: AtomicU32,
}

fn advance(a: &AtomicU32, v: u32) {
    let cur = a.load(Ordering::Acquire);
    if serial::lt(cur, v) {
        a.store(v, Ordering::Release);
    }
}

/// Turns one PDU from the target into an event for the issuer, publishing the sequence
/// numbers it carries; `None` for PDUs that need no action (Data-In without status, a
/// NOP-In that is not a ping, a SCSI asynchronous event).
fn decode(b: &[u8; BHS_LEN], data: &[u8], sh: &Shared) -> Option<Event> {
    let ev = match Header::parse(b) {
        Header::DataIn(d) => {
            advance(&sh.max_cmd_sn, d.max_cmd_sn);
            if !d.status_present {
                return None;
            }
            advance(&sh.exp_stat_sn, d.stat_sn.wrapping_add(1));
            Event::Done {
                itt: d.itt,
                response: 0,
                status: d.status,
                sense: None,
            }
        }
        Header::ScsiResponse(r) => {
            advance(&sh.max_cmd_sn, r.max_cmd_sn);
            advance(&sh.exp_stat_sn, r.stat_sn.wrapping_add(1));
            Event::Done {
                itt: r.itt,
                response: r.response,
                status: r.status,
                sense: sense_of(data),
            }
        }
        Header::R2t(r) => {
            advance(&sh.max_cmd_sn, r.max_cmd_sn);
            Event::R2t {
                itt: r.itt,
                ttt: r.ttt,
                offset: r.buffer_offset,
                len: r.desired_len,
            }
        }
        Header::NopIn(ping) => {
            advance(&sh.max_cmd_sn, ping.max_cmd_sn);
            if ping.ttt == RESERVED_TAG {
                return None;
            }
            Event::Ping(ping)
        }
        Header::LogoutResponse(_) => Event::LoggedOut,
        Header::AsyncMessage(a) => {
            advance(&sh.max_cmd_sn, a.max_cmd_sn);
            if a.event == 0 {
                // A SCSI asynchronous event (sense data only).
                return None;
            }
            Event::Fatal(format!("target sent asynchronous event {}", a.event))
        }
        Header::Reject(r) => {
            Event::Fatal(format!("target rejected a PDU (reason {:#04x})", r.reason))
        }
        other => Event::Fatal(format!("unexpected PDU {other:?}")),
    };
    Some(ev)
}

fn reader_loop(mut r: BufReader<TcpStream>, sh: Arc<Shared>, tx: Sender<Event>) {
    let mut data = Vec::with_capacity(512 * 1024);
    loop {
        let b = match read_pdu(&mut r, &mut data) {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Event::Fatal(format!("reading from the target: {e}")));
                return;
            }
        };
        let Some(ev) = decode(&b, &data, &sh) else {
            continue;
        };
        let last = matches!(ev, Event::Fatal(_) | Event::LoggedOut);
        if tx.send(ev).is_err() || last {
            return;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Task {
    itt: u32,
    write: bool,
    bytes: u32,
    start: Instant,
}

/// xorshift64* (Vigna 2016): cheap, good enough for offsets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (0 is mapped to a fixed non-zero seed).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish value below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// The issuing side: slots, sequence numbers and the output buffer.
struct Issuer<'a> {
    stream: &'a mut TcpStream,
    params: Negotiated,
    lun: u64,
    sh: &'a Shared,
    cmd_sn: u32,
    slots: Vec<Option<Task>>,
    free: Vec<usize>,
    gen: u32,
    out: Vec<u8>,
    payload: Vec<u8>,
    wl: &'a Workload,
    rng: Rng,
    blocks_per_io: u64,
    /// Number of `bs`-sized extents in the LUN.
    extents: u64,
    next_extent: u64,
    pass_done: bool,
    r2ts: u64,
}

const SLOT_BITS: u32 = 12;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

impl Issuer<'_> {
    fn window_open(&self) -> bool {
        serial::le(self.cmd_sn, self.sh.max_cmd_sn.load(Ordering::Acquire))
    }

    fn push_pdu(&mut self, bhs: &[u8; BHS_LEN], from: usize, len: usize) {
        self.out.extend_from_slice(bhs);
        self.out.extend_from_slice(&self.payload[from..from + len]);
        let pad = pad_len(len);
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    /// Data-Out PDUs for `[offset, offset + len)` of task `itt`, each at most the
    /// target's MaxRecvDataSegmentLength, DataSN from 0, F on the last (RFC 7143 11.7).
    fn push_data_out(&mut self, itt: u32, ttt: u32, offset: u32, len: u32) {
        let exp = self.sh.exp_stat_sn.load(Ordering::Acquire);
        let mut done = 0u32;
        let mut sn = 0u32;
        while done < len {
            let n = (len - done).min(self.params.max_xmit);
            let off = offset + done;
            let out = DataOut {
                final_bit: done + n == len,
                lun: self.lun,
                itt,
                ttt,
                exp_stat_sn: exp,
                data_sn: sn,
                buffer_offset: off,
            };
            self.push_pdu(
                &bhs(Header::DataOut(out), n as usize),
                off as usize,
                n as usize,
            );
            done += n;
            sn = sn.wrapping_add(1);
        }
    }

    fn next_extent(&mut self) -> Option<u64> {
        if self.wl.random {
            return Some(self.rng.below(self.extents));
        }
        if self.next_extent >= self.extents {
            if self.wl.one_pass {
                self.pass_done = true;
                return None;
            }
            self.next_extent = 0;
        }
        let e = self.next_extent;
        self.next_extent += 1;
        Some(e)
    }

    /// Queues one command in `slot`; false when the sequential pass is over.
    fn issue(&mut self, slot: usize) -> bool {
        let Some(extent) = self.next_extent() else {
            return false;
        };
        let write = match self.wl.mix {
            Mix::Read => false,
            Mix::Write => true,
            Mix::Mixed { read_pct } => self.rng.below(100) >= u64::from(read_pct),
        };
        let lba = extent * self.blocks_per_io;
        let bs = self.wl.bs;
        self.gen = self.gen.wrapping_add(1) & (u32::MAX >> (SLOT_BITS + 1));
        let itt = (self.gen << SLOT_BITS) | slot as u32;
        let exp = self.sh.exp_stat_sn.load(Ordering::Acquire);
        let (imm, unsolicited_end) = if write {
            let imm = if self.params.immediate_data {
                bs.min(self.params.first_burst).min(self.params.max_xmit)
            } else {
                0
            };
            let end = if self.params.initial_r2t {
                imm
            } else {
                bs.min(self.params.first_burst)
            };
            (imm, end)
        } else {
            (0, 0)
        };
        let cmd = ScsiCommand {
            immediate: false,
            final_bit: unsolicited_end == imm,
            read: !write,
            write,
            attr: TaskAttribute::Simple,
            lun: self.lun,
            itt,
            edtl: bs,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: exp,
            cdb: scsi::rw_cdb(write, lba, (self.blocks_per_io) as u32),
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.push_pdu(
            &bhs(Header::ScsiCommand(cmd), imm as usize),
            0,
            imm as usize,
        );
        if unsolicited_end > imm {
            self.push_data_out(itt, RESERVED_TAG, imm, unsolicited_end - imm);
        }
        self.slots[slot] = Some(Task {
            itt,
            write,
            bytes: bs,
            start: Instant::now(),
        });
        true
    }

    fn fill(&mut self, stopping: bool) {
        while !stopping && !self.pass_done && self.window_open() {
            let Some(slot) = self.free.pop() else { break };
            if !self.issue(slot) {
                self.free.push(slot);
                break;
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream
                .write_all(&self.out)
                .map_err(|e| Error::io("sending to the target", e))?;
            self.out.clear();
        }
        Ok(())
    }

    fn task(&self, itt: u32) -> Option<(usize, Task)> {
        let slot = (itt & SLOT_MASK) as usize;
        match self.slots.get(slot) {
            Some(Some(t)) if t.itt == itt => Some((slot, *t)),
            _ => None,
        }
    }
}

/// What the completions add up to while a run goes on.
struct Tally {
    latency: Histogram,
    reads: u64,
    writes: u64,
    bytes: u64,
    /// When the latest command completed.
    last_done: Instant,
}

impl Tally {
    fn new(start: Instant) -> Tally {
        Tally {
            latency: Histogram::new(),
            reads: 0,
            writes: 0,
            bytes: 0,
            last_done: start,
        }
    }

    /// Counts task `t`, completed at `now`.
    fn record(&mut self, t: &Task, now: Instant) {
        self.latency.record(now.duration_since(t.start));
        self.last_done = now;
        if t.write {
            self.writes += 1;
        } else {
            self.reads += 1;
        }
        self.bytes += u64::from(t.bytes);
    }
}

impl Issuer<'_> {
    /// Handles one event from the reader: a completion frees its slot, an R2T is
    /// answered with Data-Out (RFC 7143 11.8), a ping with a NOP-Out (11.18, 11.19).
    fn handle(&mut self, ev: Event, tally: &mut Tally) -> Result<()> {
        match ev {
            Event::Done {
                itt,
                response,
                status,
                sense,
            } => {
                let Some((slot, t)) = self.task(itt) else {
                    return Err(Error::msg(format!("completion for unknown ITT {itt:#x}")));
                };
                if response != 0 || status != 0 {
                    return Err(Error::msg(format!(
                        "{} failed: response {response:#04x}, status {}, sense {sense:02x?}",
                        if t.write { "write" } else { "read" },
                        scsi::Status(status)
                    )));
                }
                tally.record(&t, Instant::now());
                self.slots[slot] = None;
                self.free.push(slot);
            }
            Event::R2t {
                itt,
                ttt,
                offset,
                len,
            } => {
                let Some((_, t)) = self.task(itt) else {
                    return Err(Error::msg(format!("R2T for unknown ITT {itt:#x}")));
                };
                let end = u64::from(offset) + u64::from(len);
                if !t.write || len == 0 || end > u64::from(t.bytes) {
                    return Err(Error::msg(format!(
                        "bad R2T: offset {offset} length {len} for a {}-byte {}",
                        t.bytes,
                        if t.write { "write" } else { "read" }
                    )));
                }
                self.r2ts += 1;
                self.push_data_out(itt, ttt, offset, len);
            }
            Event::Ping(ping) => {
                let r = NopOut::reply_to(
                    &ping,
                    self.cmd_sn,
                    self.sh.exp_stat_sn.load(Ordering::Acquire),
                );
                self.out.extend_from_slice(&bhs(Header::NopOut(r), 0));
            }
            Event::LoggedOut => return Err(Error::msg("target logged us out")),
            Event::Fatal(m) => return Err(Error::msg(m)),
        }
        Ok(())
    }

    /// Keeps the queue full until the workload's time is up (or its one pass is done),
    /// then drains what is in flight, giving up 20 s after the end.
    fn drive(&mut self, rx: &Receiver<Event>, tally: &mut Tally, deadline: Instant) -> Result<()> {
        let qd = self.wl.qd;
        let mut stopping = false;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let inflight = qd - self.free.len();
            if (stopping || self.pass_done) && inflight == 0 {
                return Ok(());
            }
            let mut next = match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::msg("reader thread ended"))
                }
            };
            // Up to 256 events per batch before issuing again.
            let mut batch = 0;
            while let Some(ev) = next.take() {
                self.handle(ev, tally)?;
                batch += 1;
                if batch < 256 {
                    next = rx.try_recv().ok();
                }
            }
            stopping = self.past_end(stopping, deadline, &mut drain_deadline)?;
            self.fill(stopping);
            self.flush()?;
        }
    }
}

impl Issuer<'_> {
    /// The end of a run, for both drivers: whether to stop issuing (the workload's time
    /// is up, or already `stopping`), and once stopping or past the single pass, an
    /// error when commands are still outstanding 20 s later.
    fn past_end(
        &self,
        stopping: bool,
        deadline: Instant,
        drain_deadline: &mut Option<Instant>,
    ) -> Result<bool> {
        let now = Instant::now();
        let stopping = stopping || now >= deadline;
        if stopping || self.pass_done {
            let dl = *drain_deadline.get_or_insert(now + Duration::from_secs(20));
            if now >= dl {
                return Err(Error::msg(format!(
                    "{} commands still outstanding 20 s after the end",
                    self.wl.qd - self.free.len()
                )));
            }
        }
        Ok(stopping)
    }

    /// The inline driver: keeps the queue full until the workload's time is up, reading
    /// the responses on this thread (each read bounded by the socket's timeout), and
    /// handling every PDU already buffered before issuing again; then drains what is in
    /// flight, giving up 20 s after the end.
    fn drive_inline(
        &mut self,
        reader: &mut BufReader<TcpStream>,
        tally: &mut Tally,
        deadline: Instant,
    ) -> Result<()> {
        let qd = self.wl.qd;
        let mut data = Vec::with_capacity(512 * 1024);
        let mut stopping = false;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            stopping = self.past_end(stopping, deadline, &mut drain_deadline)?;
            self.fill(stopping);
            self.flush()?;
            if (stopping || self.pass_done) && self.free.len() == qd {
                return Ok(());
            }
            loop {
                let b = read_pdu(reader, &mut data)
                    .map_err(|e| Error::io("reading from the target", e))?;
                if let Some(ev) = decode(&b, &data, self.sh) {
                    self.handle(ev, tally)?;
                }
                if reader.buffer().is_empty() {
                    break;
                }
            }
        }
    }
}

/// Checks the workload against the LUN; returns blocks per command and the number of
/// `bs`-sized extents in the LUN.
fn check_workload(wl: &Workload, blocks: u64, block_len: u32) -> Result<(u64, u64)> {
    if wl.qd == 0 || wl.qd > SLOT_MASK as usize {
        return Err(Error::msg(format!("queue depth must be 1..={SLOT_MASK}")));
    }
    if wl.bs == 0 || !wl.bs.is_multiple_of(block_len) {
        return Err(Error::msg(format!(
            "transfer size {} is not a multiple of the block length {block_len}",
            wl.bs
        )));
    }
    let blocks_per_io = u64::from(wl.bs / block_len);
    let extents = blocks / blocks_per_io;
    if extents == 0 {
        return Err(Error::msg("LUN smaller than one transfer"));
    }
    Ok((blocks_per_io, extents))
}

/// A pseudo-random write payload: non-zero so no target can take a zero-detection
/// shortcut.
fn make_payload(bs: u32, seed: u64) -> Vec<u8> {
    let mut payload = vec![0u8; bs as usize];
    let mut prng = Rng::new(seed ^ 0x5555);
    for c in payload.chunks_mut(8) {
        let v = prng.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    payload
}

/// Logout (RFC 7143 11.14), then waits (bounded) for the reader to see the response.
fn logout(stream: &mut TcpStream, rx: &Receiver<Event>, cid: u16, cmd_sn: u32, exp_stat_sn: u32) {
    let mut lo = Vec::with_capacity(BHS_LEN);
    let logout = LogoutRequest::close_session(0x7fff_fff0, cid, cmd_sn, exp_stat_sn);
    lo.extend_from_slice(&bhs(Header::LogoutRequest(logout), 0));
    let _ = stream.write_all(&lo);
    let wait_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < wait_until {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::LoggedOut) | Ok(Event::Fatal(_)) | Err(RecvTimeoutError::Disconnected) => {
                break
            }
            _ => {}
        }
    }
}

/// Logout (RFC 7143 11.14) on the inline driver's connection: reads (bounded in PDUs
/// and by the socket timeout) until the Logout Response.
fn logout_inline(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    cid: u16,
    cmd_sn: u32,
    exp_stat_sn: u32,
) {
    let logout = LogoutRequest::close_session(0x7fff_fff0, cid, cmd_sn, exp_stat_sn);
    if stream
        .write_all(&bhs(Header::LogoutRequest(logout), 0))
        .is_err()
    {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut data = Vec::new();
    for _ in 0..10_000 {
        match read_pdu(reader, &mut data) {
            Ok(b) if matches!(Header::parse(&b), Header::LogoutResponse(_)) => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Starts the reader thread, which decodes responses into events for the issuer.
fn spawn_reader(
    reader: BufReader<TcpStream>,
    sh: Arc<Shared>,
) -> Result<(thread::JoinHandle<()>, Receiver<Event>)> {
    let (tx, rx): (Sender<Event>, Receiver<Event>) = mpsc::channel();
    let handle = thread::Builder::new()
        .name("loadgen-rx".into())
        .spawn(move || reader_loop(reader, sh, tx))
        .map_err(|e| Error::io("spawning the reader", e))?;
    Ok((handle, rx))
}

/// Runs `wl` on a logged-in connection whose LUN has `blocks` blocks of `block_len`.
pub fn run(conn: Conn, wl: &Workload, blocks: u64, block_len: u32) -> Result<Outcome> {
    let (blocks_per_io, extents) = check_workload(wl, blocks, block_len)?;
    let Conn {
        mut stream,
        reader,
        params,
        cmd_sn,
        max_cmd_sn,
        exp_stat_sn,
        lun,
        cid,
        ..
    } = conn;
    let sh = Arc::new(Shared {
        max_cmd_sn: AtomicU32::new(max_cmd_sn),
        exp_stat_sn: AtomicU32::new(exp_stat_sn),
    });
    let mut is = Issuer {
        stream: &mut stream,
        params,
        lun,
        sh: &sh,
        cmd_sn,
        slots: vec![None; wl.qd],
        free: (0..wl.qd).rev().collect(),
        gen: 0,
        out: Vec::with_capacity(1 << 20),
        payload: make_payload(wl.bs, wl.seed),
        wl,
        rng: Rng::new(wl.seed),
        blocks_per_io,
        extents,
        next_extent: 0,
        pass_done: false,
        r2ts: 0,
    };
    let start = Instant::now();
    let mut tally = Tally::new(start);
    let deadline = start + wl.duration;
    let (result, r2ts) = match wl.driver {
        Driver::Inline => {
            let mut reader = reader;
            let result = is.drive_inline(&mut reader, &mut tally, deadline);
            let (r2ts, final_cmd_sn) = (is.r2ts, is.cmd_sn);
            logout_inline(
                &mut stream,
                &mut reader,
                cid,
                final_cmd_sn,
                sh.exp_stat_sn.load(Ordering::Acquire),
            );
            let _ = stream.shutdown(std::net::Shutdown::Both);
            (result, r2ts)
        }
        Driver::Threaded => {
            let (reader_thread, rx) = spawn_reader(reader, sh.clone())?;
            is.fill(false);
            let result = is
                .flush()
                .and_then(|()| is.drive(&rx, &mut tally, deadline));
            let (r2ts, final_cmd_sn) = (is.r2ts, is.cmd_sn);
            logout(
                &mut stream,
                &rx,
                cid,
                final_cmd_sn,
                sh.exp_stat_sn.load(Ordering::Acquire),
            );
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let _ = reader_thread.join();
            (result, r2ts)
        }
    };
    result?;
    Ok(Outcome {
        reads: tally.reads,
        writes: tally.writes,
        bytes: tally.bytes,
        elapsed: tally.last_done.duration_since(start),
        latency: tally.latency,
        r2ts,
    })
}

/// Runs `wl` on every connection at once, one thread per session (`wl.qd` commands in
/// flight on each, seeds `wl.seed + i`), and adds their outcomes up. All sessions were
/// logged in before the first command, so they run side by side.
pub fn run_sessions(
    conns: Vec<Conn>,
    wl: &Workload,
    blocks: u64,
    block_len: u32,
) -> Result<Outcome> {
    check_workload(wl, blocks, block_len)?;
    let results: Vec<Result<Outcome>> = thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut w = wl.clone();
                w.seed = wl.seed.wrapping_add(i as u64);
                thread::Builder::new()
                    .name(format!("loadgen-s{i}"))
                    .spawn_scoped(scope, move || run(c, &w, blocks, block_len))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(Error::msg("a session thread panicked"))),
                Err(e) => Err(Error::io("spawning a session thread", e)),
            })
            .collect()
    });
    let mut total: Option<Outcome> = None;
    for (i, r) in results.into_iter().enumerate() {
        let o = r.map_err(|e| Error::msg(format!("session {i}: {e}")))?;
        match total.as_mut() {
            Some(t) => t.merge(&o),
            None => total = Some(o),
        }
    }
    total.ok_or_else(|| Error::msg("no sessions"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustio_iscsi_proto::pdu::ScsiResponse;

    #[test]
    fn rng_below_is_bounded_and_spread() {
        let mut r = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn sn_advance_is_monotonic() {
        let a = AtomicU32::new(10);
        advance(&a, 9);
        assert_eq!(a.load(Ordering::Relaxed), 10);
        advance(&a, 12);
        assert_eq!(a.load(Ordering::Relaxed), 12);
    }

    fn workload(bs: u32, qd: usize) -> Workload {
        Workload {
            mix: Mix::Read,
            random: false,
            bs,
            qd,
            duration: Duration::from_secs(1),
            one_pass: false,
            seed: 7,
            driver: Driver::Threaded,
        }
    }

    #[test]
    fn workload_must_fit_the_lun_and_the_itt_slots() {
        // 8 blocks of 512 per 4 KiB command; a 1000-block LUN holds 125 such extents.
        assert_eq!(
            check_workload(&workload(4096, 32), 1000, 512).unwrap(),
            (8, 125)
        );
        assert!(check_workload(&workload(4096, 0), 1000, 512).is_err());
        assert!(check_workload(&workload(4096, SLOT_MASK as usize + 1), 1000, 512).is_err());
        assert!(check_workload(&workload(1000, 1), 1000, 512).is_err());
        assert!(check_workload(&workload(4096, 1), 7, 512).is_err());
    }

    #[test]
    fn payload_is_seeded_and_never_all_zero() {
        let a = make_payload(4100, 7);
        assert_eq!(a.len(), 4100);
        assert_eq!(a, make_payload(4100, 7));
        assert_ne!(a, make_payload(4100, 8));
        assert!(a.chunks(8).all(|c| c.iter().any(|&b| b != 0)));
    }

    fn shared(max_cmd_sn: u32, exp_stat_sn: u32) -> Shared {
        Shared {
            max_cmd_sn: AtomicU32::new(max_cmd_sn),
            exp_stat_sn: AtomicU32::new(exp_stat_sn),
        }
    }

    #[test]
    fn decode_completions_and_pings() {
        let sh = shared(10, 5);
        let resp = ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow: false,
            underflow: false,
            response: 0,
            status: 0,
            itt: 0x1001,
            snack_tag: 0,
            stat_sn: 7,
            exp_cmd_sn: 11,
            max_cmd_sn: 42,
            exp_data_sn: 0,
            bidi_residual: 0,
            residual: 0,
        };
        let b = bhs(Header::ScsiResponse(resp), 0);
        // A SCSI Response completes its task and moves ExpStatSN past its StatSN and
        // MaxCmdSN forward (RFC 7143 11.4, 4.2.2.1).
        match decode(&b, &[], &sh) {
            Some(Event::Done { itt, status, .. }) => assert_eq!((itt, status), (0x1001, 0)),
            _ => panic!("a SCSI Response is a completion"),
        }
        assert_eq!(sh.exp_stat_sn.load(Ordering::Relaxed), 8);
        assert_eq!(sh.max_cmd_sn.load(Ordering::Relaxed), 42);
        // A NOP-In with the reserved TTT wants no answer (RFC 7143 11.19); one with a
        // TTT is a ping.
        let nop = NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt: RESERVED_TAG,
            stat_sn: 8,
            exp_cmd_sn: 11,
            max_cmd_sn: 43,
        };
        assert!(decode(&bhs(Header::NopIn(nop), 0), &[], &sh).is_none());
        assert_eq!(sh.max_cmd_sn.load(Ordering::Relaxed), 43);
        let ping = NopIn { ttt: 9, ..nop };
        assert!(matches!(
            decode(&bhs(Header::NopIn(ping), 0), &[], &sh),
            Some(Event::Ping(_))
        ));
    }

    #[test]
    fn outcomes_of_sessions_add_up() {
        let one = |reads, writes, ms| {
            let mut latency = Histogram::new();
            latency.record(Duration::from_micros(ms * 10));
            Outcome {
                reads,
                writes,
                bytes: (reads + writes) * 4096,
                elapsed: Duration::from_millis(ms),
                latency,
                r2ts: 1,
            }
        };
        let mut t = one(10, 2, 1000);
        t.merge(&one(5, 1, 1200));
        assert_eq!((t.reads, t.writes, t.bytes, t.r2ts), (15, 3, 18 * 4096, 2));
        // Side by side: the run took as long as its longest session.
        assert_eq!(t.elapsed, Duration::from_millis(1200));
        assert_eq!(t.latency.max_us(), 12_000);
    }

    #[test]
    fn tally_counts_reads_writes_and_bytes() {
        let start = Instant::now();
        let mut t = Tally::new(start);
        let task = |write| Task {
            itt: 1,
            write,
            bytes: 4096,
            start,
        };
        let later = start + Duration::from_millis(3);
        t.record(&task(true), later);
        t.record(&task(false), later);
        assert_eq!((t.reads, t.writes, t.bytes), (1, 1, 8192));
        assert_eq!(t.last_done, later);
    }
}
