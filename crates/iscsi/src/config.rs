//! Runtime configuration of the target: plain structs that targetcli's `saveconfig.json`
//! maps onto (see [`crate::saveconfig`]) and that tests build directly.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustio_scsi::LogicalUnit;

use rustio_iscsi_proto::chap::ChapAlgorithm;
use rustio_iscsi_proto::text::TargetOffer;

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
    /// Builds credentials from the four saveconfig fields; `None` when none is set.
    /// Half-set pairs are kept (with the missing half empty) so that
    /// [`ServerConfig::validate`] refuses them with the object's path instead of
    /// silently serving a login with an empty secret or dropping mutual CHAP.
    pub fn from_fields(
        userid: Option<&str>,
        password: Option<&str>,
        mutual_userid: Option<&str>,
        mutual_password: Option<&str>,
    ) -> Option<ChapCredentials> {
        let set = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_string);
        let (userid, password) = (set(userid), set(password));
        let mutual = match (set(mutual_userid), set(mutual_password)) {
            (None, None) => None,
            (u, p) => Some((u.unwrap_or_default(), p.unwrap_or_default())),
        };
        if userid.is_none() && password.is_none() && mutual.is_none() {
            return None;
        }
        Some(ChapCredentials {
            userid: userid.unwrap_or_default(),
            password: password.unwrap_or_default(),
            mutual,
        })
    }

    /// Why these credentials cannot be served: a user name without a secret (or the
    /// reverse), for one-way or mutual CHAP. Linux LIO likewise refuses CHAP unless both
    /// the user name and the password are set (`chap_server_open`); an empty secret
    /// would let a response computed over the challenge alone in.
    pub fn problem(&self) -> Option<&'static str> {
        match (self.userid.is_empty(), self.password.is_empty()) {
            (false, true) => return Some("chap_userid set but chap_password empty"),
            (true, false) => return Some("chap_password set but chap_userid empty"),
            (true, true) if self.mutual.is_some() => {
                return Some("mutual CHAP set without chap_userid and chap_password")
            }
            _ => {}
        }
        match &self.mutual {
            Some((u, p)) if !u.is_empty() && p.is_empty() => {
                Some("chap_mutual_userid set but chap_mutual_password empty")
            }
            Some((u, p)) if u.is_empty() && !p.is_empty() => {
                Some("chap_mutual_password set but chap_mutual_userid empty")
            }
            _ => None,
        }
    }

    /// Secrets shorter than RFC 7143 9.2.1's 96 bits ([`rustio_iscsi_proto::chap::MIN_SECRET_LEN`]):
    /// `(field, length)`. Served anyway, as LIO serves them, but reported at load.
    pub fn short_secrets(&self) -> Vec<(&'static str, usize)> {
        let mut v = Vec::new();
        if self.password.len() < rustio_iscsi_proto::chap::MIN_SECRET_LEN {
            v.push(("chap_password", self.password.len()));
        }
        if let Some((_, p)) = &self.mutual {
            if p.len() < rustio_iscsi_proto::chap::MIN_SECRET_LEN {
                v.push(("chap_mutual_password", p.len()));
            }
        }
        v
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
    /// This initiator may reset the whole target with TARGET WARM RESET (node ACL
    /// attribute `tmr_warm_reset`, default off as in LIO's `iscsi_node_attrib`; when off
    /// the TMF is answered "Function authorization failed", RFC 7143 11.6.1).
    pub tmr_warm_reset: bool,
    /// The same for TARGET COLD RESET (node ACL attribute `tmr_cold_reset`).
    pub tmr_cold_reset: bool,
}

