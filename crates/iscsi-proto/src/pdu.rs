//! iSCSI PDU codec (RFC 7143 11).
//!
//! A PDU on the wire is a 48-byte Basic Header Segment (BHS), optional Additional Header
//! Segments (AHS, `TotalAHSLength` 4-byte words), an optional CRC32C header digest, a data
//! segment padded to a multiple of 4 bytes and an optional CRC32C data digest (RFC 7143
//! 11.2). [`Header::parse`] turns a BHS into a typed value — one struct per opcode, unknown
//! opcodes stay data in [`Header::Unknown`] — and [`Header::encode`] writes it back.
//! [`read_pdu`] / [`Pdu::encode`] handle a whole PDU with digests for the login path,
//! tests and fuzzing; the full-feature-phase connection code reads data segments straight
//! into task buffers instead (see `rustio-iscsi`'s `conn.rs`).

use std::io::Read;

use crate::{Error, Result};

/// Length of the Basic Header Segment (RFC 7143 11.2.1).
pub const BHS_LEN: usize = 48;
/// Largest DataSegmentLength the 24-bit field can carry.
pub const MAX_DATA_SEGMENT: u32 = (1 << 24) - 1;
/// The reserved "no tag" value for ITT/TTT (RFC 7143 11.2.1.8).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Initiator and target opcodes (RFC 7143 11.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// NOP-Out (initiator).
    NopOut = 0x00,
    /// SCSI Command.
    ScsiCommand = 0x01,
    /// SCSI Task Management Function Request.
    TaskMgmtRequest = 0x02,
    /// Login Request.
    LoginRequest = 0x03,
    /// Text Request.
    TextRequest = 0x04,
    /// SCSI Data-Out.
    DataOut = 0x05,
    /// Logout Request.
    LogoutRequest = 0x06,
    /// SNACK Request.
    SnackRequest = 0x10,
    /// NOP-In (target).
    NopIn = 0x20,
    /// SCSI Response.
    ScsiResponse = 0x21,
    /// SCSI Task Management Function Response.
    TaskMgmtResponse = 0x22,
    /// Login Response.
    LoginResponse = 0x23,
    /// Text Response.
    TextResponse = 0x24,
    /// SCSI Data-In.
    DataIn = 0x25,
    /// Logout Response.
    LogoutResponse = 0x26,
    /// Ready To Transfer.
    R2t = 0x31,
    /// Asynchronous Message.
    AsyncMessage = 0x32,
    /// Reject.
    Reject = 0x3f,
}

impl Opcode {
    /// Maps the low 6 bits of BHS byte 0 to an opcode; `None` for unknown/vendor codes.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v & 0x3f {
            0x00 => Opcode::NopOut,
            0x01 => Opcode::ScsiCommand,
            0x02 => Opcode::TaskMgmtRequest,
            0x03 => Opcode::LoginRequest,
            0x04 => Opcode::TextRequest,
            0x05 => Opcode::DataOut,
            0x06 => Opcode::LogoutRequest,
            0x10 => Opcode::SnackRequest,
            0x20 => Opcode::NopIn,
            0x21 => Opcode::ScsiResponse,
            0x22 => Opcode::TaskMgmtResponse,
            0x23 => Opcode::LoginResponse,
            0x24 => Opcode::TextResponse,
            0x25 => Opcode::DataIn,
            0x26 => Opcode::LogoutResponse,
            0x31 => Opcode::R2t,
            0x32 => Opcode::AsyncMessage,
            0x3f => Opcode::Reject,
            _ => return None,
        })
    }
}

/// Reject reason codes (RFC 7143 11.17.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectReason {
    /// Data (payload) digest error.
    DataDigestError = 0x02,
    /// SNACK Reject.
    SnackReject = 0x03,
    /// Protocol error (e.g. SNACK at ErrorRecoveryLevel 0, oversized segment).
    ProtocolError = 0x04,
    /// Command not supported (unknown opcode).
    CommandNotSupported = 0x05,
    /// Immediate command reject: too many immediate commands.
    ImmediateCommandReject = 0x06,
    /// Task in progress.
    TaskInProgress = 0x07,
    /// Invalid data ack.
    InvalidDataAck = 0x08,
    /// Invalid PDU field.
    InvalidPduField = 0x09,
    /// Long operation reject: out of resources to generate a TTT.
    LongOpReject = 0x0a,
    /// Waiting for logout.
    WaitingForLogout = 0x0c,
}

/// Task attribute of a SCSI Command (RFC 7143 11.3.1.2 ATTR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAttribute {
    /// 0: Untagged.
    Untagged,
    /// 1: Simple.
    Simple,
    /// 2: Ordered.
    Ordered,
    /// 3: Head of queue.
    HeadOfQueue,
    /// 4: ACA.
    Aca,
    /// 5-7: reserved values.
    Reserved(u8),
}

impl TaskAttribute {
    fn from_bits(v: u8) -> TaskAttribute {
        match v & 7 {
            0 => TaskAttribute::Untagged,
            1 => TaskAttribute::Simple,
            2 => TaskAttribute::Ordered,
            3 => TaskAttribute::HeadOfQueue,
            4 => TaskAttribute::Aca,
            x => TaskAttribute::Reserved(x),
        }
    }
    fn bits(self) -> u8 {
        match self {
            TaskAttribute::Untagged => 0,
            TaskAttribute::Simple => 1,
            TaskAttribute::Ordered => 2,
            TaskAttribute::HeadOfQueue => 3,
            TaskAttribute::Aca => 4,
            TaskAttribute::Reserved(x) => x & 7,
        }
    }
}

/// Task management function codes (RFC 7143 11.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfFunction {
    /// 1: ABORT TASK.
    AbortTask,
    /// 2: ABORT TASK SET.
    AbortTaskSet,
    /// 3: CLEAR ACA.
    ClearAca,
    /// 4: CLEAR TASK SET.
    ClearTaskSet,
    /// 5: LOGICAL UNIT RESET.
    LunReset,
    /// 6: TARGET WARM RESET.
    TargetWarmReset,
    /// 7: TARGET COLD RESET.
    TargetColdReset,
    /// 8: TASK REASSIGN.
    TaskReassign,
    /// Any other value.
    Other(u8),
}

impl TmfFunction {
    fn from_bits(v: u8) -> TmfFunction {
        match v & 0x7f {
            1 => TmfFunction::AbortTask,
            2 => TmfFunction::AbortTaskSet,
            3 => TmfFunction::ClearAca,
            4 => TmfFunction::ClearTaskSet,
            5 => TmfFunction::LunReset,
            6 => TmfFunction::TargetWarmReset,
            7 => TmfFunction::TargetColdReset,
            8 => TmfFunction::TaskReassign,
            x => TmfFunction::Other(x),
        }
    }
    fn bits(self) -> u8 {
        match self {
            TmfFunction::AbortTask => 1,
            TmfFunction::AbortTaskSet => 2,
            TmfFunction::ClearAca => 3,
            TmfFunction::ClearTaskSet => 4,
            TmfFunction::LunReset => 5,
            TmfFunction::TargetWarmReset => 6,
            TmfFunction::TargetColdReset => 7,
            TmfFunction::TaskReassign => 8,
            TmfFunction::Other(x) => x & 0x7f,
        }
    }
}

