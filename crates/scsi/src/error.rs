//! Errors of the SCSI crate's setup paths. Command failures are not errors: they become
//! [`crate::Sense`] data in a [`crate::Response`].

use std::path::PathBuf;

/// Errors creating or configuring a logical unit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The logical unit configuration is invalid.
    #[error("invalid logical unit configuration: {0}")]
    Config(String),
    /// The backstore could not be queried.
    #[error("backstore error while {context}")]
    Backstore {
        /// What we were doing.
        context: &'static str,
        /// The backstore's error.
        #[source]
        source: rustio_backstore::Error,
    },
    /// Reading or writing the APTPL persistent reservation file failed.
    #[error("persistent reservation file {path}")]
    Aptpl {
        /// The APTPL state file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The APTPL persistent reservation file is malformed.
    #[error("persistent reservation file {path} is corrupt at line {line}: {reason}")]
    AptplCorrupt {
        /// The APTPL state file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}
