//! A closed loop on rustio's RBD engine, without any transport: `QD` requests in
//! flight on one sequential stream (like `rbd bench --io-pattern full-seq`) or at
//! uniformly random offsets (`--pattern rand`, like `rbd bench --io-pattern rand` and
//! loadgen's `rand`), each slot submitted again `--outside-us` after its completion.
//!
//! With `--outside-us 0` it is the engine at librbd's own speed, next to `rbd bench`.
//! With a delay it is a client whose requests spend that long outside librbd between a
//! completion and the next submission (where an initiator's requests are in the
//! initiator, the network and the target): what librbd alone makes of such a stream.
//! `bench/rbd/run.sh` runs it both ways (contenders `engine` and `engine-model`, see
//! bench/README.md, issue 24).
//!
//! ```text
//! cargo run --release -p rustio-rbd --features rbd --example rbd_loop -- \
//!     --image 'rbd/<pool>/<image>;conf=/etc/ceph/ceph.conf' \
//!     [--rw write|read] [--pattern seq|rand] [--bs 131072] [--qd 32] [--secs 6] \
//!     [--outside-us 0]
//! ```
//!
//! Prints one JSON line: requests completed within `--secs`, IOPS, the mean time in the
//! engine per request (submission to completion), the engine's mean depth (IOPS × that
//! time) and the mean time a slot really waited between a completion and its next
//! submission. Writes overwrite the image. The first failed request stops the run
//! (after the requests in flight ended) with an error and exit status 1.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustio_backstore::{Backstore, WriteFlags};
use rustio_rbd::{OpenOptions, RbdBackstore};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
struct Args {
    image: String,
    write: bool,
    random: bool,
    bs: usize,
    qd: usize,
    secs: f64,
    outside: Duration,
}

const USAGE: &str = "usage: rbd_loop --image 'rbd/<pool>/<image>[;conf=PATH]' [--rw write|read] \
                     [--pattern seq|rand] [--bs BYTES] [--qd N] [--secs S] [--outside-us US]";

/// Largest request (the loop holds `qd` buffers of this size at most).
const MAX_BS: usize = 16 << 20;
/// Most requests in flight.
const MAX_QD: usize = 1024;
/// Most buffer memory (`qd` × `bs`).
const MAX_BUFFERS: usize = 1 << 30;
/// Longest `--outside-us`: 10 s.
const MAX_OUTSIDE_US: u64 = 10_000_000;
/// How long the loop waits for a completion when every request is in flight before it
/// ends with an error instead of hanging on a cluster that stopped answering.
const STALL: Duration = Duration::from_secs(120);

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        image: String::new(),
        write: true,
        random: false,
        bs: 128 << 10,
        qd: 32,
        secs: 6.0,
        outside: Duration::ZERO,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a whole number: {v}"))
        };
        match flag.as_str() {
            "--image" => a.image = value()?,
            "--rw" => {
                a.write = match value()?.as_str() {
                    "write" => true,
                    "read" => false,
                    v => return Err(format!("--rw: write or read, not {v}")),
                }
            }
            "--pattern" => {
                a.random = match value()?.as_str() {
                    "seq" => false,
                    "rand" => true,
                    v => return Err(format!("--pattern: seq or rand, not {v}")),
                }
            }
            "--bs" => a.bs = usize::try_from(number(value()?)?).unwrap_or(usize::MAX),
            "--qd" => a.qd = usize::try_from(number(value()?)?).unwrap_or(usize::MAX),
            "--secs" => {
                let v = value()?;
                a.secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .ok_or_else(|| format!("--secs: seconds in (0, 3600], not {v}"))?;
            }
            "--outside-us" => {
                let us = number(value()?)?;
                if us > MAX_OUTSIDE_US {
                    return Err(format!("--outside-us: at most {MAX_OUTSIDE_US}, not {us}"));
                }
                a.outside = Duration::from_micros(us);
            }
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if a.image.is_empty() {
        return Err(format!("--image is required\n{USAGE}"));
    }
    if a.bs == 0 || a.bs % 512 != 0 || a.bs > MAX_BS {
        return Err(format!(
            "--bs: a multiple of 512 up to {MAX_BS}, not {}",
            a.bs
        ));
    }
    if a.qd == 0 || a.qd > MAX_QD {
        return Err(format!("--qd: 1 to {MAX_QD}, not {}", a.qd));
    }
    if a.qd.saturating_mul(a.bs) > MAX_BUFFERS {
        return Err(format!(
            "--qd × --bs: at most {MAX_BUFFERS} bytes of buffers, not {} × {}",
            a.qd, a.bs
        ));
    }
    Ok(a)
}

