//! The target server: listeners, login, session table, worker pool, shutdown and reload.
//!
//! [`Server::start`] is the injectable entry point: it takes already-bound listeners (so
//! tests bind `127.0.0.1:0`) and a [`ServerConfig`], and returns a [`ServerHandle`] to
//! reload, observe and shut the server down.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rustio_scsi::{LunMap, Nexus, TargetPort, TargetPortName, TransportId};
use tracing::{debug, info, warn};

use rustio_iscsi_proto::login::{self, SessionType};
use rustio_iscsi_proto::pdu::{self, BhsInfo, Digests, Header, BHS_LEN};

use crate::config::{ServerConfig, TpgConfig};
use crate::conn::exec::{run_job, ExecBufs};
use crate::conn::io::{Reader, TICK};
use crate::conn::recv::ConnReader;
use crate::conn::{Conn, ExecJob, Registry};
use crate::limits::{Caps, ConnSlot, ConnTracker, Deadline, LogLimiter};
use crate::login::{LoginDone, LoginMachine, Step};
use crate::metrics::{self, Series};
use crate::services::Services;
use crate::session::{Session, SessionLun};
use crate::{Error, Result};

/// Read buffer of a connection.
const READ_BUF: usize = 64 * 1024;
/// Data segment limit during login (RFC 7143 13.12: the default 8192 applies).
const LOGIN_MAX_DATA: u32 = 8192;

enum Job {
    Exec(ExecJob),
    Stop,
}

#[derive(Debug, Default)]
struct SessionTable {
    by_tsih: HashMap<u16, Arc<Session>>,
    next_tsih: u16,
}

