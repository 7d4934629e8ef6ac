//! `basebackup` and `fullbackup`: a data directory at an LSN as a tar stream over CopyOut (docs/protocols.md).
//!
//! Entries, in order: the directories of a PostgreSQL 15 data directory; `pg_hba.conf` (trust on the local
//! socket and loopback), `pg_ident.conf` and `postgresql.auto.conf` (empty), and for a fullbackup a
//! `postgresql.conf` (PostgreSQL's defaults); the SLRU segments (`pg_xact`, `pg_multixact/members`,
//! `pg_multixact/offsets`); per database `PG_VERSION` and `pg_filenode.map`, and its relation files: for a
//! basebackup only the init forks of unlogged relations (each also as the main fork), for a fullbackup every
//! fork, segmented at 1 GiB; the two-phase state files; `neon.signal` and `zenith.signal`; `global/pg_control`;
//! last the WAL segment (`pg_wal/`). An interrupted stream therefore lacks pg_control.
//!
//! A basebackup is for a Neon compute: pg_control's checkPoint is 0 and the segment only has page headers (the
//! compute starts at checkPointCopy.redo without reading WAL). A fullbackup is for plain PostgreSQL: its
//! segment holds a real shutdown checkpoint record at the LSN and pg_control points at it, so PostgreSQL starts
//! as after a clean shutdown. The unlogged relations' main forks are their init forks in both (their data is
//! not in WAL; PostgreSQL's own base backups leave it out as well).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use flate2::write::GzEncoder;
use std::io::Write;
use tokio::io::AsyncWrite;
use tracing::info;

use super::pq::{self, PqError, be};
use super::{lsn_text, sqlstate};
use crate::pg::Lsn;
use crate::pg::constants::*;
use crate::pg::control::{shutdown_control_file, standby_control_file};
use crate::pg::page::set_checksum;
use crate::pg::reader::Reader;
use crate::pg::records::CheckPoint;
use crate::pg::walgen::{compute_segment, normalize_lsn, shutdown_checkpoint_wal};
use crate::pg::{RelFileNode, lsn::wal_file_name};
use crate::repository::Key;
use crate::repository::datadir::CheckpointLocation;
use crate::repository::timeline::Timeline;
use crate::walredo::SlruKind;

/// The directories of a PostgreSQL 15 data directory, in the order they are sent.
pub const PGDATA_SUBDIRS: [&str; 22] = [
    "global",
    "pg_wal/archive_status",
    "pg_commit_ts",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
    "pg_twophase",
    "pg_multixact",
    "pg_multixact/members",
    "pg_multixact/offsets",
    "base",
    "base/1",
    "pg_replslot",
    "pg_tblspc",
    "pg_stat",
    "pg_stat_tmp",
    "pg_xact",
    "pg_logical",
    "pg_logical/snapshots",
    "pg_logical/mappings",
];

const PG_HBA: &str = "\
# pg_hba.conf of a pageserver backup: trust on the local socket and loopback.
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
host    replication     all             ::1/128                 trust
";

const POSTGRESQL_CONF: &str = "\
# Written by the pageserver's fullbackup: PostgreSQL's defaults apply; add settings below.
";

/// SQLSTATE of an LSN outside the readable range.
const INVALID_LSN: &str = "22023";

/// A parsed `basebackup` or `fullbackup` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupCommand {
    pub full: bool,
    pub tenant: String,
    pub timeline: String,
    /// None: the last record.
    pub lsn: Option<Lsn>,
    pub prev_lsn: Option<Lsn>,
    pub gzip: bool,
    pub replica: bool,
    /// fullbackup `--standby`: for a standby that replays the primary's WAL from the newest checkpoint at or
    /// before the LSN (a backup_label, pg_control in recovery, no WAL of ours).
    pub standby: bool,
}

