//! What the benches share: the JSON report and whether this is a real bench run or `cargo test`'s single pass.
#![allow(dead_code)] // Each bench uses a different part of this module.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `cargo bench` passes `--bench`; under `cargo test` each bench runs once, quickly, as a smoke test.
pub fn is_bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The PostgreSQL major version of the bench's primary: `BENCH_PG_VERSION` (15 or 18), default 15.
pub fn pg_major() -> u32 {
    std::env::var("BENCH_PG_VERSION").map_or(15, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("BENCH_PG_VERSION={v:?} is not a major version"))
    })
}

/// The report name of a bench that runs per PostgreSQL version: `name` for 15, `name-pg<N>` otherwise.
pub fn versioned_report_name(name: &str) -> String {
    match pg_major() {
        15 => name.to_string(),
        n => format!("{name}-pg{n}"),
    }
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

/// `perf record --call-graph dwarf` of process `pid` at `hz` samples per second into `out` (the profiles of
/// docs/benchmarks.md; `perf report -i <out>`), started a second before the caller goes on.
pub fn perf_record(pid: u32, out: &std::ffi::OsStr, hz: u32) -> std::process::Child {
    let child = std::process::Command::new("perf")
        .args([
            "record",
            "--call-graph",
            "dwarf,16384",
            "-F",
            &hz.to_string(),
            "-o",
        ])
        .arg(out)
        .args(["-p", &pid.to_string()])
        .spawn()
        .expect("run perf record");
    std::thread::sleep(Duration::from_secs(1));
    child
}

/// Stops a [`perf_record`] (SIGINT, as perf expects) and waits until it has written its file.
pub fn perf_stop(mut perf: std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(perf.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("stop perf");
    perf.wait().expect("wait for perf");
}

/// A memory field of /proc/<pid>/status (`VmRSS`, `VmHWM`), KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    (status.lines())
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("comm in /proc/<pid>/stat") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    ticks as f64 / hz
}
