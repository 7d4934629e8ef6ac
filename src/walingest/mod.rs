//! From decoded WAL records to changes of pages (docs/repository.md). So far: the SLRU pages the pageserver
//! maintains itself (CLOG, multixact offsets and members) and visibility-map bit clears; the rest of ingest
//! (relation blocks, sizes, directories) builds on these.

pub mod ingest;
pub mod slru;
pub mod vm;

pub use ingest::{IngestError, WalIngest};

use bytes::Bytes;

use crate::walredo::{PageId, WalRecord};

/// One change a record makes to one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageChange {
    /// The page's new content (a zeroed SLRU page, a full-page image).
    Image(PageId, Bytes),
    /// A record to apply on the page's previous version.
    Record(PageId, WalRecord),
}
