//! Handlers: what turns a `user` store's configuration string into a [`Backstore`].
//!
//! The configuration string is tcmu-runner's: `<subtype>/<handler config>`, written to
//! the backstore's `control` file as `dev_config=` and saved by targetcli as a `user`
//! object's `config` (targetcli builds it from `/backstores/user:<subtype> create …
//! cfgstring=…`). The subtype selects a [`Handler`]; the rest is the handler's own
//! syntax:
//!
//! | subtype | handler config | example |
//! |---------|----------------|---------|
//! | `file`  | path of a file or block device (created and sized to the configured size if missing); a relative path is taken relative to the working directory at start-up, as tcmu-runner's `file` handler does | `file//var/lib/rustio/disk0.img` |
//! | `ram`   | empty, a free-form name, or `nullio` (reads zeros, drops writes) | `ram/` |
//! | `qcow`  | absolute path of an existing qcow2 image (`qcow2/` is accepted too), then optionally `;cache=none` (guest data `O_DIRECT`, as qemu's `cache=none`) or `;cache=writeback` (the default: through the page cache) | `qcow//var/lib/images/vm.qcow2;cache=none` |
//! | `rbd`   | `<pool>/<image>[;osd_op_timeout=N][;conf=PATH][;id=USER]` | `rbd/rbd/vm1` |
//!
//! A custom handler implements [`Handler`] and is registered with
//! [`crate::Handlers::register`] (see `crates/tcmu/examples/custom_handler.rs`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustio_backstore::{
    Backstore, FileBackstore, FileOptions, Qcow2Backstore, Qcow2Options, RamBackstore,
};
use rustio_rbd::{OpenOptions, RbdBackstore, RbdConfig};

use crate::error::{ConfigError, OpenError};

/// What the frontend knows about a store besides its configuration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSpec {
    /// The configured size in bytes (TCMU `dev_size`, saveconfig `size`): a store
    /// created from the configuration gets it, an existing image must have it. `None`
    /// takes the store's own size.
    pub size: Option<u64>,
    /// Logical block size (`attrib/hw_block_size`, saveconfig `block_size`).
    pub block_size: u32,
}

impl StoreSpec {
    /// A spec of `size` bytes in blocks of `block_size`.
    pub fn new(size: Option<u64>, block_size: u32) -> StoreSpec {
        StoreSpec { size, block_size }
    }
}

/// The one size check: a store opened from an existing image must have the configured
/// size, if one is configured (tcmu-runner's `qcow` and `rbd` handlers refuse a
/// `dev_size` that differs; `rustio serve` refuses a saveconfig `size` that differs).
pub fn check_size(
    configured: Option<u64>,
    what: impl fmt::Display,
    capacity: u64,
) -> Result<(), OpenError> {
    match configured {
        Some(configured) if configured != capacity => Err(OpenError::SizeMismatch {
            configured,
            what: what.to_string(),
            capacity,
        }),
        _ => Ok(()),
    }
}

/// A handler: one subtype of `user` stores.
///
/// Handlers are shared between threads and devices; `open` is called once per store
/// (and again if its configuration changes) and returns the store that the SCSI engine
/// executes commands against. Whether the store waits on the network is the store's
/// [`rustio_backstore::Capabilities::network`], not the handler's.
pub trait Handler: Send + Sync + fmt::Debug {
    /// The subtype, i.e. the configuration prefix before the first `/`, and the D-Bus
    /// object name (`/org/kernel/TCMUService1/<subtype>`). Must not contain `/`.
    fn subtype(&self) -> &str;

    /// Human readable description of the configuration string (D-Bus `ConfigDesc`,
    /// shown by `targetcli help create`).
    fn config_desc(&self) -> &str {
        ""
    }

    /// Checks the handler part of the configuration (after `<subtype>/`) without
    /// opening anything; the reason is shown to the user by targetcli.
    fn check_config(&self, cfg: &str) -> Result<(), ConfigError>;

    /// Opens the store whose handler configuration is `cfg`, with the size and block
    /// size in `spec`.
    fn open(&self, cfg: &str, spec: &StoreSpec) -> Result<Arc<dyn Backstore>, OpenError>;
}

