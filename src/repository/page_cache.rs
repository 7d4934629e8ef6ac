//! A bounded cache of materialized pages: (timeline, key, LSN of the newest version used) -> page. The LSN in
//! the key makes an entry immutable: the same versions always rebuild the same page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::id::TimelineId;
use crate::pg::Lsn;
use crate::repository::Key;

type CacheKey = (TimelineId, Key, Lsn);

/// Least-recently-used, evicting in batches: when full, the oldest eighth goes.
pub struct PageCache {
    capacity: usize,
    entries: Mutex<HashMap<CacheKey, (Bytes, u64)>>,
    tick: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PageCache {
    pub fn new(capacity: usize) -> PageCache {
        PageCache {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, timeline: TimelineId, key: Key, lsn: Lsn) -> Option<Bytes> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get_mut(&(timeline, key, lsn)) {
            Some((page, used)) => {
                *used = tick;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(page.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn insert(&self, timeline: TimelineId, key: Key, lsn: Lsn, page: Bytes) {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            let mut ticks: Vec<u64> = entries.values().map(|(_, t)| *t).collect();
            let n = (self.capacity / 8).max(1);
            let (_, cut, _) = ticks.select_nth_unstable(n - 1);
            let cut = *cut;
            entries.retain(|_, (_, t)| *t > cut);
        }
        entries.insert((timeline, key, lsn), (page, tick));
    }

    /// Drops every entry of a timeline (deleted or detached).
    pub fn forget_timeline(&self, timeline: TimelineId) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(t, _, _), _| *t != timeline);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_lru() {
        let cache = PageCache::new(16);
        let tl = TimelineId([1; 16]);
        for i in 0..16u64 {
            cache.insert(tl, Key::MIN, Lsn(i), Bytes::from(vec![i as u8]));
        }
        // Touch the first one so it survives the eviction.
        assert!(cache.get(tl, Key::MIN, Lsn(0)).is_some());
        cache.insert(tl, Key::MIN, Lsn(100), Bytes::new());
        assert!(cache.len() <= 16);
        assert!(cache.get(tl, Key::MIN, Lsn(0)).is_some());
        assert!(cache.get(tl, Key::MIN, Lsn(1)).is_none());
    }
}
