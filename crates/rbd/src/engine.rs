//! The RBD engine on librbd (built with the `rbd` feature).

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustio_backstore::{
    check_iov, check_range, validate_block_size, Backstore, Capabilities, Error, Extent, IoDone,
    Result, WriteFlags,
};

use crate::config::effective_osd_op_timeout;
use crate::error::io_error;
use crate::ffi::{CawOutcome, Cluster, Errno, Image, IoCtx};
use crate::{OpenOptions, RbdError};

/// At most this many objects are examined by one [`Backstore::block_status`] call; the
/// answer then covers a prefix of the range, which the trait allows (SBC-4 5.7 GET LBA
/// STATUS may also return fewer descriptors than the range holds).
const BLOCK_STATUS_OBJECTS: u64 = 64;

/// librbd 16.2 compares and writes within one 512-byte sector only.
const CAW_SECTOR: u64 = 512;

/// An RBD image served as a block store.
///
/// Every method may be called from many threads at once; each call has its own librbd
/// request and completion in flight.
pub struct RbdBackstore {
    /// Shared with the asynchronous requests in flight, which keep it open.
    image: Arc<Image>,
    /// `pool/image`, shared with the completions of asynchronous requests (their errors
    /// name it) without a copy per request.
    spec: Arc<str>,
    block_size: u32,
    /// Image size rounded down to the block size; updated by resize and refresh.
    capacity: AtomicU64,
    object_size: u64,
    read_only: bool,
    osd_op_timeout: Duration,
}

impl fmt::Debug for RbdBackstore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbdBackstore")
            .field("spec", &self.spec)
            .field("block_size", &self.block_size)
            .field("capacity", &self.capacity.load(Ordering::Relaxed))
            .field("object_size", &self.object_size)
            .field("read_only", &self.read_only)
            .field("osd_op_timeout", &self.osd_op_timeout)
            .finish_non_exhaustive()
    }
}

fn os(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// The `map_err` of a failed librados/librbd call `op` on image `spec`:
/// `.map_err(ceph_error("rados_connect", &spec))`.
pub(crate) fn ceph_error<'a>(
    op: &'static str,
    spec: &'a str,
) -> impl FnOnce(Errno) -> RbdError + 'a {
    move |errno| RbdError::Ceph {
        op,
        spec: spec.to_owned(),
        source: os(errno),
    }
}

impl RbdBackstore {
    /// Connects to the cluster and opens the image.
    ///
    /// Like tcmu-runner (`rbd.c`, `tcmu_rbd_image_open`): a missing `conf=` file is an
    /// error while a failed default search is not; `rbd_cache` is turned off, so a
    /// completed write is on the OSDs and a gateway failover loses nothing; the OSD op
    /// timeout follows [`crate::config::effective_osd_op_timeout`]. In addition the
    /// monitor connection and monitor requests are bounded by
    /// [`OpenOptions::connect_timeout`], so opening never hangs on a dead cluster.
    pub fn open(opts: &OpenOptions) -> Result<Self, RbdError> {
        let cfg = &opts.config;
        let spec = cfg.spec();
        if validate_block_size(opts.block_size).is_err() {
            return Err(RbdError::BlockSize(opts.block_size, spec));
        }
        for o in &cfg.ignored {
            tracing::warn!(image = %spec, option = %o, "unknown rbd option ignored");
        }
        let ceph = |op: &'static str| ceph_error(op, &spec);
        let Connection {
            ioctx,
            osd_op_timeout,
            user,
        } = connect_pool(opts)?;
        let denied = |what: String, errno: Errno| RbdError::PermissionDenied {
            user: user.clone(),
            what,
            source: os(errno),
        };
        let mut image =
            ioctx
                .into_image(&cfg.image, opts.read_only)
                .map_err(|errno| match errno {
                    libc::ENOENT => RbdError::ImageNotFound {
                        pool: cfg.pool.clone(),
                        image: cfg.image.clone(),
                    },
                    libc::EACCES | libc::EPERM => denied(format!("open image {spec}"), errno),
                    _ => ceph("rbd_open")(errno),
                })?;
        // Log requests outstanding for longer than librados should ever let them be.
        image.set_slow_after(osd_op_timeout.saturating_mul(2));
        let size = image.size().map_err(ceph("rbd_get_size"))?;
        let object_size = image.object_size().map_err(ceph("rbd_stat"))?;
        let capacity = size - size % u64::from(opts.block_size);
        if capacity == 0 {
            return Err(RbdError::TooSmall {
                spec,
                size,
                block_size: opts.block_size,
            });
        }
        tracing::info!(
            image = %spec,
            user = %user,
            size,
            object_size,
            osd_op_timeout = osd_op_timeout.as_secs(),
            read_only = opts.read_only,
            "rbd image open"
        );
        Ok(RbdBackstore {
            image: Arc::new(image),
            spec: spec.into(),
            block_size: opts.block_size,
            capacity: AtomicU64::new(capacity),
            object_size,
            read_only: opts.read_only,
            osd_op_timeout,
        })
    }

