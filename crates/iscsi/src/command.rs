//! A SCSI command as the connection layer carries it between PDUs: the CDB, the Data-Out
//! collected so far and its buffer budget, the write task collecting it (RFC 7143 11.7,
//! 11.8) and the residual of its response (RFC 7143 11.4.5).
//!
//! Below both the session and the connection: the session's CmdSN window and task table
//! hold these without knowing about sockets, and the connection modules share them.

use std::time::{Duration, Instant};

use rustio_iscsi_proto::pdu::ScsiCommand;
use rustio_iscsi_proto::text::Negotiated;
use rustio_scsi::Sense;
use std::sync::Arc;

use crate::budget::Reservation;
use crate::dataout::DataOutSeq;
use crate::session::{Session, TaskState};

/// A CDB: 16 bytes from the BHS, longer with an extended CDB AHS.
#[derive(Debug, Clone)]
pub(crate) enum Cdb {
    /// The BHS's 16 bytes.
    Short([u8; 16]),
    /// BHS bytes followed by the extended CDB AHS (RFC 7143 11.3.5).
    Long(Vec<u8>),
}

impl Cdb {
    /// The CDB bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Cdb::Short(b) => b,
            Cdb::Long(v) => v,
        }
    }
}

/// A received SCSI command waiting for CmdSN order or data.
#[derive(Debug)]
pub(crate) struct NewCommand {
    /// The SCSI Command PDU's header.
    pub(crate) hdr: ScsiCommand,
    /// Its CDB.
    pub(crate) cdb: Cdb,
    /// Data-Out received (grown as it is solicited, see [`NewCommand::grow_buf`]).
    pub(crate) buf: Vec<u8>,
    /// Data-Out bytes received so far.
    pub(crate) received: u32,
    /// Answer CHECK CONDITION with this sense instead of executing.
    pub(crate) fail: Option<Sense>,
    /// Data-Out bytes this command collects: the CDB's transfer (bounded by EDTL), or
    /// the unsolicited data the initiator may send (RFC 7143 13.14), whichever is
    /// larger. Never more than EDTL; what EDTL promises beyond it is not reserved.
    pub(crate) need: u32,
    /// Buffer budget reserved for `need`; `None` while waiting for budget.
    pub(crate) budget: Option<Reservation>,
    /// No budget for data that comes unsolicited: it is read and discarded and the
    /// command is answered BUSY (SAM-5 5.3.1).
    pub(crate) busy: bool,
    /// When its SCSI Command PDU was received: the start of the time the command spends
    /// in the target (`IoCounters::record_time`).
    pub(crate) arrived: Instant,
    /// Time its store took, when the store completed it asynchronously.
    pub(crate) backstore: Duration,
}

impl NewCommand {
    /// Grows the buffer to `end` bytes (data solicited or arrived), never beyond what
    /// the command reserved; capacity grows geometrically up to `need` so that a long
    /// R2T sequence does not copy the buffer at every burst.
    pub(crate) fn grow_buf(&mut self, end: u32) {
        let end = end as usize;
        if self.buf.len() >= end {
            return;
        }
        if self.buf.capacity() < end {
            let want = self
                .buf
                .capacity()
                .saturating_mul(2)
                .min(self.need as usize)
                .max(end);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.resize(end, 0);
        if let Some(r) = self.budget.as_mut() {
            r.set_filled(self.buf.len() as u64);
        }
    }
}

/// End of the unsolicited data of a write (RFC 7143 13.13–13.14): the immediate data,
/// and with F = 0 (allowed only when InitialR2T=No) up to FirstBurstLength.
pub(crate) fn unsolicited_end(hdr: &ScsiCommand, params: &Negotiated, immediate: usize) -> u32 {
    let immediate = u32::try_from(immediate).unwrap_or(u32::MAX);
    if !hdr.final_bit && !params.initial_r2t {
        params.first_burst_length.min(hdr.edtl).max(immediate)
    } else {
        immediate
    }
}

/// Ends a task that gets no response (aborted, or its connection is gone): frees its
/// CmdSN window slot and its ITT.
pub(crate) fn finish_task(sess: &Session, cmd: &NewCommand) {
    if !cmd.hdr.immediate {
        sess.complete_one();
    }
    sess.remove_task(cmd.hdr.itt);
}

/// A write command collecting Data-Out.
#[derive(Debug)]
pub(crate) struct WriteTask {
    /// The command.
    pub(crate) cmd: Box<NewCommand>,
    /// Its entry in the session's task table.
    pub(crate) task: Arc<TaskState>,
    /// Waiting for buffer budget: no R2T sent yet, nothing held.
    pub(crate) held: bool,
    /// Last R2T sent or Data-Out received (for the Data-Out timeout).
    pub(crate) last_progress: Instant,
    /// When the command started waiting for budget (`held`) or, once funded, when it
    /// got its budget: the origin of its wall-clock limits.
    pub(crate) since: Instant,
    /// Unsolicited data and outstanding R2Ts (RFC 7143 11.7, 11.8).
    pub(crate) seq: DataOutSeq,
}

/// Residual information for a SCSI Response (RFC 7143 11.4.5).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Residual {
    /// The command would have transferred more than EDTL (O bit).
    pub(crate) overflow: bool,
    /// It transferred less than EDTL (U bit).
    pub(crate) underflow: bool,
    /// The difference in bytes (Residual Count).
    pub(crate) count: u32,
}

