//! Interpretation of attribute values the way SCST's kernel code does.

/// Parses an unsigned integer like the kernel's `kstrtoul(s, 0, ..)`: `0x` prefix for
/// hexadecimal, a leading `0` for octal, decimal otherwise; one trailing newline allowed.
pub fn parse_ulong(s: &str) -> Option<u64> {
    let s = s.strip_suffix('\n').unwrap_or(s);
    let s = s.strip_prefix('+').unwrap_or(s);
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// A boolean attribute: SCST parses an integer and treats any non-zero value as set.
pub fn parse_bool(s: &str) -> Option<bool> {
    parse_ulong(s).map(|v| v != 0)
}

/// Whether an `INITIATOR` entry is a pattern rather than a name (scst README: `*`, `?`
/// and a leading-or-inner `!` are special).
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '!'])
}

/// Whether a pattern matches every initiator name (only `*`s).
pub fn matches_everything(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b'*')
}

fn byte_at(v: &[u8], i: usize) -> u8 {
    v.get(i).copied().unwrap_or(0)
}

fn wildcmp_level(wild: &[u8], s: &[u8], level: u32) -> bool {
    let lower = |b: u8| b.to_ascii_lowercase();
    let (mut w, mut st) = (0usize, 0usize);
    let mut mp: Option<usize> = None;
    let mut cp = 0usize;
    while byte_at(s, st) != 0 && byte_at(wild, w) != b'*' {
        if byte_at(wild, w) == b'!' && level == 0 {
            return !wildcmp_level(wild.get(w + 1..).unwrap_or(&[]), &s[st..], level + 1);
        }
        if lower(byte_at(wild, w)) != lower(byte_at(s, st)) && byte_at(wild, w) != b'?' {
            return false;
        }
        w += 1;
        st += 1;
    }
    while byte_at(s, st) != 0 {
        if byte_at(wild, w) == b'!' && level == 0 {
            return !wildcmp_level(wild.get(w + 1..).unwrap_or(&[]), &s[st..], level + 1);
        }
        if byte_at(wild, w) == b'*' {
            w += 1;
            if byte_at(wild, w) == 0 {
                return true;
            }
            mp = Some(w);
            cp = st + 1;
        } else if lower(byte_at(wild, w)) == lower(byte_at(s, st)) || byte_at(wild, w) == b'?' {
            w += 1;
            st += 1;
        } else {
            match mp {
                Some(m) => {
                    w = m;
                    st = cp;
                    cp += 1;
                }
                None => return false,
            }
        }
    }
    while byte_at(wild, w) == b'*' {
        w += 1;
    }
    byte_at(wild, w) == 0
}

/// SCST's initiator matching (`wildcmp()` in scst_targ.c): DOS-style `*` and `?`,
/// ASCII case-insensitive, and one `!` that inverts the match of the rest.
pub fn wildcmp(pattern: &str, name: &str) -> bool {
    // C strings end at the first NUL.
    let cut = |s: &str| -> Vec<u8> { s.bytes().take_while(|b| *b != 0).collect() };
    wildcmp_level(&cut(pattern), &cut(name), 0)
}

/// The identifier number the vdisk handler derives for a device
/// (`vdisk_gen_dev_id_num()` in scst_vdisk.c): `setup_id << 32 | crc32c(name + NUL)`,
/// where the kernel's `crc32c(0, ...)` is the raw reflected CRC-32C update (Castagnoli
/// polynomial, RFC 3720 B.4) starting from 0 with no final inversion.
pub fn scst_dev_id_num(name: &str, setup_id: u32) -> u64 {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    // crc32c_append(c, d) == !raw(!c, d), so raw(0, d) == !crc32c_append(!0, d).
    let raw = !crc32c::crc32c_append(!0u32, &bytes);
    (u64::from(setup_id) << 32) | u64::from(raw)
}

/// The `usn` (VPD page 0x80 unit serial) SCST generates for a vdisk device: `%llx` of
/// [`scst_dev_id_num`].
pub fn scst_default_usn(name: &str, setup_id: u32) -> String {
    format!("{:x}", scst_dev_id_num(name, setup_id))
}

/// The `t10_dev_id` SCST generates for a vdisk device: `%llx-%s`.
pub fn scst_default_t10_dev_id(name: &str, setup_id: u32) -> String {
    format!("{:x}-{name}", scst_dev_id_num(name, setup_id))
}

