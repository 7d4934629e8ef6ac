//! The read path: `get(key, lsn)` collects the versions of `key` at or below `lsn`, newest first, from the
//! in-memory and historic layers and then the ancestors below their branch points, until an image or a record
//! that initialises the page; then rebuilds the value with WAL redo.
//!
//! Layer choice at each step: among the layers that cover the key and start below the current end LSN, the
//! one reaching highest (an image wins a tie: it ends the search). Only the part of it above where another
//! layer takes over is read (above another delta's start, or above an image's LSN, since the image already
//! holds the versions at its LSN); the rest of it stays a candidate for the next steps. So an image inside a
//! delta's LSN range is used instead of the older deltas, and no version is read twice.

use std::sync::Arc;

use bytes::Bytes;

use super::Timeline;
use crate::pg::Lsn;
use crate::repository::layer_map::{Candidate, HistoricLayer, Resident, SearchLayer};
use crate::repository::layers::LayerError;
use crate::repository::layers::inmemory::InMemoryError;
use crate::repository::{Key, Value};
use crate::walredo::{RedoError, RedoRequest, WalRecord};

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("key {key} has no version at or below {lsn}")]
    KeyNotFound { key: Key, lsn: Lsn },
    #[error(
        "tried to read at {lsn}, below the GC cutoff {cutoff}; that version was garbage collected"
    )]
    BelowGcCutoff { lsn: Lsn, cutoff: Lsn },
    #[error("key {key} at {lsn}: records without a base image to apply them to")]
    NoBaseImage { key: Key, lsn: Lsn },
    #[error("key {key} is not a page, but has WAL records")]
    NotAPage { key: Key },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    InMemory(#[from] InMemoryError),
    #[error("redo of {key} at {lsn}: {source}")]
    Redo {
        key: Key,
        lsn: Lsn,
        source: RedoError,
    },
    /// The read needs a layer that is only in remote storage: [`Timeline::get`] downloads it and reads again.
    #[error("layer {} is not on the local disk", .0.name())]
    Evicted(HistoricLayer),
    /// A layer file's bytes failed a check ([`LayerError::is_damage`]): [`Timeline::get`] replaces it with the
    /// remote copy and reads again, or returns the error (it names the file).
    #[error("{}", .0.source)]
    Damaged(Box<Damage>),
}

/// A layer file that failed a check on a read.
#[derive(Debug)]
pub struct Damage {
    pub layer: HistoricLayer,
    pub file: Resident,
    pub source: LayerError,
}

/// The versions of `key` in `range` of one layer, newest first, down to the first that needs no older one.
fn read_layer(
    layer: &SearchLayer,
    key: Key,
    range: std::ops::Range<Lsn>,
) -> Result<Vec<(Lsn, Value)>, GetError> {
    Ok(match layer {
        SearchLayer::Memory(m) => m.get_values_newest_first(key, range)?,
        SearchLayer::Historic(h) => {
            let file = resident(h)?;
            match file.get_values_newest_first(key, range) {
                Ok(values) => values,
                Err(e) => return Err(layer_error(h, file, e)),
            }
        }
    })
}

/// A key's versions collected so far, newest first, and whether the oldest needs nothing older.
type Collected = (Vec<(Lsn, Value)>, bool);

/// Appends a layer's versions of one key (newest first) to what was collected for it, up to and including
/// the first that needs no older one.
fn push_newest_first(state: &mut Collected, values: Vec<(Lsn, Value)>) {
    for (lsn, value) in values {
        let init = value.will_init();
        state.0.push((lsn, value));
        if init {
            state.1 = true;
            return;
        }
    }
}

/// The error of a read of `file` (layer `h`): damage carries what a repair needs, anything else is as it is.
fn layer_error(h: &HistoricLayer, file: Resident, source: LayerError) -> GetError {
    if source.is_damage() {
        GetError::Damaged(Box::new(Damage {
            layer: h.clone(),
            file,
            source,
        }))
    } else {
        source.into()
    }
}

fn resident(h: &HistoricLayer) -> Result<Resident, GetError> {
    h.get_resident().ok_or_else(|| GetError::Evicted(h.clone()))
}

/// Downloads one read may trigger before it gives up (each layer at most once, unless evicted again at once).
const MAX_DOWNLOADS_PER_READ: usize = 1000;

