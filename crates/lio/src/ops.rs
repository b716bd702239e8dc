//! Plan steps: one object-level change each, executed against configfs with an undo
//! record so a failed plan can be rolled back.
//!
//! Every `execute` leaves configfs as it found it when it fails (a half-created object
//! is removed again, like rtslib's `except: self.delete()`), and on success pushes the
//! steps that undo it onto `undo`, in reverse order of execution.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustio_config::fabric::{fabric_info, validate_fabric_wwn};
use rustio_config::model::Settings;
use rustio_config::validate::{
    check_alias, check_chap_value, check_portal_address, check_storage_object_name,
};
use rustio_config::{AluaTpg, Chap, ConfigValue, StorageObject};

use crate::addr::{AclRef, AluaRef, LunRef, MappedLunRef, PortalRef, SoRef, TargetRef, TpgRef};
use crate::error::{Error, Result};
use crate::lio::Lio;
use crate::read::alua_value;

/// Whose `attrib/` an attribute lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrOwner {
    /// A storage object.
    StorageObject(SoRef),
    /// A TPG.
    Tpg(TpgRef),
    /// An initiator ACL.
    Acl(AclRef),
}

impl fmt::Display for AttrOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrOwner::StorageObject(s) => write!(f, "{s}"),
            AttrOwner::Tpg(t) => write!(f, "{t}"),
            AttrOwner::Acl(a) => write!(f, "{a}"),
        }
    }
}

/// Whose `auth/` CHAP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOwner {
    /// TPG-wide (demo-mode) authentication.
    Tpg(TpgRef),
    /// Per-initiator authentication.
    Acl(AclRef),
    /// Fabric-wide discovery authentication.
    Discovery(String),
}

impl fmt::Display for AuthOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthOwner::Tpg(t) => write!(f, "{t}"),
            AuthOwner::Acl(a) => write!(f, "{a}"),
            AuthOwner::Discovery(fab) => write!(f, "/{fab} discovery"),
        }
    }
}

/// Network portal flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalFlag {
    /// iSER (`iser` file).
    Iser,
    /// Hardware offload (`cxgbit` file).
    Offload,
}

impl PortalFlag {
    fn file(self) -> &'static str {
        match self {
            PortalFlag::Iser => "iser",
            PortalFlag::Offload => "cxgbit",
        }
    }
}

/// CHAP auth file names in configfs.
pub const AUTH_FIELDS: [&str; 4] = ["userid", "password", "userid_mutual", "password_mutual"];

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create and enable a storage object (with its unit serial, attributes and ALUA groups).
    CreateStorageObject(Box<StorageObject>),
    /// Delete a storage object (must not be exported by a LUN).
    DeleteStorageObject(SoRef),
    /// Write an attribute (`attrib/<name>`).
    SetAttribute {
        /// Owner.
        owner: AttrOwner,
        /// Attribute file.
        name: String,
        /// Value.
        value: ConfigValue,
    },
    /// Write an iSCSI TPG parameter (`param/<name>`).
    SetParameter {
        /// TPG.
        tpg: TpgRef,
        /// Parameter file.
        name: String,
        /// Value.
        value: ConfigValue,
    },
    /// Create an ALUA target port group.
    CreateAluaGroup {
        /// Storage object.
        so: SoRef,
        /// Group definition.
        group: AluaTpg,
    },
    /// Delete an ALUA target port group.
    DeleteAluaGroup(AluaRef),
    /// Write one ALUA group setting.
    SetAluaSetting {
        /// Group.
        group: AluaRef,
        /// Setting file.
        name: String,
        /// Numeric value.
        value: u64,
    },
    /// Create a target (loading the fabric module when needed).
    CreateTarget(TargetRef),
    /// Delete a target (must have no TPGs).
    DeleteTarget(TargetRef),
    /// Create a TPG, disabled, with its settings.
    CreateTpg {
        /// TPG.
        tpg: TpgRef,
        /// `attrib/` values.
        attributes: Settings,
        /// `param/` values.
        parameters: Settings,
        /// CHAP credentials.
        auth: Chap,
        /// Nexus WWN (loopback/vhost; generated when `None`).
        nexus: Option<String>,
    },
    /// Delete a TPG (must have no LUNs, portals or ACLs).
    DeleteTpg(TpgRef),
    /// Enable or disable a TPG.
    SetTpgEnable {
        /// TPG.
        tpg: TpgRef,
        /// New state.
        enable: bool,
    },
    /// Set or clear (`None`) one CHAP value.
    SetAuth {
        /// Owner.
        owner: AuthOwner,
        /// `userid`, `password`, `userid_mutual` or `password_mutual`.
        field: &'static str,
        /// Value.
        value: Option<String>,
    },
    /// Turn discovery authentication enforcement on or off.
    SetDiscoveryEnforce {
        /// Fabric.
        fabric: String,
        /// New state.
        enable: bool,
    },
    /// Create a TPG LUN linked to a storage object.
    CreateLun {
        /// LUN.
        lun: LunRef,
        /// Storage object.
        so: SoRef,
        /// Link name (random when `None`).
        alias: Option<String>,
        /// ALUA group of the LUN's port.
        alua_group: Option<String>,
    },
    /// Delete a TPG LUN (must not be mapped).
    DeleteLun(LunRef),
    /// Move a LUN's port to another ALUA group.
    SetLunAluaGroup {
        /// LUN.
        lun: LunRef,
        /// Group name.
        group: String,
    },
    /// Create a network portal.
    CreatePortal {
        /// Portal.
        portal: PortalRef,
        /// Enable iSER.
        iser: bool,
        /// Enable offload.
        offload: bool,
    },
    /// Delete a network portal.
    DeletePortal(PortalRef),
    /// Change a portal flag.
    SetPortalFlag {
        /// Portal.
        portal: PortalRef,
        /// Flag.
        flag: PortalFlag,
        /// New state.
        on: bool,
    },
    /// Create an initiator ACL with its settings.
    CreateAcl {
        /// ACL.
        acl: AclRef,
        /// `attrib/` values.
        attributes: Settings,
        /// CHAP credentials.
        auth: Chap,
        /// Group tag.
        tag: Option<String>,
    },
    /// Delete an ACL (must have no mapped LUNs).
    DeleteAcl(AclRef),
    /// Set or clear an ACL's group tag.
    SetAclTag {
        /// ACL.
        acl: AclRef,
        /// Tag.
        tag: Option<String>,
    },
    /// Create a mapped LUN linked to a TPG LUN.
    CreateMappedLun {
        /// Mapped LUN.
        mlun: MappedLunRef,
        /// TPG LUN index.
        tpg_lun: u64,
        /// Read-only.
        write_protect: bool,
        /// Link name (random when `None`).
        alias: Option<String>,
    },
    /// Delete a mapped LUN.
    DeleteMappedLun(MappedLunRef),
    /// Change a mapped LUN's write protection.
    SetWriteProtect {
        /// Mapped LUN.
        mlun: MappedLunRef,
        /// New state.
        on: bool,
    },
}

