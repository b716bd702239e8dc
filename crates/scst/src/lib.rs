//! Import of SCST's `/etc/scst.conf` into targetcli's saveconfig.json model
//! ([`rustio_config::SaveConfig`]), ready for `rustio restore`, `rustio apply` and
//! `rustio serve --config`.
//!
//! The import runs in three typed stages:
//!
//! 1. [`syntax`]: bytes → entries, reading the file exactly as scstadmin does (comments,
//!    escapes, quoting, `{ }` sections) but refusing where scstadmin would silently
//!    discard text;
//! 2. [`ast`]: entries → a typed AST of handlers, devices, target drivers, targets, LUNs,
//!    initiator groups and ALUA groups;
//! 3. `convert`: AST → saveconfig model plus a [`Report`] with one [`Finding`] per
//!    construct: exact, approximate (with the difference), unsupported, ignored (SCST
//!    ignores it too) or a note.
//!
//! Errors carry the line and column of the construct at fault.
//!
//! ```
//! let conf = b"HANDLER vdisk_nullio {\n\tDEVICE null0\n}\n\
//! TARGET_DRIVER iscsi {\n\tenabled 1\n\tTARGET iqn.2006-10.net.vlnb:tgt {\n\t\tenabled 1\n\t\tLUN 0 null0\n\t}\n}\n";
//! let import = rustio_scst::import(conf).unwrap();
//! assert_eq!(import.config.targets[0].wwn, "iqn.2006-10.net.vlnb:tgt");
//! assert_eq!(import.config.storage_objects[0].path(), "/backstores/ramdisk/null0");
//! assert!(!import.report.is_lossy());
//! ```

#![warn(missing_docs)]

pub mod ast;
mod convert;
pub mod error;
pub mod report;
pub mod syntax;
pub mod values;

pub use convert::Import;
pub use error::{Error, ErrorKind, Pos};
pub use report::{Fidelity, Finding, Report};

/// Parses scst.conf text and converts it into a saveconfig model with its report.
pub fn import(input: &[u8]) -> Result<Import, Error> {
    let ast = ast::parse(input)?;
    convert::convert(&ast)
}

/// Converts an already parsed scst.conf.
pub fn convert(config: &ast::Config) -> Result<Import, Error> {
    convert::convert(config)
}
