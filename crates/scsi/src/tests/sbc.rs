use std::sync::Arc;

use rustio_backstore::{Backstore, RamBackstore};

use super::*;
use crate::sense::FieldPointer;

fn ram() -> Arc<RamBackstore> {
    Arc::new(RamBackstore::new(BLOCKS * u64::from(BS), BS).unwrap())
}

#[test]
fn read_capacity_10_and_16() {
    let h = H::new();
    let d = h.good(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(d, [0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);
    let d = h.good(&cdb16(0x9e, 0x10, 0, 32), &[]);
    assert_eq!(d.len(), 32);
    assert_eq!(&d[0..8], &(BLOCKS - 1).to_be_bytes());
    assert_eq!(&d[8..12], &BS.to_be_bytes());
    assert_eq!(d[12], 0, "no protection");
    assert_eq!(d[13], 0, "LBPPBE 0");
    assert_eq!(d[14], 0xc0, "LBPME + LBPRZ");
    // Allocation length truncates, zero is fine.
    assert_eq!(h.good(&cdb16(0x9e, 0x10, 0, 12), &[]).len(), 12);
    assert!(h.good(&cdb16(0x9e, 0x10, 0, 0), &[]).is_empty());
}

#[test]
fn read_capacity_10_saturates_for_huge_lu() {
    let big = 0x1_0000_0001u64 * 512;
    let h = H::with_backstore(
        Arc::new(RamBackstore::nullio(big, 512).unwrap()),
        LuConfig::new("b", "s"),
    );
    let d = h.good(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(&d[0..4], &[0xff; 4]);
    let d = h.good(&cdb16(0x9e, 0x10, 0, 32), &[]);
    assert_eq!(&d[0..8], &0x1_0000_0000u64.to_be_bytes());
}

#[test]
fn read_capacity_10_lba_without_pmi_is_invalid() {
    let h = H::new();
    assert_invalid_cdb(h.check(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[]), 2, None);
}

#[test]
fn write_then_read_all_sizes() {
    let h = H::new();
    let data = pattern(4 * BS as usize, 3);
    h.good(&cdb10(0x2a, 0, 10, 4), &data);
    assert_eq!(h.good(&cdb10(0x28, 0, 10, 4), &[]), data);
    assert_eq!(h.good(&cdb12(0xa8, 0, 10, 4), &[]), data);
    assert_eq!(h.good(&cdb16(0x88, 0, 10, 4), &[]), data);
    assert_eq!(h.good(&[0x08, 0, 0, 10, 4, 0], &[]), data);
    let d2 = pattern(BS as usize, 9);
    h.good(&cdb12(0xaa, 0, 100, 1), &d2);
    h.good(&cdb16(0x8a, 0x08, 101, 1), &d2);
    h.good(&[0x0a, 0, 0, 102, 1, 0], &d2);
    assert_eq!(
        h.good(&cdb16(0x88, 0, 100, 3), &[]),
        [d2.clone(), d2.clone(), d2].concat()
    );
}

#[test]
fn read6_zero_length_means_256_blocks() {
    let h = H::new();
    assert_eq!(h.good(&[0x08, 0, 0, 0, 0, 0], &[]).len(), 256 * BS as usize);
}

#[test]
fn zero_length_transfers_are_good_without_data() {
    let h = H::new();
    assert!(h.good(&cdb10(0x28, 0, 0, 0), &[]).is_empty());
    assert!(h.good(&cdb10(0x2a, 0, 0, 0), &[]).is_empty());
    assert!(h.good(&cdb16(0x88, 0, BLOCKS, 0), &[]).is_empty());
}

#[test]
fn lba_out_of_range() {
    let h = H::new();
    for (lba, n) in [
        (BLOCKS, 1u16),
        (BLOCKS - 1, 2),
        (BLOCKS + 1, 0),
        (0xffff_ffff, 1),
    ] {
        let s = h.check(&cdb10(0x28, 0, lba as u32, n), &[]);
        assert_sense(s, SenseKey::IllegalRequest, 0x21, 0x00);
        let s = h.check(
            &cdb10(0x2a, 0, lba as u32, n),
            &vec![0; usize::from(n) * 512],
        );
        assert_sense(s, SenseKey::IllegalRequest, 0x21, 0x00);
    }
    // LBA + length overflowing 64 bits.
    let s = h.check(&cdb16(0x88, 0, u64::MAX, 2), &[]);
    assert_sense(s, SenseKey::IllegalRequest, 0x21, 0x00);
    let s = h.check(&cdb16(0x88, 0, 0x8000_0000_0000_0000, 1), &[]);
    assert_sense(s, SenseKey::IllegalRequest, 0x21, 0x00);
}

#[test]
fn transfer_length_above_maximum_is_invalid_field() {
    let h = H::with(LuConfig::new("t", "s").with_max_transfer_blocks(16));
    assert_invalid_cdb(h.check(&cdb10(0x28, 0, 0, 17), &[]), 7, None);
    assert_invalid_cdb(h.check(&cdb16(0x88, 0, 0, 17), &[]), 10, None);
    assert_invalid_cdb(h.check(&cdb12(0xa8, 0, 0, 17), &[]), 6, None);
    assert_invalid_cdb(h.check(&cdb10(0x2a, 0, 0, 17), &vec![0; 17 * 512]), 7, None);
    h.good(&cdb10(0x28, 0, 0, 16), &[]);
}

#[test]
fn protection_fields_are_rejected() {
    let h = H::new();
    for op in [0x28u8, 0x2a, 0x2f, 0x2e] {
        for p in 1..8u8 {
            let s = h.check(&cdb10(op, p << 5, 0, 1), &[0; 512]);
            assert_invalid_cdb(s, 1, Some(7));
        }
    }
}

#[test]
fn short_data_out_is_invalid_field_in_information_unit() {
    let h = H::new();
    h.good(&cdb10(0x2a, 0, 0, 1), &[0x61; 512]);
    let s = h.check(&cdb10(0x2a, 0, 0, 1), &[0x62; 200]);
    assert_sense(s, SenseKey::IllegalRequest, 0x0e, 0x03);
    // Nothing was written.
    assert_eq!(h.good(&cdb10(0x28, 0, 0, 1), &[]), vec![0x61; 512]);
    // Extra data-out beyond the transfer length is ignored.
    h.good(&cdb10(0x2a, 0, 0, 1), &[0x63; 1000]);
    assert_eq!(h.good(&cdb10(0x28, 0, 0, 1), &[]), vec![0x63; 512]);
}

#[test]
fn write_protect_sources() {
    let h = H::with(LuConfig::new("t", "s").with_read_only(true));
    let s = h.check(&cdb10(0x2a, 0, 0, 1), &[0; 512]);
    assert_sense(s, SenseKey::DataProtect, 0x27, 0x00);
    h.good(&cdb10(0x28, 0, 0, 1), &[]);
    // ACL write protect.
    let mut h = H::new();
    h.wp = true;
    for cdb in [cdb16(0x93, 0, 0, 1).to_vec(), cdb10(0x42, 0, 0, 0).to_vec()] {
        assert_sense(h.check(&cdb, &[0; 512]), SenseKey::DataProtect, 0x27, 0x00);
    }
    // Read-only backstore.
    let b = Arc::new(
        RamBackstore::new(BLOCKS * 512, 512)
            .unwrap()
            .with_read_only(true),
    );
    let h = H::with_backstore(b, LuConfig::new("t", "s"));
    assert_sense(
        h.check(&cdb10(0x2a, 0, 0, 1), &[0; 512]),
        SenseKey::DataProtect,
        0x27,
        0x00,
    );
}

#[test]
fn write_through_when_wce_is_off() {
    // Observable through the FUA flag the backstore receives.
    #[derive(Debug)]
    struct Spy(RamBackstore, std::sync::Mutex<Vec<bool>>);
    impl Backstore for Spy {
        fn block_size(&self) -> u32 {
            self.0.block_size()
        }
        fn capacity(&self) -> u64 {
            self.0.capacity()
        }
        fn capabilities(&self) -> rustio_backstore::Capabilities {
            self.0.capabilities()
        }
        fn read_vectored_at(
            &self,
            b: &mut [std::io::IoSliceMut<'_>],
            o: u64,
        ) -> rustio_backstore::Result<()> {
            self.0.read_vectored_at(b, o)
        }
        fn write_vectored_at(
            &self,
            b: &[std::io::IoSlice<'_>],
            o: u64,
            f: rustio_backstore::WriteFlags,
        ) -> rustio_backstore::Result<()> {
            self.1.lock().unwrap().push(f.fua);
            self.0.write_vectored_at(b, o, f)
        }
        fn flush(&self) -> rustio_backstore::Result<()> {
            Ok(())
        }
    }
    let spy = Arc::new(Spy(
        RamBackstore::new(BLOCKS * 512, 512).unwrap(),
        Default::default(),
    ));
    let h = H::with_backstore(spy.clone(), LuConfig::new("t", "s").with_write_cache(false));
    h.good(&cdb10(0x2a, 0, 0, 1), &[1; 512]);
    let h2 = H::with_backstore(
        spy.clone(),
        LuConfig::new("t2", "s2").with_write_cache(true),
    );
    h2.good(&cdb10(0x2a, 0, 0, 1), &[1; 512]);
    h2.good(&cdb10(0x2a, 0x08, 0, 1), &[1; 512]);
    // WRITE AND VERIFY is always written through.
    h2.good(&cdb10(0x2e, 0, 0, 1), &[1; 512]);
    assert_eq!(*spy.1.lock().unwrap(), vec![true, false, true, true]);
}

#[test]
fn backstore_errors_map_to_sense() {
    #[derive(Debug)]
    struct Broken(i32);
    impl Backstore for Broken {
        fn block_size(&self) -> u32 {
            512
        }
        fn capacity(&self) -> u64 {
            1 << 20
        }
        fn capabilities(&self) -> rustio_backstore::Capabilities {
            rustio_backstore::Capabilities::default()
        }
        fn read_vectored_at(
            &self,
            _: &mut [std::io::IoSliceMut<'_>],
            o: u64,
        ) -> rustio_backstore::Result<()> {
            Err(rustio_backstore::Error::Io {
                op: "read",
                path: "/dev/x".into(),
                offset: o,
                source: std::io::Error::from_raw_os_error(self.0),
            })
        }
        fn write_vectored_at(
            &self,
            _: &[std::io::IoSlice<'_>],
            o: u64,
            _: rustio_backstore::WriteFlags,
        ) -> rustio_backstore::Result<()> {
            Err(rustio_backstore::Error::Io {
                op: "write",
                path: "/dev/x".into(),
                offset: o,
                source: std::io::Error::from_raw_os_error(self.0),
            })
        }
        fn flush(&self) -> rustio_backstore::Result<()> {
            Ok(())
        }
    }
    let eio = H::with_backstore(Arc::new(Broken(5)), LuConfig::new("t", "s"));
    assert_sense(
        eio.check(&cdb10(0x28, 0, 0, 1), &[]),
        SenseKey::MediumError,
        0x11,
        0x00,
    );
    assert_sense(
        eio.check(&cdb10(0x2a, 0, 0, 1), &[0; 512]),
        SenseKey::MediumError,
        0x0c,
        0x00,
    );
    let nospc = H::with_backstore(Arc::new(Broken(28)), LuConfig::new("t", "s"));
    assert_sense(
        nospc.check(&cdb10(0x2a, 0, 0, 1), &[0; 512]),
        SenseKey::DataProtect,
        0x27,
        0x07,
    );
    let other = H::with_backstore(Arc::new(Broken(22)), LuConfig::new("t", "s"));
    assert_sense(
        other.check(&cdb10(0x28, 0, 0, 1), &[]),
        SenseKey::HardwareError,
        0x44,
        0x00,
    );
    let busy = H::with_backstore(Arc::new(Broken(16)), LuConfig::new("t", "s"));
    let (r, d) = busy.run(&cdb10(0x28, 0, 0, 1), &[]);
    assert_eq!(r, Response::status(Status::Busy));
    assert!(d.is_empty());
}

#[test]
fn verify_bytchk_modes() {
    let h = H::new();
    let data = pattern(3 * 512, 1);
    h.good(&cdb10(0x2a, 0, 5, 3), &data);
    // BYTCHK 00b: medium verification only.
    h.good(&cdb10(0x2f, 0, 5, 3), &[]);
    // BYTCHK 01b: compare.
    h.good(&cdb10(0x2f, 0x02, 5, 3), &data);
    let mut bad = data.clone();
    bad[700] ^= 0xff;
    let s = h.check(&cdb12(0xaf, 0x02, 5, 3), &bad);
    assert_sense(s, SenseKey::Miscompare, 0x1d, 0x00);
    assert_eq!(s.information, Some(700));
    assert_eq!(s.to_fixed()[0] & 0x80, 0x80, "VALID");
    // BYTCHK 11b: one block compared with every block.
    let same = vec![0x5a; 512];
    h.good(&cdb16(0x93, 0, 20, 4), &same);
    h.good(&cdb16(0x8f, 0x06, 20, 4), &same);
    let s = h.check(&cdb16(0x8f, 0x06, 19, 4), &same);
    assert_sense(s, SenseKey::Miscompare, 0x1d, 0x00);
    assert_eq!(s.information, Some(0));
    // Zero blocks: nothing to verify; out of range LBA still checked.
    h.good(&cdb10(0x2f, 0x02, 0, 0), &[]);
    assert_sense(
        h.check(&cdb10(0x2f, 0x02, BLOCKS as u32 + 1, 0), &[]),
        SenseKey::IllegalRequest,
        0x21,
        0,
    );
}

#[test]
fn write_and_verify() {
    let h = H::new();
    let data = pattern(1024, 7);
    h.good(&cdb10(0x2e, 0x02, 8, 2), &data);
    h.good(&cdb12(0xae, 0, 8, 2), &data);
    h.good(&cdb16(0x8e, 0x02, 8, 2), &data);
    assert_eq!(h.good(&cdb10(0x28, 0, 8, 2), &[]), data);
    // BYTCHK 10b / 11b are reserved for WRITE AND VERIFY.
    assert_invalid_cdb(h.check(&cdb10(0x2e, 0x04, 8, 1), &data[..512]), 1, Some(2));
}

#[test]
fn synchronize_cache_and_prefetch() {
    let h = H::new();
    h.good(&cdb10(0x35, 0, 0, 0), &[]);
    h.good(&cdb16(0x91, 0x02, BLOCKS - 1, 1), &[]);
    assert_sense(
        h.check(&cdb10(0x35, 0, BLOCKS as u32, 1), &[]),
        SenseKey::IllegalRequest,
        0x21,
        0,
    );
    let (r, d) = h.run(&cdb10(0x34, 0, 0, 8), &[]);
    assert_eq!(r, Response::status(Status::ConditionMet));
    assert!(d.is_empty());
    let (r, _) = h.run(&cdb16(0x90, 0x02, 0, 0), &[]);
    assert_eq!(r.status, Status::ConditionMet);
    assert_sense(
        h.check(&cdb16(0x90, 0, BLOCKS - 1, 2), &[]),
        SenseKey::IllegalRequest,
        0x21,
        0,
    );
}

fn unmap_list(descs: &[(u64, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&((6 + 16 * descs.len()) as u16).to_be_bytes());
    p.extend_from_slice(&((16 * descs.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    for &(lba, n) in descs {
        p.extend_from_slice(&lba.to_be_bytes());
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    p
}

fn unmap_cdb(len: usize) -> [u8; 10] {
    cdb10(0x42, 0, 0, len as u16)
}

#[test]
fn unmap_deallocates_and_reads_zero() {
    let b = ram();
    let h = H::with_backstore(b.clone(), LuConfig::new("t", "s"));
    h.good(&cdb10(0x2a, 0, 0, 256), &vec![0x61; 256 * 512]);
    let p = unmap_list(&[(0, 128), (200, 56)]);
    h.good(&unmap_cdb(p.len()), &p);
    let d = h.good(&cdb10(0x28, 0, 0, 256), &[]);
    assert!(d[..128 * 512].iter().all(|&b| b == 0));
    assert!(d[128 * 512..200 * 512].iter().all(|&b| b == 0x61));
    assert!(d[200 * 512..].iter().all(|&b| b == 0));
}

#[test]
fn unmap_parameter_validation() {
    let mut c = LuConfig::new("t", "s");
    c.max_unmap_blocks = 100;
    c.max_unmap_descriptors = 2;
    let h = H::with(c);
    // Zero parameter list length: nothing to do.
    h.good(&unmap_cdb(0), &[]);
    // Header only / zero-block descriptor at the end of the medium.
    let p = unmap_list(&[]);
    h.good(&unmap_cdb(p.len()), &p);
    let p = unmap_list(&[(BLOCKS, 0)]);
    h.good(&unmap_cdb(p.len()), &p);
    // Shorter than the header.
    assert_sense(
        h.check(&unmap_cdb(6), &[0; 6]),
        SenseKey::IllegalRequest,
        0x1a,
        0x00,
    );
    // Out of range.
    let p = unmap_list(&[(BLOCKS - 1, 2)]);
    assert_sense(
        h.check(&unmap_cdb(p.len()), &p),
        SenseKey::IllegalRequest,
        0x21,
        0x00,
    );
    // Too many blocks in total.
    let p = unmap_list(&[(0, 60), (100, 41)]);
    let s = h.check(&unmap_cdb(p.len()), &p);
    assert_sense(s, SenseKey::IllegalRequest, 0x26, 0x00);
    assert_eq!(
        s.field_pointer,
        Some(FieldPointer {
            cdb_or_data: false,
            byte: 32,
            bit: None
        })
    );
    // Too many descriptors.
    let p = unmap_list(&[(0, 1), (1, 1), (2, 1)]);
    assert_sense(
        h.check(&unmap_cdb(p.len()), &p),
        SenseKey::IllegalRequest,
        0x26,
        0x00,
    );
    // ANCHOR is not supported.
    assert_invalid_cdb(h.check(&cdb10(0x42, 1, 0, 0), &[]), 1, Some(0));
}

#[test]
fn unmap_not_supported_without_discard() {
    let h = H::with_backstore(
        Arc::new(RamBackstore::nullio(BLOCKS * 512, 512).unwrap()),
        LuConfig::new("t", "s"),
    );
    let p = unmap_list(&[(0, 1)]);
    let s = h.check(&unmap_cdb(p.len()), &p);
    assert_sense(s, SenseKey::IllegalRequest, 0x20, 0x00);
    // WRITE SAME with UNMAP = 1 is refused too (LBPWS = 0).
    assert_invalid_cdb(h.check(&cdb16(0x93, 0x08, 0, 1), &[0; 512]), 1, Some(3));
}

#[test]
fn write_same_pattern_and_zero_length_to_end() {
    let h = H::new();
    let blk = pattern(512, 4);
    h.good(&cdb10(0x41, 0, 10, 5), &blk);
    assert_eq!(h.good(&cdb10(0x28, 0, 10, 5), &[]), blk.repeat(5));
    // Zero blocks: to the end of the medium.
    h.good(&cdb16(0x93, 0, BLOCKS - 3, 0), &blk);
    assert_eq!(h.good(&cdb16(0x88, 0, BLOCKS - 3, 3), &[]), blk.repeat(3));
    // NDOB writes zeros without a data-out buffer.
    h.good(&cdb16(0x93, 0x01, 10, 2), &[]);
    assert_eq!(
        h.good(&cdb10(0x28, 0, 10, 3), &[]),
        [vec![0; 1024], blk.clone()].concat()
    );
    // UNMAP deallocates (reads back zero, LBPRZ), whatever the data-out block holds.
    h.good(&cdb10(0x41, 0x08, 12, 3), &[0; 512]);
    assert_eq!(h.good(&cdb10(0x28, 0, 12, 3), &[]), vec![0; 1536]);
    h.good(&cdb10(0x2a, 0, 12, 3), &vec![0xff; 1536]);
    h.good(&cdb10(0x41, 0x08, 12, 0), &[0xff; 512]);
    assert!(h.good(&cdb10(0x28, 0, 12, 3), &[]).iter().all(|&b| b == 0));
    assert!(h
        .good(&cdb10(0x28, 0, (BLOCKS - 1) as u32, 1), &[])
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn write_same_errors() {
    let mut c = LuConfig::new("t", "s");
    c.max_write_same_blocks = 1000;
    let h = H::with(c);
    let blk = vec![1u8; 512];
    // ANCHOR without support, with or without UNMAP.
    assert_invalid_cdb(h.check(&cdb16(0x93, 0x10, 0, 1), &blk), 1, Some(4));
    assert_invalid_cdb(h.check(&cdb16(0x93, 0x18, 0, 1), &blk), 1, Some(4));
    // PBDATA / LBDATA are not supported.
    assert_invalid_cdb(h.check(&cdb10(0x41, 0x04, 0, 1), &blk), 1, Some(2));
    assert_invalid_cdb(h.check(&cdb10(0x41, 0x02, 0, 1), &blk), 1, Some(1));
    // Above MAXIMUM WRITE SAME LENGTH, explicitly or via 0 = to the end.
    assert_invalid_cdb(h.check(&cdb16(0x93, 0, 0, 1001), &blk), 10, None);
    assert_invalid_cdb(h.check(&cdb10(0x41, 0, 0, 0), &blk), 7, None);
    h.good(&cdb10(0x41, 0, (BLOCKS - 1000) as u32, 0), &blk);
    // Out of range.
    assert_sense(
        h.check(&cdb10(0x41, 0, BLOCKS as u32 + 1, 0), &blk),
        SenseKey::IllegalRequest,
        0x21,
        0,
    );
    assert_sense(
        h.check(&cdb16(0x93, 0, u64::MAX, 1), &blk),
        SenseKey::IllegalRequest,
        0x21,
        0,
    );
    // Wrong data-out size.
    assert_sense(
        h.check(&cdb10(0x41, 0x08, 0, 1), &blk[..256]),
        SenseKey::IllegalRequest,
        0x0e,
        0x03,
    );
    assert_sense(
        h.check(&cdb10(0x41, 0x08, 0, 1), &[0; 1024]),
        SenseKey::IllegalRequest,
        0x0e,
        0x03,
    );
}

#[test]
fn compare_and_write() {
    let mut c = LuConfig::new("t", "s");
    c.max_compare_write_blocks = 2;
    let h = H::with(c);
    h.good(&cdb10(0x2a, 0, 4, 2), &vec![b'A'; 1024]);
    let caw = |lba: u64, n: u8| {
        let mut c = [0u8; 16];
        c[0] = 0x89;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[13] = n;
        c
    };
    // Match: written.
    let mut buf = vec![b'A'; 1024];
    buf.extend(vec![b'B'; 1024]);
    h.good(&caw(4, 2), &buf);
    assert_eq!(h.good(&cdb10(0x28, 0, 4, 2), &[]), vec![b'B'; 1024]);
    // Miscompare at offset 600: INFORMATION = 600, VALID, nothing written.
    let mut buf = vec![b'B'; 1024];
    buf[600] = b'Z';
    buf.extend(vec![b'C'; 1024]);
    let s = h.check(&caw(4, 2), &buf);
    assert_sense(s, SenseKey::Miscompare, 0x1d, 0x00);
    assert_eq!(s.information, Some(600));
    assert_eq!(h.good(&cdb10(0x28, 0, 4, 2), &[]), vec![b'B'; 1024]);
    // Limits.
    assert_invalid_cdb(h.check(&caw(0, 3), &vec![0; 3 * 1024]), 13, None);
    assert_sense(
        h.check(&caw(BLOCKS - 1, 2), &vec![0; 2048]),
        SenseKey::IllegalRequest,
        0x21,
        0,
    );
    assert_sense(
        h.check(&caw(0, 1), &vec![0; 2048]),
        SenseKey::IllegalRequest,
        0x0e,
        0x03,
    );
    h.good(&caw(0, 0), &[]);
    // Zero blocks with data (libiscsi stores 256 in the one-byte field): rejected.
    assert_invalid_cdb(h.check(&caw(0, 0), &vec![0; 512 * 1024]), 13, None);
}

#[test]
fn compare_and_write_is_atomic_against_writers() {
    let h = Arc::new(H::new());
    h.good(&cdb10(0x2a, 0, 0, 1), &vec![0u8; 512]);
    // Many threads increment a counter in block 0 with CAW; concurrent plain writes go
    // elsewhere in the same stripe. Every successful CAW must see the previous value.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..200 {
                    let cur = h.good(&cdb10(0x28, 0, 0, 1), &[]);
                    let v = u64::from_be_bytes(cur[..8].try_into().unwrap());
                    let mut next = cur.clone();
                    next[..8].copy_from_slice(&(v + 1).to_be_bytes());
                    let mut cdb = [0u8; 16];
                    cdb[0] = 0x89;
                    cdb[13] = 1;
                    let (r, _) = h.run(&cdb, &[cur, next].concat());
                    if r.status == Status::Good {
                        ok += 1;
                    }
                    h.good(&cdb10(0x2a, 0, 1 + t, 1), &[t as u8; 512]);
                }
                ok
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let cur = h.good(&cdb10(0x28, 0, 0, 1), &[]);
    assert_eq!(u64::from_be_bytes(cur[..8].try_into().unwrap()), total);
}

#[test]
fn get_lba_status_reports_mapping() {
    let h = H::new();
    // Fresh RAM: deallocated. Write 1 chunk (64 KiB = 128 blocks) at 128.
    h.good(&cdb10(0x2a, 0, 128, 128), &vec![1; 128 * 512]);
    let d = h.good(&cdb16(0x9e, 0x12, 0, 1024), &[]);
    let n = (u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize - 4) / 16;
    assert!(n >= 3);
    let desc = |i: usize| {
        let e = &d[8 + 16 * i..24 + 16 * i];
        (
            u64::from_be_bytes(e[0..8].try_into().unwrap()),
            u32::from_be_bytes(e[8..12].try_into().unwrap()),
            e[12],
        )
    };
    assert_eq!(desc(0), (0, 128, 1));
    assert_eq!(desc(1), (128, 128, 0));
    assert_eq!(desc(2).0, 256);
    assert_eq!(desc(2).2, 1);
    // Starting inside a mapped extent: the first descriptor starts at the LBA.
    let d = h.good(&cdb16(0x9e, 0x12, 130, 24), &[]);
    assert_eq!(d.len(), 24);
    assert_eq!(&d[8..16], &130u64.to_be_bytes());
    assert_eq!(&d[16..20], &126u32.to_be_bytes());
    assert_eq!(d[20], 0);
    // Beyond the end.
    assert_sense(
        h.check(&cdb16(0x9e, 0x12, BLOCKS, 24), &[]),
        SenseKey::IllegalRequest,
        0x21,
        0,
    );
    assert_sense(
        h.check(&cdb16(0x9e, 0x12, u64::MAX, 24), &[]),
        SenseKey::IllegalRequest,
        0x21,
        0,
    );
}

#[test]
fn format_unit() {
    let h = H::new();
    h.good(&[0x04, 0, 0, 0, 0, 0], &[]);
    h.good(&[0x04, 0x10, 0, 0, 0, 0], &[0, 0, 0, 0]);
    assert_invalid_cdb(h.check(&[0x04, 0x40, 0, 0, 0, 0], &[]), 1, Some(7));
    let s = h.check(&[0x04, 0x10, 0, 0, 0, 0], &[0, 0x08, 0, 0]);
    assert_sense(s, SenseKey::IllegalRequest, 0x26, 0x00);
    assert_sense(
        h.check(&[0x04, 0x10, 0, 0, 0, 0], &[0, 0]),
        SenseKey::IllegalRequest,
        0x1a,
        0x00,
    );
}

#[test]
fn capacity_change_raises_unit_attention_for_everyone() {
    let b = ram();
    let h = H::with_backstore(b.clone(), LuConfig::new("t", "s"));
    let n2 = nexus(2);
    h.clear_ua(&n2);
    b.resize(4096 * 512).unwrap();
    assert_eq!(
        check_of(h.run(&[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_CAPACITY_DATA_CHANGED
    );
    assert_eq!(
        check_of(h.run_as(&n2, &[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_CAPACITY_DATA_CHANGED
    );
    let d = h.good(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(&d[0..4], &4095u32.to_be_bytes());
    // Explicit notification.
    h.lu.capacity_changed();
    assert_eq!(
        check_of(h.run(&[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_CAPACITY_DATA_CHANGED
    );
}

/// Runs `cdb` with `direct` lent as zero-copy data-in buffers.
fn run_direct(h: &H, cdb: &[u8], direct: &mut crate::DirectIn<'_, '_>) -> (Response, Vec<u8>) {
    let mut data_in = vec![0xee; 3];
    let req = Request {
        nexus: &h.n,
        cdb,
        data_out: &[],
        task_tag: 7,
        task_attr: TaskAttr::Simple,
        write_protected: false,
        luns: &h.map,
    };
    let r = h.lu.execute_direct(&req, &mut data_in, Some(direct));
    super::check_well_formed(&r, &data_in);
    (r, data_in)
}

#[test]
fn direct_read_fills_the_lent_buffers_in_order() {
    use std::io::IoSliceMut;
    let h = H::new();
    let data = pattern(3 * BS as usize, 5);
    h.good(&cdb10(0x2a, 0, 20, 3), &data);
    // Split unevenly across three buffers, as TCMU data blocks or iovecs would be.
    let (mut a, mut b, mut c) = (vec![0u8; 100], vec![0u8; 1000], vec![0u8; 436]);
    let mut bufs = [
        IoSliceMut::new(&mut a),
        IoSliceMut::new(&mut b),
        IoSliceMut::new(&mut c),
    ];
    let mut d = crate::DirectIn::new(&mut bufs);
    let (r, staged) = run_direct(&h, &cdb10(0x28, 0, 20, 3), &mut d);
    assert_eq!(r, Response::GOOD);
    assert!(d.used());
    assert!(staged.is_empty());
    assert_eq!([a, b, c].concat(), data);
}

#[test]
fn direct_read_of_another_length_is_staged() {
    use std::io::IoSliceMut;
    let h = H::new();
    let data = pattern(2 * BS as usize, 6);
    h.good(&cdb10(0x2a, 0, 30, 2), &data);
    let mut buf = vec![0u8; 3 * BS as usize];
    let mut bufs = [IoSliceMut::new(&mut buf)];
    let mut d = crate::DirectIn::new(&mut bufs);
    let (r, staged) = run_direct(&h, &cdb10(0x28, 0, 30, 2), &mut d);
    assert_eq!(r, Response::GOOD);
    assert!(!d.used());
    assert_eq!(staged, data);
    // Non-READ data-in (INQUIRY) always goes to the staging buffer.
    let (r, staged) = run_direct(&h, &[0x12, 0, 0, 0, 36, 0], &mut d);
    assert_eq!(r, Response::GOOD);
    assert!(!d.used());
    assert_eq!(staged.len(), 36);
    assert!(buf.iter().all(|&x| x == 0));
}

#[test]
fn failed_direct_read_is_not_reported_as_used() {
    use std::io::IoSliceMut;
    let h = H::new();
    let mut buf = vec![0u8; BS as usize];
    let mut bufs = [IoSliceMut::new(&mut buf)];
    let mut d = crate::DirectIn::new(&mut bufs);
    let (r, _) = run_direct(&h, &cdb10(0x28, 0, 20, 1), &mut d);
    assert_eq!(r, Response::GOOD);
    assert!(d.used());
    // Out of range: CHECK CONDITION, and a previous success does not linger.
    let (r, staged) = run_direct(&h, &cdb10(0x28, 0, BLOCKS as u32, 1), &mut d);
    assert_sense(check_of(r), SenseKey::IllegalRequest, 0x21, 0x00);
    assert!(!d.used());
    assert!(staged.is_empty());
}

#[test]
fn direct_read_of_a_plain_file_answers_with_its_range() {
    use rustio_backstore::{FileBackstore, FileOptions};
    use std::io::IoSliceMut;
    let dir = tempfile::tempdir().unwrap();
    let mut o = FileOptions::new(dir.path().join("lun.img"));
    o.size = Some(BLOCKS * u64::from(BS));
    let f: Arc<dyn Backstore> = Arc::new(FileBackstore::open(o).unwrap());
    let h = H::with_backstore(f, LuConfig::new("t", "s"));
    h.clear_ua(&h.n);
    let data = pattern(3 * BS as usize, 9);
    h.good(&cdb10(0x2a, 0, 40, 3), &data);
    let mut buf = vec![0u8; 3 * BS as usize];
    let mut bufs = [IoSliceMut::new(&mut buf)];
    let mut d = crate::DirectIn::new(&mut bufs);
    // Without the transport's consent, the buffers are filled as before.
    let (r, _) = run_direct(&h, &cdb10(0x28, 0, 40, 3), &mut d);
    assert_eq!(r, Response::GOOD);
    assert!(d.used() && d.file_range().is_none());
    d.accept_file_range();
    let (r, staged) = run_direct(&h, &cdb10(0x28, 0, 40, 3), &mut d);
    assert_eq!(r, Response::GOOD);
    assert!(!d.used());
    assert!(staged.is_empty());
    let range = d.file_range().expect("a file range").clone();
    assert_eq!(range.offset(), 40 * u64::from(BS));
    assert_eq!(range.len(), data.len());
    let mut got = vec![0u8; data.len()];
    range.read_into(&mut got).unwrap();
    assert_eq!(got, data);
    // Another length is staged; a failed READ leaves no range behind.
    let (r, staged) = run_direct(&h, &cdb10(0x28, 0, 40, 2), &mut d);
    assert_eq!(r, Response::GOOD);
    assert!(d.file_range().is_none());
    assert_eq!(staged, data[..2 * BS as usize]);
    let (r, _) = run_direct(&h, &cdb10(0x28, 0, BLOCKS as u32, 3), &mut d);
    assert_sense(check_of(r), SenseKey::IllegalRequest, 0x21, 0x00);
    assert!(d.file_range().is_none() && !d.used());
    drop(d);
    assert!(
        buf[..BS as usize] == data[..BS as usize],
        "first READ filled it"
    );
}

#[test]
fn direct_read_of_a_ram_store_ignores_file_consent() {
    use std::io::IoSliceMut;
    let h = H::new();
    let data = pattern(BS as usize, 3);
    h.good(&cdb10(0x2a, 0, 50, 1), &data);
    let mut buf = vec![0u8; BS as usize];
    let mut bufs = [IoSliceMut::new(&mut buf)];
    let mut d = crate::DirectIn::new(&mut bufs);
    d.accept_file_range();
    let (r, _) = run_direct(&h, &cdb10(0x28, 0, 50, 1), &mut d);
    assert_eq!(r, Response::GOOD);
    assert!(d.used() && d.file_range().is_none());
    drop(d);
    assert_eq!(buf, data);
}
