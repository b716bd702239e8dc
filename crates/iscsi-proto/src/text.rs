//! Text segments and key negotiation (RFC 7143 6 and 13).
//!
//! A text data segment is a sequence of `key=value` strings, each terminated by one NUL
//! (RFC 7143 6.1). [`parse`] checks the framing strictly — NUL termination, key
//! characters and length, value length, UTF-8, duplicate keys — and [`encode`] writes a
//! segment back. [`KEYS`] describes every key of RFC 7143 section 13 (plus the security
//! keys of section 12 and `iSCSIProtocolLevel` of RFC 7144): how it is negotiated, its
//! range and where it may be used. [`negotiate_operational`] answers one operational key
//! for the target side and records the outcome in [`Negotiated`].

use std::fmt;

/// Longest key name (RFC 7143 6.1: "key-name ... a maximum of 63 characters").
pub const MAX_KEY_LEN: usize = 63;
/// Longest ordinary value (RFC 7143 6.1: text values up to 255 bytes).
pub const MAX_VALUE_LEN: usize = 255;
/// Longest binary value string (CHAP_C/CHAP_R may carry long challenges, RFC 7143 6.1
/// "binary-value" up to 1024 bytes as hex plus prefix).
pub const MAX_BINARY_VALUE_LEN: usize = 8192;
/// Most `key=value` pairs in one text exchange. RFC 7143 defines about 35 keys; the
/// bound keeps the work per request (and the size of the reply, one answer per key)
/// small whatever an initiator sends.
pub const MAX_PAIRS: usize = 256;

/// Why a text segment is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The last pair is not NUL-terminated.
    #[error("text segment does not end with NUL")]
    MissingTerminator,
    /// A pair has no `=`.
    #[error("pair {0:?} has no '='")]
    NoEquals(String),
    /// The key is empty.
    #[error("empty key")]
    EmptyKey,
    /// The key is longer than 63 characters.
    #[error("key {0:?} is longer than 63 characters")]
    KeyTooLong(String),
    /// The key has a character outside RFC 7143 6.1's key-name set.
    #[error("key {0:?} has an invalid character")]
    BadKeyChar(String),
    /// The value is too long.
    #[error("value of {0} is too long")]
    ValueTooLong(String),
    /// The pair is not UTF-8.
    #[error("text is not UTF-8")]
    NotUtf8,
    /// A key appears twice in one request sequence (RFC 7143 6.1: "a key ... MUST NOT be
    /// repeated").
    #[error("key {0} repeated")]
    Duplicate(String),
    /// More than [`MAX_PAIRS`] pairs.
    #[error("more than {MAX_PAIRS} keys")]
    TooManyKeys,
}

/// Parsed `key=value` pairs in order.
pub type Pairs = Vec<(String, String)>;

fn valid_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '@' | '_')
}

fn is_binary_key(key: &str) -> bool {
    matches!(key, "CHAP_C" | "CHAP_R")
}

/// Parses a text data segment (RFC 7143 6.1). Empty strings between NULs (NUL padding
/// some initiators add) are skipped; every other violation is an error.
pub fn parse(data: &[u8]) -> Result<Pairs, TextError> {
    let mut out: Pairs = Vec::new();
    // Duplicate detection in linear time (the list scan it replaces was quadratic).
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    if data.is_empty() {
        return Ok(out);
    }
    if *data.last().unwrap_or(&0) != 0 {
        return Err(TextError::MissingTerminator);
    }
    for raw in data[..data.len() - 1].split(|&b| b == 0) {
        if raw.is_empty() {
            continue;
        }
        let s = std::str::from_utf8(raw).map_err(|_| TextError::NotUtf8)?;
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| TextError::NoEquals(s.chars().take(64).collect()))?;
        if k.is_empty() {
            return Err(TextError::EmptyKey);
        }
        if k.len() > MAX_KEY_LEN {
            return Err(TextError::KeyTooLong(k.chars().take(64).collect()));
        }
        if !k.chars().all(valid_key_char) {
            return Err(TextError::BadKeyChar(k.to_string()));
        }
        let max = if is_binary_key(k) {
            MAX_BINARY_VALUE_LEN
        } else {
            MAX_VALUE_LEN
        };
        if v.len() > max {
            return Err(TextError::ValueTooLong(k.to_string()));
        }
        if out.len() >= MAX_PAIRS {
            return Err(TextError::TooManyKeys);
        }
        if !seen.insert(k) {
            return Err(TextError::Duplicate(k.to_string()));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Encodes pairs as a text data segment.
pub fn encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref().as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_ref().as_bytes());
        out.push(0);
    }
    out
}

