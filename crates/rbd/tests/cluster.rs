//! Tests of the RBD engine against a real Ceph cluster.
//!
//! Needs the `rbd` feature and `RUSTIO_CEPH_CONF` naming the `ceph.conf` of a cluster
//! started by `tests/ceph/start.sh` (whose directory also holds the daemons' PIDs, so the
//! fault tests can stop and restart them with `tests/ceph/daemon.sh`). The `rbd` CLI must
//! be installed (images are created and resized with it). `tests/ceph/run-tests.sh` does
//! all of this. Without `RUSTIO_CEPH_CONF` every test fails: a build with the feature on
//! is expected to be tested against a cluster.
//!
//! `RUSTIO_CEPH_POOL` names the pool to create images in (default `rbd`).
//!
//! The tests take one lock in turn: the fault tests stop daemons, which would fail any
//! test running beside them.

use std::io::{IoSlice, IoSliceMut};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustio_backstore::conformance::{self, pattern};
use rustio_backstore::{Backstore, ErrorKind, WriteFlags};
use rustio_rbd::{OpenOptions, RbdBackstore, RbdConfig, RbdError};

mod common;
use common::{cluster, Cluster};

const MIB: u64 = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// Creates a fresh image (removing a leftover of an earlier run) and returns its name.
    fn image(&self, name: &str, size_mib: u64) -> String {
        let spec = format!("{}/{name}", self.pool);
        self.remove_image(&spec);
        self.tool_within(
            120,
            "rbd",
            &["create", &spec, "--size", &format!("{size_mib}M")],
        );
        name.to_owned()
    }

    fn open(&self, image: &str, extra: &str) -> RbdBackstore {
        RbdBackstore::open(&self.options_with(image, extra))
            .unwrap_or_else(|e| panic!("open {image}: {}", chain(&e)))
    }

    fn daemon(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ceph/daemon.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .env("CEPH_DIR", &self.dir)
            .output()
            .expect("run daemon.sh");
        eprintln!(
            "daemon.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "daemon.sh {args:?} failed");
    }
}

/// Restarts every daemon when dropped, so a failed fault test leaves a usable cluster.
struct Revive<'a>(&'a Cluster);

impl Drop for Revive<'_> {
    fn drop(&mut self) {
        self.0.daemon(&["start-all"]);
        self.0.daemon(&["wait-osd-up"]);
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn read(b: &RbdBackstore, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    b.read_at(&mut v, off)
        .unwrap_or_else(|e| panic!("read {len} at {off}: {}", chain(&e)));
    v
}

#[test]
fn conformance_suite() {
    let _g = serial();
    let c = cluster();
    let name = c.image("conformance", 64);
    let b = c.open(&name, "");
    assert_eq!(b.capacity(), 64 * MIB);
    assert_eq!(b.block_size(), 512);
    conformance::run_all(&b);

    // The same with 4096-byte blocks.
    let mut o = c.options(&name);
    o.block_size = 4096;
    let b4k = RbdBackstore::open(&o).expect("open with 4k blocks");
    assert_eq!(b4k.block_size(), 4096);
    conformance::run_all(&b4k);
}

#[test]
fn data_is_shared_with_other_clients() {
    let _g = serial();
    let c = cluster();
    let name = c.image("shared", 16);
    let a = c.open(&name, "");
    let data = pattern(42, 3 * 4096 + 512);
    a.write_vectored_at(
        &[IoSlice::new(&data[..4096]), IoSlice::new(&data[4096..])],
        MIB - 512,
        WriteFlags::FUA,
    )
    .unwrap();
    drop(a);
    // A second client (a new cluster connection) sees the data, also across the object
    // boundary at 4 MiB.
    let b = c.open(&name, "");
    assert_eq!(read(&b, MIB - 512, data.len()), data);
    let cross = pattern(43, 8192);
    b.write_at(&cross, 4 * MIB - 4096, WriteFlags::default())
        .unwrap();
    let mut x = vec![0u8; 4096];
    let mut y = vec![0u8; 4096];
    b.read_vectored_at(
        &mut [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)],
        4 * MIB - 4096,
    )
    .unwrap();
    assert_eq!([x, y].concat(), cross);
    // Never-written blocks read as zeros; block status says they are unmapped.
    assert!(read(&b, 10 * MIB, 4096).iter().all(|&v| v == 0));
    let st = b.block_status(8 * MIB, 4 * MIB).unwrap();
    assert_eq!(st.len(), 1, "{st:?}");
    assert!(!st[0].mapped);
    let st = b.block_status(MIB - 512, 512).unwrap();
    assert_eq!(st.len(), 1);
    assert!(st[0].mapped, "{st:?}");
}