fn check_path_text(cfg: &str) -> Result<(), ConfigError> {
    if cfg.is_empty() {
        return Err(ConfigError::PathRequired);
    }
    if cfg.contains('\0') || cfg.contains('\n') {
        return Err(ConfigError::PathCharacters);
    }
    Ok(())
}

fn check_absolute_path(cfg: &str) -> Result<&Path, ConfigError> {
    check_path_text(cfg)?;
    let p = Path::new(cfg);
    if !p.is_absolute() {
        return Err(ConfigError::NotAbsolute { path: cfg.into() });
    }
    Ok(p)
}

/// `file`: a regular file or block device (tcmu-runner's `file_example` handler). The
/// file is created if missing and extended to the configured size if shorter. Relative
/// paths (`file/disk.img`, as the `user_create.sh` script writes them) are resolved
/// against `base_dir`, which defaults to the working directory at start-up.
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
    pub fn resolve(&self, cfg: &str) -> Result<PathBuf, ConfigError> {
        check_path_text(cfg)?;
        let p = self.base_dir.join(cfg);
        match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                Err(ConfigError::NoDirectory(dir.to_owned()))
            }
            _ if p.is_dir() => Err(ConfigError::IsDirectory(p)),
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

    fn check_config(&self, cfg: &str) -> Result<(), ConfigError> {
        self.resolve(cfg).map(|_| ())
    }

    fn open(&self, cfg: &str, spec: &StoreSpec) -> Result<Arc<dyn Backstore>, OpenError> {
        let path = self.resolve(cfg)?;
        let mut opts = FileOptions::new(path);
        opts.size = spec.size;
        opts.block_size = spec.block_size;
        Ok(Arc::new(FileBackstore::open(opts)?))
    }
}

/// `ram`: a sparse in-memory store of the configured size (contents are lost when the
/// process stops); `ram/nullio` discards writes and reads zeros.
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

    fn check_config(&self, cfg: &str) -> Result<(), ConfigError> {
        if cfg.len() > 200 || cfg.bytes().any(|b| b.is_ascii_control()) {
            return Err(ConfigError::BadName);
        }
        Ok(())
    }

    fn open(&self, cfg: &str, spec: &StoreSpec) -> Result<Arc<dyn Backstore>, OpenError> {
        self.check_config(cfg)?;
        let size = spec.size.ok_or(OpenError::SizeRequired { what: "ram" })?;
        let store = if cfg == "nullio" {
            RamBackstore::nullio(size, spec.block_size)?
        } else {
            RamBackstore::new(size, spec.block_size)?
        };
        Ok(Arc::new(store))
    }
}

/// `qcow`: a qcow2 image (tcmu-runner's `qcow` handler), served by rustio's qcow2
/// engine. Like tcmu-runner, the image's virtual size must equal the configured size.
#[derive(Debug, Clone, Copy, Default)]
pub struct QcowHandler;

impl Handler for QcowHandler {
    fn subtype(&self) -> &str {
        "qcow"
    }

    fn config_desc(&self) -> &str {
        "Absolute path of an existing qcow2 image, e.g. /var/lib/images/vm.qcow2, optionally \
         followed by ;cache=none (guest data bypasses the page cache, O_DIRECT) or \
         ;cache=writeback (the default)."
    }

    fn check_config(&self, cfg: &str) -> Result<(), ConfigError> {
        QcowConfig::parse(cfg).map(|_| ())
    }

    fn open(&self, cfg: &str, spec: &StoreSpec) -> Result<Arc<dyn Backstore>, OpenError> {
        let QcowConfig { path, direct_io } = QcowConfig::parse(cfg)?;
        let opts = Qcow2Options {
            block_size: spec.block_size,
            direct_io,
            ..Qcow2Options::default()
        };
        let image = Qcow2Backstore::open_with(path, &opts)?;
        check_size(
            spec.size,
            format_args!("qcow2 image {}", path.display()),
            image.capacity(),
        )?;
        Ok(Arc::new(image))
    }
}

/// The `qcow` handler's configuration: `<absolute path>[;cache=none|writeback]`. Only a
/// last `;` followed by `cache=` starts the option, so any other `;` stays in the path.
#[derive(Debug, PartialEq)]
struct QcowConfig<'a> {
    path: &'a Path,
    /// `cache=none`.
    direct_io: bool,
}

