//! The repository's side of remote storage: downloading an evicted layer on first use, attaching a tenant's
//! timelines from their remote indexes on an empty workdir, and removing a tenant's or timeline's remote
//! objects (docs/remote-storage.md).

use std::path::Path;
use std::time::Instant;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::id::{TenantId, TimelineId};
use crate::remote_storage::index::{self, Generation, IndexPart};
use crate::remote_storage::retry::{self, FOREGROUND, FOREGROUND_ATTEMPTS};
use crate::remote_storage::upload_queue::download_newest_index;
use crate::remote_storage::{ByteRange, GenericRemoteStorage, ListingMode, RemoteError};
use crate::repository::layer_map::{HistoricLayer, Resident};
use crate::repository::layers::{DeltaLayer, ImageLayer, LayerError, LayerName};

/// Suffix of a layer file being downloaded; a load removes it (the metadata never names it).
pub const DOWNLOAD_SUFFIX: &str = ".download.tmp";

impl HistoricLayer {
    /// The open layer, downloaded first if it is only in remote storage: to `<name>.download.tmp`, size
    /// checked, fsynced, renamed, directory fsynced, then opened (which checks every crc but the blocks'),
    /// so a torn or short download is never used. Concurrent calls wait for one download.
    pub async fn download(&self) -> Result<Resident, LayerError> {
        if let Some(r) = self.get_resident() {
            return Ok(r);
        }
        // Boxed: the future of a remote download is large, and reads that may call this are deep.
        Box::pin(self.download_slow()).await
    }

    async fn download_slow(&self) -> Result<Resident, LayerError> {
        let state = self.state();
        let _one = state.download.lock().await;
        if let Some(r) = self.get_resident() {
            return Ok(r);
        }
        let path = self.path().to_path_buf();
        let fail = |msg: String| LayerError::Download {
            path: path.clone(),
            msg,
        };
        let Some(remote) = &state.remote else {
            return Err(fail("no remote storage is configured".into()));
        };
        let started = Instant::now();
        let tmp = path.with_file_name(format!("{}{DOWNLOAD_SUFFIX}", self.name()));
        let size = self.file_size();
        let never = CancellationToken::new();
        // The key is tenants/<tenant>/timelines/<timeline>/<layer>.
        let parts: Vec<&str> = remote.path.as_str().split('/').collect();
        let progress = crate::progress::start(
            crate::progress::Kind::Download,
            self.name().to_string(),
            parts.get(1).and_then(|t| t.parse().ok()),
            parts.get(3).and_then(|t| t.parse().ok()),
            "bytes",
            Some(size),
        );
        retry::retry(
            remote.path.as_str(),
            FOREGROUND,
            Some(FOREGROUND_ATTEMPTS),
            &never,
            |_| {},
            || download_to(&remote.storage, &remote.path, &tmp, size, Some(&progress)),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        crate::failpoint::hit("remote-storage-download-pre-rename");
        std::fs::rename(&tmp, &path).map_err(|e| fail(format!("rename: {e}")))?;
        if let Some(dir) = path.parent() {
            crate::durable::fsync_dir(dir).map_err(|e| fail(format!("fsync: {e}")))?;
        }
        let resident = match self.name() {
            LayerName::Delta { .. } => {
                Resident::Delta(std::sync::Arc::new(DeltaLayer::open(&path)?))
            }
            LayerName::Image { .. } => {
                Resident::Image(std::sync::Arc::new(ImageLayer::open(&path)?))
            }
        };
        self.set_resident(resident.clone());
        crate::metrics::LAYER_DOWNLOADS.inc();
        crate::metrics::LAYER_DOWNLOADED_BYTES.add(size);
        crate::metrics::LAYER_DOWNLOAD_SECONDS.observe(started.elapsed());
        tracing::debug!(layer = %self.name(), size, elapsed_ms = started.elapsed().as_millis() as u64, "layer downloaded");
        Ok(resident)
    }
}

/// One attempt: the whole object into `tmp`, fsynced, its size checked.
pub(crate) async fn download_to(
    storage: &GenericRemoteStorage,
    from: &crate::remote_storage::RemotePath,
    tmp: &Path,
    size: u64,
    progress: Option<&crate::progress::ProgressGuard>,
) -> Result<(), RemoteError> {
    let io = |e: std::io::Error| RemoteError::Transient(format!("writing {}: {e}", tmp.display()));
    let mut download = storage.download(from, ByteRange::ALL).await?;
    let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
    let mut got = 0u64;
    while let Some(chunk) = download.body.next().await {
        let chunk = chunk.map_err(RemoteError::from_body_io)?;
        got += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io)?;
        if let Some(p) = progress {
            p.set_done(got);
        }
    }
    if got != size {
        return Err(RemoteError::Transient(format!(
            "{from}: downloaded {got} bytes, the index says {size}"
        )));
    }
    file.sync_all().await.map_err(io)?;
    crate::metrics::remote_bytes(crate::remote_storage::RequestKind::Get, got);
    Ok(())
}

