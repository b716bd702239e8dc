//! qcow2 image backstore (QEMU copy-on-write format, versions 2 and 3).
//!
//! Format reference: QEMU `docs/interop/qcow2.txt`; section names below refer to it.
//!
//! # What is supported
//!
//! * Reading and writing v2 (`compat=0.10`) and v3 (`compat=1.1`) images with any cluster
//!   size qemu accepts (512 B - 2 MiB) and any refcount width (1-64 bits).
//! * Zero clusters (v3 zero flag), discard and write-zeroes, backing files (raw or qcow2,
//!   read through, partial clusters copied up into the overlay), compressed clusters
//!   (read; deflate or zstd; a write to one copies it into a new cluster), images with
//!   `lazy_refcounts` (we always keep refcounts exact and never set the dirty bit; an image
//!   left dirty by qemu is repaired by rebuilding its refcounts when opened for writing).
//! * Extended L2 entries (subclusters) and internal snapshots are supported read-only;
//!   encryption and external data files are refused.
//!
//! # Crash safety
//!
//! Metadata is ordered like qemu's: a data cluster and its refcount are written, then
//! `fdatasync`, then the L2 table that points to it, then `fdatasync`, then any new L1
//! entry. Freed clusters get their refcount decremented only after the L2 change that
//! dropped them is durable, and are not reused before that. So a crash at any point leaves
//! at worst leaked clusters (refcount 1, unreferenced), which `qemu-img check` reports as
//! leaks, not corruption.
//!
//! L2 updates are write-back: they reach the file on [`Backstore::flush`], on a FUA write
//! (which flushes), and when too many tables are dirty. The engine therefore reports a
//! volatile write cache; acknowledged FUA writes and everything before a completed flush
//! survive a crash.
//!
//! # Caching
//!
//! Data and metadata go through the page cache by default, and reads are copied out of a
//! read-only mapping of the image (`io.rs`). [`Qcow2Options::direct_io`] is qemu's
//! `cache=none`: every read and write of the image is `O_DIRECT` (unaligned ones through
//! the aligned blocks around them). The crash-safety order above holds either way:
//! it rests on `fdatasync`, which covers the whole file whichever descriptor wrote it.
//!
//! # Sharing with qemu
//!
//! Images are locked the way qemu locks them (OFD byte-range locks, see `lock.rs`), so
//! qemu and `qemu-img` refuse to write an image rustio has open for writing and vice
//! versa; `qemu-img ... -U` can still inspect it.
//!
//! # Concurrency
//!
//! Reads, and writes to clusters that are already allocated, look up the L2 cache without
//! the metadata lock and do their I/O in parallel. Allocation, L2 updates and flushes take
//! the metadata lock. An I/O gate (a reader-writer lock held shared for the duration of
//! every request) lets freed clusters be recycled only once no request that might still
//! use their old mapping is in flight.

mod backing;
mod bufs;
mod cache;
mod compress;
mod create;
pub mod entry;
pub mod header;
mod io;
mod lock;
mod open;
mod refcount;
mod repair;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IoSlice, IoSliceMut};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use backing::BackingFormat;
pub use create::{CreateOptions, Version};

use backing::Backing;
use bufs::{Bufs, Run};
use cache::{L2Cache, L2Table};
use entry::{L2Entry, L2Format, SubclusterBitmap, L1E_OFFSET_MASK, OFLAG_COPIED, SUBCLUSTERS};
use header::{CompressionType, OFF_L1_SIZE, OFF_SIZE};
use io::{table_bytes, AlignedBuf, ImageFile};
use refcount::Refcounts;

use crate::{check_iov, check_range, Backstore, Capabilities, Error, Extent};
use crate::{Result, WriteFlags};

/// Largest run of guest bytes handled by one host I/O.
const MAX_RUN: u64 = 16 << 20;
/// `block_status` looks at no more than this many mapping pieces per call.
const MAX_STATUS_PIECES: usize = 1 << 16;
/// Default memory for cached L2 tables.
const DEFAULT_L2_CACHE: u64 = 32 << 20;

/// How to open a qcow2 image.
#[derive(Debug, Clone)]
pub struct Qcow2Options {
    /// Refuse writes (and open the file read-only).
    pub read_only: bool,
    /// Logical block size reported to the SCSI layer.
    pub block_size: u32,
    /// Bytes of memory for cached L2 tables.
    pub l2_cache_bytes: u64,
    /// Read data through a read-only shared mapping of the image (and of a raw backing
    /// file) instead of a `preadv` each; the default follows
    /// [`crate::file::set_mmap_reads_default`] (`--no-mmap-reads`).
    pub mmap_reads: bool,
    /// qemu's `cache=none`: every read and write of the image is `O_DIRECT`, bypassing the
    /// host page cache (unaligned ones through aligned blocks, `io.rs`). The
    /// write cache reported to initiators is unchanged: SYNCHRONIZE CACHE still flushes the
    /// metadata and the disk's cache. Opening fails if the file system refuses `O_DIRECT`.
    /// Backing files follow the overlay.
    pub direct_io: bool,
}

