//! The LUN table a transport uses: REPORT LUNS (SPC-4 6.33), commands to LUNs that do not
//! exist (SPC-4 6.6.2 / SAM-5 5.9.3) and SAM-5 LUN encoding.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::cdb::{self, op, Command};
use crate::direct::DirectIn;
use crate::lu::{Fail, LogicalUnit};
use crate::nexus::{Nexus, Request, TaskAttr, Tmf};
use crate::sense::Sense;
use crate::status::{Response, Status};

/// Highest LUN expressible with single level flat space addressing (SAM-5 4.7.7.3).
pub const MAX_LUN: u64 = 0x3fff;

/// Encodes a LUN number as an 8-byte SAM-5 LUN: peripheral device addressing for LUNs
/// below 256 (what most initiators expect for small LUNs), flat space addressing up to
/// 16383 (SAM-5 4.7.7.2, 4.7.7.3). `None` for larger numbers.
pub fn encode_lun(lun: u64) -> Option<[u8; 8]> {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else if lun <= MAX_LUN {
        b[0] = 0x40 | (lun >> 8) as u8;
        b[1] = (lun & 0xff) as u8;
    } else {
        return None;
    }
    Some(b)
}

/// Decodes an 8-byte single level LUN (peripheral device addressing with bus 0, or flat
/// space addressing). `None` for other forms (multi-level, extended, logical unit
/// addressing, non-zero second level), which address no logical unit of ours.
pub fn decode_lun(b: [u8; 8]) -> Option<u64> {
    if b[2..].iter().any(|&x| x != 0) {
        return None;
    }
    match b[0] >> 6 {
        0b00 if b[0] & 0x3f == 0 => Some(u64::from(b[1])),
        0b01 => Some((u64::from(b[0] & 0x3f) << 8) | u64::from(b[1])),
        _ => None,
    }
}

/// Decodes the 64-bit big-endian form of an 8-byte LUN (as carried in iSCSI PDUs).
pub fn decode_lun_u64(raw: u64) -> Option<u64> {
    decode_lun(raw.to_be_bytes())
}

/// Builds REPORT LUNS parameter data (SPC-4 6.33.2) for the given LUN numbers.
pub(crate) fn report_luns_data(
    select: u8,
    luns: impl Iterator<Item = u64>,
    out: &mut Vec<u8>,
) -> Result<(), Fail> {
    out.extend_from_slice(&[0; 8]);
    // SELECT REPORT 01h and 11h: well known logical units only; we have none.
    if !matches!(select, 0x01 | 0x11) {
        for lun in luns {
            if let Some(b) = encode_lun(lun) {
                out.extend_from_slice(&b);
            }
        }
    }
    let len =
        u32::try_from(out.len() - 8).map_err(|_| Fail::Check(Sense::INSUFFICIENT_RESOURCES))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// One mapped logical unit.
#[derive(Debug, Clone)]
pub struct MappedLun {
    /// The logical unit.
    pub lu: Arc<LogicalUnit>,
    /// Mapped write-protected for this initiator (ACL mapped LUN).
    pub write_protected: bool,
}

/// The logical units one I_T nexus may access: its LUN map as the transport sees it.
///
/// Commands that name other logical units by identifier rather than by LUN (EXTENDED
/// COPY CSCD descriptors, SPC-4 6.4.5) resolve them only through this, so an initiator
/// reaches nothing its ACL does not map (the class of Linux LIO's CVE-2020-28374).
pub trait LunAccess: fmt::Debug {
    /// Every mapping of this nexus (a logical unit may appear more than once).
    fn mapped(&self) -> Box<dyn Iterator<Item = &MappedLun> + '_>;

    /// The mapping through which this nexus reaches the logical unit whose 16-byte NAA
    /// designator (VPD page 83h, SPC-4 7.8.6.6.5) is `naa`. If the unit is mapped more
    /// than once, a writable mapping wins: the nexus could write through it directly.
    fn by_naa(&self, naa: &[u8]) -> Option<MappedLun> {
        let mut found: Option<&MappedLun> = None;
        for m in self.mapped().filter(|m| m.lu.naa[..] == *naa) {
            if !m.write_protected {
                return Some(m.clone());
            }
            found.get_or_insert(m);
        }
        found.cloned()
    }
}

impl LunAccess for LunMap {
    fn mapped(&self) -> Box<dyn Iterator<Item = &MappedLun> + '_> {
        Box::new(self.luns.values())
    }
}

/// A single mapping: a transport with one logical unit per device (TCMU).
impl LunAccess for MappedLun {
    fn mapped(&self) -> Box<dyn Iterator<Item = &MappedLun> + '_> {
        Box::new(std::iter::once(self))
    }
}

