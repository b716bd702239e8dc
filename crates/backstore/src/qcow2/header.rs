//! The qcow2 header, its header extensions and feature bits (qcow2.txt "Header",
//! "Header extensions", "Feature name table").
//!
//! Parsing is split in two: [`ImageHeader::parse`] turns the bytes of the first cluster into
//! typed values (it only checks what it needs to walk the bytes), and
//! [`ImageHeader::validate`] checks the values against each other and against the file
//! size. Neither ever panics on hostile input.

use std::fmt;

/// `QFI\xfb`, the first four bytes of every qcow2 image.
pub const MAGIC: u32 = 0x5146_49fb;
/// Length of a version 2 header (qcow2.txt "Header": "For version 2, the header is exactly
/// 72 bytes in length").
pub const V2_HEADER_LEN: u32 = 72;
/// Smallest version 3 header.
pub const V3_MIN_HEADER_LEN: u32 = 104;
/// Length of the version 3 header we write: 104 bytes plus the compression type byte,
/// padded to a multiple of 8 (as qemu does since 5.1).
pub const V3_HEADER_LEN: u32 = 112;
/// Smallest cluster: 512 bytes ("Must not be less than 9").
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster qemu can open: 2 MiB.
pub const MAX_CLUSTER_BITS: u32 = 21;
/// qemu's implementation limit for the L1 table (32 MiB), which we share so that every
/// image we accept or create stays openable by qemu.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// qemu's implementation limit for the refcount table (8 MiB).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;

/// Bytes of a refcount table of `clusters` clusters of `cs` bytes, if within
/// [`MAX_REFTABLE_BYTES`] (a product that overflows is not).
pub fn reftable_bytes(clusters: u64, cs: u64) -> Option<u64> {
    clusters
        .checked_mul(cs)
        .filter(|&bytes| bytes <= MAX_REFTABLE_BYTES)
}
/// Longest backing file name ("Must not be longer than 1023 bytes").
pub const MAX_BACKING_NAME: u32 = 1023;
/// Largest refcount order (64-bit refcounts).
pub const MAX_REFCOUNT_ORDER: u32 = 6;
/// qemu refuses images with more snapshots than this.
pub const MAX_SNAPSHOTS: u32 = 65536;

/// Byte offset of `size` in the header.
pub const OFF_SIZE: u64 = 24;
/// Byte offset of `l1_size` (followed by `l1_table_offset`).
pub const OFF_L1_SIZE: u64 = 36;
/// Byte offset of `refcount_table_offset` (followed by `refcount_table_clusters`).
pub const OFF_REFCOUNT_TABLE: u64 = 48;
/// Byte offset of `incompatible_features`.
pub const OFF_INCOMPATIBLE: u64 = 72;
/// Byte offset of `autoclear_features`.
pub const OFF_AUTOCLEAR: u64 = 88;

/// Incompatible feature bits (header bytes 72-79).
pub mod incompat {
    /// Refcounts may be inconsistent (lazy refcounts); repair before writing.
    pub const DIRTY: u64 = 1 << 0;
    /// Any data structure may be corrupt; do not write.
    pub const CORRUPT: u64 = 1 << 1;
    /// Guest clusters live in an external data file.
    pub const EXTERNAL_DATA: u64 = 1 << 2;
    /// `compression_type` is present and non-zero.
    pub const COMPRESSION_TYPE: u64 = 1 << 3;
    /// L2 entries are 128 bits with a subcluster bitmap.
    pub const EXTENDED_L2: u64 = 1 << 4;
    /// Every bit the specification defines.
    pub const KNOWN: u64 = DIRTY | CORRUPT | EXTERNAL_DATA | COMPRESSION_TYPE | EXTENDED_L2;
}

/// Compatible feature bits (header bytes 80-87).
pub mod compat {
    /// Lazy refcount updates may be used.
    pub const LAZY_REFCOUNTS: u64 = 1 << 0;
}

/// Auto-clear feature bits (header bytes 88-95).
pub mod autoclear {
    /// The bitmaps extension is consistent.
    pub const BITMAPS: u64 = 1 << 0;
    /// The external data file is a consistent raw image.
    pub const RAW_EXTERNAL: u64 = 1 << 1;
}