impl BackupCommand {
    /// `basebackup <tenant> <timeline> [lsn|latest] [--gzip] [--replica]` (flags in any order, once each);
    /// `fullbackup <tenant> <timeline> [lsn [prev_lsn]] [--standby]`.
    pub fn parse(full: bool, args: &[&str]) -> Result<BackupCommand, String> {
        let name = if full { "fullbackup" } else { "basebackup" };
        let usage = if full {
            "fullbackup <tenant_id> <timeline_id> [lsn [prev_lsn]] [--standby]"
        } else {
            "basebackup <tenant_id> <timeline_id> [lsn|latest] [--gzip] [--replica]"
        };
        let [tenant, timeline, rest @ ..] = args else {
            return Err(format!("usage: {usage}"));
        };
        let lsn = |s: &str| -> Result<Lsn, String> {
            s.parse()
                .map_err(|_| format!("{name}: invalid LSN {s:?}, expected such as 0/16B3740"))
        };
        let mut cmd = BackupCommand {
            full,
            tenant: tenant.to_string(),
            timeline: timeline.to_string(),
            lsn: None,
            prev_lsn: None,
            gzip: false,
            replica: false,
            standby: false,
        };
        if full {
            let rest = match rest {
                [head @ .., "--standby"] => {
                    cmd.standby = true;
                    head
                }
                _ => rest,
            };
            match rest {
                [] => {}
                [l] => cmd.lsn = Some(lsn(l)?),
                [l, p] => {
                    cmd.lsn = Some(lsn(l)?);
                    cmd.prev_lsn = Some(lsn(p)?);
                }
                _ => return Err(format!("usage: {usage}")),
            }
            return Ok(cmd);
        }
        let mut rest = rest;
        if let [first, tail @ ..] = rest
            && !first.starts_with("--")
        {
            if *first != "latest" {
                cmd.lsn = Some(lsn(first)?);
            }
            rest = tail;
        }
        for flag in rest {
            let seen = match *flag {
                "--gzip" => std::mem::replace(&mut cmd.gzip, true),
                "--replica" => std::mem::replace(&mut cmd.replica, true),
                other => {
                    return Err(format!(
                        "{name}: unknown argument {other:?}; usage: {usage}"
                    ));
                }
            };
            if seen {
                return Err(format!("{name}: {flag} given twice"));
            }
        }
        Ok(cmd)
    }
}

#[derive(Debug, thiserror::Error)]
enum BackupError {
    #[error("{0}")]
    Read(String),
    #[error(transparent)]
    Pq(#[from] PqError),
}

/// Runs the command: an ErrorResponse for an LSN it cannot serve, else CopyOut of the tar and CommandComplete
/// (or an ErrorResponse if a read fails midway).
pub async fn send<W: AsyncWrite + Unpin>(
    cmd: &BackupCommand,
    tl: &Timeline,
    wait_lsn_timeout: std::time::Duration,
    w: &mut W,
    out: &mut BytesMut,
) -> Result<(), PqError> {
    let last = tl.last_record_lsn();
    let lsn = match cmd.lsn {
        None => last,
        Some(lsn) => {
            if let Err(e) = tl.wait_lsn(lsn, wait_lsn_timeout).await {
                be::error(out, INVALID_LSN, &e.to_string());
                return Ok(());
            }
            lsn
        }
    };
    let cutoff = tl.read_cutoff(lsn);
    if lsn < cutoff {
        be::error(
            out,
            INVALID_LSN,
            &format!("LSN {lsn} is below the GC cutoff {cutoff} of the timeline"),
        );
        return Ok(());
    }
    // The record before `lsn` is known only at the last record (or given by the client).
    let known_prev = (lsn == last).then(|| tl.prev_record_lsn()).flatten();
    if let (Some(given), Some(known)) = (cmd.prev_lsn, known_prev)
        && given != known
    {
        be::error(
            out,
            INVALID_LSN,
            &format!("prev_lsn {given} does not match the timeline's {known} at {lsn}"),
        );
        return Ok(());
    }
    let prev = cmd.prev_lsn.or(known_prev);
    info!(%lsn, prev = prev.map(lsn_text), full = cmd.full, gzip = cmd.gzip, "sending a backup");
    be::copy_out_response(out);
    pq::send(w, out).await?;
    let mut tar = TarStream::new(w, out, cmd.gzip);
    match write_backup(cmd, tl, lsn, prev, &mut tar).await {
        Ok(()) => {
            tar.finish().await?;
            be::copy_done(out);
            be::command_complete(out, "SELECT 1");
        }
        Err(BackupError::Pq(e)) => return Err(e),
        Err(BackupError::Read(msg)) => {
            // The client sees an incomplete archive (no pg_control) and this error.
            tar.flush().await?;
            be::error(
                out,
                sqlstate::INTERNAL,
                &format!("backup at {lsn} failed: {msg}"),
            );
        }
    }
    Ok(())
}

/// Tar entries (GNU headers) written through optional gzip into CopyData messages of about 256 KiB.
struct TarStream<'a, W> {
    w: &'a mut W,
    out: &'a mut BytesMut,
    gzip: Option<GzEncoder<Vec<u8>>>,
    pending: Vec<u8>,
    mtime: u64,
}

