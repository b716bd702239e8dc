//! Block storage engines for rustio.
//!
//! One trait, [`Backstore`], describes a block device as the SCSI engine sees it: a
//! byte-addressed store of `capacity()` bytes made of `block_size()`-sized logical blocks,
//! with vectored reads and writes at an offset, FUA writes, flush, discard (UNMAP),
//! write-zeroes and resize. Engines:
//!
//! * [`file::FileBackstore`] — a regular file or a block device (buffered through the
//!   page cache, `O_DSYNC` for FUA and write-through, hole punching for discard).
//! * [`ram::RamBackstore`] — a sparse in-memory store, or `nullio` (reads return zeros,
//!   writes are dropped), like LIO's `rd_mcp`.
//! * [`qcow2::Qcow2Backstore`] — qcow2 v2/v3 images (backing files, zero and compressed
//!   clusters, crash-safe metadata ordering), interoperable with qemu-img.
//!
//! Every engine runs the same conformance checks in [`conformance`].
//!
//! Offsets and lengths handed to a backstore are in bytes. Callers (the SCSI engine) have
//! already validated them against the capacity, but every engine checks again with checked
//! arithmetic and answers [`Error::OutOfRange`] rather than trusting its caller.

#![warn(missing_docs)]

use std::fmt;
use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(any(test, feature = "test-utils"))]
pub mod conformance;
pub mod file;
mod mmap;
pub mod qcow2;
pub mod ram;

pub use file::{FileBackstore, FileOptions};
pub use qcow2::{CreateOptions, Qcow2Backstore, Qcow2Options};
pub use ram::RamBackstore;

/// Errors of the backstore engines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request reaches past the end of the store.
    #[error(
        "{op} of {len} bytes at offset {offset} is beyond the end of the store ({capacity} bytes)"
    )]
    OutOfRange {
        /// The operation attempted ("read", "write", "discard"…).
        op: &'static str,
        /// First byte of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// Capacity of the store at the time of the request.
        capacity: u64,
    },
    /// The request is not aligned to what the engine requires (e.g. `O_DIRECT`).
    #[error("{op} at offset {offset} of {len} bytes is not aligned to {align} bytes")]
    Misaligned {
        /// The operation attempted.
        op: &'static str,
        /// First byte of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// Required alignment in bytes.
        align: u64,
    },
    /// An I/O system call failed.
    #[error("{op} at offset {offset} on {path} failed")]
    Io {
        /// The operation attempted.
        op: &'static str,
        /// The file or device.
        path: PathBuf,
        /// Byte offset of the failed request.
        offset: u64,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Opening or creating the backing file failed.
    #[error("cannot open backing store {path}")]
    Open {
        /// The file or device.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A write, discard or resize was sent to a read-only store.
    #[error("the backstore is read-only")]
    ReadOnly,
    /// The engine cannot do this operation.
    #[error("{0} is not supported by this backstore")]
    Unsupported(&'static str),
    /// The configuration of the store is invalid.
    #[error("invalid backstore configuration: {0}")]
    InvalidConfig(String),
    /// The on-disk format is damaged or uses a feature this engine refuses to touch.
    #[error("corrupt or unsupported image {path}: {reason}")]
    Corrupt {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The store has no space left to allocate the write (thin provisioning exhausted).
    #[error("no space left to allocate {len} bytes at offset {offset}")]
    NoSpace {
        /// First byte of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
    },
}

impl Error {
    /// Classifies the error for the SCSI layer, which maps it to sense data.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::OutOfRange { .. } => ErrorKind::OutOfRange,
            Error::Misaligned { .. } | Error::InvalidConfig(_) => ErrorKind::InvalidRequest,
            Error::ReadOnly => ErrorKind::ReadOnly,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::NoSpace { .. } => ErrorKind::NoSpace,
            Error::Io { source, .. } | Error::Open { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
                Some(libc::EROFS) => ErrorKind::ReadOnly,
                Some(libc::EIO) | Some(libc::ENODATA) => ErrorKind::Medium,
                Some(libc::EAGAIN) | Some(libc::ETIMEDOUT) | Some(libc::EBUSY) => ErrorKind::Busy,
                _ => ErrorKind::Hardware,
            },
            Error::Corrupt { .. } => ErrorKind::Medium,
        }
    }

    /// Builds an [`Error::OutOfRange`].
    pub fn out_of_range(op: &'static str, offset: u64, len: u64, capacity: u64) -> Self {
        Error::OutOfRange {
            op,
            offset,
            len,
            capacity,
        }
    }
}

/// Coarse classification of a backstore error, for mapping to SCSI sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Request beyond the end: ILLEGAL REQUEST / LBA OUT OF RANGE.
    OutOfRange,
    /// Malformed request: ILLEGAL REQUEST / INVALID FIELD IN CDB.
    InvalidRequest,
    /// DATA PROTECT / WRITE PROTECTED.
    ReadOnly,
    /// ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE.
    Unsupported,
    /// DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT.
    NoSpace,
    /// MEDIUM ERROR (unrecovered read / write error).
    Medium,
    /// A transient condition; the initiator should retry (BUSY / NOT READY).
    Busy,
    /// HARDWARE ERROR / INTERNAL TARGET FAILURE.
    Hardware,
}