impl AclConfig {
    /// An ACL for `initiator` with no CHAP credentials of its own, the TPG's
    /// authentication setting, no mapped LUNs and no target reset rights.
    pub fn new(initiator: impl Into<String>) -> AclConfig {
        AclConfig {
            initiator: initiator.into(),
            chap: None,
            authentication: None,
            mapped_luns: Vec::new(),
            tmr_warm_reset: false,
            tmr_cold_reset: false,
        }
    }
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
    /// How long a connection's reader, having found its socket empty, keeps polling it
    /// before it sleeps (zero: never polls). See `conn::io::Reader::wait_pdu`.
    pub busy_poll: Duration,
    /// Login must finish within this time.
    pub login_timeout: Duration,
    /// How long shutdown waits for in-flight commands and logouts.
    pub shutdown_grace: Duration,
    /// Connections kept at once (every phase); more are closed when accepted.
    pub max_connections: usize,
    /// Connections kept at once from one source IP address.
    pub max_connections_per_source: usize,
    /// Connections still in the login phase (not yet authenticated), in total.
    pub max_pending_logins: usize,
    /// Connections still in the login phase from one source IP address.
    pub max_pending_logins_per_source: usize,
    /// A send to an initiator that makes no progress for this long (the peer stopped
    /// reading its socket) closes the connection (`SO_SNDTIMEO`).
    pub send_timeout: Duration,
    /// A write command that waits this long for Data-Out it was promised (unsolicited
    /// data, or data for an R2T we sent) without any arriving closes the connection and
    /// releases its buffer budget.
    pub data_out_timeout: Duration,
    /// Bytes of Data-Out buffers one session may hold (all its write commands together).
    pub max_session_write_buffer: u64,
    /// Bytes of Data-Out buffers the whole server may hold.
    pub max_write_buffer: u64,
    /// Slowest transfer rate (bytes per second) a peer may keep up, in both directions:
    /// one response must be sent within `send_timeout + size ÷ rate` and one write's
    /// Data-Out must arrive within `data_out_timeout + size ÷ rate`, however the bytes
    /// trickle (a peer that reads or sends a little at a time never trips the
    /// no-progress timeouts alone).
    pub min_transfer_rate: u64,
    /// READs of at least this many bytes from plain-file LUNs send their Data-In
    /// straight from the page cache (`sendfile(2)`) instead of reading it into a buffer
    /// and copying that into the socket; `None`: never. Connections with a data digest
    /// always copy (the digest needs the bytes).
    pub sendfile_min: Option<u64>,
}

