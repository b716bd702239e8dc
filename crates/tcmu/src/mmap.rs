//! The memory shared with the kernel: one owned `mmap` of `/dev/uioN` per device, and a
//! heap-backed stand-in with the same interface for tests and fuzzing.
//!
//! This is the only module with `unsafe` code. The kernel (or, in tests, a fake kernel)
//! writes the shared region concurrently and must be assumed hostile, so:
//!
//! * no Rust reference (`&[u8]`, `&mut T`) to the ring or mailbox is ever created — every
//!   access there goes through a raw pointer as an atomic load or store, so concurrent
//!   writes by the other side can produce stale or torn *values* but never undefined
//!   behaviour;
//! * the one exception is zero-copy I/O on the data area ([`SharedMemory::lend`] and
//!   [`SharedMemory::lend_mut`]): the data blocks of a command belong to userspace from
//!   the moment the kernel publishes its entry until userspace publishes the completion
//!   (`target_core_user.c` neither reads nor writes them in between, and keeps them
//!   reserved even for a command it timed out itself), so for that span the device
//!   lends them as byte slices to the backstore — exactly what libtcmu handlers do with
//!   the iovecs. The caller guarantees the command stays outstanding while the slices
//!   live (the device holds the command's state lock, so neither the watchdog nor a ring
//!   reset can complete it); overlapping ranges are refused, so no two `&mut` alias;
//! * every access is bounds-checked against the mapping length with checked arithmetic;
//!   callers parse the bytes they read into typed values and validate them before use;
//! * `cmd_head` is loaded with `Acquire` (entries written before the kernel published the
//!   head are visible) and `cmd_tail` is stored with `Release` (the response written into
//!   an entry is visible to the kernel before the tail that hands it back), as firecracker's
//!   io_uring queue does for its ring indices.

use std::fmt;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// An access outside the shared region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("access of {len} bytes at offset {offset} is outside the {size}-byte shared region")]
pub struct OutOfBounds {
    /// First byte of the attempted access.
    pub offset: u64,
    /// Length of the attempted access.
    pub len: u64,
    /// Size of the region.
    pub size: u64,
}

/// Byte-addressed memory shared with the kernel.
///
/// All methods check bounds and return [`OutOfBounds`] instead of touching memory outside
/// the region. Multi-byte integers are little endian (the TCMU ABI uses host byte order and
/// TCMU is only built for little-endian hosts here; see `lib.rs`).
pub trait SharedMemory: Send + Sync + fmt::Debug {
    /// Size of the region in bytes.
    fn size(&self) -> usize;

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds>;

    /// Copies `data` into the region at `offset`.
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds>;

    /// Sets `len` bytes at `offset` to `byte`.
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfBounds>;

    /// Loads the 4-byte aligned `u32` at `offset` with `Acquire` ordering.
    fn load_u32_acquire(&self, offset: usize) -> Result<u32, OutOfBounds>;

    /// Stores the 4-byte aligned `u32` at `offset` with `Release` ordering.
    fn store_u32_release(&self, offset: usize, value: u32) -> Result<(), OutOfBounds>;

    /// Lends the `len` bytes at `offset` to `f` as a byte slice, for zero-copy data-out.
    ///
    /// Only for data blocks of an outstanding command, which the kernel does not touch
    /// until the command is completed (see the module documentation); the caller keeps
    /// the command outstanding until `f` returns.
    fn lend(&self, offset: usize, len: usize, f: &mut dyn FnMut(&[u8])) -> Result<(), OutOfBounds>;

