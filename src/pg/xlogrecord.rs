//! Decoding of one `XLogRecord` (PostgreSQL 15, access/xlogrecord.h; the rules of xlogreader.c
//! `DecodeXLogRecord`): the header, the block references with their full-page images and data, the origin,
//! the top-level xid and the main data. Images restore to 8 KiB pages (pglz, lz4 or zstd compressed, with or
//! without a hole).

use bytes::Bytes;
use smallvec::SmallVec;

use super::constants::*;
use super::lsn::Lsn;
use super::pglz;
use super::reader::{Reader, ShortRead};
use super::waldecoder::RawRecord;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("WAL record at {lsn} is truncated: {source}")]
    Short { lsn: Lsn, source: ShortRead },
    #[error("WAL record at {lsn}: {msg}")]
    Invalid { lsn: Lsn, msg: String },
}

/// A relation file: tablespace, database and relation file number (RelFileNode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct RelFileNode {
    pub spc: u32,
    pub db: u32,
    pub rel: u32,
}

/// The XLogRecord header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XLogRecordHeader {
    pub tot_len: u32,
    pub xid: u32,
    pub prev: Lsn,
    pub info: u8,
    pub rmid: u8,
    pub crc: u32,
}

/// How a full-page image is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Pglz,
    Lz4,
    Zstd,
}

/// A full-page image carried by a block reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockImage {
    /// The stored bytes (`bimg_len` of them), compressed or not, hole removed.
    pub data: Bytes,
    pub hole_offset: u16,
    pub hole_length: u16,
    pub bimg_info: u8,
}

impl BlockImage {
    /// True when redo restores the page from this image (not an image only for wal_consistency_checking).
    pub fn apply(&self) -> bool {
        self.bimg_info & BKPIMAGE_APPLY != 0
    }

    pub fn compression(&self) -> Compression {
        if self.bimg_info & BKPIMAGE_COMPRESS_PGLZ != 0 {
            Compression::Pglz
        } else if self.bimg_info & BKPIMAGE_COMPRESS_LZ4 != 0 {
            Compression::Lz4
        } else if self.bimg_info & BKPIMAGE_COMPRESS_ZSTD != 0 {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The 8 KiB page: decompressed, the hole filled with zeros (RestoreBlockImage).
    pub fn restore(&self) -> Result<Vec<u8>, String> {
        let stored_len = BLCKSZ - self.hole_length as usize;
        let mut page = vec![0u8; BLCKSZ];
        let body: std::borrow::Cow<[u8]> = match self.compression() {
            Compression::None => std::borrow::Cow::Borrowed(&self.data[..]),
            Compression::Pglz => {
                let mut out = vec![0u8; stored_len];
                pglz::decompress(&self.data, &mut out).map_err(|e| format!("pglz image: {e}"))?;
                std::borrow::Cow::Owned(out)
            }
            Compression::Lz4 => {
                let mut out = vec![0u8; stored_len];
                let n = lz4_flex::block::decompress_into(&self.data, &mut out)
                    .map_err(|e| format!("lz4 image: {e}"))?;
                if n != stored_len {
                    return Err(format!("lz4 image: {n} bytes, expected {stored_len}"));
                }
                std::borrow::Cow::Owned(out)
            }
            Compression::Zstd => {
                let mut out = vec![0u8; stored_len];
                let n = zstd::bulk::decompress_to_buffer(&self.data, &mut out)
                    .map_err(|e| format!("zstd image: {e}"))?;
                if n != stored_len {
                    return Err(format!("zstd image: {n} bytes, expected {stored_len}"));
                }
                std::borrow::Cow::Owned(out)
            }
        };
        if body.len() != stored_len {
            return Err(format!(
                "image of {} bytes, expected {stored_len}",
                body.len()
            ));
        }
        let hole_start = self.hole_offset as usize;
        let hole_end = hole_start + self.hole_length as usize;
        if hole_end > BLCKSZ {
            return Err(format!(
                "image hole {hole_start}..{hole_end} past the page end"
            ));
        }
        page[..hole_start].copy_from_slice(&body[..hole_start]);
        page[hole_end..].copy_from_slice(&body[hole_start..]);
        Ok(page)
    }
}

/// A block the record touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub id: u8,
    pub rnode: RelFileNode,
    pub forknum: u8,
    pub blkno: u32,
    /// The fork-and-flags byte (BKPBLOCK_*).
    pub flags: u8,
    pub image: Option<BlockImage>,
    /// Per-block data for redo; empty if none.
    pub data: Bytes,
}

impl BlockRef {
    /// Redo rebuilds the page from nothing (BKPBLOCK_WILL_INIT).
    pub fn will_init(&self) -> bool {
        self.flags & BKPBLOCK_WILL_INIT != 0
    }

