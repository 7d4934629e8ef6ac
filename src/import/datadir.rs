//! Import of a PostgreSQL 15 data directory into a timeline at one LSN, from a directory on disk
//! ([`import_dir`]) or from a tar stream ([`import_tar`]: `pg_basebackup -Ft -X none`'s `base.tar`, or a Neon
//! basebackup). Both sources feed the same [`Importer`] entry by entry, so they map files to keys alike
//! (docs/repository.md, "Importing a data directory"):
//!
//! - relation files (`global/<rel>`, `base/<db>/<rel>[_fsm|_vm|_init][.segno]`): every block as an image,
//!   the size of each fork, the relation directory of each database, the database directory;
//! - `pg_filenode.map` files, SLRU segments (`pg_xact`, `pg_multixact/{offsets,members}`), two-phase state
//!   files (CRC checked and stripped), `global/pg_control` (CRC checked) and its checkpoint;
//! - what is skipped, and why, is in [`super::names`]; `backup_label` is read for its LSNs;
//!   custom tablespaces are refused.
//!
//! Streaming: each block goes to the timeline's open in-memory layer (whose values live in an ephemeral
//! file) as soon as it is read; a blocking thread reads and a bounded channel carries batches to the writer.
//!
//! LSN rules: every value is put at `lsn`, which must be above the timeline's last record; only when the
//! whole source was read is `finish_write(lsn, prev)` called. On an error the timeline is left with
//! unpublished values above its last record: the caller created it for this import and must delete it.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::importer::Importer;
use crate::pg::Lsn;
use crate::repository::timeline::{PutError, Timeline};
use crate::repository::{Key, Value};

/// What an import read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Databases, `global` (1664, 0) included.
    pub databases: usize,
    /// Relations (distinct relfilenodes) and their forks.
    pub relations: usize,
    pub rel_forks: usize,
    /// Relation blocks.
    pub blocks: u64,
    pub slru_segments: usize,
    pub slru_blocks: u64,
    pub twophase_files: usize,
    pub relmap_files: usize,
    /// Bytes of the imported files.
    pub bytes: u64,
    /// Files skipped on purpose or unknown.
    pub skipped: u64,
    /// From `backup_label`, if the source had one (a base backup).
    pub backup_label_start_lsn: Option<Lsn>,
    pub backup_label_checkpoint_lsn: Option<Lsn>,
    /// From pg_control: where its last checkpoint record starts, and that checkpoint's redo point.
    pub control_checkpoint_lsn: Lsn,
    pub control_redo_lsn: Lsn,
    pub system_identifier: u64,
}

/// Everything names the entry (path in the data directory or archive) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("a data directory of PostgreSQL {got} cannot go into a PostgreSQL {expected} timeline")]
    WrongVersion {
        expected: crate::pg::PgVersion,
        got: crate::pg::PgVersion,
    },
    #[error("{entry}: {source}")]
    Io {
        entry: String,
        source: std::io::Error,
    },
    #[error("malformed tar archive (after entry {}): {source}", after.as_deref().unwrap_or("none"))]
    Tar {
        after: Option<String>,
        source: std::io::Error,
    },
    #[error("{entry}: bad name: {reason}")]
    BadName { entry: String, reason: String },
    #[error("{entry}: size {size} is not a multiple of the 8192-byte block")]
    NotBlockAligned { entry: String, size: u64 },
    #[error("{entry}: truncated: expected {expected} bytes, got {got}")]
    Truncated {
        entry: String,
        expected: u64,
        got: u64,
    },
    #[error("{entry}: checksum mismatch: expected {expected:08x}, got {got:08x}")]
    Checksum {
        entry: String,
        expected: u32,
        got: u32,
    },
    #[error("{entry}: {msg}")]
    Invalid { entry: String, msg: String },
    #[error("{entry}: appears twice")]
    Duplicate { entry: String },
    #[error("{entry}: custom tablespaces are not supported yet")]
    Tablespace { entry: String },
    #[error("{entry}: unsupported entry type ({kind})")]
    UnsupportedEntry { entry: String, kind: String },
    #[error("no global/pg_control: the data directory or archive is incomplete")]
    MissingControlFile,
    #[error("import LSN {lsn} is not above the timeline's last record {last}")]
    LsnNotAboveLast { lsn: Lsn, last: Lsn },
    #[error(transparent)]
    Put(#[from] PutError),
    #[error("the import was abandoned")]
    Cancelled,
    #[error("import task panicked: {0}")]
    Panicked(String),
}

