//! Typed bodies of the records the pageserver acts on (PostgreSQL 15 layouts). [`parse_body`] reads a
//! record's main data into a [`RecordBody`]; every record it does not know stays [`RecordBody::Other`], still
//! available with its raw bytes and block references on the [`DecodedRecord`].

mod heap;
mod misc;
mod xact;
mod xlog;

pub use heap::{HeapRecord, HeapTruncate};
pub use misc::{
    ClogTruncate, DbaseCreateFileCopy, DbaseDrop, LogicalMessage, MultiXactCreate, MultiXactMember,
    MultiXactTruncate, RelmapUpdate, RunningXacts, SmgrCreate, SmgrTruncate,
};
pub use xact::{XactParsed, XactPrepare};
pub use xlog::{CheckPoint, ParameterChange};

use super::constants::*;
use super::lsn::Lsn;
use super::reader::{Reader, ShortRead};
use super::xlogrecord::DecodedRecord;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rmgr} record at {lsn} (info {info:#04X}) has a malformed body: {source}")]
pub struct BodyError {
    pub lsn: Lsn,
    pub rmgr: String,
    pub info: u8,
    pub source: BodyIssue,
}

/// What is wrong with a record body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyIssue {
    #[error(transparent)]
    Short(#[from] ShortRead),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordBody {
    // XLOG
    Checkpoint {
        shutdown: bool,
        checkpoint: CheckPoint,
    },
    NextOid(u32),
    Switch,
    ParameterChange(ParameterChange),
    OverwriteContrecord {
        overwritten_lsn: Lsn,
        overwrite_time: i64,
    },
    Fpi,
    FpiForHint,
    /// `pg_create_restore_point(name)`: its time and name.
    RestorePoint {
        time: i64,
        name: String,
    },
    // Transactions: commit, abort, their prepared forms, prepare, assignment.
    XactCommit(XactParsed),
    XactAbort(XactParsed),
    XactCommitPrepared(XactParsed),
    XactAbortPrepared(XactParsed),
    XactPrepare(XactPrepare),
    XactAssignment {
        xtop: u32,
        subxacts: Vec<u32>,
    },
    // CLOG and multixacts
    ClogZeroPage {
        pageno: i32,
    },
    ClogTruncate(ClogTruncate),
    MultiXactZeroOffsetPage {
        pageno: i32,
    },
    MultiXactZeroMemberPage {
        pageno: i32,
    },
    MultiXactCreate(MultiXactCreate),
    MultiXactTruncate(MultiXactTruncate),
    // Storage manager, databases, relation mapper
    SmgrCreate(SmgrCreate),
    SmgrTruncate(SmgrTruncate),
    DbaseCreateFileCopy(DbaseCreateFileCopy),
    DbaseCreateWalLog {
        db: u32,
        spc: u32,
    },
    DbaseDrop(DbaseDrop),
    RelmapUpdate(RelmapUpdate),
    // Heap: what ingest needs of them (visibility-map bits, truncation).
    Heap(HeapRecord),
    HeapTruncate(HeapTruncate),
    // Standby and logical messages
    RunningXacts(RunningXacts),
    LogicalMessage(LogicalMessage),
    /// Any other record: see the raw bytes and block references of the record.
    Other,
}

/// Parses the main data of `rec` by its resource manager and info bits.
pub fn parse_body(rec: &DecodedRecord) -> Result<RecordBody, BodyError> {
    let mut r = Reader::new(&rec.main_data);
    let info = rec.rmgr_info();
    let result = match rec.rmid() {
        RM_XLOG_ID => xlog::parse(info, &mut r),
        RM_XACT_ID => xact::parse(rec.header.info, rec.header.xid, &mut r),
        RM_CLOG_ID | RM_MULTIXACT_ID | RM_SMGR_ID | RM_DBASE_ID | RM_RELMAP_ID | RM_STANDBY_ID
        | RM_LOGICALMSG_ID => misc::parse(rec.rmid(), info, &mut r),
        RM_HEAP_ID | RM_HEAP2_ID => heap::parse(rec.rmid(), info, &mut r),
        _ => Ok(RecordBody::Other),
    };
    result.map_err(|source| BodyError {
        lsn: rec.lsn,
        rmgr: rmgr_name(rec.rmid()),
        info: rec.header.info,
        source,
    })
}
