//! Runtime configuration of the target: plain structs that targetcli's `saveconfig.json`
//! maps onto (see [`crate::saveconfig`]) and that tests build directly.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustio_scsi::LogicalUnit;

use crate::chap::ChapAlgorithm;
use crate::text::TargetOffer;

/// CHAP credentials: the initiator proves `userid`/`password`; with `mutual` the target
/// proves itself back (RFC 7143 12.1.3).
#[derive(Clone, PartialEq, Eq)]
pub struct ChapCredentials {
    /// CHAP_N the initiator must send.
    pub userid: String,
    /// Secret shared with the initiator.
    pub password: String,
    /// Target's CHAP_N and secret for mutual authentication.
    pub mutual: Option<(String, String)>,
}

impl std::fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapCredentials")
            .field("userid", &self.userid)
            .field("password", &"<redacted>")
            .field("mutual", &self.mutual.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl ChapCredentials {
    /// Builds credentials from the four saveconfig fields; `None` when no one-way user
    /// is set. Mutual credentials need both a userid and a password.
    pub fn from_fields(
        userid: Option<&str>,
        password: Option<&str>,
        mutual_userid: Option<&str>,
        mutual_password: Option<&str>,
    ) -> Option<ChapCredentials> {
        let userid = userid.filter(|s| !s.is_empty())?;
        let mutual = match (
            mutual_userid.filter(|s| !s.is_empty()),
            mutual_password.filter(|s| !s.is_empty()),
        ) {
            (Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
            _ => None,
        };
        Some(ChapCredentials {
            userid: userid.to_string(),
            password: password.unwrap_or("").to_string(),
            mutual,
        })
    }
}

/// Negotiation parameters of a TPG (LIO's `tpgt_N/param/*` and `attrib/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpgParams {
    /// Operational key values the target offers.
    pub offer: TargetOffer,
    /// TargetAlias declared at login.
    pub target_alias: Option<String>,
    /// CHAP algorithms accepted, in our preference order (used when the initiator's
    /// list is ambiguous we still honour its order, RFC 7143 12.1.3).
    pub chap_algorithms: Vec<ChapAlgorithm>,
    /// Seconds of idle time before the target pings with a NOP-In (0 = never).
    pub nopin_interval: Duration,
    /// How long to wait for the NOP-Out answer before dropping the connection.
    pub nopin_response_timeout: Duration,
}

impl Default for TpgParams {
    fn default() -> Self {
        TpgParams {
            offer: TargetOffer::default(),
            target_alias: None,
            chap_algorithms: vec![
                ChapAlgorithm::Sha3_256,
                ChapAlgorithm::Sha256,
                ChapAlgorithm::Sha1,
                ChapAlgorithm::Md5,
            ],
            nopin_interval: Duration::from_secs(15),
            nopin_response_timeout: Duration::from_secs(30),
        }
    }
}

/// A network portal of a TPG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortalConfig {
    /// Address and port; an unspecified address (0.0.0.0 or ::) listens on all.
    pub addr: SocketAddr,
}

impl PortalConfig {
    /// Whether a connection accepted on local address `local` belongs to this portal.
    pub fn matches(&self, local: SocketAddr) -> bool {
        if self.addr.port() != local.port() {
            return false;
        }
        let ip = self.addr.ip();
        ip.is_unspecified() || normalize(ip) == normalize(local.ip())
    }
}

fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Formats a portal as a SendTargets `TargetAddress` value: `ip:port,tpgt` with IPv6 in
/// brackets (RFC 7143 13.8).
pub fn target_address(addr: SocketAddr, tpgt: u16) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{},{tpgt}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{},{tpgt}", addr.port()),
    }
}

/// A LUN of a TPG.
#[derive(Debug, Clone)]
pub struct LunConfig {
    /// TPG LUN number.
    pub index: u64,
    /// The logical unit.
    pub lu: Arc<LogicalUnit>,
    /// Storage object name (for logs and metrics).
    pub name: String,
}

