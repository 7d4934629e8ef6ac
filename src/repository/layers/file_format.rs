//! The container shared by delta and image layer files (docs/storage-format.md is the byte-by-byte spec):
//!
//! ```text
//! [data: one block per entry, in index order][index: fixed-size entries][footer: 96 bytes]
//! block = payload ++ crc32c(entry id ++ payload)       index entry = id ++ block offset (u64)
//! ```
//!
//! All integers of the container are big-endian, so an entry id (a key, or a key and an LSN) sorts as a byte
//! string in (key, LSN) order and the index can be binary-searched on raw bytes.
//!
//! Invariants, established by `LayerFileWriter` and checked by `LayerFile::open` before any value is read:
//! - every byte of the file is covered by exactly one crc32c: a block's own, the index crc (stored in the
//!   footer) or the footer crc; there is no padding, so a changed byte is an error, never a different value;
//! - blocks are contiguous from offset 0, in index order, each at least the 4 bytes of its crc; the index
//!   starts where the last block ends and the footer where the index ends;
//! - entry ids are strictly increasing and inside the key (and, for deltas, LSN) range of the footer, and the
//!   file name is the [`LayerName`] those ranges give;
//! - a file is written once, to `<name>.tmp`, then fsynced, renamed and its directory fsynced: a crash leaves
//!   nothing visible, or a whole file. It never changes afterwards.
//!
//! A block crc is seeded with the entry's id, so a block read through the wrong index entry fails too.
//! Checks that run on every read: the block crc. Everything else is checked once, at open.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::pg::Lsn;
use crate::repository::Key;
use crate::repository::key::KEY_SIZE;
use crate::repository::layers::{LayerName, index_cache};
use crate::repository::value::ValueError;

/// The version of the format documented in docs/storage-format.md. A reader refuses any other.
pub const FORMAT_VERSION: u32 = 1;
/// The last 8 bytes of a delta layer file.
pub const DELTA_MAGIC: [u8; 8] = *b"PSLDELTA";
/// The last 8 bytes of an image layer file.
pub const IMAGE_MAGIC: [u8; 8] = *b"PSLIMAGE";
/// Size of the footer at the end of every layer file.
pub const FOOTER_SIZE: usize = 96;
/// The crc32c that ends every block.
pub const BLOCK_CRC_SIZE: usize = 4;
/// Delta index entry: key (18), LSN (8), block offset (8).
pub const DELTA_INDEX_ENTRY_SIZE: usize = KEY_SIZE + 8 + 8;
/// Image index entry: key (18), block offset (8).
pub const IMAGE_INDEX_ENTRY_SIZE: usize = KEY_SIZE + 8;

/// Reads of consecutive blocks (iteration, all versions of a key) are merged up to this size.
const READ_CHUNK: u64 = 1 << 20;
/// Reads that walk a key's versions newest first read this much first (at least one block): one image, or
/// the records of a page since its last image, since they usually stop at the first image; each further read
/// of the walk twice as much, up to `READ_CHUNK_REV_MAX`.
const READ_CHUNK_REV_FIRST: u64 = 8 << 10;
const READ_CHUNK_REV_MAX: u64 = 256 << 10;
const WRITE_BUFFER: usize = 256 << 10;
/// Index entries per index page: the unit in which an open layer reads and caches its index (8,704 bytes of a
/// delta index, 6,656 of an image index).
pub const INDEX_PAGE_ENTRIES: usize = 256;

/// Everything that can go wrong with a layer file. Each variant names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer file {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("layer file {}: checksum mismatch in {what}: stored {expected:#010x}, computed {got:#010x}", path.display())]
    Checksum {
        path: PathBuf,
        what: String,
        expected: u32,
        got: u32,
    },
    #[error("layer file {}: corrupt: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error("layer file {}: bad magic {got:02X?}, not a {expected} layer file", path.display())]
    BadMagic {
        path: PathBuf,
        expected: LayerKind,
        got: [u8; 8],
    },
    #[error("layer file {}: unsupported format version {got}, this build reads version {FORMAT_VERSION}", path.display())]
    UnsupportedVersion { path: PathBuf, got: u32 },
    #[error("layer file {}: value of key {key} at lsn {lsn}: {source}", path.display())]
    Value {
        path: PathBuf,
        key: Key,
        lsn: Lsn,
        source: ValueError,
    },
    #[error("layer file {}: put of key {key} at lsn {lsn} out of order: not after key {prev_key} at lsn {prev_lsn}", path.display())]
    OutOfOrder {
        path: PathBuf,
        key: Key,
        lsn: Lsn,
        prev_key: Key,
        prev_lsn: Lsn,
    },
    #[error("layer file {}: put of key {key} at lsn {lsn} outside the layer's keys {key_range:?} and lsns {lsn_range:?}", path.display())]
    OutOfRange {
        path: PathBuf,
        key: Key,
        lsn: Lsn,
        key_range: Range<Key>,
        lsn_range: Range<Lsn>,
    },
    #[error("layer file {}: invalid layer: {msg}", path.display())]
    InvalidRange { path: PathBuf, msg: String },
    #[error("layer file {}: an earlier write failed; the writer accepts nothing more", path.display())]
    WriterFailed { path: PathBuf },
    #[error("layer file {}: not on the local disk, and the download failed: {msg}", path.display())]
    Download { path: PathBuf, msg: String },
}

