//! Gateway groups: several `rustio serve` processes exporting the same RBD images as
//! one set of LUNs with several paths (issue #22; design in `docs/ceph.md`, "High
//! availability").
//!
//! The group is described once, in the saveconfig file every gateway reads, as the
//! rustio extension key `rustio_gateway_group`:
//!
//! ```json
//! "rustio_gateway_group": {
//!   "name": "ceph-gw",
//!   "non_owner_state": "standby",
//!   "takeover_debounce_secs": 5,
//!   "handover_timeout_secs": 3,
//!   "gateways": [
//!     {"name": "gw-a", "portals": ["192.0.2.1:3260"]},
//!     {"name": "gw-b", "portals": ["192.0.2.2:3260"], "port_group": 2}
//!   ]
//! }
//! ```
//!
//! `rustio serve --config F --gateway gw-b` serves gw-b's part: every iSCSI target of
//! the file (each with exactly one TPG, the template) gets one TPG whose tag is the
//! gateway's target port group id (`port_group`, default: its position in the list, 1
//! based), on the gateway's portals. The TPG tag is also the relative target port
//! identifier and the target port group of the iSCSI target port (RFC 7143 4.2.7.1:
//! the target port is target name + TPGT), so both are unique across the group and
//! VPD 0x83 names them. Every LUN must be an RBD `user` object; its identity (unit
//! serial, NAA) comes from the image ([`rustio_rbd::lock::ImageIdentity`]) and its
//! REPORT TARGET PORT GROUPS lists every gateway's group
//! ([`rustio_scsi::alua::GroupAlua`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use rustio_config::SaveConfig;
use rustio_scsi::alua::{
    AluaGroupConfig, GroupMember, DEFAULT_HANDOVER_TIMEOUT, DEFAULT_TAKEOVER_DEBOUNCE,
};
use rustio_scsi::{AluaState, TargetPortGroupId};
use serde_json::Value;

/// The saveconfig key of the group section.
pub const GROUP_KEY: &str = "rustio_gateway_group";

/// Longest takeover debounce accepted, in seconds.
pub const MAX_DEBOUNCE_SECS: u64 = 3600;

/// Accepted `handover_timeout_secs`: at least 1 s (a live owner needs a cluster round
/// trip and a flush of its writes in flight to hand the lock over), at most 20 s (a
/// command waiting for a synchronous takeover waits this plus 5 s and must stay well
/// below initiators' command timeouts, Linux 30 s).
pub const HANDOVER_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=20;

/// A gateway group configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// `--gateway` was given but the file has no group section.
    #[error("--gateway {0}: the configuration has no \"{GROUP_KEY}\" section")]
    NoGroup(String),
    /// The file defines a group but no `--gateway` says which member this is.
    #[error("the configuration defines gateway group {0:?}: pass --gateway NAME (one of {1})")]
    GatewayNotGiven(String, String),
    /// `--gateway` names no member.
    #[error("gateway {name:?} is not a member of group {group:?} (members: {members})")]
    UnknownGateway {
        /// The name given.
        name: String,
        /// The group.
        group: String,
        /// The members' names.
        members: String,
    },
    /// The section is malformed.
    #[error("{GROUP_KEY}: {0}")]
    Invalid(String),
    /// A target of a group configuration does not have exactly one TPG.
    #[error("{iqn}: a gateway group target needs exactly one TPG (the template every gateway serves), found {count}")]
    TpgCount {
        /// The target.
        iqn: String,
        /// Its TPG count.
        count: usize,
    },
    /// A LUN of the group is not an RBD image.
    #[error("storage object {0}: a gateway group serves only RBD images (user objects with config rbd/<pool>/<image>)")]
    NotRbd(String),
    /// Opening an image failed.
    #[error("storage object {name}")]
    Open {
        /// The storage object.
        name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The rest of the configuration.
    #[error(transparent)]
    Config(#[from] crate::Error),
}

impl From<crate::ConfigError> for GroupError {
    fn from(e: crate::ConfigError) -> GroupError {
        GroupError::Config(e.into())
    }
}

/// One gateway of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Its name (`--gateway`).
    pub name: String,
    /// Its portals.
    pub portals: Vec<SocketAddr>,
    /// Its target port group id = iSCSI TPG tag = relative target port identifier.
    pub port_group: u16,
}

