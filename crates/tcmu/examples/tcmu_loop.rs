//! The TCMU runner's per-command path without a kernel: a [`Device`] on a heap-backed
//! ring that a fake kernel ([`FakeKernel`]) fills the way `target_core_user.c` does, over
//! a store opened by the runner's own handlers (`qcow/<path>`, `file/<path>`, `ram/`),
//! through the same [`LuTarget`] and SCSI engine. Each pass queues `--qd` READ(10) or
//! WRITE(10) commands of `--bs` bytes at uniformly random offsets, then runs the device
//! the way the runner's inline execution does (`poll`, then `run` for each command), then
//! reaps the completions.
//!
//! It exists to count the daemon's user-space instructions per command on the host,
//! where `valgrind --tool=callgrind` runs in seconds, instead of in a VM boot
//! (bench/README.md, TCMU stage). Only `Device::poll` and `Device::run` are the
//! daemon's path; the fake kernel's side is not. The model leaves out what the runner
//! does around them: waiting for the kernel (the poller's `poll` and UIO `read`), and the
//! doorbell is a counter here, not a `write(2)`. What `poll` does once per pass (the ring
//! lock, the clock read) is spread over `--qd` commands, as in the runner when the ring
//! holds that many. So its figures are a little under the daemon's (callgrind of the
//! runner in the TCMU guest: bench/README.md).
//!
//! ```text
//! qemu-img create -f qcow2 -o preallocation=metadata /tmp/d.qcow2 512M
//! cargo build --release -p rustio-tcmu --example tcmu_loop
//! valgrind --tool=callgrind --toggle-collect='*Device::poll*' --toggle-collect='*Device::run*' \
//!     target/release/examples/tcmu_loop --dev-config qcow//tmp/d.qcow2 --size 512M \
//!     [--rw read|write] [--bs 4096] [--qd 32] [--ops 20000]
//! ```
//!
//! Prints one JSON line: the workload (`rw`, `bs`, `qd`), commands run, how many failed
//! (non-zero status), doorbell rings and the seconds the loop took. Any failed command
//! makes the exit status 1. Writes change the image.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rustio_tcmu::device::{Buffers, Device, Notify, Work};
use rustio_tcmu::handler::{DeviceInfo, Handlers};
use rustio_tcmu::ring::fake::{rw10, FakeKernel};
use rustio_tcmu::ring::Ring;
use rustio_tcmu::target::{lu_config, LuTarget};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
struct Args {
    dev_config: String,
    size: u64,
    write: bool,
    bs: usize,
    qd: usize,
    ops: u64,
}

const USAGE: &str = "usage: tcmu_loop --dev-config SUBTYPE/CONFIG --size BYTES[K|M|G] \
                     [--rw read|write] [--bs BYTES] [--qd N] [--ops N]";

/// The logical block size (LIO's default `hw_block_size`).
const BLOCK: u64 = 512;
/// Largest `--bs`: what one READ(10) of 512-byte blocks can ask for.
const MAX_BS: usize = 0xffff * BLOCK as usize;
/// Most commands queued per pass.
const MAX_QD: usize = 256;
/// Most commands per run.
const MAX_OPS: u64 = 100_000_000;
/// Most data area (`--qd` × `--bs`).
const MAX_DATA: usize = 1 << 30;
/// A command entry with one iovec and a CDB of up to 16 bytes (`abi::CMD_ENTRY_MIN` and
/// the CDB, rounded to 8).
const ENTRY: usize = 128;

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        dev_config: String::new(),
        size: 0,
        write: false,
        bs: 4096,
        qd: 32,
        ops: 20_000,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a whole number: {v}"))
        };
        match flag.as_str() {
            "--dev-config" => a.dev_config = value()?,
            "--size" => {
                a.size =
                    rustio_config::parse_size(&value()?).map_err(|e| format!("--size: {e}"))?;
            }
            "--rw" => {
                a.write = match value()?.as_str() {
                    "write" => true,
                    "read" => false,
                    v => return Err(format!("--rw: read or write, not {v}")),
                }
            }
            "--bs" => a.bs = usize::try_from(number(value()?)?).unwrap_or(usize::MAX),
            "--qd" => a.qd = usize::try_from(number(value()?)?).unwrap_or(usize::MAX),
            "--ops" => a.ops = number(value()?)?,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if a.dev_config.is_empty() {
        return Err(format!("--dev-config is required\n{USAGE}"));
    }
    if a.bs == 0 || a.bs % BLOCK as usize != 0 || a.bs > MAX_BS {
        return Err(format!(
            "--bs: a multiple of {BLOCK} up to {MAX_BS}, not {}",
            a.bs
        ));
    }
    if a.size % BLOCK != 0 || a.size < a.bs as u64 || a.size / BLOCK > u64::from(u32::MAX) {
        return Err(format!(
            "--size: a multiple of {BLOCK}, at least --bs and at most 2^32 - 1 blocks, not {}",
            a.size
        ));
    }
    if a.qd == 0 || a.qd > MAX_QD {
        return Err(format!("--qd: 1 to {MAX_QD}, not {}", a.qd));
    }
    if a.ops == 0 || a.ops > MAX_OPS {
        return Err(format!("--ops: 1 to {MAX_OPS}, not {}", a.ops));
    }
    if a.qd * a.bs > MAX_DATA {
        return Err(format!(
            "--qd × --bs: at most {MAX_DATA} bytes of data area, not {} × {}",
            a.qd, a.bs
        ));
    }
    Ok(a)
}

