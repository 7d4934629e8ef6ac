//! `pageserver stress-repository`: drives one tenant and timeline of the storage engine with a deterministic
//! schedule of writes, checkpoints, compactions and GCs (with the fake redo of `testing`), printing
//! `durable <lsn>` after each checkpoint. `--verify` reloads the same directory and checks every key at LSNs
//! up to disk_consistent_lsn against the schedule. Used by the crash test, which kills the workload at random
//! moments (mid-flush, mid-compaction, mid-GC) and verifies after each restart.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{HumanDuration, TenantConfig};
use crate::id::{TenantId, TimelineId};
use crate::pg::{Lsn, RelFileNode};
use crate::repository::page_cache::PageCache;
use crate::repository::tenant::{Tenant, TenantError};
use crate::repository::testing::{AppendRedo, relation_directory};
use crate::repository::timeline::GetError;
use crate::repository::{Key, Value};
use crate::walredo::WalRecord;

const TENANT: TenantId = TenantId([0x5A; 16]);
const TIMELINE: TimelineId = TimelineId([0xA5; 16]);
const START: u64 = 0x1000;
const KEYS: u32 = 64;
/// GC keeps this many bytes of LSN history.
const GC_HORIZON: u64 = 8 * 600;

#[derive(Debug, thiserror::Error)]
pub enum StressError {
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("{0}")]
    Failed(String),
}

const REL: RelFileNode = RelFileNode {
    spc: 1663,
    db: 1,
    rel: 424242,
};

fn key(k: u32) -> Key {
    Key::rel_block(REL, 0, k)
}

fn lsn_of(step: u64) -> Lsn {
    Lsn(START + 8 * step)
}

/// The values written at a step: three keys, an image one time in six, a record otherwise.
fn step_values(step: u64) -> Vec<(u32, Value)> {
    (0..3u64)
        .map(|j| {
            let k = ((step * 7 + j * 13) % KEYS as u64) as u32;
            let v = if (step + k as u64).is_multiple_of(6) {
                Value::Image(Bytes::from(format!("k{k}s{step};")))
            } else {
                Value::WalRecord(WalRecord::Postgres {
                    will_init: false,
                    rec: Bytes::from(format!("{step},")),
                })
            };
            (k, v)
        })
        .collect()
}

/// What `key(k)` holds at `step` by the schedule; None if nothing was written to it yet, or only records.
fn expected(k: u32, step: u64) -> Option<Bytes> {
    let mut tail: Vec<Bytes> = Vec::new();
    // The workload writes from step 1 on (step 0 is the timeline's start LSN).
    for s in (1..=step).rev() {
        for (kk, v) in step_values(s).into_iter().rev() {
            if kk != k {
                continue;
            }
            match v {
                Value::Image(img) => {
                    let mut page = img.to_vec();
                    for rec in tail.iter().rev() {
                        page.extend_from_slice(rec);
                    }
                    return Some(page.into());
                }
                Value::WalRecord(WalRecord::Postgres { rec, .. }) => tail.push(rec),
                Value::WalRecord(_) => {}
            }
        }
    }
    None
}

fn conf() -> TenantConfig {
    TenantConfig {
        checkpoint_distance: 16 * 1024,
        checkpoint_timeout: HumanDuration::from_secs(3600),
        compaction_target_size: 16 * 1024,
        compaction_period: HumanDuration::from_secs(0),
        compaction_threshold: 3,
        gc_period: HumanDuration::from_secs(0),
        pitr_interval: HumanDuration::from_secs(0),
        image_creation_threshold: 2,
        ..TenantConfig::default()
    }
}

async fn open(dir: &Path) -> Result<Arc<Tenant>, StressError> {
    let tenant = Tenant::load(
        TENANT,
        dir,
        conf(),
        Arc::new(AppendRedo),
        Arc::new(PageCache::new(256)),
        false,
    )
    .await?;
    if tenant.timeline(TIMELINE).is_err() {
        tenant
            .create_timeline(TIMELINE, lsn_of(0), crate::pg::PgVersion::V15)
            .await?;
    }
    Ok(tenant)
}

