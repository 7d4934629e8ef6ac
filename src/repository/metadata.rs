//! Timeline metadata (docs/storage-format.md §11): the durable state of a timeline, and its commit point. Flush,
//! compaction and GC write their new layer files first, fsynced; then write metadata naming the live
//! layers; only then delete old files. On load, a file not named here is garbage from an interrupted
//! operation and is removed. So a crash leaves no layer half-visible.
//!
//! File `metadata`: line 1 is the crc32c of the rest as 8 hex digits, the rest is JSON. Written to
//! `metadata.tmp`, fsynced, renamed over `metadata`, directory fsynced.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::TimelineId;
use crate::pg::Lsn;

pub const METADATA_FILE: &str = "metadata";
pub const METADATA_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineMetadata {
    pub format_version: u32,
    /// Everything at or below this LSN is in the layer files named below.
    pub disk_consistent_lsn: Lsn,
    /// Start of the record that ends at disk_consistent_lsn, when known.
    pub prev_record_lsn: Option<Lsn>,
    pub ancestor_timeline: Option<TimelineId>,
    pub ancestor_lsn: Lsn,
    /// Reads below this LSN are refused; GC may have removed what they need.
    pub latest_gc_cutoff_lsn: Lsn,
    pub initdb_lsn: Lsn,
    pub pg_version: u32,
    /// The live layer files, by name.
    pub layers: Vec<String>,
    /// Size and generation of each layer named in `layers` (written since remote storage exists; a workdir
    /// from before has none, and the sizes are read from the files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layer_meta: BTreeMap<String, LayerFileMeta>,
    /// (unix seconds, LSN) samples, oldest first, for the PITR cutoff of GC.
    pub lsn_times: Vec<(u64, Lsn)>,
    /// Set while a recovery writes into this timeline and kept if it fails: such a timeline refuses reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryMark>,
}

/// A recovery's mark on its target timeline (docs/wal-archive.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryMark {
    pub job_id: String,
    pub source_timeline: TimelineId,
    /// "running" or "failed".
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RecoveryMark {
    pub fn describe(&self) -> String {
        match (&*self.state, &self.error) {
            ("running", _) => format!(
                "timeline is being recovered from timeline {} by job {}",
                self.source_timeline, self.job_id
            ),
            (_, Some(e)) => format!(
                "the recovery of this timeline (job {}) failed: {e}",
                self.job_id
            ),
            _ => format!(
                "the recovery of this timeline (job {}) did not finish",
                self.job_id
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerFileMeta {
    pub file_size: u64,
    /// The generation of the attachment that wrote the layer (0: none); part of its remote key.
    pub generation: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: checksum mismatch: expected {expected:08x}, got {got:08x}")]
    Checksum {
        path: PathBuf,
        expected: u32,
        got: u32,
    },
    #[error("{path}: {msg}")]
    Corrupt { path: PathBuf, msg: String },
}

impl TimelineMetadata {
    pub fn new(
        disk_consistent_lsn: Lsn,
        ancestor: Option<(TimelineId, Lsn)>,
        initdb_lsn: Lsn,
        pg_version: u32,
    ) -> Self {
        TimelineMetadata {
            format_version: METADATA_FORMAT_VERSION,
            disk_consistent_lsn,
            prev_record_lsn: None,
            ancestor_timeline: ancestor.map(|(id, _)| id),
            ancestor_lsn: ancestor.map_or(Lsn(0), |(_, lsn)| lsn),
            latest_gc_cutoff_lsn: Lsn(0),
            initdb_lsn,
            pg_version,
            layers: vec![],
            layer_meta: BTreeMap::new(),
            lsn_times: vec![],
            recovery: None,
        }
    }

    /// Writes atomically: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, dir: &Path) -> Result<(), MetadataError> {
        let werr = |source| MetadataError::Write {
            path: dir.join(METADATA_FILE),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| werr(std::io::Error::other(e)))?;
        let mut body = format!("{:08x}\n", crc32c::crc32c(&json)).into_bytes();
        body.extend_from_slice(&json);
        crate::durable::write_atomic(dir, METADATA_FILE, &body, crate::durable::PLAIN_MODE)
            .map_err(werr)
    }

    pub fn load(dir: &Path) -> Result<TimelineMetadata, MetadataError> {
        let path = dir.join(METADATA_FILE);
        let data = fs::read(&path).map_err(|source| MetadataError::Read {
            path: path.clone(),
            source,
        })?;
        let corrupt = |msg: &str| MetadataError::Corrupt {
            path: path.clone(),
            msg: msg.to_string(),
        };
        let nl = data
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| corrupt("no checksum line"))?;
        let expected = std::str::from_utf8(&data[..nl])
            .ok()
            .and_then(|s| u32::from_str_radix(s, 16).ok())
            .ok_or_else(|| corrupt("bad checksum line"))?;
        let json = &data[nl + 1..];
        let got = crc32c::crc32c(json);
        if got != expected {
            return Err(MetadataError::Checksum {
                path,
                expected,
                got,
            });
        }
        let meta: TimelineMetadata =
            serde_json::from_slice(json).map_err(|e| corrupt(&e.to_string()))?;
        if meta.format_version != METADATA_FORMAT_VERSION {
            return Err(corrupt(&format!(
                "unsupported format version {}",
                meta.format_version
            )));
        }
        Ok(meta)
    }
}

pub use crate::durable::fsync_dir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = TimelineMetadata::new(Lsn(100), None, Lsn(50), 15);
        m.layers.push("x".into());
        m.save(dir.path()).unwrap();
        assert_eq!(TimelineMetadata::load(dir.path()).unwrap(), m);
        let path = dir.path().join(METADATA_FILE);
        let mut data = fs::read(&path).unwrap();
        let n = data.len();
        data[n - 5] ^= 1;
        fs::write(&path, data).unwrap();
        assert!(matches!(
            TimelineMetadata::load(dir.path()),
            Err(MetadataError::Checksum { .. })
        ));
    }
}
