//! TLS on both listeners and secrets at rest, through the real binary with certificates made by `openssl`:
//! - `curl --cacert` reaches the HTTPS listener by IP and by name; without the CA, or in plaintext, it does not;
//! - the page service over TLS: psql (libpq) runs a fullbackup, psycopg (libpq) reads pages over
//!   pagestream_v3, and our own client does both; a connection without TLS is refused (SQLSTATE 28000);
//! - a certificate replaced on disk is served without a restart;
//! - following a primary that refuses plaintext: `sslmode=verify-full` with its CA streams WAL over TLS (the
//!   walsender's row in `pg_stat_ssl` says so) and the pages equal the primary's; `sslmode=disable` and a
//!   certificate of another CA fail with the reason;
//! - a private key that group or others can read stops the start, naming the file and its mode; a
//!   `wal_sources.json` that they can read leaves its tenant Broken with the reason.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pageserver::page_service::client::{ConnectOptions, PageServiceClient};
use pageserver::pg::RelFileNode;
use pageserver::pg::mask::{PageKind, mask_for_comparison};
use pageserver::repository::Key;
use support::keys::tls_files;
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};

const T: &str = "e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5";
const TL: &str = "f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6";

/// `curl` of `url` trusting `ca` (None: the system's roots): Ok(body) or Err(curl's exit code and message).
fn curl(url: &str, ca: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5"]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let out = cmd.arg(url).output().expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn psql(conninfo: &str, command: &str) -> std::process::Output {
    Command::new(support::pg::pg_bin_dir().join("psql"))
        .args(["-X", "-q", "-d", conninfo, "-c", command])
        .output()
        .expect("run psql")
}

