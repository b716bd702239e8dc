//! Running a command: on the connection's reader (inline) or on the worker pool, on the
//! engine, which says what the command transfers ([`rustio_scsi::Transfer`]); the answer
//! goes back through [`super::send`]. Writes that found no buffer budget are answered
//! BUSY here without running.

use std::io::IoSliceMut;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustio_backstore::FileRange;
use rustio_iscsi_proto::pdu::{ScsiCommand, TaskAttribute};
use rustio_scsi::{DirectIn, IoClass, Response, Status, TaskAttr, Transfer, Truncation};
use tracing::debug;

use super::io::{reader_busy, Payload};
use super::{Conn, ExecJob};
use crate::command::{finish_task, NewCommand, Residual};
use crate::config::AUTO_INLINE_MAX;
use crate::metrics::IoCounters;
use crate::session::{Session, TaskState};

/// READs up to this long are read in place into [`ExecBufs::read`].
const DIRECT_READ_MAX: usize = 1 << 20;

/// Where a command's data-in is after the engine ran it.
enum DataIn {
    /// In [`ExecBufs::staged`].
    Staged,
    /// In [`ExecBufs::read`], EDTL bytes.
    Read,
    /// In a range of the LUN's backing file, read when it is sent.
    File(FileRange),
    /// In the buffer the store filled asynchronously ([`submit_async`]).
    Async,
}

thread_local! {
    /// Data-In buffer of a reader thread executing commands inline.
    static INLINE_BUF: std::cell::RefCell<ExecBufs> = std::cell::RefCell::new(ExecBufs::default());
}

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
/// [`super::HANDOFF_WAIT`] (issue 20 item 3) — so that a peer that reads slowly or not at all
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
    execute_then(job, bufs, |conn, cmd, resp, data_in, residual| {
        conn.send_scsi_result(cmd, resp, data_in, residual);
    });
}

