//! Compaction (plans in plan.rs): L0 deltas merged into L1 deltas sorted by key and cut at
//! compaction_target_size, then image layers where deltas pile up. Outputs are written (fsynced, renamed)
//! before the metadata commit that swaps them for the inputs; the inputs' files are deleted after it.

use std::collections::BinaryHeap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::plan::{plan_image_layers, plan_l0_compaction};
use crate::pg::Lsn;
use crate::repository::datadir::DatadirError;
use crate::repository::keyspace::KeySpace;
use crate::repository::layer_map::{HistoricLayer, Resident};
use crate::repository::layers::delta::{DeltaLayer, DeltaLayerWriter};
use crate::repository::layers::image::ImageLayerWriter;
use crate::repository::layers::{LayerError, LayerName};
use crate::repository::metadata::MetadataError;
use crate::repository::timeline::{GetError, Timeline};
use crate::repository::{Key, Value};

#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("materializing {key} for an image layer: {source}")]
    Get { key: Key, source: GetError },
    #[error("the keyspace at {lsn} for image layers: {source}")]
    Keyspace { lsn: Lsn, source: DatadirError },
    #[error("compaction task panicked: {0}")]
    Panicked(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactionResult {
    pub l0_merged: usize,
    pub l1_written: usize,
    pub images_written: usize,
    pub elapsed_ms: u64,
}

/// Merges sorted L0 deltas (disjoint LSN ranges) into L1 deltas of about `target_size` bytes each, a key never
/// split across two files; returns the new layers.
fn merge_l0(
    dir: &std::path::Path,
    inputs: &[Arc<DeltaLayer>],
    target_size: u64,
    progress: &crate::progress::ProgressGuard,
) -> Result<Vec<DeltaLayer>, LayerError> {
    let lsn_range = inputs
        .iter()
        .map(|l| l.name().lsn_range().start)
        .min()
        .unwrap_or(Lsn(0))
        ..inputs
            .iter()
            .map(|l| l.name().lsn_range().end)
            .max()
            .unwrap_or(Lsn(1));
    let mut iters: Vec<_> = inputs.iter().map(|l| l.iter()).collect();
    // Min-heap on (key, lsn): the next entry of each input.
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(entry) = it.next() {
            let (k, l, v) = entry?;
            heap.push(std::cmp::Reverse((k, l, i, HeapValue(v))));
        }
    }
    let mut outputs = Vec::new();
    let mut writer: Option<(DeltaLayerWriter, Key)> = None;
    let mut written = 0u64;
    let mut last_key: Option<Key> = None;
    while let Some(std::cmp::Reverse((key, lsn, i, HeapValue(value)))) = heap.pop() {
        progress.add(1);
        if let Some(entry) = iters[i].next() {
            let (k, l, v) = entry?;
            heap.push(std::cmp::Reverse((k, l, i, HeapValue(v))));
        }
        let new_key = last_key != Some(key);
        if new_key
            && written >= target_size
            && let Some((w, _)) = writer.take()
        {
            outputs.push(w.finish_with_key_end(key)?);
            written = 0;
        }
        if writer.is_none() {
            writer = Some((
                DeltaLayerWriter::new(dir, key..Key::MAX, lsn_range.clone())?,
                key,
            ));
        }
        if let Some((w, _)) = writer.as_mut() {
            w.put(key, lsn, &value)?;
        }
        written += value.encoded_len() as u64 + 26;
        last_key = Some(key);
    }
    if let (Some((w, _)), Some(last)) = (writer, last_key) {
        outputs.push(w.finish_with_key_end(last.next())?);
    }
    Ok(outputs)
}

