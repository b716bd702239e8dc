//! Sense data (SPC-4 4.5) and the additional sense codes this engine reports.
//!
//! Every error path of the engine ends in a [`Sense`]; [`Sense::to_fixed`] renders it in
//! fixed format (response code 70h, SPC-4 4.5.3), which is what we report with the
//! control mode page's D_SENSE bit at zero.

use std::fmt;

/// Sense keys (SPC-4 4.5.6, table 27).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    /// No specific sense key information.
    NoSense = 0x0,
    /// The command completed with recovery action.
    RecoveredError = 0x1,
    /// The logical unit is not accessible.
    NotReady = 0x2,
    /// Unrecovered error caused by the medium.
    MediumError = 0x3,
    /// Non-recoverable hardware failure.
    HardwareError = 0x4,
    /// Illegal parameter in the CDB or parameter list.
    IllegalRequest = 0x5,
    /// A unit attention condition was reported.
    UnitAttention = 0x6,
    /// The operation was refused because the medium is protected.
    DataProtect = 0x7,
    /// Blank medium / format-defined end of data.
    BlankCheck = 0x8,
    /// Vendor specific.
    VendorSpecific = 0x9,
    /// A copy command was aborted.
    CopyAborted = 0xA,
    /// The device server aborted the command.
    AbortedCommand = 0xB,
    /// Obsolete in SPC-4 (was EQUAL).
    Reserved0C = 0xC,
    /// Buffered peripheral device reached the end of partition.
    VolumeOverflow = 0xD,
    /// Source data did not match the data read from the medium.
    Miscompare = 0xE,
    /// Completed (informational).
    Completed = 0xF,
}

impl SenseKey {
    /// Decodes the low nibble of a sense key byte.
    pub fn from_u8(v: u8) -> SenseKey {
        match v & 0x0f {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0x8 => SenseKey::BlankCheck,
            0x9 => SenseKey::VendorSpecific,
            0xA => SenseKey::CopyAborted,
            0xB => SenseKey::AbortedCommand,
            0xC => SenseKey::Reserved0C,
            0xD => SenseKey::VolumeOverflow,
            0xE => SenseKey::Miscompare,
            _ => SenseKey::Completed,
        }
    }
}

/// SENSE KEY SPECIFIC field pointer (SPC-4 4.5.2.4.2): which byte (and bit) of the CDB or
/// parameter list was invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldPointer {
    /// C/D bit: `true` when the pointer refers to the CDB, `false` for the parameter list.
    pub cdb_or_data: bool,
    /// Byte of the CDB or parameter list.
    pub byte: u16,
    /// Bit within the byte (0..=7), if the error is confined to one field starting there.
    pub bit: Option<u8>,
}

/// Sense data of one command, rendered in fixed format by [`Sense::to_fixed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sense {
    /// SENSE KEY.
    pub key: SenseKey,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// INFORMATION field; sets the VALID bit. Values above `u32::MAX` do not fit fixed
    /// format and are reported with VALID = 0 (SPC-4 4.5.3).
    pub information: Option<u64>,
    /// COMMAND-SPECIFIC INFORMATION field.
    pub command_specific: u32,
    /// SENSE KEY SPECIFIC field pointer (sets SKSV).
    pub field_pointer: Option<FieldPointer>,
    /// Raw SENSE KEY SPECIFIC bytes for keys other than ILLEGAL REQUEST (progress
    /// indication, SKSV set). Ignored when `field_pointer` is set.
    pub key_specific: Option<[u8; 3]>,
}

/// Length of fixed-format sense data produced by [`Sense::to_fixed`].
pub const FIXED_SENSE_LEN: usize = 18;

