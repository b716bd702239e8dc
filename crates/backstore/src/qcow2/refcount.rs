//! Refcount table and refcount blocks: cluster allocation and freeing
//! (qcow2.txt "Host cluster management").
//!
//! Refcount changes are written through to the file as soon as they are made (only the
//! bytes of the entry that changed). They are made durable by the engine's next `fsync`,
//! which always precedes the L2/L1 writes that reference newly allocated clusters, so a
//! crash can leak clusters but never leave a referenced cluster with refcount 0.
//!
//! New refcount blocks and a grown refcount table are written and synced *before* the
//! refcount table entry or header field that makes them reachable.

use std::collections::HashMap;
use std::ops::Range;

use super::entry::{
    refcount_entries, refcount_get, refcount_last_used, refcount_max, refcount_set,
    MAX_HOST_OFFSET, REFT_RESERVED,
};
use super::header::{reftable_bytes, MAX_REFTABLE_BYTES, OFF_REFCOUNT_TABLE};
use super::io::{table_bytes, ImageFile};
use crate::{Error, Result};

/// Refcount blocks kept in memory; they are always clean, so eviction is free.
const BLOCK_CACHE: usize = 256;

/// The refcount structures of an image opened for writing.
#[derive(Debug)]
pub struct Refcounts {
    cluster_bits: u32,
    order: u32,
    /// Refcount entries per block (clusters covered by one block).
    per_block: u64,
    /// Refcount table entries (block offsets; 0 = no block).
    table: Vec<u64>,
    table_offset: u64,
    table_clusters: u64,
    /// Host offsets of every refcount block the table names, sorted.
    block_offsets: Vec<u64>,
    blocks: HashMap<u64, Box<[u8]>>,
    /// No free cluster below this index (search start).
    free_hint: u64,
    /// Every cluster at or past this index is free; new areas are placed here.
    alloc_end: u64,
}

fn corrupt(io: &ImageFile, reason: String) -> Error {
    Error::Corrupt {
        path: io.path().to_owned(),
        reason,
    }
}

impl Refcounts {
    /// Loads and checks the refcount table described by the header.
    pub fn load(
        io: &ImageFile,
        cluster_bits: u32,
        order: u32,
        table_offset: u64,
        table_clusters: u64,
        file_len: u64,
    ) -> Result<Self> {
        let cs = 1u64 << cluster_bits;
        let n = (table_clusters * cs / 8) as usize;
        let table = io.read_table(table_offset, n)?;
        let mut seen = std::collections::HashSet::new();
        for (i, &e) in table.iter().enumerate() {
            if e == 0 {
                continue;
            }
            if e & REFT_RESERVED != 0 || e % cs != 0 {
                return Err(corrupt(
                    io,
                    format!("refcount table entry {i} ({e:#x}) is not cluster aligned"),
                ));
            }
            if e < cs || e >= file_len {
                return Err(corrupt(
                    io,
                    format!("refcount block {i} at {e:#x} is outside the image ({file_len} bytes)"),
                ));
            }
            // Distinct blocks inside the file also bound the work of loading them.
            if !seen.insert(e) {
                return Err(corrupt(
                    io,
                    format!("refcount block {i} at {e:#x} is shared with another entry"),
                ));
            }
        }
        let mut block_offsets: Vec<u64> = seen.into_iter().collect();
        block_offsets.sort_unstable();
        let mut rc = Refcounts {
            cluster_bits,
            order,
            per_block: refcount_entries(cs, order),
            table,
            table_offset,
            table_clusters,
            block_offsets,
            blocks: HashMap::new(),
            free_hint: 0,
            alloc_end: 0,
        };
        let file_clusters = file_len.div_ceil(cs);
        rc.alloc_end = rc.last_used(io, file_clusters)?.max(file_clusters);
        Ok(rc)
    }