/// The group section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayGroup {
    /// The group's name (logs).
    pub name: String,
    /// Its gateways, in the order RTPG lists them; the first is preferred (PREF).
    pub gateways: Vec<Gateway>,
    /// The ALUA state of gateways that do not own an image.
    pub non_owner: AluaState,
    /// Least time between two takeovers of one image by one gateway.
    pub debounce: Duration,
    /// How long a takeover waits for the owner to hand the lock over before breaking it.
    pub handover_timeout: Duration,
}

fn invalid<T>(m: impl Into<String>) -> Result<T, GroupError> {
    Err(GroupError::Invalid(m.into()))
}

/// Names, target port groups and portals already used by earlier gateways of the list.
#[derive(Default)]
struct Seen {
    names: BTreeSet<String>,
    ids: BTreeSet<u16>,
    addrs: BTreeSet<SocketAddr>,
}

/// Gateway `i` (0-based position) of the `gateways` list.
fn gateway_from_json(i: usize, g: &Value, seen: &mut Seen) -> Result<Gateway, GroupError> {
    let Some(g) = g.as_object() else {
        return invalid(format!("gateway {} must be an object", i + 1));
    };
    let gname = match g.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return invalid(format!("gateway {} needs a \"name\"", i + 1)),
    };
    for k in g.keys() {
        if !matches!(k.as_str(), "name" | "portals" | "port_group") {
            return invalid(format!("gateway {gname}: unknown key {k:?}"));
        }
    }
    if !seen.names.insert(gname.clone()) {
        return invalid(format!("gateway name {gname:?} used twice"));
    }
    // Derived from the position so every gateway computes the same ids.
    let default_id = u64::try_from(i).ok().and_then(|i| i.checked_add(1));
    let id = match g.get("port_group") {
        None => default_id,
        Some(v) => v.as_u64(),
    };
    let port_group = match id.and_then(|v| u16::try_from(v).ok()) {
        Some(v) if v != 0 => v,
        _ => return invalid(format!("gateway {gname}: \"port_group\" must be 1..=65535")),
    };
    if !seen.ids.insert(port_group) {
        return invalid(format!(
            "gateway {gname}: target port group {port_group} used twice"
        ));
    }
    let Some(pl) = g.get("portals").and_then(Value::as_array) else {
        return invalid(format!("gateway {gname}: \"portals\" must be a list"));
    };
    if pl.is_empty() {
        return invalid(format!("gateway {gname}: no portals"));
    }
    let mut portals = Vec::with_capacity(pl.len());
    for p in pl {
        let Some(addr) = p.as_str().and_then(|s| s.parse::<SocketAddr>().ok()) else {
            return invalid(format!(
                "gateway {gname}: portal {p} is not ADDR:PORT ([v6]:PORT)"
            ));
        };
        if !seen.addrs.insert(addr) {
            return invalid(format!("gateway {gname}: portal {addr} used twice"));
        }
        portals.push(addr);
    }
    Ok(Gateway {
        name: gname,
        portals,
        port_group,
    })
}

impl GatewayGroup {
    /// Reads the group section of `model`, if any.
    pub fn from_model(model: &SaveConfig) -> Result<Option<GatewayGroup>, GroupError> {
        model.extra.get(GROUP_KEY).map(Self::from_json).transpose()
    }