/// How a key's outcome is computed (RFC 7143 6.2, 6.2.1, 6.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Each side declares its own value; no answer is needed.
    Declarative,
    /// The responder picks the first value of the offered list it supports.
    List,
    /// Numerical, outcome is the minimum.
    Min,
    /// Numerical, outcome is the maximum.
    Max,
    /// Boolean, outcome is the OR.
    Or,
    /// Boolean, outcome is the AND.
    And,
    /// Handled by the login/discovery logic itself (names, security keys, SendTargets).
    Special,
    /// Obsoleted by RFC 7143 13.26 (markers).
    Obsolete,
}

/// Where a key may appear (RFC 7143 13 "Use").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Leading connection of a session only, during login.
    LeadingOnly,
    /// During login only (any connection).
    InitializeOnly,
    /// Login and full feature phase.
    All,
    /// Full feature phase only (SendTargets).
    FullFeatureOnly,
    /// Security stage only.
    Security,
}

/// Description of one text key.
#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    /// The key name.
    pub name: &'static str,
    /// How the outcome is computed.
    pub kind: KeyKind,
    /// Where it may appear.
    pub usage: KeyUse,
    /// Valid range for numerical keys.
    pub range: (u64, u64),
    /// Irrelevant in discovery sessions (RFC 7143 13 per-key "Irrelevant when").
    pub irrelevant_in_discovery: bool,
}

const fn key(
    name: &'static str,
    kind: KeyKind,
    usage: KeyUse,
    range: (u64, u64),
    irrelevant_in_discovery: bool,
) -> KeyDef {
    KeyDef {
        name,
        kind,
        usage,
        range,
        irrelevant_in_discovery,
    }
}

const N: (u64, u64) = (0, 0);
const SEG: (u64, u64) = (512, (1 << 24) - 1);