    /// One past the last cluster with a non-zero refcount, looking only at blocks that
    /// cover some cluster of the file (below `file_clusters`).
    ///
    /// Clusters past the end of the file hold nothing and a valid image references none
    /// (`qemu-img check` calls a reference a cluster past the end corruption), so their
    /// refcounts are ignored: the allocation start is at least `file_clusters` anyway, and
    /// new areas there get their refcounts set. Skipping blocks that cover only such
    /// clusters bounds the work by the blocks covering the file, whatever a sparse file's
    /// refcount table names.
    fn last_used(&mut self, io: &ImageFile, file_clusters: u64) -> Result<u64> {
        let covering = file_clusters.div_ceil(self.per_block);
        let end = covering.min(self.table.len() as u64);
        for ri in (0..end).rev() {
            if !self.has_block(ri) {
                continue;
            }
            let order = self.order;
            let first = ri * self.per_block;
            if let Some(idx) = refcount_last_used(self.block(io, ri)?, order) {
                return Ok(first + idx + 1);
            }
        }
        Ok(0)
    }

    /// Fails if a refcount block overlaps one of `ranges` (other metadata), which only a
    /// corrupt image does; we would otherwise write refcounts into it.
    pub fn check_disjoint(&self, io: &ImageFile, ranges: &[Range<u64>]) -> Result<()> {
        let cs = self.cs();
        for (i, &b) in self.table.iter().enumerate().filter(|(_, &b)| b != 0) {
            if ranges.iter().any(|r| b < r.end && r.start < b + cs)
                || self.table_range().contains(&b)
            {
                return Err(corrupt(
                    io,
                    format!("refcount block {i} at {b:#x} overlaps other metadata"),
                ));
            }
        }
        Ok(())
    }

    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Clusters at or past this index are free.
    pub fn alloc_end(&self) -> u64 {
        self.alloc_end
    }

    /// Byte range of the refcount table.
    pub fn table_range(&self) -> Range<u64> {
        self.table_offset..self.table_offset + self.table_clusters * self.cs()
    }

    fn max_clusters(&self) -> u64 {
        MAX_HOST_OFFSET >> self.cluster_bits
    }

    /// Byte offset of cluster `c`, which the allocator is about to hand out as free.
    ///
    /// Refuses what only a corrupt image's zero refcounts can offer: the header cluster,
    /// the refcount table, a refcount block, or a cluster at or past 2^56 (qcow2.txt:
    /// host offsets are bits 9-55 of L1 and L2 entries).
    fn free_cluster_offset(&self, io: &ImageFile, c: u64) -> Result<u64> {
        let off = c
            .checked_mul(self.cs())
            .filter(|&off| off < MAX_HOST_OFFSET)
            .ok_or_else(|| {
                corrupt(
                    io,
                    format!("free cluster {c} lies beyond the 64 PiB limit of host offsets"),
                )
            })?;
        let what = if c == 0 {
            "the image header"
        } else if self.table_range().contains(&off) {
            "part of the refcount table"
        } else if self.is_block(off) {
            "a refcount block"
        } else {
            return Ok(off);
        };
        Err(corrupt(
            io,
            format!("cluster {c} is {what} but its refcount is 0"),
        ))
    }

    /// Whether a refcount block starts at host offset `off`.
    pub fn is_block(&self, off: u64) -> bool {
        self.block_offsets.binary_search(&off).is_ok()
    }

    /// Records the host offset of a new refcount block.
    fn note_block(&mut self, off: u64) {
        if let Err(i) = self.block_offsets.binary_search(&off) {
            self.block_offsets.insert(i, off);
        }
    }

    /// The refcount block for range `ri`, loaded on demand. Must have a table entry.
    fn block(&mut self, io: &ImageFile, ri: u64) -> Result<&mut [u8]> {
        let off = self.table.get(ri as usize).copied().unwrap_or(0);
        if off == 0 {
            return Err(corrupt(io, format!("refcount block {ri} is missing")));
        }
        if !self.blocks.contains_key(&off) {
            if self.blocks.len() >= BLOCK_CACHE {
                self.blocks.clear();
            }
            let mut b = vec![0u8; self.cs() as usize].into_boxed_slice();
            io.read_at(&mut b, off)?;
            self.blocks.insert(off, b);
        }
        Ok(self
            .blocks
            .get_mut(&off)
            .map(|b| &mut b[..])
            .unwrap_or(&mut []))
    }

