//! The page service through the real binary, with the library's pagestream client on a timeline bootstrapped
//! by the bundle's initdb: every request and response of v2 and v3 against what the HTTP debug read returns,
//! every error path (docs/protocols.md) and that the session goes on after each, pipelining of 100 requests
//! answered in order, the commands around pagestream, and the basebackup tar: every entry of docs/protocols.md in
//! order, and a pg_control that pg_controldata reads as shut down at the requested LSN.

mod support;

use std::io::Read;
use std::process::Command;

use bytes::Bytes;
use pageserver::page_service::client::{PageServiceClient, PagestreamSession};
use pageserver::page_service::pagestream::{
    Request, RequestBody, RequestHeader, ResponseBody, Version,
};
use pageserver::pg::{Lsn, RelFileNode};
use pageserver::repository::Key;
use pageserver::walredo::SlruKind;
use serde_json::json;
use support::pageserver::Pageserver;

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "11111111111111111111111111111111";
const PG_CLASS: RelFileNode = RelFileNode {
    spc: 1663,
    db: 5,
    rel: 1259,
};

fn bootstrap(ps: &Pageserver) -> Lsn {
    let (s, body) = ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T, "pitr_interval": "0 s"}).to_string()),
    );
    assert_eq!(s, 201, "{body}");
    let (s, info) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&json!({"new_timeline_id": TL, "pg_version": 15}).to_string()),
    );
    assert_eq!(s, 201, "{info}");
    info["last_record_lsn"].as_str().unwrap().parse().unwrap()
}

fn http_value(ps: &Pageserver, key: Key, lsn: Lsn) -> Vec<u8> {
    let (s, bytes) = ps.get_bytes(&format!(
        "/v1/tenant/{T}/timeline/{TL}/getpage?key={key}&lsn={lsn}"
    ));
    assert_eq!(s, 200, "{key} at {lsn}");
    bytes
}

fn req(reqid: u64, request_lsn: Lsn, nms: Lsn, body: RequestBody) -> Request {
    Request {
        hdr: RequestHeader {
            reqid,
            request_lsn,
            not_modified_since: nms,
        },
        body,
    }
}

async fn open(ps: &Pageserver, version: Version) -> PagestreamSession {
    let client = PageServiceClient::connect(&ps.pg_addr).await.unwrap();
    client
        .pagestream(version, T, TL)
        .await
        .map_err(|(e, _)| e)
        .unwrap()
}

fn error_text(r: ResponseBody) -> String {
    match r {
        ResponseBody::Error(m) => m,
        other => panic!("expected an Error response, got {other:?}"),
    }
}

