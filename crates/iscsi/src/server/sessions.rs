//! The session table: joining, reinstating and ending sessions, their I_T nexuses, and
//! the `Registry` connections use to reach the pool and the table.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustio_scsi::{LunMap, Nexus, TargetPort, TargetPortName, TransportId};
use tracing::{debug, info};

use rustio_iscsi_proto::login::{self, SessionType};

use crate::config::ServerConfig;
use crate::conn::{Conn, ExecJob, Registry};
use crate::login::LoginDone;
use crate::session::{Session, SessionLun};

use super::{Job, SessionTable, Shared};

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
    pub(super) fn end_session(&self, sess: &Arc<Session>) {
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
    pub(super) fn join_session(
        &self,
        done: &LoginDone,
    ) -> std::result::Result<Arc<Session>, (u8, u8)> {
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
    pub(super) fn reinstate(&self, done: &LoginDone) {
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
    pub(super) fn nexus_of(&self, done: &LoginDone) -> (Nexus, LunMap, Vec<SessionLun>) {
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

    pub(super) fn alloc_tsih(t: &mut SessionTable) -> u16 {
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
    pub(super) fn bind_session(
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

    fn drain(&self, conn: Arc<Conn>) {
        // After shutdown nobody reads the connection's answers any more.
        let _ = self.jobs.send(Job::Drain(conn));
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

    fn end_session(&self, sess: &Arc<Session>) {
        Shared::end_session(self, sess);
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