/// Executes one job (or takes the result of one the store already ran) and gives its
/// result to `send`, unless the task was aborted or the result is already answered.
fn execute_then(
    job: ExecJob,
    bufs: &mut ExecBufs,
    send: impl FnOnce(&Arc<Conn>, &NewCommand, &Response, Payload<'_>, Residual),
) {
    let ExecJob {
        sess,
        conn,
        mut cmd,
        task,
        finished,
    } = job;
    bufs.staged.clear();
    if task.aborted.load(Ordering::Acquire) {
        finish_task(&sess, &cmd);
        return;
    }
    let lun = rustio_scsi::decode_lun_u64(cmd.hdr.lun).unwrap_or(u64::MAX);
    let xfer = sess.lun_map.transfer(lun, cmd.cdb.bytes());
    let mut async_data = Vec::new();
    let (resp, placed, backstore) = match (finished, cmd.fail) {
        (Some(end), _) => {
            async_data = end.data_in;
            (end.response, DataIn::Async, cmd.backstore)
        }
        (None, Some(s)) => (Response::check(s), DataIn::Staged, Duration::ZERO),
        (None, None) => {
            let file_ok = file_send_ok(&conn, &cmd);
            let start = Instant::now();
            let (resp, placed) = run_engine(&sess, &cmd, &xfer, lun, bufs, file_ok);
            // A command its asynchronous store sent back (`retry`) already spent
            // `cmd.backstore` there.
            (resp, placed, cmd.backstore.saturating_add(start.elapsed()))
        }
    };
    let data_in = match &placed {
        DataIn::Staged => Payload::Mem(&bufs.staged),
        DataIn::Read => Payload::Mem(&bufs.read[..cmd.hdr.edtl as usize]),
        DataIn::File(f) => Payload::File(f),
        DataIn::Async => Payload::Mem(&async_data),
    };
    let needed_out = xfer.data_out_len.filter(|_| cmd.hdr.write);
    let residual = residual(&cmd.hdr, needed_out, data_in.len());
    count(&sess, &cmd, xfer.class, &resp, data_in.len());
    if !cmd.hdr.immediate {
        sess.complete_one();
    }
    if sess.claim_response(cmd.hdr.itt) {
        send(&conn, &cmd, &resp, data_in, residual);
    }
    // Timed like it is counted (above), answered or not.
    count_time(&sess, &cmd, xfer.class, backstore);
    conn.write_bufs.give(std::mem::take(&mut cmd.buf));
}

/// Largest READ data sent on a store's completion thread ([`complete`]): the copy into
/// the socket, and of what it does not take, stays short on the thread every LUN of the
/// store shares; larger results, and any with a data digest to compute, go to the pool.
const COMPLETION_SEND_MAX: usize = 256 << 10;

/// Sends the result of a command its store completed ([`submit_async`]) on the thread
/// that completed it — the store's completion thread, which serves every LUN of the
/// store — when that cannot wait on this peer: the connection's writer is free at once
/// with nothing queued for it ([`Conn::writer_now`]), and what the socket does not take
/// at once is left to a worker of the pool ([`Conn::release_now`]). Otherwise, and for
/// results above [`COMPLETION_SEND_MAX`] or with a data digest, the job goes to the
/// pool, as before. Saves the hand-off to a worker on most completions: 17 µs of CPU
/// per 4 KiB READ, 36 µs per 128 KiB READ on an RBD LUN (bench/README.md, Ceph RBD).
fn complete(job: ExecJob) {
    let conn = job.conn.clone();
    let m = &conn.services.metrics;
    let small = !conn.digests.data
        && job
            .finished
            .as_ref()
            .is_some_and(|end| end.data_in.len() <= COMPLETION_SEND_MAX);
    let Some(mut w) = small.then(|| conn.writer_now()).flatten() else {
        m.async_handed_off.fetch_add(1, Ordering::Relaxed);
        conn.registry.submit(job);
        return;
    };
    let mut sent = false;
    // The store filled its own buffer: `bufs` stays empty (no engine runs here).
    execute_then(
        job,
        &mut ExecBufs::default(),
        |conn, cmd, resp, data_in, residual| {
            sent = conn.write_result_now(&mut w, cmd, resp, data_in, residual);
        },
    );
    if sent {
        m.async_sent_now.fetch_add(1, Ordering::Relaxed);
        if !w.backlog.is_empty() {
            m.async_sent_partly.fetch_add(1, Ordering::Relaxed);
        }
    }
    conn.release_now(w);
}

/// Whether a READ's data may be sent from its LUN's backing file after the READ
/// completed, instead of being read into [`ExecBufs::read`] before: not with a data
/// digest (it needs the bytes), not below `--sendfile-min`
/// ([`crate::config::ServerConfig::sendfile_min`]), not for a task that is not SIMPLE, nor once the session
/// has seen one (SAM-5 8.6, see `Session::non_simple_seen`). Whether the LUN is a plain
/// file is the engine's and the backstore's call ([`rustio_scsi::DirectIn`]).
///
/// The order the initiator sees is kept: the data is sent (`sendfile(2)` returned)
/// before the status that completes the READ, by the thread that ran it — on the
/// reader (inline) before it reads the next PDU; a result handed over to a busy
/// writer's holder is read into memory first (`Conn::send_scsi_result`).
fn file_send_ok(conn: &Conn, cmd: &NewCommand) -> bool {
    !conn.digests.data
        && cmd.hdr.read
        && !cmd.hdr.write
        && conn
            .sendfile_min
            .is_some_and(|min| u64::from(cmd.hdr.edtl) >= min)
        && matches!(
            cmd.hdr.attr,
            TaskAttribute::Simple | TaskAttribute::Untagged
        )
        && !conn.session.non_simple_seen.load(Ordering::Acquire)
}

/// Runs a command on the engine; says where its data-in went: read in place into
/// [`ExecBufs::read`], left in the backing file (`file_ok`), or staged.
fn run_engine(
    sess: &Session,
    cmd: &NewCommand,
    xfer: &Transfer,
    lun: u64,
    bufs: &mut ExecBufs,
    file_ok: bool,
) -> (Response, DataIn) {
    let hdr = &cmd.hdr;
    let needed_out = xfer.data_out_len.filter(|_| hdr.write);
    let block_size = xfer.block_size.max(1) as usize;
    // EDTL shorter than the CDB's transfer: write only what EDTL covers and report
    // the overflow (RFC 7143 11.4.5.1, following FCP-4 9.4.2 "data beyond the
    // expected length shall not be transferred").
    let truncation = match needed_out {
        Some(n) if n > hdr.edtl => {
            xfer.truncated_cdb(cmd.cdb.bytes(), hdr.edtl / block_size as u32)
        }
        _ => Truncation::NotTruncatable,
    };
    let (cdb, out_len): (&[u8], usize) = match &truncation {
        Truncation::Nothing => return (Response::GOOD, DataIn::Staged),
        Truncation::Cdb(c) => (c, cmd.buf.len() / block_size * block_size),
        // The device server must see all of a COMPARE AND WRITE's data-out to reject a
        // length that does not match (SBC-4 5.3).
        Truncation::NotTruncatable if xfer.whole_data_out => (cmd.cdb.bytes(), cmd.buf.len()),
        Truncation::NotTruncatable => (
            cmd.cdb.bytes(),
            needed_out.map_or(cmd.buf.len(), |n| n as usize),
        ),
    };
    let data_out: &[u8] = if hdr.write {
        &cmd.buf[..out_len.min(cmd.buf.len())]
    } else {
        &[]
    };
    let direct_len = if hdr.read && !hdr.write {
        hdr.edtl as usize
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
    if file_ok {
        direct.accept_file_range();
    }
    let resp = sess.lun_map.execute_direct(
        &sess.nexus,
        lun,
        cdb,
        data_out,
        u64::from(hdr.itt),
        task_attr(hdr.attr),
        &mut bufs.staged,
        direct_ok.then_some(&mut direct),
    );
    let placed = match direct.take_file_range() {
        Some(f) => DataIn::File(f),
        None if direct.used() => DataIn::Read,
        None => DataIn::Staged,
    };
    (resp, placed)
}

/// The residual of a command's response (RFC 7143 11.4.5): a write against the CDB's
/// transfer (`needed_out`, when the engine could size it), anything else against the
/// data-in it returned.
fn residual(hdr: &ScsiCommand, needed_out: Option<u32>, data_in_len: usize) -> Residual {
    if hdr.write {
        match needed_out {
            Some(n) => Residual::of(hdr.edtl, u64::from(n)),
            None => Residual::default(),
        }
    } else if hdr.read || data_in_len > 0 {
        Residual::of(hdr.edtl, data_in_len as u64)
    } else {
        Residual::default()
    }
}

/// The counters a command is counted on: its session's and its LUN's.
fn counters<'s>(sess: &'s Session, cmd: &NewCommand) -> impl Iterator<Item = &'s IoCounters> {
    [
        Some(&sess.counters),
        sess.lun(cmd.hdr.lun).map(|l| &l.counters),
    ]
    .into_iter()
    .flatten()
    .map(|c| &**c)
}