/// Splits an iSCSI-SCST account value `"<user> <secret>"`.
pub fn parse_account(v: &str) -> Option<(String, String)> {
    let mut parts = v.split_whitespace();
    let user = parts.next()?;
    let secret = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((user.to_owned(), secret.to_owned()))
}

/// An account value with the secret replaced by `***` (reports never show secrets).
pub fn mask_account(v: &str) -> String {
    match v.split_whitespace().next() {
        Some(user) => format!("{user} ***"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstrtoul_base_zero() {
        assert_eq!(parse_ulong("4096"), Some(4096));
        assert_eq!(parse_ulong("0x1234"), Some(0x1234));
        assert_eq!(parse_ulong("0X1f"), Some(31));
        assert_eq!(parse_ulong("010"), Some(8));
        assert_eq!(parse_ulong("0"), Some(0));
        assert_eq!(parse_ulong("1\n"), Some(1));
        assert_eq!(parse_ulong("08"), None);
        assert_eq!(parse_ulong("1k"), None);
        assert_eq!(parse_ulong(""), None);
        assert_eq!(parse_ulong("0x"), None);
        assert_eq!(parse_ulong("18446744073709551616"), None);
        assert_eq!(parse_bool("2"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn wildcmp_examples_from_the_scst_readme() {
        // "blah.xxx" matches "bl?h.*"; "ah.xxx" matches "!bl?h.*".
        assert!(wildcmp("bl?h.*", "blah.xxx"));
        assert!(wildcmp("!bl?h.*", "ah.xxx"));
        assert!(!wildcmp("!bl?h.*", "blah.xxx"));
        // scst_targ.c comment: "bl!?h.*" does not match "blah.jpg".
        assert!(!wildcmp("bl!?h.*", "blah.jpg"));
        // iscsi-scst README: "10.170.77.2" matches "10.170.7?.*".
        assert!(wildcmp("10.170.7?.*", "10.170.77.2"));
        assert!(wildcmp("21:*:e0:?b:83:*", "21:00:00:e0:8b:83:11:22"));
        assert!(wildcmp("*", "iqn.1994-05.com.redhat:x"));
        assert!(wildcmp(
            "IQN.1994-05.COM.REDHAT:X",
            "iqn.1994-05.com.redhat:x"
        ));
        assert!(!wildcmp("iqn.a", "iqn.ab"));
        assert!(!wildcmp("iqn.ab", "iqn.a"));
        assert!(wildcmp("iqn.*:host?", "iqn.2000-01.x:host7"));
        assert!(!wildcmp("iqn.*:host?", "iqn.2000-01.x:host77"));
        assert!(wildcmp("a*b*c", "aXbYbZc"));
        assert!(!wildcmp("a*b*c", "aXbYbZ"));
    }

    /// Bitwise CRC-32C straight from the definition: reflected polynomial 0x82F63B78
    /// (RFC 3720 B.4), given initial register, no final XOR.
    fn crc32c_bitwise(mut crc: u32, data: &[u8]) -> u32 {
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn crc32c_matches_the_definition() {
        // Standard CRC-32C check value (init and final XOR all ones), RFC 3720 B.4 / the
        // CRC catalogue: "123456789" -> 0xE3069283.
        assert_eq!(!crc32c_bitwise(!0, b"123456789"), 0xE306_9283);
        for name in ["disk01", "d", "a-much-longer-device-name_with.dots"] {
            let mut b = name.as_bytes().to_vec();
            b.push(0);
            assert_eq!(scst_dev_id_num(name, 0), u64::from(crc32c_bitwise(0, &b)));
            assert_eq!(
                scst_dev_id_num(name, 0x1234),
                0x1234_0000_0000 | u64::from(crc32c_bitwise(0, &b))
            );
        }
        // Raw CRC of a single NUL byte from register 0 is 0 (every step XORs zeroes).
        assert_eq!(scst_dev_id_num("", 0), 0);
        assert_eq!(scst_default_usn("", 0x12), "1200000000");
        assert_eq!(scst_default_t10_dev_id("", 0), "0-");
    }

    #[test]
    fn accounts() {
        assert_eq!(
            parse_account("joe 12charsecret"),
            Some(("joe".into(), "12charsecret".into()))
        );
        assert_eq!(parse_account("joe"), None);
        assert_eq!(parse_account("a b c"), None);
        assert_eq!(mask_account("joe 12charsecret"), "joe ***");
    }
}