    /// Parses and validates the section's JSON value.
    pub fn from_json(v: &Value) -> Result<GatewayGroup, GroupError> {
        let Some(o) = v.as_object() else {
            return invalid("must be an object");
        };
        for k in o.keys() {
            if !matches!(
                k.as_str(),
                "name"
                    | "gateways"
                    | "non_owner_state"
                    | "takeover_debounce_secs"
                    | "handover_timeout_secs"
            ) {
                return invalid(format!("unknown key {k:?}"));
            }
        }
        let name = match o.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return invalid("\"name\" must be a non-empty string"),
        };
        let non_owner = match o.get("non_owner_state").map(Value::as_str) {
            None | Some(Some("standby")) => AluaState::Standby,
            Some(Some("active_non_optimized")) => AluaState::ActiveNonOptimized,
            _ => {
                return invalid(
                    "\"non_owner_state\" must be \"standby\" or \"active_non_optimized\"",
                )
            }
        };
        let debounce = match o.get("takeover_debounce_secs") {
            None => DEFAULT_TAKEOVER_DEBOUNCE,
            Some(v) => match v.as_u64() {
                Some(s) if s <= MAX_DEBOUNCE_SECS => Duration::from_secs(s),
                _ => {
                    return invalid(format!(
                        "\"takeover_debounce_secs\" must be 0..={MAX_DEBOUNCE_SECS}"
                    ))
                }
            },
        };
        let handover_timeout = match o.get("handover_timeout_secs") {
            None => DEFAULT_HANDOVER_TIMEOUT,
            Some(v) => match v.as_u64() {
                Some(s) if HANDOVER_TIMEOUT_SECS.contains(&s) => Duration::from_secs(s),
                _ => {
                    return invalid(format!(
                        "\"handover_timeout_secs\" must be {}..={}",
                        HANDOVER_TIMEOUT_SECS.start(),
                        HANDOVER_TIMEOUT_SECS.end()
                    ))
                }
            },
        };
        let Some(list) = o.get("gateways").and_then(Value::as_array) else {
            return invalid("\"gateways\" must be a list");
        };
        if list.is_empty() {
            return invalid("\"gateways\" is empty");
        }
        let mut seen = Seen::default();
        let gateways = list
            .iter()
            .enumerate()
            .map(|(i, g)| gateway_from_json(i, g, &mut seen))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GatewayGroup {
            name,
            gateways,
            non_owner,
            debounce,
            handover_timeout,
        })
    }

    /// The member called `name`.
    pub fn gateway(&self, name: &str) -> Result<&Gateway, GroupError> {
        self.gateways
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| GroupError::UnknownGateway {
                name: name.to_string(),
                group: self.name.clone(),
                members: self.member_names(),
            })
    }

    fn member_names(&self) -> String {
        self.gateways
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The ALUA configuration of a LUN served by `gw`: every gateway's group with its
    /// one port, the first preferred.
    pub fn alua_config(&self, gw: &Gateway) -> AluaGroupConfig {
        AluaGroupConfig {
            local: TargetPortGroupId(gw.port_group),
            members: self
                .gateways
                .iter()
                .enumerate()
                .map(|(i, g)| GroupMember {
                    id: TargetPortGroupId(g.port_group),
                    ports: vec![g.port_group],
                    preferred: i == 0,
                })
                .collect(),
            non_owner: self.non_owner,
            debounce: self.debounce,
            handover_timeout: self.handover_timeout,
        }
    }

    /// Checks that `model` can be served by the group: each iSCSI target has exactly
    /// one TPG and every LUN is an RBD image.
    pub fn check_model(&self, model: &SaveConfig) -> Result<(), GroupError> {
        for t in model.targets.iter().filter(|t| t.fabric == "iscsi") {
            if t.tpgs.len() != 1 {
                return Err(GroupError::TpgCount {
                    iqn: t.wwn.clone(),
                    count: t.tpgs.len(),
                });
            }
            for l in t.tpgs.iter().flat_map(|tpg| &tpg.luns) {
                if let Some(so) = model.storage_object_by_path(&l.storage_object) {
                    rbd_config(so)?;
                }
            }
        }
        Ok(())
    }
}

/// The `rbd/<pool>/<image>[;...]` configuration of a storage object of the group.
pub fn rbd_config(so: &rustio_config::StorageObject) -> Result<&str, GroupError> {
    match so {
        rustio_config::StorageObject::User(u) => u
            .config
            .as_deref()
            .filter(|c| c.starts_with("rbd/"))
            .ok_or_else(|| GroupError::NotRbd(so.path())),
        _ => Err(GroupError::NotRbd(so.path())),
    }
}