impl Default for Qcow2Options {
    fn default() -> Self {
        Qcow2Options {
            read_only: false,
            block_size: 512,
            l2_cache_bytes: DEFAULT_L2_CACHE,
            mmap_reads: crate::file::mmap_reads_default(),
            direct_io: false,
        }
    }
}

/// Fixed geometry of an open image.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    version: u32,
    cluster_bits: u32,
    cluster_size: u64,
    /// L2 entries per table.
    l2_entries: u64,
    /// 64-bit words per L2 entry (2 with extended L2 entries).
    slot: usize,
    fmt: L2Format,
    compression: CompressionType,
}

impl Geometry {
    fn cmask(&self) -> u64 {
        self.cluster_size - 1
    }
}

/// State changed only under the metadata lock.
#[derive(Debug)]
struct Meta {
    /// Refcount structures (`None` when read-only).
    rc: Option<Refcounts>,
    l1_offset: u64,
    /// L2 tables changed since the last flush, by L1 index (this also pins them in the cache).
    dirty_l2: BTreeMap<usize, Arc<L2Table>>,
    /// L1 entries changed since the last flush.
    dirty_l1: BTreeSet<usize>,
    /// Host byte ranges no longer referenced by the in-memory tables, to be released once
    /// the tables are durable (each cluster touched loses one reference).
    pending_frees: Vec<Range<u64>>,
}

/// One piece of the guest address space and where its bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Host bytes at this offset.
    Host(u64),
    /// Reads as zeros.
    Zero,
    /// Not allocated here; comes from the backing file.
    Backing,
    /// Part of a compressed cluster.
    Compressed { offset: u64, sectors: u64 },
}

/// What discard and write-zeroes may do with whole clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZeroMode {
    /// UNMAP: deallocate.
    Discard,
    /// WRITE SAME with zeros; `may_unmap` lets the engine deallocate.
    WriteZeroes { may_unmap: bool },
}

/// The L2 table (by L1 index) one request looked up last, `None` inside when unallocated.
type TableCursor = Option<(usize, Option<Arc<L2Table>>)>;

/// A qcow2 image as a [`Backstore`].
pub struct Qcow2Backstore {
    io: ImageFile,
    read_only: bool,
    block_size: u32,
    g: Geometry,
    size: AtomicU64,
    capacity: AtomicU64,
    backing: Option<Backing>,
    backing_name: Option<String>,
    l1: RwLock<Vec<u64>>,
    cache: L2Cache,
    meta: Mutex<Meta>,
    /// Held shared by every request for its whole duration; held exclusively while freed
    /// clusters are released for reuse.
    io_gate: RwLock<()>,
    /// Mirror of the allocator's end (in clusters): no legitimate data cluster lies past it.
    alloc_end: AtomicU64,
    /// Host byte ranges data writes must never touch (L1 table, refcount table).
    guarded: RwLock<Vec<Range<u64>>>,
}

pub(crate) fn fill_zero(bufs: &mut [&mut [u8]]) {
    for b in bufs.iter_mut() {
        b.fill(0);
    }
}

fn copy_out(mut src: &[u8], dst: &mut [&mut [u8]]) {
    for d in dst.iter_mut() {
        let n = d.len().min(src.len());
        d[..n].copy_from_slice(&src[..n]);
        src = &src[n..];
    }
}

fn gather_into(src: &[&[u8]], dst: &mut [u8]) {
    let mut pos = 0;
    for s in src {
        dst[pos..pos + s.len()].copy_from_slice(s);
        pos += s.len();
    }
}

impl Qcow2Backstore {
    /// Opens an existing image with default options (512-byte blocks).
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<Self> {
        Self::open_with(
            path,
            &Qcow2Options {
                read_only,
                ..Qcow2Options::default()
            },
        )
    }

    /// Opens an existing image.
    pub fn open_with(path: impl AsRef<Path>, opts: &Qcow2Options) -> Result<Self> {
        let b = Self::open_inner(path.as_ref(), opts, 0)?;
        if b.capacity() == 0 {
            return Err(Error::InvalidConfig(format!(
                "{}: virtual size {} is smaller than one {}-byte block",
                b.io.path().display(),
                b.virtual_size(),
                b.block_size
            )));
        }
        Ok(b)
    }