    /// Lends the `(offset, len)` ranges, in order, to `f` as mutable byte slices, for
    /// zero-copy data-in. Returns `Ok(false)` without calling `f` if two ranges overlap.
    /// The same contract as [`Self::lend`] applies.
    fn lend_mut(
        &self,
        ranges: &[(usize, usize)],
        f: &mut dyn FnMut(&mut [IoSliceMut<'_>]),
    ) -> Result<bool, OutOfBounds>;

    /// Reads a `u8`.
    fn read_u8(&self, offset: usize) -> Result<u8, OutOfBounds>;

    /// Reads a little-endian `u16`.
    fn read_u16(&self, offset: usize) -> Result<u16, OutOfBounds>;

    /// Reads a little-endian `u32`.
    fn read_u32(&self, offset: usize) -> Result<u32, OutOfBounds>;

    /// Reads a little-endian `u64`.
    fn read_u64(&self, offset: usize) -> Result<u64, OutOfBounds>;

    /// Writes a `u8`.
    fn write_u8(&self, offset: usize, v: u8) -> Result<(), OutOfBounds>;

    /// Writes a little-endian `u16`.
    fn write_u16(&self, offset: usize, v: u16) -> Result<(), OutOfBounds>;

    /// Writes a little-endian `u32`.
    fn write_u32(&self, offset: usize, v: u32) -> Result<(), OutOfBounds>;

    /// Writes a little-endian `u64`.
    fn write_u64(&self, offset: usize, v: u64) -> Result<(), OutOfBounds>;
}

/// Whether two of the in-bounds `(offset, len)` ranges overlap (adjacent ranges do not).
/// One range (a 4 KiB command, or one the kernel placed in consecutive blocks) or two need
/// no sorting and no heap: under QEMU TCG every allocation of the per-command path shows
/// in the daemon's CPU per I/O (bench/README.md).
fn ranges_overlap(ranges: &[(usize, usize)]) -> bool {
    match ranges {
        [] | [_] => false,
        [a, b] => {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            lo.0 + lo.1 > hi.0
        }
        _ => {
            let mut sorted: Vec<(usize, usize)> = ranges.to_vec();
            sorted.sort_unstable();
            sorted.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0)
        }
    }
}

/// A raw view of a region: base pointer and length. Never dereferenced except through the
/// atomic accessors and the data-block loans below, which check bounds first.
struct RawRegion {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is accessed through atomic loads and stores, except the data blocks
// lent by `lend`/`lend_mut`, which belong to one command and are lent to one thread at a
// time (see the module documentation), so sharing the pointer between threads cannot
// cause data races; the owner keeps the memory alive for as long as the `RawRegion` exists.
unsafe impl Send for RawRegion {}
// SAFETY: as for `Send`: shared accesses are atomic, lent data blocks are exclusive.
unsafe impl Sync for RawRegion {}

/// Little-endian words of the region: every ring and mailbox field the kernel writes is
/// aligned to its width, so a field is one atomic load or store of that width; an
/// unaligned offset (never produced by the ring code, possible only through a caller's
/// arithmetic) goes byte by byte through [`RawRegion::read`] / [`RawRegion::write`].
/// Under QEMU TCG the byte-wise path cost ≈ 25 instructions per field read, ≈ 300 per
/// command (callgrind, bench/README.md).
macro_rules! raw_words {
    ($($read:ident, $write:ident, $t:ty, $atomic:ty;)*) => {
        impl RawRegion {
            $(
                fn $read(&self, offset: usize) -> Result<$t, OutOfBounds> {
                    const N: usize = std::mem::size_of::<$t>();
                    self.check(offset, N)?;
                    let p = self.at(offset);
                    if (p as usize) % std::mem::align_of::<$atomic>() == 0 {
                        // SAFETY: `[offset, offset + N)` is in bounds (checked above) of a
                        // region live for `&self`, the address is aligned for the atomic
                        // type (just checked), and this process accesses the region only
                        // atomically (see the module documentation).
                        let v = unsafe { <$atomic>::from_ptr(p.cast::<$t>()) }
                            .load(Ordering::Relaxed);
                        return Ok(<$t>::from_le(v));
                    }
                    let mut b = [0u8; N];
                    self.read(offset, &mut b)?;
                    Ok(<$t>::from_le_bytes(b))
                }

                fn $write(&self, offset: usize, v: $t) -> Result<(), OutOfBounds> {
                    const N: usize = std::mem::size_of::<$t>();
                    self.check(offset, N)?;
                    let p = self.at(offset);
                    if (p as usize) % std::mem::align_of::<$atomic>() == 0 {
                        // SAFETY: as in the load above.
                        unsafe { <$atomic>::from_ptr(p.cast::<$t>()) }
                            .store(v.to_le(), Ordering::Relaxed);
                        return Ok(());
                    }
                    self.write(offset, &v.to_le_bytes())
                }
            )*
        }
    };
}

raw_words! {
    read_u16, write_u16, u16, AtomicU16;
    read_u32, write_u32, u32, AtomicU32;
    read_u64, write_u64, u64, AtomicU64;
}

impl RawRegion {
    fn check(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OutOfBounds {
                offset: offset as u64,
                len: len as u64,
                size: self.len as u64,
            }),
        }
    }

