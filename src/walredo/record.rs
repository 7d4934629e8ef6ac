//! What a page is rebuilt from: WAL records for PostgreSQL's redo, and the records the pageserver applies in
//! Rust (Neon's `NeonWalRecord`, `libs/wal_decoder/src/models/record.rs`; encoded per
//! docs/storage-format.md §5).

use bytes::Bytes;

use crate::pg::RelFileNode;
use crate::pg::records::MultiXactMember;

/// A relation page: PostgreSQL's BufferTag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferTag {
    pub rnode: RelFileNode,
    pub forknum: u8,
    pub blkno: u32,
}

/// SLRUs whose pages the pageserver keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlruKind {
    Clog,
    MultiXactMembers,
    MultiXactOffsets,
}

/// The page a redo request rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageId {
    Rel(BufferTag),
    /// An SLRU page by its number from the start of the SLRU (segment * 32 + block).
    Slru {
        kind: SlruKind,
        pageno: u32,
    },
}

/// One change to a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalRecord {
    /// A raw PostgreSQL record, replayed by `postgres --wal-redo`. `will_init`: it rebuilds the page from
    /// nothing, so no base image is needed.
    Postgres { will_init: bool, rec: Bytes },
    /// Clear visibility-map bits of one or two heap blocks (heap insert/update/delete/lock), on their VM page.
    ClearVisibilityMapFlags {
        new_heap_blkno: Option<u32>,
        old_heap_blkno: Option<u32>,
        flags: u8,
    },
    /// Truncate the map of a VM page after the relation was truncated to a number of heap blocks.
    TruncateVisibilityMap { trunc_byte: u32, trunc_offs: u8 },
    /// Mark transactions committed in a CLOG page (those of `xids` that fall on it).
    ClogSetCommitted { xids: Vec<u32> },
    /// Mark transactions aborted in a CLOG page.
    ClogSetAborted { xids: Vec<u32> },
    /// Record where a multixact's members start, and (as PostgreSQL 15.18's RecordNewMultiXact does) where
    /// the next multixact's start: `moff + nmembers`. Stored on the offsets page of `mid` and, when it is
    /// another page, on that of `mid + 1`.
    MultixactOffsetCreate { mid: u32, moff: u32, nmembers: u32 },
    /// Store a multixact's members (those that fall on the page) in a multixact members page.
    MultixactMembersCreate {
        moff: u32,
        members: Vec<MultiXactMember>,
    },
}

impl WalRecord {
    /// True for records only PostgreSQL's redo can apply.
    pub fn is_postgres(&self) -> bool {
        matches!(self, WalRecord::Postgres { .. })
    }

    /// True when the record rebuilds the page without a base image.
    pub fn will_init(&self) -> bool {
        matches!(
            self,
            WalRecord::Postgres {
                will_init: true,
                ..
            }
        )
    }
}
