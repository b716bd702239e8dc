//! Engine tests that need no external tools (the qemu interoperability tests live in
//! `tests/qcow2_*.rs`).

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::header::incompat;
use super::*;
use crate::conformance::{self, pattern};

fn opts() -> CreateOptions {
    CreateOptions::default()
}

fn create_in(
    dir: &Path,
    name: &str,
    size: u64,
    cluster_bits: u32,
    o: &CreateOptions,
) -> Qcow2Backstore {
    Qcow2Backstore::create(dir.join(name), size, cluster_bits, o).unwrap()
}

fn read_vec(b: &Qcow2Backstore, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0xEEu8; len];
    b.read_at(&mut v, off).unwrap();
    v
}

fn raw_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn be64_at(path: &Path, at: u64) -> u64 {
    let b = std::fs::read(path).unwrap();
    u64::from_be_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

#[test]
fn conformance_v3_64k() {
    let d = tempfile::tempdir().unwrap();
    let b = create_in(d.path(), "a.qcow2", 8 << 20, 16, &opts());
    conformance::run_all(&b);
}

#[test]
fn conformance_v2_4k_clusters_4k_blocks() {
    let d = tempfile::tempdir().unwrap();
    let o = CreateOptions {
        version: Version::V2,
        open: Qcow2Options {
            block_size: 4096,
            ..Qcow2Options::default()
        },
        ..opts()
    };
    let b = create_in(d.path(), "a.qcow2", 8 << 20, 12, &o);
    assert_eq!(b.version(), 2);
    conformance::run_all(&b);
}

#[test]
fn conformance_tiny_clusters_one_bit_refcounts() {
    // 512-byte clusters with 1-bit refcounts: a refcount block covers 2 MiB and the
    // initial table 128 MiB, so allocation creates blocks all the time.
    let d = tempfile::tempdir().unwrap();
    let o = CreateOptions {
        refcount_bits: 1,
        ..opts()
    };
    let b = create_in(d.path(), "a.qcow2", 4 << 20, 9, &o);
    conformance::run_all(&b);
}

#[test]
fn conformance_with_raw_backing() {
    let d = tempfile::tempdir().unwrap();
    raw_file(d.path(), "base.raw", &pattern(5, 4 << 20));
    let o = CreateOptions {
        backing_file: Some("base.raw".into()),
        ..opts()
    };
    let b = create_in(d.path(), "top.qcow2", 4 << 20, 16, &o);
    assert_eq!(b.backing_file(), Some("base.raw"));
    conformance::run_all(&b);
}

#[test]
fn conformance_on_tmpfs() {
    // tcmu-runner's qcow handler fails on tmpfs for lack of fallocate modes; we use none.
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "/dev/shm is missing");
    let d = tempfile::tempdir_in(shm).unwrap();
    let b = create_in(d.path(), "a.qcow2", 4 << 20, 12, &opts());
    conformance::run_all(&b);
}

