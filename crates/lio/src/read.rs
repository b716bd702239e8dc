//! Reading the live configfs tree into the saveconfig model (plus live-only facts
//! such as status and sessions), the way rtslib's `dump()` does.

use std::collections::BTreeMap;
use std::path::Path;

use rustio_config::fabric::{fabric_info, FabricInfo};
use rustio_config::model::{Common, Settings};
use rustio_config::{
    AluaTpg, BlockObject, Chap, ConfigValue, FabricModule, FileioObject, Lun, MappedLun, NodeAcl,
    Plugin, Portal, PscsiObject, RamdiskObject, SaveConfig, StorageObject, Target, Tpg, UserObject,
};
use serde::Serialize;

use crate::addr::{AclRef, LunRef, MappedLunRef, SoRef, TargetRef, TpgRef};
use crate::error::Result;
use crate::lio::{Lio, FABRIC_NON_TARGETS};
use crate::sessions::{parse_acl_info, Session};

/// Everything `rustio ls` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveTree {
    /// Storage objects, sorted by plugin and name.
    pub storage_objects: Vec<LiveStorageObject>,
    /// Fabric modules whose configfs directory exists.
    pub fabrics: Vec<LiveFabric>,
}

/// A storage object as found in configfs.
#[derive(Debug, Clone, Serialize)]
pub struct LiveStorageObject {
    /// Its saveconfig form.
    pub config: StorageObject,
    /// HBA directory (`fileio_0`).
    pub hba: String,
    /// `activated` (exported by a LUN), `deactivated`, or `unconfigured` (not enabled).
    pub status: String,
    /// Size in bytes when known.
    pub size: Option<u64>,
    /// LUNs linking to it.
    pub users: Vec<String>,
}

/// A fabric module directory.
#[derive(Debug, Clone, Serialize)]
pub struct LiveFabric {
    /// Fabric name.
    pub name: String,
    /// Discovery authentication, for fabrics that have it.
    pub discovery: Option<Discovery>,
    /// Its targets, sorted by WWN.
    pub targets: Vec<LiveTarget>,
}

/// Discovery authentication settings (`discovery_auth/`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Discovery {
    /// `enforce_discovery_auth`.
    pub enforce: bool,
    /// Credentials.
    pub auth: Chap,
    /// Mutual authentication configured (`authenticate_target`).
    pub authenticate_target: bool,
}

/// A target.
#[derive(Debug, Clone, Serialize)]
pub struct LiveTarget {
    /// Target WWN.
    pub wwn: String,
    /// `<wwn>/attrib/*` (readable and writable files).
    pub attributes: Settings,
    /// `<wwn>/param/*` (readable and writable files, as text), e.g.
    /// `cmd_completion_affinity` on kernels 5.14+.
    pub parameters: Settings,
    /// Its TPGs, sorted by tag.
    pub tpgs: Vec<LiveTpg>,
}

/// A TPG with live-only facts.
#[derive(Debug, Clone, Serialize)]
pub struct LiveTpg {
    /// Its configuration, with the `nexus` of a loopback/vhost TPG (which the
    /// saveconfig form, [`LiveTree::to_config`], leaves out like rtslib).
    pub config: Tpg,
    /// Mutual CHAP configured on the TPG.
    pub authenticate_target: Option<bool>,
    /// Sessions of initiators without an explicit ACL (`dynamic_sessions`).
    pub dynamic_sessions: Vec<String>,
    /// Sessions of ACL'd initiators.
    pub sessions: Vec<Session>,
    /// Per-ACL `authenticate_target`.
    pub acl_mutual: BTreeMap<String, bool>,
    /// Broken LUN or mapped-LUN links found (not part of `config`).
    pub broken: Vec<String>,
}

/// Reads `key: value` from a configfs `info` text like rtslib's `_parse_info`: the
/// value after the last occurrence of `key: `, up to a space or colon.
pub fn info_value<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}: ");
    let mut found = None;
    let mut from = 0;
    while let Some(i) = info[from..].find(&needle) {
        let start = from + i;
        let ok = start == 0 || info[..start].ends_with(char::is_whitespace);
        if ok {
            found = Some(start + needle.len());
        }
        from = start + needle.len();
    }
    let rest = info[found?..].trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ':')
        .unwrap_or(rest.len());
    let v = &rest[..end];
    (!v.is_empty()).then_some(v)
}

fn parse_bool(s: Option<String>) -> Option<bool> {
    match s?.trim() {
        "1" | "Y" | "y" => Some(true),
        "0" | "N" | "n" => Some(false),
        _ => None,
    }
}

