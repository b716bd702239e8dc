//! Write commands collecting Data-Out (RFC 7143 11.7, 11.8): the buffer budget of their
//! whole transfer (issue 20 item 2), R2Ts up to MaxOutstandingR2T, and the commands
//! waiting for budget, oldest first, answered BUSY when they wait too long.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustio_iscsi_proto::pdu::{Header, R2t, RejectReason, ScsiCommand, TaskAttribute};
use tracing::{debug, warn};

use super::exec::{answer_busy, dispatch};
use super::Conn;
use crate::budget::Reservation;
use crate::command::{finish_task, unsolicited_end, NewCommand, WriteTask};
use crate::dataout::DataOutSeq;
use crate::session::{Link, Session, TaskRefused, TaskState};

/// Starts a command delivered in CmdSN order: registers the task and either dispatches
/// it or asks for its Data-Out.
pub(super) fn start_command(conn: &Arc<Conn>, mut cmd: Box<NewCommand>) {
    let sess = &conn.session;
    if !matches!(
        cmd.hdr.attr,
        TaskAttribute::Simple | TaskAttribute::Untagged
    ) {
        // Before this command can run anywhere: from now on READ data is read before
        // its READ completes (see `Session::non_simple_seen`).
        sess.non_simple_seen.store(true, Ordering::Release);
    }
    let task = Arc::new(TaskState {
        itt: cmd.hdr.itt,
        lun_field: cmd.hdr.lun,
        aborted: AtomicBool::new(false),
    });
    if let Err(refused) = sess.add_task(task.clone(), cmd.hdr.immediate) {
        // RFC 7143 11.17.1: reason 0x07 (the ITT is a task still in progress) or 0x06
        // (no room for another immediate command; see `IMMEDIATE_TASKS`).
        let reason = match refused {
            TaskRefused::ItTInUse => RejectReason::TaskInProgress,
            TaskRefused::ImmediateLimit => RejectReason::ImmediateCommandReject,
        };
        let bhs = Header::ScsiCommand(cmd.hdr).encode(0, 0);
        conn.reject(reason, &bhs);
        if !cmd.hdr.immediate {
            sess.complete_one();
        }
        return;
    }
    if cmd.hdr.write && !cmd.busy {
        reserve_transfer(conn, &mut cmd);
    }
    if !cmd.hdr.write || cmd.received >= cmd.need || (cmd.busy && cmd.hdr.final_bit) {
        dispatch(conn, cmd, task);
        return;
    }
    collect_data_out(conn, cmd, task);
}

/// Reserves a write's whole transfer now that it runs in CmdSN order (issue 20 item 2),
/// all or nothing: grows what its immediate data holds, or (when that cannot grow, e.g.
/// the transfer alone exceeds a budget that only admits it when empty) gives that back
/// and reserves afresh. Without budget the command waits for it (only R2T-paced data)
/// or, when data came or is coming unsolicited, will be answered BUSY.
fn reserve_transfer(conn: &Conn, cmd: &mut NewCommand) {
    let sess = &conn.session;
    let need = u64::from(cmd.need);
    let mut early = cmd.budget.take();
    let grown = early.as_mut().is_some_and(|r| r.grow_to(need));
    let reservation = if grown {
        early
    } else {
        drop(early);
        Reservation::try_new(&sess.write_budget, &conn.services.write_budget, need)
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

/// Makes a write task of a command that still expects Data-Out: solicits it, or queues
/// it behind the writes already waiting for budget.
fn collect_data_out(conn: &Arc<Conn>, cmd: Box<NewCommand>, task: Arc<TaskState>) {
    let params = conn.session.params;
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
            conn.services
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

/// Data-out bytes a write really transfers: the CDB's length (SBC-4 TRANSFER LENGTH)
/// bounded by EDTL, so EDTL beyond the CDB reserves and solicits nothing. Commands whose
/// device server must see all of their data-out (COMPARE AND WRITE) and CDBs the engine
/// cannot size keep EDTL.
pub(super) fn write_transfer_len(sess: &Session, hdr: &ScsiCommand, cdb: &[u8]) -> u32 {
    let lun = rustio_scsi::decode_lun_u64(hdr.lun).unwrap_or(u64::MAX);
    let xfer = sess.lun_map.transfer(lun, cdb);
    match xfer.data_out_len {
        Some(n) if !xfer.whole_data_out => n.min(hdr.edtl),
        _ => hdr.edtl,
    }
}

/// Takes the budget of a waiting write; `false` while there is none.
fn try_fund(conn: &Conn, wt: &mut WriteTask) -> bool {
    if !wt.held {
        return true;
    }
    let need = u64::from(wt.cmd.need);
    match Reservation::try_new(
        &conn.session.write_budget,
        &conn.services.write_budget,
        need,
    ) {
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
pub(super) fn retry_held(conn: &Arc<Conn>) {
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
pub(super) fn expire_held(conn: &Arc<Conn>, now: Instant, limit: Duration) {
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
/// Sends R2Ts until MaxOutstandingR2T are outstanding or everything is requested
/// (RFC 7143 11.8, 13.17), each at most MaxBurstLength.
pub(super) fn send_r2ts(conn: &Conn, wt: &mut WriteTask) {
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
        wt.cmd.grow_buf(g.offset + g.len);
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

/// The session sees its connections as [`Link`]s.
impl Link for Conn {
    fn id(&self) -> u64 {
        self.id
    }

    fn cid(&self) -> u16 {
        self.cid
    }

    fn close(&self) {
        Conn::close(self);
    }

    fn abandon_write(&self, itt: u32) {
        // Bound before `finish_task` runs: the map's lock is not held meanwhile.
        let removed = self.writes.lock().remove(&itt);
        if let Some(w) = removed {
            finish_task(&self.session, &w.cmd);
        }
    }

    fn abandon_writes(&self) {
        let pending: Vec<WriteTask> = self.writes.lock().drain().map(|(_, w)| w).collect();
        for w in pending {
            finish_task(&self.session, &w.cmd);
        }
    }
}
