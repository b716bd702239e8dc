//! Results of commands a store completes asynchronously (Ceph RBD's path) are sent on the
//! store's completion thread when that cannot block (`conn::exec::complete`): they must
//! arrive whole and in StatSN order however slowly the initiator reads, and a peer that
//! stops reading must never hold up that thread, which serves every other LUN too.

mod common;

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rustio_backstore::{Backstore, Capabilities, IoDone, RamBackstore, WriteFlags};
use rustio_iscsi::ServerHandle;
use rustio_iscsi_proto::pdu::{Header, TmfFunction};
use rustio_scsi::{LogicalUnit, LuConfig};

type Completion = Box<dyn FnOnce() + Send>;

/// A RAM store completing every request on one thread of its own, like librbd's
/// completion thread; it records the longest time a completion (`done`) took.
#[derive(Debug)]
struct Remote {
    ram: RamBackstore,
    completions: Mutex<mpsc::Sender<Completion>>,
    longest_done_us: Arc<AtomicU64>,
    /// Each completion waits this long first (a slow cluster), milliseconds.
    delay_ms: Arc<AtomicU64>,
    /// Serve requests synchronously instead (no `submit_*`; the caller's thread waits
    /// `delay_ms` in the read or write itself), like a local store.
    synchronous: AtomicBool,
}

impl Remote {
    fn new(bytes: u64) -> Arc<Remote> {
        let (tx, rx) = mpsc::channel::<Completion>();
        let longest = Arc::new(AtomicU64::new(0));
        let l = longest.clone();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let d = delay_ms.clone();
        std::thread::Builder::new()
            .name("remote-completion".into())
            .spawn(move || {
                for c in rx {
                    std::thread::sleep(Duration::from_millis(d.load(Ordering::Relaxed)));
                    let t = Instant::now();
                    c();
                    l.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
            })
            .unwrap();
        Arc::new(Remote {
            ram: RamBackstore::new(bytes, 512).unwrap(),
            completions: Mutex::new(tx),
            longest_done_us: longest,
            delay_ms,
            synchronous: AtomicBool::new(false),
        })
    }

    fn wait_if_synchronous(&self) {
        if self.synchronous.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::Relaxed)));
        }
    }

    fn complete(&self, c: Completion) {
        let _ = self.completions.lock().unwrap().send(c);
    }
}

