//! The management API through real HTTP against the real binary: tenants, config, detach/attach (the redo
//! processes die), persistence across a restart, errors (never a 5xx for bad input), /swagger.yml, /metrics.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use support::pageserver::Pageserver;

const T1: &str = "0123456789abcdef0123456789abcdef";
const T2: &str = "fedcba9876543210fedcba9876543210";

fn pid_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2) != Some("Z"),
        Err(_) => false,
    }
}

#[test]
fn tenant_lifecycle_config_and_errors() {
    let ps = Pageserver::start(&[]);
    let (s, v) = ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T1, "gc_period": "30 m"}).to_string()),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["id"], T1);
    // The same again: no change. A different config: 409.
    let (s, _) = ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T1, "gc_period": "30 m"}).to_string()),
    );
    assert_eq!(s, 200);
    let (s, v) = ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T1, "gc_period": "1 m"}).to_string()),
    );
    assert_eq!(s, 409, "{v}");

    let (s, v) = ps.json("GET", "/v1/tenant", None);
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["attachment_status"]["slug"], "attached");
    let (s, v) = ps.json("GET", &format!("/v1/tenant/{T1}"), None);
    assert_eq!((s, v["timelines"].as_array().unwrap().len()), (200, 0));
    let (s, v) = ps.json("GET", &format!("/v1/tenant/{T1}/config"), None);
    assert_eq!(s, 200);
    assert_eq!(v["tenant_specific_overrides"], json!({"gc_period": "30m"}));
    assert_eq!(v["effective_config"]["gc_period"], "30m");
    assert_eq!(v["effective_config"]["checkpoint_distance"], 268435456);

    // PATCH: set one key, and null sends another back to the default.
    let patch =
        json!({"tenant_id": T1, "checkpoint_distance": 1048576, "gc_period": null}).to_string();
    let (s, v) = ps.json("PATCH", "/v1/tenant/config", Some(&patch));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["tenant_specific_overrides"],
        json!({"checkpoint_distance": 1048576})
    );
    assert_eq!(v["effective_config"]["gc_period"], "1h");

    // Bad input: 4xx naming what is wrong, never 5xx.
    let bad: &[(&str, String, Option<String>, u16, &str)] = &[
        ("POST", "/v1/tenant".into(), Some("{not json".into()), 400, "invalid request body"),
        ("POST", "/v1/tenant".into(), Some(json!({"new_tenant_id": T2, "bogus_field": 1}).to_string()), 400, "bogus_field"),
        ("POST", "/v1/tenant".into(), Some(json!({"new_tenant_id": "xyz"}).to_string()), 400, "new_tenant_id"),
        ("POST", "/v1/tenant".into(), Some(json!({"gc_period": "1 m"}).to_string()), 400, "new_tenant_id"),
        ("POST", "/v1/tenant".into(), Some(json!({"new_tenant_id": T2, "walredo_pool_size": 0}).to_string()), 400, "walredo_pool_size"),
        ("POST", "/v1/tenant".into(), Some(json!({"new_tenant_id": T2, "gc_period": "soon"}).to_string()), 400, "gc_period"),
        ("GET", "/v1/tenant/nothex".into(), None, 400, "invalid tenant id"),
        ("GET", format!("/v1/tenant/{T2}"), None, 404, T2),
        ("GET", format!("/v1/tenant/{T2}/timeline"), None, 404, T2),
        ("GET", format!("/v1/tenant/{T1}/timeline/{T2}"), None, 404, T2),
        ("GET", format!("/v1/tenant/{T1}/timeline/zz"), None, 400, "invalid timeline id"),
        ("PATCH", "/v1/tenant/config".into(), Some(json!({"tenant_id": T1, "nope": 1}).to_string()), 400, "nope"),
        ("PATCH", "/v1/tenant/config".into(), Some(json!({"tenant_id": T1, "nope": null}).to_string()), 400, "nope"),
        ("PATCH", "/v1/tenant/config".into(), Some(json!({"tenant_id": T2}).to_string()), 404, T2),
        ("PUT", format!("/v1/tenant/{T1}/location_config"), Some(json!({"mode": "Sideways", "tenant_conf": {}}).to_string()), 400, "Sideways"),
        ("PUT", format!("/v1/tenant/{T1}/location_config"), Some(json!({"mode": "AttachedSingle"}).to_string()), 400, "tenant_conf"),
        ("POST", format!("/v1/tenant/{T1}/timeline"), Some(json!({"new_timeline_id": T2, "ancestor_timeline_id": T1}).to_string()), 404, T1),
        ("POST", format!("/v1/tenant/{T1}/timeline"), Some(json!({"new_timeline_id": T2, "pg_version": 14}).to_string()), 400, "pg_version"),
        ("POST", format!("/v1/tenant/{T1}/timeline"), Some(json!({"new_timeline_id": T2, "ancestor_timeline_id": T1, "ancestor_start_lsn": "nope"}).to_string()), 400, "LSN"),
        ("GET", format!("/v1/tenant/{T1}/timeline/{T2}/getpage?key=00"), None, 404, T2),
        ("DELETE", format!("/v1/tenant/{T2}"), None, 404, T2),
        ("PUT", "/v1/status".into(), None, 405, "not allowed"),
        ("GET", "/v1/nothing".into(), None, 404, "no route"),
    ];
    for (method, path, body, status, needle) in bad {
        let (s, text) = ps.request(method, path, body.as_deref());
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        assert_eq!(s, *status, "{method} {path} {body:?}: {text}");
        let msg = v["msg"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no msg: {text}"));
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} should name {needle:?}"
        );
    }

    let (s, _) = ps.json("DELETE", &format!("/v1/tenant/{T1}"), None);
    assert_eq!(s, 200);
    let (s, _) = ps.json("GET", &format!("/v1/tenant/{T1}"), None);
    assert_eq!(s, 404);
    assert!(!ps.workdir().join("tenants").join(T1).exists());
}

