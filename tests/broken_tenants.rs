//! One bad tenant does not stop the node, through the real binary:
//! - three tenants, each with a bootstrapped timeline; for each of three breakages (no `tenant.json`, as a
//!   crash between making the directory and writing the file leaves it; a corrupt `tenant.json`; a corrupt
//!   timeline `metadata`) on one of them: the pageserver starts, the other two serve pages, the broken one is
//!   listed as Broken with the reason, refuses requests with 409, and can be deleted;
//! - leftovers of crashes are removed at start: `<id>.___deleted` tenant and timeline directories, a
//!   `<id>.___temp` timeline directory, `*.tmp` files (an atomic write's temp file, an import's spool);
//! - a bootstrap (an import of initdb's output) killed by a crash in its final flush leaves no timeline.

mod support;

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::pageserver::Pageserver;

const TENANTS: [&str; 3] = [
    "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
    "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",
    "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3",
];
const TL: &str = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";

fn stop(ps: &mut Pageserver) {
    let status = ps.signal_and_wait(Signal::SIGTERM, Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_broken_tenant_is_listed_and_the_others_serve() {
    let mut ps = Pageserver::start(&[]);
    for t in TENANTS {
        ps.create_tenant(t);
        ps.bootstrap(t, TL);
        assert_eq!(ps.pg_class_page(t, TL), (200, 8192));
    }
    stop(&mut ps);
    let tenants_dir = ps.workdir().join("tenants");
    let pristine = tempfile::tempdir().unwrap();
    copy_dir(&tenants_dir, pristine.path());

    type Breakage = fn(&Path);
    let breakages: [(&str, Breakage, &str); 3] = [
        (
            "no tenant.json",
            |dir| std::fs::remove_file(dir.join("tenant.json")).unwrap(),
            "tenant.json",
        ),
        (
            "corrupt tenant.json",
            |dir| std::fs::write(dir.join("tenant.json"), b"{\"attached\": tru").unwrap(),
            "tenant.json",
        ),
        (
            "corrupt timeline metadata",
            |dir| {
                let path = dir.join("timelines").join(TL).join("metadata");
                let mut bytes = std::fs::read(&path).unwrap();
                let n = bytes.len();
                bytes[n / 2] ^= 0x55;
                std::fs::write(&path, bytes).unwrap();
            },
            "metadata",
        ),
    ];
    for (i, (what, breakage, named)) in breakages.into_iter().enumerate() {
        std::fs::remove_dir_all(&tenants_dir).unwrap();
        copy_dir(pristine.path(), &tenants_dir);
        let broken = TENANTS[i];
        breakage(&tenants_dir.join(broken));
        ps.spawn(&[]);

        let (s, list) = ps.json("GET", "/v1/tenant", None);
        assert_eq!(s, 200, "{list}");
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 3, "{what}: {list:?}");
        for entry in list {
            let id = entry["id"].as_str().unwrap();
            if id == broken {
                assert_eq!(entry["state"], "Broken", "{what}: {entry}");
                let reason = entry["broken_reason"].as_str().unwrap();
                assert!(reason.contains(named), "{what}: {reason}");
                println!("{what}: {id} Broken: {reason}");
            } else {
                assert_eq!(entry["state"], "Active", "{what}: {entry}");
                assert_eq!(ps.pg_class_page(id, TL), (200, 8192), "{what}: {id}");
            }
        }
        let (s, detail) = ps.json("GET", &format!("/v1/tenant/{broken}"), None);
        assert_eq!((s, detail["state"].clone()), (200, Value::from("Broken")));
        let (s, body) = ps.json("GET", &format!("/v1/tenant/{broken}/timeline"), None);
        assert_eq!(s, 409, "{what}: {body}");
        assert!(body["msg"].as_str().unwrap().contains("broken"), "{body}");
        let (s, body) = ps.json(
            "POST",
            "/v1/tenant",
            Some(&json!({"new_tenant_id": broken}).to_string()),
        );
        assert_eq!(s, 409, "{what}: a create over a broken tenant: {body}");
        let log = ps.log_text();
        assert!(log.contains("tenant is broken"), "{what}: not logged");

        let (s, body) = ps.json("DELETE", &format!("/v1/tenant/{broken}"), None);
        assert_eq!(s, 200, "{what}: {body}");
        assert!(!tenants_dir.join(broken).exists());
        let (s, list) = ps.json("GET", "/v1/tenant", None);
        assert_eq!((s, list.as_array().unwrap().len()), (200, 2), "{list}");
        stop(&mut ps);
    }
}

#[test]
fn leftovers_of_crashes_are_removed_and_an_interrupted_import_leaves_no_timeline() {
    let t = TENANTS[0];
    let mut ps = Pageserver::start(&[]);
    ps.create_tenant(t);
    ps.bootstrap(t, TL);
    stop(&mut ps);

    // A bootstrap whose final flush dies between writing its first layer and renaming it.
    ps.env = vec![("PAGESERVER_FAILPOINT".into(), "layer-before-rename".into())];
    ps.spawn(&[]);
    let interrupted = "e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5";
    let answer = ps.try_request(
        "POST",
        &format!("/v1/tenant/{t}/timeline"),
        Some(&json!({"new_timeline_id": interrupted}).to_string()),
    );
    assert!(answer.is_err(), "the bootstrap answered: {answer:?}");
    ps.kill9();
    ps.env.clear();
    assert!(
        ps.workdir()
            .join(format!("tenants/{t}/timelines/{interrupted}"))
            .exists(),
        "the crash left no timeline directory to clean"
    );

    let tenants = ps.workdir().join("tenants");
    let tenant = tenants.join(t);
    let leftovers = [
        tenants.join(format!("{}.___deleted", TENANTS[1])),
        tenant.join(format!("timelines/{}.___temp", TENANTS[2])),
        tenant.join(format!("timelines/{}.___deleted", TENANTS[1])),
    ];
    for dir in &leftovers {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("some-file"), b"x").unwrap();
    }
    let temp_files = [
        tenant.join("tenant.json.tmp"),
        tenant.join(format!("import-{interrupted}.tar.tmp")),
    ];
    for f in &temp_files {
        std::fs::write(f, b"half-written").unwrap();
    }

    ps.spawn(&[]);
    // Tenants load in the background after the start; a request on the tenant waits for its load.
    let (s, list) = ps.json("GET", &format!("/v1/tenant/{t}/timeline"), None);
    assert_eq!(s, 200);
    for path in leftovers.iter().chain(&temp_files) {
        assert!(!path.exists(), "{} survived the restart", path.display());
    }
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|tl| tl["timeline_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [TL], "the interrupted import's timeline is listed");
    assert!(
        !ps.workdir()
            .join(format!("tenants/{t}/timelines/{interrupted}"))
            .exists()
    );
    assert_eq!(ps.pg_class_page(t, TL), (200, 8192));
    // The id is free again.
    let (s, body) = ps.json(
        "POST",
        &format!("/v1/tenant/{t}/timeline"),
        Some(&json!({"new_timeline_id": interrupted}).to_string()),
    );
    assert_eq!(s, 201, "{body}");
}
