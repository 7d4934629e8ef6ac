//! A layer file as an operator sees it (`pageserver layers dump`): the footer's fields, every index entry
//! with the place of its block in the file, and each value decoded into one line. Reads go through the same
//! checks as the server's: the footer and index at open, each block's crc when its value is read.

use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

use super::file_format::{IndexCursor, LayerFile, id_key, id_lsn};
use super::{FORMAT_VERSION, LayerError, LayerKind, LayerName};
use crate::pg::Lsn;
use crate::repository::Key;
use crate::repository::value::Value;
use crate::walredo::WalRecord;

/// The footer's facts about a layer file.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    pub name: LayerName,
    pub kind: LayerKind,
    /// An L0 delta: one that spans every key (as flushed from memory, before compaction).
    pub l0: bool,
    pub key_range: Range<Key>,
    pub lsn_range: Range<Lsn>,
    pub file_size: u64,
    pub entry_count: usize,
    pub index_offset: u64,
    pub index_len: u64,
    pub index_pages: usize,
    pub format_version: u32,
}

/// One index entry: its key (and LSN, in a delta) and where its block is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub number: usize,
    pub key: Key,
    /// None in an image layer (every value is at the layer's LSN).
    pub lsn: Option<Lsn>,
    /// File offset of the block.
    pub offset: u64,
    /// Bytes of the block: the value and its 4-byte crc.
    pub len: u64,
}

/// An open layer file of either kind, for inspection.
pub struct InspectedLayer {
    file: LayerFile,
}

impl InspectedLayer {
    /// Opens `path`, a delta or image layer by its file name, with every check of an open.
    pub fn open(path: &Path) -> Result<InspectedLayer, LayerError> {
        let name: LayerName = (path.file_name().and_then(|n| n.to_str()))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| LayerError::Corrupt {
                path: path.to_path_buf(),
                msg: "the file name is not a layer name".into(),
            })?;
        let kind = if name.is_delta() {
            LayerKind::Delta
        } else {
            LayerKind::Image
        };
        Ok(InspectedLayer {
            file: LayerFile::open(path, kind)?,
        })
    }

    pub fn info(&self) -> LayerInfo {
        let footer = self.file.footer();
        let name = self.file.name().clone();
        LayerInfo {
            l0: crate::repository::tasks::plan::is_l0(&name),
            name,
            kind: footer.kind,
            key_range: footer.key_range.clone(),
            lsn_range: footer.lsn_range.clone(),
            file_size: self.file.file_size(),
            entry_count: self.file.entry_count(),
            index_offset: footer.index_offset,
            index_len: footer.index_len,
            index_pages: self.file.index_pages(),
            format_version: FORMAT_VERSION,
        }
    }

    /// Every index entry in order, from the index alone (index pages checked against their crc).
    pub fn index(&self) -> impl Iterator<Item = Result<IndexEntry, LayerError>> + '_ {
        let mut cur = IndexCursor::scan();
        (0..self.file.entry_count()).map(move |i| {
            let (offset, next) = (
                self.file.block_start(&mut cur, i)?,
                self.file.block_start(&mut cur, i + 1)?,
            );
            let id = self.file.id(&mut cur, i)?;
            Ok(IndexEntry {
                number: i,
                key: id_key(id),
                lsn: (self.file.footer().kind == LayerKind::Delta).then(|| id_lsn(id)),
                offset,
                len: next.saturating_sub(offset),
            })
        })
    }

    /// Every block's crc checked (the footer and index were checked at open).
    pub fn verify(&self) -> Result<(), LayerError> {
        self.file.verify_blocks()
    }

    /// Every value in order, with its entry number, each block's crc checked. Stops after the first error.
    pub fn values(&self) -> impl Iterator<Item = Result<(usize, Bytes), LayerError>> + '_ {
        (self.file.blocks_scan(0..self.file.entry_count())).map(|r| r.map(|(i, _, v)| (i, v)))
    }

    /// One line about a value read by [`values`](Self::values).
    pub fn describe_value(&self, payload: &Bytes) -> String {
        match self.file.footer().kind {
            LayerKind::Image => describe_image(payload),
            LayerKind::Delta => match Value::decode(payload) {
                Ok(Value::Image(image)) => describe_image(&image),
                Ok(Value::WalRecord(rec)) => describe_record(&rec),
                Err(e) => format!("undecodable value of {} bytes: {e}", payload.len()),
            },
        }
    }
}

/// A page image with its page LSN (`pd_lsn`, the first 8 bytes of a page); other values by size and first
/// bytes.
fn describe_image(image: &[u8]) -> String {
    if image.len() == crate::pg::constants::BLCKSZ {
        let half = |at: usize| {
            u64::from(u32::from_le_bytes(
                image[at..at + 4].try_into().unwrap_or_default(),
            ))
        };
        let lsn = Lsn((half(0) << 32) | half(4));
        return format!("image {} bytes, page lsn {lsn}", image.len());
    }
    let head: String = image.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let more = if image.len() > 16 { "..." } else { "" };
    format!("image {} bytes: {head}{more}", image.len())
}