    /// The record restores this page from its image.
    pub fn apply_image(&self) -> bool {
        self.image.as_ref().is_some_and(BlockImage::apply)
    }
}

/// One decoded record. Slices share the record's bytes; nothing is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub lsn: Lsn,
    pub end_lsn: Lsn,
    pub header: XLogRecordHeader,
    /// Inline up to two (most records reference one or two blocks): no allocation per record.
    pub blocks: SmallVec<[BlockRef; 2]>,
    pub origin: Option<u16>,
    pub toplevel_xid: Option<u32>,
    pub main_data: Bytes,
    /// The whole record, as the WAL redo process takes it.
    pub raw: Bytes,
}

impl DecodedRecord {
    /// The resource manager's info bits (the high four bits of xl_info).
    pub fn rmgr_info(&self) -> u8 {
        self.header.info & XLR_RMGR_INFO_MASK
    }

    pub fn rmid(&self) -> u8 {
        self.header.rmid
    }

    pub fn block(&self, id: u8) -> Option<&BlockRef> {
        self.blocks.iter().find(|b| b.id == id)
    }

    /// Bytes of full-page images in the record (pg_waldump's fpi_len).
    pub fn fpi_len(&self) -> u32 {
        self.blocks
            .iter()
            .filter_map(|b| b.image.as_ref())
            .map(|i| i.data.len() as u32)
            .sum()
    }
}

