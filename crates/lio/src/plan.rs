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
use rustio_config::model::{kernel_acl_attributes, parse_backstore_path, Settings};
use rustio_config::validate::fill_defaults;
use rustio_config::{
    AluaTpg, Chap, ConfigValue, Lun, MappedLun, NodeAcl, Plugin, Portal, SaveConfig, StorageObject,
    Target, Tpg,
};

use crate::addr::{AclRef, AluaRef, LunRef, MappedLunRef, PortalRef, SoRef, TargetRef, TpgRef};
use crate::ops::{so_write_back, AttrOwner, AuthOwner, Op, PortalFlag, AUTH_FIELDS};

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
    let d = Diff::new(Side::index(&current), Side::index(&desired), page);
    let mut ops = Vec::new();
    // Deletions, leaves first.
    d.disable_removed_tpgs(&mut ops);
    d.delete_removed_objects(&mut ops);
    let alua_creates = d.alua_group_ops(&mut ops);
    d.delete_storage_objects(&mut ops);
    discovery_ops(&current, &desired, &mut ops);
    // Creations, roots first.
    d.storage_object_ops(&mut ops);
    ops.extend(alua_creates);
    d.create_targets(&mut ops);
    d.tpg_ops(&mut ops);
    d.lun_ops(&mut ops);
    d.acl_ops(&mut ops);
    d.mapped_lun_ops(&mut ops);
    d.portal_ops(&mut ops);
    d.tpg_enable_ops(&mut ops);
    Plan { ops }
}

/// A TPG LUN: (TPG, index).
type LKey = (GKey, u64);
/// An ACL: (TPG, initiator name).
type AKey = (GKey, String);
/// A mapped LUN: (ACL, index).
type MKey = (AKey, u64);
/// A portal: (TPG, address, port).
type PKey = (GKey, String, u64);

/// Indexes the children of every parent by (parent key, child key).
fn index_children<'a, K: Ord + Clone, P, C, CK: Ord>(
    parents: &BTreeMap<K, &'a P>,
    children: impl Fn(&'a P) -> &'a [C],
    key: impl Fn(&K, &C) -> CK,
) -> BTreeMap<CK, &'a C> {
    let mut out = BTreeMap::new();
    for (k, p) in parents {
        for c in children(p) {
            out.insert(key(k, c), c);
        }
    }
    out
}

/// One side of a diff, every object indexed by its identity.
struct Side<'a> {
    sos: BTreeMap<SoKey, &'a StorageObject>,
    targets: BTreeMap<TKey, &'a Target>,
    tpgs: BTreeMap<GKey, &'a Tpg>,
    luns: BTreeMap<LKey, &'a Lun>,
    acls: BTreeMap<AKey, &'a NodeAcl>,
    mluns: BTreeMap<MKey, &'a MappedLun>,
    portals: BTreeMap<PKey, &'a Portal>,
}

impl<'a> Side<'a> {
    fn index(cfg: &'a SaveConfig) -> Self {
        let mut tpgs = BTreeMap::new();
        for t in &cfg.targets {
            for g in &t.tpgs {
                tpgs.insert((t.fabric.clone(), t.wwn.clone(), g.tag.unwrap_or(1)), g);
            }
        }
        let luns = index_children(&tpgs, |g| &g.luns, |k, l| (k.clone(), l.index));
        let acls = index_children(
            &tpgs,
            |g| &g.node_acls,
            |k, a| (k.clone(), a.node_wwn.clone()),
        );
        let mluns = index_children(&acls, |a| &a.mapped_luns, |k, m| (k.clone(), m.index));
        let portals = index_children(
            &tpgs,
            |g| &g.portals,
            |k, p| (k.clone(), p.ip_address.clone(), p.port),
        );
        Side {
            sos: cfg.storage_objects.iter().map(|s| (so_key(s), s)).collect(),
            targets: cfg
                .targets
                .iter()
                .map(|t| ((t.fabric.clone(), t.wwn.clone()), t))
                .collect(),
            tpgs,
            luns,
            acls,
            mluns,
            portals,
        }
    }
}