#[test]
fn data_survives_reopen_and_read_only_refuses_writes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.qcow2");
    let b = Qcow2Backstore::create(&p, 4 << 20, 16, &opts()).unwrap();
    let data = pattern(1, 100_000);
    b.write_at(&data, 12345, WriteFlags::default()).unwrap();
    b.close().unwrap();
    let ro = Qcow2Backstore::open(&p, true).unwrap();
    assert_eq!(read_vec(&ro, 12345, data.len()), data);
    assert!(ro.capabilities().read_only);
    assert!(matches!(
        ro.write_at(&[1; 512], 0, WriteFlags::default()),
        Err(Error::ReadOnly)
    ));
    // Read-only before the range, as the other backstores: a write past the end of a
    // read-only image is refused as a write, not as out of range.
    assert!(matches!(
        ro.write_at(&[1; 512], 4 << 20, WriteFlags::default()),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(ro.discard(0, 512), Err(Error::ReadOnly)));
    assert!(matches!(ro.discard(4 << 20, 512), Err(Error::ReadOnly)));
    assert!(matches!(
        ro.write_zeroes(0, 512, true),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(ro.resize(8 << 20), Err(Error::ReadOnly)));
}

#[test]
fn backing_reads_through_and_partial_writes_copy_up() {
    let d = tempfile::tempdir().unwrap();
    let base = pattern(9, 1 << 20);
    let bp = raw_file(d.path(), "base.raw", &base);
    let o = CreateOptions {
        backing_file: Some("base.raw".into()),
        ..opts()
    };
    // The overlay is bigger than the backing file: the rest reads as zeros.
    let b = create_in(d.path(), "top.qcow2", 2 << 20, 16, &o);
    assert_eq!(read_vec(&b, 0, 1 << 20), base);
    assert!(read_vec(&b, 1 << 20, 1 << 20).iter().all(|&x| x == 0));
    b.write_at(&[0xAB; 512], 65536 + 1024, WriteFlags::default())
        .unwrap();
    let mut want = base[65536..131072].to_vec();
    want[1024..1536].fill(0xAB);
    assert_eq!(read_vec(&b, 65536, 65536), want);
    b.close().unwrap();
    assert_eq!(std::fs::read(&bp).unwrap(), base, "backing file untouched");
    let b = Qcow2Backstore::open(d.path().join("top.qcow2"), true).unwrap();
    assert_eq!(read_vec(&b, 65536, 65536), want);
    let ext = b.block_status(0, 2 << 20).unwrap();
    assert!(
        ext.iter().all(|e| e.mapped == (e.offset < 1 << 20)),
        "{ext:?}"
    );
}

#[test]
fn qcow2_backing_chain_and_discard_makes_zero_clusters() {
    let d = tempfile::tempdir().unwrap();
    let base = create_in(d.path(), "base.qcow2", 1 << 20, 12, &opts());
    base.write_at(&pattern(2, 1 << 20), 0, WriteFlags::default())
        .unwrap();
    base.close().unwrap();
    let o = CreateOptions {
        backing_file: Some("base.qcow2".into()),
        backing_format: Some(BackingFormat::Qcow2),
        ..opts()
    };
    let top = create_in(d.path(), "top.qcow2", 1 << 20, 16, &o);
    assert_eq!(read_vec(&top, 0, 1 << 20), pattern(2, 1 << 20));
    top.discard(65536, 65536).unwrap();
    top.write_zeroes(3 * 65536, 65536, false).unwrap();
    assert!(read_vec(&top, 65536, 65536).iter().all(|&x| x == 0));
    assert!(read_vec(&top, 3 * 65536, 65536).iter().all(|&x| x == 0));
    assert_eq!(
        read_vec(&top, 2 * 65536, 65536),
        pattern(2, 1 << 20)[2 * 65536..3 * 65536]
    );
    let ext = top.block_status(0, 4 * 65536).unwrap();
    assert_eq!(
        ext,
        vec![
            Extent {
                offset: 0,
                len: 65536,
                mapped: true
            },
            Extent {
                offset: 65536,
                len: 65536,
                mapped: false
            },
            Extent {
                offset: 2 * 65536,
                len: 65536,
                mapped: true
            },
            Extent {
                offset: 3 * 65536,
                len: 65536,
                mapped: false
            },
        ]
    );
}

#[test]
fn v2_discard_with_backing_writes_zeros() {
    let d = tempfile::tempdir().unwrap();
    raw_file(d.path(), "base.raw", &[7u8; 1 << 20]);
    let o = CreateOptions {
        version: Version::V2,
        backing_file: Some("base.raw".into()),
        ..opts()
    };
    let b = create_in(d.path(), "top.qcow2", 1 << 20, 12, &o);
    b.discard(4096, 3 * 4096).unwrap();
    assert!(read_vec(&b, 4096, 3 * 4096).iter().all(|&x| x == 0));
    assert!(read_vec(&b, 0, 4096).iter().all(|&x| x == 7));
    assert!(read_vec(&b, 4 * 4096, 4096).iter().all(|&x| x == 7));
}

#[test]
fn discarded_clusters_are_reused_after_flush() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.qcow2");
    let b = Qcow2Backstore::create(&p, 8 << 20, 12, &opts()).unwrap();
    b.write_at(&pattern(3, 1 << 20), 0, WriteFlags::default())
        .unwrap();
    b.flush().unwrap();
    let len_before = std::fs::metadata(&p).unwrap().len();
    b.discard(0, 1 << 20).unwrap();
    b.flush().unwrap();
    b.write_at(&pattern(4, 1 << 20), 4 << 20, WriteFlags::default())
        .unwrap();
    b.flush().unwrap();
    // Only one new L2 table may be needed for the new region.
    assert!(std::fs::metadata(&p).unwrap().len() <= len_before + 4096);
    assert!(read_vec(&b, 0, 1 << 20).iter().all(|&x| x == 0));
    assert_eq!(read_vec(&b, 4 << 20, 1 << 20), pattern(4, 1 << 20));
}

