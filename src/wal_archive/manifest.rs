//! The WAL archive's objects and their manifests (docs/wal-archive.md specifies both byte by byte).
//!
//! Objects, under `<timeline prefix>wal/`, each name followed by the writer's generation suffix
//! (`-<gen:08x>`, none for generation 0), like every other remote key:
//! - `base.tar.zst` and its manifest `base.json`: the data directory the timeline started from;
//! - `<segment>` and `<segment>.json`: a completed WAL segment (`<segment>` is PostgreSQL's 24-hex
//!   `XLogFileName`);
//! - `<segment>.partial.<end:016X>` and `<segment>.partial.<end:016X>.json`: the tail of the segment being
//!   written, up to `end`; replaced by newer partials and by the completed segment.
//!
//! Invariants, checked by [`SegmentManifest::from_json`] (the shape) and by the recovery plan (the chain):
//! - a manifest is JSON of at most [`MAX_MANIFEST_BYTES`], with every field known and `format_version` 1;
//! - `size == end_lsn - start_lsn`, and the object holds exactly the WAL bytes of `[start_lsn, end_lsn)`;
//!   both LSNs lie in the named segment (`end_lsn` may be its end);
//! - `sha256` is the SHA-256 of the object's bytes; `prev_sha256` is the `sha256` of the timeline's previous
//!   segment, or of the base for the first segment, or null when there was neither;
//! - the manifest names its tenant, timeline and the PostgreSQL system identifier of its WAL.
//!
//! A segment object without its manifest is not part of the archive: the manifest is uploaded after the data
//! and is the commit point.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;
use crate::pg::lsn::{parse_wal_file_name, wal_file_name};
use crate::remote_storage::index::Generation;

pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// A manifest is a few hundred bytes; anything much larger is not one.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
pub const BASE_OBJECT: &str = "base.tar.zst";
pub const BASE_MANIFEST: &str = "base.json";
const MANIFEST_SUFFIX: &str = ".json";
const PARTIAL_INFIX: &str = ".partial.";

/// A SHA-256 digest, shown and stored as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn of(data: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(data).into())
    }

    pub fn from_hasher(h: Sha256) -> Sha256Digest {
        Sha256Digest(h.finalize().into())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Sha256Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(format!("a sha256 is 64 hex digits, not {}", b.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| format!("{hex:?} is not hex"))?;
        }
        Ok(Sha256Digest(out))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{object}: manifest of {size} bytes is larger than {MAX_MANIFEST_BYTES}")]
    TooLarge { object: String, size: usize },
    #[error("{object}: not a manifest: {msg}")]
    Malformed { object: String, msg: String },
}

/// The manifest of a WAL segment or partial segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentManifest {
    pub format_version: u32,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// PostgreSQL's file name of the segment (24 hex digits).
    pub segment: String,
    pub partial: bool,
    pub start_lsn: Lsn,
    /// Exclusive.
    pub end_lsn: Lsn,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub prev_sha256: Option<Sha256Digest>,
    pub system_identifier: u64,
    pub pg_version: u32,
    pub wal_segment_size: u32,
    pub generation: Generation,
    /// Unix seconds when the segment was completed (or the partial cut).
    pub created_at: u64,
}

impl SegmentManifest {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serializes")
    }

    /// Parses and checks the manifest's own consistency (not the chain: that is the plan's).
    pub fn from_json(object: &str, data: &[u8]) -> Result<SegmentManifest, ManifestError> {
        let m: SegmentManifest = parse_json(object, data)?;
        let bad = |msg: String| {
            Err(ManifestError::Malformed {
                object: object.to_string(),
                msg,
            })
        };
        if m.format_version != MANIFEST_FORMAT_VERSION {
            return bad(format!("unsupported format_version {}", m.format_version));
        }
        if !crate::pg::lsn::is_valid_segment_size(m.wal_segment_size) {
            return bad(format!("bad wal_segment_size {}", m.wal_segment_size));
        }
        let Some((_, segno)) = parse_wal_file_name(&m.segment, m.wal_segment_size) else {
            return bad(format!("{:?} is not a WAL segment name", m.segment));
        };
        if m.end_lsn < m.start_lsn || m.end_lsn.0 - m.start_lsn.0 != m.size {
            return bad(format!(
                "size {} does not match the range {}..{}",
                m.size, m.start_lsn, m.end_lsn
            ));
        }
        let seg = u64::from(m.wal_segment_size);
        let seg_start = segno.saturating_mul(seg);
        let in_segment = m.start_lsn.0 >= seg_start
            && m.end_lsn.0 <= seg_start.saturating_add(seg)
            && (m.size > 0 || m.partial);
        if !in_segment {
            return bad(format!(
                "range {}..{} is not inside segment {}",
                m.start_lsn, m.end_lsn, m.segment
            ));
        }
        if !m.partial && m.end_lsn.0 != seg_start + seg {
            return bad(format!(
                "a completed segment ends at the segment's end, not at {}",
                m.end_lsn
            ));
        }
        Ok(m)
    }

    /// The segment number (`start_lsn / wal_segment_size`).
    pub fn segno(&self) -> u64 {
        self.start_lsn.segment_number(self.wal_segment_size)
    }
}