    /// `rbd/<pool>/<image>`.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// RADOS object size of the image in bytes (4 MiB by default).
    pub fn object_size(&self) -> u64 {
        self.object_size
    }

    /// Largest [`RbdBackstore::compare_and_write`] in bytes, which must also not cross a
    /// multiple of it: librbd 16.2 refuses (EINVAL) a compare-and-write that does not fit
    /// in one 512-byte sector (`ImageCompareAndWriteRequest::prune_object_extents`). The
    /// SCSI engine derives MAXIMUM COMPARE AND WRITE LENGTH (SBC-4 6.6.4, Block Limits
    /// VPD page) from it: one block with 512-byte blocks, no offload with larger blocks.
    pub fn max_compare_and_write_len(&self) -> u64 {
        CAW_SECTOR
    }

    /// The `rados_osd_op_timeout` in force: how long a request may wait for an
    /// unreachable cluster before it fails with `Busy`.
    pub fn osd_op_timeout(&self) -> Duration {
        self.osd_op_timeout
    }

    /// SBC-4 5.3 COMPARE AND WRITE: atomically compares `cmp` with the data at `offset`
    /// and, if equal, writes `write` there (librbd `rbd_aio_compare_and_write`, one RADOS
    /// `cmpext` + `write` transaction on one object, so atomic against every other client
    /// of the image). Returns `None` when written, or `Some(n)`: the first `n` bytes
    /// matched and byte `n` differs (nothing written; the SCSI layer reports MISCOMPARE
    /// with `n` in the INFORMATION field).
    ///
    /// `cmp` and `write` must have the same length and the range must lie within one
    /// aligned [`RbdBackstore::max_compare_and_write_len`] sector; otherwise the request
    /// is refused with an `InvalidRequest` error.
    pub fn compare_and_write(&self, offset: u64, cmp: &[u8], write: &[u8]) -> Result<Option<u64>> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if cmp.len() != write.len() {
            return Err(Error::InvalidConfig(format!(
                "compare and write: {} bytes to compare but {} to write",
                cmp.len(),
                write.len()
            )));
        }
        let len = cmp.len() as u64;
        check_range("compare and write", offset, len, self.capacity())?;
        if len == 0 {
            return Ok(None);
        }
        if offset / CAW_SECTOR != (offset + len - 1) / CAW_SECTOR {
            return Err(Error::Misaligned {
                op: "compare and write (librbd: within one 512-byte sector)",
                offset,
                len,
                align: CAW_SECTOR,
            });
        }
        match self
            .image
            .compare_and_write(offset, cmp, write)
            .map_err(|e| self.io_err("compare and write", offset, e))?
        {
            CawOutcome::Written => Ok(None),
            CawOutcome::Mismatch(at) => Ok(Some(
                miscompare_offset(offset, len, self.object_size, at).unwrap_or_else(|| {
                    tracing::warn!(image = %self.spec, offset, len, at, "miscompare offset outside the request");
                    0
                }),
            )),
        }
    }

    /// Whether this gateway holds the image's exclusive lock (HA: only the ALUA
    /// active/optimized gateway should).
    pub fn is_exclusive_lock_owner(&self) -> Result<bool> {
        self.image
            .is_exclusive_lock_owner()
            .map_err(|e| self.io_err("query exclusive lock", 0, e))
    }

    /// Takes the image's exclusive lock and keeps it: librbd no longer hands it over when
    /// another client asks (`rbd_lock_acquire`). For an HA pair, the gateway whose port
    /// group becomes active/optimized calls this; the other gateway's writes then fail
    /// with `Busy` (it is blocklisted when the lock is broken).
    pub fn acquire_exclusive_lock(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.image
            .lock_acquire_exclusive()
            .map_err(|e| self.io_err("acquire exclusive lock", 0, e))
    }

    /// Releases the lock taken by [`RbdBackstore::acquire_exclusive_lock`].
    pub fn release_exclusive_lock(&self) -> Result<()> {
        self.image
            .lock_release()
            .map_err(|e| self.io_err("release exclusive lock", 0, e))
    }

    fn io_err(&self, op: &'static str, offset: u64, errno: Errno) -> Error {
        io_error(op, &self.spec, offset, errno, self.read_only)
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Error of a failed read or write. librbd answers EINVAL for I/O that starts past the
    /// image end: if the image shrank behind our back, report that as out of range.
    fn io_failed(&self, op: &'static str, offset: u64, len: u64, errno: Errno) -> Error {
        if errno == libc::EINVAL {
            if let Ok(capacity) = self.refresh() {
                if let Err(e) = check_range(op, offset, len, capacity) {
                    return e;
                }
            }
        }
        self.io_err(op, offset, errno)
    }

    /// A read came back short: the image shrank behind our back (librbd clips I/O at the
    /// image end). Re-read the size and report the request as out of range.
    fn short_transfer(&self, op: &'static str, offset: u64, len: u64, done: usize) -> Error {
        let capacity = self.refresh().unwrap_or_else(|_| self.capacity());
        tracing::warn!(image = %self.spec, op, offset, len, done, capacity, "short rbd transfer");
        Error::out_of_range(op, offset, len, capacity)
    }

    fn store_size(&self, size: u64) -> u64 {
        let capacity = size - size % u64::from(self.block_size);
        self.capacity.store(capacity, Ordering::Release);
        capacity
    }
}