const CHUNK: usize = 256 * 1024;

impl<'a, W: AsyncWrite + Unpin> TarStream<'a, W> {
    fn new(w: &'a mut W, out: &'a mut BytesMut, gzip: bool) -> Self {
        TarStream {
            w,
            out,
            gzip: gzip.then(|| GzEncoder::new(Vec::new(), flate2::Compression::fast())),
            pending: Vec::with_capacity(CHUNK + BLCKSZ),
            mtime: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), BackupError> {
        match &mut self.gzip {
            Some(gz) => {
                gz.write_all(data)
                    .map_err(|e| BackupError::Read(format!("gzip: {e}")))?;
                self.pending.append(gz.get_mut());
            }
            None => self.pending.extend_from_slice(data),
        }
        if self.pending.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is pending as CopyData.
    async fn flush(&mut self) -> Result<(), PqError> {
        if !self.pending.is_empty() {
            be::copy_data(self.out, &self.pending);
            self.pending.clear();
        }
        pq::send(self.w, self.out).await
    }

    fn header(&self, path: &str, size: u64, dir: bool) -> Result<tar::Header, BackupError> {
        let mut h = tar::Header::new_gnu();
        h.set_path(path)
            .map_err(|e| BackupError::Read(format!("tar path {path:?}: {e}")))?;
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o600 });
        h.set_mtime(self.mtime);
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_cksum();
        Ok(h)
    }

    async fn dir(&mut self, path: &str) -> Result<(), BackupError> {
        let h = self.header(path, 0, true)?;
        self.write(h.as_bytes()).await
    }

    async fn file(&mut self, path: &str, data: &[u8]) -> Result<(), BackupError> {
        let h = self.header(path, data.len() as u64, false)?;
        self.write(h.as_bytes()).await?;
        self.write(data).await?;
        self.pad(data.len() as u64).await
    }

    async fn pad(&mut self, size: u64) -> Result<(), BackupError> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.write(&[0u8; 512][..512 - rem]).await?;
        }
        Ok(())
    }

    /// The end-of-archive blocks, the end of the gzip stream, and the last CopyData.
    async fn finish(mut self) -> Result<(), PqError> {
        let end = [0u8; 1024];
        match self.gzip.take() {
            Some(mut gz) => {
                let tail = gz
                    .write_all(&end)
                    .and_then(|_| gz.finish())
                    .map_err(PqError::Io)?;
                self.pending.extend_from_slice(&tail);
            }
            None => self.pending.extend_from_slice(&end),
        }
        self.flush().await
    }
}

fn read_err(e: impl std::fmt::Display) -> BackupError {
    BackupError::Read(e.to_string())
}