/// The kernel's doorbell, counted (the poller is never woken: nothing else runs).
#[derive(Debug, Default)]
struct Count(AtomicU64);

impl Notify for Count {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn wake_poller(&self) {}
}

/// xorshift64* (Vigna): the offsets only need to be spread, and the same in every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// What a run did: commands, failed commands, doorbell rings, seconds.
type Outcome = (u64, u64, u64, f64);

/// One pass of the runner over the `n` commands the fake kernel just queued: `poll`, then
/// `run` for each, as its inline execution does; then the kernel's completion walk from
/// `tail`. Returns how many completed with a non-zero status.
fn pass(
    dev: &Device,
    kernel: &FakeKernel,
    n: usize,
    work: &mut Vec<Work>,
    bufs: &mut Buffers,
    tail: &mut u32,
) -> Result<u64, String> {
    dev.poll(work).map_err(|e| format!("poll: {e}"))?;
    if work.len() != n {
        return Err(format!("{} of {n} queued commands were read", work.len()));
    }
    for w in work.drain(..) {
        dev.run(w, bufs);
    }
    let (completed, pos) = kernel.reap(*tail);
    *tail = pos;
    if completed.len() != n {
        return Err(format!("{} of {n} commands completed", completed.len()));
    }
    Ok(completed.iter().filter(|c| c.1 != 0).count() as u64)
}