/// Every key of RFC 7143 section 13, the security keys of section 12 and
/// `iSCSIProtocolLevel` (RFC 7144 2.1).
pub const KEYS: &[KeyDef] = &[
    key(
        "HeaderDigest",
        KeyKind::List,
        KeyUse::InitializeOnly,
        N,
        false,
    ), // 13.1
    key(
        "DataDigest",
        KeyKind::List,
        KeyUse::InitializeOnly,
        N,
        false,
    ), // 13.1
    key(
        "MaxConnections",
        KeyKind::Min,
        KeyUse::LeadingOnly,
        (1, 65535),
        true,
    ), // 13.2
    key(
        "SendTargets",
        KeyKind::Special,
        KeyUse::FullFeatureOnly,
        N,
        false,
    ), // 13.3
    key(
        "TargetName",
        KeyKind::Special,
        KeyUse::InitializeOnly,
        N,
        false,
    ), // 13.4
    key(
        "InitiatorName",
        KeyKind::Special,
        KeyUse::InitializeOnly,
        N,
        false,
    ), // 13.5
    key("TargetAlias", KeyKind::Declarative, KeyUse::All, N, false), // 13.6
    key(
        "InitiatorAlias",
        KeyKind::Declarative,
        KeyUse::All,
        N,
        false,
    ), // 13.7
    key("TargetAddress", KeyKind::Declarative, KeyUse::All, N, false), // 13.8
    key(
        "TargetPortalGroupTag",
        KeyKind::Declarative,
        KeyUse::InitializeOnly,
        (0, 65535),
        false,
    ), // 13.9
    key("InitialR2T", KeyKind::Or, KeyUse::LeadingOnly, N, true),    // 13.10
    key("ImmediateData", KeyKind::And, KeyUse::LeadingOnly, N, true), // 13.11
    key(
        "MaxRecvDataSegmentLength",
        KeyKind::Declarative,
        KeyUse::All,
        SEG,
        false,
    ), // 13.12
    key(
        "MaxBurstLength",
        KeyKind::Min,
        KeyUse::LeadingOnly,
        SEG,
        true,
    ), // 13.13
    key(
        "FirstBurstLength",
        KeyKind::Min,
        KeyUse::LeadingOnly,
        SEG,
        true,
    ), // 13.14
    key(
        "DefaultTime2Wait",
        KeyKind::Max,
        KeyUse::LeadingOnly,
        (0, 3600),
        false,
    ), // 13.15
    key(
        "DefaultTime2Retain",
        KeyKind::Min,
        KeyUse::LeadingOnly,
        (0, 3600),
        false,
    ), // 13.16
    key(
        "MaxOutstandingR2T",
        KeyKind::Min,
        KeyUse::LeadingOnly,
        (1, 65535),
        true,
    ), // 13.17
    key("DataPDUInOrder", KeyKind::Or, KeyUse::LeadingOnly, N, true), // 13.18
    key(
        "DataSequenceInOrder",
        KeyKind::Or,
        KeyUse::LeadingOnly,
        N,
        true,
    ), // 13.19
    key(
        "ErrorRecoveryLevel",
        KeyKind::Min,
        KeyUse::LeadingOnly,
        (0, 2),
        false,
    ), // 13.20
    key(
        "SessionType",
        KeyKind::Special,
        KeyUse::LeadingOnly,
        N,
        false,
    ), // 13.21
    key("TaskReporting", KeyKind::List, KeyUse::LeadingOnly, N, true), // 13.23
    key(
        "iSCSIProtocolLevel",
        KeyKind::Min,
        KeyUse::LeadingOnly,
        (0, 31),
        false,
    ), // RFC 7144 2.1
    key(
        "OFMarker",
        KeyKind::Obsolete,
        KeyUse::InitializeOnly,
        N,
        false,
    ), // 13.26
    key(
        "IFMarker",
        KeyKind::Obsolete,
        KeyUse::InitializeOnly,
        N,
        false,
    ), // 13.26
    key(
        "OFMarkInt",
        KeyKind::Obsolete,
        KeyUse::InitializeOnly,
        N,
        false,
    ), // 13.26
    key(
        "IFMarkInt",
        KeyKind::Obsolete,
        KeyUse::InitializeOnly,
        N,
        false,
    ), // 13.26
    key("AuthMethod", KeyKind::Special, KeyUse::Security, N, false), // 12.1
    key("CHAP_A", KeyKind::Special, KeyUse::Security, N, false),     // 12.1.3
    key("CHAP_I", KeyKind::Special, KeyUse::Security, N, false),
    key("CHAP_C", KeyKind::Special, KeyUse::Security, N, false),
    key("CHAP_N", KeyKind::Special, KeyUse::Security, N, false),
    key("CHAP_R", KeyKind::Special, KeyUse::Security, N, false),
];

/// Looks a key up in [`KEYS`].
pub fn lookup(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}

/// Parses a numerical value: decimal or `0x` hex (RFC 7143 5.1 numerical-value).
pub fn parse_number(v: &str) -> Option<u64> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if h.is_empty() || h.len() > 16 {
            return None;
        }
        u64::from_str_radix(h, 16).ok()
    } else {
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse().ok()
    }
}

/// Parses a boolean value (`Yes`/`No`, RFC 7143 5.1 boolean-value).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

/// Decodes a binary value: `0x`/`0X` hex or `0b`/`0B` base64 (RFC 7143 5.1
/// binary-value).
pub fn parse_binary(v: &str) -> Option<Vec<u8>> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if h.is_empty() {
            return None;
        }
        // An odd number of digits has an implied leading zero.
        if h.len() % 2 == 1 {
            hex::decode(format!("0{h}")).ok()
        } else {
            hex::decode(h).ok()
        }
    } else if let Some(b) = v.strip_prefix("0b").or_else(|| v.strip_prefix("0B")) {
        base64_decode(b)
    } else {
        None
    }
}

