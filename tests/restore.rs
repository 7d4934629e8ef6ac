//! `pageserver restore` against a followed primary (PostgreSQL 15):
//! - pgbench and a DDL mix run in three phases; at each pause the test records the primary's `now()` and its
//!   `pg_dumpall`, then the next phase runs;
//! - afterwards `pageserver restore --time <that now()>` writes a data directory for each moment: plain
//!   PostgreSQL starts on it and its `pg_dumpall` equals the dump of that moment; `--restore-point` of the
//!   point created at the second pause equals that pause's dump; `--latest` equals the end;
//! - the errors: a non-empty target, a time before the retention and one after the newest commit (both
//!   naming the restorable range), a malformed time, an unknown restore point, the page service connection
//!   lost mid-backup; none leaves a directory behind.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::compare::stop_primary_and_wait;
use support::dump::{as_wal_derived, dumpall, first_difference, snapshot};
use support::pageserver::{Pageserver, binary};
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, ddl_mix};

const T: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
const TL: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";

fn restore(ps: &Pageserver, target: &[&str], out: &Path) -> std::process::Output {
    Command::new(binary())
        .arg("restore")
        .args(["--server", &format!("http://{}", ps.http_addr)])
        .args(["--tenant", T, "--timeline", TL])
        .args(target)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run pageserver restore")
}

