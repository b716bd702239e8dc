//! Creating new images, laid out as qemu-img does: header cluster, refcount table,
//! refcount blocks, then the L1 table; everything else is allocated on first write.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::backing::{resolve, BackingFormat};
use super::entry::{refcount_entries, refcount_set};
use super::header::{
    build_header_cluster, compat, default_feature_table, ext, CompressionType, Header,
    HeaderExtension, MAX_BACKING_NAME, MAX_CLUSTER_BITS, MAX_L1_BYTES, MIN_CLUSTER_BITS,
    V3_HEADER_LEN,
};
use super::io::{table_bytes, ImageFile};
use super::refcount::fixed_point;
use super::Qcow2Options;
use crate::{validate_block_size, Error, Result};

/// qcow2 version of a new image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Version {
    /// Version 2 (`compat=0.10`): 16-bit refcounts, no zero clusters, no feature bits.
    V2,
    /// Version 3 (`compat=1.1`), qemu's default.
    #[default]
    V3,
}

/// Options for [`super::Qcow2Backstore::create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Image version.
    pub version: Version,
    /// Refcount width in bits: 1, 2, 4, 8, 16, 32 or 64 (v2 only allows 16).
    pub refcount_bits: u32,
    /// Set the `lazy_refcounts` compatible feature (v3 only). This engine still keeps
    /// refcounts exact; the bit lets qemu use lazy updates later.
    pub lazy_refcounts: bool,
    /// Backing file name, stored as given (relative names are relative to the image's
    /// directory). The file must exist.
    pub backing_file: Option<String>,
    /// Backing file format; probed from the file when `None`.
    pub backing_format: Option<BackingFormat>,
    /// How to open the image once created.
    pub open: Qcow2Options,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            version: Version::V3,
            refcount_bits: 16,
            lazy_refcounts: false,
            backing_file: None,
            backing_format: None,
            open: Qcow2Options::default(),
        }
    }
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::InvalidConfig(format!("cannot create {}: {why}", path.display()))
}

/// Where a new image puts its metadata, in clusters (qemu-img's order: header, refcount
/// table, refcount blocks, L1 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Cluster size in bytes.
    cs: u64,
    /// Entries in the L1 table.
    l1_size: u64,
    /// Clusters of the refcount table.
    t: u64,
    /// Refcount blocks.
    k: u64,
    /// First cluster of the refcount table.
    table_at: u64,
    /// First refcount block.
    blocks_at: u64,
    /// First cluster of the L1 table.
    l1_at: u64,
    /// Clusters in use (all of the above).
    used: u64,
    /// Refcounts per refcount block.
    per_block: u64,
}

/// Writes a new, empty image at `path` (which must not exist).
pub fn create(path: &Path, size: u64, cluster_bits: u32, opts: &CreateOptions) -> Result<()> {
    let order = check_params(path, size, cluster_bits, opts)?;
    let v3 = opts.version == Version::V3;
    let extensions = new_extensions(path, opts, v3)?;
    let lay = layout(path, size, cluster_bits, order)?;
    let h = new_header(&lay, size, cluster_bits, order, opts);
    let hdr = build_header_cluster(&h, &extensions, opts.backing_file.as_deref())
        .map_err(|e| invalid(path, e))?;
    let (table, blocks) = refcount_structures(&lay, order);
    write_image(path, &lay, &hdr, table, &blocks)
}

/// Checks the requested geometry and options; returns the refcount order.
fn check_params(path: &Path, size: u64, cluster_bits: u32, opts: &CreateOptions) -> Result<u32> {
    validate_block_size(opts.open.block_size)?;
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(invalid(
            path,
            format!("cluster_bits {cluster_bits} outside 9..=21"),
        ));
    }
    let bs = u64::from(opts.open.block_size);
    if size == 0 || size % bs != 0 {
        return Err(invalid(
            path,
            format!("size {size} must be a non-zero multiple of {bs}"),
        ));
    }
    if !opts.refcount_bits.is_power_of_two() || opts.refcount_bits > 64 {
        return Err(invalid(
            path,
            format!(
                "refcount_bits {} must be a power of two up to 64",
                opts.refcount_bits
            ),
        ));
    }
    let order = opts.refcount_bits.trailing_zeros();
    if opts.version == Version::V2 && (order != 4 || opts.lazy_refcounts) {
        return Err(invalid(
            path,
            "version 2 images need refcount_bits=16 and no lazy_refcounts",
        ));
    }
    Ok(order)
}

