//! Heap and heap2 records, as far as the pageserver needs them: which visibility-map bits a change clears, and
//! TRUNCATE (access/heapam_xlog.h).

use super::{BodyIssue, RecordBody};
use crate::pg::constants::*;
use crate::pg::reader::Reader;

/// A heap change that may clear visibility-map bits. The flags are the record's own (XLH_*); which block
/// reference is which page follows heapam's layout: block 0 = the (new) page, block 1 = the old page of an
/// update that moved the tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapRecord {
    Insert {
        flags: u8,
    },
    Delete {
        flags: u8,
    },
    Update {
        flags: u8,
        hot: bool,
    },
    Lock {
        flags: u8,
    },
    LockUpdated {
        flags: u8,
    },
    MultiInsert {
        flags: u8,
        ntuples: u16,
    },
    /// HEAP2_VISIBLE sets bits (block 0 = VM page, block 1 = heap page).
    Visible {
        cutoff_xid: u32,
        flags: u8,
    },
}

impl HeapRecord {
    /// VM bits to clear on the heap page of block 0 (the new page) and block 1 (the old page of an update).
    pub fn vm_bits_cleared(&self) -> (u8, u8) {
        let all = VISIBILITYMAP_VALID_BITS;
        match *self {
            HeapRecord::Insert { flags } | HeapRecord::MultiInsert { flags, .. } => (
                if flags & XLH_INSERT_ALL_VISIBLE_CLEARED != 0 {
                    all
                } else {
                    0
                },
                0,
            ),
            HeapRecord::Delete { flags } => (
                if flags & XLH_DELETE_ALL_VISIBLE_CLEARED != 0 {
                    all
                } else {
                    0
                },
                0,
            ),
            HeapRecord::Update { flags, .. } => (
                if flags & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED != 0 {
                    all
                } else {
                    0
                },
                if flags & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED != 0 {
                    all
                } else {
                    0
                },
            ),
            HeapRecord::Lock { flags } | HeapRecord::LockUpdated { flags } => (
                if flags & XLH_LOCK_ALL_FROZEN_CLEARED != 0 {
                    VISIBILITYMAP_ALL_FROZEN
                } else {
                    0
                },
                0,
            ),
            HeapRecord::Visible { .. } => (0, 0),
        }
    }
}

/// `xl_heap_truncate`: TRUNCATE of one or more relations of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapTruncate {
    pub db: u32,
    pub flags: u8,
    pub relids: Vec<u32>,
}

pub(super) fn parse(rmid: u8, info: u8, r: &mut Reader) -> Result<RecordBody, BodyIssue> {
    let op = info & XLOG_HEAP_OPMASK;
    let rec = if rmid == RM_HEAP_ID {
        match op {
            XLOG_HEAP_INSERT => {
                r.skip(2)?; // offnum
                HeapRecord::Insert { flags: r.u8()? }
            }
            XLOG_HEAP_DELETE => {
                r.skip(7)?; // xmax, offnum, infobits_set
                HeapRecord::Delete { flags: r.u8()? }
            }
            XLOG_HEAP_UPDATE | XLOG_HEAP_HOT_UPDATE => {
                r.skip(7)?; // old_xmax, old_offnum, old_infobits_set
                HeapRecord::Update {
                    flags: r.u8()?,
                    hot: op == XLOG_HEAP_HOT_UPDATE,
                }
            }
            XLOG_HEAP_LOCK => {
                r.skip(7)?; // locking_xid, offnum, infobits_set
                HeapRecord::Lock { flags: r.u8()? }
            }
            XLOG_HEAP_TRUNCATE => {
                let db = r.u32()?;
                let n = r.u32()? as usize;
                let flags = r.u8()?;
                r.skip(3)?;
                if n.saturating_mul(4) > r.remaining() {
                    return Err(BodyIssue::Invalid(format!(
                        "truncate of {n} relations in a short record"
                    )));
                }
                let relids = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
                return Ok(RecordBody::HeapTruncate(HeapTruncate { db, flags, relids }));
            }
            _ => return Ok(RecordBody::Other),
        }
    } else {
        match op {
            XLOG_HEAP2_MULTI_INSERT => HeapRecord::MultiInsert {
                flags: r.u8()?,
                ntuples: {
                    r.skip(1)?;
                    r.u16()?
                },
            },
            XLOG_HEAP2_LOCK_UPDATED => {
                r.skip(7)?; // xmax, offnum, infobits_set
                HeapRecord::LockUpdated { flags: r.u8()? }
            }
            XLOG_HEAP2_VISIBLE => HeapRecord::Visible {
                cutoff_xid: r.u32()?,
                flags: r.u8()?,
            },
            _ => return Ok(RecordBody::Other),
        }
    };
    Ok(RecordBody::Heap(rec))
}
