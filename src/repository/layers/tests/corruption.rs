//! Damage sweeps: every byte of a small delta and image layer flipped (xor 0xFF and xor 0x01), every
//! truncation, and appended bytes. The outcome must always be an error naming the file; a read that succeeds
//! must return exactly the written value.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{
    fixture_delta_entries, fixture_image_entries, write_fixture_delta, write_fixture_image,
};
use crate::pg::Lsn;
use crate::repository::layers::{DeltaLayer, ImageLayer, LayerError};

/// Files under this size get every offset flipped; the fixtures are about 9 KB.
const EXHAUSTIVE_LIMIT: u64 = 20 << 10;

fn assert_names(path: &Path, e: &LayerError) {
    let text = e.to_string();
    assert!(
        text.contains(&*path.to_string_lossy()),
        "error does not name {}: {text}",
        path.display()
    );
    assert_eq!(e.path(), path);
}

/// Opens and reads everything; returns how many errors were seen, panicking on any wrong value.
fn delta_errors(path: &Path) -> usize {
    let expected = fixture_delta_entries();
    let layer = match DeltaLayer::open(path) {
        Ok(layer) => layer,
        Err(e) => {
            assert_names(path, &e);
            return 1;
        }
    };
    let mut errors = 0;
    let mut read = Vec::new();
    for r in layer.iter() {
        match r {
            Ok(entry) => read.push(entry),
            Err(e) => {
                assert_names(path, &e);
                errors += 1;
            }
        }
    }
    assert_eq!(
        read[..],
        expected[..read.len()],
        "iter returned a wrong entry"
    );
    let mut keys: Vec<_> = expected.iter().map(|(k, _, _)| *k).collect();
    keys.dedup();
    assert_eq!(layer.keys().unwrap(), keys);
    for key in keys {
        let want: Vec<_> = (expected.iter())
            .filter(|(k, _, _)| *k == key)
            .map(|(_, l, v)| (*l, v.clone()))
            .collect();
        match layer.get_values(key, Lsn(0)..Lsn::MAX) {
            Ok(got) => assert_eq!(got, want, "get_values returned a wrong value"),
            Err(e) => {
                assert_names(path, &e);
                errors += 1;
            }
        }
    }
    errors
}

fn image_errors(path: &Path) -> usize {
    let expected = fixture_image_entries();
    let layer = match ImageLayer::open(path) {
        Ok(layer) => layer,
        Err(e) => {
            assert_names(path, &e);
            return 1;
        }
    };
    let mut errors = 0;
    let mut read = Vec::new();
    for r in layer.iter() {
        match r {
            Ok(entry) => read.push(entry),
            Err(e) => {
                assert_names(path, &e);
                errors += 1;
            }
        }
    }
    assert_eq!(
        read[..],
        expected[..read.len()],
        "iter returned a wrong image"
    );
    let keys: Vec<_> = expected.iter().map(|(k, _)| *k).collect();
    assert_eq!(layer.keys().unwrap(), keys);
    for (key, image) in &expected {
        match layer.get(*key) {
            Ok(got) => assert_eq!(got.as_ref(), Some(image), "get returned a wrong image"),
            Err(e) => {
                assert_names(path, &e);
                errors += 1;
            }
        }
    }
    errors
}

/// Flips every byte (or, for a large file, a sample) with each mask; returns the number of offsets.
fn flip_every_byte(path: &Path, errors: fn(&Path) -> usize) -> u64 {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = file.metadata().unwrap().len();
    assert!(len <= EXHAUSTIVE_LIMIT, "fixture grew to {len} bytes");
    assert_eq!(errors(path), 0, "the undamaged file must read cleanly");
    for offset in 0..len {
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, offset).unwrap();
        for mask in [0xFF, 0x01] {
            file.write_all_at(&[b[0] ^ mask], offset).unwrap();
            let n = errors(path);
            assert!(
                n > 0,
                "flipping byte {offset} with {mask:#x} went unnoticed"
            );
            file.write_all_at(&b, offset).unwrap();
        }
    }
    assert_eq!(errors(path), 0);
    len
}

/// Every proper prefix of the file, and the file with bytes appended, must fail cleanly.
fn truncate_and_extend(path: &Path, errors: fn(&Path) -> usize) {
    let whole = std::fs::read(path).unwrap();
    for len in 0..whole.len() {
        std::fs::write(path, &whole[..len]).unwrap();
        assert!(errors(path) > 0, "truncation to {len} bytes went unnoticed");
    }
    for extra in [&[0u8][..], &[0; 96], &whole[whole.len() - 96..]] {
        std::fs::write(path, [&whole[..], extra].concat()).unwrap();
        assert!(
            errors(path) > 0,
            "{} appended bytes went unnoticed",
            extra.len()
        );
    }
    std::fs::write(path, &whole).unwrap();
    assert_eq!(errors(path), 0);
}

#[test]
fn every_flipped_byte_of_a_delta_layer_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_fixture_delta(dir.path()).path().to_path_buf();
    let flipped = flip_every_byte(&path, delta_errors);
    assert!(flipped > 8192, "{flipped}");
}

#[test]
fn every_flipped_byte_of_an_image_layer_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_fixture_image(dir.path()).path().to_path_buf();
    let flipped = flip_every_byte(&path, image_errors);
    assert!(flipped > 8192, "{flipped}");
}

#[test]
fn truncated_or_extended_layers_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let delta = write_fixture_delta(dir.path()).path().to_path_buf();
    truncate_and_extend(&delta, delta_errors);
    let image = write_fixture_image(dir.path()).path().to_path_buf();
    truncate_and_extend(&image, image_errors);
}

#[test]
fn an_unknown_version_is_a_typed_error() {
    use crate::repository::layers::file_format::FOOTER_SIZE;
    let dir = tempfile::tempdir().unwrap();
    let path = write_fixture_image(dir.path()).path().to_path_buf();
    let mut bytes = std::fs::read(&path).unwrap();
    let footer = bytes.len() - FOOTER_SIZE;
    // A future footer: version 2 with a valid crc.
    bytes[footer + 84..footer + 88].copy_from_slice(&2u32.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[footer + 4..]);
    bytes[footer..footer + 4].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = ImageLayer::open(&path).unwrap_err();
    assert!(
        matches!(e, LayerError::UnsupportedVersion { got: 2, .. }),
        "{e}"
    );
    assert_names(&path, &e);
}
