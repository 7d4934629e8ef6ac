//! A recovery job: validate the request, mark the target, then in the background fetch the archive's
//! manifests, plan, check and import the base, and replay segment after segment, each checked before its
//! first byte is decoded (the module doc of [`super`] lists the invariants).

use std::sync::Arc;

use bytes::Bytes;
use tracing::{Instrument, info, info_span, warn};

use super::RecoverError;
use super::jobs::{Job, JobKind};
use super::plan::{Found, PlanInput, Start, Step, pick_objects, plan};
use crate::id::TimelineId;
use crate::pg::constants::{DEFAULT_WAL_SEGMENT_SIZE, RM_XACT_ID};
use crate::pg::{Lsn, RecordBody, WalStreamDecoder, decode_record, parse_body};
use crate::repository::metadata::RecoveryMark;
use crate::repository::tenant::Tenant;
use crate::repository::timeline::Timeline;
use crate::wal_archive::manifest::{
    ArchiveObject, BaseManifest, SegmentManifest, Sha256Digest, parse_object_name,
};
use crate::walingest::WalIngest;

/// Records ingested per batch during replay.
const BATCH: usize = 512;

/// `POST .../recover`, parsed.
#[derive(Clone, Debug)]
pub struct RecoverRequest {
    pub source: TimelineId,
    pub from_lsn: Option<Lsn>,
    /// Exclusive: records that end above it are not replayed.
    pub to_lsn: Option<Lsn>,
    /// The text given, and it as a PostgreSQL TimestampTz: replay stops before the first commit or abort
    /// record stamped later.
    pub to_time: Option<(String, i64)>,
    pub target: Option<TimelineId>,
    /// Started by the periodic scrub rather than by a request.
    pub periodic: bool,
}

/// Checks the request, makes or marks the target, and starts the job; the target is in the returned status.
pub async fn start_recovery(
    tenant: &Arc<Tenant>,
    req: RecoverRequest,
) -> Result<(Arc<Job>, tokio::sync::oneshot::Receiver<()>), RecoverError> {
    if req.from_lsn.is_some() != req.target.is_some() {
        return Err(RecoverError::BadRequest(
            "from_lsn and target come both or neither".into(),
        ));
    }
    if req.to_lsn.is_some() && req.to_time.is_some() {
        return Err(RecoverError::BadRequest(
            "give to_lsn or to_time, not both".into(),
        ));
    }
    let source = tenant.timeline(req.source)?;
    if source.wal_archive.is_none() {
        return Err(RecoverError::NoArchive(req.source));
    }
    if let (Some(from), Some(to)) = (req.from_lsn, req.to_lsn)
        && to <= from
    {
        return Err(RecoverError::BadRequest(format!(
            "to_lsn {to} must be above from_lsn {from}"
        )));
    }
    let target = match req.target {
        Some(id) => {
            if id == req.source {
                return Err(RecoverError::BadRequest(
                    "a recovery writes into a different timeline than its source".into(),
                ));
            }
            let t = tenant.timeline(id)?;
            if t.pg_version != source.pg_version {
                return Err(RecoverError::BadRequest(format!(
                    "target {id} is a PostgreSQL {} timeline, the source's WAL is of PostgreSQL {}",
                    t.pg_version, source.pg_version
                )));
            }
            let from = req.from_lsn.expect("checked: both or neither");
            let last = t.last_record_lsn();
            if last > from {
                return Err(RecoverError::Conflict(format!(
                    "target {id} is at {last}, more advanced than from_lsn {from}"
                )));
            }
            if last < from {
                return Err(RecoverError::BadRequest(format!(
                    "target {id} is at {last}, below from_lsn {from}: give a target at from_lsn, such as a \
                     branch of the source at from_lsn"
                )));
            }
            if tenant.jobs.running_on(id) {
                return Err(RecoverError::Conflict(format!(
                    "a job is already running on timeline {id}"
                )));
            }
            Some(t)
        }
        None => None,
    };
    let job = tenant
        .jobs
        .add(JobKind::Recover, tenant.id, req.source, |s| {
            s.from_lsn = req.from_lsn;
            s.to_lsn = req.to_lsn;
            s.to_time = req.to_time.as_ref().map(|(t, _)| t.clone());
            s.periodic = req.periodic;
        });
    let job_id = job.status().job_id;
    let mark = RecoveryMark {
        job_id: job_id.clone(),
        source_timeline: req.source,
        state: "running".into(),
        error: None,
    };
    let (target, created) = match target {
        Some(t) => (t, false),
        None => {
            let id = TimelineId::generate();
            let pg_version = source.pg_version;
            (
                tenant.create_timeline_for_import(id, pg_version).await?,
                true,
            )
        }
    };
    if let Err(e) = set_mark(&target, Some(mark)).await {
        if created {
            let _ = tenant.delete_timeline(target.timeline_id).await;
        }
        return Err(e);
    }
    job.update(|s| s.target_timeline_id = Some(target.timeline_id));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let span = info_span!("recover", tenant_id = %tenant.id, timeline_id = %req.source,
                          target = %target.timeline_id, job_id = %job_id);
    let task = {
        let tenant = tenant.clone();
        let job = job.clone();
        async move {
            let result = Box::pin(run(&tenant, &source, &target, &req, &job, created)).await;
            finish(&tenant, &target, &job, created, result).await;
            let _ = done_tx.send(());
        }
        .instrument(span)
    };
    tenant.spawn_job(task);
    Ok((job, done_rx))
}

