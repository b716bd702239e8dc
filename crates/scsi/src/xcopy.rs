//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4, 6.18), between logical
//! units the requesting I_T nexus may access.
//!
//! Copy targets are named in the parameter list by identification CSCD descriptors
//! (E4h) carrying an NAA designator. They are resolved only through the nexus's LUN map
//! ([`Request::luns`]): a designator of any other unit of this process is COPY TARGET
//! DEVICE NOT REACHABLE, as if it did not exist (a process-wide lookup let one
//! initiator read or overwrite another target's units, the class of Linux LIO's
//! CVE-2020-28374). Each copy target then passes the checks a READ (source) or WRITE
//! (destination) from that nexus would ([`LogicalUnit::admit`]). Only block-to-block
//! segment descriptors (02h) are supported.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use rustio_backstore::WriteFlags;

use crate::cdb::{op, Command};
use crate::lu::{Fail, LogicalUnit, Outcome};
use crate::lunmap::MappedLun;
use crate::nexus::{Nexus, Request};
use crate::sense::{Sense, SenseKey};
use crate::status::Status;

/// MAXIMUM CSCD DESCRIPTOR COUNT.
pub(crate) const MAX_CSCD: u16 = 8;
/// MAXIMUM SEGMENT DESCRIPTOR COUNT.
pub(crate) const MAX_SEGMENTS: u16 = 64;
/// MAXIMUM DESCRIPTOR LIST LENGTH (bytes of CSCD + segment descriptors).
pub(crate) const MAX_DESC_LIST_LEN: u32 = 4096;
/// MAXIMUM SEGMENT LENGTH in bytes, reported by RECEIVE COPY RESULTS and enforced per
/// segment (a 02h descriptor names up to 65535 blocks: 256 MiB of 4 KiB blocks).
const MAX_SEGMENT_LEN: u32 = 64 << 20;
/// Copy buffer per chunk.
const CHUNK: usize = 1 << 20;
/// Held results per logical unit.
const MAX_HELD: usize = 64;

/// Identification descriptor CSCD type code.
const CSCD_IDENT: u8 = 0xe4;
/// Block device to block device segment descriptor type code.
const SEG_BLOCK_TO_BLOCK: u8 = 0x02;

/// Results of one copy operation, held for RECEIVE COPY RESULTS.
#[derive(Debug, Clone)]
struct CopyResult {
    nexus: Nexus,
    list_id: u8,
    /// COPY MANAGER STATUS: 01h completed without errors, 02h completed with errors.
    status: u8,
    segments_processed: u16,
    bytes: u64,
    sense: Option<Sense>,
}

/// Held copy results of one logical unit.
#[derive(Debug, Default)]
pub(crate) struct CopyState {
    held: Mutex<VecDeque<CopyResult>>,
}

impl CopyState {
    fn hold(&self, r: CopyResult) {
        let mut h = self.held.lock();
        h.retain(|x| !(x.nexus == r.nexus && x.list_id == r.list_id));
        if h.len() >= MAX_HELD {
            h.pop_front();
        }
        h.push_back(r);
    }

    fn get(&self, nexus: &Nexus, list_id: u8) -> Option<CopyResult> {
        self.held
            .lock()
            .iter()
            .find(|x| x.nexus == *nexus && x.list_id == list_id)
            .cloned()
    }
}

/// One resolved segment: copy `blocks` blocks.
struct Segment {
    /// Byte offset of its descriptor in the parameter list (sense field pointers).
    at: usize,
    src: usize,
    dst: usize,
    blocks: u64,
    src_lba: u64,
    dst_lba: u64,
}

fn copy_aborted(asc: u8, ascq: u8) -> Fail {
    Fail::Check(Sense::new(SenseKey::CopyAborted, asc, ascq))
}

impl LogicalUnit {
    /// EXTENDED COPY (LID1): parse the whole parameter list, check every segment as the
    /// copy targets would, and only then move data (SPC-4 6.4).
    pub(crate) fn extended_copy(&self, req: &Request<'_>, len: u32) -> Outcome {
        if len == 0 {
            return Ok(Status::Good);
        }
        let list = ParamList::parse(req.data_out, len as usize)?;
        let targets = resolve_targets(req, list.cscds)?;
        let segments = parse_segments(list.segs, 16 + list.cscds.len())?;
        // Validate everything before moving a byte.
        for s in &segments {
            self.admit_segment(req, &targets, s)?;
        }
        let mut result = CopyResult {
            nexus: req.nexus.clone(),
            list_id: list.list_id,
            status: 0x01,
            segments_processed: 0,
            bytes: 0,
            sense: None,
        };
        let outcome = run_segments(&targets, &segments, &mut result);
        if let Err(f) = &outcome {
            result.status = 0x02;
            result.sense = match f {
                Fail::Check(s) => Some(*s),
                Fail::Status(_) => None,
            };
        }
        if list.list_id_usage == 0 {
            self.copies.hold(result);
        }
        outcome
    }

