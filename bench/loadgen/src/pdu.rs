//! The few iSCSI PDUs an initiator needs (RFC 7143 section 11), encoded and decoded by
//! hand. Only what the load generator sends or must understand is modelled; everything
//! else is surfaced as [`Incoming::Other`].

use std::fmt;

/// Length of the Basic Header Segment (RFC 7143 11.2.1).
pub const BHS_LEN: usize = 48;
/// "No tag" value of ITT/TTT fields (RFC 7143 11.2.1.8).
pub const RESERVED_TAG: u32 = 0xffff_ffff;
/// Largest data segment a PDU can carry (24-bit DataSegmentLength).
pub const MAX_DSL: usize = (1 << 24) - 1;

/// Initiator opcodes (RFC 7143 11.2.1.2).
pub mod op {
    /// NOP-Out.
    pub const NOP_OUT: u8 = 0x00;
    /// SCSI Command.
    pub const SCSI_CMD: u8 = 0x01;
    /// Login Request.
    pub const LOGIN_REQ: u8 = 0x03;
    /// SCSI Data-Out.
    pub const DATA_OUT: u8 = 0x05;
    /// Logout Request.
    pub const LOGOUT_REQ: u8 = 0x06;
    /// NOP-In.
    pub const NOP_IN: u8 = 0x20;
    /// SCSI Response.
    pub const SCSI_RESP: u8 = 0x21;
    /// Login Response.
    pub const LOGIN_RESP: u8 = 0x23;
    /// SCSI Data-In.
    pub const DATA_IN: u8 = 0x25;
    /// Logout Response.
    pub const LOGOUT_RESP: u8 = 0x26;
    /// Ready To Transfer.
    pub const R2T: u8 = 0x31;
    /// Asynchronous Message.
    pub const ASYNC: u8 = 0x32;
    /// Reject.
    pub const REJECT: u8 = 0x3f;
}

/// Immediate-delivery bit of byte 0 (RFC 7143 11.2.1.1).
const I_BIT: u8 = 0x40;
/// Final bit of byte 1.
const F_BIT: u8 = 0x80;

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn get_u32(b: &[u8; BHS_LEN], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// DataSegmentLength of a BHS (bytes 5..8, RFC 7143 11.2.1.5).
pub fn data_segment_len(b: &[u8; BHS_LEN]) -> usize {
    (usize::from(b[5]) << 16) | (usize::from(b[6]) << 8) | usize::from(b[7])
}

/// TotalAHSLength in bytes (byte 4 counts 4-byte words, RFC 7143 11.2.1.4).
pub fn ahs_len(b: &[u8; BHS_LEN]) -> usize {
    usize::from(b[4]) * 4
}

/// Bytes of padding after a data segment of `len` bytes (RFC 7143 11.1).
pub fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn set_dsl(b: &mut [u8; BHS_LEN], len: usize) {
    debug_assert!(len <= MAX_DSL);
    b[5] = (len >> 16) as u8;
    b[6] = (len >> 8) as u8;
    b[7] = len as u8;
}

/// 8-byte LUN field for `lun` (SAM-5 4.7: peripheral addressing below 256, flat space
/// addressing up to 16383).
pub fn encode_lun(lun: u16) -> [u8; 8] {
    let mut l = [0u8; 8];
    if lun < 256 {
        l[1] = lun as u8;
    } else {
        l[0] = 0x40 | ((lun >> 8) as u8 & 0x3f);
        l[1] = lun as u8;
    }
    l
}

/// `a < b` in 32-bit serial number arithmetic (RFC 1982, as RFC 7143 4.2.2.1 requires).
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < (1 << 31)
}

/// `a <= b` in serial number arithmetic.
pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

