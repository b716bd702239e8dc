//! UIO devices of TCMU: names, discovery in sysfs, the device node and its mapping.
//!
//! The kernel registers one UIO device per enabled `user` backstore, named
//! `tcm-user/<hba_id>/<device_name>/<dev_config>` (`tcmu_update_uio_info()`), with a
//! single memory map (`maps/map0`) holding mailbox, command ring and data area. Reading 4
//! bytes from `/dev/uioN` waits for the kernel's "new commands" event; writing 4 bytes
//! asks the kernel to reap completions (`tcmu_irqcontrol()`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::{io_err, Error, Result};
use crate::mmap::UioMapping;

/// Prefix of every TCMU UIO device name.
pub const NAME_PREFIX: &str = "tcm-user";

/// A parsed TCMU UIO device name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UioName {
    /// HBA index (`user_<hba>` in configfs).
    pub hba: u32,
    /// LIO device (storage object) name.
    pub device: String,
    /// Everything after the device name: `<subtype>/<handler config>`, as written to
    /// `control` with `dev_config=`. Empty when no `dev_config` was given.
    pub dev_config: String,
}

impl UioName {
    /// Parses `tcm-user/<hba>/<device>[/<dev_config>]` (trailing newline allowed).
    pub fn parse(s: &str) -> Result<UioName> {
        let bad = || Error::BadUioName(s.to_owned());
        let s = s.trim_end_matches('\n');
        let mut parts = s.splitn(4, '/');
        if parts.next() != Some(NAME_PREFIX) {
            return Err(bad());
        }
        let hba = parts
            .next()
            .and_then(|h| h.parse::<u32>().ok())
            .ok_or_else(bad)?;
        let device = parts.next().filter(|d| !d.is_empty()).ok_or_else(bad)?;
        let dev_config = parts.next().unwrap_or("");
        Ok(UioName {
            hba,
            device: device.to_owned(),
            dev_config: dev_config.to_owned(),
        })
    }

    /// The handler subtype: `dev_config` up to the first `/` (libtcmu's `find_handler`).
    pub fn subtype(&self) -> &str {
        self.dev_config
            .split_once('/')
            .map_or(self.dev_config.as_str(), |(s, _)| s)
    }

    /// The handler's own configuration: `dev_config` after the first `/` (for the `file`
    /// handler, the path — `file//var/lib/x.img` gives `/var/lib/x.img`).
    pub fn handler_config(&self) -> &str {
        self.dev_config.split_once('/').map_or("", |(_, c)| c)
    }

    /// The configfs HBA directory name, `user_<hba>`.
    pub fn hba_dir(&self) -> String {
        format!("user_{}", self.hba)
    }
}

impl std::fmt::Display for UioName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", NAME_PREFIX, self.hba, self.device)?;
        if !self.dev_config.is_empty() {
            write!(f, "/{}", self.dev_config)?;
        }
        Ok(())
    }
}

/// Where the UIO class lives in sysfs and where device nodes are (overridable for tests).
#[derive(Debug, Clone)]
pub struct UioPaths {
    /// `/sys/class/uio`.
    pub class_dir: PathBuf,
    /// `/dev`.
    pub dev_dir: PathBuf,
}

