//! `pageserver waldump <segment files or directories>`: decodes WAL segments and prints one JSON object per
//! record, a machine-readable counterpart of `pg_waldump`:
//! `{"lsn","end_lsn","prev","rmgr","info","xid","tot_len","blocks":[{"id","spc","db","rel","fork","blk",
//! "image","apply_image","will_init"[,"hole_offset","hole_length","bimg_len","compression"]}]}`.
//!
//! Segments are taken in order of their names; decoding runs across consecutive segments and starts afresh
//! after a gap. It stops cleanly at the end of written WAL (zeros) and fails on anything else that is wrong.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::pg::constants::FORK_NAMES;
use crate::pg::lsn::{is_valid_segment_size, parse_wal_file_name};
use crate::pg::{DecodedRecord, Lsn, PgVersion, WalDecodeError, WalStreamDecoder, decode_record};

#[derive(Debug, thiserror::Error)]
pub enum WaldumpError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a WAL segment file (a 24-hex-digit name)")]
    NotASegment { path: PathBuf },
    #[error("no WAL segment files found")]
    NoSegments,
    #[error("{path}: {msg}")]
    BadSegment { path: PathBuf, msg: String },
    #[error("{path}: WAL page magic {magic:#06X} is not of PostgreSQL {supported}", supported = crate::pg::PgVersion::supported_list())]
    UnknownVersion { path: PathBuf, magic: u16 },
    #[error(transparent)]
    Decode(#[from] WalDecodeError),
    #[error(transparent)]
    Record(#[from] crate::pg::xlogrecord::RecordError),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

#[derive(Serialize)]
struct JsonRecord {
    lsn: Lsn,
    end_lsn: Lsn,
    prev: Lsn,
    rmgr: String,
    info: u8,
    xid: u32,
    tot_len: u32,
    blocks: Vec<JsonBlock>,
}

#[derive(Serialize)]
struct JsonBlock {
    id: u8,
    spc: u32,
    db: u32,
    rel: u32,
    fork: &'static str,
    blk: u32,
    image: bool,
    apply_image: bool,
    will_init: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hole_offset: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hole_length: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bimg_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<crate::pg::Compression>,
}

fn to_json(rec: &DecodedRecord) -> JsonRecord {
    JsonRecord {
        lsn: rec.lsn,
        end_lsn: rec.end_lsn,
        prev: rec.header.prev,
        rmgr: crate::pg::constants::rmgr_name(rec.rmid()),
        info: rec.header.info,
        xid: rec.header.xid,
        tot_len: rec.header.tot_len,
        blocks: rec
            .blocks
            .iter()
            .map(|b| JsonBlock {
                id: b.id,
                spc: b.rnode.spc,
                db: b.rnode.db,
                rel: b.rnode.rel,
                fork: FORK_NAMES
                    .get(b.forknum as usize)
                    .copied()
                    .unwrap_or("invalid"),
                blk: b.blkno,
                image: b.image.is_some(),
                apply_image: b.apply_image(),
                will_init: b.will_init(),
                hole_offset: b.image.as_ref().map(|i| i.hole_offset),
                hole_length: b.image.as_ref().map(|i| i.hole_length),
                bimg_len: b.image.as_ref().map(|i| i.data.len()),
                compression: b.image.as_ref().map(|i| i.compression()),
            })
            .collect(),
    }
}

/// How a dump ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpSummary {
    pub records: u64,
    /// The PostgreSQL version whose WAL it is (by the page magic of the first segment).
    pub version: Option<PgVersion>,
    /// Where written WAL ended, if it ended inside the given segments.
    pub end_of_wal: Option<Lsn>,
}

/// The WAL segment files named by `paths` (files, or directories whose WAL-named files are taken), sorted.
pub fn collect_segments(paths: &[PathBuf]) -> Result<Vec<PathBuf>, WaldumpError> {
    let mut files = Vec::new();
    for path in paths {
        let io = |source| WaldumpError::Io {
            path: path.clone(),
            source,
        };
        if path.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io)? {
                let entry = entry.map_err(io)?;
                let name = entry.file_name();
                if name
                    .to_str()
                    .is_some_and(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    files.push(entry.path());
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    files.dedup();
    if files.is_empty() {
        return Err(WaldumpError::NoSegments);
    }
    Ok(files)
}

/// Segment size from the long page header at the start of a segment file.
fn segment_size(path: &Path) -> Result<u32, WaldumpError> {
    let mut header = [0u8; 40];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|source| WaldumpError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let size = u32::from_le_bytes([header[32], header[33], header[34], header[35]]);
    if !is_valid_segment_size(size) {
        return Err(WaldumpError::BadSegment {
            path: path.to_path_buf(),
            msg: format!("long page header gives segment size {size}"),
        });
    }
    Ok(size)
}

/// The PostgreSQL version of the WAL segment at `path`, by the magic of its first page.
pub fn wal_version(path: &Path) -> Result<PgVersion, WaldumpError> {
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|source| WaldumpError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let magic = u16::from_le_bytes(magic);
    PgVersion::from_xlog_page_magic(magic).ok_or_else(|| WaldumpError::UnknownVersion {
        path: path.to_path_buf(),
        magic,
    })
}

/// Decodes every record of `segments` (of the version [`wal_version`] tells by the first), calling
/// `on_record` for each, until the end of written WAL.
pub fn for_each_record(
    segments: &[PathBuf],
    mut on_record: impl FnMut(&DecodedRecord) -> Result<(), WaldumpError>,
) -> Result<DumpSummary, WaldumpError> {
    let first = segments.first().ok_or(WaldumpError::NoSegments)?;
    let seg_size = segment_size(first)?;
    let version = wal_version(first)?;
    let mut summary = DumpSummary {
        records: 0,
        version: Some(version),
        end_of_wal: None,
    };
    let mut decoder: Option<WalStreamDecoder> = None;
    let mut expected_segno = None;
    for path in segments {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let (_tli, segno) = parse_wal_file_name(name, seg_size)
            .ok_or_else(|| WaldumpError::NotASegment { path: path.clone() })?;
        let data = std::fs::read(path).map_err(|source| WaldumpError::Io {
            path: path.clone(),
            source,
        })?;
        if data.len() != seg_size as usize {
            return Err(WaldumpError::BadSegment {
                path: path.clone(),
                msg: format!("{} bytes, expected {seg_size}", data.len()),
            });
        }
        if expected_segno != Some(segno) {
            if let Some(d) = &decoder {
                d.finish()?;
            }
            decoder = Some(WalStreamDecoder::new(
                Lsn(segno * seg_size as u64),
                seg_size,
                version,
            )?);
        }
        expected_segno = Some(segno + 1);
        let Some(d) = decoder.as_mut() else { continue };
        d.feed_bytes(&data);
        loop {
            match d.poll_decode() {
                Ok(Some(raw)) => {
                    let rec = decode_record(&raw)?;
                    summary.records += 1;
                    on_record(&rec)?;
                }
                Ok(None) => break,
                Err(WalDecodeError::EndOfWal { lsn }) => {
                    summary.end_of_wal = Some(lsn);
                    return Ok(summary);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if let Some(d) = &decoder {
        d.finish()?;
    }
    Ok(summary)
}

/// The `waldump` command: JSON lines on `out`.
pub fn run(paths: &[PathBuf], out: &mut impl Write) -> Result<DumpSummary, WaldumpError> {
    let segments = collect_segments(paths)?;
    for_each_record(&segments, |rec| {
        serde_json::to_writer(&mut *out, &to_json(rec))
            .map_err(|e| WaldumpError::Output(e.into()))?;
        out.write_all(b"\n").map_err(WaldumpError::Output)
    })
}