/// Header extension types (qcow2.txt "Header extensions").
pub mod ext {
    /// End of the header extension area.
    pub const END: u32 = 0;
    /// Backing file format name string.
    pub const BACKING_FORMAT: u32 = 0xe279_2aca;
    /// Feature name table.
    pub const FEATURE_TABLE: u32 = 0x6803_f857;
    /// Bitmaps extension.
    pub const BITMAPS: u32 = 0x2385_2875;
    /// Full disk encryption header pointer.
    pub const CRYPTO: u32 = 0x0537_be77;
    /// External data file name string.
    pub const DATA_FILE: u32 = 0x4441_5441;
}

/// A structural problem with an image; the engine wraps it in
/// [`crate::Error::Corrupt`] together with the image path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// Shorthand for building a [`FormatError`].
pub(crate) fn bad<T>(msg: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError(msg.into()))
}

/// How compressed clusters are compressed (header byte 104).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate (RFC 1951), window bits 12; the default.
    Zlib,
    /// One Zstandard frame per cluster.
    Zstd,
    /// A value the specification does not define.
    Unknown(u8),
}

impl CompressionType {
    fn from_byte(b: u8) -> Self {
        match b {
            0 => CompressionType::Zlib,
            1 => CompressionType::Zstd,
            x => CompressionType::Unknown(x),
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            CompressionType::Zlib => 0,
            CompressionType::Zstd => 1,
            CompressionType::Unknown(x) => x,
        }
    }
}

/// The fixed header fields (qcow2.txt "Header"), as numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Offset of the backing file name, 0 if none.
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (v3; 0 for v2).
    pub incompatible_features: u64,
    /// Compatible feature bits (v3; 0 for v2).
    pub compatible_features: u64,
    /// Auto-clear feature bits (v3; 0 for v2).
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits (4 for v2).
    pub refcount_order: u32,
    /// Header length in bytes (72 for v2).
    pub header_length: u32,
    /// Compression type (zlib unless the header says otherwise).
    pub compression_type: CompressionType,
}

/// A header extension kept as bytes, so that unknown ones survive untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderExtension {
    /// Extension type.
    pub kind: u32,
    /// Extension data (without padding).
    pub data: Vec<u8>,
}

/// Which feature bitmap a feature name table entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// Bits of `incompatible_features`.
    Incompatible,
    /// Bits of `compatible_features`.
    Compatible,
    /// Bits of `autoclear_features`.
    Autoclear,
    /// A type the specification does not define.
    Other(u8),
}

/// One entry of the feature name table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// The bitmap the bit belongs to.
    pub kind: FeatureKind,
    /// Bit number, 0-63.
    pub bit: u8,
    /// Human-readable name.
    pub name: String,
}

/// Size of one feature name table entry.
const FEATURE_ENTRY_LEN: usize = 48;

/// Everything the first cluster of an image tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageHeader {
    /// Fixed fields.
    pub header: Header,
    /// Every header extension in file order, known and unknown.
    pub extensions: Vec<HeaderExtension>,
    /// Backing file name, if any.
    pub backing_file: Option<String>,
    /// Backing file format from the backing format extension, if present.
    pub backing_format: Option<String>,
    /// Decoded feature name table (empty if the image has none).
    pub feature_names: Vec<FeatureName>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes the feature name table extension data.
pub fn parse_feature_table(data: &[u8]) -> Vec<FeatureName> {
    data.chunks_exact(FEATURE_ENTRY_LEN)
        .map(|e| {
            let kind = match e[0] {
                0 => FeatureKind::Incompatible,
                1 => FeatureKind::Compatible,
                2 => FeatureKind::Autoclear,
                x => FeatureKind::Other(x),
            };
            let name = &e[2..];
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            FeatureName {
                kind,
                bit: e[1],
                name: lossy(&name[..end]),
            }
        })
        .collect()
}

/// Encodes a feature name table entry.
fn feature_entry(kind: u8, bit: u8, name: &str) -> [u8; FEATURE_ENTRY_LEN] {
    let mut e = [0u8; FEATURE_ENTRY_LEN];
    e[0] = kind;
    e[1] = bit;
    let n = name.len().min(FEATURE_ENTRY_LEN - 2);
    e[2..2 + n].copy_from_slice(&name.as_bytes()[..n]);
    e
}

/// Names of the incompatible feature bits we know, for error messages.
fn known_incompat_name(bit: u32) -> Option<&'static str> {
    Some(match bit {
        0 => "dirty bit",
        1 => "corrupt bit",
        2 => "external data file",
        3 => "compression type",
        4 => "extended L2 entries",
        _ => return None,
    })
}

