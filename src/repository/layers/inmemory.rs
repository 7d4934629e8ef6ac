//! The in-memory layer: where new values land. The index (key -> versions) is in memory; the values are
//! appended to an ephemeral file in the timeline directory, so memory stays bounded by the number of
//! versions, not their size. When frozen it takes no more writes, and the flush task writes it out as an L0
//! delta layer covering all keys and its LSN range.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use bytes::Bytes;

use crate::pg::Lsn;
use crate::repository::value::ValueError;
use crate::repository::{Key, Value};

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

pub struct InMemoryLayer {
    start_lsn: Lsn,
    path: PathBuf,
    file: File,
    index: RwLock<BTreeMap<Key, Vec<Slot>>>,
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
            index: RwLock::new(BTreeMap::new()),
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

    /// Adds a version. The single writer calls this with non-decreasing LSNs.
    pub fn put(&self, key: Key, lsn: Lsn, value: &Value) -> Result<(), InMemoryError> {
        if self.end_lsn.get().is_some() {
            return Err(InMemoryError::Frozen {
                start: self.start_lsn,
            });
        }
        let encoded = value.encode();
        let offset = self.bytes.fetch_add(encoded.len() as u64, Ordering::AcqRel);
        self.file
            .write_all_at(&encoded, offset)
            .map_err(|source| InMemoryError::Io {
                path: self.path.clone(),
                source,
            })?;
        let slot = Slot {
            lsn,
            offset,
            len: encoded.len() as u32,
        };
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let versions = index.entry(key).or_default();
        // One value per (key, LSN): a second put at the same LSN replaces the first (its bytes stay in the
        // ephemeral file, unreferenced).
        match versions.last_mut() {
            Some(last) if last.lsn == lsn => *last = slot,
            _ => {
                versions.push(slot);
                self.entries.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Freezes the layer at `end_lsn` (exclusive); no more writes.
    pub fn freeze(&self, end_lsn: Lsn) {
        let _ = self.end_lsn.set(end_lsn);
    }

    fn read(&self, slot: Slot) -> Result<Value, InMemoryError> {
        let mut buf = vec![0u8; slot.len as usize];
        self.file
            .read_exact_at(&mut buf, slot.offset)
            .map_err(|source| InMemoryError::Io {
                path: self.path.clone(),
                source,
            })?;
        Value::decode(&Bytes::from(buf)).map_err(|source| InMemoryError::Value {
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
        self.slots(key, &lsn_range).last().map(|s| s.lsn)
    }

    /// The slots of `key`'s versions in `lsn_range`, oldest first.
    fn slots(&self, key: Key, lsn_range: &Range<Lsn>) -> Vec<Slot> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        match index.get(&key) {
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

    /// Every (key, lsn) in order, for the flush; call only when frozen.
    pub fn for_each<E: From<InMemoryError>>(
        &self,
        mut f: impl FnMut(Key, Lsn, Value) -> Result<(), E>,
    ) -> Result<(), E> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        for (key, slots) in index.iter() {
            for slot in slots {
                f(*key, slot.lsn, self.read(*slot)?)?;
            }
        }
        Ok(())
    }

    /// The keys present, in order.
    pub fn keys(&self) -> Vec<Key> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
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
}
