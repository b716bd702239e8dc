//! Network portal and initiator ACL steps.

use rustio_config::fabric::{fabric_info, validate_fabric_wwn};
use rustio_config::model::Settings;
use rustio_config::validate::check_portal_address;
use rustio_config::Chap;

use super::target::flag;
use super::{refuse_in_use, Op, PortalFlag};
use crate::addr::{AclRef, PortalRef};
use crate::error::{Error, Result};
use crate::lio::Lio;

/// Whether `port` is a usable TCP port (RFC 7143 13.5: 1-65535, default 3260).
fn valid_port(port: u64) -> bool {
    (1..=65535).contains(&port)
}

/// configfs text with `NULL` meaning unset (the kernel's and rtslib's empty value).
fn unless_null(t: String) -> Option<String> {
    Some(t).filter(|t| !t.is_empty() && t != "NULL")
}

impl Lio {
    /// [`Op::CreatePortal`].
    pub(super) fn exec_create_portal(
        &self,
        portal: &PortalRef,
        iser: bool,
        offload: bool,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        check_portal_address(&portal.ip).map_err(|e| {
            Error::rule(
                "portal ip_address is IPv4 dotted-quad or an IPv6 address in brackets",
                e,
            )
        })?;
        if !valid_port(portal.port) {
            return Err(Error::rule(
                "portal ports are 1-65535 (RFC 7143 13.5 default 3260)",
                format!("port {}", portal.port),
            ));
        }
        self.require_dir(&self.tpg_dir(&portal.tpg), "TPG", &portal.tpg)?;
        let dir = self.portal_dir(portal);
        self.ensure_absent(&dir, "portal", portal)?;
        self.mkdir_filled(&dir, || {
            let r = (|| {
                if iser {
                    self.write(&dir.join("iser"), "1")?;
                }
                if offload {
                    self.write(&dir.join("cxgbit"), "1")?;
                }
                Ok(())
            })();
            if r.is_err() {
                // An iSER portal must be switched off before it can be removed.
                let _ = self.write(&dir.join("iser"), "0");
            }
            r
        })?;
        undo.push(Op::DeletePortal(portal.clone()));
        Ok(())
    }

    /// [`Op::DeletePortal`].
    pub(super) fn exec_delete_portal(&self, portal: &PortalRef, undo: &mut Vec<Op>) -> Result<()> {
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
        Ok(())
    }

    /// [`Op::SetPortalFlag`].
    pub(super) fn exec_set_portal_flag(
        &self,
        portal: &PortalRef,
        pflag: PortalFlag,
        on: bool,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let path = self.portal_dir(portal).join(pflag.file());
        if let Some(old) = self.set_if_differs(&path, flag(on))? {
            undo.push(Op::SetPortalFlag {
                portal: portal.clone(),
                flag: pflag,
                on: old == "1",
            });
        }
        Ok(())
    }

    /// [`Op::CreateAcl`].
    pub(super) fn exec_create_acl(
        &self,
        acl: &AclRef,
        attributes: &Settings,
        auth: &Chap,
        tag: Option<&str>,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        if let Some(info) = fabric_info(&acl.tpg.target.fabric) {
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
        self.ensure_absent(&dir, "ACL", acl)?;
        self.mkdir_filled(&dir, || {
            self.apply_settings(&dir.join("attrib"), attributes)?;
            if !auth.is_empty() {
                self.write_auth(&dir.join("auth"), auth)?;
            }
            if let Some(t) = tag {
                self.write(&dir.join("tag"), t)?;
            }
            Ok(())
        })?;
        undo.push(Op::DeleteAcl(acl.clone()));
        Ok(())
    }

    /// [`Op::DeleteAcl`].
    pub(super) fn exec_delete_acl(&self, acl: &AclRef, undo: &mut Vec<Op>) -> Result<()> {
        let dir = self.acl_dir(acl);
        self.require_dir(&dir, "ACL", acl)?;
        let mapped = self.child_dirs(&dir, "lun_")?;
        refuse_in_use("ACL", acl, &mapped, "delete its mapped LUNs first")?;
        let attributes = self.read_settings(&dir.join("attrib"), false)?;
        let auth = self.read_chap(&dir.join("auth"));
        let tag = self.read_trim(&dir.join("tag")).and_then(unless_null);
        self.rmdir(&dir)?;
        undo.push(Op::CreateAcl {
            acl: acl.clone(),
            attributes,
            auth,
            tag,
        });
        Ok(())
    }

    /// [`Op::SetAclTag`].
    pub(super) fn exec_set_acl_tag(
        &self,
        acl: &AclRef,
        tag: &Option<String>,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let path = self.acl_dir(acl).join("tag");
        let old = self.read_trim(&path).and_then(unless_null);
        if old != *tag {
            self.write(&path, tag.as_deref().unwrap_or("NULL"))?;
            undo.push(Op::SetAclTag {
                acl: acl.clone(),
                tag: old,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_one_to_65535() {
        // RFC 7143 13.5: TCP port, the well-known iSCSI port is 3260.
        assert!(!valid_port(0));
        assert!(valid_port(1));
        assert!(valid_port(3260));
        assert!(valid_port(65535));
        assert!(!valid_port(65536));
    }

    #[test]
    fn null_and_empty_tags_are_unset() {
        assert_eq!(unless_null("NULL".into()), None);
        assert_eq!(unless_null(String::new()), None);
        assert_eq!(unless_null("grp".into()).as_deref(), Some("grp"));
    }
}
