//! The in-memory layer: where new values land. The index (key -> versions) is in memory; the values are
//! appended to an ephemeral file in the timeline directory, so memory stays bounded by the number of
//! versions, not their size. Values are encoded into an in-memory tail of up to [`TAIL_CAPACITY`] bytes that
//! is written to the file with one `pwrite` when full (reads of values still in the tail copy them from there),
//! and a batch of values takes the lock once. When frozen it takes no more writes, and the flush task writes it
//! out as an L0 delta layer covering all keys and its LSN range, reading the file once, in one piece.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use bytes::Bytes;
use rustc_hash::FxBuildHasher;

use crate::pg::Lsn;
use crate::repository::value::ValueError;
use crate::repository::{Key, Value};

/// Bytes of encoded values held in memory before they are written to the ephemeral file in one `pwrite`.
pub const TAIL_CAPACITY: usize = 256 * 1024;

/// Asks the kernel to back `buf` (not touched yet) with transparent huge pages where it can: the flush reads
/// values from it in random order, and with 4 KiB pages nearly every value costed a TLB miss, besides a page
/// fault per 4 KiB when the file was read into it. A hint: failure (no THP) changes nothing.
fn advise_huge_pages(buf: &mut [u8]) {
    const HUGE: usize = 2 << 20;
    if buf.len() < 2 * HUGE {
        return;
    }
    let start = buf.as_mut_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    let len = (start + buf.len() - aligned) / HUGE * HUGE;
    let Some(ptr) = std::ptr::NonNull::new(aligned as *mut std::ffi::c_void) else {
        return;
    };
    // SAFETY: [aligned, aligned + len) lies inside `buf`, which we own; MADV_HUGEPAGE changes how the kernel
    // backs those pages, never their contents.
    let _ = unsafe { nix::sys::mman::madvise(ptr, len, nix::sys::mman::MmapAdvise::MADV_HUGEPAGE) };
}

/// A flush reads its layer's ephemeral file whole into a buffer. A fresh buffer costs a page fault and the
/// kernel's zeroing of every page it touches: 10% of the ingest bench's CPU (`clear_page_erms` under
/// `pread`, on this VM about 1 GB/s), for memory that the previous flush had just given back. The process
/// keeps one spare instead (flushes of all timelines share it, one at a time), and gives it back to the
/// kernel once no flush has used it for [`SPARE_IDLE`]: a node that stops ingesting does not keep it.
struct SpareBuffer {
    buf: Vec<u8>,
    returned: Instant,
}

static SPARE: std::sync::Mutex<Option<SpareBuffer>> = std::sync::Mutex::new(None);

/// How long an unused spare flush buffer is kept.
const SPARE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

fn spare() -> std::sync::MutexGuard<'static, Option<SpareBuffer>> {
    SPARE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A buffer of `len` bytes for a flush's read: the spare if there is one (its pages are mapped already),
/// else a new one. Its contents are whatever was there: the caller overwrites all `len` bytes.
fn take_flush_buffer(len: usize) -> Vec<u8> {
    match spare().take() {
        Some(s) if s.buf.len() >= len => s.buf,
        // Too small (or none): a new one, untouched until the read, so that the hint takes effect.
        _ => {
            let mut buf = vec![0u8; len];
            advise_huge_pages(&mut buf);
            buf
        }
    }
}

/// Keeps `buf` as the spare (the larger one if there is one already).
fn return_flush_buffer(buf: Vec<u8>) {
    let mut spare = spare();
    if spare.as_ref().is_none_or(|s| s.buf.len() < buf.len()) {
        *spare = Some(SpareBuffer {
            buf,
            returned: Instant::now(),
        });
    }
}

/// Frees the spare flush buffer if no flush has used it for [`SPARE_IDLE`] (called by the flush loops'
/// idle ticks), after the lock is released.
pub fn release_idle_flush_buffer() {
    let _freed = {
        let mut spare = spare();
        match &*spare {
            Some(s) if s.returned.elapsed() >= SPARE_IDLE => spare.take(),
            _ => None,
        }
    };
}