#[test]
fn detach_kills_redo_attach_reloads_and_restart_keeps_everything() {
    let mut ps = Pageserver::start(&[]);
    ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T1, "compaction_threshold": 4}).to_string()),
    );
    // A live redo process, sandboxed.
    let (s, v) = ps.json("POST", &format!("/v1/tenant/{T1}/walredo_ping"), None);
    assert_eq!(s, 200, "{v}");
    let pid = v["pids"][0].as_u64().expect("a redo process");
    assert!(pid_alive(pid));
    let (_, detail) = ps.json("GET", &format!("/v1/tenant/{T1}"), None);
    assert_eq!(detail["walredo"]["pids"], json!([pid]));

    let detach = json!({"mode": "Detached", "tenant_conf": {}}).to_string();
    let (s, v) = ps.json(
        "PUT",
        &format!("/v1/tenant/{T1}/location_config"),
        Some(&detach),
    );
    assert_eq!(s, 200, "{v}");
    assert!(!pid_alive(pid), "redo process {pid} outlived the detach");
    let (s, v) = ps.json("GET", &format!("/v1/tenant/{T1}"), None);
    assert_eq!(s, 409, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("detached"));
    let (_, list) = ps.json("GET", "/v1/tenant", None);
    assert_eq!(list.as_array().unwrap().len(), 0);

    let attach = json!({"mode": "AttachedSingle", "generation": 1, "tenant_conf": {"compaction_threshold": 4}}).to_string();
    let (s, v) = ps.json(
        "PUT",
        &format!("/v1/tenant/{T1}/location_config"),
        Some(&attach),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["shards"][0]["shard_id"], T1);
    let (s, _) = ps.json("POST", &format!("/v1/tenant/{T1}/walredo_ping"), None);
    assert_eq!(s, 200);

    // A second tenant, detached at shutdown time; both survive a restart as they were.
    ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T2}).to_string()),
    );
    ps.json(
        "PUT",
        &format!("/v1/tenant/{T2}/location_config"),
        Some(&detach),
    );
    let exit = ps
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(5))
        .expect("exit within 5 s");
    assert!(exit.success());
    ps.spawn(&[]);
    let (_, list) = ps.json("GET", "/v1/tenant", None);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![T1]);
    let (_, conf) = ps.json("GET", &format!("/v1/tenant/{T1}/config"), None);
    assert_eq!(
        conf["tenant_specific_overrides"],
        json!({"compaction_threshold": 4})
    );
    let (s, _) = ps.json("GET", &format!("/v1/tenant/{T2}"), None);
    assert_eq!(s, 409, "T2 is still detached after the restart");
    // Attaching with no tenant on disk creates an empty one.
    let fresh = "11111111111111111111111111111111";
    let (s, _) = ps.json(
        "PUT",
        &format!("/v1/tenant/{fresh}/location_config"),
        Some(&attach),
    );
    assert_eq!(s, 200);
    let (s, _) = ps.json("GET", &format!("/v1/tenant/{fresh}/timeline"), None);
    assert_eq!(s, 200);
}

#[test]
fn swagger_and_metrics() {
    let ps = Pageserver::start(&[]);
    let (s, yaml) = ps.request("GET", "/swagger.yml", None);
    assert_eq!(s, 200);
    assert!(yaml.starts_with("openapi: 3.0"));
    ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T1}).to_string()),
    );
    ps.json("POST", &format!("/v1/tenant/{T1}/walredo_ping"), None);
    let (s, text) = ps.request("GET", "/metrics", None);
    assert_eq!(s, 200);
    for needle in [
        "pageserver_tenants 1",
        "pageserver_flush_seconds_count",
        "pageserver_wal_redo_seconds_bucket",
        &format!("pageserver_wal_redo_processes{{tenant_id=\"{T1}\"}} 1"),
        "pageserver_getpage_seconds_count",
        "pageserver_getpage_errors_total 0",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
    // The text format: one TYPE line per family, before its samples, and each family's samples in one group.
    let mut seen: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = rest.split(' ').next().unwrap().to_string();
            assert!(!seen.contains(&family), "second TYPE of {family}");
            seen.push(family);
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let current = seen.last().expect("a sample before any TYPE line");
            assert!(
                name == current
                    || name
                        .strip_prefix(current.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)),
                "sample {line:?} outside its family's group (current family {current})"
            );
        }
    }
}
