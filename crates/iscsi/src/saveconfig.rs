//! targetcli `saveconfig.json` → [`ServerConfig`]: a thin mapping over the shared
//! `rustio-config` model.
//!
//! * `fileio` → [`rustio_backstore::FileBackstore`] on `dev` (created at `size` when
//!   missing), `block` → `FileBackstore` on the device, `ramdisk` →
//!   [`rustio_backstore::RamBackstore`] (`nullio` → its null variant).
//! * `user` (TCMU) objects by their `config` string `<handler>/<handler config>`, through
//!   the same handlers as the TCMU runner ([`rustio_stores::Handlers`]): `qcow/<path>`
//!   (or `qcow2/`) → [`rustio_backstore::Qcow2Backstore`], `file/<path>` →
//!   `FileBackstore` (created at `size` when missing), `ram/` → `RamBackstore`,
//!   `rbd/<pool>/<image>[;option...]` → `rustio_rbd::RbdBackstore` (needs the `rbd`
//!   cargo feature). Like tcmu-runner, a qcow2 or RBD image whose size differs from the
//!   object's `size` is refused.
//! * iSCSI targets, TPGs (attributes `authentication`, `generate_node_acls`,
//!   `demo_mode_write_protect`, `nopin_timeout`, `nopin_response_timeout`; parameters
//!   = the RFC 7143 keys), LUNs, portals, node ACLs with CHAP and mapped LUNs, and the
//!   iSCSI fabric module's discovery authentication.
//!
//! On reload the logical units of storage objects whose definition did not change are
//! reused, so sessions using them are unaffected.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustio_config::{ConfigValue, SaveConfig, StorageObject};
use rustio_scsi::{LogicalUnit, LuConfig};
use rustio_stores::Handlers;

use rustio_iscsi_proto::text::{parse_bool, parse_number};

use crate::config::{
    AclConfig, ChapCredentials, DiscoveryAuth, LunConfig, MappedLunConfig, PortalConfig,
    ServerConfig, StorageObjectRuntime, TargetConfig, TpgConfig, TpgParams,
};
use crate::{ConfigError, Error, Result};

#[path = "group.rs"]
pub mod group;

use group::{GatewayGroup, GroupError};

/// Worker threads of a server whose configuration has LUNs on stores that wait on the
/// network (RBD; see [`from_model`]).
pub const RBD_WORKERS: usize = 32;

/// Reads and maps a saveconfig.json file; `previous` lends its unchanged logical units.
pub fn load(path: &Path, previous: Option<&ServerConfig>) -> Result<ServerConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFile {
        path: path.to_path_buf(),
        source,
    })?;
    let model = rustio_config::parse::from_str(&text).map_err(|e| e.in_file(path))?;
    from_model(&model, previous)
}

/// [`load`] for a member of a gateway group (`rustio serve --gateway NAME`): the file's
/// `rustio_gateway_group` section says which part `gateway` serves (see [`group`]).
/// Without `gateway`, a file that defines a group is refused (which member?).
pub fn load_gateway(
    path: &Path,
    previous: Option<&ServerConfig>,
    gateway: Option<&str>,
) -> std::result::Result<ServerConfig, GroupError> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFile {
        path: path.to_path_buf(),
        source,
    })?;
    let model = rustio_config::parse::from_str(&text).map_err(|e| Error::from(e.in_file(path)))?;
    from_model_gateway(&model, previous, gateway)
}

/// Maps `model` for `gateway` of its group (see [`load_gateway`]).
pub fn from_model_gateway(
    model: &SaveConfig,
    previous: Option<&ServerConfig>,
    gateway: Option<&str>,
) -> std::result::Result<ServerConfig, GroupError> {
    let group = GatewayGroup::from_model(model)?;
    let (group, gw) = match (group, gateway) {
        (None, None) => return Ok(from_model(model, previous)?),
        (None, Some(g)) => return Err(GroupError::NoGroup(g.to_string())),
        (Some(group), None) => {
            let names = group
                .gateways
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(GroupError::GatewayNotGiven(group.name, names));
        }
        (Some(group), Some(name)) => {
            let gw = group.gateway(name)?.clone();
            (group, gw)
        }
    };
    group.check_model(model)?;
    let opener = |so: &StorageObject| -> std::result::Result<Arc<LogicalUnit>, GroupError> {
        open_group_lun(so, &group, &gw)
    };
    map_model(model, previous, &opener, Some(&gw))
}

#[cfg(feature = "rbd")]
fn open_group_lun(
    so: &StorageObject,
    group: &GatewayGroup,
    gw: &group::Gateway,
) -> std::result::Result<Arc<LogicalUnit>, GroupError> {
    group::open_lun(so, group, gw, object_block_size(so))
}

