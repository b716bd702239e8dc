//! Helpers shared by the qcow2 integration tests: running qemu-img / qemu-io, a
//! deterministic workload mirrored onto a raw reference file.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustio_backstore::{Backstore, WriteFlags};

/// Finds a qemu tool on `PATH`. These tests exercise real qemu interoperability and must
/// not pass vacuously, so a missing tool is a failure, not a skip.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found on PATH: install qemu-utils (apt-get install qemu-utils); CI installs it and these tests never skip");
}

/// Runs a command and returns its output, panicking with stderr on spawn failure.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a qemu tool, retrying (bounded, 10 s) the two failures that say nothing about
/// the image but about a loaded machine:
/// - the image still shows another holder's lock. The holder is not a leak of ours: a
///   sibling test thread that spawns a process between our open and close duplicates our
///   descriptor into its child until that child's exec (CLOEXEC acts only at exec), and on
///   a loaded machine that window is long enough for qemu's OFD lock probe to see it;
/// - "Unable to get accurate CPU usage": creating a LUKS image, qemu times PBKDF2
///   iterations by the process's CPU time, which a starved process does not accumulate.
pub fn run_unlocked(cmd: &mut Command) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = run(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        let transient = !out.status.success()
            && ((err.contains("Failed to get") && err.contains("lock"))
                || err.contains("Unable to get accurate CPU usage"));
        if !transient || std::time::Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run_unlocked(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img <args>`.
pub fn qemu_img(args: &[&str]) -> String {
    ok(Command::new(tool("qemu-img")).args(args))
}

/// `qemu-io -f <fmt> <img> -c <cmd>...`.
pub fn qemu_io(fmt: &str, img: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new(tool("qemu-io"));
    c.arg("-f").arg(fmt).arg(img);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let out = ok(&mut c);
    assert!(
        !out.contains("Pattern verification failed") && !out.contains("error"),
        "qemu-io {cmds:?} on {}: {out}",
        img.display()
    );
    out
}

/// Outcome of `qemu-img check` (its documented exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Exit 0: no errors, no leaks.
    Clean,
    /// Exit 3: leaked clusters only (harmless).
    Leaks,
    /// Exit 2: corruption.
    Corrupt,
    /// Exit 1 or other: the check itself failed.
    Failed,
}

/// Runs `qemu-img check` and classifies the result; returns the report too.
pub fn check(img: &Path) -> (Check, String) {
    check_with(img, &[])
}

/// `qemu-img check` with extra options (e.g. `-U` to look at an image in use).
pub fn check_with(img: &Path, extra: &[&str]) -> (Check, String) {
    let out = run_unlocked(
        Command::new(tool("qemu-img"))
            .args(["check", "-f", "qcow2"])
            .args(extra)
            .arg(img),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let c = match out.status.code() {
        Some(0) => Check::Clean,
        Some(3) => Check::Leaks,
        Some(2) => Check::Corrupt,
        _ => Check::Failed,
    };
    (c, text)
}

/// Asserts `qemu-img check` finds neither corruption nor leaks.
pub fn assert_clean(img: &Path) {
    let (c, text) = check(img);
    assert_eq!(c, Check::Clean, "qemu-img check {}:\n{text}", img.display());
}

/// Asserts the qcow2 image and the raw reference have the same guest content.
pub fn assert_same(img: &Path, raw: &Path) {
    let out = run_unlocked(
        Command::new(tool("qemu-img"))
            .args(["compare", "-f", "qcow2", "-F", "raw"])
            .arg(img)
            .arg(raw),
    );
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}{}",
        img.display(),
        raw.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small deterministic generator (xorshift64*).
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// Next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Position-dependent test data.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Creates a raw file of `size` bytes holding `data` at the start.
pub fn raw_with(path: &Path, size: u64, data: &[u8]) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(data, 0).unwrap();
}

/// Applies `n` random writes, discards, write-zeroes and flushes to `b`, mirroring the
/// expected content into the raw file `reference`.
pub fn workload(b: &dyn Backstore, reference: &Path, seed: u64, n: usize) {
    let r = std::fs::OpenOptions::new()
        .write(true)
        .open(reference)
        .unwrap();
    let size = b.capacity();
    let bs = u64::from(b.block_size());
    let mut rng = Rng(seed | 1);
    for i in 0..n {
        let off = rng.below(size / bs) * bs;
        let max_blocks = ((size - off) / bs).min(512 * 1024 / bs);
        let len = (rng.below(max_blocks) + 1) * bs;
        match rng.below(12) {
            0..=6 => {
                let data = pattern(seed * 1000 + i as u64, len as usize);
                let flags = if rng.below(8) == 0 {
                    WriteFlags::FUA
                } else {
                    WriteFlags::default()
                };
                b.write_at(&data, off, flags).unwrap();
                r.write_all_at(&data, off).unwrap();
            }
            7 => {
                b.discard(off, len).unwrap();
                r.write_all_at(&vec![0u8; len as usize], off).unwrap();
            }
            8 | 9 => {
                b.write_zeroes(off, len, rng.below(2) == 0).unwrap();
                r.write_all_at(&vec![0u8; len as usize], off).unwrap();
            }
            _ => b.flush().unwrap(),
        }
    }
    b.flush().unwrap();
}

/// Reads the whole store.
pub fn read_all(b: &dyn Backstore) -> Vec<u8> {
    let mut v = vec![0u8; b.capacity() as usize];
    b.read_at(&mut v, 0).unwrap();
    v
}
