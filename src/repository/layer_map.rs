//! The layers of one timeline: the open in-memory layer (takes writes), frozen in-memory layers waiting for
//! the flush (oldest first), and the historic layer files. Readers take a snapshot of the Arcs they need
//! under a short read lock and read without it; a layer file stays readable as long as a reader holds it,
//! even after GC or compaction removed it from the map.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::pg::Lsn;
use crate::repository::layers::delta::DeltaLayer;
use crate::repository::layers::image::ImageLayer;
use crate::repository::layers::inmemory::InMemoryLayer;
use crate::repository::layers::{LayerError, LayerName};
use crate::repository::{Key, Value};

#[derive(Clone)]
pub enum HistoricLayer {
    Delta(Arc<DeltaLayer>),
    Image(Arc<ImageLayer>),
}

impl HistoricLayer {
    pub fn name(&self) -> &LayerName {
        match self {
            HistoricLayer::Delta(d) => d.name(),
            HistoricLayer::Image(i) => i.name(),
        }
    }

    pub fn file_size(&self) -> u64 {
        match self {
            HistoricLayer::Delta(d) => d.file_size(),
            HistoricLayer::Image(i) => i.file_size(),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        match self {
            HistoricLayer::Delta(d) => d.path(),
            HistoricLayer::Image(i) => i.path(),
        }
    }

    /// Versions of `key` in `lsn_range`, oldest first.
    pub fn get_values(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Vec<(Lsn, Value)>, LayerError> {
        match self {
            HistoricLayer::Delta(d) => d.get_values(key, lsn_range),
            HistoricLayer::Image(i) => {
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
    pub fn newest_lsn(&self, key: Key, lsn_range: Range<Lsn>) -> Option<Lsn> {
        match self {
            HistoricLayer::Delta(d) => d.newest_lsn(key, lsn_range),
            HistoricLayer::Image(i) => {
                let lsn = i.name().lsn_range().start;
                (lsn_range.contains(&lsn) && i.contains(key)).then_some(lsn)
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
            HistoricLayer::Delta(d) => d.get_values_newest_first(key, lsn_range),
            HistoricLayer::Image(_) => self.get_values(key, lsn_range),
        }
    }

    /// Distinct keys of the layer within `range`.
    pub fn keys_in(&self, range: &Range<Key>) -> Vec<Key> {
        match self {
            HistoricLayer::Delta(d) => d.keys().filter(|k| range.contains(k)).collect(),
            HistoricLayer::Image(i) => i.keys().filter(|k| range.contains(k)).collect(),
        }
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
        matches!(self, SearchLayer::Historic(HistoricLayer::Image(_)))
    }
}

impl LayerMap {
    /// Layers that may hold versions of `key` below `end` (exclusive).
    pub fn search_candidates(&self, key: Key, end: Lsn) -> Vec<SearchLayer> {
        let mut out = Vec::new();
        if let Some(open) = &self.open
            && open.start_lsn() < end
        {
            out.push(SearchLayer::Memory(open.clone()));
        }
        for f in &self.frozen {
            if f.layer.start_lsn() < end {
                out.push(SearchLayer::Memory(f.layer.clone()));
            }
        }
        for h in &self.historic {
            let name = h.name();
            if name.key_range().contains(&key) && name.lsn_range().start < end {
                out.push(SearchLayer::Historic(h.clone()));
            }
        }
        out
    }

    pub fn historic_names(&self) -> Vec<LayerName> {
        self.historic.iter().map(|h| h.name().clone()).collect()
    }
}
