//! Flush: frozen in-memory layers become L0 delta layers, oldest first. Per layer: write the file (fsynced,
//! renamed; see layers/delta.rs), then commit metadata naming it with the new disk_consistent_lsn, then swap
//! it into the layer map in place of the frozen layer. A crash before the commit leaves an unnamed file,
//! deleted at the next load; the WAL from disk_consistent_lsn is streamed again.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::pg::Lsn;
use crate::remote_storage::index::Generation;
use crate::repository::Key;
use crate::repository::layer_map::{Frozen, HistoricLayer, RemoteLayer, Resident};
use crate::repository::layers::delta::DeltaLayerWriter;
use crate::repository::layers::inmemory::InMemoryError;
use crate::repository::layers::{LayerError, LayerName};
use crate::repository::metadata::{LayerFileMeta, MetadataError, TimelineMetadata};
use crate::repository::timeline::{DiskFull, Timeline};

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    InMemory(#[from] InMemoryError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("flush task panicked: {0}")]
    Panicked(String),
}

/// How many (time, LSN) samples the metadata keeps for the PITR cutoff.
const MAX_LSN_TIMES: usize = 512;

impl Timeline {
    /// Writes out every frozen layer; returns the new disk_consistent_lsn.
    pub async fn flush_frozen_layers(self: &Arc<Self>) -> Result<Lsn, FlushError> {
        let _one_at_a_time = self.flush_lock.lock().await;
        loop {
            let next = self
                .layers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .frozen
                .front()
                .cloned();
            let Some(frozen) = next else {
                return Ok(self.disk_consistent_lsn());
            };
            self.flush_one(frozen).await?;
        }
    }

    async fn flush_one(self: &Arc<Self>, frozen: Frozen) -> Result<(), FlushError> {
        let started = std::time::Instant::now();
        let dir = self.dir.clone();
        let layer = frozen.layer.clone();
        let start = layer.start_lsn();
        let end = Lsn(frozen.last_lsn.0 + 1);
        let delta = tokio::task::spawn_blocking(move || -> Result<_, FlushError> {
            let mut writer = DeltaLayerWriter::new(&dir, Key::MIN..Key::MAX, start..end)?;
            layer.for_each_encoded(|key, lsn, encoded| {
                (writer.put_encoded(key, lsn, encoded)).map_err(FlushError::Layer)
            })?;
            Ok(writer.finish()?)
        })
        .await
        .map_err(|e| FlushError::Panicked(e.to_string()))??;
        let name = delta.name().to_string();
        crate::failpoint::hit("flush-before-commit");
        let layer = self.new_layer(Resident::Delta(Arc::new(delta)));
        self.commit_layers(std::slice::from_ref(&layer), &[], |m| {
            m.disk_consistent_lsn = frozen.last_lsn;
            m.prev_record_lsn = frozen.prev_lsn;
            record_lsn_time(m, frozen.last_lsn);
        })
        .await?;
        {
            let mut map = self.layers.write().unwrap_or_else(|p| p.into_inner());
            map.frozen.pop_front();
            map.historic.push(layer);
        }
        self.set_disk_consistent_lsn(frozen.last_lsn);
        crate::metrics::FLUSH_SECONDS.observe(started.elapsed());
        debug!(layer = %name, disk_consistent_lsn = %frozen.last_lsn, "flushed in-memory layer");
        Ok(())
    }

    /// Rewrites the metadata with `change` applied, durably, then makes it current.
    pub(crate) async fn commit_metadata(
        &self,
        change: impl FnOnce(&mut TimelineMetadata),
    ) -> Result<(), MetadataError> {
        self.commit_layers(&[], &[], change).await
    }

    /// Commits metadata that names `added` and no longer names `removed`, with `change` applied. With remote
    /// storage, then schedules, in this order and under the same lock (so the upload queue sees commits in
    /// the order they were made): the uploads of `added`, the index of this metadata, the remote deletion of
    /// `removed`. That order is what keeps the queue's invariants (remote_storage/upload_queue.rs).
    pub(crate) async fn commit_layers(
        &self,
        added: &[HistoricLayer],
        removed: &[LayerName],
        change: impl FnOnce(&mut TimelineMetadata),
    ) -> Result<(), MetadataError> {
        let _guard = self.metadata_write.lock().await;
        let mut m = self.metadata();
        change(&mut m);
        let removed_names: Vec<String> = removed.iter().map(|n| n.to_string()).collect();
        let mut gone = Vec::with_capacity(removed.len());
        m.layers.retain(|l| !removed_names.contains(l));
        for name in &removed_names {
            let generation = m.layer_meta.remove(name).map_or(0, |x| x.generation);
            gone.push((name.clone(), Generation(generation)));
        }
        for h in added {
            let name = h.name().to_string();
            if !m.layers.contains(&name) {
                m.layers.push(name.clone());
            }
            m.layer_meta.insert(
                name,
                LayerFileMeta {
                    file_size: h.file_size(),
                    generation: h.generation().0,
                },
            );
        }
        let dir = self.dir.clone();
        let to_save = m.clone();
        tokio::task::spawn_blocking(move || to_save.save(&dir))
            .await
            .map_err(|e| MetadataError::Write {
                path: self.dir.clone(),
                source: std::io::Error::other(e),
            })??;
        if let Some(queue) = &self.upload_queue {
            for h in added {
                queue.schedule_layer_upload(h.clone());
            }
            queue.schedule_index_upload(&m);
            if !gone.is_empty() {
                queue.schedule_deletion(gone);
            }
        }
        *self.metadata.lock().unwrap_or_else(|p| p.into_inner()) = m;
        Ok(())
    }

