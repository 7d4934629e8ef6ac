//! Tenant routes: create, list, detail, delete, location_config (attach/detach), config.

use std::collections::BTreeMap;

use hyper::StatusCode;

use super::error::{ApiError, json_response};
use super::models::*;
use super::request::{from_value, parse_json};
use super::routes::{HandlerResult, RequestContext};
use crate::config::TenantConfigOverrides;
use crate::id::TenantId;
use crate::repository::mgr::Attached;

async fn tenant_info(a: &Attached) -> TenantInfo {
    TenantInfo {
        id: a.tenant.id,
        state: "Active",
        broken_reason: None,
        current_physical_size: a.tenant.timelines().iter().map(|t| t.physical_size()).sum(),
        attachment_status: AttachmentStatus { slug: "attached" },
        generation: a.generation.0,
    }
}

/// Splits a JSON object into one field and the rest (for bodies that flatten a config next to an id).
fn take_field(
    bytes: &[u8],
    field: &str,
) -> Result<
    (
        serde_json::Value,
        serde_json::Map<String, serde_json::Value>,
    ),
    ApiError,
> {
    let value: serde_json::Value = parse_json(bytes)?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(ApiError::BadRequest(
            "invalid request body: expected a JSON object".into(),
        ));
    };
    let taken = map.remove(field).ok_or_else(|| {
        ApiError::BadRequest(format!("invalid request body: missing field `{field}`"))
    })?;
    Ok((taken, map))
}

fn parse_tenant_id(v: serde_json::Value, field: &str) -> Result<TenantId, ApiError> {
    from_value(v, field)
}

fn parse_overrides(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<TenantConfigOverrides, ApiError> {
    from_value(serde_json::Value::Object(map), "tenant config")
}

/// POST /v1/tenant: `{"new_tenant_id", ...tenant config}`.
pub async fn create(mut ctx: RequestContext) -> HandlerResult {
    let body = ctx.body_bytes(1 << 20).await?;
    let (id, rest) = take_field(&body, "new_tenant_id")?;
    let id = parse_tenant_id(id, "new_tenant_id")?;
    let overrides = parse_overrides(rest)?;
    let (a, created) = ctx.state.mgr.create(id, overrides).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &tenant_info(&a).await))
}

fn broken_info(id: TenantId, reason: String) -> TenantInfo {
    TenantInfo {
        id,
        state: "Broken",
        broken_reason: Some(reason),
        current_physical_size: 0,
        attachment_status: AttachmentStatus { slug: "attached" },
        generation: 0,
    }
}

pub async fn list(ctx: RequestContext) -> HandlerResult {
    let mut out = Vec::new();
    for a in ctx.state.mgr.list().await {
        out.push(tenant_info(&a).await);
    }
    for (id, reason) in ctx.state.mgr.broken() {
        out.push(broken_info(id, reason));
    }
    out.sort_by_key(|t| t.id);
    Ok(json_response(StatusCode::OK, &out))
}

pub async fn detail(ctx: RequestContext) -> HandlerResult {
    let a = match ctx.state.mgr.get(ctx.tenant_id()?).await {
        Ok(a) => a,
        Err(crate::repository::mgr::MgrError::Broken { id, reason }) => {
            let details = TenantDetails {
                info: broken_info(id, reason),
                walredo: WalRedoInfo { pids: vec![] },
                timelines: vec![],
            };
            return Ok(json_response(StatusCode::OK, &details));
        }
        Err(e) => return Err(e.into()),
    };
    let details = TenantDetails {
        info: tenant_info(&a).await,
        walredo: WalRedoInfo {
            pids: a.redo.pids().await,
        },
        timelines: a.tenant.timelines().iter().map(|t| t.timeline_id).collect(),
    };
    Ok(json_response(StatusCode::OK, &details))
}

pub async fn delete(ctx: RequestContext) -> HandlerResult {
    ctx.state.mgr.delete(ctx.tenant_id()?).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({})))
}

