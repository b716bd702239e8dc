//! Repair of images left dirty (qcow2.txt "Header", incompatible bit 0: "If this bit is
//! set then refcounts may be inconsistent, make sure to scan L1/L2 tables to repair
//! refcounts before accessing the image").
//!
//! qemu sets the dirty bit when it uses `lazy_refcounts` and clears it on clean close; a
//! crash leaves it set with refcounts that may be too low. We rebuild the refcounts from
//! scratch: count every reference from the header, the L1 table, the L2 tables and the
//! data clusters, then write a new refcount table and new blocks past everything in use,
//! sync, point the header at them, sync, and only then clear the dirty bit. A crash
//! during repair leaves the dirty bit set, so the next open repairs again. The old
//! refcount structures become free space.
//!
//! Images with internal snapshots or persistent bitmaps are refused before we get here
//! (their clusters would need counting too).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::entry::{refcount_entries, refcount_max, refcount_set, L1Entry, L2Entry, L2Format};
use super::header::{
    incompat, reftable_bytes, FormatError, ImageHeader, MAX_REFTABLE_BYTES, OFF_INCOMPATIBLE,
    OFF_REFCOUNT_TABLE,
};
use super::io::{table_bytes, ImageFile};
use super::refcount::fixed_point;
use crate::{Error, Result};

fn corrupt(io: &ImageFile, reason: String) -> Error {
    Error::Corrupt {
        path: io.path().to_owned(),
        reason,
    }
}

/// References per host cluster, counted from scratch.
struct Counter {
    cluster_bits: u32,
    /// No referenced range may end past this (see [`Counter::limit`]).
    limit: u64,
    refs: BTreeMap<u64, u64>,
}

impl Counter {
    /// Where references must end for an image file of `file_len` bytes, a disk of
    /// `disk_size` bytes and clusters of `cs` bytes: past the file by at most the disk's
    /// size and a cluster. A crash can leave references past the end of the file (with
    /// lazy refcounts, an L2 entry may reach the disk before the write that grew the
    /// file; qemu opens such an image and only reports the corruption), so they are
    /// counted as before; one beyond this bound, which no write of the disk's own data
    /// explains, is refused. This bounds the clusters counted, and so the refcount
    /// structures built from them (as does [`place`]'s table limit).
    fn limit(file_len: u64, disk_size: u64, cs: u64) -> u64 {
        file_len.saturating_add(disk_size).saturating_add(cs)
    }

    /// Counts one reference to every cluster `r` touches; refuses one ending past
    /// `limit`.
    fn add(&mut self, r: Range<u64>) -> Result<(), FormatError> {
        if r.is_empty() {
            return Ok(());
        }
        if r.end > self.limit {
            return Err(FormatError(format!(
                "reference to {:#x}..{:#x}, past the end of the file by more than the disk's size",
                r.start, r.end
            )));
        }
        let cb = self.cluster_bits;
        for c in r.start >> cb..=(r.end - 1) >> cb {
            *self.refs.entry(c).or_insert(0) += 1;
        }
        Ok(())
    }
}

/// New refcount structures, placed past everything in use.
struct NewRefcounts {
    /// First cluster of the new refcount table (the blocks follow it).
    base: u64,
    /// Clusters of the new refcount table.
    t: u64,
    /// The new refcount table: host offsets of the blocks.
    table: Vec<u64>,
    /// New refcount blocks by refcount table index.
    blocks: BTreeMap<u64, Vec<u8>>,
}

/// Rebuilds the refcounts of a dirty image and clears its dirty bit.
pub fn rebuild_refcounts(io: &ImageFile, ih: &ImageHeader, file_len: u64) -> Result<()> {
    let mut refs = count_references(io, ih, file_len)?;
    let h = &ih.header;
    let mut new = place(&mut refs, h.cluster_bits, h.refcount_order, file_len)
        .map_err(|e| corrupt(io, e.0))?;
    fill_blocks(io, &refs, ih, &mut new)?;
    switch_to(io, ih, &new)
}

/// Counts every reference from the header cluster, the L1 table, the L2 tables and the
/// data clusters they map.
fn count_references(io: &ImageFile, ih: &ImageHeader, file_len: u64) -> Result<BTreeMap<u64, u64>> {
    let h = &ih.header;
    let cs = 1u64 << h.cluster_bits;
    let fmt = L2Format {
        cluster_bits: h.cluster_bits,
        zero_flag: h.version >= 3 && !ih.extended_l2(),
        extended: ih.extended_l2(),
    };
    let mut n = Counter {
        cluster_bits: h.cluster_bits,
        limit: Counter::limit(file_len, h.size, cs),
        refs: BTreeMap::new(),
    };
    let tables = [
        0..cs,
        h.l1_table_offset..h.l1_table_offset + u64::from(h.l1_size) * 8,
    ];
    for r in tables {
        n.add(r).map_err(|e| corrupt(io, e.0))?;
    }
    let l1 = io.read_table(h.l1_table_offset, h.l1_size as usize)?;
    let mut seen_l2 = BTreeSet::new();
    for (i, raw) in l1.into_iter().enumerate() {
        let e =
            L1Entry::decode(raw, cs).map_err(|e| corrupt(io, format!("L1 entry {i}: {}", e.0)))?;
        let Some(e) = e else { continue };
        if e.l2_offset >= file_len || !seen_l2.insert(e.l2_offset) {
            return Err(corrupt(
                io,
                format!("L1 entry {i}: bad or shared L2 table at {:#x}", e.l2_offset),
            ));
        }
        n.add(e.l2_offset..e.l2_offset + cs)
            .map_err(|e2| corrupt(io, format!("L1 entry {i}: {}", e2.0)))?;
        count_l2_table(io, e.l2_offset, fmt, &mut n)?;
    }
    Ok(n.refs)
}