    /// Checks one segment before any data moves: both copy targets named, equal block
    /// sizes, both ranges inside the units, and the source read and the destination
    /// written as by a READ and a WRITE from this nexus.
    fn admit_segment(
        &self,
        req: &Request<'_>,
        targets: &[MappedLun],
        s: &Segment,
    ) -> Result<(), Fail> {
        let (Some(src_map), Some(dst_map)) = (targets.get(s.src), targets.get(s.dst)) else {
            return Err(copy_aborted(0x0d, 0x02));
        };
        let (src, dst) = (&src_map.lu, &dst_map.lu);
        if src.block_size != dst.block_size {
            return Err(copy_aborted(0x0d, 0x02));
        }
        // More than the MAXIMUM SEGMENT LENGTH we report: INVALID FIELD IN PARAMETER
        // LIST at the descriptor's NUMBER OF BLOCKS (byte 10, SPC-4 6.4.6.2).
        if s.blocks * u64::from(src.block_size) > u64::from(MAX_SEGMENT_LEN) {
            let field = u16::try_from(s.at + 10).unwrap_or(u16::MAX);
            return Err(Sense::invalid_field_in_param(field, None).into());
        }
        let in_range = |lu: &LogicalUnit, lba: u64| {
            lba.checked_add(s.blocks)
                .is_some_and(|end| end <= lu.capacity_blocks())
        };
        if !in_range(src, s.src_lba) || !in_range(dst, s.dst_lba) {
            // The copy target would answer LBA OUT OF RANGE; the copy manager reports
            // COPY ABORTED (SPC-4 6.4.5).
            return Err(copy_aborted(0x00, 0x00));
        }
        // The source is read and the destination written as by a READ and a
        // WRITE from this nexus: the same reservation and write-protect checks.
        // `blocks` came from a 16-bit field, so it fits the commands' u32.
        let blocks = u32::try_from(s.blocks).unwrap_or(u32::MAX);
        let read = Command::Read {
            lba: s.src_lba,
            blocks,
            fua: false,
            dpo: false,
        };
        let write = Command::Write {
            lba: s.dst_lba,
            blocks,
            fua: false,
            dpo: false,
        };
        src.admit(req.nexus, &read, src_map.write_protected)?;
        // The command's own LUN mapping counts too if it is the destination.
        let dst_wp = dst_map.write_protected
            || (std::ptr::eq(Arc::as_ptr(dst), self) && req.write_protected);
        dst.admit(req.nexus, &write, dst_wp)?;
        Ok(())
    }

    /// RECEIVE COPY RESULTS (SPC-4 6.18).
    pub(crate) fn receive_copy_results(
        &self,
        req: &Request<'_>,
        sa: u8,
        list_id: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        match sa {
            0x00 => {
                let r = self
                    .copies
                    .get(req.nexus, list_id)
                    .ok_or(Fail::Check(Sense::invalid_field_in_cdb(2, None)))?;
                out.extend_from_slice(&8u32.to_be_bytes());
                out.push(r.status & 0x7f); // HDD = 0
                out.extend_from_slice(&r.segments_processed.to_be_bytes());
                // TRANSFER COUNT UNITS: bytes if it fits, else KiB.
                match u32::try_from(r.bytes) {
                    Ok(b) => {
                        out.push(0x00);
                        out.extend_from_slice(&b.to_be_bytes());
                    }
                    Err(_) => {
                        out.push(0x01);
                        out.extend_from_slice(
                            &u32::try_from(r.bytes >> 10)
                                .unwrap_or(u32::MAX)
                                .to_be_bytes(),
                        );
                    }
                }
            }
            0x03 => {
                let mut d = vec![0u8; 44];
                d[8..10].copy_from_slice(&MAX_CSCD.to_be_bytes());
                d[10..12].copy_from_slice(&MAX_SEGMENTS.to_be_bytes());
                d[12..16].copy_from_slice(&MAX_DESC_LIST_LEN.to_be_bytes());
                d[16..20].copy_from_slice(&MAX_SEGMENT_LEN.to_be_bytes());
                // MAXIMUM INLINE DATA LENGTH 0, HELD DATA LIMIT 0, stream size 0.
                d[34..36].copy_from_slice(&1u16.to_be_bytes()); // TOTAL CONCURRENT COPIES
                d[36] = 1; // MAXIMUM CONCURRENT COPIES
                d[37] = self.block_size.trailing_zeros() as u8; // DATA SEGMENT GRANULARITY
                let codes = [SEG_BLOCK_TO_BLOCK, CSCD_IDENT];
                d[43] = codes.len() as u8;
                d.extend_from_slice(&codes);
                let avail = (d.len() - 4) as u32;
                d[0..4].copy_from_slice(&avail.to_be_bytes());
                out.extend_from_slice(&d);
            }
            0x04 => {
                let r = self
                    .copies
                    .get(req.nexus, list_id)
                    .ok_or(Fail::Check(Sense::invalid_field_in_cdb(2, None)))?;
                let mut d = vec![0u8; 60];
                match r.sense {
                    Some(s) => {
                        d[56] = Status::CheckCondition as u8;
                        let sb = s.to_fixed();
                        d[58..60].copy_from_slice(&(sb.len() as u16).to_be_bytes());
                        d.extend_from_slice(&sb);
                    }
                    None => d[56] = Status::Good as u8,
                }
                let avail = (d.len() - 4) as u32;
                d[0..4].copy_from_slice(&avail.to_be_bytes());
                out.extend_from_slice(&d);
            }
            _ => return Err(Sense::invalid_field_in_cdb(1, Some(4)).into()),
        }
        Ok(())
    }