macro_rules! sense_consts {
    ($($(#[$m:meta])* $name:ident = $key:ident, $asc:literal, $ascq:literal;)*) => {
        impl Sense {
            $(
                $(#[$m])*
                pub const $name: Sense = Sense::new(SenseKey::$key, $asc, $ascq);
            )*
        }
    };
}

sense_consts! {
    /// NO SENSE, NO ADDITIONAL SENSE INFORMATION (00h/00h).
    NO_SENSE = NoSense, 0x00, 0x00;
    /// NOT READY, LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE (04h/00h).
    NOT_READY_CAUSE_NOT_REPORTABLE = NotReady, 0x04, 0x00;
    /// NOT READY, LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (04h/02h).
    NOT_READY_INIT_REQUIRED = NotReady, 0x04, 0x02;
    /// NOT READY, LOGICAL UNIT NOT READY, FORMAT IN PROGRESS (04h/04h).
    NOT_READY_FORMAT_IN_PROGRESS = NotReady, 0x04, 0x04;
    /// NOT READY, MEDIUM NOT PRESENT (3Ah/00h).
    MEDIUM_NOT_PRESENT = NotReady, 0x3a, 0x00;
    /// MEDIUM ERROR, WRITE ERROR (0Ch/00h).
    WRITE_ERROR = MediumError, 0x0c, 0x00;
    /// MEDIUM ERROR, UNRECOVERED READ ERROR (11h/00h).
    UNRECOVERED_READ_ERROR = MediumError, 0x11, 0x00;
    /// HARDWARE ERROR, INTERNAL TARGET FAILURE (44h/00h).
    INTERNAL_TARGET_FAILURE = HardwareError, 0x44, 0x00;
    /// ABORTED COMMAND, COMMAND TIMEOUT DURING PROCESSING (2Eh/02h, SPC-4 annex D):
    /// the command did not finish in time; initiators retry ABORTED COMMAND.
    COMMAND_TIMEOUT_DURING_PROCESSING = AbortedCommand, 0x2e, 0x02;
    /// ABORTED COMMAND, WRITE ERROR - NOT ENOUGH UNSOLICITED DATA (0Ch/0Dh): the
    /// initiator ended its unsolicited Data-Out early (what LIO answers,
    /// TCM_INCORRECT_AMOUNT_OF_DATA).
    NOT_ENOUGH_UNSOLICITED_DATA = AbortedCommand, 0x0c, 0x0d;
    /// ABORTED COMMAND, DATA PHASE ERROR (4Bh/00h): a solicited Data-Out sequence ended
    /// before the data the command transfers had arrived.
    DATA_PHASE_ERROR = AbortedCommand, 0x4b, 0x00;
    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR (1Ah/00h).
    PARAMETER_LIST_LENGTH_ERROR = IllegalRequest, 0x1a, 0x00;
    /// ILLEGAL REQUEST, INVALID FIELD IN INFORMATION UNIT (0Eh/03h): the data-out buffer
    /// is shorter than the CDB requires.
    INVALID_FIELD_IN_INFORMATION_UNIT = IllegalRequest, 0x0e, 0x03;
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (20h/00h).
    INVALID_COMMAND_OPERATION_CODE = IllegalRequest, 0x20, 0x00;
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21h/00h).
    LBA_OUT_OF_RANGE = IllegalRequest, 0x21, 0x00;
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (24h/00h).
    INVALID_FIELD_IN_CDB = IllegalRequest, 0x24, 0x00;
    /// ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED (25h/00h).
    LOGICAL_UNIT_NOT_SUPPORTED = IllegalRequest, 0x25, 0x00;
    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (26h/00h).
    INVALID_FIELD_IN_PARAMETER_LIST = IllegalRequest, 0x26, 0x00;
    /// ILLEGAL REQUEST, PARAMETER VALUE INVALID (26h/02h).
    PARAMETER_VALUE_INVALID = IllegalRequest, 0x26, 0x02;
    /// ILLEGAL REQUEST, TOO MANY TARGET DESCRIPTORS (26h/06h).
    TOO_MANY_TARGET_DESCRIPTORS = IllegalRequest, 0x26, 0x06;
    /// ILLEGAL REQUEST, UNSUPPORTED TARGET DESCRIPTOR TYPE CODE (26h/07h).
    UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE = IllegalRequest, 0x26, 0x07;
    /// ILLEGAL REQUEST, TOO MANY SEGMENT DESCRIPTORS (26h/08h).
    TOO_MANY_SEGMENT_DESCRIPTORS = IllegalRequest, 0x26, 0x08;
    /// ILLEGAL REQUEST, UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE (26h/09h).
    UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE = IllegalRequest, 0x26, 0x09;
    /// ILLEGAL REQUEST, INVALID RELEASE OF PERSISTENT RESERVATION (26h/04h).
    INVALID_RELEASE_OF_PERSISTENT_RESERVATION = IllegalRequest, 0x26, 0x04;
    /// ILLEGAL REQUEST, SAVING PARAMETERS NOT SUPPORTED (39h/00h).
    SAVING_PARAMETERS_NOT_SUPPORTED = IllegalRequest, 0x39, 0x00;
    /// ILLEGAL REQUEST, INSUFFICIENT REGISTRATION RESOURCES (55h/04h).
    INSUFFICIENT_REGISTRATION_RESOURCES = IllegalRequest, 0x55, 0x04;
    /// ILLEGAL REQUEST, OPERATION IN PROGRESS (00h/16h).
    OPERATION_IN_PROGRESS = IllegalRequest, 0x00, 0x16;
    /// ILLEGAL REQUEST, COPY TARGET DEVICE NOT REACHABLE (0Dh/02h) — reported with
    /// COPY ABORTED in practice, see [`Sense::COPY_TARGET_NOT_REACHABLE`].
    ILLEGAL_COPY_TARGET_NOT_REACHABLE = IllegalRequest, 0x0d, 0x02;
    /// ILLEGAL REQUEST, INSUFFICIENT RESOURCES (55h/00h).
    INSUFFICIENT_RESOURCES = IllegalRequest, 0x55, 0x00;
    /// UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h).
    UA_POWER_ON_RESET = UnitAttention, 0x29, 0x00;
    /// UNIT ATTENTION, POWER ON OCCURRED (29h/01h).
    UA_POWER_ON = UnitAttention, 0x29, 0x01;
    /// UNIT ATTENTION, BUS DEVICE RESET FUNCTION OCCURRED (29h/03h).
    UA_BUS_DEVICE_RESET = UnitAttention, 0x29, 0x03;
    /// UNIT ATTENTION, I_T NEXUS LOSS OCCURRED (29h/07h).
    UA_IT_NEXUS_LOSS = UnitAttention, 0x29, 0x07;
    /// UNIT ATTENTION, MODE PARAMETERS CHANGED (2Ah/01h).
    UA_MODE_PARAMETERS_CHANGED = UnitAttention, 0x2a, 0x01;
    /// UNIT ATTENTION, RESERVATIONS PREEMPTED (2Ah/03h).
    UA_RESERVATIONS_PREEMPTED = UnitAttention, 0x2a, 0x03;
    /// UNIT ATTENTION, RESERVATIONS RELEASED (2Ah/04h).
    UA_RESERVATIONS_RELEASED = UnitAttention, 0x2a, 0x04;
    /// UNIT ATTENTION, REGISTRATIONS PREEMPTED (2Ah/05h).
    UA_REGISTRATIONS_PREEMPTED = UnitAttention, 0x2a, 0x05;
    /// UNIT ATTENTION, CAPACITY DATA HAS CHANGED (2Ah/09h).
    UA_CAPACITY_DATA_CHANGED = UnitAttention, 0x2a, 0x09;
    /// UNIT ATTENTION, COMMANDS CLEARED BY ANOTHER INITIATOR (2Fh/00h).
    UA_COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = UnitAttention, 0x2f, 0x00;
    /// UNIT ATTENTION, REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh).
    UA_REPORTED_LUNS_DATA_CHANGED = UnitAttention, 0x3f, 0x0e;
    /// UNIT ATTENTION, INQUIRY DATA HAS CHANGED (3Fh/03h).
    UA_INQUIRY_DATA_CHANGED = UnitAttention, 0x3f, 0x03;
    /// DATA PROTECT, WRITE PROTECTED (27h/00h).
    WRITE_PROTECTED = DataProtect, 0x27, 0x00;
    /// DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (27h/07h).
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT = DataProtect, 0x27, 0x07;
    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (1Dh/00h).
    MISCOMPARE_DURING_VERIFY = Miscompare, 0x1d, 0x00;
    /// COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE (0Dh/02h).
    COPY_TARGET_NOT_REACHABLE = CopyAborted, 0x0d, 0x02;
    /// COPY ABORTED, UNREACHABLE COPY TARGET (08h/04h).
    UNREACHABLE_COPY_TARGET = CopyAborted, 0x08, 0x04;
    /// ABORTED COMMAND, NO ADDITIONAL SENSE INFORMATION (00h/00h).
    ABORTED_COMMAND = AbortedCommand, 0x00, 0x00;
}

impl Sense {
    /// Sense with the given key and additional sense code, no INFORMATION or pointer.
    pub const fn new(key: SenseKey, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            information: None,
            command_specific: 0,
            field_pointer: None,
            key_specific: None,
        }
    }

    /// INVALID FIELD IN CDB (24h/00h) pointing at `byte` and optionally `bit` of the CDB
    /// (SPC-4 4.5.2.4.2).
    pub const fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Sense {
        Sense::INVALID_FIELD_IN_CDB.with_field_pointer(true, byte, bit)
    }

    /// INVALID FIELD IN PARAMETER LIST (26h/00h) pointing at `byte`/`bit` of the data-out
    /// buffer (C/D = 0).
    pub const fn invalid_field_in_param(byte: u16, bit: Option<u8>) -> Sense {
        Sense::INVALID_FIELD_IN_PARAMETER_LIST.with_field_pointer(false, byte, bit)
    }

    /// INVALID COMMAND OPERATION CODE (20h/00h) pointing at byte 0 of the CDB.
    pub const fn invalid_opcode() -> Sense {
        Sense::INVALID_COMMAND_OPERATION_CODE.with_field_pointer(true, 0, None)
    }

    /// Returns `self` with a field pointer.
    pub const fn with_field_pointer(
        mut self,
        cdb_or_data: bool,
        byte: u16,
        bit: Option<u8>,
    ) -> Sense {
        self.field_pointer = Some(FieldPointer {
            cdb_or_data,
            byte,
            bit,
        });
        self
    }

    /// Returns `self` with the INFORMATION field set (VALID = 1).
    pub const fn with_information(mut self, information: u64) -> Sense {
        self.information = Some(information);
        self
    }

    /// Returns `self` with the COMMAND-SPECIFIC INFORMATION field set.
    pub const fn with_command_specific(mut self, csi: u32) -> Sense {
        self.command_specific = csi;
        self
    }

    /// Whether this is a unit attention.
    pub fn is_unit_attention(&self) -> bool {
        self.key == SenseKey::UnitAttention
    }

    /// Renders fixed-format sense data (SPC-4 4.5.3, response code 70h).
    pub fn to_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        b[0] = 0x70;
        if let Some(info) = self.information {
            if let Ok(v) = u32::try_from(info) {
                b[0] |= 0x80;
                b[3..7].copy_from_slice(&v.to_be_bytes());
            } else {
                // Does not fit: keep the low bits for the curious, VALID stays zero.
                b[3..7].copy_from_slice(&(info as u32).to_be_bytes());
            }
        }
        b[2] = self.key as u8;
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[8..12].copy_from_slice(&self.command_specific.to_be_bytes());
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some(fp) = self.field_pointer {
            b[15] = 0x80;
            if fp.cdb_or_data {
                b[15] |= 0x40;
            }
            if let Some(bit) = fp.bit {
                b[15] |= 0x08 | (bit & 0x07);
            }
            b[16..18].copy_from_slice(&fp.byte.to_be_bytes());
        } else if let Some(ks) = self.key_specific {
            b[15] = 0x80 | (ks[0] & 0x7f);
            b[16] = ks[1];
            b[17] = ks[2];
        }
        b
    }

    /// Renders descriptor-format sense data (SPC-4 4.5.2, response code 72h) with an
    /// information descriptor and a sense key specific descriptor when present. Used for
    /// REQUEST SENSE with DESC = 1.
    pub fn to_descriptor(&self) -> Vec<u8> {
        let mut b = vec![0x72, self.key as u8, self.asc, self.ascq, 0, 0, 0, 0];
        if let Some(info) = self.information {
            // Information descriptor (SPC-4 4.5.2.2): VALID = 1, 64-bit INFORMATION.
            b.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        let ks = self.to_fixed();
        if ks[15] & 0x80 != 0 {
            // Sense key specific descriptor (SPC-4 4.5.2.3).
            b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00, ks[15], ks[16], ks[17], 0x00]);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }

    /// Parses fixed-format (70h/71h) sense data; used by tests and by initiator-side
    /// tooling. Returns `None` if the buffer is not fixed-format sense data.
    pub fn from_fixed(b: &[u8]) -> Option<Sense> {
        if b.len() < 14 || !matches!(b[0] & 0x7f, 0x70 | 0x71) {
            return None;
        }
        let valid = b[0] & 0x80 != 0;
        let info = u32::from_be_bytes([b[3], b[4], b[5], b[6]]);
        let mut s = Sense::new(SenseKey::from_u8(b[2]), b[12], b[13]);
        if valid {
            s.information = Some(u64::from(info));
        }
        s.command_specific = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        if b.len() >= 18 && b[15] & 0x80 != 0 {
            if s.key == SenseKey::IllegalRequest {
                s.field_pointer = Some(FieldPointer {
                    cdb_or_data: b[15] & 0x40 != 0,
                    byte: u16::from_be_bytes([b[16], b[17]]),
                    bit: (b[15] & 0x08 != 0).then_some(b[15] & 0x07),
                });
            } else {
                s.key_specific = Some([b[15] & 0x7f, b[16], b[17]]);
            }
        }
        Some(s)
    }

    /// Maps a backstore error to sense data. `writing` selects WRITE ERROR rather than
    /// UNRECOVERED READ ERROR for medium errors. `lba` (if known) goes to INFORMATION.
    ///
    /// This is the single place where backstore errors become what the initiator sees.
    pub fn from_backstore(err: &rustio_backstore::Error, writing: bool) -> Sense {
        use rustio_backstore::ErrorKind;
        match err.kind() {
            ErrorKind::OutOfRange => Sense::LBA_OUT_OF_RANGE,
            ErrorKind::InvalidRequest => Sense::INVALID_FIELD_IN_CDB,
            ErrorKind::ReadOnly => Sense::WRITE_PROTECTED,
            ErrorKind::Unsupported => Sense::invalid_opcode(),
            ErrorKind::NoSpace => Sense::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
            ErrorKind::Medium if writing => Sense::WRITE_ERROR,
            ErrorKind::Medium => Sense::UNRECOVERED_READ_ERROR,
            // A transient condition: NOT READY / CAUSE NOT REPORTABLE makes initiators
            // retry (the BUSY status variant is chosen by the caller via
            // `is_busy_error`).
            ErrorKind::Busy => Sense::NOT_READY_CAUSE_NOT_REPORTABLE,
            ErrorKind::Hardware => Sense::INTERNAL_TARGET_FAILURE,
        }
    }
}

