//! rustio's userspace iSCSI target (RFC 7143).
//!
//! The protocol itself — PDU codec, text keys and negotiation rules, CHAP, login status
//! codes — is the `rustio_iscsi_proto` crate, shared with the fuzz targets and the
//! benchmark initiator; this crate adds the target's policy on top of it.
//!
//! Layers, from the wire up:
//!
//! * [`authguard`] — back-off after CHAP failures, per initiator name and address.
//! * [`login`] — the login phase as a pure state machine (request PDUs in, response PDUs
//!   out): security and operational negotiation against the configured targets, ACLs
//!   and CHAP credentials, ISID/TSIH rules.
//! * [`config`] — the runtime configuration (targets, TPGs, portals, LUNs, ACLs, CHAP
//!   credentials, negotiation parameters) and its mapping from targetcli's
//!   `saveconfig.json` ([`saveconfig`]).
//! * [`server`] — listeners, sessions, connections and the full feature phase; the
//!   injectable entry point is [`server::Server::start`].
//! * [`metrics`] — per-LUN and per-session counters rendered as Prometheus text.

#![warn(missing_docs)]

pub mod authguard;
mod budget;
mod command;
pub mod config;
pub mod dataout;
pub mod login;
pub mod metrics;
pub mod saveconfig;
pub mod server;

mod conn;
mod limits;
mod services;
mod session;

pub use config::{
    AclConfig, ChapCredentials, Execution, LunConfig, PortalConfig, ServerConfig, TargetConfig,
    TpgConfig, TpgParams,
};
pub use server::{Server, ServerHandle, WriteBufferStats};

/// Largest data transfer of one SCSI command (Expected Data Transfer Length) the target
/// buffers; logical units should advertise this as MAXIMUM TRANSFER LENGTH.
pub const MAX_TRANSFER_BYTES: u32 = 64 << 20;