fn run(a: &Args) -> Result<Outcome, String> {
    let info = DeviceInfo {
        name: "loop".into(),
        size: a.size,
        block_size: BLOCK as u32,
        max_sectors: (MAX_BS as u64 / BLOCK) as u32,
        write_cache: true,
        unit_serial: None,
    };
    let store = Handlers::builtin()
        .open_dev_config(&a.dev_config, &info.spec())
        .map_err(|e| format!("cannot open {}: {e}", a.dev_config))?;
    let target = LuTarget::new(&info.name, store, lu_config(&info))
        .map_err(|e| format!("cannot create the logical unit: {e}"))?;
    // Room for a full pass of entries and a PAD: the fake kernel does not check for free
    // space, and a ring exactly full would look empty.
    let cmdr = u32::try_from(((a.qd + 2) * ENTRY).next_power_of_two().max(8192))
        .map_err(|_| "ring too large".to_owned())?;
    let mut kernel = FakeKernel::new(cmdr, a.qd * a.bs, rustio_tcmu::abi::FLAG_CAP_OOOC);
    let ring = Ring::new(kernel.shared()).map_err(|e| format!("ring: {e}"))?;
    let notify = Arc::new(Count::default());
    let dev = Device::new(&info.name, ring, Arc::new(target), notify.clone());
    let blocks = a.size / BLOCK;
    let per = (a.bs as u64 / BLOCK) as u16;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut work = Vec::with_capacity(a.qd);
    let mut bufs = Buffers::default();
    let mut tail = kernel.head();
    // A new unit's first command gets the power-on UNIT ATTENTION (SPC-4 6.47): a TEST
    // UNIT READY takes it, as an initiator's scan does.
    kernel.push_cmd(0, &[0u8; 6], &[], &[]);
    pass(&dev, &kernel, 1, &mut work, &mut bufs, &mut tail)?;
    let (mut done, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    while done < a.ops {
        let n = (a.ops - done).min(a.qd as u64) as usize;
        for i in 0..n {
            let iov = kernel.alloc_data(a.bs, 0x5a);
            // One of the `blocks / per` aligned starting blocks, as fio picks them.
            let lba = next(&mut rng) % (blocks / u64::from(per)) * u64::from(per);
            let cdb = rw10(if a.write { 0x2a } else { 0x28 }, lba as u32, per);
            kernel.push_cmd(i as u16, &cdb, &[iov], &[]);
        }
        failed += pass(&dev, &kernel, n, &mut work, &mut bufs, &mut tail)?;
        done += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((done, failed, notify.0.load(Ordering::Relaxed), secs))
}

fn main() -> ExitCode {
    let a = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tcmu_loop: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok((ops, failed, doorbells, secs)) => {
            println!(
                "{{\"rw\":\"{}\",\"bs\":{},\"qd\":{},\"ops\":{ops},\"failed\":{failed},\"doorbells\":{doorbells},\"secs\":{secs:.3}}}",
                if a.write { "write" } else { "read" },
                a.bs,
                a.qd
            );
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("tcmu_loop: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn sizes_and_limits() {
        let size = |v: &str| args(&["--dev-config", "ram/", "--size", v]).map(|a| a.size);
        assert_eq!(size("512M"), Ok(512 << 20));
        assert_eq!(size("4096"), Ok(4096));
        assert!(size("18446744073709551615G").is_err());
        let a = args(&["--dev-config", "ram/", "--size", "1M", "--rw", "write"]).unwrap();
        assert!(a.write);
        assert_eq!((a.size, a.bs, a.qd), (1 << 20, 4096, 32));
        assert!(args(&["--size", "1M"]).is_err());
        assert!(args(&["--dev-config", "ram/", "--size", "1M", "--bs", "1000"]).is_err());
        assert!(args(&["--dev-config", "ram/", "--size", "2048"]).is_err());
        assert!(args(&["--dev-config", "ram/", "--size", "1M", "--qd", "0"]).is_err());
        assert!(args(&["--dev-config", "ram/", "--size", "1M", "--qd", "257"]).is_err());
        let big = [
            "--dev-config",
            "ram/",
            "--size",
            "64M",
            "--qd",
            "256",
            "--bs",
            "33553920",
        ];
        assert!(args(&big).is_err());
    }

    #[test]
    fn commands_go_through_the_device_to_the_store() {
        let mut a = args(&["--dev-config", "ram/", "--size", "1M", "--ops", "70"]).unwrap();
        // 70 commands: two full passes of 32 and one of 6, each command notified once.
        let (ops, failed, _, _) = run(&a).unwrap();
        assert_eq!((ops, failed), (70, 0));
        a.write = true;
        let (ops, failed, doorbells, _) = run(&a).unwrap();
        assert_eq!((ops, failed), (70, 0));
        assert_eq!(doorbells, 71, "the commands and the TEST UNIT READY");
    }

    /// Every queue depth up to the limit fits the ring, pass after pass (a ring sized
    /// to exactly one pass of entries wrapped onto itself at 64, 128 and 256).
    #[test]
    fn every_queue_depth_fits_the_ring() {
        for qd in [1, 31, 32, 63, 64, 65, 128, 256] {
            let q = qd.to_string();
            let ops = (3 * qd).to_string();
            let a = args(&[
                "--dev-config",
                "ram/",
                "--size",
                "1M",
                "--qd",
                &q,
                "--bs",
                "512",
                "--ops",
                &ops,
            ])
            .unwrap();
            let (done, failed, _, _) = run(&a).unwrap();
            assert_eq!((done, failed), (3 * qd as u64, 0), "qd {qd}");
        }
    }
}
