//! Timeline routes: create (branch; bootstrap), list, detail, delete, and the maintenance routes.

use std::sync::Arc;

use http_body_util::Full;
use hyper::{Response, StatusCode, header};

use super::error::{ApiError, json_response};
use super::models::*;
use super::request::parse_json;
use super::routes::{HandlerResult, RequestContext};
use crate::pg::PgVersion;
use crate::repository::Key;
use crate::repository::datadir::LsnForTimestamp;
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
        let req: FollowRequest = parse_json(&body)?;
        if a.tenant.timeline(req.new_timeline_id).is_ok() {
            return Err(ApiError::Conflict(format!(
                "timeline {} already exists",
                req.new_timeline_id
            )));
        }
        let timeout = a.tenant.conf().walreceiver_connect_timeout.get();
        let expected = req
            .pg_version
            .map(PgVersion::from_major)
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("pg_version: {e}")))?;
        let tl = crate::walreceiver::follow::bootstrap_from_primary(
            &a.tenant,
            req.new_timeline_id,
            &req.wal_source,
            expected,
            timeout,
        )
        .await
        .map_err(|e| match e {
            crate::walreceiver::follow::FollowError::Source { .. }
            | crate::walreceiver::follow::FollowError::Version(_) => {
                ApiError::BadRequest(e.to_string())
            }
            e => ApiError::Internal(e.to_string()),
        })?;
        a.wal_sources
            .set(&tl, Some(req.wal_source), true)
            .map_err(ApiError::Internal)?;
        let info = TimelineInfo::of(&tl).with_receiver(a.wal_sources.get(tl.timeline_id));
        return Ok(json_response(StatusCode::CREATED, &info));
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
    let version = match req.pg_version {
        Some(v) => PgVersion::from_major(v)
            .map_err(|e| ApiError::BadRequest(format!("pg_version: {e}")))?,
        None => PgVersion::V15,
    };
    if a.tenant.timeline(req.new_timeline_id).is_ok() {
        return Err(ApiError::Conflict(format!(
            "timeline {} already exists",
            req.new_timeline_id
        )));
    }
    let node = ctx.state.mgr.node();
    let (tl, _) = crate::import::initdb::bootstrap_timeline(
        &a.tenant,
        req.new_timeline_id,
        version,
        &node.pg_distrib_dir,
        &node.superuser,
        &node.locale,
        &node.walredo_user,
    )
    .await?;
    Ok(json_response(StatusCode::CREATED, &TimelineInfo::of(&tl)))
}

/// PUT .../timeline/:timeline_id/import_basebackup?base_lsn=&end_lsn=&pg_version=15, body: a base backup
/// tar (`pg_basebackup -Ft -X none`). Creates the timeline with the archive's files at base_lsn. The data is
/// consistent once the WAL from base_lsn to end_lsn has been ingested on top.
pub async fn import_basebackup(mut ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    let id = ctx.timeline_id()?;
    let base_lsn = ctx
        .query_lsn("base_lsn")?
        .ok_or_else(|| ApiError::BadRequest("missing base_lsn parameter".into()))?;
    let end_lsn = ctx
        .query_lsn("end_lsn")?
        .ok_or_else(|| ApiError::BadRequest("missing end_lsn parameter".into()))?;
    let version: PgVersion = ctx
        .query("pg_version")
        .ok_or_else(|| ApiError::BadRequest("missing pg_version parameter".into()))?
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("pg_version: {e}")))?;
    if end_lsn < base_lsn || !base_lsn.is_valid() {
        return Err(ApiError::BadRequest(format!(
            "end_lsn {end_lsn} must not be below base_lsn {base_lsn}, which must not be 0"
        )));
    }
    if a.tenant.timeline(id).is_ok() {
        return Err(ApiError::Conflict(format!("timeline {id} already exists")));
    }
    let limit = ctx.state.mgr.node().import_max_bytes;
    let too_large = |n: u64| {
        ApiError::PayloadTooLarge(format!(
            "the archive is larger than import_max_bytes ({n} > {limit} bytes)"
        ))
    };
    if let Some(n) = ctx.content_length()
        && n > limit
    {
        return Err(too_large(n));
    }
    // The archive goes to a temp file first (the importer reads it synchronously on a blocking thread); a
    // crash leaves it behind as `*.tmp`, which the next load of the tenant removes.
    let spool = a.tenant.dir().join(format!("import-{id}.tar.tmp"));
    let body = ctx
        .body
        .take()
        .ok_or_else(|| ApiError::Internal("no request body".into()))?;
    let result = match spool_body(body, &spool, limit).await {
        Ok(()) => import_spooled(&a, id, version, &spool, base_lsn).await,
        Err(SpoolError::TooLarge(n)) => Err(too_large(n)),
        Err(SpoolError::Api(e)) => Err(e),
    };
    let _ = tokio::fs::remove_file(&spool).await;
    let tl = result?;
    Ok(json_response(StatusCode::CREATED, &TimelineInfo::of(&tl)))
}

