//! The sending side of a connection: the writer lock and StatSN, responses handed over
//! between workers while a slow peer holds the writer (issue 20 item 3), SCSI results
//! as Data-In and SCSI Response PDUs (RFC 7143 11.4, 11.7), Reject (11.17) and the
//! logout request (11.9.1).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;
use rustio_backstore::FileRange;
use rustio_iscsi_proto::pdu::{
    self, DataIn, Digests, Header, Reject, RejectReason, ScsiCommand, ScsiResponse, BHS_LEN,
    RESERVED_TAG,
};
use rustio_scsi::{Response, Status};
use tracing::{debug, warn};

use super::io::{
    is_timeout, transfer_allowance, write_pdus, write_pdus_now, OutPdu, Payload, Writer,
};
use super::{Conn, QueuedResult, HANDOFF_WAIT, TX_QUEUE_MAX, TX_QUEUE_SERVER_MAX};
use crate::command::{NewCommand, Residual};

impl Conn {
    /// Writes the writer's backlog, then PDUs, within their wall-clock deadline (send
    /// timeout + size at the minimum rate), marking the writer busy meanwhile for
    /// [`super::exec::run_job`].
    fn write_out(&self, w: &mut Writer, pdus: &[OutPdu<'_>]) -> io::Result<()> {
        let now = Instant::now();
        let bytes: u64 =
            pdus.iter().map(|p| p.data_len() as u64).sum::<u64>() + w.backlog.len() as u64;
        let deadline = now + transfer_allowance(self.send_timeout, bytes, self.min_rate);
        let stamp = (now.duration_since(self.born).as_nanos() as u64) | 1;
        self.send_started.store(stamp, Ordering::Release);
        let r = write_pdus(&mut w.stream, &w.backlog, pdus, deadline);
        self.send_started.store(0, Ordering::Release);
        if r.is_ok() && !w.backlog.is_empty() {
            // Up to a whole response: not kept for the life of the connection.
            w.backlog = Vec::new();
        }
        r
    }

    /// Writes PDUs without blocking: what the socket does not take at once stays in
    /// the writer's backlog, written first by the next holder (see [`Conn::writer_now`]).
    fn write_now(&self, w: &mut Writer, pdus: &[OutPdu<'_>]) -> io::Result<()> {
        debug_assert!(w.backlog.is_empty(), "writer_now hands out no backlog");
        write_pdus_now(&w.stream, pdus, &mut w.backlog)
    }

    /// The writer, for a thread that must not wait on this peer (the store's completion
    /// thread, [`super::exec`]): only when it is free at once, nothing is queued or left
    /// over for it, and the connection is open. Its taker writes with
    /// [`Conn::write_result_now`] and lets go with [`Conn::release_now`].
    pub(super) fn writer_now(self: &Arc<Self>) -> Option<MutexGuard<'_, Writer>> {
        if self.is_closing() || self.tx_pending.load(Ordering::Acquire) > 0 {
            return None;
        }
        let w = self.writer.try_lock()?;
        if w.broken || !w.backlog.is_empty() {
            // Taken, so let go the way every holder does: what waits goes to the pool.
            self.release_now(w);
            return None;
        }
        Some(w)
    }

    /// Lets go of a writer taken without waiting ([`Conn::writer_now`]) and without
    /// writing anything more on this thread: the rest of its response, results other
    /// workers queued meanwhile and jobs parked behind them go to a worker of the pool
    /// ([`Conn::drain`]).
    pub(super) fn release_now(self: &Arc<Self>, w: MutexGuard<'_, Writer>) {
        let left = !w.backlog.is_empty() && !w.broken;
        drop(w);
        // Checked after letting go: a result queued before that found the writer
        // taken, and one queued after it takes the writer itself.
        let waiting = {
            let tx = self.tx.lock();
            !tx.items.is_empty() || !tx.parked.is_empty()
        };
        if left || waiting {
            self.registry.drain(self.clone());
        }
    }

    /// Writes what waits for the writer — the rest of a response written without
    /// blocking, results handed over — on a worker of the pool ([`Conn::release`]).
    /// Never waits for the writer: its holder writes all that when it lets go.
    pub(crate) fn drain(&self) {
        if let Some(w) = self.writer.try_lock() {
            self.release(w);
        }
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

    /// Releases the writer after writing what waits for it — the rest of a response
    /// written without blocking, the responses other workers handed over meanwhile —
    /// then puts the jobs parked behind them back on the pool. Every holder
    /// of the writer lock ends through here, and whoever queues a response tries the
    /// lock after queuing, so nothing queued is left behind.
    pub(super) fn release<'a>(&'a self, mut g: MutexGuard<'a, Writer>) {
        loop {
            if !g.broken && !g.backlog.is_empty() {
                // The rest of a response written without blocking (`writer_now`).
                if let Err(e) = self.write_out(&mut g, &[]) {
                    self.write_failed(&mut g, &e);
                }
            }
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
                self.write_result(
                    &mut g,
                    &i.hdr,
                    &i.resp,
                    Payload::Mem(&i.data),
                    i.residual,
                    false,
                );
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
        // Copied before taking the queue's lock, which a store's completion thread also
        // takes (`release_now`).
        let data = data.to_vec();
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
            data,
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
    /// possible, RFC 7143 11.7.4) and/or a SCSI Response. Data-In from a file range goes
    /// out with `sendfile(2)` when this thread writes it; a result handed over to the
    /// writer's holder, or one that needs a data digest, is read into memory first.
    pub(super) fn send_scsi_result(
        &self,
        cmd: &NewCommand,
        resp: &Response,
        data_in: Payload<'_>,
        residual: Residual,
    ) -> bool {
        let hdr = &cmd.hdr;
        trace_end(self.id, cmd, resp);
        let len = send_len(hdr, data_in.len());
        let file_part;
        let digest_copy;
        let data = match data_in {
            Payload::Mem(d) => Payload::Mem(&d[..len]),
            // The data digest needs the bytes (never the case from `exec`, which then
            // asks for no file range).
            Payload::File(f) if self.digests.data => match self.read_file(&f.sub(0, len)) {
                Some(v) => {
                    digest_copy = v;
                    Payload::Mem(&digest_copy)
                }
                None => return false,
            },
            Payload::File(f) => {
                file_part = f.sub(0, len);
                Payload::File(&file_part)
            }
        };
        // No worker waits long on a connection whose peer is slow to read (issue 20
        // item 3): after HANDOFF_WAIT the result is handed to the writer's holder.
        let mut w = match self.writer.try_lock_for(HANDOFF_WAIT) {
            Some(w) => w,
            None => {
                let queued_copy;
                let bytes = match data {
                    Payload::Mem(d) => d,
                    Payload::File(f) => match self.read_file(f) {
                        Some(v) => {
                            queued_copy = v;
                            &queued_copy[..]
                        }
                        None => return false,
                    },
                };
                if self.enqueue(hdr, resp, bytes, residual) {
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
        let ok = self.write_result(&mut w, hdr, resp, data, residual, false);
        self.release(w);
        ok
    }

    /// Sends the outcome of a SCSI command on a writer taken with [`Conn::writer_now`],
    /// without blocking. Its data must be in memory (an asynchronous result's is): a
    /// file range fails the write, which closes the connection.
    pub(super) fn write_result_now(
        &self,
        w: &mut Writer,
        cmd: &NewCommand,
        resp: &Response,
        data_in: Payload<'_>,
        residual: Residual,
    ) -> bool {
        trace_end(self.id, cmd, resp);
        let data = match data_in {
            Payload::Mem(d) => Payload::Mem(&d[..send_len(&cmd.hdr, d.len())]),
            file => file,
        };
        self.write_result(w, &cmd.hdr, resp, data, residual, true)
    }

    /// A file range's bytes in memory: the copy the page-cache path saves, made when the
    /// bytes themselves are needed (a data digest, a result queued for the writer's
    /// holder). `None` after a read error, with the connection closed: the command has
    /// already ended with GOOD, and no status can take that back.
    fn read_file(&self, f: &FileRange) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; f.len()];
        match f.read_into(&mut buf) {
            Ok(()) => Some(buf),
            Err(e) => {
                warn!(
                    conn = self.id,
                    peer = %self.peer,
                    error = %e,
                    "cannot read a READ's data from its backing file after GOOD; dropping the connection"
                );
                self.close();
                None
            }
        }
    }

    /// Writes one SCSI result under the writer lock, assigning its StatSN; with `now`,
    /// without blocking ([`Conn::write_now`]).
    fn write_result(
        &self,
        w: &mut Writer,
        hdr: &ScsiCommand,
        resp: &Response,
        data: Payload<'_>,
        residual: Residual,
        now: bool,
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
        let (mut pdus, mut stat_sn, data_sn) = data_in_pdus(
            self.data_in_limits(),
            hdr,
            resp.status,
            data,
            residual,
            collapse,
            sn,
        );
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
        let written = if now {
            self.write_now(w, &pdus)
        } else {
            self.write_out(w, &pdus)
        };
        match written {
            Ok(()) => {
                w.stat_sn = stat_sn;
                true
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    warn!(
                        conn = self.id,
                        peer = %self.peer,
                        itt = hdr.itt,
                        error = %e,
                        "a Data-In PDU cannot be completed; dropping the connection rather than sending wrong framing"
                    );
                }
                self.write_failed(w, &e);
                false
            }
        }
    }

    /// What splits this connection's Data-In: the initiator's MaxRecvDataSegmentLength,
    /// the session's MaxBurstLength, the digests.
    fn data_in_limits(&self) -> DataInLimits {
        DataInLimits {
            mrdsl: self.send_mrdsl.load(Ordering::Relaxed) as usize,
            burst: self.session.params.max_burst_length as usize,
            digests: self.digests,
        }
    }
}

/// Traces a command that ended with another status than GOOD.
fn trace_end(conn: u64, cmd: &NewCommand, resp: &Response) {
    if resp.status != Status::Good {
        tracing::trace!(
            conn,
            itt = cmd.hdr.itt,
            opcode = cmd.cdb.bytes().first().copied().unwrap_or(0),
            status = ?resp.status,
            sense = ?resp.sense,
            "command ended"
        );
    }
}

/// How much of `len` bytes of data-in a command's answer carries: at most its expected
/// length, none for a command that reads nothing.
fn send_len(hdr: &ScsiCommand, len: usize) -> usize {
    if hdr.read {
        len.min(hdr.edtl as usize)
    } else {
        0
    }
}

/// What splits Data-In into PDUs (RFC 7143 13.12, 13.13) and frames them.
#[derive(Debug, Clone, Copy)]
struct DataInLimits {
    mrdsl: usize,
    burst: usize,
    digests: Digests,
}

/// The Data-In PDUs of `data`: at most MaxRecvDataSegmentLength each, F bit at the
/// end of every MaxBurstLength (RFC 7143 11.7.1), status in the last one when
/// `collapse` (11.7.4). Returns them, the StatSN after them and the next DataSN.
fn data_in_pdus<'a>(
    lim: DataInLimits,
    hdr: &ScsiCommand,
    status: Status,
    data: Payload<'a>,
    residual: Residual,
    collapse: bool,
    sn: Sns,
) -> (Vec<OutPdu<'a>>, u32, u32) {
    let mrdsl = lim.mrdsl.max(512);
    let burst = lim.burst.max(512);
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
        pdus.push(match data {
            Payload::Mem(d) => OutPdu::new(&h, &d[offset..offset + n], lim.digests),
            Payload::File(f) => OutPdu::from_file(&h, f.sub(offset, n), lim.digests),
        });
        if with_status {
            stat_sn = stat_sn.wrapping_add(1);
        }
        data_sn = data_sn.wrapping_add(1);
        offset += n;
    }
    (pdus, stat_sn, data_sn)
}

/// The sequence numbers a response carries (RFC 7143 11.4.8-11.4.9): StatSN under the
/// writer lock, and the session's ExpCmdSN and MaxCmdSN.
#[derive(Debug, Clone, Copy)]
struct Sns {
    stat_sn: u32,
    exp: u32,
    max: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::io::write_pdus;
    use rustio_iscsi_proto::pdu::TaskAttribute;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (s, c)
    }