/// Words the kernel shows for `alua_access_type` 0-3.
pub(crate) const ALUA_TYPES: [&str; 4] = ["None", "Implicit", "Explicit", "Implicit and Explicit"];
/// Words the kernel shows for `alua_access_status` 0-2.
pub(crate) const ALUA_STATUSES: [&str; 3] = [
    "None",
    "Altered by Explicit STPG",
    "Altered by Implicit ALUA",
];

/// Converts an ALUA attribute's configfs text to its numeric value (type and status
/// are shown as words, SPC-4 6.37).
pub fn alua_value(name: &str, text: &str) -> Option<u64> {
    let t = text.trim();
    if let Ok(v) = t.parse() {
        return Some(v);
    }
    let table: &[&str] = match name {
        "alua_access_type" => &ALUA_TYPES,
        "alua_access_status" => &ALUA_STATUSES,
        _ => return None,
    };
    table
        .iter()
        .position(|w| *w == t)
        .and_then(|i| u64::try_from(i).ok())
}

fn is_null(s: &str) -> bool {
    s.is_empty() || s == "NULL"
}

/// What the plugin-specific part of a storage object is read from.
struct SoFacts<'a> {
    /// The `info` file's text.
    info: &'a str,
    /// `udev_path`, when set.
    udev: Option<String>,
    /// The writable attributes.
    attributes: &'a Settings,
}

/// Whether attribute `k` is `1`.
fn attr_flag(attributes: &Settings, k: &str) -> bool {
    attributes
        .get(k)
        .map(|v| v.to_configfs().trim() == "1")
        .unwrap_or(false)
}

/// A number from the `info` text.
fn info_num(info: &str, k: &str) -> Option<u64> {
    info_value(info, k).and_then(|v| v.parse::<u64>().ok())
}

fn fileio_from(f: &SoFacts<'_>, common: Common) -> (StorageObject, Option<u64>) {
    let size = info_num(f.info, "Size");
    let so = StorageObject::Fileio(FileioObject {
        dev: f
            .udev
            .clone()
            .or_else(|| info_value(f.info, "File").map(str::to_owned))
            .unwrap_or_default(),
        size,
        write_back: Some(attr_flag(f.attributes, "emulate_write_cache")),
        aio: Some(info_value(f.info, "Async") == Some("1")),
        common,
        extra: Default::default(),
    });
    (so, size)
}

fn block_from(f: &SoFacts<'_>, common: Common) -> (StorageObject, Option<u64>) {
    let size = info_value(f.info, "iBlock device").and_then(block_size_bytes);
    let so = StorageObject::Block(BlockObject {
        dev: f.udev.clone().unwrap_or_default(),
        readonly: Some(info_value(f.info, "readonly") == Some("1")),
        write_back: Some(attr_flag(f.attributes, "emulate_write_cache")),
        exclusive: info_value(f.info, "exclusive").map(|v| v == "1"),
        common,
        extra: Default::default(),
    });
    (so, size)
}

/// A RAM disk's size is pages times page size (`PAGES/PAGE_SIZE: <n>*<size>`).
fn ramdisk_from(f: &SoFacts<'_>, common: Common) -> (StorageObject, Option<u64>) {
    let pages = info_value(f.info, "PAGES/PAGE_SIZE").and_then(|v| {
        let (p, s) = v.split_once('*')?;
        p.parse::<u64>().ok()?.checked_mul(s.parse::<u64>().ok()?)
    });
    let so = StorageObject::Ramdisk(RamdiskObject {
        size: pages.unwrap_or(0),
        nullio: (info_value(f.info, "nullio") == Some("1")).then_some(true),
        common,
        extra: Default::default(),
    });
    (so, pages)
}

