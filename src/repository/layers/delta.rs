//! Delta layer files: every value stored for the keys of a key range at the LSNs of an LSN range, as
//! `(key, lsn, Value)` entries sorted by (key, LSN). Written once by [`DeltaLayerWriter`] (the flush of an
//! in-memory layer, compaction), then only read through [`DeltaLayer`], shared behind an `Arc`.
//!
//! Layout (docs/storage-format.md): one block per entry holding the [`Value::encode`] bytes and a crc32c
//! seeded with the entry's key and LSN; an index of `key ++ lsn ++ block offset` entries; the footer.
//!
//! Invariants: entries are strictly increasing in (key, LSN) and inside the layer's ranges (the writer refuses
//! anything else, the reader checks it at open); all versions of a key are adjacent, oldest first, so
//! [`DeltaLayer::get_values`] is one binary search and one read of consecutive blocks; every value read has
//! its crc checked, so a damaged file gives an error naming it, never a different value.

use std::ops::Range;
use std::path::Path;

use super::file_format::{
    Block, IndexCursor, LayerError, LayerFile, LayerFileWriter, LayerKind, delta_id, id_key, id_lsn,
};
use crate::pg::Lsn;
use crate::repository::layers::LayerName;
use crate::repository::{Key, Value};

/// Writes a delta layer in one streaming pass; see the module docs.
pub struct DeltaLayerWriter {
    file: LayerFileWriter,
    key_range: Range<Key>,
    lsn_range: Range<Lsn>,
    last: Option<(Key, Lsn)>,
    entry_count: usize,
}

impl DeltaLayerWriter {
    /// Starts `<dir>/<name>.tmp` for the layer of these (non-empty, end-exclusive) ranges.
    pub fn new(
        dir: &Path,
        key_range: Range<Key>,
        lsn_range: Range<Lsn>,
    ) -> Result<DeltaLayerWriter, LayerError> {
        let name = LayerName::Delta {
            key_range: key_range.clone(),
            lsn_range: lsn_range.clone(),
        };
        if key_range.is_empty() || lsn_range.is_empty() {
            return Err(LayerError::InvalidRange {
                path: dir.join(format!("{name}.tmp")),
                msg: format!("empty key range {key_range:?} or lsn range {lsn_range:?}"),
            });
        }
        Ok(DeltaLayerWriter {
            file: LayerFileWriter::create(dir, name)?,
            key_range,
            lsn_range,
            last: None,
            entry_count: 0,
        })
    }

    /// Appends one value. Calls must be in strictly increasing (key, LSN) order, inside the layer's ranges.
    pub fn put(&mut self, key: Key, lsn: Lsn, value: &Value) -> Result<(), LayerError> {
        self.put_encoded(key, lsn, &value.encode())
    }

    /// [`put`](Self::put) of a value already encoded ([`Value::encode`]; the flush of an in-memory layer
    /// copies its bytes as they are).
    pub fn put_encoded(&mut self, key: Key, lsn: Lsn, encoded: &[u8]) -> Result<(), LayerError> {
        if !self.key_range.contains(&key) || !self.lsn_range.contains(&lsn) {
            return Err(LayerError::OutOfRange {
                path: self.file.tmp_path().to_path_buf(),
                key,
                lsn,
                key_range: self.key_range.clone(),
                lsn_range: self.lsn_range.clone(),
            });
        }
        if let Some((prev_key, prev_lsn)) = self.last
            && (prev_key, prev_lsn) >= (key, lsn)
        {
            return Err(LayerError::OutOfOrder {
                path: self.file.tmp_path().to_path_buf(),
                key,
                lsn,
                prev_key,
                prev_lsn,
            });
        }
        self.file.append(&delta_id(key, lsn), encoded)?;
        self.last = Some((key, lsn));
        self.entry_count += 1;
        Ok(())
    }

    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    /// The temp file being written.
    pub fn tmp_path(&self) -> &Path {
        self.file.tmp_path()
    }

