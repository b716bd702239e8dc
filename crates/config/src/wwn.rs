//! World-wide names: iSCSI names (RFC 3720 3.2.6, RFC 3722), NAA names (RFC 3980),
//! T10 unit serials, and the formats targetcli uses when it generates them.
//!
//! The generators here are pure: they take the random bytes as input so callers (and
//! tests) decide where randomness comes from.

use std::fmt;

/// Maximum length of an iSCSI name in bytes (RFC 3720 3.2.6.1).
pub const ISCSI_NAME_MAX: usize = 223;

/// Maximum length of a unit serial the kernel accepts (`INQUIRY_VPD_SERIAL_LEN` - 1).
pub const UNIT_SERIAL_MAX: usize = 253;

/// Which naming scheme a name uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WwnKind {
    /// `iqn.yyyy-mm.reversed.domain[:unique]` (RFC 3720 3.2.6.3.1).
    Iqn,
    /// `eui.` + 16 hex digits (RFC 3720 3.2.6.3.2).
    Eui,
    /// `naa.` + 16 or 32 hex digits (RFC 3980).
    Naa,
}

impl fmt::Display for WwnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WwnKind::Iqn => "iqn",
            WwnKind::Eui => "eui",
            WwnKind::Naa => "naa",
        })
    }
}

/// Why a name is invalid: the rule broken and the offending detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WwnError {
    /// The rule, citing its source.
    pub rule: &'static str,
    /// What exactly is wrong.
    pub detail: String,
}

impl fmt::Display for WwnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.rule)
    }
}

impl std::error::Error for WwnError {}

fn err(rule: &'static str, detail: impl Into<String>) -> WwnError {
    WwnError {
        rule,
        detail: detail.into(),
    }
}

const RULE_IQN: &str =
    "iqn names are iqn.<yyyy-mm>.<reversed domain>[:<unique>], RFC 3720 3.2.6.3.1";
const RULE_CHARS: &str =
    "iSCSI names use only lowercase a-z, 0-9, '-', '.', ':' (RFC 3722 6 maps to lowercase)";
const RULE_LEN: &str = "iSCSI names are at most 223 bytes, RFC 3720 3.2.6.1";
const RULE_EUI: &str = "eui names are eui. followed by 16 hex digits, RFC 3720 3.2.6.3.2";
const RULE_NAA: &str = "naa names are naa. followed by 16 or 32 hex digits, RFC 3980";
const RULE_TYPE: &str = "iSCSI names start with iqn., eui. or naa., RFC 3720 3.2.6.3";
const RULE_SERIAL: &str =
    "unit serials are 1-253 printable ASCII characters without spaces (SPC-4 7.8.16, kernel INQUIRY_VPD_SERIAL_LEN)";

/// Validates an iSCSI name of any of the three types and returns its type.
pub fn validate_iscsi_name(name: &str) -> Result<WwnKind, WwnError> {
    if name.len() > ISCSI_NAME_MAX {
        return Err(err(RULE_LEN, format!("name is {} bytes long", name.len())));
    }
    if let Some(rest) = name.strip_prefix("iqn.") {
        validate_iqn_rest(name, rest)?;
        Ok(WwnKind::Iqn)
    } else if name.starts_with("eui.") {
        validate_eui(name)?;
        Ok(WwnKind::Eui)
    } else if name.starts_with("naa.") {
        validate_naa(name)?;
        Ok(WwnKind::Naa)
    } else {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("iqn.") || lower.starts_with("eui.") || lower.starts_with("naa.") {
            return Err(err(
                RULE_CHARS,
                format!("type prefix of '{name}' must be lowercase"),
            ));
        }
        Err(err(
            RULE_TYPE,
            format!("'{name}' has no iqn./eui./naa. prefix"),
        ))
    }
}

