//! The reader's timers: the NOP-In keepalive (RFC 7143 11.19) and the limits on what a
//! peer may keep waiting (issue 20 item 2): writes waiting for budget or for promised
//! Data-Out, and commands waiting in the CmdSN window for a CmdSN that does not come.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rustio_iscsi_proto::pdu::{Header, NopIn, RESERVED_TAG};
use tracing::{info, warn};

use super::io::{transfer_allowance, TICK};
use super::recv::ConnReader;
use super::writes::{expire_held, retry_held};

impl ConnReader {
    /// Starts writes that were waiting for buffer budget and, at most once per tick:
    /// answers BUSY to writes that waited for budget longer than the Data-Out timeout;
    /// drops the connection when a write has waited past the Data-Out timeout for data
    /// it was promised, or has not received all of it within the Data-Out timeout plus
    /// its size at the minimum rate however the data trickles (its budget is released
    /// with it); drops it when commands have waited in the CmdSN window longer than the
    /// Data-Out timeout for a CmdSN that does not come (issue 20 item 2). `false`: close.
    pub(super) fn housekeeping(&mut self) -> bool {
        retry_held(&self.conn);
        let now = Instant::now();
        if now.duration_since(self.last_scan) < TICK {
            return true;
        }
        self.last_scan = now;
        let limit = self.data_out_timeout;
        expire_held(&self.conn, now, limit);
        if let Some(stalled) = self.conn.session.window_stalled_for(now) {
            if stalled >= limit {
                warn!(
                    conn = self.conn.id,
                    peer = %self.conn.peer,
                    initiator = %self.conn.session.initiator,
                    exp_cmd_sn = self.conn.session.exp_cmd_sn(),
                    waited_secs = stalled.as_secs_f64(),
                    "commands held in the CmdSN window for a CmdSN that did not come within the Data-Out timeout; dropping the connection"
                );
                return false;
            }
        }
        !self.data_out_overdue(now)
    }

    /// Whether a funded write has waited past the Data-Out timeout for data it was
    /// promised, or has not received all of it within the timeout plus its size at the
    /// minimum rate (counted and logged).
    fn data_out_overdue(&self, now: Instant) -> bool {
        let limit = self.data_out_timeout;
        let rate = self.conn.min_rate;
        let stale = self
            .conn
            .writes
            .lock()
            .values()
            .find(|w| {
                !w.held
                    && (now.duration_since(w.last_progress) >= limit
                        || now.duration_since(w.since)
                            >= transfer_allowance(limit, u64::from(w.cmd.need), rate))
            })
            .map(|w| (w.cmd.hdr.itt, w.cmd.need, w.cmd.received));
        let Some((itt, need, received)) = stale else {
            return false;
        };
        self.conn
            .services
            .limit_counters
            .data_out_timeouts
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            conn = self.conn.id,
            peer = %self.conn.peer,
            initiator = %self.conn.session.initiator,
            itt,
            need,
            received,
            data_out_timeout_secs = limit.as_secs_f64(),
            min_rate = rate,
            "promised Data-Out did not arrive within the Data-Out timeout (or not all of it within the timeout plus its size at the minimum rate); dropping the connection"
        );
        true
    }

    /// NOP-In keepalive (RFC 7143 11.19): ping an idle connection, drop it if the
    /// initiator does not answer.
    pub(super) fn idle_tick(&mut self) -> bool {
        if self.nop_interval.is_zero() {
            return true;
        }
        let now = Instant::now();
        if let Some(sent) = self.ping_sent {
            if now.duration_since(self.last_rx) >= self.nop_timeout
                && now.duration_since(sent) >= self.nop_timeout
            {
                info!(conn = self.conn.id, peer = %self.conn.peer, "NOP-In not answered; dropping connection");
                return false;
            }
        } else if now.duration_since(self.last_rx) >= self.nop_interval {
            let ttt = self.conn.alloc_ttt();
            self.conn.ping_ttt.store(ttt, Ordering::Release);
            self.ping_sent = Some(now);
            self.conn.send(&[], false, |stat_sn, exp, max| {
                Header::NopIn(NopIn {
                    lun: 0,
                    itt: RESERVED_TAG,
                    ttt,
                    stat_sn,
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                })
            });
        }
        true
    }
}
