//! The upload queue of one timeline: layer uploads, index uploads and remote deletions, in the order the
//! timeline's commits scheduled them (`Timeline::commit_layers` schedules, under its metadata lock: the new
//! layers, then the index of the committed metadata, then the deletion of the layers it no longer names).
//!
//! Invariants (tests/remote_storage_e2e.rs checks them on a real bucket after faults and kill -9):
//! 1. An uploaded index never names a layer that is not uploaded yet. An index upload starts only when every
//!    operation scheduled before it has finished, and the uploads of the layers it names were scheduled
//!    before it.
//! 2. A layer removed by compaction or GC is deleted remotely only after an index that no longer names it was
//!    uploaded: its deletion is scheduled after that index and starts only when the index is done. Deletions
//!    then go through the node's deletion queue, which runs them only after checking that no newer
//!    generation has attached the tenant (deletion_queue.rs).
//!
//! Consecutive layer uploads run in parallel (they are independent); consecutive index uploads are coalesced
//! (only the newest is sent: it supersedes the others). Every operation is retried until it succeeds, with
//! capped exponential backoff and jitter; failures are counted and the last one is kept for timeline detail,
//! marked permanent when a retry cannot cure it (credentials, a missing bucket). Ingest never waits for the
//! queue: it only appends to it.
//!
//! The queue is not persisted. At start the worker first reconciles: it reads the newest remote index, marks
//! the local layers it names as uploaded, and puts in front of the queue the uploads of the others and an
//! index of the metadata the timeline was loaded with. So a crash loses nothing but time.
//!
//! `remote_consistent_lsn` is the `disk_consistent_lsn` of the newest index uploaded: everything at or below
//! it is readable from remote storage alone.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::deletion_queue::DeletionQueue;
use super::index::{self, Generation, IndexPart};
use super::retry::{self, BACKGROUND};
use super::{ByteStream, GenericRemoteStorage, ListingMode, RemoteError, RemotePath};
use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;
use crate::repository::layer_map::HistoricLayer;
use crate::repository::layers::LayerError;
use crate::repository::metadata::TimelineMetadata;

/// Layer uploads of one timeline in flight at once.
const LAYER_UPLOAD_PARALLELISM: usize = 4;
const READ_CHUNK: usize = 1 << 20;

enum Op {
    UploadLayer(HistoricLayer),
    UploadIndex(Box<IndexPart>),
    /// A local file uploaded once as is, then removed (the initdb archive).
    UploadFile {
        path: PathBuf,
        to: RemotePath,
    },
    /// Layers (name, generation) no longer named by the index uploaded before this op.
    Delete(Vec<(String, Generation)>),
    Barrier(oneshot::Sender<()>),
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::UploadLayer(_) => "upload_layer",
            Op::UploadIndex(_) => "upload_index",
            Op::UploadFile { .. } => "upload_file",
            Op::Delete(_) => "delete",
            Op::Barrier(_) => "barrier",
        }
    }
}

/// The last failure of the queue, for timeline detail.
#[derive(Clone, Debug, Serialize)]
pub struct QueueError {
    pub op: &'static str,
    pub kind: &'static str,
    /// True when a retry cannot cure it (denied credentials, a missing bucket): an operator must act.
    pub permanent: bool,
    pub message: String,
    /// Unix seconds.
    pub at: u64,
}

/// What timeline detail shows of the queue.
#[derive(Clone, Debug, Serialize)]
pub struct QueueStatus {
    pub queued: usize,
    pub in_flight: usize,
    pub layers_uploaded: u64,
    pub bytes_uploaded: u64,
    pub indexes_uploaded: u64,
    pub failures: u64,
    pub last_error: Option<QueueError>,
    pub reconciled: bool,
}

struct Inner {
    ops: VecDeque<Op>,
    in_flight: usize,
    last_error: Option<QueueError>,
    reconciled: bool,
    /// What the worker reconciles at start (taken by it).
    initial: Option<(Vec<HistoricLayer>, TimelineMetadata)>,
}

pub struct UploadQueue {
    storage: GenericRemoteStorage,
    tenant_id: TenantId,
    timeline_id: TimelineId,
    generation: Generation,
    deletions: Arc<DeletionQueue>,
    inner: Mutex<Inner>,
    wakeup: Notify,
    remote_consistent_lsn: AtomicU64,
    layers_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    indexes_uploaded: AtomicU64,
    failures: AtomicU64,
}