/// How many values ahead the flush prefetches.
const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to bring the start of `bytes` into its caches (a hint: it never faults or fails).
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch reads nothing: any address is allowed.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[derive(Debug, thiserror::Error)]
pub enum InMemoryError {
    #[error("ephemeral file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ephemeral file {path}: {source}")]
    Value { path: PathBuf, source: ValueError },
    #[error("in-memory layer starting at {start} is frozen")]
    Frozen { start: Lsn },
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    lsn: Lsn,
    offset: u64,
    len: u32,
}

/// The index and the unwritten tail, under one lock: a slot at or above `tail_start` is in `tail`.
struct Inner {
    /// Versions of each key, oldest first. FxHash: keys are ours (from WAL the pageserver decoded, not
    /// chosen by a client), so a fast non-keyed hash is safe; the flush sorts the keys.
    index: HashMap<Key, Vec<Slot>, FxBuildHasher>,
    tail: Vec<u8>,
    tail_start: u64,
}

pub struct InMemoryLayer {
    start_lsn: Lsn,
    path: PathBuf,
    file: File,
    inner: RwLock<Inner>,
    bytes: AtomicU64,
    entries: AtomicU64,
    /// Set when frozen: the layer covers start_lsn..end_lsn.
    end_lsn: OnceLock<Lsn>,
    created: Instant,
}

impl std::fmt::Debug for InMemoryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryLayer")
            .field("start_lsn", &self.start_lsn)
            .field("end_lsn", &self.end_lsn.get())
            .finish()
    }
}

static EPHEMERAL_SEQ: AtomicU64 = AtomicU64::new(0);

/// Name prefix of ephemeral files; the timeline loader deletes leftovers.
pub const EPHEMERAL_PREFIX: &str = "ephemeral-";