#[test]
fn tls_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let one = tls_files(dir.path(), "one");
    let https_port = support::free_port();
    let live_cert = dir.path().join("server.crt");
    let live_key = dir.path().join("server.key");
    std::fs::copy(&one.cert, &live_cert).unwrap();
    std::fs::copy(&one.key, &live_key).unwrap();
    let ps = Pageserver::start(&[
        &format!("listen_https_addr='127.0.0.1:{https_port}'"),
        "enable_tls_page_service_api=true",
        &format!("ssl_cert_file='{}'", live_cert.display()),
        &format!("ssl_key_file='{}'", live_key.display()),
        "ssl_cert_reload_period='200ms'",
    ]);
    ps.create_tenant(T);
    let info = ps.bootstrap(T, TL);
    let lsn = info["last_record_lsn"].as_str().unwrap().to_string();

    // HTTPS.
    let status = format!("https://127.0.0.1:{https_port}/v1/status");
    let expected = format!(r#"{{"id":1,"pg_addr":"{}"}}"#, ps.pg_addr);
    assert_eq!(curl(&status, Some(&one.ca)).unwrap(), expected);
    let by_name = format!("https://localhost:{https_port}/v1/tenant/{T}");
    assert!(curl(&by_name, Some(&one.ca)).unwrap().contains(T));
    let unknown_ca = curl(&status, None).unwrap_err();
    assert!(unknown_ca.starts_with("Some(60)"), "{unknown_ca}");
    let plaintext = curl(&format!("http://127.0.0.1:{https_port}/v1/status"), None);
    assert!(
        plaintext.is_err(),
        "plaintext on the HTTPS port: {plaintext:?}"
    );
    println!("https: curl --cacert answered; without the CA: {unknown_ca}");

    // The page service: psql (libpq) over TLS, with the server verified.
    let (host, port) = ps.pg_addr.rsplit_once(':').unwrap();
    let verified = format!(
        "host={host} port={port} user=cloud_admin dbname=postgres sslmode=verify-full sslrootcert={}",
        one.ca.display()
    );
    let out = psql(&verified, &format!("fullbackup {T} {TL}"));
    assert!(
        out.status.success(),
        "psql over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.len() > 1 << 20 && out.stdout.windows(10).any(|w| w == b"PG_VERSION"),
        "psql got {} bytes of fullbackup",
        out.stdout.len()
    );
    let plain = psql(
        &format!("host={host} port={port} user=cloud_admin dbname=postgres sslmode=disable"),
        "set x",
    );
    assert!(!plain.status.success());
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("requires TLS"), "{err}");

    // psycopg (libpq) reads the first pages of pg_class over TLS; each equals the HTTP getpage answer.
    let pg_class = RelFileNode {
        spc: 1663,
        db: 5,
        rel: 1259,
    };
    let list = dir.path().join("blocks");
    let pages_out = dir.path().join("pages");
    std::fs::write(&list, "1663 5 1259 0 0\n1663 5 1259 0 1\n1663 5 1259 0 2\n").unwrap();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/pagestream_psycopg.py"
        ))
        .args([&verified, T, TL, &lsn])
        .arg(&list)
        .arg(&pages_out)
        .output()
        .expect("run python3 (scripts/test.sh puts a venv with psycopg first on PATH)");
    assert!(
        out.status.success(),
        "psycopg over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages = std::fs::read(&pages_out).unwrap();
    assert_eq!(pages.len(), 3 * 8192);
    for blk in 0..3u32 {
        let (s, page) = ps.get_bytes(&format!(
            "/v1/tenant/{T}/timeline/{TL}/getpage?key={}&lsn={lsn}",
            Key::rel_block(pg_class, 0, blk)
        ));
        assert_eq!(s, 200);
        assert!(
            page[..] == pages[blk as usize * 8192..(blk as usize + 1) * 8192],
            "block {blk}"
        );
    }

    // Our own client: over TLS it works, without it the server says why.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = |ca: &Path| ConnectOptions {
        password: None,
        tls: Some(pageserver::tls::client_config(ca).unwrap()),
    };
    let localhost = format!("localhost:{port}");
    let mut c = rt
        .block_on(PageServiceClient::connect_with(&localhost, &tls(&one.ca)))
        .expect("TLS connect");
    let tar = rt
        .block_on(c.backup(&format!("fullbackup {T} {TL}")))
        .unwrap();
    assert_eq!(tar.len(), out_len_of_psql_tar(&verified));
    let err = rt
        .block_on(PageServiceClient::connect(&ps.pg_addr))
        .err()
        .expect("plaintext refused");
    assert_eq!(err.sqlstate(), Some("28000"), "{err}");

    // A new certificate (another CA) on disk is served without a restart.
    let two = tls_files(dir.path(), "two");
    std::fs::copy(&two.key, &live_key).unwrap();
    std::fs::copy(&two.cert, &live_cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(&status, Some(&two.ca)).is_err() {
        assert!(Instant::now() < deadline, "new certificate not served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(curl(&status, Some(&one.ca)).is_err());
    assert!(
        rt.block_on(PageServiceClient::connect_with(&localhost, &tls(&two.ca)))
            .is_ok()
    );
    assert!(
        rt.block_on(PageServiceClient::connect_with(&localhost, &tls(&one.ca)))
            .is_err()
    );
    assert!(ps.log_text().contains("tls certificate reloaded"));
}

/// The length of a fullbackup as psql receives it (the same tar as any other client).
fn out_len_of_psql_tar(conninfo: &str) -> usize {
    psql(conninfo, &format!("fullbackup {T} {TL}")).stdout.len()
}

#[test]
fn secrets_readable_by_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), "s");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = Command::new(support::pageserver::binary())
        .arg("-D")
        .arg(dir.path().join("wd"))
        .args([
            "-c",
            &format!("listen_http_addr='127.0.0.1:{}'", support::free_port()),
            "-c",
            &format!("listen_pg_addr='127.0.0.1:{}'", support::free_port()),
            "-c",
            "enable_tls_page_service_api=true",
            "-c",
            &format!("ssl_cert_file='{}'", files.cert.display()),
            "-c",
            &format!("ssl_key_file='{}'", files.key.display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("s.key") && err.contains("0640"), "{err}");

    // wal_sources.json holds passwords: group-readable, its tenant does not load.
    let mut ps = Pageserver::start(&[]);
    ps.create_tenant(T);
    let sources = ps
        .workdir()
        .join("tenants")
        .join(T)
        .join("wal_sources.json");
    std::fs::write(&sources, "{}").unwrap();
    std::fs::set_permissions(&sources, std::fs::Permissions::from_mode(0o644)).unwrap();
    ps.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .expect("stopped");
    ps.spawn(&[]);
    let (s, detail) = ps.json("GET", &format!("/v1/tenant/{T}"), None);
    assert_eq!(
        (s, detail["state"].as_str()),
        (200, Some("Broken")),
        "{detail}"
    );
    let reason = detail["broken_reason"].as_str().unwrap();
    assert!(
        reason.contains("wal_sources.json")
            && reason.contains("0644")
            && reason.contains("chmod 600"),
        "{reason}"
    );
    let (s, _) = ps.request("GET", &format!("/v1/tenant/{T}/timeline"), None);
    assert_eq!(s, 409, "a Broken tenant serves nothing");
}

#[test]
fn following_a_primary_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), "pg");
    let other = tls_files(dir.path(), "other");
    let mut pg = PgCluster::start(PgOptions::default());
    pg.enable_tls(&files.cert, &files.key);
    pg.sql("CREATE TABLE t AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 5000) g");

    let ps = Pageserver::start(&[]);
    ps.create_tenant(T);
    let base = pg.connstr("postgres");
    let create = |connstr: String| {
        let body = serde_json::json!({"new_timeline_id": TL,
            "wal_source": {"connstr": connstr, "slot_name": "ps_tls"}});
        ps.request(
            "POST",
            &format!("/v1/tenant/{T}/timeline"),
            Some(&body.to_string()),
        )
    };
    let (s, text) = create(format!("{base} sslmode=disable"));
    assert!(s >= 400 && text.contains("no encryption"), "{s} {text}");
    let (s, text) = create(format!(
        "{base} sslmode=verify-full sslrootcert={}",
        other.ca.display()
    ));
    assert!(
        s >= 400 && text.contains("tls") && text.contains("certificate"),
        "{s} {text}"
    );
    println!("refused: sslmode=disable (pg_hba: no encryption), a certificate of another CA");

    let (s, text) = create(format!(
        "{base} sslmode=verify-full sslrootcert={}",
        files.ca.display()
    ));
    assert_eq!(s, 201, "{text}");
    pg.sql("INSERT INTO t SELECT g, 'y' FROM generate_series(5001, 20000) g");
    let lsn: pageserver::pg::Lsn = pg.current_lsn().parse().unwrap();
    ps.wait_ingested(T, TL, lsn);
    assert_eq!(
        pg.sql("SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)"),
        "t",
        "the walsender's connection is not TLS"
    );
    let rel: u32 = pg.sql("SELECT pg_relation_filenode('t')").parse().unwrap();
    let db: u32 = pg
        .sql("SELECT oid FROM pg_database WHERE datname = 'postgres'")
        .parse()
        .unwrap();
    pg.sql("CHECKPOINT");
    let node = RelFileNode { spc: 1663, db, rel };
    let nblocks: u32 = pg
        .sql("SELECT pg_relation_size('t') / 8192")
        .parse()
        .unwrap();
    let heap = std::fs::read(pg.data_dir().join(format!("base/{db}/{rel}"))).unwrap();
    for blk in [0, nblocks / 2, nblocks - 1] {
        let (s, page) = ps.get_bytes(&format!(
            "/v1/tenant/{T}/timeline/{TL}/getpage?key={}&lsn={lsn}",
            Key::rel_block(node, 0, blk)
        ));
        assert_eq!(s, 200);
        let mut ours = page.clone();
        let mut theirs = heap[blk as usize * 8192..(blk as usize + 1) * 8192].to_vec();
        for p in [&mut ours, &mut theirs] {
            mask_for_comparison(0, blk, PageKind::Heap, p).unwrap();
        }
        assert!(
            ours == theirs,
            "block {blk} of {nblocks} differs from the primary's"
        );
    }
    println!("followed over TLS (verify-full) to {lsn}: {nblocks} blocks of t, 3 compared, equal");
}
