//! Handlers: what turns a device's `dev_config` into a [`Backstore`].
//!
//! The configuration string is tcmu-runner's: `dev_config=<subtype>/<handler config>`
//! written to the backstore's `control` file (targetcli builds it as
//! `<subtype>/<cfgstring>` from `/backstores/user:<subtype> create … cfgstring=…`). The
//! subtype selects a [`Handler`]; the rest is the handler's own syntax:
//!
//! | subtype | handler config | example `dev_config` |
//! |---------|----------------|----------------------|
//! | `file`  | path of a file or block device (created and sized to `dev_size` if missing); a relative path is taken relative to the runner's working directory, as tcmu-runner's `file` handler does | `file//var/lib/rustio/disk0.img` |
//! | `ram`   | empty, a free-form name, or `nullio` (reads zeros, drops writes) | `ram/` |
//! | `qcow`  | absolute path of an existing qcow2 image | `qcow//var/lib/images/vm.qcow2` |
//!
//! A custom handler implements [`Handler`] and is registered with
//! [`Handlers::register`]; see `examples/custom_handler.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustio_backstore::{Backstore, FileBackstore, FileOptions, RamBackstore};

use crate::error::HandlerError;

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

/// A TCMU handler: one subtype of `user` backstores.
///
/// Handlers are shared between threads and devices; `open` is called once per device
/// (and again if its `dev_config` is reconfigured) and returns the store that the SCSI
/// engine executes commands against.
pub trait Handler: Send + Sync + fmt::Debug {
    /// The subtype, i.e. the `dev_config` prefix before the first `/`, and the D-Bus object
    /// name (`/org/kernel/TCMUService1/<subtype>`). Must not contain `/`.
    fn subtype(&self) -> &str;

    /// Human readable description of the configuration string (D-Bus `ConfigDesc`,
    /// shown by `targetcli help create`).
    fn config_desc(&self) -> &str {
        ""
    }

    /// Checks the handler part of the configuration (after `<subtype>/`) without opening
    /// anything; the reason is shown to the user by targetcli.
    fn check_config(&self, cfg: &str) -> Result<(), String>;

    /// Opens the store for a device whose handler configuration is `cfg`, with the size
    /// and block size in `dev`.
    fn open(&self, cfg: &str, dev: &DeviceInfo) -> Result<Arc<dyn Backstore>, HandlerError>;

    /// Whether its stores answer from memory or local files without network round trips,
    /// so that [`crate::runner::Execution::Auto`] executes their commands on the device's
    /// poller thread. Defaults to `false` (the worker pool).
    fn local(&self) -> bool {
        false
    }
}

/// The handlers a runner knows, by subtype.
#[derive(Debug, Clone, Default)]
pub struct Handlers {
    map: BTreeMap<String, Arc<dyn Handler>>,
}

impl Handlers {
    /// No handlers.
    pub fn empty() -> Handlers {
        Handlers::default()
    }

    /// The built-in handlers: `file`, `ram`, `qcow` and `rbd` (the last opens images
    /// only in builds with the `rbd` feature).
    pub fn builtin() -> Handlers {
        let mut h = Handlers::empty();
        h.register(Arc::new(FileHandler::default()));
        h.register(Arc::new(RamHandler));
        h.register(Arc::new(QcowHandler));
        h.register(Arc::new(RbdHandler));
        h
    }

    /// Adds (or replaces) a handler under its subtype.
    pub fn register(&mut self, handler: Arc<dyn Handler>) {
        self.map.insert(handler.subtype().to_owned(), handler);
    }

    /// The handler for `subtype`.
    pub fn get(&self, subtype: &str) -> Option<&Arc<dyn Handler>> {
        self.map.get(subtype)
    }

