//! Serial number arithmetic for CmdSN, StatSN, DataSN and R2TSN (RFC 7143 4.2.2.1, which
//! requires RFC 1982 comparison with SERIAL_BITS = 32).

/// `a < b` in 32-bit serial number arithmetic (RFC 1982 3.2): `b` is ahead of `a` by
/// less than 2^31.
pub fn lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < (1 << 31)
}

/// `a <= b` in 32-bit serial number arithmetic.
pub fn le(a: u32, b: u32) -> bool {
    a == b || lt(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1982_comparisons() {
        assert!(lt(1, 2));
        // Wrap-around: 0xffff_fff0 + 19 = 3 (mod 2^32), so 3 is "after".
        assert!(lt(0xffff_fff0, 3));
        assert!(!lt(3, 0xffff_fff0));
        assert!(le(7, 7));
        assert!(!lt(7, 7));
        // Distance exactly 2^31 is undefined in RFC 1982 3.2; we answer "not less".
        assert!(!lt(0, 1 << 31));
        assert!(lt(0, (1 << 31) - 1));
    }
}
