//! The few SCSI pieces the load generator needs on top of iSCSI: LUN addressing (SAM-5),
//! READ/WRITE, TEST UNIT READY and READ CAPACITY (16) CDBs (SBC-4, SPC-4) and status
//! names. The iSCSI PDUs themselves come from `rustio_iscsi_proto`.

use std::fmt;

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
    fn cdb_forms() {
        // SBC-4 5.17: READ (16) = 0x88, LBA in 2..10, length in 10..14.
        let c = rw_cdb(false, 1 << 32, 8);
        assert_eq!(c[0], 0x88);
        assert_eq!(&c[2..10], &[0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&c[10..14], &[0, 0, 0, 8]);
        assert_eq!(rw_cdb(false, 0, 0x1_0000)[0], 0x88);
        assert_eq!(rw_cdb(false, 5, 8)[0], 0x28);
        // SBC-4 5.40: WRITE (10) = 0x2a, LBA in 2..6, length in 7..9.
        assert_eq!(
            &rw_cdb(true, 0x10, 8)[..10],
            &[0x2a, 0, 0, 0, 0, 0x10, 0, 0, 8, 0]
        );
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
}