    /// All handlers, by subtype.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Handler>> {
        self.map.values()
    }

    /// Checks a full `dev_config` (`<subtype>/<cfg>`), as D-Bus `CheckConfig` does.
    pub fn check_dev_config(&self, dev_config: &str) -> Result<(), String> {
        let (subtype, cfg) = dev_config.split_once('/').unwrap_or((dev_config, ""));
        let h = self
            .get(subtype)
            .ok_or_else(|| format!("no handler for subtype {subtype:?}"))?;
        h.check_config(cfg)
    }
}

fn check_path_text(cfg: &str) -> Result<(), String> {
    if cfg.is_empty() {
        return Err("a path is required".into());
    }
    if cfg.contains('\0') || cfg.contains('\n') {
        return Err("the path contains a NUL or newline".into());
    }
    Ok(())
}

fn check_absolute_path(cfg: &str) -> Result<&Path, String> {
    check_path_text(cfg)?;
    let p = Path::new(cfg);
    if !p.is_absolute() {
        return Err(format!("{cfg:?} is not an absolute path"));
    }
    Ok(p)
}

/// `file`: a regular file or block device (tcmu-runner's `file_example` handler). The
/// file is created if missing and extended to the device size if shorter. Relative paths
/// (`dev_config=file/disk.img`, as the `user_create.sh` script writes them) are resolved
/// against `base_dir`, which defaults to the runner's working directory at start-up.
#[derive(Debug, Clone)]
pub struct FileHandler {
    base_dir: PathBuf,
}

impl Default for FileHandler {
    fn default() -> Self {
        FileHandler::new(std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")))
    }
}

impl FileHandler {
    /// A handler resolving relative paths against `base_dir`.
    pub fn new(base_dir: impl Into<PathBuf>) -> FileHandler {
        FileHandler {
            base_dir: base_dir.into(),
        }
    }

    /// The path `cfg` designates, after checking it.
    pub fn resolve(&self, cfg: &str) -> Result<PathBuf, String> {
        check_path_text(cfg)?;
        let p = self.base_dir.join(cfg);
        match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                Err(format!("directory {} does not exist", dir.display()))
            }
            _ if p.is_dir() => Err(format!("{} is a directory", p.display())),
            _ => Ok(p),
        }
    }
}

impl Handler for FileHandler {
    fn subtype(&self) -> &str {
        "file"
    }

    fn config_desc(&self) -> &str {
        "Path of the backing file or block device, e.g. /var/lib/rustio/disk0.img. \
         A missing file is created with the device size."
    }

    fn check_config(&self, cfg: &str) -> Result<(), String> {
        self.resolve(cfg).map(|_| ())
    }

    fn local(&self) -> bool {
        true
    }

    fn open(&self, cfg: &str, dev: &DeviceInfo) -> Result<Arc<dyn Backstore>, HandlerError> {
        let path = self.resolve(cfg)?;
        let mut opts = FileOptions::new(path);
        opts.size = Some(dev.size);
        opts.block_size = dev.block_size;
        Ok(Arc::new(FileBackstore::open(opts)?))
    }
}

/// `ram`: a sparse in-memory store of the device size (contents are lost when the runner
/// stops); `ram/nullio` discards writes and reads zeros.
#[derive(Debug, Clone, Copy, Default)]
pub struct RamHandler;

impl Handler for RamHandler {
    fn subtype(&self) -> &str {
        "ram"
    }

    fn config_desc(&self) -> &str {
        "Empty or a free-form name for a memory-backed device; \"nullio\" for a device that \
         discards writes and reads zeros."
    }

    fn check_config(&self, cfg: &str) -> Result<(), String> {
        if cfg.len() > 200 || cfg.bytes().any(|b| b.is_ascii_control()) {
            return Err("the name must be at most 200 printable characters".into());
        }
        Ok(())
    }

    fn local(&self) -> bool {
        true
    }

