//! The deletion queue of the node: remote layer deletions wait here, persisted, until their generation is
//! validated (after Neon's `pageserver/src/deletion_queue.rs`; docs/remote-storage.md "Generations").
//!
//! Each list is a file `<workdir>/deletion/<sequence:016x>.list` (JSON: tenant, timeline, the generation that
//! scheduled it, the keys), written atomically before the upload queue moves past the deletion, so a crash
//! never loses one (and a crash before it only leaks objects, which is safe). The executor takes the lists in
//! order. Validation: a list runs only if no index of a newer generation exists for its timeline; if one does,
//! another attachment owns the tenant now and may still read these layers (it attached from an index that
//! names them), so the list is dropped and its keys leak, safely; `pageserver_remote_deletions_dropped_total`
//! counts them. A list whose check or deletes fail stays and is tried again.
//!
//! Why that check is enough without a control plane: an attachment of generation G+1 uploads its own index
//! before it serves (`repository::remote::attach_timelines`), and then reads the older index again: whatever
//! an older attachment deleted after its check, the index it had uploaded before that check (which no longer
//! names those layers) is what G+1 reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::index::Generation;
use super::upload_queue::index_generations;
use super::{GenericRemoteStorage, RemoteError, RemotePath};
use crate::id::{TenantId, TimelineId};

pub const DELETION_DIR: &str = "deletion";
const LIST_SUFFIX: &str = ".list";
const LIST_VERSION: u32 = 1;
/// How often the executor looks for lists when nobody wakes it.
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionList {
    pub version: u32,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub generation: Generation,
    /// Keys relative to the storage's prefix.
    pub keys: Vec<String>,
}

impl DeletionList {
    pub fn new(
        tenant_id: TenantId,
        timeline_id: TimelineId,
        generation: Generation,
        keys: Vec<RemotePath>,
    ) -> DeletionList {
        DeletionList {
            version: LIST_VERSION,
            tenant_id,
            timeline_id,
            generation,
            keys: keys.into_iter().map(|k| k.as_str().to_string()).collect(),
        }
    }
}

pub struct DeletionQueue {
    dir: PathBuf,
    storage: GenericRemoteStorage,
    next_sequence: AtomicU64,
    wakeup: Notify,
}

fn list_sequence(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(LIST_SUFFIX)?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

fn sorted_lists(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut lists = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(list_sequence) {
            lists.push((seq, entry.path()));
        }
    }
    lists.sort();
    Ok(lists)
}

impl DeletionQueue {
    /// The queue in `<workdir>/deletion`, continuing the sequence of the lists already there.
    pub fn open(
        workdir: &Path,
        storage: GenericRemoteStorage,
    ) -> std::io::Result<Arc<DeletionQueue>> {
        let dir = workdir.join(DELETION_DIR);
        std::fs::create_dir_all(&dir)?;
        let next = sorted_lists(&dir)?.last().map_or(0, |(s, _)| s + 1);
        Ok(Arc::new(DeletionQueue {
            dir,
            storage,
            next_sequence: AtomicU64::new(next),
            wakeup: Notify::new(),
        }))
    }

    /// Persists `list` (durably) for the executor.
    pub async fn push(&self, list: DeletionList) -> Result<(), RemoteError> {
        if list.keys.is_empty() {
            return Ok(());
        }
        let seq = self.next_sequence.fetch_add(1, Ordering::AcqRel);
        let name = format!("{seq:016x}{LIST_SUFFIX}");
        let dir = self.dir.clone();
        let body = serde_json::to_vec(&list).unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            crate::durable::write_atomic(&dir, &name, &body, crate::durable::PLAIN_MODE)
        })
        .await
        .map_err(|e| RemoteError::Transient(e.to_string()))?
        .map_err(|e| RemoteError::Transient(format!("writing a deletion list: {e}")))?;
        self.wakeup.notify_one();
        Ok(())
    }

    /// Lists not executed yet.
    pub fn pending(&self) -> usize {
        sorted_lists(&self.dir).map_or(0, |l| l.len())
    }

    /// The executor: runs lists in order until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            let lists = match sorted_lists(&self.dir) {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot read the deletion queue");
                    continue;
                }
            };
            for (_, path) in lists {
                if cancel.is_cancelled() {
                    return;
                }
                if let Err(e) = self.execute(&path).await {
                    warn!(list = %path.display(), error = %e, "deletion list not executed; retrying later");
                    break;
                }
            }
        }
    }

    async fn execute(&self, path: &Path) -> Result<(), RemoteError> {
        let data = std::fs::read(path).map_err(|e| RemoteError::Transient(e.to_string()))?;
        let list: DeletionList = match serde_json::from_slice(&data) {
            Ok(l) => l,
            Err(e) => {
                // Written atomically, so this is not a torn write: keep it for an operator, skip it.
                warn!(list = %path.display(), error = %e, "unreadable deletion list; renamed to .bad");
                let _ = std::fs::rename(path, path.with_extension("bad"));
                return Ok(());
            }
        };
        crate::failpoint::hit("deletion-queue-before-execute");
        let newer = index_generations(&self.storage, list.tenant_id, list.timeline_id)
            .await?
            .into_iter()
            .filter(|g| *g > list.generation)
            .max();
        if let Some(newer) = newer {
            warn!(
                tenant_id = %list.tenant_id,
                timeline_id = %list.timeline_id,
                generation = %list.generation,
                newer = %newer,
                keys = list.keys.len(),
                "a newer generation attached this tenant: dropping the deletions (the objects leak)"
            );
            crate::metrics::REMOTE_DELETIONS_DROPPED.add(list.keys.len() as u64);
        } else {
            let keys: Vec<RemotePath> = list
                .keys
                .iter()
                .filter_map(|k| RemotePath::new(k.clone()).ok())
                .collect();
            self.storage.delete_objects(&keys).await?;
            crate::metrics::REMOTE_DELETIONS_EXECUTED.add(keys.len() as u64);
            info!(tenant_id = %list.tenant_id, timeline_id = %list.timeline_id, keys = keys.len(), "remote layers deleted");
        }
        std::fs::remove_file(path).map_err(|e| RemoteError::Transient(e.to_string()))?;
        Ok(())
    }
}