/// Login Request BHS (RFC 7143 11.12).
#[derive(Debug, Clone, Copy)]
pub struct LoginReq {
    /// Transit bit.
    pub transit: bool,
    /// Current stage (0 security, 1 operational).
    pub csg: u8,
    /// Next stage (valid with `transit`).
    pub nsg: u8,
    /// Initiator Session ID.
    pub isid: [u8; 6],
    /// Target Session Identifying Handle (0 for a new session).
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

impl LoginReq {
    /// The 48-byte BHS for a text segment of `dsl` bytes.
    pub fn encode(&self, dsl: usize) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        b[0] = I_BIT | op::LOGIN_REQ;
        b[1] = (if self.transit { F_BIT } else { 0 }) | ((self.csg & 3) << 2) | (self.nsg & 3);
        set_dsl(&mut b, dsl);
        b[8..14].copy_from_slice(&self.isid);
        b[14..16].copy_from_slice(&self.tsih.to_be_bytes());
        put_u32(&mut b, 16, self.itt);
        b[20..22].copy_from_slice(&self.cid.to_be_bytes());
        put_u32(&mut b, 24, self.cmd_sn);
        put_u32(&mut b, 28, self.exp_stat_sn);
        b
    }
}

/// SCSI Command BHS (RFC 7143 11.3) with a simple task attribute.
#[derive(Debug, Clone, Copy)]
pub struct ScsiCmd {
    /// Final bit: no unsolicited Data-Out PDUs follow.
    pub final_: bool,
    /// Data flows target → initiator.
    pub read: bool,
    /// Data flows initiator → target.
    pub write: bool,
    /// Immediate data bytes carried by this PDU.
    pub dsl: usize,
    /// Encoded LUN.
    pub lun: [u8; 8],
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length.
    pub edtl: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// CDB (padded to 16 bytes).
    pub cdb: [u8; 16],
}

impl ScsiCmd {
    /// The 48-byte BHS.
    pub fn encode(&self) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        b[0] = op::SCSI_CMD;
        // ATTR 1 = Simple (RFC 7143 11.3.1).
        b[1] = (if self.final_ { F_BIT } else { 0 })
            | (if self.read { 0x40 } else { 0 })
            | (if self.write { 0x20 } else { 0 })
            | 1;
        set_dsl(&mut b, self.dsl);
        b[8..16].copy_from_slice(&self.lun);
        put_u32(&mut b, 16, self.itt);
        put_u32(&mut b, 20, self.edtl);
        put_u32(&mut b, 24, self.cmd_sn);
        put_u32(&mut b, 28, self.exp_stat_sn);
        b[32..48].copy_from_slice(&self.cdb);
        b
    }
}

/// SCSI Data-Out BHS (RFC 7143 11.7).
#[derive(Debug, Clone, Copy)]
pub struct DataOut {
    /// Last PDU of the sequence.
    pub final_: bool,
    /// Bytes carried.
    pub dsl: usize,
    /// Encoded LUN.
    pub lun: [u8; 8],
    /// Initiator Task Tag of the command.
    pub itt: u32,
    /// Target Transfer Tag from the R2T ([`RESERVED_TAG`] for unsolicited data).
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSN within the sequence.
    pub data_sn: u32,
    /// Offset of the payload in the command's buffer.
    pub offset: u32,
}

impl DataOut {
    /// The 48-byte BHS.
    pub fn encode(&self) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        b[0] = op::DATA_OUT;
        b[1] = if self.final_ { F_BIT } else { 0 };
        set_dsl(&mut b, self.dsl);
        b[8..16].copy_from_slice(&self.lun);
        put_u32(&mut b, 16, self.itt);
        put_u32(&mut b, 20, self.ttt);
        put_u32(&mut b, 28, self.exp_stat_sn);
        put_u32(&mut b, 36, self.data_sn);
        put_u32(&mut b, 40, self.offset);
        b
    }
}

/// NOP-Out answering a target's ping (RFC 7143 11.18: ITT reserved, TTT and LUN echoed,
/// immediate, CmdSN not advanced).
pub fn nop_out_reply(lun: [u8; 8], ttt: u32, cmd_sn: u32, exp_stat_sn: u32) -> [u8; BHS_LEN] {
    let mut b = [0u8; BHS_LEN];
    b[0] = I_BIT | op::NOP_OUT;
    b[1] = F_BIT;
    b[8..16].copy_from_slice(&lun);
    put_u32(&mut b, 16, RESERVED_TAG);
    put_u32(&mut b, 20, ttt);
    put_u32(&mut b, 24, cmd_sn);
    put_u32(&mut b, 28, exp_stat_sn);
    b
}

