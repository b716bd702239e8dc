//! The one HTTP endpoint of rustio: `GET /metrics` answered with a Prometheus text
//! exposition (format 0.0.4) produced by a render function. Used by `rustio serve`
//! (through `rustio_iscsi::metrics`) and by the TCMU runner (through
//! `rustio_tcmu::metrics`).
//!
//! The peer is untrusted, so everything is bounded ([`Limits`]): the size of the request
//! head (request line and headers), the number of header lines, the wall-clock time to
//! receive the head and to send the answer, and the number of connections served at
//! once (further connections are closed at once). Only `GET /metrics` (with an optional
//! query string) is served; other paths get 404, other methods 405, malformed requests
//! 400 and oversized heads 431 (RFC 9110 15.5, RFC 6585 5). Every answer closes the
//! connection (`Connection: close`), so there is no keep-alive state to bound.
//!
//! The request head is parsed by `httparse` (the parser under hyper: RFC 9112 request
//! line and header syntax, a caller-sized header array, no allocation). Around it this
//! crate adds only what the small HTTP servers (e.g. `tiny_http` 0.12, unreleased since
//! 2022) lack and an untrusted peer requires: a wall-clock read deadline, a size cap on
//! the head, a connection cap and a bounded send.
//!
//! [`parse_listen_addr`] turns the `--metrics` argument into an address: a bare port
//! binds to loopback (127.0.0.1), any other interface must be named explicitly.

#![warn(missing_docs)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Renders the current metrics text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Bounds of the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of request head (request line + headers + blank line) read.
    pub max_request_bytes: usize,
    /// Most header lines accepted.
    pub max_headers: usize,
    /// Wall-clock time allowed to receive the whole request head.
    pub read_timeout: Duration,
    /// Wall-clock time allowed to send the whole answer.
    pub write_timeout: Duration,
    /// Connections served at once; more are closed without an answer.
    pub max_connections: usize,
}

impl Default for Limits {
    /// 8 KiB head, 64 headers, 5 s to read, 5 s to write, 8 connections.
    fn default() -> Self {
        Limits {
            max_request_bytes: 8 * 1024,
            max_headers: 64,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_connections: 8,
        }
    }
}

/// Parses a `--metrics` value: `PORT` (bound to 127.0.0.1), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u16>()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .map_err(|_| format!("port {s:?} is not in 0..=65535"));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?} is neither a port (bound to 127.0.0.1) nor an address like 0.0.0.0:9100")
    })
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// `GET /metrics`: 200 with the metrics.
    Metrics,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// Malformed: 400.
    BadRequest,
    /// Too many headers or too large: 431.
    TooLarge,
}

impl Verdict {
    fn status(self) -> &'static str {
        match self {
            Verdict::Metrics => "200 OK",
            Verdict::NotFound => "404 Not Found",
            Verdict::MethodNotAllowed => "405 Method Not Allowed",
            Verdict::BadRequest => "400 Bad Request",
            Verdict::TooLarge => "431 Request Header Fields Too Large",
        }
    }
}

/// Judges a request head: `None` while it is incomplete (read more), else the verdict.
fn judge(buf: &[u8], limits: &Limits) -> Option<(Verdict, usize)> {
    // One slot more than allowed, so that "one header too many" is seen as such rather
    // than as httparse's TooManyHeaders for an array that is merely full.
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers.saturating_add(1)];
    let mut req = httparse::Request::new(&mut headers);
    let end = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return None,
        Ok(httparse::Status::Complete(end)) => end,
        Err(httparse::Error::TooManyHeaders) => return Some((Verdict::TooLarge, buf.len())),
        Err(_) => return Some((Verdict::BadRequest, buf.len())),
    };
    if req.headers.len() > limits.max_headers {
        return Some((Verdict::TooLarge, end));
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Some((Verdict::BadRequest, end));
    };
    let verdict = if !target.starts_with('/') {
        Verdict::BadRequest
    } else if method != "GET" {
        Verdict::MethodNotAllowed
    } else if target.split_once('?').map_or(target, |(p, _)| p) == "/metrics" {
        Verdict::Metrics
    } else {
        Verdict::NotFound
    };
    Some((verdict, end))
}