impl<'a> QcowConfig<'a> {
    fn parse(cfg: &'a str) -> Result<Self, ConfigError> {
        let (path, direct_io) = match cfg.rsplit_once(';') {
            Some((path, opt)) => match opt.strip_prefix("cache=") {
                Some("none") => (path, true),
                Some("writeback") => (path, false),
                Some(_) => return Err(ConfigError::QcowOption(opt.into())),
                None => (cfg, false),
            },
            None => (cfg, false),
        };
        let path = check_absolute_path(path)?;
        if !path.is_file() {
            return Err(ConfigError::NotAFile(path.display().to_string()));
        }
        Ok(QcowConfig { path, direct_io })
    }
}

/// `rbd`, tcmu-runner compatible: cfg = `<pool>/<image>[;osd_op_timeout=N][;conf=PATH]
/// [;id=USER]`, served by rustio's librbd engine (only in builds with the `rbd`
/// feature; otherwise opening fails with a clear error). Like tcmu-runner, the image's
/// size must equal the configured size.
#[derive(Debug, Clone, Copy, Default)]
pub struct RbdHandler;

impl Handler for RbdHandler {
    fn subtype(&self) -> &str {
        "rbd"
    }

    fn config_desc(&self) -> &str {
        "<pool>/<image>[;osd_op_timeout=N][;conf=PATH][;id=USER] of an existing Ceph RBD image."
    }

    fn check_config(&self, cfg: &str) -> Result<(), ConfigError> {
        RbdConfig::parse_handler_config(cfg)?;
        Ok(())
    }

