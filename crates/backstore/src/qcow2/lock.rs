//! Image locking compatible with qemu's file driver, so that qemu (and `qemu-img`) refuse
//! to write an image rustio has open for writing, and rustio refuses an image qemu is
//! writing.
//!
//! qemu takes open-file-description (OFD) read locks on single bytes of the image: byte
//! `100 + p` for each permission `p` it holds and byte `200 + p` for each permission it
//! does not share with other users. Permissions: 0 consistent read, 1 write, 2 write
//! unchanged, 3 resize. Before locking it tests, for each permission it wants, that
//! nobody holds `200 + p`, and for each permission it does not share, that nobody holds
//! `100 + p`. (Observed with qemu 7.2: a writer holds 100, 101, 103, 201 and 203.)

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use crate::{Error, Result};

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;
const NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];

fn flock(kind: libc::c_int, byte: i64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    }
}

/// Whether another open file description holds a lock on `byte`. `None` if the file
/// system does not support OFD locks.
fn held_elsewhere(file: &File, byte: i64) -> Option<bool> {
    let mut fl = flock(libc::F_WRLCK, byte);
    match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut fl)) {
        Ok(_) => Some(fl.l_type != libc::F_UNLCK as libc::c_short),
        Err(_) => None,
    }
}

/// Takes qemu's locks for a reader (`writable == false`: consistent read, sharing
/// everything) or a writer (consistent read, write and resize, sharing neither write nor
/// resize). The locks go away when the file is closed.
pub fn lock_image(file: &File, path: &Path, writable: bool) -> Result<()> {
    let (held, unshared): (&[i64], &[i64]) = if writable {
        (&[0, 1, 3], &[1, 3])
    } else {
        (&[0], &[])
    };
    for &p in held {
        match held_elsewhere(file, SHARED_BASE + p) {
            None => return Ok(()), // no OFD locks here (qemu then warns and goes on too)
            Some(true) => {
                return Err(Error::InvalidConfig(format!(
                    "{} is in use by another process (qemu?) that does not share the {} permission",
                    path.display(),
                    NAMES[p as usize]
                )))
            }
            Some(false) => {}
        }
    }
    for &p in unshared {
        if held_elsewhere(file, PERM_BASE + p) == Some(true) {
            return Err(Error::InvalidConfig(format!(
                "{} is in use by another process (qemu?) holding the {} permission",
                path.display(),
                NAMES[p as usize]
            )));
        }
    }
    let bytes = held
        .iter()
        .map(|p| PERM_BASE + p)
        .chain(unshared.iter().map(|p| SHARED_BASE + p));
    for byte in bytes {
        let fl = flock(libc::F_RDLCK, byte);
        match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
            Ok(_) => {}
            Err(Errno::EAGAIN) | Err(Errno::EACCES) => {
                return Err(Error::InvalidConfig(format!(
                    "{} is in use by another process (qemu?): lock byte {byte} is taken",
                    path.display()
                )))
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_exclude_each_other_but_readers_coexist() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        std::fs::write(&p, [0u8; 512]).unwrap();
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap()
        };
        let w1 = open();
        lock_image(&w1, &p, true).unwrap();
        let r = open();
        lock_image(&r, &p, false).unwrap();
        let w2 = open();
        let e = lock_image(&w2, &p, true).unwrap_err();
        assert!(e.to_string().contains("in use by another process"), "{e}");
        drop(w1);
        lock_image(&w2, &p, true).unwrap();
    }
}