/// Reads the request head within the limits and judges it.
fn read_head(conn: &mut TcpStream, limits: &Limits) -> io::Result<Verdict> {
    let deadline = Instant::now() + limits.read_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            ));
        }
        conn.set_read_timeout(Some(left))?;
        let room = limits
            .max_request_bytes
            .saturating_add(1)
            .saturating_sub(buf.len())
            .min(chunk.len());
        let n = conn.read(&mut chunk[..room])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the end of the request head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        match judge(&buf, limits) {
            Some((_, end)) if end > limits.max_request_bytes => return Ok(Verdict::TooLarge),
            Some((verdict, _)) => return Ok(verdict),
            None if buf.len() > limits.max_request_bytes => return Ok(Verdict::TooLarge),
            None => {}
        }
    }
}

/// A byte sink whose single `write` can be bounded in time: a TCP stream with
/// `SO_SNDTIMEO` (see [`write_bounded`]); tests substitute a scripted slow peer.
trait TimedWrite {
    /// Bounds the next `write` to `d` (non-zero).
    fn set_timeout(&mut self, d: Duration) -> io::Result<()>;
    /// One `send()`: blocks at most the timeout, may accept only part of `buf`.
    fn write_once(&mut self, buf: &[u8]) -> io::Result<usize>;
}

impl TimedWrite for TcpStream {
    fn set_timeout(&mut self, d: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(d))
    }

    fn write_once(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }
}

/// Writes `data` before the wall-clock `deadline` or fails with `TimedOut`.
///
/// One `write` (one `send()`) per step with `SO_SNDTIMEO` set to the time left, and
/// the deadline checked before every step. Not `write_all`: it calls `send()` again after
/// every partial send, each time with the whole timeout, so a peer that reads a little
/// just before each timeout expires could hold the connection (and one of the few
/// connection slots) far beyond the deadline. Linux counts `SO_SNDTIMEO` down across
/// one `send()`'s waits (`sk_stream_wait_memory`), so each step ends by the deadline.
fn write_bounded<W: TimedWrite>(conn: &mut W, data: &[u8], deadline: Instant) -> io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "answer not sent in time",
            ));
        }
        conn.set_timeout(left)?;
        match conn.write_once(rest) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "peer accepts no more data",
                ))
            }
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // SO_SNDTIMEO expired with nothing sent.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "answer not sent in time",
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn answer(mut conn: TcpStream, render: &Render, limits: &Limits) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    let verdict = read_head(&mut conn, limits)?;
    let body = if verdict == Verdict::Metrics {
        render()
    } else {
        String::new()
    };
    let ctype = if verdict == Verdict::Metrics {
        "text/plain; version=0.0.4"
    } else {
        "text/plain"
    };
    let allow = if verdict == Verdict::MethodNotAllowed {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        verdict.status(),
        body.len()
    );
    let deadline = Instant::now() + limits.write_timeout;
    write_bounded(&mut conn, head.as_bytes(), deadline)?;
    write_bounded(&mut conn, body.as_bytes(), deadline)?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// Decrements the active-connection count when a connection thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `listener` until `stop` is set; returns the accept thread. Each connection is
/// answered on its own thread, at most `limits.max_connections` at once.
pub fn serve(
    listener: TcpListener,
    render: Render,
    limits: Limits,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("rustio-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let (conn, peer) = match listener.accept() {
                    Ok(x) => x,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            tracing::debug!(error = %e, "metrics accept failed");
                        }
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if active.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
                    active.fetch_sub(1, Ordering::AcqRel);
                    tracing::debug!(%peer, max = limits.max_connections,
                        "metrics connection closed: too many connections");
                    drop(conn);
                    continue;
                }
                let slot = Slot(active.clone());
                let render = render.clone();
                let spawned = std::thread::Builder::new()
                    .name("rustio-metrics-conn".into())
                    .spawn(move || {
                        let _slot = slot;
                        if let Err(e) = answer(conn, &render, &limits) {
                            tracing::debug!(%peer, error = %e, "metrics request failed");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "metrics: cannot start a connection thread");
                }
            }
        })
}