/// A WAL record: PostgreSQL's by its resource manager, info bits and xid (from the XLogRecord header), ours by
/// their fields.
fn describe_record(rec: &WalRecord) -> String {
    match rec {
        WalRecord::Postgres { will_init, rec } => {
            let (Some(&info), Some(&rmid), Some(xid)) = (
                rec.get(16),
                rec.get(17),
                rec.get(4..8).and_then(|b| <[u8; 4]>::try_from(b).ok()),
            ) else {
                return format!("record of {} bytes, shorter than its header", rec.len());
            };
            format!(
                "wal {} info 0x{info:02x} xid {} {} bytes{}",
                crate::pg::constants::rmgr_name(rmid),
                u32::from_le_bytes(xid),
                rec.len(),
                if *will_init { " will_init" } else { "" }
            )
        }
        other => {
            let mut text = format!("{other:?}");
            if text.len() > 160 {
                let cut = (0..=160)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push_str("...");
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::layers::tests::small_key as key;
    use crate::repository::layers::{DeltaLayerWriter, ImageLayerWriter};

    #[test]
    fn index_and_values_of_both_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let mut page = vec![0u8; 8192];
        page[..8].copy_from_slice(&[0, 0, 0, 0, 0x40, 0x37, 0x6b, 0x01]);
        let mut w = ImageLayerWriter::new(dir.path(), key(0)..key(10), Lsn(0x100)).unwrap();
        w.put(key(1), &page).unwrap();
        w.put(key(2), b"\x05\x00\x00\x00").unwrap();
        let image = w.finish().unwrap();

        let l = InspectedLayer::open(image.path()).unwrap();
        let info = l.info();
        assert_eq!(
            (info.kind, info.entry_count, info.l0),
            (LayerKind::Image, 2, false)
        );
        let index: Vec<IndexEntry> = l.index().collect::<Result<_, _>>().unwrap();
        assert_eq!(index[0].key, key(1));
        assert_eq!(index[0].lsn, None);
        // The first block is the page and its crc; the second starts right after it.
        assert_eq!(index[0].len, 8192 + 4);
        assert_eq!(index[1].offset, index[0].offset + 8196);
        assert_eq!(index[1].offset + index[1].len, info.index_offset);
        let lines: Vec<String> = (l.values())
            .map(|v| l.describe_value(&v.unwrap().1))
            .collect();
        assert_eq!(lines[0], "image 8192 bytes, page lsn 0/16B3740");
        assert_eq!(lines[1], "image 4 bytes: 05000000");

        let mut rec = vec![0u8; 24];
        rec[4..8].copy_from_slice(&731u32.to_le_bytes());
        rec[16] = 0x20;
        rec[17] = 10; // Heap
        let mut w =
            DeltaLayerWriter::new(dir.path(), key(0)..key(10), Lsn(0x10)..Lsn(0x30)).unwrap();
        w.put(key(3), Lsn(0x18), &Value::Image(Bytes::from(page.clone())))
            .unwrap();
        w.put(
            key(3),
            Lsn(0x20),
            &Value::WalRecord(WalRecord::Postgres {
                will_init: false,
                rec: Bytes::from(rec),
            }),
        )
        .unwrap();
        w.put(
            key(4),
            Lsn(0x28),
            &Value::WalRecord(WalRecord::ClogSetCommitted { xids: vec![7, 8] }),
        )
        .unwrap();
        let delta = w.finish().unwrap();
        let l = InspectedLayer::open(delta.path()).unwrap();
        let index: Vec<IndexEntry> = l.index().collect::<Result<_, _>>().unwrap();
        let ids: Vec<(Key, Option<Lsn>)> = index.iter().map(|e| (e.key, e.lsn)).collect();
        assert_eq!(
            ids,
            [
                (key(3), Some(Lsn(0x18))),
                (key(3), Some(Lsn(0x20))),
                (key(4), Some(Lsn(0x28)))
            ]
        );
        let lines: Vec<String> = (l.values())
            .map(|v| l.describe_value(&v.unwrap().1))
            .collect();
        assert_eq!(lines[0], "image 8192 bytes, page lsn 0/16B3740");
        assert_eq!(lines[1], "wal Heap info 0x20 xid 731 24 bytes");
        assert_eq!(lines[2], "ClogSetCommitted { xids: [7, 8] }");
    }

    #[test]
    fn a_flipped_block_is_named_by_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ImageLayerWriter::new(dir.path(), key(0)..key(10), Lsn(0x100)).unwrap();
        for k in 0..3 {
            w.put(key(k), &[k as u8; 100]).unwrap();
        }
        let path = w.finish().unwrap().path().to_path_buf();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[150] ^= 1; // inside the second block
        std::fs::write(&path, &bytes).unwrap();
        let l = InspectedLayer::open(&path).unwrap();
        // The index is intact; the values stop at the damaged block.
        assert_eq!(l.index().count(), 3);
        let values: Vec<_> = l.values().collect();
        assert_eq!(values.len(), 2);
        let err = values[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("block 1"), "{err}");
    }
}
