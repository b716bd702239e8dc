//! LUN steps: TPG LUNs (linked to a storage object) and mapped LUNs (linked to a TPG
//! LUN), which share one create-and-link sequence.

use std::fmt;
use std::fs;
use std::path::Path;

use rustio_config::validate::check_alias;

use super::target::flag;
use super::{refuse_in_use, Op};
use crate::addr::{AclRef, LunRef, MappedLunRef, SoRef};
use crate::error::{Error, Result};
use crate::lio::Lio;
use crate::read::{alua_group_of, lun_index, tpg_lun_of};

/// The largest TPG LUN index (rtslib `MAX_TARGET_LUN`).
const MAX_TPG_LUN: u64 = 65535;

/// The checked link name, or a random one.
fn resolve_alias(alias: Option<&str>) -> Result<String> {
    match alias {
        Some(a) => {
            check_alias(a)
                .map_err(|e| Error::rule("link names (aliases) are non-empty without '/'", e))?;
            Ok(a.to_owned())
        }
        None => crate::sys::generate_alias(),
    }
}

/// Where a LUN-like object is made and what it links to.
struct LinkedDir<'a> {
    /// Kind, for errors.
    what: &'static str,
    /// Name, for errors.
    name: &'a dyn fmt::Display,
    /// Directory to create.
    dir: &'a Path,
    /// Link name (random when `None`).
    alias: Option<&'a str>,
    /// Directory the link points at.
    target: &'a Path,
}

impl Lio {
    /// Creates a directory holding one link to another configfs object, then runs
    /// `finish`; on failure removes what it made (rtslib's `except: self.delete()`).
    fn create_linked_dir(
        &self,
        d: &LinkedDir<'_>,
        finish: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let alias = resolve_alias(d.alias)?;
        self.ensure_absent(d.dir, d.what, d.name)?;
        // Resolve the link target before anything is created, so that a missing target
        // leaves configfs as it was found.
        let target = fs::canonicalize(d.target).map_err(crate::lio::io_err("resolve", d.target))?;
        self.mkdir(d.dir)?;
        let link = d.dir.join(&alias);
        if let Err(e) = self.symlink(&target, &link) {
            let _ = self.rmdir(d.dir);
            return Err(e);
        }
        if let Err(e) = finish(d.dir) {
            let _ = self.unlink(&link);
            let _ = self.rmdir(d.dir);
            return Err(e);
        }
        Ok(())
    }

