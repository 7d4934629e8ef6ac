//! PostgreSQL's data directory as keys (docs/storage-format.md §12): relation sizes and existence, the directories of
//! databases, relations, SLRU segments and two-phase files, and database sizes, read from a timeline at an
//! LSN. Directory and size values are whole values (`Value::Image`) in the encodings below, which are ours
//! (docs/storage-format.md §5.1), all integers little-endian:
//!
//! - database directory: `u32 n`, then n × (`u32 spcnode`, `u32 dbnode`, `u8 has_relmap_file`);
//! - relation directory of a database: `u32 n`, then n × (`u32 relnode`, `u8 forknum`);
//! - SLRU segment directory: `u32 n`, then n × `u32 segno`;
//! - two-phase directory: `u32 n`, then n × `u64 xid`;
//! - relation size, SLRU segment size: `u32` blocks;
//! - commit timestamp: `i64 newest` (TimestampTz, the largest commit time so far), `u64 lsn` (the commit).

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use crate::pg::constants::BLCKSZ;
use crate::pg::reader::Reader;
use crate::pg::{Lsn, RelFileNode};
use crate::repository::Key;
use crate::repository::timeline::{GetError, Timeline};
use crate::walredo::SlruKind;

#[derive(Debug, thiserror::Error)]
pub enum DatadirError {
    #[error(transparent)]
    Get(#[from] GetError),
    #[error("malformed {what} value of {key} at {lsn}")]
    Malformed {
        what: &'static str,
        key: Key,
        lsn: Lsn,
    },
    #[error("relation {rel:?} fork {fork} does not exist at {lsn}")]
    NoRelation {
        rel: RelFileNode,
        fork: u8,
        lsn: Lsn,
    },
}

/// What the commit-timestamp key holds at an LSN: the largest commit time of the commits ingested so far
/// (PostgreSQL TimestampTz), and the end and start LSN of the newest of those commits (the start is 0 in
/// values written before it was recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitTs {
    pub newest: i64,
    pub lsn: Lsn,
    pub start: Lsn,
}

/// What the checkpoint-location key holds at an LSN: the start of the newest checkpoint record ingested and
/// its redo point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointLocation {
    pub lsn: Lsn,
    pub redo: Lsn,
}

pub fn encode_checkpoint_location(c: CheckpointLocation) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_u64_le(c.lsn.0);
    b.put_u64_le(c.redo.0);
    b.freeze()
}

pub fn decode_checkpoint_location(bytes: &[u8]) -> Option<CheckpointLocation> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    let (lsn, redo) = b.split_at(8);
    Some(CheckpointLocation {
        lsn: Lsn(u64::from_le_bytes(lsn.try_into().ok()?)),
        redo: Lsn(u64::from_le_bytes(redo.try_into().ok()?)),
    })
}

/// A named restore point: `pg_create_restore_point(name)`'s record, its end LSN and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRestorePoint {
    pub name: String,
    pub lsn: Lsn,
    pub time: i64,
}

/// `u32 n`, then per point `u64 lsn`, `i64 time`, `u16 len` and the name's bytes, oldest first.
pub fn encode_restore_points(points: &[NamedRestorePoint]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32_le(points.len() as u32);
    for p in points {
        b.put_u64_le(p.lsn.0);
        b.put_i64_le(p.time);
        let name = &p.name.as_bytes()[..p.name.len().min(u16::MAX as usize)];
        b.put_u16_le(name.len() as u16);
        b.put_slice(name);
    }
    b.freeze()
}

pub fn decode_restore_points(bytes: &[u8]) -> Option<Vec<NamedRestorePoint>> {
    let mut r = crate::pg::reader::Reader::new(bytes);
    let n = r.u32().ok()?;
    let mut points = Vec::new();
    for _ in 0..n {
        let lsn = Lsn(r.u64().ok()?);
        let time = r.i64().ok()?;
        let len = r.u16().ok()?;
        let name = String::from_utf8(r.bytes(len as usize).ok()?.to_vec()).ok()?;
        points.push(NamedRestorePoint { name, lsn, time });
    }
    (r.remaining() == 0).then_some(points)
}

/// The answer of [`Timeline::find_lsn_for_timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampSearch {
    pub kind: LsnForTimestamp,
    /// With `Present`: the start of the first commit record later than the timestamp, so the state there
    /// holds everything written before that commit, as PostgreSQL's `recovery_target_time` stops (before the
    /// first transaction end past the target; here commits only). None when that commit's value predates the
    /// recorded start LSN.
    pub before_next_commit: Option<Lsn>,
}

