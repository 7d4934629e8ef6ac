//! Crash test of the storage engine: `pageserver stress-repository` runs a workload of writes, flushes,
//! compactions and GCs and is killed with SIGKILL at random moments, fourteen times. After each kill the
//! directory is reloaded (`--verify`): every read at or below disk_consistent_lsn returns what the workload
//! wrote, no file is there that the metadata does not name, and every LSN the workload had reported durable
//! is still at or below disk_consistent_lsn. The leftovers the reloads removed (temp files, ephemeral files,
//! layers never committed) show that kills did land in the middle of operations.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pageserver::pg::Lsn;

#[test]
fn kill_9_during_flush_compaction_and_gc_loses_nothing_durable() {
    let dir = tempfile::tempdir().unwrap();
    let bin = support::pageserver::binary();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut total_reads = 0u64;
    let mut total_leftovers = 0usize;
    for round in 0..14 {
        let mut child = Command::new(&bin)
            .args(["stress-repository", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_for = Duration::from_millis(400 + seed % 1600);
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
        while started.elapsed() < run_for {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("workload exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let acknowledged = reader.join().unwrap();

        let out = Command::new(&bin)
            .args(["stress-repository", "--verify", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "round {round}: verification failed after kill -9:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "verified N reads; removed K leftover files; disk_consistent_lsn X"
        let words: Vec<&str> = text.split_whitespace().collect();
        let reads: u64 = words[1].parse().unwrap();
        let leftovers: usize = words[4].parse().unwrap();
        let disk: Lsn = words.last().unwrap().parse().unwrap();
        total_leftovers += leftovers;
        assert!(
            acknowledged <= disk,
            "round {round}: {acknowledged} was reported durable, but only {disk} survived"
        );
        total_reads += reads;
        println!(
            "round {round}: killed after {run_for:?}; {reads} reads verified up to {disk} (acknowledged {acknowledged}); \
             {leftovers} leftover files of interrupted operations removed"
        );
    }
    assert!(total_reads > 0);
    // Some kill landed in the middle of writing a layer or committing metadata.
    assert!(
        total_leftovers > 0,
        "no kill interrupted a flush, compaction or GC; the test proved less than it claims"
    );
}
