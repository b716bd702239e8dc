//! Semantic checks of a [`SaveConfig`], each naming the rule it enforces.
//!
//! Errors make a configuration unusable (the kernel or rtslib would reject it, or it
//! references something that does not exist); warnings are kept-but-suspicious input
//! such as unknown keys.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::fabric::{fabric_info, validate_fabric_wwn, FabricInfo};
use crate::model::{
    parse_backstore_path, AluaTpg, Chap, Extra, FabricModule, Lun, NodeAcl, Plugin, Portal,
    SaveConfig, Settings, StorageObject, Target, Tpg,
};
use crate::wwn::validate_unit_serial;

/// How bad an issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration cannot be applied.
    Error,
    /// Applied anyway, but worth a look.
    Warning,
}

/// The rule an issue breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A key this model does not know (kept, not applied).
    UnknownKey,
    /// Storage object name syntax.
    StorageObjectName,
    /// Storage object names are unique per plugin.
    DuplicateStorageObject,
    /// Plugin is not one rustio can create.
    UnknownPlugin,
    /// Backing path must be absolute (or H:C:T:L for pscsi).
    DevPath,
    /// Sizes must be positive.
    Size,
    /// Two storage objects use the same backing path.
    SharedDev,
    /// TCMU config string syntax.
    UserConfig,
    /// Unit serial syntax.
    UnitSerial,
    /// Attribute or parameter name syntax.
    SettingName,
    /// ALUA target port group constraints.
    AluaGroup,
    /// Fabric must be known.
    UnknownFabric,
    /// Target WWN must suit the fabric.
    TargetWwn,
    /// Targets are unique per fabric.
    DuplicateTarget,
    /// Fabric without `tpgts` has a single TPG.
    SingleTpg,
    /// TPG tag range.
    TpgTag,
    /// TPG tags are unique per target.
    DuplicateTpg,
    /// LUN index range.
    LunIndex,
    /// LUN indexes are unique per TPG.
    DuplicateLun,
    /// LUN must reference an existing storage object.
    LunStorageObject,
    /// LUN ALUA group must exist on its storage object.
    LunAluaGroup,
    /// Link names (aliases) syntax.
    Alias,
    /// Fabric does not have the feature used.
    FabricFeature,
    /// Portal address syntax.
    PortalAddress,
    /// Portal port range.
    PortalPort,
    /// Portals are unique per TPG.
    DuplicatePortal,
    /// Initiator name must suit the fabric.
    AclWwn,
    /// ACLs are unique per TPG.
    DuplicateAcl,
    /// Mapped LUN indexes are unique per ACL.
    DuplicateMappedLun,
    /// Mapped LUN must point to an existing TPG LUN.
    MappedLunTarget,
    /// CHAP value syntax.
    ChapValue,
    /// CHAP credentials come in pairs.
    ChapPair,
    /// CHAP secret length recommendation.
    ChapSecretLength,
    /// Nexus WWN syntax.
    Nexus,
}

impl Rule {
    /// One-line statement of the rule, with its source.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::UnknownKey => "keys unknown to rustio are kept verbatim but not applied",
            Rule::StorageObjectName => {
                "storage object names are 1-255 bytes without '/', whitespace, '.' or '..' (rtslib)"
            }
            Rule::DuplicateStorageObject => "storage object names must be unique per plugin",
            Rule::UnknownPlugin => {
                "plugin must be one of fileio, block, ramdisk, pscsi, user"
            }
            Rule::DevPath => {
                "dev must be an absolute path (pscsi also accepts H:C:T:L)"
            }
            Rule::Size => "sizes are positive byte counts",
            Rule::SharedDev => "two storage objects must not share a backing file or device",
            Rule::UserConfig => {
                "user backstores need config '<handler>/<cfgstring>' without ':' and a size (rtslib)"
            }
            Rule::UnitSerial => {
                "unit serials are 1-253 printable ASCII characters (SPC-4 7.8.16, kernel INQUIRY_VPD_SERIAL_LEN)"
            }
            Rule::SettingName => {
                "attribute and parameter names are configfs file names (non-empty, no '/')"
            }
            Rule::AluaGroup => {
                "ALUA groups: unique names, tg_pt_gp_id 1-65535 unique per storage object, \
                 states/types/status within SPC-4 6.37 ranges"
            }
            Rule::UnknownFabric => "fabric must be a LIO fabric module name (iscsi, loopback, vhost, ...)",
            Rule::TargetWwn => {
                "target names must suit the fabric (iSCSI: RFC 3720 3.2.6.3; loopback/vhost: naa, RFC 3980)"
            }
            Rule::DuplicateTarget => "target WWNs must be unique per fabric",
            Rule::SingleTpg => "this fabric supports a single TPG per target (no 'tpgts' feature)",
            Rule::TpgTag => "TPG tags are 16-bit, 0-65535 (RFC 7143 13.9)",
            Rule::DuplicateTpg => "TPG tags must be unique per target",
            Rule::LunIndex => "LUN indexes are 0-65535 (rtslib MAX_TARGET_LUN)",
            Rule::DuplicateLun => "LUN indexes must be unique per TPG",
            Rule::LunStorageObject => {
                "a LUN must reference an existing storage object as /backstores/<plugin>/<name>"
            }
            Rule::LunAluaGroup => "a LUN's alua_tg_pt_gp_name must be an ALUA group of its storage object",
            Rule::Alias => "link names (aliases) are non-empty without '/', '.' or '..'",
            Rule::FabricFeature => "the fabric does not support this object",
            Rule::PortalAddress => {
                "portal ip_address is IPv4 dotted-quad or an IPv6 address in brackets"
            }
            Rule::PortalPort => "portal ports are 1-65535 (RFC 7143 13.5 default 3260)",
            Rule::DuplicatePortal => "portals (ip:port) must be unique per TPG",
            Rule::AclWwn => "initiator names must suit the fabric (iSCSI: RFC 3720 3.2.6.3)",
            Rule::DuplicateAcl => "initiator ACLs must be unique per TPG",
            Rule::DuplicateMappedLun => "mapped LUN indexes must be unique per ACL",
            Rule::MappedLunTarget => "a mapped LUN's tpg_lun must be a LUN of the same TPG",
            Rule::ChapValue => {
                "CHAP values are 1-255 printable characters and not 'NULL' (rtslib, kernel)"
            }
            Rule::ChapPair => {
                "CHAP needs both userid and password; mutual CHAP needs one-way CHAP too (RFC 7143 12.1.3)"
            }
            Rule::ChapSecretLength => {
                "CHAP secrets should be at least 12 bytes (96 bits, RFC 7143 12.1.3)"
            }
            Rule::Nexus => "nexus is a naa. WWN (RFC 3980)",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Error or warning.
    pub severity: Severity,
    /// Where: `targets[0].tpgs[1].luns[2]`.
    pub path: String,
    /// The rule broken.
    pub rule: Rule,
    /// What exactly is wrong.
    pub detail: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let path = if self.path.is_empty() {
            "(top level)"
        } else {
            &self.path
        };
        write!(
            f,
            "{sev}: {path}: {} [rule: {}]",
            self.detail,
            self.rule.describe()
        )
    }
}

