//! The pageserver and its walredo bundle in another distribution: a Debian 13 root filesystem made by
//! debootstrap (`scripts/debian13-root.sh`, named by `$PAGESERVER_DEBIAN13_ROOT`, which scripts/test.sh
//! sets; the test fails without it). The pageserver built here runs with that root as its `/` (glibc 2.41
//! instead of the host's 2.36), follows a PostgreSQL 15 primary on the host under pgbench and the DDL mix,
//! and serves every page equal to the primary's files; its redo children run in their empty roots on the
//! bundle's own libraries; and it bootstraps a timeline with the bundle's initdb, in its empty root too, for
//! PostgreSQL 15 and for 18.

mod support;

use std::path::PathBuf;

use serde_json::json;
use support::compare::{compare_over_http, stop_primary_and_wait};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, ddl_mix};

const T: &str = "d13d13d13d13d13d13d13d13d13d13d1";
const TL: &str = "e13e13e13e13e13e13e13e13e13e13e1";
const T2: &str = "f13f13f13f13f13f13f13f13f13f13f1";
const T3: &str = "a18a18a18a18a18a18a18a18a18a18a1";

fn debian13_root() -> PathBuf {
    let root = PathBuf::from(std::env::var("PAGESERVER_DEBIAN13_ROOT").expect(
        "PAGESERVER_DEBIAN13_ROOT must name a Debian 13 root (scripts/debian13-root.sh makes one)",
    ));
    let os = std::fs::read_to_string(root.join("etc/os-release")).unwrap();
    assert!(os.contains("VERSION_ID=\"13\""), "{os}");
    root
}

#[test]
fn a_pageserver_in_a_debian13_root_follows_a_primary_and_serves_its_pages() {
    let root = debian13_root();
    let mut pg = PgCluster::start(PgOptions {
        extra_conf: WORKLOAD_CONF.iter().map(|s| s.to_string()).collect(),
    });
    let ps = Pageserver::start_in_root(&root, &[]);
    // It is the other distribution's glibc that the pageserver runs on: the libc it mapped (read through
    // /proc/<pid>/map_files, the very file) is not the host's.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", ps.pid())).unwrap();
    let (range, path) = maps
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 6 && f[5].ends_with("/libc.so.6"))
                .then(|| (f[0].to_string(), f[5].to_string()))
        })
        .expect("libc mapped");
    let mapped = std::fs::read(format!("/proc/{}/map_files/{range}", ps.pid())).unwrap();
    let host = std::fs::read(&path).unwrap();
    assert!(
        mapped != host,
        "the pageserver maps the host's {path} ({} bytes)",
        host.len()
    );

    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    pg.pgbench_init("postgres", 2);
    let wal_log_db = std::thread::scope(|scope| {
        let bench = scope.spawn(|| pg.pgbench("postgres", &["-n", "-c", "2", "-T", "15"]));
        ddl_mix(&pg, "d13");
        let out = bench.join().expect("pgbench thread");
        assert!(
            out.contains("number of transactions actually processed"),
            "{out}"
        );
        let oid: u32 = pg
            .sql("SELECT oid FROM pg_database WHERE datname = 'ddl_d13_db_wal'")
            .parse()
            .unwrap();
        pg.sql("CHECKPOINT");
        oid
    });
    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[wal_log_db]);
    cmp.print(&format!("Debian 13 root, followed to {last}"));
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    let equal: u64 = cmp.equal.values().sum();
    assert!(equal > 1000, "{equal} pages equal");

    let log = ps.log_text();
    assert!(
        log.contains("launched wal-redo process") && log.contains("root=\"empty\""),
        "{log}"
    );
    assert!(!log.contains("root=\"host\""), "{log}");

    // initdb of the bundle, run by the pageserver in the Debian 13 root.
    ps.create_tenant(T2);
    ps.bootstrap(T2, TL);
    assert_eq!(ps.pg_class_page(T2, TL), (200, 8192));
    let log = ps.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("initdb finished"))
        .unwrap_or_else(|| panic!("no initdb line:\n{log}"));
    assert!(line.contains("root=\"empty\""), "{line}");

    // The bundle's PostgreSQL 18 the same way: its initdb in its empty root, a PostgreSQL 18 timeline.
    ps.create_tenant(T3);
    let body = json!({"new_timeline_id": TL, "pg_version": 18}).to_string();
    let (s, info) = ps.json("POST", &format!("/v1/tenant/{T3}/timeline"), Some(&body));
    assert_eq!((s, &info["pg_version"]), (201, &json!(18)), "{info}");
    assert_eq!(ps.pg_class_page(T3, TL), (200, 8192));
    let log = ps.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("initdb finished"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[1].contains("root=\"empty\""), "{}", lines[1]);
}
