//! Where a SCSI command runs once it is ready.
//!
//! This type lives here, below both frontends, because the choice is a property of the
//! opened store: [`Execution::Auto`] reads [`rustio_backstore::Capabilities::network`]
//! of the store this crate opened. The SCSI engine (`rustio-scsi`) executes a command
//! on whatever thread calls it and knows nothing of threads; the iSCSI target and the
//! TCMU runner each own the thread that would run a command inline (the connection's
//! reader, the ring poller) and their own size threshold for `Auto`.

/// Where a command executes: inline on the thread that received it (the iSCSI
/// connection's reader, the TCMU ring poller) or on the shared worker pool.
///
/// Inline saves a thread hand-off (two context switches) per command; the pool lets the
/// receiving thread take the next commands meanwhile and keeps many in flight (measured
/// in `bench/README.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Execution {
    /// Commands up to the frontend's threshold on stores that do not wait on the network
    /// run inline; larger ones, and every command on a network store (RBD), on the pool.
    #[default]
    Auto,
    /// Every command runs inline (RAM and fast local stores).
    Inline,
    /// Every command runs on the worker pool.
    Pool,
}

impl Execution {
    /// The largest command (data bytes) that runs inline on a store, or `None` when
    /// every command goes to the pool. `network` is the store's
    /// [`rustio_backstore::Capabilities::network`]; `auto_max` the frontend's threshold
    /// for [`Execution::Auto`].
    pub fn inline_max(self, network: bool, auto_max: u64) -> Option<u64> {
        match self {
            Execution::Inline => Some(u64::MAX),
            Execution::Pool => None,
            Execution::Auto => (!network).then_some(auto_max),
        }
    }

    /// Whether a command of `len` data bytes runs inline (see [`Execution::inline_max`]).
    pub fn runs_inline(self, len: u64, network: bool, auto_max: u64) -> bool {
        self.inline_max(network, auto_max)
            .is_some_and(|max| len <= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_network_capability() {
        // The TCMU runner's threshold (128 KiB) and the iSCSI target's (64 KiB).
        for max in [128u64 << 10, 64 << 10] {
            assert!(Execution::Auto.runs_inline(max, false, max));
            assert!(!Execution::Auto.runs_inline(max + 1, false, max));
            assert!(!Execution::Auto.runs_inline(512, true, max));
            assert_eq!(Execution::Auto.inline_max(true, max), None);
        }
        assert!(Execution::Inline.runs_inline(u64::MAX, true, 0));
        assert!(!Execution::Pool.runs_inline(0, false, u64::MAX));
        assert_eq!(Execution::default(), Execution::Auto);
    }
}
