//! CDB parsing: bytes to a typed [`Command`].
//!
//! One table, [`COMMANDS`], lists every operation code (and service action) this engine
//! supports with its CDB length, its CDB USAGE DATA (SPC-4 6.35.3) and its parser. The
//! dispatcher and REPORT SUPPORTED OPERATION CODES both read this table, so what we
//! report as supported is exactly what we execute.
//!
//! Parsers check every field whose value they reject and point at it with a
//! SENSE KEY SPECIFIC field pointer (SPC-4 4.5.2.4.2). Checks that need the medium
//! (LBA ranges, transfer limits) happen at execution.

use crate::sense::Sense;

/// Operation codes used by this crate.
#[allow(missing_docs)]
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const FORMAT_UNIT: u8 = 0x04;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
    pub const EXTENDED_COPY: u8 = 0x83;
    pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const MAINTENANCE_OUT: u8 = 0xa4;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_AND_VERIFY_12: u8 = 0xae;
    pub const VERIFY_12: u8 = 0xaf;

    /// SERVICE ACTION IN(16) service actions.
    pub const SAI_READ_CAPACITY_16: u16 = 0x10;
    /// GET LBA STATUS.
    pub const SAI_GET_LBA_STATUS: u16 = 0x12;
    /// MAINTENANCE IN: REPORT TARGET PORT GROUPS.
    pub const MI_REPORT_TARGET_PORT_GROUPS: u16 = 0x0a;
    /// MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES.
    pub const MI_REPORT_SUPPORTED_OPCODES: u16 = 0x0c;
    /// MAINTENANCE IN: REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS.
    pub const MI_REPORT_SUPPORTED_TMFS: u16 = 0x0d;
    /// MAINTENANCE OUT: SET TARGET PORT GROUPS.
    pub const MO_SET_TARGET_PORT_GROUPS: u16 = 0x0a;
}

/// PERSISTENT RESERVE IN service actions (SPC-4 6.15.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrInAction {
    /// READ KEYS.
    ReadKeys,
    /// READ RESERVATION.
    ReadReservation,
    /// REPORT CAPABILITIES.
    ReportCapabilities,
    /// READ FULL STATUS.
    ReadFullStatus,
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 6.16.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrOutAction {
    /// REGISTER.
    Register,
    /// RESERVE.
    Reserve,
    /// RELEASE.
    Release,
    /// CLEAR.
    Clear,
    /// PREEMPT.
    Preempt,
    /// PREEMPT AND ABORT.
    PreemptAndAbort,
    /// REGISTER AND IGNORE EXISTING KEY.
    RegisterAndIgnore,
    /// REGISTER AND MOVE.
    RegisterAndMove,
}

