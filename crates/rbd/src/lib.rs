//! Ceph RBD backstore engine for rustio.
//!
//! [`RbdBackstore`] serves an RBD image through librbd, implementing
//! [`rustio_backstore::Backstore`]. It is configured with tcmu-runner's configuration
//! string (`rbd/<pool>/<image>[;osd_op_timeout=N][;conf=PATH][;id=USER]`, see
//! [`config`]), so a `user:rbd` backstore from a targetcli `saveconfig.json` opens
//! unchanged.
//!
//! I/O goes through librbd's asynchronous API: each call of a `Backstore` method submits
//! one `rbd_aio_*` request with its own completion and sleeps until it fires, so every
//! caller thread has its own request in flight and there is no lock between them. FUA
//! writes are followed by `rbd_aio_flush`. Time limits are always set
//! (`client_mount_timeout`, `rados_mon_op_timeout`, `rados_osd_op_timeout`): when the
//! cluster is unreachable past them, requests fail with an error whose
//! [`rustio_backstore::ErrorKind`] is `Busy`, never hang.
//!
//! [`CephReservationStore`] (module [`prstore`]) keeps SCSI persistent reservations in a
//! RADOS object next to the image, so every gateway exporting it enforces the same
//! reservations and hears of each other's changes (watch/notify).
//!
//! librbd is linked only with the `rbd` cargo feature (Debian: `librbd-dev`). Without it
//! the crate still builds, with the same API, and [`RbdBackstore::open`] answers
//! [`RbdError::NotBuiltIn`].

#![warn(missing_docs)]

use std::time::Duration;

pub mod config;
mod error;
pub mod groupconf;

#[cfg(feature = "rbd")]
mod engine;
#[cfg(not(feature = "rbd"))]
#[path = "stub.rs"]
mod engine;
#[cfg(feature = "rbd")]
mod ffi;
#[cfg(feature = "rbd")]
pub mod handover;
#[cfg(feature = "rbd")]
pub mod lock;
#[cfg(feature = "rbd")]
pub mod prstore;

pub use config::{ConfigError, RbdConfig};
pub use engine::RbdBackstore;
pub use error::RbdError;
#[cfg(feature = "rbd")]
pub use prstore::{CephReservationStore, PrStoreError};

/// Waits, at most `limit`, until no RBD request is in flight and no image close is
/// running: the last request on an image may drop its last reference and close it (on a
/// thread of its own when that happens in a librbd completion, where closing would
/// deadlock), and a process that exits under that close leaves the image's exclusive lock
/// held. `true` when nothing is left (always, without the `rbd` feature).
pub fn wait_for_outstanding(limit: Duration) -> bool {
    #[cfg(feature = "rbd")]
    return ffi::wait_for_outstanding(limit);
    #[cfg(not(feature = "rbd"))]
    {
        let _ = limit;
        true
    }
}

/// Whether this build links librbd (the `rbd` feature).
pub const BUILT_WITH_RBD: bool = cfg!(feature = "rbd");

/// Default for [`OpenOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to open an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// Pool, image, user, Ceph configuration file and requested OSD op timeout.
    pub config: RbdConfig,
    /// Logical block size presented to initiators (512 or 4096; SBC-4 also allows 1024 and
    /// 2048). The capacity is the image size rounded down to it.
    pub block_size: u32,
    /// Open the image read-only (`rbd_open_read_only`); writes fail with `ReadOnly`.
    pub read_only: bool,
    /// Bound on connecting to the monitors and on each monitor request
    /// (`client_mount_timeout` and `rados_mon_op_timeout`).
    pub connect_timeout: Duration,
}

impl OpenOptions {
    /// Options for `config` with 512-byte blocks, read-write, and
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn new(config: RbdConfig) -> Self {
        OpenOptions {
            config,
            block_size: 512,
            read_only: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Parses a tcmu-runner cfgstring into default options.
    pub fn parse(cfgstring: &str) -> Result<Self, RbdError> {
        Ok(OpenOptions::new(RbdConfig::parse(cfgstring)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_cfgstring() {
        let o = OpenOptions::parse("rbd/p/i;id=x").unwrap();
        assert_eq!(o.block_size, 512);
        assert!(!o.read_only);
        assert_eq!(o.connect_timeout, Duration::from_secs(30));
        assert_eq!(o.config.id.as_deref(), Some("x"));
        assert!(matches!(
            OpenOptions::parse("rbd/p"),
            Err(RbdError::Config(ConfigError::MissingImage { .. }))
        ));
    }

    #[cfg(not(feature = "rbd"))]
    #[test]
    fn without_the_feature_open_says_so() {
        let e = RbdBackstore::open(&OpenOptions::parse("rbd/p/i").unwrap()).unwrap_err();
        assert!(matches!(e, RbdError::NotBuiltIn));
        assert!(e.to_string().contains("built without rbd support"), "{e}");
    }
}
