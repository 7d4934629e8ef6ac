//! Transaction records (access/xact.h; xactdesc.c ParseCommitRecord / ParseAbortRecord).

use super::{BodyIssue, RecordBody};
use crate::pg::constants::*;
use crate::pg::lsn::Lsn;
use crate::pg::reader::{Reader, ShortRead};
use crate::pg::version::PgVersion;
use crate::pg::xlogrecord::RelFileNode;

/// A commit or abort record (plain or of a prepared transaction), parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XactParsed {
    /// The transaction: the record's xid, or the prepared transaction's for COMMIT/ABORT PREPARED.
    pub xid: u32,
    pub xact_time: i64,
    pub xinfo: u32,
    pub db_id: u32,
    pub ts_id: u32,
    pub subxacts: Vec<u32>,
    /// Relations dropped when this commits (or aborts).
    pub dropped_rels: Vec<RelFileNode>,
    pub n_dropped_stats: usize,
    pub n_invals: usize,
    pub twophase_xid: Option<u32>,
    pub twophase_gid: Option<String>,
    pub origin_lsn: Option<Lsn>,
    pub origin_timestamp: Option<i64>,
}

/// XLOG_XACT_PREPARE: the main data is the two-phase state file; its header (`xl_xact_prepare`) is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XactPrepare {
    pub xid: u32,
    pub database: u32,
    pub prepared_at: i64,
    pub gid: String,
    /// The whole state as PostgreSQL writes it to pg_twophase (without the trailing CRC).
    pub state: bytes::Bytes,
}

const TWOPHASE_MAGIC: u32 = 0x57F94534;
const XL_XACT_PREPARE_SIZE: usize = 72;

pub(super) fn parse(
    xl_info: u8,
    record_xid: u32,
    r: &mut Reader,
    version: PgVersion,
) -> Result<RecordBody, BodyIssue> {
    let op = xl_info & XLOG_XACT_OPMASK;
    Ok(match op {
        XLOG_XACT_COMMIT | XLOG_XACT_COMMIT_PREPARED => {
            let parsed = parse_commit_abort(xl_info, record_xid, r, true, version)?;
            if op == XLOG_XACT_COMMIT {
                RecordBody::XactCommit(parsed)
            } else {
                RecordBody::XactCommitPrepared(parsed)
            }
        }
        XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => {
            let parsed = parse_commit_abort(xl_info, record_xid, r, false, version)?;
            if op == XLOG_XACT_ABORT {
                RecordBody::XactAbort(parsed)
            } else {
                RecordBody::XactAbortPrepared(parsed)
            }
        }
        XLOG_XACT_PREPARE => RecordBody::XactPrepare(parse_prepare(r)?),
        XLOG_XACT_ASSIGNMENT => {
            let xtop = r.u32()?;
            let n = r.count(4)?;
            let subxacts = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            RecordBody::XactAssignment { xtop, subxacts }
        }
        _ => RecordBody::Other,
    })
}

fn parse_commit_abort(
    xl_info: u8,
    record_xid: u32,
    r: &mut Reader,
    commit: bool,
    version: PgVersion,
) -> Result<XactParsed, ShortRead> {
    let mut p = XactParsed {
        xid: record_xid,
        xact_time: r.i64()?,
        ..Default::default()
    };
    if xl_info & XLOG_XACT_HAS_INFO != 0 {
        p.xinfo = r.u32()?;
    }
    if p.xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        p.db_id = r.u32()?;
        p.ts_id = r.u32()?;
    }
    if p.xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = r.count(4)?;
        p.subxacts = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
    }
    if p.xinfo & XACT_XINFO_HAS_RELFILENODES != 0 {
        let n = r.count(12)?;
        for _ in 0..n {
            p.dropped_rels.push(RelFileNode {
                spc: r.u32()?,
                db: r.u32()?,
                rel: r.u32()?,
            });
        }
    }
    if p.xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        let item = version.xact_stats_item_size();
        p.n_dropped_stats = r.count(item)?;
        r.skip(p.n_dropped_stats * item)?;
    }
    if commit && p.xinfo & XACT_XINFO_HAS_INVALS != 0 {
        p.n_invals = r.count(16)?;
        r.skip(p.n_invals * 16)?;
    }
    if p.xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        let xid = r.u32()?;
        p.twophase_xid = Some(xid);
        p.xid = xid;
        if p.xinfo & XACT_XINFO_HAS_GID != 0 {
            p.twophase_gid = Some(String::from_utf8_lossy(r.cstr()?).into_owned());
        }
    }
    if p.xinfo & XACT_XINFO_HAS_ORIGIN != 0 {
        p.origin_lsn = Some(Lsn(r.u64()?));
        p.origin_timestamp = Some(r.i64()?);
    }
    Ok(p)
}

fn parse_prepare(r: &mut Reader) -> Result<XactPrepare, BodyIssue> {
    let state = bytes::Bytes::copy_from_slice(r.clone().rest());
    let magic = r.u32()?;
    let _total_len = r.u32()?;
    let xid = r.u32()?;
    let database = r.u32()?;
    let prepared_at = r.i64()?;
    r.skip(30)?; // owner, six counts, initfileinval
    let gidlen = r.u16()? as usize;
    r.skip(16)?; // origin_lsn, origin_timestamp
    debug_assert_eq!(r.position(), XL_XACT_PREPARE_SIZE);
    let gid = r.bytes(gidlen)?;
    let gid = String::from_utf8_lossy(gid.strip_suffix(&[0]).unwrap_or(gid)).into_owned();
    if magic != TWOPHASE_MAGIC {
        return Err(BodyIssue::Invalid(format!(
            "two-phase state magic {magic:#010X}, expected {TWOPHASE_MAGIC:#010X}"
        )));
    }
    Ok(XactPrepare {
        xid,
        database,
        prepared_at,
        gid,
        state,
    })
}
