//! Opening an image: the file, the header checks, the L1 table and the in-memory state,
//! each step its own function (qcow2.txt "Header", "Host cluster management").

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};

use super::backing::Backing;
use super::cache::L2Cache;
use super::entry::{L1Entry, L2Format};
use super::header::{self, ext, incompat, CompressionType, ImageHeader, OFF_AUTOCLEAR};
use super::io::ImageFile;
use super::refcount::Refcounts;
use super::{lock, repair, Geometry, Meta, Qcow2Backstore, Qcow2Options};
use crate::{validate_block_size, Result};

/// The L1 table as read and checked, with the two metadata ranges data must never touch.
struct L1Table {
    entries: Vec<u64>,
    /// Host bytes of the L1 table.
    l1_range: Range<u64>,
    /// Host bytes of the refcount table.
    rt_range: Range<u64>,
}

/// Name of a qcow2 `crypt_method` for error messages (qcow2.txt "Header", byte 32).
fn crypt_method_name(m: u32) -> &'static str {
    match m {
        1 => "AES",
        2 => "LUKS",
        _ => "unknown",
    }
}

/// The fixed geometry the header describes.
fn geometry(ih: &ImageHeader) -> Geometry {
    let h = &ih.header;
    let extended = ih.extended_l2();
    Geometry {
        version: h.version,
        cluster_bits: h.cluster_bits,
        cluster_size: ih.cluster_size(),
        l2_entries: ih.l2_entries(),
        slot: if extended { 2 } else { 1 },
        fmt: L2Format {
            cluster_bits: h.cluster_bits,
            zero_flag: h.version >= 3 && !extended,
            extended,
        },
        compression: h.compression_type,
    }
}

impl Qcow2Backstore {
    /// Opens `path` at backing-chain depth `depth` (0 for the image itself). A dirty image
    /// opened for writing is repaired and then opened again at `depth + 1`.
    pub(crate) fn open_inner(path: &Path, opts: &Qcow2Options, depth: u32) -> Result<Self> {
        validate_block_size(opts.block_size)?;
        let io = Self::open_file(path, opts)?;
        let file_len = io.len()?;
        let ih = Self::read_header(&io, file_len)?;
        Self::check_features(path, &ih)?;
        if !opts.read_only {
            Self::check_writable(path, &ih, depth)?;
        }
        let l1 = Self::load_l1(&io, &ih, file_len, opts.read_only)?;

        // Everything is validated: only now may a dirty image be repaired (which writes).
        if !opts.read_only && ih.header.incompatible_features & incompat::DIRTY != 0 {
            repair::rebuild_refcounts(&io, &ih, file_len)?;
            drop(io); // releases our locks before the file is opened again
            return Self::open_inner(path, opts, depth + 1);
        }

        let backing = match &ih.backing_file {
            Some(name) => Some(Backing::open(
                path,
                name,
                ih.backing_format.as_deref(),
                depth,
                opts,
            )?),
            None => None,
        };
        let rc = if opts.read_only {
            None
        } else {
            Some(Self::load_refcounts(&io, &ih, file_len, &l1)?)
        };

        // We maintain none of the auto-clear features (bitmaps), so clear them before the
        // first write as the specification requires.
        if !opts.read_only && ih.header.autoclear_features != 0 {
            io.write_at(&0u64.to_be_bytes(), OFF_AUTOCLEAR)?;
            io.sync()?;
        }
        Ok(Self::assemble(io, opts, &ih, l1, backing, rc))
    }

    /// Opens the file itself: a regular file, locked the way qemu locks it.
    fn open_file(path: &Path, opts: &Qcow2Options) -> Result<ImageFile> {
        // O_NONBLOCK so that a FIFO named as an image cannot hang us; it has no effect on
        // the regular files we accept.
        let file = super::backing::open_regular(path, !opts.read_only, "")?;
        lock::lock_image(&file, path, !opts.read_only)?;
        ImageFile::new(file, path.to_owned())
            .mapped(opts.mmap_reads)
            .direct(opts.direct_io, !opts.read_only)
    }

    /// Reads, parses and validates the header (at most one cluster of the largest size).
    fn read_header(io: &ImageFile, file_len: u64) -> Result<ImageHeader> {
        let path = io.path();
        let mut first = vec![0u8; file_len.min(1 << header::MAX_CLUSTER_BITS) as usize];
        io.read_at(&mut first, 0)?;
        let ih = ImageHeader::parse(&first).map_err(|e| Self::corrupt_at(path, e.0))?;
        drop(first);
        ih.validate(file_len)
            .map_err(|e| Self::corrupt_at(path, e.0))?;
        Ok(ih)
    }