#[test]
fn resize_grows_the_l1_table() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.qcow2");
    // 4 KiB clusters: one L2 table maps 2 MiB, so 64 MiB needs 32 L1 entries.
    let b = Qcow2Backstore::create(&p, 1 << 20, 12, &opts()).unwrap();
    b.write_at(&pattern(5, 8192), 4096, WriteFlags::default())
        .unwrap();
    b.resize(64 << 20).unwrap();
    assert_eq!(b.capacity(), 64 << 20);
    b.write_at(&pattern(6, 8192), (64 << 20) - 8192, WriteFlags::default())
        .unwrap();
    b.close().unwrap();
    let b = Qcow2Backstore::open(&p, false).unwrap();
    assert_eq!(b.capacity(), 64 << 20);
    assert_eq!(read_vec(&b, 4096, 8192), pattern(5, 8192));
    assert_eq!(read_vec(&b, (64 << 20) - 8192, 8192), pattern(6, 8192));
    assert!(matches!(b.resize(32 << 20), Err(Error::Unsupported(_))));
}

#[test]
fn concurrent_writers_racing_on_the_same_clusters() {
    let d = tempfile::tempdir().unwrap();
    let b = create_in(d.path(), "a.qcow2", 16 << 20, 16, &opts());
    // Eight threads; pairs write the two halves of the same fresh clusters, so both race
    // to allocate each cluster.
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let b = &b;
            s.spawn(move || {
                for i in 0..32u64 {
                    let cluster = (t / 2) * 32 + i;
                    let off = cluster * 65536 + (t % 2) * 32768;
                    b.write_at(&pattern(t * 1000 + i, 32768), off, WriteFlags::default())
                        .unwrap();
                    let got = read_vec(b, off, 32768);
                    assert_eq!(got, pattern(t * 1000 + i, 32768));
                }
            });
        }
    });
    b.flush().unwrap();
    for t in 0..8u64 {
        for i in 0..32u64 {
            let off = ((t / 2) * 32 + i) * 65536 + (t % 2) * 32768;
            assert_eq!(
                read_vec(&b, off, 32768),
                pattern(t * 1000 + i, 32768),
                "t{t} i{i}"
            );
        }
    }
}

/// Builds a small valid image with one allocated data cluster and returns its path.
fn sample(dir: &Path) -> PathBuf {
    let p = dir.join("s.qcow2");
    let b = Qcow2Backstore::create(&p, 1 << 20, 16, &opts()).unwrap();
    b.write_at(&[0x11; 65536], 0, WriteFlags::default())
        .unwrap();
    b.close().unwrap();
    p
}