/// PUT /v1/tenant/:tenant_id/location_config: modes AttachedSingle and Detached.
pub async fn location_config(mut ctx: RequestContext) -> HandlerResult {
    let id = ctx.tenant_id()?;
    let conf: LocationConfig = ctx.json().await?;
    if conf.shard_count > 1 || conf.shard_number != 0 {
        return Err(ApiError::BadRequest(
            "sharded tenants are not supported".into(),
        ));
    }
    match conf.mode {
        LocationMode::AttachedSingle => {
            ctx.state
                .mgr
                .attach(id, conf.tenant_conf, conf.generation)
                .await?;
        }
        LocationMode::Detached => ctx.state.mgr.detach(id).await.or_else(|e| match e {
            crate::repository::mgr::MgrError::NotFound(_) => Ok(()),
            e => Err(e),
        })?,
        other => {
            return Err(ApiError::BadRequest(format!(
                "location mode {other:?} is not supported; use AttachedSingle or Detached"
            )));
        }
    }
    let shards = if conf.mode == LocationMode::AttachedSingle {
        vec![ShardLocation {
            shard_id: id,
            node_id: ctx.state.node_id,
        }]
    } else {
        vec![]
    };
    Ok(json_response(
        StatusCode::OK,
        &LocationConfigResponse {
            shards,
            stripe_size: 0,
        },
    ))
}

/// GET /v1/tenant/:tenant_id/config.
pub async fn get_config(ctx: RequestContext) -> HandlerResult {
    let a = ctx.state.mgr.get(ctx.tenant_id()?).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "tenant_specific_overrides": a.overrides, "effective_config": a.tenant.conf() }),
    ))
}

/// PATCH /v1/tenant/config: `{"tenant_id", key: value, key: null (back to the default)}`.
pub async fn patch_config(mut ctx: RequestContext) -> HandlerResult {
    let body = ctx.body_bytes(1 << 20).await?;
    let (id, rest) = take_field(&body, "tenant_id")?;
    let id = parse_tenant_id(id, "tenant_id")?;
    ctx.authorize_tenant(id)?;
    let mut set = serde_json::Map::new();
    let mut unset = Vec::new();
    let known: BTreeMap<&str, ()> = crate::config::TENANT_CONFIG_KEYS
        .iter()
        .map(|k| (*k, ()))
        .collect();
    for (k, v) in rest {
        if v.is_null() {
            if !known.contains_key(k.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "invalid tenant config: unknown field `{k}`"
                )));
            }
            unset.push(k);
        } else {
            set.insert(k, v);
        }
    }
    let patch = parse_overrides(set)?;
    let a = ctx.state.mgr.get(id).await?;
    let merged = a.overrides.merge(&patch, &unset);
    let a = ctx.state.mgr.set_overrides(id, merged).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "tenant_specific_overrides": a.overrides, "effective_config": a.tenant.conf() }),
    ))
}

/// POST /v1/tenant/:tenant_id/walredo_ping: checks the tenant's WAL redo works for the PostgreSQL version of
/// each of its timelines (15 if it has none), launching a process where none runs, and reports its processes
/// and the round trip.
pub async fn walredo_ping(ctx: RequestContext) -> HandlerResult {
    let a = ctx.state.mgr.get(ctx.tenant_id()?).await?;
    let mut versions: Vec<crate::pg::PgVersion> =
        a.tenant.timelines().iter().map(|t| t.pg_version).collect();
    versions.sort();
    versions.dedup();
    if versions.is_empty() {
        versions.push(crate::pg::PgVersion::V15);
    }
    let started = std::time::Instant::now();
    for version in versions {
        let answer = match a.redo.pool(version) {
            Ok(pool) => pool
                .request(&[b'H', 0, 0, 0, 4])
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        answer.map_err(|e| {
            ApiError::ShuttingDown(format!(
                "WAL redo of PostgreSQL {version} does not answer: {e}"
            ))
        })?;
    }
    let ping_us = started.elapsed().as_micros() as u64;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "pids": a.redo.pids().await, "ping_us": ping_us }),
    ))
}