impl Default for UioPaths {
    fn default() -> Self {
        UioPaths {
            class_dir: PathBuf::from("/sys/class/uio"),
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

impl UioPaths {
    /// Lists the TCMU UIO devices present, as `(minor, name)`, sorted by minor. Non-TCMU
    /// UIO devices and unreadable entries are skipped.
    pub fn discover(&self) -> Result<Vec<(u32, UioName)>> {
        let rd = match std::fs::read_dir(&self.class_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read directory", &self.class_dir)(e)),
        };
        let mut found = Vec::new();
        for entry in rd.flatten() {
            let file_name = entry.file_name();
            let Some(minor) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix("uio"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            match self.name(minor) {
                Ok(name) => found.push((minor, name)),
                Err(Error::BadUioName(_)) => {}
                Err(e) => tracing::warn!(minor, error = %e, "skipping UIO device"),
            }
        }
        found.sort_by_key(|(m, _)| *m);
        Ok(found)
    }

    /// Reads and parses `uio<minor>/name`.
    pub fn name(&self, minor: u32) -> Result<UioName> {
        let path = self.class_dir.join(format!("uio{minor}/name"));
        let s = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        UioName::parse(&s)
    }

    /// Reads `uio<minor>/maps/map0/size` (the kernel prints it as `0x%lx`).
    pub fn map_size(&self, minor: u32) -> Result<usize> {
        let path = self.class_dir.join(format!("uio{minor}/maps/map0/size"));
        let s = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        parse_size(&s)
            .and_then(|v| usize::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| Error::Parse {
                path,
                reason: format!("map size {:?} is not a positive number", s.trim()),
            })
    }

    /// The device node `/dev/uio<minor>`.
    pub fn node(&self, minor: u32) -> PathBuf {
        self.dev_dir.join(format!("uio{minor}"))
    }
}

/// Parses a number the kernel wrote (`0x…` hex or decimal, surrounded by whitespace)
/// with rustio's one size parser, [`rustio_config::parse_size`].
pub fn parse_size(s: &str) -> Option<u64> {
    rustio_config::parse_size(s).ok()
}

/// An open `/dev/uioN` with its shared mapping, and the eventfd that interrupts a wait
/// on it.
#[derive(Debug)]
pub struct UioDevice {
    path: PathBuf,
    file: File,
    mapping: Arc<UioMapping>,
    waker: Waker,
}

impl UioDevice {
    /// Opens the node (non-blocking, close-on-exec) and maps `map_size` bytes of map 0.
    /// The kernel allows one opener at a time (`EBUSY` otherwise).
    ///
    /// The first [`UioDevice::wait`] returns at once: entries already on the ring (left by
    /// a previous runner, or queued before the open) raised their events before it, and
    /// the node does not report those again.
    pub fn open(path: &Path, map_size: usize) -> Result<UioDevice> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err("open", path))?;
        let mapping = UioMapping::map(file.as_fd(), map_size).map_err(|source| Error::Mmap {
            path: path.to_owned(),
            len: map_size,
            source,
        })?;
        let waker = Waker::new().map_err(io_err("create the poller's eventfd for", path))?;
        waker.wake();
        Ok(UioDevice {
            path: path.to_owned(),
            file,
            mapping: Arc::new(mapping),
            waker,
        })
    }

    /// The shared mapping.
    pub fn mapping(&self) -> &Arc<UioMapping> {
        &self.mapping
    }

    /// The device node path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the kernel's event or for [`UioDevice::wake`], and clears what arrived.
    /// Returns whether the kernel's event arrived (spurious wake-ups are harmless: the
    /// caller reads the ring anyway).
    ///
    /// No timeout: a `poll` with one reads the clock on every call and arms a timer
    /// whenever it sleeps — under QEMU TCG, where the clock source is the emulated HPET,
    /// ≈ 6 µs of every 4 KiB I/O (perf, bench/README.md) — and an idle device would wake
    /// every interval for nothing. Whoever stops the waiting thread wakes it.
    pub fn wait(&self) -> Result<bool> {
        let (uio, woken) = wait_readable(self.file.as_fd(), &self.waker)
            .map_err(|e| io_err("poll", &self.path)(e.into()))?;
        if woken {
            self.waker.clear();
        }
        if !uio {
            return Ok(false);
        }
        let mut buf = [0u8; 4];
        match (&self.file).read(&mut buf) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(io_err("read", &self.path)(e)),
        }
    }

    /// Wakes the thread blocked in [`UioDevice::wait`], or makes the next wait return at
    /// once: to stop it, or to have it read the ring without a kernel event.
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Tells the kernel that completions are ready (writes 4 bytes to the node).
    pub fn kick(&self) -> Result<()> {
        loop {
            match (&self.file).write(&0u32.to_ne_bytes()) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("write", &self.path)(e)),
            }
        }
    }
}

/// Wakes a thread blocked in [`UioDevice::wait`] (an eventfd).
#[derive(Debug)]
struct Waker(EventFd);

impl Waker {
    /// A waker, not yet woken.
    fn new() -> std::io::Result<Waker> {
        EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map(Waker)
            .map_err(std::io::Error::from)
    }

    /// Wakes the waiting thread, or the next wait if none is waiting.
    fn wake(&self) {
        // Adds 1 to the counter; fails (EAGAIN) only within 2^64 of overflow, which
        // unanswered wake-ups cannot reach.
        let _ = self.0.write(1);
    }

    /// Takes the wake-up (a no-op when there is none).
    fn clear(&self) {
        let _ = self.0.read();
    }
}

