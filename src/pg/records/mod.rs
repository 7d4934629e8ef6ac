//! Typed bodies of the records the pageserver acts on (PostgreSQL 15 and 18 layouts, told apart by
//! [`PgVersion`]). [`parse_body`] reads a
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
use super::version::PgVersion;
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
        pageno: i64,
    },
    ClogTruncate(ClogTruncate),
    MultiXactZeroOffsetPage {
        pageno: i64,
    },
    MultiXactZeroMemberPage {
        pageno: i64,
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

/// Parses the main data of `rec`, a record of `version`'s WAL, by its resource manager and info bits.
pub fn parse_body(rec: &DecodedRecord, version: PgVersion) -> Result<RecordBody, BodyError> {
    let mut r = Reader::new(&rec.main_data);
    let info = rec.rmgr_info();
    let result = match rec.rmid() {
        RM_XLOG_ID => xlog::parse(info, &mut r, version),
        RM_XACT_ID => xact::parse(rec.header.info, rec.header.xid, &mut r, version),
        RM_CLOG_ID | RM_MULTIXACT_ID | RM_SMGR_ID | RM_DBASE_ID | RM_RELMAP_ID | RM_STANDBY_ID
        | RM_LOGICALMSG_ID => misc::parse(rec.rmid(), info, &mut r, version),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::waldecoder::RawRecord;
    use crate::pg::walgen::encode_record;
    use crate::pg::xlogrecord::decode_record;

    fn record(rmid: u8, info: u8, main_data: &[u8]) -> DecodedRecord {
        let bytes = encode_record(rmid, info, 0, Lsn(0x100_0000), main_data);
        decode_record(&RawRecord {
            lsn: Lsn(0x100_0028),
            end_lsn: Lsn(0x100_0028 + bytes.len() as u64),
            bytes: bytes.into(),
        })
        .unwrap()
    }

    /// The same bodies read by each version's layout: SLRU page numbers of 4 and 8 bytes.
    #[test]
    fn slru_page_numbers_by_version() {
        let zero15 = record(RM_CLOG_ID, CLOG_ZEROPAGE, &7i32.to_le_bytes());
        let zero18 = record(RM_CLOG_ID, CLOG_ZEROPAGE, &7i64.to_le_bytes());
        assert_eq!(
            parse_body(&zero15, PgVersion::V15),
            Ok(RecordBody::ClogZeroPage { pageno: 7 })
        );
        assert_eq!(
            parse_body(&zero18, PgVersion::V18),
            Ok(RecordBody::ClogZeroPage { pageno: 7 })
        );
        // A 15 body is too short for 18's layout: an error, not a guess.
        assert!(parse_body(&zero15, PgVersion::V18).is_err());

        let mut trunc18 = 9i64.to_le_bytes().to_vec();
        trunc18.extend_from_slice(&1234u32.to_le_bytes());
        trunc18.extend_from_slice(&5u32.to_le_bytes());
        let rec = record(RM_CLOG_ID, CLOG_TRUNCATE, &trunc18);
        assert_eq!(
            parse_body(&rec, PgVersion::V18),
            Ok(RecordBody::ClogTruncate(ClogTruncate {
                pageno: 9,
                oldest_xact: 1234,
                oldest_xact_db: 5
            }))
        );
        let off18 = record(
            RM_MULTIXACT_ID,
            XLOG_MULTIXACT_ZERO_OFF_PAGE,
            &3i64.to_le_bytes(),
        );
        assert_eq!(
            parse_body(&off18, PgVersion::V18),
            Ok(RecordBody::MultiXactZeroOffsetPage { pageno: 3 })
        );
    }

    /// A commit dropping a table's stats: 12-byte items in 15, 16-byte ones in 18; what follows (the
    /// origin) is read from the right place only with the version's size.
    #[test]
    fn dropped_stats_items_by_version() {
        let body = |item: usize| {
            let mut b = 1_000_000i64.to_le_bytes().to_vec(); // xact_time
            b.extend_from_slice(
                &(XACT_XINFO_HAS_DROPPED_STATS | XACT_XINFO_HAS_ORIGIN).to_le_bytes(),
            );
            b.extend_from_slice(&2i32.to_le_bytes());
            b.extend(std::iter::repeat_n(0xAB, 2 * item));
            b.extend_from_slice(&0x5000_0000u64.to_le_bytes()); // origin_lsn
            b.extend_from_slice(&77i64.to_le_bytes()); // origin_timestamp
            record(RM_XACT_ID, XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO, &b)
        };
        for (version, item) in [(PgVersion::V15, 12), (PgVersion::V18, 16)] {
            let Ok(RecordBody::XactCommit(x)) = parse_body(&body(item), version) else {
                panic!("{version}: not a commit");
            };
            assert_eq!(x.n_dropped_stats, 2);
            assert_eq!(x.origin_lsn, Some(Lsn(0x5000_0000)), "{version}");
            assert_eq!(x.origin_timestamp, Some(77), "{version}");
        }
    }

    /// PostgreSQL 18's checkpoint carries wal_level in what 15 left as padding; it round-trips.
    #[test]
    fn checkpoint_wal_level_by_version() {
        let cp = CheckPoint {
            redo: Lsn(0x100_0028),
            this_timeline_id: 1,
            wal_level: 2,
            next_xid: 800,
            ..Default::default()
        };
        let rec = record(RM_XLOG_ID, XLOG_CHECKPOINT_ONLINE, &cp.encode());
        let parsed = |v| match parse_body(&rec, v) {
            Ok(RecordBody::Checkpoint { checkpoint, .. }) => checkpoint,
            other => panic!("{other:?}"),
        };
        assert_eq!(parsed(PgVersion::V18), cp);
        assert_eq!(parsed(PgVersion::V15).wal_level, 0);
        assert_eq!(parsed(PgVersion::V15).next_xid, 800);
    }
}