#[test]
fn pagestream_v2_and_v3_answers_errors_and_pipelining() {
    let ps = Pageserver::start(&["wait_lsn_timeout='1 s'"]);
    let lsn = bootstrap(&ps);
    let latest = Lsn(u64::MAX);
    let nblocks = u32::from_le_bytes(
        http_value(&ps, Key::rel_size(PG_CLASS, 0), lsn)
            .try_into()
            .unwrap(),
    );
    assert!(nblocks > 5);
    let page0 = http_value(&ps, Key::rel_block(PG_CLASS, 0, 0), lsn);
    let clog0: Vec<u8> = (0..1)
        .map(|b| http_value(&ps, Key::slru_block(SlruKind::Clog, 0, b), lsn))
        .collect::<Vec<_>>()
        .concat();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    for version in [Version::V2, Version::V3] {
        rt.block_on(async {
            let mut s = open(&ps, version).await;
            let r = |id, body| req(id, latest, lsn, body);
            let missing = RelFileNode {
                rel: 999_999,
                ..PG_CLASS
            };
            let other_db = RelFileNode {
                db: 424_242,
                ..PG_CLASS
            };
            let cases: Vec<(Request, ResponseBody)> = vec![
                (
                    r(
                        1,
                        RequestBody::Exists {
                            rel: PG_CLASS,
                            fork: 0,
                        },
                    ),
                    ResponseBody::Exists(true),
                ),
                (
                    r(
                        2,
                        RequestBody::Exists {
                            rel: missing,
                            fork: 0,
                        },
                    ),
                    ResponseBody::Exists(false),
                ),
                (
                    r(
                        3,
                        RequestBody::Exists {
                            rel: other_db,
                            fork: 0,
                        },
                    ),
                    ResponseBody::Exists(false),
                ),
                (
                    r(
                        4,
                        RequestBody::Nblocks {
                            rel: PG_CLASS,
                            fork: 0,
                        },
                    ),
                    ResponseBody::Nblocks(nblocks),
                ),
                // A VM or FSM fork that was never created has 0 blocks.
                (
                    r(
                        5,
                        RequestBody::Nblocks {
                            rel: missing,
                            fork: 1,
                        },
                    ),
                    ResponseBody::Nblocks(0),
                ),
                (
                    r(
                        6,
                        RequestBody::Nblocks {
                            rel: missing,
                            fork: 2,
                        },
                    ),
                    ResponseBody::Nblocks(0),
                ),
                (
                    r(
                        7,
                        RequestBody::GetPage {
                            rel: PG_CLASS,
                            fork: 0,
                            blkno: 0,
                        },
                    ),
                    ResponseBody::GetPage(Bytes::from(page0.clone())),
                ),
                // Past the end: a zero page.
                (
                    r(
                        8,
                        RequestBody::GetPage {
                            rel: PG_CLASS,
                            fork: 0,
                            blkno: nblocks + 10,
                        },
                    ),
                    ResponseBody::GetPage(Bytes::from(vec![0u8; 8192])),
                ),
                (
                    r(
                        9,
                        RequestBody::GetSlruSegment {
                            kind: SlruKind::Clog,
                            segno: 0,
                        },
                    ),
                    ResponseBody::GetSlruSegment(Bytes::from(clog0.clone())),
                ),
            ];
            for (request, expected) in &cases {
                assert_eq!(
                    &s.request(request).await.unwrap(),
                    expected,
                    "{version:?} {request:?}"
                );
            }
            // DbSize: every fork of every relation of database 5, in whole pages.
            match s
                .request(&r(10, RequestBody::DbSize { db: 5 }))
                .await
                .unwrap()
            {
                ResponseBody::DbSize(n) => assert!(n > 1_000_000 && n % 8192 == 0, "{n}"),
                other => panic!("{other:?}"),
            }

            // Every error path is an Error response, and the session goes on.
            let get0 = RequestBody::GetPage {
                rel: PG_CLASS,
                fork: 0,
                blkno: 0,
            };
            let errors = [
                (
                    req(20, Lsn(0x100), Lsn(0x200), get0),
                    "invalid request with request LSN",
                ),
                (req(21, Lsn(0), Lsn(0), get0), "invalid LSN(0)"),
                (
                    r(
                        22,
                        RequestBody::Nblocks {
                            rel: missing,
                            fork: 0,
                        },
                    ),
                    "does not exist",
                ),
                (
                    r(
                        23,
                        RequestBody::GetPage {
                            rel: missing,
                            fork: 0,
                            blkno: 0,
                        },
                    ),
                    "does not exist",
                ),
                (
                    r(
                        24,
                        RequestBody::GetPage {
                            rel: RelFileNode { rel: 0, ..PG_CLASS },
                            fork: 0,
                            blkno: 0,
                        },
                    ),
                    "relnode 0",
                ),
                (
                    r(
                        25,
                        RequestBody::GetSlruSegment {
                            kind: SlruKind::Clog,
                            segno: 77,
                        },
                    ),
                    "does not exist",
                ),
                // not_modified_since beyond the last record: waits wait_lsn_timeout (1 s), then an error.
                (req(26, latest, Lsn(lsn.0 + 0x1000_0000), get0), "timed out"),
            ];
            for (request, needle) in &errors {
                let msg = error_text(s.request(request).await.unwrap());
                assert!(msg.contains(needle), "{version:?} {request:?}: {msg}");
            }
            // v3 echoes the failed request's header (checked by the client's parser), v2 does not.
            s.send(&errors[0].0);
            s.flush().await.unwrap();
            let raw = s.recv_raw().await.unwrap();
            match version {
                Version::V2 => assert_eq!(raw[0], 103),
                Version::V3 => {
                    assert_eq!(raw[0], 103);
                    assert_eq!(&raw[1..9], &20u64.to_be_bytes());
                    assert_eq!(&raw[9..17], &0x100u64.to_be_bytes());
                    assert_eq!(&raw[17..25], &0x200u64.to_be_bytes());
                    assert_eq!(*raw.last().unwrap(), 0);
                }
            }
            assert_eq!(s.request(&cases[3].0).await.unwrap(), cases[3].1);

            // 100 pipelined requests of mixed kinds, sent at once, answered in order.
            let mut pipelined = Vec::new();
            for i in 0..100u64 {
                let body = match i % 4 {
                    0 | 1 => RequestBody::GetPage {
                        rel: PG_CLASS,
                        fork: 0,
                        blkno: (i as u32) % nblocks,
                    },
                    2 => RequestBody::Nblocks {
                        rel: PG_CLASS,
                        fork: 0,
                    },
                    _ => RequestBody::Exists {
                        rel: if i % 8 == 3 { PG_CLASS } else { missing },
                        fork: 0,
                    },
                };
                pipelined.push(r(1000 + i, body));
            }
            for p in &pipelined {
                s.send(p);
            }
            s.flush().await.unwrap();
            for p in &pipelined {
                let got = s.recv(p).await.unwrap();
                match (p.body, got) {
                    (RequestBody::GetPage { blkno, .. }, ResponseBody::GetPage(page)) => {
                        if blkno == 0 {
                            assert_eq!(&page[..], &page0[..]);
                        }
                    }
                    (RequestBody::Nblocks { .. }, ResponseBody::Nblocks(n)) => {
                        assert_eq!(n, nblocks)
                    }
                    (RequestBody::Exists { rel, .. }, ResponseBody::Exists(e)) => {
                        assert_eq!(e, rel == PG_CLASS)
                    }
                    (body, got) => panic!("{body:?} answered with {got:?}"),
                }
            }
            // v2 answers carry no ids: check the order by content too.
            let pages: Vec<Request> = (0..nblocks.min(20))
                .map(|b| {
                    r(
                        2000 + b as u64,
                        RequestBody::GetPage {
                            rel: PG_CLASS,
                            fork: 0,
                            blkno: b,
                        },
                    )
                })
                .collect();
            for p in &pages {
                s.send(p);
            }
            s.flush().await.unwrap();
            for (b, p) in pages.iter().enumerate() {
                let ResponseBody::GetPage(page) = s.recv(p).await.unwrap() else {
                    panic!()
                };
                let expected = http_value(&ps, Key::rel_block(PG_CLASS, 0, b as u32), lsn);
                assert_eq!(
                    &page[..],
                    &expected[..],
                    "{version:?} block {b} out of order"
                );
            }

            // CopyDone ends the session; the connection takes the next command.
            let mut client = s.finish().await.unwrap();
            client.simple("set datestyle = 'ISO'").await.unwrap();
            let e = client.simple("show everything").await.unwrap_err();
            assert!(e.to_string().contains("unsupported command"), "{e}");
            client.terminate().await.unwrap();
        });
    }

    // Below the GC cutoff: an Error response naming it.
    let (s, _) = ps.json(
        "PUT",
        &format!("/v1/tenant/{T}/timeline/{TL}/do_gc"),
        Some(&json!({"gc_horizon": 0}).to_string()),
    );
    assert_eq!(s, 200);
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    let cutoff: Lsn = info["applied_gc_cutoff_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cutoff, lsn, "{info}");
    rt.block_on(async {
        let mut s = open(&ps, Version::V3).await;
        let below = req(
            1,
            Lsn(cutoff.0 - 8),
            Lsn(0x100),
            RequestBody::Nblocks {
                rel: PG_CLASS,
                fork: 0,
            },
        );
        let msg = error_text(s.request(&below).await.unwrap());
        assert!(msg.contains("garbage collected"), "{msg}");
        s.terminate().await.unwrap();
    });

    // Malformed requests and protocol errors end the connection with an ErrorResponse.
    rt.block_on(async {
        for bad in [vec![2u8; 10], vec![99u8; 25], vec![]] {
            let mut s = open(&ps, Version::V3).await;
            s.send_raw(&bad);
            s.flush().await.unwrap();
            let err = s.recv_raw().await.unwrap_err();
            assert!(
                err.to_string().contains("malformed request"),
                "{bad:?}: {err}"
            );
        }
        // Session-level errors keep the connection: bad ids, a missing tenant or timeline, wrong arguments.
        let mut client = PageServiceClient::connect(&ps.pg_addr).await.unwrap();
        for (tenant, timeline, needle) in [
            ("nothex", TL, "invalid tenant id"),
            (T, "22222222222222222222222222222222", "not found"),
            ("99999999999999999999999999999999", TL, "not found"),
        ] {
            let (e, back) = client
                .pagestream(Version::V2, tenant, timeline)
                .await
                .err()
                .unwrap();
            assert!(e.to_string().to_lowercase().contains(needle), "{e}");
            client = back.expect("the connection goes on");
        }
        let e = client
            .simple(&format!("pagestream_v3 {T}"))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("takes <tenant_id> <timeline_id>"),
            "{e}"
        );
    });
}