    /// Features we refuse outright (qcow2.txt "Header": crypt_method, incompatible bits,
    /// compression type).
    fn check_features(path: &Path, ih: &ImageHeader) -> Result<()> {
        let h = &ih.header;
        if h.crypt_method != 0 {
            let m = h.crypt_method;
            let what = crypt_method_name(m);
            return Err(Self::corrupt_at(
                path,
                format!("encrypted images are not supported (crypt_method {m}, {what})"),
            ));
        }
        if h.incompatible_features & incompat::EXTERNAL_DATA != 0 {
            return Err(Self::corrupt_at(
                path,
                "external data files are not supported (incompatible feature bit 2)",
            ));
        }
        if let CompressionType::Unknown(x) = h.compression_type {
            return Err(Self::corrupt_at(
                path,
                format!("compression type {x} is not supported"),
            ));
        }
        Ok(())
    }

    /// Features we can read but not write: the image must then be opened read-only.
    fn check_writable(path: &Path, ih: &ImageHeader, depth: u32) -> Result<()> {
        let h = &ih.header;
        let refuse = |why: &str| {
            Err(Self::corrupt_at(
                path,
                format!("{why}; open the image read-only"),
            ))
        };
        if h.incompatible_features & incompat::CORRUPT != 0 {
            return refuse("the image is marked corrupt (run `qemu-img check -r all`)");
        }
        if ih.extended_l2() {
            return refuse(
                "writing images with extended L2 entries (subclusters) is not supported",
            );
        }
        if h.nb_snapshots > 0 {
            return refuse("writing images with internal snapshots is not supported");
        }
        if h.incompatible_features & incompat::DIRTY != 0 {
            if ih.extensions.iter().any(|e| e.kind == ext::BITMAPS) {
                return refuse(
                    "the image is dirty and has persistent bitmaps (run `qemu-img check -r all`)",
                );
            }
            if depth > 0 {
                return refuse("the image is still dirty after repair");
            }
        }
        Ok(())
    }

    /// Reads the L1 table. Every entry must point to an aligned cluster inside the file
    /// that is neither the header, the L1 table nor the refcount table.
    fn load_l1(
        io: &ImageFile,
        ih: &ImageHeader,
        file_len: u64,
        read_only: bool,
    ) -> Result<L1Table> {
        let h = &ih.header;
        let cs = ih.cluster_size();
        let l1_range = h.l1_table_offset..h.l1_table_offset + u64::from(h.l1_size) * 8;
        let rt_range = h.refcount_table_offset
            ..h.refcount_table_offset + u64::from(h.refcount_table_clusters) * cs;
        let entries = io.read_table(h.l1_table_offset, h.l1_size as usize)?;
        for (i, &raw) in entries.iter().enumerate() {
            let e = L1Entry::decode(raw, cs)
                .map_err(|e| Self::corrupt_at(io.path(), format!("L1 entry {i}: {}", e.0)))?;
            let Some(e) = e else { continue };
            Self::check_l1_entry(io.path(), i, &e, cs, file_len, &[&l1_range, &rt_range])?;
            if !read_only && !e.copied {
                return Err(Self::corrupt_at(
                    io.path(),
                    format!("L1 entry {i}: shared L2 table (copied flag clear); open the image read-only"),
                ));
            }
        }
        Ok(L1Table {
            entries,
            l1_range,
            rt_range,
        })
    }

    /// Checks where L1 entry `i` puts its L2 table: inside the file, past the header
    /// cluster and clear of the `guarded` metadata ranges.
    fn check_l1_entry(
        path: &Path,
        i: usize,
        e: &L1Entry,
        cs: u64,
        file_len: u64,
        guarded: &[&Range<u64>],
    ) -> Result<()> {
        if e.l2_offset >= file_len {
            return Err(Self::corrupt_at(
                path,
                format!(
                    "L1 entry {i}: L2 table at {:#x} is beyond the end of the file",
                    e.l2_offset
                ),
            ));
        }
        let t = e.l2_offset..e.l2_offset + cs;
        let overlaps = |r: &&Range<u64>| t.start < r.end && r.start < t.end;
        if e.l2_offset < cs || guarded.iter().any(overlaps) {
            return Err(Self::corrupt_at(
                path,
                format!(
                    "L1 entry {i}: L2 table at {:#x} overlaps other metadata",
                    e.l2_offset
                ),
            ));
        }
        Ok(())
    }