/// `submit_read` / `submit_write` (librbd's aio with owned buffers): many in flight at
/// once from one thread, completed on librbd's thread, the buffers back, the data there
/// for a synchronous read and another client; range errors at once, on this thread.
#[test]
fn submitted_requests_complete_on_librbd_threads() {
    use std::sync::mpsc;
    let _g = serial();
    let c = cluster();
    let name = c.image("submit", 16);
    let b = c.open(&name, "");
    assert!(b.submits_async());
    let me = std::thread::current().id();
    let (tx, rx) = mpsc::channel();
    // 64 writes of 4 KiB, all submitted before any is waited for.
    for i in 0..64u64 {
        let tx = tx.clone();
        let data = pattern(i, 4096);
        b.submit_write(
            i * 8192,
            data,
            4096,
            WriteFlags::default(),
            Box::new(move |buf, r| {
                let _ = tx.send((i, buf, r.is_ok(), std::thread::current().id() != me));
            }),
        );
    }
    for _ in 0..64 {
        let (i, buf, ok, elsewhere) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(ok && elsewhere, "write {i}");
        assert_eq!(buf, pattern(i, 4096), "buffer {i} back unchanged");
    }
    // Read back asynchronously, and by a second client synchronously.
    for i in 0..64u64 {
        let tx = tx.clone();
        b.submit_read(
            i * 8192,
            vec![0u8; 4096],
            Box::new(move |buf, r| {
                let _ = tx.send((i, buf, r.is_ok(), true));
            }),
        );
    }
    for _ in 0..64 {
        let (i, buf, ok, _) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(ok, "read {i}");
        assert_eq!(buf, pattern(i, 4096), "read {i}");
    }
    drop(b);
    let other = c.open(&name, "");
    assert_eq!(read(&other, 63 * 8192, 4096), pattern(63, 4096));
    // Past the end: refused before librbd, on this thread, buffer back.
    other.submit_read(
        16 * MIB - 512,
        vec![7u8; 1024],
        Box::new(move |buf, r| {
            let _ = tx.send((0, buf, r.is_ok(), std::thread::current().id() != me));
        }),
    );
    let (_, buf, ok, elsewhere) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(!ok && !elsewhere);
    assert_eq!(buf, vec![7u8; 1024]);
}

/// The last reference of an image can go with a request's completion (its closure holds
/// the last path to the store, e.g. after a reload removed the LUN): the image is then
/// closed on a thread of its own, not on librbd's callback thread, where `rbd_close`
/// would wait for the callback running it. The completion returns, the image is closed
/// (its exclusive lock released: another client writes at once) and nothing hangs.
#[test]
fn last_reference_dropped_by_a_completion_closes_off_the_callback_thread() {
    use std::sync::{mpsc, Arc};
    let _g = serial();
    let c = cluster();
    let name = c.image("lastref", 16);
    let b = Arc::new(c.open(&name, ""));
    b.write_at(&pattern(5, 4096), 0, WriteFlags::default())
        .unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let held = Arc::clone(&b);
    b.submit_read(
        0,
        vec![0u8; 4096],
        Box::new(move |buf, r| {
            // Wait until the test has dropped its own reference: `held` is the last.
            let _ = go_rx.recv_timeout(Duration::from_secs(30));
            drop(held);
            let _ = tx.send((buf, r.is_ok()));
        }),
    );
    drop(b);
    go_tx.send(()).unwrap();
    let (buf, ok) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the completion that dropped the last reference returned");
    assert!(ok);
    assert_eq!(buf, pattern(5, 4096));
    // The close ran elsewhere, and finished.
    assert!(rustio_rbd::wait_for_outstanding(Duration::from_secs(60)));
    // It released the image: a second client writes and reads.
    let (done_tx, done_rx) = mpsc::channel();
    let spec = name.clone();
    let opts = c.options_with(&spec, "");
    std::thread::spawn(move || {
        let other = RbdBackstore::open(&opts).expect("reopen");
        other
            .write_at(&pattern(6, 4096), 4096, WriteFlags::default())
            .expect("write after the close");
        let _ = done_tx.send(read(&other, 0, 4096));
    });
    let data = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("another client opened and wrote the image");
    assert_eq!(data, pattern(5, 4096));
}