impl LayerError {
    /// The file the error concerns.
    pub fn path(&self) -> &Path {
        match self {
            LayerError::Io { path, .. }
            | LayerError::Checksum { path, .. }
            | LayerError::Corrupt { path, .. }
            | LayerError::BadMagic { path, .. }
            | LayerError::UnsupportedVersion { path, .. }
            | LayerError::Value { path, .. }
            | LayerError::OutOfOrder { path, .. }
            | LayerError::OutOfRange { path, .. }
            | LayerError::InvalidRange { path, .. }
            | LayerError::WriterFailed { path }
            | LayerError::Download { path, .. } => path,
        }
    }

    /// The file's bytes are not what was written: a checksum, the footer or the index says so. A copy of the
    /// layer from remote storage replaces such a file (docs/operations.md: damaged layer files).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            LayerError::Checksum { .. }
                | LayerError::Corrupt { .. }
                | LayerError::BadMagic { .. }
                | LayerError::UnsupportedVersion { .. }
        )
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn corrupt(path: &Path, msg: impl Into<String>) -> LayerError {
    LayerError::Corrupt {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Delta or image: the magic, the id of an index entry, and how a file name maps to the footer's ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Delta,
    Image,
}

impl std::fmt::Display for LayerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LayerKind::Delta => "delta",
            LayerKind::Image => "image",
        })
    }
}

impl LayerKind {
    pub fn magic(self) -> [u8; 8] {
        match self {
            LayerKind::Delta => DELTA_MAGIC,
            LayerKind::Image => IMAGE_MAGIC,
        }
    }

    /// Bytes of an index entry before its block offset: the key, and for deltas the LSN.
    pub fn id_len(self) -> usize {
        match self {
            LayerKind::Delta => KEY_SIZE + 8,
            LayerKind::Image => KEY_SIZE,
        }
    }

    pub fn entry_size(self) -> usize {
        self.id_len() + 8
    }

    fn of(name: &LayerName) -> LayerKind {
        if name.is_delta() {
            LayerKind::Delta
        } else {
            LayerKind::Image
        }
    }
}

/// The id of a delta entry: key and LSN, big-endian, so that byte order is (key, LSN) order.
pub(crate) fn delta_id(key: Key, lsn: Lsn) -> [u8; KEY_SIZE + 8] {
    let mut id = [0u8; KEY_SIZE + 8];
    let (k, l) = id.split_at_mut(KEY_SIZE);
    k.copy_from_slice(&key.to_bytes());
    l.copy_from_slice(&lsn.0.to_be_bytes());
    id
}

/// `a < b` for entry ids (byte strings compared as big-endian numbers, then by length), eight bytes at a
/// time: ids are 18 or 26 bytes, where a call of `memcmp` per comparison was most of an index search.
#[inline]
pub(crate) fn id_less(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    let (mut ca, mut cb) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        let (x, y) = (
            u64::from_be_bytes(x.try_into().unwrap_or_default()),
            u64::from_be_bytes(y.try_into().unwrap_or_default()),
        );
        if x != y {
            return x < y;
        }
    }
    match ca.remainder().cmp(cb.remainder()) {
        std::cmp::Ordering::Equal => a.len() < b.len(),
        o => o == std::cmp::Ordering::Less,
    }
}

/// `N` bytes at `at`; zeros if `b` is too short. Used only on entries whose size was checked at open.
fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b.get(at..at.saturating_add(N))
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(array_at(b, at))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array_at(b, at))
}

/// The key of an index entry id (its first 18 bytes).
pub(crate) fn id_key(id: &[u8]) -> Key {
    Key::from_bytes(&array_at(id, 0))
}

/// The LSN of a delta entry id (bytes 18..26).
pub(crate) fn id_lsn(id: &[u8]) -> Lsn {
    Lsn(u64_at(id, KEY_SIZE))
}

fn describe_id(kind: LayerKind, id: &[u8]) -> String {
    match kind {
        LayerKind::Delta => format!("key {} at lsn {}", id_key(id), id_lsn(id)),
        LayerKind::Image => format!("key {}", id_key(id)),
    }
}

fn block_crc(id: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(id), payload)
}