impl Residual {
    /// The residual of a transfer of `actual` bytes against an EDTL of `expected`.
    pub(crate) fn of(expected: u32, actual: u64) -> Residual {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustio_iscsi_proto::pdu::TaskAttribute;

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
    fn unsolicited_data_ends_at_first_burst_only_without_initial_r2t() {
        // RFC 7143 13.13-13.14: F = 0 with InitialR2T=No allows unsolicited Data-Out up
        // to FirstBurstLength (bounded by EDTL); otherwise only the immediate data.
        let mut hdr = write_hdr(64 << 10);
        hdr.final_bit = false;
        let mut p = Negotiated {
            initial_r2t: false,
            first_burst_length: 16 << 10,
            ..Negotiated::default()
        };
        assert_eq!(unsolicited_end(&hdr, &p, 512), 16 << 10);
        hdr.edtl = 4096;
        assert_eq!(unsolicited_end(&hdr, &p, 512), 4096);
        p.initial_r2t = true;
        assert_eq!(unsolicited_end(&hdr, &p, 512), 512);
        hdr.final_bit = true;
        p.initial_r2t = false;
        assert_eq!(unsolicited_end(&hdr, &p, 0), 0);
    }

    fn write_hdr(edtl: u32) -> ScsiCommand {
        ScsiCommand {
            immediate: false,
            final_bit: true,
            read: false,
            write: true,
            attr: TaskAttribute::Simple,
            lun: 0,
            itt: 1,
            edtl,
            cmd_sn: 0,
            exp_stat_sn: 0,
            cdb: [0; 16],
        }
    }

    #[test]
    fn lazy_write_buffer_grows_to_solicited_bytes_only() {
        let server = Arc::new(crate::budget::Budget::new(1 << 30));
        let sess = Arc::new(crate::budget::Budget::new(64 << 20));
        let mut cmd = NewCommand {
            hdr: write_hdr(64 << 20),
            cdb: Cdb::Short([0; 16]),
            buf: Vec::new(),
            received: 0,
            fail: None,
            need: 64 << 20,
            budget: Reservation::try_new(&sess, &server, 64 << 20),
            busy: false,
            arrived: Instant::now(),
            backstore: Duration::ZERO,
        };
        cmd.grow_buf(262144);
        assert_eq!(cmd.buf.len(), 262144);
        assert_eq!(server.filled(), 262144);
        assert!(cmd.buf.capacity() <= 64 << 20);
        cmd.grow_buf(4096); // never shrinks
        assert_eq!(cmd.buf.len(), 262144);
        cmd.grow_buf(64 << 20);
        assert_eq!(
            cmd.buf.capacity(),
            64 << 20,
            "capacity capped at the transfer"
        );
        drop(cmd);
        assert_eq!((server.filled(), server.reserved()), (0, 0));
    }
}
