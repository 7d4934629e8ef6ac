//! What each path of a PostgreSQL 15 data directory is to the import: a pure function of the path, so the
//! directory walk and the tar reader classify alike. Paths are relative to the data directory, `/`-separated,
//! as in a `pg_basebackup -Ft` tar (`./` prefixes and trailing slashes are accepted).

use crate::pg::RelFileNode;
use crate::pg::constants::{
    DEFAULTTABLESPACE_OID, FSM_FORKNUM, GLOBALTABLESPACE_OID, INIT_FORKNUM, MAIN_FORKNUM,
    VISIBILITYMAP_FORKNUM,
};
use crate::walredo::SlruKind;

/// One entry of a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataFile {
    /// A directory to look into (`global`, `base`, `pg_xact`, ...): nothing to import by itself.
    Dir,
    /// A database directory (`base/<db>`, `global`).
    DbDir { spc: u32, db: u32 },
    /// Segment `segno` of a relation fork: `<relnode>[_fsm|_vm|_init][.segno]`.
    Rel {
        rnode: RelFileNode,
        fork: u8,
        segno: u32,
    },
    /// `pg_filenode.map` of a database (or of `global`).
    RelMap { spc: u32, db: u32 },
    /// `pg_xact/XXXX`, `pg_multixact/{offsets,members}/XXXX`.
    Slru { kind: SlruKind, segno: u32 },
    /// `pg_twophase/<xid>`.
    TwoPhase { xid: u32 },
    /// `global/pg_control`.
    Control,
    /// `backup_label`: not imported, but its start and checkpoint LSNs are returned.
    BackupLabel,
    /// `tablespace_map`: fine when empty; a tablespace otherwise.
    TablespaceMap,
    /// Anything under `pg_tblspc/`: a custom tablespace, not supported yet.
    Tablespace,
    /// Skipped on purpose; the reason says why.
    Skip(&'static str),
    /// Not known here: skipped, logged at debug.
    Unknown,
}

/// A path that cannot be what its place in the data directory says it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

/// Top-level directories whose contents are not imported, and why. The pageserver rebuilds or does not need
/// them: WAL comes from the WAL source, statistics and notifications are transient, pg_subtrans and
/// pg_serial are rebuilt at startup, replication slots and logical decoding state are not kept yet (they are
/// aux files in Neon), commit timestamps are not kept.
const SKIPPED_DIRS: &[(&str, &str)] = &[
    ("pg_wal", "WAL comes from the WAL source"),
    ("pg_stat", "statistics are not kept"),
    ("pg_stat_tmp", "statistics are not kept"),
    ("pg_replslot", "replication slots are not kept yet"),
    ("pg_logical", "logical decoding state is not kept yet"),
    ("pg_notify", "notifications do not survive a restart"),
    ("pg_serial", "rebuilt at startup"),
    (
        "pg_snapshots",
        "exported snapshots do not survive a restart",
    ),
    ("pg_subtrans", "rebuilt at startup"),
    (
        "pg_dynshmem",
        "dynamic shared memory does not survive a restart",
    ),
    ("pg_commit_ts", "commit timestamps are not kept"),
];

/// Splits `path` into its components, refusing absolute paths, `..`, and empty or `.` components in the
/// middle.
pub fn components(path: &str) -> Result<Vec<&str>, NameError> {
    let trimmed = path.trim_start_matches("./").trim_end_matches('/');
    if path.starts_with('/') {
        return Err(NameError("an absolute path".into()));
    }
    if trimmed.is_empty() || trimmed == "." {
        return Ok(vec![]);
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(NameError("an empty, `.` or `..` path component".into()));
    }
    Ok(parts)
}

/// What `path` is; `is_dir` tells a directory entry from a file.
pub fn classify(path: &str, is_dir: bool) -> Result<DataFile, NameError> {
    let c = components(path)?;
    let Some(&top) = c.first() else {
        return Ok(DataFile::Dir);
    };
    if let Some((_, why)) = SKIPPED_DIRS.iter().find(|(d, _)| *d == top) {
        return Ok(DataFile::Skip(why));
    }
    match top {
        "pg_tblspc" if c.len() == 1 => dir_only(is_dir, DataFile::Dir),
        "pg_tblspc" => Ok(DataFile::Tablespace),
        "global" => global(&c[1..], is_dir),
        "base" => base(&c[1..], is_dir),
        "pg_xact" => slru(&c[1..], is_dir, SlruKind::Clog),
        "pg_multixact" => match c.get(1) {
            None => dir_only(is_dir, DataFile::Dir),
            Some(&"offsets") => slru(&c[2..], is_dir, SlruKind::MultiXactOffsets),
            Some(&"members") => slru(&c[2..], is_dir, SlruKind::MultiXactMembers),
            Some(_) => Ok(DataFile::Unknown),
        },
        "pg_twophase" => twophase(&c[1..], is_dir),
        _ if c.len() > 1 => Ok(DataFile::Unknown),
        "PG_VERSION" => Ok(DataFile::Skip("the version is the timeline's")),
        "backup_label" => Ok(DataFile::BackupLabel),
        "tablespace_map" => Ok(DataFile::TablespaceMap),
        name if name.starts_with("postmaster.") => Ok(DataFile::Skip("state of a running server")),
        name if name.ends_with(".conf") => Ok(DataFile::Skip(
            "configuration belongs to the compute, not to the data",
        )),
        _ => Ok(DataFile::Unknown),
    }
}

