//! A scrub: two timelines compared at one LSN, key by key over the union of their keyspaces: every
//! relation page (masked as `wal_consistency_checking` masks, `pg::mask`), every relation size, every SLRU
//! page and every other key (directories, pg_control, two-phase files) byte for byte. The result lists the
//! keys that differ (the first [`MAX_LISTED`]) and counts by kind; typically the official timeline against
//! its recovered shadow.

use std::sync::Arc;

use serde::Serialize;
use tracing::{Instrument, info, info_span, warn};

use super::RecoverError;
use super::jobs::{Job, JobKind};
use crate::id::TimelineId;
use crate::pg::Lsn;
use crate::pg::mask::{guess_page_kind, mask_for_comparison};
use crate::repository::Key;
use crate::repository::tenant::Tenant;
use crate::repository::timeline::{GetError, Timeline};
use crate::walredo::PageId;

/// Mismatching keys listed in a result; all are counted.
pub const MAX_LISTED: usize = 1000;

#[derive(Clone, Debug)]
pub struct ScrubRequest {
    pub timeline: TimelineId,
    pub other: TimelineId,
    /// Default: the lower of the two timelines' last records.
    pub lsn: Option<Lsn>,
    pub periodic: bool,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ScrubResult {
    pub lsn: Lsn,
    pub keys_compared: u64,
    pub rel_pages_compared: u64,
    pub rel_sizes_compared: u64,
    pub slru_pages_compared: u64,
    pub other_keys_compared: u64,
    /// Keys whose values differ (after masking, for relation pages).
    pub mismatched: u64,
    /// Keys that only the timeline, or only the other, has.
    pub only_in_timeline: u64,
    pub only_in_other: u64,
    pub mismatched_keys: Vec<KeyMismatch>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KeyMismatch {
    pub key: String,
    /// "rel_page", "rel_size", "slru_page" or "other".
    pub what: &'static str,
    /// "differs", "only_in_timeline" or "only_in_other".
    pub how: &'static str,
    /// The page, for relation pages: `<spc>/<db>/<rel> fork <f> block <n>`.
    pub page: Option<String>,
}

impl ScrubResult {
    pub fn total_mismatches(&self) -> u64 {
        self.mismatched + self.only_in_timeline + self.only_in_other
    }
}

/// Checks the request and starts the job.
pub async fn start_scrub(
    tenant: &Arc<Tenant>,
    req: ScrubRequest,
) -> Result<Arc<Job>, RecoverError> {
    if req.timeline == req.other {
        return Err(RecoverError::BadRequest(
            "a scrub compares two different timelines".into(),
        ));
    }
    let a = tenant.timeline(req.timeline)?;
    let b = tenant.timeline(req.other)?;
    for tl in [&a, &b] {
        if let Some(why) = tl.not_serving() {
            return Err(RecoverError::Conflict(format!(
                "timeline {}: {why}",
                tl.timeline_id
            )));
        }
    }
    let common = a.last_record_lsn().min(b.last_record_lsn());
    let lsn = req.lsn.unwrap_or(common);
    if lsn > common {
        return Err(RecoverError::BadRequest(format!(
            "lsn {lsn} is past the last record of one of the timelines ({common})"
        )));
    }
    let floor = a.gc_cutoff().max(b.gc_cutoff());
    if lsn < floor {
        return Err(RecoverError::BadRequest(format!(
            "lsn {lsn} is below the GC cutoff {floor}"
        )));
    }
    let job = tenant
        .jobs
        .add(JobKind::Scrub, tenant.id, req.timeline, |s| {
            s.target_timeline_id = Some(req.other);
            s.lsn_reached = Some(lsn);
            s.periodic = req.periodic;
        });
    let span = info_span!("scrub", tenant_id = %tenant.id, timeline_id = %req.timeline,
                          other = %req.other, job_id = %job.status().job_id);
    let task = {
        let job = job.clone();
        async move {
            let result = scrub(&a, &b, lsn, &job).await;
            crate::metrics::SCRUBS_DONE.inc();
            match result {
                Ok(r) => {
                    info!(%lsn, keys = r.keys_compared, mismatches = r.total_mismatches(), "scrub done");
                    crate::metrics::SCRUB_MISMATCHED_KEYS.add(r.total_mismatches());
                    job.update(|s| s.scrub = Some(r));
                    job.finish(Ok(()));
                }
                Err(e) => {
                    warn!(error = %e, "scrub failed");
                    job.finish(Err(e.to_string()));
                }
            }
        }
        .instrument(span)
    };
    tenant.spawn_job(task);
    Ok(job)
}

/// A value of `tl` at `lsn`; None if the timeline has no value for the key.
async fn read(tl: &Timeline, key: Key, lsn: Lsn) -> Result<Option<bytes::Bytes>, RecoverError> {
    match tl.get(key, lsn).await {
        Ok(v) => Ok(Some(v)),
        Err(GetError::KeyNotFound { .. }) => Ok(None),
        Err(e) => Err(RecoverError::Read {
            lsn,
            msg: format!("timeline {} key {key}: {e}", tl.timeline_id),
        }),
    }
}

/// Compares `a` with `b` at `lsn`.
pub async fn scrub(
    a: &Timeline,
    b: &Timeline,
    lsn: Lsn,
    job: &Job,
) -> Result<ScrubResult, RecoverError> {
    let ka = a.keyspace(lsn).await.map_err(|e| RecoverError::Read {
        lsn,
        msg: format!("keyspace of {}: {e}", a.timeline_id),
    })?;
    let kb = b.keyspace(lsn).await.map_err(|e| RecoverError::Read {
        lsn,
        msg: format!("keyspace of {}: {e}", b.timeline_id),
    })?;
    let mut ranges = ka.ranges.clone();
    ranges.extend(kb.ranges.iter().cloned());
    let union = crate::repository::keyspace::KeySpace::from_ranges(ranges);
    let mut r = ScrubResult {
        lsn,
        ..Default::default()
    };
    for range in &union.ranges {
        let mut key = range.start;
        while key < range.end {
            if a.cancel.is_cancelled() || b.cancel.is_cancelled() {
                return Err(RecoverError::Cancelled);
            }
            let (va, vb) = (read(a, key, lsn).await?, read(b, key, lsn).await?);
            let what = classify(&key);
            r.keys_compared += 1;
            match what {
                "rel_page" => r.rel_pages_compared += 1,
                "rel_size" => r.rel_sizes_compared += 1,
                "slru_page" => r.slru_pages_compared += 1,
                _ => r.other_keys_compared += 1,
            }
            let how = match (&va, &vb) {
                (Some(x), Some(y)) => (!same(&key, x, y)).then_some("differs"),
                (Some(_), None) => Some("only_in_timeline"),
                (None, Some(_)) => Some("only_in_other"),
                (None, None) => None,
            };
            if let Some(how) = how {
                match how {
                    "differs" => r.mismatched += 1,
                    "only_in_timeline" => r.only_in_timeline += 1,
                    _ => r.only_in_other += 1,
                }
                if r.mismatched_keys.len() < MAX_LISTED {
                    r.mismatched_keys.push(KeyMismatch {
                        key: key.to_string(),
                        what,
                        how,
                        page: describe_page(&key),
                    });
                }
            }
            if r.keys_compared.is_multiple_of(1024) {
                let n = r.keys_compared;
                job.update(|s| s.records_replayed = n);
            }
            key = key.next();
        }
    }
    job.update(|s| s.records_replayed = r.keys_compared);
    Ok(r)
}

fn classify(key: &Key) -> &'static str {
    match key.page_id() {
        Some(PageId::Rel(_)) => "rel_page",
        Some(PageId::Slru { .. }) => "slru_page",
        None if key.is_rel_size() => "rel_size",
        None => "other",
    }
}

fn describe_page(key: &Key) -> Option<String> {
    match key.page_id()? {
        PageId::Rel(tag) => Some(format!(
            "{}/{}/{} fork {} block {}",
            tag.rnode.spc, tag.rnode.db, tag.rnode.rel, tag.forknum, tag.blkno
        )),
        PageId::Slru { kind, pageno } => Some(format!("{kind:?} page {pageno}")),
    }
}

/// Equal values: relation pages after masking, everything else byte for byte.
fn same(key: &Key, x: &[u8], y: &[u8]) -> bool {
    if x == y {
        return true;
    }
    let Some(PageId::Rel(tag)) = key.page_id() else {
        return false;
    };
    let kind = guess_page_kind(tag.forknum, tag.blkno, x);
    let (mut mx, mut my) = (x.to_vec(), y.to_vec());
    let masked = mask_for_comparison(tag.forknum, tag.blkno, kind, &mut mx).is_ok()
        && mask_for_comparison(tag.forknum, tag.blkno, kind, &mut my).is_ok();
    masked && mx == my
}
