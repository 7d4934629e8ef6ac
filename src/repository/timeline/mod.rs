//! A timeline: one branch of a tenant's history, its layers and positions.
//!
//! Positions, each non-decreasing: `last_record_lsn` (everything up to it is readable), `disk_consistent_lsn`
//! (everything up to it is in durable layer files, so a restart loses nothing at or below it), the applied GC
//! cutoff (reads below it are refused). Invariants: disk_consistent_lsn <= last_record_lsn; a branch starts
//! at an LSN no later than its parent's last_record_lsn and reads at or below it through the parent.
//!
//! Writes come from one writer ([`Timeline::writer`]): values at LSNs above last_record_lsn go to the open
//! in-memory layer, then `finish_write` makes them readable. Reads ([`read`]) search the layers newest first
//! and rebuild pages with WAL redo. Flush, compaction and GC are in `tasks/`.

mod read;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use read::GetError;
pub use write::{MAX_FROZEN_LAYERS, PutError, TimelineWriter};

use crate::config::TenantConfig;
use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;
use crate::remote_storage::GenericRemoteStorage;
use crate::remote_storage::deletion_queue::DeletionQueue;
use crate::remote_storage::index::Generation;
use crate::remote_storage::upload_queue::UploadQueue;
use crate::repository::layer_map::LayerMap;
use crate::repository::metadata::TimelineMetadata;
use crate::repository::page_cache::PageCache;
use crate::wal_archive::{ArchiveStore, WalArchive};
use crate::walredo::RedoManager;

/// What a timeline shares with its tenant.
#[derive(Clone)]
pub struct TimelineResources {
    pub tenant_id: TenantId,
    pub conf: Arc<RwLock<TenantConfig>>,
    pub redo: Arc<dyn RedoManager>,
    pub page_cache: Arc<PageCache>,
    /// Remote storage, when configured; with it, the generation of this attachment and the node's deletion
    /// queue.
    pub remote_storage: Option<GenericRemoteStorage>,
    pub generation: Generation,
    pub deletions: Option<Arc<DeletionQueue>>,
    /// The node's limit on resident layer bytes (`disk_usage_max_bytes`), when set.
    pub disk: Option<Arc<crate::repository::eviction::DiskBudget>>,
}

pub struct Timeline {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// The PostgreSQL version of the timeline's WAL and pages (its metadata's `pg_version`).
    pub pg_version: crate::pg::PgVersion,
    pub(crate) dir: PathBuf,
    pub(crate) resources: TimelineResources,
    pub(crate) ancestor: Option<(Arc<Timeline>, Lsn)>,
    pub(crate) layers: RwLock<LayerMap>,
    /// Relation sizes known to hold from an LSN up to last_record_lsn (datadir.rs, `rel_size`).
    pub(crate) rel_size_cache:
        RwLock<std::collections::HashMap<crate::repository::Key, (Lsn, u32)>>,
    last_record_lsn: watch::Sender<Lsn>,
    prev_record_lsn: Mutex<Option<Lsn>>,
    disk_consistent_lsn: AtomicU64,
    gc_cutoff: AtomicU64,
    /// The durable metadata, as last written.
    pub(crate) metadata: Mutex<TimelineMetadata>,
    /// Serializes metadata rewrites (flush, compaction, GC).
    pub(crate) metadata_write: tokio::sync::Mutex<()>,
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    /// One flush at a time: the flush task and a checkpoint would otherwise write the same frozen layer.
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    /// Compaction and GC both replace layers; they take turns.
    pub(crate) layer_rewrite: tokio::sync::Mutex<()>,
    /// Wakes the flush task.
    pub(crate) flush_wakeup: tokio::sync::Notify,
    /// Signalled after each completed flush.
    pub(crate) flushed: watch::Sender<Lsn>,
    pub cancel: CancellationToken,
    /// WAL records and bytes ingested since this process loaded the timeline (metrics: the ingest rate).
    pub ingested_records: AtomicU64,
    pub ingested_wal_bytes: AtomicU64,
    /// Uploads to remote storage, when configured.
    pub upload_queue: Option<Arc<UploadQueue>>,
    /// The archive of the WAL this timeline receives (in remote storage, else in the workdir); None only if
    /// its local directory cannot be made.
    pub wal_archive: Option<Arc<WalArchive>>,
    /// Set while a recovery writes into this timeline, or after one failed: reads are refused.
    pub(crate) recovery: Mutex<Option<crate::repository::metadata::RecoveryMark>>,
    /// Set while ingest is stopped by a full disk.
    pub disk_full: DiskFull,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("tenant", &self.tenant_id)
            .field("timeline", &self.timeline_id)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WaitLsnError {
    #[error("timed out after {timeout:?} waiting for WAL up to {lsn}; last record is at {last}")]
    Timeout {
        lsn: Lsn,
        last: Lsn,
        timeout: Duration,
    },
    #[error("timeline is shutting down")]
    ShuttingDown,
}

/// Why ingest of a timeline is stopped by a full disk (docs/operations.md: disk full): which writers hit
/// ENOSPC or EDQUOT and have not written since, and the last such error. Each writer clears its own bit when
/// it writes again, so ingest shows stalled until both the receiver and the flush go through.
#[derive(Default)]
pub struct DiskFull {
    writers: std::sync::atomic::AtomicU8,
    last_error: Mutex<Option<String>>,
}

impl DiskFull {
    /// The WAL receiver (the ephemeral file of the in-memory layer, the WAL archive spool).
    pub const INGEST: u8 = 1;
    /// The flush of frozen in-memory layers to layer files and metadata.
    pub const FLUSH: u8 = 2;

