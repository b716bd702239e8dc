//! Persistent reservations shared through the cluster ([`CephReservationStore`]): two
//! logical units in one process, each over its own store (its own cluster connection)
//! on the same image, stand for two gateways.
//!
//! Needs the `rbd` feature and `RUSTIO_CEPH_CONF` (a cluster of `tests/ceph/start.sh`),
//! like `tests/cluster.rs`; `tests/ceph/run-tests.sh` runs both. Objects and images are
//! named after the process id, so runs against a kept cluster do not collide.
//! `--nocapture` shows the measured notification latencies. The OSD restart test stops
//! the cluster's only OSD (`tests/ceph/daemon.sh`), so the other tests of this file wait
//! for it (a read-write lock).

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use rustio_backstore::{Backstore, RamBackstore};
use rustio_rbd::prstore::{object_name, NOTIFY_TIMEOUT};
use rustio_rbd::{CephReservationStore, RbdBackstore};
use rustio_scsi::{
    LogicalUnit, LuConfig, LunMap, Nexus, ReservationState, ReservationStore, Response, Sense,
    Status, StoreError, TargetPort, TargetPortName, TransportId, STORE_UNAVAILABLE,
};

mod common;
use common::{cluster, Cluster};

/// Read: a test that needs the cluster up; write: one that stops daemons.
static FAULTS: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    FAULTS.read().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// A fresh image name (and, with `size_mib`, the image) whose reservation object
    /// does not exist yet.
    fn image(&self, name: &str, size_mib: Option<u64>) -> String {
        let name = format!("pr-{}-{name}", std::process::id());
        let spec = format!("{}/{name}", self.pool);
        self.remove_image(&spec);
        let _ = Command::new("timeout")
            .args(["60", "rados", "--conf"])
            .arg(&self.conf)
            .args(["-p", &self.pool, "rm", &object_name(&name)])
            .output();
        if let Some(mib) = size_mib {
            self.tool("rbd", &["create", &spec, "--size", &format!("{mib}M")]);
        }
        name
    }

    fn daemon(&self, args: &[&str]) {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ceph/daemon.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .env(
                "CEPH_DIR",
                self.conf.parent().expect("conf has a directory"),
            )
            .output()
            .expect("run daemon.sh");
        assert!(
            out.status.success(),
            "daemon.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn watchers(&self, image: &str) -> usize {
        let out = self.tool(
            "rados",
            &["-p", &self.pool, "listwatchers", &object_name(image)],
        );
        String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| l.contains("watcher="))
            .count()
    }

    fn store(&self, image: &str) -> Arc<CephReservationStore> {
        Arc::new(
            CephReservationStore::open(&self.options(image))
                .unwrap_or_else(|e| panic!("{}", chain(&e))),
        )
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

/// A logical unit (one gateway's view of the LUN) and the nexus commands come from.
struct Gw {
    lu: Arc<LogicalUnit>,
    map: LunMap,
}

/// Initiator `i` through the target port of gateway `port` (its own relative port id,
/// port group and portal group tag, as gateways of one group have).
fn nexus(i: u32, port: u16) -> Nexus {
    Nexus::new(
        TransportId::iscsi_port(
            format!("iqn.1994-05.com.redhat:init{i}"),
            [0x23, 0xd0, 0, 0, 0, i as u8],
        ),
        TargetPort::new(
            port,
            port,
            TargetPortName::Iscsi {
                name: "iqn.2024-01.io.rustio:gw".into(),
                tpgt: port,
            },
        ),
    )
}

impl Gw {
    fn new(backstore: Arc<dyn Backstore>, store: Arc<dyn ReservationStore>) -> Gw {
        let lu =
            LogicalUnit::with_reservation_store(backstore, LuConfig::new("t", "pr-serial"), store)
                .unwrap();
        let mut map = LunMap::new();
        map.insert(0, lu.clone(), false);
        Gw { lu, map }
    }

    fn ram(store: Arc<dyn ReservationStore>) -> Gw {
        Gw::new(Arc::new(RamBackstore::new(1 << 20, 512).unwrap()), store)
    }

    fn run(&self, n: &Nexus, cdb: &[u8], data_out: &[u8]) -> (Response, Vec<u8>) {
        common::execute(&self.lu, &self.map, n, cdb, data_out)
    }

    /// Consumes unit attentions (POWER ON for a new nexus), like an initiator's TUR loop.
    fn clear_ua(&self, n: &Nexus) {
        for _ in 0..10 {
            if self.tur(n) == Response::GOOD {
                return;
            }
        }
        panic!("unit attentions do not clear");
    }

    fn tur(&self, n: &Nexus) -> Response {
        self.run(n, &[0; 6], &[]).0
    }

    fn pr_out(&self, n: &Nexus, sa: u8, ty: u8, key: u64, sa_key: u64) -> Response {
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&key.to_be_bytes());
        p[8..16].copy_from_slice(&sa_key.to_be_bytes());
        let mut c = [0u8; 10];
        c[0] = 0x5f;
        c[1] = sa;
        c[2] = ty;
        c[5..9].copy_from_slice(&24u32.to_be_bytes());
        self.run(n, &c, &p).0
    }

    /// PERSISTENT RESERVE IN, READ KEYS: (PRgeneration, keys).
    fn keys(&self, n: &Nexus) -> (u32, Vec<u64>) {
        let (r, d) = self.run(n, &[0x5e, 0, 0, 0, 0, 0, 0, 0x40, 0, 0], &[]);
        assert_eq!(r, Response::GOOD);
        let gen = u32::from_be_bytes(d[0..4].try_into().unwrap());
        let len = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize;
        let keys = d[8..8 + len]
            .chunks(8)
            .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
            .collect();
        (gen, keys)
    }

    /// READ RESERVATION: (key, type) of the reservation, if any.
    fn reservation(&self, n: &Nexus) -> Option<(u64, u8)> {
        let (r, d) = self.run(n, &[0x5e, 1, 0, 0, 0, 0, 0, 0x40, 0, 0], &[]);
        assert_eq!(r, Response::GOOD);
        (u32::from_be_bytes(d[4..8].try_into().unwrap()) == 16).then(|| {
            (
                u64::from_be_bytes(d[8..16].try_into().unwrap()),
                d[21] & 0x0f,
            )
        })
    }

    fn write(&self, n: &Nexus) -> Response {
        self.run(n, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0x5a; 512])
            .0
    }

    fn read(&self, n: &Nexus) -> Response {
        self.run(n, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]).0
    }
}

