//! JWT authentication of both listeners, through the real binary with keys made by `openssl` and tokens made by
//! `pageserver token`:
//! - HTTP, for each route class (open, node-wide, a tenant's path, a tenant in the body): no token 401, another
//!   tenant's token 403, the tenant's own token and a `pageserverapi` token 200; a malformed header 401; a
//!   token that no key verifies, an expired one and one of a scope a pageserver does not take 403;
//! - the page service: the token as the libpq password (SQLSTATE 28P01 when it does not verify), a tenant's
//!   token refused on another tenant's commands (42501) and accepted on its own;
//! - key rotation without a restart: new public keys in the key directory, `POST
//!   /v1/reload_auth_validation_keys`, then tokens of the old key are refused and those of the new one taken;
//! - no token appears in the pageserver's log.

mod support;

use std::time::Duration;

use pageserver::page_service::client::{ClientError, ConnectOptions, PageServiceClient};
use support::keys::{ed25519_pair, token};
use support::pageserver::Pageserver;

const T1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const T2: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const TL: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";

fn expect(
    ps: &Pageserver,
    method: &str,
    path: &str,
    body: Option<&str>,
    tok: Option<&str>,
    want: u16,
) {
    let (status, text) = ps
        .try_request_as(method, path, body, tok)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let who = match tok {
        None => "no token".to_string(),
        Some(t) => format!("token …{}", &t[t.len().saturating_sub(6)..]),
    };
    assert_eq!(status, want, "{method} {path} with {who}: {text}");
    if status == 401 || status == 403 {
        assert!(text.contains("\"msg\""), "{text}");
    }
}

fn page_service(
    rt: &tokio::runtime::Runtime,
    ps: &Pageserver,
    password: Option<&str>,
) -> Result<PageServiceClient, ClientError> {
    let options = ConnectOptions {
        password: password.map(str::to_string),
        tls: None,
    };
    rt.block_on(PageServiceClient::connect_with(&ps.pg_addr, &options))
}

