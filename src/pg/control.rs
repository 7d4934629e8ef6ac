//! The two small files of a data directory that the import reads and the backups write: `global/pg_control`
//! (`ControlFileData`, catalog/pg_control.h) and `backup_label`.
//!
//! `ControlFileData` of PostgreSQL 15 on the 64-bit little-endian platforms it runs on here, offsets in bytes:
//!
//! | offset | field | | offset | field |
//! |---|---|---|---|---|
//! | 0 | `uint64 system_identifier` | | 176 | `bool wal_log_hints` |
//! | 8 | `uint32 pg_control_version` (1300) | | 180..200 | 5 × `int` (MaxConnections, ...) |
//! | 12 | `uint32 catalog_version_no` (202209061) | | 200 | `bool track_commit_timestamp` |
//! | 16 | `DBState state` | | 204 | `uint32 maxAlign` |
//! | 24 | `pg_time_t time` | | 208 | `double floatFormat` |
//! | 32 | `XLogRecPtr checkPoint` | | 216..248 | 8 × `uint32` (blcksz, ...) |
//! | 40 | `CheckPoint checkPointCopy` (88 bytes) | | 248 | `bool float8ByVal` |
//! | 128 | `XLogRecPtr unloggedLSN` | | 252 | `uint32 data_checksum_version` |
//! | 136 | `XLogRecPtr minRecoveryPoint` | | 256 | `char mock_authentication_nonce[32]` |
//! | 144 | `TimeLineID minRecoveryPointTLI` | | 288 | `pg_crc32c crc` |
//! | 152, 160 | `backupStartPoint`, `backupEndPoint` | | 296 | sizeof |
//! | 168, 172 | `bool backupEndRequired`, `int wal_level` | | | |
//!
//! The crc is CRC-32C over bytes 0..288, stored little-endian at 288. The file on disk is 8192 bytes
//! (PG_CONTROL_FILE_SIZE), zero after the struct.
//!
//! PostgreSQL 18 (pg_control_version 1800) differs in two places only: `CheckPoint` holds `int wal_level` at
//! its bytes 20..24 (padding in 15), and `bool default_char_signedness` at 256 moves the nonce to 257 and the
//! crc to 292 (sizeof stays 296). The version is told by `pg_control_version`, then its catalog version is
//! checked ([`PgVersion`]).

use crate::pg::Lsn;
use crate::pg::reader::Reader;
use crate::pg::records::CheckPoint;
use crate::pg::version::PgVersion;

pub const OFFSET_CHECKPOINT_LSN: usize = 32;
pub const OFFSET_CHECKPOINT_COPY: usize = 40;
pub const SIZEOF_CONTROL_FILE_DATA: usize = 296;
/// The control file is written as this many bytes (PG_CONTROL_FILE_SIZE).
pub const PG_CONTROL_FILE_SIZE: usize = 8192;

/// What the import needs of pg_control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFile {
    pub system_identifier: u64,
    /// Where the last checkpoint record starts (`checkPoint`).
    pub checkpoint_lsn: Lsn,
    /// `checkPointCopy`: the last checkpoint record's body.
    pub checkpoint: CheckPoint,
    /// The version that wrote it.
    pub version: PgVersion,
    /// `data_checksum_version`: nonzero when data pages carry checksums (at 252 in 15 and 18).
    pub data_checksum_version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlFileError {
    #[error("{len} bytes, expected at least {SIZEOF_CONTROL_FILE_DATA}")]
    TooShort { len: usize },
    #[error("pg_control_version {got} is not one of PostgreSQL {supported}", supported = PgVersion::supported_list())]
    Version { got: u32 },
    #[error("catalog version {got}, expected {expected} (PostgreSQL {version})")]
    CatalogVersion {
        version: PgVersion,
        expected: u32,
        got: u32,
    },
    #[error("pg_control of PostgreSQL {got}, the timeline's is {expected}")]
    WrongVersion { expected: PgVersion, got: PgVersion },
    #[error("checksum mismatch: expected {expected:08x}, got {got:08x}")]
    Checksum { expected: u32, got: u32 },
}