const CONFLICT: Response = Response {
    status: Status::ReservationConflict,
    sense: None,
};

// PERSISTENT RESERVE OUT service actions (SPC-4 6.16.2) and types (6.16.3 table 209).
const REGISTER: u8 = 0;
const RESERVE: u8 = 1;
const RELEASE: u8 = 2;
const PREEMPT: u8 = 4;
const WRITE_EXCLUSIVE: u8 = 1;
const WE_REGISTRANTS_ONLY: u8 = 5;

/// Issue #22 item 4 across two gateways on one RBD image: X reserves WRITE EXCLUSIVE
/// through A; Y's WRITE through B gets RESERVATION CONFLICT, its READ GOOD (SPC-4 5.13.1
/// table 66); X's PREEMPT of Y's key through A gives Y REGISTRATIONS PREEMPTED on B
/// (5.13.11.4) and X's leaving a registrants-only reservation gives Y RESERVATIONS
/// RELEASED on B (5.13.11.2.3) — on Y's very next command after X's command returned,
/// because the writer waits for every watcher's acknowledgement. Also measures how
/// soon a command polling through B sees it.
#[test]
fn reservation_through_a_binds_b_and_changes_reach_b() {
    let _g = shared();
    let c = cluster();
    let image = c.image("two-gw", Some(16));
    let opts = c.options(&image);
    let a = Gw::new(
        Arc::new(RbdBackstore::open(&opts).unwrap()),
        c.store(&image),
    );
    let b = Gw::new(
        Arc::new(RbdBackstore::open(&opts).unwrap()),
        c.store(&image),
    );
    let (x, y) = (nexus(1, 1), nexus(2, 2));
    a.clear_ua(&x);
    b.clear_ua(&y);

    assert_eq!(b.pr_out(&y, REGISTER, 0, 0, 0xbb), Response::GOOD);
    assert_eq!(a.pr_out(&x, REGISTER, 0, 0, 0xaa), Response::GOOD);
    let t = Instant::now();
    assert_eq!(
        a.pr_out(&x, RESERVE, WRITE_EXCLUSIVE, 0xaa, 0),
        Response::GOOD
    );
    let reserve_took = t.elapsed();
    assert_eq!(b.write(&y), CONFLICT);
    assert_eq!(b.read(&y), Response::GOOD);
    assert_eq!(a.write(&x), Response::GOOD);
    assert_eq!(b.reservation(&y), Some((0xaa, WRITE_EXCLUSIVE)));
    assert_eq!(b.keys(&y), (2, vec![0xbb, 0xaa]));

    // PREEMPT while Y polls through B: when does Y see it?
    let b = Arc::new(b);
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let poller = {
        let (b, y, stop, seen) = (b.clone(), y.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                let r = b.tur(&y);
                if r != Response::GOOD {
                    assert_eq!(r, Response::check(Sense::UA_REGISTRATIONS_PREEMPTED));
                    *seen.lock().unwrap() = Some(Instant::now());
                    return;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    assert_eq!(
        a.pr_out(&x, PREEMPT, WRITE_EXCLUSIVE, 0xaa, 0xbb),
        Response::GOOD
    );
    let preempt_took = t0.elapsed();
    // Y's next command after the PREEMPT returned sees it (or the poller just did).
    let next = b.tur(&y);
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    let polled = *seen.lock().unwrap();
    match polled {
        Some(_) => assert_eq!(next, Response::GOOD),
        None => assert_eq!(next, Response::check(Sense::UA_REGISTRATIONS_PREEMPTED)),
    }
    let latency = polled.map(|s| s.saturating_duration_since(t0));
    println!(
        "pr-notify: RESERVE took {reserve_took:?}, PREEMPT took {preempt_took:?}; \
         B's poller saw REGISTRATIONS PREEMPTED {latency:?} after the PREEMPT began"
    );
    // The bound: a watcher acknowledges within NOTIFY_TIMEOUT or the writer stops
    // waiting (then the silent gateway's watch times out and it re-reads).
    if let Some(l) = latency {
        assert!(l < NOTIFY_TIMEOUT, "{l:?}");
    }
    assert!(preempt_took < NOTIFY_TIMEOUT, "{preempt_took:?}");
    assert_eq!(b.keys(&y).1, vec![0xaa]);

    // RESERVATIONS RELEASED: Y registers again, X takes WE – registrants only and
    // unregisters; Y's next command through B reports it.
    assert_eq!(b.pr_out(&y, REGISTER, 0, 0, 0xbb), Response::GOOD);
    assert_eq!(
        a.pr_out(&x, RELEASE, WRITE_EXCLUSIVE, 0xaa, 0),
        Response::GOOD
    );
    assert_eq!(b.write(&y), Response::GOOD);
    assert_eq!(
        a.pr_out(&x, RESERVE, WE_REGISTRANTS_ONLY, 0xaa, 0),
        Response::GOOD
    );
    assert_eq!(b.write(&y), Response::GOOD); // a registrant
    let z = nexus(3, 2);
    b.clear_ua(&z);
    assert_eq!(b.write(&z), CONFLICT); // not one
    assert_eq!(a.pr_out(&x, REGISTER, 0, 0xaa, 0), Response::GOOD);
    assert_eq!(b.tur(&y), Response::check(Sense::UA_RESERVATIONS_RELEASED));
    assert_eq!(b.tur(&y), Response::GOOD);
    assert_eq!(b.write(&z), Response::GOOD);
    assert_eq!(a.reservation(&x), None);
}

/// Concurrent REGISTERs through both gateways (two threads each, distinct initiators)
/// all land: compare-and-set conflicts between the two stores are retried (and an
/// initiator retries BUSY, which bounded retries may end with), nothing is lost.
#[test]
fn concurrent_registers_through_both_gateways_all_land() {
    let _g = shared();
    let c = cluster();
    let image = c.image("concurrent", None);
    let a = Arc::new(Gw::ram(c.store(&image)));
    let b = Arc::new(Gw::ram(c.store(&image)));
    let busy = Arc::new(AtomicU32::new(0));
    const PER_THREAD: u32 = 8;
    let mut threads = Vec::new();
    for t in 0..4u32 {
        let (gw, port) = if t % 2 == 0 {
            (a.clone(), 1)
        } else {
            (b.clone(), 2)
        };
        let busy = busy.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..PER_THREAD {
                let id = t * PER_THREAD + i + 1;
                let n = nexus(id, port);
                gw.clear_ua(&n);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let r = gw.pr_out(&n, REGISTER, 0, 0, u64::from(id));
                    if r == Response::status(Status::Busy) && Instant::now() < deadline {
                        busy.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    assert_eq!(r, Response::GOOD, "REGISTER of {id}");
                    break;
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let all = 4 * PER_THREAD;
    for (gw, n) in [(&a, nexus(100, 1)), (&b, nexus(101, 2))] {
        gw.clear_ua(&n);
        let (gen, mut keys) = gw.keys(&n);
        keys.sort_unstable();
        assert_eq!(keys, (1..=u64::from(all)).collect::<Vec<_>>());
        assert_eq!(gen, all);
    }
    println!(
        "pr-concurrent: {all} registrations, {} BUSY retries",
        busy.load(Ordering::Relaxed)
    );
}

/// The state lives in the cluster: dropping both gateways and opening new ones finds
/// the registrations and the reservation (and SPC-2 reservations) as they were.
#[test]
fn state_survives_both_gateways() {
    let _g = shared();
    let c = cluster();
    let image = c.image("persist", None);
    let (x, y) = (nexus(1, 1), nexus(2, 2));
    {
        let a = Gw::ram(c.store(&image));
        let b = Gw::ram(c.store(&image));
        a.clear_ua(&x);
        b.clear_ua(&y);
        assert_eq!(a.pr_out(&x, REGISTER, 0, 0, 0xaa), Response::GOOD);
        assert_eq!(b.pr_out(&y, REGISTER, 0, 0, 0xbb), Response::GOOD);
        assert_eq!(
            a.pr_out(&x, RESERVE, WRITE_EXCLUSIVE, 0xaa, 0),
            Response::GOOD
        );
    }
    let a = Gw::ram(c.store(&image));
    let b = Gw::ram(c.store(&image));
    a.clear_ua(&x);
    b.clear_ua(&y);
    assert_eq!(b.keys(&y), (2, vec![0xaa, 0xbb]));
    assert_eq!(b.reservation(&y), Some((0xaa, WRITE_EXCLUSIVE)));
    assert_eq!(b.write(&y), CONFLICT);
    assert_eq!(a.write(&x), Response::GOOD);
    // The object is the documented text.
    let raw = c.tool("rados", &["-p", &c.pool, "get", &object_name(&image), "-"]);
    let text = String::from_utf8(raw).unwrap();
    assert!(
        text.starts_with("rustio-pr-shared 1\nversion 3\n"),
        "{text}"
    );
    let xattr = c.tool(
        "rados",
        &[
            "-p",
            &c.pool,
            "getxattr",
            &object_name(&image),
            "rustio.pr.version",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&xattr).trim(), "3");
}

/// Store level: a stale compare-and-set loses against the other store's commit and
/// gets its state; the other store's subscriber hears of a commit before the writer's
/// compare-and-set returns (acknowledged notify).
#[test]
fn compare_and_set_and_notification_between_stores() {
    let _g = shared();
    let c = cluster();
    let image = c.image("cas", None);
    let sa = c.store(&image);
    let sb = c.store(&image);
    /// What B's subscriber heard: the version and when.
    type Heard = Mutex<Vec<(Option<u64>, Instant)>>;
    let heard: Arc<Heard> = Arc::default();
    {
        let heard = heard.clone();
        sb.watch(Box::new(move |v| {
            heard.lock().unwrap().push((v, Instant::now()))
        }));
    }
    let v0 = sa.load().unwrap();
    assert_eq!(v0.version, 0);
    assert_eq!(sb.load().unwrap().version, 0);
    let mut times = Vec::new();
    for round in 0..10u64 {
        let cur = sa.load().unwrap();
        let t0 = Instant::now();
        let v = sa
            .compare_and_set(cur.version, (*cur.state).clone())
            .unwrap();
        let took = t0.elapsed();
        assert_eq!(v, round + 1);
        let h = heard.lock().unwrap();
        let (hv, at) = *h.last().expect("B heard of the commit before it returned");
        assert_eq!(hv, Some(v));
        times.push((at.saturating_duration_since(t0), took));
        drop(h);
        // B's cache was dropped: it reads the new version.
        assert_eq!(sb.load().unwrap().version, v);
    }
    // B's stale compare-and-set: a conflict carrying A's state.
    match sb.compare_and_set(3, ReservationState::default()) {
        Err(StoreError::Conflict(now)) => assert_eq!(now.version, 10),
        other => panic!("{other:?}"),
    }
    times.sort();
    println!(
        "pr-notify: store B heard commits (min/median/max) {:?}/{:?}/{:?} after the \
         compare-and-set began; compare-and-set incl. notify took {:?}/{:?}/{:?}",
        times[0].0,
        times[5].0,
        times[9].0,
        times.iter().map(|t| t.1).min().unwrap(),
        {
            let mut t: Vec<_> = times.iter().map(|t| t.1).collect();
            t.sort();
            t[5]
        },
        times.iter().map(|t| t.1).max().unwrap(),
    );
}

/// An object at the largest version: the next compare-and-set is refused with a typed
/// error instead of wrapping to version 0 (which other gateways would take for older than
/// their cache, and keep serving stale reservations).
#[test]
fn version_at_its_maximum_is_not_wrapped() {
    let _g = shared();
    let c = cluster();
    let image = c.image("vmax", None);
    let obj = object_name(&image);
    let a = c.store(&image);
    let v0 = a.load().unwrap();
    assert_eq!(
        a.compare_and_set(v0.version, (*v0.state).clone()).unwrap(),
        1
    );
    let raw = String::from_utf8(c.tool("rados", &["-p", &c.pool, "get", &obj, "-"])).unwrap();
    let max = u64::MAX.to_string();
    let text = raw.replacen("version 1\n", &format!("version {max}\n"), 1);
    assert_ne!(text, raw, "{raw}");
    let dir = std::env::temp_dir().join(format!("rustio-pr-vmax-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("obj");
    std::fs::write(&file, &text).unwrap();
    c.tool(
        "rados",
        &["-p", &c.pool, "put", &obj, file.to_str().unwrap()],
    );
    c.tool(
        "rados",
        &["-p", &c.pool, "setxattr", &obj, "rustio.pr.version", &max],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let b = c.store(&image);
    let cur = b.load().unwrap();
    assert_eq!(cur.version, u64::MAX);
    match b.compare_and_set(cur.version, (*cur.state).clone()) {
        Err(StoreError::Unavailable(e)) => {
            let e = e
                .downcast::<rustio_rbd::PrStoreError>()
                .expect("a PrStoreError");
            assert!(
                matches!(*e, rustio_rbd::PrStoreError::VersionExhausted { version, .. } if version == u64::MAX),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Nothing was written.
    assert_eq!(
        c.tool("rados", &["-p", &c.pool, "get", &obj, "-"]),
        text.into_bytes()
    );
}

/// A corrupt object: a typed error (`PrStoreError::Corrupt` under
/// `StoreError::Unavailable`), commands that need the state get NOT READY, LOGICAL
/// UNIT IS IN PROCESS OF BECOMING READY (retryable), INQUIRY still answers, nothing
/// panics; once the object is repaired the same unit recovers by itself.
#[test]
fn corrupt_object_is_retryable_not_ready() {
    let _g = shared();
    let c = cluster();
    let image = c.image("corrupt", None);
    let x = nexus(1, 1);
    let obj = object_name(&image);
    let good = {
        let a = Gw::ram(c.store(&image));
        a.clear_ua(&x);
        assert_eq!(a.pr_out(&x, REGISTER, 0, 0, 0xaa), Response::GOOD);
        assert_eq!(
            a.pr_out(&x, RESERVE, WRITE_EXCLUSIVE, 0xaa, 0),
            Response::GOOD
        );
        c.tool("rados", &["-p", &c.pool, "get", &obj, "-"])
    };
    let dir = std::env::temp_dir().join(format!("rustio-pr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (bad_file, good_file) = (dir.join("bad"), dir.join("good"));
    std::fs::write(
        &bad_file,
        b"rustio-pr-shared 1\nversion 2\nres 9 9\n\xff garbage",
    )
    .unwrap();
    std::fs::write(&good_file, &good).unwrap();
    c.tool(
        "rados",
        &["-p", &c.pool, "put", &obj, bad_file.to_str().unwrap()],
    );

    let store = c.store(&image);
    match store.load() {
        Err(StoreError::Unavailable(e)) => {
            let e = e
                .downcast::<rustio_rbd::PrStoreError>()
                .expect("a PrStoreError");
            assert!(
                matches!(*e, rustio_rbd::PrStoreError::Corrupt { .. }),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let y = nexus(2, 2);
    let b = Gw::ram(store);
    let _ = b.tur(&y); // POWER ON
    let not_ready = Response::check(STORE_UNAVAILABLE);
    assert_eq!(b.write(&y), not_ready);
    assert_eq!(b.read(&y), not_ready);
    assert_eq!(b.pr_out(&y, REGISTER, 0, 0, 0xbb), not_ready);
    assert_eq!(b.run(&y, &[0x12, 0, 0, 0, 36, 0], &[]).0, Response::GOOD);

    c.tool(
        "rados",
        &["-p", &c.pool, "put", &obj, good_file.to_str().unwrap()],
    );
    assert_eq!(b.write(&y), CONFLICT);
    assert_eq!(b.read(&y), Response::GOOD);
    assert_eq!(b.reservation(&y), Some((0xaa, WRITE_EXCLUSIVE)));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every store watches the object while it lives; a notification whose payload is not
/// a version (someone else's `rados notify`) still drops the cache and tells the units
/// (with `None`: re-read everything); a write without notification is not seen until
/// then (the cache is trusted between notifications).
#[test]
fn watchers_and_foreign_notifications() {
    let _g = shared();
    let c = cluster();
    let image = c.image("watch", None);
    let obj = object_name(&image);
    let sa = c.store(&image);
    assert_eq!(c.watchers(&image), 1);
    let sb = c.store(&image);
    assert_eq!(c.watchers(&image), 2);
    let heard: Arc<Mutex<Vec<Option<u64>>>> = Arc::default();
    {
        let heard = heard.clone();
        sa.watch(Box::new(move |v| heard.lock().unwrap().push(v)));
    }
    assert_eq!(sa.load().unwrap().version, 0);
    // Through B: A hears version 1 and reads it.
    sb.compare_and_set(0, ReservationState::default()).unwrap();
    assert_eq!(heard.lock().unwrap().as_slice(), &[Some(1)]);
    assert_eq!(sa.load().unwrap().version, 1);
    // Behind the stores' backs: not seen while the cache is valid...
    let file = std::env::temp_dir().join(format!("rustio-pr-watch-{}", std::process::id()));
    std::fs::write(&file, ReservationState::default().encode_shared(7)).unwrap();
    c.tool(
        "rados",
        &["-p", &c.pool, "put", &obj, file.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(sa.load().unwrap().version, 1);
    // ...until someone notifies, whatever the payload.
    c.tool("rados", &["-p", &c.pool, "notify", &obj, "hello"]);
    assert_eq!(heard.lock().unwrap().last(), Some(&None));
    assert_eq!(sa.load().unwrap().version, 7);
    drop(sa);
    assert_eq!(c.watchers(&image), 1);
    drop(sb);
    assert_eq!(c.watchers(&image), 0);
}

/// Restarts every daemon when dropped, so a failed fault test leaves a usable cluster.
struct Revive<'a>(&'a Cluster);

impl Drop for Revive<'_> {
    fn drop(&mut self) {
        self.0.daemon(&["start-all"]);
        self.0.daemon(&["wait-osd-up"]);
    }
}

/// The watches survive the OSD going away for longer than the watch timeout: after it
/// is back, a reservation made through A binds B (B's watch reported the break, B
/// re-watched and re-read) within a bound this test measures. Meanwhile commands that
/// need the state end NOT READY or BUSY (retryable), never hang past the op timeout.
#[test]
fn osd_restart_keeps_gateways_in_step() {
    let _g = FAULTS.write().unwrap_or_else(PoisonError::into_inner);
    let c = cluster();
    let image = c.image("osd-restart", None);
    let mut opts = c.options(&image);
    opts.config.osd_op_timeout = Some(Duration::from_secs(10));
    let open = || Arc::new(CephReservationStore::open(&opts).unwrap());
    let a = Gw::ram(open());
    let b = Gw::ram(open());
    let (x, y) = (nexus(1, 1), nexus(2, 2));
    a.clear_ua(&x);
    b.clear_ua(&y);
    assert_eq!(a.pr_out(&x, REGISTER, 0, 0, 0xaa), Response::GOOD);
    assert_eq!(b.write(&y), Response::GOOD);
    {
        let _revive = Revive(&c);
        c.daemon(&["stop", "osd.0"]);
        std::thread::sleep(Duration::from_secs(15));
    }
    // Retry like an initiator until A's RESERVE goes through.
    let t = Instant::now();
    let retryable = [
        Response::check(STORE_UNAVAILABLE),
        Response::status(Status::Busy),
    ];
    loop {
        let r = a.pr_out(&x, RESERVE, WRITE_EXCLUSIVE, 0xaa, 0);
        if r == Response::GOOD {
            break;
        }
        assert!(retryable.contains(&r), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "RESERVE never went through"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let reserve_after = t.elapsed();
    let t = Instant::now();
    loop {
        let r = b.write(&y);
        if r == CONFLICT {
            break;
        }
        assert!(r == Response::GOOD || retryable.contains(&r), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "B never saw the reservation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "pr-osd-restart: RESERVE through A went through {reserve_after:?} after the OSD \
         was back; B enforced it {:?} later",
        t.elapsed()
    );
    assert_eq!(b.read(&y), Response::GOOD);
    // Both gateways watch again (reconnected by librados or re-watched by the store).
    assert_eq!(c.watchers(&image), 2);
}
