//! The write path: one writer at a time puts values above last_record_lsn into the open in-memory layer,
//! then `finish_write` publishes them; past `checkpoint_distance` the layer is frozen for the flush.

use std::sync::Arc;

use super::Timeline;
use crate::pg::Lsn;
use crate::repository::layer_map::Frozen;
use crate::repository::layers::inmemory::{InMemoryError, InMemoryLayer};
use crate::repository::{Key, Value};

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("value for {key} at {lsn} is not above last_record_lsn {last}")]
    NotAboveLast { key: Key, lsn: Lsn, last: Lsn },
    #[error(transparent)]
    InMemory(#[from] InMemoryError),
    #[error("timeline is shutting down")]
    ShuttingDown,
}

/// Exclusive right to write; held by the WAL ingest of the timeline.
pub struct TimelineWriter<'a> {
    tl: &'a Timeline,
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

impl Timeline {
    pub async fn writer(&self) -> TimelineWriter<'_> {
        TimelineWriter {
            tl: self,
            _guard: self.write_lock.lock().await,
        }
    }

    /// Freezes the open layer (if it holds anything) at last_record_lsn. Callers hold the write lock, so no
    /// record is half in it.
    pub(crate) fn freeze_open_layer(&self) -> bool {
        let last = self.last_record_lsn();
        let prev = self.prev_record_lsn();
        let mut map = self.layers.write().unwrap_or_else(|p| p.into_inner());
        match map.open.take() {
            Some(open) if !open.is_empty() => {
                open.freeze(Lsn(last.0 + 1));
                map.frozen.push_back(Frozen {
                    layer: open,
                    last_lsn: last,
                    prev_lsn: prev,
                });
                true
            }
            other => {
                map.open = other;
                false
            }
        }
    }
}

/// Frozen layers (the one being flushed included) at which ingest waits for the flush: the in-memory layers'
/// memory stays at about the open layer plus two frozen ones however far ingest outruns the flush.
pub const MAX_FROZEN_LAYERS: usize = 2;

impl Timeline {
    /// Frozen layers waiting for (or in) the flush.
    pub fn frozen_layers(&self) -> usize {
        self.layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .frozen
            .len()
    }

    /// Waits until fewer than [`MAX_FROZEN_LAYERS`] layers are frozen, flushing them if the flush loop has
    /// not (a failed flush is retried every second, as the flush loop does; it reports the error). Called by
    /// ingest without the write lock: the flush loop takes it to freeze an old open layer.
    pub async fn wait_for_flush_backlog(self: &Arc<Self>) -> Result<(), PutError> {
        while self.frozen_layers() >= MAX_FROZEN_LAYERS {
            if self.cancel.is_cancelled() {
                return Err(PutError::ShuttingDown);
            }
            if self.flush_frozen_layers().await.is_err() {
                tokio::select! {
                    _ = self.cancel.cancelled() => return Err(PutError::ShuttingDown),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
        Ok(())
    }
}

impl TimelineWriter<'_> {
    /// Stores `value` for `key` at `lsn` (above last_record_lsn). One value per (key, LSN): a second put at the
    /// same LSN replaces the first.
    pub fn put(&self, key: Key, lsn: Lsn, value: &Value) -> Result<(), PutError> {
        self.put_batch(&[(key, lsn, value.clone())])
    }

    /// Puts a batch (LSNs non-decreasing, all above last_record_lsn) into the open layer, under one lock.
    pub fn put_batch(&self, batch: &[(Key, Lsn, Value)]) -> Result<(), PutError> {
        let Some(&(first_key, first_lsn, _)) = batch.first() else {
            return Ok(());
        };
        let last = self.tl.last_record_lsn();
        if first_lsn <= last {
            return Err(PutError::NotAboveLast {
                key: first_key,
                lsn: first_lsn,
                last,
            });
        }
        if self.tl.cancel.is_cancelled() {
            return Err(PutError::ShuttingDown);
        }
        self.open_layer(last)?
            .put_batch(batch.iter().map(|(k, l, v)| (*k, *l, v)))?;
        for (key, lsn, value) in batch.iter().filter(|(k, _, _)| k.is_rel_size()) {
            match value {
                Value::Image(b) if b.len() == 4 => {
                    let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.tl.note_rel_size(*key, *lsn, n);
                }
                // Not a size a read could decode: reads of this key go to the layers (and report it).
                _ => {
                    self.tl.forget_rel_size(key);
                }
            }
        }
        Ok(())
    }

    /// The open in-memory layer, made if there is none (starting above `last`). The usual case, an open layer,
    /// takes the layer map's read lock only, so that concurrent reads are not held up by each batch.
    fn open_layer(&self, last: Lsn) -> Result<Arc<InMemoryLayer>, PutError> {
        if let Some(open) = &self
            .tl
            .layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .open
        {
            return Ok(open.clone());
        }
        // Only the writer (whose guard we hold) makes the open layer, so it is still missing here.
        let mut map = self.tl.layers.write().unwrap_or_else(|p| p.into_inner());
        Ok(match &map.open {
            Some(open) => open.clone(),
            None => {
                let layer = Arc::new(InMemoryLayer::create(&self.tl.dir, Lsn(last.0 + 1))?);
                map.open = Some(layer.clone());
                layer
            }
        })
    }

    /// Publishes everything put so far up to `lsn` (the end of the last record; `prev` its start) and freezes
    /// the open layer if it has grown past checkpoint_distance.
    pub fn finish_write(&self, lsn: Lsn, prev: Option<Lsn>) {
        self.tl.advance_last_record_lsn(lsn, prev);
        let size = self
            .tl
            .layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .as_ref()
            .map_or(0, |l| l.size());
        if size >= self.tl.conf().checkpoint_distance && self.tl.freeze_open_layer() {
            self.tl.flush_wakeup.notify_one();
        }
    }

    /// Freezes whatever the open layer holds now (for a checkpoint).
    pub fn freeze(&self) -> bool {
        self.tl.freeze_open_layer()
    }
}
