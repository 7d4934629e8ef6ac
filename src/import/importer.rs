//! The state of one import: entries come in one at a time (from a directory walk or a tar stream), their
//! blocks go to the sink at once, and only the small directory state (databases, relation forks and their
//! segment sizes, SLRU segments, two-phase xids) is kept until [`Importer::finish`] writes the directories and
//! sizes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::datadir::{ImportError, ImportStats};
use super::names::{DataFile, classify, components};
use crate::pg::constants::{BLCKSZ, FORK_NAMES, GLOBALTABLESPACE_OID, RELSEG_SIZE};
use crate::pg::control::{
    ControlFile, ControlFileError, PG_CONTROL_FILE_SIZE, parse_backup_label, parse_control_file,
};
use crate::pg::{PgVersion, RelFileNode};
use crate::repository::Key;
use crate::repository::datadir::{
    DbDirectory, RelDirectory, encode_db_dir, encode_nblocks, encode_rel_dir, encode_u32_set,
    encode_u64_set,
};
use crate::walingest::slru::SLRU_PAGES_PER_SEGMENT;
use crate::walredo::SlruKind;

/// Two-phase state files are palloc'ed whole by PostgreSQL (MaxAllocSize).
const MAX_TWOPHASE_FILE: u64 = 0x3FFF_FFFF;
const MAX_BACKUP_LABEL: u64 = 64 * 1024;

pub(super) struct Importer<F> {
    sink: F,
    /// Paths seen, so that an archive naming a file twice is refused rather than half-merged.
    seen: HashSet<String>,
    dbs: DbDirectory,
    rels: BTreeMap<(u32, u32), RelDirectory>,
    /// Blocks of each segment of each relation fork.
    segments: BTreeMap<(RelFileNode, u8), BTreeMap<u32, u32>>,
    slru: BTreeMap<SlruKind, BTreeSet<u32>>,
    twophase: BTreeSet<u64>,
    control: Option<ControlFile>,
    stats: ImportStats,
    /// The version the data directory must be of.
    version: PgVersion,
}

impl<F: FnMut(Key, Bytes) -> Result<(), ImportError>> Importer<F> {
    pub(super) fn new(sink: F, version: PgVersion) -> Self {
        Importer {
            sink,
            seen: HashSet::new(),
            dbs: DbDirectory::new(),
            rels: BTreeMap::new(),
            segments: BTreeMap::new(),
            slru: BTreeMap::new(),
            twophase: BTreeSet::new(),
            control: None,
            stats: ImportStats::default(),
            version,
        }
    }

    /// A directory entry; returns whether a walk should look into it.
    pub(super) fn dir(&mut self, path: &str) -> Result<bool, ImportError> {
        match classify(path, true).map_err(|e| bad_name(path, e.0))? {
            DataFile::Dir => Ok(true),
            DataFile::DbDir { spc, db } => {
                self.dbs.entry((spc, db)).or_insert(false);
                Ok(true)
            }
            DataFile::Tablespace => Err(ImportError::Tablespace {
                entry: path.to_string(),
            }),
            DataFile::Skip(reason) => {
                debug!(entry = path, reason, "skipping directory");
                Ok(false)
            }
            DataFile::Unknown => {
                debug!(entry = path, "skipping unknown directory");
                Ok(false)
            }
            _ => Err(bad_name(path, "a directory where a file belongs".into())),
        }
    }

    /// A symbolic link, hard link or special file: fine where nothing is imported.
    pub(super) fn other(&mut self, path: &str, kind: &str) -> Result<(), ImportError> {
        match classify(path, false) {
            Ok(DataFile::Tablespace) => Err(ImportError::Tablespace {
                entry: path.to_string(),
            }),
            Ok(DataFile::Skip(_) | DataFile::Unknown) => {
                debug!(entry = path, kind, "skipping");
                Ok(())
            }
            _ => Err(ImportError::UnsupportedEntry {
                entry: path.to_string(),
                kind: kind.to_string(),
            }),
        }
    }