fn open_err(p: &Path, ro: bool) -> String {
    match Qcow2Backstore::open(p, ro) {
        Ok(_) => panic!("opening {} (read_only={ro}) should fail", p.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_images_are_refused_without_writing() {
    type Mutation = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "truncated header",
            Box::new(|p| {
                std::fs::File::options()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(50)
                    .unwrap()
            }),
            "too short",
        ),
        (
            "huge l1_size",
            Box::new(|p| patch(p, 36, &0x1000_0000u32.to_be_bytes())),
            "too large",
        ),
        (
            "L1 beyond file",
            Box::new(|p| patch(p, 40, &(1u64 << 40).to_be_bytes())),
            "beyond the end",
        ),
        (
            "L1 overlaps refcount table",
            Box::new(|p| patch(p, 40, &0x10000u64.to_be_bytes())),
            "overlaps",
        ),
        (
            "refcount_order 7",
            Box::new(|p| patch(p, 96, &7u32.to_be_bytes())),
            "refcount_order",
        ),
        (
            "cluster_bits 30",
            Box::new(|p| patch(p, 20, &30u32.to_be_bytes())),
            "cluster_bits",
        ),
        (
            "L2 table beyond file",
            Box::new(|p| patch(p, 0x30000, &(OFLAG_COPIED | 1 << 40).to_be_bytes())),
            "beyond the end",
        ),
        (
            "dirty image with a bad L1",
            Box::new(|p| {
                patch(p, 72, &1u64.to_be_bytes());
                patch(p, 0x30000, &(OFLAG_COPIED | 1 << 40).to_be_bytes());
            }),
            "beyond the end",
        ),
        (
            "L2 table on refcount table",
            Box::new(|p| patch(p, 0x30000, &(OFLAG_COPIED | 0x10000).to_be_bytes())),
            "overlaps",
        ),
        (
            "L1 entry reserved bits",
            Box::new(|p| patch(p, 0x30000, &(OFLAG_COPIED | 0x50001).to_be_bytes())),
            "reserved",
        ),
        (
            "refcount block beyond file",
            Box::new(|p| patch(p, 0x10008, &(1u64 << 40).to_be_bytes())),
            "outside the image",
        ),
        (
            "refcount block on the L1 table",
            Box::new(|p| patch(p, 0x10008, &0x30000u64.to_be_bytes())),
            "overlaps other metadata",
        ),
        (
            "refcount blocks shared",
            Box::new(|p| patch(p, 0x10008, &0x20000u64.to_be_bytes())),
            "shared",
        ),
        (
            "AES encryption",
            Box::new(|p| patch(p, 32, &1u32.to_be_bytes())),
            "encrypted",
        ),
        (
            "LUKS encryption",
            Box::new(|p| patch(p, 32, &2u32.to_be_bytes())),
            "LUKS",
        ),
        (
            "external data file",
            Box::new(|p| patch(p, 72, &4u64.to_be_bytes())),
            "external data",
        ),
        (
            "unknown incompatible bit",
            Box::new(|p| patch(p, 72, &(1u64 << 5).to_be_bytes())),
            "bit 5",
        ),
        (
            "unknown compression type",
            Box::new(|p| {
                patch(p, 72, &8u64.to_be_bytes());
                patch(p, 104, &[7]);
            }),
            "compression type 7",
        ),
        (
            "corrupt bit",
            Box::new(|p| patch(p, 72, &2u64.to_be_bytes())),
            "marked corrupt",
        ),
        (
            "extended L2",
            Box::new(|p| patch(p, 72, &16u64.to_be_bytes())),
            "extended L2",
        ),
        (
            "snapshots",
            Box::new(|p| {
                patch(p, 60, &1u32.to_be_bytes());
                patch(p, 64, &0x20000u64.to_be_bytes());
            }),
            "snapshots",
        ),
        (
            "backing file loop",
            Box::new(|p| set_backing(p, "s.qcow2")),
            "deeper than",
        ),
        (
            "json backing",
            Box::new(|p| set_backing(p, "json:{}")),
            "not a local file",
        ),
        (
            "missing backing",
            Box::new(|p| set_backing(p, "missing.img")),
            "missing.img",
        ),
    ];
    for (name, mutate, want) in cases {
        let d = tempfile::tempdir().unwrap();
        let p = sample(d.path());
        mutate(&p);
        let before = std::fs::read(&p).unwrap();
        let err = open_err(&p, false);
        assert!(
            err.contains(want),
            "{name}: {err:?} does not mention {want:?}"
        );
        assert_eq!(
            std::fs::read(&p).unwrap(),
            before,
            "{name}: a refused open wrote to the image"
        );
        // Features that only matter for writing still allow reading.
        let ro_ok = matches!(
            name,
            "refcount block beyond file"
                | "refcount block on the L1 table"
                | "refcount blocks shared"
                | "corrupt bit"
                | "extended L2"
                | "snapshots"
        );
        match Qcow2Backstore::open(&p, true) {
            Ok(b) => {
                assert!(ro_ok, "{name}: read-only open should fail");
                // Whatever the tables say now, reading must not panic.
                let mut buf = vec![0u8; 1 << 20];
                let _ = b.read_at(&mut buf, 0);
            }
            Err(e) => assert!(!ro_ok, "{name}: read-only open failed: {e}"),
        }
        assert_eq!(
            std::fs::read(&p).unwrap(),
            before,
            "{name}: read-only open wrote"
        );
    }
}

fn set_backing(p: &Path, name: &str) {
    // Store the name right after the header extensions area start (offset 1024 is free in
    // our 64 KiB header cluster).
    patch(p, 8, &1024u64.to_be_bytes());
    patch(p, 16, &(name.len() as u32).to_be_bytes());
    patch(p, 1024, name.as_bytes());
}

#[test]
fn unknown_header_extensions_survive_and_autoclear_bits_are_cleared() {
    let d = tempfile::tempdir().unwrap();
    let p = sample(d.path());
    // Our header: 112 bytes, then the feature table extension (8 + 336 bytes) ending at
    // 456, then the end marker. Put an unknown extension there instead.
    let unknown = [
        0x12, 0x34, 0x56, 0x78, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0,
    ];
    patch(&p, 456, &unknown);
    patch(
        &p,
        88,
        &(header::autoclear::BITMAPS | 1 << 40).to_be_bytes(),
    );
    let b = Qcow2Backstore::open(&p, false).unwrap();
    b.write_at(&pattern(1, 200_000), 300_000, WriteFlags::default())
        .unwrap();
    b.close().unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[456..480], &unknown, "unknown extension preserved");
    assert_eq!(be64_at(&p, 88), 0, "auto-clear bits cleared before writing");
    let ih = header::ImageHeader::parse(&bytes[..65536]).unwrap();
    assert_eq!(
        ih.extensions.last().map(|e| (e.kind, e.data.clone())),
        Some((0x1234_5678, b"hello".to_vec()))
    );
}

