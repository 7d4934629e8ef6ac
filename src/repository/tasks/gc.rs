//! GC: removes layer files that no read at or above the cutoff, nor at a child's branch point, can need
//! (plan::plan_gc). Order: commit metadata with the new cutoff and without the removed layers, refuse reads
//! below the cutoff, drop the layers from the map, delete the files (readers holding one keep reading it).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::info;

use super::plan::plan_gc;
use crate::pg::Lsn;
use crate::repository::metadata::MetadataError;
use crate::repository::timeline::Timeline;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcResult {
    pub cutoff: Lsn,
    pub layers_total: usize,
    pub layers_removed: usize,
    pub elapsed_ms: u64,
}

impl Timeline {
    /// The cutoff GC may apply now: min(last_record_lsn - gc_horizon, the LSN of now - pitr_interval,
    /// disk_consistent_lsn), never lower than the one already applied. `horizon` overrides gc_horizon.
    pub fn gc_cutoff_candidate(&self, horizon: Option<u64>) -> Lsn {
        let conf = self.conf();
        let last = self.last_record_lsn();
        let horizon_cutoff = Lsn(last.0.saturating_sub(horizon.unwrap_or(conf.gc_horizon)));
        let pitr = conf.pitr_interval.get();
        let pitr_cutoff = if pitr.is_zero() {
            last
        } else {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let limit = now.saturating_sub(pitr.as_secs());
            self.metadata()
                .lsn_times
                .iter()
                .rev()
                .find(|(t, _)| *t <= limit)
                .map_or(Lsn(0), |(_, lsn)| *lsn)
        };
        // Never above what is on disk: compaction makes images at disk_consistent_lsn and must read there.
        horizon_cutoff
            .min(pitr_cutoff)
            .min(self.disk_consistent_lsn())
            .max(self.gc_cutoff())
    }

    /// One GC pass with `retain` (branch points of children) kept readable.
    pub async fn gc(
        self: &Arc<Self>,
        horizon: Option<u64>,
        retain: &[Lsn],
    ) -> Result<GcResult, MetadataError> {
        let _turn = self.layer_rewrite.lock().await;
        let started = Instant::now();
        let cutoff = self.gc_cutoff_candidate(horizon);
        let names = self
            .layers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .historic_names();
        let remove = plan_gc(&names, cutoff, retain);
        let mut result = GcResult {
            cutoff,
            layers_total: names.len(),
            layers_removed: remove.len(),
            elapsed_ms: 0,
        };
        if remove.is_empty() && cutoff == self.gc_cutoff() {
            result.elapsed_ms = started.elapsed().as_millis() as u64;
            return Ok(result);
        }
        self.commit_layers(&[], &remove, |m| {
            m.latest_gc_cutoff_lsn = m.latest_gc_cutoff_lsn.max(cutoff);
        })
        .await?;
        self.set_gc_cutoff(cutoff);
        let removed = {
            let mut map = self.layers.write().unwrap_or_else(|p| p.into_inner());
            let (gone, kept): (Vec<_>, Vec<_>) = map
                .historic
                .drain(..)
                .partition(|h| remove.contains(h.name()));
            map.historic = kept;
            gone
        };
        if !removed.is_empty() {
            crate::failpoint::hit("gc-before-delete");
        }
        for layer in &removed {
            let _ = std::fs::remove_file(layer.path());
        }
        result.elapsed_ms = started.elapsed().as_millis() as u64;
        crate::metrics::GC_SECONDS.observe(started.elapsed());
        info!(%cutoff, removed = removed.len(), total = names.len(), "gc done");
        Ok(result)
    }

    /// Background GC every gc_period ("0 s" disables it); `retain` gives the children's branch points.
    pub async fn gc_loop(self: Arc<Self>, retain: impl Fn() -> Vec<Lsn> + Send + 'static) {
        loop {
            let period = self.conf().gc_period.get();
            let wait = if period.is_zero() {
                Duration::from_secs(10)
            } else {
                period
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if !self.conf().gc_period.get().is_zero()
                && let Err(e) = self.gc(None, &retain()).await
            {
                tracing::warn!(error = %e, "gc failed");
            }
        }
    }
}