    /// Third-party Copy VPD page (SPC-4 7.8.17): the supported commands descriptor.
    pub(crate) fn third_party_copy_vpd(&self, out: &mut Vec<u8>) {
        // Supported Commands third-party copy descriptor (type 0001h).
        let list = [
            op::EXTENDED_COPY,
            1,
            0x00,
            op::RECEIVE_COPY_RESULTS,
            3,
            0x00,
            0x03,
            0x04,
        ];
        let mut desc = vec![0x00, 0x01, 0, 0, list.len() as u8];
        desc.extend_from_slice(&list);
        while desc.len() % 4 != 0 {
            desc.push(0);
        }
        let dlen = (desc.len() - 4) as u16;
        desc[2..4].copy_from_slice(&dlen.to_be_bytes());
        out.push(0x00);
        out.push(0x8f);
        out.extend_from_slice(&(desc.len() as u16).to_be_bytes());
        out.extend_from_slice(&desc);
    }
}

/// The parameter list header of EXTENDED COPY (LID1) (SPC-4 6.4.3.1, table 102) and the
/// two descriptor lists it frames.
#[derive(Debug)]
struct ParamList<'a> {
    list_id: u8,
    /// LIST ID USAGE (byte 1 bits 4-3).
    list_id_usage: u8,
    /// CSCD descriptors, from byte 16.
    cscds: &'a [u8],
    /// Segment descriptors, after the CSCD descriptors.
    segs: &'a [u8],
}