/// Default [`ServerConfig::max_connections`]: far above what initiators open (one
/// connection per session and path; the benchmarks run 16 sessions × a few), far below
/// the default 1024-fd soft limit's worth of threads once each connection's 3 fds count.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [`ServerConfig::max_connections_per_source`]: a host with many sessions and
/// MC/S still fits; one address cannot take the whole portal.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 128;
/// Default [`ServerConfig::max_pending_logins`]: logins take milliseconds, so 64 in
/// flight is a storm of reconnects, not normal use.
pub const DEFAULT_MAX_PENDING_LOGINS: usize = 128;
/// Default [`ServerConfig::max_pending_logins_per_source`].
pub const DEFAULT_MAX_PENDING_LOGINS_PER_SOURCE: usize = 32;
/// Upper bound of every timeout of the configuration (one day).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Default [`ServerConfig::send_timeout`]: longer than any TCP retransmission stall a
/// live peer recovers from, short enough that a peer that stopped reading is gone soon.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServerConfig::data_out_timeout`].
pub const DEFAULT_DATA_OUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServerConfig::max_session_write_buffer`]: one largest transfer
/// ([`crate::MAX_TRANSFER_BYTES`]), or e.g. 64 WRITEs of 1 MiB in flight per session.
pub const DEFAULT_MAX_SESSION_WRITE_BUFFER: u64 = 64 << 20;
/// Default [`ServerConfig::max_write_buffer`]: eight sessions' full budgets; 16 sessions
/// of 32 × 1 MiB WRITEs in flight, the benchmark's heaviest load.
pub const DEFAULT_MAX_WRITE_BUFFER: u64 = 512 << 20;
/// Default [`ServerConfig::min_transfer_rate`]: 1 MiB/s, far below any working link
/// (a 16 MiB transfer gets 16 s on top of the timeout), far above a peer that holds
/// a worker or a buffer by dripping.
pub const DEFAULT_MIN_TRANSFER_RATE: u64 = 1 << 20;

/// Default [`ServerConfig::sendfile_min`] (measured in bench/README.md, "Optimisations").
pub const DEFAULT_SENDFILE_MIN: u64 = 64 << 10;

/// Largest command (expected data transfer length) that [`Execution::Auto`] runs on the
/// reader thread. Larger transfers go to the pool so that the reader keeps receiving the
/// next PDUs while the data is copied (measured in `bench/README.md`).
pub const AUTO_INLINE_MAX: u32 = 64 << 10;

/// Where a SCSI command is executed once it is ready (all its Data-Out received): the
/// type shared with the TCMU runner. Inline here means on the connection's reader
/// thread, and only when no further received bytes are waiting to be parsed, so a
/// pipelined burst still spreads over the pool; `Auto` runs commands of up to
/// [`AUTO_INLINE_MAX`] bytes inline on LUNs whose backstore does not wait on the network.
pub use rustio_stores::Execution;

/// Default [`ServerConfig::busy_poll`]: 50 µs. Polling wins latency on a host with CPU to
/// spare and would cost throughput on a busy one (bench/README.md), so a reader polls
/// only while some CPU of the host has nothing to run (`conn::io::spare_cpu`).
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            targets: Vec::new(),
            storage_objects: Vec::new(),
            discovery_auth: DiscoveryAuth::default(),
            queue_depth: 128,
            workers: 0,
            execution: Execution::Auto,
            busy_poll: DEFAULT_BUSY_POLL,
            login_timeout: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(3),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            max_pending_logins: DEFAULT_MAX_PENDING_LOGINS,
            max_pending_logins_per_source: DEFAULT_MAX_PENDING_LOGINS_PER_SOURCE,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            data_out_timeout: DEFAULT_DATA_OUT_TIMEOUT,
            max_session_write_buffer: DEFAULT_MAX_SESSION_WRITE_BUFFER,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            min_transfer_rate: DEFAULT_MIN_TRANSFER_RATE,
            sendfile_min: Some(DEFAULT_SENDFILE_MIN),
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

    /// Every set of CHAP credentials with the path of the object holding it
    /// (`/iscsi/discovery_auth`, `/iscsi/<iqn>/tpg<N>`, `/iscsi/<iqn>/tpg<N>/acls/<name>`).
    pub fn chap_credentials(&self) -> Vec<(String, &ChapCredentials)> {
        let mut v = Vec::new();
        if let Some(c) = &self.discovery_auth.chap {
            v.push(("/iscsi/discovery_auth".to_string(), c));
        }
        for t in &self.targets {
            for tpg in &t.tpgs {
                if let Some(c) = &tpg.chap {
                    v.push((format!("/iscsi/{}/tpg{}", t.iqn, tpg.tag), c));
                }
                for acl in &tpg.acls {
                    if let Some(c) = &acl.chap {
                        v.push((acl_path(&t.iqn, tpg.tag, &acl.initiator), c));
                    }
                }
            }
        }
        v
    }

    /// Warnings worth logging at load: CHAP secrets shorter than 12 bytes (RFC 7143
    /// 9.2.1). Linux LIO enforces no minimum, so neither do we; we say so instead.
    pub fn chap_warnings(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (path, c) in self.chap_credentials() {
            for (field, len) in c.short_secrets() {
                v.push(format!(
                    "{path}: {field} is {len} bytes; RFC 7143 9.2.1 asks for at least {} \
                     (96 bits)",
                    rustio_iscsi_proto::chap::MIN_SECRET_LEN
                ));
            }
        }
        v
    }

    /// Checks cross-references, value ranges, names (with the LIO side's validator) and
    /// CHAP credentials (no user name without its secret, RFC 7143 12.1.3).
    pub fn validate(&self) -> crate::Result<()> {
        use crate::ConfigError as E;
        let bad = |e: E| Err(crate::Error::Config(e));
        for (path, c) in self.chap_credentials() {
            if let Some(problem) = c.problem() {
                return bad(E::ChapIncomplete { path, problem });
            }
        }
        if self.queue_depth == 0 || self.queue_depth > 65536 {
            return bad(E::QueueDepth(self.queue_depth));
        }
        if self.max_connections == 0
            || self.max_connections_per_source == 0
            || self.max_pending_logins == 0
            || self.max_pending_logins_per_source == 0
        {
            return bad(E::ConnectionLimits);
        }
        for (what, d) in [
            ("login timeout", self.login_timeout),
            ("send timeout", self.send_timeout),
            ("Data-Out timeout", self.data_out_timeout),
        ] {
            // Zero would disable SO_SNDTIMEO / the deadline rather than make it short;
            // more than a day is a typo, and deadlines (now + timeout) must not overflow.
            if d.is_zero() || d > MAX_TIMEOUT {
                return bad(E::Timeout { what });
            }
        }
        if self.max_session_write_buffer == 0 || self.max_write_buffer == 0 {
            return bad(E::WriteBufferLimits);
        }
        if self.min_transfer_rate == 0 {
            return bad(E::MinTransferRate);
        }
        for (i, t) in self.targets.iter().enumerate() {
            // The same validator as the LIO side (rustio-config), so both refuse the
            // same names (RFC 3720 3.2.6, RFC 3722).
            if let Err(reason) = rustio_config::wwn::validate_iscsi_name(&t.iqn) {
                return bad(E::TargetName {
                    iqn: t.iqn.clone(),
                    reason,
                });
            }
            if self.targets[..i]
                .iter()
                .any(|o| o.iqn.eq_ignore_ascii_case(&t.iqn))
            {
                return bad(E::DuplicateTarget(t.iqn.clone()));
            }
            for (j, tpg) in t.tpgs.iter().enumerate() {
                if tpg.tag == 0 {
                    return bad(E::TpgTagReserved { iqn: t.iqn.clone() });
                }
                if t.tpgs[..j].iter().any(|o| o.tag == tpg.tag) {
                    return bad(E::DuplicateTpg {
                        iqn: t.iqn.clone(),
                        tag: tpg.tag,
                    });
                }
                for acl in &tpg.acls {
                    if let Err(reason) = rustio_config::wwn::validate_iscsi_name(&acl.initiator) {
                        return bad(E::InitiatorName {
                            path: acl_path(&t.iqn, tpg.tag, &acl.initiator),
                            initiator: acl.initiator.clone(),
                            reason,
                        });
                    }
                    for m in &acl.mapped_luns {
                        if !tpg.luns.iter().any(|l| l.index == m.tpg_lun) {
                            return bad(E::MappedLunMissing {
                                iqn: t.iqn.clone(),
                                tag: tpg.tag,
                                initiator: acl.initiator.clone(),
                                index: m.index,
                                tpg_lun: m.tpg_lun,
                            });
                        }
                    }
                }
                let o = &tpg.params.offer;
                if !(512..(1 << 24)).contains(&o.max_recv_data_segment_length)
                    || !(512..(1 << 24)).contains(&o.max_burst_length)
                    || !(512..(1 << 24)).contains(&o.first_burst_length)
                {
                    return bad(E::SegmentLengths {
                        iqn: t.iqn.clone(),
                        tag: tpg.tag,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The path of a node ACL in error messages, as targetcli shows it.
fn acl_path(iqn: &str, tag: u16, initiator: &str) -> String {
    format!("/iscsi/{iqn}/tpg{tag}/acls/{initiator}")
}

/// Whether `name` is a valid iSCSI name up to case: the shared validator of
/// `rustio-config` (RFC 3720 3.2.6) applied to the lower-case form, since names compare
/// case-insensitively once normalized (RFC 3722). Used for names received on the wire.
pub fn valid_iscsi_name(name: &str) -> bool {
    rustio_config::wwn::validate_iscsi_name(&name.to_ascii_lowercase()).is_ok()
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
        assert!(valid_iscsi_name("IQN.2003-01.org.rustio:Host"));
        assert!(!valid_iscsi_name("foo"));
        assert!(!valid_iscsi_name("iqn.bad name"));
        // Month 13: the old shape check let it through.
        assert!(!valid_iscsi_name("iqn.2026-13.example:t"));
    }

    fn one_target(iqn: &str, edit: impl FnOnce(&mut TpgConfig)) -> ServerConfig {
        let mut tpg = TpgConfig::new(1);
        edit(&mut tpg);
        ServerConfig {
            targets: vec![Arc::new(TargetConfig {
                iqn: iqn.into(),
                tpgs: vec![Arc::new(tpg)],
            })],
            ..ServerConfig::default()
        }
    }

    fn config_error(c: &ServerConfig) -> String {
        match c.validate() {
            Err(crate::Error::Config(e)) => e.to_string(),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn timeouts_are_bounded_both_ways() {
        let ok = one_target("iqn.2026-01.com.example:t", |_| {});
        assert!(ok.validate().is_ok());
        for d in [
            Duration::ZERO,
            MAX_TIMEOUT + Duration::from_secs(1),
            Duration::MAX,
        ] {
            let c = ServerConfig {
                send_timeout: d,
                ..ok.clone()
            };
            assert!(
                config_error(&c).contains("send timeout must be between"),
                "{d:?}"
            );
        }
        let c = ServerConfig {
            data_out_timeout: MAX_TIMEOUT,
            ..ok
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn target_names_use_the_lio_validator() {
        // rustio serve used to accept this; the LIO side (rustio-config) refuses it.
        let m = config_error(&one_target("iqn.2026-13.EXAMPLE:t", |_| {}));
        assert!(m.contains("iqn.2026-13.EXAMPLE:t"), "{m}");
        assert!(one_target("iqn.2026-12.example:t", |_| {})
            .validate()
            .is_ok());
        let m = config_error(&one_target("iqn.2026-12.example:t", |t| {
            t.acls.push(AclConfig {
                initiator: "iqn.2026-00.x:y".into(),
                chap: None,
                authentication: None,
                mapped_luns: vec![],
                tmr_warm_reset: false,
                tmr_cold_reset: false,
            })
        }));
        assert!(
            m.starts_with("/iscsi/iqn.2026-12.example:t/tpg1/acls/iqn.2026-00.x:y"),
            "{m}"
        );
    }

    fn acl_with(chap: Option<ChapCredentials>) -> ServerConfig {
        one_target("iqn.2026-01.example:t", |t| {
            t.acls.push(AclConfig {
                initiator: "iqn.2026-01.example:i".into(),
                chap,
                authentication: None,
                mapped_luns: vec![],
                tmr_warm_reset: false,
                tmr_cold_reset: false,
            })
        })
    }

    #[test]
    fn empty_chap_secrets_are_refused_with_the_object_path() {
        let acl = "/iscsi/iqn.2026-01.example:t/tpg1/acls/iqn.2026-01.example:i";
        let f = ChapCredentials::from_fields;
        for (creds, why) in [
            (
                f(Some("user"), None, None, None),
                "chap_userid set but chap_password empty",
            ),
            (
                f(Some("user"), Some(""), None, None),
                "chap_userid set but chap_password empty",
            ),
            (
                f(None, Some("secretsecret"), None, None),
                "chap_password set but chap_userid empty",
            ),
            (
                f(Some("u"), Some("secretsecret"), Some("mu"), None),
                "chap_mutual_userid set but chap_mutual_password empty",
            ),
            (
                f(Some("u"), Some("secretsecret"), None, Some("mutualsecret")),
                "chap_mutual_password set but chap_mutual_userid empty",
            ),
            (
                f(None, None, Some("mu"), Some("mutualsecret")),
                "mutual CHAP set without chap_userid and chap_password",
            ),
        ] {
            assert_eq!(config_error(&acl_with(creds)), format!("{acl}: {why}"));
        }
        let ok = f(
            Some("u"),
            Some("secretsecret"),
            Some("mu"),
            Some("mutualsecret1"),
        );
        assert!(acl_with(ok).validate().is_ok());
        // TPG-wide and discovery credentials are checked the same way.
        let tpg = one_target("iqn.2026-01.example:t", |t| {
            t.chap = f(Some("u"), Some(""), None, None)
        });
        assert_eq!(
            config_error(&tpg),
            "/iscsi/iqn.2026-01.example:t/tpg1: chap_userid set but chap_password empty"
        );
        let disc = ServerConfig {
            discovery_auth: DiscoveryAuth {
                enforce: true,
                chap: f(Some("d"), None, None, None),
            },
            ..ServerConfig::default()
        };
        assert_eq!(
            config_error(&disc),
            "/iscsi/discovery_auth: chap_userid set but chap_password empty"
        );
    }

    #[test]
    fn short_secrets_are_reported_not_refused() {
        let c = acl_with(ChapCredentials::from_fields(
            Some("u"),
            Some("short"),
            Some("mu"),
            Some("twelve-bytes"),
        ));
        assert!(c.validate().is_ok());
        assert_eq!(
            c.chap_warnings(),
            vec![
                "/iscsi/iqn.2026-01.example:t/tpg1/acls/iqn.2026-01.example:i: chap_password \
                 is 5 bytes; RFC 7143 9.2.1 asks for at least 12 (96 bits)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn chap_fields() {
        assert_eq!(
            ChapCredentials::from_fields(None, Some("x"), None, None)
                .unwrap()
                .problem(),
            Some("chap_password set but chap_userid empty")
        );
        let c = ChapCredentials::from_fields(Some("u"), Some("p"), Some("mu"), Some("mp")).unwrap();
        assert_eq!(c.mutual, Some(("mu".into(), "mp".into())));
        // A half-set pair is kept so that validation can refuse it.
        let c = ChapCredentials::from_fields(Some("u"), Some("p"), Some("mu"), None).unwrap();
        assert_eq!(c.mutual, Some(("mu".into(), String::new())));
        assert_eq!(ChapCredentials::from_fields(None, None, None, None), None);
        assert_eq!(
            ChapCredentials::from_fields(Some(""), Some(""), None, Some("")),
            None
        );
    }
}