/// All findings of one validation run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Findings in document order.
    pub issues: Vec<Issue>,
}

impl Report {
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Issue> {
        self.issues
            .iter()
            .filter(|i| i.severity == Severity::Warning)
    }

    /// True when there is at least one error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// True when an issue with this rule was found.
    pub fn has_rule(&self, rule: Rule) -> bool {
        self.issues.iter().any(|i| i.rule == rule)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, i) in self.issues.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            write!(f, "{i}")?;
        }
        Ok(())
    }
}

struct Ctx {
    issues: Vec<Issue>,
}

impl Ctx {
    fn error(&mut self, path: &str, rule: Rule, detail: impl Into<String>) {
        self.issues.push(Issue {
            severity: Severity::Error,
            path: path.to_owned(),
            rule,
            detail: detail.into(),
        });
    }

    fn warn(&mut self, path: &str, rule: Rule, detail: impl Into<String>) {
        self.issues.push(Issue {
            severity: Severity::Warning,
            path: path.to_owned(),
            rule,
            detail: detail.into(),
        });
    }

    fn extra(&mut self, path: &str, extra: &Extra) {
        for k in extra.keys() {
            self.warn(
                path,
                Rule::UnknownKey,
                format!("unknown key \"{k}\" kept as-is"),
            );
        }
    }

    fn settings(&mut self, path: &str, what: &str, s: &Settings) {
        for k in s.keys() {
            if !is_file_name(k) {
                self.error(
                    path,
                    Rule::SettingName,
                    format!("{what} name {k:?} is not a file name"),
                );
            }
        }
    }
}

/// Whether `s` can be one component of a configfs path: non-empty, at most 255 bytes, no
/// '/' or NUL, not "." or "..".
pub(crate) fn is_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.contains('/')
        && !s.contains('\0')
        && s != "."
        && s != ".."
}

/// Checks a storage object name (also used by the CLI before creating one).
pub fn check_storage_object_name(name: &str) -> Result<(), String> {
    if !is_file_name(name) || name.chars().any(char::is_whitespace) {
        return Err(format!("storage object name {name:?} is not allowed"));
    }
    Ok(())
}

/// Checks a LUN / mapped-LUN link name.
pub fn check_alias(alias: &str) -> Result<(), String> {
    if !is_file_name(alias) {
        return Err(format!("alias {alias:?} is not a valid link name"));
    }
    Ok(())
}

/// Parses a portal address (`1.2.3.4` or `[::1]`); `Err` explains the problem.
pub fn check_portal_address(ip: &str) -> Result<(), String> {
    if let Some(inner) = ip.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("{ip:?} is not a bracketed IPv6 address"));
    }
    if ip.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if ip.parse::<Ipv6Addr>().is_ok() {
        return Err(format!(
            "IPv6 address {ip:?} must be written in brackets: [{ip}]"
        ));
    }
    Err(format!(
        "{ip:?} is not an IPv4 address or a bracketed IPv6 address"
    ))
}

/// Checks one CHAP value.
pub fn check_chap_value(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 255 {
        return Err(format!("value is {} bytes long", v.len()));
    }
    if v == "NULL" {
        return Err("'NULL' is reserved by the kernel to mean unset".to_owned());
    }
    if v.chars().any(|c| c.is_control()) {
        return Err("value contains a control character".to_owned());
    }
    Ok(())
}

