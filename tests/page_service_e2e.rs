//! The page service end to end on a followed PostgreSQL 15 primary, and on a PostgreSQL 18 one, running the ingest workload (pgbench -i -s
//! 10, then pgbench -c 4 with the DDL mix, aborts and multixact sessions), paused three times:
//! - at each pause the test records the primary's `pg_dumpall` and LSN; afterwards plain PostgreSQL of the same version boots
//!   on a `fullbackup` taken at each of those LSNs and at the final one, and its `pg_dumpall` equals the
//!   primary's (sequences compared by docs/testing.md's rule: a WAL-derived sequence is `log_cnt` increments
//!   ahead; unlogged tables' data is not in WAL and left out of both dumps);
//! - at the final LSN every block of every main, vm and init fork and every SLRU page, read through
//!   pagestream_v3, equals the primary's files after masking; Nblocks equals the files' sizes, Exists holds for
//!   every relation fork file, DbSize is the sum of the database's forks, GetSlruSegment returns every segment.

mod support;

use std::time::Instant;

use pageserver::page_service::client::PageServiceClient;
use pageserver::page_service::pagestream::{RequestBody, ResponseBody, Version};
use pageserver::pg::RelFileNode;
use pageserver::repository::Key;
use pageserver::walredo::SlruKind;
use serde_json::json;
use support::compare::{
    Comparison, PagestreamTimeline, compare_relations, compare_slru, stop_primary_and_wait,
};
use support::dump::{as_wal_derived, dumpall, first_difference, snapshot};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, aborts, ddl_mix, multixact_workload};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

/// (spcnode, dbnode, relfilenode, unlogged) of every relation with storage in the primary's catalogs.
fn relations_in_catalog(pg: &PgCluster) -> std::collections::BTreeSet<(u32, u32, u32, bool)> {
    let mut rels = std::collections::BTreeSet::new();
    let dbs = pg.sql("SELECT datname, oid FROM pg_database WHERE datallowconn ORDER BY 1");
    for line in dbs.lines() {
        let (name, oid) = line.split_once('|').unwrap();
        let rows = pg.sql_in(
            name,
            "SELECT CASE WHEN reltablespace = 0 THEN 1663 ELSE reltablespace END, pg_relation_filenode(oid), \
             relpersistence FROM pg_class WHERE pg_relation_filenode(oid) IS NOT NULL",
        );
        for row in rows.lines() {
            let v: Vec<&str> = row.split('|').collect();
            let spc: u32 = v[0].parse().unwrap();
            let db = if spc == 1664 { 0 } else { oid.parse().unwrap() };
            rels.insert((spc, db, v[1].parse::<u32>().unwrap(), v[2] == "u"));
        }
    }
    rels
}

/// Every main (of a logged relation), vm and init fork of `rels` in the stopped primary's files, with per
/// page whether it is empty (all zero, or a new page with nothing on it).
fn relation_files(
    pg: &PgCluster,
    rels: &std::collections::BTreeSet<(u32, u32, u32, bool)>,
) -> Vec<(RelFileNode, u8, Vec<bool>)> {
    let empty = |p: &[u8]| {
        p.iter().all(|&b| b == 0)
            || (u16::from_le_bytes([p[12], p[13]]) == 24
                && u16::from_le_bytes([p[14], p[15]]) == 8192
                && p[24..].iter().all(|&b| b == 0))
    };
    let mut out = Vec::new();
    for &(spc, db, rel, unlogged) in rels {
        let dir = if spc == 1664 {
            pg.data_dir().join("global")
        } else {
            pg.data_dir().join(format!("base/{db}"))
        };
        for (fork, suffix) in [(0u8, ""), (2, "_vm"), (3, "_init")] {
            if fork == 0 && unlogged {
                continue;
            }
            let mut pages = Vec::new();
            for seg in 0.. {
                let name = if seg == 0 {
                    format!("{rel}{suffix}")
                } else {
                    format!("{rel}{suffix}.{seg}")
                };
                let Ok(data) = std::fs::read(dir.join(name)) else {
                    break;
                };
                pages.extend(data.chunks(8192).map(empty));
            }
            if !pages.is_empty() || (fork == 0 && dir.join(rel.to_string()).exists()) {
                out.push((RelFileNode { spc, db, rel }, fork, pages));
            }
        }
    }
    out
}

#[test]
fn pagestream_pages_and_fullbackups_equal_the_primary() {
    pages_and_fullbackups_equal_the_primary(15);
}

#[test]
fn postgresql_18_pagestream_pages_and_fullbackups_equal_the_primary() {
    pages_and_fullbackups_equal_the_primary(18);
}

