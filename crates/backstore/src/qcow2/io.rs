//! Positioned I/O on the image file, with the path and offset attached to every error.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::uio::{preadv, pwritev};
use smallvec::SmallVec;

use crate::{Error, Result};

/// At most this many iovecs go into one `preadv`/`pwritev` (Linux's `IOV_MAX` is 1024).
const MAX_IOVS: usize = 512;

/// The image file (or a raw backing file) and its path, for error context.
#[derive(Debug)]
pub struct ImageFile {
    file: File,
    path: PathBuf,
}

impl ImageFile {
    /// Wraps an open file.
    pub fn new(file: File, path: PathBuf) -> Self {
        ImageFile { file, path }
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

    #[test]
    fn reads_past_eof_as_zeros_and_splits_iovecs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [1u8, 2, 3, 4, 5]).unwrap();
        let f = ImageFile::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap(),
            p.clone(),
        );
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
        assert_eq!(table_bytes([1u64]), vec![0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