/// The fixed-size footer, decoded. Byte layout: docs/storage-format.md, "Footer".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Footer {
    pub kind: LayerKind,
    pub key_range: Range<Key>,
    /// For an image layer at LSN L: L..L+1.
    pub lsn_range: Range<Lsn>,
    pub index_offset: u64,
    pub index_len: u64,
    pub entry_count: u64,
    pub index_crc: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut f = Vec::with_capacity(FOOTER_SIZE);
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&self.key_range.start.to_bytes());
        f.extend_from_slice(&self.key_range.end.to_bytes());
        for v in [
            self.lsn_range.start.0,
            self.lsn_range.end.0,
            self.index_offset,
            self.index_len,
            self.entry_count,
        ] {
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&self.index_crc.to_be_bytes());
        f.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        f.extend_from_slice(&self.kind.magic());
        let mut out: [u8; FOOTER_SIZE] = array_at(&f, 0);
        let crc = crc32c::crc32c(out.get(4..).unwrap_or_default());
        out[..4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Checks magic, then version (both at fixed distances from the end of the file, whatever a future
    /// footer looks like), then the footer crc, then the fields' consistency with `file_size`.
    pub fn decode(
        path: &Path,
        kind: LayerKind,
        b: &[u8; FOOTER_SIZE],
        file_size: u64,
    ) -> Result<Footer, LayerError> {
        let magic: [u8; 8] = array_at(b, 88);
        if magic != kind.magic() {
            return Err(LayerError::BadMagic {
                path: path.to_path_buf(),
                expected: kind,
                got: magic,
            });
        }
        let version = u32_at(b, 84);
        if version != FORMAT_VERSION {
            return Err(LayerError::UnsupportedVersion {
                path: path.to_path_buf(),
                got: version,
            });
        }
        let (expected, got) = (u32_at(b, 0), crc32c::crc32c(b.get(4..).unwrap_or_default()));
        if expected != got {
            return Err(LayerError::Checksum {
                path: path.to_path_buf(),
                what: "footer".into(),
                expected,
                got,
            });
        }
        let footer = Footer {
            kind,
            key_range: Key::from_bytes(&array_at(b, 4))..Key::from_bytes(&array_at(b, 22)),
            lsn_range: Lsn(u64_at(b, 40))..Lsn(u64_at(b, 48)),
            index_offset: u64_at(b, 56),
            index_len: u64_at(b, 64),
            entry_count: u64_at(b, 72),
            index_crc: u32_at(b, 80),
        };
        footer.validate(path, file_size)?;
        Ok(footer)
    }

    fn validate(&self, path: &Path, file_size: u64) -> Result<(), LayerError> {
        if self.key_range.start >= self.key_range.end {
            return Err(corrupt(path, "footer has an empty key range"));
        }
        let lsn_ok = match self.kind {
            LayerKind::Delta => self.lsn_range.start < self.lsn_range.end,
            LayerKind::Image => self.lsn_range.start.checked_add(1) == Some(self.lsn_range.end),
        };
        if !lsn_ok {
            return Err(corrupt(
                path,
                format!("footer has a bad lsn range {:?}", self.lsn_range),
            ));
        }
        let entry_size = self.kind.entry_size() as u64;
        if self.entry_count.checked_mul(entry_size) != Some(self.index_len) {
            return Err(corrupt(
                path,
                "footer: index size is not entry count times entry size",
            ));
        }
        let end = (self.index_offset.checked_add(self.index_len))
            .and_then(|e| e.checked_add(FOOTER_SIZE as u64));
        if end != Some(file_size) {
            return Err(corrupt(
                path,
                format!(
                    "footer places the index at {}+{} but the file is {file_size} bytes",
                    self.index_offset, self.index_len
                ),
            ));
        }
        Ok(())
    }

    pub fn name(&self) -> LayerName {
        match self.kind {
            LayerKind::Delta => LayerName::Delta {
                key_range: self.key_range.clone(),
                lsn_range: self.lsn_range.clone(),
            },
            LayerKind::Image => LayerName::Image {
                key_range: self.key_range.clone(),
                lsn: self.lsn_range.start,
            },
        }
    }
}

/// An open layer file: its validated footer in memory, and of its index only the first id and the crc32c of
/// each page of [`INDEX_PAGE_ENTRIES`] entries; index pages are read on demand through the process's
/// [`index_cache`](super::index_cache), blocks with `read_at`.
pub(crate) struct LayerFile {
    path: PathBuf,
    name: LayerName,
    file: File,
    file_size: u64,
    footer: Footer,
    entry_count: usize,
    /// This open file's key space in the index cache.
    cache_id: u64,
    /// The id of each index page's first entry, concatenated (`id_len` bytes each).
    fences: Vec<u8>,
    /// The crc32c of each index page, computed at open (where the whole index was checked against the
    /// footer's crc) and checked whenever the page is read again.
    page_crcs: Vec<u32>,
}

impl std::fmt::Debug for LayerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerFile")
            .field("path", &self.path)
            .field("file_size", &self.file_size)
            .field("entry_count", &self.entry_count())
            .finish_non_exhaustive()
    }
}

impl Drop for LayerFile {
    fn drop(&mut self) {
        let pages = u32::try_from(self.page_crcs.len()).unwrap_or(u32::MAX);
        index_cache::get().forget_file(self.cache_id, pages);
    }
}

/// The index page a reader is on, so that neighbouring entries cost one cache lookup per page rather than
/// one per entry. A cursor belongs to one layer file.
pub(crate) struct IndexCursor {
    page_no: usize,
    page: Bytes,
    /// Insert pages read from disk into the cache (point reads); scans of a whole layer do not, so that
    /// they do not push out the pages other reads keep using.
    cache: bool,
}

