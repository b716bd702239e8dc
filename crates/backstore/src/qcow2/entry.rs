//! Table entries: L1 and L2 entries (qcow2.txt "Cluster mapping", "Extended L2 Entries")
//! and refcount table / refcount block entries ("Host cluster management").

use std::ops::Range;

use super::header::{bad, FormatError};

/// Bits 9-55 of an L1 entry: offset of the L2 table.
pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 0-8 and 56-62 of an L1 entry, which must be zero.
pub const L1E_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Bits 9-55 of a standard L2 entry: host cluster offset.
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 1-8 and 56-61 of a standard cluster descriptor, which must be zero.
pub const L2E_STD_RESERVED: u64 = 0x3f00_0000_0000_01fe;
/// Bit 63: refcount is exactly one (L1 and L2 entries).
pub const OFLAG_COPIED: u64 = 1 << 63;
/// Bit 62 of an L2 entry: compressed cluster.
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard L2 entry (v3, no extended L2): the cluster reads as zeros.
pub const OFLAG_ZERO: u64 = 1;
/// Bits 0-8 of a refcount table entry, which must be zero.
pub const REFT_RESERVED: u64 = 0x1ff;
/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u64 = 32;
/// Host offsets must stay below 64 PiB (56 bits).
pub const MAX_HOST_OFFSET: u64 = 1 << 56;

/// A decoded L1 entry that points to an L2 table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Entry {
    /// Host offset of the L2 table.
    pub l2_offset: u64,
    /// The L2 table's refcount is exactly one.
    pub copied: bool,
}

impl L1Entry {
    /// Decodes `raw`; `None` if no L2 table is allocated.
    pub fn decode(raw: u64, cluster_size: u64) -> Result<Option<Self>, FormatError> {
        if raw & L1E_RESERVED != 0 {
            return bad(format!("L1 entry {raw:#018x} has reserved bits set"));
        }
        let off = raw & L1E_OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if off % cluster_size != 0 {
            return bad(format!("L2 table offset {off:#x} is not cluster aligned"));
        }
        Ok(Some(L1Entry {
            l2_offset: off,
            copied: raw & OFLAG_COPIED != 0,
        }))
    }

    /// Encodes the entry.
    pub fn encode(self) -> u64 {
        self.l2_offset | if self.copied { OFLAG_COPIED } else { 0 }
    }
}

/// A decoded standard (64-bit) L2 entry, or the first half of an extended one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L2Entry {
    /// Not allocated: read from the backing file, or zeros.
    Unallocated,
    /// Reads as zeros (v3 zero flag), possibly with a preallocated host cluster.
    Zero {
        /// Preallocated host cluster, if any.
        host: Option<u64>,
        /// The host cluster's refcount is exactly one.
        copied: bool,
    },
    /// Data in a host cluster.
    Normal {
        /// Host cluster offset.
        host: u64,
        /// The host cluster's refcount is exactly one (writable in place).
        copied: bool,
    },
    /// A compressed cluster.
    Compressed {
        /// Host byte offset of the compressed data (not aligned).
        offset: u64,
        /// 512-byte sectors holding the data, counting the one containing `offset`.
        sectors: u64,
    },
}

/// How L2 entries are laid out in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Format {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// The zero flag (bit 0) is defined: version 3 without extended L2 entries.
    pub zero_flag: bool,
    /// Entries are 128 bits with a subcluster bitmap.
    pub extended: bool,
}

impl L2Format {
    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Bit position where the sector count of a compressed descriptor starts:
    /// `x = 62 - (cluster_bits - 8)`.
    fn csize_shift(&self) -> u32 {
        62 - (self.cluster_bits - 8)
    }
}

