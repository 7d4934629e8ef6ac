//! The WAL sources of a tenant's timelines, persisted in `<tenant dir>/wal_sources.json` (rewritten
//! atomically), and their running receivers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::receiver::{self, ReceiverState, SharedState, WalSource};
use crate::id::TimelineId;
use crate::repository::timeline::Timeline;

pub const WAL_SOURCES_FILE: &str = "wal_sources.json";

struct Running {
    source: WalSource,
    state: SharedState,
    cancel: CancellationToken,
}

pub struct WalSources {
    dir: PathBuf,
    running: Mutex<HashMap<TimelineId, Running>>,
}

impl WalSources {
    /// The sources recorded in `dir`.
    pub fn load(dir: &Path) -> Result<(WalSources, HashMap<TimelineId, WalSource>), String> {
        let path = dir.join(WAL_SOURCES_FILE);
        let saved: HashMap<TimelineId, WalSource> = match std::fs::read_to_string(&path) {
            Ok(text) => {
                // It holds the sources' passwords.
                match crate::durable::secret_file_too_open(&path) {
                    Ok(None) => {}
                    Ok(Some(mode)) => {
                        return Err(format!(
                            "{} is accessible by group or others (mode {mode:04o}); it holds passwords and \
                             must be owner-only: chmod 600 it",
                            path.display()
                        ));
                    }
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok((
            WalSources {
                dir: dir.to_path_buf(),
                running: Mutex::new(HashMap::new()),
            },
            saved,
        ))
    }

    fn save(&self, running: &HashMap<TimelineId, Running>) -> Result<(), String> {
        let map: HashMap<TimelineId, &WalSource> =
            running.iter().map(|(k, r)| (*k, &r.source)).collect();
        let path = self.dir.join(WAL_SOURCES_FILE);
        let body = serde_json::to_vec_pretty(&map).map_err(|e| e.to_string())?;
        // The connection strings may hold passwords: owner-only.
        crate::durable::write_atomic(
            &self.dir,
            WAL_SOURCES_FILE,
            &body,
            crate::durable::SECRET_MODE,
        )
        .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Sets (or with None removes) the source of `tl`, persists it, and (re)starts its receiver.
    pub fn set(
        &self,
        tl: &Arc<Timeline>,
        source: Option<WalSource>,
        persist: bool,
    ) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = running.remove(&tl.timeline_id) {
            old.cancel.cancel();
        }
        if let Some(source) = source {
            let state: SharedState = Arc::new(Mutex::new(ReceiverState {
                status: "starting".into(),
                ..Default::default()
            }));
            let cancel = tl.cancel.child_token();
            tokio::spawn(receiver::run(
                tl.clone(),
                source.clone(),
                state.clone(),
                cancel.clone(),
            ));
            running.insert(
                tl.timeline_id,
                Running {
                    source,
                    state,
                    cancel,
                },
            );
        }
        if persist {
            self.save(&running)?;
        }
        Ok(())
    }

    /// The source and receiver state of a timeline.
    pub fn get(&self, tl: TimelineId) -> Option<(WalSource, ReceiverState)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(&tl).map(|r| {
            (
                r.source.clone(),
                r.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            )
        })
    }

    /// Stops every receiver (the sources stay recorded).
    pub fn stop_all(&self) {
        for r in self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            r.cancel.cancel();
        }
    }

    /// Forgets a deleted timeline's source.
    pub fn forget(&self, tl: TimelineId) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = running.remove(&tl) {
            old.cancel.cancel();
            self.save(&running)?;
        }
        Ok(())
    }
}
