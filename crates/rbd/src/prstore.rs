//! Persistent reservations kept in the cluster, shared by every gateway that exports the
//! image: [`CephReservationStore`], a [`rustio_scsi::ReservationStore`] on one RADOS
//! object.
//!
//! * **Object**: `rustio.pr.<image name>` in the image's pool (see [`object_name`]).
//!   Its data is the full reservation state in the shared text format of
//!   [`ReservationState::encode_shared`] (registrations whatever APTPL says, the
//!   persistent and the SPC-2 reservation, PRgeneration, APTPL, the unit-attention event
//!   log, and the store version); its extended attribute `rustio.pr.version` holds the
//!   same store version in decimal.
//! * **Compare-and-set**: one atomic write operation of three steps:
//!   `rados_write_op_cmpxattr` (the attribute equals the expected version),
//!   `rados_write_op_write_full` (the new state), `rados_write_op_setxattr` (the next
//!   version). A concurrent commit makes the compare fail (ECANCELED) and the caller
//!   gets the current state to retry on. The object is created (exclusive create, version 0)
//!   when the store opens.
//! * **Notification**: after each commit the writer calls `rados_notify2` with the new
//!   version as payload and waits (at most [`NOTIFY_TIMEOUT`]) until every watcher
//!   acknowledged. Every store watches the object (`rados_watch3`); its callback drops
//!   the cached state when the version is newer and tells the logical units
//!   ([`ReservationStore::watch`]), and only then acknowledges. So when a PERSISTENT
//!   RESERVE OUT through one gateway ends GOOD, every live gateway has already marked
//!   its view stale and re-reads before its next command. A watch that breaks
//!   (`rados_watch_check` or the error callback) is re-established, and the state
//!   re-read, before the cache is trusted again.
//! * **Cache**: `load` is on the I/O path while a reservation exists, so the state is
//!   cached between notifications; a re-read happens only after a change.
//!
//! Errors reading or writing the object (cluster unreachable, object deleted or corrupt)
//! are [`StoreError::Unavailable`] with a [`PrStoreError`] source; the SCSI engine turns
//! them into a retryable NOT READY and never assumes an empty state.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rustio_scsi::{
    ChangeCallback, DecodeError, ReservationState, ReservationStore, StoreError, Versioned,
};

use crate::engine::{connect_pool, Connection};
use crate::ffi::{Errno, IoCtx, Watch, WatchEvent, WriteGuard};
use crate::{OpenOptions, RbdError};

/// How long a writer waits for the other gateways to acknowledge a change.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// After this long without hearing from the OSD, a watcher is dropped by the OSD
/// (`rados_watch3` timeout) and a store that notices it (`rados_watch_check`) stops
/// trusting its cache.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound of the object's size (1024 registrations and 4096 logged events with
/// long names stay far below it).
pub const MAX_OBJECT_SIZE: usize = 16 << 20;

/// The extended attribute holding the store version (the compare-and-set token).
pub const VERSION_XATTR: &str = "rustio.pr.version";

/// How often `load` asks librados whether the watch is still confirmed.
const WATCH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The object that holds the reservation state of `image` (in the image's pool).
pub fn object_name(image: &str) -> String {
    format!("rustio.pr.{image}")
}

/// Why the reservation object could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PrStoreError {
    /// A librados call failed.
    #[error("{op} on reservation object {object}")]
    Ceph {
        /// The librados call.
        op: &'static str,
        /// The object.
        object: String,
        /// What librados said.
        #[source]
        source: std::io::Error,
    },
    /// The object does not exist (deleted while gateways use it).
    #[error("reservation object {object} is missing")]
    Missing {
        /// The object.
        object: String,
    },
    /// The object's data is not a reservation state.
    #[error("reservation object {object} is corrupt")]
    Corrupt {
        /// The object.
        object: String,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
    /// The object is larger than [`MAX_OBJECT_SIZE`].
    #[error("reservation object {object} is larger than {MAX_OBJECT_SIZE} bytes")]
    TooLarge {
        /// The object.
        object: String,
    },
    /// The object's version is the largest there is: no write can follow it.
    #[error("reservation object {object}: version {version} cannot be incremented")]
    VersionExhausted {
        /// The object.
        object: String,
        /// Its version.
        version: u64,
    },
    /// The data says one version, the version attribute another (written by something
    /// else than this store).
    #[error("reservation object {object}: version attribute does not match its data (version {version})")]
    VersionMismatch {
        /// The object.
        object: String,
        /// The version in the data.
        version: u64,
    },
}

/// What the watch callback shares with the store.
struct Shared {
    /// The last state read or written; `None` after a change elsewhere.
    cache: Mutex<Option<Versioned>>,
    /// Bumped by every invalidation, so a read that raced with one is not cached.
    invalidations: AtomicU64,
    /// The watch reported an error: re-watch before trusting anything.
    broken: AtomicBool,
    /// The logical units' callbacks.
    subscribers: RwLock<Vec<ChangeCallback>>,
}

impl Shared {
    fn cache(&self) -> std::sync::MutexGuard<'_, Option<Versioned>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn invalidate(&self) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        *self.cache() = None;
    }

    fn tell(&self, version: Option<u64>) {
        for s in self
            .subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            s(version);
        }
    }

    /// The watch callback (librados thread): flags and a short lock only.
    fn on_event(&self, ev: WatchEvent<'_>) {
        match ev {
            WatchEvent::Notify(payload) => {
                let version = std::str::from_utf8(payload)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                match version {
                    Some(v) => {
                        let stale = self.cache().as_ref().is_none_or(|c| c.version < v);
                        if stale {
                            self.invalidate();
                        }
                    }
                    // Someone else's notification: re-read to be safe.
                    None => self.invalidate(),
                }
                self.tell(version);
            }
            WatchEvent::Error(errno) => {
                tracing::warn!(
                    errno,
                    "reservation object watch broke; re-watching on next use"
                );
                self.broken.store(true, Ordering::Release);
                self.invalidate();
                self.tell(None);
            }
        }
    }
}