/// Parses the fields every version has (qcow2.txt "Header", bytes 0-71); the version 3
/// fields get their version 2 defaults.
fn parse_fixed(buf: &[u8]) -> Result<Header, FormatError> {
    if buf.len() < V2_HEADER_LEN as usize {
        return bad(format!(
            "file is {} bytes, too short for a qcow2 header (72 bytes)",
            buf.len()
        ));
    }
    let magic = be32(buf, 0);
    if magic != MAGIC {
        return bad(format!("bad magic {magic:#010x}, not a qcow2 image"));
    }
    let version = be32(buf, 4);
    if version != 2 && version != 3 {
        return bad(format!("unsupported qcow2 version {version}"));
    }
    let cluster_bits = be32(buf, 20);
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return bad(format!(
            "cluster_bits {cluster_bits} outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
        ));
    }
    Ok(Header {
        version,
        backing_file_offset: be64(buf, 8),
        backing_file_size: be32(buf, 16),
        cluster_bits,
        size: be64(buf, 24),
        crypt_method: be32(buf, 32),
        l1_size: be32(buf, 36),
        l1_table_offset: be64(buf, 40),
        refcount_table_offset: be64(buf, 48),
        refcount_table_clusters: be32(buf, 56),
        nb_snapshots: be32(buf, 60),
        snapshots_offset: be64(buf, 64),
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: V2_HEADER_LEN,
        compression_type: CompressionType::Zlib,
    })
}

/// Parses the version 3 fields (bytes 72-104 and the optional compression type byte).
fn parse_v3_fields(buf: &[u8], h: &mut Header, cluster_size: usize) -> Result<(), FormatError> {
    if buf.len() < V3_MIN_HEADER_LEN as usize {
        return bad(format!(
            "file is {} bytes, too short for a version 3 header (104 bytes)",
            buf.len()
        ));
    }
    h.incompatible_features = be64(buf, 72);
    h.compatible_features = be64(buf, 80);
    h.autoclear_features = be64(buf, 88);
    h.refcount_order = be32(buf, 96);
    h.header_length = be32(buf, 100);
    if h.header_length < V3_MIN_HEADER_LEN || h.header_length % 8 != 0 {
        return bad(format!(
            "header_length {} must be a multiple of 8 and at least 104",
            h.header_length
        ));
    }
    if h.header_length as usize > cluster_size {
        return bad(format!(
            "header_length {} exceeds the cluster size {cluster_size}",
            h.header_length
        ));
    }
    if buf.len() < h.header_length as usize {
        return bad(format!(
            "file is {} bytes, shorter than header_length {}",
            buf.len(),
            h.header_length
        ));
    }
    if h.header_length > 104 {
        h.compression_type = CompressionType::from_byte(buf[104]);
    }
    Ok(())
}

/// Walks the header extensions (qcow2.txt "Header extensions"). They run from the end of
/// the header to the backing file name (if it is stored inside the first cluster) or to
/// the end of the first cluster.
fn parse_extensions(
    buf: &[u8],
    h: &Header,
    cluster_size: usize,
) -> Result<Vec<HeaderExtension>, FormatError> {
    let mut ext_end = cluster_size;
    if h.backing_file_offset > u64::from(h.header_length)
        && h.backing_file_offset < cluster_size as u64
    {
        ext_end = h.backing_file_offset as usize;
    }
    let avail = buf.len().min(ext_end);
    let mut extensions = Vec::new();
    let mut pos = h.header_length as usize;
    while pos < ext_end {
        if pos + 8 > avail {
            if avail < ext_end {
                return bad("header extension area is truncated");
            }
            break;
        }
        let kind = be32(buf, pos);
        let len = be32(buf, pos + 4) as usize;
        if kind == ext::END {
            break;
        }
        let data_start = pos + 8;
        let data_end = match data_start.checked_add(len) {
            Some(e) if e <= avail => e,
            _ => {
                return bad(format!(
                "header extension {kind:#010x} of {len} bytes at {pos} runs past the header area"
            ))
            }
        };
        extensions.push(HeaderExtension {
            kind,
            data: buf[data_start..data_end].to_vec(),
        });
        // Data is padded to a multiple of 8.
        pos = data_start + len.div_ceil(8) * 8;
    }
    Ok(extensions)
}