/// State shared by every thread of the server.
pub(crate) struct Shared {
    /// What connections are lent: configuration, counters, budgets.
    services: Arc<Services>,
    sessions: Mutex<SessionTable>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    jobs: Sender<Job>,
    shutting_down: AtomicBool,
    next_conn_id: AtomicU64,
    conn_threads: AtomicUsize,
    /// CHAP failure back-off (issue 20 item 7).
    auth_guard: Arc<crate::authguard::AuthGuard>,
    /// Live connection counts for the caps (issue 20 item 4).
    conn_tracker: Arc<ConnTracker>,
    /// Rate limit of the "connection refused" log line.
    refusal_log: LogLimiter,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// The configuration in force.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.services.config()
    }

    /// Every session (normal and discovery).
    pub(crate) fn sessions_snapshot(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().by_tsih.values().cloned().collect()
    }

    /// Removes a session from the table and signals I_T nexus loss (SAM-5 6.3.4) to its
    /// logical units; idempotent.
    fn end_session(&self, sess: &Arc<Session>) {
        if sess.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut t = self.sessions.lock();
            if let Some(cur) = t.by_tsih.get(&sess.tsih) {
                if Arc::ptr_eq(cur, sess) {
                    t.by_tsih.remove(&sess.tsih);
                }
            }
        }
        sess.abort_tasks(|_| true);
        // PDUs waiting in the CmdSN window for a CmdSN that will never come now: drop
        // them (and what they hold) outside the window's lock.
        drop(sess.drain_window());
        if sess.session_type == SessionType::Normal {
            let mut seen: Vec<*const rustio_scsi::LogicalUnit> = Vec::new();
            for l in &sess.luns {
                let p = Arc::as_ptr(&l.lu);
                if !seen.contains(&p) {
                    seen.push(p);
                    l.lu.nexus_lost(&sess.nexus);
                }
            }
        }
        info!(
            tsih = sess.tsih,
            initiator = %sess.initiator,
            target = sess.target_name(),
            "session ended"
        );
    }

    /// A connection added to the existing session `done.tsih` (RFC 7143 5.3.x: same
    /// ISID, initiator and target, and room for one more connection, or a connection
    /// reinstatement when its CID is in use).
    fn join_session(&self, done: &LoginDone) -> std::result::Result<Arc<Session>, (u8, u8)> {
        let sess = self
            .sessions
            .lock()
            .by_tsih
            .get(&done.tsih)
            .cloned()
            .ok_or(login::status::SESSION_DOES_NOT_EXIST)?;
        let same_target = match (&sess.target, &done.target) {
            (Some((a, _)), Some((b, _))) => a.iqn.eq_ignore_ascii_case(&b.iqn),
            _ => false,
        };
        if sess.isid != done.isid
            || !sess.initiator.eq_ignore_ascii_case(&done.initiator_name)
            || !same_target
            || sess.closed.load(Ordering::Acquire)
        {
            return Err(login::status::SESSION_DOES_NOT_EXIST);
        }
        let conns = sess.conns.lock().clone();
        if let Some(old) = conns.iter().find(|c| c.cid() == done.cid) {
            // Connection reinstatement (RFC 7143 6.3.4): the old one goes.
            old.close();
        } else if conns.len() >= sess.params.max_connections as usize {
            return Err(login::status::TOO_MANY_CONNECTIONS);
        }
        Ok(sess)
    }

    /// Session reinstatement (RFC 7143 6.3.5): a new session of the same initiator port
    /// and target ends the old one.
    fn reinstate(&self, done: &LoginDone) {
        // Session reinstatement (RFC 7143 6.3.5): same initiator port and target.
        let target_name = done.target.as_ref().map(|(t, _)| t.iqn.clone());
        let old: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .by_tsih
            .values()
            .filter(|s| {
                s.isid == done.isid
                    && s.initiator.eq_ignore_ascii_case(&done.initiator_name)
                    && s.session_type == done.session_type
                    && s.target.as_ref().map(|(t, _)| t.iqn.clone()) == target_name
            })
            .cloned()
            .collect();
        for s in old {
            info!(tsih = s.tsih, initiator = %s.initiator, "session reinstatement");
            s.close();
            s.wait_idle(Duration::from_secs(5));
            self.end_session(&s);
        }
    }

    /// The I_T nexus of a new session and the LUNs its initiator may access.
    fn nexus_of(&self, done: &LoginDone) -> (Nexus, LunMap, Vec<SessionLun>) {
        // The I_T nexus: initiator port = initiator name + ISID (RFC 7143 4.2.7.1), target
        // port = target name + TPGT; the TPG's tag is also the relative target port
        // identifier and the target port group (one group per TPG).
        let initiator = TransportId::iscsi_port(done.initiator_name.clone(), done.isid);
        match &done.target {
            Some((t, tpg)) => {
                let nexus = Nexus::new(
                    initiator,
                    TargetPort::new(
                        tpg.tag,
                        tpg.tag,
                        TargetPortName::Iscsi {
                            name: t.iqn.clone(),
                            tpgt: tpg.tag,
                        },
                    ),
                );
                let mut map = LunMap::new();
                let mut luns = Vec::new();
                for (lun, lu, wp) in tpg.luns_for(&done.initiator_name) {
                    map.insert(lun, lu.clone(), wp);
                    luns.push(SessionLun {
                        lun,
                        counters: self.services.metrics.lun_counters(&lu),
                        lu,
                    });
                }
                (nexus, map, luns)
            }
            None => (
                Nexus::new(
                    initiator,
                    TargetPort::new(1, 1, TargetPortName::Local("discovery".into())),
                ),
                LunMap::new(),
                Vec::new(),
            ),
        }
    }

    fn alloc_tsih(t: &mut SessionTable) -> u16 {
        loop {
            t.next_tsih = t.next_tsih.wrapping_add(1);
            if t.next_tsih != 0 && !t.by_tsih.contains_key(&t.next_tsih) {
                return t.next_tsih;
            }
        }
    }

    /// Binds a finished login to a session (RFC 7143 6.3.5 / 5.3.x): new session (with
    /// reinstatement of a session with the same ISID/initiator/target), or a connection
    /// added to an existing session (TSIH != 0).
    fn bind_session(
        &self,
        done: &LoginDone,
        cfg: &ServerConfig,
    ) -> std::result::Result<(Arc<Session>, bool), (u8, u8)> {
        if done.tsih != 0 {
            return self.join_session(done).map(|s| (s, false));
        }
        self.reinstate(done);
        let (nexus, lun_map, luns) = self.nexus_of(done);
        let mut table = self.sessions.lock();
        let tsih = Self::alloc_tsih(&mut table);
        let sess = Arc::new(Session::new(
            tsih,
            done.isid,
            done.initiator_name.clone(),
            done.session_type,
            done.target.clone(),
            nexus,
            lun_map,
            luns,
            done.negotiated,
            cfg.queue_depth,
            done.cmd_sn,
            cfg.max_session_write_buffer,
        ));
        table.by_tsih.insert(tsih, sess.clone());
        Ok((sess, true))
    }
}

/// The operations connections need of the server: the pool and the session table.
impl Registry for Shared {
    fn submit(&self, job: ExecJob) {
        if let Err(e) = self.jobs.send(Job::Exec(job)) {
            // Only after shutdown: finish the task without running it.
            if let Job::Exec(job) = e.into_inner() {
                drop(job);
            }
        }
    }

    fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions_snapshot()
    }

    fn close_target_sessions(&self, target: &str) {
        for s in self.sessions_snapshot() {
            if s.target_name() == target {
                self.end_session(&s);
                s.close();
            }
        }
    }

    fn connection_ended(&self, conn: &Arc<Conn>) {
        self.conns.lock().remove(&conn.id);
        let sess = conn.session.clone();
        let last = {
            let mut conns = sess.conns.lock();
            conns.retain(|c| c.id() != conn.id);
            conns.is_empty()
        };
        debug!(conn = conn.id, peer = %conn.peer, "connection closed");
        if last {
            // ErrorRecoveryLevel 0: the session ends with its last connection.
            self.end_session(&sess);
        }
    }
}

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

struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start(shared: Arc<Shared>, listener: TcpListener) -> Result<Acceptor> {
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

    fn stop(mut self) {
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

/// The iSCSI target server.
#[derive(Debug)]
pub struct Server;

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    acceptors: Mutex<Vec<Acceptor>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addrs", &self.local_addrs())
            .finish()
    }
}

/// Server-wide Data-Out buffer accounting and resource-limit counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBufferStats {
    /// `max_write_buffer`.
    pub limit: u64,
    /// Bytes reserved by write commands in progress (each reserves its whole transfer
    /// before its first R2T).
    pub reserved: u64,
    /// Bytes of Data-Out buffers materialised (solicited by R2T or received): what the
    /// reservations actually cost in memory.
    pub filled: u64,
    /// Write commands that waited for budget before their R2Ts (total).
    pub held: u64,
    /// Write commands answered BUSY for want of budget (total).
    pub busy: u64,
    /// Connections closed at accept by a connection cap (total).
    pub refused_connections: u64,
    /// Logins closed by the login deadline (total).
    pub login_timeouts: u64,
    /// Connections dropped by the send timeout (total).
    pub send_timeouts: u64,
    /// Connections dropped by the Data-Out timeout (total).
    pub data_out_timeouts: u64,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Portals started.
    pub listeners_added: Vec<SocketAddr>,
    /// Portals stopped.
    pub listeners_removed: Vec<SocketAddr>,
    /// Sessions closed because their target or TPG changed.
    pub sessions_closed: usize,
    /// Sessions left untouched.
    pub sessions_kept: usize,
}

impl Server {
    /// Binds every portal of `config` and starts serving.
    pub fn bind(config: ServerConfig) -> Result<ServerHandle> {
        let mut listeners = Vec::new();
        for addr in config.listen_addrs() {
            listeners.push(bind(addr)?);
        }
        Server::start(config, listeners)
    }

    /// Starts serving on already-bound `listeners` (tests bind `127.0.0.1:0`).
    pub fn start(config: ServerConfig, listeners: Vec<TcpListener>) -> Result<ServerHandle> {
        config.validate()?;
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let workers_n = if config.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4)
                .max(4)
        } else {
            config.workers
        };
        let shared = Arc::new(Shared {
            services: Arc::new(Services::new(config)),
            sessions: Mutex::new(SessionTable::default()),
            conns: Mutex::new(HashMap::new()),
            jobs: tx,
            shutting_down: AtomicBool::new(false),
            next_conn_id: AtomicU64::new(1),
            conn_threads: AtomicUsize::new(0),
            auth_guard: Arc::default(),
            conn_tracker: Arc::new(ConnTracker::default()),
            refusal_log: LogLimiter::new(Duration::from_secs(1)),
        });
        let mut workers = Vec::new();
        for i in 0..workers_n {
            let rx: Receiver<Job> = rx.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("rustio-worker-{i}"))
                    .spawn(move || {
                        let mut bufs = ExecBufs::default();
                        while let Ok(job) = rx.recv() {
                            match job {
                                Job::Exec(j) => {
                                    run_job(j, &mut bufs);
                                    bufs.trim();
                                }
                                Job::Stop => break,
                            }
                        }
                    })
                    .map_err(Error::Io)?,
            );
        }
        let mut acceptors = Vec::new();
        for l in listeners {
            acceptors.push(Acceptor::start(shared.clone(), l)?);
        }
        Ok(ServerHandle {
            shared,
            acceptors: Mutex::new(acceptors),
            workers,
        })
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })
}