/// Runs the workload for `steps` steps (forever when None), resuming where the directory left off.
pub async fn run(dir: &Path, steps: Option<u64>) -> Result<(), StressError> {
    let tenant = open(dir).await?;
    let tl = tenant.timeline(TIMELINE)?;
    let first = (tl.last_record_lsn().0 - START) / 8 + 1;
    let mut out = std::io::stdout();
    let fail = |e: &dyn std::fmt::Display| StressError::Failed(e.to_string());
    let mut step = first;
    while steps.is_none_or(|n| step < first + n) {
        let lsn = lsn_of(step);
        {
            let writer = tl.writer().await;
            if step == 1 {
                // The relation's directory entries: compaction makes images of the keyspace only.
                for (k, v) in relation_directory(&[REL], KEYS) {
                    writer.put(k, lsn, &v).map_err(|e| fail(&e))?;
                }
            }
            for (k, v) in step_values(step) {
                writer.put(key(k), lsn, &v).map_err(|e| fail(&e))?;
            }
            writer.finish_write(lsn, Some(lsn_of(step - 1)));
        }
        if step.is_multiple_of(150) {
            let durable = tl.checkpoint().await.map_err(|e| fail(&e))?;
            let _ = writeln!(out, "durable {durable}");
            let _ = out.flush();
        }
        if step.is_multiple_of(400) {
            tl.compact().await.map_err(|e| fail(&e))?;
        }
        if step.is_multiple_of(700) {
            tl.gc(Some(GC_HORIZON), &[]).await.map_err(|e| fail(&e))?;
        }
        step += 1;
    }
    tenant.shutdown(true).await;
    Ok(())
}

/// What a verification found.
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    pub reads: u64,
    pub disk_consistent_lsn: Lsn,
    /// Files of interrupted operations that the load removed.
    pub leftovers_removed: usize,
}

/// Reloads the directory and checks every key at a spread of LSNs from the GC cutoff up to
/// disk_consistent_lsn.
pub async fn verify(dir: &Path) -> Result<Verified, StressError> {
    let tenant = open(dir).await?;
    let tl = tenant.timeline(TIMELINE)?;
    let disk = tl.disk_consistent_lsn();
    if tl.last_record_lsn() != disk {
        return Err(StressError::Failed(format!(
            "last_record_lsn {} != disk_consistent_lsn {disk} after load",
            tl.last_record_lsn()
        )));
    }
    let last_step = (disk.0 - START) / 8;
    let first_step = (tl.gc_cutoff().0.max(START) - START).div_ceil(8);
    let mut checked = 0;
    let stride = ((last_step - first_step) / 40).max(1);
    let mut step = last_step;
    loop {
        for k in 0..KEYS {
            let got = tl.get(key(k), lsn_of(step)).await;
            let want = expected(k, step);
            let ok = match (&got, &want) {
                (Ok(page), Some(w)) => page == w,
                (Err(GetError::KeyNotFound { .. }), None)
                | (Err(GetError::NoBaseImage { .. }), None) => true,
                _ => false,
            };
            if !ok {
                return Err(StressError::Failed(format!(
                    "key {k} at step {step} ({}): got {got:?}, expected {want:?}",
                    lsn_of(step)
                )));
            }
            checked += 1;
        }
        if step < first_step + stride {
            break;
        }
        step -= stride;
    }
    // No layer is half-visible: the directory holds the metadata and the layers it names, nothing else.
    let named: std::collections::BTreeSet<String> = tl.metadata().layers.into_iter().collect();
    for entry in std::fs::read_dir(tl.dir()).map_err(|e| fail_io(tl.dir(), e))? {
        let name = entry
            .map_err(|e| fail_io(tl.dir(), e))?
            .file_name()
            .to_string_lossy()
            .to_string();
        if name != "metadata" && !named.contains(&name) && !name.starts_with("ephemeral-") {
            return Err(StressError::Failed(format!(
                "unexpected file {name} after load"
            )));
        }
    }
    let leftovers_removed = tenant.leftovers_removed();
    tenant.shutdown(false).await;
    Ok(Verified {
        reads: checked,
        disk_consistent_lsn: disk,
        leftovers_removed,
    })
}

fn fail_io(dir: &Path, e: std::io::Error) -> StressError {
    StressError::Failed(format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_expectation_is_consistent() {
        // The key written as an image at some step reads back as that image.
        for step in 1..50u64 {
            for (k, v) in step_values(step) {
                if let Value::Image(img) = v {
                    let got = expected(k, step).unwrap();
                    assert!(got.starts_with(&img));
                }
            }
        }
    }
}