/// Reservation state of one RBD image, in a RADOS object shared by all gateways (see
/// the module documentation for object, format, compare-and-set and notification).
///
/// Open one per logical unit ([`rustio_scsi::LogicalUnit::with_reservation_store`]);
/// each has its own cluster connection, as separate gateways would.
pub struct CephReservationStore {
    /// Dropped before `io` (field order), which unwatches.
    watch: Mutex<Option<Watch>>,
    shared: Arc<Shared>,
    io: Arc<IoCtx>,
    object: String,
    /// Milliseconds since `epoch` of the last `rados_watch_check`.
    last_check_ms: AtomicU64,
    epoch: Instant,
}

impl fmt::Debug for CephReservationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CephReservationStore")
            .field("object", &self.object)
            .field("broken", &self.shared.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CephReservationStore {
    /// Connects like [`crate::RbdBackstore::open`] (same configuration, user and
    /// timeouts) and opens the reservation object of `opts`' image
    /// ([`object_name`]), creating it empty if it does not exist, and watches it.
    pub fn open(opts: &OpenOptions) -> Result<CephReservationStore, RbdError> {
        Self::open_object(opts, &object_name(&opts.config.image))
    }

    /// [`Self::open`] with an explicit object name in `opts`' pool.
    pub fn open_object(opts: &OpenOptions, object: &str) -> Result<CephReservationStore, RbdError> {
        let spec = opts.config.spec();
        let ceph = |op: &'static str| crate::engine::ceph_error(op, &spec);
        let Connection { ioctx, .. } = connect_pool(opts)?;
        let io = Arc::new(ioctx);
        let empty = ReservationState::default().encode_shared(0);
        match io.write_full_if(
            object,
            WriteGuard::Create,
            VERSION_XATTR,
            b"0",
            empty.as_bytes(),
        ) {
            Ok(()) => tracing::info!(object, "reservation object created"),
            Err(libc::EEXIST) => {}
            Err(e) => return Err(ceph("rados_write_op_operate (create)")(e)),
        }
        let shared = Arc::new(Shared {
            cache: Mutex::new(None),
            invalidations: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            subscribers: RwLock::new(Vec::new()),
        });
        let watch = watch(&io, object, &shared).map_err(ceph("rados_watch3"))?;
        Ok(CephReservationStore {
            watch: Mutex::new(Some(watch)),
            shared,
            io,
            object: object.to_owned(),
            last_check_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The RADOS object holding the state.
    pub fn object(&self) -> &str {
        &self.object
    }

    fn err(&self, op: &'static str, errno: Errno) -> PrStoreError {
        if errno == libc::ENOENT {
            return PrStoreError::Missing {
                object: self.object.clone(),
            };
        }
        PrStoreError::Ceph {
            op,
            object: self.object.clone(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    /// Re-establishes a broken watch, or one the OSD has not confirmed for longer than
    /// [`WATCH_TIMEOUT`] (checked at most every [`WATCH_CHECK_INTERVAL`]).
    fn ensure_watch(&self) -> Result<(), PrStoreError> {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_check_ms.load(Ordering::Acquire);
        let due = u128::from(now_ms.saturating_sub(last)) >= WATCH_CHECK_INTERVAL.as_millis();
        let mut broken = self.shared.broken.load(Ordering::Acquire);
        if !broken && !due {
            return Ok(());
        }
        let mut w = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        if !broken {
            self.last_check_ms.store(now_ms, Ordering::Release);
            let unconfirmed = match w.as_ref().map(Watch::check) {
                Some(Ok(ms)) => u128::from(ms) > WATCH_TIMEOUT.as_millis(),
                _ => true,
            };
            if !unconfirmed {
                return Ok(());
            }
            tracing::warn!(object = %self.object, "reservation object watch unconfirmed; re-watching");
            broken = true;
        }
        if broken {
            // Old watch first (unwatch + flush callbacks), then a new one; the state is
            // re-read after it, so nothing committed in between is missed.
            drop(w.take());
            self.shared.invalidate();
            let nw = watch(&self.io, &self.object, &self.shared)
                .map_err(|e| self.err("rados_watch3", e))?;
            *w = Some(nw);
            self.shared.broken.store(false, Ordering::Release);
            // Units may have missed changes while the watch was down.
            self.shared.tell(None);
        }
        Ok(())
    }

    /// Reads and decodes the object, bypassing the cache.
    fn read(&self) -> Result<Versioned, PrStoreError> {
        let data = self
            .io
            .read_whole(&self.object, MAX_OBJECT_SIZE)
            .map_err(|e| match e {
                libc::EFBIG => PrStoreError::TooLarge {
                    object: self.object.clone(),
                },
                e => self.err("rados_read", e),
            })?;
        let text = String::from_utf8_lossy(&data);
        ReservationState::decode_shared(&text).map_err(|source| PrStoreError::Corrupt {
            object: self.object.clone(),
            source,
        })
    }

    fn unavailable(&self, e: PrStoreError) -> StoreError {
        tracing::warn!(object = %self.object, error = %e, "reservation store unavailable");
        StoreError::Unavailable(Box::new(e))
    }
}

/// Watches `object`, feeding events to `shared`.
fn watch(io: &Arc<IoCtx>, object: &str, shared: &Arc<Shared>) -> Result<Watch, Errno> {
    let s = Arc::clone(shared);
    let timeout = u32::try_from(WATCH_TIMEOUT.as_secs()).unwrap_or(u32::MAX);
    io.watch(object, timeout, Box::new(move |ev| s.on_event(ev)))
}

impl ReservationStore for CephReservationStore {
    fn load(&self) -> Result<Versioned, StoreError> {
        self.ensure_watch().map_err(|e| self.unavailable(e))?;
        if let Some(v) = self.shared.cache().clone() {
            return Ok(v);
        }
        let before = self.shared.invalidations.load(Ordering::Acquire);
        let v = self.read().map_err(|e| self.unavailable(e))?;
        let mut c = self.shared.cache();
        // Only if no change notification arrived meanwhile (it may be newer than what
        // was read) and nothing newer is cached already.
        if self.shared.invalidations.load(Ordering::Acquire) == before
            && c.as_ref().is_none_or(|c| c.version < v.version)
        {
            *c = Some(v.clone());
        }
        Ok(v)
    }

    fn compare_and_set(&self, version: u64, new: ReservationState) -> Result<u64, StoreError> {
        let Some(next) = version.checked_add(1) else {
            return Err(self.unavailable(PrStoreError::VersionExhausted {
                object: self.object.clone(),
                version,
            }));
        };
        let text = new.encode_shared(next);
        if text.len() > MAX_OBJECT_SIZE {
            return Err(self.unavailable(PrStoreError::TooLarge {
                object: self.object.clone(),
            }));
        }
        let expect = version.to_string();
        let value = next.to_string();
        match self.io.write_full_if(
            &self.object,
            WriteGuard::XattrEquals(expect.as_bytes()),
            VERSION_XATTR,
            value.as_bytes(),
            text.as_bytes(),
        ) {
            Ok(()) => {}
            Err(libc::ECANCELED) => {
                // Someone else committed: hand back the current state.
                let now = self.read().map_err(|e| self.unavailable(e))?;
                if now.version == version {
                    return Err(self.unavailable(PrStoreError::VersionMismatch {
                        object: self.object.clone(),
                        version,
                    }));
                }
                *self.shared.cache() = Some(now.clone());
                return Err(StoreError::Conflict(now));
            }
            Err(e) => return Err(self.unavailable(self.err("rados_write_op_operate", e))),
        }
        {
            let mut c = self.shared.cache();
            if c.as_ref().is_none_or(|c| c.version < next) {
                *c = Some(Versioned {
                    state: Arc::new(new),
                    version: next,
                });
            }
        }
        // The commit stands whatever the notification does; a gateway that did not
        // acknowledge in time has a broken watch and re-reads before trusting its cache.
        let t = Instant::now();
        if let Err(e) = self
            .io
            .notify(&self.object, value.as_bytes(), NOTIFY_TIMEOUT)
        {
            tracing::warn!(object = %self.object, errno = e, elapsed = ?t.elapsed(),
                "reservation change notification not acknowledged by every gateway");
        }
        Ok(next)
    }

    /// Everything survives a restart: the state is in the cluster (PTPL_C = 1).
    fn persists(&self) -> bool {
        true
    }

    fn watch(&self, on_change: ChangeCallback) {
        self.shared
            .subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(on_change);
    }
}
