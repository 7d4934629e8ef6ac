//! Process-wide metrics in the Prometheus text format: histograms observed where the work happens (flush,
//! compaction, GC, WAL redo, GetPage) and, at scrape time, gauges of every tenant and timeline (http/metrics.rs).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the duration buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets; lock-free.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str) -> Histogram {
        Histogram {
            name,
            help,
            counts: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn encode(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} histogram",
            self.name, self.help, self.name
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}_bucket{{le=\"{bound}\"}} {}",
                self.name,
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{}_bucket{{le=\"+Inf\"}} {count}", self.name);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{}_sum {sum}\n{}_count {count}", self.name, self.name);
    }
}

pub static FLUSH_SECONDS: Histogram = Histogram::new(
    "pageserver_flush_seconds",
    "Time to write a frozen in-memory layer as an L0 layer",
);
pub static COMPACTION_SECONDS: Histogram = Histogram::new(
    "pageserver_compaction_seconds",
    "Time of one compaction pass of a timeline",
);
pub static GC_SECONDS: Histogram =
    Histogram::new("pageserver_gc_seconds", "Time of one GC pass of a timeline");
pub static REDO_SECONDS: Histogram = Histogram::new(
    "pageserver_wal_redo_seconds",
    "Time to rebuild one page with WAL redo",
);

pub static GETPAGE_SECONDS: Histogram = Histogram::new(
    "pageserver_getpage_seconds",
    "Time to answer one GetPage request (a value at an LSN), errors included",
);

/// GetPage requests answered with an error (their time is in pageserver_getpage_seconds too).
pub static GETPAGE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Page service requests being answered right now, in the whole process (a measure of load: a WAL redo
/// request waits for its reply in its own thread only while the page service answers at most one request).
pub static PAGE_REQUESTS_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

pub static REMOTE_REQUEST_SECONDS: Histogram = Histogram::new(
    "pageserver_remote_request_seconds",
    "Time of one remote storage request (list, head, get, put, delete), failures included",
);

pub static LAYER_DOWNLOAD_SECONDS: Histogram = Histogram::new(
    "pageserver_layer_download_seconds",
    "Time to download one layer file from remote storage, retries included",
);

pub static HISTOGRAMS: [&Histogram; 7] = [
    &FLUSH_SECONDS,
    &COMPACTION_SECONDS,
    &GC_SECONDS,
    &REDO_SECONDS,
    &GETPAGE_SECONDS,
    &REMOTE_REQUEST_SECONDS,
    &LAYER_DOWNLOAD_SECONDS,
];

use crate::remote_storage::{RemoteError, RequestKind};

const REQUEST_KINDS: [RequestKind; 5] = [
    RequestKind::List,
    RequestKind::Head,
    RequestKind::Get,
    RequestKind::Put,
    RequestKind::Delete,
];

fn kind_index(kind: RequestKind) -> usize {
    REQUEST_KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

/// Remote storage requests, failed ones and bytes moved, by request kind.
static REMOTE_REQUESTS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static REMOTE_FAILURES: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static REMOTE_BYTES: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Faults injected by `test_remote_failures_probability`.
pub static REMOTE_FAULTS_INJECTED: Counter = Counter::new();
/// Layer files downloaded (on demand or at attach) and evicted from the local disk.
pub static LAYER_DOWNLOADS: Counter = Counter::new();
pub static LAYER_DOWNLOADED_BYTES: Counter = Counter::new();
pub static LAYER_EVICTIONS: Counter = Counter::new();
/// Writes of ingest and flush that failed with ENOSPC or EDQUOT.
pub static DISK_FULL_ERRORS: Counter = Counter::new();
/// Layer files found damaged (a checksum, the footer or the index), at load or on a read.
pub static LAYER_DAMAGED: Counter = Counter::new();
/// Remote deletions executed, and dropped because a newer generation exists (their keys leak, safely).
pub static REMOTE_DELETIONS_EXECUTED: Counter = Counter::new();
pub static REMOTE_DELETIONS_DROPPED: Counter = Counter::new();
/// WAL bytes replayed by recoveries; recoveries and scrubs finished; scrub mismatches found.
pub static RECOVERY_REPLAYED_BYTES: Counter = Counter::new();
pub static RECOVERIES_FAILED: Counter = Counter::new();
pub static SCRUBS_DONE: Counter = Counter::new();
pub static SCRUB_MISMATCHED_KEYS: Counter = Counter::new();
/// WAL redo replies a request received while it waited in its own thread, and such waits that ran out of
/// `wal_redo_reply_wait` (the reply then came through the reader task).
pub static WAL_REDO_REPLIES_IN_THREAD: Counter = Counter::new();
pub static WAL_REDO_THREAD_WAITS_EXPIRED: Counter = Counter::new();
/// Times a WAL redo process was bound to another CPU (that of the thread waiting for it), or let free again.
pub static WAL_REDO_PROCESS_MOVES: Counter = Counter::new();

pub fn recovery_replayed(bytes: u64) {
    RECOVERY_REPLAYED_BYTES.add(bytes);
}

/// A monotonic counter.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

pub fn remote_request(kind: RequestKind, took: Duration, err: Option<&RemoteError>) {
    REMOTE_REQUEST_SECONDS.observe(took);
    REMOTE_REQUESTS[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    if err.is_some() {
        REMOTE_FAILURES[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }
}

pub fn remote_bytes(kind: RequestKind, n: u64) {
    REMOTE_BYTES[kind_index(kind)].fetch_add(n, Ordering::Relaxed);
}

/// The remote storage counters in the Prometheus text format.
pub fn encode_remote(out: &mut String) {
    for (name, help, values) in [
        (
            "pageserver_remote_requests_total",
            "Remote storage requests, by kind",
            &REMOTE_REQUESTS,
        ),
        (
            "pageserver_remote_request_failures_total",
            "Remote storage requests that failed (each retry counts), by kind",
            &REMOTE_FAILURES,
        ),
        (
            "pageserver_remote_bytes_total",
            "Bytes uploaded (put) and downloaded (get) to and from remote storage",
            &REMOTE_BYTES,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for kind in REQUEST_KINDS {
            let v = values[kind_index(kind)].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{kind=\"{}\"}} {v}", kind.as_str());
        }
    }
    for (name, help, c) in [
        (
            "pageserver_remote_faults_injected_total",
            "Remote storage faults injected by test_remote_failures_probability",
            &REMOTE_FAULTS_INJECTED,
        ),
        (
            "pageserver_layer_downloads_total",
            "Layer files downloaded from remote storage",
            &LAYER_DOWNLOADS,
        ),
        (
            "pageserver_layer_downloaded_bytes_total",
            "Bytes of layer files downloaded from remote storage",
            &LAYER_DOWNLOADED_BYTES,
        ),
        (
            "pageserver_layer_evictions_total",
            "Layer files evicted from the local disk (they stay in remote storage)",
            &LAYER_EVICTIONS,
        ),
        (
            "pageserver_disk_full_errors_total",
            "Writes of WAL ingest and flush that failed because the disk is full (ENOSPC, EDQUOT)",
            &DISK_FULL_ERRORS,
        ),
        (
            "pageserver_layer_damaged_total",
            "Layer files found damaged by a checksum, the footer or the index (never served; downloaded again \
             from remote storage when it has them)",
            &LAYER_DAMAGED,
        ),
        (
            "pageserver_remote_deletions_executed_total",
            "Remote objects deleted after their generation was validated",
            &REMOTE_DELETIONS_EXECUTED,
        ),
        (
            "pageserver_remote_deletions_dropped_total",
            "Remote deletions dropped because a newer generation attached the tenant",
            &REMOTE_DELETIONS_DROPPED,
        ),
        (
            "pageserver_recovery_replayed_bytes_total",
            "WAL bytes replayed from the WAL archive by recovery jobs",
            &RECOVERY_REPLAYED_BYTES,
        ),
        (
            "pageserver_recoveries_failed_total",
            "Recovery jobs that failed (a check of the archive, or an error)",
            &RECOVERIES_FAILED,
        ),
        (
            "pageserver_scrubs_total",
            "Scrub jobs finished",
            &SCRUBS_DONE,
        ),
        (
            "pageserver_scrub_mismatched_keys_total",
            "Keys that differed between the two timelines of a scrub",
            &SCRUB_MISMATCHED_KEYS,
        ),
        (
            "pageserver_wal_redo_replies_in_thread_total",
            "WAL redo replies received by a request waiting in its own thread (wal_redo_reply_wait)",
            &WAL_REDO_REPLIES_IN_THREAD,
        ),
        (
            "pageserver_wal_redo_thread_waits_expired_total",
            "WAL redo requests that waited wal_redo_reply_wait in their thread without a reply",
            &WAL_REDO_THREAD_WAITS_EXPIRED,
        ),
        (
            "pageserver_wal_redo_process_moves_total",
            "Times a WAL redo process was bound to the CPU of the thread waiting for it, or let free again",
            &WAL_REDO_PROCESS_MOVES,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            c.get()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_text() {
        let h = Histogram::new("x_seconds", "help");
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let mut s = String::new();
        h.encode(&mut s);
        assert!(s.contains("x_seconds_bucket{le=\"0.005\"} 1"));
        assert!(s.contains("x_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(s.contains("x_seconds_count 2"));
    }
}
