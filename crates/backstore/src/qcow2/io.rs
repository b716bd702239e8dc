//! Positioned I/O on the image file, with the path and offset attached to every error.
//!
//! Reads are copied out of a read-only mapping of the file where one covers them (like a
//! file LUN's, `crate::mmap`): no system call per read. The engine only ever grows its
//! image, so the mapping is replaced by a longer one as the file grows, at most once per
//! quarter of growth; reads past it, and all reads of images opened without mapped reads,
//! use `preadv`.
//!
//! With [`ImageFile::direct`] (qemu's `cache=none`) the file's contents move through a
//! second descriptor opened `O_DIRECT`, and nothing is ever written through the page
//! cache, so Linux never has a dirty cached copy that could go stale or be written back over
//! a direct write:
//!
//! * Every write is direct. One whose offset, buffers or length are not aligned (a 512-byte
//!   guest write, a table entry) is a read-modify-write of the aligned blocks around it,
//!   under a lock per block, so that two such writes into one block cannot undo each other.
//!   The file then ends on a block boundary, the rest zeros.
//! * Every read is direct too, unaligned ones through an aligned bounce buffer, and there
//!   is no mapping.
//!
//! The alignment is the larger of 4 KiB and the page size (at least the logical sector of
//! every disk Linux does direct I/O on); the TCMU data area and the transports' buffers are
//! page-aligned, so a guest's 4 KiB-aligned I/O needs no bounce buffer.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut};
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::uio::{preadv, pwritev};
use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;

use crate::mmap::{MappedRead, MappedReads, MAX_MAPPED};
use crate::{Error, Result};

/// At most this many iovecs go into one `preadv`/`pwritev` (Linux's `IOV_MAX` is 1024).
const MAX_IOVS: usize = 512;

/// The smallest alignment of `O_DIRECT` I/O here: 4 KiB or the page size, whichever is
/// larger (at least the logical sector of every disk Linux does direct I/O on).
pub fn page_align() -> usize {
    crate::mmap::page_size().unwrap_or(4096).max(4096)
}

/// Locks of unaligned direct writes ([`ImageFile::write_vec`]).
const RMW_STRIPES: usize = 64;

/// The image file (or a raw backing file) and its path, for error context.
#[derive(Debug)]
pub struct ImageFile {
    file: File,
    path: PathBuf,
    /// Reads from a mapping of the file, when enabled ([`ImageFile::mapped`]).
    map: MappedReads,
    /// The file's length as far as this process knows: its length when mapped, raised by
    /// every write past it (nothing here shrinks the file; another process that does
    /// makes a mapped read fault, which sets it back). 0 while reads are not mapped.
    known_len: AtomicU64,
    /// The longest mapping asked of the kernel so far (whether or not it mapped it).
    map_tried: AtomicU64,
    /// The same file opened `O_DIRECT`, for data I/O ([`ImageFile::direct`]).
    direct: Option<File>,
    /// Alignment of direct I/O (and of [`ImageFile::buf`]s).
    align: usize,
    /// Locks of unaligned direct writes, by block index modulo their number (none unless
    /// direct).
    rmw: Box<[Mutex<()>]>,
}

impl ImageFile {
    /// Wraps an open file; reads use `preadv`.
    pub fn new(file: File, path: PathBuf) -> Self {
        ImageFile {
            map: MappedReads::new(&file, 0, false),
            file,
            path,
            known_len: AtomicU64::new(0),
            map_tried: AtomicU64::new(0),
            direct: None,
            align: page_align(),
            rmw: Box::new([]),
        }
    }

    /// The same file with its reads served from a mapping of it, if `enabled` (and the
    /// kernel maps it).
    pub fn mapped(self, enabled: bool) -> Self {
        if !enabled {
            return self;
        }
        let len = self.file.metadata().map_or(0, |m| m.len());
        ImageFile {
            map: MappedReads::new(&self.file, len.min(MAX_MAPPED), true),
            known_len: AtomicU64::new(len),
            map_tried: AtomicU64::new(len.min(MAX_MAPPED)),
            ..self
        }
    }