#[test]
fn jwt_on_both_listeners() {
    let keys = tempfile::tempdir().unwrap();
    let (a_private, a_public) = ed25519_pair(keys.path(), "a");
    let (b_private, b_public) = ed25519_pair(keys.path(), "b");
    let public_dir = keys.path().join("public");
    std::fs::create_dir(&public_dir).unwrap();
    std::fs::copy(&a_public, public_dir.join("a.pem")).unwrap();

    let mut ps = Pageserver::start(&[
        "http_auth_type='NeonJWT'",
        "pg_auth_type='NeonJWT'",
        &format!("auth_validation_public_key_path='{}'", public_dir.display()),
    ]);
    let api = token(&a_private, "pageserverapi", None, None);
    let t1 = token(&a_private, "tenant", Some(T1), None);
    let t2 = token(&a_private, "tenant", Some(T2), None);
    let foreign = token(&b_private, "pageserverapi", None, None);
    let sk = {
        let claims = serde_json::json!({"scope": "safekeeperdata", "tenant_id": T1});
        let pem = std::fs::read(&a_private).unwrap();
        let claims: pageserver::auth::Claims = serde_json::from_value(claims).unwrap();
        pageserver::auth::encode_token(&pem, &claims).unwrap()
    };
    let mut all_tokens = vec![
        api.clone(),
        t1.clone(),
        t2.clone(),
        foreign.clone(),
        sk.clone(),
    ];

    ps.token = Some(api.clone());
    ps.create_tenant(T1);
    ps.create_tenant(T2);
    ps.bootstrap(T1, TL);
    ps.token = None;

    // Open routes.
    for path in ["/v1/status", "/metrics", "/swagger.yml"] {
        expect(&ps, "GET", path, None, None, 200);
    }
    // Node-wide routes: pageserverapi only.
    expect(&ps, "GET", "/v1/tenant", None, None, 401);
    expect(&ps, "GET", "/v1/tenant", None, Some(&t1), 403);
    expect(&ps, "GET", "/v1/tenant", None, Some(&api), 200);
    let create = format!(r#"{{"new_tenant_id":"{}"}}"#, "d4".repeat(16));
    expect(&ps, "POST", "/v1/tenant", Some(&create), Some(&t1), 403);
    // A tenant's routes, in the path.
    for path in [
        format!("/v1/tenant/{T1}"),
        format!("/v1/tenant/{T1}/config"),
        format!("/v1/tenant/{T1}/timeline"),
        format!("/v1/tenant/{T1}/timeline/{TL}"),
        format!("/v1/tenant/{T1}/timeline/{TL}/keyspace"),
    ] {
        expect(&ps, "GET", &path, None, None, 401);
        expect(&ps, "GET", &path, None, Some(&t2), 403);
        expect(&ps, "GET", &path, None, Some(&sk), 403);
        expect(&ps, "GET", &path, None, Some(&foreign), 403);
        expect(&ps, "GET", &path, None, Some(&t1), 200);
        expect(&ps, "GET", &path, None, Some(&api), 200);
    }
    let checkpoint = format!("/v1/tenant/{T1}/timeline/{TL}/checkpoint");
    expect(&ps, "PUT", &checkpoint, None, Some(&t2), 403);
    expect(&ps, "PUT", &checkpoint, None, Some(&t1), 200);
    // A tenant in the body.
    let patch = format!(r#"{{"tenant_id":"{T1}","gc_horizon":1000}}"#);
    expect(&ps, "PATCH", "/v1/tenant/config", Some(&patch), None, 401);
    expect(
        &ps,
        "PATCH",
        "/v1/tenant/config",
        Some(&patch),
        Some(&t2),
        403,
    );
    expect(
        &ps,
        "PATCH",
        "/v1/tenant/config",
        Some(&patch),
        Some(&t1),
        200,
    );
    // Malformed headers and tokens.
    for header in ["Basic dXNlcjpwdw==", "Bearer", "token"] {
        let (s, _) = ureq_with_header(&ps, header);
        assert_eq!(s, 401, "Authorization: {header}");
    }
    let (s, body) = ureq_with_header(&ps, "Bearer not.a.jwt");
    assert_eq!(s, 403, "{body}");
    // Expiry: a token with `exp` 4 s ahead works, then is refused once that moment has passed (made here,
    // not earlier: on a busy machine the set-up above can take seconds).
    let short_lived = token(&a_private, "tenant", Some(T1), Some("4s"));
    let issued = std::time::Instant::now();
    all_tokens.push(short_lived.clone());
    expect(
        &ps,
        "GET",
        &format!("/v1/tenant/{T1}"),
        None,
        Some(&short_lived),
        200,
    );
    std::thread::sleep(Duration::from_secs(6).saturating_sub(issued.elapsed()));
    let (s, body) = ps
        .try_request_as("GET", &format!("/v1/tenant/{T1}"), None, Some(&short_lived))
        .unwrap();
    assert_eq!(s, 403);
    assert!(body.contains("expired"), "{body}");

    // The page service.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fullbackup = format!("fullbackup {T1} {TL}");
    assert!(matches!(
        page_service(&rt, &ps, None),
        Err(ClientError::PasswordNeeded)
    ));
    for bad in [
        "",
        "not.a.jwt",
        foreign.as_str(),
        sk.as_str(),
        short_lived.as_str(),
    ] {
        let err = page_service(&rt, &ps, Some(bad)).err().expect("refused");
        assert_eq!(err.sqlstate(), Some("28P01"), "{err}");
    }
    let mut c = page_service(&rt, &ps, Some(&t2)).expect("t2 connects");
    let err = rt.block_on(c.backup(&fullbackup)).unwrap_err();
    assert_eq!(err.sqlstate(), Some("42501"), "{err}");
    assert!(err.to_string().contains(T2), "{err}");
    for good in [&t1, &api] {
        let mut c = page_service(&rt, &ps, Some(good)).expect("connects");
        let tar = rt.block_on(c.backup(&fullbackup)).expect("fullbackup");
        assert!(tar.len() > 1 << 20, "a fullbackup of {} bytes", tar.len());
    }

    // Rotation: B replaces A in the key directory; A's tokens hold until the reload.
    let pid = ps.pid();
    std::fs::remove_file(public_dir.join("a.pem")).unwrap();
    std::fs::copy(&b_public, public_dir.join("b.pem")).unwrap();
    expect(&ps, "GET", "/v1/tenant", None, Some(&api), 200);
    expect(
        &ps,
        "POST",
        "/v1/reload_auth_validation_keys",
        None,
        Some(&t1),
        403,
    );
    let (s, body) = ps
        .try_request_as("POST", "/v1/reload_auth_validation_keys", None, Some(&api))
        .unwrap();
    assert_eq!((s, body.as_str()), (200, r#"{"keys":1}"#));
    expect(&ps, "GET", "/v1/tenant", None, Some(&api), 403);
    expect(&ps, "GET", "/v1/tenant", None, Some(&foreign), 200);
    let b_t1 = token(&b_private, "tenant", Some(T1), None);
    all_tokens.push(b_t1.clone());
    expect(
        &ps,
        "GET",
        &format!("/v1/tenant/{T1}"),
        None,
        Some(&b_t1),
        200,
    );
    assert_eq!(
        page_service(&rt, &ps, Some(&t1)).err().unwrap().sqlstate(),
        Some("28P01")
    );
    assert!(page_service(&rt, &ps, Some(&b_t1)).is_ok());
    // A directory left with no valid key: the reload fails and B stays in force.
    std::fs::write(public_dir.join("b.pem"), "garbage").unwrap();
    let (s, body) = ps
        .try_request_as(
            "POST",
            "/v1/reload_auth_validation_keys",
            None,
            Some(&foreign),
        )
        .unwrap();
    assert_eq!(s, 500, "{body}");
    assert!(body.contains("b.pem"), "{body}");
    expect(&ps, "GET", "/v1/tenant", None, Some(&foreign), 200);
    assert_eq!(ps.pid(), pid, "no restart");

    // No token, nor its signature, in the log.
    let log = ps.log_text();
    assert!(log.contains("page service authentication failed"));
    for t in &all_tokens {
        let signature = t.rsplit('.').next().unwrap();
        assert!(
            !log.contains(t.as_str()) && !log.contains(signature),
            "a token is in the log"
        );
    }
}

/// GET /v1/tenant with a raw Authorization header.
fn ureq_with_header(ps: &Pageserver, header: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://{}/v1/tenant", ps.http_addr))
        .header("Authorization", header)
        .call()
        .unwrap();
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn a_key_path_is_required_and_checked_at_start() {
    let keys = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::pageserver::binary())
        .args(["-D"])
        .arg(keys.path().join("wd"))
        .args(["-c", "http_auth_type='NeonJWT'", "--init"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth_validation_public_key_path"), "{err}");

    std::fs::write(keys.path().join("bad.pem"), "not a key").unwrap();
    let out = std::process::Command::new(support::pageserver::binary())
        .args(["-D"])
        .arg(keys.path().join("wd2"))
        .args([
            "-c",
            "pg_auth_type='NeonJWT'",
            "-c",
            &format!(
                "auth_validation_public_key_path='{}'",
                keys.path().join("bad.pem").display()
            ),
            "-c",
            &format!("listen_http_addr='127.0.0.1:{}'", support::free_port()),
            "-c",
            &format!("listen_pg_addr='127.0.0.1:{}'", support::free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.pem"), "{err}");
}
