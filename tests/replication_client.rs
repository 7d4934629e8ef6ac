//! The replication client against a real PostgreSQL 15 primary: IDENTIFY_SYSTEM, slots, streaming WAL that
//! our decoder reads and whose flush position the server sees, BASE_BACKUP, authentication methods and the
//! errors a receiver must tell apart; and against fake servers that send malformed bytes.

mod support;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pageserver::pg::constants::{SIZE_OF_XLOG_LONG_PHD, SIZE_OF_XLOG_SHORT_PHD};
use pageserver::pg::{Lsn, WalStreamDecoder};
use pageserver::walreceiver::{
    ReplicationConnection, ReplicationError, ReplicationMessage, WalStream,
};
use support::pg::{PgCluster, PgOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SEG_SIZE: u32 = 16 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(pg: &PgCluster, app: &str) -> ReplicationConnection {
    ReplicationConnection::connect(&pg.connstr("postgres"), app, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", pg.log_tail()))
}

fn lsn(text: &str) -> Lsn {
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_system_matches_the_cluster() {
    let pg = PgCluster::start(PgOptions::default());
    let mut conn = connect(&pg, "identify_test").await;
    assert_eq!(
        conn.parameter("server_version").map(|v| &v[..2]),
        Some("15")
    );
    let id = conn.identify_system().await.unwrap();
    let current = lsn(&pg.current_lsn());
    println!("IDENTIFY_SYSTEM: {id:?}; pg_current_wal_lsn {current}");
    assert_eq!(
        id.systemid,
        pg.sql("SELECT system_identifier FROM pg_control_system()")
    );
    assert_eq!(id.timeline, 1);
    assert_eq!(id.dbname, None);
    let gap = current.0.abs_diff(id.xlogpos.0);
    assert!(gap < 1 << 20, "xlogpos {} vs current {current}", id.xlogpos);
    // The connection shows as a walsender with our application name.
    let n =
        pg.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'identify_test'");
    assert_eq!(n, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_create_duplicate_read_drop() {
    let pg = PgCluster::start(PgOptions::default());
    let mut conn = connect(&pg, "slot_test").await;
    let restart = conn
        .create_physical_slot("pageserver_slot", true)
        .await
        .unwrap()
        .expect("a slot that reserves WAL has a restart_lsn");
    let catalog = lsn(
        &pg.sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'pageserver_slot'")
    );
    println!("created slot at {restart}; pg_replication_slots says {catalog}");
    assert_eq!(restart, catalog);

    let again = conn.create_physical_slot("pageserver_slot", true).await;
    match &again {
        Err(ReplicationError::SlotExists { slot }) => assert_eq!(slot, "pageserver_slot"),
        other => panic!("expected SlotExists, got {other:?}"),
    }
    assert_eq!(again.unwrap_err().sqlstate(), Some("42710"));

    // The server error left the connection usable.
    assert_eq!(
        conn.read_slot("pageserver_slot").await.unwrap(),
        Some(restart)
    );
    assert_eq!(conn.read_slot("no_such_slot").await.unwrap(), None);
    assert_eq!(
        conn.create_physical_slot("lazy_slot", false).await.unwrap(),
        None
    );
    assert_eq!(conn.read_slot("lazy_slot").await.unwrap(), None);
    conn.drop_slot("lazy_slot", false).await.unwrap();
    assert_eq!(pg.sql("SELECT count(*) FROM pg_replication_slots"), "1");
    assert!(matches!(
        conn.read_slot("Bad Name").await,
        Err(ReplicationError::InvalidArgument(_))
    ));
}

/// What the streaming test saw.
#[derive(Debug, Default)]
struct Received {
    bytes: u64,
    messages: u64,
    keepalives: u64,
    records: u64,
    /// End of the last whole record decoded.
    last_end: Lsn,
}

/// Feeds XLogData to the decoder and checks that records follow each other without a gap.
fn decode(decoder: &mut WalStreamDecoder, data: bytes::Bytes, seen: &mut Received) {
    seen.bytes += data.len() as u64;
    decoder.feed(data);
    while let Some(rec) = decoder
        .poll_decode()
        .unwrap_or_else(|e| panic!("streamed WAL does not decode: {e}"))
    {
        if seen.records > 0 {
            let prev = seen.last_end;
            let header = if prev.segment_offset(SEG_SIZE) == 0 {
                SIZE_OF_XLOG_LONG_PHD
            } else {
                SIZE_OF_XLOG_SHORT_PHD
            };
            let after_header = prev.block_offset() == 0 && rec.lsn == prev + header as u64;
            assert!(
                rec.lsn == prev || after_header,
                "record at {} does not follow the previous one ending at {prev}",
                rec.lsn
            );
        }
        assert!(rec.end_lsn > rec.lsn);
        seen.last_end = rec.end_lsn;
        seen.records += 1;
    }
}

/// Reads for up to `wait`; answers keepalives with flush = everything received.
async fn pump(
    stream: &mut WalStream,
    decoder: &mut WalStreamDecoder,
    seen: &mut Received,
    wait: Duration,
) {
    let until = tokio::time::Instant::now() + wait;
    while let Ok(next) = tokio::time::timeout_at(until, stream.next()).await {
        match next.expect("stream error") {
            Some(ReplicationMessage::XLogData { data, .. }) => {
                seen.messages += 1;
                decode(decoder, data, seen);
            }
            Some(ReplicationMessage::Keepalive { .. }) => {
                seen.keepalives += 1;
                let at = stream.received_lsn();
                stream
                    .send_status(at, at, at, false)
                    .await
                    .expect("send status");
            }
            None => panic!("the server ended the stream"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_wal_that_decodes_and_reports_flush() {
    let pg = Arc::new(PgCluster::start(PgOptions {
        extra_conf: vec!["wal_sender_timeout = '2s'".to_string()],
    }));
    let mut conn = connect(&pg, "stream_test").await;
    let id = conn.identify_system().await.unwrap();
    let restart = conn
        .create_physical_slot("stream_slot", true)
        .await
        .unwrap()
        .unwrap();
    let start = Lsn(restart.0 - restart.block_offset());
    let mut stream = conn
        .start_replication(Some("stream_slot"), start, id.timeline)
        .await
        .unwrap();
    stream
        .send_status(start, start, start, false)
        .await
        .unwrap();

    let workload = {
        let pg = Arc::clone(&pg);
        std::thread::spawn(move || {
            let mut side = pg.spawn_sql(
                "postgres",
                "CREATE TABLE side AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g; \
                 UPDATE side SET md5 = upper(md5) WHERE g % 3 = 0",
            );
            pg.pgbench_init("postgres", 1);
            assert!(side.wait().unwrap().success(), "side SQL failed");
            pg.sql("VACUUM side");
            pg.sql("CREATE INDEX side_md5 ON side (md5)");
        })
    };
    let mut decoder =
        WalStreamDecoder::new(start, SEG_SIZE, pageserver::pg::PgVersion::V15).unwrap();
    let mut seen = Received::default();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !workload.is_finished() {
        pump(
            &mut stream,
            &mut decoder,
            &mut seen,
            Duration::from_millis(200),
        )
        .await;
        assert!(Instant::now() < deadline, "workload too slow");
    }
    workload.join().expect("workload panicked");
    let target = lsn(&pg.current_lsn());
    while stream.received_lsn() < target || seen.last_end < target {
        pump(
            &mut stream,
            &mut decoder,
            &mut seen,
            Duration::from_millis(200),
        )
        .await;
        assert!(
            Instant::now() < deadline,
            "stuck at {seen:?}, target {target}"
        );
    }
    println!(
        "streamed from {start} to {}, target {target}: {seen:?}",
        stream.received_lsn()
    );
    assert!(seen.records > 10_000, "{seen:?}");
    assert_eq!(seen.bytes, stream.received_lsn().0 - start.0);

    // Idle, the server asks for a reply every wal_sender_timeout / 2; pump() answers with flush = received.
    while seen.keepalives == 0 {
        pump(
            &mut stream,
            &mut decoder,
            &mut seen,
            Duration::from_millis(200),
        )
        .await;
        assert!(Instant::now() < deadline, "no keepalive in {seen:?}");
    }

    // The server sees our flush position: in pg_stat_replication and in the slot's restart_lsn.
    let flushed = stream.received_lsn();
    loop {
        pump(
            &mut stream,
            &mut decoder,
            &mut seen,
            Duration::from_millis(300),
        )
        .await;
        let row = pg.sql(
            "SELECT r.flush_lsn, s.restart_lsn FROM pg_stat_replication r, pg_replication_slots s \
             WHERE r.application_name = 'stream_test' AND s.slot_name = 'stream_slot'",
        );
        let seen_by_server = row
            .split_once('|')
            .and_then(|(f, s)| Some((f.parse::<Lsn>().ok()?, s.parse::<Lsn>().ok()?)));
        if let Some((flush, slot)) = seen_by_server
            && flush >= target
            && slot >= target
        {
            println!(
                "server saw flush {flush}, slot restart_lsn {slot} (was {restart}); {} keepalives answered",
                seen.keepalives
            );
            assert!(slot > restart);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server never saw flush {flushed}: {row:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_backup_writes_a_tar_with_control_file_and_label() {
    let pg = PgCluster::start(PgOptions::default());
    pg.sql("CREATE TABLE before_backup AS SELECT g FROM generate_series(1, 1000) g");
    let mut conn = connect(&pg, "basebackup_test").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.tar");
    let mut file = tokio::fs::File::create(&path).await.unwrap();
    let backup = conn
        .base_backup("pageserver's test", &mut file)
        .await
        .unwrap();
    drop(file);
    println!("{backup:?}");
    assert!(backup.start_lsn <= backup.end_lsn);
    assert_eq!(backup.timeline, 1);
    assert_eq!(backup.tar_bytes, std::fs::metadata(&path).unwrap().len());

    let mut archive = tar::Archive::new(std::fs::File::open(&path).unwrap());
    let mut names = Vec::new();
    let mut label = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name == "backup_label" {
            entry.read_to_string(&mut label).unwrap();
        }
        names.push(name);
    }
    println!("{} entries; backup_label:\n{label}", names.len());
    assert!(names.iter().any(|n| n == "global/pg_control"), "{names:?}");
    assert!(names.iter().any(|n| n == "backup_label"), "{names:?}");
    let start_line = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .expect("START WAL LOCATION in backup_label");
    assert_eq!(lsn(start_line.split(' ').next().unwrap()), backup.start_lsn);
    assert!(label.contains("LABEL: pageserver's test"), "{label}");

    // The connection is idle again afterwards.
    let id = conn.identify_system().await.unwrap();
    assert!(id.xlogpos >= backup.end_lsn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_went_wrong() {
    let pg = PgCluster::start(PgOptions::default());

    // Nothing listens on the port: a Connect error, at once.
    let port = support::free_port();
    let started = Instant::now();
    let e = ReplicationConnection::connect(
        &format!("host=127.0.0.1 port={port} user=postgres"),
        "x",
        TIMEOUT,
    )
    .await
    .expect_err("nothing listens");
    println!("wrong port after {:?}: {e}", started.elapsed());
    assert!(matches!(e, ReplicationError::Connect { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A role that does not exist.
    let connstr = format!("host=127.0.0.1 port={} user=no_such_role", pg.port());
    let e = ReplicationConnection::connect(&connstr, "x", TIMEOUT)
        .await
        .unwrap_err();
    println!("unknown role: {e}");
    assert_eq!(e.sqlstate(), Some("28000"), "{e}");

    // A slot that another walsender streams from.
    let mut first = connect(&pg, "first").await;
    let restart = first
        .create_physical_slot("busy_slot", true)
        .await
        .unwrap()
        .unwrap();
    let _streaming = first
        .start_replication(Some("busy_slot"), restart, 0)
        .await
        .unwrap();
    let mut second = connect(&pg, "second").await;
    assert_eq!(second.read_slot("busy_slot").await.unwrap(), Some(restart));
    let e = second
        .start_replication(Some("busy_slot"), restart, 1)
        .await
        .unwrap_err();
    println!("slot in use: {e}");
    assert!(
        matches!(&e, ReplicationError::Server { code, .. } if code == "55006"),
        "{e}"
    );

    // A bad connection string names the problem.
    let e = ReplicationConnection::connect("host=127.0.0.1 user=x nonsense=1", "x", TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ReplicationError::ConnStr { msg } if msg.contains("nonsense")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_md5_and_scram_authentication() {
    let pg = PgCluster::start(PgOptions::default());
    pg.sql("SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5 secret'");
    pg.sql("CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scram''secret'");
    pg.sql("CREATE ROLE plain_user LOGIN REPLICATION PASSWORD 'plain'");
    let hba = pg.data_dir().join("pg_hba.conf");
    let rules = "host replication md5_user 127.0.0.1/32 md5\n\
                 host replication scram_user 127.0.0.1/32 scram-sha-256\n\
                 host replication plain_user 127.0.0.1/32 password\n";
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("{rules}{old}")).unwrap();
    assert_eq!(pg.sql("SELECT pg_reload_conf()"), "t");
    // Reloading is asynchronous; wait until a password-less connection is refused.
    let url =
        |user: &str, pw: &str| format!("postgres://{user}{pw}@127.0.0.1:{}/postgres", pg.port());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ReplicationConnection::connect(&url("plain_user", ""), "x", TIMEOUT).await {
            Err(ReplicationError::Auth(msg)) => {
                assert!(msg.contains("password"), "{msg}");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "pg_hba.conf not reloaded"),
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for (connstr, method) in [
        (url("plain_user", ":plain"), "cleartext"),
        (url("md5_user", ":md5%20secret"), "md5"),
        (
            format!(
                "host=127.0.0.1 port={} user=scram_user password='scram\\'secret'",
                pg.port()
            ),
            "scram",
        ),
    ] {
        let mut conn = ReplicationConnection::connect(&connstr, method, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        conn.identify_system().await.unwrap();
    }
    for (user, method) in [
        ("plain_user", "cleartext"),
        ("md5_user", "md5"),
        ("scram_user", "scram"),
    ] {
        let e = ReplicationConnection::connect(&url(user, ":wrong"), method, TIMEOUT)
            .await
            .unwrap_err();
        println!("{method} with a wrong password: {e}");
        assert_eq!(e.sqlstate(), Some("28P01"), "{method}: {e}");
    }
}

#[test]
fn malformed_streaming_payloads_are_protocol_errors() {
    // An XLogData payload shorter than its 25-byte header.
    let short = bytes::Bytes::from_static(b"w\0\0\0\0\x01\0\0\0");
    let e = ReplicationMessage::parse(short).unwrap_err();
    assert!(matches!(e, ReplicationError::Protocol(_)), "{e}");
    let e = ReplicationMessage::parse(bytes::Bytes::from_static(b"zzz")).unwrap_err();
    assert!(matches!(e, ReplicationError::Protocol(_)), "{e}");
}

/// A fake server: reads the startup message, then writes `script`, then answers each query with `reply`.
async fn fake_server(script: Vec<u8>, reply: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = sock.read(&mut buf).await;
        sock.write_all(&script).await.unwrap();
        while let Ok(n) = sock.read(&mut buf).await {
            if n == 0 || sock.write_all(&reply).await.is_err() {
                break;
            }
        }
    });
    // The fake speaks no TLS negotiation.
    format!("host=127.0.0.1 port={port} user=u sslmode=disable")
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

#[tokio::test]
async fn fake_servers_with_bad_bytes_give_protocol_errors() {
    // A 2 GiB length claim is refused before anything is buffered.
    let connstr = fake_server(b"R\x7f\xff\xff\xff".to_vec(), vec![]).await;
    let e = ReplicationConnection::connect(&connstr, "x", TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(e, ReplicationError::Protocol(_)), "{e}");

    // An unknown message tag.
    let connstr = fake_server(msg(b'?', b"hello"), vec![]).await;
    let e = ReplicationConnection::connect(&connstr, "x", TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(e, ReplicationError::Protocol(_)), "{e}");

    // An authentication method we do not speak.
    let connstr = fake_server(msg(b'R', &7u32.to_be_bytes()), vec![]).await;
    let e = ReplicationConnection::connect(&connstr, "x", TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(e, ReplicationError::UnsupportedAuth(_)), "{e}");

    // A server that goes silent: the handshake times out.
    let connstr = fake_server(vec![], vec![]).await;
    let e = ReplicationConnection::connect(&connstr, "x", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, ReplicationError::Timeout { .. }), "{e}");

    // Streaming starts, then an XLogData shorter than its header, then EOF.
    let mut script = msg(b'R', &0u32.to_be_bytes());
    script.extend(msg(b'Z', b"I"));
    let mut reply = msg(b'W', b"\0\0\0");
    reply.extend(msg(b'd', b"w\0\0\0"));
    let connstr = fake_server(script, reply).await;
    let conn = ReplicationConnection::connect(&connstr, "x", TIMEOUT)
        .await
        .unwrap();
    let mut stream = conn
        .start_replication(None, Lsn(0x100_0000), 1)
        .await
        .unwrap();
    let e = stream.next().await.unwrap_err();
    assert!(matches!(e, ReplicationError::Protocol(_)), "{e}");
    assert!(stream.next().await.unwrap().is_none(), "the stream ended");
}