/// A request's end, sent from the engine's completion thread to the loop.
struct Done {
    slot: usize,
    at: Instant,
    buf: Vec<u8>,
    error: Option<String>,
}

/// What the loop measured.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Tally {
    /// Requests completed within the run.
    ios: u64,
    /// Their summed time in the engine.
    engine: Duration,
    /// Submissions that followed a completion of the same slot.
    resubmits: u64,
    /// Their summed wait between that completion and the submission.
    outside: Duration,
}

impl Tally {
    /// (IOPS, mean µs in the engine, mean depth in the engine, mean µs outside) over
    /// `secs`.
    fn rates(&self, secs: f64) -> (f64, f64, f64, f64) {
        let mean = |d: Duration, n: u64| {
            if n == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e6 / n as f64
            }
        };
        (
            self.ios as f64 / secs,
            mean(self.engine, self.ios),
            self.engine.as_secs_f64() / secs,
            mean(self.outside, self.resubmits),
        )
    }
}

/// The offset after `off` on a sequential stream of `bs`-byte requests that wraps at
/// the end of a `capacity`-byte image.
fn next_offset(off: u64, bs: u64, capacity: u64) -> u64 {
    match off.checked_add(bs) {
        Some(n) if n.checked_add(bs).is_some_and(|e| e <= capacity) => n,
        _ => 0,
    }
}

/// Uniformly random `bs`-aligned offsets of requests inside a `capacity`-byte image,
/// from the OS's generator in batches (the same mapping as loadgen's `rand`).
struct RandomOffsets {
    slots: u64,
    bs: u64,
    pool: Vec<u64>,
}

impl RandomOffsets {
    fn new(bs: u64, capacity: u64) -> RandomOffsets {
        RandomOffsets {
            slots: capacity / bs,
            bs,
            pool: Vec::new(),
        }
    }

    fn next(&mut self) -> Result<u64, String> {
        if self.pool.is_empty() {
            let mut bytes = [0u8; 4096];
            getrandom::fill(&mut bytes).map_err(|e| format!("random offsets: {e}"))?;
            self.pool = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
        }
        let r = self.pool.pop().unwrap_or(0);
        Ok(slot_offset(r, self.slots, self.bs))
    }
}

/// Maps a uniform 64-bit value to one of `slots` `bs`-byte slots (multiply-shift:
/// `slot < slots`, so `slot * bs + bs` stays within the image and cannot overflow).
fn slot_offset(r: u64, slots: u64, bs: u64) -> u64 {
    let slot = ((u128::from(r) * u128::from(slots)) >> 64) as u64;
    slot * bs
}

/// Aims each resubmission early by the loop's own lateness, so that a slot waits
/// `--outside-us` on average: a timed wait wakes late (the timer's slack, the thread's
/// wake-up on a busy CPU), by 66–277 µs on the 2-CPU bench host. The aim is applied when
/// a slot is looked at, never fixed in advance: a slot then never waits less than the
/// delay minus the current lead, so the lead never has to go below zero, and the mean
/// wait over a run is at least the delay less 8 × the final lead ÷ the resubmissions
/// (more only where the loop cannot turn a slot round as fast as asked).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pacer {
    asked: Duration,
    lead: Duration,
}

impl Pacer {
    fn new(asked: Duration) -> Pacer {
        Pacer {
            asked,
            lead: Duration::ZERO,
        }
    }

    /// When a slot whose request completed at `completed` is due again.
    fn due(&self, completed: Instant) -> Instant {
        completed + self.asked.saturating_sub(self.lead)
    }

    /// A slot waited `held`: moves the lead an eighth of the way towards the error,
    /// within [0, asked].
    fn observe(&mut self, held: Duration) {
        if held > self.asked {
            self.lead = (self.lead + (held - self.asked) / 8).min(self.asked);
        } else {
            self.lead = self.lead.saturating_sub((self.asked - held) / 8);
        }
    }
}

