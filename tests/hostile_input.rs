//! Hostile sizes and secrets, through the real binary:
//! - a CRC-valid WAL record naming block 0xFFFFFFFF, or a block two billion past a fork's end, from a WAL
//!   source (a fake walsender here, since no real PostgreSQL writes such WAL): a clear error in the
//!   receiver's state, the process stays up and within memory, and what was ingested before still reads;
//! - an `import_basebackup` body over `import_max_bytes`: 413, no timeline, no spool left behind;
//! - the page service: a connection over `page_service_max_connections` gets SQLSTATE 53300, a client that
//!   never sends its startup packet is closed after `page_service_startup_timeout`, an idle session gets
//!   SQLSTATE 57P05 after `page_service_idle_timeout`;
//! - the HTTP API closes a connection whose headers do not arrive within `http_header_read_timeout`;
//! - a WAL source's password (a follow with a wrong password, then a wrong host) is in no log line and no
//!   answer, and `wal_sources.json` is mode 0600.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use pageserver::pg::Lsn;
use pageserver::pg::walgen::encode_record_body;
use serde_json::{Value, json};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::walsender::{fake_walsender, read_message};

const T: &str = "9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e";
const TL: &str = "afafafafafafafafafafafafafafafaf";

/// A heap insert (rmgr 10, XLOG_HEAP_INSERT) into block `blkno` of relation 1663/5/`rel`, with `prev` as
/// its prev link: a valid record in every way but the block number.
fn heap_insert(prev: Lsn, rel: u32, blkno: u32) -> Vec<u8> {
    let block_data = [0u8; 16];
    let main_data = [1u8, 0, 0]; // xl_heap_insert: offnum 1, flags 0
    let mut body = vec![0u8, 0x20]; // block 0, fork 0, BKPBLOCK_HAS_DATA
    body.extend_from_slice(&(block_data.len() as u16).to_le_bytes());
    for v in [1663u32, 5, rel, blkno] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&[255, main_data.len() as u8]);
    body.extend_from_slice(&block_data);
    body.extend_from_slice(&main_data);
    encode_record_body(10, 0, 1000, prev, &body)
}

/// Sends `request` as is and reads the answer until the server closes (or 10 s pass).
fn raw_http(addr: &str, request: &[u8]) -> String {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = sock.try_clone().unwrap();
    let answer = std::thread::spawn(move || {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).to_string()
    });
    let _ = sock.write_all(request);
    answer.join().unwrap()
}

