//! Positioned I/O on the image file, with the path and offset attached to every error.
//!
//! Reads are copied out of a read-only mapping of the file where one covers them (like a
//! file LUN's, `crate::mmap`): no system call per read. The engine only ever grows its
//! image, so the mapping is replaced by a longer one as the file grows, at most once per
//! quarter of growth; reads past it, and all reads of images opened without mapped reads,
//! use `preadv`.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::uio::{preadv, pwritev};
use smallvec::SmallVec;

use crate::mmap::{MappedRead, MappedReads, MAX_MAPPED};
use crate::{Error, Result};

/// At most this many iovecs go into one `preadv`/`pwritev` (Linux's `IOV_MAX` is 1024).
const MAX_IOVS: usize = 512;

/// The image file (or a raw backing file) and its path, for error context.
#[derive(Debug)]
pub struct ImageFile {
    file: File,
    path: PathBuf,
    /// Reads from a mapping of the file, when enabled ([`ImageFile::mapped`]).
    map: MappedReads,
    /// The file's length as far as this process knows: its length when mapped, raised by
    /// every write past it (nothing here shrinks the file; another process that does
    /// makes a mapped read fault, which sets it back). 0 while reads are not mapped.
    known_len: AtomicU64,
    /// The longest mapping asked of the kernel so far (whether or not it mapped it).
    map_tried: AtomicU64,
}

impl ImageFile {
    /// Wraps an open file; reads use `preadv`.
    pub fn new(file: File, path: PathBuf) -> Self {
        ImageFile {
            map: MappedReads::new(&file, 0, false),
            file,
            path,
            known_len: AtomicU64::new(0),
            map_tried: AtomicU64::new(0),
        }
    }