/// A foreground request: a few attempts with backoff.
async fn foreground<T, Fut>(what: &str, f: impl FnMut() -> Fut) -> Result<T, RemoteError>
where
    Fut: Future<Output = Result<T, RemoteError>>,
{
    let never = CancellationToken::new();
    retry::retry(
        what,
        FOREGROUND,
        Some(FOREGROUND_ATTEMPTS),
        &never,
        |_| {},
        f,
    )
    .await
}

/// The timelines of `tenant` in remote storage.
pub async fn remote_timelines(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
) -> Result<Vec<TimelineId>, RemoteError> {
    let prefix = index::timelines_prefix(tenant);
    let listing = foreground("list timelines", || {
        storage.list(Some(&prefix), ListingMode::WithDelimiter)
    })
    .await?;
    Ok(listing
        .prefixes
        .iter()
        .filter_map(|p| p.object_name().parse().ok())
        .collect())
}

/// The highest generation of any index of `tenant` (none if it has none): an attach without a generation
/// takes the next one.
pub async fn highest_generation(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
) -> Result<Generation, RemoteError> {
    let mut highest = Generation::NONE;
    for tl in remote_timelines(storage, tenant).await? {
        let gens = foreground("list indexes", || {
            crate::remote_storage::upload_queue::index_generations(storage, tenant, tl)
        })
        .await?;
        highest = highest.max(gens.into_iter().max().unwrap_or(Generation::NONE));
    }
    Ok(highest)
}

/// The index an attachment of `generation` starts `timeline` from, made its own: if the newest index is of
/// an older generation, it is uploaded as ours first, and the older generation's index is read again; if
/// that one changed meanwhile (the older attachment was still running), the newer content is taken and
/// uploaded again. When this returns, every deletion the older attachment validates from now on finds our
/// index and is dropped, and the index we start from names every layer that attachment has not deleted yet.
/// None when the timeline has no index (or is being deleted).
pub async fn claim_index(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
    generation: Generation,
) -> Result<Option<IndexPart>, RemoteError> {
    let what = format!("index of {timeline}");
    let Some((mut from, mut index)) = foreground(&what, || {
        download_newest_index(storage, tenant, timeline, generation)
    })
    .await?
    else {
        return Ok(None);
    };
    for _round in 0..100 {
        if index.deleted_at.is_some() {
            return Ok(None);
        }
        if from == generation {
            return Ok(Some(index));
        }
        let ours = index::index_path(tenant, timeline, generation);
        let body = bytes::Bytes::from(index.to_json());
        foreground(&what, || storage.upload_bytes(body.clone(), &ours)).await?;
        let below = Generation(generation.0.saturating_sub(1));
        let again = foreground(&what, || {
            download_newest_index(storage, tenant, timeline, below)
        })
        .await?;
        match again {
            Some((g, newer)) if newer != index => {
                info!(%timeline, older = %g, "the older attachment uploaded a new index while we attached; taking it");
                from = g;
                index = newer;
            }
            _ => return Ok(Some(index)),
        }
    }
    Err(RemoteError::Transient(format!(
        "{timeline}: the older attachment keeps changing its index; attach again later"
    )))
}

/// The keys of the indexes of `timeline` older than `generation`.
pub async fn older_indexes(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
    generation: Generation,
) -> Result<Vec<crate::remote_storage::RemotePath>, RemoteError> {
    let gens = foreground("list indexes", || {
        crate::remote_storage::upload_queue::index_generations(storage, tenant, timeline)
    })
    .await?;
    Ok(gens
        .into_iter()
        .filter(|g| *g < generation)
        .map(|g| index::index_path(tenant, timeline, g))
        .collect())
}

/// Deletes every remote object of a timeline, its indexes last (while any remains, an attach still finds
/// the timeline; once they are gone, nothing refers to what may be left).
pub async fn delete_timeline_objects(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
) -> Result<(), RemoteError> {
    let prefix = index::timeline_prefix(tenant, timeline);
    let listing = foreground("list timeline objects", || {
        storage.list(Some(&prefix), ListingMode::NoDelimiter)
    })
    .await?;
    let (indexes, others): (Vec<_>, Vec<_>) = listing
        .keys
        .into_iter()
        .map(|o| o.key)
        .partition(|k| k.object_name().starts_with(index::INDEX_PART_NAME));
    foreground("delete timeline objects", || {
        storage.delete_objects(&others)
    })
    .await?;
    foreground("delete timeline indexes", || {
        storage.delete_objects(&indexes)
    })
    .await?;
    Ok(())
}

/// Deletes every remote object of a tenant, each timeline's indexes last.
pub async fn delete_tenant_objects(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
) -> Result<(), RemoteError> {
    for tl in remote_timelines(storage, tenant).await? {
        delete_timeline_objects(storage, tenant, tl).await?;
    }
    let rest = format!("{}/", index::tenant_path(tenant));
    foreground("delete tenant objects", || storage.delete_prefix(&rest)).await?;
    warn!(tenant_id = %tenant, "remote objects of the tenant deleted");
    Ok(())
}
