//! The target server: listeners, login, session table, worker pool, shutdown and reload.
//!
//! `accept` takes connections in (admission caps, login phase, hand-over to the full
//! feature phase); `sessions` keeps the session table and is what connections see of the
//! server (the `Registry` trait); this module starts, reloads, observes and stops it all.
//!
//! [`Server::start`] is the injectable entry point: it takes already-bound listeners (so
//! tests bind `127.0.0.1:0`) and a [`ServerConfig`], and returns a [`ServerHandle`] to
//! reload, observe and shut the server down.

mod accept;
mod sessions;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use tracing::{info, warn};

use rustio_iscsi_proto::login::SessionType;

use crate::config::{ServerConfig, TpgConfig};
use crate::conn::exec::{run_job, ExecBufs};
use crate::conn::{Conn, ExecJob};
use crate::limits::{ConnTracker, LogLimiter};
use crate::metrics::{self, Series};
use crate::services::Services;
use crate::session::Session;
use crate::{Error, Result};
use accept::Acceptor;

enum Job {
    Exec(ExecJob),
    /// Write what waits for a connection's writer (`Registry::drain`).
    Drain(Arc<Conn>),
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
                                Job::Drain(c) => c.drain(),
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
                    // A gateway group's takeover or recovery thread must not outlive the
                    // cluster connection the process is about to tear down.
                    if let Some(a) = l.lu.group_alua() {
                        if !a.stop(ALUA_STOP_WAIT) {
                            warn!(lun = %l.name, "ALUA takeover or recovery still running at exit");
                        }
                    }
                }
            }
        }
        info!("shutdown complete");
    }
}

/// How long shutdown waits for a gateway group's takeover or recovery thread: a takeover
/// is bounded by the handover timeout plus the OSD op timeout (3 + 10 s by default).
const ALUA_STOP_WAIT: Duration = Duration::from_secs(15);

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
fn global_metrics(shared: &Shared, sessions: usize) -> [(&'static str, &'static str, u64); 17] {
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
            "rustio_iscsi_async_results_sent_on_completion_total",
            "counter",
            l(&m.async_sent_now),
        ),
        (
            "rustio_iscsi_async_results_sent_partly_total",
            "counter",
            l(&m.async_sent_partly),
        ),
        (
            "rustio_iscsi_async_results_handed_off_total",
            "counter",
            l(&m.async_handed_off),
        ),
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
