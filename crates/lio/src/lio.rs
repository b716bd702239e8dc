//! The [`Lio`] handle: a configfs root plus the primitives every operation uses.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use rustio_config::fabric::{fabric_info, FabricInfo};
use rustio_config::Plugin;

use crate::addr::{AclRef, LunRef, MappedLunRef, PortalRef, SoRef, TargetRef, TpgRef};
use crate::backend::{Backend, SysBackend};
use crate::error::{Error, Result};

/// Where the kernel's LIO configfs tree lives.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/target";

/// rtslib's backstore lock; sharing it keeps rustio and targetcli from picking the
/// same HBA index at the same time.
pub const DEFAULT_LOCK_FILE: &str = "/var/run/rtslib_backstore.lock";

/// Names under a fabric directory that are not targets (rtslib `target_names_excludes`).
pub const FABRIC_NON_TARGETS: [&str; 4] = [
    "discovery_auth",
    "lio_version",
    "version",
    "cpus_allowed_list",
];

/// A handle on one LIO configfs tree.
#[derive(Debug, Clone)]
pub struct Lio {
    root: PathBuf,
    canon_root: PathBuf,
    backend: Arc<dyn Backend>,
    lock_path: PathBuf,
    autoload: bool,
}

/// Converts an I/O error into [`Error::Io`] with context.
pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Lio {
    /// Opens the kernel's tree at [`DEFAULT_ROOT`], mounting configfs and loading
    /// `target_core_mod` when needed; the error names what is missing.
    pub fn open_default() -> Result<Lio> {
        let root = PathBuf::from(DEFAULT_ROOT);
        if !root.is_dir() {
            crate::sys::mount_configfs()?;
            if !root.is_dir() {
                crate::sys::modprobe("target_core_mod", "the LIO target core").map_err(|e| {
                    Error::NoConfigfs {
                        root: root.clone(),
                        reason: format!("kernel module target_core_mod is not loaded ({e})"),
                    }
                })?;
            }
            if !root.is_dir() {
                return Err(Error::NoConfigfs {
                    root,
                    reason: "target_core_mod is loaded but the directory did not appear".into(),
                });
            }
        }
        let mut lio = Lio::with_backend(&root, Arc::new(SysBackend))?;
        lio.lock_path = PathBuf::from(DEFAULT_LOCK_FILE);
        lio.autoload = true;
        Ok(lio)
    }

    /// Opens `root` (the default root gets [`Lio::open_default`]'s treatment; any other
    /// root must exist and is never touched by modprobe).
    pub fn open(root: Option<&Path>) -> Result<Lio> {
        match root {
            None => Lio::open_default(),
            Some(r) if r == Path::new(DEFAULT_ROOT) => Lio::open_default(),
            Some(r) => Lio::with_backend(r, Arc::new(SysBackend)),
        }
    }

    /// A handle on `root` using `backend` for configfs operations. The HBA lock file is
    /// `<parent of root>/.rustio-backstore.lock`; modules are not auto-loaded.
    pub fn with_backend(root: &Path, backend: Arc<dyn Backend>) -> Result<Lio> {
        if !root.is_dir() {
            return Err(Error::NoConfigfs {
                root: root.to_path_buf(),
                reason: "the directory does not exist".into(),
            });
        }
        let canon_root = fs::canonicalize(root).map_err(io_err("resolve", root))?;
        let lock_path = canon_root
            .parent()
            .unwrap_or(Path::new("/"))
            .join(".rustio-backstore.lock");
        Ok(Lio {
            root: root.to_path_buf(),
            canon_root,
            backend,
            lock_path,
            autoload: false,
        })
    }

    /// Overrides the HBA-allocation lock file.
    pub fn with_lock_path(mut self, path: impl Into<PathBuf>) -> Lio {
        self.lock_path = path.into();
        self
    }

    /// The configfs root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether missing kernel modules are loaded with modprobe.
    pub fn autoload(&self) -> bool {
        self.autoload
    }

    // ----- primitives -------------------------------------------------------------

    pub(crate) fn read(&self, path: &Path) -> Result<String> {
        self.backend.read(path).map_err(io_err("read", path))
    }

    /// Reads an attribute, trimmed; `None` when absent or unreadable.
    pub(crate) fn read_trim(&self, path: &Path) -> Option<String> {
        self.backend.read(path).ok().map(|s| s.trim().to_owned())
    }

    pub(crate) fn write(&self, path: &Path, value: &str) -> Result<()> {
        tracing::debug!(path = %path.display(), value, "configfs write");
        self.backend
            .write(path, value.as_bytes())
            .map_err(|source| match source.kind() {
                // ENOENT from an attribute that exists is the store handler's own
                // answer (e.g. target_core_user's `enable` when the TCMU handler
                // cannot open its backing file), not a missing attribute.
                io::ErrorKind::NotFound if std::fs::symlink_metadata(path).is_err() => Error::Io {
                    op: "write (attribute not provided by this kernel)",
                    path: path.to_path_buf(),
                    source,
                },
                io::ErrorKind::PermissionDenied => Error::Io {
                    op: "write (read-only attribute or not root)",
                    path: path.to_path_buf(),
                    source,
                },
                _ => Error::KernelRejected {
                    path: path.to_path_buf(),
                    value: value.to_owned(),
                    source,
                },
            })
    }

    pub(crate) fn mkdir(&self, path: &Path) -> Result<()> {
        tracing::debug!(path = %path.display(), "configfs mkdir");
        self.backend.mkdir(path).map_err(io_err("create", path))
    }

    pub(crate) fn rmdir(&self, path: &Path) -> Result<()> {
        tracing::debug!(path = %path.display(), "configfs rmdir");
        self.backend.rmdir(path).map_err(io_err("remove", path))
    }

    pub(crate) fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        tracing::debug!(target = %target.display(), link = %link.display(), "configfs symlink");
        self.backend
            .symlink(target, link)
            .map_err(io_err("link", link))
    }

    pub(crate) fn unlink(&self, link: &Path) -> Result<()> {
        tracing::debug!(link = %link.display(), "configfs unlink");
        self.backend.unlink(link).map_err(io_err("unlink", link))
    }

    /// Sub-directories of `path`, sorted; empty when `path` does not exist.
    pub(crate) fn list_dirs(&self, path: &Path) -> Result<Vec<String>> {
        self.list(path, |ft| ft.is_dir())
    }

    fn list(&self, path: &Path, want: impl Fn(&fs::FileType) -> bool) -> Result<Vec<String>> {
        let entries = match fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", path)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(io_err("list", path))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let ft = e.file_type().map_err(io_err("stat", &e.path()))?;
            if want(&ft) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Attribute files of `path` that are both readable and writable by their owner
    /// (what rtslib dumps), sorted.
    pub(crate) fn list_rw_files(&self, path: &Path) -> Result<Vec<String>> {
        let files = self.list(path, |ft| ft.is_file())?;
        let mut out = Vec::new();
        for f in files {
            let p = path.join(&f);
            let meta = fs::metadata(&p).map_err(io_err("stat", &p))?;
            let mode = meta.permissions().mode();
            if mode & 0o600 == 0o600 {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// Symlinks of `path` with their resolved targets, relative to the root
    /// (`core/fileio_0/disk1`); targets outside the tree give `None`.
    pub(crate) fn links(&self, path: &Path) -> Result<Vec<(String, Option<PathBuf>)>> {
        let names = self.list(path, |ft| ft.is_symlink())?;
        let mut out = Vec::new();
        for n in names {
            let link = path.join(&n);
            let target = fs::canonicalize(&link)
                .ok()
                .and_then(|t| t.strip_prefix(&self.canon_root).ok().map(Path::to_path_buf));
            out.push((n, target));
        }
        Ok(out)
    }

    // ----- layout -----------------------------------------------------------------

    /// `core/`.
    pub(crate) fn core_dir(&self) -> PathBuf {
        self.root.join("core")
    }

    /// The directory of a storage object, searching every HBA of its plugin.
    pub(crate) fn find_so(&self, so: &SoRef) -> Result<Option<(String, PathBuf)>> {
        let prefix = so.plugin.hba_prefix();
        for hba in self.list_dirs(&self.core_dir())? {
            if let Some((p, idx)) = hba.rsplit_once('_') {
                if p == prefix && idx.parse::<u64>().is_ok() {
                    let dir = self.core_dir().join(&hba).join(&so.name);
                    if dir.is_dir() {
                        return Ok(Some((hba, dir)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Like [`Lio::find_so`] but an error when absent.
    pub(crate) fn so_dir(&self, so: &SoRef) -> Result<PathBuf> {
        self.find_so(so)?
            .map(|(_, d)| d)
            .ok_or_else(|| Error::NotFound {
                what: "storage object",
                name: so.to_string(),
            })
    }

    pub(crate) fn fabric_dir(&self, fabric: &str) -> PathBuf {
        self.root.join(fabric)
    }

    pub(crate) fn target_dir(&self, t: &TargetRef) -> PathBuf {
        self.fabric_dir(&t.fabric).join(&t.wwn)
    }

    pub(crate) fn tpg_dir(&self, t: &TpgRef) -> PathBuf {
        self.target_dir(&t.target).join(format!("tpgt_{}", t.tag))
    }

    pub(crate) fn lun_dir(&self, l: &LunRef) -> PathBuf {
        self.tpg_dir(&l.tpg)
            .join("lun")
            .join(format!("lun_{}", l.index))
    }

    pub(crate) fn portal_dir(&self, p: &PortalRef) -> PathBuf {
        self.tpg_dir(&p.tpg)
            .join("np")
            .join(format!("{}:{}", p.ip, p.port))
    }

    pub(crate) fn acl_dir(&self, a: &AclRef) -> PathBuf {
        self.tpg_dir(&a.tpg).join("acls").join(&a.node_wwn)
    }

    pub(crate) fn mapped_lun_dir(&self, m: &MappedLunRef) -> PathBuf {
        self.acl_dir(&m.acl).join(format!("lun_{}", m.index))
    }

    /// Makes sure a fabric's directory exists (the kernel auto-loads some fabric
    /// modules on `mkdir`; otherwise modprobe when allowed).
    pub(crate) fn ensure_fabric(&self, fabric: &str) -> Result<&'static FabricInfo> {
        let info = fabric_info(fabric).ok_or_else(|| {
            Error::rule(
                "fabric must be a LIO fabric module name (iscsi, loopback, vhost, ...)",
                format!("fabric {fabric:?} is unknown"),
            )
        })?;
        let dir = self.fabric_dir(fabric);
        if dir.is_dir() {
            return Ok(info);
        }
        let first = self.backend.mkdir(&dir);
        if first.is_ok() || dir.is_dir() {
            return Ok(info);
        }
        if self.autoload {
            let mut last = None;
            for m in info.kernel_modules {
                match crate::sys::modprobe(m, &format!("the {fabric} fabric")) {
                    Ok(()) => {
                        if self.backend.mkdir(&dir).is_ok() || dir.is_dir() {
                            return Ok(info);
                        }
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        Err(Error::KernelModule {
            module: info.kernel_modules.join(" or "),
            purpose: format!("the {fabric} fabric"),
            detail: format!(
                "mkdir {} failed: {}",
                dir.display(),
                first.err().map(|e| e.to_string()).unwrap_or_default()
            ),
        })
    }

    // ----- HBA allocation -----------------------------------------------------------

    /// Creates `core/<prefix>_<N>/<name>` with a fresh HBA index.
    ///
    /// Indexes are unique across all plugins, like rtslib's. An exclusive `flock` on
    /// the lock file serializes allocators that use it (rustio, targetcli); `mkdir`
    /// failing with `EEXIST` catches everyone else, and the next index is tried.
    pub(crate) fn create_so_dirs(&self, so: &SoRef) -> Result<(String, PathBuf)> {
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(io_err("open lock file", &self.lock_path))?;
        let _lock =
            Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| Error::Io {
                op: "lock",
                path: self.lock_path.clone(),
                source: io::Error::from(errno),
            })?;
        if self.find_so(so)?.is_some() {
            return Err(Error::Exists {
                what: "storage object",
                name: so.to_string(),
            });
        }
        let mut used = BTreeSet::new();
        for hba in self.list_dirs(&self.core_dir())? {
            if let Some((_, idx)) = hba.rsplit_once('_') {
                if let Ok(i) = idx.parse::<u64>() {
                    used.insert(i);
                }
            }
        }
        let prefix = so.plugin.hba_prefix();
        let mut idx: u64 = 0;
        let mut loaded_module = false;
        let hba = loop {
            if idx >= 1 << 20 {
                return Err(Error::rule(
                    "HBA indexes are below 1048576 (rtslib)",
                    "no free HBA index",
                ));
            }
            if used.contains(&idx) {
                idx += 1;
                continue;
            }
            let name = format!("{prefix}_{idx}");
            let dir = self.core_dir().join(&name);
            match self.backend.mkdir(&dir) {
                Ok(()) => break name,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    used.insert(idx);
                }
                Err(e) => {
                    if so.plugin == Plugin::User && self.autoload && !loaded_module {
                        crate::sys::modprobe("target_core_user", "user (TCMU) backstores")?;
                        loaded_module = true;
                        continue;
                    }
                    let hint = match so.plugin {
                        Plugin::User => " (is kernel module target_core_user loaded?)",
                        Plugin::Pscsi => " (is kernel module target_core_pscsi loaded?)",
                        Plugin::Block => " (is kernel module target_core_iblock loaded?)",
                        Plugin::Fileio => " (is kernel module target_core_file loaded?)",
                        _ => "",
                    };
                    return Err(Error::Io {
                        op: "create HBA",
                        path: dir.clone(),
                        source: io::Error::new(e.kind(), format!("{e}{hint}")),
                    });
                }
            }
        };
        let dir = self.core_dir().join(&hba).join(&so.name);
        if let Err(e) = self.mkdir(&dir) {
            let _ = self.backend.rmdir(&self.core_dir().join(&hba));
            return Err(e);
        }
        Ok((hba, dir))
    }

    /// Removes an HBA directory when it no longer holds storage objects.
    pub(crate) fn remove_hba_if_empty(&self, hba: &str) {
        let dir = self.core_dir().join(hba);
        if let Ok(children) = self.list_dirs(&dir) {
            if children.is_empty() {
                if let Err(e) = self.backend.rmdir(&dir) {
                    tracing::debug!(dir = %dir.display(), error = %e, "HBA kept");
                }
            }
        }
    }

    /// Resolves a link target (relative to root) of a LUN to its storage object.
    pub(crate) fn so_from_core_path(&self, rel: &Path) -> Option<(SoRef, String)> {
        let comps: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        match comps.as_slice() {
            [core, hba, name] if core == "core" => {
                let (prefix, idx) = hba.rsplit_once('_')?;
                idx.parse::<u64>().ok()?;
                Some((
                    SoRef::new(Plugin::from_name(prefix), name.clone()),
                    hba.clone(),
                ))
            }
            _ => None,
        }
    }
}

#[cfg(all(test, feature = "test-utils"))]
mod tests {
    use super::*;
    use crate::fake::{FakeKernel, Fault, FaultOp};

    #[test]
    fn hba_indexes_are_global_and_skip_racing_creators() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("target");
        let k = FakeKernel::new(&root).unwrap();
        let lio = Lio::with_backend(&root, k.clone()).unwrap();
        // Someone else (a script) made iblock_0 without the lock.
        k.mkdir(&root.join("core/iblock_0")).unwrap();
        // And another process wins the race for index 1 between our scan and mkdir.
        k.inject(Fault {
            op: FaultOp::Mkdir,
            path_suffix: "core/fileio_1".into(),
            errno: nix::errno::Errno::EEXIST,
            count: 1,
        });
        let (hba, dir1) = lio
            .create_so_dirs(&SoRef::new(Plugin::Fileio, "a"))
            .unwrap();
        assert_eq!(hba, "fileio_2");
        assert!(dir1.ends_with("core/fileio_2/a"));
        let e = lio
            .create_so_dirs(&SoRef::new(Plugin::Fileio, "a"))
            .unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let (hba, _) = lio
            .create_so_dirs(&SoRef::new(Plugin::Ramdisk, "a"))
            .unwrap();
        assert_eq!(
            hba, "rd_mcp_1",
            "index 1 is free again once the racer is gone"
        );
        assert_eq!(
            lio.find_so(&SoRef::new(Plugin::Fileio, "a"))
                .unwrap()
                .map(|(h, _)| h),
            Some("fileio_2".to_owned())
        );
    }

    #[test]
    fn missing_root_names_the_problem() {
        let e = Lio::open(Some(Path::new("/nonexistent/rustio/target"))).unwrap_err();
        assert!(
            e.to_string().contains("the directory does not exist"),
            "{e}"
        );
    }
}
