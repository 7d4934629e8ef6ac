//! The uploader of one timeline's archive: completed segments in order (data, then the manifest: the manifest
//! is the commit point), the open segment's tail every `wal_archive_partial_interval`, when asked (an idle
//! source) and at shutdown; then removal of what a newer object replaced, and of segments older than
//! `wal_archive_retention`. Transient store errors are retried until shutdown; the durable LSN only moves when
//! a manifest is in the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::manifest::{
    ArchiveObject, Sha256Digest, parse_object_name, partial_objects, segment_objects,
};
use super::writer::{ArchiveError, WalArchive};
use crate::pg::Lsn;

/// How long a shutdown waits for the last partial upload.
const SHUTDOWN_UPLOAD_BUDGET: Duration = Duration::from_secs(10);
/// How often retention is applied, at most (a shorter retention is applied as often as its length).
const RETENTION_EVERY: Duration = Duration::from_secs(600);

impl WalArchive {
    /// Runs until `cancel`, then uploads the tail once more.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_partial = Instant::now();
        let mut last_retention: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.state.lock().await.is_none() {
                // Nothing was archived by this process yet; the receiver loads the state when it starts.
                continue;
            }
            if let Err(e) = self.upload_ready(&cancel).await {
                self.note_error(&e);
                continue;
            }
            let interval = self
                .conf
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .wal_archive_partial_interval
                .get();
            let asked = self.partial_requested.swap(false, Ordering::AcqRel);
            if asked || (!interval.is_zero() && last_partial.elapsed() >= interval) {
                match self.upload_partial(&cancel).await {
                    Ok(()) => last_partial = Instant::now(),
                    Err(e) => {
                        self.note_error(&e);
                        continue;
                    }
                }
            }
            let retention = self
                .conf
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .wal_archive_retention
                .get();
            let every = RETENTION_EVERY.min(retention.max(Duration::from_secs(1)));
            if last_retention.is_none_or(|t| t.elapsed() >= every) {
                last_retention = Some(Instant::now());
                if let Err(e) = self.apply_retention(&cancel).await {
                    self.note_error(&e);
                }
            }
        }
        // Shutdown: the tail goes up once more, within a budget, so that an attach elsewhere resumes from it.
        // Not for a timeline being deleted (its directory is renamed away before its remote objects go).
        if self.state.lock().await.is_some() && self.spool.exists() {
            let budget = CancellationToken::new();
            let timer = {
                let budget = budget.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(SHUTDOWN_UPLOAD_BUDGET).await;
                    budget.cancel();
                })
            };
            let done = async {
                self.upload_ready(&budget).await?;
                self.upload_partial(&budget).await
            }
            .await;
            timer.abort();
            if let Err(e) = done {
                warn!(error = %e, "the WAL archive's tail was not uploaded at shutdown");
            }
        }
    }

    fn note_error(&self, e: &ArchiveError) {
        if matches!(
            e,
            ArchiveError::Cancelled
                | ArchiveError::Store(crate::remote_storage::RemoteError::Cancelled)
        ) {
            return;
        }
        warn!(error = %e, "WAL archive upload failed");
        self.set_status(|s| {
            s.failures += 1;
            s.last_error = Some(e.to_string());
        });
    }

    fn counting(&self) -> impl FnMut(&crate::remote_storage::RemoteError) + '_ {
        |e| {
            self.set_status(|s| {
                s.failures += 1;
                s.last_error = Some(e.to_string());
            })
        }
    }

    /// Uploads the completed segments of the spool in order, each data before its manifest.
    async fn upload_ready(&self, cancel: &CancellationToken) -> Result<(), ArchiveError> {
        loop {
            let next = {
                let guard = self.state.lock().await;
                guard.as_ref().and_then(|st| st.ready.front().cloned())
            };
            let Some(ready) = next else { return Ok(()) };
            let m = &ready.manifest;
            let (data_name, manifest_name) = segment_objects(&m.segment, self.generation);
            let len = m.size;
            if !self.store.is_remote() {
                // The store is in the workdir: the spool file itself goes in, by a hard link. Its sha256 was
                // taken from the bytes as they were written; a later flip is found by whoever reads it
                // (recovery checks every segment against its manifest).
                self.store
                    .link_file(&data_name, &ready.data)
                    .await
                    .map_err(|source| ArchiveError::Io {
                        path: ready.data.clone(),
                        source,
                    })?;
            } else {
                let data =
                    tokio::fs::read(&ready.data)
                        .await
                        .map_err(|source| ArchiveError::Io {
                            path: ready.data.clone(),
                            source,
                        })?;
                if data.len() as u64 != m.size || Sha256Digest::of(&data) != m.sha256 {
                    return Err(ArchiveError::Spool {
                        path: ready.data.clone(),
                        msg: format!(
                            "does not match its manifest (size {} and sha256 {} expected)",
                            m.size, m.sha256
                        ),
                    });
                }
                self.store
                    .put(&data_name, Bytes::from(data), cancel, self.counting())
                    .await?;
            }
            self.store
                .put(
                    &manifest_name,
                    Bytes::from(m.to_json()),
                    cancel,
                    self.counting(),
                )
                .await?;
            debug!(segment = %m.segment, "uploaded a WAL segment");
            let replaced: Vec<String> = {
                let mut guard = self.state.lock().await;
                let st = guard.as_mut().expect("loaded");
                st.ready.pop_front();
                st.uploaded = st.uploaded.max(Some(m.end_lsn));
                let segno = m.segno();
                let (gone, keep): (Vec<_>, Vec<_>) =
                    st.partials.drain(..).partition(|(s, _, _)| *s <= segno);
                st.partials = keep;
                gone.into_iter().flat_map(|(_, d, m)| [d, m]).collect()
            };
            self.set_durable(m.end_lsn);
            let _ = tokio::fs::remove_file(&ready.data).await;
            let _ = tokio::fs::remove_file(&ready.manifest_path).await;
            self.set_status(|s| {
                s.segments_uploaded += 1;
                s.bytes_uploaded += len;
                s.uploaded_lsn = Some(m.end_lsn);
                s.last_error = None;
            });
            if !replaced.is_empty() {
                self.store.delete(&replaced, cancel).await?;
            }
        }
    }

    /// Uploads the open segment up to its current end, if that is past what the store holds.
    async fn upload_partial(&self, cancel: &CancellationToken) -> Result<(), ArchiveError> {
        let snapshot = {
            let guard = self.state.lock().await;
            let Some(st) = guard.as_ref() else {
                return Ok(());
            };
            let Some(open) = st.open.as_ref() else {
                return Ok(());
            };
            if open.len == 0 || st.uploaded.is_some_and(|u| u >= open.end()) {
                return Ok(());
            }
            let name = super::manifest::segment_name(st.tli, open.segno, self.seg_size);
            let sha = Sha256Digest::from_hasher(open.hasher.clone());
            let prev = match st.last_complete {
                Some((_, s)) => Some(s),
                None => st.base.as_ref().map(|b| b.sha256),
            };
            let manifest = self.segment_manifest(st, &name, open.start, open.len, sha, prev, true);
            let file = open.file.try_clone().map_err(|source| ArchiveError::Io {
                path: open.path.clone(),
                source,
            })?;
            (manifest, file, open.path.clone(), open.segno)
        };
        let (manifest, file, path, segno) = snapshot;
        let len = manifest.size;
        let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::os::unix::fs::FileExt;
            file.sync_data()?;
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, 0)?;
            Ok(buf)
        })
        .await
        .map_err(|e| ArchiveError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| ArchiveError::Io {
            path: path.clone(),
            source,
        })?;
        if Sha256Digest::of(&data) != manifest.sha256 {
            return Err(ArchiveError::Spool {
                path,
                msg: "changed under its own hash".into(),
            });
        }
        let (data_name, manifest_name) =
            partial_objects(&manifest.segment, manifest.end_lsn, self.generation);
        self.store
            .put(&data_name, Bytes::from(data), cancel, self.counting())
            .await?;
        self.store
            .put(
                &manifest_name,
                Bytes::from(manifest.to_json()),
                cancel,
                self.counting(),
            )
            .await?;
        let replaced: Vec<String> = {
            let mut guard = self.state.lock().await;
            let st = guard.as_mut().expect("loaded");
            st.uploaded = st.uploaded.max(Some(manifest.end_lsn));
            let old: Vec<String> = st.partials.drain(..).flat_map(|(_, d, m)| [d, m]).collect();
            st.partials
                .push((segno, data_name.clone(), manifest_name.clone()));
            old
        };
        self.set_durable(manifest.end_lsn);
        self.set_status(|s| {
            s.partials_uploaded += 1;
            s.bytes_uploaded += len;
            s.uploaded_lsn = Some(manifest.end_lsn);
            s.last_error = None;
        });
        debug!(end = %manifest.end_lsn, "uploaded the WAL archive's tail");
        if !replaced.is_empty() {
            self.store.delete(&replaced, cancel).await?;
        }
        Ok(())
    }

    /// Removes completed segments (data and manifest) older than `wal_archive_retention` ("0 s": keep all);
    /// the newest completed segment stays, so the chain can always be continued.
    async fn apply_retention(&self, cancel: &CancellationToken) -> Result<(), ArchiveError> {
        let retention = self
            .conf
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .wal_archive_retention
            .get();
        if retention.is_zero() {
            return Ok(());
        }
        let Some(horizon) = SystemTime::now().checked_sub(retention) else {
            return Ok(());
        };
        let objects = self.store.list().await?;
        let mut segments: Vec<(String, String, Option<SystemTime>)> = Vec::new();
        let mut newest: Option<String> = None;
        for o in &objects {
            if let Some((ArchiveObject::Segment { name, .. }, _)) =
                parse_object_name(&o.name, self.seg_size)
            {
                if newest.as_ref().is_none_or(|n| name > *n) {
                    newest = Some(name.clone());
                }
                segments.push((name, o.name.clone(), o.last_modified));
            }
        }
        let old: Vec<String> = segments
            .into_iter()
            .filter(|(name, _, modified)| {
                Some(name) != newest.as_ref() && modified.is_some_and(|m| m < horizon)
            })
            .map(|(_, object, _)| object)
            .collect();
        if !old.is_empty() {
            info!(
                objects = old.len(),
                ?retention,
                "removing WAL archive segments past their retention"
            );
            self.store.delete(&old, cancel).await?;
        }
        Ok(())
    }

    /// The end of the WAL archived so far, for tests and detail.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.status().end_lsn
    }
}
