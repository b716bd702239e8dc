//! The socket side of a connection: a buffered reader with deadlines, bounded-time
//! vectored writes, PDUs framed for the wire (header and data digests, padding), and the
//! recycled Data-Out buffers.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};

use parking_lot::Mutex;
use rustio_backstore::FileRange;
use rustio_iscsi_proto::pdu::{self, Digests, Header, BHS_LEN};

use crate::limits::Deadline;

/// How long a PDU may stall half-received (no byte arriving) before the connection is
/// dropped.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// How long one PDU may take to arrive from its first byte to its last, however the
/// bytes trickle in (issue 20 item 4): the largest data segment (16 MiB, RFC 7143 13.12)
/// at 1 MB/s still fits, a peer dripping a byte at a time does not hold the reader.
pub(crate) const PDU_TIME_LIMIT: Duration = Duration::from_secs(60);
/// Poll tick of the reader (shutdown and NOP-In timers are checked this often).
pub(crate) const TICK: Duration = Duration::from_millis(500);

thread_local! {
    /// Set by the reader while more received bytes are waiting to be parsed.
    static READER_BUSY: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether this (reader) thread has more received bytes waiting to be parsed: work
/// found now goes to the pool rather than delaying them.
pub(crate) fn reader_busy() -> bool {
    READER_BUSY.with(|b| b.get())
}

/// Readers polling their sockets right now, in the whole process.
static POLLERS: AtomicUsize = AtomicUsize::new(0);

/// The CPUs this process may use (at least one), read once.
fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many readers may poll at once: half the CPUs (at least one), so that polling
/// never takes every CPU from the threads doing the work, however many connections
/// are idle for a moment.
fn max_pollers() -> usize {
    (cpus() / 2).max(1)
}

/// How often the host's count of runnable threads is read for [`spare_cpu`].
const SPARE_SAMPLE: Duration = Duration::from_millis(20);

/// Whether the host has a CPU with nothing to run right now: the kernel's count of
/// runnable threads (`/proc/loadavg`, fourth field, the asking thread included) below
/// the number of CPUs. Read at most every [`SPARE_SAMPLE`] by whichever reader asks
/// first; unreadable or unparsable counts as no spare CPU. A reader polls only then
/// ([`Reader::poll_briefly`]): polling takes a CPU that would otherwise go idle, never
/// one a worker or the initiator on the same host could use.
fn spare_cpu() -> bool {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    /// When the last sample was taken (ns since `EPOCH`, `| 1`), 0 before the first.
    static SAMPLED: AtomicU64 = AtomicU64::new(0);
    static SPARE: AtomicBool = AtomicBool::new(false);
    let epoch = *EPOCH.get_or_init(Instant::now);
    let now = (epoch.elapsed().as_nanos() as u64) | 1;
    let last = SAMPLED.load(Ordering::Acquire);
    if last != 0 && now.saturating_sub(last) < SPARE_SAMPLE.as_nanos() as u64 {
        return SPARE.load(Ordering::Acquire);
    }
    // One refresher at a time; the others use the previous sample meanwhile.
    if SAMPLED
        .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return SPARE.load(Ordering::Acquire);
    }
    let spare = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| runnable_threads(&s))
        .is_some_and(|n| (n as usize) < cpus());
    SPARE.store(spare, Ordering::Release);
    spare
}

/// The number of runnable threads in `/proc/loadavg`'s text ("0.20 0.18 0.12 1/80
/// 11206": the numerator of the fourth field, proc(5)).
fn runnable_threads(loadavg: &str) -> Option<u32> {
    let field = loadavg.split_ascii_whitespace().nth(3)?;
    let (running, _total) = field.split_once('/')?;
    running.parse().ok()
}

