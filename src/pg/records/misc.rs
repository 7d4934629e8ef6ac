//! Bodies of CLOG, multixact, storage manager, database, relation mapper, standby and logical message records.

use bytes::Bytes;

use super::{BodyIssue, RecordBody};
use crate::pg::constants::*;
use crate::pg::reader::Reader;
use crate::pg::version::PgVersion;
use crate::pg::xlogrecord::RelFileNode;

/// `xl_clog_truncate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClogTruncate {
    pub pageno: i64,
    pub oldest_xact: u32,
    pub oldest_xact_db: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiXactMember {
    pub xid: u32,
    pub status: u32,
}

/// `xl_multixact_create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiXactCreate {
    pub mid: u32,
    pub moff: u32,
    pub members: Vec<MultiXactMember>,
}

/// `xl_multixact_truncate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiXactTruncate {
    pub oldest_multi_db: u32,
    pub start_trunc_off: u32,
    pub end_trunc_off: u32,
    pub start_trunc_memb: u32,
    pub end_trunc_memb: u32,
}

/// `xl_smgr_create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmgrCreate {
    pub rnode: RelFileNode,
    pub forknum: u8,
}

/// `xl_smgr_truncate`: truncate the forks named by `flags` (SMGR_TRUNCATE_*) to `blkno` heap blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmgrTruncate {
    pub blkno: u32,
    pub rnode: RelFileNode,
    pub flags: u32,
}

/// `xl_dbase_create_file_copy_rec`: a database copied file by file from a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbaseCreateFileCopy {
    pub db: u32,
    pub spc: u32,
    pub src_db: u32,
    pub src_spc: u32,
}

/// `xl_dbase_drop_rec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbaseDrop {
    pub db: u32,
    pub spcs: Vec<u32>,
}

/// `xl_relmap_update`: the new content of a pg_filenode.map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelmapUpdate {
    pub db: u32,
    pub spc: u32,
    pub data: Bytes,
}

/// `xl_running_xacts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningXacts {
    pub xcnt: u32,
    pub subxcnt: u32,
    pub subxid_overflow: bool,
    pub next_xid: u32,
    pub oldest_running_xid: u32,
    pub latest_completed_xid: u32,
    pub xids: Vec<u32>,
}

/// `xl_logical_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    pub db: u32,
    pub transactional: bool,
    /// Without its terminating NUL.
    pub prefix: Bytes,
    pub message: Bytes,
}

fn rnode(r: &mut Reader) -> Result<RelFileNode, BodyIssue> {
    Ok(RelFileNode {
        spc: r.u32()?,
        db: r.u32()?,
        rel: r.u32()?,
    })
}

/// An SLRU page number: `int` before PostgreSQL 17, `int64` since.
fn slru_pageno(r: &mut Reader, version: PgVersion) -> Result<i64, BodyIssue> {
    Ok(if version.slru_pageno_is_64bit() {
        r.i64()?
    } else {
        r.i32()? as i64
    })
}