    /// Writes `pdus` on one end of a loopback connection and returns the result and
    /// every byte the other end received.
    fn wire(pdus: &[OutPdu<'_>]) -> (io::Result<()>, Vec<u8>) {
        let (mut s, mut c) = pair();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            got
        });
        let r = write_pdus(&mut s, &[], pdus, Instant::now() + Duration::from_secs(10));
        s.flush().unwrap();
        drop(s);
        (r, t.join().unwrap())
    }

    fn read_cmd(edtl: u32) -> ScsiCommand {
        ScsiCommand {
            immediate: false,
            final_bit: true,
            read: true,
            write: false,
            attr: TaskAttribute::Simple,
            lun: 0x0001_0000_0000_0000,
            itt: 0x1234,
            edtl,
            cmd_sn: 7,
            exp_stat_sn: 3,
            cdb: [0; 16],
        }
    }

    const SN: Sns = Sns {
        stat_sn: 10,
        exp: 20,
        max: 51,
    };

    /// The Data-In sequence from a file range is byte for byte the one built from the
    /// same bytes in memory (the copy path): every MaxRecvDataSegmentLength split,
    /// MaxBurstLength F bits, padding, header digests, status collapsed in the last PDU.
    #[test]
    fn data_in_from_a_file_range_matches_the_copy_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun");
        let content: Vec<u8> = (0..(1u32 << 20) + 8192)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        for &(offset, len) in &[
            (0usize, 512usize),
            (512, 4096),
            (7 * 4096 + 512, 128 << 10),
            (4096, (128 << 10) + 3), // not a multiple of 4: padding
            (8192, 1 << 20),
        ] {
            for &(mrdsl, burst) in &[
                (512usize, 262_144usize),
                (8192, 16_384),
                (65_536, 262_144),
                (262_144, 262_144),
                (262_144, 65_536),
            ] {
                for header in [false, true] {
                    let lim = DataInLimits {
                        mrdsl,
                        burst,
                        digests: Digests {
                            header,
                            data: false,
                        },
                    };
                    let hdr = read_cmd(len as u32);
                    let res = Residual::of(len as u32, len as u64);
                    let mem = &content[offset..offset + len];
                    let range = FileRange::new(file.clone(), offset as u64, len).unwrap();
                    let (a, sa, da) =
                        data_in_pdus(lim, &hdr, Status::Good, Payload::Mem(mem), res, true, SN);
                    let (b, sb, db) = data_in_pdus(
                        lim,
                        &hdr,
                        Status::Good,
                        Payload::File(&range),
                        res,
                        true,
                        SN,
                    );
                    assert_eq!((sa, da), (sb, db));
                    assert_eq!(a.len(), b.len());
                    let (ra, wa) = wire(&a);
                    let (rb, wb) = wire(&b);
                    ra.unwrap();
                    rb.unwrap();
                    assert!(
                        wa == wb,
                        "offset {offset} len {len} mrdsl {mrdsl} burst {burst} hd {header}"
                    );
                    let pdus = len.div_ceil(mrdsl.min(burst));
                    assert!(wa.len() >= len + pdus * BHS_LEN);
                }
            }
        }
    }

    /// A file shortened underneath a lent range: the PDU cannot be completed, the write
    /// fails with `UnexpectedEof` (the connection is then dropped) and nothing follows
    /// the partial payload on the wire.
    #[test]
    fn short_file_fails_the_write_without_more_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun");
        std::fs::write(&path, vec![0x5a; 64 << 10]).unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let range = FileRange::new(file, 0, 128 << 10).unwrap();
        let lim = DataInLimits {
            mrdsl: 32 << 10,
            burst: 256 << 10,
            digests: Digests::default(),
        };
        let hdr = read_cmd(128 << 10);
        let (pdus, _, _) = data_in_pdus(
            lim,
            &hdr,
            Status::Good,
            Payload::File(&range),
            Residual::default(),
            true,
            SN,
        );
        assert_eq!(pdus.len(), 4);
        let (r, got) = wire(&pdus);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // Two whole PDUs, then the third one's header: no bytes of anything else.
        assert_eq!(got.len(), 2 * (BHS_LEN + (32 << 10)) + BHS_LEN);
        // Zero-length file ranges are no payload at all.
        assert!(range.sub(200 << 10, 10).is_empty());
    }

    /// A write that must not block (the store's completion thread) to a peer that is
    /// not reading: it returns at once with what the socket did not take kept byte for
    /// byte, and that rest written first by the next (blocking) writer gives exactly
    /// the stream one blocking writer would have sent (padding and digests included).
    #[test]
    fn a_write_that_must_not_block_leaves_its_rest_for_the_next_writer() {
        use crate::conn::io::write_pdus_now;
        use nix::sys::socket::{setsockopt, sockopt};
        let content: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        // Large PDUs with both digests; and 512-byte ones, 16 384 buffers for one
        // response: more than one sendmsg takes (UIO_MAXIOV).
        for lim in [
            DataInLimits {
                mrdsl: 256 << 10,
                burst: 1 << 20,
                digests: Digests {
                    header: true,
                    data: true,
                },
            },
            DataInLimits {
                mrdsl: 512,
                burst: 1 << 20,
                digests: Digests::default(),
            },
        ] {
            let len = (4 << 20) - 3; // padding in the last PDU
            let hdr = read_cmd(len as u32);
            let res = Residual::of(len as u32, len as u64);
            let data = Payload::Mem(&content[..len]);
            let (first, sn, _) = data_in_pdus(lim, &hdr, Status::Good, data, res, true, SN);
            let next = Sns { stat_sn: sn, ..SN };
            let (second, _, _) = data_in_pdus(lim, &hdr, Status::Good, data, res, true, next);
            let (mut both, _, _) = data_in_pdus(lim, &hdr, Status::Good, data, res, true, SN);
            both.extend(data_in_pdus(lim, &hdr, Status::Good, data, res, true, next).0);
            let (_, expected) = wire(&both);

            let (mut s, mut c) = pair();
            // Small buffers whatever the host's tcp_wmem/tcp_rmem.
            setsockopt(&s, sockopt::SndBuf, &(64 << 10)).unwrap();
            setsockopt(&c, sockopt::RcvBuf, &(64 << 10)).unwrap();
            let t = Instant::now();
            let mut rest = Vec::new();
            write_pdus_now(&s, &first, &mut rest).unwrap();
            // 4 MiB is more than the socket buffers hold while nobody reads.
            assert!(!rest.is_empty(), "the socket took all 4 MiB unread");
            assert!(rest.len() < expected.len() / 2, "nothing was sent");
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                let _ = c.read_to_end(&mut got);
                got
            });
            write_pdus(
                &mut s,
                &rest,
                &second,
                Instant::now() + Duration::from_secs(10),
            )
            .unwrap();
            drop(s);
            let got = reader.join().unwrap();
            assert_eq!(got.len(), expected.len());
            assert!(got == expected, "stream differs from the blocking writer's");
        }

        // A file payload is refused before anything is written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun");
        std::fs::write(&path, &content[..8192]).unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let range = FileRange::new(file, 0, 8192).unwrap();
        let lim = DataInLimits {
            mrdsl: 4096,
            burst: 1 << 20,
            digests: Digests::default(),
        };
        let (pdus, _, _) = data_in_pdus(
            lim,
            &read_cmd(8192),
            Status::Good,
            Payload::File(&range),
            Residual::default(),
            true,
            SN,
        );
        let (s, mut c) = pair();
        let mut rest = Vec::new();
        let e = write_pdus_now(&s, &pdus, &mut rest).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(rest.is_empty());
        drop(s);
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
    }
}
