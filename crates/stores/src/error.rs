//! Errors of opening a store from its configuration.

use std::path::PathBuf;

/// The configuration text of a store is wrong (found before anything is opened).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No handler is registered for the subtype (the part before the first `/`).
    #[error("no handler for subtype {subtype:?}")]
    UnknownSubtype {
        /// The subtype asked for.
        subtype: String,
    },
    /// A saved `user` object has no `config` at all.
    #[error("no \"config\" (expected <handler>/<config>)")]
    MissingConfig,
    /// A saved `user` object's `config` has no `/` after the handler name (targetcli
    /// always writes `<subtype>/<cfgstring>`).
    #[error("config {config:?} names no handler (expected <handler>/<config>)")]
    NoSubtype {
        /// The whole `config`.
        config: String,
    },
    /// The configuration contains a NUL byte (it cannot reach configfs or a path).
    #[error("config contains a NUL byte")]
    Nul,
    /// The handler needs a path and got none.
    #[error("a path is required")]
    PathRequired,
    /// The path contains a NUL or a newline.
    #[error("the path contains a NUL or newline")]
    PathCharacters,
    /// The handler needs an absolute path.
    #[error(
        "{path:?} is not an absolute path: the image path must be absolute \
         (e.g. qcow//var/lib/images/vm.qcow2)"
    )]
    NotAbsolute {
        /// The path given.
        path: String,
    },
    /// The directory the file would be created in does not exist.
    #[error("directory {} does not exist", .0.display())]
    NoDirectory(PathBuf),
    /// The path names a directory.
    #[error("{} is a directory", .0.display())]
    IsDirectory(PathBuf),
    /// The path names no existing file.
    #[error("{0} is not an existing file")]
    NotAFile(String),
    /// The `qcow` handler's `;cache=` option names no cache mode.
    #[error("unknown qcow option {0:?}: the only option is cache=none or cache=writeback")]
    QcowOption(String),
    /// A `ram` device name is too long or has control characters.
    #[error("the name must be at most 200 printable characters")]
    BadName,
    /// The `rbd` handler's `<pool>/<image>[;option...]` is malformed.
    #[error(transparent)]
    Rbd(#[from] rustio_rbd::ConfigError),
    /// A custom handler refused the configuration; the text is shown to the user.
    #[error("{0}")]
    Invalid(String),
}

/// Opening a store failed, or the store does not match its configuration.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration text is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store's size differs from the configured size (tcmu-runner's "size
    /// misconfigured" for `qcow` and `rbd`; serving a different size would move the end
    /// of the disk under the initiator).
    #[error(
        "size misconfigured: configured size is {configured} bytes but {what} is \
         {capacity} bytes"
    )]
    SizeMismatch {
        /// The size in the configuration (`dev_size`, saveconfig `size`).
        configured: u64,
        /// What was opened, e.g. `qcow2 image /var/lib/vm.qcow2`.
        what: String,
        /// The store's own size.
        capacity: u64,
    },
    /// The store is created from the configuration and needs a size it does not give.
    #[error("a size is required for a {what} store")]
    SizeRequired {
        /// The kind of store.
        what: &'static str,
    },
    /// The storage engine refused to open or create the store.
    #[error(transparent)]
    Backstore(#[from] rustio_backstore::Error),
    /// Opening the RBD image failed.
    #[error(transparent)]
    Rbd(#[from] rustio_rbd::RbdError),
    /// A custom handler's own error.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl OpenError {
    /// Wraps a custom handler's error.
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> OpenError {
        OpenError::Other(e.into())
    }
}

/// Opening a saveconfig storage object failed; the message names the object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object's plugin is not one rustio opens (e.g. `pscsi`).
    #[error("storage object {name}: plugin {plugin} is not supported by rustio serve")]
    UnsupportedPlugin {
        /// The object's name.
        name: String,
        /// The plugin.
        plugin: String,
    },
    /// A `user` object's `config` is unusable before any handler is asked.
    #[error("storage object {path}: {reason}")]
    UserConfig {
        /// `/backstores/user/<name>` as targetcli shows it (`user/<name>`).
        path: String,
        /// What is wrong.
        reason: ConfigError,
    },
    /// The handler refused a `user` object's configuration.
    #[error("storage object {path}: handler {subtype:?} (config {config:?}): {reason}")]
    Handler {
        /// `user/<name>`.
        path: String,
        /// The subtype (handler) named.
        subtype: String,
        /// The whole `config`.
        config: String,
        /// What the handler said.
        reason: ConfigError,
    },
    /// The store opened but does not match its configuration.
    #[error("storage object {path}: {reason}")]
    Mismatch {
        /// `<plugin>/<name>`.
        path: String,
        /// The mismatch ([`OpenError::SizeMismatch`] or [`OpenError::SizeRequired`]).
        reason: OpenError,
    },
    /// Opening the store failed.
    #[error("storage object {name}")]
    Open {
        /// The object's name.
        name: String,
        /// Why.
        #[source]
        source: OpenError,
    },
}

impl ObjectError {
    /// Whether the configuration is at fault (rather than the storage).
    pub fn is_config(&self) -> bool {
        !matches!(self, ObjectError::Open { .. })
    }
}
