//! Progress of long work (imports of a data directory, layer downloads from remote storage, recoveries, L0
//! compactions): done and total, rate and ETA. Every running operation is listed by `GET /v1/progress` and
//! logged every [`LOG_INTERVAL`] while it runs and once when it ends (if it ran longer than [`LOG_MIN`]).
//!
//! An operation registers with [`start`] and reports through the returned [`ProgressGuard`]; dropping the
//! guard ends it (done or not: the end log line says which).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::info;

use crate::id::{TenantId, TimelineId};

/// How often a running operation logs its progress.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Operations shorter than this log nothing at their end.
pub const LOG_MIN: Duration = Duration::from_secs(2);

/// What an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A data directory (a tar or a directory) imported into a timeline.
    Import,
    /// A layer file downloaded from remote storage.
    Download,
    /// A recovery replaying archived WAL.
    Recover,
    /// L0 layers merged into L1 layers.
    Compaction,
}

/// What `GET /v1/progress` lists for one running operation.
#[derive(Clone, Debug, Serialize)]
pub struct ProgressStatus {
    pub id: u64,
    pub kind: Kind,
    /// The object of the work: a layer name, a job id, a source.
    pub what: String,
    pub tenant_id: Option<TenantId>,
    pub timeline_id: Option<TimelineId>,
    /// What `done` and `total` count: "bytes" or "entries".
    pub unit: &'static str,
    pub done: u64,
    /// None when unknown (a stream of unknown length).
    pub total: Option<u64>,
    pub percent: Option<f64>,
    /// `done` per second since the start.
    pub rate_per_sec: f64,
    /// Seconds left at that rate; None without a total or before any progress.
    pub eta_secs: Option<f64>,
    pub elapsed_secs: f64,
}

struct Progress {
    id: u64,
    kind: Kind,
    what: String,
    tenant: Option<TenantId>,
    timeline: Option<TimelineId>,
    unit: &'static str,
    done: AtomicU64,
    /// u64::MAX: unknown.
    total: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

const UNKNOWN: u64 = u64::MAX;

impl Progress {
    fn status(&self) -> ProgressStatus {
        let done = self.done.load(Ordering::Relaxed);
        let total = Some(self.total.load(Ordering::Relaxed)).filter(|t| *t != UNKNOWN);
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let eta = match total {
            Some(t) if rate > 0.0 => Some(t.saturating_sub(done) as f64 / rate),
            _ => None,
        };
        ProgressStatus {
            id: self.id,
            kind: self.kind,
            what: self.what.clone(),
            tenant_id: self.tenant,
            timeline_id: self.timeline,
            unit: self.unit,
            done,
            total,
            percent: total
                .filter(|t| *t > 0)
                .map(|t| 100.0 * done as f64 / t as f64),
            rate_per_sec: rate,
            eta_secs: eta,
            elapsed_secs: elapsed,
        }
    }

    fn log(&self, event: &str) {
        let s = self.status();
        info!(
            kind = ?s.kind,
            what = %s.what,
            tenant_id = ?s.tenant_id,
            timeline_id = ?s.timeline_id,
            done = s.done,
            total = ?s.total,
            unit = s.unit,
            rate_per_sec = format!("{:.0}", s.rate_per_sec),
            eta_secs = ?s.eta_secs.map(|e| e.round()),
            elapsed_secs = format!("{:.1}", s.elapsed_secs),
            "{event}"
        );
    }
}

fn registry() -> &'static Mutex<BTreeMap<u64, Arc<Progress>>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<u64, Arc<Progress>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Registers a running operation. `total`: what `done` will reach, if known.
pub fn start(
    kind: Kind,
    what: impl Into<String>,
    tenant: Option<TenantId>,
    timeline: Option<TimelineId>,
    unit: &'static str,
    total: Option<u64>,
) -> ProgressGuard {
    let p = Arc::new(Progress {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        kind,
        what: what.into(),
        tenant,
        timeline,
        unit,
        done: AtomicU64::new(0),
        total: AtomicU64::new(total.unwrap_or(UNKNOWN)),
        started: Instant::now(),
        last_log: Mutex::new(Instant::now()),
    });
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(p.id, p.clone());
    ProgressGuard(Arc::new(Handle(p)))
}

/// Every running operation, oldest first.
pub fn list() -> Vec<ProgressStatus> {
    let running: Vec<Arc<Progress>> = registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    running.iter().map(|p| p.status()).collect()
}

/// A running operation's handle: report with [`add`](Self::add) or [`set_done`](Self::set_done); the
/// operation ends when the last clone is dropped.
#[derive(Clone)]
pub struct ProgressGuard(Arc<Handle>);

/// Dropped once, with the last guard: ends the operation.
struct Handle(Arc<Progress>);

impl ProgressGuard {
    fn p(&self) -> &Progress {
        &self.0.0
    }

    pub fn add(&self, n: u64) {
        self.p().done.fetch_add(n, Ordering::Relaxed);
        self.maybe_log();
    }

    pub fn set_done(&self, n: u64) {
        self.p().done.store(n, Ordering::Relaxed);
        self.maybe_log();
    }

    pub fn set_total(&self, n: u64) {
        self.p().total.store(n, Ordering::Relaxed);
    }

    pub fn status(&self) -> ProgressStatus {
        self.p().status()
    }

    fn maybe_log(&self) {
        // Never waits: a reporter that finds the lock taken skips this log.
        if let Ok(mut last) = self.p().last_log.try_lock()
            && last.elapsed() >= LOG_INTERVAL
        {
            *last = Instant::now();
            self.p().log("progress");
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0.id);
        if self.0.started.elapsed() >= LOG_MIN {
            let s = self.0.status();
            let complete = s.total.is_none_or(|t| s.done >= t);
            self.0.log(if complete {
                "finished"
            } else {
                "ended before its total"
            });
        }
    }
}

/// A reader that counts the bytes read through it into a progress.
pub struct CountingReader<R> {
    inner: R,
    progress: ProgressGuard,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R, progress: ProgressGuard) -> CountingReader<R> {
        CountingReader { inner, progress }
    }
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_while_running_with_rate_and_eta() {
        let g = start(Kind::Import, "test-a", None, None, "bytes", Some(1000));
        std::thread::sleep(Duration::from_millis(20));
        g.add(250);
        let s = list().into_iter().find(|s| s.what == "test-a").unwrap();
        assert_eq!((s.done, s.total, s.unit), (250, Some(1000), "bytes"));
        assert_eq!(s.percent, Some(25.0));
        assert!(s.rate_per_sec > 0.0 && s.elapsed_secs >= 0.02, "{s:?}");
        // Three quarters left at the rate so far: three times the time taken.
        let eta = s.eta_secs.unwrap();
        assert!(
            (eta - 3.0 * s.elapsed_secs).abs() < 0.05 * eta + 0.01,
            "{s:?}"
        );
        let clone = g.clone();
        drop(g);
        assert!(
            list().iter().any(|s| s.what == "test-a"),
            "a clone keeps it"
        );
        drop(clone);
        assert!(!list().iter().any(|s| s.what == "test-a"));
    }

    #[test]
    fn unknown_total_has_no_eta_and_a_reader_counts() {
        let g = start(Kind::Download, "test-b", None, None, "bytes", None);
        let mut r = CountingReader::new(&b"0123456789"[..], g.clone());
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out).unwrap();
        let s = g.status();
        assert_eq!(
            (s.done, s.total, s.eta_secs, s.percent),
            (10, None, None, None)
        );
        g.set_total(40);
        assert_eq!(g.status().total, Some(40));
    }
}