    fn has_block(&self, ri: u64) -> bool {
        self.table.get(ri as usize).is_some_and(|&e| e != 0)
    }

    /// Refcount of cluster `c` (0 if no block covers it).
    pub fn get(&mut self, io: &ImageFile, c: u64) -> Result<u64> {
        let ri = c / self.per_block;
        if !self.has_block(ri) {
            return Ok(0);
        }
        let idx = c % self.per_block;
        let order = self.order;
        Ok(refcount_get(self.block(io, ri)?, order, idx))
    }

    /// Sets the refcount of cluster `c`, whose block must exist, writing the changed bytes.
    fn set(&mut self, io: &ImageFile, c: u64, v: u64) -> Result<()> {
        if v > refcount_max(self.order) {
            return Err(corrupt(
                io,
                format!("refcount of cluster {c} would overflow"),
            ));
        }
        let ri = c / self.per_block;
        let idx = c % self.per_block;
        let off = self.table.get(ri as usize).copied().unwrap_or(0);
        let order = self.order;
        let block = self.block(io, ri)?;
        let r = refcount_set(block, order, idx, v);
        let bytes = block[r.clone()].to_vec();
        io.write_at(&bytes, off + r.start as u64)
    }

    /// Drops one reference to every cluster touched by the byte range `r`.
    pub fn free_range(&mut self, io: &ImageFile, r: Range<u64>) -> Result<()> {
        if r.is_empty() {
            return Ok(());
        }
        let first = r.start >> self.cluster_bits;
        let last = (r.end - 1) >> self.cluster_bits;
        for c in first..=last {
            let v = self.get(io, c)?;
            if v == 0 {
                return Err(corrupt(
                    io,
                    format!("freeing cluster {c} whose refcount is already 0"),
                ));
            }
            self.set(io, c, v - 1)?;
            if v == 1 {
                self.free_hint = self.free_hint.min(c);
            }
        }
        Ok(())
    }

    /// Allocates one cluster and returns its byte offset: the first free cluster covered by
    /// an existing refcount block, else a new one at the end of the image. A "free"
    /// cluster that is the header or refcount metadata, or lies past 2^56, is refused
    /// (`free_cluster_offset`).
    pub fn alloc_cluster(&mut self, io: &ImageFile) -> Result<u64> {
        let mut c = self.free_hint;
        while c < self.alloc_end {
            let ri = c / self.per_block;
            if ri >= self.table.len() as u64 {
                break; // no block counts anything further
            }
            if !self.has_block(ri) {
                c = (ri + 1) * self.per_block;
                continue;
            }
            let order = self.order;
            let per_block = self.per_block;
            let stop = ((ri + 1) * per_block).min(self.alloc_end);
            let block = self.block(io, ri)?;
            let found = (c % per_block..stop - ri * per_block)
                .find(|&i| refcount_get(block, order, i) == 0);
            match found {
                Some(i) => {
                    let c = ri * per_block + i;
                    let off = self.free_cluster_offset(io, c)?;
                    self.set(io, c, 1)?;
                    self.free_hint = c + 1;
                    return Ok(off);
                }
                None => c = stop,
            }
        }
        let c = self.alloc_area(io, 1)?;
        self.free_hint = self.alloc_end;
        self.free_cluster_offset(io, c)
    }

    /// Block ranges touched by clusters `[a, b)` that have no refcount block.
    fn blockless(&self, a: u64, b: u64, table_len: u64) -> Vec<u64> {
        if a >= b {
            return Vec::new();
        }
        (a / self.per_block..=(b - 1) / self.per_block)
            .filter(|&ri| ri >= table_len || !self.has_block(ri))
            .collect()
    }

