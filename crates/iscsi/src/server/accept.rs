//! Taking connections in: admission caps, the login phase with its deadline, and the
//! hand-over to the full feature phase.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use rustio_iscsi_proto::login::SessionType;
use rustio_iscsi_proto::pdu::{self, BhsInfo, Digests, Header, BHS_LEN};

use crate::config::ServerConfig;
use crate::conn::io::{Reader, TICK};
use crate::conn::recv::ConnReader;
use crate::conn::{Conn, Registry};
use crate::limits::{Caps, ConnSlot, Deadline};
use crate::login::{LoginDone, LoginMachine, Step};
use crate::{Error, Result};

use super::Shared;

/// Read buffer of a connection.
const READ_BUF: usize = 64 * 1024;
/// Data segment limit during login (RFC 7143 13.12: the default 8192 applies).
const LOGIN_MAX_DATA: u32 = 8192;

/// Reads one login-phase PDU (no digests yet). `Ok(None)` on a tick without data.
fn read_login_pdu(
    reader: &mut Reader,
    abort: &dyn Fn() -> bool,
) -> io::Result<Option<([u8; BHS_LEN], Vec<u8>)>> {
    if !reader.wait_pdu()? {
        return Ok(None);
    }
    let mut bhs = [0u8; BHS_LEN];
    reader.read_exact(&mut bhs, abort)?;
    let info = BhsInfo::of(&bhs);
    reader.skip(info.ahs_len, abort)?;
    if info.data_len > LOGIN_MAX_DATA {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "login data segment exceeds 8192 bytes",
        ));
    }
    let len = info.data_len as usize;
    let mut data = vec![0u8; len + pdu::pad_len(len)];
    reader.read_exact(&mut data, abort)?;
    data.truncate(len);
    Ok(Some((bhs, data)))
}

/// Serves one accepted connection: login, then the full feature phase until it ends.
fn handle_connection(shared: Arc<Shared>, stream: TcpStream, slot: ConnSlot) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(TICK));
    // Bounded-time sends (issue 20 item 3): SO_SNDTIMEO applies to every clone of the
    // socket, so login responses and the full feature phase writer both get it.
    let _ = stream.set_write_timeout(Some(shared.config().send_timeout));
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
        return;
    };
    debug!(%peer, %local, "connection accepted");
    shared
        .services
        .metrics
        .connections
        .fetch_add(1, Ordering::Relaxed);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = Reader::new(read_half, READ_BUF);
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let Some(login) = login_phase(&shared, &mut reader, &mut w, local, peer) else {
        return;
    };
    full_feature_phase(&shared, &stream, reader, w, slot, login, peer);
}

/// A login that completed: the machine (for the final response) and what was agreed.
struct CompletedLogin {
    machine: LoginMachine,
    done: LoginDone,
    /// The configuration the login was checked against.
    cfg: Arc<ServerConfig>,
}

