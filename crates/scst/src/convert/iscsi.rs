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
use rustio_config::wwn::{validate_iscsi_name, WwnError};
use rustio_config::{
    Chap, ConfigValue, FabricModule, Lun, MappedLun, NodeAcl, Portal, Target, Tpg,
};

use super::rules::{yes_no, Rule, Test};
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

/// Detail for an OutgoingUser that no IncomingUser goes with.
const NO_MUTUAL: &str =
    "without a usable IncomingUser no CHAP takes place, so there is no mutual CHAP either \
                         (in SCST as in LIO)";

/// Detail for the second and later OutgoingUser.
const ONE_MUTUAL: &str = "only one mutual CHAP account can be used; the first is kept";

/// Detail for iSCSI-SCST's read-only attributes that scstadmin writes out.
const READ_ONLY: &str = "read-only iSCSI-SCST attribute; SCST ignores it too";

/// Detail for tuning settings LIO lacks.
const NO_COUNTERPART: &str = "SCST setting without an LIO counterpart";

/// Driver attributes other than `enabled`, `IncomingUser` and `OutgoingUser`.
const DRIVER_RULES: &[Rule] = &[
    Rule::fixed(
        &["iSNSServer", "isns_entity_name"],
        Fidelity::Unsupported,
        "LIO has no in-kernel iSNS client (target-isns is a separate daemon)",
    ),
    Rule::fixed(
        &["internal_portal"],
        Fidelity::Unsupported,
        "LIO has no CHAP-exempt portals",
    ),
    Rule::fixed(
        &["link_local"],
        Fidelity::Unsupported,
        "LIO has no setting for link-local addresses in SendTargets replies",
    ),
    Rule::fixed(
        &["trace_level"],
        Fidelity::Unsupported,
        "iSCSI-SCST tracing setting; LIO logs through the kernel's dynamic debug",
    ),
    Rule::fixed(&["open_state", "version"], Fidelity::Ignored, READ_ONLY),
];

/// `black_hole`, a target and group attribute: SCST's command-dropping test mode.
const BLACK_HOLE: Rule = Rule::when(
    &["black_hole"],
    Test::Zero,
    (Fidelity::Exact, "off, as in LIO"),
    (
        Fidelity::Unsupported,
        "LIO has no command-dropping test mode",
    ),
);

/// Target attributes that are neither login keys nor handled by `target_attr` itself.
const TARGET_RULES: &[Rule] = &[
    Rule::when(
        &["MaxSessions"],
        Test::Zero,
        (Fidelity::Exact, "no session limit, as in LIO"),
        (Fidelity::Unsupported, "LIO has no per-target session limit"),
    ),
    Rule::fixed(
        &["RspTimeout"],
        Fidelity::Unsupported,
        "LIO has no command response timeout",
    ),
    Rule::when(
        &["redirect"],
        Test::Empty,
        (Fidelity::Exact, "no redirection"),
        (Fidelity::Unsupported, "LIO has no login redirection"),
    ),
    Rule::when(
        &["per_portal_acl"],
        Test::Off,
        (Fidelity::Exact, "the default"),
        (
            Fidelity::Unsupported,
            "LIO has no per-portal access control",
        ),
    ),
    BLACK_HOLE,
    Rule::when(
        &["forward_src", "forward_dst", "forwarding"],
        Test::Off,
        (Fidelity::Exact, "off, as in LIO"),
        (
            Fidelity::Unsupported,
            "LIO has no command forwarding between cluster nodes",
        ),
    ),
    Rule::when(
        &["aen_disabled"],
        Test::On,
        (
            Fidelity::Exact,
            "events are reported as unit attentions, as LIO does",
        ),
        (
            Fidelity::Approximate,
            "LIO reports events as unit attentions; it sends no asynchronous event notification",
        ),
    ),
    Rule::fixed(
        &["comment"],
        Fidelity::Ignored,
        "free text; SCST does not use it either",
    ),
    Rule::fixed(&["tid"], Fidelity::Ignored, READ_ONLY),
    Rule::fixed(
        &["addr_method", "io_grouping_type", "cpu_mask"],
        Fidelity::Unsupported,
        NO_COUNTERPART,
    ),
];

/// Initiator group attributes other than the CHAP accounts.
const GROUP_RULES: &[Rule] = &[
    BLACK_HOLE,
    Rule::fixed(
        &[
            "addr_method",
            "io_grouping_type",
            "cpu_mask",
            "per_sess_dedicated_tgt_threads",
        ],
        Fidelity::Unsupported,
        NO_COUNTERPART,
    ),
];

/// The name LIO gets for an iSCSI name from the file (RFC 3720 3.2.6): the name itself,
/// or its lowercase normal form (RFC 3722) with the reason the original was refused.
/// `Err` when neither is a valid iSCSI name.
fn lio_iscsi_name(name: &str) -> Result<(String, Option<WwnError>), WwnError> {
    match validate_iscsi_name(name) {
        Ok(_) => Ok((name.to_owned(), None)),
        Err(e) => {
            let lower = name.to_ascii_lowercase();
            if lower != name && validate_iscsi_name(&lower).is_ok() {
                Ok((lower, Some(e)))
            } else {
                Err(e)
            }
        }
    }
}

/// A `rel_tgt_id` value (SPC-4 7.8.6.6: relative target port identifiers are 1-65535).
pub(super) fn parse_rel_tgt_id(a: &Attribute) -> Result<u64, Error> {
    let v = ulong(a)?;
    if !(1..=65535).contains(&v) {
        return Err(bad_value(
            a,
            "relative target port identifiers are 1-65535 (SPC-4 7.8.6.6)",
        ));
    }
    Ok(v)
}

/// Everything a TARGET's attributes say, gathered before its ACLs are known.
#[derive(Default)]
struct TargetSettings<'b> {
    tpg_attributes: Settings,
    /// Attributes every node ACL gets (the NOP-In timers).
    acl_attributes: Settings,
    parameters: Settings,
    enabled: bool,
    /// Whether `enabled` is given at all (SCST's default is disabled).
    enabled_given: bool,
    rel_tgt_id: Option<(u64, Pos)>,
    portals: Vec<Portal>,
    /// How many `allowed_portal` lines there are, usable or not.
    allowed_portals: usize,
    /// Whether the target has any IncomingUser, usable or not.
    auth_required: bool,
    incoming: Vec<(&'b Attribute, Account)>,
    outgoing: Vec<(&'b Attribute, Account)>,
    /// NOP-In timers: the attribute, the LIO ACL attribute and the clamped value.
    nopin: Vec<(&'b Attribute, &'static str, u64)>,
}

impl TargetSettings<'_> {
    /// The target's CHAP account (LIO holds one per TPG and ACL).
    fn target_in(&self) -> Option<&Account> {
        self.incoming.first().map(|(_, acc)| acc)
    }

    /// The target's mutual CHAP account.
    fn target_out(&self) -> Option<&Account> {
        self.outgoing.first().map(|(_, acc)| acc)
    }
}

