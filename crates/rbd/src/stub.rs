//! The engine's API in a build without librbd (the `rbd` feature is off): the same types
//! and methods, but [`RbdBackstore::open`] always answers [`RbdError::NotBuiltIn`], so no
//! value of the type can exist.

use std::io::{IoSlice, IoSliceMut};
use std::time::Duration;

use rustio_backstore::{Backstore, Capabilities, Result, WriteFlags};

use crate::{OpenOptions, RbdError};

/// An open RBD image (uninhabited in this build: see the `rbd` feature).
#[derive(Debug)]
pub struct RbdBackstore {
    never: Never,
}

#[derive(Debug)]
enum Never {}

impl RbdBackstore {
    /// Always fails: this build has no librbd.
    pub fn open(opts: &OpenOptions) -> Result<Self, RbdError> {
        let _ = opts;
        Err(RbdError::NotBuiltIn)
    }

    /// `rbd/<pool>/<image>`.
    pub fn spec(&self) -> &str {
        match self.never {}
    }

    /// RADOS object size of the image in bytes.
    pub fn object_size(&self) -> u64 {
        match self.never {}
    }

    /// Largest compare-and-write in bytes (see the librbd build).
    pub fn max_compare_and_write_len(&self) -> u64 {
        match self.never {}
    }

    /// The `rados_osd_op_timeout` in force.
    pub fn osd_op_timeout(&self) -> Duration {
        match self.never {}
    }

    /// SBC-4 5.3 COMPARE AND WRITE (see the librbd build).
    pub fn compare_and_write(&self, offset: u64, cmp: &[u8], write: &[u8]) -> Result<Option<u64>> {
        let _ = (offset, cmp, write);
        match self.never {}
    }

    /// Whether this gateway holds the image's exclusive lock.
    pub fn is_exclusive_lock_owner(&self) -> Result<bool> {
        match self.never {}
    }

    /// Takes and keeps the image's exclusive lock.
    pub fn acquire_exclusive_lock(&self) -> Result<()> {
        match self.never {}
    }

    /// Releases the exclusive lock taken by [`RbdBackstore::acquire_exclusive_lock`].
    pub fn release_exclusive_lock(&self) -> Result<()> {
        match self.never {}
    }
}

impl Backstore for RbdBackstore {
    fn block_size(&self) -> u32 {
        match self.never {}
    }
    fn capacity(&self) -> u64 {
        match self.never {}
    }
    fn capabilities(&self) -> Capabilities {
        match self.never {}
    }
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<()> {
        let _ = (bufs, offset);
        match self.never {}
    }
    fn write_vectored_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        flags: WriteFlags,
    ) -> Result<()> {
        let _ = (bufs, offset, flags);
        match self.never {}
    }
    fn flush(&self) -> Result<()> {
        match self.never {}
    }
}
