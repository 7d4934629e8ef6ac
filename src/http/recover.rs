//! The routes of the WAL archive's second path: `recover` (a timeline, or every timeline of a tenant), `scrub`,
//! and the jobs they start.

use hyper::StatusCode;

use super::error::{ApiError, json_response};
use super::routes::{HandlerResult, RequestContext};
use crate::recover::{RecoverRequest, ScrubRequest, start_recovery, start_scrub};
use crate::repository::mgr::Attached;

async fn tenant(ctx: &RequestContext) -> Result<Attached, ApiError> {
    Ok(ctx.state.mgr.get(ctx.tenant_id()?).await?)
}

fn to_time(ctx: &RequestContext) -> Result<Option<(String, i64)>, ApiError> {
    match ctx.query("to_time") {
        None => Ok(None),
        Some(text) => {
            let ts = super::timelines::pg_timestamp(&text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "invalid to_time {text:?}: expected RFC 3339 in UTC, such as 2026-11-21T10:00:00.5Z"
                ))
            })?;
            Ok(Some((text, ts)))
        }
    }
}

fn target(ctx: &RequestContext) -> Result<Option<crate::id::TimelineId>, ApiError> {
    match ctx.query("target") {
        None => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!("invalid target {t:?}: expected 32 hex digits"))
        }),
    }
}

/// POST .../timeline/:timeline_id/recover?from_lsn=&to_lsn=&to_time=&target=: 202 with the job.
pub async fn recover(ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    let req = RecoverRequest {
        source: ctx.timeline_id()?,
        from_lsn: ctx.query_lsn("from_lsn")?,
        to_lsn: ctx.query_lsn("to_lsn")?,
        to_time: to_time(&ctx)?,
        target: target(&ctx)?,
        periodic: false,
    };
    if let Some(t) = req.target
        && a.wal_sources.get(t).is_some()
    {
        return Err(ApiError::Conflict(format!(
            "target {t} follows a WAL source; a recovery target must not"
        )));
    }
    let (job, _) = start_recovery(&a.tenant, req).await?;
    Ok(json_response(StatusCode::ACCEPTED, &job.status()))
}

/// POST /v1/tenant/:tenant_id/recover?to_lsn=&to_time=: every timeline with an archived base is recovered
/// into a new timeline; 202 with the jobs.
pub async fn recover_tenant(ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    let to_lsn = ctx.query_lsn("to_lsn")?;
    let to_time = to_time(&ctx)?;
    let mut jobs = Vec::new();
    for tl in a.tenant.timelines() {
        if tl.not_serving().is_some() {
            continue;
        }
        let Some(archive) = &tl.wal_archive else {
            continue;
        };
        let has_base = archive
            .store
            .list()
            .await
            .map_err(|e| ApiError::Internal(format!("listing the WAL archive: {e}")))?
            .iter()
            .any(|o| {
                matches!(
                    crate::wal_archive::manifest::parse_object_name(&o.name, 16 << 20),
                    Some((crate::wal_archive::manifest::ArchiveObject::BaseManifest, _))
                )
            });
        if !has_base {
            continue;
        }
        let req = RecoverRequest {
            source: tl.timeline_id,
            from_lsn: None,
            to_lsn,
            to_time: to_time.clone(),
            target: None,
            periodic: false,
        };
        let (job, _) = start_recovery(&a.tenant, req).await?;
        jobs.push(job.status());
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "jobs": jobs }),
    ))
}

/// POST .../timeline/:timeline_id/scrub?other=&lsn=: 202 with the job.
pub async fn scrub(ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    let other = ctx
        .query("other")
        .ok_or_else(|| ApiError::BadRequest("missing other parameter".into()))?;
    let other = other.parse().map_err(|_| {
        ApiError::BadRequest(format!("invalid other {other:?}: expected 32 hex digits"))
    })?;
    let req = ScrubRequest {
        timeline: ctx.timeline_id()?,
        other,
        lsn: ctx.query_lsn("lsn")?,
        periodic: false,
    };
    let job = start_scrub(&a.tenant, req).await?;
    Ok(json_response(StatusCode::ACCEPTED, &job.status()))
}

/// GET /v1/tenant/:tenant_id/job: every job of the tenant.
pub async fn jobs(ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    Ok(json_response(StatusCode::OK, &a.tenant.jobs.list()))
}

/// GET /v1/tenant/:tenant_id/job/:job_id.
pub async fn job(ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    let id = ctx.param("job_id")?;
    let status = a
        .tenant
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))?;
    Ok(json_response(StatusCode::OK, &status))
}
