//! Cooperative handover of the exclusive lock between two gateways
//! ([`rustio_rbd::handover`]): two [`GatewayImage`]s on one image in one process, each
//! with its own [`GroupAlua`] (its own cluster connections), stand for two gateways.
//!
//! Needs the `rbd` feature and `RUSTIO_CEPH_CONF` (a cluster of `tests/ceph/start.sh`),
//! like `tests/cluster.rs` and `tests/prstore.rs`; `tests/ceph/run-tests.sh` runs them.
//! Images are named after the process id. `--nocapture` shows the measured handover
//! times. Whether a client was blocklisted is read from `ceph osd blocklist ls` for the
//! address `rbd lock ls` showed for it, so other clients of a shared cluster do not
//! disturb the check.
#![cfg(feature = "rbd")]

use std::io::{IoSlice, IoSliceMut};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustio_backstore::{Backstore, WriteFlags};
use rustio_rbd::handover::TakeoverPath;
use rustio_rbd::lock::GatewayImage;
use rustio_scsi::alua::{
    AluaGroupConfig, GroupAlua, GroupMember, Ownership, NOT_READY_ALUA_TRANSITION,
};
use rustio_scsi::{
    AluaState, LogicalUnit, LuConfig, LunMap, Nexus, Response, TargetPort, TargetPortGroupId,
    TargetPortName, TransportId,
};

mod common;
use common::{cluster, Cluster};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// A fresh 64 MiB image.
    fn image(&self, name: &str) -> Image<'_> {
        let name = format!("ho-{}-{name}", std::process::id());
        let spec = format!("{}/{name}", self.pool);
        self.remove_image(&spec);
        self.tool_text("rbd", &["create", &spec, "--size", "64M"]);
        Image {
            cluster: self,
            name,
            spec,
        }
    }

    /// The address of the exclusive lock's holder (`rbd lock ls`).
    fn locker_address(&self, spec: &str) -> Option<String> {
        let out = self.tool_text("rbd", &["lock", "ls", "--format", "json", spec]);
        let at = out.find("\"address\":\"")? + "\"address\":\"".len();
        let len = out[at..].find('"')?;
        Some(out[at..at + len].to_string())
    }

    fn blocklisted(&self, addr: &str) -> bool {
        self.tool_text("ceph", &["osd", "blocklist", "ls"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(addr))
    }
}

/// An image removed (with its handover object) when dropped.
struct Image<'a> {
    cluster: &'a Cluster,
    name: String,
    spec: String,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let id = Command::new("timeout")
            .args(["60", "rbd", "--conf"])
            .arg(&self.cluster.conf)
            .args(["info", "--format", "json", &self.spec])
            .output()
            .ok()
            .and_then(|o| {
                let s = String::from_utf8_lossy(&o.stdout).into_owned();
                let at = s.find("\"id\":\"")? + "\"id\":\"".len();
                let len = s[at..].find('"')?;
                Some(s[at..at + len].to_string())
            });
        if let Some(id) = id {
            let _ = Command::new("timeout")
                .args(["60", "rados", "--conf"])
                .arg(&self.cluster.conf)
                .args([
                    "-p",
                    &self.cluster.pool,
                    "rm",
                    &rustio_rbd::handover::object_name(&id),
                ])
                .output();
        }
        let _ = Command::new("timeout")
            .args(["60", "rbd", "--conf"])
            .arg(&self.cluster.conf)
            .args(["rm", "--no-progress", &self.spec])
            .output();
    }
}

/// One gateway: its image handle and its ALUA controller (group 1 or 2 of two).
struct Gw {
    img: Arc<GatewayImage>,
    alua: Arc<GroupAlua>,
}

fn gateway(c: &Cluster, image: &str, group: u16, handover_timeout: Duration) -> Gw {
    gateway_with(c, image, group, handover_timeout, AluaState::Standby)
}

fn gateway_with(
    c: &Cluster,
    image: &str,
    group: u16,
    handover_timeout: Duration,
    non_owner: AluaState,
) -> Gw {
    let img = Arc::new(GatewayImage::open(c.options(image)).expect("open the image"));
    let config = AluaGroupConfig {
        local: TargetPortGroupId(group),
        members: [1u16, 2]
            .iter()
            .map(|&g| GroupMember {
                id: TargetPortGroupId(g),
                ports: vec![g],
                preferred: g == 1,
            })
            .collect(),
        non_owner,
        debounce: Duration::ZERO,
        handover_timeout,
    };
    let alua = GroupAlua::new(config, img.clone());
    Gw { img, alua }
}