/// One reader's claim on a polling slot of a counter ([`POLLERS`]); gives it back when
/// dropped.
struct PollSlot(&'static AtomicUsize);

impl PollSlot {
    /// A slot, if fewer than `max` readers hold one of `count` now.
    fn claim(count: &'static AtomicUsize, max: usize) -> Option<PollSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| PollSlot(count))
    }
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A buffered reader that survives read timeouts without losing partial PDUs.
pub(crate) struct Reader {
    stream: TcpStream,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Reads fail with `TimedOut` once this passes (login phase; one PDU in FFP).
    deadline: Option<Deadline>,
    /// How long [`Reader::wait_pdu`] polls an empty socket before it sleeps.
    busy_poll: Duration,
    /// Whether bytes arrived since the last poll that found none: an idle connection
    /// polls once after its last PDU, not again on every read-timeout tick.
    poll_armed: bool,
}

impl Reader {
    pub(crate) fn new(stream: TcpStream, cap: usize) -> Reader {
        Reader {
            stream,
            buf: vec![0u8; cap].into_boxed_slice(),
            pos: 0,
            end: 0,
            deadline: None,
            busy_poll: Duration::ZERO,
            poll_armed: true,
        }
    }

    /// Sets how long [`Reader::wait_pdu`] polls an empty socket before it sleeps.
    pub(crate) fn set_busy_poll(&mut self, d: Duration) {
        self.busy_poll = d;
    }

    /// Sets (or clears) the wall-clock deadline of every following read.
    pub(crate) fn set_deadline(&mut self, deadline: Option<Deadline>) {
        self.deadline = deadline;
    }

    /// `TimedOut` once the deadline has passed: checked before every socket read, so a
    /// byte arriving now and then cannot postpone it.
    fn check_deadline(&self) -> io::Result<()> {
        match self.deadline {
            Some(d) if d.passed(Instant::now()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "deadline passed while receiving",
            )),
            _ => Ok(()),
        }
    }

    fn buffered(&self) -> usize {
        self.end - self.pos
    }

    /// Reads more bytes into the buffer. `Ok(0)` means EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Waits until at least one byte of the next PDU is available. `Ok(false)` on a
    /// timeout tick with nothing buffered.
    ///
    /// With a busy poll set, an empty socket is first polled (non-blocking receives)
    /// for up to that long: a thread that sleeps in `recv` pays a wake-up when the next
    /// command comes, and on an idle host (a halted virtual CPU in particular) that
    /// wake-up costs more than the whole command (QD 1 round trips of 54 µs instead of
    /// 18 µs, bench/README.md). Polling is bounded in time per wait and in readers per
    /// process ([`max_pollers`]), and happens only while the host has a CPU with nothing
    /// to run ([`spare_cpu`]); a reader that finds no slot or no spare CPU sleeps at
    /// once.
    pub(crate) fn wait_pdu(&mut self) -> io::Result<bool> {
        if self.buffered() > 0 {
            return Ok(true);
        }
        self.check_deadline()?;
        if let Some(n) = self.poll_briefly(max_pollers(), spare_cpu)? {
            return match n {
                0 => Err(io::ErrorKind::UnexpectedEof.into()),
                _ => Ok(true),
            };
        }
        match self.fill() {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                self.poll_armed = true;
                Ok(true)
            }
            Err(e) if is_timeout(&e) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Polls the (empty) socket for up to the busy-poll time: `Some(n)` once `n` bytes
    /// arrived (0 = EOF), `None` when nothing came in time, no polling slot of `max`
    /// was free, `spare` says the host has no CPU to spare ([`spare_cpu`]), or the last
    /// poll found nothing and no byte came since (an idle connection).
    fn poll_briefly(&mut self, max: usize, spare: fn() -> bool) -> io::Result<Option<usize>> {
        if self.busy_poll.is_zero() || self.buffered() > 0 || !self.poll_armed || !spare() {
            return Ok(None);
        }
        let Some(_slot) = PollSlot::claim(&POLLERS, max) else {
            return Ok(None);
        };
        self.pos = 0;
        self.end = 0;
        let start = Instant::now();
        loop {
            match recv(
                self.stream.as_raw_fd(),
                &mut self.buf[..],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => {
                    self.end = n;
                    return Ok(Some(n));
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            if start.elapsed() >= self.busy_poll {
                self.poll_armed = false;
                return Ok(None);
            }
            // Runnable threads (the workers, the client on a shared host) go first: the
            // poll only keeps a CPU that has nothing else to do from going idle.
            std::thread::yield_now();
        }
    }

    /// Reads exactly `dst.len()` bytes, retrying over timeouts; large reads bypass the
    /// buffer. `abort` is polled on every timeout.
    pub(crate) fn read_exact(
        &mut self,
        dst: &mut [u8],
        abort: &dyn Fn() -> bool,
    ) -> io::Result<()> {
        let mut done = 0;
        let mut stalled = Duration::ZERO;
        while done < dst.len() {
            let avail = self.buffered();
            if avail > 0 {
                let n = avail.min(dst.len() - done);
                dst[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                done += n;
                continue;
            }
            self.check_deadline()?;
            let want = dst.len() - done;
            let res = if want >= self.buf.len() / 2 {
                match self.stream.read(&mut dst[done..]) {
                    Ok(n) => {
                        done += n;
                        Ok(n)
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.fill()
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => stalled = Duration::ZERO,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    if abort() {
                        return Err(io::ErrorKind::ConnectionAborted.into());
                    }
                    stalled += TICK;
                    if stalled >= STALL_LIMIT {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // More bytes already received means more PDUs waiting: work found now goes to
        // the pool rather than delaying them (see `dispatch`).
        let busy = self.buffered() > 0;
        READER_BUSY.with(|b| b.set(busy));
        Ok(())
    }

    /// Discards `n` bytes.
    pub(crate) fn skip(&mut self, mut n: usize, abort: &dyn Fn() -> bool) -> io::Result<()> {
        let mut scratch = [0u8; 4096];
        while n > 0 {
            let k = n.min(scratch.len());
            self.read_exact(&mut scratch[..k], abort)?;
            n -= k;
        }
        Ok(())
    }
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Time allowed to move `bytes` at `rate` bytes per second on top of `base` (the
/// no-progress timeout): the wall-clock bound of one transfer (issue 20 items 2, 3).
pub(crate) fn transfer_allowance(base: Duration, bytes: u64, rate: u64) -> Duration {
    let rate = rate.max(1);
    let secs = bytes / rate;
    // (bytes % rate) < rate, so this is < 10^9 and fits.
    let nanos = (u128::from(bytes % rate) * 1_000_000_000 / u128::from(rate)) as u32;
    base.saturating_add(Duration::new(secs, nanos))
}

/// The wall-clock bound of one response's writes. `SO_SNDTIMEO` (the send timeout) only
/// fires when a send makes no progress at all, so a peer that reads a little now and
/// then would otherwise hold the writer for ever; and one blocked send may itself last
/// the whole send timeout before it returns a partial count. So after a partial write
/// the socket's send timeout is lowered to the time left (and restored at the end): the
/// deadline holds to within a millisecond. The clock and the socket option are touched
/// only after a partial write.
struct Bounded {
    deadline: Option<Instant>,
    /// The socket's own send timeout, once lowered.
    restore: Option<Option<Duration>>,
}

impl Bounded {
    fn new(deadline: Option<Instant>) -> Bounded {
        Bounded {
            deadline,
            restore: None,
        }
    }

    /// After a write that left more to send: `TimedOut` once the deadline has passed,
    /// otherwise the socket's send timeout lowered to the time left.
    fn partial(&mut self, w: &TcpStream) -> io::Result<()> {
        let Some(d) = self.deadline else {
            return Ok(());
        };
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response not sent by its deadline",
            ));
        }
        if self.restore.is_none() {
            self.restore = Some(w.write_timeout()?);
        }
        let current = self.restore.flatten();
        if current.is_none_or(|t| left < t) {
            // A zero timeout would mean "block for ever": at least 1 ms.
            w.set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
        }
        Ok(())
    }

    /// Puts the socket's send timeout back.
    fn finish(self, w: &TcpStream) {
        if let Some(t) = self.restore {
            let _ = w.set_write_timeout(t);
        }
    }
}

/// Most buffers one `sendmsg` takes (`UIO_MAXIOV`; more fail with `EMSGSIZE`). A
/// response of small Data-In PDUs (MaxRecvDataSegmentLength 512 and a 1 MiB READ: 4096
/// buffers) goes out in several calls.
const IOV_MAX: usize = 1024;

/// Sends all of `bufs`; with `more`, flagged `MSG_MORE` (a file payload follows, so the
/// kernel need not push a short segment with only the header).
fn send_iov(
    w: &mut TcpStream,
    mut bufs: &mut [IoSlice<'_>],
    more: bool,
    b: &mut Bounded,
) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, MsgFlags};
    use std::os::fd::AsRawFd;
    loop {
        if bufs.is_empty() {
            return Ok(());
        }
        let r = if more {
            let n = bufs.len().min(IOV_MAX);
            sendmsg::<()>(
                w.as_raw_fd(),
                &bufs[..n],
                &[],
                // nix 0.29 names no MSG_MORE.
                MsgFlags::from_bits_retain(libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        } else {
            w.write_vectored(bufs)
        };
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                IoSlice::advance_slices(&mut bufs, n);
                if !bufs.is_empty() {
                    b.partial(w)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sends a whole file range with `sendfile(2)`: the kernel takes the bytes from the page
/// cache, no copy through userspace. `sendfile` on this blocking socket obeys
/// `SO_SNDTIMEO` like `write`, so the slow-peer rules hold unchanged. A file that ends
/// before the range does (shortened underneath) fails with `UnexpectedEof`: the PDU
/// whose header is already on the wire cannot be completed, and the caller drops the
/// connection rather than send wrong framing.
fn send_file(w: &mut TcpStream, f: &FileRange, b: &mut Bounded) -> io::Result<()> {
    let mut off = i64::try_from(f.offset())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    let mut left = f.len();
    while left > 0 {
        match nix::sys::sendfile::sendfile64(&*w, f.fd(), Some(&mut off), left) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backing file ended inside a READ's Data-In (shortened underneath)",
                ))
            }
            Ok(n) => {
                left = left.saturating_sub(n);
                if left > 0 {
                    b.partial(w)?;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

const ZEROS: [u8; 4] = [0; 4];

/// The data segment of an outgoing PDU: bytes in memory, or a range of a file sent from
/// the page cache (a READ's Data-In from a plain-file LUN, see `rustio_scsi::direct`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// Bytes in memory.
    Mem(&'a [u8]),
    /// A file range (never with a data digest: the digest needs the bytes).
    File(&'a FileRange),
}

impl Payload<'_> {
    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Payload::Mem(d) => d.len(),
            Payload::File(f) => f.len(),
        }
    }

    /// Whether there is no data.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A PDU's data segment, owned by the PDU being built.
enum Body<'a> {
    Mem(&'a [u8]),
    File(FileRange),
}

/// One PDU ready for the wire: header (+digest) and a borrowed data slice (or a file
/// range).
pub(super) struct OutPdu<'a> {
    hdr: [u8; BHS_LEN + 4],
    hdr_len: usize,
    data: Body<'a>,
    len: usize,
    pad: usize,
    dd: [u8; 4],
    dd_len: usize,
}

impl<'a> OutPdu<'a> {
    pub(super) fn new(h: &Header, data: &'a [u8], digests: Digests) -> OutPdu<'a> {
        let mut p = OutPdu::framed(h, data.len(), digests, Body::Mem(data));
        if digests.data && !data.is_empty() {
            let crc = pdu::crc32c_append(pdu::crc32c(data), &ZEROS[..p.pad]);
            p.dd = pdu::digest_bytes(crc);
            p.dd_len = 4;
        }
        p
    }

    /// A PDU whose data segment is `f`, sent from the page cache. Only without a data
    /// digest (the caller reads the bytes into memory when one is in force).
    pub(super) fn from_file(h: &Header, f: FileRange, digests: Digests) -> OutPdu<'a> {
        debug_assert!(!digests.data, "a data digest needs the bytes in memory");
        OutPdu::framed(h, f.len(), digests, Body::File(f))
    }

    fn framed(h: &Header, len: usize, digests: Digests, data: Body<'a>) -> OutPdu<'a> {
        let bhs = h.encode(0, len as u32);
        let mut hdr = [0u8; BHS_LEN + 4];
        hdr[..BHS_LEN].copy_from_slice(&bhs);
        let mut hdr_len = BHS_LEN;
        if digests.header {
            hdr[BHS_LEN..].copy_from_slice(&pdu::digest_bytes(pdu::crc32c(&bhs)));
            hdr_len += 4;
        }
        OutPdu {
            hdr,
            hdr_len,
            data,
            len,
            pad: pdu::pad_len(len),
            dd: [0; 4],
            dd_len: 0,
        }
    }

    /// Length of the data segment.
    pub(super) fn data_len(&self) -> usize {
        self.len
    }

    /// Appends what follows the data segment on the wire: padding and data digest.
    fn push_tail<'s>(&'s self, iov: &mut Vec<IoSlice<'s>>) {
        if self.len > 0 {
            if self.pad > 0 {
                iov.push(IoSlice::new(&ZEROS[..self.pad]));
            }
            if self.dd_len > 0 {
                iov.push(IoSlice::new(&self.dd));
            }
        }
    }
}

/// Writes `backlog` (the rest of a response a [`write_pdus_now`] left) and then `pdus`,
/// in order, within `deadline`: memory parts gathered into vectored writes, file
/// payloads with `sendfile(2)` between them (the header before one sent with
/// `MSG_MORE`). Any error leaves the stream in an unknown state (a PDU may be cut
/// anywhere): the caller must close the connection.
pub(super) fn write_pdus(
    w: &mut TcpStream,
    backlog: &[u8],
    pdus: &[OutPdu<'_>],
    deadline: Instant,
) -> io::Result<()> {
    let mut b = Bounded::new(Some(deadline));
    let r = write_pdus_bounded(w, backlog, pdus, &mut b);
    b.finish(w);
    r
}

fn write_pdus_bounded(
    w: &mut TcpStream,
    backlog: &[u8],
    pdus: &[OutPdu<'_>],
    b: &mut Bounded,
) -> io::Result<()> {
    let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(pdus.len() * 4 + 1);
    if !backlog.is_empty() {
        iov.push(IoSlice::new(backlog));
    }
    for p in pdus {
        iov.push(IoSlice::new(&p.hdr[..p.hdr_len]));
        match &p.data {
            Body::Mem(d) => {
                if !d.is_empty() {
                    iov.push(IoSlice::new(d));
                }
            }
            Body::File(f) => {
                if !f.is_empty() {
                    send_iov(w, &mut iov, true, b)?;
                    iov.clear();
                    send_file(w, f, b)?;
                }
            }
        }
        p.push_tail(&mut iov);
    }
    send_iov(w, &mut iov, false, b)
}

/// Writes what of `pdus` the socket takes at once, never blocking (`MSG_DONTWAIT`), and
/// appends the rest, byte for byte, to `rest` (empty before): whoever writes next on
/// the connection sends it first ([`write_pdus`]'s `backlog`). For a thread that must
/// not wait on any one peer (the store's completion thread). Memory payloads only: a
/// file range is refused with `InvalidInput` before anything is written. An error other
/// than a full socket leaves the stream in an unknown state, as for [`write_pdus`].
pub(super) fn write_pdus_now(
    w: &TcpStream,
    pdus: &[OutPdu<'_>],
    rest: &mut Vec<u8>,
) -> io::Result<()> {
    use nix::sys::socket::sendmsg;
    let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(pdus.len() * 4);
    for p in pdus {
        let Body::Mem(d) = &p.data else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a file payload cannot be written without blocking",
            ));
        };
        iov.push(IoSlice::new(&p.hdr[..p.hdr_len]));
        if !d.is_empty() {
            iov.push(IoSlice::new(d));
        }
        p.push_tail(&mut iov);
    }
    let mut bufs = &mut iov[..];
    while !bufs.is_empty() {
        let n = bufs.len().min(IOV_MAX);
        match sendmsg::<()>(
            w.as_raw_fd(),
            &bufs[..n],
            &[],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                rest.reserve_exact(bufs.iter().map(|s| s.len()).sum());
                for s in bufs.iter() {
                    rest.extend_from_slice(s);
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The writing half of a connection, under the connection's writer lock: whoever holds
/// it assigns StatSN, so StatSN order is wire order.
pub(super) struct Writer {
    pub(super) stream: TcpStream,
    pub(super) stat_sn: u32,
    pub(super) broken: bool,
    /// The unsent rest of a response written without blocking ([`write_pdus_now`]):
    /// on the wire before anything else. At most one response's bytes: nobody writes
    /// without blocking while it is not empty.
    pub(super) backlog: Vec<u8>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stat_sn", &self.stat_sn)
            .field("broken", &self.broken)
            .field("backlog", &self.backlog.len())
            .finish()
    }
}

/// Recycled Data-Out buffers: a write's buffer, given back when it ended, serves a later
/// write of the connection instead of a fresh allocation, which glibc serves from newly
/// mapped pages (page faults and zeroing of cold memory per command; measured in
/// `bench/README.md`).
#[derive(Debug, Default)]
pub(super) struct BufPool(Mutex<Vec<Vec<u8>>>);

impl BufPool {
    /// Most buffers kept.
    const MAX_BUFS: usize = 16;
    /// Most bytes (capacity) kept, so that an idle connection holds little memory.
    const MAX_BYTES: usize = 4 << 20;
    /// Largest single buffer kept.
    const MAX_BUF: usize = Self::MAX_BYTES / 4;

    /// A zero-filled buffer of `len` bytes (a recycled one when there is one). Write
    /// commands take only what has arrived and grow the buffer as data is solicited.
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
        let mut v = self.0.lock().pop().unwrap_or_default();
        v.clear();
        v.resize(len, 0);
        v
    }

    /// Returns a buffer for reuse (dropped when the pool is full or it is too large).
    pub(super) fn give(&self, v: Vec<u8>) {
        if v.capacity() == 0 || v.capacity() > Self::MAX_BUF {
            return;
        }
        let mut pool = self.0.lock();
        let held: usize = pool.iter().map(Vec::capacity).sum();
        if pool.len() < Self::MAX_BUFS && held + v.capacity() <= Self::MAX_BYTES {
            pool.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_write_buffers_come_back_zeroed() {
        let pool = BufPool::default();
        let mut v = pool.take(8192);
        assert_eq!(v.len(), 8192);
        assert!(v.iter().all(|&b| b == 0));
        v.fill(0xab);
        let cap = v.capacity();
        pool.give(v);
        let w = pool.take(4096);
        assert_eq!(w.len(), 4096);
        assert!(w.capacity() >= cap, "the buffer was not reused");
        assert!(w.iter().all(|&b| b == 0), "stale data in a recycled buffer");
        // Too large to keep.
        pool.give(vec![0; BufPool::MAX_BUF + 1]);
        assert!(pool.0.lock().is_empty());
        // At most MAX_BUFS kept.
        for _ in 0..BufPool::MAX_BUFS + 4 {
            pool.give(vec![1; 4096]);
        }
        assert_eq!(pool.0.lock().len(), BufPool::MAX_BUFS);
    }

    #[test]
    fn transfer_allowance_adds_size_at_the_minimum_rate() {
        let t = Duration::from_secs(30);
        // 1 MiB at 1 MiB/s: one second on top of the timeout.
        assert_eq!(
            transfer_allowance(t, 1 << 20, 1 << 20),
            Duration::from_secs(31)
        );
        // 64 MiB (the largest write) at 1 MiB/s.
        assert_eq!(
            transfer_allowance(t, 64 << 20, 1 << 20),
            Duration::from_secs(94)
        );
        // 512 B at 1 KiB/s: half a second.
        assert_eq!(
            transfer_allowance(Duration::ZERO, 512, 1024),
            Duration::from_millis(500)
        );
        // A zero rate (refused by validation) and huge sizes do not panic.
        assert!(transfer_allowance(t, u64::MAX, 0) >= t);
    }

    #[test]
    fn reader_deadline_is_not_pushed_back_by_dripping_bytes() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            // One byte every 20 ms (more often than the read timeout): 48 bytes would
            // take ~1 s; the deadline is 300 ms.
            for b in 0..48u8 {
                if c.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut r = Reader::new(s, 64);
        let start = Instant::now();
        r.set_deadline(Deadline::after(start, Duration::from_millis(300)));
        let mut bhs = [0u8; BHS_LEN];
        let e = r.read_exact(&mut bhs, &|| false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(600),
            "deadline overran: {took:?}"
        );
        // Without a deadline the same reader carries on.
        r.set_deadline(None);
        let mut one = [0u8; 1];
        r.read_exact(&mut one, &|| false).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn reader_handles_split_input() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(&[1, 2, 3]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            c.write_all(&(4u8..=200).collect::<Vec<_>>()).unwrap();
        });
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut r = Reader::new(s, 64);
        let mut a = [0u8; 5];
        r.read_exact(&mut a, &|| false).unwrap();
        assert_eq!(a, [1, 2, 3, 4, 5]);
        let mut b = vec![0u8; 195];
        r.read_exact(&mut b, &|| false).unwrap();
        assert_eq!(b[0], 6);
        assert_eq!(b[194], 200);
        t.join().unwrap();
    }

    /// A connected pair: our end (a `Reader` polling for `poll`) and the peer's.
    fn polling_pair(poll: Duration) -> (Reader, TcpStream) {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut r = Reader::new(s, 64);
        r.set_busy_poll(poll);
        (r, peer)
    }

    #[test]
    fn busy_poll_takes_what_arrives_and_reports_eof() {
        let (mut r, mut peer) = polling_pair(Duration::from_millis(2));
        // Sent before the poll: taken by it, in order, and parsed as usual.
        peer.write_all(&[7, 8, 9]).unwrap();
        let mut got = None;
        for _ in 0..1000 {
            got = r.poll_briefly(1, || true).unwrap();
            if got.is_some() {
                break;
            }
            // Nothing yet (the bytes are in flight): a poll that found nothing is not
            // repeated until bytes come the blocking way.
            r.poll_armed = true;
        }
        assert_eq!(got, Some(3));
        assert!(r.wait_pdu().unwrap());
        let mut b = [0u8; 3];
        r.read_exact(&mut b, &|| false).unwrap();
        assert_eq!(b, [7, 8, 9]);
        // Nothing sent: the poll gives up, leaves nothing buffered, and the connection
        // is idle: no further poll until a byte arrives through the blocking read.
        assert!(r.poll_briefly(1, || true).unwrap().is_none());
        assert_eq!(r.buffered(), 0);
        peer.write_all(&[4]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(r.poll_briefly(1, || true).unwrap().is_none());
        assert_eq!(r.buffered(), 0, "an idle connection polled again");
        assert!(r.wait_pdu().unwrap());
        let mut b = [0u8; 1];
        r.read_exact(&mut b, &|| false).unwrap();
        assert_eq!(b, [4]);
        // That byte re-armed the poll: the next one is taken by it.
        peer.write_all(&[5, 6]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(r.poll_briefly(1, || true).unwrap(), Some(2));
        r.read_exact(&mut [0u8; 2], &|| false).unwrap();
        // The peer closes: EOF, through wait_pdu too.
        drop(peer);
        let e = r.wait_pdu().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn busy_poll_off_without_a_slot_or_a_spare_cpu_leaves_the_socket_to_the_blocking_read() {
        let (mut r, mut peer) = polling_pair(Duration::from_millis(2));
        peer.write_all(&[1, 2]).unwrap();
        // No free slot (a limit of 0): no poll at all, the bytes stay in the socket.
        assert!(r.poll_briefly(0, || true).unwrap().is_none());
        assert_eq!(r.buffered(), 0);
        // No spare CPU on the host: the same.
        assert!(r.poll_briefly(1, || false).unwrap().is_none());
        assert_eq!(r.buffered(), 0);
        // Polling off: the same.
        r.set_busy_poll(Duration::ZERO);
        assert!(r.poll_briefly(1, || true).unwrap().is_none());
        // The blocking read still gets them.
        assert!(r.wait_pdu().unwrap());
        let mut b = [0u8; 2];
        r.read_exact(&mut b, &|| false).unwrap();
        assert_eq!(b, [1, 2]);
    }

    /// proc(5): "The fourth field consists of two numbers separated by a slash (/). The
    /// first of these is the number of currently runnable kernel scheduling entities".
    #[test]
    fn runnable_threads_are_the_fourth_fields_numerator() {
        assert_eq!(runnable_threads("0.20 0.18 0.12 1/80 11206\n"), Some(1));
        assert_eq!(runnable_threads("4.07 3.36 2.23 17/1234 99"), Some(17));
        assert_eq!(runnable_threads("0.20 0.18 0.12"), None);
        assert_eq!(runnable_threads("0.20 0.18 0.12 80 11206"), None);
        assert_eq!(runnable_threads("0.20 0.18 0.12 -1/80 1"), None);
        assert_eq!(runnable_threads(""), None);
        // The real file on this host parses, with at least this thread runnable.
        let real = std::fs::read_to_string("/proc/loadavg").unwrap();
        assert!(runnable_threads(&real).unwrap() >= 1);
    }

    proptest::proptest! {
        /// Any text: a count or nothing, never a panic.
        #[test]
        fn runnable_threads_never_panics(s in ".{0,64}") {
            let _ = runnable_threads(&s);
        }

        /// Whatever the averages and counts, the numerator comes back.
        #[test]
        fn runnable_threads_reads_any_count(n: u32, m: u32, a in 0.0f64..1e4, pid: u32) {
            let text = format!("{a:.2} {a:.2} {a:.2} {n}/{m} {pid}\n");
            proptest::prop_assert_eq!(runnable_threads(&text), Some(n));
        }
    }

    #[test]
    fn poll_slots_are_bounded_and_given_back() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let a = PollSlot::claim(&COUNT, 2).expect("a free slot");
        let b = PollSlot::claim(&COUNT, 2).expect("a second slot");
        assert!(PollSlot::claim(&COUNT, 2).is_none(), "over the limit");
        drop(a);
        assert_eq!(COUNT.load(Ordering::Acquire), 1);
        let c = PollSlot::claim(&COUNT, 2).expect("the slot given back");
        drop((b, c));
        assert_eq!(COUNT.load(Ordering::Acquire), 0);
    }
}