/// Result type of the backstore crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Per-write options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteFlags {
    /// Force Unit Access: the data is on stable storage when the call returns.
    pub fua: bool,
}

impl WriteFlags {
    /// A write with FUA set.
    pub const FUA: WriteFlags = WriteFlags { fua: true };
}

/// What an engine can do; used to fill VPD pages and READ CAPACITY(16).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Writes, discards and resizes are refused.
    pub read_only: bool,
    /// [`Backstore::discard`] deallocates (thin provisioning, LBPME).
    pub discard: bool,
    /// Deallocated blocks read back as zeros (LBPRZ).
    pub discard_zeroes: bool,
    /// The engine has a volatile write cache that [`Backstore::flush`] empties.
    pub volatile_cache: bool,
    /// The medium is rotational (VPD 0xB1 MEDIUM ROTATION RATE).
    pub rotational: bool,
    /// [`Backstore::block_status`] reports real allocation (GET LBA STATUS).
    pub allocation_status: bool,
    /// I/O waits on a network round trip (Ceph RBD): callers should run it on a worker
    /// pool, never on a thread that also reads the wire or the ring.
    pub network: bool,
}

/// An extent reported by [`Backstore::block_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First byte of the extent.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// `true` if the extent is allocated (mapped), `false` if deallocated.
    pub mapped: bool,
}

/// A byte range of an open regular file that holds what a read of the same range of the
/// store returns, lent by [`Backstore::file_range`] so that a transport can send it
/// straight from the page cache (`sendfile(2)`) instead of reading it into a buffer and
/// copying that buffer into its socket again.
///
/// The bytes are those in the file when the transport sends them, not when the range was
/// lent. A file shortened in between ends early: [`FileRange::read_into`] reads zeros
/// past its end (as [`file::FileBackstore`]'s reads do); a sender of the range itself
/// must not frame a short payload.
#[derive(Debug, Clone)]
pub struct FileRange {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

impl FileRange {
    /// `len` bytes of `file` from byte `offset`; `None` when the range does not fit the
    /// file offsets the kernel takes (`off_t`, 63 bits).
    pub fn new(file: Arc<File>, offset: u64, len: usize) -> Option<FileRange> {
        let end = offset.checked_add(u64::try_from(len).ok()?)?;
        i64::try_from(end).ok()?;
        Some(FileRange { file, offset, len })
    }

    /// The file's descriptor, for `sendfile(2)` or `splice(2)`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// First byte of the range in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the range in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `len` bytes from `start` into the range (both clamped to it).
    pub fn sub(&self, start: usize, len: usize) -> FileRange {
        let start = start.min(self.len);
        FileRange {
            file: self.file.clone(),
            offset: self.offset + start as u64,
            len: len.min(self.len - start),
        }
    }