/// What a base is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseKind {
    /// The output of initdb of a bootstrapped timeline.
    Initdb,
    /// The base backup a followed or imported timeline started from.
    Basebackup,
}

/// The manifest of a timeline's base: a tar of a data directory, zstd-compressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseManifest {
    pub format_version: u32,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub kind: BaseKind,
    /// The LSN the base is imported at; the archive's WAL starts here.
    pub lsn: Lsn,
    /// Start of the record that ends at `lsn`, when known.
    pub prev_record_lsn: Option<Lsn>,
    /// The object's name below `wal/` (without the generation suffix).
    pub object: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub system_identifier: u64,
    pub pg_version: u32,
    pub generation: Generation,
    pub created_at: u64,
}

impl BaseManifest {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serializes")
    }

    pub fn from_json(object: &str, data: &[u8]) -> Result<BaseManifest, ManifestError> {
        let m: BaseManifest = parse_json(object, data)?;
        if m.format_version != MANIFEST_FORMAT_VERSION {
            return Err(ManifestError::Malformed {
                object: object.to_string(),
                msg: format!("unsupported format_version {}", m.format_version),
            });
        }
        if m.object != BASE_OBJECT {
            return Err(ManifestError::Malformed {
                object: object.to_string(),
                msg: format!("names object {:?}, expected {BASE_OBJECT}", m.object),
            });
        }
        Ok(m)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    object: &str,
    data: &[u8],
) -> Result<T, ManifestError> {
    if data.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            object: object.to_string(),
            size: data.len(),
        });
    }
    serde_json::from_slice(data).map_err(|e| ManifestError::Malformed {
        object: object.to_string(),
        msg: e.to_string(),
    })
}

/// What an object name below `wal/` is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ArchiveObject {
    BaseData,
    BaseManifest,
    Segment {
        name: String,
        manifest: bool,
    },
    Partial {
        name: String,
        end: Lsn,
        manifest: bool,
    },
}

/// An object name with its generation: `(what, generation)`; None for names the archive does not write.
pub fn parse_object_name(full: &str, seg_size: u32) -> Option<(ArchiveObject, Generation)> {
    let (base, generation) = split_generation(full);
    if base == BASE_OBJECT {
        return Some((ArchiveObject::BaseData, generation));
    }
    if base == BASE_MANIFEST {
        return Some((ArchiveObject::BaseManifest, generation));
    }
    let (base, manifest) = match base.strip_suffix(MANIFEST_SUFFIX) {
        Some(b) => (b, true),
        None => (base, false),
    };
    let seg = base.get(..24)?;
    parse_wal_file_name(seg, seg_size)?;
    let rest = &base[24..];
    if rest.is_empty() {
        return Some((
            ArchiveObject::Segment {
                name: seg.to_string(),
                manifest,
            },
            generation,
        ));
    }
    let end = rest.strip_prefix(PARTIAL_INFIX)?;
    if end.len() != 16 {
        return None;
    }
    let end = u64::from_str_radix(end, 16).ok()?;
    Some((
        ArchiveObject::Partial {
            name: seg.to_string(),
            end: Lsn(end),
            manifest,
        },
        generation,
    ))
}

/// `name-<gen>` into `(name, gen)`; a name without a valid suffix has generation none.
fn split_generation(full: &str) -> (&str, Generation) {
    if let Some((base, hex)) = full.rsplit_once('-')
        && hex.len() == 8
        && let Ok(g) = u32::from_str_radix(hex, 16)
    {
        return (base, Generation(g));
    }
    (full, Generation::NONE)
}

pub fn segment_name(tli: u32, segno: u64, seg_size: u32) -> String {
    wal_file_name(tli, segno, seg_size)
}

