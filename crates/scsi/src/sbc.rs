//! Block commands (SBC-4 5): READ CAPACITY, READ, WRITE, WRITE AND VERIFY, VERIFY,
//! SYNCHRONIZE CACHE, PRE-FETCH, UNMAP, WRITE SAME, COMPARE AND WRITE, GET LBA STATUS,
//! FORMAT UNIT.
//!
//! READ reads straight into the caller's data-in buffer and WRITE writes straight from
//! the data-out buffer: no intermediate copies.

use rustio_backstore::{Extent, WriteFlags};

use crate::cdb::Command;
use crate::direct::DirectIn;
use crate::lu::{Fail, LogicalUnit, Outcome};
use crate::nexus::Request;
use crate::sense::Sense;
use crate::status::Status;

/// Size of scratch buffers for VERIFY / WRITE SAME, bounding memory per command.
const CHUNK: usize = 1 << 20;

/// Byte offset of the transfer length field for an opcode (for field pointers).
fn transfer_length_byte(opcode: u8) -> u16 {
    match opcode >> 5 {
        0 => 4,
        1 | 2 => 7,
        5 => 6,
        _ => 10,
    }
}

impl LogicalUnit {
    /// Checks `[lba, lba+blocks)` against the capacity (SBC-4 4.5: LOGICAL BLOCK ADDRESS
    /// OUT OF RANGE). `lba == capacity` with zero blocks is accepted.
    pub(crate) fn check_lba_range(&self, lba: u64, blocks: u64) -> Result<(), Fail> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.capacity_blocks() => Ok(()),
            _ => Err(Sense::LBA_OUT_OF_RANGE.into()),
        }
    }

    /// Checks a transfer length against MAXIMUM TRANSFER LENGTH (SBC-4 6.6.3).
    fn check_transfer_length(&self, req: &Request<'_>, blocks: u32) -> Result<(), Fail> {
        if blocks > self.config.max_transfer_blocks {
            let op = req.cdb.first().copied().unwrap_or(0);
            return Err(Sense::invalid_field_in_cdb(transfer_length_byte(op), None).into());
        }
        Ok(())
    }

    /// Byte offset of `lba` (callers have range-checked it, so this cannot overflow for a
    /// capacity that fits in `u64` bytes; checked anyway).
    fn byte_offset(&self, lba: u64) -> Result<u64, Fail> {
        lba.checked_mul(u64::from(self.block_size))
            .ok_or(Fail::Check(Sense::LBA_OUT_OF_RANGE))
    }

    fn byte_len(&self, blocks: u64) -> Result<usize, Fail> {
        blocks
            .checked_mul(u64::from(self.block_size))
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(Fail::Check(Sense::INVALID_FIELD_IN_CDB))
    }

    /// Write flags honouring the caching mode page: with WCE = 0 every write is
    /// write-through (SBC-4 6.5.5).
    pub(crate) fn write_flags(&self, fua: bool) -> WriteFlags {
        WriteFlags {
            fua: fua || !self.mode.wce(),
        }
    }

    /// The data-out bytes a command needs, or INVALID FIELD IN INFORMATION UNIT if the
    /// initiator sent fewer (the transport computes the residual).
    pub(crate) fn need_data_out<'d>(
        &self,
        req: &Request<'d>,
        len: usize,
    ) -> Result<&'d [u8], Fail> {
        req.data_out
            .get(..len)
            .ok_or(Fail::Check(Sense::INVALID_FIELD_IN_INFORMATION_UNIT))
    }

    /// READ CAPACITY(10) (SBC-4 5.20): last LBA (FFFFFFFFh if it does not fit) and the
    /// block length.
    pub(crate) fn read_capacity10(&self, out: &mut Vec<u8>) -> Outcome {
        let last = self.capacity_blocks().saturating_sub(1);
        let last32 = u32::try_from(last).unwrap_or(u32::MAX);
        out.extend_from_slice(&last32.to_be_bytes());
        out.extend_from_slice(&self.block_size.to_be_bytes());
        Ok(Status::Good)
    }

    /// READ CAPACITY(16) (SBC-4 5.21).
    pub(crate) fn read_capacity16(&self, alloc: u32, out: &mut Vec<u8>) -> Outcome {
        let last = self.capacity_blocks().saturating_sub(1);
        let caps = self.backstore.capabilities();
        out.extend_from_slice(&last.to_be_bytes());
        out.extend_from_slice(&self.block_size.to_be_bytes());
        out.push(0); // P_TYPE / PROT_EN: no protection information
        out.push(self.config.physical_block_exponent & 0x0f);
        let mut b14 = 0u8;
        if caps.discard {
            b14 |= 0x80; // LBPME
            if caps.discard_zeroes {
                b14 |= 0x40; // LBPRZ
            }
        }
        out.push(b14);
        out.push(0); // LOWEST ALIGNED LOGICAL BLOCK ADDRESS
        out.resize(32, 0);
        out.truncate(alloc as usize);
        Ok(Status::Good)
    }

    /// The checks of a READ or WRITE of `blocks` at `lba` and where it goes: the byte
    /// offset and length, or `None` for a transfer of zero blocks (GOOD, nothing moved).
    pub(crate) fn plan_transfer(
        &self,
        req: &Request<'_>,
        lba: u64,
        blocks: u32,
    ) -> Result<Option<(u64, usize)>, Fail> {
        self.check_lba_range(lba, u64::from(blocks))?;
        self.check_transfer_length(req, blocks)?;
        if blocks == 0 {
            // SBC-4 5.3: zero blocks is not an error, but data sent with it has no
            // defined split into verify and write halves (e.g. an initiator that
            // stored 256 in the one-byte NUMBER OF LOGICAL BLOCKS field); the field is
            // inconsistent with the command, as LIO also rejects such a data-out.
            if !req.data_out.is_empty() {
                return Err(Sense::invalid_field_in_cdb(13, None).into());
            }
            return Ok(None);
        }
        let len = self.byte_len(u64::from(blocks))?;
        let offset = self.byte_offset(lba)?;
        Ok(Some((offset, len)))
    }

    /// READ(6/10/12/16) (SBC-4 5.13-5.16): reads straight into the transport's buffers
    /// when they fit exactly (`direct`), or lends the range of a plain file when the
    /// transport accepts one, otherwise into `data_in`.
    pub(crate) fn read(
        &self,
        req: &Request<'_>,
        lba: u64,
        blocks: u32,
        data_in: &mut Vec<u8>,
        direct: Option<&mut DirectIn<'_, '_>>,
    ) -> Outcome {
        let Some((offset, len)) = self.plan_transfer(req, lba, blocks)? else {
            return Ok(Status::Good);
        };
        if let Some(d) = direct {
            // Nothing read now: the transport sends the range from the page cache
            // (`crate::direct`).
            if d.wants_file_for(len) {
                if let Some(r) = self.backstore.file_range(offset, len) {
                    d.set_file(r);
                    return Ok(Status::Good);
                }
            }
            if let Some(bufs) = d.take_for(len) {
                self.backstore
                    .read_vectored_at(bufs, offset)
                    .map_err(|e| Fail::backstore(&e, false))?;
                d.set_used(true);
                return Ok(Status::Good);
            }
        }
        data_in.resize(len, 0);
        self.backstore
            .read_at(&mut data_in[..], offset)
            .map_err(|e| Fail::backstore(&e, false))?;
        Ok(Status::Good)
    }

    /// WRITE(6/10/12/16) and WRITE AND VERIFY (SBC-4 5.40-5.46): writes straight from the
    /// data-out buffer. WRITE AND VERIFY writes with FUA; the verification against the
    /// medium then cannot fail short of a medium error, which the write reports.
    pub(crate) fn write(&self, req: &Request<'_>, lba: u64, blocks: u32, fua: bool) -> Outcome {
        let Some((offset, len)) = self.plan_transfer(req, lba, blocks)? else {
            return Ok(Status::Good);
        };
        let data = self.need_data_out(req, len)?;
        let _range = self.locks.shared(lba, u64::from(blocks));
        self.backstore
            .write_at(data, offset, self.write_flags(fua))
            .map_err(|e| Fail::backstore(&e, true))?;
        Ok(Status::Good)
    }

    /// VERIFY(10/12/16) (SBC-4 5.33-5.35). BYTCHK 00b reads the range (medium check),
    /// 01b compares it with the data-out buffer, 11b compares every block with the one
    /// data-out block. A mismatch is MISCOMPARE DURING VERIFY OPERATION with the byte
    /// offset into the data-out buffer in INFORMATION.
    pub(crate) fn verify(&self, req: &Request<'_>, lba: u64, blocks: u32, bytchk: u8) -> Outcome {
        self.check_lba_range(lba, u64::from(blocks))?;
        self.check_transfer_length(req, blocks)?;
        if blocks == 0 {
            return Ok(Status::Good);
        }
        let total = self.byte_len(u64::from(blocks))?;
        let bs = self.block_size as usize;
        let expected: Option<&[u8]> = match bytchk {
            0 => None,
            1 => Some(self.need_data_out(req, total)?),
            _ => Some(self.need_data_out(req, bs)?),
        };
        let base = self.byte_offset(lba)?;
        let chunk_len = CHUNK.max(bs) / bs * bs;
        let mut buf = vec![0u8; chunk_len.min(total)];
        let mut done = 0usize;
        while done < total {
            let n = (total - done).min(buf.len());
            self.backstore
                .read_at(&mut buf[..n], base + done as u64)
                .map_err(|e| Fail::backstore(&e, false))?;
            if let Some(exp) = expected {
                let mismatch = if bytchk == 1 {
                    first_difference(&buf[..n], &exp[done..done + n])
                } else {
                    buf[..n]
                        .chunks(bs)
                        .enumerate()
                        .find_map(|(i, b)| first_difference(b, exp).map(|o| i * bs + o))
                };
                if let Some(at) = mismatch {
                    return Err(Sense::MISCOMPARE_DURING_VERIFY
                        .with_information((done + at) as u64)
                        .into());
                }
            }
            done += n;
        }
        Ok(Status::Good)
    }

    /// SYNCHRONIZE CACHE(10/16) (SBC-4 5.31): range check, then flush everything.
    pub(crate) fn synchronize_cache(&self, lba: u64, blocks: u32) -> Outcome {
        self.check_lba_range(lba, u64::from(blocks))?;
        self.backstore
            .flush()
            .map_err(|e| Fail::backstore(&e, true))?;
        Ok(Status::Good)
    }

    /// PRE-FETCH(10/16) (SBC-4 5.11): nothing to stage; the blocks "fit in the cache", so
    /// CONDITION MET.
    pub(crate) fn pre_fetch(&self, lba: u64, blocks: u32) -> Outcome {
        self.check_lba_range(lba, u64::from(blocks))?;
        Ok(Status::ConditionMet)
    }

    /// Whether UNMAP and WRITE SAME with UNMAP = 1 are available (LBPU / LBPWS).
    pub(crate) fn supports_unmap(&self) -> bool {
        self.backstore.capabilities().discard
    }

    /// UNMAP (SBC-4 5.30).
    pub(crate) fn unmap(&self, req: &Request<'_>, anchor: bool, len: u32) -> Outcome {
        if !self.supports_unmap() {
            return Err(Sense::invalid_opcode().into());
        }
        if anchor {
            // ANC_SUP = 0 (SBC-4 5.30.1).
            return Err(Sense::invalid_field_in_cdb(1, Some(0)).into());
        }
        if len == 0 {
            return Ok(Status::Good);
        }
        let len = (len as usize).min(req.data_out.len());
        if len < 8 {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR.into());
        }
        let p = &req.data_out[..len];
        let bd_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
        // SBC-4 5.30.2: descriptors beyond the parameter list are ignored; an incomplete
        // last descriptor is ignored.
        let avail = (len - 8).min(bd_len);
        let count = avail / 16;
        if count > self.config.max_unmap_descriptors as usize {
            return Err(Sense::invalid_field_in_param(2, None).into());
        }
        let mut ranges = Vec::with_capacity(count);
        let mut total = 0u64;
        for i in 0..count {
            let d = &p[8 + i * 16..8 + (i + 1) * 16];
            let lba = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            let n = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
            self.check_lba_range(lba, u64::from(n))?;
            total = total.saturating_add(u64::from(n));
            if total > u64::from(self.config.max_unmap_blocks) {
                return Err(Sense::invalid_field_in_param((8 + i * 16 + 8) as u16, None).into());
            }
            if n > 0 {
                ranges.push((lba, u64::from(n)));
            }
        }
        for (lba, n) in ranges {
            let _range = self.locks.shared(lba, n);
            let off = self.byte_offset(lba)?;
            let bytes = n
                .checked_mul(u64::from(self.block_size))
                .ok_or(Fail::Check(Sense::LBA_OUT_OF_RANGE))?;
            self.backstore
                .discard(off, bytes)
                .map_err(|e| Fail::backstore(&e, true))?;
        }
        Ok(Status::Good)
    }

    /// WRITE SAME(10/16) (SBC-4 5.47, 5.48).
    pub(crate) fn write_same(&self, req: &Request<'_>, cmd: Command) -> Outcome {
        let Command::WriteSame {
            sixteen,
            lba,
            blocks,
            unmap,
            anchor,
            ndob,
        } = cmd
        else {
            return Err(Sense::INVALID_FIELD_IN_CDB.into());
        };
        if anchor {
            // ANCHOR needs UNMAP = 1 and ANC_SUP = 1; we have ANC_SUP = 0.
            return Err(Sense::invalid_field_in_cdb(1, Some(4)).into());
        }
        if unmap && !self.supports_unmap() {
            // LBPWS / LBPWS10 = 0: the UNMAP bit is not supported.
            return Err(Sense::invalid_field_in_cdb(1, Some(3)).into());
        }
        let cap = self.capacity_blocks();
        let count = if blocks == 0 {
            // WSNZ = 0: zero means "to the end of the medium" (SBC-4 5.48).
            if lba > cap {
                return Err(Sense::LBA_OUT_OF_RANGE.into());
            }
            cap - lba
        } else {
            self.check_lba_range(lba, u64::from(blocks))?;
            u64::from(blocks)
        };
        if count > self.config.max_write_same_blocks {
            let byte = if sixteen { 10 } else { 7 };
            return Err(Sense::invalid_field_in_cdb(byte, None).into());
        }
        let bs = self.block_size as usize;
        let pattern: Option<&[u8]> = if ndob {
            None
        } else {
            if req.data_out.len() != bs {
                return Err(Sense::INVALID_FIELD_IN_INFORMATION_UNIT.into());
            }
            Some(req.data_out)
        };
        if count == 0 {
            return Ok(Status::Good);
        }
        // With UNMAP = 1 the range is deallocated whatever the Data-Out block holds, and
        // then reads as zeros (LBPRZ) — what Linux LIO does and what libiscsi's
        // WRITE SAME UNMAP tests expect; otherwise a zero block is written as zeros.
        let zeros = unmap || pattern.is_none_or(|p| p.iter().all(|&b| b == 0));
        let offset = self.byte_offset(lba)?;
        let total = count
            .checked_mul(bs as u64)
            .ok_or(Fail::Check(Sense::LBA_OUT_OF_RANGE))?;
        let _range = self.locks.shared(lba, count);
        match pattern.filter(|_| !zeros) {
            None => {
                self.backstore
                    .write_zeroes(offset, total, unmap)
                    .map_err(|e| Fail::backstore(&e, true))?;
                if !self.mode.wce() {
                    self.backstore
                        .flush()
                        .map_err(|e| Fail::backstore(&e, true))?;
                }
            }
            Some(p) => {
                let per = (CHUNK / bs).max(1);
                let chunk_blocks = (per as u64).min(count) as usize;
                let buf = p.repeat(chunk_blocks);
                let flags = self.write_flags(false);
                let mut done = 0u64;
                while done < total {
                    let n = (total - done).min(buf.len() as u64) as usize;
                    self.backstore
                        .write_at(&buf[..n], offset + done, flags)
                        .map_err(|e| Fail::backstore(&e, true))?;
                    done += n as u64;
                }
            }
        }
        Ok(Status::Good)
    }

    /// COMPARE AND WRITE (SBC-4 5.3): atomic against other writers to the range
    /// (exclusive range lock). The data-out buffer holds the verify data followed by the
    /// write data.
    pub(crate) fn compare_and_write(
        &self,
        req: &Request<'_>,
        lba: u64,
        blocks: u8,
        fua: bool,
    ) -> Outcome {
        self.check_lba_range(lba, u64::from(blocks))?;
        if blocks > self.config.max_compare_write_blocks {
            return Err(Sense::invalid_field_in_cdb(13, None).into());
        }
        if blocks == 0 {
            // SBC-4 5.3: zero blocks is not an error, but data sent with it has no
            // defined split into verify and write halves (e.g. an initiator that
            // stored 256 in the one-byte NUMBER OF LOGICAL BLOCKS field); the field is
            // inconsistent with the command, as LIO also rejects such a data-out.
            if !req.data_out.is_empty() {
                return Err(Sense::invalid_field_in_cdb(13, None).into());
            }
            return Ok(Status::Good);
        }
        let len = self.byte_len(u64::from(blocks))?;
        if req.data_out.len() != 2 * len {
            return Err(Sense::INVALID_FIELD_IN_INFORMATION_UNIT.into());
        }
        let (verify, write) = req.data_out.split_at(len);
        let offset = self.byte_offset(lba)?;
        let _range = self.locks.exclusive(lba, u64::from(blocks));
        let mut current = vec![0u8; len];
        self.backstore
            .read_at(&mut current, offset)
            .map_err(|e| Fail::backstore(&e, false))?;
        if let Some(at) = first_difference(&current, verify) {
            return Err(Sense::MISCOMPARE_DURING_VERIFY
                .with_information(at as u64)
                .into());
        }
        self.backstore
            .write_at(write, offset, self.write_flags(fua))
            .map_err(|e| Fail::backstore(&e, true))?;
        Ok(Status::Good)
    }

    /// GET LBA STATUS (SBC-4 5.6) from [`rustio_backstore::Backstore::block_status`].
    pub(crate) fn get_lba_status(&self, lba: u64, alloc: u32, out: &mut Vec<u8>) -> Outcome {
        let cap = self.capacity_blocks();
        if lba >= cap {
            return Err(Sense::LBA_OUT_OF_RANGE.into());
        }
        // As many descriptors as the allocation length can hold (at least one), capped.
        let max_desc = ((alloc as usize).saturating_sub(8) / 16).clamp(1, 256);
        let bs = u64::from(self.block_size);
        // Look at a bounded window so a huge LU costs bounded work per command.
        let window_blocks = (cap - lba).min((1u64 << 30) / bs);
        let offset = self.byte_offset(lba)?;
        let extents = self
            .backstore
            .block_status(offset, window_blocks * bs)
            .map_err(|e| Fail::backstore(&e, false))?;
        let descs = lba_status_descriptors(&extents, lba, lba + window_blocks, bs, max_desc);
        out.extend_from_slice(&((descs.len() * 16 + 4) as u32).to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        for (start, n, mapped) in descs {
            out.extend_from_slice(&start.to_be_bytes());
            out.extend_from_slice(&n.to_be_bytes());
            out.push(if mapped { 0 } else { 1 });
            out.extend_from_slice(&[0; 3]);
        }
        out.truncate(alloc as usize);
        Ok(Status::Good)
    }

    /// FORMAT UNIT (SBC-4 5.4): no protection information and no defect management, so
    /// there is nothing to do beyond validating the parameter list header.
    pub(crate) fn format_unit(&self, req: &Request<'_>, fmtdata: bool, longlist: bool) -> Outcome {
        if !fmtdata {
            return Ok(Status::Good);
        }
        let hdr = if longlist { 8 } else { 4 };
        let p = req
            .data_out
            .get(..hdr)
            .ok_or(Fail::Check(Sense::PARAMETER_LIST_LENGTH_ERROR))?;
        // FOV/DPRY/DCRT/STPF are accepted; IP (initialization pattern) is not supported.
        if p[1] & 0x08 != 0 {
            return Err(Sense::invalid_field_in_param(1, Some(3)).into());
        }
        let defect_len = if longlist {
            u32::from_be_bytes([p[4], p[5], p[6], p[7]])
        } else {
            u32::from(u16::from_be_bytes([p[2], p[3]]))
        };
        if defect_len != 0 {
            return Err(Sense::invalid_field_in_param(if longlist { 4 } else { 2 }, None).into());
        }
        Ok(Status::Good)
    }
}