    /// Creates a new image of `size` bytes with clusters of `1 << cluster_bits` bytes and
    /// opens it for writing. The file must not exist yet.
    pub fn create(
        path: impl AsRef<Path>,
        size: u64,
        cluster_bits: u32,
        opts: &CreateOptions,
    ) -> Result<Self> {
        create::create(path.as_ref(), size, cluster_bits, opts)?;
        Self::open_with(path, &opts.open)
    }

    fn corrupt_at(path: &Path, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Self::corrupt_at(self.io.path(), reason)
    }

    /// Path of the image file.
    pub fn path(&self) -> &Path {
        self.io.path()
    }

    /// Virtual disk size in bytes (the capacity before rounding down to whole blocks).
    pub fn virtual_size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.g.cluster_size
    }

    /// qcow2 version (2 or 3).
    pub fn version(&self) -> u32 {
        self.g.version
    }

    /// The backing file name as stored in the image, if any.
    pub fn backing_file(&self) -> Option<&str> {
        self.backing_name.as_deref()
    }

    /// Flushes and closes the image, reporting any error the implicit flush on drop would
    /// have swallowed.
    pub fn close(self) -> Result<()> {
        self.flush()
    }

    // ---- mapping -------------------------------------------------------------------

    fn split(&self, pos: u64) -> (usize, usize, u64) {
        let gc = pos >> self.g.cluster_bits;
        (
            (gc / self.g.l2_entries) as usize,
            (gc % self.g.l2_entries) as usize,
            pos & self.g.cmask(),
        )
    }

    /// The L2 table for L1 index `l1i`, from the cache or the file; `None` if unallocated.
    fn l2_table(&self, l1i: usize) -> Result<Option<Arc<L2Table>>> {
        let raw = self.l1.read().get(l1i).copied().unwrap_or(0);
        let off = raw & L1E_OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if let Some(t) = self.cache.get(l1i) {
            return Ok(Some(t));
        }
        let mut buf = vec![0u8; self.g.cluster_size as usize];
        self.io.read_at(&mut buf, off)?;
        Ok(Some(
            self.cache
                .insert_loaded(l1i, L2Table::from_bytes(off, &buf)),
        ))
    }

    fn entry_of(&self, t: &L2Table, l2i: usize) -> Result<(L2Entry, Option<SubclusterBitmap>)> {
        let raw = t.get(l2i * self.g.slot);
        let e = L2Entry::decode(raw, self.g.fmt).map_err(|e| {
            self.corrupt(format!("L2 table at {:#x}, entry {l2i}: {}", t.offset, e.0))
        })?;
        if !self.g.fmt.extended {
            return Ok((e, None));
        }
        let bm = SubclusterBitmap::decode(t.get(l2i * 2 + 1), e).map_err(|e| {
            self.corrupt(format!("L2 table at {:#x}, entry {l2i}: {}", t.offset, e.0))
        })?;
        Ok((e, Some(bm)))
    }

    /// The L2 table for `l1i` through `cur`, which keeps the last one a request looked up:
    /// the clusters of one request mostly share a table, so it costs one cache lookup.
    fn cursor_table<'c>(
        &self,
        cur: &'c mut TableCursor,
        l1i: usize,
    ) -> Result<Option<&'c L2Table>> {
        if cur.as_ref().map(|c| c.0) != Some(l1i) {
            *cur = Some((l1i, self.l2_table(l1i)?));
        }
        Ok(cur.as_ref().and_then(|c| c.1.as_deref()))
    }

    /// Where guest byte `pos` comes from, and for how many bytes that stays true (at most
    /// to the end of its cluster, or of the L2 table's range when that is unallocated).
    fn piece_at(&self, cur: &mut TableCursor, pos: u64) -> Result<(Piece, u64)> {
        let (l1i, l2i, in_off) = self.split(pos);
        let cs = self.g.cluster_size;
        let unalloc = if self.backing.is_some() {
            Piece::Backing
        } else {
            Piece::Zero
        };
        let Some(t) = self.cursor_table(cur, l1i)? else {
            let span = cs * self.g.l2_entries;
            return Ok((unalloc, span - pos % span));
        };
        let rest = cs - in_off;
        let (e, bm) = self.entry_of(t, l2i)?;
        let whole = |p| Ok((p, rest));
        match (e, bm) {
            (L2Entry::Compressed { offset, sectors }, _) => {
                whole(Piece::Compressed { offset, sectors })
            }
            (e, None) => whole(match e {
                L2Entry::Unallocated => unalloc,
                L2Entry::Zero { .. } => Piece::Zero,
                L2Entry::Normal { host, .. } => Piece::Host(host + in_off),
                L2Entry::Compressed { .. } => unalloc, // handled above
            }),
            (e, Some(bm)) => {
                // qcow2.txt "Extended L2 Entries": 32 subclusters, each allocated, zero or
                // unallocated.
                let scs = cs / SUBCLUSTERS;
                let state = |i: u64| {
                    if bm.alloc >> i & 1 != 0 {
                        0
                    } else if bm.zero >> i & 1 != 0 {
                        1
                    } else {
                        2
                    }
                };
                let first = in_off / scs;
                let s = state(first);
                let mut j = first + 1;
                while j < SUBCLUSTERS && state(j) == s {
                    j += 1;
                }
                let len = j * scs - in_off;
                let p = match (s, e) {
                    (0, L2Entry::Normal { host, .. }) => Piece::Host(host + in_off),
                    (0, _) => {
                        return Err(self.corrupt(format!(
                            "allocated subcluster without data at guest offset {pos}"
                        )))
                    }
                    (1, _) => Piece::Zero,
                    _ => unalloc,
                };
                Ok((p, len))
            }
        }
    }

    fn read_compressed(&self, offset: u64, sectors: u64) -> Result<Vec<u8>> {
        let (start, len) = L2Entry::compressed_span(offset, sectors);
        let mut input = vec![0u8; len as usize];
        self.io.read_at(&mut input, start)?;
        let mut out = vec![0u8; self.g.cluster_size as usize];
        compress::decompress(self.g.compression, &input, &mut out)
            .map_err(|e| self.corrupt(format!("compressed cluster at {offset:#x}: {}", e.0)))?;
        Ok(out)
    }

    /// Reads guest bytes `[offset, offset+len)` (within the virtual size) into `q`.
    pub(crate) fn read_guest(&self, mut q: Bufs<&mut [u8]>, offset: u64, len: u64) -> Result<()> {
        let _gate = self.io_gate.read();
        let end = offset + len;
        let mut pos = offset;
        let mut next: Option<(Piece, u64)> = None;
        let mut cur = None;
        while pos < end {
            let (piece, plen) = match next.take() {
                Some(x) => x,
                None => self.piece_at(&mut cur, pos)?,
            };
            let mut n = plen.min(end - pos);
            if !matches!(piece, Piece::Compressed { .. }) {
                while pos + n < end && n < MAX_RUN {
                    let (p2, l2) = self.piece_at(&mut cur, pos + n)?;
                    let joined = match (piece, p2) {
                        (Piece::Host(a), Piece::Host(b)) => b == a + n,
                        (Piece::Zero, Piece::Zero) | (Piece::Backing, Piece::Backing) => true,
                        _ => false,
                    };
                    if !joined {
                        next = Some((p2, l2));
                        break;
                    }
                    n += l2.min(end - pos - n);
                }
            }
            let mut dst = q.take(n as usize);
            match piece {
                Piece::Host(h) => self.io.read_vec(&mut dst, h)?,
                Piece::Zero => fill_zero(&mut dst),
                Piece::Backing => match &self.backing {
                    Some(b) => b.read(dst, pos)?,
                    None => fill_zero(&mut dst),
                },
                Piece::Compressed { offset, sectors } => {
                    let data = self.read_compressed(offset, sectors)?;
                    let at = (pos & self.g.cmask()) as usize;
                    copy_out(&data[at..at + n as usize], &mut dst);
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// The full current content of guest cluster `gc` as it reads now (for copy-on-write).
    fn cluster_content(&self, gc: u64, e: L2Entry) -> Result<AlignedBuf> {
        let cs = self.g.cluster_size;
        let mut buf = self.io.buf(cs as usize);
        match e {
            L2Entry::Zero { .. } => {}
            L2Entry::Normal { host, .. } => self.io.read_vec(&mut [&mut buf[..]], host)?,
            L2Entry::Compressed { offset, sectors } => {
                buf.copy_from_slice(&self.read_compressed(offset, sectors)?)
            }
            L2Entry::Unallocated => {
                if let Some(b) = &self.backing {
                    b.read(Run::from_iter([&mut buf[..]]), gc * cs)?;
                }
            }
        }
        Ok(buf)
    }

    // ---- writes ----------------------------------------------------------------------

    /// Refuses data writes that would land on metadata or past what the allocator knows.
    fn check_data_write(&self, host: u64, len: u64) -> Result<()> {
        let cs = self.g.cluster_size;
        let end = host.saturating_add(len);
        let limit = self.alloc_end.load(Ordering::Acquire).saturating_mul(cs);
        if host < cs
            || end > limit
            || self
                .guarded
                .read()
                .iter()
                .any(|r| host < r.end && r.start < end)
        {
            return Err(self.corrupt(format!(
                "refusing to write {len} bytes of data at host offset {host:#x}: it overlaps metadata or unallocated space"
            )));
        }
        Ok(())
    }

    /// Host offset for writing guest byte `pos` in place, if its cluster is allocated and
    /// exclusively ours.
    fn writable_host(&self, pos: u64) -> Result<Option<u64>> {
        let (l1i, l2i, in_off) = self.split(pos);
        let Some(t) = self.l2_table(l1i)? else {
            return Ok(None);
        };
        Ok(match self.entry_of(&t, l2i)?.0 {
            L2Entry::Normal { host, copied: true } => Some(host + in_off),
            _ => None,
        })
    }

    fn note_alloc(&self, m: &Meta) {
        if let Some(rc) = &m.rc {
            self.alloc_end.store(rc.alloc_end(), Ordering::Release);
            let rt = rc.table_range();
            let mut g = self.guarded.write();
            if g.get(1) != Some(&rt) {
                g.truncate(1);
                g.push(rt);
            }
        }
    }

    fn rc<'m>(&self, m: &'m mut Meta) -> Result<&'m mut Refcounts> {
        m.rc.as_mut().ok_or(Error::ReadOnly)
    }

    /// Allocates one cluster for data or an L2 table. A corrupt image can report metadata
    /// as free; the allocator refuses the structures it knows (header, refcount table and
    /// blocks) and the metadata check here the rest (the L1 table).
    fn alloc_cluster(&self, m: &mut Meta) -> Result<u64> {
        let off = self.rc(m)?.alloc_cluster(&self.io)?;
        self.note_alloc(m);
        self.check_data_write(off, self.g.cluster_size)?;
        Ok(off)
    }

    /// The L2 table for `l1i`, allocating an empty one if there is none.
    fn l2_for_write(&self, m: &mut Meta, l1i: usize) -> Result<Arc<L2Table>> {
        if let Some(t) = self.l2_table(l1i)? {
            return Ok(t);
        }
        if l1i >= self.l1.read().len() {
            return Err(self.corrupt(format!("L1 index {l1i} is beyond the L1 table")));
        }
        let off = self.alloc_cluster(m)?;
        let t = Arc::new(L2Table::zeroed(
            off,
            self.g.l2_entries as usize * self.g.slot,
        ));
        // Cache first, then publish in L1, so a concurrent reader never loads the table
        // from the file before it has been written there.
        self.cache.insert_new(l1i, t.clone());
        m.dirty_l2.insert(l1i, t.clone());
        self.l1.write()[l1i] = off | OFLAG_COPIED;
        m.dirty_l1.insert(l1i);
        Ok(t)
    }

    /// Sets the L2 entry of guest cluster `gc`. Unallocated entries need no table.
    fn set_entry(&self, m: &mut Meta, gc: u64, e: L2Entry) -> Result<()> {
        let l1i = (gc / self.g.l2_entries) as usize;
        let l2i = (gc % self.g.l2_entries) as usize;
        let t = if e == L2Entry::Unallocated {
            match self.l2_table(l1i)? {
                Some(t) => t,
                None => return Ok(()),
            }
        } else {
            self.l2_for_write(m, l1i)?
        };
        t.set(l2i * self.g.slot, e.encode(self.g.fmt));
        m.dirty_l2.insert(l1i, t);
        Ok(())
    }

    fn entry_locked(&self, gc: u64) -> Result<L2Entry> {
        let l1i = (gc / self.g.l2_entries) as usize;
        let l2i = (gc % self.g.l2_entries) as usize;
        match self.l2_table(l1i)? {
            Some(t) => Ok(self.entry_of(&t, l2i)?.0),
            None => Ok(L2Entry::Unallocated),
        }
    }

    /// Writes `src` at guest `pos` inside one cluster whose entry needs a change:
    /// allocation, copy-on-write of backing, compressed or shared data, or a zero cluster.
    fn write_cluster_slow(&self, pos: u64, src: &[&[u8]]) -> Result<()> {
        let n: u64 = src.iter().map(|s| s.len() as u64).sum();
        let gc = pos >> self.g.cluster_bits;
        let in_off = pos & self.g.cmask();
        let cs = self.g.cluster_size;
        let mut m = self.meta.lock();
        let e = self.entry_locked(gc)?;
        if let L2Entry::Normal { host, copied: true } = e {
            // Someone allocated it while we waited for the lock.
            self.check_data_write(host + in_off, n)?;
            return self.io.write_vec(src, host + in_off);
        }
        let (target, old) = match e {
            L2Entry::Zero {
                host: Some(h),
                copied: true,
            } => {
                self.check_data_write(h, cs)?;
                (h, None)
            }
            _ => (self.alloc_cluster(&mut m)?, e.host_ranges()),
        };
        if in_off == 0 && n == cs {
            self.io.write_vec(src, target)?;
        } else {
            let mut buf = match e {
                L2Entry::Zero { .. } => self.io.buf(cs as usize),
                _ => self.cluster_content(gc, e)?,
            };
            gather_into(src, &mut buf[in_off as usize..(in_off + n) as usize]);
            self.io.write_vec(&[&buf], target)?;
        }
        self.set_entry(
            &mut m,
            gc,
            L2Entry::Normal {
                host: target,
                copied: true,
            },
        )?;
        if let Some(r) = old {
            m.pending_frees.push(r);
        }
        self.maybe_flush(&mut m)
    }

    /// Writes guest bytes from `q` at `offset`.
    fn write_guest(&self, mut q: Bufs<&[u8]>, offset: u64, len: u64) -> Result<()> {
        let end = offset + len;
        let cs = self.g.cluster_size;
        let mut pos = offset;
        while pos < end {
            let cluster_end = ((pos | self.g.cmask()) + 1).min(end);
            if let Some(host) = self.writable_host(pos)? {
                let mut n = cluster_end - pos;
                while pos + n < end && n < MAX_RUN {
                    match self.writable_host(pos + n)? {
                        Some(h) if h == host + n => n += cs.min(end - pos - n),
                        _ => break,
                    }
                }
                self.check_data_write(host, n)?;
                let src = q.take(n as usize);
                self.io.write_vec(&src, host)?;
                pos += n;
                continue;
            }
            let n = cluster_end - pos;
            let src = q.take(n as usize);
            self.write_cluster_slow(pos, &src)?;
            pos += n;
        }
        Ok(())
    }

    // ---- flush -----------------------------------------------------------------------

    /// Flushes when enough L2 tables are dirty that they should not pile up in memory.
    fn maybe_flush(&self, m: &mut Meta) -> Result<()> {
        let limit = (self.cache_capacity() / 2).max(8);
        if m.dirty_l2.len() > limit {
            self.flush_locked(m)?;
        }
        Ok(())
    }

    fn cache_capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Makes data and metadata durable in crash-safe order: data and refcounts, then L2
    /// tables, then L1 entries, with a sync between each stage.
    fn flush_locked(&self, m: &mut Meta) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.io.sync()?;
        if m.dirty_l2.is_empty() && m.dirty_l1.is_empty() {
            return Ok(());
        }
        while let Some((&i, t)) = m.dirty_l2.iter().next() {
            self.io.write_at(&t.to_bytes(), t.offset)?;
            m.dirty_l2.remove(&i);
        }
        if !m.dirty_l1.is_empty() {
            // New L2 tables must be durable before L1 points to them.
            self.io.sync()?;
            let l1 = self.l1.read().clone();
            let idx: Vec<usize> = m.dirty_l1.iter().copied().collect();
            let mut k = 0;
            while k < idx.len() {
                let start = idx[k];
                let mut stop = start;
                while k + 1 < idx.len() && idx[k + 1] == stop + 1 {
                    k += 1;
                    stop += 1;
                }
                let bytes = table_bytes(l1[start..=stop].iter().copied());
                self.io.write_at(&bytes, m.l1_offset + start as u64 * 8)?;
                k += 1;
            }
            m.dirty_l1.clear();
        }
        self.io.sync()
    }

    /// Drops the references of clusters freed before the last flush. The caller holds the
    /// I/O gate exclusively and has just flushed, so no request still uses them.
    fn release_frees(&self, m: &mut Meta) -> Result<()> {
        let frees = std::mem::take(&mut m.pending_frees);
        let rc = self.rc(m)?;
        for r in frees {
            rc.free_range(&self.io, r)?;
        }
        Ok(())
    }

    fn flush_all(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let has_frees = !self.meta.lock().pending_frees.is_empty();
        if has_frees {
            let _gate = self.io_gate.write();
            let mut m = self.meta.lock();
            self.flush_locked(&mut m)?;
            self.release_frees(&mut m)
        } else {
            let mut m = self.meta.lock();
            self.flush_locked(&mut m)
        }
    }

    // ---- discard / write zeroes ----------------------------------------------------------

    fn backing_covers(&self, gc: u64) -> bool {
        self.backing
            .as_ref()
            .is_some_and(|b| gc.saturating_mul(self.g.cluster_size) < b.size())
    }

    /// Zeroes part of one cluster by writing zeros, unless it already reads as zeros.
    fn zero_partial(&self, pos: u64, n: u64) -> Result<()> {
        let gc = pos >> self.g.cluster_bits;
        let e = self.entry_locked(gc)?;
        let already_zero = match e {
            L2Entry::Zero { .. } => true,
            L2Entry::Unallocated => !self.backing_covers(gc),
            _ => false,
        };
        if already_zero {
            return Ok(());
        }
        let zeros = vec![0u8; n as usize];
        self.write_guest(Bufs::new([&zeros[..]]), pos, n)
    }

    /// Changes the entry of whole cluster `gc` so that it reads as zeros.
    fn zero_cluster(&self, m: &mut Meta, gc: u64, mode: ZeroMode) -> Result<()> {
        let cur = self.entry_locked(gc)?;
        let shows_backing = self.backing_covers(gc);
        let v3 = self.g.fmt.zero_flag;
        let keep = |host, copied| L2Entry::Zero {
            host: Some(host),
            copied,
        };
        let new = match (mode, cur) {
            // Keep the allocation, just flag it (SBC-4 WRITE SAME without UNMAP).
            (
                ZeroMode::WriteZeroes { may_unmap: false },
                L2Entry::Normal { host, copied: true },
            )
            | (
                ZeroMode::WriteZeroes { may_unmap: false },
                L2Entry::Zero {
                    host: Some(host),
                    copied: true,
                },
            ) if v3 => keep(host, true),
            (
                ZeroMode::WriteZeroes { may_unmap: false },
                L2Entry::Normal { host, copied: true },
            ) => {
                // v2 has no zero flag: write zeros in place.
                self.check_data_write(host, self.g.cluster_size)?;
                let zeros = self.io.buf(self.g.cluster_size as usize);
                return self.io.write_vec(&[&zeros], host);
            }
            _ if shows_backing => {
                if !v3 {
                    // Unreachable: v2 images with a backing file are zeroed by writing.
                    return Err(Error::Unsupported("zero clusters in a version 2 image"));
                }
                L2Entry::Zero {
                    host: None,
                    copied: false,
                }
            }
            _ => L2Entry::Unallocated,
        };
        if new == cur {
            return Ok(());
        }
        self.set_entry(m, gc, new)?;
        let kept = match new {
            L2Entry::Zero { host: Some(h), .. } => Some(h),
            _ => None,
        };
        if let Some(r) = cur.host_ranges() {
            if kept != Some(r.start) {
                m.pending_frees.push(r);
            }
        }
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64, mode: ZeroMode) -> Result<()> {
        let op = if mode == ZeroMode::Discard {
            "discard"
        } else {
            "write zeroes"
        };
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        check_range(op, offset, len, self.capacity())?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        if !self.g.fmt.zero_flag && self.backing.is_some() {
            // Without the v3 zero flag an unallocated cluster would show the backing file.
            let zeros = vec![0u8; len.min(1 << 20) as usize];
            let _gate = self.io_gate.read();
            let mut pos = offset;
            while pos < end {
                let n = (end - pos).min(zeros.len() as u64);
                self.write_guest(Bufs::new([&zeros[..n as usize]]), pos, n)?;
                pos += n;
            }
            return Ok(());
        }
        let cs = self.g.cluster_size;
        let first_full = offset.div_ceil(cs);
        let last_full = end / cs; // exclusive
        {
            let _gate = self.io_gate.read();
            if first_full >= last_full {
                // Within one or two clusters, none of them whole.
                let mut pos = offset;
                while pos < end {
                    let n = ((pos | self.g.cmask()) + 1).min(end) - pos;
                    self.zero_partial(pos, n)?;
                    pos += n;
                }
            } else {
                if offset < first_full * cs {
                    self.zero_partial(offset, first_full * cs - offset)?;
                }
                if end > last_full * cs {
                    self.zero_partial(last_full * cs, end - last_full * cs)?;
                }
                let mut m = self.meta.lock();
                for gc in first_full..last_full {
                    self.zero_cluster(&mut m, gc, mode)?;
                    self.maybe_flush(&mut m)?;
                }
            }
        }
        let frees = self.meta.lock().pending_frees.len();
        if frees > 4096 {
            self.flush_all()?;
        }
        Ok(())
    }

    // ---- resize --------------------------------------------------------------------------

    fn grow(&self, new_size: u64) -> Result<()> {
        let _gate = self.io_gate.write();
        let mut m = self.meta.lock();
        let cur = self.virtual_size();
        if new_size < cur {
            return Err(Error::Unsupported("shrinking a qcow2 image"));
        }
        let cs = self.g.cluster_size;
        let needed = new_size.div_ceil(cs * self.g.l2_entries);
        let have = self.l1.read().len() as u64;
        if needed > have {
            if needed * 8 > header::MAX_L1_BYTES {
                return Err(Error::InvalidConfig(format!(
                    "{}: {new_size} bytes needs an L1 table larger than qemu's limit",
                    self.path().display()
                )));
            }
            self.flush_locked(&mut m)?;
            let clusters = (needed * 8).div_ceil(cs);
            let first = self.rc(&mut m)?.alloc_area(&self.io, clusters)?;
            self.note_alloc(&m);
            let new_off = first * cs;
            let mut l1 = self.l1.read().clone();
            l1.resize(needed as usize, 0);
            self.io
                .write_at(&table_bytes(l1.iter().copied()), new_off)?;
            self.io.sync()?;
            let mut hdr = [0u8; 12];
            hdr[..4].copy_from_slice(&(needed as u32).to_be_bytes());
            hdr[4..].copy_from_slice(&new_off.to_be_bytes());
            self.io.write_at(&hdr, OFF_L1_SIZE)?;
            self.io.sync()?;
            let old = m.l1_offset..m.l1_offset + have * 8;
            m.l1_offset = new_off;
            *self.l1.write() = l1;
            self.guarded.write()[0] = new_off..new_off + needed * 8;
            self.rc(&mut m)?.free_range(&self.io, old)?;
        }
        self.io.write_at(&new_size.to_be_bytes(), OFF_SIZE)?;
        self.io.sync()?;
        self.size.store(new_size, Ordering::Release);
        self.capacity.store(
            new_size - new_size % u64::from(self.block_size),
            Ordering::Release,
        );
        Ok(())
    }
}