    /// Builds new refcount blocks for `ranges`, placed at clusters `first_block..`, that
    /// count every cluster of `area` once. Returns (block offset, contents) pairs.
    fn new_blocks(
        &self,
        ranges: &[u64],
        first_block: u64,
        area: Range<u64>,
    ) -> Vec<(u64, u64, Vec<u8>)> {
        ranges
            .iter()
            .enumerate()
            .map(|(j, &ri)| {
                let mut b = vec![0u8; self.cs() as usize];
                let lo = area.start.max(ri * self.per_block);
                let hi = area.end.min((ri + 1) * self.per_block);
                for c in lo..hi {
                    refcount_set(&mut b, self.order, c - ri * self.per_block, 1);
                }
                (ri, (first_block + j as u64) << self.cluster_bits, b)
            })
            .collect()
    }

    /// Sets refcount 1 for the clusters of `area` covered by existing blocks.
    fn count_in_existing_blocks(
        &mut self,
        io: &ImageFile,
        area: Range<u64>,
        table_len: u64,
    ) -> Result<()> {
        for c in area {
            let ri = c / self.per_block;
            if ri < table_len && self.has_block(ri) {
                self.set(io, c, 1)?;
            }
        }
        Ok(())
    }

    /// Allocates `n` contiguous clusters at the end of the image, with refcount blocks for
    /// any range that lacks one placed right after them. Returns the first cluster index.
    pub fn alloc_area(&mut self, io: &ImageFile, n: u64) -> Result<u64> {
        loop {
            let base = self.alloc_end;
            let table_len = self.table.len() as u64;
            let mut k = 0u64;
            loop {
                let need = self.blockless(base, base + n + k, table_len).len() as u64;
                if need <= k {
                    break;
                }
                k = need;
            }
            let end = base + n + k;
            if end > self.max_clusters() {
                return Err(Error::NoSpace {
                    offset: base << self.cluster_bits,
                    len: (n + k) << self.cluster_bits,
                });
            }
            let last_ri = (end - 1) / self.per_block;
            if last_ri >= table_len {
                self.grow_table(io, last_ri + 1)?;
                continue;
            }
            let ranges = self.blockless(base, end, table_len);
            let blocks = self.new_blocks(&ranges, base + n, base..end);
            self.count_in_existing_blocks(io, base..end, table_len)?;
            for (_, off, b) in &blocks {
                io.write_at(b, *off)?;
            }
            if !blocks.is_empty() {
                // The blocks must be durable before the table points at them.
                io.sync()?;
                for (ri, off, b) in blocks {
                    self.table[ri as usize] = off;
                    io.write_at(&off.to_be_bytes(), self.table_offset + ri * 8)?;
                    self.note_block(off);
                    self.blocks.insert(off, b.into_boxed_slice());
                }
            }
            self.alloc_end = end;
            return Ok(base);
        }
    }

    /// Replaces the refcount table by a larger one with at least `min_entries` entries,
    /// placed at the end of the image together with the blocks that count it.
    fn grow_table(&mut self, io: &ImageFile, min_entries: u64) -> Result<()> {
        let per_cluster = self.cs() / 8;
        let old_len = self.table.len() as u64;
        let base = self.alloc_end;
        let (mut t, mut k) = (0u64, 0u64);
        loop {
            let mut want = min_entries.max(old_len + 1);
            if t + k > 0 {
                want = want.max((base + t + k - 1) / self.per_block + 1);
            }
            want += want / 4; // headroom so that growth stays rare
            let t2 = want.div_ceil(per_cluster).max(t);
            let k2 = (self.blockless(base, base + t2 + k, old_len).len() as u64).max(k);
            if (t2, k2) == (t, k) {
                break;
            }
            (t, k) = (t2, k2);
        }
        if reftable_bytes(t, self.cs()).is_none() {
            return Err(Error::InvalidConfig(format!(
                "{}: the refcount table would exceed qemu's limit of {MAX_REFTABLE_BYTES} bytes",
                io.path().display()
            )));
        }
        let end = base + t + k;
        if end > self.max_clusters() {
            return Err(Error::NoSpace {
                offset: base << self.cluster_bits,
                len: (t + k) << self.cluster_bits,
            });
        }
        let ranges = self.blockless(base, end, old_len);
        let blocks = self.new_blocks(&ranges, base + t, base..end);
        self.count_in_existing_blocks(io, base..end, old_len)?;
        let mut new_table = self.table.clone();
        new_table.resize((t * per_cluster) as usize, 0);
        for (ri, off, b) in &blocks {
            new_table[*ri as usize] = *off;
            io.write_at(b, *off)?;
        }
        let new_offset = base << self.cluster_bits;
        io.write_at(&table_bytes(new_table.iter().copied()), new_offset)?;
        io.sync()?;
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(&new_offset.to_be_bytes());
        hdr[8..].copy_from_slice(&(t as u32).to_be_bytes());
        io.write_at(&hdr, OFF_REFCOUNT_TABLE)?;
        io.sync()?;
        let old = self.table_range();
        self.table = new_table;
        self.table_offset = new_offset;
        self.table_clusters = t;
        for (_, off, b) in blocks {
            self.note_block(off);
            self.blocks.insert(off, b.into_boxed_slice());
        }
        self.alloc_end = end;
        // Nothing refers to the old table any more.
        self.free_range(io, old)
    }
}

