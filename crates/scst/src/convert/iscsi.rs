//! `TARGET_DRIVER iscsi` → iSCSI targets with one TPG each: portals, LUNs, node ACLs,
//! CHAP and login parameters.
//!
//! Access control. SCST gives an initiator the LUNs of the first initiator group with a
//! matching `INITIATOR` name or pattern (case-insensitive; scstadmin creates a target's
//! groups in name order, so "first" is the alphabetically first), else the target's
//! default LUN set. LIO gives an
//! initiator with a node ACL (exact name) its mapped LUNs; with `generate_node_acls=1`
//! ("demo mode") every other initiator sees *all* TPG LUNs, write-protected per TPG. So:
//! * exact `INITIATOR` names become node ACLs with the LUNs of the group SCST serves them;
//! * the set unlisted initiators see in SCST (the default LUNs, or the LUNs of a group
//!   whose pattern is `*`) becomes the TPG LUN set with demo mode on, but only when that
//!   grants nobody more than SCST did: not when an ACL needs a device outside that set
//!   (demo mode would show it to everyone) and not when a narrower pattern group would
//!   see LUNs it did not see in SCST;
//! * other patterns cannot be expressed; matching initiators get at most what they got.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use rustio_config::model::Settings;
use rustio_config::validate::check_chap_value;
use rustio_config::wwn::validate_iscsi_name;
use rustio_config::{
    Chap, ConfigValue, FabricModule, Lun, MappedLun, NodeAcl, Portal, Target, Tpg,
};

use super::{bad_value, boolean, ulong, Converter, DevState, TargetState};
use crate::ast::{self, Attribute};
use crate::error::{Error, ErrorKind, Pos};
use crate::report::Fidelity;
use crate::values::{is_pattern, mask_account, matches_everything, parse_account, wildcmp};

/// The IANA-assigned `iscsi-target` port, where iSCSI-SCST listens by default.
const ISCSI_PORT: u64 = 3260;

/// LIO's limit for `default_cmdsn_depth` (`TA_DEFAULT_CMDSN_DEPTH_MAX`).
const CMDSN_DEPTH_MAX: u64 = 512;

/// LIO's limits for the node ACL NOP-In timers (`NA_NOPIN_TIMEOUT_MIN/MAX`,
/// `NA_NOPIN_RESPONSE_TIMEOUT_MIN/MAX`, iscsi_target_core.h), seconds.
const NOPIN_MIN: u64 = 3;
const NOPIN_MAX: u64 = 60;

#[derive(Debug, Clone)]
struct Account {
    user: String,
    secret: String,
}

/// One LUN of a LUN set whose device is imported.
#[derive(Debug, Clone)]
struct Use {
    number: u32,
    dev: usize,
    /// Effective read-only: the LUN's `read_only` or the device's.
    ro: bool,
    /// A direct-access device (LIO's demo mode write-protects only those).
    disk: bool,
    pos: Pos,
}

impl Use {
    fn key(&self) -> (u32, usize, bool) {
        (self.number, self.dev, self.ro)
    }
}

fn same_set(a: &[Use], b: &[Use]) -> bool {
    let ka: BTreeSet<_> = a.iter().map(Use::key).collect();
    let kb: BTreeSet<_> = b.iter().map(Use::key).collect();
    ka == kb
}

/// Whether demo mode write-protects a LUN: `demo_mode_write_protect` applies to
/// direct-access devices only (core_tpg_add_node_to_devs, "Allow only optical drives to
/// issue R/W in default RO demo mode").
fn demo_ro(u: &Use, wp: bool) -> bool {
    wp && u.disk
}

/// Whether demo mode showing `f` (write-protected when `wp`) gives nothing beyond `g`.
fn grants_no_more(f: &[Use], g: &[Use], wp: bool) -> bool {
    f.iter().all(|x| {
        g.iter()
            .any(|y| y.number == x.number && y.dev == x.dev && (demo_ro(x, wp) || !y.ro))
    })
}

struct GroupInfo<'a> {
    g: &'a ast::Group,
    uses: Vec<Use>,
    exact: Vec<&'a ast::Initiator>,
    all: Vec<&'a ast::Initiator>,
    partial: Vec<&'a ast::Initiator>,
    /// Whether the group has any IncomingUser, usable or not.
    auth_required: bool,
    incoming: Option<Account>,
    outgoing: Option<Account>,
    /// Imported ACL names of this group.
    acls: Vec<String>,
}

fn account(a: &Attribute) -> Result<Account, Error> {
    let (user, secret) = parse_account(a.value_str()).ok_or_else(|| {
        // The error names the attribute but never echoes what may be a secret.
        Error::new(
            a.value_pos.unwrap_or(a.pos),
            ErrorKind::BadValue {
                attribute: a.name.clone(),
                value: if a.value_str().split_whitespace().count() > 1 {
                    mask_account(a.value_str())
                } else {
                    a.value_str().to_owned()
                },
                reason: "expected \"<user name> <secret>\"".to_owned(),
            },
        )
    })?;
    Ok(Account { user, secret })
}

/// Why LIO cannot store an account (rtslib and the kernel reject control characters,
/// values over 255 bytes and the word `NULL`).
fn unusable(acc: &Account) -> Option<String> {
    if let Err(e) = check_chap_value(&acc.user) {
        return Some(format!("the user name is unusable in LIO: {e}"));
    }
    // Never echo a secret, not even in an error message.
    check_chap_value(&acc.secret).err().map(|_| {
        "the secret is unusable in LIO (it must be 1-255 bytes without control characters and not the \
         word the kernel uses for unset)"
            .to_owned()
    })
}

fn chap(incoming: Option<&Account>, outgoing: Option<&Account>) -> Chap {
    let mut c = Chap::default();
    if let Some(i) = incoming {
        c.chap_userid = Some(i.user.clone());
        c.chap_password = Some(i.secret.clone());
        if let Some(o) = outgoing {
            c.chap_mutual_userid = Some(o.user.clone());
            c.chap_mutual_password = Some(o.secret.clone());
        }
    }
    c
}

fn int(v: u64) -> ConfigValue {
    i64::try_from(v)
        .map(ConfigValue::Int)
        .unwrap_or(ConfigValue::UInt(v))
}

/// A portal from an `allowed_portal` value, when it is a plain address.
fn portal_address(v: &str) -> Option<String> {
    if let Ok(ip) = v.parse::<Ipv4Addr>() {
        return Some(ip.to_string());
    }
    let inner = v
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(v);
    inner.parse::<Ipv6Addr>().ok().map(|ip| format!("[{ip}]"))
}

/// How an iSCSI login key from the file is checked (RFC 7143 13).
enum ParamKind {
    /// Numeric with the RFC / LIO range.
    Number(u64, u64),
    /// Yes/No.
    Boolean,
    /// Digest list.
    Digest,
    /// Markers (RFC 7143 dropped them; LIO supports only No).
    Marker,
    /// Marker intervals.
    MarkInt,
    /// RDMAExtensions (RFC 7145 6.3): LIO negotiates it itself, on iSER portals only.
    Rdma,
    /// Not an LIO TPG parameter (the kernel's `param/` directory lacks it).
    NotInLio,
}

