//! Where reservation state lives: the [`ReservationStore`] seam and the in-memory store
//! (with the APTPL file) every logical unit uses today.
//!
//! The PR logic never mutates shared state in place: it loads a [`Versioned`] snapshot,
//! computes the new state and commits it with [`ReservationStore::compare_and_set`],
//! starting over when another writer (another gateway, through a shared store) got in
//! first. A store backed by a cluster (e.g. a Ceph object, `rustio_rbd`'s
//! `CephReservationStore`) implements the same trait.
//!
//! Several writers, one design: every unit over a shared store registers a
//! [`ReservationStore::watch`] callback. A commit made elsewhere calls it; the callback
//! only marks the unit's cached view stale, and the unit re-reads the state before its
//! next command (reservation fast-path flag, unit attentions). Unit attentions a change
//! establishes for nexuses of *other* units (RESERVATIONS PREEMPTED, RESERVATIONS
//! RELEASED, REGISTRATIONS PREEMPTED, SPC-4 5.13.11) travel in the committed state itself
//! ([`ReservationState`]'s event log, each event stamped with the version that raised
//! it), so a unit that re-reads raises those of the versions it has not seen, for the
//! nexuses it knows that match the event's registration (initiator port and, unless
//! ALL_TG_PT, target port). A notification therefore carries nothing but the new version
//! and may be lost or merged without losing an attention, as long as the unit re-reads
//! within [`EVENT_WINDOW`] versions.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::Error;

use super::state::{format_aptpl, parse_aptpl, ReservationState};

pub use super::state::EVENT_WINDOW;

/// Called after a commit by another writer with the new store version, or `None` when
/// the store lost track of changes (e.g. its cluster watch broke) and everything must be
/// re-read. Runs on whatever thread notices the change (a librados callback thread for
/// a Ceph store, the committing thread for [`MemoryStore`]): it must only flip flags.
pub type ChangeCallback = Box<dyn Fn(Option<u64>) + Send + Sync>;

/// A reservation state and the store version it was read at.
///
/// `version` increases by exactly one per committed change (any change: SPC-2 RESERVE,
/// persistent RESERVE, REGISTER…). It is the compare-and-set token of the store, not the
/// PRgeneration of SPC-4 6.15.2, which lives inside the state and follows its own rules.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The state.
    pub state: Arc<ReservationState>,
    /// The store version of `state`.
    pub version: u64,
}

/// Why a [`ReservationStore::compare_and_set`] did not commit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state changed since it was loaded; here is the current one.
    #[error("reservation state changed concurrently (now at version {})", .0.version)]
    Conflict(Versioned),
    /// The new state could not be made persistent; nothing changed.
    #[error("persisting the reservation state")]
    Persist(#[source] std::io::Error),
    /// The store cannot be read or written right now (cluster unreachable, object
    /// corrupt or missing). Commands that need the state end with a retryable sense
    /// (NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING READY) and nothing changed.
    #[error("reservation store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Storage of one logical unit's reservation state.
///
/// A unit consults the store on the I/O path only while the state it last saw holds a
/// reservation (a local fast-path flag). A store whose state also changes elsewhere must
/// therefore call the [`Self::watch`] callbacks on every foreign commit; the unit then
/// re-reads before its next command. `load` is on the I/O path while a reservation
/// exists: a remote store serves it from a cache that its own notifications invalidate.
pub trait ReservationStore: Send + Sync + std::fmt::Debug {
    /// The current state and its version; [`StoreError::Unavailable`] when it cannot be
    /// read (the caller retries later, it never assumes an empty state).
    fn load(&self) -> Result<Versioned, StoreError>;

    /// Replaces the state with `new` if the store is still at `version`; returns the
    /// new version (`version + 1`). A store that persists (APTPL) writes the persistent
    /// part before it publishes, so a failed write changes nothing.
    fn compare_and_set(&self, version: u64, new: ReservationState) -> Result<u64, StoreError>;

    /// Whether APTPL state survives a restart (PTPL_C of REPORT CAPABILITIES, SPC-4
    /// 6.15.4); without it APTPL = 1 is refused.
    fn persists(&self) -> bool;

    /// Registers `on_change`, called whenever a writer commits a change (this store's
    /// own commits may call it too; the unit ignores versions it has seen). Stores whose
    /// state nobody else changes keep the default, which drops the callback.
    fn watch(&self, on_change: ChangeCallback) {
        drop(on_change);
    }
}

/// The in-memory store, optionally backed by an APTPL file (`LuConfig::aptpl_file`).
///
/// Units sharing one `MemoryStore` (one process, several logical units over the same
/// state) are notified of each other's commits through [`ReservationStore::watch`].
pub struct MemoryStore {
    current: RwLock<Versioned>,
    aptpl_file: Option<PathBuf>,
    watchers: RwLock<Vec<ChangeCallback>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("current", &self.current)
            .field("aptpl_file", &self.aptpl_file)
            .field("watchers", &self.watchers.read().len())
            .finish()
    }
}