/// A parsed CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// TEST UNIT READY (SPC-4 6.47).
    TestUnitReady,
    /// REQUEST SENSE (SPC-4 6.39).
    RequestSense {
        /// DESC: descriptor format requested.
        desc: bool,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// INQUIRY (SPC-4 6.6).
    Inquiry {
        /// EVPD.
        evpd: bool,
        /// PAGE CODE.
        page: u8,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// MODE SENSE(6)/(10) (SPC-4 6.11, 6.12).
    ModeSense {
        /// MODE SENSE(10).
        ten: bool,
        /// DBD: no block descriptors.
        dbd: bool,
        /// LLBAA: long LBA block descriptors accepted.
        llbaa: bool,
        /// PC: 0 current, 1 changeable, 2 default, 3 saved.
        pc: u8,
        /// PAGE CODE.
        page: u8,
        /// SUBPAGE CODE.
        subpage: u8,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// MODE SELECT(6)/(10) (SPC-4 6.9, 6.10).
    ModeSelect {
        /// MODE SELECT(10).
        ten: bool,
        /// PF: page format.
        pf: bool,
        /// SP: save pages.
        sp: bool,
        /// PARAMETER LIST LENGTH.
        len: u32,
    },
    /// READ CAPACITY(10) (SBC-4 5.20).
    ReadCapacity10,
    /// READ CAPACITY(16) (SBC-4 5.21).
    ReadCapacity16 {
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// READ(6)/(10)/(12)/(16) (SBC-4 5.13-5.16).
    Read {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// TRANSFER LENGTH in blocks (READ(6) 0 already mapped to 256).
        blocks: u32,
        /// FUA.
        fua: bool,
        /// DPO.
        dpo: bool,
    },
    /// WRITE(6)/(10)/(12)/(16) (SBC-4 5.40-5.43).
    Write {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// TRANSFER LENGTH in blocks (WRITE(6) 0 already mapped to 256).
        blocks: u32,
        /// FUA.
        fua: bool,
        /// DPO.
        dpo: bool,
    },
    /// WRITE AND VERIFY(10)/(12)/(16) (SBC-4 5.44-5.46).
    WriteAndVerify {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// TRANSFER LENGTH in blocks.
        blocks: u32,
        /// BYTCHK (00b or 01b).
        bytchk: u8,
        /// DPO.
        dpo: bool,
    },
    /// VERIFY(10)/(12)/(16) (SBC-4 5.33-5.35).
    Verify {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// VERIFICATION LENGTH in blocks.
        blocks: u32,
        /// BYTCHK: 00b medium only, 01b compare, 11b compare each block with one block.
        bytchk: u8,
        /// DPO.
        dpo: bool,
    },
    /// SYNCHRONIZE CACHE(10)/(16) (SBC-4 5.31, 5.32).
    SynchronizeCache {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS (0 = to the end).
        blocks: u32,
        /// IMMED.
        immed: bool,
    },
    /// PRE-FETCH(10)/(16) (SBC-4 5.11, 5.12).
    PreFetch {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// PREFETCH LENGTH (0 = to the end).
        blocks: u32,
        /// IMMED.
        immed: bool,
    },
    /// UNMAP (SBC-4 5.30).
    Unmap {
        /// ANCHOR.
        anchor: bool,
        /// PARAMETER LIST LENGTH.
        len: u32,
    },
    /// WRITE SAME(10)/(16) (SBC-4 5.47, 5.48).
    WriteSame {
        /// WRITE SAME(16).
        sixteen: bool,
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS (0 = to the end of the medium, when WSNZ = 0).
        blocks: u32,
        /// UNMAP.
        unmap: bool,
        /// ANCHOR.
        anchor: bool,
        /// NDOB: no data-out buffer, write zeros.
        ndob: bool,
    },
    /// COMPARE AND WRITE (SBC-4 5.3).
    CompareAndWrite {
        /// LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS.
        blocks: u8,
        /// FUA.
        fua: bool,
        /// DPO.
        dpo: bool,
    },
    /// GET LBA STATUS (SBC-4 5.6).
    GetLbaStatus {
        /// STARTING LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// FORMAT UNIT (SBC-4 5.4).
    FormatUnit {
        /// FMTDATA: a parameter list follows.
        fmtdata: bool,
        /// LONGLIST: the parameter list header is 8 bytes.
        longlist: bool,
    },
    /// START STOP UNIT (SBC-4 5.25).
    StartStopUnit {
        /// IMMED.
        immed: bool,
        /// POWER CONDITION.
        power_condition: u8,
        /// LOEJ.
        loej: bool,
        /// START.
        start: bool,
    },
    /// PREVENT ALLOW MEDIUM REMOVAL (SBC-4 5.10).
    PreventAllowMediumRemoval {
        /// PREVENT field (bits 1:0).
        prevent: u8,
    },
    /// REPORT LUNS (SPC-4 6.33).
    ReportLuns {
        /// SELECT REPORT.
        select: u8,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// REPORT SUPPORTED OPERATION CODES (SPC-4 6.35).
    ReportSupportedOpcodes {
        /// RCTD: include command timeouts descriptors.
        rctd: bool,
        /// REPORTING OPTIONS.
        options: u8,
        /// REQUESTED OPERATION CODE.
        opcode: u8,
        /// REQUESTED SERVICE ACTION.
        sa: u16,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 6.36).
    ReportSupportedTmfs {
        /// REPD: return extended parameter data.
        repd: bool,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// REPORT TARGET PORT GROUPS (SPC-4 6.37).
    ReportTargetPortGroups {
        /// PARAMETER DATA FORMAT: extended header when set.
        extended: bool,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// SET TARGET PORT GROUPS (SPC-4 6.36, SPC-5 6.44).
    SetTargetPortGroups {
        /// PARAMETER LIST LENGTH.
        len: u32,
    },
    /// PERSISTENT RESERVE IN (SPC-4 6.15).
    PersistentReserveIn {
        /// Service action.
        action: PrInAction,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// PERSISTENT RESERVE OUT (SPC-4 6.16).
    PersistentReserveOut {
        /// Service action.
        action: PrOutAction,
        /// SCOPE.
        scope: u8,
        /// TYPE.
        pr_type: u8,
        /// PARAMETER LIST LENGTH.
        len: u32,
    },
    /// RESERVE(6)/(10) (SPC-2 7.21, 7.22).
    Reserve,
    /// RELEASE(6)/(10) (SPC-2 7.19, 7.20).
    Release,
    /// EXTENDED COPY (LID1) (SPC-4 6.4).
    ExtendedCopy {
        /// PARAMETER LIST LENGTH.
        len: u32,
    },
    /// RECEIVE COPY RESULTS (SPC-4 6.18).
    ReceiveCopyResults {
        /// Service action: 00h COPY STATUS, 03h OPERATING PARAMETERS, 04h FAILED SEGMENT
        /// DETAILS.
        sa: u8,
        /// LIST IDENTIFIER.
        list_id: u8,
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
}

/// One supported operation code (and service action).
#[derive(Debug)]
pub struct OpInfo {
    /// OPERATION CODE.
    pub opcode: u8,
    /// SERVICE ACTION, for opcodes that have one.
    pub service_action: Option<u16>,
    /// Command name (for logs).
    pub name: &'static str,
    /// CDB USAGE DATA (SPC-4 6.35.3); its length is the CDB length.
    pub usage: &'static [u8],
    /// Nominal command timeout in seconds (RCTD descriptor).
    pub timeout_secs: u32,
    /// Parser.
    pub(crate) parse: fn(&[u8]) -> Result<Command, Sense>,
}

impl OpInfo {
    /// CDB length in bytes.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }
}

// ---------------------------------------------------------------------------
// Field helpers. Callers have checked that the CDB is as long as the table says.

fn be16(c: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([c[at], c[at + 1]])
}
fn be24(c: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, c[at], c[at + 1], c[at + 2]])
}
fn be32(c: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]])
}
fn be64(c: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&c[at..at + 8]);
    u64::from_be_bytes(b)
}

fn bit(c: &[u8], byte: usize, b: u8) -> bool {
    c[byte] & (1 << b) != 0
}

fn invalid(byte: usize, bit: Option<u8>) -> Sense {
    Sense::invalid_field_in_cdb(byte as u16, bit)
}

/// RDPROTECT/WRPROTECT/VRPROTECT (byte 1 bits 7:5): we do not format with protection
/// information, so any non-zero value is INVALID FIELD IN CDB (SBC-4 5.16, table 95).
fn check_no_protect(c: &[u8]) -> Result<(), Sense> {
    if c[1] & 0xe0 != 0 {
        return Err(invalid(1, Some(7)));
    }
    Ok(())
}

/// Checks the CONTROL byte (SAM-5 5.2): NACA is not supported and the reserved and
/// obsolete (FLAG, LINK) bits must be zero. Vendor specific bits 7:6 are ignored.
fn check_control(c: &[u8], at: usize) -> Result<(), Sense> {
    let v = c[at];
    if v & 0x04 != 0 {
        return Err(invalid(at, Some(2)));
    }
    if v & 0x3b != 0 {
        let b = (0..6).rev().find(|b| v & 0x3b & (1 << b) != 0).unwrap_or(0);
        return Err(invalid(at, Some(b)));
    }
    Ok(())
}

fn ctl6(c: &[u8]) -> Result<(), Sense> {
    check_control(c, 5)
}
fn ctl10(c: &[u8]) -> Result<(), Sense> {
    check_control(c, 9)
}
fn ctl12(c: &[u8]) -> Result<(), Sense> {
    check_control(c, 11)
}
fn ctl16(c: &[u8]) -> Result<(), Sense> {
    check_control(c, 15)
}

// ---------------------------------------------------------------------------
// Parsers.

fn p_tur(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    Ok(Command::TestUnitReady)
}

fn p_request_sense(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    Ok(Command::RequestSense {
        desc: bit(c, 1, 0),
        alloc: u32::from(c[4]),
    })
}

fn p_format_unit(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    // FMTPINFO: protection information is not supported (SBC-4 5.4.2).
    if c[1] & 0xc0 != 0 {
        return Err(invalid(1, Some(7)));
    }
    let fmtdata = bit(c, 1, 4);
    // With FMTDATA = 0, CMPLST and DEFECT LIST FORMAT are reserved-ish: SBC-4 table 38
    // only allows 000b with FMTDATA = 0.
    if !fmtdata && c[1] & 0x07 != 0 {
        return Err(invalid(1, Some(2)));
    }
    Ok(Command::FormatUnit {
        fmtdata,
        longlist: bit(c, 1, 5),
    })
}

fn p_read6(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    let lba = u64::from(be24(c, 1) & 0x1f_ffff);
    let blocks = match c[4] {
        0 => 256,
        n => u32::from(n),
    };
    Ok(Command::Read {
        lba,
        blocks,
        fua: false,
        dpo: false,
    })
}

fn p_write6(c: &[u8]) -> Result<Command, Sense> {
    match p_read6(c)? {
        Command::Read {
            lba,
            blocks,
            fua,
            dpo,
        } => Ok(Command::Write {
            lba,
            blocks,
            fua,
            dpo,
        }),
        other => Ok(other),
    }
}

/// Common layout of READ/WRITE(10,12,16): flags in byte 1, LBA and length at the given
/// offsets.
fn rw_fields(
    c: &[u8],
    lba_at: usize,
    lba16: bool,
    len_at: usize,
    len16: bool,
) -> (u64, u32, bool, bool) {
    let lba = if lba16 {
        be64(c, lba_at)
    } else {
        u64::from(be32(c, lba_at))
    };
    let blocks = if len16 {
        u32::from(be16(c, len_at))
    } else {
        be32(c, len_at)
    };
    (lba, blocks, bit(c, 1, 3), bit(c, 1, 4))
}

fn read_like(c: &[u8], write: bool, f: (u64, u32, bool, bool)) -> Result<Command, Sense> {
    check_no_protect(c)?;
    let (lba, blocks, fua, dpo) = f;
    Ok(if write {
        Command::Write {
            lba,
            blocks,
            fua,
            dpo,
        }
    } else {
        Command::Read {
            lba,
            blocks,
            fua,
            dpo,
        }
    })
}

fn p_read10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    read_like(c, false, rw_fields(c, 2, false, 7, true))
}
fn p_write10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    read_like(c, true, rw_fields(c, 2, false, 7, true))
}
fn p_read12(c: &[u8]) -> Result<Command, Sense> {
    ctl12(c)?;
    read_like(c, false, rw_fields(c, 2, false, 6, false))
}
fn p_write12(c: &[u8]) -> Result<Command, Sense> {
    ctl12(c)?;
    read_like(c, true, rw_fields(c, 2, false, 6, false))
}
fn p_read16(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    read_like(c, false, rw_fields(c, 2, true, 10, false))
}
fn p_write16(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    read_like(c, true, rw_fields(c, 2, true, 10, false))
}

/// WRITE AND VERIFY: BYTCHK is bits 2:1 of byte 1 in SBC-4 (bit 1 in SBC-3); 10b and
/// 11b are reserved for this command (SBC-4 5.44, table 121).
fn wav(c: &[u8], f: (u64, u32, bool, bool)) -> Result<Command, Sense> {
    check_no_protect(c)?;
    let bytchk = (c[1] >> 1) & 0x03;
    if bytchk > 1 {
        return Err(invalid(1, Some(2)));
    }
    let (lba, blocks, _fua, dpo) = f;
    Ok(Command::WriteAndVerify {
        lba,
        blocks,
        bytchk,
        dpo,
    })
}
fn p_wav10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    wav(c, rw_fields(c, 2, false, 7, true))
}
fn p_wav12(c: &[u8]) -> Result<Command, Sense> {
    ctl12(c)?;
    wav(c, rw_fields(c, 2, false, 6, false))
}
fn p_wav16(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    wav(c, rw_fields(c, 2, true, 10, false))
}