    /// The same file with its data I/O going `O_DIRECT` (see the module documentation), if
    /// `enabled`; `write` opens that descriptor read-write. Fails with a clear message when
    /// the file system refuses `O_DIRECT` (tmpfs before Linux 6.6, some network file
    /// systems) or refuses it at the alignment, rather than silently caching.
    pub fn direct(self, enabled: bool, write: bool) -> Result<Self> {
        if !enabled {
            return Ok(self);
        }
        let refused = |why: String| {
            Error::InvalidConfig(format!(
                "{}: cache=none needs O_DIRECT, which {why}; use cache=writeback",
                self.path.display()
            ))
        };
        let meta = self.file.metadata().map_err(|source| Error::Open {
            path: self.path.clone(),
            source,
        })?;
        let align = page_align();
        let direct = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_DIRECT | libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => refused("its file system refuses".into()),
                _ => Error::Open {
                    path: self.path.clone(),
                    source: e,
                },
            })?;
        // The path may name another file by now: only the inode we hold will do.
        let same = direct
            .metadata()
            .is_ok_and(|b| meta.dev() == b.dev() && meta.ino() == b.ino());
        if !same {
            return Err(Error::InvalidConfig(format!(
                "{} was replaced by another file while it was being opened; open it again",
                self.path.display()
            )));
        }
        // Some file systems accept the flag and refuse the I/O (or need larger alignment).
        let mut probe = AlignedBuf::zeroed(align, align);
        loop {
            match nix::sys::uio::pread(&direct, &mut probe, 0) {
                Err(Errno::EINTR) => continue,
                Ok(_) => break,
                Err(Errno::EINVAL) => {
                    return Err(refused(format!(
                        "its file system refuses at {align}-byte alignment"
                    )))
                }
                Err(e) => return Err(self.io_err("read", 0, e.into())),
            }
        }
        Ok(ImageFile {
            direct: Some(direct),
            align,
            rmw: (0..RMW_STRIPES).map(|_| Mutex::new(())).collect(),
            // No mapping: every read is direct.
            ..ImageFile::new(self.file, self.path)
        })
    }

    /// `len` zero bytes aligned for this file's direct I/O, for whole clusters the engine
    /// builds itself (copy-on-write, zeroing).
    pub fn buf(&self, len: usize) -> AlignedBuf {
        AlignedBuf::zeroed(len, self.align)
    }

    /// Whether aligned data I/O goes `O_DIRECT`.
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current file length.
    pub fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|source| Error::Io {
                op: "stat",
                path: self.path.clone(),
                offset: 0,
                source,
            })
    }

    /// Reads into `bufs` from `offset`; whatever lies past the end of the file reads as
    /// zeros (like a sparse hole), which is how qemu treats clusters beyond EOF. `O_DIRECT`
    /// when the image is opened so, through an aligned bounce buffer when the request is
    /// not aligned.
    pub fn read_vec(&self, bufs: &mut [&mut [u8]], offset: u64) -> Result<()> {
        let Some(d) = &self.direct else {
            if self.read_mapped(bufs, offset)? {
                return Ok(());
            }
            return preadv_all(&self.file, bufs, offset)
                .map_err(|(e, pos)| self.io_err("read", pos, e));
        };
        let r = if self.aligned(bufs.iter().map(|b| &b[..]), offset) {
            preadv_all(d, bufs, offset)
        } else {
            let total = bufs.iter().map(|b| b.len() as u64).sum::<u64>();
            let (start, end) = self.blocks_around("read", offset, total)?;
            let mut bounce = self.buf((end - start) as usize);
            preadv_all(d, &mut [&mut bounce[..]], start)
                .map(|()| super::copy_out(&bounce[(offset - start) as usize..], bufs))
        };
        match r {
            Ok(()) => Ok(()),
            // A direct read that ends short at an end of file that is not aligned (a file
            // made elsewhere: ours end on a block) leaves the rest unaligned: read it all
            // again through the cache, which holds only clean pages of such a file.
            Err((e, _)) if e.raw_os_error() == Some(libc::EINVAL) => {
                preadv_all(&self.file, bufs, offset).map_err(|(e, pos)| self.io_err("read", pos, e))
            }
            Err((e, pos)) => Err(self.io_err("read", pos, e)),
        }
    }

    /// Whether `offset` and every buffer's address and length are multiples of the
    /// direct-I/O alignment.
    fn aligned<'a>(&self, mut bufs: impl Iterator<Item = &'a [u8]>, offset: u64) -> bool {
        offset % self.align as u64 == 0
            && bufs.all(|b| (b.as_ptr() as usize | b.len()) % self.align == 0)
    }

    /// The aligned blocks around `total` bytes at `offset`: their start and end offsets,
    /// the end checked to fit the address space (it becomes one buffer's length).
    fn blocks_around(&self, op: &'static str, offset: u64, total: u64) -> Result<(u64, u64)> {
        let a = self.align as u64;
        let start = offset - offset % a;
        offset
            .checked_add(total)
            .and_then(|e| e.checked_next_multiple_of(a))
            .filter(|&end| usize::try_from(end - start).is_ok())
            .map(|end| (start, end))
            .ok_or_else(|| self.io_err(op, offset, Errno::EOVERFLOW.into()))
    }

    fn io_err(&self, op: &'static str, offset: u64, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: self.path.clone(),
            offset,
            source,
        }
    }

    /// Copies the range from the mapping when one covers it; `false` when the caller must
    /// use `preadv`. Maps a longer prefix first when the file has grown by a quarter (at
    /// least 1 MiB) past the last mapping tried and the range lies in the growth.
    fn read_mapped(&self, bufs: &mut [&mut [u8]], offset: u64) -> Result<bool> {
        let known = self.known_len.load(Ordering::Acquire);
        let total = bufs.iter().map(|b| b.len() as u64).sum::<u64>();
        let Some(end) = offset.checked_add(total).filter(|&e| e <= known) else {
            return Ok(false);
        };
        if end > self.map.mapped_len() && !self.grow_mapping(known, end) {
            return Ok(false);
        }
        let mut iov: SmallVec<[IoSliceMut<'_>; 4]> =
            bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        match self.map.read(&mut iov, offset) {
            MappedRead::Copied => Ok(true),
            MappedRead::Unmapped => Ok(false),
            MappedRead::Faulted => {
                // Something else shrank the file: start again from its real length, so
                // that no mapping beyond it is made again.
                let len = self.file.metadata().map_or(0, |m| m.len());
                self.known_len.store(len, Ordering::Release);
                self.map_tried.store(0, Ordering::Release);
                Err(self.io_err("read", offset, Errno::EIO.into()))
            }
        }
    }

    /// Maps the file as far as it goes (up to [`MAX_MAPPED`]) when that reaches `end`
    /// and is a quarter (at least 1 MiB) more than the last length tried, so that a file
    /// the kernel will not map costs one attempt per quarter of growth, not one per read.
    /// Whether the mapping now reaches `end`.
    fn grow_mapping(&self, known: u64, end: u64) -> bool {
        let tried = self.map_tried.load(Ordering::Acquire);
        let want = known.min(MAX_MAPPED);
        if end > want || want.saturating_sub(tried) < (tried / 4).max(1 << 20) {
            return false;
        }
        self.map_tried.fetch_max(want, Ordering::AcqRel);
        // Never past the real end of the file, should something else have shrunk it.
        let real = self.file.metadata().map_or(0, |m| m.len());
        self.map.grow(&self.file, want.min(real));
        end <= self.map.mapped_len()
    }

    /// Whether reads are served from a mapping right now.
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        self.map.is_mapped()
    }

    /// Reads `buf` from `offset` (zeros past the end of the file).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_vec(&mut [buf], offset)
    }

    /// Writes all of `bufs` at `offset`; `O_DIRECT` when the image is opened so (through a
    /// read-modify-write of the aligned blocks around it when the request is not aligned).
    pub fn write_vec(&self, bufs: &[&[u8]], offset: u64) -> Result<()> {
        match &self.direct {
            None => self.write_with(&self.file, bufs, offset),
            Some(d) if self.aligned(bufs.iter().copied(), offset) => {
                self.write_with(d, bufs, offset)
            }
            Some(d) => self.write_rmw(d, bufs, offset),
        }
    }

    /// An unaligned direct write: reads the partial first and last blocks, patches them and
    /// writes the aligned range back, holding the locks of those blocks so that two writes
    /// into different bytes of one block (two 512-byte guest writes, a table entry and its
    /// neighbour) cannot undo each other.
    fn write_rmw(&self, d: &File, bufs: &[&[u8]], offset: u64) -> Result<()> {
        let total = bufs.iter().map(|b| b.len() as u64).sum::<u64>();
        if total == 0 {
            return Ok(());
        }
        let a = self.align as u64;
        let (start, end) = self.blocks_around("write", offset, total)?;
        let len = (end - start) as usize;
        let _locks = self.lock_blocks(start / a, end / a);
        let mut bounce = self.buf(len);
        // The partial blocks, read as every read is (aligned, so direct).
        let head_partial = offset != start;
        if head_partial {
            self.read_vec(&mut [&mut bounce[..self.align]], start)?;
        }
        let tail = end - a;
        let tail_already_read = head_partial && tail == start;
        if offset + total != end && !tail_already_read {
            self.read_vec(&mut [&mut bounce[len - self.align..]], tail)?;
        }
        super::gather_into(bufs, &mut bounce[(offset - start) as usize..]);
        self.write_with(d, &[&bounce[..]], start)
    }

    /// Locks the read-modify-write stripes of blocks `first..last`, in stripe order.
    fn lock_blocks(&self, first: u64, last: u64) -> SmallVec<[MutexGuard<'_, ()>; 2]> {
        let n = self.rmw.len() as u64;
        let mut stripes: SmallVec<[usize; 2]> = if last - first >= n {
            (0..self.rmw.len()).collect()
        } else {
            (first..last).map(|b| (b % n) as usize).collect()
        };
        stripes.sort_unstable();
        stripes.dedup();
        stripes.into_iter().map(|i| self.rmw[i].lock()).collect()
    }

    fn write_with(&self, file: &File, bufs: &[&[u8]], offset: u64) -> Result<()> {
        let r = pwritev_all(file, bufs, offset);
        if self.map.enabled() {
            // How far the file now goes at least (nothing when nothing was written).
            let reached = match &r {
                Ok(end) => *end,
                Err((_, pos)) => *pos,
            };
            if reached > offset {
                self.known_len.fetch_max(reached, Ordering::AcqRel);
            }
        }
        r.map(drop).map_err(|(e, pos)| self.io_err("write", pos, e))
    }

    /// Writes `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_vec(&[buf], offset)
    }

    /// `fdatasync`: every completed write (and the file size) is durable.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|source| Error::Io {
            op: "flush",
            path: self.path.clone(),
            offset: 0,
            source,
        })
    }

    /// Reads a big-endian `u64` table of `n` entries at `offset`.
    pub fn read_table(&self, offset: u64, n: usize) -> Result<Vec<u64>> {
        let mut bytes = vec![0u8; n * 8];
        self.read_at(&mut bytes, offset)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }
}