fn param_kind(name: &str) -> Option<ParamKind> {
    Some(match name {
        // RFC 7143 13.12, 13.13, 13.14: 512 to 2^24-1.
        "MaxRecvDataSegmentLength"
        | "MaxXmitDataSegmentLength"
        | "MaxBurstLength"
        | "FirstBurstLength" => ParamKind::Number(512, 16_777_215),
        // RFC 7143 13.17, 13.2: 1 to 65535.
        "MaxOutstandingR2T" | "MaxConnections" => ParamKind::Number(1, 65535),
        // RFC 7143 13.15, 13.16: 0 to 3600.
        "DefaultTime2Wait" | "DefaultTime2Retain" => ParamKind::Number(0, 3600),
        // RFC 7143 13.20: 0 to 2.
        "ErrorRecoveryLevel" => ParamKind::Number(0, 2),
        "InitialR2T" | "ImmediateData" | "DataPDUInOrder" | "DataSequenceInOrder" => {
            ParamKind::Boolean
        }
        "RDMAExtensions" => ParamKind::Rdma,
        "HeaderDigest" | "DataDigest" => ParamKind::Digest,
        "OFMarker" | "IFMarker" => ParamKind::Marker,
        "OFMarkInt" | "IFMarkInt" => ParamKind::MarkInt,
        "TargetRecvDataSegmentLength"
        | "InitiatorRecvDataSegmentLength"
        | "MaxAHSLength"
        | "TaggedBufferForSolicitedDataOnly"
        | "iSERHelloRequired"
        | "MaxOutstandingUnexpectedPDUs" => ParamKind::NotInLio,
        _ => return None,
    })
}

fn yes_no(a: &Attribute) -> Result<&'static str, Error> {
    match a.value_str().to_ascii_lowercase().as_str() {
        "yes" => Ok("Yes"),
        "no" => Ok("No"),
        _ => Err(bad_value(a, "expected Yes or No")),
    }
}

fn digest(a: &Attribute) -> Result<String, Error> {
    let mut out = Vec::new();
    for part in a.value_str().split(',') {
        match part.trim().to_ascii_lowercase().as_str() {
            "crc32c" => out.push("CRC32C"),
            "none" => out.push("None"),
            _ => return Err(bad_value(a, "expected a list of CRC32C and None")),
        }
    }
    Ok(out.join(","))
}

fn names(list: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = list
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOWN {
        s.push_str(&format!(" and {} more", list.len() - SHOWN));
    }
    s
}