    fn open(&self, cfg: &str, spec: &StoreSpec) -> Result<Arc<dyn Backstore>, OpenError> {
        let config = RbdConfig::parse_handler_config(cfg).map_err(ConfigError::from)?;
        let name = config.spec();
        let mut opts = OpenOptions::new(config);
        opts.block_size = spec.block_size;
        let image = RbdBackstore::open(&opts)?;
        check_size(
            spec.size,
            format_args!("RBD image {name}"),
            image.capacity(),
        )?;
        Ok(Arc::new(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: u64) -> StoreSpec {
        StoreSpec::new(Some(size), 512)
    }

    #[test]
    fn file_handler_creates_and_sizes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        let b = FileHandler::default()
            .open(path.to_str().unwrap(), &spec(1 << 20))
            .unwrap();
        assert_eq!(b.capacity(), 1 << 20);
        assert_eq!(b.block_size(), 512);
        assert!(!b.capabilities().network);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        b.write_at(&[7u8; 512], 4096, Default::default()).unwrap();
        let mut r = [0u8; 512];
        b.read_at(&mut r, 4096).unwrap();
        assert_eq!(r, [7u8; 512]);
        // Relative paths resolve against the base directory (tcmu-runner's cwd).
        let rel = FileHandler::new(dir.path());
        rel.open("sub.img", &spec(4096)).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("sub.img")).unwrap().len(),
            4096
        );
        assert!(matches!(
            rel.check_config("missing/sub.img"),
            Err(ConfigError::NoDirectory(_))
        ));
    }

    #[test]
    fn ram_handler_sizes_and_nullio() {
        let b = RamHandler.open("", &spec(8192)).unwrap();
        assert_eq!(b.capacity(), 8192);
        assert!(!b.capabilities().network);
        let n = RamHandler.open("nullio", &spec(8192)).unwrap();
        n.write_at(&[1u8; 512], 0, Default::default()).unwrap();
        let mut r = [9u8; 512];
        n.read_at(&mut r, 0).unwrap();
        assert_eq!(r, [0u8; 512]);
        assert!(matches!(
            RamHandler.check_config("a\nb"),
            Err(ConfigError::BadName)
        ));
        assert!(matches!(
            RamHandler.open("", &StoreSpec::new(None, 512)),
            Err(OpenError::SizeRequired { what: "ram" })
        ));
    }

    #[test]
    fn qcow_opens_an_image_of_the_configured_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.qcow2");
        Qcow2Backstore::create(&p, 4 << 20, 16, &Default::default()).unwrap();
        let cfg = p.to_str().unwrap();
        QcowHandler.check_config(cfg).unwrap();
        let b = QcowHandler.open(cfg, &spec(4 << 20)).unwrap();
        assert!(!b.capabilities().network);
        b.write_at(&[0xab; 4096], 1 << 20, Default::default())
            .unwrap();
        let mut r = [0u8; 4096];
        b.read_at(&mut r, 1 << 20).unwrap();
        assert_eq!(r, [0xab; 4096]);
        drop(b); // the image is locked while open
        match QcowHandler.open(cfg, &spec(8 << 20)) {
            Err(e @ OpenError::SizeMismatch { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "size misconfigured: configured size is 8388608 bytes but qcow2 image \
                     {cfg} is 4194304 bytes"
                )
            ),
            other => panic!("{:?}", other.err()),
        }
        // No configured size: the image's own.
        let b = QcowHandler.open(cfg, &StoreSpec::new(None, 512)).unwrap();
        assert_eq!(b.capacity(), 4 << 20);
        drop(b);
        // Not a qcow2 image.
        let raw = dir.path().join("raw.img");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        assert!(matches!(
            QcowHandler.open(raw.to_str().unwrap(), &spec(4096)),
            Err(OpenError::Backstore(_))
        ));
        assert!(matches!(
            QcowHandler.check_config("rel.qcow2"),
            Err(ConfigError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn qcow_cache_option() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a;b.qcow2");
        Qcow2Backstore::create(&p, 4 << 20, 16, &Default::default()).unwrap();
        let path = p.to_str().unwrap();
        let parsed = |cfg: &str| QcowConfig::parse(cfg).map(|c| c.direct_io);
        // A `;` inside the path is the path's; only `;cache=` is an option.
        assert!(!parsed(path).unwrap());
        assert!(parsed(&format!("{path};cache=none")).unwrap());
        assert!(!parsed(&format!("{path};cache=writeback")).unwrap());
        let e = parsed(&format!("{path};cache=unsafe")).unwrap_err();
        assert!(
            matches!(e, ConfigError::QcowOption(ref o) if o == "cache=unsafe"),
            "{e}"
        );
        assert!(matches!(
            parsed(&format!("{path}x;cache=none")),
            Err(ConfigError::NotAFile(_))
        ));
        // Where the temporary directory does O_DIRECT (ext4; tmpfs since Linux 6.6) the
        // image serves I/O; elsewhere opening says what to do instead.
        match QcowHandler.open(&format!("{path};cache=none"), &spec(4 << 20)) {
            Ok(b) => {
                b.write_at(&[0x5a; 4096], 8192, Default::default()).unwrap();
                let mut r = [0u8; 4096];
                b.read_at(&mut r, 8192).unwrap();
                assert_eq!(r, [0x5a; 4096]);
            }
            Err(e) => assert!(e.to_string().contains("use cache=writeback"), "{e}"),
        }
    }

    #[test]
    fn rbd_config_checks_follow_tcmu_runner_syntax() {
        let h = RbdHandler;
        assert!(h.check_config("rbd/img").is_ok());
        assert!(h
            .check_config("rbd/img;osd_op_timeout=30;id=cinder")
            .is_ok());
        assert!(matches!(h.check_config(""), Err(ConfigError::Rbd(_))));
        assert!(matches!(h.check_config("pool"), Err(ConfigError::Rbd(_))));
    }

    #[cfg(not(feature = "rbd"))]
    #[test]
    fn rbd_open_without_the_feature_says_how_to_get_it() {
        let e = RbdHandler.open("rbd/img", &spec(1 << 20)).unwrap_err();
        assert!(matches!(e, OpenError::Rbd(_)), "{e:?}");
        assert!(e.to_string().contains("without rbd support"), "{e}");
    }

    #[test]
    fn size_check() {
        assert!(check_size(None, "x", 7).is_ok());
        assert!(check_size(Some(7), "x", 7).is_ok());
        assert_eq!(
            check_size(Some(8), "RBD image rbd/p/i", 7)
                .unwrap_err()
                .to_string(),
            "size misconfigured: configured size is 8 bytes but RBD image rbd/p/i is 7 bytes"
        );
    }
}
