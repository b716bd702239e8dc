//! Crash safety: a child process writes to a qcow2 image in a loop and is killed with
//! SIGKILL mid-way. Afterwards `qemu-img check` must report no corruption (leaked
//! clusters are allowed), and every write the child saw acknowledged as durable (FUA, or
//! followed by a completed flush) must read back, through rustio and through qemu.
//!
//! The child is this test binary re-executed on the ignored test `crash_child_writer`.
//! One run opens the image `cache=none`, with page-aligned buffers, so that its data goes
//! `O_DIRECT` between buffered metadata.

mod qcow2_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qcow2_common::*;
use rustio_backstore::qcow2::{Qcow2Backstore, Qcow2Options};
use rustio_backstore::{Backstore, WriteFlags};

const SIZE: u64 = 64 << 20;
/// The first half of the disk holds verified slots, written once each.
const SLOT: u64 = 12 * 1024;
const SLOTS: u64 = (SIZE / 2) / SLOT;

fn slot_data(i: u64) -> Vec<u8> {
    pattern(0xC0FFEE + i, SLOT as usize)
}

/// Page-aligned copies of the data, for the child of the `cache=none` run.
struct Aligned(Vec<u8>);

impl Aligned {
    /// `data` at a page-aligned address inside the buffer.
    fn copy<'a>(&'a mut self, data: &[u8]) -> &'a [u8] {
        self.0.clear();
        self.0.resize(data.len() + 4096, 0);
        let start = (4096 - self.0.as_ptr() as usize % 4096) % 4096;
        self.0[start..start + data.len()].copy_from_slice(data);
        &self.0[start..start + data.len()]
    }
}

/// The child: writes slots in order (every fourth with FUA, printing `ACK i` when it
/// returns), flushes now and then (printing `FLUSH i`: slots up to i are durable), and
/// churns the second half of the disk with writes and discards so that clusters get
/// freed and reused. It runs until killed.
#[test]
#[ignore = "helper process for crash_safety_under_sigkill"]
fn crash_child_writer() {
    let img = std::env::var("QCOW2_CRASH_IMG").expect("only run by crash_safety_under_sigkill");
    let direct_io = std::env::var_os("QCOW2_CRASH_DIRECT").is_some();
    let o = Qcow2Options {
        direct_io,
        ..Qcow2Options::default()
    };
    let b = Qcow2Backstore::open_with(&img, &o).unwrap();
    let mut buf = Aligned(Vec::new());
    let mut rng = Rng(std::process::id() as u64 | 1);
    let half = SIZE / 2;
    for i in 0.. {
        let slot = i % SLOTS;
        if i >= SLOTS {
            // Every slot is written; just keep churning.
            std::thread::sleep(Duration::from_millis(1));
        } else {
            let fua = i % 4 == 3;
            b.write_at(
                buf.copy(&slot_data(slot)),
                slot * SLOT,
                if fua {
                    WriteFlags::FUA
                } else {
                    WriteFlags::default()
                },
            )
            .unwrap();
            if fua {
                println!("ACK {slot}");
            }
        }
        let off = half + rng.below(half / 4096 - 64) * 4096;
        let len = (rng.below(64) + 1) * 4096;
        match rng.below(6) {
            0 => b.discard(off, len).unwrap(),
            1 => b.write_zeroes(off, len, rng.below(2) == 0).unwrap(),
            _ => b
                .write_at(
                    buf.copy(&pattern(i, len as usize)),
                    off,
                    WriteFlags::default(),
                )
                .unwrap(),
        }
        if i % 10 == 9 && i < SLOTS {
            b.flush().unwrap();
            println!("FLUSH {slot}");
        }
    }
}

