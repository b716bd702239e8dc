//! Storage-object steps: create/delete a backstore, its attributes and its ALUA groups.
//!
//! The control strings and the checks before `mkdir` follow rtslib's `tcm.py`, so a
//! backstore the kernel would refuse half-way is refused before anything is created.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustio_config::model::Common;
use rustio_config::validate::check_storage_object_name;
use rustio_config::{AluaTpg, ConfigValue, FileioObject, PscsiObject, StorageObject, UserObject};

use super::{refuse_in_use, AttrOwner, Op};
use crate::addr::{AluaRef, SoRef};
use crate::error::{Error, Result};
use crate::lio::Lio;
use crate::read::alua_value;

/// Name of the ALUA group every backstore has; it belongs to the kernel.
const DEFAULT_ALUA_GROUP: &str = "default_tg_pt_gp";

/// What a storage object's creation needs to know beyond its definition.
pub(super) struct Prepared {
    /// fileio: size to pass (`None` for block devices).
    fileio_size: Option<u64>,
    /// pscsi: host, channel, target, LUN.
    hctl: Option<[u64; 4]>,
}

/// Parses a SCSI address `H:C:T:L`.
pub(super) fn parse_hctl(s: &str) -> Option<[u64; 4]> {
    let v: Vec<u64> = s
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<_>>>()?;
    v.try_into().ok()
}

fn hctl_of_device(dev: &str) -> Option<[u64; 4]> {
    let real = fs::canonicalize(dev).ok()?;
    let name = real.file_name()?.to_string_lossy().into_owned();
    for class in ["block", "scsi_generic"] {
        let link = format!("/sys/class/{class}/{name}/device");
        if let Ok(t) = fs::read_link(&link) {
            if let Some(last) = t.file_name() {
                if let Some(h) = parse_hctl(&last.to_string_lossy()) {
                    return Some(h);
                }
            }
        }
    }
    None
}

/// A fileio backstore's size to pass to the kernel (`None` for a block device).
fn prepare_fileio(f: &FileioObject) -> Result<Option<u64>> {
    let dev = Path::new(&f.dev);
    match fs::metadata(dev) {
        Ok(m) if m.is_dir() => Err(Error::rule(
            "a fileio backstore needs a regular file or a block device",
            format!("{} is a directory", f.dev),
        )),
        Ok(m) if m.file_type().is_block_device() => Ok(None),
        Ok(m) => {
            let size = f.size.unwrap_or(m.len());
            if size == 0 {
                return Err(Error::rule(
                    "a fileio backstore needs a size when its file is empty",
                    format!("{} is empty and no size was given", f.dev),
                ));
            }
            Ok(Some(size))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let Some(size) = f.size else {
                return Err(Error::rule(
                    "a fileio backstore on a missing file needs a size (the kernel creates the file)",
                    format!("{} does not exist and no size was given", f.dev),
                ));
            };
            let parent = dev.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(d) = parent {
                if !d.is_dir() {
                    return Err(Error::rule(
                        "the directory of a fileio backing file must exist",
                        format!(
                            "backing file {} is in missing directory {}",
                            f.dev,
                            d.display()
                        ),
                    ));
                }
            }
            Ok(Some(size))
        }
        Err(e) => Err(Error::Io {
            op: "inspect backing file",
            path: dev.to_path_buf(),
            source: e,
        }),
    }
}