fn so_summary(so: &StorageObject) -> String {
    let mut parts = Vec::new();
    match so {
        StorageObject::Fileio(f) => {
            parts.push(format!("dev={}", f.dev));
            if let Some(s) = f.size {
                parts.push(format!("size={s}"));
            }
            if f.write_back == Some(true) {
                parts.push("write-back".into());
            }
            if f.aio == Some(true) {
                parts.push("aio".into());
            }
        }
        StorageObject::Block(b) => {
            parts.push(format!("dev={}", b.dev));
            if b.readonly == Some(true) {
                parts.push("readonly".into());
            }
        }
        StorageObject::Ramdisk(r) => {
            parts.push(format!("size={}", r.size));
            if r.nullio == Some(true) {
                parts.push("nullio".into());
            }
        }
        StorageObject::Pscsi(p) => parts.push(format!("dev={}", p.dev)),
        StorageObject::User(u) => {
            if let Some(c) = &u.config {
                parts.push(format!("config={c}"));
            }
            if let Some(s) = u.size {
                parts.push(format!("size={s}"));
            }
        }
        StorageObject::Other(_) => {}
    }
    if let Some(w) = so.wwn() {
        parts.push(format!("wwn={w}"));
    }
    parts.join(", ")
}

fn show_secret(field: &str, v: &Option<String>) -> String {
    match v {
        None => "(unset)".into(),
        Some(_) if field.starts_with("password") => "********".into(),
        Some(s) => s.clone(),
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateStorageObject(so) => write!(
                f,
                "create storage object {} ({})",
                so.path(),
                so_summary(so)
            ),
            Op::DeleteStorageObject(s) => write!(f, "delete storage object {s}"),
            Op::SetAttribute { owner, name, value } => {
                write!(f, "set attribute {owner} {name}={value}")
            }
            Op::SetParameter { tpg, name, value } => {
                write!(f, "set parameter {tpg} {name}={value}")
            }
            Op::CreateAluaGroup { so, group } => write!(
                f,
                "create ALUA group {so}/alua/{} (tg_pt_gp_id={})",
                group.name, group.tg_pt_gp_id
            ),
            Op::DeleteAluaGroup(a) => write!(f, "delete ALUA group {a}"),
            Op::SetAluaSetting { group, name, value } => {
                write!(f, "set ALUA {group} {name}={value}")
            }
            Op::CreateTarget(t) => write!(f, "create target {t}"),
            Op::DeleteTarget(t) => write!(f, "delete target {t}"),
            Op::CreateTpg { tpg, nexus, .. } => match nexus {
                Some(n) => write!(f, "create TPG {tpg} (nexus {n})"),
                None => write!(f, "create TPG {tpg}"),
            },
            Op::DeleteTpg(t) => write!(f, "delete TPG {t}"),
            Op::SetTpgEnable { tpg, enable } => {
                write!(
                    f,
                    "{} TPG {tpg}",
                    if *enable { "enable" } else { "disable" }
                )
            }
            Op::SetAuth {
                owner,
                field,
                value,
            } => {
                write!(f, "set auth {owner} {field}={}", show_secret(field, value))
            }
            Op::SetDiscoveryEnforce { fabric, enable } => write!(
                f,
                "{} discovery authentication on /{fabric}",
                if *enable { "enforce" } else { "stop enforcing" }
            ),
            Op::CreateLun { lun, so, .. } => write!(f, "create LUN {lun} -> {so}"),
            Op::DeleteLun(l) => write!(f, "delete LUN {l}"),
            Op::SetLunAluaGroup { lun, group } => write!(f, "set ALUA group of {lun} to {group}"),
            Op::CreatePortal {
                portal,
                iser,
                offload,
            } => {
                write!(f, "create portal {portal}")?;
                if *iser {
                    write!(f, " (iser)")?;
                }
                if *offload {
                    write!(f, " (offload)")?;
                }
                Ok(())
            }
            Op::DeletePortal(p) => write!(f, "delete portal {p}"),
            Op::SetPortalFlag { portal, flag, on } => write!(
                f,
                "turn {} {} on {portal}",
                match flag {
                    PortalFlag::Iser => "iser",
                    PortalFlag::Offload => "offload",
                },
                if *on { "on" } else { "off" }
            ),
            Op::CreateAcl { acl, .. } => write!(f, "create ACL {acl}"),
            Op::DeleteAcl(a) => write!(f, "delete ACL {a}"),
            Op::SetAclTag { acl, tag } => match tag {
                Some(t) => write!(f, "set tag of {acl} to {t}"),
                None => write!(f, "clear tag of {acl}"),
            },
            Op::CreateMappedLun {
                mlun,
                tpg_lun,
                write_protect,
                ..
            } => {
                write!(f, "create mapped LUN {mlun} -> lun{tpg_lun}")?;
                if *write_protect {
                    write!(f, " (read-only)")?;
                }
                Ok(())
            }
            Op::DeleteMappedLun(m) => write!(f, "delete mapped LUN {m}"),
            Op::SetWriteProtect { mlun, on } => write!(
                f,
                "set write-protect {} on {mlun}",
                if *on { "on" } else { "off" }
            ),
        }
    }
}