/// Task management response codes (RFC 7143 11.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TmfResponse {
    /// Function complete.
    Complete = 0,
    /// Task does not exist.
    TaskDoesNotExist = 1,
    /// LUN does not exist.
    LunDoesNotExist = 2,
    /// Task still allegiant.
    TaskStillAllegiant = 3,
    /// Task allegiance reassignment not supported.
    ReassignNotSupported = 4,
    /// Task management function not supported.
    NotSupported = 5,
    /// Function authorization failed.
    AuthorizationFailed = 6,
    /// Function rejected.
    Rejected = 255,
}

/// Logout reason codes (RFC 7143 11.14.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutReason {
    /// 0: close the session.
    CloseSession,
    /// 1: close the connection.
    CloseConnection,
    /// 2: remove the connection for recovery.
    RemoveForRecovery,
    /// Any other value.
    Other(u8),
}

/// Logout response codes (RFC 7143 11.15.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LogoutResponseCode {
    /// Connection or session closed successfully.
    Success = 0,
    /// CID not found.
    CidNotFound = 1,
    /// Connection recovery is not supported (ErrorRecoveryLevel < 2).
    RecoveryNotSupported = 2,
    /// Cleanup failed for various reasons.
    CleanupFailed = 3,
}

/// Login stages (RFC 7143 11.12.3 CSG/NSG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// 0: SecurityNegotiation.
    Security,
    /// 1: LoginOperationalNegotiation.
    Operational,
    /// 2: reserved.
    Reserved,
    /// 3: FullFeaturePhase.
    FullFeature,
}

impl Stage {
    /// From the 2-bit field.
    pub fn from_bits(v: u8) -> Stage {
        match v & 3 {
            0 => Stage::Security,
            1 => Stage::Operational,
            2 => Stage::Reserved,
            _ => Stage::FullFeature,
        }
    }
    /// The 2-bit field value.
    pub fn bits(self) -> u8 {
        match self {
            Stage::Security => 0,
            Stage::Operational => 1,
            Stage::Reserved => 2,
            Stage::FullFeature => 3,
        }
    }
}

/// NOP-Out (RFC 7143 11.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopOut {
    /// I bit.
    pub immediate: bool,
    /// LUN field.
    pub lun: u64,
    /// Initiator task tag (0xffffffff when answering a target NOP-In).
    pub itt: u32,
    /// Target transfer tag copied from the NOP-In being answered, else 0xffffffff.
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

/// SCSI Command (RFC 7143 11.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiCommand {
    /// I bit.
    pub immediate: bool,
    /// F bit: no unsolicited Data-Out PDUs follow.
    pub final_bit: bool,
    /// R bit: data will be read (Data-In).
    pub read: bool,
    /// W bit: data will be written (Data-Out).
    pub write: bool,
    /// ATTR field.
    pub attr: TaskAttribute,
    /// LUN (8-byte SAM encoding).
    pub lun: u64,
    /// Initiator task tag.
    pub itt: u32,
    /// Expected data transfer length.
    pub edtl: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// CDB bytes 0-15 (an extended CDB AHS adds the rest).
    pub cdb: [u8; 16],
}

/// SCSI Response (RFC 7143 11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiResponse {
    /// o bit: bidirectional read residual overflow.
    pub bidi_overflow: bool,
    /// u bit: bidirectional read residual underflow.
    pub bidi_underflow: bool,
    /// O bit: residual overflow.
    pub overflow: bool,
    /// U bit: residual underflow.
    pub underflow: bool,
    /// iSCSI response code (0 = command completed at target).
    pub response: u8,
    /// SCSI status.
    pub status: u8,
    /// Initiator task tag.
    pub itt: u32,
    /// SNACK tag.
    pub snack_tag: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// ExpDataSN (number of Data-In PDUs sent for the command).
    pub exp_data_sn: u32,
    /// Bidirectional read residual count.
    pub bidi_residual: u32,
    /// Residual count.
    pub residual: u32,
}

/// Task Management Function Request (RFC 7143 11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    /// I bit.
    pub immediate: bool,
    /// Function.
    pub function: TmfFunction,
    /// LUN.
    pub lun: u64,
    /// Initiator task tag of this request.
    pub itt: u32,
    /// Referenced task tag (ABORT TASK).
    pub ref_itt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// RefCmdSN.
    pub ref_cmd_sn: u32,
    /// ExpDataSN.
    pub exp_data_sn: u32,
}

/// Task Management Function Response (RFC 7143 11.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// Response code.
    pub response: u8,
    /// Initiator task tag of the request.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

/// Login Request (RFC 7143 11.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest {
    /// T bit.
    pub transit: bool,
    /// C bit.
    pub cont: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage.
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// Initiator session ID (6 bytes, big-endian).
    pub isid: [u8; 6],
    /// Target session identifying handle.
    pub tsih: u16,
    /// Initiator task tag.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

/// Login Response (RFC 7143 11.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    /// T bit.
    pub transit: bool,
    /// C bit.
    pub cont: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage.
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-active.
    pub version_active: u8,
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH.
    pub tsih: u16,
    /// Initiator task tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Status-Class.
    pub status_class: u8,
    /// Status-Detail.
    pub status_detail: u8,
}

/// Text Request (RFC 7143 11.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRequest {
    /// I bit.
    pub immediate: bool,
    /// F bit.
    pub final_bit: bool,
    /// C bit.
    pub cont: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator task tag.
    pub itt: u32,
    /// Target transfer tag (0xffffffff for a new request).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

/// Text Response (RFC 7143 11.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextResponse {
    /// F bit.
    pub final_bit: bool,
    /// C bit.
    pub cont: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator task tag.
    pub itt: u32,
    /// Target transfer tag.
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

/// SCSI Data-Out (RFC 7143 11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOut {
    /// F bit.
    pub final_bit: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator task tag.
    pub itt: u32,
    /// Target transfer tag (from the R2T, or 0xffffffff for unsolicited data).
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer offset.
    pub buffer_offset: u32,
}

/// SCSI Data-In (RFC 7143 11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataIn {
    /// F bit.
    pub final_bit: bool,
    /// A bit (acknowledge requested).
    pub ack: bool,
    /// O bit (valid with S).
    pub overflow: bool,
    /// U bit (valid with S).
    pub underflow: bool,
    /// S bit: status is carried in this PDU.
    pub status_present: bool,
    /// SCSI status (valid with S).
    pub status: u8,
    /// LUN.
    pub lun: u64,
    /// Initiator task tag.
    pub itt: u32,
    /// Target transfer tag.
    pub ttt: u32,
    /// StatSN (valid with S).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer offset.
    pub buffer_offset: u32,
    /// Residual count (valid with S).
    pub residual: u32,
}

/// Ready To Transfer (RFC 7143 11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// LUN.
    pub lun: u64,
    /// Initiator task tag.
    pub itt: u32,
    /// Target transfer tag.
    pub ttt: u32,
    /// StatSN (not advanced).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// R2TSN.
    pub r2t_sn: u32,
    /// Buffer offset.
    pub buffer_offset: u32,
    /// Desired data transfer length.
    pub desired_len: u32,
}

/// Logout Request (RFC 7143 11.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutRequest {
    /// I bit.
    pub immediate: bool,
    /// Reason code.
    pub reason: LogoutReason,
    /// Initiator task tag.
    pub itt: u32,
    /// CID of the connection to close (reasons 1 and 2).
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