    /// `writer` failed with `error`; true if that is a full disk (then recorded and counted).
    pub fn check(&self, writer: u8, error: &str) -> bool {
        if !crate::durable::mentions_disk_full(error) {
            return false;
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
        let before = self.writers.fetch_or(writer, Ordering::AcqRel);
        crate::metrics::DISK_FULL_ERRORS.inc();
        if before == 0 {
            tracing::error!(%error, "disk full: ingest stopped; it resumes by itself when space returns");
        }
        true
    }

    /// `writer` wrote again.
    pub fn clear(&self, writer: u8) {
        if self.writers.load(Ordering::Acquire) & writer == 0 {
            return;
        }
        let before = self.writers.fetch_and(!writer, Ordering::AcqRel);
        if before != 0 && before & !writer == 0 {
            tracing::info!("space returned: ingest resumed");
        }
    }

    /// "disk full: <last error>" while any writer is stopped by a full disk.
    pub fn state(&self) -> Option<String> {
        if self.writers.load(Ordering::Acquire) == 0 {
            return None;
        }
        let last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        Some(format!("disk full: {}", last.as_deref().unwrap_or("")))
    }
}

impl Timeline {
    /// A timeline object for loaded or new metadata; `layers` are its historic layers, opened; `pg_version`
    /// is the metadata's, checked by the caller.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a distinct part the tenant has already opened or checked"
    )]
    pub(crate) fn new(
        timeline_id: TimelineId,
        dir: &Path,
        resources: TimelineResources,
        ancestor: Option<(Arc<Timeline>, Lsn)>,
        pg_version: crate::pg::PgVersion,
        metadata: TimelineMetadata,
        layers: LayerMap,
        cancel: CancellationToken,
    ) -> Timeline {
        let disk = metadata.disk_consistent_lsn;
        let upload_queue = match (&resources.remote_storage, &resources.deletions) {
            (Some(storage), Some(deletions)) => Some(Arc::new(UploadQueue::new(
                storage.clone(),
                resources.tenant_id,
                timeline_id,
                resources.generation,
                deletions.clone(),
                layers.historic.clone(),
                metadata.clone(),
                Lsn(0),
            ))),
            _ => None,
        };
        let wal_archive = archive_store(&resources, timeline_id, dir).map(|store| {
            Arc::new(WalArchive::new(
                resources.tenant_id,
                timeline_id,
                store,
                resources.generation,
                dir,
                metadata.pg_version,
                resources.conf.clone(),
            ))
        });
        let recovery = metadata.recovery.clone();
        Timeline {
            tenant_id: resources.tenant_id,
            timeline_id,
            pg_version,
            dir: dir.to_path_buf(),
            resources,
            ancestor,
            layers: RwLock::new(layers),
            rel_size_cache: RwLock::default(),
            last_record_lsn: watch::Sender::new(disk),
            prev_record_lsn: Mutex::new(metadata.prev_record_lsn),
            disk_consistent_lsn: AtomicU64::new(disk.0),
            gc_cutoff: AtomicU64::new(metadata.latest_gc_cutoff_lsn.0),
            metadata: Mutex::new(metadata),
            metadata_write: tokio::sync::Mutex::new(()),
            write_lock: tokio::sync::Mutex::new(()),
            layer_rewrite: tokio::sync::Mutex::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_wakeup: tokio::sync::Notify::new(),
            flushed: watch::Sender::new(disk),
            cancel,
            ingested_records: AtomicU64::new(0),
            ingested_wal_bytes: AtomicU64::new(0),
            upload_queue,
            wal_archive,
            recovery: Mutex::new(recovery),
            disk_full: DiskFull::default(),
        }
    }

    /// Why reads of this timeline are refused, if they are: a recovery is writing into it, or one failed.
    pub fn not_serving(&self) -> Option<String> {
        let mark = self.recovery.lock().unwrap_or_else(|p| p.into_inner());
        mark.as_ref().map(|m| m.describe())
    }

    /// After a download: keeps the node's resident layers within its disk budget (never evicting `layer`).
    pub(crate) fn after_download(&self, layer: &crate::repository::layer_map::HistoricLayer) {
        if let Some(disk) = &self.resources.disk {
            disk.enforce(Some(layer));
        }
    }