/// Logout Request closing the session (RFC 7143 11.14, reason code 0), immediate.
pub fn logout_req(itt: u32, cid: u16, cmd_sn: u32, exp_stat_sn: u32) -> [u8; BHS_LEN] {
    let mut b = [0u8; BHS_LEN];
    b[0] = I_BIT | op::LOGOUT_REQ;
    b[1] = F_BIT;
    put_u32(&mut b, 16, itt);
    b[20..22].copy_from_slice(&cid.to_be_bytes());
    put_u32(&mut b, 24, cmd_sn);
    put_u32(&mut b, 28, exp_stat_sn);
    b
}

/// Sequence numbers every target → initiator PDU with StatSN carries at 24/28/32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sns {
    /// StatSN (meaningful only where the PDU carries status).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

/// A decoded target → initiator PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Login Response (RFC 7143 11.13).
    LoginResp {
        /// Transit bit.
        transit: bool,
        /// Continue bit (text split over PDUs).
        cont: bool,
        /// Next stage.
        nsg: u8,
        /// TSIH assigned by the target.
        tsih: u16,
        /// Status-Class.
        class: u8,
        /// Status-Detail.
        detail: u8,
        /// Sequence numbers.
        sns: Sns,
    },
    /// SCSI Response (RFC 7143 11.4).
    ScsiResp {
        /// Initiator Task Tag.
        itt: u32,
        /// iSCSI Response code (0 = command completed at target).
        response: u8,
        /// SCSI status.
        status: u8,
        /// Sequence numbers.
        sns: Sns,
    },
    /// SCSI Data-In (RFC 7143 11.7).
    DataIn {
        /// Initiator Task Tag.
        itt: u32,
        /// Status is carried (S bit); then `status` and `sns.stat_sn` are valid.
        has_status: bool,
        /// SCSI status (with `has_status`).
        status: u8,
        /// Buffer offset of the payload.
        offset: u32,
        /// Sequence numbers.
        sns: Sns,
    },
    /// Ready To Transfer (RFC 7143 11.8).
    R2t {
        /// Initiator Task Tag.
        itt: u32,
        /// Target Transfer Tag to echo.
        ttt: u32,
        /// Buffer offset requested.
        offset: u32,
        /// Desired Data Transfer Length.
        len: u32,
        /// Sequence numbers.
        sns: Sns,
    },
    /// NOP-In (RFC 7143 11.19).
    NopIn {
        /// LUN field (to echo).
        lun: [u8; 8],
        /// Initiator Task Tag ([`RESERVED_TAG`] for a target ping).
        itt: u32,
        /// Target Transfer Tag (a reply is wanted unless [`RESERVED_TAG`]).
        ttt: u32,
        /// Sequence numbers.
        sns: Sns,
    },
    /// Logout Response (RFC 7143 11.15).
    LogoutResp {
        /// Response code (0 = closed successfully).
        response: u8,
        /// Sequence numbers.
        sns: Sns,
    },
    /// Reject (RFC 7143 11.17).
    Reject {
        /// Reason code.
        reason: u8,
        /// Sequence numbers.
        sns: Sns,
    },
    /// Asynchronous Message (RFC 7143 11.9).
    Async {
        /// AsyncEvent code.
        event: u8,
        /// Sequence numbers.
        sns: Sns,
    },
    /// Anything else (opcode).
    Other(u8),
}

