//! The remote layout of a tenant and the index of a timeline (docs/remote-storage.md).
//!
//! Keys, relative to the storage's prefix (Neon's layout, `pageserver/src/tenant/remote_timeline_client.rs`):
//! - `tenants/<tenant>/timelines/<timeline>/<layer name>-<generation:08x>`: a layer file, byte for byte;
//! - `tenants/<tenant>/timelines/<timeline>/index_part.json-<generation:08x>`: the index of the timeline as the
//!   attachment of that generation last uploaded it;
//! - `tenants/<tenant>/timelines/<timeline>/initdb.tar.zst`: the initdb output a bootstrapped timeline started
//!   from.
//!
//! A generation of 0 means none (a key without suffix), as Neon's `Generation::None`. The newest index of a
//! timeline is the one with the highest generation at or below the reader's own: an attachment never reads
//! what a newer one wrote.
//!
//! The index (`index_part.json`) has the shape of Neon's `IndexPart`: `version`, `layer_metadata` (each layer
//! by name with `file_size` and `generation`), `disk_consistent_lsn`, `metadata_bytes` (the timeline
//! metadata: disk_consistent_lsn, prev_record_lsn, ancestor_timeline, ancestor_lsn, latest_gc_cutoff_lsn,
//! initdb_lsn, pg_version), `lineage`; ours adds `lsn_times` (the PITR samples of GC). Every layer it names
//! exists in remote storage (the upload queue's first invariant).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::RemotePath;
use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;
use crate::repository::metadata::{LayerFileMeta, TimelineMetadata};

pub const INDEX_PART_NAME: &str = "index_part.json";
pub const INITDB_ARCHIVE_NAME: &str = "initdb.tar.zst";
/// The version of our index format.
pub const INDEX_VERSION: u32 = 1;

/// The generation of an attachment; 0 is "none".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u32);

impl Generation {
    pub const NONE: Generation = Generation(0);

    /// The suffix of keys written by this generation: `-<gen:08x>`, or nothing for none.
    pub fn suffix(self) -> String {
        if self.0 == 0 {
            String::new()
        } else {
            format!("-{:08x}", self.0)
        }
    }

    pub fn next(self) -> Generation {
        Generation(self.0.saturating_add(1))
    }