/// Decodes the extensions we interpret: the backing file format name and the feature
/// name table (the last of each wins).
fn known_extensions(
    extensions: &[HeaderExtension],
) -> Result<(Option<String>, Vec<FeatureName>), FormatError> {
    let mut backing_format = None;
    let mut feature_names = Vec::new();
    for e in extensions {
        match e.kind {
            ext::BACKING_FORMAT => {
                if e.data.len() > MAX_BACKING_NAME as usize {
                    return bad(format!(
                        "backing format name of {} bytes is too long",
                        e.data.len()
                    ));
                }
                backing_format = Some(lossy(&e.data));
            }
            ext::FEATURE_TABLE => feature_names = parse_feature_table(&e.data),
            _ => {}
        }
    }
    Ok((backing_format, feature_names))
}

/// Reads the backing file name, which must lie in the first cluster after the header
/// (qcow2.txt "Header", bytes 8-19).
fn parse_backing_name(
    buf: &[u8],
    h: &Header,
    cluster_size: usize,
) -> Result<Option<String>, FormatError> {
    if h.backing_file_offset == 0 {
        return Ok(None);
    }
    if h.backing_file_size > MAX_BACKING_NAME {
        return bad(format!(
            "backing file name of {} bytes is longer than {MAX_BACKING_NAME}",
            h.backing_file_size
        ));
    }
    let start = h.backing_file_offset;
    // The offset is file input: near u64::MAX the sum would wrap to a small end
    // and slice `buf[start..end]` backwards (found by fuzz/qcow2_header).
    let Some(end) = start.checked_add(u64::from(h.backing_file_size)) else {
        return bad(format!(
            "backing file name offset {start} plus size {} overflows",
            h.backing_file_size
        ));
    };
    if end > cluster_size as u64 || start < u64::from(h.header_length) {
        return bad(format!(
            "backing file name at {start}..{end} is not inside the first cluster after the header"
        ));
    }
    if end > buf.len() as u64 {
        return bad("backing file name lies past the end of the file");
    }
    Ok(Some(lossy(&buf[start as usize..end as usize])))
}