    /// A regular file of `size` bytes, read from `data`.
    pub(super) fn file(
        &mut self,
        path: &str,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), ImportError> {
        let what = classify(path, false).map_err(|e| bad_name(path, e.0))?;
        let normalized = components(path).map_err(|e| bad_name(path, e.0))?.join("/");
        if !matches!(what, DataFile::Skip(_) | DataFile::Unknown) && !self.seen.insert(normalized) {
            return Err(ImportError::Duplicate {
                entry: path.to_string(),
            });
        }
        match what {
            DataFile::Rel { rnode, fork, segno } => {
                self.rel_segment(path, rnode, fork, segno, size, data)?
            }
            DataFile::RelMap { spc, db } => {
                let relmap_size = self.version.relmap_file_size() as u64;
                if size != relmap_size {
                    // The size tells which version's file it is, when it is another supported one's.
                    let of = PgVersion::ALL
                        .into_iter()
                        .find(|v| v.relmap_file_size() as u64 == size)
                        .map_or(String::new(), |v| format!(", the size of PostgreSQL {v}'s"));
                    return Err(invalid(
                        path,
                        format!(
                            "{size} bytes{of}; a PostgreSQL {} relation mapper file has {relmap_size}",
                            self.version
                        ),
                    ));
                }
                let map = read_whole(path, size, relmap_size, data)?;
                (self.sink)(Key::relmap_file(spc, db), map.into())?;
                self.dbs.insert((spc, db), true);
                self.stats.relmap_files += 1;
            }
            DataFile::Slru { kind, segno } => self.slru_segment(path, kind, segno, size, data)?,
            DataFile::TwoPhase { xid } => self.twophase_file(path, xid, size, data)?,
            DataFile::Control => self.control_file(path, size, data)?,
            DataFile::BackupLabel => {
                let text = read_whole(path, size, MAX_BACKUP_LABEL, data)?;
                let label = parse_backup_label(&String::from_utf8_lossy(&text))
                    .map_err(|msg| invalid(path, msg))?;
                self.stats.backup_label_start_lsn = Some(label.start_lsn);
                self.stats.backup_label_checkpoint_lsn = Some(label.checkpoint_lsn);
                return Ok(());
            }
            DataFile::TablespaceMap if size == 0 => return Ok(()),
            DataFile::TablespaceMap | DataFile::Tablespace => {
                return Err(ImportError::Tablespace {
                    entry: path.to_string(),
                });
            }
            DataFile::Skip(reason) => {
                debug!(entry = path, reason, "skipping");
                self.stats.skipped += 1;
                return Ok(());
            }
            DataFile::Unknown => {
                debug!(entry = path, "skipping unknown file");
                self.stats.skipped += 1;
                return Ok(());
            }
            DataFile::Dir | DataFile::DbDir { .. } => {
                return Err(bad_name(path, "a file where a directory belongs".into()));
            }
        }
        self.stats.bytes += size;
        Ok(())
    }

    fn rel_segment(
        &mut self,
        path: &str,
        rnode: RelFileNode,
        fork: u8,
        segno: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), ImportError> {
        let nblocks = block_count(path, size, RELSEG_SIZE)?;
        let first = segno
            .checked_mul(RELSEG_SIZE)
            .filter(|f| f.checked_add(nblocks).is_some_and(|end| end < u32::MAX))
            .ok_or_else(|| {
                bad_name(
                    path,
                    format!("segment {segno} is beyond the largest relation"),
                )
            })?;
        let sink = &mut self.sink;
        for_each_block(path, nblocks, data, |i, page| {
            sink(Key::rel_block(rnode, fork, first + i), page)
        })?;
        self.segments
            .entry((rnode, fork))
            .or_default()
            .insert(segno, nblocks);
        self.dbs.entry((rnode.spc, rnode.db)).or_insert(false);
        self.rels
            .entry((rnode.spc, rnode.db))
            .or_default()
            .insert((rnode.rel, fork));
        self.stats.blocks += nblocks as u64;
        Ok(())
    }

    fn slru_segment(
        &mut self,
        path: &str,
        kind: SlruKind,
        segno: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), ImportError> {
        let nblocks = block_count(path, size, SLRU_PAGES_PER_SEGMENT)?;
        let sink = &mut self.sink;
        for_each_block(path, nblocks, data, |i, page| {
            sink(Key::slru_block(kind, segno, i), page)
        })?;
        (self.sink)(Key::slru_segment_size(kind, segno), encode_nblocks(nblocks))?;
        self.slru.entry(kind).or_default().insert(segno);
        self.stats.slru_segments += 1;
        self.stats.slru_blocks += nblocks as u64;
        Ok(())
    }