/// Logout Response (RFC 7143 11.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Response code.
    pub response: u8,
    /// Initiator task tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Time2Wait.
    pub time2wait: u16,
    /// Time2Retain.
    pub time2retain: u16,
}

/// SNACK Request (RFC 7143 11.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnackRequest {
    /// SNACK type.
    pub snack_type: u8,
    /// LUN.
    pub lun: u64,
    /// Initiator task tag.
    pub itt: u32,
    /// Target transfer tag / SNACK tag.
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// BegRun.
    pub beg_run: u32,
    /// RunLength.
    pub run_length: u32,
}

/// NOP-In (RFC 7143 11.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopIn {
    /// LUN.
    pub lun: u64,
    /// Initiator task tag (0xffffffff for a target-initiated ping).
    pub itt: u32,
    /// Target transfer tag (0xffffffff when answering a NOP-Out).
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

/// Asynchronous Message (RFC 7143 11.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncMessage {
    /// LUN.
    pub lun: u64,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// AsyncEvent (1 = target requests logout).
    pub event: u8,
    /// AsyncVCode.
    pub vcode: u8,
    /// Parameter1.
    pub param1: u16,
    /// Parameter2.
    pub param2: u16,
    /// Parameter3 (for event 1: seconds to log out in).
    pub param3: u16,
}

/// Reject (RFC 7143 11.17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// Reason code.
    pub reason: u8,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN/R2TSN (only for SNACK rejects).
    pub data_sn: u32,
}

impl NopOut {
    /// The NOP-Out an initiator sends to answer a target's ping `ping` (a NOP-In whose
    /// TTT is not the reserved tag): RFC 7143 11.18 — immediate, ITT `0xffffffff`, LUN
    /// and TTT copied from the NOP-In. An immediate PDU does not advance CmdSN, so
    /// `cmd_sn` is the session's next CmdSN as is (RFC 7143 3.2.2.1).
    pub fn reply_to(ping: &NopIn, cmd_sn: u32, exp_stat_sn: u32) -> NopOut {
        NopOut {
            immediate: true,
            lun: ping.lun,
            itt: RESERVED_TAG,
            ttt: ping.ttt,
            cmd_sn,
            exp_stat_sn,
        }
    }
}

impl LogoutRequest {
    /// An immediate Logout Request closing the whole session (reason code 0, RFC 7143
    /// 11.14.1), sent on connection `cid`.
    pub fn close_session(itt: u32, cid: u16, cmd_sn: u32, exp_stat_sn: u32) -> LogoutRequest {
        LogoutRequest {
            immediate: true,
            reason: LogoutReason::CloseSession,
            itt,
            cid,
            cmd_sn,
            exp_stat_sn,
        }
    }
}

/// A typed Basic Header Segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// NOP-Out.
    NopOut(NopOut),
    /// SCSI Command.
    ScsiCommand(ScsiCommand),
    /// Task Management Request.
    TaskMgmtRequest(TaskMgmtRequest),
    /// Login Request.
    LoginRequest(LoginRequest),
    /// Text Request.
    TextRequest(TextRequest),
    /// SCSI Data-Out.
    DataOut(DataOut),
    /// Logout Request.
    LogoutRequest(LogoutRequest),
    /// SNACK Request.
    SnackRequest(SnackRequest),
    /// NOP-In.
    NopIn(NopIn),
    /// SCSI Response.
    ScsiResponse(ScsiResponse),
    /// Task Management Response.
    TaskMgmtResponse(TaskMgmtResponse),
    /// Login Response.
    LoginResponse(LoginResponse),
    /// Text Response.
    TextResponse(TextResponse),
    /// SCSI Data-In.
    DataIn(DataIn),
    /// Logout Response.
    LogoutResponse(LogoutResponse),
    /// R2T.
    R2t(R2t),
    /// Asynchronous Message.
    AsyncMessage(AsyncMessage),
    /// Reject.
    Reject(Reject),
    /// An opcode this implementation does not know (vendor-specific or reserved); kept raw.
    Unknown {
        /// Opcode (low 6 bits of byte 0).
        opcode: u8,
        /// The raw BHS.
        raw: Box<[u8; BHS_LEN]>,
    },
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}
#[inline]
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
#[inline]
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
#[inline]
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// The opcode-independent fields of a BHS (RFC 7143 11.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BhsInfo {
    /// Raw opcode (low 6 bits).
    pub opcode: u8,
    /// I bit.
    pub immediate: bool,
    /// TotalAHSLength in bytes (the field counts 4-byte words).
    pub ahs_len: usize,
    /// DataSegmentLength in bytes (without padding).
    pub data_len: u32,
    /// Initiator task tag (bytes 16-19).
    pub itt: u32,
}

impl BhsInfo {
    /// Reads the common fields of `bhs`.
    pub fn of(bhs: &[u8; BHS_LEN]) -> BhsInfo {
        BhsInfo {
            opcode: bhs[0] & 0x3f,
            immediate: bhs[0] & 0x40 != 0,
            ahs_len: usize::from(bhs[4]) * 4,
            data_len: u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]),
            itt: be32(bhs, 16),
        }
    }
}

/// Bytes of padding after a data segment of `len` bytes (RFC 7143 11.2.3).
#[inline]
pub fn pad_len(len: usize) -> usize {
    (4 - (len & 3)) & 3
}