/// Runs the child on `img` until it has acknowledged `min_acks` slots, waits `extra`, kills it
/// with SIGKILL and returns the durable slots.
fn run_and_kill(img: &Path, direct: bool, min_acks: usize, extra: Duration) -> Vec<u64> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe);
    if direct {
        child.env("QCOW2_CRASH_DIRECT", "1");
    }
    let mut child = child
        .args([
            "--ignored",
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("QCOW2_CRASH_IMG", img)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut durable = Vec::new();
    let mut flushed_upto: Option<u64> = None;
    let record = |line: &str, durable: &mut Vec<u64>, flushed: &mut Option<u64>| {
        if let Some(n) = line.strip_prefix("ACK ") {
            durable.push(n.trim().parse().unwrap());
        } else if let Some(n) = line.strip_prefix("FLUSH ") {
            *flushed = Some(n.trim().parse().unwrap());
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while durable.len() < min_acks {
        assert!(Instant::now() < deadline, "child made no progress");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            record(&line, &mut durable, &mut flushed_upto);
        }
    }
    std::thread::sleep(extra);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    for line in rx.try_iter() {
        record(&line, &mut durable, &mut flushed_upto);
    }
    if let Some(f) = flushed_upto {
        durable.extend(0..=f);
    }
    durable.sort_unstable();
    durable.dedup();
    durable
}

fn verify_after_crash(dir: &Path, img: &Path, durable: &[u64], what: &str) {
    let (c, report) = check(img);
    assert!(
        matches!(c, Check::Clean | Check::Leaks),
        "{what}: qemu-img check after SIGKILL: {c:?}\n{report}"
    );
    let b = Qcow2Backstore::open(img, true).unwrap();
    let mut buf = vec![0u8; SLOT as usize];
    for &i in durable {
        b.read_at(&mut buf, i * SLOT).unwrap();
        assert!(
            buf == slot_data(i),
            "{what}: acknowledged slot {i} lost (rustio)"
        );
    }
    drop(b);
    let raw = dir.join("after.raw");
    let _ = std::fs::remove_file(&raw);
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        img.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let data = std::fs::read(&raw).unwrap();
    for &i in durable {
        let at = (i * SLOT) as usize;
        assert!(
            data[at..at + SLOT as usize] == slot_data(i)[..],
            "{what}: acknowledged slot {i} lost (qemu)"
        );
    }
    // The image stays usable for writing.
    let b = Qcow2Backstore::open(img, false).unwrap();
    b.write_at(&[9u8; 65536], SIZE / 2, WriteFlags::default())
        .unwrap();
    b.close().unwrap();
    let (c, report) = check(img);
    assert!(
        matches!(c, Check::Clean | Check::Leaks),
        "{what}: after further writes: {c:?}\n{report}"
    );
}

/// One crash run: where the image lives, `qemu-img create -o` options and other
/// arguments, how many acknowledged slots to wait for and how long after them to kill, and
/// whether the child opens the image `cache=none`.
struct Run<'a> {
    dir: &'a Path,
    opts: &'a str,
    extra: &'a [&'a str],
    acks: usize,
    wait_ms: u64,
    direct: bool,
}

#[test]
fn crash_safety_under_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm must exist");
    let base = tmp.path().join("base.raw");
    raw_with(&base, SIZE, &pattern(5, SIZE as usize / 2));
    let run = |dir, opts, acks, wait_ms| Run {
        dir,
        opts,
        extra: &[],
        acks,
        wait_ms,
        direct: false,
    };
    let backing = ["-b", base.to_str().unwrap(), "-F", "raw"];
    let runs = [
        run(tmp.path(), "cluster_size=64k", 20, 0),
        // cache=none needs a file system with O_DIRECT: the temporary directory's (ext4
        // on the CI machines; tmpfs has it since Linux 6.6).
        Run {
            direct: true,
            ..run(tmp.path(), "cluster_size=64k", 30, 1)
        },
        run(tmp.path(), "cluster_size=4k,refcount_bits=1", 60, 3),
        run(shm.path(), "cluster_size=64k,compat=0.10", 40, 1),
        run(shm.path(), "cluster_size=4k,lazy_refcounts=on", 100, 7),
        Run {
            extra: &backing,
            ..run(tmp.path(), "cluster_size=64k", 30, 2)
        },
        run(tmp.path(), "cluster_size=512,refcount_bits=64", 30, 5),
    ];
    for (n, r) in runs.into_iter().enumerate() {
        let Run {
            dir,
            opts,
            extra,
            acks,
            wait_ms,
            direct,
        } = r;
        let img = dir.join(format!("crash{n}.qcow2"));
        let mut args = vec!["create", "-q", "-f", "qcow2", "-o", opts];
        args.extend_from_slice(extra);
        let size = SIZE.to_string();
        args.push(img.to_str().unwrap());
        args.push(&size);
        qemu_img(&args);
        if direct {
            let o = Qcow2Options {
                direct_io: true,
                ..Qcow2Options::default()
            };
            if let Err(e) = Qcow2Backstore::open_with(&img, &o) {
                // Only a file system without O_DIRECT excuses the run.
                assert!(e.to_string().contains("use cache=writeback"), "{e}");
                eprintln!("run {n}: skipped, {e}");
                continue;
            }
        }
        let durable = run_and_kill(&img, direct, acks, Duration::from_millis(wait_ms));
        assert!(
            durable.len() >= acks,
            "run {n}: saw {} acknowledged slots",
            durable.len()
        );
        verify_after_crash(dir, &img, &durable, &format!("run {n} ({opts})"));
    }
}