    /// Uploads `<dir>/initdb.tar.zst` (then removes it), if it is there and remote storage is configured.
    pub fn schedule_initdb_upload(&self) {
        let path = self
            .dir
            .join(crate::remote_storage::index::INITDB_ARCHIVE_NAME);
        if let Some(queue) = &self.upload_queue
            && path.exists()
        {
            queue.schedule_file_upload(
                path,
                crate::remote_storage::index::initdb_path(self.tenant_id, self.timeline_id),
            );
        }
    }

    /// A layer this timeline just wrote, in its generation, with its remote copy's key.
    pub(crate) fn new_layer(&self, layer: Resident) -> HistoricLayer {
        let generation = self.resources.generation;
        let remote = self.remote_layer(&layer.name().to_string(), generation);
        let layer = HistoricLayer::resident(layer, generation, remote, false);
        if let Some(disk) = &self.resources.disk {
            disk.register(&layer);
        }
        layer
    }

    /// Where layer `name` of `generation` lives in remote storage; None without remote storage.
    pub(crate) fn remote_layer(&self, name: &str, generation: Generation) -> Option<RemoteLayer> {
        self.resources
            .remote_storage
            .as_ref()
            .map(|storage| RemoteLayer {
                storage: storage.clone(),
                path: crate::remote_storage::index::layer_path(
                    self.tenant_id,
                    self.timeline_id,
                    name,
                    generation,
                ),
            })
    }

    /// Freezes what the open layer holds and flushes everything frozen; if nothing was written since the last
    /// flush, still records last_record_lsn as disk-consistent (nothing above it is lost). Returns the new
    /// disk_consistent_lsn.
    pub async fn checkpoint(self: &Arc<Self>) -> Result<Lsn, FlushError> {
        {
            let writer = self.writer().await;
            writer.freeze();
            let last = self.last_record_lsn();
            let nothing_open = self
                .layers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .open
                .is_none();
            let flushed = self.flush_frozen_layers().await?;
            if nothing_open && last > flushed {
                let prev = self.prev_record_lsn();
                self.commit_metadata(|m| {
                    m.disk_consistent_lsn = last;
                    m.prev_record_lsn = prev;
                    record_lsn_time(m, last);
                })
                .await?;
                self.set_disk_consistent_lsn(last);
            }
            drop(writer);
        }
        Ok(self.disk_consistent_lsn())
    }

    /// Ends an import into a timeline made by `Tenant::create_timeline_for_import`: everything durable,
    /// `initdb_lsn` recorded, then the import marker removed (from here on a load keeps the timeline).
    pub async fn finish_import(self: &Arc<Self>, initdb_lsn: Lsn) -> Result<(), FlushError> {
        self.checkpoint().await?;
        self.commit_metadata(|m| m.initdb_lsn = initdb_lsn).await?;
        let marker = self.dir.join(crate::repository::tenant::IMPORTING_MARKER);
        let werr = |source| MetadataError::Write {
            path: marker.clone(),
            source,
        };
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(werr(e).into()),
        }
        crate::durable::fsync_dir(&self.dir).map_err(werr)?;
        Ok(())
    }

    /// The background flush loop: flushes when woken (a layer was frozen at checkpoint_distance) and freezes
    /// the open layer when it is older than checkpoint_timeout.
    pub async fn flush_loop(self: Arc<Self>) {
        loop {
            let timeout = self.conf().checkpoint_timeout.get();
            let tick = timeout.min(std::time::Duration::from_secs(1));
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.flush_wakeup.notified() => {}
                _ = tokio::time::sleep(tick) => {
                    crate::repository::layers::inmemory::release_idle_flush_buffer();
                    let old = self.layers.read().unwrap_or_else(|p| p.into_inner())
                        .open.as_ref().is_some_and(|l| !l.is_empty() && l.age() >= timeout);
                    if old {
                        let writer = self.writer().await;
                        writer.freeze();
                    }
                }
            }
            match self.flush_frozen_layers().await {
                Ok(_) => self.disk_full.clear(DiskFull::FLUSH),
                Err(e) => {
                    if !self.disk_full.check(DiskFull::FLUSH, &e.to_string()) {
                        warn!(error = %e, "flush failed; retrying in a second");
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn record_lsn_time(m: &mut TimelineMetadata, lsn: Lsn) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if m.lsn_times.last().is_none_or(|(t, _)| *t != now) {
        m.lsn_times.push((now, lsn));
    }
    if m.lsn_times.len() > MAX_LSN_TIMES {
        // Keep the oldest sample (the PITR window may reach back to it) and thin out the rest.
        let keep_first = m.lsn_times[0];
        m.lsn_times.drain(1..m.lsn_times.len() / 2);
        m.lsn_times[0] = keep_first;
    }
    if m.lsn_times.len() == 1 {
        info!(%lsn, "first LSN time sample");
    }
}