enum SpoolError {
    /// The body passed the limit; the bytes received by then.
    TooLarge(u64),
    Api(ApiError),
}

/// Writes the request body to `path`, refusing one longer than `limit` bytes.
async fn spool_body(
    mut body: hyper::body::Incoming,
    path: &std::path::Path,
    limit: u64,
) -> Result<(), SpoolError> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let io =
        |e: std::io::Error| SpoolError::Api(ApiError::Internal(format!("{}: {e}", path.display())));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            SpoolError::Api(ApiError::BadRequest(format!(
                "cannot read the request body: {e}"
            )))
        })?;
        if let Some(data) = frame.data_ref() {
            received += data.len() as u64;
            if received > limit {
                return Err(SpoolError::TooLarge(received));
            }
            file.write_all(data).await.map_err(io)?;
        }
    }
    file.flush().await.map_err(io)
}

async fn import_spooled(
    a: &Attached,
    id: crate::id::TimelineId,
    version: PgVersion,
    spool: &std::path::Path,
    lsn: crate::pg::Lsn,
) -> Result<Arc<Timeline>, ApiError> {
    let file = std::fs::File::open(spool)
        .map_err(|e| ApiError::Internal(format!("{}: {e}", spool.display())))?;
    let size = file.metadata().ok().map(|m| m.len());
    let tl = a.tenant.create_timeline_for_import(id, version).await?;
    let imported = async {
        let stats = crate::import::datadir::import_tar_sized(
            &tl,
            std::io::BufReader::new(file),
            lsn,
            None,
            size,
        )
        .await?;
        tl.finish_import(lsn)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        crate::wal_archive::base::archive_base(
            &tl,
            crate::wal_archive::base::BaseSource::Tar(spool.to_path_buf()),
            crate::wal_archive::BaseKind::Basebackup,
            lsn,
            None,
            stats.system_identifier,
        )
        .await;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = imported {
        // A failed import leaves values above the timeline's last LSN; the timeline goes.
        let _ = a.tenant.delete_timeline(id).await;
        return Err(e);
    }
    Ok(tl)
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
    let (a, tl) = timeline(&ctx).await?;
    Ok(json_response(
        StatusCode::OK,
        &TimelineInfo::of(&tl).with_receiver(a.wal_sources.get(tl.timeline_id)),
    ))
}

pub async fn delete(ctx: RequestContext) -> HandlerResult {
    let a = tenant(&ctx).await?;
    let id = ctx.timeline_id()?;
    a.tenant.delete_timeline(id).await?;
    a.wal_sources.forget(id).map_err(ApiError::Internal)?;
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
    let options = crate::repository::tasks::compaction::CompactOptions {
        force_l0: ctx.query_bool("force_l0_compaction")?,
        force_images: ctx.query_bool("force_image_layer_creation")?,
    };
    let result = tl
        .compact_with(options)
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
    if let Some(why) = tl.not_serving() {
        return Err(ApiError::Conflict(why));
    }
    let key_text = ctx
        .query("key")
        .ok_or_else(|| ApiError::BadRequest("missing key parameter".into()))?;
    let key: Key = key_text
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("{e}")))?;
    let lsn = ctx
        .query_lsn("lsn")?
        .unwrap_or_else(|| tl.last_record_lsn());
    let started = std::time::Instant::now();
    let value = tl.get(key, lsn).await;
    crate::metrics::GETPAGE_SECONDS.observe(started.elapsed());
    if value.is_err() {
        crate::metrics::GETPAGE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let mut response = Response::new(Full::new(value?));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// GET .../get_lsn_by_timestamp?timestamp=<RFC3339>: where a point in time falls in the timeline's
/// history, from the commit records' times.
pub async fn get_lsn_by_timestamp(ctx: RequestContext) -> HandlerResult {
    let (_, tl) = timeline(&ctx).await?;
    let text = ctx
        .query("timestamp")
        .ok_or_else(|| ApiError::BadRequest("missing timestamp parameter".into()))?;
    let timestamp = pg_timestamp(&text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid timestamp {text:?}: expected RFC 3339 in UTC, such as 2026-11-21T10:00:00.5Z"
        ))
    })?;
    let found = tl.find_lsn_for_timestamp(timestamp).await?;
    let (kind, lsn) = match found.kind {
        LsnForTimestamp::Present(lsn) => ("present", lsn),
        LsnForTimestamp::Future(lsn) => ("future", lsn),
        LsnForTimestamp::Past(lsn) => ("past", lsn),
        LsnForTimestamp::NoData(lsn) => ("nodata", lsn),
    };
    let mut body = serde_json::json!({ "lsn": lsn, "kind": kind });
    if let Some(before) = found.before_next_commit {
        body["before_next_commit_lsn"] = serde_json::json!(before);
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// GET .../restore_points: the oldest and newest LSN a restore (a fullbackup) can give, the range of times
/// `pageserver restore --time` accepts (from the newest commit at the oldest LSN, or the first commit after
/// it, to the newest commit), and the named restore points within the retention, oldest first.
pub async fn restore_points(ctx: RequestContext) -> HandlerResult {
    let (_, tl) = timeline(&ctx).await?;
    let (oldest, newest) = tl.restorable_lsns();
    let oldest_time = tl.oldest_restorable_time().await?.map(pg_time_text);
    let newest_time = (tl.commit_ts(newest).await?).map(|c| pg_time_text(c.newest));
    let named: Vec<serde_json::Value> = (tl.restore_points(newest).await?.into_iter())
        .filter(|p| p.lsn >= oldest)
        .map(|p| serde_json::json!({"name": p.name, "lsn": p.lsn, "time": pg_time_text(p.time)}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "oldest_lsn": oldest,
            "oldest_time": oldest_time,
            "newest_lsn": newest,
            "newest_time": newest_time,
            "restore_points": named,
        }),
    ))
}