fn check_chap(ctx: &mut Ctx, path: &str, chap: &Chap) {
    for (name, v) in chap.fields() {
        if let Some(v) = v {
            if let Err(e) = check_chap_value(v) {
                ctx.error(path, Rule::ChapValue, format!("{name}: {e}"));
            }
        }
    }
    let one = (chap.chap_userid.is_some(), chap.chap_password.is_some());
    let mutual = (
        chap.chap_mutual_userid.is_some(),
        chap.chap_mutual_password.is_some(),
    );
    if one.0 != one.1 {
        ctx.error(
            path,
            Rule::ChapPair,
            "chap_userid and chap_password must be set together",
        );
    }
    if mutual.0 != mutual.1 {
        ctx.error(
            path,
            Rule::ChapPair,
            "chap_mutual_userid and chap_mutual_password must be set together",
        );
    }
    if mutual.0 && !one.0 {
        ctx.error(
            path,
            Rule::ChapPair,
            "mutual CHAP is set without one-way CHAP",
        );
    }
    for (name, v) in [
        ("chap_password", &chap.chap_password),
        ("chap_mutual_password", &chap.chap_mutual_password),
    ] {
        if let Some(v) = v {
            if !v.is_empty() && v.len() < 12 {
                ctx.warn(
                    path,
                    Rule::ChapSecretLength,
                    format!("{name} is {} bytes", v.len()),
                );
            }
        }
    }
}

fn check_alua(ctx: &mut Ctx, path: &str, tpgs: &[AluaTpg]) {
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (i, g) in tpgs.iter().enumerate() {
        let p = format!("{path}.alua_tpgs[{i}]");
        ctx.extra(&p, &g.extra);
        if !is_file_name(&g.name) {
            ctx.error(
                &p,
                Rule::AluaGroup,
                format!("group name {:?} is not a directory name", g.name),
            );
        }
        if !names.insert(g.name.as_str()) {
            ctx.error(
                &p,
                Rule::AluaGroup,
                format!("group name {:?} appears twice", g.name),
            );
        }
        if g.name != "default_tg_pt_gp" {
            if !(1..=65535).contains(&g.tg_pt_gp_id) {
                ctx.error(
                    &p,
                    Rule::AluaGroup,
                    format!("tg_pt_gp_id {} is outside 1-65535", g.tg_pt_gp_id),
                );
            } else if !ids.insert(g.tg_pt_gp_id) {
                ctx.error(
                    &p,
                    Rule::AluaGroup,
                    format!("tg_pt_gp_id {} is used twice", g.tg_pt_gp_id),
                );
            }
        }
        if let Some(s) = g.alua_access_state {
            if !matches!(s, 0..=4 | 14 | 15) {
                ctx.error(
                    &p,
                    Rule::AluaGroup,
                    format!("alua_access_state {s} is not an SPC-4 state"),
                );
            }
        }
        if let Some(t) = g.alua_access_type {
            if t > 3 {
                ctx.error(
                    &p,
                    Rule::AluaGroup,
                    format!("alua_access_type {t} is outside 0-3"),
                );
            }
        }
        if let Some(t) = g.alua_access_status {
            if t > 2 {
                ctx.error(
                    &p,
                    Rule::AluaGroup,
                    format!("alua_access_status {t} is outside 0-2"),
                );
            }
        }
        for (name, v) in g.settings() {
            if name.starts_with("alua_support_")
                || name == "preferred"
                || name == "alua_write_metadata"
            {
                if let Some(v) = v {
                    if v > 1 {
                        ctx.error(
                            &p,
                            Rule::AluaGroup,
                            format!("{name} must be 0 or 1, found {v}"),
                        );
                    }
                }
            }
        }
    }
}

