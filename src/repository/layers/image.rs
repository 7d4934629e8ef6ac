//! Image layer files: one whole value (a page image, a size, a directory: the bytes of a `Value::Image`) per
//! key of a key range, all at one LSN, sorted by key. Written once by [`ImageLayerWriter`] (image creation in
//! compaction), then only read through [`ImageLayer`], shared behind an `Arc`. A key of the range that has no
//! entry has no value at that LSN.
//!
//! Layout (docs/storage-format.md): one block per key holding the raw image bytes and a crc32c seeded with the
//! key; an index of `key ++ block offset` entries; the footer.
//!
//! Invariants: keys are strictly increasing and inside the key range (the writer refuses anything else, the
//! reader checks it at open); [`ImageLayer::get`] is one binary search and one read; every image read has its
//! crc checked, so a damaged file gives an error naming it, never a different image.

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

use super::file_format::{IndexCursor, LayerError, LayerFile, LayerFileWriter, LayerKind, id_key};
use crate::pg::Lsn;
use crate::repository::Key;
use crate::repository::layers::LayerName;

/// Writes an image layer in one streaming pass; see the module docs.
pub struct ImageLayerWriter {
    file: LayerFileWriter,
    key_range: Range<Key>,
    lsn: Lsn,
    last: Option<Key>,
    entry_count: usize,
}

impl ImageLayerWriter {
    /// Starts `<dir>/<name>.tmp` for the layer of this (non-empty, end-exclusive) key range at `lsn`.
    pub fn new(
        dir: &Path,
        key_range: Range<Key>,
        lsn: Lsn,
    ) -> Result<ImageLayerWriter, LayerError> {
        let name = LayerName::Image {
            key_range: key_range.clone(),
            lsn,
        };
        if key_range.is_empty() || lsn == Lsn::MAX {
            return Err(LayerError::InvalidRange {
                path: dir.join(format!("{name}.tmp")),
                msg: format!("empty key range {key_range:?} or lsn {lsn} without a successor"),
            });
        }
        Ok(ImageLayerWriter {
            file: LayerFileWriter::create(dir, name)?,
            key_range,
            lsn,
            last: None,
            entry_count: 0,
        })
    }

    /// Appends the image of `key`. Calls must be in strictly increasing key order, inside the key range.
    pub fn put(&mut self, key: Key, image: &[u8]) -> Result<(), LayerError> {
        if !self.key_range.contains(&key) {
            return Err(LayerError::OutOfRange {
                path: self.file.tmp_path().to_path_buf(),
                key,
                lsn: self.lsn,
                key_range: self.key_range.clone(),
                lsn_range: self.lsn..Lsn(self.lsn.0 + 1),
            });
        }
        if let Some(prev_key) = self.last
            && prev_key >= key
        {
            return Err(LayerError::OutOfOrder {
                path: self.file.tmp_path().to_path_buf(),
                key,
                lsn: self.lsn,
                prev_key,
                prev_lsn: self.lsn,
            });
        }
        self.file.append(&key.to_bytes(), image)?;
        self.last = Some(key);
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

    /// Makes the layer durable under its final name (fsync, rename, fsync of the directory) and opens it.
    pub fn finish(self) -> Result<ImageLayer, LayerError> {
        let path = self.file.finish()?;
        ImageLayer::open(&path)
    }
}

/// An open image layer file: footer and index in memory, images read on demand. `Send + Sync`.
#[derive(Debug)]
pub struct ImageLayer {
    file: LayerFile,
}

impl ImageLayer {
    /// Opens `path` and validates footer, format version, index crc and order, and the file name.
    pub fn open(path: &Path) -> Result<ImageLayer, LayerError> {
        Ok(ImageLayer {
            file: LayerFile::open(path, LayerKind::Image)?,
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

    pub fn lsn(&self) -> Lsn {
        self.file.footer().lsn_range.start
    }

    /// The image of `key`, if the layer has one. Reads only that image's block.
    pub fn get(&self, key: Key) -> Result<Option<Bytes>, LayerError> {
        let target = key.to_bytes();
        let mut cur = IndexCursor::new();
        let i = self.file.lower_bound(&mut cur, &target)?;
        if i >= self.entry_count() || self.file.id(&mut cur, i)? != target {
            return Ok(None);
        }
        match self.file.blocks(i..i + 1).next() {
            Some(r) => r.map(|(_, _, image)| Some(image)),
            None => Err(self.file.corrupt(format!("no block for index entry {i}"))),
        }
    }

    /// The images of the keys in `keys`, in key order, read sequentially.
    pub fn images_in(&self, keys: &Range<Key>) -> Result<Vec<(Key, Bytes)>, LayerError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cur = IndexCursor::new();
        let entries =
            (self.file).id_range(&mut cur, &keys.start.to_bytes(), &keys.end.to_bytes())?;
        (self.file.blocks(entries))
            .map(|r| r.map(|(_, id, image)| (id_key(&id), image)))
            .collect()
    }

    /// Whether the layer holds `key`, from the index alone.
    pub fn contains(&self, key: Key) -> Result<bool, LayerError> {
        let target = key.to_bytes();
        let mut cur = IndexCursor::new();
        let i = self.file.lower_bound(&mut cur, &target)?;
        Ok(i < self.entry_count() && self.file.id(&mut cur, i)? == target)
    }

    /// Every `(key, image)`, in key order (a scan: the index pages are not cached). Stops after the first
    /// error.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Key, Bytes), LayerError>> + '_ {
        (self.file.blocks_scan(0..self.entry_count()))
            .map(|r| r.map(|(_, id, image)| (id_key(&id), image)))
    }

    /// The keys, in order, from the index alone.
    pub fn keys(&self) -> Result<Vec<Key>, LayerError> {
        self.keys_of(0..self.entry_count())
    }

    /// The keys in `range`, in order, from the index alone.
    pub fn keys_in(&self, range: &Range<Key>) -> Result<Vec<Key>, LayerError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let mut cur = IndexCursor::new();
        let entries =
            (self.file).id_range(&mut cur, &range.start.to_bytes(), &range.end.to_bytes())?;
        self.keys_of(entries)
    }