/// One LUN mapping of an ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedLunConfig {
    /// LUN number the initiator sees.
    pub index: u64,
    /// TPG LUN it maps to.
    pub tpg_lun: u64,
    /// Read-only for this initiator.
    pub write_protect: bool,
}

/// A node ACL: one initiator allowed into the TPG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclConfig {
    /// Initiator IQN/EUI.
    pub initiator: String,
    /// Per-initiator CHAP credentials.
    pub chap: Option<ChapCredentials>,
    /// Per-initiator override of the TPG's `authentication` (LIO's node ACL
    /// `attrib/authentication`; `None`, LIO's -1, inherits the TPG setting).
    pub authentication: Option<bool>,
    /// LUNs mapped for this initiator.
    pub mapped_luns: Vec<MappedLunConfig>,
}

/// A target portal group.
#[derive(Debug, Clone)]
pub struct TpgConfig {
    /// Target portal group tag (1..=65535).
    pub tag: u16,
    /// Disabled TPGs refuse logins.
    pub enabled: bool,
    /// Network portals.
    pub portals: Vec<PortalConfig>,
    /// LUNs.
    pub luns: Vec<LunConfig>,
    /// Node ACLs.
    pub acls: Vec<AclConfig>,
    /// Demo mode: any initiator may log in and sees every TPG LUN.
    pub generate_node_acls: bool,
    /// In demo mode, LUNs are write-protected.
    pub demo_mode_write_protect: bool,
    /// CHAP is required.
    pub authentication: bool,
    /// TPG-wide CHAP credentials (demo mode or ACLs without their own).
    pub chap: Option<ChapCredentials>,
    /// Negotiation parameters.
    pub params: TpgParams,
}

impl TpgConfig {
    /// A TPG with defaults: enabled, no ACLs, no authentication.
    pub fn new(tag: u16) -> TpgConfig {
        TpgConfig {
            tag,
            enabled: true,
            portals: Vec::new(),
            luns: Vec::new(),
            acls: Vec::new(),
            generate_node_acls: false,
            demo_mode_write_protect: false,
            authentication: false,
            chap: None,
            params: TpgParams::default(),
        }
    }

    /// The ACL of `initiator`, if any (IQNs compare case-insensitively, RFC 3722).
    pub fn acl(&self, initiator: &str) -> Option<&AclConfig> {
        self.acls
            .iter()
            .find(|a| a.initiator.eq_ignore_ascii_case(initiator))
    }

    /// Whether `initiator` may log in (an ACL exists or demo mode is on).
    pub fn allows(&self, initiator: &str) -> bool {
        self.generate_node_acls || self.acl(initiator).is_some()
    }

    /// Whether `initiator` must authenticate with CHAP: its ACL's `authentication`
    /// attribute when set, else the TPG's.
    pub fn auth_required(&self, initiator: &str) -> bool {
        self.acl(initiator)
            .and_then(|a| a.authentication)
            .unwrap_or(self.authentication)
    }

    /// The CHAP credentials for `initiator`: its ACL's, else the TPG's.
    pub fn credentials(&self, initiator: &str) -> Option<&ChapCredentials> {
        self.acl(initiator)
            .and_then(|a| a.chap.as_ref())
            .or(self.chap.as_ref())
    }

    /// The LUNs `initiator` sees: `(lun, logical unit, write_protected)`.
    pub fn luns_for(&self, initiator: &str) -> Vec<(u64, Arc<LogicalUnit>, bool)> {
        if let Some(acl) = self.acl(initiator) {
            acl.mapped_luns
                .iter()
                .filter_map(|m| {
                    self.luns
                        .iter()
                        .find(|l| l.index == m.tpg_lun)
                        .map(|l| (m.index, l.lu.clone(), m.write_protect))
                })
                .collect()
        } else if self.generate_node_acls {
            self.luns
                .iter()
                .map(|l| (l.index, l.lu.clone(), self.demo_mode_write_protect))
                .collect()
        } else {
            Vec::new()
        }
    }