    /// The generation of a key's last component: the hex after the last `-` of a name that ends in 8 hex
    /// digits after `base`; none for `base` itself.
    pub fn parse_suffix(name: &str, base: &str) -> Option<Generation> {
        let rest = name.strip_prefix(base)?;
        if rest.is_empty() {
            return Some(Generation::NONE);
        }
        let hex = rest.strip_prefix('-')?;
        if hex.len() != 8 {
            return None;
        }
        u32::from_str_radix(hex, 16).ok().map(Generation)
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

pub fn tenant_path(tenant: TenantId) -> String {
    format!("tenants/{tenant}")
}

pub fn timelines_prefix(tenant: TenantId) -> String {
    format!("tenants/{tenant}/timelines/")
}

pub fn timeline_prefix(tenant: TenantId, timeline: TimelineId) -> String {
    format!("tenants/{tenant}/timelines/{timeline}/")
}

fn in_timeline(tenant: TenantId, timeline: TimelineId, name: &str) -> RemotePath {
    RemotePath(format!("{}{name}", timeline_prefix(tenant, timeline)))
}

pub fn layer_path(
    tenant: TenantId,
    timeline: TimelineId,
    layer: &str,
    generation: Generation,
) -> RemotePath {
    in_timeline(tenant, timeline, &format!("{layer}{}", generation.suffix()))
}

pub fn index_path(tenant: TenantId, timeline: TimelineId, generation: Generation) -> RemotePath {
    in_timeline(
        tenant,
        timeline,
        &format!("{INDEX_PART_NAME}{}", generation.suffix()),
    )
}

pub fn initdb_path(tenant: TenantId, timeline: TimelineId) -> RemotePath {
    in_timeline(tenant, timeline, INITDB_ARCHIVE_NAME)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexLayerMetadata {
    pub file_size: u64,
    #[serde(default, skip_serializing_if = "is_none_generation")]
    pub generation: Generation,
}

fn is_none_generation(g: &Generation) -> bool {
    *g == Generation::NONE
}

/// The timeline metadata inside the index, under Neon's key `metadata_bytes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMetadata {
    pub disk_consistent_lsn: Lsn,
    #[serde(default)]
    pub prev_record_lsn: Option<Lsn>,
    #[serde(default)]
    pub ancestor_timeline: Option<TimelineId>,
    pub ancestor_lsn: Lsn,
    pub latest_gc_cutoff_lsn: Lsn,
    pub initdb_lsn: Lsn,
    pub pg_version: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPart {
    pub version: u32,
    pub layer_metadata: BTreeMap<String, IndexLayerMetadata>,
    pub disk_consistent_lsn: Lsn,
    #[serde(rename = "metadata_bytes", alias = "metadata")]
    pub metadata: IndexMetadata,
    #[serde(default)]
    pub lineage: Lineage,
    #[serde(default)]
    pub lsn_times: Vec<(u64, Lsn)>,
    /// Set when the timeline is being deleted: an attach finishes the deletion instead of loading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// Ours: a recovery writing into the timeline, or one that failed (the timeline refuses reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<crate::repository::metadata::RecoveryMark>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index of timeline {timeline}: {msg}")]
    Invalid { timeline: TimelineId, msg: String },
    #[error("metadata names layer {0}, whose size and generation are unknown")]
    UnknownLayer(String),
}

impl IndexPart {
    /// The index of committed metadata: every layer it names, with its size and generation.
    pub fn from_metadata(m: &TimelineMetadata) -> Result<IndexPart, IndexError> {
        let mut layer_metadata = BTreeMap::new();
        for name in &m.layers {
            let meta = m
                .layer_meta
                .get(name)
                .ok_or_else(|| IndexError::UnknownLayer(name.clone()))?;
            layer_metadata.insert(
                name.clone(),
                IndexLayerMetadata {
                    file_size: meta.file_size,
                    generation: Generation(meta.generation),
                },
            );
        }
        Ok(IndexPart {
            version: INDEX_VERSION,
            layer_metadata,
            disk_consistent_lsn: m.disk_consistent_lsn,
            metadata: IndexMetadata {
                disk_consistent_lsn: m.disk_consistent_lsn,
                prev_record_lsn: m.prev_record_lsn,
                ancestor_timeline: m.ancestor_timeline,
                ancestor_lsn: m.ancestor_lsn,
                latest_gc_cutoff_lsn: m.latest_gc_cutoff_lsn,
                initdb_lsn: m.initdb_lsn,
                pg_version: m.pg_version,
            },
            lineage: Lineage {},
            lsn_times: m.lsn_times.clone(),
            deleted_at: None,
            recovery: m.recovery.clone(),
        })
    }

    /// The local metadata of a timeline attached from this index (its layers not downloaded yet).
    pub fn to_metadata(&self) -> TimelineMetadata {
        let mut m = TimelineMetadata::new(
            self.metadata.disk_consistent_lsn,
            self.metadata
                .ancestor_timeline
                .map(|a| (a, self.metadata.ancestor_lsn)),
            self.metadata.initdb_lsn,
            self.metadata.pg_version,
        );
        m.prev_record_lsn = self.metadata.prev_record_lsn;
        m.latest_gc_cutoff_lsn = self.metadata.latest_gc_cutoff_lsn;
        m.lsn_times = self.lsn_times.clone();
        m.recovery = self.recovery.clone();
        for (name, meta) in &self.layer_metadata {
            m.layers.push(name.clone());
            m.layer_meta.insert(
                name.clone(),
                LayerFileMeta {
                    file_size: meta.file_size,
                    generation: meta.generation.0,
                },
            );
        }
        m
    }

    /// Checks what an index must satisfy before it is uploaded or used: a known version, layer names that
    /// parse, `disk_consistent_lsn` equal in both places, and (as Neon's `validate`) not an empty root.
    pub fn validate(&self, timeline: TimelineId) -> Result<(), IndexError> {
        let bad = |msg: String| IndexError::Invalid { timeline, msg };
        if self.version != INDEX_VERSION {
            return Err(bad(format!("unsupported version {}", self.version)));
        }
        if self.disk_consistent_lsn != self.metadata.disk_consistent_lsn {
            return Err(bad(format!(
                "disk_consistent_lsn {} differs from the metadata's {}",
                self.disk_consistent_lsn, self.metadata.disk_consistent_lsn
            )));
        }
        for name in self.layer_metadata.keys() {
            if name
                .parse::<crate::repository::layers::LayerName>()
                .is_err()
            {
                return Err(bad(format!("{name:?} is not a layer name")));
            }
        }
        if self.metadata.ancestor_timeline.is_none() && self.layer_metadata.is_empty() {
            return Err(bad("a timeline without ancestor and without layers".into()));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of plain fields always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn from_json(data: &[u8], timeline: TimelineId) -> Result<IndexPart, IndexError> {
        let index: IndexPart = serde_json::from_slice(data).map_err(|e| IndexError::Invalid {
            timeline,
            msg: e.to_string(),
        })?;
        index.validate(timeline)?;
        Ok(index)
    }
}

/// The newest index at or below `mine` among the keys of one timeline's listing (object names).
pub fn pick_index<'a>(
    names: impl IntoIterator<Item = &'a str>,
    mine: Generation,
) -> Option<Generation> {
    names
        .into_iter()
        .filter_map(|n| Generation::parse_suffix(n, INDEX_PART_NAME))
        .filter(|g| *g <= mine)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_in_keys() {
        let t: TenantId = "3aa8fcc61f6d357410b7de754b1d9001".parse().unwrap();
        let tl: TimelineId = "de200bd42b49cc1814412c7e592dd6e9".parse().unwrap();
        assert_eq!(
            index_path(t, tl, Generation(10)).as_str(),
            "tenants/3aa8fcc61f6d357410b7de754b1d9001/timelines/de200bd42b49cc1814412c7e592dd6e9/index_part.json-0000000a"
        );
        assert_eq!(
            index_path(t, tl, Generation::NONE).object_name(),
            "index_part.json"
        );
        let names = [
            "index_part.json",
            "index_part.json-00000001",
            "index_part.json-00000003",
            "index_part.json-00000005",
            "index_part.json-junk",
            "000000-FFFF__00-01-00000009",
        ];
        assert_eq!(pick_index(names, Generation(4)), Some(Generation(3)));
        assert_eq!(pick_index(names, Generation(5)), Some(Generation(5)));
        assert_eq!(pick_index(names, Generation(100)), Some(Generation(5)));
        assert_eq!(
            pick_index(names[..1].iter().copied(), Generation(2)),
            Some(Generation::NONE)
        );
        assert_eq!(pick_index(names[4..].iter().copied(), Generation(2)), None);
    }

    #[test]
    fn index_round_trips_metadata_and_refuses_bad_ones() {
        let mut m = TimelineMetadata::new(Lsn(0x100), None, Lsn(0x80), 15);
        let name = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000000000080-0000000000000101";
        m.layers.push(name.into());
        m.layer_meta.insert(
            name.into(),
            LayerFileMeta {
                file_size: 1234,
                generation: 2,
            },
        );
        let index = IndexPart::from_metadata(&m).unwrap();
        let tl = TimelineId::generate();
        let back = IndexPart::from_json(&index.to_json(), tl).unwrap();
        assert_eq!(back, index);
        assert_eq!(back.to_metadata().layers, m.layers);
        assert_eq!(back.to_metadata().layer_meta, m.layer_meta);
        let json = String::from_utf8(index.to_json()).unwrap();
        assert!(json.contains("\"metadata_bytes\""), "{json}");
        assert!(json.contains("\"generation\": 2"), "{json}");

        let mut empty = index.clone();
        empty.layer_metadata.clear();
        assert!(empty.validate(tl).is_err());
        let mut wrong = index.clone();
        wrong.disk_consistent_lsn = Lsn(1);
        assert!(wrong.validate(tl).is_err());
        m.layers.push("not-in-meta".into());
        assert!(IndexPart::from_metadata(&m).is_err());
    }
}