/// The header extensions of a new image: the backing format (probed if not given) and,
/// for version 3, the feature name table.
fn new_extensions(path: &Path, opts: &CreateOptions, v3: bool) -> Result<Vec<HeaderExtension>> {
    let mut extensions = Vec::new();
    if let Some(name) = &opts.backing_file {
        if name.len() > MAX_BACKING_NAME as usize {
            return Err(invalid(path, "backing file name longer than 1023 bytes"));
        }
        let bpath = resolve(path, name)?;
        let fmt = match opts.backing_format {
            Some(f) => f,
            None => BackingFormat::probe(&bpath)?,
        };
        extensions.push(HeaderExtension {
            kind: ext::BACKING_FORMAT,
            data: fmt.name().as_bytes().to_vec(),
        });
    }
    if v3 {
        extensions.push(default_feature_table());
    }
    Ok(extensions)
}

/// Sizes the L1 table and the refcount structures, which must count themselves.
fn layout(path: &Path, size: u64, cluster_bits: u32, order: u32) -> Result<Layout> {
    let cs = 1u64 << cluster_bits;
    let l2_entries = cs / 8;
    let l1_size = size.div_ceil(cs * l2_entries);
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(invalid(
            path,
            format!("{size} bytes needs an L1 table larger than qemu's 32 MiB limit"),
        ));
    }
    let l1_clusters = (l1_size * 8).div_ceil(cs);
    let per_block = refcount_entries(cs, order);
    let per_table_cluster = cs / 8;
    // Header, refcount table (t clusters), refcount blocks (k), L1 table.
    let (t, k) = fixed_point(|t, k| {
        let k2 = (1 + t + k + l1_clusters).div_ceil(per_block);
        (k2.div_ceil(per_table_cluster), k2)
    });
    let table_at = 1u64;
    let blocks_at = table_at + t;
    let l1_at = blocks_at + k;
    Ok(Layout {
        cs,
        l1_size,
        t,
        k,
        table_at,
        blocks_at,
        l1_at,
        used: l1_at + l1_clusters,
        per_block,
    })
}

/// The fixed header fields of a new image laid out as `lay`.
fn new_header(
    lay: &Layout,
    size: u64,
    cluster_bits: u32,
    order: u32,
    opts: &CreateOptions,
) -> Header {
    let v3 = opts.version == Version::V3;
    Header {
        version: if v3 { 3 } else { 2 },
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits,
        size,
        crypt_method: 0,
        l1_size: lay.l1_size as u32,
        l1_table_offset: lay.l1_at * lay.cs,
        refcount_table_offset: lay.table_at * lay.cs,
        refcount_table_clusters: lay.t as u32,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: if opts.lazy_refcounts {
            compat::LAZY_REFCOUNTS
        } else {
            0
        },
        autoclear_features: 0,
        refcount_order: order,
        header_length: if v3 { V3_HEADER_LEN } else { 72 },
        compression_type: CompressionType::Zlib,
    }
}

/// The refcount table and blocks: every cluster of the metadata counted once.
fn refcount_structures(lay: &Layout, order: u32) -> (Vec<u64>, Vec<u8>) {
    let cs = lay.cs;
    let mut table = vec![0u64; (lay.t * (cs / 8)) as usize];
    let mut blocks = vec![0u8; (lay.k * cs) as usize];
    for j in 0..lay.k {
        table[j as usize] = (lay.blocks_at + j) * cs;
    }
    for c in 0..lay.used {
        let b = (c / lay.per_block) as usize;
        let block = &mut blocks[b * cs as usize..(b + 1) * cs as usize];
        refcount_set(block, order, c % lay.per_block, 1);
    }
    (table, blocks)
}