    /// Removes every link in `dir`, then `dir`.
    fn remove_linked_dir(
        &self,
        dir: &Path,
        links: &[(String, Option<std::path::PathBuf>)],
    ) -> Result<()> {
        for (name, _) in links {
            self.unlink(&dir.join(name))?;
        }
        self.rmdir(dir)
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
                let Some(index) = lun_index(&m) else {
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

    /// Moves a LUN to an ALUA group; returns the previous group when it changed.
    fn set_lun_group(&self, lun: &LunRef, group: &str) -> Result<Option<String>> {
        let path = self.lun_dir(lun).join("alua_tg_pt_gp");
        let cur = self.read_trim(&path).and_then(|t| alua_group_of(&t));
        if cur.as_deref() == Some(group) {
            return Ok(None);
        }
        self.write(&path, group)?;
        Ok(cur.filter(|c| !c.is_empty()))
    }

    /// [`Op::CreateLun`].
    pub(super) fn exec_create_lun(
        &self,
        lun: &LunRef,
        so: &SoRef,
        alias: Option<&str>,
        alua_group: Option<&str>,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        if lun.index > MAX_TPG_LUN {
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
        let linked = LinkedDir {
            what: "LUN",
            name: lun,
            dir: &self.lun_dir(lun),
            alias,
            target: &so_dir,
        };
        self.create_linked_dir(&linked, |_| match alua_group {
            Some(g) => self.set_lun_group(lun, g).map(|_| ()),
            None => Ok(()),
        })?;
        undo.push(Op::DeleteLun(lun.clone()));
        Ok(())
    }

    /// [`Op::DeleteLun`].
    pub(super) fn exec_delete_lun(&self, lun: &LunRef, undo: &mut Vec<Op>) -> Result<()> {
        let dir = self.lun_dir(lun);
        self.require_dir(&dir, "LUN", lun)?;
        let mappers = self.lun_mappers(lun)?;
        refuse_in_use("LUN", lun, &mappers, "delete those mapped LUNs first")?;
        let links = self.links(&dir)?;
        let so = links.iter().find_map(|(a, t)| {
            t.as_ref()
                .and_then(|t| self.so_from_core_path(t))
                .map(|(s, _)| (a.clone(), s))
        });
        let group = self
            .read_trim(&dir.join("alua_tg_pt_gp"))
            .and_then(|t| alua_group_of(&t))
            .filter(|g| !g.is_empty() && g != "default_tg_pt_gp");
        self.remove_linked_dir(&dir, &links)?;
        if let Some((alias, so)) = so {
            undo.push(Op::CreateLun {
                lun: lun.clone(),
                so,
                alias: Some(alias),
                alua_group: group,
            });
        }
        Ok(())
    }

    /// [`Op::SetLunAluaGroup`].
    pub(super) fn exec_set_lun_alua_group(
        &self,
        lun: &LunRef,
        group: &str,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        if let Some(old) = self.set_lun_group(lun, group)? {
            undo.push(Op::SetLunAluaGroup {
                lun: lun.clone(),
                group: old,
            });
        }
        Ok(())
    }

    /// [`Op::CreateMappedLun`].
    pub(super) fn exec_create_mapped_lun(
        &self,
        mlun: &MappedLunRef,
        tpg_lun: u64,
        write_protect: bool,
        alias: Option<&str>,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let adir = self.acl_dir(&mlun.acl);
        self.require_dir(&adir, "ACL", &mlun.acl)?;
        let lref = LunRef {
            tpg: mlun.acl.tpg.clone(),
            index: tpg_lun,
        };
        let ldir = self.lun_dir(&lref);
        self.require_dir(&ldir, "TPG LUN", &lref)?;
        let linked = LinkedDir {
            what: "mapped LUN",
            name: mlun,
            dir: &self.mapped_lun_dir(mlun),
            alias,
            target: &ldir,
        };
        self.create_linked_dir(&linked, |dir| {
            self.set_if_differs(&dir.join("write_protect"), flag(write_protect))
                .map(|_| ())
        })?;
        undo.push(Op::DeleteMappedLun(mlun.clone()));
        Ok(())
    }

    /// [`Op::DeleteMappedLun`].
    pub(super) fn exec_delete_mapped_lun(
        &self,
        mlun: &MappedLunRef,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let dir = self.mapped_lun_dir(mlun);
        self.require_dir(&dir, "mapped LUN", mlun)?;
        let links = self.links(&dir)?;
        let target = links
            .iter()
            .find_map(|(a, t)| Some((a.clone(), tpg_lun_of(t.as_ref()?)?)));
        let wp = self.read_trim(&dir.join("write_protect")).as_deref() == Some("1");
        self.remove_linked_dir(&dir, &links)?;
        if let Some((alias, tpg_lun)) = target {
            undo.push(Op::CreateMappedLun {
                mlun: mlun.clone(),
                tpg_lun,
                write_protect: wp,
                alias: Some(alias),
            });
        }
        Ok(())
    }

    /// [`Op::SetWriteProtect`].
    pub(super) fn exec_set_write_protect(
        &self,
        mlun: &MappedLunRef,
        on: bool,
        undo: &mut Vec<Op>,
    ) -> Result<()> {
        let path = self.mapped_lun_dir(mlun).join("write_protect");
        if let Some(old) = self.set_if_differs(&path, flag(on))? {
            undo.push(Op::SetWriteProtect {
                mlun: mlun.clone(),
                on: old == "1",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_aliases_are_checked_and_kept() {
        assert_eq!(resolve_alias(Some("a1b2")).ok().as_deref(), Some("a1b2"));
        assert!(resolve_alias(Some("a/b")).is_err());
        assert!(resolve_alias(Some("")).is_err());
    }

    /// A link target that does not resolve is refused before the directory is made, so
    /// configfs is left as it was found.
    #[cfg(feature = "test-utils")]
    #[test]
    fn unresolvable_link_target_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("target");
        let k = crate::fake::FakeKernel::new(&root).unwrap();
        let lio = Lio::with_backend(&root, k).unwrap();
        let lun_dir = root.join("lun_0");
        let missing = root.join("core/fileio_0/nope");
        let d = LinkedDir {
            what: "LUN",
            name: &"lun0",
            dir: &lun_dir,
            alias: Some("a1b2"),
            target: &missing,
        };
        assert!(lio.create_linked_dir(&d, |_| Ok(())).is_err());
        assert!(!lun_dir.exists(), "{} left behind", lun_dir.display());
    }
}
