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

    #[test]
    fn registry_and_dev_config_checks() {
        let h = Handlers::builtin();
        assert_eq!(
            h.iter().map(|x| x.subtype().to_owned()).collect::<Vec<_>>(),
            vec!["file", "qcow", "ram", "rbd"]
        );
        assert!(h.check_dev_config("ram/").is_ok());
        assert!(h.check_dev_config("ram").is_ok());
        assert_eq!(
            h.check_dev_config("zfs/pool").unwrap_err().to_string(),
            "no handler for subtype \"zfs\""
        );
        assert!(h.check_dev_config("file/relative.img").is_ok());
        assert_eq!(
            h.check_dev_config("file/no-such-dir/x.img")
                .unwrap_err()
                .to_string(),
            format!(
                "directory {} does not exist",
                std::env::current_dir()
                    .unwrap()
                    .join("no-such-dir")
                    .display()
            )
        );
        assert_eq!(
            h.check_dev_config("file/").unwrap_err().to_string(),
            "a path is required"
        );
        assert_eq!(
            h.check_dev_config("file//no/such/dir/x.img")
                .unwrap_err()
                .to_string(),
            "directory /no/such/dir does not exist"
        );
        assert!(h.check_dev_config("file//tmp").is_err());
        assert!(h.check_dev_config("qcow//no/such.qcow2").is_err());
    }

    #[test]
    fn file_handler_creates_and_sizes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        let b = FileHandler::default()
            .open(path.to_str().unwrap(), &info(1 << 20).spec())
            .unwrap();
        assert_eq!(b.capacity(), 1 << 20);
        assert_eq!(b.block_size(), 512);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        b.write_at(&[7u8; 512], 4096, Default::default()).unwrap();
        let mut r = [0u8; 512];
        b.read_at(&mut r, 4096).unwrap();
        assert_eq!(r, [7u8; 512]);
        // Relative paths resolve against the base directory (tcmu-runner's cwd).
        let rel = FileHandler::new(dir.path());
        rel.open("sub.img", &info(4096).spec()).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("sub.img")).unwrap().len(),
            4096
        );
        assert!(rel.check_config("missing/sub.img").is_err());
    }

    #[test]
    fn ram_handler_sizes_and_nullio() {
        let b = RamHandler.open("", &info(8192).spec()).unwrap();
        assert_eq!(b.capacity(), 8192);
        let n = RamHandler.open("nullio", &info(8192).spec()).unwrap();
        n.write_at(&[1u8; 512], 0, Default::default()).unwrap();
        let mut r = [9u8; 512];
        n.read_at(&mut r, 0).unwrap();
        assert_eq!(r, [0u8; 512]);
        assert!(RamHandler.check_config("a\nb").is_err());
    }

    /// Was `qcow.rs`'s test: the qcow handler through the device's spec.
    #[test]
    fn qcow_opens_an_image_of_the_device_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.qcow2");
        rustio_backstore::Qcow2Backstore::create(&p, 4 << 20, 16, &Default::default()).unwrap();
        let cfg = p.to_str().unwrap();
        QcowHandler.check_config(cfg).unwrap();
        let b = QcowHandler.open(cfg, &info(4 << 20).spec()).unwrap();
        b.write_at(&[0xab; 4096], 1 << 20, Default::default())
            .unwrap();
        let mut r = [0u8; 4096];
        b.read_at(&mut r, 1 << 20).unwrap();
        assert_eq!(r, [0xab; 4096]);
        drop(b); // the image is locked while open
        let err = QcowHandler.open(cfg, &info(8 << 20).spec()).unwrap_err();
        assert!(err.to_string().contains("size misconfigured"), "{err}");
        // Not a qcow2 image.
        let raw = dir.path().join("raw.img");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        assert!(QcowHandler
            .open(raw.to_str().unwrap(), &info(4096).spec())
            .is_err());
    }

    /// Was `rbd.rs`'s tests.
    #[test]
    fn rbd_config_checks_follow_tcmu_runner_syntax() {
        let h = RbdHandler;
        assert!(h.check_config("rbd/img").is_ok());
        assert!(h
            .check_config("rbd/img;osd_op_timeout=30;id=cinder")
            .is_ok());
        assert!(h.check_config("").is_err());
        assert!(h.check_config("pool").is_err());
    }

    #[cfg(not(feature = "rbd"))]
    #[test]
    fn rbd_opening_without_the_feature_says_how_to_get_it() {
        let e = RbdHandler
            .open("rbd/img", &info(1 << 20).spec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("without rbd support"), "{e}");
    }
}