/// Creates the file and writes the metadata; a half-written file is removed again.
fn write_image(
    path: &Path,
    lay: &Layout,
    hdr: &[u8],
    table: Vec<u64>,
    blocks: &[u8],
) -> Result<()> {
    let cs = lay.cs;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
    let io = ImageFile::new(file, path.to_owned());
    let result = (|| {
        io.write_at(hdr, 0)?;
        io.write_at(&table_bytes(table), lay.table_at * cs)?;
        io.write_at(blocks, lay.blocks_at * cs)?;
        // The L1 table is all zeros: write it so the file covers it.
        io.write_at(&vec![0u8; (lay.l1_size * 8) as usize], lay.l1_at * cs)?;
        io.sync()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::header::ImageHeader;
    use super::*;

    #[test]
    fn layout_matches_qemu_for_small_images() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.qcow2");
        create(&p, 1 << 20, 16, &CreateOptions::default()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        // qemu-img: header, refcount table at 64 KiB, block at 128 KiB, L1 at 192 KiB,
        // file ends after the single L1 entry.
        assert_eq!(bytes.len(), 3 * 65536 + 8);
        let ih = ImageHeader::parse(&bytes).unwrap();
        assert_eq!(ih.header.refcount_table_offset, 65536);
        assert_eq!(ih.header.l1_table_offset, 3 * 65536);
        assert_eq!(ih.header.l1_size, 1);
        assert_eq!(ih.header.header_length, 112);
        assert_eq!(&bytes[65536..65544], &(2u64 * 65536).to_be_bytes());
        // Refcounts of clusters 0-3 are 1 (16-bit big endian).
        assert_eq!(
            &bytes[2 * 65536..2 * 65536 + 10],
            &[0, 1, 0, 1, 0, 1, 0, 1, 0, 0]
        );
        ih.validate(bytes.len() as u64).unwrap();
        // Never overwrites.
        assert!(matches!(
            create(&p, 1 << 20, 16, &CreateOptions::default()),
            Err(Error::Open { .. })
        ));
    }

    #[test]
    fn big_l1_needs_several_refcount_blocks() {
        // 512-byte clusters, 64-bit refcounts: 64 entries per block and per L2 table.
        // 1 GiB needs 32768 L2 tables -> 512 L1 clusters -> 1 + t + k + 512 clusters to
        // count -> k = 9 blocks, t = 1 table cluster.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.qcow2");
        let o = CreateOptions {
            refcount_bits: 64,
            ..CreateOptions::default()
        };
        create(&p, 1 << 30, 9, &o).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let ih = ImageHeader::parse(&bytes).unwrap();
        assert_eq!(ih.header.l1_size, 32768);
        assert_eq!(ih.header.refcount_order, 6);
        assert_eq!(ih.header.refcount_table_clusters, 1);
        assert_eq!(ih.header.l1_table_offset, (2 + 9) * 512);
    }

    #[test]
    fn rejects_bad_options() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.qcow2");
        let d = CreateOptions::default();
        assert!(create(&p, 1 << 20, 8, &d).is_err());
        assert!(create(&p, 1 << 20, 22, &d).is_err());
        assert!(create(&p, 1000, 16, &d).is_err());
        assert!(create(
            &p,
            1 << 20,
            16,
            &CreateOptions {
                refcount_bits: 3,
                ..d.clone()
            }
        )
        .is_err());
        assert!(create(
            &p,
            1 << 20,
            16,
            &CreateOptions {
                refcount_bits: 128,
                ..d.clone()
            }
        )
        .is_err());
        let v2 = CreateOptions {
            version: Version::V2,
            lazy_refcounts: true,
            ..d.clone()
        };
        assert!(create(&p, 1 << 20, 16, &v2).is_err());
        let missing = CreateOptions {
            backing_file: Some("nope.raw".into()),
            ..d
        };
        assert!(create(&p, 1 << 20, 16, &missing).is_err());
        assert!(!p.exists(), "failed creates leave nothing behind");
    }

    #[test]
    fn layout_counts_its_own_refcount_blocks() {
        let p = Path::new("x.qcow2");
        // 1 GiB, 64 KiB clusters, 16-bit refcounts: one L2 table maps 8192 clusters
        // (512 MiB), so L1 has 2 entries in one cluster; one refcount block (32768
        // entries) and one refcount table cluster suffice (qemu-img: L1 at 0x30000).
        let lay = layout(p, 1 << 30, 16, 4).unwrap();
        assert_eq!((lay.l1_size, lay.t, lay.k), (2, 1, 1));
        assert_eq!(
            (lay.table_at, lay.blocks_at, lay.l1_at, lay.used),
            (1, 2, 3, 4)
        );
        assert_eq!(lay.per_block, 32768);
        // 512-byte clusters with 1-bit refcounts: 4096 refcounts per block, and the L1
        // table of 2 TiB / (512 * 64) = 67 108 864 entries (512 MiB) exceeds qemu's limit.
        assert!(layout(p, 2 << 40, 9, 0).is_err());
        let (table, blocks) = refcount_structures(&lay, 4);
        assert_eq!(table.len(), 8192);
        assert_eq!(table[0], 2 * 65536);
        assert_eq!(&blocks[..10], &[0, 1, 0, 1, 0, 1, 0, 1, 0, 0]);
    }

    #[test]
    fn parameters_are_checked_before_anything_is_written() {
        let p = Path::new("/nonexistent/x.qcow2");
        let opts = CreateOptions::default();
        assert_eq!(check_params(p, 1 << 20, 16, &opts).unwrap(), 4);
        assert!(check_params(p, 1 << 20, 8, &opts).is_err());
        assert!(check_params(p, 1 << 20, 22, &opts).is_err());
        assert!(check_params(p, 1000, 16, &opts).is_err());
        let bits = |refcount_bits| CreateOptions {
            refcount_bits,
            ..CreateOptions::default()
        };
        assert_eq!(check_params(p, 1 << 20, 16, &bits(64)).unwrap(), 6);
        assert!(check_params(p, 1 << 20, 16, &bits(12)).is_err());
        let v2 = CreateOptions {
            version: Version::V2,
            refcount_bits: 8,
            ..CreateOptions::default()
        };
        assert!(check_params(p, 1 << 20, 16, &v2).is_err());
    }
}
