//! Conformance checks every [`Backstore`] engine must pass.
//!
//! Engines call [`run_all`] from their tests (`cargo test`), on a fresh store of at least
//! 1 MiB. Each check panics with a message naming the rule it found broken. The store is
//! written to, so never point these at data you want to keep.

use std::io::{IoSlice, IoSliceMut};
use std::sync::Arc;

use crate::{Backstore, ErrorKind, WriteFlags};

/// Runs every check below.
pub fn run_all<B: Backstore + ?Sized>(b: &B) {
    check_geometry(b);
    check_roundtrip_first_and_last_block(b);
    check_vectored(b);
    check_zero_length(b);
    check_beyond_end(b);
    check_fua_and_flush(b);
    check_write_zeroes(b);
    check_discard(b);
    check_block_status(b);
    check_concurrent_writers(b);
}

/// A deterministic, position-dependent pattern so misplaced data is detected.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_vec<B: Backstore + ?Sized>(b: &B, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xA5u8; len];
    b.read_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("read of {len} bytes at {offset} failed: {e}"));
    buf
}

/// Capacity is a non-zero multiple of a valid block size.
pub fn check_geometry<B: Backstore + ?Sized>(b: &B) {
    let bs = b.block_size();
    assert!(
        matches!(bs, 512 | 1024 | 2048 | 4096),
        "block size {bs} invalid"
    );
    let cap = b.capacity();
    assert!(
        cap >= 1 << 20,
        "conformance needs at least 1 MiB, got {cap}"
    );
    assert_eq!(
        cap % u64::from(bs),
        0,
        "capacity not a multiple of the block size"
    );
}

/// Data written to the first and the last block reads back unchanged.
pub fn check_roundtrip_first_and_last_block<B: Backstore + ?Sized>(b: &B) {
    let bs = b.block_size() as usize;
    let last = b.capacity() - bs as u64;
    for (seed, off) in [(1u64, 0u64), (2, last), (3, last - 3 * bs as u64)] {
        let data = pattern(seed, bs * if off == last { 1 } else { 3 });
        b.write_at(&data, off, WriteFlags::default())
            .unwrap_or_else(|e| panic!("write at {off} failed: {e}"));
        assert_eq!(
            read_vec(b, off, data.len()),
            data,
            "roundtrip at offset {off}"
        );
    }
}

/// Vectored I/O with unequal segments places every byte correctly.
pub fn check_vectored<B: Backstore + ?Sized>(b: &B) {
    let bs = b.block_size() as usize;
    let data = pattern(7, bs * 4);
    let (a, rest) = data.split_at(bs);
    let (c, d) = rest.split_at(bs * 2);
    let off = 8 * bs as u64;
    b.write_vectored_at(
        &[IoSlice::new(a), IoSlice::new(c), IoSlice::new(d)],
        off,
        WriteFlags::default(),
    )
    .expect("vectored write");
    let mut x = vec![0u8; bs * 3];
    let mut y = vec![0u8; bs];
    b.read_vectored_at(&mut [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)], off)
        .expect("vectored read");
    x.extend_from_slice(&y);
    assert_eq!(x, data, "vectored roundtrip");
}

/// Zero-length reads and writes succeed, anywhere up to and including the end.
pub fn check_zero_length<B: Backstore + ?Sized>(b: &B) {
    let cap = b.capacity();
    b.read_at(&mut [], 0).expect("zero-length read at 0");
    b.read_at(&mut [], cap).expect("zero-length read at end");
    b.write_at(&[], cap, WriteFlags::default())
        .expect("zero-length write at end");
    b.read_vectored_at(&mut [], 0).expect("empty iovec read");
}

/// Requests past the end, or whose end overflows, fail with `OutOfRange` and change nothing.
pub fn check_beyond_end<B: Backstore + ?Sized>(b: &B) {
    let bs = b.block_size() as usize;
    let cap = b.capacity();
    let last = cap - bs as u64;
    let before = read_vec(b, last, bs);
    let buf = vec![0x5Au8; bs * 2];
    let err = b
        .write_at(&buf, last, WriteFlags::default())
        .expect_err("write straddling the end must fail");
    assert_eq!(err.kind(), ErrorKind::OutOfRange, "straddling write: {err}");
    assert_eq!(
        read_vec(b, last, bs),
        before,
        "failed write changed the last block"
    );
    let mut rbuf = vec![0u8; bs];
    let err = b
        .read_at(&mut rbuf, cap)
        .expect_err("read at end must fail");
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    let err = b
        .read_at(&mut rbuf, u64::MAX - 10)
        .expect_err("overflowing read must fail");
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    if b.capabilities().discard {
        let err = b
            .discard(last, 2 * bs as u64)
            .expect_err("discard past end must fail");
        assert_eq!(err.kind(), ErrorKind::OutOfRange);
    }
    let err = b
        .write_zeroes(u64::MAX - 1, 2, false)
        .expect_err("overflowing write-zeroes must fail");
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
}

