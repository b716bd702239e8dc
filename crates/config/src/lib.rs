//! The targetcli-fb / rtslib-fb `saveconfig.json` format as a typed model.
//!
//! This crate is shared by rustio's LIO management (`rustio-lio`), the userspace
//! target (`rustio serve`) and importers. It knows nothing about configfs.
//!
//! * [`model`]: the data model, one struct per rtslib `dump()`; unknown keys are kept
//!   in `extra` maps and round-trip unchanged.
//! * [`parse`]: text → model with precise error locations, model → text formatted like
//!   targetcli (sorted keys, two-space indent).
//! * [`validate`]: semantic checks, each naming the rule it enforces.
//! * [`wwn`] and [`fabric`]: naming rules (RFC 3720 3.2.6, RFC 3722, RFC 3980) and
//!   per-fabric capabilities.
//! * [`size`]: the one size parser (`1G`, `512M`, kernel `0x…`), shared by every crate.
//! * [`store`]: atomic save with targetcli-style rotating gzip backups.
//!
//! ```
//! let cfg = rustio_config::parse::from_str(r#"{"storage_objects": [
//!     {"plugin": "ramdisk", "name": "r0", "size": 1048576}]}"#).unwrap();
//! assert!(!rustio_config::validate::validate(&cfg).has_errors());
//! assert_eq!(cfg.storage_objects[0].path(), "/backstores/ramdisk/r0");
//! ```

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

pub mod fabric;
pub mod model;
pub mod parse;
pub mod size;
pub mod store;
pub mod validate;
pub mod value;
pub mod wwn;

pub use model::{
    AluaTpg, BlockObject, Chap, Common, FabricModule, FileioObject, Lun, MappedLun, NodeAcl,
    OtherObject, Plugin, Portal, PscsiObject, RamdiskObject, SaveConfig, StorageObject, Target,
    Tpg, UserObject,
};
pub use size::{parse_size, SizeError};
pub use value::ConfigValue;

fn file_prefix(file: &Option<PathBuf>) -> String {
    match file {
        Some(f) => format!("{}: ", f.display()),
        None => String::new(),
    }
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not JSON.
    #[error("{}line {line}, column {column}: invalid JSON", file_prefix(file))]
    Syntax {
        /// File the text came from, when known.
        file: Option<PathBuf>,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The JSON parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON does not have the saveconfig shape (wrong type, missing field).
    #[error("{}{}{message}", file_prefix(file), path_prefix(path))]
    Structure {
        /// File the text came from, when known.
        file: Option<PathBuf>,
        /// Element at fault, e.g. `targets[0].tpgs[1].luns[2]`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// The operation ("read", "rename into place", ...).
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Serializing the model failed (a bug or a non-string map key).
    #[error("cannot serialize the configuration")]
    Serialize(#[source] serde_json::Error),
    /// Validation found errors.
    #[error("invalid configuration:\n{0}")]
    Invalid(validate::Report),
}

impl Error {
    /// Attaches the file name to parse errors.
    pub fn in_file(self, path: &Path) -> Error {
        match self {
            Error::Syntax {
                line,
                column,
                source,
                ..
            } => Error::Syntax {
                file: Some(path.to_path_buf()),
                line,
                column,
                source,
            },
            Error::Structure {
                path: p, message, ..
            } => Error::Structure {
                file: Some(path.to_path_buf()),
                path: p,
                message,
            },
            other => other,
        }
    }
}

impl SaveConfig {
    /// Parses saveconfig.json text (see [`parse::from_str`]).
    pub fn from_json(text: &str) -> Result<SaveConfig, Error> {
        parse::from_str(text)
    }

    /// Prints targetcli-style JSON (see [`parse::to_string_pretty`]).
    pub fn to_json(&self) -> Result<String, Error> {
        parse::to_string_pretty(self)
    }

    /// Validates; `Err(Error::Invalid)` when there are errors, else the warnings.
    pub fn check(&self) -> Result<validate::Report, Error> {
        let report = validate::validate(self);
        if report.has_errors() {
            Err(Error::Invalid(report))
        } else {
            Ok(report)
        }
    }
}