    /// Like [`finish`](Self::finish), with the key range ending at `end` instead of the end given to `new`:
    /// for compaction, which learns where a layer ends only when the next one starts. `end` must be above
    /// every key written and inside the original range.
    pub fn finish_with_key_end(mut self, end: Key) -> Result<DeltaLayer, LayerError> {
        let below_last = self.last.is_some_and(|(k, _)| k >= end);
        if end <= self.key_range.start || end > self.key_range.end || below_last {
            return Err(LayerError::InvalidRange {
                path: self.file.tmp_path().to_path_buf(),
                msg: format!(
                    "key range end {end} is not above the last key nor within {:?}",
                    self.key_range
                ),
            });
        }
        self.file.set_key_end(end);
        self.key_range.end = end;
        self.finish()
    }

    /// Makes the layer durable under its final name (fsync, rename, fsync of the directory) and opens it.
    pub fn finish(self) -> Result<DeltaLayer, LayerError> {
        let path = self.file.finish()?;
        DeltaLayer::open(&path)
    }
}

/// An open delta layer file: footer and index in memory, values read on demand. `Send + Sync`.
#[derive(Debug)]
pub struct DeltaLayer {
    file: LayerFile,
}

impl DeltaLayer {
    /// Opens `path` and validates footer, format version, index crc and order, and the file name.
    pub fn open(path: &Path) -> Result<DeltaLayer, LayerError> {
        Ok(DeltaLayer {
            file: LayerFile::open(path, LayerKind::Delta)?,
        })
    }

    pub fn name(&self) -> &LayerName {
        self.file.name()
    }

    /// Another handle on the open file (positional reads; survives an unlink of the path).
    pub fn file_handle(&self) -> std::io::Result<std::fs::File> {
        self.file.file_handle()
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn file_size(&self) -> u64 {
        self.file.file_size()
    }

    pub fn entry_count(&self) -> usize {
        self.file.entry_count()
    }

    /// Every block's crc checked ([`LayerFile::verify_blocks`](super::file_format::LayerFile::verify_blocks)).
    pub fn verify(&self) -> Result<(), LayerError> {
        self.file.verify_blocks()
    }

    pub fn key_range(&self) -> &Range<Key> {
        &self.file.footer().key_range
    }

    pub fn lsn_range(&self) -> &Range<Lsn> {
        &self.file.footer().lsn_range
    }

    /// The values of `key` at LSNs in `lsn_range`, oldest first. Reads only those values' blocks.
    pub fn get_values(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Vec<(Lsn, Value)>, LayerError> {
        let mut cur = IndexCursor::new();
        let entries = self.entries(&mut cur, key, &lsn_range)?;
        (self.file.blocks(entries))
            .map(|r| r.and_then(|b| self.decode(b)).map(|(_, lsn, v)| (lsn, v)))
            .collect()
    }

    /// The values of `key` at LSNs in `lsn_range`, newest first, up to and including the first that needs no
    /// older one (an image or an initialising record): what a read needs, without reading further back.
    pub fn get_values_newest_first(
        &self,
        key: Key,
        lsn_range: Range<Lsn>,
    ) -> Result<Vec<(Lsn, Value)>, LayerError> {
        let mut out = Vec::new();
        let entries = self.entries(&mut IndexCursor::new(), key, &lsn_range)?;
        for r in self.file.blocks_rev(entries) {
            let (_, lsn, value) = self.decode(r?)?;
            let init = value.will_init();
            out.push((lsn, value));
            if init {
                break;
            }
        }
        Ok(out)
    }

    /// Every version of the keys in `keys` at LSNs in `lsn_range`, in (key, LSN) order: one index search,
    /// then sequential reads of the runs of wanted blocks (a range read of many keys).
    pub fn values_in(
        &self,
        keys: &Range<Key>,
        lsn_range: &Range<Lsn>,
    ) -> Result<Vec<(Key, Lsn, Value)>, LayerError> {
        if keys.is_empty() || lsn_range.is_empty() {
            return Ok(Vec::new());
        }
        let mut cur = IndexCursor::new();
        let Range { start: lo, end: hi } = self.key_entries(&mut cur, keys)?;
        let mut wanted = |i: usize| -> Result<bool, LayerError> {
            Ok(lsn_range.contains(&id_lsn(self.file.id(&mut cur, i)?)))
        };
        let mut out = Vec::new();
        let mut i = lo;
        while i < hi {
            if !wanted(i)? {
                i += 1;
                continue;
            }
            let start = i;
            while i < hi && wanted(i)? {
                i += 1;
            }
            for r in self.file.blocks(start..i) {
                out.push(self.decode(r?)?);
            }
        }
        Ok(out)
    }

    /// The LSN of `key`'s newest version in `lsn_range`, from the index alone.
    pub fn newest_lsn(&self, key: Key, lsn_range: Range<Lsn>) -> Result<Option<Lsn>, LayerError> {
        let mut cur = IndexCursor::new();
        let e = self.entries(&mut cur, key, &lsn_range)?;
        if e.is_empty() {
            return Ok(None);
        }
        Ok(Some(id_lsn(self.file.id(&mut cur, e.end - 1)?)))
    }

    /// The entry numbers of `key`'s versions in `lsn_range` (the index is in (key, LSN) order).
    fn entries(
        &self,
        cur: &mut IndexCursor,
        key: Key,
        lsn_range: &Range<Lsn>,
    ) -> Result<Range<usize>, LayerError> {
        if lsn_range.is_empty() {
            return Ok(0..0);
        }
        let (start, end) = (delta_id(key, lsn_range.start), delta_id(key, lsn_range.end));
        self.file.id_range(cur, &start, &end)
    }

    /// Every entry, in (key, LSN) order (a scan: the index pages are not cached). Stops after the first
    /// error.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Key, Lsn, Value), LayerError>> + '_ {
        (self.file.blocks_scan(0..self.entry_count())).map(|r| r.and_then(|b| self.decode(b)))
    }

    /// The distinct keys, in order, from the index alone.
    pub fn keys(&self) -> Result<Vec<Key>, LayerError> {
        self.distinct_keys(0..self.entry_count())
    }

    /// The distinct keys in `range`, in order, from the index alone.
    pub fn keys_in(&self, range: &Range<Key>) -> Result<Vec<Key>, LayerError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let entries = self.key_entries(&mut IndexCursor::new(), range)?;
        self.distinct_keys(entries)
    }