/// A connected cluster handle's pool context and what was negotiated on the way.
pub(crate) struct Connection {
    /// The I/O context of the configured pool.
    pub(crate) ioctx: IoCtx,
    /// The `rados_osd_op_timeout` in force.
    pub(crate) osd_op_timeout: Duration,
    /// `client.<id>`.
    pub(crate) user: String,
}

/// Connects to the cluster of `opts` and opens its pool, with the settings every client
/// of this crate uses (the image engine and the reservation store): `rbd_cache` off,
/// monitor connection and requests bounded by [`OpenOptions::connect_timeout`], the OSD
/// op timeout of [`crate::config::effective_osd_op_timeout`].
pub(crate) fn connect_pool(opts: &OpenOptions) -> Result<Connection, RbdError> {
    let cfg = &opts.config;
    let spec = cfg.spec();
    let user = cfg.user();
    let conf = cfg.conf.as_ref().map_or_else(
        || "default ceph.conf search".to_owned(),
        |p| p.display().to_string(),
    );
    let ceph = |op: &'static str| ceph_error(op, &spec);
    let mut cluster = Cluster::create(cfg.id.as_deref()).map_err(ceph("rados_create"))?;
    if let Err(errno) = cluster.read_conf_file(cfg.conf.as_deref()) {
        if let Some(path) = &cfg.conf {
            return Err(RbdError::ConfRead {
                path: path.clone(),
                source: os(errno),
            });
        }
    }
    let set = |k: &str, v: &str| cluster.conf_set(k, v).map_err(ceph("rados_conf_set"));
    set("rbd_cache", "false")?;
    // Every caller of the engine waits for its request's completion anyway (the
    // Backstore contract is synchronous), so librbd may do the submission work on the
    // caller's thread instead of queueing it to its io_context_pool thread (the default,
    // `rbd_non_blocking_aio = true`, exists for callers that must not block). Profile of
    // `rustio serve`, 4 KiB random reads at QD 32: io_context_pool 1.34 → 0.66 context
    // switches and 24–27 → 10–11 µs of CPU per I/O (bench/README.md, optimisations).
    set("rbd_non_blocking_aio", "false")?;
    // `rbd_disable_zero_copy_writes` stays at its default (true: librbd copies write
    // data). With zero-copy writes librbd delays a write's completion until its messenger
    // released our buffer, and for a client that was blocklisted (a gateway fenced by
    // another's takeover) that never happens: the write never completes and its worker
    // hangs (crates/rbd/tests/handover.rs, silent_owner_is_broken_after_the_handover_timeout,
    // hung there with librbd 16.2). The copy costs ≈ 8 % of CPU per 128 KiB write.
    let connect_secs = opts.connect_timeout.as_secs().max(1).to_string();
    set("client_mount_timeout", &connect_secs)?;
    set("rados_mon_op_timeout", &connect_secs)?;
    let get = |k: &str| cluster.conf_get(k).unwrap_or_default();
    let timeout = effective_osd_op_timeout(
        cfg.osd_op_timeout,
        &get("rados_osd_op_timeout"),
        &get("osd_heartbeat_grace"),
        &get("osd_heartbeat_interval"),
    );
    if timeout.raised {
        tracing::warn!(
            image = %spec,
            requested = ?cfg.osd_op_timeout,
            used = timeout.secs,
            "osd_op_timeout must exceed osd_heartbeat_grace + osd_heartbeat_interval; raised"
        );
    }
    set("rados_osd_op_timeout", &timeout.secs.to_string())?;
    let osd_op_timeout = Duration::from_secs(timeout.secs);

    cluster.connect().map_err(|errno| match errno {
        libc::ETIMEDOUT => RbdError::ConnectTimeout {
            conf: conf.clone(),
            user: user.clone(),
            timeout: Duration::from_secs(opts.connect_timeout.as_secs().max(1)),
            source: os(errno),
        },
        libc::EACCES | libc::EPERM => RbdError::Auth {
            user: user.clone(),
            conf: conf.clone(),
            source: os(errno),
        },
        // librados answers ENOENT when it finds no monitor address.
        libc::ENOENT => RbdError::NoMonitors { conf: conf.clone() },
        _ => RbdError::Connect {
            conf: conf.clone(),
            user: user.clone(),
            source: os(errno),
        },
    })?;
    let denied = |what: String, errno: Errno| RbdError::PermissionDenied {
        user: user.clone(),
        what,
        source: os(errno),
    };
    let ioctx = cluster.into_ioctx(&cfg.pool).map_err(|errno| match errno {
        libc::ENOENT => RbdError::PoolNotFound {
            pool: cfg.pool.clone(),
        },
        libc::EACCES | libc::EPERM => denied(format!("use pool {:?}", cfg.pool), errno),
        _ => ceph("rados_ioctx_create")(errno),
    })?;
    Ok(Connection {
        ioctx,
        osd_op_timeout,
        user,
    })
}