async fn set_mark(tl: &Timeline, mark: Option<RecoveryMark>) -> Result<(), RecoverError> {
    tl.commit_metadata(|m| m.recovery = mark.clone())
        .await
        .map_err(|e| RecoverError::Timeline(e.to_string()))?;
    *tl.recovery.lock().unwrap_or_else(|p| p.into_inner()) = mark;
    Ok(())
}

async fn finish(
    tenant: &Tenant,
    target: &Arc<Timeline>,
    job: &Job,
    created: bool,
    result: Result<(), RecoverError>,
) {
    let result = match result {
        Ok(()) => set_mark(target, None).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            info!(lsn = %target.last_record_lsn(), "recovery done");
            job.update(|s| s.lsn_reached = Some(target.last_record_lsn()));
            job.finish(Ok(()));
        }
        Err(e) => {
            warn!(error = %e, "recovery failed");
            if created {
                if let Err(de) = tenant.delete_timeline(target.timeline_id).await {
                    warn!(error = %de, "cannot delete the target of a failed recovery");
                }
            } else {
                let mark = RecoveryMark {
                    job_id: job.status().job_id,
                    source_timeline: job.status().timeline_id,
                    state: "failed".into(),
                    error: Some(e.to_string()),
                };
                if let Err(me) = set_mark(target, Some(mark)).await {
                    warn!(error = %me, "cannot mark the target of a failed recovery");
                }
            }
            crate::metrics::RECOVERIES_FAILED.inc();
            job.finish(Err(e.to_string()));
        }
    }
}

/// What the archive of `source` holds: its base manifest (if any) and every segment manifest, fetched.
struct Archive {
    base: Option<(String, BaseManifest)>,
    segments: Vec<Found>,
    orphans: Vec<String>,
}

async fn read_archive(source: &Timeline) -> Result<Archive, RecoverError> {
    let archive = source
        .wal_archive
        .as_ref()
        .ok_or(RecoverError::NoArchive(source.timeline_id))?;
    let seg_size = DEFAULT_WAL_SEGMENT_SIZE;
    let names: Vec<String> = archive
        .store
        .list()
        .await?
        .into_iter()
        .map(|o| o.name)
        .collect();
    let mut base_name: Option<(crate::remote_storage::index::Generation, String)> = None;
    for n in &names {
        if let Some((ArchiveObject::BaseManifest, g)) = parse_object_name(n, seg_size)
            && base_name.as_ref().is_none_or(|(bg, _)| g > *bg)
        {
            base_name = Some((g, n.clone()));
        }
    }
    let base = match base_name {
        Some((g, name)) => {
            let data = archive.store.get(&name).await?;
            let m = BaseManifest::from_json(&name, &data).map_err(|e| RecoverError::Manifest {
                object: name.clone(),
                msg: e.to_string(),
            })?;
            let (object, _) = crate::wal_archive::manifest::base_objects(g);
            Some((object, m))
        }
        None => None,
    };
    let (picked, orphans) = pick_objects(&names, seg_size);
    let mut segments = Vec::with_capacity(picked.len());
    for (manifest_object, data_object, data_present) in picked {
        let bytes = archive.store.get(&manifest_object).await?;
        let manifest = SegmentManifest::from_json(&manifest_object, &bytes).map_err(|e| {
            RecoverError::Manifest {
                object: manifest_object.clone(),
                msg: e.to_string(),
            }
        })?;
        segments.push(Found {
            manifest_object,
            data_object,
            data_present,
            manifest,
        });
    }
    Ok(Archive {
        base,
        segments,
        orphans,
    })
}

