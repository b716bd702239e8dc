use rustio_backstore::qcow2::{CreateOptions, Qcow2Backstore};
use rustio_backstore::{Backstore, WriteFlags};
use std::time::Instant;
#[test]
fn bench() {
    for dir in ["/tmp", "/dev/shm"] {
    for cb in [12u32, 16] {
        let d = tempfile::tempdir_in(dir).unwrap();
        let b = Qcow2Backstore::create(d.path().join("b.qcow2"), 1 << 30, cb, &CreateOptions::default()).unwrap();
        let buf = vec![7u8; 1 << 20];
        let t = Instant::now();
        for i in 0..512u64 { b.write_at(&buf, i << 20, WriteFlags::default()).unwrap(); }
        b.flush().unwrap();
        let seq = t.elapsed();
        let t = Instant::now();
        let mut rd = vec![0u8; 1 << 20];
        for i in 0..512u64 { b.read_at(&mut rd, i << 20).unwrap(); }
        let rseq = t.elapsed();
        let small = vec![1u8; 4096];
        let mut x = 12345u64;
        let t = Instant::now();
        for _ in 0..20000 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; let off = (x % ((1<<30)/4096)) * 4096; b.write_at(&small, off, WriteFlags::default()).unwrap(); }
        b.flush().unwrap();
        let rnd = t.elapsed();
        let t = Instant::now();
        std::thread::scope(|s| { for th in 0..4u64 { let b=&b; let small=&small; s.spawn(move || { let mut x = 999+th; for _ in 0..5000 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; let off = (x % ((1<<29)/4096)) * 4096; b.write_at(small, off, WriteFlags::default()).unwrap(); }}); }});
        let par = t.elapsed();
        eprintln!("{dir} cb={cb}: seq write 512MB {:?} ({:.0} MB/s), seq read {:?}, 20k random 4k allocating writes {:?}, 4x5k rewrites {:?}", seq, 512.0/seq.as_secs_f64(), rseq, rnd, par);
    }}
}