/// Values per channel message, and messages in flight: at most 4 × 256 pages (8 MiB) are buffered.
const BATCH: usize = 256;
const BATCHES_IN_FLIGHT: usize = 4;

/// Imports the data directory `pgdata` into `tl` at `lsn` (see the module doc for the LSN rules).
pub async fn import_dir(
    tl: &Timeline,
    pgdata: &Path,
    lsn: Lsn,
    prev: Option<Lsn>,
) -> Result<ImportStats, ImportError> {
    let pgdata = pgdata.to_path_buf();
    let version = tl.pg_version;
    import_with(tl, lsn, prev, move |sink| scan_dir(&pgdata, version, sink)).await
}

/// Imports a tar archive of a data directory, read from `tar` on a blocking thread.
pub async fn import_tar<R: Read + Send + 'static>(
    tl: &Timeline,
    tar: R,
    lsn: Lsn,
    prev: Option<Lsn>,
) -> Result<ImportStats, ImportError> {
    import_tar_sized(tl, tar, lsn, prev, None).await
}

/// [`import_tar`] of an archive of `total` bytes (if known): the bytes read are its progress
/// ([`crate::progress`]: `GET /v1/progress`, and the log).
pub async fn import_tar_sized<R: Read + Send + 'static>(
    tl: &Timeline,
    tar: R,
    lsn: Lsn,
    prev: Option<Lsn>,
    total: Option<u64>,
) -> Result<ImportStats, ImportError> {
    let progress = crate::progress::start(
        crate::progress::Kind::Import,
        format!("a data directory at {lsn}"),
        Some(tl.tenant_id),
        Some(tl.timeline_id),
        "bytes",
        total,
    );
    let tar = crate::progress::CountingReader::new(tar, progress);
    let version = tl.pg_version;
    import_with(tl, lsn, prev, move |sink| scan_tar(tar, version, sink)).await
}

/// Runs `scan` on a blocking thread, putting what it yields at `lsn` while holding the timeline's writer.
async fn import_with(
    tl: &Timeline,
    lsn: Lsn,
    prev: Option<Lsn>,
    scan: impl FnOnce(
        &mut dyn FnMut(Key, Bytes) -> Result<(), ImportError>,
    ) -> Result<ImportStats, ImportError>
    + Send
    + 'static,
) -> Result<ImportStats, ImportError> {
    let writer = tl.writer().await;
    let last = tl.last_record_lsn();
    if lsn <= last {
        return Err(ImportError::LsnNotAboveLast { lsn, last });
    }
    let (tx, mut rx) = mpsc::channel::<Vec<(Key, Bytes)>>(BATCHES_IN_FLIGHT);
    let producer = tokio::task::spawn_blocking(move || -> Result<ImportStats, ImportError> {
        let mut batch = Vec::with_capacity(BATCH);
        let mut send = |key: Key, value: Bytes| {
            batch.push((key, value));
            if batch.len() >= BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                // The receiver is gone only when the writer failed; its error is the one reported.
                tx.blocking_send(full).map_err(|_| ImportError::Cancelled)?;
            }
            Ok(())
        };
        let stats = scan(&mut send)?;
        if !batch.is_empty() {
            tx.blocking_send(batch)
                .map_err(|_| ImportError::Cancelled)?;
        }
        Ok(stats)
    });
    let mut put_error = None;
    'recv: while let Some(batch) = rx.recv().await {
        for (key, value) in batch {
            if let Err(e) = writer.put(key, lsn, &Value::Image(value)) {
                put_error = Some(e);
                break 'recv;
            }
        }
    }
    drop(rx);
    let scanned = producer
        .await
        .map_err(|e| ImportError::Panicked(e.to_string()))?;
    if let Some(e) = put_error {
        return Err(e.into());
    }
    let stats = scanned?;
    writer.finish_write(lsn, prev);
    Ok(stats)
}