impl Gw {
    /// A write the way the engine admits it: 04h/0Ah while the takeover runs, then GOOD.
    fn take_over(&self, bound: Duration) -> Duration {
        let t0 = Instant::now();
        if self.alua.admit().is_err() {
            assert!(
                self.alua.wait_settled(bound),
                "takeover did not end in {bound:?}"
            );
            assert_eq!(self.alua.admit(), Ok(()));
        }
        t0.elapsed()
    }

    fn write(&self, byte: u8) -> rustio_backstore::Result<()> {
        let data = vec![byte; 4096];
        self.img
            .write_vectored_at(&[IoSlice::new(&data)], 0, WriteFlags::default())
    }

    fn read(&self) -> u8 {
        let mut data = vec![0u8; 4096];
        self.img
            .read_vectored_at(&mut [IoSliceMut::new(&mut data)], 0)
            .expect("read");
        data[0]
    }
}

/// A → B → A: each takeover asks the live owner, which releases the lock and stays a
/// healthy non-owner (never blocklisted, no reopen); both gateways write with the
/// clients they opened with.
#[test]
fn cooperative_handover_between_live_gateways() {
    let _g = serial();
    let c = cluster();
    let img = c.image("coop");
    let timeout = Duration::from_secs(3);
    let bound = timeout + Duration::from_secs(10);
    let a = gateway(&c, &img.name, 1, timeout);
    let b = gateway(&c, &img.name, 2, timeout);

    let first = a.take_over(bound);
    assert_eq!(a.img.last_takeover().unwrap().path, TakeoverPath::Free);
    a.write(0xa1).expect("A writes as owner");
    let a_addr = c.locker_address(&img.spec).expect("A holds the lock");

    let ab = b.take_over(bound);
    let rb = b.img.last_takeover().unwrap();
    assert_eq!(rb.path, TakeoverPath::Handover, "{rb:?}");
    assert!(a.alua.wait_settled(bound));
    assert_eq!(a.alua.local_state(), AluaState::Standby);
    b.write(0xb2).expect("B writes as owner");
    // The released gateway still reads (it was not fenced) and sees B's write.
    assert_eq!(a.read(), 0xb2);
    let b_addr = c.locker_address(&img.spec).expect("B holds the lock");

    let ba = a.take_over(bound);
    let ra = a.img.last_takeover().unwrap();
    assert_eq!(ra.path, TakeoverPath::Handover, "{ra:?}");
    assert!(b.alua.wait_settled(bound));
    assert_eq!(b.alua.local_state(), AluaState::Standby);
    // A writes with the client it opened with: it was never blocklisted.
    a.write(0xa3).expect("A writes again with its first client");
    assert_eq!(b.read(), 0xa3);
    assert!(!c.blocklisted(&a_addr), "A ({a_addr}) was blocklisted");
    assert!(!c.blocklisted(&b_addr), "B ({b_addr}) was blocklisted");
    println!(
        "cooperative handover: free lock {first:?}; A->B {ab:?} (asking {:?}); B->A {ba:?} (asking {:?})",
        rb.asked, ra.asked
    );
    assert!(
        ab < timeout && ba < timeout,
        "a live owner answers before the timeout"
    );
}

/// An owner that does not answer (paused) loses the lock after the handover timeout:
/// the break path blocklists it; its next write fails and the engine fences it.
#[test]
fn silent_owner_is_broken_after_the_handover_timeout() {
    let _g = serial();
    let c = cluster();
    let img = c.image("dead");
    let timeout = Duration::from_secs(2);
    let bound = timeout + Duration::from_secs(10);
    let a = gateway(&c, &img.name, 1, timeout);
    let b = gateway(&c, &img.name, 2, timeout);
    a.take_over(bound);
    a.write(0xa1).expect("A writes as owner");
    let a_addr = c.locker_address(&img.spec).expect("A holds the lock");
    a.img.pause_handover(true);

    let took = b.take_over(bound);
    let rb = b.img.last_takeover().unwrap();
    assert_eq!(rb.path, TakeoverPath::Break, "{rb:?}");
    assert!(rb.asked >= timeout, "{rb:?}");
    assert!(took < timeout + Duration::from_secs(8), "{took:?}");
    println!("break path: takeover {took:?} (asking {:?})", rb.asked);
    b.write(0xb2).expect("B writes as owner");
    assert!(c.blocklisted(&a_addr), "A ({a_addr}) is blocklisted");
    // A's writes can no longer land; the engine then fences and recovers it.
    assert!(a.write(0xa3).is_err());
    // The request it did not answer reaches it late (SIGCONT): it finds its lock
    // broken, does not release anything, and is fenced and recovered instead.
    a.img.pause_handover(false);
    assert!(!a.alua.release_requested());
    assert!(a.alua.wait_settled(Duration::from_secs(60)));
    assert_eq!(a.alua.access_failed(), Some(NOT_READY_ALUA_TRANSITION));
    assert_eq!(a.read(), 0xb2, "A reads through its new client");
    assert_eq!(a.alua.local_state(), AluaState::Standby);
    assert_eq!(a.img.check(), rustio_scsi::alua::OwnerCheck::NotOwner);
    assert_eq!(b.read(), 0xb2);
    // Leave the shared cluster's blocklist as it was.
    let _ = c.tool_text("ceph", &["osd", "blocklist", "rm", &a_addr]);
}