pub(super) fn parse(
    rmid: u8,
    info: u8,
    r: &mut Reader,
    version: PgVersion,
) -> Result<RecordBody, BodyIssue> {
    Ok(match (rmid, info) {
        (RM_CLOG_ID, CLOG_ZEROPAGE) => RecordBody::ClogZeroPage {
            pageno: slru_pageno(r, version)?,
        },
        (RM_CLOG_ID, CLOG_TRUNCATE) => {
            let pageno = slru_pageno(r, version)?;
            RecordBody::ClogTruncate(ClogTruncate {
                pageno,
                oldest_xact: r.u32()?,
                oldest_xact_db: r.u32()?,
            })
        }
        (RM_MULTIXACT_ID, XLOG_MULTIXACT_ZERO_OFF_PAGE) => RecordBody::MultiXactZeroOffsetPage {
            pageno: slru_pageno(r, version)?,
        },
        (RM_MULTIXACT_ID, XLOG_MULTIXACT_ZERO_MEM_PAGE) => RecordBody::MultiXactZeroMemberPage {
            pageno: slru_pageno(r, version)?,
        },
        (RM_MULTIXACT_ID, XLOG_MULTIXACT_CREATE_ID) => {
            let mid = r.u32()?;
            let moff = r.u32()?;
            let n = r.count(8)?;
            let mut members = Vec::with_capacity(n);
            for _ in 0..n {
                members.push(MultiXactMember {
                    xid: r.u32()?,
                    status: r.u32()?,
                });
            }
            RecordBody::MultiXactCreate(MultiXactCreate { mid, moff, members })
        }
        (RM_MULTIXACT_ID, XLOG_MULTIXACT_TRUNCATE_ID) => {
            RecordBody::MultiXactTruncate(MultiXactTruncate {
                oldest_multi_db: r.u32()?,
                start_trunc_off: r.u32()?,
                end_trunc_off: r.u32()?,
                start_trunc_memb: r.u32()?,
                end_trunc_memb: r.u32()?,
            })
        }
        (RM_SMGR_ID, XLOG_SMGR_CREATE) => {
            let rnode = rnode(r)?;
            let forknum = r.i32()?;
            if !(0..=MAX_FORKNUM as i32).contains(&forknum) {
                return Err(BodyIssue::Invalid(format!("invalid fork number {forknum}")));
            }
            RecordBody::SmgrCreate(SmgrCreate {
                rnode,
                forknum: forknum as u8,
            })
        }
        (RM_SMGR_ID, XLOG_SMGR_TRUNCATE) => RecordBody::SmgrTruncate(SmgrTruncate {
            blkno: r.u32()?,
            rnode: rnode(r)?,
            flags: r.u32()?,
        }),
        (RM_DBASE_ID, XLOG_DBASE_CREATE_FILE_COPY) => {
            RecordBody::DbaseCreateFileCopy(DbaseCreateFileCopy {
                db: r.u32()?,
                spc: r.u32()?,
                src_db: r.u32()?,
                src_spc: r.u32()?,
            })
        }
        (RM_DBASE_ID, XLOG_DBASE_CREATE_WAL_LOG) => RecordBody::DbaseCreateWalLog {
            db: r.u32()?,
            spc: r.u32()?,
        },
        (RM_DBASE_ID, XLOG_DBASE_DROP) => {
            let db = r.u32()?;
            let n = r.count(4)?;
            let spcs = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            RecordBody::DbaseDrop(DbaseDrop { db, spcs })
        }
        (RM_RELMAP_ID, XLOG_RELMAP_UPDATE) => {
            let db = r.u32()?;
            let spc = r.u32()?;
            let n = r.count(1)?;
            RecordBody::RelmapUpdate(RelmapUpdate {
                db,
                spc,
                data: Bytes::copy_from_slice(r.bytes(n)?),
            })
        }
        (RM_STANDBY_ID, XLOG_RUNNING_XACTS) => {
            let xcnt = r.count(4)?;
            let subxcnt = r.count(4)?;
            let subxid_overflow = r.u8()? != 0;
            r.skip(3)?;
            let next_xid = r.u32()?;
            let oldest_running_xid = r.u32()?;
            let latest_completed_xid = r.u32()?;
            let total = xcnt + subxcnt;
            if total.saturating_mul(4) > r.remaining() {
                return Err(BodyIssue::Invalid(format!(
                    "{total} running xids in a short record"
                )));
            }
            let xids = (0..total).map(|_| r.u32()).collect::<Result<_, _>>()?;
            RecordBody::RunningXacts(RunningXacts {
                xcnt: xcnt as u32,
                subxcnt: subxcnt as u32,
                subxid_overflow,
                next_xid,
                oldest_running_xid,
                latest_completed_xid,
                xids,
            })
        }
        (RM_LOGICALMSG_ID, XLOG_LOGICAL_MESSAGE) => {
            let db = r.u32()?;
            let transactional = r.u8()? != 0;
            r.skip(3)?;
            let prefix_size = r.u64()?;
            let message_size = r.u64()?;
            let (Ok(prefix_size), Ok(message_size)) =
                (usize::try_from(prefix_size), usize::try_from(message_size))
            else {
                return Err(BodyIssue::Invalid("logical message sizes overflow".into()));
            };
            let prefix = r.bytes(prefix_size)?;
            let prefix = prefix.strip_suffix(&[0]).unwrap_or(prefix);
            RecordBody::LogicalMessage(LogicalMessage {
                db,
                transactional,
                prefix: Bytes::copy_from_slice(prefix),
                message: Bytes::copy_from_slice(r.bytes(message_size)?),
            })
        }
        _ => RecordBody::Other,
    })
}
