//! What the benches share: the JSON report and whether this is a real bench run or `cargo test`'s single pass.
#![allow(dead_code)] // Each bench uses a different part of this module.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `cargo bench` passes `--bench`; under `cargo test` each bench runs once, quickly, as a smoke test.
pub fn is_bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Median wall time of `runs` calls of `f`.
pub fn median_time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// Writes `report` to `<target dir>/bench-reports/<name>.json` and prints it.
pub fn write_report(name: &str, report: &serde_json::Value) {
    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("bench-reports");
    std::fs::create_dir_all(&dir).expect("create bench-reports");
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(report).expect("serialize report");
    std::fs::write(&path, &text).expect("write report");
    println!("{text}\nreport written to {}", path.display());
}
