//! The bounded cache of layer index pages, one per process and shared by every open layer file.
//!
//! An open layer file keeps in memory only the first id and the crc32c of each index page of
//! [`INDEX_PAGE_ENTRIES`](super::file_format::INDEX_PAGE_ENTRIES) entries (about 0.12 bytes per entry); the pages
//! themselves are read on demand and kept here, up to `layer_index_cache_size` bytes (node config). So the
//! memory of layer indexes no longer grows with the data a pageserver holds (docs/storage-format.md, "Reading
//! the index"). Neon reads its layers' B-tree blocks through its page cache the same way
//! (`pageserver/src/page_cache.rs`).
//!
//! Eviction is quick_cache's CLOCK-Pro, which resists scans; scans of whole layers (compaction, verification)
//! do not insert their pages at all.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use quick_cache::Weighter;

/// Default `layer_index_cache_size`: 64 MiB, Neon's default page cache size (8,192 pages of 8 KiB).
pub const DEFAULT_CAPACITY: u64 = 64 << 20;
/// Memory an entry costs beyond its bytes (key, `Bytes` handle, allocation), counted in its weight.
const ENTRY_OVERHEAD: u64 = 64;

/// (open layer file, index page number).
type PageKey = (u64, u32);

#[derive(Clone)]
struct PageWeight;

impl Weighter<PageKey, Bytes> for PageWeight {
    fn weight(&self, _key: &PageKey, page: &Bytes) -> u64 {
        page.len() as u64 + ENTRY_OVERHEAD
    }
}

pub(crate) struct IndexCache {
    pages: quick_cache::sync::Cache<PageKey, Bytes, PageWeight>,
    hits: AtomicU64,
    misses: AtomicU64,
    next_file: AtomicU64,
}

static CACHE: OnceLock<IndexCache> = OnceLock::new();

/// The process's cache, made with [`DEFAULT_CAPACITY`] on first use.
pub(crate) fn get() -> &'static IndexCache {
    CACHE.get_or_init(|| IndexCache::new(DEFAULT_CAPACITY))
}

/// Sets the capacity in bytes (node config `layer_index_cache_size`); pages beyond it are evicted.
pub fn set_capacity(bytes: u64) {
    get().pages.set_capacity(bytes.max(1));
}

/// What the metrics report: (hits, misses, bytes held, capacity).
pub fn stats() -> (u64, u64, u64, u64) {
    let c = get();
    (
        c.hits.load(Ordering::Relaxed),
        c.misses.load(Ordering::Relaxed),
        c.pages.weight(),
        c.pages.capacity(),
    )
}

impl IndexCache {
    fn new(capacity: u64) -> IndexCache {
        let estimated_pages = usize::try_from(capacity / 8192).unwrap_or(1 << 16).max(16);
        IndexCache {
            pages: quick_cache::sync::Cache::with_weighter(
                estimated_pages,
                capacity.max(1),
                PageWeight,
            ),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            next_file: AtomicU64::new(1),
        }
    }

    /// A key space of its own for a newly opened layer file (never reused, so a page of a closed file can
    /// never be taken for one of another).
    pub fn new_file(&self) -> u64 {
        self.next_file.fetch_add(1, Ordering::Relaxed)
    }

    pub fn page(&self, file: u64, page: u32) -> Option<Bytes> {
        let found = self.pages.get(&(file, page));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, file: u64, page: u32, bytes: Bytes) {
        self.pages.insert((file, page), bytes);
    }

    /// Drops the pages of a file being closed.
    pub fn forget_file(&self, file: u64, pages: u32) {
        for page in 0..pages {
            self.pages.remove(&(file, page));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_weight() {
        let cache = IndexCache::new(64 << 10);
        let file = cache.new_file();
        for page in 0..100u32 {
            cache.insert(file, page, Bytes::from(vec![page as u8; 8192]));
        }
        assert!(cache.pages.weight() <= 64 << 10, "{}", cache.pages.weight());
        assert!(cache.pages.len() >= 4, "{}", cache.pages.len());
        // What is found is what was inserted under that key.
        for page in 0..100u32 {
            if let Some(b) = cache.page(file, page) {
                assert!(b.iter().all(|&x| x == page as u8));
            }
        }
        cache.forget_file(file, 100);
        assert!(cache.pages.is_empty());
        assert_ne!(cache.new_file(), file);
    }
}