/// The login phase (RFC 7143 6): Login Requests through the login state machine within
/// the login timeout; `None` when the login failed or the connection ended (logged).
fn login_phase(
    shared: &Arc<Shared>,
    reader: &mut Reader,
    w: &mut TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<CompletedLogin> {
    let cfg = shared.config();
    // One wall-clock deadline for the whole login phase, checked on every read (not
    // only between PDUs), so bytes dripping in do not extend it.
    let start = Instant::now();
    let deadline = start + cfg.login_timeout;
    reader.set_deadline(Deadline::after(start, cfg.login_timeout));
    let mut machine =
        LoginMachine::new(cfg.clone(), local).with_auth_guard(shared.auth_guard.clone(), peer);
    let sh = shared.clone();
    let abort = move || sh.shutting_down.load(Ordering::Acquire);
    let fail = |shared: &Shared, why: &str| login_failed(shared, peer, why);
    loop {
        if abort() {
            fail(shared, "shutdown");
            return None;
        }
        if Instant::now() >= deadline {
            login_deadline_passed(shared, peer, cfg.login_timeout);
            return None;
        }
        let (bhs, data) = match read_login_pdu(reader, &abort) {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::TimedOut && Instant::now() >= deadline => {
                login_deadline_passed(shared, peer, cfg.login_timeout);
                return None;
            }
            Err(e) => {
                debug!(%peer, error = %e, "connection closed during login");
                return None;
            }
        };
        let Header::LoginRequest(req) = Header::parse(&bhs) else {
            // RFC 7143 6.3: only Login Requests before full feature phase.
            fail(shared, "non-login PDU during login");
            return None;
        };
        match machine.step(&req, &data) {
            Step::Respond(pdu) => {
                if w.write_all(&pdu.encode(Digests::default())).is_err() {
                    return None;
                }
            }
            Step::Fail(pdu) => {
                let _ = w.write_all(&pdu.encode(Digests::default()));
                if let Header::LoginResponse(h) = &pdu.header {
                    fail(
                        shared,
                        &format!("status {:#04x}{:02x}", h.status_class, h.status_detail),
                    );
                }
                let _ = w.flush();
                return None;
            }
            Step::Complete(done) => {
                return Some(CompletedLogin {
                    machine,
                    done: *done,
                    cfg,
                });
            }
        }
    }
}

/// Binds a completed login to its session, sends the final Login Response and runs the
/// connection's full feature phase until it ends.
fn full_feature_phase(
    shared: &Arc<Shared>,
    stream: &TcpStream,
    mut reader: Reader,
    mut w: TcpStream,
    mut slot: ConnSlot,
    login: CompletedLogin,
    peer: SocketAddr,
) {
    let CompletedLogin {
        mut machine,
        done,
        cfg,
    } = login;
    let bound = shared.bind_session(&done, &cfg);
    let (sess, _new) = match bound {
        Ok(x) => x,
        Err(st) => {
            let pdu = machine.fail(st);
            let _ = w.write_all(&pdu.encode(Digests::default()));
            login_failed(shared, peer, &format!("status {:#04x}{:02x}", st.0, st.1));
            return;
        }
    };
    let final_pdu = machine.finish(sess.tsih, sess.exp_cmd_sn(), sess.max_cmd_sn());
    let digests = Digests {
        header: done.negotiated.header_digest,
        data: done.negotiated.data_digest,
    };
    let id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let conn = match Conn::new(
        id,
        done.cid,
        stream,
        digests,
        done.negotiated.initiator_mrdsl,
        done.negotiated.target_mrdsl.max(LOGIN_MAX_DATA),
        done.stat_sn.wrapping_add(1),
        sess.clone(),
        shared.services.clone(),
        shared.clone(),
    ) {
        Ok(c) => Arc::new(c),
        Err(_) => return,
    };
    sess.conns.lock().push(conn.clone());
    shared.conns.lock().insert(id, conn.clone());
    slot.logged_in();
    reader.set_deadline(None);
    if w.write_all(&final_pdu.encode(Digests::default())).is_err() {
        conn.close();
        shared.connection_ended(&conn);
        return;
    }
    shared
        .services
        .metrics
        .logins
        .fetch_add(1, Ordering::Relaxed);
    info!(
        %peer,
        initiator = %done.initiator_name,
        target = sess.target_name(),
        tsih = sess.tsih,
        cid = done.cid,
        discovery = (done.session_type == SessionType::Discovery),
        header_digest = digests.header,
        data_digest = digests.data,
        "login complete"
    );
    if shared.shutting_down.load(Ordering::Acquire) {
        conn.request_logout(1);
    }
    ConnReader::new(conn, reader).run();
}

/// Counts and logs a failed login.
fn login_failed(shared: &Shared, peer: SocketAddr, why: &str) {
    shared
        .services
        .metrics
        .login_failures
        .fetch_add(1, Ordering::Relaxed);
    info!(%peer, reason = why, "login failed");
}

fn login_deadline_passed(shared: &Shared, peer: SocketAddr, limit: Duration) {
    shared
        .services
        .metrics
        .login_failures
        .fetch_add(1, Ordering::Relaxed);
    shared
        .services
        .limit_counters
        .login_timeouts
        .fetch_add(1, Ordering::Relaxed);
    warn!(
        %peer,
        login_timeout_secs = limit.as_secs_f64(),
        "login not complete within the login timeout; closing the connection"
    );
}

/// Admits an accepted connection under the caps, or closes it at once with a log line.
fn admit(shared: &Shared, peer: SocketAddr) -> Option<ConnSlot> {
    let cfg = shared.config();
    let caps = Caps {
        total: cfg.max_connections,
        per_source: cfg.max_connections_per_source,
        pending: cfg.max_pending_logins,
        pending_per_source: cfg.max_pending_logins_per_source,
    };
    match shared.conn_tracker.admit(peer.ip(), caps) {
        Ok(slot) => Some(slot),
        Err(r) => {
            shared
                .services
                .limit_counters
                .refused
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = shared.refusal_log.allow(Instant::now()) {
                let (limit, value) = r.limit();
                warn!(
                    %peer,
                    limit,
                    value,
                    suppressed,
                    "connection refused: {limit} ({value}) reached"
                );
            }
            None
        }
    }
}

pub(super) struct Acceptor {
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub(super) fn start(shared: Arc<Shared>, listener: TcpListener) -> Result<Acceptor> {
        let addr = listener.local_addr().map_err(Error::Io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rustio-accept-{addr}"))
            .spawn(move || loop {
                match listener.accept() {
                    Ok((s, peer)) => {
                        if stop2.load(Ordering::Acquire) {
                            break;
                        }
                        // Caps before a thread is spawned: a refused connection is
                        // closed here (dropping `s`).
                        let Some(slot) = admit(&shared, peer) else {
                            continue;
                        };
                        let sh = shared.clone();
                        sh.conn_threads.fetch_add(1, Ordering::AcqRel);
                        let spawned = std::thread::Builder::new()
                            .name("rustio-conn".into())
                            .spawn(move || {
                                let sh2 = sh.clone();
                                handle_connection(sh, s, slot);
                                sh2.conn_threads.fetch_sub(1, Ordering::AcqRel);
                            });
                        if spawned.is_err() {
                            shared.conn_threads.fetch_sub(1, Ordering::AcqRel);
                            warn!("cannot spawn a connection thread");
                        }
                    }
                    Err(e) => {
                        if stop2.load(Ordering::Acquire) {
                            break;
                        }
                        warn!(error = %e, "accept failed");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
            .map_err(Error::Io)?;
        info!(%addr, "listening");
        Ok(Acceptor {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub(super) fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept() with a connection to ourselves (loopback only).
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