/// Counts the data clusters one L2 table maps (a compressed cluster counts every cluster
/// its bytes touch; qcow2.txt "Compressed Clusters Descriptor").
fn count_l2_table(io: &ImageFile, l2_offset: u64, fmt: L2Format, n: &mut Counter) -> Result<()> {
    let cs = 1u64 << fmt.cluster_bits;
    let slot = if fmt.extended { 2 } else { 1 };
    let table = io.read_table(l2_offset, (cs / 8) as usize)?;
    for (j, raw) in table.into_iter().step_by(slot).enumerate() {
        let bad = |e2: FormatError| {
            corrupt(
                io,
                format!("L2 table at {l2_offset:#x}, entry {j}: {}", e2.0),
            )
        };
        let entry = L2Entry::decode(raw, fmt).map_err(bad)?;
        if let Some(r) = entry.host_ranges() {
            let r = match entry {
                L2Entry::Compressed { .. } => r,
                _ => r.start..r.start + cs,
            };
            n.add(r).map_err(bad)?;
        }
    }
    Ok(())
}

/// Refuses a refcount table of `clusters` clusters larger than qemu's limit.
fn check_table_size(clusters: u64, cs: u64) -> Result<(), FormatError> {
    if reftable_bytes(clusters, cs).is_some() {
        return Ok(());
    }
    Err(FormatError(format!(
        "repair needs a refcount table of {clusters} clusters, more than qemu's limit of {MAX_REFTABLE_BYTES} bytes"
    )))
}

/// Sizes and places the new refcount table and blocks past the end of the file and of
/// every referenced cluster; they must count themselves, so `refs` gains their clusters.
/// Refuses (before building anything) a table larger than qemu's limit.
fn place(
    refs: &mut BTreeMap<u64, u64>,
    cluster_bits: u32,
    order: u32,
    file_len: u64,
) -> Result<NewRefcounts, FormatError> {
    let cs = 1u64 << cluster_bits;
    let per_block = refcount_entries(cs, order);
    let per_table_cluster = cs / 8;
    let max_used = refs.keys().next_back().copied().unwrap_or(0);
    let base = file_len.div_ceil(cs).max(max_used.saturating_add(1));
    // The table must at least cover `base`, where the new structures start.
    check_table_size(
        (base / per_block)
            .saturating_add(1)
            .div_ceil(per_table_cluster),
        cs,
    )?;
    let used_ranges: BTreeSet<u64> = refs.keys().map(|c| c / per_block).collect();
    let ranges_for = |t: u64, k: u64| {
        let mut r = used_ranges.clone();
        r.extend(base / per_block..=(base + t + k - 1) / per_block);
        r
    };
    let (t, k) = fixed_point(|t, k| {
        let r = ranges_for(t, k);
        let last = r.iter().next_back().copied().unwrap_or(0);
        ((last + 1).div_ceil(per_table_cluster), r.len() as u64)
    });
    check_table_size(t, cs)?;
    for c in base..base + t + k {
        *refs.entry(c).or_insert(0) += 1;
    }
    let mut table = vec![0u64; (t * per_table_cluster) as usize];
    let mut blocks = BTreeMap::new();
    for (j, ri) in ranges_for(t, k).into_iter().enumerate() {
        table[ri as usize] = (base + t + j as u64) * cs;
        blocks.insert(ri, vec![0u8; cs as usize]);
    }
    Ok(NewRefcounts {
        base,
        t,
        table,
        blocks,
    })
}

/// Writes the counts into the new blocks, refusing counts the refcount width cannot hold.
fn fill_blocks(
    io: &ImageFile,
    refs: &BTreeMap<u64, u64>,
    ih: &ImageHeader,
    new: &mut NewRefcounts,
) -> Result<()> {
    let order = ih.header.refcount_order;
    let per_block = refcount_entries(ih.cluster_size(), order);
    let max = refcount_max(order);
    for (&c, &n) in refs {
        if n > max {
            return Err(corrupt(
                io,
                format!("cluster {c} has {n} references, more than {order}-order refcounts hold"),
            ));
        }
        if let Some(b) = new.blocks.get_mut(&(c / per_block)) {
            refcount_set(b, order, c % per_block, n);
        }
    }
    Ok(())
}

