//! What every cluster test of this crate shares: the cluster of `tests/ceph/start.sh`
//! named by `RUSTIO_CEPH_CONF` (pool `RUSTIO_CEPH_POOL`, default `rbd`). Without it the
//! tests fail on purpose, naming how to start one: with the `rbd` feature on, a green
//! run must mean the engine talked to a real cluster.
//!
//! Each test file uses what it needs (`mod common;`), hence `dead_code` allowed here.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rustio_rbd::{OpenOptions, RbdConfig};

/// The test cluster.
pub struct Cluster {
    /// Its `ceph.conf`.
    pub conf: PathBuf,
    /// The directory `start.sh` made (holds the conf, the keyring, the daemons' files).
    pub dir: PathBuf,
    /// The pool the tests use.
    pub pool: String,
}

/// The cluster of `RUSTIO_CEPH_CONF`; panics with directions when it is not set.
pub fn cluster() -> Cluster {
    let conf = std::env::var_os("RUSTIO_CEPH_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "RUSTIO_CEPH_CONF is not set: the `rbd` feature's tests need a Ceph cluster. \
                 Run tests/ceph/run-tests.sh (starts one), or start one with \
                 tests/ceph/start.sh and export RUSTIO_CEPH_CONF=$CEPH_DIR/ceph.conf"
            )
        });
    assert!(
        conf.is_file(),
        "RUSTIO_CEPH_CONF={} is not a file",
        conf.display()
    );
    let dir = conf.parent().expect("conf has a directory").to_path_buf();
    assert!(
        dir.join(".ceph-single").exists(),
        "{} was not made by tests/ceph/start.sh (no .ceph-single marker)",
        dir.display()
    );
    Cluster {
        conf,
        dir,
        pool: std::env::var("RUSTIO_CEPH_POOL").unwrap_or_else(|_| "rbd".into()),
    }
}

impl Cluster {
    /// The engine's options for `image` of the test pool (10 s connect timeout).
    pub fn options(&self, image: &str) -> OpenOptions {
        self.options_with(image, "")
    }

    /// Runs a Ceph CLI (`rbd`, `rados`, `ceph`) against the cluster (60 s bound) and
    /// returns its standard output; panics with its standard error when it fails.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        self.tool_within(60, tool, args)
    }

    /// [`Self::tool`] bounded by `secs` seconds.
    pub fn tool_within(&self, secs: u32, tool: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new("timeout")
            .arg(secs.to_string())
            .args([tool, "--conf"])
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("run the ceph CLI");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Removes the image `spec` (`pool/name`) if an earlier run left it (60 s bound;
    /// whether there was one is not checked).
    pub fn remove_image(&self, spec: &str) {
        let _ = Command::new("timeout")
            .args(["60", "rbd", "--conf"])
            .arg(&self.conf)
            .args(["rm", "--no-progress", spec])
            .output();
    }

    /// [`Self::tool`]'s output as text.
    pub fn tool_text(&self, tool: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.tool(tool, args)).into_owned()
    }

    /// [`Self::options`] with `extra` appended to the cfgstring (`;key=value…`).
    pub fn options_with(&self, image: &str, extra: &str) -> OpenOptions {
        let s = format!(
            "rbd/{}/{image};conf={}{extra}",
            self.pool,
            self.conf.display()
        );
        let mut o = OpenOptions::new(RbdConfig::parse(&s).expect("valid cfgstring"));
        o.connect_timeout = Duration::from_secs(10);
        o
    }
}

/// Runs `cdb` on `lu` from `n` through `map` (the nexus's LUN map), as a transport does.
pub fn execute(
    lu: &rustio_scsi::LogicalUnit,
    map: &rustio_scsi::LunMap,
    n: &rustio_scsi::Nexus,
    cdb: &[u8],
    data_out: &[u8],
) -> (rustio_scsi::Response, Vec<u8>) {
    let req = rustio_scsi::Request {
        nexus: n,
        cdb,
        data_out,
        task_tag: 1,
        task_attr: rustio_scsi::TaskAttr::Simple,
        write_protected: false,
        luns: map,
    };
    let mut d = Vec::new();
    let r = lu.execute(&req, &mut d);
    (r, d)
}