impl L2Entry {
    /// Decodes a standard L2 entry (qcow2.txt "L2 table entry").
    pub fn decode(raw: u64, f: L2Format) -> Result<Self, FormatError> {
        if raw & OFLAG_COMPRESSED != 0 {
            if raw & OFLAG_COPIED != 0 {
                return bad(format!(
                    "compressed L2 entry {raw:#018x} has the copied flag"
                ));
            }
            let x = f.csize_shift();
            let offset = raw & ((1u64 << x) - 1);
            let sectors = ((raw >> x) & ((1u64 << (f.cluster_bits - 8)) - 1)) + 1;
            if offset >= MAX_HOST_OFFSET {
                return bad(format!(
                    "compressed cluster offset {offset:#x} is beyond 64 PiB"
                ));
            }
            return Ok(L2Entry::Compressed { offset, sectors });
        }
        let copied = raw & OFLAG_COPIED != 0;
        let mut reserved = L2E_STD_RESERVED;
        if !f.zero_flag {
            reserved |= OFLAG_ZERO;
        }
        if raw & reserved != 0 {
            return bad(format!("L2 entry {raw:#018x} has reserved bits set"));
        }
        let host = raw & L2E_OFFSET_MASK;
        if host % f.cluster_size() != 0 {
            return bad(format!(
                "data cluster offset {host:#x} is not cluster aligned"
            ));
        }
        if raw & OFLAG_ZERO != 0 {
            return Ok(L2Entry::Zero {
                host: (host != 0).then_some(host),
                copied,
            });
        }
        if host == 0 {
            // Offset 0 with bit 63 is only meaningful with an external data file, which
            // we refuse; treat it as the unallocated entry qemu would also refuse to use.
            if copied {
                return bad("L2 entry has the copied flag but no host offset");
            }
            return Ok(L2Entry::Unallocated);
        }
        Ok(L2Entry::Normal { host, copied })
    }

    /// Encodes the entry (never produces the zero flag unless asked by a `Zero` entry).
    pub fn encode(self, f: L2Format) -> u64 {
        match self {
            L2Entry::Unallocated => 0,
            L2Entry::Zero { host, copied } => {
                host.unwrap_or(0) | OFLAG_ZERO | if copied { OFLAG_COPIED } else { 0 }
            }
            L2Entry::Normal { host, copied } => host | if copied { OFLAG_COPIED } else { 0 },
            L2Entry::Compressed { offset, sectors } => {
                OFLAG_COMPRESSED | offset | ((sectors - 1) << f.csize_shift())
            }
        }
    }

    /// For a compressed entry: the host bytes holding the data, `offset` up to the end of
    /// its last sector (qemu reads exactly this much).
    pub fn compressed_span(offset: u64, sectors: u64) -> (u64, u64) {
        (offset, sectors * 512 - (offset & 511))
    }

    /// Host byte ranges this entry holds references to (refcount +1 per cluster touched).
    pub fn host_ranges(self) -> Option<Range<u64>> {
        match self {
            L2Entry::Unallocated | L2Entry::Zero { host: None, .. } => None,
            L2Entry::Zero { host: Some(h), .. } | L2Entry::Normal { host: h, .. } => Some(h..h + 1),
            L2Entry::Compressed { offset, sectors } => {
                let start = offset & !511;
                Some(start..start + sectors * 512)
            }
        }
    }
}

/// The subcluster allocation bitmap of an extended L2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubclusterBitmap {
    /// Bit x: subcluster x is allocated.
    pub alloc: u32,
    /// Bit x: subcluster x reads as zeros.
    pub zero: u32,
}

impl SubclusterBitmap {
    /// Decodes and checks the bitmap for `entry` (qcow2.txt "Subcluster Allocation Bitmap").
    pub fn decode(raw: u64, entry: L2Entry) -> Result<Self, FormatError> {
        let b = SubclusterBitmap {
            alloc: raw as u32,
            zero: (raw >> 32) as u32,
        };
        match entry {
            L2Entry::Compressed { .. } if raw != 0 => {
                bad("compressed cluster with a non-zero subcluster bitmap")
            }
            _ if b.alloc & b.zero != 0 => bad(format!(
                "subclusters {:#x} are both allocated and zero",
                b.alloc & b.zero
            )),
            L2Entry::Unallocated if b.alloc != 0 => {
                bad("subclusters allocated in a cluster without a host offset")
            }
            _ => Ok(b),
        }
    }
}

/// Largest refcount representable with `order`.
pub fn refcount_max(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

/// Number of refcount entries in a block of `cluster_size` bytes.
pub fn refcount_entries(cluster_size: u64, order: u32) -> u64 {
    (cluster_size * 8) >> order
}

/// Reads refcount `idx` from a refcount block (qcow2.txt "Refcount block entry": sub-byte
/// widths count bit 0 as the least significant bit; wider ones are big endian).
pub fn refcount_get(block: &[u8], order: u32, idx: u64) -> u64 {
    let idx = idx as usize;
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let bit = idx * bits;
            let mask = (1u8 << bits) - 1;
            u64::from((block[bit / 8] >> (bit % 8)) & mask)
        }
        3 => u64::from(block[idx]),
        4 => u64::from(u16::from_be_bytes([block[idx * 2], block[idx * 2 + 1]])),
        5 => {
            let mut b = [0u8; 4];
            b.copy_from_slice(&block[idx * 4..idx * 4 + 4]);
            u64::from(u32::from_be_bytes(b))
        }
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&block[idx * 8..idx * 8 + 8]);
            u64::from_be_bytes(b)
        }
    }
}