#[test]
fn corrupt_l2_entries_fail_io_instead_of_writing_metadata() {
    let d = tempfile::tempdir().unwrap();
    let p = sample(d.path());
    let l2 = be64_at(&p, 0x30000) & L1E_OFFSET_MASK;
    // Entry 1: reserved bits. Entry 2: "data" on top of the L1 table. Entry 3: data far
    // past the end of the allocated area.
    patch(&p, l2 + 8, &(OFLAG_COPIED | 0x60000 | 0x100).to_be_bytes());
    patch(&p, l2 + 16, &(OFLAG_COPIED | 0x30000).to_be_bytes());
    patch(&p, l2 + 24, &(OFLAG_COPIED | 1 << 45).to_be_bytes());
    let before = std::fs::read(&p).unwrap();
    let b = Qcow2Backstore::open(&p, false).unwrap();
    let mut buf = vec![0u8; 65536];
    let e = b.read_at(&mut buf, 65536).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("reserved bits"), "{e}");
    assert!(b.write_at(&buf, 65536, WriteFlags::default()).is_err());
    let e = b
        .write_at(&buf, 2 * 65536, WriteFlags::default())
        .unwrap_err();
    assert!(e.to_string().contains("overlaps metadata"), "{e}");
    let e = b
        .write_at(&buf, 3 * 65536, WriteFlags::default())
        .unwrap_err();
    assert!(e.to_string().contains("unallocated space"), "{e}");
    // Reading the bogus far cluster gives zeros (past EOF), like qemu.
    b.read_at(&mut buf, 3 * 65536).unwrap();
    drop(b);
    assert_eq!(std::fs::read(&p).unwrap(), before, "nothing was written");
}

#[test]
fn dirty_image_is_repaired_on_writable_open() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.qcow2");
    let b = Qcow2Backstore::create(
        &p,
        4 << 20,
        12,
        &CreateOptions {
            lazy_refcounts: true,
            ..opts()
        },
    )
    .unwrap();
    b.write_at(&pattern(8, 1 << 20), 0, WriteFlags::default())
        .unwrap();
    b.close().unwrap();
    // Simulate a lazy-refcount crash: refcounts of the data were never written (zero the
    // refcount block) and the dirty bit is set.
    let rb = be64_at(&p, 0x1000);
    patch(&p, rb, &vec![0u8; 4096]);
    patch(&p, 72, &incompat::DIRTY.to_be_bytes());
    // Read-only: readable as is.
    let ro = Qcow2Backstore::open(&p, true).unwrap();
    assert_eq!(read_vec(&ro, 0, 1 << 20), pattern(8, 1 << 20));
    drop(ro);
    let b = Qcow2Backstore::open(&p, false).unwrap();
    assert_eq!(be64_at(&p, 72) & incompat::DIRTY, 0, "dirty bit cleared");
    assert_eq!(read_vec(&b, 0, 1 << 20), pattern(8, 1 << 20));
    // New allocations must not land on the existing data.
    b.write_at(&pattern(9, 1 << 20), 2 << 20, WriteFlags::default())
        .unwrap();
    assert_eq!(read_vec(&b, 0, 1 << 20), pattern(8, 1 << 20));
    assert_eq!(read_vec(&b, 2 << 20, 1 << 20), pattern(9, 1 << 20));
}