    /// The state without its trailing CRC-32C (little-endian, over the rest), which is checked.
    fn twophase_file(
        &mut self,
        path: &str,
        xid: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), ImportError> {
        let mut state = read_whole(path, size, MAX_TWOPHASE_FILE, data)?;
        if state.len() < 4 {
            return Err(invalid(path, format!("{size} bytes, shorter than its CRC")));
        }
        let crc = state.split_off(state.len() - 4);
        let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let got = crc32c::crc32c(&state);
        if expected != got {
            return Err(ImportError::Checksum {
                entry: path.to_string(),
                expected,
                got,
            });
        }
        (self.sink)(Key::twophase_file(xid as u64), state.into())?;
        self.twophase.insert(xid as u64);
        self.stats.twophase_files += 1;
        Ok(())
    }

    /// pg_control as read, and its checkpoint (`checkPointCopy`) as the 88-byte `CheckPoint`, padding zeroed.
    fn control_file(
        &mut self,
        path: &str,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), ImportError> {
        let bytes = read_whole(path, size, PG_CONTROL_FILE_SIZE as u64, data)?;
        let control = parse_control_file(&bytes).map_err(|e| match e {
            ControlFileError::Checksum { expected, got } => ImportError::Checksum {
                entry: path.to_string(),
                expected,
                got,
            },
            other => invalid(path, other.to_string()),
        })?;
        if control.version != self.version {
            return Err(ImportError::WrongVersion {
                expected: self.version,
                got: control.version,
            });
        }
        (self.sink)(Key::control_file(), bytes.into())?;
        (self.sink)(
            Key::checkpoint(),
            Bytes::copy_from_slice(&control.checkpoint.encode()),
        )?;
        self.control = Some(control);
        Ok(())
    }

    /// Writes the sizes and directories; a data directory without pg_control is incomplete.
    pub(super) fn finish(mut self) -> Result<ImportStats, ImportError> {
        let control = self.control.take().ok_or(ImportError::MissingControlFile)?;
        for ((rnode, fork), segments) in &self.segments {
            let nblocks =
                fork_size(segments).map_err(|msg| invalid(&fork_path(*rnode, *fork), msg))?;
            (self.sink)(Key::rel_size(*rnode, *fork), encode_nblocks(nblocks))?;
        }
        for (spc, db) in self.dbs.keys() {
            let rels = self.rels.get(&(*spc, *db)).cloned().unwrap_or_default();
            (self.sink)(Key::reldir(*spc, *db), encode_rel_dir(&rels))?;
        }
        (self.sink)(Key::dbdir(), encode_db_dir(&self.dbs))?;
        for kind in [
            SlruKind::Clog,
            SlruKind::MultiXactMembers,
            SlruKind::MultiXactOffsets,
        ] {
            let segments = self.slru.get(&kind).cloned().unwrap_or_default();
            (self.sink)(Key::slru_dir(kind), encode_u32_set(&segments))?;
        }
        (self.sink)(Key::twophase_dir(), encode_u64_set(&self.twophase))?;
        let mut stats = self.stats;
        stats.databases = self.dbs.len();
        stats.relations = self
            .segments
            .keys()
            .map(|(rnode, _)| *rnode)
            .collect::<BTreeSet<_>>()
            .len();
        stats.rel_forks = self.segments.len();
        stats.control_checkpoint_lsn = control.checkpoint_lsn;
        stats.control_redo_lsn = control.checkpoint.redo;
        stats.system_identifier = control.system_identifier;
        Ok(stats)
    }
}

/// The size of a fork from the blocks of its segment files, as PostgreSQL's mdnblocks counts: segments up to
/// the first that is not full. Later segments must be empty (mdtruncate leaves them so until a checkpoint).
pub(super) fn fork_size(segments: &BTreeMap<u32, u32>) -> Result<u32, String> {
    let mut segno = 0u32;
    let size = loop {
        match segments.get(&segno) {
            Some(&n) if n == RELSEG_SIZE => segno += 1,
            // Cannot overflow: a segment is accepted only if its blocks end below u32::MAX.
            Some(&n) => break segno.saturating_mul(RELSEG_SIZE).saturating_add(n),
            None => break segno.saturating_mul(RELSEG_SIZE),
        }
    };
    match segments
        .iter()
        .find(|(s, n)| **s > size / RELSEG_SIZE && **n > 0)
    {
        Some((s, n)) => Err(format!(
            "segment {s} holds {n} blocks beyond the end of the relation at block {size} \
             (a segment before it is missing or not full)"
        )),
        None => Ok(size),
    }
}

