//! Workloads that make WAL of every kind the pageserver must understand.

use super::pg::PgCluster;

/// Settings the workloads need on top of the defaults (two-phase commit).
pub const WORKLOAD_CONF: &[&str] = &["max_prepared_transactions = 10"];

/// A DDL mix: a table with indexes of every access method (btree with page splits and page deletion, hash,
/// GIN, GiST, SP-GiST, BRIN), updates, deletes, VACUUM, TRUNCATE, a sequence, two-phase commit and rollback,
/// CREATE DATABASE with both strategies, DROP DATABASE, an unlogged table, DROP TABLE. `tag` keeps the object
/// names of repeated runs apart. Each statement runs on its own (CREATE DATABASE and VACUUM cannot run in a
/// transaction block).
pub fn ddl_mix(pg: &PgCluster, tag: &str) {
    let t = format!("ddl_{tag}");
    let statements = [
        format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text, arr int[], r int4range, p point, doc tsvector)"
        ),
        format!(
            "INSERT INTO {t} SELECT g, md5(g::text), ARRAY[g % 100, g % 7], int4range(g, g + 10), \
             point(g % 97, g % 89), to_tsvector('simple', 'word' || (g % 50)) FROM generate_series(1, 20000) g"
        ),
        format!("CREATE INDEX {t}_btree ON {t} (v)"),
        format!("CREATE INDEX {t}_hash ON {t} USING hash (v)"),
        format!("CREATE INDEX {t}_gin ON {t} USING gin (arr)"),
        format!("CREATE INDEX {t}_gin_doc ON {t} USING gin (doc)"),
        format!("CREATE INDEX {t}_gist ON {t} USING gist (r)"),
        format!("CREATE INDEX {t}_spgist ON {t} USING spgist (p)"),
        format!("CREATE INDEX {t}_brin ON {t} USING brin (id)"),
        format!(
            "INSERT INTO {t} SELECT g, md5(g::text), ARRAY[g % 13], int4range(g, g + 3), point(g % 11, g % 5), \
             to_tsvector('simple', 'more' || g) FROM generate_series(20001, 30000) g"
        ),
        format!("UPDATE {t} SET v = md5(v), arr = arr || 1 WHERE id % 5 = 0"),
        format!("DELETE FROM {t} WHERE id BETWEEN 2000 AND 12000"),
        format!("VACUUM {t}"),
        format!("VACUUM (FREEZE) {t}"),
        format!("CREATE SEQUENCE {t}_seq"),
        format!("SELECT count(nextval('{t}_seq')) FROM generate_series(1, 200)"),
        format!("CREATE TABLE {t}_trunc AS SELECT g AS a FROM generate_series(1, 5000) g"),
        format!("TRUNCATE {t}_trunc"),
        format!("INSERT INTO {t}_trunc VALUES (1)"),
        format!(
            "BEGIN; INSERT INTO {t} (id, v) VALUES (100001, 'two-phase'); PREPARE TRANSACTION '{t}_p1'"
        ),
        format!("COMMIT PREPARED '{t}_p1'"),
        format!(
            "BEGIN; INSERT INTO {t} (id, v) VALUES (100002, 'two-phase'); PREPARE TRANSACTION '{t}_p2'"
        ),
        format!("ROLLBACK PREPARED '{t}_p2'"),
        format!("CREATE DATABASE {t}_db_wal TEMPLATE template1 STRATEGY wal_log"),
        format!("CREATE DATABASE {t}_db_copy TEMPLATE template1 STRATEGY file_copy"),
        format!("DROP DATABASE {t}_db_copy"),
        format!("CREATE UNLOGGED TABLE {t}_unlogged AS SELECT g FROM generate_series(1, 1000) g"),
        format!("DROP TABLE {t}_trunc"),
        format!("ALTER TABLE {t} ADD COLUMN extra int DEFAULT 7"),
        format!("CLUSTER {t} USING {t}_pkey"),
    ];
    for sql in &statements {
        pg.sql(sql);
    }
}

/// Multixacts: `sessions` transactions lock the same `rows` rows FOR SHARE at once, so each row's xmax becomes
/// a multixact that grows by one member per session.
pub fn multixact_workload(pg: &PgCluster, sessions: usize, rows: usize) {
    pg.sql(&format!(
        "CREATE TABLE IF NOT EXISTS mx_rows (id int PRIMARY KEY, v int); \
         INSERT INTO mx_rows SELECT g, g FROM generate_series(1, {rows}) g ON CONFLICT DO NOTHING"
    ));
    let lock = "BEGIN; SELECT count(*) FROM (SELECT * FROM mx_rows FOR SHARE) s; \
                SELECT pg_sleep(1); COMMIT;";
    let children: Vec<_> = (0..sessions)
        .map(|_| pg.spawn_sql("postgres", lock))
        .collect();
    for mut child in children {
        let status = child.wait().expect("wait for psql");
        assert!(status.success(), "a FOR SHARE session failed");
    }
    // A backend reuses a multixact for the same member set, so the sessions above make few. One per row:
    // share-lock each row in the transaction, then lock it FOR UPDATE in a subtransaction of its own.
    pg.sql(&format!(
        "DO $$ BEGIN FOR r IN 1..{rows} LOOP \
           PERFORM 1 FROM mx_rows WHERE id = r FOR SHARE; \
           BEGIN PERFORM 1 FROM mx_rows WHERE id = r FOR UPDATE; EXCEPTION WHEN others THEN NULL; END; \
         END LOOP; END $$"
    ));
}

/// Transactions that abort: ROLLBACK after writing, and a statement that fails.
pub fn aborts(pg: &PgCluster) {
    pg.sql("CREATE TABLE IF NOT EXISTS aborted (a int)");
    pg.sql("BEGIN; INSERT INTO aborted VALUES (1); SAVEPOINT s; INSERT INTO aborted VALUES (2); ROLLBACK");
    let _ = pg.try_sql(
        "postgres",
        "BEGIN; INSERT INTO aborted VALUES (3); SELECT 1/0; COMMIT",
    );
    pg.sql("BEGIN; INSERT INTO aborted VALUES (4); SAVEPOINT s; INSERT INTO aborted VALUES (5); RELEASE s; COMMIT");
}

/// The workload of the ingest tests: pgbench, the DDL mix, aborts, multixacts, then a CHECKPOINT. Returns
/// the oid of the database the mix copied with STRATEGY wal_log (its VM maps are not in the WAL).
pub fn ingest_workload(pg: &PgCluster, tag: &str) -> u32 {
    pg.pgbench_init("postgres", 1);
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "300"]);
    ddl_mix(pg, tag);
    aborts(pg);
    multixact_workload(pg, 3, 300);
    let oid = pg.sql(&format!(
        "SELECT oid FROM pg_database WHERE datname = 'ddl_{tag}_db_wal'"
    ));
    pg.sql("CHECKPOINT");
    oid.parse().expect("the DDL mix creates a wal_log database")
}