#[cfg(not(feature = "rbd"))]
fn open_group_lun(
    so: &StorageObject,
    _group: &GatewayGroup,
    _gw: &group::Gateway,
) -> std::result::Result<Arc<LogicalUnit>, GroupError> {
    Err(GroupError::Open {
        name: so.path(),
        source: Box::new(rustio_rbd::RbdError::NotBuiltIn),
    })
}

/// The `block_size` attribute of a storage object (512 when unset).
fn object_block_size(so: &StorageObject) -> u32 {
    so.common()
        .and_then(|c| setting_u64(&c.attributes, "block_size"))
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(512)
}

fn setting_u64(map: &rustio_config::model::Settings, key: &str) -> Option<u64> {
    match map.get(key)? {
        ConfigValue::Int(v) => u64::try_from(*v).ok(),
        ConfigValue::UInt(v) => Some(*v),
        ConfigValue::Bool(b) => Some(u64::from(*b)),
        ConfigValue::Str(s) => parse_number(s.trim()),
    }
}

fn setting_flag(map: &rustio_config::model::Settings, key: &str) -> Option<bool> {
    match map.get(key)? {
        ConfigValue::Bool(b) => Some(*b),
        ConfigValue::Str(s) => match s.trim() {
            "Yes" | "yes" | "true" | "1" => Some(true),
            "No" | "no" | "false" | "0" => Some(false),
            _ => None,
        },
        _ => setting_u64(map, key).map(|v| v != 0),
    }
}

fn setting_str(map: &rustio_config::model::Settings, key: &str) -> Option<String> {
    map.get(key).map(|v| v.to_configfs())
}

/// A stable description of a storage object's definition (reuse key on reload).
fn fingerprint(so: &StorageObject) -> String {
    serde_json::to_string(so).unwrap_or_else(|_| so.path())
}

/// Opens a storage object through the shared registry and builds its logical unit.
fn open_storage(so: &StorageObject, stores: &Handlers) -> Result<Arc<LogicalUnit>> {
    let name = so.name().to_string();
    let block_size = object_block_size(so);
    let opened = stores.open_object(so, block_size)?;
    let (store, write_cache, read_only) = (opened.store, opened.write_cache, opened.read_only);
    // `open_object` refuses objects without the common part (unknown plugins).
    let attributes = so.common().map(|c| &c.attributes);
    let write_cache = attributes
        .and_then(|a| setting_flag(a, "emulate_write_cache"))
        .unwrap_or(write_cache);
    // The unit serial: the saved wwn (a UUID) or one derived from the name.
    let serial = so
        .wwn()
        .map(str::to_string)
        .unwrap_or_else(|| format!("rustio-{}", hex::encode(&name)));
    let serial: String = serial
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(250)
        .collect();
    let mut lc = LuConfig::new(name.clone(), serial)
        .with_write_cache(write_cache)
        .with_read_only(read_only);
    // MAXIMUM TRANSFER LENGTH: what one iSCSI command may carry (LIO's hw_max_sectors
    // describes a kernel device queue and does not apply to a userspace target).
    lc = lc.with_max_transfer_blocks(crate::MAX_TRANSFER_BYTES / block_size.max(512));
    LogicalUnit::new(store, lc).map_err(|source| Error::Unit { name, source })
}

fn parse_portal(ip: &str, port: u64) -> Result<SocketAddr> {
    let trimmed = ip.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = trimmed
        .parse()
        .map_err(|_| ConfigError::PortalAddress(ip.to_owned()))?;
    let port = u16::try_from(port).map_err(|_| ConfigError::PortalPort(port))?;
    Ok(SocketAddr::new(ip, port))
}