/// Value ordered by nothing: heap entries never tie on (key, lsn, input).
struct HeapValue(Value);
impl PartialEq for HeapValue {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for HeapValue {}
impl PartialOrd for HeapValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapValue {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Consecutive keys an image layer's creation reads at once.
const IMAGE_RUN_KEYS: usize = 1024;

/// What a compaction pass may do beyond the tenant's thresholds (the management API's `compact` query
/// parameters, named as Neon's).
#[derive(Debug, Clone, Copy, Default)]
pub struct CompactOptions {
    /// Merge the L0 layers however few there are (`force_l0_compaction`).
    pub force_l0: bool,
    /// Make an image layer for every key range with a delta above its newest image
    /// (`force_image_layer_creation`).
    pub force_images: bool,
}

impl Timeline {
    /// One compaction pass: L0 -> L1 when enough L0s, then image layers where needed.
    pub async fn compact(self: &Arc<Self>) -> Result<CompactionResult, CompactionError> {
        self.compact_with(CompactOptions::default()).await
    }

    /// [`compact`](Self::compact) with the thresholds lowered to 1 where `options` says so.
    pub async fn compact_with(
        self: &Arc<Self>,
        options: CompactOptions,
    ) -> Result<CompactionResult, CompactionError> {
        let _turn = self.layer_rewrite.lock().await;
        let started = Instant::now();
        let mut conf = self.conf();
        if options.force_l0 {
            conf.compaction_threshold = 1;
        }
        if options.force_images {
            conf.image_creation_threshold = 1;
        }
        let mut result = CompactionResult::default();
        let names = self
            .layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .historic_names();
        if let Some(inputs) = plan_l0_compaction(&names, conf.compaction_threshold) {
            let handles: Vec<HistoricLayer> = {
                let map = self.layers.read().unwrap_or_else(|p| p.into_inner());
                inputs
                    .iter()
                    .filter_map(|n| map.historic.iter().find(|h| h.name() == n).cloned())
                    .collect()
            };
            let mut layers: Vec<Arc<DeltaLayer>> = Vec::with_capacity(handles.len());
            for h in &handles {
                if let Resident::Delta(d) = h.download().await? {
                    layers.push(d);
                }
                self.after_download(h);
            }
            let dir = self.dir.clone();
            let target = conf.compaction_target_size;
            let to_merge = layers.clone();
            let progress = crate::progress::start(
                crate::progress::Kind::Compaction,
                format!("{} L0 layers into L1", to_merge.len()),
                Some(self.tenant_id),
                Some(self.timeline_id),
                "entries",
                Some(to_merge.iter().map(|l| l.entry_count() as u64).sum()),
            );
            let merged =
                tokio::task::spawn_blocking(move || merge_l0(&dir, &to_merge, target, &progress))
                    .await
                    .map_err(|e| CompactionError::Panicked(e.to_string()))?;
            if let Err(e) = &merged
                && e.is_damage()
                && let Some(h) = handles.iter().find(|h| h.path() == e.path())
                && let Some(d) = layers.iter().find(|d| d.path() == e.path())
            {
                // Replaced from remote storage when it has the layer: the next compaction downloads it.
                self.layer_damaged(h, &Resident::Delta(d.clone()), e);
            }
            let outputs = merged?;
            crate::failpoint::hit("compaction-before-commit");
            result.l0_merged = layers.len();
            result.l1_written = outputs.len();
            let new: Vec<HistoricLayer> = outputs
                .into_iter()
                .map(|d| self.new_layer(Resident::Delta(Arc::new(d))))
                .collect();
            self.swap_layers(&inputs, new).await?;
        }
        let lsn = self.disk_consistent_lsn();
        let names = self
            .layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .historic_names();
        let ranges = plan_image_layers(&names, conf.image_creation_threshold, lsn);
        // Images hold the keyspace at their LSN, not every key ever written: a dropped relation's pages,
        // truncated blocks and removed SLRU segments are left behind, for GC to remove with the deltas
        // below (as Neon's create_image_layers does with its collect_keyspace).
        let keyspace = if ranges.is_empty() {
            KeySpace::default()
        } else {
            self.keyspace(lsn)
                .await
                .map_err(|source| CompactionError::Keyspace { lsn, source })?
        };
        for range in ranges {
            if let Some(image) = self.create_image_layer(&range, lsn, &keyspace).await? {
                self.swap_layers(&[], vec![image]).await?;
                result.images_written += 1;
            }
        }
        result.elapsed_ms = started.elapsed().as_millis() as u64;
        crate::metrics::COMPACTION_SECONDS.observe(started.elapsed());
        if result.l0_merged > 0 || result.images_written > 0 {
            info!(?result, "compaction done");
        }
        Ok(result)
    }

