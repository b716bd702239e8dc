//! Counters and their Prometheus text exposition (format 0.0.4), served by the shared
//! bounded endpoint of `rustio-metrics` ([`serve`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use rustio_scsi::LogicalUnit;

/// I/O counters of a LUN or a session. Relaxed atomics: they are statistics.
#[derive(Debug, Default)]
pub struct IoCounters {
    /// READ commands.
    pub read_cmds: AtomicU64,
    /// WRITE commands.
    pub write_cmds: AtomicU64,
    /// Other commands.
    pub other_cmds: AtomicU64,
    /// Bytes sent to the initiator.
    pub read_bytes: AtomicU64,
    /// Bytes received from the initiator.
    pub write_bytes: AtomicU64,
    /// Commands that ended with a status other than GOOD / CONDITION MET.
    pub errors: AtomicU64,
    /// Nanoseconds READ commands spent in the target, summed: from the arrival of the
    /// SCSI Command PDU to their response written to the socket or queued for it.
    pub read_ns: AtomicU64,
    /// The same for WRITE commands (waiting for solicited Data-Out included).
    pub write_ns: AtomicU64,
    /// Of `read_ns`, the time in the SCSI engine and its backstore (on an asynchronous
    /// store such as RBD, from submission to the store's completion).
    pub read_backstore_ns: AtomicU64,
    /// Of `write_ns`, the time in the SCSI engine and its backstore.
    pub write_backstore_ns: AtomicU64,
}

/// One exposed value: a count, or a sum of nanoseconds exposed in seconds (Prometheus
/// base unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Count(u64),
    Nanos(u64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Nanos(ns) => write!(f, "{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000),
        }
    }
}

