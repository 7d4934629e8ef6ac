//! The tenant manager: every tenant of the node, attached or not.
//!
//! Layout: `<workdir>/tenants/<tenant id>/tenant.json` (`{"attached": bool, "config": {overrides}}`, written
//! atomically) beside the tenant's `timelines/`. At start every attached tenant is found and then loaded in the
//! background, a few at a time, except that a request for a tenant not loaded yet loads it first (so the first
//! page of any tenant comes within about one tenant's load of the start, however many tenants). Each attached
//! tenant has its own WAL redo pool and tasks; detaching stops them (its redo processes are gone) and keeps
//! the files, attaching loads it again.
//!
//! A tenant that cannot be loaded (its `tenant.json` missing or unreadable, a timeline's metadata corrupt, a
//! layer file missing) is Broken: the others load and serve, it runs nothing, it is listed with the reason,
//! and it can be deleted, or attached again once its files are repaired. A `<id>.___deleted` directory (a
//! delete interrupted by a crash) is removed at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{ConfigError, NodeConfig, TenantConfig, TenantConfigOverrides};
use crate::id::TenantId;
use crate::remote_storage::GenericRemoteStorage;
use crate::remote_storage::deletion_queue::DeletionQueue;
use crate::remote_storage::index::Generation;
use crate::repository::metadata::fsync_dir;
use crate::repository::page_cache::PageCache;
use crate::repository::tenant::{DELETED_SUFFIX, Tenant, TenantError, TenantRemote};
use crate::walredo::{PostgresRedoManager, RedoConfig, RedoError};

pub const TENANT_FILE: &str = "tenant.json";

#[derive(Debug, thiserror::Error)]
pub enum MgrError {
    #[error("tenant {0} not found")]
    NotFound(TenantId),
    #[error("tenant {0} already exists with a different config")]
    ExistsDifferently(TenantId),
    #[error("tenant {0} is detached; attach it first")]
    Detached(TenantId),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("WAL redo is not available: {0}")]
    Redo(#[from] RedoError),
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("the pageserver is shutting down")]
    ShuttingDown,
    #[error("tenant {id} is broken: {reason}")]
    Broken { id: TenantId, reason: String },
    #[error("remote storage: {0}")]
    Remote(String),
}

/// Tenants loaded at once by the warm-up after a start.
const TENANT_WARMUP_CONCURRENCY: usize = 8;

/// How long a detach waits for the uploads of its tenant before it keeps the local files instead.
const DETACH_DRAIN_BUDGET: Duration = Duration::from_secs(60);

/// What `tenant.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    pub attached: bool,
    #[serde(default)]
    pub config: TenantConfigOverrides,
    /// The generation of this attachment (with remote storage; 0 or absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
}

/// An attached tenant, the redo manager it owns and its WAL receivers.
#[derive(Clone)]
pub struct Attached {
    pub tenant: Arc<Tenant>,
    pub redo: Arc<PostgresRedoManager>,
    pub overrides: TenantConfigOverrides,
    pub generation: Generation,
    pub wal_sources: Arc<crate::walreceiver::sources::WalSources>,
}

pub struct TenantManager {
    tenants_dir: PathBuf,
    node: NodeConfig,
    page_cache: Arc<PageCache>,
    attached: tokio::sync::Mutex<HashMap<TenantId, Attached>>,
    /// Attached tenants found at start and not loaded yet: each loads once, on its first use or in the
    /// background warm-up, whichever comes first (the cell is set when it is loaded or Broken).
    pending: Mutex<HashMap<TenantId, Arc<tokio::sync::OnceCell<()>>>>,
    /// Tenants on disk but detached, with their overrides.
    detached: Mutex<HashMap<TenantId, TenantConfigOverrides>>,
    /// Tenants on disk that could not be loaded, with the reason.
    broken: Mutex<HashMap<TenantId, String>>,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Remote storage and the node's deletion queue, when configured.
    remote: Option<NodeRemote>,
    /// Stops the deletion queue's executor.
    cancel: tokio_util::sync::CancellationToken,
}