    /// Every key of `range` in `keyspace` (the keyspace at `lsn`), materialized at `lsn`, in one image
    /// layer; None if no key of the range ever had a version. An image of a range whose keys all left the
    /// keyspace is empty: it lets GC remove the deltas below it.
    async fn create_image_layer(
        self: &Arc<Self>,
        range: &Range<Key>,
        lsn: Lsn,
        keyspace: &KeySpace,
    ) -> Result<Option<HistoricLayer>, CompactionError> {
        let mut keys = self.keys_in_range(range, lsn).await?;
        if keys.is_empty() {
            return Ok(None);
        }
        keys.retain(|k| keyspace.contains(k));
        let mut values = Vec::with_capacity(keys.len());
        // Runs of consecutive keys are read together (one pass over each layer per run); a run with a key
        // that cannot be read is read again key by key, to tell which.
        let mut rest = &keys[..];
        while !rest.is_empty() {
            let mut n = 1;
            while n < rest.len() && n < IMAGE_RUN_KEYS && rest[n] == rest[n - 1].next() {
                n += 1;
            }
            let (run, tail) = rest.split_at(n);
            rest = tail;
            if run.len() > 1 {
                match self.get_range(run[0]..run[n - 1].next(), lsn).await {
                    Ok(pages) => {
                        values.extend(run.iter().copied().zip(pages));
                        continue;
                    }
                    Err(GetError::KeyNotFound { .. } | GetError::NoBaseImage { .. }) => {}
                    Err(source) => {
                        return Err(CompactionError::Get {
                            key: run[0],
                            source,
                        });
                    }
                }
            }
            for &key in run {
                match self.get(key, lsn).await {
                    Ok(v) => values.push((key, v)),
                    Err(GetError::KeyNotFound { .. }) => {}
                    Err(GetError::NoBaseImage { .. }) => {
                        // An image must hold every key of its range (GC relies on it), and this one cannot
                        // be materialized: no image for the range; its deltas stay.
                        warn!(%key, %lsn, range = ?range, "key has records but no base image; no image layer for its range");
                        return Ok(None);
                    }
                    Err(source) => return Err(CompactionError::Get { key, source }),
                }
            }
        }
        let dir = self.dir.clone();
        let range = range.clone();
        let image = tokio::task::spawn_blocking(move || -> Result<_, LayerError> {
            let mut w = ImageLayerWriter::new(&dir, range, lsn)?;
            for (k, v) in &values {
                w.put(*k, v)?;
            }
            w.finish()
        })
        .await
        .map_err(|e| CompactionError::Panicked(e.to_string()))??;
        Ok(Some(self.new_layer(Resident::Image(Arc::new(image)))))
    }

    /// Commits `new` in place of `old` (metadata, then the map), then deletes the old files.
    async fn swap_layers(
        &self,
        old: &[LayerName],
        new: Vec<HistoricLayer>,
    ) -> Result<(), MetadataError> {
        self.commit_layers(&new, old, |_| {}).await?;
        let removed = {
            let mut map = self.layers.write().unwrap_or_else(|p| p.into_inner());
            let (gone, kept): (Vec<_>, Vec<_>) =
                map.historic.drain(..).partition(|h| old.contains(h.name()));
            map.historic = kept;
            map.historic.extend(new);
            gone
        };
        crate::failpoint::hit("swap-before-delete");
        for layer in removed {
            let _ = std::fs::remove_file(layer.path());
        }
        Ok(())
    }

    /// Background compaction every compaction_period ("0 s" disables it).
    pub async fn compaction_loop(self: Arc<Self>) {
        loop {
            let period = self.conf().compaction_period.get();
            let wait = if period.is_zero() {
                Duration::from_secs(10)
            } else {
                period
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if !self.conf().compaction_period.get().is_zero()
                && let Err(e) = self.compact().await
            {
                warn!(error = %e, "compaction failed");
            }
        }
    }
}
