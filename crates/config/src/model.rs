//! The saveconfig.json data model (targetcli-fb / rtslib-fb `RTSRoot.dump()` format).
//!
//! Field names and shapes follow rtslib-fb's `dump()` methods (`root.py`, `tcm.py`,
//! `target.py`, `fabric.py`, `alua.py`). Every object keeps the keys it does not know in
//! an `extra` map, so a file written by a newer targetcli survives a load/save cycle
//! unchanged; [`crate::validate`] reports those keys as warnings.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::value::{flag, ConfigValue};

/// Keys unknown to this model, kept verbatim.
pub type Extra = Map<String, Value>;

/// An `attributes` or `parameters` map (configfs file name → value).
pub type Settings = BTreeMap<String, ConfigValue>;

/// Node ACL attributes that `rustio serve` honours but LIO's configfs has no file for:
/// `tmr_warm_reset` / `tmr_cold_reset` allow an initiator TARGET WARM / COLD RESET (the
/// kernel keeps these in `struct iscsi_node_attrib` without exposing them). A kernel
/// plan leaves them out, so a saveconfig written for `rustio serve` restores into LIO.
pub const SERVE_ONLY_ACL_ATTRIBUTES: [&str; 2] = ["tmr_warm_reset", "tmr_cold_reset"];