/// The object names (data, manifest) of a completed segment written by `generation`.
pub fn segment_objects(name: &str, generation: Generation) -> (String, String) {
    let g = generation.suffix();
    (format!("{name}{g}"), format!("{name}{MANIFEST_SUFFIX}{g}"))
}

/// The object names (data, manifest) of a partial segment ending at `end`.
pub fn partial_objects(name: &str, end: Lsn, generation: Generation) -> (String, String) {
    let g = generation.suffix();
    let base = format!("{name}{PARTIAL_INFIX}{:016X}", end.0);
    (format!("{base}{g}"), format!("{base}{MANIFEST_SUFFIX}{g}"))
}

/// The object names (data, manifest) of the base.
pub fn base_objects(generation: Generation) -> (String, String) {
    let g = generation.suffix();
    (format!("{BASE_OBJECT}{g}"), format!("{BASE_MANIFEST}{g}"))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u32 = 16 * 1024 * 1024;

    fn manifest() -> SegmentManifest {
        SegmentManifest {
            format_version: 1,
            tenant_id: "11111111111111111111111111111111".parse().unwrap(),
            timeline_id: "22222222222222222222222222222222".parse().unwrap(),
            segment: segment_name(1, 3, SEG),
            partial: false,
            start_lsn: Lsn(3 * SEG as u64 + 40),
            end_lsn: Lsn(4 * SEG as u64),
            size: SEG as u64 - 40,
            sha256: Sha256Digest::of(b"x"),
            prev_sha256: None,
            system_identifier: 7,
            pg_version: 15,
            wal_segment_size: SEG,
            generation: Generation(2),
            created_at: 1,
        }
    }

    #[test]
    fn manifest_round_trip_and_checks() {
        let m = manifest();
        assert_eq!(SegmentManifest::from_json("m", &m.to_json()).unwrap(), m);
        assert_eq!(m.segno(), 3);
        let mut bad = m.clone();
        bad.size += 1;
        assert!(SegmentManifest::from_json("m", &bad.to_json()).is_err());
        let mut bad = m.clone();
        bad.end_lsn = Lsn(4 * SEG as u64 - 8);
        bad.size = bad.end_lsn.0 - bad.start_lsn.0;
        let err = SegmentManifest::from_json("m", &bad.to_json()).unwrap_err();
        assert!(err.to_string().contains("segment's end"), "{err}");
        let mut bad = m.clone();
        bad.segment = segment_name(1, 5, SEG);
        assert!(SegmentManifest::from_json("m", &bad.to_json()).is_err());
        let text = String::from_utf8(m.to_json()).unwrap();
        let extra = text.replacen('{', "{\"surprise\": 1,", 1);
        assert!(SegmentManifest::from_json("m", extra.as_bytes()).is_err());
        assert!(SegmentManifest::from_json("m", &vec![b' '; MAX_MANIFEST_BYTES + 1]).is_err());
        assert!(SegmentManifest::from_json("m", b"\xff\xfe").is_err());
    }

    #[test]
    fn sha_hex_round_trip() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Sha256Digest>().unwrap(), d);
        assert!("zz".parse::<Sha256Digest>().is_err());
        assert!("g".repeat(64).parse::<Sha256Digest>().is_err());
    }

    #[test]
    fn object_names() {
        let name = segment_name(1, 3, SEG);
        let (data, man) = segment_objects(&name, Generation(5));
        assert_eq!(data, "000000010000000000000003-00000005");
        assert_eq!(
            parse_object_name(&data, SEG),
            Some((
                ArchiveObject::Segment {
                    name: name.clone(),
                    manifest: false
                },
                Generation(5)
            ))
        );
        assert_eq!(
            parse_object_name(&man, SEG).unwrap().0,
            ArchiveObject::Segment {
                name: name.clone(),
                manifest: true
            }
        );
        let (pdata, pman) = partial_objects(&name, Lsn(0x3001234), Generation::NONE);
        assert_eq!(pdata, "000000010000000000000003.partial.0000000003001234");
        assert_eq!(
            parse_object_name(&pman, SEG).unwrap().0,
            ArchiveObject::Partial {
                name,
                end: Lsn(0x3001234),
                manifest: true
            }
        );
        assert_eq!(
            parse_object_name("base.json-00000001", SEG).unwrap(),
            (ArchiveObject::BaseManifest, Generation(1))
        );
        assert_eq!(parse_object_name("junk", SEG), None);
        assert_eq!(parse_object_name("000000010000000000000003.zip", SEG), None);
    }
}
