//! A tenant: a directory of timelines sharing a config, a WAL redo manager and the page cache.
//!
//! Layout: `<tenant dir>/timelines/<timeline id>/{metadata, <layer files>}`. Creating a timeline writes its
//! metadata before it is visible; loading one opens the layers its metadata names and deletes every other
//! file there (temp files, ephemeral files, layers of an interrupted flush, compaction or GC). Ancestors are
//! loaded before their branches. Each timeline runs a flush, a compaction and a GC task until shutdown.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::TenantConfig;
use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;
use crate::pg::PgVersion;
use crate::remote_storage::GenericRemoteStorage;
use crate::remote_storage::deletion_queue::DeletionQueue;
use crate::remote_storage::index::Generation;
use crate::repository::layer_map::{HistoricLayer, LayerMap, RemoteLayer, Resident};
use crate::repository::layers::delta::DeltaLayer;
use crate::repository::layers::image::ImageLayer;
use crate::repository::layers::{LayerError, LayerName};
use crate::repository::metadata::{
    LayerFileMeta, METADATA_FILE, MetadataError, TimelineMetadata, fsync_dir,
};
use crate::repository::page_cache::PageCache;
use crate::repository::timeline::{Timeline, TimelineResources};
use crate::walredo::RedoManager;

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("the tenant is being detached or shut down")]
    ShuttingDown,
    #[error("timeline {0} already exists")]
    TimelineExists(TimelineId),
    #[error("timeline {0} not found")]
    TimelineNotFound(TimelineId),
    #[error("branch point {lsn} is above the last record {last} of timeline {ancestor}")]
    BranchAboveLast {
        ancestor: TimelineId,
        lsn: Lsn,
        last: Lsn,
    },
    #[error("branch point {lsn} is below the GC cutoff {cutoff} of timeline {ancestor}")]
    BranchBelowGcCutoff {
        ancestor: TimelineId,
        lsn: Lsn,
        cutoff: Lsn,
    },
    #[error("cannot flush the ancestor before branching: {0}")]
    Flush(String),
    #[error("timeline {0} has child timelines")]
    HasChildren(TimelineId),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("timeline {timeline}: its ancestor {ancestor} is missing")]
    MissingAncestor {
        timeline: TimelineId,
        ancestor: TimelineId,
    },
    #[error("remote storage: {0}")]
    Remote(#[from] crate::remote_storage::RemoteError),
    #[error("timeline {timeline}: {source}")]
    UnsupportedVersion {
        timeline: TimelineId,
        source: crate::pg::version::UnsupportedVersion,
    },
}

/// What a tenant uses of remote storage: the storage, the generation of this attachment, the node's
/// deletion queue.
#[derive(Clone)]
pub struct TenantRemote {
    pub storage: GenericRemoteStorage,
    pub generation: Generation,
    pub deletions: Arc<DeletionQueue>,
    pub disk: Option<Arc<crate::repository::eviction::DiskBudget>>,
}

/// Suffixes of a timeline or tenant directory being created (renamed into place when complete) and being
/// deleted (renamed away first, then removed); a load removes both.
pub const TEMP_SUFFIX: &str = ".___temp";
pub const DELETED_SUFFIX: &str = ".___deleted";

/// In a timeline directory: the import that fills the timeline has not finished.
pub const IMPORTING_MARKER: &str = "importing";

