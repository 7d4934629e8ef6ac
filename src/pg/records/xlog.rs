//! XLOG resource manager bodies (catalog/pg_control.h, access/xlog_internal.h).

use super::{BodyIssue, RecordBody};
use crate::pg::constants::*;
use crate::pg::lsn::Lsn;
use crate::pg::reader::{Reader, ShortRead};
use crate::pg::version::PgVersion;

/// `CheckPoint` (pg_control.h), 88 bytes with its alignment padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckPoint {
    pub redo: Lsn,
    pub this_timeline_id: u32,
    pub prev_timeline_id: u32,
    pub full_page_writes: bool,
    /// `wal_level` (PostgreSQL 17 and later; 0 for 15, where these bytes are padding).
    pub wal_level: i32,
    pub next_xid: u64,
    pub next_oid: u32,
    pub next_multi: u32,
    pub next_multi_offset: u32,
    pub oldest_xid: u32,
    pub oldest_xid_db: u32,
    pub oldest_multi: u32,
    pub oldest_multi_db: u32,
    pub time: i64,
    pub oldest_commit_ts_xid: u32,
    pub newest_commit_ts_xid: u32,
    pub oldest_active_xid: u32,
}

impl CheckPoint {
    pub const SIZE: usize = 88;

    pub fn parse(r: &mut Reader, version: PgVersion) -> Result<CheckPoint, ShortRead> {
        let redo = Lsn(r.u64()?);
        let this_timeline_id = r.u32()?;
        let prev_timeline_id = r.u32()?;
        let full_page_writes = r.u8()? != 0;
        r.skip(3)?;
        let wal_level = r.i32()?;
        let wal_level = if version.checkpoint_has_wal_level() {
            wal_level
        } else {
            0
        };
        let next_xid = r.u64()?;
        let next_oid = r.u32()?;
        let next_multi = r.u32()?;
        let next_multi_offset = r.u32()?;
        let oldest_xid = r.u32()?;
        let oldest_xid_db = r.u32()?;
        let oldest_multi = r.u32()?;
        let oldest_multi_db = r.u32()?;
        r.skip(4)?;
        let time = r.i64()?;
        let oldest_commit_ts_xid = r.u32()?;
        let newest_commit_ts_xid = r.u32()?;
        let oldest_active_xid = r.u32()?;
        r.skip(4)?;
        Ok(CheckPoint {
            redo,
            this_timeline_id,
            prev_timeline_id,
            full_page_writes,
            wal_level,
            next_xid,
            next_oid,
            next_multi,
            next_multi_offset,
            oldest_xid,
            oldest_xid_db,
            oldest_multi,
            oldest_multi_db,
            time,
            oldest_commit_ts_xid,
            newest_commit_ts_xid,
            oldest_active_xid,
        })
    }

    /// The 88 bytes as PostgreSQL lays them out (padding zeroed).
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..8].copy_from_slice(&self.redo.0.to_le_bytes());
        b[8..12].copy_from_slice(&self.this_timeline_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.prev_timeline_id.to_le_bytes());
        b[16] = self.full_page_writes as u8;
        b[20..24].copy_from_slice(&self.wal_level.to_le_bytes());
        b[24..32].copy_from_slice(&self.next_xid.to_le_bytes());
        b[32..36].copy_from_slice(&self.next_oid.to_le_bytes());
        b[36..40].copy_from_slice(&self.next_multi.to_le_bytes());
        b[40..44].copy_from_slice(&self.next_multi_offset.to_le_bytes());
        b[44..48].copy_from_slice(&self.oldest_xid.to_le_bytes());
        b[48..52].copy_from_slice(&self.oldest_xid_db.to_le_bytes());
        b[52..56].copy_from_slice(&self.oldest_multi.to_le_bytes());
        b[56..60].copy_from_slice(&self.oldest_multi_db.to_le_bytes());
        b[64..72].copy_from_slice(&self.time.to_le_bytes());
        b[72..76].copy_from_slice(&self.oldest_commit_ts_xid.to_le_bytes());
        b[76..80].copy_from_slice(&self.newest_commit_ts_xid.to_le_bytes());
        b[80..84].copy_from_slice(&self.oldest_active_xid.to_le_bytes());
        b
    }
}

/// `xl_parameter_change`: settings a standby must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterChange {
    pub max_connections: i32,
    pub max_worker_processes: i32,
    pub max_wal_senders: i32,
    pub max_prepared_xacts: i32,
    pub max_locks_per_xact: i32,
    pub wal_level: i32,
    pub wal_log_hints: bool,
    pub track_commit_timestamp: bool,
}

pub(super) fn parse(info: u8, r: &mut Reader, version: PgVersion) -> Result<RecordBody, BodyIssue> {
    Ok(match info {
        XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE => RecordBody::Checkpoint {
            shutdown: info == XLOG_CHECKPOINT_SHUTDOWN,
            checkpoint: CheckPoint::parse(r, version)?,
        },
        XLOG_NEXTOID => RecordBody::NextOid(r.u32()?),
        XLOG_SWITCH => RecordBody::Switch,
        XLOG_PARAMETER_CHANGE => RecordBody::ParameterChange(ParameterChange {
            max_connections: r.i32()?,
            max_worker_processes: r.i32()?,
            max_wal_senders: r.i32()?,
            max_prepared_xacts: r.i32()?,
            max_locks_per_xact: r.i32()?,
            wal_level: r.i32()?,
            wal_log_hints: r.u8()? != 0,
            track_commit_timestamp: r.u8()? != 0,
        }),
        XLOG_OVERWRITE_CONTRECORD => RecordBody::OverwriteContrecord {
            overwritten_lsn: Lsn(r.u64()?),
            overwrite_time: r.i64()?,
        },
        XLOG_RESTORE_POINT => {
            // xl_restore_point: TimestampTz rp_time; char rp_name[MAXFNAMELEN = 64], NUL-terminated.
            let time = r.i64()?;
            let raw = r.bytes(64)?;
            let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            RecordBody::RestorePoint {
                time,
                name: String::from_utf8_lossy(&raw[..len]).into_owned(),
            }
        }
        XLOG_FPI => RecordBody::Fpi,
        XLOG_FPI_FOR_HINT => RecordBody::FpiForHint,
        _ => RecordBody::Other,
    })
}