/// Errors of the iSCSI crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading from or writing to a connection failed.
    #[error("connection I/O failed")]
    Io(#[source] std::io::Error),
    /// A PDU could not be read or framed by the protocol codec (digest error, oversized
    /// data segment, I/O while reading it).
    #[error(transparent)]
    Proto(#[from] rustio_iscsi_proto::Error),
    /// A text segment is malformed.
    #[error("bad text segment")]
    Text(#[source] rustio_iscsi_proto::text::TextError),
    /// Binding a portal failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The portal address.
        addr: std::net::SocketAddr,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid (a mapping or validation rule; the message is the
    /// [`ConfigError`]'s).
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// Reading the configuration file failed.
    #[error("cannot read configuration {path}")]
    ConfigFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not a saveconfig.json (syntax or shape, with the file,
    /// line and column), as `rustio-config` reports it.
    #[error("invalid configuration")]
    Model(#[from] rustio_config::Error),
    /// Opening a storage object failed (the object is named; the cause is the source).
    #[error(transparent)]
    Storage(rustio_stores::ObjectError),
    /// Creating the logical unit of a storage object failed.
    #[error("storage object {name}: cannot create its logical unit")]
    Unit {
        /// Storage object name.
        name: String,
        /// Why.
        #[source]
        source: rustio_scsi::Error,
    },
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<rustio_stores::ObjectError> for Error {
    /// A configuration that does not fit its store (size mismatch, bad `user` config,
    /// unsupported plugin) is a [`ConfigError`]; a store that fails to open is
    /// [`Error::Storage`].
    fn from(e: rustio_stores::ObjectError) -> Error {
        if e.is_config() {
            Error::Config(ConfigError::StorageObject(e))
        } else {
            Error::Storage(e)
        }
    }
}

/// A configuration rule broken, with the exact place: what `rustio serve` refuses to
/// load and [`ServerConfig::validate`] refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// CHAP user name without secret or the reverse (RFC 7143 12.1.3: both are needed).
    #[error("{path}: {problem}")]
    ChapIncomplete {
        /// Where the credentials are (`/iscsi/<iqn>/tpg<N>/acls/<initiator>`).
        path: String,
        /// Which half is missing.
        problem: &'static str,
    },
    /// The command window is outside 1..=65536.
    #[error("queue depth {0} not in 1..=65536")]
    QueueDepth(u32),
    /// A connection or login limit is zero.
    #[error("connection limits must be at least 1")]
    ConnectionLimits,
    /// A timeout is zero or longer than [`config::MAX_TIMEOUT`].
    #[error("{what} must be between 1 s and {} s", config::MAX_TIMEOUT.as_secs())]
    Timeout {
        /// Which timeout.
        what: &'static str,
    },
    /// A write buffer limit is zero.
    #[error("write buffer limits must be positive")]
    WriteBufferLimits,
    /// The minimum transfer rate is zero.
    #[error("minimum transfer rate must be positive")]
    MinTransferRate,
    /// A target name breaks RFC 3720 3.2.6 / RFC 3722 (the LIO side's validator).
    #[error("target name {iqn:?} is not a valid iSCSI name: {reason}")]
    TargetName {
        /// The name.
        iqn: String,
        /// The rule broken.
        reason: rustio_config::wwn::WwnError,
    },
    /// Two targets have the same name (compared case-insensitively, RFC 3722).
    #[error("target {0} defined twice")]
    DuplicateTarget(String),
    /// TPG tag 0 (RFC 7143 13.9: tags are 1..=65535 in LIO).
    #[error("{iqn}: TPG tag 0 is reserved")]
    TpgTagReserved {
        /// The target.
        iqn: String,
    },
    /// A saved TPG tag does not fit 16 bits (RFC 7143 13.9).
    #[error("{iqn}: TPG tag {tag} out of range")]
    TpgTagOutOfRange {
        /// The target.
        iqn: String,
        /// The tag saved.
        tag: u64,
    },
    /// Two TPGs of a target have the same tag.
    #[error("{iqn}: TPG {tag} defined twice")]
    DuplicateTpg {
        /// The target.
        iqn: String,
        /// The tag.
        tag: u16,
    },
    /// A node ACL's initiator name is not a valid iSCSI name.
    #[error("{path}: {initiator:?} is not a valid iSCSI name: {reason}")]
    InitiatorName {
        /// The ACL's path.
        path: String,
        /// The name.
        initiator: String,
        /// The rule broken.
        reason: rustio_config::wwn::WwnError,
    },
    /// A mapped LUN points at a TPG LUN that does not exist.
    #[error("{iqn} tpg {tag}: ACL {initiator} maps LUN {index} to missing TPG LUN {tpg_lun}")]
    MappedLunMissing {
        /// The target.
        iqn: String,
        /// The TPG tag.
        tag: u16,
        /// The ACL's initiator.
        initiator: String,
        /// The mapped LUN.
        index: u64,
        /// The TPG LUN it names.
        tpg_lun: u64,
    },
    /// A segment or burst length is outside RFC 7143 13.12-13.14's 512..=2^24-1.
    #[error("{iqn} tpg {tag}: segment/burst lengths must be in 512..16777215")]
    SegmentLengths {
        /// The target.
        iqn: String,
        /// The TPG tag.
        tag: u16,
    },
    /// A saved negotiation parameter is outside its RFC 7143 section 13 range.
    #[error("parameter {key}={value} outside {lo}..={hi}")]
    Parameter {
        /// The key.
        key: String,
        /// The value saved.
        value: u64,
        /// Smallest allowed.
        lo: u64,
        /// Largest allowed.
        hi: u64,
    },
    /// A LUN references a storage object the configuration does not define.
    #[error("LUN references missing storage object {0}")]
    MissingStorageObject(String),
    /// A portal's address is not an IP address.
    #[error("portal address {0:?} is not an IP address")]
    PortalAddress(String),
    /// A portal's port does not fit 16 bits.
    #[error("portal port {0} out of range")]
    PortalPort(u64),
    /// A storage object does not fit its configuration (size mismatch, bad `user`
    /// config, unsupported plugin); the message names the object.
    #[error("{0}")]
    StorageObject(rustio_stores::ObjectError),
}

/// Result type of the iSCSI crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