impl std::fmt::Debug for Qcow2Backstore {
    // Not derived: the L1 table and caches can be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Backstore")
            .field("path", &self.io.path())
            .field("version", &self.g.version)
            .field("cluster_size", &self.g.cluster_size)
            .field("virtual_size", &self.virtual_size())
            .field("read_only", &self.read_only)
            .field("backing_file", &self.backing_name)
            .finish_non_exhaustive()
    }
}

impl Drop for Qcow2Backstore {
    fn drop(&mut self) {
        // Best effort: callers that care about the result use `close()` or `flush()`.
        let _ = self.flush_all();
    }
}

impl Backstore for Qcow2Backstore {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Acquire)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: self.read_only,
            discard: !self.read_only,
            discard_zeroes: true,
            volatile_cache: !self.read_only,
            rotational: false,
            allocation_status: true,
            network: false,
        }
    }

    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<()> {
        let len = check_iov("read", bufs, offset, self.capacity())?;
        if len == 0 {
            return Ok(());
        }
        let q = Bufs::new(bufs.iter_mut().map(|b| &mut **b));
        self.read_guest(q, offset, len)
    }

    fn write_vectored_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        flags: WriteFlags,
    ) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let len = check_iov("write", bufs, offset, self.capacity())?;
        if len == 0 {
            return Ok(());
        }
        let q = Bufs::new(bufs.iter().map(|b| &**b));
        {
            let _gate = self.io_gate.read();
            self.write_guest(q, offset, len)?;
        }
        if flags.fua {
            // FUA covers the data and the metadata that makes it reachable.
            let mut m = self.meta.lock();
            self.flush_locked(&mut m)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.flush_all()
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len, ZeroMode::Discard)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.zero_range(offset, len, ZeroMode::WriteZeroes { may_unmap })
    }

    fn resize(&self, new_capacity: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let bs = u64::from(self.block_size);
        if new_capacity == 0 || new_capacity % bs != 0 {
            return Err(Error::InvalidConfig(format!(
                "size {new_capacity} must be a non-zero multiple of the block size {bs}"
            )));
        }
        self.grow(new_capacity)
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range("block status", offset, len, self.capacity())?;
        let _gate = self.io_gate.read();
        let end = offset + len;
        let backing_size = self.backing.as_ref().map_or(0, |b| b.size());
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = offset;
        let mut pieces = 0;
        let mut cur = None;
        while pos < end && pieces < MAX_STATUS_PIECES {
            let (piece, plen) = self.piece_at(&mut cur, pos)?;
            let mut n = plen.min(end - pos);
            let mapped = match piece {
                Piece::Host(_) | Piece::Compressed { .. } => true,
                Piece::Zero => false,
                Piece::Backing => {
                    // Bytes the backing file provides are data; past its end they are zeros.
                    if pos < backing_size {
                        n = n.min(backing_size - pos);
                        true
                    } else {
                        false
                    }
                }
            };
            match out.last_mut() {
                Some(last) if last.mapped == mapped => last.len += n,
                _ => out.push(Extent {
                    offset: pos,
                    len: n,
                    mapped,
                }),
            }
            pos += n;
            pieces += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