async fn run(
    tenant: &Tenant,
    source: &Arc<Timeline>,
    target: &Arc<Timeline>,
    req: &RecoverRequest,
    job: &Job,
    created: bool,
) -> Result<(), RecoverError> {
    let archive = read_archive(source).await?;
    let store = &source.wal_archive.as_ref().expect("checked").store;
    let system_identifier = match (&archive.base, archive.segments.first()) {
        (Some((_, b)), _) => b.system_identifier,
        (None, Some(f)) => source_system(source, f).await,
        (None, None) => 0,
    };
    let (start, prev) = match req.from_lsn {
        Some(from) => (Start::FromLsn(from), target.prev_record_lsn()),
        None => {
            let (_, base) = archive
                .base
                .as_ref()
                .ok_or(RecoverError::NoBase(req.source))?;
            (
                Start::Base {
                    lsn: base.lsn,
                    sha256: base.sha256,
                },
                base.prev_record_lsn,
            )
        }
    };
    let input = PlanInput {
        tenant_id: tenant.id,
        timeline_id: req.source,
        system_identifier,
        segments: archive.segments,
        orphans: archive.orphans,
    };
    let to = req.to_lsn;
    // A base with no WAL after it is a plan of no segments.
    let steps = match plan(&input, start, to) {
        Ok(s) => s,
        Err(super::plan::PlanError::MissingFirst { .. })
            if to.is_none() && input.segments.is_empty() && matches!(start, Start::Base { .. }) =>
        {
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    info!(segments = steps.len(), start = %start.lsn(), "recovery planned");
    if let Some((object, base)) = &archive.base
        && req.from_lsn.is_none()
    {
        import_base(store, object, base, target).await?;
    }
    replay(
        source,
        &input,
        target,
        store,
        &steps,
        start.lsn(),
        prev,
        req,
        job,
        system_identifier,
    )
    .await?;
    if created {
        let initdb_lsn = archive.base.as_ref().map_or(start.lsn(), |(_, b)| b.lsn);
        target
            .finish_import(initdb_lsn)
            .await
            .map_err(|e| RecoverError::Timeline(e.to_string()))?;
    } else {
        target
            .checkpoint()
            .await
            .map_err(|e| RecoverError::Timeline(e.to_string()))?;
    }
    Ok(())
}

/// Without a base, the system the source's archive writer follows (from its WAL source), else the first
/// manifest's.
async fn source_system(source: &Timeline, first: &Found) -> u64 {
    match &source.wal_archive {
        Some(a) => a
            .system_id()
            .await
            .unwrap_or(first.manifest.system_identifier),
        None => first.manifest.system_identifier,
    }
}

async fn import_base(
    store: &crate::wal_archive::ArchiveStore,
    object: &str,
    base: &BaseManifest,
    target: &Arc<Timeline>,
) -> Result<(), RecoverError> {
    let data = store.get(object).await?;
    let got = Sha256Digest::of(&data);
    if got != base.sha256 || data.len() as u64 != base.size {
        return Err(RecoverError::BaseTampered {
            object: store.describe(object),
            expected: base.sha256.to_string(),
            got: got.to_string(),
        });
    }
    let reader = zstd::Decoder::new(std::io::Cursor::new(data))
        .map_err(|e| RecoverError::Import(format!("{object}: {e}")))?;
    let stats = crate::import::datadir::import_tar(target, reader, base.lsn, base.prev_record_lsn)
        .await
        .map_err(|e| RecoverError::Import(e.to_string()))?;
    if stats.system_identifier != base.system_identifier {
        return Err(RecoverError::Import(format!(
            "the base's pg_control names system {}, its manifest {}",
            stats.system_identifier, base.system_identifier
        )));
    }
    info!(lsn = %base.lsn, blocks = stats.blocks, "recovery imported the base");
    Ok(())
}

/// The object that replaced the partial tail of `step` (the completed segment, else the newest partial of that
/// segment reaching at least as far), with the plan's manifest checks.
async fn replacement_of(
    source: &Timeline,
    input: &PlanInput,
    step: &Step,
) -> Result<Found, RecoverError> {
    let m = &step.found.manifest;
    let archive = read_archive(source).await?;
    let same: Vec<Found> = archive
        .segments
        .into_iter()
        .filter(|f| f.manifest.segno() == m.segno() && f.manifest.end_lsn >= m.end_lsn)
        .collect();
    let best = same
        .iter()
        .find(|f| !f.manifest.partial)
        .or_else(|| same.iter().max_by_key(|f| f.manifest.end_lsn))
        .cloned()
        .ok_or_else(|| super::plan::PlanError::MissingObject {
            segment: m.segment.clone(),
            manifest: step.found.manifest_object.clone(),
            object: step.found.data_object.clone(),
        })?;
    super::plan::check_manifest(input, &best)?;
    Ok(best)
}

/// `xlp_sysid` of a long page header (the first page of a segment): after magic (2), info (2), tli (4),
/// pageaddr (8), rem_len (4) and padding (4).
fn long_header_sysid(data: &[u8]) -> Option<u64> {
    let b: [u8; 8] = data.get(24..32)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Checks a downloaded segment against its manifest and the chain.
fn check_segment(
    step: &Step,
    data: &[u8],
    replayed_before: Option<Sha256Digest>,
    system_identifier: u64,
) -> Result<Sha256Digest, RecoverError> {
    let m = &step.found.manifest;
    if data.len() as u64 != m.size {
        return Err(RecoverError::SegmentSize {
            segment: m.segment.clone(),
            expected: m.size,
            got: data.len() as u64,
        });
    }
    let got = Sha256Digest::of(data);
    if got != m.sha256 {
        return Err(RecoverError::SegmentTampered {
            segment: m.segment.clone(),
            expected: m.sha256.to_string(),
            got: got.to_string(),
        });
    }
    if let Some(expected) = replayed_before.or(step.expected_prev)
        && m.prev_sha256 != Some(expected)
    {
        return Err(RecoverError::ChainBroken {
            segment: m.segment.clone(),
            expected: expected.to_string(),
            got: m
                .prev_sha256
                .map_or_else(|| "null".into(), |d| d.to_string()),
        });
    }
    if m.start_lsn.segment_offset(m.wal_segment_size) == 0
        && let Some(sysid) = long_header_sysid(data)
        && sysid != system_identifier
    {
        return Err(RecoverError::ForeignPages {
            segment: m.segment.clone(),
            expected: system_identifier,
            got: sysid,
        });
    }
    Ok(got)
}

/// Whether replay stops before `rec` for `to_time`: a commit or abort stamped after it.
fn after_to_time(
    rec: &crate::pg::DecodedRecord,
    version: crate::pg::PgVersion,
    to_time: Option<i64>,
) -> bool {
    let Some(limit) = to_time else { return false };
    if rec.rmid() != RM_XACT_ID {
        return false;
    }
    match parse_body(rec, version) {
        Ok(
            RecordBody::XactCommit(x)
            | RecordBody::XactAbort(x)
            | RecordBody::XactCommitPrepared(x)
            | RecordBody::XactAbortPrepared(x),
        ) => x.xact_time > limit,
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
async fn replay(
    source: &Timeline,
    input: &PlanInput,
    target: &Arc<Timeline>,
    store: &crate::wal_archive::ArchiveStore,
    steps: &[Step],
    start: Lsn,
    prev: Option<Lsn>,
    req: &RecoverRequest,
    job: &Job,
    system_identifier: u64,
) -> Result<(), RecoverError> {
    let decode_err = |segment: &str, e: &dyn std::fmt::Display| RecoverError::Decode {
        segment: segment.to_string(),
        msg: e.to_string(),
    };
    let mut decoder = WalStreamDecoder::new(start, DEFAULT_WAL_SEGMENT_SIZE, target.pg_version)
        .map_err(|e| RecoverError::Ingest(e.to_string()))?;
    if let Some(p) = prev {
        decoder.set_prev_record(p);
    }
    let mut ingest = WalIngest::new(target.clone());
    let to_time = req.to_time.as_ref().map(|(_, t)| *t);
    // The WAL span to replay: to to_lsn, else to the archive's end (an upper bound for to_time).
    let end = (req.to_lsn)
        .or_else(|| steps.iter().map(|s| s.found.manifest.end_lsn).max())
        .unwrap_or(start);
    let progress = crate::progress::start(
        crate::progress::Kind::Recover,
        format!("job {} from {start} to {end}", job.status().job_id),
        Some(target.tenant_id),
        Some(target.timeline_id),
        "bytes",
        Some(end.checked_sub(start).unwrap_or(0)),
    );
    let mut replayed_before: Option<Sha256Digest> = None;
    for step in steps {
        if target.cancel.is_cancelled() {
            return Err(RecoverError::Cancelled);
        }
        // The tail of a source that keeps ingesting may be replaced (by a newer partial or the completed
        // segment) between the listing and its download: take its replacement, checked the same way.
        let (step, data): (std::borrow::Cow<'_, Step>, Bytes) = match store
            .get(&step.found.data_object)
            .await
        {
            Ok(d) => (std::borrow::Cow::Borrowed(step), d),
            Err(crate::remote_storage::RemoteError::NotFound(_)) if step.found.manifest.partial => {
                let newer = replacement_of(source, input, step).await?;
                let d = store.get(&newer.data_object).await?;
                let step = Step {
                    found: newer,
                    expected_prev: step.expected_prev,
                };
                (std::borrow::Cow::Owned(step), d)
            }
            Err(e) => return Err(e.into()),
        };
        let step = step.as_ref();
        let m = &step.found.manifest;
        replayed_before = Some(check_segment(
            step,
            &data,
            replayed_before,
            system_identifier,
        )?);
        let skip = start
            .checked_sub(m.start_lsn)
            .unwrap_or(0)
            .min(data.len() as u64);
        let fed = data.len() as u64 - skip;
        decoder.feed(data.slice(skip as usize..));
        let mut batch = Vec::with_capacity(BATCH);
        let mut stop = false;
        let mut records = 0u64;
        loop {
            let raw = match decoder.poll_decode() {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return Err(decode_err(&m.segment, &e)),
            };
            if req.to_lsn.is_some_and(|to| raw.end_lsn > to) {
                stop = true;
                break;
            }
            let rec = decode_record(&raw).map_err(|e| decode_err(&m.segment, &e))?;
            if after_to_time(&rec, target.pg_version, to_time) {
                stop = true;
                break;
            }
            batch.push(rec);
            records += 1;
            if batch.len() >= BATCH {
                ingest
                    .ingest_batch(&batch)
                    .await
                    .map_err(|e| RecoverError::Ingest(e.to_string()))?;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            ingest
                .ingest_batch(&batch)
                .await
                .map_err(|e| RecoverError::Ingest(e.to_string()))?;
        }
        let reached = target.last_record_lsn();
        // The WAL span replayed so far (what a receiver's ingest rate counts too), not the bytes downloaded.
        let span = reached.checked_sub(start).unwrap_or(0);
        job.update(|s| {
            s.segments_replayed += 1;
            s.bytes_replayed = span;
            s.records_replayed += records;
            s.lsn_reached = Some(reached);
        });
        progress.set_done(span);
        crate::metrics::recovery_replayed(fed);
        crate::failpoint::pause("recover-after-segment").await;
        if stop {
            break;
        }
    }
    // Replayed to the target: what remained of the upper bound (a to_time target) is not owed.
    progress.set_total(progress.status().done);
    Ok(())
}