/// Initiator 1 through the target port of gateway `port`.
fn nexus(port: u16) -> Nexus {
    Nexus::new(
        TransportId::iscsi_port("iqn.1994-05.com.redhat:init1", [0x23, 0xd0, 0, 0, 0, 1]),
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

/// A gateway's logical unit over its image, and the nexus through it.
struct Unit {
    lu: Arc<LogicalUnit>,
    map: LunMap,
    n: Nexus,
}

impl Unit {
    fn new(gw: &Gw, port: u16) -> Unit {
        let lu = LogicalUnit::new(gw.img.clone(), LuConfig::new("t", "ho-serial")).unwrap();
        assert!(lu.set_group_alua(gw.alua.clone()));
        let mut map = LunMap::new();
        map.insert(0, lu.clone(), false);
        let u = Unit {
            lu,
            map,
            n: nexus(port),
        };
        u.clear_ua();
        u
    }

    fn run(&self, cdb: &[u8], data_out: &[u8]) -> (Response, Vec<u8>) {
        common::execute(&self.lu, &self.map, &self.n, cdb, data_out)
    }

    /// Consumes unit attentions (POWER ON, ASYMMETRIC ACCESS STATE CHANGED).
    fn clear_ua(&self) {
        for _ in 0..10 {
            if self.run(&[0; 6], &[]).0 == Response::GOOD {
                return;
            }
        }
        panic!("unit attentions do not clear");
    }

    fn good(&self, cdb: &[u8], data_out: &[u8]) -> Vec<u8> {
        let (r, d) = self.run(cdb, data_out);
        assert_eq!(r, Response::GOOD, "cdb {cdb:02x?}");
        d
    }
}

/// `non_owner_state = active_non_optimized` against the cluster: READ and SYNCHRONIZE
/// CACHE run on the non-owner without moving the lock (librbd reads without it; the
/// flush is not sent); a WRITE there takes the lock over synchronously (cooperative
/// handover) and is GOOD at once; the former owner keeps reading the new data.
#[test]
fn active_non_optimized_paths_serve_io() {
    let _g = serial();
    let c = cluster();
    let img = c.image("ano");
    let timeout = Duration::from_secs(3);
    let ano = AluaState::ActiveNonOptimized;
    let a = gateway_with(&c, &img.name, 1, timeout, ano);
    let b = gateway_with(&c, &img.name, 2, timeout, ano);
    let (ua, ub) = (Unit::new(&a, 1), Unit::new(&b, 2));
    let write = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    let sync = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    let t0 = Instant::now();
    ua.good(&write, &[0x11; 4096]);
    let first = t0.elapsed();
    assert!(a.alua.is_owner());
    ua.clear_ua();
    assert_eq!(ub.good(&read, &[]), vec![0x11; 4096]);
    ub.good(&sync, &[]);
    assert!(
        a.alua.is_owner() && !b.alua.is_owner(),
        "reads moved nothing"
    );

    let t0 = Instant::now();
    ub.good(&write, &[0x22; 4096]);
    let moved = t0.elapsed();
    let rb = b.img.last_takeover().unwrap();
    assert_eq!(rb.path, TakeoverPath::Handover, "{rb:?}");
    assert!(b.alua.is_owner());
    assert!(a.alua.wait_settled(Duration::from_secs(10)));
    ua.clear_ua();
    assert_eq!(ua.good(&read, &[]), vec![0x22; 4096]);
    ua.good(&sync, &[]);
    // The reported states stay put while the lock moves (group 1 is the preferred
    // one): no ASYMMETRIC ACCESS STATE CHANGED on either gateway.
    assert_eq!(a.alua.local_state(), AluaState::ActiveOptimized);
    assert_eq!(b.alua.local_state(), ano);
    assert_eq!((a.alua.generation(), b.alua.generation()), (0, 0));
    assert_eq!(ub.good(&read, &[]), vec![0x22; 4096]);
    println!("active/non-optimized: first write (free lock) {first:?}; write through the non-owner {moved:?} (asking {:?})", rb.asked);
}
