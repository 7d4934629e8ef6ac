//! The WAL archive: every timeline that ingests WAL keeps the raw WAL it received, as 16 MiB segments with a
//! sidecar manifest each (sha256 of the bytes, the sha256 of the previous segment: a hash chain), beside a
//! hashed base (the initdb output or base backup the timeline started from), in remote storage under
//! `tenants/<t>/timelines/<tl>/wal/` or, without remote storage, in the same layout in the workdir.
//! `/recover` rebuilds a timeline from the base and the chain alone (docs/wal-archive.md).
//!
//! - [`manifest`]: object names, the manifests, their parsing;
//! - [`writer`]: the spool and the chain: append, complete, the durable LSN;
//! - [`uploader`]: the per-timeline task that moves completed segments and the tail to the store;
//! - [`base`]: archiving the data directory a timeline started from;
//! - [`store`]: where the objects live.

pub mod base;
pub mod manifest;
pub mod store;
mod uploader;
pub mod writer;

pub use manifest::{BaseKind, BaseManifest, SegmentManifest, Sha256Digest};
pub use store::ArchiveStore;
pub use writer::{ArchiveError, ArchiveStatus, SPOOL_DIR, WalArchive};