fn aref(k: &AKey) -> AclRef {
    AclRef {
        tpg: tpg_ref(&k.0),
        node_wwn: k.1.clone(),
    }
}

fn mref(k: &MKey) -> MappedLunRef {
    MappedLunRef {
        acl: aref(&k.0),
        index: k.1,
    }
}

fn lref(k: &LKey) -> LunRef {
    LunRef {
        tpg: tpg_ref(&k.0),
        index: k.1,
    }
}

fn pref(k: &PKey) -> PortalRef {
    PortalRef {
        tpg: tpg_ref(&k.0),
        ip: k.1.clone(),
        port: k.2,
    }
}

fn target_ref(k: &TKey) -> TargetRef {
    TargetRef {
        fabric: k.0.clone(),
        wwn: k.1.clone(),
    }
}

/// Pushes one step per setting of `des` that `cur` lacks or holds with other text.
fn settings_ops(
    cur: &Settings,
    des: &Settings,
    step: impl Fn(String, ConfigValue) -> Op,
    out: &mut Vec<Op>,
) {
    out.extend(
        settings_diff(cur, des)
            .into_iter()
            .map(|(name, value)| step(name, value)),
    );
}

/// Whether the fabric has CHAP (`auth/` directories); unknown fabrics are assumed to.
fn fabric_has_auth(fabric: &str) -> bool {
    !matches!(fabric_info(fabric), Some(i) if !i.auth)
}

/// Both sides, and which matching objects must be re-created rather than changed.
struct Diff<'a> {
    cur: Side<'a>,
    des: Side<'a>,
    so_recreate: BTreeSet<SoKey>,
    tpg_recreate: BTreeSet<GKey>,
    lun_recreate: BTreeSet<LKey>,
}