async fn write_backup<W: AsyncWrite + Unpin>(
    cmd: &BackupCommand,
    tl: &Timeline,
    lsn: Lsn,
    prev: Option<Lsn>,
    tar: &mut TarStream<'_, W>,
) -> Result<(), BackupError> {
    for dir in PGDATA_SUBDIRS {
        tar.dir(dir).await?;
        // PostgreSQL 17's initdb added the WAL summarizer's directory (initdb.c, `subdirs`).
        if dir == "pg_wal/archive_status" && tl.pg_version >= crate::pg::PgVersion::V18 {
            tar.dir("pg_wal/summaries").await?;
        }
    }
    tar.file("pg_hba.conf", PG_HBA.as_bytes()).await?;
    tar.file("pg_ident.conf", b"").await?;
    tar.file("postgresql.auto.conf", b"").await?;
    if cmd.full {
        tar.file("postgresql.conf", POSTGRESQL_CONF.as_bytes())
            .await?;
    }
    for (kind, dir) in [
        (SlruKind::Clog, "pg_xact"),
        (SlruKind::MultiXactMembers, "pg_multixact/members"),
        (SlruKind::MultiXactOffsets, "pg_multixact/offsets"),
    ] {
        for segno in tl.list_slru_segments(kind, lsn).await.map_err(read_err)? {
            let n = tl
                .slru_segment_size(kind, segno, lsn)
                .await
                .map_err(read_err)?
                .unwrap_or(0);
            let h = tar.header(
                &format!("{dir}/{segno:04X}"),
                n as u64 * BLCKSZ as u64,
                false,
            )?;
            tar.write(h.as_bytes()).await?;
            for blkno in 0..n {
                let page = tl
                    .get(Key::slru_block(kind, segno, blkno), lsn)
                    .await
                    .map_err(read_err)?;
                let mut page = page.to_vec();
                page.resize(BLCKSZ, 0);
                tar.write(&page).await?;
            }
        }
    }
    let pg_version_file = tl.pg_version.major().to_string();
    let control = tl.get(Key::control_file(), lsn).await.map_err(read_err)?;
    let checksums = crate::pg::control::parse_control_file(&control)
        .map_err(read_err)?
        .data_checksum_version
        != 0;
    for ((spc, db), has_relmap) in tl.list_dbdirs(lsn).await.map_err(read_err)? {
        let relmap = || async {
            tl.get(Key::relmap_file(spc, db), lsn)
                .await
                .map_err(read_err)
        };
        let dir = if spc == GLOBALTABLESPACE_OID {
            tar.file("PG_VERSION", pg_version_file.as_bytes()).await?;
            tar.file("global/pg_filenode.map", &relmap().await?).await?;
            "global".to_string()
        } else if spc == DEFAULTTABLESPACE_OID {
            let dir = format!("base/{db}");
            tar.dir(&dir).await?;
            if has_relmap {
                tar.file(&format!("{dir}/PG_VERSION"), pg_version_file.as_bytes())
                    .await?;
                tar.file(&format!("{dir}/pg_filenode.map"), &relmap().await?)
                    .await?;
            }
            dir
        } else {
            return Err(BackupError::Read(format!(
                "database {db} is in tablespace {spc}: only the default and global tablespaces are supported"
            )));
        };
        let what = RelFiles {
            full: cmd.full,
            checksums,
        };
        relation_files(what, tl, lsn, spc, db, &dir, tar).await?;
    }
    for xid in tl.list_twophase(lsn).await.map_err(read_err)? {
        let mut state = tl
            .get(Key::twophase_file(xid), lsn)
            .await
            .map_err(read_err)?
            .to_vec();
        let crc = crc32c::crc32c(&state);
        state.extend_from_slice(&crc.to_le_bytes());
        tar.file(&format!("pg_twophase/{:08X}", xid as u32), &state)
            .await?;
    }

    let cp_bytes = tl.get(Key::checkpoint(), lsn).await.map_err(read_err)?;
    let mut checkpoint = CheckPoint::parse(&mut Reader::new(&cp_bytes), tl.pg_version)
        .map_err(|_| read_err("malformed checkpoint value"))?;
    checkpoint.this_timeline_id = 1;
    checkpoint.prev_timeline_id = 1;
    checkpoint.time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let sysid = crate::pg::control::system_identifier(&control).map_err(read_err)?;
    let seg_size = DEFAULT_WAL_SEGMENT_SIZE;
    let signal = match prev {
        Some(p) => format!("PREV LSN: {p}"),
        None if tl.ancestor().is_some_and(|(_, at)| at == lsn) => "PREV LSN: none".to_string(),
        None => "PREV LSN: invalid".to_string(),
    };
    tar.file("neon.signal", signal.as_bytes()).await?;
    tar.file("zenith.signal", signal.as_bytes()).await?;
    let (pg_control, segments) = if cmd.standby {
        let at = tl.checkpoint_location(lsn).await.map_err(read_err)?;
        let at = at.ok_or_else(|| {
            read_err(format!(
                "no checkpoint record at or before {lsn} in the timeline: a standby has nowhere to start"
            ))
        })?;
        tar.file(
            "backup_label",
            standby_backup_label(at, seg_size, checkpoint.time).as_bytes(),
        )
        .await?;
        let pg_control = standby_control_file(&control, at.lsn, &checkpoint, checkpoint.time, lsn)
            .map_err(read_err)?;
        (pg_control, Vec::new())
    } else if cmd.full {
        let (start, cp, segments) = shutdown_checkpoint_wal(
            tl.pg_version,
            lsn,
            prev.unwrap_or(Lsn(0)),
            &checkpoint,
            sysid,
            seg_size,
        );
        let pg_control =
            shutdown_control_file(&control, start, &cp, checkpoint.time).map_err(read_err)?;
        (pg_control, segments)
    } else {
        checkpoint.redo = normalize_lsn(lsn, seg_size);
        let pg_control = shutdown_control_file(&control, Lsn(0), &checkpoint, checkpoint.time)
            .map_err(read_err)?;
        let segno = lsn.segment_number(seg_size);
        (
            pg_control,
            vec![(segno, compute_segment(tl.pg_version, lsn, sysid, seg_size))],
        )
    };
    tar.file("global/pg_control", &pg_control).await?;
    for (segno, segment) in segments {
        tar.file(
            &format!("pg_wal/{}", wal_file_name(1, segno, seg_size)),
            &segment,
        )
        .await?;
    }
    Ok(())
}