impl Backstore for RbdBackstore {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Acquire)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: self.read_only,
            discard: !self.read_only,
            // librbd skips discards of partial objects below rbd_discard_granularity_bytes
            // (rbd_skip_partial_discard), so discarded blocks need not read as zeros;
            // write_zeroes always zeroes.
            discard_zeroes: false,
            // rbd_cache is off: a completed write is on the OSDs.
            volatile_cache: false,
            rotational: false,
            allocation_status: true,
            // Every command is a round trip to the OSDs.
            network: true,
        }
    }

    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<()> {
        let len = check_iov("read", bufs, offset, self.capacity())?;
        if len == 0 {
            return Ok(());
        }
        let done = self
            .image
            .readv(bufs, offset)
            .map_err(|e| self.io_failed("read", offset, len, e))?;
        // A read's result is the byte count; librbd clips reads at the image end.
        if done as u64 != len {
            return Err(self.short_transfer("read", offset, len, done));
        }
        Ok(())
    }

    fn write_vectored_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        _flags: WriteFlags,
    ) -> Result<()> {
        self.writable()?;
        let len = check_iov("write", bufs, offset, self.capacity())?;
        if len == 0 {
            return Ok(());
        }
        // A write's result is 0, not a byte count.
        self.image
            .writev(bufs, offset)
            .map_err(|e| self.io_failed("write", offset, len, e))?;
        // FUA (SBC-4 5.40) needs nothing more: rbd_cache is off (set in `open`), so a
        // completed librbd write is already stable on the OSDs. A flush here would also
        // wait for every other in-flight write of the image, serialising a
        // write-through LU (measured through `rustio serve`, 4 KiB random writes at
        // QD 32: 1.1k IOPS with the flush, 3.5k without; bench/README.md, RBD stage).
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.image.flush().map_err(|e| self.io_err("flush", 0, e))
    }

    /// librbd's own asynchronous I/O: a request in flight holds no thread.
    fn submits_async(&self) -> bool {
        true
    }

    /// `rbd_aio_read` straight into `buf`. Errors come back classified as the
    /// synchronous path's (no librbd call in the completion: no size refresh after
    /// EINVAL or a short read — a caller wanting that detail repeats the read with
    /// [`Backstore::read_vectored_at`]).
    fn submit_read(&self, offset: u64, buf: Vec<u8>, done: IoDone) {
        let len = buf.len() as u64;
        if let Err(e) = check_range("read", offset, len, self.capacity()) {
            return done(buf, Err(e));
        }
        let spec = Arc::clone(&self.spec);
        let read_only = self.read_only;
        let capacity = self.capacity();
        self.image.read_owned(offset, buf, move |buf, r| {
            let r = match r {
                Ok(n) if n as u64 == len => Ok(()),
                // librbd clips reads at the image end: the image shrank.
                Ok(_) => Err(Error::out_of_range("read", offset, len, capacity)),
                Err(errno) => Err(io_error("read", &spec, offset, errno, read_only)),
            };
            done(buf, r);
        });
    }

    /// `rbd_aio_write` from `buf` (FUA needs nothing more, see `write_vectored_at`).
    fn submit_write(
        &self,
        offset: u64,
        buf: Vec<u8>,
        len: usize,
        _flags: WriteFlags,
        done: IoDone,
    ) {
        if let Err(e) = self.writable() {
            return done(buf, Err(e));
        }
        let len = len.min(buf.len());
        if let Err(e) = check_range("write", offset, len as u64, self.capacity()) {
            return done(buf, Err(e));
        }
        let spec = Arc::clone(&self.spec);
        let read_only = self.read_only;
        self.image.write_owned(offset, buf, len, move |buf, r| {
            done(
                buf,
                r.map_err(|errno| io_error("write", &spec, offset, errno, read_only)),
            );
        });
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        check_range("discard", offset, len, self.capacity())?;
        if len == 0 {
            return Ok(());
        }
        self.image
            .discard(offset, len)
            .map_err(|e| self.io_err("discard", offset, e))
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.writable()?;
        check_range("write zeroes", offset, len, self.capacity())?;
        if len == 0 {
            return Ok(());
        }
        // Without may_unmap the blocks must stay allocated (SBC-4 5.50 WRITE SAME with
        // UNMAP=0): librbd's thick-provision flag writes zeros instead of deallocating.
        self.image
            .write_zeroes(offset, len, !may_unmap)
            .map_err(|e| self.io_err("write zeroes", offset, e))
    }

    fn resize(&self, new_capacity: u64) -> Result<()> {
        self.writable()?;
        let bs = u64::from(self.block_size);
        if new_capacity == 0 || new_capacity % bs != 0 {
            return Err(Error::InvalidConfig(format!(
                "new size {new_capacity} of {} is not a positive multiple of the {bs}-byte block",
                self.spec
            )));
        }
        self.image
            .resize(new_capacity)
            .map_err(|e| self.io_err("resize", new_capacity, e))?;
        self.store_size(new_capacity);
        Ok(())
    }

    fn refresh(&self) -> Result<u64> {
        let size = self
            .image
            .size()
            .map_err(|e| self.io_err("get size", 0, e))?;
        Ok(self.store_size(size))
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range("block status", offset, len, self.capacity())?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let window = len.min(self.object_size.saturating_mul(BLOCK_STATUS_OBJECTS));
        let allocated = self
            .image
            .allocated_extents(offset, window)
            .map_err(|e| self.io_err("block status", offset, e))?;
        Ok(extents_from_allocated(offset, window, &allocated))
    }
}