fn dir_only(is_dir: bool, what: DataFile) -> Result<DataFile, NameError> {
    if is_dir {
        Ok(what)
    } else {
        Err(NameError("a file where a directory belongs".into()))
    }
}

fn file_only(is_dir: bool, what: DataFile) -> Result<DataFile, NameError> {
    if is_dir {
        Err(NameError("a directory where a file belongs".into()))
    } else {
        Ok(what)
    }
}

/// `global/...`: the shared catalogs (spcnode 1664, dbnode 0).
fn global(rest: &[&str], is_dir: bool) -> Result<DataFile, NameError> {
    let db = DataFile::DbDir {
        spc: GLOBALTABLESPACE_OID,
        db: 0,
    };
    match rest {
        [] => dir_only(is_dir, db),
        [name] => db_file(GLOBALTABLESPACE_OID, 0, name, is_dir),
        _ => Err(NameError("a subdirectory of global/".into())),
    }
}

/// `base/<db>/...`: databases of the default tablespace (spcnode 1663).
fn base(rest: &[&str], is_dir: bool) -> Result<DataFile, NameError> {
    let Some(&dbname) = rest.first() else {
        return dir_only(is_dir, DataFile::Dir);
    };
    if dbname == "pgsql_tmp" {
        return Ok(DataFile::Skip("temporary files"));
    }
    let db = match parse_oid(dbname) {
        Some(db) => db,
        None if looks_numeric(dbname) => {
            return Err(NameError(format!("{dbname:?} is not a database OID")));
        }
        None => return Ok(DataFile::Unknown),
    };
    match &rest[1..] {
        [] => dir_only(
            is_dir,
            DataFile::DbDir {
                spc: DEFAULTTABLESPACE_OID,
                db,
            },
        ),
        [name] => db_file(DEFAULTTABLESPACE_OID, db, name, is_dir),
        _ => Err(NameError("a subdirectory of a database directory".into())),
    }
}

/// A file in a database directory.
fn db_file(spc: u32, db: u32, name: &str, is_dir: bool) -> Result<DataFile, NameError> {
    let what = match name {
        "pg_filenode.map" => DataFile::RelMap { spc, db },
        "pg_control" if spc == GLOBALTABLESPACE_OID => DataFile::Control,
        "PG_VERSION" => DataFile::Skip("the version is the timeline's"),
        "pg_internal.init" => DataFile::Skip("relation cache init file, rebuilt at startup"),
        _ if is_temp_relation(name) => DataFile::Skip("temporary relations are not WAL-logged"),
        _ => match parse_rel_file_name(name) {
            Some((rel, fork, segno)) => DataFile::Rel {
                rnode: RelFileNode { spc, db, rel },
                fork,
                segno,
            },
            None if looks_numeric(name) => {
                return Err(NameError(format!(
                    "{name:?} is not a relation file name (<relfilenode>[_fsm|_vm|_init][.segno])"
                )));
            }
            None => DataFile::Unknown,
        },
    };
    file_only(is_dir, what)
}

/// An SLRU segment: 4 to 6 uppercase hex digits, as PostgreSQL's SlruScanDirectory accepts.
fn slru(rest: &[&str], is_dir: bool, kind: SlruKind) -> Result<DataFile, NameError> {
    match rest {
        [] => dir_only(is_dir, DataFile::Dir),
        [name] => {
            let segno = parse_upper_hex(name, 4..=6).ok_or_else(|| {
                NameError(format!(
                    "{name:?} is not an SLRU segment name (4 to 6 uppercase hex digits)"
                ))
            })?;
            file_only(is_dir, DataFile::Slru { kind, segno })
        }
        _ => Err(NameError("a subdirectory of an SLRU directory".into())),
    }
}

/// A two-phase state file: the xid as 8 uppercase hex digits (PostgreSQL 15).
fn twophase(rest: &[&str], is_dir: bool) -> Result<DataFile, NameError> {
    match rest {
        [] => dir_only(is_dir, DataFile::Dir),
        [name] => {
            let xid = parse_upper_hex(name, 8..=8).ok_or_else(|| {
                NameError(format!(
                    "{name:?} is not a two-phase state file name (8 uppercase hex digits)"
                ))
            })?;
            file_only(is_dir, DataFile::TwoPhase { xid })
        }
        _ => Err(NameError("a subdirectory of pg_twophase/".into())),
    }
}

/// `<relnode>[_fsm|_vm|_init][.segno]`, with numbers as PostgreSQL prints them (no sign, no leading zero;
/// segment 0 has no suffix).
pub fn parse_rel_file_name(name: &str) -> Option<(u32, u8, u32)> {
    let (base, segno) = match name.split_once('.') {
        Some((base, seg)) => (base, parse_oid(seg)?),
        None => (name, 0),
    };
    let (rel, fork) = match base.split_once('_') {
        Some((rel, "fsm")) => (rel, FSM_FORKNUM),
        Some((rel, "vm")) => (rel, VISIBILITYMAP_FORKNUM),
        Some((rel, "init")) => (rel, INIT_FORKNUM),
        Some(_) => return None,
        None => (base, MAIN_FORKNUM),
    };
    Some((parse_oid(rel)?, fork, segno))
}

