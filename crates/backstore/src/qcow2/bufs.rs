//! A request's buffers, handed out front to back in runs of bytes.
//!
//! A guest request maps to a few host pieces (one per contiguous run of clusters), and each
//! piece takes the next `n` bytes of the caller's buffers, splitting one where a piece ends
//! inside it. Requests carry one to a few buffers, so the lists live inline: under the TCMU
//! runner's 4 KiB I/O, heap lists here cost ≈ 410 instructions of every write (callgrind,
//! bench/README.md).

use smallvec::SmallVec;

/// The buffers of one run (most requests need no more than four).
pub(crate) type Run<B> = SmallVec<[B; 4]>;

/// A byte slice that can be split in two by value: `&mut [u8]` or `&[u8]`.
pub(crate) trait Slice: Default + Sized {
    fn len(&self) -> usize;
    /// The first `n` bytes and the rest; `n <= self.len()`.
    fn split(self, n: usize) -> (Self, Self);
}

impl Slice for &mut [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn split(self, n: usize) -> (Self, Self) {
        self.split_at_mut(n)
    }
}

impl Slice for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn split(self, n: usize) -> (Self, Self) {
        self.split_at(n)
    }
}

/// The not yet consumed buffers of one request.
pub(crate) struct Bufs<B> {
    bufs: Run<B>,
    /// Index of the first buffer not (wholly) handed out.
    next: usize,
}

impl<B: Slice> Bufs<B> {
    /// The non-empty buffers of `bufs`, in order.
    pub(crate) fn new(bufs: impl IntoIterator<Item = B>) -> Self {
        Bufs {
            bufs: bufs.into_iter().filter(|b| b.len() > 0).collect(),
            next: 0,
        }
    }

    /// The next `n` bytes (fewer if the buffers run out).
    pub(crate) fn take(&mut self, mut n: usize) -> Run<B> {
        let mut out = Run::new();
        while n > 0 {
            let Some(slot) = self.bufs.get_mut(self.next) else {
                break;
            };
            let s = std::mem::take(slot);
            if s.len() <= n {
                n -= s.len();
                out.push(s);
                self.next += 1;
            } else {
                let (a, b) = s.split(n);
                out.push(a);
                *slot = b;
                n = 0;
            }
        }
        out
    }

    /// Everything not handed out yet.
    pub(crate) fn rest(mut self) -> Run<B> {
        self.bufs.drain(..self.next);
        self.bufs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_splits_buffers_at_run_boundaries() {
        let (mut a, mut b, mut c) = ([1u8; 3], [2u8; 0], [3u8; 5]);
        let mut q = Bufs::new([&mut a[..], &mut b[..], &mut c[..]]);
        let first = q.take(4);
        assert_eq!(first.iter().map(|s| s.len()).collect::<Vec<_>>(), [3, 1]);
        assert_eq!(first[1][0], 3);
        let second = q.take(2);
        assert_eq!(second.iter().map(|s| s.len()).collect::<Vec<_>>(), [2]);
        let rest = q.rest();
        assert_eq!(rest.iter().map(|s| s.len()).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn take_past_the_end_returns_what_is_left() {
        let data = [7u8; 6];
        let mut q = Bufs::new([&data[..2], &data[2..]]);
        let all = q.take(100);
        assert_eq!(all.iter().map(|s| s.len()).sum::<usize>(), 6);
        assert!(q.take(1).is_empty());
        assert!(q.rest().is_empty());
    }

    #[test]
    fn rest_after_an_exact_take_keeps_following_buffers() {
        let data = [0u8; 8];
        let mut q = Bufs::new([&data[..4], &data[4..6], &data[6..]]);
        assert_eq!(q.take(4).len(), 1);
        assert_eq!(q.rest().iter().map(|s| s.len()).collect::<Vec<_>>(), [2, 2]);
    }

    proptest::proptest! {
        /// Whatever the buffer and run lengths, the runs hand out every byte once, in
        /// order, each run as long as asked while bytes remain.
        #[test]
        fn runs_cover_the_buffers_in_order(
            lens in proptest::collection::vec(0usize..20, 0..8),
            takes in proptest::collection::vec(0usize..30, 0..10),
        ) {
            let total: usize = lens.iter().sum();
            let data: Vec<u8> = (0..total).map(|i| i as u8).collect();
            let mut parts = Vec::new();
            let mut at = 0;
            for l in &lens {
                parts.push(&data[at..at + l]);
                at += l;
            }
            let mut q = Bufs::new(parts);
            let mut seen = Vec::new();
            for t in takes {
                let left = total - seen.len();
                let run = q.take(t);
                let got: Vec<u8> = run.iter().flat_map(|s| s.iter().copied()).collect();
                proptest::prop_assert_eq!(got.len(), t.min(left));
                proptest::prop_assert!(run.iter().all(|s| !s.is_empty()));
                seen.extend(got);
            }
            seen.extend(q.rest().iter().flat_map(|s| s.iter().copied()));
            proptest::prop_assert_eq!(seen, data);
        }
    }
}