/// A running endpoint; stops (and joins its accept thread) when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves an already-bound listener with `limits`.
    pub fn start(listener: TcpListener, render: Render, limits: Limits) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = serve(listener, render, limits, stop.clone())?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Binds `addr` and serves it with the default [`Limits`].
    pub fn bind(addr: SocketAddr, render: Render) -> io::Result<Self> {
        MetricsServer::start(TcpListener::bind(addr)?, render, Limits::default())
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_request_bytes: 1024,
            max_headers: 4,
            read_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_secs(2),
            max_connections: 2,
        }
    }

    #[test]
    fn listen_addr_defaults_to_loopback() {
        assert_eq!(
            parse_listen_addr("9100").unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("0.0.0.0:9100").unwrap(),
            "0.0.0.0:9100".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::1]:9100").unwrap(),
            "[::1]:9100".parse().unwrap()
        );
        assert!(parse_listen_addr("70000").is_err());
        assert!(parse_listen_addr("").is_err());
        assert!(parse_listen_addr("localhost:9100").is_err());
    }

    #[test]
    fn judges_requests() {
        let l = limits();
        let j = |s: &str| {
            judge(s.as_bytes(), &l)
                .map(|(v, _)| v)
                .unwrap_or(Verdict::BadRequest)
        };
        assert_eq!(
            j("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Verdict::Metrics
        );
        assert_eq!(j("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Verdict::Metrics);
        assert_eq!(j("GET / HTTP/1.1\r\n\r\n"), Verdict::NotFound);
        assert_eq!(j("GET /metricsx HTTP/1.1\r\n\r\n"), Verdict::NotFound);
        assert_eq!(
            j("POST /metrics HTTP/1.1\r\n\r\n"),
            Verdict::MethodNotAllowed
        );
        assert_eq!(j("GET /metrics\r\n\r\n"), Verdict::BadRequest);
        assert_eq!(j("GET /metrics HTTP/2\r\n\r\n"), Verdict::BadRequest);
        assert_eq!(
            j("GET /metrics HTTP/1.1\r\nnocolon\r\n\r\n"),
            Verdict::BadRequest
        );
        assert_eq!(j("GET metrics HTTP/1.1\r\n\r\n"), Verdict::BadRequest);
        assert_eq!(
            j("GET /metrics HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n"),
            Verdict::Metrics
        );
        assert_eq!(
            j("GET /metrics HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n"),
            Verdict::TooLarge
        );
        assert_eq!(
            judge(b"GET /\xff HTTP/1.1\r\n\r\n", &l).map(|(v, _)| v),
            Some(Verdict::BadRequest)
        );
        // Incomplete heads ask for more bytes; the end offset is where the body would start.
        assert_eq!(judge(b"GET /metrics HTTP/1.1\r\nHost: x\r\n", &l), None);
        assert_eq!(
            judge(b"GET /metrics HTTP/1.1\r\n\r\nrest", &l),
            Some((Verdict::Metrics, 25))
        );
    }

    proptest::proptest! {
        /// Any bytes (as an untrusted peer sends them): no panic, and a verdict's end
        /// offset never lies beyond the bytes given.
        #[test]
        fn judge_never_panics(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            if let Some((_, end)) = judge(&buf, &limits()) {
                proptest::prop_assert!(end <= buf.len());
            }
        }

        /// A well-formed GET of any path is judged by its path alone.
        #[test]
        fn judge_routes_by_path(path in "/[a-z?=&]{0,40}", n in 0usize..4) {
            let headers: String = (0..n).map(|i| format!("h{i}: v\r\n")).collect();
            let req = format!("GET {path} HTTP/1.1\r\n{headers}\r\n");
            let want = if path.split('?').next() == Some("/metrics") {
                Verdict::Metrics
            } else {
                Verdict::NotFound
            };
            proptest::prop_assert_eq!(judge(req.as_bytes(), &limits()), Some((want, req.len())));
        }
    }

    fn start() -> MetricsServer {
        MetricsServer::start(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Arc::new(|| "rustio_up 1\n".to_string()),
            limits(),
        )
        .unwrap()
    }

    fn exchange(addr: SocketAddr, req: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(req).unwrap();
        let mut resp = Vec::new();
        let _ = c.read_to_end(&mut resp);
        String::from_utf8_lossy(&resp).into_owned()
    }

    #[test]
    fn serves_get_metrics_only() {
        let srv = start();
        let r = exchange(
            srv.local_addr(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4\r\n"));
        assert!(r.ends_with("\r\n\r\nrustio_up 1\n"));
        let r = exchange(srv.local_addr(), b"GET / HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = exchange(srv.local_addr(), b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET\r\n"),
            "{r}"
        );
    }

    #[test]
    fn oversized_request_line_is_refused() {
        let srv = start();
        // A request line longer than the head limit, never terminated.
        let mut req = b"GET /".to_vec();
        req.extend(std::iter::repeat_n(b'a', 4000));
        let r = exchange(srv.local_addr(), &req);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }

    #[test]
    fn silent_peer_is_dropped_after_the_read_deadline() {
        let srv = start();
        let mut c = TcpStream::connect(srv.local_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t0 = Instant::now();
        // Drip one byte at a time: the deadline is for the whole head, not per read.
        let mut buf = [0u8; 64];
        let mut closed = false;
        for _ in 0..20 {
            if c.write_all(b"G").is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            c.set_nonblocking(true).unwrap();
            let r = c.read(&mut buf);
            c.set_nonblocking(false).unwrap();
            if matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() != io::ErrorKind::WouldBlock) {
                closed = true;
                break;
            }
        }
        assert!(closed, "connection still open after {:?}", t0.elapsed());
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    /// A peer that takes `per_write` for each `send()` (never more than the timeout in
    /// force, as `SO_SNDTIMEO` guarantees) and accepts `bytes` bytes each time: a slow
    /// reader that keeps making a little progress.
    struct SlowPeer {
        per_write: Duration,
        bytes: usize,
        timeout: Duration,
        received: usize,
    }

    impl TimedWrite for SlowPeer {
        fn set_timeout(&mut self, d: Duration) -> io::Result<()> {
            assert!(!d.is_zero());
            self.timeout = d;
            Ok(())
        }

        fn write_once(&mut self, buf: &[u8]) -> io::Result<usize> {
            std::thread::sleep(self.per_write.min(self.timeout));
            let n = self.bytes.min(buf.len());
            self.received += n;
            Ok(n)
        }
    }

    #[test]
    fn a_slowly_reading_peer_gets_the_wall_clock_deadline() {
        // Review of 6246fed: write_all retried partial sends, each with a fresh timeout,
        // so 16 KiB at 10 bytes per 20 ms took 33 s instead of the 200 ms allowed.
        let mut peer = SlowPeer {
            per_write: Duration::from_millis(20),
            bytes: 10,
            timeout: Duration::ZERO,
            received: 0,
        };
        let data = vec![b'x'; 16 * 1024];
        let t0 = Instant::now();
        let r = write_bounded(&mut peer, &data, t0 + Duration::from_millis(200));
        let took = t0.elapsed();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(took < Duration::from_millis(600), "took {took:?}");
        assert!(peer.received > 0 && peer.received < data.len());
        // A peer that keeps up gets everything.
        let mut fast = SlowPeer {
            per_write: Duration::ZERO,
            bytes: 1000,
            timeout: Duration::ZERO,
            received: 0,
        };
        write_bounded(&mut fast, &data, Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(fast.received, data.len());
    }

    #[test]
    fn peers_that_stop_reading_free_their_slots_at_the_deadline() {
        // Real sockets: an answer larger than the loopback buffers, never read, by as
        // many peers as there are connection slots.
        let body = Arc::new("x".repeat(16 << 20));
        let srv = MetricsServer::start(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Arc::new(move || body.as_str().to_owned()),
            Limits {
                write_timeout: Duration::from_millis(300),
                ..limits()
            },
        )
        .unwrap();
        let stuck: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut c = TcpStream::connect(srv.local_addr()).unwrap();
                c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // Within the deadline (plus scheduling slack) the slots are free again.
        let t0 = Instant::now();
        let served = loop {
            let mut c = TcpStream::connect(srv.local_addr()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(b"GET / HTTP/1.1\r\n\r\n");
            let mut resp = Vec::new();
            let _ = c.read_to_end(&mut resp);
            if resp.starts_with(b"HTTP/1.1 404 ") {
                break true;
            }
            if t0.elapsed() > Duration::from_secs(3) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(served, "slots still held after {:?}", t0.elapsed());
        drop(stuck);
    }

    #[test]
    fn connections_beyond_the_cap_are_closed() {
        let srv = start();
        // Two idle connections take both slots.
        let a = TcpStream::connect(srv.local_addr()).unwrap();
        let b = TcpStream::connect(srv.local_addr()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut c = TcpStream::connect(srv.local_addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        let _ = c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
        let mut resp = Vec::new();
        let r = c.read_to_end(&mut resp);
        // Closed unanswered: EOF, or a reset because the request was left unread.
        let closed = match &r {
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        };
        assert!(
            closed && resp.is_empty(),
            "third connection was served: {r:?}"
        );
        drop((a, b));
        // Once the idle ones time out, service resumes.
        std::thread::sleep(Duration::from_millis(400));
        let r = exchange(srv.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    }
}