/// A block backstore's device must exist (and be a block device on a real kernel).
fn check_block_dev(dev: &str, autoload: bool) -> Result<()> {
    match fs::metadata(dev) {
        Ok(m) => {
            if autoload && !m.file_type().is_block_device() {
                return Err(Error::rule(
                    "a block backstore needs a block device (use fileio for files)",
                    format!("{dev} is not a block device"),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::rule(
            "a block backstore's device must exist",
            format!("block device {dev} does not exist"),
        )),
        Err(e) => Err(Error::Io {
            op: "inspect block device",
            path: PathBuf::from(dev),
            source: e,
        }),
    }
}

/// The SCSI address of a pscsi backstore's device.
fn pscsi_hctl(ps: &PscsiObject) -> Result<[u64; 4]> {
    parse_hctl(&ps.dev)
        .or_else(|| hctl_of_device(&ps.dev))
        .ok_or_else(|| {
            Error::rule(
                "pscsi dev is H:C:T:L or a SCSI device path known to sysfs",
                format!("cannot find the SCSI address of {}", ps.dev),
            )
        })
}

fn check_user(u: &UserObject) -> Result<()> {
    let cfg = u.config.as_deref().unwrap_or("");
    if !cfg.contains('/') || cfg.contains(':') || u.size.is_none() {
        return Err(Error::rule(
            "user backstores need config '<handler>/<cfgstring>' without ':' and a size (rtslib)",
            format!("config {cfg:?}, size {:?}", u.size),
        ));
    }
    Ok(())
}

/// Whether a fileio or block backstore asks for write-back caching.
pub(crate) fn so_write_back(so: &StorageObject) -> Option<bool> {
    match so {
        StorageObject::Fileio(f) => f.write_back,
        StorageObject::Block(b) => b.write_back,
        _ => None,
    }
}

impl Lio {
    fn prepare_so(&self, so: &StorageObject) -> Result<Prepared> {
        let mut p = Prepared {
            fileio_size: None,
            hctl: None,
        };
        match so {
            StorageObject::Fileio(f) => p.fileio_size = prepare_fileio(f)?,
            StorageObject::Block(b) => check_block_dev(&b.dev, self.autoload())?,
            StorageObject::Pscsi(ps) => p.hctl = Some(pscsi_hctl(ps)?),
            StorageObject::User(u) => check_user(u)?,
            StorageObject::Ramdisk(r) => {
                if r.size == 0 {
                    return Err(Error::rule(
                        "sizes are positive byte counts",
                        "ramdisk size is 0",
                    ));
                }
            }
            StorageObject::Other(o) => {
                return Err(Error::rule(
                    "plugin must be one of fileio, block, ramdisk, pscsi, user",
                    format!("plugin {:?} is not supported", o.plugin),
                ))
            }
        }
        Ok(p)
    }

    /// Writes the plugin's `control` settings and `udev_path` (rtslib `tcm.py`).
    fn write_so_control(&self, dir: &Path, so: &StorageObject, prep: &Prepared) -> Result<()> {
        let control = dir.join("control");
        match so {
            StorageObject::Fileio(f) => {
                let mut c = format!("fd_dev_name={}", f.dev);
                if let Some(s) = prep.fileio_size {
                    c.push_str(&format!(",fd_dev_size={s}"));
                }
                self.write(&control, &c)?;
                if f.write_back == Some(true) {
                    self.write(&control, "fd_buffered_io=1")?;
                }
                if f.aio == Some(true) {
                    self.write(&control, "fd_async_io=1")?;
                }
                self.write(&dir.join("udev_path"), &f.dev)?;
            }
            StorageObject::Block(b) => {
                self.write(&control, &format!("udev_path={}", b.dev))?;
                self.write(
                    &control,
                    &format!("readonly={}", u8::from(b.readonly == Some(true))),
                )?;
                if let Some(x) = b.exclusive {
                    self.write(&control, &format!("exclusive={}", u8::from(x)))?;
                }
                self.write(&dir.join("udev_path"), &b.dev)?;
            }
            StorageObject::Ramdisk(r) => {
                let page = crate::sys::page_size();
                // rtslib: round(size / pagesize), at least one page.
                let pages = (r.size.saturating_add(page / 2) / page).max(1);
                self.write(&control, &format!("rd_pages={pages}"))?;
                if r.nullio == Some(true) {
                    self.write(&control, "rd_nullio=1")?;
                }
            }
            StorageObject::Pscsi(p) => {
                let [h, c, t, l] = prep.hctl.unwrap_or_default();
                self.write(
                    &control,
                    &format!(
                        "scsi_host_id={h},scsi_channel_id={c},scsi_target_id={t},scsi_lun_id={l}"
                    ),
                )?;
                self.write(&dir.join("udev_path"), &p.dev)?;
            }
            StorageObject::User(u) => self.write_user_control(&control, u)?,
            StorageObject::Other(_) => {}
        }
        Ok(())
    }

    fn write_user_control(&self, control: &Path, u: &UserObject) -> Result<()> {
        self.write(
            control,
            &format!("dev_config={}", u.config.as_deref().unwrap_or("")),
        )?;
        self.write(control, &format!("dev_size={}", u.size.unwrap_or(0)))?;
        if let Some(h) = u.hw_max_sectors {
            self.write(control, &format!("hw_max_sectors={h}"))?;
        }
        if let Some(c) = &u.control {
            if !c.trim().is_empty() {
                self.write(control, c.trim())?;
            }
        }
        Ok(())
    }

    /// Writes the unit serial (SPC-4 7.8.15 Unit Serial Number VPD page), generated
    /// when the definition has none.
    fn write_unit_serial(&self, dir: &Path, so: &StorageObject) -> Result<()> {
        let serial = match so.wwn() {
            Some(w) => w.to_owned(),
            None => crate::sys::generate_unit_serial()?,
        };
        rustio_config::wwn::validate_unit_serial(&serial)
            .map_err(|e| Error::rule(e.rule, e.detail))?;
        self.write(&dir.join("wwn/vpd_unit_serial"), &serial)
    }

    /// Writes the attributes; write-back caching turns `emulate_write_cache` on unless
    /// the definition says otherwise (rtslib).
    fn apply_so_attributes(&self, dir: &Path, so: &StorageObject, common: &Common) -> Result<()> {
        let mut attrs = common.attributes.clone();
        if so_write_back(so) == Some(true) && !attrs.contains_key("emulate_write_cache") {
            attrs.insert("emulate_write_cache".into(), ConfigValue::Int(1));
        }
        self.apply_settings(&dir.join("attrib"), &attrs)
    }

    /// Creates the ALUA groups (SPC-4 5.16 target port groups) of a new backstore.
    fn create_so_alua_groups(&self, dir: &Path, so: &StorageObject, common: &Common) -> Result<()> {
        if !common.alua_tpgs.is_empty() && !self.alua_supported(dir, &so.plugin()) {
            let custom = common
                .alua_tpgs
                .iter()
                .any(|g| g.name != DEFAULT_ALUA_GROUP);
            if custom {
                return Err(Error::rule(
                    "ALUA groups need a backstore with ALUA support (attrib/alua_support=1)",
                    format!("{} does not support ALUA", so.path()),
                ));
            }
            return Ok(());
        }
        for g in &common.alua_tpgs {
            let gdir = dir.join("alua").join(&g.name);
            if g.name != DEFAULT_ALUA_GROUP {
                self.mkdir(&gdir)?;
                self.write(&gdir.join("tg_pt_gp_id"), &g.tg_pt_gp_id.to_string())?;
            }
            self.apply_alua_settings(&gdir, g)?;
        }
        Ok(())
    }

    fn configure_so(&self, dir: &Path, so: &StorageObject, prep: &Prepared) -> Result<()> {
        self.write_so_control(dir, so, prep)?;
        self.write(&dir.join("enable"), "1")?;
        if !matches!(so, StorageObject::Pscsi(_)) {
            self.write_unit_serial(dir, so)?;
        }
        if let Some(common) = so.common() {
            self.apply_so_attributes(dir, so, common)?;
            self.create_so_alua_groups(dir, so, common)?;
        }
        Ok(())
    }

    pub(super) fn apply_alua_settings(&self, gdir: &Path, g: &AluaTpg) -> Result<()> {
        for (name, v) in g.settings() {
            let Some(v) = v else { continue };
            let path = gdir.join(name);
            let cur = self.read_trim(&path).and_then(|t| alua_value(name, &t));
            if cur != Some(v) {
                self.write(&path, &v.to_string())?;
            }
        }
        Ok(())
    }

    fn teardown_so(&self, hba: &str, dir: &Path) {
        if let Ok(groups) = self.list_dirs(&dir.join("alua")) {
            for g in groups.iter().filter(|g| *g != DEFAULT_ALUA_GROUP) {
                let _ = self.rmdir(&dir.join("alua").join(g));
            }
        }
        if let Err(e) = self.rmdir(dir) {
            tracing::warn!(error = %e, "could not remove half-created storage object");
        }
        self.remove_hba_if_empty(hba);
    }

    fn create_storage_object_inner(&self, so: &StorageObject) -> Result<SoRef> {
        check_storage_object_name(so.name()).map_err(|e| {
            Error::rule(
                "storage object names are 1-255 bytes without '/', whitespace, '.' or '..' (rtslib)",
                e,
            )
        })?;
        let prep = self.prepare_so(so)?;
        let r = SoRef::new(so.plugin(), so.name());
        let (hba, dir) = self.create_so_dirs(&r)?;
        if let Err(e) = self.configure_so(&dir, so, &prep) {
            self.teardown_so(&hba, &dir);
            return Err(e);
        }
        Ok(r)
    }

    fn delete_storage_object(&self, r: &SoRef) -> Result<StorageObject> {
        let (hba, dir) = self.find_so(r)?.ok_or_else(|| Error::NotFound {
            what: "storage object",
            name: r.to_string(),
        })?;
        let users = self.so_users(r)?;
        let hint = "delete those LUNs first, or use --force to delete them with it";
        refuse_in_use("storage object", r, &users, hint)?;
        let captured = self.read_storage_object(&hba, r)?.config;
        for g in self.list_dirs(&dir.join("alua"))? {
            if g != DEFAULT_ALUA_GROUP {
                self.rmdir(&dir.join("alua").join(&g))?;
            }
        }
        self.rmdir(&dir)?;
        self.remove_hba_if_empty(&hba);
        Ok(captured)
    }

    /// [`Op::CreateStorageObject`].
    pub(super) fn exec_create_storage_object(
        &self,
        so: &StorageObject,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let r = self.create_storage_object_inner(so)?;
        undo.push(Op::DeleteStorageObject(r));
        Ok(())
    }

    /// [`Op::DeleteStorageObject`].
    pub(super) fn exec_delete_storage_object(&self, r: &SoRef, undo: &mut Vec<Op>) -> Result<()> {
        let captured = self.delete_storage_object(r)?;
        undo.push(Op::CreateStorageObject(Box::new(captured)));
        Ok(())
    }

    /// [`Op::SetAttribute`].
    pub(super) fn exec_set_attribute(
        &self,
        owner: &AttrOwner,
        name: &str,
        value: &ConfigValue,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let dir = self.attr_dir(owner)?;
        if let Some(old) = self.set_if_differs(&dir.join(name), &value.to_configfs())? {
            undo.push(Op::SetAttribute {
                owner: owner.clone(),
                name: name.to_owned(),
                value: ConfigValue::from_configfs(&old),
            });
        }
        Ok(())
    }

    /// [`Op::CreateAluaGroup`].
    pub(super) fn exec_create_alua_group(
        &self,
        so: &SoRef,
        group: &AluaTpg,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let dir = self.so_dir(so)?;
        if !self.alua_supported(&dir, &so.plugin) {
            return Err(Error::rule(
                "ALUA groups need a backstore with ALUA support (attrib/alua_support=1)",
                format!("{so} does not support ALUA"),
            ));
        }
        if group.name == DEFAULT_ALUA_GROUP || !(1..=65535).contains(&group.tg_pt_gp_id) {
            return Err(Error::rule(
                "ALUA group ids are 1-65535 and default_tg_pt_gp is the kernel's",
                format!("group {} with id {}", group.name, group.tg_pt_gp_id),
            ));
        }
        let gdir = dir.join("alua").join(&group.name);
        self.ensure_absent(&gdir, "ALUA group", &format!("{so}/alua/{}", group.name))?;
        self.mkdir_filled(&gdir, || {
            self.write(&gdir.join("tg_pt_gp_id"), &group.tg_pt_gp_id.to_string())?;
            self.apply_alua_settings(&gdir, group)
        })?;
        undo.push(Op::DeleteAluaGroup(AluaRef {
            so: so.clone(),
            name: group.name.clone(),
        }));
        Ok(())
    }

    /// [`Op::DeleteAluaGroup`].
    pub(super) fn exec_delete_alua_group(&self, a: &AluaRef, undo: &mut Vec<Op>) -> Result<()> {
        if a.name == DEFAULT_ALUA_GROUP {
            return Err(Error::rule(
                "default_tg_pt_gp belongs to the kernel and cannot be deleted",
                format!("{a}"),
            ));
        }
        let dir = self.so_dir(&a.so)?;
        let captured = self
            .read_alua(&dir)?
            .into_iter()
            .find(|g| g.name == a.name)
            .ok_or_else(|| Error::NotFound {
                what: "ALUA group",
                name: a.to_string(),
            })?;
        self.rmdir(&dir.join("alua").join(&a.name))?;
        undo.push(Op::CreateAluaGroup {
            so: a.so.clone(),
            group: captured,
        });
        Ok(())
    }

    /// [`Op::SetAluaSetting`].
    pub(super) fn exec_set_alua_setting(
        &self,
        group: &AluaRef,
        name: &str,
        value: u64,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let path = self
            .so_dir(&group.so)?
            .join("alua")
            .join(&group.name)
            .join(name);
        let text = self.read(&path)?;
        let old = alua_value(name, &text);
        if old != Some(value) {
            self.write(&path, &value.to_string())?;
            if let Some(old) = old {
                undo.push(Op::SetAluaSetting {
                    group: group.clone(),
                    name: name.to_owned(),
                    value: old,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hctl_is_four_numbers() {
        assert_eq!(parse_hctl("2:0:1:5"), Some([2, 0, 1, 5]));
        assert_eq!(parse_hctl("2:0:1"), None);
        assert_eq!(parse_hctl("2:0:1:5:7"), None);
        assert_eq!(parse_hctl("a:0:1:5"), None);
    }

    #[test]
    fn write_back_comes_from_fileio_and_block_only() {
        let f = StorageObject::Fileio(FileioObject {
            write_back: Some(true),
            ..FileioObject::default()
        });
        assert_eq!(so_write_back(&f), Some(true));
        let r = StorageObject::Ramdisk(rustio_config::RamdiskObject::default());
        assert_eq!(so_write_back(&r), None);
    }
}
