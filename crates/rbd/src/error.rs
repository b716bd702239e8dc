//! Errors of opening an RBD image, and how every librbd error reaches the SCSI layer.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use rustio_backstore::Error as BackstoreError;

use crate::config::ConfigError;

/// Errors of [`crate::RbdBackstore::open`]. I/O errors afterwards are
/// [`rustio_backstore::Error`]s (see [`io_error`]).
#[derive(Debug, thiserror::Error)]
pub enum RbdError {
    /// This build has no librbd (the `rbd` cargo feature is off).
    #[error(
        "rustio was built without rbd support: rebuild it with \
         `cargo build -p rustio --features rbd` (needs librbd-dev)"
    )]
    NotBuiltIn,
    /// The configuration string is malformed.
    #[error("invalid rbd configuration")]
    Config(#[from] ConfigError),
    /// The logical block size is not one SBC allows.
    #[error("invalid block size {0} for {1}: expected 512, 1024, 2048 or 4096")]
    BlockSize(u32, String),
    /// The Ceph configuration file could not be read.
    #[error("cannot read Ceph configuration {path}")]
    ConfRead {
        /// The `conf=` path.
        path: PathBuf,
        /// What librados said.
        #[source]
        source: io::Error,
    },
    /// The configuration names no monitor to connect to.
    #[error(
        "no Ceph monitors configured ({conf}): set mon_host in the Ceph configuration \
         or pass ;conf=PATH"
    )]
    NoMonitors {
        /// Which configuration was read.
        conf: String,
    },
    /// The monitors did not answer within the connect timeout.
    #[error("cannot reach the Ceph cluster ({conf}) as {user} within {timeout:?}")]
    ConnectTimeout {
        /// Which configuration was read.
        conf: String,
        /// The Ceph user.
        user: String,
        /// `client_mount_timeout` in force.
        timeout: Duration,
        /// What librados said.
        #[source]
        source: io::Error,
    },
    /// The keyring has no key for the user, or the monitors refused it.
    #[error("authentication as {user} failed ({conf}): check the keyring and the user's key")]
    Auth {
        /// The Ceph user.
        user: String,
        /// Which configuration was read.
        conf: String,
        /// What librados said.
        #[source]
        source: io::Error,
    },
    /// Connecting failed for another reason.
    #[error("cannot connect to the Ceph cluster ({conf}) as {user}")]
    Connect {
        /// Which configuration was read.
        conf: String,
        /// The Ceph user.
        user: String,
        /// What librados said.
        #[source]
        source: io::Error,
    },
    /// The pool does not exist.
    #[error("RADOS pool {pool:?} does not exist")]
    PoolNotFound {
        /// The pool.
        pool: String,
    },
    /// The image does not exist in the pool.
    #[error("RBD image {image:?} does not exist in pool {pool:?}")]
    ImageNotFound {
        /// The pool.
        pool: String,
        /// The image.
        image: String,
    },
    /// The user's capabilities do not allow this.
    #[error("{user} may not {what} (check its mon/osd caps, e.g. 'profile rbd')")]
    PermissionDenied {
        /// The Ceph user.
        user: String,
        /// What was attempted.
        what: String,
        /// What librados or librbd said.
        #[source]
        source: io::Error,
    },
    /// The image is smaller than one logical block.
    #[error("RBD image {spec} has {size} bytes, less than one {block_size}-byte block")]
    TooSmall {
        /// `rbd/<pool>/<image>`.
        spec: String,
        /// Image size in bytes.
        size: u64,
        /// Logical block size.
        block_size: u32,
    },
    /// Any other librados or librbd failure while opening.
    #[error("{op} failed for {spec}")]
    Ceph {
        /// The call that failed.
        op: &'static str,
        /// `rbd/<pool>/<image>`.
        spec: String,
        /// What librados or librbd said.
        #[source]
        source: io::Error,
    },
}

impl RbdError {
    /// The OS error number behind the failure, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RbdError::ConfRead { source, .. }
            | RbdError::ConnectTimeout { source, .. }
            | RbdError::Auth { source, .. }
            | RbdError::Connect { source, .. }
            | RbdError::PermissionDenied { source, .. }
            | RbdError::Ceph { source, .. } => source.raw_os_error(),
            RbdError::PoolNotFound { .. } | RbdError::ImageNotFound { .. } => Some(libc::ENOENT),
            RbdError::NotBuiltIn
            | RbdError::Config(_)
            | RbdError::BlockSize(..)
            | RbdError::NoMonitors { .. }
            | RbdError::TooSmall { .. } => None,
        }
    }

    /// Whether retrying later may succeed (the cluster was unreachable or busy).
    pub fn is_transient(&self) -> bool {
        self.errno().is_some_and(is_transient_errno)
    }

    /// Converts to the backstore error the SCSI layer classifies, naming the image.
    /// Transient failures keep their bare errno so that [`BackstoreError::kind`] answers
    /// `Busy`; the others keep the whole message.
    pub fn into_backstore(self, spec: &str) -> BackstoreError {
        match self {
            RbdError::NotBuiltIn => {
                BackstoreError::Unsupported("the rbd engine (built without the `rbd` feature)")
            }
            RbdError::Config(_) | RbdError::BlockSize(..) => {
                BackstoreError::InvalidConfig(error_chain(&self))
            }
            e => {
                let source = match e.errno() {
                    Some(errno) if is_transient_errno(errno) => io::Error::from_raw_os_error(errno),
                    _ => io::Error::other(error_chain(&e)),
                };
                BackstoreError::Open {
                    path: PathBuf::from(spec),
                    source,
                }
            }
        }
    }
}