/// Encodes a binary value as `0x` lower-case hex.
pub fn format_binary(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    }
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let pads = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pads > 2 || (pads > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pads] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pads as u32;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pads]);
    }
    Some(out)
}

/// The target's side of the operational keys (from the TPG parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOffer {
    /// Accept HeaderDigest=None.
    pub header_digest_none: bool,
    /// Accept HeaderDigest=CRC32C.
    pub header_digest_crc: bool,
    /// Accept DataDigest=None.
    pub data_digest_none: bool,
    /// Accept DataDigest=CRC32C.
    pub data_digest_crc: bool,
    /// What we declare as our MaxRecvDataSegmentLength.
    pub max_recv_data_segment_length: u32,
    /// Our MaxBurstLength.
    pub max_burst_length: u32,
    /// Our FirstBurstLength.
    pub first_burst_length: u32,
    /// Our InitialR2T.
    pub initial_r2t: bool,
    /// Our ImmediateData.
    pub immediate_data: bool,
    /// Our MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// Our DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// Our DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// Our DefaultTime2Wait.
    pub default_time2wait: u32,
    /// Our DefaultTime2Retain.
    pub default_time2retain: u32,
    /// Our ErrorRecoveryLevel (only 0 is implemented).
    pub error_recovery_level: u32,
    /// Our MaxConnections.
    pub max_connections: u32,
}

impl Default for TargetOffer {
    fn default() -> Self {
        TargetOffer {
            header_digest_none: true,
            header_digest_crc: true,
            data_digest_none: true,
            data_digest_crc: true,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 65_536,
            initial_r2t: true,
            immediate_data: true,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            default_time2wait: 2,
            default_time2retain: 20,
            error_recovery_level: 0,
            max_connections: 8,
        }
    }
}

/// Outcome of operational negotiation for one connection/session. Starts at the RFC
/// defaults (RFC 7143 13.x "Default is ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// HeaderDigest=CRC32C on this connection.
    pub header_digest: bool,
    /// DataDigest=CRC32C on this connection.
    pub data_digest: bool,
    /// The initiator's MaxRecvDataSegmentLength: the most we may send in one PDU.
    pub initiator_mrdsl: u32,
    /// Our MaxRecvDataSegmentLength: the most we accept in one PDU (after login).
    pub target_mrdsl: u32,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// FirstBurstLength.
    pub first_burst_length: u32,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// DefaultTime2Wait.
    pub default_time2wait: u32,
    /// DefaultTime2Retain.
    pub default_time2retain: u32,
    /// ErrorRecoveryLevel.
    pub error_recovery_level: u32,
    /// MaxConnections.
    pub max_connections: u32,
}

impl Default for Negotiated {
    fn default() -> Self {
        Negotiated {
            header_digest: false,
            data_digest: false,
            initiator_mrdsl: 8192,
            target_mrdsl: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            initial_r2t: true,
            immediate_data: true,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            default_time2wait: 2,
            default_time2retain: 20,
            error_recovery_level: 0,
            max_connections: 1,
        }
    }
}

impl Negotiated {
    /// Applies the cross-key rules once negotiation is over: FirstBurstLength never
    /// exceeds MaxBurstLength (RFC 7143 13.14).
    pub fn finish(&mut self) {
        self.first_burst_length = self.first_burst_length.min(self.max_burst_length);
    }
}

/// Answer to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Reply `key=value`.
    Reply(String),
    /// Nothing to reply (declarations).
    Silent,
}

/// The context a key is negotiated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiationScope {
    /// A discovery session.
    pub discovery: bool,
    /// The leading connection of its session.
    pub leading: bool,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Reply(v) => f.write_str(v),
            Answer::Silent => Ok(()),
        }
    }
}

fn pick_digest(offer: &str, none_ok: bool, crc_ok: bool) -> Option<bool> {
    for v in offer.split(',') {
        match v {
            "None" if none_ok => return Some(false),
            "CRC32C" if crc_ok => return Some(true),
            _ => {}
        }
    }
    None
}