fn tar_entries(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, data)
        })
        .collect()
}

#[test]
fn basebackup_has_every_entry_in_order_and_a_shut_down_pg_control() {
    let ps = Pageserver::start(&[]);
    let lsn = bootstrap(&ps);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (plain, gzipped, at_lsn, bad) = rt.block_on(async {
        let mut c = PageServiceClient::connect(&ps.pg_addr).await.unwrap();
        let plain = c.backup(&format!("basebackup {T} {TL}")).await.unwrap();
        let gzipped = c
            .backup(&format!("basebackup {T} {TL} latest --gzip"))
            .await
            .unwrap();
        let at_lsn = c
            .backup(&format!("basebackup {T} {TL} {lsn}"))
            .await
            .unwrap();
        let bad = c
            .backup(&format!("basebackup {T} {TL} --gzip --gzip"))
            .await
            .unwrap_err();
        (plain, gzipped, at_lsn, bad)
    });
    assert!(bad.to_string().contains("given twice"), "{bad}");
    let mut gunzipped = Vec::new();
    flate2::read::GzDecoder::new(&gzipped[..])
        .read_to_end(&mut gunzipped)
        .unwrap();
    let entries = tar_entries(&plain);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    // The same entries with --gzip and at an explicit LSN (mtimes aside).
    for other in [&gunzipped, &at_lsn] {
        let other_names: Vec<String> = tar_entries(other).into_iter().map(|(n, _)| n).collect();
        assert_eq!(other_names, names);
    }

    // docs/protocols.md, basebackup entries in order.
    let dirs = [
        "global",
        "pg_wal/archive_status",
        "pg_commit_ts",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
        "pg_twophase",
        "pg_multixact",
        "pg_multixact/members",
        "pg_multixact/offsets",
        "base",
        "base/1",
        "pg_replslot",
        "pg_tblspc",
        "pg_stat",
        "pg_stat_tmp",
        "pg_xact",
        "pg_logical",
        "pg_logical/snapshots",
        "pg_logical/mappings",
    ];
    let trimmed: Vec<&str> = names.iter().map(|n| n.trim_end_matches('/')).collect();
    assert_eq!(&trimmed[..dirs.len()], &dirs[..]);
    let mut rest = &trimmed[dirs.len()..];
    assert_eq!(
        &rest[..3],
        &["pg_hba.conf", "pg_ident.conf", "postgresql.auto.conf"]
    );
    rest = &rest[3..];
    let slru_end = rest
        .iter()
        .position(|n| !n.starts_with("pg_xact/") && !n.starts_with("pg_multixact/"))
        .unwrap();
    let slrus = &rest[..slru_end];
    assert!(
        slrus.contains(&"pg_xact/0000") && slrus.contains(&"pg_multixact/offsets/0000"),
        "{slrus:?}"
    );
    let kind_order: Vec<usize> = slrus
        .iter()
        .map(|n| {
            ["pg_xact/", "pg_multixact/members/", "pg_multixact/offsets/"]
                .iter()
                .position(|p| n.starts_with(p))
                .unwrap()
        })
        .collect();
    assert!(kind_order.windows(2).all(|w| w[0] <= w[1]), "{slrus:?}");
    rest = &rest[slru_end..];
    // Databases in (tablespace, oid) order: base/<db> with PG_VERSION and pg_filenode.map, then global's.
    let global = rest.iter().position(|n| *n == "PG_VERSION").unwrap();
    assert_eq!(rest[global + 1], "global/pg_filenode.map");
    assert!(
        rest[..global].iter().all(|n| n.starts_with("base/")),
        "{rest:?}"
    );
    for db in ["1", "4", "5"] {
        let at = rest
            .iter()
            .position(|n| *n == format!("base/{db}"))
            .unwrap_or_else(|| panic!("no base/{db}: {rest:?}"));
        assert_eq!(rest[at + 1], format!("base/{db}/PG_VERSION"));
        assert_eq!(rest[at + 2], format!("base/{db}/pg_filenode.map"));
    }
    // Relation files: only init forks, each also as its main fork.
    for n in rest
        .iter()
        .filter(|n| n.starts_with("base/") && n.matches('/').count() == 2)
    {
        let file = n.rsplit('/').next().unwrap();
        assert!(
            file == "PG_VERSION"
                || file == "pg_filenode.map"
                || file.ends_with("_init")
                || rest.contains(&format!("{n}_init").as_str()),
            "{n} in a basebackup"
        );
    }
    let tail = &trimmed[trimmed.len() - 4..];
    let segment = format!(
        "pg_wal/{}",
        pageserver::pg::lsn::wal_file_name(1, lsn.segment_number(16 << 20), 16 << 20)
    );
    assert_eq!(
        tail,
        &[
            "neon.signal",
            "zenith.signal",
            "global/pg_control",
            segment.as_str()
        ]
    );
    let file = |name: &str| &entries.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(file("PG_VERSION"), b"15");
    assert_eq!(file("neon.signal"), file("zenith.signal"));
    let prev = info_prev(&ps);
    assert_eq!(
        String::from_utf8_lossy(file("neon.signal")),
        format!("PREV LSN: {prev}")
    );
    assert_eq!(file(&segment).len(), 16 << 20);
    assert!(file("pg_hba.conf").starts_with(b"# pg_hba.conf"));

    // pg_controldata: shut down, redo at the requested LSN (advanced past a page header when on one).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("global")).unwrap();
    std::fs::write(
        dir.path().join("global/pg_control"),
        file("global/pg_control"),
    )
    .unwrap();
    let out = Command::new(support::pg::pg_bin_dir().join("pg_controldata"))
        .arg("-D")
        .arg(dir.path())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert_eq!(field("Database cluster state"), "shut down");
    let redo: Lsn = field("Latest checkpoint's REDO location").parse().unwrap();
    assert_eq!(redo, pageserver::pg::walgen::normalize_lsn(lsn, 16 << 20));
    println!(
        "basebackup: {} entries, {} bytes, {} gzipped; redo {redo}",
        names.len(),
        plain.len(),
        gzipped.len()
    );
}

