//! The committed fixtures in `src/repository/layers/fixtures/`: a delta and an image layer of format version
//! 1, written from [`super::fixture_delta_entries`] and [`super::fixture_image_entries`]. Old files must stay
//! readable: if these tests fail after a format change, the change breaks layers already on disk.
//!
//! Regenerate (only together with a new format version and its reader):
//! `PAGESERVER_REGENERATE_LAYER_FIXTURES=1 cargo test --lib repository::layers::tests::fixture`.

use std::path::{Path, PathBuf};

use super::{assert_delta_content, assert_image_content, write_fixture_delta, write_fixture_image};
use crate::repository::layers::file_format::{
    DELTA_MAGIC, FOOTER_SIZE, FORMAT_VERSION, IMAGE_MAGIC,
};
use crate::repository::layers::{DeltaLayer, ImageLayer};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/repository/layers/fixtures")
}

/// Writes a fresh layer with `write` and returns (its bytes, the committed file's path), regenerating the
/// committed file first when asked to.
fn fresh_and_committed(write: fn(&Path) -> PathBuf) -> (Vec<u8>, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fresh = write(dir.path());
    let committed = fixtures_dir().join(fresh.file_name().unwrap());
    if std::env::var_os("PAGESERVER_REGENERATE_LAYER_FIXTURES").is_some() {
        std::fs::copy(&fresh, &committed).unwrap();
    }
    (std::fs::read(&fresh).unwrap(), committed)
}

#[test]
fn committed_delta_fixture_reads_back() {
    let (fresh, committed) = fresh_and_committed(|d| write_fixture_delta(d).path().to_path_buf());
    let layer = DeltaLayer::open(&committed).expect("the committed delta fixture must open");
    assert_delta_content(&layer);
    assert_eq!(
        std::fs::read(&committed).unwrap(),
        fresh,
        "the writer's output changed: a new layout needs a new FORMAT_VERSION and docs/storage-format.md"
    );
}

#[test]
fn committed_image_fixture_reads_back() {
    let (fresh, committed) = fresh_and_committed(|d| write_fixture_image(d).path().to_path_buf());
    let layer = ImageLayer::open(&committed).expect("the committed image fixture must open");
    assert_image_content(&layer);
    assert_eq!(
        std::fs::read(&committed).unwrap(),
        fresh,
        "the writer's output changed: a new layout needs a new FORMAT_VERSION and docs/storage-format.md"
    );
}

#[test]
fn format_version_is_1_and_documented() {
    assert_eq!(FORMAT_VERSION, 1);
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/storage-format.md"),
    )
    .expect("docs/storage-format.md");
    for needle in [
        "FORMAT_VERSION = 1".to_string(),
        String::from_utf8_lossy(&DELTA_MAGIC).into_owned(),
        String::from_utf8_lossy(&IMAGE_MAGIC).into_owned(),
        format!("{FOOTER_SIZE} bytes"),
    ] {
        assert!(
            doc.contains(&needle),
            "docs/storage-format.md does not mention {needle:?}"
        );
    }
}
