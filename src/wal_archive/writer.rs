//! The archive of one timeline: the raw WAL it receives, cut into segments in a local spool, each completed
//! segment hashed and chained to the one before, then uploaded by [`super::uploader`].
//!
//! Spool (`<timeline dir>/wal_spool/`): `<segment>.<start:016X>.open` is the segment being written (its bytes
//! are the WAL from `start`); a completed one becomes `<segment>.done` with its manifest `<segment>.done.json`
//! until both are uploaded. A restart continues from what it finds there and in the store.
//!
//! Invariants:
//! - the archive is contiguous: bytes are appended at its end only; bytes below the end are skipped (a
//!   reconnect repeats them), bytes above it are refused ([`ArchiveError::Gap`]);
//! - the first byte of a timeline with a base is at the base's LSN, and the first segment's `prev_sha256` is
//!   the base's sha256;
//! - the archive holds the WAL of one PostgreSQL system ([`ArchiveError::ForeignSystem`]);
//! - [`WalArchive::durable_lsn`] is the end of what is in the store (with remote storage: uploaded) or, on a
//!   node without, fsynced in the spool; the receiver reports no more than that as flushed.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::manifest::{
    ArchiveObject, BaseManifest, SegmentManifest, Sha256Digest, base_objects, now_secs,
    parse_object_name, segment_name,
};
use super::store::ArchiveStore;
use crate::config::TenantConfig;
use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;
use crate::pg::constants::DEFAULT_WAL_SEGMENT_SIZE;
use crate::remote_storage::RemoteError;
use crate::remote_storage::index::Generation;

