//! The layers of one timeline: the open in-memory layer (takes writes), frozen in-memory layers waiting for
//! the flush (oldest first), and the historic layer files. Readers take a snapshot of the Arcs they need
//! under a short read lock and read without it; a layer file stays readable as long as a reader holds it,
//! even after GC or compaction removed it from the map.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::pg::Lsn;
use crate::remote_storage::index::Generation;
use crate::remote_storage::{GenericRemoteStorage, RemotePath};
use crate::repository::layers::delta::DeltaLayer;
use crate::repository::layers::image::ImageLayer;
use crate::repository::layers::inmemory::InMemoryLayer;
use crate::repository::layers::{LayerError, LayerName};
use crate::repository::{Key, Value};

/// An open layer file.
#[derive(Clone)]
pub enum Resident {
    Delta(Arc<DeltaLayer>),
    Image(Arc<ImageLayer>),
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Resident")
            .field(&self.name().to_string())
            .finish()
    }
}

impl Resident {
    pub fn name(&self) -> &LayerName {
        match self {
            Resident::Delta(d) => d.name(),
            Resident::Image(i) => i.name(),
        }
    }

    pub fn file_size(&self) -> u64 {
        match self {
            Resident::Delta(d) => d.file_size(),
            Resident::Image(i) => i.file_size(),
        }
    }

    /// A second handle on the open file: readable even after the file was unlinked (a layer compacted away
    /// while its upload waits).
    pub fn file_handle(&self) -> std::io::Result<std::fs::File> {
        match self {
            Resident::Delta(d) => d.file_handle(),
            Resident::Image(i) => i.file_handle(),
        }
    }