fn info_prev(ps: &Pageserver) -> String {
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    info["prev_record_lsn"]
        .as_str()
        .map_or("invalid".into(), |s| s.to_string())
}

/// A fullbackup of a timeline made by the bundle's initdb: plain PostgreSQL 15 starts on it as after a clean
/// shutdown (no recovery), at the timeline's LSN, and works.
#[test]
fn fullbackup_boots_plain_postgresql() {
    // The bundle's initdb makes this superuser; the test bed's psql connects as postgres.
    let ps = Pageserver::start(&["superuser='postgres'"]);
    let lsn = bootstrap(&ps);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tar = rt.block_on(async {
        let mut c = PageServiceClient::connect(&ps.pg_addr).await.unwrap();
        c.backup(&format!("fullbackup {T} {TL}")).await.unwrap()
    });
    let names: Vec<String> = tar_entries(&tar).into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n == "postgresql.conf"));
    assert!(
        names.iter().any(|n| n == "base/5/1259"),
        "pg_class of postgres"
    );
    let pg = support::pg::PgCluster::start_from_tar(&tar);
    assert_eq!(pg.controldata("Database cluster state"), "in production");
    let log = pg.log_tail();
    assert!(log.contains("database system was shut down at"), "{log}");
    assert!(!log.contains("redo starts"), "no recovery expected:\n{log}");
    let checkpoint: Lsn = pg
        .controldata("Latest checkpoint location")
        .parse()
        .unwrap();
    assert_eq!(
        checkpoint,
        pageserver::pg::walgen::normalize_lsn(lsn, 16 << 20)
    );
    assert_eq!(pg.sql("SELECT count(*) > 100 FROM pg_class"), "t");
    pg.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    assert_eq!(pg.sql("SELECT sum(g) FROM t"), "500500");
    assert_eq!(
        pg.sql("SELECT datname FROM pg_database ORDER BY 1"),
        "postgres\ntemplate0\ntemplate1"
    );
}

