//! The reader of a connection in the full feature phase: one PDU at a time, Data-Out
//! read straight into its task's buffer, everything else through the CmdSN window
//! ([`super::order`]) in order. Text requests are in [`super::text`], the keepalive and
//! timeouts in [`super::timers`].

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustio_iscsi_proto::login::SessionType;
use rustio_iscsi_proto::pdu::{
    self, ahs, BhsInfo, DataOut, Header, NopOut, RejectReason, ScsiCommand, BHS_LEN, RESERVED_TAG,
};
use rustio_scsi::Sense;
use tracing::{debug, warn};

use super::exec::dispatch;
use super::io::{Reader, PDU_TIME_LIMIT};
use super::order::{process, Deferred, DeferredKind};
use super::writes::{send_r2ts, write_transfer_len};
use super::{Conn, Flow};
use crate::budget::Reservation;
use crate::command::{finish_task, unsolicited_end, Cdb, NewCommand, WriteTask};
use crate::limits::Deadline;
use crate::session::Admit;

/// Largest Expected Data Transfer Length we allocate a Data-Out buffer for.
const MAX_WRITE_EDTL: u32 = crate::MAX_TRANSFER_BYTES;
/// ABORTED COMMAND / PROTOCOL SERVICE CRC ERROR (RFC 7143 13.5.2 iSCSI condition).
pub(super) const SENSE_PROTOCOL_CRC: Sense =
    Sense::new(rustio_scsi::SenseKey::AbortedCommand, 0x47, 0x05);
/// ILLEGAL REQUEST / INVALID FIELD IN CDB.
const SENSE_INVALID_FIELD_CDB: Sense = Sense::invalid_field_in_cdb(0, None);

/// State of a multi-PDU text response (RFC 7143 11.11 C bit).
#[derive(Debug)]
pub(super) struct TextContinuation {
    pub(super) itt: u32,
    pub(super) ttt: u32,
    pub(super) rest: Vec<u8>,
}

/// The reader side of a connection.
pub(crate) struct ConnReader {
    pub(super) conn: Arc<Conn>,
    reader: Reader,
    pub(super) last_rx: Instant,
    pub(super) ping_sent: Option<Instant>,
    pub(super) text: Option<TextContinuation>,
    pub(super) text_in: Vec<u8>,
    pub(super) nop_interval: Duration,
    pub(super) nop_timeout: Duration,
    /// Write commands may wait this long for promised Data-Out.
    pub(super) data_out_timeout: Duration,
    /// Last scan for writes past the Data-Out timeout.
    pub(super) last_scan: Instant,
}