/// The offset within a COMPARE AND WRITE request of the first differing byte, from the
/// `mismatch_off` librbd reported for a request of `len` bytes at image offset `offset`.
///
/// librbd 16.2 (pacific) reports the image offset of the request's *object* plus the
/// offset within the request (it maps the OSD's cmpext offset, which is relative to the
/// compared extent, as if it were relative to the object; verified by the cluster test).
/// An image offset of the differing byte (what the API documents) is accepted when that
/// reading does not fit.
fn miscompare_offset(offset: u64, len: u64, object_size: u64, at: u64) -> Option<u64> {
    let object_start = offset - offset % object_size.max(1);
    let within = |base: u64| at.checked_sub(base).filter(|r| *r < len);
    within(object_start).or_else(|| within(offset))
}

/// Turns sorted allocated `(offset, len)` ranges into contiguous mapped/unmapped extents
/// covering exactly `[offset, offset+len)`, merging neighbours of the same kind.
fn extents_from_allocated(offset: u64, len: u64, allocated: &[(u64, u64)]) -> Vec<Extent> {
    let end = offset.saturating_add(len);
    let mut out: Vec<Extent> = Vec::new();
    let mut push = |start: u64, stop: u64, mapped: bool| {
        if stop <= start {
            return;
        }
        match out.last_mut() {
            Some(last) if last.mapped == mapped && last.offset + last.len == start => {
                last.len += stop - start;
            }
            _ => out.push(Extent {
                offset: start,
                len: stop - start,
                mapped,
            }),
        }
    };
    let mut pos = offset;
    for &(o, l) in allocated {
        let s = o.max(pos);
        let e = o.saturating_add(l).min(end);
        if e <= s {
            continue;
        }
        push(pos, s, false);
        push(s, e, true);
        pos = e;
    }
    push(pos, end, false);
    out
}