impl UploadQueue {
    /// A queue that will reconcile `layers` (the timeline's layers when it was opened) and `metadata` with
    /// remote storage before anything else; `remote_lsn` is what the index the timeline was attached from
    /// (if any) says is remote already.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: GenericRemoteStorage,
        tenant_id: TenantId,
        timeline_id: TimelineId,
        generation: Generation,
        deletions: Arc<DeletionQueue>,
        layers: Vec<HistoricLayer>,
        metadata: TimelineMetadata,
        remote_lsn: Lsn,
    ) -> UploadQueue {
        UploadQueue {
            storage,
            tenant_id,
            timeline_id,
            generation,
            deletions,
            inner: Mutex::new(Inner {
                ops: VecDeque::new(),
                in_flight: 0,
                last_error: None,
                reconciled: false,
                initial: Some((layers, metadata)),
            }),
            wakeup: Notify::new(),
            remote_consistent_lsn: AtomicU64::new(remote_lsn.0),
            layers_uploaded: AtomicU64::new(0),
            bytes_uploaded: AtomicU64::new(0),
            indexes_uploaded: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, op: Op) {
        self.lock().ops.push_back(op);
        self.wakeup.notify_one();
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    pub fn schedule_layer_upload(&self, layer: HistoricLayer) {
        self.push(Op::UploadLayer(layer));
    }

    /// Schedules the index of `m`. An index that cannot be built (a layer without size) is skipped with a
    /// warning: the next commit schedules another.
    pub fn schedule_index_upload(&self, m: &TimelineMetadata) {
        match IndexPart::from_metadata(m) {
            Ok(index) => self.push(Op::UploadIndex(Box::new(index))),
            Err(e) => warn!(error = %e, "index not scheduled"),
        }
    }

    pub fn schedule_deletion(&self, layers: Vec<(String, Generation)>) {
        self.push(Op::Delete(layers));
    }

    pub fn schedule_file_upload(&self, path: PathBuf, to: RemotePath) {
        self.push(Op::UploadFile { path, to });
    }

    pub fn remote_consistent_lsn(&self) -> Lsn {
        Lsn(self.remote_consistent_lsn.load(Ordering::Acquire))
    }

    pub fn status(&self) -> QueueStatus {
        let inner = self.lock();
        QueueStatus {
            queued: inner.ops.len(),
            in_flight: inner.in_flight,
            layers_uploaded: self.layers_uploaded.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            indexes_uploaded: self.indexes_uploaded.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: inner.last_error.clone(),
            reconciled: inner.reconciled,
        }
    }

    /// Waits until everything scheduled before this call is done (or the queue stops: false).
    pub async fn wait_drained(&self, cancel: &CancellationToken) -> bool {
        let (tx, rx) = oneshot::channel();
        self.push(Op::Barrier(tx));
        tokio::select! {
            r = rx => r.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }

    fn note_error(&self, op: &'static str, e: &RemoteError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.lock().last_error = Some(QueueError {
            op,
            kind: e.kind(),
            permanent: !e.is_transient(),
            message: e.to_string(),
            at,
        });
    }

    /// Retries `f` until it succeeds or the queue stops; every error, permanent ones included, is retried
    /// (an operator may fix credentials; nothing is dropped meanwhile).
    async fn retry_forever<T, Fut>(
        &self,
        op: &'static str,
        what: &str,
        cancel: &CancellationToken,
        mut f: impl FnMut() -> Fut,
    ) -> Option<T>
    where
        Fut: Future<Output = Result<T, RemoteError>>,
    {
        loop {
            let r = retry::retry(
                what,
                BACKGROUND,
                None,
                cancel,
                |e| self.note_error(op, e),
                &mut f,
            )
            .await;
            match r {
                Ok(v) => return Some(v),
                Err(RemoteError::Cancelled) => return None,
                Err(e) => {
                    // Permanent: wait the longest backoff, then try again.
                    warn!(op, what, error = %e, "remote storage refuses the request; retrying later");
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(BACKGROUND.cap) => {}
                    }
                }
            }
        }
    }

    /// The worker: reconciles, then runs the queue until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let initial = self.lock().initial.take();
        if let Some((layers, metadata)) = initial
            && !self.reconcile(layers, metadata, &cancel).await
        {
            return;
        }
        self.lock().reconciled = true;
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.wakeup.notified() => continue,
                }
            }
            if !self.execute(batch, &cancel).await {
                return;
            }
            self.lock().in_flight = 0;
        }
    }

    /// The ops to run next: consecutive layer uploads together, consecutive indexes coalesced to the last,
    /// anything else alone.
    fn next_batch(&self) -> Vec<Op> {
        let mut inner = self.lock();
        let mut batch = Vec::new();
        match inner.ops.front() {
            None => {}
            Some(Op::UploadLayer(_)) => {
                while batch.len() < LAYER_UPLOAD_PARALLELISM
                    && matches!(inner.ops.front(), Some(Op::UploadLayer(_)))
                {
                    batch.extend(inner.ops.pop_front());
                }
            }
            Some(Op::UploadIndex(_)) => {
                while matches!(inner.ops.front(), Some(Op::UploadIndex(_))) {
                    batch.extend(inner.ops.pop_front());
                }
            }
            Some(_) => batch.extend(inner.ops.pop_front()),
        }
        inner.in_flight = batch.len();
        batch
    }

    /// Runs one batch; false if cancelled.
    async fn execute(&self, batch: Vec<Op>, cancel: &CancellationToken) -> bool {
        if batch.iter().all(|op| matches!(op, Op::UploadIndex(_))) && batch.len() > 1 {
            // Only the newest index matters.
            let newest = batch.into_iter().next_back();
            return match newest {
                Some(op) => self.execute_one(op, cancel).await,
                None => true,
            };
        }
        if batch.len() == 1 {
            let op = batch.into_iter().next();
            return match op {
                Some(op) => self.execute_one(op, cancel).await,
                None => true,
            };
        }
        let results =
            futures::future::join_all(batch.into_iter().map(|op| self.execute_one(op, cancel)))
                .await;
        results.into_iter().all(|ok| ok)
    }

    async fn execute_one(&self, op: Op, cancel: &CancellationToken) -> bool {
        let kind = op.kind();
        match op {
            Op::UploadLayer(layer) => self.upload_layer(&layer, cancel).await,
            Op::UploadIndex(index) => {
                crate::failpoint::hit("before-upload-index");
                let path = index::index_path(self.tenant_id, self.timeline_id, self.generation);
                let body = Bytes::from(index.to_json());
                let done = self
                    .retry_forever(kind, path.as_str(), cancel, || {
                        self.storage.upload_bytes(body.clone(), &path)
                    })
                    .await;
                if done.is_none() {
                    return false;
                }
                self.indexes_uploaded.fetch_add(1, Ordering::Relaxed);
                self.remote_consistent_lsn
                    .fetch_max(index.disk_consistent_lsn.0, Ordering::AcqRel);
                debug!(disk_consistent_lsn = %index.disk_consistent_lsn, layers = index.layer_metadata.len(), "index uploaded");
                true
            }
            Op::UploadFile { path, to } => {
                let done = self
                    .retry_forever(kind, to.as_str(), cancel, || async {
                        let data = tokio::fs::read(&path).await.map_err(|e| {
                            RemoteError::Permanent(format!("reading {}: {e}", path.display()))
                        })?;
                        self.storage.upload_bytes(Bytes::from(data), &to).await
                    })
                    .await;
                if done.is_some() {
                    let _ = std::fs::remove_file(&path);
                    info!(key = %to, "uploaded {}", path.display());
                }
                done.is_some()
            }
            Op::Delete(layers) => {
                let keys: Vec<RemotePath> = layers
                    .iter()
                    .map(|(name, generation)| {
                        index::layer_path(self.tenant_id, self.timeline_id, name, *generation)
                    })
                    .collect();
                let list = super::deletion_queue::DeletionList::new(
                    self.tenant_id,
                    self.timeline_id,
                    self.generation,
                    keys,
                );
                let deletions = self.deletions.clone();
                let done = self
                    .retry_forever(kind, "deletion list", cancel, || {
                        let deletions = deletions.clone();
                        let list = list.clone();
                        async move { deletions.push(list).await }
                    })
                    .await;
                done.is_some()
            }
            Op::Barrier(tx) => {
                let _ = tx.send(());
                true
            }
        }
    }

    async fn upload_layer(&self, layer: &HistoricLayer, cancel: &CancellationToken) -> bool {
        crate::failpoint::hit("before-upload-layer");
        let Some(resident) = layer.get_resident() else {
            // Only an uploaded layer is ever evicted: nothing to do.
            return true;
        };
        let path = index::layer_path(
            self.tenant_id,
            self.timeline_id,
            &layer.name().to_string(),
            layer.generation(),
        );
        let len = layer.file_size();
        // A damaged file is never uploaded: the queue stops here (a permanent error, retried now and then)
        // and remote_consistent_lsn with it, so the WAL source keeps the WAL to rebuild the layer from.
        let checked = resident.clone();
        let verified = tokio::task::spawn_blocking(move || checked.verify())
            .await
            .unwrap_or_else(|e| {
                Err(LayerError::Corrupt {
                    path: layer.path().to_path_buf(),
                    msg: format!("verification panicked: {e}"),
                })
            });
        if let Err(e) = verified {
            if layer.mark_damaged() {
                crate::metrics::LAYER_DAMAGED.inc();
            }
            tracing::error!(layer = %layer.name(), "{e}; not uploaded: detach and attach the tenant to rebuild it from remote storage and the WAL source");
            let msg = format!("{e}; the layer is not uploaded");
            self.retry_forever("upload_layer", path.as_str(), cancel, || {
                let msg = msg.clone();
                async move { Err::<(), _>(RemoteError::Permanent(msg)) }
            })
            .await;
            return false;
        }
        let done = self
            .retry_forever("upload_layer", path.as_str(), cancel, || async {
                let file = resident.file_handle().map_err(|e| {
                    RemoteError::Permanent(format!("{}: {e}", layer.path().display()))
                })?;
                self.storage
                    .upload(file_stream(file, len), len, &path)
                    .await
            })
            .await;
        if done.is_none() {
            return false;
        }
        layer.set_uploaded();
        self.layers_uploaded.fetch_add(1, Ordering::Relaxed);
        self.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
        true
    }

    /// Reads the newest remote index; marks the layers it holds as uploaded; queues (in front) the uploads
    /// of the others and an index of `metadata`. False if cancelled.
    async fn reconcile(
        &self,
        layers: Vec<HistoricLayer>,
        metadata: TimelineMetadata,
        cancel: &CancellationToken,
    ) -> bool {
        let Some(remote) = self
            .retry_forever("reconcile", "newest index", cancel, || {
                download_newest_index(
                    &self.storage,
                    self.tenant_id,
                    self.timeline_id,
                    self.generation,
                )
            })
            .await
        else {
            return false;
        };
        let mut front = Vec::new();
        let mut missing = 0;
        for layer in layers {
            let name = layer.name().to_string();
            let there = remote.as_ref().is_some_and(|(_, idx)| {
                idx.layer_metadata.get(&name).is_some_and(|m| {
                    m.file_size == layer.file_size() && m.generation == layer.generation()
                })
            });
            if there {
                layer.set_uploaded();
            } else if !layer.is_uploaded() {
                missing += 1;
                front.push(Op::UploadLayer(layer));
            }
        }
        let remote_lsn = remote
            .as_ref()
            .map_or(Lsn(0), |(_, idx)| idx.disk_consistent_lsn);
        self.remote_consistent_lsn
            .fetch_max(remote_lsn.0, Ordering::AcqRel);
        let stale = remote.as_ref().is_none_or(|(g, idx)| {
            *g != self.generation || idx.disk_consistent_lsn < metadata.disk_consistent_lsn
        });
        if (missing > 0 || stale)
            && let Ok(index) = IndexPart::from_metadata(&metadata)
            && index.validate(self.timeline_id).is_ok()
        {
            front.push(Op::UploadIndex(Box::new(index)));
        }
        info!(
            remote_index = ?remote.as_ref().map(|(g, idx)| (g.0, idx.disk_consistent_lsn)),
            layers_to_upload = missing,
            "upload queue reconciled with remote storage"
        );
        let mut inner = self.lock();
        for op in front.into_iter().rev() {
            inner.ops.push_front(op);
        }
        true
    }
}