/// Restores `target` into a new data directory and starts plain PostgreSQL on it.
fn restored_cluster(ps: &Pageserver, target: &[&str]) -> (PgCluster, String) {
    let home = PgCluster::data_dir_home();
    let out = restore(ps, target, &home.path().join("data"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "restore {target:?}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing but the finished directory is left beside it.
    let names: Vec<String> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["data"], "{target:?}");
    (PgCluster::start_on(home), stdout)
}

fn primary_now(pg: &PgCluster) -> String {
    pg.sql(r#"SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#)
}

#[test]
fn restore_by_time_gives_the_dump_of_each_moment() {
    let started = Instant::now();
    let mut pg = PgCluster::start(PgOptions {
        extra_conf: WORKLOAD_CONF.iter().map(|s| s.to_string()).collect(),
    });
    let ps = Pageserver::start(&[]);
    ps.follow(
        T,
        json!({"checkpoint_distance": 33554432}),
        TL,
        &pg.connstr("postgres"),
        "ps",
    );
    pg.pgbench_init("postgres", 5);

    let mut moments = Vec::new();
    for phase in 0..4 {
        std::thread::scope(|scope| {
            let bench = scope.spawn(|| pg.pgbench("postgres", &["-n", "-c", "4", "-T", "4"]));
            ddl_mix(&pg, &format!("restore{phase}"));
            bench.join().expect("pgbench thread");
        });
        if phase < 3 {
            // Paused: commits before this time are in, the next phase's commits come after it.
            std::thread::sleep(Duration::from_millis(20));
            let time = primary_now(&pg);
            std::thread::sleep(Duration::from_millis(20));
            moments.push((time, snapshot(&pg)));
            if phase == 1 {
                pg.sql("SELECT pg_create_restore_point('before phase 2')");
            }
        }
    }
    let end = snapshot(&pg);
    stop_primary_and_wait(&mut pg, &ps, T, TL);
    println!(
        "workload done in {:.0} s; moments {:?}",
        started.elapsed().as_secs_f64(),
        moments.iter().map(|(t, _)| t).collect::<Vec<_>>()
    );

    let (s, points) = ps.json(
        "GET",
        &format!("/v1/tenant/{T}/timeline/{TL}/restore_points"),
        None,
    );
    assert_eq!(s, 200, "{points}");
    println!("restore points: {points}");

    for (i, (time, snap)) in moments.iter().enumerate() {
        let (mut restored, stdout) = restored_cluster(&ps, &["--time", time]);
        let ours = dumpall(&restored);
        let expected = as_wal_derived(snap);
        assert!(
            ours == expected,
            "moment {i} ({time}): pg_dumpall differs: {}",
            first_difference(&expected, &ours)
        );
        println!(
            "moment {i} at {time}: {} pg_dumpall of {} lines equal",
            stdout.trim(),
            ours.lines().count()
        );
        restored.stop();
    }
    // The named restore point, made right after the second pause's dump.
    let named = points["restore_points"].as_array().unwrap();
    assert_eq!(named.len(), 1, "{points}");
    assert_eq!(named[0]["name"], "before phase 2");
    let (mut by_name, stdout) = restored_cluster(&ps, &["--restore-point", "before phase 2"]);
    let ours = dumpall(&by_name);
    let expected = as_wal_derived(&moments[1].1);
    assert!(
        ours == expected,
        "--restore-point: pg_dumpall differs: {}",
        first_difference(&expected, &ours)
    );
    println!("--restore-point 'before phase 2': {}", stdout.trim());
    by_name.stop();

    let (mut latest, stdout) = restored_cluster(&ps, &["--latest"]);
    let ours = dumpall(&latest);
    let expected = as_wal_derived(&end);
    assert!(
        ours == expected,
        "--latest: pg_dumpall differs: {}",
        first_difference(&expected, &ours)
    );
    println!("--latest: {}", stdout.trim());
    latest.stop();

    // The layer map drawn: one shape per layer file, after a checkpoint and a forced compaction (so that L0,
    // L1 and image layers are all there), and the marks, a branch point among them.
    let tl_path = format!("/v1/tenant/{T}/timeline/{TL}");
    let (s, _) = ps.json("PUT", &format!("{tl_path}/checkpoint"), None);
    assert_eq!(s, 200);
    let (s, body) = ps.json(
        "PUT",
        &format!("{tl_path}/compact?force_l0_compaction=true&force_image_layer_creation=true"),
        None,
    );
    assert_eq!(s, 200, "{body}");
    let branch = "7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b";
    let (s, body) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(
            &json!({"new_timeline_id": branch, "ancestor_timeline_id": TL,
                    "ancestor_start_lsn": moments[1].1.lsn.to_string()})
            .to_string(),
        ),
    );
    assert_eq!(s, 201, "{body}");
    let (s, layers) = ps.json("GET", &format!("{tl_path}/layer"), None);
    assert_eq!(s, 200);
    let historic = layers["historic_layers"].as_array().unwrap();
    let (s, svg) = ps.get(&format!("{tl_path}/layer_map.svg"));
    assert_eq!(s, 200);
    assert_eq!(
        svg.matches("<rect class=\"layer ").count(),
        historic.len(),
        "{svg}"
    );
    for l in historic {
        let name = l["layer_file_name"].as_str().unwrap();
        assert!(
            svg.contains(&format!("<title>{name} (")),
            "{name} not drawn"
        );
    }
    for class in ["gc-cutoff", "pitr-horizon", "branch-point", "last-record"] {
        assert!(
            svg.contains(&format!("class=\"mark {class}\"")),
            "no {class} mark"
        );
    }
    let kinds = |k: &str| svg.matches(&format!("class=\"layer {k}\"")).count();
    println!(
        "layer_map.svg: {} layers ({} image, {} L1 delta, {} L0 delta), {} bytes",
        historic.len(),
        kinds("image"),
        kinds("delta"),
        kinds("l0"),
        svg.len()
    );
    assert!(kinds("image") > 0 && kinds("l0") + kinds("delta") > 0);
    if let Some(out) = std::env::var_os("LAYER_MAP_SVG_OUT") {
        std::fs::write(out, &svg).unwrap();
    }
    // The same picture offline, from the workdir: `pageserver layers draw <timeline dir>`.
    let tl_dir = ps.workdir().join(format!("tenants/{T}/timelines/{TL}"));
    let drawn = Command::new(binary())
        .args(["layers", "draw"])
        .arg(&tl_dir)
        .output()
        .unwrap();
    assert!(
        drawn.status.success(),
        "{}",
        String::from_utf8_lossy(&drawn.stderr)
    );
    let offline = String::from_utf8(drawn.stdout).unwrap();
    assert_eq!(
        offline.matches("<rect class=\"layer ").count(),
        historic.len()
    );
    for l in historic {
        let name = l["layer_file_name"].as_str().unwrap();
        assert!(
            offline.contains(&format!("<title>{name} (")),
            "{name} not drawn offline"
        );
    }
    for class in ["gc-cutoff", "branch-point", "last-record"] {
        assert!(
            offline.contains(&format!("class=\"mark {class}\"")),
            "no {class} mark offline"
        );
    }
    let not_a_timeline = Command::new(binary())
        .args(["layers", "draw"])
        .arg(ps.workdir())
        .output()
        .unwrap();
    assert!(!not_a_timeline.status.success());

    // Errors: each names the problem, exits non-zero and leaves nothing behind.
    let home = tempfile::tempdir().unwrap();
    let full = home.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep"), b"x").unwrap();
    let fails = |target: &[&str], out: &Path, expect: &[&str]| {
        let o = restore(&ps, target, out);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{target:?} succeeded");
        for e in expect {
            assert!(err.contains(e), "{target:?}: {e:?} not in {err}");
        }
        println!("{target:?}: {}", err.trim());
    };
    fails(&["--latest"], &full, &["is not empty"]);
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);
    let range = ["oldest restorable:", "newest:", &moments[0].0[..4]];
    fails(
        &["--time", "2001-01-01T00:00:00Z"],
        &home.path().join("a"),
        &[&["outside the timeline's retention"][..], &range].concat(),
    );
    fails(
        &["--time", "2999-01-01T00:00:00Z"],
        &home.path().join("b"),
        &[&["after the newest commit", "--latest"][..], &range].concat(),
    );
    fails(
        &["--time", "yesterday"],
        &home.path().join("c"),
        &["invalid time"],
    );
    fails(
        &["--restore-point", "nope"],
        &home.path().join("e"),
        &["no restore point named \"nope\"", "before phase 2"],
    );
    fails(
        &["--lsn", "0/10"],
        &home.path().join("d"),
        &["outside the timeline's retention"],
    );
    // The connection lost after 10 MiB of the backup: an error, and no directory (complete-looking or not).
    let pg_port: u16 = ps.pg_addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let cut = support::proxy::Proxy::cutting(pg_port, 10 << 20);
    let page_service = format!("127.0.0.1:{}", cut.port);
    fails(
        &["--latest", "--page-service", &page_service],
        &home.path().join("cut"),
        &["fullbackup at", &page_service],
    );
    let left: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["full"], "failed restores left {left:?}");
}