impl ImageHeader {
    /// Parses the header and header extensions from the start of the image.
    ///
    /// `buf` holds the first bytes of the file: the whole first cluster, or the whole file
    /// if it is shorter. Extensions must lie within the first cluster.
    pub fn parse(buf: &[u8]) -> Result<Self, FormatError> {
        let mut h = parse_fixed(buf)?;
        let cluster_size = 1usize << h.cluster_bits;
        if h.version == 3 {
            parse_v3_fields(buf, &mut h, cluster_size)?;
        }
        if h.refcount_order > MAX_REFCOUNT_ORDER {
            return bad(format!(
                "refcount_order {} exceeds {MAX_REFCOUNT_ORDER}",
                h.refcount_order
            ));
        }
        let extensions = parse_extensions(buf, &h, cluster_size)?;
        let (backing_format, feature_names) = known_extensions(&extensions)?;
        let backing_file = parse_backing_name(buf, &h, cluster_size)?;
        Ok(ImageHeader {
            header: h,
            extensions,
            backing_file,
            backing_format,
            feature_names,
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.header.cluster_bits
    }

    /// Whether L2 entries are 128 bits wide.
    pub fn extended_l2(&self) -> bool {
        self.header.incompatible_features & incompat::EXTENDED_L2 != 0
    }

    /// Number of L2 entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        let entry = if self.extended_l2() { 16 } else { 8 };
        self.cluster_size() / entry
    }

    /// Name of feature bit `bit` of bitmap `kind`, from the feature name table if it has
    /// one, else from the specification.
    pub fn feature_name(&self, kind: FeatureKind, bit: u32) -> String {
        self.feature_names
            .iter()
            .find(|f| f.kind == kind && u32::from(f.bit) == bit)
            .map(|f| f.name.clone())
            .or_else(|| match kind {
                FeatureKind::Incompatible => known_incompat_name(bit).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_else(|| "unknown feature".to_owned())
    }

    /// Checks field values against each other and against `file_len`; see qcow2.txt for
    /// each rule. Feature bits are checked separately by the engine, which knows whether
    /// the image is opened for writing.
    pub fn validate(&self, file_len: u64) -> Result<(), FormatError> {
        let h = &self.header;
        let cs = self.cluster_size();
        if h.version == 2 && h.refcount_order != 4 {
            return bad("version 2 images have 16-bit refcounts");
        }
        if self.extended_l2() && h.cluster_bits < 14 {
            return bad("extended L2 entries need clusters of at least 16 KiB");
        }
        let unknown = h.incompatible_features & !incompat::KNOWN;
        if unknown != 0 {
            let bit = unknown.trailing_zeros();
            return bad(format!(
                "unsupported incompatible feature bit {bit} ({})",
                self.feature_name(FeatureKind::Incompatible, bit)
            ));
        }
        let has_ctype = h.incompatible_features & incompat::COMPRESSION_TYPE != 0;
        match (has_ctype, h.compression_type) {
            (false, CompressionType::Zlib) => {}
            (false, t) => {
                return bad(format!(
                    "compression type {} set without the compression type feature bit",
                    t.to_byte()
                ))
            }
            (true, CompressionType::Zlib) => {
                return bad("compression type feature bit set but the type is zlib")
            }
            (true, _) => {}
        }

        // L1 table: big enough for the virtual size, aligned, inside the file.
        let l2_cover = cs
            .checked_mul(self.l2_entries())
            .ok_or_else(|| FormatError("cluster geometry overflows".into()))?;
        let needed_l1 = h.size.div_ceil(l2_cover);
        if needed_l1 > u64::from(h.l1_size) {
            return bad(format!(
                "L1 table of {} entries is too small for a virtual size of {} bytes",
                h.l1_size, h.size
            ));
        }
        let l1_bytes = u64::from(h.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return bad(format!("L1 table of {} entries is too large", h.l1_size));
        }
        let l1 = if h.l1_size > 0 {
            Some(self.table_range("L1 table", h.l1_table_offset, l1_bytes, file_len)?)
        } else {
            None
        };

        // Refcount table.
        if h.refcount_table_clusters == 0 {
            return bad("refcount table has no clusters");
        }
        let Some(rt_bytes) = reftable_bytes(u64::from(h.refcount_table_clusters), cs) else {
            return bad(format!(
                "refcount table of {} clusters is too large",
                h.refcount_table_clusters
            ));
        };
        let rt = self.table_range(
            "refcount table",
            h.refcount_table_offset,
            rt_bytes,
            file_len,
        )?;

        if let Some(l1) = &l1 {
            if l1.start < rt.end && rt.start < l1.end {
                return bad("L1 table overlaps the refcount table");
            }
        }

        if h.nb_snapshots > MAX_SNAPSHOTS {
            return bad(format!("{} snapshots is too many", h.nb_snapshots));
        }
        if h.nb_snapshots > 0 {
            self.table_range("snapshot table", h.snapshots_offset, 1, file_len)?;
        }
        Ok(())
    }

    /// Checks that a table at `offset` of `len` bytes is cluster aligned, does not overlap
    /// the header cluster and starts inside the file.
    fn table_range(
        &self,
        what: &str,
        offset: u64,
        len: u64,
        file_len: u64,
    ) -> Result<std::ops::Range<u64>, FormatError> {
        let cs = self.cluster_size();
        if offset % cs != 0 {
            return bad(format!("{what} offset {offset:#x} is not cluster aligned"));
        }
        if offset == 0 {
            return bad(format!("{what} overlaps the image header"));
        }
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= 1 << 56)
            .ok_or_else(|| FormatError(format!("{what} at {offset:#x} is beyond 64 PiB")))?;
        if end > file_len {
            return bad(format!(
                "{what} at {offset:#x}..{end:#x} lies beyond the end of the file ({file_len} bytes)"
            ));
        }
        Ok(offset..end)
    }
}

/// Serialises a header for a new image: fixed fields, then `extensions`, the end marker,
/// and the backing file name (whose offset and size fields are filled in here).
///
/// Fails if it does not fit in one cluster.
pub fn build_header_cluster(
    h: &Header,
    extensions: &[HeaderExtension],
    backing_file: Option<&str>,
) -> Result<Vec<u8>, FormatError> {
    let cs = 1usize << h.cluster_bits;
    let mut b = vec![0u8; cs];
    let put32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let put64 =
        |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    put32(&mut b, 0, MAGIC);
    put32(&mut b, 4, h.version);
    put32(&mut b, 20, h.cluster_bits);
    put64(&mut b, 24, h.size);
    put32(&mut b, 32, h.crypt_method);
    put32(&mut b, 36, h.l1_size);
    put64(&mut b, 40, h.l1_table_offset);
    put64(&mut b, 48, h.refcount_table_offset);
    put32(&mut b, 56, h.refcount_table_clusters);
    put32(&mut b, 60, h.nb_snapshots);
    put64(&mut b, 64, h.snapshots_offset);
    let header_len = if h.version >= 3 {
        put64(&mut b, 72, h.incompatible_features);
        put64(&mut b, 80, h.compatible_features);
        put64(&mut b, 88, h.autoclear_features);
        put32(&mut b, 96, h.refcount_order);
        put32(&mut b, 100, V3_HEADER_LEN);
        b[104] = h.compression_type.to_byte();
        V3_HEADER_LEN as usize
    } else {
        V2_HEADER_LEN as usize
    };
    let mut pos = header_len;
    let too_big = || {
        FormatError(format!(
            "header extensions and backing file name do not fit in a {cs}-byte cluster"
        ))
    };
    for e in extensions {
        let padded = e.data.len().div_ceil(8) * 8;
        let end = pos + 8 + padded;
        if end + 8 > cs {
            return Err(too_big());
        }
        put32(&mut b, pos, e.kind);
        put32(&mut b, pos + 4, e.data.len() as u32);
        b[pos + 8..pos + 8 + e.data.len()].copy_from_slice(&e.data);
        pos = end;
    }
    // End marker (already zero) takes 8 bytes.
    pos += 8;
    if let Some(name) = backing_file {
        if name.len() > MAX_BACKING_NAME as usize || pos + name.len() > cs {
            return Err(too_big());
        }
        put64(&mut b, 8, pos as u64);
        put32(&mut b, 16, name.len() as u32);
        b[pos..pos + name.len()].copy_from_slice(name.as_bytes());
    }
    Ok(b)
}

/// The feature name table we write into new version 3 images.
pub fn default_feature_table() -> HeaderExtension {
    let entries: [(u8, u8, &str); 7] = [
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
    ];
    let mut data = Vec::with_capacity(entries.len() * FEATURE_ENTRY_LEN);
    for (k, bit, name) in entries {
        data.extend_from_slice(&feature_entry(k, bit, name));
    }
    HeaderExtension {
        kind: ext::FEATURE_TABLE,
        data,
    }
}

impl fmt::Display for CompressionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompressionType::Zlib => f.write_str("zlib"),
            CompressionType::Zstd => f.write_str("zstd"),
            CompressionType::Unknown(x) => write!(f, "unknown ({x})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A version 3 header as qemu 7.2 writes it for `qemu-img create -f qcow2 x 1M`:
    /// 64 KiB clusters, refcount table at 0x10000, L1 (1 entry) at 0x30000.
    fn qemu_v3_1m() -> Vec<u8> {
        let mut b = vec![0u8; 65536];
        let hex = [
            0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x10, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, //
            0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            0, 0, 0, 4, 0, 0, 0, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, //
        ];
        b[..hex.len()].copy_from_slice(&hex);
        b
    }

    #[test]
    fn parses_qemu_v3_header() {
        let ih = ImageHeader::parse(&qemu_v3_1m()).unwrap();
        let h = &ih.header;
        assert_eq!(h.version, 3);
        assert_eq!(h.cluster_bits, 16);
        assert_eq!(h.size, 1 << 20);
        assert_eq!(h.l1_size, 1);
        assert_eq!(h.l1_table_offset, 0x30000);
        assert_eq!(h.refcount_table_offset, 0x10000);
        assert_eq!(h.refcount_table_clusters, 1);
        assert_eq!(h.refcount_order, 4);
        assert_eq!(h.header_length, 112);
        assert_eq!(h.compression_type, CompressionType::Zlib);
        assert!(ih.extensions.is_empty());
        assert_eq!(ih.backing_file, None);
        assert_eq!(ih.l2_entries(), 8192);
        // qemu's file ends right after the single L1 entry.
        ih.validate(0x30008).unwrap();
        assert!(ih.validate(0x30004).is_err());
    }

    #[test]
    fn parses_v2_header_with_defaults() {
        let mut b = qemu_v3_1m();
        b[7] = 2;
        // Bytes past 72 are not header in v2: garbage there must be read as extensions,
        // and zero means "end of extensions".
        b[96..104].fill(0);
        let ih = ImageHeader::parse(&b).unwrap();
        assert_eq!(ih.header.version, 2);
        assert_eq!(ih.header.refcount_order, 4);
        assert_eq!(ih.header.header_length, 72);
        assert_eq!(ih.header.incompatible_features, 0);
    }

    #[test]
    fn parses_extensions_backing_and_feature_table() {
        let mut h = ImageHeader::parse(&qemu_v3_1m()).unwrap().header;
        h.incompatible_features = 0;
        let exts = vec![
            HeaderExtension {
                kind: ext::BACKING_FORMAT,
                data: b"raw".to_vec(),
            },
            default_feature_table(),
            HeaderExtension {
                kind: 0x1234_5678,
                data: vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
            },
        ];
        let b = build_header_cluster(&h, &exts, Some("base.img")).unwrap();
        // Layout: header 112, backing format ext 8+8, feature table 8+336, unknown 8+16,
        // end marker 8 -> backing name at 112+16+344+24+8 = 504.
        assert_eq!(be64(&b, 8), 504);
        assert_eq!(be32(&b, 16), 8);
        let ih = ImageHeader::parse(&b).unwrap();
        assert_eq!(ih.backing_file.as_deref(), Some("base.img"));
        assert_eq!(ih.backing_format.as_deref(), Some("raw"));
        assert_eq!(ih.extensions.len(), 3);
        assert_eq!(ih.extensions[2].data, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(ih.feature_names.len(), 7);
        assert_eq!(
            ih.feature_names[5],
            FeatureName {
                kind: FeatureKind::Compatible,
                bit: 0,
                name: "lazy refcounts".into()
            }
        );
        assert_eq!(
            ih.feature_name(FeatureKind::Incompatible, 4),
            "extended L2 entries"
        );
        assert_eq!(
            ih.feature_name(FeatureKind::Incompatible, 9),
            "unknown feature"
        );
    }

    #[test]
    fn unknown_incompatible_bit_named_from_table() {
        let mut h = ImageHeader::parse(&qemu_v3_1m()).unwrap().header;
        h.incompatible_features = 1 << 7;
        let mut data = vec![0u8; 48];
        data[1] = 7;
        data[2..2 + 10].copy_from_slice(b"time warps");
        let exts = vec![HeaderExtension {
            kind: ext::FEATURE_TABLE,
            data,
        }];
        let b = build_header_cluster(&h, &exts, None).unwrap();
        let ih = ImageHeader::parse(&b).unwrap();
        let err = ih.validate(1 << 20).unwrap_err();
        assert_eq!(err.0, "unsupported incompatible feature bit 7 (time warps)");
    }

    #[test]
    fn rejects_malformed_headers() {
        let good = qemu_v3_1m();
        type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|b| b.truncate(50)), "too short"),
            (Box::new(|b| b[0] = 0), "bad magic"),
            (Box::new(|b| b[7] = 4), "version 4"),
            (Box::new(|b| b[23] = 8), "cluster_bits"),
            (Box::new(|b| b[23] = 22), "cluster_bits"),
            (Box::new(|b| b[99] = 7), "refcount_order"),
            (Box::new(|b| b[103] = 100), "header_length"),
            (Box::new(|b| b[103] = 0x6c), "header_length"),
            (Box::new(|b| b.truncate(100)), "version 3 header"),
            // Extension claiming 1 GiB of data.
            (
                Box::new(|b| {
                    b[112..116].copy_from_slice(&0x1111_1111u32.to_be_bytes());
                    b[116..120].copy_from_slice(&0x4000_0000u32.to_be_bytes());
                }),
                "runs past",
            ),
            // Backing file name outside the first cluster.
            (
                Box::new(|b| {
                    b[8..16].copy_from_slice(&0x20000u64.to_be_bytes());
                    b[19] = 4;
                }),
                "first cluster",
            ),
            (
                Box::new(|b| b[16..20].copy_from_slice(&2000u32.to_be_bytes())),
                "",
            ),
        ];
        for (i, (mutate, what)) in cases.into_iter().enumerate() {
            let mut b = good.clone();
            mutate(&mut b);
            if i == 11 {
                // A huge backing_file_size with no backing offset is ignored.
                assert!(ImageHeader::parse(&b).is_ok());
                continue;
            }
            let err = ImageHeader::parse(&b).expect_err(what);
            assert!(
                err.0.contains(what.split(' ').next().unwrap()),
                "case {i}: {err} (wanted {what})"
            );
        }
    }