    /// Pointer to byte `offset`; callers have checked `offset <= len`.
    fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.len);
        // `wrapping_add` keeps this free of `unsafe`; the result is in bounds (or one past
        // the end) because callers checked the range.
        self.base.as_ptr().wrapping_add(offset)
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(offset, buf.len())?;
        let mut i = 0;
        let n = buf.len();
        // Bytes up to the first 8-byte aligned address, then words, then the rest.
        while i < n && (self.at(offset + i) as usize) % 8 != 0 {
            // SAFETY: `offset + i < offset + n <= len` (checked above), the region is live
            // for `&self`, and a byte is always aligned for `AtomicU8`.
            buf[i] = unsafe { AtomicU8::from_ptr(self.at(offset + i)) }.load(Ordering::Relaxed);
            i += 1;
        }
        // Whole words by chunks, which needs no bounds check per word.
        let words = self.at(offset + i).cast::<u64>();
        let mut chunks = buf[i..].chunks_exact_mut(8);
        for (k, chunk) in (&mut chunks).enumerate() {
            // SAFETY: word `k` is `[offset + i + 8k, offset + i + 8k + 8)`, inside
            // `[offset, offset + n)`, which is in bounds (checked above); the address is
            // 8-byte aligned by the loop above; accessed atomically only.
            let w = unsafe { AtomicU64::from_ptr(words.wrapping_add(k)) }.load(Ordering::Relaxed);
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        i = n - chunks.into_remainder().len();
        while i < n {
            // SAFETY: in bounds as above; bytes need no alignment.
            buf[i] = unsafe { AtomicU8::from_ptr(self.at(offset + i)) }.load(Ordering::Relaxed);
            i += 1;
        }
        Ok(())
    }

    fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        self.check(offset, data.len())?;
        let mut i = 0;
        let n = data.len();
        while i < n && (self.at(offset + i) as usize) % 8 != 0 {
            // SAFETY: in bounds (checked above), live for `&self`, bytes need no alignment.
            unsafe { AtomicU8::from_ptr(self.at(offset + i)) }.store(data[i], Ordering::Relaxed);
            i += 1;
        }
        let words = self.at(offset + i).cast::<u64>();
        let chunks = data[i..].chunks_exact(8);
        let rest = chunks.remainder().len();
        for (k, chunk) in chunks.enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            // SAFETY: word `k` is in bounds (checked above), as in `read`, and 8-byte
            // aligned (loop above).
            unsafe { AtomicU64::from_ptr(words.wrapping_add(k)) }
                .store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
        i = n - rest;
        while i < n {
            // SAFETY: in bounds (checked above); bytes need no alignment.
            unsafe { AtomicU8::from_ptr(self.at(offset + i)) }.store(data[i], Ordering::Relaxed);
            i += 1;
        }
        Ok(())
    }

    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfBounds> {
        self.check(offset, len)?;
        let chunk = [byte; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.write(offset + done, &chunk[..n])?;
            done += n;
        }
        Ok(())
    }

    fn lend(&self, offset: usize, len: usize, f: &mut dyn FnMut(&[u8])) -> Result<(), OutOfBounds> {
        self.check(offset, len)?;
        // SAFETY: `[offset, offset + len)` is in bounds (checked above) and the region is
        // live for `&self`. The caller lends only data blocks of an outstanding command,
        // which the kernel does not write until the command is completed, and keeps the
        // command outstanding until `f` returns; this process creates no `&mut` to the
        // range meanwhile (`lend_mut` is only called for other, data-in commands).
        let data = unsafe { std::slice::from_raw_parts(self.at(offset).cast_const(), len) };
        f(data);
        Ok(())
    }

    fn lend_mut(
        &self,
        ranges: &[(usize, usize)],
        f: &mut dyn FnMut(&mut [IoSliceMut<'_>]),
    ) -> Result<bool, OutOfBounds> {
        for &(offset, len) in ranges {
            self.check(offset, len)?;
        }
        // In bounds, so `offset + len` cannot overflow.
        if ranges_overlap(ranges) {
            return Ok(false);
        }
        let slice = |(offset, len): (usize, usize)| {
            // SAFETY: each range is in bounds (checked above) of a region live for
            // `&self`, and no two ranges overlap (checked above), so the `&mut` slices do
            // not alias each other. The caller lends only data blocks of an outstanding
            // command, which the kernel neither reads nor writes until the command is
            // completed, and keeps the command outstanding until `f` returns; the ring
            // code never accesses the data area.
            IoSliceMut::new(unsafe { std::slice::from_raw_parts_mut(self.at(offset), len) })
        };
        if let [one] = ranges {
            f(&mut [slice(*one)]);
        } else {
            let mut slices: Vec<IoSliceMut<'_>> = ranges.iter().map(|&r| slice(r)).collect();
            f(&mut slices);
        }
        Ok(true)
    }

    /// One byte, as one atomic load.
    fn read_u8(&self, offset: usize) -> Result<u8, OutOfBounds> {
        self.check(offset, 1)?;
        // SAFETY: in bounds (checked above), live for `&self`, bytes need no alignment.
        Ok(unsafe { AtomicU8::from_ptr(self.at(offset)) }.load(Ordering::Relaxed))
    }

    /// One byte, as one atomic store.
    fn write_u8(&self, offset: usize, v: u8) -> Result<(), OutOfBounds> {
        self.check(offset, 1)?;
        // SAFETY: in bounds (checked above), live for `&self`, bytes need no alignment.
        unsafe { AtomicU8::from_ptr(self.at(offset)) }.store(v, Ordering::Relaxed);
        Ok(())
    }

    fn aligned_u32(&self, offset: usize) -> Result<*mut u32, OutOfBounds> {
        self.check(offset, 4)?;
        let p = self.at(offset);
        if (p as usize) % 4 != 0 {
            // An unaligned index is a caller bug, reported as an out-of-bounds access so
            // that it can never turn into an unaligned atomic.
            return Err(OutOfBounds {
                offset: offset as u64,
                len: 4,
                size: self.len as u64,
            });
        }
        Ok(p.cast::<u32>())
    }

    fn load_u32_acquire(&self, offset: usize) -> Result<u32, OutOfBounds> {
        let p = self.aligned_u32(offset)?;
        // SAFETY: `p` is in bounds, 4-byte aligned (checked by `aligned_u32`) and only ever
        // accessed atomically by this process.
        Ok(unsafe { AtomicU32::from_ptr(p) }.load(Ordering::Acquire))
    }

    fn store_u32_release(&self, offset: usize, value: u32) -> Result<(), OutOfBounds> {
        let p = self.aligned_u32(offset)?;
        // SAFETY: as in `load_u32_acquire`.
        unsafe { AtomicU32::from_ptr(p) }.store(value, Ordering::Release);
        Ok(())
    }
}

macro_rules! delegate_shared_memory {
    ($ty:ty) => {
        impl SharedMemory for $ty {
            fn size(&self) -> usize {
                self.raw.len
            }
            fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
                self.raw.read(offset, buf)
            }
            fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
                self.raw.write(offset, data)
            }
            fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfBounds> {
                self.raw.fill(offset, len, byte)
            }
            fn load_u32_acquire(&self, offset: usize) -> Result<u32, OutOfBounds> {
                self.raw.load_u32_acquire(offset)
            }
            fn read_u8(&self, offset: usize) -> Result<u8, OutOfBounds> {
                self.raw.read_u8(offset)
            }
            fn read_u16(&self, offset: usize) -> Result<u16, OutOfBounds> {
                self.raw.read_u16(offset)
            }
            fn read_u32(&self, offset: usize) -> Result<u32, OutOfBounds> {
                self.raw.read_u32(offset)
            }
            fn read_u64(&self, offset: usize) -> Result<u64, OutOfBounds> {
                self.raw.read_u64(offset)
            }
            fn write_u8(&self, offset: usize, v: u8) -> Result<(), OutOfBounds> {
                self.raw.write_u8(offset, v)
            }
            fn write_u16(&self, offset: usize, v: u16) -> Result<(), OutOfBounds> {
                self.raw.write_u16(offset, v)
            }
            fn write_u32(&self, offset: usize, v: u32) -> Result<(), OutOfBounds> {
                self.raw.write_u32(offset, v)
            }
            fn write_u64(&self, offset: usize, v: u64) -> Result<(), OutOfBounds> {
                self.raw.write_u64(offset, v)
            }
            fn store_u32_release(&self, offset: usize, value: u32) -> Result<(), OutOfBounds> {
                self.raw.store_u32_release(offset, value)
            }
            fn lend(
                &self,
                offset: usize,
                len: usize,
                f: &mut dyn FnMut(&[u8]),
            ) -> Result<(), OutOfBounds> {
                self.raw.lend(offset, len, f)
            }
            fn lend_mut(
                &self,
                ranges: &[(usize, usize)],
                f: &mut dyn FnMut(&mut [IoSliceMut<'_>]),
            ) -> Result<bool, OutOfBounds> {
                self.raw.lend_mut(ranges, f)
            }
        }
    };
}

/// The shared mapping of one `/dev/uioN` device (map 0: mailbox, command ring and data
/// area). Unmapped when dropped.
pub struct UioMapping {
    raw: RawRegion,
}

impl fmt::Debug for UioMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UioMapping")
            .field("base", &self.raw.base)
            .field("len", &self.raw.len)
            .finish()
    }
}