/// The group name in the first line of a LUN's `alua_tg_pt_gp`
/// ("TG Port Alias: <name>").
pub(crate) fn alua_group_of(text: &str) -> Option<String> {
    text.lines()
        .next()
        .and_then(|first| first.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// rtslib's `LUN.dump` writes `alua_tg_pt_gp_name` whatever the storage object
/// (target.py: `d['alua_tg_pt_gp_name'] = self.alua_tg_pt_gp_name`), `null` when
/// it has no ALUA (pscsi, or a passthrough-ALUA TCMU device): the model skips a
/// `None` field, so the `null` is kept in the LUN's `extra` map instead.
pub(crate) fn lun_group_extra(group: &Option<String>) -> rustio_config::model::Extra {
    let mut extra = rustio_config::model::Extra::new();
    if group.is_none() {
        extra.insert("alua_tg_pt_gp_name".into(), serde_json::Value::Null);
    }
    extra
}

/// The TPG LUN index a mapped LUN's link points at (`.../lun/lun_<N>`).
pub(crate) fn tpg_lun_of(target: &Path) -> Option<u64> {
    let name = target.file_name()?.to_string_lossy().into_owned();
    name.strip_prefix("lun_")?.parse::<u64>().ok()
}

/// The index in a `lun_<N>` directory name.
pub(crate) fn lun_index(name: &str) -> Option<u64> {
    name.strip_prefix("lun_")
        .and_then(|n| n.parse::<u64>().ok())
}

impl Lio {
    /// Reads a CHAP triple of files under `dir` (`userid`, `password`, `*_mutual`).
    pub(crate) fn read_chap(&self, dir: &Path) -> Chap {
        let get = |f: &str| self.read_trim(&dir.join(f)).filter(|v| !is_null(v));
        Chap {
            chap_userid: get("userid"),
            chap_password: get("password"),
            chap_mutual_userid: get("userid_mutual"),
            chap_mutual_password: get("password_mutual"),
        }
    }

    /// Reads every readable+writable file of `dir` as attributes (integers when they
    /// parse, else text).
    pub(crate) fn read_settings(&self, dir: &Path, as_text: bool) -> Result<Settings> {
        let mut out = Settings::new();
        for f in self.list_rw_files(dir)? {
            match self.backend_read(&dir.join(&f)) {
                Some(v) => {
                    let v = if as_text {
                        ConfigValue::Str(v.trim().to_owned())
                    } else {
                        ConfigValue::from_configfs(&v)
                    };
                    out.insert(f, v);
                }
                None => tracing::debug!(file = %dir.join(&f).display(), "unreadable, skipped"),
            }
        }
        Ok(out)
    }

    fn backend_read(&self, path: &Path) -> Option<String> {
        self.read(path).ok()
    }

    /// Whether the storage object at `dir` supports ALUA (rtslib's
    /// `storage_object_get_alua_support_attr` for pass-through plugins).
    pub(crate) fn alua_supported(&self, dir: &Path, plugin: &Plugin) -> bool {
        match self.read_trim(&dir.join("attrib/alua_support")) {
            Some(v) => v == "1",
            None => !matches!(plugin, Plugin::Pscsi | Plugin::User),
        }
    }

    /// Reads the ALUA groups of a storage object.
    pub(crate) fn read_alua(&self, dir: &Path) -> Result<Vec<AluaTpg>> {
        let mut out = Vec::new();
        for name in self.list_dirs(&dir.join("alua"))? {
            let g = dir.join("alua").join(&name);
            let mut tpg = AluaTpg {
                name: name.clone(),
                tg_pt_gp_id: self
                    .read_trim(&g.join("tg_pt_gp_id"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                ..AluaTpg::default()
            };
            let names: Vec<&'static str> = tpg.settings().into_iter().map(|(n, _)| n).collect();
            for n in names {
                let v = self.read_trim(&g.join(n)).and_then(|t| alua_value(n, &t));
                tpg.set(n, v);
            }
            out.push(tpg);
        }
        Ok(out)
    }

    /// Reads one storage object.
    pub(crate) fn read_storage_object(&self, hba: &str, so: &SoRef) -> Result<LiveStorageObject> {
        let dir = self.core_dir().join(hba).join(&so.name);
        let info = self.read_trim(&dir.join("info")).unwrap_or_default();
        let udev = self
            .read_trim(&dir.join("udev_path"))
            .filter(|s| !s.is_empty());
        let enabled = parse_bool(self.read_trim(&dir.join("enable"))).unwrap_or(true);
        let wwn = self
            .read_trim(&dir.join("wwn/vpd_unit_serial"))
            .map(|s| match s.split_once(':') {
                Some((_, v)) => v.trim().to_owned(),
                None => s,
            })
            .filter(|s| !s.is_empty());
        let attributes = self.read_settings(&dir.join("attrib"), false)?;
        let alua_tpgs = if self.alua_supported(&dir, &so.plugin) {
            self.read_alua(&dir)?
        } else {
            Vec::new()
        };
        let common = Common {
            name: so.name.clone(),
            wwn,
            attributes: attributes.clone(),
            alua_tpgs,
        };
        let facts = SoFacts {
            info: &info,
            udev,
            attributes: &attributes,
        };
        let (config, size) = match &so.plugin {
            Plugin::Fileio => fileio_from(&facts, common),
            Plugin::Block => block_from(&facts, common),
            Plugin::Ramdisk => ramdisk_from(&facts, common),
            Plugin::Pscsi => (
                StorageObject::Pscsi(PscsiObject {
                    dev: facts.udev.clone().unwrap_or_default(),
                    common: Common {
                        wwn: None,
                        ..common
                    },
                    extra: Default::default(),
                }),
                None,
            ),
            Plugin::User => self.user_from(&dir, &facts, common),
            Plugin::Other(p) => {
                return Err(crate::error::Error::Unexpected {
                    path: dir,
                    detail: format!("unknown backstore plugin {p:?}"),
                })
            }
        };
        let status = if !enabled {
            "unconfigured".to_owned()
        } else {
            info_value(&info, "Status")
                .map(str::to_ascii_lowercase)
                .unwrap_or_else(|| "unknown".to_owned())
        };
        Ok(LiveStorageObject {
            config,
            hba: hba.to_owned(),
            status,
            size,
            users: Vec::new(),
        })
    }

    /// A TCMU backstore: its `control` string is rebuilt from `info` like rtslib.
    fn user_from(
        &self,
        dir: &Path,
        f: &SoFacts<'_>,
        common: Common,
    ) -> (StorageObject, Option<u64>) {
        let size = info_num(f.info, "Size");
        let mut control = Vec::new();
        if let Some(v) = info_value(f.info, "MaxDataAreaMB").filter(|v| *v != "NULL") {
            control.push(format!("max_data_area_mb={v}"));
        }
        // attrib/hw_block_size is read-only for TCMU devices, so it is not in
        // `attributes` (writable ones only); rtslib reads the file itself.
        if let Some(v) = f
            .attributes
            .get("hw_block_size")
            .map(|v| v.to_configfs().trim().to_owned())
            .or_else(|| self.read_trim(&dir.join("attrib/hw_block_size")))
            .filter(|v| !v.is_empty() && v != "NULL")
        {
            control.push(format!("hw_block_size={v}"));
        }
        if let Some(v) = info_value(f.info, "DataPagesPerBlk").filter(|v| *v != "NULL") {
            let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                control.push(format!("data_pages_per_blk={digits}"));
            }
        }
        let so = StorageObject::User(UserObject {
            config: info_value(f.info, "Config")
                .filter(|v| *v != "NULL")
                .map(str::to_owned),
            size,
            hw_max_sectors: info_num(f.info, "HwMaxSectors"),
            control: (!control.is_empty()).then(|| control.join(",")),
            common,
            extra: Default::default(),
        });
        (so, size)
    }

    /// Reads every storage object.
    pub(crate) fn read_storage_objects(&self) -> Result<Vec<LiveStorageObject>> {
        let mut out = Vec::new();
        for hba in self.list_dirs(&self.core_dir())? {
            let Some((prefix, idx)) = hba.rsplit_once('_') else {
                continue;
            };
            if idx.parse::<u64>().is_err() {
                continue;
            }
            let plugin = Plugin::from_name(prefix);
            if let Plugin::Other(p) = &plugin {
                tracing::warn!(hba, plugin = p.as_str(), "unknown backstore plugin skipped");
                continue;
            }
            for name in self.list_dirs(&self.core_dir().join(&hba))? {
                let so = SoRef::new(plugin.clone(), name);
                out.push(self.read_storage_object(&hba, &so)?);
            }
        }
        out.sort_by(|a, b| {
            (
                a.config.plugin().as_str().to_owned(),
                a.config.name().to_owned(),
            )
                .cmp(&(
                    b.config.plugin().as_str().to_owned(),
                    b.config.name().to_owned(),
                ))
        });
        Ok(out)
    }

    /// Reads one TPG.
    pub(crate) fn read_tpg(&self, tpg: &TpgRef, info: &FabricInfo) -> Result<LiveTpg> {
        let dir = self.tpg_dir(tpg);
        let mut cfg = Tpg {
            tag: Some(tpg.tag),
            enable: Some(parse_bool(self.read_trim(&dir.join("enable"))).unwrap_or(true)),
            attributes: self.read_settings(&dir.join("attrib"), false)?,
            parameters: self.read_settings(&dir.join("param"), true)?,
            ..Tpg::default()
        };
        let mut live = LiveTpg {
            config: Tpg::default(),
            authenticate_target: None,
            dynamic_sessions: Vec::new(),
            sessions: Vec::new(),
            acl_mutual: BTreeMap::new(),
            broken: Vec::new(),
        };
        if info.auth {
            cfg.auth = self.read_chap(&dir.join("auth"));
            live.authenticate_target =
                parse_bool(self.read_trim(&dir.join("auth/authenticate_target")));
        }
        if info.nexus {
            cfg.nexus = self.read_trim(&dir.join("nexus")).filter(|s| !s.is_empty());
        }
        cfg.luns = self.read_tpg_luns(tpg, &dir, &mut live.broken)?;
        if info.nps {
            cfg.portals = self.read_portals(&dir)?;
        }
        if info.acls {
            for w in self.list_dirs(&dir.join("acls"))? {
                let acl_ref = AclRef {
                    tpg: tpg.clone(),
                    node_wwn: w,
                };
                cfg.node_acls
                    .push(self.read_acl(&acl_ref, info, &mut live)?);
            }
        }
        if let Some(d) = self.read_trim(&dir.join("dynamic_sessions")) {
            live.dynamic_sessions = d
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
        }
        cfg.luns.sort_by_key(|l| l.index);
        cfg.portals
            .sort_by(|a, b| (&a.ip_address, a.port).cmp(&(&b.ip_address, b.port)));
        cfg.node_acls.sort_by(|a, b| a.node_wwn.cmp(&b.node_wwn));
        live.config = cfg;
        Ok(live)
    }

    /// Reads a TPG's LUNs; a LUN without a storage-object link goes to `broken`.
    fn read_tpg_luns(
        &self,
        tpg: &TpgRef,
        dir: &Path,
        broken: &mut Vec<String>,
    ) -> Result<Vec<Lun>> {
        let mut out = Vec::new();
        for l in self.list_dirs(&dir.join("lun"))? {
            let Some(index) = lun_index(&l) else {
                continue;
            };
            let lun_ref = LunRef {
                tpg: tpg.clone(),
                index,
            };
            let ldir = dir.join("lun").join(&l);
            let target = self.links(&ldir)?.into_iter().find_map(|(alias, t)| {
                t.and_then(|t| self.so_from_core_path(&t))
                    .map(|(so, _)| (alias, so))
            });
            let Some((alias, so)) = target else {
                broken.push(format!("{lun_ref}: no link to a storage object"));
                continue;
            };
            let so_dir = self.find_so(&so)?.map(|(_, d)| d);
            let group = match so_dir {
                Some(d) if self.alua_supported(&d, &so.plugin) => self
                    .read_trim(&ldir.join("alua_tg_pt_gp"))
                    .and_then(|t| alua_group_of(&t))
                    .filter(|s| !s.is_empty()),
                _ => None,
            };
            out.push(Lun {
                index,
                storage_object: so.to_string(),
                alias: Some(alias),
                extra: lun_group_extra(&group),
                alua_tg_pt_gp_name: group,
            });
        }
        Ok(out)
    }

    /// Reads a TPG's network portals (`np/<ip>:<port>`).
    fn read_portals(&self, dir: &Path) -> Result<Vec<Portal>> {
        let mut out = Vec::new();
        for p in self.list_dirs(&dir.join("np"))? {
            let Some((ip, port)) = crate::addr::parse_portal(&p) else {
                continue;
            };
            let pdir = dir.join("np").join(&p);
            let flag = |f: &str| Some(parse_bool(self.read_trim(&pdir.join(f))).unwrap_or(false));
            out.push(Portal {
                ip_address: ip,
                port,
                iser: flag("iser"),
                offload: flag("cxgbit"),
                extra: Default::default(),
            });
        }
        Ok(out)
    }

    /// Reads one ACL; its session and mutual-auth state go to `live`.
    fn read_acl(&self, acl_ref: &AclRef, info: &FabricInfo, live: &mut LiveTpg) -> Result<NodeAcl> {
        let w = &acl_ref.node_wwn;
        let adir = self.acl_dir(acl_ref);
        let mut acl = NodeAcl {
            node_wwn: w.clone(),
            attributes: self.read_settings(&adir.join("attrib"), false)?,
            tag: self.read_trim(&adir.join("tag")).filter(|s| !is_null(s)),
            ..NodeAcl::default()
        };
        if info.auth {
            acl.auth = self.read_chap(&adir.join("auth"));
            if let Some(m) = parse_bool(self.read_trim(&adir.join("auth/authenticate_target"))) {
                live.acl_mutual.insert(w.clone(), m);
            }
        }
        acl.mapped_luns = self.read_mapped_luns(acl_ref, &adir, &mut live.broken)?;
        acl.mapped_luns.sort_by_key(|m| m.index);
        if let Some(text) = self.read_trim(&adir.join("info")) {
            if let Some(s) = parse_acl_info(&text) {
                live.sessions.push(s);
            }
        }
        Ok(acl)
    }

    /// Reads an ACL's mapped LUNs; one without a TPG LUN link goes to `broken`.
    fn read_mapped_luns(
        &self,
        acl_ref: &AclRef,
        adir: &Path,
        broken: &mut Vec<String>,
    ) -> Result<Vec<MappedLun>> {
        let mut out = Vec::new();
        for m in self.list_dirs(adir)? {
            let Some(index) = lun_index(&m) else {
                continue;
            };
            let mref = MappedLunRef {
                acl: acl_ref.clone(),
                index,
            };
            let mdir = adir.join(&m);
            let link = self
                .links(&mdir)?
                .into_iter()
                .find_map(|(alias, t)| Some((alias, tpg_lun_of(&t?)?)));
            let Some((alias, tpg_lun)) = link else {
                broken.push(format!("{mref}: no link to a TPG LUN"));
                continue;
            };
            out.push(MappedLun {
                index,
                tpg_lun,
                write_protect: Some(
                    parse_bool(self.read_trim(&mdir.join("write_protect"))).unwrap_or(false),
                ),
                alias: Some(alias),
                extra: Default::default(),
            });
        }
        Ok(out)
    }

    /// Reads the whole tree.
    pub fn live(&self) -> Result<LiveTree> {
        let mut storage_objects = self.read_storage_objects()?;
        let mut fabrics = Vec::new();
        for name in self.list_dirs(self.root())? {
            if name == "core" {
                continue;
            }
            let info = fabric_info(&name).copied().unwrap_or(FabricInfo {
                name: "unknown",
                kernel_modules: &[],
                wwn_types: &[],
                acls: true,
                auth: false,
                nps: false,
                tpgts: true,
                nexus: false,
                discovery_auth: false,
            });
            let fdir = self.fabric_dir(&name);
            let discovery = if info.discovery_auth && fdir.join("discovery_auth").is_dir() {
                let d = fdir.join("discovery_auth");
                Some(Discovery {
                    enforce: parse_bool(self.read_trim(&d.join("enforce_discovery_auth")))
                        .unwrap_or(false),
                    auth: self.read_chap(&d),
                    authenticate_target: parse_bool(self.read_trim(&d.join("authenticate_target")))
                        .unwrap_or(false),
                })
            } else {
                None
            };
            let mut targets = Vec::new();
            for wwn in self.list_dirs(&fdir)? {
                if FABRIC_NON_TARGETS.contains(&wwn.as_str()) {
                    continue;
                }
                let tref = TargetRef {
                    fabric: name.clone(),
                    wwn: wwn.clone(),
                };
                let mut tpgs = Vec::new();
                for t in self.list_dirs(&self.target_dir(&tref))? {
                    let Some(tag) = t.strip_prefix("tpgt_").and_then(|n| n.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    tpgs.push(self.read_tpg(
                        &TpgRef {
                            target: tref.clone(),
                            tag,
                        },
                        &info,
                    )?);
                }
                tpgs.sort_by_key(|t| t.config.tag);
                let tdir = self.target_dir(&tref);
                targets.push(LiveTarget {
                    wwn,
                    attributes: self.read_settings(&tdir.join("attrib"), false)?,
                    parameters: self.read_settings(&tdir.join("param"), true)?,
                    tpgs,
                });
            }
            fabrics.push(LiveFabric {
                name,
                discovery,
                targets,
            });
        }
        // Which LUNs use which storage object.
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in &fabrics {
            for t in &f.targets {
                for g in &t.tpgs {
                    for l in &g.config.luns {
                        let lref = LunRef {
                            tpg: TpgRef::new(&f.name, &t.wwn, g.config.tag.unwrap_or(0)),
                            index: l.index,
                        };
                        users
                            .entry(l.storage_object.clone())
                            .or_default()
                            .push(lref.to_string());
                    }
                }
            }
        }
        for so in &mut storage_objects {
            if let Some(u) = users.remove(&so.config.path()) {
                so.users = u;
            }
        }
        Ok(LiveTree {
            storage_objects,
            fabrics,
        })
    }

    /// The live configuration in saveconfig form (rtslib `RTSRoot.dump()`): what
    /// `rustio save` writes, key for key what targetcli saves.
    pub fn dump(&self) -> Result<SaveConfig> {
        Ok(self.live()?.to_config())
    }

    /// The live configuration with what the saveconfig form leaves out but a plan
    /// must know (the nexus of loopback/vhost TPGs), for diffs and undo.
    pub fn state(&self) -> Result<SaveConfig> {
        Ok(self.live()?.to_state())
    }

    /// LUNs linking to a storage object.
    pub(crate) fn so_users(&self, so: &SoRef) -> Result<Vec<LunRef>> {
        let mut out = Vec::new();
        for fabric in self.list_dirs(self.root())? {
            if fabric == "core" {
                continue;
            }
            for wwn in self.list_dirs(&self.fabric_dir(&fabric))? {
                if FABRIC_NON_TARGETS.contains(&wwn.as_str()) {
                    continue;
                }
                let tref = TargetRef {
                    fabric: fabric.clone(),
                    wwn,
                };
                for t in self.list_dirs(&self.target_dir(&tref))? {
                    let Some(tag) = t.strip_prefix("tpgt_").and_then(|n| n.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let tpg = TpgRef {
                        target: tref.clone(),
                        tag,
                    };
                    let ldir = self.tpg_dir(&tpg).join("lun");
                    for l in self.list_dirs(&ldir)? {
                        let Some(index) =
                            l.strip_prefix("lun_").and_then(|n| n.parse::<u64>().ok())
                        else {
                            continue;
                        };
                        for (_, target) in self.links(&ldir.join(&l))? {
                            if let Some((s, _)) = target.and_then(|t| self.so_from_core_path(&t)) {
                                if &s == so {
                                    out.push(LunRef {
                                        tpg: tpg.clone(),
                                        index,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Size of a block device from sysfs (`/sys/class/block/<name>/size` is in 512-byte
/// sectors whatever the logical block size).
fn block_size_bytes(name: &str) -> Option<u64> {
    let name = name.replace('/', "!");
    let text = std::fs::read_to_string(format!("/sys/class/block/{name}/size")).ok()?;
    text.trim().parse::<u64>().ok()?.checked_mul(512)
}

impl LiveTree {
    /// The saveconfig form of this tree, as rtslib's `RTSRoot.dump()` has it: like
    /// [`LiveTree::to_state`] without TPG nexus WWNs (rtslib's `TPG.dump` writes
    /// `tag`, `enable`, `luns`, `portals`, `node_acls`, `chap_*`, `attributes`,
    /// `parameters`; never `nexus`).
    pub fn to_config(&self) -> SaveConfig {
        let mut cfg = self.to_state();
        for g in cfg.targets.iter_mut().flat_map(|t| t.tpgs.iter_mut()) {
            g.nexus = None;
        }
        cfg
    }

    /// The whole configuration of this tree, TPG nexus WWNs included.
    pub fn to_state(&self) -> SaveConfig {
        let mut cfg = SaveConfig {
            storage_objects: self
                .storage_objects
                .iter()
                .map(|s| s.config.clone())
                .collect(),
            ..SaveConfig::default()
        };
        for f in &self.fabrics {
            if let Some(d) = &f.discovery {
                if d.enforce {
                    cfg.fabric_modules.push(FabricModule {
                        name: f.name.clone(),
                        discovery_enable_auth: Some(true),
                        discovery_userid: d.auth.chap_userid.clone(),
                        discovery_password: d.auth.chap_password.clone(),
                        discovery_mutual_userid: d.auth.chap_mutual_userid.clone(),
                        discovery_mutual_password: d.auth.chap_mutual_password.clone(),
                        extra: Default::default(),
                    });
                }
            }
            for t in &f.targets {
                cfg.targets.push(Target {
                    wwn: t.wwn.clone(),
                    fabric: f.name.clone(),
                    attributes: t.attributes.clone(),
                    parameters: t.parameters.clone(),
                    tpgs: t.tpgs.iter().map(|g| g.config.clone()).collect(),
                    extra: Default::default(),
                });
            }
        }
        cfg.targets
            .sort_by(|a, b| (&a.fabric, &a.wwn).cmp(&(&b.fabric, &b.wwn)));
        cfg
    }

    /// Finds a fabric.
    pub fn fabric(&self, name: &str) -> Option<&LiveFabric> {
        self.fabrics.iter().find(|f| f.name == name)
    }

    /// Finds a TPG.
    pub fn tpg(&self, t: &TpgRef) -> Option<&LiveTpg> {
        self.fabric(&t.target.fabric)?
            .targets
            .iter()
            .find(|x| x.wwn == t.target.wwn)?
            .tpgs
            .iter()
            .find(|g| g.config.tag == Some(t.tag))
    }

    /// Finds a storage object.
    pub fn storage_object(&self, so: &SoRef) -> Option<&LiveStorageObject> {
        self.storage_objects
            .iter()
            .find(|s| s.config.plugin() == so.plugin && s.config.name() == so.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alua_group_is_the_first_line_after_the_colon() {
        // The kernel's alua_tg_pt_gp shows "TG Port Alias: <name>" then the group id.
        let text = "TG Port Alias: fast\nTG Port Group ID: 7\n";
        assert_eq!(alua_group_of(text).as_deref(), Some("fast"));
        assert_eq!(alua_group_of("no colon here"), None);
        assert_eq!(alua_group_of(""), None);
    }

    #[test]
    fn a_lun_without_group_keeps_rtslibs_null() {
        // rtslib LUN.dump: d['alua_tg_pt_gp_name'] = self.alua_tg_pt_gp_name (None ->
        // null); a named group is the model field, nothing extra.
        let none = lun_group_extra(&None);
        assert_eq!(
            none.get("alua_tg_pt_gp_name"),
            Some(&serde_json::Value::Null)
        );
        assert!(lun_group_extra(&Some("default_tg_pt_gp".into())).is_empty());
    }

    #[test]
    fn mapped_lun_links_name_their_tpg_lun() {
        assert_eq!(
            tpg_lun_of(Path::new("target/iscsi/x/tpgt_1/lun/lun_12")),
            Some(12)
        );
        assert_eq!(tpg_lun_of(Path::new("lun/lun_x")), None);
        assert_eq!(tpg_lun_of(Path::new("core/fileio_0/disk")), None);
    }

    #[test]
    fn lun_directories_are_lun_underscore_index() {
        assert_eq!(lun_index("lun_0"), Some(0));
        assert_eq!(lun_index("lun_65535"), Some(65535));
        assert_eq!(lun_index("lun0"), None);
        assert_eq!(lun_index("info"), None);
    }

    #[test]
    fn info_values_like_rtslib() {
        let fileio = "Status: DEACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 16384\n        TCM FILEIO ID: 0        File: /tmp/d.img  Size: 1048576  Mode: O_DSYNC Async: 0\n";
        assert_eq!(info_value(fileio, "Status"), Some("DEACTIVATED"));
        assert_eq!(info_value(fileio, "File"), Some("/tmp/d.img"));
        assert_eq!(info_value(fileio, "Size"), Some("1048576"));
        assert_eq!(info_value(fileio, "Async"), Some("0"));
        assert_eq!(info_value(fileio, "HwMaxSectors"), Some("16384"));
        // "SectorSize: " must not match a lookup of "Size".
        assert_eq!(info_value("SectorSize: 512", "Size"), None);
        let rd = "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 1024\n        TCM RamDisk ID: 0  RamDisk Makeup: rd_mcp\n        PAGES/PAGE_SIZE: 256*4096  SG_table_count: 1  nullio: 0\n";
        assert_eq!(info_value(rd, "PAGES/PAGE_SIZE"), Some("256*4096"));
        assert_eq!(info_value(rd, "nullio"), Some("0"));
        let user =
            "Config: file/test_1 Size: 4096 MaxDataAreaMB: 8 DataPagesPerBlk: 4CmdRingSizeMB: 8\n";
        assert_eq!(info_value(user, "Config"), Some("file/test_1"));
        assert_eq!(info_value(user, "MaxDataAreaMB"), Some("8"));
        assert_eq!(info_value(user, "DataPagesPerBlk"), Some("4CmdRingSizeMB"));
        assert_eq!(info_value("", "Status"), None);
    }

    #[test]
    fn alua_words() {
        assert_eq!(
            alua_value("alua_access_type", "Implicit and Explicit"),
            Some(3)
        );
        assert_eq!(
            alua_value("alua_access_status", "Altered by Explicit STPG"),
            Some(1)
        );
        assert_eq!(alua_value("alua_access_state", "14"), Some(14));
        assert_eq!(alua_value("alua_access_state", "x"), None);
    }

    proptest::proptest! {
        #[test]
        fn info_value_never_panics(s in "\\PC{0,200}", k in "[A-Za-z/ ]{0,10}") {
            let _ = info_value(&s, &k);
        }
    }
}
