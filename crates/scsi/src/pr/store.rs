//! Where reservation state lives: the [`ReservationStore`] seam and the in-memory store
//! (with the APTPL file) every logical unit uses today.
//!
//! The PR logic never mutates shared state in place: it loads a [`Versioned`] snapshot,
//! computes the new state and commits it with [`ReservationStore::compare_and_set`],
//! starting over when another writer (another gateway, through a shared store) got in
//! first. A store backed by a cluster (e.g. a Ceph object) implements the same trait.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::Error;

use super::state::{format_aptpl, parse_aptpl, ReservationState};

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
}

/// Storage of one logical unit's reservation state.
///
/// Limit for shared stores: a unit consults the store on the I/O path only while its own
/// last commit left a reservation in place (a local fast-path flag); a store whose state
/// also changes elsewhere needs a change notification to reset that flag, which is left
/// to the gateway-group work (issue #22).
pub trait ReservationStore: Send + Sync + std::fmt::Debug {
    /// The current state and its version.
    fn load(&self) -> Versioned;

    /// Replaces the state with `new` if the store is still at `version`; returns the
    /// new version (`version + 1`). A store that persists (APTPL) writes the persistent
    /// part before it publishes, so a failed write changes nothing.
    fn compare_and_set(&self, version: u64, new: ReservationState) -> Result<u64, StoreError>;

    /// Whether APTPL state survives a restart (PTPL_C of REPORT CAPABILITIES, SPC-4
    /// 6.15.4); without it APTPL = 1 is refused.
    fn persists(&self) -> bool;
}

/// The in-memory store, optionally backed by an APTPL file (`LuConfig::aptpl_file`).
#[derive(Debug)]
pub struct MemoryStore {
    current: RwLock<Versioned>,
    aptpl_file: Option<PathBuf>,
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
    fn load(&self) -> Versioned {
        self.current.read().clone()
    }

    fn compare_and_set(&self, version: u64, new: ReservationState) -> Result<u64, StoreError> {
        let mut cur = self.current.write();
        if cur.version != version {
            return Err(StoreError::Conflict(cur.clone()));
        }
        // Only changes of the persistent part touch the file (SPC-2 reservations are
        // not persistent).
        if !cur.state.same_persistent_part(&new) {
            self.persist(&new).map_err(StoreError::Persist)?;
        }
        let next = version.wrapping_add(1);
        *cur = Versioned {
            state: Arc::new(new),
            version: next,
        };
        Ok(next)
    }

    fn persists(&self) -> bool {
        self.aptpl_file.is_some()
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
        let v0 = s.load();
        assert_eq!(v0.version, 0);
        let mut st = (*v0.state).clone();
        st.aptpl = false;
        st.generation = 5; // PRgeneration moves independently of the version
        assert_eq!(s.compare_and_set(0, st.clone()).unwrap(), 1);
        assert_eq!(s.compare_and_set(1, st).unwrap(), 2);
        let v = s.load();
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
        assert_eq!(s.load().state.generation, 1);
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
        assert_eq!(s.load().version, 0);
    }
}
