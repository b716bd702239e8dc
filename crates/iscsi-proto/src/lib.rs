//! The iSCSI protocol (RFC 7143) without target policy, shared by rustio's target
//! (`rustio-iscsi`), the fuzz targets and the benchmark initiator (`bench/loadgen`).
//!
//! * [`pdu`] — the PDU codec: typed Basic Header Segments for every opcode (initiator and
//!   target side), AHS, CRC32C header/data digests, padding.
//! * [`text`] — `key=value` text segments and the RFC 7143 section 13 key registry with
//!   value validation and the negotiation rules of every key.
//! * [`chap`] — CHAP (RFC 1994 as profiled by RFC 7143 12.1.3) with MD5, SHA-1, SHA-256
//!   and SHA3-256: algorithm numbers, response computation, random challenges.
//! * [`login`] — login-phase vocabulary: status class/detail codes (RFC 7143 11.13.5),
//!   session types (13.21) and the stage-transition rules of 11.12.3.
//! * [`serial`] — serial number arithmetic for CmdSN/StatSN (RFC 7143 4.2.2.1, RFC 1982).
//!
//! Nothing here knows about targets, ACLs or credentials stores; those stay in
//! `rustio-iscsi`.

#![warn(missing_docs)]

pub mod chap;
pub mod login;
pub mod pdu;
pub mod serial;
pub mod text;

/// Errors of the protocol crate: reading a whole PDU from a byte stream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading from the stream failed.
    #[error("connection I/O failed")]
    Io(#[source] std::io::Error),
    /// A PDU could not be framed (digest error, oversized data segment).
    #[error("bad PDU (opcode {:#04x}): {kind:?}", bhs[0] & 0x3f)]
    Frame {
        /// The BHS of the offending PDU (echoed in a Reject, RFC 7143 11.17.1).
        bhs: Box<[u8; pdu::BHS_LEN]>,
        /// What is wrong.
        kind: pdu::FrameError,
    },
}

/// Result type of the protocol crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