impl<'a> Diff<'a> {
    fn new(cur: Side<'a>, des: Side<'a>, page: u64) -> Self {
        let so_recreate = des
            .sos
            .iter()
            .filter(|(k, d)| {
                cur.sos
                    .get(*k)
                    .is_some_and(|c| identity_differs(c, d, page))
            })
            .map(|(k, _)| k.clone())
            .collect();
        // A TPG's nexus cannot change in place (loopback/vhost).
        let tpg_recreate = des
            .tpgs
            .iter()
            .filter(|(k, d)| {
                cur.tpgs
                    .get(*k)
                    .is_some_and(|c| d.nexus.is_some() && d.nexus != c.nexus)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut d = Diff {
            cur,
            des,
            so_recreate,
            tpg_recreate,
            lun_recreate: BTreeSet::new(),
        };
        d.lun_recreate = d.luns_to_recreate();
        d
    }

    /// LUNs of kept TPGs whose storage object or alias changes, or whose storage
    /// object is re-created.
    fn luns_to_recreate(&self) -> BTreeSet<LKey> {
        self.des
            .luns
            .iter()
            .filter(|(k, d)| {
                self.tpg_kept(&k.0)
                    && self.cur.luns.get(*k).is_some_and(|c| {
                        lun_so(&c.storage_object) != lun_so(&d.storage_object)
                            || lun_so(&d.storage_object)
                                .is_some_and(|s| self.so_recreate.contains(&s))
                            || (d.alias.is_some() && d.alias != c.alias)
                    })
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn tpg_kept(&self, k: &GKey) -> bool {
        self.cur.tpgs.contains_key(k)
            && self.des.tpgs.contains_key(k)
            && !self.tpg_recreate.contains(k)
    }

    fn lun_kept(&self, k: &LKey) -> bool {
        self.tpg_kept(&k.0)
            && self.cur.luns.contains_key(k)
            && self.des.luns.contains_key(k)
            && !self.lun_recreate.contains(k)
    }

    fn acl_kept(&self, k: &AKey) -> bool {
        self.tpg_kept(&k.0) && self.cur.acls.contains_key(k) && self.des.acls.contains_key(k)
    }

    fn mlun_kept(&self, k: &MKey) -> bool {
        self.acl_kept(&k.0)
            && match (self.cur.mluns.get(k), self.des.mluns.get(k)) {
                (Some(c), Some(d)) => {
                    c.tpg_lun == d.tpg_lun
                        && !(d.alias.is_some() && d.alias != c.alias)
                        && self.lun_kept(&((k.0).0.clone(), d.tpg_lun))
                }
                _ => false,
            }
    }

    fn portal_kept(&self, k: &PKey) -> bool {
        self.tpg_kept(&k.0) && self.cur.portals.contains_key(k) && self.des.portals.contains_key(k)
    }

    /// TPGs that go away are disabled first, so initiators are logged out before
    /// their LUNs disappear.
    fn disable_removed_tpgs(&self, ops: &mut Vec<Op>) {
        for (k, g) in &self.cur.tpgs {
            if !self.tpg_kept(k) && g.enable != Some(false) && fabric_has_enable(&k.0) {
                ops.push(Op::SetTpgEnable {
                    tpg: tpg_ref(k),
                    enable: false,
                });
            }
        }
    }

    /// Deletes mapped LUNs, ACLs, LUNs, portals, TPGs and targets that do not stay.
    fn delete_removed_objects(&self, ops: &mut Vec<Op>) {
        let cur = &self.cur;
        let mluns = cur.mluns.keys().filter(|k| !self.mlun_kept(k));
        ops.extend(mluns.map(|k| Op::DeleteMappedLun(mref(k))));
        let acls = cur.acls.keys().filter(|k| !self.acl_kept(k));
        ops.extend(acls.map(|k| Op::DeleteAcl(aref(k))));
        let luns = cur.luns.keys().filter(|k| !self.lun_kept(k));
        ops.extend(luns.map(|k| Op::DeleteLun(lref(k))));
        let portals = cur.portals.keys().filter(|k| !self.portal_kept(k));
        ops.extend(portals.map(|k| Op::DeletePortal(pref(k))));
        let tpgs = cur.tpgs.keys().filter(|k| !self.tpg_kept(k));
        ops.extend(tpgs.map(|k| Op::DeleteTpg(tpg_ref(k))));
        let targets = cur.targets.keys();
        let gone = targets.filter(|k| !self.des.targets.contains_key(*k));
        ops.extend(gone.map(|k| Op::DeleteTarget(target_ref(k))));
    }

    /// ALUA groups of storage objects that stay: deletions go to `ops` now, the
    /// creations and setting changes are returned for after the storage objects.
    fn alua_group_ops(&self, ops: &mut Vec<Op>) -> Vec<Op> {
        let mut creates = Vec::new();
        for (k, d) in &self.des.sos {
            let (Some(c), false) = (self.cur.sos.get(k), self.so_recreate.contains(k)) else {
                continue;
            };
            let so = SoRef::new(k.0.clone(), k.1.clone());
            alua_diff(&so, c, d, ops, &mut creates);
        }
        creates
    }

    fn delete_storage_objects(&self, ops: &mut Vec<Op>) {
        for k in self.cur.sos.keys() {
            if !self.des.sos.contains_key(k) || self.so_recreate.contains(k) {
                ops.push(Op::DeleteStorageObject(SoRef::new(
                    k.0.clone(),
                    k.1.clone(),
                )));
            }
        }
    }

    /// Creates new or re-created storage objects; changes the attributes of the others.
    fn storage_object_ops(&self, ops: &mut Vec<Op>) {
        for (k, d) in &self.des.sos {
            if !self.cur.sos.contains_key(k) || self.so_recreate.contains(k) {
                ops.push(Op::CreateStorageObject(Box::new((*d).clone())));
            } else if let (Some(c), Some(dc)) =
                (self.cur.sos.get(k).and_then(|c| c.common()), d.common())
            {
                let owner = AttrOwner::StorageObject(SoRef::new(k.0.clone(), k.1.clone()));
                let mut want = dc.attributes.clone();
                if let Some(wb) = so_write_back(d) {
                    want.entry("emulate_write_cache".into())
                        .or_insert(ConfigValue::Int(i64::from(wb)));
                }
                settings_ops(&c.attributes, &want, attribute_step(&owner), ops);
            }
        }
    }

    /// Creates new targets; writes the target-level attributes and parameters
    /// (`<wwn>/attrib`, `<wwn>/param`) that differ, of new and kept targets alike.
    fn create_targets(&self, ops: &mut Vec<Op>) {
        let none = Settings::new();
        for (k, d) in &self.des.targets {
            let t = target_ref(k);
            let cur = self.cur.targets.get(k);
            if cur.is_none() {
                ops.push(Op::CreateTarget(t.clone()));
            }
            let (c_attr, c_param) = cur.map_or((&none, &none), |c| (&c.attributes, &c.parameters));
            let owner = AttrOwner::Target(t.clone());
            settings_ops(c_attr, &d.attributes, attribute_step(&owner), ops);
            let param = |name, value| Op::SetTargetParameter {
                target: t.clone(),
                name,
                value,
            };
            settings_ops(c_param, &d.parameters, param, ops);
        }
    }

    /// Creates TPGs; changes attributes, parameters and CHAP of the kept ones.
    fn tpg_ops(&self, ops: &mut Vec<Op>) {
        for (k, d) in &self.des.tpgs {
            let t = tpg_ref(k);
            if !self.tpg_kept(k) {
                ops.push(Op::CreateTpg {
                    tpg: t,
                    attributes: d.attributes.clone(),
                    parameters: d.parameters.clone(),
                    auth: d.auth.clone(),
                    nexus: d.nexus.clone(),
                });
                continue;
            }
            let c = self.cur.tpgs[k];
            let owner = AttrOwner::Tpg(t.clone());
            settings_ops(&c.attributes, &d.attributes, attribute_step(&owner), ops);
            let param = |name, value| Op::SetParameter {
                tpg: t.clone(),
                name,
                value,
            };
            settings_ops(&c.parameters, &d.parameters, param, ops);
            if fabric_has_auth(&k.0) {
                auth_diff(&AuthOwner::Tpg(t.clone()), &c.auth, &d.auth, ops);
            }
        }
    }

    /// Creates LUNs; moves kept ones to their ALUA group.
    fn lun_ops(&self, ops: &mut Vec<Op>) {
        for (k, d) in &self.des.luns {
            if !self.lun_kept(k) {
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
                if self.cur.luns[k].alua_tg_pt_gp_name.as_ref() != Some(g) {
                    ops.push(Op::SetLunAluaGroup {
                        lun: lref(k),
                        group: g.clone(),
                    });
                }
            }
        }
    }

    /// Creates ACLs; changes attributes, CHAP and tag of the kept ones.
    fn acl_ops(&self, ops: &mut Vec<Op>) {
        for (k, d) in &self.des.acls {
            let a = aref(k);
            if !self.acl_kept(k) {
                ops.push(Op::CreateAcl {
                    acl: a,
                    attributes: kernel_acl_attributes(&d.attributes),
                    auth: d.auth.clone(),
                    tag: d.tag.clone(),
                });
                continue;
            }
            let c = self.cur.acls[k];
            let owner = AttrOwner::Acl(a.clone());
            let want = kernel_acl_attributes(&d.attributes);
            settings_ops(&c.attributes, &want, attribute_step(&owner), ops);
            if fabric_has_auth(&(k.0).0) {
                auth_diff(&AuthOwner::Acl(a.clone()), &c.auth, &d.auth, ops);
            }
            if c.tag != d.tag {
                ops.push(Op::SetAclTag {
                    acl: a,
                    tag: d.tag.clone(),
                });
            }
        }
    }

    /// Creates mapped LUNs; changes write protection of the kept ones.
    fn mapped_lun_ops(&self, ops: &mut Vec<Op>) {
        for (k, d) in &self.des.mluns {
            let want = d.write_protect.unwrap_or(false);
            if !self.mlun_kept(k) {
                ops.push(Op::CreateMappedLun {
                    mlun: mref(k),
                    tpg_lun: d.tpg_lun,
                    write_protect: want,
                    alias: d.alias.clone(),
                });
            } else if self.cur.mluns[k].write_protect.unwrap_or(false) != want {
                ops.push(Op::SetWriteProtect {
                    mlun: mref(k),
                    on: want,
                });
            }
        }
    }

    /// Creates portals; changes the iSER and offload flags of the kept ones.
    fn portal_ops(&self, ops: &mut Vec<Op>) {
        for (k, d) in &self.des.portals {
            if !self.portal_kept(k) {
                ops.push(Op::CreatePortal {
                    portal: pref(k),
                    iser: d.iser.unwrap_or(false),
                    offload: d.offload.unwrap_or(false),
                });
                continue;
            }
            let c = self.cur.portals[k];
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

    /// Enables (or disables) TPGs last, once everything they export exists.
    fn tpg_enable_ops(&self, ops: &mut Vec<Op>) {
        for (k, d) in &self.des.tpgs {
            if !fabric_has_enable(&k.0) {
                continue;
            }
            let want = d.enable.unwrap_or(true);
            let have = self.tpg_kept(k) && self.cur.tpgs[k].enable.unwrap_or(true);
            if want != have {
                ops.push(Op::SetTpgEnable {
                    tpg: tpg_ref(k),
                    enable: want,
                });
            }
        }
    }
}

/// Makes `SetAttribute` steps for `owner`.
fn attribute_step(owner: &AttrOwner) -> impl Fn(String, ConfigValue) -> Op + '_ {
    move |name, value| Op::SetAttribute {
        owner: owner.clone(),
        name,
        value,
    }
}

/// A storage object's ALUA groups by name.
fn alua_groups(so: &StorageObject) -> BTreeMap<&str, &AluaTpg> {
    so.common()
        .map(|x| x.alua_tpgs.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|g| (g.name.as_str(), g))
        .collect()
}

/// ALUA group steps of one kept storage object: groups that go or change id are
/// deleted (`ops`), new ones created and settings changed (`creates`). The kernel's
/// `default_tg_pt_gp` is never deleted or created, only changed.
fn alua_diff(
    so: &SoRef,
    cur: &StorageObject,
    des: &StorageObject,
    ops: &mut Vec<Op>,
    creates: &mut Vec<Op>,
) {
    let cur_groups = alua_groups(cur);
    let des_groups = alua_groups(des);
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
                alua_settings_diff(&gref, Some(cg), dg, creates);
            }
            _ if *name == "default_tg_pt_gp" => {
                alua_settings_diff(&gref, None, dg, creates);
            }
            _ => creates.push(Op::CreateAluaGroup {
                so: so.clone(),
                group: (*dg).clone(),
            }),
        }
    }
}

/// Discovery authentication; only iSCSI has it (rtslib feature "discovery_auth").
fn discovery_ops(current: &SaveConfig, desired: &SaveConfig, ops: &mut Vec<Op>) {
    let fabric = "iscsi";
    let (ce, cc) = discovery(current, fabric);
    let (de, dc) = discovery(desired, fabric);
    let owner = AuthOwner::Discovery(fabric.to_owned());
    if ce && !de {
        ops.push(Op::SetDiscoveryEnforce {
            fabric: fabric.to_owned(),
            enable: false,
        });
    }
    // rtslib only dumps credentials when enforcement is on.
    if ce || de {
        auth_diff(&owner, &cc, &dc, ops);
    }
    if de && !ce {
        ops.push(Op::SetDiscoveryEnforce {
            fabric: fabric.to_owned(),
            enable: true,
        });
    }
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

    #[test]
    fn children_are_keyed_by_parent_and_own_key() {
        let a = vec![1u64, 2];
        let b = vec![7u64];
        let parents: BTreeMap<&str, &Vec<u64>> = [("a", &a), ("b", &b)].into_iter().collect();
        let idx = index_children(&parents, |p| p.as_slice(), |k, c| (k.to_string(), *c));
        let keys: Vec<(String, u64)> = idx.keys().cloned().collect();
        assert_eq!(
            keys,
            [("a".into(), 1), ("a".into(), 2), ("b".into(), 7)].to_vec()
        );
    }

    #[test]
    fn settings_steps_only_for_changed_text() {
        let cur: Settings = [
            ("a".to_owned(), ConfigValue::Int(1)),
            ("b".to_owned(), ConfigValue::Int(2)),
            ("s".to_owned(), ConfigValue::Str("1".into())),
        ]
        .into_iter()
        .collect();
        let des: Settings = [
            ("a".to_owned(), ConfigValue::Int(1)),
            ("b".to_owned(), ConfigValue::Int(3)),
            // Same configfs text as the integer 1: no step.
            ("s".to_owned(), ConfigValue::Int(1)),
            ("c".to_owned(), ConfigValue::Str("x".into())),
        ]
        .into_iter()
        .collect();
        let tpg = tpg_ref(&("iscsi".into(), T.into(), 1));
        let mut ops = Vec::new();
        let param = |name, value| Op::SetParameter {
            tpg: tpg.clone(),
            name,
            value,
        };
        settings_ops(&cur, &des, param, &mut ops);
        let names: Vec<String> = ops
            .iter()
            .map(|op| match op {
                Op::SetParameter { name, .. } => name.clone(),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn chap_only_where_the_fabric_has_auth() {
        // rtslib fabric features: iSCSI has "auth", loopback and vhost do not.
        assert!(fabric_has_auth("iscsi"));
        assert!(!fabric_has_auth("loopback"));
        assert!(!fabric_has_auth("vhost"));
        assert!(fabric_has_auth("no-such-fabric"));
    }

    #[test]
    fn alua_group_id_change_is_delete_then_create() {
        let so_with = |groups: &str| -> StorageObject {
            let c = cfg(&format!(
                r#"{{"storage_objects": [{{"plugin": "ramdisk", "name": "a", "size": 8192,
                     "alua_tpgs": [{groups}]}}]}}"#
            ));
            c.storage_objects[0].clone()
        };
        let cur = so_with(
            r#"{"name": "default_tg_pt_gp", "tg_pt_gp_id": 0}, {"name": "g", "tg_pt_gp_id": 5}"#,
        );
        let des = so_with(r#"{"name": "g", "tg_pt_gp_id": 6}"#);
        let so = SoRef::new(Plugin::Ramdisk, "a");
        let (mut ops, mut creates) = (Vec::new(), Vec::new());
        alua_diff(&so, &cur, &des, &mut ops, &mut creates);
        // default_tg_pt_gp belongs to the kernel: never deleted.
        assert_eq!(
            lines(&Plan { ops }),
            ["delete ALUA group /backstores/ramdisk/a/alua/g"]
        );
        assert_eq!(
            lines(&Plan { ops: creates }),
            ["create ALUA group /backstores/ramdisk/a/alua/g (tg_pt_gp_id=6)"]
        );
    }

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

    /// ACL attributes only `rustio serve` has (`tmr_warm_reset`, `tmr_cold_reset`) are no
    /// step of a kernel plan: LIO has no configfs file for them (a restore used to fail
    /// with ENOENT and roll back), new ACLs are created without them and a kept ACL is
    /// not "changed" by them on every apply.
    #[test]
    fn serve_only_acl_attributes_are_not_written_to_the_kernel() {
        let acl = |attrs: &str| {
            one_target(
                r#"{"index": 0, "storage_object": "/backstores/ramdisk/a"}"#,
                &format!(
                    r#"{{"node_wwn": "iqn.1993-08.org.debian:01:x", "attributes": {{{attrs}}}}}"#
                ),
                "",
            )
        };
        let des = acl(r#""tmr_warm_reset": 1, "tmr_cold_reset": 1, "dataout_timeout": 5"#);
        let created = diff_with_page_size(&SaveConfig::default(), &des, 4096);
        let attrs: Vec<_> = created
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::CreateAcl { attributes, .. } => {
                    Some(attributes.keys().cloned().collect::<Vec<_>>())
                }
                _ => None,
            })
            .collect();
        assert_eq!(attrs, vec![vec!["dataout_timeout".to_owned()]]);
        let cur = acl(r#""dataout_timeout": 5"#);
        assert!(diff_with_page_size(&cur, &des, 4096).is_empty());
        let tpg = format!("/iscsi/{T}/tpg1");
        assert_eq!(
            lines(&diff_with_page_size(
                &cur,
                &acl(r#""tmr_warm_reset": 1, "dataout_timeout": 6"#),
                4096
            )),
            vec![format!(
                "set attribute {tpg}/acls/iqn.1993-08.org.debian:01:x dataout_timeout=6"
            )]
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