impl<'a> ParamList<'a> {
    /// Parses the 16-byte header of the first `len` bytes of `data` and checks the
    /// lengths it gives against `len` and our limits.
    fn parse(data: &'a [u8], len: usize) -> Result<Self, Fail> {
        let p = data
            .get(..len)
            .ok_or(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))?;
        if len < 16 {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let list_id_usage = (p[1] >> 3) & 0x03;
        let cscd_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
        let seg_len = u32::from_be_bytes([p[8], p[9], p[10], p[11]]) as usize;
        let inline_len = u32::from_be_bytes([p[12], p[13], p[14], p[15]]) as usize;
        let total = 16usize
            .checked_add(cscd_len)
            .and_then(|t| t.checked_add(seg_len))
            .and_then(|t| t.checked_add(inline_len))
            .ok_or(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))?;
        if total > len {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        if cscd_len + seg_len > MAX_DESC_LIST_LEN as usize {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        if list_id_usage == 0b01 {
            // LIST ID USAGE 01b is reserved (SPC-4 6.4.3.2).
            return Err(Sense::invalid_field_in_param(1, Some(4)).into());
        }
        if inline_len != 0 {
            return Err(Sense::invalid_field_in_param(12, None).into());
        }
        Ok(ParamList {
            list_id: p[0],
            list_id_usage,
            cscds: &p[16..16 + cscd_len],
            segs: &p[16 + cscd_len..16 + cscd_len + seg_len],
        })
    }
}

/// Resolves the CSCD descriptors (all 32 bytes for the types we know), in order: a
/// segment names its copy targets by index into this list.
fn resolve_targets(req: &Request<'_>, cscds: &[u8]) -> Result<Vec<MappedLun>, Fail> {
    if cscds.len() % 32 != 0 {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
    }
    if cscds.len() / 32 > usize::from(MAX_CSCD) {
        return Err(Sense::TOO_MANY_TARGET_DESCRIPTORS.into());
    }
    let mut targets = Vec::new();
    for (i, d) in cscds.chunks(32).enumerate() {
        let at = (16 + i * 32) as u16;
        targets.push(resolve_cscd(req, d, at)?);
    }
    Ok(targets)
}

/// Parses the segment descriptors; only block → block (02h, SPC-4 6.4.6.2) is supported.
/// `base` is the byte offset of `segs` in the parameter list, for sense field pointers.
fn parse_segments(segs: &[u8], base: usize) -> Result<Vec<Segment>, Fail> {
    let mut segments = Vec::new();
    let mut pos = 0usize;
    while pos < segs.len() {
        let at = base + pos;
        let d = &segs[pos..];
        if d.len() < 4 {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        if segments.len() >= usize::from(MAX_SEGMENTS) {
            return Err(Sense::TOO_MANY_SEGMENT_DESCRIPTORS.into());
        }
        if d[0] != SEG_BLOCK_TO_BLOCK {
            return Err(Sense::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE
                .with_field_pointer(false, at as u16, None)
                .into());
        }
        let dlen = 4 + usize::from(u16::from_be_bytes([d[2], d[3]]));
        if dlen != 28 {
            return Err(Sense::invalid_field_in_param((at + 2) as u16, None).into());
        }
        if d.len() < dlen {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        segments.push(Segment {
            at,
            src: usize::from(u16::from_be_bytes([d[4], d[5]])),
            dst: usize::from(u16::from_be_bytes([d[6], d[7]])),
            blocks: u64::from(u16::from_be_bytes([d[10], d[11]])),
            src_lba: u64::from_be_bytes(d[12..20].try_into().unwrap_or([0; 8])),
            dst_lba: u64::from_be_bytes(d[20..28].try_into().unwrap_or([0; 8])),
        });
        pos += dlen;
    }
    Ok(segments)
}

/// Copies the segments in order, stopping at the first failure; `result` counts what
/// was done (SPC-4 6.18.3: SEGMENTS PROCESSED, TRANSFER COUNT).
fn run_segments(targets: &[MappedLun], segments: &[Segment], result: &mut CopyResult) -> Outcome {
    for s in segments {
        let (Some(src), Some(dst)) = (targets.get(s.src), targets.get(s.dst)) else {
            return Err(copy_aborted(0x0d, 0x02));
        };
        let n = copy_segment(&src.lu, &dst.lu, s)?;
        result.bytes += n;
        result.segments_processed += 1;
    }
    Ok(Status::Good)
}

/// Resolves an identification CSCD descriptor (SPC-4 6.4.5.6) to a logical unit the
/// requesting nexus may access: only units in its LUN map are reachable (SPC-4 6.4.5:
/// an unreachable copy target is COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE).
fn resolve_cscd(req: &Request<'_>, d: &[u8], at: u16) -> Result<MappedLun, Fail> {
    if d[0] != CSCD_IDENT {
        return Err(Sense::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE
            .with_field_pointer(false, at, None)
            .into());
    }
    // LU ID TYPE is ignored (SPC-4); NUL is obsolete. Only block devices.
    if d[1] & 0x1f != 0 {
        return Err(Sense::invalid_field_in_param(at + 1, Some(4)).into());
    }
    let code_set = d[4] & 0x0f;
    let designator_type = d[5] & 0x0f;
    let dlen = usize::from(d[7]);
    if code_set != 1 || designator_type != 3 || dlen != 16 {
        // Only NAA designators identify our units.
        return Err(copy_aborted(0x0d, 0x02));
    }
    let m = req.luns.by_naa(&d[8..24]).ok_or(copy_aborted(0x0d, 0x02))?;
    let disk_block_len = u32::from_be_bytes([0, d[29], d[30], d[31]]);
    if disk_block_len != m.lu.block_size {
        return Err(Sense::invalid_field_in_param(at + 29, None).into());
    }
    Ok(m)
}

/// Copies one segment, chunk by chunk; overlapping ranges on the same unit are copied
/// in the safe direction. Returns the bytes moved.
fn copy_segment(src: &LogicalUnit, dst: &LogicalUnit, s: &Segment) -> Result<u64, Fail> {
    let bs = u64::from(src.block_size);
    let total = s.blocks * bs;
    if total == 0 {
        return Ok(0);
    }
    let chunk_blocks = (CHUNK as u64 / bs).max(1);
    let mut buf = vec![0u8; (chunk_blocks.min(s.blocks) * bs) as usize];
    let same = std::ptr::eq(src, dst);
    let backwards = same && s.dst_lba > s.src_lba && s.dst_lba < s.src_lba + s.blocks;
    let flags = WriteFlags {
        fua: !dst.mode.wce(),
    };
    let mut done = 0u64;
    while done < s.blocks {
        let n = chunk_blocks.min(s.blocks - done);
        let off = if backwards { s.blocks - done - n } else { done };
        let b = &mut buf[..(n * bs) as usize];
        src.backstore
            .read_at(b, (s.src_lba + off) * bs)
            .map_err(|e| Fail::backstore(&e, false))?;
        let _range = dst.locks.shared(s.dst_lba + off, n);
        dst.backstore
            .write_at(b, (s.dst_lba + off) * bs, flags)
            .map_err(|e| Fail::backstore(&e, true))?;
        done += n;
    }
    Ok(total)
}

#[cfg(test)]
mod unit {
    use super::*;

    /// A parameter list header (SPC-4 6.4.3.1) with the given lengths, padded to `total`.
    fn header(list_id: u8, usage: u8, cscd: u16, seg: u32, inline: u32, total: usize) -> Vec<u8> {
        let mut p = vec![0u8; total.max(16)];
        p[0] = list_id;
        p[1] = usage << 3;
        p[2..4].copy_from_slice(&cscd.to_be_bytes());
        p[8..12].copy_from_slice(&seg.to_be_bytes());
        p[12..16].copy_from_slice(&inline.to_be_bytes());
        p
    }

    #[test]
    fn param_list_header_frames_the_descriptor_lists() {
        let p = header(7, 0b10, 32, 28, 0, 16 + 32 + 28);
        let l = ParamList::parse(&p, p.len()).unwrap();
        assert_eq!((l.list_id, l.list_id_usage), (7, 0b10));
        assert_eq!((l.cscds.len(), l.segs.len()), (32, 28));
        let len_err = Err(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR));
        // Shorter than the header, shorter than the lists, past the descriptor limit.
        assert_eq!(ParamList::parse(&p, 15).map(|_| ()), len_err);
        assert_eq!(ParamList::parse(&p, 16 + 32).map(|_| ()), len_err);
        assert_eq!(ParamList::parse(&p, p.len() + 1).map(|_| ()), len_err);
        let big = header(0, 0, 0, MAX_DESC_LIST_LEN + 1, 0, 16 + 4097);
        assert_eq!(ParamList::parse(&big, big.len()).map(|_| ()), len_err);
        // LIST ID USAGE 01b is reserved (SPC-4 6.4.3.2): byte 1 bit 4.
        let r = header(0, 0b01, 0, 0, 0, 16);
        let e = ParamList::parse(&r, 16).map(|_| ());
        assert_eq!(e, Err(Sense::invalid_field_in_param(1, Some(4)).into()));
        // Inline data is not supported: INLINE DATA LENGTH at byte 12.
        let i = header(0, 0, 0, 0, 4, 20);
        let e = ParamList::parse(&i, 20).map(|_| ());
        assert_eq!(e, Err(Sense::invalid_field_in_param(12, None).into()));
    }

    #[test]
    fn block_to_block_segments_are_decoded() {
        // SPC-4 6.4.6.2: type 02h, DESCRIPTOR LENGTH 0018h, source/destination CSCD
        // indexes, BLOCK DEVICE NUMBER OF BLOCKS, source and destination LBAs.
        let mut d = vec![0u8; 28];
        d[0] = SEG_BLOCK_TO_BLOCK;
        d[2..4].copy_from_slice(&0x18u16.to_be_bytes());
        d[4..6].copy_from_slice(&1u16.to_be_bytes());
        d[10..12].copy_from_slice(&8u16.to_be_bytes());
        d[12..20].copy_from_slice(&100u64.to_be_bytes());
        d[20..28].copy_from_slice(&200u64.to_be_bytes());
        let s = parse_segments(&d, 48).unwrap();
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(
            (s.src, s.dst, s.blocks, s.src_lba, s.dst_lba),
            (1, 0, 8, 100, 200)
        );
        // A wrong descriptor length is pointed at (byte 2 of the descriptor).
        d[3] = 0x10;
        let e = parse_segments(&d, 48).map(|_| ());
        assert_eq!(e, Err(Sense::invalid_field_in_param(50, None).into()));
        // Any other type is UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE at its first byte.
        d[0] = 0x01;
        let e = parse_segments(&d, 48).map(|_| ());
        let want =
            Sense::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE.with_field_pointer(false, 48, None);
        assert_eq!(e, Err(want.into()));
    }
}
