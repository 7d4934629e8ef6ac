//! The command line and the process lifecycle: config errors, --init, the workdir lock, SIGTERM.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::pageserver::{Pageserver, binary};

fn pageserver(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run pageserver");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("d");
    let (ok, _, err) = pageserver(&[
        "-D",
        workdir.to_str().unwrap(),
        "--init",
        "-c",
        "bogus_key=1",
    ]);
    assert!(!ok);
    assert!(err.contains("bogus_key"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!workdir.join("pageserver.toml").exists());
}

#[test]
fn wrong_type_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("d");
    let (ok, _, err) = pageserver(&[
        "-D",
        workdir.to_str().unwrap(),
        "--init",
        "-c",
        "checkpoint_distance='x'",
    ]);
    assert!(!ok);
    assert!(
        err.contains("checkpoint_distance") && err.contains("expected"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn init_writes_config_once() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("d");
    let w = workdir.to_str().unwrap();
    let (ok, _, err) = pageserver(&[
        "-D",
        w,
        "--init",
        "-c",
        "checkpoint_distance=268435456",
        "-c",
        "remote_storage={local_path='/x'}",
        "-c",
        "id=42",
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(workdir.join("pageserver.toml")).unwrap();
    assert!(text.contains("id = 42"), "{text}");
    assert!(text.contains("local_path = \"/x\""), "{text}");
    let (ok, _, err) = pageserver(&["-D", w, "--init"]);
    assert!(!ok, "second --init must be refused");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(workdir.join("pageserver.toml")).unwrap(),
        text
    );
}

#[test]
fn a_bad_value_in_the_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pageserver.toml"),
        "[tenant_config]\ngc_period = 'sometimes'\n",
    )
    .unwrap();
    let (ok, _, err) = pageserver(&["-D", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("tenant_config.gc_period"), "{err}");
}

#[test]
fn status_and_clean_sigterm() {
    let mut server = Pageserver::start(&["id=17"]);
    let (status, body) = server.get("/v1/status");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "id": 17, "pg_addr": server.pg_addr })
    );

    let (status, body) = server.get("/v1/no/such/route");
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        json["msg"].as_str().unwrap().contains("/v1/no/such/route"),
        "{body}"
    );

    let started = Instant::now();
    let exit = server
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(5))
        .expect("pageserver did not exit within 5 s of SIGTERM");
    assert!(exit.success(), "exit status {exit}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn sigint_stops_cleanly_too() {
    let mut server = Pageserver::start(&[]);
    let exit = server
        .signal_and_wait(Signal::SIGINT, Duration::from_secs(5))
        .expect("pageserver did not exit within 5 s of SIGINT");
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn second_pageserver_on_one_workdir_is_refused() {
    let server = Pageserver::start(&[]);
    let (ok, _, err) = pageserver(&[
        "-D",
        server.workdir().to_str().unwrap(),
        "-c",
        "listen_http_addr='127.0.0.1:0'",
    ]);
    assert!(!ok, "second pageserver must be refused");
    assert!(err.contains(&format!("pid {}", server.pid())), "{err}");
    // The first one is unharmed.
    assert_eq!(server.get("/v1/status").0, 200);
}

#[test]
fn lock_is_released_by_a_crash() {
    let mut server = Pageserver::start(&[]);
    server.kill9();
    server.spawn(&[]);
    assert_eq!(server.get("/v1/status").0, 200);
}

/// `pageserver layers verify`: every layer file of a bootstrapped timeline checks out; one flipped byte in the
/// middle of one of them is found, named, and makes the command fail.
#[test]
fn layers_verify_finds_a_flipped_byte() {
    const T: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
    const TL: &str = "d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2";
    let ps = Pageserver::start(&[]);
    ps.create_tenant(T);
    ps.bootstrap(T, TL);
    ps.checkpoint(T, TL);
    let verify = || {
        Command::new(binary())
            .args(["layers", "verify"])
            .arg(ps.workdir())
            .output()
            .unwrap()
    };
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("ok ")).collect();
    assert!(!files.is_empty(), "{text}");
    assert!(text.contains(" damaged"), "{text}");

    let victim = std::path::Path::new(files[0]);
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(victim, &bytes).unwrap();
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    let damaged: Vec<&str> = text.lines().filter(|l| l.starts_with("DAMAGED")).collect();
    assert_eq!(damaged.len(), 1, "{text}");
    assert!(damaged[0].contains(&*victim.to_string_lossy()), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 damaged layer file"));
    println!("{}", damaged[0]);
}

/// `pageserver layers key`: a key in every form; a malformed one is an error naming it.
#[test]
fn layers_key_prints_every_form() {
    let key = "000000067F0000000500004000000000000A";
    let out = Command::new(binary())
        .args(["layers", "key", key])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("key     {key}")), "{text}");
    assert!(
        text.contains("field2=1663 field3=5 field4=16384 field5=0 field6=10"),
        "{text}"
    );
    assert!(
        text.contains("block 10 of relation 1663/5/16384 fork main (base/5/16384 segment 0"),
        "{text}"
    );
    let out = Command::new(binary())
        .args(["layers", "key", "xyz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"xyz\" is not a key"));
}

/// The walredo bundle is checked against its manifest at start: the bundle as built passes; a copy with one
/// byte changed in one library, or with a file the build did not make, is refused with that file named.
#[test]
fn a_changed_walredo_bundle_is_refused_at_start() {
    let built = std::fs::canonicalize(
        std::env::var("PAGESERVER_WALREDO_BUNDLE")
            .expect("PAGESERVER_WALREDO_BUNDLE (scripts/test.sh sets it)"),
    )
    .unwrap();
    let copy = tempfile::tempdir().unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", built.display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(cp.success());
    let distrib = format!("pg_distrib_dir='{}'", copy.path().display());

    let mut ps = Pageserver::start(&[&distrib]);
    assert!(
        ps.log_text()
            .contains("walredo bundle verified against its manifest"),
        "{}",
        ps.log_text()
    );
    ps.signal_and_wait(Signal::SIGTERM, Duration::from_secs(30));

    let start = || {
        let workdir = tempfile::tempdir().unwrap();
        let out = Command::new(binary())
            .arg("-D")
            .arg(workdir.path())
            .arg("-c")
            .arg(format!(
                "listen_http_addr='127.0.0.1:{}'",
                support::free_port()
            ))
            .arg("-c")
            .arg(format!(
                "listen_pg_addr='127.0.0.1:{}'",
                support::free_port()
            ))
            .arg("-c")
            .arg(&distrib)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let lib = copy.path().join("v15/lib/postgresql/plpgsql.so");
    let mut bytes = std::fs::read(&lib).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&lib, &bytes).unwrap();
    let (ok, err) = start();
    assert!(!ok, "{err}");
    assert!(
        err.contains("v15/lib/postgresql/plpgsql.so differs from the manifest"),
        "{err}"
    );
    println!("{}", err.trim());
    bytes[at] ^= 0x01;
    std::fs::write(&lib, &bytes).unwrap();

    std::fs::write(copy.path().join("v15/lib/postgresql/extra.so"), b"x").unwrap();
    let (ok, err) = start();
    assert!(!ok, "{err}");
    assert!(
        err.contains("v15/lib/postgresql/extra.so is not in the manifest"),
        "{err}"
    );
}