#[test]
fn dirty_image_referencing_a_cluster_far_past_the_end_is_refused() {
    // v3, 512-byte clusters, 16-bit refcounts, dirty; L2 entry 1 maps a data cluster at
    // 2^56 - 512, far past the end of the file. Counting it would size the rebuilt
    // refcount table for 2^47 clusters (2^33 table clusters, 4 TiB).
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.qcow2");
    let b = Qcow2Backstore::create(&p, 1 << 20, 9, &opts()).unwrap();
    b.write_at(&[0x11; 512], 0, WriteFlags::default()).unwrap();
    b.close().unwrap();
    let l2 = be64_at(&p, be64_at(&p, 40)) & L1E_OFFSET_MASK;
    patch(&p, l2 + 8, &0x80ff_ffff_ffff_fe00u64.to_be_bytes());
    patch(&p, 72, &incompat::DIRTY.to_be_bytes());
    let before = std::fs::read(&p).unwrap();
    let e = Qcow2Backstore::open(&p, false).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(
        e.to_string().contains("entry 1") && e.to_string().contains("past the end of the file"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        before,
        "the refused repair wrote"
    );
}

#[test]
fn dirty_image_referencing_a_cluster_just_past_the_end_opens_and_keeps_it() {
    // What a crash can leave with lazy refcounts: an L2 entry on disk whose data cluster
    // lies past the end of the file (the write that grew the file was lost). qemu opens
    // such an image; so does the repair, counting the cluster, so that a later allocation
    // does not hand it out a second time.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.qcow2");
    let b = Qcow2Backstore::create(&p, 1 << 20, 9, &opts()).unwrap();
    b.write_at(&[0x11; 512], 0, WriteFlags::default()).unwrap();
    b.close().unwrap();
    let end = std::fs::metadata(&p).unwrap().len().next_multiple_of(512);
    let lost = end + 3 * 512;
    let l2 = be64_at(&p, be64_at(&p, 40)) & L1E_OFFSET_MASK;
    patch(&p, l2 + 8, &(OFLAG_COPIED | lost).to_be_bytes());
    patch(&p, 72, &incompat::DIRTY.to_be_bytes());
    let b = Qcow2Backstore::open(&p, false).unwrap();
    assert_eq!(
        read_vec(&b, 512, 512),
        vec![0; 512],
        "past the end reads zeros"
    );
    for k in 2..8u64 {
        b.write_at(&[k as u8; 512], k * 512, WriteFlags::default())
            .unwrap();
    }
    b.write_at(&[0x22; 512], 512, WriteFlags::default())
        .unwrap();
    assert_eq!(read_vec(&b, 0, 512), vec![0x11; 512]);
    assert_eq!(read_vec(&b, 512, 512), vec![0x22; 512]);
    for k in 2..8u64 {
        assert_eq!(
            read_vec(&b, k * 512, 512),
            vec![k as u8; 512],
            "cluster {k}"
        );
    }
    b.close().unwrap();
    let b = Qcow2Backstore::open(&p, true).unwrap();
    assert_eq!(read_vec(&b, 512, 512), vec![0x22; 512]);
}

#[test]
fn allocation_never_lands_on_metadata_whose_refcount_is_zero() {
    // A corrupt image that calls one metadata cluster free (refcount 0). Discarding a
    // cluster over a raw backing file in a range without an L2 table allocates just an
    // L2 table (for a v3 zero entry), which must not land on that metadata.
    let setup = |dir: &Path| {
        raw_file(dir, "base.raw", &pattern(4, 1 << 20));
        let o = CreateOptions {
            backing_file: Some("base.raw".into()),
            ..opts()
        };
        let b = create_in(dir, "top.qcow2", 1 << 20, 9, &o);
        b.write_at(&[0x22; 512], 0, WriteFlags::default()).unwrap();
        b.close().unwrap();
        dir.join("top.qcow2")
    };
    let kinds = ["header", "refcount table", "refcount block", "L1 table"];
    for kind in kinds {
        let d = tempfile::tempdir().unwrap();
        let p = setup(d.path());
        let (l1, rt) = (be64_at(&p, 40), be64_at(&p, 48));
        let rb = be64_at(&p, rt);
        let target = match kind {
            "header" => 0,
            "refcount table" => rt,
            "refcount block" => rb,
            _ => l1,
        };
        let mut block = vec![0u8; 512];
        block.copy_from_slice(&std::fs::read(&p).unwrap()[rb as usize..rb as usize + 512]);
        let order = u32::from_be_bytes(std::fs::read(&p).unwrap()[96..100].try_into().unwrap());
        entry::refcount_set(&mut block, order, target / 512, 0);
        patch(&p, rb, &block);
        // The header cluster, the refcount table, and L1 entries 0-2 (a successful write
        // at 96 KiB below sets entry 3).
        let metadata = |p: &Path| {
            let f = std::fs::read(p).unwrap();
            [(0, 512), (rt, 512), (l1, 24)].map(|(o, n)| f[o as usize..(o + n) as usize].to_vec())
        };
        let before = metadata(&p);

        let b = Qcow2Backstore::open(&p, false).unwrap();
        let e = b.discard(64 << 10, 512).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{kind}: {e}");
        // A data write either is refused too or lands elsewhere.
        let wrote = match b.write_at(&[0x33; 512], 96 << 10, WriteFlags::default()) {
            Ok(()) => true,
            Err(e) => {
                assert!(matches!(e, Error::Corrupt { .. }), "{kind}: {e}");
                false
            }
        };
        b.close().unwrap();
        assert_eq!(metadata(&p), before, "{kind}: metadata was overwritten");
        let b = Qcow2Backstore::open(&p, true).unwrap();
        assert_eq!(read_vec(&b, 0, 512), vec![0x22; 512], "{kind}");
        assert_eq!(
            read_vec(&b, 64 << 10, 512),
            pattern(4, 1 << 20)[64 << 10..(64 << 10) + 512],
            "{kind}"
        );
        if wrote {
            assert_eq!(read_vec(&b, 96 << 10, 512), vec![0x33; 512], "{kind}");
        }
    }
}

#[test]
fn l2_table_whose_refcount_is_zero_refuses_a_writable_open() {
    // The per-allocation guard does not know the L2 tables; a writable open checks that
    // each one counts as used, so that none is handed out as a free cluster.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.qcow2");
    let b = Qcow2Backstore::create(&p, 1 << 20, 9, &opts()).unwrap();
    b.write_at(&[0x22; 512], 0, WriteFlags::default()).unwrap();
    b.close().unwrap();
    let l2 = be64_at(&p, be64_at(&p, 40)) & L1E_OFFSET_MASK;
    let rb = be64_at(&p, be64_at(&p, 48));
    let f = std::fs::read(&p).unwrap();
    let order = u32::from_be_bytes(f[96..100].try_into().unwrap());
    let mut block = f[rb as usize..rb as usize + 512].to_vec();
    assert_eq!(entry::refcount_get(&block, order, l2 / 512), 1);
    entry::refcount_set(&mut block, order, l2 / 512, 0);
    patch(&p, rb, &block);
    let e = Qcow2Backstore::open(&p, false).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("refcount 0"), "{e}");
    // Read-only still serves the data.
    let b = Qcow2Backstore::open(&p, true).unwrap();
    assert_eq!(read_vec(&b, 0, 512), vec![0x22; 512]);
    drop(b);
    // An L2 table on a refcount block (whose refcount is not 0) is refused too.
    entry::refcount_set(&mut block, order, l2 / 512, 1);
    patch(&p, rb, &block);
    Qcow2Backstore::open(&p, false).unwrap().close().unwrap();
    let l1 = be64_at(&p, 40);
    let entry0 = be64_at(&p, l1);
    patch(&p, l1, &(OFLAG_COPIED | rb).to_be_bytes());
    let e = Qcow2Backstore::open(&p, false).unwrap_err();
    assert!(e.to_string().contains("lies on a refcount block"), "{e}");
    // Two L1 entries on one L2 table (the second guest range would alias the first),
    // named in the message.
    patch(&p, l1, &entry0.to_be_bytes());
    patch(&p, l1 + 8, &entry0.to_be_bytes());
    let e = Qcow2Backstore::open(&p, false).unwrap_err();
    assert!(e.to_string().contains("L1 entries 0 and 1 share"), "{e}");
}

