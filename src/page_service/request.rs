//! One pagestream request against a timeline (docs/protocols.md, the LSN of a read): the LSN to read at, then the read.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::lsn_text;
use super::pagestream::{Request, RequestBody, RequestHeader, ResponseBody};
use crate::metrics::{GETPAGE_ERRORS, GETPAGE_SECONDS, PAGE_REQUESTS_IN_FLIGHT};
use crate::pg::Lsn;
use crate::pg::constants::{
    BLCKSZ, DEFAULTTABLESPACE_OID, FSM_FORKNUM, VISIBILITYMAP_FORKNUM, ZERO_PAGE,
};
use crate::repository::Key;
use crate::repository::datadir::DatadirError;
use crate::repository::timeline::Timeline;

/// The answer to `req`; every failure is an Error response.
pub async fn handle(tl: &Timeline, req: &Request, wait_lsn_timeout: Duration) -> ResponseBody {
    let _in_flight = InFlight::enter();
    let started = Instant::now();
    let result = match effective_lsn(tl, &req.hdr, wait_lsn_timeout).await {
        Ok(lsn) => read(tl, &req.body, lsn).await,
        Err(msg) => Err(msg),
    };
    if matches!(req.body, RequestBody::GetPage { .. }) {
        GETPAGE_SECONDS.observe(started.elapsed());
    }
    result.unwrap_or_else(|msg| {
        GETPAGE_ERRORS.fetch_add(1, Ordering::Relaxed);
        ResponseBody::Error(msg)
    })
}

/// Counts a request in `PAGE_REQUESTS_IN_FLIGHT` while it lives (also when its future is dropped).
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        PAGE_REQUESTS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        PAGE_REQUESTS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The LSN to read at: not_modified_since when the timeline has not reached it yet (after waiting for it),
/// else the smaller of last_record_lsn and request_lsn.
async fn effective_lsn(
    tl: &Timeline,
    hdr: &RequestHeader,
    timeout: Duration,
) -> Result<Lsn, String> {
    let (request_lsn, nms) = (hdr.request_lsn, hdr.not_modified_since);
    if request_lsn < nms {
        return Err(format!(
            "invalid request with request LSN {} and not_modified_since {nms}",
            lsn_text(request_lsn)
        ));
    }
    if request_lsn == Lsn(0) {
        return Err("invalid LSN(0) in request".into());
    }
    let cutoff = tl.gc_cutoff();
    if request_lsn < cutoff {
        return Err(format!(
            "tried to request a page version that was garbage collected. requested at {request_lsn} gc cutoff {cutoff}"
        ));
    }
    let last = tl.last_record_lsn();
    if nms > last {
        tl.wait_lsn(nms, timeout).await.map_err(|e| e.to_string())?;
        Ok(nms)
    } else {
        Ok(last.min(request_lsn))
    }
}

async fn read(tl: &Timeline, body: &RequestBody, lsn: Lsn) -> Result<ResponseBody, String> {
    let text = |e: DatadirError| e.to_string();
    Ok(match *body {
        RequestBody::Exists { rel, fork } => {
            ResponseBody::Exists(tl.rel_exists(rel, fork, lsn).await.map_err(text)?)
        }
        RequestBody::Nblocks { rel, fork } => {
            if rel.rel == 0 {
                return Err("invalid relnode 0".into());
            }
            match tl.rel_size(rel, fork, lsn).await {
                Ok(n) => ResponseBody::Nblocks(n),
                // PostgreSQL asks for the size of VM and FSM forks that were never created.
                Err(DatadirError::NoRelation { .. })
                    if fork == FSM_FORKNUM || fork == VISIBILITYMAP_FORKNUM =>
                {
                    ResponseBody::Nblocks(0)
                }
                Err(e) => return Err(text(e)),
            }
        }
        RequestBody::GetPage { rel, fork, blkno } => {
            if rel.rel == 0 {
                return Err("invalid relnode 0".into());
            }
            let nblocks = tl.rel_size(rel, fork, lsn).await.map_err(text)?;
            if blkno >= nblocks {
                // Past the end of the relation: what PostgreSQL's smgr would extend with.
                ResponseBody::GetPage(Bytes::from_static(&ZERO_PAGE))
            } else {
                let page = tl
                    .get(Key::rel_block(rel, fork, blkno), lsn)
                    .await
                    .map_err(|e| e.to_string())?;
                if page.len() != BLCKSZ {
                    return Err(format!(
                        "block {blkno} of {rel:?} fork {fork} at {lsn} is {} bytes, not a page",
                        page.len()
                    ));
                }
                ResponseBody::GetPage(page)
            }
        }
        RequestBody::DbSize { db } => {
            let bytes = tl
                .db_size(DEFAULTTABLESPACE_OID, db, lsn)
                .await
                .map_err(text)?;
            ResponseBody::DbSize(bytes as i64)
        }
        RequestBody::GetSlruSegment { kind, segno } => {
            let Some(n) = tl.slru_segment_size(kind, segno, lsn).await.map_err(text)? else {
                return Err(format!(
                    "SLRU segment {kind:?} {segno:04X} does not exist at {lsn}"
                ));
            };
            let mut blocks = BytesMut::with_capacity(n as usize * BLCKSZ);
            for blkno in 0..n {
                let page = tl
                    .get(Key::slru_block(kind, segno, blkno), lsn)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut page = page.to_vec();
                page.resize(BLCKSZ, 0);
                blocks.extend_from_slice(&page);
            }
            ResponseBody::GetSlruSegment(blocks.freeze())
        }
    })
}