/// Reads pg_control: its version first (the layout depends on it), then its CRC, then the fields.
pub fn parse_control_file(bytes: &[u8]) -> Result<ControlFile, ControlFileError> {
    if bytes.len() < SIZEOF_CONTROL_FILE_DATA {
        return Err(ControlFileError::TooShort { len: bytes.len() });
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let control_version = u32_at(8);
    let version = PgVersion::ALL
        .into_iter()
        .find(|v| v.control_version() == control_version)
        .ok_or(ControlFileError::Version {
            got: control_version,
        })?;
    let catalog = u32_at(12);
    if catalog != version.catalog_version() {
        return Err(ControlFileError::CatalogVersion {
            version,
            expected: version.catalog_version(),
            got: catalog,
        });
    }
    let crc_at = version.control_crc_offset();
    let expected = u32_at(crc_at);
    let got = crc32c::crc32c(&bytes[..crc_at]);
    if expected != got {
        return Err(ControlFileError::Checksum { expected, got });
    }
    let mut r = Reader::new(&bytes[..OFFSET_CHECKPOINT_COPY + CheckPoint::SIZE]);
    // The length was checked above, so these reads cannot run short.
    let short = |_| ControlFileError::TooShort { len: bytes.len() };
    let system_identifier = r.u64().map_err(short)?;
    r.skip(OFFSET_CHECKPOINT_LSN - 8).map_err(short)?;
    let checkpoint_lsn = Lsn(r.u64().map_err(short)?);
    let checkpoint = CheckPoint::parse(&mut r, version).map_err(short)?;
    Ok(ControlFile {
        system_identifier,
        checkpoint_lsn,
        checkpoint,
        version,
        data_checksum_version: u32_at(252),
    })
}

/// Writes the CRC of `version`'s layout over the bytes before it.
fn set_crc(b: &mut [u8], version: PgVersion) {
    let at = version.control_crc_offset();
    let crc = crc32c::crc32c(&b[..at]);
    b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// `DBState` DB_SHUTDOWNED.
pub const DB_SHUTDOWNED: u32 = 1;
const OFFSET_STATE: usize = 16;
const OFFSET_TIME: usize = 24;
const OFFSET_UNLOGGED_LSN: usize = 128;
const OFFSET_MIN_RECOVERY_POINT: usize = 136;
/// minRecoveryPoint, its TLI, backupStartPoint, backupEndPoint, backupEndRequired: all zero after a clean
/// shutdown outside recovery.
const RECOVERY_FIELDS: std::ops::Range<usize> = OFFSET_MIN_RECOVERY_POINT..172;

/// pg_control of a cluster shut down cleanly with `checkpoint` (its redo where its record is): `stored` (a
/// pg_control of the same cluster, checked) with state DB_SHUTDOWNED, `checkPoint` = `checkpoint_lsn`
/// (0 for a Neon compute, which starts from checkPointCopy.redo without reading WAL), checkPointCopy =
/// `checkpoint`, no recovery or backup in progress, `time` and the CRC anew. 8192 bytes.
pub fn shutdown_control_file(
    stored: &[u8],
    checkpoint_lsn: Lsn,
    checkpoint: &CheckPoint,
    time: i64,
) -> Result<Vec<u8>, ControlFileError> {
    let version = parse_control_file(stored)?.version;
    let mut b = stored[..SIZEOF_CONTROL_FILE_DATA].to_vec();
    b.resize(PG_CONTROL_FILE_SIZE, 0);
    b[OFFSET_STATE..OFFSET_STATE + 4].copy_from_slice(&DB_SHUTDOWNED.to_le_bytes());
    b[OFFSET_TIME..OFFSET_TIME + 8].copy_from_slice(&time.to_le_bytes());
    b[OFFSET_CHECKPOINT_LSN..OFFSET_CHECKPOINT_LSN + 8]
        .copy_from_slice(&checkpoint_lsn.0.to_le_bytes());
    b[OFFSET_CHECKPOINT_COPY..OFFSET_CHECKPOINT_COPY + CheckPoint::SIZE]
        .copy_from_slice(&checkpoint.encode());
    b[OFFSET_UNLOGGED_LSN..OFFSET_UNLOGGED_LSN + 8]
        .copy_from_slice(&checkpoint.redo.0.to_le_bytes());
    b[RECOVERY_FIELDS].fill(0);
    set_crc(&mut b, version);
    Ok(b)
}

/// `DBState` DB_SHUTDOWNED_IN_RECOVERY.
pub const DB_SHUTDOWNED_IN_RECOVERY: u32 = 2;
const OFFSET_MIN_RECOVERY_POINT_TLI: usize = 144;

/// pg_control for a data directory that starts as a standby from a backup_label ("BACKUP FROM: standby"):
/// as [`shutdown_control_file`], but state DB_SHUTDOWNED_IN_RECOVERY and minRecoveryPoint = `consistent_at`
/// on timeline 1, where PostgreSQL sets the backup's end (xlogrecovery.c, InitWalRecovery: a backup from a
/// standby ends at pg_control's minRecoveryPoint, and the state must be one of recovery).
pub fn standby_control_file(
    stored: &[u8],
    checkpoint_lsn: Lsn,
    checkpoint: &CheckPoint,
    time: i64,
    consistent_at: Lsn,
) -> Result<Vec<u8>, ControlFileError> {
    let version = parse_control_file(stored)?.version;
    let mut b = shutdown_control_file(stored, checkpoint_lsn, checkpoint, time)?;
    b[OFFSET_STATE..OFFSET_STATE + 4].copy_from_slice(&DB_SHUTDOWNED_IN_RECOVERY.to_le_bytes());
    b[OFFSET_MIN_RECOVERY_POINT..OFFSET_MIN_RECOVERY_POINT + 8]
        .copy_from_slice(&consistent_at.0.to_le_bytes());
    b[OFFSET_MIN_RECOVERY_POINT_TLI..OFFSET_MIN_RECOVERY_POINT_TLI + 4]
        .copy_from_slice(&1u32.to_le_bytes());
    set_crc(&mut b, version);
    Ok(b)
}

/// `system_identifier` of a pg_control.
pub fn system_identifier(stored: &[u8]) -> Result<u64, ControlFileError> {
    Ok(parse_control_file(stored)?.system_identifier)
}

/// The LSNs of a `backup_label` (`START WAL LOCATION: 0/2000028 (file ...)`, `CHECKPOINT LOCATION: 0/2000060`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupLabel {
    pub start_lsn: Lsn,
    pub checkpoint_lsn: Lsn,
}

pub fn parse_backup_label(text: &str) -> Result<BackupLabel, String> {
    let field = |name: &str| -> Result<Lsn, String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| format!("no {name:?} line"))?;
        let lsn = line.split_whitespace().next().unwrap_or_default();
        lsn.parse()
            .map_err(|_| format!("{name}: {lsn:?} is not an LSN"))
    };
    Ok(BackupLabel {
        start_lsn: field("START WAL LOCATION")?,
        checkpoint_lsn: field("CHECKPOINT LOCATION")?,
    })
}