fn validate_iqn_rest(name: &str, rest: &str) -> Result<(), WwnError> {
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            return Err(err(
                RULE_CHARS,
                format!("'{name}' contains uppercase '{c}'; write it in lowercase"),
            ));
        }
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':')) {
            return Err(err(
                RULE_CHARS,
                format!("'{name}' contains the character {c:?}"),
            ));
        }
    }
    let bytes = rest.as_bytes();
    let date_ok = bytes.len() >= 8
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[7] == b'.';
    if !date_ok {
        return Err(err(
            RULE_IQN,
            format!("'{name}' lacks the yyyy-mm. date after 'iqn.'"),
        ));
    }
    let month = (bytes[5] - b'0') * 10 + (bytes[6] - b'0');
    if !(1..=12).contains(&month) {
        return Err(err(RULE_IQN, format!("'{name}' has month {month:02}")));
    }
    let after_date = &rest[8..];
    let (authority, unique) = match after_date.split_once(':') {
        Some((a, u)) => (a, Some(u)),
        None => (after_date, None),
    };
    if authority.is_empty() {
        return Err(err(
            RULE_IQN,
            format!("'{name}' has no naming authority after the date"),
        ));
    }
    for label in authority.split('.') {
        if label.is_empty() {
            return Err(err(
                RULE_IQN,
                format!("naming authority '{authority}' has an empty label"),
            ));
        }
    }
    if let Some(u) = unique {
        if u.is_empty() {
            return Err(err(
                RULE_IQN,
                format!("'{name}' ends with ':' and no unique part"),
            ));
        }
    }
    Ok(())
}

fn all_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Validates an `eui.` name.
pub fn validate_eui(name: &str) -> Result<(), WwnError> {
    let hex = name
        .strip_prefix("eui.")
        .ok_or_else(|| err(RULE_EUI, format!("'{name}' does not start with eui.")))?;
    if hex.len() != 16 || !all_hex(hex) {
        return Err(err(
            RULE_EUI,
            format!("'{name}' does not have 16 hex digits"),
        ));
    }
    Ok(())
}

/// Validates a `naa.` name (16 or 32 hex digits).
pub fn validate_naa(name: &str) -> Result<(), WwnError> {
    let hex = name
        .strip_prefix("naa.")
        .ok_or_else(|| err(RULE_NAA, format!("'{name}' does not start with naa.")))?;
    if !(hex.len() == 16 || hex.len() == 32) || !all_hex(hex) {
        return Err(err(
            RULE_NAA,
            format!("'{name}' does not have 16 or 32 hex digits"),
        ));
    }
    Ok(())
}