/// Gateway groups (`crate::lock`): identity, lock owners, lock breaking, metadata.
impl RbdBackstore {
    /// The image's pool id and immutable image id: the same on every gateway, whatever
    /// the host or the configuration's names (the seed of the LUN identity).
    pub(crate) fn pool_and_image_id(&self) -> Result<(i64, String)> {
        let id = self
            .image
            .id()
            .map_err(|e| self.io_err("rbd_get_id", 0, e))?;
        Ok((self.image.pool_id(), id))
    }

    /// Clients holding the exclusive lock; `Err(errno)` as librbd answered (EBLOCKLISTED
    /// = ESHUTDOWN when this client was fenced).
    pub(crate) fn lock_owners(&self) -> std::result::Result<Vec<String>, Errno> {
        self.image.lock_owners()
    }

    /// Breaks (and blocklists) `owner`'s exclusive lock.
    pub(crate) fn break_lock(&self, owner: &str) -> std::result::Result<(), Errno> {
        self.image.lock_break(owner)
    }

    /// Raw exclusive-lock ownership query.
    pub(crate) fn lock_owner_raw(&self) -> std::result::Result<bool, Errno> {
        self.image.is_exclusive_lock_owner()
    }

    /// Raw `rbd_lock_acquire(EXCLUSIVE)`.
    pub(crate) fn lock_acquire_raw(&self) -> std::result::Result<(), Errno> {
        self.image.lock_acquire_exclusive()
    }

    /// Image metadata `key`.
    pub(crate) fn metadata_get(&self, key: &str) -> std::result::Result<Option<String>, Errno> {
        self.image.metadata_get(key)
    }

    /// Sets image metadata `key`.
    pub(crate) fn metadata_set(&self, key: &str, value: &str) -> std::result::Result<(), Errno> {
        self.image.metadata_set(key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(offset: u64, len: u64, mapped: bool) -> Extent {
        Extent {
            offset,
            len,
            mapped,
        }
    }

    #[test]
    fn miscompare_offsets() {
        const OBJ: u64 = 4 << 20;
        // pacific: object start + offset within the request.
        assert_eq!(miscompare_offset(8192, 512, OBJ, 300), Some(300));
        assert_eq!(
            miscompare_offset(OBJ + 8192, 1024, OBJ, OBJ + 513),
            Some(513)
        );
        // An image offset of the byte, when the pacific reading does not fit.
        assert_eq!(
            miscompare_offset(OBJ + 8192, 1024, OBJ, OBJ + 8192 + 513),
            Some(513)
        );
        // Neither.
        assert_eq!(miscompare_offset(8192, 512, OBJ, 9000), None);
        assert_eq!(miscompare_offset(OBJ, 512, OBJ, 10), None);
    }

    #[test]
    fn extents_cover_the_window() {
        assert_eq!(
            extents_from_allocated(0, 100, &[]),
            vec![ext(0, 100, false)]
        );
        assert_eq!(
            extents_from_allocated(10, 100, &[(0, 20), (20, 10), (50, 100)]),
            vec![ext(10, 20, true), ext(30, 20, false), ext(50, 60, true)]
        );
        assert_eq!(
            extents_from_allocated(0, 10, &[(2, 3), (4, 2)]),
            vec![ext(0, 2, false), ext(2, 4, true), ext(6, 4, false)]
        );
        assert_eq!(
            extents_from_allocated(0, 10, &[(20, 5)]),
            vec![ext(0, 10, false)]
        );
    }
}
