//! Crash tests of the storage engine. `pageserver stress-repository` runs a workload of writes, flushes,
//! compactions and GCs; it is crashed at each commit point of flush, compaction and GC by fault injection
//! (`PAGESERVER_FAILPOINT`: the process aborts there, as abruptly as kill -9), and killed with SIGKILL at random
//! moments. After each crash the directory is reloaded (`--verify`): every read at or below
//! disk_consistent_lsn returns what the workload wrote, nothing is left that the metadata does not name (the
//! reload removed the interrupted operation's files), and every LSN the workload had reported durable is
//! still at or below disk_consistent_lsn.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::ExitStatusExt;

use pageserver::pg::Lsn;

/// Runs `stress-repository --verify` on `dir`; returns (reads verified, leftovers removed, disk_consistent_lsn).
fn verify(bin: &std::path::Path, dir: &std::path::Path, context: &str) -> (u64, usize, Lsn) {
    let out = Command::new(bin)
        .args(["stress-repository", "--verify", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{context}: verification failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "verified N reads; removed K leftover files; disk_consistent_lsn X"
    let words: Vec<&str> = text.split_whitespace().collect();
    (
        words[1].parse().unwrap(),
        words[4].parse().unwrap(),
        words.last().unwrap().parse().unwrap(),
    )
}

/// Runs the workload until it prints nothing more (killed, aborted or done); returns the last durable LSN
/// it reported and how it ended.
fn run_workload(
    bin: &std::path::Path,
    dir: &std::path::Path,
    failpoint: Option<&str>,
    kill_after: Option<Duration>,
) -> (Lsn, std::process::ExitStatus) {
    let mut cmd = Command::new(bin);
    cmd.args(["stress-repository", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match failpoint {
        Some(fp) => cmd.env("PAGESERVER_FAILPOINT", fp),
        None => cmd.env_remove("PAGESERVER_FAILPOINT"),
    };
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut durable = Lsn(0);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(l) = line.strip_prefix("durable ") {
                durable = l.parse().unwrap();
            }
        }
        durable
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if kill_after.is_some_and(|d| started.elapsed() >= d) {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the workload neither crashed nor was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (reader.join().unwrap(), status)
}

/// A crash at each write and fsync point of flush, compaction and GC (fault injection: the process aborts
/// there, as abruptly as kill -9): the reload removes what the interrupted operation left, and every read at or
/// below disk_consistent_lsn is what the workload wrote.
#[test]
fn crash_at_every_commit_point_loses_nothing_durable() {
    let bin = support::pageserver::binary();
    let dir = tempfile::tempdir().unwrap();
    for point in [
        "layer-before-rename@2",
        "flush-before-commit@2",
        "metadata-before-rename@3",
        "compaction-before-commit@1",
        "swap-before-delete@1",
        "gc-before-delete@1",
        "layer-before-rename@9",
        "metadata-before-rename@12",
    ] {
        let (acknowledged, status) = run_workload(&bin, dir.path(), Some(point), None);
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "{point}: the workload did not reach its fail point ({status})"
        );
        let (reads, leftovers, disk) = verify(&bin, dir.path(), point);
        assert!(
            acknowledged <= disk,
            "{point}: {acknowledged} was reported durable, but only {disk} survived"
        );
        assert!(
            leftovers > 0,
            "{point}: the crash left nothing behind for the reload to remove"
        );
        println!(
            "crash at {point}: {leftovers} leftover files removed, {reads} reads verified up to {disk}"
        );
    }
}

/// SIGKILL at random moments, ten times: whatever the kill interrupted, nothing durable is lost.
#[test]
fn kill_9_at_random_moments_loses_nothing_durable() {
    let bin = support::pageserver::binary();
    let dir = tempfile::tempdir().unwrap();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    for round in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_for = Duration::from_millis(400 + seed % 1600);
        let (acknowledged, _) = run_workload(&bin, dir.path(), None, Some(run_for));
        let (reads, leftovers, disk) = verify(&bin, dir.path(), &format!("round {round}"));
        assert!(
            acknowledged <= disk,
            "round {round}: {acknowledged} was reported durable, but only {disk} survived"
        );
        println!(
            "round {round}: killed after {run_for:?}; {reads} reads verified up to {disk} (acknowledged {acknowledged}); {leftovers} leftovers removed"
        );
    }
}
