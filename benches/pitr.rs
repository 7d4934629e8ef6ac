//! Point-in-time restore beside pgBackRest (Debian's `pgbackrest` 2.45), on the same primary and workload, in
//! the same run:
//! - a PostgreSQL 15 primary archives its WAL with `pgbackrest archive-push` (archive_command) while the
//!   pageserver follows it; pgBackRest takes a full backup after `pgbench -i`;
//! - pgbench (4 clients) runs in four phases; after the first (near the base backup), the second (the middle)
//!   and the third (near the end) the primary's `now()` and its `pg_dumpall` are recorded;
//! - then both restore to each of the three times: `pageserver restore --time` (a data directory of pages as
//!   of that time, nothing to replay), and `pgbackrest restore --type=time` (the base backup, then PostgreSQL
//!   fetches the archived WAL with `archive-get` and replays it up to the time, and promotes). Each restored
//!   copy is started with plain PostgreSQL and its `pg_dumpall` must equal the dump of that moment.
//!
//! Reported per time: wall seconds of each until the copy answers as a primary (the restore command, then the
//! start, for pgBackRest until recovery has ended), the WAL PostgreSQL replayed (from the restored server's
//! log: `redo starts at` .. `redo done at`), the pages the pageserver rebuilt by WAL redo for it (its metrics),
//! and the ratio of the times; once: the storage each keeps (pgBackRest's repository, backup and archive; the
//! pageserver's tenant directory, layers and WAL archive), the data directory and the WAL written.
//! Report: `<target>/bench-reports/pitr.json`.
//!
//! pgBackRest runs as an operator would on this 2-core machine: `compress-type=lz4`, `process-max=2`,
//! `start-fast=y`, synchronous archive-push; the pageserver with its defaults.
//! Under `cargo test` (no `--bench`) it runs once on a tiny workload as a smoke test.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pageserver::pg::Lsn;
use serde_json::{Value, json};
use support::compare::stop_primary_and_wait;
use support::dump::{as_wal_derived, dumpall, first_difference, snapshot};
use support::pageserver::{Pageserver, binary};
use support::pg::{PgCluster, PgOptions, chown_to_server_user};
use support::workload::WORKLOAD_CONF;

const T: &str = "4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c";
const TL: &str = "5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d";
const STANZA: &str = "bench";

/// pgBackRest's configuration and repository, in a directory of the server's user.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("pgbackrest-")
            .tempdir_in("/tmp")
            .expect("create the pgBackRest directory");
        chown_to_server_user(dir.path());
        Repo { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("pgbackrest.conf")
    }

    fn archive_command(&self) -> String {
        format!(
            "archive_command = 'pgbackrest --config={} --stanza={STANZA} archive-push %p'",
            self.conf().display()
        )
    }

    fn write_conf(&self, pg: &PgCluster) {
        let d = self.dir.path().display();
        let text = format!(
            "[global]\nrepo1-path={d}/repo\nlog-path={d}/log\nlock-path={d}/lock\nspool-path={d}/spool\n\
             log-level-console=warn\nlog-level-file=off\ncompress-type=lz4\nprocess-max=2\nstart-fast=y\n\
             repo1-retention-full=1\n\n[{STANZA}]\npg1-path={}\npg1-port={}\npg1-socket-path={}\n",
            pg.data_dir().display(),
            pg.port(),
            pg.home().display()
        );
        std::fs::write(self.conf(), text).expect("write pgbackrest.conf");
        chown_to_server_user(&self.conf());
    }

    /// Runs pgBackRest as the server's user; panics with its output if it fails.
    fn run(&self, pg: &PgCluster, args: &[&str]) -> Duration {
        let started = Instant::now();
        let out = pg
            .command_as_server_user("pgbackrest")
            .arg(format!("--config={}", self.conf().display()))
            .arg(format!("--stanza={STANZA}"))
            .args(args)
            .output()
            .expect("run pgbackrest (apt-get install pgbackrest; scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "pgbackrest {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }

    fn bytes(&self, sub: &str) -> u64 {
        dir_bytes(&self.dir.path().join("repo").join(sub))
    }
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_bytes(&e.path())).sum())
        .unwrap_or(0)
}