/// A local file as an upload body, read in chunks off the async workers.
pub fn file_stream(file: std::fs::File, len: u64) -> ByteStream {
    let file = Arc::new(file);
    Box::pin(futures::stream::unfold(0u64, move |offset| {
        let file = file.clone();
        async move {
            if offset >= len {
                return None;
            }
            let want = (len - offset).min(READ_CHUNK as u64) as usize;
            let r = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; want];
                file.read_exact_at(&mut buf, offset).map(|()| buf)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            Some(match r {
                Ok(buf) => (Ok(Bytes::from(buf)), offset + want as u64),
                Err(e) => (Err(e), len),
            })
        }
    }))
}

/// The generations of the indexes of one timeline in remote storage.
pub async fn index_generations(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
) -> Result<Vec<Generation>, RemoteError> {
    let prefix = format!(
        "{}{}",
        index::timeline_prefix(tenant, timeline),
        index::INDEX_PART_NAME
    );
    let listing = storage
        .list(Some(&prefix), ListingMode::NoDelimiter)
        .await?;
    Ok(listing
        .keys
        .iter()
        .filter_map(|o| Generation::parse_suffix(o.key.object_name(), index::INDEX_PART_NAME))
        .collect())
}

/// The newest index of a timeline at or below generation `mine`, with its generation; None if it has none.
pub async fn download_newest_index(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
    mine: Generation,
) -> Result<Option<(Generation, IndexPart)>, RemoteError> {
    let generations = index_generations(storage, tenant, timeline).await?;
    let Some(g) = generations.into_iter().filter(|g| *g <= mine).max() else {
        return Ok(None);
    };
    let data = storage
        .download_bytes(
            &index::index_path(tenant, timeline, g),
            super::ByteRange::ALL,
        )
        .await?;
    let index =
        IndexPart::from_json(&data, timeline).map_err(|e| RemoteError::Permanent(e.to_string()))?;
    Ok(Some((g, index)))
}