/// VERIFY: BYTCHK bits 2:1; 10b is reserved (SBC-4 5.33, table 108).
fn verify(c: &[u8], f: (u64, u32, bool, bool)) -> Result<Command, Sense> {
    check_no_protect(c)?;
    let bytchk = (c[1] >> 1) & 0x03;
    if bytchk == 2 {
        return Err(invalid(1, Some(2)));
    }
    let (lba, blocks, _fua, dpo) = f;
    Ok(Command::Verify {
        lba,
        blocks,
        bytchk,
        dpo,
    })
}
fn p_verify10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    verify(c, rw_fields(c, 2, false, 7, true))
}
fn p_verify12(c: &[u8]) -> Result<Command, Sense> {
    ctl12(c)?;
    verify(c, rw_fields(c, 2, false, 6, false))
}
fn p_verify16(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    verify(c, rw_fields(c, 2, true, 10, false))
}

fn p_prefetch10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    Ok(Command::PreFetch {
        lba: u64::from(be32(c, 2)),
        blocks: u32::from(be16(c, 7)),
        immed: bit(c, 1, 1),
    })
}
fn p_prefetch16(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    Ok(Command::PreFetch {
        lba: be64(c, 2),
        blocks: be32(c, 10),
        immed: bit(c, 1, 1),
    })
}
fn p_sync10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    Ok(Command::SynchronizeCache {
        lba: u64::from(be32(c, 2)),
        blocks: u32::from(be16(c, 7)),
        immed: bit(c, 1, 1),
    })
}
fn p_sync16(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    Ok(Command::SynchronizeCache {
        lba: be64(c, 2),
        blocks: be32(c, 10),
        immed: bit(c, 1, 1),
    })
}

fn p_write_same10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    check_no_protect(c)?;
    // PBDATA (bit 2) and LBDATA (bit 1) are obsolete in SBC-4; we do not support them
    // (SBC-3 5.41: "If the device server does not support them … INVALID FIELD IN CDB").
    if c[1] & 0x06 != 0 {
        return Err(invalid(1, Some(if bit(c, 1, 2) { 2 } else { 1 })));
    }
    Ok(Command::WriteSame {
        sixteen: false,
        lba: u64::from(be32(c, 2)),
        blocks: u32::from(be16(c, 7)),
        unmap: bit(c, 1, 3),
        anchor: bit(c, 1, 4),
        ndob: false,
    })
}
fn p_write_same16(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    check_no_protect(c)?;
    if c[1] & 0x06 != 0 {
        return Err(invalid(1, Some(if bit(c, 1, 2) { 2 } else { 1 })));
    }
    Ok(Command::WriteSame {
        sixteen: true,
        lba: be64(c, 2),
        blocks: be32(c, 10),
        unmap: bit(c, 1, 3),
        anchor: bit(c, 1, 4),
        ndob: bit(c, 1, 0),
    })
}

fn p_unmap(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    Ok(Command::Unmap {
        anchor: bit(c, 1, 0),
        len: u32::from(be16(c, 7)),
    })
}

fn p_caw(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    check_no_protect(c)?;
    Ok(Command::CompareAndWrite {
        lba: be64(c, 2),
        blocks: c[13],
        fua: bit(c, 1, 3),
        dpo: bit(c, 1, 4),
    })
}

fn p_inquiry(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    // CMDDT (bit 1) is obsolete: SPC-4 6.6.1 says a device server that does not support
    // it shall terminate with INVALID FIELD IN CDB.
    if bit(c, 1, 1) {
        return Err(invalid(1, Some(1)));
    }
    let evpd = bit(c, 1, 0);
    if !evpd && c[2] != 0 {
        return Err(invalid(2, None));
    }
    Ok(Command::Inquiry {
        evpd,
        page: c[2],
        alloc: u32::from(be16(c, 3)),
    })
}

fn p_mode_sense6(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    Ok(Command::ModeSense {
        ten: false,
        dbd: bit(c, 1, 3),
        llbaa: false,
        pc: c[2] >> 6,
        page: c[2] & 0x3f,
        subpage: c[3],
        alloc: u32::from(c[4]),
    })
}
fn p_mode_sense10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    Ok(Command::ModeSense {
        ten: true,
        dbd: bit(c, 1, 3),
        llbaa: bit(c, 1, 4),
        pc: c[2] >> 6,
        page: c[2] & 0x3f,
        subpage: c[3],
        alloc: u32::from(be16(c, 7)),
    })
}
fn p_mode_select6(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    Ok(Command::ModeSelect {
        ten: false,
        pf: bit(c, 1, 4),
        sp: bit(c, 1, 0),
        len: u32::from(c[4]),
    })
}
fn p_mode_select10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    Ok(Command::ModeSelect {
        ten: true,
        pf: bit(c, 1, 4),
        sp: bit(c, 1, 0),
        len: u32::from(be16(c, 7)),
    })
}

fn p_reserve6(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    // Third-party and extent reservations (obsolete) are not supported.
    if c[1] & 0x1f != 0 {
        return Err(invalid(1, None));
    }
    Ok(Command::Reserve)
}
fn p_release6(c: &[u8]) -> Result<Command, Sense> {
    p_reserve6(c).map(|_| Command::Release)
}
fn p_reserve10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    if bit(c, 1, 4) {
        return Err(invalid(1, Some(4)));
    }
    if bit(c, 1, 1) {
        return Err(invalid(1, Some(1)));
    }
    Ok(Command::Reserve)
}
fn p_release10(c: &[u8]) -> Result<Command, Sense> {
    p_reserve10(c).map(|_| Command::Release)
}

fn p_start_stop(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    Ok(Command::StartStopUnit {
        immed: bit(c, 1, 0),
        power_condition: c[4] >> 4,
        loej: bit(c, 4, 1),
        start: bit(c, 4, 0),
    })
}

fn p_prevent_allow(c: &[u8]) -> Result<Command, Sense> {
    ctl6(c)?;
    Ok(Command::PreventAllowMediumRemoval { prevent: c[4] & 3 })
}

fn p_read_capacity10(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    // SBC-3 5.15: with PMI = 0 a non-zero LOGICAL BLOCK ADDRESS is an error. (SBC-4 made
    // both obsolete; we keep the check since no initiator sets them.)
    if !bit(c, 8, 0) && be32(c, 2) != 0 {
        return Err(invalid(2, None));
    }
    Ok(Command::ReadCapacity10)
}
fn p_read_capacity16(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    if !bit(c, 14, 0) && be64(c, 2) != 0 {
        return Err(invalid(2, None));
    }
    Ok(Command::ReadCapacity16 { alloc: be32(c, 10) })
}
fn p_get_lba_status(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    Ok(Command::GetLbaStatus {
        lba: be64(c, 2),
        alloc: be32(c, 10),
    })
}