impl<'a> GroupInfo<'a> {
    /// A group with its LUN set; its INITIATOR entries sorted into exact names,
    /// match-all patterns and other patterns.
    fn new(g: &'a ast::Group, uses: Vec<Use>) -> Self {
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
        info
    }
}

/// A target's LUN sets and initiator groups, in the order SCST consults them.
struct Access<'a> {
    /// The target's own LUN set, for initiators no group matches.
    default_uses: Vec<Use>,
    groups: Vec<GroupInfo<'a>>,
    /// Group indices in the order scstadmin creates them (by name).
    order: Vec<usize>,
    /// The position of each group in `order`.
    rank: Vec<usize>,
    /// The first group (in `order`) with a match-all entry.
    first_all: Option<usize>,
    /// What an initiator without a matching exact entry sees in SCST.
    f_uses: Vec<Use>,
    /// Where `f_uses` comes from, for findings.
    fallback_name: String,
    /// Whether demo mode has to write-protect: a read-only disk LUN is among `f_uses`.
    demo_wp: bool,
}

impl<'a> Access<'a> {
    fn new(default_uses: Vec<Use>, groups: Vec<GroupInfo<'a>>) -> Self {
        // scstadmin creates a target's groups in name order (`sort keys` in
        // applyGroupAssignments) and SCST gives a session the first group with a
        // matching entry (scst_find_tgt_acg_by_name_wild), else the default LUN set.
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.sort_by(|&a, &b| groups[a].g.name.cmp(&groups[b].g.name));
        let mut rank = vec![0usize; groups.len()];
        for (r, &gi) in order.iter().enumerate() {
            rank[gi] = r;
        }
        let first_all = order.iter().copied().find(|&gi| !groups[gi].all.is_empty());
        let (f_uses, fallback_name) = match first_all {
            Some(m) => (
                groups[m].uses.clone(),
                format!("GROUP {}", groups[m].g.name),
            ),
            None => (default_uses.clone(), "the default LUN set".to_owned()),
        };
        let demo_wp = f_uses.iter().any(|u| u.ro && u.disk);
        Access {
            default_uses,
            groups,
            order,
            rank,
            first_all,
            f_uses,
            fallback_name,
            demo_wp,
        }
    }

    /// Whether a group is live for unlisted initiators: no match-all group precedes it.
    fn live(&self, gi: usize) -> bool {
        self.first_all.is_none_or(|m| self.rank[gi] <= self.rank[m])
    }

    /// The group SCST serves an initiator name with: the first with a matching entry.
    fn effective(&self, name: &str) -> Option<usize> {
        self.order.iter().copied().find(|&gi| {
            self.groups[gi]
                .g
                .initiators
                .iter()
                .any(|i| wildcmp(&i.name, name))
        })
    }

    /// The finding of a pattern entry (not match-all) of group `gi`.
    fn partial_finding(&self, gi: usize, d: &Decision) -> (Fidelity, String) {
        let g = &self.groups[gi];
        let fallback_name = &self.fallback_name;
        let is_blocker =
            !self.f_uses.is_empty() && !grants_no_more(&self.f_uses, &g.uses, self.demo_wp);
        if Some(gi) == self.first_all {
            (
                Fidelity::Ignored,
                "redundant: this group also matches every initiator".to_owned(),
            )
        } else if !self.live(gi) {
            (
                Fidelity::Ignored,
                format!("never reached: {fallback_name} matches every initiator first (scstadmin creates groups in name order)"),
            )
        } else if d.demo && same_set(&self.f_uses, &g.uses) {
            (
                Fidelity::Exact,
                format!("demo mode gives matching initiators the same LUNs as {fallback_name}"),
            )
        } else if d.demo && !is_blocker {
            (
                Fidelity::Approximate,
                format!(
                    "LIO ACLs are exact names: matching initiators get the LUNs of {fallback_name} through demo \
                     mode instead of this group's LUNs; add a node ACL per initiator"
                ),
            )
        } else if !d.demo && g.uses.is_empty() {
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
        }
    }
}

/// A node ACL to create for an exact INITIATOR entry.
struct AclPlan<'i> {
    entry: &'i ast::Initiator,
    /// The ACL name (the entry's name, or its lowercase normal form).
    name: String,
    /// The group that lists the entry.
    listed: usize,
    /// The group SCST serves the initiator with.
    eff: usize,
    /// Why the ACL name differs from the entry.
    note: Option<String>,
}

/// What the importer decided for a target's access control.
struct Decision {
    /// Demo mode (generate_node_acls 1) for initiators without a node ACL.
    demo: bool,
    /// demo_mode_write_protect.
    demo_wp: bool,
    /// Why demo mode is off, for findings.
    blocked: String,
    /// The TPG LUN of each device.
    dev_tpg: HashMap<usize, u64>,
    /// Groups that serve an initiator whose name LIO rejects.
    failed: HashSet<usize>,
}

