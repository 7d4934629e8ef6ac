//! `pageserver layers ...` beyond a single file: the layers of a timeline in a workdir or in remote storage,
//! an `index_part.json` shown for people, and a check of every checksum in a bucket (layer files' crcs,
//! the sizes the indexes record, and the WAL archive's sha256 and hash chain). Offline: no pageserver runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::config::RemoteStorageConfig;
use crate::id::{TenantId, TimelineId};
use crate::pg::constants::DEFAULT_WAL_SEGMENT_SIZE;
use crate::recover::plan::{Found, PlanInput, Start, pick_objects, plan};
use crate::remote_storage::index::{self, Generation, IndexPart};
use crate::remote_storage::upload_queue::download_newest_index;
use crate::remote_storage::{GenericRemoteStorage, ListingMode, RemoteError};
use crate::repository::layers::LayerName;
use crate::repository::layers::inspect::InspectedLayer;
use crate::repository::metadata::TimelineMetadata;
use crate::wal_archive::manifest::{ArchiveObject, BaseManifest, SegmentManifest, Sha256Digest};
use crate::wal_archive::{ArchiveStore, manifest};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("--remote-storage: {0}")]
    RemoteConfig(String),
    #[error("{0}")]
    Remote(#[from] RemoteError),
    #[error("{0}")]
    Metadata(#[from] crate::repository::metadata::MetadataError),
    #[error("{0}")]
    Index(#[from] crate::remote_storage::index::IndexError),
    #[error("{0}")]
    Layer(#[from] crate::repository::layers::LayerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    #[error("timeline {timeline} of tenant {tenant} has no index in remote storage")]
    NoIndex {
        tenant: TenantId,
        timeline: TimelineId,
    },
}

fn out_err(e: std::io::Error) -> InspectError {
    InspectError::Output(e)
}

/// The remote storage of a `remote_storage` value as in pageserver.toml (a TOML inline table such as
/// `{local_path='/x'}` or `{bucket_name='b', bucket_region='r', endpoint='http://...'}`); credentials come
/// from the environment, as for the server.
pub async fn remote_storage(toml_value: &str) -> Result<GenericRemoteStorage, InspectError> {
    let bad = |m: String| InspectError::RemoteConfig(m);
    let doc: toml::Table = toml::from_str(&format!("remote_storage = {toml_value}"))
        .map_err(|e| bad(crate::config::one_line(&e.to_string())))?;
    let Some(toml::Value::Table(table)) = doc.get("remote_storage").cloned() else {
        return Err(bad(
            "expected an inline table, such as {local_path='/x'}".into()
        ));
    };
    let config = RemoteStorageConfig::try_from(table).map_err(bad)?;
    Ok(GenericRemoteStorage::from_config(&config, 0).await?)
}

/// One layer of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    pub name: String,
    pub size: u64,
    pub generation: Generation,
    /// resident / evicted / not in metadata (a workdir); uploaded / MISSING / size N (remote storage).
    pub state: String,
}

/// The layers of a timeline directory: those its metadata names (resident or evicted), then layer files the
/// metadata does not name.
pub fn local_layers(dir: &Path) -> Result<(TimelineMetadata, Vec<LayerRow>), InspectError> {
    let meta = TimelineMetadata::load(dir)?;
    let mut rows = Vec::new();
    for name in &meta.layers {
        let on_disk = std::fs::metadata(dir.join(name)).ok();
        let (size, generation) = match meta.layer_meta.get(name) {
            Some(m) => (m.file_size, Generation(m.generation)),
            None => (on_disk.as_ref().map_or(0, |m| m.len()), Generation::NONE),
        };
        rows.push(LayerRow {
            name: name.clone(),
            size,
            generation,
            state: if on_disk.is_some() {
                "resident"
            } else {
                "evicted"
            }
            .into(),
        });
    }
    let mut strays: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map_err(|source| InspectError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            name.parse::<LayerName>().ok()?;
            (!meta.layers.contains(&name)).then(|| (name, e.metadata().map_or(0, |m| m.len())))
        })
        .collect();
    strays.sort();
    for (name, size) in strays {
        rows.push(LayerRow {
            name,
            size,
            generation: Generation::NONE,
            state: "not in metadata".into(),
        });
    }
    Ok((meta, rows))
}

/// The newest index of a timeline in remote storage (any generation), and its layers, each checked against
/// the bucket's listing: uploaded (present, with the size the index records), MISSING, or the size found.
pub async fn remote_layers(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
) -> Result<(Generation, IndexPart, Vec<LayerRow>), InspectError> {
    let (generation, index) =
        download_newest_index(storage, tenant, timeline, Generation(u32::MAX))
            .await?
            .ok_or(InspectError::NoIndex { tenant, timeline })?;
    let prefix = index::timeline_prefix(tenant, timeline);
    let listing = storage
        .list(Some(&prefix), ListingMode::NoDelimiter)
        .await?;
    let sizes: std::collections::HashMap<&str, u64> = listing
        .keys
        .iter()
        .map(|o| (o.key.as_str(), o.size))
        .collect();
    let rows = index
        .layer_metadata
        .iter()
        .map(|(name, m)| {
            let key = index::layer_path(tenant, timeline, name, m.generation);
            let state = match sizes.get(key.as_str()) {
                Some(&s) if s == m.file_size => "uploaded".to_string(),
                Some(&s) => format!("size {s}"),
                None => "MISSING".to_string(),
            };
            LayerRow {
                name: name.clone(),
                size: m.file_size,
                generation: m.generation,
                state,
            }
        })
        .collect();
    Ok((generation, index, rows))
}

/// A listing as a table: kind, level, size, generation, state, name; then a total.
pub fn write_rows(out: &mut impl Write, rows: &[LayerRow]) -> Result<(), InspectError> {
    writeln!(
        out,
        "{:<5} {:<5} {:>12} {:<8} {:<16} name",
        "kind", "level", "bytes", "gen", "state"
    )
    .map_err(out_err)?;
    let (mut images, mut l0, mut l1, mut bytes) = (0, 0, 0, 0u64);
    for row in rows {
        let (kind, level) = match row.name.parse::<LayerName>() {
            Ok(n) if !n.is_delta() => {
                images += 1;
                ("image", "-")
            }
            Ok(n) if crate::repository::tasks::plan::is_l0(&n) => {
                l0 += 1;
                ("delta", "L0")
            }
            Ok(_) => {
                l1 += 1;
                ("delta", "L1")
            }
            Err(_) => ("?", "?"),
        };
        bytes += row.size;
        writeln!(
            out,
            "{kind:<5} {level:<5} {:>12} {:<8} {:<16} {}",
            row.size, row.generation, row.state, row.name
        )
        .map_err(out_err)?;
    }
    writeln!(
        out,
        "{} layers: {images} image, {} delta (L0 {l0}, L1 {l1}); {bytes} bytes",
        rows.len(),
        l0 + l1
    )
    .map_err(out_err)
}

fn time_of(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// An index as a person reads it: where it came from, the timeline's metadata, a summary of its layers and
/// LSN-time samples, deletion and recovery marks.
pub fn write_index(
    out: &mut impl Write,
    from: &str,
    index: &IndexPart,
) -> Result<(), InspectError> {
    let m = &index.metadata;
    let line = |out: &mut dyn Write, k: &str, v: String| writeln!(out, "{k:<22}{v}");
    let mut lines = vec![
        ("index", from.to_string()),
        ("version", index.version.to_string()),
        ("disk_consistent_lsn", m.disk_consistent_lsn.to_string()),
        (
            "prev_record_lsn",
            m.prev_record_lsn.map_or("none".into(), |l| l.to_string()),
        ),
        (
            "ancestor",
            match m.ancestor_timeline {
                Some(a) => format!("{a} at {}", m.ancestor_lsn),
                None => "none".into(),
            },
        ),
        ("latest_gc_cutoff_lsn", m.latest_gc_cutoff_lsn.to_string()),
        ("initdb_lsn", m.initdb_lsn.to_string()),
        ("pg_version", m.pg_version.to_string()),
    ];
    let names: Vec<LayerName> = (index.layer_metadata.keys())
        .filter_map(|n| n.parse().ok())
        .collect();
    let images = names.iter().filter(|n| !n.is_delta()).count();
    let l0 = (names.iter())
        .filter(|n| crate::repository::tasks::plan::is_l0(n))
        .count();
    let bytes: u64 = index.layer_metadata.values().map(|l| l.file_size).sum();
    let mut gens: Vec<Generation> = index
        .layer_metadata
        .values()
        .map(|l| l.generation)
        .collect();
    gens.sort();
    gens.dedup();
    lines.push((
        "layers",
        format!(
            "{} ({images} image, {} delta of which {l0} L0), {bytes} bytes, generations {}",
            index.layer_metadata.len(),
            names.len() - images,
            gens.iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    ));
    lines.push((
        "lsn_times",
        match (index.lsn_times.first(), index.lsn_times.last()) {
            (Some((t0, l0)), Some((t1, l1))) => format!(
                "{} samples, {} at {l0} .. {} at {l1}",
                index.lsn_times.len(),
                time_of(*t0),
                time_of(*t1)
            ),
            _ => "none".into(),
        },
    ));
    if let Some(at) = &index.deleted_at {
        lines.push(("deleted_at", at.clone()));
    }
    if let Some(r) = &index.recovery {
        lines.push(("recovery", format!("{r:?}")));
    }
    for (k, v) in lines {
        line(out, k, v).map_err(out_err)?;
    }
    Ok(())
}

/// What [`verify_remote`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifyCounts {
    pub ok: u64,
    pub damaged: u64,
    /// Layer objects no index names (left for the deletion queue or by a crash): reported, not damage.
    pub unreferenced: u64,
}

/// Checks every timeline of the bucket (or of `tenant`, or one timeline): for the newest index, that it
/// parses and validates; for each layer it names, that the object exists with the recorded size and, once
/// downloaded into `scratch`, that its footer, index and every block check out; for the WAL archive, that
/// each object matches its manifest's size and sha256, and that the manifests chain (the recovery plan's
/// checks). One line per object: `ok <key>` or `DAMAGED <key>: <why>`.
pub async fn verify_remote(
    storage: &GenericRemoteStorage,
    tenant: Option<TenantId>,
    timeline: Option<TimelineId>,
    scratch: &Path,
    out: &mut impl Write,
) -> Result<VerifyCounts, InspectError> {
    let tenants = match tenant {
        Some(t) => vec![t],
        None => {
            let listing = storage
                .list(Some("tenants/"), ListingMode::WithDelimiter)
                .await?;
            let mut ids: Vec<TenantId> = (listing.prefixes.iter())
                .filter_map(|p| p.object_name().parse().ok())
                .collect();
            ids.sort();
            ids
        }
    };
    let mut counts = VerifyCounts::default();
    for t in tenants {
        let timelines = match timeline {
            Some(tl) => vec![tl],
            None => {
                let mut v = crate::repository::remote::remote_timelines(storage, t).await?;
                v.sort();
                v
            }
        };
        for tl in timelines {
            verify_timeline(storage, t, tl, scratch, out, &mut counts).await?;
        }
    }
    writeln!(
        out,
        "{} objects ok, {} damaged, {} unreferenced layer objects",
        counts.ok, counts.damaged, counts.unreferenced
    )
    .map_err(out_err)?;
    Ok(counts)
}

fn report(
    out: &mut impl Write,
    counts: &mut VerifyCounts,
    key: &str,
    result: Result<(), String>,
) -> Result<(), InspectError> {
    match result {
        Ok(()) => {
            counts.ok += 1;
            writeln!(out, "ok {key}")
        }
        Err(why) => {
            counts.damaged += 1;
            writeln!(out, "DAMAGED {key}: {why}")
        }
    }
    .map_err(out_err)
}

async fn verify_timeline(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
    scratch: &Path,
    out: &mut impl Write,
    counts: &mut VerifyCounts,
) -> Result<(), InspectError> {
    let prefix = index::timeline_prefix(tenant, timeline);
    let listing = storage
        .list(Some(&prefix), ListingMode::NoDelimiter)
        .await?;
    let index_key = format!("{prefix}{}", index::INDEX_PART_NAME);
    let newest = download_newest_index(storage, tenant, timeline, Generation(u32::MAX)).await;
    let mut referenced = std::collections::HashSet::new();
    match newest {
        Ok(Some((g, index))) => {
            report(out, counts, &format!("{index_key}{}", g.suffix()), Ok(()))?;
            for (name, m) in &index.layer_metadata {
                let key = index::layer_path(tenant, timeline, name, m.generation);
                referenced.insert(key.as_str().to_string());
                let found = listing.keys.iter().find(|o| o.key == key).map(|o| o.size);
                let result = match found {
                    None => Err("missing: the index names it, the bucket does not have it".into()),
                    Some(s) if s != m.file_size => {
                        Err(format!("{s} bytes, the index records {}", m.file_size))
                    }
                    Some(_) => {
                        verify_layer_object(storage, &key, name, m.file_size, scratch).await?
                    }
                };
                report(out, counts, key.as_str(), result)?;
            }
        }
        Ok(None) => writeln!(out, "no index {index_key}").map_err(out_err)?,
        Err(RemoteError::Permanent(why)) => report(out, counts, &index_key, Err(why))?,
        Err(e) => return Err(e.into()),
    }
    for o in &listing.keys {
        let name = o.key.object_name();
        let base = name.rsplit_once('-').map_or(name, |(b, _)| b);
        if (name.parse::<LayerName>().is_ok() || base.parse::<LayerName>().is_ok())
            && !referenced.contains(o.key.as_str())
        {
            counts.unreferenced += 1;
            writeln!(out, "unreferenced {}", o.key).map_err(out_err)?;
        }
    }
    verify_archive(storage, tenant, timeline, &prefix, out, counts).await
}

/// Downloads a layer object into `scratch` under its layer name and checks it as a load would, then every
/// block. Ok(Err(why)) for damage; Err for a failing store or scratch directory.
async fn verify_layer_object(
    storage: &GenericRemoteStorage,
    key: &crate::remote_storage::RemotePath,
    name: &str,
    size: u64,
    scratch: &Path,
) -> Result<Result<(), String>, InspectError> {
    let file = scratch.join(name);
    crate::repository::remote::download_to(storage, key, &file, size, None).await?;
    let checked = InspectedLayer::open(&file).and_then(|l| l.verify());
    let _ = std::fs::remove_file(&file);
    Ok(checked.map_err(|e| e.to_string()))
}

async fn verify_archive(
    storage: &GenericRemoteStorage,
    tenant: TenantId,
    timeline: TimelineId,
    prefix: &str,
    out: &mut impl Write,
    counts: &mut VerifyCounts,
) -> Result<(), InspectError> {
    let store = ArchiveStore::remote(storage.clone(), prefix);
    let names: Vec<String> = store.list().await?.into_iter().map(|o| o.name).collect();
    if names.is_empty() {
        return Ok(());
    }
    let seg_size = DEFAULT_WAL_SEGMENT_SIZE;
    // The base: its newest generation, its object against the manifest.
    let base_manifest = (names.iter())
        .filter_map(|n| match manifest::parse_object_name(n, seg_size) {
            Some((ArchiveObject::BaseManifest, g)) => Some((g, n.clone())),
            _ => None,
        })
        .max();
    let mut base: Option<BaseManifest> = None;
    if let Some((g, manifest_name)) = base_manifest {
        let (object, _) = manifest::base_objects(g);
        let result =
            match BaseManifest::from_json(&manifest_name, &store.get(&manifest_name).await?) {
                Ok(m) => {
                    let checked = check_object(&store, &object, m.size, m.sha256).await?;
                    base = Some(m);
                    checked
                }
                Err(e) => Err(e.to_string()),
            };
        report(out, counts, &store.describe(&object), result)?;
    }
    // Segments: each object against its manifest, then the chain across them.
    let (picked, orphans) = pick_objects(&names, seg_size);
    let mut found = Vec::new();
    for (manifest_object, data_object, data_present) in picked {
        let parsed =
            SegmentManifest::from_json(&manifest_object, &store.get(&manifest_object).await?);
        let result = match &parsed {
            Err(e) => Err(e.to_string()),
            Ok(_) if !data_present => {
                Err("missing: its manifest is here, the object is not".into())
            }
            Ok(m) => check_object(&store, &data_object, m.size, m.sha256).await?,
        };
        report(out, counts, &store.describe(&data_object), result)?;
        if let Ok(manifest) = parsed {
            found.push(Found {
                manifest_object,
                data_object,
                data_present,
                manifest,
            });
        }
    }
    let Some(first) = found
        .iter()
        .filter(|f| !f.manifest.partial)
        .map(|f| f.manifest.start_lsn)
        .min()
    else {
        return Ok(());
    };
    let start = match &base {
        Some(b) if b.lsn.segment_number(seg_size) == first.segment_number(seg_size) => {
            Start::Base {
                lsn: b.lsn,
                sha256: b.sha256,
            }
        }
        _ => Start::FromLsn(first),
    };
    let system_identifier = (base.as_ref().map(|b| b.system_identifier))
        .or_else(|| found.first().map(|f| f.manifest.system_identifier))
        .unwrap_or(0);
    let input = PlanInput {
        tenant_id: tenant,
        timeline_id: timeline,
        system_identifier,
        segments: found,
        orphans,
    };
    let chain = plan(&input, start, None)
        .map(|_| ())
        .map_err(|e| e.to_string());
    report(
        out,
        counts,
        &format!("{} (hash chain from {})", store.describe(""), start.lsn()),
        chain,
    )
}

/// An archive object's size and sha256 against its manifest's. Ok(Err(why)) for damage.
async fn check_object(
    store: &ArchiveStore,
    name: &str,
    size: u64,
    sha256: Sha256Digest,
) -> Result<Result<(), String>, InspectError> {
    let data = match store.get(name).await {
        Ok(d) => d,
        Err(RemoteError::NotFound(_)) => return Ok(Err("missing".into())),
        Err(e) => return Err(e.into()),
    };
    if data.len() as u64 != size {
        return Ok(Err(format!(
            "{} bytes, the manifest records {size}",
            data.len()
        )));
    }
    let got = Sha256Digest::of(&data);
    if got != sha256 {
        return Ok(Err(format!("sha256 {got}, the manifest records {sha256}")));
    }
    Ok(Ok(()))
}