/// backup_label of a backup taken "from a standby" (PostgreSQL 15's do_pg_backup_start writes this layout and
/// read_backup_label parses it): replay starts at the checkpoint's redo, the checkpoint record is read at its
/// LSN, and the backup ends at pg_control's minRecoveryPoint.
fn standby_backup_label(at: CheckpointLocation, seg_size: u32, time: i64) -> String {
    let segno = at.redo.segment_number(seg_size);
    let start = humantime::format_rfc3339_seconds(
        UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(time).unwrap_or(0)),
    );
    format!(
        "START WAL LOCATION: {} (file {})\nCHECKPOINT LOCATION: {}\nBACKUP METHOD: streamed\n\
         BACKUP FROM: standby\nSTART TIME: {start}\nLABEL: pageserver restore --standby\n\
         START TIMELINE: 1\n",
        at.redo,
        wal_file_name(1, segno, seg_size),
        at.lsn
    )
}

/// The files of the relations of (spc, db): a fullbackup every fork (1 GiB segments), a basebackup only the
/// init forks; an unlogged relation's main fork is its init fork.
/// Blocks of a relation read at once by a backup (8 MiB).
const RANGE_READ_BLOCKS: u32 = 1024;

/// What goes into the relation files of a backup.
#[derive(Clone, Copy)]
struct RelFiles {
    /// Every fork (a fullbackup), else only the init forks.
    full: bool,
    /// Set each page's checksum (the cluster has data checksums).
    checksums: bool,
}