impl Header {
    /// Parses a BHS into its typed form. Unknown opcodes give [`Header::Unknown`]; field
    /// values are not judged here (that is the connection's job, which knows the state).
    ///
    /// One match arm per opcode of RFC 7143 11.2.1.2, each reading that PDU's fields at
    /// the offsets of its section: kept as one function so the whole opcode table reads
    /// side by side with the RFC (the arms share nothing to factor out).
    pub fn parse(b: &[u8; BHS_LEN]) -> Header {
        let imm = b[0] & 0x40 != 0;
        let f = b[1] & 0x80 != 0;
        let op = b[0] & 0x3f;
        let Some(opcode) = Opcode::from_u8(op) else {
            return Header::Unknown {
                opcode: op,
                raw: Box::new(*b),
            };
        };
        match opcode {
            Opcode::NopOut => Header::NopOut(NopOut {
                immediate: imm,
                lun: be64(b, 8),
                itt: be32(b, 16),
                ttt: be32(b, 20),
                cmd_sn: be32(b, 24),
                exp_stat_sn: be32(b, 28),
            }),
            Opcode::ScsiCommand => {
                let mut cdb = [0u8; 16];
                cdb.copy_from_slice(&b[32..48]);
                Header::ScsiCommand(ScsiCommand {
                    immediate: imm,
                    final_bit: f,
                    read: b[1] & 0x40 != 0,
                    write: b[1] & 0x20 != 0,
                    attr: TaskAttribute::from_bits(b[1]),
                    lun: be64(b, 8),
                    itt: be32(b, 16),
                    edtl: be32(b, 20),
                    cmd_sn: be32(b, 24),
                    exp_stat_sn: be32(b, 28),
                    cdb,
                })
            }
            Opcode::TaskMgmtRequest => Header::TaskMgmtRequest(TaskMgmtRequest {
                immediate: imm,
                function: TmfFunction::from_bits(b[1]),
                lun: be64(b, 8),
                itt: be32(b, 16),
                ref_itt: be32(b, 20),
                cmd_sn: be32(b, 24),
                exp_stat_sn: be32(b, 28),
                ref_cmd_sn: be32(b, 32),
                exp_data_sn: be32(b, 36),
            }),
            Opcode::LoginRequest => {
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                Header::LoginRequest(LoginRequest {
                    transit: f,
                    cont: b[1] & 0x40 != 0,
                    csg: Stage::from_bits(b[1] >> 2),
                    nsg: Stage::from_bits(b[1]),
                    version_max: b[2],
                    version_min: b[3],
                    isid,
                    tsih: be16(b, 14),
                    itt: be32(b, 16),
                    cid: be16(b, 20),
                    cmd_sn: be32(b, 24),
                    exp_stat_sn: be32(b, 28),
                })
            }
            Opcode::TextRequest => Header::TextRequest(TextRequest {
                immediate: imm,
                final_bit: f,
                cont: b[1] & 0x40 != 0,
                lun: be64(b, 8),
                itt: be32(b, 16),
                ttt: be32(b, 20),
                cmd_sn: be32(b, 24),
                exp_stat_sn: be32(b, 28),
            }),
            Opcode::DataOut => Header::DataOut(DataOut {
                final_bit: f,
                lun: be64(b, 8),
                itt: be32(b, 16),
                ttt: be32(b, 20),
                exp_stat_sn: be32(b, 28),
                data_sn: be32(b, 36),
                buffer_offset: be32(b, 40),
            }),
            Opcode::LogoutRequest => Header::LogoutRequest(LogoutRequest {
                immediate: imm,
                reason: match b[1] & 0x7f {
                    0 => LogoutReason::CloseSession,
                    1 => LogoutReason::CloseConnection,
                    2 => LogoutReason::RemoveForRecovery,
                    x => LogoutReason::Other(x),
                },
                itt: be32(b, 16),
                cid: be16(b, 20),
                cmd_sn: be32(b, 24),
                exp_stat_sn: be32(b, 28),
            }),
            Opcode::SnackRequest => Header::SnackRequest(SnackRequest {
                snack_type: b[1] & 0x0f,
                lun: be64(b, 8),
                itt: be32(b, 16),
                ttt: be32(b, 20),
                exp_stat_sn: be32(b, 28),
                beg_run: be32(b, 40),
                run_length: be32(b, 44),
            }),
            Opcode::NopIn => Header::NopIn(NopIn {
                lun: be64(b, 8),
                itt: be32(b, 16),
                ttt: be32(b, 20),
                stat_sn: be32(b, 24),
                exp_cmd_sn: be32(b, 28),
                max_cmd_sn: be32(b, 32),
            }),
            Opcode::ScsiResponse => Header::ScsiResponse(ScsiResponse {
                bidi_overflow: b[1] & 0x10 != 0,
                bidi_underflow: b[1] & 0x08 != 0,
                overflow: b[1] & 0x04 != 0,
                underflow: b[1] & 0x02 != 0,
                response: b[2],
                status: b[3],
                itt: be32(b, 16),
                snack_tag: be32(b, 20),
                stat_sn: be32(b, 24),
                exp_cmd_sn: be32(b, 28),
                max_cmd_sn: be32(b, 32),
                exp_data_sn: be32(b, 36),
                bidi_residual: be32(b, 40),
                residual: be32(b, 44),
            }),
            Opcode::TaskMgmtResponse => Header::TaskMgmtResponse(TaskMgmtResponse {
                response: b[2],
                itt: be32(b, 16),
                stat_sn: be32(b, 24),
                exp_cmd_sn: be32(b, 28),
                max_cmd_sn: be32(b, 32),
            }),
            Opcode::LoginResponse => {
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                Header::LoginResponse(LoginResponse {
                    transit: f,
                    cont: b[1] & 0x40 != 0,
                    csg: Stage::from_bits(b[1] >> 2),
                    nsg: Stage::from_bits(b[1]),
                    version_max: b[2],
                    version_active: b[3],
                    isid,
                    tsih: be16(b, 14),
                    itt: be32(b, 16),
                    stat_sn: be32(b, 24),
                    exp_cmd_sn: be32(b, 28),
                    max_cmd_sn: be32(b, 32),
                    status_class: b[36],
                    status_detail: b[37],
                })
            }
            Opcode::TextResponse => Header::TextResponse(TextResponse {
                final_bit: f,
                cont: b[1] & 0x40 != 0,
                lun: be64(b, 8),
                itt: be32(b, 16),
                ttt: be32(b, 20),
                stat_sn: be32(b, 24),
                exp_cmd_sn: be32(b, 28),
                max_cmd_sn: be32(b, 32),
            }),
            Opcode::DataIn => Header::DataIn(DataIn {
                final_bit: f,
                ack: b[1] & 0x40 != 0,
                overflow: b[1] & 0x04 != 0,
                underflow: b[1] & 0x02 != 0,
                status_present: b[1] & 0x01 != 0,
                status: b[3],
                lun: be64(b, 8),
                itt: be32(b, 16),
                ttt: be32(b, 20),
                stat_sn: be32(b, 24),
                exp_cmd_sn: be32(b, 28),
                max_cmd_sn: be32(b, 32),
                data_sn: be32(b, 36),
                buffer_offset: be32(b, 40),
                residual: be32(b, 44),
            }),
            Opcode::LogoutResponse => Header::LogoutResponse(LogoutResponse {
                response: b[2],
                itt: be32(b, 16),
                stat_sn: be32(b, 24),
                exp_cmd_sn: be32(b, 28),
                max_cmd_sn: be32(b, 32),
                time2wait: be16(b, 40),
                time2retain: be16(b, 42),
            }),
            Opcode::R2t => Header::R2t(R2t {
                lun: be64(b, 8),
                itt: be32(b, 16),
                ttt: be32(b, 20),
                stat_sn: be32(b, 24),
                exp_cmd_sn: be32(b, 28),
                max_cmd_sn: be32(b, 32),
                r2t_sn: be32(b, 36),
                buffer_offset: be32(b, 40),
                desired_len: be32(b, 44),
            }),
            Opcode::AsyncMessage => Header::AsyncMessage(AsyncMessage {
                lun: be64(b, 8),
                stat_sn: be32(b, 24),
                exp_cmd_sn: be32(b, 28),
                max_cmd_sn: be32(b, 32),
                event: b[36],
                vcode: b[37],
                param1: be16(b, 38),
                param2: be16(b, 40),
                param3: be16(b, 42),
            }),
            Opcode::Reject => Header::Reject(Reject {
                reason: b[2],
                stat_sn: be32(b, 24),
                exp_cmd_sn: be32(b, 28),
                max_cmd_sn: be32(b, 32),
                data_sn: be32(b, 36),
            }),
        }
    }

