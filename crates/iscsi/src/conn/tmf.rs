//! Task management (RFC 7143 11.5; SAM-5 7): aborting tasks on this connection's
//! session, on every nexus of a logical unit, or on the whole target.

use std::sync::Arc;
use std::time::Duration;

use rustio_iscsi_proto::pdu::{TaskMgmtRequest, TmfFunction, TmfResponse};
use rustio_iscsi_proto::serial;
use rustio_scsi::{LogicalUnit, Tmf};
use tracing::warn;

use super::Conn;
use crate::session::{Session, TaskState};

/// How long task management waits for aborted tasks that are running to end.
const ABORT_GRACE: Duration = Duration::from_secs(10);

/// The TMF's name in log lines.
fn target_reset_name(cold: bool) -> &'static str {
    if cold {
        "TARGET COLD RESET"
    } else {
        "TARGET WARM RESET"
    }
}

/// Whether the session's initiator may reset the whole target: TARGET WARM/COLD RESET
/// abort every initiator's tasks on it, so, as in LIO (iscsi_target_tmr.c, node ACL
/// `tmr_warm_reset`/`tmr_cold_reset`, default 0), only an ACL that opts in may. Demo
/// mode sessions have no ACL and may not. A refusal is logged and answered "Function
/// authorization failed" (RFC 7143 11.6.1, response 6).
fn target_reset_allowed(sess: &Session, cold: bool) -> bool {
    let acl = sess
        .target
        .as_ref()
        .and_then(|(_, tpg)| tpg.acl(&sess.initiator));
    let allowed = acl.is_some_and(|a| {
        if cold {
            a.tmr_cold_reset
        } else {
            a.tmr_warm_reset
        }
    });
    if !allowed {
        warn!(
            initiator = %sess.initiator,
            target = %sess.target_name(),
            function = target_reset_name(cold),
            "task management function refused: the initiator's node ACL does not set {}",
            if cold { "tmr_cold_reset" } else { "tmr_warm_reset" }
        );
    }
    allowed
}

/// Task management (RFC 7143 11.5; SAM-5 7).
pub(super) fn task_management(conn: &Arc<Conn>, t: &TaskMgmtRequest) -> TmfResponse {
    match t.function {
        TmfFunction::AbortTask => abort_task(&conn.session, t),
        TmfFunction::AbortTaskSet
        | TmfFunction::ClearTaskSet
        | TmfFunction::LunReset
        | TmfFunction::ClearAca => task_set(conn, t),
        TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
            target_reset(conn, t.function == TmfFunction::TargetColdReset)
        }
        TmfFunction::TaskReassign => TmfResponse::ReassignNotSupported,
        TmfFunction::Other(_) => TmfResponse::Rejected,
    }
}

/// Marks the tasks of `s` that match `pred` aborted, ends those still collecting
/// Data-Out, and waits (bounded) for the queued and running ones, whose worker
/// suppresses their response. Returns how many were aborted.
fn abort_in(s: &Arc<Session>, pred: &dyn Fn(&TaskState) -> bool) -> usize {
    let itts = s.abort_tasks(pred);
    for itt in &itts {
        for c in s.conns.lock().iter() {
            c.abandon_write(*itt);
        }
    }
    s.wait_tasks_gone(&itts, ABORT_GRACE);
    itts.len()
}

/// ABORT TASK. Only a task marked aborted before its worker claimed the response
/// counts as aborted; one whose response is already on its way "does not exist".
fn abort_task(sess: &Arc<Session>, t: &TaskMgmtRequest) -> TmfResponse {
    let r = t.ref_itt;
    if abort_in(sess, &|x: &TaskState| x.itt == r) > 0 {
        return TmfResponse::Complete;
    }
    // RFC 7143 11.5.1: a RefCmdSN not yet received but below this TMF's CmdSN counts
    // as received and aborted.
    let exp = sess.exp_cmd_sn();
    if serial::le(exp, t.ref_cmd_sn) && serial::lt(t.ref_cmd_sn, t.cmd_sn) {
        TmfResponse::Complete
    } else {
        TmfResponse::TaskDoesNotExist
    }
}

/// ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET and CLEAR ACA on the logical
/// unit the request names (SAM-5 7.2, 7.4, 7.5, 7.3).
fn task_set(conn: &Conn, t: &TaskMgmtRequest) -> TmfResponse {
    let sess = &conn.session;
    let Some(lu) = sess.lun(t.lun).map(|l| l.lu.clone()) else {
        return TmfResponse::LunDoesNotExist;
    };
    let lun_field = t.lun;
    match t.function {
        TmfFunction::AbortTaskSet => {
            abort_in(sess, &|x: &TaskState| x.lun_field == lun_field);
            lu.task_management(&sess.nexus, Tmf::AbortTaskSet);
        }
        TmfFunction::ClearAca => lu.task_management(&sess.nexus, Tmf::ClearAca),
        _ => {
            // Every nexus's tasks on this logical unit.
            abort_on_units(conn.registry.sessions(), std::slice::from_ref(&lu));
            lu.task_management(
                &sess.nexus,
                if t.function == TmfFunction::LunReset {
                    Tmf::LogicalUnitReset
                } else {
                    Tmf::ClearTaskSet
                },
            );
        }
    }
    TmfResponse::Complete
}

/// Aborts, in each of `sessions`, the tasks addressed (through that session's own LUN
/// numbers) to one of `units`. Returns the sessions that see one of them and the tasks
/// aborted.
fn abort_on_units(
    sessions: impl IntoIterator<Item = Arc<Session>>,
    units: &[Arc<LogicalUnit>],
) -> (usize, usize) {
    let (mut touched, mut aborted) = (0, 0);
    for s in sessions {
        let fields: Vec<u64> = s
            .luns
            .iter()
            .filter(|l| units.iter().any(|u| Arc::ptr_eq(&l.lu, u)))
            .map(|l| l.lun)
            .collect();
        if fields.is_empty() {
            continue;
        }
        touched += 1;
        aborted += abort_in(&s, &|x: &TaskState| {
            rustio_scsi::decode_lun(x.lun_field.to_be_bytes()).is_some_and(|l| fields.contains(&l))
        });
    }
    (touched, aborted)
}

/// TARGET WARM RESET and TARGET COLD RESET (SAM-5 7.9, 7.10), when the initiator's ACL
/// allows it: the logical units of this target that the initiator's LUN map reaches are
/// reset, and every session's tasks on them aborted (as LOGICAL UNIT RESET does, through
/// whichever target a session reaches them). Units the initiator cannot see are left
/// alone (their other initiators' reservations, mode pages and tasks), as every path to a
/// logical unit goes through the requesting nexus's LUN map. A cold reset then also ends
/// every session of the target (RFC 7143 11.5.1; `order.rs`), a nexus loss on their units.
fn target_reset(conn: &Conn, cold: bool) -> TmfResponse {
    let sess = &conn.session;
    let target = sess.target_name().to_string();
    if !target_reset_allowed(sess, cold) {
        return TmfResponse::AuthorizationFailed;
    }
    let units: Vec<Arc<LogicalUnit>> = sess.luns.iter().map(|l| l.lu.clone()).collect();
    let (sessions, aborted) = abort_on_units(conn.registry.sessions(), &units);
    warn!(
        initiator = %sess.initiator,
        target = %target,
        function = target_reset_name(cold),
        units = units.len(),
        sessions,
        aborted,
        "target reset honoured: the initiator's logical units reset, every session's tasks on them aborted"
    );
    let tmf = if cold {
        Tmf::TargetColdReset
    } else {
        Tmf::TargetWarmReset
    };
    sess.lun_map.task_management(&sess.nexus, 0, tmf);
    TmfResponse::Complete
}