impl InMemoryLayer {
    pub fn create(dir: &Path, start_lsn: Lsn) -> Result<InMemoryLayer, InMemoryError> {
        let seq = EPHEMERAL_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{EPHEMERAL_PREFIX}{}-{seq}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| InMemoryError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(InMemoryLayer {
            start_lsn,
            path,
            file,
            inner: RwLock::new(Inner {
                index: HashMap::default(),
                tail: Vec::new(),
                tail_start: 0,
            }),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            end_lsn: OnceLock::new(),
            created: Instant::now(),
        })
    }

    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The end (exclusive) once frozen.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.end_lsn.get().copied()
    }

    /// Bytes of values written.
    pub fn size(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.load(Ordering::Acquire) == 0
    }

    pub fn age(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    fn read_inner(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_inner(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn io_err(&self) -> impl FnOnce(std::io::Error) -> InMemoryError + '_ {
        move |source| InMemoryError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds a version. The single writer calls this with non-decreasing LSNs.
    pub fn put(&self, key: Key, lsn: Lsn, value: &Value) -> Result<(), InMemoryError> {
        self.put_batch([(key, lsn, value)])
    }

    /// Adds versions (LSNs non-decreasing), under one lock. One value per (key, LSN): a second put at the
    /// same LSN replaces the first (its bytes stay in the ephemeral file, unreferenced). If writing the full
    /// tail fails, every value of the batch is still indexed and readable from the tail, which is written
    /// with the next batch; the error is returned, so the caller publishes none of them.
    pub fn put_batch<'a>(
        &self,
        values: impl IntoIterator<Item = (Key, Lsn, &'a Value)>,
    ) -> Result<(), InMemoryError> {
        if self.end_lsn.get().is_some() {
            return Err(InMemoryError::Frozen {
                start: self.start_lsn,
            });
        }
        let mut inner = self.write_inner();
        let Inner {
            index,
            tail,
            tail_start,
        } = &mut *inner;
        let mut entries = self.entries.load(Ordering::Acquire);
        for (key, lsn, value) in values {
            let offset = *tail_start + tail.len() as u64;
            value.encode_into(tail);
            let slot = Slot {
                lsn,
                offset,
                len: (*tail_start + tail.len() as u64 - offset) as u32,
            };
            let versions = index.entry(key).or_default();
            // Versions above `lsn` were put by a batch that failed and was never published (the writer puts
            // only above the last published record): the batch being retried replaces them.
            while versions.last().is_some_and(|last| last.lsn > lsn) {
                versions.pop();
                entries -= 1;
            }
            match versions.last_mut() {
                Some(last) if last.lsn == lsn => *last = slot,
                _ => {
                    versions.push(slot);
                    entries += 1;
                }
            }
        }
        self.bytes
            .store(*tail_start + tail.len() as u64, Ordering::Release);
        self.entries.store(entries, Ordering::Release);
        if tail.len() >= TAIL_CAPACITY {
            self.file
                .write_all_at(tail, *tail_start)
                .map_err(self.io_err())?;
            *tail_start += tail.len() as u64;
            tail.clear();
        }
        Ok(())
    }

    /// Freezes the layer at `end_lsn` (exclusive); no more writes.
    pub fn freeze(&self, end_lsn: Lsn) {
        let _ = self.end_lsn.set(end_lsn);
    }

    fn read(&self, slot: Slot) -> Result<Value, InMemoryError> {
        let buf = {
            let inner = self.read_inner();
            if slot.offset >= inner.tail_start {
                let at = (slot.offset - inner.tail_start) as usize;
                Some(Bytes::copy_from_slice(
                    &inner.tail[at..at + slot.len as usize],
                ))
            } else {
                None
            }
        };
        // Below the tail the bytes are in the file, at the same offset for good: no lock needed.
        let buf = match buf {
            Some(b) => b,
            None => {
                let mut buf = vec![0u8; slot.len as usize];
                (self.file)
                    .read_exact_at(&mut buf, slot.offset)
                    .map_err(self.io_err())?;
                Bytes::from(buf)
            }
        };
        Value::decode(&buf).map_err(|source| InMemoryError::Value {
            path: self.path.clone(),
            source,
        })
    }

    /// Versions of `key` with LSN in `lsn_range`, oldest first.
    pub fn get_values(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Vec<(Lsn, Value)>, InMemoryError> {
        (self.slots(key, &lsn_range).into_iter())
            .map(|s| Ok((s.lsn, self.read(s)?)))
            .collect()
    }

    /// The LSN of `key`'s newest version in `lsn_range`.
    pub fn newest_lsn(&self, key: Key, lsn_range: Range<Lsn>) -> Option<Lsn> {
        let inner = self.read_inner();
        let versions = inner.index.get(&key)?;
        (versions.iter().rev())
            .find(|s| lsn_range.contains(&s.lsn))
            .map(|s| s.lsn)
    }

    /// The slots of `key`'s versions in `lsn_range`, oldest first.
    fn slots(&self, key: Key, lsn_range: &Range<Lsn>) -> Vec<Slot> {
        let inner = self.read_inner();
        match inner.index.get(&key) {
            Some(v) => (v.iter())
                .filter(|s| lsn_range.contains(&s.lsn))
                .copied()
                .collect(),
            None => Vec::new(),
        }
    }

    /// [`get_values`](Self::get_values) newest first, stopping after the first value that needs no older one.
    pub fn get_values_newest_first(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Vec<(Lsn, Value)>, InMemoryError> {
        let mut out = Vec::new();
        for s in self.slots(key, &lsn_range).into_iter().rev() {
            let value = self.read(s)?;
            let init = value.will_init();
            out.push((s.lsn, value));
            if init {
                break;
            }
        }
        Ok(out)
    }

    /// Every (key, lsn) in (key, LSN) order with its encoded value ([`Value::encode`]), for the flush; call
    /// only when frozen. The file is read once, whole, into the spare flush buffer (at most about
    /// `checkpoint_distance` bytes, kept for the next flush), rather than a read per value.
    pub fn for_each_encoded<E: From<InMemoryError>>(
        &self,
        f: impl FnMut(Key, Lsn, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let inner = self.read_inner();
        // Versions at or above the end were put by a batch that failed and was not published before the
        // freeze; the retried batch puts them into the next layer.
        let end = self.end_lsn().unwrap_or(Lsn(u64::MAX));
        let len = inner.tail_start as usize;
        let mut buf = take_flush_buffer(len);
        let result = match (self.file).read_exact_at(&mut buf[..len], 0) {
            Ok(()) => self.visit_in_order(&inner, end, &buf[..len], f),
            Err(e) => Err(self.io_err()(e).into()),
        };
        return_flush_buffer(buf);
        result
    }

    fn visit_in_order<E: From<InMemoryError>>(
        &self,
        inner: &Inner,
        end: Lsn,
        file_bytes: &[u8],
        mut f: impl FnMut(Key, Lsn, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut keys: Vec<(&Key, &Vec<Slot>)> = inner.index.iter().collect();
        keys.sort_unstable_by_key(|(k, _)| **k);
        let bytes_of = |slot: &Slot| -> &[u8] {
            let (bytes, at) = if slot.offset >= inner.tail_start {
                (inner.tail.as_slice(), slot.offset - inner.tail_start)
            } else {
                (file_bytes, slot.offset)
            };
            let at = at as usize;
            &bytes[at..at + slot.len as usize]
        };
        let in_order = || {
            (keys.iter()).flat_map(|(key, slots)| {
                (slots.iter().take_while(|s| s.lsn < end)).map(move |slot| (**key, slot))
            })
        };
        // Values are visited in key order but lie in the file in LSN order: each is a cache (and TLB) miss
        // in a buffer of hundreds of MB. Prefetching the values PREFETCH_AHEAD places ahead overlaps those
        // misses (the flush was bound by them: 12% of the ingest bench's CPU in its first byte's load).
        let mut ahead = in_order().skip(PREFETCH_AHEAD);
        for (key, slot) in in_order() {
            if let Some((_, next)) = ahead.next() {
                prefetch(bytes_of(next));
            }
            f(key, slot.lsn, bytes_of(slot))?;
        }
        Ok(())
    }

    /// The keys present, in order.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.read_inner().index.keys().copied().collect();
        keys.sort_unstable();
        keys
    }
}

impl Drop for InMemoryLayer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_put_at_one_lsn_replaces_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let layer = InMemoryLayer::create(dir.path(), Lsn(10)).unwrap();
        let k = Key::MIN;
        layer
            .put(k, Lsn(10), &Value::Image(Bytes::from_static(b"a")))
            .unwrap();
        layer
            .put(k, Lsn(10), &Value::Image(Bytes::from_static(b"b")))
            .unwrap();
        assert_eq!(
            layer.get_values(k, Lsn(0)..Lsn(11)).unwrap(),
            vec![(Lsn(10), Value::Image(Bytes::from_static(b"b")))]
        );
    }

    #[test]
    fn put_get_and_freeze() {
        let dir = tempfile::tempdir().unwrap();
        let layer = InMemoryLayer::create(dir.path(), Lsn(10)).unwrap();
        let k = Key::MIN.next();
        layer
            .put(k, Lsn(10), &Value::Image(Bytes::from_static(b"a")))
            .unwrap();
        layer
            .put(k, Lsn(12), &Value::Image(Bytes::from_static(b"b")))
            .unwrap();
        let got = layer.get_values(k, Lsn(0)..Lsn(12)).unwrap();
        assert_eq!(got, vec![(Lsn(10), Value::Image(Bytes::from_static(b"a")))]);
        assert_eq!(layer.get_values(k, Lsn(0)..Lsn(13)).unwrap().len(), 2);
        layer.freeze(Lsn(13));
        assert!(layer.put(k, Lsn(13), &Value::Image(Bytes::new())).is_err());
        let path = layer.path.clone();
        drop(layer);
        assert!(!path.exists());
    }

    fn image(n: usize, fill: u8) -> Value {
        Value::Image(Bytes::from(vec![fill; n]))
    }

    fn flushed(layer: &InMemoryLayer) -> Vec<(Key, Lsn, Value)> {
        let mut out = Vec::new();
        layer
            .for_each_encoded(|k, l, enc| -> Result<(), InMemoryError> {
                out.push((k, l, Value::decode(&Bytes::copy_from_slice(enc)).unwrap()));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn values_in_the_tail_and_in_the_file_read_back_alike() {
        let dir = tempfile::tempdir().unwrap();
        let layer = InMemoryLayer::create(dir.path(), Lsn(1)).unwrap();
        let keys: Vec<Key> = (0..4)
            .scan(Key::MIN, |k, _| {
                *k = k.next();
                Some(*k)
            })
            .collect();
        // 100 values of 8 KiB: the first ones reach the file, the last stay in the tail.
        let mut expected = Vec::new();
        for i in 0..100u64 {
            let (k, l, v) = (keys[(i % 4) as usize], Lsn(10 + i), image(8192, i as u8));
            layer.put_batch([(k, l, &v)]).unwrap();
            expected.push((k, l, v));
        }
        assert!(
            layer.read_inner().tail_start > 0,
            "nothing reached the file"
        );
        assert!(
            !layer.read_inner().tail.is_empty(),
            "nothing left in the tail"
        );
        for (k, l, v) in &expected {
            assert_eq!(
                layer.get_values(*k, *l..Lsn(l.0 + 1)).unwrap(),
                vec![(*l, v.clone())]
            );
        }
        layer.freeze(Lsn(200));
        expected.sort_by_key(|(k, l, _)| (*k, *l));
        assert_eq!(flushed(&layer), expected);
    }

    #[test]
    fn a_flush_after_a_larger_one_reads_only_its_own_values() {
        // The second flush reads into the spare buffer the first one left, larger and full of its bytes.
        let dir = tempfile::tempdir().unwrap();
        let key = Key::MIN.next();
        for (n, fill) in [(400u64, 0xAAu8), (40, 0x55)] {
            let layer = InMemoryLayer::create(dir.path(), Lsn(1)).unwrap();
            let expected: Vec<(Key, Lsn, Value)> = (0..n)
                .map(|i| (key, Lsn(10 + i), image(8192 - i as usize, fill)))
                .collect();
            for (k, l, v) in &expected {
                layer.put_batch([(*k, *l, v)]).unwrap();
            }
            layer.freeze(Lsn(10_000));
            assert!(layer.read_inner().tail_start > 0);
            assert_eq!(flushed(&layer), expected);
        }
    }

    #[test]
    fn a_retried_batch_replaces_the_unpublished_versions_of_a_failed_one() {
        let dir = tempfile::tempdir().unwrap();
        let layer = InMemoryLayer::create(dir.path(), Lsn(1)).unwrap();
        let k = Key::MIN.next();
        let (a, b, c) = (image(1, 1), image(1, 2), image(1, 3));
        layer.put_batch([(k, Lsn(10), &a)]).unwrap();
        // A batch at 20 and 30 that failed after it was indexed, then its retry from 20.
        layer
            .put_batch([(k, Lsn(20), &b), (k, Lsn(30), &b)])
            .unwrap();
        layer
            .put_batch([(k, Lsn(20), &c), (k, Lsn(30), &c)])
            .unwrap();
        assert_eq!(
            layer.get_values(k, Lsn(0)..Lsn(100)).unwrap(),
            vec![
                (Lsn(10), a.clone()),
                (Lsn(20), c.clone()),
                (Lsn(30), c.clone())
            ]
        );
        // Frozen below a failed batch's versions: the flush leaves them out.
        layer.put_batch([(k, Lsn(40), &b)]).unwrap();
        layer.freeze(Lsn(31));
        assert_eq!(
            flushed(&layer),
            vec![(k, Lsn(10), a), (k, Lsn(20), c.clone()), (k, Lsn(30), c)]
        );
    }
}
