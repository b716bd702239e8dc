//! Target and TPG steps: targets, TPGs, their parameters, enable state and CHAP.

use rustio_config::fabric::{fabric_info, validate_fabric_wwn};
use rustio_config::model::Settings;
use rustio_config::{Chap, ConfigValue};

use super::{check_chap, refuse_in_use, AuthOwner, Op, AUTH_FIELDS};
use crate::addr::{TargetRef, TpgRef};
use crate::error::{Error, Result};
use crate::lio::Lio;

/// The largest TPG tag: TPGTs are 16-bit (RFC 7143 13.9).
const MAX_TPG_TAG: u64 = 65535;

/// configfs text of a flag.
pub(super) fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

impl Lio {
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

    /// [`Op::SetParameter`].
    pub(super) fn exec_set_parameter(
        &self,
        tpg: &TpgRef,
        name: &str,
        value: &ConfigValue,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let path = self.tpg_dir(tpg).join("param").join(name);
        if let Some(old) = self.set_if_differs(&path, &value.to_configfs())? {
            undo.push(Op::SetParameter {
                tpg: tpg.clone(),
                name: name.to_owned(),
                value: ConfigValue::Str(old),
            });
        }
        Ok(())
    }

    /// [`Op::SetTargetParameter`]. rtslib's restore never writes these (target.py
    /// `Target.setup` only creates the TPGs) and a file saved on a 5.14+ kernel
    /// has `cmd_completion_affinity`, so a parameter this kernel does not have is
    /// skipped with a warning rather than failing the restore.
    pub(super) fn exec_set_target_parameter(
        &self,
        target: &TargetRef,
        name: &str,
        value: &ConfigValue,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let dir = self.target_dir(target);
        self.require_dir(&dir, "target", target)?;
        let path = dir.join("param").join(name);
        if !path.is_file() {
            tracing::warn!(%target, parameter = name, "this kernel has no such target parameter; skipped");
            return Ok(());
        }
        if let Some(old) = self.set_if_differs(&path, &value.to_configfs())? {
            undo.push(Op::SetTargetParameter {
                target: target.clone(),
                name: name.to_owned(),
                value: ConfigValue::Str(old),
            });
        }
        Ok(())
    }

    /// [`Op::CreateTarget`].
    pub(super) fn exec_create_target(&self, t: &TargetRef, undo: &mut Vec<Op>) -> Result<()> {
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
        self.ensure_absent(&dir, "target", t)?;
        self.mkdir(&dir)?;
        undo.push(Op::DeleteTarget(t.clone()));
        Ok(())
    }

    /// [`Op::DeleteTarget`].
    pub(super) fn exec_delete_target(&self, t: &TargetRef, undo: &mut Vec<Op>) -> Result<()> {
        let dir = self.target_dir(t);
        self.require_dir(&dir, "target", t)?;
        let tpgs = self.child_dirs(&dir, "tpgt_")?;
        refuse_in_use("target", t, &tpgs, "delete its TPGs first")?;
        self.rmdir(&dir)?;
        undo.push(Op::CreateTarget(t.clone()));
        Ok(())
    }

    /// [`Op::CreateTpg`].
    pub(super) fn exec_create_tpg(
        &self,
        tpg: &TpgRef,
        attributes: &Settings,
        parameters: &Settings,
        auth: &Chap,
        nexus: &Option<String>,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let info = fabric_info(&tpg.target.fabric).ok_or_else(|| {
            Error::rule(
                "fabric must be a LIO fabric module name",
                tpg.target.fabric.clone(),
            )
        })?;
        let tdir = self.target_dir(&tpg.target);
        self.require_dir(&tdir, "target", &tpg.target)?;
        if tpg.tag > MAX_TPG_TAG {
            return Err(Error::rule(
                "TPG tags are 16-bit, 0-65535 (RFC 7143 13.9)",
                format!("tag {}", tpg.tag),
            ));
        }
        let dir = self.tpg_dir(tpg);
        self.ensure_absent(&dir, "TPG", tpg)?;
        if !info.tpgts && !self.child_dirs(&tdir, "tpgt_")?.is_empty() {
            return Err(Error::rule(
                "this fabric supports a single TPG per target (no 'tpgts' feature)",
                format!("{} already has a TPG", tpg.target),
            ));
        }
        self.mkdir_filled(&dir, || {
            if info.nexus {
                let n = match nexus {
                    Some(n) => n.clone(),
                    None => crate::sys::generate_naa()?,
                };
                rustio_config::wwn::validate_naa(&n).map_err(|e| Error::rule(e.rule, e.detail))?;
                self.write(&dir.join("nexus"), &n)?;
            }
            self.apply_settings(&dir.join("attrib"), attributes)?;
            self.apply_settings(&dir.join("param"), parameters)?;
            if !auth.is_empty() {
                self.write_auth(&dir.join("auth"), auth)?;
            }
            Ok(())
        })?;
        undo.push(Op::DeleteTpg(tpg.clone()));
        Ok(())
    }

    /// [`Op::DeleteTpg`]: disabled first (the kernel refuses to remove an enabled
    /// TPG), re-enabled when the removal fails.
    pub(super) fn exec_delete_tpg(&self, tpg: &TpgRef, undo: &mut Vec<Op>) -> Result<()> {
        let dir = self.tpg_dir(tpg);
        self.require_dir(&dir, "TPG", tpg)?;
        let children = self.tpg_children(tpg)?;
        let hint = "delete its LUNs, portals and ACLs first";
        refuse_in_use("TPG", tpg, &children, hint)?;
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
        Ok(())
    }

    /// [`Op::SetTpgEnable`]; a no-op on fabrics without `enable` (loopback, vhost).
    pub(super) fn exec_set_tpg_enable(
        &self,
        tpg: &TpgRef,
        enable: bool,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let dir = self.tpg_dir(tpg);
        self.require_dir(&dir, "TPG", tpg)?;
        let path = dir.join("enable");
        if path.exists() {
            if let Some(old) = self.set_if_differs(&path, flag(enable))? {
                undo.push(Op::SetTpgEnable {
                    tpg: tpg.clone(),
                    enable: old == "1",
                });
            }
        }
        Ok(())
    }

    /// [`Op::SetAuth`].
    pub(super) fn exec_set_auth(
        &self,
        owner: &AuthOwner,
        field: &'static str,
        value: &Option<String>,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        if !AUTH_FIELDS.contains(&field) {
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
            check_chap(
                "CHAP values are 1-255 printable characters, not 'NULL' (rtslib, kernel)",
                field,
                v,
            )?;
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
        Ok(())
    }

    /// [`Op::SetDiscoveryEnforce`].
    pub(super) fn exec_set_discovery_enforce(
        &self,
        fabric: &str,
        enable: bool,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let path = self
            .fabric_dir(fabric)
            .join("discovery_auth/enforce_discovery_auth");
        if !path.exists() {
            self.ensure_fabric(fabric)?;
        }
        if let Some(old) = self.set_if_differs(&path, flag(enable))? {
            undo.push(Op::SetDiscoveryEnforce {
                fabric: fabric.to_owned(),
                enable: old == "1",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_configfs_digits() {
        assert_eq!(flag(true), "1");
        assert_eq!(flag(false), "0");
    }

    #[test]
    fn tpg_tags_are_sixteen_bits() {
        // RFC 7143 13.9: TargetPortalGroupTag is a 16-bit binary value.
        assert_eq!(MAX_TPG_TAG, u64::from(u16::MAX));
    }
}