/// Sizes a self-describing metadata area: given `fixed` clusters that must be counted and
/// a function giving the number of refcount blocks needed for a layout with `t` table
/// clusters and `k` blocks, finds the smallest stable `(t, k)`.
pub fn fixed_point(mut f: impl FnMut(u64, u64) -> (u64, u64)) -> (u64, u64) {
    let (mut t, mut k) = (1u64, 1u64);
    for _ in 0..64 {
        let (t2, k2) = f(t, k);
        let (t2, k2) = (t2.max(t), k2.max(k));
        if (t2, k2) == (t, k) {
            break;
        }
        (t, k) = (t2, k2);
    }
    (t, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new, empty read-write file at `p`.
    fn empty_file(p: &std::path::Path) -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .unwrap()
    }

    fn image(cluster_bits: u32, order: u32) -> (tempfile::TempDir, ImageFile, Refcounts) {
        // Minimal layout: header at 0, table at 1, block at 2 counting clusters 0-2.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let cs = 1u64 << cluster_bits;
        let f = empty_file(&p);
        let io = ImageFile::new(f, p);
        let mut table = vec![0u8; cs as usize];
        table[..8].copy_from_slice(&(2 * cs).to_be_bytes());
        io.write_at(&table, cs).unwrap();
        let mut block = vec![0u8; cs as usize];
        for c in 0..3 {
            refcount_set(&mut block, order, c, 1);
        }
        io.write_at(&block, 2 * cs).unwrap();
        let rc = Refcounts::load(&io, cluster_bits, order, cs, 1, 3 * cs).unwrap();
        (dir, io, rc)
    }

    #[test]
    fn allocates_after_existing_clusters_and_reuses_freed_ones() {
        let (_d, io, mut rc) = image(12, 4);
        assert_eq!(rc.alloc_end(), 3);
        assert_eq!(rc.alloc_cluster(&io).unwrap(), 3 << 12);
        assert_eq!(rc.alloc_cluster(&io).unwrap(), 4 << 12);
        rc.free_range(&io, (3 << 12)..(4 << 12)).unwrap();
        assert_eq!(rc.get(&io, 3).unwrap(), 0);
        assert_eq!(rc.alloc_cluster(&io).unwrap(), 3 << 12);
        // Double free is detected.
        rc.free_range(&io, (4 << 12)..(4 << 12) + 1).unwrap();
        assert!(rc.free_range(&io, (4 << 12)..(4 << 12) + 1).is_err());
        // The on-disk block agrees with memory.
        let mut b = vec![0u8; 4096];
        io.read_at(&mut b, 2 << 12).unwrap();
        assert_eq!(refcount_get(&b, 4, 3), 1);
        assert_eq!(refcount_get(&b, 4, 4), 0);
    }

    #[test]
    fn new_blocks_and_table_growth_with_one_bit_refcounts_and_tiny_clusters() {
        // 512-byte clusters, 1-bit refcounts: a block covers 4096 clusters and the one-
        // cluster table 64 blocks, so allocating past 262144 clusters grows the table.
        let (_d, io, mut rc) = image(9, 0);
        let before = rc.table_range();
        let mut last = 0;
        for _ in 0..5000 {
            last = rc.alloc_cluster(&io).unwrap() >> 9;
        }
        // Cluster 3..4095 from block 0, then the second range gets a block at its first
        // free cluster after the data cluster that needed it.
        assert!(last > 4096);
        assert!(rc.has_block(1));
        assert_eq!(rc.table_range(), before);
        rc.alloc_area(&io, 300_000).unwrap();
        assert_ne!(rc.table_range(), before, "table grew");
        // The old table's cluster is free again and every allocated cluster counted.
        assert_eq!(rc.get(&io, 1).unwrap(), 0);
        let end = rc.alloc_end();
        for c in [0u64, 2, 3, 4096, 5000, end - 1] {
            assert_eq!(rc.get(&io, c).unwrap(), 1, "cluster {c}");
        }
        // Reload from disk: same view.
        let tr = rc.table_range();
        let mut rc2 = Refcounts::load(
            &io,
            9,
            0,
            tr.start,
            (tr.end - tr.start) / 512,
            io.len().unwrap(),
        )
        .unwrap();
        assert_eq!(rc2.alloc_end(), end);
        assert_eq!(rc2.get(&io, end - 1).unwrap(), 1);
        assert_eq!(rc2.get(&io, 1).unwrap(), 0);
    }

    #[test]
    fn load_rejects_bad_tables() {
        let (_d, io, rc) = image(12, 4);
        let header = 0..4096;
        assert!(rc
            .check_disjoint(&io, std::slice::from_ref(&header))
            .is_ok());
        let on_block = 8192..8200;
        let e = rc
            .check_disjoint(&io, std::slice::from_ref(&on_block))
            .unwrap_err();
        assert!(e.to_string().contains("overlaps other metadata"), "{e}");
        // Two entries naming the same block.
        io.write_at(&8192u64.to_be_bytes(), 4096 + 8).unwrap();
        let e = Refcounts::load(&io, 12, 4, 4096, 1, 3 * 4096).unwrap_err();
        assert!(e.to_string().contains("shared"), "{e}");
        // Block offset beyond the file.
        io.write_at(&(1u64 << 30).to_be_bytes(), 4096 + 8).unwrap();
        let e = Refcounts::load(&io, 12, 4, 4096, 1, 3 * 4096).unwrap_err();
        assert!(e.to_string().contains("outside the image"), "{e}");
        io.write_at(&0x2001u64.to_be_bytes(), 4096 + 8).unwrap();
        let e = Refcounts::load(&io, 12, 4, 4096, 1, 3 * 4096).unwrap_err();
        assert!(e.to_string().contains("not cluster aligned"), "{e}");
    }

    #[test]
    fn alloc_cluster_refuses_metadata_whose_refcount_is_zero() {
        // image(): header at cluster 0, refcount table at 1, refcount block at 2.
        for (c, what) in [
            (0, "the image header"),
            (1, "part of the refcount table"),
            (2, "a refcount block"),
        ] {
            let (_d, io, mut rc) = image(12, 4);
            rc.set(&io, c, 0).unwrap();
            let e = rc.alloc_cluster(&io).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(what), "cluster {c}: {e}");
            // Refused before its refcount was touched.
            let mut b = vec![0u8; 4096];
            io.read_at(&mut b, 2 << 12).unwrap();
            assert_eq!(refcount_get(&b, 4, c), 0, "cluster {c}");
        }
        // A new block made by the allocator is known too.
        let (_d, io, mut rc) = image(9, 0);
        rc.alloc_area(&io, 5000).unwrap();
        let new_block = rc.table[1];
        assert_ne!(new_block, 0);
        rc.set(&io, new_block >> 9, 0).unwrap();
        rc.free_hint = new_block >> 9;
        let e = rc.alloc_cluster(&io).unwrap_err();
        assert!(e.to_string().contains("a refcount block"), "{e}");
    }

    #[test]
    fn alloc_cluster_refuses_host_offsets_from_2_pow_56() {
        // 2 MiB clusters, 1-bit refcounts: a block counts 2^24 clusters. A table naming a
        // zero block at index 2^11 offers cluster 2^35, host offset 2^56 (one past bits
        // 9-55 of an L2 entry); index 2^19 offers cluster 2^43, whose offset 2^64 wraps to
        // 0, the header.
        for (ri, c) in [(1u64 << 11, 1u64 << 35), (1 << 19, 1 << 43)] {
            let (_d, io, mut rc) = image(21, 0);
            let cs = 1u64 << 21;
            io.write_at(&vec![0u8; cs as usize], 3 * cs).unwrap();
            rc.table.resize(ri as usize + 1, 0);
            rc.table[ri as usize] = 3 * cs;
            rc.free_hint = c;
            rc.alloc_end = c + 2;
            let e = rc.alloc_cluster(&io).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains("64 PiB"), "{e}");
        }
    }

    #[test]
    fn load_ignores_blocks_covering_only_clusters_past_the_end_of_the_file() {
        // 512-byte clusters, 1-bit refcounts: a block covers 4096 clusters. A block for
        // range 63 (clusters 258048..) claiming cluster 258053 is used.
        let (_d, io, _) = image(9, 0);
        let mut far = vec![0u8; 512];
        refcount_set(&mut far, 0, 5, 1);
        io.write_at(&far, 3 * 512).unwrap();
        io.write_at(&(3u64 * 512).to_be_bytes(), 512 + 63 * 8)
            .unwrap();
        let rc = Refcounts::load(&io, 9, 0, 512, 1, 4 * 512).unwrap();
        assert_eq!(rc.alloc_end(), 4, "the file's 4 clusters, not 258054");
        // A used entry past the end in a block that also covers the file still counts.
        let mut b = vec![0u8; 512];
        io.read_at(&mut b, 2 * 512).unwrap();
        refcount_set(&mut b, 0, 100, 1);
        io.write_at(&b, 2 * 512).unwrap();
        let rc = Refcounts::load(&io, 9, 0, 512, 1, 4 * 512).unwrap();
        assert_eq!(rc.alloc_end(), 101);
    }

    #[test]
    fn load_of_a_sparse_image_with_a_full_refcount_table_is_quick() {
        // 64 KiB clusters, 1-bit refcounts (2^19 clusters per block), an 8 MiB table
        // (qemu's limit) naming 2^20 distinct blocks in a sparse file of ~64 GiB whose
        // holes read as zeros. Only the 3 blocks covering the file's 2^20 + 200 clusters
        // can matter; scanning every entry of every block would take ~5.5e11 steps.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let f = empty_file(&p);
        let cs = 1u64 << 16;
        let entries = 1u64 << 20;
        let file_len = (entries + 200) * cs;
        f.set_len(file_len).unwrap();
        let io = ImageFile::new(f, p);
        let table = table_bytes((0..entries).map(|i| (200 + i) * cs));
        io.write_at(&table, cs).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = Refcounts::load(&io, 16, 0, cs, 128, file_len).map(|rc| rc.alloc_end());
            let _ = tx.send(r);
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("loading the refcount table hangs");
        assert_eq!(got.unwrap(), entries + 200);
    }

    #[test]
    fn fixed_point_converges() {
        // Create-time layout: 1 header + t table + k blocks + 3 L1 clusters, 64 entries per
        // block and per table cluster.
        let (t, k) = fixed_point(|t, k| {
            let clusters = 1 + t + k + 3;
            let k2 = clusters.div_ceil(64);
            (k2.div_ceil(64), k2)
        });
        assert_eq!((t, k), (1, 1));
        let (t, k) = fixed_point(|t, k| {
            let clusters = 1 + t + k + 200;
            let k2 = clusters.div_ceil(64);
            (k2.div_ceil(64), k2)
        });
        assert_eq!((t, k), (1, 4));
    }
}