#[test]
fn fua_makes_metadata_durable_immediately() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.qcow2");
    let b = Qcow2Backstore::create(&p, 4 << 20, 16, &opts()).unwrap();
    b.write_at(&[5u8; 4096], 1 << 20, WriteFlags::FUA).unwrap();
    // Without dropping `b` (no flush on close), another reader sees the data.
    let other = Qcow2Backstore::open(&p, true).unwrap();
    assert_eq!(read_vec(&other, 1 << 20, 4096), vec![5u8; 4096]);
    // A plain write is not yet visible to other openers (write-back metadata)...
    b.write_at(&[6u8; 4096], 2 << 20, WriteFlags::default())
        .unwrap();
    let other = Qcow2Backstore::open(&p, true).unwrap();
    assert_eq!(read_vec(&other, 2 << 20, 4096), vec![0u8; 4096]);
    // ...until a flush.
    b.flush().unwrap();
    let other = Qcow2Backstore::open(&p, true).unwrap();
    assert_eq!(read_vec(&other, 2 << 20, 4096), vec![6u8; 4096]);
}

#[derive(Debug, Clone)]
enum Op {
    Write { off: u64, len: u64, seed: u64 },
    Discard { off: u64, len: u64 },
    Zero { off: u64, len: u64, unmap: bool },
    Flush,
    Reopen,
}

