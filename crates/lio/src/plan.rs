//! Computing the minimal list of steps that turns one configuration into another.
//!
//! Objects are matched by identity (storage objects by plugin and name, targets by
//! fabric and WWN, TPGs by tag, LUNs and mapped LUNs by index, portals by address,
//! ACLs by initiator name). Matching objects are changed in place when configfs allows
//! it (attributes, parameters, CHAP, write protection, TPG enable); they are deleted
//! and re-created when an identity property changes (a LUN's storage object, a
//! storage object's backing file, ...), together with whatever links to them.
//!
//! Steps are ordered so every step's prerequisites exist: deletions from the leaves up
//! (mapped LUNs, ACLs, LUNs, portals, TPGs, targets, ALUA groups, storage objects),
//! then creations from the roots down, and TPGs are enabled last.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rustio_config::fabric::fabric_info;
use rustio_config::model::{parse_backstore_path, Settings};
use rustio_config::validate::fill_defaults;
use rustio_config::{AluaTpg, Chap, ConfigValue, Plugin, SaveConfig, StorageObject, Tpg};

use crate::addr::{AclRef, AluaRef, LunRef, MappedLunRef, PortalRef, SoRef, TargetRef, TpgRef};
use crate::ops::{AttrOwner, AuthOwner, Op, PortalFlag, AUTH_FIELDS};

/// An ordered list of steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The steps, in execution order.
    pub ops: Vec<Op>,
}

impl Plan {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ops.is_empty() {
            return writeln!(f, "nothing to do: the live configuration already matches");
        }
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "{:>3}. {op}", i + 1)?;
        }
        Ok(())
    }
}

type SoKey = (Plugin, String);
type TKey = (String, String);
type GKey = (String, String, u64);

fn so_key(so: &StorageObject) -> SoKey {
    (so.plugin(), so.name().to_owned())
}

fn lun_so(path: &str) -> Option<SoKey> {
    parse_backstore_path(path).map(|(p, n)| (Plugin::from_name(p), n.to_owned()))
}

fn tpg_ref(k: &GKey) -> TpgRef {
    TpgRef::new(&k.0, &k.1, k.2)
}

fn pages(size: u64, page: u64) -> u64 {
    (size.saturating_add(page / 2) / page).max(1)
}