/// The TPG LUNs as (index, device), sorted by index, and the TPG LUN of each device.
/// In demo mode the TPG holds exactly the fallback LUN set at its SCST numbers (demo
/// mode maps TPG LUN n as LUN n); otherwise every device that an ACL or the default
/// LUN set needs, at its SCST number when that is still free.
fn tpg_luns(
    access: &Access<'_>,
    plans: &[AclPlan<'_>],
    demo: bool,
) -> (Vec<(u64, usize)>, HashMap<usize, u64>) {
    let mut tpg_luns: Vec<(u64, usize)> = Vec::new();
    let mut dev_tpg: HashMap<usize, u64> = HashMap::new();
    if demo {
        for u in &access.f_uses {
            tpg_luns.push((u64::from(u.number), u.dev));
            dev_tpg.entry(u.dev).or_insert(u64::from(u.number));
        }
    } else {
        let mut used: BTreeSet<u64> = BTreeSet::new();
        let defaults = if access.first_all.is_none() {
            access.default_uses.as_slice()
        } else {
            &[]
        };
        let served: Vec<&Use> = plans
            .iter()
            .flat_map(|p| access.groups[p.eff].uses.iter())
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
    (tpg_luns, dev_tpg)
}

/// The finding of an imported TARGET: what it became in LIO.
fn target_detail(
    wwn: &str,
    name_note: Option<&WwnError>,
    tpg: &Tpg,
    enabled_given: bool,
    demo: bool,
) -> String {
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
        "iSCSI target {wwn}, TPG tag {}, enable {}{enable_note}, {} LUN(s), {} node ACL(s), demo mode {}, portals: {}",
        tpg.tag.unwrap_or(1),
        tpg.enable.unwrap_or(false),
        tpg.luns.len(),
        tpg.node_acls.len(),
        if demo { "on" } else { "off" },
        if portal_list.is_empty() { "none (unreachable until one is added)".to_owned() } else { portal_list }
    );
    if let Some(e) = name_note {
        detail.push_str(&format!(
            "; the name is lowercased as LIO requires ({e}); initiators that stored the mixed-case name must rediscover"
        ));
    }
    detail
}

/// The node ACL of a plan: the LUNs of the group SCST serves it, and CHAP (the group's
/// accounts when it has any, else the target's).
fn node_acl(
    plan: &AclPlan<'_>,
    g: &GroupInfo<'_>,
    dev_tpg: &HashMap<usize, u64>,
    s: &TargetSettings<'_>,
) -> NodeAcl {
    let mut acl = NodeAcl {
        node_wwn: plan.name.clone(),
        attributes: s.acl_attributes.clone(),
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
    let mutual = g.outgoing.as_ref().or(s.target_out());
    if g.auth_required {
        acl.auth = chap(g.incoming.as_ref(), mutual);
        acl.attributes
            .insert("authentication".into(), ConfigValue::Int(1));
    } else if s.target_in().is_some() {
        acl.auth = chap(s.target_in(), mutual);
    }
    acl
}

/// The TPG: its LUNs and ACLs, the target's settings, authentication and demo mode, and
/// the wildcard portal when the file names none.
fn build_tpg(
    s: &mut TargetSettings<'_>,
    d: &Decision,
    driver_enabled: bool,
    luns: Vec<Lun>,
    node_acls: Vec<NodeAcl>,
) -> Tpg {
    let mut tpg = Tpg {
        luns,
        ..Tpg::default()
    };
    let mut attributes = std::mem::take(&mut s.tpg_attributes);
    attributes.insert(
        "authentication".into(),
        ConfigValue::Int(i64::from(s.auth_required)),
    );
    attributes.insert(
        "generate_node_acls".into(),
        ConfigValue::Int(i64::from(d.demo)),
    );
    if d.demo {
        attributes.insert("cache_dynamic_acls".into(), ConfigValue::Int(1));
        attributes.insert(
            "demo_mode_write_protect".into(),
            ConfigValue::Int(i64::from(d.demo_wp)),
        );
        tpg.auth = chap(s.target_in(), s.target_out());
    }
    let mut portals = std::mem::take(&mut s.portals);
    if s.allowed_portals == 0 {
        portals.push(Portal {
            ip_address: "0.0.0.0".into(),
            port: ISCSI_PORT,
            ..Portal::default()
        });
    }
    tpg.tag = Some(s.rel_tgt_id.map(|(v, _)| v).unwrap_or(1));
    tpg.enable = Some(s.enabled && driver_enabled);
    tpg.attributes = attributes;
    tpg.parameters = std::mem::take(&mut s.parameters);
    tpg.portals = portals;
    tpg.node_acls = node_acls;
    tpg
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
        self.driver_findings(d, &attrs, enabled)?;
        self.discovery_auth(discovery_auth, &incoming, &outgoing);
        for t in &d.targets {
            self.iscsi_target(t, driver_enabled)?;
        }
        Ok(())
    }

    /// The findings of the driver section and of its attributes other than the accounts.
    fn driver_findings(
        &mut self,
        d: &ast::TargetDriver,
        attrs: &[&Attribute],
        enabled: Option<bool>,
    ) -> Result<(), Error> {
        let mut detail = "LIO's iSCSI fabric (iscsi_target_mod)".to_owned();
        if enabled.is_none() {
            detail.push_str(
                "; no 'enabled 1' here, so iSCSI-SCST stayed disabled (its default) and every target is \
                 imported with enable false",
            );
        }
        self.push(d.pos, Fidelity::Exact, "TARGET_DRIVER iscsi", detail);
        for a in attrs {
            match a.name.as_str() {
                "enabled" => {
                    let detail = if enabled.unwrap_or(false) {
                        "LIO's iSCSI fabric needs no global switch"
                    } else {
                        "iSCSI-SCST accepts no logins while disabled: every target is imported with enable false"
                    };
                    self.attr(a, Fidelity::Exact, detail);
                }
                "IncomingUser" | "OutgoingUser" => {}
                _ => self.by_rules(a, DRIVER_RULES, "unknown iSCSI-SCST driver attribute")?,
            }
        }
        Ok(())
    }

    /// Discovery (SendTargets) authentication from the driver's accounts (RFC 7143
    /// 12.1): LIO's fabric module holds one account and one mutual account.
    fn discovery_auth(
        &mut self,
        required: bool,
        incoming: &[(&Attribute, Account)],
        outgoing: &[(&Attribute, Account)],
    ) {
        if required && incoming.is_empty() {
            self.out.fabric_modules.push(FabricModule {
                name: "iscsi".into(),
                discovery_enable_auth: Some(true),
                ..FabricModule::default()
            });
        }
        let Some((first, acc)) = incoming.first() else {
            for (a, _) in outgoing {
                self.attr(a, Fidelity::Ignored, NO_MUTUAL);
            }
            return;
        };
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
            self.attr(a, Fidelity::Approximate, ONE_MUTUAL);
        }
        self.out.fabric_modules.push(fm);
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
            let (fidelity, why) = match state {
                None => (
                    Fidelity::Ignored,
                    format!(
                        "device {} is not defined in this file; scstadmin drops such LUNs",
                        l.device
                    ),
                ),
                Some((_, DevState::NotImported(reason))) => (
                    Fidelity::Unsupported,
                    format!("device {} is not imported: {reason}", l.device),
                ),
                Some((
                    i,
                    DevState::Imported {
                        read_only, disk, ..
                    },
                )) => {
                    self.lun_attrs(&attrs, lun_ro, read_only);
                    uses.push(Use {
                        number: l.number,
                        dev: i,
                        ro: lun_ro || read_only,
                        disk,
                        pos: l.pos,
                    });
                    continue;
                }
            };
            self.push(l.pos, fidelity, construct, why.clone());
            for a in attrs {
                self.attr(a, fidelity, why.clone());
            }
        }
        Ok(uses)
    }

    /// The findings of the attributes of a LUN whose device is imported.
    fn lun_attrs(&mut self, attrs: &[&Attribute], lun_ro: bool, dev_ro: bool) {
        for a in attrs {
            if a.name != "read_only" {
                self.attr(a, Fidelity::Unsupported, "unknown LUN attribute");
            } else if lun_ro {
                self.attr(
                    a,
                    Fidelity::Exact,
                    "write-protected for every initiator that sees this LUN",
                );
            } else if dev_ro {
                self.attr(
                    a,
                    Fidelity::Ignored,
                    "the device itself is read-only, so the LUN is write-protected anyway",
                );
            } else {
                self.attr(a, Fidelity::Exact, "writable, the default");
            }
        }
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

    /// A TARGET of the iSCSI driver: one target with one TPG, its LUNs and node ACLs.
    /// Access control follows the module documentation: node ACLs for exact names,
    /// demo mode for the fallback LUN set when that grants nobody more than SCST did.
    fn iscsi_target(&mut self, t: &'a ast::Target, driver_enabled: bool) -> Result<(), Error> {
        let Some((wwn, name_note)) = self.target_name(t) else {
            return Ok(());
        };
        let mut s = self.target_settings(t, driver_enabled)?;
        let default_uses = self.lun_uses(&t.luns)?;
        let mut groups = Vec::new();
        for g in &t.groups {
            let uses = self.lun_uses(&g.luns)?;
            groups.push(GroupInfo::new(g, uses));
        }
        let mut access = Access::new(default_uses, groups);
        self.group_accounts(&mut access.groups, s.target_in().is_some())?;
        let (plans, failed) = self.acl_plans(&access);
        let blockers = self.demo_blockers(&access, &plans);
        let demo = !access.f_uses.is_empty() && blockers.is_empty();
        let (luns, dev_tpg) = tpg_luns(&access, &plans, demo);
        let d = Decision {
            demo,
            demo_wp: access.demo_wp,
            blocked: blockers.join("; "),
            dev_tpg,
            failed,
        };
        let luns = luns
            .iter()
            .map(|(idx, dev)| Lun {
                index: *idx,
                storage_object: self.dev_so_path(*dev),
                ..Lun::default()
            })
            .collect();
        let acls = self.node_acls(&mut access, &plans, &d, &s);
        self.pattern_findings(&access, &d);
        self.default_lun_findings(&access, &d);
        self.group_lun_findings(&access, &d);
        self.target_chap_findings(&s, &acls, d.demo);
        self.nopin_findings(&s, d.demo)?;
        let tpg = build_tpg(&mut s, &d, driver_enabled, luns, acls);
        self.target_done(t, wwn, name_note, tpg, &s, d.demo);
        Ok(())
    }

    /// The target's LIO name (LIO insists on the lowercase normal form) and why it was
    /// lowercased; `None`, with the target reported, when it is not imported.
    fn target_name(&mut self, t: &'a ast::Target) -> Option<(String, Option<WwnError>)> {
        let (wwn, note) = match lio_iscsi_name(&t.name) {
            Ok(named) => named,
            Err(e) => {
                self.target_not_imported(
                    t,
                    format!("the target is not imported: LIO rejects its name: {e}"),
                );
                return None;
            }
        };
        if self
            .out
            .targets
            .iter()
            .any(|x| x.fabric == "iscsi" && x.wwn == wwn)
        {
            self.target_not_imported(
                t,
                format!(
                    "the target is not imported: {wwn} is already imported from another TARGET (iSCSI names \
                     are case-insensitive)"
                ),
            );
            return None;
        }
        Some((wwn, note))
    }

    fn target_not_imported(&mut self, t: &'a ast::Target, why: String) {
        self.targets
            .insert(t.name.as_str(), TargetState::NotImported(why.clone()));
        self.not_imported_target(t, &why);
    }

    /// Reads a TARGET's attributes (TPG attributes and parameters, portals, accounts)
    /// and reports those whose finding does not depend on the ACLs.
    fn target_settings(
        &mut self,
        t: &'a ast::Target,
        driver_enabled: bool,
    ) -> Result<TargetSettings<'a>, Error> {
        let attrs = self.dedupe(
            &t.attributes,
            &["IncomingUser", "OutgoingUser", "allowed_portal"],
        )?;
        let mut s = TargetSettings::default();
        for a in attrs {
            self.target_attr(a, driver_enabled, &mut s)?;
        }
        if let Some(p) = t.hw_target {
            self.push(
                p,
                Fidelity::Ignored,
                "HW_TARGET",
                "has no meaning for iSCSI targets",
            );
        }
        let (auth_required, incoming) = self.usable_accounts(std::mem::take(&mut s.incoming));
        s.auth_required = auth_required;
        s.incoming = incoming;
        let (_, outgoing) = self.usable_accounts(std::mem::take(&mut s.outgoing));
        s.outgoing = outgoing;
        Ok(s)
    }

    /// One TARGET attribute.
    fn target_attr(
        &mut self,
        a: &'a Attribute,
        driver_enabled: bool,
        s: &mut TargetSettings<'a>,
    ) -> Result<(), Error> {
        let name = a.name.as_str();
        if let Some(kind) = param_kind(name) {
            return self.iscsi_param(a, kind, &mut s.parameters);
        }
        match name {
            "enabled" => {
                s.enabled = boolean(a)?;
                s.enabled_given = true;
                let d = match (s.enabled, driver_enabled) {
                    (true, true) => "TPG enable true",
                    (true, false) => "TPG enable false: the iSCSI driver itself is not enabled",
                    (false, _) => "TPG enable false",
                };
                self.attr(a, Fidelity::Exact, d);
            }
            "rel_tgt_id" => {
                let v = parse_rel_tgt_id(a)?;
                s.rel_tgt_id = Some((v, a.pos));
                self.attr(a, Fidelity::Approximate, rel_tgt_id_detail(v));
            }
            "IncomingUser" => s.incoming.push((a, account(a)?)),
            "OutgoingUser" => s.outgoing.push((a, account(a)?)),
            "allowed_portal" => self.allowed_portal(a, s),
            "alias" => {
                s.parameters.insert(
                    "TargetAlias".into(),
                    ConfigValue::Str(a.value_str().to_owned()),
                );
                self.attr(a, Fidelity::Exact, "parameter TargetAlias (RFC 7143 13.6)");
            }
            "QueuedCommands" => self.queued_commands(a, &mut s.tpg_attributes)?,
            "NopInInterval" | "NopInTimeout" => self.nopin(a, s)?,
            _ => self.by_rules(a, TARGET_RULES, "unknown iSCSI-SCST target attribute")?,
        }
        Ok(())
    }

    /// `allowed_portal`: a portal on port 3260 when the value is a plain address.
    fn allowed_portal(&mut self, a: &Attribute, s: &mut TargetSettings<'_>) {
        s.allowed_portals += 1;
        let v = a.value_str();
        if is_pattern(v) {
            self.attr(
                a,
                Fidelity::Unsupported,
                "LIO portals are addresses, not patterns; no portal is created for it",
            );
        } else if let Some(ip) = portal_address(v) {
            if s.portals.iter().any(|p| p.ip_address == ip) {
                self.attr(
                    a,
                    Fidelity::Ignored,
                    format!("the same portal {ip}:{ISCSI_PORT} as above"),
                );
            } else {
                self.attr(a, Fidelity::Exact, format!("portal {ip}:{ISCSI_PORT}"));
                s.portals.push(Portal {
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

    /// `QueuedCommands` → TPG attribute `default_cmdsn_depth`, the CmdSN window.
    fn queued_commands(
        &mut self,
        a: &Attribute,
        tpg_attributes: &mut Settings,
    ) -> Result<(), Error> {
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
        Ok(())
    }

    /// `NopInInterval` / `NopInTimeout` → node ACL attributes `nopin_timeout` /
    /// `nopin_response_timeout`, clamped to LIO's range; reported once demo mode is known.
    fn nopin(&mut self, a: &'a Attribute, s: &mut TargetSettings<'a>) -> Result<(), Error> {
        let v = ulong(a)?;
        let interval = a.name == "NopInInterval";
        let lio = if interval {
            "nopin_timeout"
        } else {
            "nopin_response_timeout"
        };
        if v == 0 && interval {
            self.attr(
                a,
                Fidelity::Unsupported,
                "LIO cannot switch NOP-In pings off",
            );
        } else {
            let clamped = v.clamp(NOPIN_MIN, NOPIN_MAX);
            s.acl_attributes.insert(lio.into(), int(clamped));
            s.nopin.push((a, lio, clamped));
        }
        Ok(())
    }

    /// Group-level CHAP accounts (an extension SCST lacks) and the other attributes of
    /// each group.
    fn group_accounts(
        &mut self,
        groups: &mut [GroupInfo<'a>],
        target_in: bool,
    ) -> Result<(), Error> {
        for gi in groups.iter_mut() {
            let g = gi.g;
            let gattrs = self.dedupe(&g.attributes, &["IncomingUser", "OutgoingUser"])?;
            let mut gin = Vec::new();
            let mut gout = Vec::new();
            for a in gattrs {
                match a.name.as_str() {
                    "IncomingUser" => gin.push((a, account(a)?)),
                    "OutgoingUser" => gout.push((a, account(a)?)),
                    _ => self.by_rules(a, GROUP_RULES, "unknown initiator group attribute")?,
                }
            }
            let (g_auth, gin) = self.usable_accounts(gin);
            let (_, gout) = self.usable_accounts(gout);
            self.group_account_findings(&gin, &gout, target_in);
            gi.auth_required = g_auth;
            gi.incoming = gin.into_iter().next().map(|(_, acc)| acc);
            gi.outgoing = gout.into_iter().next().map(|(_, acc)| acc);
        }
        Ok(())
    }

    fn group_account_findings(
        &mut self,
        gin: &[(&Attribute, Account)],
        gout: &[(&Attribute, Account)],
        target_in: bool,
    ) {
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
            let detail = if gin.is_empty() && !target_in {
                "without a usable IncomingUser no CHAP takes place, so there is no mutual CHAP either"
            } else if k > 0 {
                ONE_MUTUAL
            } else {
                "iSCSI-SCST has no per-group OutgoingUser; imported as the mutual CHAP account of the node \
                 ACLs this group serves"
            };
            self.attr(a, Fidelity::Approximate, detail);
        }
    }

    /// Node ACLs for exact initiator names, with the group SCST serves each; also the
    /// groups that serve an initiator whose name LIO rejects.
    fn acl_plans(&mut self, access: &Access<'a>) -> (Vec<AclPlan<'a>>, HashSet<usize>) {
        let mut plans: Vec<AclPlan<'a>> = Vec::new();
        let mut acl_names: HashMap<String, Pos> = HashMap::new();
        let mut failed: HashSet<usize> = HashSet::new();
        for (gidx, g) in access.groups.iter().enumerate() {
            for &i in &g.exact {
                let Some((name, note)) = self.initiator_name(i) else {
                    failed.insert(access.effective(&i.name).unwrap_or(gidx));
                    continue;
                };
                if let Some(first) = acl_names.get(&name) {
                    let detail = format!(
                        "the same initiator as line {} (SCST compares names case-insensitively); one ACL serves both",
                        first.line
                    );
                    self.push(
                        i.pos,
                        Fidelity::Ignored,
                        format!("INITIATOR {}", i.name),
                        detail,
                    );
                    self.not_imported_attrs(&i.attributes, "unknown initiator attribute");
                    continue;
                }
                acl_names.insert(name.clone(), i.pos);
                plans.push(AclPlan {
                    entry: i,
                    name,
                    listed: gidx,
                    eff: access.effective(&i.name).unwrap_or(gidx),
                    note,
                });
            }
        }
        (plans, failed)
    }

    /// The ACL name of an exact INITIATOR entry and why it differs from the entry;
    /// `None`, with the entry reported, when LIO rejects it.
    fn initiator_name(&mut self, i: &ast::Initiator) -> Option<(String, Option<String>)> {
        match lio_iscsi_name(&i.name) {
            Ok((name, None)) => Some((name, None)),
            Ok((lower, Some(e))) => Some((
                lower,
                Some(format!(
                    "SCST matches initiator names case-insensitively, LIO compares them exactly: the ACL uses \
                     the lowercase normal form (RFC 3722) that initiators send ({e})"
                )),
            )),
            Err(e) => {
                self.push(
                    i.pos,
                    Fidelity::Unsupported,
                    format!("INITIATOR {}", i.name),
                    format!("LIO rejects this initiator name: {e}"),
                );
                self.not_imported_attrs(&i.attributes, "its INITIATOR is not imported");
                None
            }
        }
    }

    /// Why demo mode would show someone more than SCST did (empty: it would not).
    fn demo_blockers(&self, access: &Access<'a>, plans: &[AclPlan<'a>]) -> Vec<String> {
        let f_uses = &access.f_uses;
        let mut blockers: Vec<String> = f_uses
            .iter()
            .filter(|u| u.ro && !u.disk)
            .map(|u| {
                format!(
                    "LIO's demo mode cannot write-protect LUN {} (line {}): it write-protects disks only and {} \
                     is not a disk",
                    u.number,
                    u.pos.line,
                    self.dev_name(u.dev)
                )
            })
            .collect();
        if f_uses.is_empty() {
            return blockers;
        }
        for &gi in &access.order {
            let g = &access.groups[gi];
            if !access.live(gi) || Some(gi) == access.first_all {
                continue;
            }
            for p in &g.partial {
                if !grants_no_more(f_uses, &g.uses, access.demo_wp) {
                    blockers.push(format!(
                        "initiators matching INITIATOR {} (line {}) would see them too",
                        p.name, p.pos.line
                    ));
                }
            }
        }
        let f_devs: HashSet<usize> = f_uses.iter().map(|u| u.dev).collect();
        let mut reported: HashSet<usize> = HashSet::new();
        for plan in plans {
            let g = &access.groups[plan.eff];
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
        blockers
    }

    /// The node ACLs and the findings of their INITIATOR entries; records each ACL name
    /// in the group that serves it.
    fn node_acls(
        &mut self,
        access: &mut Access<'a>,
        plans: &[AclPlan<'a>],
        d: &Decision,
        s: &TargetSettings<'_>,
    ) -> Vec<NodeAcl> {
        let mut acls: Vec<NodeAcl> = Vec::new();
        for plan in plans {
            acls.push(node_acl(plan, &access.groups[plan.eff], &d.dev_tpg, s));
            self.acl_finding(access, plan);
        }
        for plan in plans {
            access.groups[plan.eff].acls.push(plan.name.clone());
        }
        acls
    }

    fn acl_finding(&mut self, access: &Access<'a>, plan: &AclPlan<'a>) {
        let g = &access.groups[plan.eff];
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
                g.g.name, access.groups[plan.listed].g.name
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

    /// The findings of the pattern INITIATOR entries, group by group in SCST's order.
    fn pattern_findings(&mut self, access: &Access<'a>, d: &Decision) {
        for &gi in &access.order {
            let g = &access.groups[gi];
            for (k, i) in g.all.iter().enumerate() {
                self.match_all_finding(access, gi, k, i, d);
            }
            for i in &g.partial {
                let (fidelity, detail) = access.partial_finding(gi, d);
                self.push(i.pos, fidelity, format!("INITIATOR {}", i.name), detail);
                self.not_imported_attrs(&i.attributes, "pattern entries have no LIO counterpart");
            }
        }
    }

    /// The finding of the `k`-th match-all entry `i` of group `gi`.
    fn match_all_finding(
        &mut self,
        access: &Access<'a>,
        gi: usize,
        k: usize,
        i: &ast::Initiator,
        d: &Decision,
    ) {
        let construct = format!("INITIATOR {}", i.name);
        if Some(gi) != access.first_all || k > 0 {
            let m = access
                .first_all
                .map(|m| access.groups[m].g.name.clone())
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
        } else if d.demo {
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
                format!(
                    "initiators without a node ACL get no LUNs: demo mode cannot be used because {}",
                    d.blocked
                ),
            );
        }
        self.not_imported_attrs(&i.attributes, "pattern entries have no LIO counterpart");
    }

    /// The findings of the target's own (default) LUN set.
    fn default_lun_findings(&mut self, access: &Access<'a>, d: &Decision) {
        for u in &access.default_uses {
            let construct = format!("LUN {} {}", u.number, self.dev_name(u.dev));
            match access.first_all {
                None => self.fallback_lun_finding(u, &construct, d, "the default LUN set"),
                Some(m) => {
                    let detail = format!(
                        "every initiator matches INITIATOR * of GROUP {}, so SCST never used the default LUN set",
                        access.groups[m].g.name
                    );
                    self.push(u.pos, Fidelity::Ignored, construct, detail);
                }
            }
        }
    }

    /// The findings of each group's LUNs, then of the group itself.
    fn group_lun_findings(&mut self, access: &Access<'a>, d: &Decision) {
        for (gi, g) in access.groups.iter().enumerate() {
            for u in &g.uses {
                self.group_lun_finding(access, gi, u, d);
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
    }

    /// The finding of LUN `u` of group `gi`.
    fn group_lun_finding(&mut self, access: &Access<'a>, gi: usize, u: &Use, d: &Decision) {
        let g = &access.groups[gi];
        let is_fallback = access.first_all == Some(gi);
        let live_patterns = access.live(gi) && !is_fallback && !g.partial.is_empty();
        let construct = format!("LUN {} {}", u.number, self.dev_name(u.dev));
        let in_f = access.f_uses.iter().any(|x| x.key() == u.key());
        if !g.acls.is_empty() {
            let tpg_lun = d.dev_tpg.get(&u.dev).copied().unwrap_or(0);
            let detail = format!(
                "mapped LUN {} → TPG LUN {tpg_lun} ({}) for {}{}",
                u.number,
                self.dev_so_path(u.dev),
                names(&g.acls),
                if u.ro { ", write-protected" } else { "" }
            );
            self.push(u.pos, Fidelity::Exact, construct.clone(), detail);
            if is_fallback {
                self.fallback_lun_finding(u, &construct, d, "this group");
            }
        } else if is_fallback {
            self.fallback_lun_finding(u, &construct, d, "this group");
        } else if d.failed.contains(&gi) {
            self.push(
                u.pos,
                Fidelity::Unsupported,
                construct,
                "LIO rejects the names of the initiators SCST serves with this group; nobody gets this LUN",
            );
        } else if live_patterns && d.demo && in_f {
            self.push(
                u.pos,
                Fidelity::Exact,
                construct,
                format!(
                    "initiators matching this group's patterns reach it through demo mode, as part of {}",
                    access.fallback_name
                ),
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

    /// The findings of the target's IncomingUser and OutgoingUser lines.
    fn target_chap_findings(&mut self, s: &TargetSettings<'a>, acls: &[NodeAcl], demo: bool) {
        let with_target_creds = acls
            .iter()
            .filter(|a| !a.attributes.contains_key("authentication") && !a.auth.is_empty())
            .count();
        for (k, (a, acc)) in s.incoming.iter().enumerate() {
            if k > 0 {
                self.attr(
                    a,
                    Fidelity::Approximate,
                    format!(
                        "LIO holds one CHAP account per ACL and TPG; logins as {:?} are refused",
                        acc.user
                    ),
                );
                continue;
            }
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
        }
        for (k, (a, _)) in s.outgoing.iter().enumerate() {
            if s.target_in().is_none() {
                self.attr(a, Fidelity::Ignored, NO_MUTUAL);
            } else if k == 0 {
                self.attr(
                    a,
                    Fidelity::Exact,
                    "mutual CHAP account (chap_mutual_userid/chap_mutual_password)",
                );
            } else {
                self.attr(a, Fidelity::Approximate, ONE_MUTUAL);
            }
        }
    }

    /// The findings of the NOP-In timers: node ACL attributes, which demo-mode
    /// initiators do not get.
    fn nopin_findings(&mut self, s: &TargetSettings<'a>, demo: bool) -> Result<(), Error> {
        for (a, lio, v) in &s.nopin {
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
        Ok(())
    }

    /// The finding of the TARGET itself; then the target joins the output.
    fn target_done(
        &mut self,
        t: &'a ast::Target,
        wwn: String,
        name_note: Option<WwnError>,
        tpg: Tpg,
        s: &TargetSettings<'a>,
        demo: bool,
    ) {
        let construct = format!("TARGET {}", t.name);
        let detail = target_detail(&wwn, name_note.as_ref(), &tpg, s.enabled_given, demo);
        let fidelity = if name_note.is_some() {
            Fidelity::Approximate
        } else {
            Fidelity::Exact
        };
        self.push(t.pos, fidelity, construct.clone(), detail);
        if s.allowed_portals == 0 {
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
            ..Default::default()
        });
        self.targets.insert(
            t.name.as_str(),
            TargetState::Iscsi {
                out,
                rel_tgt_id: s.rel_tgt_id,
            },
        );
    }

    /// The finding of a LUN of the fallback set (what initiators without a node ACL see).
    fn fallback_lun_finding(&mut self, u: &Use, construct: &str, d: &Decision, set: &str) {
        if !d.demo {
            self.push(
                u.pos,
                Fidelity::Unsupported,
                construct.to_owned(),
                format!(
                    "initiators without a node ACL cannot reach it: demo mode cannot be used because {}",
                    d.blocked
                ),
            );
        } else if demo_ro(u, d.demo_wp) && !u.ro {
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
    }

    /// A login key (RFC 7143 13) → TPG parameter, when LIO has it and the value fits.
    fn iscsi_param(
        &mut self,
        a: &Attribute,
        kind: ParamKind,
        parameters: &mut Settings,
    ) -> Result<(), Error> {
        let name = a.name.as_str();
        let value = match kind {
            ParamKind::Number(min, max) => {
                let v = ulong(a)?;
                if v < min {
                    return Err(bad_value(
                        a,
                        format!("below the minimum {min} of RFC 7143 13; SCST rejects it"),
                    ));
                }
                if v > max {
                    self.attr(
                        a,
                        Fidelity::Unsupported,
                        format!("LIO accepts at most {max} (RFC 7143 13); LIO's default is used"),
                    );
                    return Ok(());
                }
                v.to_string()
            }
            ParamKind::Boolean => yes_no(a)?.to_owned(),
            ParamKind::Digest => digest(a)?,
            ParamKind::Marker => return self.by_rule(a, &MARKER),
            ParamKind::MarkInt => return self.by_rule(a, &MARK_INT),
            ParamKind::Rdma => return self.by_rule(a, &RDMA),
            ParamKind::NotInLio => return self.by_rule(a, &NOT_IN_LIO),
        };
        parameters.insert(name.to_owned(), ConfigValue::Str(value.clone()));
        self.attr(a, Fidelity::Exact, format!("TPG parameter {name} {value}"));
        Ok(())
    }
}

/// OFMarker / IFMarker: RFC 7143 dropped markers; LIO supports only No.
const MARKER: Rule = Rule::when(
    &["OFMarker", "IFMarker"],
    Test::No,
    (Fidelity::Exact, "no markers, as in LIO"),
    (
        Fidelity::Unsupported,
        "LIO does not support markers (dropped by RFC 7143)",
    ),
);

/// OFMarkInt / IFMarkInt: meaningless without markers.
const MARK_INT: Rule = Rule::fixed(
    &["OFMarkInt", "IFMarkInt"],
    Fidelity::Ignored,
    "markers are never used: iSCSI-SCST, like LIO, only supports OFMarker and IFMarker No",
);

/// RDMAExtensions (RFC 7145 6.3): LIO negotiates it itself, on iSER portals only.
const RDMA: Rule = Rule::when(
    &["RDMAExtensions"],
    Test::No,
    (Fidelity::Exact, "no iSER on TCP portals, as in LIO"),
    (
        Fidelity::Unsupported,
        "LIO negotiates iSER only on portals with iser enabled, which this importer does not create",
    ),
);

/// Login keys that are not LIO TPG parameters.
const NOT_IN_LIO: Rule = Rule::fixed(
    &[
        "TargetRecvDataSegmentLength",
        "InitiatorRecvDataSegmentLength",
        "MaxAHSLength",
        "TaggedBufferForSolicitedDataOnly",
        "iSERHelloRequired",
        "MaxOutstandingUnexpectedPDUs",
    ],
    Fidelity::Unsupported,
    "not an LIO TPG parameter (iSER keys are negotiated by LIO itself)",
);

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
    use crate::convert::rules::lookup;
    use crate::convert::rules::test_attr as attr;

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

    fn group(name: &str, initiators: &[&str]) -> ast::Group {
        ast::Group {
            name: name.into(),
            pos: Pos::default(),
            attributes: Vec::new(),
            luns: Vec::new(),
            initiators: initiators
                .iter()
                .map(|i| ast::Initiator {
                    name: (*i).into(),
                    pos: Pos::default(),
                    attributes: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn access_follows_scstadmin_group_order() {
        // Groups are created in name order; the first with a matching entry serves a
        // session (scst_find_tgt_acg_by_name_wild), else the default LUN set.
        let pat = group("a_pat", &["iqn.1994-05.com.redhat:*"]);
        let all = group("b_all", &["*"]);
        let exact = group(
            "c_exact",
            &["iqn.1994-05.com.redhat:x", "iqn.2000-01.com.example:y"],
        );
        let groups = vec![
            GroupInfo::new(&exact, vec![u(0, 3, false, true)]),
            GroupInfo::new(&all, vec![u(0, 2, true, true)]),
            GroupInfo::new(&pat, vec![u(0, 1, false, true)]),
        ];
        assert_eq!(groups[0].exact.len(), 2);
        assert_eq!((groups[1].all.len(), groups[2].partial.len()), (1, 1));
        let access = Access::new(vec![u(5, 0, false, true)], groups);
        assert_eq!(access.order, vec![2, 1, 0]);
        assert_eq!(access.first_all, Some(1));
        assert_eq!(access.fallback_name, "GROUP b_all");
        assert!(same_set(&access.f_uses, &[u(0, 2, true, true)]));
        // A read-only disk in the fallback set: demo mode must write-protect.
        assert!(access.demo_wp);
        assert!(access.live(2) && access.live(1) && !access.live(0));
        assert_eq!(access.effective("iqn.1994-05.com.redhat:x"), Some(2));
        assert_eq!(access.effective("iqn.2000-01.com.example:y"), Some(1));
        // Without a match-all group the default LUN set is the fallback.
        let access = Access::new(
            vec![u(5, 0, false, true)],
            vec![GroupInfo::new(&pat, Vec::new())],
        );
        assert_eq!(access.first_all, None);
        assert_eq!(access.fallback_name, "the default LUN set");
        assert!(access.live(0) && !access.demo_wp);
        assert_eq!(access.effective("iqn.2000-01.com.example:y"), None);
    }

    #[test]
    fn tpg_luns_keep_scst_numbers_when_free() {
        let g = group("g", &["iqn.1994-05.com.redhat:x"]);
        let access = Access::new(
            vec![u(0, 0, false, true), u(1, 1, false, true)],
            vec![GroupInfo::new(
                &g,
                vec![u(0, 2, false, true), u(1, 1, true, true)],
            )],
        );
        let plans = [AclPlan {
            entry: &g.initiators[0],
            name: "iqn.1994-05.com.redhat:x".into(),
            listed: 0,
            eff: 0,
            note: None,
        }];
        // No demo mode: the default set keeps 0 and 1; device 2 (LUN 0 of the group)
        // takes the first free index; device 1 is shared.
        let (luns, dev_tpg) = tpg_luns(&access, &plans, false);
        assert_eq!(luns, vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(dev_tpg.get(&2), Some(&2));
        // Demo mode maps TPG LUN n as LUN n, so the TPG is exactly the fallback set.
        let (luns, _) = tpg_luns(&access, &plans, true);
        assert_eq!(luns, vec![(0, 0), (1, 1)]);
    }

    #[test]
    fn iscsi_names_for_lio() {
        // RFC 3720 3.2.6.3.1 iqn names; LIO accepts only the lowercase normal form
        // (RFC 3722 stringprep), which is what initiators send.
        let (name, note) = lio_iscsi_name("iqn.2006-10.net.vlnb:tgt").unwrap();
        assert_eq!(name, "iqn.2006-10.net.vlnb:tgt");
        assert!(note.is_none());
        let (name, note) = lio_iscsi_name("IQN.2006-10.NET.VLNB:TGT").unwrap();
        assert_eq!(name, "iqn.2006-10.net.vlnb:tgt");
        assert!(note.is_some());
        assert!(lio_iscsi_name("iqn.2006-10").is_err());
        assert!(lio_iscsi_name("target0").is_err());
    }

    #[test]
    fn rel_tgt_ids_are_nonzero_16_bit() {
        // SPC-4 7.8.6.6: relative target port identifier 0 is reserved; 16 bits.
        assert_eq!(parse_rel_tgt_id(&attr("rel_tgt_id", "1")).unwrap(), 1);
        assert_eq!(
            parse_rel_tgt_id(&attr("rel_tgt_id", "0xffff")).unwrap(),
            65535
        );
        assert!(parse_rel_tgt_id(&attr("rel_tgt_id", "0")).is_err());
        assert!(parse_rel_tgt_id(&attr("rel_tgt_id", "65536")).is_err());
    }

    #[test]
    fn attribute_tables() {
        // Each table answers for its own names only; unknown names fall through.
        let mc = lookup(TARGET_RULES, "MaxSessions").unwrap();
        assert_eq!(mc.test, Test::Zero);
        assert_eq!(
            lookup(TARGET_RULES, "black_hole").unwrap().pass.0,
            Fidelity::Exact
        );
        assert!(lookup(GROUP_RULES, "black_hole").is_some());
        assert!(lookup(GROUP_RULES, "MaxSessions").is_none());
        assert!(lookup(TARGET_RULES, "QueuedCommands").is_none());
        assert!(lookup(DRIVER_RULES, "enabled").is_none());
        assert_eq!(
            lookup(DRIVER_RULES, "version").unwrap().pass.0,
            Fidelity::Ignored
        );
        // Login keys in a table are never also TPG parameters.
        for r in [&MARKER, &MARK_INT, &RDMA, &NOT_IN_LIO] {
            for n in r.names {
                assert!(!matches!(
                    param_kind(n),
                    None | Some(ParamKind::Number(..) | ParamKind::Boolean | ParamKind::Digest)
                ));
            }
        }
    }

    #[test]
    fn rel_tgt_id_detail_mentions_the_tag_change() {
        assert!(rel_tgt_id_detail(1).contains("stays 1"));
        assert!(rel_tgt_id_detail(7).contains("TargetPortalGroupTag 7"));
    }
}