/// Settings of a target that are applied once its ACLs are known.
#[derive(Default)]
struct Deferred<'b> {
    /// Whether the target has any IncomingUser, usable or not.
    auth_required: bool,
    incoming: Vec<(&'b Attribute, Account)>,
    outgoing: Vec<(&'b Attribute, Account)>,
    nopin: Vec<(&'b Attribute, &'static str, u64)>,
}

impl<'a> Converter<'a> {
    /// Keeps the accounts LIO can store; reports the others. Returns whether any
    /// account was given at all (CHAP stays required even when none is usable).
    fn usable_accounts<'b>(
        &mut self,
        given: Vec<(&'b Attribute, Account)>,
    ) -> (bool, Vec<(&'b Attribute, Account)>) {
        let any = !given.is_empty();
        let mut ok = Vec::new();
        for (a, acc) in given {
            match unusable(&acc) {
                Some(why) => self.attr(
                    a,
                    Fidelity::Unsupported,
                    format!("{why}; CHAP stays required, so logins with this account are refused"),
                ),
                None => ok.push((a, acc)),
            }
        }
        (any, ok)
    }

    pub(super) fn iscsi_driver(&mut self, d: &'a ast::TargetDriver) -> Result<(), Error> {
        let attrs = self.dedupe(
            &d.attributes,
            &[
                "IncomingUser",
                "OutgoingUser",
                "iSNSServer",
                "internal_portal",
            ],
        )?;
        let mut enabled: Option<bool> = None;
        let mut incoming = Vec::new();
        let mut outgoing = Vec::new();
        for a in &attrs {
            match a.name.as_str() {
                "enabled" => enabled = Some(boolean(a)?),
                "IncomingUser" => incoming.push((*a, account(a)?)),
                "OutgoingUser" => outgoing.push((*a, account(a)?)),
                _ => {}
            }
        }
        let (discovery_auth, incoming) = self.usable_accounts(incoming);
        let (_, outgoing) = self.usable_accounts(outgoing);
        let driver_enabled = enabled.unwrap_or(false);
        let mut detail = "LIO's iSCSI fabric (iscsi_target_mod)".to_owned();
        if enabled.is_none() {
            detail.push_str(
                "; no 'enabled 1' here, so iSCSI-SCST stayed disabled (its default) and every target is \
                 imported with enable false",
            );
        }
        self.push(d.pos, Fidelity::Exact, "TARGET_DRIVER iscsi", detail);

        for a in &attrs {
            match a.name.as_str() {
                "enabled" => {
                    if driver_enabled {
                        self.attr(
                            a,
                            Fidelity::Exact,
                            "LIO's iSCSI fabric needs no global switch",
                        );
                    } else {
                        self.attr(
                            a,
                            Fidelity::Exact,
                            "iSCSI-SCST accepts no logins while disabled: every target is imported with enable false",
                        );
                    }
                }
                "IncomingUser" | "OutgoingUser" => {}
                "iSNSServer" | "isns_entity_name" => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "LIO has no in-kernel iSNS client (target-isns is a separate daemon)",
                ),
                "internal_portal" => {
                    self.attr(a, Fidelity::Unsupported, "LIO has no CHAP-exempt portals")
                }
                "link_local" => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "LIO has no setting for link-local addresses in SendTargets replies",
                ),
                "trace_level" => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "iSCSI-SCST tracing setting; LIO logs through the kernel's dynamic debug",
                ),
                "open_state" | "version" => self.attr(
                    a,
                    Fidelity::Ignored,
                    "read-only iSCSI-SCST attribute; SCST ignores it too",
                ),
                _ => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "unknown iSCSI-SCST driver attribute",
                ),
            }
        }

        // Discovery (SendTargets) authentication.
        if discovery_auth && incoming.is_empty() {
            self.out.fabric_modules.push(FabricModule {
                name: "iscsi".into(),
                discovery_enable_auth: Some(true),
                ..FabricModule::default()
            });
        }
        if let Some((first, acc)) = incoming.first() {
            let mut fm = FabricModule {
                name: "iscsi".into(),
                discovery_enable_auth: Some(true),
                discovery_userid: Some(acc.user.clone()),
                discovery_password: Some(acc.secret.clone()),
                ..FabricModule::default()
            };
            self.attr(
                first,
                Fidelity::Exact,
                "discovery CHAP: fabric module iscsi discovery_enable_auth true with this account",
            );
            for (a, acc) in incoming.iter().skip(1) {
                let detail = format!(
                    "LIO's discovery authentication holds one account; discovery as {:?} is refused",
                    acc.user
                );
                self.attr(a, Fidelity::Approximate, detail);
            }
            if let Some((a, acc)) = outgoing.first() {
                fm.discovery_mutual_userid = Some(acc.user.clone());
                fm.discovery_mutual_password = Some(acc.secret.clone());
                self.attr(a, Fidelity::Exact, "discovery mutual CHAP account");
            }
            for (a, _) in outgoing.iter().skip(1) {
                self.attr(
                    a,
                    Fidelity::Approximate,
                    "only one mutual CHAP account can be used; the first is kept",
                );
            }
            self.out.fabric_modules.push(fm);
        } else {
            for (a, _) in &outgoing {
                self.attr(
                    a,
                    Fidelity::Ignored,
                    "without a usable IncomingUser no CHAP takes place, so there is no mutual CHAP either (in SCST as in LIO)",
                );
            }
        }

        for t in &d.targets {
            self.iscsi_target(t, driver_enabled)?;
        }
        Ok(())
    }

    /// The LUNs of a LUN set whose devices are imported; reports the others.
    fn lun_uses(&mut self, luns: &'a [ast::Lun]) -> Result<Vec<Use>, Error> {
        let mut uses = Vec::new();
        for l in luns {
            let attrs = self.dedupe(&l.attributes, &[])?;
            let mut lun_ro = false;
            for a in &attrs {
                if a.name == "read_only" {
                    lun_ro = boolean(a)?;
                }
            }
            let construct = format!("LUN {} {}", l.number, l.device);
            let state = self
                .dev_index
                .get(l.device.as_str())
                .map(|&i| (i, self.devs[i].state.clone()));
            match state {
                None => {
                    let why = format!(
                        "device {} is not defined in this file; scstadmin drops such LUNs",
                        l.device
                    );
                    self.push(l.pos, Fidelity::Ignored, construct, why.clone());
                    for a in attrs {
                        self.attr(a, Fidelity::Ignored, why.clone());
                    }
                }
                Some((_, DevState::NotImported(reason))) => {
                    let why = format!("device {} is not imported: {reason}", l.device);
                    self.push(l.pos, Fidelity::Unsupported, construct, why.clone());
                    for a in attrs {
                        self.attr(a, Fidelity::Unsupported, why.clone());
                    }
                }
                Some((
                    i,
                    DevState::Imported {
                        read_only, disk, ..
                    },
                )) => {
                    for a in attrs {
                        if a.name == "read_only" {
                            if lun_ro {
                                self.attr(
                                    a,
                                    Fidelity::Exact,
                                    "write-protected for every initiator that sees this LUN",
                                );
                            } else if read_only {
                                self.attr(
                                    a,
                                    Fidelity::Ignored,
                                    "the device itself is read-only, so the LUN is write-protected anyway",
                                );
                            } else {
                                self.attr(a, Fidelity::Exact, "writable, the default");
                            }
                        } else {
                            self.attr(a, Fidelity::Unsupported, "unknown LUN attribute");
                        }
                    }
                    uses.push(Use {
                        number: l.number,
                        dev: i,
                        ro: lun_ro || read_only,
                        disk,
                        pos: l.pos,
                    });
                }
            }
        }
        Ok(uses)
    }

    fn dev_name(&self, dev: usize) -> &str {
        self.devs
            .get(dev)
            .map(|d| d.ast.name.as_str())
            .unwrap_or("")
    }

    fn dev_so_path(&self, dev: usize) -> String {
        match self.devs.get(dev).map(|d| &d.state) {
            Some(DevState::Imported { so, .. }) => self.so_path(*so),
            _ => String::new(),
        }
    }

    fn iscsi_target(&mut self, t: &'a ast::Target, driver_enabled: bool) -> Result<(), Error> {
        let construct = format!("TARGET {}", t.name);

        // The target name (RFC 3720 3.2.6; LIO insists on the lowercase normal form).
        let (wwn, name_note) = match validate_iscsi_name(&t.name) {
            Ok(_) => (t.name.clone(), None),
            Err(e) => {
                let lower = t.name.to_ascii_lowercase();
                if lower != t.name && validate_iscsi_name(&lower).is_ok() {
                    (lower, Some(e))
                } else {
                    let why = format!("the target is not imported: LIO rejects its name: {e}");
                    self.targets
                        .insert(t.name.as_str(), TargetState::NotImported(why.clone()));
                    self.not_imported_target(t, &why);
                    return Ok(());
                }
            }
        };
        if self
            .out
            .targets
            .iter()
            .any(|x| x.fabric == "iscsi" && x.wwn == wwn)
        {
            let why = format!(
                "the target is not imported: {wwn} is already imported from another TARGET (iSCSI names are \
                 case-insensitive)"
            );
            self.targets
                .insert(t.name.as_str(), TargetState::NotImported(why.clone()));
            self.not_imported_target(t, &why);
            return Ok(());
        }

        let attrs = self.dedupe(
            &t.attributes,
            &["IncomingUser", "OutgoingUser", "allowed_portal"],
        )?;
        let mut tpg = Tpg::default();
        let mut tpg_attributes = Settings::new();
        let mut acl_attributes = Settings::new();
        let mut parameters = Settings::new();
        let mut deferred = Deferred::default();
        let mut enabled = false;
        let mut enabled_given = false;
        let mut rel_tgt_id: Option<(u64, Pos)> = None;
        let mut portals: Vec<Portal> = Vec::new();
        let mut allowed_portals = 0usize;

        for a in &attrs {
            let a: &Attribute = a;
            let name = a.name.as_str();
            if let Some(kind) = param_kind(name) {
                self.iscsi_param(a, kind, &mut parameters)?;
                continue;
            }
            match name {
                "enabled" => {
                    enabled = boolean(a)?;
                    enabled_given = true;
                    let d = match (enabled, driver_enabled) {
                        (true, true) => "TPG enable true".to_owned(),
                        (true, false) => {
                            "TPG enable false: the iSCSI driver itself is not enabled".to_owned()
                        }
                        (false, _) => "TPG enable false".to_owned(),
                    };
                    self.attr(a, Fidelity::Exact, d);
                }
                "rel_tgt_id" => {
                    let v = ulong(a)?;
                    if !(1..=65535).contains(&v) {
                        return Err(bad_value(
                            a,
                            "relative target port identifiers are 1-65535 (SPC-4 7.8.6.6)",
                        ));
                    }
                    rel_tgt_id = Some((v, a.pos));
                    self.attr(a, Fidelity::Approximate, rel_tgt_id_detail(v));
                }
                "IncomingUser" => deferred.incoming.push((a, account(a)?)),
                "OutgoingUser" => deferred.outgoing.push((a, account(a)?)),
                "allowed_portal" => {
                    allowed_portals += 1;
                    let v = a.value_str();
                    if is_pattern(v) {
                        self.attr(
                            a,
                            Fidelity::Unsupported,
                            "LIO portals are addresses, not patterns; no portal is created for it",
                        );
                    } else if let Some(ip) = portal_address(v) {
                        if portals.iter().any(|p| p.ip_address == ip) {
                            self.attr(
                                a,
                                Fidelity::Ignored,
                                format!("the same portal {ip}:{ISCSI_PORT} as above"),
                            );
                        } else {
                            self.attr(a, Fidelity::Exact, format!("portal {ip}:{ISCSI_PORT}"));
                            portals.push(Portal {
                                ip_address: ip,
                                port: ISCSI_PORT,
                                ..Portal::default()
                            });
                        }
                    } else {
                        self.attr(
                            a,
                            Fidelity::Unsupported,
                            "not an IP address; no portal is created for it",
                        );
                    }
                }
                "alias" => {
                    parameters.insert(
                        "TargetAlias".into(),
                        ConfigValue::Str(a.value_str().to_owned()),
                    );
                    self.attr(a, Fidelity::Exact, "parameter TargetAlias (RFC 7143 13.6)");
                }
                "QueuedCommands" => {
                    let v = ulong(a)?;
                    if v == 0 {
                        return Err(bad_value(a, "must be at least 1"));
                    }
                    let depth = v.min(CMDSN_DEPTH_MAX);
                    tpg_attributes.insert("default_cmdsn_depth".into(), int(depth));
                    if depth == v {
                        self.attr(
                            a,
                            Fidelity::Exact,
                            format!("attribute default_cmdsn_depth {depth}: the CmdSN window of each session (RFC 7143 4.2.2.1)"),
                        );
                    } else {
                        self.attr(
                            a,
                            Fidelity::Approximate,
                            format!("attribute default_cmdsn_depth {depth}: LIO's maximum CmdSN window is {CMDSN_DEPTH_MAX}"),
                        );
                    }
                }
                "NopInInterval" | "NopInTimeout" => {
                    let v = ulong(a)?;
                    let lio = if name == "NopInInterval" {
                        "nopin_timeout"
                    } else {
                        "nopin_response_timeout"
                    };
                    if v == 0 && name == "NopInInterval" {
                        self.attr(
                            a,
                            Fidelity::Unsupported,
                            "LIO cannot switch NOP-In pings off",
                        );
                    } else {
                        let clamped = v.clamp(NOPIN_MIN, NOPIN_MAX);
                        acl_attributes.insert(lio.into(), int(clamped));
                        deferred.nopin.push((a, lio, clamped));
                    }
                }
                "MaxSessions" => {
                    if ulong(a)? == 0 {
                        self.attr(a, Fidelity::Exact, "no session limit, as in LIO");
                    } else {
                        self.attr(
                            a,
                            Fidelity::Unsupported,
                            "LIO has no per-target session limit",
                        );
                    }
                }
                "RspTimeout" => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "LIO has no command response timeout",
                ),
                "redirect" => {
                    if a.value_str().is_empty() {
                        self.attr(a, Fidelity::Exact, "no redirection");
                    } else {
                        self.attr(a, Fidelity::Unsupported, "LIO has no login redirection");
                    }
                }
                "per_portal_acl" => {
                    if boolean(a)? {
                        self.attr(
                            a,
                            Fidelity::Unsupported,
                            "LIO has no per-portal access control",
                        );
                    } else {
                        self.attr(a, Fidelity::Exact, "the default");
                    }
                }
                "black_hole" => {
                    if ulong(a)? == 0 {
                        self.attr(a, Fidelity::Exact, "off, as in LIO");
                    } else {
                        self.attr(
                            a,
                            Fidelity::Unsupported,
                            "LIO has no command-dropping test mode",
                        );
                    }
                }
                "forward_src" | "forward_dst" | "forwarding" => {
                    if boolean(a)? {
                        self.attr(
                            a,
                            Fidelity::Unsupported,
                            "LIO has no command forwarding between cluster nodes",
                        );
                    } else {
                        self.attr(a, Fidelity::Exact, "off, as in LIO");
                    }
                }
                "aen_disabled" => {
                    if boolean(a)? {
                        self.attr(
                            a,
                            Fidelity::Exact,
                            "events are reported as unit attentions, as LIO does",
                        );
                    } else {
                        self.attr(
                            a,
                            Fidelity::Approximate,
                            "LIO reports events as unit attentions; it sends no asynchronous event notification",
                        );
                    }
                }
                "comment" => self.attr(
                    a,
                    Fidelity::Ignored,
                    "free text; SCST does not use it either",
                ),
                "tid" => self.attr(
                    a,
                    Fidelity::Ignored,
                    "read-only iSCSI-SCST attribute; SCST ignores it too",
                ),
                "addr_method" | "io_grouping_type" | "cpu_mask" => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "SCST setting without an LIO counterpart",
                ),
                _ => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "unknown iSCSI-SCST target attribute",
                ),
            }
        }
        if let Some(p) = t.hw_target {
            self.push(
                p,
                Fidelity::Ignored,
                "HW_TARGET",
                "has no meaning for iSCSI targets",
            );
        }
        let (auth_required, incoming) =
            self.usable_accounts(std::mem::take(&mut deferred.incoming));
        deferred.auth_required = auth_required;
        deferred.incoming = incoming;
        let (_, outgoing) = self.usable_accounts(std::mem::take(&mut deferred.outgoing));
        deferred.outgoing = outgoing;

        // LUN sets and groups.
        let default_uses = self.lun_uses(&t.luns)?;
        let mut groups: Vec<GroupInfo<'a>> = Vec::new();
        for g in &t.groups {
            let uses = self.lun_uses(&g.luns)?;
            let mut info = GroupInfo {
                g,
                uses,
                exact: Vec::new(),
                all: Vec::new(),
                partial: Vec::new(),
                auth_required: false,
                incoming: None,
                outgoing: None,
                acls: Vec::new(),
            };
            for i in &g.initiators {
                if matches_everything(&i.name) {
                    info.all.push(i);
                } else if is_pattern(&i.name) {
                    info.partial.push(i);
                } else {
                    info.exact.push(i);
                }
            }
            groups.push(info);
        }

        // scstadmin creates a target's groups in name order (`sort keys` in
        // applyGroupAssignments) and SCST gives a session the first group with a
        // matching entry (scst_find_tgt_acg_by_name_wild), else the default LUN set.
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.sort_by(|&a, &b| groups[a].g.name.cmp(&groups[b].g.name));
        let mut rank = vec![0usize; groups.len()];
        for (r, &gi) in order.iter().enumerate() {
            rank[gi] = r;
        }
        let first_all: Option<usize> = order.iter().copied().find(|&gi| !groups[gi].all.is_empty());
        // A group is live for unlisted initiators when no match-all group precedes it.
        let live = |gi: usize| first_all.is_none_or(|m| rank[gi] <= rank[m]);
        let group_asts: Vec<&'a ast::Group> = groups.iter().map(|g| g.g).collect();
        let effective = |name: &str| -> Option<usize> {
            order.iter().copied().find(|&gi| {
                group_asts[gi]
                    .initiators
                    .iter()
                    .any(|i| wildcmp(&i.name, name))
            })
        };

        // What an initiator without a matching exact entry sees in SCST.
        let f_uses: Vec<Use> = match first_all {
            Some(m) => groups[m].uses.clone(),
            None => default_uses.clone(),
        };
        let fallback_name = match first_all {
            Some(m) => format!("GROUP {}", groups[m].g.name),
            None => "the default LUN set".to_owned(),
        };
        let demo_wp = f_uses.iter().any(|u| u.ro && u.disk);

        // Authentication accounts (group-level ones are an extension SCST lacks).
        let target_in = deferred.incoming.first().map(|(_, acc)| acc.clone());
        let target_out = deferred.outgoing.first().map(|(_, acc)| acc.clone());
        for gi in &mut groups {
            let gattrs = self.dedupe(&gi.g.attributes, &["IncomingUser", "OutgoingUser"])?;
            let mut gin = Vec::new();
            let mut gout = Vec::new();
            for a in gattrs {
                match a.name.as_str() {
                    "IncomingUser" => gin.push((a, account(a)?)),
                    "OutgoingUser" => gout.push((a, account(a)?)),
                    "black_hole" => {
                        if ulong(a)? == 0 {
                            self.attr(a, Fidelity::Exact, "off, as in LIO");
                        } else {
                            self.attr(
                                a,
                                Fidelity::Unsupported,
                                "LIO has no command-dropping test mode",
                            );
                        }
                    }
                    "addr_method"
                    | "io_grouping_type"
                    | "cpu_mask"
                    | "per_sess_dedicated_tgt_threads" => self.attr(
                        a,
                        Fidelity::Unsupported,
                        "SCST setting without an LIO counterpart",
                    ),
                    _ => self.attr(
                        a,
                        Fidelity::Unsupported,
                        "unknown initiator group attribute",
                    ),
                }
            }
            let (g_auth, gin) = self.usable_accounts(gin);
            let (_, gout) = self.usable_accounts(gout);
            for (k, (a, acc)) in gin.iter().enumerate() {
                let detail = if k > 0 {
                    format!(
                        "LIO holds one CHAP account per ACL; logins as {:?} are refused",
                        acc.user
                    )
                } else {
                    "iSCSI-SCST has no per-group IncomingUser (it is a target attribute); imported as the CHAP \
                     account, with ACL attribute authentication 1, of the node ACLs this group serves"
                        .to_owned()
                };
                self.attr(a, Fidelity::Approximate, detail);
            }
            for (k, (a, _)) in gout.iter().enumerate() {
                let detail = if gin.is_empty() && target_in.is_none() {
                    "without a usable IncomingUser no CHAP takes place, so there is no mutual CHAP either"
                } else if k > 0 {
                    "only one mutual CHAP account can be used; the first is kept"
                } else {
                    "iSCSI-SCST has no per-group OutgoingUser; imported as the mutual CHAP account of the node \
                     ACLs this group serves"
                };
                self.attr(a, Fidelity::Approximate, detail);
            }
            gi.auth_required = g_auth;
            gi.incoming = gin.into_iter().next().map(|(_, acc)| acc);
            gi.outgoing = gout.into_iter().next().map(|(_, acc)| acc);
        }

        // Node ACLs for exact initiator names, with the LUNs of the group SCST serves them.
        struct AclPlan<'i> {
            entry: &'i ast::Initiator,
            name: String,
            listed: usize,
            eff: usize,
            note: Option<String>,
        }
        let mut plans: Vec<AclPlan<'a>> = Vec::new();
        let mut acl_names: HashMap<String, Pos> = HashMap::new();
        // Groups that serve an initiator whose name LIO rejects.
        let mut failed: HashSet<usize> = HashSet::new();
        for (gidx, g) in groups.iter().enumerate() {
            for &i in &g.exact {
                let construct = format!("INITIATOR {}", i.name);
                let (name, note) = match validate_iscsi_name(&i.name) {
                    Ok(_) => (i.name.clone(), None),
                    Err(e) => {
                        let lower = i.name.to_ascii_lowercase();
                        if lower != i.name && validate_iscsi_name(&lower).is_ok() {
                            let note = format!(
                                "SCST matches initiator names case-insensitively, LIO compares them exactly: the \
                                 ACL uses the lowercase normal form (RFC 3722) that initiators send ({e})"
                            );
                            (lower, Some(note))
                        } else {
                            self.push(
                                i.pos,
                                Fidelity::Unsupported,
                                construct,
                                format!("LIO rejects this initiator name: {e}"),
                            );
                            self.not_imported_attrs(&i.attributes, "its INITIATOR is not imported");
                            failed.insert(effective(&i.name).unwrap_or(gidx));
                            continue;
                        }
                    }
                };
                if let Some(first) = acl_names.get(&name) {
                    let detail = format!(
                        "the same initiator as line {} (SCST compares names case-insensitively); one ACL serves both",
                        first.line
                    );
                    self.push(i.pos, Fidelity::Ignored, construct, detail);
                    self.not_imported_attrs(&i.attributes, "unknown initiator attribute");
                    continue;
                }
                acl_names.insert(name.clone(), i.pos);
                let eff = effective(&i.name).unwrap_or(gidx);
                plans.push(AclPlan {
                    entry: i,
                    name,
                    listed: gidx,
                    eff,
                    note,
                });
            }
        }

        // Demo mode must not show anyone more than SCST did.
        let mut blockers: Vec<String> = Vec::new();
        for u in f_uses.iter().filter(|u| u.ro && !u.disk) {
            blockers.push(format!(
                "LIO's demo mode cannot write-protect LUN {} (line {}): it write-protects disks only and {} is \
                 not a disk",
                u.number,
                u.pos.line,
                self.dev_name(u.dev)
            ));
        }
        if !f_uses.is_empty() {
            for &gi in &order {
                let g = &groups[gi];
                if !live(gi) || Some(gi) == first_all {
                    continue;
                }
                for p in &g.partial {
                    if !grants_no_more(&f_uses, &g.uses, demo_wp) {
                        blockers.push(format!(
                            "initiators matching INITIATOR {} (line {}) would see them too",
                            p.name, p.pos.line
                        ));
                    }
                }
            }
            let f_devs: HashSet<usize> = f_uses.iter().map(|u| u.dev).collect();
            let mut reported: HashSet<usize> = HashSet::new();
            for plan in &plans {
                let g = &groups[plan.eff];
                for u in &g.uses {
                    if !f_devs.contains(&u.dev) && reported.insert(u.dev) {
                        blockers.push(format!(
                            "demo mode would also show device {} (LUN {} of GROUP {}, line {}) to every initiator",
                            self.dev_name(u.dev),
                            u.number,
                            g.g.name,
                            u.pos.line
                        ));
                    }
                }
            }
        }
        let demo = !f_uses.is_empty() && blockers.is_empty();
        let blocked = blockers.join("; ");

        // TPG LUNs: index → device.
        let mut tpg_luns: Vec<(u64, usize)> = Vec::new();
        let mut dev_tpg: HashMap<usize, u64> = HashMap::new();
        if demo {
            for u in &f_uses {
                tpg_luns.push((u64::from(u.number), u.dev));
                dev_tpg.entry(u.dev).or_insert(u64::from(u.number));
            }
        } else {
            let mut used: BTreeSet<u64> = BTreeSet::new();
            let defaults = if first_all.is_none() {
                default_uses.as_slice()
            } else {
                &[]
            };
            let served: Vec<&Use> = plans
                .iter()
                .flat_map(|p| groups[p.eff].uses.iter())
                .collect();
            for u in defaults.iter().chain(served) {
                if dev_tpg.contains_key(&u.dev) {
                    continue;
                }
                let mut idx = u64::from(u.number);
                if used.contains(&idx) {
                    idx = (0..).find(|i| !used.contains(i)).unwrap_or(0);
                }
                used.insert(idx);
                dev_tpg.insert(u.dev, idx);
                tpg_luns.push((idx, u.dev));
            }
        }
        tpg_luns.sort_by_key(|(i, _)| *i);
        for (idx, dev) in &tpg_luns {
            tpg.luns.push(Lun {
                index: *idx,
                storage_object: self.dev_so_path(*dev),
                ..Lun::default()
            });
        }

        // The ACLs and their findings.
        let mut acls: Vec<NodeAcl> = Vec::new();
        for plan in &plans {
            let g = &groups[plan.eff];
            let mut acl = NodeAcl {
                node_wwn: plan.name.clone(),
                attributes: acl_attributes.clone(),
                ..NodeAcl::default()
            };
            for u in &g.uses {
                acl.mapped_luns.push(MappedLun {
                    index: u64::from(u.number),
                    tpg_lun: dev_tpg.get(&u.dev).copied().unwrap_or(0),
                    write_protect: Some(u.ro),
                    ..MappedLun::default()
                });
            }
            if g.auth_required {
                acl.auth = chap(
                    g.incoming.as_ref(),
                    g.outgoing.as_ref().or(target_out.as_ref()),
                );
                acl.attributes
                    .insert("authentication".into(), ConfigValue::Int(1));
            } else if target_in.is_some() {
                acl.auth = chap(
                    target_in.as_ref(),
                    g.outgoing.as_ref().or(target_out.as_ref()),
                );
            }
            acls.push(acl);
            let lun_word = if g.uses.len() == 1 { "LUN" } else { "LUNs" };
            let mut detail = format!(
                "node ACL {} with the {} mapped {lun_word} of GROUP {}",
                plan.name,
                g.uses.len(),
                g.g.name
            );
            if plan.eff != plan.listed {
                let by =
                    g.g.initiators
                        .iter()
                        .find(|i| wildcmp(&i.name, &plan.entry.name))
                        .map(|i| format!("INITIATOR {} (line {})", i.name, i.pos.line))
                        .unwrap_or_default();
                detail.push_str(&format!(
                    ": it also matches {by} and scstadmin creates GROUP {} before GROUP {} (groups are created in \
                     name order), so SCST serves it that group",
                    g.g.name, groups[plan.listed].g.name
                ));
            }
            let fidelity = match &plan.note {
                Some(n) => {
                    detail.push_str(&format!("; {n}"));
                    Fidelity::Approximate
                }
                None => Fidelity::Exact,
            };
            self.push(
                plan.entry.pos,
                fidelity,
                format!("INITIATOR {}", plan.entry.name),
                detail,
            );
            for a in &plan.entry.attributes {
                self.attr(a, Fidelity::Unsupported, "unknown initiator attribute");
            }
        }
        for plan in &plans {
            let name = plan.name.clone();
            groups[plan.eff].acls.push(name);
        }

        // Pattern entries.
        for &gi in &order {
            let g = &groups[gi];
            for (k, i) in g.all.iter().enumerate() {
                let construct = format!("INITIATOR {}", i.name);
                if Some(gi) != first_all || k > 0 {
                    let m = first_all
                        .map(|m| groups[m].g.name.clone())
                        .unwrap_or_default();
                    self.push(
                        i.pos,
                        Fidelity::Ignored,
                        construct,
                        format!(
                            "never reached: GROUP {m} matches every initiator first (scstadmin creates groups in \
                             name order)"
                        ),
                    );
                } else if demo {
                    self.push(
                        i.pos,
                        Fidelity::Exact,
                        construct,
                        "demo mode (generate_node_acls 1): initiators without a node ACL see this group's LUNs",
                    );
                } else {
                    self.push(
                        i.pos,
                        Fidelity::Unsupported,
                        construct,
                        format!("initiators without a node ACL get no LUNs: demo mode cannot be used because {blocked}"),
                    );
                }
                self.not_imported_attrs(&i.attributes, "pattern entries have no LIO counterpart");
            }
            for i in &g.partial {
                let construct = format!("INITIATOR {}", i.name);
                let is_blocker = !f_uses.is_empty() && !grants_no_more(&f_uses, &g.uses, demo_wp);
                let (fidelity, detail) = if Some(gi) == first_all {
                    (
                        Fidelity::Ignored,
                        "redundant: this group also matches every initiator".to_owned(),
                    )
                } else if !live(gi) {
                    (
                        Fidelity::Ignored,
                        format!("never reached: {fallback_name} matches every initiator first (scstadmin creates groups in name order)"),
                    )
                } else if demo && same_set(&f_uses, &g.uses) {
                    (
                        Fidelity::Exact,
                        format!(
                            "demo mode gives matching initiators the same LUNs as {fallback_name}"
                        ),
                    )
                } else if demo && !is_blocker {
                    (
                        Fidelity::Approximate,
                        format!(
                            "LIO ACLs are exact names: matching initiators get the LUNs of {fallback_name} through demo \
                             mode instead of this group's LUNs; add a node ACL per initiator"
                        ),
                    )
                } else if !demo && g.uses.is_empty() {
                    (
                        Fidelity::Exact,
                        "a blocking entry: matching initiators see no LUNs, as initiators without a node ACL in LIO"
                            .to_owned(),
                    )
                } else if is_blocker {
                    (
                        Fidelity::Unsupported,
                        "LIO ACLs are exact names; demo mode stays off because matching initiators would see LUNs \
                         they did not see in SCST; matching initiators get no access"
                            .to_owned(),
                    )
                } else {
                    (
                        Fidelity::Unsupported,
                        "LIO ACLs are exact names: matching initiators get no access; add a node ACL per initiator"
                            .to_owned(),
                    )
                };
                self.push(i.pos, fidelity, construct, detail);
                self.not_imported_attrs(&i.attributes, "pattern entries have no LIO counterpart");
            }
        }

        // LUN findings.
        for u in &default_uses {
            let construct = format!("LUN {} {}", u.number, self.dev_name(u.dev));
            match first_all {
                None => self.fallback_lun_finding(
                    u,
                    &construct,
                    demo,
                    demo_wp,
                    &blocked,
                    "the default LUN set",
                ),
                Some(m) => {
                    let detail = format!(
                        "every initiator matches INITIATOR * of GROUP {}, so SCST never used the default LUN set",
                        groups[m].g.name
                    );
                    self.push(u.pos, Fidelity::Ignored, construct, detail);
                }
            }
        }
        for (gi, g) in groups.iter().enumerate() {
            let is_fallback = first_all == Some(gi);
            let live_patterns = live(gi) && !is_fallback && !g.partial.is_empty();
            for u in &g.uses {
                let construct = format!("LUN {} {}", u.number, self.dev_name(u.dev));
                let tpg_lun = dev_tpg.get(&u.dev).copied().unwrap_or(0);
                let in_f = f_uses.iter().any(|x| x.key() == u.key());
                if !g.acls.is_empty() {
                    self.push(
                        u.pos,
                        Fidelity::Exact,
                        construct.clone(),
                        format!(
                            "mapped LUN {} → TPG LUN {tpg_lun} ({}) for {}{}",
                            u.number,
                            self.dev_so_path(u.dev),
                            names(&g.acls),
                            if u.ro { ", write-protected" } else { "" }
                        ),
                    );
                    if is_fallback {
                        self.fallback_lun_finding(
                            u,
                            &construct,
                            demo,
                            demo_wp,
                            &blocked,
                            "this group",
                        );
                    }
                } else if is_fallback {
                    self.fallback_lun_finding(u, &construct, demo, demo_wp, &blocked, "this group");
                } else if failed.contains(&gi) {
                    self.push(
                        u.pos,
                        Fidelity::Unsupported,
                        construct,
                        "LIO rejects the names of the initiators SCST serves with this group; nobody gets this LUN",
                    );
                } else if live_patterns && demo && in_f {
                    self.push(
                        u.pos,
                        Fidelity::Exact,
                        construct,
                        format!("initiators matching this group's patterns reach it through demo mode, as part of {fallback_name}"),
                    );
                } else if live_patterns {
                    self.push(
                        u.pos,
                        Fidelity::Unsupported,
                        construct,
                        "LIO ACLs are exact names: initiators matching this group's patterns do not get this LUN",
                    );
                } else {
                    self.push(
                        u.pos,
                        Fidelity::Ignored,
                        construct,
                        "no initiator ends up in this group in SCST (it has no entry that another group does not match first)",
                    );
                }
            }
            let acl_count = g.acls.len();
            self.push(
                g.g.pos,
                Fidelity::Exact,
                format!("GROUP {}", g.g.name),
                format!(
                    "LIO has no initiator groups: the node ACLs of the initiators SCST serves with this group get its \
                     LUNs ({acl_count} ACL(s))"
                ),
            );
        }

        // Target-level CHAP findings.
        let acl_count = acls.len();
        let with_target_creds = acls
            .iter()
            .filter(|a| !a.attributes.contains_key("authentication") && !a.auth.is_empty())
            .count();
        for (k, (a, acc)) in deferred.incoming.iter().enumerate() {
            if k == 0 {
                let mut users = Vec::new();
                if with_target_creds > 0 {
                    users.push(format!("{with_target_creds} node ACL(s)"));
                }
                if demo {
                    users.push("the TPG, for initiators without a node ACL".to_owned());
                }
                let users = if users.is_empty() {
                    "nothing uses it: no initiator can reach this target".to_owned()
                } else {
                    format!("set on {}", users.join(" and "))
                };
                self.attr(
                    a,
                    Fidelity::Exact,
                    format!("CHAP required (TPG attribute authentication 1); {users}"),
                );
            } else {
                self.attr(
                    a,
                    Fidelity::Approximate,
                    format!(
                        "LIO holds one CHAP account per ACL and TPG; logins as {:?} are refused",
                        acc.user
                    ),
                );
            }
        }
        for (k, (a, _)) in deferred.outgoing.iter().enumerate() {
            if target_in.is_none() {
                self.attr(
                    a,
                    Fidelity::Ignored,
                    "without a usable IncomingUser no CHAP takes place, so there is no mutual CHAP either (in SCST as in LIO)",
                );
            } else if k == 0 {
                self.attr(
                    a,
                    Fidelity::Exact,
                    "mutual CHAP account (chap_mutual_userid/chap_mutual_password)",
                );
            } else {
                self.attr(
                    a,
                    Fidelity::Approximate,
                    "only one mutual CHAP account can be used; the first is kept",
                );
            }
        }
        for (a, lio, v) in &deferred.nopin {
            let given = ulong(a)?;
            let mut d = format!("node ACL attribute {lio} {v}");
            let mut fidelity = Fidelity::Exact;
            if *v != given {
                d.push_str(&format!(" (LIO accepts {NOPIN_MIN}-{NOPIN_MAX} seconds)"));
                fidelity = Fidelity::Approximate;
            }
            if demo {
                d.push_str("; initiators without a node ACL (demo mode) keep LIO's default");
                fidelity = Fidelity::Approximate;
            }
            self.attr(a, fidelity, d);
        }

        // The TPG.
        tpg_attributes.insert(
            "authentication".into(),
            ConfigValue::Int(i64::from(deferred.auth_required)),
        );
        tpg_attributes.insert(
            "generate_node_acls".into(),
            ConfigValue::Int(i64::from(demo)),
        );
        if demo {
            tpg_attributes.insert("cache_dynamic_acls".into(), ConfigValue::Int(1));
            tpg_attributes.insert(
                "demo_mode_write_protect".into(),
                ConfigValue::Int(i64::from(demo_wp)),
            );
            tpg.auth = chap(target_in.as_ref(), target_out.as_ref());
        }
        let default_portal = allowed_portals == 0;
        if default_portal {
            portals.push(Portal {
                ip_address: "0.0.0.0".into(),
                port: ISCSI_PORT,
                ..Portal::default()
            });
        }
        let tag = rel_tgt_id.map(|(v, _)| v).unwrap_or(1);
        let tpg_enable = enabled && driver_enabled;
        tpg.tag = Some(tag);
        tpg.enable = Some(tpg_enable);
        tpg.attributes = tpg_attributes;
        tpg.parameters = parameters;
        tpg.portals = portals;
        tpg.node_acls = acls;
        let portal_list = tpg
            .portals
            .iter()
            .map(Portal::dir_name)
            .collect::<Vec<_>>()
            .join(", ");
        let enable_note = if enabled_given {
            ""
        } else {
            " (no 'enabled 1': SCST's default is disabled)"
        };
        let mut detail = format!(
            "iSCSI target {wwn}, TPG tag {tag}, enable {tpg_enable}{enable_note}, {} LUN(s), {acl_count} node ACL(s), demo mode {}, portals: {}",
            tpg.luns.len(),
            if demo { "on" } else { "off" },
            if portal_list.is_empty() { "none (unreachable until one is added)".to_owned() } else { portal_list }
        );
        if let Some(e) = &name_note {
            detail.push_str(&format!(
                "; the name is lowercased as LIO requires ({e}); initiators that stored the mixed-case name must rediscover"
            ));
        }
        self.push(
            t.pos,
            if name_note.is_some() {
                Fidelity::Approximate
            } else {
                Fidelity::Exact
            },
            construct.clone(),
            detail,
        );
        if default_portal {
            self.push(
                t.pos,
                Fidelity::Note,
                construct,
                "no allowed_portal: portal 0.0.0.0:3260 (all IPv4 addresses); iSCSI-SCST also listened on IPv6, \
                 use portal [::0]:3260 instead if IPv6 initiators connect",
            );
        }
        let out = self.out.targets.len();
        self.out.targets.push(Target {
            wwn,
            fabric: "iscsi".into(),
            tpgs: vec![tpg],
            extra: Default::default(),
        });
        self.targets
            .insert(t.name.as_str(), TargetState::Iscsi { out, rel_tgt_id });
        Ok(())
    }

    fn fallback_lun_finding(
        &mut self,
        u: &Use,
        construct: &str,
        demo: bool,
        demo_wp: bool,
        blocked: &str,
        set: &str,
    ) {
        if demo {
            if demo_ro(u, demo_wp) && !u.ro {
                self.push(
                    u.pos,
                    Fidelity::Approximate,
                    construct.to_owned(),
                    format!(
                        "TPG LUN {} seen by initiators without a node ACL (demo mode) but read-only: LIO \
                         write-protects demo-mode LUNs per TPG (demo_mode_write_protect 1) and another LUN of {set} \
                         is read-only",
                        u.number
                    ),
                );
            } else {
                self.push(
                    u.pos,
                    Fidelity::Exact,
                    construct.to_owned(),
                    format!(
                        "TPG LUN {} ({}) seen as LUN {} by initiators without a node ACL (demo mode){}",
                        u.number,
                        self.dev_so_path(u.dev),
                        u.number,
                        if u.ro { ", write-protected" } else { "" }
                    ),
                );
            }
        } else {
            self.push(
                u.pos,
                Fidelity::Unsupported,
                construct.to_owned(),
                format!("initiators without a node ACL cannot reach it: demo mode cannot be used because {blocked}"),
            );
        }
    }

    fn iscsi_param(
        &mut self,
        a: &Attribute,
        kind: ParamKind,
        parameters: &mut Settings,
    ) -> Result<(), Error> {
        let name = a.name.as_str();
        match kind {
            ParamKind::Number(min, max) => {
                let v = ulong(a)?;
                if v < min {
                    return Err(bad_value(
                        a,
                        format!("below the minimum {min} of RFC 7143 13; SCST rejects it"),
                    ));
                }
                if v <= max {
                    parameters.insert(name.to_owned(), ConfigValue::Str(v.to_string()));
                    self.attr(a, Fidelity::Exact, format!("TPG parameter {name} {v}"));
                } else {
                    self.attr(
                        a,
                        Fidelity::Unsupported,
                        format!("LIO accepts at most {max} (RFC 7143 13); LIO's default is used"),
                    );
                }
            }
            ParamKind::Boolean => {
                let v = yes_no(a)?;
                parameters.insert(name.to_owned(), ConfigValue::Str(v.to_owned()));
                self.attr(a, Fidelity::Exact, format!("TPG parameter {name} {v}"));
            }
            ParamKind::Digest => {
                let v = digest(a)?;
                parameters.insert(name.to_owned(), ConfigValue::Str(v.clone()));
                self.attr(a, Fidelity::Exact, format!("TPG parameter {name} {v}"));
            }
            ParamKind::Marker => {
                if yes_no(a)? == "No" {
                    self.attr(a, Fidelity::Exact, "no markers, as in LIO");
                } else {
                    self.attr(
                        a,
                        Fidelity::Unsupported,
                        "LIO does not support markers (dropped by RFC 7143)",
                    );
                }
            }
            ParamKind::MarkInt => {
                self.attr(
                    a,
                    Fidelity::Ignored,
                    "markers are never used: iSCSI-SCST, like LIO, only supports OFMarker and IFMarker No",
                );
            }
            ParamKind::Rdma => {
                if yes_no(a)? == "No" {
                    self.attr(a, Fidelity::Exact, "no iSER on TCP portals, as in LIO");
                } else {
                    self.attr(
                        a,
                        Fidelity::Unsupported,
                        "LIO negotiates iSER only on portals with iser enabled, which this importer does not create",
                    );
                }
            }
            ParamKind::NotInLio => {
                self.attr(
                    a,
                    Fidelity::Unsupported,
                    "not an LIO TPG parameter (iSER keys are negotiated by LIO itself)",
                );
            }
        }
        Ok(())
    }
}