fn pages_and_fullbackups_equal_the_primary(major: u32) {
    let started = Instant::now();
    let mut pg = PgCluster::start_version(
        major,
        PgOptions {
            extra_conf: WORKLOAD_CONF.iter().map(|s| s.to_string()).collect(),
        },
    );
    let ps = Pageserver::start(&[]);
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "ps");

    pg.pgbench_init("postgres", 10);
    let mut snapshots = Vec::new();
    let mut wal_log_dbs = Vec::new();
    for phase in 0..4 {
        std::thread::scope(|scope| {
            let bench = scope.spawn(|| pg.pgbench("postgres", &["-n", "-c", "4", "-T", "10"]));
            ddl_mix(&pg, &format!("e2e{phase}"));
            aborts(&pg);
            multixact_workload(&pg, 3, 100);
            bench.join().expect("pgbench thread");
        });
        wal_log_dbs.push(
            pg.sql(&format!(
                "SELECT oid FROM pg_database WHERE datname = 'ddl_e2e{phase}_db_wal'"
            ))
            .parse::<u32>()
            .unwrap(),
        );
        if phase < 3 {
            // Paused: nothing runs; the dump is the state at this LSN.
            snapshots.push(snapshot(&pg));
        }
    }
    pg.sql("CHECKPOINT");
    let mut last_snapshot = snapshot(&pg);
    let rels = relations_in_catalog(&pg);
    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let catalog = relation_files(&pg, &rels);
    last_snapshot.lsn = last;
    snapshots.push(last_snapshot);
    println!(
        "PostgreSQL {major}: workload done in {:.0} s; final LSN {last}",
        started.elapsed().as_secs_f64()
    );
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    assert_eq!(info["pg_version"], major, "{info}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Every page through pagestream at the final LSN.
    let session = rt.block_on(async {
        PageServiceClient::connect(&ps.pg_addr)
            .await
            .unwrap()
            .pagestream(Version::V3, T, TL)
            .await
            .map_err(|(e, _)| e)
            .unwrap()
    });
    let tl = PagestreamTimeline::new(session);
    let mut cmp = Comparison::default();
    rt.block_on(compare_relations(
        &tl,
        last,
        pg.data_dir(),
        &wal_log_dbs,
        &mut cmp,
    ));
    rt.block_on(compare_slru(&tl, last, pg.data_dir(), &mut cmp));
    cmp.print(&format!("pagestream at {last}"));
    assert!(cmp.mismatches.is_empty());
    assert!(cmp.equal["main"] > 10_000);

    // Exists for every relation fork file, DbSize the sum of each database's forks, every SLRU segment whole.
    let (exists, db_sizes, segments) = rt.block_on(async {
        let (mut exists, mut db_sizes, mut segments) = (0u64, 0u64, 0u64);
        let base = pg.data_dir().join("base");
        for entry in std::fs::read_dir(&base).unwrap() {
            let entry = entry.unwrap();
            let Ok(db) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let mut forks = std::collections::BTreeSet::new();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let name = f.unwrap().file_name().to_string_lossy().into_owned();
                let base_name = name.split('.').next().unwrap();
                let (rel, fork) = match base_name.rsplit_once('_') {
                    Some((r, "fsm")) => (r, 1u8),
                    Some((r, "vm")) => (r, 2),
                    Some((r, "init")) => (r, 3),
                    Some(_) => continue,
                    None => (base_name, 0),
                };
                if let Ok(rel) = rel.parse::<u32>() {
                    forks.insert((rel, fork));
                }
            }
            let mut blocks = 0u64;
            for &(rel, fork) in &forks {
                let rel = RelFileNode { spc: 1663, db, rel };
                let unlogged = forks.contains(&(rel.rel, 3));
                if fork != 1 && !(fork == 0 && unlogged) {
                    let r = tl.ask(RequestBody::Exists { rel, fork }, last).await;
                    assert_eq!(r, Ok(ResponseBody::Exists(true)), "{rel:?} fork {fork}");
                    exists += 1;
                }
                if let Ok(ResponseBody::Nblocks(n)) =
                    tl.ask(RequestBody::Nblocks { rel, fork }, last).await
                {
                    blocks += n as u64;
                }
            }
            match tl.ask(RequestBody::DbSize { db }, last).await {
                Ok(ResponseBody::DbSize(n)) => assert_eq!(n as u64, blocks * 8192, "database {db}"),
                other => panic!("DbSize of {db}: {other:?}"),
            }
            db_sizes += 1;
        }
        for (kind, dir) in [
            (SlruKind::Clog, "pg_xact"),
            (SlruKind::MultiXactMembers, "pg_multixact/members"),
            (SlruKind::MultiXactOffsets, "pg_multixact/offsets"),
        ] {
            for entry in std::fs::read_dir(pg.data_dir().join(dir)).unwrap() {
                let entry = entry.unwrap();
                let Ok(segno) = u32::from_str_radix(&entry.file_name().to_string_lossy(), 16)
                else {
                    continue;
                };
                let file = std::fs::read(entry.path()).unwrap();
                let ours = tl.segment(kind, segno, last).await.expect("segment served");
                assert_eq!(&ours[..], &file[..], "{dir}/{segno:04X}");
                segments += 1;
            }
        }
        (exists, db_sizes, segments)
    });
    println!(
        "Exists true for {exists} forks; DbSize of {db_sizes} databases; {segments} SLRU segments equal"
    );

    // The keyspace (Neon's Partitioning JSON) holds every block the primary has, each in exactly one range.
    let (s, ks) = ps.json(
        "GET",
        &format!("/v1/tenant/{T}/timeline/{TL}/keyspace"),
        None,
    );
    assert_eq!(s, 200, "{ks}");
    let fields: Vec<&String> = ks.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["at_lsn", "keys", "sparse_keys"]);
    assert_eq!(ks["at_lsn"], last.to_string());
    let ranges: Vec<(Key, Key)> = ks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let pair = r.as_array().unwrap();
            assert_eq!(pair.len(), 2);
            let k = |v: &serde_json::Value| {
                let text = v.as_str().unwrap();
                assert!(
                    text.len() == 36
                        && text
                            .chars()
                            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
                    "{text}"
                );
                text.parse::<Key>().unwrap()
            };
            (k(&pair[0]), k(&pair[1]))
        })
        .collect();
    for w in ranges.windows(2) {
        assert!(
            w[0].0 < w[0].1 && w[0].1 <= w[1].0,
            "ranges not sorted, empty or overlapping: {w:?}"
        );
    }
    let (mut in_keyspace, mut trailing_empty) = (0u64, 0u64);
    for (rnode, fork, pages) in &catalog {
        // Trailing empty pages of a file are the extensions the WAL never made (docs/testing.md).
        let used = pages.iter().rposition(|&empty| !empty).map_or(0, |i| i + 1);
        trailing_empty += (pages.len() - used) as u64;
        for blk in 0..used as u32 {
            let key = Key::rel_block(*rnode, *fork, blk);
            let holders = ranges.iter().filter(|(a, b)| *a <= key && key < *b).count();
            assert_eq!(
                holders, 1,
                "{rnode:?} fork {fork} block {blk} is in {holders} ranges"
            );
            in_keyspace += 1;
        }
    }
    println!(
        "keyspace: {} ranges; every one of {in_keyspace} blocks of {} forks in exactly one ({trailing_empty} trailing empty pages left out)",
        ranges.len(),
        catalog.len()
    );

    // A third-party libpq client (psycopg's libpq binding) reads 1,000 random pages through pagestream_v3.
    let blocks: Vec<(RelFileNode, u8, u32)> = {
        let mut all = Vec::new();
        for (rnode, fork, pages) in &catalog {
            let used = pages.iter().rposition(|&empty| !empty).map_or(0, |i| i + 1);
            all.extend((0..used as u32).map(|b| (*rnode, *fork, b)));
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                all[(x % all.len() as u64) as usize]
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("blocks");
    let out_path = dir.path().join("pages");
    std::fs::write(
        &list,
        blocks
            .iter()
            .map(|(r, f, b)| format!("{} {} {} {f} {b}\n", r.spc, r.db, r.rel))
            .collect::<String>(),
    )
    .unwrap();
    let (host, port) = ps.pg_addr.rsplit_once(':').unwrap();
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/pagestream_psycopg.py"
        ))
        .arg(format!(
            "host={host} port={port} user=cloud_admin dbname=postgres"
        ))
        .args([T, TL, &last.to_string()])
        .arg(&list)
        .arg(&out_path)
        .output()
        .expect("run python3 (scripts/test.sh puts a venv with psycopg first on PATH)");
    assert!(
        out.status.success(),
        "psycopg client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages = std::fs::read(&out_path).unwrap();
    assert_eq!(pages.len(), 1000 * 8192);
    for (i, (rnode, fork, blk)) in blocks.iter().enumerate() {
        let (s, ours) = ps.get_bytes(&format!(
            "/v1/tenant/{T}/timeline/{TL}/getpage?key={}&lsn={last}",
            Key::rel_block(*rnode, *fork, *blk)
        ));
        assert_eq!(s, 200);
        assert!(
            ours[..] == pages[i * 8192..(i + 1) * 8192],
            "page {i}: {rnode:?} fork {fork} block {blk}"
        );
    }
    println!(
        "psycopg (libpq) read 1,000 random pages over pagestream_v3, each equal to the timeline's"
    );

    // Plain PostgreSQL on a fullbackup at each pause and at the end: the same pg_dumpall.
    for (i, snap) in snapshots.iter().enumerate() {
        let tar = rt.block_on(async {
            let mut c = PageServiceClient::connect(&ps.pg_addr).await.unwrap();
            c.backup(&format!("fullbackup {T} {TL} {}", snap.lsn))
                .await
                .unwrap()
        });
        let mut restored = PgCluster::start_from_tar(&tar);
        let ours = dumpall(&restored);
        let expected = as_wal_derived(snap);
        assert!(
            ours == expected,
            "fullbackup {i} at {}: pg_dumpall differs from the primary's: {}",
            snap.lsn,
            first_difference(&expected, &ours)
        );
        let ahead = snap
            .dump
            .lines()
            .zip(expected.lines())
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "fullbackup {i} at {}: {} MB tar, pg_dumpall of {} lines equal ({} sequences, {ahead} of them \
             log_cnt ahead of the primary's buffer)",
            snap.lsn,
            tar.len() >> 20,
            ours.lines().count(),
            snap.sequences.len()
        );
        restored.stop();
    }
}