/// The logical units one initiator sees through a target port, by LUN number.
#[derive(Debug, Clone, Default)]
pub struct LunMap {
    luns: BTreeMap<u64, MappedLun>,
}

impl LunMap {
    /// An empty map.
    pub fn new() -> LunMap {
        LunMap::default()
    }

    /// Maps `lu` at `lun` (at most [`MAX_LUN`]); returns the previous mapping. Callers
    /// that change a live map should call [`LunMap::notify_changed`].
    pub fn insert(
        &mut self,
        lun: u64,
        lu: Arc<LogicalUnit>,
        write_protected: bool,
    ) -> Option<MappedLun> {
        if lun > MAX_LUN {
            return None;
        }
        self.luns.insert(
            lun,
            MappedLun {
                lu,
                write_protected,
            },
        )
    }

    /// Unmaps `lun`.
    pub fn remove(&mut self, lun: u64) -> Option<MappedLun> {
        self.luns.remove(&lun)
    }

    /// The mapping at `lun`.
    pub fn get(&self, lun: u64) -> Option<&MappedLun> {
        self.luns.get(&lun)
    }

    /// LUN numbers, ascending.
    pub fn luns(&self) -> impl Iterator<Item = u64> + '_ {
        self.luns.keys().copied()
    }

    /// Number of mapped LUNs.
    pub fn len(&self) -> usize {
        self.luns.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.luns.is_empty()
    }

    /// Raises REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh) on every mapped unit (SPC-4
    /// 6.33.1) after the map changed.
    pub fn notify_changed(&self) {
        for m in self.luns.values() {
            m.lu.luns_changed();
        }
    }

    /// Expected data-out length of `cdb` for `lun` (see [`LogicalUnit::data_out_len`]).
    pub fn data_out_len(&self, lun: u64, cdb: &[u8]) -> Option<u32> {
        self.transfer(lun, cdb).data_out_len
    }

    /// What `cdb` addressed to `lun` needs of the transport ([`cdb::transfer`]), in the
    /// unit's block size; a LUN that is not mapped counts in 512-byte blocks (its
    /// commands fail, but the transport still has to receive their data-out).
    pub fn transfer(&self, lun: u64, cdb: &[u8]) -> cdb::Transfer {
        let block_size = self.luns.get(&lun).map_or(512, |m| m.lu.block_size());
        cdb::transfer(cdb, block_size)
    }

    /// Executes one command addressed to `lun`.
    ///
    /// REPORT LUNS is answered from the map for any LUN. For a LUN that is not mapped,
    /// INQUIRY returns peripheral qualifier 011b / device type 1Fh, REQUEST SENSE
    /// returns LOGICAL UNIT NOT SUPPORTED sense data, and everything else is CHECK
    /// CONDITION, ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED (SPC-4 6.6.2, SAM-5 5.9.3).
    #[allow(clippy::too_many_arguments)]
    pub fn execute(
        &self,
        nexus: &Nexus,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        task_tag: u64,
        task_attr: TaskAttr,
        data_in: &mut Vec<u8>,
    ) -> Response {
        self.execute_direct(
            nexus, lun, cdb, data_out, task_tag, task_attr, data_in, None,
        )
    }

    /// [`Self::execute`] with zero-copy READs into `direct`
    /// (see [`LogicalUnit::execute_direct`]).
    #[allow(clippy::too_many_arguments)]
    pub fn execute_direct(
        &self,
        nexus: &Nexus,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        task_tag: u64,
        task_attr: TaskAttr,
        data_in: &mut Vec<u8>,
        mut direct: Option<&mut DirectIn<'_, '_>>,
    ) -> Response {
        data_in.clear();
        if let Some(d) = direct.as_deref_mut() {
            d.reset();
        }
        if cdb.first() == Some(&op::REPORT_LUNS) {
            return self.report_luns(nexus, lun, cdb, data_in);
        }
        match self.luns.get(&lun) {
            Some(m) => {
                let req = Request {
                    nexus,
                    cdb,
                    data_out,
                    task_tag,
                    task_attr,
                    write_protected: m.write_protected,
                    luns: self,
                };
                m.lu.execute_direct(&req, data_in, direct)
            }
            None => no_such_lun(cdb, data_in),
        }
    }

    /// The mapping of `lun`, if mapped.
    pub(crate) fn mapped_lun(&self, lun: u64) -> Option<&MappedLun> {
        self.luns.get(&lun)
    }

    fn report_luns(&self, nexus: &Nexus, lun: u64, cdb: &[u8], data_in: &mut Vec<u8>) -> Response {
        let (select, alloc) = match cdb::parse(cdb) {
            Ok(Command::ReportLuns { select, alloc }) => (select, alloc),
            Ok(_) => return Response::check(Sense::invalid_opcode()),
            Err(s) => return Response::check(s),
        };
        if let Err(Fail::Check(s)) = report_luns_data(select, self.luns(), data_in) {
            data_in.clear();
            return Response::check(s);
        }
        data_in.truncate(alloc as usize);
        if let Some(m) = self.luns.get(&lun) {
            m.lu.reported_luns(nexus);
        }
        Response::status(Status::Good)
    }

    /// Forwards a task management function: LUN-scoped ones to `lun`, target-scoped ones
    /// (target resets, I_T nexus reset) to every unit.
    pub fn task_management(&self, nexus: &Nexus, lun: u64, tmf: Tmf) {
        match tmf {
            Tmf::TargetWarmReset | Tmf::TargetColdReset | Tmf::ItNexusReset => {
                for m in self.luns.values() {
                    m.lu.task_management(nexus, tmf);
                }
            }
            _ => {
                if let Some(m) = self.luns.get(&lun) {
                    m.lu.task_management(nexus, tmf);
                }
            }
        }
    }

    /// I_T nexus loss for every unit.
    pub fn nexus_lost(&self, nexus: &Nexus) {
        for m in self.luns.values() {
            m.lu.nexus_lost(nexus);
        }
    }
}