impl IndexCursor {
    pub fn new() -> IndexCursor {
        IndexCursor {
            page_no: 0,
            page: Bytes::new(),
            cache: true,
        }
    }

    pub fn scan() -> IndexCursor {
        IndexCursor {
            cache: false,
            ..IndexCursor::new()
        }
    }
}

/// Bytes of the index read at a time while it is checked at open.
const OPEN_READ: usize = 1 << 20;

impl LayerFile {
    /// Opens and validates everything but the blocks: footer, version, index crc, index order and ranges,
    /// block offsets, and that the file name is the footer's [`LayerName`]. The index is read once, in
    /// pieces, and not kept.
    pub fn open(path: &Path, kind: LayerKind) -> Result<LayerFile, LayerError> {
        let file = File::open(path).map_err(io_err(path, "open"))?;
        let file_size = file.metadata().map_err(io_err(path, "stat"))?.len();
        let footer_at = file_size.checked_sub(FOOTER_SIZE as u64).ok_or_else(|| {
            corrupt(
                path,
                format!("{file_size} bytes is shorter than the footer"),
            )
        })?;
        let mut fb = [0u8; FOOTER_SIZE];
        file.read_exact_at(&mut fb, footer_at)
            .map_err(io_err(path, "read footer"))?;
        let footer = Footer::decode(path, kind, &fb, file_size)?;
        let name = footer.name();
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if file_name != name.to_string() {
            return Err(corrupt(
                path,
                format!("the file name does not match the footer's layer {name}"),
            ));
        }
        let entry_count = usize::try_from(footer.entry_count)
            .map_err(|_| corrupt(path, "index does not fit in memory"))?;
        let mut layer = LayerFile {
            path: path.to_path_buf(),
            name,
            file,
            file_size,
            footer,
            entry_count,
            cache_id: index_cache::get().new_file(),
            fences: Vec::new(),
            page_crcs: Vec::new(),
        };
        layer.check_index()?;
        Ok(layer)
    }

    /// Reads the index once, page by page: the footer's crc over all of it; ids strictly increasing and
    /// within the footer's ranges; blocks contiguous from 0, each holding at least its crc, the last one
    /// ending where the index starts. Records each page's first id and crc.
    fn check_index(&mut self) -> Result<(), LayerError> {
        let kind = self.footer.kind;
        let (entry_size, id_len) = (kind.entry_size(), kind.id_len());
        let page_bytes = INDEX_PAGE_ENTRIES * entry_size;
        let read_size = (OPEN_READ / page_bytes).max(1) * page_bytes;
        let pages = self.entry_count.div_ceil(INDEX_PAGE_ENTRIES);
        self.fences = Vec::with_capacity(pages * id_len);
        self.page_crcs = Vec::with_capacity(pages);
        let index_len = self.footer.index_len;
        let mut buf = vec![0u8; read_size];
        let (mut total_crc, mut expected_offset, mut i) = (0u32, 0u64, 0usize);
        let mut prev = [0u8; KEY_SIZE + 8];
        let mut read = 0u64;
        while read < index_len {
            let n = usize::try_from((index_len - read).min(read_size as u64)).unwrap_or(read_size);
            let chunk = &mut buf[..n];
            (self
                .file
                .read_exact_at(chunk, self.footer.index_offset + read))
            .map_err(io_err(&self.path, "read index"))?;
            read += n as u64;
            for page in chunk.chunks(page_bytes) {
                total_crc = crc32c::crc32c_append(total_crc, page);
                self.page_crcs.push(crc32c::crc32c(page));
                self.fences
                    .extend_from_slice(page.get(..id_len).unwrap_or_default());
                for entry in page.chunks_exact(entry_size) {
                    let (id, offset) = entry.split_at(id_len);
                    if i > 0 && prev.get(..id_len).unwrap_or_default() >= id {
                        return Err(
                            self.corrupt(format!("index entry {i} is not after the previous one"))
                        );
                    }
                    let in_range = self.footer.key_range.contains(&id_key(id))
                        && (kind == LayerKind::Image
                            || self.footer.lsn_range.contains(&id_lsn(id)));
                    if !in_range {
                        let what = describe_id(kind, id);
                        return Err(
                            self.corrupt(format!("index entry {i} ({what}) is outside the layer"))
                        );
                    }
                    let offset = u64_at(offset, 0);
                    if i > 0 && offset < expected_offset.saturating_add(BLOCK_CRC_SIZE as u64) {
                        return Err(self
                            .corrupt(format!("index entry {i}: block overlaps the previous one")));
                    }
                    if i == 0 && offset != 0 {
                        return Err(self.corrupt("the first block does not start at offset 0"));
                    }
                    expected_offset = offset;
                    prev[..id_len].copy_from_slice(id);
                    i += 1;
                }
            }
        }
        if total_crc != self.footer.index_crc {
            return Err(LayerError::Checksum {
                path: self.path.clone(),
                what: "index".into(),
                expected: self.footer.index_crc,
                got: total_crc,
            });
        }
        let data_end_ok = if self.entry_count == 0 {
            self.footer.index_offset == 0
        } else {
            self.footer.index_offset >= expected_offset.saturating_add(BLOCK_CRC_SIZE as u64)
        };
        if !data_end_ok {
            return Err(self.corrupt("the last block overlaps the index"));
        }
        Ok(())
    }