    /// Whether a connection on `local` reaches this TPG.
    pub fn reachable_via(&self, local: SocketAddr) -> bool {
        self.portals.iter().any(|p| p.matches(local))
    }
}

/// An iSCSI target.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Target IQN.
    pub iqn: String,
    /// Portal groups.
    pub tpgs: Vec<Arc<TpgConfig>>,
}

/// Discovery session authentication (LIO `iscsi/discovery_auth`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveryAuth {
    /// CHAP is required for discovery sessions.
    pub enforce: bool,
    /// Credentials.
    pub chap: Option<ChapCredentials>,
}

/// A storage object opened for the configuration (kept for reuse on reload, flush at
/// shutdown and metrics).
#[derive(Debug, Clone)]
pub struct StorageObjectRuntime {
    /// Fingerprint of the definition; equal fingerprints share the logical unit.
    pub key: String,
    /// Storage object name.
    pub name: String,
    /// `/backstores/<plugin>/<name>`.
    pub path: String,
    /// The logical unit.
    pub lu: Arc<LogicalUnit>,
}

/// The whole target configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Targets.
    pub targets: Vec<Arc<TargetConfig>>,
    /// Storage objects referenced by LUNs.
    pub storage_objects: Vec<StorageObjectRuntime>,
    /// Discovery authentication.
    pub discovery_auth: DiscoveryAuth,
    /// Command window per session (MaxCmdSN - ExpCmdSN + 1).
    pub queue_depth: u32,
    /// Worker threads executing SCSI commands (0 = two per CPU, at least 4).
    pub workers: usize,
    /// Where SCSI commands run: the connection's reader thread or the worker pool.
    pub execution: Execution,
    /// Login must finish within this time.
    pub login_timeout: Duration,
    /// How long shutdown waits for in-flight commands and logouts.
    pub shutdown_grace: Duration,
}

/// Largest command (expected data transfer length) that [`Execution::Auto`] runs on the
/// reader thread. Larger transfers go to the pool so that the reader keeps receiving the
/// next PDUs while the data is copied (measured in `bench/README.md`).
pub const AUTO_INLINE_MAX: u32 = 64 << 10;

/// Where a SCSI command is executed once it is ready (all its Data-Out received).
///
/// Running a command on the connection's reader thread saves a thread hand-off (two
/// context switches) per command; running it on the pool lets the reader parse the next
/// PDUs meanwhile. Either way a command only runs inline when no further received bytes
/// are waiting to be parsed, so a pipelined burst still spreads over the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Execution {
    /// Commands of up to [`AUTO_INLINE_MAX`] bytes on LUNs whose backstore is local run
    /// inline; larger ones, and every command on a network backstore (RBD), on the pool.
    #[default]
    Auto,
    /// Every command runs inline when the reader is idle (RAM and fast local stores).
    Inline,
    /// Every command runs on the worker pool.
    Pool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            targets: Vec::new(),
            storage_objects: Vec::new(),
            discovery_auth: DiscoveryAuth::default(),
            queue_depth: 128,
            workers: 0,
            execution: Execution::Auto,
            login_timeout: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

impl ServerConfig {
    /// Finds a target by name (IQNs compare case-insensitively, RFC 3722).
    pub fn target(&self, iqn: &str) -> Option<&Arc<TargetConfig>> {
        self.targets
            .iter()
            .find(|t| t.iqn.eq_ignore_ascii_case(iqn))
    }

