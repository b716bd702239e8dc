//! rustio's userspace iSCSI target (RFC 7143).
//!
//! Layers, from the wire up:
//!
//! * [`pdu`] — the PDU codec: typed Basic Header Segments for every opcode, AHS, CRC32C
//!   header/data digests, padding.
//! * [`text`] — `key=value` text segments and the RFC 7143 section 13 key registry with
//!   value validation and the negotiation rules of every key.
//! * [`authguard`] — back-off after CHAP failures, per initiator name and address.
//! * [`chap`] — CHAP (RFC 1994 as profiled by RFC 7143 12.1.3) with MD5, SHA-1, SHA-256
//!   and SHA3-256.
//! * [`login`] — the login phase as a pure state machine (request PDUs in, response PDUs
//!   out): security and operational negotiation, status codes, ISID/TSIH rules.
//! * [`config`] — the runtime configuration (targets, TPGs, portals, LUNs, ACLs, CHAP
//!   credentials, negotiation parameters) and its mapping from targetcli's
//!   `saveconfig.json` ([`saveconfig`]).
//! * [`server`] — listeners, sessions, connections and the full feature phase; the
//!   injectable entry point is [`server::Server::start`].
//! * [`metrics`] — per-LUN and per-session counters rendered as Prometheus text.

pub mod authguard;
mod budget;
pub mod chap;
pub mod config;
pub mod dataout;
pub mod login;
pub mod metrics;
pub mod pdu;
pub mod saveconfig;
pub mod server;
pub mod text;

mod conn;
mod limits;
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
    /// A PDU could not be framed (digest error, oversized data segment).
    #[error("bad PDU (opcode {:#04x}): {kind:?}", bhs[0] & 0x3f)]
    Frame {
        /// The BHS of the offending PDU (echoed in a Reject).
        bhs: Box<[u8; pdu::BHS_LEN]>,
        /// What is wrong.
        kind: pdu::FrameError,
    },
    /// A text segment is malformed.
    #[error("bad text segment")]
    Text(#[source] text::TextError),
    /// Binding a portal failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The portal address.
        addr: std::net::SocketAddr,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading the configuration file failed.
    #[error("cannot read configuration {path}")]
    ConfigFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid JSON of the expected shape.
    #[error("cannot parse configuration {path}")]
    ConfigParse {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Opening a backstore or creating a logical unit failed.
    #[error("storage object {name}")]
    Storage {
        /// Storage object name.
        name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Result type of the iSCSI crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