    pub fn file_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    pub fn corrupt(&self, msg: impl Into<String>) -> LayerError {
        corrupt(&self.path, msg)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn name(&self) -> &LayerName {
        &self.name
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    /// How many pages of [`INDEX_PAGE_ENTRIES`] entries the index has.
    pub fn index_pages(&self) -> usize {
        self.page_crcs.len()
    }

    /// Index page `p`: from the cache, or read from the file and checked against the crc taken at open.
    fn index_page(&self, p: usize, cache: bool) -> Result<Bytes, LayerError> {
        let page_no = u32::try_from(p).map_err(|_| self.corrupt("index page number overflows"))?;
        let expected = *(self.page_crcs.get(p))
            .ok_or_else(|| self.corrupt(format!("index page {p} is past the end")))?;
        let cache_ = index_cache::get();
        if let Some(page) = cache_.page(self.cache_id, page_no) {
            return Ok(page);
        }
        let entry_size = self.footer.kind.entry_size();
        let first = p * INDEX_PAGE_ENTRIES;
        let entries = (self.entry_count - first).min(INDEX_PAGE_ENTRIES);
        let mut buf = vec![0u8; entries * entry_size];
        let at = self.footer.index_offset + (first * entry_size) as u64;
        (self.file.read_exact_at(&mut buf, at)).map_err(io_err(&self.path, "read index"))?;
        let got = crc32c::crc32c(&buf);
        if got != expected {
            return Err(LayerError::Checksum {
                path: self.path.clone(),
                what: format!("index page {p}"),
                expected,
                got,
            });
        }
        let page = Bytes::from(buf);
        if cache {
            cache_.insert(self.cache_id, page_no, page.clone());
        }
        Ok(page)
    }

    /// Entry `i` (id, then block offset), through `cur`.
    fn entry<'c>(&self, cur: &'c mut IndexCursor, i: usize) -> Result<&'c [u8], LayerError> {
        let p = i / INDEX_PAGE_ENTRIES;
        if cur.page.is_empty() || cur.page_no != p {
            cur.page = self.index_page(p, cur.cache)?;
            cur.page_no = p;
        }
        let entry_size = self.footer.kind.entry_size();
        let at = (i % INDEX_PAGE_ENTRIES) * entry_size;
        (cur.page.get(at..at + entry_size))
            .ok_or_else(|| self.corrupt(format!("index entry {i} is past the end")))
    }

