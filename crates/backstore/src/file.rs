//! File and block-device backstore (LIO `fileio` / `iblock` style).
//!
//! * Buffered I/O through the page cache (as LIO's fileio). There is no `O_DIRECT` or
//!   io_uring mode: no configuration (targetcli's saveconfig, `rustio serve`, the TCMU
//!   runner) could select them, and a synchronous submit-and-wait io_uring per request gave
//!   no concurrency that `preadv`/`pwritev` on the worker threads do not already have.
//! * FUA writes go through a second descriptor opened with `O_DSYNC`, so only that write
//!   is made durable, not the whole file.
//! * Discard punches holes (`FALLOC_FL_PUNCH_HOLE`), which also works on block devices;
//!   write-zeroes uses `FALLOC_FL_ZERO_RANGE` and falls back to writing zeros on file
//!   systems without it (tmpfs).
//! * GET LBA STATUS is answered from `SEEK_DATA`/`SEEK_HOLE`.
//! * READs are copied out of a read-only shared mapping of the file or device
//!   ([`FileOptions::mmap_reads`], on by default; tgt's `bs_mmap` does the same): no system
//!   call per read. Writes stay `pwritev`; the page cache is one, so mapped reads see them.
//!   The mapping follows the capacity (made at open, remade by `resize` and `refresh`);
//!   reads outside it use `preadv`. A read that finds part of its range gone from the file
//!   (truncated by another process, device removed: SIGBUS, caught in [`crate::mmap`])
//!   fails with EIO (MEDIUM ERROR), and later reads use `preadv` until `refresh` maps the
//!   file again.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::sys::uio::{preadv, pwritev};
use nix::unistd::{lseek, Whence};

use crate::mmap::{MappedRead, MappedReads};

use crate::{
    check_iov, check_range, validate_block_size, Backstore, Capabilities, Error, Extent, FileRange,
};
use crate::{Result, WriteFlags};

/// How to open a [`FileBackstore`].
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Path of the file or block device.
    pub path: PathBuf,
    /// Size in bytes. For a regular file: create it if missing and extend it (sparsely) to
    /// this size if shorter. `None` uses the current size. Ignored for block devices.
    pub size: Option<u64>,
    /// Logical block size.
    pub block_size: u32,
    /// Refuse writes.
    pub read_only: bool,
    /// Report a volatile write cache (write-back); if false every write is made durable
    /// before it completes (write-through), as LIO's `emulate_write_cache=0`.
    pub write_back: bool,
    /// Serve reads from a read-only shared mapping of the file (see the module
    /// documentation) instead of one `preadv` per read.
    pub mmap_reads: bool,
}

/// What [`FileOptions::new`] puts in [`FileOptions::mmap_reads`].
static MMAP_READS_DEFAULT: AtomicBool = AtomicBool::new(true);

/// Sets [`FileOptions::mmap_reads`] of every later [`FileOptions::new`]: the process-wide
/// switch behind `--no-mmap-reads` of `rustio serve` and `rustio runner`, set once at
/// start-up (file stores are opened deep inside configuration loading, by the handler
/// registry, for every front end).
pub fn set_mmap_reads_default(on: bool) {
    MMAP_READS_DEFAULT.store(on, Ordering::Relaxed);
}

/// The current process-wide default of mapped reads ([`set_mmap_reads_default`]), which
/// qcow2 images follow too.
pub(crate) fn mmap_reads_default() -> bool {
    MMAP_READS_DEFAULT.load(Ordering::Relaxed)
}

impl FileOptions {
    /// Defaults for `path`: existing size, 512-byte blocks, write-back, mapped reads
    /// (unless [`set_mmap_reads_default`] turned them off).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileOptions {
            path: path.into(),
            size: None,
            block_size: 512,
            read_only: false,
            write_back: true,
            mmap_reads: mmap_reads_default(),
        }
    }
}