    /// The opcode byte value (low 6 bits).
    pub fn opcode(&self) -> u8 {
        match self {
            Header::NopOut(_) => Opcode::NopOut as u8,
            Header::ScsiCommand(_) => Opcode::ScsiCommand as u8,
            Header::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest as u8,
            Header::LoginRequest(_) => Opcode::LoginRequest as u8,
            Header::TextRequest(_) => Opcode::TextRequest as u8,
            Header::DataOut(_) => Opcode::DataOut as u8,
            Header::LogoutRequest(_) => Opcode::LogoutRequest as u8,
            Header::SnackRequest(_) => Opcode::SnackRequest as u8,
            Header::NopIn(_) => Opcode::NopIn as u8,
            Header::ScsiResponse(_) => Opcode::ScsiResponse as u8,
            Header::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse as u8,
            Header::LoginResponse(_) => Opcode::LoginResponse as u8,
            Header::TextResponse(_) => Opcode::TextResponse as u8,
            Header::DataIn(_) => Opcode::DataIn as u8,
            Header::LogoutResponse(_) => Opcode::LogoutResponse as u8,
            Header::R2t(_) => Opcode::R2t as u8,
            Header::AsyncMessage(_) => Opcode::AsyncMessage as u8,
            Header::Reject(_) => Opcode::Reject as u8,
            Header::Unknown { opcode, .. } => *opcode,
        }
    }

    /// Encodes the BHS with the given TotalAHSLength (bytes, multiple of 4) and
    /// DataSegmentLength. Fields not carried by the typed value are zero.
    ///
    /// The mirror of [`Header::parse`]: one arm per PDU type, kept together for the same
    /// reason.
    pub fn encode(&self, ahs_len: usize, data_len: u32) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        if let Header::Unknown { raw, .. } = self {
            b = **raw;
        }
        b[0] = self.opcode();
        b[4] = u8::try_from(ahs_len / 4).unwrap_or(u8::MAX);
        let dl = data_len.min(MAX_DATA_SEGMENT).to_be_bytes();
        b[5..8].copy_from_slice(&dl[1..4]);
        let fbit = |x: bool| if x { 0x80u8 } else { 0 };
        let bit = |x: bool, m: u8| if x { m } else { 0 };
        match self {
            Header::NopOut(h) => {
                b[0] |= bit(h.immediate, 0x40);
                b[1] = 0x80;
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.ttt);
                put32(&mut b, 24, h.cmd_sn);
                put32(&mut b, 28, h.exp_stat_sn);
            }
            Header::ScsiCommand(h) => {
                b[0] |= bit(h.immediate, 0x40);
                b[1] = fbit(h.final_bit) | bit(h.read, 0x40) | bit(h.write, 0x20) | h.attr.bits();
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.edtl);
                put32(&mut b, 24, h.cmd_sn);
                put32(&mut b, 28, h.exp_stat_sn);
                b[32..48].copy_from_slice(&h.cdb);
            }
            Header::TaskMgmtRequest(h) => {
                b[0] |= bit(h.immediate, 0x40);
                b[1] = 0x80 | h.function.bits();
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.ref_itt);
                put32(&mut b, 24, h.cmd_sn);
                put32(&mut b, 28, h.exp_stat_sn);
                put32(&mut b, 32, h.ref_cmd_sn);
                put32(&mut b, 36, h.exp_data_sn);
            }
            Header::LoginRequest(h) => {
                b[0] |= 0x40;
                b[1] = fbit(h.transit) | bit(h.cont, 0x40) | (h.csg.bits() << 2) | h.nsg.bits();
                b[2] = h.version_max;
                b[3] = h.version_min;
                b[8..14].copy_from_slice(&h.isid);
                put16(&mut b, 14, h.tsih);
                put32(&mut b, 16, h.itt);
                put16(&mut b, 20, h.cid);
                put32(&mut b, 24, h.cmd_sn);
                put32(&mut b, 28, h.exp_stat_sn);
            }
            Header::TextRequest(h) => {
                b[0] |= bit(h.immediate, 0x40);
                b[1] = fbit(h.final_bit) | bit(h.cont, 0x40);
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.ttt);
                put32(&mut b, 24, h.cmd_sn);
                put32(&mut b, 28, h.exp_stat_sn);
            }
            Header::DataOut(h) => {
                b[1] = fbit(h.final_bit);
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.ttt);
                put32(&mut b, 28, h.exp_stat_sn);
                put32(&mut b, 36, h.data_sn);
                put32(&mut b, 40, h.buffer_offset);
            }
            Header::LogoutRequest(h) => {
                b[0] |= bit(h.immediate, 0x40);
                b[1] = 0x80
                    | match h.reason {
                        LogoutReason::CloseSession => 0,
                        LogoutReason::CloseConnection => 1,
                        LogoutReason::RemoveForRecovery => 2,
                        LogoutReason::Other(x) => x & 0x7f,
                    };
                put32(&mut b, 16, h.itt);
                put16(&mut b, 20, h.cid);
                put32(&mut b, 24, h.cmd_sn);
                put32(&mut b, 28, h.exp_stat_sn);
            }
            Header::SnackRequest(h) => {
                b[1] = 0x80 | (h.snack_type & 0x0f);
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.ttt);
                put32(&mut b, 28, h.exp_stat_sn);
                put32(&mut b, 40, h.beg_run);
                put32(&mut b, 44, h.run_length);
            }
            Header::NopIn(h) => {
                b[1] = 0x80;
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.ttt);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
            }
            Header::ScsiResponse(h) => {
                b[1] = 0x80
                    | bit(h.bidi_overflow, 0x10)
                    | bit(h.bidi_underflow, 0x08)
                    | bit(h.overflow, 0x04)
                    | bit(h.underflow, 0x02);
                b[2] = h.response;
                b[3] = h.status;
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.snack_tag);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
                put32(&mut b, 36, h.exp_data_sn);
                put32(&mut b, 40, h.bidi_residual);
                put32(&mut b, 44, h.residual);
            }
            Header::TaskMgmtResponse(h) => {
                b[1] = 0x80;
                b[2] = h.response;
                put32(&mut b, 16, h.itt);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
            }
            Header::LoginResponse(h) => {
                b[1] = fbit(h.transit) | bit(h.cont, 0x40) | (h.csg.bits() << 2) | h.nsg.bits();
                b[2] = h.version_max;
                b[3] = h.version_active;
                b[8..14].copy_from_slice(&h.isid);
                put16(&mut b, 14, h.tsih);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
                b[36] = h.status_class;
                b[37] = h.status_detail;
            }
            Header::TextResponse(h) => {
                b[1] = fbit(h.final_bit) | bit(h.cont, 0x40);
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.ttt);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
            }
            Header::DataIn(h) => {
                b[1] = fbit(h.final_bit)
                    | bit(h.ack, 0x40)
                    | bit(h.overflow, 0x04)
                    | bit(h.underflow, 0x02)
                    | bit(h.status_present, 0x01);
                b[3] = h.status;
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.ttt);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
                put32(&mut b, 36, h.data_sn);
                put32(&mut b, 40, h.buffer_offset);
                put32(&mut b, 44, h.residual);
            }
            Header::LogoutResponse(h) => {
                b[1] = 0x80;
                b[2] = h.response;
                put32(&mut b, 16, h.itt);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
                put16(&mut b, 40, h.time2wait);
                put16(&mut b, 42, h.time2retain);
            }
            Header::R2t(h) => {
                b[1] = 0x80;
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, h.itt);
                put32(&mut b, 20, h.ttt);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
                put32(&mut b, 36, h.r2t_sn);
                put32(&mut b, 40, h.buffer_offset);
                put32(&mut b, 44, h.desired_len);
            }
            Header::AsyncMessage(h) => {
                b[1] = 0x80;
                put64(&mut b, 8, h.lun);
                put32(&mut b, 16, RESERVED_TAG);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
                b[36] = h.event;
                b[37] = h.vcode;
                put16(&mut b, 38, h.param1);
                put16(&mut b, 40, h.param2);
                put16(&mut b, 42, h.param3);
            }
            Header::Reject(h) => {
                b[1] = 0x80;
                b[2] = h.reason;
                put32(&mut b, 16, RESERVED_TAG);
                put32(&mut b, 24, h.stat_sn);
                put32(&mut b, 28, h.exp_cmd_sn);
                put32(&mut b, 32, h.max_cmd_sn);
                put32(&mut b, 36, h.data_sn);
            }
            Header::Unknown { raw, .. } => {
                b[0] = raw[0];
            }
        }
        b
    }
}