    #[test]
    fn validate_rejects_bad_geometry() {
        let base = ImageHeader::parse(&qemu_v3_1m()).unwrap();
        let file_len = 4 << 20;
        let check = |f: &dyn Fn(&mut Header), want: &str| {
            let mut ih = base.clone();
            f(&mut ih.header);
            let err = ih.validate(file_len).expect_err(want);
            assert!(err.0.contains(want), "{err} (wanted {want})");
        };
        check(
            &|h| {
                h.l1_size = 0x0100_0000;
                h.size = 1 << 50
            },
            "too large",
        );
        check(&|h| h.size = 1 << 40, "too small");
        check(&|h| h.l1_table_offset = 0x30001, "not cluster aligned");
        check(&|h| h.l1_table_offset = 0, "overlaps the image header");
        check(&|h| h.l1_table_offset = 1 << 40, "beyond the end");
        check(&|h| h.l1_table_offset = !0xffff, "beyond 64 PiB");
        check(
            &|h| h.refcount_table_offset = 0x30000,
            "overlaps the refcount",
        );
        check(&|h| h.refcount_table_clusters = 0, "no clusters");
        check(&|h| h.refcount_table_clusters = 1000, "too large");
        check(&|h| h.incompatible_features = 1 << 40, "bit 40");
        check(
            &|h| h.compression_type = CompressionType::Zstd,
            "without the compression type",
        );
        check(
            &|h| h.incompatible_features = incompat::COMPRESSION_TYPE,
            "type is zlib",
        );
        check(
            &|h| {
                h.version = 2;
                h.refcount_order = 6
            },
            "16-bit refcounts",
        );
        check(&|h| h.nb_snapshots = 1 << 20, "snapshots");
        check(
            &|h| {
                h.nb_snapshots = 1;
                h.snapshots_offset = 1 << 30
            },
            "snapshot table",
        );
    }

