//! The periodic scrub (`scrub_period`, off by default): every period, one timeline of the tenant in turn (those
//! with an archived base) is recovered into a temporary shadow from its base and archive, scrubbed against the
//! shadow at the shadow's last record, and the shadow deleted. Both jobs stay in the tenant's job list (marked
//! `periodic`), so their results and any mismatch are visible there and in the metrics: the RFC's detection use
//! case.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{RecoverRequest, ScrubRequest, start_recovery, start_scrub};
use crate::id::TimelineId;
use crate::repository::tenant::Tenant;
use crate::wal_archive::manifest::{ArchiveObject, parse_object_name};

/// How often a disabled periodic scrub looks at its setting again.
const IDLE_TICK: Duration = Duration::from_secs(10);

/// Runs until the tenant shuts down.
pub async fn run(tenant: Arc<Tenant>, cancel: tokio_util::sync::CancellationToken) {
    let mut last: Option<TimelineId> = None;
    loop {
        let period = tenant.conf().scrub_period.get();
        let wait = if period.is_zero() { IDLE_TICK } else { period };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if tenant.conf().scrub_period.get().is_zero() {
            continue;
        }
        let Some(tl) = next_timeline(&tenant, last).await else {
            continue;
        };
        last = Some(tl);
        if let Err(e) = check_one(&tenant, tl, &cancel).await {
            warn!(timeline_id = %tl, error = %e, "periodic scrub did not complete");
        }
    }
}

/// The serving timeline after `last` (in id order, wrapping) whose archive has a base.
async fn next_timeline(tenant: &Tenant, last: Option<TimelineId>) -> Option<TimelineId> {
    let mut candidates = Vec::new();
    for tl in tenant.timelines() {
        if tl.not_serving().is_some() || tenant.jobs.running_on(tl.timeline_id) {
            continue;
        }
        let Some(archive) = &tl.wal_archive else {
            continue;
        };
        let has_base = archive.store.list().await.ok()?.iter().any(|o| {
            matches!(
                parse_object_name(&o.name, 16 << 20),
                Some((ArchiveObject::BaseManifest, _))
            )
        });
        if has_base {
            candidates.push(tl.timeline_id);
        }
    }
    candidates.sort();
    let after = candidates.iter().find(|id| last.is_none_or(|l| **id > l));
    after.or(candidates.first()).copied()
}

async fn wait_finished(
    job: &super::jobs::Job,
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    loop {
        if job.status().state != "running" {
            return true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn check_one(
    tenant: &Arc<Tenant>,
    timeline: TimelineId,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let req = RecoverRequest {
        source: timeline,
        from_lsn: None,
        to_lsn: None,
        to_time: None,
        target: None,
        periodic: true,
    };
    let (job, _) = start_recovery(tenant, req)
        .await
        .map_err(|e| e.to_string())?;
    if !wait_finished(&job, cancel).await {
        return Err("shutting down".into());
    }
    let status = job.status();
    let Some(shadow) = status.target_timeline_id else {
        return Err("the recovery made no target".into());
    };
    if status.state != "done" {
        return Err(status.error.unwrap_or_default());
    }
    let scrub = start_scrub(
        tenant,
        ScrubRequest {
            timeline,
            other: shadow,
            lsn: status.lsn_reached,
            periodic: true,
        },
    )
    .await
    .map_err(|e| e.to_string());
    let result = match scrub {
        Ok(job) => {
            wait_finished(&job, cancel).await;
            let s = job.status();
            match s.scrub {
                Some(r) if r.total_mismatches() > 0 => {
                    warn!(timeline_id = %timeline, mismatches = r.total_mismatches(), job_id = %s.job_id,
                          "periodic scrub found keys that differ from the archive's replay");
                    Ok(())
                }
                Some(r) => {
                    info!(timeline_id = %timeline, keys = r.keys_compared, "periodic scrub found no difference");
                    Ok(())
                }
                None => Err(s.error.unwrap_or_default()),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = tenant.delete_timeline(shadow).await {
        warn!(timeline_id = %shadow, error = %e, "cannot delete the shadow of a periodic scrub");
    }
    result
}
