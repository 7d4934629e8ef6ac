//! Timeline routes: create (branch; bootstrap), list, detail, delete, and the maintenance routes.

use std::sync::Arc;

use http_body_util::Full;
use hyper::{Response, StatusCode, header};

use super::error::{ApiError, json_response};
use super::models::*;
use super::request::parse_json;
use super::routes::{HandlerResult, RequestContext};
use crate::repository::Key;
use crate::repository::mgr::Attached;
use crate::repository::tasks::plan::is_l0;
use crate::repository::timeline::Timeline;

async fn tenant(ctx: &RequestContext) -> Result<Attached, ApiError> {
    Ok(ctx.state.mgr.get(ctx.tenant_id()?).await?)
}

async fn timeline(ctx: &RequestContext) -> Result<(Attached, Arc<Timeline>), ApiError> {
    let a = tenant(ctx).await?;
    let tl = a.tenant.timeline(ctx.timeline_id()?)?;
    Ok((a, tl))
}

/// POST /v1/tenant/:tenant_id/timeline.
pub async fn create(mut ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    let body = ctx.body_bytes(1 << 20).await?;
    let value: serde_json::Value = parse_json(&body)?;
    let has = |k: &str| value.get(k).is_some();
    if has("wal_source") {
        return Err(ApiError::BadRequest(
            "following a primary (wal_source) is not supported yet".into(),
        ));
    }
    if has("ancestor_timeline_id") {
        let req: BranchRequest = parse_json(&body)?;
        if a.tenant.timeline(req.new_timeline_id).is_ok() {
            return Err(ApiError::Conflict(format!(
                "timeline {} already exists",
                req.new_timeline_id
            )));
        }
        let tl = a
            .tenant
            .branch_timeline(
                req.new_timeline_id,
                req.ancestor_timeline_id,
                req.ancestor_start_lsn,
            )
            .await?;
        return Ok(json_response(StatusCode::CREATED, &TimelineInfo::of(&tl)));
    }
    let req: BootstrapRequest = parse_json(&body)?;
    if let Some(v) = req.pg_version
        && v != 15
    {
        return Err(ApiError::BadRequest(format!(
            "pg_version {v} is not supported; only 15"
        )));
    }
    if a.tenant.timeline(req.new_timeline_id).is_ok() {
        return Err(ApiError::Conflict(format!(
            "timeline {} already exists",
            req.new_timeline_id
        )));
    }
    Err(ApiError::BadRequest(
        "bootstrapping a timeline with initdb is not supported yet".into(),
    ))
}

pub async fn list(ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    let infos: Vec<TimelineInfo> = a
        .tenant
        .timelines()
        .iter()
        .map(|t| TimelineInfo::of(t))
        .collect();
    Ok(json_response(StatusCode::OK, &infos))
}

pub async fn detail(ctx: RequestContext) -> HandlerResult {
    let (_, tl) = timeline(&ctx).await?;
    Ok(json_response(StatusCode::OK, &TimelineInfo::of(&tl)))
}

pub async fn delete(ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    a.tenant.delete_timeline(ctx.timeline_id()?).await?;
    Ok(json_response(StatusCode::ACCEPTED, &serde_json::json!({})))
}

/// PUT .../do_gc: `{"gc_horizon": bytes | null}`.
pub async fn do_gc(mut ctx: RequestContext) -> HandlerResult {
    let (a, tl) = timeline(&ctx).await?;
    let body = ctx.body_bytes(1 << 20).await?;
    let req: GcRequest = if body.iter().all(|b| b.is_ascii_whitespace()) {
        GcRequest::default()
    } else {
        parse_json(&body)?
    };
    let retain = a.tenant.branch_points(tl.timeline_id);
    let result = tl
        .gc(req.gc_horizon, &retain)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &result))
}

/// PUT .../compact.
pub async fn compact(ctx: RequestContext) -> HandlerResult {
    let (_, tl) = timeline(&ctx).await?;
    let result = tl
        .compact()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &result))
}

/// PUT .../checkpoint: freeze and flush now (it always waits until flushed).
pub async fn checkpoint(ctx: RequestContext) -> HandlerResult {
    let (_, tl) = timeline(&ctx).await?;
    let _ = ctx.query_bool("wait_until_flushed")?;
    let lsn = tl
        .checkpoint()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "disk_consistent_lsn": lsn }),
    ))
}

/// GET .../getpage?key=<36 hex>&lsn=X/Y: the value of any key (application/octet-stream).
pub async fn getpage(ctx: RequestContext) -> HandlerResult {
    let (_, tl) = timeline(&ctx).await?;
    let key_text = ctx
        .query("key")
        .ok_or_else(|| ApiError::BadRequest("missing key parameter".into()))?;
    let key: Key = key_text
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("{e}")))?;
    let lsn = ctx
        .query_lsn("lsn")?
        .unwrap_or_else(|| tl.last_record_lsn());
    let value = tl.get(key, lsn).await?;
    let mut response = Response::new(Full::new(value));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// GET .../layer: the in-memory and historic layers.
pub async fn layers(ctx: RequestContext) -> HandlerResult {
    let (_, tl) = timeline(&ctx).await?;
    Ok(json_response(StatusCode::OK, &layer_map_info(&tl)))
}

fn layer_map_info(tl: &Timeline) -> LayerMapInfo {
    let map = tl.layers.read().unwrap_or_else(|p| p.into_inner());
    let mut in_memory = Vec::new();
    if let Some(open) = &map.open {
        in_memory.push(InMemoryLayerInfo {
            kind: "Open",
            lsn_start: open.start_lsn(),
            lsn_end: None,
            size: open.size(),
        });
    }
    for f in &map.frozen {
        in_memory.push(InMemoryLayerInfo {
            kind: "Frozen",
            lsn_start: f.layer.start_lsn(),
            lsn_end: f.layer.end_lsn(),
            size: f.layer.size(),
        });
    }
    let historic = map
        .historic
        .iter()
        .map(|h| {
            let name = h.name();
            let range = name.lsn_range();
            LayerInfo {
                kind: if name.is_delta() { "Delta" } else { "Image" },
                layer_file_name: name.to_string(),
                layer_file_size: h.file_size(),
                lsn_start: range.start,
                lsn_end: range.end,
                l0: is_l0(name),
            }
        })
        .collect();
    LayerMapInfo {
        in_memory_layers: in_memory,
        historic_layers: historic,
    }
}
