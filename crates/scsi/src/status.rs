//! SCSI status codes (SAM-5 5.3) and the response of one command.

use crate::sense::Sense;

/// SCSI STATUS byte values (SAM-5 5.3.1, table 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The command completed successfully.
    Good = 0x00,
    /// Sense data describes an error or exception.
    CheckCondition = 0x02,
    /// PRE-FETCH: the requested blocks fit in the cache (SBC-4 5.10).
    ConditionMet = 0x04,
    /// The logical unit is busy; retry later.
    Busy = 0x08,
    /// The command conflicts with a reservation.
    ReservationConflict = 0x18,
    /// The task set is full.
    TaskSetFull = 0x28,
    /// An ACA condition exists.
    AcaActive = 0x30,
    /// The command was aborted by another I_T nexus (TAS = 1).
    TaskAborted = 0x40,
}

impl Status {
    /// The status byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Outcome of one command: status and, for CHECK CONDITION, sense data. Data-in bytes are
/// returned in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// SCSI status.
    pub status: Status,
    /// Sense data; always `Some` for [`Status::CheckCondition`], `None` otherwise.
    pub sense: Option<Sense>,
}

impl Response {
    /// GOOD status.
    pub const GOOD: Response = Response {
        status: Status::Good,
        sense: None,
    };

    /// A status without sense data (GOOD, CONDITION MET, BUSY, RESERVATION CONFLICT…).
    pub fn status(status: Status) -> Response {
        Response {
            status,
            sense: None,
        }
    }

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Response {
        Response {
            status: Status::CheckCondition,
            sense: Some(sense),
        }
    }

    /// Fixed-format sense bytes to send, if any.
    pub fn sense_bytes(&self) -> Option<[u8; crate::sense::FIXED_SENSE_LEN]> {
        self.sense.map(|s| s.to_fixed())
    }
}

impl From<Sense> for Response {
    fn from(s: Sense) -> Response {
        Response::check(s)
    }
}