    /// The id of entry `i`.
    pub fn id<'c>(&self, cur: &'c mut IndexCursor, i: usize) -> Result<&'c [u8], LayerError> {
        let id_len = self.footer.kind.id_len();
        Ok(self.entry(cur, i)?.get(..id_len).unwrap_or_default())
    }

    /// Entry ids `range`, copied out, read as a scan (not cached).
    pub fn ids(&self, range: Range<usize>) -> Result<Vec<Vec<u8>>, LayerError> {
        let mut cur = IndexCursor::scan();
        range
            .map(|i| self.id(&mut cur, i).map(<[u8]>::to_vec))
            .collect()
    }

    fn fence(&self, p: usize) -> &[u8] {
        let id_len = self.footer.kind.id_len();
        (self.fences.get(p * id_len..(p + 1) * id_len)).unwrap_or_default()
    }

    /// The first entry whose id is not less than `target`: a search of the page fences in memory, then of
    /// one index page.
    pub fn lower_bound(&self, cur: &mut IndexCursor, target: &[u8]) -> Result<usize, LayerError> {
        let (mut lo, mut hi) = (0, self.page_crcs.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if id_less(self.fence(mid), target) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(0);
        }
        // Page lo-1 starts below target and page lo (if any) at or above it.
        let first = (lo - 1) * INDEX_PAGE_ENTRIES;
        let page_end = (first + INDEX_PAGE_ENTRIES).min(self.entry_count);
        self.first_not_less(cur, first + 1..page_end, target)
    }

    /// The entries whose ids are in `[start, end)`. The end is searched from the start outwards (galloping):
    /// a point read's range holds a few versions of one key, found in a few comparisons on the index page
    /// already at hand instead of a second whole search.
    pub fn id_range(
        &self,
        cur: &mut IndexCursor,
        start: &[u8],
        end: &[u8],
    ) -> Result<Range<usize>, LayerError> {
        let lo = self.lower_bound(cur, start)?;
        // Entries [lo, below) are known to be less than `end`; probe 1, 2, 4, ... entries further.
        let mut below = lo;
        let mut step = 1;
        loop {
            let probe = below + step - 1;
            if probe >= self.entry_count {
                return Ok(lo..self.first_not_less(cur, below..self.entry_count, end)?);
            }
            if !id_less(self.id(cur, probe)?, end) {
                return Ok(lo..self.first_not_less(cur, below..probe, end)?);
            }
            below = probe + 1;
            if step >= INDEX_PAGE_ENTRIES {
                // A long range (a scan of many keys): a whole search from here.
                return Ok(lo..self.lower_bound(cur, end)?);
            }
            step *= 2;
        }
    }

    /// The first entry of `range` whose id is not less than `target`, or `range.end` (a binary search; the
    /// entry at `range.end`, if any, must not be less than `target`).
    fn first_not_less(
        &self,
        cur: &mut IndexCursor,
        range: Range<usize>,
        target: &[u8],
    ) -> Result<usize, LayerError> {
        let (mut lo, mut hi) = (range.start, range.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if id_less(self.id(cur, mid)?, target) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Where entry `i`'s block starts; for `i == entry_count`, where the index starts (the end of the blocks).
    pub(crate) fn block_start(&self, cur: &mut IndexCursor, i: usize) -> Result<u64, LayerError> {
        if i >= self.entry_count {
            return Ok(self.footer.index_offset);
        }
        let id_len = self.footer.kind.id_len();
        Ok(u64_at(self.entry(cur, i)?, id_len))
    }

    /// Reads every block and checks its crc (the footer and index were checked at open): the whole file is
    /// what was written. Used before an upload, so that damage never reaches remote storage.
    pub fn verify_blocks(&self) -> Result<(), LayerError> {
        for block in self.blocks_scan(0..self.entry_count()) {
            block?;
        }
        Ok(())
    }

    /// The verified payloads of entries `range`, read in chunks of up to `READ_CHUNK`.
    pub fn blocks(&self, range: Range<usize>) -> Blocks<'_> {
        self.blocks_with(range, IndexCursor::new())
    }

    /// [`blocks`](Self::blocks) for a read of a whole layer: its index pages are not cached.
    pub fn blocks_scan(&self, range: Range<usize>) -> Blocks<'_> {
        self.blocks_with(range, IndexCursor::scan())
    }

    fn blocks_with(&self, range: Range<usize>, cursor: IndexCursor) -> Blocks<'_> {
        Blocks {
            layer: self,
            cursor,
            next: range.start,
            end: range.end.min(self.entry_count()),
            chunk: Bytes::new(),
            chunk_start: 0,
            failed: false,
        }
    }

    /// The verified payloads of entries `range`, last entry first, read in chunks of `READ_CHUNK_REV_FIRST`
    /// bytes, then growing (so that a reader stopping early reads little).
    pub fn blocks_rev(&self, range: Range<usize>) -> BlocksRev<'_> {
        BlocksRev {
            layer: self,
            cursor: IndexCursor::new(),
            start: range.start,
            next: range.end.min(self.entry_count()),
            chunk: Bytes::new(),
            chunk_start: 0,
            limit: READ_CHUNK_REV_FIRST,
            failed: false,
        }
    }

    /// Blocks `[first, end)` where `first >= start` is as low as fits `limit` bytes (at least one block).
    fn read_chunk_rev(
        &self,
        cur: &mut IndexCursor,
        start: usize,
        end: usize,
        limit: u64,
    ) -> Result<(u64, Bytes), LayerError> {
        let stop = self.block_start(cur, end)?;
        let mut first = end - 1;
        while first > start && stop.saturating_sub(self.block_start(cur, first - 1)?) <= limit {
            first -= 1;
        }
        let begin = self.block_start(cur, first)?;
        self.read_range(begin, stop)
    }

    fn read_chunk(
        &self,
        cur: &mut IndexCursor,
        from: usize,
        end: usize,
    ) -> Result<(u64, Bytes), LayerError> {
        let start = self.block_start(cur, from)?;
        let mut stop = self.block_start(cur, from + 1)?;
        let mut j = from + 1;
        while j < end {
            let next = self.block_start(cur, j + 1)?;
            if next.saturating_sub(start) > READ_CHUNK {
                break;
            }
            stop = next;
            j += 1;
        }
        self.read_range(start, stop)
    }

    fn read_range(&self, start: u64, stop: u64) -> Result<(u64, Bytes), LayerError> {
        let len = usize::try_from(stop.saturating_sub(start))
            .map_err(|_| self.corrupt("block too large"))?;
        let buf = read_exact_at_uninit(&self.file, len, start)
            .map_err(io_err(&self.path, "read blocks"))?;
        Ok((start, Bytes::from(buf)))
    }

    /// Entry `i`'s id and payload from `chunk` (which starts at file offset `chunk_start`), its crc checked.
    fn payload(
        &self,
        cur: &mut IndexCursor,
        chunk: &Bytes,
        chunk_start: u64,
        i: usize,
    ) -> Result<(EntryId, Bytes), LayerError> {
        let (start, end) = (self.block_start(cur, i)?, self.block_start(cur, i + 1)?);
        let rel = |o: u64| usize::try_from(o.wrapping_sub(chunk_start)).unwrap_or(usize::MAX);
        let block = (chunk.get(rel(start)..rel(end)))
            .ok_or_else(|| self.corrupt(format!("block {i} is not where the index says")))?;
        let (body, crc) = (block.split_last_chunk::<BLOCK_CRC_SIZE>())
            .ok_or_else(|| self.corrupt(format!("block {i} is shorter than its crc")))?;
        let id = self.id(cur, i)?;
        let (expected, got) = (u32::from_be_bytes(*crc), block_crc(id, body));
        if expected != got {
            return Err(LayerError::Checksum {
                path: self.path.clone(),
                what: format!("block {i} ({})", describe_id(self.footer.kind, id)),
                expected,
                got,
            });
        }
        let mut copied: EntryId = [0; KEY_SIZE + 8];
        copied[..id.len()].copy_from_slice(id);
        // Share the read buffer only when it holds this block alone, so that a kept value does not pin a
        // whole chunk of other values.
        if block.len() == chunk.len() {
            Ok((copied, chunk.slice(..body.len())))
        } else {
            Ok((copied, Bytes::copy_from_slice(body)))
        }
    }
}

