//! READs from a plain-file LUN, whose Data-In is sent from the page cache
//! (`sendfile(2)`) when no data digest is in force: the data on the wire is the file's,
//! at every MaxRecvDataSegmentLength, with and without digests, after an ORDERED task,
//! and a file shortened underneath never yields wrong framing.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use rustio_backstore::{FileBackstore, FileOptions};
use rustio_iscsi::LunConfig;
use rustio_iscsi_proto::pdu::{Header, TaskAttribute};
use rustio_scsi::{LogicalUnit, LuConfig};

const BLOCKS: u64 = 8192;

/// A server whose LUN 0 is the file `path` (created with `content`).
fn start_file(path: &Path, content: &[u8]) -> (rustio_iscsi::ServerHandle, std::net::SocketAddr) {
    std::fs::write(path, content).unwrap();
    let store = FileBackstore::open(FileOptions::new(path)).unwrap();
    let lu = LogicalUnit::new(Arc::new(store), LuConfig::new("file0", "file0")).unwrap();
    start(move |cfg, tpg| {
        // Every READ length from the page cache (the default keeps small ones copied).
        cfg.sendfile_min = Some(1);
        tpg.params.offer.max_recv_data_segment_length = 262_144;
        tpg.luns[0] = LunConfig {
            index: 0,
            lu,
            name: "file0".into(),
        };
    })
}

fn content() -> Vec<u8> {
    (0..BLOCKS as u32 * 512)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

fn opts(mrdsl: &str, burst: &str, digests: bool) -> LoginOpts {
    let mut o = LoginOpts::default();
    let set = |o: &mut LoginOpts, k: &str, v: &str| {
        for kv in o.keys.iter_mut() {
            if kv.0 == k {
                kv.1 = v.into();
            }
        }
    };
    set(&mut o, "MaxRecvDataSegmentLength", mrdsl);
    set(&mut o, "MaxBurstLength", burst);
    if digests {
        set(&mut o, "HeaderDigest", "CRC32C");
        set(&mut o, "DataDigest", "CRC32C");
    }
    o
}

#[test]
fn reads_of_a_file_lun_are_the_file_at_every_segment_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lun.img");
    let data = content();
    let (h, addr) = start_file(&path, &data);
    for (mrdsl, burst, digests) in [
        ("512", "262144", false),
        ("8192", "16384", false),
        ("65536", "262144", false),
        ("262144", "262144", false),
        ("262144", "65536", false),
        ("8192", "262144", true),
        ("262144", "262144", true),
    ] {
        let mut i = Initiator::connect(addr);
        assert!(i.login(&opts(mrdsl, burst, digests)), "{mrdsl} {digests}");
        for (lba, blocks) in [(0u32, 1u16), (1, 8), (77, 256), (1000, 2048), (8191, 1)] {
            let len = usize::from(blocks) * 512;
            let (itt, pdu) = i.command(0, &read10(lba, blocks), true, false, len as u32, vec![]);
            i.send(&pdu);
            let r = i.collect(itt, &[], 8192);
            assert_eq!(r.status, 0, "{mrdsl} {digests} lba {lba}");
            assert!(!r.underflow && !r.overflow);
            let at = lba as usize * 512;
            assert!(
                r.data == data[at..at + len],
                "data of lba {lba} x {blocks}, MRDSL {mrdsl}, digests {digests}"
            );
            let m: usize = mrdsl.parse().unwrap();
            let b: usize = burst.parse().unwrap();
            assert_eq!(r.data_pdus as usize, len.div_ceil(m.min(b)));
        }
        // EDTL other than the CDB's transfer: residuals as before (staged data).
        let r = i.scsi(0, &read10(10, 4), 1024, &[], 0);
        assert!(r.overflow && r.residual == 1024);
        assert!(r.data == data[5120..6144]);
        // A write is read back (through the page cache the READ is sent from).
        let w = pattern(4096, 9);
        assert_eq!(i.scsi(0, &write10(300, 8), 0, &w, 4096).status, 0);
        let r = i.scsi(0, &read10(300, 8), 4096, &[], 0);
        assert!(r.data == w);
        assert_eq!(
            i.scsi(0, &write10(300, 8), 0, &data[300 * 512..308 * 512], 4096)
                .status,
            0
        );
    }
    h.shutdown();
}

#[test]
fn reads_after_an_ordered_task_are_still_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lun.img");
    let data = content();
    let (h, addr) = start_file(&path, &data);
    let mut i = Initiator::connect(addr);
    assert!(i.login(&opts("262144", "262144", false)));
    // An ORDERED READ, then SIMPLE ones: the session now reads READ data before the
    // READ completes (copy path); the data is the same.
    let (itt, mut pdu) = i.command(0, &read10(64, 256), true, false, 128 << 10, vec![]);
    if let Header::ScsiCommand(c) = &mut pdu.header {
        c.attr = TaskAttribute::Ordered;
    }
    i.send(&pdu);
    let r = i.collect(itt, &[], 8192);
    assert_eq!(r.status, 0);
    assert!(r.data == data[64 * 512..320 * 512]);
    let r = i.scsi(0, &read10(2, 256), 128 << 10, &[], 0);
    assert!(r.data == data[1024..1024 + (128 << 10)]);
    h.shutdown();
}

#[test]
fn a_file_shortened_underneath_drops_the_connection_not_the_framing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lun.img");
    let data = content();
    let (h, addr) = start_file(&path, &data);
    let mut i = Initiator::connect(addr);
    assert!(i.login(&opts("65536", "262144", false)));
    let r = i.scsi(0, &read10(0, 8), 4096, &[], 0);
    assert!(r.data == data[..4096]);
    // The store still believes in its old capacity; the file now ends at 1 MiB.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let (itt, pdu) = i.command(0, &read10(4096, 256), true, false, 128 << 10, vec![]);
    i.send(&pdu);
    // Whatever arrives is well framed, and no status (GOOD for data that was never
    // sent) follows: the connection ends.
    let mut got = 0usize;
    while let Some(p) = i.try_recv() {
        match p.header {
            Header::DataIn(d) => {
                assert_eq!(d.itt, itt);
                assert!(!d.status_present, "status after a short payload");
                got += p.data.len();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got < 128 << 10);
    // The server goes on serving other connections.
    let mut j = Initiator::connect(addr);
    let mut o = opts("65536", "262144", false);
    o.isid[5] ^= 1;
    assert!(j.login(&o));
    let r = j.scsi(0, &read10(0, 8), 4096, &[], 0);
    assert!(r.data == data[..4096]);
    h.shutdown();
}