    /// The same file with its reads served from a mapping of it, if `enabled` (and the
    /// kernel maps it).
    pub fn mapped(self, enabled: bool) -> Self {
        if !enabled {
            return self;
        }
        let len = self.file.metadata().map_or(0, |m| m.len());
        ImageFile {
            map: MappedReads::new(&self.file, len.min(MAX_MAPPED), true),
            known_len: AtomicU64::new(len),
            map_tried: AtomicU64::new(len.min(MAX_MAPPED)),
            ..self
        }
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str, offset: u64) -> impl FnOnce(Errno) -> Error + '_ {
        move |e| Error::Io {
            op,
            path: self.path.clone(),
            offset,
            source: e.into(),
        }
    }

    /// Current file length.
    pub fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|source| Error::Io {
                op: "stat",
                path: self.path.clone(),
                offset: 0,
                source,
            })
    }

    /// Reads into `bufs` from `offset`; whatever lies past the end of the file reads as
    /// zeros (like a sparse hole), which is how qemu treats clusters beyond EOF.
    pub fn read_vec(&self, bufs: &mut [&mut [u8]], offset: u64) -> Result<()> {
        if self.read_mapped(bufs, offset)? {
            return Ok(());
        }
        let mut pos = offset;
        let mut first = 0usize;
        let mut skip = 0usize; // bytes already filled in bufs[first]
        while first < bufs.len() {
            let end = (first + MAX_IOVS).min(bufs.len());
            let n = {
                let mut iov: SmallVec<[IoSliceMut<'_>; 4]> = SmallVec::with_capacity(end - first);
                for (i, b) in bufs[first..end].iter_mut().enumerate() {
                    let s: &mut [u8] = if i == 0 { &mut b[skip..] } else { b };
                    iov.push(IoSliceMut::new(s));
                }
                let off =
                    i64::try_from(pos).map_err(|_| self.err("read", pos)(Errno::EOVERFLOW))?;
                loop {
                    match preadv(&self.file, &mut iov, off) {
                        Err(Errno::EINTR) => continue,
                        r => break r.map_err(self.err("read", pos))?,
                    }
                }
            };
            if n == 0 {
                bufs[first][skip..].fill(0);
                for b in bufs[first + 1..].iter_mut() {
                    b.fill(0);
                }
                return Ok(());
            }
            pos += n as u64;
            let mut left = n;
            while left > 0 && first < bufs.len() {
                let avail = bufs[first].len() - skip;
                if left >= avail {
                    left -= avail;
                    first += 1;
                    skip = 0;
                } else {
                    skip += left;
                    left = 0;
                }
            }
            while first < bufs.len() && bufs[first].len() == skip {
                first += 1;
                skip = 0;
            }
        }
        Ok(())
    }

    /// Copies the range from the mapping when one covers it; `false` when the caller must
    /// use `preadv`. Maps a longer prefix first when the file has grown by a quarter (at
    /// least 1 MiB) past the last mapping tried and the range lies in the growth.
    fn read_mapped(&self, bufs: &mut [&mut [u8]], offset: u64) -> Result<bool> {
        let known = self.known_len.load(Ordering::Acquire);
        let total = bufs.iter().map(|b| b.len() as u64).sum::<u64>();
        let Some(end) = offset.checked_add(total).filter(|&e| e <= known) else {
            return Ok(false);
        };
        if end > self.map.mapped_len() && !self.grow_mapping(known, end) {
            return Ok(false);
        }
        let mut iov: SmallVec<[IoSliceMut<'_>; 4]> =
            bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        match self.map.read(&mut iov, offset) {
            MappedRead::Copied => Ok(true),
            MappedRead::Unmapped => Ok(false),
            MappedRead::Faulted => {
                // Something else shrank the file: start again from its real length, so
                // that no mapping beyond it is made again.
                let len = self.file.metadata().map_or(0, |m| m.len());
                self.known_len.store(len, Ordering::Release);
                self.map_tried.store(0, Ordering::Release);
                Err(self.err("read", offset)(Errno::EIO))
            }
        }
    }

    /// Maps the file as far as it goes (up to [`MAX_MAPPED`]) when that reaches `end`
    /// and is a quarter (at least 1 MiB) more than the last length tried, so that a file
    /// the kernel will not map costs one attempt per quarter of growth, not one per read.
    /// Whether the mapping now reaches `end`.
    fn grow_mapping(&self, known: u64, end: u64) -> bool {
        let tried = self.map_tried.load(Ordering::Acquire);
        let want = known.min(MAX_MAPPED);
        if end > want || want.saturating_sub(tried) < (tried / 4).max(1 << 20) {
            return false;
        }
        self.map_tried.fetch_max(want, Ordering::AcqRel);
        // Never past the real end of the file, should something else have shrunk it.
        let real = self.file.metadata().map_or(0, |m| m.len());
        self.map.grow(&self.file, want.min(real));
        end <= self.map.mapped_len()
    }

    /// Whether reads are served from a mapping right now.
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        self.map.is_mapped()
    }

    /// Reads `buf` from `offset` (zeros past the end of the file).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_vec(&mut [buf], offset)
    }

    /// Writes all of `bufs` at `offset`.
    pub fn write_vec(&self, bufs: &[&[u8]], offset: u64) -> Result<()> {
        let mut pos = offset;
        let mut first = 0usize;
        let mut skip = 0usize;
        while first < bufs.len() {
            let end = (first + MAX_IOVS).min(bufs.len());
            let iov: SmallVec<[IoSlice<'_>; 4]> = bufs[first..end]
                .iter()
                .enumerate()
                .map(|(i, b)| IoSlice::new(if i == 0 { &b[skip..] } else { b }))
                .collect();
            let off = i64::try_from(pos).map_err(|_| self.err("write", pos)(Errno::EOVERFLOW))?;
            let n = loop {
                match pwritev(&self.file, &iov, off) {
                    Err(Errno::EINTR) => continue,
                    r => break r.map_err(self.err("write", pos))?,
                }
            };
            if n == 0 && iov.iter().any(|s| !s.is_empty()) {
                return Err(Error::Io {
                    op: "write",
                    path: self.path.clone(),
                    offset: pos,
                    source: std::io::ErrorKind::WriteZero.into(),
                });
            }
            pos += n as u64;
            if self.map.enabled() {
                self.known_len.fetch_max(pos, Ordering::AcqRel);
            }
            let mut left = n;
            while first < bufs.len() {
                let avail = bufs[first].len() - skip;
                if left >= avail {
                    left -= avail;
                    first += 1;
                    skip = 0;
                    if left == 0 {
                        // Skip empty slices that follow.
                        while first < bufs.len() && bufs[first].is_empty() {
                            first += 1;
                        }
                        break;
                    }
                } else {
                    skip += left;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Writes `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_vec(&[buf], offset)
    }

    /// `fdatasync`: every completed write (and the file size) is durable.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|source| Error::Io {
            op: "flush",
            path: self.path.clone(),
            offset: 0,
            source,
        })
    }

    /// Reads a big-endian `u64` table of `n` entries at `offset`.
    pub fn read_table(&self, offset: u64, n: usize) -> Result<Vec<u64>> {
        let mut bytes = vec![0u8; n * 8];
        self.read_at(&mut bytes, offset)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }
}

/// Serialises `u64`s big endian.
pub fn table_bytes(entries: impl IntoIterator<Item = u64>) -> Vec<u8> {
    entries.into_iter().flat_map(u64::to_be_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_rw(p: &Path, mapped: bool) -> ImageFile {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap();
        ImageFile::new(f, p.to_owned()).mapped(mapped)
    }

    #[test]
    fn reads_past_eof_as_zeros_and_splits_iovecs() {
        for mapped in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("f");
            std::fs::write(&p, [1u8, 2, 3, 4, 5]).unwrap();
            let f = open_rw(&p, mapped);
            assert_eq!(f.map.is_mapped(), mapped);
            let mut a = [9u8; 2];
            let mut b = [9u8; 0];
            let mut c = [9u8; 6];
            f.read_vec(&mut [&mut a, &mut b, &mut c], 1).unwrap();
            assert_eq!(a, [2, 3]);
            assert_eq!(c, [4, 5, 0, 0, 0, 0]);
            f.write_vec(&[&[7, 7], &[], &[8]], 10).unwrap();
            assert_eq!(f.len().unwrap(), 13);
            let mut all = [0u8; 13];
            f.read_at(&mut all, 0).unwrap();
            assert_eq!(all, [1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 7, 7, 8]);
            assert_eq!(f.read_table(10, 1).unwrap(), vec![0x0707_0800_0000_0000]);
        }
        assert_eq!(table_bytes([1u64]), vec![0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn the_mapping_follows_the_file_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 4 << 20]).unwrap();
        let f = open_rw(&p, true);
        assert_eq!(f.map.mapped_len(), 4 << 20);
        // Less than a quarter of growth (and under 1 MiB): read with preadv, not remapped.
        f.write_at(&[2u8; 4096], 4 << 20).unwrap();
        let mut buf = [0u8; 4096];
        f.read_at(&mut buf, 4 << 20).unwrap();
        assert_eq!(buf, [2u8; 4096]);
        assert_eq!(f.map.mapped_len(), 4 << 20);
        // A quarter more: the next read there maps the whole file.
        f.write_at(&vec![3u8; 1 << 20], 5 << 20).unwrap();
        f.read_at(&mut buf, (6 << 20) - 4096).unwrap();
        assert_eq!(buf, [3u8; 4096]);
        assert_eq!(f.map.mapped_len(), 6 << 20);
        // What was written through the file descriptor reads back through the mapping.
        f.write_at(&[4u8; 4096], 8192).unwrap();
        f.read_at(&mut buf, 8192).unwrap();
        assert_eq!(buf, [4u8; 4096]);
    }

    #[test]
    fn a_file_truncated_underneath_fails_the_read_and_is_mapped_only_as_far_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![5u8; 2 << 20]).unwrap();
        let f = open_rw(&p, true);
        // Another process cuts the file in half.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let mut buf = [9u8; 4096];
        let e = f.read_at(&mut buf, 3 << 19).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Medium, "{e}");
        assert!(!f.map.is_mapped(), "a faulted mapping is retired");
        // From then on the file is mapped only as far as it really goes, and what is
        // gone reads through preadv, as zeros.
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [5u8; 4096]);
        assert_eq!(f.map.mapped_len(), 1 << 20);
        f.read_at(&mut buf, 3 << 19).unwrap();
        assert_eq!(buf, [0u8; 4096]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Mapped and plain reads return the same bytes for any sequence of writes
        /// (growing the file) and reads (inside, across and past its end).
        #[test]
        fn mapped_reads_match_preadv(
            ops in proptest::collection::vec(
                (proptest::bool::ANY, 0u64..(3 << 20), 1usize..70_000), 1..24),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (pm, pp) = (dir.path().join("m"), dir.path().join("p"));
            let seed: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
            std::fs::write(&pm, &seed).unwrap();
            std::fs::write(&pp, &seed).unwrap();
            let (m, plain) = (open_rw(&pm, true), open_rw(&pp, false));
            for (i, (write, off, len)) in ops.into_iter().enumerate() {
                if write {
                    let data = vec![i as u8; len];
                    m.write_at(&data, off).unwrap();
                    plain.write_at(&data, off).unwrap();
                } else {
                    let (mut a, mut b) = (vec![1u8; len], vec![2u8; len]);
                    let (a1, a2) = a.split_at_mut(len / 3);
                    m.read_vec(&mut [a1, a2], off).unwrap();
                    plain.read_at(&mut b, off).unwrap();
                    proptest::prop_assert_eq!(a, b);
                }
            }
            // The seed file was mapped when opened, and a mapping is never dropped here.
            proptest::prop_assert!(m.is_mapped() && !plain.is_mapped());
        }
    }
}