    #[test]
    fn header_cluster_too_small_for_backing_name() {
        let mut h = ImageHeader::parse(&qemu_v3_1m()).unwrap().header;
        h.cluster_bits = 9;
        let name = "x".repeat(400);
        assert!(build_header_cluster(&h, &[], Some(&name)).is_err());
        assert!(build_header_cluster(&h, &[], Some("short")).is_ok());
    }

    #[test]
    fn backing_file_offset_near_u64_max_is_refused() {
        // fuzz/qcow2_header found this: backing_file_offset = 2^64 - 4 with a 768-byte
        // name wrapped `offset + size` to a small end and sliced the buffer backwards.
        let mut b = qemu_v3_1m();
        b[8..16].copy_from_slice(&(u64::MAX - 3).to_be_bytes());
        b[16..20].copy_from_slice(&768u32.to_be_bytes());
        assert!(ImageHeader::parse(&b).is_err());
        // Ending exactly at 2^64 - 1 does not wrap; the first-cluster rule refuses it.
        b[8..16].copy_from_slice(&(u64::MAX - 768).to_be_bytes());
        assert!(ImageHeader::parse(&b).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..1024),
                              keep_magic in any::<bool>(), version in 2u32..4) {
            if keep_magic && bytes.len() >= 8 {
                bytes[..4].copy_from_slice(&MAGIC.to_be_bytes());
                bytes[4..8].copy_from_slice(&version.to_be_bytes());
                if bytes.len() >= 24 { bytes[20..24].copy_from_slice(&9u32.to_be_bytes()); }
            }
            if let Ok(ih) = ImageHeader::parse(&bytes) {
                let _ = ih.validate(bytes.len() as u64);
            }
        }