impl Incoming {
    /// Decodes a BHS; pure and total over any 48 bytes.
    pub fn decode(b: &[u8; BHS_LEN]) -> Incoming {
        let sns = Sns {
            stat_sn: get_u32(b, 24),
            exp_cmd_sn: get_u32(b, 28),
            max_cmd_sn: get_u32(b, 32),
        };
        let itt = get_u32(b, 16);
        match b[0] & 0x3f {
            op::LOGIN_RESP => Incoming::LoginResp {
                transit: b[1] & 0x80 != 0,
                cont: b[1] & 0x40 != 0,
                nsg: b[1] & 3,
                tsih: u16::from_be_bytes([b[14], b[15]]),
                class: b[36],
                detail: b[37],
                sns,
            },
            op::SCSI_RESP => Incoming::ScsiResp {
                itt,
                response: b[2],
                status: b[3],
                sns,
            },
            op::DATA_IN => Incoming::DataIn {
                itt,
                has_status: b[1] & 0x01 != 0,
                status: b[3],
                offset: get_u32(b, 40),
                sns,
            },
            op::R2T => Incoming::R2t {
                itt,
                ttt: get_u32(b, 20),
                offset: get_u32(b, 40),
                len: get_u32(b, 44),
                sns,
            },
            op::NOP_IN => {
                let mut lun = [0u8; 8];
                lun.copy_from_slice(&b[8..16]);
                Incoming::NopIn {
                    lun,
                    itt,
                    ttt: get_u32(b, 20),
                    sns,
                }
            }
            op::LOGOUT_RESP => Incoming::LogoutResp { response: b[2], sns },
            op::REJECT => Incoming::Reject { reason: b[2], sns },
            op::ASYNC => Incoming::Async { event: b[36], sns },
            other => Incoming::Other(other),
        }
    }
}