/// Whether two TPG configurations are the same for the sessions using them.
fn same_tpg(a: &TpgConfig, b: &TpgConfig) -> bool {
    a.tag == b.tag
        && a.enabled == b.enabled
        && a.portals == b.portals
        && a.acls == b.acls
        && a.generate_node_acls == b.generate_node_acls
        && a.demo_mode_write_protect == b.demo_mode_write_protect
        && a.authentication == b.authentication
        && a.chap == b.chap
        && a.params == b.params
        && a.luns.len() == b.luns.len()
        && a.luns
            .iter()
            .zip(&b.luns)
            .all(|(x, y)| x.index == y.index && Arc::ptr_eq(&x.lu, &y.lu))
}

impl ServerHandle {
    /// Addresses being listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.acceptors.lock().iter().map(|a| a.addr).collect()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.shared.config()
    }

    /// Number of sessions (normal and discovery).
    pub fn session_count(&self) -> usize {
        self.shared.sessions.lock().by_tsih.len()
    }

    /// Number of connections in full feature phase.
    pub fn connection_count(&self) -> usize {
        self.shared.conns.lock().len()
    }

    /// Accepted connections still open (every phase) and those of them still in login.
    pub fn open_connections(&self) -> (usize, usize) {
        self.shared.conn_tracker.counts()
    }

    /// Data-Out buffer accounting and the limits' counters (issue 20).
    pub fn write_buffer_stats(&self) -> WriteBufferStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.shared.services.limit_counters;
        WriteBufferStats {
            limit: self.shared.services.write_budget.limit(),
            reserved: self.shared.services.write_budget.reserved(),
            filled: self.shared.services.write_budget.filled(),
            held: l(&c.held),
            busy: l(&c.busy),
            refused_connections: l(&c.refused),
            login_timeouts: l(&c.login_timeouts),
            send_timeouts: l(&c.send_timeouts),
            data_out_timeouts: l(&c.data_out_timeouts),
        }
    }

    /// Replaces the configuration (SIGHUP). Portals are started/stopped to match; the
    /// sessions whose target or TPG changed are closed, every other session continues.
    pub fn reload(&self, config: ServerConfig) -> Result<ReloadReport> {
        config.validate()?;
        let mut report = ReloadReport::default();
        let new_addrs = config.listen_addrs();
        let new = Arc::new(config);
        {
            let mut acc = self.acceptors.lock();
            let have: Vec<SocketAddr> = acc.iter().map(|a| a.addr).collect();
            for addr in &new_addrs {
                let covered = have.iter().any(|h| h == addr || (addr.port() == 0));
                if !covered {
                    let l = bind(*addr)?;
                    acc.push(Acceptor::start(self.shared.clone(), l)?);
                    report.listeners_added.push(*addr);
                }
            }
            let mut keep = Vec::new();
            for a in acc.drain(..) {
                // Listeners not in any portal any more are stopped (injected listeners
                // that never matched a configured address are kept).
                let configured_before = self.shared.config().listen_addrs().contains(&a.addr);
                if configured_before && !new_addrs.contains(&a.addr) {
                    report.listeners_removed.push(a.addr);
                    a.stop();
                } else {
                    keep.push(a);
                }
            }
            *acc = keep;
        }
        self.shared
            .services
            .write_budget
            .set_limit(new.max_write_buffer);
        for s in self.shared.sessions_snapshot() {
            s.write_budget.set_limit(new.max_session_write_buffer);
        }
        self.shared.services.set_config(new.clone());
        for s in self.shared.sessions_snapshot() {
            let Some((t, tpg)) = &s.target else {
                report.sessions_kept += 1;
                continue;
            };
            let still = new
                .target(&t.iqn)
                .and_then(|nt| nt.tpgs.iter().find(|x| x.tag == tpg.tag))
                .map(|ntpg| same_tpg(tpg, ntpg))
                .unwrap_or(false);
            if still {
                report.sessions_kept += 1;
            } else {
                info!(tsih = s.tsih, target = %t.iqn, "configuration changed; closing session");
                self.shared.end_session(&s);
                s.close();
                report.sessions_closed += 1;
            }
        }
        Ok(report)
    }

    /// Prometheus text of all counters.
    pub fn metrics_text(&self) -> String {
        render_metrics(&self.shared)
    }

    /// A renderer usable from another thread (for [`metrics::serve`]).
    pub fn metrics_renderer(&self) -> Arc<dyn Fn() -> String + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || render_metrics(&shared))
    }

    /// Graceful shutdown: stop accepting, ask initiators to log out (Async Message
    /// event 1), let in-flight commands finish, close what is left, flush backstores.
    pub fn shutdown(mut self) {
        let shared = self.shared.clone();
        shared.shutting_down.store(true, Ordering::Release);
        for a in self.acceptors.lock().drain(..) {
            a.stop();
        }
        let grace = shared.config().shutdown_grace;
        let conns: Vec<Arc<Conn>> = shared.conns.lock().values().cloned().collect();
        for c in &conns {
            if c.session.session_type == SessionType::Normal {
                c.request_logout(u16::try_from(grace.as_secs()).unwrap_or(u16::MAX).max(1));
            } else {
                c.close();
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !shared.conns.lock().is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        for s in shared.sessions_snapshot() {
            s.wait_idle(Duration::from_secs(5));
            s.close();
        }
        let conns: Vec<Arc<Conn>> = shared.conns.lock().values().cloned().collect();
        for c in conns {
            c.close();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && shared.conn_threads.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in &self.workers {
            let _ = shared.jobs.send(Job::Stop);
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let cfg = shared.config();
        for t in &cfg.targets {
            for tpg in &t.tpgs {
                for l in &tpg.luns {
                    if let Err(e) = l.lu.backstore().flush() {
                        warn!(lun = %l.name, error = %e, "flush at shutdown failed");
                    }
                }
            }
        }
        info!("shutdown complete");
    }
}

/// Prometheus text of the server's counters, per LUN and per session.
fn render_metrics(shared: &Shared) -> String {
    let cfg = shared.config();
    let sessions = shared.sessions_snapshot();
    let m = &shared.services.metrics;
    let globals = global_metrics(shared, sessions.len());
    let mut lun_series = Vec::new();
    for t in &cfg.targets {
        for tpg in &t.tpgs {
            for lun in &tpg.luns {
                lun_series.push(Series {
                    labels: vec![
                        ("target", t.iqn.clone()),
                        ("tpg", tpg.tag.to_string()),
                        ("lun", lun.index.to_string()),
                        ("backstore", lun.name.clone()),
                    ],
                    counters: m.lun_counters(&lun.lu),
                });
            }
        }
    }
    let sess_series: Vec<Series> = sessions
        .iter()
        .filter(|s| s.session_type == SessionType::Normal)
        .map(|s| Series {
            labels: vec![
                ("target", s.target_name().to_string()),
                ("initiator", s.initiator.clone()),
                ("isid", hex::encode(s.isid)),
                ("tsih", s.tsih.to_string()),
            ],
            counters: s.counters.clone(),
        })
        .collect();
    metrics::render(
        &globals,
        &[("rustio_lun", lun_series), ("rustio_session", sess_series)],
    )
}

/// The server-wide series: name, type, value (a table, one row per series).
fn global_metrics(shared: &Shared, sessions: usize) -> [(&'static str, &'static str, u64); 14] {
    let m = &shared.services.metrics;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    [
        ("rustio_iscsi_sessions", "gauge", sessions as u64),
        (
            "rustio_iscsi_connections",
            "gauge",
            shared.conns.lock().len() as u64,
        ),
        (
            "rustio_iscsi_connections_accepted_total",
            "counter",
            l(&m.connections),
        ),
        ("rustio_iscsi_logins_total", "counter", l(&m.logins)),
        (
            "rustio_iscsi_login_failures_total",
            "counter",
            l(&m.login_failures),
        ),
        ("rustio_iscsi_pdus_received_total", "counter", l(&m.pdus_in)),
        ("rustio_iscsi_rejects_total", "counter", l(&m.rejects)),
        (
            "rustio_iscsi_write_buffer_reserved_bytes",
            "gauge",
            shared.services.write_budget.reserved(),
        ),
        (
            "rustio_iscsi_write_buffer_filled_bytes",
            "gauge",
            shared.services.write_budget.filled(),
        ),
        (
            "rustio_iscsi_connections_refused_total",
            "counter",
            l(&shared.services.limit_counters.refused),
        ),
        (
            "rustio_iscsi_login_timeouts_total",
            "counter",
            l(&shared.services.limit_counters.login_timeouts),
        ),
        (
            "rustio_iscsi_send_timeouts_total",
            "counter",
            l(&shared.services.limit_counters.send_timeouts),
        ),
        (
            "rustio_iscsi_data_out_timeouts_total",
            "counter",
            l(&shared.services.limit_counters.data_out_timeouts),
        ),
        (
            "rustio_iscsi_write_busy_total",
            "counter",
            l(&shared.services.limit_counters.busy),
        ),
    ]
}
