//! In-memory backstore, LIO `rd_mcp` style.
//!
//! Memory is allocated lazily in chunks on first write, so a 1 GiB demo LUN costs nothing
//! until it is written; discard frees whole chunks (and zeroes partial ones), and unwritten
//! chunks read as zeros (LBPRZ). Each chunk has its own lock, so concurrent I/O to
//! different regions never contends.
//!
//! `nullio` mode keeps no data at all: reads return zeros and writes are dropped.

use std::io::{IoSlice, IoSliceMut};

use parking_lot::RwLock;

use crate::{check_iov, check_range, validate_block_size, Backstore, Capabilities, Error, Extent};
use crate::{Result, WriteFlags};

/// Size of one lazily allocated chunk.
const CHUNK: u64 = 64 * 1024;

/// A sparse RAM disk, or a `nullio` sink.
#[derive(Debug)]
pub struct RamBackstore {
    block_size: u32,
    /// Current capacity in bytes; the chunk table always covers it.
    state: RwLock<RamState>,
    nullio: bool,
    read_only: bool,
}

#[derive(Debug)]
struct RamState {
    capacity: u64,
    chunks: Vec<RwLock<Option<Box<[u8]>>>>,
}

fn chunk_count(capacity: u64) -> Result<usize> {
    usize::try_from(capacity.div_ceil(CHUNK))
        .map_err(|_| Error::InvalidConfig(format!("ram capacity {capacity} is too large")))
}

impl RamBackstore {
    /// A RAM disk of `capacity` bytes (a multiple of `block_size`).
    pub fn new(capacity: u64, block_size: u32) -> Result<Self> {
        Self::build(capacity, block_size, false)
    }

    /// A `nullio` device of `capacity` bytes: reads return zeros, writes are dropped.
    pub fn nullio(capacity: u64, block_size: u32) -> Result<Self> {
        Self::build(capacity, block_size, true)
    }

    /// Marks the store read-only (writes fail with [`Error::ReadOnly`]).
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    fn build(capacity: u64, block_size: u32, nullio: bool) -> Result<Self> {
        validate_block_size(block_size)?;
        if capacity == 0 || capacity % u64::from(block_size) != 0 {
            return Err(Error::InvalidConfig(format!(
                "ram capacity {capacity} must be a non-zero multiple of the block size {block_size}"
            )));
        }
        let n = if nullio { 0 } else { chunk_count(capacity)? };
        let mut chunks = Vec::new();
        chunks
            .try_reserve_exact(n)
            .map_err(|_| Error::InvalidConfig(format!("ram capacity {capacity} is too large")))?;
        chunks.resize_with(n, || RwLock::new(None));
        Ok(RamBackstore {
            block_size,
            state: RwLock::new(RamState { capacity, chunks }),
            nullio,
            read_only: false,
        })
    }

    /// Whether this is a `nullio` device.
    pub fn is_nullio(&self) -> bool {
        self.nullio
    }

    /// Bytes of memory currently allocated for data.
    pub fn allocated_bytes(&self) -> u64 {
        let st = self.state.read();
        st.chunks.iter().filter(|c| c.read().is_some()).count() as u64 * CHUNK
    }
}

/// Walks `[offset, offset+len)` chunk by chunk: `f(chunk_index, offset_in_chunk, n)`.
fn for_each_chunk(
    offset: u64,
    len: u64,
    mut f: impl FnMut(usize, usize, usize) -> Result<()>,
) -> Result<()> {
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let idx = (pos / CHUNK) as usize;
        let within = pos % CHUNK;
        let n = (CHUNK - within).min(end - pos);
        f(idx, within as usize, n as usize)?;
        pos += n;
    }
    Ok(())
}

