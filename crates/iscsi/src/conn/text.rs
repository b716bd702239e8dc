//! Text requests in the full feature phase (RFC 7143 11.10, 11.11): SendTargets
//! (13.3, appendix C), MaxRecvDataSegmentLength, and responses longer than one PDU.

use std::io;
use std::sync::atomic::Ordering;

use rustio_iscsi_proto::login::SessionType;
use rustio_iscsi_proto::pdu::{
    Header, RejectReason, TextRequest, TextResponse, BHS_LEN, RESERVED_TAG,
};
use rustio_iscsi_proto::text;

use super::order::DeferredKind;
use super::recv::{ConnReader, TextContinuation};
use super::{Conn, Flow};
use crate::config::target_address;

/// Most bytes of keys an initiator may send in one text exchange (C bit continuations
/// included).
const TEXT_IN_MAX: usize = 64 * 1024;

impl ConnReader {
    /// A Text Request: the next segment of our long response, a part of the
    /// initiator's long request, or a whole request to answer.
    pub(super) fn on_text(
        &mut self,
        t: TextRequest,
        bhs: &[u8; BHS_LEN],
        len: usize,
    ) -> io::Result<Flow> {
        let (data, ok) = self.read_vec(len)?;
        if !ok {
            self.conn.reject(RejectReason::DataDigestError, bhs);
            return Ok(self.consume_sn(t.immediate, t.cmd_sn));
        }
        // Continuation of our multi-PDU response (RFC 7143 11.10.4).
        if t.ttt != RESERVED_TAG {
            return Ok(self.continue_reply(t, bhs, data.is_empty()));
        }
        // Initiator-side continuation (C bit): accumulate.
        if self.text_in.len() + data.len() > TEXT_IN_MAX {
            self.text_in.clear();
            self.conn.reject(RejectReason::ProtocolError, bhs);
            return Ok(self.consume_sn(t.immediate, t.cmd_sn));
        }
        self.text_in.extend_from_slice(&data);
        if t.cont && !t.final_bit {
            let conn = self.conn.clone();
            conn.send(&[], true, |stat_sn, exp, max| {
                Header::TextResponse(TextResponse {
                    final_bit: false,
                    cont: false,
                    lun: 0,
                    itt: t.itt,
                    ttt: RESERVED_TAG,
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                })
            });
            return Ok(Flow::Continue);
        }
        let all = std::mem::take(&mut self.text_in);
        let reply = build_text_reply(&self.conn, &all);
        let conn = self.conn.clone();
        let mrdsl = conn.send_mrdsl.load(Ordering::Relaxed) as usize;
        if reply.len() > mrdsl {
            let ttt = conn.alloc_ttt();
            self.text = Some(TextContinuation {
                itt: t.itt,
                ttt,
                rest: reply[mrdsl..].to_vec(),
            });
            let first = reply[..mrdsl].to_vec();
            return self.admit_or_run(
                t.immediate,
                t.cmd_sn,
                DeferredKind::Text(TextRequest { ttt, ..t }, first, true),
            );
        }
        self.admit_or_run(t.immediate, t.cmd_sn, DeferredKind::Text(t, reply, false))
    }

    /// The initiator asks for the next segment of our multi-PDU response (RFC 7143
    /// 11.10.4: an empty request with our TTT).
    fn continue_reply(&mut self, t: TextRequest, bhs: &[u8; BHS_LEN], empty: bool) -> Flow {
        match self.text.take() {
            Some(mut c) if c.ttt == t.ttt && c.itt == t.itt && empty => {
                let conn = self.conn.clone();
                let mrdsl = conn.send_mrdsl.load(Ordering::Relaxed) as usize;
                let n = c.rest.len().min(mrdsl);
                let chunk: Vec<u8> = c.rest.drain(..n).collect();
                let more = !c.rest.is_empty();
                let ttt = if more { c.ttt } else { RESERVED_TAG };
                if more {
                    self.text = Some(c);
                }
                // Keep the CmdSN window moving for this (non-immediate) request.
                self.consume_sn(t.immediate, t.cmd_sn);
                conn.send(&chunk, true, |stat_sn, exp, max| {
                    Header::TextResponse(TextResponse {
                        final_bit: !more,
                        cont: more,
                        lun: 0,
                        itt: t.itt,
                        ttt,
                        stat_sn,
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                    })
                });
                Flow::Continue
            }
            _ => {
                self.conn.reject(RejectReason::InvalidPduField, bhs);
                self.consume_sn(t.immediate, t.cmd_sn)
            }
        }
    }
}

/// Builds the Text Response for a Text Request's keys (SendTargets, RFC 7143 13.3 and
/// appendix C; other keys as in negotiation).
fn build_text_reply(conn: &Conn, data: &[u8]) -> Vec<u8> {
    let pairs = match text::parse(data) {
        Ok(p) => p,
        Err(_) => return text::encode(&[("X-rustio-error", "Reject")]),
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "SendTargets" => send_targets(conn, k, &v, &mut out),
            "MaxRecvDataSegmentLength" => match text::parse_number(&v) {
                Some(n) if (512..(1 << 24)).contains(&n) => {
                    conn.send_mrdsl.store(n as u32, Ordering::Relaxed);
                    out.push((k, conn.recv_mrdsl.to_string()));
                }
                _ => out.push((k, "Reject".into())),
            },
            _ => match text::lookup(&k) {
                // Keys that are only negotiable during login.
                Some(_) => out.push((k, "Reject".into())),
                None => out.push((k, "NotUnderstood".into())),
            },
        }
    }
    text::encode(&out)
}

/// Answers SendTargets=`value` (RFC 7143 appendix C): the targets (all of them in a
/// discovery session, the session's own in a normal one, or the one named) with their
/// portals, as `TargetName` and `TargetAddress` keys appended to `out`.
fn send_targets(conn: &Conn, key: String, value: &str, out: &mut Vec<(String, String)>) {
    let cfg = conn.services.config();
    let sess = &conn.session;
    let discovery = sess.session_type == SessionType::Discovery;
    let wanted: Option<String> = match value {
        "All" if discovery => None,
        // In a normal session "All" and "" mean the session's target.
        "All" | "" => Some(sess.target_name().to_string()),
        name if crate::config::valid_iscsi_name(name) => Some(name.to_string()),
        _ => {
            out.push((key, "Reject".into()));
            return;
        }
    };
    if wanted.as_deref() == Some("") {
        out.push((key, "Reject".into()));
        return;
    }
    for t in &cfg.targets {
        if let Some(w) = &wanted {
            if !t.iqn.eq_ignore_ascii_case(w) {
                continue;
            }
        }
        let tpgs: Vec<_> = t
            .tpgs
            .iter()
            .filter(|tpg| tpg.enabled && !tpg.portals.is_empty())
            .collect();
        if tpgs.is_empty() {
            continue;
        }
        if discovery && !tpgs.iter().any(|tpg| tpg.allows(&sess.initiator)) {
            // Do not reveal targets this initiator may not log in to.
            continue;
        }
        out.push(("TargetName".into(), t.iqn.clone()));
        for tpg in tpgs {
            for p in &tpg.portals {
                let mut addr = p.addr;
                if addr.ip().is_unspecified() {
                    // A wildcard portal answers with the address the initiator reached
                    // us on.
                    addr.set_ip(conn.local.ip());
                }
                out.push(("TargetAddress".into(), target_address(addr, tpg.tag)));
            }
        }
    }
}
