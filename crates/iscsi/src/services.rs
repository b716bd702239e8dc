//! What the server lends its connections: the configuration in force, the counters, the
//! server-wide Data-Out budget and send budget.
//!
//! A narrow handle instead of the whole server state: connections hold an
//! `Arc<Services>` (and reach the session table and the worker pool only through the
//! [`crate::conn::Registry`] operations they need), so the connection modules do not
//! depend on the server module that builds them.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::budget::Budget;
use crate::config::{Execution, ServerConfig};
use crate::metrics::Metrics;

/// Server-wide state shared with every connection.
#[derive(Debug)]
pub(crate) struct Services {
    config: RwLock<Arc<ServerConfig>>,
    /// Counters.
    pub(crate) metrics: Metrics,
    /// Limits' counters.
    pub(crate) limit_counters: LimitCounters,
    /// Data-Out buffer memory of the whole server (issue 20 item 2).
    pub(crate) write_budget: Arc<Budget>,
    /// Response bytes handed over between workers and not yet sent, on all of this
    /// server's connections (bounded by the send budget, see
    /// `conn::TX_QUEUE_SERVER_MAX`).
    pub(crate) tx_queued: AtomicU64,
}

impl Services {
    /// The services of a server starting with `config`.
    pub(crate) fn new(config: ServerConfig) -> Services {
        let write_limit = config.max_write_buffer;
        Services {
            config: RwLock::new(Arc::new(config)),
            metrics: Metrics::default(),
            limit_counters: LimitCounters::default(),
            write_budget: Arc::new(Budget::new(write_limit)),
            tx_queued: AtomicU64::new(0),
        }
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.config.read().clone()
    }

    /// Puts a new configuration in force (reload).
    pub(crate) fn set_config(&self, config: Arc<ServerConfig>) {
        *self.config.write() = config;
    }

    /// Where commands run.
    pub(crate) fn execution(&self) -> Execution {
        self.config.read().execution
    }
}

/// Counters of the resource limits (rendered as metrics, read by tests).
#[derive(Debug, Default)]
pub(crate) struct LimitCounters {
    /// Connections closed at accept by a cap.
    pub refused: AtomicU64,
    /// Logins closed by the login deadline.
    pub login_timeouts: AtomicU64,
    /// Connections dropped because a send made no progress for the send timeout.
    pub send_timeouts: AtomicU64,
    /// Connections dropped because promised Data-Out did not come.
    pub data_out_timeouts: AtomicU64,
    /// Write commands answered BUSY for want of buffer budget.
    pub busy: AtomicU64,
    /// Write commands that had to wait for buffer budget before their R2Ts.
    pub held: AtomicU64,
}
