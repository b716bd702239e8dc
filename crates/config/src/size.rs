//! Sizes as people and the kernel write them: the one parser of rustio.
//!
//! Accepted forms (surrounding whitespace ignored):
//!
//! * decimal digits with an optional unit, as targetcli's `human_to_bytes` reads them
//!   (`ui_backstore.py`): `k`, `m`, `g` or `t` in either case for powers of 1024,
//!   optionally followed by `i` and/or `b` (`4096`, `1k`, `512M`, `10MB`, `2GiB`);
//! * `0x` followed by hex digits and no unit, the kernel's `%#lx` in sysfs and configfs
//!   (`maps/map0/size`); the unit is not allowed there because `b` is a hex digit.
//!
//! The result is checked: a value that does not fit in 64 bits is an error, never a
//! wrapped number.

/// Why a size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The text is not a number with an optional unit.
    #[error(
        "cannot read size {0:?}: expected a number with an optional unit k, M, G or T \
         (powers of 1024), e.g. 1G"
    )]
    Syntax(String),
    /// The value does not fit in 64 bits.
    #[error("size {0:?} is larger than 2^64 - 1 bytes")]
    Overflow(String),
}

/// Multiplier of each unit letter (lower case): powers of 1024, as targetcli uses.
const UNITS: [(char, u64); 4] = [
    ('k', 1 << 10),
    ('m', 1 << 20),
    ('g', 1 << 30),
    ('t', 1 << 40),
];

/// Parses a size (see the module documentation for the accepted forms).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let syntax = || SizeError::Syntax(text.to_owned());
    let overflow = || SizeError::Overflow(text.to_owned());
    let t = text.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(syntax());
        }
        // Only digits remain, so the only failure left is a too large value.
        return u64::from_str_radix(hex, 16).map_err(|_| overflow());
    }
    let lower = t.to_ascii_lowercase();
    let mut s = lower.as_str();
    s = s.strip_suffix('b').unwrap_or(s);
    s = s.strip_suffix('i').unwrap_or(s);
    let (digits, mult) = match UNITS.iter().find(|(u, _)| s.ends_with(*u)) {
        Some(&(u, m)) => (s.strip_suffix(u).unwrap_or(s), m),
        None => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let n: u64 = digits.parse().map_err(|_| overflow())?;
    n.checked_mul(mult).ok_or_else(overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn targetcli_forms() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("10MB"), Ok(10 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size(" 64M "), Ok(64 << 20));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
    }

    #[test]
    fn kernel_hex_forms() {
        // What sysfs prints for a TCMU map (uio maps/map0/size, "%#lx").
        assert_eq!(parse_size("0x40800000\n"), Ok(0x4080_0000));
        assert_eq!(parse_size("0X1b"), Ok(0x1b));
        assert_eq!(parse_size("0xffffffffffffffff"), Ok(u64::MAX));
    }

    #[test]
    fn refusals() {
        for bad in [
            "", "G", "1.5G", "-1", "+1", "1X", "0x", "0xzz", "0x1G", "k1",
        ] {
            assert_eq!(parse_size(bad), Err(SizeError::Syntax(bad.into())), "{bad}");
        }
        // 2^64 and 2^24 TiB = 2^64 do not fit.
        for big in ["18446744073709551616", "16777216T", "0x10000000000000000"] {
            assert_eq!(
                parse_size(big),
                Err(SizeError::Overflow(big.into())),
                "{big}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_size(&s);
        }

        #[test]
        fn round_trips_n_times_unit(n in 0u64..(1 << 24), u in 0usize..5, suffix in 0usize..3) {
            let (letter, mult) = match u {
                0 => ("", 1u64),
                i => (["k", "M", "G", "T"][i - 1], UNITS[i - 1].1),
            };
            let tail = if letter.is_empty() { "" } else { ["", "B", "iB"][suffix] };
            prop_assert_eq!(parse_size(&format!("{n}{letter}{tail}")), Ok(n * mult));
            prop_assert_eq!(parse_size(&format!("{:#x}", n * mult)), Ok(n * mult));
        }

        #[test]
        fn overflow_is_an_error(n in (1u64 << 24)..u64::MAX) {
            prop_assert_eq!(
                parse_size(&format!("{n}T")),
                Err(SizeError::Overflow(format!("{n}T")))
            );
        }
    }
}