fn op_strategy(size: u64) -> impl Strategy<Value = Op> {
    let range = (0..size / 512, 1u64..64).prop_map(move |(s, n)| {
        let off = s * 512;
        (off, (n * 512).min(size - off))
    });
    prop_oneof![
        6 => (range.clone(), any::<u64>()).prop_map(|((off, len), seed)| Op::Write { off, len, seed }),
        2 => range.clone().prop_map(|(off, len)| Op::Discard { off, len }),
        2 => (range, any::<bool>()).prop_map(|((off, len), unmap)| Op::Zero { off, len, unmap }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

/// Applies `ops` to a qcow2 image and to a byte vector and checks they agree. With
/// `direct` the image is opened `cache=none` and half the writes (and one of the two final
/// reads) are page-aligned in offset, length and memory, so that they go `O_DIRECT` between
/// buffered ones.
fn run_model(ops: &[Op], cluster_bits: u32, version: Version, backing: bool, direct: bool) {
    const SIZE: u64 = 1 << 20;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("m.qcow2");
    let mut model = vec![0u8; SIZE as usize];
    let mut o = CreateOptions { version, ..opts() };
    if backing {
        // The backing file is shorter than the image, and not cluster aligned.
        model[..(SIZE / 2 + 1000) as usize]
            .copy_from_slice(&pattern(77, (SIZE / 2 + 1000) as usize));
        raw_file(d.path(), "b.raw", &model[..(SIZE / 2 + 1000) as usize]);
        o.backing_file = Some("b.raw".into());
    }
    let open_o = Qcow2Options {
        direct_io: direct,
        ..Qcow2Options::default()
    };
    o.open = open_o.clone();
    let mut b = Qcow2Backstore::create(&p, SIZE, cluster_bits, &o).unwrap();
    assert_eq!(b.io.is_direct(), direct);
    for op in ops {
        match *op {
            Op::Write { off, len, seed } if direct && seed % 2 == 1 => {
                let off = off / 4096 * 4096;
                let len = len.div_ceil(4096) * 4096;
                let mut data = b.io.buf(len as usize);
                data.copy_from_slice(&pattern(seed, len as usize));
                b.write_at(&data, off, WriteFlags::default()).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            Op::Write { off, len, seed } => {
                let data = pattern(seed, len as usize);
                b.write_at(&data, off, WriteFlags::default()).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            Op::Discard { off, len } => {
                b.discard(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            Op::Zero { off, len, unmap } => {
                b.write_zeroes(off, len, unmap).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            Op::Flush => b.flush().unwrap(),
            Op::Reopen => {
                b.close().unwrap();
                b = Qcow2Backstore::open_with(&p, &open_o).unwrap();
            }
        }
    }
    assert!(
        read_vec(&b, 0, SIZE as usize) == model,
        "content differs from the model after {ops:?}"
    );
    let mut aligned = b.io.buf(SIZE as usize);
    b.read_at(&mut aligned, 0).unwrap();
    assert!(
        aligned[..] == model[..],
        "aligned read differs from the model after {ops:?}"
    );
    b.close().unwrap();
    let b = Qcow2Backstore::open(&p, true).unwrap();
    assert!(
        read_vec(&b, 0, SIZE as usize) == model,
        "content differs after reopen"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn matches_a_flat_model_v3(ops in proptest::collection::vec(op_strategy(1 << 20), 1..40)) {
        run_model(&ops, 12, Version::V3, false, false);
    }

    #[test]
    fn matches_a_flat_model_v3_direct(ops in proptest::collection::vec(op_strategy(1 << 20), 1..40)) {
        run_model(&ops, 16, Version::V3, false, true);
    }

    #[test]
    fn matches_a_flat_model_v2_with_backing_direct_small_clusters(ops in proptest::collection::vec(op_strategy(1 << 20), 1..40)) {
        run_model(&ops, 10, Version::V2, true, true);
    }

    #[test]
    fn matches_a_flat_model_v2_with_backing(ops in proptest::collection::vec(op_strategy(1 << 20), 1..40)) {
        run_model(&ops, 12, Version::V2, true, false);
    }

    #[test]
    fn matches_a_flat_model_v3_with_backing_small_clusters(ops in proptest::collection::vec(op_strategy(1 << 20), 1..40)) {
        run_model(&ops, 9, Version::V3, true, false);
    }

    #[test]
    fn opening_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096), magic in any::<bool>()) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g.qcow2");
        let mut bytes = bytes;
        if magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(&[0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]);
        }
        std::fs::write(&p, &bytes).unwrap();
        for ro in [true, false] {
            if let Ok(b) = Qcow2Backstore::open(&p, ro) {
                let mut buf = vec![0u8; 4096];
                let _ = b.read_at(&mut buf, 0);
            }
        }
    }
}

#[test]
fn mapped_reads_follow_the_options_down_the_backing_chain() {
    let d = tempfile::tempdir().unwrap();
    raw_file(d.path(), "base.raw", &pattern(1, 1 << 20));
    let mid = CreateOptions {
        backing_file: Some("base.raw".into()),
        ..opts()
    };
    create_in(d.path(), "mid.qcow2", 1 << 20, 16, &mid)
        .close()
        .unwrap();
    let top = CreateOptions {
        backing_file: Some("mid.qcow2".into()),
        backing_format: Some(BackingFormat::Qcow2),
        ..opts()
    };
    create_in(d.path(), "top.qcow2", 1 << 20, 16, &top)
        .close()
        .unwrap();
    for mmap_reads in [false, true] {
        let o = Qcow2Options {
            mmap_reads,
            ..Qcow2Options::default()
        };
        let top = Qcow2Backstore::open_with(d.path().join("top.qcow2"), &o).unwrap();
        let Some(Backing::Qcow2(mid)) = &top.backing else {
            panic!("top's backing is mid.qcow2");
        };
        let Some(Backing::Raw { io: base, .. }) = &mid.backing else {
            panic!("mid's backing is base.raw");
        };
        assert_eq!(
            [top.io.is_mapped(), mid.io.is_mapped(), base.is_mapped()],
            [mmap_reads; 3]
        );
        assert_eq!(read_vec(&top, 0, 1 << 20), pattern(1, 1 << 20));
    }
}
