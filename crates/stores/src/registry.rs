//! The registry of handlers, and opening saveconfig storage objects through it.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustio_backstore::{Backstore, FileBackstore, FileOptions, RamBackstore};
use rustio_config::StorageObject;

use crate::error::{ConfigError, ObjectError, OpenError};
use crate::handler::{FileHandler, Handler, QcowHandler, RamHandler, RbdHandler, StoreSpec};

/// The handlers of `user` stores, by subtype, plus aliases (`qcow2` for `qcow`, the
/// spelling some saved configurations use).
#[derive(Debug, Clone, Default)]
pub struct Handlers {
    map: BTreeMap<String, Arc<dyn Handler>>,
    aliases: BTreeMap<String, String>,
}

/// A storage object opened by [`Handlers::open_object`], with what its configuration
/// says about the logical unit on top of it.
#[derive(Debug, Clone)]
pub struct OpenedObject {
    /// The store.
    pub store: Arc<dyn Backstore>,
    /// Initial write cache (WCE) setting implied by the object: `write_back` of fileio
    /// and block objects, on for RAM, the store's volatile cache for `user` objects.
    /// The object's `emulate_write_cache` attribute, if any, overrides it.
    pub write_cache: bool,
    /// The object is read-only (`readonly` of block objects).
    pub read_only: bool,
}

impl Handlers {
    /// No handlers.
    pub fn empty() -> Handlers {
        Handlers::default()
    }

    /// The built-in handlers: `file`, `ram`, `qcow` (alias `qcow2`) and `rbd` (the last
    /// opens images only in builds with the `rbd` feature).
    pub fn builtin() -> Handlers {
        let mut h = Handlers::empty();
        h.register(Arc::new(FileHandler::default()));
        h.register(Arc::new(RamHandler));
        h.register(Arc::new(QcowHandler));
        h.register(Arc::new(RbdHandler));
        h.alias("qcow2", "qcow");
        h
    }

    /// Adds (or replaces) a handler under its subtype.
    pub fn register(&mut self, handler: Arc<dyn Handler>) {
        self.aliases.remove(handler.subtype());
        self.map.insert(handler.subtype().to_owned(), handler);
    }

    /// Makes `alias` select the handler registered as `subtype`. Aliases are not listed
    /// by [`Handlers::iter`] (so they get no D-Bus object of their own).
    pub fn alias(&mut self, alias: &str, subtype: &str) {
        self.aliases.insert(alias.to_owned(), subtype.to_owned());
    }

    /// The handler for `subtype` (or an alias of it).
    pub fn get(&self, subtype: &str) -> Option<&Arc<dyn Handler>> {
        self.map.get(subtype).or_else(|| {
            self.aliases
                .get(subtype)
                .and_then(|target| self.map.get(target))
        })
    }