fn detail(ps: &Pageserver) -> Value {
    let (s, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    assert_eq!(s, 200, "{info}");
    info
}

fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn hostile_block_numbers_are_refused_and_lose_nothing() {
    let ps = Pageserver::start(&[]);
    ps.create_tenant(T);
    let info = ps.bootstrap(T, TL);
    let prev: Lsn = info["prev_record_lsn"].as_str().unwrap().parse().unwrap();
    let last = info["last_record_lsn"].clone();
    assert_eq!(ps.pg_class_page(T, TL), (200, 8192));
    // The WAL must be of the bootstrapped cluster's system, or the archive refuses it before ingest sees it.
    let sysid = detail(&ps)["wal_archive"]["system_identifier"]
        .as_u64()
        .expect("the archive knows its system");

    for (blkno, expect) in [
        (0xFFFF_FFFFu32, "not a valid block number"),
        (0x7FFF_FFFF, "would zero-fill"),
    ] {
        let port = fake_walsender(sysid, prev, move |prev| heap_insert(prev, 424242, blkno));
        ps.set_wal_source(
            T,
            TL,
            json!({"connstr": format!("host=127.0.0.1 port={port} user=u sslmode=disable"), "slot_name": "ps"}),
        );
        let started = Instant::now();
        let info = loop {
            let info = detail(&ps);
            if info["walreceiver_last_error"]
                .as_str()
                .is_some_and(|e| e.contains(expect))
            {
                break info;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "block {blkno:#x}: no error after 30 s: {info}\n{}",
                ps.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        println!(
            "block {blkno:#x}: {}; peak RSS {} MiB",
            info["walreceiver_last_error"],
            rss_kib(ps.pid()) >> 10
        );
        assert_eq!(info["walreceiver_status"], "retrying", "{info}");
        assert_eq!(info["last_record_lsn"], last, "the bad record was applied");
        assert_eq!(
            ps.pg_class_page(T, TL),
            (200, 8192),
            "earlier pages still read"
        );
        assert!(rss_kib(ps.pid()) < 1 << 20, "peak RSS over 1 GiB");
    }
    ps.set_wal_source(T, TL, Value::Null);
    assert!(!ps.log_text().contains("panicked"), "{}", ps.log_text());
}

#[test]
fn oversized_imports_and_idle_connections_are_bounded() {
    let mut ps = Pageserver::start(&[
        "import_max_bytes=1048576",
        "page_service_max_connections=2",
        "page_service_startup_timeout='1s'",
        "page_service_idle_timeout='2s'",
        "http_header_read_timeout='1s'",
    ]);
    ps.create_tenant(T);

    // An import body over the limit, with and without a Content-Length that says so.
    let path = format!(
        "/v1/tenant/{T}/timeline/{TL}/import_basebackup?base_lsn=0/1000000&end_lsn=0/1000000&pg_version=15"
    );
    // By Content-Length: refused before any of the body is read (none is sent).
    let answer = raw_http(
        &ps.http_addr,
        format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("import_max_bytes"), "{answer}");
    // Chunked, with no length up front: refused once the body passes the limit (one byte over).
    let mut request =
        format!("PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(format!("{:x}\r\n", 1 << 20).as_bytes());
    request.extend(std::iter::repeat_n(b'a', 1 << 20));
    request.extend_from_slice(b"\r\n1\r\na\r\n0\r\n\r\n");
    let answer = raw_http(&ps.http_addr, &request);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let (s, _) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    assert_eq!(s, 404, "a refused import left a timeline");
    let spools: Vec<_> = std::fs::read_dir(ps.workdir().join("tenants").join(T))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(spools.is_empty(), "{spools:?}");

    // The HTTP API drops a client whose headers never complete.
    let mut slow = TcpStream::connect(&ps.http_addr).unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let n = slow.read_to_end(&mut rest);
    println!(
        "incomplete HTTP headers: closed after {:?} ({n:?})",
        started.elapsed()
    );
    assert!(n.is_ok(), "not closed within 10 s: {n:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Page service: a startup packet that never comes.
    let mut silent = TcpStream::connect(&ps.pg_addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let n = silent.read(&mut [0u8; 64]);
    assert!(matches!(n, Ok(0)), "{n:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    println!("no startup packet: closed after {:?}", started.elapsed());

    // Two sessions fill the limit; a third is refused as PostgreSQL refuses it.
    let startup = |s: &mut TcpStream| {
        let mut body = 196608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0test\0\0");
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend(body);
        s.write_all(&packet).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tags = Vec::new();
        while let Some((tag, body)) = read_message(s) {
            tags.push((tag, String::from_utf8_lossy(&body).to_string()));
            if tag == b'Z' || tag == b'E' {
                break;
            }
        }
        tags
    };
    let mut sessions: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&ps.pg_addr).unwrap();
            let tags = startup(&mut s);
            assert_eq!(tags.last().map(|t| t.0), Some(b'Z'), "{tags:?}");
            s
        })
        .collect();
    let mut third = TcpStream::connect(&ps.pg_addr).unwrap();
    let tags = startup(&mut third);
    let (tag, text) = tags.last().unwrap();
    assert_eq!(*tag, b'E', "{tags:?}");
    assert!(text.contains("C53300"), "{text}");
    println!("third connection: {text:?}");

    // The idle sessions end with 57P05, which frees their places.
    let started = Instant::now();
    for s in &mut sessions {
        let (tag, body) = read_message(s).expect("an error before the close");
        let text = String::from_utf8_lossy(&body).to_string();
        assert_eq!(tag, b'E', "{text}");
        assert!(text.contains("C57P05"), "{text}");
        assert!(matches!(s.read(&mut [0u8; 8]), Ok(0)));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    let mut again = TcpStream::connect(&ps.pg_addr).unwrap();
    let tags = startup(&mut again);
    assert_eq!(tags.last().map(|t| t.0), Some(b'Z'), "{tags:?}");

    // A leftover import spool (as a crash leaves it) is removed by the next start.
    let spool = ps
        .workdir()
        .join("tenants")
        .join(T)
        .join(format!("import-{TL}.tar.tmp"));
    std::fs::write(&spool, b"half an archive").unwrap();
    ps.kill9();
    ps.spawn(&[]);
    // Tenants load in the background after the start; a request on the tenant waits for its load.
    let (s, _) = ps.json("GET", &format!("/v1/tenant/{T}/timeline"), None);
    assert_eq!(s, 200);
    assert!(!spool.exists(), "the spool survived a restart");
    assert!(!ps.log_text().contains("panicked"));
}

#[test]
fn wal_source_passwords_stay_secret() {
    let pg = PgCluster::start(PgOptions::default());
    pg.sql("CREATE ROLE secret_user LOGIN REPLICATION PASSWORD 'right-password'");
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all secret_user 127.0.0.1/32 scram-sha-256\nhost replication secret_user 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    assert_eq!(pg.sql("SELECT pg_reload_conf()"), "t");
    std::thread::sleep(Duration::from_millis(500));

    let ps = Pageserver::start(&[]);
    ps.create_tenant(T);
    let secret = "Wr0ng-Pa55word-XYZ";
    let mut answers = Vec::new();
    for connstr in [
        format!(
            "host=127.0.0.1 port={} user=secret_user password={secret} dbname=postgres",
            pg.port()
        ),
        format!("postgres://secret_user:{secret}@127.0.0.1:1/postgres"),
        format!("postgres://secret_user:{secret}%zz@127.0.0.1:1/postgres"),
    ] {
        let body =
            json!({"new_timeline_id": TL, "wal_source": {"connstr": connstr, "slot_name": "ps"}});
        let (s, text) = ps.request(
            "POST",
            &format!("/v1/tenant/{T}/timeline"),
            Some(&body.to_string()),
        );
        println!("{s} {text}");
        assert_eq!(s, 400, "{text}");
        answers.push(text);
    }
    assert!(
        answers[0].contains("password authentication failed"),
        "{}",
        answers[0]
    );
    assert!(answers[1].contains("refused"), "{}", answers[1]);

    // A follow that works, then a wrong password on the running timeline.
    let good = format!(
        "host=127.0.0.1 port={} user=secret_user password=right-password dbname=postgres",
        pg.port()
    );
    let body = json!({"new_timeline_id": TL, "wal_source": {"connstr": good, "slot_name": "ps"}});
    let (s, text) = ps.request(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&body.to_string()),
    );
    assert_eq!(s, 201, "{text}");
    answers.push(text);
    let bad = good.replace("right-password", secret);
    let (s, text) = ps.request(
        "PUT",
        &format!("/v1/tenant/{T}/timeline/{TL}/wal_source"),
        Some(&json!({"connstr": bad, "slot_name": "ps"}).to_string()),
    );
    assert_eq!(s, 200, "{text}");
    answers.push(text);
    let started = Instant::now();
    loop {
        let (_, text) = ps.request("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
        if text.contains("password authentication failed") {
            answers.push(text);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = ps.log_text();
    for (what, text) in answers
        .iter()
        .map(|a| ("an answer", a.as_str()))
        .chain([("the log", log.as_str())])
    {
        assert!(!text.contains(secret), "{what} holds the password: {text}");
        assert!(
            !text.contains("right-password"),
            "{what} holds the password: {text}"
        );
    }
    let file = ps
        .workdir()
        .join("tenants")
        .join(T)
        .join("wal_sources.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "wal_sources.json is {mode:o}");
}