/// Blocks until `fd` or `waker` is readable; returns which of the two are. EINTR counts
/// as neither (the caller loops).
fn wait_readable(fd: BorrowedFd<'_>, waker: &Waker) -> nix::Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(fd, PollFlags::POLLIN),
        PollFd::new(waker.0.as_fd(), PollFlags::POLLIN),
    ];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok((false, false)),
        Err(e) => return Err(e),
    }
    let ready = |f: &PollFd<'_>| {
        f.revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP)
        })
    };
    Ok((ready(&fds[0]), ready(&fds[1])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A pipe stands in for the UIO node: readable when it has bytes, like the node when
    /// the kernel's event count moved.
    #[test]
    fn waits_for_the_device_or_the_waker_without_a_timeout() {
        use std::os::fd::{AsFd, AsRawFd};
        let (r, w) = nix::unistd::pipe().unwrap();
        let waker = Waker::new().unwrap();
        waker.wake();
        waker.wake();
        assert_eq!(wait_readable(r.as_fd(), &waker), Ok((false, true)));
        waker.clear();
        nix::unistd::write(&w, &[1]).unwrap();
        assert_eq!(wait_readable(r.as_fd(), &waker), Ok((true, false)));
        nix::unistd::read(r.as_raw_fd(), &mut [0u8; 1]).unwrap();
        // A thread blocked with nothing to read is woken from another one.
        let waker = Arc::new(waker);
        let (tx, rx) = std::sync::mpsc::channel();
        let w2 = waker.clone();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(wait_readable(r.as_fd(), &w2));
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "returned with nothing to read");
        waker.wake();
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(got, Ok(Ok((false, true))));
        waiter.join().unwrap();
    }

    #[test]
    fn parses_kernel_names() {
        let n = UioName::parse("tcm-user/1/disk0/file//var/lib/d.img\n").unwrap();
        assert_eq!(n.hba, 1);
        assert_eq!(n.device, "disk0");
        assert_eq!(n.dev_config, "file//var/lib/d.img");
        assert_eq!(n.subtype(), "file");
        assert_eq!(n.handler_config(), "/var/lib/d.img");
        assert_eq!(n.hba_dir(), "user_1");
        assert_eq!(n.to_string(), "tcm-user/1/disk0/file//var/lib/d.img");

        let n = UioName::parse("tcm-user/0/r/ram").unwrap();
        assert_eq!((n.subtype(), n.handler_config()), ("ram", ""));
        let n = UioName::parse("tcm-user/3/nocfg").unwrap();
        assert_eq!((n.subtype(), n.handler_config()), ("", ""));

        for bad in [
            "",
            "uio",
            "tcm-user",
            "tcm-user/x/d/file/",
            "tcm-user/1//file/",
            "foo/1/d/file/",
        ] {
            assert!(
                matches!(UioName::parse(bad), Err(Error::BadUioName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn map_size_formats() {
        assert_eq!(parse_size("0x40800000\n"), Some(0x4080_0000));
        assert_eq!(parse_size(" 4096 "), Some(4096));
        assert_eq!(parse_size("0xzz"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn discovery_in_a_fake_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |minor: u32, name: &str, size: &str| {
            let d = dir.path().join(format!("uio{minor}"));
            std::fs::create_dir_all(d.join("maps/map0")).unwrap();
            std::fs::write(d.join("name"), name).unwrap();
            std::fs::write(d.join("maps/map0/size"), size).unwrap();
        };
        mk(2, "tcm-user/1/b/ram/\n", "0x1000\n");
        mk(0, "tcm-user/1/a/file//tmp/a\n", "0x2000\n");
        mk(1, "uio_pci_generic\n", "0x10\n");
        std::fs::create_dir_all(dir.path().join("other")).unwrap();
        let paths = UioPaths {
            class_dir: dir.path().to_owned(),
            dev_dir: "/dev".into(),
        };
        let found = paths.discover().unwrap();
        assert_eq!(
            found
                .iter()
                .map(|(m, n)| (*m, n.device.as_str()))
                .collect::<Vec<_>>(),
            vec![(0, "a"), (2, "b")]
        );
        assert_eq!(paths.map_size(0).unwrap(), 0x2000);
        assert_eq!(paths.node(7), PathBuf::from("/dev/uio7"));
        let missing = UioPaths {
            class_dir: dir.path().join("nope"),
            dev_dir: "/dev".into(),
        };
        assert!(missing.discover().unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn name_parser_never_panics_and_round_trips(s in "\\PC*") {
            if let Ok(n) = UioName::parse(&s) {
                prop_assert_eq!(UioName::parse(&n.to_string()).unwrap(), n);
            }
        }
    }
}