impl UioMapping {
    /// Maps `len` bytes of map 0 of the open UIO device `fd` (`mmap` offset 0 selects
    /// `maps/map0`), shared and read-write. The kernel refuses any other length.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> std::io::Result<UioMapping> {
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "UIO map size is 0",
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (`addr` NULL) cannot overlap any
        // existing Rust object; `fd` is a valid open descriptor for the call's duration.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned NULL"))?;
        Ok(UioMapping {
            raw: RawRegion { base, len },
        })
    }
}

impl Drop for UioMapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping created in `map`, which nothing
        // else unmaps; no references into it exist (all access is through `RawRegion`,
        // which this value owns and which dies with it).
        let rc = unsafe { libc::munmap(self.raw.base.as_ptr().cast(), self.raw.len) };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                len = self.raw.len,
                "munmap of the TCMU ring failed"
            );
        }
    }
}

delegate_shared_memory!(UioMapping);

/// A heap buffer laid out like a TCMU mapping, for unit tests, property tests and fuzzing:
/// the ring code runs over it through the same [`SharedMemory`] interface as over the
/// real mapping.
#[cfg(any(test, feature = "test-utils"))]
pub struct HeapMemory {
    raw: RawRegion,
    // Owns the memory `raw` points into; 8-byte aligned words so that word and `u32`
    // atomics are aligned like in a page-aligned mapping.
    _storage: Vec<AtomicU64>,
}