fn tpg_params(
    p: &rustio_config::model::Settings,
    a: &rustio_config::model::Settings,
) -> Result<TpgParams> {
    let mut out = TpgParams::default();
    let o = &mut out.offer;
    let digest = |v: Option<String>, none: &mut bool, crc: &mut bool| {
        if let Some(v) = v {
            *none = v.split(',').any(|x| x.trim() == "None");
            *crc = v.split(',').any(|x| x.trim() == "CRC32C");
        }
    };
    digest(
        setting_str(p, "HeaderDigest"),
        &mut o.header_digest_none,
        &mut o.header_digest_crc,
    );
    digest(
        setting_str(p, "DataDigest"),
        &mut o.data_digest_none,
        &mut o.data_digest_crc,
    );
    let num = |k: &str, lo: u64, hi: u64| -> Result<Option<u32>> {
        match setting_u64(p, k) {
            None => Ok(None),
            Some(v) if (lo..=hi).contains(&v) => Ok(Some(v as u32)),
            Some(value) => Err(ConfigError::Parameter {
                key: k.to_owned(),
                value,
                lo,
                hi,
            }
            .into()),
        }
    };
    let seg = (512, (1 << 24) - 1);
    if let Some(v) = num("MaxRecvDataSegmentLength", seg.0, seg.1)? {
        o.max_recv_data_segment_length = v;
    }
    if let Some(v) = num("MaxBurstLength", seg.0, seg.1)? {
        o.max_burst_length = v;
    }
    if let Some(v) = num("FirstBurstLength", seg.0, seg.1)? {
        o.first_burst_length = v;
    }
    if let Some(v) = num("MaxOutstandingR2T", 1, 65535)? {
        o.max_outstanding_r2t = v;
    }
    if let Some(v) = num("MaxConnections", 1, 65535)? {
        o.max_connections = v;
    }
    if let Some(v) = num("DefaultTime2Wait", 0, 3600)? {
        o.default_time2wait = v;
    }
    if let Some(v) = num("DefaultTime2Retain", 0, 3600)? {
        o.default_time2retain = v;
    }
    // Only ErrorRecoveryLevel 0 is implemented; a configured higher value negotiates
    // down (min function, RFC 7143 13.20).
    o.error_recovery_level = 0;
    let b = |k: &str| setting_str(p, k).and_then(|v| parse_bool(v.trim()));
    if let Some(v) = b("InitialR2T") {
        o.initial_r2t = v;
    }
    if let Some(v) = b("ImmediateData") {
        o.immediate_data = v;
    }
    if let Some(v) = b("DataPDUInOrder") {
        o.data_pdu_in_order = v;
    }
    if let Some(v) = b("DataSequenceInOrder") {
        o.data_sequence_in_order = v;
    }
    out.target_alias = setting_str(p, "TargetAlias").filter(|s| !s.is_empty());
    if let Some(v) = setting_u64(a, "nopin_timeout") {
        out.nopin_interval = Duration::from_secs(v);
    }
    if let Some(v) = setting_u64(a, "nopin_response_timeout") {
        out.nopin_response_timeout = Duration::from_secs(v.max(1));
    }
    Ok(out)
}

/// Maps a parsed saveconfig model, opening stores with the built-in handlers.
pub fn from_model(model: &SaveConfig, previous: Option<&ServerConfig>) -> Result<ServerConfig> {
    from_model_with(model, previous, &Handlers::builtin())
}

/// Maps a parsed saveconfig model, opening stores through `stores`.
pub fn from_model_with(
    model: &SaveConfig,
    previous: Option<&ServerConfig>,
    stores: &Handlers,
) -> Result<ServerConfig> {
    map_model(model, previous, &|so| open_storage(so, stores), None)
}

