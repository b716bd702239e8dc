//! Handlers: what turns a device's `dev_config` into a [`rustio_backstore::Backstore`].
//!
//! The configuration string is tcmu-runner's: `dev_config=<subtype>/<handler config>`
//! written to the backstore's `control` file. The handlers themselves (`file`, `ram`,
//! `qcow`, `rbd`, and the [`Handler`] trait a custom one implements) are
//! `rustio_stores`'s, shared with `rustio serve`, and re-exported here; see
//! [`rustio_stores::handler`] for the syntax of each. This module keeps what is TCMU's:
//! the [`DeviceInfo`] the kernel gives about a device and its conversion into the
//! [`StoreSpec`] a handler opens.
//!
//! A custom handler implements [`Handler`] and is registered with
//! [`Handlers::register`]; see `examples/custom_handler.rs`.

pub use rustio_stores::{
    ConfigError, FileHandler, Handler, Handlers, OpenError, QcowHandler, RamHandler, RbdHandler,
    StoreSpec,
};

/// What the kernel says about a device when it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// LIO storage object name.
    pub name: String,
    /// Size in bytes (`dev_size`).
    pub size: u64,
    /// Logical block size (`attrib/hw_block_size`).
    pub block_size: u32,
    /// Largest transfer in blocks (`attrib/hw_max_sectors`).
    pub max_sectors: u32,
    /// Initial write cache (WCE) setting for the logical unit.
    pub write_cache: bool,
    /// T10 unit serial number from `wwn/vpd_unit_serial`, if the kernel has one.
    pub unit_serial: Option<String>,
}

impl DeviceInfo {
    /// What a handler opens the device's store with: the kernel's `dev_size` is the
    /// configured size (a `file` store is created with it, a `qcow` or `rbd` image must
    /// have it, as in tcmu-runner) and `hw_block_size` the block size.
    pub fn spec(&self) -> StoreSpec {
        StoreSpec::new(Some(self.size), self.block_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64) -> DeviceInfo {
        DeviceInfo {
            name: "d".into(),
            size,
            block_size: 512,
            max_sectors: 128,
            write_cache: true,
            unit_serial: None,
        }
    }

    #[test]
    fn device_info_becomes_the_store_spec() {
        assert_eq!(info(1 << 20).spec(), StoreSpec::new(Some(1 << 20), 512));
    }
}
