//! Logout (RFC 7143 11.14, 11.15): of the session, of this connection or of another
//! connection of the session.

use std::sync::Arc;
use std::time::Duration;

use rustio_iscsi_proto::pdu::{
    Header, LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode, RejectReason,
};

use super::{Conn, Flow};

/// Logout (RFC 7143 11.14, 11.15).
pub(super) fn logout(conn: &Arc<Conn>, l: &LogoutRequest, immediate: bool) -> Flow {
    let sess = conn.session.clone();
    let grace = Duration::from_secs(10);
    let (code, close_self) = match l.reason {
        LogoutReason::CloseSession => {
            // Writes still waiting for Data-Out will not get it any more.
            for c in sess.conns.lock().iter() {
                c.abandon_writes();
            }
            sess.wait_idle(grace);
            // The nexus is lost before the initiator hears that the logout succeeded:
            // what it held (an SPC-2 reservation, in a gateway group one kept in the
            // cluster) is released by then, so another initiator's next command finds
            // it free (libiscsi Reserve6.Logout).
            conn.registry.end_session(&sess);
            (LogoutResponseCode::Success, true)
        }
        LogoutReason::CloseConnection => {
            if l.cid == conn.cid {
                (LogoutResponseCode::Success, true)
            } else {
                let other = sess.conns.lock().iter().find(|c| c.cid() == l.cid).cloned();
                match other {
                    Some(c) => {
                        c.close();
                        (LogoutResponseCode::Success, false)
                    }
                    None => (LogoutResponseCode::CidNotFound, false),
                }
            }
        }
        LogoutReason::RemoveForRecovery => (LogoutResponseCode::RecoveryNotSupported, false),
        LogoutReason::Other(_) => {
            let bhs = Header::LogoutRequest(*l).encode(0, 0);
            conn.reject(RejectReason::InvalidPduField, &bhs);
            if !immediate {
                sess.complete_one();
            }
            return Flow::Continue;
        }
    };
    if !immediate {
        sess.complete_one();
    }
    let (t2w, t2r) = (
        sess.params.default_time2wait as u16,
        sess.params.default_time2retain as u16,
    );
    conn.send(&[], true, |stat_sn, exp, max| {
        Header::LogoutResponse(LogoutResponse {
            response: code as u8,
            itt: l.itt,
            stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: max,
            time2wait: t2w,
            time2retain: t2r,
        })
    });
    if l.reason == LogoutReason::CloseSession && code == LogoutResponseCode::Success {
        sess.close();
        return Flow::Close;
    }
    if close_self {
        return Flow::Close;
    }
    Flow::Continue
}
