//! Timeline routes through real HTTP against the real binary: bootstrap with the bundle's initdb, branch,
//! debug reads, checkpoint / compact / GC / layers, delete rules, a restart, and import_basebackup of a real
//! pg_basebackup tar (and of a broken one).

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use pageserver::pg::Lsn;
use serde_json::json;
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};

const T: &str = "0123456789abcdef0123456789abcdef";
const ROOT: &str = "11111111111111111111111111111111";
const CHILD: &str = "22222222222222222222222222222222";
const IMPORTED: &str = "33333333333333333333333333333333";

/// Key of block `blk` of pg_class (relfilenode 1259) in database `db`, as 36 hex digits.
fn pg_class_key(db: u32, blk: u32) -> String {
    format!(
        "{:02X}{:08X}{:08X}{:08X}{:02X}{:08X}",
        0, 1663, db, 1259, 0, blk
    )
}

#[test]
fn bootstrap_branch_read_maintain_delete_restart() {
    let mut ps = Pageserver::start(&[]);
    ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T}).to_string()),
    );
    let (s, root) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&json!({"new_timeline_id": ROOT, "pg_version": 15}).to_string()),
    );
    assert_eq!(s, 201, "{root}");
    let initdb_lsn: Lsn = root["initdb_lsn"].as_str().unwrap().parse().unwrap();
    assert!(initdb_lsn.is_valid());
    assert_eq!(root["last_record_lsn"], root["initdb_lsn"]);
    assert_eq!(root["disk_consistent_lsn"], root["initdb_lsn"]);
    assert_eq!(root["pg_version"], 15);
    let (s, _) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&json!({"new_timeline_id": ROOT, "pg_version": 15}).to_string()),
    );
    assert_eq!(s, 409);

    // pg_class's first page of database postgres (5), as initdb wrote it.
    let (s, page) = ps.get_bytes(&format!(
        "/v1/tenant/{T}/timeline/{ROOT}/getpage?key={}",
        pg_class_key(5, 0)
    ));
    assert_eq!((s, page.len()), (200, 8192));
    let (s, v) = ps.json(
        "GET",
        &format!(
            "/v1/tenant/{T}/timeline/{ROOT}/getpage?key={}&lsn=0/1",
            pg_class_key(5, 0)
        ),
        None,
    );
    assert_eq!(s, 404, "nothing below the initdb LSN: {v}");

    let branch = json!({"new_timeline_id": CHILD, "ancestor_timeline_id": ROOT}).to_string();
    let (s, child) = ps.json("POST", &format!("/v1/tenant/{T}/timeline"), Some(&branch));
    assert_eq!(s, 201, "{child}");
    assert_eq!(child["ancestor_timeline_id"], ROOT);
    assert_eq!(child["ancestor_lsn"], root["last_record_lsn"]);
    let (s, v) = ps.json("POST", &format!("/v1/tenant/{T}/timeline"), Some(&json!({"new_timeline_id": "44444444444444444444444444444444", "ancestor_timeline_id": ROOT, "ancestor_start_lsn": "FF/0"}).to_string()));
    assert_eq!(
        s, 406,
        "a branch point above the ancestor's last record: {v}"
    );
    let (s, page_child) = ps.get_bytes(&format!(
        "/v1/tenant/{T}/timeline/{CHILD}/getpage?key={}",
        pg_class_key(5, 0)
    ));
    assert_eq!(
        (s, &page_child),
        (200, &page),
        "the branch reads through its ancestor"
    );

    for (method, route) in [
        ("PUT", "checkpoint?wait_until_flushed=true"),
        ("PUT", "compact"),
        ("PUT", "do_gc"),
        ("GET", "layer"),
    ] {
        let (s, v) = ps.json(
            method,
            &format!("/v1/tenant/{T}/timeline/{ROOT}/{route}"),
            if method == "PUT" && route == "do_gc" {
                Some("{\"gc_horizon\": 0}")
            } else {
                None
            },
        );
        assert_eq!(s, 200, "{route}: {v}");
    }
    let (_, layers) = ps.json(
        "GET",
        &format!("/v1/tenant/{T}/timeline/{ROOT}/layer"),
        None,
    );
    assert!(
        !layers["historic_layers"].as_array().unwrap().is_empty(),
        "{layers}"
    );

    let (s, v) = ps.json("DELETE", &format!("/v1/tenant/{T}/timeline/{ROOT}"), None);
    assert_eq!(s, 409, "a timeline with children stays: {v}");
    let (_, list) = ps.json("GET", &format!("/v1/tenant/{T}/timeline"), None);
    assert_eq!(list.as_array().unwrap().len(), 2);

    // A restart keeps both timelines, their positions and their pages.
    ps.signal_and_wait(Signal::SIGTERM, Duration::from_secs(5))
        .expect("exit within 5 s");
    ps.spawn(&[]);
    let (s, again) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{CHILD}"), None);
    assert_eq!(s, 200);
    assert_eq!(again["ancestor_lsn"], child["ancestor_lsn"]);
    let (_, page_after) = ps.get_bytes(&format!(
        "/v1/tenant/{T}/timeline/{CHILD}/getpage?key={}",
        pg_class_key(5, 0)
    ));
    assert_eq!(page_after, page);

    let (s, _) = ps.json("DELETE", &format!("/v1/tenant/{T}/timeline/{CHILD}"), None);
    assert_eq!(s, 202);
    let (s, _) = ps.json("DELETE", &format!("/v1/tenant/{T}/timeline/{ROOT}"), None);
    assert_eq!(s, 202);
    let (_, list) = ps.json("GET", &format!("/v1/tenant/{T}/timeline"), None);
    assert_eq!(list.as_array().unwrap().len(), 0);
}