impl IoCounters {
    /// Records one command.
    pub fn record(&self, read: bool, write: bool, in_bytes: u64, out_bytes: u64, ok: bool) {
        let c = if read {
            &self.read_cmds
        } else if write {
            &self.write_cmds
        } else {
            &self.other_cmds
        };
        c.fetch_add(1, Ordering::Relaxed);
        if in_bytes > 0 {
            self.read_bytes.fetch_add(in_bytes, Ordering::Relaxed);
        }
        if out_bytes > 0 {
            self.write_bytes.fetch_add(out_bytes, Ordering::Relaxed);
        }
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds the time one READ (`read`) or WRITE command spent in the target (`total`)
    /// and, of that, in the engine and its backstore (`backstore`); other commands are
    /// not timed.
    pub fn record_time(&self, read: bool, write: bool, total: Duration, backstore: Duration) {
        let (t, b) = if read {
            (&self.read_ns, &self.read_backstore_ns)
        } else if write {
            (&self.write_ns, &self.write_backstore_ns)
        } else {
            return;
        };
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        t.fetch_add(ns(total), Ordering::Relaxed);
        b.fetch_add(ns(backstore.min(total)), Ordering::Relaxed);
    }

    fn fields(&self) -> [(&'static str, Value); 10] {
        let c = |a: &AtomicU64| Value::Count(a.load(Ordering::Relaxed));
        let t = |a: &AtomicU64| Value::Nanos(a.load(Ordering::Relaxed));
        [
            ("read_commands_total", c(&self.read_cmds)),
            ("write_commands_total", c(&self.write_cmds)),
            ("other_commands_total", c(&self.other_cmds)),
            ("read_bytes_total", c(&self.read_bytes)),
            ("write_bytes_total", c(&self.write_bytes)),
            ("errors_total", c(&self.errors)),
            ("read_seconds_total", t(&self.read_ns)),
            ("write_seconds_total", t(&self.write_ns)),
            ("read_backstore_seconds_total", t(&self.read_backstore_ns)),
            ("write_backstore_seconds_total", t(&self.write_backstore_ns)),
        ]
    }
}

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// PDUs received in full feature phase.
    pub pdus_in: AtomicU64,
    /// Reject PDUs sent.
    pub rejects: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Failed logins.
    pub login_failures: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Results of asynchronously completed commands (RBD) sent on the store's
    /// completion thread (`conn::exec::complete`).
    pub async_sent_now: AtomicU64,
    /// Of those, the ones whose rest the socket did not take at once (written by a
    /// worker of the pool).
    pub async_sent_partly: AtomicU64,
    /// Results of asynchronously completed commands handed to the pool instead (writer
    /// busy, result large, data digest).
    pub async_handed_off: AtomicU64,
    luns: Mutex<HashMap<usize, Arc<IoCounters>>>,
}

impl Metrics {
    /// The counters of a logical unit (created on first use).
    pub fn lun_counters(&self, lu: &Arc<LogicalUnit>) -> Arc<IoCounters> {
        let key = Arc::as_ptr(lu) as usize;
        self.luns.lock().entry(key).or_default().clone()
    }
}

/// Labels and counters of one series group.
#[derive(Debug)]
pub struct Series {
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// Counters.
    pub counters: Arc<IoCounters>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_str(labels: &[(&'static str, String)]) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Renders counters as Prometheus text.
pub fn render(globals: &[(&str, &str, u64)], prefix_groups: &[(&str, Vec<Series>)]) -> String {
    let mut out = String::new();
    for (name, kind, v) in globals {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {v}");
    }
    for (prefix, series) in prefix_groups {
        if series.is_empty() {
            continue;
        }
        for (i, (field, _)) in series[0].counters.fields().iter().enumerate() {
            let name = format!("{prefix}_{field}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for s in series {
                let v = s.counters.fields()[i].1;
                let _ = writeln!(out, "{name}{} {v}", label_str(&s.labels));
            }
        }
    }
    out
}

/// Serves `GET /metrics` on `listener` until `stop` is set, with the bounds of
/// [`rustio_metrics::Limits::default`] (the one endpoint shared with the TCMU runner).
pub fn serve(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    rustio_metrics::serve(listener, render, rustio_metrics::Limits::default(), stop)
}

pub use rustio_metrics::{parse_listen_addr, Limits};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_format() {
        let c = Arc::new(IoCounters::default());
        c.record(true, false, 4096, 0, true);
        c.record(false, true, 0, 512, false);
        let text = render(
            &[("rustio_iscsi_sessions", "gauge", 2)],
            &[(
                "rustio_lun",
                vec![Series {
                    labels: vec![("target", "iqn.x:\"y\"".into()), ("lun", "0".into())],
                    counters: c.clone(),
                }],
            )],
        );
        assert!(text.contains("# TYPE rustio_iscsi_sessions gauge\nrustio_iscsi_sessions 2\n"));
        assert!(text
            .contains("rustio_lun_read_commands_total{target=\"iqn.x:\\\"y\\\"\",lun=\"0\"} 1\n"));
        assert!(text
            .contains("rustio_lun_read_bytes_total{target=\"iqn.x:\\\"y\\\"\",lun=\"0\"} 4096\n"));
        assert!(text
            .contains("rustio_lun_write_bytes_total{target=\"iqn.x:\\\"y\\\"\",lun=\"0\"} 512\n"));
        assert!(text.contains("rustio_lun_errors_total{target=\"iqn.x:\\\"y\\\"\",lun=\"0\"} 1\n"));
        // Times are sums of nanoseconds, exposed in seconds; other commands are not
        // timed and the backstore's share never exceeds the whole.
        c.record_time(true, false, Duration::new(1, 5), Duration::from_micros(250));
        c.record_time(
            true,
            false,
            Duration::from_millis(2),
            Duration::from_millis(3),
        );
        c.record_time(false, false, Duration::from_secs(7), Duration::ZERO);
        let text = render(
            &[],
            &[(
                "rustio_lun",
                vec![Series {
                    labels: vec![("lun", "0".into())],
                    counters: c.clone(),
                }],
            )],
        );
        assert!(text.contains("# TYPE rustio_lun_read_seconds_total counter\n"));
        assert!(text.contains("rustio_lun_read_seconds_total{lun=\"0\"} 1.002000005\n"));
        assert!(text.contains("rustio_lun_read_backstore_seconds_total{lun=\"0\"} 0.002250000\n"));
        assert!(text.contains("rustio_lun_write_seconds_total{lun=\"0\"} 0.000000000\n"));
    }
}