/// Offset of the first differing byte of two equally long slices.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Converts byte extents into (LBA, blocks, mapped) descriptors that start at `lba`,
/// merging neighbours with the same status and stopping at `end` or `max`.
fn lba_status_descriptors(
    extents: &[Extent],
    lba: u64,
    end: u64,
    bs: u64,
    max: usize,
) -> Vec<(u64, u32, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    let mut next = lba;
    for e in extents {
        let first = e.offset / bs;
        let last = e.offset.saturating_add(e.len).div_ceil(bs).min(end);
        let start = first.max(next);
        if last <= start {
            continue;
        }
        if start > next {
            // Gap not described by the engine: we cannot say; stop at what we know.
            break;
        }
        match out.last_mut() {
            Some(prev) if prev.2 == e.mapped && prev.0 + prev.1 == start => prev.1 += last - start,
            _ => out.push((start, last - start, e.mapped)),
        }
        next = last;
    }
    if out.is_empty() {
        // Nothing described: report the first block as mapped (SBC-4 allows reporting
        // mapped when the status is unknown and LBPRZ does not apply).
        out.push((lba, 1, true));
    }
    let mut res = Vec::new();
    for (s, n, m) in out {
        // NUMBER OF LOGICAL BLOCKS is 32 bits: split longer runs.
        let mut s = s;
        let mut n = n;
        while n > 0 && res.len() < max {
            let take = n.min(u64::from(u32::MAX));
            res.push((s, take as u32, m));
            s += take;
            n -= take;
        }
        if res.len() >= max {
            break;
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_merge_and_start_at_lba() {
        let ext = [
            Extent {
                offset: 0,
                len: 4096,
                mapped: true,
            },
            Extent {
                offset: 4096,
                len: 4096,
                mapped: true,
            },
            Extent {
                offset: 8192,
                len: 1024,
                mapped: false,
            },
        ];
        let d = lba_status_descriptors(&ext, 2, 100, 512, 10);
        assert_eq!(d, vec![(2, 14, true), (16, 2, false)]);
        let d = lba_status_descriptors(&ext, 2, 100, 512, 1);
        assert_eq!(d, vec![(2, 14, true)]);
    }

    #[test]
    fn first_difference_finds_offset() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
    }

    #[test]
    fn transfer_length_bytes() {
        assert_eq!(transfer_length_byte(0x08), 4);
        assert_eq!(transfer_length_byte(0x28), 7);
        assert_eq!(transfer_length_byte(0xa8), 6);
        assert_eq!(transfer_length_byte(0x88), 10);
    }
}
