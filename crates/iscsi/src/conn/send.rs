//! The sending side of a connection: the writer lock and StatSN, responses handed over
//! between workers while a slow peer holds the writer (issue 20 item 3), SCSI results
//! as Data-In and SCSI Response PDUs (RFC 7143 11.4, 11.7), Reject (11.17) and the
//! logout request (11.9.1).

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;
use rustio_iscsi_proto::pdu::{
    self, DataIn, Header, Reject, RejectReason, ScsiCommand, ScsiResponse, BHS_LEN, RESERVED_TAG,
};
use rustio_scsi::{Response, Status};
use tracing::{debug, warn};

use super::io::{is_timeout, transfer_allowance, write_pdus, OutPdu, Writer};
use super::{Conn, QueuedResult, HANDOFF_WAIT, TX_QUEUE_MAX, TX_QUEUE_SERVER_MAX};
use crate::command::{NewCommand, Residual};

impl Conn {
    /// Writes PDUs within their wall-clock deadline (send timeout + size at the minimum
    /// rate), marking the writer busy meanwhile for [`super::exec::run_job`].
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
    pub(super) fn writer_stuck(&self) -> bool {
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
        self.drop_slow_peer(
            self.writer_wait(),
            "connection's writer stuck behind a peer that does not read",
        );
        None
    }

    /// Drops a peer that does not read, or reads too slowly (issue 20 item 3): counts
    /// a send timeout, logs who it is, how long it was given and why, and closes the
    /// connection.
    fn drop_slow_peer(&self, waited: Duration, why: &str) {
        self.services
            .limit_counters
            .send_timeouts
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            conn = self.id,
            peer = %self.peer,
            initiator = %self.session.initiator,
            waited_secs = waited.as_secs_f64(),
            send_timeout_secs = self.send_timeout.as_secs_f64(),
            min_rate = self.min_rate,
            "{why}; dropping the connection"
        );
        self.close();
    }

    /// Sends one PDU. `build` receives (StatSN, ExpCmdSN, MaxCmdSN); `advance` says
    /// whether this PDU consumes a StatSN.
    pub(super) fn send(
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
            self.drop_slow_peer(
                self.send_timeout,
                "peer stopped reading or reads too slowly: no send progress within the send timeout, or a response not sent within the send timeout plus its size at the minimum rate",
            );
        } else {
            debug!(conn = self.id, error = %e, "write failed");
            self.close();
        }
    }

    /// Releases the writer after writing the responses other workers handed over
    /// meanwhile, then puts the jobs parked behind them back on the pool. Every holder
    /// of the writer lock ends through here, and whoever queues a response tries the
    /// lock after queuing, so nothing queued is left behind.
    pub(super) fn release<'a>(&'a self, mut g: MutexGuard<'a, Writer>) {
        loop {
            loop {
                let item = {
                    let mut tx = self.tx.lock();
                    let item = tx.items.pop_front();
                    if let Some(i) = &item {
                        tx.bytes -= i.data.len();
                        self.services
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
                self.registry.submit(job);
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
    pub(super) fn enqueue(
        &self,
        hdr: &ScsiCommand,
        resp: &Response,
        data: &[u8],
        residual: Residual,
    ) -> bool {
        let mut tx = self.tx.lock();
        let len = data.len();
        if tx.bytes.saturating_add(len) > TX_QUEUE_MAX {
            return false;
        }
        let total = self
            .services
            .tx_queued
            .fetch_add(len as u64, Ordering::AcqRel);
        if total.saturating_add(len as u64) > TX_QUEUE_SERVER_MAX {
            self.services
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
    pub(super) fn reject(&self, reason: RejectReason, bhs: &[u8; BHS_LEN]) {
        debug!(conn = self.id, reason = ?reason, opcode = bhs[0] & 0x3f, "reject");
        self.services
            .metrics
            .rejects
            .fetch_add(1, Ordering::Relaxed);
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
    pub(super) fn send_scsi_result(
        &self,
        cmd: &NewCommand,
        resp: &Response,
        data_in: &[u8],
        residual: Residual,
    ) -> bool {
        let hdr = &cmd.hdr;
        if resp.status != Status::Good {
            tracing::trace!(
                conn = self.id,
                itt = hdr.itt,
                opcode = cmd.cdb.bytes().first().copied().unwrap_or(0),
                status = ?resp.status,
                sense = ?resp.sense,
                "command ended"
            );
        }
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
        if w.broken {
            return false;
        }
        let sense = resp.sense_bytes();
        // Phase collapse only without sense data and for non-exception status.
        let collapse = !data.is_empty()
            && sense.is_none()
            && matches!(resp.status, Status::Good | Status::ConditionMet);
        let sess = &self.session;
        let sn = Sns {
            stat_sn: w.stat_sn,
            exp: sess.exp_cmd_sn(),
            max: sess.max_cmd_sn(),
        };
        let (mut pdus, mut stat_sn, data_sn) =
            self.data_in_pdus(hdr, resp.status, data, residual, collapse, sn);
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
                status: resp.status.as_u8(),
                itt: hdr.itt,
                snack_tag: 0,
                stat_sn,
                exp_cmd_sn: sn.exp,
                max_cmd_sn: sn.max,
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

    /// The Data-In PDUs of `data`: at most MaxRecvDataSegmentLength each, F bit at the
    /// end of every MaxBurstLength (RFC 7143 11.7.1), status in the last one when
    /// `collapse` (11.7.4). Returns them, the StatSN after them and the next DataSN.
    fn data_in_pdus<'a>(
        &self,
        hdr: &ScsiCommand,
        status: Status,
        data: &'a [u8],
        residual: Residual,
        collapse: bool,
        sn: Sns,
    ) -> (Vec<OutPdu<'a>>, u32, u32) {
        let mrdsl = (self.send_mrdsl.load(Ordering::Relaxed) as usize).max(512);
        let burst = (self.session.params.max_burst_length as usize).max(512);
        let mut pdus: Vec<OutPdu<'_>> = Vec::with_capacity(data.len() / mrdsl + 2);
        let mut offset = 0usize;
        let mut data_sn = 0u32;
        let mut in_burst = 0usize;
        let mut stat_sn = sn.stat_sn;
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
                status: status.as_u8(),
                lun: if with_status { 0 } else { hdr.lun },
                itt: hdr.itt,
                ttt: RESERVED_TAG,
                stat_sn: if with_status { stat_sn } else { 0 },
                exp_cmd_sn: sn.exp,
                max_cmd_sn: sn.max,
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
        (pdus, stat_sn, data_sn)
    }
}

/// The sequence numbers a response carries (RFC 7143 11.4.8-11.4.9): StatSN under the
/// writer lock, and the session's ExpCmdSN and MaxCmdSN.
#[derive(Debug, Clone, Copy)]
struct Sns {
    stat_sn: u32,
    exp: u32,
    max: u32,
}