    /// All handlers, by subtype.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Handler>> {
        self.map.values()
    }

    /// The handler a full configuration `<subtype>/<cfg>` selects, and its `<cfg>`. A
    /// string without `/` is a subtype with an empty handler configuration (libtcmu's
    /// `find_handler`: the kernel's `dev_config` may be just `ram`).
    pub fn resolve<'c>(
        &self,
        dev_config: &'c str,
    ) -> Result<(&Arc<dyn Handler>, &'c str), ConfigError> {
        let (subtype, cfg) = dev_config.split_once('/').unwrap_or((dev_config, ""));
        let h = self
            .get(subtype)
            .ok_or_else(|| ConfigError::UnknownSubtype {
                subtype: subtype.to_owned(),
            })?;
        Ok((h, cfg))
    }

    /// Checks a full configuration (`<subtype>/<cfg>`), as D-Bus `CheckConfig` does.
    pub fn check_dev_config(&self, dev_config: &str) -> Result<(), ConfigError> {
        let (h, cfg) = self.resolve(dev_config)?;
        h.check_config(cfg)
    }

    /// Opens the store of a full configuration (`<subtype>/<cfg>`).
    pub fn open_dev_config(
        &self,
        dev_config: &str,
        spec: &StoreSpec,
    ) -> Result<Arc<dyn Backstore>, OpenError> {
        let (h, cfg) = self.resolve(dev_config)?;
        h.open(cfg, spec)
    }

    /// Opens a saveconfig storage object: `fileio` (created at `size` when missing),
    /// `block`, `ramdisk` (`nullio` → the null variant) and `user` through its handler.
    /// `block_size` is the object's logical block size (its `block_size` attribute).
    pub fn open_object(
        &self,
        so: &StorageObject,
        block_size: u32,
    ) -> Result<OpenedObject, ObjectError> {
        let name = so.name();
        let open_err = |source: OpenError| ObjectError::Open {
            name: name.to_owned(),
            source,
        };
        let opened = |store: Arc<dyn Backstore>, write_cache, read_only| OpenedObject {
            store,
            write_cache,
            read_only,
        };
        match so {
            StorageObject::Fileio(f) => {
                let wb = f.write_back.unwrap_or(true);
                let mut o = FileOptions::new(&f.dev);
                o.size = f.size;
                o.block_size = block_size;
                o.write_back = wb;
                let b = FileBackstore::open(o).map_err(|e| open_err(e.into()))?;
                Ok(opened(Arc::new(b), wb, false))
            }
            StorageObject::Block(b) => {
                let ro = b.readonly.unwrap_or(false);
                let wb = b.write_back.unwrap_or(false);
                let mut o = FileOptions::new(&b.dev);
                o.block_size = block_size;
                o.read_only = ro;
                o.write_back = wb;
                let s = FileBackstore::open(o).map_err(|e| open_err(e.into()))?;
                Ok(opened(Arc::new(s), wb, ro))
            }
            StorageObject::Ramdisk(r) => {
                let s = if r.nullio.unwrap_or(false) {
                    RamBackstore::nullio(r.size, block_size)
                } else {
                    RamBackstore::new(r.size, block_size)
                }
                .map_err(|e| open_err(e.into()))?;
                Ok(opened(Arc::new(s), true, false))
            }
            StorageObject::User(u) => {
                let s = self.open_user(name, u.config.as_deref(), u.size, block_size)?;
                let wc = s.capabilities().volatile_cache;
                Ok(opened(s, wc, false))
            }
            other => Err(ObjectError::UnsupportedPlugin {
                name: name.to_owned(),
                plugin: other.plugin().as_str().to_owned(),
            }),
        }
    }

    /// Opens a saved `user` object named `name` whose `config` is `config`.
    fn open_user(
        &self,
        name: &str,
        config: Option<&str>,
        size: Option<u64>,
        block_size: u32,
    ) -> Result<Arc<dyn Backstore>, ObjectError> {
        let path = format!("user/{name}");
        let user_err = |reason| ObjectError::UserConfig {
            path: path.clone(),
            reason,
        };
        let config = config.ok_or_else(|| user_err(ConfigError::MissingConfig))?;
        if config.contains('\0') {
            return Err(user_err(ConfigError::Nul));
        }
        // targetcli saves `<subtype>/<cfgstring>`: a bare word is not a configuration.
        let Some((subtype, _)) = config.split_once('/') else {
            return Err(user_err(ConfigError::NoSubtype {
                config: config.to_owned(),
            }));
        };
        let handler_err = |reason| ObjectError::Handler {
            path: path.clone(),
            subtype: subtype.to_owned(),
            config: config.to_owned(),
            reason,
        };
        let spec = StoreSpec::new(size, block_size);
        match self.open_dev_config(config, &spec) {
            Ok(s) => Ok(s),
            Err(OpenError::Config(reason)) => Err(handler_err(reason)),
            Err(reason @ (OpenError::SizeMismatch { .. } | OpenError::SizeRequired { .. })) => {
                Err(ObjectError::Mismatch {
                    path: path.clone(),
                    reason,
                })
            }
            Err(source) => Err(ObjectError::Open {
                name: name.to_owned(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn object(json: String) -> StorageObject {
        let text = format!(r#"{{"storage_objects": [{json}]}}"#);
        rustio_config::parse::from_str(&text)
            .unwrap()
            .storage_objects
            .remove(0)
    }

    fn user(config: &str, size: u64) -> StorageObject {
        object(format!(
            r#"{{"plugin": "user", "name": "u0", "config": {config:?}, "size": {size}}}"#
        ))
    }

    fn open_err(so: &StorageObject) -> ObjectError {
        match Handlers::builtin().open_object(so, 512) {
            Err(e) => e,
            Ok(o) => panic!("opened {:?}", o.store.capacity()),
        }
    }

    #[test]
    fn registry_and_dev_config_checks() {
        let h = Handlers::builtin();
        assert_eq!(
            h.iter().map(|x| x.subtype().to_owned()).collect::<Vec<_>>(),
            vec!["file", "qcow", "ram", "rbd"]
        );
        assert_eq!(h.get("qcow2").unwrap().subtype(), "qcow");
        assert!(h.check_dev_config("ram/").is_ok());
        assert!(h.check_dev_config("ram").is_ok());
        match h.check_dev_config("zfs/pool") {
            Err(e @ ConfigError::UnknownSubtype { .. }) => {
                assert_eq!(e.to_string(), "no handler for subtype \"zfs\"")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            h.check_dev_config("file/"),
            Err(ConfigError::PathRequired)
        ));
        assert!(matches!(
            h.check_dev_config("qcow//no/such.qcow2"),
            Err(ConfigError::NotAFile(_))
        ));
        // Messages a TCMU `dev_config` refusal logs (moved from rustio-tcmu's tests).
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
        let (q, cfg) = h.resolve("qcow2//x.qcow2").unwrap();
        assert_eq!((q.subtype(), cfg), ("qcow", "/x.qcow2"));
    }

    #[test]
    fn every_kind_opens_and_only_rbd_waits_on_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let h = Handlers::builtin();
        let f = dir.path().join("f.img");
        let fileio = object(format!(
            r#"{{"plugin": "fileio", "name": "f0", "dev": {:?}, "size": 1048576}}"#,
            f.display().to_string()
        ));
        let o = h.open_object(&fileio, 512).unwrap();
        assert_eq!(o.store.capacity(), 1 << 20);
        assert!(o.write_cache && !o.read_only);
        let block = object(format!(
            r#"{{"plugin": "block", "name": "b0", "dev": {:?}, "readonly": true}}"#,
            f.display().to_string()
        ));
        let o = h.open_object(&block, 4096).unwrap();
        assert_eq!(
            (o.store.block_size(), o.read_only, o.write_cache),
            (4096, true, false)
        );
        let ram = object(r#"{"plugin": "ramdisk", "name": "r0", "size": 65536}"#.into());
        let o = h.open_object(&ram, 512).unwrap();
        assert_eq!(o.store.capacity(), 65536);
        let stores = [
            h.open_object(&fileio, 512).unwrap().store,
            o.store,
            h.open_object(
                &user(
                    &format!("file/{}", dir.path().join("u.img").display()),
                    8192,
                ),
                512,
            )
            .unwrap()
            .store,
            h.open_object(&user("ram/nullio", 8192), 512).unwrap().store,
        ];
        for s in stores {
            assert!(!s.capabilities().network);
        }
        let q = dir.path().join("q.qcow2");
        rustio_backstore::Qcow2Backstore::create(&q, 1 << 20, 16, &Default::default()).unwrap();
        let o = h
            .open_object(&user(&format!("qcow2/{}", q.display()), 1 << 20), 512)
            .unwrap();
        assert!(!o.store.capabilities().network);
        assert!(o.write_cache, "qcow2 metadata updates are write-back");
    }

    /// RBD needs a cluster to open; its configuration is checked without one, and a
    /// store that declares `network` (as `RbdBackstore` does) is what callers see.
    #[test]
    fn rbd_config_without_a_cluster() {
        let h = Handlers::builtin();
        assert!(h
            .check_dev_config("rbd/pool1/img1;osd_op_timeout=30;id=cinder")
            .is_ok());
        assert!(matches!(
            h.check_dev_config("rbd/pool"),
            Err(ConfigError::Rbd(_))
        ));
        match open_err(&user("rbd/pool", 1 << 20)) {
            e @ ObjectError::Handler { .. } => {
                assert!(e.to_string().contains("rbd/pool"), "{e}");
                assert!(e.is_config());
            }
            other => panic!("{other:?}"),
        }
        #[cfg(not(feature = "rbd"))]
        match open_err(&user("rbd/p/i", 1 << 20)) {
            ObjectError::Open {
                name,
                source: OpenError::Rbd(_),
            } => assert_eq!(name, "u0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_configurations_are_typed_and_name_the_object() {
        let missing = object(r#"{"plugin": "user", "name": "disk7", "size": 1}"#.into());
        match open_err(&missing) {
            e @ ObjectError::UserConfig {
                reason: ConfigError::MissingConfig,
                ..
            } => assert_eq!(
                e.to_string(),
                "storage object user/disk7: no \"config\" (expected <handler>/<config>)"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            open_err(&user("nohandler", 1)),
            ObjectError::UserConfig {
                reason: ConfigError::NoSubtype { .. },
                ..
            }
        ));
        assert!(matches!(
            open_err(&object(
                r#"{"plugin": "user", "name": "u0", "config": "qcow//a\u0000b"}"#.into()
            )),
            ObjectError::UserConfig {
                reason: ConfigError::Nul,
                ..
            }
        ));
        match open_err(&user("glfs/vol@host/img", 1)) {
            e @ ObjectError::Handler {
                reason: ConfigError::UnknownSubtype { .. },
                ..
            } => assert_eq!(
                e.to_string(),
                "storage object user/u0: handler \"glfs\" (config \"glfs/vol@host/img\"): \
                 no handler for subtype \"glfs\""
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            open_err(&user("qcow/relative.qcow2", 1)),
            ObjectError::Handler {
                reason: ConfigError::NotAbsolute { .. },
                ..
            }
        ));
        let pscsi = object(r#"{"plugin": "pscsi", "name": "p0", "dev": "/dev/sg0"}"#.into());
        assert!(matches!(
            open_err(&pscsi),
            ObjectError::UnsupportedPlugin { .. }
        ));
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q.qcow2");
        rustio_backstore::Qcow2Backstore::create(&q, 1 << 20, 16, &Default::default()).unwrap();
        match open_err(&user(&format!("qcow/{}", q.display()), 2 << 20)) {
            e @ ObjectError::Mismatch {
                reason: OpenError::SizeMismatch { .. },
                ..
            } => assert!(e
                .to_string()
                .starts_with("storage object user/u0: size misconfigured")),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn resolving_never_panics(cfg in "\\PC{0,40}") {
            let h = Handlers::builtin();
            if let Ok((handler, rest)) = h.resolve(&cfg) {
                let _ = handler.check_config(rest);
            }
        }

        #[test]
        fn paths_round_trip(path in "(/[a-zA-Z0-9._-]{1,12}){1,4}") {
            let h = Handlers::builtin();
            for sub in ["qcow", "qcow2", "file"] {
                let dev_config = format!("{sub}/{path}");
                let (handler, rest) = h.resolve(&dev_config).unwrap();
                prop_assert_eq!(handler.subtype(), if sub == "file" { "file" } else { "qcow" });
                prop_assert_eq!(rest, path.as_str());
            }
        }

        #[test]
        fn unknown_subtypes_are_refused(sub in "[a-z]{1,8}", rest in "[a-z/]{0,10}") {
            prop_assume!(!["qcow", "qcow2", "file", "rbd", "ram"].contains(&sub.as_str()));
            let dev_config = format!("{sub}/{rest}");
            let refused = matches!(
                Handlers::builtin().check_dev_config(&dev_config),
                Err(ConfigError::UnknownSubtype { subtype }) if subtype == sub
            );
            prop_assert!(refused);
        }
    }
}
