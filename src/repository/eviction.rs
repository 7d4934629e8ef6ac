//! With remote storage the local layer files are a cache (docs/remote-storage.md): when the resident layers of
//! the node exceed `disk_usage_max_bytes`, the least recently read layers that are safely in remote storage
//! are evicted (their files removed; a reader holding one keeps reading its open handle), and a later read
//! downloads them again. The check runs after every download (never evicting the layer just downloaded) and
//! once a second for layers that flushes and compaction made. A layer not uploaded yet is never evicted, so
//! the limit can be exceeded while the upload queue catches up.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::repository::layer_map::{HistoricLayer, LayerState};

pub struct DiskBudget {
    limit: u64,
    layers: Mutex<Vec<Weak<LayerState>>>,
}

impl DiskBudget {
    pub fn new(limit: u64) -> Arc<DiskBudget> {
        Arc::new(DiskBudget {
            limit,
            layers: Mutex::new(Vec::new()),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn register(&self, layer: &HistoricLayer) {
        self.layers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(layer.downgrade());
    }

    /// The live layers (dropping those no timeline holds any more).
    fn live(&self) -> Vec<HistoricLayer> {
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        layers.retain(|w| w.strong_count() > 0);
        layers.iter().filter_map(HistoricLayer::upgrade).collect()
    }

    /// Bytes of the resident layers.
    pub fn resident_bytes(&self) -> u64 {
        self.live()
            .iter()
            .filter(|l| l.is_resident())
            .map(|l| l.file_size())
            .sum()
    }

    /// Evicts the least recently read uploaded layers until the resident bytes are within the limit; never
    /// `keep`. Returns the bytes freed.
    pub fn enforce(&self, keep: Option<&HistoricLayer>) -> u64 {
        let mut resident: Vec<HistoricLayer> = self
            .live()
            .into_iter()
            .filter(|l| l.is_resident())
            .collect();
        let mut total: u64 = resident.iter().map(|l| l.file_size()).sum();
        if total <= self.limit {
            return 0;
        }
        resident.sort_by_key(|l| l.last_access_millis());
        let mut freed = 0;
        for layer in resident {
            if total <= self.limit {
                break;
            }
            if keep.is_some_and(|k| k.same_as(&layer)) {
                continue;
            }
            let n = layer.evict();
            total -= n;
            freed += n;
        }
        if freed > 0 {
            debug!(
                freed,
                resident = total,
                limit = self.limit,
                "evicted layers"
            );
        }
        freed
    }

    /// Enforces the limit once a second until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.enforce(None)).await;
        }
    }
}
