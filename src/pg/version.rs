//! The PostgreSQL major versions the pageserver reads and writes, and every format fact that differs between
//! them. Each difference is a method here, so that decoding, ingest, redo, basebackup and import ask the
//! timeline's version instead of assuming one.
//!
//! Sources, per fact (PostgreSQL 15.18 and 18.6 source trees):
//! - WAL page magic: `XLOG_PAGE_MAGIC`, src/include/access/xlog_internal.h (0xD110 in 15, 0xD118 in 18).
//! - pg_control: `PG_CONTROL_VERSION` and `ControlFileData`, src/include/catalog/pg_control.h (1300 in 15,
//!   1800 in 18; 18 adds `bool default_char_signedness` after `data_checksum_version`, which moves the CRC
//!   from offset 288 to 292; the struct stays 296 bytes). `CATALOG_VERSION_NO`,
//!   src/include/catalog/catversion.h.
//! - CheckPoint: 17 added `int wal_level` after `fullPageWrites`, in what was padding (bytes 20..24).
//! - SLRU page numbers: 17 made them `int64` (clog.c `WriteZeroPageXlogRec`, `xl_clog_truncate`;
//!   multixact.c `WriteMZeroPageXlogRec`); the segment file names of pg_xact and pg_multixact stay short
//!   (`SimpleLruInit(..., long_segment_names = false)`).
//! - `xl_xact_stats_item` (access/xact.h): 18 splits `Oid objoid` into `uint32 objid_lo, objid_hi` (12 -> 16
//!   bytes).
//! - The relation mapper file (utils/relmapper.c): `MAX_MAPPINGS` 62 in 15, 64 since 16 (512 -> 524 bytes).
//! - Heap records: 18.6 registers the visibility-map page of a cleared VM bit as a block reference
//!   (`HEAP_INSERT_BLKREF_VM` and friends, access/heapam_xlog.h); the record layouts themselves are the same.

use std::fmt;

/// A PostgreSQL major version the pageserver supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PgVersion {
    V15,
    V18,
}

/// Why a version number is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PostgreSQL {0} is not supported (supported: {supported})", supported = PgVersion::supported_list())]
pub struct UnsupportedVersion(pub u32);

impl PgVersion {
    /// Every supported version, oldest first.
    pub const ALL: [PgVersion; 2] = [PgVersion::V15, PgVersion::V18];

    pub fn major(self) -> u32 {
        match self {
            PgVersion::V15 => 15,
            PgVersion::V18 => 18,
        }
    }

    /// The version of a major version number (15, 18).
    pub fn from_major(major: u32) -> Result<PgVersion, UnsupportedVersion> {
        PgVersion::ALL
            .into_iter()
            .find(|v| v.major() == major)
            .ok_or(UnsupportedVersion(major))
    }

    /// "15, 18"
    pub fn supported_list() -> String {
        PgVersion::ALL
            .iter()
            .map(|v| v.major().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The bundle directory of this version's programs: `v15`, `v18`.
    pub fn bundle_dir_name(self) -> String {
        format!("v{}", self.major())
    }

    /// `XLOG_PAGE_MAGIC`: the first two bytes of every WAL page.
    pub fn xlog_page_magic(self) -> u16 {
        match self {
            PgVersion::V15 => 0xD110,
            PgVersion::V18 => 0xD118,
        }
    }

    /// The version whose WAL pages carry `magic`.
    pub fn from_xlog_page_magic(magic: u16) -> Option<PgVersion> {
        PgVersion::ALL
            .into_iter()
            .find(|v| v.xlog_page_magic() == magic)
    }

    /// `PG_CONTROL_VERSION`.
    pub fn control_version(self) -> u32 {
        match self {
            PgVersion::V15 => 1300,
            PgVersion::V18 => 1800,
        }
    }

    /// `CATALOG_VERSION_NO` of the release the bundle is built from.
    pub fn catalog_version(self) -> u32 {
        match self {
            PgVersion::V15 => 202209061,
            PgVersion::V18 => 202506291,
        }
    }

    /// Offset of the CRC in `ControlFileData` (the CRC covers every byte before it).
    pub fn control_crc_offset(self) -> usize {
        match self {
            PgVersion::V15 => 288,
            PgVersion::V18 => 292,
        }
    }

    /// Does `CheckPoint` carry `wal_level` (at bytes 20..24)?
    pub fn checkpoint_has_wal_level(self) -> bool {
        self >= PgVersion::V18
    }

    /// Are SLRU page numbers in CLOG and multixact records 8 bytes wide (else 4)?
    pub fn slru_pageno_is_64bit(self) -> bool {
        self >= PgVersion::V18
    }

    /// Size of a relation mapper file (`RelMapFile`, utils/relmapper.c): `MAX_MAPPINGS` went from 62 to 64
    /// in PostgreSQL 16 (512 -> 524 bytes).
    pub fn relmap_file_size(self) -> usize {
        match self {
            PgVersion::V15 => 512,
            PgVersion::V18 => 524,
        }
    }

    /// Size of one `xl_xact_stats_item`.
    pub fn xact_stats_item_size(self) -> usize {
        match self {
            PgVersion::V15 => 12,
            PgVersion::V18 => 16,
        }
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.major())
    }
}

impl std::str::FromStr for PgVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<PgVersion, String> {
        let major: u32 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a PostgreSQL major version"))?;
        PgVersion::from_major(major).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_differ() {
        for v in PgVersion::ALL {
            assert_eq!(PgVersion::from_major(v.major()), Ok(v));
            assert_eq!(
                PgVersion::from_xlog_page_magic(v.xlog_page_magic()),
                Some(v)
            );
            assert_eq!(v.to_string().parse::<PgVersion>(), Ok(v));
        }
        assert_eq!(PgVersion::from_major(16), Err(UnsupportedVersion(16)));
        assert_eq!(
            UnsupportedVersion(17).to_string(),
            "PostgreSQL 17 is not supported (supported: 15, 18)"
        );
        assert!("x".parse::<PgVersion>().is_err());
        assert_eq!(PgVersion::from_xlog_page_magic(0xD116), None); // 17
        assert_ne!(
            PgVersion::V15.control_crc_offset(),
            PgVersion::V18.control_crc_offset()
        );
    }
}