/// What a storage object's creation needs to know beyond its definition.
struct Prepared {
    /// fileio: size to pass (`None` for block devices).
    fileio_size: Option<u64>,
    /// pscsi: host, channel, target, LUN.
    hctl: Option<[u64; 4]>,
}

fn parse_hctl(s: &str) -> Option<[u64; 4]> {
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

fn text_eq(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

impl Lio {
    /// Writes `value` when the current text differs; returns the old text if written.
    fn set_if_differs(&self, path: &Path, value: &str) -> Result<Option<String>> {
        let old = self.read(path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Error::NotFound {
                    what: "attribute",
                    name: path.display().to_string(),
                }
            }
            other => other,
        })?;
        if text_eq(&old, value) {
            return Ok(None);
        }
        self.write(path, value)?;
        Ok(Some(old.trim().to_owned()))
    }

    fn apply_settings(&self, dir: &Path, settings: &Settings) -> Result<()> {
        for (k, v) in settings {
            self.set_if_differs(&dir.join(k), &v.to_configfs())?;
        }
        Ok(())
    }

    fn write_auth(&self, dir: &Path, auth: &Chap) -> Result<()> {
        for (field, v) in auth.fields() {
            if let Some(v) = v {
                check_chap_value(v).map_err(|e| {
                    Error::rule(
                        "CHAP values are 1-255 printable characters, not 'NULL'",
                        format!("{field}: {e}"),
                    )
                })?;
                self.set_if_differs(&dir.join(field), v)?;
            }
        }
        Ok(())
    }

    fn auth_dir(&self, owner: &AuthOwner) -> PathBuf {
        match owner {
            AuthOwner::Tpg(t) => self.tpg_dir(t).join("auth"),
            AuthOwner::Acl(a) => self.acl_dir(a).join("auth"),
            AuthOwner::Discovery(f) => self.fabric_dir(f).join("discovery_auth"),
        }
    }

    fn attr_dir(&self, owner: &AttrOwner) -> Result<PathBuf> {
        Ok(match owner {
            AttrOwner::StorageObject(s) => self.so_dir(s)?.join("attrib"),
            AttrOwner::Tpg(t) => self.tpg_dir(t).join("attrib"),
            AttrOwner::Acl(a) => self.acl_dir(a).join("attrib"),
        })
    }

    fn require_dir(&self, dir: &Path, what: &'static str, name: &dyn fmt::Display) -> Result<()> {
        if dir.is_dir() {
            Ok(())
        } else {
            Err(Error::NotFound {
                what,
                name: name.to_string(),
            })
        }
    }

    fn prepare_so(&self, so: &StorageObject) -> Result<Prepared> {
        let mut p = Prepared {
            fileio_size: None,
            hctl: None,
        };
        match so {
            StorageObject::Fileio(f) => {
                let dev = Path::new(&f.dev);
                match fs::metadata(dev) {
                    Ok(m) if m.is_dir() => {
                        return Err(Error::rule(
                            "a fileio backstore needs a regular file or a block device",
                            format!("{} is a directory", f.dev),
                        ))
                    }
                    Ok(m) if m.file_type().is_block_device() => p.fileio_size = None,
                    Ok(m) => {
                        let size = f.size.unwrap_or(m.len());
                        if size == 0 {
                            return Err(Error::rule(
                                "a fileio backstore needs a size when its file is empty",
                                format!("{} is empty and no size was given", f.dev),
                            ));
                        }
                        p.fileio_size = Some(size);
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
                        p.fileio_size = Some(size);
                    }
                    Err(e) => {
                        return Err(Error::Io {
                            op: "inspect backing file",
                            path: dev.to_path_buf(),
                            source: e,
                        })
                    }
                }
            }
            StorageObject::Block(b) => match fs::metadata(&b.dev) {
                Ok(m) => {
                    if self.autoload() && !m.file_type().is_block_device() {
                        return Err(Error::rule(
                            "a block backstore needs a block device (use fileio for files)",
                            format!("{} is not a block device", b.dev),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::rule(
                        "a block backstore's device must exist",
                        format!("block device {} does not exist", b.dev),
                    ))
                }
                Err(e) => {
                    return Err(Error::Io {
                        op: "inspect block device",
                        path: PathBuf::from(&b.dev),
                        source: e,
                    })
                }
            },
            StorageObject::Pscsi(ps) => {
                p.hctl = parse_hctl(&ps.dev).or_else(|| hctl_of_device(&ps.dev));
                if p.hctl.is_none() {
                    return Err(Error::rule(
                        "pscsi dev is H:C:T:L or a SCSI device path known to sysfs",
                        format!("cannot find the SCSI address of {}", ps.dev),
                    ));
                }
            }
            StorageObject::User(u) => {
                let cfg = u.config.as_deref().unwrap_or("");
                if !cfg.contains('/') || cfg.contains(':') || u.size.is_none() {
                    return Err(Error::rule(
                        "user backstores need config '<handler>/<cfgstring>' without ':' and a size (rtslib)",
                        format!("config {cfg:?}, size {:?}", u.size),
                    ));
                }
            }
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

    fn configure_so(&self, dir: &Path, so: &StorageObject, prep: &Prepared) -> Result<()> {
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
            StorageObject::User(u) => {
                self.write(
                    &control,
                    &format!("dev_config={}", u.config.as_deref().unwrap_or("")),
                )?;
                self.write(&control, &format!("dev_size={}", u.size.unwrap_or(0)))?;
                if let Some(h) = u.hw_max_sectors {
                    self.write(&control, &format!("hw_max_sectors={h}"))?;
                }
                if let Some(c) = &u.control {
                    if !c.trim().is_empty() {
                        self.write(&control, c.trim())?;
                    }
                }
            }
            StorageObject::Other(_) => {}
        }
        self.write(&dir.join("enable"), "1")?;
        if !matches!(so, StorageObject::Pscsi(_)) {
            let serial = match so.wwn() {
                Some(w) => w.to_owned(),
                None => crate::sys::generate_unit_serial()?,
            };
            rustio_config::wwn::validate_unit_serial(&serial)
                .map_err(|e| Error::rule(e.rule, e.detail))?;
            self.write(&dir.join("wwn/vpd_unit_serial"), &serial)?;
        }
        if let Some(common) = so.common() {
            let mut attrs = common.attributes.clone();
            let wb = match so {
                StorageObject::Fileio(f) => f.write_back,
                StorageObject::Block(b) => b.write_back,
                _ => None,
            };
            if wb == Some(true) && !attrs.contains_key("emulate_write_cache") {
                attrs.insert("emulate_write_cache".into(), ConfigValue::Int(1));
            }
            self.apply_settings(&dir.join("attrib"), &attrs)?;
            if !common.alua_tpgs.is_empty() && !self.alua_supported(dir, &so.plugin()) {
                let custom = common
                    .alua_tpgs
                    .iter()
                    .any(|g| g.name != "default_tg_pt_gp");
                if custom {
                    return Err(Error::rule(
                        "ALUA groups need a backstore with ALUA support (attrib/alua_support=1)",
                        format!("{} does not support ALUA", so.path()),
                    ));
                }
            } else {
                for g in &common.alua_tpgs {
                    let gdir = dir.join("alua").join(&g.name);
                    if g.name != "default_tg_pt_gp" {
                        self.mkdir(&gdir)?;
                        self.write(&gdir.join("tg_pt_gp_id"), &g.tg_pt_gp_id.to_string())?;
                    }
                    self.apply_alua_settings(&gdir, g)?;
                }
            }
        }
        Ok(())
    }

    fn apply_alua_settings(&self, gdir: &Path, g: &AluaTpg) -> Result<()> {
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
            for g in groups.iter().filter(|g| *g != "default_tg_pt_gp") {
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
        if !users.is_empty() {
            return Err(Error::InUse {
                what: "storage object",
                name: r.to_string(),
                users: users
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                hint: "delete those LUNs first, or use --force to delete them with it",
            });
        }
        let captured = self.read_storage_object(&hba, r)?.config;
        for g in self.list_dirs(&dir.join("alua"))? {
            if g != "default_tg_pt_gp" {
                self.rmdir(&dir.join("alua").join(&g))?;
            }
        }
        self.rmdir(&dir)?;
        self.remove_hba_if_empty(&hba);
        Ok(captured)
    }

    fn tpg_children(&self, t: &TpgRef) -> Result<Vec<String>> {
        let dir = self.tpg_dir(t);
        let mut out = Vec::new();
        for l in self.list_dirs(&dir.join("lun"))? {
            out.push(format!("lun {l}"));
        }
        for p in self.list_dirs(&dir.join("np"))? {
            out.push(format!("portal {p}"));
        }
        for a in self.list_dirs(&dir.join("acls"))? {
            out.push(format!("ACL {a}"));
        }
        Ok(out)
    }

    fn lun_mappers(&self, l: &LunRef) -> Result<Vec<MappedLunRef>> {
        let lun_rel = self
            .lun_dir(l)
            .strip_prefix(self.root())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut out = Vec::new();
        let acls = self.tpg_dir(&l.tpg).join("acls");
        for w in self.list_dirs(&acls)? {
            for m in self.list_dirs(&acls.join(&w))? {
                let Some(index) = m.strip_prefix("lun_").and_then(|n| n.parse::<u64>().ok()) else {
                    continue;
                };
                for (_, t) in self.links(&acls.join(&w).join(&m))? {
                    if t.as_deref() == Some(lun_rel.as_path()) {
                        out.push(MappedLunRef {
                            acl: AclRef {
                                tpg: l.tpg.clone(),
                                node_wwn: w.clone(),
                            },
                            index,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    fn read_auth_value(&self, path: &Path) -> Option<String> {
        self.read_trim(path)
            .filter(|v| !v.is_empty() && v != "NULL")
    }

    /// Executes one step; on success pushes its inverse onto `undo`.
    pub fn execute(&self, op: &Op, undo: &mut Vec<Op>) -> Result<()> {
        match op {
            Op::CreateStorageObject(so) => {
                let r = self.create_storage_object_inner(so)?;
                undo.push(Op::DeleteStorageObject(r));
            }
            Op::DeleteStorageObject(r) => {
                let captured = self.delete_storage_object(r)?;
                undo.push(Op::CreateStorageObject(Box::new(captured)));
            }
            Op::SetAttribute { owner, name, value } => {
                let dir = self.attr_dir(owner)?;
                if let Some(old) = self.set_if_differs(&dir.join(name), &value.to_configfs())? {
                    undo.push(Op::SetAttribute {
                        owner: owner.clone(),
                        name: name.clone(),
                        value: ConfigValue::from_configfs(&old),
                    });
                }
            }
            Op::SetParameter { tpg, name, value } => {
                let path = self.tpg_dir(tpg).join("param").join(name);
                if let Some(old) = self.set_if_differs(&path, &value.to_configfs())? {
                    undo.push(Op::SetParameter {
                        tpg: tpg.clone(),
                        name: name.clone(),
                        value: ConfigValue::Str(old),
                    });
                }
            }
            Op::CreateAluaGroup { so, group } => {
                let dir = self.so_dir(so)?;
                if !self.alua_supported(&dir, &so.plugin) {
                    return Err(Error::rule(
                        "ALUA groups need a backstore with ALUA support (attrib/alua_support=1)",
                        format!("{so} does not support ALUA"),
                    ));
                }
                if group.name == "default_tg_pt_gp" || !(1..=65535).contains(&group.tg_pt_gp_id) {
                    return Err(Error::rule(
                        "ALUA group ids are 1-65535 and default_tg_pt_gp is the kernel's",
                        format!("group {} with id {}", group.name, group.tg_pt_gp_id),
                    ));
                }
                let gdir = dir.join("alua").join(&group.name);
                if gdir.exists() {
                    return Err(Error::Exists {
                        what: "ALUA group",
                        name: format!("{so}/alua/{}", group.name),
                    });
                }
                self.mkdir(&gdir)?;
                let r = self
                    .write(&gdir.join("tg_pt_gp_id"), &group.tg_pt_gp_id.to_string())
                    .and_then(|_| self.apply_alua_settings(&gdir, group));
                if let Err(e) = r {
                    let _ = self.rmdir(&gdir);
                    return Err(e);
                }
                undo.push(Op::DeleteAluaGroup(AluaRef {
                    so: so.clone(),
                    name: group.name.clone(),
                }));
            }
            Op::DeleteAluaGroup(a) => {
                if a.name == "default_tg_pt_gp" {
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
            }
            Op::SetAluaSetting { group, name, value } => {
                let path = self
                    .so_dir(&group.so)?
                    .join("alua")
                    .join(&group.name)
                    .join(name);
                let text = self.read(&path)?;
                let old = alua_value(name, &text);
                if old != Some(*value) {
                    self.write(&path, &value.to_string())?;
                    if let Some(old) = old {
                        undo.push(Op::SetAluaSetting {
                            group: group.clone(),
                            name: name.clone(),
                            value: old,
                        });
                    }
                }
            }
            Op::CreateTarget(t) => {
                let info = fabric_info(&t.fabric).ok_or_else(|| {
                    Error::rule(
                        "fabric must be a LIO fabric module name (iscsi, loopback, vhost, ...)",
                        format!("fabric {:?} is unknown", t.fabric),
                    )
                })?;
                validate_fabric_wwn(info, &t.wwn).map_err(|e| {
                    Error::rule(
                        "target names must suit the fabric (iSCSI: RFC 3720 3.2.6.3; loopback/vhost: naa, RFC 3980)",
                        format!("{:?} is not a valid {} target name: {e}", t.wwn, t.fabric),
                    )
                })?;
                self.ensure_fabric(&t.fabric)?;
                let dir = self.target_dir(t);
                if dir.exists() {
                    return Err(Error::Exists {
                        what: "target",
                        name: t.to_string(),
                    });
                }
                self.mkdir(&dir)?;
                undo.push(Op::DeleteTarget(t.clone()));
            }
            Op::DeleteTarget(t) => {
                let dir = self.target_dir(t);
                self.require_dir(&dir, "target", t)?;
                let tpgs: Vec<String> = self
                    .list_dirs(&dir)?
                    .into_iter()
                    .filter(|d| d.starts_with("tpgt_"))
                    .collect();
                if !tpgs.is_empty() {
                    return Err(Error::InUse {
                        what: "target",
                        name: t.to_string(),
                        users: tpgs.join(", "),
                        hint: "delete its TPGs first",
                    });
                }
                self.rmdir(&dir)?;
                undo.push(Op::CreateTarget(t.clone()));
            }
            Op::CreateTpg {
                tpg,
                attributes,
                parameters,
                auth,
                nexus,
            } => {
                let info = fabric_info(&tpg.target.fabric).ok_or_else(|| {
                    Error::rule(
                        "fabric must be a LIO fabric module name",
                        tpg.target.fabric.clone(),
                    )
                })?;
                let tdir = self.target_dir(&tpg.target);
                self.require_dir(&tdir, "target", &tpg.target)?;
                if tpg.tag > 65535 {
                    return Err(Error::rule(
                        "TPG tags are 16-bit, 0-65535 (RFC 7143 13.9)",
                        format!("tag {}", tpg.tag),
                    ));
                }
                let dir = self.tpg_dir(tpg);
                if dir.exists() {
                    return Err(Error::Exists {
                        what: "TPG",
                        name: tpg.to_string(),
                    });
                }
                if !info.tpgts
                    && self
                        .list_dirs(&tdir)?
                        .iter()
                        .any(|d| d.starts_with("tpgt_"))
                {
                    return Err(Error::rule(
                        "this fabric supports a single TPG per target (no 'tpgts' feature)",
                        format!("{} already has a TPG", tpg.target),
                    ));
                }
                self.mkdir(&dir)?;
                let r = (|| {
                    if info.nexus {
                        let n = match nexus {
                            Some(n) => n.clone(),
                            None => crate::sys::generate_naa()?,
                        };
                        rustio_config::wwn::validate_naa(&n)
                            .map_err(|e| Error::rule(e.rule, e.detail))?;
                        self.write(&dir.join("nexus"), &n)?;
                    }
                    self.apply_settings(&dir.join("attrib"), attributes)?;
                    self.apply_settings(&dir.join("param"), parameters)?;
                    if !auth.is_empty() {
                        self.write_auth(&dir.join("auth"), auth)?;
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    let _ = self.rmdir(&dir);
                    return Err(e);
                }
                undo.push(Op::DeleteTpg(tpg.clone()));
            }
            Op::DeleteTpg(tpg) => {
                let dir = self.tpg_dir(tpg);
                self.require_dir(&dir, "TPG", tpg)?;
                let children = self.tpg_children(tpg)?;
                if !children.is_empty() {
                    return Err(Error::InUse {
                        what: "TPG",
                        name: tpg.to_string(),
                        users: children.join(", "),
                        hint: "delete its LUNs, portals and ACLs first",
                    });
                }
                let info = fabric_info(&tpg.target.fabric).copied();
                let captured = self.read_tpg(
                    tpg,
                    &info.unwrap_or(*fabric_info("iscsi").expect("iscsi is known")),
                )?;
                let was_enabled = self.read_trim(&dir.join("enable")).as_deref() == Some("1");
                if was_enabled {
                    self.write(&dir.join("enable"), "0")?;
                }
                if let Err(e) = self.rmdir(&dir) {
                    if was_enabled {
                        let _ = self.write(&dir.join("enable"), "1");
                    }
                    return Err(e);
                }
                if was_enabled {
                    undo.push(Op::SetTpgEnable {
                        tpg: tpg.clone(),
                        enable: true,
                    });
                }
                undo.push(Op::CreateTpg {
                    tpg: tpg.clone(),
                    attributes: captured.config.attributes,
                    parameters: captured.config.parameters,
                    auth: captured.config.auth,
                    nexus: captured.config.nexus,
                });
            }
            Op::SetTpgEnable { tpg, enable } => {
                let dir = self.tpg_dir(tpg);
                self.require_dir(&dir, "TPG", tpg)?;
                let path = dir.join("enable");
                if path.exists() {
                    let want = if *enable { "1" } else { "0" };
                    if let Some(old) = self.set_if_differs(&path, want)? {
                        undo.push(Op::SetTpgEnable {
                            tpg: tpg.clone(),
                            enable: old == "1",
                        });
                    }
                }
            }
            Op::SetAuth {
                owner,
                field,
                value,
            } => {
                if !AUTH_FIELDS.contains(field) {
                    return Err(Error::rule(
                        "auth settings are userid, password, mutual_userid, mutual_password",
                        format!("unknown auth setting {field:?}"),
                    ));
                }
                if let AuthOwner::Discovery(f) = owner {
                    self.ensure_fabric(f)?;
                }
                let dir = self.auth_dir(owner);
                if !dir.is_dir() {
                    return Err(Error::rule(
                        "CHAP authentication exists on iSCSI TPGs, ACLs and discovery only",
                        format!("{owner} has no auth/ directory"),
                    ));
                }
                if let Some(v) = value {
                    check_chap_value(v).map_err(|e| {
                        Error::rule("CHAP values are 1-255 printable characters, not 'NULL' (rtslib, kernel)", format!("{field}: {e}"))
                    })?;
                }
                let path = dir.join(field);
                let old = self.read_auth_value(&path);
                if old != *value {
                    self.write(&path, value.as_deref().unwrap_or("NULL"))?;
                    undo.push(Op::SetAuth {
                        owner: owner.clone(),
                        field,
                        value: old,
                    });
                }
            }
            Op::SetDiscoveryEnforce { fabric, enable } => {
                let path = self
                    .fabric_dir(fabric)
                    .join("discovery_auth/enforce_discovery_auth");
                if !path.exists() {
                    self.ensure_fabric(fabric)?;
                }
                if let Some(old) = self.set_if_differs(&path, if *enable { "1" } else { "0" })? {
                    undo.push(Op::SetDiscoveryEnforce {
                        fabric: fabric.clone(),
                        enable: old == "1",
                    });
                }
            }
            Op::CreateLun {
                lun,
                so,
                alias,
                alua_group,
            } => {
                if lun.index > 65535 {
                    return Err(Error::rule(
                        "LUN indexes are 0-65535 (rtslib MAX_TARGET_LUN)",
                        format!("LUN {}", lun.index),
                    ));
                }
                let tdir = self.tpg_dir(&lun.tpg);
                self.require_dir(&tdir, "TPG", &lun.tpg)?;
                let so_dir = self.so_dir(so)?;
                if self.read_trim(&so_dir.join("enable")).as_deref() == Some("0") {
                    return Err(Error::rule(
                        "a LUN can only export an enabled (configured) storage object",
                        format!("{so} is not enabled"),
                    ));
                }
                let alias = match alias {
                    Some(a) => {
                        check_alias(a).map_err(|e| {
                            Error::rule("link names (aliases) are non-empty without '/'", e)
                        })?;
                        a.clone()
                    }
                    None => crate::sys::generate_alias()?,
                };
                let dir = self.lun_dir(lun);
                if dir.exists() {
                    return Err(Error::Exists {
                        what: "LUN",
                        name: lun.to_string(),
                    });
                }
                self.mkdir(&dir)?;
                let link = dir.join(&alias);
                let target =
                    fs::canonicalize(&so_dir).map_err(crate::lio::io_err("resolve", &so_dir))?;
                if let Err(e) = self.symlink(&target, &link) {
                    let _ = self.rmdir(&dir);
                    return Err(e);
                }
                if let Some(g) = alua_group {
                    let r = self.set_lun_group(lun, g).map(|_| ());
                    if let Err(e) = r {
                        let _ = self.unlink(&link);
                        let _ = self.rmdir(&dir);
                        return Err(e);
                    }
                }
                undo.push(Op::DeleteLun(lun.clone()));
            }
            Op::DeleteLun(lun) => {
                let dir = self.lun_dir(lun);
                self.require_dir(&dir, "LUN", lun)?;
                let mappers = self.lun_mappers(lun)?;
                if !mappers.is_empty() {
                    return Err(Error::InUse {
                        what: "LUN",
                        name: lun.to_string(),
                        users: mappers
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        hint: "delete those mapped LUNs first",
                    });
                }
                let links = self.links(&dir)?;
                let so = links.iter().find_map(|(a, t)| {
                    t.as_ref()
                        .and_then(|t| self.so_from_core_path(t))
                        .map(|(s, _)| (a.clone(), s))
                });
                let group = self
                    .read_trim(&dir.join("alua_tg_pt_gp"))
                    .and_then(|t| {
                        t.lines()
                            .next()
                            .and_then(|l| l.split_once(':'))
                            .map(|(_, v)| v.trim().to_owned())
                    })
                    .filter(|g| !g.is_empty() && g != "default_tg_pt_gp");
                for (name, _) in &links {
                    self.unlink(&dir.join(name))?;
                }
                self.rmdir(&dir)?;
                if let Some((alias, so)) = so {
                    undo.push(Op::CreateLun {
                        lun: lun.clone(),
                        so,
                        alias: Some(alias),
                        alua_group: group,
                    });
                }
            }
            Op::SetLunAluaGroup { lun, group } => {
                if let Some(old) = self.set_lun_group(lun, group)? {
                    undo.push(Op::SetLunAluaGroup {
                        lun: lun.clone(),
                        group: old,
                    });
                }
            }
            Op::CreatePortal {
                portal,
                iser,
                offload,
            } => {
                check_portal_address(&portal.ip).map_err(|e| {
                    Error::rule(
                        "portal ip_address is IPv4 dotted-quad or an IPv6 address in brackets",
                        e,
                    )
                })?;
                if !(1..=65535).contains(&portal.port) {
                    return Err(Error::rule(
                        "portal ports are 1-65535 (RFC 7143 13.5 default 3260)",
                        format!("port {}", portal.port),
                    ));
                }
                self.require_dir(&self.tpg_dir(&portal.tpg), "TPG", &portal.tpg)?;
                let dir = self.portal_dir(portal);
                if dir.exists() {
                    return Err(Error::Exists {
                        what: "portal",
                        name: portal.to_string(),
                    });
                }
                self.mkdir(&dir)?;
                let r = (|| {
                    if *iser {
                        self.write(&dir.join("iser"), "1")?;
                    }
                    if *offload {
                        self.write(&dir.join("cxgbit"), "1")?;
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    let _ = self.write(&dir.join("iser"), "0");
                    let _ = self.rmdir(&dir);
                    return Err(e);
                }
                undo.push(Op::DeletePortal(portal.clone()));
            }
            Op::DeletePortal(portal) => {
                let dir = self.portal_dir(portal);
                self.require_dir(&dir, "portal", portal)?;
                let iser = self.read_trim(&dir.join("iser")).as_deref() == Some("1");
                let offload = self.read_trim(&dir.join("cxgbit")).as_deref() == Some("1");
                if iser {
                    self.write(&dir.join("iser"), "0")?;
                }
                if offload {
                    self.write(&dir.join("cxgbit"), "0")?;
                }
                self.rmdir(&dir)?;
                undo.push(Op::CreatePortal {
                    portal: portal.clone(),
                    iser,
                    offload,
                });
            }
            Op::SetPortalFlag { portal, flag, on } => {
                let path = self.portal_dir(portal).join(flag.file());
                if let Some(old) = self.set_if_differs(&path, if *on { "1" } else { "0" })? {
                    undo.push(Op::SetPortalFlag {
                        portal: portal.clone(),
                        flag: *flag,
                        on: old == "1",
                    });
                }
            }
            Op::CreateAcl {
                acl,
                attributes,
                auth,
                tag,
            } => {
                let info = fabric_info(&acl.tpg.target.fabric);
                if let Some(info) = info {
                    if !info.acls {
                        return Err(Error::rule(
                            "the fabric does not support this object",
                            format!("fabric {} has no initiator ACLs", info.name),
                        ));
                    }
                    validate_fabric_wwn(info, &acl.node_wwn).map_err(|e| {
                        Error::rule(
                            "initiator names must suit the fabric (iSCSI: RFC 3720 3.2.6.3)",
                            format!(
                                "{:?} is not a valid {} initiator name: {e}",
                                acl.node_wwn, info.name
                            ),
                        )
                    })?;
                }
                self.require_dir(&self.tpg_dir(&acl.tpg), "TPG", &acl.tpg)?;
                let dir = self.acl_dir(acl);
                if dir.exists() {
                    return Err(Error::Exists {
                        what: "ACL",
                        name: acl.to_string(),
                    });
                }
                self.mkdir(&dir)?;
                let r = (|| {
                    self.apply_settings(&dir.join("attrib"), attributes)?;
                    if !auth.is_empty() {
                        self.write_auth(&dir.join("auth"), auth)?;
                    }
                    if let Some(t) = tag {
                        self.write(&dir.join("tag"), t)?;
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    let _ = self.rmdir(&dir);
                    return Err(e);
                }
                undo.push(Op::DeleteAcl(acl.clone()));
            }
            Op::DeleteAcl(acl) => {
                let dir = self.acl_dir(acl);
                self.require_dir(&dir, "ACL", acl)?;
                let mapped: Vec<String> = self
                    .list_dirs(&dir)?
                    .into_iter()
                    .filter(|d| d.starts_with("lun_"))
                    .collect();
                if !mapped.is_empty() {
                    return Err(Error::InUse {
                        what: "ACL",
                        name: acl.to_string(),
                        users: mapped.join(", "),
                        hint: "delete its mapped LUNs first",
                    });
                }
                let attributes = self.read_settings(&dir.join("attrib"), false)?;
                let auth = self.read_chap(&dir.join("auth"));
                let tag = self
                    .read_trim(&dir.join("tag"))
                    .filter(|t| !t.is_empty() && t != "NULL");
                self.rmdir(&dir)?;
                undo.push(Op::CreateAcl {
                    acl: acl.clone(),
                    attributes,
                    auth,
                    tag,
                });
            }
            Op::SetAclTag { acl, tag } => {
                let path = self.acl_dir(acl).join("tag");
                let old = self
                    .read_trim(&path)
                    .filter(|t| !t.is_empty() && t != "NULL");
                if old != *tag {
                    self.write(&path, tag.as_deref().unwrap_or("NULL"))?;
                    undo.push(Op::SetAclTag {
                        acl: acl.clone(),
                        tag: old,
                    });
                }
            }
            Op::CreateMappedLun {
                mlun,
                tpg_lun,
                write_protect,
                alias,
            } => {
                let adir = self.acl_dir(&mlun.acl);
                self.require_dir(&adir, "ACL", &mlun.acl)?;
                let lref = LunRef {
                    tpg: mlun.acl.tpg.clone(),
                    index: *tpg_lun,
                };
                let ldir = self.lun_dir(&lref);
                self.require_dir(&ldir, "TPG LUN", &lref)?;
                let alias = match alias {
                    Some(a) => {
                        check_alias(a).map_err(|e| {
                            Error::rule("link names (aliases) are non-empty without '/'", e)
                        })?;
                        a.clone()
                    }
                    None => crate::sys::generate_alias()?,
                };
                let dir = self.mapped_lun_dir(mlun);
                if dir.exists() {
                    return Err(Error::Exists {
                        what: "mapped LUN",
                        name: mlun.to_string(),
                    });
                }
                self.mkdir(&dir)?;
                let link = dir.join(&alias);
                let target =
                    fs::canonicalize(&ldir).map_err(crate::lio::io_err("resolve", &ldir))?;
                if let Err(e) = self.symlink(&target, &link) {
                    let _ = self.rmdir(&dir);
                    return Err(e);
                }
                if let Err(e) = self.set_if_differs(
                    &dir.join("write_protect"),
                    if *write_protect { "1" } else { "0" },
                ) {
                    let _ = self.unlink(&link);
                    let _ = self.rmdir(&dir);
                    return Err(e);
                }
                undo.push(Op::DeleteMappedLun(mlun.clone()));
            }
            Op::DeleteMappedLun(mlun) => {
                let dir = self.mapped_lun_dir(mlun);
                self.require_dir(&dir, "mapped LUN", mlun)?;
                let links = self.links(&dir)?;
                let target = links.iter().find_map(|(a, t)| {
                    let t = t.as_ref()?;
                    let n = t.file_name()?.to_string_lossy().into_owned();
                    Some((a.clone(), n.strip_prefix("lun_")?.parse::<u64>().ok()?))
                });
                let wp = self.read_trim(&dir.join("write_protect")).as_deref() == Some("1");
                for (name, _) in &links {
                    self.unlink(&dir.join(name))?;
                }
                self.rmdir(&dir)?;
                if let Some((alias, tpg_lun)) = target {
                    undo.push(Op::CreateMappedLun {
                        mlun: mlun.clone(),
                        tpg_lun,
                        write_protect: wp,
                        alias: Some(alias),
                    });
                }
            }
            Op::SetWriteProtect { mlun, on } => {
                let path = self.mapped_lun_dir(mlun).join("write_protect");
                if let Some(old) = self.set_if_differs(&path, if *on { "1" } else { "0" })? {
                    undo.push(Op::SetWriteProtect {
                        mlun: mlun.clone(),
                        on: old == "1",
                    });
                }
            }
        }
        Ok(())
    }

    /// Moves a LUN to an ALUA group; returns the previous group when it changed.
    fn set_lun_group(&self, lun: &LunRef, group: &str) -> Result<Option<String>> {
        let path = self.lun_dir(lun).join("alua_tg_pt_gp");
        let cur = self.read_trim(&path).and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        if cur.as_deref() == Some(group) {
            return Ok(None);
        }
        self.write(&path, group)?;
        Ok(cur.filter(|c| !c.is_empty()))
    }
}
