//! SCSI engine for rustio.
//!
//! A pure, synchronous SCSI device server: CDB bytes are parsed into a typed
//! [`cdb::Command`], executed against a [`rustio_backstore::Backstore`], and answered with a
//! [`Status`], fixed-format [`Sense`] data and data-in bytes. Transports (iSCSI, TCMU) call
//! [`LogicalUnit::execute`] (one logical unit) or [`LunMap::execute`] (a LUN table, which
//! also answers REPORT LUNS and commands to LUNs that do not exist).
//!
//! Behaviour follows SAM-5, SPC-4 and SBC-4; each module cites the clauses it implements.
//!
//! Commands: TEST UNIT READY, REQUEST SENSE, INQUIRY (VPD 00h 80h 83h 86h 8Fh B0h B1h
//! B2h), MODE SENSE/SELECT(6/10), READ CAPACITY(10/16), READ/WRITE(6/10/12/16), WRITE
//! AND VERIFY, VERIFY, SYNCHRONIZE CACHE, PRE-FETCH, UNMAP, WRITE SAME(10/16), COMPARE
//! AND WRITE, GET LBA STATUS, FORMAT UNIT, START STOP UNIT, PREVENT ALLOW MEDIUM
//! REMOVAL, REPORT LUNS, REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT FUNCTIONS,
//! REPORT TARGET PORT GROUPS, PERSISTENT RESERVE IN/OUT, RESERVE/RELEASE(6/10),
//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS. The authoritative list is
//! [`cdb::COMMANDS`], which also feeds REPORT SUPPORTED OPERATION CODES.
//!
//! Transport contract:
//! * pass every received data-out byte in [`Request::data_out`] (do not cut it to
//!   [`LogicalUnit::data_out_len`]); commands that need an exact size check it;
//! * `data_in` comes back already cut to the CDB's allocation length; truncate it to the
//!   expected transfer length and compute residuals;
//! * pass the nexus's LUN map in [`Request::luns`] (what [`LunMap::execute`] does):
//!   EXTENDED COPY resolves its copy targets there and nowhere else;
//! * call [`LogicalUnit::task_management`] for TMFs and [`LogicalUnit::nexus_lost`] when
//!   an I_T nexus ends (logout, session drop), so SPC-2 reservations and unit attentions
//!   follow SAM-5.
//!
//! ```
//! use std::sync::Arc;
//! use rustio_backstore::RamBackstore;
//! use rustio_scsi::{
//!     LogicalUnit, LuConfig, LunMap, Nexus, Request, Status, TargetPort, TargetPortName, TaskAttr,
//!     TransportId,
//! };
//!
//! let lu = LogicalUnit::new(
//!     Arc::new(RamBackstore::new(1 << 20, 512).unwrap()),
//!     LuConfig::new("demo", "serial1"),
//! )
//! .unwrap();
//! // What this nexus may access (EXTENDED COPY reaches no other unit).
//! let mut map = LunMap::new();
//! map.insert(0, lu.clone(), false);
//! let nexus = Nexus::new(
//!     TransportId::iscsi_port("iqn.2024-01.test:init", [0x23, 0xd0, 0, 0, 0, 1]),
//!     TargetPort::new(1, 1, TargetPortName::Iscsi { name: "iqn.2024-01.test:tgt".into(), tpgt: 1 }),
//! );
//! let mut data_in = Vec::new();
//! let inquiry = [0x12, 0, 0, 0, 96, 0];
//! let req = Request {
//!     nexus: &nexus,
//!     cdb: &inquiry,
//!     data_out: &[],
//!     task_tag: 1,
//!     task_attr: TaskAttr::Simple,
//!     write_protected: false,
//!     luns: &map,
//! };
//! let rsp = lu.execute(&req, &mut data_in);
//! assert_eq!(rsp.status, Status::Good);
//! assert_eq!(data_in[0], 0x00); // direct access block device
//! ```

#![warn(missing_docs)]

pub mod alua;
pub mod cdb;
mod config;
pub mod direct;
mod error;
mod inquiry;
mod keyhash;
mod lu;
mod lunmap;
mod mode;
mod nexus;
mod pr;
mod rangelock;
mod rsoc;
mod sbc;
pub mod sense;
mod status;
mod submit;
mod tpg;
mod transport;
mod ua;
mod xcopy;

pub use cdb::{Direction, IoClass, Transfer, Truncation};
pub use config::{LuConfig, DEFAULT_IEEE_COMPANY_ID};
pub use direct::DirectIn;
pub use error::Error;
pub use keyhash::{KeyHasher, KeyMap};
pub use lu::LogicalUnit;
pub use lunmap::{decode_lun, decode_lun_u64, encode_lun, LunAccess, LunMap, MappedLun, MAX_LUN};
pub use nexus::{Nexus, Request, TaskAttr, Tmf};
pub use pr::{
    ChangeCallback, DecodeError, MemoryStore, ReservationState, ReservationStore, StoreError,
    Versioned, EVENT_WINDOW, STORE_UNAVAILABLE,
};
pub use sense::{FieldPointer, Sense, SenseKey, FIXED_SENSE_LEN};
pub use status::{Response, Status};
pub use submit::AsyncEnd;
pub use tpg::{
    AluaMode, AluaState, TargetPort, TargetPortGroup, TargetPortGroupId, TargetPortName,
};
pub use transport::{Isid, ProtocolId, TransportId, TransportIdError};

#[cfg(test)]
mod tests;