    /// Loads the refcount structures of an image opened for writing and checks that no
    /// refcount block lies in the header cluster or the L1 table, and that every L2 table
    /// counts as used: the allocator hands out clusters whose refcount is 0, so an L2
    /// table a corrupt image calls free would be handed out and overwritten. (The header,
    /// the refcount structures and the L1 table are guarded at each allocation.)
    fn load_refcounts(
        io: &ImageFile,
        ih: &ImageHeader,
        file_len: u64,
        l1: &L1Table,
    ) -> Result<Refcounts> {
        let h = &ih.header;
        let cs = ih.cluster_size();
        let mut rc = Refcounts::load(
            io,
            h.cluster_bits,
            h.refcount_order,
            h.refcount_table_offset,
            u64::from(h.refcount_table_clusters),
            file_len,
        )?;
        rc.check_disjoint(io, &[0..cs, l1.l1_range.clone()])?;
        // `load_l1` has decoded and checked every entry. In host order, so that each
        // refcount block is read once however large the image.
        let mut l2: Vec<(u64, usize)> = (l1.entries.iter().enumerate())
            .filter_map(|(i, &raw)| Some((L1Entry::decode(raw, cs).ok()??.l2_offset, i)))
            .collect();
        l2.sort_unstable();
        // Two L1 entries on one L2 table would make their guest ranges one.
        if let Some(w) = l2.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Self::corrupt_at(
                io.path(),
                format!(
                    "L1 entries {} and {} share the L2 table at {:#x}; repair the image \
                     (qemu-img check -r all) or open it read-only",
                    w[0].1, w[1].1, w[0].0
                ),
            ));
        }
        for (off, i) in l2 {
            let problem = if rc.is_block(off) {
                "lies on a refcount block"
            } else if rc.get(io, off >> h.cluster_bits)? == 0 {
                "has refcount 0"
            } else {
                continue;
            };
            return Err(Self::corrupt_at(
                io.path(),
                format!(
                    "L1 entry {i}: the L2 table at {off:#x} {problem}; repair the image \
                     (qemu-img check -r all) or open it read-only"
                ),
            ));
        }
        Ok(rc)
    }

    /// Builds the open image from the validated pieces.
    fn assemble(
        io: ImageFile,
        opts: &Qcow2Options,
        ih: &ImageHeader,
        l1: L1Table,
        backing: Option<Backing>,
        rc: Option<Refcounts>,
    ) -> Self {
        let h = &ih.header;
        let cs = ih.cluster_size();
        let alloc_end = rc.as_ref().map_or(u64::MAX, |r| r.alloc_end());
        let bs = u64::from(opts.block_size);
        let tables = (opts.l2_cache_bytes / cs).max(16) as usize;
        Qcow2Backstore {
            read_only: opts.read_only,
            block_size: opts.block_size,
            g: geometry(ih),
            size: AtomicU64::new(h.size),
            capacity: AtomicU64::new(h.size - h.size % bs),
            backing,
            backing_name: ih.backing_file.clone(),
            l1: RwLock::new(l1.entries),
            cache: L2Cache::new(tables),
            meta: Mutex::new(Meta {
                rc,
                l1_offset: h.l1_table_offset,
                dirty_l2: BTreeMap::new(),
                dirty_l1: BTreeSet::new(),
                pending_frees: Vec::new(),
            }),
            io_gate: RwLock::new(()),
            alloc_end: AtomicU64::new(alloc_end),
            guarded: RwLock::new(vec![l1.l1_range, l1.rt_range]),
            io,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypt_method_names_follow_qcow2_txt() {
        // qcow2.txt "Header" byte 32: 0 = none, 1 = AES, 2 = LUKS.
        assert_eq!(crypt_method_name(1), "AES");
        assert_eq!(crypt_method_name(2), "LUKS");
        assert_eq!(crypt_method_name(3), "unknown");
    }

    #[test]
    fn l1_entry_must_avoid_header_tables_and_end_of_file() {
        let p = Path::new("x.qcow2");
        let cs = 65536;
        let l1 = 3 * cs..3 * cs + 8;
        let rt = cs..2 * cs;
        let guarded = [&l1, &rt];
        let at = |off: u64| L1Entry {
            l2_offset: off,
            copied: true,
        };
        // A free cluster inside the file is accepted.
        assert!(Qcow2Backstore::check_l1_entry(p, 0, &at(4 * cs), cs, 5 * cs, &guarded).is_ok());
        // The header cluster (offset 0), the refcount table and the L1 table are refused.
        for off in [0, cs, 3 * cs] {
            let e = Qcow2Backstore::check_l1_entry(p, 7, &at(off), cs, 5 * cs, &guarded);
            let msg = e.unwrap_err().to_string();
            assert!(
                msg.contains("L1 entry 7") && msg.contains("overlaps"),
                "{msg}"
            );
        }
        // A table at or past the end of the file is refused.
        let e = Qcow2Backstore::check_l1_entry(p, 1, &at(5 * cs), cs, 5 * cs, &guarded);
        assert!(e.unwrap_err().to_string().contains("beyond the end"));
    }
}