#[test]
fn concurrent_writers_keep_many_requests_in_flight() {
    let _g = serial();
    let c = cluster();
    let name = c.image("concurrent", 256);
    let b = c.open(&name, "");
    const BLOCK: usize = 16 * 1024;
    const WRITES: u64 = 512;
    // Consecutive writes go to different RADOS objects (and so placement groups): the OSD
    // orders writes to one object, which would hide the client's concurrency.
    let objects = b.capacity() / b.object_size();
    let at = |i: u64| (i % objects) * b.object_size() + (i / objects) * BLOCK as u64;
    let write = |i: u64| {
        b.write_at(&pattern(1000 + i, BLOCK), at(i), WriteFlags::default())
            .unwrap_or_else(|e| panic!("write {i}: {}", chain(&e)));
    };
    // One thread: one request in flight at a time.
    let t = Instant::now();
    for i in 0..WRITES / 4 {
        write(i);
    }
    let serial_rate = (WRITES / 4) as f64 / t.elapsed().as_secs_f64();
    // 16 threads over the whole range (rewriting the first quarter).
    let next = AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= WRITES {
                    break;
                }
                write(i);
            });
        }
    });
    let parallel_rate = WRITES as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "{BLOCK}-byte writes: 1 thread {serial_rate:.0}/s, 16 threads {parallel_rate:.0}/s \
         ({:.1}x)",
        parallel_rate / serial_rate
    );
    for i in 0..WRITES {
        assert_eq!(
            read(&b, at(i), BLOCK),
            pattern(1000 + i, BLOCK),
            "block {i}"
        );
    }
    // Throughput is reported above for information only; speed is judged by bench/, not
    // by timed assertions in tests.
}