async fn relation_files<W: AsyncWrite + Unpin>(
    what: RelFiles,
    tl: &Timeline,
    lsn: Lsn,
    spc: u32,
    db: u32,
    dir: &str,
    tar: &mut TarStream<'_, W>,
) -> Result<(), BackupError> {
    let rels = tl.list_rels(spc, db, lsn).await.map_err(read_err)?;
    for &(rel, fork) in &rels {
        let rnode = RelFileNode { spc, db, rel };
        let unlogged_main = fork == INIT_FORKNUM && !rels.contains(&(rel, MAIN_FORKNUM));
        if !what.full && fork != INIT_FORKNUM {
            continue;
        }
        let nblocks = tl.rel_size(rnode, fork, lsn).await.map_err(read_err)?;
        let mut names = vec![fork_file_name(rel, fork)];
        if unlogged_main {
            names.push(fork_file_name(rel, MAIN_FORKNUM));
        }
        for name in names {
            let mut segno = 0u32;
            loop {
                let first = segno * RELSEG_SIZE;
                let count = nblocks.saturating_sub(first).min(RELSEG_SIZE);
                // Segment 0 always exists, the others only when they hold blocks.
                if segno > 0 && count == 0 {
                    break;
                }
                let path = if segno == 0 {
                    format!("{dir}/{name}")
                } else {
                    format!("{dir}/{name}.{segno}")
                };
                let h = tar.header(&path, count as u64 * BLCKSZ as u64, false)?;
                tar.write(h.as_bytes()).await?;
                // Read in runs of blocks (one pass over each layer per run), at most 8 MiB in memory.
                let mut blkno = first;
                while blkno < first + count {
                    let run = (first + count - blkno).min(RANGE_READ_BLOCKS);
                    let keys = Key::rel_block(rnode, fork, blkno)
                        ..Key::rel_block(rnode, fork, blkno + run);
                    let pages = tl.get_range(keys, lsn).await.map_err(read_err)?;
                    for (n, page) in pages.iter().enumerate() {
                        if page.len() != BLCKSZ {
                            return Err(read_err(format!(
                                "block {} of {path} is {} bytes",
                                blkno + n as u32,
                                page.len()
                            )));
                        }
                        if what.checksums {
                            // Pages are kept without checksums (redo does not set them); a cluster with
                            // data checksums verifies each page it reads.
                            let mut page = page.to_vec();
                            set_checksum(&mut page, blkno + n as u32);
                            tar.write(&page).await?;
                        } else {
                            tar.write(page).await?;
                        }
                    }
                    blkno += run;
                }
                if count < RELSEG_SIZE {
                    break;
                }
                segno += 1;
            }
        }
    }
    Ok(())
}

fn fork_file_name(rel: u32, fork: u8) -> String {
    match fork {
        FSM_FORKNUM => format!("{rel}_fsm"),
        VISIBILITYMAP_FORKNUM => format!("{rel}_vm"),
        INIT_FORKNUM => format!("{rel}_init"),
        _ => rel.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_like_neon() {
        let t = "0123456789abcdef0123456789abcdef";
        let ok = |full, args: &[&str]| BackupCommand::parse(full, args).unwrap();
        let c = ok(false, &[t, t]);
        assert_eq!((c.lsn, c.gzip, c.replica), (None, false, false));
        let c = ok(false, &[t, t, "0/16B3740", "--replica", "--gzip"]);
        assert_eq!(
            (c.lsn, c.gzip, c.replica),
            (Some(Lsn(0x16B_3740)), true, true)
        );
        let c = ok(false, &[t, t, "latest", "--gzip"]);
        assert_eq!((c.lsn, c.gzip), (None, true));
        let c = ok(false, &[t, t, "--gzip"]);
        assert_eq!((c.lsn, c.gzip), (None, true));
        let c = ok(true, &[t, t, "0/3000028", "0/3000000"]);
        assert_eq!(
            (c.lsn, c.prev_lsn),
            (Some(Lsn(0x300_0028)), Some(Lsn(0x300_0000)))
        );
        for (full, bad) in [
            (false, vec![t]),
            (false, vec![t, t, "--gzip", "--gzip"]),
            (false, vec![t, t, "--fast"]),
            (false, vec![t, t, "0/1", "0/2"]),
            (false, vec![t, t, "x/y"]),
            (true, vec![t, t, "--gzip"]),
            (true, vec![t, t, "0/1", "0/2", "0/3"]),
        ] {
            assert!(BackupCommand::parse(full, &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fork_file_names() {
        assert_eq!(fork_file_name(16384, 0), "16384");
        assert_eq!(fork_file_name(16384, 1), "16384_fsm");
        assert_eq!(fork_file_name(16384, 2), "16384_vm");
        assert_eq!(fork_file_name(16384, 3), "16384_init");
    }
}