/// Where a timestamp falls in a timeline's history (Neon's get_lsn_by_timestamp kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsnForTimestamp {
    /// `lsn` is the end of the last commit at or before the timestamp: a branch there holds every commit of
    /// up to that time and none later.
    Present(Lsn),
    /// Every commit the timeline holds is at or before the timestamp; `lsn` is last_record_lsn.
    Future(Lsn),
    /// The oldest readable state already has a later commit, or the timestamp is before the first commit the
    /// timeline holds (the time of its oldest state is unknown); `lsn` is that oldest readable LSN.
    Past(Lsn),
    /// No commit has been ingested; `lsn` is last_record_lsn.
    NoData(Lsn),
}

/// Databases: (spcnode, dbnode) -> has a pg_filenode.map and PG_VERSION.
pub type DbDirectory = BTreeMap<(u32, u32), bool>;
/// Relation forks of a database: (relnode, forknum).
pub type RelDirectory = BTreeSet<(u32, u8)>;

pub fn encode_db_dir(dir: &DbDirectory) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + 9 * dir.len());
    b.put_u32_le(dir.len() as u32);
    for ((spc, db), relmap) in dir {
        b.put_u32_le(*spc);
        b.put_u32_le(*db);
        b.put_u8(*relmap as u8);
    }
    b.freeze()
}

pub fn decode_db_dir(bytes: &[u8]) -> Option<DbDirectory> {
    let mut r = Reader::new(bytes);
    let n = r.u32().ok()? as usize;
    let mut out = DbDirectory::new();
    for _ in 0..n {
        out.insert((r.u32().ok()?, r.u32().ok()?), r.u8().ok()? != 0);
    }
    (r.remaining() == 0).then_some(out)
}

pub fn encode_rel_dir(dir: &RelDirectory) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + 5 * dir.len());
    b.put_u32_le(dir.len() as u32);
    for (rel, fork) in dir {
        b.put_u32_le(*rel);
        b.put_u8(*fork);
    }
    b.freeze()
}

pub fn decode_rel_dir(bytes: &[u8]) -> Option<RelDirectory> {
    let mut r = Reader::new(bytes);
    let n = r.u32().ok()? as usize;
    let mut out = RelDirectory::new();
    for _ in 0..n {
        out.insert((r.u32().ok()?, r.u8().ok()?));
    }
    (r.remaining() == 0).then_some(out)
}

pub fn encode_u32_set(set: &BTreeSet<u32>) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + 4 * set.len());
    b.put_u32_le(set.len() as u32);
    for v in set {
        b.put_u32_le(*v);
    }
    b.freeze()
}

pub fn decode_u32_set(bytes: &[u8]) -> Option<BTreeSet<u32>> {
    let mut r = Reader::new(bytes);
    let n = r.u32().ok()? as usize;
    let set = (0..n)
        .map(|_| r.u32().ok())
        .collect::<Option<BTreeSet<u32>>>()?;
    (r.remaining() == 0).then_some(set)
}

pub fn encode_u64_set(set: &BTreeSet<u64>) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + 8 * set.len());
    b.put_u32_le(set.len() as u32);
    for v in set {
        b.put_u64_le(*v);
    }
    b.freeze()
}

pub fn decode_u64_set(bytes: &[u8]) -> Option<BTreeSet<u64>> {
    let mut r = Reader::new(bytes);
    let n = r.u32().ok()? as usize;
    let set = (0..n)
        .map(|_| r.u64().ok())
        .collect::<Option<BTreeSet<u64>>>()?;
    (r.remaining() == 0).then_some(set)
}

pub fn encode_nblocks(n: u32) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

/// The commit-timestamp value (see the module doc).
pub fn encode_commit_ts(c: CommitTs) -> Bytes {
    let mut b = BytesMut::with_capacity(24);
    b.put_i64_le(c.newest);
    b.put_u64_le(c.lsn.0);
    b.put_u64_le(c.start.0);
    b.freeze()
}

/// 24 bytes, or the 16 of values written before the start LSN was recorded (start 0).
pub fn decode_commit_ts(bytes: &[u8]) -> Option<CommitTs> {
    if bytes.len() != 16 && bytes.len() != 24 {
        return None;
    }
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    Some(CommitTs {
        newest: u64_at(0)? as i64,
        lsn: Lsn(u64_at(8)?),
        start: Lsn(u64_at(16).unwrap_or(0)),
    })
}