/// CRC32C (Castagnoli) digest as iSCSI uses it (RFC 7143 11.2.4; RFC 3385).
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continues a CRC32C over another slice.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The digest as it travels: the CRC value in little-endian byte order, matching the
/// reflected CRC's bit order on the wire (RFC 7143 11.2.4; the RFC 3720 B.4 examples).
#[inline]
pub fn digest_bytes(crc: u32) -> [u8; 4] {
    crc.to_le_bytes()
}

/// Digest settings of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// HeaderDigest=CRC32C.
    pub header: bool,
    /// DataDigest=CRC32C.
    pub data: bool,
}

/// A complete PDU with owned AHS and data (used for login, text, tests and fuzzing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// The typed BHS.
    pub header: Header,
    /// AHS bytes (multiple of 4).
    pub ahs: Vec<u8>,
    /// Data segment without padding.
    pub data: Vec<u8>,
}

impl Pdu {
    /// A PDU without AHS.
    pub fn new(header: Header, data: Vec<u8>) -> Pdu {
        Pdu {
            header,
            ahs: Vec::new(),
            data,
        }
    }

    /// Serialises the PDU with the given digests.
    pub fn encode(&self, digests: Digests) -> Vec<u8> {
        let data_len = u32::try_from(self.data.len()).unwrap_or(MAX_DATA_SEGMENT);
        let bhs = self.header.encode(self.ahs.len(), data_len);
        let mut out = Vec::with_capacity(BHS_LEN + self.ahs.len() + self.data.len() + 12);
        out.extend_from_slice(&bhs);
        out.extend_from_slice(&self.ahs);
        if digests.header {
            let crc = crc32c(&out);
            out.extend_from_slice(&digest_bytes(crc));
        }
        if !self.data.is_empty() {
            out.extend_from_slice(&self.data);
            let pad = pad_len(self.data.len());
            out.extend_from_slice(&[0u8; 3][..pad]);
            if digests.data {
                let crc = crc32c_append(crc32c(&self.data), &[0u8; 3][..pad]);
                out.extend_from_slice(&digest_bytes(crc));
            }
        }
        out
    }

    /// Decodes one PDU from the front of `buf`; returns it and the bytes consumed.
    pub fn decode(buf: &[u8], digests: Digests, max_data: u32) -> Result<(Pdu, usize)> {
        let mut cursor = std::io::Cursor::new(buf);
        let pdu = read_pdu(&mut cursor, digests, max_data)?;
        let used = usize::try_from(cursor.position()).unwrap_or(buf.len());
        Ok((pdu, used))
    }
}

/// Why a received PDU is unacceptable before it is even typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The data segment is longer than what we declared we accept.
    SegmentTooLong {
        /// DataSegmentLength received.
        len: u32,
        /// Our MaxRecvDataSegmentLength.
        max: u32,
    },
    /// Header digest mismatch.
    HeaderDigest,
    /// Data digest mismatch.
    DataDigest,
}

/// Reads one whole PDU (BHS, AHS, header digest, data, padding, data digest) from `r`.
///
/// `max_data` is our declared MaxRecvDataSegmentLength: a longer segment is an error
/// (RFC 7143 13.12) — reported after the segment has been consumed, so the stream stays
/// in step and the caller may answer with a Reject.
pub fn read_pdu<R: Read>(r: &mut R, digests: Digests, max_data: u32) -> Result<Pdu> {
    let mut bhs = [0u8; BHS_LEN];
    r.read_exact(&mut bhs).map_err(Error::Io)?;
    let info = BhsInfo::of(&bhs);
    let mut ahs = vec![0u8; info.ahs_len];
    r.read_exact(&mut ahs).map_err(Error::Io)?;
    if digests.header {
        let mut d = [0u8; 4];
        r.read_exact(&mut d).map_err(Error::Io)?;
        let crc = crc32c_append(crc32c(&bhs), &ahs);
        if digest_bytes(crc) != d {
            return Err(Error::Frame {
                bhs: Box::new(bhs),
                kind: FrameError::HeaderDigest,
            });
        }
    }
    let len = info.data_len as usize;
    let padded = len + pad_len(len);
    if info.data_len > max_data {
        // Consume and discard the oversized segment so the stream stays aligned.
        let skip = padded as u64 + if digests.data && len > 0 { 4 } else { 0 };
        std::io::copy(&mut r.take(skip), &mut std::io::sink()).map_err(Error::Io)?;
        return Err(Error::Frame {
            bhs: Box::new(bhs),
            kind: FrameError::SegmentTooLong {
                len: info.data_len,
                max: max_data,
            },
        });
    }
    let mut data = vec![0u8; padded];
    r.read_exact(&mut data).map_err(Error::Io)?;
    if digests.data && len > 0 {
        let mut d = [0u8; 4];
        r.read_exact(&mut d).map_err(Error::Io)?;
        if digest_bytes(crc32c(&data)) != d {
            return Err(Error::Frame {
                bhs: Box::new(bhs),
                kind: FrameError::DataDigest,
            });
        }
    }
    data.truncate(len);
    Ok(Pdu {
        header: Header::parse(&bhs),
        ahs,
        data,
    })
}

/// AHS types (RFC 7143 11.2.2.1).
pub mod ahs {
    /// Extended CDB AHS.
    pub const EXTENDED_CDB: u8 = 1;
    /// Bidirectional Read Expected Data Transfer Length AHS.
    pub const BIDI_READ_LENGTH: u8 = 2;
}

/// One parsed AHS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ahs<'a> {
    /// AHSType.
    pub ahs_type: u8,
    /// AHS-Specific byte.
    pub specific: u8,
    /// Payload (AHSLength bytes, without padding).
    pub data: &'a [u8],
}

