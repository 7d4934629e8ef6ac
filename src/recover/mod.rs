//! `/recover` and `/scrub`: a second path to every page that does not trust the layers (docs/wal-archive.md).
//!
//! A recovery rebuilds a timeline from the source timeline's hashed base and hash-chained WAL archive only
//! (or, with `from_lsn`, from the source's pages at that LSN and the archive after it), into a *different*
//! timeline; a scrub compares two timelines page by page at an LSN. Both run as jobs ([`jobs`]) beside the
//! source, which keeps ingesting and serving.
//!
//! ```text
//!  POST .../recover ─> validate (400/404/409 at once) ─> 202 job ─> plan (manifests only) ─> base ─> replay
//!                                                                          │ any check fails      └─> target serves
//!                                                                          └─> job failed, no serving target
//! ```
//!
//! Invariants:
//! - the source is never written; the target refuses reads (its metadata carries a [`RecoveryMark`]) until
//!   the job succeeds; a failed job deletes the target it created, or leaves a given target marked failed;
//! - before a segment is replayed, its sha256, its `prev_sha256` against the segment replayed before it, its
//!   LSN range, its tenant, timeline and system were checked ([`plan`], [`replay`]); a base is replayed only
//!   after its sha256 was checked;
//! - this path shares WAL decoding and ingest with the WAL receiver, but none of compaction, GC, layer
//!   rewrites or the source's layer map.
//!
//! [`RecoveryMark`]: crate::repository::metadata::RecoveryMark

pub mod jobs;
pub mod periodic;
pub mod plan;
pub mod replay;
pub mod scrub;

pub use jobs::{JobKind, JobStatus, Jobs};
pub use replay::{RecoverRequest, start_recovery};
pub use scrub::{ScrubRequest, ScrubResult, start_scrub};

use crate::id::TimelineId;
use crate::pg::Lsn;

/// What a recovery or scrub can fail with. Every check names the segment (or base) and the check.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("timeline {0} not found")]
    NotFound(TimelineId),
    #[error("timeline {0} has no WAL archive")]
    NoArchive(TimelineId),
    #[error("the base of timeline {0} is not in the archive (check: base present)")]
    NoBase(TimelineId),
    #[error(
        "base {object}: sha256 of its bytes is {got}, its manifest says {expected} (check: base sha256)"
    )]
    BaseTampered {
        object: String,
        expected: String,
        got: String,
    },
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("segment {segment}: {got} bytes, its manifest says {expected} (check: segment size)")]
    SegmentSize {
        segment: String,
        expected: u64,
        got: u64,
    },
    #[error(
        "segment {segment}: sha256 of its bytes is {got}, its manifest says {expected} (check: segment sha256)"
    )]
    SegmentTampered {
        segment: String,
        expected: String,
        got: String,
    },
    #[error(
        "segment {segment}: prev_sha256 is {got}, but the segment replayed before it hashes to {expected} (check: hash chain)"
    )]
    ChainBroken {
        segment: String,
        expected: String,
        got: String,
    },
    #[error(
        "segment {segment}: its page header names system {got}, the timeline's is {expected} (check: same system)"
    )]
    ForeignPages {
        segment: String,
        expected: u64,
        got: u64,
    },
    #[error("segment {segment}: WAL does not decode: {msg} (check: WAL records)")]
    Decode { segment: String, msg: String },
    #[error("object {object}: {msg}")]
    Manifest { object: String, msg: String },
    #[error("replay: {0}")]
    Ingest(String),
    #[error("base import: {0}")]
    Import(String),
    #[error("remote storage: {0}")]
    Store(#[from] crate::remote_storage::RemoteError),
    #[error("timeline: {0}")]
    Timeline(String),
    #[error("read at {lsn}: {msg}")]
    Read { lsn: Lsn, msg: String },
    #[error("the job was cancelled (the tenant is shutting down or detaching)")]
    Cancelled,
}

impl From<crate::repository::tenant::TenantError> for RecoverError {
    fn from(e: crate::repository::tenant::TenantError) -> Self {
        match e {
            crate::repository::tenant::TenantError::TimelineNotFound(id) => {
                RecoverError::NotFound(id)
            }
            crate::repository::tenant::TenantError::ShuttingDown => RecoverError::Cancelled,
            e => RecoverError::Timeline(e.to_string()),
        }
    }
}
