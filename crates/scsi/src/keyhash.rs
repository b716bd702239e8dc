//! A hasher for map keys that are nobody's choice but ours: sequence numbers the target
//! assigns, and [`Nexus`](crate::Nexus)es, which hash to one value already computed with
//! a per-process random key.
//!
//! std's default (SipHash-1-3 with a random key) is what keys a peer picks need, and it
//! is not free: under the TCMU runner's 4 KiB READs the command-keyed maps and the unit
//! attention table cost ≈ 1 300 instructions per command, a fifth of the daemon's own
//! (callgrind, bench/README.md). Here `write_u64` is a rotate, an xor and a multiply by an
//! odd constant (⌊2⁶⁴ / φ⌋). A multiply only carries upwards: the low bits hashbrown
//! indexes by depend only on the key's low bits, so keys must differ there — consecutive
//! numbers (a bijection: `n` keys fill `n` buckets of a power-of-two table) or values
//! already random (a nexus's keyed hash). Keys that are multiples of a large power of two
//! (aligned offsets, ids shifted left) would share one bucket: not for those.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// ⌊2⁶⁴ / φ⌋, odd (the multiplier of Knuth's multiplicative hashing, TAOCP 6.4).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// See the module documentation. Keys a peer chooses (names, tags) and keys that do not
/// vary in their low bits belong in a std `HashMap`, not in a [`KeyMap`].
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A `HashMap` hashed by [`KeyHasher`].
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    fn hash(n: u64) -> u64 {
        BuildHasherDefault::<KeyHasher>::default().hash_one(n)
    }

    #[test]
    fn consecutive_keys_fill_every_bucket_of_a_power_of_two_table() {
        // A multiply by an odd constant is a bijection modulo 2^b: 4 096 consecutive
        // sequence numbers land in 4 096 distinct buckets of a 4 096-bucket table.
        for start in [0u64, 1 << 20, u64::MAX - 5000] {
            let buckets: HashSet<u64> = (start..start + 4096).map(|n| hash(n) & 4095).collect();
            assert_eq!(buckets.len(), 4096);
        }
    }

    #[test]
    fn consecutive_keys_spread_over_the_top_seven_bits() {
        // hashbrown tags entries with the top 7 bits: 128 consecutive keys use most tags.
        let tags: HashSet<u64> = (0..128u64).map(|n| hash(n) >> 57).collect();
        assert!(tags.len() > 64, "{} tags", tags.len());
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut m: KeyMap<u64, u64> = KeyMap::default();
        for n in 0..10_000u64 {
            m.insert(n * 3, n);
        }
        assert!((0..10_000u64).all(|n| m.get(&(n * 3)) == Some(&n)));
        assert_eq!(m.get(&1), None);
    }
}