/// `attributes` of a node ACL without [`SERVE_ONLY_ACL_ATTRIBUTES`]: what the kernel has.
pub fn kernel_acl_attributes(attributes: &Settings) -> Settings {
    attributes
        .iter()
        .filter(|(k, _)| !SERVE_ONLY_ACL_ATTRIBUTES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The whole saved configuration: `{fabric_modules, storage_objects, targets}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SaveConfig {
    /// Fabric-wide settings (today only iSCSI discovery authentication).
    #[serde(default)]
    pub fabric_modules: Vec<FabricModule>,
    /// Backstores ("storage objects").
    #[serde(default)]
    pub storage_objects: Vec<StorageObject>,
    /// Targets with their TPGs, LUNs, portals and ACLs.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Unknown top-level keys.
    #[serde(flatten)]
    pub extra: Extra,
}

impl SaveConfig {
    /// Finds a storage object by plugin and name (plugin aliases `iblock`/`rd_mcp`
    /// are accepted).
    pub fn storage_object(&self, plugin: &str, name: &str) -> Option<&StorageObject> {
        let plugin = Plugin::from_name(plugin);
        self.storage_objects
            .iter()
            .find(|so| so.plugin() == plugin && so.name() == name)
    }

    /// Finds a storage object from a LUN's `/backstores/<plugin>/<name>` reference.
    pub fn storage_object_by_path(&self, path: &str) -> Option<&StorageObject> {
        let (plugin, name) = parse_backstore_path(path)?;
        self.storage_object(plugin, name)
    }

    /// Finds a target by fabric and WWN.
    pub fn target(&self, fabric: &str, wwn: &str) -> Option<&Target> {
        self.targets
            .iter()
            .find(|t| t.fabric == fabric && t.wwn == wwn)
    }
}

/// Splits `/backstores/<plugin>/<name>` into its parts (`None` when malformed).
pub fn parse_backstore_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/backstores/")?;
    let (plugin, name) = rest.split_once('/')?;
    if plugin.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((plugin, name))
}

/// Fabric-module settings, as dumped by rtslib when discovery authentication is on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FabricModule {
    /// Fabric name, e.g. `iscsi`.
    pub name: String,
    /// Whether SendTargets discovery requires CHAP (`discovery_auth/enforce_discovery_auth`).
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub discovery_enable_auth: Option<bool>,
    /// Discovery CHAP user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_userid: Option<String>,
    /// Discovery CHAP secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_password: Option<String>,
    /// Discovery mutual-CHAP user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_mutual_userid: Option<String>,
    /// Discovery mutual-CHAP secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_mutual_password: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Backstore plugin, as named in saveconfig.json (`plugin` key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plugin {
    /// File-backed (`fileio_N` HBA).
    Fileio,
    /// Block-device-backed (`iblock_N` HBA; `iblock` accepted as an alias).
    Block,
    /// RAM disk (`rd_mcp_N` HBA; `rd_mcp` accepted as an alias).
    Ramdisk,
    /// SCSI pass-through (`pscsi_N` HBA).
    Pscsi,
    /// TCMU userspace backstore (`user_N` HBA).
    User,
    /// A plugin this model does not know.
    Other(String),
}

impl Plugin {
    /// Parses a plugin name (saveconfig or configfs spelling).
    pub fn from_name(name: &str) -> Plugin {
        match name {
            "fileio" => Plugin::Fileio,
            "block" | "iblock" => Plugin::Block,
            "ramdisk" | "rd_mcp" => Plugin::Ramdisk,
            "pscsi" => Plugin::Pscsi,
            "user" => Plugin::User,
            other => Plugin::Other(other.to_owned()),
        }
    }

    /// The saveconfig.json / targetcli spelling (`/backstores/<this>/...`).
    pub fn as_str(&self) -> &str {
        match self {
            Plugin::Fileio => "fileio",
            Plugin::Block => "block",
            Plugin::Ramdisk => "ramdisk",
            Plugin::Pscsi => "pscsi",
            Plugin::User => "user",
            Plugin::Other(s) => s,
        }
    }

    /// The configfs HBA directory prefix (`core/<prefix>_<N>`).
    pub fn hba_prefix(&self) -> &str {
        match self {
            Plugin::Fileio => "fileio",
            Plugin::Block => "iblock",
            Plugin::Ramdisk => "rd_mcp",
            Plugin::Pscsi => "pscsi",
            Plugin::User => "user",
            Plugin::Other(s) => s,
        }
    }

    /// The plugins rustio can create.
    pub const KNOWN: [Plugin; 5] = [
        Plugin::Block,
        Plugin::Fileio,
        Plugin::Pscsi,
        Plugin::Ramdisk,
        Plugin::User,
    ];
}

impl std::fmt::Display for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backstore definition. The `plugin` key selects the variant.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageObject {
    /// `plugin: "fileio"`.
    Fileio(FileioObject),
    /// `plugin: "block"` (or `"iblock"`).
    Block(BlockObject),
    /// `plugin: "ramdisk"` (or `"rd_mcp"`).
    Ramdisk(RamdiskObject),
    /// `plugin: "pscsi"`.
    Pscsi(PscsiObject),
    /// `plugin: "user"`.
    User(UserObject),
    /// Any other plugin, kept verbatim (validation reports it).
    Other(OtherObject),
}

/// Fields shared by every backstore type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Common {
    /// Storage object name (configfs directory name).
    pub name: String,
    /// T10 VPD unit serial (`wwn/vpd_unit_serial`); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// `attrib/*` values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Settings,
    /// ALUA target port groups (`alua/*`); rtslib also dumps `default_tg_pt_gp`.
    #[serde(default)]
    pub alua_tpgs: Vec<AluaTpg>,
}

/// A file-backed storage object (FILEIO, SBC-4 direct-access device).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileioObject {
    /// Name, unit serial, attributes and ALUA groups.
    #[serde(flatten)]
    pub common: Common,
    /// Backing file or block device (`fd_dev_name`).
    pub dev: String,
    /// Size in bytes (`fd_dev_size`); required when `dev` is not a block device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Buffered I/O with write cache enabled (`fd_buffered_io=1` and
    /// `attrib/emulate_write_cache=1`).
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub write_back: Option<bool>,
    /// Asynchronous I/O (`fd_async_io=1`).
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub aio: Option<bool>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A block-device-backed storage object (IBLOCK).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockObject {
    /// Name, unit serial, attributes and ALUA groups.
    #[serde(flatten)]
    pub common: Common,
    /// Block device path (`udev_path`).
    pub dev: String,
    /// Export read-only (`readonly=1`).
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    /// Write cache enabled (`attrib/emulate_write_cache`).
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub write_back: Option<bool>,
    /// Exclusive open of the device (`exclusive=`, kernels ≥ 6.17).
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A RAM disk storage object (RD_MCP).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RamdiskObject {
    /// Name, unit serial, attributes and ALUA groups.
    #[serde(flatten)]
    pub common: Common,
    /// Size in bytes (rounded to whole pages, `rd_pages`).
    pub size: u64,
    /// No backing memory, reads return zeroes (`rd_nullio=1`).
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub nullio: Option<bool>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A SCSI pass-through storage object (PSCSI).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PscsiObject {
    /// Name, unit serial, attributes and ALUA groups.
    #[serde(flatten)]
    pub common: Common,
    /// SCSI device path, or `H:C:T:L`.
    pub dev: String,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A TCMU userspace storage object (`target_core_user`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserObject {
    /// Name, unit serial, attributes and ALUA groups.
    #[serde(flatten)]
    pub common: Common,
    /// `<handler>/<handler config>` (`dev_config`); `None` when the kernel shows `NULL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Size in bytes (`dev_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Maximum sectors per command exported to initiators (`hw_max_sectors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw_max_sectors: Option<u64>,
    /// Extra `key=value,...` tuples passed to the `control` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A storage object of a plugin this model does not know, kept verbatim.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtherObject {
    /// The `plugin` value.
    pub plugin: String,
    /// The other keys (including `name`).
    pub fields: Extra,
}

impl StorageObject {
    /// The common fields (`None` for an unknown plugin).
    pub fn common(&self) -> Option<&Common> {
        match self {
            StorageObject::Fileio(o) => Some(&o.common),
            StorageObject::Block(o) => Some(&o.common),
            StorageObject::Ramdisk(o) => Some(&o.common),
            StorageObject::Pscsi(o) => Some(&o.common),
            StorageObject::User(o) => Some(&o.common),
            StorageObject::Other(_) => None,
        }
    }

    /// Mutable common fields (`None` for an unknown plugin).
    pub fn common_mut(&mut self) -> Option<&mut Common> {
        match self {
            StorageObject::Fileio(o) => Some(&mut o.common),
            StorageObject::Block(o) => Some(&mut o.common),
            StorageObject::Ramdisk(o) => Some(&mut o.common),
            StorageObject::Pscsi(o) => Some(&mut o.common),
            StorageObject::User(o) => Some(&mut o.common),
            StorageObject::Other(_) => None,
        }
    }

    /// The plugin.
    pub fn plugin(&self) -> Plugin {
        match self {
            StorageObject::Fileio(_) => Plugin::Fileio,
            StorageObject::Block(_) => Plugin::Block,
            StorageObject::Ramdisk(_) => Plugin::Ramdisk,
            StorageObject::Pscsi(_) => Plugin::Pscsi,
            StorageObject::User(_) => Plugin::User,
            StorageObject::Other(o) => Plugin::Other(o.plugin.clone()),
        }
    }

    /// The storage object name (empty for an unknown plugin without a string `name`).
    pub fn name(&self) -> &str {
        match self {
            StorageObject::Other(o) => o.fields.get("name").and_then(Value::as_str).unwrap_or(""),
            _ => self.common().map(|c| c.name.as_str()).unwrap_or(""),
        }
    }

    /// The `/backstores/<plugin>/<name>` path LUNs use to reference this object.
    pub fn path(&self) -> String {
        format!("/backstores/{}/{}", self.plugin(), self.name())
    }

    /// The unit serial, when set.
    pub fn wwn(&self) -> Option<&str> {
        self.common().and_then(|c| c.wwn.as_deref())
    }

    /// The unknown keys of this object.
    pub fn extra(&self) -> &Extra {
        match self {
            StorageObject::Fileio(o) => &o.extra,
            StorageObject::Block(o) => &o.extra,
            StorageObject::Ramdisk(o) => &o.extra,
            StorageObject::Pscsi(o) => &o.extra,
            StorageObject::User(o) => &o.extra,
            StorageObject::Other(o) => &o.fields,
        }
    }

    /// The backing path (`dev`) for plugins that have one.
    pub fn dev(&self) -> Option<&str> {
        match self {
            StorageObject::Fileio(o) => Some(&o.dev),
            StorageObject::Block(o) => Some(&o.dev),
            StorageObject::Pscsi(o) => Some(&o.dev),
            _ => None,
        }
    }
}

impl Serialize for StorageObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (plugin, value) = match self {
            StorageObject::Fileio(o) => ("fileio", serde_json::to_value(o)),
            StorageObject::Block(o) => ("block", serde_json::to_value(o)),
            StorageObject::Ramdisk(o) => ("ramdisk", serde_json::to_value(o)),
            StorageObject::Pscsi(o) => ("pscsi", serde_json::to_value(o)),
            StorageObject::User(o) => ("user", serde_json::to_value(o)),
            StorageObject::Other(o) => {
                let mut m = o.fields.clone();
                m.insert("plugin".into(), Value::String(o.plugin.clone()));
                return m.serialize(s);
            }
        };
        let mut map = match value.map_err(S::Error::custom)? {
            Value::Object(m) => m,
            _ => {
                return Err(S::Error::custom(
                    "storage object did not serialize to a map",
                ))
            }
        };
        map.insert("plugin".into(), Value::String(plugin.into()));
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for StorageObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let plugin = match map.remove("plugin") {
            Some(Value::String(p)) => p,
            Some(other) => {
                return Err(D::Error::custom(format_args!(
                    "`plugin` must be a string, found {other}"
                )))
            }
            None => return Err(D::Error::missing_field("plugin")),
        };
        let rest = Value::Object(map);
        let so = match Plugin::from_name(&plugin) {
            Plugin::Fileio => StorageObject::Fileio(from_value(rest)?),
            Plugin::Block => StorageObject::Block(from_value(rest)?),
            Plugin::Ramdisk => StorageObject::Ramdisk(from_value(rest)?),
            Plugin::Pscsi => StorageObject::Pscsi(from_value(rest)?),
            Plugin::User => StorageObject::User(from_value(rest)?),
            Plugin::Other(p) => {
                let Value::Object(fields) = rest else {
                    return Err(D::Error::custom("storage object must be a JSON object"));
                };
                StorageObject::Other(OtherObject { plugin: p, fields })
            }
        };
        Ok(so)
    }
}

fn from_value<T: serde::de::DeserializeOwned, E: serde::de::Error>(v: Value) -> Result<T, E> {
    serde_json::from_value(v).map_err(E::custom)
}

/// An ALUA target port group of a storage object (`alua/<name>`, SPC-4 5.16).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AluaTpg {
    /// Group name; `default_tg_pt_gp` is created by the kernel.
    pub name: String,
    /// Target port group identifier (1-65535).
    pub tg_pt_gp_id: u64,
    /// Asymmetric access state (0 active/optimized, 1 active/non-optimized, 2 standby,
    /// 3 unavailable, 4 LBA dependent, 14 offline, 15 transitioning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_access_state: Option<u64>,
    /// Access status (0 none, 1 altered by explicit STPG, 2 altered by implicit ALUA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_access_status: Option<u64>,
    /// Write ALUA metadata to the dbroot (0/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_write_metadata: Option<u64>,
    /// Access type (0 none, 1 implicit, 2 explicit, 3 both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_access_type: Option<u64>,
    /// Preferred bit (0/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred: Option<u64>,
    /// Delay for non-optimized I/O, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonop_delay_msecs: Option<u64>,
    /// Delay for state transitions, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trans_delay_msecs: Option<u64>,
    /// Implicit transition time, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implicit_trans_secs: Option<u64>,
    /// Offline state supported (0/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_support_offline: Option<u64>,
    /// Standby state supported (0/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_support_standby: Option<u64>,
    /// Transitioning state supported (0/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_support_transitioning: Option<u64>,
    /// Active/non-optimized state supported (0/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_support_active_nonoptimized: Option<u64>,
    /// Unavailable state supported (0/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_support_unavailable: Option<u64>,
    /// Active/optimized state supported (0/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_support_active_optimized: Option<u64>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

impl AluaTpg {
    /// The read-write settings as `(configfs file name, value)` pairs, in the order
    /// rtslib writes them.
    pub fn settings(&self) -> Vec<(&'static str, Option<u64>)> {
        vec![
            ("alua_access_type", self.alua_access_type),
            ("alua_access_state", self.alua_access_state),
            ("alua_access_status", self.alua_access_status),
            ("alua_write_metadata", self.alua_write_metadata),
            ("preferred", self.preferred),
            ("nonop_delay_msecs", self.nonop_delay_msecs),
            ("trans_delay_msecs", self.trans_delay_msecs),
            ("implicit_trans_secs", self.implicit_trans_secs),
            ("alua_support_offline", self.alua_support_offline),
            ("alua_support_standby", self.alua_support_standby),
            (
                "alua_support_transitioning",
                self.alua_support_transitioning,
            ),
            (
                "alua_support_active_nonoptimized",
                self.alua_support_active_nonoptimized,
            ),
            ("alua_support_unavailable", self.alua_support_unavailable),
            (
                "alua_support_active_optimized",
                self.alua_support_active_optimized,
            ),
        ]
    }

    /// Sets one read-write setting by configfs file name; `false` for unknown names.
    pub fn set(&mut self, name: &str, value: Option<u64>) -> bool {
        let slot = match name {
            "alua_access_type" => &mut self.alua_access_type,
            "alua_access_state" => &mut self.alua_access_state,
            "alua_access_status" => &mut self.alua_access_status,
            "alua_write_metadata" => &mut self.alua_write_metadata,
            "preferred" => &mut self.preferred,
            "nonop_delay_msecs" => &mut self.nonop_delay_msecs,
            "trans_delay_msecs" => &mut self.trans_delay_msecs,
            "implicit_trans_secs" => &mut self.implicit_trans_secs,
            "alua_support_offline" => &mut self.alua_support_offline,
            "alua_support_standby" => &mut self.alua_support_standby,
            "alua_support_transitioning" => &mut self.alua_support_transitioning,
            "alua_support_active_nonoptimized" => &mut self.alua_support_active_nonoptimized,
            "alua_support_unavailable" => &mut self.alua_support_unavailable,
            "alua_support_active_optimized" => &mut self.alua_support_active_optimized,
            _ => return false,
        };
        *slot = value;
        true
    }
}

/// A target: a WWN on a fabric, with its TPGs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Target name: IQN/EUI/NAA for iSCSI, `naa.` for loopback and vhost.
    pub wwn: String,
    /// Fabric module name (`iscsi`, `loopback`, `vhost`, ...).
    pub fabric: String,
    /// `<wwn>/attrib/*` values (rtslib `CFSNode.dump`; no fabric has any in 6.1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Settings,
    /// `<wwn>/param/*` values, as text like rtslib: `cmd_completion_affinity`
    /// (kernel 5.14+, every fabric) is the one the kernel has today.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: Settings,
    /// Target portal groups.
    #[serde(default)]
    pub tpgs: Vec<Tpg>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// CHAP credentials as rtslib dumps them (`chap_*` keys, RFC 7143 12.1.3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chap {
    /// Initiator's CHAP user name (`auth/userid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_userid: Option<String>,
    /// Initiator's CHAP secret (`auth/password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_password: Option<String>,
    /// Target's user name for mutual CHAP (`auth/userid_mutual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_mutual_userid: Option<String>,
    /// Target's secret for mutual CHAP (`auth/password_mutual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_mutual_password: Option<String>,
}

impl Chap {
    /// True when no credential is set.
    pub fn is_empty(&self) -> bool {
        self.chap_userid.is_none()
            && self.chap_password.is_none()
            && self.chap_mutual_userid.is_none()
            && self.chap_mutual_password.is_none()
    }

    /// `(configfs auth file, value)` pairs.
    pub fn fields(&self) -> [(&'static str, &Option<String>); 4] {
        [
            ("userid", &self.chap_userid),
            ("password", &self.chap_password),
            ("userid_mutual", &self.chap_mutual_userid),
            ("password_mutual", &self.chap_mutual_password),
        ]
    }

    /// Sets one field by configfs auth file name (`userid`, `password`, `userid_mutual`,
    /// `password_mutual`) or saveconfig key (`mutual_userid`, ...); `false` if unknown.
    pub fn set(&mut self, name: &str, value: Option<String>) -> bool {
        let slot = match name {
            "userid" | "chap_userid" => &mut self.chap_userid,
            "password" | "chap_password" => &mut self.chap_password,
            "userid_mutual" | "mutual_userid" | "chap_mutual_userid" => {
                &mut self.chap_mutual_userid
            }
            "password_mutual" | "mutual_password" | "chap_mutual_password" => {
                &mut self.chap_mutual_password
            }
            _ => return false,
        };
        *slot = value;
        true
    }
}

/// A target portal group (`tpgt_<tag>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tpg {
    /// Target portal group tag (RFC 7143 13.9); the next free tag when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u64>,
    /// Whether the TPG accepts logins (default true).
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// `attrib/*` values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Settings,
    /// `param/*` values (iSCSI login keys, RFC 7143 13).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: Settings,
    /// Logical units.
    #[serde(default)]
    pub luns: Vec<Lun>,
    /// Network portals (iSCSI only).
    #[serde(default)]
    pub portals: Vec<Portal>,
    /// Initiator ACLs.
    #[serde(default)]
    pub node_acls: Vec<NodeAcl>,
    /// TPG-wide CHAP (used with `generate_node_acls=1`).
    #[serde(flatten)]
    pub auth: Chap,
    /// Initiator-side nexus WWN of loopback/vhost TPGs. rtslib's `TPG.dump` never
    /// writes it (a saved configuration has none and each restore generates a new
    /// one), but `TPG.setup` accepts the key; rustio uses it when a file has it and
    /// `rustio save` leaves it out like targetcli.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexus: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A TPG LUN (`lun/lun_<index>`) linking a storage object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lun {
    /// LUN number (0-65535, rtslib `MAX_TARGET_LUN`).
    pub index: u64,
    /// `/backstores/<plugin>/<name>`.
    pub storage_object: String,
    /// Name of the symlink to the storage object; random when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// ALUA target port group of this LUN's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_tg_pt_gp_name: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A network portal (`np/<ip>:<port>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Portal {
    /// IPv4 address, or IPv6 address in brackets (`[::0]`).
    pub ip_address: String,
    /// TCP port (1-65535, 3260 by default, RFC 7143 13.5).
    pub port: u64,
    /// iSER enabled on this portal.
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub iser: Option<bool>,
    /// Hardware offload (cxgbit) enabled.
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub offload: Option<bool>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Portal {
    /// The configfs directory name `<ip>:<port>`.
    pub fn dir_name(&self) -> String {
        format!("{}:{}", self.ip_address, self.port)
    }
}

/// An initiator ACL (`acls/<node_wwn>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeAcl {
    /// Initiator name.
    pub node_wwn: String,
    /// `attrib/*` values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Settings,
    /// LUNs this initiator sees.
    #[serde(default)]
    pub mapped_luns: Vec<MappedLun>,
    /// ACL group tag (rtslib NodeACLGroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Per-initiator CHAP.
    #[serde(flatten)]
    pub auth: Chap,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A mapped LUN (`acls/<wwn>/lun_<index>` linking a TPG LUN).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MappedLun {
    /// LUN number the initiator sees.
    pub index: u64,
    /// The TPG LUN index it maps.
    pub tpg_lun: u64,
    /// Read-only for this initiator.
    #[serde(default, with = "flag", skip_serializing_if = "Option::is_none")]
    pub write_protect: Option<bool>,
    /// Name of the symlink to the TPG LUN; random when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names() {
        assert_eq!(Plugin::from_name("iblock"), Plugin::Block);
        assert_eq!(Plugin::from_name("rd_mcp"), Plugin::Ramdisk);
        assert_eq!(Plugin::Block.hba_prefix(), "iblock");
        assert_eq!(Plugin::Ramdisk.hba_prefix(), "rd_mcp");
        assert_eq!(Plugin::Ramdisk.as_str(), "ramdisk");
        assert_eq!(Plugin::from_name("rbd"), Plugin::Other("rbd".into()));
    }

    #[test]
    fn backstore_path() {
        assert_eq!(
            parse_backstore_path("/backstores/fileio/disk1"),
            Some(("fileio", "disk1"))
        );
        assert_eq!(parse_backstore_path("/backstores/fileio/"), None);
        assert_eq!(parse_backstore_path("/backstores/fileio/a/b"), None);
        assert_eq!(parse_backstore_path("fileio/a"), None);
    }

    #[test]
    fn storage_object_plugin_dispatch() {
        let so: StorageObject = serde_json::from_str(
            r#"{"plugin":"rd_mcp","name":"r","size":4096,"nullio":true,"future":1}"#,
        )
        .unwrap();
        let StorageObject::Ramdisk(r) = &so else {
            panic!("wrong variant {so:?}")
        };
        assert_eq!(r.size, 4096);
        assert_eq!(r.nullio, Some(true));
        assert_eq!(r.extra.get("future"), Some(&Value::from(1)));
        let back = serde_json::to_value(&so).unwrap();
        assert_eq!(back["plugin"], "ramdisk");
        assert_eq!(back["future"], 1);

        let other: StorageObject =
            serde_json::from_str(r#"{"plugin":"rbd","name":"x","pool":"p"}"#).unwrap();
        assert_eq!(other.plugin(), Plugin::Other("rbd".into()));
        assert_eq!(other.name(), "x");
        assert_eq!(serde_json::to_value(&other).unwrap()["pool"], "p");

        let err = serde_json::from_str::<StorageObject>(r#"{"name":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("plugin"), "{err}");
        let err =
            serde_json::from_str::<StorageObject>(r#"{"plugin":"fileio","name":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("dev"), "{err}");
    }

    #[test]
    fn target_parameters_are_a_known_key_kept_as_text() {
        // rtslib 2.1.75 Target.dump = CFSNode.dump (node.py): `parameters` holds every
        // readable+writable file of <wwn>/param as text (get_parameter is fread), so a
        // 6.1 kernel's iSCSI target saves {"cmd_completion_affinity": "-1"}.
        let text = r#"{"wwn":"iqn.2003-01.org.example:t","fabric":"iscsi",
            "parameters":{"cmd_completion_affinity":"-1"},"tpgs":[]}"#;
        let t: Target = serde_json::from_str(text).unwrap();
        assert_eq!(
            t.parameters.get("cmd_completion_affinity"),
            Some(&ConfigValue::Str("-1".into()))
        );
        assert!(
            t.extra.is_empty(),
            "parameters is a model key: {:?}",
            t.extra
        );
        let back = serde_json::to_value(&t).unwrap();
        assert_eq!(back["parameters"]["cmd_completion_affinity"], "-1");
        // Empty maps are left out, like rtslib (`if params: d['parameters'] = params`).
        let bare: Target =
            serde_json::from_str(r#"{"wwn":"naa.5001405000000001","fabric":"loopback"}"#).unwrap();
        let v = serde_json::to_value(&bare).unwrap();
        assert!(
            v.get("parameters").is_none() && v.get("attributes").is_none(),
            "{v}"
        );
    }

    #[test]
    fn a_files_nexus_round_trips_through_the_model() {
        // rtslib's TPG.setup accepts a `nexus` key (setattr); the model keeps it so a
        // loaded file survives parse -> serialize unchanged. Only the configfs reader
        // (rustio save) leaves it out, as rtslib's TPG.dump does.
        let g: Tpg = serde_json::from_str(r#"{"tag":1,"nexus":"naa.5001405000000002"}"#).unwrap();
        assert_eq!(g.nexus.as_deref(), Some("naa.5001405000000002"));
        assert_eq!(
            serde_json::to_value(&g).unwrap()["nexus"],
            "naa.5001405000000002"
        );
    }

    #[test]
    fn flags_accept_ints() {
        let m: MappedLun =
            serde_json::from_str(r#"{"index":0,"tpg_lun":1,"write_protect":1}"#).unwrap();
        assert_eq!(m.write_protect, Some(true));
        assert!(
            serde_json::from_str::<MappedLun>(r#"{"index":0,"tpg_lun":1,"write_protect":2}"#)
                .is_err()
        );
    }
}