/// The answer for a LUN that does not exist.
fn no_such_lun(cdb: &[u8], data_in: &mut Vec<u8>) -> Response {
    match cdb::parse(cdb) {
        Ok(Command::Inquiry { evpd, page, alloc }) => {
            // Peripheral qualifier 011b: not capable of supporting a device here;
            // device type 1Fh (SPC-4 6.6.2).
            if evpd {
                if page != 0 {
                    return Response::check(Sense::invalid_field_in_cdb(2, None));
                }
                data_in.extend_from_slice(&[0x7f, 0x00, 0x00, 0x01, 0x00]);
            } else {
                let mut d = [0u8; 36];
                d[0] = 0x7f;
                d[2] = 0x06;
                d[3] = 0x12;
                d[4] = 31;
                d[8..36].copy_from_slice(b"RUSTIO  no such LUN     0000");
                data_in.extend_from_slice(&d);
            }
            data_in.truncate(alloc as usize);
            Response::status(Status::Good)
        }
        Ok(Command::RequestSense { alloc, .. }) => {
            // SPC-4 6.39: REQUEST SENSE to an unsupported LUN returns sense data with
            // LOGICAL UNIT NOT SUPPORTED and GOOD status.
            data_in.extend_from_slice(&Sense::LOGICAL_UNIT_NOT_SUPPORTED.to_fixed());
            data_in.truncate(alloc as usize);
            Response::status(Status::Good)
        }
        _ => Response::check(Sense::LOGICAL_UNIT_NOT_SUPPORTED),
    }
}

impl LogicalUnit {
    /// REPORT LUNS through a [`LunMap`] clears REPORTED LUNS DATA HAS CHANGED for the
    /// nexus (SAM-5 5.14).
    pub(crate) fn reported_luns(&self, nexus: &Nexus) {
        self.ua
            .clear(nexus, |s| *s == Sense::UA_REPORTED_LUNS_DATA_CHANGED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_encoding() {
        assert_eq!(encode_lun(0), Some([0; 8]));
        assert_eq!(encode_lun(5), Some([0, 5, 0, 0, 0, 0, 0, 0]));
        assert_eq!(encode_lun(256), Some([0x41, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(encode_lun(0x3fff), Some([0x7f, 0xff, 0, 0, 0, 0, 0, 0]));
        assert_eq!(encode_lun(0x4000), None);
        assert_eq!(decode_lun([0x40, 5, 0, 0, 0, 0, 0, 0]), Some(5));
        assert_eq!(decode_lun([0x01, 5, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_lun([0, 5, 0, 1, 0, 0, 0, 0]), None);
        assert_eq!(decode_lun([0xc0, 5, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_lun_u64(0x0001_0000_0000_0000), Some(1));
        for l in [0u64, 1, 255, 256, 1000, MAX_LUN] {
            assert_eq!(encode_lun(l).and_then(decode_lun), Some(l));
        }
    }

    #[test]
    fn report_luns_layout() {
        let mut v = Vec::new();
        report_luns_data(0, [0u64, 3, 300].into_iter(), &mut v).unwrap();
        assert_eq!(&v[..8], &[0, 0, 0, 24, 0, 0, 0, 0]);
        assert_eq!(&v[8..16], &[0; 8]);
        assert_eq!(&v[16..18], &[0, 3]);
        assert_eq!(&v[24..26], &[0x41, 0x2c]);
        v.clear();
        report_luns_data(1, [0u64].into_iter(), &mut v).unwrap();
        assert_eq!(v, [0; 8]);
    }
}