    /// Reads the first `buf.len()` bytes of the range (at most [`Self::len`]) into
    /// `buf`: the copy a transport falls back to when it needs the bytes themselves (a
    /// data digest, a response queued for later). Past the end of a file that shrank
    /// underneath, zeros, like [`file::FileBackstore`]'s reads.
    pub fn read_into(&self, buf: &mut [u8]) -> std::io::Result<()> {
        let want = buf.len().min(self.len);
        let mut done = 0usize;
        while done < want {
            match self
                .file
                .read_at(&mut buf[done..want], self.offset + done as u64)
            {
                Ok(0) => {
                    buf[done..want].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// How a request started with [`Backstore::submit_read`] or [`Backstore::submit_write`]
/// ends: called once, with the request's buffer back and its result.
pub type IoDone = Box<dyn FnOnce(Vec<u8>, Result<()>) + Send>;

/// A block store.
///
/// Implementations are shared between many connections and threads (`&self` methods);
/// they serialise internally only where their medium requires it. Offsets and lengths are
/// bytes; callers keep requests aligned to [`Backstore::block_size`], and engines may refuse
/// unaligned requests with [`Error::Misaligned`].
pub trait Backstore: Send + Sync + fmt::Debug {
    /// Logical block size in bytes (512 or 4096).
    fn block_size(&self) -> u32;

    /// Capacity in bytes. May change after [`Backstore::resize`] or [`Backstore::refresh`].
    fn capacity(&self) -> u64;

    /// What this engine supports.
    fn capabilities(&self) -> Capabilities;

    /// Reads `bufs` (filled in order) starting at byte `offset`.
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<()>;

    /// Writes `bufs` (in order) starting at byte `offset`.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64, flags: WriteFlags)
        -> Result<()>;

    /// Makes every completed write durable.
    fn flush(&self) -> Result<()>;

    /// Deallocates `len` bytes at `offset`. After a discard the range reads as zeros if
    /// `capabilities().discard_zeroes`, otherwise its content is unspecified.
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let _ = (offset, len);
        Err(Error::Unsupported("discard"))
    }

    /// Sets `len` bytes at `offset` to zero. With `may_unmap` the engine may deallocate
    /// the range instead, provided it then reads as zeros.
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        let _ = may_unmap;
        write_zeroes_by_writing(self, offset, len)
    }

    /// Changes the capacity (grow or shrink) to `new_capacity` bytes.
    fn resize(&self, new_capacity: u64) -> Result<()> {
        let _ = new_capacity;
        Err(Error::Unsupported("resize"))
    }

    /// Re-reads the capacity from the medium (e.g. a file grown by an administrator or an
    /// RBD image resized elsewhere) and returns it. The SCSI engine compares it with the
    /// capacity it last reported and raises CAPACITY DATA HAS CHANGED.
    fn refresh(&self) -> Result<u64> {
        Ok(self.capacity())
    }

    /// Reports allocation of `[offset, offset+len)`, as extents in ascending order that
    /// cover at least the first byte. The default says everything is mapped.
    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range("block status", offset, len, self.capacity())?;
        Ok(vec![Extent {
            offset,
            len,
            mapped: true,
        }])
    }

    /// The bytes `[offset, offset+len)` of the store as a range of a regular file, for a
    /// transport that sends READ data straight from the page cache ([`FileRange`]).
    /// `None` (the default) when the store is not a plain file, or the range is not all
    /// in it.
    fn file_range(&self, offset: u64, len: usize) -> Option<FileRange> {
        let _ = (offset, len);
        None
    }

    /// Whether [`Backstore::submit_read`] and [`Backstore::submit_write`] return before
    /// the I/O completed (a store whose I/O is a network round trip, with an
    /// asynchronous client library: Ceph RBD). A caller can then keep many requests in
    /// flight without a thread waiting for each.
    fn submits_async(&self) -> bool {
        false
    }

    /// Reads `buf.len()` bytes at `offset` into `buf`; `done` gets the buffer back with
    /// the result, on a thread of the store's when [`Backstore::submits_async`] (after
    /// this call returned, or during it), otherwise on this thread before it returns.
    /// `done` must not block: it runs where the store completes its other requests.
    fn submit_read(&self, offset: u64, mut buf: Vec<u8>, done: IoDone) {
        let r = self.read_at(&mut buf, offset);
        done(buf, r);
    }

    /// Writes the first `len` bytes of `buf` at `offset` (all of `buf` if it is shorter);
    /// `done` as for [`Backstore::submit_read`].
    fn submit_write(&self, offset: u64, buf: Vec<u8>, len: usize, flags: WriteFlags, done: IoDone) {
        let r = self.write_at(&buf[..len.min(buf.len())], offset, flags);
        done(buf, r);
    }

    /// Reads into one buffer.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_vectored_at(&mut [IoSliceMut::new(buf)], offset)
    }

    /// Writes one buffer.
    fn write_at(&self, buf: &[u8], offset: u64, flags: WriteFlags) -> Result<()> {
        self.write_vectored_at(&[IoSlice::new(buf)], offset, flags)
    }
}

/// Checks that `[offset, offset+len)` lies within `capacity`, with checked arithmetic.
pub fn check_range(op: &'static str, offset: u64, len: u64, capacity: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(Error::out_of_range(op, offset, len, capacity)),
    }
}

/// Total length of a list of buffers, or `None` on overflow.
pub fn iov_len<T: std::ops::Deref<Target = [u8]>>(bufs: &[T]) -> Option<u64> {
    bufs.iter()
        .try_fold(0u64, |acc, b| acc.checked_add(b.len() as u64))
}

/// The length of a vectored `op` of `bufs` at `offset`, once checked to end within
/// `capacity`: the range check of the backstores' `read_vectored_at` and
/// `write_vectored_at`. A list whose length overflows a `u64` is out of range like one
/// past the end.
pub fn check_iov<T: std::ops::Deref<Target = [u8]>>(
    op: &'static str,
    bufs: &[T],
    offset: u64,
    capacity: u64,
) -> Result<u64> {
    let len = iov_len(bufs).ok_or_else(|| Error::out_of_range(op, offset, u64::MAX, capacity))?;
    check_range(op, offset, len, capacity)?;
    Ok(len)
}

/// Fallback for [`Backstore::write_zeroes`]: writes zero buffers of up to 1 MiB.
pub fn write_zeroes_by_writing<B: Backstore + ?Sized>(b: &B, offset: u64, len: u64) -> Result<()> {
    check_range("write zeroes", offset, len, b.capacity())?;
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK);
        b.write_at(&zeros[..n as usize], offset + done, WriteFlags::default())?;
        done += n;
    }
    Ok(())
}