/// Reads the data directory `root`, handing every value to `sink`. Entries are taken in name order;
/// directories that are skipped are not entered; symbolic links are not followed.
pub fn scan_dir(
    root: &Path,
    version: crate::pg::PgVersion,
    sink: impl FnMut(Key, Bytes) -> Result<(), ImportError>,
) -> Result<ImportStats, ImportError> {
    let mut importer = Importer::new(sink, version);
    walk(&mut importer, root, "")?;
    importer.finish()
}

fn walk<F: FnMut(Key, Bytes) -> Result<(), ImportError>>(
    importer: &mut Importer<F>,
    root: &Path,
    rel: &str,
) -> Result<(), ImportError> {
    let dir: PathBuf = root.join(rel);
    let io = |entry: &str| {
        let entry = if entry.is_empty() { "." } else { entry }.to_string();
        move |source| ImportError::Io { entry, source }
    };
    let mut entries = std::fs::read_dir(&dir)
        .map_err(io(rel))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(rel))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let path = match (rel, name.to_str()) {
            (_, None) => {
                return Err(ImportError::BadName {
                    entry: format!("{rel}/{}", name.to_string_lossy()),
                    reason: "not UTF-8".into(),
                });
            }
            ("", Some(name)) => name.to_string(),
            (_, Some(name)) => format!("{rel}/{name}"),
        };
        let meta = std::fs::symlink_metadata(e.path()).map_err(io(&path))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            if importer.dir(&path)? {
                walk(importer, root, &path)?;
            }
        } else if kind.is_file() {
            let mut file = std::fs::File::open(e.path()).map_err(io(&path))?;
            importer.file(&path, meta.len(), &mut file)?;
        } else if kind.is_symlink() {
            importer.other(&path, "symbolic link")?;
        } else {
            importer.other(&path, "special file")?;
        }
    }
    Ok(())
}

/// Reads a tar archive of a data directory, handing every value to `sink`.
pub fn scan_tar(
    tar: impl Read,
    version: crate::pg::PgVersion,
    sink: impl FnMut(Key, Bytes) -> Result<(), ImportError>,
) -> Result<ImportStats, ImportError> {
    let mut importer = Importer::new(sink, version);
    let mut archive = tar::Archive::new(tar);
    let mut last: Option<String> = None;
    let entries = archive.entries().map_err(|source| ImportError::Tar {
        after: None,
        source,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| ImportError::Tar {
            after: last.clone(),
            source,
        })?;
        let path = String::from_utf8(entry.path_bytes().into_owned()).map_err(|e| {
            ImportError::BadName {
                entry: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                reason: "not UTF-8".into(),
            }
        })?;
        let kind = entry.header().entry_type();
        if kind.is_file() {
            let size = entry.size();
            importer.file(&path, size, &mut entry)?;
        } else if kind.is_dir() {
            importer.dir(&path)?;
        } else if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            // Metadata of the archive or of the next entry, already applied by the tar reader.
        } else if kind.is_symlink() {
            importer.other(&path, "symbolic link")?;
        } else if kind.is_hard_link() {
            importer.other(&path, "hard link")?;
        } else {
            importer.other(
                &path,
                &format!("tar entry type {:?}", kind.as_byte() as char),
            )?;
        }
        last = Some(path);
    }
    importer.finish()
}