/// PostgreSQL's TimestampTz as RFC 3339 in UTC with microseconds.
pub(crate) fn pg_time_text(ts: i64) -> String {
    const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;
    let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(PG_EPOCH_UNIX_SECS);
    let micros = std::time::Duration::from_micros(ts.unsigned_abs());
    let t = if ts >= 0 {
        epoch.checked_add(micros)
    } else {
        epoch.checked_sub(micros)
    };
    t.map_or_else(
        || ts.to_string(),
        |t| humantime::format_rfc3339_micros(t).to_string(),
    )
}

/// An RFC 3339 time as PostgreSQL's TimestampTz (µs since 2000-01-01 UTC); None if malformed or out of range.
pub(crate) fn pg_timestamp(text: &str) -> Option<i64> {
    const PG_EPOCH_UNIX_SECS: i128 = 946_684_800;
    let t = humantime::parse_rfc3339(text).ok()?;
    let unix_micros = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    };
    i64::try_from(unix_micros - PG_EPOCH_UNIX_SECS * 1_000_000).ok()
}

/// GET .../keyspace?at_lsn=X/Y: every key with a value at the LSN (default last_record_lsn), as Neon's
/// Partitioning JSON: sorted, non-overlapping, end-exclusive ranges of 36-hex keys.
pub async fn keyspace(ctx: RequestContext) -> HandlerResult {
    let (_, tl) = timeline(&ctx).await?;
    let last = tl.last_record_lsn();
    let at = ctx.query_lsn("at_lsn")?.unwrap_or(last);
    if at > last {
        return Err(ApiError::BadRequest(format!(
            "at_lsn {at} is past the timeline's last record {last}"
        )));
    }
    let ks = tl.keyspace(at).await?;
    let keys: Vec<[String; 2]> = ks
        .ranges
        .iter()
        .map(|r| [r.start.to_string(), r.end.to_string()])
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "keys": keys, "sparse_keys": [], "at_lsn": at }),
    ))
}