/// Counts a command on its session and LUN (relaxed atomics; no lock on the I/O path).
fn count(sess: &Session, cmd: &NewCommand, class: IoClass, resp: &Response, data_in_len: usize) {
    let ok = matches!(resp.status, Status::Good | Status::ConditionMet);
    let read_bytes = if cmd.hdr.read {
        data_in_len.min(cmd.hdr.edtl as usize) as u64
    } else {
        0
    };
    let write_bytes = if cmd.hdr.write {
        cmd.buf.len() as u64
    } else {
        0
    };
    for c in counters(sess, cmd) {
        c.record(
            class == IoClass::Read,
            class == IoClass::Write,
            read_bytes,
            write_bytes,
            ok,
        );
    }
}

/// Adds a command's time in the target, from its arrival to its response sent or queued
/// (or to its end, when the response was not its to send), and of that its time in the
/// engine and backstore, to its session's and LUN's counters.
fn count_time(sess: &Session, cmd: &NewCommand, class: IoClass, backstore: Duration) {
    if class == IoClass::Other {
        return;
    }
    let total = cmd.arrived.elapsed();
    for c in counters(sess, cmd) {
        c.record_time(
            class == IoClass::Read,
            class == IoClass::Write,
            total,
            backstore,
        );
    }
}

/// The engine's task attribute for an iSCSI one (RFC 7143 11.3.1, SAM-5 8.6).
fn task_attr(a: TaskAttribute) -> TaskAttr {
    match a {
        TaskAttribute::Ordered => TaskAttr::Ordered,
        TaskAttribute::HeadOfQueue => TaskAttr::HeadOfQueue,
        TaskAttribute::Aca => TaskAttr::Aca,
        _ => TaskAttr::Simple,
    }
}

/// Whether a ready command runs on this (reader) thread rather than on the pool: the
/// store-wide [`crate::config::Execution`] policy with the iSCSI threshold, and never
/// while more received PDUs wait behind it.
fn runs_inline(conn: &Conn, cmd: &NewCommand) -> bool {
    let network = conn
        .session
        .lun(cmd.hdr.lun)
        .is_some_and(|l| l.lu.backstore().capabilities().network);
    conn.services.execution().runs_inline(
        u64::from(cmd.hdr.edtl),
        network,
        u64::from(AUTO_INLINE_MAX),
    ) && !reader_busy()
}