/// Writes the new structures, syncs, points the header at them, syncs, and only then
/// clears the dirty bit (so a crash in between leaves the image dirty and repairable).
fn switch_to(io: &ImageFile, ih: &ImageHeader, new: &NewRefcounts) -> Result<()> {
    let cs = ih.cluster_size();
    for (ri, b) in &new.blocks {
        io.write_at(b, new.table[*ri as usize])?;
    }
    io.write_at(&table_bytes(new.table.iter().copied()), new.base * cs)?;
    io.sync()?;
    let mut hdr = [0u8; 12];
    hdr[..8].copy_from_slice(&(new.base * cs).to_be_bytes());
    hdr[8..].copy_from_slice(&(new.t as u32).to_be_bytes());
    io.write_at(&hdr, OFF_REFCOUNT_TABLE)?;
    io.sync()?;
    let features = ih.header.incompatible_features & !incompat::DIRTY;
    io.write_at(&features.to_be_bytes(), OFF_INCOMPATIBLE)?;
    io.sync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_counts_every_cluster_a_range_touches() {
        let mut n = Counter {
            cluster_bits: 16,
            limit: Counter::limit(3 * 65536, 0, 65536),
            refs: BTreeMap::new(),
        };
        n.add(0..65536).unwrap();
        // A compressed cluster straddling clusters 1 and 2 references both.
        n.add(65536 + 100..2 * 65536 + 10).unwrap();
        n.add(65536..65537).unwrap();
        n.add(5..5).unwrap();
        assert_eq!(
            n.refs.into_iter().collect::<Vec<_>>(),
            [(0, 1), (1, 2), (2, 1)]
        );
    }

    #[test]
    fn counter_refuses_references_past_the_file_by_more_than_the_disk() {
        // 512-byte clusters, a file of 10 clusters and 100 bytes, a disk of 4 clusters:
        // references may end up to 10 * 512 + 100 + 4 * 512 + 512 = 7780.
        let file_len = 10 * 512 + 100;
        let mut n = Counter {
            cluster_bits: 9,
            limit: Counter::limit(file_len, 4 * 512, 512),
            refs: BTreeMap::new(),
        };
        assert_eq!(n.limit, 7780);
        // The data cluster holding the file's last bytes, a compressed cluster whose last
        // sector runs past the end, and data clusters past the end (a crash with lazy
        // refcounts) up to the bound are counted.
        n.add(10 * 512..11 * 512).unwrap();
        n.add(10 * 512 + 100..file_len + 511).unwrap();
        n.add(14 * 512..15 * 512).unwrap();
        n.add(7780 - 1..7780).unwrap();
        // Past the bound: refused.
        let e = n.add(15 * 512..16 * 512).unwrap_err();
        assert!(e.0.contains("past the end of the file"), "{e}");
        // The review's case: a data cluster at 2^56 - 512 (L2 entry 0x80ff_ffff_ffff_fe00).
        let far = 0x00ff_ffff_ffff_fe00;
        assert!(n.add(far..far + 512).is_err());
        assert_eq!(
            n.refs.into_iter().collect::<Vec<_>>(),
            [(10, 2), (11, 1), (14, 1), (15, 1)]
        );
        // The bound saturates instead of wrapping.
        assert_eq!(Counter::limit(u64::MAX - 1, 1 << 40, 512), u64::MAX);
    }

    #[test]
    fn place_refuses_a_table_beyond_qemus_limit_before_building_it() {
        // 512-byte clusters, 16-bit refcounts: a block counts 256 clusters and a table
        // cluster names 64 blocks, so qemu's 8 MiB table limit (16384 clusters) covers
        // 16384 * 64 * 256 = 2^28 clusters.
        let mut refs = BTreeMap::from([(0, 1), ((1 << 28) - 40_000, 1)]);
        let new = place(&mut refs, 9, 4, 5 * 512).unwrap();
        assert!(new.t <= 16384, "{}", new.t);
        assert_eq!(new.table.len() as u64, new.t * 64);
        // One more block range and the table would pass the limit: refused, and nothing
        // was added to the counts.
        let mut refs = BTreeMap::from([(0, 1), (1 << 28, 1)]);
        let Err(e) = place(&mut refs, 9, 4, 5 * 512) else {
            panic!("placed a table beyond the limit");
        };
        assert!(e.0.contains("more than qemu's limit"), "{e}");
        assert_eq!(refs.len(), 2);
        // The review's numbers: a reference at cluster 2^47 - 1 would need a table of
        // 2^33 clusters (4 TiB); refused up front, without allocating it.
        let mut refs = BTreeMap::from([(0, 1), ((1 << 47) - 1, 1)]);
        let Err(e) = place(&mut refs, 9, 4, 5 * 512) else {
            panic!("placed a table beyond the limit");
        };
        assert!(e.0.contains("more than qemu's limit"), "{e}");
    }
}
