//! Plan steps: one object-level change each, executed against configfs with an undo
//! record so a failed plan can be rolled back.
//!
//! Every `execute` leaves configfs as it found it when it fails (a half-created object
//! is removed again, like rtslib's `except: self.delete()`), and on success pushes the
//! steps that undo it onto `undo`, in reverse order of execution.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rustio_config::model::Settings;
use rustio_config::validate::check_chap_value;
use rustio_config::{AluaTpg, Chap, ConfigValue, StorageObject};

use crate::addr::{AclRef, AluaRef, LunRef, MappedLunRef, PortalRef, SoRef, TargetRef, TpgRef};
use crate::error::{Error, Result};
use crate::lio::Lio;

mod acl;
mod backstore;
mod lun;
mod target;

pub(crate) use backstore::so_write_back;

/// Whose `attrib/` an attribute lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrOwner {
    /// A storage object.
    StorageObject(SoRef),
    /// A target (`<wwn>/attrib`; rtslib dumps it, no 6.1 fabric has one).
    Target(TargetRef),
    /// A TPG.
    Tpg(TpgRef),
    /// An initiator ACL.
    Acl(AclRef),
}

impl fmt::Display for AttrOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrOwner::StorageObject(s) => write!(f, "{s}"),
            AttrOwner::Target(t) => write!(f, "{t}"),
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
    /// Write a target-level parameter (`<wwn>/param/<name>`, e.g.
    /// `cmd_completion_affinity`); skipped with a warning when this kernel lacks it.
    SetTargetParameter {
        /// Target.
        target: TargetRef,
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

/// The one-line description of a step that plans print (`rustio apply` shows them, tests
/// compare them): one short arm per [`Op`] variant, kept in one place so the wording of
/// every step reads together.
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
            Op::SetTargetParameter {
                target,
                name,
                value,
            } => write!(f, "set parameter {target} {name}={value}"),
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
                check_chap(
                    "CHAP values are 1-255 printable characters, not 'NULL'",
                    field,
                    v,
                )?;
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
            AttrOwner::Target(t) => self.target_dir(t).join("attrib"),
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
    /// Fails with `Exists` when `dir` is already there (configfs `mkdir` would
    /// otherwise succeed on some objects and silently reuse them).
    fn ensure_absent(&self, dir: &Path, what: &'static str, name: &dyn fmt::Display) -> Result<()> {
        if dir.exists() {
            Err(Error::Exists {
                what,
                name: name.to_string(),
            })
        } else {
            Ok(())
        }
    }

    /// Creates `dir` and runs `fill`; removes `dir` again when `fill` fails, so a
    /// failed step leaves configfs as it found it.
    fn mkdir_filled(&self, dir: &Path, fill: impl FnOnce() -> Result<()>) -> Result<()> {
        self.mkdir(dir)?;
        if let Err(e) = fill() {
            let _ = self.rmdir(dir);
            return Err(e);
        }
        Ok(())
    }

    /// The sub-directories of `dir` whose names start with `prefix`.
    fn child_dirs(&self, dir: &Path, prefix: &str) -> Result<Vec<String>> {
        let mut all = self.list_dirs(dir)?;
        all.retain(|d| d.starts_with(prefix));
        Ok(all)
    }

    fn read_auth_value(&self, path: &Path) -> Option<String> {
        self.read_trim(path)
            .filter(|v| !v.is_empty() && v != "NULL")
    }

    /// Executes one step; on success pushes its inverse onto `undo`.
    pub fn execute(&self, op: &Op, undo: &mut Vec<Op>) -> Result<()> {
        match op {
            Op::CreateStorageObject(so) => self.exec_create_storage_object(so, undo),
            Op::DeleteStorageObject(r) => self.exec_delete_storage_object(r, undo),
            Op::SetAttribute { owner, name, value } => {
                self.exec_set_attribute(owner, name, value, undo)
            }
            Op::SetParameter { tpg, name, value } => {
                self.exec_set_parameter(tpg, name, value, undo)
            }
            Op::SetTargetParameter {
                target,
                name,
                value,
            } => self.exec_set_target_parameter(target, name, value, undo),
            Op::CreateAluaGroup { so, group } => self.exec_create_alua_group(so, group, undo),
            Op::DeleteAluaGroup(a) => self.exec_delete_alua_group(a, undo),
            Op::SetAluaSetting { group, name, value } => {
                self.exec_set_alua_setting(group, name, *value, undo)
            }
            Op::CreateTarget(t) => self.exec_create_target(t, undo),
            Op::DeleteTarget(t) => self.exec_delete_target(t, undo),
            Op::CreateTpg {
                tpg,
                attributes,
                parameters,
                auth,
                nexus,
            } => self.exec_create_tpg(tpg, attributes, parameters, auth, nexus, undo),
            Op::DeleteTpg(tpg) => self.exec_delete_tpg(tpg, undo),
            Op::SetTpgEnable { tpg, enable } => self.exec_set_tpg_enable(tpg, *enable, undo),
            Op::SetAuth {
                owner,
                field,
                value,
            } => self.exec_set_auth(owner, field, value, undo),
            Op::SetDiscoveryEnforce { fabric, enable } => {
                self.exec_set_discovery_enforce(fabric, *enable, undo)
            }
            Op::CreateLun {
                lun,
                so,
                alias,
                alua_group,
            } => self.exec_create_lun(lun, so, alias.as_deref(), alua_group.as_deref(), undo),
            Op::DeleteLun(lun) => self.exec_delete_lun(lun, undo),
            Op::SetLunAluaGroup { lun, group } => self.exec_set_lun_alua_group(lun, group, undo),
            Op::CreatePortal {
                portal,
                iser,
                offload,
            } => self.exec_create_portal(portal, *iser, *offload, undo),
            Op::DeletePortal(portal) => self.exec_delete_portal(portal, undo),
            Op::SetPortalFlag { portal, flag, on } => {
                self.exec_set_portal_flag(portal, *flag, *on, undo)
            }
            Op::CreateAcl {
                acl,
                attributes,
                auth,
                tag,
            } => self.exec_create_acl(acl, attributes, auth, tag.as_deref(), undo),
            Op::DeleteAcl(acl) => self.exec_delete_acl(acl, undo),
            Op::SetAclTag { acl, tag } => self.exec_set_acl_tag(acl, tag, undo),
            Op::CreateMappedLun {
                mlun,
                tpg_lun,
                write_protect,
                alias,
            } => {
                self.exec_create_mapped_lun(mlun, *tpg_lun, *write_protect, alias.as_deref(), undo)
            }
            Op::DeleteMappedLun(mlun) => self.exec_delete_mapped_lun(mlun, undo),
            Op::SetWriteProtect { mlun, on } => self.exec_set_write_protect(mlun, *on, undo),
        }
    }
}