/// Why `rel_tgt_id` is approximate.
pub(super) fn rel_tgt_id_detail(v: u64) -> String {
    let tpgt = if v == 1 {
        "TargetPortalGroupTag stays 1 as with iSCSI-SCST".to_owned()
    } else {
        "initiators see TargetPortalGroupTag {v} where iSCSI-SCST always sent 1, so sessions saved with tag 1 must be \
         rediscovered"
            .replace("{v}", &v.to_string())
    };
    format!(
        "TPG tag {v}: the TPG is LIO's target port; LIO assigns the relative target port identifier (VPD page 0x83) \
         itself; {tpgt}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(number: u32, dev: usize, ro: bool, disk: bool) -> Use {
        Use {
            number,
            dev,
            ro,
            disk,
            pos: Pos::default(),
        }
    }

    #[test]
    fn demo_mode_write_protects_disks_only() {
        // core_tpg_add_node_to_devs: with demo_mode_write_protect only TYPE_DISK is RO.
        assert!(demo_ro(&u(0, 0, false, true), true));
        assert!(!demo_ro(&u(0, 0, false, false), true));
        assert!(!demo_ro(&u(0, 0, true, true), false));
    }

    #[test]
    fn grants_no_more_compares_number_device_and_write_access() {
        let f = [u(0, 1, false, true)];
        assert!(grants_no_more(
            &f,
            &[u(0, 1, false, true), u(1, 2, false, true)],
            false
        ));
        // Different LUN number or device: more than the group had.
        assert!(!grants_no_more(&f, &[u(1, 1, false, true)], false));
        assert!(!grants_no_more(&f, &[u(0, 2, false, true)], false));
        // The group had it read-only: writable demo mode grants more, protected does not.
        assert!(!grants_no_more(&f, &[u(0, 1, true, true)], false));
        assert!(grants_no_more(&f, &[u(0, 1, true, true)], true));
        // ...unless the device is not a disk, which demo mode never protects.
        let tape = [u(0, 1, false, false)];
        assert!(!grants_no_more(&tape, &[u(0, 1, true, false)], true));
        assert!(grants_no_more(&[], &[], false));
        assert!(same_set(&[u(0, 1, true, true)], &[u(0, 1, true, false)]));
        assert!(!same_set(&[u(0, 1, true, true)], &[u(0, 1, false, true)]));
    }

    fn attr(name: &str, value: &str) -> Attribute {
        Attribute {
            name: name.into(),
            value: Some(value.into()),
            pos: Pos::new(1, 1),
            value_pos: Some(Pos::new(1, 5)),
        }
    }

    #[test]
    fn login_key_values() {
        // RFC 7143 13.1 digest lists; SCST parses them case-insensitively.
        assert_eq!(
            digest(&attr("HeaderDigest", "crc32c,NONE")).unwrap(),
            "CRC32C,None"
        );
        assert_eq!(digest(&attr("HeaderDigest", "None")).unwrap(), "None");
        assert!(digest(&attr("HeaderDigest", "MD5")).is_err());
        assert!(digest(&attr("HeaderDigest", "")).is_err());
        assert_eq!(yes_no(&attr("InitialR2T", "no")).unwrap(), "No");
        assert_eq!(yes_no(&attr("InitialR2T", "YES")).unwrap(), "Yes");
        assert!(yes_no(&attr("InitialR2T", "1")).is_err());
        assert!(matches!(
            param_kind("MaxRecvDataSegmentLength"),
            Some(ParamKind::Number(512, 16_777_215))
        ));
        assert!(matches!(
            param_kind("MaxOutstandingR2T"),
            Some(ParamKind::Number(1, 65535))
        ));
        assert!(matches!(
            param_kind("ErrorRecoveryLevel"),
            Some(ParamKind::Number(0, 2))
        ));
        assert!(param_kind("QueuedCommands").is_none());
    }

    #[test]
    fn portal_addresses() {
        assert_eq!(portal_address("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(portal_address("fd00::1").as_deref(), Some("[fd00::1]"));
        assert_eq!(portal_address("[FD00:0::1]").as_deref(), Some("[fd00::1]"));
        assert_eq!(portal_address("10.0.0.*"), None);
        assert_eq!(portal_address("10.0.0.1:3260"), None);
        assert_eq!(portal_address("host.example.com"), None);
    }

    #[test]
    fn accounts_lio_cannot_store() {
        let ok = Account {
            user: "joe".into(),
            secret: "12charsecret".into(),
        };
        assert_eq!(unusable(&ok), None);
        let null_user = Account {
            user: "NULL".into(),
            secret: "12charsecret".into(),
        };
        assert!(unusable(&null_user).unwrap().contains("user name"));
        let ctl = Account {
            user: "joe".into(),
            secret: "a\u{1}b".into(),
        };
        let why = unusable(&ctl).unwrap();
        assert!(why.contains("secret") && !why.contains("a\u{1}b"), "{why}");
        let c = chap(Some(&ok), Some(&null_user));
        assert_eq!(c.chap_userid.as_deref(), Some("joe"));
        assert_eq!(c.chap_mutual_userid.as_deref(), Some("NULL"));
        // Mutual CHAP needs one-way CHAP (RFC 7143 12.1.3).
        assert!(chap(None, Some(&ok)).is_empty());
    }

    #[test]
    fn rel_tgt_id_detail_mentions_the_tag_change() {
        assert!(rel_tgt_id_detail(1).contains("stays 1"));
        assert!(rel_tgt_id_detail(7).contains("TargetPortalGroupTag 7"));
    }
}