pub struct Tenant {
    pub id: TenantId,
    dir: PathBuf,
    resources: TimelineResources,
    timelines: Timelines,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Background compaction and GC (off in tests that drive them by hand).
    background: bool,
    /// Temp files and layers found at load that no metadata named (left by interrupted flushes, compactions
    /// or GCs), removed. Ephemeral files of in-memory layers are not counted.
    leftovers_removed: std::sync::atomic::AtomicUsize,
    /// Recoveries and scrubs (docs/wal-archive.md).
    pub jobs: crate::recover::Jobs,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TenantError + '_ {
    move |source| TenantError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Tenant {
    /// Opens the tenant at `dir` (created if missing), loading every timeline found there.
    pub async fn load(
        id: TenantId,
        dir: &Path,
        conf: TenantConfig,
        redo: Arc<dyn RedoManager>,
        page_cache: Arc<PageCache>,
        background: bool,
    ) -> Result<Arc<Tenant>, TenantError> {
        Self::load_with_remote(id, dir, conf, redo, page_cache, background, None).await
    }

    /// [`load`](Self::load) with remote storage: a tenant without local timelines first gets those in remote
    /// storage (their metadata from their indexes; layers are downloaded when first read).
    pub async fn load_with_remote(
        id: TenantId,
        dir: &Path,
        conf: TenantConfig,
        redo: Arc<dyn RedoManager>,
        page_cache: Arc<PageCache>,
        background: bool,
        remote: Option<TenantRemote>,
    ) -> Result<Arc<Tenant>, TenantError> {
        let timelines_dir = dir.join("timelines");
        std::fs::create_dir_all(&timelines_dir).map_err(io_err(&timelines_dir))?;
        remove_temp_files(dir)?;
        if let Some(r) = &remote
            && !has_timelines(&timelines_dir)?
        {
            // Boxed: remote storage futures are deep, and so are the callers of a load.
            Box::pin(attach_from_remote(id, r, &timelines_dir)).await?;
        }
        let tenant = Arc::new(Tenant {
            id,
            dir: dir.to_path_buf(),
            resources: TimelineResources {
                tenant_id: id,
                conf: Arc::new(RwLock::new(conf)),
                redo,
                page_cache,
                remote_storage: remote.as_ref().map(|r| r.storage.clone()),
                generation: remote.as_ref().map_or(Generation::NONE, |r| r.generation),
                deletions: remote.as_ref().map(|r| r.deletions.clone()),
                disk: remote.as_ref().and_then(|r| r.disk.clone()),
            },
            timelines: Arc::new(Mutex::new(HashMap::new())),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            background,
            leftovers_removed: std::sync::atomic::AtomicUsize::new(0),
            jobs: crate::recover::Jobs::default(),
        });
        if background {
            tenant.tasks.spawn(crate::recover::periodic::run(
                tenant.clone(),
                tenant.cancel.clone(),
            ));
        }
        if let Err(e) = tenant.load_timelines(&timelines_dir) {
            // Stop the tasks of the timelines opened before the failure: a broken tenant runs nothing.
            tenant.shutdown(false).await;
            return Err(e);
        }
        info!(tenant = %id, timelines = tenant.timelines.lock().unwrap_or_else(|p| p.into_inner()).len(), "tenant loaded");
        Ok(tenant)
    }

    /// Opens every timeline under `timelines_dir`, ancestors first. Removes what interrupted operations left:
    /// directories of a create (`<id>.___temp`) or delete (`<id>.___deleted`), a timeline directory without
    /// metadata, and a timeline whose import never finished (it still holds [`IMPORTING_MARKER`]).
    fn load_timelines(&self, timelines_dir: &Path) -> Result<(), TenantError> {
        let mut pending: Vec<(TimelineId, TimelineMetadata)> = Vec::new();
        for entry in std::fs::read_dir(timelines_dir).map_err(io_err(timelines_dir))? {
            let entry = entry.map_err(io_err(timelines_dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(TEMP_SUFFIX) || name.ends_with(DELETED_SUFFIX) {
                warn!(dir = %name, "removing the directory of an interrupted timeline create or delete");
                std::fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
                continue;
            }
            let Ok(tl_id) = name.parse::<TimelineId>() else {
                continue;
            };
            if !entry.path().join(METADATA_FILE).exists() {
                // Creation never finished: no metadata was committed.
                warn!(timeline = %tl_id, "removing a timeline directory without metadata");
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            if entry.path().join(IMPORTING_MARKER).exists() {
                warn!(timeline = %tl_id, "removing a timeline whose import was interrupted");
                std::fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
                continue;
            }
            pending.push((tl_id, TimelineMetadata::load(&entry.path())?));
        }
        // Ancestors first.
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|(_, m)| m.ancestor_timeline.is_none_or(|a| self.timeline(a).is_ok()));
            let Some(i) = ready else {
                let (timeline, m) = &pending[0];
                return Err(TenantError::MissingAncestor {
                    timeline: *timeline,
                    ancestor: m.ancestor_timeline.unwrap_or(*timeline),
                });
            };
            let (tl_id, metadata) = pending.swap_remove(i);
            self.open_timeline(tl_id, metadata)?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many leftover files of interrupted operations the load removed.
    pub fn leftovers_removed(&self) -> usize {
        self.leftovers_removed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn conf(&self) -> TenantConfig {
        self.resources
            .conf
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_conf(&self, conf: TenantConfig) {
        *self
            .resources
            .conf
            .write()
            .unwrap_or_else(|p| p.into_inner()) = conf;
    }

    pub fn timeline_dir(&self, id: TimelineId) -> PathBuf {
        self.dir.join("timelines").join(id.to_string())
    }

    pub fn timeline(&self, id: TimelineId) -> Result<Arc<Timeline>, TenantError> {
        self.timelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or(TenantError::TimelineNotFound(id))
    }

    pub fn timelines(&self) -> Vec<Arc<Timeline>> {
        let mut v: Vec<_> = self
            .timelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|t| t.timeline_id);
        v
    }

    /// Branch points of the children of `id`.
    pub fn branch_points(&self, id: TimelineId) -> Vec<Lsn> {
        branch_points_of(&self.timelines, id)
    }

    /// A new, empty timeline whose history starts at `start_lsn` (e.g. the end of an imported initdb).
    pub async fn create_timeline(
        &self,
        id: TimelineId,
        start_lsn: Lsn,
        pg_version: PgVersion,
    ) -> Result<Arc<Timeline>, TenantError> {
        self.create(
            id,
            TimelineMetadata::new(start_lsn, None, start_lsn, pg_version.major()),
        )
        .await
    }

    /// A new, empty timeline that an import (a base backup, an initdb directory) fills; until
    /// [`Timeline::finish_import`] it holds [`IMPORTING_MARKER`], and a load after a crash removes it.
    pub async fn create_timeline_for_import(
        &self,
        id: TimelineId,
        pg_version: PgVersion,
    ) -> Result<Arc<Timeline>, TenantError> {
        let meta = TimelineMetadata::new(Lsn(0), None, Lsn(0), pg_version.major());
        self.create_with(id, meta, true).await
    }

    /// A branch of `ancestor` at `lsn` (its last record when None).
    pub async fn branch_timeline(
        &self,
        id: TimelineId,
        ancestor: TimelineId,
        lsn: Option<Lsn>,
    ) -> Result<Arc<Timeline>, TenantError> {
        let parent = self.timeline(ancestor)?;
        let last = parent.last_record_lsn();
        let lsn = lsn.unwrap_or(last);
        if lsn > last {
            return Err(TenantError::BranchAboveLast {
                ancestor,
                lsn,
                last,
            });
        }
        let cutoff = parent.gc_cutoff();
        if lsn < cutoff {
            return Err(TenantError::BranchBelowGcCutoff {
                ancestor,
                lsn,
                cutoff,
            });
        }
        // The branch point must survive a crash of the parent: make it durable first.
        if lsn > parent.disk_consistent_lsn()
            && let Err(e) = parent.checkpoint().await
        {
            return Err(TenantError::Flush(e.to_string()));
        }
        let parent_meta = parent.metadata();
        let mut meta = TimelineMetadata::new(
            lsn,
            Some((ancestor, lsn)),
            parent_meta.initdb_lsn,
            parent_meta.pg_version,
        );
        meta.latest_gc_cutoff_lsn = cutoff;
        meta.prev_record_lsn = if lsn == last {
            parent.prev_record_lsn()
        } else {
            None
        };
        self.create(id, meta).await
    }

    async fn create(
        &self,
        id: TimelineId,
        meta: TimelineMetadata,
    ) -> Result<Arc<Timeline>, TenantError> {
        self.create_with(id, meta, false).await
    }

    async fn create_with(
        &self,
        id: TimelineId,
        meta: TimelineMetadata,
        importing: bool,
    ) -> Result<Arc<Timeline>, TenantError> {
        // A detach or shutdown has begun: a timeline made now would outlive its tenant. One made just
        // after this check gets a cancelled token and refuses writes (PutError::ShuttingDown).
        if self.cancel.is_cancelled() {
            return Err(TenantError::ShuttingDown);
        }
        if self
            .timelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
        {
            return Err(TenantError::TimelineExists(id));
        }
        let dir = self.timeline_dir(id);
        if dir.exists() {
            return Err(TenantError::TimelineExists(id));
        }
        let tmp = self
            .dir
            .join("timelines")
            .join(format!("{id}{TEMP_SUFFIX}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        if importing {
            let marker = tmp.join(IMPORTING_MARKER);
            std::fs::File::create(&marker).map_err(io_err(&marker))?;
        }
        meta.save(&tmp)?;
        std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        fsync_dir(&self.dir.join("timelines")).map_err(io_err(&dir))?;
        self.open_timeline(id, meta)
    }

    fn open_timeline(
        &self,
        id: TimelineId,
        meta: TimelineMetadata,
    ) -> Result<Arc<Timeline>, TenantError> {
        let dir = self.timeline_dir(id);
        let ancestor = match meta.ancestor_timeline {
            Some(a) => Some((self.timeline(a)?, meta.ancestor_lsn)),
            None => None,
        };
        let mut map = LayerMap::default();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let fname = entry.file_name().to_string_lossy().to_string();
            if fname == METADATA_FILE
                || fname == IMPORTING_MARKER
                || fname == crate::remote_storage::index::INITDB_ARCHIVE_NAME
                || fname == crate::wal_archive::SPOOL_DIR
                || fname == "wal"
            {
                continue;
            }
            if !meta.layers.contains(&fname) {
                // Left by an interrupted operation: a temp or ephemeral file, or a layer never committed.
                info!(timeline = %id, file = %fname, "removing a file the metadata does not name");
                let _ = std::fs::remove_file(entry.path());
                if !fname.starts_with(crate::repository::layers::inmemory::EPHEMERAL_PREFIX) {
                    self.leftovers_removed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                continue;
            }
        }
        let mut meta = meta;
        for name in meta.layers.clone() {
            let layer = self.open_layer(id, &dir, &name, &meta)?;
            if let Some(disk) = &self.resources.disk {
                disk.register(&layer);
            }
            meta.layer_meta.entry(name).or_insert(LayerFileMeta {
                file_size: layer.file_size(),
                generation: layer.generation().0,
            });
            map.historic.push(layer);
        }
        let pg_version = PgVersion::from_major(meta.pg_version).map_err(|source| {
            TenantError::UnsupportedVersion {
                timeline: id,
                source,
            }
        })?;
        let timeline = Arc::new(Timeline::new(
            id,
            &dir,
            self.resources.clone(),
            ancestor,
            pg_version,
            meta,
            map,
            self.cancel.child_token(),
        ));
        self.timelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, timeline.clone());
        self.spawn_tasks(&timeline);
        // An initdb archive left by a crash before its upload.
        timeline.schedule_initdb_upload();
        Ok(timeline)
    }

    /// Layer `name` of timeline `id`: open if its file is here, else (with remote storage and a known size)
    /// evicted, to be downloaded when read. A local file of the wrong size is a torn download or copy: with
    /// remote storage it is removed and downloaded again; without, the layer is missing.
    fn open_layer(
        &self,
        id: TimelineId,
        dir: &Path,
        name: &str,
        meta: &TimelineMetadata,
    ) -> Result<HistoricLayer, TenantError> {
        let path = dir.join(name);
        let parsed: LayerName = name.parse().map_err(|_| {
            TenantError::Metadata(MetadataError::Corrupt {
                path: dir.join(METADATA_FILE),
                msg: format!("names {name:?}, which is not a layer file name"),
            })
        })?;
        let known = meta.layer_meta.get(name).copied();
        let generation = Generation(known.map_or(0, |m| m.generation));
        let remote = self
            .resources
            .remote_storage
            .as_ref()
            .map(|storage| RemoteLayer {
                storage: storage.clone(),
                path: crate::remote_storage::index::layer_path(self.id, id, name, generation),
            });
        let local_size = std::fs::metadata(&path).ok().map(|m| m.len());
        if let (Some(k), Some(_)) = (known, &remote)
            && local_size != Some(k.file_size)
        {
            if local_size.is_some() {
                warn!(timeline = %id, layer = %name, "local layer file has the wrong size; it will be downloaded again");
                let _ = std::fs::remove_file(&path);
            }
            return Ok(HistoricLayer::evicted(
                parsed,
                k.file_size,
                generation,
                path,
                remote,
            ));
        }
        let opened = match parsed {
            LayerName::Delta { .. } => {
                DeltaLayer::open(&path).map(|d| Resident::Delta(Arc::new(d)))
            }
            LayerName::Image { .. } => {
                ImageLayer::open(&path).map(|i| Resident::Image(Arc::new(i)))
            }
        };
        match (opened, known, &remote) {
            (Ok(resident), _, _) => {
                Ok(HistoricLayer::resident(resident, generation, remote, false))
            }
            // A damaged file of a layer remote storage holds: removed, and downloaded when read.
            (Err(e), Some(k), Some(_)) if e.is_damage() => {
                crate::metrics::LAYER_DAMAGED.inc();
                error!(timeline = %id, layer = %name, "{e}; the file is removed and the remote copy will be downloaded");
                let _ = std::fs::remove_file(&path);
                Ok(HistoricLayer::evicted(
                    parsed,
                    k.file_size,
                    generation,
                    path,
                    remote,
                ))
            }
            (Err(e), _, _) => {
                if e.is_damage() {
                    crate::metrics::LAYER_DAMAGED.inc();
                }
                Err(e.into())
            }
        }
    }

    fn spawn_tasks(&self, timeline: &Arc<Timeline>) {
        let span =
            info_span!("timeline", tenant_id = %self.id, timeline_id = %timeline.timeline_id);
        if let Some(queue) = &timeline.upload_queue {
            self.tasks.spawn(
                queue
                    .clone()
                    .run(timeline.cancel.clone())
                    .instrument(span.clone()),
            );
        }
        if let Some(archive) = &timeline.wal_archive {
            self.tasks.spawn(
                archive
                    .clone()
                    .run(timeline.cancel.clone())
                    .instrument(span.clone()),
            );
        }
        self.tasks
            .spawn(timeline.clone().flush_loop().instrument(span.clone()));
        if self.background {
            self.tasks
                .spawn(timeline.clone().compaction_loop().instrument(span.clone()));
            let id = timeline.timeline_id;
            let timelines = self.timelines.clone();
            self.tasks.spawn(
                timeline
                    .clone()
                    .gc_loop(move || branch_points_of(&timelines, id))
                    .instrument(span),
            );
        }
    }

    /// Runs a job (a recovery or a scrub) among the tenant's tasks: a shutdown waits for it, and it watches
    /// its timelines' cancellation tokens.
    pub fn spawn_job(&self, job: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(job);
    }

    /// Deletes a timeline without children: stops its tasks, removes its directory.
    pub async fn delete_timeline(&self, id: TimelineId) -> Result<(), TenantError> {
        if !self.branch_points(id).is_empty() {
            return Err(TenantError::HasChildren(id));
        }
        let tl = self
            .timelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .ok_or(TenantError::TimelineNotFound(id))?;
        tl.cancel.cancel();
        self.resources.page_cache.forget_timeline(id);
        let dir = self.timeline_dir(id);
        let trash = self
            .dir
            .join("timelines")
            .join(format!("{id}{DELETED_SUFFIX}"));
        std::fs::rename(&dir, &trash).map_err(io_err(&dir))?;
        std::fs::remove_dir_all(&trash).map_err(io_err(&trash))?;
        if let Some(storage) = &self.resources.remote_storage {
            Box::pin(crate::repository::remote::delete_timeline_objects(
                storage, self.id, id,
            ))
            .await?;
        }
        Ok(())
    }

    /// [`shutdown`](Self::shutdown) with a flush, after which every timeline's upload queue is drained,
    /// within `budget`; true if everything reached remote storage (or there is none).
    pub async fn shutdown_drained(&self, budget: std::time::Duration) -> bool {
        for tl in self.timelines() {
            if let Err(e) = tl.checkpoint().await {
                warn!(timeline = %tl.timeline_id, error = %e, "flush at detach failed");
            }
        }
        let drain = async {
            for tl in self.timelines() {
                if let Some(q) = &tl.upload_queue
                    && !q.wait_drained(&tl.cancel).await
                {
                    return false;
                }
            }
            true
        };
        let drained = tokio::time::timeout(budget, drain).await.unwrap_or(false);
        if !drained {
            warn!(tenant = %self.id, "uploads did not finish within {budget:?}");
        }
        self.shutdown(false).await;
        drained
    }

    /// Stops every task; with `flush`, first writes out what the in-memory layers hold.
    pub async fn shutdown(&self, flush: bool) {
        if flush {
            for tl in self.timelines() {
                if let Err(e) = tl.checkpoint().await {
                    warn!(timeline = %tl.timeline_id, error = %e, "flush at shutdown failed");
                }
            }
        }
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// One GC pass over every timeline, keeping the branch points of their children readable.
    pub async fn gc_all(
        &self,
        horizon: Option<u64>,
    ) -> Vec<(
        TimelineId,
        Result<crate::repository::tasks::gc::GcResult, MetadataError>,
    )> {
        let mut out = Vec::new();
        for tl in self.timelines() {
            let retain = self.branch_points(tl.timeline_id);
            out.push((tl.timeline_id, tl.gc(horizon, &retain).await));
        }
        out
    }
}

/// Removes the `*.tmp` files directly in the tenant directory: an atomic write's temp file (tenant.json,
/// wal_sources.json) or the spool of an import, left by a crash.
/// Whether `timelines_dir` holds any timeline directory.
fn has_timelines(timelines_dir: &Path) -> Result<bool, TenantError> {
    for entry in std::fs::read_dir(timelines_dir).map_err(io_err(timelines_dir))? {
        let entry = entry.map_err(io_err(timelines_dir))?;
        if entry
            .file_name()
            .to_string_lossy()
            .parse::<TimelineId>()
            .is_ok()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes, for every timeline of the tenant in remote storage, a local timeline directory holding the
/// metadata of the index this attachment claims (`repository::remote::claim_index`); no layer files: they
/// are downloaded on first use.
async fn attach_from_remote(
    id: TenantId,
    remote: &TenantRemote,
    timelines_dir: &Path,
) -> Result<(), TenantError> {
    let timelines = crate::repository::remote::remote_timelines(&remote.storage, id).await?;
    for tl in &timelines {
        let Some(index) =
            crate::repository::remote::claim_index(&remote.storage, id, *tl, remote.generation)
                .await?
        else {
            continue;
        };
        let meta = index.to_metadata();
        let tmp = timelines_dir.join(format!("{tl}{TEMP_SUFFIX}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        meta.save(&tmp)?;
        let dir = timelines_dir.join(tl.to_string());
        std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        info!(tenant = %id, timeline = %tl, layers = meta.layers.len(), disk_consistent_lsn = %meta.disk_consistent_lsn, "timeline attached from remote storage");
        // The indexes of older generations are superseded by ours: they go through the deletion queue (as
        // layers do), so that no index is left naming layers this attachment may delete.
        let older =
            crate::repository::remote::older_indexes(&remote.storage, id, *tl, remote.generation)
                .await?;
        if !older.is_empty() {
            let list = crate::remote_storage::deletion_queue::DeletionList::new(
                id,
                *tl,
                remote.generation,
                older,
            );
            remote.deletions.push(list).await?;
        }
    }
    fsync_dir(timelines_dir).map_err(io_err(timelines_dir))?;
    Ok(())
}

fn remove_temp_files(dir: &Path) -> Result<(), TenantError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") && entry.file_type().is_ok_and(|t| t.is_file()) {
            info!(file = %name, "removing a temp file left by an interrupted write or import");
            std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
        }
    }
    Ok(())
}

/// The timelines of a tenant, shared with the GC tasks (which need the children's branch points).
type Timelines = Arc<Mutex<HashMap<TimelineId, Arc<Timeline>>>>;

fn branch_points_of(handle: &Timelines, id: TimelineId) -> Vec<Lsn> {
    handle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter_map(|t| t.ancestor().filter(|(a, _)| *a == id).map(|(_, lsn)| lsn))
        .collect()
}