#[cfg(any(test, feature = "test-utils"))]
impl fmt::Debug for HeapMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapMemory")
            .field("len", &self.raw.len)
            .finish()
    }
}

#[cfg(any(test, feature = "test-utils"))]
impl HeapMemory {
    /// A zero-filled region of `len` bytes.
    pub fn new(len: usize) -> HeapMemory {
        let words = len.div_ceil(8).max(1);
        let storage: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        // The pointer is derived from a shared borrow of the whole slice of atomics, whose
        // interior mutability permits writes through it; moving the `Vec` afterwards does
        // not move its heap buffer.
        let base = NonNull::from(&storage[..]).cast::<u8>();
        HeapMemory {
            raw: RawRegion { base, len },
            _storage: storage,
        }
    }

    /// A region initialised from `bytes` (its length is `bytes.len()`).
    pub fn from_bytes(bytes: &[u8]) -> HeapMemory {
        let m = HeapMemory::new(bytes.len());
        // In bounds by construction.
        let _ = m.raw.write(0, bytes);
        m
    }

    /// A copy of the whole region.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.raw.len];
        let _ = self.raw.read(0, &mut v);
        v
    }
}

#[cfg(any(test, feature = "test-utils"))]
delegate_shared_memory!(HeapMemory);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lent_slices_see_and_change_the_region() {
        let m = HeapMemory::new(64);
        m.write(8, b"abcdef").unwrap();
        let mut seen = Vec::new();
        m.lend(9, 4, &mut |d| seen.extend_from_slice(d)).unwrap();
        assert_eq!(seen, b"bcde");
        let lent = m
            .lend_mut(&[(40, 3), (20, 2)], &mut |bufs| {
                assert_eq!(bufs.len(), 2);
                bufs[0].copy_from_slice(b"xyz");
                bufs[1].copy_from_slice(b"uv");
            })
            .unwrap();
        assert!(lent);
        let snap = m.snapshot();
        assert_eq!(&snap[40..43], b"xyz");
        assert_eq!(&snap[20..22], b"uv");
    }

    proptest! {
        /// The allocation-free check of one or two ranges agrees with sorting them.
        #[test]
        fn two_range_overlap_matches_the_sorted_check(
            a in (0usize..64, 0usize..16), b in (0usize..64, 0usize..16)
        ) {
            let mut sorted = [a, b];
            sorted.sort_unstable();
            let reference = sorted[0].0 + sorted[0].1 > sorted[1].0;
            prop_assert_eq!(ranges_overlap(&[a, b]), reference);
            prop_assert_eq!(ranges_overlap(&[b, a]), reference);
            prop_assert!(!ranges_overlap(&[a]));
        }
    }

    #[test]
    fn lending_checks_bounds_and_refuses_overlap() {
        let m = HeapMemory::new(64);
        let mut called = false;
        assert!(m.lend(60, 5, &mut |_| called = true).is_err());
        assert!(m.lend(usize::MAX, 2, &mut |_| called = true).is_err());
        assert!(m
            .lend_mut(&[(0, 4), (62, 4)], &mut |_| called = true)
            .is_err());
        assert_eq!(
            m.lend_mut(&[(0, 8), (7, 4)], &mut |_| called = true),
            Ok(false)
        );
        assert_eq!(
            m.lend_mut(&[(16, 8), (10, 7)], &mut |_| called = true),
            Ok(false)
        );
        assert!(!called);
        // Adjacent is not overlapping.
        assert_eq!(
            m.lend_mut(&[(8, 8), (0, 8)], &mut |_| called = true),
            Ok(true)
        );
        assert!(called);
    }

    #[test]
    fn heap_round_trip_and_bounds() {
        let m = HeapMemory::new(100);
        m.write(3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).unwrap();
        let mut b = [0u8; 11];
        m.read(3, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(m.read_u32(3).unwrap(), 0x0403_0201);
        assert_eq!(
            m.read(95, &mut [0u8; 6]),
            Err(OutOfBounds {
                offset: 95,
                len: 6,
                size: 100
            })
        );
        assert!(m.write(usize::MAX, &[1]).is_err());
        assert!(m.read(100, &mut []).is_ok());
        assert!(m.read(101, &mut []).is_err());
        // Unaligned atomics are refused rather than performed.
        assert!(m.load_u32_acquire(2).is_err());
        m.store_u32_release(12, 0xdead_beef).unwrap();
        assert_eq!(m.load_u32_acquire(12).unwrap(), 0xdead_beef);
        m.fill(0, 100, 0xaa).unwrap();
        assert!(m.snapshot().iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn anonymous_file_mapping_round_trip() {
        // A memfd stands in for /dev/uioN: same mmap path, same Drop.
        let f = tempfile::tempfile().unwrap();
        f.set_len(8192).unwrap();
        use std::os::fd::AsFd;
        let m = UioMapping::map(f.as_fd(), 8192).unwrap();
        m.write_u64(8184, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(m.read_u64(8184).unwrap(), 0x0102_0304_0506_0708);
        assert!(m.read_u64(8185).is_err());
        drop(m);
        assert!(UioMapping::map(f.as_fd(), 0).is_err());
    }

    proptest! {
        /// The word accessors (one atomic when aligned, bytes otherwise) read and write
        /// the same little-endian bytes as the byte-wise copy, at every alignment.
        #[test]
        fn words_match_their_little_endian_bytes(off in 0usize..24, v in any::<u64>()) {
            let m = HeapMemory::new(32);
            m.write_u64(off, v).unwrap();
            let mut b = [0u8; 8];
            m.read(off, &mut b).unwrap();
            prop_assert_eq!(b, v.to_le_bytes());
            prop_assert_eq!(m.read_u64(off).unwrap(), v);
            prop_assert_eq!(m.read_u32(off).unwrap(), v as u32);
            prop_assert_eq!(m.read_u16(off + 6).unwrap(), (v >> 48) as u16);
            prop_assert_eq!(m.read_u8(off + 7).unwrap(), (v >> 56) as u8);
            m.write_u32(off + 1, v as u32).unwrap();
            m.write_u16(off, (v >> 16) as u16).unwrap();
            m.write_u8(off + 7, 0x5a).unwrap();
            m.read(off, &mut b).unwrap();
            let w = (v as u32).to_le_bytes();
            let h = ((v >> 16) as u16).to_le_bytes();
            prop_assert_eq!(b, [h[0], h[1], w[1], w[2], w[3], v.to_le_bytes()[5], v.to_le_bytes()[6], 0x5a]);
            // The last whole word is in bounds, one byte further is not.
            prop_assert!(m.read_u64(24).is_ok() && m.read_u64(25).is_err());
            prop_assert!(m.write_u32(29, 0).is_err() && m.write_u16(usize::MAX, 0).is_err());
            prop_assert!(m.read_u8(32).is_err() && m.write_u8(31, 1).is_ok());
        }

        #[test]
        fn reads_match_writes_at_any_alignment(off in 0usize..64, data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let m = HeapMemory::new(300);
            m.write(off, &data).unwrap();
            let mut back = vec![0u8; data.len()];
            m.read(off, &mut back).unwrap();
            prop_assert_eq!(back, data);
        }
    }
}