/// Index of the last entry with a non-zero refcount in a refcount block, found with one
/// byte scan (the work is bounded by the block's bytes, not by its entry count).
///
/// Entry `i` starts at bit `i << order` of the block. Sub-byte entries count bit 0 of a
/// byte as its least significant bit, so the highest set bit of the last non-zero byte
/// lies in the last non-zero entry; wider entries span whole bytes, and any non-zero byte
/// makes its entry non-zero.
pub fn refcount_last_used(block: &[u8], order: u32) -> Option<u64> {
    let pos = block.iter().rposition(|&b| b != 0)?;
    let high_bit = 7 - block[pos].leading_zeros();
    let bit = (pos as u64)
        .checked_mul(8)?
        .checked_add(u64::from(high_bit))?;
    Some(bit >> order)
}

/// Writes refcount `idx` (`v` must not exceed [`refcount_max`]) and returns the byte range
/// of the block that changed, so callers can write just those bytes.
pub fn refcount_set(block: &mut [u8], order: u32, idx: u64, v: u64) -> Range<usize> {
    let idx = idx as usize;
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let bit = idx * bits;
            let mask = ((1u8 << bits) - 1) << (bit % 8);
            let byte = &mut block[bit / 8];
            *byte = (*byte & !mask) | (((v as u8) << (bit % 8)) & mask);
            bit / 8..bit / 8 + 1
        }
        3 => {
            block[idx] = v as u8;
            idx..idx + 1
        }
        4 => {
            block[idx * 2..idx * 2 + 2].copy_from_slice(&(v as u16).to_be_bytes());
            idx * 2..idx * 2 + 2
        }
        5 => {
            block[idx * 4..idx * 4 + 4].copy_from_slice(&(v as u32).to_be_bytes());
            idx * 4..idx * 4 + 4
        }
        _ => {
            block[idx * 8..idx * 8 + 8].copy_from_slice(&v.to_be_bytes());
            idx * 8..idx * 8 + 8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V3_64K: L2Format = L2Format {
        cluster_bits: 16,
        zero_flag: true,
        extended: false,
    };
    const V2_64K: L2Format = L2Format {
        cluster_bits: 16,
        zero_flag: false,
        extended: false,
    };

    #[test]
    fn l1_entries() {
        assert_eq!(L1Entry::decode(0, 65536).unwrap(), None);
        assert_eq!(
            L1Entry::decode(0x8000_0000_0004_0000, 65536).unwrap(),
            Some(L1Entry {
                l2_offset: 0x40000,
                copied: true
            })
        );
        assert!(
            L1Entry::decode(0x8000_0000_0004_0001, 65536).is_err(),
            "reserved bit 0"
        );
        assert!(
            L1Entry::decode(0x0100_0000_0004_0000 | 1 << 62, 65536).is_err(),
            "reserved bit 62"
        );
        assert!(
            L1Entry::decode(0x0000_0000_0004_0200, 65536).is_err(),
            "unaligned"
        );
        assert_eq!(
            L1Entry {
                l2_offset: 0x40000,
                copied: true
            }
            .encode(),
            0x8000_0000_0004_0000
        );
    }

    #[test]
    fn standard_l2_entries() {
        assert_eq!(L2Entry::decode(0, V3_64K).unwrap(), L2Entry::Unallocated);
        assert_eq!(
            L2Entry::decode(0x8000_0000_0005_0000, V3_64K).unwrap(),
            L2Entry::Normal {
                host: 0x50000,
                copied: true
            }
        );
        assert_eq!(
            L2Entry::decode(0x0000_0000_0005_0000, V3_64K).unwrap(),
            L2Entry::Normal {
                host: 0x50000,
                copied: false
            }
        );
        assert_eq!(
            L2Entry::decode(1, V3_64K).unwrap(),
            L2Entry::Zero {
                host: None,
                copied: false
            }
        );
        assert_eq!(
            L2Entry::decode(0x8000_0000_0005_0001, V3_64K).unwrap(),
            L2Entry::Zero {
                host: Some(0x50000),
                copied: true
            }
        );
        // The zero flag is reserved in version 2.
        assert!(L2Entry::decode(1, V2_64K).is_err());
        assert!(
            L2Entry::decode(0x0000_0000_0005_0002, V3_64K).is_err(),
            "reserved bit 1"
        );
        assert!(
            L2Entry::decode(0x0100_0000_0005_0000, V3_64K).is_err(),
            "reserved bit 56"
        );
        assert!(
            L2Entry::decode(0x0000_0000_0005_8000, V3_64K).is_err(),
            "unaligned"
        );
        assert!(
            L2Entry::decode(OFLAG_COPIED, V3_64K).is_err(),
            "copied without offset"
        );
        for e in [
            L2Entry::Unallocated,
            L2Entry::Normal {
                host: 0x50000,
                copied: true,
            },
            L2Entry::Zero {
                host: Some(0x70000),
                copied: true,
            },
            L2Entry::Zero {
                host: None,
                copied: false,
            },
        ] {
            assert_eq!(L2Entry::decode(e.encode(V3_64K), V3_64K).unwrap(), e);
        }
    }

    #[test]
    fn compressed_descriptor_from_spec() {
        // 64 KiB clusters: x = 62 - (16 - 8) = 54; offset in bits 0-53, sector count
        // minus one in bits 54-61.
        let raw = OFLAG_COMPRESSED | (3u64 << 54) | 0x12_3456;
        assert_eq!(
            L2Entry::decode(raw, V3_64K).unwrap(),
            L2Entry::Compressed {
                offset: 0x12_3456,
                sectors: 4
            }
        );
        assert_eq!(
            L2Entry::Compressed {
                offset: 0x12_3456,
                sectors: 4
            }
            .encode(V3_64K),
            raw
        );
        // Data spans from the offset to the end of the fourth sector: 4*512 - 0x56.
        assert_eq!(
            L2Entry::compressed_span(0x12_3456, 4),
            (0x12_3456, 2048 - 0x56)
        );
        assert_eq!(
            L2Entry::Compressed {
                offset: 0x12_3456,
                sectors: 4
            }
            .host_ranges(),
            Some(0x12_3400..0x12_3c00)
        );
        // 2 MiB clusters: x = 49.
        let f2m = L2Format {
            cluster_bits: 21,
            zero_flag: true,
            extended: false,
        };
        let raw = OFLAG_COMPRESSED | (0x1fffu64 << 49) | 0x1_0000_0200;
        assert_eq!(
            L2Entry::decode(raw, f2m).unwrap(),
            L2Entry::Compressed {
                offset: 0x1_0000_0200,
                sectors: 0x2000
            }
        );
        // 512-byte clusters: x = 61, so offsets could exceed 56 bits; they must not.
        let f512 = L2Format {
            cluster_bits: 9,
            zero_flag: true,
            extended: false,
        };
        assert!(L2Entry::decode(OFLAG_COMPRESSED | (1 << 57), f512).is_err());
        assert!(L2Entry::decode(OFLAG_COMPRESSED | OFLAG_COPIED | 0x200, V3_64K).is_err());
    }

    #[test]
    fn subcluster_bitmaps() {
        let normal = L2Entry::Normal {
            host: 0x50000,
            copied: true,
        };
        let b = SubclusterBitmap::decode(0x0000_00f0_0000_000f, normal).unwrap();
        assert_eq!(
            b,
            SubclusterBitmap {
                alloc: 0xf,
                zero: 0xf0
            }
        );
        assert!(SubclusterBitmap::decode(0x0000_0001_0000_0001, normal).is_err());
        assert!(SubclusterBitmap::decode(1, L2Entry::Unallocated).is_err());
        assert!(SubclusterBitmap::decode(
            1,
            L2Entry::Compressed {
                offset: 512,
                sectors: 1
            }
        )
        .is_err());
        assert_eq!(
            SubclusterBitmap::decode(0xffff_ffff_0000_0000, L2Entry::Unallocated)
                .unwrap()
                .zero,
            u32::MAX
        );
    }

    #[test]
    fn refcount_widths_from_spec() {
        // 1-bit: bit 0 of byte 0 is entry 0.
        let mut b = vec![0u8; 8];
        assert_eq!(refcount_set(&mut b, 0, 9, 1), 1..2);
        assert_eq!(b[1], 0b0000_0010);
        assert_eq!(refcount_get(&b, 0, 9), 1);
        assert_eq!(refcount_get(&b, 0, 8), 0);
        // 2-bit: entry 1 in bits 2-3.
        let mut b = vec![0u8; 8];
        refcount_set(&mut b, 1, 1, 3);
        assert_eq!(b[0], 0b0000_1100);
        // 4-bit: entry 1 in the high nibble.
        let mut b = vec![0u8; 8];
        refcount_set(&mut b, 2, 1, 0xa);
        refcount_set(&mut b, 2, 0, 0x5);
        assert_eq!(b[0], 0xa5);
        // 16-bit big endian.
        let mut b = vec![0u8; 8];
        assert_eq!(refcount_set(&mut b, 4, 1, 0x1234), 2..4);
        assert_eq!(&b[..4], &[0, 0, 0x12, 0x34]);
        // 64-bit big endian.
        let mut b = vec![0u8; 16];
        refcount_set(&mut b, 6, 1, 0x0102_0304_0506_0708);
        assert_eq!(&b[8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(refcount_max(0), 1);
        assert_eq!(refcount_max(4), 65535);
        assert_eq!(refcount_max(6), u64::MAX);
        assert_eq!(refcount_entries(65536, 4), 32768);
        assert_eq!(refcount_entries(512, 6), 64);
    }

    #[test]
    fn last_used_refcount_entry_for_every_width() {
        // qcow2.txt "Refcount block entry": entry i occupies bits i*refcount_bits.. of the
        // block; sub-byte widths count bit 0 as the least significant bit, wider entries
        // are big endian. Each case: (order, byte, value) -> index of the last used entry.
        let cases: [(u32, usize, u8, u64); 12] = [
            // 1 bit: byte 3 bit 5 is entry 3*8+5.
            (0, 3, 0b0010_0000, 29),
            // 1 bit: byte 3 bits 0 and 5, the higher one wins.
            (0, 3, 0b0010_0001, 29),
            // 2 bits: byte 3 bits 6-7 (value 2) is entry 3*4+3.
            (1, 3, 0b1000_0000, 15),
            // 2 bits: byte 3 bit 0 (value 1) is entry 3*4.
            (1, 3, 0b0000_0001, 12),
            // 4 bits: byte 10 high nibble is entry 10*2+1.
            (2, 10, 0x10, 21),
            // 4 bits: byte 10 low nibble is entry 10*2.
            (2, 10, 0x0f, 20),
            // 8 bits: byte 100 is entry 100.
            (3, 100, 1, 100),
            // 16 bits big endian: bytes 6-7 are entry 3, either byte makes it non-zero.
            (4, 7, 1, 3),
            (4, 6, 0x80, 3),
            // 32 bits: bytes 8-11 are entry 2.
            (5, 11, 1, 2),
            // 64 bits: byte 511, the last of a 512-byte block, is entry 63 (the last one).
            (6, 511, 1, 63),
            (6, 0, 0x80, 0),
        ];
        for (order, byte, value, want) in cases {
            let mut b = vec![0u8; 512];
            assert_eq!(refcount_last_used(&b, order), None, "order {order}: empty");
            b[byte] = value;
            assert_eq!(
                refcount_last_used(&b, order),
                Some(want),
                "order {order}, byte {byte} = {value:#x}"
            );
            assert_ne!(refcount_get(&b, order, want), 0, "order {order}");
            // A lower non-zero entry does not change the answer.
            b[0] |= 1;
            assert_eq!(refcount_last_used(&b, order), Some(want), "order {order}");
        }
        // The last entry of a 512-byte block for every width: 4096 >> order entries.
        for order in 0..=6u32 {
            let mut b = vec![0u8; 512];
            b[511] = 0x80;
            assert_eq!(refcount_last_used(&b, order), Some((4096 >> order) - 1));
        }
    }

    proptest! {
        #[test]
        fn refcount_set_touches_only_its_entry(order in 0u32..7, idx in 0u64..64, v in any::<u64>(),
                                                fill in any::<u8>()) {
            let mut b = vec![fill; 512];
            let v = v & refcount_max(order);
            let before: Vec<u64> = (0..64).map(|i| refcount_get(&b, order, i)).collect();
            refcount_set(&mut b, order, idx, v);
            for i in 0..64 {
                let want = if i == idx { v } else { before[i as usize] };
                prop_assert_eq!(refcount_get(&b, order, i), want);
            }
        }

        #[test]
        fn l2_decode_never_panics(raw in any::<u64>(), cb in 9u32..22, zero in any::<bool>()) {
            let f = L2Format { cluster_bits: cb, zero_flag: zero, extended: false };
            if let Ok(e) = L2Entry::decode(raw, f) {
                // Anything we accept re-encodes to itself, apart from ignored bits of
                // compressed descriptors (none exist) and the copied flag of unallocated.
                prop_assert_eq!(L2Entry::decode(e.encode(f), f).unwrap(), e);
            }
        }
    }
}