fn p_report_luns(c: &[u8]) -> Result<Command, Sense> {
    ctl12(c)?;
    let select = c[2];
    if !matches!(select, 0x00..=0x02 | 0x10..=0x12) {
        return Err(invalid(2, None));
    }
    Ok(Command::ReportLuns {
        select,
        alloc: be32(c, 6),
    })
}

fn p_rtpg(c: &[u8]) -> Result<Command, Sense> {
    ctl12(c)?;
    let fmt = c[1] >> 5;
    if fmt > 1 {
        return Err(invalid(1, Some(7)));
    }
    Ok(Command::ReportTargetPortGroups {
        extended: fmt == 1,
        alloc: be32(c, 6),
    })
}

/// SET TARGET PORT GROUPS (SPC-4 6.36 table 264): bytes 2-5 reserved, PARAMETER LIST
/// LENGTH in bytes 6-9, byte 10 reserved.
fn p_stpg(c: &[u8]) -> Result<Command, Sense> {
    ctl12(c)?;
    Ok(Command::SetTargetPortGroups { len: be32(c, 6) })
}

fn p_rsoc(c: &[u8]) -> Result<Command, Sense> {
    ctl12(c)?;
    let options = c[2] & 0x07;
    if options > 3 {
        return Err(invalid(2, Some(2)));
    }
    Ok(Command::ReportSupportedOpcodes {
        rctd: bit(c, 2, 7),
        options,
        opcode: c[3],
        sa: be16(c, 4),
        alloc: be32(c, 6),
    })
}

fn p_rstmf(c: &[u8]) -> Result<Command, Sense> {
    ctl12(c)?;
    let alloc = be32(c, 6);
    // SPC-4 6.36: an ALLOCATION LENGTH below 4 is INVALID FIELD IN CDB.
    if alloc < 4 {
        return Err(invalid(6, None));
    }
    Ok(Command::ReportSupportedTmfs {
        repd: bit(c, 2, 7),
        alloc,
    })
}

fn p_prin(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    let action = match c[1] & 0x1f {
        0 => PrInAction::ReadKeys,
        1 => PrInAction::ReadReservation,
        2 => PrInAction::ReportCapabilities,
        3 => PrInAction::ReadFullStatus,
        _ => return Err(invalid(1, Some(4))),
    };
    Ok(Command::PersistentReserveIn {
        action,
        alloc: u32::from(be16(c, 7)),
    })
}

fn p_prout(c: &[u8]) -> Result<Command, Sense> {
    ctl10(c)?;
    let action = match c[1] & 0x1f {
        0 => PrOutAction::Register,
        1 => PrOutAction::Reserve,
        2 => PrOutAction::Release,
        3 => PrOutAction::Clear,
        4 => PrOutAction::Preempt,
        5 => PrOutAction::PreemptAndAbort,
        6 => PrOutAction::RegisterAndIgnore,
        7 => PrOutAction::RegisterAndMove,
        _ => return Err(invalid(1, Some(4))),
    };
    Ok(Command::PersistentReserveOut {
        action,
        scope: c[2] >> 4,
        pr_type: c[2] & 0x0f,
        len: be32(c, 5),
    })
}

fn p_xcopy(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    Ok(Command::ExtendedCopy { len: be32(c, 10) })
}

fn p_rcr(c: &[u8]) -> Result<Command, Sense> {
    ctl16(c)?;
    Ok(Command::ReceiveCopyResults {
        sa: c[1] & 0x1f,
        list_id: c[2],
        alloc: be32(c, 10),
    })
}

// ---------------------------------------------------------------------------
// The table.

macro_rules! ops {
    ($( $opcode:expr, $sa:expr, $name:literal, $timeout:literal, [$($u:literal),*], $parse:ident; )*) => {
        /// Every supported command, sorted by operation code then service action.
        pub static COMMANDS: &[OpInfo] = &[
            $( OpInfo {
                opcode: $opcode,
                service_action: $sa,
                name: $name,
                usage: &[$($u),*],
                timeout_secs: $timeout,
                parse: $parse,
            }, )*
        ];

        /// The operation codes of [`COMMANDS`], in its order (input of [`INDEX`]).
        const OPCODES: &[u8] = &[$($opcode),*];
    };
}