fn is_hctl(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn check_storage_object(ctx: &mut Ctx, path: &str, so: &StorageObject) {
    ctx.extra(path, so.extra());
    let common = match so {
        StorageObject::Other(o) => {
            ctx.error(
                path,
                Rule::UnknownPlugin,
                format!("plugin {:?} is not supported", o.plugin),
            );
            return;
        }
        _ => so.common().cloned().unwrap_or_default(),
    };
    if let Err(e) = check_storage_object_name(&common.name) {
        ctx.error(path, Rule::StorageObjectName, e);
    }
    if let Some(w) = &common.wwn {
        if let Err(e) = validate_unit_serial(w) {
            ctx.error(path, Rule::UnitSerial, e.detail);
        }
    }
    ctx.settings(path, "attribute", &common.attributes);
    check_alua(ctx, path, &common.alua_tpgs);
    match so {
        StorageObject::Fileio(f) => {
            if !f.dev.starts_with('/') {
                ctx.error(
                    path,
                    Rule::DevPath,
                    format!("dev {:?} is not an absolute path", f.dev),
                );
            }
            if f.size == Some(0) {
                ctx.error(path, Rule::Size, "size is 0");
            }
        }
        StorageObject::Block(b) => {
            if !b.dev.starts_with('/') {
                ctx.error(
                    path,
                    Rule::DevPath,
                    format!("dev {:?} is not an absolute path", b.dev),
                );
            }
        }
        StorageObject::Pscsi(p) => {
            if !p.dev.starts_with('/') && !is_hctl(&p.dev) {
                ctx.error(
                    path,
                    Rule::DevPath,
                    format!("dev {:?} is neither an absolute path nor H:C:T:L", p.dev),
                );
            }
        }
        StorageObject::Ramdisk(r) => {
            if r.size == 0 {
                ctx.error(path, Rule::Size, "size is 0");
            }
        }
        StorageObject::User(u) => {
            match &u.config {
                None => ctx.error(path, Rule::UserConfig, "config is missing"),
                Some(c) => {
                    match c.split_once('/') {
                        Some((h, _)) if !h.is_empty() => {}
                        _ => ctx.error(
                            path,
                            Rule::UserConfig,
                            format!("config {c:?} has no '<handler>/' prefix"),
                        ),
                    }
                    if c.contains(':') {
                        ctx.error(path, Rule::UserConfig, format!("config {c:?} contains ':'"));
                    }
                }
            }
            match u.size {
                None => ctx.error(path, Rule::UserConfig, "size is missing"),
                Some(0) => ctx.error(path, Rule::Size, "size is 0"),
                Some(_) => {}
            }
        }
        StorageObject::Other(_) => {}
    }
}

/// Storage objects by plugin and name, for resolving LUN references.
type SoIndex<'a> = BTreeMap<(Plugin, String), &'a StorageObject>;

/// Validates a whole configuration.
pub fn validate(cfg: &SaveConfig) -> Report {
    let mut ctx = Ctx { issues: Vec::new() };
    ctx.extra("", &cfg.extra);
    for (i, fm) in cfg.fabric_modules.iter().enumerate() {
        check_fabric_module(&mut ctx, &format!("fabric_modules[{i}]"), fm);
    }
    let so_index = check_storage_objects(&mut ctx, &cfg.storage_objects);
    let mut targets = BTreeSet::new();
    for (ti, t) in cfg.targets.iter().enumerate() {
        check_target(
            &mut ctx,
            &format!("targets[{ti}]"),
            t,
            &so_index,
            &mut targets,
        );
    }
    Report { issues: ctx.issues }
}

/// A fabric module: known, and discovery authentication only where the fabric has it.
fn check_fabric_module(ctx: &mut Ctx, p: &str, fm: &FabricModule) {
    ctx.extra(p, &fm.extra);
    match fabric_info(&fm.name) {
        None => ctx.error(
            p,
            Rule::UnknownFabric,
            format!("fabric {:?} is unknown", fm.name),
        ),
        Some(info) if !info.discovery_auth => {
            let has = fm.discovery_enable_auth == Some(true)
                || fm.discovery_userid.is_some()
                || fm.discovery_password.is_some();
            if has {
                ctx.error(
                    p,
                    Rule::FabricFeature,
                    format!("fabric {} has no discovery authentication", fm.name),
                );
            }
        }
        Some(_) => {
            let chap = Chap {
                chap_userid: fm.discovery_userid.clone(),
                chap_password: fm.discovery_password.clone(),
                chap_mutual_userid: fm.discovery_mutual_userid.clone(),
                chap_mutual_password: fm.discovery_mutual_password.clone(),
            };
            check_chap(ctx, p, &chap);
        }
    }
}

/// Storage objects: syntax, uniqueness per plugin, shared devices. Returns the index
/// LUNs are resolved against (the first of two objects with the same name wins).
fn check_storage_objects<'a>(ctx: &mut Ctx, sos: &'a [StorageObject]) -> SoIndex<'a> {
    let mut so_index = SoIndex::new();
    let mut devs: BTreeMap<&str, String> = BTreeMap::new();
    for (i, so) in sos.iter().enumerate() {
        let p = format!("storage_objects[{i}]");
        check_storage_object(ctx, &p, so);
        let key = (so.plugin(), so.name().to_owned());
        match so_index.entry(key) {
            std::collections::btree_map::Entry::Occupied(_) => ctx.error(
                &p,
                Rule::DuplicateStorageObject,
                format!("{} is defined twice", so.path()),
            ),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(so);
            }
        }
        if let Some(dev) = so.dev() {
            if let Some(other) = devs.get(dev) {
                ctx.error(
                    &p,
                    Rule::SharedDev,
                    format!("dev {dev} is also used by {other}"),
                );
            } else {
                devs.insert(dev, so.path());
            }
        }
    }
    so_index
}