/// The mapping itself: `open` opens a storage object's logical unit; with `gateway`,
/// each target's one TPG becomes the gateway's (tag = its target port group, its
/// portals).
fn map_model<E: From<Error> + From<ConfigError>>(
    model: &SaveConfig,
    previous: Option<&ServerConfig>,
    open: &dyn Fn(&StorageObject) -> std::result::Result<Arc<LogicalUnit>, E>,
    gateway: Option<&group::Gateway>,
) -> std::result::Result<ServerConfig, E> {
    let mut cfg = ServerConfig {
        discovery_auth: discovery_auth(model),
        ..ServerConfig::default()
    };
    let mut storage: Vec<StorageObjectRuntime> = Vec::new();
    let mut get_lu = |path: &str| -> std::result::Result<(Arc<LogicalUnit>, String), E> {
        let so = model
            .storage_object_by_path(path)
            .ok_or_else(|| ConfigError::MissingStorageObject(path.to_owned()))?;
        let key = fingerprint(so);
        if let Some(s) = storage.iter().find(|s| s.key == key) {
            return Ok((s.lu.clone(), s.name.clone()));
        }
        let lu = match previous.and_then(|p| p.storage_objects.iter().find(|s| s.key == key)) {
            Some(s) => s.lu.clone(),
            None => open(so)?,
        };
        storage.push(StorageObjectRuntime {
            key,
            name: so.name().to_string(),
            path: so.path(),
            lu: lu.clone(),
        });
        Ok((lu, so.name().to_string()))
    };
    for t in model.targets.iter().filter(|t| t.fabric == "iscsi") {
        let mut tpgs = Vec::new();
        for tpg in &t.tpgs {
            tpgs.push(Arc::new(tpg_config(&t.wwn, tpg, gateway, &mut get_lu)?));
        }
        cfg.targets.push(Arc::new(TargetConfig {
            iqn: t.wwn.clone(),
            tpgs,
        }));
    }
    // A command on a store that waits on the network holds its worker for a round trip
    // (RBD: to the OSDs): with the CPU-sized default pool, a session could only keep a
    // handful of requests in flight (measured in bench/README.md, RBD stage). The
    // opened store says so (`Capabilities::network`). Callers may still override it.
    if storage
        .iter()
        .any(|s| s.lu.backstore().capabilities().network)
    {
        cfg.workers = RBD_WORKERS;
    }
    cfg.storage_objects = storage;
    cfg.validate()?;
    for w in cfg.chap_warnings() {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

/// Discovery authentication from the `iscsi` fabric module's settings.
fn discovery_auth(model: &SaveConfig) -> DiscoveryAuth {
    let Some(fm) = model.fabric_modules.iter().rfind(|fm| fm.name == "iscsi") else {
        return DiscoveryAuth::default();
    };
    DiscoveryAuth {
        enforce: fm.discovery_enable_auth.unwrap_or(false),
        chap: ChapCredentials::from_fields(
            fm.discovery_userid.as_deref(),
            fm.discovery_password.as_deref(),
            fm.discovery_mutual_userid.as_deref(),
            fm.discovery_mutual_password.as_deref(),
        ),
    }
}

/// Opens (or reuses) the unit behind a LUN's storage object path: the unit and its name.
type OpenLu<'a, E> = dyn FnMut(&str) -> std::result::Result<(Arc<LogicalUnit>, String), E> + 'a;

/// One TPG of target `iqn`; `get_lu` opens (or reuses) the unit behind a LUN. With
/// `gateway`, the TPG becomes the gateway's (tag = its target port group, its portals).
fn tpg_config<E: From<Error> + From<ConfigError>>(
    iqn: &str,
    tpg: &rustio_config::Tpg,
    gateway: Option<&group::Gateway>,
    get_lu: &mut OpenLu<'_, E>,
) -> std::result::Result<TpgConfig, E> {
    let tag = tpg.tag.unwrap_or(1);
    let mut tag = u16::try_from(tag).map_err(|_| ConfigError::TpgTagOutOfRange {
        iqn: iqn.to_owned(),
        tag,
    })?;
    if let Some(gw) = gateway {
        // The gateway's target port: TPGT = relative port id = port group.
        tag = gw.port_group;
    }
    let mut tc = TpgConfig::new(tag);
    tc.enabled = tpg.enable.unwrap_or(true);
    tc.authentication = setting_flag(&tpg.attributes, "authentication").unwrap_or(false);
    tc.generate_node_acls = setting_flag(&tpg.attributes, "generate_node_acls").unwrap_or(false);
    tc.demo_mode_write_protect =
        setting_flag(&tpg.attributes, "demo_mode_write_protect").unwrap_or(false);
    tc.chap = ChapCredentials::from_fields(
        tpg.auth.chap_userid.as_deref(),
        tpg.auth.chap_password.as_deref(),
        tpg.auth.chap_mutual_userid.as_deref(),
        tpg.auth.chap_mutual_password.as_deref(),
    );
    tc.params = tpg_params(&tpg.parameters, &tpg.attributes)?;
    if let Some(methods) = setting_str(&tpg.parameters, "AuthMethod") {
        // AuthMethod=CHAP alone means CHAP is required.
        if methods.split(',').all(|m| m.trim() == "CHAP") {
            tc.authentication = true;
        }
    }
    match gateway {
        Some(gw) => {
            tc.portals = gw
                .portals
                .iter()
                .map(|&addr| PortalConfig { addr })
                .collect()
        }
        None => {
            for p in &tpg.portals {
                tc.portals.push(PortalConfig {
                    addr: parse_portal(&p.ip_address, p.port)?,
                });
            }
        }
    }
    for l in &tpg.luns {
        let (lu, name) = get_lu(&l.storage_object)?;
        tc.luns.push(LunConfig {
            index: l.index,
            lu,
            name,
        });
    }
    tc.acls = tpg.node_acls.iter().map(acl_config).collect();
    Ok(tc)
}

/// One node ACL.
fn acl_config(acl: &rustio_config::NodeAcl) -> AclConfig {
    AclConfig {
        initiator: acl.node_wwn.clone(),
        chap: ChapCredentials::from_fields(
            acl.auth.chap_userid.as_deref(),
            acl.auth.chap_password.as_deref(),
            acl.auth.chap_mutual_userid.as_deref(),
            acl.auth.chap_mutual_password.as_deref(),
        ),
        authentication: setting_flag(&acl.attributes, "authentication"),
        mapped_luns: acl
            .mapped_luns
            .iter()
            .map(|m| MappedLunConfig {
                index: m.index,
                tpg_lun: m.tpg_lun,
                write_protect: m.write_protect.unwrap_or(false),
            })
            .collect(),
        // rustio extensions (LIO keeps these in iscsi_node_attrib without a configfs
        // file, see rustio_config::model::SERVE_ONLY_ACL_ATTRIBUTES): may this initiator
        // reset the whole target?
        tmr_warm_reset: setting_flag(&acl.attributes, "tmr_warm_reset").unwrap_or(false),
        tmr_cold_reset: setting_flag(&acl.attributes, "tmr_cold_reset").unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustio_backstore::Backstore as _;

    const SAMPLE: &str = r#"{
      "fabric_modules": [{"name": "iscsi", "discovery_enable_auth": true,
        "discovery_userid": "disc", "discovery_password": "discsecret"}],
      "storage_objects": [
        {"plugin": "ramdisk", "name": "r0", "size": 1048576, "wwn": "0e1f6d2a-aaaa-bbbb-cccc-0123456789ab"},
        {"plugin": "ramdisk", "name": "n0", "size": 1048576, "nullio": true}
      ],
      "targets": [{
        "wwn": "iqn.2003-01.org.example:t1", "fabric": "iscsi",
        "tpgs": [{
          "tag": 1, "enable": true,
          "attributes": {"authentication": 1, "generate_node_acls": 0, "demo_mode_write_protect": 0,
                         "nopin_timeout": 5, "nopin_response_timeout": 7},
          "parameters": {"MaxRecvDataSegmentLength": "65536", "InitialR2T": "No",
                         "HeaderDigest": "CRC32C", "TargetAlias": "alias1", "MaxBurstLength": "524288"},
          "chap_userid": "tpguser", "chap_password": "tpgpass",
          "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r0"},
                   {"index": 3, "storage_object": "/backstores/ramdisk/n0", "alias": "x"}],
          "portals": [{"ip_address": "127.0.0.1", "port": 3260}, {"ip_address": "::1", "port": 3261}],
          "node_acls": [{"node_wwn": "iqn.1994-05.com.redhat:client",
                         "chap_userid": "u", "chap_password": "p",
                         "chap_mutual_userid": "mu", "chap_mutual_password": "mp",
                         "mapped_luns": [{"index": 5, "tpg_lun": 3, "write_protect": true}]}]
        }]
      }]
    }"#;

    #[test]
    fn maps_sample() {
        let model = rustio_config::parse::from_str(SAMPLE).unwrap();
        let cfg = from_model(&model, None).unwrap();
        assert!(cfg.discovery_auth.enforce);
        assert_eq!(cfg.discovery_auth.chap.as_ref().unwrap().userid, "disc");
        let t = &cfg.targets[0];
        assert_eq!(t.iqn, "iqn.2003-01.org.example:t1");
        let tpg = &t.tpgs[0];
        assert_eq!(tpg.tag, 1);
        assert!(tpg.authentication && !tpg.generate_node_acls);
        assert_eq!(tpg.params.offer.max_recv_data_segment_length, 65536);
        assert_eq!(tpg.params.offer.max_burst_length, 524288);
        assert!(!tpg.params.offer.initial_r2t);
        assert!(tpg.params.offer.header_digest_crc && !tpg.params.offer.header_digest_none);
        assert_eq!(tpg.params.target_alias.as_deref(), Some("alias1"));
        assert_eq!(tpg.params.nopin_interval, Duration::from_secs(5));
        assert_eq!(tpg.portals.len(), 2);
        assert_eq!(tpg.portals[1].addr, "[::1]:3261".parse().unwrap());
        assert_eq!(
            tpg.luns.iter().map(|l| l.index).collect::<Vec<_>>(),
            vec![0, 3]
        );
        assert_eq!(tpg.chap.as_ref().unwrap().userid, "tpguser");
        let acl = tpg.acl("IQN.1994-05.com.redhat:client").unwrap();
        assert_eq!(
            acl.chap.as_ref().unwrap().mutual,
            Some(("mu".into(), "mp".into()))
        );
        let luns = tpg.luns_for("iqn.1994-05.com.redhat:client");
        assert_eq!(luns.len(), 1);
        assert_eq!(luns[0].0, 5);
        assert!(luns[0].2);
        assert!(tpg.luns_for("iqn.other:x").is_empty());
        assert_eq!(cfg.storage_objects.len(), 2);
    }

    #[test]
    fn reload_reuses_unchanged_units() {
        let model = rustio_config::parse::from_str(SAMPLE).unwrap();
        let a = from_model(&model, None).unwrap();
        let b = from_model(&model, Some(&a)).unwrap();
        assert!(Arc::ptr_eq(
            &a.storage_objects[0].lu,
            &b.storage_objects[0].lu
        ));
        let changed = SAMPLE.replace("\"size\": 1048576, \"wwn\"", "\"size\": 2097152, \"wwn\"");
        let model2 = rustio_config::parse::from_str(&changed).unwrap();
        let c = from_model(&model2, Some(&a)).unwrap();
        let r0 = c.storage_objects.iter().find(|s| s.name == "r0").unwrap();
        assert!(!Arc::ptr_eq(&a.storage_objects[0].lu, &r0.lu));
    }

    #[test]
    fn acl_with_user_but_no_secret_is_refused() {
        // Before, this loaded and a login with an empty secret got in.
        for auth in [
            r#""chap_userid": "u""#,
            r#""chap_userid": "u", "chap_password": """#,
        ] {
            let text = SAMPLE.replace(r#""chap_userid": "u", "chap_password": "p""#, auth);
            let model = rustio_config::parse::from_str(&text).unwrap();
            match from_model(&model, None) {
                Err(Error::Config(e @ ConfigError::ChapIncomplete { .. })) => assert_eq!(
                    e.to_string(),
                    "/iscsi/iqn.2003-01.org.example:t1/tpg1/acls/\
                     iqn.1994-05.com.redhat:client: chap_userid set but chap_password empty"
                ),
                other => panic!("{other:?}"),
            }
        }
        let text = SAMPLE.replace(
            r#""chap_mutual_password": "mp""#,
            r#""chap_mutual_password": """#,
        );
        let model = rustio_config::parse::from_str(&text).unwrap();
        assert!(
            matches!(from_model(&model, None), Err(Error::Config(e @ ConfigError::ChapIncomplete { .. })) if e.to_string().ends_with("chap_mutual_userid set but chap_mutual_password empty"))
        );
    }

    /// Node ACL attributes `tmr_warm_reset` / `tmr_cold_reset` (rustio extensions,
    /// LIO's iscsi_node_attrib fields): off unless set, as 0/1 or a JSON bool.
    #[test]
    fn acl_target_reset_attributes() {
        let acl = |cfg: &ServerConfig| cfg.targets[0].tpgs[0].acls[0].clone();
        let model = rustio_config::parse::from_str(SAMPLE).unwrap();
        let a = acl(&from_model(&model, None).unwrap());
        assert!(!a.tmr_warm_reset && !a.tmr_cold_reset);
        for (attrs, warm, cold) in [
            (r#""tmr_warm_reset": 1"#, true, false),
            (
                r#""tmr_cold_reset": true, "tmr_warm_reset": 0"#,
                false,
                true,
            ),
        ] {
            let text = SAMPLE.replace(
                r#""mapped_luns": [{"index": 5"#,
                &format!(r#""attributes": {{{attrs}}}, "mapped_luns": [{{"index": 5"#),
            );
            let model = rustio_config::parse::from_str(&text).unwrap();
            let a = acl(&from_model(&model, None).unwrap());
            assert_eq!(
                (a.tmr_warm_reset, a.tmr_cold_reset),
                (warm, cold),
                "{attrs}"
            );
        }
    }

    #[test]
    fn missing_storage_object_is_an_error() {
        let bad = SAMPLE.replace("/backstores/ramdisk/n0", "/backstores/ramdisk/nope");
        let model = rustio_config::parse::from_str(&bad).unwrap();
        assert!(matches!(
            from_model(&model, None),
            Err(Error::Config(ConfigError::MissingStorageObject(p))) if p == "/backstores/ramdisk/nope"
        ));
    }

    #[test]
    fn bad_parameter_is_an_error() {
        let bad = SAMPLE.replace("\"65536\"", "\"100\"");
        let model = rustio_config::parse::from_str(&bad).unwrap();
        assert!(matches!(
            from_model(&model, None),
            Err(Error::Config(ConfigError::Parameter {
                value: 100,
                lo: 512,
                ..
            }))
        ));
    }

    /// A one-LUN saveconfig around a `user` storage object.
    fn user_config(config: &str, size: u64) -> String {
        let so =
            serde_json::json!({"plugin": "user", "name": "u0", "config": config, "size": size});
        serde_json::json!({
            "storage_objects": [so],
            "targets": [{"wwn": "iqn.2003-01.org.example:u", "fabric": "iscsi",
                "tpgs": [{"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/user/u0"}],
                          "portals": [{"ip_address": "127.0.0.1", "port": 3260}]}]}]
        })
        .to_string()
    }

    /// A RAM store that says it waits on the network, as `RbdBackstore` does (RBD
    /// itself needs a cluster to open).
    #[derive(Debug)]
    struct NetworkRam(rustio_backstore::RamBackstore);

    impl rustio_backstore::Backstore for NetworkRam {
        fn block_size(&self) -> u32 {
            self.0.block_size()
        }
        fn capacity(&self) -> u64 {
            self.0.capacity()
        }
        fn capabilities(&self) -> rustio_backstore::Capabilities {
            rustio_backstore::Capabilities {
                network: true,
                ..self.0.capabilities()
            }
        }
        fn read_vectored_at(
            &self,
            bufs: &mut [std::io::IoSliceMut<'_>],
            offset: u64,
        ) -> rustio_backstore::Result<()> {
            self.0.read_vectored_at(bufs, offset)
        }
        fn write_vectored_at(
            &self,
            bufs: &[std::io::IoSlice<'_>],
            offset: u64,
            flags: rustio_backstore::WriteFlags,
        ) -> rustio_backstore::Result<()> {
            self.0.write_vectored_at(bufs, offset, flags)
        }
        fn flush(&self) -> rustio_backstore::Result<()> {
            self.0.flush()
        }
    }

    /// Serves `rbd/...` with [`NetworkRam`].
    #[derive(Debug)]
    struct FakeRbd;

    impl rustio_stores::Handler for FakeRbd {
        fn subtype(&self) -> &str {
            "rbd"
        }
        fn check_config(&self, _: &str) -> std::result::Result<(), rustio_stores::ConfigError> {
            Ok(())
        }
        fn open(
            &self,
            _: &str,
            spec: &rustio_stores::StoreSpec,
        ) -> std::result::Result<Arc<dyn rustio_backstore::Backstore>, rustio_stores::OpenError>
        {
            let ram = rustio_backstore::RamBackstore::new(spec.size.unwrap_or(0), spec.block_size)?;
            Ok(Arc::new(NetworkRam(ram)))
        }
    }

    /// The worker pool follows the opened stores' `Capabilities::network`, not the
    /// configuration text.
    #[test]
    fn rbd_objects_raise_the_default_worker_pool() {
        let mut stores = Handlers::builtin();
        stores.register(Arc::new(FakeRbd));
        let workers = |config: &str| {
            let model = rustio_config::parse::from_str(&user_config(config, 1048576)).unwrap();
            from_model_with(&model, None, &stores).unwrap().workers
        };
        assert_eq!(workers("rbd/pool/img"), RBD_WORKERS);
        assert_eq!(workers("ram/"), 0);
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.qcow2");
        rustio_backstore::Qcow2Backstore::create(&img, 1048576, 16, &Default::default()).unwrap();
        assert_eq!(workers(&format!("qcow/{}", img.display())), 0);
        // Reused units on reload keep the answer.
        let model = rustio_config::parse::from_str(&user_config("rbd/p/i", 1048576)).unwrap();
        let a = from_model_with(&model, None, &stores).unwrap();
        let b = from_model_with(&model, Some(&a), &stores).unwrap();
        assert_eq!(b.workers, RBD_WORKERS);
    }

    /// The configuration error of loading a one-LUN saveconfig around a `user` object
    /// named `name` whose config is `config`.
    fn config_message(name: &str, config: Option<&str>) -> String {
        let mut so = serde_json::json!({"plugin": "user", "name": name, "size": 1048576});
        if let Some(c) = config {
            so["config"] = c.into();
        }
        let text = serde_json::json!({
            "storage_objects": [so],
            "targets": [{"wwn": "iqn.2003-01.org.example:u", "fabric": "iscsi",
                "tpgs": [{"tag": 1, "luns": [{"index": 0,
                                              "storage_object": format!("/backstores/user/{name}")}]}]}]
        })
        .to_string();
        match from_model(&rustio_config::parse::from_str(&text).unwrap(), None) {
            Err(Error::Config(e @ ConfigError::StorageObject(_))) => e.to_string(),
            other => panic!("expected a configuration error, got {:?}", other.err()),
        }
    }

    /// Which handler and handler configuration a `user` object's config selects (was
    /// `parse_user_config`, now the registry shared with the TCMU runner).
    #[test]
    fn user_config_handlers() {
        let h = Handlers::builtin();
        let resolved = |c: &'static str| {
            let (handler, cfg) = h.resolve(c).unwrap();
            (handler.subtype().to_owned(), cfg)
        };
        assert_eq!(
            resolved("qcow//var/lib/vm.qcow2"),
            ("qcow".into(), "/var/lib/vm.qcow2")
        );
        assert_eq!(resolved("qcow2//x.qcow2"), ("qcow".into(), "/x.qcow2"));
        assert_eq!(resolved("file//tmp/d.img"), ("file".into(), "/tmp/d.img"));
        assert_eq!(resolved("file/rel/d.img"), ("file".into(), "rel/d.img"));
        let (handler, cfg) = resolved("rbd/pool1/img1;osd_op_timeout=30;id=cinder");
        assert_eq!(handler, "rbd");
        let r = rustio_rbd::RbdConfig::parse_handler_config(cfg).unwrap();
        assert_eq!(
            (r.pool.as_str(), r.image.as_str(), r.id.as_deref()),
            ("pool1", "img1", Some("cinder"))
        );
        assert_eq!(r.osd_op_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn user_config_errors_name_the_object() {
        for (cfg, needle) in [
            (None, "no \"config\""),
            (Some("nohandler"), "names no handler"),
            (Some("glfs/vol@host/img"), "handler \"glfs\""),
            (Some("qcow/relative.qcow2"), "must be absolute"),
            // The TCMU runner's wording ("a file path is required" before the registry
            // was shared).
            (Some("file/"), "a path is required"),
            (Some("rbd/pool"), "rbd/pool"),
            (Some("qcow//a\0b"), "NUL"),
        ] {
            let m = config_message("disk7", cfg);
            assert!(m.starts_with("storage object user/disk7: "), "{m}");
            assert!(m.contains(needle), "{m} lacks {needle}");
        }
    }

    #[test]
    fn serves_a_qcow2_user_object() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.qcow2");
        rustio_backstore::Qcow2Backstore::create(&img, 4 << 20, 16, &Default::default()).unwrap();
        let text = user_config(&format!("qcow/{}", img.display()), 4 << 20);
        let model = rustio_config::parse::from_str(&text).unwrap();
        let cfg = from_model(&model, None).unwrap();
        let lu = &cfg.targets[0].tpgs[0].luns[0].lu;
        assert_eq!(lu.backstore().capacity(), 4 << 20);
        assert_eq!(lu.block_size(), 512);
        // qcow2 L2 updates are write-back: the unit reports a volatile write cache.
        assert!(lu.config().write_cache);
        lu.backstore()
            .write_at(&[0x5a; 512], 4096, Default::default())
            .unwrap();
        drop(cfg);
        let again = rustio_backstore::Qcow2Backstore::open(&img, true).unwrap();
        let mut b = [0u8; 512];
        again.read_at(&mut b, 4096).unwrap();
        assert_eq!(b, [0x5a; 512]);
    }

    #[test]
    fn qcow2_size_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.qcow2");
        rustio_backstore::Qcow2Backstore::create(&img, 4 << 20, 16, &Default::default()).unwrap();
        let text = user_config(&format!("qcow2/{}", img.display()), 8 << 20);
        let model = rustio_config::parse::from_str(&text).unwrap();
        match from_model(&model, None) {
            Err(Error::Config(
                e @ ConfigError::StorageObject(rustio_stores::ObjectError::Mismatch { .. }),
            )) => {
                let m = e.to_string();
                assert!(m.contains("user/u0") && m.contains("8388608"), "{m}")
            }
            other => panic!("expected a size error, got {:?}", other.err()),
        }
    }

    #[test]
    fn serves_a_file_user_object_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.img");
        let text = user_config(&format!("file/{}", f.display()), 2 << 20);
        let model = rustio_config::parse::from_str(&text).unwrap();
        let cfg = from_model(&model, None).unwrap();
        assert_eq!(
            cfg.targets[0].tpgs[0].luns[0].lu.backstore().capacity(),
            2 << 20
        );
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 2 << 20);
    }

    #[test]
    fn unknown_user_handler_fails_the_load() {
        let model = rustio_config::parse::from_str(&user_config("zbc/x", 1 << 20)).unwrap();
        match from_model(&model, None) {
            Err(Error::Config(
                e @ ConfigError::StorageObject(rustio_stores::ObjectError::Handler { .. }),
            )) => {
                let m = e.to_string();
                assert!(m.contains("user/u0") && m.contains("\"zbc\""), "{m}")
            }
            other => panic!("expected a configuration error, got {:?}", other.err()),
        }
    }

    #[cfg(not(feature = "rbd"))]
    #[test]
    fn rbd_without_the_feature_says_so() {
        let model = rustio_config::parse::from_str(&user_config("rbd/p/i", 1 << 20)).unwrap();
        match from_model(&model, None) {
            Err(e @ Error::Storage(_)) => {
                let chain = format!("{e} / {}", std::error::Error::source(&e).unwrap());
                assert!(chain.contains("u0"), "{chain}");
                assert!(chain.contains("built without rbd support"), "{chain}");
            }
            other => panic!("expected a storage error, got {:?}", other.err()),
        }
    }

    proptest::proptest! {
        #[test]
        fn user_config_never_panics(cfg in "\\PC{0,40}") {
            let h = Handlers::builtin();
            if let Ok((handler, rest)) = h.resolve(&cfg) {
                let _ = handler.check_config(rest);
            }
        }

        #[test]
        fn qcow_paths_round_trip(path in "(/[a-zA-Z0-9._-]{1,12}){1,4}") {
            let h = Handlers::builtin();
            let qcow = format!("qcow/{path}");
            let (handler, cfg) = h.resolve(&qcow).unwrap();
            proptest::prop_assert_eq!((handler.subtype(), cfg), ("qcow", path.as_str()));
            let file = format!("file/{path}");
            let (handler, cfg) = h.resolve(&file).unwrap();
            proptest::prop_assert_eq!((handler.subtype(), cfg), ("file", path.as_str()));
        }

        #[test]
        fn other_handlers_are_refused(h in "[a-z]{1,8}", rest in "[a-z/]{0,10}") {
            // `ram` is served since the registry is the TCMU runner's too.
            proptest::prop_assume!(!["qcow", "qcow2", "file", "rbd", "ram"].contains(&h.as_str()));
            let m = config_message("obj", Some(&format!("{h}/{rest}")));
            proptest::prop_assert!(m.contains("user/obj"), "{}", m);
        }
    }
}
