//! From each decoded WAL record to puts on a timeline (docs/repository.md).
//!
//! Per record, at its end LSN:
//! - every block reference: a full-page image to apply becomes an image (its page LSN set to the record's end
//!   LSN, as PostgreSQL's restore does), any other reference the raw record for `postgres --wal-redo`;
//!   writing a block past a fork's end extends the fork (its size key, and its directory entry: VM and FSM
//!   forks are created without WAL) and makes the blocks it skips zero pages (extended without WAL), at most
//!   [`MAX_ZERO_FILL_BLOCKS`]; a record (no image, not initialising) on a block past the end gets a zero page
//!   below it, as PostgreSQL's redo reads such a block (this matters with `full_page_writes = off`); a block
//!   number above MaxBlockNumber is an error;
//! - by record kind: relation create, truncate (heap, VM with its partial page) and drop (in commit and abort
//!   records); CREATE DATABASE by file copy (every relation of the template as of the record before it, the
//!   earlier records of the batch published first, streamed in chunks) and by WAL
//!   log; DROP DATABASE; relmapper files; CLOG, multixact and two-phase state (`slru.rs`); visibility-map bit
//!   clears (`vm.rs`); the checkpoint value a basebackup needs (at each record that changes it); the newest
//!   commit time and its LSN, at every commit (for get_lsn_by_timestamp); where each checkpoint record is
//!   (for a standby's backup_label); the named restore points (`pg_create_restore_point`).
//!
//! Skipped on purpose (they change nothing the pageserver stores): XLOG NOOP, BACKUP_END,
//! FPW_CHANGE, END_OF_RECOVERY, PARAMETER_CHANGE, SWITCH, OVERWRITE_CONTRECORD; XACT ASSIGNMENT and
//! INVALIDATIONS; STANDBY LOCK and INVALIDATIONS; LOGICAL MESSAGE; REPLORIGIN; COMMIT_TS (pg_commit_ts is not
//! kept: get_lsn_by_timestamp uses the commit records' times instead); TABLESPACE (only the default and global tablespaces are supported); and the bodies of every
//! other rmgr, whose effect is entirely in their block references.
//!
//! Sizes and directories are cached here, loaded from the timeline on first use; the cache is the state as of
//! the last ingested record. Only one `WalIngest` may write a timeline (it holds the timeline's writer for
//! each batch).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::PageChange;
use crate::pg::constants::*;
use crate::pg::page::{is_new, set_lsn};
use crate::pg::records::{CheckPoint, RecordBody, XactParsed, parse_body};
use crate::pg::{DecodedRecord, Lsn, RelFileNode};
use crate::repository::datadir::{self, CommitTs, DatadirError, DbDirectory, RelDirectory};
use crate::repository::timeline::{GetError, PutError, Timeline};
use crate::repository::{Key, Value};
use crate::walredo::native::VM_HEAPBLOCKS_PER_PAGE;
use crate::walredo::{PageId, SlruKind, WalRecord};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Put(#[from] PutError),
    #[error(transparent)]
    Datadir(#[from] DatadirError),
    #[error(transparent)]
    Get(#[from] GetError),
    #[error("record at {lsn}: {msg}")]
    Record { lsn: Lsn, msg: String },
}

pub struct WalIngest {
    tl: Arc<Timeline>,
    rel_sizes: HashMap<(RelFileNode, u8), u32>,
    dbdir: Option<DbDirectory>,
    reldirs: HashMap<(u32, u32), RelDirectory>,
    slru_dirs: HashMap<SlruKind, BTreeSet<u32>>,
    slru_sizes: HashMap<(SlruKind, u32), u32>,
    twophase: Option<BTreeSet<u64>>,
    checkpoint: Option<CheckPoint>,
    checkpoint_dirty: bool,
    /// The commit-timestamp value as of the last record (outer None: not loaded yet).
    commit_ts: Option<Option<CommitTs>>,
    /// The named restore points as of the last record (None: not loaded yet).
    restore_points: Option<Vec<datadir::NamedRestorePoint>>,
    /// Puts of the records ingested but not yet published, and the end and start LSN of the last of them.
    pending: Vec<(Key, Lsn, Value)>,
    pending_end: Option<(Lsn, Lsn)>,
    /// The puts of the record being ingested (kept for its allocation).
    scratch: Puts,
}

/// What one record produced, to put at its end LSN.
type Puts = Vec<(Key, Value)>;

/// The largest valid block number (PostgreSQL's MaxBlockNumber, `src/include/storage/block.h`);
/// 0xFFFFFFFF is InvalidBlockNumber.
const MAX_BLOCK_NUMBER: u32 = 0xFFFF_FFFE;

/// The checkpoint's next XID is kept ahead of every XID in the WAL, aligned up to this many (Neon's value,
/// `libs/postgres_ffi/src/xlog_utils.rs`). It divides the XIDs of a CLOG page (BLCKSZ * 4 = 32,768), so a
/// compute started from it allocates its first XID no further than the next page, which PostgreSQL extends
/// (ExtendCLOG at the first XID of a page). XIDs skipped this way are never used; nothing refers to them.
const XID_CHECKPOINT_INTERVAL: u32 = 1024;

/// The checkpoint's next XID (a full (epoch, xid) number) once `xid` is in the WAL, if it must move: past
/// `xid`, aligned up to [`XID_CHECKPOINT_INTERVAL`], into the next epoch when the 32-bit XID wraps.
fn next_xid_after(next_xid: u64, xid: u32) -> Option<u64> {
    let epoch = next_xid >> 32;
    let cur = next_xid as u32;
    let next = xid
        .wrapping_add(1)
        .wrapping_add(XID_CHECKPOINT_INTERVAL - 1)
        & !(XID_CHECKPOINT_INTERVAL - 1);
    // Past the wraparound an aligned 0 is no normal XID: 3 is the first one.
    let next = next.max(3);
    if (next.wrapping_sub(cur) as i32) <= 0 {
        return None;
    }
    let epoch = if next < cur { epoch + 1 } else { epoch };
    Some((epoch << 32) | next as u64)
}

/// Most blocks one record may extend a fork by without WAL (zero pages put for the blocks it skips): 2 GiB of
/// relation. PostgreSQL's largest legitimate skips are a hash index's bucket allocation for a new splitpoint
/// phase (`_hash_alloc_buckets` in `src/backend/access/hash/hashpage.c`: 2^17 buckets for an index of about
/// 2^20 buckets, a quarter-billion tuples) and bulk heap extension (at most 512 blocks a time,
/// `RelationAddExtraBlocks` in `src/backend/access/heap/hio.c`).
pub const MAX_ZERO_FILL_BLOCKS: u32 = 1 << 18;

/// Pages a file-copy CREATE DATABASE puts at a time (2 MiB).
const COPY_CHUNK: usize = 256;

/// The template and the new database of a file-copy CREATE DATABASE.
struct DbCopy {
    src_spc: u32,
    src_db: u32,
    spc: u32,
    db: u32,
}

impl WalIngest {
    pub fn new(tl: Arc<Timeline>) -> WalIngest {
        WalIngest {
            tl,
            rel_sizes: HashMap::new(),
            dbdir: None,
            reldirs: HashMap::new(),
            slru_dirs: HashMap::new(),
            slru_sizes: HashMap::new(),
            twophase: None,
            checkpoint: None,
            checkpoint_dirty: false,
            commit_ts: None,
            restore_points: None,
            pending: Vec::new(),
            pending_end: None,
            scratch: Puts::new(),
        }
    }

    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.tl
    }

    /// Ingests a batch of records (in LSN order, above last_record_lsn) and publishes them.
    pub async fn ingest_batch(&mut self, records: &[DecodedRecord]) -> Result<(), IngestError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let start = self.tl.last_record_lsn();
        for rec in records {
            let mut puts = self.ingest_record(rec).await?;
            self.pending
                .extend(puts.drain(..).map(|(k, v)| (k, rec.end_lsn, v)));
            self.scratch = puts;
            // At the record that changed it, not at the end of the batch: the value at any LSN is then the
            // same however the stream was cut into batches (a restarted ingest cuts it elsewhere).
            if self.checkpoint_dirty
                && let Some(cp) = &self.checkpoint
            {
                self.pending.push((
                    Key::checkpoint(),
                    rec.end_lsn,
                    Value::Image(Bytes::copy_from_slice(&cp.encode())),
                ));
                self.checkpoint_dirty = false;
            }
            self.pending_end = Some((rec.end_lsn, rec.lsn));
        }
        self.publish().await?;
        let stats = (&self.tl.ingested_records, &self.tl.ingested_wal_bytes);
        stats.0.fetch_add(records.len() as u64, Ordering::Relaxed);
        stats
            .1
            .fetch_add(last.end_lsn.0.saturating_sub(start.0), Ordering::Relaxed);
        Ok(())
    }

    /// Puts what the records ingested so far produced and makes it readable up to the last of them. Records
    /// that read the timeline's pages (a file-copy CREATE DATABASE) publish the earlier records of their
    /// batch first, so that those reads see them.
    async fn publish(&mut self) -> Result<(), IngestError> {
        let Some((end, prev)) = self.pending_end.take() else {
            return Ok(());
        };
        {
            let writer = self.tl.writer().await;
            writer.put_batch(&self.pending)?;
            self.pending.clear();
            writer.finish_write(end, Some(prev));
        }
        self.tl.wait_for_flush_backlog().await?;
        Ok(())
    }

    /// The puts of one record. Reads of earlier state see the previous records of the batch through the caches,
    /// and the timeline as of its last published LSN.
    async fn ingest_record(&mut self, rec: &DecodedRecord) -> Result<Puts, IngestError> {
        let mut puts = std::mem::take(&mut self.scratch);
        puts.clear();
        let body = parse_body(rec, self.tl.pg_version).map_err(|e| IngestError::Record {
            lsn: rec.lsn,
            msg: e.to_string(),
        })?;
        self.block_refs(rec, &mut puts).await?;
        // The checkpoint is loaded before the first xid is tracked: an ingest that starts mid-stream (a
        // reconnect, a restart, a recovery from from_lsn) must not miss the xids before its first checkpoint
        // record, or the next-xid it writes lags behind the transactions it has seen.
        if rec.header.xid >= 3 {
            self.checkpoint().await?;
        }
        self.track_xid(rec);
        match &body {
            RecordBody::Checkpoint { checkpoint, .. } => {
                let mut cp = *checkpoint;
                if let Some(current) = self.checkpoint().await? {
                    // Keep the newest next-xid we have seen; the record's may lag behind concurrent transactions.
                    cp.next_xid = cp.next_xid.max(current.next_xid);
                }
                self.checkpoint = Some(cp);
                self.checkpoint_dirty = true;
                let location = datadir::CheckpointLocation {
                    lsn: rec.lsn,
                    redo: checkpoint.redo,
                };
                puts.push((
                    Key::checkpoint_location(),
                    Value::Image(datadir::encode_checkpoint_location(location)),
                ));
            }
            RecordBody::RestorePoint { time, name } => {
                if self.restore_points.is_none() {
                    let lsn = self.tl.last_record_lsn();
                    self.restore_points = Some(self.tl.restore_points(lsn).await?);
                }
                let points = self.restore_points.get_or_insert_with(Vec::new);
                // A batch ingested again (after a failed publish) must not list its points twice.
                if points.last().is_none_or(|p| p.lsn < rec.end_lsn) {
                    points.push(datadir::NamedRestorePoint {
                        name: name.clone(),
                        lsn: rec.end_lsn,
                        time: *time,
                    });
                }
                puts.push((
                    Key::restore_points(),
                    Value::Image(datadir::encode_restore_points(points)),
                ));
            }
            RecordBody::NextOid(oid) => {
                if let Some(cp) = self.checkpoint_mut().await? {
                    cp.next_oid = *oid;
                }
            }
            RecordBody::XactCommit(x)
            | RecordBody::XactCommitPrepared(x)
            | RecordBody::XactAbort(x)
            | RecordBody::XactAbortPrepared(x) => {
                self.xact_end(x, &body, &mut puts).await?;
                if matches!(
                    body,
                    RecordBody::XactCommit(_) | RecordBody::XactCommitPrepared(_)
                ) {
                    self.commit_time(x.xact_time, rec.lsn..rec.end_lsn, &mut puts)
                        .await?;
                }
            }
            RecordBody::XactPrepare(p) => {
                puts.push((
                    Key::twophase_file(p.xid as u64),
                    Value::Image(p.state.clone()),
                ));
                let dir = self.twophase_dir().await?;
                dir.insert(p.xid as u64);
                let encoded = datadir::encode_u64_set(dir);
                puts.push((Key::twophase_dir(), Value::Image(encoded)));
            }
            RecordBody::MultiXactCreate(c) => {
                if let Some(cp) = self.checkpoint_mut().await? {
                    let next = c.mid.wrapping_add(1).max(1);
                    if multixact_precedes(cp.next_multi, next) {
                        cp.next_multi = next;
                    }
                    let next_off = c.moff.wrapping_add(c.members.len() as u32);
                    if cp.next_multi_offset < next_off {
                        cp.next_multi_offset = next_off;
                    }
                }
            }
            RecordBody::ClogTruncate(t) => {
                self.slru_truncate(SlruKind::Clog, t.pageno as u32, &mut puts)
                    .await?
            }
            RecordBody::MultiXactTruncate(t) => {
                self.slru_truncate(
                    SlruKind::MultiXactOffsets,
                    t.end_trunc_off / crate::walredo::native::MULTIXACT_OFFSETS_PER_PAGE,
                    &mut puts,
                )
                .await?;
                self.slru_truncate(
                    SlruKind::MultiXactMembers,
                    t.end_trunc_memb / crate::walredo::native::MULTIXACT_MEMBERS_PER_PAGE,
                    &mut puts,
                )
                .await?;
            }
            RecordBody::SmgrCreate(c) => self.rel_create(c.rnode, c.forknum, &mut puts).await?,
            RecordBody::SmgrTruncate(t) => {
                self.rel_truncate(t.rnode, t.blkno, t.flags, &mut puts)
                    .await?
            }
            RecordBody::DbaseCreateFileCopy(c) => {
                let copy = DbCopy {
                    src_spc: c.src_spc,
                    src_db: c.src_db,
                    spc: c.spc,
                    db: c.db,
                };
                self.db_copy(copy, rec.end_lsn, &mut puts).await?
            }
            RecordBody::DbaseCreateWalLog { db, spc } => {
                self.db_create(*spc, *db, false, &mut puts).await?
            }
            RecordBody::DbaseDrop(d) => {
                for spc in &d.spcs {
                    self.db_drop(*spc, d.db, &mut puts).await?;
                }
            }
            RecordBody::RelmapUpdate(r) => {
                puts.push((Key::relmap_file(r.spc, r.db), Value::Image(r.data.clone())));
                self.db_create(r.spc, r.db, true, &mut puts).await?;
            }
            RecordBody::Heap(heap) => {
                for change in super::vm::vm_changes(rec, heap) {
                    if let PageChange::Record(PageId::Rel(tag), record) = change
                        && self
                            .rel_size_cached(tag.rnode, tag.forknum)
                            .await?
                            .is_some_and(|n| n > tag.blkno)
                    {
                        puts.push((
                            Key::rel_block(tag.rnode, tag.forknum, tag.blkno),
                            Value::WalRecord(record),
                        ));
                    }
                }
            }
            RecordBody::RunningXacts(r) => {
                if let Some(cp) = self.checkpoint_mut().await? {
                    cp.oldest_active_xid = r.oldest_running_xid;
                }
            }
            _ => {}
        }
        for change in super::slru::slru_changes(&body) {
            self.slru_change(change, &mut puts).await?;
        }
        Ok(puts)
    }

    async fn block_refs(
        &mut self,
        rec: &DecodedRecord,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        for b in &rec.blocks {
            if b.blkno > MAX_BLOCK_NUMBER {
                return Err(IngestError::Record {
                    lsn: rec.lsn,
                    msg: format!(
                        "block reference names block {:#x}, which is not a valid block number",
                        b.blkno
                    ),
                });
            }
            let key = Key::rel_block(b.rnode, b.forknum, b.blkno);
            let value = match &b.image {
                Some(image) if image.apply() => {
                    let mut page = image
                        .restore()
                        .map_err(|msg| IngestError::Record { lsn: rec.lsn, msg })?;
                    if !is_new(&page) {
                        set_lsn(&mut page, rec.end_lsn);
                    }
                    Value::Image(Bytes::from(page))
                }
                _ => Value::WalRecord(WalRecord::Postgres {
                    will_init: b.will_init(),
                    rec: rec.raw.clone(),
                }),
            };
            let needs_base = !value.will_init();
            puts.push((key, value));
            let old_size = self
                .rel_extend(rec.lsn, b.rnode, b.forknum, b.blkno + 1, puts)
                .await?;
            if needs_base && b.blkno >= old_size {
                // A record that changes a block past the fork's end without an image: PostgreSQL's redo reads
                // that block as zeros (XLogReadBufferExtended extends the file), e.g. a visibility-map page
                // that vm_extend made without WAL, when full_page_writes is off. The zero page goes just
                // below the record's end LSN, where no other record's value can be.
                self.pending.push((
                    key,
                    Lsn(rec.end_lsn.0 - 1),
                    Value::Image(Bytes::from_static(&ZERO_PAGE)),
                ));
            }
        }
        Ok(())
    }

    /// Tracks the next XID past every XID in the WAL.
    fn track_xid(&mut self, rec: &DecodedRecord) {
        let xid = rec.header.xid;
        if xid < 3 {
            return;
        }
        if let Some(cp) = &mut self.checkpoint
            && let Some(next) = next_xid_after(cp.next_xid, xid)
        {
            cp.next_xid = next;
            self.checkpoint_dirty = true;
        }
    }

    async fn checkpoint(&mut self) -> Result<Option<CheckPoint>, IngestError> {
        if self.checkpoint.is_none() {
            let lsn = self.tl.last_record_lsn();
            match self.tl.get(Key::checkpoint(), lsn).await {
                Ok(bytes) => {
                    let mut r = crate::pg::reader::Reader::new(&bytes);
                    self.checkpoint = CheckPoint::parse(&mut r, self.tl.pg_version).ok();
                }
                Err(GetError::KeyNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.checkpoint)
    }

    async fn checkpoint_mut(&mut self) -> Result<Option<&mut CheckPoint>, IngestError> {
        self.checkpoint().await?;
        self.checkpoint_dirty = self.checkpoint.is_some();
        Ok(self.checkpoint.as_mut())
    }

    /// A commit at `end_lsn` with time `xact_time`: the commit-timestamp key gets a version here, with the
    /// running maximum of commit times (concurrent commits can log their times slightly out of order).
    async fn commit_time(
        &mut self,
        xact_time: i64,
        record: std::ops::Range<Lsn>,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        if self.commit_ts.is_none() {
            self.commit_ts = Some(self.tl.commit_ts(self.tl.last_record_lsn()).await?);
        }
        let newest = self
            .commit_ts
            .flatten()
            .map_or(xact_time, |c| c.newest.max(xact_time));
        let c = CommitTs {
            newest,
            lsn: record.end,
            start: record.start,
        };
        self.commit_ts = Some(Some(c));
        puts.push((
            Key::commit_timestamp(),
            Value::Image(datadir::encode_commit_ts(c)),
        ));
        Ok(())
    }

    async fn xact_end(
        &mut self,
        x: &XactParsed,
        body: &RecordBody,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        for rnode in &x.dropped_rels {
            for fork in 0..=MAX_FORKNUM {
                self.rel_drop(*rnode, fork, puts).await?;
            }
        }
        if matches!(
            body,
            RecordBody::XactCommitPrepared(_) | RecordBody::XactAbortPrepared(_)
        ) {
            let dir = self.twophase_dir().await?;
            if dir.remove(&(x.xid as u64)) {
                let encoded = datadir::encode_u64_set(dir);
                puts.push((Key::twophase_dir(), Value::Image(encoded)));
            }
        }
        Ok(())
    }

    /// The segments of an SLRU, as of the last record (loaded on first use).
    async fn slru_dir(&mut self, kind: SlruKind) -> Result<&mut BTreeSet<u32>, IngestError> {
        if !self.slru_dirs.contains_key(&kind) {
            let lsn = self.tl.last_record_lsn();
            let dir = self.tl.list_slru_segments(kind, lsn).await?;
            self.slru_dirs.insert(kind, dir);
        }
        Ok(self.slru_dirs.entry(kind).or_default())
    }

    async fn twophase_dir(&mut self) -> Result<&mut BTreeSet<u64>, IngestError> {
        if self.twophase.is_none() {
            self.twophase = Some(self.tl.list_twophase(self.tl.last_record_lsn()).await?);
        }
        Ok(self.twophase.get_or_insert_with(BTreeSet::new))
    }

    async fn db_dir(&mut self) -> Result<&mut DbDirectory, IngestError> {
        if self.dbdir.is_none() {
            self.dbdir = Some(self.tl.list_dbdirs(self.tl.last_record_lsn()).await?);
        }
        Ok(self.dbdir.get_or_insert_with(DbDirectory::new))
    }

    async fn rel_dir(&mut self, spc: u32, db: u32) -> Result<&mut RelDirectory, IngestError> {
        if !self.reldirs.contains_key(&(spc, db)) {
            let dir = self
                .tl
                .list_rels(spc, db, self.tl.last_record_lsn())
                .await?;
            self.reldirs.insert((spc, db), dir);
        }
        Ok(self.reldirs.entry((spc, db)).or_default())
    }

    /// The fork's size if the fork exists.
    async fn rel_size_cached(
        &mut self,
        rnode: RelFileNode,
        fork: u8,
    ) -> Result<Option<u32>, IngestError> {
        if let Some(n) = self.rel_sizes.get(&(rnode, fork)) {
            return Ok(Some(*n));
        }
        if !self
            .rel_dir(rnode.spc, rnode.db)
            .await?
            .contains(&(rnode.rel, fork))
        {
            return Ok(None);
        }
        let n = match self
            .tl
            .rel_size(rnode, fork, self.tl.last_record_lsn())
            .await
        {
            Ok(n) => n,
            Err(DatadirError::NoRelation { .. }) => 0,
            Err(e) => return Err(e.into()),
        };
        self.rel_sizes.insert((rnode, fork), n);
        Ok(Some(n))
    }

    async fn db_create(
        &mut self,
        spc: u32,
        db: u32,
        relmap: bool,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        let dir = self.db_dir().await?;
        let had = dir.get(&(spc, db)).copied();
        if had == Some(true) || had == Some(relmap) {
            return Ok(());
        }
        dir.insert((spc, db), relmap || had.unwrap_or(false));
        let encoded = datadir::encode_db_dir(dir);
        puts.push((Key::dbdir(), Value::Image(encoded)));
        if had.is_none() {
            self.reldirs.insert((spc, db), RelDirectory::new());
            puts.push((
                Key::reldir(spc, db),
                Value::Image(datadir::encode_rel_dir(&RelDirectory::new())),
            ));
        }
        Ok(())
    }

    async fn db_drop(&mut self, spc: u32, db: u32, puts: &mut Puts) -> Result<(), IngestError> {
        let dir = self.db_dir().await?;
        if dir.remove(&(spc, db)).is_none() {
            return Ok(());
        }
        let encoded = datadir::encode_db_dir(dir);
        puts.push((Key::dbdir(), Value::Image(encoded)));
        self.reldirs.remove(&(spc, db));
        self.rel_sizes
            .retain(|(r, _), _| !(r.spc == spc && r.db == db));
        puts.push((
            Key::reldir(spc, db),
            Value::Image(datadir::encode_rel_dir(&RelDirectory::new())),
        ));
        Ok(())
    }

    async fn rel_create(
        &mut self,
        rnode: RelFileNode,
        fork: u8,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        if !self.db_dir().await?.contains_key(&(rnode.spc, rnode.db)) {
            self.db_create(rnode.spc, rnode.db, false, puts).await?;
        }
        let dir = self.rel_dir(rnode.spc, rnode.db).await?;
        if dir.insert((rnode.rel, fork)) {
            let encoded = datadir::encode_rel_dir(dir);
            puts.push((Key::reldir(rnode.spc, rnode.db), Value::Image(encoded)));
            self.rel_sizes.insert((rnode, fork), 0);
            puts.push((
                Key::rel_size(rnode, fork),
                Value::Image(datadir::encode_nblocks(0)),
            ));
        }
        Ok(())
    }

    /// The fork is at least `nblocks` long after the record at `lsn`; returns its size before.
    async fn rel_extend(
        &mut self,
        lsn: Lsn,
        rnode: RelFileNode,
        fork: u8,
        nblocks: u32,
        puts: &mut Puts,
    ) -> Result<u32, IngestError> {
        let current = match self.rel_size_cached(rnode, fork).await? {
            Some(n) => n,
            None => {
                self.rel_create(rnode, fork, puts).await?;
                0
            }
        };
        if nblocks > current {
            // Blocks between the old end and the written one were extended without WAL (bulk extension
            // under contention, hash bucket allocation): PostgreSQL's file holds zeros there, so do we, up to
            // a bound that hostile WAL cannot turn into billions of puts.
            let gap = nblocks - 1 - current;
            if gap > MAX_ZERO_FILL_BLOCKS {
                return Err(IngestError::Record {
                    lsn,
                    msg: format!(
                        "writing block {} of relation {}/{}/{} fork {fork} would zero-fill {gap} blocks \
                         past its end {current}; at most {MAX_ZERO_FILL_BLOCKS} are allowed",
                        nblocks - 1,
                        rnode.spc,
                        rnode.db,
                        rnode.rel
                    ),
                });
            }
            for blk in current..nblocks - 1 {
                puts.push((
                    Key::rel_block(rnode, fork, blk),
                    Value::Image(Bytes::from_static(&ZERO_PAGE)),
                ));
            }
            self.rel_sizes.insert((rnode, fork), nblocks);
            puts.push((
                Key::rel_size(rnode, fork),
                Value::Image(datadir::encode_nblocks(nblocks)),
            ));
        }
        Ok(current)
    }

    async fn set_rel_size(&mut self, rnode: RelFileNode, fork: u8, nblocks: u32, puts: &mut Puts) {
        self.rel_sizes.insert((rnode, fork), nblocks);
        puts.push((
            Key::rel_size(rnode, fork),
            Value::Image(datadir::encode_nblocks(nblocks)),
        ));
    }

    async fn rel_drop(
        &mut self,
        rnode: RelFileNode,
        fork: u8,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        let dir = self.rel_dir(rnode.spc, rnode.db).await?;
        if dir.remove(&(rnode.rel, fork)) {
            let encoded = datadir::encode_rel_dir(dir);
            puts.push((Key::reldir(rnode.spc, rnode.db), Value::Image(encoded)));
        }
        self.rel_sizes.remove(&(rnode, fork));
        Ok(())
    }

    /// SMGR truncate: the heap to `blkno` blocks, and the VM to what covers them (its last page cut in part).
    async fn rel_truncate(
        &mut self,
        rnode: RelFileNode,
        blkno: u32,
        flags: u32,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        // Truncating to more blocks than the fork has changes nothing (mdtruncate in recovery,
        // src/backend/storage/smgr/md.c).
        if flags & SMGR_TRUNCATE_HEAP != 0
            && self
                .rel_size_cached(rnode, MAIN_FORKNUM)
                .await?
                .is_some_and(|n| blkno < n)
        {
            self.set_rel_size(rnode, MAIN_FORKNUM, blkno, puts).await;
        }
        if flags & SMGR_TRUNCATE_VM != 0
            && let Some(vm_size) = self.rel_size_cached(rnode, VISIBILITYMAP_FORKNUM).await?
        {
            let vm_block = blkno / VM_HEAPBLOCKS_PER_PAGE;
            let in_page = blkno % VM_HEAPBLOCKS_PER_PAGE;
            let mut new_size = vm_block;
            if in_page != 0 && vm_block < vm_size {
                puts.push((
                    Key::rel_block(rnode, VISIBILITYMAP_FORKNUM, vm_block),
                    Value::WalRecord(WalRecord::TruncateVisibilityMap {
                        trunc_byte: in_page / 4,
                        trunc_offs: ((in_page % 4) * 2) as u8,
                    }),
                ));
                new_size = vm_block + 1;
            }
            if new_size < vm_size {
                self.set_rel_size(rnode, VISIBILITYMAP_FORKNUM, new_size, puts)
                    .await;
            }
        }
        // The FSM is not WAL-logged and not compared; its size stays as it was.
        Ok(())
    }

    /// CREATE DATABASE ... STRATEGY file_copy: every relation of the template as of this record, which is
    /// the template's state as of the record before it (PostgreSQL checkpoints, then copies the files). The
    /// earlier records of the batch are published first so that the reads see them; the pages are put in
    /// chunks of [`COPY_CHUNK`] at `end_lsn`, never all held at once.
    async fn db_copy(
        &mut self,
        c: DbCopy,
        end_lsn: Lsn,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        self.publish().await?;
        let at = self.tl.last_record_lsn();
        let rels = self.tl.list_rels(c.src_spc, c.src_db, at).await?;
        let relmap = self.tl.get(Key::relmap_file(c.src_spc, c.src_db), at).await;
        self.db_create(c.spc, c.db, relmap.is_ok(), puts).await?;
        if let Ok(map) = relmap {
            puts.push((Key::relmap_file(c.spc, c.db), Value::Image(map)));
        }
        // The writer is held throughout: a checkpoint must not freeze the open layer while it holds pages put
        // above last_record_lsn.
        let tl = self.tl.clone();
        let writer = tl.writer().await;
        let mut chunk = Vec::with_capacity(COPY_CHUNK);
        for (rel, fork) in rels {
            let src = RelFileNode {
                spc: c.src_spc,
                db: c.src_db,
                rel,
            };
            let dst = RelFileNode {
                spc: c.spc,
                db: c.db,
                rel,
            };
            let n = match self.tl.rel_size(src, fork, at).await {
                Ok(n) => n,
                Err(DatadirError::NoRelation { .. }) => 0,
                Err(e) => return Err(e.into()),
            };
            self.rel_create(dst, fork, puts).await?;
            for blk in 0..n {
                let page = self.tl.get(Key::rel_block(src, fork, blk), at).await?;
                chunk.push((Key::rel_block(dst, fork, blk), end_lsn, Value::Image(page)));
                if chunk.len() == COPY_CHUNK {
                    writer.put_batch(&chunk)?;
                    chunk.clear();
                }
            }
            self.set_rel_size(dst, fork, n, puts).await;
        }
        writer.put_batch(&chunk)?;
        Ok(())
    }

    async fn slru_change(
        &mut self,
        change: PageChange,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        let (id, value) = match change {
            PageChange::Image(id, img) => (id, Value::Image(img)),
            PageChange::Record(id, rec) => (id, Value::WalRecord(rec)),
        };
        let PageId::Slru { kind, pageno } = id else {
            return Ok(());
        };
        let segno = pageno / super::slru::SLRU_PAGES_PER_SEGMENT;
        let blk = pageno % super::slru::SLRU_PAGES_PER_SEGMENT;
        let creates = value.is_image();
        puts.push((Key::slru_block(kind, segno, blk), value));
        if !creates {
            return Ok(());
        }
        let dir = self.slru_dir(kind).await?;
        if dir.insert(segno) {
            let encoded = datadir::encode_u32_set(dir);
            puts.push((Key::slru_dir(kind), Value::Image(encoded)));
        }
        let size = match self.slru_sizes.get(&(kind, segno)) {
            Some(n) => *n,
            None => self
                .tl
                .slru_segment_size(kind, segno, self.tl.last_record_lsn())
                .await?
                .unwrap_or(0),
        };
        if blk + 1 > size {
            self.slru_sizes.insert((kind, segno), blk + 1);
            puts.push((
                Key::slru_segment_size(kind, segno),
                Value::Image(datadir::encode_nblocks(blk + 1)),
            ));
        }
        Ok(())
    }

    /// Removes SLRU segments wholly before `pageno`.
    async fn slru_truncate(
        &mut self,
        kind: SlruKind,
        pageno: u32,
        puts: &mut Puts,
    ) -> Result<(), IngestError> {
        let cutoff = pageno / super::slru::SLRU_PAGES_PER_SEGMENT;
        let dir = self.slru_dir(kind).await?;
        let before = dir.len();
        dir.retain(|s| *s >= cutoff);
        if dir.len() != before {
            let encoded = datadir::encode_u32_set(dir);
            puts.push((Key::slru_dir(kind), Value::Image(encoded)));
        }
        Ok(())
    }
}

/// multixact.c MultiXactIdPrecedes: modular comparison.
fn multixact_precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[cfg(test)]
mod tests {
    use super::next_xid_after;

    #[test]
    fn next_xid_moves_once_per_interval() {
        // Within the interval that next_xid already covers: no change (no checkpoint value to write).
        assert_eq!(next_xid_after(1024, 5), None);
        assert_eq!(next_xid_after(1024, 1022), None);
        // xid 1023 needs next_xid 1024: covered. xid 1024 needs 1025, aligned up to 2048.
        assert_eq!(next_xid_after(1024, 1023), None);
        assert_eq!(next_xid_after(1024, 1024), Some(2048));
        // An XID behind next_xid never moves it back.
        assert_eq!(next_xid_after(5 << 32 | 4096, 100), None);
        // The epoch advances when the 32-bit XID wraps; an aligned 0 becomes the first normal XID.
        assert_eq!(
            next_xid_after(7 << 32 | 0xFFFF_FC00, 0xFFFF_FFFF),
            Some(8 << 32 | 3)
        );
        assert_eq!(
            next_xid_after(7 << 32 | 0xFFFF_FC00, 10),
            Some(8 << 32 | 1024)
        );
    }
}