fn decode_nblocks(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads an optional value and decodes it: `None` when the key has no version at `lsn`, `Malformed` (naming
/// `what`) when `decode` refuses it.
async fn get_decoded<T>(
    tl: &Timeline,
    key: Key,
    lsn: Lsn,
    what: &'static str,
    decode: fn(&[u8]) -> Option<T>,
) -> Result<Option<T>, DatadirError> {
    match get_opt(tl, key, lsn).await? {
        None => Ok(None),
        Some(b) => decode(&b)
            .map(Some)
            .ok_or(DatadirError::Malformed { what, key, lsn }),
    }
}

/// Reads an optional value: `None` when the key has no version at `lsn`.
async fn get_opt(tl: &Timeline, key: Key, lsn: Lsn) -> Result<Option<Bytes>, DatadirError> {
    match tl.get(key, lsn).await {
        Ok(v) => Ok(Some(v)),
        Err(GetError::KeyNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Timeline {
    /// The databases at `lsn` (empty before the first one is created).
    pub async fn list_dbdirs(&self, lsn: Lsn) -> Result<DbDirectory, DatadirError> {
        let key = Key::dbdir();
        match get_opt(self, key, lsn).await? {
            None => Ok(DbDirectory::new()),
            Some(b) => decode_db_dir(&b).ok_or(DatadirError::Malformed {
                what: "database directory",
                key,
                lsn,
            }),
        }
    }

    /// The relation forks of database (spc, db) at `lsn`.
    pub async fn list_rels(
        &self,
        spc: u32,
        db: u32,
        lsn: Lsn,
    ) -> Result<RelDirectory, DatadirError> {
        let key = Key::reldir(spc, db);
        match get_opt(self, key, lsn).await? {
            None => Ok(RelDirectory::new()),
            Some(b) => decode_rel_dir(&b).ok_or(DatadirError::Malformed {
                what: "relation directory",
                key,
                lsn,
            }),
        }
    }

    /// Whether a relation fork exists at `lsn`: its database is listed and the fork is in its directory.
    pub async fn rel_exists(
        &self,
        rel: RelFileNode,
        fork: u8,
        lsn: Lsn,
    ) -> Result<bool, DatadirError> {
        if !self
            .list_dbdirs(lsn)
            .await?
            .contains_key(&(rel.spc, rel.db))
        {
            return Ok(false);
        }
        Ok(self
            .list_rels(rel.spc, rel.db, lsn)
            .await?
            .contains(&(rel.rel, fork)))
    }

    /// Blocks of a relation fork at `lsn`; an error if it does not exist.
    pub async fn rel_size(
        &self,
        rel: RelFileNode,
        fork: u8,
        lsn: Lsn,
    ) -> Result<u32, DatadirError> {
        let key = Key::rel_size(rel, fork);
        if let Some(&(from, nblocks)) = self
            .rel_size_cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && lsn >= from
        {
            return Ok(nblocks);
        }
        let last = self.last_record_lsn();
        match get_opt(self, key, lsn).await? {
            Some(b) => {
                let nblocks = decode_nblocks(&b).ok_or(DatadirError::Malformed {
                    what: "relation size",
                    key,
                    lsn,
                })?;
                // Read at the last record: the size holds from here until the writer puts another, which
                // it notes with its own (higher) LSN.
                if lsn == last {
                    self.note_rel_size(key, lsn, nblocks);
                }
                Ok(nblocks)
            }
            None => Err(DatadirError::NoRelation { rel, fork, lsn }),
        }
    }

    /// The relation-size cache learns that `key` (a relation size key) is `nblocks` from `lsn` until the next
    /// note of it: called by the writer for every size it puts (before it publishes them), and by a read at
    /// last_record_lsn. An older note never replaces a newer one. So a read at any LSN at or above a note's
    /// (and at or below last_record_lsn) may answer from it without a layer walk.
    pub(crate) fn forget_rel_size(&self, key: &Key) {
        (self
            .rel_size_cache
            .write()
            .unwrap_or_else(|p| p.into_inner()))
        .remove(key);
    }

    pub(crate) fn note_rel_size(&self, key: Key, lsn: Lsn, nblocks: u32) {
        let mut cache = self
            .rel_size_cache
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let entry = cache.entry(key).or_insert((lsn, nblocks));
        if lsn >= entry.0 {
            *entry = (lsn, nblocks);
        }
    }

    /// Bytes of all relation forks of database (spc, db) at `lsn`.
    pub async fn db_size(&self, spc: u32, db: u32, lsn: Lsn) -> Result<u64, DatadirError> {
        let mut blocks = 0u64;
        for (rel, fork) in self.list_rels(spc, db, lsn).await? {
            let rnode = RelFileNode { spc, db, rel };
            match self.rel_size(rnode, fork, lsn).await {
                Ok(n) => blocks += n as u64,
                Err(DatadirError::NoRelation { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(blocks * BLCKSZ as u64)
    }

    /// Segments of an SLRU at `lsn`.
    pub async fn list_slru_segments(
        &self,
        kind: SlruKind,
        lsn: Lsn,
    ) -> Result<BTreeSet<u32>, DatadirError> {
        let key = Key::slru_dir(kind);
        match get_opt(self, key, lsn).await? {
            None => Ok(BTreeSet::new()),
            Some(b) => decode_u32_set(&b).ok_or(DatadirError::Malformed {
                what: "SLRU directory",
                key,
                lsn,
            }),
        }
    }

    /// Blocks of an SLRU segment at `lsn`.
    pub async fn slru_segment_size(
        &self,
        kind: SlruKind,
        segno: u32,
        lsn: Lsn,
    ) -> Result<Option<u32>, DatadirError> {
        let key = Key::slru_segment_size(kind, segno);
        match get_opt(self, key, lsn).await? {
            None => Ok(None),
            Some(b) => decode_nblocks(&b).map(Some).ok_or(DatadirError::Malformed {
                what: "SLRU segment size",
                key,
                lsn,
            }),
        }
    }

    /// The newest checkpoint record at or before `lsn`; None before the first one ingested.
    pub async fn checkpoint_location(
        &self,
        lsn: Lsn,
    ) -> Result<Option<CheckpointLocation>, DatadirError> {
        let key = Key::checkpoint_location();
        get_decoded(
            self,
            key,
            lsn,
            "checkpoint location",
            decode_checkpoint_location,
        )
        .await
    }

    /// The named restore points at or before `lsn`, oldest first.
    pub async fn restore_points(&self, lsn: Lsn) -> Result<Vec<NamedRestorePoint>, DatadirError> {
        let key = Key::restore_points();
        let points = get_decoded(self, key, lsn, "restore points", decode_restore_points).await?;
        Ok(points.unwrap_or_default())
    }

    /// The commit-timestamp value at `lsn`; None before the first commit ingested.
    pub async fn commit_ts(&self, lsn: Lsn) -> Result<Option<CommitTs>, DatadirError> {
        let key = Key::commit_timestamp();
        get_decoded(self, key, lsn, "commit timestamp", decode_commit_ts).await
    }

    /// The oldest and newest LSN whose state this timeline can give (a fullbackup, a branch): the GC cutoff,
    /// initdb or the branch point, whichever is newest; and last_record_lsn.
    pub fn restorable_lsns(&self) -> (Lsn, Lsn) {
        let hi = self.last_record_lsn();
        let meta = self.metadata();
        let mut lo = self.gc_cutoff().max(meta.initdb_lsn);
        if let Some((_, branch)) = self.ancestor() {
            lo = lo.max(branch);
        }
        (lo.min(hi), hi)
    }

    /// The oldest time [`find_lsn_for_timestamp`](Self::find_lsn_for_timestamp) answers `Present` for: the
    /// newest commit time at the oldest restorable LSN, or the first commit's after it; None without commits.
    pub async fn oldest_restorable_time(&self) -> Result<Option<i64>, DatadirError> {
        let (lo, hi) = self.restorable_lsns();
        if let Some(c) = self.commit_ts(lo).await? {
            return Ok(Some(c.newest));
        }
        let Some(newest) = self.commit_ts(hi).await? else {
            return Ok(None);
        };
        // The first LSN with a commit: the value is None up to it and Some from it on.
        let (mut none, mut some, mut first) = (lo.0, hi.0, newest);
        while some - none > 1 {
            let mid = none + (some - none) / 2;
            match self.commit_ts(Lsn(mid)).await? {
                Some(c) => (some, first) = (mid, c),
                None => none = mid,
            }
        }
        Ok(Some(first.newest))
    }

    /// The LSN whose state holds every commit up to `timestamp` (TimestampTz) and none after it, by binary
    /// search over LSNs between the oldest readable one and last_record_lsn: the newest commit time is
    /// non-decreasing in LSN (it is a running maximum), so "no commit later than the timestamp" holds up to
    /// one LSN and never after.
    pub async fn find_lsn_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<TimestampSearch, DatadirError> {
        let only = |kind| TimestampSearch {
            kind,
            before_next_commit: None,
        };
        let (lo, hi) = self.restorable_lsns();
        let Some(newest) = self.commit_ts(hi).await? else {
            return Ok(only(LsnForTimestamp::NoData(hi)));
        };
        if newest.newest <= timestamp {
            return Ok(only(LsnForTimestamp::Future(hi)));
        }
        let at_or_before = |c: Option<CommitTs>| c.is_none_or(|c| c.newest <= timestamp);
        let oldest = self.commit_ts(lo).await?;
        if !at_or_before(oldest) {
            return Ok(only(LsnForTimestamp::Past(lo)));
        }
        // Invariant: the state at `good` has no commit later than the timestamp, the one at `bad` has.
        let (mut good, mut bad, mut at_good, mut at_bad) = (lo.0, hi.0, oldest, Some(newest));
        while bad - good > 1 {
            let mid = good + (bad - good) / 2;
            let c = self.commit_ts(Lsn(mid)).await?;
            if at_or_before(c) {
                (good, at_good) = (mid, c);
            } else {
                (bad, at_bad) = (mid, c);
            }
        }
        // Before the first commit the timeline holds, the time of the oldest state is unknown: as Neon
        // answers when every commit found is later than the timestamp.
        let Some(at_good) = at_good else {
            return Ok(only(LsnForTimestamp::Past(lo)));
        };
        // The commit that wrote the value seen at `good` ends a record: a place to branch (below the branch
        // point, the branch point itself). The value at `bad` was written by the first commit later than the
        // timestamp (it ends at `bad`).
        let present = at_good.lsn.max(lo);
        let before_next_commit = (at_bad)
            .filter(|c| c.lsn == Lsn(bad) && c.start.0 != 0)
            .map(|c| c.start.max(present));
        Ok(TimestampSearch {
            kind: LsnForTimestamp::Present(present),
            before_next_commit,
        })
    }

    /// Prepared transactions at `lsn`.
    pub async fn list_twophase(&self, lsn: Lsn) -> Result<BTreeSet<u64>, DatadirError> {
        let key = Key::twophase_dir();
        match get_opt(self, key, lsn).await? {
            None => Ok(BTreeSet::new()),
            Some(b) => decode_u64_set(&b).ok_or(DatadirError::Malformed {
                what: "two-phase directory",
                key,
                lsn,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_and_refuse_garbage() {
        let mut dbs = DbDirectory::new();
        dbs.insert((1663, 5), true);
        dbs.insert((1664, 0), false);
        assert_eq!(decode_db_dir(&encode_db_dir(&dbs)).unwrap(), dbs);
        let rels: RelDirectory = [(16384, 0), (16384, 2), (1259, 0)].into_iter().collect();
        assert_eq!(decode_rel_dir(&encode_rel_dir(&rels)).unwrap(), rels);
        let segs: BTreeSet<u32> = [0, 1, 7].into_iter().collect();
        assert_eq!(decode_u32_set(&encode_u32_set(&segs)).unwrap(), segs);
        let xids: BTreeSet<u64> = [735, 1 << 40].into_iter().collect();
        assert_eq!(decode_u64_set(&encode_u64_set(&xids)).unwrap(), xids);
        assert_eq!(decode_nblocks(&encode_nblocks(42)), Some(42));
        let c = CommitTs {
            newest: -5,
            lsn: Lsn(0x1_0000_0028),
            start: Lsn(0x1_0000_0010),
        };
        assert_eq!(decode_commit_ts(&encode_commit_ts(c)), Some(c));
        assert_eq!(decode_commit_ts(&encode_commit_ts(c)[..15]), None);
        let points = vec![
            NamedRestorePoint {
                name: "before upgrade".into(),
                lsn: Lsn(0x1_0000_0100),
                time: 7,
            },
            NamedRestorePoint {
                name: String::new(),
                lsn: Lsn(0x1_0000_0200),
                time: -1,
            },
        ];
        let encoded = encode_restore_points(&points);
        assert_eq!(decode_restore_points(&encoded), Some(points));
        assert_eq!(decode_restore_points(&encoded[..encoded.len() - 1]), None);
        assert_eq!(decode_restore_points(&[&encoded[..], &[0]].concat()), None);
        assert_eq!(decode_commit_ts(&encode_commit_ts(c)[..23]), None);
        let old = decode_commit_ts(&encode_commit_ts(c)[..16]).unwrap();
        assert_eq!((old.newest, old.lsn, old.start), (c.newest, c.lsn, Lsn(0)));
        for garbage in [&b""[..], &[5, 0, 0, 0, 1][..], &[0, 0, 0, 0, 9][..]] {
            assert!(decode_db_dir(garbage).is_none() && decode_rel_dir(garbage).is_none());
            assert!(decode_u32_set(garbage).is_none());
        }
    }
}
