//! Opens arbitrary bytes as a qcow2 image: header parsing and validation on their own, then
//! a read-only open of the bytes as a file followed by a read and a block-status query.
//! Nothing may panic, hang or allocate without bound; read-only opens never write.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustio_backstore::qcow2::header::ImageHeader;
use rustio_backstore::qcow2::Qcow2Backstore;
use rustio_backstore::Backstore;

fuzz_target!(|data: &[u8]| {
    if let Ok(ih) = ImageHeader::parse(data) {
        let _ = ih.validate(data.len() as u64);
    }
    let path = std::env::temp_dir().join(format!("rustio-fuzz-qcow2-{}.img", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(b) = Qcow2Backstore::open(&path, true) {
        let cap = b.capacity();
        let mut buf = vec![0u8; cap.min(256 * 1024) as usize];
        let _ = b.read_at(&mut buf, 0);
        let _ = b.block_status(0, cap.min(64 << 20));
    }
    let _ = std::fs::remove_file(&path);
});