/// Negotiates one operational key offered by the initiator (RFC 7143 6.2 and 13),
/// updating `out`. `Special` and security keys are not handled here (the caller does);
/// unknown keys, including `X-` extensions, are answered `NotUnderstood` (6.2).
///
/// The dispatch below is a flat table, one arm per key naming its result function
/// (RFC 7143 13: minimum, maximum, OR or AND), which is why it stays in one piece.
pub fn negotiate_operational(
    name: &str,
    value: &str,
    ours: &TargetOffer,
    scope: NegotiationScope,
    out: &mut Negotiated,
) -> Answer {
    let Some(def) = lookup(name) else {
        return reply("NotUnderstood");
    };
    if value == "NotUnderstood" || value == "Irrelevant" || value == "Reject" {
        // An initiator answering something we never offered: nothing to negotiate.
        return Answer::Silent;
    }
    if scope.discovery && def.irrelevant_in_discovery {
        return reply("Irrelevant");
    }
    if !scope.leading && def.usage == KeyUse::LeadingOnly {
        return reply("Irrelevant");
    }
    let num = |out_field: &mut u32, ours: u32, min_wins: bool| {
        negotiate_number(value, def.range, out_field, ours, min_wins)
    };
    let boolean =
        |out_field: &mut bool, ours: bool, or: bool| negotiate_bool(value, out_field, ours, or);
    match name {
        "HeaderDigest" => negotiate_digest(
            value,
            ours.header_digest_none,
            ours.header_digest_crc,
            &mut out.header_digest,
        ),
        "DataDigest" => negotiate_digest(
            value,
            ours.data_digest_none,
            ours.data_digest_crc,
            &mut out.data_digest,
        ),
        "MaxRecvDataSegmentLength" => match parse_number(value) {
            Some(v) if v >= def.range.0 && v <= def.range.1 => {
                out.initiator_mrdsl = u32::try_from(v).unwrap_or(SEG.1 as u32);
                Answer::Silent
            }
            _ => reply("Reject"),
        },
        "MaxBurstLength" => num(&mut out.max_burst_length, ours.max_burst_length, true),
        "FirstBurstLength" => num(&mut out.first_burst_length, ours.first_burst_length, true),
        "MaxOutstandingR2T" => num(&mut out.max_outstanding_r2t, ours.max_outstanding_r2t, true),
        "MaxConnections" => num(&mut out.max_connections, ours.max_connections, true),
        "DefaultTime2Wait" => num(&mut out.default_time2wait, ours.default_time2wait, false),
        "DefaultTime2Retain" => num(&mut out.default_time2retain, ours.default_time2retain, true),
        "ErrorRecoveryLevel" => num(
            &mut out.error_recovery_level,
            ours.error_recovery_level,
            true,
        ),
        "InitialR2T" => boolean(&mut out.initial_r2t, ours.initial_r2t, true),
        "ImmediateData" => boolean(&mut out.immediate_data, ours.immediate_data, false),
        "DataPDUInOrder" => boolean(&mut out.data_pdu_in_order, ours.data_pdu_in_order, true),
        "DataSequenceInOrder" => boolean(
            &mut out.data_sequence_in_order,
            ours.data_sequence_in_order,
            true,
        ),
        _ => negotiate_fixed(name, value),
    }
}

/// `Answer::Reply(s)`.
fn reply(s: &str) -> Answer {
    Answer::Reply(s.to_string())
}

/// A list-valued digest key (RFC 7143 13.1): the first of the initiator's choices we
/// allow, `Reject` if none.
fn negotiate_digest(value: &str, none_ok: bool, crc_ok: bool, out_field: &mut bool) -> Answer {
    match pick_digest(value, none_ok, crc_ok) {
        Some(crc) => {
            *out_field = crc;
            reply(if crc { "CRC32C" } else { "None" })
        }
        None => reply("Reject"),
    }
}

/// A numerical key (RFC 7143 6.2.2): the minimum (or maximum) of the offer and ours;
/// an offer outside `range` is rejected.
fn negotiate_number(
    value: &str,
    range: (u64, u64),
    out_field: &mut u32,
    ours: u32,
    min_wins: bool,
) -> Answer {
    match parse_number(value) {
        Some(v) if v >= range.0 && v <= range.1 => {
            let v = u32::try_from(v).unwrap_or(u32::MAX);
            let r = if min_wins { v.min(ours) } else { v.max(ours) };
            *out_field = r;
            Answer::Reply(r.to_string())
        }
        _ => reply("Reject"),
    }
}