impl<B: Backstore + ?Sized> Backstore for std::sync::Arc<B> {
    fn block_size(&self) -> u32 {
        (**self).block_size()
    }
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<()> {
        (**self).read_vectored_at(bufs, offset)
    }
    fn write_vectored_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        flags: WriteFlags,
    ) -> Result<()> {
        (**self).write_vectored_at(bufs, offset, flags)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        (**self).discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        (**self).write_zeroes(offset, len, may_unmap)
    }
    fn resize(&self, new_capacity: u64) -> Result<()> {
        (**self).resize(new_capacity)
    }
    fn refresh(&self) -> Result<u64> {
        (**self).refresh()
    }
    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        (**self).block_status(offset, len)
    }
    fn file_range(&self, offset: u64, len: usize) -> Option<FileRange> {
        (**self).file_range(offset, len)
    }
    fn submits_async(&self) -> bool {
        (**self).submits_async()
    }
    fn submit_read(&self, offset: u64, buf: Vec<u8>, done: IoDone) {
        (**self).submit_read(offset, buf, done)
    }
    fn submit_write(&self, offset: u64, buf: Vec<u8>, len: usize, flags: WriteFlags, done: IoDone) {
        (**self).submit_write(offset, buf, len, flags, done)
    }
}

/// Validates a logical block size: 512 or 4096 (also 1024 and 2048, which SBC allows).
pub fn validate_block_size(bs: u32) -> Result<()> {
    match bs {
        512 | 1024 | 2048 | 4096 => Ok(()),
        _ => Err(Error::InvalidConfig(format!(
            "logical block size {bs} is not one of 512, 1024, 2048, 4096"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_iov_sums_the_buffers_and_keeps_them_inside_the_capacity() {
        // Eight 512-byte blocks; two one-block buffers.
        let cap = 4096;
        let a = [0u8; 512];
        let b = [0u8; 512];
        let bufs = [IoSlice::new(&a), IoSlice::new(&b)];
        assert_eq!(check_iov("read", &bufs, 3072, cap).unwrap(), 1024);
        // One block past the end: the error names the whole request.
        match check_iov("write", &bufs, 3584, cap) {
            Err(Error::OutOfRange {
                op, offset, len, ..
            }) => assert_eq!((op, offset, len), ("write", 3584, 1024)),
            other => panic!("expected OutOfRange, got {other:?}"),
        }
        // offset + len overflows a u64.
        assert!(matches!(
            check_iov("read", &bufs, u64::MAX - 100, cap),
            Err(Error::OutOfRange { .. })
        ));
        // An empty list is a zero-length request: fine at the end, not past it.
        let none: [IoSlice<'_>; 0] = [];
        assert_eq!(check_iov("read", &none, cap, cap).unwrap(), 0);
        assert!(check_iov("read", &none, cap + 512, cap).is_err());
    }
}