/// The path of a fork's first segment, to name it in errors.
fn fork_path(rnode: RelFileNode, fork: u8) -> String {
    let suffix = match fork {
        0 => String::new(),
        f => format!("_{}", FORK_NAMES.get(f as usize).copied().unwrap_or("?")),
    };
    if rnode.spc == GLOBALTABLESPACE_OID {
        format!("global/{}{suffix}", rnode.rel)
    } else {
        format!("base/{}/{}{suffix}", rnode.db, rnode.rel)
    }
}

fn bad_name(path: &str, reason: String) -> ImportError {
    ImportError::BadName {
        entry: path.to_string(),
        reason,
    }
}

fn invalid(path: &str, msg: String) -> ImportError {
    ImportError::Invalid {
        entry: path.to_string(),
        msg,
    }
}

/// Blocks of a file of `size` bytes, at most `max`.
fn block_count(path: &str, size: u64, max: u32) -> Result<u32, ImportError> {
    if !size.is_multiple_of(BLCKSZ as u64) {
        return Err(ImportError::NotBlockAligned {
            entry: path.to_string(),
            size,
        });
    }
    let n = size / BLCKSZ as u64;
    if n > max as u64 {
        return Err(invalid(
            path,
            format!("{n} blocks, more than the {max} a segment holds"),
        ));
    }
    Ok(n as u32)
}

/// Reads `nblocks` pages from `data`, handing each to `f` with its number in the file.
fn for_each_block(
    path: &str,
    nblocks: u32,
    data: &mut dyn Read,
    mut f: impl FnMut(u32, Bytes) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    for i in 0..nblocks {
        let mut page = BytesMut::zeroed(BLCKSZ);
        let got = read_full(path, data, &mut page)?;
        if got < BLCKSZ {
            return Err(ImportError::Truncated {
                entry: path.to_string(),
                expected: nblocks as u64 * BLCKSZ as u64,
                got: i as u64 * BLCKSZ as u64 + got as u64,
            });
        }
        f(i, page.freeze())?;
    }
    Ok(())
}

/// A small file, whole; `size` over `max` is refused before anything is allocated.
fn read_whole(
    path: &str,
    size: u64,
    max: u64,
    data: &mut dyn Read,
) -> Result<Vec<u8>, ImportError> {
    if size > max {
        return Err(invalid(
            path,
            format!("{size} bytes, more than the {max} expected"),
        ));
    }
    let mut buf = vec![0u8; size as usize];
    let got = read_full(path, data, &mut buf)?;
    if got < buf.len() {
        return Err(ImportError::Truncated {
            entry: path.to_string(),
            expected: size,
            got: got as u64,
        });
    }
    Ok(buf)
}

/// Fills `buf` unless the data ends first; returns how much was read.
fn read_full(path: &str, data: &mut dyn Read, buf: &mut [u8]) -> Result<usize, ImportError> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(source) => {
                return Err(ImportError::Io {
                    entry: path.to_string(),
                    source,
                });
            }
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_sizes_follow_mdnblocks() {
        let segs = |s: &[(u32, u32)]| s.iter().copied().collect::<BTreeMap<u32, u32>>();
        assert_eq!(fork_size(&segs(&[])), Ok(0));
        assert_eq!(fork_size(&segs(&[(0, 0)])), Ok(0));
        assert_eq!(fork_size(&segs(&[(0, 7)])), Ok(7));
        assert_eq!(fork_size(&segs(&[(0, RELSEG_SIZE)])), Ok(RELSEG_SIZE));
        assert_eq!(
            fork_size(&segs(&[(0, RELSEG_SIZE), (1, RELSEG_SIZE), (2, 3)])),
            Ok(2 * RELSEG_SIZE + 3)
        );
        // Truncated: the later segment is empty, as mdtruncate leaves it.
        assert_eq!(fork_size(&segs(&[(0, 5), (1, 0)])), Ok(5));
        assert!(
            fork_size(&segs(&[(0, 5), (1, 2)])).is_err(),
            "a short segment before another"
        );
        assert!(fork_size(&segs(&[(1, 2)])).is_err(), "segment 0 missing");
        assert!(
            fork_size(&segs(&[(0, RELSEG_SIZE), (2, 1)])).is_err(),
            "segment 1 missing"
        );
        assert_eq!(
            fork_path(
                RelFileNode {
                    spc: 1663,
                    db: 5,
                    rel: 7
                },
                2
            ),
            "base/5/7_vm"
        );
        assert_eq!(
            fork_path(
                RelFileNode {
                    spc: 1664,
                    db: 0,
                    rel: 7
                },
                0
            ),
            "global/7"
        );
    }
}