impl Backstore for RamBackstore {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn capacity(&self) -> u64 {
        self.state.read().capacity
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: self.read_only,
            discard: !self.nullio,
            discard_zeroes: !self.nullio,
            volatile_cache: false,
            rotational: false,
            allocation_status: !self.nullio,
            network: false,
        }
    }

    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<()> {
        let st = self.state.read();
        check_iov("read", bufs, offset, st.capacity)?;
        if self.nullio {
            for b in bufs.iter_mut() {
                b.fill(0);
            }
            return Ok(());
        }
        let mut pos = offset;
        for buf in bufs.iter_mut() {
            let mut filled = 0usize;
            for_each_chunk(pos, buf.len() as u64, |idx, within, n| {
                let dst = &mut buf[filled..filled + n];
                match &*st.chunks[idx].read() {
                    Some(data) => dst.copy_from_slice(&data[within..within + n]),
                    None => dst.fill(0),
                }
                filled += n;
                Ok(())
            })?;
            pos += buf.len() as u64;
        }
        Ok(())
    }

    fn write_vectored_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        _flags: WriteFlags,
    ) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let st = self.state.read();
        check_iov("write", bufs, offset, st.capacity)?;
        if self.nullio {
            return Ok(());
        }
        let mut pos = offset;
        for buf in bufs {
            let mut taken = 0usize;
            for_each_chunk(pos, buf.len() as u64, |idx, within, n| {
                let src = &buf[taken..taken + n];
                let mut chunk = st.chunks[idx].write();
                let data =
                    chunk.get_or_insert_with(|| vec![0u8; CHUNK as usize].into_boxed_slice());
                data[within..within + n].copy_from_slice(src);
                taken += n;
                Ok(())
            })?;
            pos += buf.len() as u64;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let st = self.state.read();
        check_range("discard", offset, len, st.capacity)?;
        if self.nullio {
            return Ok(());
        }
        for_each_chunk(offset, len, |idx, within, n| {
            let mut chunk = st.chunks[idx].write();
            if n as u64 == CHUNK {
                *chunk = None;
            } else if let Some(data) = chunk.as_mut() {
                data[within..within + n].fill(0);
            }
            Ok(())
        })
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> Result<()> {
        // Unallocated chunks read as zeros, so zeroing is the same as discarding here.
        self.discard(offset, len)
    }

    fn resize(&self, new_capacity: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if new_capacity == 0 || new_capacity % u64::from(self.block_size) != 0 {
            return Err(Error::InvalidConfig(format!(
                "ram capacity {new_capacity} must be a non-zero multiple of the block size {}",
                self.block_size
            )));
        }
        let mut st = self.state.write();
        if !self.nullio {
            let n = chunk_count(new_capacity)?;
            let have = st.chunks.len();
            if n > have {
                st.chunks.try_reserve_exact(n - have).map_err(|_| {
                    Error::InvalidConfig(format!("ram capacity {new_capacity} is too large"))
                })?;
            }
            st.chunks.resize_with(n, || RwLock::new(None));
            // Bytes past the new end inside the last chunk must read as zeros after a regrow.
            let tail = new_capacity % CHUNK;
            if tail != 0 {
                if let Some(data) = st.chunks[n - 1].write().as_mut() {
                    data[tail as usize..].fill(0);
                }
            }
        }
        st.capacity = new_capacity;
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let st = self.state.read();
        check_range("block status", offset, len, st.capacity)?;
        if self.nullio {
            return Ok(vec![Extent {
                offset,
                len,
                mapped: true,
            }]);
        }
        let mut out: Vec<Extent> = Vec::new();
        for_each_chunk(offset, len, |idx, within, n| {
            let mapped = st.chunks[idx].read().is_some();
            let start = idx as u64 * CHUNK + within as u64;
            match out.last_mut() {
                Some(last) if last.mapped == mapped => last.len += n as u64,
                _ => out.push(Extent {
                    offset: start,
                    len: n as u64,
                    mapped,
                }),
            }
            Ok(())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[test]
    fn conformance_ram_512() {
        let b = RamBackstore::new(4 << 20, 512).unwrap();
        conformance::run_all(&b);
    }

    #[test]
    fn conformance_ram_4096() {
        let b = RamBackstore::new(4 << 20, 4096).unwrap();
        conformance::run_all(&b);
    }

    #[test]
    fn nullio_reads_zero_and_drops_writes() {
        let b = RamBackstore::nullio(1 << 20, 512).unwrap();
        b.write_at(&[7u8; 512], 0, WriteFlags::default()).unwrap();
        let mut buf = [1u8; 512];
        b.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        assert_eq!(b.allocated_bytes(), 0);
        assert!(b.read_at(&mut buf, 1 << 20).is_err());
    }

    #[test]
    fn lazily_allocates_and_discard_frees() {
        let b = RamBackstore::new(1 << 30, 512).unwrap();
        assert_eq!(b.allocated_bytes(), 0);
        b.write_at(&[1u8; 4096], 10 * CHUNK, WriteFlags::default())
            .unwrap();
        assert_eq!(b.allocated_bytes(), CHUNK);
        let st = b.block_status(9 * CHUNK, 3 * CHUNK).unwrap();
        assert_eq!(
            st,
            vec![
                Extent {
                    offset: 9 * CHUNK,
                    len: CHUNK,
                    mapped: false
                },
                Extent {
                    offset: 10 * CHUNK,
                    len: CHUNK,
                    mapped: true
                },
                Extent {
                    offset: 11 * CHUNK,
                    len: CHUNK,
                    mapped: false
                },
            ]
        );
        b.discard(10 * CHUNK, CHUNK).unwrap();
        assert_eq!(b.allocated_bytes(), 0);
    }

    #[test]
    fn rejects_bad_geometry() {
        assert!(RamBackstore::new(0, 512).is_err());
        assert!(RamBackstore::new(1000, 512).is_err());
        assert!(RamBackstore::new(1 << 20, 500).is_err());
    }

    #[test]
    fn shrink_then_grow_reads_zero_past_old_end() {
        let b = RamBackstore::new(1 << 20, 512).unwrap();
        b.write_at(&[9u8; 1024], (1 << 20) - 1024, WriteFlags::default())
            .unwrap();
        b.resize((1 << 20) - 512).unwrap();
        assert_eq!(b.capacity(), (1 << 20) - 512);
        b.resize(1 << 20).unwrap();
        let mut buf = [1u8; 512];
        b.read_at(&mut buf, (1 << 20) - 512).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        b.read_at(&mut buf, (1 << 20) - 1024).unwrap();
        assert!(buf.iter().all(|&x| x == 9));
    }
}