#[test]
fn import_basebackup_of_a_real_primary() {
    let pg = PgCluster::start(PgOptions::default());
    pg.pgbench_init("postgres", 1);
    let dir = tempfile::tempdir().unwrap();
    let tar = pg.basebackup_tar(&dir.path().join("bb"));
    let label = std::fs::read(dir.path().join("bb/base.tar")).unwrap();
    // backup_label's START WAL LOCATION is the base LSN; the end is where the backup ended.
    let start = support::pg::backup_start_lsn(&label).to_string();
    let end = pg.current_lsn();
    let bytes = std::fs::read(&tar).unwrap();

    let ps = Pageserver::start(&[]);
    ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T}).to_string()),
    );
    let base = format!(
        "/v1/tenant/{T}/timeline/{IMPORTED}/import_basebackup?base_lsn={start}&end_lsn={end}&pg_version=15"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{}{}", ps.http_addr, base);
    // A truncated archive: a 400 naming the entry, and no timeline left behind.
    let mut r = agent
        .put(&url)
        .content_type("application/x-tar")
        .send(&bytes[..bytes.len() / 2])
        .unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status().as_u16(), 400, "{body}");
    assert!(body.contains("truncated") || body.contains("tar"), "{body}");
    let (s, _) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{IMPORTED}"), None);
    assert_eq!(s, 404);

    let mut r = agent
        .put(&url)
        .content_type("application/x-tar")
        .send(&bytes[..])
        .unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status().as_u16(), 201, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["last_record_lsn"].as_str().unwrap(), start);

    // pgbench_accounts' size as PostgreSQL had it.
    let relfilenode: u32 = pg
        .sql("SELECT relfilenode FROM pg_class WHERE relname = 'pgbench_accounts'")
        .parse()
        .unwrap();
    let blocks: u32 = pg
        .sql("SELECT pg_relation_size('pgbench_accounts') / 8192")
        .parse()
        .unwrap();
    let size_key = format!(
        "{:02X}{:08X}{:08X}{:08X}{:02X}{:08X}",
        0,
        1663,
        5,
        relfilenode,
        0,
        u32::MAX
    );
    let (s, size) = ps.get_bytes(&format!(
        "/v1/tenant/{T}/timeline/{IMPORTED}/getpage?key={size_key}"
    ));
    assert_eq!(s, 200);
    assert_eq!(u32::from_le_bytes(size[..].try_into().unwrap()), blocks);
    let (s, _) = ps.request("PUT", &base, Some(""));
    assert_eq!(s, 409, "the timeline exists now");
}

/// PostgreSQL 18 beside 15: a timeline bootstrapped with the bundle's 18 initdb is an 18 timeline (and so is
/// its branch), and its fullbackup boots plain PostgreSQL 18; an 18 base backup offered as a 15 one is
/// refused naming both versions, and leaves no timeline; a version the pageserver does not serve is refused
/// naming the supported ones.
#[test]
fn a_postgresql_18_timeline_beside_15() {
    // The bundle's initdb makes this superuser; the test bed's psql connects as postgres.
    let ps = Pageserver::start(&["superuser='postgres'"]);
    ps.create_tenant(T);
    let (s, root) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&json!({"new_timeline_id": ROOT, "pg_version": 18}).to_string()),
    );
    assert_eq!(s, 201, "{root}");
    assert_eq!(root["pg_version"], 18);
    let branch = json!({"new_timeline_id": CHILD, "ancestor_timeline_id": ROOT}).to_string();
    let (s, child) = ps.json("POST", &format!("/v1/tenant/{T}/timeline"), Some(&branch));
    assert_eq!((s, &child["pg_version"]), (201, &json!(18)), "{child}");

    let lsn: Lsn = root["last_record_lsn"].as_str().unwrap().parse().unwrap();
    let tar = ps.fullbackup(T, CHILD, lsn);
    let restored = PgCluster::start_from_tar(&tar);
    let version = restored.sql("SHOW server_version");
    assert!(version.starts_with("18."), "{version}");
    assert_eq!(restored.sql("SHOW data_checksums"), "on");
    let tables: u32 = restored
        .sql("SELECT count(*) FROM pg_class WHERE relkind = 'r'")
        .parse()
        .unwrap();
    assert!(tables > 50, "{tables} tables");
    println!("PostgreSQL {version} booted on the fullbackup of an 18 timeline ({tables} tables)");

    let (s, v) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&json!({"new_timeline_id": IMPORTED, "pg_version": 17}).to_string()),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("supported: 15, 18"),
        "{v}"
    );

    let pg = PgCluster::start_version(18, PgOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let tar = pg.basebackup_tar(&dir.path().join("bb"));
    let bytes = std::fs::read(&tar).unwrap();
    let start = support::pg::backup_start_lsn(&bytes);
    let (status, body) = ps.try_import_basebackup(T, IMPORTED, &bytes, (start, start), 15);
    assert_eq!(status, 400, "{body}");
    // Whichever file comes first tells it: pg_control's version, or the relation mapper file's size.
    assert!(
        body.contains("PostgreSQL 15")
            && (body.contains("PostgreSQL 18") || body.contains("PostgreSQL 16 and later")),
        "{body}"
    );
    let (s, _) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{IMPORTED}"), None);
    assert_eq!(s, 404, "no timeline is left");
}
