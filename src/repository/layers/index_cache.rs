//! The bounded caches of layer file contents, one of each per process and shared by every open layer file:
//! index pages, and the blocks (values) that point reads return.
//!
//! An open layer file keeps in memory only the first id and the crc32c of each index page of
//! [`INDEX_PAGE_ENTRIES`](super::file_format::INDEX_PAGE_ENTRIES) entries (about 0.12 bytes per entry); the pages
//! themselves are read on demand and kept here, up to `layer_index_cache_size` bytes (node config). So the
//! memory of layer indexes no longer grows with the data a pageserver holds (docs/storage-format.md, "Reading
//! the index"). Neon reads its layers' B-tree blocks through its page cache the same way
//! (`pageserver/src/page_cache.rs`), and the values too: here the payloads of blocks returned by point reads
//! (a page's versions, newest first; an image) are kept, crc-checked, up to `layer_block_cache_size` bytes, so
//! that a page read again (a page that needs redo, not in the page cache) costs no `pread`.
//!
//! Eviction is quick_cache's CLOCK-Pro, which resists scans; scans of whole layers (compaction, verification)
//! do not insert at all.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use quick_cache::Weighter;

/// Default `layer_index_cache_size`: 64 MiB, Neon's default page cache size (8,192 pages of 8 KiB).
pub const DEFAULT_CAPACITY: u64 = 64 << 20;
/// Default `layer_block_cache_size`.
pub const DEFAULT_BLOCK_CAPACITY: u64 = 64 << 20;
/// Memory an entry costs beyond its bytes (key, `Bytes` handle, allocation), counted in its weight.
const ENTRY_OVERHEAD: u64 = 64;

/// (open layer file, index page number or entry number).
type CacheKey = (u64, u32);

#[derive(Clone)]
struct ByteWeight;

impl Weighter<CacheKey, Bytes> for ByteWeight {
    fn weight(&self, _key: &CacheKey, bytes: &Bytes) -> u64 {
        bytes.len() as u64 + ENTRY_OVERHEAD
    }
}

/// A bounded map of (open layer file, number) to bytes, with hit and miss counts.
pub(crate) struct ByteCache {
    entries: quick_cache::sync::Cache<CacheKey, Bytes, ByteWeight>,
    /// Capacity 0: nothing is kept.
    off: std::sync::atomic::AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
}

static INDEX: OnceLock<ByteCache> = OnceLock::new();
static BLOCKS: OnceLock<ByteCache> = OnceLock::new();
static NEXT_FILE: AtomicU64 = AtomicU64::new(1);

/// The process's cache of index pages, made with [`DEFAULT_CAPACITY`] on first use.
pub(crate) fn get() -> &'static ByteCache {
    INDEX.get_or_init(|| ByteCache::new(DEFAULT_CAPACITY))
}

/// The process's cache of block payloads, made with [`DEFAULT_BLOCK_CAPACITY`] on first use.
pub(crate) fn blocks() -> &'static ByteCache {
    BLOCKS.get_or_init(|| ByteCache::new(DEFAULT_BLOCK_CAPACITY))
}

/// Sets the index cache's capacity in bytes (node config `layer_index_cache_size`); pages beyond it are
/// evicted.
pub fn set_capacity(bytes: u64) {
    get().set_capacity(bytes);
}

/// Sets the block cache's capacity in bytes (node config `layer_block_cache_size`; 0 keeps nothing).
pub fn set_block_capacity(bytes: u64) {
    blocks().set_capacity(bytes);
}

/// What the metrics report for the index cache: (hits, misses, bytes held, capacity).
pub fn stats() -> (u64, u64, u64, u64) {
    get().stats()
}

/// What the metrics report for the block cache: (hits, misses, bytes held, capacity).
pub fn block_stats() -> (u64, u64, u64, u64) {
    blocks().stats()
}

/// A key space of its own for a newly opened layer file (never reused, so an entry of a closed file can
/// never be taken for one of another).
pub(crate) fn new_file() -> u64 {
    NEXT_FILE.fetch_add(1, Ordering::Relaxed)
}

impl ByteCache {
    fn new(capacity: u64) -> ByteCache {
        let estimated_items = usize::try_from(capacity / 8192).unwrap_or(1 << 16).max(16);
        ByteCache {
            entries: quick_cache::sync::Cache::with_weighter(
                estimated_items,
                capacity.max(1),
                ByteWeight,
            ),
            off: std::sync::atomic::AtomicBool::new(capacity == 0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn set_capacity(&self, bytes: u64) {
        self.off.store(bytes == 0, Ordering::Relaxed);
        self.entries.set_capacity(bytes.max(1));
        if bytes == 0 {
            self.entries.clear();
        }
    }

    fn stats(&self) -> (u64, u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.entries.weight(),
            if self.off.load(Ordering::Relaxed) {
                0
            } else {
                self.entries.capacity()
            },
        )
    }

    pub fn page(&self, file: u64, n: u32) -> Option<Bytes> {
        let found = self.entries.get(&(file, n));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, file: u64, n: u32, bytes: Bytes) {
        if !self.off.load(Ordering::Relaxed) {
            self.entries.insert((file, n), bytes);
        }
    }

    /// Drops entries `0..count` of a file being closed.
    pub fn forget_file(&self, file: u64, count: u32) {
        for n in 0..count {
            self.entries.remove(&(file, n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_weight() {
        let cache = ByteCache::new(64 << 10);
        let file = new_file();
        for page in 0..100u32 {
            cache.insert(file, page, Bytes::from(vec![page as u8; 8192]));
        }
        assert!(
            cache.entries.weight() <= 64 << 10,
            "{}",
            cache.entries.weight()
        );
        assert!(cache.entries.len() >= 4, "{}", cache.entries.len());
        // What is found is what was inserted under that key.
        for page in 0..100u32 {
            if let Some(b) = cache.page(file, page) {
                assert!(b.iter().all(|&x| x == page as u8));
            }
        }
        cache.forget_file(file, 100);
        assert!(cache.entries.is_empty());
        assert_ne!(new_file(), file);
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = ByteCache::new(64 << 10);
        let file = new_file();
        cache.insert(file, 0, Bytes::from_static(b"kept"));
        assert_eq!(cache.page(file, 0).as_deref(), Some(&b"kept"[..]));
        cache.set_capacity(0);
        assert!(cache.page(file, 0).is_none());
        cache.insert(file, 1, Bytes::from_static(b"not kept"));
        assert!(cache.page(file, 1).is_none());
        assert_eq!(cache.stats().3, 0);
        cache.set_capacity(64 << 10);
        cache.insert(file, 1, Bytes::from_static(b"kept again"));
        assert!(cache.page(file, 1).is_some());
    }
}
