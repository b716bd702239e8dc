//! Backing files: where unallocated clusters of an overlay read from (qcow2.txt "Cluster
//! mapping": "If a cluster is unallocated, read requests shall read the data from the
//! backing file"). A backing file is raw or qcow2 (itself possibly with a backing file),
//! opened read-only; bytes past its end read as zeros.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::bufs::{Bufs, Run};
use super::io::ImageFile;
use super::{fill_zero, Qcow2Backstore, Qcow2Options};
use crate::{Error, Result};

/// How deep a backing chain may be before we assume a loop.
pub const MAX_DEPTH: u32 = 16;

/// Format of a backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingFormat {
    /// A raw image.
    Raw,
    /// A qcow2 image.
    Qcow2,
}

impl BackingFormat {
    /// The name qemu uses in the backing format header extension.
    pub fn name(self) -> &'static str {
        match self {
            BackingFormat::Raw => "raw",
            BackingFormat::Qcow2 => "qcow2",
        }
    }

    /// Parses a backing format name; `None` for formats we cannot read.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "raw" => Some(BackingFormat::Raw),
            "qcow2" => Some(BackingFormat::Qcow2),
            _ => None,
        }
    }

    /// Guesses the format from the first bytes of the file, as qemu does without a
    /// backing format extension.
    pub fn probe(path: &Path) -> Result<Self> {
        let io = ImageFile::new(open_regular(path, false, "backing file ")?, path.to_owned());
        let mut magic = [0u8; 4];
        io.read_at(&mut magic, 0)?;
        Ok(if u32::from_be_bytes(magic) == super::header::MAGIC {
            BackingFormat::Qcow2
        } else {
            BackingFormat::Raw
        })
    }
}

/// Opens `path` (read-write if `write`), refusing anything but a regular file: a FIFO or
/// device named by a hostile image (or configuration) must not hang or surprise us, and
/// `O_NONBLOCK` keeps the open itself from blocking on a FIFO. `what` prefixes the error
/// ("backing file ").
pub(super) fn open_regular(path: &Path, write: bool, what: &str) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
    let meta = f.metadata().map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::InvalidConfig(format!(
            "{what}{} is not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// An open backing file.
#[derive(Debug)]
pub enum Backing {
    /// A raw file of `size` bytes.
    Raw {
        /// The file.
        io: ImageFile,
        /// Its size.
        size: u64,
    },
    /// A qcow2 image, opened read-only.
    Qcow2(Box<Qcow2Backstore>),
}

/// Resolves a backing file name as qemu does: relative names are relative to the directory
/// of the overlay.
pub fn resolve(overlay: &Path, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.starts_with("json:") || name.contains("://") {
        return Err(Error::InvalidConfig(format!(
            "{}: backing file {name:?} is not a local file name",
            overlay.display()
        )));
    }
    let p = Path::new(name);
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        overlay.parent().unwrap_or(Path::new(".")).join(p)
    })
}

impl Backing {
    /// Opens the backing file `name` of the overlay at `overlay`, with mapped reads and
    /// direct I/O when the overlay (opened with `opts`) has them.
    pub fn open(
        overlay: &Path,
        name: &str,
        format: Option<&str>,
        depth: u32,
        opts: &Qcow2Options,
    ) -> Result<Self> {
        if depth >= MAX_DEPTH {
            return Err(Error::InvalidConfig(format!(
                "{}: backing chain deeper than {MAX_DEPTH} (a loop?)",
                overlay.display()
            )));
        }
        let path = resolve(overlay, name)?;
        let fmt = match format {
            Some(f) => BackingFormat::from_name(f).ok_or_else(|| Error::Corrupt {
                path: overlay.to_owned(),
                reason: format!("backing file format {f:?} is not supported (only raw and qcow2)"),
            })?,
            None => BackingFormat::probe(&path)?,
        };
        match fmt {
            BackingFormat::Raw => {
                let io = ImageFile::new(open_regular(&path, false, "backing file ")?, path)
                    .mapped(opts.mmap_reads)
                    .direct(opts.direct_io, false)?;
                let size = io.len()?;
                Ok(Backing::Raw { io, size })
            }
            BackingFormat::Qcow2 => {
                let opts = Qcow2Options {
                    read_only: true,
                    mmap_reads: opts.mmap_reads,
                    direct_io: opts.direct_io,
                    ..Qcow2Options::default()
                };
                Ok(Backing::Qcow2(Box::new(Qcow2Backstore::open_inner(
                    &path,
                    &opts,
                    depth + 1,
                )?)))
            }
        }
    }

    /// Size of the backing image in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Backing::Raw { size, .. } => *size,
            Backing::Qcow2(q) => q.virtual_size(),
        }
    }

    /// Reads guest bytes at `offset` into `bufs`; zeros past the end of the backing image.
    pub fn read(&self, bufs: Run<&mut [u8]>, offset: u64) -> Result<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let size = self.size();
        let inside = size.saturating_sub(offset).min(total);
        let mut q = Bufs::new(bufs);
        let mut head = q.take(inside as usize);
        if inside > 0 {
            match self {
                Backing::Raw { io, .. } => io.read_vec(&mut head, offset)?,
                Backing::Qcow2(b) => b.read_guest(Bufs::new(head), offset, inside)?,
            }
        }
        fill_zero(&mut q.rest());
        Ok(())
    }
}