pub const SPOOL_DIR: &str = "wal_spool";
const OPEN_SUFFIX: &str = ".open";
const DONE_SUFFIX: &str = ".done";
const DONE_MANIFEST_SUFFIX: &str = ".done.json";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("WAL archive ends at {end}; WAL from {lsn} would leave a gap")]
    Gap { end: Lsn, lsn: Lsn },
    #[error("the archive's first WAL must start at its base's LSN {base}, not at {lsn}")]
    NotAtBase { base: Lsn, lsn: Lsn },
    #[error("WAL of system {got} cannot go into an archive of system {expected}")]
    ForeignSystem { expected: u64, got: u64 },
    #[error("WAL archive spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("WAL archive spool {path}: {msg}")]
    Spool { path: PathBuf, msg: String },
    #[error("WAL archive store: {0}")]
    Store(#[from] RemoteError),
    #[error("WAL archive: {0}")]
    Manifest(#[from] super::manifest::ManifestError),
    #[error("WAL archive: timeline is shutting down")]
    Cancelled,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the archive of a timeline is doing, for timeline detail.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiveStatus {
    /// The end of the WAL archived (spooled or uploaded); None before any.
    pub end_lsn: Option<Lsn>,
    /// The end of what is in the store.
    pub uploaded_lsn: Option<Lsn>,
    pub segments_uploaded: u64,
    pub partials_uploaded: u64,
    pub bytes_uploaded: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub base_lsn: Option<Lsn>,
    /// The PostgreSQL system whose WAL the archive holds, once known.
    pub system_identifier: Option<u64>,
}

pub(super) struct OpenSegment {
    pub segno: u64,
    pub start: Lsn,
    pub len: u64,
    pub synced: u64,
    pub file: File,
    pub path: PathBuf,
    pub hasher: Sha256,
}

impl OpenSegment {
    pub fn end(&self) -> Lsn {
        self.start + self.len
    }
}

/// A completed segment in the spool, waiting for its upload.
#[derive(Clone)]
pub(super) struct Ready {
    pub manifest: SegmentManifest,
    pub data: PathBuf,
    pub manifest_path: PathBuf,
}

pub(super) struct State {
    pub system_id: Option<u64>,
    pub tli: u32,
    pub base: Option<BaseManifest>,
    /// End of the archived WAL; None before the first byte.
    pub end: Option<Lsn>,
    /// The last completed segment: its number and sha256 (the next one's prev_sha256).
    pub last_complete: Option<(u64, Sha256Digest)>,
    pub open: Option<OpenSegment>,
    pub ready: VecDeque<Ready>,
    /// End of what is in the store.
    pub uploaded: Option<Lsn>,
    /// Partial objects of the open segment in the store: (segno, data, manifest).
    pub partials: Vec<(u64, String, String)>,
}

pub struct WalArchive {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub store: ArchiveStore,
    pub generation: Generation,
    pub(super) spool: PathBuf,
    pub(super) seg_size: u32,
    pub(super) pg_version: u32,
    pub(super) conf: Arc<RwLock<TenantConfig>>,
    pub(super) state: tokio::sync::Mutex<Option<State>>,
    /// The durable end (see the module doc); 0 while nothing is archived.
    pub(super) durable: AtomicU64,
    pub(super) wakeup: Notify,
    pub(super) partial_requested: AtomicBool,
    pub(super) status: Mutex<ArchiveStatus>,
}

impl std::fmt::Debug for WalArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalArchive")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl WalArchive {
    pub fn new(
        tenant_id: TenantId,
        timeline_id: TimelineId,
        store: ArchiveStore,
        generation: Generation,
        timeline_dir: &Path,
        pg_version: u32,
        conf: Arc<RwLock<TenantConfig>>,
    ) -> WalArchive {
        WalArchive {
            tenant_id,
            timeline_id,
            store,
            generation,
            spool: timeline_dir.join(SPOOL_DIR),
            seg_size: DEFAULT_WAL_SEGMENT_SIZE,
            pg_version,
            conf,
            state: tokio::sync::Mutex::new(None),
            durable: AtomicU64::new(0),
            wakeup: Notify::new(),
            partial_requested: AtomicBool::new(false),
            status: Mutex::new(ArchiveStatus::default()),
        }
    }

    pub fn status(&self) -> ArchiveStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_status(&self, f: impl FnOnce(&mut ArchiveStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// What the source may let go of as far as the archive is concerned; None while it holds nothing.
    pub fn durable_lsn(&self) -> Option<Lsn> {
        match self.durable.load(Ordering::Acquire) {
            0 => None,
            l => Some(Lsn(l)),
        }
    }

    pub(super) fn set_durable(&self, lsn: Lsn) {
        self.durable.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// Loads the archive's state (once) and checks that WAL of `system_id` may go into it; returns the end of
    /// the archived WAL (None: nothing archived yet), where the next stream must start at the latest.
    pub async fn begin(&self, system_id: u64, tli: u32) -> Result<Option<Lsn>, ArchiveError> {
        let mut guard = self.loaded().await?;
        let st = guard.as_mut().expect("loaded");
        match st.system_id {
            Some(expected) if expected != system_id => {
                return Err(ArchiveError::ForeignSystem {
                    expected,
                    got: system_id,
                });
            }
            _ => st.system_id = Some(system_id),
        }
        self.set_status(|s| s.system_identifier = Some(system_id));
        if st.end.is_none() {
            st.tli = tli;
        }
        Ok(st.end)
    }

    /// The PostgreSQL system the archive holds WAL of, once known (loaded or begun).
    pub async fn system_id(&self) -> Option<u64> {
        self.state.lock().await.as_ref().and_then(|s| s.system_id)
    }

    /// The state, loaded from the spool and the store if this is the first use.
    pub(super) async fn loaded(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<State>>, ArchiveError> {
        let mut guard = self.state.lock().await;
        if guard.is_none() {
            let st = Box::pin(self.load()).await?;
            let end = st.end;
            let uploaded = st.uploaded;
            *guard = Some(st);
            if let Some(u) = uploaded {
                self.set_durable(u);
            }
            if !self.store.is_remote()
                && let Some(e) = end
            {
                // The spool was fsynced by the load.
                self.set_durable(e);
            }
            let system = guard.as_ref().and_then(|s| s.system_id);
            self.set_status(|s| {
                s.end_lsn = end;
                s.uploaded_lsn = uploaded;
                s.system_identifier = system;
            });
        }
        Ok(guard)
    }

    /// Rebuilds the state: the newest base and completed segment in the store, then the spool.
    async fn load(&self) -> Result<State, ArchiveError> {
        let mut st = State {
            system_id: None,
            tli: 1,
            base: None,
            end: None,
            last_complete: None,
            open: None,
            ready: VecDeque::new(),
            uploaded: None,
            partials: Vec::new(),
        };
        let objects = self.store.list().await?;
        let mut base_manifest: Option<(Generation, String)> = None;
        let mut last_segment: Option<(String, Generation, String)> = None;
        let mut partials: Vec<(String, Lsn, Generation, String)> = Vec::new();
        for o in &objects {
            match parse_object_name(&o.name, self.seg_size) {
                Some((ArchiveObject::BaseManifest, g))
                    if base_manifest.as_ref().is_none_or(|(bg, _)| g > *bg) =>
                {
                    base_manifest = Some((g, o.name.clone()));
                }
                Some((
                    ArchiveObject::Segment {
                        name,
                        manifest: true,
                    },
                    g,
                )) => {
                    let newer = last_segment
                        .as_ref()
                        .is_none_or(|(n, lg, _)| (&name, g) > (n, *lg));
                    if newer {
                        last_segment = Some((name, g, o.name.clone()));
                    }
                }
                Some((
                    ArchiveObject::Partial {
                        name,
                        end,
                        manifest: true,
                    },
                    g,
                )) => partials.push((name, end, g, o.name.clone())),
                _ => {}
            }
        }
        if let Some((_, name)) = base_manifest {
            let base = BaseManifest::from_json(&name, &self.store.get(&name).await?)?;
            st.system_id = Some(base.system_identifier);
            st.end = None;
            self.set_status(|s| s.base_lsn = Some(base.lsn));
            st.base = Some(base);
        }
        if let Some((_, _, name)) = &last_segment {
            let m = SegmentManifest::from_json(name, &self.store.get(name).await?)?;
            st.system_id = Some(m.system_identifier);
            st.tli = crate::pg::lsn::parse_wal_file_name(&m.segment, self.seg_size)
                .map_or(1, |(t, _)| t);
            st.last_complete = Some((m.segno(), m.sha256));
            st.end = Some(m.end_lsn);
            st.uploaded = Some(m.end_lsn);
        }
        self.load_spool(&mut st)?;
        if st.open.is_none() {
            self.resume_partial(&mut st, &partials).await?;
        } else {
            // Partials in the store of the open segment are replaced by the next partial upload.
            let segno = st.open.as_ref().map(|o| o.segno);
            for (name, end, g, manifest) in &partials {
                let seg = crate::pg::lsn::parse_wal_file_name(name, self.seg_size).map(|x| x.1);
                if seg == segno {
                    let (data, _) = super::manifest::partial_objects(name, *end, *g);
                    st.partials.push((seg.unwrap_or(0), data, manifest.clone()));
                    st.uploaded = st.uploaded.max(Some(*end));
                }
            }
        }
        Ok(st)
    }

    /// Completed segments waiting for upload, and the open segment, from the spool.
    fn load_spool(&self, st: &mut State) -> Result<(), ArchiveError> {
        std::fs::create_dir_all(&self.spool).map_err(io(&self.spool))?;
        let mut names: Vec<String> = std::fs::read_dir(&self.spool)
            .map_err(io(&self.spool))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        for name in &names {
            let Some(seg) = name.strip_suffix(DONE_MANIFEST_SUFFIX) else {
                continue;
            };
            let manifest_path = self.spool.join(name);
            let data = self.spool.join(format!("{seg}{DONE_SUFFIX}"));
            let bytes = std::fs::read(&manifest_path).map_err(io(&manifest_path))?;
            let m = SegmentManifest::from_json(name, &bytes)?;
            if st.last_complete.is_some_and(|(n, _)| m.segno() <= n) || !data.exists() {
                // Uploaded already (the process died before removing it), or torn.
                let _ = std::fs::remove_file(&data);
                let _ = std::fs::remove_file(&manifest_path);
                continue;
            }
            st.system_id = Some(m.system_identifier);
            st.last_complete = Some((m.segno(), m.sha256));
            st.end = Some(m.end_lsn);
            st.ready.push_back(Ready {
                manifest: m,
                data,
                manifest_path,
            });
        }
        for name in &names {
            let Some(stem) = name.strip_suffix(OPEN_SUFFIX) else {
                continue;
            };
            let path = self.spool.join(name);
            let parsed = stem.split_once('.').and_then(|(seg, start)| {
                let (_, segno) = crate::pg::lsn::parse_wal_file_name(seg, self.seg_size)?;
                Some((segno, Lsn(u64::from_str_radix(start, 16).ok()?)))
            });
            let Some((segno, start)) = parsed else {
                warn!(file = %path.display(), "removing an unknown file from the WAL spool");
                let _ = std::fs::remove_file(&path);
                continue;
            };
            if st.last_complete.is_some_and(|(n, _)| segno <= n) || st.open.is_some() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut len = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(io(&path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            file.sync_data().map_err(io(&path))?;
            let open = OpenSegment {
                segno,
                start,
                len,
                synced: len,
                file,
                path,
                hasher,
            };
            if let Some(end) = st.end
                && end != start
            {
                return Err(ArchiveError::Spool {
                    path: open.path.clone(),
                    msg: format!("starts at {start}, but the archive ends at {end}"),
                });
            }
            st.end = Some(open.end());
            st.open = Some(open);
        }
        Ok(())
    }

    /// With no open segment in the spool (an empty workdir): the newest partial of the next segment from the
    /// store becomes the open segment, after its sha256 is checked.
    async fn resume_partial(
        &self,
        st: &mut State,
        partials: &[(String, Lsn, Generation, String)],
    ) -> Result<(), ArchiveError> {
        let next = st.last_complete.map(|(n, _)| n + 1);
        let best = partials
            .iter()
            .filter(|(name, end, _, _)| {
                let seg = crate::pg::lsn::parse_wal_file_name(name, self.seg_size).map(|x| x.1);
                (next.is_none() || seg == next) && st.end.is_none_or(|e| *end > e)
            })
            .max_by_key(|(_, end, g, _)| (*end, *g));
        let Some((name, end, g, manifest_name)) = best else {
            return Ok(());
        };
        let m = SegmentManifest::from_json(manifest_name, &self.store.get(manifest_name).await?)?;
        let (data_name, _) = super::manifest::partial_objects(name, *end, *g);
        let data = self.store.get(&data_name).await?;
        if Sha256Digest::of(&data) != m.sha256 || data.len() as u64 != m.size {
            warn!(object = %data_name, "the newest partial segment does not match its manifest; not resumed");
            return Ok(());
        }
        if let Some(e) = st.end
            && e != m.start_lsn
        {
            warn!(object = %data_name, start = %m.start_lsn, end = %e, "the newest partial does not continue the archive; not resumed");
            return Ok(());
        }
        let mut open = self.create_open(m.segno(), m.start_lsn)?;
        open.file.write_all(&data).map_err(io(&open.path))?;
        open.file.sync_data().map_err(io(&open.path))?;
        open.hasher.update(&data);
        open.len = data.len() as u64;
        open.synced = open.len;
        st.system_id = Some(m.system_identifier);
        st.end = Some(open.end());
        st.uploaded = st.uploaded.max(Some(open.end()));
        st.partials
            .push((m.segno(), data_name, manifest_name.clone()));
        st.open = Some(open);
        info!(end = %m.end_lsn, "resumed the WAL archive from its newest partial segment");
        Ok(())
    }

    fn create_open(&self, segno: u64, start: Lsn) -> Result<OpenSegment, ArchiveError> {
        std::fs::create_dir_all(&self.spool).map_err(io(&self.spool))?;
        let name = segment_name(1, segno, self.seg_size);
        let path = self
            .spool
            .join(format!("{name}.{:016X}{OPEN_SUFFIX}", start.0));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        crate::durable::fsync_dir(&self.spool).map_err(io(&self.spool))?;
        Ok(OpenSegment {
            segno,
            start,
            len: 0,
            synced: 0,
            file,
            path,
            hasher: Sha256::new(),
        })
    }

    /// Appends WAL that starts at `lsn` (see the module doc for what is skipped and refused).
    pub async fn append(&self, lsn: Lsn, data: &[u8]) -> Result<(), ArchiveError> {
        let mut guard = self.loaded().await?;
        let st = guard.as_mut().expect("loaded");
        let (mut lsn, mut data) = (lsn, data);
        match st.end {
            Some(end) => {
                let stop = lsn + data.len() as u64;
                if stop <= end {
                    return Ok(());
                }
                if lsn < end {
                    data = &data[(end.0 - lsn.0) as usize..];
                    lsn = end;
                }
                if lsn > end {
                    return Err(ArchiveError::Gap { end, lsn });
                }
            }
            None => {
                if let Some(base) = &st.base
                    && base.lsn != lsn
                {
                    return Err(ArchiveError::NotAtBase {
                        base: base.lsn,
                        lsn,
                    });
                }
                // From here on nothing after `lsn` is durable until the store (or the spool's fsync) says so.
                self.set_durable(lsn);
            }
        }
        let seg = u64::from(self.seg_size);
        while !data.is_empty() {
            if st.open.is_none() {
                st.open = Some(self.create_open(lsn.segment_number(self.seg_size), lsn)?);
            }
            let open = st.open.as_mut().expect("just set");
            let seg_end = (open.segno + 1) * seg;
            let n = (data.len() as u64).min(seg_end - lsn.0) as usize;
            open.file.write_all(&data[..n]).map_err(io(&open.path))?;
            open.hasher.update(&data[..n]);
            open.len += n as u64;
            lsn = lsn + n as u64;
            data = &data[n..];
            st.end = Some(lsn);
            if lsn.0 == seg_end {
                self.complete(st).await?;
            }
        }
        self.set_status(|s| s.end_lsn = st.end);
        Ok(())
    }

    /// The open segment is full: fsync it, write its manifest, hand it to the uploader.
    async fn complete(&self, st: &mut State) -> Result<(), ArchiveError> {
        let open = st.open.take().expect("an open segment");
        let file = open.file.try_clone().map_err(io(&open.path))?;
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| ArchiveError::Io {
                path: open.path.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(io(&open.path))?;
        let name = segment_name(st.tli, open.segno, self.seg_size);
        let sha = Sha256Digest::from_hasher(open.hasher.clone());
        let prev = match st.last_complete {
            Some((_, s)) => Some(s),
            None => st.base.as_ref().map(|b| b.sha256),
        };
        let manifest = self.segment_manifest(st, &name, open.start, open.len, sha, prev, false);
        let data = self.spool.join(format!("{name}{DONE_SUFFIX}"));
        let manifest_file = format!("{name}{DONE_MANIFEST_SUFFIX}");
        crate::durable::write_atomic(
            &self.spool,
            &manifest_file,
            &manifest.to_json(),
            crate::durable::PLAIN_MODE,
        )
        .map_err(io(&self.spool))?;
        std::fs::rename(&open.path, &data).map_err(io(&data))?;
        crate::durable::fsync_dir(&self.spool).map_err(io(&self.spool))?;
        st.last_complete = Some((open.segno, sha));
        st.ready.push_back(Ready {
            manifest,
            data,
            manifest_path: self.spool.join(manifest_file),
        });
        if !self.store.is_remote() {
            self.set_durable(open.start + open.len);
        }
        self.wakeup.notify_one();
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn segment_manifest(
        &self,
        st: &State,
        name: &str,
        start: Lsn,
        size: u64,
        sha256: Sha256Digest,
        prev_sha256: Option<Sha256Digest>,
        partial: bool,
    ) -> SegmentManifest {
        SegmentManifest {
            format_version: super::manifest::MANIFEST_FORMAT_VERSION,
            tenant_id: self.tenant_id,
            timeline_id: self.timeline_id,
            segment: name.to_string(),
            partial,
            start_lsn: start,
            end_lsn: start + size,
            size,
            sha256,
            prev_sha256,
            system_identifier: st.system_id.unwrap_or(0),
            pg_version: self.pg_version,
            wal_segment_size: self.seg_size,
            generation: self.generation,
            created_at: now_secs(),
        }
    }

    /// On a node without remote storage, makes the spooled WAL durable (fsync); the receiver calls this
    /// before each status update. With remote storage, durability is the uploader's.
    pub async fn sync(&self) -> Result<(), ArchiveError> {
        if self.store.is_remote() {
            return Ok(());
        }
        let mut guard = self.state.lock().await;
        let Some(st) = guard.as_mut() else {
            return Ok(());
        };
        if let Some(open) = st.open.as_mut()
            && open.synced < open.len
        {
            let file = open.file.try_clone().map_err(io(&open.path))?;
            let path = open.path.clone();
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(|e| ArchiveError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e),
                })?
                .map_err(io(&path))?;
            open.synced = open.len;
        }
        if let Some(end) = st.end {
            self.set_durable(end);
        }
        Ok(())
    }

    /// Asks the uploader to upload the open segment's tail now (an idle or stopping source waits for it).
    pub fn request_partial(&self) {
        if self.durable_lsn() < self.status().end_lsn {
            self.partial_requested.store(true, Ordering::Release);
            self.wakeup.notify_one();
        }
    }

    /// Archives the base of the timeline: `zst` (a zstd-compressed tar of the data directory) is uploaded
    /// with its manifest, retried until `cancel`. Must come before any WAL.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_base(
        &self,
        kind: super::manifest::BaseKind,
        zst: Bytes,
        lsn: Lsn,
        prev_record_lsn: Option<Lsn>,
        system_identifier: u64,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<BaseManifest, ArchiveError> {
        let mut guard = self.loaded().await?;
        let st = guard.as_mut().expect("loaded");
        let manifest = BaseManifest {
            format_version: super::manifest::MANIFEST_FORMAT_VERSION,
            tenant_id: self.tenant_id,
            timeline_id: self.timeline_id,
            kind,
            lsn,
            prev_record_lsn,
            object: super::manifest::BASE_OBJECT.to_string(),
            size: zst.len() as u64,
            sha256: Sha256Digest::of(&zst),
            system_identifier,
            pg_version: self.pg_version,
            generation: self.generation,
            created_at: now_secs(),
        };
        let (data_name, manifest_name) = base_objects(self.generation);
        let len = zst.len() as u64;
        self.store.put(&data_name, zst, cancel, |_| {}).await?;
        self.store
            .put(
                &manifest_name,
                Bytes::from(manifest.to_json()),
                cancel,
                |_| {},
            )
            .await?;
        st.system_id = Some(system_identifier);
        st.base = Some(manifest.clone());
        self.set_status(|s| {
            s.base_lsn = Some(lsn);
            s.bytes_uploaded += len;
            s.system_identifier = Some(system_identifier);
        });
        info!(%lsn, bytes = len, sha256 = %manifest.sha256, "archived the timeline's base");
        Ok(manifest)
    }
}

/// A zstd-compressed tar of the data directory at `pgdata` (what initdb made), in memory.
pub fn tar_zst_of_dir(pgdata: &Path) -> std::io::Result<Vec<u8>> {
    let encoder = zstd::Encoder::new(Vec::new(), 3)?;
    let mut tar = tar::Builder::new(encoder);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", pgdata)?;
    tar.into_inner()?.finish()
}

/// `tar` (a file) zstd-compressed, in memory.
pub fn zst_of_file(tar: &Path) -> std::io::Result<Vec<u8>> {
    let file = File::open(tar)?;
    zstd::stream::encode_all(std::io::BufReader::new(file), 3)
}