/// Runs the loop on `store` for `a.secs`, then waits for the requests in flight.
fn run_loop(store: &dyn Backstore, a: &Args) -> Result<Tally, String> {
    let capacity = store.capacity();
    let bs = a.bs as u64;
    if capacity < bs {
        return Err(format!(
            "the image ({capacity} bytes) is smaller than one request"
        ));
    }
    let mut random = a.random.then(|| RandomOffsets::new(bs, capacity));
    let (tx, rx) = mpsc::channel::<Done>();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.secs);
    // Slots waiting to be submitted, in the order their last request completed (none
    // yet at the start: due at once). A slot is due at its completion plus the pacer's
    // current aim, taken when it is looked at, so every slot waits behind the front one
    // for no longer than its own due time.
    let mut ready: VecDeque<(usize, Option<Instant>)> = (0..a.qd).map(|s| (s, None)).collect();
    let due = |pacer: &Pacer, completed: Option<Instant>| completed.map_or(start, |c| pacer.due(c));
    let mut bufs: Vec<Option<Vec<u8>>> = (0..a.qd).map(|_| Some(vec![0x5a; a.bs])).collect();
    let mut sent = vec![start; a.qd];
    let mut in_flight = 0usize;
    let mut off = match random.as_mut() {
        Some(r) => r.next()?,
        None => 0,
    };
    let mut tally = Tally::default();
    let mut failed: Option<String> = None;
    let mut pacer = Pacer::new(a.outside);
    loop {
        let now = Instant::now();
        let open = now < end && failed.is_none();
        while let Some(&(slot, completed)) = ready.front() {
            if !open || due(&pacer, completed) > Instant::now() {
                break;
            }
            ready.pop_front();
            let buf = bufs[slot].take().unwrap_or_else(|| vec![0x5a; a.bs]);
            let tx = tx.clone();
            let done = Box::new(move |buf: Vec<u8>, r: rustio_backstore::Result<()>| {
                // After a stall the loop is gone, and nobody needs the result.
                let _ = tx.send(Done {
                    slot,
                    at: Instant::now(),
                    buf,
                    error: r.err().map(|e| e.to_string()),
                });
            });
            let at = Instant::now();
            if let Some(c) = completed {
                let held = at.saturating_duration_since(c);
                tally.resubmits += 1;
                tally.outside += held;
                pacer.observe(held);
            }
            sent[slot] = at;
            in_flight += 1;
            if a.write {
                store.submit_write(off, buf, a.bs, WriteFlags::default(), done);
            } else {
                store.submit_read(off, buf, done);
            }
            off = match random.as_mut() {
                Some(r) => r.next()?,
                None => next_offset(off, bs, capacity),
            };
        }
        if in_flight == 0 && !open {
            break;
        }
        // Until the next slot is due, or, with nothing to submit, for a completion.
        let (wait, idle) = match ready.front() {
            Some(&(_, completed)) if open => (
                due(&pacer, completed).saturating_duration_since(Instant::now()),
                false,
            ),
            _ => (STALL, true),
        };
        match rx.recv_timeout(wait) {
            Ok(d) => {
                in_flight -= 1;
                if let Some(e) = d.error {
                    failed.get_or_insert(e);
                } else if d.at <= end {
                    tally.ios += 1;
                    tally.engine += d.at.saturating_duration_since(sent[d.slot]);
                }
                bufs[d.slot] = Some(d.buf);
                ready.push_back((d.slot, Some(d.at)));
            }
            Err(mpsc::RecvTimeoutError::Timeout) if idle => {
                return Err(format!(
                    "no request completed for {} s ({in_flight} in flight)",
                    STALL.as_secs()
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the completion channel closed".into());
            }
        }
    }
    match failed {
        Some(e) => Err(format!("a request failed: {e}")),
        None => Ok(tally),
    }
}

fn main() -> ExitCode {
    let a = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rbd_loop: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match OpenOptions::parse(&a.image).and_then(|o| RbdBackstore::open(&o)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rbd_loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run_loop(&store, &a) {
        Ok(t) => {
            let (iops, engine, depth, outside) = t.rates(a.secs);
            println!(
                concat!(
                    "{{\"rw\":\"{}\",\"pattern\":\"{}\",\"bs\":{},\"qd\":{},",
                    "\"outside_us\":{},\"secs\":{},\"ios\":{},\"iops\":{:.1},\"engine_us\":{:.1},",
                    "\"engine_depth\":{:.2},\"outside_actual_us\":{:.1}}}"
                ),
                if a.write { "write" } else { "read" },
                if a.random { "rand" } else { "seq" },
                a.bs,
                a.qd,
                a.outside.as_micros(),
                a.secs,
                t.ios,
                iops,
                engine,
                depth,
                outside
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rbd_loop: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustio_backstore::RamBackstore;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_are_rbd_bench_s_128k_stream_at_32() {
        let a = args(&["--image", "rbd/p/i"]).unwrap();
        assert_eq!(
            (a.write, a.random, a.bs, a.qd, a.outside),
            (true, false, 131_072, 32, Duration::ZERO)
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &[][..],
            &["--image", "rbd/p/i", "--bs", "1000"],
            &["--image", "rbd/p/i", "--bs", "0"],
            &["--image", "rbd/p/i", "--bs", "33554432"],
            &["--image", "rbd/p/i", "--qd", "0"],
            &["--image", "rbd/p/i", "--qd", "1025"],
            &["--image", "rbd/p/i", "--qd", "1024", "--bs", "16777216"],
            &["--image", "rbd/p/i", "--secs", "-1"],
            &["--image", "rbd/p/i", "--secs", "NaN"],
            &["--image", "rbd/p/i", "--outside-us", "10000001"],
            &["--image", "rbd/p/i", "--rw", "trim"],
            &["--image", "rbd/p/i", "--pattern", "zipf"],
            &["--image", "rbd/p/i", "--qd"],
            &["--image", "rbd/p/i", "--bogus", "1"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} accepted");
        }
        let a = args(&[
            "--image",
            "rbd/p/i",
            "--rw",
            "read",
            "--pattern",
            "rand",
            "--outside-us",
            "10000000",
        ])
        .unwrap();
        assert_eq!(
            (a.write, a.random, a.outside),
            (false, true, Duration::from_secs(10))
        );
    }

    #[test]
    fn the_stream_is_sequential_and_wraps_before_the_end() {
        // 4 MiB image, 1 MiB requests: 0, 1, 2, 3 MiB, then back to 0.
        let (bs, cap) = (1 << 20, 4 << 20);
        let mut o = 0;
        let mut seen = vec![o];
        for _ in 0..4 {
            o = next_offset(o, bs, cap);
            seen.push(o);
        }
        assert_eq!(seen, vec![0, 1 << 20, 2 << 20, 3 << 20, 0]);
        // A request never crosses the end, and an offset near u64::MAX cannot overflow.
        assert_eq!(next_offset(3 << 20, 1 << 20, (4 << 20) + 512), 0);
        assert_eq!(next_offset(u64::MAX - 10, 512, u64::MAX), 0);
    }

    #[test]
    fn random_offsets_are_aligned_and_inside_the_image() {
        // The extremes of the multiply-shift: 0 maps to slot 0, u64::MAX to the last.
        let (bs, cap) = (4096u64, (1u64 << 30) + 1000);
        let slots = cap / bs;
        assert_eq!(slot_offset(0, slots, bs), 0);
        assert_eq!(slot_offset(u64::MAX, slots, bs), (slots - 1) * bs);
        assert_eq!(slot_offset(1 << 63, slots, bs), slots / 2 * bs);
        let mut r = RandomOffsets::new(bs, cap);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..2000 {
            let o = r.next().unwrap();
            assert_eq!(o % bs, 0);
            assert!(o + bs <= cap);
            distinct.insert(o);
        }
        // 2000 draws from 262 144 slots: a repeat is possible, many are not.
        assert!(distinct.len() > 1900, "{} distinct", distinct.len());
    }

    fn ram_args(qd: usize, secs: f64, outside_us: u64, write: bool) -> Args {
        Args {
            image: "ram".into(),
            write,
            random: false,
            bs: 4096,
            qd,
            secs,
            outside: Duration::from_micros(outside_us),
        }
    }

    #[test]
    fn the_loop_runs_every_slot_and_ends_with_none_in_flight() {
        // RAM completes each request inside the submission: the loop must still count
        // and resubmit every slot.
        let ram = RamBackstore::new(1 << 20, 512).unwrap();
        let t = run_loop(&ram, &ram_args(8, 0.05, 0, true)).unwrap();
        assert!(t.ios > 8, "{t:?}");
        // Every completion but the last one of each slot led to a resubmission.
        assert!(t.resubmits + 8 >= t.ios, "{t:?}");
        let t = run_loop(&ram, &ram_args(4, 0.05, 0, false)).unwrap();
        assert!(t.ios > 4, "{t:?}");
    }

    #[test]
    fn each_slot_waits_the_delay_outside_the_engine() {
        // 2 slots, 20 ms outside, 0.2 s: a slot waits 20 ms on average (the pacer may
        // aim early by what the loop wakes late, never more than it), so about
        // 2 × (1 + 0.2 / 0.02) = 22 requests (26 allowed); the first resubmissions,
        // before the pacer learnt anything, waited the whole 20 ms.
        let ram = RamBackstore::new(1 << 20, 512).unwrap();
        let t = run_loop(&ram, &ram_args(2, 0.2, 20_000, true)).unwrap();
        assert!(t.ios >= 2 && t.ios <= 26, "{t:?}");
        assert!(t.resubmits >= 2, "{t:?}");
        let mean = t.outside / t.resubmits as u32;
        assert!(mean >= Duration::from_millis(15), "{t:?}");
    }

    #[test]
    fn a_failed_request_stops_the_run_with_its_error() {
        let ram = RamBackstore::new(1 << 20, 512)
            .unwrap()
            .with_read_only(true);
        let e = run_loop(&ram, &ram_args(4, 5.0, 0, true)).unwrap_err();
        assert!(e.contains("a request failed"), "{e}");
        // Reads of the same store still work.
        assert!(run_loop(&ram, &ram_args(4, 0.02, 0, false)).is_ok());
    }

    #[test]
    fn the_pacer_learns_the_loop_s_lateness_and_never_aims_before_the_completion() {
        let asked = Duration::from_micros(1000);
        let mut p = Pacer::new(asked);
        let t0 = Instant::now();
        assert_eq!(p.due(t0), t0 + asked);
        // A loop that always wakes 200 µs after the time it aimed at.
        let mut held = Duration::ZERO;
        for _ in 0..200 {
            held = p.due(t0) - t0 + Duration::from_micros(200);
            p.observe(held);
        }
        assert!(held.abs_diff(asked) <= Duration::from_micros(2), "{held:?}");
        assert!(p.lead.abs_diff(Duration::from_micros(200)) <= Duration::from_micros(2));
        // Lateness larger than the delay itself: the lead stops at the delay (due at
        // the completion), never before it.
        let mut p = Pacer::new(Duration::from_micros(50));
        for _ in 0..100 {
            p.observe(Duration::from_micros(500));
        }
        assert_eq!(p.due(t0), t0);
        // Early wake-ups shrink the lead back, never below zero.
        for _ in 0..200 {
            p.observe(Duration::ZERO);
        }
        assert_eq!(p.lead, Duration::ZERO);
        // No delay asked: always due at the completion.
        let mut p = Pacer::new(Duration::ZERO);
        p.observe(Duration::from_micros(300));
        assert_eq!(p.due(t0), t0);
    }

    #[test]
    fn the_tally_gives_little_s_law_figures() {
        // 2 requests in 0.5 s: 4 IOPS; 7 ms each on average; 14 ms of engine time over
        // 0.5 s is a mean depth of 0.028; 3 resubmissions after 3 ms in all: 1 ms each.
        let t = Tally {
            ios: 2,
            engine: Duration::from_millis(14),
            resubmits: 3,
            outside: Duration::from_millis(3),
        };
        let (iops, mean, depth, outside) = t.rates(0.5);
        assert_eq!(iops, 4.0);
        assert!((mean - 7000.0).abs() < 1e-6);
        assert!((depth - 0.028).abs() < 1e-9);
        assert!((outside - 1000.0).abs() < 1e-6);
        assert_eq!(Tally::default().rates(1.0), (0.0, 0.0, 0.0, 0.0));
    }
}