/// A target: known fabric, valid and unique name (recorded in `seen`), TPG count and
/// unique tags, then each TPG.
fn check_target(
    ctx: &mut Ctx,
    tp: &str,
    t: &Target,
    so_index: &SoIndex<'_>,
    seen: &mut BTreeSet<(String, String)>,
) {
    ctx.extra(tp, &t.extra);
    ctx.settings(tp, "attribute", &t.attributes);
    ctx.settings(tp, "parameter", &t.parameters);
    let Some(info) = fabric_info(&t.fabric) else {
        ctx.error(
            tp,
            Rule::UnknownFabric,
            format!("fabric {:?} is unknown", t.fabric),
        );
        return;
    };
    if let Err(e) = validate_fabric_wwn(info, &t.wwn) {
        ctx.error(
            tp,
            Rule::TargetWwn,
            format!("{:?} is not a valid {} target name: {e}", t.wwn, info.name),
        );
    }
    if !seen.insert((t.fabric.clone(), t.wwn.clone())) {
        ctx.error(
            tp,
            Rule::DuplicateTarget,
            format!("{}/{} is defined twice", t.fabric, t.wwn),
        );
    }
    if !info.tpgts && t.tpgs.len() > 1 {
        ctx.error(
            tp,
            Rule::SingleTpg,
            format!("{} TPGs given for a {} target", t.tpgs.len(), info.name),
        );
    }
    let mut tags = BTreeSet::new();
    for (gi, tpg) in t.tpgs.iter().enumerate() {
        let gp = format!("{tp}.tpgs[{gi}]");
        check_tpg(ctx, &gp, info, tpg, so_index);
        if let Some(tag) = tpg.tag {
            if tag > 65535 {
                ctx.error(&gp, Rule::TpgTag, format!("tag {tag} is outside 0-65535"));
            } else if !tags.insert(tag) {
                ctx.error(&gp, Rule::DuplicateTpg, format!("tag {tag} is used twice"));
            }
        }
    }
}

/// A TPG: its settings, authentication and nexus as the fabric allows, then its LUNs,
/// portals and ACLs (whose mapped LUNs must name its LUNs).
fn check_tpg(ctx: &mut Ctx, gp: &str, info: &FabricInfo, tpg: &Tpg, so_index: &SoIndex<'_>) {
    ctx.extra(gp, &tpg.extra);
    ctx.settings(gp, "attribute", &tpg.attributes);
    ctx.settings(gp, "parameter", &tpg.parameters);
    check_auth(ctx, gp, info, &tpg.auth);
    if let Some(n) = &tpg.nexus {
        if !info.nexus {
            ctx.error(
                gp,
                Rule::FabricFeature,
                format!("fabric {} has no nexus", info.name),
            );
        } else if let Err(e) = crate::wwn::validate_naa(n) {
            ctx.error(gp, Rule::Nexus, e.detail);
        }
    }
    let mut luns = BTreeSet::new();
    for (li, lun) in tpg.luns.iter().enumerate() {
        check_lun(ctx, &format!("{gp}.luns[{li}]"), lun, so_index, &mut luns);
    }
    check_portals(ctx, gp, info, &tpg.portals);
    if !tpg.node_acls.is_empty() && !info.acls {
        ctx.error(
            gp,
            Rule::FabricFeature,
            format!("fabric {} has no initiator ACLs", info.name),
        );
    }
    let mut acls = BTreeSet::new();
    for (ai, acl) in tpg.node_acls.iter().enumerate() {
        let ap = format!("{gp}.node_acls[{ai}]");
        let duplicate = !acls.insert(acl.node_wwn.as_str());
        check_acl(ctx, &ap, info, acl, &luns, duplicate);
    }
}

/// CHAP credentials of a TPG or ACL, where the fabric has CHAP at all.
fn check_auth(ctx: &mut Ctx, path: &str, info: &FabricInfo, auth: &Chap) {
    if auth.is_empty() {
        return;
    }
    if info.auth {
        check_chap(ctx, path, auth);
    } else {
        ctx.error(
            path,
            Rule::FabricFeature,
            format!("fabric {} has no CHAP authentication", info.name),
        );
    }
}

/// A LUN: index in range and unique (recorded in `seen`), alias, and a storage object of
/// this configuration with the ALUA group it names.
fn check_lun(ctx: &mut Ctx, lp: &str, lun: &Lun, so_index: &SoIndex<'_>, seen: &mut BTreeSet<u64>) {
    ctx.extra(lp, &lun.extra);
    if lun.index > 65535 {
        ctx.error(
            lp,
            Rule::LunIndex,
            format!("index {} is outside 0-65535", lun.index),
        );
    }
    if !seen.insert(lun.index) {
        ctx.error(
            lp,
            Rule::DuplicateLun,
            format!("LUN {} is defined twice", lun.index),
        );
    }
    if let Some(a) = &lun.alias {
        if let Err(e) = check_alias(a) {
            ctx.error(lp, Rule::Alias, e);
        }
    }
    let so = parse_backstore_path(&lun.storage_object)
        .and_then(|(pl, name)| so_index.get(&(Plugin::from_name(pl), name.to_owned())));
    let Some(so) = so else {
        ctx.error(
            lp,
            Rule::LunStorageObject,
            format!(
                "storage_object {:?} names no storage object of this configuration",
                lun.storage_object
            ),
        );
        return;
    };
    if let (Some(group), Some(common)) = (&lun.alua_tg_pt_gp_name, so.common()) {
        let known =
            group == "default_tg_pt_gp" || common.alua_tpgs.iter().any(|g| &g.name == group);
        if !known {
            ctx.error(
                lp,
                Rule::LunAluaGroup,
                format!("ALUA group {group:?} is not defined on {}", so.path()),
            );
        }
    }
}