/// `len` bytes of `file` at `offset`, read into a buffer that is not zeroed first (a point read's `calloc`
/// and the kernel's zeroing of it were a few percent of a GetPage that needs redo).
fn read_exact_at_uninit(file: &File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut done = 0;
    while done < len {
        let at = offset
            .checked_add(done as u64)
            .and_then(|o| i64::try_from(o).ok())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the destination is the `len - done` bytes of spare capacity after the `done` bytes read so
        // far; pread(2) writes at most that many, and only the bytes it reports are counted as initialised.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(done).cast(),
                len - done,
                at,
            )
        };
        match n {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    // SAFETY: pread(2) initialised all `len` bytes.
    unsafe { buf.set_len(len) };
    Ok(buf)
}

/// An entry id, copied out of the index: a delta's key and LSN, or an image's key followed by zeros.
pub(crate) type EntryId = [u8; KEY_SIZE + 8];

/// A verified block: (entry number, entry id, payload).
pub(crate) type Block = (usize, EntryId, Bytes);

/// Iterator over verified blocks. Stops after the first error.
pub(crate) struct Blocks<'a> {
    layer: &'a LayerFile,
    cursor: IndexCursor,
    next: usize,
    end: usize,
    chunk: Bytes,
    chunk_start: u64,
    failed: bool,
}

impl Blocks<'_> {
    fn step(&mut self) -> Result<Block, LayerError> {
        let (layer, cur, i) = (self.layer, &mut self.cursor, self.next);
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        let in_chunk = !self.chunk.is_empty()
            && layer.block_start(cur, i)? >= self.chunk_start
            && layer.block_start(cur, i + 1)? <= chunk_end;
        if !in_chunk {
            (self.chunk_start, self.chunk) = layer.read_chunk(cur, i, self.end)?;
        }
        self.next += 1;
        let (id, payload) = layer.payload(cur, &self.chunk, self.chunk_start, i)?;
        Ok((i, id, payload))
    }
}

impl Iterator for Blocks<'_> {
    type Item = Result<Block, LayerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.end {
            return None;
        }
        let result = self.step();
        self.failed = result.is_err();
        Some(result)
    }
}

/// Iterator over verified block payloads, last entry first. Stops after the first error.
pub(crate) struct BlocksRev<'a> {
    layer: &'a LayerFile,
    cursor: IndexCursor,
    start: usize,
    /// One past the next entry to yield.
    next: usize,
    chunk: Bytes,
    chunk_start: u64,
    /// The size of the next read: doubles with each read of the walk.
    limit: u64,
    failed: bool,
}

impl BlocksRev<'_> {
    fn step(&mut self) -> Result<Block, LayerError> {
        let (layer, cur) = (self.layer, &mut self.cursor);
        let i = self.next - 1;
        let in_chunk = !self.chunk.is_empty() && layer.block_start(cur, i)? >= self.chunk_start;
        if !in_chunk {
            (self.chunk_start, self.chunk) =
                layer.read_chunk_rev(cur, self.start, i + 1, self.limit)?;
            self.limit = (self.limit * 2).min(READ_CHUNK_REV_MAX);
        }
        self.next = i;
        let (id, payload) = layer.payload(cur, &self.chunk, self.chunk_start, i)?;
        Ok((i, id, payload))
    }
}

impl Iterator for BlocksRev<'_> {
    type Item = Result<Block, LayerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next <= self.start {
            return None;
        }
        let result = self.step();
        self.failed = result.is_err();
        Some(result)
    }
}

/// Streams blocks to `<dir>/<name>.tmp`, keeps the index in memory, and on [`finish`](Self::finish) appends
/// index and footer, fsyncs, renames to `<dir>/<name>` and fsyncs the directory. Dropped unfinished, it
/// removes the temp file. After a failed write it refuses further writes.
pub(crate) struct LayerFileWriter {
    name: LayerName,
    dir: PathBuf,
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    data_len: u64,
    index: Vec<u8>,
    failed: bool,
    /// Set once the temp file has its final name: from then on it is not ours to remove.
    renamed: bool,
}