/// Splits the AHS area into its segments (RFC 7143 11.2.2), checking every length.
pub fn parse_ahs(mut area: &[u8]) -> std::result::Result<Vec<Ahs<'_>>, &'static str> {
    let mut out = Vec::new();
    while !area.is_empty() {
        if area.len() < 4 {
            return Err("truncated AHS header");
        }
        let len = usize::from(be16(area, 0));
        let ahs_type = area[2];
        let specific = area[3];
        let body = 4usize.checked_add(len).ok_or("AHS length overflow")?;
        let total = body + pad_len(body);
        if total > area.len() {
            return Err("AHS longer than TotalAHSLength");
        }
        out.push(Ahs {
            ahs_type,
            specific,
            data: &area[4..body],
        });
        area = &area[total..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32c_known_answers() {
        // RFC 3720 B.4 CRC examples: 32 bytes of zeros -> aa 36 91 8a on the wire.
        assert_eq!(digest_bytes(crc32c(&[0u8; 32])), [0xaa, 0x36, 0x91, 0x8a]);
        // 32 bytes of 0xff -> 43 ab a8 62.
        assert_eq!(
            digest_bytes(crc32c(&[0xffu8; 32])),
            [0x43, 0xab, 0xa8, 0x62]
        );
        // Incrementing 0..31 -> 4e 79 dd 46.
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(digest_bytes(crc32c(&inc)), [0x4e, 0x79, 0xdd, 0x46]);
    }

    #[test]
    fn scsi_command_layout() {
        // A READ(10) command BHS built by hand from RFC 7143 11.3.
        let mut b = [0u8; 48];
        b[0] = 0x01;
        b[1] = 0x80 | 0x40 | 0x01; // F, R, SIMPLE
        b[8..16].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // LUN 1
        b[16..20].copy_from_slice(&0x1234u32.to_be_bytes());
        b[20..24].copy_from_slice(&4096u32.to_be_bytes());
        b[24..28].copy_from_slice(&7u32.to_be_bytes());
        b[28..32].copy_from_slice(&9u32.to_be_bytes());
        b[32] = 0x28;
        let h = Header::parse(&b);
        let Header::ScsiCommand(c) = &h else {
            panic!("not a command: {h:?}")
        };
        assert!(c.final_bit && c.read && !c.write && !c.immediate);
        assert_eq!(c.attr, TaskAttribute::Simple);
        assert_eq!(c.lun, 0x0001_0000_0000_0000);
        assert_eq!(
            (c.itt, c.edtl, c.cmd_sn, c.exp_stat_sn),
            (0x1234, 4096, 7, 9)
        );
        assert_eq!(c.cdb[0], 0x28);
        assert_eq!(h.encode(0, 0), b);
    }

    /// The PDUs an initiator sends (RFC 7143 11.12 Login Request, 11.3 SCSI Command, 11.7
    /// Data-Out, 11.18 NOP-Out, 11.14 Logout Request): the bytes land at the offsets of
    /// the RFC's figures and decode back to the same value.
    #[test]
    fn initiator_pdus_round_trip_at_rfc_offsets() {
        let login = Header::LoginRequest(LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0, 1, 2, 3, 4],
            tsih: 0x0506,
            itt: 0x0708_090a,
            cid: 0x0b0c,
            cmd_sn: 0x0d0e_0f10,
            exp_stat_sn: 0x1112_1314,
        });
        let b = login.encode(0, 20);
        // 11.12: byte 0 = I (always 1 for login) | 0x03; byte 1 = T | C | CSG<<2 | NSG.
        assert_eq!(b[0], 0x43);
        assert_eq!(b[1], 0x80 | (1 << 2) | 3);
        assert_eq!(&b[5..8], &[0, 0, 20]);
        assert_eq!(&b[8..14], &[0x80, 0, 1, 2, 3, 4]);
        assert_eq!(&b[14..16], &[5, 6]);
        assert_eq!(&b[16..20], &[7, 8, 9, 0x0a]);
        assert_eq!(&b[20..22], &[0x0b, 0x0c]);
        assert_eq!(&b[24..28], &[0x0d, 0x0e, 0x0f, 0x10]);
        assert_eq!(&b[28..32], &[0x11, 0x12, 0x13, 0x14]);
        assert_eq!(Header::parse(&b), login);

        let cmd = Header::ScsiCommand(ScsiCommand {
            immediate: false,
            final_bit: true,
            read: false,
            write: true,
            attr: TaskAttribute::Simple,
            lun: 0x0003_0000_0000_0000,
            itt: 0x0102_0304,
            edtl: 0x1000,
            cmd_sn: 7,
            exp_stat_sn: 9,
            cdb: [0x2a, 0, 0, 0, 0, 0x10, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
        });
        let b = cmd.encode(0, 4096);
        // 11.3: byte 1 = F | R | W | ATTR; EDTL at 20, CmdSN 24, ExpStatSN 28, CDB 32.
        assert_eq!(b[0], 0x01);
        assert_eq!(b[1], 0x80 | 0x20 | 0x01);
        assert_eq!(&b[4..8], &[0, 0, 0x10, 0x00]);
        assert_eq!(&b[8..16], &[0, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..20], &[1, 2, 3, 4]);
        assert_eq!(&b[20..24], &[0, 0, 0x10, 0]);
        assert_eq!(&b[24..28], &[0, 0, 0, 7]);
        assert_eq!(&b[28..32], &[0, 0, 0, 9]);
        assert_eq!(&b[32..42], &[0x2a, 0, 0, 0, 0, 0x10, 0, 0, 8, 0]);
        assert_eq!(Header::parse(&b), cmd);

        let out = Header::DataOut(DataOut {
            final_bit: true,
            lun: 0x0003_0000_0000_0000,
            itt: 0x0102_0304,
            ttt: 0x0a0b_0c0d,
            exp_stat_sn: 9,
            data_sn: 2,
            buffer_offset: 0x2_0000,
        });
        let b = out.encode(0, 8192);
        // 11.7.1: no I bit; TTT at 20, ExpStatSN 28, DataSN 36, Buffer Offset 40.
        assert_eq!((b[0], b[1]), (0x05, 0x80));
        assert_eq!(&b[20..24], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(&b[24..28], &[0; 4]);
        assert_eq!(&b[36..40], &[0, 0, 0, 2]);
        assert_eq!(&b[40..44], &[0, 2, 0, 0]);
        assert_eq!(Header::parse(&b), out);

        let ping = NopIn {
            lun: 0x0001_0000_0000_0000,
            itt: RESERVED_TAG,
            ttt: 0x55,
            stat_sn: 4,
            exp_cmd_sn: 5,
            max_cmd_sn: 6,
        };
        let nop = Header::NopOut(NopOut::reply_to(&ping, 11, 12));
        let b = nop.encode(0, 0);
        // 11.18: I | 0x00, F always 1; ITT reserved, TTT and LUN copied from the NOP-In.
        assert_eq!((b[0], b[1]), (0x40, 0x80));
        assert_eq!(&b[8..16], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..20], &[0xff; 4]);
        assert_eq!(&b[20..24], &[0, 0, 0, 0x55]);
        assert_eq!(&b[24..28], &[0, 0, 0, 11]);
        assert_eq!(&b[28..32], &[0, 0, 0, 12]);
        assert_eq!(Header::parse(&b), nop);

        let logout = Header::LogoutRequest(LogoutRequest::close_session(0x7fff_fff0, 1, 20, 21));
        let b = logout.encode(0, 0);
        // 11.14: I | 0x06; byte 1 = F | reason code (0 = close the session); CID at 20.
        assert_eq!((b[0], b[1]), (0x46, 0x80));
        assert_eq!(&b[16..20], &[0x7f, 0xff, 0xff, 0xf0]);
        assert_eq!(&b[20..22], &[0, 1]);
        assert_eq!(&b[24..28], &[0, 0, 0, 20]);
        assert_eq!(&b[28..32], &[0, 0, 0, 21]);
        assert_eq!(Header::parse(&b), logout);
    }

    /// What an initiator reads (RFC 7143 11.8 R2T, 11.7.2 Data-In): fields decoded from
    /// the offsets of the RFC's figures (moved here with bench/loadgen's own decoder).
    #[test]
    fn r2t_and_data_in_decode_at_rfc_offsets() {
        let mut b = [0u8; BHS_LEN];
        b[0] = 0x31;
        b[16..20].copy_from_slice(&5u32.to_be_bytes());
        b[20..24].copy_from_slice(&0xabu32.to_be_bytes());
        b[32..36].copy_from_slice(&40u32.to_be_bytes());
        b[40..44].copy_from_slice(&65536u32.to_be_bytes());
        b[44..48].copy_from_slice(&8192u32.to_be_bytes());
        match Header::parse(&b) {
            Header::R2t(r) => {
                assert_eq!(
                    (r.itt, r.ttt, r.buffer_offset, r.desired_len, r.max_cmd_sn),
                    (5, 0xab, 65536, 8192, 40)
                );
            }
            o => panic!("{o:?}"),
        }
        b[0] = 0x25;
        b[1] = 0x81;
        b[3] = 0x02;
        match Header::parse(&b) {
            Header::DataIn(d) => assert!(d.status_present && d.status == 2),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn parse_never_panics_on_any_opcode() {
        for opc in 0..=255u8 {
            let mut b = [0xffu8; BHS_LEN];
            b[0] = opc;
            let h = Header::parse(&b);
            assert_eq!(h.opcode(), opc & 0x3f);
        }
        // RFC 7143 11.2.3: segments are padded to a multiple of 4 bytes.
        assert_eq!(pad_len(5), 3);
        assert_eq!(pad_len(8), 0);
    }

    #[test]
    fn login_response_layout() {
        let h = Header::LoginResponse(LoginResponse {
            transit: true,
            cont: false,
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            version_max: 0,
            version_active: 0,
            isid: [0x80, 1, 2, 3, 4, 5],
            tsih: 0x0102,
            itt: 0xaabbccdd,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            status_class: 2,
            status_detail: 1,
        });
        let b = h.encode(0, 5);
        assert_eq!(b[0], 0x23);
        assert_eq!(b[1], 0x80 | (1 << 2) | 3);
        assert_eq!(&b[5..8], &[0, 0, 5]);
        assert_eq!(&b[8..16], &[0x80, 1, 2, 3, 4, 5, 1, 2]);
        assert_eq!(&b[16..20], &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!((b[36], b[37]), (2, 1));
        assert_eq!(Header::parse(&b), h);
    }

    #[test]
    fn data_in_status_bits() {
        let h = Header::DataIn(DataIn {
            final_bit: true,
            ack: false,
            overflow: false,
            underflow: true,
            status_present: true,
            status: 0,
            lun: 0,
            itt: 1,
            ttt: RESERVED_TAG,
            stat_sn: 5,
            exp_cmd_sn: 6,
            max_cmd_sn: 7,
            data_sn: 0,
            buffer_offset: 0,
            residual: 512,
        });
        let b = h.encode(0, 512);
        assert_eq!(b[1], 0x80 | 0x02 | 0x01);
        assert_eq!(&b[44..48], &512u32.to_be_bytes());
    }

    #[test]
    fn pdu_roundtrip_with_digests_and_padding() {
        let pdu = Pdu::new(
            Header::TextRequest(TextRequest {
                immediate: true,
                final_bit: true,
                cont: false,
                lun: 0,
                itt: 3,
                ttt: RESERVED_TAG,
                cmd_sn: 1,
                exp_stat_sn: 1,
            }),
            b"SendTargets=All\0".to_vec()[..15].to_vec(),
        );
        let d = Digests {
            header: true,
            data: true,
        };
        let wire = pdu.encode(d);
        // 48 BHS + 4 header digest + 15 data + 1 pad + 4 data digest.
        assert_eq!(wire.len(), 72);
        let (back, used) = Pdu::decode(&wire, d, 8192).unwrap();
        assert_eq!(used, 72);
        assert_eq!(back, pdu);
        let mut bad = wire.clone();
        bad[60] ^= 1;
        assert!(matches!(
            Pdu::decode(&bad, d, 8192),
            Err(Error::Frame {
                kind: FrameError::DataDigest,
                ..
            })
        ));
        let mut bad = wire;
        bad[20] ^= 1;
        assert!(matches!(
            Pdu::decode(&bad, d, 8192),
            Err(Error::Frame {
                kind: FrameError::HeaderDigest,
                ..
            })
        ));
    }

    #[test]
    fn oversized_segment_is_consumed_and_reported() {
        let pdu = Pdu::new(
            Header::NopOut(NopOut {
                immediate: true,
                lun: 0,
                itt: 1,
                ttt: RESERVED_TAG,
                cmd_sn: 0,
                exp_stat_sn: 0,
            }),
            vec![7u8; 1001],
        );
        let mut wire = pdu.encode(Digests::default());
        let next = pdu.encode(Digests::default());
        wire.extend_from_slice(&next);
        let mut cur = std::io::Cursor::new(&wire[..]);
        let e = read_pdu(&mut cur, Digests::default(), 512).unwrap_err();
        assert!(matches!(
            e,
            Error::Frame {
                kind: FrameError::SegmentTooLong {
                    len: 1001,
                    max: 512
                },
                ..
            }
        ));
        // 48 + 1001 + 3 padding consumed; the next PDU still parses.
        assert_eq!(cur.position(), 1052);
        assert!(read_pdu(&mut cur, Digests::default(), 4096).is_ok());
    }

    #[test]
    fn unknown_opcode_stays_data() {
        let mut b = [0u8; 48];
        b[0] = 0x1c;
        b[20] = 0x55;
        match Header::parse(&b) {
            Header::Unknown { opcode, raw } => {
                assert_eq!(opcode, 0x1c);
                assert_eq!(raw[20], 0x55);
            }
            h => panic!("{h:?}"),
        }
    }

    #[test]
    fn ahs_parsing() {
        // Extended CDB AHS: length 5 (4 CDB bytes + reserved byte), padded to 8+4.
        let area = [0, 5, 1, 0, 1, 2, 3, 4, 5, 0, 0, 0];
        let v = parse_ahs(&area).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].ahs_type, ahs::EXTENDED_CDB);
        assert_eq!(v[0].data, &[1, 2, 3, 4, 5]);
        assert!(parse_ahs(&[0, 9, 1, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_ahs(&[0, 1]).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_reencodes(bytes in proptest::collection::vec(any::<u8>(), 48)) {
            let mut b = [0u8; 48];
            b.copy_from_slice(&bytes);
            let h = Header::parse(&b);
            let info = BhsInfo::of(&b);
            let again = h.encode(info.ahs_len, info.data_len);
            // Re-encoding then parsing is a fixed point.
            prop_assert_eq!(Header::parse(&again), h);
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            hd in any::<bool>(), dd in any::<bool>()
        ) {
            let _ = Pdu::decode(&bytes, Digests { header: hd, data: dd }, 256);
        }

        #[test]
        fn ahs_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_ahs(&bytes);
        }

        #[test]
        fn roundtrip_data(data in proptest::collection::vec(any::<u8>(), 0..300), hd in any::<bool>(), dd in any::<bool>()) {
            let pdu = Pdu::new(Header::NopIn(NopIn { lun: 0, itt: 1, ttt: 2, stat_sn: 3, exp_cmd_sn: 4, max_cmd_sn: 5 }), data);
            let d = Digests { header: hd, data: dd };
            let wire = pdu.encode(d);
            prop_assert_eq!(wire.len() % 4, 0);
            let (back, used) = Pdu::decode(&wire, d, 1 << 20).unwrap();
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(back, pdu);
        }
    }
}