/// Network portals: only on fabrics that have them; address, port, no duplicates.
fn check_portals(ctx: &mut Ctx, gp: &str, info: &FabricInfo, portals: &[Portal]) {
    if !portals.is_empty() && !info.nps {
        ctx.error(
            gp,
            Rule::FabricFeature,
            format!("fabric {} has no network portals", info.name),
        );
    }
    let mut seen = BTreeSet::new();
    for (pi, portal) in portals.iter().enumerate() {
        let pp = format!("{gp}.portals[{pi}]");
        ctx.extra(&pp, &portal.extra);
        if let Err(e) = check_portal_address(&portal.ip_address) {
            ctx.error(&pp, Rule::PortalAddress, e);
        }
        if !(1..=65535).contains(&portal.port) {
            ctx.error(
                &pp,
                Rule::PortalPort,
                format!("port {} is outside 1-65535", portal.port),
            );
        }
        if !seen.insert((portal.ip_address.clone(), portal.port)) {
            ctx.error(
                &pp,
                Rule::DuplicatePortal,
                format!("{} is defined twice", portal.dir_name()),
            );
        }
    }
}

/// An initiator ACL (`duplicate`: its name was seen before in this TPG): valid name,
/// CHAP, and mapped LUNs that are unique and name LUNs of the TPG (`luns`).
fn check_acl(
    ctx: &mut Ctx,
    ap: &str,
    info: &FabricInfo,
    acl: &NodeAcl,
    luns: &BTreeSet<u64>,
    duplicate: bool,
) {
    ctx.extra(ap, &acl.extra);
    ctx.settings(ap, "attribute", &acl.attributes);
    if let Err(e) = validate_fabric_wwn(info, &acl.node_wwn) {
        ctx.error(
            ap,
            Rule::AclWwn,
            format!(
                "{:?} is not a valid {} initiator name: {e}",
                acl.node_wwn, info.name
            ),
        );
    }
    if duplicate {
        ctx.error(
            ap,
            Rule::DuplicateAcl,
            format!("ACL {} is defined twice", acl.node_wwn),
        );
    }
    check_auth(ctx, ap, info, &acl.auth);
    let mut mluns = BTreeSet::new();
    for (mi, m) in acl.mapped_luns.iter().enumerate() {
        let mp = format!("{ap}.mapped_luns[{mi}]");
        ctx.extra(&mp, &m.extra);
        if !mluns.insert(m.index) {
            ctx.error(
                &mp,
                Rule::DuplicateMappedLun,
                format!("mapped LUN {} is defined twice", m.index),
            );
        }
        if !luns.contains(&m.tpg_lun) {
            ctx.error(
                &mp,
                Rule::MappedLunTarget,
                format!("tpg_lun {} is not a LUN of this TPG", m.tpg_lun),
            );
        }
        if let Some(a) = &m.alias {
            if let Err(e) = check_alias(a) {
                ctx.error(&mp, Rule::Alias, e);
            }
        }
    }
}

/// Fills defaults the way rtslib's restore does: TPGs without a tag get the lowest
/// unused tag starting at 1.
pub fn fill_defaults(cfg: &mut SaveConfig) {
    for t in &mut cfg.targets {
        let mut used: BTreeSet<u64> = t.tpgs.iter().filter_map(|g| g.tag).collect();
        for g in &mut t.tpgs {
            if g.tag.is_none() {
                let mut tag = 1;
                while used.contains(&tag) {
                    tag += 1;
                }
                used.insert(tag);
                g.tag = Some(tag);
            }
        }
    }
}