/// A backstore on a regular file or a block device.
#[derive(Debug)]
pub struct FileBackstore {
    path: PathBuf,
    /// Shared with the [`FileRange`]s lent to transports.
    file: Arc<File>,
    /// Same file opened with `O_DSYNC`, for FUA writes and write-through mode.
    dsync: Option<File>,
    capacity: AtomicU64,
    block_size: u32,
    is_block_device: bool,
    read_only: bool,
    write_back: bool,
    /// Cleared when the file system refuses `FALLOC_FL_PUNCH_HOLE`.
    punch_ok: AtomicBool,
    /// Cleared when the file system refuses `FALLOC_FL_ZERO_RANGE`.
    zero_range_ok: AtomicBool,
    /// Reads from a mapping of the file ([`FileOptions::mmap_reads`]).
    map: MappedReads,
}

fn open_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Open {
        path: path.to_owned(),
        source,
    }
}

impl FileBackstore {
    /// Opens (and for regular files with a `size`, creates or extends) the backing store.
    pub fn open(opts: FileOptions) -> Result<Self> {
        validate_block_size(opts.block_size)?;
        let path = opts.path.clone();
        let mut oo = OpenOptions::new();
        oo.read(true).write(!opts.read_only);
        if !opts.read_only && opts.size.is_some() {
            oo.create(true).mode(0o600);
        }
        let file = oo.open(&path).map_err(open_err(&path))?;
        let meta = file.metadata().map_err(open_err(&path))?;
        let is_block_device = meta.file_type().is_block_device();
        if !is_block_device && !meta.is_file() {
            return Err(Error::InvalidConfig(format!(
                "{} is neither a regular file nor a block device",
                path.display()
            )));
        }
        let mut capacity = if is_block_device {
            lseek(file.as_raw_fd(), 0, Whence::SeekEnd).map_err(|e| Error::Open {
                path: path.clone(),
                source: e.into(),
            })? as u64
        } else {
            meta.len()
        };
        if let (Some(size), false) = (opts.size, is_block_device) {
            if size > capacity {
                if opts.read_only {
                    return Err(Error::InvalidConfig(format!(
                        "{} is {capacity} bytes, smaller than the requested {size}, and read-only",
                        path.display()
                    )));
                }
                file.set_len(size).map_err(open_err(&path))?;
            }
            capacity = size;
        }
        let bs = u64::from(opts.block_size);
        capacity -= capacity % bs;
        if capacity == 0 {
            return Err(Error::InvalidConfig(format!(
                "{} holds less than one {bs}-byte block; give a size to create it",
                path.display()
            )));
        }
        let dsync = if opts.read_only {
            None
        } else {
            Some(
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DSYNC)
                    .open(&path)
                    .map_err(open_err(&path))?,
            )
        };
        let map = MappedReads::new(&file, capacity, opts.mmap_reads);
        Ok(FileBackstore {
            path,
            file: Arc::new(file),
            dsync,
            capacity: AtomicU64::new(capacity),
            block_size: opts.block_size,
            is_block_device,
            read_only: opts.read_only,
            write_back: opts.write_back,
            punch_ok: AtomicBool::new(true),
            zero_range_ok: AtomicBool::new(true),
            map,
        })
    }

    /// The path this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store is a block device.
    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }

    fn io_err(&self, op: &'static str, offset: u64) -> impl FnOnce(Errno) -> Error + '_ {
        move |e| Error::Io {
            op,
            path: self.path.clone(),
            offset,
            source: e.into(),
        }
    }

    /// Whether reads are served from a mapping right now.
    pub fn is_mapped(&self) -> bool {
        self.map.is_mapped()
    }

    /// Reads from the mapping when it covers the range: `Some` with the outcome, or
    /// `None` when the caller must use `preadv`.
    fn read_mapped(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Option<Result<()>> {
        match self.map.read(bufs, offset) {
            MappedRead::Copied => Some(Ok(())),
            MappedRead::Unmapped => None,
            MappedRead::Faulted => Some(Err(self.io_err("read", offset)(Errno::EIO))),
        }
    }

    fn read_raw(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<()> {
        let mut bufs = bufs;
        let mut pos = offset;
        while !bufs.is_empty() {
            let n = loop {
                match preadv(&self.file, bufs, pos as i64) {
                    Err(Errno::EINTR) => continue,
                    r => break r.map_err(self.io_err("read", pos))?,
                }
            };
            if n == 0 {
                // Past the end of a file that shrank underneath us: the rest reads as zeros.
                for b in bufs.iter_mut() {
                    b.fill(0);
                }
                return Ok(());
            }
            pos += n as u64;
            IoSliceMut::advance_slices(&mut bufs, n);
        }
        Ok(())
    }

    fn write_raw(&self, file: &File, bufs: &[IoSlice<'_>], offset: u64) -> Result<()> {
        let mut owned: Vec<IoSlice<'_>> = bufs.to_vec();
        let mut bufs = &mut owned[..];
        let mut pos = offset;
        while !bufs.is_empty() {
            let n = loop {
                match pwritev(file, bufs, pos as i64) {
                    Err(Errno::EINTR) => continue,
                    r => break r.map_err(self.io_err("write", pos))?,
                }
            };
            if n == 0 {
                return Err(Error::Io {
                    op: "write",
                    path: self.path.clone(),
                    offset: pos,
                    source: std::io::Error::from(std::io::ErrorKind::WriteZero),
                });
            }
            pos += n as u64;
            IoSlice::advance_slices(&mut bufs, n);
        }
        Ok(())
    }

    fn fallocate(
        &self,
        op: &'static str,
        mode: FallocateFlags,
        offset: u64,
        len: u64,
    ) -> std::result::Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        let r = loop {
            match fallocate(self.file.as_raw_fd(), mode, offset as i64, len as i64) {
                Err(Errno::EINTR) => continue,
                r => break r,
            }
        };
        let _ = op;
        r
    }
}

impl Backstore for FileBackstore {
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
            volatile_cache: self.write_back,
            rotational: false,
            allocation_status: !self.is_block_device,
            network: false,
        }
    }

    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<()> {
        let len = check_iov("read", bufs, offset, self.capacity())?;
        if len == 0 {
            return Ok(());
        }
        if let Some(r) = self.read_mapped(bufs, offset) {
            return r;
        }
        self.read_raw(bufs, offset)
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
        let durable = flags.fua || !self.write_back;
        let file = match (&self.dsync, durable) {
            (Some(d), true) => d,
            _ => &self.file,
        };
        self.write_raw(file, bufs, offset)
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(|source| Error::Io {
            op: "flush",
            path: self.path.clone(),
            offset: 0,
            source,
        })
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        check_range("discard", offset, len, self.capacity())?;
        if self.punch_ok.load(Ordering::Relaxed) {
            let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            match self.fallocate("discard", mode, offset, len) {
                Ok(()) => return Ok(()),
                Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) | Err(Errno::EINVAL) => {
                    self.punch_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(self.io_err("discard", offset)(e)),
            }
        }
        // We promised LBPRZ, so a store that cannot punch holes writes zeros instead.
        crate::write_zeroes_by_writing(self, offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        check_range("write zeroes", offset, len, self.capacity())?;
        if may_unmap && self.punch_ok.load(Ordering::Relaxed) {
            return self.discard(offset, len);
        }
        if self.zero_range_ok.load(Ordering::Relaxed) {
            let mode = FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            match self.fallocate("write zeroes", mode, offset, len) {
                Ok(()) => return Ok(()),
                Err(Errno::EOPNOTSUPP)
                | Err(Errno::ENOSYS)
                | Err(Errno::EINVAL)
                | Err(Errno::ENODEV) => {
                    self.zero_range_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(self.io_err("write zeroes", offset)(e)),
            }
        }
        crate::write_zeroes_by_writing(self, offset, len)
    }

    fn resize(&self, new_capacity: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.is_block_device {
            return Err(Error::Unsupported("resize of a block device"));
        }
        let bs = u64::from(self.block_size);
        if new_capacity == 0 || new_capacity % bs != 0 {
            return Err(Error::InvalidConfig(format!(
                "size {new_capacity} must be a non-zero multiple of the block size {bs}"
            )));
        }
        // No mapping while the file changes size: a shrink would turn its tail into SIGBUS.
        self.map.unmap();
        let r = self.file.set_len(new_capacity).map_err(|source| Error::Io {
            op: "resize",
            path: self.path.clone(),
            offset: new_capacity,
            source,
        });
        if r.is_ok() {
            self.capacity.store(new_capacity, Ordering::Release);
        }
        self.map.remap(&self.file, self.capacity());
        r
    }

    fn refresh(&self) -> Result<u64> {
        let size = if self.is_block_device {
            lseek(self.file.as_raw_fd(), 0, Whence::SeekEnd).map_err(self.io_err("refresh", 0))?
                as u64
        } else {
            self.file
                .metadata()
                .map_err(|source| Error::Io {
                    op: "refresh",
                    path: self.path.clone(),
                    offset: 0,
                    source,
                })?
                .len()
        };
        let size = size - size % u64::from(self.block_size);
        if size > 0 {
            self.capacity.store(size, Ordering::Release);
        }
        // Also maps again after a fault retired the mapping (the file may have grown back).
        self.map.remap(&self.file, size.min(self.capacity()));
        Ok(self.capacity())
    }

    /// Regular files only: a block device's page cache is not where its data lives when
    /// something else writes the device directly.
    fn file_range(&self, offset: u64, len: usize) -> Option<FileRange> {
        if self.is_block_device {
            return None;
        }
        check_range("read", offset, len as u64, self.capacity()).ok()?;
        FileRange::new(self.file.clone(), offset, len)
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range("block status", offset, len, self.capacity())?;
        if self.is_block_device || len == 0 {
            return Ok(vec![Extent {
                offset,
                len,
                mapped: true,
            }]);
        }
        let end = offset + len;
        let fd = self.file.as_raw_fd();
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            // Where does the next data start? ENXIO: no data until EOF.
            let data = match lseek(fd, pos as i64, Whence::SeekData) {
                Ok(d) => (d as u64).min(end),
                Err(Errno::ENXIO) => end,
                Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) => {
                    out.push(Extent {
                        offset: pos,
                        len: end - pos,
                        mapped: true,
                    });
                    break;
                }
                Err(e) => return Err(self.io_err("block status", pos)(e)),
            };
            if data > pos {
                out.push(Extent {
                    offset: pos,
                    len: data - pos,
                    mapped: false,
                });
                pos = data;
                continue;
            }
            let hole = match lseek(fd, pos as i64, Whence::SeekHole) {
                Ok(h) => (h as u64).min(end),
                Err(Errno::ENXIO) => end,
                Err(e) => return Err(self.io_err("block status", pos)(e)),
            };
            let hole = hole.max(pos + 1).min(end);
            out.push(Extent {
                offset: pos,
                len: hole - pos,
                mapped: true,
            });
            pos = hole;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    fn tmp(size: u64, bs: u32) -> (tempfile::TempDir, FileBackstore) {
        let dir = tempfile::tempdir().unwrap();
        let mut o = FileOptions::new(dir.path().join("lun.img"));
        o.size = Some(size);
        o.block_size = bs;
        (dir, FileBackstore::open(o).unwrap())
    }

    #[test]
    fn conformance_file_512() {
        let (_d, b) = tmp(4 << 20, 512);
        conformance::run_all(&b);
    }

    #[test]
    fn conformance_file_4096() {
        let (_d, b) = tmp(4 << 20, 4096);
        conformance::run_all(&b);
    }

    #[test]
    fn conformance_file_write_through() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = FileOptions::new(dir.path().join("wt.img"));
        o.size = Some(2 << 20);
        o.write_back = false;
        let b = FileBackstore::open(o).unwrap();
        assert!(!b.capabilities().volatile_cache);
        conformance::run_all(&b);
    }

    #[test]
    fn existing_file_size_rounded_down_and_too_small_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd.img");
        std::fs::write(&p, vec![1u8; 4096 + 100]).unwrap();
        let b = FileBackstore::open(FileOptions::new(&p)).unwrap();
        assert_eq!(b.capacity(), 4096);
        let p2 = dir.path().join("tiny.img");
        std::fs::write(&p2, [0u8; 100]).unwrap();
        assert!(matches!(
            FileBackstore::open(FileOptions::new(&p2)),
            Err(Error::InvalidConfig(_))
        ));
        let missing = FileBackstore::open(FileOptions::new(dir.path().join("nope"))).unwrap_err();
        assert!(matches!(missing, Error::Open { .. }), "{missing}");
        assert!(missing.to_string().contains("nope"));
    }

    #[test]
    fn read_only_refuses_writes() {
        let (d, b) = tmp(1 << 20, 512);
        drop(b);
        let mut o = FileOptions::new(d.path().join("lun.img"));
        o.read_only = true;
        let ro = FileBackstore::open(o).unwrap();
        assert!(matches!(
            ro.write_at(&[0; 512], 0, WriteFlags::default()),
            Err(Error::ReadOnly)
        ));
        assert!(matches!(ro.discard(0, 512), Err(Error::ReadOnly)));
        assert!(ro.capabilities().read_only);
    }

    #[test]
    fn discard_punches_a_hole_visible_in_block_status() {
        let (_d, b) = tmp(4 << 20, 512);
        b.write_at(&vec![3u8; 4 << 20], 0, WriteFlags::default())
            .unwrap();
        b.discard(1 << 20, 1 << 20).unwrap();
        let ext = b.block_status(0, 4 << 20).unwrap();
        assert!(
            ext.iter()
                .any(|e| !e.mapped && e.offset <= (1 << 20) && e.offset + e.len >= (2 << 20)),
            "no hole reported: {ext:?}"
        );
    }

    #[test]
    fn reads_are_mapped_unless_turned_off() {
        let (d, b) = tmp(1 << 20, 512);
        assert!(b.is_mapped());
        let mut o = FileOptions::new(d.path().join("lun.img"));
        o.mmap_reads = false;
        assert!(!FileBackstore::open(o).unwrap().is_mapped());
    }

    #[test]
    fn mapped_reads_see_writes() {
        let (_d, b) = tmp(1 << 20, 512);
        let mut buf = [0u8; 4096];
        b.read_at(&mut buf, 8192).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        b.write_at(&[7u8; 4096], 8192, WriteFlags::default())
            .unwrap();
        b.read_at(&mut buf, 8192).unwrap();
        assert!(buf.iter().all(|&x| x == 7));
        b.write_at(&[9u8; 512], 8192 + 512, WriteFlags::FUA)
            .unwrap();
        b.read_at(&mut buf, 8192).unwrap();
        assert_eq!(&buf[..512], &[7u8; 512]);
        assert_eq!(&buf[512..1024], &[9u8; 512]);
        b.write_zeroes(8192, 512, true).unwrap();
        b.read_at(&mut buf, 8192).unwrap();
        assert_eq!(&buf[..512], &[0u8; 512]);
        assert!(b.is_mapped());
    }

    #[test]
    fn truncated_underneath_fails_the_read_then_refresh_maps_again() {
        let (_d, b) = tmp(1 << 20, 512);
        b.write_at(&vec![5u8; 1 << 20], 0, WriteFlags::default())
            .unwrap();
        // Another process truncates the file: the mapping's tail is gone.
        b.file.set_len(64 << 10).unwrap();
        let mut buf = vec![1u8; 8192];
        let e = b.read_at(&mut buf, 512 << 10).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Medium, "{e}");
        assert!(!b.is_mapped(), "a faulted mapping is retired");
        // Until a refresh, reads use preadv (which reads the gone range as zeros).
        b.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&x| x == 5));
        b.read_at(&mut buf, 512 << 10).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        // The file grows back; refresh maps it again.
        b.file.set_len(1 << 20).unwrap();
        assert_eq!(b.refresh().unwrap(), 1 << 20);
        assert!(b.is_mapped());
        let first = b.map.current().unwrap();
        b.refresh().unwrap();
        let again = b.map.current().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "an unchanged size keeps its mapping"
        );
        drop((first, again));
        b.write_at(&[6u8; 8192], 512 << 10, WriteFlags::default())
            .unwrap();
        b.read_at(&mut buf, 512 << 10).unwrap();
        assert!(buf.iter().all(|&x| x == 6));
        // Shrunk for good: refresh maps only what is left.
        b.file.set_len(64 << 10).unwrap();
        assert_eq!(b.refresh().unwrap(), 64 << 10);
        assert!(b.is_mapped());
        b.read_at(&mut buf, 0).unwrap();
        assert!(matches!(
            b.read_at(&mut buf, 64 << 10),
            Err(Error::OutOfRange { .. })
        ));
    }

    #[test]
    fn concurrent_reads_survive_truncation() {
        let (_d, b) = tmp(4 << 20, 512);
        b.write_at(&vec![3u8; 4 << 20], 0, WriteFlags::default())
            .unwrap();
        let b = Arc::new(b);
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..2)
            .map(|t| {
                let (b, stop, failed) = (b.clone(), stop.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 4096];
                    let mut off = t * 4096;
                    while !stop.load(Ordering::Relaxed) {
                        // Data read successfully is the file's (3) or, past the end, zeros
                        // from preadv; never a mix within one 4 KiB page.
                        match b.read_at(&mut buf, off) {
                            Ok(()) => assert!(buf.iter().all(|&x| x == buf[0])),
                            Err(e) => {
                                assert_eq!(e.kind(), crate::ErrorKind::Medium, "{e}");
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        off = (off + (64 << 10)) % (4 << 20);
                    }
                })
            })
            .collect();
        // Until the readers have hit a truncated page a few times (or 10 s went by).
        let t0 = std::time::Instant::now();
        while failed.load(Ordering::Relaxed) < 5 && t0.elapsed().as_secs() < 10 {
            b.file.set_len(1 << 20).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
            b.file.set_len(4 << 20).unwrap();
            b.refresh().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert!(
            failed.load(Ordering::Relaxed) > 0,
            "no read met a truncated page"
        );
        let mut buf = vec![0u8; 4096];
        b.read_at(&mut buf, (4 << 20) - 4096).unwrap();
        assert!(b.is_mapped());
    }

    #[test]
    fn resize_remaps() {
        let (_d, b) = tmp(1 << 20, 512);
        b.resize(2 << 20).unwrap();
        assert!(b.is_mapped());
        b.write_at(&[4u8; 512], (2 << 20) - 512, WriteFlags::default())
            .unwrap();
        let mut buf = [0u8; 512];
        b.read_at(&mut buf, (2 << 20) - 512).unwrap();
        assert_eq!(buf, [4u8; 512]);
        b.resize(512 << 10).unwrap();
        assert!(b.is_mapped());
        b.read_at(&mut buf, (512 << 10) - 512).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Mapped reads return what preadv reads return, for ranges inside, across and
        /// past the end, split into up to three buffers.
        #[test]
        fn mapped_reads_equal_preadv_reads(
            offset in 0u64..(1 << 20) + 8192,
            len in 0usize..40_000,
            cuts in proptest::collection::vec(0usize..40_000, 0..3),
        ) {
            let (dir, mapped, plain) = pair();
            proptest::prop_assert!(mapped.is_mapped());
            proptest::prop_assert!(!plain.is_mapped());
            let _ = dir;
            let mut a = vec![0u8; len];
            let mut b = vec![0u8; len];
            let ra = read_split(&mapped, &mut a, offset, &cuts);
            let rb = read_split(&plain, &mut b, offset, &cuts);
            proptest::prop_assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
            proptest::prop_assert_eq!(a, b);
        }
    }

    /// One patterned 1 MiB file, opened mapped and not.
    fn pair() -> (Arc<tempfile::TempDir>, FileBackstore, FileBackstore) {
        static FILE: std::sync::OnceLock<Arc<tempfile::TempDir>> = std::sync::OnceLock::new();
        let dir = FILE
            .get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 253) as u8).collect();
                std::fs::write(dir.path().join("p.img"), data).unwrap();
                Arc::new(dir)
            })
            .clone();
        let mut o = FileOptions::new(dir.path().join("p.img"));
        o.read_only = true;
        let mapped = FileBackstore::open(o.clone()).unwrap();
        o.mmap_reads = false;
        let plain = FileBackstore::open(o).unwrap();
        (dir, mapped, plain)
    }

    fn read_split(b: &FileBackstore, buf: &mut [u8], offset: u64, cuts: &[usize]) -> Result<()> {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(buf.len())).collect();
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut rest = buf;
        let mut at = 0;
        for c in cuts {
            let (head, tail) = rest.split_at_mut(c - at);
            parts.push(IoSliceMut::new(head));
            rest = tail;
            at = c;
        }
        parts.push(IoSliceMut::new(rest));
        b.read_vectored_at(&mut parts, offset)
    }

    #[test]
    fn resize_and_refresh() {
        let (_d, b) = tmp(1 << 20, 512);
        b.resize(2 << 20).unwrap();
        assert_eq!(b.capacity(), 2 << 20);
        b.file.set_len(3 << 20).unwrap();
        assert_eq!(b.refresh().unwrap(), 3 << 20);
        assert!(b.resize(1000).is_err());
    }
}