/// Opens an RBD storage object for gateway `gw` of `group`: its identity from the
/// image, its ALUA from the group, ownership = the image's exclusive lock.
#[cfg(feature = "rbd")]
pub fn open_lun(
    so: &rustio_config::StorageObject,
    group: &GatewayGroup,
    gw: &Gateway,
    block_size: u32,
) -> Result<std::sync::Arc<rustio_scsi::LogicalUnit>, GroupError> {
    use std::sync::Arc;
    let name = so.name().to_string();
    let open_err = |e: Box<dyn std::error::Error + Send + Sync>| GroupError::Open {
        name: so.path(),
        source: e,
    };
    let mut opts =
        rustio_rbd::OpenOptions::parse(rbd_config(so)?).map_err(|e| open_err(e.into()))?;
    opts.block_size = block_size;
    // Reservations live in the cluster, so every gateway enforces the same ones and a
    // change through one raises its unit attentions on the others (docs/ceph.md).
    let reservations: Arc<dyn rustio_scsi::ReservationStore> =
        Arc::new(rustio_rbd::CephReservationStore::open(&opts).map_err(|e| open_err(e.into()))?);
    let image =
        Arc::new(rustio_rbd::lock::GatewayImage::open(opts).map_err(|e| open_err(e.into()))?);
    let size = match so {
        rustio_config::StorageObject::User(u) => u.size,
        _ => None,
    };
    rustio_stores::check_size(
        size,
        format_args!("RBD image {}", image.spec()),
        rustio_backstore::Backstore::capacity(image.as_ref()),
    )
    .map_err(|e| open_err(e.into()))?;
    let identity = image.identity().map_err(|e| open_err(e.into()))?;
    let lc = lun_config(&name, &identity.unit_serial(), block_size);
    let lu = rustio_scsi::LogicalUnit::with_reservation_store(image.clone(), lc, reservations)
        .map_err(|source| crate::Error::Unit { name, source })?;
    let alua = rustio_scsi::alua::GroupAlua::new(group.alua_config(gw), image);
    lu.set_group_alua(alua);
    tracing::info!(object = %so.path(), serial = %identity.unit_serial(), gateway = %gw.name, port_group = gw.port_group, "gateway LUN open");
    Ok(lu)
}

