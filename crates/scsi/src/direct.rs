//! Zero-copy data-in: memory of the transport that a READ fills directly.
//!
//! [`crate::LogicalUnit::execute`] returns data-in in a staging `Vec`, which costs a copy
//! (and, for a fresh length, a zero fill) per READ before the transport moves the bytes
//! again. A transport that already owns the destination — the TCMU data area the kernel
//! handed to userspace, a reusable iSCSI Data-In buffer — lends it as a [`DirectIn`]
//! to [`crate::LogicalUnit::execute_direct`]; a READ whose transfer is exactly that long
//! is read by the backstore straight into it. Every other command, and a READ of any
//! other length (an initiator whose expected length differs from the CDB), still uses the
//! staging `Vec`, so the transport handles residuals as before.

use std::io::IoSliceMut;

/// Destination buffers for one command's data-in. See the module documentation.
#[derive(Debug)]
pub struct DirectIn<'a, 'b> {
    bufs: &'a mut [IoSliceMut<'b>],
    len: usize,
    used: bool,
}

impl<'a, 'b> DirectIn<'a, 'b> {
    /// Lends `bufs` (filled in order) to one command.
    pub fn new(bufs: &'a mut [IoSliceMut<'b>]) -> DirectIn<'a, 'b> {
        let len = bufs.iter().map(|b| b.len()).sum();
        DirectIn {
            bufs,
            len,
            used: false,
        }
    }

    /// Total bytes of the lent buffers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no buffer space was lent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the command's data-in is in the lent buffers (all [`Self::len`] bytes,
    /// and the command ended with GOOD); otherwise it is in the staging `Vec`.
    pub fn used(&self) -> bool {
        self.used
    }

    /// The buffers, if a transfer of `len` bytes should go to them.
    pub(crate) fn take_for(&mut self, len: usize) -> Option<&mut [IoSliceMut<'b>]> {
        (len > 0 && len == self.len).then_some(&mut *self.bufs)
    }

    pub(crate) fn set_used(&mut self, used: bool) {
        self.used = used;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exact_length_goes_direct() {
        let mut a = [0u8; 3];
        let mut b = [0u8; 5];
        let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        let mut d = DirectIn::new(&mut bufs);
        assert_eq!(d.len(), 8);
        assert!(!d.is_empty());
        assert!(d.take_for(7).is_none());
        assert!(d.take_for(9).is_none());
        assert_eq!(d.take_for(8).map(|b| b.len()), Some(2));
        assert!(!d.used());
        d.set_used(true);
        assert!(d.used());
    }

    #[test]
    fn empty_buffers_never_go_direct() {
        let mut bufs: [IoSliceMut<'_>; 0] = [];
        let mut d = DirectIn::new(&mut bufs);
        assert!(d.is_empty());
        assert!(d.take_for(0).is_none());
    }
}