/// Runs a command whose data is complete: inline or on the pool, or answers BUSY when
/// it found no buffer budget.
pub(super) fn dispatch(conn: &Arc<Conn>, mut cmd: Box<NewCommand>, task: Arc<TaskState>) {
    if cmd.busy {
        drop(task);
        answer_busy(conn, cmd);
        return;
    }
    if cmd.hdr.write && cmd.fail.is_none() {
        // Sequences ended short of the transfer: the rest reads as zeros, as before
        // buffers were grown lazily (the budget for it is reserved).
        let need = cmd.need;
        cmd.grow_buf(need);
    }
    if submits_async(conn, &cmd) {
        submit_async(conn, cmd, task);
        return;
    }
    let inline = runs_inline(conn, &cmd);
    let job = ExecJob {
        sess: conn.session.clone(),
        conn: conn.clone(),
        cmd,
        task,
        finished: None,
    };
    if inline {
        INLINE_BUF.with(|b| {
            let mut bufs = b.borrow_mut();
            run_job(job, &mut bufs);
            bufs.trim();
        });
    } else {
        conn.registry.submit(job);
    }
}

/// Whether a ready command goes to its store without a thread waiting for it
/// ([`rustio_scsi::LunMap::submit`]: READ and WRITE on an RBD LUN): a SIMPLE task whose
/// direction and expected length are the CDB's own (anything else — residuals, a
/// truncated write — runs the synchronous way, which handles it).
fn submits_async(conn: &Conn, cmd: &NewCommand) -> bool {
    if cmd.fail.is_some()
        || !matches!(
            cmd.hdr.attr,
            TaskAttribute::Simple | TaskAttribute::Untagged
        )
        || cmd.hdr.read == cmd.hdr.write
    {
        return false;
    }
    let Some(entry) = conn.session.lun(cmd.hdr.lun) else {
        return false;
    };
    if !entry.lu.submits_async(cmd.cdb.bytes()) {
        return false;
    }
    // A write whose EDTL differs from the CDB's transfer is truncated or reports a
    // residual: the synchronous path's business (a READ's length the engine checks).
    !cmd.hdr.write
        || entry.lu.data_out_len(cmd.cdb.bytes()) == Some(cmd.hdr.edtl)
            && cmd.buf.len() == cmd.hdr.edtl as usize
}

/// Hands a command to its store ([`submits_async`]); its result is sent once the store
/// completed it, on the store's completion thread when that cannot block, otherwise by
/// a worker of the pool ([`complete`]): a peer slow to read never holds up the other
/// LUNs' completions. A command the engine sends back (`retry`) runs on the pool the
/// synchronous way.
fn submit_async(conn: &Arc<Conn>, mut cmd: Box<NewCommand>, task: Arc<TaskState>) {
    let sess = conn.session.clone();
    if task.aborted.load(Ordering::Acquire) {
        finish_task(&sess, &cmd);
        return;
    }
    let lun = rustio_scsi::decode_lun_u64(cmd.hdr.lun).unwrap_or(u64::MAX);
    let cdb = cmd.cdb.clone();
    let data_out = std::mem::take(&mut cmd.buf);
    let out_len = if cmd.hdr.write { data_out.len() } else { 0 };
    let data_in_len = if cmd.hdr.read {
        cmd.hdr.edtl as usize
    } else {
        0
    };
    let itt = u64::from(cmd.hdr.itt);
    let attr = task_attr(cmd.hdr.attr);
    let to = conn.clone();
    let submitted = Instant::now();
    sess.lun_map.submit(
        &sess.nexus,
        lun,
        cdb.bytes(),
        data_out,
        out_len,
        itt,
        attr,
        data_in_len,
        move |mut end| {
            cmd.backstore = submitted.elapsed();
            cmd.buf = std::mem::take(&mut end.data_out);
            let retry = end.retry;
            let job = ExecJob {
                sess: to.session.clone(),
                conn: to.clone(),
                cmd,
                task,
                finished: (!retry).then_some(end),
            };
            if retry {
                to.registry.submit(job);
            } else {
                complete(job);
            }
        },
    );
}

/// Answers a write that found no buffer budget with BUSY (SAM-5 5.3.1: the initiator
/// retries later), without executing it.
pub(super) fn answer_busy(conn: &Arc<Conn>, cmd: Box<NewCommand>) {
    let sess = &conn.session;
    conn.services
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
            Payload::Mem(&[]),
            Residual::default(),
        );
    }
}
