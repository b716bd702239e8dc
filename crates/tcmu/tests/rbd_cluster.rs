//! The `user:rbd` handler against a real Ceph cluster (tests/ceph/run-tests.sh starts one
//! and runs this with `--features rbd`; `RUSTIO_CEPH_CONF` names its ceph.conf,
//! `RUSTIO_CEPH_POOL` the pool, default `rbd`).
#![cfg(feature = "rbd")]

use std::process::Command;

use rustio_backstore::{Backstore, WriteFlags};
use rustio_tcmu::handler::{DeviceInfo, Handler, RbdHandler, StoreSpec};

fn rbd(conf: &str, args: &[&str]) {
    let out = Command::new("timeout")
        .args(["120", "rbd", "--conf", conf])
        .args(args)
        .output()
        .expect("run the rbd CLI");
    assert!(
        out.status.success(),
        "rbd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dev(size: u64) -> StoreSpec {
    DeviceInfo {
        name: "rbd-test".into(),
        size,
        block_size: 512,
        max_sectors: 128,
        write_cache: true,
        unit_serial: None,
    }
    .spec()
}

#[test]
fn rbd_handler_serves_an_image_with_tcmu_runner_config() {
    let conf = std::env::var("RUSTIO_CEPH_CONF")
        .expect("RUSTIO_CEPH_CONF is not set: run tests/ceph/run-tests.sh, which starts a cluster");
    let pool = std::env::var("RUSTIO_CEPH_POOL").unwrap_or_else(|_| "rbd".into());
    let image = format!("tcmu-handler-{}", std::process::id());
    let spec = format!("{pool}/{image}");
    rbd(&conf, &["create", "--size", "8M", &spec]);

    // What the kernel passes after `rbd/` in dev_config, tcmu-runner's syntax.
    let cfg = format!("{spec};conf={conf};osd_op_timeout=30");
    let h = RbdHandler;
    h.check_config(&cfg).expect("config accepted");
    let result = std::panic::catch_unwind(|| {
        let store = h.open(&cfg, &dev(8 << 20)).expect("open the image");
        assert_eq!(store.capacity(), 8 << 20);
        let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
        let at = (8 << 20) - data.len() as u64;
        store
            .write_at(&data, at, WriteFlags::default())
            .expect("write the last 64 KiB");
        store.flush().expect("flush");
        let mut back = vec![0u8; data.len()];
        store.read_at(&mut back, at).expect("read back");
        assert_eq!(back, data);
        drop(store);

        // Like tcmu-runner: a dev_size that differs from the image is refused, with both
        // sizes in the message.
        let e = match h.open(&cfg, &dev(16 << 20)) {
            Ok(_) => panic!("a dev_size different from the image was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("size misconfigured") && e.contains(&spec), "{e}");
        // A missing image is a clear error, not a hang.
        let missing = format!("{pool}/no-such-image-{};conf={conf}", std::process::id());
        assert!(h.open(&missing, &dev(8 << 20)).is_err());
    });
    rbd(&conf, &["rm", "--no-progress", &spec]);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