// CDB USAGE DATA (SPC-4 6.35.3): byte 0 is the opcode; for service action commands the
// service action bits are included. The control byte reports 07h: the device server
// evaluates NACA and the obsolete FLAG/LINK bits (and rejects them when set).
ops! {
    op::TEST_UNIT_READY, None, "TEST UNIT READY", 1, [0x00, 0x00, 0x00, 0x00, 0x00, 0x07], p_tur;
    op::REQUEST_SENSE, None, "REQUEST SENSE", 1, [0x03, 0x01, 0x00, 0x00, 0xff, 0x07], p_request_sense;
    op::FORMAT_UNIT, None, "FORMAT UNIT", 60, [0x04, 0xff, 0x00, 0x00, 0x00, 0x07], p_format_unit;
    op::READ_6, None, "READ(6)", 30, [0x08, 0x1f, 0xff, 0xff, 0xff, 0x07], p_read6;
    op::WRITE_6, None, "WRITE(6)", 30, [0x0a, 0x1f, 0xff, 0xff, 0xff, 0x07], p_write6;
    op::INQUIRY, None, "INQUIRY", 1, [0x12, 0x03, 0xff, 0xff, 0xff, 0x07], p_inquiry;
    op::MODE_SELECT_6, None, "MODE SELECT(6)", 1, [0x15, 0x11, 0x00, 0x00, 0xff, 0x07], p_mode_select6;
    op::RESERVE_6, None, "RESERVE(6)", 1, [0x16, 0x1f, 0x00, 0x00, 0x00, 0x07], p_reserve6;
    op::RELEASE_6, None, "RELEASE(6)", 1, [0x17, 0x1f, 0x00, 0x00, 0x00, 0x07], p_release6;
    op::MODE_SENSE_6, None, "MODE SENSE(6)", 1, [0x1a, 0x08, 0xff, 0xff, 0xff, 0x07], p_mode_sense6;
    op::START_STOP_UNIT, None, "START STOP UNIT", 10, [0x1b, 0x01, 0x00, 0x0f, 0xf7, 0x07], p_start_stop;
    op::PREVENT_ALLOW_MEDIUM_REMOVAL, None, "PREVENT ALLOW MEDIUM REMOVAL", 1, [0x1e, 0x00, 0x00, 0x00, 0x03, 0x07], p_prevent_allow;
    op::READ_CAPACITY_10, None, "READ CAPACITY(10)", 1, [0x25, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x01, 0x07], p_read_capacity10;
    op::READ_10, None, "READ(10)", 30, [0x28, 0xfe, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07], p_read10;
    op::WRITE_10, None, "WRITE(10)", 30, [0x2a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07], p_write10;
    op::WRITE_AND_VERIFY_10, None, "WRITE AND VERIFY(10)", 30, [0x2e, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07], p_wav10;
    op::VERIFY_10, None, "VERIFY(10)", 30, [0x2f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07], p_verify10;
    op::PRE_FETCH_10, None, "PRE-FETCH(10)", 30, [0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07], p_prefetch10;
    op::SYNCHRONIZE_CACHE_10, None, "SYNCHRONIZE CACHE(10)", 60, [0x35, 0x06, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07], p_sync10;
    op::WRITE_SAME_10, None, "WRITE SAME(10)", 60, [0x41, 0xfe, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07], p_write_same10;
    op::UNMAP, None, "UNMAP", 60, [0x42, 0x01, 0x00, 0x00, 0x00, 0x00, 0x3f, 0xff, 0xff, 0x07], p_unmap;
    op::MODE_SELECT_10, None, "MODE SELECT(10)", 1, [0x55, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x07], p_mode_select10;
    op::RESERVE_10, None, "RESERVE(10)", 1, [0x56, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07], p_reserve10;
    op::RELEASE_10, None, "RELEASE(10)", 1, [0x57, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07], p_release10;
    op::MODE_SENSE_10, None, "MODE SENSE(10)", 1, [0x5a, 0x18, 0xff, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0x07], p_mode_sense10;
    op::PERSISTENT_RESERVE_IN, Some(0x00), "PERSISTENT RESERVE IN(READ KEYS)", 1, [0x5e, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x07], p_prin;
    op::PERSISTENT_RESERVE_IN, Some(0x01), "PERSISTENT RESERVE IN(READ RESERVATION)", 1, [0x5e, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x07], p_prin;
    op::PERSISTENT_RESERVE_IN, Some(0x02), "PERSISTENT RESERVE IN(REPORT CAPABILITIES)", 1, [0x5e, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x07], p_prin;
    op::PERSISTENT_RESERVE_IN, Some(0x03), "PERSISTENT RESERVE IN(READ FULL STATUS)", 1, [0x5e, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x07], p_prin;
    op::PERSISTENT_RESERVE_OUT, Some(0x00), "PERSISTENT RESERVE OUT(REGISTER)", 1, [0x5f, 0x1f, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x07], p_prout;
    op::PERSISTENT_RESERVE_OUT, Some(0x01), "PERSISTENT RESERVE OUT(RESERVE)", 1, [0x5f, 0x1f, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x07], p_prout;
    op::PERSISTENT_RESERVE_OUT, Some(0x02), "PERSISTENT RESERVE OUT(RELEASE)", 1, [0x5f, 0x1f, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x07], p_prout;
    op::PERSISTENT_RESERVE_OUT, Some(0x03), "PERSISTENT RESERVE OUT(CLEAR)", 1, [0x5f, 0x1f, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x07], p_prout;
    op::PERSISTENT_RESERVE_OUT, Some(0x04), "PERSISTENT RESERVE OUT(PREEMPT)", 1, [0x5f, 0x1f, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x07], p_prout;
    op::PERSISTENT_RESERVE_OUT, Some(0x05), "PERSISTENT RESERVE OUT(PREEMPT AND ABORT)", 1, [0x5f, 0x1f, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x07], p_prout;
    op::PERSISTENT_RESERVE_OUT, Some(0x06), "PERSISTENT RESERVE OUT(REGISTER AND IGNORE EXISTING KEY)", 1, [0x5f, 0x1f, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x07], p_prout;
    op::PERSISTENT_RESERVE_OUT, Some(0x07), "PERSISTENT RESERVE OUT(REGISTER AND MOVE)", 1, [0x5f, 0x1f, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x07], p_prout;
    op::EXTENDED_COPY, Some(0x00), "EXTENDED COPY(LID1)", 600, [0x83, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_xcopy;
    op::RECEIVE_COPY_RESULTS, Some(0x00), "RECEIVE COPY RESULTS(COPY STATUS)", 1, [0x84, 0x1f, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_rcr;
    op::RECEIVE_COPY_RESULTS, Some(0x03), "RECEIVE COPY RESULTS(OPERATING PARAMETERS)", 1, [0x84, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_rcr;
    op::RECEIVE_COPY_RESULTS, Some(0x04), "RECEIVE COPY RESULTS(FAILED SEGMENT DETAILS)", 1, [0x84, 0x1f, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_rcr;
    op::READ_16, None, "READ(16)", 30, [0x88, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_read16;
    op::COMPARE_AND_WRITE, None, "COMPARE AND WRITE", 30, [0x89, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0xff, 0x3f, 0x07], p_caw;
    op::WRITE_16, None, "WRITE(16)", 30, [0x8a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_write16;
    op::WRITE_AND_VERIFY_16, None, "WRITE AND VERIFY(16)", 30, [0x8e, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_wav16;
    op::VERIFY_16, None, "VERIFY(16)", 30, [0x8f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_verify16;
    op::PRE_FETCH_16, None, "PRE-FETCH(16)", 30, [0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_prefetch16;
    op::SYNCHRONIZE_CACHE_16, None, "SYNCHRONIZE CACHE(16)", 60, [0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_sync16;
    op::WRITE_SAME_16, None, "WRITE SAME(16)", 60, [0x93, 0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_write_same16;
    op::SERVICE_ACTION_IN_16, Some(op::SAI_READ_CAPACITY_16), "READ CAPACITY(16)", 1, [0x9e, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x07], p_read_capacity16;
    op::SERVICE_ACTION_IN_16, Some(op::SAI_GET_LBA_STATUS), "GET LBA STATUS", 10, [0x9e, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_get_lba_status;
    op::REPORT_LUNS, None, "REPORT LUNS", 1, [0xa0, 0x00, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_report_luns;
    op::MAINTENANCE_IN, Some(op::MI_REPORT_TARGET_PORT_GROUPS), "REPORT TARGET PORT GROUPS", 1, [0xa3, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_rtpg;
    op::MAINTENANCE_IN, Some(op::MI_REPORT_SUPPORTED_OPCODES), "REPORT SUPPORTED OPERATION CODES", 1, [0xa3, 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_rsoc;
    op::MAINTENANCE_IN, Some(op::MI_REPORT_SUPPORTED_TMFS), "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", 1, [0xa3, 0x1f, 0x80, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_rstmf;
    op::MAINTENANCE_OUT, Some(op::MO_SET_TARGET_PORT_GROUPS), "SET TARGET PORT GROUPS", 10, [0xa4, 0x0a, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07], p_stpg;
    op::READ_12, None, "READ(12)", 30, [0xa8, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_read12;
    op::WRITE_12, None, "WRITE(12)", 30, [0xaa, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_write12;
    op::WRITE_AND_VERIFY_12, None, "WRITE AND VERIFY(12)", 30, [0xae, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_wav12;
    op::VERIFY_12, None, "VERIFY(12)", 30, [0xaf, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07], p_verify12;
}

/// Whether `opcode` has a service action field (byte 1 bits 4:0) in our table.
pub fn has_service_action(opcode: u8) -> bool {
    entries(opcode).iter().any(|o| o.service_action.is_some())
}

/// Where each operation code's entries lie in [`COMMANDS`], `(first, count)`, built at
/// compile time. Every command is looked up twice (for its transfer length and to execute
/// it); a binary search of the table cost ≈ 110 instructions per lookup, an index read
/// costs a handful (callgrind, bench/README.md).
static INDEX: [(u8, u8); 256] = opcode_index(OPCODES);

/// Builds [`INDEX`]; fails the build if the table is longer than a `u8` can index or an
/// operation code's entries are not contiguous.
const fn opcode_index(opcodes: &[u8]) -> [(u8, u8); 256] {
    assert!(
        opcodes.len() <= u8::MAX as usize,
        "COMMANDS outgrew the u8 index"
    );
    let mut index = [(0u8, 0u8); 256];
    let mut i = 0;
    while i < opcodes.len() {
        let op = opcodes[i] as usize;
        if index[op].1 == 0 {
            index[op].0 = i as u8;
        } else {
            assert!(
                index[op].0 as usize + index[op].1 as usize == i,
                "COMMANDS must list an operation code's entries together"
            );
        }
        index[op].1 += 1;
        i += 1;
    }
    index
}

/// The table entries of `opcode`, in service action order.
fn entries(opcode: u8) -> &'static [OpInfo] {
    let (first, count) = INDEX[usize::from(opcode)];
    let first = usize::from(first);
    COMMANDS
        .get(first..first + usize::from(count))
        .unwrap_or_default()
}

/// Service action of a CDB whose opcode uses one (byte 1 bits 4:0).
fn service_action_of(cdb: &[u8]) -> Option<u16> {
    cdb.get(1).map(|b| u16::from(b & 0x1f))
}

/// Finds the table entry for a CDB. Errors: empty CDB or unknown opcode → INVALID COMMAND
/// OPERATION CODE; unknown service action of a known opcode → INVALID FIELD IN CDB
/// pointing at the SERVICE ACTION field (byte 1, bit 4) (SPC-4 4.5.2.4.2, and libiscsi
/// accepts this form for two-byte opcodes).
pub fn lookup(cdb: &[u8]) -> Result<&'static OpInfo, Sense> {
    let &opcode = cdb.first().ok_or_else(Sense::invalid_opcode)?;
    let ops = entries(opcode);
    if ops.iter().any(|o| o.service_action.is_some()) {
        let sa = service_action_of(cdb).ok_or_else(|| invalid(1, None))?;
        ops.iter()
            .find(|o| o.service_action == Some(sa))
            .ok_or(invalid(1, Some(4)))
    } else {
        ops.first().ok_or_else(Sense::invalid_opcode)
    }
}

/// Finds a table entry by opcode and service action (REPORT SUPPORTED OPERATION CODES).
pub fn find(opcode: u8, sa: Option<u16>) -> Option<&'static OpInfo> {
    entries(opcode).iter().find(|o| o.service_action == sa)
}

/// Parses a CDB. The slice may be longer than the command's CDB (transports pad); a
/// shorter one is rejected with INVALID FIELD IN CDB pointing past its end.
pub fn parse(cdb: &[u8]) -> Result<Command, Sense> {
    let info = lookup(cdb)?;
    parse_with(info, cdb)
}

/// Parses a CDB already looked up.
pub(crate) fn parse_with(info: &OpInfo, cdb: &[u8]) -> Result<Command, Sense> {
    if cdb.len() < info.cdb_len() {
        return Err(invalid(cdb.len(), None));
    }
    (info.parse)(&cdb[..info.cdb_len()])
}

impl Command {
    /// Number of data-out bytes this command expects (SAM-5 / SBC-4 transfer lengths).
    pub fn data_out_len(&self, block_size: u32) -> u64 {
        let bs = u64::from(block_size);
        match *self {
            Command::Write { blocks, .. } | Command::WriteAndVerify { blocks, .. } => {
                u64::from(blocks) * bs
            }
            Command::Verify { blocks, bytchk, .. } => match bytchk {
                1 => u64::from(blocks) * bs,
                3 if blocks > 0 => bs,
                _ => 0,
            },
            Command::WriteSame { ndob, .. } => {
                if ndob {
                    0
                } else {
                    bs
                }
            }
            Command::CompareAndWrite { blocks, .. } => 2 * u64::from(blocks) * bs,
            Command::ModeSelect { len, .. }
            | Command::Unmap { len, .. }
            | Command::PersistentReserveOut { len, .. }
            | Command::SetTargetPortGroups { len }
            | Command::ExtendedCopy { len } => u64::from(len),
            // FORMAT UNIT's parameter list length is in the header; transports send
            // what the initiator gives.
            _ => 0,
        }
    }

    /// Whether this command changes the medium (used for write-protect checks).
    pub fn writes_medium(&self) -> bool {
        matches!(
            self,
            Command::Write { .. }
                | Command::WriteAndVerify { .. }
                | Command::WriteSame { .. }
                | Command::Unmap { .. }
                | Command::CompareAndWrite { .. }
                | Command::FormatUnit { .. }
                | Command::ExtendedCopy { .. }
        )
    }
}

// ---------------------------------------------------------------------------
// What a command needs of its transport.

/// Which way a command's data moves (SAM-5 5.1: data-in is sent by the device server,
/// data-out received by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// No data (or a CDB this engine cannot parse).
    None,
    /// Data-in only.
    In,
    /// Data-out only.
    Out,
    /// Both (no command of this engine; kept for transports that carry them).
    Bidi,
}

/// What a command counts as in a transport's I/O statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// READ(6/10/12/16) (SBC-4 5.13-5.16).
    Read,
    /// WRITE(6/10/12/16) and WRITE AND VERIFY(10/12/16) (SBC-4 5.40-5.46).
    Write,
    /// Everything else.
    Other,
}

/// Where a write's TRANSFER LENGTH field is (SBC-4 5.40-5.46 CDB tables), for
/// [`Transfer::truncated_cdb`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LengthField {
    /// WRITE(6): byte 4, where 0 means 256 blocks (SBC-4 5.40).
    Byte4Of6,
    /// WRITE(10), WRITE AND VERIFY(10): bytes 7-8.
    Be16At7Of10,
    /// WRITE(12), WRITE AND VERIFY(12): bytes 6-9.
    Be32At6Of12,
    /// WRITE(16), WRITE AND VERIFY(16): bytes 10-13.
    Be32At10Of16,
}

impl LengthField {
    fn of(opcode: u8) -> Option<LengthField> {
        match opcode {
            op::WRITE_6 => Some(LengthField::Byte4Of6),
            op::WRITE_10 | op::WRITE_AND_VERIFY_10 => Some(LengthField::Be16At7Of10),
            op::WRITE_12 | op::WRITE_AND_VERIFY_12 => Some(LengthField::Be32At6Of12),
            op::WRITE_16 | op::WRITE_AND_VERIFY_16 => Some(LengthField::Be32At10Of16),
            _ => None,
        }
    }

    /// The CDB length the field belongs to.
    fn cdb_len(self) -> usize {
        match self {
            LengthField::Byte4Of6 => 6,
            LengthField::Be16At7Of10 => 10,
            LengthField::Be32At6Of12 => 12,
            LengthField::Be32At10Of16 => 16,
        }
    }
}

/// A write CDB cut to fewer blocks ([`Transfer::truncated_cdb`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truncation {
    /// Zero blocks are left: nothing to write (the command completes without the device
    /// server; WRITE(6) could not say it anyway, its 0 means 256 blocks).
    Nothing,
    /// The CDB with its TRANSFER LENGTH rewritten.
    Cdb(Vec<u8>),
    /// Not a WRITE / WRITE AND VERIFY, or the count does not fit the field: the device
    /// server gets the CDB as it came and judges the short data-out itself.
    NotTruncatable,
}

/// What a command needs of its transport, as the engine sees it: where the data goes,
/// how many data-out bytes the CDB transfers, whether the device server must see all of
/// the data-out the initiator announced, and what the command counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Which way data moves.
    pub direction: Direction,
    /// Data-out bytes the CDB transfers (SBC-4 TRANSFER LENGTH times the block size,
    /// parameter list lengths); `None` when the CDB does not parse or the count does
    /// not fit 32 bits.
    pub data_out_len: Option<u32>,
    /// The device server must see every data-out byte the initiator announced, not
    /// only [`Transfer::data_out_len`]: COMPARE AND WRITE rejects a buffer whose length
    /// does not match its two halves (SBC-4 5.3).
    pub whole_data_out: bool,
    /// Statistics class (by operation code, valid CDB or not).
    pub class: IoClass,
    /// Logical block size the lengths are counted in.
    pub block_size: u32,
    field: Option<LengthField>,
}

/// What `cdb` needs of its transport on a unit of `block_size`-byte blocks.
pub fn transfer(cdb: &[u8], block_size: u32) -> Transfer {
    let opcode = cdb.first().copied();
    let class = match opcode {
        Some(op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16) => IoClass::Read,
        Some(o) if LengthField::of(o).is_some() => IoClass::Write,
        _ => IoClass::Other,
    };
    let parsed = parse(cdb).ok();
    let out = parsed.map(|c| c.data_out_len(block_size));
    Transfer {
        direction: match (
            parsed.is_some_and(|c| c.has_data_in()),
            out.unwrap_or(0) > 0,
        ) {
            (true, true) => Direction::Bidi,
            (true, false) => Direction::In,
            (false, true) => Direction::Out,
            (false, false) => Direction::None,
        },
        data_out_len: out.and_then(|n| u32::try_from(n).ok()),
        whole_data_out: opcode == Some(op::COMPARE_AND_WRITE),
        class,
        block_size,
        field: opcode.and_then(LengthField::of),
    }
}

impl Transfer {
    /// `cdb` (the one this was made from) with its TRANSFER LENGTH set to `blocks`, for
    /// a transport that must not transfer more than the initiator expects (RFC 7143
    /// 11.4.5.1 after FCP-4 9.4.2: data beyond the expected length is not transferred).
    pub fn truncated_cdb(&self, cdb: &[u8], blocks: u32) -> Truncation {
        let Some(field) = self.field.filter(|f| cdb.len() >= f.cdb_len()) else {
            return Truncation::NotTruncatable;
        };
        if blocks == 0 {
            return Truncation::Nothing;
        }
        let mut c = cdb.to_vec();
        let fits = match field {
            LengthField::Byte4Of6 => u8::try_from(blocks).map(|b| c[4] = b).is_ok(),
            LengthField::Be16At7Of10 => u16::try_from(blocks)
                .map(|b| c[7..9].copy_from_slice(&b.to_be_bytes()))
                .is_ok(),
            LengthField::Be32At6Of12 => {
                c[6..10].copy_from_slice(&blocks.to_be_bytes());
                true
            }
            LengthField::Be32At10Of16 => {
                c[10..14].copy_from_slice(&blocks.to_be_bytes());
                true
            }
        };
        if fits {
            Truncation::Cdb(c)
        } else {
            Truncation::NotTruncatable
        }
    }
}

impl Command {
    /// Whether the device server returns data-in for this command.
    fn has_data_in(&self) -> bool {
        matches!(
            self,
            Command::Read { .. }
                | Command::RequestSense { .. }
                | Command::Inquiry { .. }
                | Command::ModeSense { .. }
                | Command::ReadCapacity10
                | Command::ReadCapacity16 { .. }
                | Command::GetLbaStatus { .. }
                | Command::ReportLuns { .. }
                | Command::ReportSupportedOpcodes { .. }
                | Command::ReportSupportedTmfs { .. }
                | Command::ReportTargetPortGroups { .. }
                | Command::PersistentReserveIn { .. }
                | Command::ReceiveCopyResults { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sense::{FieldPointer, SenseKey};

    /// A CDB of `len` bytes with `opcode` and the given bytes set.
    fn cdb_with(opcode: u8, len: usize, set: &[(usize, u8)]) -> Vec<u8> {
        let mut c = vec![0u8; len];
        c[0] = opcode;
        for &(i, b) in set {
            c[i] = b;
        }
        c
    }

    #[test]
    fn transfer_classes_follow_sbc4_opcodes() {
        // READ(6/10/12/16): SBC-4 5.13-5.16.
        for (o, len) in [(0x08, 6), (0x28, 10), (0xa8, 12), (0x88, 16)] {
            let t = transfer(&cdb_with(o, len, &[]), 512);
            assert_eq!(t.class, IoClass::Read, "{o:#x}");
            assert_eq!(t.direction, Direction::In, "{o:#x}");
            assert_eq!(t.data_out_len, Some(0));
        }
        // WRITE(6/10/12/16) and WRITE AND VERIFY(10/12/16).
        for o in [0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e] {
            assert_eq!(transfer(&[o; 16], 512).class, IoClass::Write, "{o:#x}");
        }
        // COMPARE AND WRITE and WRITE SAME are neither; the class does not need a valid
        // CDB (an unparseable READ(10) still counts as a read).
        assert_eq!(
            transfer(&cdb_with(0x89, 16, &[]), 512).class,
            IoClass::Other
        );
        assert_eq!(
            transfer(&cdb_with(0x41, 10, &[]), 512).class,
            IoClass::Other
        );
        let bad_read = transfer(&[0x28, 0, 0], 512);
        assert_eq!(bad_read.class, IoClass::Read);
        assert_eq!(bad_read.data_out_len, None);
        assert_eq!(bad_read.direction, Direction::None);
        assert_eq!(transfer(&[], 512).class, IoClass::Other);
        // TEST UNIT READY moves nothing; INQUIRY is data-in.
        assert_eq!(transfer(&[0; 6], 512).direction, Direction::None);
        assert_eq!(
            transfer(&cdb_with(0x12, 6, &[(4, 36)]), 512).direction,
            Direction::In
        );
    }

    #[test]
    fn transfer_lengths_in_blocks_of_the_unit() {
        // WRITE(10) of 4 blocks (TRANSFER LENGTH bytes 7-8, SBC-4 5.41).
        let w10 = cdb_with(0x2a, 10, &[(8, 4)]);
        let t = transfer(&w10, 4096);
        assert_eq!(
            (t.direction, t.data_out_len, t.whole_data_out, t.block_size),
            (Direction::Out, Some(16384), false, 4096)
        );
        // WRITE(6) TRANSFER LENGTH 0 means 256 blocks (SBC-4 5.40).
        assert_eq!(
            transfer(&cdb_with(0x0a, 6, &[]), 512).data_out_len,
            Some(256 * 512)
        );
        // COMPARE AND WRITE of 1 block: both halves, and the device server sees all of
        // EDTL (SBC-4 5.3: NUMBER OF LOGICAL BLOCKS byte 13).
        let caw = transfer(&cdb_with(0x89, 16, &[(13, 1)]), 512);
        assert_eq!((caw.data_out_len, caw.whole_data_out), (Some(1024), true));
        assert_eq!(caw.direction, Direction::Out);
        // An invalid COMPARE AND WRITE still needs its whole data-out.
        assert!(transfer(&[0x89, 0xff], 512).whole_data_out);
        // WRITE(16) of 2^32-1 blocks of 4096 bytes does not fit 32 bits.
        let huge = cdb_with(0x8a, 16, &[(10, 0xff), (11, 0xff), (12, 0xff), (13, 0xff)]);
        assert_eq!(transfer(&huge, 4096).data_out_len, None);
    }

    #[test]
    fn truncated_cdb_rewrites_the_sbc4_transfer_length_fields() {
        // (opcode, CDB length, first byte of TRANSFER LENGTH, field width): SBC-4
        // WRITE(10) 5.41, WRITE(12) 5.42, WRITE(16) 5.43, WRITE AND VERIFY(10/12/16)
        // 5.44-5.46.
        for (o, len, at, width) in [
            (0x2a, 10, 7, 2),
            (0x2e, 10, 7, 2),
            (0xaa, 12, 6, 4),
            (0xae, 12, 6, 4),
            (0x8a, 16, 10, 4),
            (0x8e, 16, 10, 4),
        ] {
            let c = cdb_with(o, len, &[(at + width - 1, 8)]);
            let t = transfer(&c, 512);
            let Truncation::Cdb(cut) = t.truncated_cdb(&c, 3) else {
                panic!("{o:#x} not truncated");
            };
            assert_eq!(cut[at + width - 1], 3, "{o:#x}");
            assert_eq!(cut.len(), len);
            assert_eq!(&cut[..at], &c[..at], "{o:#x}: bytes before the field");
            assert_eq!(
                &cut[at + width..],
                &c[at + width..],
                "{o:#x}: bytes after it"
            );
            assert_eq!(t.truncated_cdb(&c, 0), Truncation::Nothing, "{o:#x}");
        }
        // WRITE(10)'s 16-bit field cannot say 65536 blocks.
        let w10 = cdb_with(0x2a, 10, &[]);
        assert_eq!(
            transfer(&w10, 512).truncated_cdb(&w10, 65536),
            Truncation::NotTruncatable
        );
        // WRITE(6): byte 4; zero blocks cannot be written as 0 (that is 256).
        let w6 = cdb_with(0x0a, 6, &[(4, 8)]);
        let t6 = transfer(&w6, 512);
        assert_eq!(
            t6.truncated_cdb(&w6, 5),
            Truncation::Cdb(cdb_with(0x0a, 6, &[(4, 5)]))
        );
        assert_eq!(t6.truncated_cdb(&w6, 0), Truncation::Nothing);
        assert_eq!(t6.truncated_cdb(&w6, 256), Truncation::NotTruncatable);
        // COMPARE AND WRITE, READ and a short CDB are not cut.
        for c in [
            cdb_with(0x89, 16, &[(13, 1)]),
            cdb_with(0x28, 10, &[]),
            vec![0x2a; 9],
        ] {
            assert_eq!(
                transfer(&c, 512).truncated_cdb(&c, 1),
                Truncation::NotTruncatable
            );
            assert_eq!(
                transfer(&c, 512).truncated_cdb(&c, 0),
                Truncation::NotTruncatable
            );
        }
    }

    #[test]
    fn lookup_finds_what_a_scan_of_the_table_finds() {
        // The index relies on each opcode's entries being together (a build-time check)
        // and in service action order (checked below); against a linear scan, for every
        // opcode and every 5-bit service action.
        for opcode in 0..=u8::MAX {
            let scan_sa = COMMANDS
                .iter()
                .any(|o| o.opcode == opcode && o.service_action.is_some());
            assert_eq!(has_service_action(opcode), scan_sa, "{opcode:#04x}");
            for sa in 0..32u8 {
                let mut cdb = [0u8; 16];
                cdb[0] = opcode;
                cdb[1] = sa | 0xe0;
                let scan = COMMANDS.iter().find(|o| {
                    o.opcode == opcode && (!scan_sa || o.service_action == Some(u16::from(sa)))
                });
                match (lookup(&cdb), scan) {
                    (Ok(a), Some(b)) => assert!(std::ptr::eq(a, b), "{opcode:#04x}/{sa}"),
                    (Err(e), None) => {
                        let want = if scan_sa {
                            invalid(1, Some(4))
                        } else {
                            Sense::invalid_opcode()
                        };
                        assert_eq!(e, want, "{opcode:#04x}/{sa}");
                    }
                    (a, b) => panic!(
                        "{opcode:#04x}/{sa}: lookup {a:?}, scan {:?}",
                        b.map(|o| o.name)
                    ),
                }
                let sa = scan_sa.then_some(u16::from(sa));
                let found = COMMANDS
                    .iter()
                    .find(|o| o.opcode == opcode && o.service_action == sa);
                assert_eq!(find(opcode, sa).map(|o| o.name), found.map(|o| o.name));
            }
        }
    }

    #[test]
    fn table_is_sorted_and_unique_and_usage_starts_with_opcode() {
        for w in COMMANDS.windows(2) {
            let a = (w[0].opcode, w[0].service_action);
            let b = (w[1].opcode, w[1].service_action);
            assert!(a < b, "{a:?} !< {b:?}");
        }
        for o in COMMANDS {
            assert_eq!(o.usage[0], o.opcode, "{}", o.name);
            // CDB length follows the group code (SPC-4 4.2.5.1).
            let expect = match o.opcode >> 5 {
                0 => 6,
                1 | 2 => 10,
                4 => 16,
                5 => 12,
                _ => 0,
            };
            assert_eq!(o.cdb_len(), expect, "{}", o.name);
        }
    }

    #[test]
    fn read10_fields() {
        let c = [0x28, 0x18, 0x01, 0x02, 0x03, 0x04, 0, 0x00, 0x10, 0];
        assert_eq!(
            parse(&c),
            Ok(Command::Read {
                lba: 0x0102_0304,
                blocks: 16,
                fua: true,
                dpo: true
            })
        );
    }

    #[test]
    fn read6_zero_means_256_and_lba_is_21_bits() {
        let c = [0x08, 0xff, 0xff, 0xff, 0, 0];
        assert_eq!(
            parse(&c),
            Ok(Command::Read {
                lba: 0x1f_ffff,
                blocks: 256,
                fua: false,
                dpo: false
            })
        );
    }

    #[test]
    fn rdprotect_is_rejected_with_pointer() {
        let c = [0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0];
        let s = parse(&c).unwrap_err();
        assert_eq!((s.key, s.asc, s.ascq), (SenseKey::IllegalRequest, 0x24, 0));
        assert_eq!(
            s.field_pointer,
            Some(FieldPointer {
                cdb_or_data: true,
                byte: 1,
                bit: Some(7)
            })
        );
    }

    #[test]
    fn unknown_opcode_points_at_byte_0() {
        let s = parse(&[0xff, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!((s.asc, s.ascq), (0x20, 0x00));
        assert_eq!(s.field_pointer.unwrap().byte, 0);
        assert_eq!(parse(&[]).unwrap_err().asc, 0x20);
    }

    #[test]
    fn unknown_service_action_is_invalid_field_byte_1() {
        let s = parse(&[0x9e, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!((s.asc, s.ascq), (0x24, 0x00));
        assert_eq!(s.field_pointer.unwrap().byte, 1);
    }

    #[test]
    fn short_cdb_is_rejected() {
        let s = parse(&[0x28, 0, 0]).unwrap_err();
        assert_eq!((s.asc, s.ascq), (0x24, 0x00));
        assert_eq!(s.field_pointer.unwrap().byte, 3);
    }

    #[test]
    fn naca_and_link_are_rejected() {
        let s = parse(&[0x00, 0, 0, 0, 0, 0x04]).unwrap_err();
        assert_eq!(
            s.field_pointer.unwrap(),
            FieldPointer {
                cdb_or_data: true,
                byte: 5,
                bit: Some(2)
            }
        );
        let s = parse(&[0x00, 0, 0, 0, 0, 0x01]).unwrap_err();
        assert_eq!(s.field_pointer.unwrap().bit, Some(0));
        // Vendor specific bits are ignored.
        assert_eq!(parse(&[0x00, 0, 0, 0, 0, 0xc0]), Ok(Command::TestUnitReady));
    }

    #[test]
    fn inquiry_page_without_evpd_is_invalid() {
        let s = parse(&[0x12, 0, 0x80, 0, 0xff, 0]).unwrap_err();
        assert_eq!(s.field_pointer.unwrap().byte, 2);
        let s = parse(&[0x12, 0x02, 0, 0, 0xff, 0]).unwrap_err();
        assert_eq!(s.field_pointer.unwrap().bit, Some(1));
    }

    #[test]
    fn verify_bytchk_10b_is_reserved() {
        let s = parse(&[0x2f, 0x04, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap_err();
        assert_eq!((s.asc, s.field_pointer.unwrap().byte), (0x24, 1));
        assert_eq!(
            parse(&[0x2f, 0x06, 0, 0, 0, 0, 0, 0, 1, 0]),
            Ok(Command::Verify {
                lba: 0,
                blocks: 1,
                bytchk: 3,
                dpo: false
            })
        );
    }

    #[test]
    fn data_out_lengths() {
        let w = parse(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 4, 0]).unwrap();
        assert_eq!(w.data_out_len(512), 2048);
        let caw = parse(&[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0]).unwrap();
        assert_eq!(caw.data_out_len(4096), 16384);
        let ws = parse(&[0x93, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]).unwrap();
        assert_eq!(ws.data_out_len(512), 0);
    }
}