/// Decodes a whole record as returned by the stream decoder.
pub fn decode_record(raw: &RawRecord) -> Result<DecodedRecord, RecordError> {
    let lsn = raw.lsn;
    let bytes = &raw.bytes;
    let short = |source| RecordError::Short { lsn, source };
    let invalid = |msg: String| RecordError::Invalid { lsn, msg };
    let mut r = Reader::new(bytes);
    let header = XLogRecordHeader {
        tot_len: r.u32().map_err(short)?,
        xid: r.u32().map_err(short)?,
        prev: Lsn(r.u64().map_err(short)?),
        info: r.u8().map_err(short)?,
        rmid: r.u8().map_err(short)?,
        crc: {
            r.skip(2).map_err(short)?;
            r.u32().map_err(short)?
        },
    };
    if header.tot_len as usize != bytes.len() {
        return Err(invalid(format!(
            "xl_tot_len {} but the record has {} bytes",
            header.tot_len,
            bytes.len()
        )));
    }

    // The blocks as their headers come, then their data and images (which follow all headers) sliced in;
    // per block (data length, image length), at most XLR_MAX_BLOCK_ID + 1 of them (ids ascend).
    let mut blocks: SmallVec<[BlockRef; 2]> = SmallVec::new();
    let mut lens = [(0u16, 0u16); XLR_MAX_BLOCK_ID as usize + 1];
    let mut origin = None;
    let mut toplevel_xid = None;
    let mut main_data_len = 0usize;
    let mut datatotal = 0usize;
    let mut last_rnode: Option<RelFileNode> = None;
    while r.remaining() > datatotal {
        let block_id = r.u8().map_err(short)?;
        match block_id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_data_len = r.u8().map_err(short)? as usize;
                datatotal += main_data_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_data_len = r.u32().map_err(short)? as usize;
                datatotal += main_data_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => origin = Some(r.u16().map_err(short)?),
            XLR_BLOCK_ID_TOPLEVEL_XID => toplevel_xid = Some(r.u32().map_err(short)?),
            id if id <= XLR_MAX_BLOCK_ID => {
                if blocks.last().is_some_and(|b| b.id >= id) {
                    return Err(invalid(format!("out-of-order block_id {id}")));
                }
                let flags = r.u8().map_err(short)?;
                let data_len = r.u16().map_err(short)?;
                let has_data = flags & BKPBLOCK_HAS_DATA != 0;
                if has_data != (data_len > 0) {
                    return Err(invalid(format!(
                        "block {id}: BKPBLOCK_HAS_DATA is {has_data} but data length is {data_len}"
                    )));
                }
                datatotal += data_len as usize;
                let mut image = None;
                let mut bimg_len = 0;
                if flags & BKPBLOCK_HAS_IMAGE != 0 {
                    bimg_len = r.u16().map_err(short)?;
                    let hole_offset = r.u16().map_err(short)?;
                    let bimg_info = r.u8().map_err(short)?;
                    let compressed = bimg_info
                        & (BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD)
                        != 0;
                    let has_hole = bimg_info & BKPIMAGE_HAS_HOLE != 0;
                    let hole_length = if compressed {
                        if has_hole { r.u16().map_err(short)? } else { 0 }
                    } else {
                        (BLCKSZ as u16).wrapping_sub(bimg_len)
                    };
                    datatotal += bimg_len as usize;
                    let blcksz = BLCKSZ as u16;
                    if has_hole && (hole_offset == 0 || hole_length == 0 || bimg_len == blcksz) {
                        return Err(invalid(format!(
                            "block {id}: BKPIMAGE_HAS_HOLE set, but hole offset {hole_offset} length \
                             {hole_length} image length {bimg_len}"
                        )));
                    }
                    if !has_hole && (hole_offset != 0 || hole_length != 0) {
                        return Err(invalid(format!(
                            "block {id}: BKPIMAGE_HAS_HOLE not set, but hole offset {hole_offset} length {hole_length}"
                        )));
                    }
                    if compressed && bimg_len == blcksz {
                        return Err(invalid(format!(
                            "block {id}: compressed image of length {bimg_len}"
                        )));
                    }
                    if !has_hole && !compressed && bimg_len != blcksz {
                        return Err(invalid(format!(
                            "block {id}: neither hole nor compression, but image length {bimg_len}"
                        )));
                    }
                    if hole_offset as usize + hole_length as usize > BLCKSZ {
                        return Err(invalid(format!(
                            "block {id}: hole {hole_offset}+{hole_length} past the page end"
                        )));
                    }
                    image = Some(BlockImage {
                        data: Bytes::new(),
                        hole_offset,
                        hole_length,
                        bimg_info,
                    });
                }
                let rnode = if flags & BKPBLOCK_SAME_REL == 0 {
                    let rnode = RelFileNode {
                        spc: r.u32().map_err(short)?,
                        db: r.u32().map_err(short)?,
                        rel: r.u32().map_err(short)?,
                    };
                    last_rnode = Some(rnode);
                    rnode
                } else {
                    last_rnode.ok_or_else(|| {
                        invalid(format!("block {id}: BKPBLOCK_SAME_REL but no previous rel"))
                    })?
                };
                let blkno = r.u32().map_err(short)?;
                lens[blocks.len()] = (data_len, bimg_len);
                blocks.push(BlockRef {
                    id,
                    rnode,
                    forknum: flags & BKPBLOCK_FORK_MASK,
                    blkno,
                    flags,
                    image,
                    data: Bytes::new(),
                });
            }
            other => return Err(invalid(format!("invalid block_id {other}"))),
        }
    }
    if r.remaining() != datatotal {
        return Err(invalid(format!(
            "headers promise {datatotal} bytes of data, the record has {}",
            r.remaining()
        )));
    }
    let mut pos = r.position();
    let mut take = |n: usize| {
        let out = bytes.slice(pos..pos + n);
        pos += n;
        out
    };
    for (block, (data_len, bimg_len)) in blocks.iter_mut().zip(lens) {
        if let Some(image) = &mut block.image {
            image.data = take(bimg_len as usize);
        }
        block.data = take(data_len as usize);
        if block.forknum > MAX_FORKNUM {
            return Err(invalid(format!(
                "block {}: invalid fork number {}",
                block.id, block.forknum
            )));
        }
    }
    let main_data = take(main_data_len);
    Ok(DecodedRecord {
        lsn,
        end_lsn: raw.end_lsn,
        header,
        blocks,
        origin,
        toplevel_xid,
        main_data,
        raw: raw.bytes.clone(),
    })
}