/// A control file as PostgreSQL writes one: fields, CRC, zero padding to 8192 (for tests).
#[cfg(test)]
pub(crate) fn sample_control_file(checkpoint_lsn: Lsn, checkpoint: &CheckPoint) -> Vec<u8> {
    sample_control_file_of(PgVersion::V15, checkpoint_lsn, checkpoint)
}

#[cfg(test)]
pub(crate) fn sample_control_file_of(
    version: PgVersion,
    checkpoint_lsn: Lsn,
    checkpoint: &CheckPoint,
) -> Vec<u8> {
    let mut b = vec![0u8; PG_CONTROL_FILE_SIZE];
    b[0..8].copy_from_slice(&0x1234_5678_9ABC_DEF0u64.to_le_bytes());
    b[8..12].copy_from_slice(&version.control_version().to_le_bytes());
    b[12..16].copy_from_slice(&version.catalog_version().to_le_bytes());
    b[32..40].copy_from_slice(&checkpoint_lsn.0.to_le_bytes());
    b[40..128].copy_from_slice(&checkpoint.encode());
    set_crc(&mut b, version);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_file_fields_version_and_crc() {
        let cp = CheckPoint {
            redo: Lsn(0x14E_0028),
            this_timeline_id: 1,
            next_xid: 735,
            ..Default::default()
        };
        let mut b = sample_control_file(Lsn(0x14E_0028), &cp);
        let c = parse_control_file(&b).unwrap();
        assert_eq!(c.checkpoint_lsn, Lsn(0x14E_0028));
        assert_eq!(c.checkpoint, cp);
        assert_eq!(c.system_identifier, 0x1234_5678_9ABC_DEF0);
        assert!(matches!(
            parse_control_file(&b[..100]),
            Err(ControlFileError::TooShort { len: 100 })
        ));
        b[50] ^= 1;
        assert!(matches!(
            parse_control_file(&b),
            Err(ControlFileError::Checksum { .. })
        ));
        b[12..16].copy_from_slice(&202307071u32.to_le_bytes()); // PostgreSQL 16
        assert!(matches!(
            parse_control_file(&b),
            Err(ControlFileError::CatalogVersion { got: 202307071, .. })
        ));
        b[8..12].copy_from_slice(&1700u32.to_le_bytes()); // PostgreSQL 17
        assert!(matches!(
            parse_control_file(&b),
            Err(ControlFileError::Version { got: 1700 })
        ));
    }

    /// PostgreSQL 18's layout: its CRC at 292 (a 15 reader would check 288), wal_level in the checkpoint;
    /// a rewritten file keeps the version and a valid CRC.
    #[test]
    fn control_file_of_postgresql_18() {
        let cp = CheckPoint {
            redo: Lsn(0x300_0028),
            this_timeline_id: 1,
            next_xid: 900,
            wal_level: 1,
            ..Default::default()
        };
        let b = sample_control_file_of(PgVersion::V18, Lsn(0x300_0028), &cp);
        let c = parse_control_file(&b).unwrap();
        assert_eq!(c.version, PgVersion::V18);
        assert_eq!(c.checkpoint, cp);
        assert_ne!(crc32c::crc32c(&b[..288]).to_le_bytes(), b[288..292]);
        let next = CheckPoint {
            next_xid: 950,
            ..cp
        };
        let out = shutdown_control_file(&b, Lsn(0x400_0028), &next, 7).unwrap();
        let c = parse_control_file(&out).unwrap();
        assert_eq!((c.version, c.checkpoint), (PgVersion::V18, next));
        let out = standby_control_file(&b, Lsn(0x400_0028), &next, 7, Lsn(0x400_0100)).unwrap();
        assert_eq!(parse_control_file(&out).unwrap().version, PgVersion::V18);
    }

    #[test]
    fn backup_label() {
        let text = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                    CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n";
        assert_eq!(
            parse_backup_label(text),
            Ok(BackupLabel {
                start_lsn: Lsn(0x200_0028),
                checkpoint_lsn: Lsn(0x200_0060)
            })
        );
        assert!(parse_backup_label("CHECKPOINT LOCATION: 0/2000060\n").is_err());
        assert!(parse_backup_label("START WAL LOCATION: x\nCHECKPOINT LOCATION: 0/1\n").is_err());
    }
}