/// Validates a T10 unit serial (`wwn/vpd_unit_serial`).
pub fn validate_unit_serial(serial: &str) -> Result<(), WwnError> {
    if serial.is_empty() || serial.len() > UNIT_SERIAL_MAX {
        return Err(err(
            RULE_SERIAL,
            format!("unit serial is {} characters long", serial.len()),
        ));
    }
    if let Some(c) = serial.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(err(
            RULE_SERIAL,
            format!("unit serial contains the character {c:?}"),
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Cleans a host name the way rtslib does for generated IQNs: first DNS label,
/// underscores removed, lowercase; characters not allowed in IQNs are dropped.
pub fn iqn_host_label(hostname: &str) -> String {
    let first = hostname.split('.').next().unwrap_or("");
    let cleaned: String = first
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .collect();
    if cleaned.is_empty() {
        "localhost".to_owned()
    } else {
        cleaned
    }
}

/// targetcli's generated target IQN:
/// `iqn.2003-01.org.linux-iscsi.<host>.<arch>:sn.<12 hex>`.
pub fn format_generated_iqn(hostname: &str, machine: &str, random: [u8; 6]) -> String {
    let arch: String = machine
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .collect();
    format!(
        "iqn.2003-01.org.linux-iscsi.{}.{}:sn.{}",
        iqn_host_label(hostname),
        arch,
        hex(&random)
    )
}

/// rtslib's generated NAA WWN for loopback/vhost: `naa.5001405` + 9 hex digits
/// (NAA 5 = IEEE registered, OUI 00-14-05).
pub fn format_generated_naa(random: [u8; 5]) -> String {
    let h = hex(&random);
    format!("naa.5001405{}", &h[1..])
}

/// A random UUID (version 4) string, which is what rtslib writes as unit serial.
/// The kernel derives the VPD page 0x83 NAA designator (`6001405` + serial digits)
/// from it (SPC-4 7.8.6).
pub fn format_unit_serial(mut random: [u8; 16]) -> String {
    random[6] = (random[6] & 0x0f) | 0x40;
    random[8] = (random[8] & 0x3f) | 0x80;
    let h = hex(&random);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A 10-hex-digit LUN / mapped-LUN link name like rtslib's `str(uuid4())[-10:]`.
pub fn format_link_alias(random: [u8; 5]) -> String {
    hex(&random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_iscsi_names() {
        for n in [
            "iqn.2003-01.org.linux-iscsi.host.x8664:sn.0123456789ab",
            "iqn.1993-08.org.debian:01:ef2e26bf3a9e",
            "iqn.2017-07.com.test:target-10-15-33",
            "iqn.2001-04.com.example",
        ] {
            assert_eq!(validate_iscsi_name(n), Ok(WwnKind::Iqn), "{n}");
        }
        assert_eq!(
            validate_iscsi_name("eui.02004567A425678D"),
            Ok(WwnKind::Eui)
        );
        assert_eq!(
            validate_iscsi_name("naa.52004567BA64678D"),
            Ok(WwnKind::Naa)
        );
        assert_eq!(
            validate_iscsi_name("naa.62004567BA64678D0123456789ABCDEF"),
            Ok(WwnKind::Naa)
        );
    }

    #[test]
    fn invalid_iscsi_names_name_the_rule() {
        let cases = [
            ("IQN.2001-04.com.example", RULE_CHARS),
            ("iqn.2001-04.com.Example:x", RULE_CHARS),
            ("iqn.2001-04.com.exa_mple:x", RULE_CHARS),
            ("iqn.2001-04.com.exa mple:x", RULE_CHARS),
            ("iqn.2001-13.com.example", RULE_IQN),
            ("iqn.2001-4.com.example", RULE_IQN),
            ("iqn.2001-04.", RULE_IQN),
            ("iqn.2001-04.com..example", RULE_IQN),
            ("iqn.2001-04.com.example:", RULE_IQN),
            ("eui.02004567A425678", RULE_EUI),
            ("eui.02004567A425678G", RULE_EUI),
            ("naa.1234", RULE_NAA),
            ("target1", RULE_TYPE),
        ];
        for (name, rule) in cases {
            let e = validate_iscsi_name(name).unwrap_err();
            assert_eq!(e.rule, rule, "{name}: {e}");
        }
        let long = format!("iqn.2001-04.com.example:{}", "a".repeat(200));
        assert_eq!(validate_iscsi_name(&long).unwrap_err().rule, RULE_LEN);
    }

    #[test]
    fn unit_serials() {
        assert!(validate_unit_serial("0b5a3b8e-5b1c-4c6e-9d0a-1f2e3d4c5b6a").is_ok());
        assert!(validate_unit_serial("").is_err());
        assert!(validate_unit_serial("has space").is_err());
        assert!(validate_unit_serial(&"x".repeat(254)).is_err());
    }

    #[test]
    fn generated_formats() {
        let iqn = format_generated_iqn(
            "My_Host.example.org",
            "x86_64",
            [0xde, 0xad, 0xbe, 0xef, 0, 1],
        );
        assert_eq!(
            iqn,
            "iqn.2003-01.org.linux-iscsi.myhost.x8664:sn.deadbeef0001"
        );
        assert_eq!(validate_iscsi_name(&iqn), Ok(WwnKind::Iqn));
        let naa = format_generated_naa([0x12, 0x34, 0x56, 0x78, 0x9a]);
        assert_eq!(naa, "naa.500140523456789a");
        assert!(validate_naa(&naa).is_ok());
        let serial = format_unit_serial([0xff; 16]);
        assert_eq!(serial, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(validate_unit_serial(&serial).is_ok());
        assert_eq!(format_link_alias([1, 2, 3, 4, 5]), "0102030405");
    }
}