/// A time as pgBackRest parses `--target` and PostgreSQL `recovery_target_time`.
fn primary_now(pg: &PgCluster) -> String {
    pg.sql(r#"SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"#)
}

/// WAL PostgreSQL replayed, from its log: `redo starts at A` .. `redo done at B`; 0 when it replayed none.
fn wal_replayed(log: &str) -> u64 {
    let lsn_after = |marker: &str| -> Option<Lsn> {
        let rest = log.split(marker).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    match (lsn_after("redo starts at "), lsn_after("redo done at ")) {
        (Some(a), Some(b)) => b.0.saturating_sub(a.0),
        _ => 0,
    }
}

/// The sum of every `pageserver_wal_redo_seconds_count` series: pages rebuilt by WAL redo so far.
fn redo_count(ps: &Pageserver) -> f64 {
    let (_, text) = ps.get("/metrics");
    text.lines()
        .filter(|l| l.starts_with("pageserver_wal_redo_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_promoted(pg: &PgCluster) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while pg.sql("SELECT pg_is_in_recovery()") != "f" {
        assert!(
            Instant::now() < deadline,
            "recovery does not end:\n{}",
            pg.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_dump(pg: &PgCluster, expected: &str, what: &str) -> usize {
    let ours = dumpall(pg);
    assert!(
        ours == expected,
        "{what}: pg_dumpall differs: {}",
        first_difference(expected, &ours)
    );
    ours.lines().count()
}

struct Plan {
    scale: u32,
    /// Seconds of pgbench in each phase; a moment is taken after each but the last.
    phases: [u64; 4],
}

fn main() {
    let bench = common::is_bench_run();
    let plan = if bench {
        Plan {
            scale: 20,
            phases: [5, 25, 25, 5],
        }
    } else {
        Plan {
            scale: 1,
            phases: [1, 1, 1, 1],
        }
    };
    let repo = Repo::new();
    let mut conf: Vec<String> = WORKLOAD_CONF.iter().map(|s| s.to_string()).collect();
    conf.push("archive_mode = on".into());
    conf.push(repo.archive_command());
    let mut pg = PgCluster::start(PgOptions { extra_conf: conf });
    repo.write_conf(&pg);
    repo.run(&pg, &["stanza-create"]);

    let ps = Pageserver::start(&[]);
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "ps");
    pg.pgbench_init("postgres", plan.scale);
    let backup_time = repo.run(&pg, &["backup", "--type=full"]);
    let backup_lsn: Lsn = pg.sql("SELECT pg_current_wal_lsn()").parse().unwrap();
    println!(
        "pgBackRest full backup of scale {} in {:.1} s",
        plan.scale,
        backup_time.as_secs_f64()
    );

    let labels = ["near the base backup", "middle", "near the end"];
    let mut moments = Vec::new();
    for (phase, secs) in plan.phases.iter().enumerate() {
        pg.pgbench("postgres", &["-n", "-c", "4", "-T", &secs.to_string()]);
        if phase < 3 {
            std::thread::sleep(Duration::from_millis(20));
            let time = primary_now(&pg);
            std::thread::sleep(Duration::from_millis(20));
            let snap = snapshot(&pg);
            println!("moment {phase} ({}): {time} at {}", labels[phase], snap.lsn);
            moments.push((labels[phase], time, snap));
        }
    }
    // Every segment up to here archived (check switches to a new one and waits for it); the primary stopped
    // once the pageserver has its shutdown checkpoint.
    repo.run(&pg, &["check"]);
    let end_lsn: Lsn = pg.sql("SELECT pg_current_wal_lsn()").parse().unwrap();
    let data_bytes = dir_bytes(pg.data_dir());
    stop_primary_and_wait(&mut pg, &ps, T, TL);

    let mut rows = Vec::new();
    for (label, time, snap) in &moments {
        let expected = as_wal_derived(snap);

        // The pageserver: restore, then plain PostgreSQL starts on it.
        let home = PgCluster::data_dir_home();
        let redo_before = redo_count(&ps);
        let started = Instant::now();
        let out = Command::new(binary())
            .arg("restore")
            .args(["--server", &format!("http://{}", ps.http_addr)])
            .args(["--tenant", T, "--timeline", TL, "--time", time])
            .arg("--out")
            .arg(home.path().join("data"))
            .output()
            .expect("run pageserver restore");
        assert!(
            out.status.success(),
            "pageserver restore --time {time}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ps_restore = started.elapsed();
        let ps_redo = redo_count(&ps) - redo_before;
        let restored_bytes = dir_bytes(&home.path().join("data"));
        let started = Instant::now();
        let mut ours = PgCluster::start_on(home);
        let ps_start = started.elapsed();
        let ps_total = ps_restore + ps_start;
        let ps_replayed = wal_replayed(&ours.log());
        let lines = check_dump(&ours, &expected, &format!("pageserver at {time}"));
        ours.stop();

        // pgBackRest: restore the backup, then PostgreSQL replays the archive up to the time and promotes.
        let home = PgCluster::data_dir_home();
        let data = home.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chown_to_server_user(home.path());
        chown_to_server_user(&data);
        let started = Instant::now();
        let target = format!("--target={time}");
        let pg1 = format!("--pg1-path={}", data.display());
        repo.run(
            &pg,
            &[
                &pg1,
                "--type=time",
                &target,
                "--target-action=promote",
                "restore",
            ],
        );
        let br_restore = started.elapsed();
        let started = Instant::now();
        let mut theirs = PgCluster::start_on(home);
        wait_promoted(&theirs);
        let br_recovery = started.elapsed();
        let br_total = br_restore + br_recovery;
        let br_log = theirs.log();
        let br_replayed = wal_replayed(&br_log);
        let segments = br_log.matches("restored log file").count();
        check_dump(&theirs, &expected, &format!("pgBackRest at {time}"));
        theirs.stop();

        println!(
            "{label} ({time}, lsn {}): pageserver {:.2} s (restore {:.2} + start {:.2}; {} pages redone; \
             PostgreSQL replayed {ps_replayed} bytes); pgBackRest {:.2} s (restore {:.2} + recovery {:.2}; \
             {br_replayed} bytes of WAL replayed from {segments} segments); {:.1}x; dumps of {lines} lines equal",
            snap.lsn,
            ps_total.as_secs_f64(),
            ps_restore.as_secs_f64(),
            ps_start.as_secs_f64(),
            ps_redo,
            br_total.as_secs_f64(),
            br_restore.as_secs_f64(),
            br_recovery.as_secs_f64(),
            br_total.as_secs_f64() / ps_total.as_secs_f64()
        );
        rows.push(json!({
            "target": label,
            "time": time,
            "lsn": snap.lsn.to_string(),
            "wal_since_backup_bytes": snap.lsn.0.saturating_sub(backup_lsn.0),
            "dump_lines_equal": lines,
            "pageserver": {
                "total_s": ps_total.as_secs_f64(),
                "restore_s": ps_restore.as_secs_f64(),
                "start_s": ps_start.as_secs_f64(),
                "restored_bytes": restored_bytes,
                "wal_replayed_by_postgres_bytes": ps_replayed,
                "pages_redone": ps_redo,
            },
            "pgbackrest": {
                "total_s": br_total.as_secs_f64(),
                "restore_s": br_restore.as_secs_f64(),
                "recovery_s": br_recovery.as_secs_f64(),
                "wal_replayed_bytes": br_replayed,
                "segments_fetched": segments,
            },
            "pgbackrest_over_pageserver": br_total.as_secs_f64() / ps_total.as_secs_f64(),
        }));
    }

    let tenant_dir = ps.workdir().join("tenants").join(T);
    let tl_dir = tenant_dir.join("timelines").join(TL);
    let archive_bytes = dir_bytes(&tl_dir.join("wal"));
    let tenant_bytes = dir_bytes(&tenant_dir);
    let storage = json!({
        "pgbackrest_backup_bytes": repo.bytes("backup"),
        "pgbackrest_archive_bytes": repo.bytes("archive"),
        "pageserver_tenant_bytes": tenant_bytes,
        "pageserver_wal_archive_bytes": archive_bytes,
        "pageserver_layers_and_other_bytes": tenant_bytes.saturating_sub(archive_bytes),
        "primary_data_dir_bytes": data_bytes,
        "wal_written_since_backup_bytes": end_lsn.0.saturating_sub(backup_lsn.0),
    });
    println!("storage: {storage}");
    common::write_report(
        "pitr",
        &json!({
            "bench": bench,
            "pgbench_scale": plan.scale,
            "phases_s": plan.phases,
            "pgbackrest_full_backup_s": backup_time.as_secs_f64(),
            "pgbackrest_config": "compress-type=lz4 process-max=2 start-fast=y, synchronous archive-push",
            "restores": Value::Array(rows),
            "storage": storage,
        }),
    );
}
