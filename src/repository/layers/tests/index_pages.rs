//! Layers whose index spans many index pages (read on demand, through the shared index cache): every search
//! at and around page boundaries against a model, and damage to an index page after the file was opened.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::{pattern, small_key};
use crate::pg::Lsn;
use crate::repository::layers::LayerError;
use crate::repository::layers::file_format::{
    DELTA_INDEX_ENTRY_SIZE, FOOTER_SIZE, INDEX_PAGE_ENTRIES,
};
use crate::repository::layers::{DeltaLayer, DeltaLayerWriter, ImageLayer, ImageLayerWriter};
use crate::repository::{Key, Value};
use crate::walredo::WalRecord;

/// Keys 0, 2, 4, ... (odd keys are absent), key `2k` with `k % 4 + 1` versions at LSNs 0x100 + 8·j + k % 3
/// (an image, a record, a record that initialises the page, a record): about 2.5 versions per key, so pages
/// end at every position within a key's run.
fn delta_model(keys: u32) -> BTreeMap<(Key, Lsn), Value> {
    let mut model = BTreeMap::new();
    for k in 0..keys {
        for j in 0..(k % 4 + 1) {
            let lsn = Lsn(0x100 + 8 * u64::from(j) + u64::from(k % 3));
            let bytes = pattern(u64::from(k) << 8 | u64::from(j), (k % 5) as usize);
            let value = match j {
                0 => Value::Image(bytes),
                _ => Value::WalRecord(WalRecord::Postgres {
                    will_init: j == 2,
                    rec: bytes,
                }),
            };
            model.insert((small_key(2 * k), lsn), value);
        }
    }
    model
}

/// The model's versions (oldest first) as a newest-first read returns them: newest first, down to the first
/// value that needs no older one.
fn newest_first(versions: &[(Lsn, Value)]) -> Vec<(Lsn, Value)> {
    let mut out = Vec::new();
    for (lsn, value) in versions.iter().rev() {
        out.push((*lsn, value.clone()));
        if value.will_init() {
            break;
        }
    }
    out
}

fn write_delta(
    dir: &std::path::Path,
    model: &BTreeMap<(Key, Lsn), Value>,
    keys: u32,
) -> DeltaLayer {
    let mut w = DeltaLayerWriter::new(
        dir,
        small_key(0)..small_key(2 * keys),
        Lsn(0x100)..Lsn(0x200),
    )
    .expect("delta writer");
    for ((key, lsn), value) in model {
        w.put(*key, *lsn, value).expect("put");
    }
    w.finish().expect("finish")
}

#[test]
fn delta_searches_across_index_pages_equal_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let keys = 1000;
    let model = delta_model(keys);
    assert!(
        model.len() > 8 * INDEX_PAGE_ENTRIES,
        "{} entries",
        model.len()
    );
    let layer = write_delta(dir.path(), &model, keys);
    assert_eq!(layer.entry_count(), model.len());
    let ranges = [
        Lsn(0)..Lsn::MAX,
        Lsn(0x100)..Lsn(0x109),
        Lsn(0x10A)..Lsn(0x200),
        Lsn(0x300)..Lsn(0x400),
    ];
    for blk in 0..2 * keys + 2 {
        let key = small_key(blk);
        for range in &ranges {
            let want: Vec<(Lsn, Value)> = (model.range((key, range.start)..(key, range.end)))
                .map(|((_, l), v)| (*l, v.clone()))
                .collect();
            assert_eq!(
                layer.get_values(key, range.clone()).unwrap(),
                want,
                "{key} {range:?}"
            );
            assert_eq!(
                layer.newest_lsn(key, range.clone()).unwrap(),
                want.last().map(|(l, _)| *l),
                "{key} {range:?}"
            );
            assert_eq!(
                layer.get_values_newest_first(key, range.clone()).unwrap(),
                newest_first(&want)
            );
        }
    }
    // Range reads whose ends fall on every position of a page.
    for start in (0..2 * keys).step_by(37) {
        let span = small_key(start)..small_key(start + 301);
        let want: Vec<(Key, Lsn, Value)> = (model.iter())
            .filter(|((k, _), _)| span.contains(k))
            .map(|((k, l), v)| (*k, *l, v.clone()))
            .collect();
        assert_eq!(layer.values_in(&span, &(Lsn(0)..Lsn::MAX)).unwrap(), want);
        let mut want_keys: Vec<Key> = want.iter().map(|(k, _, _)| *k).collect();
        want_keys.dedup();
        assert_eq!(layer.keys_in(&span).unwrap(), want_keys);
    }
    let all: Vec<(Key, Lsn, Value)> = layer.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), model.len());
    assert!(
        all.iter()
            .zip(&model)
            .all(|(a, ((k, l), v))| a.0 == *k && a.1 == *l && &a.2 == v)
    );
}