    /// Every distinct portal address of enabled TPGs (what to listen on).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = Vec::new();
        for t in &self.targets {
            for tpg in &t.tpgs {
                if !tpg.enabled {
                    continue;
                }
                for p in &tpg.portals {
                    if !v.contains(&p.addr) {
                        v.push(p.addr);
                    }
                }
            }
        }
        v
    }

    /// Checks cross-references and value ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if self.queue_depth == 0 || self.queue_depth > 65536 {
            return bad(format!("queue depth {} not in 1..=65536", self.queue_depth));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !valid_iscsi_name(&t.iqn) {
                return bad(format!("target name {:?} is not a valid iSCSI name", t.iqn));
            }
            if self.targets[..i]
                .iter()
                .any(|o| o.iqn.eq_ignore_ascii_case(&t.iqn))
            {
                return bad(format!("target {} defined twice", t.iqn));
            }
            for (j, tpg) in t.tpgs.iter().enumerate() {
                if tpg.tag == 0 {
                    return bad(format!("{}: TPG tag 0 is reserved", t.iqn));
                }
                if t.tpgs[..j].iter().any(|o| o.tag == tpg.tag) {
                    return bad(format!("{}: TPG {} defined twice", t.iqn, tpg.tag));
                }
                for acl in &tpg.acls {
                    for m in &acl.mapped_luns {
                        if !tpg.luns.iter().any(|l| l.index == m.tpg_lun) {
                            return bad(format!(
                                "{} tpg {}: ACL {} maps LUN {} to missing TPG LUN {}",
                                t.iqn, tpg.tag, acl.initiator, m.index, m.tpg_lun
                            ));
                        }
                    }
                }
                let o = &tpg.params.offer;
                if !(512..(1 << 24)).contains(&o.max_recv_data_segment_length)
                    || !(512..(1 << 24)).contains(&o.max_burst_length)
                    || !(512..(1 << 24)).contains(&o.first_burst_length)
                {
                    return bad(format!(
                        "{} tpg {}: segment/burst lengths must be in 512..16777215",
                        t.iqn, tpg.tag
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks the shape of an iSCSI name: `iqn.`, `eui.` or `naa.` followed by allowed
/// characters (RFC 7143 4.2.7.1; RFC 3722 stringprep output is lower-case ASCII here).
pub fn valid_iscsi_name(name: &str) -> bool {
    if name.len() > 223 || name.len() < 5 {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    ok_chars
        && (lower.starts_with("iqn.") || lower.starts_with("eui.") || lower.starts_with("naa."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_address_format() {
        assert_eq!(
            target_address("127.0.0.1:3260".parse().unwrap(), 1),
            "127.0.0.1:3260,1"
        );
        assert_eq!(
            target_address("[::1]:3261".parse().unwrap(), 7),
            "[::1]:3261,7"
        );
    }

    #[test]
    fn portal_matching() {
        let any = PortalConfig {
            addr: "0.0.0.0:3260".parse().unwrap(),
        };
        assert!(any.matches("127.0.0.1:3260".parse().unwrap()));
        assert!(!any.matches("127.0.0.1:3261".parse().unwrap()));
        let lo = PortalConfig {
            addr: "127.0.0.1:3260".parse().unwrap(),
        };
        assert!(lo.matches("[::ffff:127.0.0.1]:3260".parse().unwrap()));
        assert!(!lo.matches("[::1]:3260".parse().unwrap()));
    }

    #[test]
    fn names() {
        assert!(valid_iscsi_name("iqn.2003-01.org.rustio:demo-1a2b"));
        assert!(valid_iscsi_name("eui.02004567A425678D"));
        assert!(!valid_iscsi_name("foo"));
        assert!(!valid_iscsi_name("iqn.bad name"));
    }

    #[test]
    fn chap_fields() {
        assert_eq!(
            ChapCredentials::from_fields(None, Some("x"), None, None),
            None
        );
        let c = ChapCredentials::from_fields(Some("u"), Some("p"), Some("mu"), Some("mp")).unwrap();
        assert_eq!(c.mutual, Some(("mu".into(), "mp".into())));
        let c = ChapCredentials::from_fields(Some("u"), Some("p"), Some("mu"), None).unwrap();
        assert_eq!(c.mutual, None);
    }
}