impl Backstore for Remote {
    fn block_size(&self) -> u32 {
        self.ram.block_size()
    }
    fn capacity(&self) -> u64 {
        self.ram.capacity()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            network: true,
            ..self.ram.capabilities()
        }
    }
    fn read_vectored_at(&self, b: &mut [IoSliceMut<'_>], o: u64) -> rustio_backstore::Result<()> {
        self.wait_if_synchronous();
        self.ram.read_vectored_at(b, o)
    }
    fn write_vectored_at(
        &self,
        b: &[IoSlice<'_>],
        o: u64,
        f: WriteFlags,
    ) -> rustio_backstore::Result<()> {
        self.wait_if_synchronous();
        self.ram.write_vectored_at(b, o, f)
    }
    fn flush(&self) -> rustio_backstore::Result<()> {
        Ok(())
    }
    fn submits_async(&self) -> bool {
        !self.synchronous.load(Ordering::Relaxed)
    }
    fn submit_read(&self, offset: u64, mut buf: Vec<u8>, done: IoDone) {
        let r = self.ram.read_at(&mut buf, offset);
        self.complete(Box::new(move || done(buf, r)));
    }
    fn submit_write(&self, offset: u64, buf: Vec<u8>, len: usize, f: WriteFlags, done: IoDone) {
        let r = self.ram.write_at(&buf[..len], offset, f);
        self.complete(Box::new(move || done(buf, r)));
    }
}

/// 64 MiB.
const BYTES: u64 = 64 << 20;

/// The value of metric `name` in the metrics text: a server-wide one, or the first series
/// of a labelled one (the rigs here have one LUN and one session).
fn metric(h: &ServerHandle, name: &str) -> f64 {
    h.metrics_text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split(['{', ' ']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

/// An initiator logged in to `addr` that takes Data-In segments of `mrdsl` bytes and
/// bursts of 1 MiB.
fn logged_in(addr: std::net::SocketAddr, mrdsl: u32) -> Initiator {
    let mut i = Initiator::connect(addr);
    let o = LoginOpts::default()
        .with_key("MaxRecvDataSegmentLength", &mrdsl.to_string())
        .with_key("MaxBurstLength", "1048576");
    assert!(i.login(&o));
    i
}

/// A server whose LUN 0 is a [`Remote`] store, an initiator logged in with `mrdsl`
/// ([`logged_in`]), and `len` bytes of pattern `seed` written from LBA 0 ([`fill`]).
fn remote_rig(mrdsl: u32, len: usize, seed: u8) -> (Arc<Remote>, ServerHandle, Initiator, Vec<u8>) {
    let remote = Remote::new(BYTES);
    let (h, addr) = start(|cfg, tpg| {
        cfg.queue_depth = 128;
        tpg.params.offer.max_recv_data_segment_length = 262_144;
        tpg.luns[0].lu = remote_lu(&remote, "remote");
    });
    let mut i = logged_in(addr, mrdsl);
    let all = pattern(len, seed);
    fill(&mut i, &all);
    (remote, h, i, all)
}

/// Writes `all` from LBA 0 in WRITEs of 256 KiB (completed on the store's thread too).
fn fill(i: &mut Initiator, all: &[u8]) {
    let chunk = 256 << 10;
    for (n, part) in all.chunks(chunk).enumerate() {
        let lba = (n * chunk / 512) as u32;
        let r = i.scsi(0, &write10(lba, (part.len() / 512) as u16), 0, part, 0);
        assert_eq!(r.status, 0, "WRITE {n}");
    }
}

/// Sends a READ of every byte range of `reads` at once, then reads the answers (after
/// `wait`, pausing `pause` after each) and checks each against `all`.
fn read_back(
    i: &mut Initiator,
    all: &[u8],
    reads: impl Iterator<Item = std::ops::Range<usize>>,
    wait: Duration,
    pause: Duration,
) {
    let mut expect = HashMap::new();
    for range in reads {
        let (itt, pdu) = i.command(
            0,
            &read10((range.start / 512) as u32, (range.len() / 512) as u16),
            true,
            false,
            range.len() as u32,
            vec![],
        );
        i.send(&pdu);
        expect.insert(itt, range);
    }
    std::thread::sleep(wait);
    let got = collect_all(i, expect.len(), pause);
    assert_eq!(got.len(), expect.len());
    for (itt, range) in expect {
        let (data, status) = &got[&itt];
        assert_eq!(*status, 0, "READ {itt}");
        assert!(
            data[..] == all[range.clone()],
            "READ {itt} of {range:?} differs"
        );
    }
}

fn remote_lu(remote: &Arc<Remote>, serial: &str) -> Arc<LogicalUnit> {
    LogicalUnit::new(remote.clone(), LuConfig::new(serial, serial)).unwrap()
}

/// Reads every PDU of `n` outstanding commands, sleeping `pause` after each one (a slow
/// reader), and returns per ITT the data and the status, checking StatSN order.
fn collect_all(i: &mut Initiator, n: usize, pause: Duration) -> HashMap<u32, (Vec<u8>, u8)> {
    let mut out: HashMap<u32, (Vec<u8>, u8)> = HashMap::new();
    let mut ended = 0;
    let mut stat_sn: Option<u32> = None;
    while ended < n {
        let p = i.recv();
        let (itt, status, sn) = match p.header {
            Header::DataIn(h) => {
                let e = out.entry(h.itt).or_default();
                assert_eq!(h.buffer_offset as usize, e.0.len(), "offsets in order");
                e.0.extend_from_slice(&p.data);
                if !h.status_present {
                    continue;
                }
                (h.itt, h.status, h.stat_sn)
            }
            Header::ScsiResponse(h) => (h.itt, h.status, h.stat_sn),
            other => panic!("unexpected PDU {other:?}"),
        };
        if let Some(prev) = stat_sn {
            assert_eq!(sn, prev.wrapping_add(1), "StatSN in order");
        }
        stat_sn = Some(sn);
        out.entry(itt).or_default().1 = status;
        ended += 1;
        std::thread::sleep(pause);
    }
    out
}

#[test]
fn results_sent_from_the_completion_thread_arrive_whole_and_in_order() {
    let (_remote, h, mut i, all) = remote_rig(262_144, 16 << 20, 7);
    // Rounds of pipelined READs, read back by a reader that starts late and, in the
    // second round, pauses: far more than the sockets hold, so completions find the
    // socket full. Round 1 only READs small enough for the completion thread (the
    // socket fills during one of its sends, whose rest a worker writes), round 2 also
    // larger ones (handed to the pool) and 512-byte ones.
    let small = [4096usize, 65536, 131072, 262_144];
    let mixed = [4096usize, 65536, 131072, 1 << 20, 512, 262_144 + 512];
    for (round, (sizes, pause)) in [
        (&small[..], Duration::ZERO),
        (&mixed[..], Duration::from_millis(5)),
    ]
    .into_iter()
    .enumerate()
    {
        // Let the completions meet a socket nobody reads yet (300 ms).
        let reads = (0..48usize).map(|k| {
            let len = sizes[k % sizes.len()];
            let off = (k * 333_333 + round * 4096) % ((16 << 20) - len) / 512 * 512;
            off..off + len
        });
        read_back(&mut i, &all, reads, Duration::from_millis(300), pause);
        if round == 0 {
            let now = metric(&h, "rustio_iscsi_async_results_sent_on_completion_total");
            let partly = metric(&h, "rustio_iscsi_async_results_sent_partly_total");
            assert!(now > 0.0, "no result sent on the completion thread");
            assert!(partly > 0.0, "no send found the socket full ({now} sent)");
        }
    }
    // The 1 MiB READs (above the completion thread's limit) went to the pool.
    assert!(metric(&h, "rustio_iscsi_async_results_handed_off_total") >= 8.0);
    // The connection is still in order for a plain command.
    let r = i.scsi(0, &read10(0, 8), 4096, &[], 0);
    assert_eq!(r.status, 0);
    assert!(r.data[..] == all[..4096]);
    h.shutdown();
}

/// An initiator that takes Data-In segments of 512 bytes (MaxRecvDataSegmentLength,
/// RFC 7143 13.12): a 256 KiB READ is 512 PDUs, a 1 MiB one 2048; both arrive whole from
/// the completion thread and from the pool.
#[test]
fn small_data_segments_arrive_whole() {
    let (_remote, h, mut i, all) = remote_rig(512, 4 << 20, 3);
    let reads = (0..16usize).map(|k| {
        let len = if k % 2 == 0 { 256 << 10 } else { 1 << 20 };
        let off = (k * 65536) % ((4 << 20) - len);
        off..off + len
    });
    read_back(&mut i, &all, reads, Duration::ZERO, Duration::ZERO);
    assert!(metric(&h, "rustio_iscsi_async_results_sent_on_completion_total") > 0.0);
    assert_eq!(h.connection_count(), 1);
    h.shutdown();
}

/// ABORT TASK of a READ in flight on the store (RFC 7143 11.5.1, SAM-5 7.2): its
/// completion, on the store's thread, sends nothing for it, the task management
/// response says the function completed, the other READ in flight is answered, and
/// the connection goes on in order.
#[test]
fn an_aborted_read_is_not_answered_from_the_completion_thread() {
    let (remote, h, mut i, all) = remote_rig(262_144, 1 << 20, 5);
    remote.delay_ms.store(300, Ordering::Relaxed);
    let (aborted, pdu) = i.command(0, &read10(0, 128), true, false, 65536, vec![]);
    i.send(&pdu);
    let (kept, pdu) = i.command(0, &read10(256, 8), true, false, 4096, vec![]);
    i.send(&pdu);
    let ref_cmd_sn = i.cmd_sn.wrapping_sub(2);
    let tmf_itt = i.send_tmf(TmfFunction::AbortTask, 0, aborted, ref_cmd_sn);
    // Until both the task management response and the kept READ's status came.
    let (mut tmf_response, mut kept_data, mut kept_status) = (None, Vec::new(), None);
    while tmf_response.is_none() || kept_status.is_none() {
        let p = i.recv();
        match p.header {
            Header::TaskMgmtResponse(r) => {
                assert_eq!(r.itt, tmf_itt);
                tmf_response = Some(r.response);
            }
            Header::DataIn(d) => {
                assert_eq!(d.itt, kept, "data of the aborted READ was sent");
                kept_data.extend_from_slice(&p.data);
                if d.status_present {
                    kept_status = Some(d.status);
                }
            }
            Header::ScsiResponse(r) => {
                assert_eq!(r.itt, kept, "the aborted READ was answered");
                kept_status = Some(r.status);
            }
            other => panic!("unexpected PDU {other:?}"),
        }
    }
    assert_eq!(tmf_response, Some(0), "ABORT TASK: function complete");
    assert_eq!(kept_status, Some(0));
    assert!(kept_data[..] == all[256 * 512..256 * 512 + 4096]);
    // Nothing more for the aborted READ, and the connection goes on in order.
    remote.delay_ms.store(0, Ordering::Relaxed);
    let r = i.scsi(0, &read10(8, 8), 4096, &[], 0);
    assert_eq!(r.status, 0);
    assert!(r.data[..] == all[4096..8192]);
    h.shutdown();
}

/// 64 × 1 MiB READs completed by the one completion thread for a peer that stopped
/// reading: the same store's completions keep coming for the other session, and none
/// waited on the stuck peer.
#[test]
fn a_peer_that_stops_reading_never_holds_up_the_completion_thread() {
    let remote = Remote::new(BYTES);
    stuck_peer_starves_nobody(remote_lu(&remote, "remote"), |_| {
        // Each completion returned well within the send timeout (a blocking send to
        // the stuck peer would take the whole 4 s).
        let longest = Duration::from_micros(remote.longest_done_us.load(Ordering::Relaxed));
        assert!(
            longest < Duration::from_secs(1),
            "a completion took {longest:?}"
        );
    });
}

/// The time READs and WRITEs spend in the target and, of that, in the engine and store
/// (`rustio_lun_{read,write}_seconds_total`, `..._backstore_seconds_total`): with a store
/// that takes 40 ms per request, completed asynchronously (RBD's path) and then served
/// synchronously (the pool's path), each command adds at least 40 ms to both; a WRITE
/// whose data the initiator sends 30 ms late adds those to the target's own share only.
#[test]
fn time_in_the_target_and_in_the_store_is_counted() {
    const DELAY: f64 = 0.040;
    const DATA_WAIT: f64 = 0.030;
    const EACH: usize = 4;
    let (remote, h, mut i, all) = remote_rig(262_144, 64 << 10, 3);
    let fields = [
        "read_seconds_total",
        "read_backstore_seconds_total",
        "write_seconds_total",
        "write_backstore_seconds_total",
        "read_commands_total",
        "write_commands_total",
    ];
    let values = |group: &str| -> Vec<f64> {
        fields
            .iter()
            .map(|f| metric(&h, &format!("rustio_{group}_{f}")))
            .collect()
    };
    // Settle the fill's last WRITE (timed right after its response).
    std::thread::sleep(Duration::from_millis(100));
    let before = [values("lun"), values("session")];
    remote
        .delay_ms
        .store((DELAY * 1e3) as u64, Ordering::Relaxed);
    for synchronous in [false, true] {
        remote.synchronous.store(synchronous, Ordering::Relaxed);
        for n in 0..EACH {
            let lba = (n * 8) as u32;
            let r = i.scsi(0, &read10(lba, 8), 4096, &[], 0);
            assert_eq!((r.status, &r.data[..]), (0, &all[n * 4096..][..4096]));
            // The Data-Out follows the R2T only after DATA_WAIT: the target's part.
            let data = &all[n * 4096..][..4096];
            let (itt, pdu) = i.command(0, &write10(lba, 8), false, true, 4096, vec![]);
            i.send(&pdu);
            std::thread::sleep(Duration::from_secs_f64(DATA_WAIT));
            assert_eq!(i.collect(itt, data, 8192).status, 0, "WRITE {n}");
        }
    }
    // Each command's time is added right after its response is sent: wait for the last.
    let n = 2 * EACH;
    let least = n as f64 * DELAY;
    // Each command may take this much more than the store's 40 ms, in the store (a
    // sleep's overshoot) or in the target (receive, queue, send); time from another
    // origin (the session's start, an earlier command) or counted twice would exceed it.
    let slack = n as f64 * 0.100;
    for (group, before) in ["lun", "session"].into_iter().zip(&before) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let spent = loop {
            let d: Vec<f64> = values(group)
                .iter()
                .zip(before)
                .map(|(a, b)| a - b)
                .collect();
            if d[1] >= least && d[3] >= least || Instant::now() > deadline {
                break d;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (read, read_store, write, write_store) = (spent[0], spent[1], spent[2], spent[3]);
        assert_eq!(
            (spent[4], spent[5]),
            (n as f64, n as f64),
            "{group}: commands"
        );
        // A WRITE's wait for its Data-Out is in the target, not in the store.
        let waited = n as f64 * DATA_WAIT;
        for (what, total, store, own) in [
            ("READs", read, read_store, 0.0),
            ("WRITEs", write, write_store, waited),
        ] {
            assert!(
                store >= least && store < least + slack,
                "{group}: {what} in the store {store} s"
            );
            assert!(
                total - store >= own && total - store < own + slack,
                "{group}: {what} {total} s, in the store {store} s"
            );
        }
    }
}