/// The logical unit configuration of a group LUN: the same on every gateway (vendor,
/// product, serial and hence NAA), no volatile cache (librbd's cache is off).
pub fn lun_config(name: &str, serial: &str, block_size: u32) -> rustio_scsi::LuConfig {
    rustio_scsi::LuConfig::new(name, serial)
        .with_write_cache(false)
        .with_max_transfer_blocks(crate::MAX_TRANSFER_BYTES / block_size.max(512))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(v: Value) -> Result<GatewayGroup, GroupError> {
        GatewayGroup::from_json(&v)
    }

    fn two() -> Value {
        json!({"name": "g", "gateways": [
            {"name": "a", "portals": ["127.0.0.1:3261"]},
            {"name": "b", "portals": ["127.0.0.1:3262", "[::1]:3262"]}
        ]})
    }

    #[test]
    fn ids_follow_the_position() {
        let g = group(two()).unwrap();
        assert_eq!(g.gateways[0].port_group, 1);
        assert_eq!(g.gateways[1].port_group, 2);
        assert_eq!(g.non_owner, AluaState::Standby);
        assert_eq!(g.debounce, DEFAULT_TAKEOVER_DEBOUNCE);
        assert_eq!(g.handover_timeout, Duration::from_secs(3));
        let b = g.gateway("b").unwrap();
        assert_eq!(b.portals.len(), 2);
        let a = g.alua_config(b);
        assert_eq!(a.local, TargetPortGroupId(2));
        assert_eq!(a.handover_timeout, DEFAULT_HANDOVER_TIMEOUT);
        assert_eq!(
            a.members,
            vec![
                GroupMember {
                    id: TargetPortGroupId(1),
                    ports: vec![1],
                    preferred: true
                },
                GroupMember {
                    id: TargetPortGroupId(2),
                    ports: vec![2],
                    preferred: false
                }
            ]
        );
    }

    #[test]
    fn explicit_ids_and_states() {
        let g = group(
            json!({"name": "g", "non_owner_state": "active_non_optimized",
            "takeover_debounce_secs": 0, "gateways": [
            {"name": "a", "portals": ["127.0.0.1:3261"], "port_group": 10},
            {"name": "b", "portals": ["127.0.0.1:3262"], "port_group": 20}]}),
        )
        .unwrap();
        assert_eq!(g.gateways[1].port_group, 20);
        assert_eq!(g.non_owner, AluaState::ActiveNonOptimized);
        assert_eq!(g.debounce, Duration::ZERO);
    }

    /// `handover_timeout_secs`: 1..=20, default 3.
    #[test]
    fn handover_timeout_key() {
        let with = |t: Value| {
            let mut v = two();
            v["handover_timeout_secs"] = t;
            group(v)
        };
        assert_eq!(
            with(json!(10)).unwrap().handover_timeout,
            Duration::from_secs(10)
        );
        assert_eq!(
            with(json!(1)).unwrap().handover_timeout,
            Duration::from_secs(1)
        );
        let g = with(json!(20)).unwrap();
        assert_eq!(
            g.alua_config(&g.gateways[0]).handover_timeout,
            Duration::from_secs(20)
        );
        for bad in [json!(0), json!(21), json!(-1), json!("3"), json!(2.5)] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains("\"handover_timeout_secs\" must be 1..=20"),
                "{e}"
            );
        }
    }

    #[test]
    fn validation_errors_are_clear() {
        let err = |v: Value| group(v).unwrap_err().to_string();
        assert!(err(json!({"name": "g", "gateways": [
            {"name": "a", "portals": ["127.0.0.1:1"]},
            {"name": "a", "portals": ["127.0.0.1:2"]}]}))
        .contains("\"a\" used twice"));
        assert!(err(json!({"name": "g", "gateways": [
            {"name": "a", "portals": ["127.0.0.1:1"], "port_group": 2},
            {"name": "b", "portals": ["127.0.0.1:2"]}]}))
        .contains("target port group 2 used twice"));
        assert!(err(json!({"name": "g", "gateways": [
            {"name": "a", "portals": ["127.0.0.1:1"], "port_group": 0}]}))
        .contains("1..=65535"));
        assert!(err(json!({"name": "g", "gateways": [
            {"name": "a", "portals": ["127.0.0.1:1"], "port_group": 65536}]}))
        .contains("1..=65535"));
        assert!(err(json!({"name": "g", "gateways": [
            {"name": "a", "portals": ["localhost"]}]}))
        .contains("not ADDR:PORT"));
        assert!(err(json!({"name": "g", "gateways": [
            {"name": "a", "portals": ["127.0.0.1:1"]},
            {"name": "b", "portals": ["127.0.0.1:1"]}]}))
        .contains("used twice"));
        assert!(err(json!({"name": "g", "gateways": []})).contains("empty"));
        assert!(err(json!({"name": "g", "gateway": []})).contains("unknown key"));
        assert!(
            err(json!({"name": "g", "non_owner_state": "fast", "gateways": []}))
                .contains("non_owner_state")
        );
        let g = group(two()).unwrap();
        let e = g.gateway("c").unwrap_err().to_string();
        assert!(
            e.contains("\"c\" is not a member of group \"g\" (members: a, b)"),
            "{e}"
        );
    }

    /// The same image seen by two gateways: the same serial, hence the same NAA
    /// (VPD 0x80 / 0x83) and the same vendor/product, whatever the gateway.
    #[test]
    fn identity_is_the_same_on_every_gateway() {
        use std::sync::Arc;
        let serial = "rbd.2.10f3a1b2c3d4";
        let mk = || {
            rustio_scsi::LogicalUnit::new(
                Arc::new(rustio_backstore::RamBackstore::new(1 << 20, 512).unwrap()),
                lun_config("lun", serial, 512),
            )
            .unwrap()
        };
        let (a, b) = (mk(), mk());
        assert_eq!(a.naa_designator(), b.naa_designator());
        assert_eq!(a.naa_designator()[0] >> 4, 6, "NAA 6 (SPC-4 7.8.6.6.5)");
        assert_eq!(a.config(), b.config());
        assert!(!a.config().write_cache);
    }

    #[test]
    fn section_is_read_from_the_saveconfig_extension() {
        let text = json!({"storage_objects": [
            {"plugin": "user", "name": "r", "config": "rbd/p/i", "size": 1048576},
            {"plugin": "ramdisk", "name": "m", "size": 1048576}],
          "targets": [{"wwn": "iqn.2003-01.org.example:t", "fabric": "iscsi",
            "tpgs": [{"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/user/r"}],
                      "portals": [], "node_acls": []}]}],
          GROUP_KEY: two()})
        .to_string();
        let model = rustio_config::parse::from_str(&text).unwrap();
        let g = GatewayGroup::from_model(&model).unwrap().unwrap();
        assert_eq!(g.name, "g");
        g.check_model(&model).unwrap();
        let ram = text.replace("/backstores/user/r", "/backstores/ramdisk/m");
        let model = rustio_config::parse::from_str(&ram).unwrap();
        assert!(matches!(g.check_model(&model), Err(GroupError::NotRbd(_))));
    }
}
