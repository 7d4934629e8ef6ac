//! The PostgreSQL 15 test bed itself: a real cluster, a replication slot, pgbench, a query, a base backup.

mod support;

use support::pg::{PgCluster, PgOptions};

#[test]
fn postgres_primary_runs_pgbench_and_takes_a_base_backup() {
    let mut pg = PgCluster::start(PgOptions::default());
    assert_eq!(
        pg.sql("SHOW server_version_num")
            .chars()
            .take(2)
            .collect::<String>(),
        "15"
    );
    assert_eq!(pg.sql("SHOW wal_level"), "replica");

    pg.create_physical_slot("pageserver_test");
    let slot = pg.sql("SELECT slot_type, restart_lsn IS NOT NULL FROM pg_replication_slots");
    assert_eq!(slot, "physical|t");

    let before = pg.current_lsn();
    pg.pgbench_init("postgres", 1);
    let out = pg.pgbench("postgres", &["-c", "2", "-t", "200", "-n"]);
    assert!(
        out.contains("number of transactions actually processed: 400/400"),
        "{out}"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM pgbench_accounts"), "100000");
    assert_eq!(pg.sql("SELECT count(*) FROM pgbench_history"), "400");
    let moved = pg.sql(&format!("SELECT pg_current_wal_lsn() > '{before}'::pg_lsn"));
    assert_eq!(moved, "t", "pgbench wrote no WAL");

    let backup = tempfile::tempdir().unwrap();
    let tar = pg.basebackup_tar(&backup.path().join("bb"));
    let size = std::fs::metadata(&tar).unwrap().len();
    assert!(size > 10 << 20, "base.tar is only {size} bytes");

    pg.stop();
    assert!(!pg.is_running());
    assert!(!pg.data_dir().join("postmaster.pid").exists());
}

#[test]
fn a_failed_test_leaves_no_server_behind() {
    let result = std::panic::catch_unwind(|| {
        let pg = PgCluster::start(PgOptions::default());
        assert_eq!(pg.sql("SELECT 1"), "1");
        std::panic::panic_any((pg.data_dir().to_path_buf(), pg.port()));
    });
    let (data_dir, port) = *result
        .expect_err("the closure panics")
        .downcast::<(std::path::PathBuf, u16)>()
        .unwrap();
    // Drop ran during unwinding: the server is gone and so is its data directory.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "PostgreSQL still listens on {port}"
    );
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
}