        #[test]
        fn build_then_parse_roundtrips(size in 1u64..(1 << 40), cb in 9u32..22, lazy in any::<bool>(),
                                       name in "[a-z]{1,40}") {
            let l2 = (1u64 << cb) / 8;
            let h = Header {
                version: 3, backing_file_offset: 0, backing_file_size: 0, cluster_bits: cb, size,
                crypt_method: 0, l1_size: size.div_ceil((1 << cb) * l2) as u32,
                l1_table_offset: 3 << cb, refcount_table_offset: 1 << cb, refcount_table_clusters: 1,
                nb_snapshots: 0, snapshots_offset: 0, incompatible_features: 0,
                compatible_features: u64::from(lazy), autoclear_features: 0, refcount_order: 4,
                header_length: V3_HEADER_LEN, compression_type: CompressionType::Zlib,
            };
            let b = build_header_cluster(&h, &[], Some(&name)).unwrap();
            let ih = ImageHeader::parse(&b).unwrap();
            let mut expect = h.clone();
            expect.backing_file_offset = u64::from(V3_HEADER_LEN) + 8;
            expect.backing_file_size = name.len() as u32;
            prop_assert_eq!(&ih.header, &expect);
            prop_assert_eq!(ih.backing_file.as_deref(), Some(name.as_str()));
        }
    }
}
