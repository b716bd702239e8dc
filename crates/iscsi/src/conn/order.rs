//! PDUs processed in CmdSN order (RFC 7143 4.2.2.1): what the reader admits through the
//! session's window, run at once or when the gap before it fills.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustio_iscsi_proto::pdu::{
    Header, LogoutRequest, NopIn, NopOut, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
    TextResponse, TmfFunction, TmfResponse, RESERVED_TAG,
};

use super::logout::logout;
use super::tmf::task_management;
use super::writes::start_command;
use super::{Conn, Flow};
use crate::budget::Reservation;
use crate::command::NewCommand;
use crate::session::Pending;

/// A PDU held back until its CmdSN comes up.
#[derive(Debug)]
pub(super) struct Deferred {
    /// The connection it arrived on (in a multi-connection session another
    /// connection's reader may process it).
    pub(super) conn: Arc<Conn>,
    /// What it is.
    pub(super) kind: DeferredKind,
}

/// The PDUs that go through the CmdSN window.
#[derive(Debug)]
pub(super) enum DeferredKind {
    /// A SCSI command.
    Scsi(Box<NewCommand>),
    /// A NOP-Out, its ping data and, for a non-immediate one, that data's reservation in
    /// the Data-Out budget (it may wait in the window; released once echoed).
    Nop(NopOut, Vec<u8>, Option<Reservation>),
    /// Request, reply segment, more to come (C bit).
    Text(TextRequest, Vec<u8>, bool),
    /// A task management request.
    Tmf(TaskMgmtRequest),
    /// A logout request.
    Logout(LogoutRequest),
}

impl Pending for Deferred {
    fn run(self: Box<Self>) -> bool {
        matches!(process(*self, false), Flow::Continue)
    }
}

/// Processes an in-order (or immediate) PDU.
pub(super) fn process(d: Deferred, immediate: bool) -> Flow {
    let Deferred { conn, kind } = d;
    let sess = conn.session.clone();
    match kind {
        DeferredKind::Scsi(cmd) => {
            start_command(&conn, cmd);
            Flow::Continue
        }
        DeferredKind::Nop(n, data, _reservation) => {
            if !immediate {
                sess.complete_one();
            }
            if n.itt != RESERVED_TAG {
                let mrdsl = conn.send_mrdsl.load(Ordering::Relaxed) as usize;
                let echo = &data[..data.len().min(mrdsl)];
                conn.send(echo, true, |stat_sn, exp, max| {
                    Header::NopIn(NopIn {
                        lun: n.lun,
                        itt: n.itt,
                        ttt: RESERVED_TAG,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                    })
                });
            }
            Flow::Continue
        }
        DeferredKind::Text(t, reply, more) => {
            if !immediate {
                sess.complete_one();
            }
            conn.send(&reply, true, |stat_sn, exp, max| {
                Header::TextResponse(TextResponse {
                    final_bit: !more,
                    cont: more,
                    lun: 0,
                    itt: t.itt,
                    ttt: if more { t.ttt } else { RESERVED_TAG },
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                })
            });
            Flow::Continue
        }
        DeferredKind::Tmf(t) => {
            let response = task_management(&conn, &t);
            if !immediate {
                sess.complete_one();
            }
            conn.send(&[], true, |stat_sn, exp, max| {
                Header::TaskMgmtResponse(TaskMgmtResponse {
                    response: response as u8,
                    itt: t.itt,
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                })
            });
            if response == TmfResponse::Complete && t.function == TmfFunction::TargetColdReset {
                // RFC 7143 11.5.1: after a cold reset the target drops all connections.
                conn.registry.close_target_sessions(sess.target_name());
                return Flow::Close;
            }
            Flow::Continue
        }
        DeferredKind::Logout(l) => logout(&conn, &l, immediate),
    }
}