impl LayerFileWriter {
    /// Creates (or truncates a stale) `<dir>/<name>.tmp`.
    pub fn create(dir: &Path, name: LayerName) -> Result<LayerFileWriter, LayerError> {
        let tmp_path = dir.join(format!("{name}.tmp"));
        let file = (OpenOptions::new().write(true).create(true).truncate(true))
            .open(&tmp_path)
            .map_err(io_err(&tmp_path, "create"))?;
        Ok(LayerFileWriter {
            name,
            dir: dir.to_path_buf(),
            tmp_path,
            out: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            data_len: 0,
            index: Vec::new(),
            failed: false,
            renamed: false,
        })
    }

    pub fn tmp_path(&self) -> &Path {
        &self.tmp_path
    }

    fn write(&mut self, bytes: &[u8], op: &'static str) -> Result<(), LayerError> {
        let out = match (self.failed, self.out.as_mut()) {
            (false, Some(out)) => out,
            _ => {
                return Err(LayerError::WriterFailed {
                    path: self.tmp_path.clone(),
                });
            }
        };
        out.write_all(bytes).map_err(|e| {
            self.failed = true;
            io_err(&self.tmp_path, op)(e)
        })
    }

    /// Appends the block of entry `id` (callers check order and ranges first).
    pub fn append(&mut self, id: &[u8], payload: &[u8]) -> Result<(), LayerError> {
        let crc = block_crc(id, payload);
        self.write(payload, "write block")?;
        self.write(&crc.to_be_bytes(), "write block")?;
        self.index.extend_from_slice(id);
        self.index.extend_from_slice(&self.data_len.to_be_bytes());
        self.data_len += (payload.len() + BLOCK_CRC_SIZE) as u64;
        Ok(())
    }

    /// Narrows the key range's end before `finish` (the final name and the footer use it); the temp file keeps
    /// its name. Callers check that every key written is below `end`.
    pub fn set_key_end(&mut self, end: Key) {
        self.name = match &self.name {
            LayerName::Delta {
                key_range,
                lsn_range,
            } => LayerName::Delta {
                key_range: key_range.start..end,
                lsn_range: lsn_range.clone(),
            },
            LayerName::Image { key_range, lsn } => LayerName::Image {
                key_range: key_range.start..end,
                lsn: *lsn,
            },
        };
    }

    /// Writes index and footer, makes the file durable under its final name, and returns that path.
    pub fn finish(mut self) -> Result<PathBuf, LayerError> {
        let kind = LayerKind::of(&self.name);
        let footer = Footer {
            kind,
            key_range: self.name.key_range().clone(),
            lsn_range: self.name.lsn_range(),
            index_offset: self.data_len,
            index_len: self.index.len() as u64,
            entry_count: (self.index.len() / kind.entry_size()) as u64,
            index_crc: crc32c::crc32c(&self.index),
        };
        let index = std::mem::take(&mut self.index);
        self.write(&index, "write index")?;
        self.write(&footer.encode(), "write footer")?;
        let out = self.out.take().ok_or_else(|| LayerError::WriterFailed {
            path: self.tmp_path.clone(),
        })?;
        let file = out
            .into_inner()
            .map_err(|e| io_err(&self.tmp_path, "flush")(e.into_error()))?;
        file.sync_all().map_err(io_err(&self.tmp_path, "fsync"))?;
        drop(file);
        let final_path = self.dir.join(self.name.to_string());
        crate::failpoint::hit("layer-before-rename");
        std::fs::rename(&self.tmp_path, &final_path).map_err(io_err(&self.tmp_path, "rename"))?;
        self.renamed = true;
        let dir = File::open(&self.dir).map_err(io_err(&self.dir, "open directory"))?;
        dir.sync_all()
            .map_err(io_err(&self.dir, "fsync directory"))?;
        Ok(final_path)
    }
}

impl Drop for LayerFileWriter {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            // Discard the buffer rather than flush it into a file that is about to go.
            drop(out.into_parts());
        }
        if !self.renamed {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::id_less;

    /// `id_less` orders byte strings as slices do: every pair of a set of ids of 18 and 26 bytes (and some
    /// shorter) that differ at each position, or only in length.
    #[test]
    fn id_less_orders_as_slices_do() {
        let mut ids: Vec<Vec<u8>> = Vec::new();
        for len in [0, 1, 7, 8, 9, 16, 18, 26] {
            ids.push(vec![0x80; len]);
            for at in 0..len {
                for b in [0x00, 0x7F, 0x81, 0xFF] {
                    let mut id = vec![0x80; len];
                    id[at] = b;
                    ids.push(id);
                }
            }
        }
        for a in &ids {
            for b in &ids {
                assert_eq!(id_less(a, b), a < b, "{a:02x?} < {b:02x?}");
            }
        }
    }
}