/// GET .../layer: the in-memory and historic layers.
/// GET .../layer_map.svg: the layer map drawn (repository/draw.rs).
pub async fn layer_map_svg(ctx: RequestContext) -> HandlerResult {
    use crate::repository::draw::{DrawLayer, Mark, layer_map_svg};
    let (a, tl) = timeline(&ctx).await?;
    let layers: Vec<DrawLayer> = {
        let map = tl.layers.read().unwrap_or_else(|p| p.into_inner());
        (map.historic.iter())
            .map(|h| {
                let name = h.name();
                DrawLayer {
                    name: name.to_string(),
                    keys: name.key_range().clone(),
                    lsns: name.lsn_range(),
                    image: !name.is_delta(),
                    l0: is_l0(name),
                    size: h.file_size(),
                }
            })
            .collect()
    };
    let mut marks = vec![
        Mark {
            class: "last-record",
            label: "last record".into(),
            lsn: tl.last_record_lsn(),
        },
        Mark {
            class: "pitr-horizon",
            label: "PITR horizon (next GC cutoff)".into(),
            lsn: tl.gc_cutoff_candidate(None),
        },
        Mark {
            class: "gc-cutoff",
            label: "GC cutoff".into(),
            lsn: tl.gc_cutoff(),
        },
    ];
    let id = ctx.timeline_id()?;
    for child in a.tenant.timelines() {
        if let Some((parent, at)) = child.ancestor()
            && parent == id
        {
            marks.push(Mark {
                class: "branch-point",
                label: format!("branch {}", child.timeline_id),
                lsn: at,
            });
        }
    }
    let title = format!("tenant {} timeline {id}", a.tenant.id);
    let svg = layer_map_svg(&title, &layers, &marks);
    let mut response = Response::new(Full::new(bytes::Bytes::from(svg)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("image/svg+xml"),
    );
    Ok(response)
}

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

/// PUT .../timeline/:timeline_id/wal_source: `{"connstr", "slot_name"}` to follow that primary from the
/// timeline's last record, or `null` to stop.
pub async fn set_wal_source(mut ctx: RequestContext) -> HandlerResult {
    let (a, tl) = timeline(&ctx).await?;
    let source: Option<crate::walreceiver::receiver::WalSource> = ctx.json().await?;
    a.wal_sources
        .set(&tl, source, true)
        .map_err(ApiError::Internal)?;
    Ok(json_response(
        StatusCode::OK,
        &TimelineInfo::of(&tl).with_receiver(a.wal_sources.get(tl.timeline_id)),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_to_pg_timestamp() {
        use super::pg_timestamp;
        assert_eq!(pg_timestamp("2000-01-01T00:00:00Z"), Some(0));
        assert_eq!(pg_timestamp("2000-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(pg_timestamp("1999-12-31T23:59:59Z"), Some(-1_000_000));
        assert_eq!(
            pg_timestamp("2026-11-21T10:00:00Z"),
            Some(((2026 - 2000) * 365 + 7 + 324) * 86_400_000_000 + 10 * 3_600_000_000)
        );
        for bad in ["", "yesterday", "2026-11-21", "2026-13-01T00:00:00Z"] {
            assert_eq!(pg_timestamp(bad), None, "{bad}");
        }
    }
}
