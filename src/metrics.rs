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

pub static HISTOGRAMS: [&Histogram; 5] = [
    &FLUSH_SECONDS,
    &COMPACTION_SECONDS,
    &GC_SECONDS,
    &REDO_SECONDS,
    &GETPAGE_SECONDS,
];

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