/// A key with hundreds of versions of 1 KiB between keys with few: a walk newest first reads them in
/// growing chunks (8 KiB first, then twice as much each time) and returns every one, in order, down to the
/// first that initialises the page; the other keys' searches end at the right entry.
#[test]
fn a_long_run_of_versions_is_read_newest_first_in_growing_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    for k in [1, 2, 3] {
        let versions = if k == 2 { 600 } else { 3 };
        for j in 0..versions {
            let rec = pattern(u64::from(k) << 16 | j, 1024 + (j % 7) as usize);
            let value = Value::WalRecord(WalRecord::Postgres {
                will_init: j == 0 || j == 100,
                rec,
            });
            model.insert((small_key(k), Lsn(0x1000 + 8 * j)), value);
        }
    }
    let mut w = DeltaLayerWriter::new(
        dir.path(),
        small_key(0)..small_key(10),
        Lsn(0x1000)..Lsn(0x3000),
    )
    .expect("delta writer");
    for ((key, lsn), value) in &model {
        w.put(*key, *lsn, value).expect("put");
    }
    let layer = w.finish().expect("finish");
    for k in 0..5 {
        let key = small_key(k);
        for range in [
            Lsn(0)..Lsn::MAX,
            Lsn(0x1000 + 8 * 50)..Lsn(0x1000 + 8 * 450),
        ] {
            let want: Vec<(Lsn, Value)> = (model.range((key, range.start)..(key, range.end)))
                .map(|((_, l), v)| (*l, v.clone()))
                .collect();
            assert_eq!(layer.get_values(key, range.clone()).unwrap(), want);
            assert_eq!(
                layer.get_values_newest_first(key, range.clone()).unwrap(),
                newest_first(&want),
                "{key} {range:?}"
            );
        }
    }
    // Key 2 over the whole range: 500 versions newest first, down to the one at j = 100 (about 500 KiB).
    assert_eq!(
        (layer
            .get_values_newest_first(small_key(2), Lsn(0)..Lsn::MAX)
            .unwrap())
        .len(),
        500
    );
}

#[test]
fn image_searches_across_index_pages_equal_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let model: BTreeMap<Key, Bytes> = (0..3000u32)
        .map(|k| (small_key(2 * k), pattern(u64::from(k), (k % 7) as usize)))
        .collect();
    let mut w = ImageLayerWriter::new(dir.path(), small_key(0)..small_key(6000), Lsn(0x300))
        .expect("image writer");
    for (key, image) in &model {
        w.put(*key, image).expect("put");
    }
    let layer: ImageLayer = w.finish().expect("finish");
    for blk in 0..6002 {
        let key = small_key(blk);
        assert_eq!(layer.get(key).unwrap(), model.get(&key).cloned(), "{key}");
        assert_eq!(layer.contains(key).unwrap(), model.contains_key(&key));
    }
    for start in (0..6000).step_by(113) {
        let span = small_key(start)..small_key(start + 700);
        let want: Vec<(Key, Bytes)> = model
            .range(span.clone())
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        assert_eq!(layer.images_in(&span).unwrap(), want);
        let want_keys: Vec<Key> = want.iter().map(|(k, _)| *k).collect();
        assert_eq!(layer.keys_in(&span).unwrap(), want_keys);
    }
}

/// A byte of index page 5 changed after the file was opened (and checked): reads that need that page fail
/// with a checksum error naming the page and the file; reads of other pages still answer correctly.
#[test]
fn an_index_page_damaged_after_open_is_an_error_not_a_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let keys = 1000;
    let model = delta_model(keys);
    let path = write_delta(dir.path(), &model, keys).path().to_path_buf();
    let layer = DeltaLayer::open(&path).unwrap();
    let page_bytes = (INDEX_PAGE_ENTRIES * DELTA_INDEX_ENTRY_SIZE) as u64;
    let index_len = (model.len() * DELTA_INDEX_ENTRY_SIZE) as u64;
    let index_offset = layer.file_size() - FOOTER_SIZE as u64 - index_len;
    // Flip the low byte of the LSN of page 5's 10th entry.
    let (page, entry) = (5usize, 10usize);
    let at = index_offset + page as u64 * page_bytes + (entry * DELTA_INDEX_ENTRY_SIZE) as u64 + 25;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();

    let ((damaged_key, _), _) = model.iter().nth(page * INDEX_PAGE_ENTRIES + entry).unwrap();
    let e = layer
        .get_values(*damaged_key, Lsn(0)..Lsn::MAX)
        .unwrap_err();
    assert!(
        matches!(&e, LayerError::Checksum { what, .. } if what == "index page 5"),
        "{e}"
    );
    assert_eq!(e.path(), path);
    assert!(e.is_damage());
    let ((other_key, _), _) = model.iter().nth(INDEX_PAGE_ENTRIES + 3).unwrap();
    let want: Vec<(Lsn, Value)> = (model.range((*other_key, Lsn(0))..(*other_key, Lsn::MAX)))
        .map(|((_, l), v)| (*l, v.clone()))
        .collect();
    assert_eq!(
        layer.get_values(*other_key, Lsn(0)..Lsn::MAX).unwrap(),
        want
    );
    // A new open checks the whole index again and refuses the file.
    let e = DeltaLayer::open(&path).unwrap_err();
    assert!(
        matches!(&e, LayerError::Checksum { what, .. } if what == "index"),
        "{e}"
    );
}
