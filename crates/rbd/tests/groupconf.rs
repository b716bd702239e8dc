//! The group configuration object ([`GroupConfigStore`]) on a real cluster: two stores,
//! each with its own cluster connection, stand for the admin's `rustio group push` and a
//! gateway.
//!
//! Needs the `rbd` feature and `RUSTIO_CEPH_CONF` (a cluster of `tests/ceph/start.sh`);
//! without it they fail, saying how to start one (as every cluster test here does).
//! Groups are named after the process id, so runs against a kept cluster do not collide,
//! and their objects are removed at the end.

#![cfg(feature = "rbd")]

use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustio_rbd::groupconf::{
    applied_object_name, object_name, AppliedRecord, GroupConfError, GroupConfigStore, GroupEvent,
    Outcome, NOTIFY_TIMEOUT,
};
use rustio_rbd::{OpenOptions, RbdConfig};

mod common;
use common::{cluster, Cluster};

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

impl Cluster {
    /// A fresh group name whose objects do not exist.
    fn group(&self, name: &str) -> String {
        let g = format!("gc-{}-{name}", std::process::id());
        self.remove(&g, &["gw-a", "gw-b"]);
        g
    }

    fn remove(&self, group: &str, gateways: &[&str]) {
        let mut objects = vec![object_name(group)];
        objects.extend(gateways.iter().map(|g| applied_object_name(group, g)));
        for o in objects {
            let _ = Command::new("timeout")
                .args(["60", "rados", "--conf"])
                .arg(&self.conf)
                .args(["-p", &self.pool, "rm", &o])
                .output();
        }
    }

    fn store(&self, group: &str) -> GroupConfigStore {
        // The image part of the cfgstring is not used by the store.
        let s = format!("rbd/{}/unused;conf={}", self.pool, self.conf.display());
        let mut o = OpenOptions::new(RbdConfig::parse(&s).expect("valid cfgstring"));
        o.connect_timeout = Duration::from_secs(10);
        GroupConfigStore::open(&o, group).unwrap_or_else(|e| panic!("{}", chain(&e)))
    }
}

#[test]
fn push_creates_version_1_then_each_push_adds_one() {
    let c = cluster();
    let g = c.group("push");
    let s = c.store(&g);
    assert_eq!(s.object(), format!("rustio.group.{g}"));
    assert!(s.load().unwrap().is_none());
    let p = s.push(b"{\"one\": 1}", "test@host").unwrap();
    assert_eq!(p.version, 1);
    let got = s.load().unwrap().unwrap();
    assert_eq!(
        (got.version, got.body.as_slice(), got.pushed_by.as_str()),
        (1, &b"{\"one\": 1}"[..], "test@host")
    );
    assert_eq!(s.push(b"{\"two\": 2}", "test@host").unwrap().version, 2);
    // Another connection sees the same thing.
    let other = c.store(&g);
    let got = other.load().unwrap().unwrap();
    assert_eq!(
        (got.version, got.body.as_slice()),
        (2, &b"{\"two\": 2}"[..])
    );
    c.remove(&g, &[]);
}

#[test]
fn of_two_pushes_based_on_one_version_exactly_one_wins() {
    let c = cluster();
    let g = c.group("conflict");
    let (a, b) = (c.store(&g), c.store(&g));
    // Both base the first push on "no configuration".
    a.push_if(None, b"first-a", "a").unwrap();
    match b.push_if(None, b"first-b", "b") {
        Err(GroupConfError::Conflict {
            expected: None,
            found: Some(1),
            ..
        }) => {}
        other => panic!("want a conflict, got {other:?}"),
    }
    // Both read version 1, then push concurrently (threads released together).
    let a = Arc::new(a);
    let b = Arc::new(b);
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let run = |s: Arc<GroupConfigStore>, body: &'static [u8]| {
        let barrier = Arc::clone(&barrier);
        std::thread::spawn(move || {
            barrier.wait();
            s.push_if(Some(1), body, "t")
        })
    };
    let ta = run(Arc::clone(&a), b"second-a");
    let tb = run(Arc::clone(&b), b"second-b");
    let ra = ta.join().unwrap();
    let rb = tb.join().unwrap();
    let (won, lost) = match (&ra, &rb) {
        (Ok(_), Err(_)) => (b"second-a", rb),
        (Err(_), Ok(_)) => (b"second-b", ra),
        _ => panic!("exactly one must win: {ra:?} / {rb:?}"),
    };
    match lost {
        Err(e @ GroupConfError::Conflict { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("expected version 1, found version 2"), "{msg}");
        }
        other => panic!("the loser must get a conflict: {other:?}"),
    }
    let now = a.load().unwrap().unwrap();
    assert_eq!((now.version, now.body.as_slice()), (2, &won[..]));
    c.remove(&g, &[]);
}

#[test]
fn a_watcher_hears_of_a_push_before_the_push_returns() {
    let c = cluster();
    let g = c.group("watch");
    let admin = c.store(&g);
    admin.push(b"v1", "admin").unwrap();
    let gateway = c.store(&g);
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    gateway
        .watch(Arc::new(move |ev| {
            let _ = tx.lock().unwrap().send((ev, Instant::now()));
        }))
        .unwrap();
    assert!(gateway.watch_ok());
    let t = Instant::now();
    let p = admin.push(b"v2", "admin").unwrap();
    let returned = Instant::now();
    assert_eq!(p.version, 2);
    assert!(p.all_acknowledged, "the watcher acknowledged");
    let (ev, at) = rx.recv_timeout(NOTIFY_TIMEOUT).expect("a notification");
    assert_eq!(ev, GroupEvent::Changed(Some(2)));
    // rados_notify2 returns once every watcher acknowledged, which is after the callback.
    assert!(at <= returned);
    eprintln!(
        "push → watcher callback {:?}, push returned after {:?}",
        at - t,
        returned - t
    );
    // A re-established watch hears the next push too.
    gateway.rewatch().unwrap();
    assert!(gateway.watch_ok());
    admin.push(b"v3", "admin").unwrap();
    let (ev, _) = rx.recv_timeout(NOTIFY_TIMEOUT).expect("a notification");
    assert_eq!(ev, GroupEvent::Changed(Some(3)));
    drop(gateway);
    c.remove(&g, &[]);
}

#[test]
fn applied_records_are_per_gateway_and_overwritten() {
    let c = cluster();
    let g = c.group("applied");
    let s = c.store(&g);
    assert!(s.applied("gw-a").unwrap().is_none());
    let mut rec = AppliedRecord {
        gateway: "gw-a".into(),
        version: 1,
        at_ms: 1000,
        outcome: Outcome::Applied,
        serving: 1,
    };
    s.record_applied(&rec).unwrap();
    rec.version = 2;
    rec.outcome = Outcome::Failed("bad LUN".into());
    s.record_applied(&rec).unwrap();
    assert_eq!(s.applied("gw-a").unwrap(), Some(rec.clone()));
    assert!(s.applied("gw-b").unwrap().is_none());
    // Records do not touch the config object (no version, no conflict for a push).
    assert!(s.load().unwrap().is_none());
    c.remove(&g, &["gw-a"]);
}