    fn open(&self, cfg: &str, dev: &DeviceInfo) -> Result<Arc<dyn Backstore>, HandlerError> {
        self.check_config(cfg)?;
        let store = if cfg == "nullio" {
            RamBackstore::nullio(dev.size, dev.block_size)?
        } else {
            RamBackstore::new(dev.size, dev.block_size)?
        };
        Ok(Arc::new(store))
    }
}

/// `qcow`: a qcow2 image (tcmu-runner's `qcow` handler), served by rustio's qcow2 engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct QcowHandler;

impl Handler for QcowHandler {
    fn subtype(&self) -> &str {
        "qcow"
    }

    fn config_desc(&self) -> &str {
        "Absolute path of an existing qcow2 image, e.g. /var/lib/images/vm.qcow2."
    }

    fn check_config(&self, cfg: &str) -> Result<(), String> {
        let p = check_absolute_path(cfg)?;
        if !p.is_file() {
            return Err(format!("{cfg} is not an existing file"));
        }
        Ok(())
    }

    fn local(&self) -> bool {
        true
    }

    fn open(&self, cfg: &str, dev: &DeviceInfo) -> Result<Arc<dyn Backstore>, HandlerError> {
        self.check_config(cfg)?;
        crate::qcow::open(Path::new(cfg), dev)
    }
}

/// `user:rbd`, tcmu-runner compatible: cfg = `<pool>/<image>[;osd_op_timeout=N][;conf=PATH][;id=USER]`
/// (dev_config `rbd/<pool>/<image>...`), served by rustio's librbd engine.
#[derive(Debug, Default)]
pub struct RbdHandler;

impl Handler for RbdHandler {
    fn subtype(&self) -> &str {
        "rbd"
    }

    fn config_desc(&self) -> &str {
        "<pool>/<image>[;osd_op_timeout=N][;conf=PATH][;id=USER] of an existing Ceph RBD image."
    }

    fn check_config(&self, cfg: &str) -> Result<(), String> {
        crate::rbd::parse(cfg).map(|_| ())
    }

    fn open(&self, cfg: &str, dev: &DeviceInfo) -> Result<Arc<dyn Backstore>, HandlerError> {
        let config = crate::rbd::parse(cfg)?;
        crate::rbd::open(config, dev)
    }
}

/// A 512-byte-block device of `size` bytes, for the handlers' unit tests.
#[cfg(test)]
pub(crate) fn test_device(size: u64) -> DeviceInfo {
    DeviceInfo {
        name: "d".into(),
        size,
        block_size: 512,
        max_sectors: 128,
        write_cache: true,
        unit_serial: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_device as info;

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
            h.check_dev_config("zfs/pool").unwrap_err(),
            "no handler for subtype \"zfs\""
        );
        assert!(h.check_dev_config("file/relative.img").is_ok());
        assert_eq!(
            h.check_dev_config("file/no-such-dir/x.img").unwrap_err(),
            format!(
                "directory {} does not exist",
                std::env::current_dir()
                    .unwrap()
                    .join("no-such-dir")
                    .display()
            )
        );
        assert_eq!(
            h.check_dev_config("file/").unwrap_err(),
            "a path is required"
        );
        assert_eq!(
            h.check_dev_config("file//no/such/dir/x.img").unwrap_err(),
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
            .open(path.to_str().unwrap(), &info(1 << 20))
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
        rel.open("sub.img", &info(4096)).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("sub.img")).unwrap().len(),
            4096
        );
        assert!(rel.check_config("missing/sub.img").is_err());
    }

    #[test]
    fn ram_handler_sizes_and_nullio() {
        let b = RamHandler.open("", &info(8192)).unwrap();
        assert_eq!(b.capacity(), 8192);
        let n = RamHandler.open("nullio", &info(8192)).unwrap();
        n.write_at(&[1u8; 512], 0, Default::default()).unwrap();
        let mut r = [9u8; 512];
        n.read_at(&mut r, 0).unwrap();
        assert_eq!(r, [0u8; 512]);
        assert!(RamHandler.check_config("a\nb").is_err());
    }
}