    /// A read or a compaction found `file` of `layer` damaged (`err`, which names it): counted and logged once
    /// per file; with a remote copy the local file is dropped and true returned (read again to download it).
    pub(crate) fn layer_damaged(
        &self,
        layer: &crate::repository::layer_map::HistoricLayer,
        file: &crate::repository::layer_map::Resident,
        err: &crate::repository::layers::LayerError,
    ) -> bool {
        let first = layer.mark_damaged();
        let replace = layer.discard_damaged(file);
        if first {
            crate::metrics::LAYER_DAMAGED.inc();
            if replace {
                tracing::error!(tenant_id = %self.resources.tenant_id, timeline_id = %self.timeline_id, "{err}; the file is removed and the remote copy downloaded");
            } else {
                tracing::error!(tenant_id = %self.resources.tenant_id, timeline_id = %self.timeline_id, "{err}; no remote copy: reads that need this layer fail until it is restored");
            }
        }
        replace
    }

    /// The `disk_consistent_lsn` of the newest index in remote storage; None without remote storage.
    pub fn remote_consistent_lsn(&self) -> Option<Lsn> {
        self.upload_queue
            .as_ref()
            .map(|q| q.remote_consistent_lsn())
    }

    /// What the WAL source may let go of (docs/remote-storage.md, docs/wal-archive.md): disk_consistent_lsn;
    /// with remote storage no more than remote_consistent_lsn, so that losing the whole workdir loses nothing
    /// the source dropped; and no more than the durable end of the WAL archive.
    pub fn feedback_flush_lsn(&self) -> Lsn {
        let mut lsn = self.disk_consistent_lsn();
        if let Some(remote) = self.remote_consistent_lsn() {
            lsn = lsn.min(remote);
        }
        if let Some(archived) = self.wal_archive.as_ref().and_then(|a| a.durable_lsn()) {
            lsn = lsn.min(archived);
        }
        lsn
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn last_record_lsn(&self) -> Lsn {
        *self.last_record_lsn.borrow()
    }

    /// Start of the record that ends at last_record_lsn, if known.
    pub fn prev_record_lsn(&self) -> Option<Lsn> {
        *self
            .prev_record_lsn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn disk_consistent_lsn(&self) -> Lsn {
        Lsn(self.disk_consistent_lsn.load(Ordering::Acquire))
    }

    pub(crate) fn set_disk_consistent_lsn(&self, lsn: Lsn) {
        self.disk_consistent_lsn.fetch_max(lsn.0, Ordering::AcqRel);
        self.flushed.send_replace(lsn);
    }

    pub fn gc_cutoff(&self) -> Lsn {
        Lsn(self.gc_cutoff.load(Ordering::Acquire))
    }

    pub(crate) fn set_gc_cutoff(&self, lsn: Lsn) {
        self.gc_cutoff.fetch_max(lsn.0, Ordering::AcqRel);
    }

    pub fn ancestor(&self) -> Option<(TimelineId, Lsn)> {
        self.ancestor.as_ref().map(|(t, lsn)| (t.timeline_id, *lsn))
    }

    pub fn metadata(&self) -> TimelineMetadata {
        self.metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn conf(&self) -> TenantConfig {
        self.resources
            .conf
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sum of the sizes of the layer files.
    pub fn physical_size(&self) -> u64 {
        self.layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .historic
            .iter()
            .map(|h| h.file_size())
            .sum()
    }

    /// Waits until last_record_lsn reaches `lsn`.
    pub async fn wait_lsn(&self, lsn: Lsn, timeout: Duration) -> Result<(), WaitLsnError> {
        let mut rx = self.last_record_lsn.subscribe();
        let wait = rx.wait_for(|last| *last >= lsn);
        tokio::select! {
            r = tokio::time::timeout(timeout, wait) => match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(WaitLsnError::ShuttingDown),
                Err(_) => Err(WaitLsnError::Timeout { lsn, last: self.last_record_lsn(), timeout }),
            },
            _ = self.cancel.cancelled() => Err(WaitLsnError::ShuttingDown),
        }
    }

    pub(crate) fn advance_last_record_lsn(&self, lsn: Lsn, prev: Option<Lsn>) {
        *self
            .prev_record_lsn
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = prev;
        self.last_record_lsn.send_if_modified(|cur| {
            if lsn > *cur {
                *cur = lsn;
                true
            } else {
                false
            }
        });
    }
}

/// The archive's store: the node's remote storage, or the tenant directory (the same keys below it) without.
fn archive_store(
    resources: &TimelineResources,
    timeline_id: TimelineId,
    dir: &Path,
) -> Option<ArchiveStore> {
    use crate::remote_storage::index::timeline_prefix;
    if let Some(remote) = &resources.remote_storage {
        return Some(ArchiveStore::remote(
            remote.clone(),
            &timeline_prefix(resources.tenant_id, timeline_id),
        ));
    }
    // `<tenant dir>/timelines/<id>`: the tenant directory is two levels up.
    let tenant_dir = dir.parent()?.parent()?;
    match ArchiveStore::workdir(tenant_dir, &format!("timelines/{timeline_id}/")) {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::warn!(timeline_id = %timeline_id, error = %e, "no WAL archive: its directory cannot be made");
            None
        }
    }
}