/// `t<backend>_<relnode>...`: a temporary relation's file.
fn is_temp_relation(name: &str) -> bool {
    name.strip_prefix('t')
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(backend, rel)| {
            parse_oid(backend).is_some() && parse_rel_file_name(rel).is_some()
        })
}

/// A non-zero u32 in canonical decimal.
fn parse_oid(s: &str) -> Option<u32> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn looks_numeric(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

fn parse_upper_hex(s: &str, len: std::ops::RangeInclusive<usize>) -> Option<u32> {
    if !len.contains(&s.len()) || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(spc: u32, db: u32, rel: u32, fork: u8, segno: u32) -> DataFile {
        DataFile::Rel {
            rnode: RelFileNode { spc, db, rel },
            fork,
            segno,
        }
    }

    #[test]
    fn relation_files() {
        assert_eq!(
            classify("base/5/16384", false),
            Ok(rel(1663, 5, 16384, 0, 0))
        );
        assert_eq!(
            classify("./base/5/16384_fsm", false),
            Ok(rel(1663, 5, 16384, 1, 0))
        );
        assert_eq!(
            classify("base/5/16384_vm.3", false),
            Ok(rel(1663, 5, 16384, 2, 3))
        );
        assert_eq!(
            classify("base/5/16384_init", false),
            Ok(rel(1663, 5, 16384, 3, 0))
        );
        assert_eq!(classify("global/1262", false), Ok(rel(1664, 0, 1262, 0, 0)));
        for bad in [
            "base/5/16384_xyz",
            "base/5/16384.0",
            "base/5/016384",
            "base/5/16384.",
            "base/5/99999999999",
            "base/5/1_fsm_vm",
            "base/05/1",
            "base/5/16384/x",
        ] {
            assert!(classify(bad, false).is_err(), "{bad} should be refused");
        }
        assert!(classify("base/5/16384", true).is_err(), "a directory");
    }

    #[test]
    fn special_files_and_directories() {
        assert_eq!(
            classify("base/5/", true),
            Ok(DataFile::DbDir { spc: 1663, db: 5 })
        );
        assert_eq!(
            classify("global", true),
            Ok(DataFile::DbDir { spc: 1664, db: 0 })
        );
        assert_eq!(
            classify("global/pg_filenode.map", false),
            Ok(DataFile::RelMap { spc: 1664, db: 0 })
        );
        assert_eq!(
            classify("base/1/pg_filenode.map", false),
            Ok(DataFile::RelMap { spc: 1663, db: 1 })
        );
        assert_eq!(classify("global/pg_control", false), Ok(DataFile::Control));
        assert!(matches!(
            classify("base/1/pg_control", false),
            Ok(DataFile::Unknown)
        ));
        assert_eq!(
            classify("pg_xact/0000", false),
            Ok(DataFile::Slru {
                kind: SlruKind::Clog,
                segno: 0
            })
        );
        assert_eq!(
            classify("pg_multixact/members/1A2B3", false),
            Ok(DataFile::Slru {
                kind: SlruKind::MultiXactMembers,
                segno: 0x1A2B3
            })
        );
        assert!(classify("pg_xact/000", false).is_err());
        assert!(classify("pg_xact/abcd", false).is_err());
        assert_eq!(
            classify("pg_twophase/000002DF", false),
            Ok(DataFile::TwoPhase { xid: 735 })
        );
        assert!(classify("pg_twophase/2DF", false).is_err());
        assert_eq!(classify("pg_tblspc/16400", false), Ok(DataFile::Tablespace));
        assert_eq!(classify("pg_tblspc", true), Ok(DataFile::Dir));
        assert_eq!(classify("backup_label", false), Ok(DataFile::BackupLabel));
        assert_eq!(
            classify("tablespace_map", false),
            Ok(DataFile::TablespaceMap)
        );
        for skipped in [
            "pg_wal/000000010000000000000001",
            "PG_VERSION",
            "base/5/PG_VERSION",
            "postmaster.pid",
            "postgresql.auto.conf",
            "global/pg_internal.init",
            "base/5/t3_16384",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "pg_stat/pgstat.stat",
            "pg_logical/replorigin_checkpoint",
            "pg_commit_ts/0000",
        ] {
            assert!(
                matches!(classify(skipped, false), Ok(DataFile::Skip(_))),
                "{skipped} should be skipped"
            );
        }
        for unknown in ["neon.signal", "log/postgresql.log", "base/5/foo"] {
            assert_eq!(classify(unknown, false), Ok(DataFile::Unknown), "{unknown}");
        }
        for bad in ["/etc/passwd", "base/../etc", "base//5"] {
            assert!(classify(bad, false).is_err(), "{bad}");
        }
    }
}
