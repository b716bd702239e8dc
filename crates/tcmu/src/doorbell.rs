//! The completion doorbell: one thread at a time tells the kernel about completions.
//!
//! The kernel handles a doorbell (the `write` to the UIO device) by completing every
//! response up to `cmd_tail` under the device's ring mutex, copying each READ's data from
//! the data area to the command's pages as it goes (`tcmu_handle_completions`). Two
//! threads ringing at once do not get twice the work done: the second waits for the
//! mutex, spinning while the first copies (up to a megabyte per command), and then often
//! finds nothing left. With the runner's workers each ringing after their own command,
//! that spinning was ≈ 1.1 ms of every 1 MiB read, a fifth of the daemon's CPU (perf,
//! bench/README.md).
//!
//! So a thread that finds the doorbell being rung does not ring it: it asks the ringing
//! thread to ring once more, which covers its completion (published before it asked) and
//! any other published meanwhile, and goes back to work. The ringing thread rings until
//! nobody asked again: under steady load one worker is drafted as the device's notifier
//! for as long as the others keep completing (each ring completes everything published
//! before it), and goes back to its work at the first ring that finds no new request.
//! The watchdog does not use the doorbell, so it is never drafted. No completion is left unannounced: a request to ring again is
//! either taken up by the ringing thread or, if that thread had already finished, the
//! requester becomes the ringing thread itself.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::device::Notify;

/// Coalesces concurrent notifications of one device (see the module documentation).
///
/// `pending` is set by every caller; the ringing thread clears it before each ring, so a
/// request is covered by a ring that begins after it. `ringing` elects the ringing
/// thread. All accesses are sequentially consistent: a caller that sets `pending` and
/// finds `ringing` set relies on the ringing thread, which clears `ringing` and then
/// looks at `pending` once more, to see its request (a store-then-load on each side,
/// which only `SeqCst` orders).
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    pending: AtomicBool,
    ringing: AtomicBool,
}

impl Doorbell {
    /// Makes sure `notify` runs after this call began: by this thread, or by the thread
    /// ringing right now, which rings again for it. Call after publishing the completions.
    pub(crate) fn ring(&self, notify: &dyn Notify) {
        self.pending.store(true, Ordering::SeqCst);
        loop {
            if self
                .ringing
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // The ringing thread will see `pending`.
                return;
            }
            while self.pending.swap(false, Ordering::SeqCst) {
                notify.notify();
            }
            self.ringing.store(false, Ordering::SeqCst);
            // A request made after the last `swap` whose caller still saw `ringing` set
            // is ours to take.
            if !self.pending.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Records how many threads notify at once and what had been published when each
    /// notification began.
    #[derive(Debug, Default)]
    struct Probe {
        published: AtomicUsize,
        seen: AtomicUsize,
        inside: AtomicBool,
        overlaps: AtomicUsize,
        rings: AtomicUsize,
    }

    impl Notify for Probe {
        fn notify(&self) {
            if self.inside.swap(true, Ordering::AcqRel) {
                self.overlaps.fetch_add(1, Ordering::Relaxed);
            }
            self.seen
                .fetch_max(self.published.load(Ordering::Acquire), Ordering::AcqRel);
            self.rings.fetch_add(1, Ordering::Relaxed);
            std::thread::yield_now();
            self.inside.store(false, Ordering::Release);
        }

        fn wake_poller(&self) {}
    }

    #[test]
    fn one_thread_rings_each_time() {
        let bell = Doorbell::default();
        let probe = Probe::default();
        for _ in 0..3 {
            bell.ring(&probe);
        }
        assert_eq!(probe.rings.load(Ordering::Relaxed), 3);
        assert!(!bell.ringing.load(Ordering::Relaxed) && !bell.pending.load(Ordering::Relaxed));
    }

    /// Every completion published before a `ring` is seen by a notification that began
    /// after it, no two notifications overlap, and concurrent rings are merged.
    #[test]
    fn concurrent_rings_are_merged_and_none_is_lost() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 2000;
        let bell = Arc::new(Doorbell::default());
        let probe = Arc::new(Probe::default());
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (bell, probe) = (bell.clone(), probe.clone());
                std::thread::spawn(move || {
                    for _ in 0..PER_THREAD {
                        probe.published.fetch_add(1, Ordering::AcqRel);
                        bell.ring(&*probe);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(probe.overlaps.load(Ordering::Relaxed), 0);
        assert_eq!(probe.seen.load(Ordering::Relaxed), THREADS * PER_THREAD);
        let rings = probe.rings.load(Ordering::Relaxed);
        assert!((1..=THREADS * PER_THREAD).contains(&rings), "{rings} rings");
        assert!(!bell.ringing.load(Ordering::Relaxed) && !bell.pending.load(Ordering::Relaxed));
    }
}
