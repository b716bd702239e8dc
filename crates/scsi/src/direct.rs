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
//!
//! A transport that can send straight from a file (iSCSI over TCP: `sendfile(2)`) also
//! says so with [`DirectIn::accept_file_range`]: a READ of exactly that length on a store
//! that lends its data as a [`FileRange`] (a plain file, [`Backstore::file_range`]) then
//! reads nothing at all and answers with the range, [`DirectIn::file_range`]; the data
//! is read from the page cache when the transport sends it, saving the copy into the
//! lent buffers.
//!
//! [`Backstore::file_range`]: rustio_backstore::Backstore::file_range

use std::io::IoSliceMut;

use rustio_backstore::FileRange;

/// Destination buffers for one command's data-in. See the module documentation.
#[derive(Debug)]
pub struct DirectIn<'a, 'b> {
    bufs: &'a mut [IoSliceMut<'b>],
    len: usize,
    used: bool,
    accept_file: bool,
    file: Option<FileRange>,
}

impl<'a, 'b> DirectIn<'a, 'b> {
    /// Lends `bufs` (filled in order) to one command.
    pub fn new(bufs: &'a mut [IoSliceMut<'b>]) -> DirectIn<'a, 'b> {
        let len = bufs.iter().map(|b| b.len()).sum();
        DirectIn {
            bufs,
            len,
            used: false,
            accept_file: false,
            file: None,
        }
    }

    /// Lets a READ of exactly [`Self::len`] bytes answer with a [`FileRange`] instead of
    /// filling the buffers, when its store lends one (see the module documentation).
    pub fn accept_file_range(&mut self) {
        self.accept_file = true;
    }

    /// The range of a file holding the command's data-in (all [`Self::len`] bytes, and
    /// the command ended with GOOD), when the READ answered with one; the lent buffers
    /// and the staging `Vec` are then untouched.
    pub fn file_range(&self) -> Option<&FileRange> {
        self.file.as_ref()
    }

    /// Takes the [`Self::file_range`] out.
    pub fn take_file_range(&mut self) -> Option<FileRange> {
        self.file.take()
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

    /// Whether a transfer of `len` bytes may answer with a file range.
    pub(crate) fn wants_file_for(&self, len: usize) -> bool {
        self.accept_file && len > 0 && len == self.len
    }

    pub(crate) fn set_file(&mut self, file: FileRange) {
        self.file = Some(file);
    }

    /// Forgets any data-in placed so far (before a command runs, and after it failed).
    pub(crate) fn reset(&mut self) {
        self.used = false;
        self.file = None;
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
        // No file range unless the transport accepts one, and then only for the exact length.
        assert!(!d.wants_file_for(8));
        d.accept_file_range();
        assert!(d.wants_file_for(8));
        assert!(!d.wants_file_for(7));
        d.reset();
        assert!(!d.used());
        assert!(d.file_range().is_none());
    }

    #[test]
    fn empty_buffers_never_go_direct() {
        let mut bufs: [IoSliceMut<'_>; 0] = [];
        let mut d = DirectIn::new(&mut bufs);
        assert!(d.is_empty());
        assert!(d.take_for(0).is_none());
    }
}
