//! The L2 table cache.
//!
//! Tables are shared (`Arc`) so that lookups never hold a lock while doing I/O, and their
//! entries are atomics so that readers never wait for the metadata lock. Entries change
//! only under the engine's metadata lock; a changed table stays *dirty* (and pinned by the
//! engine's dirty list) until a flush writes it, so eviction only ever drops clean tables
//! that nobody is using.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// One L2 table in memory.
#[derive(Debug)]
pub struct L2Table {
    /// Host offset of the table.
    pub offset: u64,
    entries: Box<[AtomicU64]>,
    last_used: AtomicU64,
}

impl L2Table {
    /// A table read from `bytes` (big-endian entries).
    pub fn from_bytes(offset: u64, bytes: &[u8]) -> Self {
        L2Table {
            offset,
            entries: bytes
                .chunks_exact(8)
                .map(|c| AtomicU64::new(u64::from_be_bytes(c.try_into().unwrap_or([0; 8]))))
                .collect(),
            last_used: AtomicU64::new(0),
        }
    }

    /// An all-zero (unallocated) table of `n` 64-bit words.
    pub fn zeroed(offset: u64, n: usize) -> Self {
        L2Table {
            offset,
            entries: (0..n).map(|_| AtomicU64::new(0)).collect(),
            last_used: AtomicU64::new(0),
        }
    }

    /// Raw 64-bit word `i` (0 past the end).
    pub fn get(&self, i: usize) -> u64 {
        self.entries.get(i).map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// Sets raw word `i`. Callers hold the metadata lock.
    pub fn set(&self, i: usize, v: u64) {
        if let Some(e) = self.entries.get(i) {
            e.store(v, Ordering::Release);
        }
    }

    /// The table as it goes to disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.entries
            .iter()
            .flat_map(|e| e.load(Ordering::Acquire).to_be_bytes())
            .collect()
    }
}

/// L2 tables by L1 index.
#[derive(Debug)]
pub struct L2Cache {
    map: RwLock<HashMap<usize, Arc<L2Table>>>,
    capacity: usize,
    clock: AtomicU64,
}

impl L2Cache {
    /// A cache holding about `capacity` tables.
    pub fn new(capacity: usize) -> Self {
        L2Cache {
            map: RwLock::new(HashMap::new()),
            capacity: capacity.max(4),
            clock: AtomicU64::new(0),
        }
    }

    fn touch(&self, t: &L2Table) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        t.last_used.store(now, Ordering::Relaxed);
    }

    /// The cached table for L1 index `idx`.
    pub fn get(&self, idx: usize) -> Option<Arc<L2Table>> {
        let t = self.map.read().get(&idx).cloned()?;
        self.touch(&t);
        Some(t)
    }

    /// Inserts a table loaded from disk, unless another thread got there first (then that
    /// one, which may already have been changed, wins). Returns the cached table.
    pub fn insert_loaded(&self, idx: usize, t: L2Table) -> Arc<L2Table> {
        let mut map = self.map.write();
        let t = map.entry(idx).or_insert_with(|| Arc::new(t)).clone();
        self.touch(&t);
        if map.len() > self.capacity {
            Self::evict(&mut map, self.capacity * 3 / 4);
        }
        t
    }

    /// Inserts a freshly allocated table (the L1 entry was empty, so none is cached).
    pub fn insert_new(&self, idx: usize, t: Arc<L2Table>) {
        self.touch(&t);
        self.map.write().insert(idx, t);
    }

    /// Drops least recently used tables that nobody holds until `target` remain. Tables
    /// held elsewhere (in use, or dirty and pinned) are kept.
    fn evict(map: &mut HashMap<usize, Arc<L2Table>>, target: usize) {
        let mut idle: Vec<(u64, usize)> = map
            .iter()
            .filter(|(_, t)| Arc::strong_count(t) == 1)
            .map(|(&i, t)| (t.last_used.load(Ordering::Relaxed), i))
            .collect();
        idle.sort_unstable();
        let excess = map.len().saturating_sub(target);
        for (_, i) in idle.into_iter().take(excess) {
            map.remove(&i);
        }
    }

    /// How many tables the cache aims to hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of cached tables.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_roundtrip() {
        let mut bytes = vec![0u8; 32];
        bytes[8..16].copy_from_slice(&0x8000_0000_0005_0000u64.to_be_bytes());
        let t = L2Table::from_bytes(0x40000, &bytes);
        assert_eq!(t.get(1), 0x8000_0000_0005_0000);
        assert_eq!(t.get(99), 0);
        t.set(3, 7);
        let out = t.to_bytes();
        assert_eq!(&out[..16], &bytes[..16]);
        assert_eq!(&out[24..], &[0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn evicts_idle_tables_but_keeps_held_ones() {
        let c = L2Cache::new(4);
        let pinned = c.insert_loaded(0, L2Table::zeroed(512, 4));
        for i in 1..10 {
            c.insert_loaded(i, L2Table::zeroed(512 * (i as u64 + 1), 4));
        }
        assert!(c.len() <= 5, "{}", c.len());
        assert!(c.get(0).is_some(), "a held table must stay cached");
        assert!(c.get(9).is_some(), "the newest table stays cached");
        // First insert wins.
        let again = c.insert_loaded(0, L2Table::zeroed(999, 4));
        assert_eq!(again.offset, 512);
        drop(pinned);
    }
}