impl ConnReader {
    /// The reader of `conn`, taking over the login phase's `reader`.
    pub(crate) fn new(conn: Arc<Conn>, mut reader: Reader) -> ConnReader {
        let (nop_interval, nop_timeout) = match &conn.session.target {
            Some((_, tpg)) => (tpg.params.nopin_interval, tpg.params.nopin_response_timeout),
            None => (Duration::from_secs(15), Duration::from_secs(30)),
        };
        let config = conn.services.config();
        let data_out_timeout = config.data_out_timeout;
        reader.set_busy_poll(config.busy_poll);
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

    /// Reads a data segment of `len` bytes; also whether its data digest matched.
    pub(super) fn read_vec(&mut self, len: usize) -> io::Result<(Vec<u8>, bool)> {
        let mut v = vec![0u8; len];
        let ok = self.read_into(&mut v)?;
        Ok((v, ok))
    }

    /// Reads a data segment of `dst.len()` bytes plus padding and digest into `dst`;
    /// returns whether the data digest matched.
    pub(super) fn read_into(&mut self, dst: &mut [u8]) -> io::Result<bool> {
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

    /// Discards a data segment of `len` bytes with its padding and digest.
    pub(super) fn skip_segment(&mut self, len: usize) -> io::Result<()> {
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

    /// Reads and handles one PDU.
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
            .services
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
    pub(super) fn admit_or_run(
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
                    if !next.run() {
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

    /// A SCSI Command PDU (RFC 7143 11.3): checked against the negotiated limits, its
    /// immediate data read (when there is budget for it), then admitted.
    fn on_scsi_command(
        &mut self,
        c: ScsiCommand,
        bhs: &[u8; BHS_LEN],
        ahs_area: &[u8],
        len: usize,
    ) -> io::Result<Flow> {
        let params = self.conn.session.params;
        // Extended CDB (RFC 7143 11.3.5 / 11.2.2.3).
        let Some(cdb) = extended_cdb(&c, ahs_area) else {
            self.skip_segment(len)?;
            self.conn.reject(RejectReason::InvalidPduField, bhs);
            return Ok(self.consume_sn(c.immediate, c.cmd_sn));
        };
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
        let cmd = self.receive_command(c, cdb, bhs, len)?;
        self.admit_or_run(c.immediate, c.cmd_sn, DeferredKind::Scsi(cmd))
    }

    /// A SCSI command with its immediate data read.
    ///
    /// Data-Out memory (issue 20 item 2): what this command can really transfer is
    /// reserved when it is admitted in CmdSN order (`start_command`), so that a command
    /// waiting in the CmdSN window holds no more than its immediate data. That data is
    /// read now, so it is reserved now; without budget for it, it is skipped and the
    /// command will be answered BUSY.
    fn receive_command(
        &mut self,
        c: ScsiCommand,
        cdb: Cdb,
        bhs: &[u8; BHS_LEN],
        len: usize,
    ) -> io::Result<Box<NewCommand>> {
        let arrived = Instant::now();
        let sess = self.conn.session.clone();
        let mut fail = None;
        if c.read && c.write {
            // Bidirectional commands are not supported.
            fail = Some(SENSE_INVALID_FIELD_CDB);
        }
        let need = if c.write {
            write_transfer_len(&sess, &c, cdb.bytes()).max(unsolicited_end(&c, &sess.params, len))
        } else {
            0
        };
        let mut budget = None;
        let mut busy = false;
        if len > 0 && c.write {
            budget = Reservation::try_new(
                &sess.write_budget,
                &self.conn.services.write_budget,
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
        Ok(Box::new(NewCommand {
            hdr: c,
            cdb,
            buf,
            received: len as u32,
            fail,
            need,
            budget,
            busy,
            arrived,
            backstore: Duration::ZERO,
        }))
    }

    /// A rejected non-immediate command still consumes its CmdSN so the window moves.
    pub(super) fn consume_sn(&mut self, immediate: bool, cmd_sn: u32) -> Flow {
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
                None,
            ),
        };
        if let (Admit::Now, Some(d)) = sess.admit(cmd_sn, d) {
            let _ = process(d, false);
            while let Some(next) = sess.next_held() {
                let _ = next.run();
            }
        }
        Flow::Continue
    }

    /// A Data-Out PDU (RFC 7143 11.7): checked against its write task's sequences and
    /// read into its buffer; the task runs once its data is complete.
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
            wt.cmd.grow_buf(end);
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
            // The initiator ended every sequence before the data the command transfers
            // had arrived: the command must not run on a buffer with holes (they would be
            // written as zeros). CHECK CONDITION, ABORTED COMMAND, which initiators retry;
            // LIO answers a short unsolicited burst the same way.
            let short = if wt.seq.unsolicited_cut_short() {
                Sense::NOT_ENOUGH_UNSOLICITED_DATA
            } else {
                Sense::DATA_PHASE_ERROR
            };
            debug!(
                conn = conn.id,
                itt = d.itt,
                received = wt.cmd.received,
                need,
                "Data-Out ended short"
            );
            wt.cmd.fail.get_or_insert(short);
            let WriteTask { cmd, task, .. } = wt;
            dispatch(&conn, cmd, task);
            return Ok(Flow::Continue);
        }
        conn.writes.lock().insert(d.itt, wt);
        Ok(Flow::Continue)
    }

    /// A NOP-Out (RFC 7143 11.18): an answer to our ping, or a ping to echo.
    ///
    /// A non-immediate ping ahead of ExpCmdSN waits in the CmdSN window with its data,
    /// so that data is reserved in the session's and the server's Data-Out budget as a
    /// command's immediate data is: 127 held pings of 256 KiB would otherwise pin 32 MiB
    /// per connection outside every bound. Without budget the data is skipped and the
    /// ping rejected, reason "out of resources" (RFC 7143 11.17.1, 0x0a), its CmdSN
    /// consumed. A ping echoed at once (immediate, or at ExpCmdSN: no other PDU can take
    /// that CmdSN first) needs no reservation.
    fn on_nop_out(&mut self, n: NopOut, bhs: &[u8; BHS_LEN], len: usize) -> io::Result<Flow> {
        let sess = &self.conn.session;
        let waits = !n.immediate && n.cmd_sn != sess.exp_cmd_sn();
        let mut reservation = if !waits || len == 0 || n.itt == RESERVED_TAG {
            None
        } else {
            match Reservation::try_new(
                &sess.write_budget,
                &self.conn.services.write_budget,
                len as u64,
            ) {
                Some(r) => Some(r),
                None => {
                    self.skip_segment(len)?;
                    self.conn.reject(RejectReason::LongOpReject, bhs);
                    return Ok(self.consume_sn(false, n.cmd_sn));
                }
            }
        };
        let (data, ok) = self.read_vec(len)?;
        if let Some(r) = reservation.as_mut() {
            r.set_filled(len as u64);
        }
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
        self.admit_or_run(
            n.immediate,
            n.cmd_sn,
            DeferredKind::Nop(n, data, reservation),
        )
    }

    /// Ends the connection: writes still collecting data, commands waiting for budget and
    /// jobs parked behind a stuck writer go with it.
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
        conn.registry.connection_ended(&conn);
    }
}

/// The CDB of a SCSI Command PDU: its 16 bytes, extended by an extended CDB AHS (RFC
/// 7143 11.3.5 / 11.2.2.3); `None` when the AHS area does not parse.
fn extended_cdb(c: &ScsiCommand, ahs_area: &[u8]) -> Option<Cdb> {
    let mut cdb = Cdb::Short(c.cdb);
    for a in pdu::parse_ahs(ahs_area).ok()? {
        if a.ahs_type == ahs::EXTENDED_CDB && !a.data.is_empty() {
            let mut v = c.cdb.to_vec();
            v.extend_from_slice(&a.data[1..]);
            cdb = Cdb::Long(v);
        }
    }
    Some(cdb)
}