    /// Versions of `key` in `lsn_range`, oldest first.
    pub fn get_values(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Vec<(Lsn, Value)>, LayerError> {
        match self {
            Resident::Delta(d) => d.get_values(key, lsn_range),
            Resident::Image(i) => {
                let lsn = i.name().lsn_range().start;
                if !lsn_range.contains(&lsn) {
                    return Ok(vec![]);
                }
                Ok(i.get(key)?
                    .map(|b: Bytes| (lsn, Value::Image(b)))
                    .into_iter()
                    .collect())
            }
        }
    }

    /// The LSN of `key`'s newest version in `lsn_range`, from the layer's index alone.
    pub fn newest_lsn(&self, key: Key, lsn_range: Range<Lsn>) -> Result<Option<Lsn>, LayerError> {
        match self {
            Resident::Delta(d) => d.newest_lsn(key, lsn_range),
            Resident::Image(i) => {
                let lsn = i.name().lsn_range().start;
                Ok((lsn_range.contains(&lsn) && i.contains(key)?).then_some(lsn))
            }
        }
    }

    /// [`get_values`](Self::get_values) newest first, stopping after the first value that needs no older one.
    pub fn get_values_newest_first(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Vec<(Lsn, Value)>, LayerError> {
        match self {
            Resident::Delta(d) => d.get_values_newest_first(key, lsn_range),
            Resident::Image(_) => self.get_values(key, lsn_range),
        }
    }

    /// Every version of the keys in `keys` at LSNs in `lsn_range`, in (key, LSN) order, read sequentially.
    pub fn values_in(
        &self,
        keys: &Range<Key>,
        lsn_range: &Range<Lsn>,
    ) -> Result<Vec<(Key, Lsn, Value)>, LayerError> {
        match self {
            Resident::Delta(d) => d.values_in(keys, lsn_range),
            Resident::Image(i) => {
                let lsn = i.name().lsn_range().start;
                if !lsn_range.contains(&lsn) {
                    return Ok(Vec::new());
                }
                Ok((i.images_in(keys)?.into_iter())
                    .map(|(k, b)| (k, lsn, Value::Image(b)))
                    .collect())
            }
        }
    }

    /// Every byte of the file checked against its crcs.
    pub fn verify(&self) -> Result<(), LayerError> {
        match self {
            Resident::Delta(d) => d.verify(),
            Resident::Image(i) => i.verify(),
        }
    }

    /// The same open file (not just the same layer name).
    pub fn same_file(&self, other: &Resident) -> bool {
        match (self, other) {
            (Resident::Delta(a), Resident::Delta(b)) => Arc::ptr_eq(a, b),
            (Resident::Image(a), Resident::Image(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Distinct keys of the layer within `range`.
    pub fn keys_in(&self, range: &Range<Key>) -> Result<Vec<Key>, LayerError> {
        match self {
            Resident::Delta(d) => d.keys_in(range),
            Resident::Image(i) => i.keys_in(range),
        }
    }
}

/// A historic layer of a timeline: known by name, size and generation whether or not its file is on the
/// local disk. Resident: open, readable now. Evicted: only in remote storage, downloaded on first use
/// (`repository::remote`). Only a layer that is safely in remote storage may be evicted.
#[derive(Clone)]
pub struct HistoricLayer(Arc<LayerState>);

pub struct LayerState {
    name: LayerName,
    file_size: u64,
    generation: Generation,
    path: std::path::PathBuf,
    resident: RwLock<Option<Resident>>,
    /// In remote storage (uploaded, or named by the index it was attached from).
    uploaded: AtomicBool,
    /// The open file failed a check (reported once; cleared when a new copy is opened).
    damaged: AtomicBool,
    /// Unix milliseconds of the last read, for eviction.
    last_access: AtomicU64,
    /// Where to download it from when evicted; None without remote storage.
    pub(crate) remote: Option<RemoteLayer>,
    /// One download at a time.
    pub(crate) download: tokio::sync::Mutex<()>,
}

/// The remote copy of a layer.
#[derive(Clone)]
pub struct RemoteLayer {
    pub storage: GenericRemoteStorage,
    pub path: RemotePath,
}

impl std::fmt::Debug for HistoricLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoricLayer")
            .field("name", &self.0.name.to_string())
            .field("resident", &self.is_resident())
            .finish()
    }
}

/// Wall-clock milliseconds from the kernel's coarse clock (updated every tick, a few ms): a read marks every
/// layer it visits as used, and eviction only orders layers by it, so the tick's resolution is enough and
/// a read does not pay a full clock read per layer.
fn now_millis() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE).map_or(0, |t| {
        t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000
    })
}

impl HistoricLayer {
    /// A layer just written (or found on disk) and open.
    pub fn resident(
        layer: Resident,
        generation: Generation,
        remote: Option<RemoteLayer>,
        uploaded: bool,
    ) -> HistoricLayer {
        let path = match &layer {
            Resident::Delta(d) => d.path().to_path_buf(),
            Resident::Image(i) => i.path().to_path_buf(),
        };
        HistoricLayer(Arc::new(LayerState {
            name: layer.name().clone(),
            file_size: layer.file_size(),
            generation,
            path,
            resident: RwLock::new(Some(layer)),
            uploaded: AtomicBool::new(uploaded),
            damaged: AtomicBool::new(false),
            last_access: AtomicU64::new(now_millis()),
            remote,
            download: tokio::sync::Mutex::new(()),
        }))
    }

    /// A layer in remote storage only; its file would be `path`.
    pub fn evicted(
        name: LayerName,
        file_size: u64,
        generation: Generation,
        path: std::path::PathBuf,
        remote: Option<RemoteLayer>,
    ) -> HistoricLayer {
        HistoricLayer(Arc::new(LayerState {
            name,
            file_size,
            generation,
            path,
            resident: RwLock::new(None),
            uploaded: AtomicBool::new(true),
            damaged: AtomicBool::new(false),
            last_access: AtomicU64::new(0),
            remote,
            download: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn name(&self) -> &LayerName {
        &self.0.name
    }

    pub fn file_size(&self) -> u64 {
        self.0.file_size
    }

    pub fn generation(&self) -> Generation {
        self.0.generation
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0.path
    }

    pub(crate) fn state(&self) -> &LayerState {
        &self.0
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<LayerState> {
        Arc::downgrade(&self.0)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<LayerState>) -> Option<HistoricLayer> {
        weak.upgrade().map(HistoricLayer)
    }

    /// The same layer (not just the same name).
    pub fn same_as(&self, other: &HistoricLayer) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub fn is_resident(&self) -> bool {
        self.0
            .resident
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub fn is_uploaded(&self) -> bool {
        self.0.uploaded.load(Ordering::Acquire)
    }

    pub fn set_uploaded(&self) {
        self.0.uploaded.store(true, Ordering::Release);
    }

    pub fn last_access_millis(&self) -> u64 {
        self.0.last_access.load(Ordering::Relaxed)
    }

    /// The open layer, if resident; counts as a use for eviction.
    pub fn get_resident(&self) -> Option<Resident> {
        let r = self
            .0
            .resident
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if r.is_some() {
            // Stored only when it moved: concurrent readers of a layer then do not write its line each time.
            let now = now_millis();
            if self.0.last_access.load(Ordering::Relaxed) != now {
                self.0.last_access.store(now, Ordering::Relaxed);
            }
        }
        r
    }

    pub(crate) fn set_resident(&self, layer: Resident) {
        *self.0.resident.write().unwrap_or_else(|p| p.into_inner()) = Some(layer);
        self.0.damaged.store(false, Ordering::Release);
        self.0.last_access.store(now_millis(), Ordering::Relaxed);
    }

    /// Marks the open file damaged; true the first time (so that it is reported once).
    pub(crate) fn mark_damaged(&self) -> bool {
        !self.0.damaged.swap(true, Ordering::AcqRel)
    }

    /// After `file` failed a check: if remote storage holds the layer, drops `file` (unless another reader
    /// already replaced it) and removes it from the disk, so that the next read downloads the remote copy;
    /// true then. Without a remote copy the file stays (reads that need it keep failing, nothing is served
    /// from it) and this returns false.
    pub(crate) fn discard_damaged(&self, file: &Resident) -> bool {
        if !self.is_uploaded() || self.0.remote.is_none() {
            return false;
        }
        let mut guard = self.0.resident.write().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|r| r.same_file(file)) {
            *guard = None;
            drop(guard);
            let _ = std::fs::remove_file(&self.0.path);
        }
        true
    }

    /// Drops the local file of an uploaded, resident layer; readers holding it keep reading their open
    /// handle. Returns the bytes freed (0 if the layer is not uploaded or not resident).
    pub fn evict(&self) -> u64 {
        if !self.is_uploaded() || self.0.remote.is_none() {
            return 0;
        }
        let mut guard = self.0.resident.write().unwrap_or_else(|p| p.into_inner());
        if guard.take().is_none() {
            return 0;
        }
        drop(guard);
        let _ = std::fs::remove_file(&self.0.path);
        crate::metrics::LAYER_EVICTIONS.inc();
        self.0.file_size
    }
}

/// A frozen in-memory layer and the timeline position when it was frozen.
#[derive(Clone)]
pub struct Frozen {
    pub layer: Arc<InMemoryLayer>,
    /// last_record_lsn when frozen: the layer covers start..last_lsn+1.
    pub last_lsn: Lsn,
    pub prev_lsn: Option<Lsn>,
}

#[derive(Default)]
pub struct LayerMap {
    pub open: Option<Arc<InMemoryLayer>>,
    pub frozen: VecDeque<Frozen>,
    pub historic: Vec<HistoricLayer>,
}

/// A layer as the read path sees it.
#[derive(Clone)]
pub enum SearchLayer {
    Memory(Arc<InMemoryLayer>),
    Historic(HistoricLayer),
}

impl SearchLayer {
    pub fn lsn_range(&self) -> Range<Lsn> {
        match self {
            SearchLayer::Memory(m) => m.start_lsn()..m.end_lsn().unwrap_or(Lsn::MAX),
            SearchLayer::Historic(h) => h.name().lsn_range(),
        }
    }

    pub fn is_image(&self) -> bool {
        matches!(self, SearchLayer::Historic(h) if !h.name().is_delta())
    }
}

/// A layer a read may visit, with what the walk compares copied out of it, so that choosing the next layer
/// reads one array instead of following a pointer into every layer for each comparison.
pub struct Candidate {
    pub lsn_range: Range<Lsn>,
    pub is_image: bool,
    pub layer: SearchLayer,
}

impl Candidate {
    fn new(layer: SearchLayer) -> Candidate {
        Candidate {
            lsn_range: layer.lsn_range(),
            is_image: layer.is_image(),
            layer,
        }
    }
}

impl LayerMap {
    /// Layers that may hold versions of `key` below `end` (exclusive).
    pub fn search_candidates(&self, key: Key, end: Lsn) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let Some(open) = &self.open
            && open.start_lsn() < end
        {
            out.push(Candidate::new(SearchLayer::Memory(open.clone())));
        }
        for f in &self.frozen {
            if f.layer.start_lsn() < end {
                out.push(Candidate::new(SearchLayer::Memory(f.layer.clone())));
            }
        }
        for h in &self.historic {
            let name = h.name();
            if name.key_range().contains(&key) && name.lsn_range().start < end {
                out.push(Candidate::new(SearchLayer::Historic(h.clone())));
            }
        }
        out
    }

    pub fn historic_names(&self) -> Vec<LayerName> {
        self.historic.iter().map(|h| h.name().clone()).collect()
    }
}