/// A Boolean key (RFC 7143 6.2.2): the OR (or AND) of the offer and ours.
fn negotiate_bool(value: &str, out_field: &mut bool, ours: bool, or: bool) -> Answer {
    match parse_bool(value) {
        Some(v) => {
            let r = if or { v || ours } else { v && ours };
            *out_field = r;
            reply(yes_no(r))
        }
        None => reply("Reject"),
    }
}

/// Keys whose answer does not depend on our offer and sets nothing.
fn negotiate_fixed(name: &str, value: &str) -> Answer {
    match name {
        "iSCSIProtocolLevel" => match parse_number(value) {
            // RFC 7144 2.1: we implement RFC 7143, protocol level 1.
            Some(v) if v <= 31 => Answer::Reply(v.min(1).to_string()),
            _ => reply("Reject"),
        },
        "TaskReporting" => {
            if value.split(',').any(|v| v == "RFC3720") {
                reply("RFC3720")
            } else {
                reply("Reject")
            }
        }
        // RFC 7143 13.26: SHOULD answer Reject, MAY answer No for the marker switches;
        // MUST answer Reject for the marker intervals. We say No, as RFC 3720 targets did.
        "OFMarker" | "IFMarker" => match parse_bool(value) {
            Some(_) => reply("No"),
            None => reply("Reject"),
        },
        "OFMarkInt" | "IFMarkInt" => reply("Reject"),
        // Declarations that need no answer.
        "InitiatorAlias" | "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" => {
            Answer::Silent
        }
        _ => reply("NotUnderstood"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_good_segment() {
        let p = parse(b"InitiatorName=iqn.a:b\0SessionType=Normal\0").unwrap();
        assert_eq!(
            p,
            vec![
                ("InitiatorName".into(), "iqn.a:b".into()),
                ("SessionType".into(), "Normal".into())
            ]
        );
        // Value may contain '='.
        let p = parse(b"X-a=b=c\0").unwrap();
        assert_eq!(p[0].1, "b=c");
        assert_eq!(parse(b"").unwrap(), vec![]);
        // NUL padding between pairs is tolerated.
        assert_eq!(parse(b"A=1\0\0B=2\0\0").unwrap().len(), 2);
    }

    /// Moved with bench/loadgen's own text codec, which this module replaces there.
    #[test]
    fn encode_then_parse_keeps_values_with_equals() {
        let pairs = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x=y".to_string()),
        ];
        let t = encode(&pairs);
        assert_eq!(t, b"A=1\0B=x=y\0");
        assert_eq!(parse(&t).unwrap(), pairs);
        // loadgen's codec skipped malformed pairs; RFC 7143 6.1 framing is enforced here.
        assert!(parse(b"\0\0junk\0K=v").is_err());
    }

    #[test]
    fn parse_errors() {
        assert_eq!(parse(b"A=1"), Err(TextError::MissingTerminator));
        assert_eq!(parse(b"A\0"), Err(TextError::NoEquals("A".into())));
        assert_eq!(parse(b"=1\0"), Err(TextError::EmptyKey));
        assert_eq!(parse(b"A B=1\0"), Err(TextError::BadKeyChar("A B".into())));
        assert_eq!(parse(b"A=1\0A=2\0"), Err(TextError::Duplicate("A".into())));
        let long_key = format!("{}=1\0", "K".repeat(64));
        assert!(matches!(
            parse(long_key.as_bytes()),
            Err(TextError::KeyTooLong(_))
        ));
        let ok_key = format!("{}=1\0", "K".repeat(63));
        assert!(parse(ok_key.as_bytes()).is_ok());
        let long_val = format!("A={}\0", "v".repeat(256));
        assert_eq!(
            parse(long_val.as_bytes()),
            Err(TextError::ValueTooLong("A".into()))
        );
        let ok_val = format!("A={}\0", "v".repeat(255));
        assert!(parse(ok_val.as_bytes()).is_ok());
        assert_eq!(parse(b"A=\xff\0"), Err(TextError::NotUtf8));
    }

    #[test]
    fn key_count_is_bounded() {
        let seg = |n: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|i| format!("X-k{i}=v\0").into_bytes())
                .collect()
        };
        assert_eq!(parse(&seg(MAX_PAIRS)).unwrap().len(), MAX_PAIRS);
        // 16k distinct keys used to be accepted after ~134M comparisons.
        assert_eq!(parse(&seg(16_000)), Err(TextError::TooManyKeys));
        let mut dup = seg(100);
        dup.extend_from_slice(b"X-k3=w\0");
        assert_eq!(parse(&dup), Err(TextError::Duplicate("X-k3".into())));
    }

    #[test]
    fn numbers_and_binary() {
        assert_eq!(parse_number("8192"), Some(8192));
        assert_eq!(parse_number("0x2000"), Some(8192));
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("1e3"), None);
        assert_eq!(parse_binary("0x0a0B"), Some(vec![0x0a, 0x0b]));
        assert_eq!(parse_binary("0xabc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(parse_binary("0bAQID"), Some(vec![1, 2, 3]));
        assert_eq!(parse_binary("0bAQI="), Some(vec![1, 2]));
        assert_eq!(parse_binary("0bAQ=="), Some(vec![1]));
        assert_eq!(parse_binary("0bAQ"), None);
        assert_eq!(parse_binary("abc"), None);
        assert_eq!(parse_binary("0xzz"), None);
        assert_eq!(format_binary(&[0, 255]), "0x00ff");
    }

    fn neg(name: &str, value: &str, out: &mut Negotiated) -> Answer {
        negotiate_operational(
            name,
            value,
            &TargetOffer::default(),
            NegotiationScope {
                discovery: false,
                leading: true,
            },
            out,
        )
    }

    #[test]
    fn negotiation_rules() {
        let mut n = Negotiated::default();
        let r = |s: &str| Answer::Reply(s.to_string());
        assert_eq!(neg("HeaderDigest", "CRC32C,None", &mut n), r("CRC32C"));
        assert!(n.header_digest);
        assert_eq!(neg("DataDigest", "None", &mut n), r("None"));
        assert_eq!(neg("DataDigest", "MD5", &mut n), r("Reject"));
        assert_eq!(neg("MaxBurstLength", "16776192", &mut n), r("1048576"));
        assert_eq!(n.max_burst_length, 1_048_576);
        assert_eq!(neg("FirstBurstLength", "262144", &mut n), r("65536"));
        assert_eq!(neg("MaxBurstLength", "511", &mut n), r("Reject"));
        assert_eq!(neg("InitialR2T", "No", &mut n), r("Yes")); // OR with our Yes
        assert_eq!(neg("ImmediateData", "Yes", &mut n), r("Yes")); // AND
        assert_eq!(neg("ImmediateData", "Maybe", &mut n), r("Reject"));
        assert_eq!(neg("DefaultTime2Wait", "0", &mut n), r("2")); // max
        assert_eq!(neg("DefaultTime2Retain", "0", &mut n), r("0")); // min
        assert_eq!(neg("ErrorRecoveryLevel", "2", &mut n), r("0"));
        assert_eq!(neg("ErrorRecoveryLevel", "3", &mut n), r("Reject"));
        assert_eq!(
            neg("MaxRecvDataSegmentLength", "4096", &mut n),
            Answer::Silent
        );
        assert_eq!(n.initiator_mrdsl, 4096);
        assert_eq!(neg("MaxRecvDataSegmentLength", "100", &mut n), r("Reject"));
        assert_eq!(neg("OFMarker", "Yes", &mut n), r("No"));
        assert_eq!(neg("IFMarkInt", "2048~8192", &mut n), r("Reject"));
        assert_eq!(neg("X-com.example.foo", "1", &mut n), r("NotUnderstood"));
        assert_eq!(neg("Bogus", "1", &mut n), r("NotUnderstood"));
        assert_eq!(neg("iSCSIProtocolLevel", "2", &mut n), r("1"));
        assert_eq!(
            neg("TaskReporting", "ResponseFence,RFC3720", &mut n),
            r("RFC3720")
        );
    }

    #[test]
    fn discovery_and_non_leading_scopes() {
        let mut n = Negotiated::default();
        let a = negotiate_operational(
            "MaxBurstLength",
            "1024",
            &TargetOffer::default(),
            NegotiationScope {
                discovery: true,
                leading: true,
            },
            &mut n,
        );
        assert_eq!(a, Answer::Reply("Irrelevant".into()));
        let a = negotiate_operational(
            "InitialR2T",
            "Yes",
            &TargetOffer::default(),
            NegotiationScope {
                discovery: false,
                leading: false,
            },
            &mut n,
        );
        assert_eq!(a, Answer::Reply("Irrelevant".into()));
    }

    #[test]
    fn first_burst_clamped() {
        let mut n = Negotiated {
            max_burst_length: 4096,
            first_burst_length: 65536,
            ..Negotiated::default()
        };
        n.finish();
        assert_eq!(n.first_burst_length, 4096);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn encode_parse_roundtrip(pairs in proptest::collection::btree_map("[A-Za-z][A-Za-z0-9.]{0,20}", "[ -<>-~]{0,40}", 0..8)) {
            let v: Vec<(String, String)> = pairs.into_iter().collect();
            let enc = encode(&v);
            prop_assert_eq!(parse(&enc).unwrap(), v);
        }

        #[test]
        fn binary_never_panics(s in "\\PC{0,40}") {
            let _ = parse_binary(&s);
            let _ = parse_number(&s);
        }

        #[test]
        fn negotiation_never_panics(k in "[A-Za-z]{1,20}", v in "\\PC{0,30}") {
            let mut n = Negotiated::default();
            for d in KEYS {
                let _ = negotiate_operational(d.name, &v, &TargetOffer::default(), NegotiationScope { discovery: false, leading: true }, &mut n);
            }
            let _ = negotiate_operational(&k, &v, &TargetOffer::default(), NegotiationScope { discovery: true, leading: false }, &mut n);
        }
    }

    #[test]
    fn result_functions_follow_rfc7143() {
        // RFC 7143 13.13 MaxBurstLength: minimum; 13.15 DefaultTime2Wait: maximum.
        let mut f = 0u32;
        let r = negotiate_number("65536", (512, (1 << 24) - 1), &mut f, 262_144, true);
        assert_eq!((r, f), (Answer::Reply("65536".into()), 65536));
        let r = negotiate_number("1", (0, 3600), &mut f, 2, false);
        assert_eq!((r, f), (Answer::Reply("2".into()), 2));
        let r = negotiate_number("100", (512, 1024), &mut f, 600, true);
        assert_eq!((r, f), (Answer::Reply("Reject".into()), 2));
        // 13.10 InitialR2T: OR; 13.11 ImmediateData: AND.
        let mut b = false;
        assert_eq!(
            negotiate_bool("No", &mut b, true, true),
            Answer::Reply("Yes".into())
        );
        assert!(b);
        assert_eq!(
            negotiate_bool("Yes", &mut b, false, false),
            Answer::Reply("No".into())
        );
        assert!(!b);
        assert_eq!(
            negotiate_bool("Maybe", &mut b, true, true),
            Answer::Reply("Reject".into())
        );
        // 13.1 digests: the first choice we allow.
        assert_eq!(
            negotiate_digest("CRC32C,None", true, false, &mut b),
            Answer::Reply("None".into())
        );
        assert_eq!(
            negotiate_digest("CRC32C", true, false, &mut b),
            Answer::Reply("Reject".into())
        );
        // Keys that set nothing.
        assert_eq!(
            negotiate_fixed("iSCSIProtocolLevel", "2"),
            Answer::Reply("1".into())
        );
        assert_eq!(
            negotiate_fixed("IFMarker", "Yes"),
            Answer::Reply("No".into())
        );
        assert_eq!(
            negotiate_fixed("OFMarkInt", "2048~8192"),
            Answer::Reply("Reject".into())
        );
        assert_eq!(negotiate_fixed("TargetAlias", "x"), Answer::Silent);
        assert_eq!(
            negotiate_fixed("X-foo", "1"),
            Answer::Reply("NotUnderstood".into())
        );
    }
}