impl Timeline {
    /// The value of `key` as of `lsn`. Layers that are only in remote storage are downloaded on the way.
    pub async fn get(&self, key: Key, lsn: Lsn) -> Result<Bytes, GetError> {
        let mut downloads = 0;
        let mut replaced: Vec<HistoricLayer> = Vec::new();
        loop {
            match self.get_local(key, lsn).await {
                Err(GetError::Evicted(layer)) if downloads < MAX_DOWNLOADS_PER_READ => {
                    layer.download().await?;
                    self.after_download(&layer);
                    downloads += 1;
                }
                Err(GetError::Damaged(d)) => {
                    // Each layer is replaced at most once per read: a remote copy that fails too is an error.
                    let again = replaced.iter().any(|l| l.same_as(&d.layer));
                    if again || !self.layer_damaged(&d.layer, &d.file, &d.source) {
                        return Err(GetError::Layer(d.source));
                    }
                    replaced.push(d.layer);
                }
                Ok(mut page) => {
                    self.simulated_corruption(key, &mut page);
                    return Ok(page);
                }
                r => return r,
            }
        }
    }

    /// The pages of the consecutive keys in `range` as of `lsn` (blocks of one relation fork, for backups):
    /// what [`get`](Self::get) returns for each, read layer by layer (one index search and sequential block
    /// reads per layer) instead of a layer walk and a read per key. Not through the page cache, which a
    /// backup would flush. A layer that is evicted or damaged sends its part of the range to `get`, key by
    /// key, which downloads or repairs it.
    pub async fn get_range(
        &self,
        range: std::ops::Range<Key>,
        lsn: Lsn,
    ) -> Result<Vec<Bytes>, GetError> {
        let cutoff = self.read_cutoff(lsn);
        if lsn < cutoff {
            return Err(GetError::BelowGcCutoff { lsn, cutoff });
        }
        let mut keys = Vec::new();
        let mut k = range.start;
        while k < range.end {
            keys.push(k);
            k = k.next();
        }
        let mut pages = Vec::with_capacity(keys.len());
        for part in self.uniform_parts(&keys) {
            let part = &keys[part];
            match self.collect_range(part, lsn) {
                Ok(collected) => {
                    for (&key, (values, complete)) in part.iter().zip(collected) {
                        if values.is_empty() {
                            return Err(GetError::KeyNotFound { key, lsn });
                        }
                        let mut page = self.materialize(key, lsn, values, complete).await?;
                        self.simulated_corruption(key, &mut page);
                        pages.push(page);
                    }
                }
                Err(GetError::Evicted(_) | GetError::Damaged(_)) => {
                    for &key in part {
                        pages.push(self.get(key, lsn).await?);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(pages)
    }

    /// The fault injection of the recovery tests (`PAGESERVER_FAULT_CORRUPT_PAGES`, failpoint.rs): a
    /// simulated pageserver bug flips a byte of the pages it names.
    fn simulated_corruption(&self, key: Key, page: &mut Bytes) {
        if crate::failpoint::corruption_configured() {
            crate::failpoint::corrupt_page(&self.timeline_id.to_string(), &key.to_string(), page);
        }
    }

    /// `keys` (sorted) cut where a historic layer of this timeline or an ancestor starts or ends, so that
    /// every key of a part has the same candidate layers (and so the same walk).
    fn uniform_parts(&self, keys: &[Key]) -> Vec<std::ops::Range<usize>> {
        let mut cuts = Vec::new();
        let mut timeline: &Timeline = self;
        loop {
            let map = timeline.layers.read().unwrap_or_else(|p| p.into_inner());
            for h in &map.historic {
                let r = h.name().key_range();
                cuts.push(keys.partition_point(|k| *k < r.start));
                cuts.push(keys.partition_point(|k| *k < r.end));
            }
            drop(map);
            match &timeline.ancestor {
                Some((ancestor, _)) => timeline = ancestor,
                None => break,
            }
        }
        cuts.push(0);
        cuts.push(keys.len());
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2).map(|w| w[0]..w[1]).collect()
    }

    /// [`collect_versions`](Self::collect_versions) of every key of `keys` (consecutive, with the same
    /// candidate layers) in one walk: each layer is read once for all keys still missing their base.
    fn collect_range(&self, keys: &[Key], lsn: Lsn) -> Result<Vec<Collected>, GetError> {
        let mut state: Vec<Collected> = vec![(Vec::new(), false); keys.len()];
        let (Some(&first), Some(&last)) = (keys.first(), keys.last()) else {
            return Ok(state);
        };
        let span = first..last.next();
        self.walk_layers(first, lsn, |layer, range| {
            match layer {
                SearchLayer::Memory(m) => {
                    for (i, &key) in keys.iter().enumerate() {
                        if !state[i].1 {
                            let values = m.get_values_newest_first(key, range.clone())?;
                            push_newest_first(&mut state[i], values);
                        }
                    }
                }
                SearchLayer::Historic(h) => {
                    let file = resident(h)?;
                    let found = match file.values_in(&span, &range) {
                        Ok(found) => found,
                        Err(e) => return Err(layer_error(h, file, e)),
                    };
                    // (key, LSN) order: each key's versions oldest first, taken newest first.
                    let mut found = found.into_iter().peekable();
                    while let Some((key, _, _)) = found.peek() {
                        let key = *key;
                        let mut versions = Vec::new();
                        while let Some((_, lsn, value)) = found.next_if(|(k, _, _)| *k == key) {
                            versions.push((lsn, value));
                        }
                        let Ok(i) = keys.binary_search(&key) else {
                            continue;
                        };
                        if !state[i].1 {
                            versions.reverse();
                            push_newest_first(&mut state[i], versions);
                        }
                    }
                }
            }
            Ok(state.iter().all(|(_, complete)| *complete))
        })?;
        Ok(state)
    }

    /// [`get`](Self::get) from resident layers only: `Evicted` names the first layer that is not.
    async fn get_local(&self, key: Key, lsn: Lsn) -> Result<Bytes, GetError> {
        let cutoff = self.read_cutoff(lsn);
        if lsn < cutoff {
            return Err(GetError::BelowGcCutoff { lsn, cutoff });
        }
        // The page cache is keyed by the newest version's LSN, which the layers' indexes tell without reading
        // any value: a cached page costs no value reads at all.
        let cache = &self.resources.page_cache;
        if let Some(newest) = self.newest_version_lsn(key, lsn)?
            && let Some(page) = cache.get(self.timeline_id, key, newest)
        {
            return Ok(page);
        }
        let (values, complete) = self.collect_versions(key, lsn)?;
        let Some(&(newest, _)) = values.first() else {
            return Err(GetError::KeyNotFound { key, lsn });
        };
        let page = self.materialize(key, lsn, values, complete).await?;
        cache.insert(self.timeline_id, key, newest, page.clone());
        Ok(page)
    }

    /// The GC cutoff that applies to a read at `lsn`: this timeline's, and below the branch point also the
    /// ancestor's (its GC keeps only the branch point itself readable for us).
    pub fn read_cutoff(&self, lsn: Lsn) -> Lsn {
        let mut cutoff = self.gc_cutoff();
        let mut timeline: &Timeline = self;
        while let Some((ancestor, branch_lsn)) = &timeline.ancestor {
            if lsn >= *branch_lsn {
                break;
            }
            cutoff = cutoff.max(ancestor.gc_cutoff());
            timeline = ancestor;
        }
        cutoff
    }

    /// Versions of `key` at or below `lsn`, newest first, through the ancestors; true if the oldest one
    /// needs nothing older (an image or an initialising record).
    pub(crate) fn collect_versions(
        &self,
        key: Key,
        lsn: Lsn,
    ) -> Result<(Vec<(Lsn, Value)>, bool), GetError> {
        let mut values: Vec<(Lsn, Value)> = Vec::new();
        let mut complete = false;
        self.walk_layers(key, lsn, |layer, range| {
            for (v_lsn, value) in read_layer(layer, key, range)? {
                let init = value.will_init();
                values.push((v_lsn, value));
                if init {
                    complete = true;
                    return Ok(true);
                }
            }
            Ok(false)
        })?;
        Ok((values, complete))
    }

    /// The LSN of the newest version of `key` at or below `lsn` (what `collect_versions` would return
    /// first), from the layers' indexes alone.
    fn newest_version_lsn(&self, key: Key, lsn: Lsn) -> Result<Option<Lsn>, GetError> {
        let mut newest = None;
        self.walk_layers(key, lsn, |layer, range| {
            newest = match layer {
                SearchLayer::Memory(m) => m.newest_lsn(key, range),
                SearchLayer::Historic(h) => {
                    let file = resident(h)?;
                    let found = file.newest_lsn(key, range);
                    found.map_err(|e| layer_error(h, file, e))?
                }
            };
            Ok(newest.is_some())
        })?;
        Ok(newest)
    }

    /// Visits the layers that hold `key`'s versions at or below `lsn`, newest part first, through the
    /// ancestors: `visit(layer, lsn range)` reads that part of the layer and says whether to stop.
    fn walk_layers(
        &self,
        key: Key,
        lsn: Lsn,
        mut visit: impl FnMut(&SearchLayer, std::ops::Range<Lsn>) -> Result<bool, GetError>,
    ) -> Result<(), GetError> {
        let mut timeline: &Timeline = self;
        let mut end = Lsn(lsn.0.saturating_add(1));
        loop {
            let mut candidates = timeline
                .layers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .search_candidates(key, end);
            while !candidates.is_empty() {
                let reach = |c: &Candidate| c.lsn_range.end.min(end);
                // The last of the highest-reaching (an image winning a tie), as max_by_key picks it.
                let mut best = 0;
                for (i, c) in candidates.iter().enumerate().skip(1) {
                    let b = &candidates[best];
                    if (reach(c), c.is_image) >= (reach(b), b.is_image) {
                        best = i;
                    }
                }
                let top = reach(&candidates[best]);
                // Read only down to where another layer takes over: the start of a delta, or just above an
                // image (which holds every version at or below its LSN).
                let mut floor = candidates[best].lsn_range.start;
                for (i, c) in candidates.iter().enumerate() {
                    let f = if c.is_image {
                        c.lsn_range.end
                    } else {
                        c.lsn_range.start
                    };
                    if i != best && f < top && f > floor {
                        floor = f;
                    }
                }
                if visit(&candidates[best].layer, floor..top)? {
                    return Ok(());
                }
                end = floor;
                // A layer read only in part stays a candidate for what lies below the floor.
                candidates.retain(|c| c.lsn_range.start < end);
            }
            match &timeline.ancestor {
                Some((ancestor, branch_lsn)) => {
                    end = end.min(Lsn(branch_lsn.0 + 1));
                    timeline = ancestor;
                }
                None => return Ok(()),
            }
        }
    }

    async fn materialize(
        &self,
        key: Key,
        lsn: Lsn,
        mut values: Vec<(Lsn, Value)>,
        complete: bool,
    ) -> Result<Bytes, GetError> {
        values.reverse();
        let mut iter = values.into_iter().peekable();
        let base = match iter.peek() {
            Some((_, Value::Image(_))) => match iter.next() {
                Some((_, Value::Image(img))) => Some(img),
                _ => None,
            },
            _ => None,
        };
        if !complete && base.is_none() {
            return Err(GetError::NoBaseImage { key, lsn });
        }
        let records: Vec<(Lsn, WalRecord)> = iter
            .map(|(l, v)| match v {
                Value::WalRecord(r) => (l, r),
                // An image never follows the oldest version: images end the search.
                Value::Image(img) => (
                    l,
                    WalRecord::Postgres {
                        will_init: true,
                        rec: img,
                    },
                ),
            })
            .collect();
        if records.is_empty() {
            return base.ok_or(GetError::NoBaseImage { key, lsn });
        }
        let page = key.page_id().ok_or(GetError::NotAPage { key })?;
        let redo: Arc<dyn crate::walredo::RedoManager> = self.resources.redo.clone();
        redo.redo(RedoRequest {
            pg_version: self.pg_version,
            page,
            base_image: base,
            records,
        })
        .await
        .map_err(|source| GetError::Redo { key, lsn, source })
    }

    /// Keys with a version at or below `lsn` in `range`, through the ancestors (for image layers); downloads
    /// the layers it needs.
    pub(crate) async fn keys_in_range(
        &self,
        range: &std::ops::Range<Key>,
        lsn: Lsn,
    ) -> Result<Vec<Key>, LayerError> {
        loop {
            match self.keys_in_range_local(range, lsn)? {
                Ok(keys) => return Ok(keys),
                Err(layer) => {
                    layer.download().await?;
                    self.after_download(&layer);
                }
            }
        }
    }

    /// The keys, or (inner error) the first layer needed that is not on the local disk.
    fn keys_in_range_local(
        &self,
        range: &std::ops::Range<Key>,
        lsn: Lsn,
    ) -> Result<Result<Vec<Key>, HistoricLayer>, LayerError> {
        let mut keys = std::collections::BTreeSet::new();
        let mut timeline: &Timeline = self;
        let mut limit = lsn;
        loop {
            let map = timeline.layers.read().unwrap_or_else(|p| p.into_inner());
            for h in &map.historic {
                let name = h.name();
                let overlaps =
                    name.key_range().start < range.end && range.start < name.key_range().end;
                if name.lsn_range().start <= limit && overlaps {
                    let Some(r) = h.get_resident() else {
                        return Ok(Err(h.clone()));
                    };
                    keys.extend(r.keys_in(range)?);
                }
            }
            let memory = map.open.iter().chain(map.frozen.iter().map(|f| &f.layer));
            for m in memory {
                if m.start_lsn() <= limit {
                    keys.extend(m.keys().into_iter().filter(|k| range.contains(k)));
                }
            }
            drop(map);
            match &timeline.ancestor {
                Some((a, branch)) => {
                    limit = limit.min(*branch);
                    timeline = a;
                }
                None => break,
            }
        }
        Ok(Ok(keys.into_iter().collect()))
    }
}