/// `key=value` pairs of a text segment (RFC 7143 6.1), NUL separated.
pub fn parse_text(data: &[u8]) -> Vec<(String, String)> {
    data.split(|&c| c == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let s = std::str::from_utf8(kv).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Encodes `key=value` pairs into a text segment (each NUL terminated).
pub fn encode_text(pairs: &[(String, String)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, val) in pairs {
        v.extend_from_slice(k.as_bytes());
        v.push(b'=');
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

/// A READ or WRITE CDB for `blocks` blocks at `lba`: the 10-byte form (SBC-4 5.15 / 5.40)
/// when it fits, else the 16-byte form (SBC-4 5.17 / 5.42).
pub fn rw_cdb(write: bool, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    if let (Ok(l), Ok(n)) = (u32::try_from(lba), u16::try_from(blocks)) {
        c[0] = if write { 0x2a } else { 0x28 };
        c[2..6].copy_from_slice(&l.to_be_bytes());
        c[7..9].copy_from_slice(&n.to_be_bytes());
    } else {
        c[0] = if write { 0x8a } else { 0x88 };
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&blocks.to_be_bytes());
    }
    c
}

/// TEST UNIT READY (SPC-4 6.47).
pub fn tur_cdb() -> [u8; 16] {
    [0u8; 16]
}

/// READ CAPACITY (16) for 32 bytes of parameter data (SBC-4 5.20).
pub fn read_capacity16_cdb() -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[10..14].copy_from_slice(&32u32.to_be_bytes());
    c
}

/// Capacity from READ CAPACITY (16) parameter data: (number of blocks, block length).
pub fn parse_capacity16(d: &[u8]) -> Option<(u64, u32)> {
    let last = u64::from_be_bytes(d.get(0..8)?.try_into().ok()?);
    let bl = u32::from_be_bytes(d.get(8..12)?.try_into().ok()?);
    Some((last.checked_add(1)?, bl))
}

/// A SCSI status byte by name (SAM-5 5.3.1).
pub struct Status(pub u8);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self.0 {
            0x00 => "GOOD",
            0x02 => "CHECK CONDITION",
            0x08 => "BUSY",
            0x18 => "RESERVATION CONFLICT",
            0x28 => "TASK SET FULL",
            0x30 => "ACA ACTIVE",
            0x40 => "TASK ABORTED",
            _ => "?",
        };
        write!(f, "{:#04x} ({n})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scsi_cmd_layout() {
        // RFC 7143 11.3: byte 1 = F|R|W|ATTR, 20..24 EDTL, 24 CmdSN, 28 ExpStatSN, 32 CDB.
        let b = ScsiCmd {
            final_: true,
            read: false,
            write: true,
            dsl: 4096,
            lun: encode_lun(3),
            itt: 0x0102_0304,
            edtl: 4096,
            cmd_sn: 7,
            exp_stat_sn: 9,
            cdb: rw_cdb(true, 0x10, 8),
        }
        .encode();
        assert_eq!(b[0], 0x01);
        assert_eq!(b[1], 0x80 | 0x20 | 0x01);
        assert_eq!(&b[4..8], &[0, 0, 0x10, 0x00]);
        assert_eq!(&b[8..16], &[0, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..20], &[1, 2, 3, 4]);
        assert_eq!(&b[20..24], &[0, 0, 0x10, 0]);
        assert_eq!(&b[24..28], &[0, 0, 0, 7]);
        assert_eq!(&b[28..32], &[0, 0, 0, 9]);
        assert_eq!(&b[32..42], &[0x2a, 0, 0, 0, 0, 0x10, 0, 0, 8, 0]);
    }

    #[test]
    fn cdb_forms() {
        // SBC-4 5.17: READ (16) = 0x88, LBA in 2..10, length in 10..14.
        let c = rw_cdb(false, 1 << 32, 8);
        assert_eq!(c[0], 0x88);
        assert_eq!(&c[2..10], &[0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&c[10..14], &[0, 0, 0, 8]);
        assert_eq!(rw_cdb(false, 0, 0x1_0000)[0], 0x88);
        assert_eq!(rw_cdb(false, 5, 8)[0], 0x28);
    }

    #[test]
    fn login_layout() {
        let b = LoginReq {
            transit: true,
            csg: 1,
            nsg: 3,
            isid: [0x80, 1, 2, 3, 4, 5],
            tsih: 0,
            itt: 1,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
        }
        .encode(20);
        assert_eq!(b[0], 0x43);
        assert_eq!(b[1], 0x80 | 0x04 | 0x03);
        assert_eq!(data_segment_len(&b), 20);
        assert_eq!(&b[8..14], &[0x80, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn decode_r2t_and_datain() {
        let mut b = [0u8; BHS_LEN];
        b[0] = 0x31;
        b[16..20].copy_from_slice(&5u32.to_be_bytes());
        b[20..24].copy_from_slice(&0xabu32.to_be_bytes());
        b[32..36].copy_from_slice(&40u32.to_be_bytes());
        b[40..44].copy_from_slice(&65536u32.to_be_bytes());
        b[44..48].copy_from_slice(&8192u32.to_be_bytes());
        match Incoming::decode(&b) {
            Incoming::R2t { itt, ttt, offset, len, sns } => {
                assert_eq!((itt, ttt, offset, len, sns.max_cmd_sn), (5, 0xab, 65536, 8192, 40));
            }
            o => panic!("{o:?}"),
        }
        b[0] = 0x25;
        b[1] = 0x81;
        b[3] = 0x02;
        match Incoming::decode(&b) {
            Incoming::DataIn { has_status, status, .. } => assert!(has_status && status == 2),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn serial_numbers() {
        assert!(sn_lt(1, 2));
        assert!(sn_lt(0xffff_fff0, 3));
        assert!(!sn_lt(3, 0xffff_fff0));
        assert!(sn_le(7, 7));
        assert!(!sn_lt(7, 7));
    }

    #[test]
    fn text_roundtrip() {
        let pairs = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "x=y".to_string())];
        let t = encode_text(&pairs);
        assert_eq!(t, b"A=1\0B=x=y\0");
        assert_eq!(parse_text(&t), pairs);
        assert_eq!(parse_text(b"\0\0junk\0K=v"), vec![("K".to_string(), "v".to_string())]);
    }

    #[test]
    fn capacity() {
        let mut d = [0u8; 32];
        d[0..8].copy_from_slice(&2_097_151u64.to_be_bytes());
        d[8..12].copy_from_slice(&512u32.to_be_bytes());
        assert_eq!(parse_capacity16(&d), Some((2_097_152, 512)));
        assert_eq!(parse_capacity16(&d[..4]), None);
        d[0..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_capacity16(&d), None);
    }

    #[test]
    fn lun_encoding() {
        assert_eq!(encode_lun(0), [0; 8]);
        assert_eq!(encode_lun(300), [0x41, 44, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn decode_never_panics_on_any_opcode() {
        for opc in 0..=255u8 {
            let mut b = [0xffu8; BHS_LEN];
            b[0] = opc;
            let _ = Incoming::decode(&b);
        }
        assert_eq!(pad(5), 3);
        assert_eq!(pad(8), 0);
    }
}