impl MemoryStore {
    /// A store that starts empty and never persists.
    pub fn new() -> MemoryStore {
        MemoryStore {
            current: RwLock::new(Versioned {
                state: Arc::new(ReservationState::default()),
                version: 0,
            }),
            aptpl_file: None,
            watchers: RwLock::new(Vec::new()),
        }
    }

    /// A store that keeps APTPL state in `path`, loading what is there (missing file:
    /// nothing registered).
    pub fn open(path: Option<&Path>) -> Result<MemoryStore, Error> {
        let mut state = ReservationState::default();
        if let Some(p) = path {
            match std::fs::read_to_string(p) {
                Ok(text) => state = parse_aptpl(p, &text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Aptpl {
                        path: p.to_path_buf(),
                        source,
                    })
                }
            }
        }
        Ok(MemoryStore {
            current: RwLock::new(Versioned {
                state: Arc::new(state),
                version: 0,
            }),
            aptpl_file: path.map(Path::to_path_buf),
            watchers: RwLock::new(Vec::new()),
        })
    }

    fn persist(&self, new: &ReservationState) -> std::io::Result<()> {
        let Some(path) = &self.aptpl_file else {
            return Ok(());
        };
        if new.aptpl() {
            write_atomic(path, &format_aptpl(new))
        } else {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl ReservationStore for MemoryStore {
    fn load(&self) -> Result<Versioned, StoreError> {
        Ok(self.current.read().clone())
    }

    fn compare_and_set(&self, version: u64, new: ReservationState) -> Result<u64, StoreError> {
        let next = {
            let mut cur = self.current.write();
            if cur.version != version {
                return Err(StoreError::Conflict(cur.clone()));
            }
            // Only changes of the persistent part touch the file (SPC-2 reservations
            // and the event log are not persistent).
            if !cur.state.same_persistent_part(&new) {
                self.persist(&new).map_err(StoreError::Persist)?;
            }
            let next = version.wrapping_add(1);
            *cur = Versioned {
                state: Arc::new(new),
                version: next,
            };
            next
        };
        // Outside the state lock: a callback only flips flags, but must not be able to
        // deadlock against a load.
        for w in self.watchers.read().iter() {
            w(Some(next));
        }
        Ok(next)
    }

    fn persists(&self) -> bool {
        self.aptpl_file.is_some()
    }

    fn watch(&self, on_change: ChangeCallback) {
        self.watchers.write().push(on_change);
    }
}

/// Writes `data` to `path` atomically: temporary file in the same directory, fsync,
/// rename, fsync of the directory.
fn write_atomic(path: &Path, data: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_increases_by_one_per_change() {
        let s = MemoryStore::new();
        let v0 = s.load().unwrap();
        assert_eq!(v0.version, 0);
        let mut st = (*v0.state).clone();
        st.aptpl = false;
        st.generation = 5; // PRgeneration moves independently of the version
        assert_eq!(s.compare_and_set(0, st.clone()).unwrap(), 1);
        assert_eq!(s.compare_and_set(1, st).unwrap(), 2);
        let v = s.load().unwrap();
        assert_eq!(v.version, 2);
        assert_eq!(v.state.generation, 5);
    }

    #[test]
    fn stale_version_conflicts_with_current_state() {
        let s = MemoryStore::new();
        let mut st = ReservationState {
            generation: 1,
            ..ReservationState::default()
        };
        s.compare_and_set(0, st.clone()).unwrap();
        st.generation = 2;
        match s.compare_and_set(0, st) {
            Err(StoreError::Conflict(cur)) => {
                assert_eq!(cur.version, 1);
                assert_eq!(cur.state.generation, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.load().unwrap().state.generation, 1);
    }

    #[test]
    fn failed_persist_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("pr.state");
        std::fs::create_dir(&path).unwrap();
        let s = MemoryStore {
            current: RwLock::new(Versioned {
                state: Arc::new(ReservationState::default()),
                version: 0,
            }),
            aptpl_file: Some(path),
            watchers: RwLock::new(Vec::new()),
        };
        assert!(s.persists());
        let st = ReservationState {
            aptpl: true,
            generation: 1,
            ..ReservationState::default()
        };
        assert!(matches!(
            s.compare_and_set(0, st),
            Err(StoreError::Persist(_))
        ));
        assert_eq!(s.load().unwrap().version, 0);
    }

    /// Every watcher hears of every commit, with the new version.
    #[test]
    fn watchers_hear_each_commit() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let s = MemoryStore::new();
        let heard = Arc::new(AtomicU64::new(0));
        for _ in 0..2 {
            let h = heard.clone();
            s.watch(Box::new(move |v| {
                h.fetch_add(v.unwrap_or(1000), Ordering::SeqCst);
            }));
        }
        s.compare_and_set(0, ReservationState::default()).unwrap();
        s.compare_and_set(1, ReservationState::default()).unwrap();
        // Two watchers, versions 1 and 2: 2 * (1 + 2).
        assert_eq!(heard.load(Ordering::SeqCst), 6);
        // A refused compare-and-set notifies nobody.
        assert!(s.compare_and_set(0, ReservationState::default()).is_err());
        assert_eq!(heard.load(Ordering::SeqCst), 6);
    }
}