/// The error and its sources, joined by ": ".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Errnos that [`BackstoreError::kind`] classifies as `Busy`.
fn is_transient_errno(errno: i32) -> bool {
    matches!(errno, libc::ETIMEDOUT | libc::EAGAIN | libc::EBUSY)
}

/// The errno to report for a failed librbd request, so that the SCSI layer's
/// [`rustio_backstore::ErrorKind`] is right.
///
/// librbd answers `-ETIMEDOUT` when `rados_osd_op_timeout` expires (cluster unreachable):
/// kept, it classifies as `Busy`. Like tcmu-runner (`rbd.c`, `rbd_finish_aio_generic`,
/// which answers BUSY), `-ESHUTDOWN` (this client was blocklisted, typically because
/// another gateway took the exclusive lock) and `-EROFS` on a writable image (the
/// exclusive lock was lost) become `EBUSY`: the initiator retries, on another path once
/// it has failed over. Lost connections become `EAGAIN`. Everything else passes through.
#[cfg_attr(not(feature = "rbd"), allow(dead_code))]
pub(crate) fn classify_errno(errno: i32, read_only: bool) -> i32 {
    match errno {
        libc::ESHUTDOWN => libc::EBUSY,
        libc::EROFS if !read_only => libc::EBUSY,
        libc::ENOTCONN
        | libc::ECONNREFUSED
        | libc::ECONNRESET
        | libc::ECONNABORTED
        | libc::EHOSTUNREACH
        | libc::ENETUNREACH => libc::EAGAIN,
        e => e,
    }
}

/// Builds the backstore error of a failed I/O request on `spec`.
#[cfg_attr(not(feature = "rbd"), allow(dead_code))]
pub(crate) fn io_error(
    op: &'static str,
    spec: &str,
    offset: u64,
    errno: i32,
    read_only: bool,
) -> BackstoreError {
    let reported = classify_errno(errno, read_only);
    if reported != errno {
        tracing::warn!(
            image = spec,
            op,
            offset,
            errno,
            error = %io::Error::from_raw_os_error(errno),
            "rbd request failed; reported as retryable"
        );
    }
    BackstoreError::Io {
        op,
        path: PathBuf::from(spec),
        offset,
        source: io::Error::from_raw_os_error(reported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustio_backstore::ErrorKind;

    #[test]
    fn io_errors_classify_like_tcmu_runner() {
        let kind = |errno, ro| io_error("write", "rbd/p/i", 0, errno, ro).kind();
        assert_eq!(kind(libc::ETIMEDOUT, false), ErrorKind::Busy);
        assert_eq!(kind(libc::ESHUTDOWN, false), ErrorKind::Busy);
        assert_eq!(kind(libc::EROFS, false), ErrorKind::Busy);
        assert_eq!(kind(libc::EROFS, true), ErrorKind::ReadOnly);
        assert_eq!(kind(libc::ENOTCONN, false), ErrorKind::Busy);
        assert_eq!(kind(libc::EIO, false), ErrorKind::Medium);
        assert_eq!(kind(libc::ENOSPC, false), ErrorKind::NoSpace);
        assert_eq!(kind(libc::EDQUOT, false), ErrorKind::NoSpace);
        assert_eq!(kind(libc::EINVAL, false), ErrorKind::Hardware);
    }

    #[test]
    fn open_errors_convert() {
        let e = RbdError::ConnectTimeout {
            conf: "/c".into(),
            user: "client.admin".into(),
            timeout: Duration::from_secs(5),
            source: io::Error::from_raw_os_error(libc::ETIMEDOUT),
        };
        assert!(e.is_transient());
        assert_eq!(e.into_backstore("rbd/p/i").kind(), ErrorKind::Busy);

        let e = RbdError::ImageNotFound {
            pool: "p".into(),
            image: "i".into(),
        };
        assert!(!e.is_transient());
        let b = e.into_backstore("rbd/p/i");
        assert_eq!(b.kind(), ErrorKind::Hardware);
        assert_eq!(
            error_chain(&b),
            "cannot open backing store rbd/p/i: RBD image \"i\" does not exist in pool \"p\""
        );

        let e = RbdError::from(ConfigError::MissingPool);
        assert_eq!(e.into_backstore("x").kind(), ErrorKind::InvalidRequest);
        assert_eq!(
            RbdError::NotBuiltIn.into_backstore("x").kind(),
            ErrorKind::Unsupported
        );
    }
}
