//! One way to open a rustio backstore from its configuration.
//!
//! `rustio serve` (targetcli `saveconfig.json` objects) and `rustio runner` (the TCMU
//! `dev_config` strings the kernel hands over) open the same stores: `fileio`, `block`
//! and `ramdisk` objects, and `user` objects whose configuration is
//! `<subtype>/<handler config>` (`file`, `ram`, `qcow`, `rbd`, or a registered custom
//! handler). Both go through [`Handlers`]:
//!
//! * [`Handlers::open_dev_config`] / [`Handler::open`]: a `user` store from its
//!   configuration string and a [`StoreSpec`] (size, block size);
//! * [`Handlers::open_object`]: any saveconfig storage object;
//! * [`Handlers::check_dev_config`] / [`Handler::check_config`]: the checks targetcli's
//!   `CheckConfig` D-Bus call runs before it writes configfs.
//!
//! Errors are typed: [`ConfigError`] (the configuration text is wrong), [`OpenError`]
//! (opening failed, or the store does not match its configuration) and [`ObjectError`]
//! (either, naming the storage object).
//!
//! Whether a store waits on the network is only ever read from the opened store's
//! [`rustio_backstore::Capabilities::network`]; [`Execution`] turns that into where a
//! command runs.

#![warn(missing_docs)]

mod error;
mod execution;
pub mod handler;
mod registry;

pub use error::{ConfigError, ObjectError, OpenError};
pub use execution::Execution;
pub use handler::{
    check_size, FileHandler, Handler, QcowHandler, RamHandler, RbdHandler, StoreSpec,
};
pub use registry::{Handlers, OpenedObject};
