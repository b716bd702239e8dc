//! Import of SCST's `/etc/scst.conf` into targetcli's saveconfig.json model.

pub mod ast;
pub mod error;
pub mod syntax;

pub use error::{Error, ErrorKind, Pos};