#[test]
fn resize_is_noticed() {
    let _g = serial();
    let c = cluster();
    let name = c.image("resize", 32);
    let b = c.open(&name, "");
    assert_eq!(b.capacity(), 32 * MIB);
    assert_eq!(b.refresh().unwrap(), 32 * MIB);

    // Grown by an administrator elsewhere: refresh() re-reads the size.
    c.tool_within(
        120,
        "rbd",
        &[
            "resize",
            "--no-progress",
            &format!("{}/{name}", c.pool),
            "--size",
            "48M",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.refresh().unwrap() != 48 * MIB {
        assert!(
            Instant::now() < deadline,
            "refresh() never saw the new size"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b.capacity(), 48 * MIB);
    let tail = pattern(7, 4096);
    b.write_at(&tail, 48 * MIB - 4096, WriteFlags::default())
        .unwrap();
    assert_eq!(read(&b, 48 * MIB - 4096, 4096), tail);

    // Resized through the engine: another client sees it, and bad sizes are refused.
    b.resize(64 * MIB).unwrap();
    assert_eq!(b.capacity(), 64 * MIB);
    let other = c.open(&name, "");
    assert_eq!(other.capacity(), 64 * MIB);
    assert_eq!(
        b.resize(64 * MIB + 100).unwrap_err().kind(),
        ErrorKind::InvalidRequest
    );
    assert_eq!(b.resize(0).unwrap_err().kind(), ErrorKind::InvalidRequest);

    // Shrunk elsewhere: a request past the new end fails as out of range once noticed.
    c.tool_within(
        120,
        "rbd",
        &[
            "resize",
            "--no-progress",
            "--allow-shrink",
            &format!("{}/{name}", c.pool),
            "--size",
            "16M",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.refresh().unwrap() != 16 * MIB {
        assert!(Instant::now() < deadline, "refresh() never saw the shrink");
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = b
        .write_at(&tail, 48 * MIB - 4096, WriteFlags::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
}

#[test]
fn compare_and_write() {
    let _g = serial();
    let c = cluster();
    let name = c.image("caw", 16);
    let b = c.open(&name, "");
    let obj = b.object_size();
    assert_eq!(obj, 4 * MIB, "default RBD object size");
    let old = pattern(1, 512);
    let new = pattern(2, 512);
    b.write_at(&old, 8192, WriteFlags::default()).unwrap();

    // Matching: written.
    assert_eq!(b.compare_and_write(8192, &old, &new).unwrap(), None);
    assert_eq!(read(&b, 8192, 512), new);

    // Differing at byte 300: MISCOMPARE at 300, nothing written.
    let mut cmp = new.clone();
    cmp[300] ^= 0xff;
    assert_eq!(b.compare_and_write(8192, &cmp, &old).unwrap(), Some(300));
    assert_eq!(read(&b, 8192, 512), new);

    // The same in the second RADOS object, differing at the last byte.
    let third = pattern(3, 512);
    b.write_at(&third, 6 * MIB + 4096, WriteFlags::default())
        .unwrap();
    let mut cmp = third.clone();
    cmp[511] ^= 1;
    assert_eq!(
        b.compare_and_write(6 * MIB + 4096, &cmp, &new).unwrap(),
        Some(511)
    );
    assert_eq!(read(&b, 6 * MIB + 4096, 512), third);
    assert_eq!(
        b.compare_and_write(6 * MIB + 4096, &third, &new).unwrap(),
        None
    );
    assert_eq!(read(&b, 6 * MIB + 4096, 512), new);

    // Never-written blocks compare equal to zeros.
    let zeros = vec![0u8; 512];
    assert_eq!(b.compare_and_write(12 * MIB, &zeros, &new).unwrap(), None);
    assert_eq!(read(&b, 12 * MIB, 512), new);

    // Refused: more than one 512-byte sector (librbd 16.2's limit; also across an object
    // boundary), unaligned, unequal lengths, past the end.
    assert_eq!(b.max_compare_and_write_len(), 512);
    for (off, len) in [(2 * MIB, 1024), (obj - 512, 1024), (100, 512)] {
        let e = b
            .compare_and_write(off, &pattern(5, len), &pattern(6, len))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{off}+{len}: {e}");
    }
    let e = b.compare_and_write(0, &zeros, &new[..256]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    let e = b.compare_and_write(b.capacity(), &zeros, &new).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange);

    // Two clients racing on the same block: exactly one wins each round (the ATS use).
    let other = c.open(&name, "");
    let mut current = read(&b, 8192, 512);
    for round in 0..20u64 {
        let mine = pattern(100 + round, 512);
        let theirs = pattern(200 + round, 512);
        let (r1, r2) = std::thread::scope(|s| {
            let h1 = s.spawn(|| b.compare_and_write(8192, &current, &mine).unwrap());
            let h2 = s.spawn(|| other.compare_and_write(8192, &current, &theirs).unwrap());
            (h1.join().unwrap(), h2.join().unwrap())
        });
        assert!(
            r1.is_none() ^ r2.is_none(),
            "round {round}: exactly one must win, got {r1:?} {r2:?}"
        );
        current = if r1.is_none() { mine } else { theirs };
        assert_eq!(read(&b, 8192, 512), current);
    }
}

#[test]
fn open_errors_are_clear() {
    let _g = serial();
    let c = cluster();
    let name = c.image("errors", 8);
    let conf = c.conf.display().to_string();
    let open = |s: String| {
        let mut o = OpenOptions::new(RbdConfig::parse(&s).unwrap());
        o.connect_timeout = Duration::from_secs(5);
        let t = Instant::now();
        let r = RbdBackstore::open(&o);
        (r.map(drop), t.elapsed())
    };
    let (r, _) = open(format!("rbd/nopool/{name};conf={conf}"));
    assert!(
        matches!(&r, Err(RbdError::PoolNotFound { pool }) if pool == "nopool"),
        "{r:?}"
    );
    let (r, _) = open(format!("rbd/{}/noimage;conf={conf}", c.pool));
    assert!(matches!(&r, Err(RbdError::ImageNotFound { .. })), "{r:?}");
    assert_eq!(
        chain(&r.unwrap_err()),
        format!(
            "RBD image \"noimage\" does not exist in pool \"{}\"",
            c.pool
        )
    );
    let (r, _) = open(format!("rbd/{}/{name};conf={conf};id=nobody", c.pool));
    assert!(
        matches!(&r, Err(RbdError::Auth { user, .. }) if user == "client.nobody"),
        "{r:?}"
    );
    let (r, _) = open(format!("rbd/{}/{name};conf=/nonexistent/ceph.conf", c.pool));
    assert!(matches!(&r, Err(RbdError::ConfRead { .. })), "{r:?}");
    let (r, _) = open(format!("rbd/{}/{name};conf=/dev/null", c.pool));
    assert!(matches!(&r, Err(RbdError::NoMonitors { .. })), "{r:?}");

    // A configuration whose monitor does not answer: bounded by the connect timeout.
    let dead = std::env::temp_dir().join(format!("rustio-rbd-dead-{}.conf", std::process::id()));
    let keyring = c.dir.join("keyring");
    std::fs::write(
        &dead,
        format!(
            "[global]\nmon host = 127.0.0.1:1\nkeyring = {}\nlog file = /dev/null\n",
            keyring.display()
        ),
    )
    .unwrap();
    let (r, took) = open(format!("rbd/{}/{name};conf={}", c.pool, dead.display()));
    let _ = std::fs::remove_file(&dead);
    let e = r.unwrap_err();
    assert!(matches!(e, RbdError::ConnectTimeout { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(took < Duration::from_secs(30), "connect took {took:?}");
    assert_eq!(e.into_backstore("rbd/x/y").kind(), ErrorKind::Busy);

    // Read-only opens refuse writes.
    let mut o = c.options(&name);
    o.read_only = true;
    let ro = RbdBackstore::open(&o).unwrap();
    assert!(ro.capabilities().read_only);
    assert_eq!(
        ro.write_at(&[0u8; 512], 0, WriteFlags::default())
            .unwrap_err()
            .kind(),
        ErrorKind::ReadOnly
    );
    assert_eq!(read(&ro, 0, 512), vec![0u8; 512]);
}

#[test]
fn osd_restart_under_load_loses_nothing() {
    let _g = serial();
    let c = cluster();
    let name = c.image("osd-restart", 128);
    let b = c.open(&name, ";osd_op_timeout=60");
    const BLOCK: usize = 64 * 1024;
    let slots = b.capacity() / BLOCK as u64;
    let stop = AtomicBool::new(false);
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let retries = AtomicU64::new(0);
    let max_latency_ms = AtomicU64::new(0);
    let revive = Revive(&c);
    let (before, during_restart) = std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    // Later rounds overwrite earlier ones with a new pattern.
                    let slot = i % slots;
                    let data = pattern(i, BLOCK);
                    let t = Instant::now();
                    loop {
                        match b.write_at(&data, slot * BLOCK as u64, WriteFlags::default()) {
                            Ok(()) => break,
                            Err(e) if e.kind() == ErrorKind::Busy => {
                                // What an initiator does with BUSY: try again.
                                retries.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            Err(e) => panic!("write {i}: {}", chain(&e)),
                        }
                    }
                    max_latency_ms.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        let before = done.load(Ordering::Relaxed);
        c.daemon(&["stop", "osd.0"]);
        std::thread::sleep(Duration::from_secs(5));
        let during = done.load(Ordering::Relaxed);
        c.daemon(&["start", "osd.0"]);
        // Writes resume once the OSD is back and peered.
        let deadline = Instant::now() + Duration::from_secs(90);
        while done.load(Ordering::Relaxed) < during + 50 {
            assert!(
                Instant::now() < deadline,
                "writes did not resume after the OSD restart"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        (before, during)
    });
    drop(revive);
    let total = next.load(Ordering::Relaxed);
    eprintln!(
        "osd restart: {before} writes before the stop, {during_restart} by the restart, \
         {total} in all; {} Busy retries; longest write {} ms",
        retries.load(Ordering::Relaxed),
        max_latency_ms.load(Ordering::Relaxed)
    );
    assert!(before > 0, "no write completed before the OSD was stopped");
    assert!(
        max_latency_ms.load(Ordering::Relaxed) >= 2000,
        "no write stalled while the OSD was down"
    );
    // Every slot holds the pattern of the last write issued to it.
    b.flush().unwrap();
    drop(b);
    let check = c.open(&name, "");
    let written = total.min(slots);
    for slot in 0..written {
        // The highest write index below `total` that went to this slot.
        let last = slot + (total - 1 - slot) / slots * slots;
        assert_eq!(
            read(&check, slot * BLOCK as u64, BLOCK),
            pattern(last, BLOCK),
            "slot {slot} lost write {last}"
        );
    }
}

#[test]
fn cluster_down_fails_busy_in_bounded_time() {
    let _g = serial();
    let c = cluster();
    let name = c.image("cluster-down", 16);
    // 10 s is allowed because the test cluster's [client] section sets a short heartbeat
    // grace + interval (5 s); see tests/ceph/start.sh.
    let b = c.open(&name, ";osd_op_timeout=10");
    assert_eq!(b.osd_op_timeout(), Duration::from_secs(10));
    let data = pattern(9, 4096);
    b.write_at(&data, 0, WriteFlags::default()).unwrap();

    let revive = Revive(&c);
    c.daemon(&["stop-all"]);
    let t = Instant::now();
    let err = b
        .write_at(&pattern(10, 4096), 8192, WriteFlags::FUA)
        .expect_err("a write with the cluster down must fail");
    let took = t.elapsed();
    eprintln!(
        "write with the cluster down failed after {took:?}: {}",
        chain(&err)
    );
    assert_eq!(err.kind(), ErrorKind::Busy, "{}", chain(&err));
    assert!(took < Duration::from_secs(40), "took {took:?}");

    let t = Instant::now();
    let mut buf = vec![0u8; 4096];
    let err = b
        .read_at(&mut buf, 0)
        .expect_err("a read with the cluster down must fail");
    assert_eq!(err.kind(), ErrorKind::Busy, "{}", chain(&err));
    assert!(
        t.elapsed() < Duration::from_secs(40),
        "took {:?}",
        t.elapsed()
    );

    // Opening fails within the connect timeout, as Busy.
    let mut o = c.options(&name);
    o.connect_timeout = Duration::from_secs(3);
    let t = Instant::now();
    let e = RbdBackstore::open(&o).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "open took {:?}",
        t.elapsed()
    );
    assert_eq!(e.into_backstore(b.spec()).kind(), ErrorKind::Busy);

    // The cluster comes back: the same handle works again, data intact.
    drop(revive);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match b.read_at(&mut buf, 0) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::Busy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("read after the cluster came back: {}", chain(&e)),
        }
    }
    assert_eq!(buf, data);
    let again = pattern(11, 4096);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match b.write_at(&again, 8192, WriteFlags::FUA) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::Busy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("write after the cluster came back: {}", chain(&e)),
        }
    }
    assert_eq!(read(&b, 8192, 4096), again);
}
