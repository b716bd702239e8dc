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
use super::header::{incompat, ImageHeader, OFF_INCOMPATIBLE, OFF_REFCOUNT_TABLE};
use super::io::{table_bytes, ImageFile};
use super::refcount::fixed_point;
use crate::{Error, Result};

fn corrupt(io: &ImageFile, reason: String) -> Error {
    Error::Corrupt {
        path: io.path().to_owned(),
        reason,
    }
}

/// Rebuilds the refcounts of a dirty image and clears its dirty bit.
pub fn rebuild_refcounts(io: &ImageFile, ih: &ImageHeader, file_len: u64) -> Result<()> {
    let h = &ih.header;
    let cb = h.cluster_bits;
    let cs = 1u64 << cb;
    let order = h.refcount_order;
    let fmt = L2Format {
        cluster_bits: cb,
        zero_flag: h.version >= 3 && !ih.extended_l2(),
        extended: ih.extended_l2(),
    };
    let mut refs: BTreeMap<u64, u64> = BTreeMap::new();
    let mut add = |r: Range<u64>| {
        if r.is_empty() {
            return;
        }
        for c in r.start >> cb..=(r.end - 1) >> cb {
            *refs.entry(c).or_insert(0) += 1;
        }
    };
    add(0..cs);
    add(h.l1_table_offset..h.l1_table_offset + u64::from(h.l1_size) * 8);
    let l1 = io.read_table(h.l1_table_offset, h.l1_size as usize)?;
    let slot = if fmt.extended { 2 } else { 1 };
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
        add(e.l2_offset..e.l2_offset + cs);
        let table = io.read_table(e.l2_offset, (cs / 8) as usize)?;
        for (j, raw) in table.into_iter().step_by(slot).enumerate() {
            let entry = L2Entry::decode(raw, fmt).map_err(|e2| {
                corrupt(
                    io,
                    format!("L2 table at {:#x}, entry {j}: {}", e.l2_offset, e2.0),
                )
            })?;
            if let Some(r) = entry.host_ranges() {
                let r = match entry {
                    L2Entry::Compressed { .. } => r,
                    _ => r.start..r.start + cs,
                };
                add(r);
            }
        }
    }

    let per_block = refcount_entries(cs, order);
    let per_table_cluster = cs / 8;
    let max_used = refs.keys().next_back().copied().unwrap_or(0);
    let base = file_len.div_ceil(cs).max(max_used + 1);
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
    for c in base..base + t + k {
        *refs.entry(c).or_insert(0) += 1;
    }
    let ranges: Vec<u64> = ranges_for(t, k).into_iter().collect();
    let mut table = vec![0u64; (t * per_table_cluster) as usize];
    let mut blocks: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (j, &ri) in ranges.iter().enumerate() {
        table[ri as usize] = (base + t + j as u64) * cs;
        blocks.insert(ri, vec![0u8; cs as usize]);
    }
    let max = refcount_max(order);
    for (&c, &n) in &refs {
        if n > max {
            return Err(corrupt(
                io,
                format!("cluster {c} has {n} references, more than {order}-order refcounts hold"),
            ));
        }
        if let Some(b) = blocks.get_mut(&(c / per_block)) {
            refcount_set(b, order, c % per_block, n);
        }
    }
    for (ri, b) in &blocks {
        io.write_at(b, table[*ri as usize])?;
    }
    io.write_at(&table_bytes(table.iter().copied()), base * cs)?;
    io.sync()?;
    let mut hdr = [0u8; 12];
    hdr[..8].copy_from_slice(&(base * cs).to_be_bytes());
    hdr[8..].copy_from_slice(&(t as u32).to_be_bytes());
    io.write_at(&hdr, OFF_REFCOUNT_TABLE)?;
    io.sync()?;
    let features = h.incompatible_features & !incompat::DIRTY;
    io.write_at(&features.to_be_bytes(), OFF_INCOMPATIBLE)?;
    io.sync()
}