/// `pageserver getpage` prints the page the HTTP debug read gives; `pageserver pagebench
/// get-page-latest-lsn` reads the keyspace over HTTP and reports requests without errors.
#[test]
fn getpage_and_pagebench_commands() {
    let ps = Pageserver::start(&[]);
    let lsn = bootstrap(&ps);
    let out = Command::new(support::pageserver::binary())
        .args([
            "getpage",
            "--page-service",
            &ps.pg_addr,
            "--tenant",
            T,
            "--timeline",
            TL,
        ])
        .args(["--rel", "1663/5/1259", "--block", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        http_value(&ps, Key::rel_block(PG_CLASS, 0, 1), lsn)
    );
    let out = Command::new(support::pageserver::binary())
        .args([
            "getpage",
            "--page-service",
            &ps.pg_addr,
            "--tenant",
            T,
            "--timeline",
            TL,
        ])
        .args(["--rel", "1663/5/999999", "--block", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // What pagebench lists without explicit targets, in the shapes Neon's management client parses.
    let (_, tenants) = ps.json("GET", "/v1/tenant", None);
    assert_eq!(tenants[0]["id"], T, "{tenants}");
    let (_, timelines) = ps.json("GET", &format!("/v1/tenant/{T}/timeline"), None);
    assert_eq!(timelines[0]["tenant_id"], T, "{timelines}");
    assert_eq!(timelines[0]["timeline_id"], TL);
    assert_eq!(timelines[0]["last_record_lsn"], lsn.to_string());
    let (s, ks) = ps.json(
        "GET",
        &format!("/v1/tenant/{T}/timeline/{TL}/keyspace"),
        None,
    );
    assert_eq!(s, 200, "{ks}");
    assert_eq!(ks["at_lsn"], lsn.to_string());
    let ranges = ks["keys"].as_array().unwrap();
    assert!(ranges.len() > 100);
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(support::pageserver::binary())
        .args(["pagebench", "get-page-latest-lsn"])
        .args(["--mgmt-api-endpoint", &format!("http://{}", ps.http_addr)])
        .args([
            "--page-service-connstring",
            &format!("postgres://pageserver@{}/x", ps.pg_addr),
        ])
        .args([
            "--num-clients",
            "2",
            "--queue-depth",
            "4",
            "--runtime",
            "1s",
        ])
        .arg("--report")
        .arg(report.path())
        .arg(format!("{T}/{TL}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert!(r["requests"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["keys"].as_u64().unwrap() > 1000, "{r}");
    for p in ["p50", "p95", "p99", "p99_9"] {
        assert!(r["latency_us"][p].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// tokio-postgres (the client library Neon's tools are built on) connects with its own startup parameters
/// through the trust path and runs simple queries; errors come back as its ErrorResponse errors.
#[test]
fn tokio_postgres_connects_and_runs_simple_queries() {
    let ps = Pageserver::start(&[]);
    bootstrap(&ps);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (host, port) = ps.pg_addr.rsplit_once(':').unwrap();
        let (client, conn) = tokio_postgres::connect(
            &format!("host={host} port={port} user=cloud_admin dbname=postgres application_name=12345 options='-c neon.compute_mode=primary'"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("tokio-postgres connects");
        let conn = tokio::spawn(conn);
        client.simple_query("SET datestyle = 'ISO'").await.unwrap();
        let err = client.simple_query("SELECT 1").await.unwrap_err();
        let db = err.as_db_error().expect("an ErrorResponse");
        assert_eq!(db.code().code(), "0A000");
        assert!(db.message().contains("unsupported command"), "{db}");
        let err = client
            .simple_query(&format!("pagestream_v3 {T} 22222222222222222222222222222222"))
            .await
            .unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code().code(), "42704");
        client.simple_query("set x = 1").await.unwrap();
        drop(client);
        conn.await.unwrap().unwrap();
    });
}
