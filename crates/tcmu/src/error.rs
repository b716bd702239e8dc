//! Errors of the TCMU runner crate.

use std::path::PathBuf;

use crate::ring::RingError;

/// Errors returned by a [`crate::handler::Handler`] when opening a device (the shared
/// `rustio_stores` error; kept under this name for handlers written against it).
pub type HandlerError = rustio_stores::OpenError;

/// Errors of the TCMU runner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink socket operation failed.
    #[error("netlink: {context}")]
    Netlink {
        /// What we were doing.
        context: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A netlink message could not be decoded or the kernel answered with an error.
    #[error("netlink: {0}")]
    NetlinkProtocol(String),
    /// The `TCM-USER` generic netlink family or its `config` group is not registered.
    #[error(
        "generic netlink family TCM-USER (group \"config\") not found; is target_core_user loaded?"
    )]
    FamilyNotFound,
    /// Reading or writing a sysfs, configfs or device file failed.
    #[error("{op} {path}")]
    Io {
        /// The operation ("read", "write", "open").
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs or configfs file held something we could not parse.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A UIO device name is not `tcm-user/<hba>/<device>/<dev_config>`.
    #[error("UIO device name {0:?} is not a TCMU name (tcm-user/<hba>/<device>/<config>)")]
    BadUioName(String),
    /// No handler is registered for a device's subtype.
    #[error("device {device}: no handler for subtype {subtype:?}")]
    UnknownHandler {
        /// The LIO device name.
        device: String,
        /// The subtype from `dev_config`.
        subtype: String,
    },
    /// The handler refused the configuration string.
    #[error("device {device}: handler {subtype} refused config {cfg:?}: {reason}")]
    BadConfig {
        /// The LIO device name.
        device: String,
        /// The handler subtype.
        subtype: String,
        /// The handler part of `dev_config`.
        cfg: String,
        /// The handler's explanation (boxed: kept out of every `Result` of this crate).
        reason: Box<rustio_stores::ConfigError>,
    },
    /// The handler failed to open the backing store.
    #[error("device {device}: handler {subtype} failed to open {cfg:?}")]
    HandlerOpen {
        /// The LIO device name.
        device: String,
        /// The handler subtype.
        subtype: String,
        /// The handler part of `dev_config`.
        cfg: String,
        /// The handler's error (boxed: kept out of every `Result` of this crate).
        #[source]
        source: Box<HandlerError>,
    },
    /// Mapping the device's shared memory failed.
    #[error("mmap of {path} ({len} bytes)")]
    Mmap {
        /// The UIO device node.
        path: PathBuf,
        /// Requested length.
        len: usize,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The device's command ring is unusable.
    #[error("device {device}: command ring")]
    Ring {
        /// The LIO device name.
        device: String,
        /// The ring error.
        #[source]
        source: RingError,
    },
    /// The device is not known to the runner.
    #[error("no device with UIO minor {0}")]
    NoSuchDevice(u32),
    /// Creating the SCSI logical unit failed.
    #[error("device {device}: cannot create the SCSI logical unit: {reason}")]
    Target {
        /// The LIO device name.
        device: String,
        /// The SCSI engine's error, rendered.
        reason: String,
    },
    /// The store refused to resize to the reconfigured `dev_size`.
    #[error("device {device}: cannot resize to {bytes} bytes")]
    Resize {
        /// The LIO device name.
        device: String,
        /// The size asked for.
        bytes: u64,
        /// Why the store refused.
        #[source]
        source: rustio_backstore::Error,
    },
    /// The reconfiguration is not supported.
    #[error("device {device}: {what} cannot be reconfigured")]
    Unsupported {
        /// The LIO device name.
        device: String,
        /// What was asked.
        what: String,
    },
    /// The D-Bus service could not be started.
    #[error("D-Bus service: {0}")]
    Dbus(String),
}

impl Error {
    /// The negative errno reported to the kernel in a `*_DONE` netlink reply.
    pub fn errno(&self) -> i32 {
        let code = match self {
            Error::Io { source, .. }
            | Error::Mmap { source, .. }
            | Error::Netlink { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::UnknownHandler { .. } => libc::ENOENT,
            Error::BadConfig { .. } | Error::BadUioName(_) | Error::Parse { .. } => libc::EINVAL,
            Error::HandlerOpen { .. } | Error::Target { .. } => libc::EIO,
            Error::Ring { .. } => libc::EIO,
            Error::NoSuchDevice(_) => libc::ENODEV,
            Error::Unsupported { .. } | Error::Resize { .. } => libc::EOPNOTSUPP,
            Error::NetlinkProtocol(_) | Error::FamilyNotFound | Error::Dbus(_) => libc::EIO,
        };
        -code
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Displays an error followed by each of its sources, separated by `: `, so that log lines
/// carry the cause (for example the handler's "size misconfigured" behind
/// [`Error::HandlerOpen`]).
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_every_cause() {
        let e = Error::HandlerOpen {
            device: "q1".into(),
            subtype: "qcow".into(),
            cfg: "/tmp/q1.qcow2".into(),
            source: Box::new(rustio_stores::OpenError::other(
                "size misconfigured: dev_size is 16777216 bytes",
            )),
        };
        assert_eq!(
            Chain(&e).to_string(),
            "device q1: handler qcow failed to open \"/tmp/q1.qcow2\": \
             size misconfigured: dev_size is 16777216 bytes"
        );
    }
}