/// Unknown keys anywhere in the configuration, as `(path, key)` pairs.
pub fn unknown_keys(cfg: &SaveConfig) -> Vec<(String, String)> {
    validate(cfg)
        .issues
        .into_iter()
        .filter(|i| i.rule == Rule::UnknownKey)
        .map(|i| {
            let key = i.detail.split('"').nth(1).unwrap_or_default().to_owned();
            (i.path, key)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::from_str;

    fn rules(text: &str) -> Vec<(String, Rule)> {
        let cfg = from_str(text).expect("parses");
        validate(&cfg)
            .errors()
            .map(|i| (i.path.clone(), i.rule))
            .collect()
    }

    const GOOD: &str = r#"{
      "fabric_modules": [],
      "storage_objects": [
        {"plugin": "fileio", "name": "disk1", "dev": "/tmp/disk1.img", "size": 1048576,
         "write_back": true, "wwn": "0b5a3b8e-5b1c-4c6e-9d0a-1f2e3d4c5b6a",
         "attributes": {"block_size": 512}, "alua_tpgs": []},
        {"plugin": "ramdisk", "name": "ram1", "size": 8388608}
      ],
      "targets": [{
        "fabric": "iscsi", "wwn": "iqn.2003-01.org.linux-iscsi.host.x8664:sn.0123456789ab",
        "tpgs": [{
          "tag": 1, "enable": true,
          "attributes": {"authentication": 0, "generate_node_acls": 0},
          "parameters": {"AuthMethod": "None"},
          "luns": [{"index": 0, "storage_object": "/backstores/fileio/disk1", "alias": "a1b2c3d4e5"},
                   {"index": 1, "storage_object": "/backstores/ramdisk/ram1"}],
          "portals": [{"ip_address": "0.0.0.0", "port": 3260}, {"ip_address": "[::1]", "port": 3261}],
          "node_acls": [{"node_wwn": "iqn.1993-08.org.debian:01:ef2e26bf3a9e",
                         "chap_userid": "user", "chap_password": "secretsecret12",
                         "mapped_luns": [{"index": 0, "tpg_lun": 0, "write_protect": false}]}]
        }]
      }]
    }"#;

    #[test]
    fn good_config_has_no_issues() {
        let cfg = from_str(GOOD).unwrap();
        let r = validate(&cfg);
        assert!(r.issues.is_empty(), "{r}");
    }

    #[test]
    fn each_rule_is_named() {
        let cases: Vec<(&str, &str, &str, Rule)> = vec![
            (
                r#""name": "disk1""#,
                r#""name": "disk 1""#,
                "storage_objects[0]",
                Rule::StorageObjectName,
            ),
            (
                r#"{"plugin": "ramdisk", "name": "ram1", "size": 8388608}"#,
                r#"{"plugin": "fileio", "name": "disk1", "dev": "/tmp/other", "size": 1}"#,
                "storage_objects[1]",
                Rule::DuplicateStorageObject,
            ),
            (
                r#""dev": "/tmp/disk1.img""#,
                r#""dev": "disk1.img""#,
                "storage_objects[0]",
                Rule::DevPath,
            ),
            (
                r#""size": 8388608"#,
                r#""size": 0"#,
                "storage_objects[1]",
                Rule::Size,
            ),
            (
                r#""wwn": "0b5a3b8e-5b1c-4c6e-9d0a-1f2e3d4c5b6a""#,
                r#""wwn": "bad serial""#,
                "storage_objects[0]",
                Rule::UnitSerial,
            ),
            (
                r#""fabric": "iscsi""#,
                r#""fabric": "fibre""#,
                "targets[0]",
                Rule::UnknownFabric,
            ),
            (
                r#""wwn": "iqn.2003-01.org.linux-iscsi.host.x8664:sn.0123456789ab""#,
                r#""wwn": "iqn.2003-01.org.Linux:x""#,
                "targets[0]",
                Rule::TargetWwn,
            ),
            (
                r#""storage_object": "/backstores/ramdisk/ram1""#,
                r#""storage_object": "/backstores/ramdisk/nope""#,
                "targets[0].tpgs[0].luns[1]",
                Rule::LunStorageObject,
            ),
            (
                r#"{"index": 1, "#,
                r#"{"index": 0, "#,
                "targets[0].tpgs[0].luns[1]",
                Rule::DuplicateLun,
            ),
            (
                r#"{"index": 1, "#,
                r#"{"index": 70000, "#,
                "targets[0].tpgs[0].luns[1]",
                Rule::LunIndex,
            ),
            (
                r#""port": 3261"#,
                r#""port": 70000"#,
                "targets[0].tpgs[0].portals[1]",
                Rule::PortalPort,
            ),
            (
                r#""ip_address": "[::1]""#,
                r#""ip_address": "::1""#,
                "targets[0].tpgs[0].portals[1]",
                Rule::PortalAddress,
            ),
            (
                r#""ip_address": "[::1]", "port": 3261"#,
                r#""ip_address": "0.0.0.0", "port": 3260"#,
                "targets[0].tpgs[0].portals[1]",
                Rule::DuplicatePortal,
            ),
            (
                r#""tpg_lun": 0"#,
                r#""tpg_lun": 5"#,
                "targets[0].tpgs[0].node_acls[0].mapped_luns[0]",
                Rule::MappedLunTarget,
            ),
            (
                r#""node_wwn": "iqn.1993-08.org.debian:01:ef2e26bf3a9e""#,
                r#""node_wwn": "initiator1""#,
                "targets[0].tpgs[0].node_acls[0]",
                Rule::AclWwn,
            ),
            (
                r#""chap_password": "secretsecret12","#,
                "",
                "targets[0].tpgs[0].node_acls[0]",
                Rule::ChapPair,
            ),
            (
                r#""chap_password": "secretsecret12""#,
                r#""chap_password": "NULL""#,
                "targets[0].tpgs[0].node_acls[0]",
                Rule::ChapValue,
            ),
            (
                r#""alias": "a1b2c3d4e5""#,
                r#""alias": "a/b""#,
                "targets[0].tpgs[0].luns[0]",
                Rule::Alias,
            ),
            (
                r#""alias": "a1b2c3d4e5""#,
                r#""alua_tg_pt_gp_name": "ghost""#,
                "targets[0].tpgs[0].luns[0]",
                Rule::LunAluaGroup,
            ),
        ];
        for (from, to, path, rule) in cases {
            assert!(GOOD.contains(from), "test setup: {from}");
            let text = GOOD.replacen(from, to, 1);
            let found = rules(&text);
            let hit = found
                .iter()
                .any(|(p, r)| *r == rule && (path.is_empty() || p == path));
            assert!(hit, "expected {rule:?} at {path:?}, got {found:?}");
        }
    }

    #[test]
    fn fabric_features() {
        let text = r#"{"targets":[{"fabric":"loopback","wwn":"naa.5001405123456789",
            "tpgs":[{"tag":1,"portals":[{"ip_address":"0.0.0.0","port":3260}],
                     "node_acls":[{"node_wwn":"naa.5001405123456780"}]},{"tag":2}]}]}"#;
        let found = rules(text);
        assert!(
            found.contains(&("targets[0]".into(), Rule::SingleTpg)),
            "{found:?}"
        );
        assert!(
            found.contains(&("targets[0].tpgs[0]".into(), Rule::FabricFeature)),
            "{found:?}"
        );
        let dup = r#"{"targets":[{"fabric":"iscsi","wwn":"iqn.2003-01.a.b:c","tpgs":[{"tag":1},{"tag":1}]},
                                 {"fabric":"iscsi","wwn":"iqn.2003-01.a.b:c"}]}"#;
        let found = rules(dup);
        assert!(
            found.contains(&("targets[0].tpgs[1]".into(), Rule::DuplicateTpg)),
            "{found:?}"
        );
        assert!(
            found.contains(&("targets[1]".into(), Rule::DuplicateTarget)),
            "{found:?}"
        );
    }

    #[test]
    fn unknown_keys_are_warnings() {
        let text = r#"{"zzz": 1, "storage_objects":[{"plugin":"ramdisk","name":"r","size":4096,"exists":true}],
                      "targets":[{"fabric":"iscsi","wwn":"iqn.2003-01.a.b:c","tpgs":[{"tag":1,"foo":{}}]}]}"#;
        let cfg = from_str(text).unwrap();
        let r = validate(&cfg);
        assert!(!r.has_errors(), "{r}");
        assert_eq!(
            unknown_keys(&cfg),
            vec![
                ("".to_owned(), "zzz".to_owned()),
                ("storage_objects[0]".to_owned(), "exists".to_owned()),
                ("targets[0].tpgs[0]".to_owned(), "foo".to_owned()),
            ]
        );
        let shown = r.to_string();
        assert!(
            shown.contains("warning: targets[0].tpgs[0]: unknown key \"foo\""),
            "{shown}"
        );
    }

    #[test]
    fn target_parameters_are_known_and_need_file_names() {
        // What targetcli saves for a 6.1 kernel's target (rtslib Target.dump): no
        // warning about an unknown key any more.
        let good = r#"{"targets":[{"fabric":"iscsi","wwn":"iqn.2003-01.a.b:c",
            "parameters":{"cmd_completion_affinity":"-1"},"tpgs":[]}]}"#;
        let cfg = from_str(good).unwrap();
        assert!(validate(&cfg).issues.is_empty(), "{}", validate(&cfg));
        let bad = r#"{"targets":[{"fabric":"iscsi","wwn":"iqn.2003-01.a.b:c",
            "parameters":{"../enable":"1"},"attributes":{"":1},"tpgs":[]}]}"#;
        let r = validate(&from_str(bad).unwrap());
        let names: Vec<_> = r
            .errors()
            .filter(|i| i.rule == Rule::SettingName)
            .map(|i| i.path.clone())
            .collect();
        assert_eq!(
            names,
            vec!["targets[0]".to_owned(), "targets[0]".to_owned()]
        );
    }

    #[test]
    fn unknown_plugin_is_an_error_but_kept() {
        let cfg = from_str(r#"{"storage_objects":[{"plugin":"rbd","name":"x"}]}"#).unwrap();
        assert!(validate(&cfg).has_rule(Rule::UnknownPlugin));
    }

    #[test]
    fn defaults_fill_tags() {
        let mut cfg = from_str(r#"{"targets":[{"fabric":"iscsi","wwn":"iqn.2003-01.a.b:c","tpgs":[{},{"tag":1},{}]}]}"#).unwrap();
        fill_defaults(&mut cfg);
        let tags: Vec<_> = cfg.targets[0].tpgs.iter().map(|g| g.tag).collect();
        assert_eq!(tags, vec![Some(2), Some(1), Some(3)]);
    }

    #[test]
    fn issues_come_in_document_order() {
        // One TPG breaking a rule in each of its parts: LUNs, then portals, then ACLs
        // and their mapped LUNs, then the TPG tag (checked after the TPG's contents).
        let text = r#"{"storage_objects":[{"plugin":"ramdisk","name":"r","size":4096}],
            "targets":[{"fabric":"iscsi","wwn":"iqn.2003-01.a.b:c","tpgs":[{"tag":70000,
              "luns":[{"index":0,"storage_object":"/backstores/ramdisk/r"},
                      {"index":0,"storage_object":"/backstores/ramdisk/r"}],
              "portals":[{"ip_address":"0.0.0.0","port":0}],
              "node_acls":[{"node_wwn":"iqn.1993-08.org.debian:01:x",
                            "mapped_luns":[{"index":0,"tpg_lun":5}]},
                           {"node_wwn":"iqn.1993-08.org.debian:01:x"}]}]},
              {"fabric":"iscsi","wwn":"iqn.2003-01.a.b:c","tpgs":[]}]}"#;
        let g = "targets[0].tpgs[0]";
        assert_eq!(
            rules(text),
            vec![
                (format!("{g}.luns[1]"), Rule::DuplicateLun),
                (format!("{g}.portals[0]"), Rule::PortalPort),
                (
                    format!("{g}.node_acls[0].mapped_luns[0]"),
                    Rule::MappedLunTarget
                ),
                (format!("{g}.node_acls[1]"), Rule::DuplicateAcl),
                (g.to_owned(), Rule::TpgTag),
                ("targets[1]".to_owned(), Rule::DuplicateTarget),
            ]
        );
    }
}
