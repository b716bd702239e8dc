//! io_uring submission for the file engine (feature `io-uring`).
//!
//! Each thread that does I/O owns one small ring (created on first use); a request is
//! submitted and waited for on that ring, so the calling convention stays synchronous
//! while the kernel gets the whole vector in one submission. If the kernel refuses
//! io_uring (old kernel, seccomp), the functions return `None` and the caller falls
//! back to `preadv`/`pwritev`.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};

thread_local! {
    static RING: RefCell<Option<Option<IoUring>>> = const { RefCell::new(None) };
}

fn with_ring<T>(f: impl FnOnce(&mut IoUring) -> io::Result<T>) -> Option<io::Result<T>> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ring = slot.get_or_insert_with(|| IoUring::new(8).ok());
        ring.as_mut().map(f)
    })
}

fn submit_one(ring: &mut IoUring, entry: io_uring::squeue::Entry) -> io::Result<usize> {
    // SAFETY: the entry points at iovecs and buffers borrowed by our caller for the whole
    // call; we wait for its completion before returning, so they outlive the kernel's use.
    unsafe { ring.submission().push(&entry) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    loop {
        match ring.submit_and_wait(1) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => {
                r?;
                break;
            }
        }
    }
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("io_uring completion missing"))?;
    let res = cqe.result();
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    Ok(res as usize)
}

/// Reads the whole vector at `offset`; short reads (end of file) are zero-filled.
pub(crate) fn readv(
    file: &File,
    bufs: &mut [IoSliceMut<'_>],
    offset: u64,
) -> Option<io::Result<()>> {
    with_ring(|ring| {
        let mut bufs = bufs;
        let mut pos = offset;
        while !bufs.is_empty() {
            let entry = opcode::Readv::new(
                types::Fd(file.as_raw_fd()),
                bufs.as_ptr().cast(),
                bufs.len() as u32,
            )
            .offset(pos)
            .build();
            let n = submit_one(ring, entry)?;
            if n == 0 {
                for b in bufs.iter_mut() {
                    b.fill(0);
                }
                return Ok(());
            }
            pos += n as u64;
            IoSliceMut::advance_slices(&mut bufs, n);
        }
        Ok(())
    })
}

/// Writes the whole vector at `offset`.
pub(crate) fn writev(file: &File, bufs: &[IoSlice<'_>], offset: u64) -> Option<io::Result<()>> {
    with_ring(|ring| {
        let mut owned = bufs.to_vec();
        let mut bufs = &mut owned[..];
        let mut pos = offset;
        while !bufs.is_empty() {
            let entry = opcode::Writev::new(
                types::Fd(file.as_raw_fd()),
                bufs.as_ptr().cast(),
                bufs.len() as u32,
            )
            .offset(pos)
            .build();
            let n = submit_one(ring, entry)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            pos += n as u64;
            IoSlice::advance_slices(&mut bufs, n);
        }
        Ok(())
    })
}