/// `--standby`: the copy restored at the newest state starts as a hot standby of the primary, catches up with
/// what the primary wrote after the restore, and answers queries with the primary's data.
#[test]
fn restore_standby_follows_the_primary() {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec!["wal_keep_size = '1GB'".into()],
    });
    let ps = Pageserver::start(&[]);
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "ps");
    pg.pgbench_init("postgres", 2);
    pg.pgbench("postgres", &["-n", "-c", "2", "-T", "2"]);
    pg.sql("CHECKPOINT");
    pg.pgbench("postgres", &["-n", "-c", "2", "-T", "2"]);
    let at: pageserver::pg::Lsn = pg.sql("SELECT pg_current_wal_lsn()").parse().unwrap();
    support::compare::wait_past(&ps, T, TL, at);

    let home = PgCluster::data_dir_home();
    let out = restore(
        &ps,
        &["--latest", "--standby", &pg.connstr("postgres")],
        &home.path().join("data"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = home.path().join("data");
    assert!(data.join("standby.signal").is_file());
    let label = std::fs::read_to_string(data.join("backup_label")).unwrap();
    assert!(label.contains("BACKUP FROM: standby"), "{label}");
    println!(
        "{}backup_label:\n{label}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut standby = PgCluster::start_on(home);
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t");

    // The primary goes on; the standby follows.
    pg.pgbench("postgres", &["-n", "-c", "2", "-T", "2"]);
    pg.sql("CREATE TABLE after_restore AS SELECT generate_series(1, 1000) AS i");
    let end: pageserver::pg::Lsn = pg.sql("SELECT pg_current_wal_lsn()").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replayed: pageserver::pg::Lsn = standby
            .sql("SELECT pg_last_wal_replay_lsn()")
            .parse()
            .unwrap();
        if replayed >= end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby replayed to {replayed}, not {end}:\n{}",
            standby.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for query in [
        "SELECT sum(abalance), count(*) FROM pgbench_accounts",
        "SELECT count(*), sum(delta) FROM pgbench_history",
        "SELECT count(*), sum(i) FROM after_restore",
    ] {
        assert_eq!(standby.sql(query), pg.sql(query), "{query}");
    }
    println!(
        "the standby caught up to {end}: {}",
        standby.sql("SELECT count(*) FROM pgbench_history")
    );
    standby.stop();
}