    fn keys_of(&self, entries: Range<usize>) -> Result<Vec<Key>, LayerError> {
        Ok((self.file.ids(entries)?.iter())
            .map(|id| id_key(id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::repository::layers::tests::{arb_image, small_key};

    fn write(dir: &Path, model: &BTreeMap<Key, Bytes>) -> ImageLayer {
        let mut w = ImageLayerWriter::new(dir, small_key(0)..small_key(30), Lsn(0x10)).unwrap();
        for (k, v) in model {
            w.put(*k, v).expect("put");
        }
        assert_eq!(w.entry_count(), model.len());
        w.finish().expect("finish")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn written_images_read_back(
            m in prop::collection::btree_map(0u32..30, arb_image(), 0..40),
        ) {
            let model: BTreeMap<Key, Bytes> = m.into_iter().map(|(k, v)| (small_key(k), v)).collect();
            let dir = tempfile::tempdir().expect("tempdir");
            let layer = write(dir.path(), &model);
            prop_assert_eq!(layer.entry_count(), model.len());
            prop_assert_eq!(layer.lsn(), Lsn(0x10));
            let all = layer.iter().collect::<Result<Vec<_>, _>>().expect("iter");
            prop_assert_eq!(all, model.clone().into_iter().collect::<Vec<_>>());
            prop_assert_eq!(layer.keys().unwrap(), model.keys().copied().collect::<Vec<_>>());
            for k in 0..31 {
                let key = small_key(k);
                prop_assert_eq!(layer.get(key).expect("get"), model.get(&key).cloned());
            }
        }
    }

    #[test]
    fn misuse_is_refused_and_drop_removes_the_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = ImageLayerWriter::new(dir.path(), small_key(1)..small_key(5), Lsn(7)).unwrap();
        let tmp = w.tmp_path().to_path_buf();
        assert!(tmp.exists());
        w.put(small_key(2), b"a").unwrap();
        for k in [2, 1] {
            let e = w.put(small_key(k), b"b").unwrap_err();
            assert!(matches!(e, LayerError::OutOfOrder { .. }), "{e}");
            assert!(e.to_string().contains(&*tmp.to_string_lossy()), "{e}");
        }
        for k in [0, 5, 6] {
            let e = w.put(small_key(k), b"b").unwrap_err();
            assert!(matches!(e, LayerError::OutOfRange { .. }), "{e}");
        }
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let e = ImageLayerWriter::new(dir.path(), small_key(1)..small_key(1), Lsn(7)).err();
        assert!(matches!(e, Some(LayerError::InvalidRange { .. })));
        let e = ImageLayerWriter::new(dir.path(), small_key(1)..small_key(2), Lsn::MAX).err();
        assert!(matches!(e, Some(LayerError::InvalidRange { .. })));
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ImageLayer>();
    }

    #[test]
    fn a_renamed_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = write(
            dir.path(),
            &BTreeMap::from([(small_key(3), Bytes::from("x"))]),
        );
        let other = LayerName::Image {
            key_range: small_key(0)..small_key(30),
            lsn: Lsn(0x11),
        };
        let moved = dir.path().join(other.to_string());
        std::fs::rename(layer.path(), &moved).unwrap();
        let e = ImageLayer::open(&moved).unwrap_err();
        assert!(matches!(e, LayerError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&*moved.to_string_lossy()), "{e}");
    }
}