#[derive(Clone)]
pub struct NodeRemote {
    pub storage: GenericRemoteStorage,
    pub deletions: Arc<DeletionQueue>,
    /// `disk_usage_max_bytes`, when set.
    pub disk: Option<Arc<crate::repository::eviction::DiskBudget>>,
}

impl TenantManager {
    /// Loads every tenant under `<workdir>/tenants`; attached ones become active.
    pub async fn load(workdir: &Path, node: NodeConfig) -> Result<Arc<TenantManager>, MgrError> {
        let tenants_dir = workdir.join("tenants");
        std::fs::create_dir_all(&tenants_dir).map_err(|e| file_err(&tenants_dir, e))?;
        let cancel = tokio_util::sync::CancellationToken::new();
        let remote = match &node.remote_storage {
            Some(config) => {
                let storage = Box::pin(GenericRemoteStorage::from_config(
                    config,
                    node.test_remote_failures_probability,
                ))
                .await
                .map_err(|e| MgrError::Remote(e.to_string()))?;
                let deletions = DeletionQueue::open(workdir, storage.clone())
                    .map_err(|e| file_err(&workdir.join("deletion"), e))?;
                tokio::spawn(
                    deletions
                        .clone()
                        .run(cancel.clone())
                        .instrument(info_span!("deletion_queue")),
                );
                info!(storage = ?storage, "remote storage configured");
                let disk = (node.disk_usage_max_bytes > 0).then(|| {
                    let disk =
                        crate::repository::eviction::DiskBudget::new(node.disk_usage_max_bytes);
                    tokio::spawn(disk.clone().run(cancel.clone()));
                    disk
                });
                Some(NodeRemote {
                    storage,
                    deletions,
                    disk,
                })
            }
            None => None,
        };
        crate::repository::layers::index_cache::set_capacity(node.layer_index_cache_size);
        let mgr = Arc::new(TenantManager {
            remote,
            cancel,
            page_cache: Arc::new(PageCache::new(node.page_cache_size)),
            tenants_dir: tenants_dir.clone(),
            node,
            attached: tokio::sync::Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            detached: Mutex::new(HashMap::new()),
            broken: Mutex::new(HashMap::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        for entry in std::fs::read_dir(&tenants_dir).map_err(|e| file_err(&tenants_dir, e))? {
            let entry = entry.map_err(|e| file_err(&tenants_dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(DELETED_SUFFIX) {
                warn!(dir = %name, "removing the directory of an interrupted tenant delete");
                std::fs::remove_dir_all(entry.path()).map_err(|e| file_err(&entry.path(), e))?;
                continue;
            }
            let Ok(id) = name.parse::<TenantId>() else {
                continue;
            };
            match Self::scan_one(&entry.path()) {
                Ok(file) if file.attached => {
                    mgr.pending_lock().insert(id, Arc::default());
                }
                Ok(file) => {
                    mgr.detached_lock().insert(id, file.config);
                }
                Err(e) => {
                    error!(tenant_id = %id, error = %e, "tenant is broken");
                    mgr.broken_lock().insert(id, e.to_string());
                }
            }
        }
        let count = mgr.pending_lock().len();
        if count > 0 {
            info!(
                tenants = count,
                "loading attached tenants in the background (a request loads its tenant first)"
            );
            tokio::spawn(
                mgr.clone()
                    .warm_up()
                    .instrument(info_span!("tenant_warmup")),
            );
        }
        Ok(mgr)
    }

    /// Loads every pending tenant, `TENANT_WARMUP_CONCURRENCY` at a time.
    async fn warm_up(self: Arc<Self>) {
        let started = std::time::Instant::now();
        let ids: Vec<TenantId> = self.pending_lock().keys().copied().collect();
        let count = ids.len();
        let mut ids = ids.into_iter();
        let mut loads = tokio::task::JoinSet::new();
        loop {
            while loads.len() < TENANT_WARMUP_CONCURRENCY
                && let Some(id) = ids.next()
            {
                let mgr = self.clone();
                loads.spawn(async move { mgr.ensure_loaded(id).await });
            }
            if loads.join_next().await.is_none() {
                break;
            }
        }
        info!(tenants = count, elapsed = ?started.elapsed(), "every attached tenant is loaded");
    }

    fn pending_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TenantId, Arc<tokio::sync::OnceCell<()>>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads tenant `id` if it is still pending from the start (once, whoever asks first; later callers wait
    /// for that load). After it, the tenant is attached or Broken.
    async fn ensure_loaded(&self, id: TenantId) {
        let Some(cell) = self.pending_lock().get(&id).cloned() else {
            return;
        };
        cell.get_or_init(|| async {
            if !self
                .shutting_down
                .load(std::sync::atomic::Ordering::Acquire)
            {
                let dir = self.tenant_dir(id);
                match self.load_one(id, &dir).await {
                    Ok(a) => {
                        self.attached.lock().await.insert(id, a);
                    }
                    Err(e) => {
                        error!(tenant_id = %id, error = %e, "tenant is broken");
                        self.broken_lock().insert(id, e.to_string());
                    }
                }
            }
            self.pending_lock().remove(&id);
        })
        .await;
    }

    /// Loads every tenant still pending (for operations on all of them).
    async fn ensure_all_loaded(&self) {
        let ids: Vec<TenantId> = self.pending_lock().keys().copied().collect();
        for id in ids {
            self.ensure_loaded(id).await;
        }
    }

    /// Reads the `tenant.json` of the tenant in `dir`.
    fn scan_one(dir: &Path) -> Result<TenantFile, MgrError> {
        if !dir.join(TENANT_FILE).exists() {
            return Err(MgrError::File {
                path: dir.join(TENANT_FILE),
                msg: "missing (the tenant's creation was interrupted?)".into(),
            });
        }
        read_tenant_file(dir)
    }

    /// Activates the attached tenant in `dir`.
    async fn load_one(&self, id: TenantId, dir: &Path) -> Result<Attached, MgrError> {
        let file = read_tenant_file(dir)?;
        let generation = match file.generation {
            Some(g) => Generation(g),
            None => self.choose_generation(id, None).await?,
        };
        if file.generation != Some(generation.0) && self.remote.is_some() {
            write_tenant_file(
                dir,
                &TenantFile {
                    generation: Some(generation.0),
                    ..file.clone()
                },
            )?;
        }
        self.activate(id, file.config, generation).await
    }

    fn broken_lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, String>> {
        self.broken.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tenants that could not be loaded, with the reason, by id.
    pub fn broken(&self) -> Vec<(TenantId, String)> {
        let mut v: Vec<_> = self
            .broken_lock()
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        v.sort();
        v
    }

    fn detached_lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, TenantConfigOverrides>> {
        self.detached.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    pub fn page_cache(&self) -> &Arc<PageCache> {
        &self.page_cache
    }

    pub fn tenant_dir(&self, id: TenantId) -> PathBuf {
        self.tenants_dir.join(id.to_string())
    }

    fn redo_config(&self, conf: &TenantConfig) -> RedoConfig {
        RedoConfig {
            bundle_dir: self.node.pg_distrib_dir.clone(),
            binary_name: "postgres".into(),
            run_as_user: self.node.walredo_user.clone(),
            pool_size: conf.walredo_pool_size,
            idle_timeout: conf.walredo_idle_timeout.get(),
            request_timeout: self.node.wal_redo_timeout.get(),
            reply_wait: self.node.wal_redo_reply_wait.get(),
            empty_root: true,
        }
    }

    /// The generation of a new attachment: the one asked for, else (with remote storage) one above every
    /// generation in remote storage, so that this attachment's reads and deletions win over older ones.
    async fn choose_generation(
        &self,
        id: TenantId,
        requested: Option<u32>,
    ) -> Result<Generation, MgrError> {
        match (&self.remote, requested) {
            (_, Some(g)) if g > 0 => Ok(Generation(g)),
            (None, _) => Ok(Generation::NONE),
            (Some(r), _) => Ok(Box::pin(crate::repository::remote::highest_generation(
                &r.storage, id,
            ))
            .await
            .map_err(|e| MgrError::Remote(e.to_string()))?
            .next()),
        }
    }

    pub fn remote(&self) -> Option<&NodeRemote> {
        self.remote.as_ref()
    }

    async fn activate(
        &self,
        id: TenantId,
        overrides: TenantConfigOverrides,
        generation: Generation,
    ) -> Result<Attached, MgrError> {
        let conf = overrides.apply(&self.node.tenant_config)?;
        let span = info_span!("tenant", tenant_id = %id);
        let redo = Arc::new(PostgresRedoManager::new(&self.redo_config(&conf), span)?);
        let dir = self.tenant_dir(id);
        let remote = self.remote.as_ref().map(|r| TenantRemote {
            storage: r.storage.clone(),
            generation,
            deletions: r.deletions.clone(),
            disk: r.disk.clone(),
        });
        let loaded = Tenant::load_with_remote(
            id,
            &dir,
            conf,
            redo.clone(),
            self.page_cache.clone(),
            true,
            remote,
        )
        .await;
        let tenant = match loaded {
            Ok(t) => t,
            Err(e) => {
                redo.shutdown().await;
                return Err(e.into());
            }
        };
        let file_err = |msg| MgrError::File {
            path: dir.clone(),
            msg,
        };
        let (sources, saved) = match crate::walreceiver::sources::WalSources::load(&dir) {
            Ok(x) => x,
            Err(e) => {
                tenant.shutdown(false).await;
                redo.shutdown().await;
                return Err(file_err(e));
            }
        };
        for (tl_id, source) in saved {
            match tenant.timeline(tl_id) {
                Ok(tl) => sources.set(&tl, Some(source), false).map_err(file_err)?,
                Err(_) => {
                    warn!(tenant_id = %id, timeline_id = %tl_id, "WAL source of a missing timeline ignored")
                }
            }
        }
        Ok(Attached {
            tenant,
            redo,
            overrides,
            generation,
            wal_sources: Arc::new(sources),
        })
    }

    /// The attached tenant `id`.
    pub async fn get(&self, id: TenantId) -> Result<Attached, MgrError> {
        self.ensure_loaded(id).await;
        match self.attached.lock().await.get(&id) {
            Some(a) => Ok(a.clone()),
            None if self.detached_lock().contains_key(&id) => Err(MgrError::Detached(id)),
            None => Err(self.broken_or_not_found(id)),
        }
    }

    fn broken_or_not_found(&self, id: TenantId) -> MgrError {
        match self.broken_lock().get(&id) {
            Some(reason) => MgrError::Broken {
                id,
                reason: reason.clone(),
            },
            None => MgrError::NotFound(id),
        }
    }

    /// Attached tenants, by id.
    pub async fn list(&self) -> Vec<Attached> {
        self.ensure_all_loaded().await;
        let mut v: Vec<Attached> = self.attached.lock().await.values().cloned().collect();
        v.sort_by_key(|a| a.tenant.id);
        v
    }

    /// Creates and attaches a tenant; creating one that exists with the same config is a no-op.
    pub async fn create(
        &self,
        id: TenantId,
        overrides: TenantConfigOverrides,
    ) -> Result<(Attached, bool), MgrError> {
        self.check_running()?;
        self.ensure_loaded(id).await;
        overrides.apply(&self.node.tenant_config)?;
        let mut attached = self.attached.lock().await;
        if let Some(existing) = attached.get(&id) {
            return if existing.overrides == overrides {
                Ok((existing.clone(), false))
            } else {
                Err(MgrError::ExistsDifferently(id))
            };
        }
        if self.detached_lock().contains_key(&id) {
            return Err(MgrError::Detached(id));
        }
        if let err @ MgrError::Broken { .. } = self.broken_or_not_found(id) {
            return Err(err);
        }
        let generation = self.choose_generation(id, None).await?;
        let dir = self.tenant_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        write_tenant_file(
            &dir,
            &TenantFile {
                attached: true,
                config: overrides.clone(),
                generation: (generation != Generation::NONE).then_some(generation.0),
            },
        )?;
        fsync_dir(&self.tenants_dir).map_err(|e| file_err(&self.tenants_dir, e))?;
        let a = self.activate(id, overrides, generation).await?;
        attached.insert(id, a.clone());
        info!(tenant_id = %id, "tenant created");
        Ok((a, true))
    }

    /// Attaches a tenant: loads it from disk if it is there, else creates it empty.
    /// With remote storage and no local files, the tenant's timelines come from remote storage.
    /// `generation`: of this attachment (Neon's location_config); when absent, the next one.
    pub async fn attach(
        &self,
        id: TenantId,
        overrides: TenantConfigOverrides,
        generation: Option<u32>,
    ) -> Result<Attached, MgrError> {
        self.check_running()?;
        self.ensure_loaded(id).await;
        overrides.apply(&self.node.tenant_config)?;
        let mut attached = self.attached.lock().await;
        if let Some(existing) = attached.get(&id).cloned() {
            if existing.overrides != overrides {
                self.set_overrides_locked(&mut attached, id, overrides)
                    .await?;
            }
            return Ok(attached[&id].clone());
        }
        let generation = match self.choose_generation(id, generation).await {
            Ok(g) => g,
            Err(e) => return Err(e),
        };
        let dir = self.tenant_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        write_tenant_file(
            &dir,
            &TenantFile {
                attached: true,
                config: overrides.clone(),
                generation: (generation != Generation::NONE).then_some(generation.0),
            },
        )?;
        self.detached_lock().remove(&id);
        let a = match self.activate(id, overrides, generation).await {
            Ok(a) => a,
            Err(e) => {
                self.broken_lock().insert(id, e.to_string());
                return Err(e);
            }
        };
        self.broken_lock().remove(&id);
        attached.insert(id, a.clone());
        info!(tenant_id = %id, "tenant attached");
        Ok(a)
    }

    /// Detaches a tenant: flushes it, stops its tasks and kills its redo processes; keeps its files.
    pub async fn detach(&self, id: TenantId) -> Result<(), MgrError> {
        self.ensure_loaded(id).await;
        let mut attached = self.attached.lock().await;
        let Some(a) = attached.remove(&id) else {
            return if self.detached_lock().contains_key(&id) {
                Ok(())
            } else {
                Err(self.broken_or_not_found(id))
            };
        };
        write_tenant_file(
            &self.tenant_dir(id),
            &TenantFile {
                attached: false,
                config: a.overrides.clone(),
                generation: None,
            },
        )?;
        // With remote storage the local files are a cache: once everything is uploaded they go, and a later
        // attach (here or on another node) reads remote storage. If the uploads do not drain in time, the
        // files stay and the tenant is detached as without remote storage.
        let drained = a.tenant.shutdown_drained(DETACH_DRAIN_BUDGET).await;
        a.redo.shutdown().await;
        if self.remote.is_some() && drained {
            let dir = self.tenant_dir(id);
            let trash = self.tenants_dir.join(format!("{id}{DELETED_SUFFIX}"));
            std::fs::rename(&dir, &trash).map_err(|e| file_err(&dir, e))?;
            std::fs::remove_dir_all(&trash).map_err(|e| file_err(&trash, e))?;
            info!(tenant_id = %id, "tenant detached; its local files removed (all of it is in remote storage)");
            return Ok(());
        }
        self.detached_lock().insert(id, a.overrides);
        info!(tenant_id = %id, "tenant detached");
        Ok(())
    }

    /// Deletes a tenant and its files.
    pub async fn delete(&self, id: TenantId) -> Result<(), MgrError> {
        self.ensure_loaded(id).await;
        let mut attached = self.attached.lock().await;
        if let Some(a) = attached.remove(&id) {
            a.tenant.shutdown(false).await;
            a.redo.shutdown().await;
        } else if self.detached_lock().remove(&id).is_none()
            && self.broken_lock().remove(&id).is_none()
        {
            return Err(MgrError::NotFound(id));
        }
        if let Some(r) = &self.remote {
            Box::pin(crate::repository::remote::delete_tenant_objects(
                &r.storage, id,
            ))
            .await
            .map_err(|e| MgrError::Remote(e.to_string()))?;
        }
        let dir = self.tenant_dir(id);
        let trash = self.tenants_dir.join(format!("{id}{DELETED_SUFFIX}"));
        if dir.exists() {
            std::fs::rename(&dir, &trash).map_err(|e| file_err(&dir, e))?;
            std::fs::remove_dir_all(&trash).map_err(|e| file_err(&trash, e))?;
        }
        info!(tenant_id = %id, "tenant deleted");
        Ok(())
    }

    /// Replaces a tenant's overrides (persisted, applied to the running tenant).
    pub async fn set_overrides(
        &self,
        id: TenantId,
        overrides: TenantConfigOverrides,
    ) -> Result<Attached, MgrError> {
        self.ensure_loaded(id).await;
        let mut attached = self.attached.lock().await;
        self.set_overrides_locked(&mut attached, id, overrides)
            .await?;
        Ok(attached[&id].clone())
    }

    async fn set_overrides_locked(
        &self,
        attached: &mut HashMap<TenantId, Attached>,
        id: TenantId,
        overrides: TenantConfigOverrides,
    ) -> Result<(), MgrError> {
        let conf = overrides.apply(&self.node.tenant_config)?;
        let a = attached.get_mut(&id).ok_or(MgrError::NotFound(id))?;
        write_tenant_file(
            &self.tenant_dir(id),
            &TenantFile {
                attached: true,
                config: overrides.clone(),
                generation: (a.generation != Generation::NONE).then_some(a.generation.0),
            },
        )?;
        a.tenant.set_conf(conf);
        a.overrides = overrides;
        Ok(())
    }

    fn check_running(&self) -> Result<(), MgrError> {
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(MgrError::ShuttingDown);
        }
        Ok(())
    }

    /// Flushes and stops every tenant, within `budget`.
    pub async fn shutdown(&self, budget: Duration) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
        // Loads in progress finish (and are stopped below); the others no longer start.
        self.ensure_all_loaded().await;
        let all: Vec<Attached> = self.attached.lock().await.drain().map(|(_, a)| a).collect();
        let stop = async {
            for a in &all {
                a.tenant.shutdown(true).await;
                a.redo.shutdown().await;
            }
        };
        if tokio::time::timeout(budget, stop).await.is_err() {
            warn!("tenants did not stop within {budget:?}");
            for a in &all {
                a.redo.shutdown().await;
            }
        }
        self.cancel.cancel();
    }
}

fn file_err(path: &Path, e: std::io::Error) -> MgrError {
    MgrError::File {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn read_tenant_file(dir: &Path) -> Result<TenantFile, MgrError> {
    let path = dir.join(TENANT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| MgrError::File {
        path,
        msg: e.to_string(),
    })
}

fn write_tenant_file(dir: &Path, file: &TenantFile) -> Result<(), MgrError> {
    let path = dir.join(TENANT_FILE);
    let body = serde_json::to_vec_pretty(file).map_err(|e| MgrError::File {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    crate::durable::write_atomic(dir, TENANT_FILE, &body, crate::durable::PLAIN_MODE)
        .map_err(|e| file_err(&path, e))
}