/// Checks one CHAP value (1-255 printable characters, not `NULL`: the kernel's
/// `auth/` store handlers and rtslib); `rule` is the rule the error cites.
fn check_chap(rule: &'static str, field: &str, v: &str) -> Result<()> {
    check_chap_value(v).map_err(|e| Error::rule(rule, format!("{field}: {e}")))
}

/// Refuses to delete an object while `users` depend on it (configfs `rmdir` would
/// fail with `EBUSY` or `ENOTEMPTY`).
fn refuse_in_use<T: fmt::Display>(
    what: &'static str,
    name: &dyn fmt::Display,
    users: &[T],
    hint: &'static str,
) -> Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    Err(Error::InUse {
        what,
        name: name.to_string(),
        users: joined(users),
        hint,
    })
}

/// Comma-separated list of objects, for `InUse` errors.
fn joined<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_compares_without_surrounding_whitespace() {
        // configfs shows values with a trailing newline.
        assert!(text_eq("1\n", "1"));
        assert!(!text_eq("1", "0"));
    }

    #[test]
    fn in_use_lists_are_comma_separated() {
        assert_eq!(joined(&["lun 0", "lun 1"]), "lun 0, lun 1");
        assert_eq!(joined::<&str>(&[]), "");
    }

    #[test]
    fn in_use_only_when_there_are_users() {
        let none: [&str; 0] = [];
        assert!(refuse_in_use("ACL", &"a", &none, "h").is_ok());
        let e = refuse_in_use("ACL", &"a", &["lun_0", "lun_1"], "h");
        assert!(matches!(e, Err(Error::InUse { users, .. }) if users == "lun_0, lun_1"));
    }

    #[test]
    fn chap_values_are_printable_and_not_null() {
        let rule = "CHAP values are 1-255 printable characters, not 'NULL'";
        assert!(check_chap(rule, "userid", "user1").is_ok());
        assert!(check_chap(rule, "userid", "NULL").is_err());
        assert!(check_chap(rule, "userid", "").is_err());
        assert!(check_chap(rule, "password", &"x".repeat(256)).is_err());
    }

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(show_secret("password", &Some("s3cret".into())), "********");
        assert_eq!(
            show_secret("password_mutual", &Some("x".into())),
            "********"
        );
        assert_eq!(show_secret("userid", &Some("u".into())), "u");
        assert_eq!(show_secret("userid", &None), "(unset)");
    }
}