    /// The entries of the keys in `keys`, at every LSN.
    fn key_entries(
        &self,
        cur: &mut IndexCursor,
        keys: &Range<Key>,
    ) -> Result<Range<usize>, LayerError> {
        let (start, end) = (delta_id(keys.start, Lsn(0)), delta_id(keys.end, Lsn(0)));
        self.file.id_range(cur, &start, &end)
    }

    fn distinct_keys(&self, entries: Range<usize>) -> Result<Vec<Key>, LayerError> {
        let mut keys: Vec<Key> = Vec::new();
        for id in self.file.ids(entries)? {
            let key = id_key(&id);
            if keys.last() != Some(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    fn decode(&self, (_, id, payload): Block) -> Result<(Key, Lsn, Value), LayerError> {
        let (key, lsn) = (id_key(&id), id_lsn(&id));
        let value = Value::decode(&payload).map_err(|source| LayerError::Value {
            path: self.path().to_path_buf(),
            key,
            lsn,
            source,
        })?;
        Ok((key, lsn, value))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use bytes::Bytes;

    use super::*;
    use crate::repository::layers::tests::{arb_value, small_key};

    type Model = BTreeMap<(Key, Lsn), Value>;

    fn arb_entries() -> impl Strategy<Value = Model> {
        prop::collection::btree_map((0u32..12, 1u64..40), arb_value(), 0..60).prop_map(|m| {
            (m.into_iter())
                .map(|((k, l), v)| ((small_key(k), Lsn(l)), v))
                .collect()
        })
    }

    fn write(dir: &Path, model: &Model) -> DeltaLayer {
        let mut w = DeltaLayerWriter::new(dir, small_key(0)..small_key(12), Lsn(1)..Lsn(40))
            .expect("writer");
        for ((k, l), v) in model {
            w.put(*k, *l, v).expect("put");
        }
        assert_eq!(w.entry_count(), model.len());
        w.finish().expect("finish")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn written_entries_read_back(
            model in arb_entries(),
            queries in prop::collection::vec((0u32..13, 0u64..42, 0u64..42), 1..30),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let layer = write(dir.path(), &model);
            prop_assert_eq!(layer.entry_count(), model.len());
            let all = layer.iter().collect::<Result<Vec<_>, _>>().expect("iter");
            let expected: Vec<_> = model.iter().map(|((k, l), v)| (*k, *l, v.clone())).collect();
            prop_assert_eq!(all, expected);
            let mut keys: Vec<Key> = model.keys().map(|(k, _)| *k).collect();
            keys.dedup();
            prop_assert_eq!(layer.keys().unwrap(), keys);
            for (k, a, b) in queries {
                let key = small_key(k);
                let got = layer.get_values(key, Lsn(a)..Lsn(b)).expect("get_values");
                let want: Vec<_> = if a < b {
                    model.range((key, Lsn(a))..(key, Lsn(b))).map(|((_, l), v)| (*l, v.clone())).collect()
                } else {
                    Vec::new()
                };
                // Newest first, down to the first value that needs no older one.
                let mut newest_first = Vec::new();
                for (l, v) in want.iter().rev() {
                    newest_first.push((*l, v.clone()));
                    if v.will_init() {
                        break;
                    }
                }
                let got_rev = layer.get_values_newest_first(key, Lsn(a)..Lsn(b)).expect("newest first");
                prop_assert_eq!(got_rev, newest_first);
                prop_assert_eq!(got, want);
            }
            let reopened = DeltaLayer::open(layer.path()).expect("reopen");
            prop_assert_eq!(reopened.file_size(), std::fs::metadata(layer.path()).expect("stat").len());
            prop_assert_eq!(reopened.name(), layer.name());
        }
    }

    #[test]
    fn misuse_is_refused_and_drop_removes_the_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = Value::Image(Bytes::from_static(b"x"));
        let mut w = DeltaLayerWriter::new(dir.path(), small_key(1)..small_key(5), Lsn(10)..Lsn(20))
            .unwrap();
        let tmp = w.tmp_path().to_path_buf();
        assert!(tmp.exists() && tmp.to_string_lossy().ends_with(".tmp"));
        w.put(small_key(2), Lsn(15), &v).unwrap();
        for (k, l) in [(2, 15), (2, 14), (1, 19)] {
            let e = w.put(small_key(k), Lsn(l), &v).unwrap_err();
            assert!(matches!(e, LayerError::OutOfOrder { .. }), "{e}");
            assert!(e.to_string().contains(&*tmp.to_string_lossy()), "{e}");
        }
        for (k, l) in [(0, 15), (5, 15), (3, 9), (3, 20)] {
            let e = w.put(small_key(k), Lsn(l), &v).unwrap_err();
            assert!(matches!(e, LayerError::OutOfRange { .. }), "{e}");
        }
        w.put(small_key(2), Lsn(16), &v).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        for (keys, lsns) in [((1, 1), (10, 20)), ((1, 5), (20, 20)), ((5, 1), (10, 20))] {
            let e = DeltaLayerWriter::new(
                dir.path(),
                small_key(keys.0)..small_key(keys.1),
                Lsn(lsns.0)..Lsn(lsns.1),
            )
            .err()
            .unwrap();
            assert!(matches!(e, LayerError::InvalidRange { .. }), "{e}");
        }
    }

    #[test]
    fn finish_leaves_only_the_final_file_and_an_empty_layer_is_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = write(dir.path(), &Model::new());
        assert_eq!(layer.entry_count(), 0);
        assert_eq!(layer.iter().count(), 0);
        let names: Vec<_> = (std::fs::read_dir(dir.path()).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![layer.name().to_string()]);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<DeltaLayer>();
    }

    #[test]
    fn a_delta_file_is_not_an_image_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = write(dir.path(), &Model::new());
        let e = crate::repository::layers::ImageLayer::open(layer.path()).unwrap_err();
        assert!(matches!(e, LayerError::BadMagic { .. }), "{e}");
    }
}