impl From<&rustio_backstore::Error> for Sense {
    /// Maps a backstore error seen on a read path (see [`Sense::from_backstore`]).
    fn from(err: &rustio_backstore::Error) -> Sense {
        Sense::from_backstore(err, false)
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {:02X}h/{:02X}h", self.key, self.asc, self.ascq)?;
        if let Some(i) = self.information {
            write!(f, " info={i}")?;
        }
        if let Some(fp) = self.field_pointer {
            write!(
                f,
                " ({} byte {}{})",
                if fp.cdb_or_data { "CDB" } else { "param" },
                fp.byte,
                fp.bit.map(|b| format!(" bit {b}")).unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_invalid_field_in_cdb_with_bit_pointer() {
        let s = Sense::invalid_field_in_cdb(2, Some(5)).to_fixed();
        assert_eq!(
            s,
            [
                0x70,
                0,
                0x05,
                0,
                0,
                0,
                0,
                10,
                0,
                0,
                0,
                0,
                0x24,
                0x00,
                0,
                0xc0 | 0x08 | 5,
                0,
                2
            ]
        );
    }

    #[test]
    fn fixed_format_param_pointer_has_cd_zero() {
        let s = Sense::invalid_field_in_param(0x1234, None).to_fixed();
        assert_eq!(s[15], 0x80);
        assert_eq!(&s[16..18], &[0x12, 0x34]);
        assert_eq!((s[12], s[13]), (0x26, 0x00));
    }

    #[test]
    fn information_sets_valid_and_big_values_clear_it() {
        let s = Sense::MISCOMPARE_DURING_VERIFY
            .with_information(7)
            .to_fixed();
        assert_eq!(s[0], 0xf0);
        assert_eq!(s[2], 0x0e);
        assert_eq!(&s[3..7], &[0, 0, 0, 7]);
        let s = Sense::MISCOMPARE_DURING_VERIFY
            .with_information(1 << 40)
            .to_fixed();
        assert_eq!(s[0], 0x70);
    }

    #[test]
    fn round_trip() {
        for s in [
            Sense::invalid_field_in_cdb(9, Some(1)),
            Sense::invalid_field_in_param(4, None),
            Sense::UA_POWER_ON_RESET,
            Sense::MISCOMPARE_DURING_VERIFY.with_information(3),
        ] {
            assert_eq!(Sense::from_fixed(&s.to_fixed()), Some(s));
        }
    }

    #[test]
    fn descriptor_format() {
        assert_eq!(
            Sense::UA_POWER_ON_RESET.to_descriptor(),
            [0x72, 0x06, 0x29, 0, 0, 0, 0, 0]
        );
        let d = Sense::invalid_field_in_cdb(4, Some(1)).to_descriptor();
        assert_eq!(
            d,
            [0x72, 0x05, 0x24, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xc9, 0, 4, 0]
        );
        let d = Sense::MISCOMPARE_DURING_VERIFY
            .with_information(0x1_0000_0000)
            .to_descriptor();
        assert_eq!(&d[..8], &[0x72, 0x0e, 0x1d, 0, 0, 0, 0, 12]);
        assert_eq!(&d[8..12], &[0, 0x0a, 0x80, 0]);
        assert_eq!(&d[12..20], &0x1_0000_0000u64.to_be_bytes());
    }

    #[test]
    fn backstore_errors_map() {
        use rustio_backstore::Error;
        let e = Error::NoSpace { offset: 0, len: 1 };
        assert_eq!(
            Sense::from_backstore(&e, true),
            Sense::SPACE_ALLOCATION_FAILED_WRITE_PROTECT
        );
        let io = Error::Io {
            op: "read",
            path: "/x".into(),
            offset: 0,
            source: std::io::Error::from_raw_os_error(5),
        };
        assert_eq!(Sense::from(&io), Sense::UNRECOVERED_READ_ERROR);
        assert_eq!(Sense::from_backstore(&io, true), Sense::WRITE_ERROR);
        assert_eq!(Sense::from(&Error::ReadOnly), Sense::WRITE_PROTECTED);
        let hw = Error::Io {
            op: "read",
            path: "/x".into(),
            offset: 0,
            source: std::io::Error::from_raw_os_error(libc_einval()),
        };
        assert_eq!(Sense::from(&hw), Sense::INTERNAL_TARGET_FAILURE);
    }

    fn libc_einval() -> i32 {
        22
    }
}