/// Reads all of `bufs` from `file` at `offset`, zeros past its end; on failure, the error
/// and the offset it happened at.
fn preadv_all(
    file: &File,
    bufs: &mut [&mut [u8]],
    offset: u64,
) -> std::result::Result<(), (std::io::Error, u64)> {
    let mut pos = offset;
    let mut first = 0usize;
    let mut skip = 0usize; // bytes already filled in bufs[first]
    while first < bufs.len() {
        let end = (first + MAX_IOVS).min(bufs.len());
        let n = {
            let mut iov: SmallVec<[IoSliceMut<'_>; 4]> = SmallVec::with_capacity(end - first);
            for (i, b) in bufs[first..end].iter_mut().enumerate() {
                let s: &mut [u8] = if i == 0 { &mut b[skip..] } else { b };
                iov.push(IoSliceMut::new(s));
            }
            let off = i64::try_from(pos).map_err(|_| (Errno::EOVERFLOW.into(), pos))?;
            loop {
                match preadv(file, &mut iov, off) {
                    Err(Errno::EINTR) => continue,
                    r => break r.map_err(|e| (e.into(), pos))?,
                }
            }
        };
        if n == 0 {
            bufs[first][skip..].fill(0);
            for b in bufs[first + 1..].iter_mut() {
                b.fill(0);
            }
            return Ok(());
        }
        pos += n as u64;
        let mut left = n;
        while left > 0 && first < bufs.len() {
            let avail = bufs[first].len() - skip;
            if left >= avail {
                left -= avail;
                first += 1;
                skip = 0;
            } else {
                skip += left;
                left = 0;
            }
        }
        while first < bufs.len() && bufs[first].len() == skip {
            first += 1;
            skip = 0;
        }
    }
    Ok(())
}

/// Writes all of `bufs` to `file` at `offset`: the end offset, or the error and how far
/// the write got.
fn pwritev_all(
    file: &File,
    bufs: &[&[u8]],
    offset: u64,
) -> std::result::Result<u64, (std::io::Error, u64)> {
    let mut pos = offset;
    let mut first = 0usize;
    let mut skip = 0usize;
    while first < bufs.len() {
        let end = (first + MAX_IOVS).min(bufs.len());
        let iov: SmallVec<[IoSlice<'_>; 4]> = bufs[first..end]
            .iter()
            .enumerate()
            .map(|(i, b)| IoSlice::new(if i == 0 { &b[skip..] } else { b }))
            .collect();
        let off = i64::try_from(pos).map_err(|_| (Errno::EOVERFLOW.into(), pos))?;
        let n = loop {
            match pwritev(file, &iov, off) {
                Err(Errno::EINTR) => continue,
                r => break r.map_err(|e| (e.into(), pos))?,
            }
        };
        if n == 0 && iov.iter().any(|s| !s.is_empty()) {
            return Err((std::io::ErrorKind::WriteZero.into(), pos));
        }
        pos += n as u64;
        let mut left = n;
        while first < bufs.len() {
            let avail = bufs[first].len() - skip;
            if left >= avail {
                left -= avail;
                first += 1;
                skip = 0;
                if left == 0 {
                    // Skip empty slices that follow.
                    while first < bufs.len() && bufs[first].is_empty() {
                        first += 1;
                    }
                    break;
                }
            } else {
                skip += left;
                break;
            }
        }
    }
    Ok(pos)
}

/// A zeroed byte buffer whose start is aligned for direct I/O ([`ImageFile::buf`]).
pub struct AlignedBuf {
    vec: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes starting at a multiple of `align` (a power of two).
    pub fn zeroed(len: usize, align: usize) -> Self {
        let vec = vec![0u8; len + align];
        let start = (align - vec.as_ptr() as usize % align) % align;
        AlignedBuf { vec, start, len }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..self.start + self.len]
    }
}

/// Serialises `u64`s big endian.
pub fn table_bytes(entries: impl IntoIterator<Item = u64>) -> Vec<u8> {
    entries.into_iter().flat_map(u64::to_be_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alignment these tests assume (4 KiB pages, ext4 or tmpfs with 4 KiB blocks).
    const A: usize = 4096;

    fn open_rw(p: &Path, mapped: bool) -> ImageFile {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap();
        ImageFile::new(f, p.to_owned()).mapped(mapped)
    }

    #[test]
    fn reads_past_eof_as_zeros_and_splits_iovecs() {
        for mapped in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("f");
            std::fs::write(&p, [1u8, 2, 3, 4, 5]).unwrap();
            let f = open_rw(&p, mapped);
            assert_eq!(f.map.is_mapped(), mapped);
            let mut a = [9u8; 2];
            let mut b = [9u8; 0];
            let mut c = [9u8; 6];
            f.read_vec(&mut [&mut a, &mut b, &mut c], 1).unwrap();
            assert_eq!(a, [2, 3]);
            assert_eq!(c, [4, 5, 0, 0, 0, 0]);
            f.write_vec(&[&[7, 7], &[], &[8]], 10).unwrap();
            assert_eq!(f.len().unwrap(), 13);
            let mut all = [0u8; 13];
            f.read_at(&mut all, 0).unwrap();
            assert_eq!(all, [1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 7, 7, 8]);
            assert_eq!(f.read_table(10, 1).unwrap(), vec![0x0707_0800_0000_0000]);
        }
        assert_eq!(table_bytes([1u64]), vec![0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn the_mapping_follows_the_file_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 4 << 20]).unwrap();
        let f = open_rw(&p, true);
        assert_eq!(f.map.mapped_len(), 4 << 20);
        // Less than a quarter of growth (and under 1 MiB): read with preadv, not remapped.
        f.write_at(&[2u8; 4096], 4 << 20).unwrap();
        let mut buf = [0u8; 4096];
        f.read_at(&mut buf, 4 << 20).unwrap();
        assert_eq!(buf, [2u8; 4096]);
        assert_eq!(f.map.mapped_len(), 4 << 20);
        // A quarter more: the next read there maps the whole file.
        f.write_at(&vec![3u8; 1 << 20], 5 << 20).unwrap();
        f.read_at(&mut buf, (6 << 20) - 4096).unwrap();
        assert_eq!(buf, [3u8; 4096]);
        assert_eq!(f.map.mapped_len(), 6 << 20);
        // What was written through the file descriptor reads back through the mapping.
        f.write_at(&[4u8; 4096], 8192).unwrap();
        f.read_at(&mut buf, 8192).unwrap();
        assert_eq!(buf, [4u8; 4096]);
    }

    #[test]
    fn a_file_truncated_underneath_fails_the_read_and_is_mapped_only_as_far_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![5u8; 2 << 20]).unwrap();
        let f = open_rw(&p, true);
        // Another process cuts the file in half.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let mut buf = [9u8; 4096];
        let e = f.read_at(&mut buf, 3 << 19).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Medium, "{e}");
        assert!(!f.map.is_mapped(), "a faulted mapping is retired");
        // From then on the file is mapped only as far as it really goes, and what is
        // gone reads through preadv, as zeros.
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [5u8; 4096]);
        assert_eq!(f.map.mapped_len(), 1 << 20);
        f.read_at(&mut buf, 3 << 19).unwrap();
        assert_eq!(buf, [0u8; 4096]);
    }

    /// The file at `p` with aligned data I/O `O_DIRECT`, or `None` where the file system
    /// refuses it (then the refusal must say what to do instead).
    fn open_direct(p: &Path) -> Option<ImageFile> {
        match open_rw(p, true).direct(true, true) {
            Ok(f) => Some(f),
            Err(e) => {
                assert!(e.to_string().contains("use cache=writeback"), "{e}");
                None
            }
        }
    }

    /// Bytes this thread has had the block layer fetch (`/proc/thread-self/io`), when the
    /// kernel keeps the count.
    fn thread_read_bytes() -> Option<u64> {
        let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
        io.lines()
            .find_map(|l| l.strip_prefix("read_bytes: "))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn only_page_aligned_requests_skip_the_bounce_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![6u8; 1 << 20]).unwrap();
        assert!(open_rw(&p, true)
            .direct(false, true)
            .unwrap()
            .direct
            .is_none());
        let Some(f) = open_direct(&p) else { return };
        assert!(f.is_direct() && !f.is_mapped());
        let buf = AlignedBuf::zeroed(3 * A, A);
        let whole = &buf[..2 * A];
        let page = &buf[..A];
        assert!(f.aligned([whole].into_iter(), 0));
        assert!(f.aligned([page, page].into_iter(), 8192));
        // Offset, length or address off the page: a bounce buffer or read-modify-write.
        assert!(!f.aligned([whole].into_iter(), 512));
        assert!(!f.aligned([&buf[..512]].into_iter(), 0));
        assert!(!f.aligned([page, &buf[512..512 + A]].into_iter(), 0));
        assert!(f.aligned([whole, &buf[..0]].into_iter(), 0));
    }

    #[test]
    fn aligned_reads_bypass_the_page_cache_and_see_buffered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 1 << 20]).unwrap();
        let Some(f) = open_direct(&p) else { return };
        // Unaligned writes (read-modify-write of their blocks) and aligned reads.
        f.write_vec(&[&[7u8; 100]], 4096 + 50).unwrap();
        let mut buf = AlignedBuf::zeroed(1 << 20, A);
        f.read_vec(&mut [&mut buf[..]], 0).unwrap();
        assert_eq!(
            buf[4096 + 49..4096 + 151],
            [[1u8].as_slice(), &[7; 100], &[1]].concat()
        );
        // Unaligned (bounced) reads see them too, split over two buffers.
        f.write_vec(&[&[8u8; 10]], 8190).unwrap();
        let (mut x, mut y) = ([0u8; 3], [0u8; 20]);
        f.read_vec(&mut [&mut x[..], &mut y[..]], 8187).unwrap();
        assert_eq!(x, [1, 1, 1]);
        assert_eq!(y[..13], [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 1, 1, 1]);
        // Aligned direct writes and unaligned direct reads.
        buf.fill(9);
        f.write_vec(&[&buf[..8192]], 0).unwrap();
        let mut small = [0u8; 10];
        f.read_at(&mut small, 4090).unwrap();
        assert_eq!(small, [9u8; 10]);
        // The file's first write left it in the page cache; reading it aligned still
        // fetches every byte from the disk, where the kernel counts it.
        let dev_backed = std::fs::metadata(&p).is_ok_and(|m| libc::major(m.dev()) != 0);
        if let (Some(before), true) = (thread_read_bytes(), dev_backed) {
            f.read_vec(&mut [&mut buf[..]], 0).unwrap();
            let after = thread_read_bytes().unwrap();
            assert!(after - before >= 1 << 20, "{before} -> {after}");
            // So does an unaligned read, through the aligned blocks around it.
            let mut odd = vec![0u8; 5000];
            f.read_vec(&mut [&mut odd[..]], 3000).unwrap();
            let last = thread_read_bytes().unwrap();
            assert!(last - after >= 8192, "{after} -> {last}");
            assert_eq!(odd, vec![9u8; 5000]);
        }
        assert_eq!(buf[..8192], [9u8; 8192]);
        assert_eq!(buf[8192..8200], [8u8; 8]);
        assert_eq!(buf[8200..], vec![1u8; (1 << 20) - 8200][..]);
    }

    #[test]
    fn a_direct_read_across_an_unaligned_end_of_file_reads_zeros_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![3u8; 4096 + 100]).unwrap();
        let Some(f) = open_direct(&p) else { return };
        let mut buf = AlignedBuf::zeroed(3 * A, A);
        buf.fill(0xee);
        f.read_vec(&mut [&mut buf[..]], 0).unwrap();
        assert_eq!(buf[..4196], [3u8; 4196]);
        assert!(buf[4196..].iter().all(|&b| b == 0));
        // An unaligned write into the block that holds that end (a read-modify-write, whose
        // read of the block ends short there too); the file then ends on the block.
        f.write_vec(&[&[4u8; 50]], 4096 + 20).unwrap();
        buf.fill(0xee);
        f.read_vec(&mut [&mut buf[..]], 0).unwrap();
        assert_eq!(buf[..4116], [3u8; 4116]);
        assert_eq!(buf[4116..4166], [4u8; 50]);
        assert_eq!(buf[4166..4196], [3u8; 30]);
        assert!(buf[4196..].iter().all(|&b| b == 0));
        assert_eq!(std::fs::read(&p).unwrap(), buf[..2 * A]);
    }

    #[test]
    fn concurrent_unaligned_direct_writes_into_one_block_all_land() {
        const BLOCKS: usize = 2;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![0u8; BLOCKS * A]).unwrap();
        let Some(f) = open_direct(&p) else { return };
        // Eight threads, each writing its own 512-byte sector of the same two blocks, a new
        // value each round: without the block locks, one read-modify-write puts back an
        // older value of another thread's sector.
        const ROUNDS: u64 = 400;
        let value = |t: u8, round: u64| (u64::from(t) * 41 + round % 200 + 1) as u8;
        std::thread::scope(|sc| {
            for t in 0..8u8 {
                let f = &f;
                sc.spawn(move || {
                    for round in 0..ROUNDS {
                        let block = round % BLOCKS as u64;
                        let off = block * A as u64 + u64::from(t) * 512 + round % 3;
                        f.write_vec(&[&[value(t, round); 509]], off).unwrap();
                    }
                });
            }
        });
        let mut all = vec![0u8; BLOCKS * A];
        f.read_vec(&mut [&mut all[..]], 0).unwrap();
        for (i, chunk) in all.chunks(512).enumerate() {
            let (t, block) = ((i % 8) as u8, (i / 8) as u64);
            let last = (0..ROUNDS)
                .rev()
                .find(|r| r % BLOCKS as u64 == block)
                .unwrap();
            assert_eq!(chunk[2..509], [value(t, last); 507], "sector {i}");
        }
        assert_eq!(std::fs::read(&p).unwrap(), all);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Direct and buffered I/O mixed on one file (aligned requests direct, the rest
        /// through the cache and the mapping) read back what plain `preadv`/`pwritev` do.
        #[test]
        fn direct_io_matches_preadv(
            ops in proptest::collection::vec(
                (proptest::bool::ANY, proptest::bool::ANY, 0u64..(3 << 20), 1usize..70_000),
                1..24),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (pd, pp) = (dir.path().join("d"), dir.path().join("p"));
            let seed: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
            std::fs::write(&pd, &seed).unwrap();
            std::fs::write(&pp, &seed).unwrap();
            let Some(d) = open_direct(&pd) else { return Ok(()) };
            let plain = open_rw(&pp, false);
            for (i, (write, aligned, off, len)) in ops.into_iter().enumerate() {
                let (off, len) = if aligned {
                    (off / 4096 * 4096, len.div_ceil(4096) * 4096)
                } else {
                    (off, len)
                };
                let mut a = AlignedBuf::zeroed(len, A);
                if write {
                    a.fill(i as u8);
                    d.write_vec(&[&a], off).unwrap();
                    plain.write_at(&a, off).unwrap();
                } else {
                    let mut b = vec![2u8; len];
                    d.read_vec(&mut [&mut a[..]], off).unwrap();
                    plain.read_at(&mut b, off).unwrap();
                    proptest::prop_assert_eq!(&a[..], &b[..]);
                }
            }
            // An unaligned direct write past the end leaves the file a whole block long,
            // the rest zeros.
            let (dv, pv) = (std::fs::read(&pd).unwrap(), std::fs::read(&pp).unwrap());
            proptest::prop_assert!(dv.len() >= pv.len() && dv.len() - pv.len() < A);
            proptest::prop_assert_eq!(&dv[..pv.len()], &pv[..]);
            proptest::prop_assert!(dv[pv.len()..].iter().all(|&b| b == 0));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Mapped and plain reads return the same bytes for any sequence of writes
        /// (growing the file) and reads (inside, across and past its end).
        #[test]
        fn mapped_reads_match_preadv(
            ops in proptest::collection::vec(
                (proptest::bool::ANY, 0u64..(3 << 20), 1usize..70_000), 1..24),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (pm, pp) = (dir.path().join("m"), dir.path().join("p"));
            let seed: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
            std::fs::write(&pm, &seed).unwrap();
            std::fs::write(&pp, &seed).unwrap();
            let (m, plain) = (open_rw(&pm, true), open_rw(&pp, false));
            for (i, (write, off, len)) in ops.into_iter().enumerate() {
                if write {
                    let data = vec![i as u8; len];
                    m.write_at(&data, off).unwrap();
                    plain.write_at(&data, off).unwrap();
                } else {
                    let (mut a, mut b) = (vec![1u8; len], vec![2u8; len]);
                    let (a1, a2) = a.split_at_mut(len / 3);
                    m.read_vec(&mut [a1, a2], off).unwrap();
                    plain.read_at(&mut b, off).unwrap();
                    proptest::prop_assert_eq!(a, b);
                }
            }
            // The seed file was mapped when opened, and a mapping is never dropped here.
            proptest::prop_assert!(m.is_mapped() && !plain.is_mapped());
        }
    }
}