fn control_differs(cur: &Option<String>, des: &Option<String>) -> bool {
    let Some(d) = des else { return false };
    let set = |s: &str| -> BTreeSet<String> {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let c = cur.as_deref().map(set).unwrap_or_default();
    !set(d).is_subset(&c)
}

/// True when `desired` cannot be reached from `current` without re-creating it.
fn identity_differs(c: &StorageObject, d: &StorageObject, page: u64) -> bool {
    use StorageObject as S;
    let wwn = match (c.wwn(), d.wwn()) {
        (_, None) => false,
        (Some(a), Some(b)) => a != b,
        (None, Some(_)) => !matches!(d, S::Pscsi(_)),
    };
    wwn || match (c, d) {
        (S::Fileio(c), S::Fileio(d)) => {
            c.dev != d.dev
                || d.size.is_some_and(|s| Some(s) != c.size)
                || d.aio.unwrap_or(false) != c.aio.unwrap_or(false)
        }
        (S::Block(c), S::Block(d)) => {
            c.dev != d.dev
                || d.readonly.unwrap_or(false) != c.readonly.unwrap_or(false)
                || d.exclusive
                    .is_some_and(|x| x != c.exclusive.unwrap_or(true))
        }
        (S::Ramdisk(c), S::Ramdisk(d)) => {
            pages(c.size, page) != pages(d.size, page)
                || d.nullio.unwrap_or(false) != c.nullio.unwrap_or(false)
        }
        (S::Pscsi(c), S::Pscsi(d)) => c.dev != d.dev,
        (S::User(c), S::User(d)) => {
            c.config != d.config
                || d.size.is_some_and(|s| Some(s) != c.size)
                || d.hw_max_sectors
                    .is_some_and(|h| Some(h) != c.hw_max_sectors)
                || control_differs(&c.control, &d.control)
        }
        _ => true,
    }
}

fn settings_diff(cur: &Settings, des: &Settings) -> Vec<(String, ConfigValue)> {
    des.iter()
        .filter(|(k, v)| !cur.get(*k).is_some_and(|c| c.same_configfs_text(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn auth_diff(owner: &AuthOwner, cur: &Chap, des: &Chap, out: &mut Vec<Op>) {
    for ((field, c), (_, d)) in cur.fields().into_iter().zip(des.fields()) {
        if c != d {
            let field = AUTH_FIELDS
                .iter()
                .find(|f| **f == field)
                .copied()
                .unwrap_or("userid");
            out.push(Op::SetAuth {
                owner: owner.clone(),
                field,
                value: d.clone(),
            });
        }
    }
}

fn fabric_has_enable(fabric: &str) -> bool {
    !matches!(fabric_info(fabric), Some(i) if i.nexus)
}

fn discovery(cfg: &SaveConfig, fabric: &str) -> (bool, Chap) {
    match cfg.fabric_modules.iter().find(|m| m.name == fabric) {
        Some(m) => (
            m.discovery_enable_auth == Some(true),
            Chap {
                chap_userid: m.discovery_userid.clone(),
                chap_password: m.discovery_password.clone(),
                chap_mutual_userid: m.discovery_mutual_userid.clone(),
                chap_mutual_password: m.discovery_mutual_password.clone(),
            },
        ),
        None => (false, Chap::default()),
    }
}

fn alua_settings_diff(group: &AluaRef, cur: Option<&AluaTpg>, des: &AluaTpg, out: &mut Vec<Op>) {
    let cur_settings: BTreeMap<&str, Option<u64>> = cur
        .map(|c| c.settings().into_iter().collect())
        .unwrap_or_default();
    for (name, v) in des.settings() {
        if let Some(v) = v {
            if cur_settings.get(name).copied().flatten() != Some(v) {
                out.push(Op::SetAluaSetting {
                    group: group.clone(),
                    name: name.to_owned(),
                    value: v,
                });
            }
        }
    }
}

/// Computes the steps from `current` to `desired`.
pub fn diff(current: &SaveConfig, desired: &SaveConfig) -> Plan {
    diff_with_page_size(current, desired, crate::sys::page_size())
}

/// [`diff`] with an explicit page size (RAM disk sizes are compared in pages).
pub fn diff_with_page_size(current: &SaveConfig, desired: &SaveConfig, page: u64) -> Plan {
    let mut desired = desired.clone();
    fill_defaults(&mut desired);
    let mut current = current.clone();
    fill_defaults(&mut current);

    // ----- index both sides ---------------------------------------------------------
    let cur_sos: BTreeMap<SoKey, &StorageObject> = current
        .storage_objects
        .iter()
        .map(|s| (so_key(s), s))
        .collect();
    let des_sos: BTreeMap<SoKey, &StorageObject> = desired
        .storage_objects
        .iter()
        .map(|s| (so_key(s), s))
        .collect();
    let so_recreate: BTreeSet<SoKey> = des_sos
        .iter()
        .filter(|(k, d)| {
            cur_sos
                .get(*k)
                .is_some_and(|c| identity_differs(c, d, page))
        })
        .map(|(k, _)| k.clone())
        .collect();

    let targets = |cfg: &SaveConfig| -> BTreeSet<TKey> {
        cfg.targets
            .iter()
            .map(|t| (t.fabric.clone(), t.wwn.clone()))
            .collect()
    };
    let cur_targets = targets(&current);
    let des_targets = targets(&desired);

    let tpgs = |cfg: &SaveConfig| -> BTreeMap<GKey, Tpg> {
        let mut m = BTreeMap::new();
        for t in &cfg.targets {
            for g in &t.tpgs {
                m.insert(
                    (t.fabric.clone(), t.wwn.clone(), g.tag.unwrap_or(1)),
                    g.clone(),
                );
            }
        }
        m
    };
    let cur_tpgs = tpgs(&current);
    let des_tpgs = tpgs(&desired);
    let tpg_recreate: BTreeSet<GKey> = des_tpgs
        .iter()
        .filter(|(k, d)| {
            cur_tpgs
                .get(*k)
                .is_some_and(|c| d.nexus.is_some() && d.nexus != c.nexus)
        })
        .map(|(k, _)| k.clone())
        .collect();
    let tpg_kept = |k: &GKey| {
        cur_tpgs.contains_key(k) && des_tpgs.contains_key(k) && !tpg_recreate.contains(k)
    };

    // LUNs keyed by (tpg, index).
    let luns = |m: &BTreeMap<GKey, Tpg>| -> BTreeMap<(GKey, u64), rustio_config::Lun> {
        let mut out = BTreeMap::new();
        for (k, g) in m {
            for l in &g.luns {
                out.insert((k.clone(), l.index), l.clone());
            }
        }
        out
    };
    let cur_luns = luns(&cur_tpgs);
    let des_luns = luns(&des_tpgs);
    let lun_recreate: BTreeSet<(GKey, u64)> = des_luns
        .iter()
        .filter(|(k, d)| {
            tpg_kept(&k.0)
                && cur_luns.get(*k).is_some_and(|c| {
                    lun_so(&c.storage_object) != lun_so(&d.storage_object)
                        || lun_so(&d.storage_object).is_some_and(|s| so_recreate.contains(&s))
                        || (d.alias.is_some() && d.alias != c.alias)
                })
        })
        .map(|(k, _)| k.clone())
        .collect();
    let lun_kept = |k: &(GKey, u64)| {
        tpg_kept(&k.0)
            && cur_luns.contains_key(k)
            && des_luns.contains_key(k)
            && !lun_recreate.contains(k)
    };

    // ACLs keyed by (tpg, initiator).
    let acls = |m: &BTreeMap<GKey, Tpg>| -> BTreeMap<(GKey, String), rustio_config::NodeAcl> {
        let mut out = BTreeMap::new();
        for (k, g) in m {
            for a in &g.node_acls {
                out.insert((k.clone(), a.node_wwn.clone()), a.clone());
            }
        }
        out
    };
    let cur_acls = acls(&cur_tpgs);
    let des_acls = acls(&des_tpgs);
    let acl_kept =
        |k: &(GKey, String)| tpg_kept(&k.0) && cur_acls.contains_key(k) && des_acls.contains_key(k);

    type MKey = ((GKey, String), u64);
    let mluns = |m: &BTreeMap<(GKey, String), rustio_config::NodeAcl>| -> BTreeMap<MKey, rustio_config::MappedLun> {
        let mut out = BTreeMap::new();
        for (k, a) in m {
            for ml in &a.mapped_luns {
                out.insert((k.clone(), ml.index), ml.clone());
            }
        }
        out
    };
    let cur_mluns = mluns(&cur_acls);
    let des_mluns = mluns(&des_acls);
    let mlun_kept = |k: &MKey| {
        acl_kept(&k.0)
            && match (cur_mluns.get(k), des_mluns.get(k)) {
                (Some(c), Some(d)) => {
                    c.tpg_lun == d.tpg_lun
                        && !(d.alias.is_some() && d.alias != c.alias)
                        && lun_kept(&((k.0).0.clone(), d.tpg_lun))
                }
                _ => false,
            }
    };

    type PKey = (GKey, String, u64);
    let portals = |m: &BTreeMap<GKey, Tpg>| -> BTreeMap<PKey, rustio_config::Portal> {
        let mut out = BTreeMap::new();
        for (k, g) in m {
            for p in &g.portals {
                out.insert((k.clone(), p.ip_address.clone(), p.port), p.clone());
            }
        }
        out
    };
    let cur_portals = portals(&cur_tpgs);
    let des_portals = portals(&des_tpgs);
    let portal_kept =
        |k: &PKey| tpg_kept(&k.0) && cur_portals.contains_key(k) && des_portals.contains_key(k);

    let aref = |k: &(GKey, String)| AclRef {
        tpg: tpg_ref(&k.0),
        node_wwn: k.1.clone(),
    };
    let mref = |k: &MKey| MappedLunRef {
        acl: aref(&k.0),
        index: k.1,
    };
    let lref = |k: &(GKey, u64)| LunRef {
        tpg: tpg_ref(&k.0),
        index: k.1,
    };
    let pref = |k: &PKey| PortalRef {
        tpg: tpg_ref(&k.0),
        ip: k.1.clone(),
        port: k.2,
    };

    let mut ops = Vec::new();

    // ----- deletions, leaves first --------------------------------------------------------
    for (k, g) in &cur_tpgs {
        if !tpg_kept(k) && g.enable != Some(false) && fabric_has_enable(&k.0) {
            ops.push(Op::SetTpgEnable {
                tpg: tpg_ref(k),
                enable: false,
            });
        }
    }
    for k in cur_mluns.keys().filter(|k| !mlun_kept(k)) {
        ops.push(Op::DeleteMappedLun(mref(k)));
    }
    for k in cur_acls.keys().filter(|k| !acl_kept(k)) {
        ops.push(Op::DeleteAcl(aref(k)));
    }
    for k in cur_luns.keys().filter(|k| !lun_kept(k)) {
        ops.push(Op::DeleteLun(lref(k)));
    }
    for k in cur_portals.keys().filter(|k| !portal_kept(k)) {
        ops.push(Op::DeletePortal(pref(k)));
    }
    for k in cur_tpgs.keys().filter(|k| !tpg_kept(k)) {
        ops.push(Op::DeleteTpg(tpg_ref(k)));
    }
    for k in cur_targets.difference(&des_targets) {
        ops.push(Op::DeleteTarget(TargetRef {
            fabric: k.0.clone(),
            wwn: k.1.clone(),
        }));
    }
    // ALUA groups of storage objects that stay.
    let mut alua_creates = Vec::new();
    for (k, d) in &des_sos {
        let (Some(c), false) = (cur_sos.get(k), so_recreate.contains(k)) else {
            continue;
        };
        let so = SoRef::new(k.0.clone(), k.1.clone());
        let empty = Vec::new();
        let cur_groups: BTreeMap<&str, &AluaTpg> = c
            .common()
            .map(|x| &x.alua_tpgs)
            .unwrap_or(&empty)
            .iter()
            .map(|g| (g.name.as_str(), g))
            .collect();
        let des_groups: BTreeMap<&str, &AluaTpg> = d
            .common()
            .map(|x| &x.alua_tpgs)
            .unwrap_or(&empty)
            .iter()
            .map(|g| (g.name.as_str(), g))
            .collect();
        for (name, cg) in &cur_groups {
            if *name == "default_tg_pt_gp" {
                continue;
            }
            let keep = des_groups
                .get(name)
                .is_some_and(|dg| dg.tg_pt_gp_id == cg.tg_pt_gp_id);
            if !keep {
                ops.push(Op::DeleteAluaGroup(AluaRef {
                    so: so.clone(),
                    name: (*name).to_owned(),
                }));
            }
        }
        for (name, dg) in &des_groups {
            let gref = AluaRef {
                so: so.clone(),
                name: (*name).to_owned(),
            };
            match cur_groups.get(name) {
                Some(cg) if *name == "default_tg_pt_gp" || cg.tg_pt_gp_id == dg.tg_pt_gp_id => {
                    alua_settings_diff(&gref, Some(cg), dg, &mut alua_creates);
                }
                _ if *name == "default_tg_pt_gp" => {
                    alua_settings_diff(&gref, None, dg, &mut alua_creates);
                }
                _ => alua_creates.push(Op::CreateAluaGroup {
                    so: so.clone(),
                    group: (*dg).clone(),
                }),
            }
        }
    }
    for k in cur_sos.keys() {
        if !des_sos.contains_key(k) || so_recreate.contains(k) {
            ops.push(Op::DeleteStorageObject(SoRef::new(
                k.0.clone(),
                k.1.clone(),
            )));
        }
    }

    // ----- discovery authentication ---------------------------------------------------
    {
        // Only iSCSI has discovery authentication (rtslib feature "discovery_auth").
        let fabric = "iscsi";
        let (ce, cc) = discovery(&current, fabric);
        let (de, dc) = discovery(&desired, fabric);
        let owner = AuthOwner::Discovery(fabric.to_owned());
        if ce && !de {
            ops.push(Op::SetDiscoveryEnforce {
                fabric: fabric.to_owned(),
                enable: false,
            });
        }
        // rtslib only dumps credentials when enforcement is on.
        if ce || de {
            auth_diff(&owner, &cc, &dc, &mut ops);
        }
        if de && !ce {
            ops.push(Op::SetDiscoveryEnforce {
                fabric: fabric.to_owned(),
                enable: true,
            });
        }
    }

    // ----- creations, roots first ------------------------------------------------------
    for (k, d) in &des_sos {
        if !cur_sos.contains_key(k) || so_recreate.contains(k) {
            ops.push(Op::CreateStorageObject(Box::new((*d).clone())));
        } else if let (Some(c), Some(dc)) = (cur_sos.get(k).and_then(|c| c.common()), d.common()) {
            let owner = AttrOwner::StorageObject(SoRef::new(k.0.clone(), k.1.clone()));
            let mut want = dc.attributes.clone();
            let wb = match d {
                StorageObject::Fileio(f) => f.write_back,
                StorageObject::Block(b) => b.write_back,
                _ => None,
            };
            if let Some(wb) = wb {
                want.entry("emulate_write_cache".into())
                    .or_insert(ConfigValue::Int(i64::from(wb)));
            }
            for (name, value) in settings_diff(&c.attributes, &want) {
                ops.push(Op::SetAttribute {
                    owner: owner.clone(),
                    name,
                    value,
                });
            }
        }
    }
    ops.extend(alua_creates);
    for k in des_targets.difference(&cur_targets) {
        ops.push(Op::CreateTarget(TargetRef {
            fabric: k.0.clone(),
            wwn: k.1.clone(),
        }));
    }
    for (k, d) in &des_tpgs {
        let t = tpg_ref(k);
        if !tpg_kept(k) {
            ops.push(Op::CreateTpg {
                tpg: t,
                attributes: d.attributes.clone(),
                parameters: d.parameters.clone(),
                auth: d.auth.clone(),
                nexus: d.nexus.clone(),
            });
            continue;
        }
        let c = &cur_tpgs[k];
        for (name, value) in settings_diff(&c.attributes, &d.attributes) {
            ops.push(Op::SetAttribute {
                owner: AttrOwner::Tpg(t.clone()),
                name,
                value,
            });
        }
        for (name, value) in settings_diff(&c.parameters, &d.parameters) {
            ops.push(Op::SetParameter {
                tpg: t.clone(),
                name,
                value,
            });
        }
        let info = fabric_info(&k.0);
        if !matches!(info, Some(i) if !i.auth) {
            auth_diff(&AuthOwner::Tpg(t.clone()), &c.auth, &d.auth, &mut ops);
        }
    }
    for (k, d) in &des_luns {
        if !lun_kept(k) {
            if let Some((plugin, name)) = lun_so(&d.storage_object) {
                ops.push(Op::CreateLun {
                    lun: lref(k),
                    so: SoRef::new(plugin, name),
                    alias: d.alias.clone(),
                    alua_group: d
                        .alua_tg_pt_gp_name
                        .clone()
                        .filter(|g| g != "default_tg_pt_gp"),
                });
            }
        } else if let Some(g) = &d.alua_tg_pt_gp_name {
            if cur_luns[k].alua_tg_pt_gp_name.as_ref() != Some(g) {
                ops.push(Op::SetLunAluaGroup {
                    lun: lref(k),
                    group: g.clone(),
                });
            }
        }
    }
    for (k, d) in &des_acls {
        let a = aref(k);
        if !acl_kept(k) {
            ops.push(Op::CreateAcl {
                acl: a,
                attributes: d.attributes.clone(),
                auth: d.auth.clone(),
                tag: d.tag.clone(),
            });
            continue;
        }
        let c = &cur_acls[k];
        for (name, value) in settings_diff(&c.attributes, &d.attributes) {
            ops.push(Op::SetAttribute {
                owner: AttrOwner::Acl(a.clone()),
                name,
                value,
            });
        }
        if !matches!(fabric_info(&(k.0).0), Some(i) if !i.auth) {
            auth_diff(&AuthOwner::Acl(a.clone()), &c.auth, &d.auth, &mut ops);
        }
        if c.tag != d.tag {
            ops.push(Op::SetAclTag {
                acl: a,
                tag: d.tag.clone(),
            });
        }
    }
    for (k, d) in &des_mluns {
        if !mlun_kept(k) {
            ops.push(Op::CreateMappedLun {
                mlun: mref(k),
                tpg_lun: d.tpg_lun,
                write_protect: d.write_protect.unwrap_or(false),
                alias: d.alias.clone(),
            });
        } else if cur_mluns[k].write_protect.unwrap_or(false) != d.write_protect.unwrap_or(false) {
            ops.push(Op::SetWriteProtect {
                mlun: mref(k),
                on: d.write_protect.unwrap_or(false),
            });
        }
    }
    for (k, d) in &des_portals {
        if !portal_kept(k) {
            ops.push(Op::CreatePortal {
                portal: pref(k),
                iser: d.iser.unwrap_or(false),
                offload: d.offload.unwrap_or(false),
            });
        } else {
            let c = &cur_portals[k];
            for (flag, cv, dv) in [
                (PortalFlag::Iser, c.iser, d.iser),
                (PortalFlag::Offload, c.offload, d.offload),
            ] {
                if cv.unwrap_or(false) != dv.unwrap_or(false) {
                    ops.push(Op::SetPortalFlag {
                        portal: pref(k),
                        flag,
                        on: dv.unwrap_or(false),
                    });
                }
            }
        }
    }
    for (k, d) in &des_tpgs {
        if !fabric_has_enable(&k.0) {
            continue;
        }
        let want = d.enable.unwrap_or(true);
        let have = if tpg_kept(k) {
            cur_tpgs[k].enable.unwrap_or(true)
        } else {
            false
        };
        if want != have {
            ops.push(Op::SetTpgEnable {
                tpg: tpg_ref(k),
                enable: want,
            });
        }
    }
    Plan { ops }
}

/// Steps that create everything in `desired` from nothing.
pub fn create_all(desired: &SaveConfig) -> Plan {
    diff(&SaveConfig::default(), desired)
}

/// Steps that delete everything in `current`.
pub fn delete_all(current: &SaveConfig) -> Plan {
    diff(current, &SaveConfig::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> SaveConfig {
        SaveConfig::from_json(text).expect("test config parses")
    }

    fn lines(p: &Plan) -> Vec<String> {
        p.ops.iter().map(ToString::to_string).collect()
    }

    const T: &str = "iqn.2003-01.org.example:t";

    fn one_target(luns: &str, acls: &str, extra_so: &str) -> SaveConfig {
        cfg(&format!(
            r#"{{"storage_objects": [
                 {{"plugin": "ramdisk", "name": "a", "size": 8192, "wwn": "s-a"}},
                 {{"plugin": "ramdisk", "name": "b", "size": 8192, "wwn": "s-b"}}{extra_so}],
               "targets": [{{"fabric": "iscsi", "wwn": "{T}", "tpgs": [{{"tag": 1,
                 "luns": [{luns}], "node_acls": [{acls}],
                 "portals": [{{"ip_address": "0.0.0.0", "port": 3260}}]}}]}}]}}"#
        ))
    }

    #[test]
    fn nothing_to_do() {
        let c = one_target(
            r#"{"index": 0, "storage_object": "/backstores/ramdisk/a"}"#,
            "",
            "",
        );
        assert!(diff_with_page_size(&c, &c, 4096).is_empty());
        assert!(
            diff_with_page_size(&SaveConfig::default(), &SaveConfig::default(), 4096).is_empty()
        );
    }

    #[test]
    fn create_all_orders_roots_first_and_enables_last() {
        let c = one_target(
            r#"{"index": 0, "storage_object": "/backstores/ramdisk/a"}"#,
            r#"{"node_wwn": "iqn.1993-08.org.debian:01:x", "mapped_luns": [{"index": 0, "tpg_lun": 0}]}"#,
            "",
        );
        let got = lines(&diff_with_page_size(&SaveConfig::default(), &c, 4096));
        let tpg = format!("/iscsi/{T}/tpg1");
        assert_eq!(
            got,
            vec![
                "create storage object /backstores/ramdisk/a (size=8192, wwn=s-a)".to_owned(),
                "create storage object /backstores/ramdisk/b (size=8192, wwn=s-b)".to_owned(),
                format!("create target /iscsi/{T}"),
                format!("create TPG {tpg}"),
                format!("create LUN {tpg}/luns/lun0 -> /backstores/ramdisk/a"),
                format!("create ACL {tpg}/acls/iqn.1993-08.org.debian:01:x"),
                format!(
                    "create mapped LUN {tpg}/acls/iqn.1993-08.org.debian:01:x/mapped_lun0 -> lun0"
                ),
                format!("create portal {tpg}/portals/0.0.0.0:3260"),
                format!("enable TPG {tpg}"),
            ]
        );
    }

    #[test]
    fn delete_all_orders_leaves_first() {
        let c = one_target(
            r#"{"index": 0, "storage_object": "/backstores/ramdisk/a"}"#,
            r#"{"node_wwn": "iqn.1993-08.org.debian:01:x", "mapped_luns": [{"index": 0, "tpg_lun": 0}]}"#,
            "",
        );
        let got = lines(&diff_with_page_size(&c, &SaveConfig::default(), 4096));
        let tpg = format!("/iscsi/{T}/tpg1");
        assert_eq!(
            got,
            vec![
                format!("disable TPG {tpg}"),
                format!("delete mapped LUN {tpg}/acls/iqn.1993-08.org.debian:01:x/mapped_lun0"),
                format!("delete ACL {tpg}/acls/iqn.1993-08.org.debian:01:x"),
                format!("delete LUN {tpg}/luns/lun0"),
                format!("delete portal {tpg}/portals/0.0.0.0:3260"),
                format!("delete TPG {tpg}"),
                format!("delete target /iscsi/{T}"),
                "delete storage object /backstores/ramdisk/a".to_owned(),
                "delete storage object /backstores/ramdisk/b".to_owned(),
            ]
        );
    }

    #[test]
    fn changing_a_luns_backstore_recreates_it_and_its_mappings() {
        let acl = r#"{"node_wwn": "iqn.1993-08.org.debian:01:x", "mapped_luns": [{"index": 4, "tpg_lun": 0, "write_protect": true}]}"#;
        let cur = one_target(
            r#"{"index": 0, "storage_object": "/backstores/ramdisk/a", "alias": "x"}"#,
            acl,
            "",
        );
        let des = one_target(
            r#"{"index": 0, "storage_object": "/backstores/ramdisk/b"}"#,
            acl,
            "",
        );
        let tpg = format!("/iscsi/{T}/tpg1");
        let m = format!("{tpg}/acls/iqn.1993-08.org.debian:01:x/mapped_lun4");
        assert_eq!(
            lines(&diff_with_page_size(&cur, &des, 4096)),
            vec![
                format!("delete mapped LUN {m}"),
                format!("delete LUN {tpg}/luns/lun0"),
                format!("create LUN {tpg}/luns/lun0 -> /backstores/ramdisk/b"),
                format!("create mapped LUN {m} -> lun0 (read-only)"),
            ]
        );
    }

    #[test]
    fn ramdisk_sizes_compare_in_pages() {
        let mk = |size: u64| {
            cfg(&format!(
                r#"{{"storage_objects": [{{"plugin": "ramdisk", "name": "r", "size": {size}}}]}}"#
            ))
        };
        // 8000 bytes round to 2 pages of 4096, like rtslib's round(size / pagesize).
        assert!(diff_with_page_size(&mk(8192), &mk(8000), 4096).is_empty());
        assert!(diff_with_page_size(&mk(8192), &mk(10239), 4096).is_empty());
        let p = diff_with_page_size(&mk(8192), &mk(10240), 4096);
        assert_eq!(
            lines(&p),
            vec![
                "delete storage object /backstores/ramdisk/r",
                "create storage object /backstores/ramdisk/r (size=10240)"
            ]
        );
    }

    #[test]
    fn user_control_only_needs_to_be_a_subset() {
        let mk = |control: &str| {
            cfg(&format!(
                r#"{{"storage_objects": [{{"plugin": "user", "name": "u", "config": "file/x", "size": 4096, "control": "{control}"}}]}}"#
            ))
        };
        let cur = mk("max_data_area_mb=8,hw_block_size=512,data_pages_per_blk=4");
        assert!(diff_with_page_size(&cur, &mk("max_data_area_mb=8"), 4096).is_empty());
        assert_eq!(
            diff_with_page_size(&cur, &mk("max_data_area_mb=64"), 4096)
                .ops
                .len(),
            2
        );
    }

    #[test]
    fn settings_auth_and_enable_change_in_place() {
        let cur = cfg(&format!(
            r#"{{"targets": [{{"fabric": "iscsi", "wwn": "{T}", "tpgs": [{{"tag": 1, "enable": true,
                "attributes": {{"authentication": 0, "login_timeout": 15}}, "parameters": {{"AuthMethod": "None"}},
                "chap_userid": "old", "chap_password": "oldsecret123"}}]}}]}}"#
        ));
        let des = cfg(&format!(
            r#"{{"targets": [{{"fabric": "iscsi", "wwn": "{T}", "tpgs": [{{"tag": 1, "enable": false,
                "attributes": {{"authentication": 1, "login_timeout": "15"}}, "parameters": {{"AuthMethod": "CHAP"}},
                "chap_userid": "new", "chap_password": "oldsecret123"}}]}}]}}"#
        ));
        let tpg = format!("/iscsi/{T}/tpg1");
        assert_eq!(
            lines(&diff_with_page_size(&cur, &des, 4096)),
            vec![
                format!("set attribute {tpg} authentication=1"),
                format!("set parameter {tpg} AuthMethod=CHAP"),
                format!("set auth {tpg} userid=new"),
                format!("disable TPG {tpg}"),
            ]
        );
    }

    #[test]
    fn nexus_change_recreates_the_tpg() {
        let mk = |nexus: &str| {
            cfg(&format!(
                r#"{{"storage_objects": [{{"plugin": "ramdisk", "name": "r", "size": 4096}}],
                    "targets": [{{"fabric": "loopback", "wwn": "naa.5001405000000001", "tpgs": [{{"tag": 1,
                    "nexus": "{nexus}", "luns": [{{"index": 0, "storage_object": "/backstores/ramdisk/r"}}]}}]}}]}}"#
            ))
        };
        let got = lines(&diff_with_page_size(
            &mk("naa.5001405000000002"),
            &mk("naa.5001405000000003"),
            4096,
        ));
        let tpg = "/loopback/naa.5001405000000001/tpg1";
        assert_eq!(
            got,
            vec![
                format!("delete LUN {tpg}/luns/lun0"),
                format!("delete TPG {tpg}"),
                format!("create TPG {tpg} (nexus naa.5001405000000003)"),
                format!("create LUN {tpg}/luns/lun0 -> /backstores/ramdisk/r"),
            ]
        );
    }

    #[test]
    fn discovery_auth_enforcement_ordering() {
        let on = cfg(
            r#"{"fabric_modules": [{"name": "iscsi", "discovery_enable_auth": true,
            "discovery_userid": "u", "discovery_password": "discsecret12"}]}"#,
        );
        let off = SaveConfig::default();
        assert_eq!(
            lines(&diff_with_page_size(&off, &on, 4096)),
            vec![
                "set auth /iscsi discovery userid=u",
                "set auth /iscsi discovery password=********",
                "enforce discovery authentication on /iscsi",
            ]
        );
        assert_eq!(
            lines(&diff_with_page_size(&on, &off, 4096)),
            vec![
                "stop enforcing discovery authentication on /iscsi",
                "set auth /iscsi discovery userid=(unset)",
                "set auth /iscsi discovery password=(unset)",
            ]
        );
    }

    #[test]
    fn alua_groups_are_diffed() {
        let mk = |groups: &str| {
            cfg(&format!(
                r#"{{"storage_objects": [{{"plugin": "ramdisk", "name": "r", "size": 4096, "alua_tpgs": [{groups}]}}]}}"#
            ))
        };
        let cur = mk(
            r#"{"name": "default_tg_pt_gp", "tg_pt_gp_id": 0, "preferred": 0},
                        {"name": "old", "tg_pt_gp_id": 3}"#,
        );
        let des = mk(
            r#"{"name": "default_tg_pt_gp", "tg_pt_gp_id": 0, "preferred": 1},
                        {"name": "new", "tg_pt_gp_id": 4, "alua_access_state": 2}"#,
        );
        assert_eq!(
            lines(&diff_with_page_size(&cur, &des, 4096)),
            vec![
                "delete ALUA group /backstores/ramdisk/r/alua/old",
                "set ALUA /backstores/ramdisk/r/alua/default_tg_pt_gp preferred=1",
                "create ALUA group /backstores/ramdisk/r/alua/new (tg_pt_gp_id=4)",
            ]
        );
    }
}
