//! The mutating configfs operations, behind a trait so tests can emulate the kernel.
//!
//! configfs differs from a plain directory tree: `mkdir` of a group makes the kernel
//! create its attribute files and default sub-groups, an attribute takes its whole
//! value from a single `write(2)`, some files are read-only or write-only, and
//! `rmdir` removes the default contents with the group. [`SysBackend`] performs the
//! plain system calls against the real configfs; the `test-utils` feature's
//! `FakeKernel` reproduces the kernel side over an ordinary directory.
//! Directory listings and symlink resolution use `std::fs` directly in both cases.

use std::fmt::Debug;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Mutating and reading operations on configfs entries.
pub trait Backend: Debug + Send + Sync {
    /// Creates a configfs group (`mkdir(2)`).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes a configfs group (`rmdir(2)`).
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Reads an attribute.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes an attribute with exactly one `write(2)` of the whole value.
    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()>;
    /// Creates a configfs link (`symlink(2)`): `link` will point at `target`.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Removes a configfs link.
    fn unlink(&self, link: &Path) -> io::Result<()>;
}

/// The real kernel: plain system calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysBackend;

impl Backend for SysBackend {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        let bytes = fs::read(path)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()> {
        // No O_CREAT: a missing attribute is an error, as in configfs.
        let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
        // configfs parses the buffer of one write(2) call; a short write would hand the
        // kernel half a value, so it is an error rather than something to retry.
        let n = f.write(value)?;
        if n != value.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes accepted", value.len()),
            ));
        }
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn unlink(&self, link: &Path) -> io::Result<()> {
        fs::remove_file(link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_does_not_create_missing_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("attr");
        let e = SysBackend.write(&p, b"1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        fs::write(&p, "old value").unwrap();
        SysBackend.write(&p, b"1").unwrap();
        assert_eq!(SysBackend.read(&p).unwrap(), "1");
    }
}