/// FUA writes and flush succeed and the data is visible.
pub fn check_fua_and_flush<B: Backstore + ?Sized>(b: &B) {
    let bs = b.block_size() as usize;
    let data = pattern(11, bs * 2);
    b.write_at(&data, 16 * bs as u64, WriteFlags::FUA)
        .expect("FUA write");
    b.flush().expect("flush");
    assert_eq!(read_vec(b, 16 * bs as u64, data.len()), data);
}

/// write_zeroes zeroes exactly its range, with and without permission to unmap.
pub fn check_write_zeroes<B: Backstore + ?Sized>(b: &B) {
    let bs = b.block_size() as usize;
    for may_unmap in [false, true] {
        let off = 32 * bs as u64;
        let data = pattern(13, bs * 4);
        b.write_at(&data, off, WriteFlags::default()).unwrap();
        b.write_zeroes(off + bs as u64, 2 * bs as u64, may_unmap)
            .expect("write zeroes");
        let got = read_vec(b, off, data.len());
        assert_eq!(
            &got[..bs],
            &data[..bs],
            "write_zeroes touched the block before"
        );
        assert!(
            got[bs..3 * bs].iter().all(|&x| x == 0),
            "range not zeroed (may_unmap={may_unmap})"
        );
        assert_eq!(
            &got[3 * bs..],
            &data[3 * bs..],
            "write_zeroes touched the block after"
        );
    }
}

/// Discard leaves neighbours alone and, where LBPRZ is claimed, reads back zeros.
pub fn check_discard<B: Backstore + ?Sized>(b: &B) {
    let caps = b.capabilities();
    if !caps.discard {
        return;
    }
    let bs = b.block_size() as usize;
    let off = 1 << 19; // well inside, chunk-aligned for every engine
    let data = pattern(17, bs * 3);
    b.write_at(&data, off - bs as u64, WriteFlags::default())
        .unwrap();
    b.discard(off, bs as u64).expect("discard");
    let got = read_vec(b, off - bs as u64, data.len());
    assert_eq!(&got[..bs], &data[..bs], "discard touched the block before");
    assert_eq!(
        &got[2 * bs..],
        &data[2 * bs..],
        "discard touched the block after"
    );
    if caps.discard_zeroes {
        assert!(
            got[bs..2 * bs].iter().all(|&x| x == 0),
            "LBPRZ claimed but discarded block is not zero"
        );
    }
}

/// Block status covers the requested start and never reports past the end.
pub fn check_block_status<B: Backstore + ?Sized>(b: &B) {
    let cap = b.capacity();
    let bs = u64::from(b.block_size());
    let ext = b.block_status(0, cap).expect("block status");
    assert!(!ext.is_empty(), "block status returned no extent");
    assert_eq!(
        ext[0].offset, 0,
        "first extent must start at the requested offset"
    );
    let mut pos = 0;
    for e in &ext {
        assert_eq!(e.offset, pos, "extents must be contiguous");
        assert!(e.len > 0, "empty extent");
        pos += e.len;
    }
    assert!(pos <= cap, "extents past the end");
    assert!(
        b.block_status(cap - bs, 2 * bs).is_err(),
        "status past end must fail"
    );
}

/// Four threads writing disjoint regions concurrently all land intact.
pub fn check_concurrent_writers<B: Backstore + ?Sized>(b: &B) {
    let bs = b.block_size() as usize;
    let region = 8 * bs;
    let base = 64 * bs as u64;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                for i in 0..16u64 {
                    let data = pattern(100 + t * 16 + i, region);
                    let off = base + (t * 16 + i) * region as u64;
                    b.write_at(&data, off, WriteFlags::default())
                        .expect("concurrent write");
                }
            });
        }
    });
    for t in 0..4u64 {
        for i in 0..16u64 {
            let off = base + (t * 16 + i) * region as u64;
            assert_eq!(
                read_vec(b, off, region),
                pattern(100 + t * 16 + i, region),
                "thread {t} write {i}"
            );
        }
    }
}

/// Convenience for engines that hand out `Arc<dyn Backstore>`.
pub fn run_all_dyn(b: Arc<dyn Backstore>) {
    run_all(&*b);
}
